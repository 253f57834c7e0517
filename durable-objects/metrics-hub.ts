import { DurableObject } from 'cloudflare:workers'
import type { Env } from '../workers/env.ts'
import {
  type Family,
  MetricsAggregate,
  type MetricsBatch,
  MetricsBatchSchema,
  MAX_SERIES_PER_METRIC,
  seriesKey,
} from '../workers/lib/metric-families.ts'
import { errorFields, log } from '../workers/lib/log.ts'
import { all, one, schemaVersion, setSchemaVersion } from '../workers/lib/sql.ts'

/*
 * MetricsHub: the totals of every isolate's metrics, addressed as
 * `env.METRICS_HUB.getByName(hubShardName(n))` (workers/lib/metrics-flush.ts picks the shard of each
 * series from its name and labels, and `/metrics` merges all shards). Decisions:
 *
 * - Isolates send batches of what changed since their last acknowledged batch, numbered per
 *   source. A batch at or below the source's last applied number was applied already (a retry
 *   whose answer was lost, two flushes racing) and is acknowledged without applying it again, so
 *   no count is lost or doubled. The batch and its source's new number are written in one
 *   synchronous step, so a crash leaves either both or neither.
 * - Totals live in memory (`MetricsAggregate`), loaded from SQLite on wake. Batches are added to
 *   them and written back together, WRITE_WINDOW_MS after the first of them came (what `/metrics`
 *   reads meanwhile is what is stored: a count served then taken back by a failed write or a
 *   reset would go down, which scrapers read as a counter reset): each series they changed once,
 *   however many isolates changed it, and each batch's source number beside them, in one
 *   transaction. A batch is acknowledged only once that write has committed; one that fails
 *   fails every batch it carried, and the totals in memory go back to what is stored. Written
 *   batch by batch, the rows written (each billed) grew with isolates × series every 10 s.
 * - Storage is bounded by the series limits of the families, and a series no batch has changed
 *   for SERIES_RETENTION_MS is forgotten: a board or queue region that went quiet, or a board
 *   deleted, would otherwise hold its place under the limit for good, and new ones would find no
 *   room. A counter that comes back starts again from what the isolates send: a new series to a
 *   scraper, whose first sample `increase()` does not count. Rare events' unlabelled counters
 *   are sent at 0 by each isolate as it starts (`counter(…, { unlabelled: true })`), which keeps
 *   them here while the deployment runs; a metric a deploy removed ages out.
 * - Sources silent for SOURCE_RETENTION_MS are forgotten: isolates come and go, and an isolate
 *   retries an unacknowledged batch within seconds, never a week later.
 */

/** How long a silent source's last batch number is kept. */
const SOURCE_RETENTION_MS = 7 * 24 * 3600_000
/**
 * How long a series no batch changes is kept: longer than the longest cycle a board runs on a
 * schedule (a month), so that a board's close counts, which change once a cycle, stay counters.
 */
export const SERIES_RETENTION_MS = 35 * 24 * 3600_000
/** Forgotten sources are swept at most this often. */
const SWEEP_EVERY_MS = 3600_000
/**
 * How long a batch waits for others to be written with it: a quarter of a second, which a send
 * and a scrape wait at most (the isolates wait 5 s for an answer). The more isolates, the more
 * batches share a write: at 100 sending every 10 s, 2.5 a write (60% fewer rows); at 1,000, 25.
 */
export const WRITE_WINDOW_MS = 250

/** Batches applied in memory and not yet written, and the callers waiting on that write. */
interface PendingWrite {
  /**
   * The batches' families, in the order they came: added to the totals only in the write, so
   * that `/metrics` never serves a count the shard has not stored (a write that fails, or a
   * reset before it, would then take it back: a counter going down, which scrapers read as a
   * reset).
   */
  batches: Family[][]
  /** Series keys changed, by family name. */
  series: Map<string, Set<string>>
  /** Families whose row is new or changed; `reset` when a deploy changed its type or buckets. */
  families: Map<string, { family: Family; reset: boolean }>
  /** Each source's latest batch number, and sources only seen again (a batch sent twice). */
  sources: Map<string, number>
  seen: Set<string>
  /** Changes to new series turned away past the limit, by metric (counted once written). */
  dropped: Map<string, number>
  written: Promise<void>
}

export type RecordResult =
  { ok: true; applied: boolean } | { ok: false; problem: 'validation'; detail: string }

/** The hub's own count of series changes it turned away (a counter; resets when a shard restarts). */
export const HUB_SERIES_DROPPED = 'nexus_metric_series_dropped_by_hub_total'
const HUB_SERIES_DROPPED_HELP = `Changes to new series a hub shard turned away because it already held ${MAX_SERIES_PER_METRIC} of the metric`

