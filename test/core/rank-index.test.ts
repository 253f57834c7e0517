import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { RankKey, SortOrder } from '../../workers/core/rank-index.ts'
import {
  compareEntries,
  decodeCursor,
  encodeCursor,
  RankIndex,
} from '../../workers/core/rank-index.ts'

const ORDERS = ['asc', 'desc'] as const

/**
 * Reference order written independently of the module: a plain tuple comparison with the
 * direction applied to score and subscore, and the smaller seq first either way.
 */
function refCompare(order: SortOrder, a: RankKey, b: RankKey): number {
  const sign = order === 'asc' ? 1 : -1
  if (a.score < b.score) return -sign
  if (a.score > b.score) return sign
  if (a.subscore < b.subscore) return -sign
  if (a.subscore > b.subscore) return sign
  return a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0
}

/** The key as the index stores it: -0 becomes 0. */
function normalise(k: RankKey): RankKey {
  return { score: k.score + 0, subscore: k.subscore + 0, seq: k.seq }
}

/** Sorted by the reference order, repeats dropped, -0 normalised. */
function refSorted(order: SortOrder, keys: Iterable<RankKey>): RankKey[] {
  const sorted = [...keys].map(normalise).sort((a, b) => refCompare(order, a, b))
  return sorted.filter((k, i) => i === 0 || refCompare(order, sorted[i - 1] as RankKey, k) !== 0)
}

function key(score: number, seq: number, subscore = 0): RankKey {
  return { score, subscore, seq }
}

const seqs = (keys: Iterable<RankKey>) => Array.from(keys, (k) => k.seq)

/** Park–Miller generator: deterministic inputs without fast-check where shrinking is useless. */
function lcg(seed: number): () => number {
  let s = seed
  return () => (s = (s * 48271) % 2147483647)
}

function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items]
  const next = lcg(seed)
  for (let i = out.length - 1; i > 0; i--) {
    const j = next() % (i + 1)
    const t = out[i] as T
    out[i] = out[j] as T
    out[j] = t
  }
  return out
}

function walkPages(index: RankIndex, pageSize: number): RankKey[] {
  const out: RankKey[] = []
  let after: RankKey | null = null
  for (let guard = 0; guard <= index.size + 1; guard++) {
    const page = index.page(after, pageSize)
    out.push(...page)
    if (page.length < pageSize) return out
    after = page[page.length - 1] as RankKey
  }
  throw new Error('page walk did not end')
}

/** Checks every query against the reference: `sorted` is the expected content, in order. */
function checkAgainst(index: RankIndex, sorted: readonly RankKey[]): void {
  index.checkInvariants()
  expect(index.size).toBe(sorted.length)
  // Collected first and compared once: one expect per entry is slow at 30,000 entries.
  expect(sorted.map((k) => index.rankOf({ ...k }))).toEqual(sorted.map((_, i) => i + 1))
  expect(sorted.map((k) => index.rankOfKey(k))).toEqual(sorted.map((_, i) => i))
  expect(sorted.filter((k) => !index.has(k))).toEqual([])
  expect(sorted.map((_, i) => index.at(i + 1))).toEqual(sorted)
  expect(index.at(0)).toBeUndefined()
  expect(index.at(sorted.length + 1)).toBeUndefined()
  expect([...index.entries()]).toEqual(sorted)
  expect(index.range(1, sorted.length + 1)).toEqual(sorted)
  expect(walkPages(index, 7)).toEqual(sorted)
}

/** The keys in the index, for before/after comparisons. */
const snapshot = (index: RankIndex) => [...index.entries()]

describe('compareEntries', () => {
  it('orders by score, then subscore in the same direction, then the earlier seq', () => {
    const a = key(10, 5, 1)
    expect(compareEntries('desc', a, key(9, 1))).toBeLessThan(0)
    expect(compareEntries('asc', a, key(9, 1))).toBeGreaterThan(0)
    expect(compareEntries('desc', a, key(10, 1, 0))).toBeLessThan(0)
    expect(compareEntries('asc', a, key(10, 1, 0))).toBeGreaterThan(0)
    // seq is not flipped by the direction: the earlier submission wins a tie either way.
    expect(compareEntries('desc', a, key(10, 4, 1))).toBeGreaterThan(0)
    expect(compareEntries('asc', a, key(10, 4, 1))).toBeGreaterThan(0)
    expect(compareEntries('desc', a, key(10, 6, 1))).toBeLessThan(0)
    expect(compareEntries('asc', a, key(10, 6, 1))).toBeLessThan(0)
    expect(compareEntries('asc', a, { ...a })).toBe(0)
    expect(compareEntries('desc', key(-0, 1, -0), key(0, 1, 0))).toBe(0)
  })

  it('agrees in sign with the reference, and is antisymmetric', () => {
    const keyArb = fc.record({
      score: fc.oneof(fc.integer({ min: -2, max: 2 }), fc.double({ noNaN: true })),
      subscore: fc.oneof(fc.integer({ min: -2, max: 2 }), fc.double({ noNaN: true })),
      seq: fc.integer({ min: -3, max: 3 }),
    })
    fc.assert(
      fc.property(fc.constantFrom(...ORDERS), keyArb, keyArb, (order, a, b) => {
        const c = compareEntries(order, a, b)
        expect(Math.sign(c)).toBe(Math.sign(refCompare(order, a, b)))
        expect(Math.sign(compareEntries(order, b, a)) + Math.sign(c)).toBe(0)
      }),
    )
  })
})

