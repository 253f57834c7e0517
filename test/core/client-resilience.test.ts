import { readFileSync } from 'node:fs'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { TOKEN_SOURCE_WAIT_MS } from '../../client/src/auth.ts'
import { createClient } from '../../client/src/client.ts'
import { MatchmakingEnded } from '../../client/src/matchmaking.ts'
import {
  ActionOutcomeUnknown,
  ActionRefused,
  MAX_RESUME_EVENTS,
  REPLACED_CLOSE_CODE,
  ERASED_CLOSE_CODE,
  SessionConnectionReplaced,
  SessionPlayerErased,
} from '../../client/src/sessions.ts'
import { NexusNetworkError, NexusProblem } from '../../client/src/problem.ts'
import { SubmissionKeyTooOld } from '../../client/src/leaderboards.ts'
import { PlayerChanged } from '../../client/src/http.ts'
import { Emitter, type SocketEvent, type SocketLike } from '../../client/src/socket.ts'

/** The real clock, kept before a test moves the device's. */
const serverClock = Date.now

function jsonRes(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'content-type': status >= 400 ? 'application/problem+json' : 'application/json' },
  })
}

/** The party `me`, naming the leader's latest ticket. */
const partyOf = (ticketId: string | null, leader = 'g_0') =>
  jsonRes(200, { id: 'p1', leader, members: [], invites: [], createdAt: 0, ticketId })
/** The leader's squad ticket, waiting. */
const waitingSquad = () =>
  jsonRes(200, {
    ticketId: 'squads:eu:t1',
    queue: 'squads',
    region: 'eu',
    status: 'waiting',
    expiresAt: 0,
    expiresIn: 60_000,
    reason: null,
    match: null,
  })
/** The leader's ticket in another queue, waiting. */
const waitingDuel = {
  ticketId: 'duels:eu:d1',
  queue: 'duels',
  region: 'eu',
  status: 'waiting',
  expiresAt: 0,
  expiresIn: 60_000,
  reason: null,
  match: null,
}
/** The leader's squad ticket, matched. */
const matchedSquad = () =>
  jsonRes(200, {
    ticketId: 'squads:eu:t1',
    queue: 'squads',
    region: 'eu',
    status: 'matched',
    expiresAt: 0,
    reason: null,
    match: { sessionId: 's1', token: 'session-tok', players: [] },
  })

interface ScriptedSocket {
  open(): void
  drop(): void
  /** The server closes it with `code`. */
  closeBy(code: number): void
  fail(): void
  receive(frame: unknown): void
  /** Whether the client closed it (or it dropped). */
  closed(): boolean
  /** The code and reason the client closed it with; null while it has not. */
  closedWith(): { code?: number; reason?: string } | null
}

/**
 * A pool as `enqueue` answers a join: its key's ticket, else the player's waiting one (the key
 * bound to it from then on), else a new ticket (`t1`, `t2`, …); `tickets` holds each one's status.
 */
function enqueueModel() {
  const tickets = new Map<string, string>()
  const byKey = new Map<string, string>()
  let made = 0
  return {
    tickets,
    join(key: string): { id: string; existing: boolean } {
      const keyed = byKey.get(key)
      if (keyed !== undefined) return { id: keyed, existing: true }
      let id = [...tickets].find(([, status]) => status === 'waiting')?.[0]
      const existing = id !== undefined
      if (id === undefined) {
        id = `t${++made}`
        tickets.set(id, 'waiting')
      }
      byKey.set(key, id)
      return { id, existing }
    },
  }
}

/**
 * A socket the test drives: `script` runs a moment after the client creates it, with ways to
 * open it, drop it, fail it and send it a frame; `onSend` sees each frame the client sends.
 */
function scriptedSocket(
  script: (socket: ScriptedSocket) => void,
  onSend?: (frame: { type: string; [k: string]: unknown }, socket: ScriptedSocket) => void,
  /** `pong: false`: pings are left unanswered (a dead connection) and handed to `onSend`. */
  opts: { pong: boolean } = { pong: true },
): SocketLike {
  const listeners: Record<string, ((e: SocketEvent) => void)[]> = {}
  let closedWith: { code?: number; reason?: string } | null = null
  const s: SocketLike & { readyState: number } = {
    readyState: 0,
    send(data) {
      const frame = JSON.parse(String(data)) as { type: string }
      // A ping is answered by the runtime itself (setWebSocketAutoResponse), never the server's code.
      if (opts.pong && data === '{"type":"ping"}' && s.readyState === 1) {
        setTimeout(() => emit('message', { data: '{"type":"pong"}' }), 0)
        return
      }
      onSend?.(frame, driver)
    },
    close(code?: number, reason?: string) {
      if (s.readyState === 3) return
      closedWith = { code, reason }
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
    closeBy(code) {
      s.readyState = 3
      emit('close', { code })
    },
    fail() {
      s.readyState = 3
      emit('error', {})
      emit('close', { code: 1006 })
    },
    receive(frame) {
      emit('message', { data: JSON.stringify(frame) })
    },
    closed: () => s.readyState === 3,
    closedWith: () => closedWith,
  }
  setTimeout(() => script(driver), 1)
  return s
}

/**
 * A queued socket ticket whose socket drops 5 ms after `queued`; `reconnect` scripts each socket
 * opened (`opens` counts them: the first is the one that queued). Runs 30 s of fake time with the
 * longest reconnect jitter and answers when the HTTP fallback's join came, and the transport.
 */
async function httpJoinAfterSocketLoss(
  reconnect: (socket: ScriptedSocket, opens: number) => void,
  /** The pool overloaded at the first HTTP read: 503 with a Retry-After past the grace. */
  opts: { firstReadOverloaded?: boolean; joinsOverloadedForMs?: number; queuedLost?: boolean } = {},
): Promise<{
  transport: string
  joinedAt: number
  droppedAt: number
  failed: unknown[]
  deletedBeforeCancel: number
  /** Whether every HTTP join carried the key the socket's join did. */
  joinedWithSocketKey: boolean
}> {
  vi.useFakeTimers()
  // The longest waits the reconnect jitter can draw.
  const random = vi.spyOn(Math, 'random').mockReturnValue(0.999)
  try {
    let droppedAt = 0
    let joinedAt = 0
    let opens = 0
    let overloadedOnce = false
    let deletes = 0
    let socketKey: unknown = null
    let joinedWithSocketKey = true
    const overloaded = (retryAfter: string) =>
      new Response(
        JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 }),
        {
          status: 503,
          headers: { 'content-type': 'application/problem+json', 'retry-after': retryAfter },
        },
      )
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(async (url, init) => {
        if (init?.method === 'DELETE') deletes++
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
          const key = (init.headers as Record<string, string>)['idempotency-key']
          if (key !== socketKey) joinedWithSocketKey = false
          if (Date.now() - droppedAt < (opts.joinsOverloadedForMs ?? 0)) return overloaded('6')
          joinedAt = Date.now()
          return ticket({ status: 'waiting', existing: true })
        }
        if (url.pathname === '/v1/matchmaking/tickets/t1') {
          if (opts.firstReadOverloaded && !overloadedOnce) {
            overloadedOnce = true
            return new Response(
              JSON.stringify({
                type: 'urn:nexus:problem:unavailable',
                title: 'Service unavailable',
                status: 503,
              }),
              {
                status: 503,
                headers: { 'content-type': 'application/problem+json', 'retry-after': '12' },
              },
            )
          }
          // A long poll answers "still waiting" once its wait is over.
          if (url.searchParams.get('wait')) await new Promise((r) => setTimeout(r, 1000))
          return ticket({ status: 'waiting' })
        }
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => reconnect(socket, ++opens),
          (frame, socket) => {
            if (frame.type !== 'join') return
            socketKey = frame.joinKey
            // The ticket is made; its `queued` may be lost with the socket.
            if (!opts.queuedLost) {
              socket.receive({ type: 'queued', ticketId: 't1', existing: false, expiresAt: 0 })
            }
            setTimeout(() => {
              droppedAt = Date.now()
              socket.drop()
            }, 5)
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    const failed: unknown[] = []
    t.on('failed', ({ error }) => failed.push(error))
    await vi.advanceTimersByTimeAsync(30_000)
    const transport = t.transport
    const deletedBeforeCancel = deletes
    const cancelled = t.cancel().catch(() => {})
    await vi.advanceTimersByTimeAsync(10_000)
    await cancelled
    return { transport, joinedAt, droppedAt, failed, deletedBeforeCancel, joinedWithSocketKey }
  } finally {
    random.mockRestore()
    vi.useRealTimers()
  }
}

/** A fetch that signs guests in and answers everything else with `rest`. */
function guestFetch(
  rest: (url: URL, init?: RequestInit) => Promise<Response> | Response,
): typeof fetch {
  return (async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = new URL(String(input))
    if (url.pathname === '/v1/auth/guest')
      return jsonRes(200, { token: 'tok', playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
    return rest(url, init)
  }) as typeof fetch
}

const unauthorized = () =>
  jsonRes(401, { type: 'urn:nexus:problem:unauthorized', title: 'Unauthorized', status: 401 })

/** The bearer token a request carried. */
const authOf = (init?: RequestInit) =>
  ((init?.headers as Record<string, string> | undefined)?.authorization ?? '').slice(7)

/** A client whose reads of rewards answer empty, and the credential each request went out with. */
function rewardsReader() {
  const used: string[] = []
  const client = createClient({
    baseUrl: 'http://nexus.test',
    fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
      used.push(authOf(init))
      return jsonRes(200, { rewards: [] })
    }) as typeof fetch,
  })
  return { client, used }
}

/** `promise`, or a rejection naming `what` after `ms`. */
function within<T>(promise: Promise<T>, what: string, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)
    }),
  ])
}

/** A ticket as the HTTP routes answer it. */
const ticket = (fields: Record<string, unknown>) =>
  jsonRes(200, { ticketId: 't1', queue: 'duel', region: 'eu', expiresAt: 0, ...fields })

/** The whole view of one player's ticket `duel:eu:t1`, as `GET /v1/matchmaking/tickets/:id` has it. */
/**
 * A client whose guest sign-ins after the first (tokens `tok-2`, `tok-3`…) are held until the
 * test resolves or rejects them, in order (`held`); requests (`used`: the token each carried)
 * are refused their first token, `tok-1` (a rotated secret), and answered otherwise.
 */
function heldGuestSignIns(retry: { attempts?: number; baseDelayMs: number; maxDelayMs: number }) {
  const held: { resolve: () => void; reject: (e: unknown) => void }[] = []
  const used: string[] = []
  let issued = 0
  const client = createClient({
    baseUrl: 'http://nexus.test',
    retry,
    fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input))
      if (url.pathname === '/v1/auth/guest') {
        const n = ++issued
        if (n > 1) await new Promise<void>((resolve, reject) => held.push({ resolve, reject }))
        return jsonRes(200, { token: `tok-${n}`, playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
      }
      used.push(authOf(init))
      if (authOf(init) === 'tok-1') return unauthorized()
      return jsonRes(200, { rewards: [] })
    }) as typeof fetch,
  })
  return { client, held, used }
}

/** A ticket's view as the server answers it, for `id` (a plain model's `t1`, `t2`). */
const ticketBody = (id: string) => ({
  ticketId: id,
  queue: 'duel',
  region: 'eu',
  status: 'waiting',
  leader: 'g_1',
  players: ['g_1'],
  attributes: null,
  enqueuedAt: 0,
  expiresAt: 0,
  expiresIn: 300_000,
  reason: null,
  match: null,
})

const ticketView = (status: string, extra: Record<string, unknown> = {}) =>
  jsonRes(200, {
    ticketId: 'duel:eu:t1',
    queue: 'duel',
    region: 'eu',
    status,
    leader: 'g_1',
    players: ['g_1'],
    attributes: null,
    enqueuedAt: 0,
    expiresAt: 0,
    reason: null,
    match: null,
    ...extra,
  })

/** The pool's `queued` frame for the ticket `duel:eu:t1`, with a minute left. */
const queuedFrame = (existing = false) => ({
  type: 'queued',
  ticketId: 'duel:eu:t1',
  existing,
  expiresAt: 0,
  expiresIn: 60_000,
})

/** A pool socket's answer to a join that matches at once: `queued`, then `match_found`. */
function queueAndMatch(socket: { receive(frame: unknown): void }, existing: boolean): void {
  socket.receive({ type: 'queued', ticketId: 'duel:eu:t1', existing, expiresAt: 0 })
  socket.receive({
    type: 'match_found',
    ticketId: 'duel:eu:t1',
    sessionId: 's1',
    token: 'session-tok',
    players: [],
  })
}

/** Timers keeping the process alive right now. */
/**
 * Matchmaking sockets that all open, the first dropping right after; `onJoin` answers each `join`
 * frame (on whichever socket sent it).
 */
function firstSocketDrops(
  onJoin: (frame: { type: string; [k: string]: unknown }, socket: ScriptedSocket) => void,
): () => SocketLike {
  let opens = 0
  return () =>
    scriptedSocket(
      (socket) => {
        socket.open()
        if (opens++ === 0) setTimeout(() => socket.drop(), 5)
      },
      (frame, socket) => {
        if (frame.type === 'join') onJoin(frame, socket)
      },
    )
}

/**
 * Sockets for a matchmaking ticket that falls back to HTTP: the first opens, answers the join
 * with ticket t1 and drops; every later one fails to open.
 */
function ticketThenNoSocket(region?: string, graceSeconds?: number): () => SocketLike {
  let opens = 0
  return () =>
    scriptedSocket(
      (socket) => {
        if (opens++ > 0) return socket.fail()
        socket.open()
      },
      (frame, socket) => {
        if (frame.type !== 'join') return
        socket.receive({
          type: 'queued',
          ticketId: 't1',
          existing: false,
          expiresAt: 0,
          ...(region ? { region } : {}),
          ...(graceSeconds ? { disconnectGraceSeconds: graceSeconds } : {}),
        })
        setTimeout(() => socket.drop(), 5)
      },
    )
}

/**
 * A pool's answer to a join: `queued` as t1 in `eu`, with a 120 s disconnect grace; then the
 * network goes (sockets and HTTP alike: `net.down`) for 30 s, the socket dropping.
 */
function queuedThenCut(net: { down: boolean }, downMs = 30_000) {
  return (frame: { type: string }, socket: ScriptedSocket) => {
    if (frame.type !== 'join') return
    socket.receive({
      type: 'queued',
      ticketId: 't1',
      existing: false,
      expiresAt: 0,
      region: 'eu',
      disconnectGraceSeconds: 120,
    })
    setTimeout(() => {
      net.down = true
      socket.drop()
      setTimeout(() => (net.down = false), downMs)
    }, 5)
  }
}

/**
 * Counts the timers started from now on that have neither fired nor been cleared, until
 * `restore()`. Only these: the process's own count also moves with timers other tests left.
 */
