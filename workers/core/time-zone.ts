/**
 * A time zone's clock, from the runtime's own IANA database (Intl): where its wall clock stands at
 * an instant, and the first instant its wall clock reaches a given reading. Cycle arithmetic reads
 * cron expressions on this wall clock (core/cycle.ts).
 *
 * Offsets are looked up at day boundaries and cached, and a day whose two ends differ is searched
 * for the instant (to the millisecond) its offset changed. A zone that changes and changes back
 * within one UTC day is taken as never having changed that day: no zone has done so.
 */

const DAY = 86_400_000
/** Longer than any zone's offset ever moved back at once (wall-clock offsets span −15 h to +15 h). */
const REACH = 2 * DAY
/** Instants a zone's clock is read at: Date's range, less the reach either side. */
export const ZONE_TIME_LIMIT = 8.64e15 - 2 * REACH
/** Day entries kept per zone before the cache starts over (each a few numbers). */
const CACHE_DAYS = 4096

/** A stretch of time during which a zone's offset holds: [start, end). */
interface Stretch {
  readonly start: number
  readonly end: number
  readonly offset: number
}

/** A change of offset: from `at` on, wall-clock time is the instant plus `offset`. */
interface Change {
  readonly at: number
  readonly offset: number
}

const OFFSET_TEXT = /^GMT(?:([+-])(\d{1,2})(?::(\d{2}))?(?::(\d{2}))?)?$/

/**
 * IANA's names without an area (zones and links, lower case). ICU takes other names too, its
 * legacy ones, most of which mean another place than the letters suggest (`BST` is Asia/Dhaka
 * to it, `IST` Asia/Kolkata, `CST` America/Chicago), and ECMA-402 now asks engines to refuse.
 */
const IANA_NAMES_WITHOUT_AREA = new Set(
  [
    'CET',
    'CST6CDT',
    'Cuba',
    'EET',
    'EST',
    'EST5EDT',
    'Egypt',
    'Eire',
    'GB',
    'GB-Eire',
    'GMT',
    'GMT+0',
    'GMT-0',
    'GMT0',
    'Greenwich',
    'HST',
    'Hongkong',
    'Iceland',
    'Iran',
    'Israel',
    'Jamaica',
    'Japan',
    'Kwajalein',
    'Libya',
    'MET',
    'MST',
    'MST7MDT',
    'NZ',
    'NZ-CHAT',
    'Navajo',
    'PRC',
    'PST8PDT',
    'Poland',
    'Portugal',
    'ROC',
    'ROK',
    'Singapore',
    'Turkey',
    'UCT',
    'UTC',
    'Universal',
    'W-SU',
    'WET',
    'Zulu',
  ].map((n) => n.toLowerCase()),
)

/** Names looked up already: the cron parses every board's schedule each minute. */
const knownNames = new Map<string, string | null>()

/**
 * The zone's name as written, spelt as the runtime spells it where the two differ only in case;
 * null when it is not an IANA name the runtime knows. Links keep the name written: ICU answers
 * `Asia/Kolkata` with its older `Asia/Calcutta`, which a studio did not write.
 *
 * @example
 * timeZoneName('europe/berlin') // 'Europe/Berlin'
 * timeZoneName('Asia/Kolkata')  // 'Asia/Kolkata'
 * timeZoneName('BST')           // null (ICU's legacy name for Asia/Dhaka, not IANA's)
 * timeZoneName('Mars/Base')     // null
 */
export function timeZoneName(name: string): string | null {
  let known = knownNames.get(name)
  if (known === undefined) {
    known = lookUpTimeZone(name)
    if (knownNames.size >= 1000) knownNames.clear()
    knownNames.set(name, known)
  }
  return known
}

function lookUpTimeZone(name: string): string | null {
  const lower = name.toLowerCase()
  const iana = lower.includes('/')
    ? !lower.startsWith('systemv/')
    : IANA_NAMES_WITHOUT_AREA.has(lower)
  if (!iana) return null
  let resolved: string
  try {
    resolved = new Intl.DateTimeFormat('en-US', { timeZone: name }).resolvedOptions().timeZone
  } catch {
    return null
  }
  return resolved.toLowerCase() === lower ? resolved : name
}

export class ZoneClock {
  readonly zone: string
  private readonly format: Intl.DateTimeFormat
  /** Offset at the start of each UTC day looked at, by day number. */
  private readonly offsets = new Map<number, number>()
  /** Changes within each UTC day looked at (day start excluded, day end included). */
  private readonly changes = new Map<number, readonly Change[]>()

