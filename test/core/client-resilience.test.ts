import { describe, expect, it } from 'vitest'
import { createClient } from '../../client/src/client.ts'
import { NexusNetworkError } from '../../client/src/problem.ts'
import type { SocketEvent, SocketLike } from '../../client/src/socket.ts'

/** The real clock, kept before a test moves the device's. */
const serverClock = Date.now

function jsonRes(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' },
  })
}

interface ScriptedSocket {
  open(): void
  drop(): void
  fail(): void
  receive(frame: unknown): void
}

/**
 * A socket the test drives: `script` runs a moment after the client creates it, with ways to
 * open it, drop it, fail it and send it a frame; `onSend` sees each frame the client sends.
 */
function scriptedSocket(
  script: (socket: ScriptedSocket) => void,
  onSend?: (frame: { type: string; [k: string]: unknown }, socket: ScriptedSocket) => void,
): SocketLike {
  const listeners: Record<string, ((e: SocketEvent) => void)[]> = {}
  const s: SocketLike & { readyState: number } = {
    readyState: 0,
    send(data) {
      onSend?.(JSON.parse(String(data)) as { type: string }, driver)
    },
    close(code?: number) {
      if (s.readyState === 3) return
      s.readyState = 3
      // As a browser's socket does: the close event follows the call.
      setTimeout(() => emit('close', { code: code ?? 1000 }), 0)
    },
    addEventListener(type, l) {
      ;(listeners[type] ??= []).push(l)
    },
  }
  const emit = (type: string, e: SocketEvent) => {
    for (const l of listeners[type] ?? []) l(e)
  }
  const driver: ScriptedSocket = {
    open() {
      s.readyState = 1
      emit('open', {})
    },
    drop() {
      s.readyState = 3
      emit('close', { code: 1006 })
    },
    fail() {
      s.readyState = 3
      emit('error', {})
      emit('close', { code: 1006 })
    },
    receive(frame) {
      emit('message', { data: JSON.stringify(frame) })
    },
  }
  setTimeout(() => script(driver), 1)
  return s
}

