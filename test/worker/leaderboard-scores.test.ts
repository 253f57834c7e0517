import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { metricTotal } from './helpers/metric-totals.ts'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { COUNT_CYCLE_ENTRIES } from '../../durable-objects/leaderboard.ts'
import { MATCH_WIN_KEY_PREFIX } from '../../workers/core/leaderboard.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { FLUSH_INTERVAL_MS, sendMetrics } from '../../workers/lib/metrics-flush.ts'
import { until } from './helpers/sockets.ts'
import { getRedis } from '../../workers/lib/redis.ts'
import { hitWindow, unhitWindow } from '../../workers/lib/rate-limit.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clearOfTurn,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import {
  boardId,
  createBoard,
  fresh,
  pg,
  storedBy,
  submitAs,
  submitFor,
  type Top,
} from './helpers/boards.ts'
import { withMetricsAlarms } from './helpers/metrics-alarms.ts'

async function top(board: string, limit = 100): Promise<Top> {
  return fresh<Top>(`/v1/leaderboards/${board}/top?limit=${limit}`)
}

const ids = (t: Top) => t.entries.map((e) => e.playerId)

describe('ordering and operators', () => {
  it('desc: highest first; ties broken by subscore, then by the earlier submission', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await submitFor(b, 'late-tie', { score: 50 })
    await submitFor(b, 'low', { score: 10 })
    await submitFor(b, 'high', { score: 99.5 })
    await submitFor(b, 'later-tie', { score: 50 })
    await submitFor(b, 'sub-wins', { score: 50, subscore: 3 })
    const t = await top(b)
    expect(ids(t)).toEqual(['high', 'sub-wins', 'late-tie', 'later-tie', 'low'])
    expect(t.entries.map((e) => e.rank)).toEqual([1, 2, 3, 4, 5])
    expect(t.total).toBe(5)
  })

  it('asc (race times): lowest first, fractional times kept exactly', async () => {
    const b = await createBoard({ sortOrder: 'asc', scoreMin: 0, scoreMax: 3600 })
    await submitFor(b, 'a', { score: 52.317 })
    await submitFor(b, 'b', { score: 49.001 })
    await submitFor(b, 'c', { score: 61.25 })
    const t = await top(b)
    expect(ids(t)).toEqual(['b', 'a', 'c'])
    expect(t.entries[0]!.score).toBe(49.001)
  })

  it('best keeps the better score; a worse one changes nothing but is answered', async () => {
    const b = await createBoard({ sortOrder: 'asc' })
    await submitFor(b, 'p', { score: 50 })
    const worse = (await (await submitFor(b, 'p', { score: 55 })).json()) as {
      score: number
      best: number
      rank: number
    }
    expect(worse).toMatchObject({ score: 55, best: 50, rank: 1 })
    // The board, not only the answer: the worse score changed nothing there.
    expect((await top(b)).entries).toMatchObject([{ playerId: 'p', score: 50 }])
    const better = (await (await submitFor(b, 'p', { score: 45 })).json()) as { best: number }
    expect(better.best).toBe(45)
    expect((await top(b)).entries[0]!.score).toBe(45)
  })

  it('ties stay in submission order across a wake of the object', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    // Player ids in the opposite order, so only the submission order can put z-first ahead.
    await submitFor(b, 'z-first', { score: 50 })
    await submitFor(b, 'm-other', { score: 70 })
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    await submitFor(b, 'a-later', { score: 50 })
    expect(ids(await top(b))).toEqual(['m-other', 'z-first', 'a-later'])
  })

  it('a tie with your own best keeps the earlier submission time', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await submitFor(b, 'first', { score: 10 })
    await submitFor(b, 'second', { score: 10 })
    await submitFor(b, 'first', { score: 10 })
    expect(ids(await top(b))).toEqual(['first', 'second'])
  })

  it('set replaces the score, even with a worse one', async () => {
    const b = await createBoard({ operator: 'set' })
    await submitFor(b, 'p', { score: 80 })
    await submitFor(b, 'q', { score: 60 })
    await submitFor(b, 'p', { score: 20 })
    const t = await top(b)
    expect(ids(t)).toEqual(['q', 'p'])
    expect(t.entries[1]!.score).toBe(20)
  })

  it('set to the same values, or incr by zero, keeps the entry its place among ties, and takes the new metadata', async () => {
    for (const operator of ['set', 'incr'] as const) {
      const b = await createBoard({ operator, submitsPerMinute: 600 })
      await submitFor(b, 'first', { score: 10, metadata: { run: 1 } })
      await submitFor(b, 'second', { score: 10 })
      // A loss reported to an incr board as +0; the same result again on a set board.
      const again = await submitFor(b, 'first', {
        score: operator === 'set' ? 10 : 0,
        metadata: { run: 2 },
      })
      expect(await again.json()).toMatchObject({ best: 10, rank: 1 })
      const t = await top(b)
      expect(ids(t), operator).toEqual(['first', 'second'])
      expect(t.entries[0]!.metadata, operator).toEqual({ run: 2 })
    }
  })

  it('incr adds to the score, and refuses a total past the bounds', async () => {
    const b = await createBoard({ operator: 'incr', scoreMin: 0, scoreMax: 100 })
    await submitFor(b, 'p', { score: 30 })
    const r = (await (await submitFor(b, 'p', { score: 45 })).json()) as {
      score: number
      best: number
    }
    expect(r).toMatchObject({ score: 45, best: 75 })
    const over = await problem(await submitFor(b, 'p', { score: 30 }))
    expect(over).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await top(b)).entries[0]!.score).toBe(75)
  })

  it('incr refuses a subscore total past the bounds too', async () => {
    const b = await createBoard({ operator: 'incr', subscoreMin: 0, subscoreMax: 100 })
    await submitFor(b, 'p', { score: 1, subscore: 60 })
    const over = await problem(await submitFor(b, 'p', { score: 1, subscore: 60 }))
    expect(over).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(over.body.errors).toEqual([{ path: 'subscore', message: 'total out of bounds' }])
    expect((await top(b)).entries[0]).toMatchObject({ score: 1, subscore: 60 })
  })

  it('incr with a subscore bound lowered below a total: score-only submissions still count', async () => {
    const b = await createBoard({ operator: 'incr', subscoreMax: 100, submitsPerMinute: 600 })
    await submitFor(b, 'p', { score: 1, subscore: 60 })
    const put = await call(
      `/v1/admin/leaderboards/${b}`,
      json('PUT', { operator: 'incr', subscoreMax: 10, submitsPerMinute: 600 }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    // The subscore total stays as it was (60, above the new 10): only the score moves.
    expect((await submitFor(b, 'p', { score: 2 })).status).toBe(200)
    expect((await top(b)).entries[0]).toMatchObject({ score: 3, subscore: 60 })
    // Moving the subscore total is checked against the new bound.
    const over = await problem(await submitFor(b, 'p', { score: 1, subscore: 1 }))
    expect(over.body.errors).toEqual([{ path: 'subscore', message: 'total out of bounds' }])
    expect((await top(b)).entries[0]).toMatchObject({ score: 3, subscore: 60 })
  })

  it('bounds lowered below a best: that player’s later in-bounds scores are answered, not refused', async () => {
    const b = await createBoard({ scoreMax: 1000, subscoreMax: 100, submitsPerMinute: 600 })
    await submitFor(b, 'p', { score: 900, subscore: 50 })
    const lowered = await call(
      `/v1/admin/leaderboards/${b}`,
      json('PUT', { scoreMax: 500, subscoreMax: 10, submitsPerMinute: 600 }, ADMIN_KEY),
    )
    expect(lowered.status).toBe(200)
    // Not better: the standing stays as it was, as for anyone else's worse score.
    const worse = await submitFor(b, 'p', { score: 400, subscore: 5 })
    expect(worse.status).toBe(200)
    expect(await worse.json()).toMatchObject({ score: 400, best: 900, rank: 1 })
    // Out of the new bounds: refused as for everyone.
    const over = await problem(await submitFor(b, 'p', { score: 600 }))
    expect(over).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await top(b)).entries[0]).toMatchObject({ playerId: 'p', score: 900, subscore: 50 })
  })

  it('metadata rides along with the entry that ranks', async () => {
    const b = await createBoard({ sortOrder: 'asc' })
    await submitFor(b, 'p', { score: 50, metadata: { car: 'red', lap: [1, 2] } })
    await submitFor(b, 'p', { score: 60, metadata: { car: 'blue' } })
    expect((await top(b)).entries[0]!.metadata).toEqual({ car: 'red', lap: [1, 2] })
  })
})

