/**
 * Cycle arithmetic: when a leaderboard's cycle starts and ends, from its schedule.
 *
 * - `{ every: '5m' }`: fixed periods (units m, h, d, w; 1 minute to 366 days) aligned to the Unix
 *   epoch, 1970-01-01T00:00Z. So `1h` turns on the hour, `1d` at midnight UTC, and `1w`/`7d` at
 *   Thursday 00:00 UTC (the epoch was a Thursday). For a Monday reset use `{ cron: '0 0 * * 1' }`.
 * - `{ cron: '0 0 * * 1' }`: five fields (minute hour day-of-month month day-of-week), evaluated in
 *   UTC with Vixie cron semantics: numbers, `*`, lists `a,b`, ranges `a-b`, steps `*\/n` and
 *   `a-b/n`, month names jan–dec and day names sun–sat, day-of-week 0–7 (0 and 7 are Sunday). When
 *   both day fields are restricted a day matches if either matches; as in Vixie, a day field that
 *   starts with `*` (including `*\/2`) counts as unrestricted, and then both must match.
 *   Expressions that can never fire (`0 0 31 2 *`) are rejected by parseSchedule.
 * - `{ cron: '0 0 * * 1', timeZone: 'Europe/Berlin' }`: the same fields read on that zone's wall
 *   clock (an IANA name), so a daily reset stays at local midnight through daylight-saving changes.
 *   Where a clock is set forward past a time the expression names, the boundary is the instant of
 *   the change (02:30 on a night that skips from 02:00 to 03:00 turns at 03:00); where it is set
 *   back, a time read twice is a boundary the first time only. The boundaries are then those of
 *   the wall clock's first reading of each time the expression names (ZoneClock.firstReaching).
 *   `every` is always UTC: its periods are fixed lengths.
 * - `null`: one cycle that never ends.
 */

import { timeZoneName, ZONE_TIME_LIMIT, ZoneClock } from './time-zone.ts'

/** A validated schedule. Build one with parseSchedule. */
export type Schedule = NeverSchedule | EverySchedule | CronSchedule

export interface NeverSchedule {
  readonly kind: 'never'
}

export interface EverySchedule {
  readonly kind: 'every'
  /** As written, e.g. '5m'. */
  readonly every: string
  readonly periodMs: number
}

export interface CronSchedule {
  readonly kind: 'cron'
  /** Fields separated by single spaces. */
  readonly cron: string
  /** Sorted allowed values of each field; dayOfWeek uses 0–6 (7 is folded into 0). */
  readonly minute: readonly number[]
  readonly hour: readonly number[]
  readonly dayOfMonth: readonly number[]
  readonly month: readonly number[]
  readonly dayOfWeek: readonly number[]
  /** Whether the field started with `*` (Vixie's rule for combining the two day fields). */
  readonly dayOfMonthStar: boolean
  readonly dayOfWeekStar: boolean
  /** The IANA zone whose wall clock the fields are read on (timeZoneName); null for UTC. */
  readonly timeZone: string | null
}

/** The cycle containing an instant; null ends for a board that never closes. */
export interface CycleWindow {
  readonly startsAt: number | null
  readonly endsAt: number | null
}

const MINUTE = 60_000
const DAY = 86_400_000
const UNIT_MS = { m: MINUTE, h: 60 * MINUTE, d: DAY, w: 7 * DAY } as const
const MAX_PERIOD = 366 * DAY
/** Date's range: ±100,000,000 days around the epoch. */
const MAX_TIME = 8.64e15
/** The Gregorian calendar repeats (weekdays included) every 400 years, so a longer search is futile. */
const SEARCH_YEARS = 400

const NEVER: NeverSchedule = Object.freeze({ kind: 'never' })

const SHAPE_ERROR =
  'cycle must be null, {"every": "5m"}, {"cron": "0 0 * * 1"} or {"cron": "0 0 * * 1", "timeZone": "Europe/Berlin"}'
const MAX_TIME_ZONE_LENGTH = 64

/**
 * Validates a board's `cycle` setting.
 *
 * @example
 * parseSchedule({ every: '1d' })        // { kind: 'every', every: '1d', periodMs: 86400000 }
 * parseSchedule({ cron: '0 0 * * mon' }) // { kind: 'cron', … }
 * parseSchedule(null)                   // { kind: 'never' }
 * parseSchedule({ every: '30s' })       // { error: 'every: seconds are not supported; … }
 */
