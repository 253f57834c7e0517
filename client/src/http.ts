import type { Paths } from './api.gen.ts'
import { randomUUID, timeoutError } from './platform.ts'
import {
  NexusNetworkError,
  NexusProblem,
  readProblem,
  retriable,
  spreadRetryAfter,
  unexpectedAnswer,
} from './problem.ts'

type Method = 'get' | 'put' | 'post' | 'delete'
type OkStatus = 200 | 201 | 202

/** The operation of a path and method in the generated API types. */
export type Operation<P extends keyof Paths, M extends keyof Paths[P]> = Paths[P][M]
/** The success body of an operation (its 200, 201 or 202 response). */
export type Ok<P extends keyof Paths, M extends keyof Paths[P]> =
  Operation<P, M> extends { responses: infer R } ? R[Extract<keyof R, OkStatus>] : never
/** The request body of an operation. */
export type BodyOf<P extends keyof Paths, M extends keyof Paths[P]> =
  Operation<P, M> extends { body: infer B } ? B : never
/** The query parameters of an operation. */
/**
 * The query parameters of an operation. Each may be null, which sends none: a page's
 * `nextCursor` (null on the last page) goes back as `cursor` as it is.
 */
export type QueryOf<P extends keyof Paths, M extends keyof Paths[P]> =
  Operation<P, M> extends { query: infer Q } ? { [K in keyof Q]: Q[K] | null } : never
/** The path parameters of an operation. */
export type PathOf<P extends keyof Paths, M extends keyof Paths[P]> =
  Operation<P, M> extends { path: infer Q } ? Q : never

/**
 * Retries of network failures, 500/502/503/504 and 429 answers (those whose Retry-After is within
 * `maxDelayMs`), with exponential backoff and full jitter.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number
  baseDelayMs: number
  maxDelayMs: number
}

export const DEFAULT_RETRY: RetryPolicy = { attempts: 4, baseDelayMs: 200, maxDelayMs: 5000 }

/**
 * Who a request is sent as: the signed-in player (refreshed and retried once on 401), the
 * admin key, an explicit credential (a session token), or no one.
 */
export type Credential =
  { kind: 'player' } | { kind: 'admin' } | { kind: 'bearer'; token: string } | { kind: 'none' }

export interface RequestOptions<P extends keyof Paths, M extends keyof Paths[P]> {
  path?: PathOf<P, M>
  query?: QueryOf<P, M>
  body?: BodyOf<P, M>
  headers?: Record<string, string>
  as?: Credential
  /** Retry on network failures, 5xx and 429; only for requests safe to repeat. */
  retry?: boolean
  /** Overrides the client's timeout (long polls wait longer). */
  timeoutMs?: number
  signal?: AbortSignal
}

export interface TransportOptions {
  baseUrl: string
  fetch: typeof fetch
  retry: RetryPolicy
  timeoutMs: number
  adminKey: string | undefined
  /** The player token; `refresh` forces a new one (after a 401). */
  playerToken: (refresh: boolean, rejected?: string) => Promise<string>
  /**
   * Which sign-in the player token is of (it changes when another player signs in, or the player
   * signs out): a request made for one player is never sent again for another.
   */
  playerIdentity?: () => number
  /** Whether the player of that sign-in is still the one signed in (see `Auth.stillSignedIn`). */
  stillSignedIn?: (identity: number) => boolean
}

/** A player request whose player changed before it could be sent again: it is not. */
export class PlayerChanged extends Error {
  /**
   * A submission's key, when one of its attempts went out before the change (it may have been
   * applied): sent again later with it, by the same player, it counts once.
   */
  idempotencyKey?: string
  constructor() {
    super('The player signed out, or another signed in, before this request could be sent again')
    this.name = 'PlayerChanged'
  }
}

/** Waits `ms`, or less when `signal` aborts first (leaving no timer behind). */
export const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve()
    const done = () => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done)
  })

/**
 * The most a pause cut short by a wake still waits (a random part of it, and no longer than the
 * pause had left): a network coming back (a venue's Wi-Fi, a region's link) wakes every device
 * on it at once, and their reconnects would all come in the same moment.
 */
const WAKE_SPREAD_MS = 500

/**
 * `sleep` for `ms`, which `stop` ends too, and which `expose` is handed a controller of (at
 * once) to end early (a `wake()` cutting a reconnect's pause short, to a random part of
 * WAKE_SPREAD_MS), but for its first `uncutMs` (what a server asked to be waited), which only
 * `stop` ends.
 */
