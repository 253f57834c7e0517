import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { Schedule } from '../../workers/core/cycle.ts'
import {
  cycleWindow,
  nextBoundary,
  parseSchedule,
  previousBoundary,
  scheduleToConfig,
} from '../../workers/core/cycle.ts'

function schedule(input: unknown): Schedule {
  const parsed = parseSchedule(input)
  if ('error' in parsed) throw new Error(parsed.error)
  return parsed
}

const every = (e: string) => schedule({ every: e })
const cron = (c: string) => schedule({ cron: c })

// Calendar facts used below, checked by hand: 1970-01-01 was a Thursday, 2024-01-01 a Monday,
// 2024-09-13 and 2024-10-11 Fridays, 2024 and 2028 are leap years, 2100 is not.

describe('parseSchedule', () => {
  it('accepts the three shapes', () => {
    expect(parseSchedule(null)).toEqual({ kind: 'never' })
    expect(parseSchedule({ every: '5m' })).toEqual({
      kind: 'every',
      every: '5m',
      periodMs: 300_000,
    })
    expect(parseSchedule({ every: '1w' })).toMatchObject({ periodMs: 604_800_000 })
    expect(parseSchedule({ every: '366d' })).toMatchObject({ periodMs: 366 * 86_400_000 })
    expect(parseSchedule({ cron: '  0   0 * * 1 ' })).toMatchObject({
      kind: 'cron',
      cron: '0 0 * * 1',
      minute: [0],
      hour: [0],
      dayOfWeek: [1],
      dayOfMonthStar: true,
      dayOfWeekStar: false,
    })
  })

  it('expands lists, ranges, steps and names', () => {
    expect(cron('*/15 9-17/4 1,15 jan,Jul-sep mon-fri')).toMatchObject({
      minute: [0, 15, 30, 45],
      hour: [9, 13, 17],
      dayOfMonth: [1, 15],
      month: [1, 7, 8, 9],
      dayOfWeek: [1, 2, 3, 4, 5],
    })
    expect(cron('0 0 * * 7')).toMatchObject({ dayOfWeek: [0] })
    expect(cron('0 0 * * 5-7')).toMatchObject({ dayOfWeek: [0, 5, 6] })
    // Sunday ending a range is its 7: the weekend by name, as by number.
    expect(cron('0 0 * * fri-sun')).toMatchObject({ dayOfWeek: [0, 5, 6] })
    expect(cron('0 0 * * mon-sun')).toMatchObject({ dayOfWeek: [0, 1, 2, 3, 4, 5, 6] })
    expect(cron('0 0 * * sun-sun')).toMatchObject({ dayOfWeek: [0] })
    expect(cron('0 0 * * */3')).toMatchObject({ dayOfWeek: [0, 3, 6] })
    expect(cron('5,5,1-3 * * * *')).toMatchObject({ minute: [1, 2, 3, 5] })
    // Possible, if rarely: Feb 29, and Feb 31 OR any Monday.
    expect(parseSchedule({ cron: '0 0 29 2 *' })).not.toHaveProperty('error')
    expect(parseSchedule({ cron: '0 0 31 2 1' })).not.toHaveProperty('error')
    expect(parseSchedule({ cron: '0 0 30,31 1,2 *' })).not.toHaveProperty('error')
  })

  it('round-trips through scheduleToConfig', () => {
    expect(scheduleToConfig(schedule(null))).toBeNull()
    expect(scheduleToConfig(every('7d'))).toEqual({ every: '7d' })
    expect(scheduleToConfig(cron('0\t0 * * mon'))).toEqual({ cron: '0 0 * * mon' })
    expect(scheduleToConfig(schedule({ timeZone: 'europe/berlin', cron: '0 0 * * 1' }))).toEqual({
      cron: '0 0 * * 1',
      timeZone: 'Europe/Berlin',
    })
  })

  it('reads a cron in a time zone, named as written, in the case the runtime spells it', () => {
    expect(parseSchedule({ cron: '0 0 * * 1' })).toMatchObject({ timeZone: null })
    expect(parseSchedule({ cron: '0 0 * * 1', timeZone: 'America/New_York' })).toMatchObject({
      kind: 'cron',
      cron: '0 0 * * 1',
      timeZone: 'America/New_York',
    })
    expect(parseSchedule({ cron: '0 0 * * *', timeZone: 'utc' })).toMatchObject({ timeZone: 'UTC' })
    // IANA's names without an area, zones and links, are names all the same.
    expect(parseSchedule({ cron: '0 0 * * *', timeZone: 'EST5EDT' })).toMatchObject({
      timeZone: 'EST5EDT',
    })
    expect(parseSchedule({ cron: '0 0 * * *', timeZone: 'GB' })).toMatchObject({ timeZone: 'GB' })
    expect(parseSchedule({ cron: '0 0 * * *', timeZone: 'europe/BERLIN' })).toMatchObject({
      timeZone: 'Europe/Berlin',
    })
    // A link stays as written: ICU's name for it (Asia/Calcutta) is not the one a studio wrote.
    expect(parseSchedule({ cron: '0 0 * * *', timeZone: 'Asia/Kolkata' })).toMatchObject({
      timeZone: 'Asia/Kolkata',
    })
  })

  const invalid: [string, unknown, RegExp][] = [
    ['undefined', undefined, /cycle must be/],
    ['a string', '5m', /cycle must be/],
    ['an array', [], /cycle must be/],
    ['an empty object', {}, /cycle must be/],
    ['both keys', { every: '5m', cron: '* * * * *' }, /cycle must be/],
    ['an unknown key', { period: '5m' }, /cycle must be/],
    ['seconds', { every: '30s' }, /seconds/],
    ['zero', { every: '0m' }, /whole number/],
    ['no unit', { every: '5' }, /whole number/],
    ['an upper-case unit', { every: '5M' }, /whole number/],
    ['a fraction', { every: '1.5h' }, /whole number/],
    ['a leading zero', { every: '05m' }, /whole number/],
    ['spaces', { every: ' 5m' }, /whole number/],
    ['a number', { every: 5 }, /string/],
    ['over a leap year', { every: '367d' }, /between 1m and 366d/],
    ['53 weeks', { every: '53w' }, /between 1m and 366d/],
    ['a cron number', { cron: 5 }, /string/],
    ['four fields', { cron: '* * * *' }, /5 fields/],
    ['six fields', { cron: '0 * * * * *' }, /5 fields/],
    ['an empty cron', { cron: '  ' }, /5 fields.*got 0/],
    ['a macro', { cron: '@daily' }, /macros/],
    ['minute 60', { cron: '60 * * * *' }, /minute: 60 is outside 0-59/],
    ['hour 24', { cron: '0 24 * * *' }, /hour/],
    ['day 0', { cron: '0 0 0 * *' }, /day-of-month/],
    ['day 32', { cron: '0 0 32 * *' }, /day-of-month/],
    ['month 13', { cron: '0 0 1 13 *' }, /month/],
    ['weekday 8', { cron: '0 0 * * 8' }, /day-of-week/],
    ['a zero step', { cron: '*/0 * * * *' }, /step/],
    ['a huge step', { cron: '*/61 * * * *' }, /step/],
    ['a step on a single value', { cron: '5/15 * * * *' }, /step needs/],
    ['a backwards range', { cron: '10-5 * * * *' }, /backwards/],
    ['a wrapping day range', { cron: '0 0 * * fri-mon' }, /backwards/],
    ['a bad name', { cron: '0 0 * foo *' }, /not a valid month/],
    ['a name in the wrong field', { cron: '0 0 * mon *' }, /not a valid month/],
    ['an empty list item', { cron: '1,,2 * * * *' }, /cannot read/],
    ['a negative number', { cron: '-5 * * * *' }, /cannot read/],
    ['a question mark', { cron: '0 0 ? * 1' }, /cannot read/],
    ['February 31st', { cron: '0 0 31 2 *' }, /never occurs/],
    ['February 30th or 31st', { cron: '0 0 30,31 2 *' }, /never occurs/],
    ['the 31st of short months', { cron: '0 0 31 4,6,9,11 *' }, /never occurs/],
    ['a long string', { cron: `${'1,'.repeat(150)}1 * * * *` }, /too long/],
    ['an unknown zone', { cron: '0 0 * * *', timeZone: 'Mars/Base' }, /not a time zone/],
    ['a zone as an offset', { cron: '0 0 * * *', timeZone: '+05:30 GMT' }, /not a time zone/],
    // ICU's legacy names, not IANA's: to it BST is Asia/Dhaka, IST Asia/Kolkata.
    ['a legacy ICU name', { cron: '0 0 * * *', timeZone: 'BST' }, /not a time zone/],
    ['another legacy ICU name', { cron: '0 0 * * *', timeZone: 'ist' }, /not a time zone/],
    ['a System V name', { cron: '0 0 * * *', timeZone: 'SystemV/AST4' }, /not a time zone/],
    ['an empty zone', { cron: '0 0 * * *', timeZone: '' }, /IANA time zone name/],
    ['a zone number', { cron: '0 0 * * *', timeZone: 1 }, /IANA time zone name/],
    ['a null zone', { cron: '0 0 * * *', timeZone: null }, /IANA time zone name/],
    ['a long zone', { cron: '0 0 * * *', timeZone: `Europe/${'x'.repeat(60)}` }, /at most 64/],
    ['a zone with every', { every: '1d', timeZone: 'Europe/Berlin' }, /timeZone goes with cron/],
    ['a zone alone', { timeZone: 'Europe/Berlin' }, /cycle must be/],
    ['a bad cron in a zone', { cron: '0 0 31 2 *', timeZone: 'Europe/Berlin' }, /never occurs/],
    [
      'a zone and a third key',
      { cron: '0 0 * * *', timeZone: 'Europe/Berlin', every: '1d' },
      /cycle must be/,
    ],
  ]
  for (const [name, input, message] of invalid) {
    it(`rejects ${name}`, () => {
      const result = parseSchedule(input)
      expect(result).toHaveProperty('error')
      expect((result as { error: string }).error).toMatch(message)
    })
  }
})

