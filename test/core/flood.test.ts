import { describe, expect, it } from 'vitest'
import {
  FLOOD_WINDOW_MS,
  MAX_REFUSED_FRAMES,
  refusedTooOften,
  type RefusalCounts,
} from '../../workers/lib/flood.ts'

describe('refusedTooOften', () => {
  it('is true from the refusal past the limit within one window, and a new window starts afresh', () => {
    const counts: RefusalCounts<object> = new WeakMap()
    const socket = {}
    const results = Array.from({ length: MAX_REFUSED_FRAMES + 2 }, (_, i) =>
      refusedTooOften(counts, socket, 1_000 + i),
    )
    expect(results.indexOf(true)).toBe(MAX_REFUSED_FRAMES)
    expect(results.slice(MAX_REFUSED_FRAMES)).toEqual([true, true])
    // The next window counts from zero; so does another socket.
    expect(refusedTooOften(counts, socket, 1_000 + FLOOD_WINDOW_MS)).toBe(false)
    expect(refusedTooOften(counts, {}, 1_500)).toBe(false)
  })

  it('a steady trickle of refusals under the limit per window is never too often', () => {
    const counts: RefusalCounts<object> = new WeakMap()
    const socket = {}
    const perWindow = MAX_REFUSED_FRAMES
    let flagged = false
    for (let w = 0; w < 5; w++) {
      for (let i = 0; i < perWindow; i++) {
        flagged ||= refusedTooOften(counts, socket, w * FLOOD_WINDOW_MS + i)
      }
    }
    expect(flagged).toBe(false)
  })
})
