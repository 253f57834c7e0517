import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { RankEntry, RankKey, SortOrder } from '../../workers/core/rank-index.ts'
import {
  compareEntries,
  decodeCursor,
  encodeCursor,
  RankIndex,
} from '../../workers/core/rank-index.ts'

/**
 * Reference order written independently of the module: a tuple comparison with the direction
 * applied to score and subscore, and player ids compared as UTF-8 bytes.
 */
function refCompare(order: SortOrder, a: RankKey, b: RankKey): number {
  const sign = order === 'asc' ? 1 : -1
  if (a.score < b.score) return -sign
  if (a.score > b.score) return sign
  if (a.subscore < b.subscore) return -sign
  if (a.subscore > b.subscore) return sign
  if (a.seq !== b.seq) return a.seq - b.seq
  return Buffer.compare(Buffer.from(a.playerId, 'utf8'), Buffer.from(b.playerId, 'utf8'))
}

function refSorted(order: SortOrder, entries: Iterable<RankEntry>): RankEntry[] {
  return [...entries].sort((a, b) => refCompare(order, a, b))
}

const ids = (entries: readonly RankEntry[]) => entries.map((e) => e.playerId)

function entry(playerId: string, score: number, seq: number, subscore = 0): RankEntry {
  return { playerId, score, subscore, seq }
}

function walkPages(index: RankIndex, pageSize: number): RankEntry[] {
  const out: RankEntry[] = []
  let after: RankKey | null = null
  for (let guard = 0; guard <= index.size + 1; guard++) {
    const page = index.page(after, pageSize)
    out.push(...page)
    if (page.length < pageSize) return out
    after = page[page.length - 1] as RankEntry
  }
  throw new Error('page walk did not end')
}

/** Checks every query against the sorted reference. */
function checkAgainst(index: RankIndex, order: SortOrder, model: Map<string, RankEntry>): void {
  index.checkInvariants()
  const sorted = refSorted(order, model.values())
  expect(index.size).toBe(sorted.length)
  // Collected first and compared once: one expect per entry is slow at 30,000 entries.
  expect(sorted.map((e) => index.rankOf(e.playerId))).toEqual(sorted.map((_, i) => i + 1))
  expect(sorted.map((_, i) => index.at(i + 1))).toEqual(sorted)
  expect(sorted.map((e) => index.get(e.playerId))).toEqual(sorted)
  expect(index.at(0)).toBeUndefined()
  expect(index.at(sorted.length + 1)).toBeUndefined()
  expect(ids(walkPages(index, 3))).toEqual(ids(sorted))
  expect(ids([...index.entries()])).toEqual(ids(sorted))
}

describe('compareEntries', () => {
  it('orders by score, subscore, earlier seq, then player id bytes', () => {
    const a = entry('a', 10, 5, 1)
    expect(compareEntries('desc', a, entry('b', 9, 1))).toBeLessThan(0)
    expect(compareEntries('asc', a, entry('b', 9, 1))).toBeGreaterThan(0)
    expect(compareEntries('desc', a, entry('b', 10, 1, 0))).toBeLessThan(0)
    expect(compareEntries('asc', a, entry('b', 10, 1, 0))).toBeGreaterThan(0)
    // seq is not flipped by the direction: the earlier submission wins a tie either way.
    expect(compareEntries('desc', a, entry('b', 10, 4, 1))).toBeGreaterThan(0)
    expect(compareEntries('asc', a, entry('b', 10, 4, 1))).toBeGreaterThan(0)
    expect(compareEntries('asc', entry('b', 1, 1), entry('a', 1, 1))).toBeGreaterThan(0)
    expect(compareEntries('asc', a, { ...a })).toBe(0)
  })

  it('compares player ids as UTF-8 bytes, not UTF-16 units', () => {
    // U+E000 is EE 80 80 in UTF-8, U+1F600 is F0 9F 98 80; in UTF-16 the surrogate D83D sorts first.
    const low = entry('\uE000', 1, 1)
    const high = entry('\u{1F600}', 1, 1)
    expect(compareEntries('asc', low, high)).toBeLessThan(0)
    expect(compareEntries('desc', high, low)).toBeGreaterThan(0)
    expect(compareEntries('asc', entry('ab', 1, 1), entry('abc', 1, 1))).toBeLessThan(0)
  })
})