type Case = [label: string, expression: Schedule, t: number, previous: number, next: number]

describe('boundaries', () => {
  const cases: Case[] = [
    // every: aligned to the epoch
    [
      '5m mid-period',
      every('5m'),
      Date.UTC(2025, 0, 1, 10, 2, 30),
      Date.UTC(2025, 0, 1, 10, 0),
      Date.UTC(2025, 0, 1, 10, 5),
    ],
    [
      '5m on a boundary',
      every('5m'),
      Date.UTC(2025, 0, 1, 10, 5),
      Date.UTC(2025, 0, 1, 10, 5),
      Date.UTC(2025, 0, 1, 10, 10),
    ],
    [
      '5m 1 ms before',
      every('5m'),
      Date.UTC(2025, 0, 1, 10, 4, 59, 999),
      Date.UTC(2025, 0, 1, 10, 0),
      Date.UTC(2025, 0, 1, 10, 5),
    ],
    [
      '5m before 1970',
      every('5m'),
      Date.UTC(1969, 11, 31, 23, 58),
      Date.UTC(1969, 11, 31, 23, 55),
      Date.UTC(1970, 0, 1),
    ],
    [
      '7m is epoch-, not midnight-aligned',
      every('7m'),
      Date.UTC(1970, 0, 1, 0, 10),
      Date.UTC(1970, 0, 1, 0, 7),
      Date.UTC(1970, 0, 1, 0, 14),
    ],
    [
      '90m',
      every('90m'),
      Date.UTC(2025, 4, 5, 2),
      Date.UTC(2025, 4, 5, 1, 30),
      Date.UTC(2025, 4, 5, 3),
    ],
    [
      '1h',
      every('1h'),
      Date.UTC(2025, 4, 5, 2, 59),
      Date.UTC(2025, 4, 5, 2),
      Date.UTC(2025, 4, 5, 3),
    ],
    [
      '1d at midnight UTC',
      every('1d'),
      Date.UTC(2024, 1, 28, 13),
      Date.UTC(2024, 1, 28),
      Date.UTC(2024, 1, 29),
    ],
    [
      '1d across a leap day',
      every('1d'),
      Date.UTC(2024, 1, 29, 23, 59),
      Date.UTC(2024, 1, 29),
      Date.UTC(2024, 2, 1),
    ],
    [
      '1d across EU DST (no shift in UTC)',
      every('1d'),
      Date.UTC(2024, 2, 31, 1, 30),
      Date.UTC(2024, 2, 31),
      Date.UTC(2024, 3, 1),
    ],
    [
      '1w on Thursdays',
      every('1w'),
      Date.UTC(2024, 0, 1, 12),
      Date.UTC(2023, 11, 28),
      Date.UTC(2024, 0, 4),
    ],
    [
      '7d equals 1w',
      every('7d'),
      Date.UTC(2024, 0, 1, 12),
      Date.UTC(2023, 11, 28),
      Date.UTC(2024, 0, 4),
    ],
    // cron
    [
      'Monday midnight',
      cron('0 0 * * 1'),
      Date.UTC(2024, 0, 3, 12),
      Date.UTC(2024, 0, 1),
      Date.UTC(2024, 0, 8),
    ],
    [
      'Monday midnight, on it',
      cron('0 0 * * mon'),
      Date.UTC(2024, 0, 8),
      Date.UTC(2024, 0, 8),
      Date.UTC(2024, 0, 15),
    ],
    [
      '*/15',
      cron('*/15 * * * *'),
      Date.UTC(2025, 0, 1, 10, 7),
      Date.UTC(2025, 0, 1, 10, 0),
      Date.UTC(2025, 0, 1, 10, 15),
    ],
    [
      '*/15 on a boundary',
      cron('*/15 * * * *'),
      Date.UTC(2025, 0, 1, 10, 45),
      Date.UTC(2025, 0, 1, 10, 45),
      Date.UTC(2025, 0, 1, 11, 0),
    ],
    [
      '*/15 seconds past',
      cron('*/15 * * * *'),
      Date.UTC(2025, 0, 1, 10, 45, 30),
      Date.UTC(2025, 0, 1, 10, 45),
      Date.UTC(2025, 0, 1, 11, 0),
    ],
    [
      '*/15 into a new year',
      cron('*/15 * * * *'),
      Date.UTC(2024, 11, 31, 23, 50),
      Date.UTC(2024, 11, 31, 23, 45),
      Date.UTC(2025, 0, 1),
    ],
    [
      'the 31st skips April',
      cron('0 0 31 * *'),
      Date.UTC(2025, 3, 1),
      Date.UTC(2025, 2, 31),
      Date.UTC(2025, 4, 31),
    ],
    [
      'the 30th skips February',
      cron('0 0 30 * *'),
      Date.UTC(2024, 1, 1),
      Date.UTC(2024, 0, 30),
      Date.UTC(2024, 2, 30),
    ],
    [
      'leap day',
      cron('0 12 29 2 *'),
      Date.UTC(2025, 0, 1),
      Date.UTC(2024, 1, 29, 12),
      Date.UTC(2028, 1, 29, 12),
    ],
    [
      'no leap day in 2100',
      cron('0 12 29 2 *'),
      Date.UTC(2100, 5, 1),
      Date.UTC(2096, 1, 29, 12),
      Date.UTC(2104, 1, 29, 12),
    ],
    [
      'yearly',
      cron('0 0 1 1 *'),
      Date.UTC(2024, 11, 31, 23, 59, 59),
      Date.UTC(2024, 0, 1),
      Date.UTC(2025, 0, 1),
    ],
    [
      'last minute of the year',
      cron('59 23 31 12 *'),
      Date.UTC(2025, 5, 1),
      Date.UTC(2024, 11, 31, 23, 59),
      Date.UTC(2025, 11, 31, 23, 59),
    ],
    [
      'month names',
      cron('0 0 1 jan,jul *'),
      Date.UTC(2024, 1, 1),
      Date.UTC(2024, 0, 1),
      Date.UTC(2024, 6, 1),
    ],
    [
      'lists',
      cron('0 0,12 1,15 * *'),
      Date.UTC(2024, 0, 15, 6),
      Date.UTC(2024, 0, 15),
      Date.UTC(2024, 0, 15, 12),
    ],
    [
      'lists, between days',
      cron('0 0,12 1,15 * *'),
      Date.UTC(2024, 0, 15, 13),
      Date.UTC(2024, 0, 15, 12),
      Date.UTC(2024, 1, 1),
    ],
    // Fri 2024-01-05 17:31: working-hours slots 9:30, 13:30, 17:30, Monday to Friday.
    [
      'ranges with steps',
      cron('30 9-17/4 * * mon-fri'),
      Date.UTC(2024, 0, 5, 17, 31),
      Date.UTC(2024, 0, 5, 17, 30),
      Date.UTC(2024, 0, 8, 9, 30),
    ],
    [
      'weekday 7 is Sunday',
      cron('0 0 * * 7'),
      Date.UTC(2024, 0, 1),
      Date.UTC(2023, 11, 31),
      Date.UTC(2024, 0, 7),
    ],
    // 13th OR Friday: after Fri 2024-10-11 01:00 comes Sun the 13th, before it that Friday.
    [
      'dom OR dow',
      cron('0 0 13 * 5'),
      Date.UTC(2024, 9, 11, 1),
      Date.UTC(2024, 9, 11),
      Date.UTC(2024, 9, 13),
    ],
    [
      'dom OR dow, Friday 13th',
      cron('0 0 13 * 5'),
      Date.UTC(2024, 8, 12, 12),
      Date.UTC(2024, 8, 6),
      Date.UTC(2024, 8, 13),
    ],
    // Vixie: a day field starting with * counts as unrestricted, so */2 AND Monday: odd Mondays.
    [
      '*/2 dom AND dow',
      cron('0 0 */2 * 1'),
      Date.UTC(2024, 0, 2),
      Date.UTC(2024, 0, 1),
      Date.UTC(2024, 0, 15),
    ],
    [
      'Feb 31st OR Monday',
      cron('0 0 31 2 1'),
      Date.UTC(2024, 0, 31),
      Date.UTC(2023, 1, 27),
      Date.UTC(2024, 1, 5),
    ],
    // US DST started 2024-03-10 at 02:00 local; UTC has every hour.
    [
      'US DST hour exists in UTC',
      cron('0 2 * * *'),
      Date.UTC(2024, 2, 10, 1, 59),
      Date.UTC(2024, 2, 9, 2),
      Date.UTC(2024, 2, 10, 2),
    ],
    [
      'Feb 29 AND Sunday (28-year gap)',
      cron('0 0 29 2 */7'),
      Date.UTC(2005, 0, 1),
      Date.UTC(2004, 1, 29),
      Date.UTC(2032, 1, 29),
    ],
  ]
  for (const [label, s, t, previous, next] of cases) {
    it(label, () => {
      expect(new Date(previousBoundary(s, t) ?? Number.NaN).toISOString()).toBe(
        new Date(previous).toISOString(),
      )
      expect(new Date(nextBoundary(s, t) ?? Number.NaN).toISOString()).toBe(
        new Date(next).toISOString(),
      )
      expect(cycleWindow(s, t)).toEqual({ startsAt: previous, endsAt: next })
    })
  }

  it('has no boundaries without a schedule', () => {
    const never = schedule(null)
    expect(nextBoundary(never, Date.UTC(2025, 0, 1))).toBeNull()
    expect(previousBoundary(never, Date.UTC(2025, 0, 1))).toBeNull()
    expect(cycleWindow(never, 0)).toEqual({ startsAt: null, endsAt: null })
  })

  it('returns null past the range of Date and rejects non-finite times', () => {
    expect(nextBoundary(every('1d'), 8.64e15)).toBeNull()
    expect(nextBoundary(cron('0 0 * * *'), 8.64e15 - 1)).toBe(8.64e15) // the last valid Date
    expect(nextBoundary(cron('0 0 * * *'), 8.64e15)).toBeNull()
    expect(previousBoundary(cron('0 0 * * *'), -8.64e15)).toBe(-8.64e15)
    expect(() => nextBoundary(every('1d'), Number.NaN)).toThrow(RangeError)
    expect(() => previousBoundary(cron('* * * * *'), Number.POSITIVE_INFINITY)).toThrow(RangeError)
  })

  it('is fast for sparse expressions', () => {
    const rare = cron('0 0 29 2 */7')
    const started = performance.now()
    let t = Date.UTC(2000, 0, 1)
    for (let i = 0; i < 20; i++) t = nextBoundary(rare, t) as number
    expect(new Date(t).getUTCFullYear()).toBeGreaterThan(2400)
    // Day steps, not minute steps (which would take minutes): seconds spare on a loaded machine.
    expect(performance.now() - started).toBeLessThan(5000)
  })
})

