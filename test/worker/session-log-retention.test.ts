import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { runScheduled } from '../../workers/scheduled.ts'
import { pruneSessionLogs } from '../../workers/sessions/log-retention.ts'
import { pg } from './helpers/boards.ts'
import { ADMIN_KEY, bearer, call } from './helpers/http.ts'

/**
 * Sessions created `daysAgo` days ago (ids `prefix-0`…), each with `records` log rows: finished
 * and cleared from their objects (Neon holds their setup's hash), or `live`.
 */
async function oldSessions(
  prefix: string,
  n: number,
  daysAgo: number,
  records: number,
  status: 'cleared' | 'live' = 'cleared',
) {
  const cleared = status === 'cleared'
  await pg()`insert into game_sessions (id, rules, roster, status, created_at, ended_at, setup_hash)
    select ${prefix} || '-' || i, 'relay', '[]'::jsonb, ${cleared ? 'finished' : 'live'},
           now() - make_interval(secs => ${daysAgo * 86_400}),
           ${cleared ? pg()`now() - make_interval(secs => ${daysAgo * 86_400})` : null},
           ${cleared ? 'a'.repeat(64) : null}
      from generate_series(0, ${n - 1}) as i`
  await pg()`insert into session_logs (session_id, seq, record)
    select ${prefix} || '-' || i, s, jsonb_build_object('seq', s)
      from generate_series(0, ${n - 1}) as i, generate_series(1, ${records}) as s`
}

/** Moves sessions `prefix-…` to `daysAgo` and marks them cleared (their objects done with them). */
async function clearedAt(prefix: string, daysAgo: number) {
  await pg()`update game_sessions set status = 'finished', setup_hash = ${'a'.repeat(64)},
      created_at = now() - make_interval(secs => ${daysAgo * 86_400})
    where id like ${prefix + '-%'}`
}

async function logRows(prefix: string): Promise<number> {
  const [r] = await pg()`select count(*)::int as n from session_logs
                          where session_id like ${prefix + '-%'}`
  return (r as { n: number }).n
}

async function sessionRows(prefix: string): Promise<number> {
  const [r] =
    await pg()`select count(*)::int as n from game_sessions where id like ${prefix + '-%'}`
  return (r as { n: number }).n
}

describe('SESSION_LOG_RETENTION_DAYS', () => {
  it("has the cron delete the logs of games created before it, oldest first past a batch's 500, and keep their sessions; later games keep theirs", async () => {
    const run = crypto.randomUUID().slice(0, 8)
    const old = `logs-old-${run}`
    const older = `logs-older-${run}`
    const recent = `logs-recent-${run}`
    // More than two batches of old sessions, some older still, and recent ones.
    await oldSessions(old, 1_100, 100, 2)
    await oldSessions(older, 3, 400, 5)
    await oldSessions(recent, 4, 10, 3)
    // A game still going (or archiving) past the retention: its log is not yet whole in Neon.
    const going = `logs-going-${run}`
    await oldSessions(going, 2, 120, 3, 'live')
    const withRetention = { ...env, SESSION_LOG_RETENTION_DAYS: '90' }
    const first = await runScheduled(withRetention as never, Date.now())
    expect(first.sessionLogsPruned).toBeGreaterThanOrEqual(1_100 * 2 + 3 * 5)
    expect(await logRows(old)).toBe(0)
    expect(await logRows(older)).toBe(0)
    expect(await logRows(recent)).toBe(4 * 3)
    expect(await logRows(going)).toBe(2 * 3)
    // The sessions themselves stay (listings, histories, results); their log reads are empty.
    expect(await sessionRows(old)).toBe(1_100)
    const read = await call(`/v1/sessions/${old}-7/events`, bearer(ADMIN_KEY))
    expect(read.status).toBe(200)
    expect(await read.json()).toEqual({ events: [], nextFrom: null })
    // A run after it has nothing of these left to do, and does not read them again.
    expect(await pruneSessionLogs(withRetention)).toMatchObject({ rows: 0 })
    expect(await logRows(recent)).toBe(4 * 3)
  })

  it('deletes nothing unless set (the default keeps every log for good)', async () => {
    const prefix = `logs-kept-${crypto.randomUUID().slice(0, 8)}`
    await oldSessions(prefix, 2, 3_000, 2)
    expect(await pruneSessionLogs(env)).toEqual({ sessions: 0, rows: 0, passedOver: 0 })
    const ran = await runScheduled(env as never, Date.now())
    expect(ran.sessionLogsPruned).toBe(0)
    expect(await logRows(prefix)).toBe(4)
    // Out of its bounds it keeps them too, rather than deleting by a number it made up.
    expect(await pruneSessionLogs({ ...env, SESSION_LOG_RETENTION_DAYS: '-5' })).toEqual({
      sessions: 0,
      rows: 0,
      passedOver: 0,
    })
    expect(await logRows(prefix)).toBe(4)
  })

  it("reaches a game only once its object has had the time to clear it: a retention no longer than the object's keeps deleting", async () => {
    await pg()`delete from maintenance_cursors where job = 'session-logs'`
    const run = crypto.randomUUID().slice(0, 8)
    // Ended a day and a half ago, still in its object's 24 hours of retention (not cleared).
    const held = `logs-held-${run}`
    await oldSessions(held, 1, 1.5, 3, 'live')
    await pg()`update game_sessions set status = 'finished', ended_at = now()
                where id like ${held + '-%'}`
    const gone = `logs-gone-${run}`
    await oldSessions(gone, 2, 4, 2)
    const oneDay = { ...env, SESSION_LOG_RETENTION_DAYS: '1' }
    await pruneSessionLogs(oneDay)
    expect(await logRows(gone)).toBe(0)
    expect(await logRows(held)).toBe(3)
    // Two days on, its object has cleared it: the walk, which had not gone past it, takes it.
    await clearedAt(held, 3.5)
    await pruneSessionLogs(oneDay)
    expect(await logRows(held)).toBe(0)
  })

  it('deletes at most so many rows a statement, a long log over several, and goes past it only once it is gone', async () => {
    await pg()`delete from maintenance_cursors where job = 'session-logs'`
    // Logs past the retention that other tests left (the walk would take them after these):
    // the counts below are of this test's rows alone, however it is run.
    await pg()`delete from session_logs where session_id in
                 (select id from game_sessions where created_at < now() - interval '150 days')`
    const run = crypto.randomUUID().slice(0, 8)
    const long = `logs-long-${run}`
    const after = `logs-after-${run}`
    await oldSessions(long, 1, 0, 2_500)
    await clearedAt(long, 9_000.2)
    await oldSessions(after, 3, 0, 5)
    await clearedAt(after, 9_000.1)
    // The oldest games there are (the walk starts from them), one statement a run, of at most
    // 1,000 rows.
    const retention = { ...env, SESSION_LOG_RETENTION_DAYS: '150' }
    const oneStatement = { rowsPerStatement: 1_000, budgetMs: 0 }
    expect(await pruneSessionLogs(retention, oneStatement)).toMatchObject({ rows: 1_000 })
    expect([await logRows(long), await logRows(after)]).toEqual([1_500, 15])
    expect(await pruneSessionLogs(retention, oneStatement)).toMatchObject({ rows: 1_000 })
    expect([await logRows(long), await logRows(after)]).toEqual([500, 15])
    // The long log's last part and the logs after it, in one statement.
    expect(await pruneSessionLogs(retention, oneStatement)).toMatchObject({ rows: 515 })
    expect([await logRows(long), await logRows(after)]).toEqual([0, 0])
  })
})
