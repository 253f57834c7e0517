import { describe, expect, it } from 'vitest'
import {
  type Family,
  MAX_SERIES_PER_METRIC,
  MetricsAggregate,
  MetricsBatchSchema,
  mergeFamilies,
  renderFamilies,
} from '../../workers/lib/metric-families.ts'
import {
  acknowledgeBatch,
  counter,
  gauge,
  histogram,
  takeBatch,
} from '../../workers/lib/metrics.ts'

const counterOf = (
  name: string,
  value: number,
  labels: Record<string, string> = { pool: 'a' },
): Family => ({
  kind: 'counter',
  name,
  help: 'h',
  series: [{ labels, value }],
})

const gaugeOf = (value: number, at: number): Family => ({
  kind: 'gauge',
  name: 'g',
  help: 'h',
  series: [{ labels: { pool: 'a' }, value, at }],
})

function only(families: Family[], name: string): Family {
  const f = families.find((x) => x.name === name)
  if (!f) throw new Error(`no family ${name}`)
  return f
}

describe('merging metric families', () => {
  it('adds counters from several reports, whatever order the labels were written in', () => {
    const merged = mergeFamilies([
      [counterOf('c_total', 5, { pool: 'a' })],
      [
        {
          kind: 'counter',
          name: 'c_total',
          help: 'h',
          series: [
            { labels: { region: 'eu', pool: 'a' }, value: 1 },
            { labels: { pool: 'a' }, value: 7 },
          ],
        },
      ],
      [
        {
          kind: 'counter',
          name: 'c_total',
          help: 'h',
          series: [{ labels: { pool: 'a', region: 'eu' }, value: 2 }],
        },
      ],
    ])
    expect(only(merged, 'c_total').series).toEqual([
      { labels: { pool: 'a' }, value: 12 },
      { labels: { region: 'eu', pool: 'a' }, value: 3 },
    ])
  })

  it('keeps the gauge value set last, not the one that arrived last', () => {
    const early = gaugeOf(9, 1_000)
    const late = gaugeOf(4, 2_000)
    for (const order of [
      [early, late],
      [late, early],
    ]) {
      const merged = mergeFamilies(order.map((f) => [f]))
      expect(only(merged, 'g').series).toEqual([{ labels: { pool: 'a' }, value: 4, at: 2_000 }])
    }
  })

  it('adds histogram buckets, sums and counts; new buckets start the histogram afresh', () => {
    const h = (buckets: number[], counts: number[], sum: number, count: number): Family => ({
      kind: 'histogram',
      name: 'h_seconds',
      help: 'h',
      buckets,
      series: [{ labels: {}, counts, sum, count }],
    })
    const total = new MetricsAggregate()
    total.add(h([1, 5], [1, 2], 3.5, 2))
    total.add(h([1, 5], [0, 1], 4, 1))
    expect(only(total.families(), 'h_seconds')).toMatchObject({
      buckets: [1, 5],
      series: [{ counts: [1, 3], sum: 7.5, count: 3 }],
    })
    total.add(h([1, 2, 5], [1, 1, 1], 0.5, 1))
    expect(only(total.families(), 'h_seconds')).toMatchObject({
      buckets: [1, 2, 5],
      series: [{ counts: [1, 1, 1], sum: 0.5, count: 1 }],
    })
  })

  it("merges shards in this isolate's histogram shape, whichever shard holds a stale one", () => {
    const fresh: Family = {
      kind: 'histogram',
      name: 'h_seconds',
      help: 'h',
      buckets: [1, 2],
      series: [{ labels: {}, counts: [1, 1], sum: 0.5, count: 1 }],
    }
    // A shard that no isolate of the new version reported this histogram to yet.
    const stale: Family = {
      ...fresh,
      buckets: [5],
      series: [{ labels: {}, counts: [4], sum: 9, count: 4 }],
    }
    const current: Family = { ...fresh, series: [] }
    for (const shards of [
      [[fresh], [stale]],
      [[stale], [fresh]],
    ]) {
      expect(only(mergeFamilies(shards, [current]), 'h_seconds')).toEqual(fresh)
    }
  })

  it('escapes backslashes and newlines in HELP', () => {
    const text = renderFamilies([{ kind: 'counter', name: 'x_total', help: 'a\nb\\c', series: [] }])
    expect(text.split('\n').slice(0, 2)).toEqual([
      '# HELP x_total a\\nb\\\\c',
      '# TYPE x_total counter',
    ])
  })

  it('holds at most MAX_SERIES_PER_METRIC series per metric', () => {
    const total = new MetricsAggregate()
    const series = Array.from({ length: MAX_SERIES_PER_METRIC + 5 }, (_, i) => ({
      labels: { player: String(i) },
      value: 1,
    }))
    const touched = total.add({ kind: 'counter', name: 'many_total', help: 'h', series })
    expect(touched.keys).toHaveLength(MAX_SERIES_PER_METRIC)
    expect(touched.dropped).toBe(5)
    expect(only(total.families(), 'many_total').series).toHaveLength(MAX_SERIES_PER_METRIC)
    // Series it already holds still count once the family is full.
    const again = total.add({ kind: 'counter', name: 'many_total', help: 'h', series })
    expect(again).toMatchObject({ dropped: 5 })
    expect(again.keys).toHaveLength(MAX_SERIES_PER_METRIC)
    const first = only(total.families(), 'many_total').series[0] as { value: number }
    expect(first.value).toBe(2)
  })

  it('a merge of shards keeps every series each shard holds, though together past that limit', () => {
    const shard = (from: number) => [
      {
        kind: 'counter' as const,
        name: 'boards_total',
        help: 'h',
        series: Array.from({ length: MAX_SERIES_PER_METRIC }, (_, i) => ({
          labels: { board: `b${from + i}` },
          value: 1,
        })),
      },
    ]
    const merged = mergeFamilies([shard(0), shard(MAX_SERIES_PER_METRIC), shard(0)])
    const series = only(merged, 'boards_total').series as { value: number }[]
    expect(series).toHaveLength(2 * MAX_SERIES_PER_METRIC)
    expect(series.reduce((n, s) => n + s.value, 0)).toBe(3 * MAX_SERIES_PER_METRIC)
  })
})

