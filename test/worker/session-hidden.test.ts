import { runDurableObjectAlarm } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { LogRecord } from '../../workers/core/rules/index.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { pg } from './helpers/boards.ts'
import { ADMIN_KEY, bearer, call, problem } from './helpers/http.ts'
import {
  clearAfterRetention,
  clockAtCreation,
  connect,
  createSession,
  type Frame,
  inObject,
  playerIds,
  sessionObject,
  type TestSocket,
  seenBy,
} from './helpers/session-sockets.ts'

/**
 * Hidden information end to end, with the shipped rock-paper-scissors: a player's move is theirs
 * alone until the round resolves, on every path an event takes to a player.
 */

/** A best-of-1 match with both players connected and welcomed, their `joined` events in. */
async function match() {
  const [alice, bob] = playerIds(2) as [string, string]
  const { sessionId, tokens } = await createSession({
    rules: 'rock-paper-scissors',
    roster: [{ playerId: alice }, { playerId: bob }],
    options: { rounds: 1 },
  })
  const a = await connect(sessionId, tokens[alice]!)
  const b = await connect(sessionId, tokens[bob]!)
  await a.nextOf('welcome')
  await b.nextOf('welcome')
  for (const s of [a, b]) await eventAt(s, 2)
  return { sessionId, tokens, alice, bob, a, b }
}

function eventAt(s: TestSocket, seq: number): Promise<Frame> {
  return s.next((f) => f.type === 'event' && f.seq === seq)
}

async function eventsAs(sessionId: string, token: string): Promise<LogRecord[]> {
  const res = await call(`/v1/sessions/${sessionId}/events?limit=500`, bearer(token))
  expect(res.status).toBe(200)
  return ((await res.json()) as { events: LogRecord[] }).events
}

