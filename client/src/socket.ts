import type { RetryPolicy } from './http.ts'
import { NexusNetworkError } from './problem.ts'

/** What a socket event carries: `data` for messages, `code`/`reason` for closes. */
export interface SocketEvent {
  data?: unknown
  code?: number
  reason?: string
}

/** The part of the WHATWG WebSocket the SDK uses; browsers' and Node 22's fit as they are. */
export interface SocketLike {
  readonly readyState: number
  send(data: string): void
  close(code?: number, reason?: string): void
  addEventListener(
    type: 'open' | 'message' | 'close' | 'error',
    listener: (e: SocketEvent) => void,
  ): void
}

/**
 * Opens a socket to a `ws:`/`wss:` URL offering `protocols`, which carry the token
 * (`socketProtocols`): pass them on, as `new WebSocket(url, protocols)` does.
 */
export type SocketFactory = (url: string, protocols: string[]) => SocketLike

/**
 * The subprotocols a socket offers: `nexus.v1`, which the server answers with, and the token as
 * `nexus.token.<token>`. A browser's socket takes no header, and a token in its URL would end up
 * in logs (the platform's, proxies'); this header does not.
 */
export function socketProtocols(token: string): string[] {
  return ['nexus.v1', `nexus.token.${token}`]
}

/**
 * Where a socket's token goes: in its subprotocols, unless the factory is of the shape written
 * before 0.2.0 (`(url) => new WebSocket(url)`: one declared parameter), which would drop them and
 * connect with no token at all, and gets it in `?token=` as then. A factory declaring none (`(...args)
 * => new WebSocket(...args)`, a wrapper, a mock) passes them on, and must not have the token put
 * in its URL, where the platform's and proxies' logs keep it. (`(url, protocols = [])` declares
 * one: write it `(url, protocols)`.)
 */
export function socketCredential(
  factory: SocketFactory,
  token: string,
): { query: { token?: string }; protocols: string[] } {
  return factory.length === 1
    ? { query: { token }, protocols: [] }
    : { query: {}, protocols: socketProtocols(token) }
}

const OPEN = 1

/** The platform's WebSocket (browsers, Node ≥ 22, Deno, Bun), or null where there is none. */
export function platformSockets(): SocketFactory | null {
  const Ctor = (globalThis as { WebSocket?: new (url: string, protocols: string[]) => unknown })
    .WebSocket
  if (typeof Ctor !== 'function') return null
  return (url, protocols) => new Ctor(url, protocols) as SocketLike
}

/** `http(s)://host/path` → `ws(s)://host/path`. */
export function toSocketUrl(httpUrl: string): string {
  return httpUrl.replace(/^http/, 'ws')
}

/**
 * Opens a socket and resolves once it is open; rejects when it closes, errors or takes longer
 * than `timeoutMs` first (a refused upgrade looks like that: browsers hide the HTTP answer), or
 * when `signal` aborts first (the socket is closed while it is still connecting, so that a
 * client that gave up does not reach the server a moment later).
 */
export function openSocket(
  factory: SocketFactory,
  url: string,
  protocols: string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<SocketLike> {
  return new Promise((resolve, reject) => {
    let settled = false
    let socket: SocketLike
    if (signal?.aborted) {
      reject(new NexusNetworkError('closed before the socket was opened'))
      return
    }
    try {
      socket = factory(url, protocols)
    } catch (err) {
      reject(new NexusNetworkError('could not create the socket', { cause: err }))
      return
    }
    const giveUp = (why: string) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      try {
        socket.close()
      } catch {
        // never opened
      }
      reject(new NexusNetworkError(why))
    }
    const aborted = () => giveUp('closed before the socket was opened')
    signal?.addEventListener('abort', aborted)
    const timer = setTimeout(() => giveUp(`socket did not open within ${timeoutMs} ms`), timeoutMs)
    const fail = (why: string) => () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      reject(new NexusNetworkError(why))
    }
    const opened = () => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      signal?.removeEventListener('abort', aborted)
      resolve(socket)
    }
    socket.addEventListener('open', opened)
    socket.addEventListener('error', fail('socket failed to open'))
    socket.addEventListener('close', fail('socket closed before opening'))
    if (socket.readyState === OPEN) opened()
  })
}

/** Text of a message event, or null for binary frames the protocols never send. */
export function messageText(e: SocketEvent): string | null {
  return typeof e.data === 'string' ? e.data : null
}

export function isOpen(socket: SocketLike | null): socket is SocketLike {
  return socket !== null && socket.readyState === OPEN
}

/** A listener may be async: a promise it returns that rejects is reported as a throw is. */
type Listener<T> = (value: T) => unknown

