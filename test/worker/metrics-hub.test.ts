import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import {
  HUB_SERIES_DROPPED,
  SERIES_RETENTION_MS,
  type MetricsHub,
} from '../../durable-objects/metrics-hub.ts'
import type { Env } from '../../workers/env.ts'
import { parsePrometheus } from '../../workers/dashboard/metrics.ts'
import { type Family, MAX_SERIES_PER_METRIC } from '../../workers/lib/metric-families.ts'
import {
  FLUSH_INTERVAL_MS,
  hubShardName,
  sendMetricsIfDue,
  sendMetricsNow,
} from '../../workers/lib/metrics-flush.ts'
import { counter, hasUnsentMetrics } from '../../workers/lib/metrics.ts'
import { bearer, call, callWithEnv } from './helpers/http.ts'
import { until } from './helpers/sockets.ts'

/** What a Prometheus scrape presents (vitest.config.ts sets METRICS_TOKEN for the tests). */
const scrapeAuth = bearer('test-metrics-token')

const testEnv = env as unknown as Env
const hub = (shard: number) => testEnv.METRICS_HUB.getByName(hubShardName(shard))

/** Stands for another isolate: a source id of its own and its own batch numbers. */
function otherIsolate() {
  const source = crypto.randomUUID()
  return {
    source,
    batch: (seq: number, families: Family[]) => ({ source, seq, families }),
  }
}

const counterOf = (name: string, value: number, labels: Record<string, string> = {}): Family => ({
  kind: 'counter',
  name,
  help: 'test',
  series: [{ labels, value }],
})

async function scrape(): Promise<{ scope: string | null; value: (name: string) => number }> {
  const res = await call('/metrics', scrapeAuth)
  expect(res.status).toBe(200)
  const samples = parsePrometheus(await res.text())
  return {
    scope: res.headers.get('nexus-metrics-scope'),
    value: (name) => samples.filter((s) => s.name === name).reduce((sum, s) => sum + s.value, 0),
  }
}

