import { env } from 'cloudflare:workers'
import { metricTotal } from './helpers/metric-totals.ts'
import { runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import type { GameSession } from '../../durable-objects/game-session.ts'
import {
  BEHIND_CLOSE,
  BEHIND_FOR_MS,
  MAX_SOCKETS_PER_PLAYER,
  MAX_UNANSWERED_CLOSES,
  RATE_BURST,
  REPLACED_CLOSE,
  UNANSWERED_CLOSE_MS,
} from '../../durable-objects/game-session.ts'
import { REPLACED_CLOSE_CODE } from '../../client/src/sessions.ts'
import { FLOOD_WINDOW_MS, FRAME_CLOSE_SIZE, MAX_REFUSED_FRAMES } from '../../workers/lib/flood.ts'
import { issueSessionToken, SESSION_TOKEN_TTL_SECONDS } from '../../workers/lib/session-token.ts'
import { ADMIN_KEY, bearer, call, callWithEnv, newGuest, problem } from './helpers/http.ts'
import { issuePlayerToken, signScopedToken } from '../../workers/lib/auth.ts'
import { NEON_QUERY_TIMEOUT_MS } from '../../workers/db/client.ts'
import { ERASURE_CHECK_WAIT_MS } from '../../workers/routes/sessions.ts'
import { until } from './helpers/sockets.ts'
import { pg } from './helpers/boards.ts'
import { getRules, type AnyRules } from '../../workers/core/rules/index.ts'
import {
  connect,
  createSession,
  diceState,
  inObject,
  playerIds,
  sessionObject,
  upgrade,
  type Frame,
  TestSocket,
} from './helpers/session-sockets.ts'

async function diceGame(n: number, target = 10) {
  const players = playerIds(n)
  const created = await createSession({
    rules: 'dice-race',
    roster: players.map((playerId) => ({ playerId })),
    options: { target },
  })
  return { ...created, players }
}

async function matchOf(sessionId: string) {
  return runInDurableObject(sessionObject(sessionId), (inst: GameSession) => inst.current()!.match)
}

/**
 * The token with one character of its signature changed, away from the end: the last character
 * of an HS256 signature carries only 4 of its 6 bits, so replacing the last two characters left
 * the same signature about once in a thousand runs.
 */
function tampered(token: string): string {
  const i = token.length - 10
  return token.slice(0, i) + (token[i] === 'A' ? 'B' : 'A') + token.slice(i + 1)
}

/** A relay session of `n`, its first player connected and welcomed, its clock stopped now. */
async function relayWithClockStopped(n = 2) {
  const players = playerIds(n)
  const { sessionId, tokens } = await createSession({
    rules: 'relay',
    roster: players.map((playerId) => ({ playerId })),
  })
  const a = await connect(sessionId, tokens[players[0]!]!)
  await a.nextOf('welcome')
  await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
    const t = Date.now()
    inst.now = () => t
  })
  return { sessionId, a, players }
}

/** The grace timers running for `player` in the session (one while they are away). */
function gracesOf(sessionId: string, player: string): Promise<number> {
  return inObject(
    sessionId,
    (_inst, state) =>
      state.storage.sql
        .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', player)
        .one().n,
  )
}

/**
 * Adds `count` sockets the session closed whose client never answered, as the runtime would list
 * them: closing, under the player's tag, each with the attachment it keeps across a hibernation.
 */
function addUnansweredCloses(state: DurableObjectState, player: string, count: number): void {
  const closing = () => {
    let att: unknown = { playerId: player, connectedAt: 0 }
    return {
      readyState: WebSocket.CLOSING,
      deserializeAttachment: () => att,
      serializeAttachment: (value: unknown) => (att = value),
    } as unknown as WebSocket
  }
  const held = Array.from({ length: count }, closing)
  const list = state.getWebSockets.bind(state)
  state.getWebSockets = (tag?: string) => (tag === player ? [...list(tag), ...held] : list(tag))
}

