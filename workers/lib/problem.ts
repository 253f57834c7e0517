import type { ContentfulStatusCode } from 'hono/utils/http-status'
import { NoAnswerInTime } from './within.ts'

/**
 * Every failure Nexus reports, by its stable problem `type` slug. Clients switch on `type`;
 * `title` is fixed per type, `detail` varies per occurrence. Documented in docs/problems.md.
 */
export const problemTypes = {
  'malformed-json': { status: 400, title: 'Malformed JSON' },
  'bad-request': { status: 400, title: 'Bad request' },
  unauthorized: { status: 401, title: 'Unauthorized' },
  'token-expired': { status: 401, title: 'Token expired' },
  forbidden: { status: 403, title: 'Forbidden' },
  'not-found': { status: 404, title: 'Not found' },
  'method-not-allowed': { status: 405, title: 'Method not allowed' },
  conflict: { status: 409, title: 'Conflict' },
  'precondition-failed': { status: 412, title: 'Precondition failed' },
  'idempotency-key-reused': {
    status: 422,
    title: 'Idempotency key reused with a different request',
  },
  'payload-too-large': { status: 413, title: 'Payload too large' },
  'unsupported-media-type': { status: 415, title: 'Unsupported media type' },
  validation: { status: 422, title: 'Validation failed' },
  'rate-limited': { status: 429, title: 'Too many requests' },
  'guest-auth-disabled': { status: 403, title: 'Guest authentication is disabled' },
  internal: { status: 500, title: 'Internal error' },
  unavailable: { status: 503, title: 'Service unavailable' },
} as const satisfies Record<string, { status: ContentfulStatusCode; title: string }>

export type ProblemType = keyof typeof problemTypes

/** The URI prefix of every problem `type`; stable across deployments. */
export const PROBLEM_TYPE_PREFIX = 'urn:nexus:problem:'

export interface ProblemBody {
  type: string
  title: string
  status: number
  detail?: string
  instance?: string
  requestId?: string
  [extension: string]: unknown
}

/**
 * A failure that the error funnel renders as RFC 9457 problem+json. Handlers throw it; nothing
 * else builds error responses.
 *
 * @example
 * throw new ApiError('not-found', `No leaderboard '${id}'`)
 * throw new ApiError('rate-limited', 'Slow down', { retryAfter: 12 })
 */
export class ApiError extends Error {
  readonly problem: ProblemType
  readonly status: ContentfulStatusCode
  readonly extensions: Record<string, unknown>
  readonly headers: Record<string, string>

  constructor(
    problem: ProblemType,
    detail?: string,
    extensions: Record<string, unknown> = {},
    headers: Record<string, string> = {},
  ) {
    super(detail ?? problemTypes[problem].title)
    this.name = 'ApiError'
    this.problem = problem
    this.status = problemTypes[problem].status
    this.extensions = extensions
    this.headers = headers
  }
}

/** Builds the problem+json body for a failure of the given type. */
export function problemBody(
  problem: ProblemType,
  detail: string | undefined,
  extensions: Record<string, unknown> = {},
): ProblemBody {
  const { status, title } = problemTypes[problem]
  return {
    type: PROBLEM_TYPE_PREFIX + problem,
    title,
    status,
    ...(detail !== undefined && detail !== title ? { detail } : {}),
    ...extensions,
  }
}

/** A problem+json Response, for places outside Hono's context (Durable Object upgrades). */
/**
 * The Retry-After of a 503 for a database that cannot be reached: 5 to 15 s, spread, so that
 * clients told it at once do not all come back in the same second (the SDK's waiting loops,
 * matchmaking's and a game's reconnects, wait what they are told, and its single requests give
 * up at once, with `retryAfter`, where they would retry within seconds: an outage of hours was
 * thousands of polls a second that all landed on the database the moment it returned).
 */
export function databaseRetryAfter(): Record<string, string> {
  return { 'retry-after': String(5 + Math.floor(Math.random() * 11)) }
}

/**
 * The Retry-After of a 503 for an overloaded Durable Object: 6 to 15 s, spread, past the SDK's
 * 5 s cap on retrying a single request by itself (it hands the error back instead). Cloudflare
 * says an overloaded object's calls are not to be retried: a retry in 2 s, as before, had every
 * client refused come back two or three times, near tripling the load that overloaded it.
 */
export function overloadedRetryAfter(): Record<string, string> {
  return { 'retry-after': String(6 + Math.floor(Math.random() * 10)) }
}

/**
 * Whether `err` is an object overloaded (the runtime's `overloaded`) or a call still out at its
 * deadline (`within`): load to shed, whose 503 asks for overloadedRetryAfter's pause.
 */
export function isLoadToShed(err: unknown): boolean {
  return (
    err instanceof NoAnswerInTime ||
    (err instanceof Error && (err as { overloaded?: boolean }).overloaded === true)
  )
}

export function problemResponse(
  problem: ProblemType,
  detail?: string,
  extensions: Record<string, unknown> = {},
  headers: Record<string, string> = {},
): Response {
  const body = problemBody(problem, detail, extensions)
  return new Response(JSON.stringify(body), {
    status: body.status,
    headers: { 'content-type': 'application/problem+json', ...headers },
  })
}

/** Fields of a problem body that are not its extensions. */
const STANDARD_FIELDS = new Set(['type', 'title', 'status', 'detail', 'instance', 'requestId'])

/**
 * The ApiError a `problemResponse` stands for, so a refusal built outside Hono (a Durable Object's
 * upgrade) reaches the client through the error funnel, with the request id, like any other.
 * Anything else is not a refusal but a fault, and is thrown as one.
 */
export async function apiErrorFrom(res: Response): Promise<ApiError> {
  const text = await res.text()
  let body: ProblemBody | undefined
  try {
    body = JSON.parse(text) as ProblemBody
  } catch {
    body = undefined
  }
  const slug = body?.type?.startsWith(PROBLEM_TYPE_PREFIX)
    ? body.type.slice(PROBLEM_TYPE_PREFIX.length)
    : ''
  if (!body || !Object.hasOwn(problemTypes, slug)) {
    throw new Error(`Expected a problem response, got ${res.status}: ${text.slice(0, 200)}`)
  }
  const extensions = Object.fromEntries(
    Object.entries(body).filter(([k]) => !STANDARD_FIELDS.has(k)),
  )
  const headers: Record<string, string> = {}
  res.headers.forEach((value, name) => {
    if (name !== 'content-type' && name !== 'content-length') headers[name] = value
  })
  return new ApiError(slug as ProblemType, body.detail, extensions, headers)
}

/**
 * An object's "unavailable now" thrown across RPC, where an error keeps its message only (not its
 * class): the Worker's error funnel answers it 503 with Retry-After, not 500.
 */
const UNAVAILABLE_MARK = '[nexus:unavailable] '

/** An error an object throws to have its caller answer 503 (see `isUnavailableAcrossRpc`). */
export function unavailableAcrossRpc(detail: string): Error {
  return new Error(UNAVAILABLE_MARK + detail)
}

/** The detail of an `unavailableAcrossRpc` error, or null for any other. */
export function unavailableAcrossRpcDetail(err: unknown): string | null {
  if (!(err instanceof Error) || !err.message.startsWith(UNAVAILABLE_MARK)) return null
  return err.message.slice(UNAVAILABLE_MARK.length)
}
