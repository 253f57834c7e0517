import { runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import type { GameSession } from '../../durable-objects/game-session.ts'
import { PLAYER_HEADER, RATE_BURST, SUPERSEDED_CLOSE } from '../../durable-objects/game-session.ts'
import { ACTION_REF_RULE, CONNECTION_ID_RULE } from '../../workers/sessions/schemas.ts'
import { ADMIN_KEY, bearer, call, callWithEnv, clearOfMinuteTurn, problem } from './helpers/http.ts'
import { getRules, replay, type LogRecord } from '../../workers/core/rules/index.ts'
import {
  connect,
  createSession,
  inObject,
  playerIds,
  sessionObject,
  TestSocket,
  upgrade,
} from './helpers/session-sockets.ts'

async function relay(n: number) {
  const players = playerIds(n)
  const created = await createSession({
    rules: 'relay',
    roster: players.map((playerId) => ({ playerId })),
  })
  return { ...created, players }
}

function message(data: unknown, ref?: unknown): Record<string, unknown> {
  return { type: 'action', action: 'message', data, ...(ref !== undefined ? { ref } : {}) }
}

async function seqOf(sessionId: string): Promise<number> {
  return inObject(sessionId, (inst) => inst.current()!.match.seq)
}

async function logAs(sessionId: string, token: string) {
  const res = await call(`/v1/sessions/${sessionId}/events?limit=500`, bearer(token))
  expect(res.status).toBe(200)
  return ((await res.json()) as { events: { seq: number; input: Record<string, unknown> }[] })
    .events
}

describe("an action's ref", () => {
  it("comes back on its event to its sender's sockets only (every one of them, a resume's too) and never reaches the rules or the other players", async () => {
    const { sessionId, tokens, players } = await relay(2)
    const [pa, pb] = players as [string, string]
    const a1 = await connect(sessionId, tokens[pa]!)
    const a2 = await connect(sessionId, tokens[pa]!)
    const b = await connect(sessionId, tokens[pb]!)
    for (const s of [a1, a2, b]) await s.nextOf('welcome')

    a1.send(message({ x: 1 }, 'move-1'))
    const [onA1, onA2, onB] = await Promise.all([a1, a2, b].map((s) => s.nextOf('event')))
    expect(onA1).toMatchObject({ seq: 1, ref: 'move-1' })
    expect(onA2).toMatchObject({ seq: 1, ref: 'move-1' })
    expect(onB).not.toHaveProperty('ref')
    // The same event otherwise, and the rules made it without the ref.
    const { ref: _ref, ...rest } = onA1!
    expect(onB).toEqual(rest)
    expect(JSON.stringify(onB)).not.toContain('move-1')
    // A whole number is a ref too; an action without one gets none back.
    b.send(message({ y: 2 }, 42))
    expect(await b.nextOf('event')).toMatchObject({ seq: 2, ref: 42 })
    expect(await a1.nextOf('event')).not.toHaveProperty('ref')
    a1.send(message({ z: 3 }))
    expect(await a1.nextOf('event')).not.toHaveProperty('ref')

    // A resume sends the sender's refs with the events it missed, and nobody else's.
    const a3 = await connect(sessionId, tokens[pa]!, { since: 0 })
    await a3.nextOf('resumed')
    const resent = [await a3.nextOf('event'), await a3.nextOf('event'), await a3.nextOf('event')]
    expect(resent.map((e) => [e.seq, e.ref])).toEqual([
      [1, 'move-1'],
      [2, undefined],
      [3, undefined],
    ])

    // The log: its player reads the ref beside their action, others neither; the admin both.
    const own = await logAs(sessionId, tokens[pa]!)
    expect(own[0]!.input).toMatchObject({ kind: 'action', player: pa, ref: 'move-1' })
    expect(own[0]!.input.action).toEqual({ action: 'message', data: { x: 1 } })
    const others = await logAs(sessionId, tokens[pb]!)
    expect(others[0]!.input).toEqual({ kind: 'action', player: pa, tick: own[0]!.input.tick })
    const whole = await logAs(sessionId, ADMIN_KEY)
    expect(whole.map((r) => r.input.ref)).toEqual(['move-1', 42, undefined])
    // The log with its refs still replays to the live state.
    const { match, setup } = await inObject(sessionId, (inst) => inst.current()!)
    const replayed = replay(
      getRules('relay')!,
      { roster: setup.roster, seed: setup.seed, options: setup.options },
      whole as unknown as LogRecord[],
    )
    expect(replayed).toEqual(match)
    for (const s of [a1, a2, a3, b]) s.close()
  })

  it("under rules that check every field and hide moves (rock-paper-scissors): the move is taken, and only its sender's view carries the ref", async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'rock-paper-scissors',
      roster: players.map((playerId) => ({ playerId })),
    })
    const [a, b] = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const s of [a!, b!]) await s.nextOf('welcome')
    a!.send({ type: 'action', move: 'rock', ref: 'rps-1' })
    const chosen = (f: { type: string; event?: unknown }) =>
      f.type === 'event' && (f.event as { kind: string }).kind === 'chosen'
    const [mine, theirs] = await Promise.all([a!.next(chosen), b!.next(chosen)])
    expect(mine).toMatchObject({ ref: 'rps-1', event: { move: 'rock' } })
    expect(theirs).toMatchObject({ seq: mine.seq })
    expect(theirs).not.toHaveProperty('ref')
    expect(JSON.stringify(theirs)).not.toContain('rock')
    a!.close()
    b!.close()
  })

  it('comes back on the refusal of its action, whatever refuses it: the rules, the rate', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1000 },
    })
    const second = await connect(sessionId, tokens[players[1]!]!)
    await second.nextOf('welcome')
    second.send({ type: 'action', action: 'roll', ref: 'r-7' })
    expect(await second.nextOf('error')).toMatchObject({ code: 'not_your_turn', ref: 'r-7' })
    second.send({ type: 'action', action: 'cheat', ref: 8 })
    expect(await second.nextOf('error')).toMatchObject({ code: 'invalid_action', ref: 8 })
    expect(await seqOf(sessionId)).toBe(0)

    // Past the burst, with the clock stopped (no refill): the refusal names the action it refused.
    const { sessionId: relayId, tokens: relayTokens, players: relayPlayers } = await relay(1)
    const a = await connect(relayId, relayTokens[relayPlayers[0]!]!)
    await a.nextOf('welcome')
    await inObject(relayId, (inst) => {
      const t = Date.now()
      inst.now = () => t
    })
    for (let i = 0; i < RATE_BURST + 1; i++) a.send(message({ i }, `m${i}`))
    const refused = await a.nextOf('error')
    expect(refused).toMatchObject({ code: 'rate_limited', ref: `m${RATE_BURST}` })
    expect(a.frames.filter((f) => f.type === 'event').map((e) => e.ref)).toEqual(
      Array.from({ length: RATE_BURST }, (_, i) => `m${i}`),
    )
    a.close()
    second.close()
  })

  it('is refused when it is not 1 to 64 printable ASCII characters or a whole number: invalid_message naming the rule, and nothing changes', async () => {
    const { sessionId, tokens, players } = await relay(1)
    const a = await connect(sessionId, tokens[players[0]!]!)
    await a.nextOf('welcome')
    const bad = ['', 'two words', 'x'.repeat(65), 'é', -1, 1.5, 2 ** 53, null, true, {}, ['r']]
    for (const ref of bad) {
      a.send(message({ i: 1 }, ref))
      const err = await a.nextOf('error')
      expect(err, JSON.stringify(ref)).toEqual({
        type: 'error',
        code: 'invalid_message',
        message: ACTION_REF_RULE,
      })
    }
    // At the bounds it is taken.
    a.send(message({ i: 2 }, '~'.repeat(64)))
    expect(await a.nextOf('event')).toMatchObject({ seq: 1, ref: '~'.repeat(64) })
    a.send(message({ i: 3 }, Number.MAX_SAFE_INTEGER))
    expect(await a.nextOf('event')).toMatchObject({ seq: 2, ref: Number.MAX_SAFE_INTEGER })
    expect(await seqOf(sessionId)).toBe(2)
    a.close()
  })
})