describe('RankIndex basics', () => {
  it('keeps its order and rejects an unknown one', () => {
    expect(new RankIndex('asc').order).toBe('asc')
    expect(new RankIndex('desc').order).toBe('desc')
    expect(() => new RankIndex('up' as SortOrder)).toThrow(TypeError)
  })

  it('handles an empty index', () => {
    const index = new RankIndex('desc')
    const k = key(1, 1)
    expect(index.size).toBe(0)
    expect(index.rankOf(k)).toBeUndefined()
    expect(index.has(k)).toBe(false)
    expect(index.at(1)).toBeUndefined()
    expect(index.page(null, 10)).toEqual([])
    expect(index.page(k, 10)).toEqual([])
    expect(index.range(1, 10)).toEqual([])
    expect(index.around(k, 5)).toEqual([])
    expect(index.rankOfKey(k)).toBe(0)
    expect([...index.entries()]).toEqual([])
    expect(index.remove(k)).toBe(false)
    expect(index.size).toBe(0)
    index.checkInvariants()
  })

  it('handles a single key', () => {
    const index = new RankIndex('asc')
    const k = key(3.5, 1)
    expect(index.insert(k)).toBe(true)
    expect(index.size).toBe(1)
    expect(index.rankOf(k)).toBe(1)
    expect(index.has(k)).toBe(true)
    expect(index.at(1)).toEqual(k)
    expect(index.at(2)).toBeUndefined()
    expect(index.page(null, 10)).toEqual([k])
    expect(index.page(k, 10)).toEqual([])
    expect(index.around(k, 5)).toEqual([k])
    expect(index.rankOfKey(key(3.5, 0))).toBe(0)
    expect(index.rankOfKey(key(3.5, 2))).toBe(1)
    expect(index.remove(k)).toBe(true)
    expect(index.size).toBe(0)
    expect(index.has(k)).toBe(false)
    index.checkInvariants()
  })

  it('refuses to insert a key that is already there, and changes nothing', () => {
    for (const order of ORDERS) {
      const index = new RankIndex(order)
      const keys = Array.from({ length: 1000 }, (_, i) => key(i % 17, i, i % 3))
      for (const k of shuffled(keys, 5)) expect(index.insert(k)).toBe(true)
      const before = snapshot(index)
      for (const k of [keys[0], keys[500], keys[999], keys[313]] as RankKey[]) {
        expect(index.insert({ ...k })).toBe(false)
      }
      // -0 and 0 are the same key.
      expect(index.insert(key(-0, 0, -0))).toBe(false)
      expect(index.size).toBe(1000)
      expect(snapshot(index)).toEqual(before)
      index.checkInvariants()
      checkAgainst(index, refSorted(order, keys))
    }
  })

  it('refuses to remove a key that is not there, and changes nothing', () => {
    for (const order of ORDERS) {
      const index = new RankIndex(order)
      const keys = Array.from({ length: 1000 }, (_, i) => key(i % 17, 2 * i, i % 3))
      index.load(keys)
      const before = snapshot(index)
      const absent = [
        key(0, 1), // between two present keys with the same score and subscore
        key(0, 0, 1), // a present seq under another subscore
        key(5, 10), // a present seq under another score
        key(16.5, 0),
        key(-1, 0),
        key(1000, 0),
        key(0, 1e9),
        key(0, -1),
      ]
      for (const k of absent) {
        expect(index.has(k)).toBe(false)
        expect(index.rankOf(k)).toBeUndefined()
        expect(index.remove(k)).toBe(false)
      }
      expect(snapshot(index)).toEqual(before)
      index.checkInvariants()
      // Removing twice: the second time it is gone.
      expect(index.remove(key(0, 0))).toBe(true)
      expect(index.remove(key(0, 0))).toBe(false)
      expect(index.size).toBe(999)
      index.checkInvariants()
    }
  })

  it('replaces one key by another', () => {
    const index = new RankIndex('desc')
    const a = key(10, 1)
    const b = key(20, 2)
    index.replace(undefined, a)
    index.replace(undefined, b)
    expect(index.page(null, 10)).toEqual([b, a])
    // a moves above b.
    const a2 = key(30, 3)
    index.replace(a, a2)
    expect(index.page(null, 10)).toEqual([a2, b])
    expect(index.has(a)).toBe(false)
    expect(index.size).toBe(2)
    // An old key that is not there: the new one is still inserted.
    const c = key(5, 4)
    index.replace(key(99, 99), c)
    expect(index.page(null, 10)).toEqual([a2, b, c])
    // Replacing a key by itself keeps it.
    index.replace({ ...b }, b)
    expect(index.page(null, 10)).toEqual([a2, b, c])
    // A bad new key throws before the old one is removed; so does a bad old key.
    expect(() => index.replace(b, key(Number.NaN, 5))).toThrow()
    expect(() => index.replace(key(Number.NaN, 5), key(1, 6))).toThrow()
    expect(index.page(null, 10)).toEqual([a2, b, c])
    index.checkInvariants()
  })

  it('copies keys in and out, so mutating either side does not corrupt the index', () => {
    const index = new RankIndex('desc')
    const k = { score: 1, subscore: 0, seq: 1 }
    index.insert(k)
    k.score = 100
    expect(index.at(1)).toEqual(key(1, 1))
    const loaded = [{ score: 2, subscore: 0, seq: 2 }]
    index.load(loaded)
    ;(loaded[0] as { score: number }).score = -5
    expect(index.at(1)).toEqual(key(2, 2))
    const out = index.at(1) as { score: number }
    out.score = 1000
    const paged = index.page(null, 1)[0] as { seq: number }
    paged.seq = 77
    expect(index.at(1)).toEqual(key(2, 2))
    expect(index.rankOf(key(2, 2))).toBe(1)
    index.checkInvariants()
  })

  it('returns keys that are plain data to JSON, spread and structured clone', () => {
    const index = new RankIndex('desc')
    index.insert(key(1.5, 7, 2))
    const plain = { score: 1.5, subscore: 2, seq: 7 }
    for (const stored of [
      index.at(1) as RankKey,
      index.page(null, 1)[0] as RankKey,
      index.range(1, 1)[0] as RankKey,
      index.around(plain, 1)[0] as RankKey,
      [...index.entries()][0] as RankKey,
    ]) {
      expect(JSON.parse(JSON.stringify(stored))).toStrictEqual(plain)
      expect({ ...stored }).toStrictEqual(plain)
      expect(structuredClone(stored)).toStrictEqual(plain)
      expect(Object.keys(stored).sort()).toEqual(['score', 'seq', 'subscore'])
    }
  })

  it('breaks ties by subscore, then the earlier submission', () => {
    const index = new RankIndex('desc')
    for (const k of [key(10, 3), key(10, 1), key(10, 9, 5), key(10, 2), key(10, -4, -1)]) {
      index.insert(k)
    }
    expect(seqs(index.page(null, 10))).toEqual([9, 1, 2, 3, -4])
    const asc = new RankIndex('asc')
    asc.load([key(10, 3), key(10, 1), key(10, 9, 5), key(10, 2), key(10, -4, -1)])
    expect(seqs(asc.page(null, 10))).toEqual([-4, 1, 2, 3, 9])
  })

  it('treats -0 as 0', () => {
    const index = new RankIndex('desc')
    index.insert(key(-0, 1))
    index.insert(key(0, 3))
    index.insert(key(0, 2, -0))
    const [first, second, third] = index.page(null, 10) as [RankKey, RankKey, RankKey]
    expect(Object.is(first.score, 0)).toBe(true)
    expect(Object.is(second.subscore, 0)).toBe(true)
    expect(Object.is(index.at(3)?.score, 0)).toBe(true)
    expect(seqs([first, second, third])).toEqual([1, 2, 3])
    expect(index.rankOfKey(key(-0, 2, -0))).toBe(1)
    expect(index.rankOf(key(0, 1))).toBe(1)
    expect(index.rankOf(key(-0, 3, -0))).toBe(3)
    expect(index.has(key(-0, 2))).toBe(true)
    expect(index.page(key(-0, 1), 10)).toEqual([key(0, 2), key(0, 3)])
    expect(index.around(key(-0, 2), 1)).toEqual([key(0, 2)])
    expect(index.remove(key(0, 1, -0))).toBe(true)
    expect(index.remove(key(-0, 3))).toBe(true)
    expect(index.size).toBe(1)
    index.load([key(-0, 5, -0), key(0, 4), key(0, 5)])
    expect(index.size).toBe(2)
    for (const k of index.entries()) {
      expect(Object.is(k.score, 0) && Object.is(k.subscore, 0)).toBe(true)
    }
    index.checkInvariants()
  })

  it('orders extreme finite numbers', () => {
    const values = [
      Number.MAX_VALUE,
      -Number.MAX_VALUE,
      Number.MIN_VALUE,
      -Number.MIN_VALUE,
      0,
      1e300,
      -1e-300,
      Number.MAX_SAFE_INTEGER,
      Number.MAX_SAFE_INTEGER + 2,
    ]
    const keys = values.map((v, i) => key(v, i, -v))
    const ascending = [...values.keys()].sort(
      (a, b) => (values[a] as number) - (values[b] as number),
    )
    for (const order of ORDERS) {
      const expected = order === 'asc' ? ascending : [...ascending].reverse()
      const inserted = new RankIndex(order)
      for (const k of keys) inserted.insert(k)
      expect(seqs(inserted.page(null, 20))).toEqual(expected)
      const loaded = new RankIndex(order)
      loaded.load(keys)
      expect(seqs(loaded.entries())).toEqual(expected)
    }
    // Extreme seqs.
    const index = new RankIndex('asc')
    index.load([key(1, Number.MAX_SAFE_INTEGER), key(1, Number.MIN_SAFE_INTEGER), key(1, 0)])
    expect(seqs(index.entries())).toEqual([Number.MIN_SAFE_INTEGER, 0, Number.MAX_SAFE_INTEGER])
  })

  it('rejects keys that would break the order, leaving the index unchanged', () => {
    const index = new RankIndex('desc')
    const good = Array.from({ length: 300 }, (_, i) => key(i % 50, i))
    index.load(good)
    const before = snapshot(index)
    const bad: unknown[] = [
      key(Number.NaN, 2),
      key(Number.POSITIVE_INFINITY, 2),
      key(Number.NEGATIVE_INFINITY, 2),
      key(1, 2, Number.NaN),
      key(1, 2, Number.NEGATIVE_INFINITY),
      key(1, 1.5),
      key(1, Number.NaN),
      key(1, Number.POSITIVE_INFINITY),
      key(1, 2 ** 53),
      key(1, -(2 ** 53)),
      { score: '1', subscore: 0, seq: 2 },
      { score: 1, subscore: 0, seq: '2' },
      { score: 1, subscore: 0, seq: 2n },
      { score: 1, seq: 2 },
      {},
      null,
      undefined,
      5,
      'key',
    ]
    for (const b of bad) {
      const k = b as RankKey
      expect(() => index.insert(k), String(b)).toThrow()
      expect(() => index.remove(k)).toThrow()
      expect(() => index.replace(undefined, k)).toThrow()
      expect(() => index.replace(good[0], k)).toThrow()
      if (b !== undefined) expect(() => index.replace(k, key(1000, 1000))).toThrow()
      // Late in a sorted stream, after the input turned unsorted, and alone.
      expect(() => index.load([...refSorted('desc', good), k])).toThrow()
      expect(() => index.load([...good, k, key(1, 1000)])).toThrow()
      expect(() => index.load([k])).toThrow()
    }
    expect(snapshot(index)).toEqual(before)
    index.checkInvariants()
    // An input that fails while being read leaves the index unchanged too.
    function* failing(): Generator<RankKey> {
      yield* good.slice(0, 100)
      throw new Error('read failed')
    }
    expect(() => index.load(failing())).toThrow('read failed')
    expect(snapshot(index)).toEqual(before)
    // Bad limits and ranks.
    expect(() => index.page(null, -1)).toThrow(RangeError)
    expect(() => index.page(null, 1.5)).toThrow(RangeError)
    expect(() => index.range(0, 1)).toThrow(RangeError)
    expect(() => index.range(1.5, 1)).toThrow(RangeError)
    expect(() => index.range(1, -1)).toThrow(RangeError)
    expect(() => index.around(good[0] as RankKey, -1)).toThrow(RangeError)
    expect(() => index.entries(0).next()).toThrow(RangeError)
    expect(() => index.entries(1.5).next()).toThrow(RangeError)
  })

  it('centres around() and shifts it at the edges', () => {
    const index = new RankIndex('desc')
    const r = (rank: number) => key(100 - rank, rank)
    for (let i = 1; i <= 10; i++) index.insert(r(i)) // r(1) ranks 1
    const window = (rank: number, limit: number) => seqs(index.around(r(rank), limit))
    expect(window(5, 5)).toEqual([3, 4, 5, 6, 7])
    expect(window(5, 4)).toEqual([4, 5, 6, 7])
    expect(window(1, 5)).toEqual([1, 2, 3, 4, 5])
    expect(window(2, 5)).toEqual([1, 2, 3, 4, 5])
    expect(window(10, 5)).toEqual([6, 7, 8, 9, 10])
    expect(window(9, 5)).toEqual([6, 7, 8, 9, 10])
    expect(window(10, 2)).toEqual([9, 10])
    expect(window(4, 50)).toHaveLength(10)
    expect(window(4, 1)).toEqual([4])
    expect(window(4, 0)).toEqual([])
    expect(index.around(key(95, 6), 5)).toEqual([]) // an absent key, between r(5) and r(6)
  })

  it('gives ranges, ranks of keys and iteration from a rank', () => {
    const index = new RankIndex('asc')
    for (let i = 0; i < 500; i++) index.insert(key(i * 2, i))
    expect(seqs(index.range(101, 3))).toEqual([100, 101, 102])
    expect(seqs(index.range(499, 5))).toEqual([498, 499])
    expect(index.range(501, 5)).toEqual([])
    expect(index.range(1, 0)).toEqual([])
    expect(index.page(null, 0)).toEqual([])
    expect(index.page(key(6, 3), 0)).toEqual([])
    expect(index.rankOfKey(key(7, 0))).toBe(4) // scores 0, 2, 4, 6 sort before 7
    expect(index.rankOfKey(key(6, 2))).toBe(3)
    expect(index.rankOfKey(key(6, 3))).toBe(3) // the key itself is not counted
    expect(index.rankOfKey(key(6, 4))).toBe(4)
    expect(index.rankOfKey(key(1000, 0))).toBe(500)
    expect(index.rankOfKey(key(-1, 0))).toBe(0)
    expect(seqs(index.entries(498))).toEqual([497, 498, 499])
    expect(seqs(index.entries(500))).toEqual([499])
    expect([...index.entries(501)]).toEqual([])
    expect(seqs(index.entries(65)).slice(0, 3)).toEqual([64, 65, 66])
  })

  it('stops an iteration when the index is modified under it', () => {
    const mutations: [string, (index: RankIndex) => void][] = [
      ['insert', (index) => index.insert(key(5000, 999))],
      ['remove', (index) => index.remove(key(10, 5))],
      ['replace', (index) => index.replace(key(10, 5), key(11, 999))],
      ['clear', (index) => index.clear()],
      ['load', (index) => index.load([key(1, 1)])],
    ]
    for (const [name, mutate] of mutations) {
      const index = new RankIndex('asc')
      for (let i = 0; i < 200; i++) index.insert(key(i * 2, i))
      const iter = index.entries(1)
      iter.next()
      mutate(index)
      expect(() => iter.next(), name).toThrow(/modified/)
    }
    // An iteration that is left alone runs to the end.
    const index = new RankIndex('asc')
    for (let i = 0; i < 200; i++) index.insert(key(i, i))
    expect(seqs(index.entries())).toHaveLength(200)
  })

  it('clears', () => {
    const index = new RankIndex('desc')
    for (let i = 0; i < 300; i++) index.insert(key(i, i))
    index.clear()
    expect(index.size).toBe(0)
    expect(index.page(null, 5)).toEqual([])
    expect(index.has(key(1, 1))).toBe(false)
    index.checkInvariants()
    expect(index.insert(key(1, 1))).toBe(true)
    expect(index.rankOf(key(1, 1))).toBe(1)
    index.checkInvariants()
  })

  it('keeps a cursor meaningful after its entry moves or leaves', () => {
    const index = new RankIndex('desc')
    const keys = Array.from({ length: 20 }, (_, i) => key(100 - i, i))
    index.load(keys)
    const first = index.page(null, 5)
    const last = first[4] as RankKey
    index.remove(last)
    expect(index.page(last, 5)).toEqual(keys.slice(5, 10))
    index.insert(last)
    index.replace(last, key(1000, 99))
    expect(index.page(last, 5)).toEqual(keys.slice(5, 10))
    expect(index.page(decodeCursor(encodeCursor(last)), 5)).toEqual(keys.slice(5, 10))
    // The rank of a page's first key.
    expect(index.rankOfKey(keys[5] as RankKey) + 1).toBe(6) // the moved key is now at rank 1
  })
})

