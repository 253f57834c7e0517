import { describe, expect, it } from 'vitest'
import { retryBackoffMs, spreadBackoffMs } from '../../workers/lib/alarm-backoff.ts'

describe('spreadBackoffMs', () => {
  it('waits between three quarters of the doubling backoff and all of it, never past the cap', () => {
    expect([1, 2, 3, 4].map((n) => spreadBackoffMs(n, 60_000, () => 0))).toEqual([
      1000, 2000, 4000, 8000,
    ])
    expect([1, 2, 3, 4].map((n) => spreadBackoffMs(n, 60_000, () => 0.999_999))).toEqual([
      750, 1500, 3000, 6000,
    ])
    for (let attempts = 1; attempts <= 30; attempts++) {
      const wait = spreadBackoffMs(attempts, 60_000)
      expect(wait).toBeLessThanOrEqual(Math.min(60_000, retryBackoffMs(attempts, 60_000)))
      expect(wait).toBeGreaterThanOrEqual(0.75 * retryBackoffMs(attempts, 60_000))
    }
  })

  it('keeps each wait longer than the one before, whatever the draws, until the cap', () => {
    for (let trial = 0; trial < 200; trial++) {
      const waits = [1, 2, 3, 4, 5, 6].map((n) => spreadBackoffMs(n, 60_000))
      for (let i = 1; i < waits.length; i++) expect(waits[i]!).toBeGreaterThan(waits[i - 1]!)
    }
  })

  it('spreads objects that failed together: a thousand retries after the same failures do not fall on a few moments', () => {
    const waits = new Set(Array.from({ length: 1000 }, () => spreadBackoffMs(6, 60_000)))
    // 32 s less up to 8 s, to the millisecond: a thousand draws land on hundreds of moments.
    expect(waits.size).toBeGreaterThan(500)
    expect(Math.min(...waits)).toBeGreaterThanOrEqual(24_000)
    expect(Math.max(...waits)).toBeLessThanOrEqual(32_000)
  })
})
