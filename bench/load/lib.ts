/**
 * Shared parts of the load scenarios: a recorder that timestamps every request, closed- and
 * open-loop drivers, percentile summaries, threshold checks, an SVG plot and the report files.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { format } from 'prettier'
import { fmt, quantile } from '../lib/load.ts'
import { startStack, type Stack } from '../lib/stack.ts'

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url))

export interface Rec {
  /** Start, ms since the recorder began. */
  t: number
  ms: number
  ok: boolean
  kind: string
}

/** Why requests failed, by cause (`HTTP 503`, `TypeError: fetch failed`), for the report. */
export const failures = new Map<string, number>()

export function noteFailure(cause: string): void {
  failures.set(cause, (failures.get(cause) ?? 0) + 1)
}

export class Recorder {
  readonly started = performance.now()
  readonly recs: Rec[] = []
  readonly marks: { t: number; label: string }[] = []

  now(): number {
    return performance.now() - this.started
  }

  mark(label: string): void {
    this.marks.push({ t: this.now(), label })
  }

  /** Times one request; a throw counts as an error. */
  async time(kind: string, send: () => Promise<boolean>): Promise<boolean> {
    const t = this.now()
    let ok = false
    try {
      ok = await send()
    } catch (err) {
      ok = false
      noteFailure(err instanceof Error ? `${err.name}: ${err.message}` : String(err))
    }
    if (!ok) noteFailure(`(${kind})`)
    this.recs.push({ t, ms: this.now() - t, ok, kind })
    return ok
  }
}

/** `concurrency` workers send back to back until `durationMs` passes (or `stop()` says so). */
export async function closedLoop(opts: {
  rec: Recorder
  concurrency: number
  durationMs: number
  next: (i: number) => [kind: string, send: () => Promise<boolean>]
  stop?: () => boolean
}): Promise<void> {
  const deadline = performance.now() + opts.durationMs
  let i = 0
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (performance.now() < deadline && !opts.stop?.()) {
        const [kind, send] = opts.next(i++)
        await opts.rec.time(kind, send)
      }
    }),
  )
}

/**
 * Open loop: request `i` starts at `offsetsMs[i]` after the call whatever the earlier ones are
 * doing (how a crowd arrives), with at most `maxInFlight` outstanding so the generator itself
 * stays within what one Node process can drive.
 */
export async function openLoop(opts: {
  rec: Recorder
  offsetsMs: number[]
  maxInFlight: number
  send: (i: number) => [kind: string, send: () => Promise<boolean>]
}): Promise<void> {
  const t0 = performance.now()
  const order = opts.offsetsMs.map((o, i) => [o, i] as const).sort((a, b) => a[0] - b[0])
  let inFlight = 0
  const waiting: (() => void)[] = []
  const all: Promise<boolean>[] = []
  for (const [offset, i] of order) {
    const wait = t0 + offset - performance.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    while (inFlight >= opts.maxInFlight) await new Promise<void>((r) => waiting.push(r))
    inFlight++
    const [kind, send] = opts.send(i)
    all.push(
      opts.rec.time(kind, send).finally(() => {
        inFlight--
        waiting.shift()?.()
      }),
    )
  }
  await Promise.all(all)
}

export interface Summary {
  requests: number
  errors: number
  errorRate: number
  throughput: number
  p50: number
  p95: number
  p99: number
}

/** Throughput over the span the records cover, latency percentiles and error rate. */
export function summarize(recs: readonly Rec[]): Summary {
  const ms = recs.map((r) => r.ms)
  const errors = recs.filter((r) => !r.ok).length
  const first = Math.min(...recs.map((r) => r.t))
  const last = Math.max(...recs.map((r) => r.t + r.ms))
  return {
    requests: recs.length,
    errors,
    errorRate: recs.length ? errors / recs.length : 0,
    throughput: recs.length ? (recs.length / Math.max(1, last - first)) * 1000 : 0,
    p50: quantile(ms, 0.5),
    p95: quantile(ms, 0.95),
    p99: quantile(ms, 0.99),
  }
}

export interface Threshold {
  name: string
  actual: number
  op: '<=' | '>=' | '=='
  limit: number
  unit?: string
}

export function holds(t: Threshold): boolean {
  if (t.op === '<=') return t.actual <= t.limit
  if (t.op === '>=') return t.actual >= t.limit
  return t.actual === t.limit
}

/**
 * An SVG with two panels sharing a time axis: requests per second (bars) and p50/p99 latency per
 * second (lines), with vertical markers for events (the close, the cycle boundary).
 */