export function parseSchedule(input: unknown): Schedule | { error: string } {
  if (input === null) return NEVER
  if (typeof input !== 'object' || Array.isArray(input)) return { error: SHAPE_ERROR }
  const keys = Object.keys(input).sort()
  const record = input as Record<string, unknown>
  if (keys.length === 1 && keys[0] === 'every') return parseEvery(record.every)
  if (keys.length === 1 && keys[0] === 'cron') return parseCron(record.cron, null)
  if (keys.length === 2 && keys[0] === 'cron' && keys[1] === 'timeZone') {
    const zone = parseTimeZone(record.timeZone)
    if (typeof zone !== 'string') return zone
    return parseCron(record.cron, zone)
  }
  if (keys.length === 2 && keys[0] === 'every' && keys[1] === 'timeZone') {
    return {
      error:
        'timeZone goes with cron: every counts fixed periods from 1970-01-01T00:00Z; for a daily ' +
        'reset at local midnight write {"cron": "0 0 * * *", "timeZone": "…"}',
    }
  }
  return { error: SHAPE_ERROR }
}

function parseTimeZone(value: unknown): string | { error: string } {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_TIME_ZONE_LENGTH) {
    return {
      error: `timeZone must be an IANA time zone name such as "Europe/Berlin", at most ${MAX_TIME_ZONE_LENGTH} characters`,
    }
  }
  const zone = timeZoneName(value)
  if (zone === null)
    return {
      error: `timeZone: "${value}" is not a time zone this runtime knows by its IANA name (such as "Europe/London")`,
    }
  return zone
}

/** A board's `cycle` setting, as stored. */
export type CycleConfig = { every: string } | { cron: string; timeZone?: string } | null

/**
 * A `cycle` setting as its schedule reads it (single spaces in a cron, a zone in the case the
 * runtime spells it), so that settings written differently for one schedule are stored alike.
 *
 * @example
 * normalisedCycle({ timeZone: 'europe/berlin', cron: '0 0  * * 1' }) // { cron: '0 0 * * 1', timeZone: 'Europe/Berlin' }
 */
export function normalisedCycle(input: unknown): CycleConfig {
  const schedule = parseSchedule(input)
  if ('error' in schedule) throw new RangeError(schedule.error)
  return scheduleToConfig(schedule)
}

/**
 * The setting a schedule was parsed from, normalised (for storing or echoing the config).
 *
 * @example
 * scheduleToConfig(parseSchedule({ cron: '0  0 * * 1' }) as Schedule) // { cron: '0 0 * * 1' }
 */
export function scheduleToConfig(schedule: Schedule): CycleConfig {
  switch (schedule.kind) {
    case 'never':
      return null
    case 'every':
      return { every: schedule.every }
    case 'cron':
      return schedule.timeZone === null
        ? { cron: schedule.cron }
        : { cron: schedule.cron, timeZone: schedule.timeZone }
  }
}

function parseEvery(value: unknown): EverySchedule | { error: string } {
  if (typeof value !== 'string') return { error: 'every must be a string such as "5m", "1h", "1d"' }
  if (/^\d+s$/.test(value)) {
    return { error: 'every: seconds are not supported; the shortest cycle is "1m"' }
  }
  const match = /^([1-9]\d{0,6})([mhdw])$/.exec(value)
  if (match === null) {
    return { error: 'every must be a whole number and a unit m, h, d or w, such as "5m" or "7d"' }
  }
  const periodMs = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
  if (periodMs > MAX_PERIOD) return { error: 'every must be between 1m and 366d' }
  return { kind: 'every', every: value, periodMs }
}

interface FieldSpec {
  readonly name: string
  readonly min: number
  readonly max: number
  /** Names in value order starting at `min`. */
  readonly names?: readonly string[]
}

const FIELDS: readonly FieldSpec[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day-of-month', min: 1, max: 31 },
  {
    name: 'month',
    min: 1,
    max: 12,
    names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'],
  },
  {
    name: 'day-of-week',
    min: 0,
    max: 7,
    names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'],
  },
]

/** Longest day-of-month in each month (February counts its leap day). */
const MONTH_MAX_DAYS = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]

