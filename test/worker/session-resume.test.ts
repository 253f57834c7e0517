import { env } from 'cloudflare:workers'
import { evictDurableObject, runDurableObjectAlarm } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { MAX_RESUME_EVENTS as SDK_MAX_RESUME_EVENTS } from '../../client/src/sessions.ts'
import { GRACE_MS, JOIN_GRACE_MS, MAX_RESUME_EVENTS } from '../../durable-objects/game-session.ts'
import {
  getRules,
  replay,
  type AnyRules,
  type LogRecord,
  type MatchState,
} from '../../workers/core/rules/index.ts'
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
import {
  clockAtCreation,
  connect,
  createSession,
  type Frame,
  inObject,
  playerIds,
  sessionObject,
  upgrade,
  seenBy,
  TestSocket,
} from './helpers/session-sockets.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import type { GameSession } from '../../durable-objects/game-session.ts'

const matchOf = (sessionId: string) => inObject(sessionId, (inst) => inst.current()!.match)

/** Waits (bounded) until the object holds a grace timer for `player`. */
async function timerSet(sessionId: string, player: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const n = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', player)
          .one().n,
    )
    if (n === 1) return
    await new Promise((r) => setTimeout(r, 10))
  }
  throw new Error(`no grace timer for ${player}`)
}

/** Moves the object's clock `ms` ahead and fires its alarm now. */
async function advance(sessionId: string, ms: number): Promise<void> {
  await inObject(sessionId, (inst) => {
    const base = inst.now()
    inst.now = () => base + ms
  })
  expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
}

function eventSeqs(s: TestSocket): number[] {
  return s.frames.filter((f) => f.type === 'event').map((f) => f.seq!)
}

async function untilSeq(s: TestSocket, seq: number): Promise<void> {
  if (!s.frames.some((f) => f.type === 'event' && f.seq === seq)) {
    await s.next((f) => f.type === 'event' && f.seq === seq)
  }
}

/** A session of `n` players under `rules` (with `options`), each connected and welcomed. */
async function everyoneIn(n: number, rules: string, options?: Record<string, unknown>) {
  const players = playerIds(n)
  const { sessionId, tokens } = await createSession({
    rules,
    roster: players.map((playerId) => ({ playerId })),
    ...(options ? { options } : {}),
  })
  const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
  for (const s of sockets) await s.nextOf('welcome')
  return { players, sessionId, tokens, sockets }
}

/**
 * A timed dice-race session of `n` players, each connected (their `joined` events are seqs 1 to
 * `n`) while the object's clock stands at the session's creation: its turn clock starts at tick 0.
 */
async function timedEveryoneIn(n: number, options: Record<string, unknown>) {
  const players = playerIds(n)
  const { sessionId, tokens } = await createSession({
    rules: 'dice-race',
    roster: players.map((playerId) => ({ playerId })),
    options,
  })
  const createdAt = await clockAtCreation(sessionId)
  const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
  for (const s of sockets) await s.nextOf('welcome')
  for (const s of sockets) await untilSeq(s, n)
  await inObject(sessionId, (inst) => {
    inst.now = () => Date.now()
  })
  return { players, sessionId, tokens, sockets, createdAt }
}

/**
 * A timed dice-race of three (5 s turns) whose third player leaves 1 s in, with a 600 s grace:
 * 120 turns' deadlines (one catch-up plays 100) pass before it ends. The object's clock stops at
 * 1 s, so a slow machine cannot move the grace's end.
 */
async function thirdLeavesAtOneSecond() {
  const game = await timedEveryoneIn(3, { target: 10_000, turnSeconds: 5 })
  await inObject(game.sessionId, (inst) => {
    inst.now = () => game.createdAt + 1000
    inst.graceMs = 600_000
  })
  game.sockets[2]!.close()
  await timerSet(game.sessionId, game.players[2]!)
  return game
}

/** A relay session of `n` players, each connected and welcomed. */
const relayWithEveryone = (n: number) => everyoneIn(n, 'relay')

