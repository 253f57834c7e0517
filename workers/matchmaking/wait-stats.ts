/** A pool's recent waits, as its `stats` answers them (durable-objects/match-pool.ts, PoolStats). */
export interface WaitSamples {
  /** Join-to-match waits, milliseconds, newest first. */
  waitSamplesMs: number[]
  /** When each was taken (ms), in the same order; absent from a pool of the version before. */
  waitSampleAts?: number[]
  /**
   * Since when the samples hold every wait of the pool: the oldest one's time when its last 500
   * reach back less than the hour, else the hour's start (absent: as above).
   */
  waitSamplesSince?: number
}

/**
 * Wait percentiles (seconds) of samples in milliseconds, by nearest rank; null without samples.
 *
 * @example
 * waitPercentiles([1000, 2000, 3000]) // { p50: 2, p95: 3, p99: 3, samples: 3 }
 */
export function waitPercentiles(samplesMs: readonly number[]): {
  p50: number | null
  p95: number | null
  p99: number | null
  samples: number
} {
  const sorted = [...samplesMs].sort((a, b) => a - b)
  const at = (q: number) =>
    sorted.length === 0
      ? null
      : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]! / 1000
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), samples: sorted.length }
}

/**
 * Every region's waits over the span all of them cover in full (the latest `waitSamplesSince`):
 * a busy region's last 500 reach back minutes, a quiet one's the hour, and merging them as they
 * are would count each region alike, whatever its share of the queue's matches. A pool of the
 * version before sends no times: its samples count whole.
 */
export function queueWideWaits(pools: readonly WaitSamples[]): number[] {
  const since = Math.max(-Infinity, ...pools.map((p) => p.waitSamplesSince ?? -Infinity))
  return pools.flatMap(({ waitSamplesMs, waitSampleAts }) =>
    waitSampleAts === undefined
      ? waitSamplesMs
      : waitSamplesMs.filter((_, i) => waitSampleAts[i]! >= since),
  )
}
