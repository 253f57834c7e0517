import { describe, expect, it } from 'vitest'
import { MAX_SERIES_PER_METRIC, MetricsBatchSchema } from '../../workers/lib/metric-families.ts'
import {
  acknowledgeBatch,
  counter,
  gauge,
  histogram,
  renderMetrics,
  takeBatch,
} from '../../workers/lib/metrics.ts'

describe('metrics registry', () => {
  it('counts the same labels written in any order as one series', () => {
    const c = counter('nexus_test_label_order_total', 'test')
    c.inc({ route: '/a', method: 'GET', status: 200 })
    c.inc({ status: 200, method: 'GET', route: '/a' })
    c.inc({ method: 'GET', route: '/a', status: 200 })
    expect(c.get({ route: '/a', status: 200, method: 'GET' })).toBe(3)
    const lines = renderMetrics()
      .split('\n')
      .filter((l) => l.startsWith('nexus_test_label_order_total{'))
    expect(lines).toEqual(['nexus_test_label_order_total{method="GET",route="/a",status="200"} 3'])
  })

  it('an unlabelled counter is on /metrics and sent to the hub at 0 before its first event, once; a series made by adding 0 is sent once too', () => {
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)
    const rare = counter('nexus_test_rare_event_total', 'test', { unlabelled: true })
    expect(renderMetrics().split('\n')).toContain('nexus_test_rare_event_total 0')
    const sentOf = (batch: ReturnType<typeof takeBatch>, name: string) =>
      batch?.families.find((f) => f.name === name)?.series ?? []
    let batch = takeBatch()
    expect(sentOf(batch, rare.name)).toEqual([{ labels: {}, value: 0 }])
    acknowledgeBatch(batch!.seq)
    // Acknowledged: not sent again until it changes.
    const labelled = counter('nexus_test_labelled_zero_total', 'test')
    labelled.inc({ reason: 'x' }, 0)
    batch = takeBatch()
    expect(sentOf(batch, rare.name)).toEqual([])
    expect(sentOf(batch, labelled.name)).toEqual([{ labels: { reason: 'x' }, value: 0 }])
    acknowledgeBatch(batch!.seq)
    rare.inc()
    batch = takeBatch()
    expect(sentOf(batch, rare.name)).toEqual([{ labels: {}, value: 1 }])
    expect(sentOf(batch, labelled.name)).toEqual([])
    acknowledgeBatch(batch!.seq)
  })

  it('ignores NaN, infinite and negative amounts, which would get every batch refused', () => {
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)
    const c = counter('nexus_test_bad_amount_total', 'test')
    const g = gauge('nexus_test_bad_amount', 'test')
    const h = histogram('nexus_test_bad_amount_seconds', 'test', [1, 2])
    c.inc({}, 2)
    g.set({}, 3)
    h.observe({}, 1.5)
    c.inc({}, NaN)
    c.inc({}, -1)
    c.inc({}, Infinity)
    g.set({}, NaN)
    g.set({}, -Infinity)
    h.observe({}, NaN)
    h.observe({}, Infinity)
    h.observe({}, -5)
    const batch = takeBatch()!
    expect(MetricsBatchSchema.safeParse(batch).success).toBe(true)
    const byName = Object.fromEntries(batch.families.map((f) => [f.name, f.series]))
    expect(byName.nexus_test_bad_amount_total).toEqual([{ labels: {}, value: 2 }])
    expect(byName.nexus_test_bad_amount).toMatchObject([{ labels: {}, value: 3 }])
    expect(byName.nexus_test_bad_amount_seconds).toEqual([
      { labels: {}, counts: [0, 1], sum: 1.5, count: 1 },
    ])
    acknowledgeBatch(batch.seq)
  })

  it('a full metric makes room for a new series by letting go of one the hub holds in full; what a batch still owes is kept', () => {
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)
    const c = counter('nexus_test_room_total', 'test')
    const g = gauge('nexus_test_room', 'test')
    const h = histogram('nexus_test_room_seconds', 'test', [1])
    for (let i = 0; i < MAX_SERIES_PER_METRIC; i++) {
      c.inc({ board: `old${i}` }, 2)
      g.set({ board: `old${i}` }, i)
      h.observe({ board: `old${i}` }, 0.5)
    }
    // Nothing sent yet: a new series is turned away, and the old ones keep what they owe.
    c.inc({ board: 'new0' })
    expect(c.get({ board: 'new0' })).toBe(0)
    expect(c.get({ board: 'old0' })).toBe(2)
    // Once the hub has them, new boards take the oldest places.
    for (let b = takeBatch(); b; b = takeBatch()) acknowledgeBatch(b.seq)
    c.inc({ board: 'new1' })
    g.set({ board: 'new1' }, 7)
    h.observe({ board: 'new1' }, 0.5)
    expect(c.get({ board: 'new1' })).toBe(1)
    expect(h.count({ board: 'new1' })).toBe(1)
    expect(c.get({ board: 'old0' })).toBe(0)
    // The next batch carries the new series' changes only: the hub's totals stay whole.
    const batch = takeBatch()!
    const byName = Object.fromEntries(batch.families.map((f) => [f.name, f.series]))
    expect(byName.nexus_test_room_total).toEqual([{ labels: { board: 'new1' }, value: 1 }])
    expect(byName.nexus_test_room).toMatchObject([{ labels: { board: 'new1' }, value: 7 }])
    expect(byName.nexus_test_room_seconds).toMatchObject([{ labels: { board: 'new1' }, count: 1 }])
    acknowledgeBatch(batch.seq)
    // A board let go and counted again sends its new changes, which the hub adds to its total.
    c.inc({ board: 'old0' }, 3)
    const again = takeBatch()!
    const total = again.families.find((f) => f.name === 'nexus_test_room_total')!
    expect(total.series).toEqual([{ labels: { board: 'old0' }, value: 3 }])
    acknowledgeBatch(again.seq)
  })

  it('counts what the series cap turns away, per metric, instead of dropping it silently', () => {
    const c = counter('nexus_test_many_series_total', 'test')
    const g = gauge('nexus_test_many_series', 'test')
    const h = histogram('nexus_test_many_series_seconds', 'test', [1])
    for (let i = 0; i < MAX_SERIES_PER_METRIC + 3; i++) {
      c.inc({ board: `b${i}` })
      g.set({ board: `b${i}` }, i)
      h.observe({ board: `b${i}` }, 0.5)
    }
    // A series the metric already holds still counts.
    c.inc({ board: 'b0' })
    expect(c.get({ board: 'b0' })).toBe(2)
    expect(c.get({ board: `b${MAX_SERIES_PER_METRIC}` })).toBe(0)
    const dropped = renderMetrics()
      .split('\n')
      .filter((l) => l.startsWith('nexus_metric_series_dropped_total{'))
    expect(dropped).toEqual(
      expect.arrayContaining([
        'nexus_metric_series_dropped_total{metric="nexus_test_many_series_total"} 3',
        'nexus_metric_series_dropped_total{metric="nexus_test_many_series"} 3',
        'nexus_metric_series_dropped_total{metric="nexus_test_many_series_seconds"} 3',
      ]),
    )
  })
})