describe("a connection's conn", () => {
  it("supersedes its player's open socket of the same conn: closed with 4003 before the new one is answered, nothing it carries after is applied, no grace; another conn of the player stays", async () => {
    const { sessionId, tokens, players } = await relay(2)
    const [pa] = players as [string, string]
    const old = await connect(sessionId, tokens[pa]!, { conn: 'tab-1' })
    const otherTab = await connect(sessionId, tokens[pa]!, { conn: 'tab-2' })
    await old.nextOf('welcome')
    await otherTab.nextOf('welcome')
    old.send(message({ i: 1 }, 'a-1'))
    expect(await old.nextOf('event')).toMatchObject({ seq: 1, ref: 'a-1' })

    // The reconnect and a frame arriving on the old socket just after it, in one turn of the
    // object: that frame is the action a dropping connection still delivers after the resume.
    const { status, seq } = await runInDurableObject(
      sessionObject(sessionId),
      async (inst: GameSession, state) => {
        const [stale] = state
          .getWebSockets(pa)
          .filter((ws) => (ws.deserializeAttachment() as { conn?: string }).conn === 'tab-1')
        const res = await inst.fetch(
          new Request('https://game-session.internal/connect?since=1&conn=tab-1', {
            headers: { upgrade: 'websocket', [PLAYER_HEADER]: pa },
          }),
        )
        new TestSocket(res.webSocket!).close()
        await inst.webSocketMessage(stale!, JSON.stringify(message({ i: 2 }, 'a-2')))
        return { status: res.status, seq: inst.current()!.match.seq }
      },
    )
    expect(status).toBe(101)
    expect(seq).toBe(1)
    expect(await old.whenClosed()).toMatchObject({ code: SUPERSEDED_CLOSE.code })
    // The other tab plays on, and the player never left: no grace of theirs runs.
    otherTab.send({ type: 'ping' })
    await otherTab.nextOf('pong')
    const graces = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>('SELECT count(*) AS n FROM timers WHERE player_id = ?', pa)
          .one().n,
    )
    expect(graces).toBe(0)
    // The resumed socket (through the Worker this time) gets the action's event with its ref.
    const again = await connect(sessionId, tokens[pa]!, { since: 0, conn: 'tab-1' })
    await again.nextOf('resumed')
    expect(await again.nextOf('event')).toMatchObject({ seq: 1, ref: 'a-1' })
    expect(await seqOf(sessionId)).toBe(1)
    again.close()
    otherTab.close()
  })

  it('is refused 422 when it is not 1 to 64 letters, digits, _ or -; a refused upgrade closes nothing', async () => {
    await clearOfMinuteTurn(5_000)
    const { sessionId, tokens, players } = await relay(1)
    const token = tokens[players[0]!]!
    const open = await connect(sessionId, token, { conn: 'c-1' })
    await open.nextOf('welcome')
    for (const conn of ['', 'has space', 'x'.repeat(65), 'a/b', 'é']) {
      const refused = await problem(await upgrade(sessionId, token, { conn }))
      expect(refused.status, conn).toBe(422)
      expect(refused.type, conn).toMatch(/validation$/)
      if (conn.length <= 64) {
        expect(refused.body.errors).toEqual([{ path: 'conn', message: CONNECTION_ID_RULE }])
      }
    }
    // Malformed, a conn or a since is refused before the connect is counted: a player past
    // SESSION_CONNECTS_PER_MINUTE in bad ones still connects (the one open counts as one).
    const limited = (q: string) =>
      callWithEnv({ SESSION_CONNECTS_PER_MINUTE: '2' }, `/v1/sessions/${sessionId}?${q}`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${token}` },
      })
    for (const q of ['conn=a.b', 'since=-1', 'since=1e3', 'since=01', 'since=', 'since=1.5']) {
      const refused = await problem(await limited(q))
      expect(refused.status, q).toBe(422)
      expect((refused.body.errors as { path: string }[])[0]!.path, q).toBe(q.split('=')[0])
    }
    const counted = await limited('conn=c-2')
    expect(counted.status).toBe(101)
    counted.webSocket!.accept()
    counted.webSocket!.close(1000)
    // The same conn with a since the session cannot serve: 422, and the open socket stays.
    expect((await upgrade(sessionId, token, { conn: 'c-1', since: 99 })).status).toBe(422)
    open.send({ type: 'ping' })
    await open.nextOf('pong')
    expect(open.closed).toBeNull()
    open.close()
  })
})