describe('idempotency', () => {
  it('a retry with the same key returns the first answer with replayed: true and counts once', async () => {
    const b = await createBoard({ operator: 'incr' })
    const counted = (replayed: string) =>
      metricTotal('nexus_leaderboard_submissions_total', { replayed })
    const [firsts, replays] = [counted('false'), counted('true')]
    const first = await submitFor(b, 'p', { score: 5 }, 'same-key')
    const again = await submitFor(b, 'p', { score: 5 }, 'same-key')
    const a = (await first.json()) as Record<string, unknown>
    const r = (await again.json()) as Record<string, unknown>
    expect(a.replayed).toBe(false)
    expect(r).toEqual({ ...a, replayed: true })
    expect((await top(b)).entries[0]!.score).toBe(5)
    // On /metrics: the replay share the runbook watches.
    expect([counted('false') - firsts, counted('true') - replays]).toEqual([1, 1])
  })

  it('concurrent retries of one key apply once', async () => {
    const b = await createBoard({ operator: 'incr', submitsPerMinute: 600 })
    const replies = await Promise.all(
      Array.from({ length: 10 }, () =>
        submitFor(b, 'p', { score: 1 }, 'burst-key').then(
          (r) => r.json() as Promise<{ replayed: boolean }>,
        ),
      ),
    )
    expect(replies.filter((r) => !r.replayed)).toHaveLength(1)
    expect((await top(b)).entries[0]!.score).toBe(1)
  })

  it('the same key with a different body is refused and changes nothing', async () => {
    const b = await createBoard()
    await submitFor(b, 'p', { score: 5 }, 'k1')
    const p = await problem(await submitFor(b, 'p', { score: 500 }, 'k1'))
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    expect((await top(b)).entries[0]!.score).toBe(5)
  })

  it('keys expire after 24 h, swept or not; a backlog of expired keys is swept in full', async () => {
    const b = await createBoard({ operator: 'incr', submitsPerMinute: 600 })
    await submitFor(b, 'p', { score: 5 }, 'old-key')
    const out = await runInDurableObject(
      env.LEADERBOARD.getByName(b),
      async (inst: Leaderboard, state) => {
        const sql = state.storage.sql
        const day = 24 * 3_600_000
        // The key above, and 12,000 others, written just over a day ago.
        sql.exec(`UPDATE idempotency SET created_at = ?`, Date.now() - day - 1000)
        for (let i = 0; i < 12_000; i++) {
          sql.exec(
            `INSERT INTO idempotency VALUES (?, ?, 'h', '{}', ?)`,
            `x${i}`,
            `k${i}`,
            Date.now() - day - 1000,
          )
        }
        // Not swept yet: the expired key is a new submission all the same.
        const again = await inst.submit({
          boardId: b,
          playerId: 'p',
          score: 5,
          subscore: 0,
          metadata: null,
          idempotencyKey: 'old-key',
          requestHash: 'another body',
        })
        // A batch of 5,000 an alarm, each coming back a second later for the rest.
        for (let run = 0; run < 3; run++) {
          sql.exec(`DELETE FROM meta WHERE key = 'next_sweep'`)
          await inst.alarm()
        }
        const left = sql
          .exec<{ n: number }>(
            `SELECT count(*) AS n FROM idempotency WHERE created_at < ?`,
            Date.now() - day,
          )
          .one().n
        return { again, left }
      },
    )
    expect(out.again).toMatchObject({ ok: true, result: { replayed: false, best: 10 } })
    expect(out.left).toBe(0)
  })

  it('a key written while the alarm is set further out than a day brings it to the key’s expiry', async () => {
    const b = await createBoard()
    const board = env.LEADERBOARD.getByName(b)
    // An alarm a month away, as a monthly cycle's end sets it while the board holds no keys.
    const month = 30 * 24 * 3_600_000
    await runInDurableObject(board, (_inst, state) => state.storage.setAlarm(Date.now() + month))
    const before = Date.now()
    expect((await submitFor(b, 'p', { score: 1 }, 'a-key')).status).toBe(200)
    const alarm = await runInDurableObject(board, (_inst, state) => state.storage.getAlarm())
    expect(alarm).toBeGreaterThanOrEqual(before + 24 * 3_600_000)
    expect(alarm).toBeLessThanOrEqual(Date.now() + 24 * 3_600_000)
  })

  it('one alarm sweeps a bounded number of expired keys and comes back a second later for the rest', async () => {
    const b = await createBoard()
    const out = await runInDurableObject(
      env.LEADERBOARD.getByName(b),
      async (inst: Leaderboard, state) => {
        const sql = state.storage.sql
        const expired = Date.now() - 24 * 3_600_000 - 1000
        // 8,000 expired keys: more than one alarm's batch of 5,000.
        sql.exec(
          `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000)
         INSERT INTO idempotency SELECT 'x' || i, 'k' || i, 'h', '{}', ? FROM n`,
          expired,
        )
        sql.exec(`DELETE FROM meta WHERE key = 'next_sweep'`)
        const before = Date.now()
        await inst.alarm()
        const left = sql.exec<{ n: number }>(`SELECT count(*) AS n FROM idempotency`).one().n
        const next = Number(
          sql.exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'next_sweep'`).one()
            .value,
        )
        return { left, nextIn: next - before, alarm: await state.storage.getAlarm() }
      },
    )
    expect(out.left).toBe(3000)
    expect(out.nextIn).toBeLessThanOrEqual(1000 + 1000)
    expect(out.alarm).not.toBeNull()
  })

  it("a board's count of its cycle reads the narrow index by seq, not the rank index that carries every entry's metadata", async () => {
    const b = await createBoard()
    await submitFor(b, 'p', { score: 5, metadata: { note: 'x'.repeat(400) } })
    const plan = await runInDurableObject(env.LEADERBOARD.getByName(b), (_inst, state) =>
      state.storage.sql
        .exec<{ detail: string }>(`EXPLAIN QUERY PLAN ${COUNT_CYCLE_ENTRIES}`, 1)
        .toArray()
        .map((r) => r.detail)
        .join('; '),
    )
    expect(plan).toContain('entries_seq')
    expect(plan).not.toContain('entries_rank')
  })

  it('keys are per player: two players may use the same key', async () => {
    const b = await createBoard()
    await submitFor(b, 'p', { score: 5 }, 'shared')
    const other = (await (await submitFor(b, 'q', { score: 7 }, 'shared')).json()) as {
      replayed: boolean
    }
    expect(other.replayed).toBe(false)
    expect((await top(b)).total).toBe(2)
  })

  it('no submission over HTTP may take a key of the kind game sessions submit wins with (session:…), a player’s or a game server’s: 422, nothing stored', async () => {
    const b = await createBoard({ operator: 'incr' })
    const guest = await newGuest()
    const key = `session:s_${crypto.randomUUID()}`
    const refused = await problem(await submitAs(b, guest.token, { score: 1 }, key))
    expect(refused).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(refused.body.errors).toEqual([
      { path: 'idempotency-key', message: 'must not begin "session:"' },
    ])
    const server = await problem(await submitFor(b, guest.playerId, { score: 1 }, key))
    expect(server).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await top(b)).total).toBe(0)
    // Any other key is taken.
    expect((await submitAs(b, guest.token, { score: 1 }, `match:${key}`)).status).toBe(200)
  })

  it('metadata key order does not make a retry look different', async () => {
    const b = await createBoard()
    await submitFor(b, 'p', { score: 5, metadata: { a: 1, b: 2 } }, 'k-order')
    const r = (await (
      await submitFor(b, 'p', { score: 5, metadata: { b: 2, a: 1 } }, 'k-order')
    ).json()) as { replayed: boolean }
    expect(r.replayed).toBe(true)
  })

  it('a submission retried after its cycle ended is answered with its first answer (cycle N, its rank) and not applied to the new cycle', async () => {
    const b = await createBoard()
    await submitFor(b, 'ahead', { score: 90 })
    const first = (await (
      await submitFor(b, 'p', { score: 40 }, 'retry-after-close')
    ).json()) as Record<string, unknown>
    expect(first).toEqual({ cycle: 1, score: 40, best: 40, rank: 2, replayed: false })
    const closed = await call(`/v1/admin/leaderboards/${b}/close`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(closed.status).toBe(202)
    expect(await closed.json()).toMatchObject({ closed: { cycle: 1 }, current: { cycle: 2 } })
    // The retry, same key and body, now that cycle 2 runs: the answer of cycle 1, replayed.
    const retry = await submitFor(b, 'p', { score: 40 }, 'retry-after-close')
    expect(retry.status).toBe(200)
    expect(await retry.json()).toEqual({ ...first, replayed: true })
    // Nothing reached cycle 2: the player has no entry there, and the board is empty.
    const mine = await fresh<{ cycle: number; entry: unknown; total: number }>(
      `/v1/leaderboards/${b}/players/p`,
    )
    expect(mine).toMatchObject({ cycle: 2, entry: null, total: 0 })
    expect((await top(b)).total).toBe(0)
  })
})

describe('metrics a board counted', () => {
  it('counted within the interval after a send, they bring the board’s alarm forward to when they are due (a timer instead would keep the object from hibernating)', async () => {
    withMetricsAlarms()
    const b = await createBoard()
    const board = env.LEADERBOARD.getByName(b)
    const before = Date.now()
    await sendMetrics(env)
    const after = Date.now()
    // With a key: the board's own next deadline is the key's expiry, a day away.
    expect((await submitFor(b, 'p', { score: 1 }, 'a-key')).status).toBe(200)
    const alarm = await until(async () => {
      const at = await runInDurableObject(board, (_inst, state) => state.storage.getAlarm())
      return at !== null && at < after + 3_600_000 ? at : undefined
    })
    expect(alarm).toBeGreaterThanOrEqual(before)
    expect(alarm).toBeLessThanOrEqual(after + FLUSH_INTERVAL_MS)
  })

  it('an idle board settles once its counts have reached the hub: its alarm goes back to its own next deadline, not every 10 s', async () => {
    withMetricsAlarms()
    const b = await createBoard()
    const board = env.LEADERBOARD.getByName(b)
    await sendMetrics(env)
    expect((await submitFor(b, 'p', { score: 1 }, 'a-key')).status).toBe(200)
    const alarm = () => runInDurableObject(board, (_inst, state) => state.storage.getAlarm())
    await until(async () => {
      const at = await alarm()
      return at !== null && at < Date.now() + 60_000 ? at : undefined
    })
    // Each alarm brought forward for metrics runs once its counts are sent (as the next send
    // would do): the board's own work at the first (its size changed) counts once more.
    let runs = 0
    for (; runs < 5; runs++) {
      await sendMetrics(env)
      const at = await alarm()
      if (at === null || at > Date.now() + 60_000) break
      expect(await runDurableObjectAlarm(board)).toBe(true)
      await until(async () => ((await alarm()) !== null ? true : undefined))
    }
    expect(runs).toBeLessThanOrEqual(2)
    // The key's expiry, a day away.
    expect(await alarm()).toBeGreaterThan(Date.now() + 23 * 3_600_000)
  })
})

describe('the storage metric', () => {
  it('the board reports its storage as submissions come (a minute apart at most) and at each alarm; it grows with them', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    const bytes = () => {
      const family = localFamilies().find((f) => f.name === 'nexus_leaderboard_storage_bytes')
      const series = (family?.series ?? []) as { labels: { board: string }; value: number }[]
      return series.find((x) => x.labels.board === b)?.value
    }
    const stub = env.LEADERBOARD.getByName(b)
    // The first submission reports it, with no alarm run.
    await submitFor(b, 'first', { score: 1 })
    expect(bytes()).toBeGreaterThan(0)
    expect(await runDurableObjectAlarm(stub)).toBe(true)
    const small = bytes()!
    const size = await runInDurableObject(
      stub,
      (_: Leaderboard, state) => state.storage.sql.databaseSize,
    )
    expect(small).toBe(size)
    for (let i = 0; i < 300; i++)
      await submitFor(b, `p${i}`, { score: i, metadata: { pad: 'x'.repeat(200) } })
    await runInDurableObject(stub, (_: Leaderboard, state) => state.storage.setAlarm(Date.now()))
    expect(await runDurableObjectAlarm(stub)).toBe(true)
    expect(bytes()!).toBeGreaterThan(small)
  })
})

describe('the rejections metric', () => {
  it('counts refused submissions, whoever refused them, and not refused reads', async () => {
    const b = await createBoard({ submitsPerMinute: 1 })
    const refusals = () => {
      const family = localFamilies().find((f) => f.name === 'nexus_leaderboard_rejections_total')
      const series = (family?.series ?? []) as { labels: { reason: string }; value: number }[]
      return (reason: string) => series.find((x) => x.labels.reason === reason)?.value ?? 0
    }
    const before = refusals()
    // Refused reads: a player with no score, a broken cursor.
    await (await call(`/v1/leaderboards/${b}/around/nobody`)).body?.cancel()
    await (await call(`/v1/leaderboards/${b}/top?cursor=notacursor`)).body?.cancel()
    // Refused by the Worker: a score that is not a number.
    await (await submitFor(b, 'p', { score: 'ten' as unknown as number })).body?.cancel()
    // Refused by the board: over the limit, within one minute of the board's clock.
    const minute = Math.floor(Date.now() / 60_000) * 60_000 + 30_000
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      inst.now = () => minute
    })
    expect((await submitFor(b, 'p', { score: 1 })).status).toBe(200)
    expect((await submitFor(b, 'p', { score: 2 })).status).toBe(429)
    const after = refusals()
    expect(after('validation') - before('validation')).toBe(1)
    expect(after('not-found') - before('not-found')).toBe(0)
    expect(after('rate-limited') - before('rate-limited')).toBe(1)
    // A board that fails rather than refuses (its storage full, say) is counted too.
    const restore = await replaceMethod<Leaderboard, 'submit'>(
      env.LEADERBOARD.getByName(b),
      'submit',
      () => () => Promise.reject(new Error('SQLITE_FULL: database or disk is full')),
    )
    const failed = await submitFor(b, 'q', { score: 1 })
    restore()
    expect(failed.status).toBe(500)
    expect(refusals()('internal') - before('internal')).toBe(1)
    // A client's own errors the framework answers (an empty or broken JSON body, another
    // media type) are no board failure.
    for (const [type, body] of [
      ['application/json', ''],
      ['application/json', '{'],
      ['text/plain', '{}'],
    ] as const) {
      const res = await call(`/v1/leaderboards/${b}/scores`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${ADMIN_KEY}`,
          'idempotency-key': `k-${crypto.randomUUID()}`,
          'content-type': type,
        },
        body,
      })
      expect(res.status).toBeGreaterThanOrEqual(400)
      expect(res.status).toBeLessThan(500)
    }
    expect(refusals()('internal') - before('internal')).toBe(1)
  })
})

