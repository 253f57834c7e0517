/** Plain JSON values: what states, actions and events are made of. */
export type JsonValue =
  null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue }

/** Bounds for an untrusted JSON value. */
export interface JsonLimits {
  /** Maximum UTF-8 length of `JSON.stringify(value)`. */
  maxBytes: number
  /** Maximum nesting of arrays/objects; a scalar has depth 0, `[1]` depth 1. */
  maxDepth: number
}

export type JsonCheck =
  { ok: true; value: JsonValue; bytes: number } | { ok: false; tooLarge: boolean; reason: string }

/**
 * Check that an untrusted value is plain JSON within `limits`, and return a private deep copy.
 * The walk is iterative and stops as soon as a bound is crossed, so hostile input (deep nesting,
 * huge strings, cycles, non-finite numbers, class instances) costs little and cannot overflow the
 * stack.
 * @example checkJson({ x: [1, 2] }, { maxBytes: 4096, maxDepth: 16 }) // { ok: true, value, bytes: 11 }
 */
export function checkJson(value: unknown, limits: JsonLimits): JsonCheck {
  // A lower bound on the serialised size, so oversize input is refused before stringifying it.
  let atLeast = 0
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 0 }]
  while (stack.length > 0) {
    const { v, depth } = stack.pop() as { v: unknown; depth: number }
    if (v === null || typeof v === 'boolean') {
      atLeast += 4
    } else if (typeof v === 'number') {
      if (!Number.isFinite(v))
        return { ok: false, tooLarge: false, reason: 'numbers must be finite' }
      // Counted as jsonb writes it out (jsonbExtraBytes), what the archive holds and reads back.
      atLeast += 1 + jsonbExtraBytes(v)
    } else if (typeof v === 'string') {
      if (!storableText(v)) return { ok: false, tooLarge: false, reason: NOT_STORABLE_REASON }
      atLeast += v.length + 2
    } else if (typeof v === 'object') {
      if (depth >= limits.maxDepth) {
        return { ok: false, tooLarge: false, reason: `nested deeper than ${limits.maxDepth}` }
      }
      if (Array.isArray(v)) {
        atLeast += 2 + Math.max(0, v.length - 1)
        for (const item of v) stack.push({ v: item, depth: depth + 1 })
      } else {
        const proto: unknown = Object.getPrototypeOf(v)
        if (proto !== Object.prototype && proto !== null) {
          return { ok: false, tooLarge: false, reason: 'only plain objects are allowed' }
        }
        const entries = Object.entries(v)
        atLeast += 2 + Math.max(0, entries.length - 1)
        for (const [k, item] of entries) {
          if (!storableText(k)) return { ok: false, tooLarge: false, reason: NOT_STORABLE_REASON }
          atLeast += k.length + 3
          stack.push({ v: item, depth: depth + 1 })
        }
      }
    } else {
      return { ok: false, tooLarge: false, reason: `${typeof v} is not a JSON value` }
    }
    if (atLeast > limits.maxBytes) return tooLarge(limits)
  }
  // stringify + parse makes a copy the caller cannot mutate behind our back (JSON.parse defines
  // `__proto__` keys as own properties instead of touching prototypes).
  const text = JSON.stringify(value)
  const bytes = utf8Length(text)
  if (bytes > limits.maxBytes || bytes + jsonbExtraBytesIn(value) > limits.maxBytes) {
    return tooLarge(limits)
  }
  return { ok: true, value: JSON.parse(text) as JsonValue, bytes }
}

/**
 * What PostgreSQL cannot store in `text` or `jsonb`: NUL, and UTF-16 surrogates without their
 * pair (which JSON.stringify writes as `\ud800`-style escapes). Anything that reaches Neon (an
 * archived log record, leaderboard metadata, a reward, a name) must be free of both, or the
 * write that carries it fails on every retry.
 */
const NOT_STORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/
const NOT_STORABLE_ALL = new RegExp(NOT_STORABLE.source, 'g')

/**
 * How many more characters PostgreSQL's jsonb writes this number with than JSON does. jsonb
 * keeps numbers as `numeric` and writes every digit out, where JSON writes an exponent (past
 * 1e21, under 1e-6): `1e308` comes back as 309 characters, `1.2e-16` as 19. A few kilobytes of
 * such numbers in a relay message or metadata would come back from the archive as hundreds, and a
 * page of them pass what Neon answers in one response; so sizes are counted as written out.
 * @example jsonbExtraBytes(1e21) // 17: "1e+21" is 5 characters, 1000000000000000000000 is 22
 */
export function jsonbExtraBytes(n: number): number {
  const text = JSON.stringify(n)
  const m = /^(-?)(\d)(?:\.(\d+))?e([+-]\d+)$/.exec(text)
  if (!m) return 0
  const sign = m[1]!
  const digits = 1 + (m[3] ?? '').length
  const exponent = Number(m[4])
  // 1.5e+21 is 15 followed by zeros to 22 digits; 1.5e-7 is "0." then 6 zeros, then 15.
  const written = exponent >= 0 ? Math.max(digits, exponent + 1) : 1 + 1 + (-exponent - 1) + digits
  return sign.length + written - text.length
}

