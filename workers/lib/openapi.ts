import { createRoute as createOpenApiRoute, OpenAPIHono, z } from '@hono/zod-openapi'
import type { RouteConfig } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { ApiError, PROBLEM_TYPE_PREFIX, problemTypes } from './problem.ts'

/** At most this many validation issues are reported, so an error body stays small. */
const MAX_REPORTED_ISSUES = 20

/** The OpenAPI security requirement of a route that takes `Authorization: Bearer`. */
export const BEARER: Record<string, string[]>[] = [{ bearer: [] }]
/**
 * The credentials OpenAPI can declare for a WebSocket route: the header, or `?token=` (kept for
 * older clients; the subprotocol token browsers send cannot be declared).
 */
export const BEARER_OR_QUERY_TOKEN: Record<string, string[]>[] = [{ bearer: [] }, { token: [] }]

const authenticating = new WeakSet<object>()
const authenticatingSometimes = new WeakSet<object>()

/** Marks a middleware that requires a credential, so routes using it say so in the OpenAPI document. */
export function requiresCredential<T extends object>(middleware: T): T {
  authenticating.add(middleware)
  return middleware
}

/** Marks a middleware that requires a credential for some requests only (`me` in the path). */
export function mayRequireCredential<T extends object>(middleware: T): T {
  authenticatingSometimes.add(middleware)
  return middleware
}

/**
 * `createRoute` that declares `security: bearer` for every route whose middleware requires a
 * credential, so the document cannot drift from what the routes enforce. A route that checks
 * its credential itself (sockets, session reads) sets `security` explicitly.
 */
export function createRoute<P extends string, R extends Omit<RouteConfig, 'path'> & { path: P }>(
  config: R,
) {
  const middleware = [config.middleware ?? []].flat().filter((m) => typeof m === 'function')
  const security = middleware.some((m) => authenticating.has(m))
    ? BEARER
    : middleware.some((m) => authenticatingSometimes.has(m))
      ? [{}, ...BEARER]
      : undefined
  let route = config.security === undefined && security ? ({ ...config, security } as R) : config
  // Every method that may carry a body has it judged before the route runs (`jsonBody`,
  // `bodyLimit`), whether or not the route reads one: a DELETE sent a body too.
  if (BODY_METHODS.has(config.method)) {
    const responses = { ...route.responses } as Record<number, unknown>
    for (const [status, response] of Object.entries(problemResponses(...BODY_STATUSES))) {
      responses[Number(status)] ??= response
    }
    route = { ...route, responses } as R
  }
  return createOpenApiRoute(route)
}

const BODY_METHODS = new Set(['post', 'put', 'patch', 'delete'])
/** A body that is not JSON (400), too large (413), or of another type or charset (415). */
const BODY_STATUSES = [400, 413, 415]

/**
 * A router for one resource. Request validation failures become 422 `validation` problems that
 * name each failing field.
 *
 * @example
 * export const players = newRouter()
 * players.openapi(putPlayerRoute, handler)
 */
export function newRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, _c: Context<AppEnv>) => {
      if (!result.success) {
        const errors = result.error.issues.slice(0, MAX_REPORTED_ISSUES).map((i) => ({
          path: i.path.map(String).join('.'),
          message: i.message,
        }))
        const where = result.target === 'json' ? 'body' : result.target
        const first = errors[0]
        throw new ApiError(
          'validation',
          first
            ? `Invalid ${where}: ${first.path || '(root)'}: ${first.message}`
            : `Invalid ${where}`,
          { errors },
        )
      }
    },
  })
}

/**
 * A whole number in a URL (path or query), in plain decimal digits. `1e1`, `0x2`, `1.0` or ` 3`
 * are refused rather than read as other numbers, as `z.coerce.number()` would read them.
 * @example query: z.object({ from: decimalInt(1, 1e9).default(1) })
 */
export function decimalInt(min: number, max: number) {
  return z
    .string()
    .regex(/^(0|[1-9][0-9]{0,15})$/, 'a whole number in decimal digits')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max))
    .openapi({ type: 'integer', minimum: min, maximum: max })
}

