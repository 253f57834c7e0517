import { describe, expect, it } from 'vitest'
import type { Redis } from '@upstash/redis/cloudflare'
import { setLogLevel } from '../../workers/lib/log.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { RedisAccelerator } from '../../workers/lib/redis.ts'

const opens = () =>
  localFamilies()
    .find((f) => f.name === 'nexus_redis_circuit_opens_total')
    ?.series.reduce((n, s) => n + ('value' in s ? s.value : 0), 0) ?? 0

describe('the Redis circuit breaker on /metrics', () => {
  it('counts each opening, and a healthy isolate’s calls do not hide another’s open breaker', async () => {
    setLogLevel('silent')
    // Two breakers stand for two isolates: one whose Redis calls fail, one whose calls work.
    const failing = new RedisAccelerator({} as Redis, { failureThreshold: 2, openMs: 60_000 })
    const healthy = new RedisAccelerator({} as Redis)
    const before = opens()
    for (let i = 0; i < 2; i++) {
      await failing.run('probe', () => Promise.reject(new Error('down')))
    }
    expect(opens() - before).toBe(1)
    expect(await healthy.run('probe', () => Promise.resolve('ok'))).toBe('ok')
    expect(opens() - before).toBe(1)
    // While open, the failing one skips Redis instead of calling it.
    let called = false
    await failing.run('probe', async () => {
      called = true
      return 'x'
    })
    expect(called).toBe(false)
  })
})