  private constructor(zone: string) {
    this.zone = zone
    this.format = new Intl.DateTimeFormat('en-US', { timeZone: zone, timeZoneName: 'longOffset' })
  }

  private static readonly clocks = new Map<string, ZoneClock>()

  /** One clock per zone, shared, so its cache serves every schedule in that zone. */
  static of(zone: string): ZoneClock {
    let clock = ZoneClock.clocks.get(zone)
    if (clock === undefined) {
      clock = new ZoneClock(zone)
      if (ZoneClock.clocks.size >= 1000) ZoneClock.clocks.clear()
      ZoneClock.clocks.set(zone, clock)
    }
    return clock
  }

  /**
   * Milliseconds to add to an instant to get the zone's wall-clock time, read as if it were UTC.
   *
   * @example
   * ZoneClock.of('Asia/Kolkata').offsetAt(0) // 19_800_000
   */
  offsetAt(t: number): number {
    const day = Math.floor(t / DAY)
    let offset = this.dayStartOffset(day)
    for (const change of this.changesIn(day)) if (change.at <= t) offset = change.offset
    return offset
  }

  /** The runtime's answer, uncached. */
  private readOffset(t: number): number {
    const name = this.format.formatToParts(t).find((p) => p.type === 'timeZoneName')?.value ?? ''
    const match = OFFSET_TEXT.exec(name)
    if (match === null) throw new Error(`cannot read the offset "${name}" of ${this.zone}`)
    const [, sign, hours, minutes, seconds] = match
    if (sign === undefined) return 0
    const ms = (Number(hours) * 3600 + Number(minutes ?? 0) * 60 + Number(seconds ?? 0)) * 1000
    return sign === '-' ? -ms : ms
  }

  /**
   * The zone's greatest wall-clock reading at or before `t`. It is the reading at `t` except in
   * the hour a clock set back repeats, where it stays at the last reading before the change.
   */
  latestReading(t: number): number {
    let latest = -Infinity
    for (const s of this.stretches(t - REACH, t + 1)) {
      latest = Math.max(latest, s.end - 1 + s.offset)
    }
    return latest
  }

  /**
   * The first instant at which the zone's wall clock reads `reading` or later: the instant it
   * reads it, the first time when a clock set back reads it twice, and the instant of the change
   * when a clock set forward skips it.
   */
  firstReaching(reading: number): number {
    const guess = reading - this.offsetAt(reading)
    for (const s of this.stretches(guess - REACH, guess + REACH)) {
      if (reading <= s.start + s.offset) return s.start
      if (reading <= s.end - 1 + s.offset) return reading - s.offset
    }
    // Unreachable for wall-clock offsets within ±REACH / 2.
    throw new Error(`${this.zone} never reads ${new Date(reading).toISOString()} near then`)
  }

  /** The stretches of one offset covering [from, to), in time order. */
  private stretches(from: number, to: number): Stretch[] {
    const out: Stretch[] = []
    let start = from
    let offset = this.offsetAt(from)
    // Changes at or before `from` are in `offset` already.
    for (let day = Math.floor(from / DAY); day * DAY < to; day++) {
      for (const change of this.changesIn(day)) {
        if (change.at <= from || change.at >= to) continue
        out.push({ start, end: change.at, offset })
        start = change.at
        offset = change.offset
      }
    }
    out.push({ start, end: to, offset })
    return out
  }

  private dayStartOffset(day: number): number {
    let offset = this.offsets.get(day)
    if (offset === undefined) {
      if (this.offsets.size >= CACHE_DAYS) this.offsets.clear()
      offset = this.readOffset(day * DAY)
      this.offsets.set(day, offset)
    }
    return offset
  }

  private changesIn(day: number): readonly Change[] {
    let found = this.changes.get(day)
    if (found !== undefined) return found
    const list: Change[] = []
    let from = day * DAY
    let fromOffset = this.dayStartOffset(day)
    const end = from + DAY
    const endOffset = this.dayStartOffset(day + 1)
    while (fromOffset !== endOffset) {
      // Halve (from, end] until the change's instant: from keeps the old offset, to has another.
      let lo = from
      let hi = end
      while (hi - lo > 1) {
        const mid = lo + Math.floor((hi - lo) / 2)
        if (this.readOffset(mid) === fromOffset) lo = mid
        else hi = mid
      }
      const offset = this.readOffset(hi)
      list.push({ at: hi, offset })
      from = hi
      fromOffset = offset
    }
    found = list
    if (this.changes.size >= CACHE_DAYS) this.changes.clear()
    this.changes.set(day, found)
    return found
  }
}