describe('bulk load', () => {
  it('loads unsorted input with repeats like repeated inserts, replacing what was there', () => {
    for (const order of ORDERS) {
      const next = lcg(7)
      const input: RankKey[] = []
      for (let i = 0; i < 5000; i++) input.push(key(next() % 500, next() % 3000, next() % 3))
      input.push(...input.slice(0, 700)) // exact repeats
      const loaded = new RankIndex(order)
      loaded.insert(key(-1e9, 1))
      loaded.load(input)
      const expected = refSorted(order, input)
      expect(expected.length).toBeLessThan(5000) // the generator did repeat keys
      checkAgainst(loaded, expected)
      const inserted = new RankIndex(order)
      for (const k of input) inserted.insert(k)
      expect(snapshot(inserted)).toEqual(snapshot(loaded))
      // Still a healthy tree for later writes and deletes.
      const kept = expected.filter((_, i) => i % 2 === 1)
      expected.forEach((k, i) => i % 2 === 0 && expect(loaded.remove(k)).toBe(true))
      for (let i = 0; i < 1000; i++) {
        const k = key(next() % 600, 10_000 + i)
        loaded.insert(k)
        kept.push(k)
      }
      checkAgainst(loaded, refSorted(order, kept))
      // An empty load empties.
      loaded.load([])
      checkAgainst(loaded, [])
    }
  })

  it('gives the same tree for sorted input (the fast path) and shuffled input with repeats', () => {
    for (const order of ORDERS) {
      for (const n of [0, 1, 2, 100, 3000, 20_000]) {
        const next = lcg(n + 1)
        const raw = Array.from({ length: n }, (_, i) => key(next() % 97, i, (next() % 3) - 1))
        const sorted = refSorted(order, raw)
        const fast = new RankIndex(order)
        fast.load(sorted)
        // Adjacent repeats in sorted input count once and keep the fast path.
        const doubled = new RankIndex(order)
        doubled.load(sorted.flatMap((k, i) => (i % 3 === 0 ? [k, { ...k }] : [k])))
        // A single pass over a generator is enough.
        const streamed = new RankIndex(order)
        streamed.load(
          (function* () {
            yield* sorted
          })(),
        )
        const slow = new RankIndex(order)
        slow.load(shuffled([...sorted, ...sorted.slice(0, n >>> 2)], n))
        for (const index of [fast, doubled, streamed, slow]) {
          index.checkInvariants()
          expect(index.size).toBe(n)
        }
        expect(snapshot(fast)).toEqual(sorted)
        expect(snapshot(doubled)).toEqual(sorted)
        expect(snapshot(streamed)).toEqual(sorted)
        expect(snapshot(slow)).toEqual(sorted)
        if (n === 3000) checkAgainst(fast, sorted)
        // Loading the index from its own iteration keeps it.
        fast.load(fast.entries())
        expect(snapshot(fast)).toEqual(sorted)
      }
    }
  })

  it('builds a valid tree whatever the size of the last leaf', () => {
    const sizes = new Set([1, 2, 15, 16, 17, 47, 48, 49, 63, 64, 65, 96, 97, 110_593, 110_607])
    for (const k of [1, 2, 3, 5, 47, 48, 49, 64]) {
      for (let extra = 0; extra <= 17; extra++) sizes.add(48 * k + extra)
    }
    for (const order of ORDERS) {
      for (const n of sizes) {
        // Distinct scores, in board order.
        const at = (i: number) => key(order === 'asc' ? i : 0 - i, i, i % 2)
        const index = new RankIndex(order)
        index.load(Array.from({ length: n }, (_, i) => at(i)))
        index.checkInvariants()
        expect(index.size).toBe(n)
        let wrong = 0
        let i = 0
        for (const got of index.entries()) {
          const want = at(i++)
          if (got.score !== want.score || got.seq !== want.seq || got.subscore !== want.subscore) {
            wrong++
          }
        }
        expect({ n, i, wrong }).toEqual({ n, i: n, wrong: 0 })
        expect(index.at(n)).toEqual(at(n - 1))
        expect(index.rankOf(at(n - 1))).toBe(n)
        if (n >= 2) expect(index.range(n - 1, 5)).toEqual([at(n - 2), at(n - 1)])
        if (n > 100_000) continue
        // The last leaf takes inserts and deletes: it may be full after a merge.
        for (let j = 0; j < 70; j++) index.insert(at(n + j))
        index.checkInvariants()
        for (let j = 0; j < 70; j++) index.remove(at(n + j))
        for (let j = n - 1; j >= Math.max(0, n - 40); j--) index.remove(at(j))
        index.checkInvariants()
        expect(index.size).toBe(Math.max(0, n - 40))
        expect(index.at(index.size)).toEqual(n > 40 ? at(n - 41) : undefined)
      }
    }
  }, 20_000)

  it('sorts input that turns out unsorted late in a long stream', () => {
    for (const order of ORDERS) {
      // Board order: ascending scores for 'asc', descending for 'desc'.
      const at = (i: number) => key(order === 'asc' ? i : 0 - i, i)
      const head = Array.from({ length: 10_000 }, (_, i) => at(2 * i))
      const tail = Array.from({ length: 15_000 }, (_, i) => at(20_000 + i))
      const cases: [string, RankKey[]][] = [
        ['one key out of order, then more', [...head, at(5001), ...tail]],
        ['a repeat of an early key, then more', [...head, at(6), ...tail, at(6), at(20_005)]],
        ['one key out of order at the very end', [...head, ...tail, at(1)]],
        ['out of order then sorted repeats', [...head, at(3), ...head.slice(9000), ...tail]],
      ]
      for (const [name, input] of cases) {
        const index = new RankIndex(order)
        index.load(input)
        const expected = refSorted(order, input)
        index.checkInvariants()
        expect(index.size, name).toBe(expected.length)
        expect(seqs(index.entries()), name).toEqual(seqs(expected))
        expect(index.at(5002)).toEqual(expected[5001])
      }
    }
  })
})

