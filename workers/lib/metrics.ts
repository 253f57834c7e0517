import {
  type BucketSeries,
  type Family,
  type GaugeSeries,
  type LabelValues,
  MAX_SERIES_PER_METRIC,
  type MetricsBatch,
  renderFamilies,
  type ValueSeries,
} from './metric-families.ts'
import { log } from './log.ts'

/**
 * A small Prometheus registry, one per isolate. Locally (wrangler dev, tests) the Worker and its
 * Durable Objects share one isolate; on Cloudflare a Durable Object usually runs in another
 * isolate than the Worker that answers `/metrics`. So each isolate sends what it counted to the
 * MetricsHub in batches (`takeBatch`, then `acknowledgeBatch` once the hub has it), and
 * `/metrics` serves the hub's totals (workers/lib/metrics-flush.ts).
 *
 * A batch carries what changed since the last acknowledged one. Until it is acknowledged, every
 * `takeBatch` returns it again, unchanged and with the same sequence number, so a batch that was
 * delivered twice (a retry after a lost answer, two flushes racing) is applied once by the hub;
 * what is counted meanwhile waits for the next batch.
 */

type Labels = Record<string, string | number>

const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

interface CounterSeries {
  labels: Labels
  value: number
  /** The part of `value` the hub has acknowledged. */
  sent: number
  /** Whether the hub has acknowledged this series at all: one made at 0 is sent once, as 0. */
  announced: boolean
}

interface GaugeSeriesState {
  labels: Labels
  value: number
  at: number
  /** Counts sets: `at` alone misses two sets within one millisecond (or one frozen clock). */
  version: number
  sentVersion: number
}

interface HistogramSeries {
  labels: Labels
  counts: number[]
  sum: number
  count: number
  sentCounts: number[]
  sentSum: number
  sentCount: number
}

/** Set by every change, cleared when a batch takes the changes: a cheap test per request. */
let changedSinceBatch = false

/** The series key: labels in name order, whatever order the caller wrote them in. */
function labelKey(labels: Labels): string {
  // Every request increments a few counters, so this avoids sorting when, as almost always,
  // the caller already wrote the names in order.
  let key = ''
  let previous = ''
  for (const k in labels) {
    if (k < previous) return sortedLabelKey(labels)
    previous = k
    key += `${key ? ',' : ''}${k}=${String(labels[k])}`
  }
  return key
}