function parseCron(value: unknown, timeZone: string | null): CronSchedule | { error: string } {
  if (typeof value !== 'string') return { error: 'cron must be a string such as "0 0 * * 1"' }
  if (value.length > 200) return { error: 'cron is too long' }
  const text = value.trim()
  if (text.startsWith('@')) {
    return { error: 'cron: macros such as @daily are not supported; write "0 0 * * *"' }
  }
  const parts = text.split(/\s+/)
  if (parts.length !== 5) {
    return {
      error: `cron must have 5 fields (minute hour day-of-month month day-of-week), got ${text === '' ? 0 : parts.length}`,
    }
  }
  const sets: number[][] = []
  for (let i = 0; i < 5; i++) {
    const result = parseField(parts[i] as string, FIELDS[i] as FieldSpec)
    if (typeof result === 'string')
      return { error: `cron ${(FIELDS[i] as FieldSpec).name}: ${result}` }
    sets.push(result)
  }
  const [minute, hour, dayOfMonth, month, rawDayOfWeek] = sets as [
    number[],
    number[],
    number[],
    number[],
    number[],
  ]
  const dayOfWeek = [...new Set(rawDayOfWeek.map((d) => (d === 7 ? 0 : d)))].sort((a, b) => a - b)
  const dayOfMonthStar = (parts[2] as string).startsWith('*')
  const dayOfWeekStar = (parts[4] as string).startsWith('*')
  // Only "day-of-month restricted, day-of-week unrestricted" can be impossible: then a day must be
  // one of the listed days, and no listed month may be long enough. A day-of-week that is `*/n`
  // still combines with AND, but every date falls on every weekday within 400 years.
  if (!dayOfMonthStar && dayOfWeekStar) {
    const shortest = dayOfMonth[0] as number
    if (!month.some((m) => (MONTH_MAX_DAYS[m] as number) >= shortest)) {
      return { error: 'cron: that day-of-month never occurs in the given months' }
    }
  }
  return {
    kind: 'cron',
    cron: parts.join(' '),
    minute,
    hour,
    dayOfMonth,
    month,
    dayOfWeek,
    dayOfMonthStar,
    dayOfWeekStar,
    timeZone,
  }
}

/** Sorted distinct values of one field, or an error message. */
function parseField(text: string, spec: FieldSpec): number[] | string {
  const allowed = new Uint8Array(spec.max + 1)
  for (const item of text.split(',')) {
    const match = /^(?:(\*)|([a-z0-9]+)(?:-([a-z0-9]+))?)(?:\/([0-9]+))?$/i.exec(item)
    if (match === null) return `cannot read "${item}"`
    const [, star, fromText, toText, stepText] = match
    let from = spec.min
    let to = spec.max
    if (star === undefined) {
      const a = parseValue(fromText as string, spec)
      if (typeof a === 'string') return a
      from = a
      to = a
      if (toText !== undefined) {
        let b = parseValue(toText, spec)
        if (typeof b === 'string') return b
        // `sun` is 0 and 7 alike: as a range's end it is 7, so `fri-sun` is the weekend's `5-7`.
        if (spec.name === 'day-of-week' && b === 0 && a > 0) b = 7
        if (b < a) return `range "${item}" runs backwards`
        to = b
      } else if (stepText !== undefined) {
        return `a step needs * or a range, as in */15 or 0-30/15, not "${item}"`
      }
    }
    let step = 1
    if (stepText !== undefined) {
      step = Number(stepText)
      if (!Number.isSafeInteger(step) || step < 1 || step > spec.max - spec.min + 1) {
        return `step in "${item}" must be between 1 and ${spec.max - spec.min + 1}`
      }
    }
    for (let v = from; v <= to; v += step) allowed[v] = 1
  }
  const values: number[] = []
  for (let v = spec.min; v <= spec.max; v++) if (allowed[v] === 1) values.push(v)
  return values
}

function parseValue(text: string, spec: FieldSpec): number | string {
  if (/^[0-9]{1,2}$/.test(text)) {
    const n = Number(text)
    if (n < spec.min || n > spec.max) return `${n} is outside ${spec.min}-${spec.max}`
    return n
  }
  const index = spec.names?.indexOf(text.toLowerCase()) ?? -1
  if (index < 0) return `"${text}" is not a valid ${spec.name}`
  return spec.min + index
}

function checkTime(t: number): void {
  if (!Number.isFinite(t)) throw new RangeError('time must be a finite number of milliseconds')
}

/**
 * The first boundary strictly after `t` (ms since the epoch), or null when there is none (no
 * schedule, or beyond the range of Date).
 *
 * @example
 * nextBoundary(every5m, Date.UTC(2025, 0, 1, 10, 2)) // Date.UTC(2025, 0, 1, 10, 5)
 */