describe('rate limit', () => {
  it('refuses the submission past submitsPerMinute with 429 and Retry-After; refused ones change nothing', async () => {
    const b = await createBoard({ submitsPerMinute: 3, operator: 'incr' })
    // Counted by the minute: its turn after the second submission would let all five through.
    await clearOfMinuteTurn(5_000)
    const statuses: number[] = []
    let limited: Response | undefined
    for (let i = 0; i < 5; i++) {
      const res = await submitFor(b, 'p', { score: 1 })
      statuses.push(res.status)
      if (res.status === 429) limited ??= res
      else await res.body?.cancel()
    }
    // A minute boundary may reset the window once during the loop.
    const accepted = statuses.filter((s) => s === 200).length
    expect(accepted).toBeGreaterThanOrEqual(3)
    expect(accepted).toBeLessThanOrEqual(4)
    const p = await problem(limited!)
    expect(p).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    const retryAfter = Number(limited!.headers.get('retry-after'))
    expect(retryAfter).toBeGreaterThanOrEqual(1)
    expect(retryAfter).toBeLessThanOrEqual(60)
    expect((await top(b)).entries[0]!.score).toBe(accepted)
  })

  it('the count survives the object being evicted mid-minute, and a new minute starts afresh', async () => {
    const b = await createBoard({ submitsPerMinute: 2, operator: 'incr' })
    const stub = env.LEADERBOARD.getByName(b)
    // The board's clock, pinned mid-minute so the window cannot turn during the test.
    const minute = Math.floor(Date.now() / 60_000) * 60_000 + 30_000
    const pin = (t: number) =>
      runInDurableObject(stub, (inst: Leaderboard) => {
        inst.now = () => t
      })
    await pin(minute)
    expect((await submitFor(b, 'p', { score: 1 }, 'k1')).status).toBe(200)
    expect((await submitFor(b, 'p', { score: 1 }, 'k2')).status).toBe(200)
    expect((await submitFor(b, 'other', { score: 1 }, 'k1')).status).toBe(200)
    await evictDurableObject(stub)
    await pin(minute + 10_000)
    const limited = await submitFor(b, 'p', { score: 1 }, 'k3')
    expect(limited.status).toBe(429)
    expect(limited.headers.get('retry-after')).toBe('20')
    // Other players keep their own count; a replay is still answered.
    expect((await submitFor(b, 'other', { score: 1 }, 'k2')).status).toBe(200)
    expect((await submitFor(b, 'p', { score: 1 }, 'k2')).status).toBe(200)
    await pin(minute + 60_000)
    expect((await submitFor(b, 'p', { score: 1 }, 'k3')).status).toBe(200)
    expect((await top(b)).entries.find((e) => e.playerId === 'p')!.score).toBe(3)
  })

  it('a replay does not count against the limit and is answered even when limited', async () => {
    const b = await createBoard({ submitsPerMinute: 2, operator: 'incr' })
    // The board's clock, pinned mid-minute so the window cannot turn during the test.
    const minute = Math.floor(Date.now() / 60_000) * 60_000 + 30_000
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      inst.now = () => minute
    })
    const first = await submitFor(b, 'p', { score: 1 }, 'k1')
    expect(first.status).toBe(200)
    const answer = (await first.json()) as Record<string, unknown>
    expect(answer.replayed).toBe(false)
    const replay = await submitFor(b, 'p', { score: 1 }, 'k1')
    expect(replay.status).toBe(200)
    expect(await replay.json()).toEqual({ ...answer, replayed: true })
    // Had the replay counted, the limit of 2 would be used up and k2 refused.
    expect((await submitFor(b, 'p', { score: 1 }, 'k2')).status).toBe(200)
    const limited = await problem(await submitFor(b, 'p', { score: 1 }, 'k3'))
    expect(limited).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    const late = await submitFor(b, 'p', { score: 1 }, 'k1')
    expect(late.status).toBe(200)
    expect(await late.json()).toEqual({ ...answer, replayed: true })
    // Only k1 and k2 were applied (the board adds each score).
    expect((await top(b)).entries).toMatchObject([{ playerId: 'p', score: 2 }])
  })
})

