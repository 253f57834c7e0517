import { describe, expect, it } from 'vitest'
import { archiveDelayMs } from '../../workers/core/leaderboard.ts'

const HOUR = 3_600_000
const WEEK = 7 * 24 * HOUR

describe('archiveDelayMs', () => {
  it('is the same for a board at every boundary, and within the spread', () => {
    for (const id of ['weekly-race', 'a', 'season-7.eu']) {
      const d = archiveDelayMs(id, 120_000, WEEK)
      expect(d).toBe(archiveDelayMs(id, 120_000, WEEK))
      expect(d).toBeGreaterThanOrEqual(0)
      expect(d).toBeLessThan(120_000)
      expect(Number.isInteger(d)).toBe(true)
    }
  })

  it('spreads boards sharing a boundary over the window', () => {
    const delays = Array.from({ length: 2_000 }, (_, i) =>
      archiveDelayMs(`board-${i}`, 120_000, WEEK),
    )
    // Each 10 s of the 2 minutes gets some of the 2,000 boards, none most of them.
    const buckets = new Array<number>(12).fill(0)
    for (const d of delays) buckets[Math.floor(d / 10_000)]!++
    expect(Math.min(...buckets)).toBeGreaterThan(100)
    expect(Math.max(...buckets)).toBeLessThan(300)
  })

  it('waits at most a quarter of a short cycle, and not at all without a spread', () => {
    for (let i = 0; i < 200; i++) {
      expect(archiveDelayMs(`b${i}`, 120_000, 60_000)).toBeLessThan(15_000)
    }
    expect(archiveDelayMs('b', 0, WEEK)).toBe(0)
    expect(archiveDelayMs('b', 120_000, 0)).toBe(0)
  })
})