export function nextBoundary(schedule: Schedule, t: number): number | null {
  checkTime(t)
  let next: number | null
  switch (schedule.kind) {
    case 'never':
      return null
    case 'every':
      next = (Math.floor(t / schedule.periodMs) + 1) * schedule.periodMs
      break
    case 'cron':
      next = schedule.timeZone === null ? nextCron(schedule, t) : nextZonedCron(schedule, t)
      break
  }
  return next !== null && next <= MAX_TIME ? next : null
}

/**
 * The last boundary at or before `t`, or null when there is none.
 *
 * @example
 * previousBoundary(every5m, Date.UTC(2025, 0, 1, 10, 5)) // Date.UTC(2025, 0, 1, 10, 5)
 */
export function previousBoundary(schedule: Schedule, t: number): number | null {
  checkTime(t)
  let previous: number | null
  switch (schedule.kind) {
    case 'never':
      return null
    case 'every':
      previous = Math.floor(t / schedule.periodMs) * schedule.periodMs
      break
    case 'cron':
      previous =
        schedule.timeZone === null ? previousCron(schedule, t) : previousZonedCron(schedule, t)
      break
  }
  return previous !== null && previous >= -MAX_TIME ? previous : null
}

/**
 * The cycle containing `t`: [startsAt, endsAt). Both null for a board without a schedule.
 *
 * @example
 * cycleWindow(daily, Date.UTC(2025, 5, 1, 13)) // { startsAt: Date.UTC(2025, 5, 1), endsAt: Date.UTC(2025, 5, 2) }
 */
export function cycleWindow(schedule: Schedule, t: number): CycleWindow {
  return { startsAt: previousBoundary(schedule, t), endsAt: nextBoundary(schedule, t) }
}

/*
 * A zoned expression's boundaries are the instants its zone's wall clock first reaches each
 * reading the expression names (firstReaching, which never goes back as the reading goes on). So
 * the first boundary after `t` is that of the first named reading past the latest the clock has
 * shown by `t`, and the last boundary at or before `t` that of the last named reading at or
 * before it. The readings are found by the UTC search, run on wall-clock times.
 */

function nextZonedCron(cron: CronSchedule, t: number): number | null {
  if (t >= ZONE_TIME_LIMIT || t < -ZONE_TIME_LIMIT) return null
  const clock = ZoneClock.of(cron.timeZone as string)
  const reading = nextCron(cron, clock.latestReading(t))
  if (reading === null || reading >= ZONE_TIME_LIMIT) return null
  return clock.firstReaching(reading)
}

function previousZonedCron(cron: CronSchedule, t: number): number | null {
  if (t < -ZONE_TIME_LIMIT || t >= ZONE_TIME_LIMIT) return null
  const clock = ZoneClock.of(cron.timeZone as string)
  const reading = previousCron(cron, clock.latestReading(t))
  if (reading === null || reading < -ZONE_TIME_LIMIT) return null
  return clock.firstReaching(reading)
}

/** Membership tables, built once per schedule object. */
interface CronTables {
  readonly minute: Uint8Array
  readonly hour: Uint8Array
  readonly dayOfMonth: Uint8Array
  readonly month: Uint8Array
  readonly dayOfWeek: Uint8Array
  readonly firstMonth: number
  readonly lastMonth: number
}

const tableCache = new WeakMap<CronSchedule, CronTables>()

function tablesOf(cron: CronSchedule): CronTables {
  let tables = tableCache.get(cron)
  if (tables === undefined) {
    const table = (values: readonly number[], size: number): Uint8Array => {
      const out = new Uint8Array(size)
      for (const v of values) out[v] = 1
      return out
    }
    tables = {
      minute: table(cron.minute, 60),
      hour: table(cron.hour, 24),
      dayOfMonth: table(cron.dayOfMonth, 32),
      month: table(cron.month, 13),
      dayOfWeek: table(cron.dayOfWeek, 7),
      firstMonth: cron.month[0] as number,
      lastMonth: cron.month[cron.month.length - 1] as number,
    }
    tableCache.set(cron, tables)
  }
  return tables
}

/** Smallest v ≥ from with table[v] set, or -1. */
function nextIn(table: Uint8Array, from: number): number {
  for (let v = from; v < table.length; v++) if (table[v] === 1) return v
  return -1
}

/** Largest v ≤ from with table[v] set, or -1. */
function prevIn(table: Uint8Array, from: number): number {
  for (let v = from; v >= 0; v--) if (table[v] === 1) return v
  return -1
}

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0
}