describe('hidden information (rock-paper-scissors)', () => {
  it('a move is sent whole to its player only, live, in a welcome and in a resume; the round reveals both', async () => {
    const { sessionId, tokens, alice, bob, a, b } = await match()
    a.send({ type: 'action', move: 'rock' })
    expect((await eventAt(a, 3)).event).toEqual({
      kind: 'chosen',
      round: 1,
      player: alice,
      move: 'rock',
    })
    expect((await eventAt(b, 3)).event).toEqual({ kind: 'chosen', round: 1, player: alice })

    // Bob connecting again: the state says Alice chose, not what.
    const b2 = await connect(sessionId, tokens[bob]!)
    const welcome = await b2.nextOf('welcome')
    expect(JSON.stringify(welcome.state)).not.toContain('rock')
    expect((welcome.state as { players: unknown[] }).players).toContainEqual({
      playerId: alice,
      team: 0,
      wins: 0,
      chosen: true,
      move: null,
    })
    // Bob resuming from before the move: the event as Bob sees it, live too.
    const b3 = await connect(sessionId, tokens[bob]!, { since: 2 })
    expect((await eventAt(b3, 3)).event).toEqual({ kind: 'chosen', round: 1, player: alice })
    // Alice resuming gets her own move.
    const a2 = await connect(sessionId, tokens[alice]!, { since: 2 })
    expect((await eventAt(a2, 3)).event).toMatchObject({ player: alice, move: 'rock' })

    b.send({ type: 'action', move: 'scissors' })
    for (const s of [a, b, b2, b3, a2]) {
      expect((await eventAt(s, 4)).event).toMatchObject({
        kind: 'round',
        moves: { [alice]: 'rock', [bob]: 'scissors' },
        winner: alice,
        ended: 'finished',
      })
    }
  })

  it("the log route gives a player their view and no other player's action; an admin the log whole, before and after the archive", async () => {
    const { sessionId, tokens, alice, bob, a, b } = await match()
    a.send({ type: 'action', move: 'paper' })
    await eventAt(b, 3)
    const whole = await eventsAs(sessionId, ADMIN_KEY)
    expect(whole[2]).toMatchObject({
      seq: 3,
      input: { kind: 'action', player: alice, action: { move: 'paper' } },
      event: { kind: 'chosen', player: alice, move: 'paper' },
    })
    const asBob = await eventsAs(sessionId, tokens[bob]!)
    expect(asBob[2]).toEqual({
      seq: 3,
      input: { kind: 'action', player: alice, tick: whole[2]!.input.tick },
      event: { kind: 'chosen', round: 1, player: alice },
    })
    expect(JSON.stringify(asBob)).not.toContain('paper')
    expect(await eventsAs(sessionId, tokens[alice]!)).toEqual(whole)

    // The round resolved: its event is public; Alice's action stays hers in Bob's log.
    b.send({ type: 'action', move: 'paper' })
    await eventAt(a, 4)
    const live = {
      admin: await eventsAs(sessionId, ADMIN_KEY),
      bob: await eventsAs(sessionId, tokens[bob]!),
    }
    expect(live.bob[3]).toEqual(live.admin[3])
    expect(live.bob[3]!.event).toMatchObject({ moves: { [alice]: 'paper', [bob]: 'paper' } })
    expect(live.bob[2]).toEqual(asBob[2])

    // A draw in a best of 1 plays on: Alice wins the next round, and the game ends.
    a.send({ type: 'action', move: 'scissors' })
    await eventAt(b, 5)
    b.send({ type: 'action', move: 'paper' })
    await b.nextOf('ended')
    const ended = await eventsAs(sessionId, ADMIN_KEY)
    const endedAsBob = await eventsAs(sessionId, tokens[bob]!)

    // Archived to Neon and cleared from the object: the same views, now read from Neon.
    await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    const status = await clearAfterRetention(sessionId)
    expect(status?.stage).toBe('done')
    expect(await eventsAs(sessionId, ADMIN_KEY)).toEqual(ended)
    expect(await eventsAs(sessionId, tokens[bob]!)).toEqual(endedAsBob)
    expect(endedAsBob[4]).toEqual({
      seq: 5,
      input: { kind: 'action', player: alice, tick: ended[4]!.input.tick },
      event: { kind: 'chosen', round: 2, player: alice },
    })
  })

  it("rules without viewEvent send every player the same events, and a player's log read leaves out other players' actions all the same", async () => {
    const [p0, p1] = playerIds(2) as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: p0 }, { playerId: p1 }],
    })
    const s0 = await connect(sessionId, tokens[p0]!)
    const s1 = await connect(sessionId, tokens[p1]!)
    await s0.nextOf('welcome')
    await s1.nextOf('welcome')
    s0.send({ type: 'action', action: 'message', data: { secret: 'none' } })
    expect((await eventAt(s1, 1)).event).toEqual((await eventAt(s0, 1)).event)
    const whole = await eventsAs(sessionId, ADMIN_KEY)
    expect(whole[0]).toMatchObject({ input: { player: p0, action: { data: { secret: 'none' } } } })
    // The sender reads their own action; the other player the event, which carries the data.
    expect(await eventsAs(sessionId, tokens[p0]!)).toEqual(whole)
    const other = await eventsAs(sessionId, tokens[p1]!)
    expect(other).toEqual(seenBy(whole, p1))
    expect(other[0]!.input).toEqual({ kind: 'action', player: p0, tick: whole[0]!.input.tick })
    expect(other[0]!.event).toEqual(whole[0]!.event)
  })
})