export async function cuttableSleep(
  ms: number,
  stop: AbortSignal,
  expose: (cut: AbortController) => void,
  uncutMs = 0,
): Promise<void> {
  const cut = new AbortController()
  const onStop = () => cut.abort()
  if (stop.aborted) return
  stop.addEventListener('abort', onStop)
  expose(cut)
  try {
    if (uncutMs > 0) await sleep(uncutMs, stop)
    const endsAt = Date.now() + (ms - uncutMs)
    await sleep(ms - uncutMs, cut.signal)
    const left = endsAt - Date.now()
    if (cut.signal.aborted && !stop.aborted && left > 0) {
      await sleep(Math.random() * Math.min(WAKE_SPREAD_MS, left), stop)
    }
  } finally {
    stop.removeEventListener('abort', onStop)
  }
}

/** Backoff before retry `n` (0-based): full jitter under an exponential cap. */
export function backoff(policy: RetryPolicy, n: number): number {
  return Math.random() * Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** n)
}

/**
 * Typed HTTP to Nexus: path and query from the generated `Paths`, bodies checked at compile time,
 * answers parsed as the documented success type or thrown as `NexusProblem`.
 */
export class Transport {
  readonly options: TransportOptions

  constructor(options: TransportOptions) {
    this.options = options
  }

  url(path: string, params: Record<string, unknown> = {}, query: Record<string, unknown> = {}) {
    const filled = path.replace(/\{(\w+)\}/g, (_, name: string) => {
      const v = params[name]
      if (v === undefined) throw new TypeError(`missing path parameter ${name}`)
      return encodeURIComponent(String(v))
    })
    const u = new URL(this.options.baseUrl.replace(/\/+$/, '') + filled)
    for (const [k, v] of Object.entries(query)) {
      if (v !== undefined && v !== null) u.searchParams.set(k, String(v))
    }
    return u.toString()
  }

  private async authorization(as: Credential, refresh: boolean): Promise<string | undefined> {
    switch (as.kind) {
      case 'player':
        return `Bearer ${await this.options.playerToken(refresh)}`
      case 'admin':
        if (!this.options.adminKey) throw new TypeError('this client has no adminKey')
        return `Bearer ${this.options.adminKey}`
      case 'bearer':
        return `Bearer ${as.token}`
      case 'none':
        return undefined
    }
  }

  /**
   * Sends one operation and returns its success body.
   *
   * @example
   * const page = await transport.request('get', '/v1/leaderboards/{id}/top', { path: { id: 'daily' }, query: { limit: 10 } })
   */
  request<P extends keyof Paths, M extends keyof Paths[P] & Method>(
    method: M,
    path: P,
    opts: RequestOptions<P, M> = {},
  ): Promise<Ok<P, M>> {
    return this.exchange(method, path, opts, async (res) => {
      if (res.status === 204) return undefined as Ok<P, M>
      const text = await res.text()
      try {
        return JSON.parse(text) as Ok<P, M>
      } catch {
        // Whatever answered was not Nexus: a captive portal's sign-in page, say.
        throw unexpectedAnswer(res, `HTTP ${res.status} whose body is not JSON`)
      }
    })
  }

  /**
   * Like `request`, but answers the successful Response (status and headers matter), its body
   * already read: a body cut off on the way is retried like any other network failure. The
   * answer is a copy: its `url` is empty and `redirected` false.
   */
  send<P extends keyof Paths, M extends keyof Paths[P] & Method>(
    method: M,
    path: P,
    opts: RequestOptions<P, M> = {},
  ): Promise<Response> {
    return this.exchange(method, path, opts, async (res) => {
      const body = await res.arrayBuffer()
      const empty = res.status === 204 || res.status === 205 || res.status === 304
      // The body is decoded bytes now: its wire encoding and length no longer describe it.
      const headers = new Headers(res.headers)
      headers.delete('content-encoding')
      headers.delete('content-length')
      return new Response(empty ? null : body, {
        status: res.status,
        statusText: res.statusText,
        headers,
      })
    })
  }

