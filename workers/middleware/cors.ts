import type { MiddlewareHandler } from 'hono'
import { cors as honoCors } from 'hono/cors'
import type { AppEnv } from '../app-env.ts'

/** Headers a browser game may send: credentials, bodies, submission keys, fresh reads. */
const ALLOW_HEADERS = [
  'authorization',
  'content-type',
  'idempotency-key',
  'cache-control',
  'x-request-id',
]
/** Headers a browser game may read from an answer (the rest of the safelist is readable anyway). */
const EXPOSE_HEADERS = ['x-request-id', 'retry-after', 'x-cache', 'x-fresh-read', 'allow']
/** How long a browser may reuse a preflight's answer, seconds. */
const PREFLIGHT_MAX_AGE = 600

/**
 * Lets browser games on other origins call the API: preflights (`OPTIONS`) are answered with what
 * may be sent, and every answer, errors included, says which origin may read it. `CORS_ORIGINS`
 * is `*` (the default: any origin) or a comma-separated list of origins
 * (`https://game.example.com`); an origin not on the list gets no `Access-Control-Allow-Origin`,
 * so its browser withholds the answer. Credentials are bearer tokens in a header, never cookies,
 * so `*` lends a page no access it does not hold a token for.
 */
export function cors(): MiddlewareHandler<AppEnv> {
  const byList = new Map<string, MiddlewareHandler<AppEnv>>()
  return async (c, next) => {
    const setting = (c.env.CORS_ORIGINS ?? '*').trim() || '*'
    let handler = byList.get(setting)
    if (!handler) {
      const origins = setting
        .split(',')
        .map((o) => o.trim())
        .filter(Boolean)
      handler = honoCors({
        origin: origins.includes('*') ? '*' : origins,
        allowMethods: ['GET', 'POST', 'PUT', 'DELETE'],
        allowHeaders: ALLOW_HEADERS,
        exposeHeaders: EXPOSE_HEADERS,
        maxAge: PREFLIGHT_MAX_AGE,
      }) as MiddlewareHandler<AppEnv>
      byList.set(setting, handler)
    }
    return handler(c, next)
  }
}
