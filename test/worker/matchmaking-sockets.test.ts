import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { RECONNECT_NEON_WAIT_MS } from '../../workers/routes/matchmaking.ts'
import { NEON_QUERY_TIMEOUT_MS } from '../../workers/db/client.ts'
import { describe, expect, it, onTestFinished } from 'vitest'
import {
  FRAME_BURST,
  FRAMES_PER_SECOND,
  IDLE_CLOSE,
  IDLE_SOCKET_MS,
  MAX_PENDING_FRAMES,
  TOKEN_EXPIRED_CLOSE,
  type MatchPool,
} from '../../durable-objects/match-pool.ts'
import { verifySessionToken } from '../../workers/lib/session-token.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { SILENT_SOCKET_MS } from '../../workers/lib/socket-close.ts'
import { SERVER_SILENCE_MS } from '../../client/src/socket.ts'
import { FLOOD_WINDOW_MS, FRAME_CLOSE_SIZE, MAX_REFUSED_FRAMES } from '../../workers/lib/flood.ts'
import { holdLock, pg } from './helpers/boards.ts'
import { ADMIN_KEY, call, callWithEnv, json, newGuest, problem } from './helpers/http.ts'
import {
  alarmAt,
  createQueue,
  DUEL,
  fireAlarm,
  newClock,
  poolOf,
  joinFor,
  recordingCreator,
  rig,
  holdSigning,
  setRating,
  ticketOf,
  type Found,
  type Queued,
} from './helpers/matchmaking.ts'
import {
  closed,
  collect,
  connect,
  nextMessage,
  nextOfType,
  track,
  until,
  upgrade,
} from './helpers/sockets.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import type { SessionCreator } from '../../workers/matchmaking/session.ts'

interface ErrorFrame {
  code: string
  message: string
}

/** The disconnect grace deadline the pool stored for a ticket, once set. */
function graceOf(queue: string, ticketId: string, region?: string): Promise<number | undefined> {
  return runInDurableObject(poolOf(queue, region), (_i: MatchPool, state) => {
    const row = state.storage.sql
      .exec<{ grace_until: number | null }>(
        `SELECT grace_until FROM tickets WHERE id = ?`,
        ticketId,
      )
      .toArray()[0]
    return row?.grace_until ?? undefined
  })
}

async function waitingCount(queue: string): Promise<number> {
  return runInDurableObject(
    poolOf(queue),
    async (inst: MatchPool) => (await inst.stats('eu')).waitingTickets,
  )
}

/** A player waiting on a socket in a new queue whose tickets live 30 s, the pool on a test clock. */
async function waitingOnSocket() {
  const q = await createQueue({ ticketTtlSeconds: 30 })
  const clock = newClock()
  await rig(q, clock)
  const g = await newGuest()
  const ws = await connect(`/v1/matchmaking/${q}`, g.token)
  ws.send(JSON.stringify({ type: 'join' }))
  const { ticketId, expiresIn } = await nextOfType<Queued>(ws, 'queued')
  // The time left by the pool's clock, which clients time their wait by.
  expect(expiresIn).toBe(30_000)
  return { q, clock, g, ws, ticketId }
}

/** A guest waiting on a socket ticket in a new queue whose pool has a test clock and a 10 s grace. */
async function queuedOnSocket() {
  const q = await createQueue()
  const clock = newClock()
  await rig(q, clock, { graceMs: 10_000 })
  const g = await newGuest()
  const ws = await connect(`/v1/matchmaking/${q}`, g.token)
  ws.send(JSON.stringify({ type: 'join' }))
  const { ticketId } = await nextOfType<Queued>(ws, 'queued')
  return { q, clock, g, ws, ticketId }
}

