import type { RecordResult } from '../../durable-objects/metrics-hub.ts'
import type { Env } from '../env.ts'
import { errorFields, log } from './log.ts'
import {
  type Family,
  type LabelValues,
  type MetricsBatch,
  mergeFamilies,
  seriesKey,
} from './metric-families.ts'
import {
  acknowledgeBatch,
  acknowledgedThrough,
  hasUnsentMetrics,
  localFamilies,
  nextBatchSeq,
  takeBatch,
} from './metrics.ts'
import { within } from './within.ts'

/**
 * Moves this isolate's metrics to the MetricsHub and reads the totals back for `/metrics`.
 *
 * - An isolate sends at most one batch every FLUSH_INTERVAL_MS: a Durable Object after it
 *   counted something, or at the alarm it brought forward for it; the Worker after a request
 *   once the interval has passed.
 * - `/metrics` first sends this isolate's own changes, so what the answering isolate counted is
 *   always included; other isolates' are at most FLUSH_INTERVAL_MS old.
 * - If the hub cannot be reached, `clusterMetrics` gives this isolate's own numbers and says so
 *   (scope `isolate`: the dashboard shows them, `/metrics` refuses with 503); unsent changes stay
 *   in the isolate for the next batch.
 */

export const FLUSH_INTERVAL_MS = 10_000
/**
 * Series spread over this many hub objects, so one object never holds every series; `/metrics`
 * reads them all. (Each isolate's batch reaches every shard: what bounds a shard's writes is
 * that it writes the batches of a quarter second together, WRITE_WINDOW_MS.) A series always
 * goes to the same one, whichever isolate counted it: a hub forgets a series gone quiet
 * (SERIES_RETENTION_MS), and spread by isolate, one shard would drop its share of a series the
 * others still counted, a counter going backwards. Changing the number moves series to other
 * shards: the merge adds up both while the old shard keeps its share, which it forgets once the
 * retention has passed, a counter reset to scrapers.
 */
export const METRICS_HUB_SHARDS = 4
/** How long `/metrics` waits for the hub before answering with this isolate's numbers. */
const HUB_TIMEOUT_MS = 5_000

interface HubApi {
  record(batch: MetricsBatch): Promise<RecordResult>
  families(): Promise<Family[]>
}

/**
 * The name of a hub shard. `series-shard:` since the hub was sharded by series (2026-12-04): the
 * `shard:` objects before held each series in shares by isolate, which stopped changing at that
 * deploy and would have been forgotten a retention later, counters falling by most of their
 * value. New objects start from zero at the deploy instead, one reset Prometheus reads as such.
 */
export function hubShardName(shard: number): string {
  return `series-shard:${shard}`
}

function hub(env: Pick<Env, 'METRICS_HUB'>, shard: number): HubApi {
  return env.METRICS_HUB.getByName(hubShardName(shard)) as unknown as HubApi
}

function shardOf(name: string, labels: LabelValues): number {
  const id = `${name} ${seriesKey(labels)}`
  let h = 0
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0
  return h % METRICS_HUB_SHARDS
}

/**
 * A batch's series by the shard each belongs to, as one batch per shard under the batch's own
 * source and number: each shard applies its part once, however often the batch is sent.
 */
function partsByShard(batch: MetricsBatch): Map<number, MetricsBatch> {
  const parts = new Map<number, MetricsBatch>()
  for (const family of batch.families) {
    const byShard = new Map<number, Family['series'][number][]>()
    for (const series of family.series) {
      const shard = shardOf(family.name, series.labels)
      const list = byShard.get(shard)
      if (list) list.push(series)
      else byShard.set(shard, [series])
    }
    for (const [shard, series] of byShard) {
      let part = parts.get(shard)
      if (!part) parts.set(shard, (part = { source: batch.source, seq: batch.seq, families: [] }))
      part.families.push({ ...family, series } as Family)
    }
  }
  return parts
}

let lastSentAt = -Infinity
/**
 * The send under way, if any, and when it began. A send started in a context that has since gone
 * away (a Worker request, where a local isolate shares the registry with its objects) never
 * settles; once it is older than two intervals, a newer caller sends regardless.
 */
let sender: { beat: number } | undefined

function senderAlive(now: number): boolean {
  return sender !== undefined && now - sender.beat < 2 * FLUSH_INTERVAL_MS
}

