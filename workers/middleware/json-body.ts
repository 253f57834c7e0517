import type { Context, MiddlewareHandler } from 'hono'
import { matchedRoutes } from 'hono/route'
import type { AppEnv } from '../app-env.ts'
import { ApiError } from '../lib/problem.ts'

const BODY_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])

/** Whether the request carries a body of at least one byte, as `jsonBody` found when it ran. */
export function hasBody(c: Context<AppEnv>): boolean {
  return c.get('bodyPresent') === true
}

/**
 * A body of at least one byte, however it was framed: a positive Content-Length, or a streamed
 * (chunked) body that turns out not to be empty. `bodyLimit` has already buffered a streamed
 * body, so reading it here costs no more than the validators reading it would.
 */
async function carriesBody(c: Context<AppEnv>): Promise<boolean> {
  if (!BODY_METHODS.has(c.req.method) || c.req.raw.body === null) return false
  const length = c.req.header('content-length')
  if (length !== undefined) return Number(length) > 0
  return (await c.req.arrayBuffer()).byteLength > 0
}

/**
 * Every request body Nexus accepts is JSON: a body of another type is 415, and a body that is
 * not valid JSON is 400 `malformed-json`, before any handler or validator runs. Parsing here
 * also fills Hono's body cache, so validators do not parse twice. Every PUT replaces a
 * resource with its body, so a PUT without one is 422: the validators would read it as `{}`,
 * which for a leaderboard is "every setting back to its default".
 */
/**
 * JSON media types, exactly as @hono/zod-openapi's media-type gate takes them on routes with a
 * body schema, so that every route takes the same ones: `application/json` or a `+json` type
 * with lowercase letters, dots and dashes before the `+`, then parameters (`; charset=utf-8`).
 */
const JSON_MEDIA_TYPE = /^application\/([a-z-.]+\+)?json(;\s*[a-zA-Z0-9-]+=([^;]+))*$/i
/**
 * Patch documents are JSON too, but not the resource: a PUT takes the whole resource, and a
 * merge patch taken as one (`{"paused": true}`) would put every other setting back to its default.
 */
const PATCH_MEDIA_TYPE = /^application\/(merge-patch|json-patch)\+json\b/i
/** The `charset` parameter of a media type, unquoted and lowercased; null without one. */
function charsetOf(type: string): string | null {
  const match = /;\s*charset=("?)([^;"]*)\1\s*(;|$)/i.exec(type)
  return match ? match[2]!.trim().toLowerCase() : null
}

export const jsonBody = (): MiddlewareHandler<AppEnv> =>
  async function jsonBody(c, next) {
    // A path no route answers for this method is 404 or 405, whatever its body: judging the
    // body first would answer a typo's or a wrong method's request with 415 or 422.
    if (!routed(c)) return next()
    const present = await carriesBody(c)
    c.set('bodyPresent', present)
    if (c.req.method === 'PUT' && !present) {
      throw new ApiError('validation', 'A PUT needs a JSON body: the whole resource', {
        errors: [{ path: '(body)', message: 'required' }],
      })
    }
    if (present) {
      const type = c.req.header('content-type') ?? ''
      if (!JSON_MEDIA_TYPE.test(type) || PATCH_MEDIA_TYPE.test(type)) {
        throw new ApiError(
          'unsupported-media-type',
          `Request bodies must be application/json, not '${type.slice(0, 100) || 'none'}'`,
        )
      }
      // RFC 8259: JSON between systems is UTF-8. Another charset's bytes read as UTF-8 would
      // store mangled text (Latin-1's é as U+FFFD) or fail as malformed JSON that is not.
      const charset = charsetOf(type)
      if (charset !== null && charset !== 'utf-8' && charset !== 'utf8') {
        throw new ApiError(
          'unsupported-media-type',
          `Request bodies must be UTF-8, not '${charset.slice(0, 40)}'`,
        )
      }
      let body: unknown
      try {
        body = await c.req.json()
      } catch (err) {
        if (err instanceof ApiError) throw err
        throw new ApiError('malformed-json', 'The request body is not valid JSON')
      }
      // No DELETE takes input: a body is refused rather than ignored, as noBodyFields does.
      if (c.req.method === 'DELETE') refuseFields(body)
    }
    await next()
  }

/** Whether a route (not only middleware) answers this request's method and path. */
export function routed(c: Context<AppEnv>): boolean {
  return matchedRoutes(c).some((r) => r.method !== 'ALL')
}

/** 422 for a body that is not `{}`, naming its fields. */
function refuseFields(body: unknown): void {
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

/**
 * For a POST that takes no input (form a party, accept an invite): no body, or `{}`. A field
 * sent anyway is a 422 naming it, so a client that thinks it is passing something learns that
 * it is not. The body was parsed by `jsonBody` already.
 */
export const noBodyFields = (): MiddlewareHandler<AppEnv> =>
  async function noBodyFields(c, next) {
    if (hasBody(c)) refuseFields(await c.req.json())
    await next()
  }