describe('RankIndex under heavy change', () => {
  it('stays balanced through growth and shrinkage', () => {
    const index = new RankIndex('asc')
    const keys: RankKey[] = []
    for (let i = 0; i < 20_000; i++) {
      const k = key((i * 7919) % 10007, i)
      expect(index.insert(k)).toBe(true)
      keys.push(k)
    }
    checkAgainst(index, refSorted('asc', keys))
    const kept: RankKey[] = []
    for (const k of keys) {
      if (k.seq % 10 !== 0) expect(index.remove(k)).toBe(true)
      else kept.push(k)
    }
    checkAgainst(index, refSorted('asc', kept))
    for (const k of kept) index.remove(k)
    checkAgainst(index, [])
  })

  it('rebalances under churn at both ends (merges and borrows at every level)', () => {
    for (const order of ORDERS) {
      const index = new RankIndex(order)
      const model = new Set<RankKey>()
      const next = lcg(42)
      let seq = 0
      const add = () => {
        const k = key(next() % 100_000, seq++)
        if (!index.insert(k)) throw new Error('insert failed')
        model.add(k)
      }
      for (let i = 0; i < 30_000; i++) add()
      const bySeq = new Map([...model].map((k) => [k.seq, k]))
      const dropAt = (rank: number) => {
        const k = index.at(rank)
        if (k === undefined || !index.remove(k)) throw new Error('remove failed')
        model.delete(bySeq.get(k.seq) as RankKey)
      }
      for (let i = 0; i < 20_000; i++) {
        dropAt(1)
        dropAt(index.size)
        const a = key(next() % 100_000, seq++)
        const b = key(next() % 100_000, seq++)
        for (const k of [a, b]) {
          if (!index.insert(k)) throw new Error('insert failed')
          model.add(k)
          bySeq.set(k.seq, k)
        }
        if (i % 5_000 === 0) index.checkInvariants()
      }
      checkAgainst(index, refSorted(order, model))
      // Then drain it from random positions.
      const left = shuffled([...model], 3)
      for (let i = 0; i < left.length; i++) {
        if (!index.remove(left[i] as RankKey)) throw new Error('remove failed')
        if (i % 5_000 === 0) index.checkInvariants()
      }
      checkAgainst(index, [])
    }
  })
})

