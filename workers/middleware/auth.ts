import type { Context, MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { authenticate, bearer, isMetricsToken, type Principal } from '../lib/auth.ts'
import { mayRequireCredential, requiresCredential } from '../lib/openapi.ts'
import { ApiError } from '../lib/problem.ts'

async function principalOf(c: Context<AppEnv>): Promise<Principal> {
  const existing = c.get('principal')
  if (existing) return existing
  const credential = bearer(c.req.header('authorization'))
  if (!credential) {
    throw new ApiError('unauthorized', 'Send "Authorization: Bearer <token>"')
  }
  const principal = await authenticate(c.env, credential)
  c.set('principal', principal)
  return principal
}

/**
 * Requires a player token or the admin key (a game server acting for players).
 *
 * @example
 * scores.post('/:id/scores', requirePrincipal(), handler)
 */
export const requirePrincipal = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requirePrincipal(c, next) {
    await principalOf(c)
    await next()
  })

/** Requires a player token; the admin key is refused with 403. */
export const requirePlayer = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requirePlayer(c, next) {
    const p = await principalOf(c)
    if (p.kind !== 'player') throw new ApiError('forbidden', 'This route is for players')
    await next()
  })

/** Requires a player token when the path's `playerId` is `me`; other ids are public reads. */
export const requirePlayerForMe = (): MiddlewareHandler<AppEnv> =>
  mayRequireCredential(async function requirePlayerForMe(c, next) {
    if (c.req.param('playerId') === 'me') return requirePlayer()(c, next)
    await next()
  })

/** Requires the admin key; a player token is refused with 403. */
export const requireAdmin = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requireAdmin(c, next) {
    const p = await principalOf(c)
    if (p.kind !== 'admin') throw new ApiError('forbidden', 'This route needs the admin key')
    await next()
  })

/** The authenticated player's id; throws 403 for the admin key. */
export function playerId(c: Context<AppEnv>): string {
  const p = c.get('principal')
  if (p?.kind !== 'player') throw new ApiError('forbidden', 'This route is for players')
  return p.playerId
}

/**
 * Requires the metrics scrape token (METRICS_TOKEN), so a Prometheus config need not hold the
 * admin key, or the admin key itself; a player token is refused with 403.
 */
export const requireMetricsReader = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requireMetricsReader(c, next) {
    const credential = bearer(c.req.header('authorization'))
    if (credential && (await isMetricsToken(c.env, credential))) return next()
    const p = await principalOf(c)
    if (p.kind !== 'admin') {
      throw new ApiError('forbidden', '/metrics needs the metrics token or the admin key')
    }
    await next()
  })
