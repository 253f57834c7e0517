import { z } from '@hono/zod-openapi'
import { checkJson, NOT_STORABLE_REASON, storableText } from '../core/rules/json.ts'
import type { JsonLimits } from '../core/rules/json.ts'

/*
 * Field schemas shared by the routes and the protocol messages, which the client SDK's types are
 * inferred from: nothing here imports the Worker or the Durable Objects, so a browser game
 * typechecking the SDK does not need the Workers runtime's types.
 */

/**
 * A free-form JSON field (metadata, a reward, rules options): plain JSON that PostgreSQL can
 * store, at most `limits.maxBytes` of UTF-8 and `limits.maxDepth` levels deep. The walk is
 * iterative and stops at the first bound crossed, so hostile nesting is a 422, never a stack
 * overflow in a check or in the hashing and storing after it.
 * @example const Metadata = boundedJson(z.record(z.string(), z.unknown()), { maxBytes: 4096, maxDepth: 8 })
 */
export function boundedJson<T extends z.ZodType>(schema: T, limits: JsonLimits) {
  return schema.superRefine((value, ctx) => {
    const checked = checkJson(value, limits)
    if (!checked.ok) ctx.addIssue({ code: 'custom', message: checked.reason })
  })
}

/**
 * A JSON object whose keys and values `record` checks, with a `__proto__` key refused: zod's copy
 * of the object drops that key, so it would vanish without a word. `openapi` describes the object
 * in the OpenAPI document (the check runs on the raw input, which the document would otherwise
 * show as unknown).
 * @example const Attributes = objectRecord(z.record(z.string().max(32), z.string()), { type: 'object' })
 */
export function objectRecord<T extends z.ZodType>(record: T, openapi: Record<string, unknown>) {
  return z
    .unknown()
    .openapi(openapi)
    .superRefine((v, ctx) => {
      if (typeof v === 'object' && v !== null && Object.hasOwn(v, '__proto__')) {
        ctx.addIssue({
          code: 'custom',
          path: ['__proto__'],
          message: '"__proto__" cannot be a key',
        })
      }
    })
    .pipe(record)
}

/**
 * A client's key for one logical write (a score submission, a matchmaking join), sent again
 * unchanged with every retry of it.
 */
export const IdempotencyKey = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')

/**
 * Control characters (line breaks, tabs, escapes, C1) and the line and paragraph separators
 * (U+2028, U+2029, which are not controls but break a line as one): they break any UI that
 * shows a name.
 */
const CONTROL = /[\p{Cc}\p{Zl}\p{Zp}]/u
/**
 * Bidirectional embeddings, overrides and isolates: they reorder the text after them, so a name
 * holding U+202E reads backwards, and can make a label (a ranking, an admin's table) say what
 * it does not. Joiners and the plain direction marks stay (emoji sequences, names in RTL scripts).
 */
const BIDI_CONTROL = /[\u202A-\u202E\u2066-\u2069]/u
/**
 * A character that shows: not whitespace, control or format (zero-width, bidi marks), not a
 * combining mark (which needs a character to sit on), and not one of the letters and symbols
 * fonts draw as blank (the Hangul fillers, the blank Braille pattern).
 */
const VISIBLE = /[^\p{Z}\p{Cc}\p{Cf}\p{M}\u115F\u1160\u3164\uFFA0\u2800]/u

/**
 * A name people see (a player's, a board's): 1–64 characters (code points, as JSON Schema's
 * `maxLength` counts them: an emoji is one) after trimming, and it shows.
 */
export const DisplayName = z
  .string()
  .trim()
  .min(1)
  // 64 code points are at most 128 UTF-16 units: longer is refused before it is counted.
  .max(128, 'at most 64 characters')
  .refine((s) => [...s].length <= 64, 'at most 64 characters')
  .refine(storableText, NOT_STORABLE_REASON)
  .refine((s) => !CONTROL.test(s), 'names must not contain control characters')
  .refine((s) => !BIDI_CONTROL.test(s), 'names must not contain bidirectional overrides')
  .refine((s) => VISIBLE.test(s), 'names must contain a visible character')
  .openapi({ minLength: 1, maxLength: 64 })

/**
 * Whether `key` is a name every plain object already answers for (`__proto__`, `constructor`,
 * `toString`…). Player ids key plain objects all through (claims, session tokens, rules' states
 * parsed from JSON), where such a name reads the prototype's member, or is dropped when written.
 */
export function isPrototypeKey(key: string): boolean {
  return key in Object.prototype
}

/** Player ids: opaque, printable, bounded. */
export const PlayerId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[\x21-\x7e]+$/, 'printable ASCII without spaces')
  .openapi({ example: 'g_3f2a9c1e-7b1d-4c55-9e0a-1c3b5d7f9a2b' })

/**
 * A player id where a game server or an admin may bring a player into being (a submission, a
 * create, a join or a session for them): never `me`, which names the caller in this API's paths,
 * so a player `me` could not have their own standing or history read. (Tokens with the subject
 * `me` are refused too.) Routes that only look a player up take any PlayerId, so a row of the
 * version before is still reachable.
 */
export const NewPlayerId = PlayerId.refine(
  (id) => id !== 'me',
  '"me" names the caller, not a player',
)
  .refine(
    (id) => id !== '.' && id !== '..',
    '"." and ".." are path steps: no admin route could name such a player',
  )
  .refine(
    (id) => !isPrototypeKey(id),
    'a name every JavaScript object has (such as "constructor" or "__proto__") is not a player id',
  )

/** Names of resources chosen by admins (leaderboards, queues): URL-safe and bounded. */
export const ResourceId = z
  .string()
  .min(1)
  .max(64)
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_.-]*$/,
    'letters, digits, "_", "." and "-", starting with a letter or digit',
  )