type Op =
  /** A player's new standing: a fresh key, through replace() or remove() + insert(). */
  | { kind: 'set'; player: number; score: number; subscore: number; viaReplace: boolean }
  | { kind: 'remove'; player: number }
  /** insert() of the player's current key again: false. */
  | { kind: 'reinsert'; player: number }
  /** remove() of a key that was in the index once: false. */
  | { kind: 'removeRetired'; pick: number }
  /** remove() of the player's score and subscore with another seq: true only if someone has it. */
  | { kind: 'removeNear'; player: number; delta: number }

const scoreArb = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(-0, 0.5, -1e-300, 1e300, Number.MAX_VALUE, -Number.MAX_VALUE),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
)
const subscoreArb = fc.oneof(fc.integer({ min: -1, max: 1 }), fc.constant(-0))

function opArb(players: number): fc.Arbitrary<Op> {
  const player = fc.nat(players)
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('set' as const),
        player,
        score: scoreArb,
        subscore: subscoreArb,
        viaReplace: fc.boolean(),
      }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('remove' as const), player }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('reinsert' as const), player }) },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('removeRetired' as const), pick: fc.nat() }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('removeNear' as const),
        player,
        delta: fc.constantFrom(-1, 1, 7919, -7919),
      }),
    },
  )
}

