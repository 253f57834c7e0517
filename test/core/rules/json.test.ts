import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  checkJson,
  jsonEqual,
  storableJson,
  jsonbExtraBytes,
  jsonbExtraBytesIn,
  jsonbLength,
  storableJsonText,
  storableText,
  utf8Length,
} from '../../../workers/core/rules/json.ts'
import { utf16Arb } from './helpers.ts'

const limits = { maxBytes: 4096, maxDepth: 16 }

function nested(depth: number): unknown {
  let v: unknown = 0
  for (let i = 0; i < depth; i++) v = [v]
  return v
}

describe('checkJson', () => {
  it('accepts JSON values within bounds and returns an equal private copy', () => {
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), (value) => {
        const text = JSON.stringify(value)
        const bytes = new TextEncoder().encode(text).length
        const out = checkJson(value, limits)
        // Numbers counted as jsonb writes them out (below).
        if (bytes + jsonbExtraBytesIn(value) > limits.maxBytes) {
          expect(out).toMatchObject({ ok: false, tooLarge: true })
          return
        }
        expect(out).toEqual({ ok: true, value: JSON.parse(text), bytes })
        if (out.ok && typeof value === 'object' && value !== null) expect(out.value).not.toBe(value)
      }),
      { numRuns: 200 },
    )
  })

  it('draws the size line at exactly maxBytes of UTF-8', () => {
    // '"' + 4094 chars + '"' = 4096 bytes; 'é' is 2 bytes in UTF-8.
    expect(checkJson('a'.repeat(4094), limits).ok).toBe(true)
    expect(checkJson('a'.repeat(4095), limits)).toMatchObject({ ok: false, tooLarge: true })
    expect(checkJson('é'.repeat(2047), limits).ok).toBe(true)
    expect(checkJson('é'.repeat(2048), limits)).toMatchObject({ ok: false, tooLarge: true })
    expect(checkJson({ k: 'x'.repeat(4088) }, limits).ok).toBe(true) // {"k":"…"} = 4096
    expect(checkJson({ k: 'x'.repeat(4089) }, limits).ok).toBe(false)
  })

  it('draws the depth line at maxDepth', () => {
    expect(checkJson(nested(16), limits).ok).toBe(true)
    expect(checkJson(nested(17), limits)).toMatchObject({ ok: false, tooLarge: false })
    // Far deeper than any stack: refused without recursion.
    expect(checkJson(nested(100_000), limits).ok).toBe(false)
  })

  it('refuses values that are not plain JSON', () => {
    const cyclic: unknown[] = []
    cyclic.push(cyclic)
    const bad: unknown[] = [
      undefined,
      Number.NaN,
      Infinity,
      -Infinity,
      10n,
      () => 1,
      Symbol('s'),
      new Date(0),
      new Map(),
      { a: undefined },
      { toJSON: () => 1 },
      [1, , 3],
      cyclic,
    ]
    for (const value of bad) expect(checkJson(value, limits).ok).toBe(false)
  })

  it('keeps a __proto__ key as data and never touches prototypes', () => {
    const raw: unknown = JSON.parse('{"__proto__":{"polluted":true}}')
    const out = checkJson(raw, limits)
    expect(out.ok).toBe(true)
    if (!out.ok) return
    expect(Object.getPrototypeOf(out.value)).toBe(Object.prototype)
    expect(Object.hasOwn(out.value as object, '__proto__')).toBe(true)
    expect(({} as Record<string, unknown>).polluted).toBeUndefined()
  })
})

describe('what PostgreSQL can store', () => {
  // Each of these makes Postgres refuse a jsonb (or text) value on every retry.
  const unstorable = ['a\u0000b', 'x\ud800', '\udc00y', 'a\udbff\u0041']
  const storable = ['plain', 'é 中 😀', '\ud83d\ude00', '\\u0000 written out']

  it('tells strings PostgreSQL refuses from those it keeps', () => {
    for (const s of unstorable) expect(storableText(s), JSON.stringify(s)).toBe(false)
    for (const s of storable) expect(storableText(s), JSON.stringify(s)).toBe(true)
  })

  it('checkJson refuses such strings as values and as keys, and changes nothing', () => {
    for (const s of unstorable) {
      for (const value of [s, [1, { deep: s }], { [s]: 1 }]) {
        const out = checkJson(value, limits)
        expect(out).toMatchObject({ ok: false, tooLarge: false })
        expect(storableJson(value)).toBe(false)
      }
    }
    expect(checkJson({ ok: storable }, limits).ok).toBe(true)
    expect(storableJson({ ok: storable, n: [1, null, true] })).toBe(true)
    // Wide as well as deep: no argument list or call stack grows with the input.
    expect(storableJson(new Array(500_000).fill('a'))).toBe(true)
  })

  it('storableJsonText replaces them with U+FFFD in stored text, and leaves other text as it is', () => {
    const stored = JSON.stringify({ m: 'a\u0000b', ['k\ud800']: ['\udc00', 'fine'] })
    const fixed = storableJsonText(stored)
    expect(JSON.parse(fixed)).toEqual({ m: 'a\ufffdb', ['k\ufffd']: ['\ufffd', 'fine'] })
    expect(storableJson(JSON.parse(fixed))).toBe(true)
    // Any code units at all: the answer is always storable, and unchanged when it already was.
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3, stringUnit: 'binary' }), (value) => {
        const text = JSON.stringify(value)
        const out = JSON.parse(storableJsonText(text)) as unknown
        expect(storableJson(out)).toBe(true)
        expect(checkJson(value, { maxBytes: 1e6, maxDepth: 16 }).ok).toBe(storableJson(value))
        if (storableJson(value)) expect(out).toEqual(JSON.parse(text))
      }),
    )
  })
})