describe('sockets: join to match_found', () => {
  it('two players (header and ?token=) are queued, then each gets match_found with its own session token', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const wa = await connect(`/v1/matchmaking/${q}?region=eu`, a.token)
    const wb = await connect(`/v1/matchmaking/${q}`, b.token, 'query')
    wa.send(JSON.stringify({ type: 'join' }))
    const qa = await nextOfType<Queued>(wa, 'queued')
    expect(qa.ticketId.startsWith(`${q}:eu:`)).toBe(true)
    expect(qa.existing).toBe(false)
    wb.send(JSON.stringify({ type: 'join', attributes: { mode: 'ranked' } }))
    const qb = await nextOfType<Queued>(wb, 'queued')
    const [fa, fb] = await Promise.all([
      nextOfType<Found>(wa, 'match_found'),
      nextOfType<Found>(wb, 'match_found'),
    ])
    expect(fa.sessionId).toBe(fb.sessionId)
    expect(fa.ticketId).toBe(qa.ticketId)
    expect(fb.ticketId).toBe(qb.ticketId)
    expect(fa.players.map((p) => p.playerId).sort()).toEqual([a.playerId, b.playerId].sort())
    expect(await verifySessionToken(env, fa.token, fa.sessionId)).toBe(a.playerId)
    expect(await verifySessionToken(env, fb.token, fb.sessionId)).toBe(b.playerId)
    await expect(verifySessionToken(env, fa.token, 'another-session')).rejects.toThrow()
    expect((await closed(wa)).code).toBe(1000)
    const tb = await ticketOf(qb.ticketId, b.token)
    expect(tb.status).toBe('matched')
    expect(tb.attributes).toEqual({ mode: 'ranked' })
  })

  it('a match whose session tokens cannot be signed still tells each socket match_found, without a token, and closes it (the client reads its ticket over HTTP)', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const wa = await connect(`/v1/matchmaking/${q}`, a.token)
    const wb = await connect(`/v1/matchmaking/${q}`, b.token)
    // The pool's secret is gone (a misconfigured deploy): signing throws.
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      const holder = inst as unknown as { env: typeof env }
      const configured = holder.env
      holder.env = { ...configured, AUTH_SECRET: undefined } as typeof env
      onTestFinished(() => {
        holder.env = configured
      })
    })
    wa.send(JSON.stringify({ type: 'join' }))
    await nextOfType<Queued>(wa, 'queued')
    wb.send(JSON.stringify({ type: 'join' }))
    const [fa, fb] = await Promise.all([
      nextOfType<Found>(wa, 'match_found'),
      nextOfType<Found>(wb, 'match_found'),
    ])
    expect(fa.sessionId).toBe(fb.sessionId)
    expect(fa).not.toHaveProperty('token')
    expect(fb).not.toHaveProperty('token')
    expect((await closed(wa)).code).toBe(1000)
    expect((await closed(wb)).code).toBe(1000)
  })

  it('a join on a socket while its match is told (a second tap, another key) keeps the socket for the new ticket: its wait gets a grace when the socket goes', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    const wa = await connect(`/v1/matchmaking/${q}`, a.token)
    const wb = await connect(`/v1/matchmaking/${q}`, b.token)
    wa.send(JSON.stringify({ type: 'join', joinKey: 'first' }))
    const first = await nextOfType<Queued>(wa, 'queued')
    // While the match's tokens are signed, a's second join arrives on the same socket.
    let interleaved = false
    type Signing = {
      sessionToken(sessionId: string, playerId: string): Promise<string>
      ctx: DurableObjectState
      webSocketMessage(ws: WebSocket, message: string): Promise<void>
    }
    await replaceMethod<Signing, 'sessionToken'>(
      poolOf(q),
      'sessionToken',
      (original) =>
        async function (this: Signing, sessionId: string, playerId: string) {
          if (!interleaved && playerId === a.playerId) {
            interleaved = true
            const [socket] = (this as unknown as { ctx: DurableObjectState }).ctx.getWebSockets(
              `p:${a.playerId}`,
            )
            await this.webSocketMessage(
              socket!,
              JSON.stringify({ type: 'join', joinKey: 'second' }),
            )
          }
          return original.call(this, sessionId, playerId)
        },
    )
    wb.send(JSON.stringify({ type: 'join' }))
    const second = await nextOfType<Queued>(wa, 'queued')
    const found = await nextOfType<Found>(wa, 'match_found')
    expect(interleaved).toBe(true)
    expect(found.ticketId).toBe(first.ticketId)
    expect(second.ticketId).not.toBe(first.ticketId)
    expect((await closed(wb)).code).toBe(1000)
    // a's socket stays open on its new ticket, which waits.
    expect((await ticketOf(second.ticketId, a.token)).status).toBe('waiting')
    expect(await graceOf(q, second.ticketId)).toBeUndefined()
    // Its socket gone, the new ticket's grace runs: it is not left waiting, matchable, till its TTL.
    wa.close(1000, 'bye')
    await until(() => graceOf(q, second.ticketId), 5000, "the new ticket's grace")
  })

  it('refuses unauthenticated, forged and admin sockets before the upgrade, and unknown regions', async () => {
    const q = await createQueue()
    const none = await problem(await upgrade(`/v1/matchmaking/${q}`))
    expect(none.status).toBe(401)
    expect(none.contentType).toBe('application/problem+json')
    expect((await upgrade(`/v1/matchmaking/${q}`, 'x.y.z')).status).toBe(401)
    expect((await upgrade(`/v1/matchmaking/${q}`, 'not-the-admin-key')).status).toBe(401)
    expect((await upgrade(`/v1/matchmaking/${q}`, ADMIN_KEY)).status).toBe(403)
    // In a URL (which logs keep) the admin key is not even compared: 401, as for any non-token.
    const inUrl = await problem(await upgrade(`/v1/matchmaking/${q}`, ADMIN_KEY, 'query'))
    expect({ status: inUrl.status, type: inUrl.type }).toEqual({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    const g = await newGuest()
    // A player token in the URL still opens the socket.
    const viaQuery = await upgrade(`/v1/matchmaking/${q}`, g.token, 'query')
    expect(viaQuery.status).toBe(101)
    viaQuery.webSocket!.accept()
    viaQuery.webSocket!.close(1000)
    const region = await problem(await upgrade(`/v1/matchmaking/${q}?region=mars`, g.token))
    expect(region.status).toBe(422)
    expect(await waitingCount(q)).toBe(0)
  })

  it("takes a browser's token from its subprotocols, answering nexus.v1 (never the token); the admin key there is not compared", async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const res = await upgrade(`/v1/matchmaking/${q}`, g.token, 'protocol')
    expect(res.status).toBe(101)
    expect(res.headers.get('sec-websocket-protocol')).toBe('nexus.v1')
    const ws = res.webSocket!
    ws.accept()
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued>(track(ws), 'queued')
    expect((await ticketOf(queued.ticketId, g.token)).players).toEqual([g.playerId])
    ws.close(1000)
    // A token that the server could not answer for (without nexus.v1, a browser would close the
    // socket it let in), two tokens, an empty one: 422, before anything opens.
    const offers = [
      `nexus.token.${g.token}`,
      `nexus.v1, nexus.token.${g.token}, nexus.token.${g.token}`,
      'nexus.v1, nexus.token.',
    ]
    for (const offer of offers) {
      const refused = await problem(
        await call(`/v1/matchmaking/${q}`, {
          headers: { upgrade: 'websocket', 'sec-websocket-protocol': offer },
        }),
      )
      expect(refused, offer).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(refused.body.errors).toMatchObject([{ path: 'sec-websocket-protocol' }])
    }
    // The Authorization header comes first: a player's own socket, whatever the protocols carry.
    const both = await call(`/v1/matchmaking/${q}`, {
      headers: {
        upgrade: 'websocket',
        authorization: `Bearer ${g.token}`,
        'sec-websocket-protocol': 'nexus.v1, nexus.token.x.y.z',
      },
    })
    expect(both.status).toBe(101)
    expect(both.headers.get('sec-websocket-protocol')).toBe('nexus.v1')
    both.webSocket!.accept()
    both.webSocket!.close(1000)
    // The protocols' token comes before the query's.
    const overQuery = await problem(
      await call(`/v1/matchmaking/${q}?token=${g.token}`, {
        headers: { upgrade: 'websocket', 'sec-websocket-protocol': 'nexus.v1, nexus.token.x.y.z' },
      }),
    )
    expect(overQuery.status).toBe(401)
    const admin = await problem(await upgrade(`/v1/matchmaking/${q}`, ADMIN_KEY, 'protocol'))
    expect(admin).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    const long = await problem(await upgrade(`/v1/matchmaking/${q}`, 'x'.repeat(4097), 'protocol'))
    expect(long).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(long.body.errors).toEqual([
      { path: 'sec-websocket-protocol', message: 'a token of at most 4096 characters' },
    ])
    const forged = await problem(await upgrade(`/v1/matchmaking/${q}`, 'x.y.z', 'protocol'))
    expect(forged.status).toBe(401)
    // One socket took a ticket; the refused ones took nothing.
    expect(await waitingCount(q)).toBe(1)
  })

  it('answers a close without a code, so the client’s close completes', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    // `ws.close()` with no arguments: the pool sees 1005, a code it may not send back, but it
    // must still answer the close.
    for (let i = 0; i < 5; i++) {
      const ws = await connect(`/v1/matchmaking/${q}`, g.token)
      ws.close()
      expect(await closed(ws)).toEqual({ code: 1005, reason: '' })
    }
  })

  it('a pool holds at most its limit of sockets (the runtime takes 32,768 an object): one past it is 503 with Retry-After, and a place freed takes one again', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.maxSockets = 2
    })
    const [a, b, c] = await Promise.all([newGuest(), newGuest(), newGuest()])
    const first = await connect(`/v1/matchmaking/${q}`, a.token)
    const second = await connect(`/v1/matchmaking/${q}`, b.token)
    const refused = await upgrade(`/v1/matchmaking/${q}`, c.token)
    expect(refused.status).toBe(503)
    expect(refused.headers.get('retry-after')).toBe('5')
    expect((await problem(refused)).body).toMatchObject({
      type: 'urn:nexus:problem:unavailable',
      limit: 2,
    })
    first.close(1000)
    await closed(first)
    const third = await until(async () => {
      const res = await upgrade(`/v1/matchmaking/${q}`, c.token)
      if (res.status !== 101) return undefined
      res.webSocket!.accept()
      return track(res.webSocket!)
    })
    third.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<Queued>(third, 'queued')).existing).toBe(false)
    for (const ws of [second, third]) ws.close(1000)
  })

  it('a full pool closes the sockets that held no ticket and never pinged or sent a frame for IDLE_SOCKET_MS (4008) to make room; one that pinged, or holds a ticket, keeps its place', async () => {
    const clock = newClock()
    const q = await createQueue()
    await rig(q, clock)
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.maxSockets = 3
    })
    const [a, b, c, d] = await Promise.all([newGuest(), newGuest(), newGuest(), newGuest()])
    const idle = await connect(`/v1/matchmaking/${q}`, a.token)
    const pinger = await connect(`/v1/matchmaking/${q}`, b.token)
    pinger.send('{"type":"ping"}')
    await nextOfType(pinger, 'pong')
    const holder = await connect(`/v1/matchmaking/${q}`, c.token)
    holder.send(JSON.stringify({ type: 'join' }))
    await nextOfType<Queued>(holder, 'queued')
    // Nobody idle that long yet: full.
    const refused = await upgrade(`/v1/matchmaking/${q}`, d.token)
    expect(refused.status).toBe(503)
    await refused.body?.cancel()
    clock.t += IDLE_SOCKET_MS
    const newcomer = await until(async () => {
      const res = await upgrade(`/v1/matchmaking/${q}`, d.token)
      if (res.status !== 101) {
        await res.body?.cancel()
        return undefined
      }
      res.webSocket!.accept()
      return track(res.webSocket!)
    })
    expect(await closed(idle)).toEqual(IDLE_CLOSE)
    // The others kept theirs: the ticket still waits on its socket, and the pinger is answered.
    const waiting = await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.stats('eu'))
    expect(waiting.waitingTickets).toBe(1)
    holder.send('{"type":"ping"}')
    await nextOfType(holder, 'pong')
    pinger.send('{"type":"ping"}')
    await nextOfType(pinger, 'pong')
    for (const ws of [pinger, holder, newcomer]) ws.close(1000)
  })

  it('a player holds at most 4 sockets on one pool: a 5th is refused with 409 and the open ones keep working', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const [g, other] = await Promise.all([newGuest(), newGuest()])
    const open: WebSocket[] = []
    for (let i = 0; i < 4; i++) open.push(await connect(`/v1/matchmaking/${q}`, g.token))
    const fifth = await problem(await upgrade(`/v1/matchmaking/${q}`, g.token))
    expect(fifth.status).toBe(409)
    expect(fifth.contentType).toBe('application/problem+json')
    expect(fifth.body.type).toBe('urn:nexus:problem:conflict')
    // Another player is not affected, and a closed socket frees its place.
    const o = await connect(`/v1/matchmaking/${q}`, other.token)
    open[3]!.close(1000)
    await closed(open[3]!)
    await until(async () => {
      const res = await upgrade(`/v1/matchmaking/${q}`, g.token)
      if (res.status !== 101) return undefined
      res.webSocket!.accept()
      res.webSocket!.close(1000)
      return true
    })
    open[0]!.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<Queued>(open[0]!, 'queued')).existing).toBe(false)
    for (const ws of [...open.slice(0, 3), o]) ws.close(1000)
  })

  it("a socket the pool closed whose client never answers the close counts against the player's 4 once a few seconds have passed, a hibernation between included; of those whose client went quiet, two do not", async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    // Sockets the pool closed whose clients never answered (a test client answers at once, so
    // the pool is shown them as the runtime would list them: closing, under the player's tag):
    // one whose client still pings, three that pinged long ago and then nothing (phones gone).
    await runInDurableObject(poolOf(q), (_inst: MatchPool, state) => {
      // With an attachment, as the runtime keeps one across a hibernation.
      const closing = () => {
        let att: unknown = { playerId: g.playerId, rating: 1500, ticketId: null }
        return {
          readyState: WebSocket.CLOSING,
          deserializeAttachment: () => att,
          serializeAttachment: (value: unknown) => (att = value),
        } as unknown as WebSocket
      }
      const holding = closing()
      const gone = [closing(), closing(), closing()]
      const list = state.getWebSockets.bind(state)
      state.getWebSockets = (tag?: string) =>
        tag === `p:${g.playerId}` ? [...list(tag), holding, ...gone] : list(tag)
      const pinged = state.getWebSocketAutoResponseTimestamp.bind(state)
      state.getWebSocketAutoResponseTimestamp = (ws: WebSocket) =>
        ws === holding ? new Date(8.64e15) : gone.includes(ws) ? new Date(0) : pinged(ws)
    })
    // Just seen closing: the player's next socket is not held up by them (an answer may be on
    // its way).
    const open = [await connect(`/v1/matchmaking/${q}`, g.token)]
    // The object hibernates: what its instance held in memory is gone, the sockets are not.
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      Reflect.set(inst, 'closingSeen', new WeakMap())
    })
    // Seconds later the one still pinging counts, two of the quiet ones do not, the third does:
    // with two open, the player holds 4.
    clock.t += 5_000
    open.push(await connect(`/v1/matchmaking/${q}`, g.token))
    const refused = await problem(await upgrade(`/v1/matchmaking/${q}`, g.token))
    expect(refused.status).toBe(409)
    for (const ws of open) ws.close(1000)
  })

  it('a second join on the socket returns the same ticket', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const first = await nextOfType<Queued>(ws, 'queued')
    ws.send(JSON.stringify({ type: 'join', rating: 9999 }))
    const second = await nextOfType<Queued>(ws, 'queued')
    expect(second.ticketId).toBe(first.ticketId)
    expect(second.existing).toBe(true)
    expect(await waitingCount(q)).toBe(1)
    ws.close(1000)
  })
})

