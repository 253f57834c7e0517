/**
 * A small Prometheus registry. Counters and histograms live in the isolate that recorded them:
 * locally (wrangler dev, tests) the Worker and its Durable Objects share one isolate, so
 * `/metrics` sees everything; on Cloudflare each isolate reports its own share (see
 * docs/operating.md for aggregating them).
 */

type Labels = Record<string, string | number>

const DEFAULT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

interface Series {
  labels: Labels
  value: number
}

interface HistogramSeries {
  labels: Labels
  counts: number[]
  sum: number
  count: number
}

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

function renderLabels(labels: Labels, extra?: [string, string]): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${escapeLabel(String(labels[k]))}"`)
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`)
  return parts.length ? `{${parts.join(',')}}` : ''
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

// A misbehaving caller could otherwise grow a series per distinct label value forever.
const MAX_SERIES_PER_METRIC = 2000

export class Counter {
  readonly name: string
  readonly help: string
  private readonly series = new Map<string, Series>()

  constructor(name: string, help: string) {
    this.name = name
    this.help = help
  }

  inc(labels: Labels = {}, by = 1): void {
    const key = labelKey(labels)
    const s = this.series.get(key)
    if (s) s.value += by
    else if (this.series.size < MAX_SERIES_PER_METRIC) this.series.set(key, { labels, value: by })
  }

  get(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value ?? 0
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`]
    for (const s of this.series.values())
      lines.push(`${this.name}${renderLabels(s.labels)} ${s.value}`)
    return lines.join('\n')
  }
}

export class Gauge {
  readonly name: string
  readonly help: string
  private readonly series = new Map<string, Series>()

  constructor(name: string, help: string) {
    this.name = name
    this.help = help
  }

  set(labels: Labels, value: number): void {
    const key = labelKey(labels)
    const s = this.series.get(key)
    if (s) s.value = value
    else if (this.series.size < MAX_SERIES_PER_METRIC) this.series.set(key, { labels, value })
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} gauge`]
    for (const s of this.series.values())
      lines.push(`${this.name}${renderLabels(s.labels)} ${s.value}`)
    return lines.join('\n')
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
    const key = labelKey(labels)
    let s = this.series.get(key)
    if (!s) {
      if (this.series.size >= MAX_SERIES_PER_METRIC) return
      s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }
      this.series.set(key, s)
    }
    for (let i = 0; i < this.buckets.length; i++) if (value <= this.buckets[i]!) s.counts[i]!++
    s.sum += value
    s.count++
  }

  count(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.count ?? 0
  }

  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`]
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) =>
        lines.push(
          `${this.name}_bucket${renderLabels(s.labels, ['le', String(b)])} ${s.counts[i]}`,
        ),
      )
      lines.push(`${this.name}_bucket${renderLabels(s.labels, ['le', '+Inf'])} ${s.count}`)
      lines.push(`${this.name}_sum${renderLabels(s.labels)} ${s.sum}`)
      lines.push(`${this.name}_count${renderLabels(s.labels)} ${s.count}`)
    }
    return lines.join('\n')
  }
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
export const counter = (name: string, help: string): Counter => register(new Counter(name, help))
/** Registers (or returns the already registered) gauge of this name. */
export const gauge = (name: string, help: string): Gauge => register(new Gauge(name, help))
/** Registers (or returns the already registered) histogram of this name. */
export const histogram = (name: string, help: string, buckets?: number[]): Histogram =>
  register(new Histogram(name, help, buckets))

/** Prometheus text exposition of every registered metric. */
export function renderMetrics(): string {
  return [...registry.values()].map((m) => m.render()).join('\n\n') + '\n'
}

export const httpRequests = counter(
  'nexus_http_requests_total',
  'HTTP requests by route and status',
)
export const httpDuration = histogram(
  'nexus_http_request_duration_seconds',
  'HTTP request latency by route and status',
)