function trackTimers(): { pending(): number; restore(): void } {
  const pending = new Set<unknown>()
  const realSet = globalThis.setTimeout
  const realClear = globalThis.clearTimeout
  globalThis.setTimeout = ((fn: (...a: unknown[]) => void, ms?: number, ...args: unknown[]) => {
    const id = realSet(() => {
      pending.delete(id)
      fn(...args)
    }, ms)
    pending.add(id)
    return id
  }) as typeof setTimeout
  globalThis.clearTimeout = ((id: Parameters<typeof clearTimeout>[0]) => {
    pending.delete(id)
    realClear(id)
  }) as typeof clearTimeout
  return {
    pending: () => pending.size,
    restore() {
      globalThis.setTimeout = realSet
      globalThis.clearTimeout = realClear
    },
  }
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

  it('a game connection acknowledges what it read (at once, then at most every 250 ms, the last of a burst included) when the session takes acks, and, closed for falling behind (4008), resumes from its last event; to a session that does not say so, none', async () => {
    async function acksSent(oldServer: boolean): Promise<number[][]> {
      vi.useFakeTimers()
      try {
        const acks: number[][] = []
        const urls: string[] = []
        let sockets = 0
        const factory = (url: string) => {
          urls.push(url)
          const mine: number[] = []
          acks.push(mine)
          const n = ++sockets
          return scriptedSocket(
            (socket) => {
              socket.open()
              if (n === 1) {
                setTimeout(() => {
                  socket.receive({
                    type: 'welcome',
                    seq: 0,
                    state: {},
                    you: 'p',
                    status: 'live',
                    acks: oldServer ? undefined : true,
                  })
                  // 100 events at once, then 40 more a second later, then the session closes it.
                  for (let seq = 1; seq <= 100; seq++) {
                    socket.receive({ type: 'event', seq, tick: seq, event: {} })
                  }
                }, 1)
                setTimeout(() => {
                  for (let seq = 101; seq <= 140; seq++) {
                    socket.receive({ type: 'event', seq, tick: seq, event: {} })
                  }
                  setTimeout(() => socket.closeBy(4008), 500)
                }, 1_000)
              } else {
                setTimeout(
                  () =>
                    socket.receive({
                      type: 'resumed',
                      since: 140,
                      seq: 140,
                      tick: 140,
                      tickRate: 1000,
                      acks: oldServer ? undefined : true,
                    }),
                  1,
                )
              }
            },
            (frame) => {
              if (frame.type === 'ack') mine.push(frame.seq as number)
            },
          )
        }
        const client = createClient({
          baseUrl: 'http://nexus.test',
          fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
          WebSocket: factory,
        })
        const game = client.sessions.connect('s1', 'tok')
        await vi.advanceTimersByTimeAsync(5_000)
        expect(sockets).toBe(2)
        expect(new URL(urls[1]!).searchParams.get('since')).toBe('140')
        game.close()
        return acks
      } finally {
        vi.useRealTimers()
      }
    }
    // The welcome at once; the burst read right after it when the 250 ms are up; a second on,
    // the first event read at once, and the 39 right after it (within 250 ms of that) when the
    // interval is up, though nothing more comes; the resume's socket acknowledges at once too.
    expect(await acksSent(false)).toEqual([[0, 100, 101, 140], [140]])
    // A session from before acks says nothing of them: none is sent (each would be refused).
    expect(await acksSent(true)).toEqual([[], []])
  })

  it("a game connection's acknowledgement owed on a socket that closed does not stand in for the next socket's", async () => {
    vi.useFakeTimers()
    try {
      const acks: number[][] = []
      let sockets = 0
      const factory = () => {
        const mine: number[] = []
        acks.push(mine)
        const n = ++sockets
        return scriptedSocket(
          (socket) => {
            socket.open()
            setTimeout(() => {
              if (n === 1) {
                socket.receive({
                  type: 'welcome',
                  seq: 0,
                  state: {},
                  you: 'p',
                  status: 'live',
                  acks: true,
                })
                for (let seq = 1; seq <= 10; seq++)
                  socket.receive({ type: 'event', seq, tick: seq, event: {} })
                // Closed before its owed acknowledgement of event 10 is due.
                setTimeout(() => socket.closeBy(4008), 20)
              } else if (n === 2) {
                socket.receive({
                  type: 'resumed',
                  since: 10,
                  seq: 10,
                  tick: 10,
                  tickRate: 1000,
                  acks: true,
                })
                setTimeout(() => {
                  for (let seq = 11; seq <= 20; seq++)
                    socket.receive({ type: 'event', seq, tick: seq, event: {} })
                }, 5)
              }
            }, 1)
          },
          (frame) => {
            if (frame.type === 'ack') mine.push(frame.seq as number)
          },
        )
      }
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
        WebSocket: factory,
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
      })
      const game = client.sessions.connect('s1', 'tok')
      await vi.advanceTimersByTimeAsync(2_000)
      expect(sockets).toBe(2)
      expect(acks[0]).toEqual([0])
      // The new socket's own: at its resume, then the events read just after, when due.
      expect(acks[1]).toEqual([10, 20])
      game.close()
    } finally {
      vi.useRealTimers()
    }
  })

  it('act() on a session server from before refs (it refuses a frame for carrying one, naming none) is refused `unsupported`, and later acts at once, sending nothing; one that says nothing of refs but answers them (2026-12-06), or says refs or acks, is answered', async () => {
    /** The server: `old`, it refuses every frame carrying a ref without naming it. */
    async function actOn(welcome: Record<string, unknown>, old: boolean) {
      const frames: Record<string, unknown>[] = []
      let server: ScriptedSocket | undefined
      let seq = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              server = socket
              socket.open()
            },
            (frame, socket) => {
              frames.push(frame)
              if (frame.type !== 'action') return
              socket.receive(
                old
                  ? { type: 'error', code: 'invalid_action', message: 'unexpected field ref' }
                  : { type: 'event', seq: ++seq, tick: 0, event: {}, ref: frame.ref },
              )
            },
          ),
      })
      const game = client.sessions.connect('s1', 'tok')
      // Made before the welcome: it waits for it.
      const early = game.act({ action: 'roll' }).then(
        (outcome) => outcome,
        (err: unknown) => err,
      )
      await until(() => server !== undefined)
      server!.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live', ...welcome })
      const outcome = await early
      const sentBefore = frames.filter((f) => f.type === 'action').length
      const next = game.act({ action: 'move' }).then(
        (o) => o,
        (err: unknown) => err,
      )
      const later = await next
      game.close()
      return { outcome, later, sentBefore, sent: frames.filter((f) => f.type === 'action').length }
    }
    const old = await actOn({}, true)
    expect(old.outcome).toBeInstanceOf(ActionRefused)
    expect((old.outcome as ActionRefused).code).toBe('unsupported')
    expect((old.later as ActionRefused).code).toBe('unsupported')
    // The first was sent (nothing said it could not be), the next never.
    expect(old.sent).toBe(1)
    expect(old.sentBefore).toBe(1)
    for (const said of [{}, { refs: true }, { acks: true }, { acks: true, refs: true }]) {
      const answered = await actOn(said, false)
      expect(answered.outcome).toMatchObject({ seq: 1 })
      expect(answered.later).toMatchObject({ seq: 2 })
    }
  })

  it("acts sent to a session that took refs, whose sockets dropped before their answers, fail ActionOutcomeUnknown once it comes back rolled back (saying nothing of refs) and its missed events name none, and are not sent again; a refusal naming 'ref' with no act out turns nothing off", async () => {
    const actions: { socket: number; ref: unknown }[] = []
    let sockets = 0
    let live: ScriptedSocket | undefined
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () => jsonRes(200, { status: 'live', seq: 0, result: null })) as typeof fetch,
      WebSocket: (url) => {
        const n = ++sockets
        return scriptedSocket(
          (socket) => {
            live = socket
            socket.open()
            const since = new URL(url).searchParams.get('since')
            if (since === null) {
              setTimeout(
                () =>
                  socket.receive({
                    type: 'welcome',
                    seq: 0,
                    state: {},
                    you: 'p',
                    status: 'live',
                    refs: true,
                  }),
                1,
              )
              return
            }
            // Rolled back: the act before the drop was applied (its event names no ref), and
            // nothing says refs.
            const seq = Number(since) + 1
            setTimeout(() => {
              socket.receive({ type: 'resumed', since: Number(since), seq })
              socket.receive({ type: 'event', seq, tick: 0, event: {} })
            }, 1)
          },
          (frame, socket) => {
            if (frame.type !== 'action') return
            actions.push({ socket: n, ref: frame.ref })
            // The first two sockets drop before answering.
            if (n <= 2) setTimeout(() => socket.drop(), 1)
          },
        )
      },
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const settle = (action: string) =>
      within(
        game.act({ action }).then(
          (o) => o,
          (err: unknown) => err,
        ),
        action,
        3000,
      )
    expect(await settle('buy')).toBeInstanceOf(ActionOutcomeUnknown)
    expect(actions).toHaveLength(1)
    // Sent after the rollback, dropped too: the same.
    expect(await settle('sell')).toBeInstanceOf(ActionOutcomeUnknown)
    expect(actions).toHaveLength(2)
    // A refusal of a send() of the game's own that mentions a ref, no act out: acts go on.
    live!.receive({ type: 'error', code: 'invalid_message', message: 'unexpected field ref' })
    const next = settle('trade')
    await until(() => actions.length === 3)
    live!.receive({ type: 'event', seq: 3, tick: 0, event: {}, ref: actions[2]!.ref })
    expect(await next).toMatchObject({ seq: 3 })
    game.close()
  })

  it("a game socket that fails to reopen asks the session's state once per attempt, not with retries of its own: a restarting session is asked by every player at once", async () => {
    let reads = 0
    let opens = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 10,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () => {
        reads++
        return new Response(
          JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'Busy', status: 503 }),
          { status: 503, headers: { 'content-type': 'application/problem+json' } },
        )
      }) as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket((socket) => {
          if (++opens <= 3) return socket.fail()
          greet(socket, url)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 5000)
    game.close()
    expect(opens).toBe(4)
    expect(reads).toBe(3)
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
    const failed = game.once('failed')
    await expect(game.ended).rejects.toBeInstanceOf(NexusNetworkError)
    expect((await failed).error).toBeInstanceOf(NexusNetworkError)
    expect(opens).toBe(4)
    expect(delays).toHaveLength(3)
    game.close()
  })

  it("a Retry-After on an answer that is not Nexus's (an edge rule's HTML 429), in seconds or as a date, is the pause before the retry and the problem's retryAfter", async () => {
    for (const header of ['30', new Date(Date.now() + 30_000).toUTCString()]) {
      let attempts = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 10, maxDelayMs: 5_000 },
        fetch: (async () => {
          attempts++
          return new Response('<html>slow down</html>', {
            status: 429,
            headers: { 'content-type': 'text/html', 'retry-after': header },
          })
        }) as unknown as typeof fetch,
      })
      const err = await client.leaderboards.top('daily').catch((e: unknown) => e)
      expect(err, header).toBeInstanceOf(NexusProblem)
      // 30 s is past what the policy waits (maxDelayMs): surfaced at once, not retried in 10 ms.
      expect(attempts, header).toBe(1)
      const retryAfter = (err as NexusProblem).retryAfter!
      expect(retryAfter, header).toBeGreaterThanOrEqual(29)
      expect(retryAfter, header).toBeLessThanOrEqual(30)
    }
  })

  it('a ticket read refused by an edge rule (429, Retry-After: 20) waits the 20 s before reading again, not its own shorter backoff, and up to half as long again (clients told at once do not come back at once); an hour asked is waited a minute at most', async () => {
    for (const [header, waitS, spreadS] of [
      ['20', 20, 10],
      ['3600', 60, 0],
    ] as const) {
      vi.useFakeTimers()
      try {
        const start = Date.now()
        const reads: number[] = []
        const client = createClient({
          baseUrl: 'http://nexus.test',
          fetch: guestFetch(async (_url, init) => {
            if (init?.method === 'POST') {
              return ticket({ status: 'waiting', existing: false, expiresIn: 300_000 })
            }
            reads.push(Date.now() - start)
            if (reads.length === 1) {
              return new Response('<html>slow down</html>', {
                status: 429,
                headers: { 'content-type': 'text/html', 'retry-after': header },
              })
            }
            return ticket({
              status: 'matched',
              match: { sessionId: 's1', token: 'st', players: [] },
            })
          }),
        })
        await client.auth.guest('device-abcdef-123456')
        const t = client.matchmaking.join('duel', { transport: 'http' })
        const outcome = t.matched.catch((e: unknown) => e)
        await vi.advanceTimersByTimeAsync((waitS - 1) * 1000)
        expect(reads, header).toHaveLength(1)
        await vi.advanceTimersByTimeAsync((spreadS + 2) * 1000)
        expect(await outcome, header).toMatchObject({ sessionId: 's1' })
        expect(reads[1]! - reads[0]!, header).toBeGreaterThanOrEqual(waitS * 1000)
        expect(reads[1]! - reads[0]!, header).toBeLessThanOrEqual((waitS + spreadS) * 1000 + 100)
      } finally {
        vi.useRealTimers()
      }
    }
  })

  /**
   * A client signed in as guest A (each sign-in's token `tokA<n>`) whose score submission fails
   * its first attempt (503) and succeeds after: `sent` holds each attempt's credential, and
   * `firstSent` resolves when the first has gone, the retry then waiting out its backoff.
   */
  async function submissionRetrying() {
    const sent: string[] = []
    const keys: string[] = []
    let attempts = 0
    let signIns = 0
    let firstSent!: () => void
    const first = new Promise<void>((resolve) => (firstSent = resolve))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 200, maxDelayMs: 200 },
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          signIns++
          const token = `tokA${signIns}`
          return jsonRes(200, { token, playerId: 'A', expiresIn: 3600, expiresAt: 0 })
        }
        sent.push((init?.headers as Record<string, string>).authorization!)
        keys.push((init?.headers as Record<string, string>)['idempotency-key']!)
        firstSent()
        // The first attempt fails as a server does when it cannot answer now.
        return attempts++ === 0
          ? jsonRes(503, { type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 })
          : jsonRes(200, { cycle: 1, score: 1, best: 1, rank: 1, replayed: false })
      }) as typeof fetch,
    })
    await client.auth.guest('device-a')
    const submitted = client.leaderboards.submit('daily', { score: 1 })
    await first
    return { client, submitted, sent, keys }
  }

  it("a player's request is not retried after another player signs in: no attempt goes out with the new player's token", async () => {
    const { client, submitted, sent } = await submissionRetrying()
    // During the backoff after the first attempt, the game switches to player B.
    await client.auth.useTokens(async () => ({ token: 'tokB', expiresIn: 3600 }), 'B')
    await expect(submitted).rejects.toBeInstanceOf(PlayerChanged)
    expect(sent).toEqual(['Bearer tokA1'])
  })

  it('a submission retrying when its player signs out ends PlayerChanged carrying its key: the attempt that went out may have landed, and A sends it again with that key', async () => {
    const { client, submitted, sent, keys } = await submissionRetrying()
    // During the backoff after the first attempt, the player signs out.
    client.auth.signOut()
    const err = await submitted.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(PlayerChanged)
    expect((err as PlayerChanged).idempotencyKey).toBe(keys[0])
    expect(sent).toEqual(['Bearer tokA1'])
  })

  it("a player's request retrying while the same player signs in again (a guest on the same device) goes on with the new token", async () => {
    const { client, submitted, sent } = await submissionRetrying()
    // During the backoff after the first attempt, the game signs the same guest in again.
    await client.auth.guest('device-a')
    await expect(submitted).resolves.toMatchObject({ rank: 1 })
    expect(sent).toEqual(['Bearer tokA1', 'Bearer tokA2'])
  })

  it('a `since` that is not a whole number from 0 is refused at once as validation (422), with no socket opened', () => {
    let opens = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          opens++
          socket.open()
        }),
    })
    for (const since of [-1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 2]) {
      let err: unknown
      try {
        client.sessions.connect('s1', 'tok', { since })
      } catch (e) {
        err = e
      }
      expect(err, String(since)).toBeInstanceOf(NexusProblem)
      expect(err, String(since)).toMatchObject({ problem: 'validation', status: 422 })
    }
    expect(opens).toBe(0)
  })

  it('cancel() while a socket join is unanswered ends the ticket at once when the join is then refused as `unavailable` (it made nothing)', async () => {
    const guest = (async (input: RequestInfo | URL) =>
      new URL(String(input)).pathname === '/v1/auth/guest'
        ? jsonRes(200, { token: 'tok', playerId: 'g_1', expiresAt: Date.now() + 3_600_000 })
        : jsonRes(200, {})) as typeof fetch
    let answer: (() => void) | undefined
    let joins = 0
    const factory = () =>
      scriptedSocket(
        (socket) => socket.open(),
        (frame, socket) => {
          if (frame.type !== 'join') return
          joins++
          answer = () =>
            socket.receive({ type: 'error', code: 'unavailable', message: 'party not read' })
        },
      )
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guest,
      WebSocket: factory,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
    })
    await client.auth.guest('device-abcdef-123456')
    const ticket = client.matchmaking.join('duel', { transport: 'websocket' })
    const ended = new Promise<string>((resolve) => ticket.on('ended', (e) => resolve(e.reason)))
    // The join is out when the pool has it to answer.
    for (let i = 0; answer === undefined && i < 400; i++) await new Promise((r) => setTimeout(r, 5))
    expect(answer).toBeDefined()
    const started = Date.now()
    const cancelled = ticket.cancel()
    answer!()
    await cancelled
    expect(await ended).toBe('cancelled')
    // Not the 5 s a cancel waits for an answer that never comes, and no join sent again.
    expect(Date.now() - started).toBeLessThan(2000)
    expect(joins).toBe(1)
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

  it('a join whose socket drops before any answer is sent again with the same joinKey, so the server can answer the ticket it made', async () => {
    const joins: Record<string, unknown>[] = []
    let opens = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            opens++
            socket.open()
          },
          (frame, socket) => {
            if (frame.type !== 'join') return
            joins.push(frame)
            // The first join is taken, but its socket drops before the answer; the second is
            // answered with the match the first one's ticket got meanwhile.
            if (joins.length === 1) setTimeout(() => socket.drop(), 1)
            else
              socket.receive({
                type: 'match_found',
                ticketId: 'duel:eu:t1',
                sessionId: 's1',
                token: 'session-tok',
                players: [],
              })
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const match = await within(client.matchmaking.join('duel').matched, 'the match', 5000)
    expect(match.sessionId).toBe('s1')
    expect(opens).toBe(2)
    expect(joins).toHaveLength(2)
    expect(typeof joins[0]!.joinKey).toBe('string')
    expect(joins[1]!.joinKey).toBe(joins[0]!.joinKey)
  })

  it('cancel() while the network is away is carried through, not dropped: the next socket sends it, and the ticket neither queues again nor matches', async () => {
    vi.useFakeTimers()
    try {
      let online = true
      const sent: string[] = []
      const deletes: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url, init) => {
          if (!online) throw new TypeError('fetch failed (offline)')
          if (init?.method === 'DELETE') {
            deletes.push(url.pathname)
            return ticket({ status: 'cancelled', reason: 'cancelled' })
          }
          return ticket({ status: 'waiting' })
        }),
        WebSocket: () =>
          scriptedSocket(
            (socket) => (online ? socket.open() : socket.fail()),
            (frame, socket) => {
              sent.push(frame.type)
              if (frame.type === 'join') {
                socket.receive({
                  type: 'queued',
                  ticketId: 't1',
                  existing: sent.filter((f) => f === 'join').length > 1,
                  expiresAt: 0,
                  expiresIn: 300_000,
                })
              }
              if (frame.type === 'cancel') {
                socket.receive({ type: 'cancelled', ticketId: 't1', reason: 'cancelled' })
              }
            },
          ),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'websocket' })
      const events: string[] = []
      t.on('queued', () => events.push('queued'))
      t.on('ended', ({ outcome }) => events.push(outcome))
      await vi.advanceTimersByTimeAsync(50)
      expect(events).toEqual(['queued'])
      // The connection goes; the player taps Cancel while it is away.
      online = false
      sent.length = 0
      ;(t as unknown as { socket: { close(): void } }).socket.close()
      const cancelled = t.cancel().then(
        () => 'resolved',
        (e: unknown) => e,
      )
      await vi.advanceTimersByTimeAsync(3_000)
      // It comes back within the pool's grace: the cancel goes on the first chance it has.
      online = true
      await vi.advanceTimersByTimeAsync(5_000)
      expect(await cancelled).toBe('resolved')
      await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
      expect(events).toEqual(['queued', 'cancelled'])
      // Left on the server: by the new socket's cancel or the HTTP leave, whichever went first.
      expect(sent.includes('cancel') || deletes.includes('/v1/matchmaking/tickets/t1')).toBe(true)
    } finally {
      vi.useRealTimers()
    }
  })

  it('a join the server refuses ends the wait with a `failed` event, and `once` of an event that will not come rejects with why, not hangs', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            if (frame.type === 'join') {
              socket.receive({
                type: 'error',
                code: 'conflict',
                message: 'a ticket in another region holds this player',
              })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'websocket' })
    const failed = t.once('failed')
    const queued = t.once('queued').catch((e: unknown) => e)
    const { error } = await within(failed, 'failed', 2000)
    const refusal = await within(queued, "once('queued')", 2000)
    expect(refusal).toBe(error)
    await expect(t.matched).rejects.toBe(error)
    // After the end too: at once.
    await expect(within(t.once('match'), "once('match')", 2000)).rejects.toBe(error)
  })

  it('an HTTP ticket whose long poll comes back after a loss says so with `queued` again, as a socket reconnect does: a screen showing `reconnecting` can clear it', async () => {
    let reads = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((_url, init) => {
        if (init?.method === 'POST') {
          return ticket({ status: 'waiting', existing: false, expiresIn: 300_000 })
        }
        reads++
        // The first long poll (and its own retries) is lost; then waiting; then matched.
        if (reads <= 4) throw new TypeError('fetch failed (offline)')
        if (reads === 5) return ticket({ status: 'waiting', expiresIn: 300_000 })
        return ticket({ status: 'matched', match: { sessionId: 's1', token: 'st', players: [] } })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http' })
    const events: string[] = []
    t.on('queued', ({ existing }) => events.push(existing ? 'queued again' : 'queued'))
    t.on('reconnecting', () => events.push('reconnecting'))
    t.on('match', () => events.push('match'))
    await within(t.matched, 'matched', 5000)
    expect(events).toEqual(['queued', 'reconnecting', 'queued again', 'match'])
  })

  it('an HTTP ticket matched just before it would have expired, while the network was away, is taken up once the network is back past its expiry (within the seat’s join grace); without a network it fails after that', async () => {
    for (const networkComesBack of [true, false]) {
      vi.useFakeTimers()
      try {
        let reads = 0
        const client = createClient({
          baseUrl: 'http://nexus.test',
          fetch: guestFetch((_url, init) => {
            if (init?.method === 'POST') {
              return ticket({ status: 'waiting', existing: false, expiresIn: 10_000 })
            }
            // The long polls are lost from the first; the server matched the ticket at 9 s.
            if (++reads <= 3 || Date.now() < start + 70_000 || !networkComesBack) {
              throw new TypeError('fetch failed (offline)')
            }
            return ticket({
              status: 'matched',
              match: { sessionId: 's1', token: 'st', players: [] },
            })
          }),
        })
        const start = Date.now()
        await client.auth.guest('device-abcdef-123456')
        const t = client.matchmaking.join('duel', { transport: 'http' })
        let outcome: unknown = null
        t.matched.then(
          (m) => (outcome = m),
          (e: unknown) => (outcome = e),
        )
        // 60 s past its expiry, the network still away: it has not given up.
        await vi.advanceTimersByTimeAsync(70_000)
        expect(outcome, 'still asking 60 s past the expiry').toBeNull()
        if (networkComesBack) {
          await vi.advanceTimersByTimeAsync(15_000)
          expect(outcome).toMatchObject({ sessionId: 's1' })
        } else {
          await vi.advanceTimersByTimeAsync(75_000)
          expect(outcome).toBeInstanceOf(NexusNetworkError)
        }
        await t.cancel().catch(() => {})
      } finally {
        vi.useRealTimers()
      }
    }
  })

  it('an HTTP long-poll answered at once while the ticket waits (five tabs of one player, a server that holds none) pauses before the next, instead of asking at network speed', async () => {
    for (const [heldMs, most] of [
      [10, 12],
      // Held 3 s, then answered (another tab's poll took its place): a pause after it too.
      [3_000, 8],
    ] as const) {
      await earlyAnswers(heldMs, most)
    }
  })

  it('an HTTP long-poll answered at once with a ticket matched but no match to read (its record swept) pauses too, rather than ask at network speed until the ticket is gone', async () => {
    await earlyAnswers(10, 12, { status: 'matched', match: null })
  })

  async function earlyAnswers(
    heldMs: number,
    most: number,
    answer: Record<string, unknown> = { status: 'waiting' },
  ) {
    vi.useFakeTimers()
    try {
      let reads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (_url, init) => {
          if (init?.method === 'POST') {
            return ticket({ status: 'waiting', existing: false, expiresIn: 300_000 })
          }
          if (init?.method === 'DELETE') return ticket({ status: 'cancelled', reason: 'cancelled' })
          reads++
          await new Promise((resolve) => setTimeout(resolve, heldMs))
          return ticket({ ...answer, expiresIn: 300_000 })
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'http' })
      await vi.advanceTimersByTimeAsync(heldMs === 10 ? 10_000 : 30_000)
      // A second's pause after each answer: about one a second, or one every 4 s.
      expect(reads, `held ${heldMs} ms`).toBeGreaterThanOrEqual(5)
      expect(reads, `held ${heldMs} ms`).toBeLessThanOrEqual(most)
      const cancelled = t.cancel().catch(() => {})
      await vi.advanceTimersByTimeAsync(5_000)
      await cancelled
    } finally {
      vi.useRealTimers()
    }
  }

  it('a ticket cancelled while its socket is still opening sends no join and closes the socket', async () => {
    const frames: string[] = []
    const sockets: ScriptedSocket[] = []
    let created!: () => void
    const socketCreated = new Promise<void>((resolve) => (created = resolve))
    let opened!: () => void
    const socketOpened = new Promise<void>((resolve) => (opened = resolve))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () => {
        created()
        return scriptedSocket(
          (socket) => {
            sockets.push(socket)
            setTimeout(() => {
              socket.open()
              opened()
            }, 10)
          },
          (frame) => frames.push(frame.type),
        )
      },
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    await socketCreated
    await t.cancel()
    await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
    // The socket opens after the cancel: it must not queue the player.
    await socketOpened
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(frames).toEqual([])
    expect(sockets).toHaveLength(1)
    expect(sockets[0]!.closed()).toBe(true)
  })

  it('a game connection closed at once makes no socket (the server would take one for the player arriving)', async () => {
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket((socket) => {
          sockets.push(socket)
          setTimeout(() => socket.open(), 10)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    game.close()
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(sockets).toEqual([])
    expect(game.connected).toBe(false)
  })

  it('a ticket cancelled while its HTTP join is on its way leaves no ticket on the server', async () => {
    let answerJoin!: () => void
    const joinAnswered = new Promise<void>((resolve) => (answerJoin = resolve))
    let receivedJoin!: () => void
    const joinReceived = new Promise<void>((resolve) => (receivedJoin = resolve))
    const deleted: string[] = []
    let deletedOne!: () => void
    const deletion = new Promise<void>((resolve) => (deletedOne = resolve))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(async (url, init) => {
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
          receivedJoin()
          await joinAnswered
          return ticket({ status: 'waiting', existing: false })
        }
        if (init?.method === 'DELETE') {
          deleted.push(url.pathname)
          deletedOne()
          return ticket({ status: 'cancelled', reason: 'cancelled' })
        }
        return ticket({ status: 'waiting' })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http' })
    const queued: unknown[] = []
    t.on('queued', (q) => queued.push(q))
    await joinReceived
    await t.cancel()
    // The join reaches the server after all and makes a ticket: the client takes it back.
    answerJoin()
    await deletion
    expect(deleted).toEqual(['/v1/matchmaking/tickets/t1'])
    expect(queued).toEqual([])
  })

  it("a leader's HTTP party join answered 'the party changed' ends as its members' sockets do: cancelled, party_changed", async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch((url, init) => {
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
          return jsonRes(409, {
            type: 'urn:nexus:problem:conflict',
            title: 'Conflict',
            status: 409,
            detail: 'The party changed while joining; join again with its members',
            partyId: 'p-1',
          })
        }
        return jsonRes(200, {})
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http', party: ['me', 'friend'] })
    const ended: unknown[] = []
    t.on('ended', (e) => ended.push(e))
    await expect(t.matched).rejects.toMatchObject({ outcome: 'cancelled', reason: 'party_changed' })
    expect(ended).toEqual([{ outcome: 'cancelled', reason: 'party_changed' }])
  })

  it('`ready` rejects, as `ended` does, when the session cannot be reached', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () =>
        jsonRes(401, {
          type: 'urn:nexus:problem:unauthorized',
          title: 'Unauthorized',
          status: 401,
        })) as unknown as typeof fetch,
      WebSocket: () => scriptedSocket((socket) => socket.fail()),
    })
    const game = client.sessions.connect('s1', 'not-a-token')
    await expect(game.ready).rejects.toMatchObject({ problem: 'unauthorized', status: 401 })
    await expect(game.ended).rejects.toMatchObject({ status: 401 })
  })

  it("a ticket over `transport: 'websocket'` whose socket cannot come back within the pool's grace fails, and leaves the queue over HTTP (it would be matched through the pool's grace)", async () => {
    const deletes: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url, init) => {
        if (init?.method === 'DELETE') {
          deletes.push(decodeURIComponent(url.pathname))
          return ticket({ status: 'cancelled', reason: 'cancelled' })
        }
        return jsonRes(200, {})
      }),
      // A queue whose grace is 1 s: the socket's reconnects give up after most of it.
      WebSocket: ticketThenNoSocket(undefined, 1),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { region: 'eu', transport: 'websocket' })
    await expect(t.matched).rejects.toBeInstanceOf(NexusNetworkError)
    await within(
      (async () => {
        while (deletes.length === 0) await new Promise((r) => setTimeout(r, 1))
      })(),
      'the DELETE',
      2000,
    )
    expect(deletes).toEqual(['/v1/matchmaking/tickets/t1'])
  })

  it("a ticket over `transport: 'websocket'` rides out a 30 s loss of its socket within the queue's 120 s grace, past maxReconnects, and gets its match on the socket", async () => {
    vi.useFakeTimers()
    try {
      const net = { down: false }
      let opens = 0
      const deletes: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 2,
        fetch: guestFetch(async (url, init) => {
          if (init?.method === 'DELETE') deletes.push(url.pathname)
          return jsonRes(200, {})
        }),
        WebSocket: () =>
          scriptedSocket((socket) => {
            if (net.down) return socket.fail()
            opens++
            socket.open()
            // The pool takes the ticket back on the reconnect, matched meanwhile.
            if (opens > 1) {
              setTimeout(
                () =>
                  socket.receive({
                    type: 'match_found',
                    ticketId: 't1',
                    sessionId: 's1',
                    token: 'st',
                    players: [],
                  }),
                1,
              )
            }
          }, queuedThenCut(net)),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { region: 'eu', transport: 'websocket' })
      const outcome = t.matched.catch((e: unknown) => e)
      await vi.advanceTimersByTimeAsync(90_000)
      expect(await outcome).toMatchObject({ ticketId: 't1', sessionId: 's1' })
      expect(t.transport).toBe('websocket')
      expect(deletes).toEqual([])
    } finally {
      vi.useRealTimers()
    }
  })

  it("a ticket over `transport: 'websocket'` whose socket went silent (no close) keeps trying through the pool's grace from when the pool takes the socket as gone, 90 s after its last frame, not from when it noticed", async () => {
    vi.useFakeTimers()
    try {
      const net = { down: false }
      const client = createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 2,
        fetch: guestFetch(() => jsonRes(200, {})),
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              if (net.down) return socket.fail()
              socket.open()
            },
            (frame, socket) => {
              // Pings answered while the network is there; after, nothing, nor a close.
              if (frame.type === 'ping' && !net.down) socket.receive({ type: 'pong' })
              if (frame.type !== 'join') return
              socket.receive({
                type: 'queued',
                ticketId: 't1',
                existing: false,
                expiresAt: 0,
                region: 'eu',
                disconnectGraceSeconds: 10,
              })
              setTimeout(() => (net.down = true), 5)
            },
            { pong: false },
          ),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { region: 'eu', transport: 'websocket' })
      let failedAt = -1
      t.matched.catch(() => (failedAt = Date.now()))
      await vi.advanceTimersByTimeAsync(20)
      const lastHeardAt = Date.now()
      // The keepalive gives the socket up within 30 s; the pool closes it as silent 90 s after
      // its last frame, and keeps the ticket 10 s more (the SDK tries for 8 s of them).
      await vi.advanceTimersByTimeAsync(85_000)
      expect(failedAt).toBe(-1)
      await vi.advanceTimersByTimeAsync(40_000)
      expect(failedAt).toBeGreaterThanOrEqual(lastHeardAt + 90_000)
    } finally {
      vi.useRealTimers()
    }
  })

  it("a party member's wait that fails leaves the party's ticket to its leader; the leader's own failed wait deletes it", async () => {
    for (const role of ['member', 'leader'] as const) {
      const deletes: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url, init) => {
          if (init?.method === 'DELETE') {
            deletes.push(decodeURIComponent(url.pathname))
            return ticket({ status: 'cancelled', reason: 'cancelled' })
          }
          if (url.pathname === '/v1/parties/me') return partyOf(null)
          return jsonRes(200, {})
        }),
        // The party's ticket reaches this socket, then the pool refuses it for good.
        WebSocket: () =>
          scriptedSocket((socket) => {
            socket.open()
            setTimeout(() => {
              socket.receive({
                type: 'queued',
                ticketId: 'squads:eu:t1',
                existing: true,
                expiresAt: 0,
              })
              socket.receive({ type: 'error', code: 'invalid', message: 'refused' })
            }, 1)
          }),
      })
      await client.auth.guest('device-abcdef-123456')
      const wait =
        role === 'member'
          ? client.matchmaking.waitForParty('squads')
          : client.matchmaking.join('squads', { transport: 'websocket' })
      await expect(wait.matched).rejects.toMatchObject({ problem: 'validation' })
      // Whatever the failure sends goes out within the task it failed in.
      await new Promise((r) => setTimeout(r, 0))
      expect(deletes, role).toEqual(
        role === 'member' ? [] : ['/v1/matchmaking/tickets/squads:eu:t1'],
      )
    }
  })

  it('a socket ticket that falls back to HTTP joins again over HTTP, ending the server’s grace on the same ticket', async () => {
    const joins: unknown[] = []
    let rejoined = false
    let readsInGrace = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url, init) => {
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
          joins.push(JSON.parse(String(init.body)))
          rejoined = true
          // The player's ticket is still waiting: the join answers it.
          return ticket({ status: 'waiting', existing: true })
        }
        if (url.pathname === '/v1/matchmaking/tickets/t1') {
          if (rejoined) {
            return ticket({
              status: 'matched',
              match: { sessionId: 's1', token: 'session-token', players: [] },
            })
          }
          // As the pool does: without a join, the grace runs out and the ticket is cancelled.
          return readsInGrace++ === 0
            ? ticket({ status: 'waiting' })
            : ticket({ status: 'cancelled', reason: 'disconnected' })
        }
        return jsonRes(200, {})
      }),
      WebSocket: ticketThenNoSocket(),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { region: 'eu' })
    const match = await t.matched
    expect(t.transport).toBe('http')
    expect(match).toMatchObject({ ticketId: 't1', sessionId: 's1' })
    expect(joins).toEqual([{ region: 'eu' }])
  })

  it('a socket ticket joined without a region falls back to HTTP in the region its `queued` named, not the queue’s first', async () => {
    const joins: unknown[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url, init) => {
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
          joins.push(JSON.parse(String(init.body)))
          return ticket({
            status: 'matched',
            existing: true,
            match: { sessionId: 's1', token: 'session-token', players: [] },
          })
        }
        if (url.pathname === '/v1/matchmaking/tickets/t1') return ticket({ status: 'waiting' })
        return jsonRes(200, {})
      }),
      WebSocket: ticketThenNoSocket('eu'),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    await t.matched
    expect(t.transport).toBe('http')
    expect(joins).toEqual([{ region: 'eu' }])
  })

  it('an HTTP join whose answer is lost, then meets the network down for a while, takes the ticket it made once it is back: a cancel meanwhile leaves it, nothing waits on the server', async () => {
    vi.useFakeTimers()
    try {
      let made = false
      let down = true
      const joins: number[] = []
      const deletes: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (url, init) => {
          if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
            joins.push(Date.now())
            // The first reaches the server, which makes the ticket; its answer is lost.
            if (!made) {
              made = true
              throw new TypeError('network connection lost')
            }
            if (down) throw new TypeError('network down')
            return ticket({ status: 'waiting', existing: true })
          }
          if (init?.method === 'DELETE') {
            deletes.push(url.pathname)
            return ticket({ status: 'cancelled', reason: 'cancelled' })
          }
          return ticket({ status: 'waiting' })
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'http' })
      const ended: { outcome: string }[] = []
      t.on('ended', (e) => ended.push(e))
      // Past the transport's own retries of the join.
      await vi.advanceTimersByTimeAsync(5_000)
      expect(ended).toEqual([])
      void t.cancel()
      down = false
      await vi.advanceTimersByTimeAsync(20_000)
      expect(joins.length).toBeGreaterThan(5)
      expect(deletes).toEqual(['/v1/matchmaking/tickets/t1'])
      expect(ended).toMatchObject([{ outcome: 'cancelled' }])
    } finally {
      vi.useRealTimers()
    }
  })

  /**
   * The matchmaking routes over HTTP on `pool`: keyed joins, cancels (recorded in `deleted`),
   * long-polls held 1 s; nothing answers while `net.down`. `onJoin` sees each join the server
   * made, and may lose its answer (throw).
   */
  function httpTickets(
    pool: ReturnType<typeof enqueueModel>,
    deleted: string[],
    net: { down: boolean },
    opts: { expiresIn?: number; onJoin?: () => void } = {},
  ): typeof fetch {
    const life = opts.expiresIn === undefined ? {} : { expiresIn: opts.expiresIn }
    return guestFetch(async (url, init) => {
      if (net.down) throw new TypeError('network down')
      if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets') {
        const key = (init.headers as Record<string, string>)['idempotency-key']!
        const { id, existing } = pool.join(key)
        opts.onJoin?.()
        return ticket({ ticketId: id, status: pool.tickets.get(id), existing, ...life })
      }
      const id = url.pathname.split('/').pop()!
      if (init?.method === 'DELETE') {
        deleted.push(id)
        pool.tickets.set(id, 'cancelled')
        return ticket({ ticketId: id, status: 'cancelled', reason: 'cancelled' })
      }
      if (url.searchParams.get('wait')) await new Promise((r) => setTimeout(r, 1000))
      return ticket({ ticketId: id, status: pool.tickets.get(id) ?? 'waiting', ...life })
    })
  }

  /**
   * Back in the menu, the player queues again while `first`'s cancel is still carried through
   * with the network away; once it is back, only the first ticket was cancelled, and the second
   * waits (then leaves).
   */
  async function queueAgainDuringCancel(
    client: ReturnType<typeof createClient>,
    pool: ReturnType<typeof enqueueModel>,
    deleted: string[],
    net: { down: boolean },
    ends: string[],
  ): Promise<void> {
    const second = client.matchmaking.join('duel', { transport: 'http' })
    second.on('ended', (e) => ends.push(`second ${e.outcome}`))
    await vi.advanceTimersByTimeAsync(2_000)
    net.down = false
    await vi.advanceTimersByTimeAsync(20_000)
    expect(deleted).toEqual(['t1'])
    expect(ends).toEqual(['first cancelled'])
    expect(second.ticketId).toBe('t2')
    expect(pool.tickets.get('t2')).toBe('waiting')
    const left = second.cancel()
    await vi.advanceTimersByTimeAsync(5_000)
    await left
  }

  it("an HTTP ticket outlives a wall clock set a day forward while it waits (a player skipping a game's timer): a network loss after it is ridden out, not taken as the ticket's time up", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
    try {
      const pool = enqueueModel()
      const net = { down: false }
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: httpTickets(pool, [], net, { expiresIn: 300_000 }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'http' })
      const ends: string[] = []
      t.on('ended', (e) => ends.push(e.outcome))
      t.on('failed', () => ends.push('failed'))
      await vi.advanceTimersByTimeAsync(500)
      expect(t.ticketId).toBe('t1')
      // The network drops (the poll on its way still answers), and the clock is set a day on.
      net.down = true
      await vi.advanceTimersByTimeAsync(2_000)
      vi.setSystemTime(Date.now() + 86_400_000)
      await vi.advanceTimersByTimeAsync(10_000)
      net.down = false
      await vi.advanceTimersByTimeAsync(10_000)
      expect(ends).toEqual([])
      expect(pool.tickets.get('t1')).toBe('waiting')
      const left = t.cancel()
      await vi.advanceTimersByTimeAsync(5_000)
      await left
      expect(ends).toEqual(['cancelled'])
    } finally {
      vi.useRealTimers()
    }
  })

  it('a join made while an earlier cancelled join of the same queue is still sent again waits for it: the earlier one leaves only its own ticket, not the new one', async () => {
    vi.useFakeTimers()
    try {
      const pool = enqueueModel()
      const net = { down: false }
      let firstLost = true
      const deleted: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: httpTickets(pool, deleted, net, {
          onJoin: () => {
            if (!firstLost) return
            // Made on the server; the answer lost with the network.
            firstLost = false
            net.down = true
            throw new TypeError('network connection lost')
          },
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const first = client.matchmaking.join('duel', { transport: 'http' })
      const ends: string[] = []
      first.on('ended', (e) => ends.push(`first ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(3_000)
      void first.cancel()
      await queueAgainDuringCancel(client, pool, deleted, net, ends)
    } finally {
      vi.useRealTimers()
    }
  })

  it('a join made while the cancel of an earlier queued ticket is still being carried through (the network away) waits for it: that cancel ends only its own ticket', async () => {
    vi.useFakeTimers()
    try {
      const pool = enqueueModel()
      const net = { down: false }
      const deleted: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: httpTickets(pool, deleted, net, { expiresIn: 300_000 }),
      })
      await client.auth.guest('device-abcdef-123456')
      const first = client.matchmaking.join('duel', { transport: 'http' })
      const ends: string[] = []
      first.on('ended', (e) => ends.push(`first ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(500)
      expect(first.ticketId).toBe('t1')
      net.down = true
      void first.cancel()
      await vi.advanceTimersByTimeAsync(2_000)
      await queueAgainDuringCancel(client, pool, deleted, net, ends)
    } finally {
      vi.useRealTimers()
    }
  })

  it('an HTTP ticket reached again while its cancel is under way does not say `queued` again', async () => {
    vi.useFakeTimers()
    try {
      let reads = 0
      let deletes = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (_url, init) => {
          if (init?.method === 'POST') {
            return ticket({ status: 'waiting', existing: false, expiresIn: 300_000 })
          }
          if (init?.method === 'DELETE') {
            // The first answer asks for a pause; the long poll comes back meanwhile.
            if (++deletes === 1) {
              return new Response(
                JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 }),
                {
                  status: 503,
                  headers: { 'content-type': 'application/problem+json', 'retry-after': '2' },
                },
              )
            }
            return ticket({ status: 'cancelled', reason: 'cancelled' })
          }
          // The first long poll and its retries are lost; then it answers, still waiting, at
          // the end of its wait.
          if (++reads <= 4) throw new TypeError('fetch failed (offline)')
          await new Promise((r) => setTimeout(r, 1000))
          return ticket({ status: 'waiting', expiresIn: 300_000 })
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'http' })
      const events: string[] = []
      t.on('queued', () => events.push('queued'))
      t.on('reconnecting', () => events.push('reconnecting'))
      t.on('ended', ({ outcome }) => events.push(outcome))
      // The player cancels as soon as the loss shows, while the poll waits to try again.
      for (let i = 0; i < 200 && !events.includes('reconnecting'); i++) {
        await vi.advanceTimersByTimeAsync(10)
      }
      expect(events).toEqual(['queued', 'reconnecting'])
      const cancelled = t.cancel()
      await vi.advanceTimersByTimeAsync(10_000)
      await cancelled
      expect(events).toEqual(['queued', 'reconnecting', 'cancelled'])
    } finally {
      vi.useRealTimers()
    }
  })

  it("a submission handed back with a key the SDK drew more than 23 hours ago rejects with SubmissionKeyTooOld and sends nothing (the server keeps keys 24 h: it would be applied again); a younger one, or the game's own key at any age, is sent", async () => {
    const sent: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url, init) => {
        if (url.pathname.endsWith('/scores')) {
          sent.push((init?.headers as Record<string, string>)['idempotency-key']!)
          if (sent.length === 1) throw new TypeError('fetch failed (offline)')
          return jsonRes(200, { cycle: 1, score: 1, best: 1, rank: 1, replayed: true })
        }
        return jsonRes(404, {})
      }),
    })
    await client.auth.guest()
    // Offline: the error hands the drawn key back, to send again later.
    const lost = await client.leaderboards.submit('wins', { score: 1 }).catch((e: unknown) => e)
    expect(lost).toBeInstanceOf(NexusNetworkError)
    const key = (lost as NexusNetworkError).idempotencyKey!
    const now = Date.now()
    const clock = vi.spyOn(Date, 'now')
    try {
      // 22 hours later: sent again, answered as the first.
      clock.mockReturnValue(now + 22 * 3_600_000)
      await expect(
        client.leaderboards.submit('wins', { score: 1 }, { idempotencyKey: key }),
      ).resolves.toMatchObject({ replayed: true })
      expect(sent).toEqual([key, key])
      // 24 hours later: refused here, nothing sent.
      clock.mockReturnValue(now + 24 * 3_600_000)
      const old = await client.leaderboards
        .submit('wins', { score: 1 }, { idempotencyKey: key })
        .catch((e: unknown) => e)
      expect(old).toBeInstanceOf(SubmissionKeyTooOld)
      expect(old).toMatchObject({ idempotencyKey: key })
      expect((old as SubmissionKeyTooOld).drawnAt).toBeLessThanOrEqual(now)
      expect(sent).toHaveLength(2)
      // A key of the game's own says no age: it is sent.
      await client.leaderboards.submit('wins', { score: 1 }, { idempotencyKey: 'run-118' })
      expect(sent).toEqual([key, key, 'run-118'])
    } finally {
      clock.mockRestore()
    }
  })

  it('a submit that gives up with an error other submits share (a token renewal that failed) throws each its own key', async () => {
    let expired = false
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          if (expired) throw new TypeError('fetch failed (offline)')
          return jsonRes(200, { token: 'tok', playerId: 'g_1', expiresIn: 1, expiresAt: 0 })
        }
        return jsonRes(200, { cycle: 1, score: 1, best: 1, rank: 1, replayed: false })
      }) as typeof fetch,
    })
    await client.auth.guest('device-abcdef-123456')
    // The token runs out while the device is offline; both submissions wait on one renewal.
    expired = true
    await new Promise((r) => setTimeout(r, 1100))
    const errors = await Promise.all(
      ['key-a', 'key-b'].map((k) =>
        client.leaderboards.submit('daily', { score: 1 }, { idempotencyKey: k }).catch((e) => e),
      ),
    )
    expect(errors.every((e) => e instanceof NexusNetworkError)).toBe(true)
    expect(errors.map((e: NexusNetworkError) => e.idempotencyKey)).toEqual(['key-a', 'key-b'])
    // Errors of their own, as an error reporter sees them: a real Error, its message and cause.
    for (const e of errors as NexusNetworkError[]) {
      expect(Object.prototype.toString.call(e)).toBe('[object Error]')
      expect(e.message).toMatch(/\S/)
      expect(Object.keys(e)).toContain('idempotencyKey')
      expect(e.cause).toBeDefined()
    }
  })

  it('a join made while an earlier cancelled socket join (its `queued` lost) is still sent again waits for it too: the earlier cancel ends only its own ticket', async () => {
    vi.useFakeTimers()
    try {
      const pool = enqueueModel()
      const tickets = pool.tickets
      const attachedTo = new Map<SocketLike, string>()
      let down = false
      let loseFirstJoin = true
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (url) => {
          if (down) throw new TypeError('network down')
          if (url.pathname === '/v1/matchmaking/duel') {
            return jsonRes(200, { queue: 'duel', regions: ['eu'], disconnectGraceSeconds: 10 })
          }
          return jsonRes(404, { type: 'urn:nexus:problem:not-found', title: 'x', status: 404 })
        }),
        WebSocket: () => {
          let socketRef: SocketLike | null = null
          const socket = scriptedSocket(
            (driver) => (down ? driver.fail() : driver.open()),
            (frame, driver) => {
              if (frame.type === 'join') {
                if (loseFirstJoin) {
                  // Sent, and the network drops before the answer.
                  loseFirstJoin = false
                  down = true
                  driver.drop()
                  return
                }
                const { id, existing } = pool.join(frame.joinKey as string)
                attachedTo.set(socketRef!, id)
                driver.receive({ type: 'queued', ticketId: id, existing, expiresAt: 0 })
              } else if (frame.type === 'cancel') {
                const id = attachedTo.get(socketRef!)
                if (id === undefined) return
                tickets.set(id, 'cancelled')
                driver.receive({ type: 'cancelled', ticketId: id, reason: 'cancelled' })
              }
            },
          )
          socketRef = socket
          return socket
        },
      })
      await client.auth.guest('device-abcdef-123456')
      const first = client.matchmaking.join('duel')
      const ends: string[] = []
      first.on('ended', (e) => ends.push(`first ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(200)
      const cancelled = first.cancel()
      await vi.advanceTimersByTimeAsync(6_000)
      await cancelled
      // Back, the player queues again.
      down = false
      const second = client.matchmaking.join('duel')
      second.on('ended', (e) => ends.push(`second ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(15_000)
      expect(ends).toEqual(['first cancelled'])
      expect(second.ticketId).not.toBeNull()
      expect(tickets.get(second.ticketId!)).toBe('waiting')
      const left = second.cancel()
      await vi.advanceTimersByTimeAsync(6_000)
      await left
    } finally {
      vi.useRealTimers()
    }
  })

  it('a join made within the 5 s a socket cancel waits for its answer (the socket only looks open: a phone that just changed networks) waits for that cancel: it is not handed the ticket being cancelled', async () => {
    vi.useFakeTimers()
    try {
      const pool = enqueueModel()
      const tickets = pool.tickets
      const deleted: string[] = []
      let firstSocket: SocketLike | null = null
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (url, init) => {
          if (url.pathname === '/v1/matchmaking/duel') {
            return jsonRes(200, { queue: 'duel', regions: ['eu'], disconnectGraceSeconds: 10 })
          }
          const id = url.pathname.split('/').pop()!
          if (init?.method === 'DELETE' && tickets.get(id) === 'waiting') {
            deleted.push(id)
            tickets.set(id, 'cancelled')
            return jsonRes(200, { ...ticketBody(id), status: 'cancelled', reason: 'cancelled' })
          }
          if (tickets.has(id)) return jsonRes(200, { ...ticketBody(id), status: tickets.get(id) })
          return jsonRes(404, { type: 'urn:nexus:problem:not-found', title: 'x', status: 404 })
        }),
        WebSocket: () => {
          let socketRef: SocketLike | null = null
          const socket = scriptedSocket(
            (driver) => driver.open(),
            (frame, driver) => {
              // The first socket's link is gone once it has queued: what it sends goes nowhere.
              if (socketRef === firstSocket && tickets.size > 0) return
              if (frame.type === 'join') {
                const { id, existing } = pool.join(frame.joinKey as string)
                driver.receive({ type: 'queued', ticketId: id, existing, expiresAt: 0 })
              }
            },
          )
          socketRef = socket
          firstSocket ??= socket
          return socket
        },
      })
      await client.auth.guest('device-abcdef-123456')
      const first = client.matchmaking.join('duel')
      const ends: string[] = []
      first.on('ended', (e) => ends.push(`first ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(200)
      expect(first.ticketId).toBe('t1')
      const cancelled = first.cancel()
      await vi.advanceTimersByTimeAsync(1_000)
      // The player taps Play again a second later.
      const second = client.matchmaking.join('duel')
      second.on('ended', (e) => ends.push(`second ${e.outcome}`))
      await vi.advanceTimersByTimeAsync(15_000)
      await cancelled
      expect(deleted).toEqual(['t1'])
      expect(ends).toEqual(['first cancelled'])
      expect(second.ticketId).toBe('t2')
      expect(tickets.get('t2')).toBe('waiting')
    } finally {
      vi.useRealTimers()
    }
  })

  it('a queued socket ticket whose WebSocket stays blocked goes over HTTP within the pool’s 10 s grace, though its reconnects alone would take longer', async () => {
    const { transport, joinedAt, droppedAt } = await httpJoinAfterSocketLoss((socket, opens) => {
      if (opens > 1) return socket.fail()
      socket.open()
    })
    expect(transport).toBe('http')
    expect(joinedAt).toBeGreaterThan(0)
    expect(joinedAt - droppedAt).toBeLessThan(10_000)
  })

  it('a queued socket ticket whose first HTTP read meets an overloaded pool (Retry-After 12 s) still joins over HTTP within the pool’s 10 s grace: its wait is cut to the grace', async () => {
    const { transport, joinedAt, droppedAt } = await httpJoinAfterSocketLoss(
      (socket, opens) => {
        if (opens > 1) return socket.fail()
        socket.open()
      },
      { firstReadOverloaded: true },
    )
    expect(transport).toBe('http')
    expect(joinedAt).toBeGreaterThan(0)
    expect(joinedAt - droppedAt).toBeLessThan(10_000)
  })

  it('a queued socket ticket whose HTTP read finds it waiting, and whose join meets an overloaded pool past the socket’s 10 s grace, goes on joining while the read keeps it present (35 s on the pool): it does not fail and cancel a ticket the pool keeps', async () => {
    const { transport, joinedAt, droppedAt, failed, deletedBeforeCancel } =
      await httpJoinAfterSocketLoss(
        (socket, opens) => {
          if (opens > 1) return socket.fail()
          socket.open()
        },
        { joinsOverloadedForMs: 20_000 },
      )
    expect(failed).toEqual([])
    expect(deletedBeforeCancel).toBe(0)
    expect(transport).toBe('http')
    expect(joinedAt - droppedAt).toBeGreaterThanOrEqual(20_000)
  })

  it('a socket join whose `queued` was lost with its socket (the ticket made) goes over HTTP within the pool’s 10 s grace, as a queued ticket does, and takes that ticket by its key', async () => {
    const { transport, joinedAt, droppedAt, failed, joinedWithSocketKey } =
      await httpJoinAfterSocketLoss(
        (socket, opens) => {
          if (opens > 1) return socket.fail()
          socket.open()
        },
        { queuedLost: true },
      )
    expect(failed).toEqual([])
    expect(joinedWithSocketKey).toBe(true)
    expect(transport).toBe('http')
    expect(joinedAt).toBeGreaterThan(0)
    expect(joinedAt - droppedAt).toBeLessThan(10_000)
  })

  it('a queued socket ticket whose reconnect hangs (an upgrade that neither opens nor fails) goes over HTTP within the pool’s 10 s grace, though one attempt may take 10 s', async () => {
    const { transport, joinedAt, droppedAt } = await httpJoinAfterSocketLoss((socket, opens) => {
      // Every reconnect hangs.
      if (opens === 1) socket.open()
    })
    expect(transport).toBe('http')
    expect(joinedAt).toBeGreaterThan(0)
    expect(joinedAt - droppedAt).toBeLessThan(10_000)
  })

  it('a queued socket ticket whose reconnects are refused slowly, then hang, goes over HTTP within the pool’s 10 s grace, though the backoff has grown to seconds', async () => {
    const { transport, joinedAt, droppedAt } = await httpJoinAfterSocketLoss((socket, opens) => {
      // Four reconnects refused 300 ms after they start (a slow network), then hanging.
      if (opens === 1) return socket.open()
      if (opens <= 5) setTimeout(() => socket.fail(), 300)
    })
    expect(transport).toBe('http')
    expect(joinedAt).toBeGreaterThan(0)
    // By the 6 s a socket may stay down and the last try's second: not the grown backoff's.
    expect(joinedAt - droppedAt).toBeLessThanOrEqual(7_500)
  })

  /**
   * A socket ticket queued, then the network cut for `downMs` (the socket with it); its read over
   * HTTP finds it matched once the network is back. What `matched` ends with by `afterMs`.
   */
  async function matchedAfterCut(downMs: number, afterMs: number): Promise<unknown> {
    vi.useFakeTimers()
    try {
      const net = { down: false }
      let opens = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (url) => {
          if (net.down) throw new TypeError('fetch failed (offline)')
          if (url.pathname === '/v1/matchmaking/tickets/t1') {
            return ticket({
              status: 'matched',
              match: { sessionId: 's1', token: 'st', players: [] },
            })
          }
          return jsonRes(200, {})
        }),
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              if (opens++ > 0) return socket.fail()
              socket.open()
            },
            queuedThenCut(net, downMs),
          ),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel')
      const outcome = t.matched.catch((e: unknown) => e)
      await vi.advanceTimersByTimeAsync(afterMs)
      return await outcome
    } finally {
      vi.useRealTimers()
    }
  }

  it("a queued socket ticket cut off with the network rides it out over HTTP for the queue's grace (120 s here), not for the transport's few attempts", async () => {
    expect(await matchedAfterCut(30_000, 90_000)).toMatchObject({ ticketId: 't1', sessionId: 's1' })
  })

  it("a queued socket ticket matched within the queue's grace, with the network away past the grace, is taken up once it is back (within the seat's join grace)", async () => {
    expect(await matchedAfterCut(170_000, 200_000)).toMatchObject({
      ticketId: 't1',
      sessionId: 's1',
    })
  })

  it('close() during a reconnect pause, and a confirmed socket cancel, leave no timer behind', async () => {
    const timers = trackTimers()
    // The pause's jitter at its middle: a draw under 10 ms (one in 400) would prove nothing.
    const jitter = vi.spyOn(Math, 'random').mockReturnValue(0.5)
    try {
      const sessions = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(() => jsonRes(200, {})),
        retry: { baseDelayMs: 4000, maxDelayMs: 4000 },
        WebSocket: () =>
          scriptedSocket((socket) => {
            socket.open()
            setTimeout(() => {
              socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' })
              socket.drop()
            }, 1)
          }),
      })
      const game = sessions.sessions.connect('s1', 'tok')
      const { delayMs } = await game.once('reconnecting')
      game.close()
      await new Promise((resolve) => setTimeout(resolve, 10))
      // About 2 s of pause was left when the client closed.
      expect(delayMs).toBeGreaterThan(10)
      expect(timers.pending()).toBe(0)

      const matchmaking = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(() => jsonRes(200, {})),
        WebSocket: () =>
          scriptedSocket(
            (socket) => socket.open(),
            (frame, socket) => {
              if (frame.type === 'join')
                socket.receive({ type: 'queued', ticketId: 't1', existing: false, expiresAt: 0 })
              if (frame.type === 'cancel')
                socket.receive({ type: 'cancelled', reason: 'cancelled' })
            },
          ),
      })
      await matchmaking.auth.guest('device-abcdef-123456')
      const t = matchmaking.matchmaking.join('duel')
      await t.once('queued')
      await t.cancel()
      await new Promise((resolve) => setTimeout(resolve, 10))
      expect(timers.pending()).toBe(0)
    } finally {
      timers.restore()
      jitter.mockRestore()
    }
  })

  it('a socket ticket whose HTTP re-join makes a new ticket that matches at once keeps a match: the old one’s, or else the new one', async () => {
    const matched = (ticketId: string, sessionId: string) =>
      ticket({ ticketId, status: 'matched', match: { sessionId, token: 'tok', players: [] } })
    for (const [old, expected] of [
      [() => matched('t1', 's1'), { ticketId: 't1', sessionId: 's1' }],
      [
        () => ticket({ status: 'cancelled', reason: 'disconnected' }),
        { ticketId: 't2', sessionId: 's2' },
      ],
    ] as const) {
      let reads = 0
      const deleted: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 1,
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url, init) => {
          // t1 ended between the fallback's read and its join: the join makes t2, and the
          // matching the join runs matches t2 at once, so it can no longer be cancelled.
          if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets')
            return matched('t2', 's2')
          if (init?.method === 'DELETE') {
            deleted.push(url.pathname)
            return jsonRes(409, {
              type: 'urn:nexus:problem:conflict',
              title: 'Conflict',
              status: 409,
              ticketStatus: 'matched',
            })
          }
          if (url.pathname === '/v1/matchmaking/tickets/t1')
            return reads++ === 0 ? ticket({ status: 'waiting' }) : old()
          if (url.pathname === '/v1/matchmaking/tickets/t2') return matched('t2', 's2')
          return jsonRes(200, {})
        }),
        WebSocket: ticketThenNoSocket(),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { region: 'eu' })
      expect(await t.matched).toMatchObject(expected)
      expect(deleted).toEqual(['/v1/matchmaking/tickets/t2'])
    }
  })
})

/**
 * The token a socket offers, where the server reads it: in its subprotocols, beside `nexus.v1`,
 * never in its URL (which logs keep).
 */
function offeredToken(url: string, protocols: string[]): string {
  if (new URL(url).searchParams.has('token')) throw new Error(`a token in the URL: ${url}`)
  if (protocols[0] !== 'nexus.v1') throw new Error(`no nexus.v1 offered: ${protocols.join()}`)
  return protocols.find((p) => p.startsWith('nexus.token.'))?.slice('nexus.token.'.length) ?? ''
}

/**
 * A session's sockets as the server runs them: refused unless `accepts` the token; `welcome` on a
 * first join, `resumed` on a reconnect with `since`.
 */
function gameSockets(accepts: (token: string) => boolean) {
  const live: ScriptedSocket[] = []
  const factory = (url: string, protocols: string[]) =>
    scriptedSocket((socket) => {
      const u = new URL(url)
      if (!accepts(offeredToken(url, protocols))) return socket.fail()
      socket.open()
      live.push(socket)
      const since = u.searchParams.get('since')
      setTimeout(
        () =>
          socket.receive(
            since === null
              ? { type: 'welcome', seq: 3, state: {}, you: 'g_1', status: 'live' }
              : { type: 'resumed', since: Number(since), seq: 3 },
          ),
        1,
      )
    })
  return { live, factory }
}

/** Whether a dropped game came back (`resumed`) or ended, or what it failed with. */
function resumedOrEnded(game: { once(e: 'resumed'): Promise<unknown>; ended: Promise<unknown> }) {
  return within(
    Promise.race([game.once('resumed').then(() => 'resumed'), game.ended.then(() => 'ended')]),
    'resume',
    3000,
  ).catch((e: unknown) => e)
}

describe("a socket factory's signature", () => {
  it('a factory written before 0.2.0 (it takes the URL only) still gets the token, in ?token=; one that takes protocols, or declares no parameter (a wrapper passing its arguments on), gets it there', async () => {
    const seen: { url: string; protocols: string[] | undefined }[] = []
    const scripted = () =>
      scriptedSocket((socket) => {
        socket.open()
        setTimeout(
          () => socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'g_1', status: 'live' }),
          1,
        )
      })
    const old = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as typeof fetch,
      WebSocket: (url: string) => {
        seen.push({ url, protocols: undefined })
        return scripted()
      },
    })
    const current = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as typeof fetch,
      WebSocket: (url, protocols) => {
        seen.push({ url, protocols })
        return scripted()
      },
    })
    const wrapper = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as typeof fetch,
      WebSocket: (...args: [string, string[]]) => {
        seen.push({ url: args[0], protocols: args[1] })
        return scripted()
      },
    })
    for (const client of [old, current, wrapper]) {
      const game = client.sessions.connect('s1', 'session-tok')
      await within(game.ready, 'welcome', 2000)
      game.close()
    }
    expect(new URL(seen[0]!.url).searchParams.get('token')).toBe('session-tok')
    for (const passesProtocols of [seen[1]!, seen[2]!]) {
      expect(new URL(passesProtocols.url).searchParams.has('token')).toBe(false)
      expect(passesProtocols.protocols).toEqual(['nexus.v1', 'nexus.token.session-tok'])
    }
  })
})

describe('request ids', () => {
  it("every call sends one x-request-id, the same on each of its retries, and its error keeps it (the server logs it as clientRequestId); a problem keeps the server's own id too", async () => {
    const seen: string[] = []
    let answer = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      adminKey: 'admin',
      retry: { attempts: 3, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
        seen.push((init?.headers as Record<string, string>)['x-request-id']!)
        // A network failure, then a problem the server answers.
        if (answer++ === 0) throw new TypeError('fetch failed')
        return new Response(
          JSON.stringify({
            type: 'urn:nexus:problem:conflict',
            title: 'Conflict',
            status: 409,
            requestId: 'server-id-1',
          }),
          { status: 409, headers: { 'content-type': 'application/problem+json' } },
        )
      }) as typeof fetch,
    })
    const err = await client.leaderboards
      .submit('daily', { score: 1, playerId: 'p1' })
      .catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect(seen).toHaveLength(2)
    expect(seen[0]).toMatch(/^[0-9a-f-]{36}$/)
    expect(seen[1]).toBe(seen[0])
    expect(err).toMatchObject({ requestId: 'server-id-1', clientRequestId: seen[0] })

    // A call that never got an answer keeps its id on the network error.
    const headersSent: Record<string, string>[] = []
    const offline = createClient({
      baseUrl: 'http://nexus.test',
      adminKey: 'admin',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
        headersSent.push(init?.headers as Record<string, string>)
        throw new TypeError('fetch failed')
      }) as typeof fetch,
    })
    const lost = await offline.leaderboards
      .submit('daily', { score: 1, playerId: 'p1' })
      .catch((e: unknown) => e)
    expect(lost).toBeInstanceOf(NexusNetworkError)
    expect((lost as NexusNetworkError).clientRequestId).toBe(headersSent[0]!['x-request-id'])
    expect(headersSent[0]!['x-request-id']).not.toBe(seen[0])
    // A public read carries none: a header of its own would cost a browser game on another
    // origin a preflight for every URL it reads.
    const publicRead = createClient({
      baseUrl: 'http://nexus.test',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
        headersSent.push(init?.headers as Record<string, string>)
        throw new TypeError('fetch failed')
      }) as typeof fetch,
    })
    await publicRead.leaderboards.top('daily').catch(() => {})
    expect(Object.keys(headersSent[1]!)).toEqual(['accept'])
  })
})

describe('game connection tokens', () => {
  it('a game connection reconnects with the player’s current token after auth renewed the one it connected with', async () => {
    // The server accepts the player's own token on the game socket. The SDK renews it (here: the
    // guest token is refused once and renewed, as after expiry); the old one is no longer valid.
    let issued = 0
    const valid = new Set<string>()
    const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input))
      if (url.pathname === '/v1/auth/guest') {
        const token = `player-tok-${++issued}`
        valid.clear()
        valid.add(token)
        return jsonRes(200, { token, playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
      }
      if (url.pathname === '/v1/sessions/s1')
        return valid.has(authOf(init))
          ? jsonRes(200, { status: 'live', seq: 3, result: null })
          : unauthorized()
      return jsonRes(200, {})
    }) as typeof fetch
    const { live, factory } = gameSockets((token) => valid.has(token))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: fetchImpl,
      WebSocket: factory,
      maxReconnects: 3,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
    })
    await client.auth.guest('device-abcdef-123456')
    const game = client.sessions.connect('s1', await client.auth.token())
    await within(game.ready, 'welcome', 2000)
    // The token expires; the SDK renews it (any request would; here explicitly).
    await client.auth.token(true)
    // Later the network drops: the connection must come back with the player's current token.
    live[0]!.drop()
    const outcome = await resumedOrEnded(game)
    game.close()
    expect(outcome).toBe('resumed')
  })

  it('a game connection whose session token expired (6 h) goes on with the player’s own token when the client is signed in', async () => {
    // docs/sessions.md: "a player coming back after that connects with their player token".
    let sessionTokenValid = true
    const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input))
      if (url.pathname === '/v1/auth/guest')
        return jsonRes(200, {
          token: 'player-tok',
          playerId: 'g_1',
          expiresIn: 86400,
          expiresAt: 0,
        })
      if (url.pathname === '/v1/sessions/s1') {
        const t = authOf(init)
        return t === 'player-tok' || (t === 'session-tok' && sessionTokenValid)
          ? jsonRes(200, { status: 'live', seq: 3, result: null })
          : unauthorized()
      }
      return jsonRes(200, {})
    }) as typeof fetch
    const { live, factory } = gameSockets(
      (t) => t === 'player-tok' || (t === 'session-tok' && sessionTokenValid),
    )
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: fetchImpl,
      WebSocket: factory,
      maxReconnects: 3,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
    })
    await client.auth.guest('device-abcdef-123456')
    const game = client.sessions.connect('s1', 'session-tok')
    await within(game.ready, 'welcome', 2000)
    // Six hours later: the session token has expired, then the socket drops.
    sessionTokenValid = false
    live[0]!.drop()
    const outcome = await resumedOrEnded(game)
    game.close()
    expect(outcome).toBe('resumed')
  })
})

describe('game connection reconnect budget', () => {
  // Fake time, and the longest pauses full jitter can draw: the most patient the SDK can be.
  let random: ReturnType<typeof vi.spyOn>
  beforeEach(() => {
    vi.useFakeTimers()
    random = vi.spyOn(Math, 'random').mockReturnValue(0.999)
  })
  afterEach(() => {
    random.mockRestore()
    vi.useRealTimers()
  })

  /**
   * A client whose network can be cut (`net.down`): sockets then fail to open and requests
   * throw; otherwise each socket opens (kept in `live`) and is welcomed at seq 0.
   */
  function cuttableNetwork(opts: { maxReconnects?: number; silent?: boolean } = {}) {
    const { silent, ...settings } = opts
    const net = { down: false, live: [] as ScriptedSocket[] }
    const client = createClient({
      baseUrl: 'http://nexus.test',
      ...settings,
      fetch: (async () => {
        if (net.down) throw new TypeError('fetch failed (offline)')
        return jsonRes(200, { status: 'live', seq: 0, result: null })
      }) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            if (net.down) return socket.fail()
            socket.open()
            net.live.push(socket)
            setTimeout(
              () =>
                socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' }),
              1,
            )
          },
          // `silent`: pings answered while the network is there; after, nothing comes back on a
          // live socket, nor a close (otherwise a cut drops it).
          (frame, socket) => {
            if (silent && frame.type === 'ping' && !net.down) socket.receive({ type: 'pong' })
          },
          { pong: !silent },
        ),
    })
    return { net, client }
  }

  it('a game connection that cannot reach the server keeps trying for reconnectForMs (60 s, the seat’s grace), then gives up', async () => {
    const { net, client } = cuttableNetwork()
    const live = net.live
    const game = client.sessions.connect('s1', 'tok')
    await vi.advanceTimersByTimeAsync(20)
    await game.ready
    let gaveUp: unknown = null
    let gaveUpAfterMs = -1
    const droppedAt = Date.now()
    game.ended.catch((e: unknown) => {
      gaveUp = e
      gaveUpAfterMs = Date.now() - droppedAt
    })
    // The player goes through a tunnel: 50 s without network, inside the 60 s grace, well past
    // the default 8 attempts.
    net.down = true
    live[0]!.drop()
    await vi.advanceTimersByTimeAsync(50_000)
    expect({ stillTrying: gaveUp === null, gaveUpAfterMs }).toEqual({
      stillTrying: true,
      gaveUpAfterMs: -1,
    })
    // Past the grace the seat is gone: the connection gives up within one more attempt.
    await vi.advanceTimersByTimeAsync(20_000)
    expect(gaveUp).toBeInstanceOf(NexusNetworkError)
    expect(gaveUpAfterMs).toBeGreaterThanOrEqual(60_000)
    game.close()
  })

  it("a first connect that cannot reach the server keeps trying for the session's join grace (120 s), longer than reconnectForMs", async () => {
    const { net, client } = cuttableNetwork({ maxReconnects: 2 })
    net.down = true
    const startedAt = Date.now()
    const game = client.sessions.connect('s1', 'tok')
    let gaveUpAfterMs = -1
    game.ended.catch(() => (gaveUpAfterMs = Date.now() - startedAt))
    game.ready.catch(() => {})
    await vi.advanceTimersByTimeAsync(100_000)
    expect(gaveUpAfterMs).toBe(-1)
    await vi.advanceTimersByTimeAsync(40_000)
    expect(gaveUpAfterMs).toBeGreaterThanOrEqual(120_000)
    game.close()
  })

  it('a game connection whose socket went silent (no close: a phone in a tunnel) keeps trying for reconnectForMs from when the server takes the socket as gone, 90 s after the last frame heard, not from when it noticed', async () => {
    const { net, client } = cuttableNetwork({ maxReconnects: 2, silent: true })
    const game = client.sessions.connect('s1', 'tok')
    await vi.advanceTimersByTimeAsync(20)
    await game.ready
    const lastHeardAt = Date.now()
    let gaveUpAt = -1
    game.ended.catch(() => (gaveUpAt = Date.now()))
    net.down = true
    // The keepalive gives the socket up within 30 s; the session closes it as silent 90 s after
    // the last frame it had, and holds the seat 60 s from then: 150 s in all.
    await vi.advanceTimersByTimeAsync(140_000)
    expect(gaveUpAt).toBe(-1)
    await vi.advanceTimersByTimeAsync(40_000)
    expect(gaveUpAt).toBeGreaterThanOrEqual(lastHeardAt + 150_000)
    game.close()
  })

  it('a game connection whose device slept past the server’s silence (5 min; its monotonic clock stopped) counts its budget from the wake, not 90 s on: the seat is long released', async () => {
    const { net, client } = cuttableNetwork({ maxReconnects: 2, silent: true })
    const game = client.sessions.connect('s1', 'tok')
    await vi.advanceTimersByTimeAsync(20)
    await game.ready
    let gaveUpAt = -1
    game.ended.catch(() => (gaveUpAt = Date.now()))
    // Asleep 5 minutes: the wall clock moves, no timer runs, the monotonic clock stands still.
    net.down = true
    vi.setSystemTime(Date.now() + 5 * 60_000)
    const wokeAt = Date.now()
    game.wake()
    // The wake's probe finds the socket dead within 3 s; reconnectForMs (60 s) runs from there.
    await vi.advanceTimersByTimeAsync(75_000)
    expect(gaveUpAt).toBeGreaterThanOrEqual(wokeAt + 60_000)
    game.close()
  })

  it('a game connection back for a moment after a long loss keeps trying for reconnectForMs from its last drop, as the server holds the seat again from that close', async () => {
    // Few attempts: only the time budget keeps the connection trying.
    const { net, client } = cuttableNetwork({ maxReconnects: 2 })
    const live = net.live
    const game = client.sessions.connect('s1', 'tok')
    await vi.advanceTimersByTimeAsync(20)
    await game.ready
    let gaveUp: unknown = null
    game.ended.catch((e: unknown) => {
      gaveUp = e
    })
    // 50 s without network, then back long enough for one socket to open, which drops within
    // 3 s (not long enough to count as healthy).
    net.down = true
    live[0]!.drop()
    await vi.advanceTimersByTimeAsync(50_000)
    net.down = false
    for (let i = 0; i < 60 && live.length < 2; i++) await vi.advanceTimersByTimeAsync(500)
    expect(live.length).toBe(2)
    await vi.advanceTimersByTimeAsync(3_000)
    net.down = true
    live[1]!.drop()
    const lastDropAt = Date.now()
    // Over a minute since the first loss, 50 s since the last: still trying.
    await vi.advanceTimersByTimeAsync(50_000)
    expect(gaveUp).toBeNull()
    // Past a minute since the last drop, it gives up.
    await vi.advanceTimersByTimeAsync(25_000)
    expect(gaveUp).toBeInstanceOf(NexusNetworkError)
    expect(Date.now() - lastDropAt).toBeGreaterThanOrEqual(60_000)
    game.close()
  })
})

describe('game connection close()', () => {
  it('close() while a game socket is opening that then fails makes no further request', async () => {
    // Fake timers: "no further request" is then checked over the whole reconnect budget, not
    // only over however long a real wait would be.
    vi.useFakeTimers()
    try {
      const requests: string[] = []
      let sockets = 0
      let failIt: (() => void) | undefined
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async (input: RequestInfo | URL) => {
          requests.push(new URL(String(input)).pathname)
          return jsonRes(200, { status: 'live', seq: 0, result: null })
        }) as unknown as typeof fetch,
        WebSocket: () => {
          sockets++
          return scriptedSocket((socket) => (failIt = () => socket.fail()))
        },
      })
      const game = client.sessions.connect('s1', 'tok')
      // The socket is made, and its script has run; it has neither opened nor failed.
      await vi.advanceTimersByTimeAsync(5)
      expect(failIt).toBeDefined()
      game.close()
      failIt!()
      await vi.advanceTimersByTimeAsync(120_000)
      expect({ requests, sockets }).toEqual({ requests: [], sockets: 1 })
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('game connection events and close() while reconnecting', () => {
  /** Polls `cond` (a few ms apart) until it holds, for at most 5 s. */
  async function until(cond: () => boolean, what: string): Promise<void> {
    const end = Date.now() + 5_000
    while (!cond()) {
      if (Date.now() > end) throw new Error(`${what}: not within 5 s`)
      await new Promise((r) => setTimeout(r, 2))
    }
  }

  it('a listener added by a listener (awaiting the next event in a handler) hears the next event, not the one being handed out', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(() => {
            socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'a', status: 'live' })
            socket.receive({ type: 'event', seq: 1, event: { n: 1 } })
            socket.receive({ type: 'event', seq: 2, event: { n: 2 } })
          }, 1)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    const next = await new Promise<number>((resolve) => {
      game.on('event', ({ seq }) => {
        if (seq === 1) void game.once('event').then((e) => resolve(e.seq))
      })
    })
    expect(next).toBe(2)
    game.close()
  })

  /**
   * A client whose first game socket opens, is welcomed and drops 5 ms on; each later socket runs
   * `later`. `made()` counts the sockets the client made.
   */
  function droppedOnce(later: (socket: ScriptedSocket) => void) {
    let made = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () =>
        jsonRes(200, { status: 'live', seq: 0, result: null })) as unknown as typeof fetch,
      WebSocket: () => {
        const first = ++made === 1
        return scriptedSocket((socket) => {
          if (!first) return later(socket)
          socket.open()
          socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'a', status: 'live' })
          setTimeout(() => socket.drop(), 5)
        })
      },
    })
    return { client, made: () => made }
  }

  it('close() while the reconnect waits for its token opens no socket: the server would take it for the player coming back', async () => {
    let tokens = 0
    let give!: (token: string) => void
    const { client, made } = droppedOnce((socket) => socket.open())
    const game = client.sessions.connect('s1', () =>
      tokens++ === 0 ? 'tok' : new Promise<string>((r) => (give = r)),
    )
    await until(() => tokens === 2, 'the reconnect asking for its token')
    game.close()
    give('tok')
    await new Promise((r) => setTimeout(r, 50))
    expect(made()).toBe(1)
  })

  it('close() while a reconnect socket is still connecting closes it before it opens', async () => {
    let second: ScriptedSocket | undefined
    const { client } = droppedOnce((socket) => (second = socket))
    const game = client.sessions.connect('s1', 'tok')
    await until(() => second !== undefined, 'the reconnect socket made')
    game.close()
    expect(second!.closed()).toBe(true)
  })
})

describe('matchmaking refusals and network loss', () => {
  /** What a socket join to `squads` rejects with when the pool answers it an error frame. */
  async function socketJoinRefused(
    code: string,
    message: string,
    opts: Parameters<ReturnType<typeof createClient>['matchmaking']['join']>[1],
  ): Promise<unknown> {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            if (frame.type === 'join') socket.receive({ type: 'error', code, message })
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('squads', opts)
    return t.matched.catch((e: unknown) => e)
  }

  it('a socket `invalid` refusal rejects with validation 422, as the HTTP join does', async () => {
    // match-pool.ts sends `invalid` for enqueue's `validation` (a party over maxPartySize), which
    // HTTP answers 422 `validation`.
    const err = await socketJoinRefused('invalid', 'A ticket holds at most 2 players', {
      party: ['g_1', 'g_2', 'g_3'],
    })
    expect(err).toBeInstanceOf(NexusProblem)
    expect((err as NexusProblem).problem).toBe('validation')
    expect((err as NexusProblem).status).toBe(422)
  })

  it("a socket join whose key another join used is refused as HTTP's: 422 idempotency-key-reused", async () => {
    const err = await socketJoinRefused(
      'key_reused',
      'This join key was used for a different join',
      {
        attributes: { mode: 'x' },
      },
    )
    expect(err).toBeInstanceOf(NexusProblem)
    expect((err as NexusProblem).problem).toBe('idempotency-key-reused')
    expect((err as NexusProblem).status).toBe(422)
  })

  it('a region the queue does not have, over `transport: websocket`, rejects with validation 422, not a network error', async () => {
    // The socket route refuses the upgrade with 422 (region not in the queue); the SDK's check
    // reads the queue without the region and sees 200.
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 2,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) =>
        url.pathname === '/v1/matchmaking/duel'
          ? jsonRes(200, {
              queue: 'duel',
              teams: 2,
              teamSize: 1,
              rules: 'dice-race',
              regions: ['eu'],
              maxPartySize: 1,
              ticketTtlSeconds: 300,
            })
          : jsonRes(200, {}),
      ),
      WebSocket: () => scriptedSocket((socket) => socket.fail()),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { region: 'mars', transport: 'websocket' })
    const err = await within(t.matched, 'matched', 5000).catch((e: unknown) => e)
    expect(err).not.toBeInstanceOf(NexusNetworkError)
    expect(err).toBeInstanceOf(NexusProblem)
    expect((err as NexusProblem).problem).toBe('validation')
  })

  it('a matchmaking socket that does not open renews the player’s token (a refused upgrade hides its 401)', async () => {
    let issued = 0
    const valid = new Set<string>()
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 3,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          const token = `tok-${++issued}`
          valid.add(token)
          return jsonRes(200, { token, playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
        }
        return jsonRes(200, {
          queue: 'duel',
          teams: 2,
          teamSize: 1,
          rules: 'dice-race',
          regions: ['eu'],
          maxPartySize: 1,
          ticketTtlSeconds: 300,
        })
      }) as typeof fetch,
      WebSocket: (url, protocols) =>
        scriptedSocket(
          (socket) => (valid.has(offeredToken(url, protocols)) ? socket.open() : socket.fail()),
          (frame, socket) => {
            if (frame.type === 'join') queueAndMatch(socket, false)
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    // The server stops taking the token (a rotated secret): only a renewed one works.
    valid.clear()
    const t = client.matchmaking.join('duel', { transport: 'websocket' })
    const outcome = await within(t.matched, 'matched', 3000).catch((e: unknown) => e)
    expect(outcome).toMatchObject({ sessionId: 's1' })
  })

  it("a queued ticket's socket that keeps failing to reopen (everyone reconnecting after a deploy) reads the queue's settings as cached, and renews no token (a guest's renewal is a sign-in); a join's first socket failing reads them fresh and renews once", async () => {
    async function reconnectOf(queuedFirst: boolean) {
      let signIns = 0
      const queueReads: (string | null)[] = []
      let sockets = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 2,
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
          const url = new URL(String(input))
          if (url.pathname === '/v1/auth/guest') {
            signIns++
            return jsonRes(200, { token: 'tok', playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
          }
          if (url.pathname.startsWith('/v1/matchmaking/tickets/')) {
            return jsonRes(200, { ...waitingDuel, ticketId: 'duel:eu:t1' })
          }
          queueReads.push(new Headers(init?.headers).get('cache-control'))
          return jsonRes(200, {
            queue: 'duel',
            teams: 2,
            teamSize: 1,
            rules: 'dice-race',
            regions: ['eu'],
            maxPartySize: 1,
            ticketTtlSeconds: 300,
            disconnectGraceSeconds: 10,
          })
        }) as typeof fetch,
        WebSocket: () => {
          const n = ++sockets
          return scriptedSocket(
            (socket) => {
              // Queued first: the first socket queues the ticket and drops, the next four fail
              // to open (past maxReconnects), the sixth takes the ticket back. Else the first
              // fails, and the second opens.
              if (queuedFirst ? n >= 2 && n <= 5 : n === 1) return socket.fail()
              socket.open()
            },
            (frame, socket) => {
              if (frame.type !== 'join') return
              if (queuedFirst && n === 1) {
                socket.receive({
                  type: 'queued',
                  ticketId: 'duel:eu:t1',
                  region: 'eu',
                  existing: false,
                  expiresAt: 0,
                })
                setTimeout(() => socket.drop(), 5)
              } else queueAndMatch(socket, queuedFirst)
            },
          )
        },
      })
      await client.auth.guest('device-abcdef-123456')
      const before = signIns
      const t = client.matchmaking.join('duel', { transport: 'websocket' })
      const outcome = await within(t.matched, 'matched', 10_000).catch((e: unknown) => e)
      expect(outcome).toMatchObject({ sessionId: 's1' })
      return { renewals: signIns - before, queueReads, sockets }
    }
    const queued = await reconnectOf(true)
    expect(queued.sockets).toBe(6)
    expect(queued.renewals).toBe(0)
    expect(queued.queueReads.length).toBeGreaterThan(0)
    expect(queued.queueReads.every((h) => h === null)).toBe(true)
    const first = await reconnectOf(false)
    expect(first.renewals).toBe(1)
    expect(first.queueReads).toEqual(['no-cache'])
  })

  it('matchmaking sockets that open and drop at once give up after maxReconnects and fall back to HTTP', async () => {
    let opens = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 2,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url, init) => {
        if (init?.method === 'POST' && url.pathname === '/v1/matchmaking/duel/tickets')
          return jsonRes(201, {
            ticketId: 'duel:eu:t1',
            queue: 'duel',
            region: 'eu',
            status: 'matched',
            expiresAt: 0,
            existing: false,
            match: { sessionId: 's1', token: 'session-tok', players: [] },
          })
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket((socket) => {
          opens++
          socket.open()
          setTimeout(() => socket.drop(), 1)
        }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    const outcome = await within(t.matched, 'matched', 3000).catch((e: unknown) => e)
    await t.cancel().catch(() => {})
    expect(opens).toBeLessThanOrEqual(3)
    expect(t.transport).toBe('http')
    expect(outcome).toMatchObject({ sessionId: 's1' })
  })

  it('cancel() of a `matching` ticket (its session being made) does not end it: the match still comes', async () => {
    // DELETE on a matching ticket is 409 (ticketStatus: matching); the server goes on to match it.
    let cancelAsked = false
    let readsAfterCancel = 0
    const view = ticketView
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch(async (url, init) => {
        if (init?.method === 'POST') return view('waiting', { existing: false })
        if (init?.method === 'DELETE') {
          cancelAsked = true
          return jsonRes(409, {
            type: 'urn:nexus:problem:conflict',
            title: 'Conflict',
            status: 409,
            detail: "Ticket 'duel:eu:t1' is matching and can no longer be cancelled",
            ticketStatus: 'matching',
          })
        }
        if (!cancelAsked) {
          await new Promise((r) => setTimeout(r, 20))
          return view('waiting')
        }
        // The session comes up a moment later.
        return readsAfterCancel++ < 2
          ? view('matching')
          : view('matched', { match: { sessionId: 's1', token: 'session-tok', players: [] } })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http' })
    await within(t.once('queued'), 'queued', 2000)
    await t.cancel().catch(() => {})
    const outcome = await within(t.matched, 'matched', 2000).catch((e: unknown) => e)
    expect(outcome).toMatchObject({ sessionId: 's1' })
  })

  it('an HTTP long-poll rides out a 3 s network loss before the ticket expires, and matches, with the device clock right or an hour ahead', async () => {
    // Ahead, the device reads the server's expiresAt as long past: the wait is timed by
    // expiresIn (what the ticket had left by the server's clock) and the device's own clock.
    for (const clockAheadMs of [0, 3_600_000]) {
      let down = false
      let matchedOnServer = false
      const view = (status: string, extra: Record<string, unknown> = {}) =>
        ticketView(status, { expiresAt: serverClock() + 60_000, expiresIn: 60_000, ...extra })
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(async (url, init) => {
          if (down) throw new TypeError('fetch failed (offline)')
          if (init?.method === 'POST') return view('waiting', { existing: false })
          if (matchedOnServer)
            return view('matched', {
              match: { sessionId: 's1', token: 'session-tok', players: [] },
            })
          await new Promise((r) => setTimeout(r, 20))
          return view('waiting')
        }),
      })
      const realNow = Date.now
      Date.now = () => realNow() + clockAheadMs
      try {
        await client.auth.guest('device-abcdef-123456')
        const t = client.matchmaking.join('duel', { transport: 'http' })
        await within(t.once('queued'), 'queued', 2000)
        let failed: unknown = null
        t.matched.catch((e: unknown) => (failed = e))
        down = true
        await new Promise((r) => setTimeout(r, 3000))
        // The network is back; the ticket waited on the server all along and has matched.
        down = false
        matchedOnServer = true
        const outcome = await within(t.matched, 'matched', 5000).catch((e: unknown) => e)
        expect(failed, `clock ${clockAheadMs} ms ahead`).toBeNull()
        expect(outcome).toMatchObject({ sessionId: 's1' })
      } finally {
        Date.now = realNow
      }
    }
  }, 25_000)

  it('an HTTP ticket being matched when its time ran out is waited for through a network loss, and its match arrives', async () => {
    let polls = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch(async (_url, init) => {
        if (init?.method === 'POST') {
          return ticketView('waiting', { existing: false, expiresAt: serverClock(), expiresIn: 50 })
        }
        polls++
        // Matched as it ran out; its session is still being made.
        if (polls === 1) {
          return ticketView('matching', { expiresAt: serverClock(), expiresIn: 0 })
        }
        // Then the network drops for more than one request's retries.
        if (polls <= 7) throw new TypeError('fetch failed (offline)')
        return ticketView('matched', {
          expiresAt: serverClock(),
          expiresIn: 0,
          match: { sessionId: 's1', token: 'session-tok', players: [] },
        })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http' })
    const outcome = await within(t.matched, 'matched', 10_000).catch((e: unknown) => e)
    expect(outcome).toMatchObject({ sessionId: 's1' })
    expect(polls).toBeGreaterThan(7)
  }, 20_000)

  it('a socket ticket whose token renewal fails for the network counts a failed attempt and rides out a 3 s loss', async () => {
    let down = false
    let issued = 0
    let opens = 0
    const realNow = Date.now
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async (input: RequestInfo | URL) => {
        if (down) throw new TypeError('fetch failed (offline)')
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest')
          return jsonRes(200, {
            token: `tok-${++issued}`,
            playerId: 'g_1',
            expiresIn: 600,
            expiresAt: 0,
          })
        return jsonRes(200, {})
      }) as typeof fetch,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            if (down) return socket.fail()
            socket.open()
            if (++opens > 1) setTimeout(() => queueAndMatch(socket, true), 1)
          },
          (frame, socket) => {
            if (frame.type === 'join') {
              socket.receive({
                type: 'queued',
                ticketId: 'duel:eu:t1',
                existing: false,
                expiresAt: 0,
              })
              // Six of the token's ten minutes later (it is due for renewal: 5-minute margin),
              // the network goes away for a few seconds.
              setTimeout(() => {
                Date.now = () => realNow() + 360_000
                down = true
                socket.drop()
                setTimeout(() => (down = false), 3000)
              }, 5)
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    try {
      const t = client.matchmaking.join('duel')
      const outcome = await within(t.matched, 'matched', 10_000).catch((e: unknown) => e)
      expect(outcome).toMatchObject({ sessionId: 's1' })
    } finally {
      Date.now = realNow
    }
  }, 15_000)

  it('a party member’s wait rides over a party ticket it cannot read (swept from its pool after its game, or made before the member joined) and takes the leader’s next one', async () => {
    for (const transport of ['http', 'websocket'] as const) {
      let partyReads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url) => {
          // The party still names its last game's ticket, long swept; then the leader queues.
          if (url.pathname === '/v1/parties/me')
            return partyOf(partyReads++ < 2 ? 'squads:eu:old' : 'squads:eu:t1')
          const path = decodeURIComponent(url.pathname)
          if (path === '/v1/matchmaking/tickets/squads:eu:old')
            return jsonRes(404, {
              type: 'urn:nexus:problem:not-found',
              title: 'Not found',
              status: 404,
              detail: 'No such ticket',
            })
          if (path === '/v1/matchmaking/tickets/squads:eu:t1') return matchedSquad()
          return jsonRes(200, {})
        }),
        WebSocket: () => scriptedSocket((socket) => socket.open()),
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads', { transport })
      const outcome = await within(mine.matched, `the member’s match (${transport})`, 8000).catch(
        (e: unknown) => e,
      )
      await mine.cancel().catch(() => {})
      expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
    }
  }, 30_000)

  it('a party member waiting for one queue finds its ticket while the party waits in another too (the party’s latest ticket being of that other queue)', async () => {
    let partyReads = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        // No ticket yet; then the leader queues for squads, and right after for duels.
        if (url.pathname === '/v1/parties/me') {
          const first = partyReads++ === 0
          return jsonRes(200, {
            id: 'p1',
            leader: 'g_0',
            members: [],
            invites: [],
            createdAt: 0,
            ticketId: first ? null : 'duels:eu:d1',
            tickets: first ? [] : ['duels:eu:d1', 'squads:eu:t1'],
          })
        }
        const path = decodeURIComponent(url.pathname)
        if (path === '/v1/matchmaking/tickets/squads:eu:t1') return matchedSquad()
        if (path === '/v1/matchmaking/tickets/duels:eu:d1')
          return jsonRes(200, { ...waitingDuel, ticketId: 'duels:eu:d1' })
        return jsonRes(200, {})
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads', { transport: 'http' })
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
  }, 15_000)

  it('a party member whose party passes to them while they wait (the leader left) is told so, their wait ended (`leader`), rather than waiting for good for a leader to queue', async () => {
    for (const [transport, leaderFrom] of [
      ['http', 0],
      ['http', 2],
      ['websocket', 2],
    ] as const) {
      let partyReads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url) => {
          if (url.pathname === '/v1/parties/me') {
            // g_0 leads, then leaves: the party passes to this player (g_1), and has no ticket.
            const leader = partyReads++ >= leaderFrom ? 'g_1' : 'g_0'
            return partyOf(null, leader)
          }
          return jsonRes(200, {})
        }),
        WebSocket: () => scriptedSocket((socket) => socket.open()),
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads', { transport })
      const ended = mine.once('ended')
      const outcome = await within(
        mine.matched,
        `the wait (${transport}, ${leaderFrom})`,
        12_000,
      ).catch((e: unknown) => e)
      expect(outcome).toBeInstanceOf(MatchmakingEnded)
      expect(outcome).toMatchObject({ outcome: 'cancelled', reason: 'leader' })
      expect(await ended).toEqual({ outcome: 'cancelled', reason: 'leader' })
    }
  }, 40_000)

  it('a party member whose wait begins after the party was matched (the app killed meanwhile) takes that match while its game is live (asked again past a 503); the last game, over, is passed over for the next', async () => {
    for (const [transport, status, unavailableFirst] of [
      ['http', 'live', false],
      ['websocket', 'live', false],
      ['http', 'live', true],
      ['http', 'finished', false],
    ] as const) {
      let partyReads = 0
      let sessionReads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url, init) => {
          const path = decodeURIComponent(url.pathname)
          // The party names its matched ticket; later (a finished game's case) a new one.
          if (path === '/v1/parties/me')
            return partyOf(partyReads++ < 2 ? 'squads:eu:t1' : 'squads:eu:t2')
          if (path === '/v1/matchmaking/tickets/squads:eu:t1') return matchedSquad()
          if (path === '/v1/matchmaking/tickets/squads:eu:t2')
            return jsonRes(200, {
              ticketId: 'squads:eu:t2',
              queue: 'squads',
              region: 'eu',
              status: 'matched',
              expiresAt: 0,
              reason: null,
              match: { sessionId: 's2', token: 'session-tok-2', players: [] },
            })
          // The session is read with the token the ticket carries for this player.
          if (path === '/v1/sessions/s1' && authOf(init) === 'session-tok') {
            // A session object restarting (a deploy) answers the first read 503.
            if (unavailableFirst && sessionReads++ === 0) {
              return new Response(
                JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 }),
                {
                  status: 503,
                  headers: { 'content-type': 'application/problem+json', 'retry-after': '1' },
                },
              )
            }
            return jsonRes(200, { sessionId: 's1', status })
          }
          return jsonRes(200, {})
        }),
        WebSocket: () => scriptedSocket((socket) => socket.open()),
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads', { transport })
      const outcome = await within(
        mine.matched,
        `the match (${transport}, ${status})`,
        12_000,
      ).catch((e: unknown) => e)
      await mine.cancel().catch(() => {})
      expect(outcome).toMatchObject(
        status === 'live' ? { sessionId: 's1', token: 'session-tok' } : { sessionId: 's2' },
      )
    }
  }, 40_000)

  it('a party member still finds its match once the party changed after it (the matched ticket no longer listed in `tickets`, still the party’s `ticketId`)', async () => {
    let partyReads = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (url.pathname === '/v1/parties/me') {
          const first = partyReads++ === 0
          return jsonRes(200, {
            id: 'p1',
            leader: 'g_0',
            members: [],
            invites: [],
            createdAt: 0,
            ticketId: first ? null : 'squads:eu:t1',
            tickets: [],
          })
        }
        if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
          return matchedSquad()
        return jsonRes(200, {})
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads', { transport: 'http' })
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
  }, 15_000)

  it('a party member’s first socket finds, on the party, a ticket the leader made before it connected (here already matched)', async () => {
    let partyReads = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        // The wait's first read: no ticket yet. The leader queues just after it.
        if (url.pathname === '/v1/parties/me')
          return partyOf(partyReads++ === 0 ? null : 'squads:eu:t1')
        if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
          return matchedSquad()
        return jsonRes(200, {})
      }),
      // The socket opens; the pool has no waiting ticket of this player (the leader's ticket
      // matched before this socket connected), so it never sends anything.
      WebSocket: () => scriptedSocket((socket) => socket.open()),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads')
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(outcome).toMatchObject({ sessionId: 's1' })
  }, 15_000)

  it('a party member on a server from before `attach`, whose bare join to the party’s ticket comes after it ended and so makes a ticket of the player alone, cancels that one and gets the party’s match', async () => {
    let partyReads = 0
    let ticketReads = 0
    const sent: { type: string }[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (url.pathname === '/v1/parties/me')
          return partyOf(partyReads++ === 0 ? null : 'squads:eu:t1')
        if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
          // Waiting when the member looks; matched by the time it asks again.
          return ticketReads++ === 0 ? waitingSquad() : matchedSquad()
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            sent.push(frame as { type: string })
            if (frame.type === 'attach') {
              socket.receive({ type: 'error', code: 'unknown_type', message: 'Known types: …' })
            }
            // The party's ticket was matched just before this join: the pool made one of the
            // member alone.
            if (frame.type === 'join') {
              socket.receive({
                type: 'queued',
                ticketId: 'squads:eu:solo',
                existing: false,
                expiresAt: 0,
                region: 'eu',
              })
            }
            if (frame.type === 'cancel') {
              socket.receive({ type: 'cancelled', ticketId: 'squads:eu:solo', reason: 'cancelled' })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    // In the region the leader queues in: the member's socket attaches there by a bare join.
    const mine = client.matchmaking.waitForParty('squads', { region: 'eu' })
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(sent.map((f) => f.type)).toEqual(['attach', 'join', 'cancel'])
    expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
  }, 15_000)

  it('a party member attaches its socket to the party’s ticket by id, never by a join that could queue it alone: a ticket matched meanwhile is answered with the match', async () => {
    let partyReads = 0
    const sent: { type: string; ticketId?: string }[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (url.pathname === '/v1/parties/me')
          return partyOf(partyReads++ === 0 ? null : 'squads:eu:t1')
        if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
          return waitingSquad()
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            sent.push(frame as { type: string })
            // Matched between the member's read and its attach: the pool tells it so.
            if (frame.type === 'attach') {
              socket.receive({
                type: 'match_found',
                ticketId: 'squads:eu:t1',
                sessionId: 's1',
                token: 'session-token',
                players: [{ playerId: 'g_0', team: 0 }],
              })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads', { region: 'eu' })
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(sent).toEqual([{ type: 'attach', ticketId: 'squads:eu:t1' }])
    expect(outcome).toMatchObject({
      sessionId: 's1',
      ticketId: 'squads:eu:t1',
      token: 'session-token',
    })
  }, 15_000)

  it('a party member whose attach finds the party’s ticket swept (not_queued, its read 404) waits on for the leader’s next ticket', async () => {
    let partyReads = 0
    let oldReads = 0
    const sent: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (url.pathname === '/v1/parties/me') {
          partyReads++
          return partyOf(
            partyReads === 1 ? null : partyReads <= 3 ? 'squads:eu:old' : 'squads:eu:t1',
          )
        }
        const path = decodeURIComponent(url.pathname)
        if (path === '/v1/matchmaking/tickets/squads:eu:old') {
          // Waiting when the member first looks; swept by the time it asks again.
          if (oldReads++ === 0)
            return jsonRes(200, { ...waitingDuel, ticketId: 'squads:eu:old', queue: 'squads' })
          return jsonRes(404, {
            type: 'urn:nexus:problem:not-found',
            title: 'Not found',
            status: 404,
            detail: 'No such ticket',
          })
        }
        if (path === '/v1/matchmaking/tickets/squads:eu:t1') return matchedSquad()
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            sent.push(frame.type)
            if (frame.type === 'attach') {
              socket.receive({ type: 'error', code: 'not_queued', message: 'no such ticket' })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads', { region: 'eu' })
    const outcome = await within(mine.matched, 'the member’s match', 12_000).catch(
      (e: unknown) => e,
    )
    await mine.cancel().catch(() => {})
    expect(sent).toEqual(['attach'])
    expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
  }, 20_000)

  it('a party member whose attach finds the pool no longer holds the party’s ticket reads it for how it ended', async () => {
    let partyReads = 0
    let ticketReads = 0
    const sent: { type: string }[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (url.pathname === '/v1/parties/me')
          return partyOf(partyReads++ === 0 ? null : 'squads:eu:t1')
        if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
          return ticketReads++ === 0 ? waitingSquad() : matchedSquad()
        return jsonRes(200, {})
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            sent.push(frame as { type: string })
            if (frame.type === 'attach') {
              socket.receive({ type: 'error', code: 'not_queued', message: 'no such ticket' })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const mine = client.matchmaking.waitForParty('squads', { region: 'eu' })
    const outcome = await within(mine.matched, 'the member’s match', 8000).catch((e: unknown) => e)
    await mine.cancel().catch(() => {})
    expect(sent.map((f) => f.type)).toEqual(['attach'])
    expect(outcome).toMatchObject({ sessionId: 's1', ticketId: 'squads:eu:t1' })
  }, 15_000)
})

/** A session log record as the events route serves it. */
const record = (seq: number) => ({
  seq,
  input: { kind: 'action', player: 'g_1', tick: seq },
  event: { n: seq },
})

/** The events route's answer to `url` for a log of `live` records. */
function logPage(url: URL, live: number): Response {
  const from = Number(url.searchParams.get('from'))
  const limit = Number(url.searchParams.get('limit'))
  const to = Math.min(from + limit - 1, live)
  const events = Array.from({ length: to - from + 1 }, (_, i) => record(from + i))
  return jsonRes(200, { events, nextFrom: to < live ? to + 1 : null })
}

/**
 * A session's sockets for a log of `live` records: a resume from 1 (too far behind) is refused;
 * one from the log's end resumes, gets one live event and the end. `sinces` hears each resume.
 */
function resumingSocket(live: number, sinces: (string | null)[] = []) {
  return (url: string) =>
    scriptedSocket((socket) => {
      const since = new URL(url).searchParams.get('since')
      sinces.push(since)
      if (since === '1') return socket.fail()
      socket.open()
      setTimeout(() => {
        socket.receive({ type: 'resumed', since: Number(since), seq: live, refs: true })
        socket.receive({ type: 'event', seq: live + 1, event: { n: live + 1 } })
        socket.receive({ type: 'ended', seq: live + 1, result: { winner: null } })
      }, 5)
    })
}

describe('game connection act()', () => {
  it('after a drop, waits for every missed event: an action they hold is settled by them and not sent again, one they do not hold goes again with its ref; a refusal rejects its own act', async () => {
    const urls: URL[] = []
    const sockets: ScriptedSocket[] = []
    const sent: { socket: number; frame: Record<string, unknown> }[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: (url) => {
        urls.push(new URL(url))
        const n = urls.length - 1
        return scriptedSocket(
          (socket) => {
            socket.open()
            // As a server's first frame does, after the client has heard the open.
            setTimeout(() => {
              if (n === 0) {
                socket.receive({
                  type: 'welcome',
                  seq: 0,
                  state: {},
                  you: 'p',
                  status: 'live',
                  refs: true,
                })
              } else socket.receive({ type: 'resumed', since: 0, seq: 1, refs: true })
              sockets.push(socket)
            }, 1)
          },
          (frame) => {
            if (frame.type === 'action') sent.push({ socket: n, frame })
          },
        )
      },
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const applied = game.act({ action: 'a' })
    const lost = game.act({ action: 'b' })
    const refused = game.act({ action: 'c' })
    expect(sent.map((s) => s.frame.action)).toEqual(['a', 'b', 'c'])
    const [refA, refB, refC] = sent.map((s) => s.frame.ref as string)
    expect(new Set([refA, refB, refC]).size).toBe(3)
    sockets[0]!.drop()
    await until(() => sockets.length === 2)
    // The reconnect names the same connection, and resumes after the last event seen.
    expect(urls[1]!.searchParams.get('conn')).toBe(urls[0]!.searchParams.get('conn'))
    expect(urls[1]!.searchParams.get('since')).toBe('0')
    // `resumed` (handled before the socket is counted, above) says one event was missed: nothing
    // goes before it has arrived.
    expect(sent.filter((s) => s.socket === 1)).toEqual([])
    sockets[1]!.receive({ type: 'event', seq: 1, tick: 0, event: { did: 'a' }, ref: refA })
    expect(await applied).toEqual({ seq: 1, tick: 0, event: { did: 'a' } })
    await until(() => sent.length === 5)
    expect(sent.slice(3).map((s) => [s.socket, s.frame.action, s.frame.ref])).toEqual([
      [1, 'b', refB],
      [1, 'c', refC],
    ])
    sockets[1]!.receive({ type: 'error', code: 'not_your_turn', message: 'wait', ref: refC })
    const err = await refused.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionRefused)
    expect(err).toMatchObject({ code: 'not_your_turn' })
    sockets[1]!.receive({ type: 'event', seq: 2, tick: 0, event: { did: 'b' }, ref: refB })
    expect((await lost).seq).toBe(2)
    game.close()
    // Over: an act now rejects at once.
    await expect(game.act({ action: 'd' })).rejects.toBeInstanceOf(NexusNetworkError)
  })
})

describe('game connection act(): its edges', () => {
  /** A live game's first socket: welcomed (or resumed, given `since`), frames handed to `sent`. */
  function oneSocketClient(sent: Record<string, unknown>[], opts: { pong?: boolean } = {}) {
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      pingIntervalMs: 30,
      pingTimeoutMs: 30,
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket(
          (socket) => {
            sockets.push(socket)
            greet(socket, url)
          },
          (frame, socket) => {
            if (frame.type === 'ping' && opts.pong === false) {
              // Only the first socket's path is dead.
              if (socket !== sockets[0]) socket.receive({ type: 'pong' })
              return
            }
            if (frame.type === 'action') sent.push({ ...frame, socket: sockets.indexOf(socket) })
          },
          { pong: opts.pong ?? true },
        ),
    })
    return { client, sockets }
  }

  it('an action too large for the server is refused here, at once, and never sent: the server refuses such a frame unread, without its ref', async () => {
    const sent: Record<string, unknown>[] = []
    const { client } = oneSocketClient(sent)
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const err = await game.act({ data: 'é'.repeat(4100) }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionRefused)
    expect(err).toMatchObject({ code: 'too_large' })
    // Just under the bound it goes.
    void game.act({ data: 'x'.repeat(8000) }).catch(() => {})
    expect(sent).toHaveLength(1)
    // send() too: far larger, the session would close the socket and count the player gone.
    expect(() => game.send({ data: 'x'.repeat(70_000) })).toThrow(ActionRefused)
    expect(() => game.send({ data: 'é'.repeat(4100) })).toThrow(/limited to 8192 bytes/)
    game.send({ data: 'x'.repeat(8000) })
    expect(sent).toHaveLength(2)
    game.close()
  })

  it("send() keeps to 15 frames a second (burst 30), under the session's 20 a player that acts and pings share: past it an action is not sent and a `refused` event says rate_limited, so a game sending every animation frame is not closed as flooding", async () => {
    const sent: Record<string, unknown>[] = []
    const { client } = oneSocketClient(sent)
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const refused: { code: string }[] = []
    game.on('refused', (r) => refused.push(r))
    for (let i = 0; i < 100; i++) game.send({ action: 'move', i })
    // Its refusals come after the call, as the session's would (queued behind this await).
    expect(refused).toEqual([])
    await Promise.resolve()
    // The burst, and at most one more had the loop taken 66 ms.
    expect(sent.length).toBeGreaterThanOrEqual(30)
    expect(sent.length).toBeLessThanOrEqual(31)
    expect(refused).toHaveLength(100 - sent.length)
    expect(refused.every((r) => r.code === 'rate_limited')).toBe(true)
    // The ones sent are the first, in order.
    expect(sent.map((f) => f.i)).toEqual(Array.from({ length: sent.length }, (_, i) => i))
    game.close()
  })

  it('when the connection is closed, an act already sent rejects ActionOutcomeUnknown (it may have been applied), one never sent a plain network error; an act whose own event a listener closes the connection in resolves', async () => {
    const sent: Record<string, unknown>[] = []
    const { client, sockets } = oneSocketClient(sent)
    const game = client.sessions.connect('s1', 'tok')
    const early = game.act({ action: 'early' })
    await within(game.ready, 'the welcome', 2000)
    const closer = game.act({ action: 'closer' })
    game.on('event', () => game.close())
    sockets[0]!.receive({ type: 'event', seq: 1, tick: 0, event: {}, ref: sent[1]!.ref })
    expect((await closer).seq).toBe(1)
    // `early` was sent at the welcome, then the listener closed the connection.
    const err = await early.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActionOutcomeUnknown)
    expect(err).toBeInstanceOf(NexusNetworkError)

    const { client: second } = oneSocketClient([])
    const unsent = second.sessions.connect('s2', 'tok')
    const never = unsent.act({ action: 'never' })
    unsent.close()
    const plain = await never.catch((e: unknown) => e)
    expect(plain).toBeInstanceOf(NexusNetworkError)
    expect(plain).not.toBeInstanceOf(ActionOutcomeUnknown)
  })

  it('a socket given up on (its pings unanswered) is not heard again: a late refusal on it does not reject the act sent again on the next socket', async () => {
    const sent: Record<string, unknown>[] = []
    const { client, sockets } = oneSocketClient(sent, { pong: false })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const act = game.act({ action: 'a' })
    const ref = sent[0]!.ref
    await within(game.once('resumed'), 'the resume on a new socket', 3000)
    await until(() => sent.length === 2)
    expect(sent[1]).toMatchObject({ ref, socket: 1 })
    // The dead path delivers its stale answer late; the new socket then applies the resend.
    sockets[0]!.receive({ type: 'error', code: 'rate_limited', message: 'slow down', ref })
    sockets[1]!.receive({ type: 'event', seq: 1, tick: 0, event: { ok: true }, ref })
    expect(await act).toMatchObject({ seq: 1, event: { ok: true } })
    game.close()
  })

  it('a connection made with `since` (no welcome) settles its acts from the archived log when the session was archived meanwhile: applied, not `game_over`', async () => {
    const sent: Record<string, unknown>[] = []
    let refA: unknown = null
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname.endsWith('/events')) {
          return jsonRes(200, {
            events: [
              {
                seq: 1,
                input: { kind: 'action', player: 'p', tick: 5, ref: refA },
                event: { a: 1 },
              },
            ],
            nextFrom: null,
          })
        }
        return jsonRes(200, {
          status: 'finished',
          seq: null,
          result: { winner: 'p', reason: 'finished', placements: [] },
        })
      }) as typeof fetch,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            sockets.push(socket)
            // After the first socket, the session is archived: no socket opens again.
            if (sockets.length > 1) return socket.fail()
            socket.open()
            setTimeout(() => socket.receive({ type: 'resumed', since: 0, seq: 0, refs: true }), 1)
          },
          (frame) => {
            if (frame.type === 'action') sent.push(frame)
          },
        ),
    })
    const game = client.sessions.connect('s1', 'tok', { since: 0 })
    await within(game.ready, 'the resume', 2000)
    const act = game.act({ action: 'a' })
    refA = sent[0]!.ref
    sockets[0]!.drop()
    expect(await within(act, 'the act', 3000)).toEqual({ seq: 1, tick: 5, event: { a: 1 } })
    await within(game.ended, 'the end', 3000)
  })
})

/**
 * Opens a scripted game socket and greets it as a session would: `welcome` on a first connect,
 * `resumed` (nothing missed) on a reconnect with `since`.
 */
function greet(socket: ScriptedSocket, url: string): void {
  socket.open()
  const since = new URL(url).searchParams.get('since')
  setTimeout(
    () =>
      socket.receive(
        since === null
          ? { type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live', refs: true }
          : { type: 'resumed', since: Number(since), seq: Number(since), refs: true },
      ),
    1,
  )
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 5))
  expect(cond()).toBe(true)
}

describe('game connection on a device that sleeps', () => {
  afterEach(() => vi.restoreAllMocks())

  it("tick() counts the time the device slept (the monotonic clock stopped, the wall clock did not), and never falls behind an event's tick", async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(
            () =>
              socket.receive({
                type: 'welcome',
                seq: 0,
                state: {},
                you: 'p',
                status: 'live',
                tick: 100,
                tickRate: 10,
                elapsedMs: 10_000,
                running: true,
              }),
            1,
          )
          setTimeout(() => sockets.push(socket), 2)
        }),
    })
    const sockets: ScriptedSocket[] = []
    let mono = 1_000
    let wall = 1_700_000_000_000
    vi.spyOn(performance, 'now').mockImplementation(() => mono)
    vi.spyOn(Date, 'now').mockImplementation(() => wall)
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    expect(game.tick()).toBe(100)
    mono += 2_000
    wall += 2_000
    expect(game.tick()).toBe(120)
    // Locked for 40 s: the monotonic clock stood still. The page shown again counts it.
    wall += 40_000
    game.wake()
    expect(game.tick()).toBe(520)
    // A wall clock set forward while awake, with no wake, moves nothing.
    wall += 3_600_000
    expect(game.tick()).toBe(520)
    // An event of a later tick than the estimate: the clock is at least there.
    await until(() => sockets.length === 1)
    sockets[0]!.receive({ type: 'event', seq: 1, tick: 900, event: {} })
    expect(game.tick()).toBe(900)
    game.close()
  })

  it('once() holds nothing after it resolves: awaiting every event of a long game keeps no handler per event', async () => {
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(() => {
            socket.receive({
              type: 'welcome',
              seq: 0,
              state: {},
              you: 'p',
              status: 'live',
              refs: true,
            })
            sockets.push(socket)
          }, 1)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    for (let seq = 1; seq <= 200; seq++) {
      const next = game.once('event')
      sockets[0]!.receive({ type: 'event', seq, tick: seq, event: {} })
      expect((await next).seq).toBe(seq)
    }
    const waiting = (game as unknown as { onceWaiting: Set<unknown> }).onceWaiting
    expect(waiting.size).toBe(0)
    // One still waiting is told of the end.
    const pending = game.once('event')
    expect(waiting.size).toBe(1)
    game.close()
    await expect(pending).rejects.toBeInstanceOf(NexusNetworkError)
    expect(waiting.size).toBe(0)
  })

  it('once() asked after the connection is over rejects at once, rather than waiting for ever', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(() => {
            socket.receive({
              type: 'welcome',
              seq: 0,
              state: {},
              you: 'p',
              status: 'live',
              refs: true,
            })
            socket.receive({ type: 'ended', seq: 0, result: { winner: null, placements: [] } })
          }, 1)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ended, 'the end', 2000)
    await expect(within(game.once('event'), 'a late once', 1000)).rejects.toThrow(
      "the game ended before a 'event' event",
    )
  })

  it('a socket kept open through a sleep counts as one that worked: glancing at a locked phone again and again never gives the connection up', async () => {
    let mono = 1_000
    let wall = 1_700_000_000_000
    vi.spyOn(performance, 'now').mockImplementation(() => mono)
    vi.spyOn(Date, 'now').mockImplementation(() => wall)
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () => jsonRes(200, { status: 'live', seq: 0, result: null })) as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket((socket) => {
          sockets.push(socket)
          greet(socket, url)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    for (let glance = 1; glance <= 4; glance++) {
      // Locked a minute with the socket up (the monotonic clock stopped), then it drops.
      wall += 60_000
      mono += 100
      const resumed = game.once('resumed')
      sockets[glance - 1]!.drop()
      await within(resumed, `the resume after glance ${glance}`, 2000)
    }
    expect(sockets).toHaveLength(5)
    game.close()
  })

  it('the reconnect budget counts time spent trying, not asleep: a phone locked for ten minutes with its socket gone still reconnects after, and gets its game back', async () => {
    const mono = 1_000
    let wall = 1_700_000_000_000
    vi.spyOn(performance, 'now').mockImplementation(() => mono)
    vi.spyOn(Date, 'now').mockImplementation(() => wall)
    let networkUp = true
    const opened: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      reconnectForMs: 60_000,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      // The plain read behind a failed upgrade fails too while the network is away.
      fetch: (async () => {
        if (!networkUp) throw new TypeError('fetch failed')
        return jsonRes(200, { status: 'live', seq: 0, result: null })
      }) as unknown as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket((socket) => {
          if (!networkUp) return socket.fail()
          opened.push(new URL(url).searchParams.get('since') ?? 'none')
          socket.open()
          setTimeout(
            () =>
              socket.receive(
                opened.length === 1
                  ? { type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live', refs: true }
                  : { type: 'resumed', since: 0, seq: 0, refs: true },
              ),
            1,
          )
          if (opened.length === 1) setTimeout(() => socket.drop(), 5)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    networkUp = false
    // The drop, a few failed attempts, then the phone locked for ten minutes.
    await within(game.once('reconnecting'), 'the first reconnect', 2000)
    await within(game.once('reconnecting'), 'a second reconnect', 2000)
    wall += 10 * 60_000
    await within(game.once('reconnecting'), 'a reconnect after the lock', 2000)
    networkUp = true
    await within(game.once('resumed'), 'the resume', 2000)
    expect(opened).toEqual(['none', '0'])
    game.close()
  })
})

describe('wake(): the app back in the foreground, the network back', () => {
  afterEach(() => vi.unstubAllGlobals())

  /** A page's event targets, as a browser has them: listeners by type, and a way to fire one. */
  function fakePage() {
    const listeners = new Map<string, Set<() => void>>()
    const target = {
      addEventListener: (type: string, l: () => void) => {
        if (!listeners.has(type)) listeners.set(type, new Set())
        listeners.get(type)!.add(l)
      },
      removeEventListener: (type: string, l: () => void) => listeners.get(type)?.delete(l),
    }
    const document = { ...target, visibilityState: 'visible' }
    vi.stubGlobal('document', document)
    vi.stubGlobal('addEventListener', target.addEventListener)
    vi.stubGlobal('removeEventListener', target.removeEventListener)
    return {
      fire: (type: string) => [...(listeners.get(type) ?? [])].forEach((l) => l()),
      count: () => [...listeners.values()].reduce((n, set) => n + set.size, 0),
    }
  }

  /**
   * A client whose game sockets, pinged every 60 s with a 30 s timeout, answer pings and each act
   * (an event naming its ref), but for the frames `silent` takes: a path dead without a close.
   */
  function answeringClient(
    silent: (
      socket: ScriptedSocket,
      frame: { type: string; [k: string]: unknown },
      sockets: ScriptedSocket[],
    ) => boolean,
  ) {
    const sockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      pingIntervalMs: 60_000,
      pingTimeoutMs: 30_000,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket(
          (socket) => {
            sockets.push(socket)
            greet(socket, url)
          },
          (frame, socket) => {
            if (silent(socket, frame, sockets)) return
            if (frame.type === 'ping') socket.receive({ type: 'pong' })
            if (frame.type === 'action') {
              socket.receive({
                type: 'event',
                seq: 1,
                tick: 0,
                event: { did: frame.action },
                ref: frame.ref,
              })
            }
          },
          { pong: false },
        ),
    })
    return { client, sockets }
  }

  it("a socket that died while the device slept is found out at once, not at its next ping's timeout: pinged, unanswered within 3 s, replaced", async () => {
    // The first socket's path is dead after its first ping: nothing answers.
    const { client, sockets } = answeringClient((socket, _frame, all) => socket === all[0])
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const startedAt = Date.now()
    game.wake()
    await within(game.once('resumed'), 'the resume', 15_000)
    // Well before the 60 s interval and 30 s timeout would have noticed (3 s, and room for a
    // loaded machine).
    expect(Date.now() - startedAt).toBeLessThan(9_000)
    expect(sockets[0]!.closedWith()).toEqual({ code: 4000, reason: 'keepalive timeout' })
    game.close()
  }, 20_000)

  it("an act into a socket that died without a close (a phone gone from Wi-Fi to cellular, no online event) checks the connection once unanswered for 3 s, and goes again on a new socket, not at the next ping's timeout", async () => {
    // The first socket's path died after its welcome: nothing it sends is answered.
    const { client, sockets } = answeringClient((socket, _frame, all) => socket === all[0])
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const startedAt = Date.now()
    const outcome = await within(game.act({ action: 'roll' }), 'the act answered', 20_000)
    expect(outcome.event).toEqual({ did: 'roll' })
    // 3 s unanswered, then 3 s for the ping: well before the 60 s interval and 30 s timeout.
    expect(Date.now() - startedAt).toBeLessThan(14_000)
    expect(sockets[0]!.closedWith()).toEqual({ code: 4000, reason: 'keepalive timeout' })
    game.close()
  }, 30_000)

  it('an act sent again on a new socket after a drop is watched on that socket: one that dies without a close is found out 3 s on, not at its ping timeout', async () => {
    // The first socket drops as the act goes; the second dies without a close after its welcome
    // (nothing answered); the third works.
    const { client, sockets } = answeringClient((socket, frame, all) => {
      if (socket === all[0] && frame.type === 'action') setTimeout(() => socket.drop(), 10)
      return socket === all[0] || socket === all[1]
    })
    const game = client.sessions.connect('s1', 'tok')
    await within(game.ready, 'the welcome', 2000)
    const startedAt = Date.now()
    const outcome = await within(game.act({ action: 'roll' }), 'the act answered', 20_000)
    expect(outcome.event).toEqual({ did: 'roll' })
    expect(sockets).toHaveLength(3)
    expect(Date.now() - startedAt).toBeLessThan(14_000)
    game.close()
  }, 30_000)

  it("a page shown again or back online cuts a reconnect's pause short; the connection stops listening once over", async () => {
    const page = fakePage()
    let networkUp = false
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 100,
      reconnectForMs: 3_600_000,
      // Pauses of a minute: only a wake makes the next try come sooner.
      retry: { baseDelayMs: 60_000, maxDelayMs: 60_000 },
      // The read behind a refused upgrade: the session is there, the socket did not open.
      fetch: (async () => jsonRes(200, { status: 'live', seq: 0, result: null })) as typeof fetch,
      WebSocket: (url) =>
        scriptedSocket((socket) => {
          if (!networkUp) return socket.fail()
          greet(socket, url)
        }),
    })
    const listenersBefore = page.count()
    const game = client.sessions.connect('s1', 'tok')
    await within(game.once('reconnecting'), 'the first pause', 2000)
    expect(page.count()).toBe(listenersBefore + 3)
    networkUp = true
    page.fire('online')
    await within(game.ready, 'the welcome after the wake', 2000)
    game.close()
    expect(page.count()).toBe(listenersBefore)
  })

  it('devices woken by the same network coming back reconnect spread over half a second, not all at the same moment', async () => {
    const page = fakePage()
    let networkUp = false
    const reconnectedAt: number[] = []
    const games = Array.from({ length: 20 }, () =>
      createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 100,
        reconnectForMs: 3_600_000,
        retry: { baseDelayMs: 60_000, maxDelayMs: 60_000 },
        fetch: (async () => jsonRes(200, { status: 'live', seq: 0, result: null })) as typeof fetch,
        WebSocket: (url) =>
          scriptedSocket((socket) => {
            if (!networkUp) return socket.fail()
            reconnectedAt.push(Date.now())
            greet(socket, url)
          }),
      }).sessions.connect('s1', 'tok'),
    )
    await Promise.all(games.map((g) => within(g.once('reconnecting'), 'a pause', 2000)))
    networkUp = true
    const wokeAt = Date.now()
    page.fire('online')
    await Promise.all(games.map((g) => within(g.ready, 'the welcome after the wake', 10_000)))
    for (const g of games) g.close()
    expect(reconnectedAt).toHaveLength(20)
    // Within the spread of the wake (and well short of the minute's pause)...
    expect(Math.max(...reconnectedAt) - wokeAt).toBeLessThan(10_000)
    // ...and not all together: twenty draws over 500 ms (not spread over seconds either).
    expect(Math.max(...reconnectedAt) - Math.min(...reconnectedAt)).toBeGreaterThan(100)
    expect(Math.max(...reconnectedAt) - Math.min(...reconnectedAt)).toBeLessThan(3_000)
  }, 20_000)

  it('a wake does not cut short the wait the server asked for (Retry-After): only the backoff beyond it', async () => {
    fakePage()
    const attempts: number[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 100,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      // The read behind a refused upgrade: the server is busy, come back in a second.
      fetch: (async () =>
        new Response(
          JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'Busy', status: 503 }),
          {
            status: 503,
            headers: { 'content-type': 'application/problem+json', 'retry-after': '1' },
          },
        )) as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          attempts.push(Date.now())
          socket.fail()
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    const paused = await within(game.once('reconnecting'), 'the pause', 2000)
    expect(paused.delayMs).toBeGreaterThanOrEqual(1000)
    const wokeAt = Date.now()
    game.wake()
    await until(() => attempts.length >= 2)
    expect(attempts[1]! - wokeAt).toBeGreaterThanOrEqual(900)
    game.close()
  })

  it('a matchmaking wait wakes too: its pause is cut short when the page is shown again', async () => {
    const page = fakePage()
    let socketsUp = false
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 100,
      reconnectForMs: 3_600_000,
      retry: { baseDelayMs: 60_000, maxDelayMs: 60_000 },
      fetch: guestFetch(() => jsonRes(200, { regions: ['eu'] })),
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            if (!socketsUp) return socket.fail()
            socket.open()
            setTimeout(() => socket.receive({ type: 'queued', ticketId: 't1' }), 1)
          },
          (frame, socket) => {
            if (frame.type === 'cancel') {
              socket.receive({ type: 'cancelled', ticketId: 't1', reason: 'cancelled' })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const ticket = client.matchmaking.join('duel')
    await within(ticket.once('reconnecting'), 'the first pause', 2000)
    socketsUp = true
    page.fire('visibilitychange')
    expect((await within(ticket.once('queued'), 'queued after the wake', 2000)).ticketId).toBe('t1')
    await within(ticket.cancel(), 'the cancel', 2000)
  })
})

describe('game connection resume', () => {
  it('a `since` past the session’s seq rejects with validation 422 naming since, not a network error', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      // The server refuses the upgrade (422); the plain read behind it shows the session's seq.
      fetch: (async () => jsonRes(200, { status: 'live', seq: 3, result: null })) as typeof fetch,
      WebSocket: () => scriptedSocket((socket) => socket.fail()),
    })
    const game = client.sessions.connect('s1', 'tok', { since: 999 })
    const err = await within(game.ended, 'the refusal', 2000).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect(err).toMatchObject({ problem: 'validation', status: 422 })
    expect((err as NexusProblem).errors.map((e) => e.path)).toEqual(['since'])
  })

  it('a connection further behind than one resume sends reads the missed events from the log, then resumes from the last one read', async () => {
    const live = 1 + MAX_RESUME_EVENTS + 3
    const sinces: (string | null)[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/sessions/s1') {
          return jsonRes(200, { status: 'live', seq: live, result: null })
        }
        return logPage(url, live)
      }) as typeof fetch,
      // The server refuses a resume from 1 (too far behind); from the log's end it resumes.
      WebSocket: resumingSocket(live, sinces),
    })
    const game = client.sessions.connect('s1', 'tok', { since: 1 })
    const seen: number[] = []
    game.on('event', ({ seq }) => seen.push(seq))
    await within(game.ended, 'the end', 5000)
    expect(seen).toEqual(Array.from({ length: live }, (_, i) => i + 2))
    expect(sinces).toEqual(['1', String(live)])
  })

  it('a read of the missed events that fails while the network is away is tried again, not the end of the connection', async () => {
    const live = 1 + MAX_RESUME_EVENTS + 3
    let eventReadsFailing = 5
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 3,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/sessions/s1') {
          return jsonRes(200, { status: 'live', seq: live, result: null })
        }
        // The network drops while the log is read: more failures than one request's retries.
        if (eventReadsFailing-- > 0) throw new TypeError('fetch failed')
        return logPage(url, live)
      }) as typeof fetch,
      WebSocket: resumingSocket(live),
    })
    const game = client.sessions.connect('s1', 'tok', { since: 1 })
    const seen: number[] = []
    game.on('event', ({ seq }) => seen.push(seq))
    await within(game.ended, 'the end', 5000)
    expect(eventReadsFailing).toBeLessThan(0)
    // Every missed event once, in order, then the live one.
    expect(seen).toEqual(Array.from({ length: live }, (_, i) => i + 2))
  })

  it('a reconnect that finds the session archived gets the events it missed from the log, then the end', async () => {
    const result = { winner: 'g_1', reason: 'finished', ranking: ['g_1', 'g_2'] }
    const eventReads: string[] = []
    let sockets = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      maxReconnects: 1,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/sessions/s1') {
          return jsonRes(200, { status: 'finished', seq: null, result })
        }
        // The archive, a page at a time: 3–4, then 5.
        eventReads.push(url.search)
        const from = Number(url.searchParams.get('from'))
        if (from === 3) return jsonRes(200, { events: [record(3), record(4)], nextFrom: 5 })
        return jsonRes(200, { events: [record(5)], nextFrom: null })
      }) as typeof fetch,
      // The first socket has events 1 and 2, then drops; the session is archived meanwhile.
      WebSocket: () =>
        scriptedSocket((socket) => {
          if (sockets++ > 0) return socket.fail()
          socket.open()
          setTimeout(() => {
            socket.receive({
              type: 'welcome',
              seq: 0,
              state: {},
              you: 'g_1',
              status: 'live',
              refs: true,
            })
            for (const seq of [1, 2]) socket.receive({ type: 'event', seq, event: { n: seq } })
            socket.drop()
          }, 5)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    const seen: number[] = []
    game.on('event', ({ seq }) => seen.push(seq))
    let endedAt: number | null = null
    game.on('ended', ({ seq }) => (endedAt = seq))
    expect(await within(game.ended, 'the end', 5000)).toEqual(result)
    expect(seen).toEqual([1, 2, 3, 4, 5])
    expect(endedAt).toBe(5)
    expect(eventReads.map((q) => new URLSearchParams(q).get('from'))).toEqual(['3', '5'])
  })
})

describe('documented examples', () => {
  it('the game-session examples await `ready` before `send`, which then reaches the server', async () => {
    // send() throws until the socket is open: every example that sends must wait for it.
    const guide = readFileSync(new URL('../../docs/getting-started.md', import.meta.url), 'utf8')
    const sdk = readFileSync(new URL('../../client/src/sessions.ts', import.meta.url), 'utf8')
    const readme = readFileSync(new URL('../../client/README.md', import.meta.url), 'utf8')
    for (const text of [guide, sdk, readme]) {
      for (const example of text.split('sessions.connect(').slice(1)) {
        const send = example.indexOf('game.send(')
        if (send === -1 || send > example.indexOf('```')) continue
        expect(example.slice(0, send)).toContain('await game.ready')
      }
    }
    const sent: unknown[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, {})) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            socket.open()
            setTimeout(
              () =>
                socket.receive({
                  type: 'welcome',
                  seq: 0,
                  state: {},
                  you: 'p',
                  status: 'live',
                  refs: true,
                }),
              1,
            )
          },
          // Its acknowledgements of what it read are the SDK's own.
          (frame) => frame.type !== 'ack' && sent.push(frame),
        ),
    })
    const game = client.sessions.connect('s1', 'tok')
    await game.ready
    game.send({ action: 'roll' })
    game.close()
    expect(sent).toEqual([{ action: 'roll', type: 'action' }])
  })
})