/**
 * Sends this isolate's unsent metrics now, in up to `rounds` batches (what is counted while one
 * travels goes in the next). Safe to run concurrently with
 * another send: both deliver the same numbered batch and the hub applies it once.
 *
 * @throws when the hub cannot be reached; the changes stay unsent.
 */
export async function sendMetrics(env: Pick<Env, 'METRICS_HUB'>, rounds = 3): Promise<void> {
  // Bounded: what is counted while a batch travels goes in the next one.
  for (let round = 0; round < rounds; round++) {
    const batch = takeBatch()
    if (!batch) return
    lastSentAt = Date.now()
    // Every part or none acknowledged: a batch sent again is skipped by the shards that have it.
    // Each under a deadline: a hub that hangs must not hold the isolate's sends (and the objects
    // awaiting them, awake) for good.
    const results = await Promise.all(
      [...partsByShard(batch)].map(([shard, part]) =>
        within(hub(env, shard).record(part), HUB_TIMEOUT_MS, 'metrics hub'),
      ),
    )
    for (const result of results) {
      if (!result.ok) {
        // A batch the hub refuses would be refused forever and hold back every later one.
        log('error', 'metrics batch refused', { source: batch.source, detail: result.detail })
      }
    }
    acknowledgeBatch(batch.seq)
  }
}

/**
 * A Durable Object's alarm, which `sendMetricsSoon` brings forward: the object's own adapter over
 * `ctx.storage`, whose `setAlarm` refuses (sets nothing) where the object must not wake for
 * metrics (its storage wiped, its alarm backing off), judged when it is called.
 */
export interface MetricsAlarm {
  getAlarm(): Promise<number | null>
  setAlarm(scheduledTime: number): Promise<void>
}

/**
 * An object's alarm for metrics: `storage`'s, set only while `mayArm()` says so (asked when it
 * would be set, not when the count was made).
 *
 * @example
 * private readonly metricsAlarm = guardedAlarm(this.ctx.storage, () => this.alarmFailures.value === 0)
 */
export function guardedAlarm(
  storage: Pick<DurableObjectStorage, 'getAlarm' | 'setAlarm'>,
  mayArm: () => boolean,
): MetricsAlarm {
  return {
    getAlarm: () => storage.getAlarm(),
    setAlarm: async (at) => {
      if (mayArm()) await storage.setAlarm(at)
    },
  }
}

/** The batch each object's latest counts go out in: it owes a send until the hub took that one. */
const owedBy = new WeakMap<MetricsAlarm, number>()
/** When each object's alarm was last seen set for its metrics (or sooner), to skip asking again. */
const alarmsArmed = new WeakMap<MetricsAlarm, number>()
/** The send under way, awaited by objects that find one (it may carry their counts). */
let inFlight: Promise<void> | undefined
/** Sends that failed in a row (the hub out of reach): an object's retry waits longer each time. */
let failedSends = 0
let metricsMoveAlarms = true

/**
 * Whether `sendMetricsSoon` may bring objects' alarms forward (on unless a test turns it off: one
 * that pins an object's alarm to the object's own deadlines, on a clock of its own).
 */
export function setMetricsAlarms(enabled: boolean): void {
  metricsMoveAlarms = enabled
}

/**
 * For a Durable Object, after it counted something: sends this isolate's unsent metrics if
 * FLUSH_INTERVAL_MS has passed since the last send; otherwise, until a batch carrying this
 * object's counts has reached the hub, brings the object's alarm forward to when the next send
 * is due, and the alarm ends with `sendMetricsAtAlarm`. Never a timer: an object with one
 * pending cannot hibernate, and is billed for every second it stays awake (a move every few
 * seconds kept a turn-based game's object awake for most of its match). Only an object's own
 * counts bring its alarm: another object's in the same isolate are theirs to send.
 */
export function sendMetricsSoon(
  env: Pick<Env, 'METRICS_HUB'>,
  alarm: MetricsAlarm | null,
): Promise<void> {
  if (alarm) owedBy.set(alarm, nextBatchSeq())
  return flush(env, alarm)
}

/**
 * At the end of a Durable Object's alarm: sends what is due, and brings the alarm back only if
 * the object's own counts are still owed (the alarm just run may have been the one set for them,
 * and is spent: what was noted of it is forgotten).
 */
export function sendMetricsAtAlarm(
  env: Pick<Env, 'METRICS_HUB'>,
  alarm: MetricsAlarm,
): Promise<void> {
  alarmsArmed.delete(alarm)
  return flush(env, alarm)
}