// A random cron expression together with the sets it must mean, built without the parser.
interface Field {
  text: string
  values: Set<number>
  star: boolean
}

function fieldArb(min: number, max: number, maxListed: number): fc.Arbitrary<Field> {
  const all = (step: number) => {
    const values = new Set<number>()
    for (let v = min; v <= max; v += step) values.add(v)
    return values
  }
  return fc.oneof(
    fc.constant({ text: '*', values: all(1), star: true }),
    fc.integer({ min: 2, max: Math.min(20, max - min + 1) }).map((step) => ({
      text: `*/${step}`,
      values: all(step),
      star: true,
    })),
    fc
      .uniqueArray(fc.integer({ min, max }), { minLength: 1, maxLength: maxListed })
      .map((vs) => ({ text: vs.join(','), values: new Set(vs), star: false })),
    fc
      .tuple(fc.integer({ min, max }), fc.integer({ min, max }), fc.integer({ min: 1, max: 5 }))
      .map(([a, b, step]) => {
        const [lo, hi] = a <= b ? [a, b] : [b, a]
        const values = new Set<number>()
        for (let v = lo; v <= hi; v += step) values.add(v)
        return { text: `${lo}-${hi}/${step}`, values, star: false }
      }),
  )
}

const cronArb = fc
  .record({
    minute: fieldArb(0, 59, 6),
    hour: fieldArb(0, 23, 6),
    dom: fieldArb(1, 31, 10),
    month: fc.oneof(
      {
        weight: 3,
        arbitrary: fc.constant({
          text: '*',
          values: new Set([...Array(12).keys()].map((i) => i + 1)),
          star: true,
        }),
      },
      { weight: 1, arbitrary: fieldArb(1, 12, 4) },
    ),
    dow: fieldArb(0, 7, 4),
  })
  .filter((f) => !('error' in parseSchedule({ cron: cronText(f) })))