describe('cancel during an HTTP join', () => {
  it('cancel() while the HTTP join is on its way keeps the match the join’s answer brings', async () => {
    const matchedView = (extra: Record<string, unknown> = {}) =>
      ticketView('matched', {
        match: { sessionId: 's1', token: 'session-tok', players: [] },
        ...extra,
      })
    // The join is answered matched at once, or waiting and matched before its DELETE lands; a
    // second cancel (a double tap) while that DELETE is on its way changes nothing.
    for (const [joinAnswer, cancels] of [
      ['matched', 1],
      ['waiting', 1],
      ['waiting', 2],
    ] as const) {
      let answerJoin!: () => void
      const joinAnswered = new Promise<void>((resolve) => (answerJoin = resolve))
      let joinArrived!: () => void
      const joinSent = new Promise<void>((resolve) => (joinArrived = resolve))
      let answerDelete!: () => void
      const deleteAnswered = new Promise<void>((resolve) => (answerDelete = resolve))
      let deleteArrived!: () => void
      const deleteSent = new Promise<void>((resolve) => (deleteArrived = resolve))
      if (cancels === 1) answerDelete()
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch(async (url, init) => {
          if (init?.method === 'POST') {
            joinArrived()
            await joinAnswered
            return joinAnswer === 'matched'
              ? matchedView({ existing: false })
              : ticketView('waiting', { existing: false })
          }
          if (init?.method === 'DELETE') {
            deleteArrived()
            await deleteAnswered
            return jsonRes(409, {
              type: 'urn:nexus:problem:conflict',
              title: 'Conflict',
              status: 409,
              ticketStatus: 'matched',
            })
          }
          return matchedView()
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'http' })
      const events: string[] = []
      t.on('match', () => events.push('match'))
      t.on('ended', ({ outcome }) => events.push(outcome))
      await joinSent
      await t.cancel()
      answerJoin()
      if (cancels === 2) {
        await deleteSent
        await t.cancel()
        answerDelete()
      }
      const outcome = await within(t.matched, 'matched', 2000).catch((e: unknown) => e)
      const label = `join answered ${joinAnswer}, ${cancels} cancel(s)`
      expect(outcome, label).toMatchObject({ sessionId: 's1' })
      expect(events, label).toEqual(['match'])
    }
  })
})