describe('RankIndex basics', () => {
  it('handles an empty index', () => {
    const index = new RankIndex('desc')
    expect(index.size).toBe(0)
    expect(index.rankOf('x')).toBeUndefined()
    expect(index.get('x')).toBeUndefined()
    expect(index.at(1)).toBeUndefined()
    expect(index.page(null, 10)).toEqual([])
    expect(index.page(entry('x', 1, 1), 10)).toEqual([])
    expect(index.range(1, 10)).toEqual([])
    expect(index.around('x', 5)).toEqual([])
    expect(index.rankOfKey(entry('x', 1, 1))).toBe(0)
    expect([...index.entries()]).toEqual([])
    expect(index.remove('x')).toBeUndefined()
    index.checkInvariants()
  })

  it('handles a single entry', () => {
    const index = new RankIndex('asc')
    const e = entry('solo', 3.5, 1)
    expect(index.upsert(e)).toBeUndefined()
    expect(index.size).toBe(1)
    expect(index.rankOf('solo')).toBe(1)
    expect(index.at(1)).toEqual(e)
    expect(index.page(null, 10)).toEqual([e])
    expect(index.page(e, 10)).toEqual([])
    expect(index.around('solo', 5)).toEqual([e])
    expect(index.rankOfKey(entry('a', 3.5, 0))).toBe(0)
    expect(index.rankOfKey(entry('a', 3.5, 2))).toBe(1)
    expect(index.remove('solo')).toEqual(e)
    expect(index.size).toBe(0)
    index.checkInvariants()
  })

  it('replaces a player on upsert and returns the previous entry', () => {
    const index = new RankIndex('desc')
    index.upsert(entry('a', 10, 1))
    index.upsert(entry('b', 20, 2))
    expect(index.upsert(entry('a', 30, 3))).toEqual(entry('a', 10, 1))
    expect(index.size).toBe(2)
    expect(ids(index.page(null, 10))).toEqual(['a', 'b'])
  })

  it('copies entries, so mutating the input does not corrupt the index', () => {
    const index = new RankIndex('desc')
    const e = { playerId: 'a', score: 1, subscore: 0, seq: 1 }
    index.upsert(e)
    e.score = 100
    expect(index.get('a')?.score).toBe(1)
  })

  it('returns entries that are plain data to JSON, spread and structured clone', () => {
    const index = new RankIndex('desc')
    index.upsert(entry('a', 1.5, 7, 2))
    const stored = index.get('a') as RankEntry
    const plain = { playerId: 'a', score: 1.5, subscore: 2, seq: 7 }
    expect(JSON.parse(JSON.stringify(stored))).toStrictEqual(plain)
    expect({ ...stored }).toStrictEqual(plain)
    expect(structuredClone(stored)).toStrictEqual(plain)
    expect(Object.keys(stored).sort()).toEqual(['playerId', 'score', 'seq', 'subscore'])
  })

  it('breaks ties by subscore, then earlier submission, then player id', () => {
    const index = new RankIndex('desc')
    index.upsert(entry('late', 10, 3))
    index.upsert(entry('early', 10, 1))
    index.upsert(entry('sub', 10, 9, 5))
    index.upsert(entry('z', 10, 2))
    index.upsert(entry('y', 10, 2))
    expect(ids(index.page(null, 10))).toEqual(['sub', 'early', 'y', 'z', 'late'])
    const asc = new RankIndex('asc')
    asc.load([entry('late', 10, 3), entry('early', 10, 1), entry('sub', 10, 9, 5)])
    expect(ids(asc.page(null, 10))).toEqual(['early', 'late', 'sub'])
  })

  it('treats -0 as 0', () => {
    const index = new RankIndex('desc')
    index.upsert(entry('neg', -0, 1))
    index.upsert(entry('pos', 0, 2))
    index.upsert(entry('sub', 0, 3, -0))
    expect(Object.is(index.get('neg')?.score, 0)).toBe(true)
    expect(Object.is(index.get('sub')?.subscore, 0)).toBe(true)
    expect(ids(index.page(null, 10))).toEqual(['neg', 'pos', 'sub'])
    expect(index.rankOfKey(entry('a', -0, 2))).toBe(1) // after neg (seq 1), before pos ('a' < 'pos')
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
    const index = new RankIndex('asc')
    values.forEach((v, i) => index.upsert(entry(`p${i}`, v, i)))
    const expected = values
      .map((v, i) => ({ v, id: `p${i}` }))
      .sort((a, b) => a.v - b.v)
      .map((x) => x.id)
    expect(ids(index.page(null, 20))).toEqual(expected)
  })

  it('rejects entries that would break the order, leaving the index unchanged', () => {
    const index = new RankIndex('desc')
    index.upsert(entry('a', 1, 1))
    for (const bad of [
      entry('a', Number.NaN, 2),
      entry('a', Number.POSITIVE_INFINITY, 2),
      entry('a', 1, 2, Number.NEGATIVE_INFINITY),
      entry('a', 1, 1.5),
      entry('', 1, 2),
    ]) {
      expect(() => index.upsert(bad)).toThrow()
    }
    expect(() => index.load([entry('b', 1, 1), entry('c', Number.NaN, 2)])).toThrow()
    expect(index.get('a')).toEqual(entry('a', 1, 1))
    expect(index.size).toBe(1)
    expect(() => index.page(null, -1)).toThrow(RangeError)
    expect(() => index.page(null, 1.5)).toThrow(RangeError)
    expect(() => index.range(0, 1)).toThrow(RangeError)
    expect(() => new RankIndex('up' as SortOrder)).toThrow(TypeError)
  })

  it('centres around() and shifts it at the edges', () => {
    const index = new RankIndex('desc')
    for (let i = 1; i <= 10; i++) index.upsert(entry(`r${i}`, 100 - i, i)) // r1 ranks 1
    const window = (id: string, limit: number) => ids(index.around(id, limit))
    expect(window('r5', 5)).toEqual(['r3', 'r4', 'r5', 'r6', 'r7'])
    expect(window('r5', 4)).toEqual(['r4', 'r5', 'r6', 'r7'])
    expect(window('r1', 5)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5'])
    expect(window('r2', 5)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5'])
    expect(window('r10', 5)).toEqual(['r6', 'r7', 'r8', 'r9', 'r10'])
    expect(window('r9', 5)).toEqual(['r6', 'r7', 'r8', 'r9', 'r10'])
    expect(window('r4', 50)).toHaveLength(10)
    expect(window('r4', 1)).toEqual(['r4'])
    expect(window('r4', 0)).toEqual([])
    expect(window('nobody', 5)).toEqual([])
  })

  it('gives ranges, ranks of keys and iteration from a rank', () => {
    const index = new RankIndex('asc')
    for (let i = 0; i < 500; i++) index.upsert(entry(`p${i}`, i * 2, i))
    expect(ids(index.range(101, 3))).toEqual(['p100', 'p101', 'p102'])
    expect(ids(index.range(499, 5))).toEqual(['p498', 'p499'])
    expect(index.range(501, 5)).toEqual([])
    expect(index.rankOfKey(entry('x', 7, 0))).toBe(4) // scores 0, 2, 4, 6 sort before 7
    expect(index.rankOfKey(entry('x', 1000, 0))).toBe(500)
    expect(ids([...index.entries(498)])).toEqual(['p497', 'p498', 'p499'])
    const it = index.entries(1)
    it.next()
    index.upsert(entry('p1', 5000, 999))
    expect(() => it.next()).toThrow(/modified/)
  })

  it('clears', () => {
    const index = new RankIndex('desc')
    for (let i = 0; i < 300; i++) index.upsert(entry(`p${i}`, i, i))
    index.clear()
    expect(index.size).toBe(0)
    expect(index.page(null, 5)).toEqual([])
    index.upsert(entry('a', 1, 1))
    expect(index.rankOf('a')).toBe(1)
    index.checkInvariants()
  })

  it('bulk-loads unsorted input like repeated upserts (later duplicates win)', () => {
    const input: RankEntry[] = []
    let seed = 7
    const next = () => (seed = (seed * 48271) % 2147483647)
    for (let i = 0; i < 5000; i++) input.push(entry(`p${next() % 3000}`, next() % 500, i))
    const loaded = new RankIndex('desc')
    loaded.load(input)
    loaded.checkInvariants()
    const model = new Map<string, RankEntry>()
    for (const e of input) model.set(e.playerId, e)
    checkAgainst(loaded, 'desc', model)
    // Still a healthy tree for later writes and deletes.
    for (let i = 0; i < 3000; i += 2) {
      loaded.remove(`p${i}`)
      model.delete(`p${i}`)
    }
    checkAgainst(loaded, 'desc', model)
  })

  it('stays balanced through growth and shrinkage', () => {
    const index = new RankIndex('asc')
    const model = new Map<string, RankEntry>()
    for (let i = 0; i < 20_000; i++) {
      const e = entry(`p${i}`, (i * 7919) % 10007, i)
      index.upsert(e)
      model.set(e.playerId, e)
    }
    checkAgainst(index, 'asc', model)
    for (let i = 0; i < 20_000; i++) {
      if (i % 10 !== 0) {
        index.remove(`p${i}`)
        model.delete(`p${i}`)
      }
    }
    checkAgainst(index, 'asc', model)
  }, 30_000)
  it('rebalances under churn at both ends (merges and borrows at every level)', () => {
    for (const order of ['asc', 'desc'] as const) {
      const index = new RankIndex(order)
      const model = new Map<string, RankEntry>()
      let seed = 42
      const next = () => (seed = (seed * 48271) % 2147483647)
      let id = 0
      const add = () => {
        const e = entry(`p${id}`, next() % 100_000, id++)
        index.upsert(e)
        model.set(e.playerId, e)
      }
      const drop = (e: RankEntry | undefined) => {
        if (e === undefined || index.remove(e.playerId) !== e) throw new Error('remove failed')
        model.delete(e.playerId)
      }
      for (let i = 0; i < 30_000; i++) add()
      for (let i = 0; i < 30_000; i++) {
        drop(index.at(1))
        drop(index.at(index.size))
        add()
        add()
        if (i % 10_000 === 0) index.checkInvariants()
      }
      checkAgainst(index, order, model)
    }
  }, 30_000)
})

type Op =
  | { kind: 'upsert'; player: number; score: number; subscore: number }
  | { kind: 'remove'; player: number }

const scoreArb = fc.oneof(
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(-0, 0.5, -1e-300, 1e300, Number.MAX_VALUE, -Number.MAX_VALUE),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
)

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('upsert' as const),
      player: fc.nat(150),
      score: scoreArb,
      subscore: fc.integer({ min: -1, max: 1 }),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('remove' as const), player: fc.nat(150) }),
  },
)