describe('a cycle full of players (maxEntries)', () => {
  it('refuses a new player with 409 and the limit, changing nothing; ranked players still submit, a removal makes room, and the next cycle takes everyone', async () => {
    const b = await createBoard({ maxEntries: 3, operator: 'incr', cycle: { every: '1h' } })
    // The board's clock held still: an hour's turn between two submissions would start a cycle.
    const at = Date.now()
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      inst.now = () => at
    })
    for (const p of ['a', 'b', 'c']) expect((await submitFor(b, p, { score: 1 })).status).toBe(200)
    const key = 'full-1'
    const refused = await problem(await submitFor(b, 'd', { score: 5 }, key))
    expect(refused).toMatchObject({
      status: 409,
      type: 'urn:nexus:problem:conflict',
      body: { limit: 3 },
    })
    expect((await top(b)).total).toBe(3)
    // Those ranked go on scoring.
    expect((await submitFor(b, 'a', { score: 2 })).status).toBe(200)
    expect((await top(b)).entries.map((e) => [e.playerId, e.score])[0]).toEqual(['a', 3])
    // The refusal kept nothing under its key: once a place is free, the same retry enters.
    const removed = await call(`/v1/admin/leaderboards/${b}/players/c`, {
      method: 'DELETE',
      ...bearer(ADMIN_KEY),
    })
    expect(removed.status).toBe(200)
    const retried = await submitFor(b, 'd', { score: 5 }, key)
    expect(retried.status).toBe(200)
    expect(((await retried.json()) as { replayed: boolean }).replayed).toBe(false)
    expect(ids(await top(b)).sort()).toEqual(['a', 'b', 'd'])
    expect((await submitFor(b, 'e', { score: 1 })).status).toBe(409)
    // The next cycle starts empty, with room for three new players.
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      inst.now = () => at + 3_600_000
    })
    for (const p of ['e', 'f', 'g']) expect((await submitFor(b, p, { score: 1 })).status).toBe(200)
    expect((await submitFor(b, 'a', { score: 1 })).status).toBe(409)
  })

  it("a board whose storage nears the object limit (closes waiting on Neon keep their cycles) refuses players new to the cycle with 503, Retry-After and storageFull, submitted or imported, changing nothing, counted as storage_full; ranked players still submit, and a game's win still enters", async () => {
    const b = await createBoard({})
    expect((await submitFor(b, 'a', { score: 1 })).status).toBe(200)
    const setLimit = (bytes: number) =>
      runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
        inst.newPlayersStorageLimit = bytes
      })
    // The object's own size, whatever it is, passes a limit of one byte.
    await setLimit(1)
    const counted = () =>
      metricTotal('nexus_leaderboard_rejections_total', { reason: 'storage_full' })
    const before = counted()
    const refused = await submitFor(b, 'new', { score: 5 }, 'storage-1')
    expect(refused.headers.get('retry-after')).toBe('60')
    expect(await problem(refused)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
      body: { storageFull: true },
    })
    expect(counted() - before).toBe(1)
    const imported = await call(
      `/v1/admin/leaderboards/${b}/entries`,
      json('POST', { entries: [{ playerId: 'imported', score: 3 }] }, ADMIN_KEY),
    )
    expect(await problem(imported)).toMatchObject({ status: 503 })
    // Counted as a submission's refusal is: the alert for a filling board sees imports too.
    expect(counted() - before).toBe(2)
    expect((await submitFor(b, 'a', { score: 7 }, 'storage-2')).status).toBe(200)
    // A game's win, by its session's own key: one row, sent once, in the cycle the game ended in.
    const win = await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) =>
      inst.submit({
        boardId: b,
        playerId: 'winner',
        score: 1,
        subscore: 0,
        metadata: null,
        idempotencyKey: `${MATCH_WIN_KEY_PREFIX}storage-game`,
        requestHash: 'storage-game',
      }),
    )
    expect(win.ok).toBe(true)
    expect((await top(b)).entries.map((e) => [e.playerId, e.score])).toEqual([
      ['a', 7],
      ['winner', 1],
    ])
    // With room again (the archive caught up), the same retry enters: the refusal kept nothing.
    await setLimit(Number.MAX_SAFE_INTEGER)
    const retried = await submitFor(b, 'new', { score: 5 }, 'storage-1')
    expect(retried.status).toBe(200)
    expect(((await retried.json()) as { replayed: boolean }).replayed).toBe(false)
  })

  it("an import reports the board's storage, as a submission does: a board filled by imports alone shows its size", async () => {
    const b = await createBoard({})
    const imported = await call(
      `/v1/admin/leaderboards/${b}/entries`,
      json('POST', { entries: [{ playerId: 'imported', score: 3 }] }, ADMIN_KEY),
    )
    expect(imported.status).toBe(200)
    const size = await runInDurableObject(
      env.LEADERBOARD.getByName(b),
      (_inst: Leaderboard, state) => state.storage.sql.databaseSize,
    )
    expect(metricTotal('nexus_leaderboard_storage_bytes', { board: b })).toBe(size)
  })

  it('an import that would pass the limit is refused whole; one that fills it exactly, or moves players already in, is taken', async () => {
    const b = await createBoard({ maxEntries: 4 })
    const importing = (entries: unknown[]) =>
      call(`/v1/admin/leaderboards/${b}/entries`, json('POST', { entries }, ADMIN_KEY))
    expect((await submitFor(b, 'a', { score: 1 })).status).toBe(200)
    const over = await importing(
      ['a', 'x', 'y', 'z', 'w'].map((playerId) => ({ playerId, score: 9 })),
    )
    expect(await problem(over)).toMatchObject({
      status: 409,
      type: 'urn:nexus:problem:conflict',
      body: { limit: 4 },
    })
    expect((await top(b)).entries.map((e) => [e.playerId, e.score])).toEqual([['a', 1]])
    const exact = await importing(['a', 'x', 'y', 'z'].map((playerId) => ({ playerId, score: 9 })))
    expect(await exact.json()).toMatchObject({ imported: 4, total: 4 })
    const moves = await importing([{ playerId: 'x', score: 20 }])
    expect(await moves.json()).toMatchObject({ imported: 1, total: 4 })
    // The limit lowered below the cycle's count: those ranked keep their place, and go on
    // scoring, submitted or imported; new players wait for the next cycle.
    const lowered = await call(
      `/v1/admin/leaderboards/${b}`,
      json('PUT', { maxEntries: 2 }, ADMIN_KEY),
    )
    expect(lowered.status).toBe(200)
    const ranked = await importing([{ playerId: 'y', score: 30 }])
    expect(await ranked.json()).toMatchObject({ imported: 1, total: 4 })
    expect((await submitFor(b, 'z', { score: 40 })).status).toBe(200)
    expect((await importing([{ playerId: 'v', score: 1 }])).status).toBe(409)
    expect((await submitFor(b, 'v', { score: 1 })).status).toBe(409)
  })
})

