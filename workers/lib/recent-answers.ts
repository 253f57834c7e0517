/**
 * Answers an isolate produced or fetched lately, for the read cache's first layer: bounded in
 * count and in size per answer, the oldest dropped first. Pure, so the bounds are tested alone.
 */

export interface RecentAnswer {
  body: string
  /** When the answer was produced (epoch ms): every cache layer judges freshness by it. */
  storedAt: number
  /** How long producing it took, for early refresh. */
  computeMs?: number
  /** How long it may be served, when the answer itself decided (else the read's TTL). */
  ttlMs?: number
}

export class RecentAnswers {
  // A Map keeps insertion order: the first key is the one remembered longest ago.
  private readonly answers = new Map<string, RecentAnswer>()
  readonly maxAnswers: number
  /** The largest answer kept, in bytes of the isolate's memory (see `stringBytes`). */
  readonly maxBytes: number

  constructor(maxAnswers: number, maxBytes: number) {
    this.maxAnswers = maxAnswers
    this.maxBytes = maxBytes
  }

  get(key: string): RecentAnswer | undefined {
    return this.answers.get(key)
  }

  /** Keeps `answer` unless it is too large or older than the one already held for `key`. */
  remember(key: string, answer: RecentAnswer): void {
    if (stringBytes(answer.body) > this.maxBytes) return
    const known = this.answers.get(key)
    if (known && known.storedAt > answer.storedAt) return
    this.answers.delete(key)
    this.answers.set(key, answer)
    if (this.answers.size > this.maxAnswers) this.answers.delete(this.answers.keys().next().value!)
  }

  forget(key: string): void {
    this.answers.delete(key)
  }

  get size(): number {
    return this.answers.size
  }

  clear(): void {
    this.answers.clear()
  }
}

/**
 * What a string takes in V8: a byte per character while every character is Latin-1, two once any
 * is not (a single `€` doubles it). Counting characters alone let a bound meant as 32 KiB hold 64.
 */
export function stringBytes(s: string): number {
  return /[^\u0000-\u00ff]/.test(s) ? s.length * 2 : s.length
}
