import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { metricTotal } from './helpers/metric-totals.ts'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import { MAX_WAITS_PER_READER, type MatchPool } from '../../durable-objects/match-pool.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { parsePrometheus } from '../../workers/dashboard/metrics.ts'
import { pg } from './helpers/boards.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { closed, collect, connect, nextOfType, track, until } from './helpers/sockets.ts'
import {
  graceUntil,
  alarmAt,
  createQueue,
  DUEL,
  fireAlarm,
  joinFor,
  newClock,
  poolOf,
  queueId,
  recordingCreator,
  rig,
  setRating,
  ticketOf,
  type Found,
  type Ticket,
} from './helpers/matchmaking.ts'
import type { SessionCreator } from '../../workers/matchmaking/session.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { countRowsRead } from './helpers/rows-read.ts'
import { markQueuePushed } from '../../workers/matchmaking/config.ts'
import { runScheduled } from '../../workers/scheduled.ts'

/** Stats are served through the read caches; these tests read them as they are now. */
const FRESH = { headers: { 'cache-control': 'no-cache' } }

function joinAs(
  queue: string,
  token: string,
  body: Record<string, unknown> = {},
): Promise<Response> {
  return call(`/v1/matchmaking/${queue}/tickets`, json('POST', body, token))
}