describe('sockets: the rating a join queues at', () => {
  it("a join past its socket's claim's age (a socket kept open for hours) queues at the rating Neon has now, not the one read at connect", async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    await setRating(g.playerId, 1500)
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    // Games played meanwhile over other sockets: the rating climbed.
    await setRating(g.playerId, 1900)
    // The claim the socket took when it connected grows too old to join with (5 minutes).
    await runInDurableObject(poolOf(q), (_inst: MatchPool, state) => {
      for (const socket of state.getWebSockets()) {
        const att = socket.deserializeAttachment() as { claim?: { claimedAt: number } | null }
        if (att.claim) socket.serializeAttachment({ ...att, claim: { ...att.claim, claimedAt: 0 } })
      }
    })
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<{ ticketId: string }>(ws, 'queued')
    const players = await runInDurableObject(poolOf(q), (_inst: MatchPool, state) =>
      JSON.parse(
        state.storage.sql
          .exec<{ players: string }>(`SELECT players FROM tickets WHERE id = ?`, ticketId)
          .one().players,
      ),
    )
    expect(players).toEqual([{ playerId: g.playerId, rating: 1900 }])
    ws.close(1000)
  })
})

describe('sockets: a newer configuration', () => {
  it('a socket bringing a newer config than the pool holds makes the pool look for matches again', async () => {
    const q = await createQueue({ maxRatingGap: 50, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const [low, high] = [`low-${q}`, `high-${q}`]
    await setRating(low, 1000)
    await setRating(high, 1400)
    const a = await joinFor(q, low)
    const b = await joinFor(q, high)
    expect([a.status, b.status]).toEqual(['waiting', 'waiting'])
    // Nothing to match until a ticket expires: the alarm waits for that.
    expect((await alarmAt(q))!).toBeGreaterThan(clock.t + 60_000)
    // The studio widens the gap, but the push to the pool is lost: only Neon has version 2.
    await pg()`update queues
      set config = jsonb_set(config, '{maxRatingGap}', '500'), version = version + 1
      where id = ${q}`
    const guest = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}?region=eu`, guest.token)
    // The socket's connect carried version 2: matching is due now, not at the expiry.
    expect((await alarmAt(q))!).toBeLessThanOrEqual(clock.t)
    await fireAlarm(q)
    expect((await ticketOf(a.ticketId)).status).toBe('matched')
    expect((await ticketOf(b.ticketId)).match?.sessionId).toBe(
      (await ticketOf(a.ticketId)).match?.sessionId,
    )
    ws.close()
  })

  it('an HTTP join the pool refuses still brings its newer config: matching is due now', async () => {
    const q = await createQueue({
      teamSize: 2,
      maxPartySize: 2,
      rules: 'relay',
      maxRatingGap: 50,
      widenPerSecond: 0,
    })
    const clock = newClock()
    await rig(q, clock)
    const [low, low2, high, high2] = ['low', 'low2', 'high', 'high2'].map((n) => `${n}-${q}`) as [
      string,
      string,
      string,
      string,
    ]
    for (const p of [low, low2]) await setRating(p, 1000)
    for (const p of [high, high2]) await setRating(p, 1400)
    const a = await joinFor(q, low, { party: [low, low2] })
    const b = await joinFor(q, high, { party: [high, high2] })
    expect((await alarmAt(q))!).toBeGreaterThan(clock.t + 60_000)
    await pg()`update queues
      set config = jsonb_set(config, '{maxRatingGap}', '500'), version = version + 1
      where id = ${q}`
    // A join refused by the pool (its party names a player who already waits), carrying version 2.
    const refused = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: `x-${q}`, party: [`x-${q}`, low] }, ADMIN_KEY),
    )
    expect(refused.status).toBe(409)
    expect((await alarmAt(q))!).toBeLessThanOrEqual(clock.t)
    await fireAlarm(q)
    expect((await ticketOf(a.ticketId)).status).toBe('matched')
    expect((await ticketOf(b.ticketId)).status).toBe('matched')
  })
})

describe('sockets: cancel, malformed frames', () => {
  it('cancel leaves the queue; cancelling with nothing waiting is an error frame', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'cancel' }))
    expect((await nextOfType<ErrorFrame>(ws, 'error')).code).toBe('not_queued')
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    ws.send(JSON.stringify({ type: 'cancel' }))
    const c = await nextOfType<{ ticketId: string; reason: string }>(ws, 'cancelled')
    expect(c).toMatchObject({ ticketId, reason: 'cancelled' })
    const t = await ticketOf(ticketId, g.token)
    expect(t.status).toBe('cancelled')
    expect(t.reason).toBe('cancelled')
    expect(await waitingCount(q)).toBe(0)
  })

  it("a cancel sent right behind a socket's join is answered while the matches that join's step made still wait for their sessions: the ticket leaves the queue", async () => {
    const q = await createQueue()
    const clock = newClock()
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    onTestFinished(() => release())
    const holding: SessionCreator = async (setup, matchedAt) => {
      await held
      return recordingCreator(setup, matchedAt)
    }
    await rig(q, clock, { creator: holding })
    // Two players 300 apart, matchable once their windows have widened (100 + 10 a second).
    const [a, b] = [`${q}-a`, `${q}-b`]
    await setRating(a, 100)
    await setRating(b, 400)
    const ta = await joinFor(q, a)
    expect((await joinFor(q, b)).status).toBe('waiting')
    clock.t += 20_000
    // A guest (1500) joins on a socket: its step matches a and b, whose session is held.
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    ws.send(JSON.stringify({ type: 'cancel' }))
    expect(await nextOfType<{ ticketId: string }>(ws, 'cancelled')).toMatchObject({ ticketId })
    expect((await ticketOf(ta.ticketId)).status).toBe('matching')
    release()
    expect((await ticketOf(ta.ticketId, ADMIN_KEY, 5)).status).toBe('matched')
    expect((await ticketOf(ticketId, g.token)).status).toBe('cancelled')
  })

  it('answers each malformed frame with an error frame to that socket only and changes nothing', async () => {
    const q = await createQueue({ maxRatingGap: 0, widenPerSecond: 0 })
    await rig(q, newClock())
    const [g, other] = await Promise.all([newGuest(), newGuest()])
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    const bystander = await connect(`/v1/matchmaking/${q}`, other.token)
    // Before any ticket: a bad join creates none.
    ws.send(JSON.stringify({ type: 'join', attributes: { nested: { no: 1 } } }))
    expect((await nextOfType<ErrorFrame>(ws, 'error')).code).toBe('invalid')
    expect(await waitingCount(q)).toBe(0)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')

    const bad: [string | ArrayBuffer, string][] = [
      ['{not json', 'malformed'],
      ['"join"', 'unknown_type'],
      ['null', 'unknown_type'],
      [JSON.stringify({ type: 'dance' }), 'unknown_type'],
      [JSON.stringify({ type: 'cancel', now: true }), 'invalid'],
      [JSON.stringify({ type: 'join', party: [g.playerId, 'friend'] }), 'party_forbidden'],
      [JSON.stringify({ type: 'join', party: 'everyone' }), 'invalid'],
      [JSON.stringify({ type: 'join', pad: 'x'.repeat(5000) }), 'too_large'],
      // 2,212 characters but 6,308 bytes of UTF-8: the limit counts bytes.
      [
        JSON.stringify({
          type: 'join',
          attributes: Object.fromEntries(
            Array.from({ length: 16 }, (_, i) => [`k${i}`, '€'.repeat(128)]),
          ),
        }),
        'too_large',
      ],
      [new TextEncoder().encode('{"type":"cancel"}').buffer as ArrayBuffer, 'malformed'],
    ]
    for (const [frame, code] of bad) {
      ws.send(frame)
      const e = await nextOfType<ErrorFrame>(ws, 'error')
      expect(e.code, String(frame).slice(0, 40)).toBe(code)
      expect(typeof e.message).toBe('string')
    }
    ws.send(JSON.stringify({ type: 'ping' }))
    await nextOfType(ws, 'pong')
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
    expect(await waitingCount(q)).toBe(1)
    expect(collect(bystander)).toEqual([])
    ws.close(1000)
    bystander.close(1000)
  })

  const types = (ws: WebSocket) =>
    collect(ws).map((m) => {
      const f = m as { type: string; code?: string }
      return f.type === 'error' ? `error:${f.code}` : f.type
    })
  const count = (ws: WebSocket, type: string) => types(ws).filter((t) => t === type).length

  // Frames the pool itself answers: a ping the runtime answers alone, as `{"type":"ping"}` is.
  const CANCEL = JSON.stringify({ type: 'cancel' })

  it(`answers frames past ${FRAME_BURST} at once, or ${FRAMES_PER_SECOND} a second, rate_limited, and drops them`, async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const frameTime = { t: 0 }
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.frameClock = () => frameTime.t
    })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    for (let i = 0; i < FRAME_BURST + 5; i++) ws.send(CANCEL)
    await until(
      async () => (types(ws).length === FRAME_BURST + 5 ? true : undefined),
      5000,
      'answers',
    )
    expect(count(ws, 'error:not_queued')).toBe(FRAME_BURST)
    expect(count(ws, 'error:rate_limited')).toBe(5)
    // A second later the allowance has grown by the rate, and a join is taken as usual; the
    // cancel after it is past the allowance, so the ticket stays.
    frameTime.t += 1000
    for (let i = 0; i < FRAMES_PER_SECOND - 1; i++) ws.send(CANCEL)
    ws.send(JSON.stringify({ type: 'join' }))
    ws.send(CANCEL)
    await nextOfType<Queued>(ws, 'queued')
    await until(
      async () => (count(ws, 'error:rate_limited') === 6 ? true : undefined),
      5000,
      'refusal',
    )
    expect(count(ws, 'error:not_queued')).toBe(FRAME_BURST + FRAMES_PER_SECOND - 1)
    expect(await waitingCount(q)).toBe(1)
    // Pings are answered by the runtime, outside the allowance.
    ws.send(JSON.stringify({ type: 'ping' }))
    await nextOfType(ws, 'pong')
    ws.close(1000)
  })

  it('answers a player past a third of JOINS_PER_MINUTE socket joins at once rate_limited, across their sockets and a hibernation, queueing nothing; the allowance grows by the minute', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const joinTime = { t: 0 }
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.frameClock = () => joinTime.t
    })
    const g = await newGuest()
    // JOINS_PER_MINUTE is 30 by default: 10 at once, then one every 2 s.
    const atOnce = 10
    const joinOnNewSocket = async () => {
      const ws = await connect(`/v1/matchmaking/${q}`, g.token)
      ws.send(JSON.stringify({ type: 'join' }))
      const answer = await until(async () => {
        const seen = types(ws).find((t) => t === 'queued' || t.startsWith('error:'))
        return seen
      })
      return { ws, answer }
    }
    for (let i = 0; i < atOnce; i++) {
      const { ws, answer } = await joinOnNewSocket()
      expect(answer, `join ${i + 1}`).toBe('queued')
      ws.send(CANCEL)
      await nextOfType(ws, 'cancelled')
      ws.close(1000)
    }
    const allowance = () =>
      runInDurableObject(poolOf(q), (_inst: MatchPool, state) =>
        state.storage.sql
          .exec<{ tokens: number; at: number }>(
            `SELECT tokens, at FROM join_allowance WHERE player_id = ?`,
            g.playerId,
          )
          .toArray(),
      )
    const spent = await allowance()
    expect(spent).toHaveLength(1)
    // Half a second on: a quarter of a join back, not enough for one.
    joinTime.t += 500
    const refused = await joinOnNewSocket()
    expect(refused.answer).toBe('error:rate_limited')
    // It says when a join will be taken, as HTTP's Retry-After: a quarter of one is back, the
    // rest comes in 1.5 s (one every 2 s), so 2 s.
    expect(collect(refused.ws).find((f) => (f as { type: string }).type === 'error')).toMatchObject(
      { retryAfter: 2 },
    )
    expect(await waitingCount(q)).toBe(0)
    // A refused join writes nothing (a client sending them at the frame rate would have the
    // pool write at that rate).
    expect(await allowance()).toEqual(spent)
    // The pool hibernates (the player waits without a frame): its instance's memory is new, and
    // the allowance is still spent.
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      Reflect.set(inst, 'joinTokens', new Map())
    })
    const afterSleep = await joinOnNewSocket()
    expect(afterSleep.answer).toBe('error:rate_limited')
    afterSleep.ws.close(1000)
    expect(await waitingCount(q)).toBe(0)
    // Two seconds after the last join, one more.
    joinTime.t += 1_500
    const keyed = JSON.stringify({ type: 'join', joinKey: `k-${crypto.randomUUID()}` })
    refused.ws.send(keyed)
    const { ticketId } = await nextOfType<Queued>(refused.ws, 'queued')
    expect(await waitingCount(q)).toBe(1)
    // The same join sent again (its answer lost on a socket that dropped) makes no new ticket,
    // and costs no allowance: it is answered with the ticket, spent allowance or not.
    const back = await connect(`/v1/matchmaking/${q}`, g.token)
    // A socket connecting while the player's ticket waits is told of it first.
    await nextOfType<Queued>(back, 'queued')
    back.send(keyed)
    const answer = await nextMessage<{ type: string; ticketId?: string }>(
      back,
      (m) => m.type === 'queued' || m.type === 'error',
    )
    expect(answer).toMatchObject({ type: 'queued', ticketId })
    refused.ws.close(1000)
    back.close(1000)
  })

  it(`closes a socket that keeps sending past its allowance (over ${MAX_REFUSED_FRAMES} refused in ${FLOOD_WINDOW_MS / 1000} s), as if it had gone: its ticket's grace starts`, async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const frameTime = { t: 0 }
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.frameClock = () => frameTime.t
    })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    // Frames the pool refuses (none changes anything), far past the allowance, with no pause.
    const junk = JSON.stringify({ type: 'bogus' })
    const flood = FRAME_BURST + MAX_REFUSED_FRAMES + 50
    for (let i = 0; i < flood; i++) ws.send(junk)
    expect(await closed(ws)).toMatchObject({ code: 1008 })
    // Each frame past the allowance was answered until then; the one past the limit closed it.
    expect(count(ws, 'error:rate_limited')).toBe(MAX_REFUSED_FRAMES)
    expect(await graceOf(q, ticketId)).toBe(clock.t + 10_000)
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
  })

  it(`closes at once (1009) a socket sending a frame many times the limit (over ${FRAME_CLOSE_SIZE} characters), as if it had gone: its ticket's grace starts; one a little over is refused and the socket stays`, async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    ws.send(JSON.stringify({ type: 'cancel', pad: 'x'.repeat(5_000) }))
    expect((await nextOfType<ErrorFrame>(ws, 'error')).code).toBe('too_large')
    ws.send(JSON.stringify({ type: 'cancel', pad: 'x'.repeat(FRAME_CLOSE_SIZE) }))
    expect(await closed(ws)).toMatchObject({ code: 1009 })
    // Not read as the cancel it held: the ticket waits out its grace.
    expect(await graceOf(q, ticketId)).toBe(clock.t + 10_000)
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
    // A binary frame as large, too.
    const other = await newGuest()
    const bin = await connect(`/v1/matchmaking/${q}`, other.token)
    bin.send(new Uint8Array(FRAME_CLOSE_SIZE + 1))
    expect(await closed(bin)).toMatchObject({ code: 1009 })
  })

  it('a socket the pool closed is heard no more: a cancel its client sends after the close (a flooding client never answers it) leaves the ticket to its grace', async () => {
    const { q, g, ticketId } = await queuedOnSocket()
    await runInDurableObject(poolOf(q), async (inst: MatchPool, state) => {
      const [server] = state.getWebSockets()
      server!.close(1008, 'closed by the test')
      await inst.webSocketMessage(server!, JSON.stringify({ type: 'cancel' }))
    })
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
  })

  it(`answers a frame rate_limited while ${MAX_PENDING_FRAMES} wait behind a join that awaits Neon`, async () => {
    const q = await createQueue()
    await rig(q, newClock())
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      // Long enough for the refused frames to be answered first on a slow machine, whose
      // stalls last hundreds of milliseconds.
      inst.neonTimeoutMs = 2_000
      // Neon does not answer the party read.
      inst.partyReader = () => new Promise(() => {})
    })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join', party: [g.playerId] }))
    for (let i = 0; i < MAX_PENDING_FRAMES + 2; i++) ws.send(CANCEL)
    // The join and the 7 cancels after it wait their turn; the last 3 are refused at once.
    await until(
      async () => (count(ws, 'error:not_queued') === MAX_PENDING_FRAMES - 1 ? true : undefined),
      10_000,
      'answers',
    )
    expect(types(ws)).toEqual([
      'error:rate_limited',
      'error:rate_limited',
      'error:rate_limited',
      'error:unavailable',
      ...Array.from({ length: MAX_PENDING_FRAMES - 1 }, () => 'error:not_queued'),
    ])
    expect(await waitingCount(q)).toBe(0)
    ws.close(1000)
  })

  it('a frame too large that waits behind a join awaiting Neon waits as a refusal, not as its text, and is answered too_large in its turn', async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const waiting: unknown[] = []
    type Framing = { handleFrame(ws: WebSocket, message: unknown): Promise<void> }
    await replaceMethod<Framing, 'handleFrame'>(
      poolOf(q),
      'handleFrame',
      (handleFrame) =>
        function (this: Framing, ws, message) {
          waiting.push(typeof message === 'string' ? message.length : message)
          return handleFrame.call(this, ws, message)
        },
    )
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.neonTimeoutMs = 500
      // Neon does not answer the party read.
      inst.partyReader = () => new Promise(() => {})
    })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join', party: [g.playerId] }))
    // Under FRAME_CLOSE_SIZE (larger closes the socket at once), far over the 4 KiB limit.
    ws.send(JSON.stringify({ type: 'cancel', padding: 'x'.repeat(60_000) }))
    await until(
      async () => (count(ws, 'error:too_large') === 1 ? true : undefined),
      10_000,
      'answers',
    )
    expect(types(ws)).toEqual(['error:unavailable', 'error:too_large'])
    // What waited in the object's memory for the second frame was not its 60 KB of text.
    expect(waiting).toHaveLength(2)
    expect(typeof waiting[1]).toBe('symbol')
    ws.close(1000)
  })
})