function daysInMonth(y: number, m: number): number {
  return m === 2 ? (isLeap(y) ? 29 : 28) : (MONTH_MAX_DAYS[m] as number)
}

/** Days since 1970-01-01 of a proleptic Gregorian date (no Date.UTC two-digit-year quirk). */
function daysFromCivil(y: number, m: number, d: number): number {
  const yy = m <= 2 ? y - 1 : y
  const era = Math.floor(yy / 400)
  const yoe = yy - era * 400
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
}

/** Mutable calendar cursor used by the cron searches. */
interface Civil {
  y: number
  m: number
  d: number
  h: number
  min: number
}

function toCivil(t: number): Civil {
  const date = new Date(t)
  return {
    y: date.getUTCFullYear(),
    m: date.getUTCMonth() + 1,
    d: date.getUTCDate(),
    h: date.getUTCHours(),
    min: date.getUTCMinutes(),
  }
}

function toTime(c: Civil): number {
  return daysFromCivil(c.y, c.m, c.d) * DAY + c.h * 3_600_000 + c.min * MINUTE
}

function dayMatches(cron: CronSchedule, tables: CronTables, c: Civil): boolean {
  const domOk = tables.dayOfMonth[c.d] === 1
  // 1970-01-01 was a Thursday (4).
  const dow = (((daysFromCivil(c.y, c.m, c.d) + 4) % 7) + 7) % 7
  const dowOk = tables.dayOfWeek[dow] === 1
  return cron.dayOfMonthStar || cron.dayOfWeekStar ? domOk && dowOk : domOk || dowOk
}

/** Skips field by field: month, then day, then hour, then minute; never minute by minute. */
function nextCron(cron: CronSchedule, t: number): number | null {
  if (t >= MAX_TIME) return null
  const tables = tablesOf(cron)
  const c = toCivil(Math.floor(t / MINUTE) * MINUTE + MINUTE)
  const lastYear = c.y + SEARCH_YEARS
  const nextDay = (): void => {
    c.d++
    c.h = 0
    c.min = 0
    if (c.d > daysInMonth(c.y, c.m)) {
      c.d = 1
      c.m++
      if (c.m > 12) {
        c.m = 1
        c.y++
      }
    }
  }
  while (c.y <= lastYear) {
    if (tables.month[c.m] !== 1) {
      const m = nextIn(tables.month, c.m + 1)
      if (m < 0) {
        c.y++
        c.m = tables.firstMonth
      } else {
        c.m = m
      }
      c.d = 1
      c.h = 0
      c.min = 0
      continue
    }
    if (!dayMatches(cron, tables, c)) {
      nextDay()
      continue
    }
    if (tables.hour[c.h] !== 1) {
      const h = nextIn(tables.hour, c.h + 1)
      if (h < 0) {
        nextDay()
        continue
      }
      c.h = h
      c.min = 0
    }
    const min = nextIn(tables.minute, c.min)
    if (min < 0) {
      c.min = 0
      c.h++
      if (c.h > 23) nextDay()
      continue
    }
    c.min = min
    return toTime(c)
  }
  return null
}

function previousCron(cron: CronSchedule, t: number): number | null {
  if (t < -MAX_TIME) return null
  const tables = tablesOf(cron)
  const c = toCivil(Math.floor(t / MINUTE) * MINUTE)
  const firstYear = c.y - SEARCH_YEARS
  const previousDay = (): void => {
    c.d--
    c.h = 23
    c.min = 59
    if (c.d < 1) {
      c.m--
      if (c.m < 1) {
        c.m = 12
        c.y--
      }
      c.d = daysInMonth(c.y, c.m)
    }
  }
  while (c.y >= firstYear) {
    if (tables.month[c.m] !== 1) {
      const m = prevIn(tables.month, c.m - 1)
      if (m < 1) {
        c.y--
        c.m = tables.lastMonth
      } else {
        c.m = m
      }
      c.d = daysInMonth(c.y, c.m)
      c.h = 23
      c.min = 59
      continue
    }
    if (!dayMatches(cron, tables, c)) {
      previousDay()
      continue
    }
    if (tables.hour[c.h] !== 1) {
      const h = prevIn(tables.hour, c.h - 1)
      if (h < 0) {
        previousDay()
        continue
      }
      c.h = h
      c.min = 59
    }
    const min = prevIn(tables.minute, c.min)
    if (min < 0) {
      c.min = 59
      c.h--
      if (c.h < 0) previousDay()
      continue
    }
    c.min = min
    return toTime(c)
  }
  return null
}
