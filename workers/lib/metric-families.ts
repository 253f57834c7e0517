import { z } from 'zod'

/**
 * Metrics as plain data: what an isolate's registry holds, what it sends to the MetricsHub, what
 * the hub keeps, and how any of them is merged and rendered as Prometheus text. Pure (no
 * Cloudflare imports), so the merge rules are tested on their own.
 *
 * Merge rules, the same whether the hub applies one isolate's batch or `/metrics` merges the
 * hub's shards: counters and histograms add up (an isolate sends what it counted since its last
 * acknowledged batch); a gauge takes the value set most recently (`at`, ms), because each gauge
 * series Nexus keeps has one owner at a time (a pool's waiting count, an isolate's circuit).
 */

export type LabelValues = Record<string, string>

export interface ValueSeries {
  labels: LabelValues
  value: number
}

export interface GaugeSeries extends ValueSeries {
  /** When the value was set, epoch ms: the latest one wins a merge. */
  at: number
}

export interface BucketSeries {
  labels: LabelValues
  /** Observations at or below each bucket bound (cumulative, as Prometheus exposes them). */
  counts: number[]
  sum: number
  count: number
}

export type Family =
  | { kind: 'counter'; name: string; help: string; series: ValueSeries[] }
  | { kind: 'gauge'; name: string; help: string; series: GaugeSeries[] }
  | { kind: 'histogram'; name: string; help: string; buckets: number[]; series: BucketSeries[] }

/** One isolate's report: what changed since its last acknowledged batch. */
export interface MetricsBatch {
  /** Random per isolate, so two isolates never share a sequence. */
  source: string
  /** 1, 2, 3… per source; a batch is applied once, however often it is delivered. */
  seq: number
  families: Family[]
}

// A misbehaving caller could otherwise grow a series per distinct label value forever.
export const MAX_SERIES_PER_METRIC = 2000
export const MAX_FAMILIES = 200
const MAX_LABELS = 16
const MAX_LABEL_VALUE = 256
const MAX_BUCKETS = 64

const MetricName = z.string().regex(/^[a-zA-Z_:][a-zA-Z0-9_:]{0,127}$/)
const Labels = z
  .record(z.string().regex(/^[a-zA-Z_][a-zA-Z0-9_]{0,63}$/), z.string().max(MAX_LABEL_VALUE))
  .refine((l) => Object.keys(l).length <= MAX_LABELS, `at most ${MAX_LABELS} labels`)
  .refine((l) => !('le' in l), '"le" is reserved for histogram buckets')
const Help = z.string().max(512)
const Amount = z.number().finite().nonnegative()

const FamilySchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('counter'),
    name: MetricName,
    help: Help,
    series: z.array(z.object({ labels: Labels, value: Amount })).max(MAX_SERIES_PER_METRIC),
  }),
  z.object({
    kind: z.literal('gauge'),
    name: MetricName,
    help: Help,
    series: z
      .array(
        z.object({
          labels: Labels,
          value: z.number().finite(),
          at: z.number().int().nonnegative(),
        }),
      )
      .max(MAX_SERIES_PER_METRIC),
  }),
  z
    .object({
      kind: z.literal('histogram'),
      name: MetricName,
      help: Help,
      buckets: z
        .array(z.number().finite())
        .min(1)
        .max(MAX_BUCKETS)
        .refine((b) => b.every((v, i) => i === 0 || v > b[i - 1]!), 'buckets must increase'),
      series: z
        .array(
          z.object({
            labels: Labels,
            counts: z.array(z.number().int().nonnegative()).max(MAX_BUCKETS),
            sum: z.number().finite(),
            count: z.number().int().nonnegative(),
          }),
        )
        .max(MAX_SERIES_PER_METRIC),
    })
    .refine(
      (f) => f.series.every((s) => s.counts.length === f.buckets.length),
      'every series has one count per bucket',
    ),
])

export const MetricsBatchSchema = z
  .object({
    source: z.string().regex(/^[A-Za-z0-9-]{1,64}$/),
    seq: z.number().int().positive(),
    families: z
      .array(FamilySchema)
      .max(MAX_FAMILIES)
      .refine((fs) => new Set(fs.map((f) => f.name)).size === fs.length, 'one entry per metric'),
  })
  .strict()

/** The series key: label names in order, so the same labels in any order are one series. */
export function seriesKey(labels: LabelValues): string {
  return Object.keys(labels)
    .sort()
    .map((k) => `${k}=${labels[k]}`)
    .join(',')
}

type Held =
  | { kind: 'counter'; name: string; help: string; series: Map<string, ValueSeries> }
  | { kind: 'gauge'; name: string; help: string; series: Map<string, GaugeSeries> }
  | {
      kind: 'histogram'
      name: string
      help: string
      buckets: number[]
      series: Map<string, BucketSeries>
    }

/** A family and the keys of its series that an `add` changed (what the hub writes back). */
export interface Touched {
  name: string
  keys: string[]
  /** New series refused because the family already held MAX_SERIES_PER_METRIC. */
  dropped: number
}

/**
 * Totals of many reports. `add` merges one family by the rules above and says which series it
 * changed; `families` lists everything held.
 */
export class MetricsAggregate {
  private readonly held = new Map<string, Held>()
  private readonly maxSeries: number

  /** `maxSeries`: series kept per metric; a merge of several aggregates holds their sum. */
  constructor(maxSeries = MAX_SERIES_PER_METRIC) {
    this.maxSeries = maxSeries
  }

