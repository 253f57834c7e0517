import { describe, expect, it } from 'vitest'
import { RecentAnswers } from '../../workers/lib/recent-answers.ts'

const answer = (body: string, storedAt = 1) => ({ body, storedAt })

describe("the read cache's memory layer", () => {
  it('holds at most its bound, dropping the answer remembered longest ago', () => {
    const recent = new RecentAnswers(3, 100)
    for (const k of ['a', 'b', 'c', 'd']) recent.remember(k, answer(k))
    expect(recent.size).toBe(3)
    expect(recent.get('a')).toBeUndefined()
    expect(recent.get('d')?.body).toBe('d')
    // Remembering a key again makes it the newest: 'b' is now the one to go.
    recent.remember('c', answer('c2', 2))
    recent.remember('e', answer('e'))
    expect(recent.get('b')).toBeUndefined()
    expect(recent.get('c')?.body).toBe('c2')
  })

  it('keeps no answer larger than its bound, and never trades a newer answer for an older', () => {
    const recent = new RecentAnswers(10, 5)
    recent.remember('big', answer('123456'))
    expect(recent.get('big')).toBeUndefined()
    // The bound is memory: a character outside Latin-1 makes every character two bytes.
    recent.remember('wide', answer('12€'))
    expect(recent.get('wide')).toBeUndefined()
    recent.remember('narrow', answer('12é45'))
    expect(recent.get('narrow')?.body).toBe('12é45')
    recent.remember('k', answer('new', 2_000))
    recent.remember('k', answer('old', 1_000))
    expect(recent.get('k')).toEqual({ body: 'new', storedAt: 2_000 })
  })
})
