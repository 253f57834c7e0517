/**
 * Reads the Prometheus text `/metrics` serves into what the dashboard shows: requests and errors
 * per route, latency percentiles estimated from the histogram buckets, and every other family's
 * total. Pure, so it is tested on its own.
 */

export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

/** Every sample of a Prometheus text exposition; comments and malformed lines are skipped. */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = []
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const m = SAMPLE.exec(line)
    if (!m) continue
    const value = m[3] === '+Inf' ? Infinity : Number(m[3])
    if (Number.isNaN(value)) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(LABEL)) {
      // One pass: `\\n` is a backslash and an "n", not a backslash and a newline.
      labels[l[1]!] = l[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c))
    }
    out.push({ name: m[1]!, labels, value })
  }
  return out
}

/**
 * The q-quantile (0..1) from cumulative histogram buckets `[le, count]` sorted by `le`, by linear
 * interpolation inside the bucket (as Prometheus' histogram_quantile does). Null without data.
 */
export function bucketQuantile(buckets: readonly [number, number][], q: number): number | null {
  const total = buckets.at(-1)?.[1] ?? 0
  if (total === 0) return null
  const rank = q * total
  let prevLe = 0
  let prevCount = 0
  for (const [le, count] of buckets) {
    if (count >= rank) {
      // The +Inf bucket has no upper edge: answer the last finite bound.
      if (!Number.isFinite(le)) return prevLe
      if (count === prevCount) return le
      return prevLe + ((le - prevLe) * (rank - prevCount)) / (count - prevCount)
    }
    prevLe = le
    prevCount = count
  }
  return prevLe
}

export interface RouteTraffic {
  method: string
  route: string
  requests: number
  clientErrors: number
  serverErrors: number
  /** Seconds, estimated from the buckets. */
  p50: number | null
  p95: number | null
  p99: number | null
}

export interface MetricsSummary {
  requests: number
  clientErrors: number
  serverErrors: number
  routes: RouteTraffic[]
  /** Every other family (not the HTTP ones), summed over its series. */
  families: { name: string; value: number; series: number }[]
}

const REQUESTS = 'nexus_http_requests_total'
const DURATION = 'nexus_http_request_duration_seconds'

/** Summarises `/metrics` for the dashboard. */
export function summarizeMetrics(text: string): MetricsSummary {
  const samples = parsePrometheus(text)
  const routes = new Map<string, RouteTraffic>()
  const buckets = new Map<string, Map<number, number>>()
  const families = new Map<string, { value: number; series: number }>()
  const routeOf = (l: Record<string, string>) => {
    const key = `${l.method ?? ''} ${l.route ?? ''}`
    let r = routes.get(key)
    if (!r) {
      r = {
        method: l.method ?? '',
        route: l.route ?? '',
        requests: 0,
        clientErrors: 0,
        serverErrors: 0,
        p50: null,
        p95: null,
        p99: null,
      }
      routes.set(key, r)
    }
    return { key, r }
  }
  for (const s of samples) {
    if (s.name === REQUESTS) {
      const { r } = routeOf(s.labels)
      const status = Number(s.labels.status)
      r.requests += s.value
      if (status >= 500) r.serverErrors += s.value
      else if (status >= 400) r.clientErrors += s.value
    } else if (s.name === `${DURATION}_bucket`) {
      const { key } = routeOf(s.labels)
      const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le)
      let b = buckets.get(key)
      if (!b) buckets.set(key, (b = new Map()))
      // Buckets of every status of the route add up: latency of the route as a whole.
      b.set(le, (b.get(le) ?? 0) + s.value)
    } else if (!s.name.startsWith(DURATION)) {
      const base = s.name.replace(/_(bucket|sum|count)$/, '')
      if (base !== s.name && s.name.endsWith('_bucket')) continue
      const f = families.get(s.name) ?? { value: 0, series: 0 }
      f.value += s.value
      f.series++
      families.set(s.name, f)
    }
  }
  for (const [key, b] of buckets) {
    const r = routes.get(key)!
    const sorted = [...b.entries()].sort((x, y) => x[0] - y[0])
    r.p50 = bucketQuantile(sorted, 0.5)
    r.p95 = bucketQuantile(sorted, 0.95)
    r.p99 = bucketQuantile(sorted, 0.99)
  }
  const list = [...routes.values()].filter((r) => r.requests > 0)
  list.sort((a, b) => b.requests - a.requests)
  return {
    requests: list.reduce((n, r) => n + r.requests, 0),
    clientErrors: list.reduce((n, r) => n + r.clientErrors, 0),
    serverErrors: list.reduce((n, r) => n + r.serverErrors, 0),
    routes: list,
    families: [...families.entries()]
      .map(([name, f]) => ({ name, ...f }))
      .sort((a, b) => a.name.localeCompare(b.name)),
  }
}