describe('hidden information against the clock (rock-paper-scissors)', () => {
  it('a round times out by the alarm, a move sent for it too late is refused, and a resume in chunks gives the live view', async () => {
    const [alice, bob] = playerIds(2) as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'rock-paper-scissors',
      roster: [{ playerId: alice }, { playerId: bob }],
      options: { rounds: 3, roundSeconds: 5 },
    })
    // The object's clock stands still at the session's creation until the test moves it.
    const createdAt = await clockAtCreation(sessionId)
    const a = await connect(sessionId, tokens[alice]!)
    await a.nextOf('welcome')
    await eventAt(a, 1)
    const b = await connect(sessionId, tokens[bob]!)
    await b.nextOf('welcome')
    // The second one in starts the clock, and its event says when the first round ends.
    expect((await eventAt(b, 2)).event).toEqual({
      kind: 'joined',
      player: bob,
      awaiting: [],
      endsAt: 5_000,
    })
    a.send({ type: 'action', move: 'scissors', round: 1 })
    expect((await eventAt(b, 3)).event).toEqual({ kind: 'chosen', round: 1, player: alice })

    // Past the deadline, the alarm times Bob out: Alice's move revealed, the round hers.
    await inObject(sessionId, (inst) => {
      inst.now = () => createdAt + 5_001
    })
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    expect((await eventAt(b, 4)).event).toMatchObject({
      kind: 'round',
      round: 1,
      moves: { [alice]: 'scissors', [bob]: null },
      timedOut: [bob],
      winner: alice,
      endsAt: 10_000,
    })
    // Bob's move for round 1, arriving now: refused, nothing logged.
    b.send({ type: 'action', move: 'rock', round: 1 })
    expect(await b.nextOf('error')).toMatchObject({ code: 'too_late' })
    b.send({ type: 'action', move: 'rock', round: 2 })
    expect((await eventAt(a, 5)).event).toEqual({ kind: 'chosen', round: 2, player: bob })
    expect((await eventAt(b, 5)).event).toMatchObject({ player: bob, move: 'rock' })

    // Alice resuming from the start, a record per turn: the events exactly as she saw them live.
    await inObject(sessionId, (inst) => {
      inst.resumeChunk = 1
    })
    const a2 = await connect(sessionId, tokens[alice]!, { since: 0 })
    for (let seq = 1; seq <= 5; seq++) {
      const live = a.frames.find((f) => f.type === 'event' && f.seq === seq)
      expect(await eventAt(a2, seq)).toEqual(live)
    }
  })

  it('rules whose viewEvent throws close the socket it failed for, send that player nothing of the event, and start their grace, resuming too', async () => {
    const { sessionId, tokens, alice, bob, a, b } = await match()
    const graces = () =>
      inObject(sessionId, (_inst, state) =>
        state.storage.sql
          .exec<{ player_id: string }>('SELECT player_id FROM timers ORDER BY player_id')
          .toArray()
          .map((r) => r.player_id),
      )
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: { viewEvent: unknown } }
      self.rules = {
        ...self.rules,
        viewEvent: () => {
          throw new Error('a bug in the rules')
        },
      }
    })
    a.send({ type: 'action', move: 'paper' })
    for (const s of [a, b]) {
      expect(await s.whenClosed()).toEqual({ code: 1011, reason: 'event view failed' })
      expect(s.frames.filter((f) => f.type === 'event' && f.seq! > 2)).toEqual([])
    }
    // The move itself was accepted and logged: the admin's log has it.
    const whole = await eventsAs(sessionId, ADMIN_KEY)
    expect(whole[2]).toMatchObject({ event: { kind: 'chosen', player: alice, move: 'paper' } })
    // Both players' sockets went as their clients' would: each one's grace runs.
    expect(await graces()).toEqual([alice, bob].sort())
    // A resume whose missed events cannot be viewed: closed at once, and the player is not
    // counted back (their grace still runs, nothing logged for the connection).
    const resumed = await connect(sessionId, tokens[bob]!, { since: 2 })
    expect(await resumed.whenClosed()).toEqual({ code: 1011, reason: 'event view failed' })
    expect(await graces()).toEqual([alice, bob].sort())
    expect(await eventsAs(sessionId, ADMIN_KEY)).toEqual(whole)
  })
})

describe('hidden information in the archive', () => {
  it("a session whose rules this deployment no longer has: a player's read of its archived log is 503, an admin's whole", async () => {
    const [alice, bob] = playerIds(2) as [string, string]
    const sessionId = `gone-rules-${crypto.randomUUID()}`
    const record = {
      seq: 1,
      // Not a word the answer could hold otherwise ('ace' was in a request id's hex).
      input: { kind: 'action', player: alice, tick: 0, action: { secret: 'queen-of-spades' } },
      event: { kind: 'drew', player: alice, card: 'queen-of-spades' },
    }
    await pg()`insert into game_sessions (id, rules, roster, status, ended_at)
      values (${sessionId}, 'retired-card-game',
        ${JSON.stringify([
          { playerId: alice, team: 0 },
          { playerId: bob, team: 1 },
        ])}::jsonb, 'finished', now())`
    await pg()`insert into session_logs (session_id, seq, record)
      values (${sessionId}, 1, ${JSON.stringify(record)}::jsonb)`
    const asBob = await call(
      `/v1/sessions/${sessionId}/events`,
      bearer((await issuePlayerToken(env, bob)).token),
    )
    const refused = await problem(asBob)
    expect(refused).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(JSON.stringify(refused.body)).not.toContain('queen-of-spades')
    expect(await eventsAs(sessionId, ADMIN_KEY)).toEqual([record])
  })
})
