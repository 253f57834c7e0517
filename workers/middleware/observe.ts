import type { Context, MiddlewareHandler } from 'hono'
import { matchedRoutes } from 'hono/route'
import type { AppEnv } from '../app-env.ts'
import { log } from '../lib/log.ts'
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
    log(status >= 500 ? 'error' : 'info', 'request', {
      requestId: c.get('requestId'),
      clientRequestId: c.get('clientRequestId'),
      method: c.req.method,
      route,
      path: c.req.path,
      status,
      durationMs: Math.round(durationMs * 100) / 100,
      player: principal?.kind === 'player' ? principal.playerId : principal?.kind,
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