describe('RankIndex against a sorted-array reference', () => {
  for (const order of ['asc', 'desc'] as const) {
    it(`agrees on rank, at, pages, around, rankOfKey and size (${order})`, () => {
      fc.assert(
        fc.property(
          fc.array(opArb, { maxLength: 600 }),
          fc.integer({ min: 1, max: 12 }),
          fc.array(fc.tuple(fc.nat(150), fc.integer({ min: 0, max: 12 })), { maxLength: 8 }),
          fc.array(fc.tuple(scoreArb, fc.integer({ min: -1, max: 1 }), fc.nat(700)), {
            maxLength: 8,
          }),
          (ops, pageSize, arounds, keys) => {
            const index = new RankIndex(order)
            const model = new Map<string, RankEntry>()
            let seq = 0
            for (const op of ops) {
              const id = `p${op.player}`
              if (op.kind === 'upsert') {
                // Equal seqs for different players exercise the player-id tie-break.
                const e = entry(id, op.score + 0, seq % 3 === 0 ? 0 : seq, op.subscore)
                seq++
                expect(index.upsert(e)).toEqual(model.get(id))
                model.set(id, e)
              } else {
                expect(index.remove(id)).toEqual(model.get(id))
                model.delete(id)
              }
            }
            checkAgainst(index, order, model)
            const sorted = refSorted(order, model.values())
            expect(ids(walkPages(index, pageSize))).toEqual(ids(sorted))
            for (const [player, limit] of arounds) {
              const id = `p${player}`
              const pos = sorted.findIndex((e) => e.playerId === id)
              const got = ids(index.around(id, limit))
              if (pos < 0) {
                expect(got).toEqual([])
                continue
              }
              const count = Math.min(limit, sorted.length)
              expect(got).toHaveLength(count)
              if (count === 0) continue
              expect(got).toContain(id)
              const start = sorted.findIndex((e) => e.playerId === got[0])
              expect(got).toEqual(ids(sorted.slice(start, start + count)))
              // Centred unless an edge forces a shift.
              const above = pos - start
              const wanted = Math.floor((count - 1) / 2)
              const atTop = start === 0
              const atBottom = start + count === sorted.length
              if (!atTop && !atBottom) expect(above).toBe(wanted)
              if (atTop && !atBottom) expect(above).toBeLessThanOrEqual(wanted)
              if (atBottom && !atTop) expect(above).toBeGreaterThanOrEqual(wanted)
            }
            for (const [score, subscore, s] of keys) {
              const key = entry('p75', score + 0, s, subscore)
              const before = sorted.filter((e) => refCompare(order, e, key) < 0).length
              expect(index.rankOfKey(key)).toBe(before)
              expect(ids(index.page(key, 5))).toEqual(
                ids(
                  sorted
                    .slice(before)
                    .filter((e) => refCompare(order, e, key) > 0)
                    .slice(0, 5),
                ),
              )
            }
          },
        ),
        { numRuns: 150 },
      )
    })
  }

  it('never repeats an entry while paging through changing scores, nor skips one that stayed put', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 400 }),
        fc.integer({ min: 1, max: 25 }),
        fc.array(fc.array(opArb, { maxLength: 15 }), { maxLength: 80 }),
        (initial, pageSize, changesBetweenPages) => {
          const index = new RankIndex('desc')
          let seq = 0
          for (let i = 0; i < initial; i++) index.upsert(entry(`p${i % 151}`, i % 37, seq++))
          const touched = new Set<string>()
          const seenKeys: RankEntry[] = []
          const seenPlayers = new Set<string>()
          let after: RankKey | null = null
          for (let pageNo = 0; pageNo < 1000; pageNo++) {
            const page = index.page(after, pageSize)
            seenKeys.push(...page)
            for (const e of page) {
              // A player is only seen twice if their entry changed during the walk.
              if (seenPlayers.has(e.playerId)) expect(touched.has(e.playerId)).toBe(true)
              seenPlayers.add(e.playerId)
              expect(index.get(e.playerId)).toEqual(e)
            }
            if (page.length < pageSize) break
            // The cursor travels through a string, as it would through a client.
            after = decodeCursor(encodeCursor(page[page.length - 1] as RankEntry))
            expect(after).not.toBeNull()
            for (const op of changesBetweenPages[pageNo] ?? []) {
              const id = `p${op.player}`
              touched.add(id)
              if (op.kind === 'upsert') {
                index.upsert(entry(id, Math.round(op.score) % 40, seq++, op.subscore))
              } else {
                index.remove(id)
              }
            }
          }
          // Keys strictly increase along the walk: no entry is ever returned twice.
          for (let i = 1; i < seenKeys.length; i++) {
            expect(
              refCompare('desc', seenKeys[i - 1] as RankEntry, seenKeys[i] as RankEntry),
            ).toBeLessThan(0)
          }
          // Every entry that was never touched during the walk was returned exactly once.
          for (const e of index.entries()) {
            if (!touched.has(e.playerId)) {
              expect(seenKeys.filter((s) => s.playerId === e.playerId)).toEqual([e])
            }
          }
        },
      ),
      { numRuns: 200 },
    )
  })
})

