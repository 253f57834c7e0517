import type { MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { ApiError } from '../lib/problem.ts'

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH'])

/**
 * Whether a request carries a body: a positive Content-Length, or a streamed (chunked) body,
 * which has Transfer-Encoding and no length.
 */
export function hasBody(headers: Headers): boolean {
  const length = headers.get('content-length')
  if (length !== null) return Number(length) > 0
  return headers.has('transfer-encoding')
}

/**
 * Every request body Nexus accepts is JSON: a body of another type is 415, and a body that is
 * not valid JSON is 400 `malformed-json`, before any handler or validator runs. Parsing here
 * also fills Hono's body cache, so validators do not parse twice. Every PUT replaces a
 * resource with its body, so a PUT without one is 422: the validators would read it as `{}`,
 * which for a leaderboard is "every setting back to its default".
 */
export const jsonBody = (): MiddlewareHandler<AppEnv> =>
  async function jsonBody(c, next) {
    if (
      c.req.method === 'PUT' &&
      (c.req.raw.body === null || c.req.header('content-length') === '0')
    ) {
      throw new ApiError('validation', 'A PUT needs a JSON body: the whole resource', {
        errors: [{ path: '(body)', message: 'required' }],
      })
    }
    if (BODY_METHODS.has(c.req.method) && hasBody(c.req.raw.headers)) {
      const type = c.req.header('content-type') ?? ''
      if (!/^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i.test(type)) {
        throw new ApiError(
          'unsupported-media-type',
          `Request bodies must be application/json, not '${type.slice(0, 100) || 'none'}'`,
        )
      }
      try {
        await c.req.json()
      } catch (err) {
        if (err instanceof ApiError) throw err
        throw new ApiError('malformed-json', 'The request body is not valid JSON')
      }
    }
    await next()
  }

/**
 * For a POST that takes no input (form a party, accept an invite): no body, or `{}`. A field
 * sent anyway is a 422 naming it, so a client that thinks it is passing something learns that
 * it is not. The body was parsed by `jsonBody` already.
 */
export const noBodyFields = (): MiddlewareHandler<AppEnv> =>
  async function noBodyFields(c, next) {
    if (hasBody(c.req.raw.headers)) {
      const body: unknown = await c.req.json()
      const isObject = typeof body === 'object' && body !== null && !Array.isArray(body)
      const fields = isObject ? Object.keys(body).slice(0, 20) : []
      if (!isObject || fields.length > 0) {
        throw new ApiError('validation', 'This request takes no body: send none, or {}', {
          errors: isObject
            ? fields.map((path) => ({ path, message: 'unknown field' }))
            : [{ path: '(body)', message: 'must be {} or absent' }],
        })
      }
    }
    await next()
  }
