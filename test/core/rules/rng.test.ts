import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { createRng, isRngState, seedRng } from '../../../workers/core/rules/rng.ts'
import { utf16Arb } from './helpers.ts'
import type { RngState } from '../../../workers/core/rules/types.ts'

const M = 1n << 32n
const u = (x: bigint): bigint => ((x % M) + M) % M
const imul = (a: bigint, b: bigint): bigint => u(a * b)
const rotl = (x: bigint, r: bigint): bigint => u((x << r) | (x >> (32n - r)))

/** cyrb128 and sfc32 (PractRand's definition) written again with BigInt arithmetic mod 2^32. */
function referenceSeed(seed: string): bigint[] {
  let [h1, h2, h3, h4] = [1779033703n, 3144134277n, 1013904242n, 2773480762n]
  for (const ch of seed) {
    for (let j = 0; j < ch.length; j++) {
      const k = BigInt(ch.charCodeAt(j))
      h1 = h2 ^ imul(h1 ^ k, 597399067n)
      h2 = h3 ^ imul(h2 ^ k, 2869860233n)
      h3 = h4 ^ imul(h3 ^ k, 951274213n)
      h4 = h1 ^ imul(h4 ^ k, 2716044179n)
    }
  }
  h1 = imul(h3 ^ (h1 >> 18n), 597399067n)
  h2 = imul(h4 ^ (h2 >> 22n), 2869860233n)
  h3 = imul(h1 ^ (h3 >> 17n), 951274213n)
  h4 = imul(h2 ^ (h4 >> 19n), 2716044179n)
  h1 ^= h2 ^ h3 ^ h4
  h2 ^= h1
  h3 ^= h1
  h4 ^= h1
  const s = [h1, h2, h3, h4]
  for (let i = 0; i < 15; i++) referenceNext(s)
  return s
}

function referenceNext(s: bigint[]): bigint {
  const [a, b, c, counter] = s as [bigint, bigint, bigint, bigint]
  const tmp = u(a + b + counter)
  s[0] = b ^ (b >> 9n)
  s[1] = u(c + (c << 3n))
  s[2] = u(rotl(c, 21n) + tmp)
  s[3] = u(counter + 1n)
  return tmp
}

describe('rng', () => {
  it('matches an independent BigInt implementation of cyrb128 + sfc32', () => {
    fc.assert(
      fc.property(utf16Arb, (seed) => {
        const ref = referenceSeed(seed)
        const words = seedRng(seed)
        expect(words).toEqual(ref.map(Number))
        const rng = createRng(words)
        for (let i = 0; i < 30; i++) expect(rng.uint32()).toBe(Number(referenceNext(ref)))
        expect(rng.state()).toEqual(ref.map(Number))
      }),
      { numRuns: 40 },
    )
  })

  it('gives the same sequence for the same seed and different ones for different seeds', () => {
    const a = createRng(seedRng('match-1'))
    const b = createRng(seedRng('match-1'))
    const c = createRng(seedRng('match-2'))
    const seqA = Array.from({ length: 20 }, () => a.uint32())
    expect(Array.from({ length: 20 }, () => b.uint32())).toEqual(seqA)
    expect(Array.from({ length: 20 }, () => c.uint32())).not.toEqual(seqA)
  })

  it('resumes exactly from a state that went through JSON', () => {
    fc.assert(
      fc.property(fc.string(), fc.nat(200), (seed, skip) => {
        const original = createRng(seedRng(seed))
        for (let i = 0; i < skip; i++) original.uint32()
        const stored = JSON.parse(JSON.stringify(original.state())) as RngState
        expect(isRngState(stored)).toBe(true)
        const resumed = createRng(stored)
        for (let i = 0; i < 20; i++) expect(resumed.int(1, 6)).toBe(original.int(1, 6))
      }),
      { numRuns: 100 },
    )
  })

  it('never touches the state array it was created from', () => {
    const words = seedRng('x')
    const copy = [...words]
    const rng = createRng(words)
    rng.uint32()
    rng.int(0, 10)
    expect(words).toEqual(copy)
    const snapshot = rng.state()
    rng.uint32()
    expect(rng.state()).not.toEqual(snapshot)
  })

  it('refuses malformed states and ranges', () => {
    expect(() => createRng([1, 2, 3] as unknown as RngState)).toThrow(TypeError)
    expect(() => createRng([1, 2, 3, -1])).toThrow(TypeError)
    expect(() => createRng([1, 2, 3, 2 ** 32])).toThrow(TypeError)
    expect(() => createRng([1, 2, 3, 0.5])).toThrow(TypeError)
    const rng = createRng(seedRng('r'))
    expect(() => rng.int(3, 2)).toThrow(RangeError)
    expect(() => rng.int(0, 2 ** 32)).toThrow(RangeError)
    expect(() => rng.int(0.5, 2)).toThrow(RangeError)
  })

  it('keeps int() and float() within bounds', () => {
    fc.assert(
      fc.property(
        fc.string(),
        fc.integer({ min: -1e9, max: 1e9 }),
        fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        (seed, min, width) => {
          const rng = createRng(seedRng(seed))
          for (let i = 0; i < 20; i++) {
            const x = rng.int(min, min + width)
            expect(Number.isInteger(x) && x >= min && x <= min + width).toBe(true)
            const f = rng.float()
            expect(f >= 0 && f < 1).toBe(true)
          }
        },
      ),
      { numRuns: 100 },
    )
  })

  it('rolls a fair die (chi-square over 60,000 rolls)', () => {
    const rng = createRng(seedRng('fairness'))
    const counts = [0, 0, 0, 0, 0, 0]
    const n = 60_000
    for (let i = 0; i < n; i++) {
      const face = rng.int(1, 6)
      counts[face - 1] = (counts[face - 1] ?? 0) + 1
    }
    const expected = n / 6
    const chi2 = counts.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0)
    // 5 degrees of freedom: 20.52 is the 0.999 quantile.
    expect(chi2).toBeLessThan(20.52)
  })
})
