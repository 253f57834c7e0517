import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { metricTotal } from './helpers/metric-totals.ts'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import type { SessionCreator, SessionSetup } from '../../workers/matchmaking/session.ts'
import { gameSessionCreator } from '../../workers/matchmaking/session.ts'
import { ADMIN_KEY, bearer, call, newGuest } from './helpers/http.ts'
import {
  graceUntil,
  alarmAt,
  checkAt,
  createQueue,
  fireAlarm,
  joinFor,
  newClock,
  poolOf,
  recordingCreator,
  rig,
  sessionCalls,
  setRating,
  ticketOf,
} from './helpers/matchmaking.ts'
import { pg } from './helpers/boards.ts'
import { errorLines } from './helpers/logs.ts'
import { collect, connect, nextOfType, until } from './helpers/sockets.ts'

function matchRows(queue: string) {
  return runInDurableObject(poolOf(queue), (_i: MatchPool, state) =>
    state.storage.sql
      .exec<{ id: string; state: string; attempts: number; setup: string }>(
        `SELECT id, state, attempts, setup FROM matches`,
      )
      .toArray(),
  )
}

/**
 * Two players matched in a new queue whose sessions cannot be made (every create refused as
 * unavailable): the match stays pending. `creates` counts the calls so far.
 */
async function matchWithSessionsDown() {
  const q = await createQueue({ ticketTtlSeconds: 3600 })
  const clock = newClock()
  let calls = 0
  const down: SessionCreator = async () => {
    calls++
    return { ok: false, problem: 'unavailable', detail: 'down' }
  }
  await rig(q, clock, { creator: down })
  const ta = await joinFor(q, `${q}-a`)
  const tb = await joinFor(q, `${q}-b`)
  expect(tb.status).toBe('matching')
  return { q, clock, creates: () => calls, ta, tb }
}

describe('eviction', () => {
  it('an evicted pool keeps its waiting tickets and still matches them when the window allows', async () => {
    const q = await createQueue({ maxRatingGap: 100, widenPerSecond: 10 })
    const clock = newClock()
    await rig(q, clock)
    const [a, b] = [`${q}-a`, `${q}-b`]
    await setRating(a, 1500)
    await setRating(b, 1700)
    const t0 = clock.t
    const ta = await joinFor(q, a)
    const tb = await joinFor(q, b)
    // Both windows reach 200 after (200 - 100) / 10 = 10 s.
    expect(await alarmAt(q)).toBe(checkAt(t0 + 10_000))

    await evictDurableObject(poolOf(q))
    await rig(q, clock)
    expect((await ticketOf(ta.ticketId)).status).toBe('waiting')
    const waiting = await runInDurableObject(poolOf(q), async (inst: MatchPool) => inst.stats('eu'))
    expect(waiting.waitingTickets).toBe(2)

    clock.t = t0 + 10_000
    expect(await runDurableObjectAlarm(poolOf(q))).toBe(true)
    const [ma, mb] = [await ticketOf(ta.ticketId), await ticketOf(tb.ticketId)]
    expect(ma.status).toBe('matched')
    expect(mb.match!.sessionId).toBe(ma.match!.sessionId)
  })

  it('a pool saved when its schema 10 stood for `polled_at` alone (no `gone_until`) gains the column at its next wake, and its tickets are read', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const t = await joinFor(q, `${q}-a`)
    await runInDurableObject(poolOf(q), (_inst, state) => {
      state.storage.sql.exec(`ALTER TABLE ticket_sockets DROP COLUMN gone_until`)
      state.storage.sql.exec(`UPDATE meta SET value = '10' WHERE key = 'schema'`)
    })
    await evictDurableObject(poolOf(q))
    await rig(q, clock)
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    const columns = await runInDurableObject(poolOf(q), (_inst, state) =>
      state.storage.sql
        .exec<{ name: string }>(`SELECT name FROM pragma_table_info('ticket_sockets')`)
        .toArray()
        .map((c) => c.name),
    )
    expect(columns).toContain('gone_until')
  })

  it('a socket survives the pool being evicted and still receives match_found', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<{ ticketId: string }>(ws, 'queued')
    await evictDurableObject(poolOf(q))
    await rig(q, clock)
    await joinFor(q, rival.playerId)
    const found = await nextOfType<{ ticketId: string; sessionId: string }>(ws, 'match_found')
    expect(found.ticketId).toBe(ticketId)
  })
})