describe('socket keepalive', () => {
  it('a game socket that stops answering pings is closed (4000) and the game resumes on a new socket', async () => {
    const sockets: ScriptedSocket[] = []
    let pongsOnFirst = 0
    let pongsOnSecond = 0
    let steady!: () => void
    const answeringPings = new Promise<void>((resolve) => (steady = resolve))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, { status: 'live', seq: 0, result: null })) as typeof fetch,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      pingIntervalMs: 20,
      pingTimeoutMs: 40,
      WebSocket: (url) =>
        scriptedSocket(
          (socket) => {
            sockets.push(socket)
            socket.open()
            const since = new URL(url).searchParams.get('since')
            setTimeout(
              () =>
                socket.receive(
                  since === null
                    ? { type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live', refs: true }
                    : { type: 'resumed', since: Number(since), seq: 0, refs: true },
                ),
              1,
            )
          },
          (frame, socket) => {
            if (frame.type !== 'ping') return
            // The first socket's path dies after two pongs, without a close (a network switch).
            if (socket === sockets[0]) {
              if (++pongsOnFirst <= 2) socket.receive({ type: 'pong' })
              return
            }
            socket.receive({ type: 'pong' })
            if (++pongsOnSecond === 5) steady()
          },
          { pong: false },
        ),
    })
    const game = client.sessions.connect('s1', 'tok')
    const resumed = game.once('resumed')
    await within(game.ready, 'welcome', 2000)
    await within(resumed, 'the resume on a new socket', 3000)
    expect(sockets[0]!.closedWith()).toEqual({ code: 4000, reason: 'keepalive timeout' })
    // A socket that answers its pings stays.
    await within(answeringPings, 'five pings answered', 3000)
    expect(sockets).toHaveLength(2)
    expect(game.connected).toBe(true)
    game.close()
  })

  it('a matchmaking socket pings as soon as it opens, not an interval later: the pool judges a socket by its silence only once it has pinged', async () => {
    const sent: string[] = []
    let opened!: () => void
    const open = new Promise<void>((r) => (opened = r))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      pingIntervalMs: 60_000,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            socket.open()
            opened()
          },
          (frame, socket) => {
            sent.push(frame.type)
            if (frame.type === 'join') socket.receive(queuedFrame())
            if (frame.type === 'cancel') {
              socket.receive({ type: 'cancelled', ticketId: 'duel:eu:t1', reason: 'cancelled' })
            }
          },
          { pong: false },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    await within(open, 'the socket open', 2000)
    // Sent on open, 60 s before the first interval ends.
    expect(sent).toContain('ping')
    await t.cancel().catch(() => {})
  })

  it('a matchmaking socket that stops answering pings is closed (4000) and its ticket re-attached on a new socket', async () => {
    const sockets: ScriptedSocket[] = []
    const pings: number[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      pingIntervalMs: 20,
      pingTimeoutMs: 40,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            sockets.push(socket)
            socket.open()
            // The pool re-attaches the waiting ticket to the new socket, which then matches.
            if (sockets.length > 1) setTimeout(() => queueAndMatch(socket, true), 1)
          },
          (frame, socket) => {
            if (frame.type === 'ping') pings.push(sockets.indexOf(socket))
            // The first socket queues the ticket, then hears nothing more.
            if (frame.type === 'join') socket.receive(queuedFrame())
          },
          { pong: false },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    const outcome = await within(t.matched, 'matched', 3000).catch((e: unknown) => e)
    expect(outcome).toMatchObject({ sessionId: 's1' })
    expect(pings[0]).toBe(0)
    expect(sockets[0]!.closedWith()).toEqual({ code: 4000, reason: 'keepalive timeout' })
    expect(sockets).toHaveLength(2)
  })
})

