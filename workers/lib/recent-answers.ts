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
  readonly maxChars: number

  constructor(maxAnswers: number, maxChars: number) {
    this.maxAnswers = maxAnswers
    this.maxChars = maxChars
  }

  get(key: string): RecentAnswer | undefined {
    return this.answers.get(key)
  }

  /** Keeps `answer` unless it is too large or older than the one already held for `key`. */
  remember(key: string, answer: RecentAnswer): void {
    if (answer.body.length > this.maxChars) return
    const known = this.answers.get(key)
    if (known && known.storedAt > answer.storedAt) return
    this.answers.delete(key)
    this.answers.set(key, answer)
    if (this.answers.size > this.maxAnswers) this.answers.delete(this.answers.keys().next().value!)
  }

  get size(): number {
    return this.answers.size
  }

  clear(): void {
    this.answers.clear()
  }
}
