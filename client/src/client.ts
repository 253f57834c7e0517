import { Auth, type KeyValueStorage, memoryStorage } from './auth.ts'
import { type Credential, DEFAULT_RETRY, type RetryPolicy, Transport } from './http.ts'
import { Leaderboards } from './leaderboards.ts'
import { Matchmaking, type SocketSettings } from './matchmaking.ts'
import { Parties } from './parties.ts'
import { Sessions } from './sessions.ts'
import { platformSockets, type SocketFactory } from './socket.ts'

export interface ClientOptions {
  /** Where Nexus answers, e.g. `https://nexus.example.workers.dev` or `http://127.0.0.1:8787`. */
  baseUrl: string
  /** Defaults to the global `fetch`. */
  fetch?: typeof fetch
  /** Opens sockets; defaults to the global `WebSocket`. */
  WebSocket?: SocketFactory
  /** Keeps the guest device id; defaults to memory (pass `localStorage` in a browser). */
  storage?: KeyValueStorage
  /**
   * Retries of requests (default 4 attempts from 200 ms, capped at 5 s; full jitter). Socket
   * reconnects back off under the same cap, each drawn from a window of at least 1 s.
   */
  retry?: Partial<RetryPolicy>
  /** Per request, default 10 s. */
  timeoutMs?: number
  /** Renew tokens this long before they expire (at most half their lifetime), default 5 minutes. */
  refreshMarginMs?: number
  /** Game servers only: the admin key, for submitting scores for players. Never ship it in a game. */
  adminKey?: string
  /** Consecutive socket reconnects before giving up (matchmaking then falls back to HTTP). */
  maxReconnects?: number
  /**
   * How long a game connection that cannot reach its session keeps trying (after at least
   * `maxReconnects` attempts), from its socket's last drop, default 60 s: the server holds a
   * player's seat that long after each close. A first connect keeps trying 120 s at least (the
   * session's join grace by default).
   */
  reconnectForMs?: number
  /**
   * Open sockets (matchmaking and game) send a ping this often, default 20 s; a socket that
   * then hears nothing for `pingTimeoutMs` (default 10 s) is taken as dead (a phone that switched
   * networks keeps a dead connection looking open) and reconnects. Keep the interval at 55 s or
   * less: the server closes a socket that has pinged and then sent nothing for 90 s, and a
   * browser tab hidden for 5 minutes runs its timers at most once a minute (an interval of 61
   * to 89 s becomes 120).
   */
  pingIntervalMs?: number
  pingTimeoutMs?: number
}

/** The Nexus client: `auth`, `leaderboards`, `matchmaking`, `parties`, `sessions`. */
export interface NexusClient {
  readonly auth: Auth
  readonly leaderboards: Leaderboards
  readonly matchmaking: Matchmaking
  readonly parties: Parties
  readonly sessions: Sessions
  /** The typed HTTP layer, for operations the helpers do not wrap. */
  readonly http: Transport
}

/**
 * Creates a client.
 *
 * @example
 * const nexus = createClient({ baseUrl: 'http://127.0.0.1:8787', storage: localStorage })
 * await nexus.auth.guest()
 * await nexus.leaderboards.submit('daily', { score: 4200 })
 */
export function createClient(options: ClientOptions): NexusClient {
  const retry = { ...DEFAULT_RETRY, ...options.retry }
  const fetchImpl = options.fetch ?? ((input, init) => fetch(input, init))
  // Each needs the other only when called: the transport asks auth for tokens, auth signs in
  // through the transport.
  const transport: Transport = new Transport({
    baseUrl: options.baseUrl,
    fetch: fetchImpl,
    retry,
    timeoutMs: options.timeoutMs ?? 10_000,
    adminKey: options.adminKey,
    playerToken: (refresh, rejected) => auth.token(refresh, rejected),
    playerIdentity: () => auth.identity(),
    stillSignedIn: (identity) => auth.stillSignedIn(identity),
  })
  const auth = new Auth({
    transport: () => transport,
    storage: options.storage ?? memoryStorage(),
    refreshMarginMs: options.refreshMarginMs ?? 5 * 60_000,
    now: () => Date.now(),
  })
  const sockets: SocketSettings = {
    factory: options.WebSocket ?? platformSockets(),
    openTimeoutMs: options.timeoutMs ?? 10_000,
    maxReconnects: options.maxReconnects ?? 8,
    reconnectForMs: options.reconnectForMs ?? 60_000,
    pingIntervalMs: options.pingIntervalMs ?? 20_000,
    pingTimeoutMs: options.pingTimeoutMs ?? 10_000,
    backoff: { ...retry, attempts: Number.MAX_SAFE_INTEGER },
  }
  const who = (): Credential =>
    auth.signedIn || !options.adminKey ? { kind: 'player' } : { kind: 'admin' }
  return {
    auth,
    leaderboards: new Leaderboards(transport, who),
    matchmaking: new Matchmaking({ t: transport, auth, sockets }),
    parties: new Parties(transport),
    sessions: new Sessions({ t: transport, auth, sockets }),
    http: transport,
  }
}