describe('/metrics across isolates', () => {
  it('adds up every isolate’s batches, each applied once however often it arrives', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const a = otherIsolate()
    const b = otherIsolate()
    expect(await hub(1).record(a.batch(1, [counterOf(name, 5)]))).toEqual({
      ok: true,
      applied: true,
    })
    expect(await hub(3).record(b.batch(1, [counterOf(name, 7)]))).toEqual({
      ok: true,
      applied: true,
    })
    let m = await scrape()
    expect(m.scope).toBe('cluster')
    expect(m.value(name)).toBe(12)

    // The answer to a's first batch was lost and it sends it again; then an old one turns up.
    expect(await hub(1).record(a.batch(1, [counterOf(name, 5)]))).toEqual({
      ok: true,
      applied: false,
    })
    expect(await hub(1).record(a.batch(2, [counterOf(name, 3)]))).toMatchObject({ applied: true })
    expect(await hub(1).record(a.batch(1, [counterOf(name, 5)]))).toMatchObject({ applied: false })
    m = await scrape()
    expect(m.value(name)).toBe(15)
  })

  it('shows the gauge value set last, from whichever isolate set it', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}`
    const gaugeAt = (value: number, at: number): Family => ({
      kind: 'gauge',
      name,
      help: 'test',
      series: [{ labels: { pool: 'ranked:eu' }, value, at }],
    })
    const now = Date.now()
    await hub(0).record(otherIsolate().batch(1, [gaugeAt(4, now)]))
    // An isolate that set the gauge earlier reports later, on another shard.
    await hub(2).record(otherIsolate().batch(1, [gaugeAt(9, now - 5_000)]))
    expect((await scrape()).value(name)).toBe(4)
  })

  it("counts on /metrics the new series a shard turns away past a metric's limit, by metric (a log line alone goes unseen)", async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const a = otherIsolate()
    const many = (from: number, count: number): Family => ({
      kind: 'counter',
      name,
      help: 'test',
      series: Array.from({ length: count }, (_, i) => ({
        labels: { n: String(from + i) },
        value: 1,
      })),
    })
    expect(await hub(2).record(a.batch(1, [many(0, MAX_SERIES_PER_METRIC)]))).toMatchObject({
      applied: true,
    })
    // Three more, new: the shard holds its limit already.
    expect(await hub(2).record(a.batch(2, [many(MAX_SERIES_PER_METRIC, 3)]))).toMatchObject({
      applied: true,
    })
    const res = await call('/metrics', scrapeAuth)
    const text = await res.text()
    // Per shard, so that one shard's restart reads as that series' reset only.
    expect(text).toContain(`${HUB_SERIES_DROPPED}{metric="${name}",shard="${hubShardName(2)}"} 3`)
    const kept = parsePrometheus(text).filter((s) => s.name === name)
    expect(kept).toHaveLength(MAX_SERIES_PER_METRIC)
  })

  it('refuses a malformed batch and changes nothing', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const a = otherIsolate()
    await hub(1).record(a.batch(1, [counterOf(name, 2)]))
    const bad: unknown[] = [
      a.batch(2, [counterOf(name, -1)]),
      a.batch(2, [counterOf(name, 1, { le: '5' })]),
      a.batch(2, [counterOf(`${name} 1`, 1)]),
      { ...a.batch(2, [counterOf(name, 1)]), seq: 1.5 },
      { ...a.batch(2, [counterOf(name, 1)]), extra: true },
      'not a batch',
    ]
    for (const batch of bad) {
      expect(await hub(1).record(batch)).toMatchObject({ ok: false, problem: 'validation' })
    }
    expect((await scrape()).value(name)).toBe(2)
    // The refused batches did not use up the number: batch 2 is still applied.
    expect(await hub(1).record(a.batch(2, [counterOf(name, 1)]))).toMatchObject({ applied: true })
    expect((await scrape()).value(name)).toBe(3)
  })

  it("forgets a series no batch changed for its retention (freeing its place under the series limit); a busy one stays, through an eviction, and so does a rare event's counter that isolates starting send at 0", async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const rare = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const a = otherIsolate()
    const shard = hub(3)
    await shard.record(
      a.batch(1, [
        {
          kind: 'counter',
          name,
          help: 'test',
          series: [
            { labels: { board: 'quiet' }, value: 5 },
            { labels: { board: 'busy' }, value: 1 },
          ],
        },
        // A rare event's counter, at 0 since its isolate started.
        counterOf(rare, 0),
      ]),
    )
    const eightDays = Date.now() + SERIES_RETENTION_MS + 86_400_000
    await runInDurableObject(shard, (inst: MetricsHub) => {
      inst.now = () => eightDays
    })
    // An isolate started since sends the rare counter at 0 (nothing happened).
    await shard.record(a.batch(2, [counterOf(name, 2, { board: 'busy' }), counterOf(rare, 0)]))
    const boards = async () =>
      (await shard.families())
        .find((f) => f.name === name)!
        .series.map((x) => [x.labels.board, (x as { value: number }).value])
    expect(await boards()).toEqual([['busy', 3]])
    await evictDurableObject(shard)
    expect(await boards()).toEqual([['busy', 3]])
    // Still there at 0, so its first event reads as an increase.
    const kept = (await shard.families()).find((f) => f.name === rare)
    expect(kept?.series).toEqual([{ labels: {}, value: 0 }])
  })

  it('writes the batches of a moment together, each series they changed once however many isolates changed it; each is answered once that write is in', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const shard = hub(0)
    // Counts the series rows the shard writes.
    await runInDurableObject(shard, (inst: MetricsHub) => {
      const sql = (inst as unknown as { sql: SqlStorage }).sql
      const exec = sql.exec.bind(sql)
      const counted = inst as unknown as { seriesWrites: number }
      counted.seriesWrites = 0
      sql.exec = ((query: string, ...bindings: unknown[]) => {
        if (query.includes('INSERT INTO series')) counted.seriesWrites++
        return exec(query, ...bindings)
      }) as typeof sql.exec
    })
    const isolates = Array.from({ length: 20 }, () => otherIsolate())
    const answers = await Promise.all(
      isolates.map((i) =>
        shard.record(
          i.batch(1, [
            {
              kind: 'counter',
              name,
              help: 'test',
              series: [
                { labels: { board: 'a' }, value: 1 },
                { labels: { board: 'b' }, value: 2 },
              ],
            },
          ]),
        ),
      ),
    )
    expect(answers).toEqual(isolates.map(() => ({ ok: true, applied: true })))
    const writes = await runInDurableObject(
      shard,
      (inst: MetricsHub) => (inst as unknown as { seriesWrites: number }).seriesWrites,
    )
    // Two series, written once each in the moment's write, not once per isolate (40).
    expect(writes).toBe(2)
    // What was written is the totals, as a woken shard reads them back.
    await evictDurableObject(shard)
    const series = (await shard.families()).find((f) => f.name === name)!.series
    expect(series.map((x) => [x.labels.board, (x as { value: number }).value]).sort()).toEqual([
      ['a', 20],
      ['b', 40],
    ])
  })

  it('answers none of the batches whose write failed, and keeps none of them: sent again, each counts once', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_total`
    const shard = hub(1)
    const [a, b] = [otherIsolate(), otherIsolate()]
    await runInDurableObject(shard, (inst: MetricsHub) => {
      const sql = (inst as unknown as { sql: SqlStorage }).sql
      const exec = sql.exec.bind(sql)
      let failed = false
      sql.exec = ((query: string, ...bindings: unknown[]) => {
        if (!failed && query.includes('INSERT INTO sources')) {
          failed = true
          throw new Error('storage full')
        }
        return exec(query, ...bindings)
      }) as typeof sql.exec
    })
    const sent = Promise.allSettled([
      shard.record(a.batch(1, [counterOf(name, 5)])),
      shard.record(b.batch(1, [counterOf(name, 7)])),
    ])
    // While their write is to come, a scrape sees nothing of them: what it served would go back
    // down when the write failed, which a scraper reads as a counter reset.
    await until(
      async () =>
        await runInDurableObject(shard, (inst: MetricsHub) =>
          (inst as unknown as { pending: { sources: Map<string, number> } | null }).pending?.sources
            .size === 2
            ? true
            : undefined,
        ),
    )
    expect((await shard.families()).find((f) => f.name === name)).toBeUndefined()
    const first = await sent
    expect(first.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    expect((await shard.families()).find((f) => f.name === name)).toBeUndefined()
    // Each isolate sends its batch again.
    expect(await shard.record(a.batch(1, [counterOf(name, 5)]))).toMatchObject({ applied: true })
    expect(await shard.record(b.batch(1, [counterOf(name, 7)]))).toMatchObject({ applied: true })
    expect(await shard.record(a.batch(1, [counterOf(name, 5)]))).toMatchObject({ applied: false })
    const total = (await shard.families()).find((f) => f.name === name)!.series[0] as {
      value: number
    }
    expect(total.value).toBe(12)
  })

  it('keeps its totals and batch numbers when evicted', async () => {
    const name = `nexus_test_${crypto.randomUUID().replaceAll('-', '')}_seconds`
    const a = otherIsolate()
    const histogramOf = (value: number): Family => ({
      kind: 'histogram',
      name,
      help: 'test',
      buckets: [1, 10],
      series: [{ labels: {}, counts: [value <= 1 ? 1 : 0, 1], sum: value, count: 1 }],
    })
    await hub(2).record(a.batch(1, [histogramOf(0.5), counterOf(`${name}_total`, 4)]))
    await hub(2).record(a.batch(2, [histogramOf(4)]))
    await evictDurableObject(hub(2))
    expect(await hub(2).record(a.batch(2, [histogramOf(4)]))).toMatchObject({ applied: false })
    const m = await scrape()
    expect(m.value(`${name}_count`)).toBe(2)
    expect(m.value(`${name}_sum`)).toBe(4.5)
    expect(m.value(`${name}_total`)).toBe(4)
  })
})