function del(ticketId: string, token: string): Promise<Response> {
  return call(`/v1/matchmaking/tickets/${ticketId}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  })
}

function get(ticketId: string, token: string): Promise<Response> {
  return call(`/v1/matchmaking/tickets/${ticketId}`, {
    headers: { authorization: `Bearer ${token}` },
  })
}

/** A player's join of `queue` (eu, version 1) straight to the pool, its claim taken just now. */
function soloJoin(inst: MatchPool, queue: string, config: Record<string, unknown>) {
  return (playerId: string, rating: number) =>
    inst.join({
      queue,
      region: 'eu',
      config: config as never,
      version: 1,
      players: [{ playerId, rating }],
      claim: { versions: { [playerId]: 1 }, claimedAt: Date.now() },
    })
}

describe('HTTP tickets', () => {
  it('a long-poll is answered when the ticket is matched, with the caller’s session token', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const ta = (await (await joinAs(q, a.token)).json()) as Ticket
    expect(ta.status).toBe('waiting')
    let answered = false
    const poll = ticketOf(ta.ticketId, a.token, 20).then((t) => {
      answered = true
      return t
    })
    // A short poll on a waiting ticket comes back waiting once its wait is over.
    expect((await ticketOf(ta.ticketId, a.token, 0.2)).status).toBe('waiting')
    // The long-poll is held by the pool before the match is made, so the match must wake it.
    await until(() =>
      runInDurableObject(poolOf(q), (inst: MatchPool) =>
        (inst as unknown as { waiters: Map<string, unknown> }).waiters.has(ta.ticketId)
          ? true
          : undefined,
      ),
    )
    expect(answered).toBe(false)
    const tb = (await (await joinAs(q, b.token)).json()) as Ticket
    expect(tb.status).toBe('matched')
    const t = await poll
    expect(t.status).toBe('matched')
    expect(t.match!.sessionId).toBe(tb.match!.sessionId)
    expect(typeof t.match!.token).toBe('string')
    expect(t.match!.token).not.toBe(tb.match!.token)
  })

  it(`a reader holds at most ${MAX_WAITS_PER_READER} long-polls on a ticket: one more answers that reader's oldest, still waiting; other members' polls are theirs`, async () => {
    const q = await createQueue({ teamSize: 2 })
    await rig(q, newClock())
    const [leader, member] = await Promise.all([newGuest(), newGuest()])
    const ticket = (await (
      await call(
        `/v1/matchmaking/${q}/tickets`,
        json(
          'POST',
          { playerId: leader.playerId, party: [leader.playerId, member.playerId] },
          ADMIN_KEY,
        ),
      )
    ).json()) as Ticket
    expect(ticket.status).toBe('waiting')
    const answered: string[] = []
    const poll = (token: string, name: string) =>
      ticketOf(ticket.ticketId, token, 20).then((t) => {
        answered.push(name)
        return t
      })
    const held = () =>
      runInDurableObject(poolOf(q), (inst: MatchPool) =>
        [
          ...((inst as unknown as { waiters: Map<string, Map<string, Set<unknown>>> }).waiters
            .get(ticket.ticketId)
            ?.values() ?? []),
        ].reduce((n, set) => n + set.size, 0),
      )
    const memberPolls = Array.from({ length: MAX_WAITS_PER_READER }, (_, i) =>
      poll(member.token, `member-${i}`),
    )
    const leaderPolls = Array.from({ length: MAX_WAITS_PER_READER }, (_, i) =>
      poll(leader.token, `leader-${i}`),
    )
    await until(async () => ((await held()) === 2 * MAX_WAITS_PER_READER ? true : undefined))
    // One more from the leader: one of the leader's own polls is answered, none of the member's.
    const extra = poll(leader.token, 'leader-extra')
    await until(async () => (answered.length > 0 ? true : undefined))
    expect(answered).toHaveLength(1)
    expect(answered[0]).toMatch(/^leader-\d$/)
    const early = leaderPolls[Number(answered[0]!.slice('leader-'.length))]!
    expect(await early).toMatchObject({ status: 'waiting' })
    expect(await held()).toBe(2 * MAX_WAITS_PER_READER)
    // The rest are answered by the ticket's change.
    const cancel = await call(`/v1/matchmaking/tickets/${ticket.ticketId}`, {
      method: 'DELETE',
      ...bearer(leader.token),
    })
    expect(cancel.status).toBe(200)
    for (const t of [...memberPolls, ...leaderPolls.filter((p) => p !== early), extra]) {
      expect((await t).status).toBe('cancelled')
    }
  })

  it('a pool holds more long-polls than an object may have timers (10,000): every poll is answered, and a match made meanwhile gets its session', async () => {
    // Ratings 10 apart and windows that never widen: nothing matches until a twin of the first.
    const config = { ...DUEL, maxRatingGap: 0, widenPerSecond: 0 }
    const q = await createQueue(config)
    await rig(q, newClock())
    const tickets = 2_600
    const outcome = await runInDurableObject(poolOf(q), async (inst: MatchPool) => {
      const join = soloJoin(inst, q, config)
      const held: { playerId: string; ticketId: string }[] = []
      for (let i = 0; i < tickets; i++) {
        const joined = await join(`${q}-p${i}`, 1000 + 10 * i)
        if (!joined.ok) throw new Error(`join ${i}: ${joined.problem}`)
        held.push({ playerId: `${q}-p${i}`, ticketId: joined.ticket.ticketId })
      }
      // Each player's most long-polls at once, on every ticket: 10,400 held.
      const polls = held.flatMap(({ playerId, ticketId }) =>
        Array.from({ length: MAX_WAITS_PER_READER }, () =>
          inst.ticket(ticketId, { kind: 'player', playerId }, 20_000),
        ),
      )
      // The first player's twin joins: the match's session is made under a deadline (a timer).
      const twin = await join(`${q}-twin`, 1000)
      for (const { playerId, ticketId } of held.slice(1)) {
        await inst.cancel(ticketId, { kind: 'player', playerId })
      }
      const answers = await Promise.allSettled(polls)
      return {
        twin: twin.ok ? twin.ticket.status : twin.problem,
        refused: answers.filter((a) => a.status === 'rejected').length,
        statuses: answers.map((a) =>
          a.status === 'fulfilled' && a.value.ok ? a.value.ticket.status : 'none',
        ),
      }
    })
    expect(outcome.refused).toBe(0)
    expect(outcome.twin).toBe('matched')
    expect(outcome.statuses.slice(0, MAX_WAITS_PER_READER)).toEqual(
      Array(MAX_WAITS_PER_READER).fill('matched'),
    )
    expect(new Set(outcome.statuses.slice(MAX_WAITS_PER_READER))).toEqual(new Set(['cancelled']))
  })

  it.each([
    ['two teams of one', { teams: 2, teamSize: 1 }],
    ['one team of two (free for all)', { teams: 1, teamSize: 2 }],
  ])(
    'who has the first turn is drawn for each match, not given to the ticket that waited longest: %s',
    async (_shape, shape) => {
      // Pairs 10 apart with windows that never widen: each pair matches only itself, its first
      // ticket older than its second.
      const config = { ...DUEL, ...shape, maxRatingGap: 0, widenPerSecond: 0 }
      const q = await createQueue(config)
      await rig(q, newClock())
      const firsts = await runInDurableObject(poolOf(q), async (inst: MatchPool, state) => {
        const join = soloJoin(inst, q, config)
        for (let i = 0; i < 40; i++) {
          await join(`older-${i}`, 1000 + 10 * i)
          await join(`newer-${i}`, 1000 + 10 * i)
        }
        return state.storage.sql
          .exec<{ setup: string }>(`SELECT setup FROM matches`)
          .toArray()
          .map(
            (r) => (JSON.parse(r.setup) as { roster: { playerId: string }[] }).roster[0]!.playerId,
          )
      })
      expect(firsts).toHaveLength(40)
      // Each order at least once in 40 draws: a chance of 2 in 2^40 to fail by luck.
      expect(firsts.filter((p) => p.startsWith('older-')).length).toBeGreaterThan(0)
      expect(firsts.filter((p) => p.startsWith('newer-')).length).toBeGreaterThan(0)
    },
  )

  it('a join sent again with its Idempotency-Key gets the ticket the first made, waiting, matched (with its token) or cancelled; never a second ticket', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b, c] = await Promise.all([newGuest(), newGuest(), newGuest()])
    const keyed = (token: string, key: string, body: Record<string, unknown> = {}) =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', body, token, { 'idempotency-key': key }))
    const first = await keyed(a.token, 'join-1')
    expect(first.status).toBe(201)
    const ta = (await first.json()) as Ticket
    const again = await keyed(a.token, 'join-1')
    expect(again.status).toBe(200)
    expect((await again.json()) as Ticket).toMatchObject({ ticketId: ta.ticketId, existing: true })
    // Matched meanwhile: the retry is told of the match, with a token for its session.
    const tb = (await (await joinAs(q, b.token)).json()) as Ticket
    expect(tb.status).toBe('matched')
    const late = await keyed(a.token, 'join-1')
    expect(late.status).toBe(200)
    const lateTicket = (await late.json()) as Ticket
    expect(lateTicket).toMatchObject({ ticketId: ta.ticketId, status: 'matched', existing: true })
    expect(lateTicket.match!.sessionId).toBe(tb.match!.sessionId)
    expect(typeof lateTicket.match!.token).toBe('string')
    // The same key for another join is refused; a new key is a new join.
    const reused = await problem(await keyed(a.token, 'join-1', { attributes: { mode: 'x' } }))
    expect(reused).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    const waitingNow = async () =>
      (
        (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
          waitingTickets: number
        }
      ).waitingTickets
    expect(await waitingNow()).toBe(0)
    // A cancelled ticket's key answers the cancelled ticket, and queues nothing.
    const tc = (await (await keyed(c.token, 'join-c')).json()) as Ticket
    expect((await del(tc.ticketId, c.token)).status).toBe(200)
    const afterCancel = await keyed(c.token, 'join-c')
    expect((await afterCancel.json()) as Ticket).toMatchObject({
      ticketId: tc.ticketId,
      status: 'cancelled',
      existing: true,
    })
    expect(await waitingNow()).toBe(0)
    // Bounded like any key: 129 characters, or a space, is 422.
    for (const bad of ['k'.repeat(129), 'a key']) {
      expect((await problem(await keyed(c.token, bad))).status).toBe(422)
    }
  })

  it('a player whose HTTP ticket was matched while they were away (an app killed between polls) and who joins again or connects within the grace is handed that match, once; one who read it (a poll held until it included), comes past the grace, or whose ticket a game server made, gets a new ticket', async () => {
    const cases = [
      'in time',
      'answered on a poll',
      'by a socket',
      'after reading it',
      'past the grace',
      'made by a game server',
      'written by code before schema 13',
    ] as const
    for (const back of cases) {
      const q = await createQueue()
      const clock = newClock()
      await rig(q, clock, { graceMs: 10_000 })
      const [a, b] = await Promise.all([newGuest(), newGuest()])
      // A game server's ticket is its to tell of: the player's own join is a new one.
      const first =
        back === 'made by a game server'
          ? await call(
              `/v1/matchmaking/${q}/tickets`,
              json('POST', { playerId: a.playerId }, ADMIN_KEY),
            )
          : await joinAs(q, a.token)
      expect(first.status).toBe(201)
      const ta = (await first.json()) as Ticket
      if (back === 'written by code before schema 13') {
        // A row that says nothing of who made it (code before the column, or rolled back to):
        // taken for a game server's.
        await runInDurableObject(poolOf(q), (_i: MatchPool, state) => {
          const mark = state.storage.sql
            .exec<{ by_server: number | null }>(
              `SELECT by_server FROM tickets WHERE id = ?`,
              ta.ticketId,
            )
            .one().by_server
          expect(mark).toBe(0)
          state.storage.sql.exec(`UPDATE tickets SET by_server = NULL WHERE id = ?`, ta.ticketId)
        })
      }
      // Matched by the rival's join while `a` held no poll open; or held one, which answered
      // the match (as the SDK hears its matches).
      const poll =
        back === 'answered on a poll' ? ticketOf(ta.ticketId, a.token, 20) : Promise.resolve(null)
      if (back === 'answered on a poll') {
        await until(() =>
          runInDurableObject(poolOf(q), (inst: MatchPool) =>
            (inst as unknown as { waiters: Map<string, unknown> }).waiters.has(ta.ticketId)
              ? true
              : undefined,
          ),
        )
      }
      const tb = (await (await joinAs(q, b.token)).json()) as Ticket
      expect((await poll)?.status ?? 'matched').toBe('matched')
      expect(tb.status).toBe('matched')
      if (back === 'after reading it') {
        const read = await ticketOf(ta.ticketId, a.token)
        expect(read.match!.sessionId).toBe(tb.match!.sessionId)
      }
      clock.t += back === 'past the grace' ? 10_001 : 5_000
      // The rival, whose join's answer carried the match, heard it: their socket is a plain one.
      const rivals = await connect(`/v1/matchmaking/${q}`, b.token)
      rivals.send(JSON.stringify({ type: 'ping' }))
      expect(await nextOfType(rivals, 'pong')).toBeDefined()
      expect(collect(rivals)).not.toContainEqual(expect.objectContaining({ type: 'match_found' }))
      rivals.close(1000)
      if (back === 'by a socket') {
        // Within the grace a socket's connect is told, as for a socket ticket.
        const ws = await connect(`/v1/matchmaking/${q}`, a.token)
        const found = await nextOfType<Found>(ws, 'match_found')
        expect(found).toMatchObject({ ticketId: ta.ticketId, sessionId: tb.match!.sessionId })
        expect(await closed(ws)).toBeDefined()
        expect((await joinAs(q, a.token)).status).toBe(201)
        continue
      }
      const again = await joinAs(q, a.token)
      const ticket = (await again.json()) as Ticket & { existing: boolean }
      if (back === 'in time') {
        expect(again.status).toBe(200)
        expect(ticket).toMatchObject({ ticketId: ta.ticketId, status: 'matched', existing: true })
        expect(ticket.match!.sessionId).toBe(tb.match!.sessionId)
        expect(typeof ticket.match!.token).toBe('string')
        // Handed once: the join after that queues the player anew.
        const third = await joinAs(q, a.token)
        expect(third.status).toBe(201)
        expect(((await third.json()) as Ticket).status).toBe('waiting')
      } else {
        expect(again.status).toBe(201)
        expect(ticket).toMatchObject({ status: 'waiting', existing: false })
        expect(ticket.ticketId).not.toBe(ta.ticketId)
      }
    }
  })

  it('a keyed join handed the ticket the player already had gets that ticket again on retry, after its match too: never a second ticket', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const keyed = () =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, a.token, { 'idempotency-key': 'k-2' }))
    const first = (await (await joinAs(q, a.token)).json()) as Ticket
    // A second join (another key, say from a second tab) is handed the waiting ticket; its answer
    // is lost, and meanwhile the ticket is matched.
    const handed = await keyed()
    expect(handed.status).toBe(200)
    expect(((await handed.json()) as Ticket).ticketId).toBe(first.ticketId)
    const tb = (await (await joinAs(q, b.token)).json()) as Ticket
    expect(tb.status).toBe('matched')
    const retry = await keyed()
    expect(retry.status).toBe(200)
    const again = (await retry.json()) as Ticket
    expect(again).toMatchObject({ ticketId: first.ticketId, status: 'matched', existing: true })
    expect(again.match!.sessionId).toBe(tb.match!.sessionId)
    expect(typeof again.match!.token).toBe('string')
    const stats = (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
      waitingTickets: number
    }
    expect(stats.waitingTickets).toBe(0)
  })

  it("joins with ever new keys bind at most 8 of them to the player's ticket, each answered with it, again on retry", async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const a = await newGuest()
    const keyed = (key: string) =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, a.token, { 'idempotency-key': key }))
    const tickets: string[] = []
    for (let i = 0; i < 12; i++) {
      const res = await keyed(`flood-${i}`)
      expect(res.status).toBe(i === 0 ? 201 : 200)
      tickets.push(((await res.json()) as Ticket).ticketId)
    }
    expect(new Set(tickets).size).toBe(1)
    const bound = await runInDurableObject(poolOf(q), (_i: MatchPool, state) =>
      state.storage.sql
        .exec<{ n: number }>(`SELECT count(*) AS n FROM join_keys WHERE ticket_id = ?`, tickets[0]!)
        .one(),
    )
    expect(bound.n).toBe(8)
    for (const key of ['flood-0', 'flood-11']) {
      const retried = await keyed(key)
      expect(((await retried.json()) as Ticket).ticketId).toBe(tickets[0])
    }
  })

  it('a ticket keyed before join keys had their own table (pool schema 5) is still found by its key after the upgrade', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const a = await newGuest()
    const keyed = () =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, a.token, { 'idempotency-key': 'k-5' }))
    const first = (await (await keyed()).json()) as Ticket
    // The pool as schema 5 left it (the key on the ticket's row, no join_keys table), then woken:
    // its load upgrades the schema.
    await runInDurableObject(poolOf(q), (inst: MatchPool, state) => {
      const sql = state.storage.sql
      sql.exec(`UPDATE tickets SET join_key = 'k-5' WHERE id = ?`, first.ticketId)
      sql.exec(`DROP TABLE join_keys`)
      sql.exec(`UPDATE meta SET value = '5' WHERE key = 'schema'`)
      ;(inst as unknown as { load(): void }).load()
    })
    expect((await del(first.ticketId, a.token)).status).toBe(200)
    const retry = await keyed()
    expect(retry.status).toBe(200)
    expect((await retry.json()) as Ticket).toMatchObject({
      ticketId: first.ticketId,
      status: 'cancelled',
    })
  })

  it('a keyed join retried after its region left the queue is answered with its matched ticket, not refused', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const keyed = () =>
      call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', { region: 'eu' }, a.token, { 'idempotency-key': 'k-3' }),
      )
    const first = (await (await keyed()).json()) as Ticket
    const tb = (await (await joinAs(q, b.token, { region: 'eu' })).json()) as Ticket
    expect(tb.status).toBe('matched')
    // The operator takes eu out of the queue before the retry (whose first answer was lost).
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['us'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    const retry = await keyed()
    expect(retry.status).toBe(200)
    expect((await retry.json()) as Ticket).toMatchObject({
      ticketId: first.ticketId,
      status: 'matched',
    })
    // A join without the key is refused as before: eu is not one of the queue's regions.
    expect((await problem(await joinAs(q, a.token, { region: 'eu' }))).status).toBe(422)
  })

  it('a keyed join sent again with its attributes in another order is the same join; other values are refused', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const a = await newGuest()
    const keyed = (attributes: Record<string, unknown>) =>
      call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', { attributes }, a.token, { 'idempotency-key': 'join-attrs' }),
      )
    const first = (await (
      await keyed({ mode: 'ranked', map: 'dust', hardcore: true })
    ).json()) as Ticket
    expect((await del(first.ticketId, a.token)).status).toBe(200)
    // Cancelled, the ticket is answered from its key alone (no waiting ticket to find it by).
    const reordered = await keyed({ hardcore: true, map: 'dust', mode: 'ranked' })
    expect(reordered.status).toBe(200)
    expect((await reordered.json()) as Ticket).toMatchObject({
      ticketId: first.ticketId,
      status: 'cancelled',
    })
    const other = await problem(await keyed({ hardcore: true, map: 'nuke', mode: 'ranked' }))
    expect(other).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
  })

  it("ticket attributes' keys and values are counted as the OpenAPI counts them (an emoji is one character): 32 and 128 of them are taken, one more is 422", async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const emoji = (n: number) => '\u{1F409}'.repeat(n)
    for (const attributes of [{ [emoji(33)]: 'x' }, { crest: emoji(129) }]) {
      expect((await problem(await joinAs(q, a.token, { attributes }))).status).toBe(422)
    }
    const joined = await joinAs(q, b.token, { attributes: { [emoji(32)]: emoji(128) } })
    expect(joined.status).toBe(201)
    expect(((await joined.json()) as Ticket).attributes).toEqual({ [emoji(32)]: emoji(128) })
  })

  it('a join with no body at all is a join with every default (as the API reference says): the first region, alone', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const res = await call(`/v1/matchmaking/${q}/tickets`, {
      method: 'POST',
      headers: { authorization: `Bearer ${g.token}` },
    })
    expect(res.status).toBe(201)
    expect(await res.json()).toMatchObject({ region: 'eu', players: [g.playerId], existing: false })
  })

  it('players read and cancel only their own tickets; cancel is idempotent; matched tickets cannot be cancelled', async () => {
    const q = await createQueue({ maxRatingGap: 0, widenPerSecond: 0 })
    await rig(q, newClock())
    const [owner, other] = await Promise.all([newGuest(), newGuest()])
    await setRating(other.playerId, 2500)
    const t = (await (await joinAs(q, owner.token)).json()) as Ticket
    expect((await get(t.ticketId, other.token)).status).toBe(404)
    expect((await del(t.ticketId, other.token)).status).toBe(404)
    expect((await ticketOf(t.ticketId, owner.token)).status).toBe('waiting')
    expect((await get(t.ticketId, ADMIN_KEY)).status).toBe(200)
    expect((await get(t.ticketId, 'nope')).status).toBe(401)

    const c1 = await del(t.ticketId, owner.token)
    expect(c1.status).toBe(200)
    expect(((await c1.json()) as Ticket).status).toBe('cancelled')
    const c2 = await del(t.ticketId, owner.token)
    expect(c2.status).toBe(200)
    expect(((await c2.json()) as Ticket).reason).toBe('cancelled')

    expect((await get('not-a-ticket', owner.token)).status).toBe(422)
    expect((await get(`${q}:eu:00000000-0000-4000-8000-000000000000`, owner.token)).status).toBe(
      404,
    )

    // A matched ticket: too late to cancel.
    const x = await newGuest()
    const y = await newGuest()
    await setRating(x.playerId, 1700)
    await setRating(y.playerId, 1700)
    const tx = (await (await joinAs(q, x.token)).json()) as Ticket
    await joinAs(q, y.token)
    const late = await problem(await del(tx.ticketId, x.token))
    expect(late.status).toBe(409)
    // RFC 9457: `status` is the HTTP status code; the ticket's state is an extension member.
    expect(late.body).toMatchObject({ status: 409, ticketStatus: 'matched' })
  })

  it('an expired ticket reads as expired (even before the alarm runs) and cannot be cancelled', async () => {
    const q = await createQueue({ ticketTtlSeconds: 10 })
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    const t = (await (await joinAs(q, g.token)).json()) as Ticket
    expect(t.expiresAt).toBe(clock.t + 10_000)
    // What it has left, by the pool's clock: clients time their wait by it, not by expiresAt.
    expect(t.expiresIn).toBe(10_000)
    clock.t += 4_000
    expect((await ticketOf(t.ticketId, g.token)).expiresIn).toBe(6_000)
    clock.t = t.expiresAt
    const read = await ticketOf(t.ticketId, g.token)
    expect(read.status).toBe('expired')
    expect(read.expiresIn).toBe(0)
    expect((await problem(await del(t.ticketId, g.token))).body).toMatchObject({
      status: 409,
      ticketStatus: 'expired',
    })
    const again = (await (await joinAs(q, g.token)).json()) as Ticket
    expect(again.ticketId).not.toBe(t.ticketId)
    // On /metrics, what the runbook alerts on: tickets by outcome, by queue and region.
    const outcome = (o: string) =>
      metricTotal('nexus_matchmaking_tickets_total', { queue: q, region: 'eu', outcome: o })
    expect([outcome('joined'), outcome('expired'), outcome('cancelled')]).toEqual([2, 1, 0])
  })

  it('a long-poll whose wait ends after the ticket ran out (before the alarm) answers expired', async () => {
    const q = await createQueue({ ticketTtlSeconds: 10 })
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    const t = (await (await joinAs(q, g.token)).json()) as Ticket
    const poll = ticketOf(t.ticketId, g.token, 0.5)
    // Held by the pool first; then the ticket runs out while the poll waits.
    await until(() =>
      runInDurableObject(poolOf(q), (inst: MatchPool) =>
        (inst as unknown as { waiters: Map<string, unknown> }).waiters.has(t.ticketId)
          ? true
          : undefined,
      ),
    )
    clock.t = t.expiresAt
    const read = await poll
    expect(read.status).toBe('expired')
  })
})

describe('a keyed join retried while Neon is out of reach', () => {
  it('is answered from the pool with the ticket its first try made, matched and with its token; an unkeyed join, or a key never used, waits for Neon (503)', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const key = `join-${crypto.randomUUID()}`
    const join = (headers: Record<string, string>, withEnv: boolean) => {
      const init = json('POST', { region: 'eu' }, g.token, headers)
      return withEnv
        ? callWithEnv(
            { DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL },
            `/v1/matchmaking/${q}/tickets`,
            init,
          )
        : call(`/v1/matchmaking/${q}/tickets`, init)
    }
    const first = await join({ 'idempotency-key': key }, false)
    expect(first.status).toBe(201)
    const { ticketId } = (await first.json()) as Ticket
    // Matched while the answer was lost.
    await joinFor(q, rival.playerId)
    const again = await join({ 'idempotency-key': key }, true)
    expect(again.status).toBe(200)
    const ticket = (await again.json()) as Ticket
    expect(ticket).toMatchObject({ ticketId, status: 'matched', existing: true })
    expect(ticket.match?.token).toEqual(expect.any(String))
    const unanswered: Record<string, string>[] = [
      {},
      { 'idempotency-key': `join-${crypto.randomUUID()}` },
    ]
    for (const headers of unanswered) {
      const p = await problem(await join(headers, true))
      expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    }
  })
})

describe('joins per minute', () => {
  const limited = { JOINS_PER_MINUTE: '1' }
  /** This isolate's `nexus_rate_limited_total` for the joins' two limits. */
  const joinRefusals = () => {
    const of = (limit: string) => metricTotal('nexus_rate_limited_total', { limit })
    return { joins: of('matchmaking-joins'), replays: of('matchmaking-join-replays') }
  }

  it("refuses a player's HTTP joins past JOINS_PER_MINUTE with 429 and Retry-After before any claim, queueing nothing; a keyed join sent again still gets the ticket its first try made; game servers are not counted", async () => {
    // Counted by the minute: not across its turn.
    await clearOfMinuteTurn(10_000)
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const { callWithEnv } = await import('./helpers/http.ts')
    const claimVersion = async () =>
      (
        (await pg()`
          SELECT coalesce(max(version)::text || ' ' || max(claimed_at)::text, '') AS version
            FROM queue_claims WHERE player_id = ${g.playerId}`) as { version: string }[]
      )[0]!.version
    const join = (key?: string) =>
      callWithEnv(
        limited,
        `/v1/matchmaking/${q}/tickets`,
        json('POST', {}, g.token, key ? { 'idempotency-key': key } : {}),
      )
    const key = `join-${crypto.randomUUID()}`
    const first = await join(key)
    expect(first.status).toBe(201)
    const { ticketId } = (await first.json()) as Ticket
    // The minute's one join is spent: another is refused before its claim.
    const before = await claimVersion()
    const counted = joinRefusals()
    const refused = await join()
    expect(refused.status).toBe(429)
    expect(joinRefusals()).toEqual({ ...counted, joins: counted.joins + 1 })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await problem(refused)).type).toBe('urn:nexus:problem:rate-limited')
    expect(await claimVersion()).toBe(before)
    // The first join sent again (its answer lost) gets its ticket, still waiting.
    const again = await join(key)
    expect(again.status).toBe(200)
    // Answered, so not counted as refused.
    expect(joinRefusals()).toEqual({ ...counted, joins: counted.joins + 1 })
    expect(await again.json()).toMatchObject({ ticketId, status: 'waiting', existing: true })
    const waiting = await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.stats('eu'))
    expect(waiting.waitingTickets).toBe(1)
    // Each such answer is a Neon read and a pool's: as many again as the joins, then the 429.
    const pastReplays = await join(key)
    expect(pastReplays.status).toBe(429)
    // One 429, counted once, under the limit that refused it.
    expect(joinRefusals()).toEqual({ joins: counted.joins + 1, replays: counted.replays + 1 })
    expect((await problem(pastReplays)).type).toBe('urn:nexus:problem:rate-limited')
    // A game server joins players all the same (this one's ticket is the one it has).
    const byServer = await callWithEnv(
      limited,
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: g.playerId }, ADMIN_KEY),
    )
    expect(byServer.status).toBe(200)
    expect(((await byServer.json()) as Ticket).ticketId).toBe(ticketId)
  })

  it('a keyed join past the allowance naming a region the queue never had asks no pool (a made-up name would make one up): 429', async () => {
    await clearOfMinuteTurn(10_000)
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const { callWithEnv } = await import('./helpers/http.ts')
    const join = (key: string, body: Record<string, unknown> = {}) =>
      callWithEnv(
        limited,
        `/v1/matchmaking/${q}/tickets`,
        json('POST', body, g.token, { 'idempotency-key': key }),
      )
    const key = `join-${crypto.randomUUID()}`
    expect((await join(key)).status).toBe(201)
    let asked = 0
    const poolBack = await replaceMethod<MatchPool, 'ticketByKey'>(
      poolOf(q),
      'ticketByKey',
      (ticketByKey) =>
        function (this: MatchPool, ...args: Parameters<MatchPool['ticketByKey']>) {
          asked++
          return ticketByKey.apply(this, args)
        },
    )
    onTestFinished(poolBack)
    const madeUp = await join(key, { region: `zz${crypto.randomUUID().slice(0, 8)}` })
    expect(madeUp.status).toBe(429)
    expect(asked).toBe(0)
  })

  it("counts a player's socket connects apart, four times JOINS_PER_MINUTE (a reconnect must not find the joins spent): past it the upgrade is 429 before any claim", async () => {
    await clearOfMinuteTurn(10_000)
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const { callWithEnv } = await import('./helpers/http.ts')
    // The minute's one join, over HTTP.
    const joined = await callWithEnv(
      limited,
      `/v1/matchmaking/${q}/tickets`,
      json('POST', {}, g.token),
    )
    expect(joined.status).toBe(201)
    const connect = () =>
      callWithEnv(limited, `/v1/matchmaking/${q}`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
      })
    // Four connects take the waiting ticket back, the joins spent or not.
    for (let i = 0; i < 4; i++) {
      const res = await connect()
      expect(res.status, `connect ${i + 1}`).toBe(101)
      res.webSocket!.accept()
      const queued = await nextOfType<{ existing: boolean }>(track(res.webSocket!), 'queued')
      expect(queued.existing).toBe(true)
      res.webSocket!.close(1000)
    }
    const claim = async () =>
      await pg()`SELECT version, claimed_at::text AS at FROM queue_claims WHERE player_id = ${g.playerId}`
    const before = await claim()
    expect(before).toHaveLength(1)
    const refused = await connect()
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    // Refused before its claim: Neon's claim is as the last connect left it.
    expect(await claim()).toEqual(before)
  })
})

describe('ticket reads per minute', () => {
  it("refuses a player's ticket reads past TICKET_CALLS_PER_MINUTE, long-polls and cancels included, with 429 and Retry-After, the ticket left waiting; another player and the admin key read on", async () => {
    // Counted by the minute: not across its turn.
    await clearOfMinuteTurn(10_000)
    // Two queues, so that the two players wait instead of being matched together.
    const [q, other] = [await createQueue(), await createQueue()]
    for (const queue of [q, other]) await rig(queue, newClock())
    const [a, b] = [await newGuest(), await newGuest()]
    const limited = { TICKET_CALLS_PER_MINUTE: '2' }
    const ticketOfJoin = async (queue: string, token: string) =>
      ((await (await joinAs(queue, token)).json()) as Ticket).ticketId
    const [mine, theirs] = [await ticketOfJoin(q, a.token), await ticketOfJoin(other, b.token)]
    const read = (ticketId: string, token: string, query = '') =>
      callWithEnv(limited, `/v1/matchmaking/tickets/${ticketId}${query}`, bearer(token))
    expect((await read(mine, a.token)).status).toBe(200)
    // A held poll is a read too (answered at the end of its 50 ms, still waiting).
    const held = await read(mine, a.token, '?wait=0.05')
    expect(held.status).toBe(200)
    expect(((await held.json()) as Ticket).status).toBe('waiting')
    for (const query of ['', '?wait=5']) {
      const refused = await read(mine, a.token, query)
      expect(refused.status, query).toBe(429)
      expect((await problem(refused)).type).toBe('urn:nexus:problem:rate-limited')
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    }
    // A cancel is a call on the pool as well: counted with the reads, and refused past them.
    const cancel = await problem(
      await callWithEnv(limited, `/v1/matchmaking/tickets/${mine}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${a.token}` },
      }),
    )
    expect(cancel).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    // Another player's allowance is theirs; a game server is not counted.
    expect((await read(theirs, b.token)).status).toBe(200)
    const byServer = await read(mine, ADMIN_KEY)
    expect(byServer.status).toBe(200)
    expect(await byServer.json()).toMatchObject({ ticketId: mine, status: 'waiting' })
  })

  it("counts a player's cancels with their reads: past TICKET_CALLS_PER_MINUTE a cancel of a made-up ticket is 429 before any pool is asked", async () => {
    await clearOfMinuteTurn(10_000)
    const g = await newGuest()
    const limited = { TICKET_CALLS_PER_MINUTE: '2' }
    const cancelMadeUp = () =>
      callWithEnv(
        limited,
        `/v1/matchmaking/tickets/made-up-${crypto.randomUUID().slice(0, 8)}:eu:${crypto.randomUUID()}`,
        {
          method: 'DELETE',
          headers: { authorization: `Bearer ${g.token}` },
        },
      )
    // Counted on every pool (the method is the class's): each made-up queue is a pool of its own.
    let asked = 0
    const back = await replaceMethod<MatchPool, 'cancel'>(
      poolOf(`made-up-${crypto.randomUUID().slice(0, 8)}`),
      'cancel',
      (cancel) =>
        function (this: MatchPool, ...args: Parameters<MatchPool['cancel']>) {
          asked++
          return cancel.apply(this, args)
        },
    )
    onTestFinished(back)
    const answers = []
    for (let i = 0; i < 3; i++) answers.push((await cancelMadeUp()).status)
    expect(answers).toEqual([404, 404, 429])
    expect(asked).toBe(2)
  })
})

describe('a long-poll on /metrics', () => {
  it('is timed under its route marked held open, so the route’s own latency is not the waits asked for', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const a = await newGuest()
    const t = (await (await joinAs(q, a.token)).json()) as Ticket
    const route = '/v1/matchmaking/tickets/:ticketId'
    // Read from /metrics, the cluster's totals: this isolate's own count restarts at each send.
    const durations = async () => {
      const samples = parsePrometheus(await (await call('/metrics', bearer(ADMIN_KEY))).text())
      const of = (r: string, what: 'count' | 'sum') =>
        samples.find(
          (x) =>
            x.name === `nexus_http_request_duration_seconds_${what}` &&
            x.labels.method === 'GET' &&
            x.labels.route === r &&
            x.labels.status === '200',
        )?.value ?? 0
      return {
        plain: { count: of(route, 'count'), sum: of(route, 'sum') },
        held: {
          count: of(`${route} (held open)`, 'count'),
          sum: of(`${route} (held open)`, 'sum'),
        },
      }
    }
    const before = await durations()
    expect((await get(t.ticketId, a.token)).status).toBe(200)
    expect((await ticketOf(t.ticketId, a.token, 0.3)).status).toBe('waiting')
    const after = await durations()
    expect(after.plain.count - before.plain.count).toBe(1)
    expect(after.held.count - before.held.count).toBe(1)
    // The held one took its wait; the plain read did not count it.
    expect(after.held.sum - before.held.sum).toBeGreaterThanOrEqual(0.3)
    expect(after.plain.sum - before.plain.sum).toBeLessThan(0.3)
  })
})

describe('made-up ticket ids', () => {
  it('are 404 to read and to cancel, and leave no stored pool behind', async () => {
    const g = await newGuest()
    const queue = `fake-${crypto.randomUUID().slice(0, 8)}`
    const id = `${queue}:eu:${crypto.randomUUID()}`
    // Nor does the pool make a schema only to drop it again (some thirty statements a call).
    let schemaMade = 0
    await replaceMethod<MatchPool, never>(
      poolOf(queue, 'eu'),
      'load' as never,
      (original) =>
        function (this: MatchPool, ...args: unknown[]) {
          schemaMade++
          return (original as (...a: unknown[]) => unknown).apply(this, args)
        } as never,
    )
    for (const init of [bearer(g.token), { method: 'DELETE', ...bearer(g.token) }]) {
      const p = await problem(await call(`/v1/matchmaking/tickets/${id}`, init))
      expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    }
    const left = await runInDurableObject(poolOf(queue, 'eu'), (_inst, state) =>
      state.storage.sql
        .exec<{ name: string }>(
          `SELECT name FROM sqlite_master WHERE name NOT LIKE '\_cf%' ESCAPE '\\'`,
        )
        .toArray()
        .map((r) => r.name),
    )
    expect(left).toEqual([])
    expect(schemaMade).toBe(0)
    // A queue created later under that name works from the same objects.
    await createQueue({}, queue)
    const ticket = await joinFor(queue, `p-${queue}`)
    expect(ticket.status).toBe('waiting')
  })
})

describe('stats', () => {
  it('waiting per region, matches per minute and wait percentiles, also on /metrics', async () => {
    const q = await createQueue({ regions: ['eu', 'us'], maxRatingGap: 50, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    await rig(q, clock, { region: 'us' })
    const t0 = clock.t
    const admin = (playerId: string, region = 'eu') =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', { playerId, region }, ADMIN_KEY))
    const ids = ['a', 'b', 'c', 'd', 'e'].map((n) => `${q}-${n}`)
    await Promise.all(ids.map((p) => setRating(p, 1500)))
    await setRating(ids[2]!, 1800)
    await setRating(ids[3]!, 1800)
    await admin(ids[0]!)
    clock.t = t0 + 4000
    await admin(ids[1]!) // matches a: waits 4000 and 0
    await admin(ids[2]!)
    clock.t = t0 + 10_000
    await admin(ids[3]!) // matches c: waits 6000 and 0
    await admin(ids[4]!, 'us')

    const res = await call(`/v1/matchmaking/${q}/stats`, FRESH)
    expect(res.status).toBe(200)
    const s = (await res.json()) as {
      waitingTickets: number
      matchesPerMinute: number
      waitSeconds: { p50: number; p95: number }
      regions: { region: string; waitingTickets: number; waitingPlayers: number }[]
    }
    const waits = [4000, 0, 6000, 0].sort((x, y) => x - y)
    const rank = (p: number) => waits[Math.ceil((p / 100) * waits.length) - 1]! / 1000
    expect(s.waitingTickets).toBe(1)
    expect(s.matchesPerMinute).toBe(2)
    expect(s.waitSeconds).toEqual({ p50: rank(50), p95: rank(95) })
    expect(s.regions).toEqual([
      expect.objectContaining({ region: 'eu', waitingTickets: 0, waitingPlayers: 0 }),
      expect.objectContaining({ region: 'us', waitingTickets: 1, waitingPlayers: 1 }),
    ])
    // A minute later the matches no longer count.
    clock.t = t0 + 4000 + 60_001
    await fireAlarm(q)
    const later = (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
      matchesPerMinute: number
    }
    expect(later.matchesPerMinute).toBe(1)

    const metrics = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(metrics).toContain(`nexus_matchmaking_waiting_tickets{queue="${q}",region="us"} 1`)
    expect(metrics).toContain(`nexus_matchmaking_matches_total{queue="${q}",region="eu"} 2`)
    expect(metrics).toContain(`nexus_matchmaking_wait_seconds_count{queue="${q}",region="eu"} 4`)
    expect(metrics).toContain(
      `nexus_matchmaking_wait_p95_seconds{queue="${q}",region="eu"} ${rank(95)}`,
    )
    expect(metrics).toContain(`nexus_matchmaking_wait_samples{queue="${q}",region="eu"} 4`)

    // An hour on with no match, the waits of then count no more: nor does an idle region keep
    // its gauges where they were (the alarm comes for them).
    clock.t = t0 + 10_000 + 60 * 60_000 + 60_000
    expect((await alarmAt(q))!).toBeLessThanOrEqual(clock.t)
    await fireAlarm(q)
    const idle = (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as typeof s
    expect(idle.waitSeconds).toEqual({ p50: null, p95: null })
    const after = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(after).toContain(`nexus_matchmaking_wait_p95_seconds{queue="${q}",region="eu"} 0`)
    // Over no waits at all, which the samples say: not players matched in no time.
    expect(after).toContain(`nexus_matchmaking_wait_samples{queue="${q}",region="eu"} 0`)
  })
})

describe('stats across regions', () => {
  it("a queue's wait percentiles merge its regions over the span each covers in full, so a busy region counts by its share of the matches", async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    const clock = newClock()
    await rig(q, clock)
    await rig(q, clock, { region: 'us' })
    const now = clock.t
    // eu: 600 matches in the last 5 minutes, 5 s waits (its last 500 reach back about 4 min);
    // us: 60 over the hour, 60 s waits, 4 of them in those last minutes.
    const fill = (region: string, samples: [at: number, waitMs: number][]) =>
      runInDurableObject(poolOf(q, region), (_i: MatchPool, state) => {
        for (const [at, wait] of samples) {
          state.storage.sql.exec(`INSERT INTO wait_samples (at, wait_ms) VALUES (?, ?)`, at, wait)
        }
      })
    await fill(
      'eu',
      Array.from({ length: 600 }, (_, i) => [now - 300_000 + i * 500, 5_000]),
    )
    await fill(
      'us',
      Array.from({ length: 60 }, (_, i) => [now - 3_540_000 + i * 59_000, 60_000]),
    )
    const s = (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
      waitSeconds: { p50: number; p95: number }
      regions: { region: string; waitSeconds: { p50: number; p95: number } }[]
    }
    expect(s.regions.map((r) => [r.region, r.waitSeconds])).toEqual([
      ['eu', { p50: 5, p95: 5 }],
      ['us', { p50: 60, p95: 60 }],
    ])
    // Over the span eu's 500 cover, us made 4 matches of 504: both percentiles are eu's wait.
    // Merged as they came (500 against 60, 11% of them us's), us's 60 s was the queue's p95.
    expect(s.waitSeconds).toEqual({ p50: 5, p95: 5 })
    // The dashboard's queue row says the same.
    const overview = (await (await call('/dashboard/api/overview', bearer(ADMIN_KEY))).json()) as {
      queues: { id: string; waitSeconds: { p50: number; p95: number } }[]
    }
    expect(overview.queues.find((x) => x.id === q)!.waitSeconds).toMatchObject({ p50: 5, p95: 5 })
  })
})

describe('stats over time', () => {
  it('a match leaving the last minute within a second of the last rates update is counted out a second after it, the alarm not coming back meanwhile', async () => {
    const q = await createQueue({ maxRatingGap: 50, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const t0 = clock.t
    const ids = ['a', 'b', 'c', 'd'].map((n) => `${q}-${n}`)
    await Promise.all(ids.map((p) => setRating(p, 1500)))
    await joinFor(q, ids[0]!)
    await joinFor(q, ids[1]!) // a match at t0
    clock.t = t0 + 59_500
    await joinFor(q, ids[2]!)
    await joinFor(q, ids[3]!) // a match at t0 + 59.5 s; rates computed then
    const perMinute = async () =>
      (
        (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
          matchesPerMinute: number
        }
      ).matchesPerMinute
    expect(await perMinute()).toBe(2)
    // As the runtime runs an alarm: the alarm that fired is gone unless the handler sets another.
    const alarmFires = () =>
      runInDurableObject(poolOf(q), async (inst: MatchPool, state) => {
        await state.storage.deleteAlarm()
        await inst.alarm()
      })
    // The first match leaves the minute at t0 + 60,001, within a second of the last update: the
    // alarm then comes once, at the end of that second, not at every moment until it.
    clock.t = t0 + 60_001
    await alarmFires()
    expect((await alarmAt(q))! - t0).toBe(60_500)
    clock.t = t0 + 60_500
    await alarmFires()
    expect(await perMinute()).toBe(1)
    // Next: the second match leaving its minute.
    expect((await alarmAt(q))! - t0).toBe(59_500 + 60_001)
  })
})

describe('stats of a match whose session came up late', () => {
  it('count it when its players are told, and its waits until then', async () => {
    const q = await createQueue()
    const clock = newClock()
    let up = false
    const creator: SessionCreator = async (setup) =>
      up ? recordingCreator(setup) : { ok: false, problem: 'unavailable', detail: 'down' }
    await rig(q, clock, { creator })
    const t0 = clock.t
    await joinFor(q, `${q}-a`)
    clock.t = t0 + 10_000
    const b = await joinFor(q, `${q}-b`) // paired now, but sessions cannot be made
    expect(b.status).toBe('matching')
    // Sessions come back 70 s after the pairing: the retry makes the match and tells them.
    clock.t = t0 + 80_000
    up = true
    await fireAlarm(q)
    expect((await ticketOf(b.ticketId)).status).toBe('matched')
    const s = (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
      matchesPerMinute: number
      waitSeconds: { p50: number; p95: number }
    }
    // Made within the last minute, as the matches counter says; a waited 80 s, b 70 s.
    expect(s.matchesPerMinute).toBe(1)
    expect(s.waitSeconds).toEqual({ p50: 70, p95: 80 })
    const metrics = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(metrics).toContain(`nexus_matchmaking_matches_total{queue="${q}",region="eu"} 1`)
    expect(metrics).toContain(`nexus_matchmaking_matches_per_minute{queue="${q}",region="eu"} 1`)
  })
})

describe('a busy pool', () => {
  it('its alarm and stats read the matches they need, not every match kept for retention', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    await joinFor(q, `${q}-a`)
    const now = clock.t
    // Ten minutes of a busy pool: 10,000 matches kept for retention, 100 of them in the last
    // minute, and 50 more past their retention, due to be swept.
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10150)
         INSERT INTO matches (id, state, setup, ticket_ids, created_at, next_attempt_at, done_at)
         SELECT 'm' || i, 'created', '{}', '[]', t, 0, t
           FROM (SELECT i, CASE WHEN i <= 50 THEN ? - 700000 - i
                                WHEN i <= 150 THEN ? - i
                                ELSE ? - 300000 - i END AS t FROM n)`,
        now,
        now,
        now,
      )
    })
    const { rowsRead, stats, left } = await runInDurableObject(
      poolOf(q),
      async (inst: MatchPool, state) => {
        const counted = await countRowsRead(inst, async () => {
          await inst.alarm()
          return inst.stats('eu')
        })
        const left = state.storage.sql
          .exec<{ n: number }>(`SELECT count(*) AS n FROM matches`)
          .one().n
        return { rowsRead: counted.rowsRead, stats: counted.result, left }
      },
    )
    expect(stats.matchesLastMinute).toBe(100)
    expect(left).toBe(10_100)
    expect(rowsRead).toBeLessThan(1000)
  })
})