describe('waits that ride out network loss', () => {
  it('a party member’s socket check of the party rides out a network loss', async () => {
    vi.useFakeTimers()
    try {
      let partyReads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url) => {
          if (url.pathname === '/v1/parties/me') {
            // The wait's first read: no ticket yet. The leader queues (and matches) while the
            // network is away for the check's first two reads, every retry included.
            partyReads++
            if (partyReads === 1) return partyOf(null)
            if (partyReads <= 9) throw new TypeError('fetch failed (offline)')
            return partyOf('squads:eu:t1')
          }
          if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
            return matchedSquad()
          return jsonRes(200, {})
        }),
        // The pool has no waiting ticket of this player: the socket never hears anything.
        WebSocket: () => scriptedSocket((socket) => socket.open()),
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads')
      let outcome: unknown = null
      mine.matched.then(
        (m) => (outcome = m),
        (e: unknown) => (outcome = e),
      )
      await vi.advanceTimersByTimeAsync(15_000)
      expect(outcome).toMatchObject({ sessionId: 's1' })
      expect(partyReads).toBe(10)
    } finally {
      vi.useRealTimers()
    }
  })

  it("a socket join refused rate_limited fails with the wait the pool gave (retryAfter), as an HTTP join's 429 does", async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            if (frame.type === 'join') {
              socket.receive({
                type: 'error',
                code: 'rate_limited',
                message: 'At most 30 joins a minute',
                retryAfter: 7,
              })
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const err = await client.matchmaking.join('duel').matched.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect(err).toMatchObject({ problem: 'rate-limited', status: 429, retryAfter: 7 })
  })

  it("a join too large for a pool's frame (the schema takes it, a socket cannot) goes over HTTP on auto, no socket opened; with sockets asked for, it fails at once (bad-request, too_large), never sent: far larger, the pool would close the socket and every reconnect send it again", async () => {
    const frames: Record<string, unknown>[] = []
    const posted: string[] = []
    let opened = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch((url, init) => {
        if (init?.method === 'POST') posted.push(url.pathname)
        if (init?.method === 'DELETE') return ticketView('cancelled', { reason: 'cancelled' })
        // The HTTP join's answer, and its reads: a ticket waiting.
        return ticketView('waiting', { existing: false })
      }),
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            opened++
            socket.open()
          },
          (frame) => frames.push(frame),
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    // Sixteen attributes of 128 non-ASCII characters: 6 KiB, within the schema.
    const attributes = Object.fromEntries(
      Array.from({ length: 16 }, (_, i) => [`k${i}`, 'é'.repeat(128)]),
    )
    const auto = client.matchmaking.join('duel', { attributes })
    await within(auto.once('queued'), 'queued over HTTP', 2000)
    expect(auto.transport).toBe('http')
    expect(posted).toEqual(['/v1/matchmaking/duel/tickets'])
    expect(opened).toBe(0)
    await auto.cancel().catch(() => {})

    const sockets = client.matchmaking.join('duel', { attributes, transport: 'websocket' })
    const err = await sockets.matched.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect(err).toMatchObject({ status: 400, title: 'too_large' })
    expect(frames.filter((f) => f.type === 'join')).toEqual([])
    expect(opened).toBe(1)
  })

  it('a reconnected socket the pool did not re-attach sends the join again with its key (it finds the ticket, or its match), not a bare join that could make another ticket', async () => {
    vi.useFakeTimers()
    try {
      const joins: Record<string, unknown>[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch((url) =>
          url.pathname.startsWith('/v1/matchmaking/tickets/')
            ? ticketView('waiting')
            : jsonRes(200, {}),
        ),
        WebSocket: firstSocketDrops((frame, socket) => {
          joins.push(frame)
          // Only the first socket's join is answered; the second stays unattached.
          if (joins.length === 1) socket.receive(queuedFrame())
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { attributes: { mode: 'ranked' } })
      await vi.advanceTimersByTimeAsync(10_000)
      expect(joins).toHaveLength(2)
      expect(joins[0]!.joinKey).toEqual(expect.any(String))
      expect(joins[1]).toEqual(joins[0])
      const cancelled = t.cancel().catch(() => {})
      await vi.advanceTimersByTimeAsync(10_000)
      await cancelled
    } finally {
      vi.useRealTimers()
    }
  })

  it('a keyed join again the server cannot answer for now (`unavailable`) keeps the ticket: a new socket takes it back, nothing is deleted', async () => {
    vi.useFakeTimers()
    try {
      const joins: Record<string, unknown>[] = []
      const deleted: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch((url, init) => {
          if (init?.method === 'DELETE') deleted.push(url.pathname)
          return url.pathname.startsWith('/v1/matchmaking/tickets/')
            ? ticketView('waiting')
            : jsonRes(200, {})
        }),
        WebSocket: firstSocketDrops((frame, socket) => {
          joins.push(frame)
          // The first join makes the ticket; the second (a socket not re-attached) is answered
          // `unavailable`; the third finds the ticket again.
          if (joins.length === 2) {
            socket.receive({ type: 'error', code: 'unavailable', message: 'try again' })
          } else socket.receive(queuedFrame())
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel')
      const outcome = t.matched.then(
        () => 'matched',
        (err: unknown) => err,
      )
      await vi.advanceTimersByTimeAsync(30_000)
      expect(joins.length).toBeGreaterThanOrEqual(3)
      expect(deleted).toEqual([])
      const cancelled = t.cancel().catch(() => {})
      await vi.advanceTimersByTimeAsync(10_000)
      await cancelled
      expect(await outcome).toMatchObject({ outcome: 'cancelled' })
    } finally {
      vi.useRealTimers()
    }
  })

  it('a reconnected socket’s ticket read rides out a network loss until the ticket would have expired', async () => {
    for (const networkComesBack of [true, false]) {
      vi.useFakeTimers()
      try {
        let reads = 0
        const client = createClient({
          baseUrl: 'http://nexus.test',
          fetch: guestFetch((url) => {
            if (url.pathname.startsWith('/v1/matchmaking/tickets/')) {
              // The ticket matched while the socket was away; reading it fails for a while.
              if (++reads <= 8 || !networkComesBack) throw new TypeError('fetch failed (offline)')
              return ticketView('matched', {
                match: { sessionId: 's1', token: 'session-tok', players: [] },
              })
            }
            return jsonRes(200, {})
          }),
          WebSocket: firstSocketDrops((_frame, socket) => socket.receive(queuedFrame())),
        })
        await client.auth.guest('device-abcdef-123456')
        const t = client.matchmaking.join('duel')
        let outcome: unknown = null
        t.matched.then(
          (m) => (outcome = m),
          (e: unknown) => (outcome = e),
        )
        if (networkComesBack) {
          await vi.advanceTimersByTimeAsync(15_000)
          expect(outcome).toMatchObject({ sessionId: 's1' })
        } else {
          await vi.advanceTimersByTimeAsync(50_000)
          expect(outcome, 'still waiting 50 s in').toBeNull()
          await vi.advanceTimersByTimeAsync(20_000)
          expect(outcome).toBeInstanceOf(NexusNetworkError)
        }
        await t.cancel().catch(() => {})
      } finally {
        vi.useRealTimers()
      }
    }
  })

  /**
   * A party member waiting over HTTP, 30 s of (fake) time in: `party(n)` answers the n-th read of
   * the party (throwing for a network loss), `ticket(n)` the n-th read of the leader's ticket.
   */
  async function memberWaitOverHttp(
    party: (read: number) => Response,
    ticket: (read: number) => Response,
  ): Promise<{ outcome: unknown; partyReads: number }> {
    vi.useFakeTimers()
    try {
      let partyReads = 0
      let ticketReads = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url) => {
          if (url.pathname === '/v1/parties/me') return party(++partyReads)
          if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
            return ticket(++ticketReads)
          return jsonRes(200, {})
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads', { transport: 'http' })
      let outcome: unknown = null
      mine.matched.then(
        (m) => (outcome = m),
        (e: unknown) => (outcome = e),
      )
      await vi.advanceTimersByTimeAsync(30_000)
      return { outcome, partyReads }
    } finally {
      vi.useRealTimers()
    }
  }

  const offline = (): never => {
    throw new TypeError('fetch failed (offline)')
  }

  it('a party member polling over HTTP rides out a network loss', async () => {
    // Two reads without a ticket, then three reads' worth of failures, then the ticket.
    const { outcome, partyReads } = await memberWaitOverHttp(
      (n) => (n <= 2 ? partyOf(null) : n <= 14 ? offline() : partyOf('squads:eu:t1')),
      () => matchedSquad(),
    )
    expect(outcome).toMatchObject({ sessionId: 's1' })
    expect(partyReads).toBe(15)
  })

  it("a party member's very first read of the party rides out a network loss too", async () => {
    // The wait's first read and all its retries fail; then the leader's ticket is there, waiting,
    // then matched.
    const { outcome, partyReads } = await memberWaitOverHttp(
      (n) => (n <= 8 ? offline() : partyOf('squads:eu:t1')),
      (n) => (n === 1 ? waitingSquad() : matchedSquad()),
    )
    expect(outcome).toMatchObject({ sessionId: 's1' })
    expect(partyReads).toBe(9)
  })
})

describe('HTTP answers', () => {
  it('a success whose body is cut off is a network failure, retried; a 2xx that is not JSON is an unexpected answer', async () => {
    for (const mode of ['cut once', 'cut always', 'captive portal'] as const) {
      const keys: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((_url, init) => {
          keys.push((init?.headers as Record<string, string>)['idempotency-key']!)
          if (mode === 'captive portal')
            return new Response('<html>Sign in to Hotel WiFi</html>', {
              status: 200,
              headers: { 'content-type': 'text/html' },
            })
          if (mode === 'cut always' || keys.length === 1) {
            const body = new ReadableStream({
              start(c) {
                c.enqueue(new TextEncoder().encode('{"cycle":3,"sco'))
                c.error(new TypeError('terminated'))
              },
            })
            return new Response(body, { headers: { 'content-type': 'application/json' } })
          }
          return jsonRes(200, { cycle: 3, score: 5, best: 5, rank: 1, replayed: true })
        }),
      })
      await client.auth.guest('device-abcdef-123456')
      const outcome = await client.leaderboards
        .submit('daily', { score: 5 })
        .catch((e: unknown) => e)
      if (mode === 'cut once') {
        expect(outcome).toMatchObject({ replayed: true })
        expect(keys).toHaveLength(2)
        expect(keys[1]).toBe(keys[0])
      } else if (mode === 'cut always') {
        expect(outcome).toBeInstanceOf(NexusNetworkError)
        expect(keys).toHaveLength(4)
      } else {
        expect(outcome).toBeInstanceOf(NexusProblem)
        expect(outcome).toMatchObject({ status: 200, type: 'about:blank' })
        expect(keys).toHaveLength(1)
      }
    }
  })

  it('a request told to come back in 2 s (503, Retry-After) comes back between 2 and 3 s, drawn per client: every client answered in the same second does not return in the same instant', async () => {
    vi.useFakeTimers()
    const draws = [0, 0.8]
    const random = vi.spyOn(Math, 'random').mockImplementation(() => draws.shift() ?? 0.5)
    try {
      const sentAt: number[][] = [[], []]
      const clients = [0, 1].map((i) =>
        createClient({
          baseUrl: 'http://nexus.test',
          fetch: guestFetch(() => {
            sentAt[i]!.push(Date.now())
            if (sentAt[i]!.length === 1) {
              return new Response(
                JSON.stringify({ type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 }),
                {
                  status: 503,
                  headers: { 'content-type': 'application/problem+json', 'retry-after': '2' },
                },
              )
            }
            return jsonRes(200, { cycle: 1, score: 1, best: 1, rank: 1, replayed: false })
          }),
        }),
      )
      for (const c of clients) await c.auth.guest('device-abcdef-123456')
      const done = clients.map((c) => c.leaderboards.submit('daily', { score: 1 }))
      await vi.advanceTimersByTimeAsync(3_100)
      await Promise.all(done)
      const waits = sentAt.map(([first, second]) => second! - first!)
      // Drawn 0: the pause asked for, no sooner; drawn 0.8: 40% of it later.
      expect(waits).toEqual([2_000, 2_800])
    } finally {
      random.mockRestore()
      vi.useRealTimers()
    }
  })

  it("a page's cursor goes back as it came (null on the last page sends none), as the guide writes it", async () => {
    const urls: URL[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch((url) => {
        urls.push(url)
        return jsonRes(200, { entries: [], nextCursor: urls.length === 1 ? 'c2' : null })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const first = await client.sessions.history()
    const second = await client.sessions.history({ cursor: first.nextCursor })
    await client.sessions.history({ cursor: second.nextCursor })
    expect(urls.map((u) => u.searchParams.get('cursor'))).toEqual([null, 'c2', null])
  })

  it('a submit that gives up throws with its idempotency key: sent again later with it, a submission that was applied is counted once on an incr board', async () => {
    // A board that applies every new key (incr) and answers a known key with its first answer.
    const applied = new Map<string, number>()
    let total = 0
    let online = false
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((_url, init) => {
        const key = (init?.headers as Record<string, string>)['idempotency-key']!
        const { score } = JSON.parse(String(init!.body)) as { score: number }
        const replayed = applied.has(key)
        if (!replayed) {
          total += score
          applied.set(key, total)
        }
        // Offline: the board got it, the answer was lost, every time.
        if (!online) throw new TypeError('fetch failed')
        return jsonRes(200, { cycle: 1, score, best: applied.get(key), rank: 1, replayed })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const lost = await client.leaderboards.submit('daily', { score: 5 }).catch((e: unknown) => e)
    expect(lost).toBeInstanceOf(NexusNetworkError)
    const key = (lost as NexusNetworkError).idempotencyKey
    expect(key).toEqual(expect.any(String))
    online = true
    // The game's offline queue, later: the same score with the key it kept.
    const again = await client.leaderboards.submit('daily', { score: 5 }, { idempotencyKey: key })
    expect(again).toMatchObject({ replayed: true, best: 5 })
    expect(total).toBe(5)
  })

  it('without AbortSignal.any (Safari before 17.4) requests still carry the caller’s abort, and leave no listener on its signal', async () => {
    const any = AbortSignal.any
    ;(AbortSignal as { any?: unknown }).any = undefined
    try {
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
          if (new URL(String(_input)).searchParams.get('hang') === null) return jsonRes(200, {})
          // Answers only the abort.
          return new Promise<Response>((_, reject) =>
            init!.signal!.addEventListener('abort', () => reject(init!.signal!.reason)),
          )
        }) as typeof fetch,
      })
      const caller = new AbortController()
      let listening = 0
      const add = caller.signal.addEventListener.bind(caller.signal)
      const remove = caller.signal.removeEventListener.bind(caller.signal)
      caller.signal.addEventListener = ((...a: Parameters<typeof add>) => {
        listening++
        add(...a)
      }) as typeof add
      caller.signal.removeEventListener = ((...a: Parameters<typeof remove>) => {
        listening--
        remove(...a)
      }) as typeof remove
      const path = { path: { queue: 'duel' }, signal: caller.signal, retry: true }
      await client.http.request('get', '/v1/matchmaking/{queue}', path)
      expect(listening).toBe(0)
      const hanging = client.http
        .request('get', '/v1/matchmaking/{queue}', { ...path, query: { hang: 1 } } as typeof path)
        .catch((e: unknown) => e)
      await new Promise((resolve) => setTimeout(resolve, 5))
      caller.abort(new Error('left the screen'))
      expect(await within(hanging, 'the abort', 1000)).toMatchObject({ message: 'left the screen' })
      expect(listening).toBe(0)
    } finally {
      AbortSignal.any = any
    }
  })

  it('without AbortSignal.timeout (Safari before 16) a request that hangs still times out, and a request answered in time leaves no timer behind', async () => {
    const timeout = AbortSignal.timeout
    ;(AbortSignal as { timeout?: unknown }).timeout = undefined
    const realSet = globalThis.setTimeout
    const realClear = globalThis.clearTimeout
    // The request timeouts' timers (30 ms here) that are still set.
    const pending = new Set<unknown>()
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      const id = realSet(() => {
        pending.delete(id)
        fn()
      }, ms)
      if (ms === 30) pending.add(id)
      return id
    }) as typeof setTimeout
    globalThis.clearTimeout = ((id: Parameters<typeof clearTimeout>[0]) => {
      pending.delete(id)
      realClear(id)
    }) as typeof clearTimeout
    try {
      let calls = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        timeoutMs: 30,
        retry: { attempts: 2, baseDelayMs: 1, maxDelayMs: 5 },
        fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
          calls++
          if (new URL(String(input)).searchParams.get('hang') === null) return jsonRes(200, {})
          return new Promise<Response>((_, reject) =>
            init!.signal!.addEventListener('abort', () => reject(init!.signal!.reason)),
          )
        }) as typeof fetch,
      })
      const path = { path: { queue: 'duel' }, retry: true }
      await client.http.request('get', '/v1/matchmaking/{queue}', path)
      expect(pending.size).toBe(0)
      const hanging = client.http
        .request('get', '/v1/matchmaking/{queue}', { ...path, query: { hang: 1 } } as typeof path)
        .catch((e: unknown) => e)
      const outcome = await within(hanging, 'the timeouts', 2000)
      expect(outcome).toBeInstanceOf(NexusNetworkError)
      expect((outcome as Error).cause).toMatchObject({ name: 'TimeoutError' })
      expect(calls).toBe(3)
      expect(pending.size).toBe(0)
    } finally {
      globalThis.setTimeout = realSet
      globalThis.clearTimeout = realClear
      AbortSignal.timeout = timeout
    }
  })
})

