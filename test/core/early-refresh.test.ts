import { describe, expect, it } from 'vitest'
import { refreshEarly } from '../../workers/lib/early-refresh.ts'

/** The share of readers spread evenly over an answer's life, with draws spread evenly, that refresh it. */
function refreshShare(ttlMs: number, computeMs: number): number {
  let refreshed = 0
  let readers = 0
  for (let age = 0; age < ttlMs; age += 10) {
    for (let k = 0; k < 200; k++) {
      readers++
      if (refreshEarly(0, ttlMs, computeMs, age, (k + 0.5) / 200)) refreshed++
    }
  }
  return refreshed / readers
}

describe('early refresh of cached answers', () => {
  it('an answer that took long to make (a names lookup waiting out its deadline) is refreshed early by a few readers near its end, not a quarter of them', () => {
    // 4 s answers that took 1 s: a reader halfway through refreshes only on a draw under e^-10.
    expect(refreshEarly(0, 4000, 1000, 2000, 0.001)).toBe(false)
    const share = refreshShare(4000, 1000)
    expect(share).toBeGreaterThan(0)
    expect(share).toBeLessThan(0.06)
  })

  it('an answer that was quick to make is refreshed in the last moments, by its own time', () => {
    // Made in 50 ms: 10 ms before the end an even draw refreshes, 100 ms before it does not.
    expect(refreshEarly(0, 4000, 50, 3990, 0.5)).toBe(true)
    expect(refreshEarly(0, 4000, 50, 3900, 0.5)).toBe(false)
    expect(refreshShare(4000, 50)).toBeLessThan(refreshShare(4000, 1000))
    // Expired answers are always refreshed.
    expect(refreshEarly(0, 4000, 50, 4000, 0.999)).toBe(true)
  })
})
