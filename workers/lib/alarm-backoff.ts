/** The longest an object's alarm waits after failed runs. */
export const MAX_ALARM_BACKOFF_MS = 60_000

/**
 * How long to wait after the `attempts`-th failure in a row of something retried: 1 s, doubling,
 * at most `maxMs`.
 * @example retryBackoffMs(3, 60_000) // 4_000
 */
export function retryBackoffMs(attempts: number, maxMs: number): number {
  return Math.min(maxMs, 1000 * 2 ** Math.min(Math.max(attempts, 1) - 1, 16))
}

/**
 * `retryBackoffMs` less up to a quarter, at random: for retries of a call to a service many objects
 * share (Neon). Objects that failed together (every board closing at midnight while Neon was down)
 * would otherwise retry together at each step, all at the moment it comes back. Until `maxMs`,
 * each wait stays longer than the one before it (3/4 of a double is more than the whole); at
 * `maxMs`, waits fall anywhere from three quarters of it to all of it.
 * @example spreadBackoffMs(3, 60_000) // 3_000 to 4_000
 */
export function spreadBackoffMs(
  attempts: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  return Math.round(retryBackoffMs(attempts, maxMs) * (1 - 0.25 * random()))
}

/**
 * After an alarm run that failed (its `failures`-th in a row), keeps the next run at least a
 * backoff away (1 s doubling to MAX_ALARM_BACKOFF_MS): the objects catch a run's error and set the
 * alarm again for what is due, which after a fault that repeats is "now", again and again,
 * burning the object's CPU and the logs. A later alarm is left as it is.
 */
export async function backOffAlarm(
  storage: DurableObjectStorage,
  failures: number,
  now: number,
): Promise<void> {
  if (failures === 0) return
  const notBefore = now + retryBackoffMs(failures, MAX_ALARM_BACKOFF_MS)
  const at = await storage.getAlarm()
  if (at !== null && at < notBefore) await storage.setAlarm(notBefore)
}

const FAILURES_KEY = 'alarm_failures'
/**
 * A stored count older than this is not the object's now: a run has failed since or it has not
 * (an alarm left unset, an older release that never cleared it), and either way the backoff it
 * asked for is long over.
 */
const FAILURES_KEPT_MS = 5 * MAX_ALARM_BACKOFF_MS

/**
 * An object's alarm runs failed in a row (for `backOffAlarm`), kept in its SQLite `meta` table
 * (`key`, `value`): counted in memory alone, every hibernation or eviction started the backoff
 * over at 1 s, and an object broken for good (rules whose clock throws, a storage it cannot
 * write) ran its failing alarm every few seconds instead of every minute. Read once per
 * instance; an object without the table (wiped, never made) counts in memory and writes nothing,
 * so a failure never makes its storage again. Only failures write (and the success after them).
 */
export class AlarmFailures {
  private count: number | null = null
  private readonly sql: SqlStorage

  constructor(sql: SqlStorage) {
    this.sql = sql
  }

  /** Failures in a row so far. */
  get value(): number {
    if (this.count === null) {
      try {
        const row = this.sql
          .exec<{ value: string }>(`SELECT value FROM meta WHERE key = ?`, FAILURES_KEY)
          .toArray()[0]
        const [n, at] = (row?.value ?? '0:0').split(':').map(Number)
        this.count = n! > 0 && Date.now() - at! < FAILURES_KEPT_MS ? n! : 0
      } catch {
        return 0
      }
    }
    return this.count
  }

  /** Counts a failed run; answers the failures in a row. */
  failed(): number {
    const n = this.value + 1
    this.count = n
    this.write(`${n}:${Date.now()}`)
    return n
  }

  /** A run that succeeded: the count starts over. */
  succeeded(): void {
    if (this.value === 0) return
    this.count = 0
    this.write(null)
  }

  /** The storage was wiped: nothing counted, nothing to write. */
  forget(): void {
    this.count = 0
  }

  private write(value: string | null): void {
    try {
      if (value === null) this.sql.exec(`DELETE FROM meta WHERE key = ?`, FAILURES_KEY)
      else {
        this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, FAILURES_KEY, value)
      }
    } catch {
      // No table (wiped or never made): kept in memory only.
    }
  }
}