  /**
   * The retry loop. `read` takes a successful answer's body inside it: a body cut off on the way
   * fails like the request would have, as a `NexusNetworkError`, retried when `retry` is set.
   */
  private async exchange<P extends keyof Paths, M extends keyof Paths[P] & Method, T>(
    method: M,
    path: P,
    opts: RequestOptions<P, M>,
    read: (res: Response) => Promise<T>,
  ): Promise<T> {
    const url = this.url(
      path as string,
      (opts.path ?? {}) as Record<string, unknown>,
      (opts.query ?? {}) as Record<string, unknown>,
    )
    const as = opts.as ?? { kind: 'none' }
    const policy = opts.retry ? this.options.retry : { ...this.options.retry, attempts: 1 }
    const timeoutMs = opts.timeoutMs ?? this.options.timeoutMs
    let refreshed = false
    let lastError: unknown
    // Retries (and the re-send after a 401) go out for the player the request was made for, or
    // not at all: a retry with another player's token would apply one player's write to another.
    const identity = as.kind === 'player' ? this.options.playerIdentity?.() : undefined
    const samePlayer = () =>
      identity === undefined ||
      (this.options.stillSignedIn?.(identity) ?? this.options.playerIdentity!() === identity)
    // One id for the call, every attempt of it: the server logs it beside its own request id.
    let sentId: string | undefined
    for (let attempt = 0; attempt < policy.attempts;) {
      const headers: Record<string, string> = { accept: 'application/json', ...opts.headers }
      let authorization: string | undefined
      try {
        authorization = await this.authorization(as, false)
      } catch (err) {
        // Signed out since an attempt went out: as a switch of player, which says so.
        if (sentId !== undefined && !samePlayer()) throw new PlayerChanged()
        throw err
      }
      if (!samePlayer()) throw new PlayerChanged()
      if (authorization) headers.authorization = authorization
      if (opts.body !== undefined) headers['content-type'] = 'application/json'
      // Only on a request a browser preflights anyway (a credential, a JSON body): on a public
      // read, a header of its own would cost a cross-origin game a preflight per URL.
      if (authorization || opts.body !== undefined) {
        sentId ??= randomUUID()
        headers['x-request-id'] = sentId
      }
      const timeout = timeoutSignal(timeoutMs)
      // Held until the answer is read: the timeout and the caller's abort cover its body too.
      const combined = opts.signal ? anySignal([opts.signal, timeout.signal]) : undefined
      const signal = {
        signal: combined?.signal ?? timeout.signal,
        release: () => {
          combined?.release?.()
          timeout.release?.()
        },
      }
      try {
        let res: Response
        try {
          res = await this.options.fetch(url, {
            method: method.toUpperCase(),
            headers,
            ...(opts.body !== undefined ? { body: JSON.stringify(opts.body) } : {}),
            signal: signal.signal,
          })
          if (res.ok) return await read(res)
        } catch (err) {
          if (opts.signal?.aborted) throw err
          // An answer that is not Nexus's would be the same the next time.
          if (err instanceof NexusProblem) throw err
          lastError = new NexusNetworkError(`${method.toUpperCase()} ${url} failed`, { cause: err })
          ;(lastError as NexusNetworkError).clientRequestId = sentId
          attempt++
          if (attempt < policy.attempts) await sleep(backoff(policy, attempt - 1), opts.signal)
          continue
        }
        const problem = (await readProblem(res)) ?? unexpectedAnswer(res)
        problem.clientRequestId = sentId
        // An expired or revoked player token: get a new one and try again, once, uncounted.
        if (res.status === 401 && as.kind === 'player' && !refreshed) {
          refreshed = true
          await this.options.playerToken(true, headers.authorization?.slice('Bearer '.length))
          continue
        }
        lastError = problem
        attempt++
        if (!retriable(res.status) || attempt >= policy.attempts) break
        const wait =
          problem.retryAfter !== undefined
            ? problem.retryAfter * 1000
            : backoff(policy, attempt - 1)
        // A server asking for a longer pause than the policy allows gets its answer surfaced.
        if (wait > policy.maxDelayMs) break
        await sleep(problem.retryAfter !== undefined ? spreadRetryAfter(wait) : wait, opts.signal)
      } finally {
        signal.release?.()
      }
    }
    throw lastError
  }
}

/**
 * A signal that aborts with a `TimeoutError` after `ms`. `AbortSignal.timeout` where the platform
 * has it (Safari before 16 does not); otherwise a timer, cleared by `release`.
 */
export function timeoutSignal(ms: number): { signal: AbortSignal; release?: () => void } {
  if (typeof AbortSignal.timeout === 'function') return { signal: AbortSignal.timeout(ms) }
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(timeoutError()), ms)
  return { signal: controller.signal, release: () => clearTimeout(timer) }
}

/**
 * A signal that aborts when any of `signals` does. `AbortSignal.any` where the platform has it
 * (Safari before 17.4 does not); otherwise by hand, its listeners taken off by `release`.
 */
export function anySignal(signals: AbortSignal[]): { signal: AbortSignal; release?: () => void } {
  if (typeof AbortSignal.any === 'function') return { signal: AbortSignal.any(signals) }
  const combined = new AbortController()
  const onAbort = (e: Event) => {
    release()
    combined.abort((e.target as AbortSignal).reason)
  }
  let released = false
  const release = () => {
    if (released) return
    released = true
    for (const s of signals) s.removeEventListener('abort', onAbort)
  }
  for (const s of signals) {
    if (s.aborted) {
      combined.abort(s.reason)
      return { signal: combined.signal }
    }
  }
  for (const s of signals) s.addEventListener('abort', onAbort)
  return { signal: combined.signal, release }
}

export { NexusProblem }