export function plotSvg(title: string, rec: Recorder, bucketMs = 1000): string {
  const W = 900
  const H = 460
  const L = 60
  const R = 20
  const span = Math.max(
    bucketMs,
    ...rec.recs.map((r) => r.t + r.ms),
    ...rec.marks.map((m) => m.t + 1),
  )
  const n = Math.ceil(span / bucketMs)
  const buckets = Array.from({ length: n }, () => [] as Rec[])
  for (const r of rec.recs) buckets[Math.min(n - 1, Math.floor(r.t / bucketMs))]!.push(r)
  const rate = buckets.map((b) => (b.length * 1000) / bucketMs)
  const errRate = buckets.map((b) => (b.filter((r) => !r.ok).length * 1000) / bucketMs)
  const p50 = buckets.map((b) =>
    b.length
      ? quantile(
          b.map((r) => r.ms),
          0.5,
        )
      : NaN,
  )
  const p99 = buckets.map((b) =>
    b.length
      ? quantile(
          b.map((r) => r.ms),
          0.99,
        )
      : NaN,
  )
  const x = (i: number) => L + (i / n) * (W - L - R)
  const panel = (top: number, height: number, max: number) => (v: number) =>
    top + height - (v / max) * height
  const rMax = nice(Math.max(1, ...rate))
  const lMax = nice(Math.max(1, ...p99.filter(Number.isFinite)))
  const yr = panel(40, 150, rMax)
  const yl = panel(250, 150, lMax)
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${L}" y="20" font-size="14" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${L}" y="34" fill="#555">requests per second (errors in red)</text>`,
    `<text x="${L}" y="244" fill="#555">latency per second, ms: p50 (blue), p99 (orange)</text>`,
  ]
  for (const [y, max] of [
    [yr, rMax],
    [yl, lMax],
  ] as const) {
    for (let k = 0; k <= 4; k++) {
      const v = (max * k) / 4
      out.push(
        `<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#e5e5e5"/>`,
        `<text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" fill="#555">${fmt(v, max < 10 ? 1 : 0)}</text>`,
      )
    }
  }
  const bw = Math.max(1, (W - L - R) / n - 1)
  rate.forEach((v, i) => {
    out.push(
      `<rect x="${x(i)}" y="${yr(v)}" width="${bw}" height="${yr(0) - yr(v)}" fill="#9cc3e6"/>`,
    )
    if (errRate[i]! > 0) {
      out.push(
        `<rect x="${x(i)}" y="${yr(errRate[i]!)}" width="${bw}" height="${yr(0) - yr(errRate[i]!)}" fill="#d62728"/>`,
      )
    }
  })
  const line = (vals: number[], color: string) => {
    const pts = vals
      .map((v, i) => (Number.isFinite(v) ? `${x(i + 0.5).toFixed(1)},${yl(v).toFixed(1)}` : null))
      .filter((p): p is string => p !== null)
    if (pts.length) {
      out.push(
        `<polyline points="${pts.join(' ')}" fill="none" stroke="${color}" stroke-width="1.5"/>`,
      )
    }
  }
  line(p50, '#1f77b4')
  line(p99, '#ff7f0e')
  for (const [k, m] of rec.marks.entries()) {
    const mx = L + (m.t / (n * bucketMs)) * (W - L - R)
    out.push(
      `<line x1="${mx}" x2="${mx}" y1="40" y2="400" stroke="#2ca02c" stroke-dasharray="4 3"/>`,
      `<text x="${mx + 3}" y="${52 + 14 * k}" fill="#2ca02c">${escapeXml(m.label)}</text>`,
    )
  }
  for (let s = 0; s <= n; s += Math.max(1, Math.round(n / 10))) {
    out.push(
      `<text x="${x(s)}" y="${H - 40}" text-anchor="middle" fill="#555">${fmt((s * bucketMs) / 1000, 0)} s</text>`,
    )
  }
  out.push('</svg>')
  return out.join('\n')
}

function nice(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v))
  const m = v / p
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

export interface Report {
  name: string
  title: string
  description: string
  command: string
  /** Rows of the results table: label and the summary of that slice of traffic. */
  rows: [label: string, summary: Summary][]
  notes?: string[]
  thresholds: Threshold[]
  rec: Recorder
}