function cronText(f: { minute: Field; hour: Field; dom: Field; month: Field; dow: Field }): string {
  return [f.minute, f.hour, f.dom, f.month, f.dow].map((x) => x.text).join(' ')
}

/** Minute-by-minute matcher using Date's own calendar. */
function matches(
  f: { minute: Field; hour: Field; dom: Field; month: Field; dow: Field },
  t: number,
): boolean {
  const d = new Date(t)
  const dowValues = new Set([...f.dow.values].map((v) => v % 7))
  const domOk = f.dom.values.has(d.getUTCDate())
  const dowOk = dowValues.has(d.getUTCDay())
  const dayOk = f.dom.star || f.dow.star ? domOk && dowOk : domOk || dowOk
  return (
    dayOk &&
    f.minute.values.has(d.getUTCMinutes()) &&
    f.hour.values.has(d.getUTCHours()) &&
    f.month.values.has(d.getUTCMonth() + 1)
  )
}

/** p ≤ t < n, where p and n are t's boundaries: both are fixed points of the boundary functions. */
function expectFixedPoints(s: Schedule, t: number, p: number, n: number): void {
  expect(p).toBeLessThanOrEqual(t)
  expect(n).toBeGreaterThan(t)
  expect(nextBoundary(s, p)).toBe(n)
  expect(previousBoundary(s, p)).toBe(p)
  expect(previousBoundary(s, n)).toBe(n)
  expect(previousBoundary(s, n - 1)).toBe(p)
}

