import type { Context, MiddlewareHandler } from 'hono'
import { matchedRoutes } from 'hono/route'
import type { AppEnv } from '../app-env.ts'
import { clippedPath, log } from '../lib/log.ts'
import { httpDuration, httpRequests } from '../lib/metrics.ts'
import { sendMetricsIfDue } from '../lib/metrics-flush.ts'

/**
 * One structured log line and one metrics observation per request, labelled by the matched
 * route pattern (never the raw path, which would make a series per player); then, once every
 * few seconds, this isolate's metrics go to the MetricsHub.
 *
 * @example
 * app.use(observe())
 */
export const observe = (): MiddlewareHandler<AppEnv> =>
  async function observe(c, next) {
    const started = performance.now()
    await next()
    // Workers freeze timers during I/O-free compute, so this is the wall time the isolate saw.
    const durationMs = performance.now() - started
    // A long-poll's time is the wait it asked for: among the route's other answers it would
    // make the route's p99 that wait, hiding a slowdown of the rest.
    const route = routeLabel(c) + (c.get('heldOpen') ? ' (held open)' : '')
    const status = c.res.status
    httpRequests.inc({ method: c.req.method, route, status })
    httpDuration.observe({ method: c.req.method, route, status }, durationMs / 1000)
    const sending = sendMetricsIfDue(c.env)
    if (sending) c.executionCtx.waitUntil(sending)
    const principal = c.get('principal')
    const problem = c.get('problem')
    const key = c.req.header('idempotency-key')
    const idempotencyKey = key && key.length <= 128 && /^[\w.:=-]+$/.test(key) ? key : undefined
    // A refusal support is asked about ("my score didn't count": a ban, a paused board, a full
    // cycle) is kept at `warn`, which production runs at scale: a write of a player's, or a game
    // server's for one, outside the admin routes. 401s, 429s, reads (a stale cursor's 409) and
    // a player knocking on admin routes, which bots and floods make by the thousand, stay at
    // `info`.
    const refusalToLook = (status === 403 || status === 409) && c.req.method !== 'GET'
    const byPlayer = principal !== undefined && !route.startsWith('/v1/admin')
    // A 503 is a service out of reach, an object restarting or shedding load (every deploy makes
    // some): `warn`, as its cause is logged. `error` is for faults an operator should look into.
    const level =
      status >= 500 && status !== 503
        ? 'error'
        : status === 503 || (refusalToLook && byPlayer)
          ? 'warn'
          : 'info'
    log(level, 'request', {
      requestId: c.get('requestId'),
      clientRequestId: c.get('clientRequestId'),
      // Cloudflare's own id of the invocation: its logs (a CPU limit's kill, which writes nothing
      // of ours) join this line by it.
      cfRay: c.req.header('cf-ray'),
      method: c.req.method,
      route,
      path: clippedPath(c.req.path),
      status,
      durationMs: Math.round(durationMs * 100) / 100,
      player: principal?.kind === 'player' ? principal.playerId : principal?.kind,
      ...(problem ? { problem: problem.type, detail: problem.detail } : {}),
      ...(idempotencyKey ? { idempotencyKey } : {}),
    })
  }

/** The pattern of the handler that answered (not of a middleware), or 'unmatched'. */
function routeLabel(c: Context<AppEnv>): string {
  const routes = matchedRoutes(c)
  for (let i = routes.length - 1; i >= 0; i--) {
    const r = routes[i]!
    if (r.method !== 'ALL') return r.path
  }
  return 'unmatched'
}