function sortedLabelKey(labels: Labels): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${String(labels[k])}`)
    .join(',')
}

function labelValues(labels: Labels): LabelValues {
  const out: LabelValues = {}
  for (const k in labels) out[k] = String(labels[k])
  return out
}

/** What a metric hands the registry for a batch: its changes, and how to mark them sent. */
interface Unsent {
  family: Family
  markSent: () => void
}

export class Counter {
  readonly name: string
  readonly help: string
  private readonly series = new Map<string, CounterSeries>()

  /**
   * `unlabelled`: the counter has one series, which exists at 0 from the start, on `/metrics`
   * and in the hub. A rare event's counter (a lost alarm, a Redis breaker opening) would
   * otherwise appear only with its first event, at 1, which Prometheus's `increase()` and
   * `rate()` do not count: an alert on it would miss that event.
   */
  constructor(name: string, help: string, opts: { unlabelled?: boolean } = {}) {
    this.name = name
    this.help = help
    if (opts.unlabelled) this.inc({}, 0)
  }

  inc(labels: Labels = {}, by = 1): void {
    // The hub refuses a batch with a negative or non-finite amount, and with it every other
    // change the batch carries; a value that stays NaN would have every later batch refused too.
    if (!(by >= 0 && by < Infinity)) return
    changedSinceBatch = true
    const key = labelKey(labels)
    const s = this.series.get(key)
    if (s) s.value += by
    else if (
      this.series.size < MAX_SERIES_PER_METRIC ||
      makeRoom(this.series, (x) => x.announced && x.value === x.sent)
    )
      this.series.set(key, { labels, value: by, sent: 0, announced: false })
    else seriesRefused(this.name)
  }

  get(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value ?? 0
  }

  family(): Family {
    const series: ValueSeries[] = []
    for (const s of this.series.values())
      series.push({ labels: labelValues(s.labels), value: s.value })
    return { kind: 'counter', name: this.name, help: this.help, series }
  }

  unsent(): Unsent | undefined {
    const changed: [CounterSeries, number][] = []
    for (const s of this.series.values())
      if (s.value !== s.sent || !s.announced) changed.push([s, s.value])
    if (changed.length === 0) return undefined
    return {
      family: {
        kind: 'counter',
        name: this.name,
        help: this.help,
        series: changed.map(([s, value]) => ({
          labels: labelValues(s.labels),
          value: value - s.sent,
        })),
      },
      markSent: () =>
        changed.forEach(([s, value]) => {
          s.sent = value
          s.announced = true
        }),
    }
  }
}

export class Gauge {
  readonly name: string
  readonly help: string
  private readonly series = new Map<string, GaugeSeriesState>()

  constructor(name: string, help: string) {
    this.name = name
    this.help = help
  }

  set(labels: Labels, value: number): void {
    // NaN or ±Infinity would get the whole batch refused by the hub (see Counter.inc).
    if (!Number.isFinite(value)) return
    changedSinceBatch = true
    const key = labelKey(labels)
    const s = this.series.get(key)
    const at = Date.now()
    if (s) {
      s.value = value
      s.at = at
      s.version++
    } else if (
      this.series.size < MAX_SERIES_PER_METRIC ||
      makeRoom(this.series, (x) => x.version === x.sentVersion)
    ) {
      this.series.set(key, { labels, value, at, version: 1, sentVersion: 0 })
    } else {
      seriesRefused(this.name)
    }
  }

  family(): Family {
    const series: GaugeSeries[] = []
    for (const s of this.series.values())
      series.push({ labels: labelValues(s.labels), value: s.value, at: s.at })
    return { kind: 'gauge', name: this.name, help: this.help, series }
  }

  unsent(): Unsent | undefined {
    const changed: [GaugeSeriesState, number][] = []
    for (const s of this.series.values())
      if (s.version !== s.sentVersion) changed.push([s, s.version])
    if (changed.length === 0) return undefined
    const series = changed.map(([s]) => ({
      labels: labelValues(s.labels),
      value: s.value,
      at: s.at,
    }))
    return {
      family: { kind: 'gauge', name: this.name, help: this.help, series },
      markSent: () => changed.forEach(([s, version]) => (s.sentVersion = version)),
    }
  }
}

export class Histogram {
  readonly name: string
  readonly help: string
  readonly buckets: number[]
  private readonly series = new Map<string, HistogramSeries>()

  constructor(name: string, help: string, buckets: number[] = DEFAULT_BUCKETS) {
    this.name = name
    this.help = help
    this.buckets = buckets
  }

  observe(labels: Labels, value: number): void {
    // A non-finite sum would get this and every later batch refused by the hub (see Counter.inc);
    // a negative one would make _sum go backwards, which Prometheus reads as a reset.
    if (!(value >= 0 && value < Infinity)) return
    changedSinceBatch = true
    const key = labelKey(labels)
    let s = this.series.get(key)
    if (!s) {
      if (
        this.series.size >= MAX_SERIES_PER_METRIC &&
        !makeRoom(this.series, (x) => x.count === x.sentCount)
      ) {
        return seriesRefused(this.name)
      }
      const zeros = this.buckets.map(() => 0)
      s = {
        labels,
        counts: zeros,
        sum: 0,
        count: 0,
        sentCounts: [...zeros],
        sentSum: 0,
        sentCount: 0,
      }
      this.series.set(key, s)
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++
    s.sum += value
    s.count++
  }

  count(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.count ?? 0
  }

  family(): Family {
    const series: BucketSeries[] = []
    for (const s of this.series.values()) {
      series.push({
        labels: labelValues(s.labels),
        counts: [...s.counts],
        sum: s.sum,
        count: s.count,
      })
    }
    return { kind: 'histogram', name: this.name, help: this.help, buckets: this.buckets, series }
  }

  unsent(): Unsent | undefined {
    const changed: [HistogramSeries, BucketSeries][] = []
    for (const s of this.series.values()) {
      if (s.count === s.sentCount) continue
      changed.push([
        s,
        { labels: labelValues(s.labels), counts: [...s.counts], sum: s.sum, count: s.count },
      ])
    }
    if (changed.length === 0) return undefined
    return {
      family: {
        kind: 'histogram',
        name: this.name,
        help: this.help,
        buckets: this.buckets,
        series: changed.map(([s, now]) => ({
          labels: now.labels,
          counts: now.counts.map((c, i) => c - s.sentCounts[i]!),
          sum: now.sum - s.sentSum,
          count: now.count - s.sentCount,
        })),
      },
      markSent: () =>
        changed.forEach(([s, now]) => {
          s.sentCounts = now.counts
          s.sentSum = now.sum
          s.sentCount = now.count
        }),
    }
  }
}

/**
 * Makes room in a full metric for a new series by letting go of the oldest one the hub already
 * holds in full (`sent`): a long-lived isolate fills its metrics with boards and pools long gone,
 * and then turned every new one away. Sent in full, nothing of it is lost: counters and
 * histograms send changes, so the series made again later adds to the hub's total, and a gauge
 * sends its value. False when every series still has something to send.
 */
function makeRoom<S>(series: Map<string, S>, sent: (s: S) => boolean): boolean {
  for (const [key, s] of series) {
    if (!sent(s)) continue
    series.delete(key)
    return true
  }
  return false
}

type Metric = Counter | Gauge | Histogram

const registry = new Map<string, Metric>()

function register<M extends Metric>(metric: M): M {
  const existing = registry.get(metric.name)
  if (existing) return existing as M
  registry.set(metric.name, metric)
  return metric
}

/** Registers (or returns the already registered) counter of this name. */
export const counter = (name: string, help: string, opts: { unlabelled?: boolean } = {}): Counter =>
  register(new Counter(name, help, opts))
/** Registers (or returns the already registered) gauge of this name. */
export const gauge = (name: string, help: string): Gauge => register(new Gauge(name, help))
/** Registers (or returns the already registered) histogram of this name. */
export const histogram = (name: string, help: string, buckets?: number[]): Histogram =>
  register(new Histogram(name, help, buckets))

/*
 * A metric holds at most MAX_SERIES_PER_METRIC series, so a label fed with unbounded values (a
 * board id per level, say) cannot grow an isolate's memory or the hub's storage for good. What
 * the cap turns away is counted here and logged once per metric and isolate, so an operator sees
 * the cap was reached instead of series silently missing. This counter's label is a metric's
 * name, of which there are far fewer than the cap.
 */
const seriesDropped = counter(
  'nexus_metric_series_dropped_total',
  `Changes to new series a metric turned away because it already held ${MAX_SERIES_PER_METRIC}`,
)
const warnedFull = new Set<string>()

function seriesRefused(metric: string): void {
  if (metric === seriesDropped.name) return
  seriesDropped.inc({ metric })
  if (warnedFull.has(metric)) return
  warnedFull.add(metric)
  log('warn', 'metric series limit reached; new series are not counted', {
    metric,
    limit: MAX_SERIES_PER_METRIC,
  })
}

/** Everything this isolate has counted since it started. */
export function localFamilies(): Family[] {
  return [...registry.values()].map((m) => m.family())
}

/** Prometheus text exposition of this isolate's metrics. */
export function renderMetrics(): string {
  return renderFamilies(localFamilies())
}

let source: string | undefined

/**
 * Identifies this isolate's batches; random, so isolates never collide. Made on first use:
 * workerd allows no random values in global scope.
 */
export function metricsSource(): string {
  return (source ??= crypto.randomUUID())
}
let lastSeq = 0
let pending: { batch: MetricsBatch; markSent: () => void } | undefined

/**
 * The batch to send to the hub: the unacknowledged one if there is one, otherwise everything
 * counted since the last acknowledged batch (undefined when nothing was).
 */
export function takeBatch(): MetricsBatch | undefined {
  if (pending) return pending.batch
  changedSinceBatch = false
  const unsent: Unsent[] = []
  for (const m of registry.values()) {
    const u = m.unsent()
    if (u) unsent.push(u)
  }
  if (unsent.length === 0) return undefined
  pending = {
    batch: { source: metricsSource(), seq: ++lastSeq, families: unsent.map((u) => u.family) },
    markSent: () => unsent.forEach((u) => u.markSent()),
  }
  return pending.batch
}

/** The hub has applied batch `seq`: its changes will not be sent again. */
export function acknowledgeBatch(seq: number): void {
  if (pending?.batch.seq !== seq) return
  pending.markSent()
  pending = undefined
}

/** Whether anything counted here has not reached the hub yet. */
export function hasUnsentMetrics(): boolean {
  return pending !== undefined || changedSinceBatch
}

/** The number of the batch that will carry what is counted now (batches are numbered in order). */
export function nextBatchSeq(): number {
  return lastSeq + 1
}

/** The number of the last batch the hub took: every count made before it was taken is there. */
export function acknowledgedThrough(): number {
  return pending ? pending.batch.seq - 1 : lastSeq
}

export const httpRequests = counter(
  'nexus_http_requests_total',
  'HTTP requests by route and status',
)
export const httpDuration = histogram(
  'nexus_http_request_duration_seconds',
  'HTTP request latency by route and status',
)