describe('a full pool', () => {
  it('holds at most its limit of waiting tickets: a join past it is 503 with Retry-After over HTTP and `unavailable` on a socket, and queues nothing; a player already waiting still gets theirs, and a place freed takes a join again', async () => {
    const q = await createQueue({ teamSize: 3 })
    await rig(q, newClock())
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.maxWaitingTickets = 2
    })
    const [a, b, c] = await Promise.all([newGuest(), newGuest(), newGuest()])
    const first = await joinAs(q, a.token)
    expect(first.status).toBe(201)
    const { ticketId } = (await first.json()) as Ticket
    expect((await joinAs(q, b.token)).status).toBe(201)
    const refused = await joinAs(q, c.token)
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    expect(await problem(refused)).toMatchObject({
      type: 'urn:nexus:problem:unavailable',
      body: { limit: 2 },
    })
    const ws = await connect(`/v1/matchmaking/${q}`, c.token)
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType(ws, 'error')).toMatchObject({ code: 'unavailable' })
    const waitingNow = async () =>
      (
        (await (await call(`/v1/matchmaking/${q}/stats`, FRESH)).json()) as {
          waitingTickets: number
        }
      ).waitingTickets
    expect(await waitingNow()).toBe(2)
    // A join by a player already waiting is answered with their ticket.
    const again = await joinAs(q, a.token)
    expect(again.status).toBe(200)
    expect(await again.json()).toMatchObject({ ticketId, existing: true })
    // A ticket leaves: the next join is taken.
    expect((await del(ticketId, a.token)).status).toBe(200)
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType(ws, 'queued')).toMatchObject({ existing: false })
    expect(await waitingNow()).toBe(2)
    ws.close()
  })
})