describe('session sockets', () => {
  it('welcomes a roster member with seq 0 and the initial state', async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const a = await connect(sessionId, tokens[players[0]!]!)
    const w = await a.nextOf('welcome')
    expect(w).toMatchObject({
      type: 'welcome',
      seq: 0,
      you: players[0],
      status: 'live',
      acks: true,
      refs: true,
    })
    const state = diceState(w)
    expect(state.players.map((p) => [p.playerId, p.position])).toEqual([
      [players[0], 0],
      [players[1], 0],
    ])
    expect(state.turn).toBe(0)
    expect(state.target).toBe(10)
    // The seed and RNG words never reach clients.
    expect(JSON.stringify(w)).not.toMatch(/rng|seed/)
    // Browsers pass the token in the query string.
    const b = await connect(sessionId, tokens[players[1]!]!, { viaQuery: true })
    expect(await b.nextOf('welcome')).toMatchObject({ seq: 0, you: players[1] })
    a.close()
    b.close()
  })

  it("takes a browser's token from its subprotocols, answering nexus.v1; a plain read does not count it", async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const res = await upgrade(sessionId, tokens[players[1]!]!, { viaProtocol: true })
    expect(res.status).toBe(101)
    expect(res.headers.get('sec-websocket-protocol')).toBe('nexus.v1')
    const b = new TestSocket(res.webSocket!)
    expect(await b.nextOf('welcome')).toMatchObject({ seq: 0, you: players[1] })
    b.close()
    // Without an upgrade, only the Authorization header is read.
    const plain = await problem(
      await call(`/v1/sessions/${sessionId}`, {
        headers: { 'sec-websocket-protocol': `nexus.v1, nexus.token.${tokens[players[1]!]!}` },
      }),
    )
    expect(plain).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    const long = await problem(await upgrade(sessionId, 'x'.repeat(4097), { viaProtocol: true }))
    expect(long).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    // Without nexus.v1 the answer could name nothing the client offered: 422, nothing opens.
    const bare = await problem(
      await call(`/v1/sessions/${sessionId}`, {
        headers: {
          upgrade: 'websocket',
          'sec-websocket-protocol': `nexus.token.${tokens[players[1]!]!}`,
        },
      }),
    )
    expect(bare).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    // The admin key is no session credential, wherever it travels.
    const admin = await problem(await upgrade(sessionId, ADMIN_KEY, { viaProtocol: true }))
    expect(admin).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
  })

  it('runs turns in roster order and broadcasts every event to everyone in one order', async () => {
    const { sessionId, tokens, players } = await diceGame(3, 1000)
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of sockets) await s.nextOf('welcome')
    // Three full rounds: players roll in roster order.
    const expectedOrder: string[] = []
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < players.length; i++) {
        sockets[i]!.roll()
        expectedOrder.push(players[i]!)
        // Wait for this roll to be applied before the next player rolls.
        await sockets[i]!.next((f) => f.type === 'event' && f.seq === expectedOrder.length)
      }
    }
    const seen = await Promise.all(
      sockets.map(async (s) => {
        if (!s.frames.some((f) => f.type === 'event' && f.seq === 9)) {
          await s.next((f) => f.type === 'event' && f.seq === 9)
        }
        return s.frames.filter((f): f is Frame => f.type === 'event')
      }),
    )
    for (const events of seen) {
      expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9])
      expect(events).toEqual(seen[0])
    }
    const rolls = seen[0]!.map((e) => e.event as { player: string; die: number; position: number })
    expect(rolls.map((r) => r.player)).toEqual(expectedOrder)
    // Positions are the running sum of each player's dice.
    const pos = new Map<string, number>()
    for (const r of rolls) {
      expect(r.die).toBeGreaterThanOrEqual(1)
      expect(r.die).toBeLessThanOrEqual(6)
      pos.set(r.player, (pos.get(r.player) ?? 0) + r.die)
      expect(r.position).toBe(pos.get(r.player))
    }
    for (const s of sockets) s.close()
  })

  it('refuses an out-of-turn roll to the sender only, with no change', async () => {
    const { sessionId, tokens, players } = await diceGame(2, 1000)
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    await a!.nextOf('welcome')
    await b!.nextOf('welcome')
    const before = await matchOf(sessionId)
    const refused = metricTotal('nexus_session_refusals_total', { code: 'not_your_turn' })
    b!.roll()
    const err = await b!.nextOf('error')
    expect(err).toMatchObject({ code: 'not_your_turn' })
    expect(metricTotal('nexus_session_refusals_total', { code: 'not_your_turn' }) - refused).toBe(1)
    expect(await matchOf(sessionId)).toEqual(before)
    // A's next frame is the event of its own valid roll: nothing was sent to A for B's refusal.
    a!.roll()
    const first = await a!.next()
    expect(first).toMatchObject({ type: 'event', seq: 1 })
    expect((first.event as { player: string }).player).toBe(players[0])
    expect(a!.frames.filter((f) => f.type !== 'welcome')).toEqual([first])
    a!.close()
    b!.close()
  })

  it('refuses malformed, unknown, invalid and oversize frames without changing anything', async () => {
    const { sessionId, tokens, players } = await diceGame(2, 1000)
    const a = await connect(sessionId, tokens[players[0]!]!)
    await a.nextOf('welcome')
    const before = await matchOf(sessionId)
    a.send('{not json')
    expect(await a.nextOf('error')).toMatchObject({ code: 'malformed' })
    a.send({ type: 'teleport' })
    expect(await a.nextOf('error')).toMatchObject({ code: 'invalid_message' })
    a.send({ type: 'action', action: 'cheat' })
    expect(await a.nextOf('error')).toMatchObject({ code: 'invalid_action' })
    a.send({ type: 'action', action: 'roll', extra: 1 })
    expect(await a.nextOf('error')).toMatchObject({ code: 'invalid_action' })
    a.send({ type: 'action', action: 'roll', pad: 'x'.repeat(9000) })
    expect(await a.nextOf('error')).toMatchObject({ code: 'too_large' })
    // Whatever the rules make of it, an action is logged and archived into jsonb, which writes
    // every digit of its numbers out: a frame of 1 KB that is 30 KB written out is too large.
    a.send(`{"type":"action","action":"roll","ref":"n","pad":[${Array(100).fill('1e308')}]}`)
    expect(await a.nextOf('error')).toMatchObject({ code: 'too_large', ref: 'n' })
    a.ws.send(new Uint8Array([1, 2, 3]))
    expect(await a.nextOf('error')).toMatchObject({ code: 'binary' })
    expect(await matchOf(sessionId)).toEqual(before)
    expect(a.frames.filter((f) => f.type === 'event')).toEqual([])
    a.send({ type: 'ping' })
    expect(await a.nextOf('pong')).toEqual({ type: 'pong' })
    a.close()
  })

  it('relay takes the floats a physics step makes (1.2e-16, written with an exponent) as sent: only their written-out size counts', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const a = await connect(sessionId, tokens[players[0]!]!)
    await a.nextOf('welcome')
    const data = { vx: 1.2e-16, vy: Math.sin(Math.PI), big: 1e21 }
    a.send({ type: 'action', action: 'message', data })
    const event = await a.nextOf('event')
    expect((event.event as { data: unknown }).data).toEqual(data)
    a.close()
  })

  it("frames carry the game's clock: welcome and resumed the tick as they left (with the rules' tickRate), each event its input's tick, resent ones included", async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const t0 = Date.now()
    await inObject(sessionId, (inst) => {
      inst.now = () => t0
    })
    const a = await connect(sessionId, tokens[players[0]!]!)
    const welcome = await a.nextOf('welcome')
    // Rules without a tickRate count milliseconds.
    expect(welcome.tickRate).toBe(1000)
    a.send({ type: 'action', action: 'message', data: 'at t0' })
    expect((await a.nextOf('event')).tick).toBe(welcome.tick)
    await inObject(sessionId, (inst) => {
      inst.now = () => t0 + 7_000
    })
    const b = await connect(sessionId, tokens[players[1]!]!)
    expect((await b.nextOf('welcome')).tick).toBe((welcome.tick as number) + 7_000)
    const back = await connect(sessionId, tokens[players[0]!]!, { since: 0 })
    expect(await back.nextOf('resumed')).toMatchObject({
      since: 0,
      seq: 1,
      tick: (welcome.tick as number) + 7_000,
      tickRate: 1000,
      elapsedMs: (welcome.elapsedMs as number) + 7_000,
      running: true,
    })
    // The missed event, sent now, says when it happened.
    expect(await back.nextOf('event')).toMatchObject({ seq: 1, tick: welcome.tick })
    for (const s of [a, b, back]) s.close()
    // Over, its clock stops at the input that ended it: a welcome later does not count on.
    const ended = await call(`/v1/admin/sessions/${sessionId}/end`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(ended.status).toBe(200)
    await inObject(sessionId, (inst) => {
      inst.now = () => t0 + 60_000
    })
    const late = await connect(sessionId, tokens[players[1]!]!)
    expect(await late.nextOf('welcome')).toMatchObject({
      status: 'finished',
      tick: (welcome.tick as number) + 7_000,
      running: false,
    })
    late.close()

    const potato = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
    })
    const p = await connect(potato.sessionId, potato.tokens[players[0]!]!)
    expect((await p.nextOf('welcome')).tickRate).toBe(getRules('hot-potato')!.tickRate)
    p.close()
  })

  it('rate-limits each player: past the burst, frames are refused and not applied', async () => {
    // A frozen clock: the bucket does not refill during the burst, so the count is exact.
    const { sessionId, a } = await relayWithClockStopped()
    const total = RATE_BURST + 15
    for (let i = 0; i < total; i++) a.send({ type: 'action', action: 'message', data: { i } })
    const replies: Frame[] = []
    for (let i = 0; i < total; i++) replies.push(await a.next((f) => f.type !== 'welcome'))
    const events = replies.filter((f) => f.type === 'event')
    const limited = replies.filter((f) => f.type === 'error' && f.code === 'rate_limited')
    expect(events).toHaveLength(RATE_BURST)
    expect(limited).toHaveLength(15)
    // The first RATE_BURST messages are the ones applied, in order.
    expect(events.map((e) => (e.event as { data: { i: number } }).data.i)).toEqual(
      Array.from({ length: RATE_BURST }, (_, i) => i),
    )
    expect((await matchOf(sessionId)).seq).toBe(RATE_BURST)
    a.close()
  })

  it(`closes a socket that keeps sending past the allowance (over ${MAX_REFUSED_FRAMES} refused in ${FLOOD_WINDOW_MS / 1000} s), as if its player had gone`, async () => {
    const { sessionId, a } = await relayWithClockStopped()
    const flood = RATE_BURST + MAX_REFUSED_FRAMES + 50
    for (let i = 0; i < flood; i++) a.send({ type: 'action', action: 'message', data: { i } })
    expect((await a.whenClosed()).code).toBe(1008)
    const limited = a.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited')
    expect(limited).toHaveLength(MAX_REFUSED_FRAMES)
    // The frames within the allowance were played; none after.
    expect((await matchOf(sessionId)).seq).toBe(RATE_BURST)
  })

  it(`closes at once (1009) a socket sending a frame many times the limit (over ${FRAME_CLOSE_SIZE} characters), as if its player had gone; nothing of it is played`, async () => {
    const { sessionId, a, players } = await relayWithClockStopped()
    a.send({ type: 'action', action: 'message', data: { pad: 'x'.repeat(FRAME_CLOSE_SIZE) } })
    expect((await a.whenClosed()).code).toBe(1009)
    expect(a.frames.filter((f) => f.type === 'event')).toEqual([])
    expect((await matchOf(sessionId)).seq).toBe(0)
    // Their last socket gone: their grace runs, as after any leaving.
    const graces = await gracesOf(sessionId, players[0]!)
    expect(graces).toBe(1)
  })

  it('a socket that acknowledges what it reads and falls too far behind is closed with 4008 (others, and sockets that never acknowledge, are not), and its resume gets exactly what it missed', async () => {
    const players = playerIds(3)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const [sender, slow, keepsUp] = await Promise.all(
      players.map((p) => connect(sessionId, tokens[p]!)),
    )
    for (const s of [sender!, slow!, keepsUp!]) await s.nextOf('welcome')
    const limit = 600
    let t = Date.now()
    await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
      inst.now = () => t
      inst.maxUnacked = limit
    })
    // The slow one says it read the welcome, then nothing more; the other acknowledges each.
    slow!.send({ type: 'ack', seq: 0 })
    keepsUp!.send({ type: 'ack', seq: 0 })
    let sentChars = 0
    let seq = 0
    while (sentChars <= limit) {
      sender!.send({ type: 'action', action: 'message', data: { text: 'x'.repeat(40), seq } })
      const e = await keepsUp!.nextOf('event')
      seq = e.seq as number
      keepsUp!.send({ type: 'ack', seq })
      sentChars += JSON.stringify(e).length
    }
    // Behind by more than the bound, but only just: a burst it may still be reading. Some time on
    // and still not acknowledged, the next event sent closes it.
    const slowOpen = () =>
      runInDurableObject(
        sessionObject(sessionId),
        (_inst: GameSession, state) =>
          state.getWebSockets(players[1]!)[0]!.readyState === WebSocket.OPEN,
      )
    expect(await slowOpen()).toBe(true)
    t += BEHIND_FOR_MS
    sender!.send({ type: 'action', action: 'message', data: { text: 'later' } })
    seq = (await keepsUp!.nextOf('event')).seq as number
    keepsUp!.send({ type: 'ack', seq })
    expect((await slow!.whenClosed()).code).toBe(BEHIND_CLOSE.code)
    // The sender never acknowledged anything: no bound on it. The one keeping up stays.
    sender!.send({ type: 'action', action: 'message', data: { text: 'after' } })
    expect((await keepsUp!.nextOf('event')).seq).toBe(seq + 1)
    expect((await sender!.next((f) => f.type === 'event' && f.seq === seq + 1)).seq).toBe(seq + 1)
    // Back from the last event it read: every one since, once, in order.
    const back = await connect(sessionId, tokens[players[1]!]!, { since: 0 })
    await back.nextOf('resumed')
    const missed: number[] = []
    while (missed.length < seq + 1) missed.push((await back.nextOf('event')).seq as number)
    expect(missed).toEqual(Array.from({ length: seq + 1 }, (_, i) => i + 1))
  })

  it('an ack past the last event sent, or below 0, is refused; the first, and one that covers nothing new, take from the frame allowance; one that covers events sent to the socket since does not', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const a = await connect(sessionId, tokens[players[0]!]!)
    await a.nextOf('welcome')
    // The allowance does not refill while this runs.
    await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
      const t = Date.now()
      inst.now = () => t
    })
    a.send({ type: 'ack', seq: 5 })
    expect(await a.next((f) => f.type === 'error')).toMatchObject({ code: 'invalid_message' })
    a.send({ type: 'ack', seq: -5 })
    expect(await a.next((f) => f.type === 'error')).toMatchObject({ code: 'invalid_message' })
    const tokensLeft = await runInDurableObject(
      sessionObject(sessionId),
      async (inst: GameSession, state) => {
        const [ws] = state.getWebSockets(players[0]!)
        const left = () =>
          (inst as unknown as { buckets: Map<string, { tokens: number }> }).buckets.get(
            players[0]!,
          )!.tokens
        const ack = (seq: number) =>
          inst.webSocketMessage(ws!, JSON.stringify({ type: 'ack', seq }))
        const steps: number[] = [left()]
        await ack(0) // the first: starts the socket's window
        steps.push(left())
        await ack(0) // nothing new
        steps.push(left())
        // An event sent to it (another player's action), then its ack.
        await inst.webSocketMessage(
          state.getWebSockets(players[0]!)[0]!,
          JSON.stringify({ type: 'action', action: 'message', data: {} }),
        )
        steps.push(left())
        await ack(1)
        steps.push(left())
        return steps
      },
    )
    // The first ack, the ack of nothing new and the action took one each; the ack of event 1,
    // sent to the socket since its last, none.
    const [start, afterFirst, afterRepeat, afterAction, afterNew] = tokensLeft
    expect(afterFirst).toBe(start! - 1)
    expect(afterRepeat).toBe(start! - 2)
    expect(afterAction).toBe(start! - 3)
    expect(afterNew).toBe(afterAction)
  })

  it('a socket the session closed is heard no more: frames its client sends after the close (a flooding client never answers it) are not applied, answered or counted', async () => {
    const { sessionId, a } = await relayWithClockStopped()
    a.send({ type: 'action', action: 'message', data: { i: 0 } })
    await a.nextOf('event')
    await runInDurableObject(sessionObject(sessionId), async (inst: GameSession, state) => {
      const [ws] = state.getWebSockets()
      ws!.close(1008, 'closed by the test')
      // Past the allowance's refill: were the frame heard, it would be played.
      const later = inst.now() + 5_000
      inst.now = () => later
      await inst.webSocketMessage(
        ws!,
        JSON.stringify({ type: 'action', action: 'message', data: { i: 1 } }),
      )
      // Nor answered: a refusal's send on a closed socket would throw out of the handler.
      await inst.webSocketMessage(ws!, 'not json')
      await inst.webSocketMessage(ws!, new ArrayBuffer(4))
    })
    expect((await matchOf(sessionId)).seq).toBe(1)
    expect(a.frames.filter((f) => f.type === 'error')).toEqual([])
  })

  it('counts refused frames by player: a flood split over two sockets closes the one that passes the limit, and a reconnect within the window is closed at its first refused frame', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const token = tokens[players[0]!]!
    const a = await connect(sessionId, token)
    await a.nextOf('welcome')
    const b = await connect(sessionId, token)
    await b.nextOf('welcome')
    await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
      const t = Date.now()
      inst.now = () => t
    })
    const send = (s: typeof a, n: number) => {
      for (let i = 0; i < n; i++) s.send({ type: 'action', action: 'message', data: { i } })
    }
    // The allowance, then 600 refused on each: neither socket alone passes 1,000.
    send(a, RATE_BURST + 600)
    await until(async () =>
      a.frames.filter((f) => f.type === 'error').length === 600 ? true : undefined,
    )
    send(b, 600)
    expect((await b.whenClosed()).code).toBe(1008)
    const refusedOnB = b.frames.filter((f) => f.type === 'error' && f.code === 'rate_limited')
    expect(refusedOnB).toHaveLength(MAX_REFUSED_FRAMES - 600)
    // Back at once, within the window: its first refused frame closes it.
    const again = await connect(sessionId, token)
    await again.nextOf('welcome')
    send(again, 1)
    expect((await again.whenClosed()).code).toBe(1008)
    expect((await matchOf(sessionId)).seq).toBe(RATE_BURST)
    a.close()
  })

  it("the rate is the player's, not the socket's: a reconnect does not refill it, and a second socket shares it", async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const token = tokens[players[0]!]!
    const a = await connect(sessionId, token)
    await a.nextOf('welcome')
    await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
      const t = Date.now()
      inst.now = () => t
    })
    for (let i = 0; i < RATE_BURST; i++) a.send({ type: 'action', action: 'message', data: { i } })
    for (let i = 0; i < RATE_BURST; i++) await a.nextOf('event')
    a.close()
    // A new socket of the same player, and one more beside it: the bucket is still empty.
    const again = await connect(sessionId, token)
    await again.nextOf('welcome')
    const beside = await connect(sessionId, token)
    await beside.nextOf('welcome')
    again.send({ type: 'action', action: 'message', data: { i: 'again' } })
    expect(await again.nextOf('error')).toMatchObject({ code: 'rate_limited' })
    beside.send({ type: 'action', action: 'message', data: { i: 'beside' } })
    expect(await beside.nextOf('error')).toMatchObject({ code: 'rate_limited' })
    expect((await matchOf(sessionId)).seq).toBe(RATE_BURST)
    // The other player's own bucket is untouched.
    const b = await connect(sessionId, tokens[players[1]!]!)
    await b.nextOf('welcome')
    b.send({ type: 'action', action: 'message', data: { i: 'b' } })
    expect(await b.nextOf('event')).toMatchObject({ event: { from: players[1], data: { i: 'b' } } })
    for (const ws of [again, beside, b]) ws.close()
  })

  it('counts refused frames (binary, oversize) against the rate too', async () => {
    const { a } = await relayWithClockStopped(1)
    const total = RATE_BURST + 10
    const big = 'x'.repeat(9000)
    for (let i = 0; i < total; i++) a.ws.send(i % 2 ? big : new Uint8Array([1, 2, 3]))
    const codes: string[] = []
    for (let i = 0; i < total; i++) codes.push((await a.nextOf('error')).code as string)
    expect(codes.filter((c) => c === 'rate_limited')).toHaveLength(10)
    expect(codes.slice(0, RATE_BURST).every((c) => c === 'binary' || c === 'too_large')).toBe(true)
    a.close()
  })

  it('refuses relay data PostgreSQL could not archive (NUL, an unpaired surrogate): no event', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    await a!.nextOf('welcome')
    await b!.nextOf('welcome')
    for (const frame of [
      '{"type":"action","action":"message","data":"a\\u0000b"}',
      '{"type":"action","action":"message","data":{"\\ud800":1}}',
    ]) {
      a!.ws.send(frame)
      expect(await a!.nextOf('error')).toMatchObject({ code: 'invalid_action' })
    }
    a!.send({ type: 'action', action: 'message', data: 'fine' })
    const event = await b!.nextOf('event')
    expect(event.seq).toBe(1)
    expect((await matchOf(sessionId)).seq).toBe(1)
    a!.close()
    b!.close()
  })

  it("refuses relay messages past the session's maxMessages to the sender: log_full, no event", async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
      options: { maxMessages: 2 },
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    await a!.nextOf('welcome')
    await b!.nextOf('welcome')
    a!.send({ type: 'action', action: 'message', data: 1 })
    b!.send({ type: 'action', action: 'message', data: 2 })
    expect((await a!.nextOf('event')).seq).toBe(1)
    expect((await a!.nextOf('event')).seq).toBe(2)
    b!.send({ type: 'action', action: 'message', data: 3 })
    expect(await b!.nextOf('error')).toMatchObject({ code: 'log_full' })
    // The refusal went to the sender only; a ping answered after it proves nothing else came.
    a!.send({ type: 'ping' })
    await a!.nextOf('pong')
    expect(a!.frames.filter((f) => f.type === 'event')).toHaveLength(2)
    expect((await matchOf(sessionId)).seq).toBe(2)
    a!.close()
    b!.close()
  })

  it(`refuses a player's connect (409) while ${MAX_UNANSWERED_CLOSES} of their sockets the session closed go unanswered past ${UNANSWERED_CLOSE_MS / 1000} s, a hibernation between included; just closed, they do not count`, async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const token = tokens[players[0]!]!
    const clock = { t: Date.now() }
    await inObject(sessionId, (inst, state) => {
      inst.now = () => clock.t
      addUnansweredCloses(state, players[0]!, MAX_UNANSWERED_CLOSES)
    })
    // Just found closing: an answer may be on its way, and the player connects.
    const first = await connect(sessionId, token)
    await first.nextOf('welcome')
    first.send({ type: 'action', action: 'roll' })
    await first.nextOf('event')
    // The object hibernates: what its instance held in memory is gone, the sockets are not.
    await inObject(sessionId, (inst) => {
      Reflect.set(inst, 'closingSeen', new WeakMap())
    })
    clock.t += UNANSWERED_CLOSE_MS
    // A resume refused so spends none of the player's resume budget (nothing was sent).
    const refused = await problem(await upgrade(sessionId, token, { since: 0 }))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    const budget = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>(
            `SELECT count(*) AS n FROM meta WHERE key = ?`,
            `resume_budget:${players[0]!}`,
          )
          .one().n,
    )
    expect(budget).toBe(0)
    // The other player is not held up.
    const other = await connect(sessionId, tokens[players[1]!]!)
    await other.nextOf('welcome')
    first.close()
    other.close()
  })

  it(`refuses a player's connect (409) while ${2 * MAX_UNANSWERED_CLOSES} of their sockets are closing, however new: a burst of connects closes them faster than each waits to count`, async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const token = tokens[players[0]!]!
    await inObject(sessionId, (_inst, state) => {
      addUnansweredCloses(state, players[0]!, 2 * MAX_UNANSWERED_CLOSES)
    })
    // Just found closing, all of them, and too many at once: refused now, not 5 s from now.
    const refused = await problem(await upgrade(sessionId, token))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    const other = await connect(sessionId, tokens[players[1]!]!)
    await other.nextOf('welcome')
    other.close()
  })

  it("a player's fifth socket replaces their oldest (a browser sees no refused upgrade's status): the oldest is closed with 4001, the newest welcomed, the others stay open, and no grace starts", async () => {
    expect(REPLACED_CLOSE.code).toBe(REPLACED_CLOSE_CODE)
    const { sessionId, tokens, players } = await diceGame(2)
    const token = tokens[players[0]!]!
    const open: TestSocket[] = []
    for (let i = 0; i < MAX_SOCKETS_PER_PLAYER; i++) {
      const ws = await connect(sessionId, token)
      await ws.nextOf('welcome')
      open.push(ws)
    }
    const fifth = await connect(sessionId, token)
    expect(await fifth.nextOf('welcome')).toMatchObject({ status: 'live' })
    expect(await open[0]!.whenClosed()).toMatchObject({ code: REPLACED_CLOSE.code })
    // The others still work: each answers a ping (a closed one would not).
    for (const ws of [...open.slice(1), fifth]) {
      ws.send({ type: 'ping' })
      await ws.nextOf('pong')
    }
    // The player never left: no grace of theirs is running.
    const graces = await gracesOf(sessionId, players[0]!)
    expect(graces).toBe(0)
    // The limit is per player: the other player still connects.
    const other = await connect(sessionId, tokens[players[1]!]!)
    await other.nextOf('welcome')
    for (const ws of [...open.slice(1), fifth, other]) ws.close()
  })

  it("a player's fifth socket replaces the one heard from least lately, not the oldest: a tab in use stays, a socket its client gave up on goes", async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const token = tokens[players[0]!]!
    const base = Date.now() - 60_000
    const open: TestSocket[] = []
    for (let i = 0; i < MAX_SOCKETS_PER_PLAYER; i++) {
      // Connected a second apart, by the session's clock.
      await inObject(sessionId, (inst) => {
        inst.now = () => base + i * 1000
      })
      const ws = await connect(sessionId, token)
      await ws.nextOf('welcome')
      open.push(ws)
    }
    await inObject(sessionId, (inst) => {
      inst.now = () => Date.now()
    })
    // The first one, the oldest, is the tab in use: it pings (the SDK does every 20 s).
    open[0]!.send({ type: 'ping' })
    await open[0]!.nextOf('pong')
    const fifth = await connect(sessionId, token)
    expect(await fifth.nextOf('welcome')).toMatchObject({ status: 'live' })
    expect(await open[1]!.whenClosed()).toMatchObject({ code: REPLACED_CLOSE.code })
    for (const ws of [open[0]!, ...open.slice(2), fifth]) {
      ws.send({ type: 'ping' })
      await ws.nextOf('pong')
    }
    for (const ws of [open[0]!, ...open.slice(2), fifth]) ws.close()
  })

  it("a connect whose rules throw (a bug in the view) is 500 and leaves no socket open: the player's grace runs, and their connections are not used up", async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const [pa] = players as [string, string]
    await runInDurableObject(sessionObject(sessionId), (inst: GameSession) => {
      const self = inst as unknown as { rules: AnyRules }
      self.rules = {
        ...self.rules,
        view: () => {
          throw new Error('a bug in the rules')
        },
      } as AnyRules
    })
    for (let i = 0; i < 5; i++) {
      const res = await upgrade(sessionId, tokens[pa]!)
      expect(res.status).toBe(500)
      expect(res.webSocket).toBeFalsy()
    }
    const left = await runInDurableObject(sessionObject(sessionId), (_i: GameSession, state) => ({
      open: state.getWebSockets(pa).filter((ws) => ws.readyState === WebSocket.OPEN).length,
      timers: state.storage.sql
        .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', pa)
        .one().n,
    }))
    expect(left).toEqual({ open: 0, timers: 1 })

    // Rules that throw at the connect's input, after the player's join timer was taken away:
    // their grace starts as on any close, so the game does not wait on a ghost.
    const other = await diceGame(2)
    const [pc] = other.players as [string, string]
    await runInDurableObject(sessionObject(other.sessionId), (inst: GameSession) => {
      const self = inst as unknown as { rules: AnyRules; graceMs: number }
      self.rules = {
        ...self.rules,
        onConnect: () => {
          throw new Error('a bug in the rules')
        },
      } as AnyRules
    })
    const before = Date.now()
    expect((await upgrade(other.sessionId, other.tokens[pc]!)).status).toBe(500)
    const after = Date.now()
    const grace = await runInDurableObject(
      sessionObject(other.sessionId),
      (inst: GameSession, state) => ({
        graceMs: (inst as unknown as { graceMs: number }).graceMs,
        open: state.getWebSockets(pc).filter((ws) => ws.readyState === WebSocket.OPEN).length,
        due: state.storage.sql
          .exec<{ due: number }>('SELECT due FROM timers WHERE player_id = ?', pc)
          .toArray()
          .map((r) => r.due),
      }),
    )
    expect(grace.open).toBe(0)
    expect(grace.due).toHaveLength(1)
    expect(grace.due[0]!).toBeGreaterThanOrEqual(before + grace.graceMs)
    expect(grace.due[0]!).toBeLessThanOrEqual(after + grace.graceMs)
  })

  it('answers a close without a code, so the client’s close completes (and it may connect again)', async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const token = tokens[players[0]!]!
    // `ws.close()` with no arguments, as browsers' clients often do: the server sees 1005, a code
    // it may not send back, but it must still answer the close.
    for (let i = 0; i < 5; i++) {
      const ws = await connect(sessionId, token)
      await ws.nextOf('welcome')
      ws.ws.close()
      expect(await ws.whenClosed()).toEqual({ code: 1005, reason: '' })
    }
  })

  it('lets a player back in with their own token once the session token has expired', async () => {
    const g = await newGuest()
    const { sessionId } = await createSession({
      rules: 'relay',
      roster: [{ playerId: g.playerId }],
    })
    // The token handed out when the game began, over 6 hours ago (a relay room runs on).
    const handedOut = await issueSessionToken(
      env,
      sessionId,
      g.playerId,
      Date.now() - (SESSION_TOKEN_TTL_SECONDS + 60) * 1000,
    )
    const expired = await problem(await upgrade(sessionId, handedOut))
    expect([expired.status, expired.type]).toEqual([401, 'urn:nexus:problem:token-expired'])
    const s = await connect(sessionId, g.token)
    expect((await s.nextOf('welcome')).you).toBe(g.playerId)
    s.send({ type: 'action', action: 'message', data: 'back' })
    expect(await s.nextOf('event')).toMatchObject({
      seq: 1,
      event: { from: g.playerId, data: 'back' },
    })
    s.close()
  })

  it('refuses intruders before the upgrade with problem+json', async () => {
    const { sessionId, tokens, players } = await diceGame(2)
    const other = await diceGame(2)
    const guest = await newGuest()
    const cases: [string, Response, number, string][] = [
      ['no token', await upgrade(sessionId, null), 401, 'unauthorized'],
      [
        'a player token, not on the roster',
        await upgrade(sessionId, guest.token),
        403,
        'forbidden',
      ],
      ['the admin key', await upgrade(sessionId, ADMIN_KEY), 401, 'unauthorized'],
      [
        "another session's token",
        await upgrade(sessionId, other.tokens[other.players[0]!]!),
        403,
        'forbidden',
      ],
      [
        'a forged token',
        await upgrade(
          sessionId,
          await signScopedToken(
            { AUTH_SECRET: 'not-the-secret-0123456789abcdef0123456789' },
            'nexus:session',
            players[0]!,
            { sid: sessionId },
            3600,
          ),
        ),
        401,
        'unauthorized',
      ],
      [
        'a tampered token',
        await upgrade(sessionId, tampered(tokens[players[0]!]!)),
        401,
        'unauthorized',
      ],
      [
        'a valid token for someone not on the roster',
        await upgrade(sessionId, await issueSessionToken(env, sessionId, 'stranger')),
        403,
        'forbidden',
      ],
      [
        'an unknown session',
        await upgrade('s_nope', await issueSessionToken(env, 's_nope', 'x')),
        404,
        'not-found',
      ],
    ]
    for (const [name, res, status, type] of cases) {
      expect(res.webSocket, name).toBeFalsy()
      const p = await problem(res)
      expect([name, p.status, p.type]).toEqual([name, status, `urn:nexus:problem:${type}`])
      expect(p.contentType).toBe('application/problem+json')
      // Refusals from the session's object carry the request id like the Worker's own.
      expect(p.body.requestId, name).toBeTruthy()
      expect(res.headers.get('x-request-id'), name).toBe(p.body.requestId)
      if (status === 401) expect(res.headers.get('www-authenticate'), name).toMatch(/^Bearer /)
    }
    // since beyond the log is refused too.
    const res = await upgrade(sessionId, tokens[players[0]!]!, { since: 5 })
    expect((await problem(res)).status).toBe(422)
  })
})

