import type { RngGenerator, RngState } from './types.ts'

/**
 * sfc32 (Chris Doty-Humphrey's Small Fast Chaotic PRNG, from PractRand) over four 32-bit words,
 * seeded by cyrb128 of a string. Its state is four integers, so it lives in the match state as
 * plain JSON; its counter word guarantees a period of at least 2^32. Not cryptographic.
 */

/** Rounds discarded after seeding, so similar seeds diverge before the first output. */
const WARMUP_ROUNDS = 15
const TWO_POW_32 = 0x1_0000_0000

/**
 * Hash a seed string into initial sfc32 words (cyrb128) and warm the generator up.
 * @example const rng = createRng(seedRng('match-42'))
 */
export function seedRng(seed: string): RngState {
  let h1 = 1779033703
  let h2 = 3144134277
  let h3 = 1013904242
  let h4 = 2773480762
  for (let i = 0; i < seed.length; i++) {
    const k = seed.charCodeAt(i)
    h1 = h2 ^ Math.imul(h1 ^ k, 597399067)
    h2 = h3 ^ Math.imul(h2 ^ k, 2869860233)
    h3 = h4 ^ Math.imul(h3 ^ k, 951274213)
    h4 = h1 ^ Math.imul(h4 ^ k, 2716044179)
  }
  h1 = Math.imul(h3 ^ (h1 >>> 18), 597399067)
  h2 = Math.imul(h4 ^ (h2 >>> 22), 2869860233)
  h3 = Math.imul(h1 ^ (h3 >>> 17), 951274213)
  h4 = Math.imul(h2 ^ (h4 >>> 19), 2716044179)
  h1 ^= h2 ^ h3 ^ h4
  h2 ^= h1
  h3 ^= h1
  h4 ^= h1
  const words: RngState = [h1 >>> 0, h2 >>> 0, h3 >>> 0, h4 >>> 0]
  for (let i = 0; i < WARMUP_ROUNDS; i++) sfc32(words)
  return words
}

/** Advance `s` in place and return the next output. */
function sfc32(s: RngState): number {
  let [a, b, c, d] = s
  const t = (((a + b) | 0) + d) | 0
  d = (d + 1) | 0
  a = b ^ (b >>> 9)
  b = (c + (c << 3)) | 0
  c = (c << 21) | (c >>> 11)
  c = (c + t) | 0
  s[0] = a >>> 0
  s[1] = b >>> 0
  s[2] = c >>> 0
  s[3] = d >>> 0
  return t >>> 0
}

/** True for four integers in [0, 2^32): a state `createRng` accepts. */
export function isRngState(value: unknown): value is RngState {
  return (
    Array.isArray(value) &&
    value.length === 4 &&
    value.every((w) => Number.isInteger(w) && w >= 0 && w < TWO_POW_32)
  )
}

/**
 * A generator over a private copy of `state`; the caller's array is never modified.
 * @example
 * const rng = createRng(match.rng)
 * const die = rng.int(1, 6)
 * const next = rng.state() // store this back
 */
export function createRng(state: RngState): RngGenerator {
  if (!isRngState(state)) throw new TypeError('invalid rng state')
  const s: RngState = [state[0], state[1], state[2], state[3]]
  const uint32 = (): number => sfc32(s)
  return {
    uint32,
    float: () => uint32() / TWO_POW_32,
    int(min: number, max: number): number {
      if (!Number.isSafeInteger(min) || !Number.isSafeInteger(max) || max < min) {
        throw new RangeError(`invalid range [${min}, ${max}]`)
      }
      const n = max - min + 1
      if (n > TWO_POW_32) throw new RangeError('range wider than 2^32')
      // Rejection sampling removes modulo bias; each draw is accepted with probability > 1/2, so
      // the cap is never reached in practice and only bounds the loop.
      const limit = TWO_POW_32 - (TWO_POW_32 % n)
      let x = uint32()
      for (let tries = 0; x >= limit && tries < 64; tries++) x = uint32()
      return min + (x % n)
    },
    state: () => [s[0], s[1], s[2], s[3]],
  }
}
