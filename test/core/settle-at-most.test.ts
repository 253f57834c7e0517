import { describe, expect, it } from 'vitest'
import { settleAtMost } from '../../workers/lib/settle-at-most.ts'

describe('settleAtMost', () => {
  it('never has more than its limit under way, and settles each item in its place, failures too', async () => {
    let running = 0
    let most = 0
    const items = Array.from({ length: 40 }, (_, i) => i)
    const results = await settleAtMost(items, 6, async (n) => {
      running++
      most = Math.max(most, running)
      // Uneven times, so lanes finish out of order.
      await new Promise((r) => setTimeout(r, (n * 7) % 5))
      running--
      if (n % 10 === 3) throw new Error(`no ${n}`)
      return n * 2
    })
    expect(most).toBe(6)
    expect(results).toHaveLength(40)
    results.forEach((r, i) => {
      if (i % 10 === 3) expect(r).toEqual({ status: 'rejected', reason: new Error(`no ${i}`) })
      else expect(r).toEqual({ status: 'fulfilled', value: i * 2 })
    })
  })

  it('takes an empty list, and a limit above the count', async () => {
    expect(await settleAtMost([], 6, async () => 1)).toEqual([])
    expect(await settleAtMost([1, 2], 6, async (n) => n)).toEqual([
      { status: 'fulfilled', value: 1 },
      { status: 'fulfilled', value: 2 },
    ])
  })
})