describe('who may submit', () => {
  it('a player submits for themselves with their token; naming another player is 403', async () => {
    const b = await createBoard()
    const { token, playerId } = await newGuest()
    const ok = (await (await submitAs(b, token, { score: 12 })).json()) as { rank: number }
    expect(ok.rank).toBe(1)
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top`)).entries[0]!.playerId).toBe(playerId)
    const other = `someone-else-${crypto.randomUUID().slice(0, 8)}`
    const p = await problem(await submitAs(b, token, { score: 99, playerId: other }))
    expect(p).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // The refused score went to no one: not to the player named, nor to the caller.
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top`)).entries).toMatchObject([
      { rank: 1, playerId, score: 12 },
    ])
    expect(
      await problem(
        await call(`/v1/leaderboards/${b}/around/${other}`, {
          headers: { 'cache-control': 'no-cache' },
        }),
      ),
    ).toMatchObject({
      status: 404,
      type: 'urn:nexus:problem:not-found',
    })
  })

  it('the admin key must name the player', async () => {
    const b = await createBoard()
    const p = await problem(
      await call(
        `/v1/leaderboards/${b}/scores`,
        json('POST', { score: 1 }, ADMIN_KEY, { 'idempotency-key': 'x1' }),
      ),
    )
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })
})

describe('bad input is refused with problem+json and changes nothing', () => {
  it('each one, by its status and type', async () => {
    const b = await createBoard({ scoreMin: 0, scoreMax: 1000, metadataMaxBytes: 64 })
    await submitFor(b, 'p', { score: 10 })
    const { token } = await newGuest()
    const post = (
      body: string,
      headers: Record<string, string> = {},
      credential: string | null = ADMIN_KEY,
    ) =>
      call(`/v1/leaderboards/${b}/scores`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': crypto.randomUUID(),
          ...(credential ? { authorization: `Bearer ${credential}` } : {}),
          ...headers,
        },
        body,
      })
    const cases: [string, Promise<Response>, number, string][] = [
      ['score as a string', post('{"playerId":"p","score":"12"}'), 422, 'validation'],
      ['score "NaN"', post('{"playerId":"p","score":"NaN"}'), 422, 'validation'],
      ['score "Infinity"', post('{"playerId":"p","score":"Infinity"}'), 422, 'validation'],
      [
        'score 1e309 (parses to Infinity)',
        post('{"playerId":"p","score":1e309}'),
        422,
        'validation',
      ],
      ['score null', post('{"playerId":"p","score":null}'), 422, 'validation'],
      ['score missing', post('{"playerId":"p"}'), 422, 'validation'],
      ['score above the board maximum', post('{"playerId":"p","score":1001}'), 422, 'validation'],
      ['score below the board minimum', post('{"playerId":"p","score":-1}'), 422, 'validation'],
      ['score beyond any board', post('{"playerId":"p","score":1e16}'), 422, 'validation'],
      [
        'subscore as a string',
        post('{"playerId":"p","score":1,"subscore":"a"}'),
        422,
        'validation',
      ],
      [
        'metadata over the board limit',
        post(JSON.stringify({ playerId: 'p', score: 1, metadata: { x: 'y'.repeat(100) } })),
        422,
        'validation',
      ],
      [
        'metadata over the hard limit',
        post(JSON.stringify({ playerId: 'p', score: 1, metadata: { x: 'y'.repeat(5000) } })),
        422,
        'validation',
      ],
      ['metadata an array', post('{"playerId":"p","score":1,"metadata":[1,2]}'), 422, 'validation'],
      // PostgreSQL's jsonb refuses both: stored, they would stop the cycle's archive for good.
      [
        'metadata with a NUL character',
        post('{"playerId":"p","score":1,"metadata":{"x":"a\\u0000b"}}'),
        422,
        'validation',
      ],
      [
        'metadata key with an unpaired surrogate',
        post('{"playerId":"p","score":1,"metadata":{"\\ud800":1}}'),
        422,
        'validation',
      ],
      // jsonb writes every digit of these out: a page of them would pass what Neon answers.
      [
        'metadata within the limit as sent, over it as jsonb writes its numbers out',
        post('{"playerId":"p","score":1,"metadata":{"x":[1e308]}}'),
        422,
        'validation',
      ],
      [
        'metadata nested too deep',
        post(
          JSON.stringify({
            playerId: 'p',
            score: 1,
            metadata: { a: { b: { c: { d: { e: { f: { g: { h: { i: 1 } } } } } } } } },
          }),
        ),
        422,
        'validation',
      ],
      ['unknown field', post('{"playerId":"p","score":1,"cheat":true}'), 422, 'validation'],
      [
        'missing Idempotency-Key',
        call(`/v1/leaderboards/${b}/scores`, json('POST', { playerId: 'p', score: 1 }, ADMIN_KEY)),
        422,
        'validation',
      ],
      [
        'Idempotency-Key too long',
        post('{"playerId":"p","score":1}', { 'idempotency-key': 'k'.repeat(129) }),
        422,
        'validation',
      ],
      ['malformed JSON', post('{"playerId":"p","score":'), 400, 'malformed-json'],
      [
        'not JSON',
        post('score=1', { 'content-type': 'application/x-www-form-urlencoded' }),
        415,
        'unsupported-media-type',
      ],
      ['missing token', post('{"score":1}', {}, null), 401, 'unauthorized'],
      ['forged token', post('{"score":1}', {}, token.slice(0, -4) + 'AAAA'), 401, 'unauthorized'],
    ]
    for (const [name, res, status, type] of cases) {
      const p = await problem(await res)
      expect(p, name).toMatchObject({
        status,
        type: `urn:nexus:problem:${type}`,
        contentType: 'application/problem+json',
      })
    }
    const t = await fresh<Top>(`/v1/leaderboards/${b}/top`)
    expect(t.total).toBe(1)
    expect(t.entries[0]).toMatchObject({ playerId: 'p', score: 10 })
  })

  it('an unknown board is 404 to a submission and to every read, and creates nothing', async () => {
    const p = await problem(await submitFor('no-such-board-x1', 'p', { score: 1 }))
    expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    const guest = await newGuest()
    for (const path of [
      '',
      '/top',
      '/players/p',
      '/around/p',
      '/cycles/1/top',
      `/players/${guest.playerId}/history`,
      '/players/me/history',
    ]) {
      const r = await problem(
        await call(`/v1/leaderboards/no-such-board-x1${path}`, bearer(guest.token)),
      )
      expect({ path, status: r.status, type: r.type }).toEqual({
        path,
        status: 404,
        type: 'urn:nexus:problem:not-found',
      })
    }
    expect(await pg()`select 1 from leaderboards where id = 'no-such-board-x1'`).toEqual([])
  })
})