describe('reconnecting', () => {
  it('with ?since= gets exactly the missed events, then live ones, even while events keep coming', async () => {
    const { players, sessionId, tokens, sockets } = await relayWithEveryone(3)
    const [a, b, c] = sockets
    a!.send({ type: 'action', action: 'message', data: 1 })
    a!.send({ type: 'action', action: 'message', data: 2 })
    await untilSeq(c!, 2)
    c!.close()
    for (let i = 3; i <= 6; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(b!, 6)
    // Reconnect while A keeps sending: the resume must interleave with live events cleanly.
    for (let i = 7; i <= 20; i++) a!.send({ type: 'action', action: 'message', data: i })
    const c2 = await connect(sessionId, tokens[players[2]!]!, { since: 2 })
    const resumed = await c2.nextOf('resumed')
    expect(resumed.since).toBe(2)
    expect(resumed.seq).toBeGreaterThanOrEqual(6)
    for (let i = 21; i <= 25; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(c2, 25)
    await untilSeq(b!, 25)
    expect(eventSeqs(c2)).toEqual(Array.from({ length: 23 }, (_, i) => i + 3))
    expect(c2.frames[0]).toEqual(resumed)
    expect(c2.frames.some((f) => f.type === 'welcome')).toBe(false)
    // The same events as a socket that never left saw, in the same order.
    const bEvents = b!.frames.filter((f) => f.type === 'event' && f.seq! >= 3)
    expect(c2.frames.filter((f) => f.type === 'event')).toEqual(bEvents)
    for (const s of [a!, b!, c2]) s.close()
  })

  it('a long resume goes out a chunk per turn, other players’ events interleaved, still exactly once and in order', async () => {
    const { players, sessionId, tokens, sockets } = await relayWithEveryone(3)
    const [a, b, c] = sockets
    c!.close()
    for (let i = 1; i <= 30; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(b!, 30)
    // Three events per turn: C's resume of 30 takes ten turns, while A keeps sending.
    const chunks: number[] = []
    await inObject(sessionId, (inst) => {
      inst.resumeChunk = 3
      const missed = inst as unknown as { sendMissed(ws: WebSocket, after: number): number | null }
      const send = missed.sendMissed.bind(inst)
      missed.sendMissed = (ws, after) => {
        chunks.push(after)
        return send(ws, after)
      }
    })
    const c2 = await connect(sessionId, tokens[players[2]!]!, { since: 0 })
    for (let i = 31; i <= 38; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(c2, 38)
    await untilSeq(b!, 38)
    expect(eventSeqs(c2)).toEqual(Array.from({ length: 38 }, (_, i) => i + 1))
    expect(c2.frames.filter((f) => f.type === 'event')).toEqual(
      b!.frames.filter((f) => f.type === 'event'),
    )
    // A chunk at a time: 0, 3, 6, … (at least the 30 logged before it began, three by three).
    expect(chunks.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, i) => i * 3))
    // Then live: the next event reaches C once.
    a!.send({ type: 'action', action: 'message', data: 39 })
    await untilSeq(c2, 39)
    expect(eventSeqs(c2).filter((seq) => seq === 39)).toHaveLength(1)
    for (const s of [a!, b!, c2]) s.close()
  })

  it('a resume further behind than a resume may send is 422 naming since, and sends nothing; from within it, every event after since', async () => {
    const { players, sessionId, tokens, sockets } = await relayWithEveryone(2)
    const [a, b] = sockets
    b!.close()
    for (let i = 1; i <= 12; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(a!, 12)
    // The SDK reads the log first when it is further behind than this.
    expect(SDK_MAX_RESUME_EVENTS).toBe(MAX_RESUME_EVENTS)
    await inObject(sessionId, (inst) => {
      inst.maxResume = 5
    })
    const token = tokens[players[1]!]!
    const refused = await upgrade(sessionId, token, { since: 6 })
    expect(refused.webSocket).toBeFalsy()
    const p = await problem(refused)
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(p.body.errors).toEqual([{ path: 'since', message: '7 to 12' }])
    // The older events come from the log; the resume then picks up from the last one read.
    const page = (await (
      await call(`/v1/sessions/${sessionId}/events?from=7&limit=1`, bearer(token))
    ).json()) as { events: { seq: number }[] }
    expect(page.events.map((e) => e.seq)).toEqual([7])
    const back = await connect(sessionId, token, { since: 7 })
    expect(await back.nextOf('resumed')).toMatchObject({ since: 7, seq: 12 })
    await untilSeq(back, 12)
    expect(eventSeqs(back)).toEqual([8, 9, 10, 11, 12])
    for (const s of [a!, back]) s.close()
  })

  it('a resume is held to the cap after the clock played the turns that ran out: they are missed events too', async () => {
    const { players, sessionId, tokens, sockets, createdAt } = await timedEveryoneIn(2, {
      target: 10_000,
      turnSeconds: 5,
    })
    sockets[1]!.close()
    await timerSet(sessionId, players[1]!)
    // Four turns run out (5, 10, 15 and 20 s in) before the resume from seq 2 comes.
    await inObject(sessionId, (inst) => {
      inst.maxResume = 3
      inst.now = () => createdAt + 20_000
    })
    const refused = await upgrade(sessionId, tokens[players[1]!]!, { since: 2 })
    expect(refused.webSocket).toBeFalsy()
    const p = await problem(refused)
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(p.body.errors).toEqual([{ path: 'since', message: '3 to 6' }])
    sockets[0]!.close()
  })

  it("a player's resumes send at most a minute's budget of missed events, refilled as time passes: past it a resume is 429 with Retry-After and sends nothing; a welcome is not counted", async () => {
    const { players, sessionId, tokens, sockets } = await relayWithEveryone(2)
    const [a, b] = sockets
    b!.close()
    for (let i = 1; i <= 6; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(a!, 6)
    // A fixed minute, 20 s in: each resume from 0 resends 6 events, and the budget is 15.
    const minute = Math.floor(Date.now() / 60_000) * 60_000
    await inObject(sessionId, (inst) => {
      inst.resumedPerMinute = 15
      inst.now = () => minute + 20_000
    })
    const token = tokens[players[1]!]!
    for (let i = 0; i < 2; i++) {
      const back = await connect(sessionId, token, { since: 0 })
      await untilSeq(back, 6)
      expect(eventSeqs(back)).toEqual([1, 2, 3, 4, 5, 6])
      back.close()
    }
    const refused = await upgrade(sessionId, token, { since: 0 })
    expect(refused.webSocket).toBeFalsy()
    // 3 of the 15 left, 6 asked: the 3 more come back in 12 s (15 a minute).
    expect(refused.headers.get('retry-after')).toBe('12')
    expect(await problem(refused)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    // Within the budget still: 3 events, and a welcome (no since), which sends a snapshot.
    const near = await connect(sessionId, token, { since: 3 })
    await untilSeq(near, 6)
    expect(eventSeqs(near)).toEqual([4, 5, 6])
    near.close()
    const fresh = await connect(sessionId, token)
    expect(await fresh.nextOf('welcome')).toMatchObject({ seq: 6 })
    fresh.close()
    // The other player's budget is their own.
    a!.close()
    const other = await connect(sessionId, tokens[players[0]!]!, { since: 0 })
    await untilSeq(other, 6)
    other.close()
    // 40 s on, 10 are back: a resume of 6 goes (the log's last 6: the deadlines those 40 s
    // passed, played first, may have logged more).
    const seq = await inObject(sessionId, async (inst) => {
      inst.now = () => minute + 60_000
      await inst.alarm()
      return inst.current()!.match.seq
    })
    const later = await connect(sessionId, token, { since: seq - 6 })
    await untilSeq(later, seq)
    later.close()
    await later.whenClosed()
    // A second later (a new calendar minute, which no longer means a new budget): 4 and a
    // quarter left, so 6 more wait 7 s.
    await inObject(sessionId, (inst) => {
      inst.now = () => minute + 61_000
    })
    const again = await upgrade(sessionId, token, { since: seq - 6 })
    expect(again.webSocket).toBeFalsy()
    expect(again.headers.get('retry-after')).toBe('7')
    await again.body?.cancel()
    // The object sleeps (an idle one does within seconds) and wakes with nothing in memory
    // (here its memory is emptied: an eviction waits on the sockets' closes, 10 s locally): the
    // budget is as it was.
    await inObject(sessionId, (inst) => {
      ;(inst as unknown as { resumeBudgets: Map<string, unknown> }).resumeBudgets.clear()
    })
    const woken = await upgrade(sessionId, token, { since: seq - 6 })
    expect(woken.webSocket).toBeFalsy()
    expect(woken.headers.get('retry-after')).toBe('7')
    await woken.body?.cancel()
  })

  it('a long resume of a game that has ended sends every event, then `ended`, then closes', async () => {
    const { players, sessionId, tokens, sockets } = await relayWithEveryone(2)
    const [a, b] = sockets
    for (let i = 1; i <= 10; i++) a!.send({ type: 'action', action: 'message', data: i })
    await untilSeq(b!, 10)
    a!.close()
    b!.close()
    for (const p of players) await timerSet(sessionId, p)
    // Everyone away past the grace: a relay ends.
    await advance(sessionId, GRACE_MS + 1000)
    const info = (await inObject(sessionId, (inst) => inst.info())) as {
      status: string
      seq: number
    }
    expect(info.status).toBe('finished')
    const seq = info.seq
    await inObject(sessionId, (inst) => {
      inst.resumeChunk = 4
    })
    const again = await connect(sessionId, tokens[players[0]!]!, { since: 0 })
    const ended = await again.nextOf('ended')
    expect(eventSeqs(again)).toEqual(Array.from({ length: seq }, (_, i) => i + 1))
    expect(again.frames.at(-1)).toEqual(ended)
    expect((await again.whenClosed()).code).toBe(1000)
  })

  it('forfeits players absent past the grace period (and no-shows), and ends by forfeit', async () => {
    const players = playerIds(3)
    const [pa, pb, pc] = players as [string, string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1000 },
    })
    const a = await connect(sessionId, tokens[pa]!)
    const b = await connect(sessionId, tokens[pb]!)
    await a.nextOf('welcome')
    await b.nextOf('welcome')
    a.roll()
    await untilSeq(b, 1)
    b.roll()
    await untilSeq(a, 2)
    // C never connected: past the join grace, C forfeits and leaves the turn order.
    await advance(sessionId, JOIN_GRACE_MS + 1000)
    await untilSeq(a, 3)
    const forfeit = a.frames.find((f) => f.seq === 3)!.event
    expect(forfeit).toEqual({ kind: 'forfeit', player: pc, next: pa, winner: null, ended: null })
    // B leaves; coming back within the grace period changes nothing…
    b.close()
    await timerSet(sessionId, pb)
    const b2 = await connect(sessionId, tokens[pb]!, { since: 3 })
    await b2.nextOf('resumed')
    await runDurableObjectAlarm(sessionObject(sessionId))
    a.roll()
    await untilSeq(b2, 4)
    expect((b2.frames.find((f) => f.seq === 4)!.event as { kind: string }).kind).toBe('roll')
    // …leaving for longer than the grace period forfeits: A is the last one in, and wins.
    b2.close()
    await timerSet(sessionId, pb)
    await advance(sessionId, 2 * JOIN_GRACE_MS + GRACE_MS + 1000)
    const end = await a.nextOf('ended')
    expect(end.result).toMatchObject({ reason: 'forfeit', winner: pa })
    expect(
      a.frames.find((f) => f.seq === 5)!.event as { kind: string; player: string },
    ).toMatchObject({
      kind: 'forfeit',
      player: pb,
    })
    expect((await a.whenClosed()).code).toBe(1000)
    const info = await inObject(sessionId, (inst) => inst.info())
    expect(info).toMatchObject({ status: 'finished', seq: 5 })
  })

  it("rules that throw on a player's absence (a bug) fail each alarm until they take it: the grace's end is tried again, not lost", async () => {
    const { players, sessionId, sockets } = await relayWithEveryone(2)
    const [, pb] = players as [string, string]
    let failures = 2
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      const onAbsent = self.rules.onAbsent.bind(self.rules)
      self.rules = {
        ...self.rules,
        onAbsent: (state: unknown, ctx: unknown) => {
          if (failures-- > 0) throw new Error('a bug in the rules')
          return onAbsent(state as never, ctx as never)
        },
      } as AnyRules
    })
    const stored = () =>
      inObject(sessionId, (_inst, state) => ({
        timers: state.storage.sql
          .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', pb)
          .one().n,
        absent: state.storage.sql
          .exec<{ n: number }>('SELECT count(*) AS n FROM absent WHERE player_id = ?', pb)
          .one().n,
      }))
    sockets[1]!.close()
    await timerSet(sessionId, pb)
    const seqBefore = (await matchOf(sessionId)).seq
    await advance(sessionId, GRACE_MS + 1000)
    expect(await stored()).toEqual({ timers: 1, absent: 0 })
    await advance(sessionId, GRACE_MS + 2000)
    expect(await stored()).toEqual({ timers: 1, absent: 0 })
    expect((await matchOf(sessionId)).seq).toBe(seqBefore)
    // Mended (here: the third call): the absence is taken, logged and heard.
    await advance(sessionId, GRACE_MS + 3000)
    expect(await stored()).toEqual({ timers: 0, absent: 1 })
    const heard = await sockets[0]!.next((f) => f.type === 'event' && f.seq === seqBefore + 1)
    expect(heard.event).toMatchObject({ kind: 'absent', player: pb })
  })

  it('dice-race with turnSeconds: the turn clock waits for every player to connect, however long the first waits', async () => {
    const players = playerIds(2)
    const [pa, pb] = players as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1000, turnSeconds: 5 },
    })
    const createdAt = await clockAtCreation(sessionId)
    const a = await connect(sessionId, tokens[pa]!)
    await a.nextOf('welcome')
    await untilSeq(a, 1)
    // A minute on, A's turn has not run out: the alarm's run plays no deadline.
    await inObject(sessionId, (inst) => {
      inst.now = () => createdAt + 60_000
    })
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const b = await connect(sessionId, tokens[pb]!)
    await b.nextOf('welcome')
    await untilSeq(a, 2)
    const log = await inObject(sessionId, (inst) => inst.events(1, 10, null))
    if (!log.ok) throw new Error('no log')
    expect(log.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ['connect', 0],
      ['connect', 60_000],
    ])
    expect(log.events.map((r) => r.event)).toEqual([
      { kind: 'joined', player: pa, awaiting: [pb] },
      { kind: 'joined', player: pb, awaiting: [] },
    ])
    // B's arrival started A's turn: the alarm comes 5 s after it.
    const alarm = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(alarm).toBe(createdAt + 65_000)
    for (const s of [a, b]) s.close()
  })

  it('dice-race with turnSeconds: the alarm comes for the turn’s deadline alone; a late one plays every turn that ran out, each at its own moment', async () => {
    const { players, sessionId, sockets, createdAt } = await timedEveryoneIn(3, {
      target: 1000,
      turnSeconds: 5,
    })
    const [pa, pb, pc] = players as [string, string, string]
    const [a, b, c] = sockets
    // Each player's arrival is an event; the last one's started the turn clock.
    const arrivals = await inObject(sessionId, (inst) => inst.events(1, 3, null))
    if (!arrivals.ok) throw new Error('no log')
    expect(arrivals.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ['connect', 0],
      ['connect', 0],
      ['connect', 0],
    ])
    expect(arrivals.events[2]!.event).toMatchObject({ kind: 'joined', awaiting: [] })
    // Woken for the first turn's deadline (5 s in), not for every tick of the game's clock.
    const alarm = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(alarm).toBe(createdAt + 5000)
    // The alarm comes 12 s in: a's turn ran out at 5 s and b's at 10 s; both are rolled for, at
    // their deadlines, and it is c's turn.
    await advance(sessionId, 12_000 - (Date.now() - createdAt))
    await untilSeq(c!, 5)
    const records = await inObject(sessionId, (inst) => inst.events(4, 10, null))
    if (!records.ok) throw new Error('no log')
    expect(records.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ['tick', 5000],
      ['tick', 10_000],
    ])
    expect(records.events.map((r) => r.event)).toMatchObject([
      { kind: 'roll', player: pa, next: pb, auto: true },
      { kind: 'roll', player: pb, next: pc, auto: true },
    ])
    // b's roll now is refused: b's turn is over. c rolls in time, as usual.
    b!.roll()
    expect((await b!.nextOf('error')).code).toBe('not_your_turn')
    c!.roll()
    await untilSeq(a!, 6)
    expect(a!.frames.find((f) => f.seq === 6)!.event).toMatchObject({ kind: 'roll', player: pc })
    expect(a!.frames.find((f) => f.seq === 6)!.event).not.toHaveProperty('auto')
  })

  it('dice-race with turnSeconds: after more turns ran out than one catch-up plays, an action is refused (catching_up) and a connection 503 until the alarm has played them all', async () => {
    const { players, sessionId, tokens, sockets, createdAt } = await timedEveryoneIn(2, {
      target: 10_000,
      turnSeconds: 5,
    })
    const [pa, pb] = players as [string, string]
    const [a, b] = sockets as [TestSocket, TestSocket]
    // Seqs 1 and 2 are the players' arrivals. The alarm stalls for 250 turns' deadlines. A's frame plays the first 100 (a's turn again
    // after them), yet 150 more are due before A's roll could count.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      inst.now = () => createdAt + 250 * 5000 + 2000
    })
    a.roll()
    expect((await a.nextOf('error')).code).toBe('catching_up')
    await untilSeq(b, 102)
    expect(eventSeqs(b).at(-1)).toBe(102)
    // A connection plays 100 more, and is refused: try again in a moment. B's grace is not
    // touched (no socket was opened to close).
    const early = await upgrade(sessionId, tokens[pb]!, { since: 102 })
    expect(early.webSocket).toBeFalsy()
    expect(early.headers.get('retry-after')).toBe('1')
    expect(await problem(early)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    await untilSeq(b, 202)
    // The alarm, due at once, plays the last 50; then A's turn is A's again, in time.
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    await untilSeq(b, 252)
    a.roll()
    await untilSeq(b, 253)
    const records = await inObject(sessionId, (inst) => inst.events(252, 2, null))
    if (!records.ok) throw new Error('no log')
    expect(records.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ['tick', 250 * 5000],
      ['action', 250 * 5000 + 2000],
    ])
    expect(records.events[1]!.event).toMatchObject({ kind: 'roll', player: pa })
    const back = await connect(sessionId, tokens[pb]!, { since: 253 })
    expect(await back.nextOf('resumed')).toMatchObject({ since: 253, seq: 253 })
    back.close()
  })

  it("dice-race with turnSeconds: an admin's end after more turns ran out than one catch-up plays comes after all of them, and after a forfeit due among them", async () => {
    const { players, sessionId, sockets, createdAt } = await thirdLeavesAtOneSecond()
    const pc = players[2]!
    const [a, b] = sockets as [TestSocket, TestSocket, TestSocket]
    const graceEnds = createdAt + 601_000
    // The alarm stalls past 250 turns' deadlines (C's grace ends at the 120th); the admin ends
    // the game then.
    const endAt = createdAt + 250 * 5000 + 2000
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      inst.now = () => endAt
    })
    const res = await call(`/v1/admin/sessions/${sessionId}/end`, json('POST', {}, ADMIN_KEY))
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ status: 'finished', result: { reason: 'cancelled' } })
    const records = await inObject(sessionId, (inst) => inst.events(4, 500, null))
    if (!records.ok) throw new Error('no log')
    const kinds = records.events.map((r) => [r.input.kind, r.input.tick])
    // 120 turns, C's forfeit at its grace's end, the other 130 turns, then the end, at its time.
    expect(kinds.slice(0, 120)).toEqual(
      Array.from({ length: 120 }, (_, k) => ['tick', (k + 1) * 5000]),
    )
    expect(kinds[120]).toEqual(['absent', graceEnds - createdAt])
    expect(records.events[120]!.event).toMatchObject({ kind: 'forfeit', player: pc })
    expect(kinds.slice(121, 251)).toEqual(
      Array.from({ length: 130 }, (_, k) => ['tick', (k + 121) * 5000]),
    )
    expect(kinds.slice(251)).toEqual([['end', endAt - createdAt]])
    for (const s of [a, b]) s.close()
  })

  it("dice-race with turnSeconds: an admin's end owed more turns than one request plays is 503 with Retry-After, and ends once they are played", async () => {
    const { sessionId, createdAt } = await timedEveryoneIn(2, { target: 10_000, turnSeconds: 5 })
    const turns = 2_500
    const endAt = createdAt + turns * 5000 + 2000
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      inst.now = () => endAt
    })
    const end = () => call(`/v1/admin/sessions/${sessionId}/end`, json('POST', {}, ADMIN_KEY))
    const first = await end()
    expect(first.headers.get('retry-after')).toBe('1')
    expect(await problem(first)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    let again = await end()
    for (let i = 0; i < 5 && again.status === 503; i++) again = await end()
    expect(again.status).toBe(200)
    expect(await again.json()).toMatchObject({
      status: 'finished',
      result: { reason: 'cancelled' },
    })
    const match = await inObject(sessionId, (inst) => inst.current()!.match)
    const last = await inObject(sessionId, (inst) => inst.events(match.seq - 1, 2, null))
    if (!last.ok) throw new Error('no log')
    // Every turn, then the end: two arrivals, 2,500 ticks, the end.
    expect(match.seq).toBe(2 + turns + 1)
    expect(last.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ['tick', turns * 5000],
      ['end', endAt - createdAt],
    ])
  })

  it('dice-race with turnSeconds: a grace that ended after more turns than one catch-up plays ends after every turn before it, in game time', async () => {
    const { players, sessionId, sockets, createdAt } = await thirdLeavesAtOneSecond()
    const [pa, pb, pc] = players as [string, string, string]
    const [a, b] = sockets as [TestSocket, TestSocket, TestSocket]
    const graceEnds = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql
          .exec<{ due: number }>('SELECT due FROM timers WHERE player_id = ?', pc)
          .one().due,
    )
    expect(graceEnds).toBe(createdAt + 601_000)
    const graceTick = graceEnds - createdAt
    // The alarm stalls until 20 s past the grace's end. A's frame runs the clock: 100 deadlines,
    // and the grace's end must wait for the other 20.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      inst.now = () => graceEnds + 20_000
    })
    a.roll()
    expect((await a.nextOf('error')).code).toBe('catching_up')
    await untilSeq(b, 103)
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    // After the three arrivals: 120 turns, C's forfeit at its grace's end, then 4 more turns
    // (A's and B's alone).
    await untilSeq(b, 128)
    const records = await inObject(sessionId, (inst) => inst.events(4, 200, null))
    if (!records.ok) throw new Error('no log')
    expect(records.events.map((r) => [r.input.kind, r.input.tick])).toEqual([
      ...Array.from({ length: 120 }, (_, k) => ['tick', (k + 1) * 5000]),
      ['absent', graceTick],
      ...[605_000, 610_000, 615_000, 620_000].map((t) => ['tick', t]),
    ])
    const rollers = records.events.map((r) => (r.event as { player: string }).player)
    expect(rollers.slice(0, 120)).toEqual(
      Array.from({ length: 120 }, (_, k) => [pa, pb, pc][k % 3]),
    )
    expect(records.events[120]!.event).toMatchObject({ kind: 'forfeit', player: pc })
    expect(rollers.slice(121)).toEqual([pa, pb, pa, pb])
  })

  it('a player whose grace ended before a late alarm forfeits even if they reconnect first', async () => {
    const { players, sessionId, tokens, sockets } = await everyoneIn(2, 'dice-race', {
      target: 1000,
    })
    const [pa, pb] = players as [string, string]
    const [a, b] = sockets as [TestSocket, TestSocket]
    b.close()
    await timerSet(sessionId, pb)
    // B's grace ends and the alarm that should see it has not run when B comes back.
    await inObject(sessionId, async (inst, state) => {
      await state.storage.deleteAlarm()
      const base = inst.now()
      inst.now = () => base + GRACE_MS + 1000
    })
    const back = await connect(sessionId, tokens[pb]!, { since: 0 })
    const ended = await back.nextOf('ended')
    expect(ended.result).toMatchObject({ reason: 'forfeit', winner: pa })
    // Resumed from 0: the forfeit is the one event, sent once.
    expect(eventSeqs(back)).toEqual([1])
    expect(back.frames.find((f) => f.type === 'event' && f.seq === 1)!.event).toMatchObject({
      kind: 'forfeit',
      player: pb,
    })
    expect((await a.nextOf('ended')).result).toMatchObject({ reason: 'forfeit', winner: pa })
  })
})

