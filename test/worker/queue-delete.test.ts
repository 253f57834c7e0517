import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import {
  DELETED_POOL_KEPT_MS,
  RESULT_RETENTION_MS,
  type JoinInput,
  type MatchPool,
} from '../../durable-objects/match-pool.ts'
import { env } from 'cloudflare:workers'
import { unpushedQueues } from '../../workers/matchmaking/config.ts'
import { pushOwed } from '../../workers/scheduled.ts'
import type { SessionCreator } from '../../workers/matchmaking/session.ts'
import {
  DELETED_QUEUE_MATCHES_SETTLED_MS,
  FENCE_RETENTION_MS,
  removeFromQueues,
} from '../../workers/matchmaking/claims.ts'
import { ADMIN_KEY, bearer, call, callWithEnv, json, newGuest, problem } from './helpers/http.ts'
import { createBoard, holdLock, pg } from './helpers/boards.ts'
import {
  alarmAt,
  createQueue,
  DUEL,
  fireAlarm,
  joinFor,
  newClock,
  poolOf,
  rig,
  ticketOf,
  type Found,
} from './helpers/matchmaking.ts'
import { closed, connect, nextOfType, upgrade } from './helpers/sockets.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'

/** The tables the pool's storage holds (none once it is deleted); asked right after the call. */
function storedTables(queue: string): Promise<string[]> {
  return runInDurableObject(poolOf(queue), (_inst: MatchPool, state) =>
    state.storage.sql
      .exec<{ name: string }>(
        `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '_cf_%'`,
      )
      .toArray()
      .map((t) => t.name),
  )
}

/** A join of the queue as it was at version 1 (in play), read from Neon before its deletion. */
function lateJoin(queue: string): JoinInput {
  return {
    queue,
    region: 'eu',
    config: { ...DUEL, maxPartySize: 1, ticketTtlSeconds: 300, leaderboardId: null },
    version: 1,
    players: [{ playerId: `${queue}-late`, rating: 1500 }],
    claim: { versions: { [`${queue}-late`]: 1 }, claimedAt: Date.now() },
  }
}

/** The waiting tickets the pool's storage holds. */
function waitingStored(queue: string): Promise<number> {
  return runInDurableObject(
    poolOf(queue),
    (_inst: MatchPool, state) =>
      state.storage.sql
        .exec<{ n: number }>(`SELECT count(*) AS n FROM tickets WHERE state = 'waiting'`)
        .one().n,
  )
}

function deleteQueue(queue: string, credential = ADMIN_KEY): Promise<Response> {
  return call(`/v1/admin/queues/${queue}`, { ...bearer(credential), method: 'DELETE' })
}

function put(queue: string, config: Record<string, unknown>): Promise<Response> {
  return call(`/v1/admin/queues/${queue}`, json('PUT', { ...DUEL, ...config }, ADMIN_KEY))
}

async function pause(queue: string, config: Record<string, unknown> = {}): Promise<void> {
  const res = await put(queue, { ...config, paused: true })
  if (res.status !== 200) throw new Error(`pause: ${res.status} ${await res.text()}`)
}

/** The queue's row in Neon (deleted ones too). */
async function row(queue: string) {
  const [r] =
    await pg()`select version, deleted_at, unpushed_regions from queues where id = ${queue}`
  return r as { version: number; deleted_at: Date | null; unpushed_regions: string[] } | undefined
}

interface Listed {
  queues: { id: string; paused: boolean; deletedAt: string | null }[]
}

async function listed(queue: string, status?: 'deleted'): Promise<Listed['queues'][number][]> {
  const query = `after=${queue.slice(0, -1)}&limit=100${status ? `&status=${status}` : ''}`
  const res = await call(`/v1/admin/queues?${query}`, bearer(ADMIN_KEY))
  return ((await res.json()) as Listed).queues.filter((q) => q.id === queue)
}