/** Fresh seqs, unique but not increasing (and some negative), like no real board but allowed. */
function seqSource(): () => number {
  let n = 0
  return () => ((n++ * 7919) % 100_003) - 50_000
}

describe('RankIndex against a sorted-array reference', () => {
  for (const order of ORDERS) {
    it(`agrees on rankOf, at, pages, around, range, rankOfKey, entries and size (${order})`, () => {
      const keyArb = fc.record({
        score: scoreArb,
        subscore: subscoreArb,
        seq: fc.integer({ min: -50_000, max: 50_010 }),
      })
      fc.assert(
        fc.property(
          fc.nat({ max: 300 }),
          fc.boolean(),
          fc.array(opArb(340), { maxLength: 400 }),
          fc.integer({ min: 1, max: 12 }),
          fc.array(fc.tuple(fc.nat(340), fc.integer({ min: 0, max: 12 })), { maxLength: 8 }),
          fc.array(keyArb, { maxLength: 8 }),
          fc.array(fc.tuple(fc.integer({ min: 1, max: 400 }), fc.nat(20)), { maxLength: 4 }),
          (initial, loadSorted, ops, pageSize, arounds, probes, ranges) => {
            const index = new RankIndex(order)
            const nextSeq = seqSource()
            const model = new Map<number, RankKey>()
            const retired: RankKey[] = []
            for (let p = 0; p < initial; p++) {
              model.set(p, key((p * 37) % 11, nextSeq(), (p % 3) - 1))
            }
            index.load(loadSorted ? refSorted(order, model.values()) : model.values())
            const holder = (k: RankKey) => {
              for (const [p, m] of model) if (refCompare(order, m, k) === 0) return p
              return undefined
            }
            for (const op of ops) {
              if (op.kind === 'set') {
                const old = model.get(op.player)
                const next = key(op.score, nextSeq(), op.subscore)
                if (op.viaReplace) index.replace(old, next)
                else {
                  if (old !== undefined) expect(index.remove(old)).toBe(true)
                  expect(index.insert(next)).toBe(true)
                }
                if (old !== undefined) retired.push(old)
                model.set(op.player, next)
              } else if (op.kind === 'remove') {
                const old = model.get(op.player)
                if (old === undefined) continue
                expect(index.remove(old)).toBe(true)
                retired.push(old)
                model.delete(op.player)
              } else if (op.kind === 'reinsert') {
                const current = model.get(op.player)
                if (current !== undefined) expect(index.insert({ ...current })).toBe(false)
              } else if (op.kind === 'removeRetired') {
                const old = retired[op.pick % Math.max(1, retired.length)]
                if (old !== undefined) expect(index.remove(old)).toBe(false)
              } else {
                const current = model.get(op.player)
                if (current === undefined) continue
                const near = { ...current, seq: current.seq + op.delta }
                const p = holder(near)
                expect(index.remove(near)).toBe(p !== undefined)
                if (p !== undefined) {
                  retired.push(model.get(p) as RankKey)
                  model.delete(p)
                }
              }
            }
            const sorted = refSorted(order, model.values())
            expect(sorted).toHaveLength(model.size) // keys are unique
            checkAgainst(index, sorted)
            expect(walkPages(index, pageSize)).toEqual(sorted)
            for (const old of retired) {
              if (holder(old) === undefined) expect(index.has(old)).toBe(false)
            }
            for (const [player, limit] of arounds) {
              const k = model.get(player) ?? retired[player % Math.max(1, retired.length)]
              if (k === undefined) continue
              const pos = sorted.findIndex((e) => refCompare(order, e, k) === 0)
              const got = index.around(k, limit)
              if (pos < 0) {
                expect(got).toEqual([])
                continue
              }
              const count = Math.min(limit, sorted.length)
              expect(got).toHaveLength(count)
              if (count === 0) continue
              const start = Math.min(
                Math.max(0, pos - Math.floor((count - 1) / 2)),
                sorted.length - count,
              )
              expect(got).toEqual(sorted.slice(start, start + count))
              expect(index.rankOf(got[0] as RankKey)).toBe(start + 1)
            }
            for (const probe of probes) {
              const before = sorted.filter((e) => refCompare(order, e, probe) < 0).length
              const present = sorted.some((e) => refCompare(order, e, probe) === 0)
              expect(index.rankOfKey(probe)).toBe(before)
              expect(index.has(probe)).toBe(present)
              expect(index.rankOf(probe)).toBe(present ? before + 1 : undefined)
              const start = present ? before + 1 : before
              expect(index.page(probe, 5)).toEqual(sorted.slice(start, start + 5))
            }
            for (const [from, limit] of ranges) {
              expect(index.range(from, limit)).toEqual(sorted.slice(from - 1, from - 1 + limit))
              expect([...index.entries(from)]).toEqual(sorted.slice(from - 1))
            }
          },
        ),
        { numRuns: 100 },
      )
    })
  }

  it('never repeats an entry while paging through changing scores, nor skips one that stayed put', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 1, max: 25 }),
        fc.array(fc.array(opArb(160), { maxLength: 15 }), { maxLength: 80 }),
        fc.boolean(),
        (initial, pageSize, changesBetweenPages, legacyCursors) => {
          const index = new RankIndex('desc')
          const nextSeq = seqSource()
          const model = new Map<number, RankKey>()
          const playerOf = new Map<number, number>() // seq to player
          const set = (player: number, k: RankKey) => {
            const old = model.get(player)
            index.replace(old, k)
            model.set(player, normalise(k))
            playerOf.set(k.seq, player)
          }
          for (let i = 0; i < initial; i++) set(i % 151, key(i % 37, nextSeq()))
          const atStart = new Map(model)
          const touched = new Set<number>()
          const seenKeys: RankKey[] = []
          const seenPlayers = new Set<number>()
          let after: RankKey | null = null
          for (let pageNo = 0; pageNo < 1000; pageNo++) {
            const page = index.page(after, pageSize)
            seenKeys.push(...page)
            for (const k of page) {
              // Every key paged is the current key of a player...
              const player = playerOf.get(k.seq) as number
              expect(model.get(player)).toEqual(k)
              // ...and a player is only seen twice if their entry changed during the walk.
              if (seenPlayers.has(player)) expect(touched.has(player)).toBe(true)
              seenPlayers.add(player)
            }
            if (page.length < pageSize) break
            // The cursor travels through a string, as it would through a client; older clients
            // hold cursors with the player id in them.
            const last = page[page.length - 1] as RankKey
            const cursor = legacyCursors
              ? legacyCursor(last.score, last.subscore, last.seq, `p${playerOf.get(last.seq)}`)
              : encodeCursor(last)
            after = decodeCursor(cursor)
            expect(after).toEqual(last)
            for (const op of changesBetweenPages[pageNo] ?? []) {
              if (op.kind === 'set') {
                touched.add(op.player)
                set(op.player, key(Math.round(op.score) % 40, nextSeq(), op.subscore))
              } else if (op.kind === 'remove') {
                touched.add(op.player)
                const old = model.get(op.player)
                if (old !== undefined) expect(index.remove(old)).toBe(true)
                model.delete(op.player)
              }
            }
          }
          // Keys strictly increase along the walk: no entry is ever returned twice.
          for (let i = 1; i < seenKeys.length; i++) {
            expect(
              refCompare('desc', seenKeys[i - 1] as RankKey, seenKeys[i] as RankKey),
            ).toBeLessThan(0)
          }
          // Every entry that was never touched during the walk was returned exactly once.
          let untouched = 0
          for (const k of index.entries()) {
            const player = playerOf.get(k.seq) as number
            if (!touched.has(player)) {
              untouched++
              expect(k).toEqual(atStart.get(player))
              expect(seenKeys.filter((s) => s.seq === k.seq)).toEqual([k])
            }
          }
          expect(untouched).toBe([...atStart.keys()].filter((p) => !touched.has(p)).length)
          index.checkInvariants()
        },
      ),
      { numRuns: 200 },
    )
  })
})