describe('numbers jsonb writes out in full', () => {
  it('counts the characters jsonb adds to a number JSON writes with an exponent, and none to the rest', () => {
    const cases: [number, string][] = [
      [1e21, '1000000000000000000000'],
      [-1.5e21, '-1500000000000000000000'],
      [1e-7, '0.0000001'],
      [-1.25e-7, '-0.000000125'],
      [5e-324, `0.${'0'.repeat(323)}5`],
    ]
    for (const [n, written] of cases) {
      expect(jsonbExtraBytes(n), String(n)).toBe(written.length - JSON.stringify(n).length)
    }
    for (const n of [0, -0, 1e-6, -1e-6, 0.5, 123456789, 999999999999999900000, -(2 ** 53)]) {
      expect(jsonbExtraBytes(n), String(n)).toBe(0)
    }
    expect(jsonbExtraBytesIn({ a: [1e21, { b: 1e-7 }], c: 'x' })).toBe(
      jsonbExtraBytes(1e21) + jsonbExtraBytes(1e-7),
    )
    expect(jsonbLength(JSON.stringify({ x: 1e21, s: '1e5 é' }))).toBe(
      new TextEncoder().encode('{"x":1000000000000000000000,"s":"1e5 é"}').length,
    )
    expect(jsonbExtraBytesIn(new Array(500_000).fill(1))).toBe(0)
  })

  it('checkJson counts them toward the size: a few kilobytes of 1e308 are far too large, a tiny float among normal ones is not', () => {
    const huge = new Array(200).fill(1e308)
    expect(JSON.stringify(huge).length).toBeLessThan(limits.maxBytes)
    expect(checkJson(huge, limits)).toMatchObject({ ok: false, tooLarge: true })
    expect(checkJson({ vx: 1.2e-16, vy: 0.5, angle: 3.14 }, limits).ok).toBe(true)
  })
})

describe('utf8Length', () => {
  it('agrees with TextEncoder', () => {
    fc.assert(
      fc.property(utf16Arb, (s) => {
        expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length)
      }),
    )
    expect(utf8Length('\ud800')).toBe(3)
    expect(utf8Length('a\udc00b')).toBe(5)
  })
})

describe('jsonEqual', () => {
  it('is structural and ignores key order', () => {
    expect(jsonEqual({ a: 1, b: [1, { c: null }] }, { b: [1, { c: null }], a: 1 })).toBe(true)
    expect(jsonEqual({ a: 1 }, { a: 1, b: 2 })).toBe(false)
    expect(jsonEqual([1, 2], [2, 1])).toBe(false)
    expect(jsonEqual([], {})).toBe(false)
    expect(jsonEqual(null, {})).toBe(false)
    expect(jsonEqual('1', 1)).toBe(false)
  })

  it('agrees with comparing canonical JSON text', () => {
    const canonical = (v: unknown): string =>
      JSON.stringify(v, (_k, x: unknown) =>
        x !== null && typeof x === 'object' && !Array.isArray(x)
          ? Object.fromEntries(Object.entries(x).sort(([p], [q]) => (p < q ? -1 : p > q ? 1 : 0)))
          : x,
      )
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 3 }), fc.jsonValue({ maxDepth: 3 }), (a, b) => {
        const a2 = JSON.parse(JSON.stringify(a)) as unknown
        const b2 = JSON.parse(JSON.stringify(b)) as unknown
        expect(jsonEqual(a2, b2)).toBe(canonical(a2) === canonical(b2))
        expect(jsonEqual(a2, JSON.parse(JSON.stringify(a2)))).toBe(true)
      }),
      { numRuns: 200 },
    )
  })
})