/**
 * The UTF-8 length of JSON text (as JSON.stringify writes it) with its numbers as PostgreSQL's
 * jsonb writes them (jsonbExtraBytes): what a size limit on stored JSON counts.
 * @example jsonbLength('{"x":1e+21}') // 28
 */
export function jsonbLength(text: string): number {
  // Only JSON with an exponent in it (or a digit before an `e` in a string) is parsed.
  const extra = /\de/i.test(text) ? jsonbExtraBytesIn(JSON.parse(text)) : 0
  return utf8Length(text) + extra
}

/**
 * jsonbExtraBytes summed over every number in a parsed JSON value. Iterative, so deep input
 * cannot overflow the stack.
 * @example jsonbExtraBytesIn({ x: [1, 1e21] }) // 17
 */
export function jsonbExtraBytesIn(value: unknown): number {
  let extra = 0
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'number') extra += jsonbExtraBytes(v)
    else if (Array.isArray(v)) {
      for (const item of v as unknown[]) stack.push(item)
    } else if (v !== null && typeof v === 'object') {
      for (const item of Object.values(v)) stack.push(item)
    }
  }
  return extra
}

/** Why a string or key cannot be stored (see NOT_STORABLE). */
export const NOT_STORABLE_REASON = 'strings must not contain NUL or unpaired UTF-16 surrogates'

/**
 * Whether PostgreSQL can store this string.
 * @example storableText('a\u0000b') // false
 */
export function storableText(text: string): boolean {
  return !NOT_STORABLE.test(text)
}

/**
 * Whether every string and object key in a JSON-like value can be stored (see storableText).
 * Iterative, so deep input cannot overflow the stack.
 */
export function storableJson(value: unknown): boolean {
  const stack: unknown[] = [value]
  while (stack.length > 0) {
    const v = stack.pop()
    if (typeof v === 'string') {
      if (!storableText(v)) return false
    } else if (Array.isArray(v)) {
      for (const item of v as unknown[]) stack.push(item)
    } else if (v !== null && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        if (!storableText(k)) return false
        stack.push(item)
      }
    }
  }
  return true
}

/**
 * JSON text that PostgreSQL's jsonb accepts: NUL and unpaired surrogates in strings and keys
 * become U+FFFD. Input is refused with them now; this is for text stored before that, so an
 * archive holding it can still drain. Text without them comes back unchanged.
 * @example storableJsonText('{"m":"a\\u0000b"}') // '{"m":"a\ufffdb"}'
 */
export function storableJsonText(text: string): string {
  // JSON.stringify writes both as \u escapes; without one there is nothing to replace.
  if (!/\\u(?:0000|d[89a-f])/i.test(text)) return text
  const clean = (v: unknown): unknown => {
    if (typeof v === 'string') return v.replace(NOT_STORABLE_ALL, '\ufffd')
    if (Array.isArray(v)) return v.map(clean)
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(
        Object.entries(v).map(([k, item]) => [k.replace(NOT_STORABLE_ALL, '\ufffd'), clean(item)]),
      )
    }
    return v
  }
  return JSON.stringify(clean(JSON.parse(text)))
}

function tooLarge(limits: JsonLimits): JsonCheck {
  return {
    ok: false,
    tooLarge: true,
    reason: `larger than ${limits.maxBytes} bytes as JSON (numbers counted written out, as PostgreSQL stores them)`,
  }
}

/**
 * UTF-8 byte length of a string; lone surrogates count as U+FFFD (3 bytes), as TextEncoder does.
 * @example utf8Length('é') // 2
 */
export function utf8Length(text: string): number {
  let bytes = 0
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0x80) bytes += 1
    else if (c < 0x800) bytes += 2
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1)
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4
        i++
      } else bytes += 3
    } else bytes += 3
  }
  return bytes
}

/**
 * Whether `text` is longer than `maxBytes` of UTF-8, counting only when its length leaves it in
 * doubt (every UTF-16 unit is 1 to 3 bytes): the check for a socket frame's size limit.
 * @example exceedsUtf8Bytes('€€', 5) // true: 6 bytes
 */
export function exceedsUtf8Bytes(text: string, maxBytes: number): boolean {
  if (text.length > maxBytes) return true
  return text.length * 3 > maxBytes && utf8Length(text) > maxBytes
}

/**
 * A value as storage gives it back: its JSON form (NaN and ±Infinity become null, `undefined` in
 * an array null, -0 is 0, a Map or Set `{}`, a Date its string). What a session logs, sends and
 * keeps is this form, so that live play and a session woken from storage hold the same thing
 * whatever a rules module put in.
 * @example asStored({ hit: 0 / 0, at: [undefined] }) // { hit: null, at: [null] }
 */
export function asStored<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}

/**
 * Structural equality of two JSON values; object key order does not matter (storage may reorder).
 * @example jsonEqual({ a: 1, b: [2] }, { b: [2], a: 1 }) // true
 */
export function jsonEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((item, i) => jsonEqual(item, b[i]))
  }
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined)
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined)
  if (ka.length !== kb.length) return false
  const rb = b as Record<string, unknown>
  const ra = a as Record<string, unknown>
  return ka.every((k) => Object.hasOwn(rb, k) && jsonEqual(ra[k], rb[k]))
}

/** True for a plain (non-array, non-null) object. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false
  const proto: unknown = Object.getPrototypeOf(value)
  return proto === Object.prototype || proto === null
}