describe('batches a hub accepts', () => {
  const valid = { source: 'iso-1', seq: 1, families: [counterOf('c_total', 1)] }

  it('accepts a well-formed batch', () => {
    expect(MetricsBatchSchema.safeParse(valid).success).toBe(true)
  })

  it.each([
    ['a negative counter change', { ...valid, families: [counterOf('c_total', -1)] }],
    ['a non-finite value', { ...valid, families: [counterOf('c_total', Infinity)] }],
    ['a metric name Prometheus cannot parse', { ...valid, families: [counterOf('c-total', 1)] }],
    ['the reserved label "le"', { ...valid, families: [counterOf('c_total', 1, { le: '1' })] }],
    ['a sequence number of 0', { ...valid, seq: 0 }],
    ['a source with spaces', { ...valid, source: 'a b' }],
    [
      'a histogram series with the wrong number of buckets',
      {
        ...valid,
        families: [
          {
            kind: 'histogram',
            name: 'h',
            help: '',
            buckets: [1, 2],
            series: [{ labels: {}, counts: [1], sum: 1, count: 1 }],
          },
        ],
      },
    ],
    [
      'buckets out of order',
      {
        ...valid,
        families: [{ kind: 'histogram', name: 'h', help: '', buckets: [2, 1], series: [] }],
      },
    ],
    ['the same metric twice', { ...valid, families: [counterOf('c', 1), counterOf('c', 2)] }],
  ])('refuses %s', (_, batch) => {
    expect(MetricsBatchSchema.safeParse(batch).success).toBe(false)
  })
})

describe("an isolate's batches", () => {
  const changesIn = (name: string) =>
    takeBatch()?.families.find((f) => f.name === name)?.series ?? []

  it('carry what changed since the last acknowledged batch, and repeat until acknowledged', () => {
    const joins = counter('nexus_test_batch_joins_total', 'test')
    const waiting = gauge('nexus_test_batch_waiting', 'test')
    const waits = histogram('nexus_test_batch_wait_seconds', 'test', [1, 10])
    // Whatever earlier tests counted goes first.
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)

    joins.inc({ pool: 'a' }, 3)
    waiting.set({ pool: 'a' }, 5)
    waits.observe({ pool: 'a' }, 0.5)
    const first = takeBatch()!
    joins.inc({ pool: 'a' }, 2)

    // Not acknowledged (the answer was lost): the very same batch again, later counts not in it.
    const retry = takeBatch()!
    expect(retry).toEqual(first)
    expect(retry.families.find((f) => f.name === 'nexus_test_batch_joins_total')!.series).toEqual([
      { labels: { pool: 'a' }, value: 3 },
    ])

    acknowledgeBatch(first.seq)
    const second = takeBatch()!
    expect(second.seq).toBe(first.seq + 1)
    expect(second.families.map((f) => f.name)).toEqual(['nexus_test_batch_joins_total'])
    expect(second.families[0]!.series).toEqual([{ labels: { pool: 'a' }, value: 2 }])
    acknowledgeBatch(second.seq)

    waits.observe({ pool: 'a' }, 5)
    waiting.set({ pool: 'a' }, 5)
    expect(changesIn('nexus_test_batch_wait_seconds')).toEqual([
      { labels: { pool: 'a' }, counts: [0, 1], sum: 5, count: 1 },
    ])
    // A gauge set again is sent again, even to the same value: the hub orders by time.
    expect(takeBatch()!.families.find((f) => f.name === 'nexus_test_batch_waiting')).toBeDefined()
  })

  it('add up, once acknowledged, to what the isolate counted', () => {
    const c = counter('nexus_test_batch_total_total', 'test')
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)
    const hub = new MetricsAggregate()
    let expected = 0
    for (let round = 0; round < 20; round++) {
      const n = 1 + ((round * 7) % 5)
      c.inc({}, n)
      expected += n
      // Every third batch is not acknowledged the first time (a lost answer) and is taken again.
      if (round % 3 === 0) takeBatch()
      const batch = takeBatch()!
      for (const f of batch.families) hub.add(f)
      acknowledgeBatch(batch.seq)
    }
    expect(only(hub.families(), 'nexus_test_batch_total_total').series).toEqual([
      { labels: {}, value: expected },
    ])
    expect(c.get()).toBe(expected)
  })
})