/** A minimal typed event emitter. */
export class Emitter<Events extends object> {
  private readonly listeners = new Map<keyof Events, Set<Listener<never>>>()

  /**
   * Listens to one event type; returns the function that stops listening.
   *
   * @example
   * const off = ticket.on('queued', ({ ticketId }) => console.log(ticketId))
   */
  on<K extends keyof Events>(type: K, listener: Listener<Events[K]>): () => void {
    let set = this.listeners.get(type)
    if (!set) this.listeners.set(type, (set = new Set()))
    set.add(listener as Listener<never>)
    return () => set.delete(listener as Listener<never>)
  }

  /**
   * The next event of one type, as a promise.
   *
   * @example
   * const { ticketId } = await ticket.once('queued')
   */
  once<K extends keyof Events>(type: K): Promise<Events[K]> {
    return new Promise((resolve) => {
      const off = this.on(type, (v) => {
        off()
        resolve(v)
      })
    })
  }

  protected emit<K extends keyof Events>(type: K, value: Events[K]): void {
    // The listeners as they were when the event came: one added by a listener hears the next
    // event, not this one again (`await game.once('event')` in a handler), as Node's emitter.
    for (const l of [...(this.listeners.get(type) ?? [])]) {
      try {
        const returned = (l as Listener<Events[K]>)(value)
        // An async listener's rejection is its bug too: left unhandled it would end a Node
        // process (a bot, a game server) over one failed save.
        if (returned && typeof (returned as Promise<unknown>).then === 'function') {
          ;(returned as Promise<unknown>).then(undefined, (err: unknown) => console.error(err))
        }
      } catch (err) {
        // A listener's bug must not break the connection's bookkeeping.
        console.error(err)
      }
    }
  }
}

/** A socket up this long is taken as healthy: its drop starts the reconnect count afresh. */
export const HEALTHY_SOCKET_MS = 10_000

/**
 * The least window a reconnect's delay is drawn from (capped by the policy's `maxDelayMs`). A
 * server restart or deploy drops every socket of a pool or a Worker at once; drawn from the
 * retry policy's first window (200 ms by default) they all came back within it, a thundering
 * herd on one Durable Object. A second spreads them five times wider, and still leaves time for
 * two more attempts within the matchmaking pool's disconnect grace (10 s at least).
 */
export const RECONNECT_WINDOW_MS = 1000

/**
 * The pause before reconnect `attempt` (1-based): full jitter, as every retry here, under the
 * policy's exponential window (doubling from `baseDelayMs`), raised to RECONNECT_WINDOW_MS while
 * it is smaller, never past `maxDelayMs`. The windows never shrink from one attempt to the next:
 * 1 s, 1 s, 1 s, 1.6 s, 3.2 s, then 5 s with the default policy.
 */
export function reconnectDelay(policy: RetryPolicy, attempt: number): number {
  const window = Math.max(RECONNECT_WINDOW_MS, policy.baseDelayMs * 2 ** (attempt - 1))
  return Math.random() * Math.min(policy.maxDelayMs, window)
}

/** How often an open socket is pinged, and how long after a ping silence means it is dead. */
export interface KeepaliveSettings {
  pingIntervalMs: number
  pingTimeoutMs: number
}

/**
 * Pings an open socket at once and then every `pingIntervalMs`; when no frame at all arrives within
 * `pingTimeoutMs` of a ping, calls `dead`. A connection that died without a close (a phone
 * switching networks) otherwise looks open for minutes. `heard` is called on every frame;
 * `stop` when the socket closes. Timers are chained timeouts, so none is left once stopped.
 */