const MINUTE = 60_000
const timeArb = fc.integer({ min: Date.UTC(1960, 0, 1), max: Date.UTC(2150, 0, 1) })

describe('boundary properties', () => {
  const scheduleArb: fc.Arbitrary<Schedule> = fc.oneof(
    fc
      .tuple(fc.integer({ min: 1, max: 500 }), fc.constantFrom('m', 'h', 'd', 'w'))
      .map(([n, unit]) => parseSchedule({ every: `${n}${unit}` }))
      .filter((s): s is Schedule => !('error' in s)),
    cronArb.map((f) => cron(cronText(f))),
  )

  it('previous ≤ t < next, and both are fixed points of the boundary functions', () => {
    fc.assert(
      fc.property(scheduleArb, timeArb, (s, t) => {
        const previous = previousBoundary(s, t)
        const next = nextBoundary(s, t)
        expect(previous).not.toBeNull()
        expect(next).not.toBeNull()
        expectFixedPoints(s, t, previous as number, next as number)
      }),
      { numRuns: 400 },
    )
  })

  it('agrees with a minute-by-minute scan', () => {
    const span = 3 * 24 * 60 // minutes scanned either side
    fc.assert(
      fc.property(cronArb, timeArb, (f, t) => {
        const s = cron(cronText(f))
        const base = Math.floor(t / MINUTE) * MINUTE
        let expectedNext: number | null = null
        for (let i = 1; i <= span && expectedNext === null; i++) {
          if (matches(f, base + i * MINUTE)) expectedNext = base + i * MINUTE
        }
        let expectedPrevious: number | null = null
        for (let i = 0; i <= span && expectedPrevious === null; i++) {
          if (matches(f, base - i * MINUTE)) expectedPrevious = base - i * MINUTE
        }
        const next = nextBoundary(s, t) as number
        const previous = previousBoundary(s, t) as number
        if (expectedNext !== null) expect(next).toBe(expectedNext)
        else expect(next).toBeGreaterThan(base + span * MINUTE)
        if (expectedPrevious !== null) expect(previous).toBe(expectedPrevious)
        else expect(previous).toBeLessThan(base - span * MINUTE)
      }),
      { numRuns: 300 },
    )
  })
})

