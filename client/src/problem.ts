import type { ProblemType } from '../../workers/lib/problem.ts'
import type { Schemas } from './api.gen.ts'

/** The `type` URIs Nexus uses all start with this; the rest is the slug clients switch on. */
export const PROBLEM_PREFIX = 'urn:nexus:problem:'

export type { ProblemType }

/**
 * A failure the server reported as RFC 9457 problem+json. `problem` is the stable slug
 * (`'rate-limited'`, `'not-found'`, …); `body` keeps every extension member.
 *
 * @example
 * try { await nexus.leaderboards.submit('daily', { score: 10 }) }
 * catch (e) { if (e instanceof NexusProblem && e.problem === 'rate-limited') showCooldown(e.retryAfter) }
 */
export class NexusProblem extends Error {
  readonly problem: ProblemType | 'unknown'
  readonly type: string
  readonly title: string
  readonly status: number
  readonly detail: string | undefined
  /** The server's id of the request that got this answer: its log line has it. */
  readonly requestId: string | undefined
  /**
   * The id this client sent with the call (`x-request-id`, the same for each of its retries),
   * which the server logs beside its own as `clientRequestId`: set on errors the client made.
   */
  clientRequestId?: string
  readonly errors: { path: string; message: string }[]
  /** Seconds the server asked the client to wait (`retryAfter` member or `Retry-After`). */
  readonly retryAfter: number | undefined
  readonly body: Schemas['Problem'] & Record<string, unknown>
  /**
   * From `leaderboards.submit`: the submission's idempotency key. Submit again with it
   * (`{ idempotencyKey }`) to have a submission that may have been applied answered, not applied
   * twice.
   */
  idempotencyKey?: string

  constructor(
    body: Schemas['Problem'] & Record<string, unknown>,
    retryAfterHeader?: string | null,
  ) {
    super(body.detail ?? body.title)
    this.name = 'NexusProblem'
    this.body = body
    this.type = body.type
    this.problem = body.type.startsWith(PROBLEM_PREFIX)
      ? (body.type.slice(PROBLEM_PREFIX.length) as ProblemType)
      : 'unknown'
    this.title = body.title
    this.status = body.status
    this.detail = body.detail
    this.requestId = body.requestId
    this.errors = body.errors ?? []
    const fromBody = typeof body.retryAfter === 'number' ? body.retryAfter : undefined
    this.retryAfter = fromBody ?? retryAfterSeconds(retryAfterHeader)
  }
}

/**
 * A `Retry-After` header in seconds: a number of seconds, or an HTTP date (RFC 9110 §10.2.3; a
 * proxy's or a rate-limiting rule's answer may send either), read against the device's clock.
 */
function retryAfterSeconds(header: string | null | undefined): number | undefined {
  if (!header) return undefined
  const seconds = Number(header)
  if (Number.isFinite(seconds)) return Math.max(0, seconds)
  const at = Date.parse(header)
  if (!Number.isFinite(at)) return undefined
  return Math.max(0, Math.ceil((at - Date.now()) / 1000))
}

/** The request never got an answer (network down, timeout, aborted, socket refused). */
export class NexusNetworkError extends Error {
  /**
   * From `leaderboards.submit`: the submission's idempotency key. Its answers were lost, so it
   * may have been applied: submit again with this key (`{ idempotencyKey }`), now or after a
   * restart, and it is applied once.
   */
  idempotencyKey?: string
  /**
   * The id this client sent with the call (`x-request-id`, the same for each of its retries):
   * the server logs it as `clientRequestId` for every attempt that reached it, so an answer lost
   * on the way back can be found.
   */
  clientRequestId?: string

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'NexusNetworkError'
  }
}

/**
 * `err` again as an error object of its own, of the same class, with `idempotencyKey` set: the
 * error a request rejects with may be shared with other requests (a token renewal that every
 * waiting request rejects with), and a key set on it would be the last submission's for all.
 */
export function withIdempotencyKey<E extends NexusProblem | NexusNetworkError>(
  err: E,
  key: string,
): E {
  const copy =
    err instanceof NexusProblem
      ? new NexusProblem(err.body, err.retryAfter === undefined ? null : String(err.retryAfter))
      : new NexusNetworkError(err.message, { cause: err.cause })
  copy.stack = err.stack
  copy.idempotencyKey = key
  if (err.clientRequestId !== undefined) copy.clientRequestId = err.clientRequestId
  return copy as E
}

/** A problem+json body from an arbitrary answer; null when it is not one. */
export async function readProblem(res: Response): Promise<NexusProblem | null> {
  const type = res.headers.get('content-type') ?? ''
  if (!type.includes('json')) return null
  let body: unknown
  try {
    body = await res.json()
  } catch {
    return null
  }
  if (
    typeof body === 'object' &&
    body !== null &&
    typeof (body as { type?: unknown }).type === 'string' &&
    typeof (body as { status?: unknown }).status === 'number'
  ) {
    return new NexusProblem(body as Schemas['Problem'], res.headers.get('retry-after'))
  }
  return null
}

/** A problem for an answer that was not problem+json (a proxy's HTML error page, say). */
export function unexpectedAnswer(
  res: Response,
  detail = `HTTP ${res.status} without a problem+json body`,
): NexusProblem {
  return new NexusProblem(
    {
      type: 'about:blank',
      title: res.statusText || 'Unexpected response',
      status: res.status,
      detail,
    },
    // Its pause is the server's (a Cloudflare rate-limiting rule's page), whatever its body.
    res.headers.get('retry-after'),
  )
}

/**
 * The 422 the server gives for `path`, for a refusal the SDK can only infer (a browser hides a
 * refused socket upgrade's answer).
 */
export function validationProblem(detail: string, path: string, message: string): NexusProblem {
  return new NexusProblem({
    type: 'urn:nexus:problem:validation',
    title: 'Validation failed',
    status: 422,
    detail,
    errors: [{ path, message }],
  })
}

/** An error that says nothing about the resource asked for: the network, or the server failing for now. */
export function isTransient(err: unknown): boolean {
  if (err instanceof NexusNetworkError) return true
  return err instanceof NexusProblem && retriable(err.status)
}

/**
 * How long the server asked for before the next try (a 429's or 503's `Retry-After`), in
 * milliseconds; 0 when it did not say.
 */
export function retryAfterMs(err: unknown): number {
  if (!(err instanceof NexusProblem) || err.retryAfter === undefined) return 0
  // At most a minute: a loop that waits for a ticket or a seat has less than that to lose, and
  // a clock behind the server's would read an HTTP date as far off.
  return Math.min(spreadRetryAfter(err.retryAfter * 1000), MAX_RETRY_AFTER_MS)
}

/**
 * A pause the server asked for, lengthened by up to half again at random: every client an
 * overloaded or restarting object answered in the same second was told the same pause, and
 * taken exactly they would all come back in the same instant, again and again.
 */
export function spreadRetryAfter(ms: number): number {
  return ms + (Math.random() * ms) / 2
}

/** The longest the SDK's own loops wait for a Retry-After (retryAfterMs). */
export const MAX_RETRY_AFTER_MS = 60_000

/** An answer worth asking again for: too many requests, or the server failing for now. */
export function retriable(status: number): boolean {
  return status === 429 || status === 500 || status === 502 || status === 503 || status === 504
}