describe("this isolate's own metrics", () => {
  /** Answered requests to /health, as a /metrics response (served with `env`) reports them. */
  async function healthCount(overrides: Partial<Env> = {}) {
    const res = await callWithEnv(overrides, '/metrics', scrapeAuth)
    expect(res.status).toBe(200)
    const count = parsePrometheus(await res.text())
      .filter(
        (s) =>
          s.name === 'nexus_http_requests_total' &&
          s.labels.route === '/health' &&
          s.labels.status === '200',
      )
      .reduce((n, s) => n + s.value, 0)
    return { count, scope: res.headers.get('nexus-metrics-scope') }
  }

  it('are counted once each, scrape after scrape', async () => {
    const before = await healthCount()
    for (let i = 0; i < 3; i++) expect((await call('/health')).status).toBe(200)
    expect(await healthCount()).toEqual({ count: before.count + 3, scope: 'cluster' })
    expect(await healthCount()).toEqual({ count: before.count + 3, scope: 'cluster' })
  })

  it('are not served alone while the hub cannot answer (503: counters never go backwards), and reach it later, once', async () => {
    const before = await healthCount()
    for (let i = 0; i < 2; i++) expect((await call('/health')).status).toBe(200)
    // A binding to objects that have no hub methods: every call to the hub fails.
    const brokenHub = { METRICS_HUB: testEnv.LEADERBOARD as unknown as Env['METRICS_HUB'] }
    const degraded = await callWithEnv(brokenHub, '/metrics', scrapeAuth)
    expect(degraded.status).toBe(503)
    expect(degraded.headers.get('content-type')).toBe('application/problem+json')
    expect(((await degraded.json()) as { type: string }).type).toBe('urn:nexus:problem:unavailable')
    expect(await healthCount()).toEqual({ count: before.count + 2, scope: 'cluster' })
  })
})

describe("an isolate's periodic send", () => {
  it('is one batch: what the isolate counts while it travels waits for the next interval (a flush on demand takes it at once)', async () => {
    // What the file's other tests counted goes to the real hub first, not to the fake one below.
    await sendMetricsNow(env)
    const counted = counter(`nexus_test_periodic_${crypto.randomUUID().slice(0, 8)}`, 'test')
    counted.inc()
    const sent: number[] = []
    let countedWhileSending = false
    const shard = {
      async record(part: { seq: number }) {
        sent.push(part.seq)
        // Another request of the isolate counts while the batch travels.
        if (!countedWhileSending) {
          countedWhileSending = true
          counted.inc()
        }
        return { ok: true }
      },
      async families() {
        return []
      },
    }
    const hubs = { METRICS_HUB: { getByName: () => shard } as unknown as Env['METRICS_HUB'] }
    await sendMetricsIfDue(hubs, Date.now() + 2 * FLUSH_INTERVAL_MS)
    expect(new Set(sent).size).toBe(1)
    expect(hasUnsentMetrics()).toBe(true)
    // On demand (a scrape, the cron's end): until nothing is left.
    sent.length = 0
    await sendMetricsNow(hubs)
    expect(sent.length).toBeGreaterThan(0)
  })
})