describe('rules whose values JSON does not keep', () => {
  it('play on from what storage holds (a Map as {}, NaN as null) from each snapshot on, as a woken session would, and send what the log has', async () => {
    const [alice] = playerIds(1) as [string]
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: alice }],
    })
    // A rules module with a bug JSON hides: a Map in its state, NaN and -0 in its events.
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules; snapshotEvery: number }
      const relay = getRules('relay')!
      self.snapshotEvery = 3
      self.rules = {
        ...relay,
        apply: (state: object, action: unknown, ctx: never) => {
          const out = relay.apply(state, action, ctx) as { state: object; event: object }
          return {
            state: { ...out.state, seen: new Map([['a', 1]]) },
            event: { ...out.event, ratio: 0 / 0, zero: -0, at: [undefined] },
          }
        },
      } as AnyRules
    })
    const a = await connect(sessionId, tokens[alice]!)
    await a.nextOf('welcome')
    // Three messages: the third record is a snapshot.
    let sent = { seq: 0, event: {} as unknown }
    for (const data of ['hi', 'again', 'and again']) {
      a.send({ type: 'action', action: 'message', data })
      sent = (await a.nextOf('event')) as unknown as typeof sent
    }
    expect(sent.seq).toBe(3)
    expect(sent.event).toMatchObject({ ratio: null, zero: 0, at: [null] })
    const stored = await inObject(sessionId, (inst, state) => {
      const self = inst as unknown as { match: { seq: number; game: unknown } }
      const snapshot = state.storage.sql
        .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'snapshot'`)
        .one().value
      const log = state.storage.sql
        .exec<{ record: string }>(`SELECT record FROM log ORDER BY seq`)
        .toArray()
        .map((r) => JSON.parse(r.record) as { seq: number; event: unknown })
      return { live: self.match, snapshot: JSON.parse(snapshot) as unknown, log }
    })
    // Every record logged is the one the player was sent.
    expect(stored.log.find((r) => r.seq === sent.seq)?.event).toEqual(sent.event)
    // Past the snapshot (every 3 records here), the live state is the stored one, exactly: the
    // Map is the `{}` a wake would find, not a Map only this run of the object has.
    expect(stored.live.seq).toBe(3)
    expect(stored.live).toEqual(stored.snapshot)
    expect((stored.live.game as { seen: unknown }).seen).toEqual({})
    a.close()
  })
})

describe('rules whose result cannot be recorded', () => {
  it('get the sender `internal` and keep nothing of the action: no record, no end, no result in Neon', async () => {
    const [alice, bob] = playerIds(2) as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: alice }, { playerId: bob }],
    })
    // A bug a studio could ship: places counted from 0, so the win would go to the second.
    await inObject(sessionId, (inst) => {
      const self = inst as unknown as { rules: AnyRules }
      const relay = getRules('relay')!
      self.rules = {
        ...relay,
        result: (state: { messages: number }) =>
          state.messages > 0
            ? {
                reason: 'finished',
                winner: alice,
                placements: [
                  { playerId: alice, team: 0, place: 0 },
                  { playerId: bob, team: 1, place: 1 },
                ],
              }
            : null,
      } as AnyRules
    })
    const a = await connect(sessionId, tokens[alice]!)
    await a.nextOf('welcome')
    const before = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM log').one().n,
    )
    a.send({ type: 'action', action: 'message', data: 'gg' })
    expect(await a.nextOf('error')).toMatchObject({ code: 'internal' })
    const after = await inObject(sessionId, (inst, state) => ({
      log: state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM log').one().n,
      info: inst.info(),
    }))
    expect(after.log).toBe(before)
    expect(after.info).toMatchObject({ ok: true, status: 'live' })
    const rows = await pg()`select 1 from match_results where session_id = ${sessionId}`
    expect(rows).toHaveLength(0)
    a.close()
  })
})

describe('rules that throw naming their next tick', () => {
  it("leave the session's alarm on its watchdog rather than failing each wake (the constructor sets it)", async () => {
    const [alice, bob] = playerIds(2) as [string, string]
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: alice }, { playerId: bob }],
    })
    const armed = await inObject(sessionId, async (inst, state) => {
      const self = inst as unknown as {
        rules: AnyRules
        graceMs: number
        scheduleAlarm(): Promise<void>
      }
      // A deploy's nextTick reading a field older states lack.
      self.rules = {
        ...self.rules,
        nextTick: (s: { phase: { endsAt: number } }) => s.phase.endsAt,
      } as AnyRules
      await state.storage.deleteAlarm()
      await self.scheduleAlarm()
      return { alarm: await state.storage.getAlarm(), graceMs: self.graceMs }
    })
    expect(armed.alarm).not.toBeNull()
    // No later than the watchdog: the join timers may come first.
    expect(armed.alarm!).toBeLessThanOrEqual(Date.now() + armed.graceMs)
  })
})

describe('a session read while Neon takes queries and never answers', () => {
  it("skips the erasure check after ERASURE_CHECK_WAIT_MS instead of waiting out Neon's 8 s: a running game's reads are served", async () => {
    // A player of an identity provider (not a guest), with a token issued after the session:
    // the one case the check asks Neon about.
    const player = `idp-${crypto.randomUUID()}`
    const [other] = playerIds(1) as [string]
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: player }, { playerId: other }],
    })
    const { token } = await issuePlayerToken(env, player)
    const started = Date.now()
    const res = await callWithEnv(
      {
        DATABASE_URL: env.TEST_SILENT_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_SILENT_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      `/v1/sessions/${sessionId}`,
      bearer(token),
    )
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ sessionId, status: 'live' })
    // Answered before Neon's own deadline would have let it go (the check's own wait is 3 s;
    // the bound leaves a loaded machine the rest).
    expect(Date.now() - started).toBeLessThan(NEON_QUERY_TIMEOUT_MS - 500)
    expect(ERASURE_CHECK_WAIT_MS).toBeLessThan(NEON_QUERY_TIMEOUT_MS - 500)
  })
})