describe('cursors', () => {
  it('round-trips keys exactly, including awkward numbers and ids', () => {
    fc.assert(
      fc.property(
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.double({ noNaN: true, noDefaultInfinity: true }),
        fc.maxSafeInteger(),
        fc.string({ minLength: 1, maxLength: 40, unit: 'grapheme' }),
        (score, subscore, seq, playerId) => {
          const cursor = encodeCursor({ playerId, score, subscore, seq })
          expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/)
          // -0 is normalised to 0, like the index does.
          expect(decodeCursor(cursor)).toEqual({
            playerId,
            score: score + 0,
            subscore: subscore + 0,
            seq,
          })
        },
      ),
    )
  })

  it('decodes forged cursors to null without throwing', () => {
    const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64url')
    const forged: unknown[] = [
      undefined,
      null,
      42,
      '',
      '!!!!',
      'a',
      'abc=',
      b64('not json'),
      b64('{"score":1}'),
      b64('[1,2,3]'),
      b64('[1,2,3,"p",5]'),
      b64('["1",2,3,"p"]'),
      b64('[1,2,3.5,"p"]'),
      b64('[1,2,-1e20,"p"]'),
      b64('[1e400,2,3,"p"]'),
      b64('[1,2,3,""]'),
      b64('[1,2,3,7]'),
      b64('[1, 2, 3, "p"]'), // valid shape but not the canonical spelling
      b64('[-0,0,3,"p"]'),
      Buffer.from([0x5b, 0xff, 0xfe, 0x5d]).toString('base64url'), // invalid UTF-8
      'A'.repeat(5000),
    ]
    for (const cursor of forged) expect(decodeCursor(cursor)).toBeNull()
    expect(decodeCursor(b64('[1,2,3,"p"]'))).toEqual(entry('p', 1, 3, 2))
  })

  it('never throws on arbitrary strings', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 200 }), (s) => {
        const key = decodeCursor(s)
        if (key !== null) expect(encodeCursor(key)).toBe(s)
      }),
    )
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 120 }), (bytes) => {
        const s = Buffer.from(bytes).toString('base64url')
        const key = decodeCursor(s)
        if (key !== null) expect(encodeCursor(key)).toBe(s)
      }),
    )
  })
})