/** The problem+json schema, shared by every route's error responses in the OpenAPI document. */
export const Problem = z
  .object({
    type: z.string().openapi({
      example: `${PROBLEM_TYPE_PREFIX}validation`,
      pattern: `^${PROBLEM_TYPE_PREFIX}[a-z-]+$`,
      description:
        `\`${PROBLEM_TYPE_PREFIX}\` and one of: ${Object.keys(problemTypes).join(', ')} ` +
        '(see docs/problems.md); clients switch on it',
    }),
    title: z.string().openapi({ description: 'Fixed for each type' }),
    status: z.number().int(),
    detail: z.string().optional().openapi({ description: 'What went wrong this time' }),
    requestId: z
      .string()
      .optional()
      .openapi({ description: 'Finds the request in the logs (also the x-request-id header)' }),
    errors: z
      .array(z.object({ path: z.string(), message: z.string() }))
      .optional()
      .openapi({ description: 'validation: each failing field' }),
    retryAfter: z
      .number()
      .int()
      .min(1)
      .optional()
      .openapi({ description: 'rate-limited: seconds to wait before retrying (as Retry-After)' }),
    players: z.array(z.string()).optional().openapi({
      description:
        'conflict: the players who already hold a ticket in the queue, or joined it elsewhere meanwhile',
    }),
    region: z
      .string()
      .optional()
      .openapi({ description: 'conflict: the region of the queue where the player already waits' }),
    ticketId: z.string().optional().openapi({
      description: "conflict: the caller's waiting ticket in another region",
    }),
    ticketStatus: z
      .enum(['waiting', 'matching', 'matched', 'expired'])
      .optional()
      .openapi({
        description:
          "conflict: the named ticket's state. A cancel refused: why it can no longer be " +
          'cancelled; a join refused for a ticket in another region: `waiting` (cancel it to ' +
          'join here) or `matching` (its match comes instead)',
      }),
    partyId: z.string().optional().openapi({
      description: 'conflict: the party the caller is already in, or whose members changed',
    }),
    cycle: z.number().int().optional().openapi({
      description:
        "conflict: the board's current cycle (a cursor of another cycle; closing a cycle that is neither current nor closed)",
    }),
    limit: z
      .number()
      .int()
      .optional()
      .openapi({
        description:
          "conflict: the most members and pending invites a party can have, bans a board keeps, or players a board's cycle holds (maxEntries). " +
          'unavailable: the waiting tickets or sockets a full matchmaking pool holds at most',
      }),
    next: z
      .string()
      .optional()
      .openapi({
        description:
          'unavailable, of an account ban or its lifting whose walk met `boards` it could not reach: ' +
          'the walk goes on with `after` = next, and `boards` are reached by sending this call (its own `after`) again later',
      }),
    member: z.boolean().optional().openapi({
      description: 'conflict: the player invited is already a member of the party',
    }),
    invitable: z.boolean().optional().openapi({
      description: 'conflict (false): the player invited cannot join a party (banned or erased)',
    }),
    accountBan: z.boolean().optional().openapi({
      description:
        "conflict: a board's ban not lifted while the player's account ban stands (lift that first)",
    }),
    rules: z.string().optional().openapi({
      description:
        'conflict: the rules a queue plays that this version of Nexus does not have (with paused: true): it takes no tickets until an admin points it at other rules',
    }),
    erased: z.boolean().optional().openapi({
      description:
        'forbidden (true): the player was erased, and the session takes nothing of theirs again',
    }),
    archivedRowsCleared: z.number().int().optional().openapi({
      description:
        "unavailable: the archived standings whose name an erasure's last call cleared, more being left; send the same call again",
    }),
    sessions: z.array(z.string()).optional().openapi({
      description:
        'unavailable: the live sessions an erasure could not reach (the first 100); send the same call again',
    }),
    paused: z
      .boolean()
      .optional()
      .openapi({
        description:
          'conflict: the queue or leaderboard is paused by its admin and takes no tickets or scores now ' +
          '(false: a deletion refused because it is in play)',
      }),
    busy: z.boolean().optional().openapi({
      description:
        'conflict: a deletion refused for a moment (the board writing to Neon, or the row held by a change); retry after Retry-After',
    }),
    closing: z.number().int().optional().openapi({
      description: "conflict: a board deletion refused while this closed cycle's archive runs",
    }),
    entries: z.number().int().optional().openapi({
      description:
        "conflict: the live cycle's entries a board deletion would discard while in play",
    }),
    version: z
      .number()
      .int()
      .nullable()
      .optional()
      .openapi({
        description:
          "conflict: the board's configuration version a PUT saved while its deletion ran. " +
          'precondition-failed: the version in force, its `ETag` (null: there is none)',
      }),
    queues: z
      .array(z.string())
      .optional()
      .openapi({
        description:
          'conflict: the queues that send results to a board being deleted, or whose PUT sets ' +
          'bounds refusing a win (the first 100)',
      }),
    unpushedRegions: z.array(z.string()).optional().openapi({
      description:
        "conflict: the regions whose pool has not taken a queue's pause, refusing its deletion",
    }),
    boards: z.array(z.string()).optional().openapi({
      description:
        'unavailable: the boards an account ban, its lifting or an erasure could not reach (the first 100); send the same call again',
    }),
    pools: z.array(z.string()).optional().openapi({
      description:
        'unavailable: the queue pools (`queue/region`) an account ban or an erasure could not reach; send the same call again',
    }),
  })
  .openapi('Problem')

/**
 * Any route may answer these: 500 for a bug, 503 while a dependency is down (Postgres, or the
 * identity provider's keys for a route that reads a token; see docs/problems.md).
 */
const ALWAYS_POSSIBLE = [500, 503]

/**
 * A route's problem responses (the given statuses and those any route may give). A route that
 * reads a credential (it may answer 401) may also answer 429: a client past its allowance of
 * wrong admin keys is refused before any key is compared, whatever the route.
 */
export function problemResponses(...statuses: number[]) {
  const out: Record<
    number,
    { description: string; content: Record<string, { schema: typeof Problem }> }
  > = {}
  const credentialed = statuses.includes(401) ? [429] : []
  for (const s of [...statuses, ...credentialed, ...ALWAYS_POSSIBLE]) {
    out[s] = {
      description: 'A problem (RFC 9457)',
      content: { 'application/problem+json': { schema: Problem } },
    }
  }
  return out
}