async function flush(env: Pick<Env, 'METRICS_HUB'>, alarm: MetricsAlarm | null): Promise<void> {
  if (hasUnsentMetrics()) {
    const sending = sendMetricsIfDue(env) ?? inFlight
    if (sending) await sending
  }
  if (!alarm || !metricsMoveAlarms) return
  const owed = owedBy.get(alarm)
  if (owed === undefined) return
  // Nothing unsent at all: whatever the object counted has reached the hub (or it counted
  // nothing: a call after a refusal that counts at the edge), and no batch is coming to carry it.
  if (!hasUnsentMetrics() || owed <= acknowledgedThrough()) {
    owedBy.delete(alarm)
    return
  }
  const now = Date.now()
  // Never sooner than a second: a send that failed (the hub out of reach) is tried again at the
  // interval, not in a loop of alarms.
  // Sends failing in a row wait longer each time (up to 32 intervals): a hub down for an hour
  // would otherwise wake every object with counts waiting every 10 s of it.
  const wait = FLUSH_INTERVAL_MS * 2 ** Math.min(failedSends, 5)
  const at = Math.max(lastSentAt + wait, now + 1000)
  const armed = alarmsArmed.get(alarm)
  if (armed !== undefined && armed > now && armed <= at) return
  // Noted before the storage is asked: the flushes that waited on one send resume together,
  // and each would otherwise read and set the alarm.
  alarmsArmed.set(alarm, at)
  try {
    const existing = await alarm.getAlarm()
    if (existing === null || existing > at) await alarm.setAlarm(at)
    else alarmsArmed.set(alarm, existing)
  } catch (err) {
    alarmsArmed.delete(alarm)
    // The object's storage refusing (full, or being reset): what is unsent goes with a later send.
    log('warn', 'metrics alarm not set', errorFields(err))
  }
}

/**
 * Sends unsent metrics now, whenever the last send was: an object's last word before its storage
 * goes (a deleted queue's pool), which no alarm of its would bring.
 */
export function sendMetricsNow(env: Pick<Env, 'METRICS_HUB'>): Promise<void> {
  return asSender(() => sendMetrics(env))
}

/**
 * For the Worker, after a request: sends unsent metrics if FLUSH_INTERVAL_MS has passed since the
 * last send, returning the promise for `waitUntil`; otherwise nothing. It never waits, so no
 * request is held open for metrics: what a Worker isolate counts goes with the next request
 * after the interval (or the next `/metrics` it answers).
 */
export function sendMetricsIfDue(
  env: Pick<Env, 'METRICS_HUB'>,
  now = Date.now(),
): Promise<void> | undefined {
  if (!hasUnsentMetrics() || now < lastSentAt + FLUSH_INTERVAL_MS || senderAlive(now)) {
    return undefined
  }
  // One batch: what a busy isolate counts while it travels is the next interval's. Sending it
  // at once too, as a flush on demand does, made every busy isolate's periodic send three
  // batches to every shard, a third of them of a few counts each.
  return asSender(() => sendMetrics(env, 1))
}

/** Runs `send` as this isolate's one sender; a failure is logged and its changes stay unsent. */
function asSender(send: () => Promise<void>): Promise<void> {
  const me = { beat: Date.now() }
  sender = me
  const sending = send()
    .then(() => {
      failedSends = 0
    })
    .catch((err: unknown) => {
      failedSends++
      log('warn', 'metrics not sent', errorFields(err))
    })
    .finally(() => {
      if (sender === me) sender = undefined
      if (inFlight === sending) inFlight = undefined
    })
  inFlight = sending
  return sending
}

/**
 * Every isolate's metrics as the hub totals them, this isolate's latest included; or, if the hub
 * cannot be reached, this isolate's own.
 */
export async function clusterMetrics(
  env: Pick<Env, 'METRICS_HUB'>,
): Promise<{ families: Family[]; scope: 'cluster' | 'isolate' }> {
  try {
    const read = (async () => {
      await sendMetrics(env)
      return Promise.all(
        Array.from({ length: METRICS_HUB_SHARDS }, (_, shard) => hub(env, shard).families()),
      )
    })()
    const shards = await within(read, HUB_TIMEOUT_MS, 'metrics hub')
    return { families: mergeFamilies(shards, localFamilies()), scope: 'cluster' }
  } catch (err) {
    log('warn', 'metrics hub unavailable; serving this isolate only', errorFields(err))
    return { families: localFamilies(), scope: 'isolate' }
  }
}