describe('queue changes and graces', () => {
  it('a region taken out of a queue cancels its waiting tickets (queue_changed) instead of matching them', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    const clock = newClock()
    await rig(q, clock, { region: 'us' })
    const ta = await joinFor(q, `${q}-a`, { region: 'us' })
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['eu'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    expect(await ticketOf(ta.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    // Someone who could have matched it before the change finds nobody there.
    const tb = await joinFor(q, `${q}-b`)
    expect(tb.status).toBe('waiting')
  })

  it('a paused queue cancels its waiting tickets (queue_changed) and refuses joins, over HTTP and on a socket, until a PUT without it', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const waiting = await joinFor(q, `${q}-a`)
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    const paused = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, paused: true }, ADMIN_KEY),
    )
    expect(paused.status).toBe(200)
    expect(((await paused.json()) as { config: { paused?: boolean } }).config.paused).toBe(true)
    // Read back by the admin, in the listing, and in the public settings.
    const stored = (await (await call(`/v1/admin/queues/${q}`, bearer(ADMIN_KEY))).json()) as {
      config: { paused: boolean }
    }
    expect(stored.config.paused).toBe(true)
    const listed = (await (
      await call(`/v1/admin/queues?after=${q.slice(0, -1)}&limit=100`, bearer(ADMIN_KEY))
    ).json()) as { queues: { id: string; paused: boolean }[] }
    expect(listed.queues.find((x) => x.id === q)).toMatchObject({ paused: true })
    const settings = (await (await call(`/v1/matchmaking/${q}`)).json()) as { paused: boolean }
    expect(settings.paused).toBe(true)
    expect(await ticketOf(waiting.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    const refused = await problem(
      await call(`/v1/matchmaking/${q}/tickets`, json('POST', { playerId: `${q}-b` }, ADMIN_KEY)),
    )
    expect(refused).toMatchObject({
      status: 409,
      type: 'urn:nexus:problem:conflict',
      body: { paused: true },
    })
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType<{ code: string }>(ws, 'error')).toMatchObject({ code: 'conflict' })
    // Back in play: joins are taken, and two players match as before.
    const resumed = await call(`/v1/admin/queues/${q}`, json('PUT', DUEL, ADMIN_KEY))
    expect(resumed.status).toBe(200)
    expect(((await resumed.json()) as { config: { paused: boolean } }).config.paused).toBe(false)
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType(ws, 'queued')).toBeTruthy()
    expect((await joinFor(q, `${q}-c`)).status).toBe('matched')
    ws.close(1000)
  })

  it('a region taken out keeps the sockets of a match still being created open for its match_found', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    const clock = newClock()
    let sessionsUp = false
    const creator: SessionCreator = async (setup) =>
      sessionsUp ? recordingCreator(setup) : { ok: false, problem: 'unavailable', detail: 'down' }
    await rig(q, clock, { region: 'us', creator })
    const [g1, g2] = await Promise.all([newGuest(), newGuest()])
    const sockets = [
      await connect(`/v1/matchmaking/${q}?region=us`, g1.token),
      await connect(`/v1/matchmaking/${q}?region=us`, g2.token),
    ]
    for (const ws of sockets) {
      ws.send(JSON.stringify({ type: 'join' }))
      await nextOfType(ws, 'queued')
    }
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['eu'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    // The session comes up at the retry: both players hear of their match on the same sockets.
    sessionsUp = true
    clock.t += 60_000
    await fireAlarm(q, 'us')
    for (const ws of sockets) expect(await nextOfType<Found>(ws, 'match_found')).toBeTruthy()
  })

  it('a region whose removal never reached its pool hears it with the next change', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock(), { region: 'us' })
    const t = await joinFor(q, `${q}-a`, { region: 'us' })
    // Version 2 takes 'us' out, but its push to the 'us' pool is lost (written to Neon alone,
    // as a PUT whose push failed leaves it).
    await pg()`update queues set config = jsonb_set(config, '{regions}', '["eu"]'),
      version = version + 1 where id = ${q}`
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    // Version 3, also without 'us': every region the queue ever had is told.
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['eu'], maxRatingGap: 150 }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    expect(await ticketOf(t.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
  })

  it('a change that lowers maxPartySize below a waiting party cancels it (queue_changed), as a smaller team size does', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    const [a, b, c] = [`${q}-a`, `${q}-b`, `${q}-c`]
    const party = await joinFor(q, a, { party: [a, b, c] })
    const solo = await joinFor(q, `${q}-solo`)
    expect((await ticketOf(party.ticketId)).status).toBe('waiting')
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, teamSize: 3, maxPartySize: 2 }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    // The party of three can no longer be matched; a leader joining again would be refused.
    expect(await ticketOf(party.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    expect((await ticketOf(solo.ticketId)).status).toBe('waiting')
  })

  it('a region whose removal never reached its pool hears it from the next cron, without another change', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    await rig(q, newClock(), { region: 'us' })
    const t = await joinFor(q, `${q}-a`, { region: 'us' })
    const owed = async () =>
      (await pg()`select unpushed_regions from queues where id = ${q}`)[0]!
        .unpushed_regions as string[]
    // The PUT's pushes were acknowledged: nothing is owed.
    expect(await owed()).toEqual([])
    // Version 2 takes 'us' out, and its pushes are lost: Neon holds it, and owes it to both
    // regions, as a PUT whose pushes failed leaves it.
    await pg()`update queues set config = jsonb_set(config, '{regions}', '["eu"]'),
      version = version + 1, unpushed_regions = known_regions where id = ${q}`
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    await runScheduled(env, Date.now())
    expect(await ticketOf(t.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'queue_changed',
    })
    expect(await owed()).toEqual([])
    // An acknowledgement of an older version takes nothing off what a newer one is owed.
    await pg()`update queues set version = version + 1, unpushed_regions = known_regions where id = ${q}`
    await markQueuePushed(env, q, 2, ['eu', 'us'])
    expect(await owed()).toEqual(['eu', 'us'])
  })

  it("a queue configuration whose pushes were lost after Neon's version count went back reaches the pools with the cron, past their version", async () => {
    const q = await createQueue({ ticketTtlSeconds: 100 })
    const put = (ticketTtlSeconds: number) =>
      call(`/v1/admin/queues/${q}`, json('PUT', { ...DUEL, ticketTtlSeconds }, ADMIN_KEY))
    expect((await put(200)).status).toBe(200)
    expect((await put(300)).status).toBe(200)
    // The pool holds version 3; Neon goes back to version 2, then saves another configuration at
    // version 3 whose pushes are lost.
    await pg()`update queues set version = 3, unpushed_regions = known_regions,
      config = jsonb_set(config, '{ticketTtlSeconds}', '400') where id = ${q}`
    const held = () =>
      runInDurableObject(
        poolOf(q),
        (inst: MatchPool) =>
          (inst as unknown as { config: { ticketTtlSeconds: number } }).config.ticketTtlSeconds,
      )
    await runScheduled(env, Date.now())
    await runScheduled(env, Date.now())
    expect(await held()).toBe(400)
    expect((await pg()`select version, unpushed_regions from queues where id = ${q}`)[0]).toEqual({
      version: 4,
      unpushed_regions: [],
    })
  })

  it('a removed region takes no new tickets: open sockets there are closed, and a join that read the old config is refused', async () => {
    const q = await createQueue({ regions: ['eu', 'us'] })
    const clock = newClock()
    await rig(q, clock, { region: 'us' })
    const [g1, g2] = await Promise.all([newGuest(), newGuest()])
    const s1 = await connect(`/v1/matchmaking/${q}?region=us`, g1.token)
    const s2 = await connect(`/v1/matchmaking/${q}?region=us`, g2.token)
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['eu'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    // Connected before the change, without a ticket: closed rather than left to join there.
    for (const ws of [s1, s2]) expect((await closed(ws)).reason).toBe('region removed')
    // A join that read version 1 from Neon just before the change reaches the pool after it.
    const v1 = { ...DUEL, regions: ['eu', 'us'], maxPartySize: 1, ticketTtlSeconds: 600 }
    const late = await runInDurableObject(poolOf(q, 'us'), (inst: MatchPool) =>
      inst.join({
        queue: q,
        region: 'us',
        config: v1 as never,
        version: 1,
        players: [{ playerId: `${q}-late`, rating: 1500 }],
        claim: { versions: { [`${q}-late`]: 1 }, claimedAt: Date.now() },
      }),
    )
    expect(late).toMatchObject({ ok: false, problem: 'validation' })
    expect(
      await runInDurableObject(
        poolOf(q, 'us'),
        async (inst: MatchPool) => (await inst.stats('us')).waitingTickets,
      ),
    ).toBe(0)
  })

  it('an HTTP join by a player whose socket ticket is in its disconnect grace ends the grace', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<{ ticketId: string }>(ws, 'queued')
    ws.close(1000, 'bye')
    await until(async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined))
    const again = (await (await joinAs(q, g.token)).json()) as Ticket
    expect(again).toMatchObject({ ticketId, existing: true })
    clock.t += 60_000
    await fireAlarm(q)
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // Held over HTTP from then on: a new instance of the pool (a deploy), which starts the grace
    // of socket tickets without a socket, leaves it to the player polling it.
    await evictDurableObject(poolOf(q))
    await rig(q, clock)
    clock.t += 60_000
    await fireAlarm(q)
    expect((await ticketOf(ticketId)).status).toBe('waiting')
  })

  it.each([false, true])(
    'matches per minute falls back to 0 on /metrics a minute after the last match, with no join since (the pool evicted in between: %s)',
    async (evicted) => {
      const q = await createQueue()
      const clock = newClock()
      await rig(q, clock)
      await joinFor(q, `${q}-a`)
      expect((await joinFor(q, `${q}-b`)).status).toBe('matched')
      if (evicted) {
        // A new instance knows nothing of the value the last one published.
        await evictDurableObject(poolOf(q))
        await rig(q, clock)
      }
      const gauge = () =>
        (
          localFamilies().find((f) => f.name === 'nexus_matchmaking_matches_per_minute')!
            .series as {
            labels: Record<string, string>
            value: number
          }[]
        ).find((x) => x.labels.queue === q)?.value
      expect(gauge()).toBe(1)
      const matchedAt = clock.t
      // Whatever else the pool has due first, its alarm comes by the time the match leaves the
      // minute, and then the gauge falls.
      for (let i = 0; i < 5 && gauge() !== 0; i++) {
        const next = (await alarmAt(q))!
        expect(next).toBeLessThanOrEqual(matchedAt + 60_001)
        clock.t = next
        expect(await runDurableObjectAlarm(poolOf(q))).toBe(true)
      }
      expect(gauge()).toBe(0)
    },
  )
})

