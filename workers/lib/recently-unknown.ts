/**
 * Ids found not to exist (a board, a queue), remembered by this isolate for a moment, so that
 * requests naming made-up ids (a typo in a client, or a script trying ids) are answered 404 at
 * once instead of each asking Neon or waking an object that does. Remembered no longer than a
 * live read may be stale (4 s): one created meanwhile in another isolate is seen as soon as a
 * cached read of it would be; this isolate's own PUT forgets it at once.
 */
export class RecentlyUnknown {
  /** Expiry by id; a Map keeps insertion order, so the oldest go first when full. */
  private readonly until = new Map<string, number>()

  private readonly rememberMs: number
  private readonly maxRemembered: number

  constructor(rememberMs = 4_000, maxRemembered = 1_000) {
    this.rememberMs = rememberMs
    this.maxRemembered = maxRemembered
  }

  /** Whether `id` was found unknown less than `rememberMs` ago. */
  has(id: string, now = Date.now()): boolean {
    const until = this.until.get(id)
    if (until === undefined) return false
    if (now < until) return true
    this.until.delete(id)
    return false
  }

  remember(id: string, now = Date.now()): void {
    this.until.delete(id)
    this.until.set(id, now + this.rememberMs)
    if (this.until.size > this.maxRemembered) this.until.delete(this.until.keys().next().value!)
  }

  /** Just created (or configured) here: no longer unknown. */
  forget(id: string): void {
    this.until.delete(id)
  }
}