export class MetricsHub extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private totals = new MetricsAggregate()
  private sweptAt = -Infinity
  private readonly warnedFull = new Set<string>()
  /**
   * Changes to new series turned away past the limit, by metric, since this object started:
   * served beside the totals (HUB_SERIES_DROPPED), since a log line alone goes unseen, and the
   * isolates' own count of this seldom moves (each sends its series every 10 s, well under it).
   */
  private readonly droppedHere = new Map<string, number>()
  /** The hub's clock; tests move it forward instead of waiting a week. */
  now: () => number = Date.now
  /** The latest batch number applied of each source, written or pending (read from SQLite first). */
  private lastSeqs = new Map<string, number>()
  /** Each family's stored kind, help and buckets, as SQLite holds them or the next write will. */
  private familyRows = new Map<string, { kind: string; help: string; buckets: string | null }>()
  private pending: PendingWrite | null = null

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    this.sql = ctx.storage.sql
    if (schemaVersion(this.sql) < 1) {
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS sources (
          source TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, seen_at INTEGER NOT NULL
        );
        CREATE INDEX IF NOT EXISTS sources_seen ON sources (seen_at);
        CREATE TABLE IF NOT EXISTS families (
          name TEXT PRIMARY KEY, kind TEXT NOT NULL, help TEXT NOT NULL, buckets TEXT
        );
        CREATE TABLE IF NOT EXISTS series (
          name TEXT NOT NULL, key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (name, key)
        );
      `)
      setSchemaVersion(this.sql, 1)
    }
    if (schemaVersion(this.sql) < 2) {
      // Series written before this count as changed now: each gets the whole retention.
      this.sql.exec(`ALTER TABLE series ADD COLUMN changed_at INTEGER NOT NULL DEFAULT 0`)
      this.sql.exec(`UPDATE series SET changed_at = ?`, Date.now())
      this.sql.exec(`CREATE INDEX IF NOT EXISTS series_changed ON series (changed_at)`)
      setSchemaVersion(this.sql, 2)
    }
    this.load()
  }

  private load(): void {
    this.totals = new MetricsAggregate()
    this.lastSeqs.clear()
    this.familyRows.clear()
    const families = all<{ name: string; kind: string; help: string; buckets: string | null }>(
      this.sql,
      `SELECT name, kind, help, buckets FROM families`,
    )
    for (const f of families) {
      this.familyRows.set(f.name, { kind: f.kind, help: f.help, buckets: f.buckets })
      const series = all<{ data: string }>(
        this.sql,
        `SELECT data FROM series WHERE name = ?`,
        f.name,
      ).map((r) => JSON.parse(r.data) as never)
      this.totals.add(
        f.kind === 'histogram'
          ? {
              kind: 'histogram',
              name: f.name,
              help: f.help,
              buckets: JSON.parse(f.buckets!) as number[],
              series,
            }
          : ({ kind: f.kind, name: f.name, help: f.help, series } as Family),
      )
    }
  }

  /**
   * Applies one isolate's batch once, however many times it arrives; answers once it is written
   * (with the others of its window).
   */
  async record(input: unknown): Promise<RecordResult> {
    const parsed = MetricsBatchSchema.safeParse(input)
    if (!parsed.success) {
      return { ok: false, problem: 'validation', detail: parsed.error.issues[0]!.message }
    }
    const batch: MetricsBatch = parsed.data
    const pending = this.pendingWrite()
    if (batch.seq <= this.lastSeq(batch.source)) {
      // Applied already, perhaps in the write still to come: answered once that one is in.
      pending.seen.add(batch.source)
      await pending.written
      return { ok: true, applied: false }
    }
    pending.batches.push(batch.families)
    pending.sources.set(batch.source, batch.seq)
    this.lastSeqs.set(batch.source, batch.seq)
    await pending.written
    return { ok: true, applied: true }
  }

  private lastSeq(source: string): number {
    let last = this.lastSeqs.get(source)
    if (last === undefined) {
      last =
        one<{ last_seq: number }>(this.sql, `SELECT last_seq FROM sources WHERE source = ?`, source)
          ?.last_seq ?? -Infinity
      this.lastSeqs.set(source, last)
    }
    return last
  }

  /** The write the batches arriving now go out in, begun by the first of them. */
  private pendingWrite(): PendingWrite {
    if (this.pending) return this.pending
    const pending: PendingWrite = {
      batches: [],
      series: new Map(),
      families: new Map(),
      sources: new Map(),
      seen: new Set(),
      dropped: new Map(),
      written: new Promise<void>((resolve, reject) => {
        setTimeout(() => {
          // Batches arriving from now on go out in the next write.
          this.pending = null
          try {
            this.ctx.storage.transactionSync(() => {
              for (const families of pending.batches) {
                for (const family of families) this.apply(family, pending)
              }
              this.write(pending, this.now())
            })
          } catch (err) {
            // Rolled back: the totals in memory must not keep what was not written, and every
            // batch it carried is unanswered, so its isolate sends it again.
            try {
              this.load()
            } catch (loadErr) {
              // Totals that cannot be read back must not be written over: start afresh.
              log('error', 'metrics hub could not reload its totals', errorFields(loadErr))
              this.ctx.abort('metrics totals could not be reloaded')
            } finally {
              reject(err)
            }
            return
          }
          for (const [metric, n] of pending.dropped) {
            this.droppedHere.set(metric, (this.droppedHere.get(metric) ?? 0) + n)
          }
          resolve()
        }, WRITE_WINDOW_MS)
      }),
    }
    this.pending = pending
    return pending
  }

  private write(pending: PendingWrite, now: number): void {
    for (const [name, { family, reset }] of pending.families) {
      // The aggregate started this family afresh (a deploy changed its type or buckets).
      if (reset) this.sql.exec(`DELETE FROM series WHERE name = ?`, name)
      this.sql.exec(
        `INSERT INTO families (name, kind, help, buckets) VALUES (?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, help = excluded.help,
           buckets = excluded.buckets`,
        name,
        family.kind,
        family.help,
        family.kind === 'histogram' ? JSON.stringify(family.buckets) : null,
      )
    }
    for (const [name, keys] of pending.series) {
      for (const s of this.totals.family(name, [...keys])?.series ?? []) {
        this.sql.exec(
          `INSERT INTO series (name, key, data, changed_at) VALUES (?, ?, ?, ?)
           ON CONFLICT (name, key) DO UPDATE SET data = excluded.data, changed_at = excluded.changed_at`,
          name,
          seriesKey(s.labels),
          JSON.stringify(s),
          now,
        )
      }
    }
    for (const [source, seq] of pending.sources) {
      this.sql.exec(
        `INSERT INTO sources (source, last_seq, seen_at) VALUES (?, ?, ?)
           ON CONFLICT (source) DO UPDATE SET last_seq = excluded.last_seq, seen_at = excluded.seen_at`,
        source,
        seq,
        now,
      )
    }
    for (const source of pending.seen) {
      if (pending.sources.has(source)) continue
      this.sql.exec(`UPDATE sources SET seen_at = ? WHERE source = ?`, now, source)
    }
    if (now - this.sweptAt >= SWEEP_EVERY_MS) {
      this.sweptAt = now
      this.sql.exec(`DELETE FROM sources WHERE seen_at < ?`, now - SOURCE_RETENTION_MS)
      for (const [source] of this.lastSeqs) {
        if (!pending.sources.has(source) && !pending.seen.has(source)) this.lastSeqs.delete(source)
      }
      const stale = all<{ name: string; key: string }>(
        this.sql,
        `DELETE FROM series WHERE changed_at < ? RETURNING name, key`,
        now - SERIES_RETENTION_MS,
      )
      for (const s of stale) this.totals.forget(s.name, s.key)
    }
  }

  private apply(family: Family, pending: PendingWrite): void {
    const stored = this.familyRows.get(family.name)
    const buckets = family.kind === 'histogram' ? JSON.stringify(family.buckets) : null
    const reshaped =
      stored !== undefined && (stored.kind !== family.kind || stored.buckets !== buckets)
    // Most batches change only series: the family's row is written when it is new or changed.
    if (!stored || reshaped || stored.help !== family.help) {
      const reset = reshaped || pending.families.get(family.name)?.reset === true
      pending.families.set(family.name, { family, reset })
      this.familyRows.set(family.name, { kind: family.kind, help: family.help, buckets })
    }
    const touched = this.totals.add(family)
    if (touched.dropped > 0) {
      pending.dropped.set(family.name, (pending.dropped.get(family.name) ?? 0) + touched.dropped)
    }
    if (touched.dropped > 0 && !this.warnedFull.has(family.name)) {
      // Each isolate caps its own series; many isolates' different series can still pass the cap.
      this.warnedFull.add(family.name)
      log('warn', 'metric series limit reached in the hub; new series are not kept', {
        metric: family.name,
        dropped: touched.dropped,
      })
    }
    let keys = pending.series.get(family.name)
    if (!keys) pending.series.set(family.name, (keys = new Set()))
    for (const key of touched.keys) keys.add(key)
  }

  /** Every family's totals, and what this object turned away past the series limit. */
  families(): Family[] {
    const families = this.totals.families()
    if (this.droppedHere.size > 0) {
      families.push({
        kind: 'counter',
        name: HUB_SERIES_DROPPED,
        help: HUB_SERIES_DROPPED_HELP,
        // Per shard: each counts from its own start, and a sum across shards would go back
        // when one restarts (a reset of the whole series to Prometheus, counting all again).
        series: [...this.droppedHere].map(([metric, value]) => ({
          labels: { metric, shard: this.ctx.id.name ?? this.ctx.id.toString() },
          value,
        })),
      })
    }
    return families
  }
}
