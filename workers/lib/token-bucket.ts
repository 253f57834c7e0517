/** A token bucket's state: tokens left, and when they were counted. */
export interface Bucket {
  tokens: number
  at: number
}

/**
 * Takes one token from `key`'s bucket (full, `burst` tokens, the first time), refilled at
 * `perSecond` since it was last counted; false, taking nothing, when less than one is left.
 * Buckets live in the caller's (Weak)Map, so a socket's go with it.
 */
export function takeToken<K>(
  buckets: { get(key: K): Bucket | undefined; set(key: K, bucket: Bucket): unknown },
  key: K,
  now: number,
  perSecond: number,
  burst: number,
): boolean {
  const b = buckets.get(key) ?? { tokens: burst, at: now }
  const tokens = Math.min(burst, b.tokens + (Math.max(0, now - b.at) * perSecond) / 1000)
  const ok = tokens >= 1
  buckets.set(key, { tokens: ok ? tokens - 1 : tokens, at: now })
  return ok
}