  add(family: Family): Touched {
    let held = this.held.get(family.name)
    const sameShape =
      held?.kind === family.kind &&
      (family.kind !== 'histogram' ||
        sameBuckets((held as Extract<Held, { kind: 'histogram' }>).buckets, family.buckets))
    if (!held || !sameShape) {
      // A deploy that changed a metric's type or buckets starts it afresh, which scrapers read as
      // a counter reset; mixing old and new buckets would be wrong.
      held =
        family.kind === 'histogram'
          ? { ...family, buckets: [...family.buckets], series: new Map() }
          : ({ ...family, series: new Map() } as Held)
      this.held.set(family.name, held)
    }
    held.help = family.help
    const keys: string[] = []
    let dropped = 0
    for (const incoming of family.series) {
      const key = seriesKey(incoming.labels)
      if (!held.series.has(key) && held.series.size >= this.maxSeries) dropped++
      else if (mergeSeries(held, key, incoming)) keys.push(key)
    }
    return { name: family.name, keys, dropped }
  }

  families(): Family[] {
    return [...this.held.values()].map((h) => familyOf(h, [...h.series.values()]))
  }

  /** Drops one series (gone quiet), making room under the family's limit. */
  forget(name: string, key: string): void {
    this.held.get(name)?.series.delete(key)
  }

  /** One family with only the named series, for writing back what an `add` changed. */
  family(name: string, keys: readonly string[]): Family | undefined {
    const h = this.held.get(name)
    if (!h) return undefined
    const series = keys.flatMap((k) => {
      const s = h.series.get(k)
      return s ? [s] : []
    })
    return familyOf(h, series)
  }
}

function familyOf(h: Held, series: unknown[]): Family {
  return h.kind === 'histogram'
    ? {
        kind: h.kind,
        name: h.name,
        help: h.help,
        buckets: h.buckets,
        series: series as BucketSeries[],
      }
    : ({ kind: h.kind, name: h.name, help: h.help, series } as Family)
}

function mergeSeries(
  held: Held,
  key: string,
  incoming: ValueSeries | GaugeSeries | BucketSeries,
): boolean {
  const existing = held.series.get(key)
  switch (held.kind) {
    case 'counter': {
      const s = incoming as ValueSeries
      const e = existing as ValueSeries | undefined
      if (e) e.value += s.value
      else held.series.set(key, { labels: { ...s.labels }, value: s.value })
      return true
    }
    case 'gauge': {
      const s = incoming as GaugeSeries
      const e = existing as GaugeSeries | undefined
      if (e && e.at > s.at) return false
      held.series.set(key, { labels: { ...s.labels }, value: s.value, at: s.at })
      return true
    }
    case 'histogram': {
      const s = incoming as BucketSeries
      const e = existing as BucketSeries | undefined
      if (e) {
        for (let i = 0; i < e.counts.length; i++) e.counts[i]! += s.counts[i]!
        e.sum += s.sum
        e.count += s.count
      } else {
        held.series.set(key, {
          labels: { ...s.labels },
          counts: [...s.counts],
          sum: s.sum,
          count: s.count,
        })
      }
      return true
    }
  }
}

function sameBuckets(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i])
}

/**
 * The merge of several lists of families (the hub's shards), by the rules above. A family whose
 * type or buckets differ from `current` (this isolate's registry) is left out: after a deploy
 * changed a histogram's buckets, a shard no new isolate reported that histogram to still holds
 * the old shape, and adding it would start the new one afresh again, hiding it for good.
 */
export function mergeFamilies(
  lists: readonly Family[][],
  current: readonly Family[] = [],
): Family[] {
  const shapes = new Map(current.map((f) => [f.name, f]))
  // Each list holds up to the limit of its own (a shard, this isolate): all of them fit.
  const total = new MetricsAggregate(MAX_SERIES_PER_METRIC * Math.max(1, lists.length))
  for (const list of lists) {
    for (const f of list) {
      const c = shapes.get(f.name)
      if (
        c &&
        (c.kind !== f.kind ||
          (c.kind === 'histogram' && !sameBuckets(c.buckets, (f as typeof c).buckets)))
      )
        continue
      total.add(f)
    }
  }
  return total.families()
}

/** Prometheus text exposition (format 0.0.4) of the families. */
export function renderFamilies(families: readonly Family[]): string {
  return families.map(renderFamily).join('\n\n') + '\n'
}

function renderFamily(f: Family): string {
  const help = f.help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n')
  const lines = [`# HELP ${f.name} ${help}`, `# TYPE ${f.name} ${f.kind}`]
  if (f.kind === 'histogram') {
    for (const s of f.series) {
      f.buckets.forEach((b, i) =>
        lines.push(`${f.name}_bucket${renderLabels(s.labels, ['le', String(b)])} ${s.counts[i]}`),
      )
      lines.push(`${f.name}_bucket${renderLabels(s.labels, ['le', '+Inf'])} ${s.count}`)
      lines.push(`${f.name}_sum${renderLabels(s.labels)} ${s.sum}`)
      lines.push(`${f.name}_count${renderLabels(s.labels)} ${s.count}`)
    }
  } else {
    for (const s of f.series) lines.push(`${f.name}${renderLabels(s.labels)} ${s.value}`)
  }
  return lines.join('\n')
}

function renderLabels(labels: LabelValues, extra?: [string, string]): string {
  const parts = Object.keys(labels)
    .sort()
    .map((k) => `${k}="${escapeLabel(labels[k]!)}"`)
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`)
  return parts.length ? `{${parts.join(',')}}` : ''
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}