describe('DELETE /v1/admin/queues/:queue', () => {
  it('refuses a queue in play (409, paused: false) and changes nothing: its ticket waits on and it is listed', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const waiting = await joinFor(q, `${q}-a`)
    const refused = await problem(await deleteQueue(q))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.paused).toBe(false)
    expect(await row(q)).toMatchObject({ version: 1, deleted_at: null })
    expect((await ticketOf(waiting.ticketId)).status).toBe('waiting')
    expect(await listed(q)).toHaveLength(1)
    // The waiting ticket is matched as before.
    expect((await joinFor(q, `${q}-b`)).status).toBe('matched')
  })

  it('a queue left on rules this version does not have (a deploy removed them) takes no joins, naming the rules, and reads as paused; pointed at other rules and paused, it is deleted', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const waiting = await joinFor(q, `${q}-a`)
    // The deploy: the module is gone while Neon's record still names it.
    await pg()`update queues set config = jsonb_set(config, '{rules}', '"retired-rules"')
                where id = ${q}`
    const g = await newGuest()
    const refused = await call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, g.token))
    const p = await problem(refused)
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(p.body).toMatchObject({ paused: true, rules: 'retired-rules' })
    expect(await waitingStored(q)).toBe(1)
    const read = (await (await call(`/v1/matchmaking/${q}`)).json()) as { paused: boolean }
    expect(read.paused).toBe(true)
    // Operators see why: the admin's own flag is unchanged, the rules are named unknown.
    expect(await listed(q)).toEqual([
      expect.objectContaining({ id: q, rules: 'retired-rules', paused: false, rulesKnown: false }),
    ])
    const stored = await call(`/v1/admin/queues/${q}`, bearer(ADMIN_KEY))
    expect(await stored.json()).toMatchObject({
      config: { rules: 'retired-rules', paused: false },
      rulesKnown: false,
    })
    // The ticket already waiting is left to its time-to-live (a pool on the version before a
    // deploy that adds rules must not send tickets away).
    expect((await ticketOf(waiting.ticketId)).status).toBe('waiting')
    // Deleting it still takes a pause: a PUT names rules this version has, paused.
    expect((await problem(await deleteQueue(q))).body.paused).toBe(false)
    await pause(q)
    expect((await deleteQueue(q)).status).toBe(200)
  })

  it('deletes a paused queue: its reads, joins and connects are 404, it is listed only as deleted, its ended tickets stay readable, and a retry is 404', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const waiting = await joinFor(q, `${q}-a`)
    await pause(q)
    const res = await deleteQueue(q)
    expect(res.status).toBe(200)
    const body = (await res.json()) as { deleted: boolean; version: number; deletedAt: string }
    // The pause was version 2; the deletion moves it on.
    expect(body).toMatchObject({ deleted: true, version: 3 })
    const stored = await row(q)
    expect(stored!.version).toBe(3)
    expect(new Date(stored!.deleted_at!).toISOString()).toBe(body.deletedAt)

    const notFound = { status: 404, type: 'urn:nexus:problem:not-found' }
    expect(await problem(await call(`/v1/admin/queues/${q}`, bearer(ADMIN_KEY)))).toMatchObject(
      notFound,
    )
    expect(await problem(await call(`/v1/matchmaking/${q}`))).toMatchObject(notFound)
    expect(await problem(await call(`/v1/matchmaking/${q}/stats`))).toMatchObject(notFound)
    expect(
      await problem(
        await call(`/v1/matchmaking/${q}/tickets`, json('POST', { playerId: `${q}-b` }, ADMIN_KEY)),
      ),
    ).toMatchObject(notFound)
    const g = await newGuest()
    const refusedSocket = await upgrade(`/v1/matchmaking/${q}`, g.token)
    expect(refusedSocket.status).toBe(404)
    expect(refusedSocket.webSocket).toBeNull()

    expect(await listed(q)).toEqual([])
    expect(await listed(q, 'deleted')).toEqual([
      expect.objectContaining({ id: q, paused: true, deletedAt: body.deletedAt }),
    ])
    // The ticket the pause cancelled is still the player's to read.
    expect(await ticketOf(waiting.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    // A retry of a deletion whose answer was lost: the queue is gone, as asked.
    expect(await problem(await deleteQueue(q))).toMatchObject(notFound)
    expect((await row(q))!.version).toBe(3)
  })

  it('with Neon unreachable: 503 unavailable, and the queue is kept', async () => {
    const q = await createQueue({ paused: true })
    const res = await callWithEnv(
      {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      },
      `/v1/admin/queues/${q}`,
      { ...bearer(ADMIN_KEY), method: 'DELETE' },
    )
    expect(await problem(res)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    // Told to wait a few seconds, spread (not to come back at once, all together).
    const wait = Number(res.headers.get('retry-after'))
    expect(wait).toBeGreaterThanOrEqual(5)
    expect(wait).toBeLessThanOrEqual(15)
    expect((await row(q))!.deleted_at).toBeNull()
    expect((await deleteQueue(q)).status).toBe(200)
  })

  it('bad input: an invalid id is 422, a player token 403, no credential 401; nothing is deleted', async () => {
    const q = await createQueue({ paused: true })
    expect(await problem(await deleteQueue('no spaces allowed'))).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    expect(await problem(await deleteQueue('tickets'))).toMatchObject({ status: 422 })
    const g = await newGuest()
    expect(await problem(await deleteQueue(q, g.token))).toMatchObject({
      status: 403,
      type: 'urn:nexus:problem:forbidden',
    })
    const anonymous = await call(`/v1/admin/queues/${q}`, { method: 'DELETE' })
    expect(await problem(anonymous)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    expect((await row(q))!.deleted_at).toBeNull()
  })

  it("closes the sockets still open on the queue's pools (1000), and a join read from Neon before the deletion is refused by its pool as not found", async () => {
    const q = await createQueue()
    // The pool's clock, so that no real alarm deletes its storage during the test.
    await rig(q, newClock())
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    await pause(q)
    const ended = closed(ws)
    expect((await deleteQueue(q)).status).toBe(200)
    expect(await ended).toEqual({ code: 1000, reason: 'queue deleted' })
    // A join that read the queue (version 1, in play) before it was paused and deleted reaches the
    // pool after: refused, not queued under the configuration it carries.
    const refused = await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.join(lateJoin(q)))
    expect(refused).toMatchObject({ ok: false, problem: 'not-found' })
    expect(await waitingStored(q)).toBe(0)
  })

  it("a deleted queue's pool deletes its storage 15 minutes after the deletion and once its ended tickets' answers are past their retention; a late call of the deleted queue leaves nothing stored; a queue made again starts from an empty pool", async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const waiting = await joinFor(q, `${q}-a`)
    await pause(q)
    const deletedAt = clock.t
    expect((await deleteQueue(q)).status).toBe(200)
    // Within the retention the cancelled ticket is still its player's to read.
    expect(await alarmAt(q)).toBeLessThanOrEqual(deletedAt + RESULT_RETENTION_MS)
    clock.t = deletedAt + RESULT_RETENTION_MS - 1
    await fireAlarm(q)
    expect((await ticketOf(waiting.ticketId)).status).toBe('cancelled')
    // Past it, the ticket goes as in any pool; the storage stays for the calls that read the
    // queue before its deletion and may still be on their way.
    clock.t = deletedAt + RESULT_RETENTION_MS
    await fireAlarm(q)
    clock.t = deletedAt + DELETED_POOL_KEPT_MS - 1
    await fireAlarm(q)
    expect(await storedTables(q)).toContain('meta')
    expect(await alarmAt(q)).toBe(deletedAt + DELETED_POOL_KEPT_MS)

    clock.t = deletedAt + DELETED_POOL_KEPT_MS
    await fireAlarm(q)
    expect(await storedTables(q)).toEqual([])
    expect(await alarmAt(q)).toBeNull()
    const gone = await call(`/v1/matchmaking/tickets/${waiting.ticketId}`, bearer(ADMIN_KEY))
    expect(await problem(gone)).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    // A join and a push of the queue as it was before its deletion, arriving now: refused, and
    // no schema made for them.
    const late = await runInDurableObject(poolOf(q), async (inst: MatchPool) => ({
      join: await inst.join(lateJoin(q)),
      push: await inst.configure(q, 'eu', lateJoin(q).config, 2),
    }))
    expect(late.join).toMatchObject({ ok: false, problem: 'not-found' })
    expect(late.push.inForce).toBe(false)
    expect(await storedTables(q)).toEqual([])

    expect((await put(q, {})).status).toBe(201)
    await rig(q, clock)
    expect((await joinFor(q, `${q}-b`)).status).toBe('waiting')
    expect((await joinFor(q, `${q}-c`)).status).toBe('matched')
  })

  it('a ban or erasure of a player who joined a deleted queue leaves its pools alone (none is made again after the wipe)', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const player = `${q}-banned`
    await joinFor(q, player)
    await pause(q)
    const deletedAt = clock.t
    expect((await deleteQueue(q)).status).toBe(200)
    clock.t = deletedAt + DELETED_POOL_KEPT_MS
    await fireAlarm(q)
    expect(await storedTables(q)).toEqual([])
    // The player's claim on the queue is still in Neon (pruned after two idle hours).
    expect((await pg()`select 1 from queue_claims where queue = ${q}`).length).toBe(1)
    for (const reason of ['banned', 'erased'] as const) {
      expect(await removeFromQueues(env, player, reason)).toEqual({ cancelled: [], unreached: [] })
      expect(await storedTables(q)).toEqual([])
    }
    // Woken again with nothing to do (a client's close of a socket it closed, reported late):
    // still nothing stored.
    await evictDurableObject(poolOf(q))
    expect(await storedTables(q)).toEqual([])
  })

  it("a deleted queue's pool sets its gauges to 0 when it deletes its storage (a recent wait would stand on /metrics for a queue that is gone)", async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    await joinFor(q, `${q}-a`)
    clock.t += 8_000
    expect((await joinFor(q, `${q}-b`)).status).toBe('matched')
    // The rates are recomputed at most once a second, by the alarm.
    clock.t += 2_000
    await fireAlarm(q)
    const gauge = (name: string) =>
      (
        localFamilies().find((f) => f.name === name)!.series as {
          labels: Record<string, string>
          value: number
        }[]
      ).find((x) => x.labels.queue === q)?.value
    expect(gauge('nexus_matchmaking_wait_p95_seconds')).toBeGreaterThan(0)
    await pause(q)
    const deletedAt = clock.t
    expect((await deleteQueue(q)).status).toBe(200)
    clock.t = deletedAt + DELETED_POOL_KEPT_MS
    await fireAlarm(q)
    expect(await storedTables(q)).toEqual([])
    for (const name of [
      'nexus_matchmaking_waiting_tickets',
      'nexus_matchmaking_waiting_players',
      'nexus_matchmaking_matches_per_minute',
      'nexus_matchmaking_wait_p50_seconds',
      'nexus_matchmaking_wait_p95_seconds',
    ]) {
      expect(gauge(name)).toBe(0)
    }
  })

  it("a deleted queue's pool keeps a fence until it is past its retention (15 min, real time), then deletes its storage", async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    // A join in another region of the queue fenced this one just now (claims.ts).
    const fencedAt = Date.now()
    await runInDurableObject(poolOf(q), (_inst: MatchPool, state) => {
      state.storage.sql.exec(
        `INSERT INTO fences (player_id, up_to, at) VALUES (?, 3, ?)`,
        `${q}-elsewhere`,
        fencedAt,
      )
    })
    await pause(q)
    expect((await deleteQueue(q)).status).toBe(200)
    // Due once the fence is past its retention, by the pool's clock.
    const due = (await alarmAt(q))!
    expect(due).toBeGreaterThanOrEqual(clock.t + (fencedAt + FENCE_RETENTION_MS - Date.now()))
    clock.t = due
    await fireAlarm(q)
    // Real time has not moved: the fence still counts, and the storage stays.
    expect(await storedTables(q)).toContain('fences')
    await runInDurableObject(poolOf(q), (_inst: MatchPool, state) => {
      state.storage.sql.exec(`UPDATE fences SET at = at - ?`, FENCE_RETENTION_MS + 1_000)
    })
    await fireAlarm(q)
    expect(await storedTables(q)).toEqual([])
  })

  it('made again with a PUT: 201 at a version past the deleted one, and the pool that kept the deleted queue matches again', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    await pause(q)
    expect((await deleteQueue(q)).status).toBe(200)
    expect(await storedTables(q)).toContain('meta')
    const again = await put(q, { maxRatingGap: 200 })
    expect(again.status).toBe(201)
    const made = (await again.json()) as { version: number; config: { paused: boolean } }
    expect(made.version).toBe(4)
    expect(made.config.paused).toBe(false)
    expect(await row(q)).toMatchObject({ version: 4, deleted_at: null })
    expect(await listed(q)).toHaveLength(1)
    expect(await listed(q, 'deleted')).toEqual([])
    // Over HTTP and on a socket, in the pool that held the deleted queue.
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    await nextOfType(ws, 'queued')
    const other = await joinFor(q, `${q}-b`)
    expect(other.status).toBe('matched')
    const found = await nextOfType<Found>(ws, 'match_found')
    expect(found.sessionId).toBe(other.match!.sessionId)
  })

  it('a deleted queue no longer keeps its board from being deleted', async () => {
    const board = await createBoard({})
    const q = await createQueue({ leaderboardId: board })
    const deleteBoard = () =>
      call(`/v1/admin/leaderboards/${board}`, { ...bearer(ADMIN_KEY), method: 'DELETE' })
    expect((await problem(await deleteBoard())).body.queues).toEqual([q])
    await pause(q, { leaderboardId: board })
    expect((await deleteQueue(q)).status).toBe(200)
    expect((await deleteBoard()).status).toBe(200)
  })

  it('a pause that has not reached a pool is pushed by the deletion first (the ticket waiting there is cancelled); a pool that cannot take it keeps the queue (409, Retry-After: 60)', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock(), { region: 'us' })
    const waiting = await joinFor(q, `${q}-a`, { region: 'us' })
    // A PUT that paused the queue in Neon and whose push to `us` was lost.
    const paused = { ...DUEL, regions: ['eu', 'us'], maxPartySize: 1, ticketTtlSeconds: 300 }
    await pg()`update queues set version = 2, unpushed_regions = '{us}',
                config = ${JSON.stringify({ ...paused, disconnectGraceSeconds: 10, leaderboardId: null, paused: true })}::jsonb
                where id = ${q}`

    // First, `us` cannot be reached.
    const back = await replaceMethod<MatchPool, 'configure'>(
      poolOf(q, 'us'),
      'configure',
      () => () => Promise.reject(new Error('pool down')),
    )
    const answer = await deleteQueue(q)
    expect(answer.headers.get('retry-after')).toBe('60')
    const refused = await problem(answer)
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.unpushedRegions).toEqual(['us'])
    expect(await row(q)).toMatchObject({ version: 2, deleted_at: null, unpushed_regions: ['us'] })
    expect((await ticketOf(waiting.ticketId)).status).toBe('waiting')

    back()
    expect((await deleteQueue(q)).status).toBe(200)
    expect(await ticketOf(waiting.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    expect(await row(q)).toMatchObject({ version: 3, unpushed_regions: [] })
  })

  it('a write putting the queue back in play (as a PUT saves it) while the deletion waits for the row: the deletion then refuses (409, paused: false)', async () => {
    const q = await createQueue({ paused: true })
    const inPlay = JSON.stringify({
      ...DUEL,
      maxPartySize: 1,
      ticketTtlSeconds: 300,
      disconnectGraceSeconds: 10,
      leaderboardId: null,
    })
    const putting = await holdLock(
      { text: 'select 1 from queues where id = $1 for update', params: [q] },
      { afterWaiter: 0.5 },
      [
        {
          text: `update queues set config = $2::jsonb, version = version + 1 where id = $1`,
          params: [q, inPlay],
        },
      ],
    )
    const refused = await problem(await deleteQueue(q))
    await putting.done
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.paused).toBe(false)
    expect(await row(q)).toMatchObject({ version: 2, deleted_at: null })
  })

  it('a PUT waiting on the row while the deletion holds it makes the queue again (201), at the version after the deletion', async () => {
    const q = await createQueue({ paused: true })
    // The row is held from outside (as a slow commit would) until the deletion and then the PUT
    // queue behind it, in that order: the second in line waits on the row's tuple lock, which
    // the first holds while it waits.
    const held = await holdLock(
      { text: 'select 1 from queues where id = $1 for update', params: [q] },
      {
        afterWaiter: 0.2,
        until: `exists (select 1 from pg_locks l where l.locktype = 'tuple' and not l.granted
                         and l.relation = 'queues'::regclass)`,
      },
    )
    const deleting = deleteQueue(q)
    await held.contended()
    const putting = put(q, {})
    const [deleted, made] = await Promise.all([deleting, putting])
    await held.done
    expect(deleted.status).toBe(200)
    const version = ((await deleted.json()) as { version: number }).version
    expect(made.status).toBe(201)
    expect(((await made.json()) as { version: number }).version).toBe(version + 1)
    expect(await row(q)).toMatchObject({ version: version + 1, deleted_at: null })
  })

  it("a write holding the queue's row (as a PUT's save does) past the deletion's lock timeout (4 s): 409 busy with Retry-After: 5, nothing deleted", async () => {
    const q = await createQueue({ paused: true })
    const held = await holdLock(
      { text: 'select 1 from queues where id = $1 for update', params: [q] },
      { afterWaiter: 4.5 },
    )
    const answer = await deleteQueue(q)
    expect(answer.headers.get('retry-after')).toBe('5')
    const busy = await problem(answer)
    expect(busy).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(busy.body.busy).toBe(true)
    await held.done
    expect((await row(q))!.deleted_at).toBeNull()
    expect((await deleteQueue(q)).status).toBe(200)
  })

  it("a pool the deletion could not reach is owed it in Neon, and the cron's retry of a queue owed (pushOwed) tells it (its socket closes) and notes it", async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    await pause(q)
    const back = await replaceMethod<MatchPool, 'retire'>(
      poolOf(q),
      'retire',
      () => () => Promise.reject(new Error('pool down')),
    )
    const res = await deleteQueue(q)
    expect(res.status).toBe(200)
    const { version } = (await res.json()) as { version: number }
    expect(await row(q)).toMatchObject({ version, unpushed_regions: ['eu'] })
    back()
    const ended = closed(ws)
    const owed = (await unpushedQueues(env, q.slice(0, -1), 100)).filter((r) => r.id === q)
    expect(owed).toEqual([expect.objectContaining({ deleted: true, regions: ['eu'], version })])
    expect(await pushOwed(env, owed[0]!)).toBe(1)
    expect(await ended).toEqual({ code: 1000, reason: 'queue deleted' })
    expect((await row(q))!.unpushed_regions).toEqual([])
    // Told: a join of the queue as it was is refused there.
    const late = await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.join(lateJoin(q)))
    expect(late).toMatchObject({ ok: false, problem: 'not-found' })
  })

  it('made again without a region still owed the deletion: 409 naming it (Retry-After: 60), nothing changed, the claims included; once the cron told it, 201. A PUT refused for its board changes no claim either', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock(), { region: 'us' })
    const player = `${q}-us`
    expect((await joinFor(q, player, { region: 'us' })).status).toBe('waiting')
    await pause(q, { regions: ['eu', 'us'] })
    const back = await replaceMethod<MatchPool, 'retire'>(
      poolOf(q, 'us'),
      'retire',
      (retire) =>
        function (this: MatchPool, ...args: Parameters<MatchPool['retire']>) {
          const region = (this as unknown as { region: string | null }).region
          if (region === 'us') return Promise.reject(new Error('pool down'))
          return retire.apply(this, args)
        },
    )
    expect((await deleteQueue(q)).status).toBe(200)
    back()
    // Deleted long enough ago that no pool of it is still making a match.
    await pg()`update queues set deleted_at = now() - ${DELETED_QUEUE_MATCHES_SETTLED_MS + 60_000} * interval '1 millisecond'
      where id = ${q}`
    const before = await row(q)
    expect(before!.unpushed_regions).toEqual(['us'])
    const claim = async () =>
      (
        (
          await pg()`select regions from queue_claims where queue = ${q} and player_id = ${player}`
        )[0] as { regions: Record<string, number> } | undefined
      )?.regions
    const claimed = await claim()
    expect(Object.keys(claimed ?? {})).toEqual(['us'])

    const refused = await put(q, { regions: ['eu'] })
    expect(refused.status).toBe(409)
    expect(refused.headers.get('retry-after')).toBe('60')
    expect(((await refused.json()) as { unpushedRegions: string[] }).unpushedRegions).toEqual([
      'us',
    ])
    expect(await row(q)).toEqual(before)
    expect(await claim()).toEqual(claimed)

    const owed = (await unpushedQueues(env, q.slice(0, -1), 100)).filter((r) => r.id === q)
    expect(await pushOwed(env, owed[0]!)).toBe(1)
    // Told; a PUT naming no board there is 422, and changes no claim.
    expect(
      (await put(q, { regions: ['eu'], leaderboardId: 'no-such-board-anywhere' })).status,
    ).toBe(422)
    expect(await claim()).toEqual(claimed)
    expect((await put(q, { regions: ['eu'] })).status).toBe(201)
    expect(await claim()).toEqual({})
  })

  it("made again with fewer regions, past the time any pool of it could still be making a match: only the new regions are pushed to, and the players' claims stop naming the others", async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock(), { region: 'us' })
    const player = `${q}-us`
    const t = await joinFor(q, player, { region: 'us' })
    expect(t.status).toBe('waiting')
    await pause(q, { regions: ['eu', 'us'] })
    expect((await deleteQueue(q)).status).toBe(200)
    await pg()`update queues set deleted_at = now() - ${DELETED_QUEUE_MATCHES_SETTLED_MS + 60_000} * interval '1 millisecond'
      where id = ${q}`
    expect((await put(q, { regions: ['eu'] })).status).toBe(201)
    const [stored] = await pg()`select known_regions, unpushed_regions from queues where id = ${q}`
    expect(stored).toEqual({ known_regions: ['eu'], unpushed_regions: [] })
    const [claim] =
      await pg()`select regions from queue_claims where queue = ${q} and player_id = ${player}`
    expect(claim!.regions).toEqual({})
    // The `us` pool still holds the deleted queue's paused version: nothing was pushed to it.
    const usVersion = await runInDurableObject(poolOf(q, 'us'), (_i: MatchPool, state) =>
      state.storage.sql
        .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'version'`)
        .one(),
    )
    expect(usVersion.value).toBe('2')
    // The player joins the queue made again, in its region.
    expect((await joinFor(q, player)).status).toBe('waiting')
  })

  it('made again at once with fewer regions while a region dropped is still making a match: its players cannot join the queue made again until that match is settled', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    const clock = newClock()
    // Sessions cannot be made in us for now: its match stays in the making through the deletion.
    await rig(q, clock, {
      region: 'us',
      creator: async () => ({ ok: false, problem: 'unavailable', detail: 'down' }),
    })
    await rig(q, clock, { region: 'eu' })
    const [a, b] = [`${q}-a`, `${q}-b`]
    const inUs = await joinFor(q, a, { region: 'us' })
    await joinFor(q, b, { region: 'us' })
    expect((await ticketOf(inUs.ticketId)).status).toBe('matching')
    await pause(q, { regions: ['eu', 'us'] })
    expect((await deleteQueue(q)).status).toBe(200)
    expect((await put(q, { regions: ['eu'] })).status).toBe(201)
    const [claim] =
      await pg()`select regions from queue_claims where queue = ${q} and player_id = ${a}`
    expect(Object.keys(claim!.regions as object)).toEqual(['us'])
    // The join in eu fences us, where the player is in a match being made: refused, as any
    // join elsewhere then is, and nothing queued.
    const res = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: a, region: 'eu' }, ADMIN_KEY),
    )
    const p = await problem(res)
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(p.body).toMatchObject({ ticketId: inUs.ticketId, ticketStatus: 'matching' })
    expect(await waitingStored(q)).toBe(0)
  })

  it('a socket kept for its match being made when the queue is deleted cannot join again there (error invalid: no queue; no ticket)', async () => {
    const q = await createQueue()
    const clock = newClock()
    // Sessions cannot be created for now: the match stays being made.
    const creator: SessionCreator = async () => ({
      ok: false,
      problem: 'unavailable',
      detail: 'down',
    })
    await rig(q, clock, { creator })
    const [g1, g2] = await Promise.all([newGuest(), newGuest()])
    const sockets = [
      await connect(`/v1/matchmaking/${q}`, g1.token),
      await connect(`/v1/matchmaking/${q}`, g2.token),
    ]
    for (const ws of sockets) {
      ws.send(JSON.stringify({ type: 'join' }))
      await nextOfType(ws, 'queued')
    }
    await pause(q)
    expect((await deleteQueue(q)).status).toBe(200)
    const ws = sockets[0]!
    ws.send(JSON.stringify({ type: 'join' }))
    const refused = await nextOfType<{ code: string; message: string }>(ws, 'error')
    expect(refused).toMatchObject({ code: 'invalid', message: `No queue '${q}'` })
    expect(await waitingStored(q)).toBe(0)
  })
})