describe('a restart', () => {
  it("starts the grace of socket tickets whose sockets went with the pool (they report no close): unmatched once it ends, a rival's join then waits", async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<{ ticketId: string }>(ws, 'queued')
    await evictDurableObject(poolOf(q), { webSockets: 'close' })
    const wokeFrom = Date.now()
    await rig(q, clock)
    const wokeBy = Date.now()
    // The wake started the queue's grace (10 s by default), by the real clock.
    const graceEnds = await graceUntil(q, ticketId)
    expect(graceEnds).toBeGreaterThanOrEqual(wokeFrom + 10_000)
    expect(graceEnds).toBeLessThanOrEqual(wokeBy + 10_000)
    // Past it by the pool's clock (an hour ahead): the alarm cancels the ticket.
    await fireAlarm(q)
    expect(await ticketOf(ticketId)).toMatchObject({ status: 'cancelled', reason: 'disconnected' })
    const rival = await joinFor(q, `${q}-rival`)
    expect(rival.status).toBe('waiting')
  })
})

describe('a wake', () => {
  it("brings back the alarm of a match waiting for its session, lost meanwhile: the pool's next wake, for any call, tries again", async () => {
    const { q, ta } = await matchWithSessionsDown()
    const [pending] = await matchRows(q)
    expect(pending).toMatchObject({ state: 'pending' })
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => state.storage.deleteAlarm())
    await evictDurableObject(poolOf(q))
    // A player's read of their ticket wakes the pool.
    expect((await ticketOf(ta.ticketId)).status).toBe('matching')
    const retryAt = await runInDurableObject(
      poolOf(q),
      (_i: MatchPool, state) =>
        state.storage.sql
          .exec<{ t: number }>(`SELECT next_attempt_at AS t FROM matches WHERE state = 'pending'`)
          .one().t,
    )
    const alarm = await alarmAt(q)
    expect(alarm).not.toBeNull()
    // For the match's next attempt, or at once when that is past (the test's clock ran ahead).
    expect(alarm!).toBeLessThanOrEqual(Math.max(retryAt, Date.now()))
  })

  it('of an idle pool sets no alarm: a wake is not work', async () => {
    const q = await createQueue()
    await fireAlarm(q)
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => state.storage.deleteAlarm())
    await evictDurableObject(poolOf(q))
    expect(await alarmAt(q)).toBeNull()
  })

  it('of a pool that does not load names it in an error line', async () => {
    const q = await createQueue()
    onTestFinished(async () => {
      // Out of any walk of queues later in this run: each would fail on it.
      await pg()`delete from queues where id = ${q}`
    })
    await joinFor(q, `${q}-a`)
    // A configuration this version cannot read, as a schema step gone wrong would leave it.
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => {
      state.storage.sql.exec(`UPDATE meta SET value = '{' WHERE key = 'config'`)
    })
    await evictDurableObject(poolOf(q))
    const lines = errorLines()
    await expect(alarmAt(q)).rejects.toThrow()
    const line = lines.find((l) => l.msg === 'pool does not load')
    expect(line).toMatchObject({
      level: 'error',
      actor: expect.stringContaining('MatchPool:'),
      queue: q,
    })
  })
})