describe('client SDK under failure', () => {
  it('many requests refused with 401 at once renew the token once, then all succeed', async () => {
    let renewals = 0
    let current = ''
    const valid = new Set<string>()
    const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input))
      if (url.pathname === '/v1/auth/guest') {
        renewals++
        current = `tok-${renewals}`
        valid.add(current)
        return jsonRes(200, { token: current, playerId: 'g_1', expiresAt: Date.now() + 86_400_000 })
      }
      const token = (init?.headers as Record<string, string>).authorization!.slice(7)
      // Answers arrive staggered, as real ones do: the refusals do not all land together.
      await new Promise((r) => setTimeout(r, Number(url.searchParams.get('limit') ?? 1) * 5))
      if (!valid.has(token))
        return jsonRes(401, { type: 'urn:nexus:problem:unauthorized', title: 'x', status: 401 })
      return jsonRes(200, { rewards: [] })
    }) as typeof fetch
    const client = createClient({ baseUrl: 'http://nexus.test', fetch: fetchImpl })
    await client.auth.guest('device-abcdef-123456')
    expect(renewals).toBe(1)
    // The server stops accepting the token everyone holds (a rotated secret).
    valid.clear()
    const results = await Promise.allSettled(
      Array.from({ length: 8 }, (_, i) => client.leaderboards.rewards({ limit: i + 1 })),
    )
    expect(results.every((r) => r.status === 'fulfilled')).toBe(true)
    expect(renewals).toBe(2)
  })

  it('a session socket that opens and drops at once backs off and gives up after maxReconnects', async () => {
    let opens = 0
    const factory = () =>
      scriptedSocket((socket) => {
        opens++
        socket.open()
        setTimeout(() => socket.drop(), 1)
      })
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: factory,
      maxReconnects: 3,
    })
    const game = client.sessions.connect('s1', 'tok')
    const delays: number[] = []
    game.on('reconnecting', ({ delayMs }) => delays.push(delayMs))
    await expect(game.ended).rejects.toBeInstanceOf(NexusNetworkError)
    expect(opens).toBe(4)
    expect(delays).toHaveLength(3)
    game.close()
  })

  it('a party join the server cannot answer for now (`unavailable`) is sent again on a new socket, and fails with 503 after maxReconnects', async () => {
    const guest = (async (input: RequestInfo | URL) =>
      new URL(String(input)).pathname === '/v1/auth/guest'
        ? jsonRes(200, { token: 'tok', playerId: 'g_1', expiresAt: Date.now() + 3_600_000 })
        : jsonRes(200, {})) as typeof fetch
    const party = ['g_1', 'g_2']
    for (const unavailableAnswers of [2, 4]) {
      const joins: unknown[][] = []
      const factory = () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            if (frame.type !== 'join') return
            joins.push(frame.party as unknown[])
            if (joins.length <= unavailableAnswers) {
              socket.receive({ type: 'error', code: 'unavailable', message: 'party not read' })
              return
            }
            socket.receive({ type: 'queued', ticketId: 't1', existing: false, expiresAt: 0 })
            socket.receive({
              type: 'match_found',
              ticketId: 't1',
              sessionId: 's1',
              token: 'session-token',
              players: [],
            })
          },
        )
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guest,
        WebSocket: factory,
        maxReconnects: 3,
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
      })
      await client.auth.guest('device-abcdef-123456')
      const ticket = client.matchmaking.join('squads', { party, transport: 'websocket' })
      if (unavailableAnswers <= 3) {
        expect((await ticket.matched).sessionId).toBe('s1')
        // The same join, party and all, on each new socket.
        expect(joins).toEqual(Array.from({ length: unavailableAnswers + 1 }, () => party))
      } else {
        await expect(ticket.matched).rejects.toMatchObject({ status: 503 })
        expect(joins).toHaveLength(4)
      }
    }
  })

  it('a device clock a day ahead, or a short token lifetime, does not make every request sign in again', async () => {
    for (const { ttlSeconds, clockAheadMs } of [
      { ttlSeconds: 86_400, clockAheadMs: 86_400_000 },
      { ttlSeconds: 120, clockAheadMs: 0 },
    ]) {
      let signIns = 0
      const fetchImpl = (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          signIns++
          return jsonRes(200, {
            token: `tok-${signIns}`,
            playerId: 'g_1',
            // The server's clock, not the device's.
            expiresAt: serverClock() + ttlSeconds * 1000,
            expiresIn: ttlSeconds,
          })
        }
        return jsonRes(200, { rewards: [] })
      }) as typeof fetch
      const client = createClient({ baseUrl: 'http://nexus.test', fetch: fetchImpl })
      const realNow = Date.now
      // The device's clock, as the SDK reads it.
      Date.now = () => realNow() + clockAheadMs
      try {
        await client.auth.guest('device-abcdef-123456')
        for (let i = 0; i < 10; i++) await client.leaderboards.rewards()
      } finally {
        Date.now = realNow
      }
      expect(signIns).toBe(1)
    }
  })

  it('a game connection rides out a short network loss: it reconnects and resumes, it does not end', async () => {
    let down = false
    let opens = 0
    const live: (() => void)[] = []
    const factory = () =>
      scriptedSocket((socket) => {
        if (down) return socket.fail()
        opens++
        socket.open()
        const welcome =
          opens === 1
            ? { type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' }
            : { type: 'resumed', since: 0, seq: 0 }
        setTimeout(() => socket.receive(welcome), 1)
        live.push(() => socket.drop())
      })
    const fetchImpl = (async () => {
      if (down) throw new TypeError('fetch failed (offline)')
      return jsonRes(200, { status: 'live', seq: 0, result: null })
    }) as unknown as typeof fetch
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: fetchImpl,
      WebSocket: factory,
      retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 },
    })
    const game = client.sessions.connect('s1', 'tok')
    await game.ready
    let ended: unknown = null
    game.ended.catch((err: unknown) => (ended = err))
    // The network goes away: the socket drops, reopening fails and so does the read behind it.
    const failedAttempts: number[] = []
    game.on('reconnecting', ({ attempt }) => failedAttempts.push(attempt))
    const resumed = new Promise<void>((resolve) => game.on('resumed', () => resolve()))
    down = true
    for (const drop of live.splice(0)) drop()
    await new Promise<void>((resolve) => {
      const check = () => (failedAttempts.length >= 3 ? resolve() : setTimeout(check, 5))
      check()
    })
    down = false
    await resumed
    expect(ended).toBeNull()
    expect(opens).toBe(2)
    game.close()
  })
})