describe('an unknown board, asked while Neon is out of reach', () => {
  it('is 503, and its object keeps nothing', async () => {
    const id = boardId('missing')
    const answer = await runInDurableObject(
      env.LEADERBOARD.getByName(id),
      async (inst: Leaderboard) => {
        const self = inst as unknown as { env: Record<string, unknown> }
        const real = self.env
        self.env = {
          ...real,
          DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
          NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
        }
        try {
          return await inst.info(id)
        } finally {
          self.env = real
        }
      },
    )
    expect(answer).toMatchObject({ ok: false, problem: 'unavailable' })
    expect(await storedBy(id)).toEqual({ tables: [], alarm: null })
  })
})

describe('an unknown board, asked again', () => {
  it('is answered 404 without waking its object for a moment, until the board is created here', async () => {
    const id = `unknown-${crypto.randomUUID().slice(0, 8)}`
    const asked: string[] = []
    const proto = await runInDurableObject(
      env.LEADERBOARD.getByName(id),
      (inst: Leaderboard) => Object.getPrototypeOf(inst) as Pick<Leaderboard, 'top' | 'submit'>,
    )
    const { top, submit } = proto
    proto.top = function (this: Leaderboard, boardId, ...rest) {
      asked.push(`top ${boardId}`)
      return top.call(this, boardId, ...rest)
    }
    proto.submit = function (this: Leaderboard, input) {
      asked.push(`submit ${input.boardId}`)
      return submit.call(this, input)
    }
    onTestFinished(() => {
      Object.assign(proto, { top, submit })
    })
    const read = () => call(`/v1/leaderboards/${id}/top`)
    expect((await problem(await read())).status).toBe(404)
    expect(asked).toEqual([`top ${id}`])
    const again = await read()
    expect(again.headers.get('cache-control')).toBe('no-store')
    expect(await problem(again)).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    expect(await problem(await submitFor(id, 'p', { score: 1 }))).toMatchObject({ status: 404 })
    expect(asked).toEqual([`top ${id}`])
    // Created through this isolate: found at once.
    await createBoard({}, id)
    expect((await read()).status).toBe(200)
    expect(asked).toEqual([`top ${id}`, `top ${id}`])
  })
})