describe('the device id in storage', () => {
  /** A client whose sign-ins the server answers with the player of the device id sent. */
  function clientWith(storage: {
    getItem(k: string): string | null
    setItem(k: string, v: string): void
  }) {
    const sent: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      storage,
      fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
        const { deviceId } = JSON.parse(String(init?.body)) as { deviceId: string }
        sent.push(deviceId)
        if (!/^[A-Za-z0-9._:-]{8,128}$/.test(deviceId)) {
          return jsonRes(422, {
            type: 'urn:nexus:problem:validation',
            title: 'Validation failed',
            status: 422,
          })
        }
        return jsonRes(200, {
          token: 'tok',
          playerId: `g_${deviceId}`,
          expiresIn: 3600,
          expiresAt: 0,
        })
      }) as typeof fetch,
    })
    return { client, sent }
  }

  it('storage that throws (full, disabled) does not keep a player from signing in, nor make each sign-in a new player', async () => {
    const { client, sent } = clientWith({
      getItem: () => {
        throw new DOMException('denied', 'SecurityError')
      },
      setItem: () => {
        throw new DOMException('full', 'QuotaExceededError')
      },
    })
    const first = await client.auth.guest()
    const again = await client.auth.guest()
    expect(again.playerId).toBe(first.playerId)
    expect(new Set(sent).size).toBe(1)
  })

  it('a stored id JSON-quoted by another adapter is the same id; one the server would refuse (cut short, "undefined") is replaced, not sent for ever; one storage failed to keep is written when it can', async () => {
    const quoted = new Map([['nexus.deviceId', '"b3c1f0e2-5a4d-4f6b"']])
    const fromQuoted = clientWith({
      getItem: (k) => quoted.get(k) ?? null,
      setItem: (k, v) => void quoted.set(k, v),
    })
    await fromQuoted.client.auth.guest()
    // An empty id given is none given.
    await fromQuoted.client.auth.guest('')
    expect(fromQuoted.sent).toEqual(['b3c1f0e2-5a4d-4f6b', 'b3c1f0e2-5a4d-4f6b'])
    expect(quoted.get('nexus.deviceId')).toBe('"b3c1f0e2-5a4d-4f6b"')
    // Full at first, then not: the id made meanwhile is the one kept.
    const later = new Map<string, string>()
    let full = true
    const flaky = clientWith({
      getItem: (k) => later.get(k) ?? null,
      setItem: (k, v) => {
        if (full) throw new DOMException('full', 'QuotaExceededError')
        later.set(k, v)
      },
    })
    await flaky.client.auth.guest()
    full = false
    await flaky.client.auth.guest()
    expect(new Set(flaky.sent).size).toBe(1)
    expect(later.get('nexus.deviceId')).toBe(flaky.sent[0])
    for (const bad of ['null', 'undefined', 'abc', '"abc"']) {
      const kept = new Map([['nexus.deviceId', bad]])
      const { client, sent } = clientWith({
        getItem: (k) => kept.get(k) ?? null,
        setItem: (k, v) => void kept.set(k, v),
      })
      const { playerId } = await client.auth.guest()
      expect(sent[0]).not.toBe(bad)
      expect(kept.get('nexus.deviceId')).toBe(sent[0])
      // Kept: the next run of the game is the same player.
      const next = clientWith({
        getItem: (k) => kept.get(k) ?? null,
        setItem: (k, v) => void kept.set(k, v),
      })
      expect((await next.client.auth.guest()).playerId).toBe(playerId)
    }
  })
})