/** base64url (no padding) of a UTF-8 string, built with Node's Buffer rather than the module. */
const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64url')

/** A cursor as issued before keys lost their player id. */
function legacyCursor(score: number, subscore: number, seq: number, playerId: string): string {
  return b64(JSON.stringify([score, subscore, seq, playerId]))
}

/** The same cursor with the unused low bits of its last character set: the same bytes decoded. */
function withTrailingBits(cursor: string): string | null {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const spare = cursor.length % 4 === 2 ? 4 : cursor.length % 4 === 3 ? 2 : 0
  if (spare === 0) return null
  const last = alphabet.indexOf(cursor[cursor.length - 1] as string)
  return cursor.slice(0, -1) + alphabet[last | 1]
}

describe('cursors', () => {
  it('are base64url of the JSON [score, subscore, seq], without padding', () => {
    expect(encodeCursor(key(1.5, 3, 2))).toBe(b64('[1.5,2,3]'))
    expect(encodeCursor(key(-0, 3, -0))).toBe(b64('[0,0,3]'))
    expect(encodeCursor(key(-1e300, -7, 0.1))).toBe(b64('[-1e+300,0.1,-7]'))
    expect(encodeCursor(key(1, 1))).not.toMatch(/=/)
  })

  it('round-trip keys exactly, including awkward numbers', () => {
    fc.assert(
      fc.property(
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.maxSafeInteger(),
        (score, subscore, seq) => {
          const cursor = encodeCursor({ score, subscore, seq })
          expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/)
          expect(cursor).toBe(b64(JSON.stringify([score, subscore, seq])))
          // -0 is normalised to 0, like the index does.
          expect(decodeCursor(cursor)).toStrictEqual({
            score: score + 0,
            subscore: subscore + 0,
            seq,
          })
        },
      ),
    )
  })

  it('reads legacy cursors that carry a player id, returning the key alone', () => {
    fc.assert(
      fc.property(
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.maxSafeInteger(),
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }),
          fc.string({ minLength: 1, maxLength: 20, unit: 'binary' }),
          fc.constantFrom('"', '\\', '\u2028', '\u0000', '</script>', 'p'),
        ),
        (score, subscore, seq, playerId) => {
          const cursor = legacyCursor(score, subscore, seq, playerId)
          expect(decodeCursor(cursor)).toStrictEqual({
            score: score + 0,
            subscore: subscore + 0,
            seq,
          })
          // The same bytes spelled otherwise are refused.
          const odd = withTrailingBits(cursor)
          if (odd !== null && odd !== cursor) expect(decodeCursor(odd)).toBeNull()
        },
      ),
    )
    // A walk in flight goes on from a legacy cursor as from the new one.
    const index = new RankIndex('desc')
    index.load(Array.from({ length: 100 }, (_, i) => key(i % 10, i)))
    const last = index.page(null, 30)[29] as RankKey
    const next = index.page(decodeCursor(legacyCursor(last.score, 0, last.seq, 'player-7')), 10)
    expect(next).toEqual(index.range(31, 10))
    expect(next).toEqual(index.page(decodeCursor(encodeCursor(last)), 10))
  })

  it('refuses legacy cursors with an empty or non-string id, or in another spelling', () => {
    expect(decodeCursor(b64('[1,2,3,"p"]'))).toStrictEqual(key(1, 3, 2))
    for (const forged of [
      b64('[1,2,3,""]'),
      b64('[1,2,3,7]'),
      b64('[1,2,3,null]'),
      b64('[1,2,3,["p"]]'),
      b64('[1,2,3,{"id":"p"}]'),
      b64('[1,2,3,true]'),
      b64('[1, 2, 3, "p"]'),
      b64('[1,2,3,"p"] '),
      b64(' [1,2,3,"p"]'),
      b64('[1,2,3,"\\u0070"]'), // "p" with an escape
      b64('[1.0,2,3,"p"]'),
      b64('[1,2e0,3,"p"]'),
      b64('[-0,0,3,"p"]'),
      b64('[1,2,3,"p","q"]'),
      b64('[1,2,3.5,"p"]'),
      b64('[1,2,"3","p"]'),
      b64('\uFEFF[1,2,3,"p"]'),
      withTrailingBits(b64('[1,2,3,"p"]')),
    ]) {
      expect(forged).not.toBeNull()
      expect(decodeCursor(forged), forged as string).toBeNull()
    }
  })

  it('decodes forged cursors to null without throwing', () => {
    const forged: unknown[] = [
      undefined,
      null,
      42,
      { toString: () => b64('[1,2,3]') },
      '',
      '!!!!',
      'a',
      'abc=',
      `${b64('[1,2,3]')}=`,
      `${b64('[1,2,3]')}==`,
      b64('[1,2,3]').replace(/-/g, '+').replace(/_/g, '/') + '+',
      ` ${b64('[1,2,3]')}`,
      b64('not json'),
      b64('{"score":1}'),
      b64('[]'),
      b64('[1,2]'),
      b64('["1",2,3]'),
      b64('[1,"2",3]'),
      b64('[1,2,3.5]'),
      b64('[1,2,-1e20]'),
      b64('[1,2,9007199254740992]'),
      b64('[1e400,2,3]'),
      b64('[1,-1e400,3]'),
      b64('[null,2,3]'),
      b64('[1, 2, 3]'), // valid shape but not the canonical spelling
      b64('[1.0,2,3]'),
      b64('[1,2,3.0]'),
      b64('[1e2,2,3]'),
      b64('[-0,0,3]'),
      b64('[0,-0,3]'),
      b64('[1,2,-0]'),
      b64('\uFEFF[1,2,3]'),
      withTrailingBits(b64('[1,2,3]')),
      withTrailingBits(b64('[1,2,34]')),
      Buffer.from([0x5b, 0xff, 0xfe, 0x5d]).toString('base64url'), // invalid UTF-8
      'A'.repeat(5000),
      b64(`[1,2,3,"${'p'.repeat(2000)}"]`), // a legacy cursor, but far too long
    ]
    for (const cursor of forged) expect(decodeCursor(cursor), String(cursor)).toBeNull()
    expect(decodeCursor(b64('[1,2,3]'))).toStrictEqual(key(1, 3, 2))
    expect(decodeCursor(b64('[1e+300,2,3]'))).toStrictEqual(key(1e300, 3, 2))
  })

  it('accepts exactly the canonical arrays of the right shape', () => {
    const element = fc.oneof(
      fc.integer({ min: -5, max: 5 }),
      fc.double(),
      fc.constantFrom(2 ** 53, -(2 ** 53), 0.5, 1e21),
      fc.string({ maxLength: 6 }),
      fc.constantFrom(null, true, ''),
    )
    fc.assert(
      fc.property(fc.array(element, { minLength: 2, maxLength: 5 }), (arr) => {
        const json = JSON.stringify(arr)
        const parsed = JSON.parse(json) as unknown[]
        const [score, subscore, seq, id] = parsed
        const valid =
          (parsed.length === 3 || (parsed.length === 4 && typeof id === 'string' && id !== '')) &&
          typeof score === 'number' &&
          typeof subscore === 'number' &&
          Number.isSafeInteger(seq)
        expect(decodeCursor(b64(json))).toStrictEqual(valid ? { score, subscore, seq } : null)
      }),
      { numRuns: 300 },
    )
  })

  it('never throws on arbitrary strings, and accepts only canonical spellings', () => {
    const canonical = (s: string, k: RankKey) => {
      if (encodeCursor(k) === s) return true
      const value = JSON.parse(Buffer.from(s, 'base64url').toString('utf8')) as unknown[]
      return value.length === 4 && b64(JSON.stringify(value)) === s
    }
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        const k = decodeCursor(s)
        if (k !== null) expect(canonical(s, k)).toBe(true)
      }),
    )
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
        const s = Buffer.from(bytes).toString('base64url')
        const k = decodeCursor(s)
        if (k !== null) expect(canonical(s, k)).toBe(true)
      }),
    )
  })
})
