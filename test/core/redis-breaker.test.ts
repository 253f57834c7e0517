import { describe, expect, it, onTestFinished, vi } from 'vitest'
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

describe('the circuits of reads, writes and cache fills', () => {
  it('cache fills that fail (large pages timing out far from the primary) open their own circuit: rate-limit counts (writes) and reads still go to Redis', async () => {
    setLogLevel('silent')
    const breaker = new RedisAccelerator({} as Redis, { failureThreshold: 3, openMs: 60_000 })
    for (let i = 0; i < 3; i++) {
      await breaker.fill('read-cache.set', () => Promise.reject(new Error('timed out')))
    }
    let filled = false
    await breaker.fill('read-cache.set', async () => {
      filled = true
    })
    expect(filled).toBe(false)
    expect(await breaker.write('rate-limit.incr', () => Promise.resolve(1))).toBe(1)
    expect(await breaker.run('read-cache.get', () => Promise.resolve('page'))).toBe('page')
    expect(breaker.writeState).toBe('closed')
    expect(breaker.state).toBe('closed')
  })
})

describe('an outage met by calls in flight', () => {
  it('opens the breaker once, for its open time from the opening: the calls that fail after it add no openings and no time', async () => {
    setLogLevel('silent')
    let t = 0
    const breaker = new RedisAccelerator({} as Redis, {
      failureThreshold: 3,
      openMs: 10_000,
      now: () => t,
    })
    const before = opens()
    // Twenty reads in flight when Redis stops answering: ten fail at 1 s, ten more at 5 s.
    const failing = () => {
      let fail!: () => void
      const down = new Promise<never>((_, reject) => {
        fail = () => reject(new Error('down'))
      })
      return { down, fail }
    }
    const early = failing()
    const late = failing()
    const reads = [
      ...Array.from({ length: 10 }, () => breaker.run('probe', () => early.down)),
      ...Array.from({ length: 10 }, () => breaker.run('probe', () => late.down)),
    ]
    t = 1000
    early.fail()
    await Promise.all(reads.slice(0, 10))
    t = 5000
    late.fail()
    await Promise.all(reads)
    expect(opens() - before).toBe(1)
    expect(breaker.state).toBe('open')
    // Open for 10 s from the opening, not from the last failure seen.
    t = 11_000
    expect(breaker.state).toBe('half-open')
  })
})

describe('the half-open breaker', () => {
  it('takes a trial call that never settled (its request cancelled) as lost once past its deadline: the next call tries Redis again', async () => {
    setLogLevel('silent')
    // The deadline's own timer never fires, as in a request the runtime cancelled.
    vi.useFakeTimers()
    onTestFinished(() => {
      vi.useRealTimers()
    })
    let t = 0
    const breaker = new RedisAccelerator({} as Redis, {
      failureThreshold: 1,
      openMs: 10_000,
      timeoutMs: 250,
      now: () => t,
    })
    await breaker.run('probe', () => Promise.reject(new Error('down')))
    expect(breaker.state).toBe('open')
    t += 10_000
    void breaker.run('probe', () => new Promise<string>(() => {}))
    // While the trial may still answer, others skip Redis.
    let calls = 0
    const probe = async () => {
      calls++
      return 'ok'
    }
    expect(await breaker.run('probe', probe)).toBeUndefined()
    expect(calls).toBe(0)
    // Long past its deadline: lost. The next call is the trial, and closes the circuit.
    t += 60_000
    expect(await breaker.run('probe', probe)).toBe('ok')
    expect(calls).toBe(1)
    expect(breaker.state).toBe('closed')
  })
})