export function keepalive(
  socket: SocketLike,
  settings: KeepaliveSettings,
  /** `silentForMs`: how long since the socket last delivered a frame, or opened. */
  dead: (silentForMs: number) => void,
): { heard(): void; stop(): void; probe(timeoutMs: number): void } {
  let next: ReturnType<typeof setTimeout> | undefined
  let deadline: ReturnType<typeof setTimeout> | undefined
  /** When `deadline` gives the socket up (monotonicNow), while it is set. */
  let deadlineAt = 0
  let stopped = false
  let lastHeard = { monotonic: monotonicNow(), wall: Date.now() }
  const stop = () => {
    stopped = true
    clearTimeout(next)
    clearTimeout(deadline)
  }
  const ping = () => {
    if (stopped) return
    // Closing already: its close event stops this.
    if (!isOpen(socket)) return stop()
    socket.send(JSON.stringify({ type: 'ping' }))
    if (deadline === undefined) {
      deadlineAt = monotonicNow() + settings.pingTimeoutMs
      deadline = setTimeout(() => {
        stop()
        dead(lifetime(lastHeard))
      }, settings.pingTimeoutMs)
    }
    next = setTimeout(ping, settings.pingIntervalMs)
  }
  // The first at once: a server judges a socket by its silence only once it has pinged, so one
  // that died before its first interval (a phone backgrounded right after joining) was kept as
  // live, its ticket matchable, until the runtime noticed minutes later.
  ping()
  return {
    heard() {
      lastHeard = { monotonic: monotonicNow(), wall: Date.now() }
      clearTimeout(deadline)
      deadline = undefined
    },
    stop,
    /**
     * Pings now, and takes the socket as dead if nothing arrives within `timeoutMs`, or by the
     * verdict already due if that comes sooner (a probe never puts one off).
     */
    probe(timeoutMs: number) {
      if (stopped) return
      if (!isOpen(socket)) return stop()
      socket.send(JSON.stringify({ type: 'ping' }))
      if (deadline !== undefined && deadlineAt <= monotonicNow() + timeoutMs) return
      clearTimeout(deadline)
      deadlineAt = monotonicNow() + timeoutMs
      deadline = setTimeout(() => {
        stop()
        dead(lifetime(lastHeard))
      }, timeoutMs)
    },
  }
}

/**
 * How long a server waits on a socket that pinged and then went silent before it takes it as
 * gone (SILENT_SOCKET_MS in workers/lib/socket-close.ts): a connection that died without a close
 * (a phone in a tunnel) starts a session seat's or a waiting ticket's grace only then, so the
 * time a client keeps trying to get them back runs from then too, not from when it noticed.
 */
export const SERVER_SILENCE_MS = 90_000

/**
 * How long from now the server takes a socket silent for `silentForMs` as gone (0: it has).
 * The silence is measured on both clocks, the longer taken (`lifetime`): a device that slept
 * stopped its monotonic clock, not the server's.
 */
export function serverLosesSocketIn(silentForMs: number): number {
  return Math.max(0, SERVER_SILENCE_MS - silentForMs)
}

/** How long a socket woken by `wake()` has to answer its ping before it is taken as dead. */
export const WAKE_PROBE_MS = 3_000

interface PageEvents {
  addEventListener(type: string, listener: () => void): void
  removeEventListener(type: string, listener: () => void): void
}

/**
 * Calls `wake` when a browser page comes back: shown again (`visibilitychange`), restored from
 * the back/forward cache (`pageshow`), or back online (`online`). A device that slept (a phone
 * locked, a laptop's lid closed) or switched networks meanwhile keeps a dead socket looking open
 * until its next ping times out, up to 30 s later, and a reconnect waits out its pause. Returns
 * the unsubscribe; nothing outside a browser page (React Native: call `wake()` from AppState).
 */
export function onPageWake(wake: () => void): () => void {
  const page = globalThis as unknown as Partial<PageEvents> & {
    document?: Partial<PageEvents> & { visibilityState?: string }
  }
  const doc = page.document
  if (typeof page.addEventListener !== 'function' || typeof doc?.addEventListener !== 'function') {
    return () => {}
  }
  const visible = () => {
    if (doc.visibilityState === 'visible') wake()
  }
  doc.addEventListener('visibilitychange', visible)
  page.addEventListener('pageshow', wake)
  page.addEventListener('online', wake)
  return () => {
    doc.removeEventListener?.('visibilitychange', visible)
    page.removeEventListener?.('pageshow', wake)
    page.removeEventListener?.('online', wake)
  }
}

/**
 * A clock for how long something took or has been tried (milliseconds): it only moves forward
 * (a device's wall clock may be set back or forward), and on most devices it stops while the
 * device sleeps, so a phone locked for ten minutes has not spent its reconnect budget.
 */
export function monotonicNow(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now()
}

/**
 * How long a socket opened at `openedAt` has been up: the longer of the two clocks, since one
 * kept open through a sleep (a phone locked a minute and unlocked) did work all that time, and
 * judged by the clock that stopped it would look like one that keeps dropping at once.
 */
export function lifetime(openedAt: { monotonic: number; wall: number }): number {
  return Math.max(monotonicNow() - openedAt.monotonic, Date.now() - openedAt.wall)
}

/** The UTF-8 length of `text` (counted here: React Native's engine may have no TextEncoder). */
export function utf8Bytes(text: string): number {
  let n = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) n += 1
    else if (c < 0x800) n += 2
    else if (c >= 0xd800 && c < 0xdc00 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      n += 4
      i++
    } else n += 3
  }
  return n
}
