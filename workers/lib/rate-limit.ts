import type { RedisAccelerator } from './redis.ts'

export interface LimitDecision {
  allowed: boolean
  /** Seconds until the window that refused this request ends (only when refused). */
  retryAfter: number
  remaining: number
}

/**
 * Fixed-window counters kept in the isolate: the fallback when Redis is absent or down. Each
 * isolate counts on its own, so the effective limit is per isolate; the Durable Objects still
 * enforce the exact per-player limits where they matter (score submissions).
 */
export class MemoryWindowCounter {
  private readonly windows = new Map<string, { windowStart: number; count: number }>()
  private readonly maxKeys: number

  constructor(maxKeys = 10_000) {
    this.maxKeys = maxKeys
  }

  hit(key: string, limit: number, windowMs: number, now = Date.now()): LimitDecision {
    const windowStart = now - (now % windowMs)
    let w = this.windows.get(key)
    if (!w || w.windowStart !== windowStart) {
      if (!w && this.windows.size >= this.maxKeys) this.evictOld(windowStart)
      w = { windowStart, count: 0 }
    } else {
      // Last in the map's order, so that eviction takes the keys hit least lately: a wide key
      // hit by every request (an IPv6 /48's) must outlive the narrow ones made along the way
      // (each new /64's), or it would be dropped and start again from nothing.
      this.windows.delete(key)
    }
    this.windows.set(key, w)
    w.count++
    return decide(w.count, limit, windowStart + windowMs - now)
  }

  /** Takes one hit back from `key`'s window begun at `windowStart`, if it is the one kept. */
  unhit(key: string, windowStart: number): void {
    const w = this.windows.get(key)
    if (w !== undefined && w.windowStart === windowStart && w.count > 0) w.count--
  }

  /** Whether `key` is past `limit` in the current window, counting nothing. */
  isOver(key: string, limit: number, windowMs: number, now = Date.now()): boolean {
    const w = this.windows.get(key)
    return w !== undefined && w.windowStart === now - (now % windowMs) && w.count > limit
  }

  private evictOld(currentWindowStart: number): void {
    for (const [k, w] of this.windows)
      if (w.windowStart !== currentWindowStart) this.windows.delete(k)
    // Still full of live keys: drop those hit least lately rather than grow without bound.
    while (this.windows.size >= this.maxKeys) {
      const first = this.windows.keys().next().value
      if (first === undefined) break
      this.windows.delete(first)
    }
  }
}

function decide(count: number, limit: number, msLeft: number): LimitDecision {
  return {
    allowed: count <= limit,
    retryAfter: Math.max(1, Math.ceil(msLeft / 1000)),
    remaining: Math.max(0, limit - count),
  }
}

const memory = new MemoryWindowCounter()

/**
 * Keys Redis has refused in a window, with that window's end: the rest of the window is refused
 * without asking again (a fixed window's count only grows). A client sending past its limit made
 * Upstash count every refused request, two commands apiece (four for an IPv6 client's /64 and
 * /48), billed at many times the Worker request that carried it.
 */
const refusedInWindow = new Map<string, number>()
const MAX_REFUSED_KEYS = 10_000

function refusedUntil(key: string, now: number): boolean {
  const until = refusedInWindow.get(key)
  if (until === undefined) return false
  if (until > now) return true
  refusedInWindow.delete(key)
  return false
}

function rememberRefused(key: string, until: number, now: number): void {
  if (refusedInWindow.size >= MAX_REFUSED_KEYS) {
    for (const [k, end] of refusedInWindow) if (end <= now) refusedInWindow.delete(k)
    // Still full of live keys: the oldest go first (a Map keeps insertion order).
    for (const k of refusedInWindow.keys()) {
      if (refusedInWindow.size < MAX_REFUSED_KEYS) break
      refusedInWindow.delete(k)
    }
  }
  refusedInWindow.set(key, until)
}

/**
 * Counts one hit for `key` in a fixed window shared by every location through Redis, falling
 * back to this isolate's own counter when Redis is absent or failing.
 *
 * @example
 * const d = await hitWindow(getRedis(env), `guest:${ip}`, 30, 60_000)
 * if (!d.allowed) throw new ApiError('rate-limited', …, {}, { 'retry-after': String(d.retryAfter) })
 */
export async function hitWindow(
  redis: RedisAccelerator | null,
  key: string,
  limit: number,
  windowMs: number,
  now = Date.now(),
): Promise<LimitDecision> {
  if (redis) {
    const windowStart = now - (now % windowMs)
    const windowEnd = windowStart + windowMs
    const redisKey = `nexus:rl:${key}:${windowStart}`
    const refusedKey = `${redisKey}:${limit}`
    if (refusedUntil(refusedKey, now)) return decide(limit + 1, limit, windowEnd - now)
    const count = await redis.write('ratelimit', async (r) => {
      const tx = r.multi()
      tx.incr(redisKey)
      tx.pexpire(redisKey, windowMs + 1000)
      const [n] = (await tx.exec()) as [number, number]
      return n
    })
    if (typeof count === 'number') {
      if (count > limit) rememberRefused(refusedKey, windowEnd, now)
      return decide(count, limit, windowEnd - now)
    }
  }
  return memory.hit(key, limit, windowMs, now)
}

/**
 * DECR of a window's count that exists: one Redis never counted (the hit went to an isolate's
 * own counter while Redis was failing) is not made, as a key without an expiry, below zero.
 */
const DECR_IF_COUNTED = `if redis.call('EXISTS', KEYS[1]) == 1 and tonumber(redis.call('GET', KEYS[1])) > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0`

/**
 * Takes back a hit `hitWindow` counted at `at` (a request refused afterwards as malformed, by
 * someone who could only judge it later), while that window lasts; best effort, as the count is.
 */
export async function unhitWindow(
  redis: RedisAccelerator | null,
  key: string,
  windowMs: number,
  at: number,
): Promise<void> {
  const windowStart = at - (at % windowMs)
  if (redis) {
    const redisKey = `nexus:rl:${key}:${windowStart}`
    const done = await redis.write('ratelimit', async (r) => {
      await r.eval(DECR_IF_COUNTED, [redisKey], [])
      return true
    })
    if (done) return
  }
  memory.unhit(key, windowStart)
}

/**
 * Whether this isolate knows `key` to be past `limit` in the current window (Redis refused it
 * here, or this isolate's own count is past it), counting nothing and asking nobody: for a check
 * before work whose outcome alone is counted (a read that turns out to name an unknown id).
 */
export function knownOverWindow(
  key: string,
  limit: number,
  windowMs: number,
  now = Date.now(),
): boolean {
  const windowStart = now - (now % windowMs)
  return (
    refusedUntil(`nexus:rl:${key}:${windowStart}:${limit}`, now) ||
    memory.isOver(key, limit, windowMs, now)
  )
}
