import type { MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { setResponseHeader } from '../lib/response-header.ts'
import { asOrigin } from './auth.ts'

/**
 * Headers a browser page may send: credentials, bodies, submission keys, fresh reads, and an
 * admin tool's precondition (on an origin in ADMIN_ORIGINS).
 */
const ALLOW_HEADERS = [
  'authorization',
  'content-type',
  'idempotency-key',
  'cache-control',
  'x-request-id',
  'if-match',
]
/** Headers a browser page may read from an answer (the rest of the safelist is readable anyway). */
const EXPOSE_HEADERS = [
  'x-request-id',
  'retry-after',
  'x-cache',
  'x-fresh-read',
  'allow',
  'etag',
  'location',
]
/** How long a browser may reuse a preflight's answer, seconds. */
const PREFLIGHT_MAX_AGE = 600
const ALLOW_METHODS = 'GET,POST,PUT,DELETE'

interface Policy {
  /** `*`: any origin may read answers. */
  any: boolean
  origins: ReadonlySet<string>
}

const policies = new Map<string, Policy>()

/**
 * The origins `CORS_ORIGINS` lets read answers, and those of `ADMIN_ORIGINS` with them: an admin
 * tool's page the key is allowed from must get past its browser's preflight too. Each is taken
 * as a browser names it in `Origin` (a setting written as a URL, with a trailing slash, capitals
 * or a default port, would otherwise match no page and fail every call from it).
 */
function policyOf(setting: string | undefined, adminSetting: string | undefined): Policy {
  const key = `${(setting ?? '*').trim() || '*'}\n${adminSetting ?? ''}`
  let policy = policies.get(key)
  if (!policy) {
    const list = (s: string) =>
      s
        .split(',')
        .map((o) => o.trim())
        .filter(Boolean)
    const origins = list((setting ?? '*').trim() || '*')
    policy = {
      any: origins.includes('*'),
      origins: new Set([...origins, ...list(adminSetting ?? '')].map(asOrigin)),
    }
    policies.set(key, policy)
  }
  return policy
}

/**
 * Lets browser games on other origins call the API: preflights (`OPTIONS`) are answered with what
 * may be sent, and every answer, errors included, says which origin may read it. `CORS_ORIGINS`
 * is `*` (the default: any origin) or a comma-separated list of origins
 * (`https://game.example.com`); an origin not on the list gets no `Access-Control-Allow-Origin`,
 * so its browser withholds the answer. Credentials are bearer tokens in a header, never cookies,
 * so `*` lends a page no access it does not hold a token for.
 *
 * Hono's own `cors` sets its headers on `c.res` before the route runs, which makes a placeholder
 * answer that Hono then copies the route's answer over (two more Responses and a header copy on
 * every request); these headers go on the route's answer once it exists.
 */
export function cors(): MiddlewareHandler<AppEnv> {
  return async function cors(c, next) {
    const policy = policyOf(c.env.CORS_ORIGINS, c.env.ADMIN_ORIGINS)
    const origin = c.req.header('origin') ?? ''
    const allowOrigin = policy.any ? '*' : policy.origins.has(origin) ? origin : null
    // A preflight is a browser's OPTIONS naming the method it means to send; any other OPTIONS
    // goes on to the routes, where a known path answers with its methods (`Allow`).
    if (c.req.method === 'OPTIONS' && c.req.header('access-control-request-method') !== undefined) {
      if (allowOrigin) c.header('access-control-allow-origin', allowOrigin)
      c.header('access-control-expose-headers', EXPOSE_HEADERS.join(','))
      if (!policy.any) c.header('vary', 'Origin', { append: true })
      c.header('access-control-max-age', String(PREFLIGHT_MAX_AGE))
      c.header('access-control-allow-methods', ALLOW_METHODS)
      c.header('access-control-allow-headers', ALLOW_HEADERS.join(','))
      c.header('vary', 'Access-Control-Request-Headers', { append: true })
      return c.body(null, 204)
    }
    await next()
    if (allowOrigin) setResponseHeader(c, 'access-control-allow-origin', allowOrigin)
    setResponseHeader(c, 'access-control-expose-headers', EXPOSE_HEADERS.join(','))
    if (!policy.any) setResponseHeader(c, 'vary', 'Origin', true)
  }
}
