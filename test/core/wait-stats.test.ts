import { describe, expect, it } from 'vitest'
import { queueWideWaits, waitPercentiles } from '../../workers/matchmaking/wait-stats.ts'

describe('wait percentiles', () => {
  it('are nearest-rank, in seconds, null without samples', () => {
    expect(waitPercentiles([])).toEqual({ p50: null, p95: null, p99: null, samples: 0 })
    const ms = Array.from({ length: 100 }, (_, i) => (100 - i) * 1000)
    expect(waitPercentiles(ms)).toEqual({ p50: 50, p95: 95, p99: 99, samples: 100 })
    expect(waitPercentiles([7000])).toEqual({ p50: 7, p95: 7, p99: 7, samples: 1 })
  })
})

describe("a queue's waits across regions", () => {
  it('are taken over the span every region covers in full', () => {
    const busy = { waitSamplesMs: [1, 2, 3], waitSampleAts: [300, 200, 100], waitSamplesSince: 100 }
    const quiet = { waitSamplesMs: [7, 8, 9], waitSampleAts: [250, 50, 10], waitSamplesSince: 0 }
    expect(queueWideWaits([busy, quiet]).sort((a, b) => a - b)).toEqual([1, 2, 3, 7])
  })

  it('count a pool of the version before (no sample times) whole', () => {
    const old = { waitSamplesMs: [5, 6] }
    const busy = { waitSamplesMs: [1, 2], waitSampleAts: [300, 200], waitSamplesSince: 200 }
    expect(queueWideWaits([old, busy]).sort((a, b) => a - b)).toEqual([1, 2, 5, 6])
  })
})