describe('creating the session', () => {
  it('a failing create is retried from the alarm with the same session (across an eviction), never a second one', async () => {
    const q = await createQueue()
    const clock = newClock()
    const attempts: SessionSetup[] = []
    const matchedAts: (number | undefined)[] = []
    // Fails outright once, then creates the session but loses the answer, then succeeds.
    const flaky: SessionCreator = async (setup, matchedAt) => {
      attempts.push(setup)
      matchedAts.push(matchedAt)
      if (attempts.length === 1) return { ok: false, problem: 'unavailable', detail: 'down' }
      if (attempts.length === 2) {
        await recordingCreator(setup)
        throw new Error('connection reset')
      }
      return recordingCreator(setup)
    }
    await rig(q, clock, { creator: flaky })
    const t0 = clock.t
    const ta = await joinFor(q, `${q}-a`)
    const tb = await joinFor(q, `${q}-b`)
    expect(tb.status).toBe('matching')
    // A backoff of 1 s, then 2 s, each less up to a quarter (spread across objects).
    const first = (await alarmAt(q))!
    expect(first - t0).toBeGreaterThanOrEqual(750)
    expect(first - t0).toBeLessThanOrEqual(1000)

    clock.t = first
    await runDurableObjectAlarm(poolOf(q))
    expect(attempts).toHaveLength(2)
    expect((await ticketOf(ta.ticketId)).status).toBe('matching')
    const second = (await alarmAt(q))!
    expect(second - first).toBeGreaterThanOrEqual(1500)
    expect(second - first).toBeLessThanOrEqual(2000)

    await evictDurableObject(poolOf(q))
    await rig(q, clock, { creator: flaky })
    clock.t = second
    await runDurableObjectAlarm(poolOf(q))
    expect(attempts).toHaveLength(3)

    const ids = new Set(attempts.map((s) => s.sessionId))
    expect(ids.size).toBe(1)
    const [sessionId] = [...ids] as [string]
    expect(new Set(attempts.map((s) => s.seed)).size).toBe(1)
    expect(sessionCalls.get(sessionId)).toHaveLength(2)
    const rows = await matchRows(q)
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ id: sessionId, state: 'created' })
    const [ma, mb] = [await ticketOf(ta.ticketId), await ticketOf(tb.ticketId)]
    expect(ma.match!.sessionId).toBe(sessionId)
    expect(mb.match!.sessionId).toBe(sessionId)
    // The roster, rules and seed handed over are the ones the match was made with.
    expect(attempts[0]!.roster.map((p) => p.playerId).sort()).toEqual([`${q}-a`, `${q}-b`])
    expect(attempts[0]!.rules).toBe('dice-race')
    expect(attempts[0]!.seed).toMatch(/^[0-9a-f]{64}$/)
    // Every attempt names when the match was made, which the session judges erasures by.
    expect(matchedAts).toEqual([t0, t0, t0])
  })

  it('the real GameSession: created once, and a retry with the same setup creates nothing', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { creator: gameSessionCreator(env) })
    await joinFor(q, `${q}-a`)
    const tb = await joinFor(q, `${q}-b`)
    expect(tb.status).toBe('matched')
    const [row] = await matchRows(q)
    const setup = JSON.parse(row!.setup) as SessionSetup
    expect(setup.sessionId).toBe(tb.match!.sessionId)
    expect(await gameSessionCreator(env)(setup)).toEqual({ ok: true, created: false })
    // The match did not wait for Neon: the session lists itself from its alarm right after.
    await runDurableObjectAlarm(env.GAME_SESSION.getByName(setup.sessionId))
    const listed = await until(async () => {
      const rows = (await pg()`select status, queue from game_sessions
                                  where id = ${setup.sessionId}`) as {
        status: string
        queue: string
      }[]
      return rows.length > 0 ? rows : undefined
    })
    expect(listed).toEqual([{ status: 'live', queue: q }])
  })
})