describe('time zones', () => {
  const zoned = (c: string, timeZone: string) => schedule({ cron: c, timeZone })
  const utc = (iso: string) => Date.parse(iso)

  // Expected instants worked out by hand from the zones' rules: New York sets its clocks forward
  // at 02:00 EST (07:00Z) on 2026-03-08 and back at 02:00 EDT (06:00Z) on 2026-11-01; Berlin
  // forward at 01:00Z on 2026-03-29; São Paulo began summer time at midnight on 2018-11-04
  // (00:00 → 01:00, 03:00Z); Samoa skipped 2011-12-30 (23:59:59 on the 29th at −10:00 was followed
  // by 00:00 on the 31st at +14:00, 2011-12-30T10:00Z); Lord Howe moves by half an hour.
  const cases: [label: string, expression: Schedule, t: string, previous: string, next: string][] =
    [
      [
        'local midnight in winter',
        zoned('0 0 * * *', 'America/New_York'),
        '2026-01-15T12:00:00Z',
        '2026-01-15T05:00:00Z',
        '2026-01-16T05:00:00Z',
      ],
      [
        'local midnight in summer',
        zoned('0 0 * * *', 'America/New_York'),
        '2026-07-15T12:00:00Z',
        '2026-07-15T04:00:00Z',
        '2026-07-16T04:00:00Z',
      ],
      [
        'a 23-hour day',
        zoned('0 0 * * *', 'America/New_York'),
        '2026-03-08T12:00:00Z',
        '2026-03-08T05:00:00Z',
        '2026-03-09T04:00:00Z',
      ],
      [
        'a 25-hour day',
        zoned('0 0 * * *', 'America/New_York'),
        '2026-11-01T12:00:00Z',
        '2026-11-01T04:00:00Z',
        '2026-11-02T05:00:00Z',
      ],
      [
        'a skipped 02:30 turns at the change',
        zoned('30 2 * * *', 'America/New_York'),
        '2026-03-08T06:00:00Z',
        '2026-03-07T07:30:00Z',
        '2026-03-08T07:00:00Z',
      ],
      [
        'the day after a skipped 02:30',
        zoned('30 2 * * *', 'America/New_York'),
        '2026-03-08T07:00:00Z',
        '2026-03-08T07:00:00Z',
        '2026-03-09T06:30:00Z',
      ],
      [
        'a repeated 01:30 turns the first time',
        zoned('30 1 * * *', 'America/New_York'),
        '2026-11-01T06:10:00Z', // 01:10 EST, the second time the clock reads it
        '2026-11-01T05:30:00Z',
        '2026-11-02T06:30:00Z',
      ],
      [
        'half hours through a repeated hour',
        zoned('*/30 * * * *', 'America/New_York'),
        '2026-11-01T06:40:00Z', // 01:40 EST
        '2026-11-01T05:30:00Z',
        '2026-11-01T07:00:00Z',
      ],
      [
        'a Monday reset in Berlin across its change',
        zoned('0 0 * * mon', 'Europe/Berlin'),
        '2026-03-25T00:00:00Z',
        '2026-03-22T23:00:00Z',
        '2026-03-29T22:00:00Z',
      ],
      [
        'a midnight that never was',
        zoned('0 0 * * *', 'America/Sao_Paulo'),
        '2018-11-04T01:00:00Z',
        '2018-11-03T03:00:00Z',
        '2018-11-04T03:00:00Z',
      ],
      [
        'a day a zone skipped',
        zoned('0 12 30 12 *', 'Pacific/Apia'),
        '2011-12-29T12:00:00Z',
        '2010-12-30T22:00:00Z', // noon at −10:00, summer time

        '2011-12-30T10:00:00Z',
      ],
      [
        'half-hour summer time',
        zoned('0 0 * * *', 'Australia/Lord_Howe'),
        // Back from +11:00 to +10:30 at 02:00 on the 5th (2026-04-04T15:00Z).
        '2026-04-05T12:00:00Z',
        '2026-04-04T13:00:00Z',
        '2026-04-05T13:30:00Z',
      ],
    ]
  for (const [label, expression, t, previous, next] of cases) {
    it(label, () => {
      expect(new Date(previousBoundary(expression, utc(t)) as number).toISOString()).toBe(
        new Date(utc(previous)).toISOString(),
      )
      expect(new Date(nextBoundary(expression, utc(t)) as number).toISOString()).toBe(
        new Date(utc(next)).toISOString(),
      )
    })
  }

  it('a zone without changes is UTC shifted', () => {
    const kolkata = zoned('0 9 * * *', 'Asia/Kolkata')
    const t = utc('2026-06-01T12:00:00Z')
    expect(nextBoundary(kolkata, t)).toBe(utc('2026-06-02T03:30:00Z'))
    expect(nextBoundary(zoned('0 9 * * *', 'UTC'), t)).toBe(nextBoundary(cron('0 9 * * *'), t))
  })

  it('returns null at the edges of Date instead of throwing', () => {
    const berlin = zoned('0 0 * * *', 'Europe/Berlin')
    expect(nextBoundary(berlin, 8.64e15 - 1)).toBeNull()
    expect(previousBoundary(berlin, -8.64e15)).toBeNull()
  })

  // Wall-clock minutes read with Intl's calendar fields, apart from the code's offset arithmetic.
  // Read once a quarter hour: the zones below changed their clocks on quarter hours of UTC only
  // (were one not to, the scan below would disagree with the code and fail, not pass).
  const zones = [
    'America/New_York',
    'Europe/London',
    'America/Sao_Paulo',
    'Australia/Lord_Howe',
    'Pacific/Chatham',
    'Pacific/Apia',
    'Antarctica/Troll',
    'Africa/Casablanca',
    'Asia/Kathmandu',
  ]
  const wallClocks = new Map<string, Intl.DateTimeFormat>()
  const QUARTER = 15 * MINUTE
  const quarters = new Map<string, number>()
  const wallClock = (zone: string, t: number): number => {
    const quarter = Math.floor(t / QUARTER) * QUARTER
    const key = `${zone} ${quarter}`
    let reading = quarters.get(key)
    if (reading === undefined) {
      reading = readWallClock(zone, quarter)
      quarters.set(key, reading)
    }
    return reading + (t - quarter)
  }
  const readWallClock = (zone: string, t: number): number => {
    let format = wallClocks.get(zone)
    if (format === undefined) {
      format = new Intl.DateTimeFormat('en-US', {
        timeZone: zone,
        hourCycle: 'h23',
        year: 'numeric',
        month: 'numeric',
        day: 'numeric',
        hour: 'numeric',
        minute: 'numeric',
      })
      wallClocks.set(zone, format)
    }
    const part = (type: string) =>
      Number(format.formatToParts(t).find((p) => p.type === type)?.value)
    return Date.UTC(part('year'), part('month') - 1, part('day'), part('hour'), part('minute'))
  }
  // Days whose wall clock moved (found a day at a time), so that most runs land near one.
  const FIRST = Date.UTC(1995, 0, 1)
  const LAST = Date.UTC(2035, 0, 1)
  const DAY = 86_400_000
  const changeDays = new Map<string, number[]>()
  for (const zone of zones) {
    const days: number[] = []
    for (let day = FIRST; day < LAST; day += DAY) {
      if (wallClock(zone, day + DAY) - wallClock(zone, day) !== DAY) days.push(day)
    }
    changeDays.set(zone, days)
  }
  const zonedArb = fc.constantFrom(...zones).chain((zone) => {
    const days = changeDays.get(zone) as number[]
    const anyTime = fc.integer({ min: FIRST, max: LAST })
    if (days.length === 0) return fc.tuple(fc.constant(zone), anyTime)
    const nearChange = fc
      .tuple(fc.constantFrom(...days), fc.integer({ min: -DAY, max: 2 * DAY }))
      .map(([day, shift]) => day + shift)
    return fc.tuple(fc.constant(zone), fc.oneof(anyTime, nearChange))
  })

  it('finds changes in every zone checked', () => {
    for (const zone of zones) {
      if (zone !== 'Asia/Kathmandu') expect(changeDays.get(zone)?.length).toBeGreaterThan(0)
    }
  })

  it('agrees with a minute-by-minute scan of the wall clock', () => {
    // A boundary is a minute at which the wall clock first shows a time the expression names, or
    // passes one it skipped: past every reading it showed before.
    const span = 24 * 60
    fc.assert(
      fc.property(cronArb, zonedArb, (f, [zone, t]) => {
        const s = zoned(cronText(f), zone)
        const base = Math.floor(t / MINUTE) * MINUTE
        const boundaries: number[] = []
        let shown = wallClock(zone, base - (span + 1) * MINUTE)
        // Two days before the scan starts, so `shown` includes a clock set back just before it.
        for (let i = -3 * span; i <= span; i++) {
          const u = base + i * MINUTE
          const reading = wallClock(zone, u)
          if (i > -span) {
            let named = false
            for (let r = shown + MINUTE; r <= reading && !named; r += MINUTE) named = matches(f, r)
            if (named) boundaries.push(u)
          }
          shown = Math.max(shown, reading)
        }
        const next = nextBoundary(s, t) as number
        const previous = previousBoundary(s, t) as number
        const expectedNext = boundaries.find((b) => b > t)
        const expectedPrevious = boundaries.findLast((b) => b <= t)
        if (expectedNext !== undefined) expect(new Date(next)).toEqual(new Date(expectedNext))
        else expect(next).toBeGreaterThan(base + span * MINUTE)
        if (expectedPrevious !== undefined) {
          expect(new Date(previous)).toEqual(new Date(expectedPrevious))
        } else {
          expect(previous).toBeLessThan(base - (span - 1) * MINUTE)
        }
      }),
      { numRuns: 300 },
    )
  }, 60_000)

  it('previous ≤ t < next, and both are fixed points, in every zone', () => {
    fc.assert(
      fc.property(cronArb, zonedArb, (f, [zone, t]) => {
        const s = zoned(cronText(f), zone)
        expectFixedPoints(s, t, previousBoundary(s, t) as number, nextBoundary(s, t) as number)
      }),
      { numRuns: 400 },
    )
  })
})
