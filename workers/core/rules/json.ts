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
      atLeast += 1
    } else if (typeof v === 'string') {
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
  if (bytes > limits.maxBytes) return tooLarge(limits)
  return { ok: true, value: JSON.parse(text) as JsonValue, bytes }
}

function tooLarge(limits: JsonLimits): JsonCheck {
  return { ok: false, tooLarge: true, reason: `larger than ${limits.maxBytes} bytes as JSON` }
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
