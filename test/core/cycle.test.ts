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
    expect(performance.now() - started).toBeLessThan(1000)
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
        const p = previous as number
        const n = next as number
        expect(p).toBeLessThanOrEqual(t)
        expect(n).toBeGreaterThan(t)
        expect(nextBoundary(s, p)).toBe(n)
        expect(previousBoundary(s, p)).toBe(p)
        expect(previousBoundary(s, n)).toBe(n)
        expect(previousBoundary(s, n - 1)).toBe(p)
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