describe('a reset while a session is being created', () => {
  it('leaves a retry behind: the alarm comes back for the match when its lease ends, not at the tickets’ expiry', async () => {
    const q = await createQueue({ ticketTtlSeconds: 3600 })
    const clock = newClock()
    let calls = 0
    const hangsOnce: SessionCreator = async (setup) => {
      calls++
      // The first call never answers: the reset below cuts it off.
      if (calls === 1) return new Promise(() => {})
      return recordingCreator(setup)
    }
    await rig(q, clock, { creator: hangsOnce })
    const ta = await joinFor(q, `${q}-a`)
    const pending = joinFor(q, `${q}-b`).catch((err: unknown) => err)
    await until(async () => (calls > 0 ? true : undefined))
    // While the call is out, the alarm is set for the end of its lease, not for now (no spinning)
    // and not for the tickets' expiry an hour away.
    const lease = (await alarmAt(q))! - clock.t
    expect(lease).toBeGreaterThan(1000)
    expect(lease).toBeLessThanOrEqual(30_000)
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => state.abort('reset')).catch(
      () => undefined,
    )
    await pending
    await rig(q, clock)
    expect((await ticketOf(ta.ticketId)).status).toBe('matching')
    clock.t += lease
    expect(await runDurableObjectAlarm(poolOf(q))).toBe(true)
    const after = await ticketOf(ta.ticketId)
    expect(after.status).toBe('matched')
    expect(sessionCalls.get(after.match!.sessionId)).toHaveLength(1)
  })

  it('a match whose session calls never answer (the pool reset during each) is given up after 12 attempts: its players are told session_failed and may queue again', async () => {
    const { q, clock, creates, ta, tb } = await matchWithSessionsDown()
    // Its attempts spent by leases whose calls resets cut off (no answer, so no failure to count
    // them by): the row as the twelfth such reset leaves it, its lease run out.
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) =>
      state.storage.sql.exec(`UPDATE matches SET attempts = 12, next_attempt_at = 0`),
    )
    const before = creates()
    await runDurableObjectAlarm(poolOf(q))
    expect(creates()).toBe(before)
    for (const t of [ta, tb]) {
      expect(await ticketOf(t.ticketId)).toMatchObject({
        status: 'cancelled',
        reason: 'session_failed',
      })
    }
    expect((await matchRows(q))[0]).toMatchObject({ state: 'failed' })
    const labels = { queue: q, region: 'eu' }
    expect(
      metricTotal('nexus_matchmaking_tickets_total', { ...labels, outcome: 'session_failed' }),
    ).toBe(2)
    // Every call the sessions refused is a failed attempt counted, and so is the last, whose
    // lease ran out unanswered.
    expect(metricTotal('nexus_matchmaking_session_create_failures_total', labels)).toBe(before + 1)
    await rig(q, clock)
    const again = await joinFor(q, `${q}-a`)
    expect(again.ticketId).not.toBe(ta.ticketId)
  })

  it('a match whose session is not made within 30 minutes is given up however few its attempts (its players must not outlive their claims on the queue)', async () => {
    const { q, clock, creates, ta } = await matchWithSessionsDown()
    // Two attempts so far, the next one due 30 minutes after the match was made (a long backlog).
    clock.t += 30 * 60_000
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) =>
      state.storage.sql.exec(`UPDATE matches SET attempts = 2, next_attempt_at = 0`),
    )
    const before = creates()
    await runDurableObjectAlarm(poolOf(q))
    expect(creates()).toBe(before)
    expect(await ticketOf(ta.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'session_failed',
    })
  })

  it('one alarm step sends at most 64 pending matches; the alarm comes straight back for the rest', async () => {
    const q = await createQueue({ ticketTtlSeconds: 3600 })
    const clock = newClock()
    await rig(q, clock)
    // 70 matches left pending (a GameSession outage), all due, their tickets long gone.
    const ids = Array.from({ length: 70 }, (_, i) => `${q}-pending-${i}`)
    await runInDurableObject(poolOf(q), async (_i: MatchPool, state) => {
      await state.storage.setAlarm(clock.t)
      for (const [i, id] of ids.entries()) {
        const setup: SessionSetup = {
          sessionId: id,
          queue: q,
          region: 'eu',
          rules: 'dice-race',
          roster: [{ playerId: `${id}-a`, team: 0 }],
          seed: 'a'.repeat(64),
        }
        state.storage.sql.exec(
          `INSERT INTO matches (id, state, setup, ticket_ids, created_at, next_attempt_at)
           VALUES (?, 'pending', ?, '[]', ?, 0)`,
          id,
          JSON.stringify(setup),
          clock.t - 70 + i,
        )
      }
    })
    const created = () => ids.filter((id) => sessionCalls.has(id)).length
    expect(await runDurableObjectAlarm(poolOf(q))).toBe(true)
    expect(created()).toBe(64)
    expect(await alarmAt(q)).toBeLessThanOrEqual(clock.t)
    await runDurableObjectAlarm(poolOf(q))
    expect(created()).toBe(70)
  })

  it('an answer that comes after its lease ran out, while the alarm is taking the match up again, completes the match once', async () => {
    const q = await createQueue({ ticketTtlSeconds: 3600 })
    const clock = newClock()
    // Plain flags both sides poll: a promise made here cannot be awaited inside the object.
    const gate = { calls: 0, answer: false }
    const slowOnce: SessionCreator = async (setup) => {
      if (++gate.calls === 1) {
        while (!gate.answer) await new Promise((r) => setTimeout(r, 5))
      }
      return recordingCreator(setup)
    }
    await rig(q, clock, { creator: slowOnce })
    const ta = await joinFor(q, `${q}-a`)
    const joinB = joinFor(q, `${q}-b`)
    await until(async () => (gate.calls > 0 ? true : undefined))
    // The lease runs out with the first call still out. The alarm takes the match up again, and
    // while it arms itself for the new lease (before its own call), the first call answers.
    clock.t += 30_000
    await runInDurableObject(poolOf(q), async (inst: MatchPool, state) => {
      const pool = inst as unknown as { scheduleAlarm(): Promise<void> }
      const arm = pool.scheduleAlarm
      // Up to 20 s in all: a slow machine's first call answering late must not pass for the race.
      const deadline = Date.now() + 20_000
      pool.scheduleAlarm = async function (this: MatchPool) {
        await arm.call(this)
        gate.answer = true
        const created = () =>
          state.storage.sql.exec(`SELECT 1 FROM matches WHERE state = 'created'`).toArray().length >
          0
        while (!created() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
      }
      try {
        await inst.alarm()
      } finally {
        pool.scheduleAlarm = arm
      }
    })
    await joinB
    const after = await ticketOf(ta.ticketId)
    expect(after.status).toBe('matched')
    // One session call, and the match and its two waits counted once.
    expect(sessionCalls.get(after.match!.sessionId)).toHaveLength(1)
    const metrics = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(metrics).toContain(`nexus_matchmaking_matches_total{queue="${q}",region="eu"} 1\n`)
    expect(metrics).toContain(`nexus_matchmaking_wait_seconds_count{queue="${q}",region="eu"} 2\n`)
  })
})

