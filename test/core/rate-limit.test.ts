import { describe, expect, it } from 'vitest'
import { MemoryWindowCounter } from '../../workers/lib/rate-limit.ts'

/** The in-isolate fixed-window counter: the rate limit when Redis is absent or down. */
describe('MemoryWindowCounter', () => {
  const MINUTE = 60_000
  const start = 1_800_000_000_000 // a window's start (a multiple of a minute)

  it('allows `limit` hits in a window and refuses the rest, with the seconds left in it', () => {
    const counter = new MemoryWindowCounter()
    const decisions = [0, 1_000, 2_000, 3_000, 20_500].map((t) =>
      counter.hit('ip:a', 3, MINUTE, start + t),
    )
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, true, false, false])
    expect(decisions.map((d) => d.remaining)).toEqual([2, 1, 0, 0, 0])
    // 57 s left at 3 s in; 39.5 s left at 20.5 s in, rounded up.
    expect(decisions[3]!.retryAfter).toBe(57)
    expect(decisions[4]!.retryAfter).toBe(40)
  })

  it('starts over in the next window, and counts each key on its own', () => {
    const counter = new MemoryWindowCounter()
    for (let i = 0; i < 3; i++) counter.hit('ip:a', 3, MINUTE, start + i)
    expect(counter.hit('ip:a', 3, MINUTE, start + 59_999).allowed).toBe(false)
    expect(counter.hit('ip:b', 3, MINUTE, start + 59_999).allowed).toBe(true)
    expect(counter.hit('ip:a', 3, MINUTE, start + MINUTE)).toMatchObject({
      allowed: true,
      remaining: 2,
    })
  })

  it('keeps at most maxKeys keys: a full map drops past windows first, then the key hit least lately', () => {
    const counter = new MemoryWindowCounter(2)
    counter.hit('old', 1, MINUTE, start)
    counter.hit('a', 1, MINUTE, start + MINUTE)
    // Full: 'old' is from a past window and goes; 'a' keeps its count.
    counter.hit('b', 1, MINUTE, start + MINUTE)
    expect(counter.hit('a', 1, MINUTE, start + MINUTE).allowed).toBe(false)
    // Full of live keys: 'b', hit before 'a' was hit again, goes, and counts from zero again.
    counter.hit('c', 1, MINUTE, start + MINUTE)
    expect(counter.hit('a', 1, MINUTE, start + MINUTE).allowed).toBe(false)
    expect(counter.hit('b', 1, MINUTE, start + MINUTE).allowed).toBe(true)
  })

  it("a wide key hit by every request (an IPv6 /48's) outlives the narrow keys each request makes (each new /64's): its limit holds however many there are", () => {
    const counter = new MemoryWindowCounter(100)
    let allowed = 0
    for (let i = 0; i < 5_000; i++) {
      const t = start + i
      counter.hit(`ip:2001:db8:0:${i.toString(16)}::/64`, 30, MINUTE, t)
      if (counter.hit('net:2001:db8:0::/48', 300, MINUTE, t).allowed) allowed++
    }
    expect(allowed).toBe(300)
  })
})