/** Writes `results/<name>.md` and `.svg`; answers whether every threshold held. */
export async function writeReport(r: Report): Promise<{ pass: boolean; markdown: string }> {
  mkdirSync(RESULTS_DIR, { recursive: true })
  writeFileSync(`${RESULTS_DIR}${r.name}.svg`, plotSvg(r.title, r.rec))
  const pass = r.thresholds.every(holds)
  // Causes belong to this scenario only; the next one starts counting afresh.
  const causes = new Map(failures)
  failures.clear()
  const md = [
    `### ${r.title}`,
    '',
    r.description,
    '',
    `Command: \`${r.command}\` · ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC · Node ${process.version}`,
    '',
    '| traffic | requests | throughput (req/s) | p50 ms | p95 ms | p99 ms | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...r.rows.map(
      ([label, s]) =>
        `| ${label} | ${s.requests} | ${fmt(s.throughput, 0)} | ${fmt(s.p50, 1)} | ${fmt(s.p95, 1)} | ${fmt(s.p99, 1)} | ${s.errors} (${fmt(s.errorRate * 100, 2)}%) |`,
    ),
    '',
    ...(r.notes?.length ? [...r.notes.map((n) => `- ${n}`), ''] : []),
    ...(causes.size
      ? [`- errors by cause: ${[...causes].map(([k, v]) => `${k} × ${v}`).join(', ')}`, '']
      : []),
    '| threshold | measured | limit | |',
    '| --- | ---: | ---: | --- |',
    ...r.thresholds.map(
      (t) =>
        `| ${t.name} | ${fmt(t.actual, t.unit === '%' ? 2 : 1)}${t.unit ?? ''} | ${t.op} ${fmt(t.limit, t.unit === '%' ? 2 : 1)}${t.unit ?? ''} | ${holds(t) ? 'pass' : '**FAIL**'} |`,
    ),
    '',
    `![${r.title}](${r.name}.svg)`,
    '',
  ].join('\n')
  const formatted = await formatMarkdown(md)
  writeFileSync(`${RESULTS_DIR}${r.name}.md`, formatted)
  return { pass, markdown: formatted }
}

/** Command-line flags: `--name value`. */
export { flag } from '../lib/load.ts'

/** A 1-v-1 relay queue in the one region `local` where any two players match at once. */
export const EVERYONE_MATCHES_DUEL = {
  teams: 2,
  teamSize: 1,
  rules: 'relay',
  maxRatingGap: 5000,
  widenPerSecond: 0,
  regions: ['local'],
}

export interface Ctx {
  stack: Stack
  admin: Record<string, string>
}

/** Variables every load run gives the Worker: limits sized for load, not for abuse. */
export const LOAD_VARS = {
  GUEST_AUTH_PER_MINUTE: '10000',
  EDGE_SUBMITS_PER_MINUTE: '100000',
  FRESH_READS_PER_MINUTE: '1000000',
  LOG_LEVEL: 'error',
}

/** Starts a stack for one scenario run on its own (the runner shares one). */
export async function withStack<T>(run: (ctx: Ctx) => Promise<T>): Promise<T> {
  // The runs recorded in BENCHMARKS.md used wrangler dev; NEXUS_BENCH_RUNTIME=miniflare measures without its proxy.
  const stack = await startStack({
    redis: true,
    vars: LOAD_VARS,
    runtime: process.env.NEXUS_BENCH_RUNTIME === 'miniflare' ? 'miniflare' : 'wrangler',
  })
  try {
    return await run(ctxOf(stack))
  } finally {
    await stack.stop()
  }
}

export function ctxOf(stack: Stack): Ctx {
  return {
    stack,
    admin: { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' },
  }
}

/** A JSON request that must succeed (setup, not measured). */
export async function must(
  ctx: Ctx,
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<unknown> {
  const res = await fetch(ctx.stack.url + path, {
    method,
    headers: { ...ctx.admin, ...headers },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`)
  return text ? (JSON.parse(text) as unknown) : null
}

/** A measured request: ok when the status is 2xx; the body is read so connections are reused. */
export async function ok(res: Promise<Response>): Promise<boolean> {
  const r = await res
  const body = await r.text()
  if (!r.ok) {
    const type = /"type":"([^"]+)"/.exec(body)?.[1]
    // A body that is not problem+json escaped the error funnel: show what it was.
    noteFailure(`HTTP ${r.status} ${type ?? JSON.stringify(body.slice(0, 120))}`)
  }
  return r.ok
}

/** Creates `n` guest players (setup, `concurrency` at a time). */
export async function guests(
  ctx: Ctx,
  n: number,
  concurrency = 16,
): Promise<{ token: string; playerId: string }[]> {
  const out: { token: string; playerId: string }[] = []
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        next++
        const res = await fetch(`${ctx.stack.url}/v1/auth/guest`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ deviceId: `load-${crypto.randomUUID()}` }),
        })
        if (!res.ok) throw new Error(`guest: ${res.status} ${await res.text()}`)
        out.push((await res.json()) as { token: string; playerId: string })
      }
    }),
  )
  return out
}

/** Markdown as the repository's Prettier settings write it, so `prettier --check` passes. */
export function formatMarkdown(md: string): Promise<string> {
  return format(md, { parser: 'markdown', printWidth: 100, singleQuote: true, semi: false })
}