describe('load', () => {
  it('280 simultaneous joins (HTTP and sockets): everyone in exactly one match, one match_found per socket', async () => {
    const q = await createQueue({ maxRatingGap: 5000, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const httpPlayers = Array.from({ length: 240 }, (_, i) => `${q}-h${i}`)
    const guests = await Promise.all(Array.from({ length: 40 }, () => newGuest()))
    const sockets = await Promise.all(guests.map((g) => connect(`/v1/matchmaking/${q}`, g.token)))
    // Duplicate joins are tested on their own: here one might land after its first ticket was
    // matched, which is a new, legitimate ticket.
    const joins = httpPlayers.map((p) => joinFor(q, p))
    for (const ws of sockets) ws.send(JSON.stringify({ type: 'join' }))
    const tickets = await Promise.all(joins)
    const founds = await Promise.all(
      sockets.map((ws) =>
        nextOfType<{ sessionId: string; players: { playerId: string }[] }>(
          ws,
          'match_found',
          15_000,
        ),
      ),
    )

    expect(new Set(tickets.map((t) => t.ticketId)).size).toBe(httpPlayers.length)
    const finals = await Promise.all(tickets.map((t) => ticketOf(t.ticketId)))
    const rosters = new Map<string, string[]>()
    for (const t of finals) {
      expect(t.status).toBe('matched')
      rosters.set(
        t.match!.sessionId,
        t.match!.players.map((p) => p.playerId),
      )
    }
    for (const f of founds)
      rosters.set(
        f.sessionId,
        f.players.map((p) => p.playerId),
      )
    const everyone = new Map<string, string>()
    for (const [sessionId, roster] of rosters) {
      expect(roster).toHaveLength(2)
      for (const p of roster) {
        expect(everyone.get(p), `${p} in two matches`).toBeUndefined()
        everyone.set(p, sessionId)
      }
    }
    expect(everyone.size).toBe(httpPlayers.length + guests.length)
    for (const [i, f] of founds.entries()) {
      expect(everyone.get(guests[i]!.playerId)).toBe(f.sessionId)
      // Exactly one match_found per socket.
      expect(
        collect(sockets[i]!).filter((m) => (m as { type: string }).type === 'match_found'),
      ).toHaveLength(1)
    }
    const rows = await matchRows(q)
    expect(rows).toHaveLength(rosters.size)
    for (const r of rows) expect(sessionCalls.get(r.id)).toHaveLength(1)
  })
})