describe("a queue's public reads", () => {
  it('stats and settings come through the read caches: a second read is a hit; a fresh read shows a join, and refreshes the caches for the reads after it', async () => {
    const q = await createQueue({ teamSize: 2 })
    // No early refresh (a draw of 0.999999 keeps an answer until its TTL).
    const random = Math.random
    Math.random = () => 0.999999
    onTestFinished(() => {
      Math.random = random
    })
    const waiting = async (res: Response) =>
      ((await res.json()) as { waitingTickets: number }).waitingTickets
    for (const path of [`/v1/matchmaking/${q}/stats`, `/v1/matchmaking/${q}`]) {
      const first = await call(path)
      const second = await call(path)
      expect(first.status).toBe(200)
      expect(first.headers.get('x-cache')).toBe('MISS')
      expect(first.headers.get('cache-control')).toMatch(/^public, max-age=[0-4]$/)
      expect(second.headers.get('x-cache')).toMatch(/^HIT/)
      expect(await second.json()).toEqual(await first.json())
    }
    await joinFor(q, `${q}-a`)
    const now = await call(`/v1/matchmaking/${q}/stats`, FRESH)
    expect(now.headers.get('x-cache')).toBe('MISS')
    expect(await waiting(now)).toBe(1)
    const after = await call(`/v1/matchmaking/${q}/stats`)
    expect(after.headers.get('x-cache')).toMatch(/^HIT/)
    expect(await waiting(after)).toBe(1)
  })

  it('a queue nobody created is remembered for a moment: reads are 404 without asking Neon again; a PUT through this isolate ends that at once', async () => {
    const q = queueId('unknown')
    for (const path of [`/v1/matchmaking/${q}/stats`, `/v1/matchmaking/${q}`]) {
      const p = await problem(await call(path))
      expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    }
    // Written to Neon behind the Worker's back (as another isolate's PUT would): still 404
    // here, since this isolate does not ask again within the moment.
    await pg()`insert into queues (id, config) select ${q}, config from queues limit 1`
    expect((await call(`/v1/matchmaking/${q}/stats`)).status).toBe(404)
    // This isolate's own PUT is seen at once.
    const put = await call(`/v1/admin/queues/${q}`, json('PUT', DUEL, ADMIN_KEY))
    expect(put.status).toBe(200)
    expect((await call(`/v1/matchmaking/${q}/stats`)).status).toBe(200)
  })
})