describe('eviction', () => {
  it('resumes mid-game from the snapshot and log tail with the same state; hibernated sockets go on', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1000 },
    })
    await inObject(sessionId, (inst) => {
      inst.snapshotEvery = 3
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    for (let i = 0; i < 7; i++) {
      sockets[i % 2]!.roll()
      await untilSeq(sockets[0]!, i + 1)
    }
    const before = await matchOf(sessionId)
    expect(before.seq).toBe(7)
    const snapshotSeq = await inObject(
      sessionId,
      (_i, state) =>
        (
          JSON.parse(
            state.storage.sql
              .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'snapshot'`)
              .one().value,
          ) as MatchState
        ).seq,
    )
    expect(snapshotSeq).toBe(6)

    await evictDurableObject(sessionObject(sessionId), { webSockets: 'hibernate' })
    expect(await matchOf(sessionId)).toEqual(before)
    // The hibernated sockets still work: the next player rolls, both see seq 8.
    sockets[1]!.roll()
    await untilSeq(sockets[0]!, 8)
    await untilSeq(sockets[1]!, 8)
    const at8 = await matchOf(sessionId)

    await evictDurableObject(sessionObject(sessionId), { webSockets: 'close' })
    await sockets[0]!.whenClosed()
    expect(await matchOf(sessionId)).toEqual(at8)
    const again = await Promise.all(
      players.map((p) => connect(sessionId, tokens[p]!, { since: 8 })),
    )
    for (const s of again) expect(await s.nextOf('resumed')).toMatchObject({ since: 8, seq: 8 })
    again[0]!.roll()
    await untilSeq(again[1]!, 9)
    expect(eventSeqs(again[1]!)).toEqual([9])
    for (const s of again) s.close()
  })
})

describe('the event log', () => {
  it('is served a page at a time to players and admins, and replays to the live state', async () => {
    const players = playerIds(3)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 25 },
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    let turn: string | null = players[0]!
    let rolls = 0
    while (turn !== null && rolls < 11) {
      sockets[players.indexOf(turn)]!.roll()
      const e: Frame = await sockets[0]!.nextOf('event')
      turn = (e.event as { next: string | null }).next
      rolls++
    }
    const events: LogRecord[] = []
    let from: number | null = 1
    let pages = 0
    while (from !== null && pages < 50) {
      const res = await call(
        `/v1/sessions/${sessionId}/events?from=${from}&limit=4`,
        bearer(tokens[players[1]!]!),
      )
      expect(res.status).toBe(200)
      const page = (await res.json()) as { events: LogRecord[]; nextFrom: number | null }
      expect(page.events.length).toBeLessThanOrEqual(4)
      events.push(...page.events)
      from = page.nextFrom
      pages++
    }
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: rolls }, (_, i) => i + 1))
    expect(pages).toBe(Math.ceil(rolls / 4))
    // Every socket saw these very events.
    const seen = sockets[2]!.frames.filter((f) => f.type === 'event')
    expect(seen.map((f) => f.event)).toEqual(events.map((e) => e.event))

    // The admin's log is whole, and replays to the live state; a player's is the same but for
    // other players' actions.
    const whole = (await (
      await call(`/v1/sessions/${sessionId}/events?limit=500`, bearer(ADMIN_KEY))
    ).json()) as { events: LogRecord[] }
    expect(events).toEqual(seenBy(whole.events, players[1]!))
    const { match, setup } = await inObject(sessionId, (inst) => inst.current()!)
    const replayed = replay(
      getRules('dice-race')!,
      {
        roster: setup.roster,
        seed: setup.seed,
        options: setup.options,
      },
      whole.events,
    )
    expect(replayed).toEqual(match)

    const admin = await call(`/v1/sessions/${sessionId}/events?limit=2`, bearer(ADMIN_KEY))
    expect(((await admin.json()) as { events: LogRecord[] }).events.map((e) => e.seq)).toEqual([
      1, 2,
    ])
    const outsider = await newGuest()
    const refused = await call(`/v1/sessions/${sessionId}/events`, bearer(outsider.token))
    expect((await problem(refused)).status).toBe(403)
    const tooMany = await call(`/v1/sessions/${sessionId}/events?limit=501`, bearer(ADMIN_KEY))
    expect((await problem(tooMany)).status).toBe(422)
    for (const s of sockets) s.close()
  })

  it('a player reads at most SESSION_EVENT_READS_PER_MINUTE pages a minute: past it 429 with Retry-After; other players and the admin key read on', async () => {
    // Counted by the minute: not across its turn.
    await clearOfMinuteTurn(5_000)
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const read = (token: string) =>
      callWithEnv(
        { SESSION_EVENT_READS_PER_MINUTE: '3' },
        `/v1/sessions/${sessionId}/events?limit=1`,
        bearer(token),
      )
    for (let i = 0; i < 3; i++) expect((await read(tokens[players[0]!]!)).status).toBe(200)
    const refused = await read(tokens[players[0]!]!)
    const p = await problem(refused)
    expect(p).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await read(tokens[players[1]!]!)).status).toBe(200)
    expect((await read(ADMIN_KEY)).status).toBe(200)
  })

  it('a player opens at most SESSION_CONNECTS_PER_MINUTE sockets a minute across sessions: past it 429 with Retry-After, and the session is not asked; other players connect on', async () => {
    await clearOfMinuteTurn(5_000)
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    let asked = 0
    await replaceMethod<GameSession, 'fetch'>(
      sessionObject(sessionId),
      'fetch',
      (original) =>
        async function (this: GameSession, ...args: Parameters<GameSession['fetch']>) {
          asked++
          return original.apply(this, args)
        },
    )
    const open = (token: string) =>
      callWithEnv({ SESSION_CONNECTS_PER_MINUTE: '2' }, `/v1/sessions/${sessionId}`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${token}` },
      })
    const sockets: TestSocket[] = []
    for (let i = 0; i < 2; i++) {
      const res = await open(tokens[players[0]!]!)
      expect(res.status).toBe(101)
      sockets.push(new TestSocket(res.webSocket!))
    }
    expect(asked).toBe(2)
    const refused = await open(tokens[players[0]!]!)
    expect(await problem(refused)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(asked).toBe(2)
    const other = await open(tokens[players[1]!]!)
    expect(other.status).toBe(101)
    sockets.push(new TestSocket(other.webSocket!))
    for (const s of sockets) s.close()
  })

  it("a live session's reads that ask Neon whether the player was erased (a player token issued since the match) count toward PLAYER_READS_PER_MINUTE; with the session's token they do not", async () => {
    await clearOfMinuteTurn(5_000)
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    // Renewed since the match was made, as a studio's sign-in renews it.
    const renewed = (await issuePlayerToken(env, players[0]!, Date.now() + 2_000)).token
    const read = (token: string) =>
      callWithEnv({ PLAYER_READS_PER_MINUTE: '2' }, `/v1/sessions/${sessionId}`, bearer(token))
    for (let i = 0; i < 3; i++) expect((await read(tokens[players[0]!]!)).status).toBe(200)
    for (let i = 0; i < 2; i++) expect((await read(renewed)).status).toBe(200)
    const refused = await read(renewed)
    expect(await problem(refused)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
  })

  it('a player reads at most SESSION_READS_PER_MINUTE sessions a minute, their own live one included, with either token: past it 429 with Retry-After before the session is asked; the other player and the admin key read on', async () => {
    await clearOfMinuteTurn(5_000)
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const player = (await issuePlayerToken(env, players[0]!, Date.now() - 60_000)).token
    const read = (id: string, credential: string) =>
      callWithEnv({ SESSION_READS_PER_MINUTE: '3' }, `/v1/sessions/${id}`, bearer(credential))
    expect((await read(sessionId, tokens[players[0]!]!)).status).toBe(200)
    expect((await read(sessionId, player)).status).toBe(200)
    expect((await problem(await read(crypto.randomUUID(), player))).status).toBe(404)
    for (const credential of [tokens[players[0]!]!, player]) {
      const refused = await read(sessionId, credential)
      expect(await problem(refused)).toMatchObject({
        status: 429,
        type: 'urn:nexus:problem:rate-limited',
      })
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    }
    // A made-up id past it is refused before any object is made up for it.
    expect((await problem(await read(crypto.randomUUID(), player))).status).toBe(429)
    expect((await read(sessionId, tokens[players[1]!]!)).status).toBe(200)
    expect((await read(sessionId, ADMIN_KEY)).status).toBe(200)
  })

  it("a player's reads of sessions their objects no longer hold (read from Neon, or none at all) count toward PLAYER_READS_PER_MINUTE: past it 429; a live session's read is not counted", async () => {
    await clearOfMinuteTurn(5_000)
    const g = await newGuest()
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: g.playerId }, { playerId: playerIds(1)[0]! }],
    })
    const read = (id: string) =>
      callWithEnv({ PLAYER_READS_PER_MINUTE: '2' }, `/v1/sessions/${id}`, bearer(g.token))
    for (let i = 0; i < 2; i++) {
      expect((await problem(await read(crypto.randomUUID()))).status).toBe(404)
    }
    const refused = await read(crypto.randomUUID())
    expect(await problem(refused)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    // The session the player is in, from its object: no Neon, not counted.
    const live = await read(sessionId)
    expect(live.status).toBe(200)
    expect(((await live.json()) as { status: string }).status).toBe('live')
  })
})

void env