describe('token renewal', () => {
  /** A fetch whose guest sign-in fails while `down()` and issues `tok-<n>` (1 h) otherwise. */
  function tokens(down: () => boolean) {
    const calls = { guest: 0, used: [] as string[] }
    const fetchImpl = (async (input: RequestInfo | URL, init?: RequestInit) => {
      if (new URL(String(input)).pathname === '/v1/auth/guest') {
        calls.guest++
        if (down())
          return jsonRes(503, { type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 })
        return jsonRes(200, {
          token: `tok-${calls.guest}`,
          playerId: 'g_1',
          expiresIn: 3600,
          expiresAt: 0,
        })
      }
      calls.used.push(authOf(init))
      return jsonRes(200, { rewards: [] })
    }) as typeof fetch
    return { calls, fetchImpl }
  }

  it('a token with minutes left is used when its early renewal fails; once it has expired the failure surfaces', async () => {
    let down = false
    const { calls, fetchImpl } = tokens(() => down)
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: fetchImpl,
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
    })
    await client.auth.guest('device-abcdef-123456')
    const realNow = Date.now
    try {
      // 4 minutes left: inside the 5-minute renewal margin, and the sign-in fails for now.
      Date.now = () => realNow() + 56 * 60_000
      down = true
      await client.leaderboards.rewards()
      // The request did not wait for the renewal it started; a forced one waits for it to fail.
      await client.auth.token(true).catch(() => {})
      const tried = calls.guest
      expect(tried).toBeGreaterThan(1)
      // The next request does not wait for another failing renewal straight away.
      await client.leaderboards.rewards()
      expect(calls.guest).toBe(tried)
      expect(calls.used).toEqual(['tok-1', 'tok-1'])
      // Expired: a token is needed, and there is none.
      Date.now = () => realNow() + 61 * 60_000
      await expect(client.leaderboards.rewards()).rejects.toMatchObject({ status: 503 })
      expect(calls.used).toHaveLength(2)
    } finally {
      Date.now = realNow
    }
  })

  it('a sign-in whose token source is slow holds the requests made meanwhile TOKEN_SOURCE_WAIT_MS at most (they fail as the network does); the sign-in goes on, and its late answer signs the player in', async () => {
    vi.useFakeTimers()
    try {
      const { client, used } = rewardsReader()
      let answer!: (t: { token: string; expiresIn: number }) => void
      const signIn = client.auth.useTokens(() => new Promise((resolve) => (answer = resolve)), 'p1')
      let settled: unknown = null
      const request = client.leaderboards.rewards().then(
        () => (settled = 'answered'),
        (e: unknown) => (settled = e),
      )
      await vi.advanceTimersByTimeAsync(TOKEN_SOURCE_WAIT_MS - 1_000)
      expect(settled).toBe(null)
      await vi.advanceTimersByTimeAsync(15_000)
      await request
      expect(settled).toBeInstanceOf(NexusNetworkError)
      // The provider answers at last: the sign-in lands, and requests go out with its token.
      answer({ token: 'tok-late', expiresIn: 3600 })
      await signIn
      expect(client.auth.playerId).toBe('p1')
      await client.leaderboards.rewards()
      expect(used).toEqual(['tok-late'])
    } finally {
      vi.useRealTimers()
    }
  })

  it('a token source that never answers (a provider fetch hung on resume) holds requests for TOKEN_SOURCE_WAIT_MS at most; then the source is called again and its token used', async () => {
    vi.useFakeTimers()
    try {
      let calls = 0
      const { client, used } = rewardsReader()
      await client.auth.useTokens(async () => {
        calls++
        if (calls === 1) return { token: 'tok-1', expiresIn: 60 }
        // The second renewal's fetch hangs for good.
        if (calls === 2) return new Promise<never>(() => undefined)
        return { token: 'tok-3', expiresIn: 3600 }
      }, 'p1')
      // The token expired while the app was in the background.
      await vi.advanceTimersByTimeAsync(120_000)
      let settled = false
      const first = client.leaderboards.rewards().then(
        () => (settled = true),
        () => (settled = true),
      )
      await vi.advanceTimersByTimeAsync(TOKEN_SOURCE_WAIT_MS - 1_000)
      expect(settled).toBe(false)
      await vi.advanceTimersByTimeAsync(15_000)
      expect(settled).toBe(true)
      await first
      await client.leaderboards.rewards()
      expect(calls).toBeGreaterThanOrEqual(3)
      expect(used[used.length - 1]).toBe('tok-3')
    } finally {
      vi.useRealTimers()
    }
  })

  it("a token with minutes left is used at once while its early renewal waits on a stalled token source; the renewal's token is used once it comes", async () => {
    let release!: () => void
    let renewals = 0
    const { client, used } = rewardsReader()
    await client.auth.useTokens(async () => {
      if (renewals++ === 0) return { token: 'tok-1', expiresIn: 3600 }
      // The provider's fetch hangs (a stalled mobile connection) until released.
      await new Promise<void>((resolve) => (release = resolve))
      return { token: 'tok-2', expiresIn: 3600 }
    }, 'p1')
    const realNow = Date.now
    try {
      // 4 minutes left: inside the renewal margin.
      Date.now = () => realNow() + 56 * 60_000
      await within(client.leaderboards.rewards(), 'a request during a stalled renewal', 1000)
      await within(client.leaderboards.rewards(), 'another', 1000)
      expect(renewals).toBe(2)
      release()
      await client.auth.token(true, 'tok-1')
      await client.leaderboards.rewards()
      expect(used).toEqual(['tok-1', 'tok-1', 'tok-2'])
    } finally {
      Date.now = realNow
    }
  })

  it('signOut() while a renewal is on its way stays signed out when the renewal lands', async () => {
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let signIns = 0
    const used: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        if (new URL(String(input)).pathname === '/v1/auth/guest') {
          if (++signIns === 2) await gate
          return jsonRes(200, {
            token: `tok-${signIns}`,
            playerId: 'g_1',
            expiresIn: 3600,
            expiresAt: 0,
          })
        }
        used.push(authOf(init))
        return jsonRes(200, { rewards: [] })
      }) as typeof fetch,
    })
    await client.auth.guest('device-abcdef-123456')
    // A 401 elsewhere forced a renewal; the player signs out before it lands.
    const renewal = client.auth.token(true).catch((e: unknown) => e)
    await new Promise((resolve) => setTimeout(resolve, 5))
    client.auth.signOut()
    release()
    expect(await renewal).toBeInstanceOf(Error)
    expect(client.auth.signedIn).toBe(false)
    expect(client.auth.playerId).toBeNull()
    await expect(client.leaderboards.rewards()).rejects.toThrow(/Not signed in/)
    expect(used).toEqual([])
  })

  it('useTokens with a device clock 2 h ahead does not call the token source on every request', async () => {
    const jwt = (claims: Record<string, number>) =>
      ['{"alg":"HS256"}', JSON.stringify(claims), 'sig']
        .map((part) => Buffer.from(part).toString('base64url'))
        .join('.')
    const nowS = () => Math.floor(serverClock() / 1000)
    const sources = {
      // The provider says how long the token lasts (seconds, as the guest sign-in does).
      expiresIn: () => ({ token: 'idp', expiresIn: 3600, expiresAt: serverClock() + 3_600_000 }),
      // Only the provider's own expiry: the JWT's `iat` and `exp` give its lifetime.
      jwt: () => {
        const iat = nowS()
        return { token: jwt({ iat, exp: iat + 3600 }), expiresAt: (iat + 3600) * 1000 }
      },
    }
    for (const [name, source] of Object.entries(sources)) {
      let calls = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async () => jsonRes(200, { rewards: [] })) as unknown as typeof fetch,
      })
      const realNow = Date.now
      Date.now = () => realNow() + 2 * 3_600_000
      try {
        await client.auth.useTokens(async () => {
          calls++
          return source()
        }, 'p_1')
        for (let i = 0; i < 10; i++) await client.leaderboards.rewards()
      } finally {
        Date.now = realNow
      }
      expect(calls, name).toBe(1)
    }
    // With the clock right, a JWT the provider had cached is renewed by its own expiry.
    let calls = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, { rewards: [] })) as unknown as typeof fetch,
    })
    await client.auth.useTokens(async () => {
      // 57 of its 60 minutes gone at first; fresh after.
      const iat = nowS() - (calls++ === 0 ? 57 * 60 : 0)
      return { token: jwt({ iat, exp: iat + 3600 }), expiresAt: (iat + 3600) * 1000 }
    })
    for (let i = 0; i < 3; i++) await client.leaderboards.rewards()
    expect(calls).toBe(2)
  })

  it('an opaque token given with only its expiry, shorter than the renewal margin, is renewed by half its life, not on every request', async () => {
    let calls = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () => jsonRes(200, { rewards: [] })) as unknown as typeof fetch,
    })
    const realNow = Date.now
    let skew = 0
    Date.now = () => realNow() + skew
    try {
      await client.auth.useTokens(async () => {
        calls++
        return { token: `opaque-${calls}`, expiresAt: Date.now() + 3 * 60_000 }
      }, 'p_1')
      // Within the first half of its 3 minutes: the token serves every request.
      for (let i = 0; i < 20; i++) await client.leaderboards.rewards()
      skew = 60_000
      for (let i = 0; i < 20; i++) await client.leaderboards.rewards()
      expect(calls).toBe(1)
      // Past half of it: renewed (once), early, while the token still works.
      skew = 100_000
      for (let i = 0; i < 5; i++) await client.leaderboards.rewards()
      await new Promise((resolve) => setTimeout(resolve, 0))
      expect(calls).toBe(2)
    } finally {
      Date.now = realNow
    }
  })

  it('a client holding the admin key sends a request made during a sign-in as the player, once the token is there', async () => {
    const sent: string[] = []
    let release = () => {}
    const client = createClient({
      baseUrl: 'http://nexus.test',
      adminKey: 'the-admin-key',
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        if (new URL(String(input)).pathname === '/v1/auth/guest') {
          await new Promise<void>((resolve) => (release = resolve))
          return jsonRes(200, { token: 'player-tok', playerId: 'g_1', expiresIn: 3600 })
        }
        sent.push(authOf(init))
        return jsonRes(200, { cycle: 1, score: 5, best: 5, rank: 1, replayed: false })
      }) as unknown as typeof fetch,
    })
    const first = client.auth.guest('device-abcdef-123456')
    await new Promise((resolve) => setTimeout(resolve, 0))
    release()
    await first
    // The same guest signs in again (the game back in the foreground) and submits meanwhile.
    const again = client.auth.guest('device-abcdef-123456')
    await new Promise((resolve) => setTimeout(resolve, 0))
    const submitted = client.leaderboards.submit('daily', { score: 5 })
    await new Promise((resolve) => setTimeout(resolve, 0))
    expect(sent).toEqual([])
    release()
    await again
    await submitted
    expect(sent).toEqual(['player-tok'])
  })
})

describe('ticket events', () => {
  it('an HTTP ticket says so in `transport` from the start, and its `transport` event is for changes only', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(async (_url, init) => {
        // A long poll holds a while.
        if (init?.method === 'GET') await new Promise((r) => setTimeout(r, 20))
        return ticketView('waiting', { existing: false, expiresIn: 60_000 })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel', { transport: 'http' })
    expect(t.transport).toBe('http')
    const seen: string[] = []
    t.on('transport', (x) => seen.push(x))
    await within(t.once('queued'), 'queued', 2000)
    await t.cancel().catch(() => {})
    expect(seen).toEqual([])
  })
})

/** A pool socket that answers a join with `queued`, then a `match_found` without a token. */
function poolMatchingWithoutToken() {
  return scriptedSocket(
    (socket) => socket.open(),
    (frame, socket) => {
      if (frame.type !== 'join') return
      socket.receive(queuedFrame())
      socket.receive({ type: 'match_found', ticketId: 'duel:eu:t1', sessionId: 's1', players: [] })
    },
  )
}

/**
 * The HTTP side of one waiting ticket (`duel:eu:t1`): joins make it, long polls answer it still
 * waiting after a moment, DELETEs are noted with the token they carried; `deleted(n)` waits for n
 * of them.
 */
function oneWaitingTicket() {
  const deletes: string[] = []
  const view = {
    ticketId: 'duel:eu:t1',
    queue: 'duel',
    region: 'eu',
    status: 'waiting',
    expiresAt: 0,
    expiresIn: 300_000,
    reason: null,
    match: null,
  }
  const fetch = guestFetch(async (url, init) => {
    if (init?.method === 'POST') return jsonRes(201, { ...view, existing: false })
    if (init?.method === 'DELETE') {
      deletes.push(`${decodeURIComponent(url.pathname)} as ${authOf(init)}`)
      return jsonRes(200, { ...view, status: 'cancelled', reason: 'cancelled' })
    }
    if (url.searchParams.get('wait')) await new Promise((r) => setTimeout(r, 20))
    return jsonRes(200, view)
  })
  const deleted = (n: number) =>
    within(
      (async () => {
        while (deletes.length < n) await new Promise((r) => setTimeout(r, 1))
      })(),
      `${n} DELETE(s)`,
      2000,
    )
  return { deletes, fetch, deleted }
}

/**
 * A guest signed in on a device, with an HTTP ticket waiting (oneWaitingTicket): `twoMorePolls`
 * waits for the ticket's long polls to go on (an ended ticket stops polling; each answered at
 * once is followed by a second's pause), `ended` is how its `matched` ended, if it has.
 */
async function guestWithTicket(
  signIn: (client: ReturnType<typeof createClient>) => Promise<unknown> = (client) =>
    client.auth.guest('device-abcdef-123456'),
) {
  const { deletes, fetch: server, deleted } = oneWaitingTicket()
  let polls = 0
  /** Guest sign-ins fail as offline while this holds. */
  const signInsLost = { now: false }
  const client = createClient({
    baseUrl: 'http://nexus.test',
    retry: { baseDelayMs: 1, maxDelayMs: 5 },
    fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
      const url = new URL(String(input))
      if (signInsLost.now && url.pathname === '/v1/auth/guest') {
        throw new TypeError('fetch failed (offline)')
      }
      if (url.searchParams.get('wait')) polls++
      return server(input, init)
    }) as typeof fetch,
  })
  await signIn(client)
  const ticket = client.matchmaking.join('duel', { transport: 'http' })
  await within(ticket.once('queued'), 'queued', 2000)
  let ended: unknown = null
  ticket.matched.catch((e: unknown) => (ended = e))
  const twoMorePolls = () => {
    const before = polls
    return within(
      (async () => {
        while (polls < before + 2) await new Promise((r) => setTimeout(r, 1))
      })(),
      'two more long polls',
      4000,
    )
  }
  return { client, ticket, deletes, deleted, twoMorePolls, ended: () => ended, signInsLost }
}

/** Listeners registered on an SDK emitter, in its own registry (a leak shows nowhere else). */
function listenerCount(emitter: object): number {
  const registry = (emitter as { listeners?: Map<unknown, Set<unknown>> }).listeners
  if (!registry) throw new Error('the emitter keeps its listeners elsewhere now')
  return [...registry.values()].reduce((n, set) => n + set.size, 0)
}

describe('cancel while a socket join is unanswered', () => {
  it('cancel() after the socket carrying the join dropped before `queued` takes the ticket the join made out of the pool, over a new socket or the HTTP fallback', async () => {
    for (const later of ['sockets open', 'sockets fail'] as const) {
      // The pool as match-pool.ts keeps it: one ticket per join key, found again by a join sent
      // again with the key (socket or HTTP), cancelled by a socket `cancel` or an HTTP DELETE.
      const pool = new Map<string, 'waiting' | 'cancelled'>()
      const join = (key: string) => {
        const existing = pool.has(key)
        if (!existing) pool.set(key, 'waiting')
        return { existing, status: pool.get(key)! }
      }
      let sockets = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        maxReconnects: 1,
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url, init) => {
          const key = (init?.headers as Record<string, string> | undefined)?.['idempotency-key']
          if (init?.method === 'POST' && key) {
            const { existing, status } = join(key)
            return ticketView(status, { existing, expiresIn: 60_000 })
          }
          if (init?.method === 'DELETE') {
            for (const k of pool.keys()) pool.set(k, 'cancelled')
            return ticketView('cancelled', { reason: 'cancelled' })
          }
          return jsonRes(200, {})
        }),
        WebSocket: () => {
          const n = ++sockets
          let key: string | null = null
          return scriptedSocket(
            (socket) => (n > 1 && later === 'sockets fail' ? socket.fail() : socket.open()),
            (frame, socket) => {
              if (frame.type === 'join') {
                key = frame.joinKey as string
                const { existing, status } = join(key)
                // The pool made the ticket; its `queued` is lost as the first socket drops.
                if (n === 1) return setTimeout(() => socket.drop(), 0)
                if (status === 'waiting') socket.receive(queuedFrame(existing))
                else socket.receive({ type: 'cancelled', ticketId: 'duel:eu:t1', reason: status })
              }
              if (frame.type === 'cancel') {
                if (key === null || pool.get(key) !== 'waiting') {
                  return socket.receive({ type: 'error', code: 'not_queued', message: 'none' })
                }
                pool.set(key, 'cancelled')
                socket.receive({ type: 'cancelled', ticketId: 'duel:eu:t1', reason: 'cancelled' })
              }
            },
          )
        },
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel')
      const queued: unknown[] = []
      t.on('queued', (q) => queued.push(q))
      // The player cancels while the client waits to reconnect: no answer has named the ticket.
      await within(t.once('reconnecting'), 'the drop', 2000)
      expect([...pool.values()], later).toEqual(['waiting'])
      await within(t.cancel(), 'the cancel', 3000)
      await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
      // Left waiting, the pool would match it within its disconnect grace: it must be gone.
      expect([...pool.values()], later).toEqual(['cancelled'])
      expect(queued, later).toEqual([])
    }
  })
})

describe('a match without a token', () => {
  it('a `match_found` without a token (the pool could not sign one) resolves `matched` with the token the ticket’s HTTP read carries', async () => {
    let reads = 0
    let sockets = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch((url) => {
        if (decodeURIComponent(url.pathname) !== '/v1/matchmaking/tickets/duel:eu:t1') {
          return jsonRes(200, {})
        }
        // The Worker cannot sign it either for a while (past one request's retries), then can.
        if (++reads <= 6) {
          return jsonRes(500, { type: 'urn:nexus:problem:internal', title: 'x', status: 500 })
        }
        return ticketView('matched', {
          match: { sessionId: 's1', token: 'session-tok', players: [] },
        })
      }),
      WebSocket: () => {
        sockets++
        return poolMatchingWithoutToken()
      },
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    const match = await within(t.matched, 'the match', 5000)
    expect(match).toMatchObject({ ticketId: 'duel:eu:t1', sessionId: 's1', token: 'session-tok' })
    expect(reads).toBe(7)
    // Matched: no socket goes back to the pool for it.
    expect(sockets).toBe(1)
  })

  it('a `match_found` without a token whose token cannot be read rejects `matched`: the read’s refusal, or once 2 minutes are up, unavailable naming the session', async () => {
    const realNow = Date.now
    try {
      for (const answer of ['not-found', 'failing'] as const) {
        const client = createClient({
          baseUrl: 'http://nexus.test',
          retry: { baseDelayMs: 1, maxDelayMs: 5 },
          fetch: guestFetch((url) => {
            if (!url.pathname.startsWith('/v1/matchmaking/tickets/')) return jsonRes(200, {})
            if (answer === 'not-found') {
              return jsonRes(404, { type: 'urn:nexus:problem:not-found', title: 'x', status: 404 })
            }
            // Failing for now, and the device's clock moves past the two minutes meanwhile.
            Date.now = () => realNow() + 121_000
            return jsonRes(503, { type: 'urn:nexus:problem:unavailable', title: 'x', status: 503 })
          }),
          WebSocket: poolMatchingWithoutToken,
        })
        await client.auth.guest('device-abcdef-123456')
        const t = client.matchmaking.join('duel')
        const err = await within(t.matched, 'the rejection', 5000).catch((e: unknown) => e)
        expect(err, answer).toBeInstanceOf(NexusProblem)
        if (answer === 'not-found') expect(err).toMatchObject({ problem: 'not-found' })
        else {
          expect(err).toMatchObject({ problem: 'unavailable', status: 503 })
          expect((err as NexusProblem).body).toMatchObject({
            sessionId: 's1',
            ticketId: 'duel:eu:t1',
          })
        }
        Date.now = realNow
      }
    } finally {
      Date.now = realNow
    }
  })
})