describe('importing standings (admin)', () => {
  it('sets many standings in one batch; re-importing the same batch changes nothing', async () => {
    const b = await createBoard({ scoreMax: 1_000_000 })
    const entries = Array.from({ length: 300 }, (_, i) => ({
      playerId: `imp${i}`,
      score: (i * 37) % 300,
    }))
    const first = await call(
      `/v1/admin/leaderboards/${b}/entries`,
      json('POST', { entries }, ADMIN_KEY),
    )
    expect(await first.json()).toEqual({ cycle: 1, imported: 300, total: 300, replayed: false })
    const again = await call(
      `/v1/admin/leaderboards/${b}/entries`,
      json('POST', { entries }, ADMIN_KEY),
    )
    expect(await again.json()).toEqual({ cycle: 1, imported: 0, total: 300, replayed: false })
    const t = await top(b, 3)
    expect(t.entries.map((e) => e.score)).toEqual([299, 298, 297])
    // Imported entries rank with submitted ones.
    await submitFor(b, 'live', { score: 298.5 })
    expect(ids(await top(b, 3))[1]).toBe('live')
  })

  it('a batch sent again with its Idempotency-Key gets the first answer and changes nothing, even after the players submitted since or the cycle ended', async () => {
    // Cycle 1 throughout: not begun just before the hour turns.
    await clearOfTurn(3_600_000, 30_000)
    const b = await createBoard({ operator: 'incr', cycle: { every: '1h' } })
    const importWith = (key: string, entries: unknown[]) =>
      call(
        `/v1/admin/leaderboards/${b}/entries`,
        json('POST', { entries }, ADMIN_KEY, { 'idempotency-key': key }),
      )
    const batch = [{ playerId: 'imp-1', score: 10 }]
    expect(await (await importWith('batch-1', batch)).json()).toEqual({
      cycle: 1,
      imported: 1,
      total: 1,
      replayed: false,
    })
    // A win counted since (incr), then the batch's retry: the win stays.
    await submitFor(b, 'imp-1', { score: 1 })
    expect(await (await importWith('batch-1', batch)).json()).toEqual({
      cycle: 1,
      imported: 1,
      total: 1,
      replayed: true,
    })
    expect((await top(b)).entries.map((e) => [e.playerId, e.score])).toEqual([['imp-1', 11]])
    // The same key for another batch is refused, and changes nothing.
    const other = await problem(await importWith('batch-1', [{ playerId: 'imp-1', score: 99 }]))
    expect(other).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    expect((await top(b)).entries.map((e) => [e.playerId, e.score])).toEqual([['imp-1', 11]])
    // After the cycle ends, the retry is still the first answer, and the new cycle stays empty.
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      const later = Date.now() + 3_600_000
      inst.now = () => later
    })
    expect(((await (await importWith('batch-1', batch)).json()) as { cycle: number }).cycle).toBe(1)
    expect((await top(b)).total).toBe(0)
  })

  it('refuses a batch with an out-of-bounds entry, a duplicate player, or over 500 entries, writing none of it', async () => {
    const b = await createBoard({ scoreMax: 100 })
    const cases: [unknown, number][] = [
      [
        {
          entries: [
            { playerId: 'a', score: 1 },
            { playerId: 'b', score: 101 },
          ],
        },
        422,
      ],
      [
        {
          entries: [
            { playerId: 'a', score: 1 },
            { playerId: 'a', score: 2 },
          ],
        },
        422,
      ],
      [{ entries: Array.from({ length: 501 }, (_, i) => ({ playerId: `x${i}`, score: 1 })) }, 422],
      [{ entries: [] }, 422],
    ]
    for (const [body, status] of cases) {
      expect(
        (
          await problem(
            await call(`/v1/admin/leaderboards/${b}/entries`, json('POST', body, ADMIN_KEY)),
          )
        ).status,
      ).toBe(status)
    }
    expect((await top(b)).total).toBe(0)
    const { token } = await newGuest()
    expect(
      (
        await problem(
          await call(
            `/v1/admin/leaderboards/${b}/entries`,
            json('POST', { entries: [{ playerId: 'a', score: 1 }] }, token),
          ),
        )
      ).status,
    ).toBe(403)
  })

  it('an out-of-bounds subscore is refused naming entries.N.subscore, not the score', async () => {
    const b = await createBoard({ subscoreMax: 10 })
    const p = await problem(
      await call(
        `/v1/admin/leaderboards/${b}/entries`,
        json('POST', { entries: [{ playerId: 'a', score: 1, subscore: 11 }] }, ADMIN_KEY),
      ),
    )
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(p.body.errors).toEqual([expect.objectContaining({ path: 'entries.0.subscore' })])
    expect((await top(b)).total).toBe(0)
  })

  it('re-importing a standing with new metadata replaces the metadata and keeps its place among ties', async () => {
    const b = await createBoard()
    const post = (entries: unknown[]) =>
      call(`/v1/admin/leaderboards/${b}/entries`, json('POST', { entries }, ADMIN_KEY))
    await post([{ playerId: 'first', score: 5, metadata: { v: 1 } }])
    await submitFor(b, 'second', { score: 5 })
    const again = await post([{ playerId: 'first', score: 5, metadata: { v: 2 } }])
    expect(await again.json()).toEqual({ cycle: 1, imported: 1, total: 2, replayed: false })
    const t = await top(b)
    expect(ids(t)).toEqual(['first', 'second'])
    expect(t.entries[0]!.metadata).toEqual({ v: 2 })
  })
})