describe('sockets: disconnect, reconnect, expiry', () => {
  it("a socket whose token has expired is closed at its next join or attach (4001), its ticket's grace running; a reconnect with a live token takes the ticket back", async () => {
    const { q, clock, g, ws, ticketId } = await queuedOnSocket()
    // Past the longest any token lives: this socket's has expired.
    const setTokenClock = (ahead: number) =>
      runInDurableObject(poolOf(q), (inst: MatchPool) => {
        inst.tokenClock = () => Date.now() + ahead
      })
    await setTokenClock(31 * 86_400_000)
    // A ping is still answered: nothing is asked of the token.
    ws.send(JSON.stringify({ type: 'ping' }))
    await nextOfType(ws, 'pong')
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await closed(ws)).toMatchObject({ code: TOKEN_EXPIRED_CLOSE.code })
    expect(await until(() => graceOf(q, ticketId), 5000, 'grace start')).toBe(clock.t + 10_000)
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // The client's reconnect, with a token that lives: the ticket is taken back, its grace over.
    await setTokenClock(0)
    const back = await connect(`/v1/matchmaking/${q}`, g.token)
    expect(await nextOfType<Queued>(back, 'queued')).toMatchObject({ ticketId, existing: true })
    expect(
      await until(async () => ((await graceOf(q, ticketId)) === undefined ? true : undefined)),
    ).toBe(true)
    back.close(1000)
  })

  it('a disconnect cancels the ticket once the grace has passed, not before', async () => {
    const { q, clock, g, ws, ticketId } = await queuedOnSocket()
    const closedAt = clock.t
    ws.close(1000, 'bye')
    const grace = await until(() => graceOf(q, ticketId), 5000, 'grace start')
    expect(grace).toBe(closedAt + 10_000)
    // Read with the admin key: a read of the player's own counts as the player polling.
    clock.t = grace - 1
    await fireAlarm(q)
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    clock.t = grace
    await fireAlarm(q)
    const t = await ticketOf(ticketId, g.token)
    expect(t.status).toBe('cancelled')
    expect(t.reason).toBe('disconnected')
  })

  it("a socket kept up past its token's expiry is closed (4001) by the pool's next look at its sockets, and its ticket's grace runs: the ticket is not matched for a player who is not there", async () => {
    const { q, clock, ws, ticketId } = await queuedOnSocket()
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.tokenClock = () => Date.now() + 31 * 86_400_000
    })
    // The pool's look at its sockets for silence comes (SILENT_SOCKET_MS after the connect).
    clock.t += SILENT_SOCKET_MS + 1
    await fireAlarm(q)
    expect(await closed(ws)).toMatchObject({ code: TOKEN_EXPIRED_CLOSE.code })
    expect(await until(() => graceOf(q, ticketId), 5000, 'grace start')).toBe(clock.t + 10_000)
    clock.t += 10_000
    await fireAlarm(q)
    expect(await ticketOf(ticketId)).toMatchObject({ status: 'cancelled', reason: 'disconnected' })
  })

  it('a match is not told on a socket whose token has expired (closed, 4001): its player hears it on the socket they connect with a live token', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { graceMs: 60_000 })
    const [a, b] = [await newGuest(), await newGuest()]
    // a's socket token expires two hours before b's.
    const early = await issuePlayerToken(env, a.playerId, Date.now() - 2 * 3_600_000)
    const wa = await connect(`/v1/matchmaking/${q}`, early.token)
    wa.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(wa, 'queued')
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.tokenClock = () => early.expiresAt + 60_000
    })
    const wb = await connect(`/v1/matchmaking/${q}`, b.token)
    wb.send(JSON.stringify({ type: 'join' }))
    const found = await nextOfType<Found>(wb, 'match_found')
    expect(await closed(wa)).toMatchObject({ code: TOKEN_EXPIRED_CLOSE.code })
    expect(collect(wa).map((m) => (m as { type: string }).type)).not.toContain('match_found')
    // a's client reconnects with its renewed token and is told the match, with a session token.
    const back = await connect(`/v1/matchmaking/${q}`, a.token)
    const told = await nextOfType<Found>(back, 'match_found')
    expect(told).toMatchObject({ ticketId, sessionId: found.sessionId })
    expect(await verifySessionToken(env, told.token, told.sessionId)).toBe(a.playerId)
  })

  it("a queue's disconnectGraceSeconds is how long a socket ticket waits for its player after the socket goes", async () => {
    const q = await createQueue({ disconnectGraceSeconds: 45 })
    const clock = newClock()
    // The pool's grace is the queue's: no test override.
    await rig(q, clock)
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued & { disconnectGraceSeconds: number }>(ws, 'queued')
    // The client is told, so that it rides out a lost network that long.
    expect(queued.disconnectGraceSeconds).toBe(45)
    const { ticketId } = queued
    const closedAt = clock.t
    ws.close(1000, 'network switch')
    const grace = await until(() => graceOf(q, ticketId), 5000, 'grace start')
    expect(grace).toBe(closedAt + 45_000)
    clock.t = grace - 1
    await fireAlarm(q)
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    clock.t = grace
    await fireAlarm(q)
    expect(await ticketOf(ticketId, g.token)).toMatchObject({
      status: 'cancelled',
      reason: 'disconnected',
    })
  })

  it('a socket that pinged and then fell silent (it died without a close) is closed by the alarm, and its ticket is cancelled after the grace', async () => {
    // The SDK counts its reconnect budget from this silence, not from when it noticed.
    expect(SERVER_SILENCE_MS).toBe(SILENT_SOCKET_MS)
    // Teams of two: the two players here never make a match.
    const q = await createQueue({ ticketTtlSeconds: 3600, teamSize: 2 })
    // The pool's clock is the real one here: pings are timed by the runtime.
    const clock = { t: Date.now() }
    await rig(q, clock, { graceMs: 10_000 })
    const [g, quiet] = await Promise.all([newGuest(), newGuest()])
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    // A client that never pings is never judged by silence.
    const never = await connect(`/v1/matchmaking/${q}`, quiet.token)
    never.send(JSON.stringify({ type: 'join' }))
    const other = await nextOfType<Queued>(never, 'queued')
    ws.send('{"type":"ping"}')
    await nextOfType(ws, 'pong')
    const pinged = Date.now()
    // The alarm comes back for it while the ticket waits, not only at its expiry an hour on.
    expect((await alarmAt(q))!).toBeLessThanOrEqual(clock.t + SILENT_SOCKET_MS + 1)
    clock.t = pinged + SILENT_SOCKET_MS - 1_000
    await fireAlarm(q)
    expect(await graceOf(q, ticketId)).toBeUndefined()
    clock.t = pinged + SILENT_SOCKET_MS + 1_000
    await fireAlarm(q)
    expect((await closed(ws)).code).toBe(1001)
    expect(await graceOf(q, ticketId)).toBe(clock.t + 10_000)
    clock.t += 10_000
    await fireAlarm(q)
    expect(await ticketOf(ticketId, g.token)).toMatchObject({
      status: 'cancelled',
      reason: 'disconnected',
    })
    expect((await ticketOf(other.ticketId, quiet.token)).status).toBe('waiting')
    never.close(1000)
  })

  it('a socket without a ticket that fell silent is closed too, and the alarm does not come straight back for it', async () => {
    const q = await createQueue({ ticketTtlSeconds: 3600, teamSize: 2 })
    const clock = { t: Date.now() }
    await rig(q, clock, { graceMs: 10_000 })
    const [waiting, member] = await Promise.all([newGuest(), newGuest()])
    const ws = await connect(`/v1/matchmaking/${q}`, waiting.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    // A party member's socket, say, waiting for its leader's join: it pings, then its network goes.
    const idle = await connect(`/v1/matchmaking/${q}`, member.token)
    idle.send('{"type":"ping"}')
    await nextOfType(idle, 'pong')
    const pinged = Date.now()
    clock.t = pinged + SILENT_SOCKET_MS + 1_000
    await fireAlarm(q)
    expect((await closed(idle)).code).toBe(1001)
    // The alarm comes back at the next instant anything may change, not at once (it looped).
    expect((await alarmAt(q))!).toBeGreaterThan(clock.t)
    expect((await ticketOf(ticketId, waiting.token)).status).toBe('waiting')
    ws.close(1000)
  })

  it("a player's connections that fell silent do not count against their limit of 4: a fifth connect is taken", async () => {
    const q = await createQueue({ ticketTtlSeconds: 3600, teamSize: 2 })
    const clock = { t: Date.now() }
    await rig(q, clock, { graceMs: 10_000 })
    const g = await newGuest()
    const dead: WebSocket[] = []
    for (let i = 0; i < 4; i++) {
      const ws = await connect(`/v1/matchmaking/${q}`, g.token)
      ws.send('{"type":"ping"}')
      await nextOfType(ws, 'pong')
      dead.push(ws)
    }
    const refused = await call(`/v1/matchmaking/${q}`, {
      headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
    })
    expect(await problem(refused)).toMatchObject({
      status: 409,
      type: 'urn:nexus:problem:conflict',
    })
    clock.t = Date.now() + SILENT_SOCKET_MS + 1_000
    const fifth = await connect(`/v1/matchmaking/${q}`, g.token)
    for (const ws of dead) expect((await closed(ws)).code).toBe(1001)
    fifth.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<Queued>(fifth, 'queued')).ticketId).toEqual(expect.any(String))
    fifth.close(1000)
  })

  it("with Neon taking the claim and not answering (slowed by everyone reconnecting after a deploy, or waking), a reconnect to its region takes the ticket back in a few seconds, not at Neon's 8 s deadline, past the SDK's 6 s", async () => {
    const q = await createQueue({ teamSize: 2, regions: ['eu'] })
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued & { region: string }>(ws, 'queued')
    ws.close(1000, 'deploy')
    await until(() => graceOf(q, queued.ticketId), 5000, 'grace start')
    const sent = Date.now()
    const res = await callWithEnv(
      {
        DATABASE_URL: env.TEST_SILENT_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_SILENT_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      `/v1/matchmaking/${q}?region=${queued.region}`,
      { headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` } },
    )
    expect(res.status).toBe(101)
    // Its own wait (3 s), not Neon's deadline (8 s): the bound leaves a loaded machine the rest.
    expect(Date.now() - sent).toBeLessThan(NEON_QUERY_TIMEOUT_MS - 500)
    expect(RECONNECT_NEON_WAIT_MS).toBeLessThan(NEON_QUERY_TIMEOUT_MS - 500)
    const back = res.webSocket!
    back.accept()
    track(back)
    expect(await nextOfType<Queued>(back, 'queued')).toMatchObject({
      ticketId: queued.ticketId,
      existing: true,
    })
    expect(await graceOf(q, queued.ticketId)).toBeUndefined()
    back.close(1000)
  })

  /** Neon takes the player's claim lock only some 4 s after it is asked: a Neon slower than 3 s. */
  const claimHeldFor4s = (playerId: string) =>
    holdLock(
      {
        text: `select pg_advisory_xact_lock(hashtextextended('queue_claims:' || $1::text, 0))`,
        params: [playerId],
      },
      { afterWaiter: 4 },
    )

  it("a first connect naming its region, with Neon slower than the reconnect's 3 s (waking), goes on once Neon answers: having no ticket to take back is no refusal", async () => {
    const q = await createQueue({ teamSize: 2, regions: ['eu'] })
    await rig(q, newClock())
    const g = await newGuest()
    const held = await claimHeldFor4s(g.playerId)
    const res = await callWithEnv({}, `/v1/matchmaking/${q}?region=eu`, {
      headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
    })
    expect(res.status).toBe(101)
    const ws = res.webSocket!
    ws.accept()
    track(ws)
    // A socket of the full path: it queues.
    ws.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<Queued>(ws, 'queued')).existing).toBe(false)
    await held.done
    ws.close(1000)
  })

  it('a connect naming a region no pool could have (malformed), with Neon slower than 3 s, is refused 422 once Neon answers, as always, not 500', async () => {
    const q = await createQueue({ teamSize: 2, regions: ['eu'] })
    const g = await newGuest()
    const held = await claimHeldFor4s(g.playerId)
    const res = await callWithEnv({}, `/v1/matchmaking/${q}?region=EU`, {
      headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
    })
    expect(await problem(res)).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    await held.done
  })

  it('with Neon unreachable, a reconnect to the region its queued named takes the ticket back (the grace ends); a connect with no ticket there is 503', async () => {
    const q = await createQueue({ teamSize: 2, regions: ['eu', 'us'] })
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued & { region: string }>(ws, 'queued')
    // The pool says its region: the queue's first, as none was asked for.
    expect(queued.region).toBe('eu')
    ws.close(1000, 'network switch')
    const grace = await until(() => graceOf(q, queued.ticketId), 5000, 'grace start')
    const neonDown = (path: string, token: string) =>
      callWithEnv(
        {
          DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
          NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
          LOG_LEVEL: 'silent',
        },
        path,
        { headers: { upgrade: 'websocket', authorization: `Bearer ${token}` } },
      )
    const res = await neonDown(`/v1/matchmaking/${q}?region=${queued.region}`, g.token)
    expect(res.status).toBe(101)
    const back = res.webSocket!
    back.accept()
    track(back)
    expect(await nextOfType<Queued>(back, 'queued')).toMatchObject({
      ticketId: queued.ticketId,
      existing: true,
    })
    expect(await graceOf(q, queued.ticketId)).toBeUndefined()
    clock.t = grace + 1
    await fireAlarm(q)
    expect((await ticketOf(queued.ticketId, g.token)).status).toBe('waiting')
    // A player with nothing waiting cannot join without Neon: 503, nothing queued.
    const other = await newGuest()
    const refused = await neonDown(`/v1/matchmaking/${q}?region=eu`, other.token)
    expect(await problem(refused)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    // Told to wait some seconds, as every answer of an unreachable database is.
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(5)
    // Nor can a connect that names no region (the pool is found through the queue's settings).
    const unnamed = await neonDown(`/v1/matchmaking/${q}`, g.token)
    expect(unnamed.status).toBe(503)
    expect(Number(unnamed.headers.get('retry-after'))).toBeGreaterThanOrEqual(5)
    // A region the queue never had is 503 too, and leaves no stored pool behind.
    expect((await neonDown(`/v1/matchmaking/${q}?region=nowhere`, g.token)).status).toBe(503)
    const tables = await runInDurableObject(poolOf(q, 'nowhere'), (_i: MatchPool, state) =>
      state.storage.sql.exec(`SELECT name FROM sqlite_master`).toArray(),
    )
    expect(tables).toEqual([])
    expect(await waitingCount(q)).toBe(1)
    back.close(1000)
  })

  it('a reconnect within the grace keeps the ticket, and the new socket gets the match', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const first = await connect(`/v1/matchmaking/${q}`, g.token)
    first.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(first, 'queued')
    first.close(1001, 'network')
    const grace = await until(() => graceOf(q, ticketId), 5000, 'grace start')
    clock.t += 5000
    const second = await connect(`/v1/matchmaking/${q}`, g.token)
    const resumed = await nextOfType<Queued>(second, 'queued')
    expect(resumed).toMatchObject({ ticketId, existing: true })
    expect(await graceOf(q, ticketId)).toBeUndefined()
    clock.t = grace + 1000
    await fireAlarm(q)
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
    const r = await connect(`/v1/matchmaking/${q}`, rival.token)
    r.send(JSON.stringify({ type: 'join' }))
    const found = await nextOfType<Found>(second, 'match_found')
    expect(found.ticketId).toBe(ticketId)
    expect((await nextOfType<Found>(r, 'match_found')).sessionId).toBe(found.sessionId)
  })

  /**
   * A guest queued over a socket that then dropped (its grace running, on a rigged clock), whose
   * ticket a rival's HTTP join matched in that gap.
   */
  async function matchedInTheGap(graceMs: number, region?: 'us') {
    // In `us`, of a queue that has `eu` too (which may then be all it keeps).
    const q = await createQueue(region ? { regions: ['eu', 'us'] } : {})
    const clock = newClock()
    await rig(q, clock, { graceMs, ...(region ? { region } : {}) })
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const first = await connect(`/v1/matchmaking/${q}${region ? `?region=${region}` : ''}`, g.token)
    first.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(first, 'queued')
    first.close(1001, 'network')
    await until(() => graceOf(q, ticketId, region), 5000, 'grace start')
    const matched = await joinFor(q, rival.playerId, region ? { region } : {})
    expect(matched.status).toBe('matched')
    return { q, clock, g, ticketId, matched }
  }

  /** Takes `us` out of the queue `matchedInTheGap` made in it. */
  async function takeUsOut(q: string): Promise<void> {
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['eu'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
  }

  it('a reconnect within the grace after the ticket was matched in the gap hears match_found on connect, once; past the grace, nothing', async () => {
    for (const inTime of [true, false]) {
      const { q, clock, g, ticketId, matched } = await matchedInTheGap(10_000)
      clock.t += inTime ? 5_000 : 10_001
      if (!inTime) {
        // Past the grace, the pool's alarm lets go of the match it owed, whoever connects.
        const owed = () =>
          runInDurableObject(
            poolOf(q),
            (_i: MatchPool, state) =>
              state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM unheard').one().n,
          )
        expect(await owed()).toBe(1)
        await fireAlarm(q)
        expect(await owed()).toBe(0)
      }
      if (inTime) {
        // A first reconnect while the pool cannot sign tokens (its secret gone) is told to try
        // again, and the match waits for the next.
        const restore = await runInDurableObject(poolOf(q), (inst: MatchPool) => {
          const holder = inst as unknown as { env: typeof env }
          const configured = holder.env
          holder.env = { ...configured, AUTH_SECRET: undefined } as typeof env
          return () => {
            holder.env = configured
          }
        })
        const failing = await connect(`/v1/matchmaking/${q}`, g.token)
        expect(await nextOfType<ErrorFrame>(failing, 'error')).toMatchObject({
          code: 'unavailable',
        })
        failing.close(1000)
        await runInDurableObject(poolOf(q), () => restore())
      }
      const second = await connect(`/v1/matchmaking/${q}`, g.token)
      if (inTime) {
        const found = await nextOfType<Found>(second, 'match_found')
        expect(found).toMatchObject({ ticketId, sessionId: matched.match!.sessionId })
        expect(await verifySessionToken(env, found.token, found.sessionId)).toBe(g.playerId)
        await closed(second)
      }
      // Told once (or too late): a later connect is a plain one, with nothing waiting.
      const third = await connect(`/v1/matchmaking/${q}`, g.token)
      third.send(JSON.stringify({ type: 'ping' }))
      expect(await nextOfType(third, 'pong')).toBeDefined()
      if (!inTime) {
        second.send(JSON.stringify({ type: 'ping' }))
        expect(await nextOfType(second, 'pong')).toBeDefined()
        expect(collect(second)).not.toContainEqual(expect.objectContaining({ type: 'match_found' }))
        second.close(1000)
      }
      expect(collect(third)).not.toContainEqual(expect.objectContaining({ type: 'match_found' }))
      third.close(1000)
    }
  })

  it('a reconnect naming its region hears a match made in the gap while Neon is unreachable (it needs none), and after the region was taken out of the queue', async () => {
    for (const cause of ['Neon down', 'region removed'] as const) {
      const { q, clock, g, ticketId, matched } = await matchedInTheGap(10_000, 'us')
      clock.t += 5_000
      if (cause === 'region removed') await takeUsOut(q)
      const settings =
        cause === 'Neon down'
          ? {
              DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
              NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
              LOG_LEVEL: 'silent',
            }
          : {}
      const res = await callWithEnv(settings, `/v1/matchmaking/${q}?region=us`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
      })
      expect(res.status, cause).toBe(101)
      const back = res.webSocket!
      back.accept()
      track(back)
      const found = await nextOfType<Found>(back, 'match_found')
      expect(found).toMatchObject({ ticketId, sessionId: matched.match!.sessionId })
      await closed(back)
      // Told once: the next connect there has nothing to take back, and is refused as before.
      const again = await callWithEnv(settings, `/v1/matchmaking/${q}?region=us`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
      })
      expect(again.status, cause).toBe(cause === 'Neon down' ? 503 : 422)
    }
  })

  it("a removed region's pool that answers a reconnect after the Worker gave up on it keeps the match it owes for the next connect; the connect given up is a 503 to try again", async () => {
    const { q, g, ticketId, matched } = await matchedInTheGap(30_000, 'us')
    await takeUsOut(q)
    // The pool is slow: the first take-back-only connect reaches it after the Worker's 2.5 s.
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    let heldDone: Promise<unknown> = Promise.resolve()
    let held = 0
    const restore = await replaceMethod<MatchPool, 'fetch'>(
      poolOf(q, 'us'),
      'fetch',
      (original) =>
        function (this: MatchPool, request: Request) {
          const context = request.headers.get('x-nexus-socket') ?? ''
          if (held === 0 && context.includes('answerBy')) {
            held++
            heldDone = gate.then(() => original.call(this, request))
            return heldDone as Promise<Response>
          }
          return original.call(this, request)
        } as never,
    )
    const upgradeTo = () =>
      call(`/v1/matchmaking/${q}?region=us`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
      })
    const given = await upgradeTo()
    expect(await problem(given)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    expect(given.headers.get('retry-after')).toBe('1')
    open()
    await heldDone
    restore()
    const res = await upgradeTo()
    expect(res.status).toBe(101)
    const back = res.webSocket!
    back.accept()
    track(back)
    expect(await nextOfType<Found>(back, 'match_found')).toMatchObject({
      ticketId,
      sessionId: matched.match!.sessionId,
    })
  })

  it('a match read over HTTP in the gap is heard: a socket opened next within the grace is not sent it again (a client queueing anew is not taken back to that game)', async () => {
    const { q, clock, g, ticketId, matched } = await matchedInTheGap(60_000)
    // The client falls back to HTTP and reads its ticket: matched, with its session.
    const read = await ticketOf(ticketId, g.token)
    expect(read).toMatchObject({
      status: 'matched',
      match: { sessionId: matched.match!.sessionId },
    })
    clock.t += 5_000
    // Its game played, it opens a socket to queue again, within the grace: a plain connect.
    const again = await connect(`/v1/matchmaking/${q}`, g.token)
    again.send(JSON.stringify({ type: 'ping' }))
    expect(await nextOfType(again, 'pong')).toBeDefined()
    again.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued>(again, 'queued')
    expect(queued.ticketId).not.toBe(ticketId)
    expect(collect(again)).not.toContainEqual(expect.objectContaining({ type: 'match_found' }))
    again.close(1000)
  })

  it("a socket that closes while its match's session tokens are signed hears the match on a reconnect within the grace", async () => {
    const q = await createQueue()
    await rig(q, newClock(), { graceMs: 10_000 })
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const ws = await connect(`/v1/matchmaking/${q}`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    const signing = await holdSigning(q)
    const matching = joinFor(q, rival.playerId)
    await signing.started()
    // The connection drops while the token is signed; the pool has taken the close.
    ws.close(1001, 'network')
    await closed(ws)
    await signing.release()
    const matched = await matching
    expect(matched.status).toBe('matched')
    const again = await connect(`/v1/matchmaking/${q}`, g.token)
    const found = await nextOfType<Found>(again, 'match_found')
    expect(found).toMatchObject({ ticketId, sessionId: matched.match!.sessionId })
    expect(await verifySessionToken(env, found.token, found.sessionId)).toBe(g.playerId)
  })

  it('a join sent again with its joinKey after the socket dropped before any answer gets the match made meanwhile, and queues nothing', async () => {
    const q = await createQueue()
    const clock = newClock()
    await rig(q, clock, { graceMs: 10_000 })
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const first = await connect(`/v1/matchmaking/${q}`, g.token)
    // The join is taken, and the socket drops before the client reads its `queued`.
    first.send(JSON.stringify({ type: 'join', joinKey: 'join-7' }))
    await until(async () => ((await waitingCount(q)) === 1 ? true : undefined), 5000, 'the ticket')
    first.close(1001, 'network')
    // Matched in the gap, within the ticket's disconnect grace.
    const matched = await joinFor(q, rival.playerId)
    expect(matched.status).toBe('matched')
    // The reconnected client cannot know its ticket: it sends the same join again.
    const second = await connect(`/v1/matchmaking/${q}`, g.token)
    second.send(JSON.stringify({ type: 'join', joinKey: 'join-7' }))
    const found = await nextOfType<Found>(second, 'match_found')
    expect(found.sessionId).toBe(matched.match!.sessionId)
    expect(await verifySessionToken(env, found.token, found.sessionId)).toBe(g.playerId)
    expect(await waitingCount(q)).toBe(0)
    // The same key for another join is refused on a socket too.
    const third = await connect(`/v1/matchmaking/${q}`, g.token)
    third.send(JSON.stringify({ type: 'join', joinKey: 'join-7', attributes: { mode: 'x' } }))
    expect((await nextOfType<ErrorFrame>(third, 'error')).code).toBe('key_reused')
    expect(await waitingCount(q)).toBe(0)
    third.close(1000)
  })

  it('an expired ticket leaves with an expired message; HTTP says expired', async () => {
    const { q, clock, g, ws, ticketId } = await waitingOnSocket()
    const expiresAt = clock.t + 30_000
    clock.t = expiresAt - 1
    await fireAlarm(q)
    expect((await ticketOf(ticketId, g.token)).status).toBe('waiting')
    clock.t = expiresAt
    await fireAlarm(q)
    expect(await nextOfType(ws, 'expired')).toEqual({ type: 'expired', ticketId })
    expect((await closed(ws)).code).toBe(1000)
    const t = await ticketOf(ticketId, g.token)
    expect(t.status).toBe('expired')
    expect(t.expiresAt).toBe(expiresAt)
    expect(await waitingCount(q)).toBe(0)
  })

  it('a join sent as the ticket runs out (before the alarm) gets expired and queues nothing: no rival is matched with a player who is gone', async () => {
    const { q, clock, ws, ticketId } = await waitingOnSocket()
    const rival = await newGuest()
    // The expiry is due, but the pool's alarm has not run yet when the frame arrives.
    clock.t += 30_000
    ws.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType(ws, 'expired')).toEqual({ type: 'expired', ticketId })
    expect((await closed(ws)).reason).toBe('ticket expired')
    expect(collect(ws).map((m) => (m as { type: string }).type)).toEqual(['queued', 'expired'])
    expect(await waitingCount(q)).toBe(0)
    const r = await joinFor(q, rival.playerId)
    expect(r.status).toBe('waiting')
  })

  it('a cancel sent after the ticket ran out (before the alarm) finds it expired, as HTTP does', async () => {
    const { clock, g, ws, ticketId } = await waitingOnSocket()
    clock.t += 30_000
    ws.send(JSON.stringify({ type: 'cancel' }))
    expect(await nextOfType(ws, 'expired')).toEqual({ type: 'expired', ticketId })
    await closed(ws)
    expect(collect(ws).map((m) => (m as { type: string }).type)).toEqual(['queued', 'expired'])
    const t = await ticketOf(ticketId, g.token)
    expect(t.status).toBe('expired')
    expect(t.reason).toBeNull()
  })
})