describe('cancel() listeners', () => {
  it('cancel(), however often it is called, leaves no listener on the ticket', async () => {
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch(() => jsonRes(200, {})),
      WebSocket: () =>
        scriptedSocket(
          (socket) => socket.open(),
          (frame, socket) => {
            if (frame.type === 'join') socket.receive(queuedFrame())
            // The pool answers over the network, a moment later.
            if (frame.type === 'cancel') {
              setTimeout(
                () =>
                  socket.receive({
                    type: 'cancelled',
                    ticketId: 'duel:eu:t1',
                    reason: 'cancelled',
                  }),
                5,
              )
            }
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    t.on('ended', () => {})
    await within(t.once('queued'), 'queued', 2000)
    const mine = listenerCount(t)
    // A player tapping cancel three times.
    await within(Promise.all([t.cancel(), t.cancel(), t.cancel()]), 'the cancels', 2000)
    await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
    expect(listenerCount(t)).toBe(mine)
  })
})

describe('reconnect jitter', () => {
  it('sockets dropped together by a server restart reconnect spread over a second, not all within 200 ms', async () => {
    const clients = 100
    const game = gameSockets(() => true)
    const poolSockets: ScriptedSocket[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch((_url, init) =>
        init?.method === 'DELETE'
          ? ticketView('cancelled', { reason: 'cancelled' })
          : jsonRes(200, {}),
      ),
      WebSocket: (url, protocols) =>
        url.includes('/v1/sessions/')
          ? game.factory(url, protocols)
          : scriptedSocket(
              (socket) => {
                socket.open()
                poolSockets.push(socket)
              },
              (frame, socket) => {
                if (frame.type === 'join') socket.receive(queuedFrame())
              },
            ),
    })
    await client.auth.guest('device-abcdef-123456')
    const games = Array.from({ length: clients / 2 }, (_, i) =>
      client.sessions.connect(`s${i}`, 'tok'),
    )
    const tickets = Array.from({ length: clients / 2 }, () => client.matchmaking.join('duel'))
    await within(
      Promise.all([...games.map((g) => g.ready), ...tickets.map((t) => t.once('queued'))]),
      'everyone connected',
      5000,
    )
    const delays: number[] = []
    const reconnects = [
      ...games.map((g) => g.once('reconnecting')),
      ...tickets.map((t) => t.once('reconnecting')),
    ].map((next) => next.then(({ delayMs }) => delays.push(delayMs)))
    // The server restarts: every socket drops at once.
    for (const socket of [...game.live.splice(0), ...poolSockets.splice(0)]) socket.drop()
    await within(Promise.all(reconnects), 'the reconnects', 5000)
    for (const g of games) g.close()
    await Promise.all(tickets.map((t) => t.cancel()))
    expect(delays).toHaveLength(clients)
    // Full jitter over the first second: about four in five wait 200 ms or more. Still within the
    // second, well inside the pool's 10 s grace.
    expect(delays.filter((d) => d >= 200).length).toBeGreaterThan(clients / 2)
    expect(Math.max(...delays)).toBeLessThan(1000)
  })
})

describe('signing in, out and as another player', () => {
  it('switching players signs the old one out at once: requests meanwhile wait for the new token, and a failed switch leaves the client signed out', async () => {
    const used: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: guestFetch((_url, init) => {
        used.push(authOf(init))
        return jsonRes(200, { rewards: [] })
      }),
    })
    await client.auth.guest('device-abcdef-123456')
    expect(client.auth.playerId).toBe('g_1')
    // The studio's account B, whose provider answers a moment later.
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const switching = client.auth.useTokens(async () => {
      await gate
      return { token: 'tok-B', expiresIn: 3600 }
    }, 'B')
    expect(client.auth.playerId).toBeNull()
    const during = client.leaderboards.rewards()
    release()
    await switching
    await during
    expect(client.auth.playerId).toBe('B')
    expect(used).toEqual(['tok-B'])
    // A switch to C whose provider cannot be reached: the client is signed out, not still B
    // (nor C some time later).
    const failed = client.auth.useTokens(async () => {
      throw new Error('IdP unreachable')
    }, 'C')
    await expect(failed).rejects.toThrow()
    expect(client.auth.signedIn).toBe(false)
    expect(client.auth.playerId).toBeNull()
    await expect(client.leaderboards.rewards()).rejects.toThrow(/Not signed in/)
    expect(used).toEqual(['tok-B'])
    // Signing out while a guest sign-in is on its way: it does not end signed in.
    const guest = client.auth.guest('device-abcdef-123456')
    client.auth.signOut()
    await expect(guest).rejects.toThrow()
    expect(client.auth.signedIn).toBe(false)
    expect(client.auth.playerId).toBeNull()
  })

  it('signOut() ends the live tickets (leaving the queue with the player’s token) and closes the game connections', async () => {
    const { deletes, fetch, deleted } = oneWaitingTicket()
    const frames: string[] = []
    let poolSocket: ScriptedSocket | null = null
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch,
      WebSocket: (url) =>
        scriptedSocket(
          (socket) => {
            socket.open()
            if (url.includes('/v1/sessions/')) {
              const welcome = { type: 'welcome', seq: 0, state: {}, you: 'g_1', status: 'active' }
              setTimeout(() => socket.receive(welcome), 1)
            } else poolSocket = socket
          },
          (frame, socket) => {
            if (url.includes('/v1/sessions/')) return
            frames.push(frame.type)
            if (frame.type === 'join') socket.receive({ ...queuedFrame(), ticketId: 'duel2:eu:t2' })
          },
        ),
    })
    await client.auth.guest('device-abcdef-123456')
    const overHttp = client.matchmaking.join('duel', { transport: 'http' })
    const overSocket = client.matchmaking.join('duel2')
    const game = client.sessions.connect('s1', 'session-tok')
    await within(
      Promise.all([overHttp.once('queued'), overSocket.once('queued'), game.ready]),
      'the tickets and the game',
      2000,
    )
    client.auth.signOut()
    const ended = (e: unknown) => e instanceof MatchmakingEnded && e.reason === 'signed_out'
    expect(ended(await overHttp.matched.catch((e: unknown) => e))).toBe(true)
    expect(ended(await overSocket.matched.catch((e: unknown) => e))).toBe(true)
    await expect(game.ended).rejects.toThrow(/signed out/)
    expect(game.connected).toBe(false)
    expect(poolSocket!.closed()).toBe(true)
    expect(frames).toContain('cancel')
    // Both tickets leave the server, sent with the token they were made with.
    await deleted(2)
    expect(deletes.sort()).toEqual([
      '/v1/matchmaking/tickets/duel2:eu:t2 as tok',
      '/v1/matchmaking/tickets/duel:eu:t1 as tok',
    ])
  })

  it('signing in again as the same player (guest() again on the device) keeps the live ticket; signing in as another ends it', async () => {
    const { client, ticket, deletes, deleted, twoMorePolls, ended } = await guestWithTicket()
    await client.auth.guest('device-abcdef-123456')
    // Long polls go on (an ended ticket would stop polling; each answered at once here is
    // followed by a second's pause): still waiting, nothing deleted.
    await twoMorePolls()
    expect(ended()).toBeNull()
    expect(deletes).toEqual([])
    await client.auth.useTokens(async () => ({ token: 'other-tok', expiresIn: 3600 }), 'g_2')
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as tok'])
  })

  it("useTokens() called again without a player id (a provider's refresh hook) with a token of the same `sub` keeps the live ticket; another `sub` ends it", async () => {
    // Unsigned JWTs: the SDK reads claims, the server checks signatures.
    const iat = Math.floor(Date.now() / 1000)
    const jwt = (sub: string) => {
      const part = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, '')
      return `${part({ alg: 'HS256' })}.${part({ sub, iat, exp: iat + 3600 })}.sig`
    }
    const tokenOf = (sub: string) => async () => ({ token: jwt(sub), expiresIn: 3600 })
    const { client, ticket, deletes, deleted, twoMorePolls, ended } = await guestWithTicket((c) =>
      c.auth.useTokens(tokenOf('player-1')),
    )
    expect(client.auth.playerId).toBe('player-1')
    const first = deletes.length
    await client.auth.useTokens(tokenOf('player-1'))
    await twoMorePolls()
    expect(ended()).toBeNull()
    expect(deletes.length).toBe(first)
    await client.auth.useTokens(tokenOf('player-2'))
    expect(client.auth.playerId).toBe('player-2')
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as ' + jwt('player-1')])
  })

  it('guest() again on the device that fails (a wake handler, the network not up yet) rejects, and leaves that player signed in with the token they had: their ticket goes on; a failed sign-in as another player still signs them out', async () => {
    const { client, ticket, deletes, deleted, twoMorePolls, ended, signInsLost } =
      await guestWithTicket()
    signInsLost.now = true
    await expect(client.auth.guest('device-abcdef-123456')).rejects.toBeInstanceOf(
      NexusNetworkError,
    )
    expect(client.auth.playerId).toBe('g_1')
    await twoMorePolls()
    expect(ended()).toBeNull()
    expect(deletes).toEqual([])
    // Again, failing again: still the same player.
    await expect(client.auth.guest('device-abcdef-123456')).rejects.toBeInstanceOf(
      NexusNetworkError,
    )
    await twoMorePolls()
    expect(ended()).toBeNull()
    // Twice at once (online and visibilitychange handlers), both failing: still the same player.
    const both = await Promise.allSettled([
      client.auth.guest('device-abcdef-123456'),
      client.auth.guest('device-abcdef-123456'),
    ])
    expect(both.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    expect(client.auth.playerId).toBe('g_1')
    await twoMorePolls()
    expect(ended()).toBeNull()
    expect(deletes).toEqual([])
    // Another device's guest failing is another player's sign-in: the one before is signed out.
    await expect(client.auth.guest('device-other-654321')).rejects.toBeInstanceOf(NexusNetworkError)
    expect(client.auth.playerId).toBeNull()
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as tok'])
  }, 15_000)

  it("a join made while a sign-in as another player is on its way is that player's: it waits for their token and goes on once they are signed in, while the ticket of the player before ends", async () => {
    const { client, ticket, deletes, deleted } = await guestWithTicket()
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const switching = client.auth.useTokens(async () => {
      await gate
      return { token: 'tok-b', expiresIn: 3600 }
    }, 'player-b')
    const joinedDuring = client.matchmaking.join('duel', { transport: 'http' })
    let endedDuring: unknown = null
    joinedDuring.matched.catch((e: unknown) => (endedDuring = e))
    const queued = joinedDuring.once('queued')
    release()
    await switching
    await within(queued, "the new player's join queued", 2000)
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as tok'])
    // Still going a moment later: no cancel of its own, no end.
    await new Promise((r) => setTimeout(r, 100))
    expect(endedDuring).toBeNull()
    expect(deletes).toHaveLength(1)
    await joinedDuring.cancel()
  })

  it("a game connected with its session token while a sign-in as another player is on its way is judged by whose the token is: the player before's closes when the sign-in completes, the new player's goes on", async () => {
    const iat = Math.floor(Date.now() / 1000)
    const part = (o: object) => btoa(JSON.stringify(o)).replace(/=+$/, '')
    const sessionToken = (sub: string, session: string) =>
      `${part({ alg: 'HS256' })}.${part({ sub, sid: session, iat, exp: iat + 3600 })}.sig`
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: guestFetch(() => jsonRes(404, {})),
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          const welcome = { type: 'welcome', seq: 0, state: {}, you: 'x', status: 'active' }
          setTimeout(() => socket.receive(welcome), 1)
        }),
    })
    await client.auth.guest('device-abcdef-123456')
    let release!: () => void
    const gate = new Promise<void>((r) => (release = r))
    const switching = client.auth.useTokens(async () => {
      await gate
      return { token: 'tok-b', expiresIn: 3600 }
    }, 'player-b')
    // The guest's match was found just now; and the new player's game restored from storage,
    // once with its session token, once with a function that waits for the player's own.
    const guestsGame = client.sessions.connect('s-guest', sessionToken('g_1', 's-guest'))
    const theirGame = client.sessions.connect('s-b', sessionToken('player-b', 's-b'))
    const theirs = client.sessions.connect('s-b2', () => client.auth.token())
    await within(Promise.all([guestsGame.ready, theirGame.ready]), 'both games', 2000)
    release()
    await switching
    await within(theirs.ready, "the new player's game, connected with their token", 2000)
    await expect(guestsGame.ended).rejects.toThrow(/signed out/)
    expect(guestsGame.connected).toBe(false)
    await new Promise((r) => setTimeout(r, 50))
    expect(theirGame.connected).toBe(true)
    expect(theirs.connected).toBe(true)
    // A sign-in as a third player that fails: the client is signed out, and so is the player
    // before (their game closes) but not a game another player's token names.
    const third = client.sessions.connect('s-c', sessionToken('player-c', 's-c'))
    await within(third.ready, "another player's game", 2000)
    await expect(
      client.auth.useTokens(async () => {
        throw new TypeError('offline')
      }, 'player-c'),
    ).rejects.toThrow()
    await expect(theirGame.ended).rejects.toThrow(/signed out/)
    expect(third.connected).toBe(true)
    third.close()
    theirs.close()
  })

  it("a request waiting on a token renewal when the app signs in again (a wake handler's guest()) goes on with that sign-in's token, not 'Not signed in'", async () => {
    const { client, held, used } = heldGuestSignIns({ baseDelayMs: 1, maxDelayMs: 5 })
    await client.auth.guest('device-abcdef-123456')
    const read = client.leaderboards.rewards()
    // The 401's renewal is on its way; the app's wake handler signs in again meanwhile.
    while (held.length < 1) await new Promise((r) => setTimeout(r, 1))
    const again = client.auth.guest('device-abcdef-123456')
    while (held.length < 2) await new Promise((r) => setTimeout(r, 1))
    // The renewal answers first (its token dropped: a sign-in came after it), then the sign-in.
    held[0]!.resolve()
    await new Promise((r) => setTimeout(r, 10))
    held[1]!.resolve()
    await again
    await expect(read).resolves.toEqual({ rewards: [] })
    expect(used).toEqual(['tok-1', 'tok-3'])
  })

  it("a request waiting on a renewal that fails after a sign-in of the same player has landed (a provider's rotated refresh token) goes on with that sign-in's token", async () => {
    const used: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (_input: RequestInfo | URL, init?: RequestInit) => {
        used.push(authOf(init))
        if (authOf(init) === 'a-1') return unauthorized()
        return jsonRes(200, { rewards: [] })
      }) as typeof fetch,
    })
    let fail!: (e: unknown) => void
    let calls = 0
    await client.auth.useTokens(async () => {
      // The first call signs in; the renewal after the 401 waits, then fails.
      if (++calls === 1) return { token: 'a-1', expiresIn: 3600 }
      await new Promise((_r, reject) => (fail = reject))
      throw new Error('unreachable')
    }, 'player-a')
    const read = client.leaderboards.rewards()
    while (calls < 2) await new Promise((r) => setTimeout(r, 1))
    // The provider's refresh hook signs the same player in with a new token, at once.
    await client.auth.useTokens(async () => ({ token: 'a-2', expiresIn: 3600 }), 'player-a')
    fail(new NexusProblem({ type: 'urn:x:invalid-grant', title: 'invalid_grant', status: 400 }))
    await expect(read).resolves.toEqual({ rewards: [] })
    expect(used).toEqual(['a-1', 'a-2'])
  })

  it("a request waiting on sign-ins run twice at once (online and visibilitychange), the first failing, goes on with the second one's token", async () => {
    const { client, held, used } = heldGuestSignIns({ attempts: 1, baseDelayMs: 1, maxDelayMs: 5 })
    await client.auth.guest('device-abcdef-123456')
    const read = client.leaderboards.rewards()
    while (held.length < 1) await new Promise((r) => setTimeout(r, 1))
    const first = client.auth.guest('device-abcdef-123456')
    while (held.length < 2) await new Promise((r) => setTimeout(r, 1))
    // The 401's renewal answers (its token dropped): the request waits on the first sign-in.
    held[0]!.resolve()
    await new Promise((r) => setTimeout(r, 5))
    const second = client.auth.guest('device-abcdef-123456')
    while (held.length < 3) await new Promise((r) => setTimeout(r, 1))
    // The first sign-in fails, the second lands.
    held[1]!.reject(new TypeError('fetch failed (offline)'))
    await first.catch(() => {})
    held[2]!.resolve()
    await second
    await expect(read).resolves.toEqual({ rewards: [] })
    expect(used).toEqual(['tok-1', 'tok-4'])
  })

  it("a request made while a sign-in is on its way and fails gets that sign-in's error; one made while the same device's guest signs in again and fails goes on with the token kept", async () => {
    let offline = false
    let guests = 0
    const used: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          guests++
          await new Promise((r) => setTimeout(r, 5))
          if (offline) throw new TypeError('fetch failed (offline)')
          return jsonRes(200, { token: 'tok', playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
        }
        used.push(authOf(init))
        return jsonRes(200, { rewards: [] })
      }) as typeof fetch,
    })
    // A first sign-in, offline: the request made meanwhile is told why.
    offline = true
    const signingIn = client.auth.guest('device-abcdef-123456')
    const lost = client.leaderboards.rewards()
    await expect(signingIn).rejects.toBeInstanceOf(NexusNetworkError)
    await expect(lost).rejects.toBeInstanceOf(NexusNetworkError)
    // Signed in; then again on the same device, offline: the request made meanwhile goes on.
    offline = false
    await client.auth.guest('device-abcdef-123456')
    offline = true
    const again = client.auth.guest('device-abcdef-123456')
    const read = client.leaderboards.rewards()
    await expect(again).rejects.toBeInstanceOf(NexusNetworkError)
    await expect(read).resolves.toEqual({ rewards: [] })
    expect(used).toEqual(['tok'])
    expect(guests).toBeGreaterThanOrEqual(3)
  })

  it("a request refused its token (401) while the same device's guest() signs in again and fails gets that failure, not its refused token back; one whose renewal a sign-out dropped is told it is signed out", async () => {
    let offline = false
    let guestGate: Promise<void> | null = null
    const reads: { answer: (() => void) | null } = { answer: null }
    const used: string[] = []
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { attempts: 1, baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        const url = new URL(String(input))
        if (url.pathname === '/v1/auth/guest') {
          if (guestGate) await guestGate
          if (offline) throw new TypeError('fetch failed (offline)')
          return jsonRes(200, { token: 'tok', playerId: 'g_1', expiresIn: 3600, expiresAt: 0 })
        }
        used.push(authOf(init))
        // The server refuses this token (its secret rotated), whatever the device thinks; the
        // first answer comes when the test says.
        if (used.length === 1) await new Promise<void>((r) => (reads.answer = r))
        return unauthorized()
      }) as typeof fetch,
    })
    await client.auth.guest('device-abcdef-123456')
    const read = client.leaderboards.rewards()
    while (reads.answer === null) await new Promise((r) => setTimeout(r, 1))
    // The app wakes and signs in again, offline; the request's 401 comes meanwhile.
    offline = true
    let releaseGuest!: () => void
    guestGate = new Promise<void>((r) => (releaseGuest = r))
    const again = client.auth.guest('device-abcdef-123456')
    reads.answer()
    await new Promise((r) => setTimeout(r, 10))
    releaseGuest()
    await expect(again).rejects.toBeInstanceOf(NexusNetworkError)
    await expect(read).rejects.toBeInstanceOf(NexusNetworkError)
    // Its refused token was not sent again.
    expect(used).toEqual(['tok'])
    // Still signed in (the kept token): a request's 401 renewal on its way, and the player signs
    // out before it fails.
    guestGate = new Promise<void>((r) => (releaseGuest = r))
    const late = client.leaderboards.rewards()
    while (used.length < 2) await new Promise((r) => setTimeout(r, 1))
    await new Promise((r) => setTimeout(r, 10))
    client.auth.signOut()
    releaseGuest()
    await expect(late).rejects.toThrow(/Not signed in/)
  })

  it('two sign-ins at once as the same player (guest() twice, before the first answers) keep the live ticket', async () => {
    const { client, deletes, twoMorePolls, ended } = await guestWithTicket()
    // A resume handler run twice (online and visibilitychange, say): the first is overtaken and
    // rejects; the second turns out to be the same player, who keeps what they are in.
    const [first, second] = await Promise.allSettled([
      client.auth.guest('device-abcdef-123456'),
      client.auth.guest('device-abcdef-123456'),
    ])
    expect(first.status).toBe('rejected')
    expect(second.status).toBe('fulfilled')
    await twoMorePolls()
    expect(ended()).toBeNull()
    expect(deletes).toEqual([])
  })

  it('a sign-out while a sign-in is on its way ends the ticket of the player before with the token it was made with', async () => {
    const { client, ticket, deletes, deleted } = await guestWithTicket()
    const signingIn = client.auth.guest('device-abcdef-123456')
    client.auth.signOut()
    await expect(signingIn).rejects.toThrow(/before the sign-in completed/)
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as tok'])
  })

  it('two sign-ins at once, the second as another player, end the ticket with the token it was made with', async () => {
    const { client, ticket, deletes, deleted } = await guestWithTicket()
    const overtaken = client.auth.guest('device-abcdef-123456')
    await client.auth.useTokens(async () => ({ token: 'other-tok', expiresIn: 3600 }), 'g_2')
    await expect(overtaken).rejects.toThrow(/before the sign-in completed/)
    const e = await ticket.matched.catch((x: unknown) => x)
    expect(e instanceof MatchmakingEnded && e.reason === 'signed_out').toBe(true)
    await deleted(1)
    expect(deletes).toEqual(['/v1/matchmaking/tickets/duel:eu:t1 as tok'])
  })

  it('a party member’s socket keeps reading the party until the leader queues, even in another region than its socket’s', async () => {
    vi.useFakeTimers()
    try {
      let leaderQueued = false
      const sockets: string[] = []
      const client = createClient({
        baseUrl: 'http://nexus.test',
        retry: { baseDelayMs: 1, maxDelayMs: 5 },
        fetch: guestFetch((url) => {
          if (url.pathname === '/v1/parties/me')
            return partyOf(leaderQueued ? 'squads:eu:t1' : null)
          if (decodeURIComponent(url.pathname) === '/v1/matchmaking/tickets/squads:eu:t1')
            return waitingSquad()
          return jsonRes(200, {})
        }),
        // The member's first socket is in the queue's default pool, which never hears of the
        // leader's ticket (made in eu); eu's pool re-attaches the member and matches it.
        WebSocket: (url) => {
          sockets.push(new URL(url).searchParams.get('region') ?? 'default')
          return scriptedSocket((socket) => {
            socket.open()
            if (new URL(url).searchParams.get('region') === 'eu') {
              setTimeout(() => queueAndMatch(socket, true), 5)
            }
          })
        },
      })
      await client.auth.guest('device-abcdef-123456')
      const mine = client.matchmaking.waitForParty('squads')
      let outcome: unknown = null
      mine.matched.then(
        (m) => (outcome = m),
        (e: unknown) => (outcome = e),
      )
      // The leader queues ten seconds into the wait, well after the socket's first check.
      await vi.advanceTimersByTimeAsync(10_000)
      leaderQueued = true
      await vi.advanceTimersByTimeAsync(10_000)
      expect(outcome).toMatchObject({ sessionId: 's1' })
      expect(sockets).toEqual(['default', 'eu'])
    } finally {
      vi.useRealTimers()
    }
  })

  it("a game token function that fails offline (fetch's TypeError) is ridden out as the network is, not the end of the connection", async () => {
    let calls = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () =>
        jsonRes(200, { status: 'live', seq: 0, result: null })) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(
            () => socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' }),
            1,
          )
        }),
      maxReconnects: 3,
    })
    const game = client.sessions.connect('s1', async () => {
      // The game's own token server, unreachable the first two times.
      if (calls++ < 2) throw new TypeError('Failed to fetch')
      return 'tok'
    })
    await expect(game.ready).resolves.toBeUndefined()
    expect(calls).toBe(3)
    game.close()
  })

  it('a token source that fails for the network (fetch’s TypeError offline) is retried as a network failure is', async () => {
    let offline = false
    let opens = 0
    const client = createClient({
      baseUrl: 'http://nexus.test',
      retry: { baseDelayMs: 1, maxDelayMs: 5 },
      fetch: (async () =>
        jsonRes(200, { queue: 'duel', regions: ['eu'] })) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket(
          (socket) => {
            // The first socket fails in a tunnel; the next, once out of it, opens.
            if (opens++ === 0) return socket.fail()
            socket.open()
          },
          (frame, socket) => {
            if (frame.type === 'join') queueAndMatch(socket, false)
          },
        ),
    })
    await client.auth.useTokens(async () => {
      if (offline) {
        offline = false
        throw new TypeError('Failed to fetch')
      }
      return { token: 'idp', expiresIn: 3600 }
    }, 'p1')
    // The failed socket renews the token (its refusal is hidden), with the provider unreachable.
    offline = true
    const t = client.matchmaking.join('duel')
    const outcome = await within(t.matched, 'matched', 5000).catch((e: unknown) => e)
    expect(outcome).toMatchObject({ sessionId: 's1' })
    expect(offline).toBe(false)
    // The source's own error is kept as the cause; a NexusProblem is thrown as it is.
    const offlineErr = new TypeError('Failed to fetch')
    const failed = await client.auth
      .useTokens(async () => {
        throw offlineErr
      })
      .catch((e: unknown) => e)
    expect(failed).toBeInstanceOf(NexusNetworkError)
    expect((failed as Error).cause).toBe(offlineErr)
    const refused = new NexusProblem({
      type: 'urn:nexus:problem:forbidden',
      title: 'x',
      status: 403,
    })
    await expect(client.auth.useTokens(() => Promise.reject(refused))).rejects.toBe(refused)
  })

  it('cancel() while a failed socket’s token renewal is on its way ends the ticket with no `reconnecting` after `ended`', async () => {
    let signIns = 0
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    let renewalStarted!: () => void
    const renewing = new Promise<void>((resolve) => (renewalStarted = resolve))
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async (input: RequestInfo | URL) => {
        if (new URL(String(input)).pathname === '/v1/auth/guest') {
          if (++signIns === 2) {
            renewalStarted()
            await gate
          }
          return jsonRes(200, {
            token: `tok-${signIns}`,
            playerId: 'g_1',
            expiresIn: 3600,
            expiresAt: 0,
          })
        }
        return jsonRes(200, { queue: 'duel', regions: ['eu'] })
      }) as typeof fetch,
      WebSocket: () => scriptedSocket((socket) => socket.fail()),
    })
    await client.auth.guest('device-abcdef-123456')
    const t = client.matchmaking.join('duel')
    const events: string[] = []
    t.on('ended', ({ reason }) => events.push(`ended ${reason}`))
    t.on('reconnecting', () => events.push('reconnecting'))
    await within(renewing, 'the renewal', 2000)
    await t.cancel()
    release()
    await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
    // The renewal lands and the code after it runs.
    await client.auth.token()
    await new Promise((r) => setTimeout(r, 10))
    expect(events).toEqual(['ended cancelled'])
  })

  it('without crypto.randomUUID (plain-http pages, Safari 15.0–15.3) and DOMException (Hermes) the SDK still makes ids and times requests out', async () => {
    const randomUUID = crypto.randomUUID
    const timeout = AbortSignal.timeout
    const scope = globalThis as { DOMException?: unknown }
    const domException = scope.DOMException
    ;(crypto as { randomUUID?: unknown }).randomUUID = undefined
    ;(AbortSignal as { timeout?: unknown }).timeout = undefined
    scope.DOMException = undefined
    try {
      const keys: string[] = []
      const storage = new Map<string, string>()
      const client = createClient({
        baseUrl: 'http://nexus.test',
        timeoutMs: 30,
        retry: { attempts: 1 },
        storage: {
          getItem: (k) => storage.get(k) ?? null,
          setItem: (k, v) => void storage.set(k, v),
        },
        fetch: guestFetch((url, init) => {
          if (url.pathname.endsWith('/scores')) {
            keys.push((init?.headers as Record<string, string>)['idempotency-key']!)
            return jsonRes(200, { cycle: 1, score: 1, best: 1, rank: 1, replayed: false })
          }
          return new Promise<Response>((_, reject) =>
            init!.signal!.addEventListener('abort', () => reject(init!.signal!.reason)),
          )
        }),
      })
      await client.auth.guest()
      await client.leaderboards.submit('daily', { score: 1 })
      const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
      expect(storage.get('nexus.deviceId')).toMatch(v4)
      // The key is the drawn one's: its time, then a version 4 UUID of the fallback's.
      expect(keys[0]).toMatch(new RegExp(`^s1\\.[0-9a-z]+\\.${v4.source.slice(1, -1)}$`))
      const hanging = client.matchmaking.info('duel').catch((e: unknown) => e)
      const outcome = await within(hanging, 'the timeout', 2000)
      expect(outcome).toBeInstanceOf(NexusNetworkError)
      expect((outcome as Error).cause).toMatchObject({ name: 'TimeoutError' })
    } finally {
      crypto.randomUUID = randomUUID
      AbortSignal.timeout = timeout
      scope.DOMException = domException
    }
  })
})

describe("a game connection's clock", () => {
  it("game.tick() counts on from the server's tick in the last welcome or resume at its tickRate (null before the first), and events carry their own tick", async () => {
    // The device's clock, moved on by the test (real time passing meanwhile is a few ms, within
    // the margins each count below leaves).
    let ahead = 0
    const realNow = performance.now.bind(performance)
    const now = vi.spyOn(performance, 'now').mockImplementation(() => realNow() + ahead)
    let opens = 0
    const live: (() => void)[] = []
    let current: ScriptedSocket | null = null
    const factory = () =>
      scriptedSocket((socket) => {
        current = socket
        opens++
        socket.open()
        const first = opens === 1
        setTimeout(() => {
          socket.receive(
            first
              ? {
                  type: 'welcome',
                  seq: 0,
                  state: {},
                  you: 'p',
                  status: 'live',
                  tick: 500,
                  tickRate: 20,
                  // 40 ms into tick 500: the next begins 10 ms later.
                  elapsedMs: 25_040,
                  running: true,
                }
              : {
                  type: 'resumed',
                  since: 1,
                  seq: 1,
                  tick: 4_000,
                  tickRate: 20,
                  elapsedMs: 200_000,
                  running: true,
                },
          )
          if (first) socket.receive({ type: 'event', seq: 1, tick: 480, event: { e: 1 } })
        }, 1)
        live.push(() => socket.drop())
      })
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () =>
        jsonRes(200, { status: 'live', seq: 1, result: null })) as unknown as typeof fetch,
      WebSocket: factory,
      retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 },
    })
    try {
      const game = client.sessions.connect('s1', 'tok')
      expect(game.tick()).toBeNull()
      const event = game.once('event')
      await game.ready
      expect((await event).tick).toBe(480)
      // From the unrounded clock: 20 ms on is the next tick (it began 10 ms on), not one rounded
      // away with the 40 ms the welcome's tick leaves out.
      ahead += 20
      expect(game.tick()).toBe(501)
      // 2.5 s after the welcome, at 20 ticks a second: 50 ticks on.
      ahead += 2_460
      expect(game.tick()).toBe(550)
      // A resume anchors it anew: the server's tick, not the count since the welcome.
      const resumed = game.once('resumed')
      for (const drop of live.splice(0)) drop()
      await resumed
      expect(game.tick()).toBe(4_000)
      ahead += 100
      expect(game.tick()).toBe(4_002)
      // The game ends: its clock stops at the tick of the event that ended it.
      current!.receive({ type: 'event', seq: 2, tick: 4_001, event: { over: true } })
      current!.receive({ type: 'ended', seq: 2, result: { winner: null } })
      await game.ended
      ahead += 60_000
      expect(game.tick()).toBe(4_001)
    } finally {
      now.mockRestore()
    }
  })
})

describe('a game connection the server ended for good', () => {
  /** A game connection whose socket is welcomed, then closed by the server with `code`. */
  async function closedBy(code: number) {
    let opens = 0
    const factory = () =>
      scriptedSocket((socket) => {
        opens++
        socket.open()
        setTimeout(() => {
          socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' })
          setTimeout(() => socket.closeBy(code), 1)
        }, 1)
      })
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () =>
        jsonRes(200, { status: 'live', seq: 0, result: null })) as unknown as typeof fetch,
      WebSocket: factory,
      retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 },
    })
    const game = client.sessions.connect('s1', 'tok')
    const awaited = game.once('event')
    await game.ready
    return { game, awaited, opens: () => opens }
  }

  it('a socket the server closed because the player connected elsewhere (4001) ends the connection with SessionConnectionReplaced, and opens no other: it would only replace another', async () => {
    const { game, awaited, opens } = await closedBy(REPLACED_CLOSE_CODE)
    const failed: unknown[] = []
    game.on('failed', ({ error }) => failed.push(error))
    await expect(game.ended).rejects.toBeInstanceOf(SessionConnectionReplaced)
    expect(opens()).toBe(1)
    // Told as an event too, for an app that never awaits `ended`.
    expect(failed).toHaveLength(1)
    expect(failed[0]).toBeInstanceOf(SessionConnectionReplaced)
    // A `once` of an event that will not come rejects with why, not hangs.
    await expect(within(awaited, "once('event')", 2000)).rejects.toBeInstanceOf(
      SessionConnectionReplaced,
    )
  })

  it('a socket the server closed because the player was erased (4004) ends the connection with SessionPlayerErased, and opens no other: every one would be refused', async () => {
    const { game, awaited, opens } = await closedBy(ERASED_CLOSE_CODE)
    await expect(game.ended).rejects.toBeInstanceOf(SessionPlayerErased)
    expect(opens()).toBe(1)
    await expect(within(awaited, "once('event')", 2000)).rejects.toBeInstanceOf(SessionPlayerErased)
  })

  it('a connect refused because the player was erased (a browser cannot read the refusal; the session read says `erased`) ends with SessionPlayerErased, not a plain 403, and opens no other; a plain 403 stays a NexusProblem', async () => {
    const refusedAs = (extra: Record<string, unknown>) => {
      let opens = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async () =>
          new Response(
            JSON.stringify({
              type: 'urn:nexus:problem:forbidden',
              title: 'Forbidden',
              status: 403,
              detail: 'refused',
              ...extra,
            }),
            { status: 403, headers: { 'content-type': 'application/problem+json' } },
          )) as unknown as typeof fetch,
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              opens++
              socket.fail()
            },
            () => {},
          ),
        retry: { attempts: 2, baseDelayMs: 10, maxDelayMs: 50 },
      })
      const game = client.sessions.connect('s1', 'tok')
      return { ready: game.ready.catch((e: unknown) => e), opens: () => opens }
    }
    const erased = refusedAs({ erased: true })
    expect(await erased.ready).toBeInstanceOf(SessionPlayerErased)
    expect(erased.opens()).toBe(1)
    const other = refusedAs({})
    const err = await other.ready
    expect(err).toBeInstanceOf(NexusProblem)
    expect(err).not.toBeInstanceOf(SessionPlayerErased)
  })
})

describe('a game connection through a proxy that passes nothing', () => {
  it('sockets that open but never deliver a frame count as failures: the connection gives up, it does not reconnect for ever', async () => {
    vi.useFakeTimers()
    try {
      let opens = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: (async () =>
          jsonRes(200, { status: 'live', seq: 0, result: null })) as unknown as typeof fetch,
        // Opened, then silent: no welcome, and pings unanswered.
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              opens++
              socket.open()
            },
            undefined,
            { pong: false },
          ),
      })
      const game = client.sessions.connect('s1', 'tok')
      const outcome = game.ended.then(
        () => 'ended',
        (e: unknown) => e,
      )
      await vi.advanceTimersByTimeAsync(10 * 60_000)
      expect(await Promise.race([outcome, Promise.resolve('still waiting')])).toBeInstanceOf(
        NexusNetworkError,
      )
      expect(opens).toBeLessThan(20)
    } finally {
      vi.useRealTimers()
    }
  })

  it('a matchmaking join over such sockets gives up too (`transport: websocket`: no HTTP to fall back to)', async () => {
    vi.useFakeTimers()
    try {
      let opens = 0
      const client = createClient({
        baseUrl: 'http://nexus.test',
        fetch: guestFetch(() => jsonRes(200, { id: 'duel', regions: ['eu'] })),
        WebSocket: () =>
          scriptedSocket(
            (socket) => {
              opens++
              socket.open()
            },
            undefined,
            { pong: false },
          ),
      })
      await client.auth.guest('device-abcdef-123456')
      const t = client.matchmaking.join('duel', { transport: 'websocket' })
      const outcome = t.matched.then(
        () => 'matched',
        (e: unknown) => e,
      )
      await vi.advanceTimersByTimeAsync(10 * 60_000)
      expect(await Promise.race([outcome, Promise.resolve('still waiting')])).toBeInstanceOf(
        NexusNetworkError,
      )
      expect(opens).toBeLessThan(20)
    } finally {
      vi.useRealTimers()
    }
  })
})

describe('a game connection at its end', () => {
  it('closed from an `ended` listener, it keeps the result: `ended` resolves with it, and a `once` still waiting rejects saying the game ended', async () => {
    const result = { winner: 'p', reason: 'finished', placements: [] }
    const client = createClient({
      baseUrl: 'http://nexus.test',
      fetch: (async () =>
        jsonRes(200, { status: 'live', seq: 0, result: null })) as unknown as typeof fetch,
      WebSocket: () =>
        scriptedSocket((socket) => {
          socket.open()
          setTimeout(() => {
            socket.receive({ type: 'welcome', seq: 0, state: {}, you: 'p', status: 'live' })
            socket.receive({ type: 'event', seq: 1, tick: 1, event: { over: true } })
            socket.receive({ type: 'ended', seq: 1, result })
            socket.closeBy(1000)
          }, 1)
        }),
    })
    const game = client.sessions.connect('s1', 'tok')
    const endings: unknown[] = []
    game.on('ended', (e) => {
      endings.push(e.result)
      game.close()
    })
    const resumed = game.once('resumed')
    const end = game.once('ended')
    await expect(game.ended).resolves.toEqual(result)
    await expect(end).resolves.toMatchObject({ result })
    await expect(within(resumed, "once('resumed')", 2000)).rejects.toThrow('the game ended')
    expect(endings).toEqual([result])
  })
})

describe("listeners' own failures", () => {
  it('an async listener whose promise rejects is reported (console.error) as a throwing one is, not left an unhandled rejection that ends a Node process; the other listeners hear the event', async () => {
    class Events extends Emitter<{ event: number }> {
      fire(n: number) {
        this.emit('event', n)
      }
    }
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    const reported = vi.spyOn(console, 'error').mockImplementation(() => {})
    try {
      const events = new Events()
      const failure = new Error('the save failed')
      const heard: number[] = []
      events.on('event', async () => {
        await Promise.resolve()
        throw failure
      })
      events.on('event', (n) => {
        heard.push(n)
      })
      events.fire(7)
      // Past the microtasks and one macrotask, where Node reports an unhandled rejection.
      await new Promise((r) => setTimeout(r, 10))
      expect(heard).toEqual([7])
      expect(reported).toHaveBeenCalledWith(failure)
      expect(unhandled).toEqual([])
    } finally {
      reported.mockRestore()
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