describe('edge rate limit through Redis', () => {
  /** A player's keyed submission to `board`, under an edge limit of 2 a minute. */
  const sendAtTwo = (board: string, token: string, key: string, body: unknown) =>
    callWithEnv(
      { EDGE_SUBMITS_PER_MINUTE: '2' },
      `/v1/leaderboards/${board}/scores`,
      json('POST', body, token, { 'idempotency-key': key }),
    )

  it('limits a player across boards at the edge when Redis is configured', async () => {
    const { callWithEnv } = await import('./helpers/http.ts')
    const { token } = await newGuest()
    const boards = [
      await createBoard({ submitsPerMinute: 600 }),
      await createBoard({ submitsPerMinute: 600 }),
    ]
    await clearOfMinuteTurn(5_000)
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) {
      const res = await callWithEnv(
        { EDGE_SUBMITS_PER_MINUTE: '2' },
        `/v1/leaderboards/${boards[i % 2]}/scores`,
        json('POST', { score: i }, token, { 'idempotency-key': `edge-${i}` }),
      )
      statuses.push(res.status)
      if (res.status === 429)
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
      await res.body?.cancel()
    }
    // Two per minute across both boards (a minute boundary in the loop may allow one more).
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(3)
    expect(statuses).toContain(429)
  })

  it('gives back the counts of as many submissions the board refuses as malformed as EDGE_SUBMITS_PER_MINUTE a minute, and no more: a loop of them is refused (429)', async () => {
    const { token } = await newGuest()
    const b = await createBoard({ submitsPerMinute: 600, scoreMax: 1_000 })
    await clearOfMinuteTurn(5_000)
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) {
      const res = await callWithEnv(
        { EDGE_SUBMITS_PER_MINUTE: '2' },
        `/v1/leaderboards/${b}/scores`,
        json('POST', { score: 1e9 }, token, { 'idempotency-key': `oob-${i}` }),
      )
      statuses.push(res.status)
      await res.body?.cancel()
    }
    // Two given back, two counted, then the limit.
    expect(statuses).toEqual([422, 422, 422, 422, 429])
  })

  it('a count given back that Redis never took (the hit went to the isolate while Redis failed) leaves Redis as it was: no key without an expiry, no count below zero', async () => {
    const redis = getRedis(env)!
    const key = `refund-${crypto.randomUUID()}`
    const at = Date.now()
    await unhitWindow(redis, key, 60_000, at)
    const stored = `nexus:rl:${key}:${at - (at % 60_000)}`
    expect(await redis.run('test.exists', (r) => r.exists(stored))).toBe(0)
    // One Redis took is given back.
    expect((await hitWindow(redis, key, 5, 60_000, at)).remaining).toBe(4)
    await unhitWindow(redis, key, 60_000, at)
    expect(await redis.run('test.get', (r) => r.get<number>(stored))).toBe(0)
    await unhitWindow(redis, key, 60_000, at)
    expect(await redis.run('test.get', (r) => r.get<number>(stored))).toBe(0)
  })

  it('past the limit, as many submissions again a minute reach the board for their replay; past those, even a replay is 429 without asking the board', async () => {
    const { token } = await newGuest()
    const b = await createBoard({ submitsPerMinute: 600 })
    const send = (key: string, body: unknown) => sendAtTwo(b, token, key, body)
    await clearOfMinuteTurn(5_000)
    const first = await send('a', { score: 1 })
    expect(first.status).toBe(200)
    const firstAnswer = (await first.json()) as Record<string, unknown>
    expect((await send('b', { score: 2 })).status).toBe(200)
    // Past the limit: two replays answered from the board.
    for (let i = 0; i < 2; i++) {
      const replay = await send('a', { score: 1 })
      expect(replay.status).toBe(200)
      expect(await replay.json()).toEqual({ ...firstAnswer, replayed: true })
    }
    // Past those too: refused at the edge for the rest of the minute, the replay included.
    const refused = await send('a', { score: 1 })
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(await problem(refused)).toMatchObject({ type: 'urn:nexus:problem:rate-limited' })
  })

  it('counts well-formed submissions only, and answers a replay past the limit; what it refuses changes nothing', async () => {
    const { token, playerId } = await newGuest()
    const b = await createBoard({ operator: 'incr', submitsPerMinute: 600, scoreMax: 1_000 })
    const send = (key: string, body: unknown) => sendAtTwo(b, token, key, body)
    await clearOfMinuteTurn(5_000)
    // Malformed: refused before the edge counts them.
    for (let i = 0; i < 3; i++) expect((await send(`bad-${i}`, { score: 'x' })).status).toBe(422)
    // Malformed for this board alone (outside its bounds, metadata past its limit), which only
    // the board can tell: the count it took is given back.
    expect((await send('out-of-bounds', { score: 1e9 })).status).toBe(422)
    expect(
      (await send('too-much', { score: 1, metadata: { pad: 'x'.repeat(2_000) } })).status,
    ).toBe(422)
    const first = await send('a', { score: 1 })
    expect(first.status).toBe(200)
    const firstAnswer = (await first.json()) as Record<string, unknown>
    expect((await send('b', { score: 2 })).status).toBe(200)
    // Over the limit, the first call past it (of the two a minute that still go to a board for
    // a replay) names a board nobody created: it has nothing to replay, 429, and its object,
    // asked and woken for the call, keeps nothing. (A minute's turn would make it a first call:
    // 404, the same storage.)
    const unknown = boardId('no-such-board')
    let unknownAsked = 0
    await replaceMethod<Leaderboard, 'submit'>(
      env.LEADERBOARD.getByName(b),
      'submit',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['submit']>) {
          if (args[0].boardId === unknown) unknownAsked++
          return original.apply(this, args)
        },
    )
    const made = await sendAtTwo(unknown, token, 'z', { score: 1 })
    expect([429, 404]).toContain(made.status)
    if (made.status === 429) {
      expect(await problem(made)).toMatchObject({ type: 'urn:nexus:problem:rate-limited' })
    } else await made.body?.cancel()
    expect(unknownAsked).toBe(1)
    expect(await storedBy(unknown)).toEqual({ tables: [], alarm: null })
    // The first submission's retry gets its first answer all the same.
    const replay = await send('a', { score: 1 })
    expect(replay.status).toBe(200)
    expect(await replay.json()).toEqual({ ...firstAnswer, replayed: true })
    // Anything else is refused (a minute boundary may let one more through first).
    let refused: Response | null = null
    for (let i = 0; i < 3 && !refused; i++) {
      const res = await send(`c-${i}`, { score: 100 })
      if (res.status === 429) refused = res
      else await res.body?.cancel()
    }
    expect(refused).not.toBeNull()
    expect(await problem(refused!)).toMatchObject({ type: 'urn:nexus:problem:rate-limited' })
    // Only the accepted submissions count on the board.
    const standing = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${b}/players/${playerId}`,
    )
    expect([3, 103]).toContain(standing.entry!.score)
  })
})
