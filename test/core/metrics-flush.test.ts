import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import type { Env } from '../../workers/env.ts'
import {
  type Family,
  MetricsAggregate,
  type MetricsBatch,
} from '../../workers/lib/metric-families.ts'
import { setLogLevel } from '../../workers/lib/log.ts'
import {
  FLUSH_INTERVAL_MS,
  type MetricsAlarm,
  sendMetrics,
  sendMetricsAtAlarm,
  sendMetricsSoon,
} from '../../workers/lib/metrics-flush.ts'
import { counter, gauge } from '../../workers/lib/metrics.ts'

/**
 * The hub's contract in memory (each shard applies each source's batch number once; the shards'
 * totals add up), so the isolate side's timing can run on a fake clock; the hub object itself is
 * tested in workerd (test/worker/metrics-hub.test.ts).
 */
class HubOnTheSide {
  readonly totals = new MetricsAggregate(Infinity)
  /** Per shard: the last batch number applied of each source. */
  private readonly lastSeq = new Map<string, Map<string, number>>()
  /** The shards each series (name and labels) reached. */
  readonly placements = new Map<string, Set<string>>()
  calls = 0
  /** The moments batches arrived: a send's rounds (what was counted while one travelled) share one. */
  readonly sendTimes = new Set<number>()
  down = false
  /** How long the hub takes to answer (0: at once); `hung`: it never does. */
  answerMs = 0
  hung = false
  /** A shard that fails every call. */
  downShard: string | null = null

  env(): Pick<Env, 'METRICS_HUB'> {
    const stub = (shard: string) => ({
      record: async (batch: MetricsBatch) => {
        this.calls++
        this.sendTimes.add(Date.now())
        // An answer comes after a moment, as over the network: a send is in flight meanwhile.
        if (this.answerMs > 0) await new Promise((r) => setTimeout(r, this.answerMs))
        if (this.hung) await new Promise(() => {})
        if (this.down || shard === this.downShard) throw new Error('hub unreachable')
        const seen = this.lastSeq.get(shard) ?? new Map<string, number>()
        this.lastSeq.set(shard, seen)
        if (batch.seq <= (seen.get(batch.source) ?? 0)) return { ok: true, applied: false }
        seen.set(batch.source, batch.seq)
        for (const f of batch.families) {
          this.totals.add(f)
          for (const series of f.series) {
            const id = `${f.name} ${JSON.stringify(series.labels)}`
            const at = this.placements.get(id) ?? new Set<string>()
            this.placements.set(id, at.add(shard))
          }
        }
        return { ok: true, applied: true }
      },
      families: async (): Promise<Family[]> => this.totals.families(),
    })
    const stubs = new Map<string, ReturnType<typeof stub>>()
    const getByName = (name: string) => {
      if (!stubs.has(name)) stubs.set(name, stub(name))
      return stubs.get(name)!
    }
    return { METRICS_HUB: { getByName } as unknown as Env['METRICS_HUB'] }
  }

  total(name: string): number {
    const f = this.totals.families().find((x) => x.name === name)
    return f?.kind === 'counter' ? f.series.reduce((n, s) => n + s.value, 0) : 0
  }
}

/** Lets the loop's promises settle between fake-clock steps. */
const settle = () => vi.advanceTimersByTimeAsync(0)

// The sender keeps the time of its last send across tests: each test's clock starts later.
let startAt = Date.now()

/** Each test on a fake clock of its own, a day after the last test's. */
function onAFakeClock(): void {
  beforeEach(() => {
    setLogLevel('silent')
    startAt += 24 * 3600_000
    vi.useFakeTimers({ now: startAt })
  })
  afterEach(() => {
    vi.useRealTimers()
  })
}

/**
 * A Durable Object on the fake clock, as metrics see it: its alarm, which `sendMetricsSoon` sets,
 * and `runFor`, which plays the time and runs the alarm as the runtime does once its time comes:
 * the alarm's own work (`work`, which may count something) then `sendMetricsAtAlarm`.
 */
class ObjectAlarm implements MetricsAlarm {
  at: number | null = null
  runs = 0
  private readonly env: Pick<Env, 'METRICS_HUB'>
  private readonly work: (self: ObjectAlarm) => void
  constructor(env: Pick<Env, 'METRICS_HUB'>, work: (self: ObjectAlarm) => void = () => {}) {
    this.env = env
    this.work = work
  }
  async getAlarm(): Promise<number | null> {
    return this.at
  }
  async setAlarm(at: number): Promise<void> {
    this.at = at
  }
  async runFor(ms: number, step = 100): Promise<void> {
    for (let t = 0; t < ms; t += step) {
      await vi.advanceTimersByTimeAsync(step)
      await this.runIfDue()
    }
  }
  async runIfDue(): Promise<void> {
    if (this.at === null || Date.now() < this.at) return
    this.at = null
    this.runs++
    this.work(this)
    // Not awaited here: a send under way waits on the fake clock, which runFor moves on.
    void sendMetricsAtAlarm(this.env, this)
  }
}

/** Plays the clock for `ms`, running each object's alarm when due. */
async function runAll(objects: ObjectAlarm[], ms: number, step = 100): Promise<void> {
  for (let t = 0; t < ms; t += step) {
    await vi.advanceTimersByTimeAsync(step)
    for (const o of objects) await o.runIfDue()
  }
}

describe('a Durable Object sending its metrics', () => {
  onAFakeClock()

  it('sends once per interval under steady traffic, however long it lasts, and never leaves a timer that would keep the object from hibernating', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const actions = counter('nexus_test_flush_steady_total', 'test')
    const seconds = 120
    for (let t = 0; t < seconds * 10; t++) {
      actions.inc()
      await sendMetricsSoon(env, alarm)
      expect(vi.getTimerCount()).toBe(0)
      await alarm.runFor(100)
    }
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_steady_total')).toBe(seconds * 10)
    // One send per interval (plus the first, at once).
    expect(hub.sendTimes.size).toBeLessThanOrEqual((seconds * 1000) / FLUSH_INTERVAL_MS + 2)
    // Delivered: the alarm is not brought back for metrics, and no timer is left.
    expect(alarm.at).toBeNull()
    expect(vi.getTimerCount()).toBe(0)
  })

  it('a last count in a quiet object goes with the alarm it brought forward, an interval after the send before it', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const moves = counter('nexus_test_flush_last_total', 'test')
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    moves.inc()
    await sendMetricsSoon(env, alarm)
    // Due: sent at once, no alarm.
    expect(hub.total('nexus_test_flush_last_total')).toBe(1)
    expect(alarm.at).toBeNull()
    // A second later, one more move, and then nothing: the alarm brings it.
    await alarm.runFor(1000)
    moves.inc()
    await sendMetricsSoon(env, alarm)
    expect(hub.total('nexus_test_flush_last_total')).toBe(1)
    expect(alarm.at).not.toBeNull()
    expect(alarm.at!).toBeLessThanOrEqual(Date.now() + FLUSH_INTERVAL_MS)
    await alarm.runFor(FLUSH_INTERVAL_MS + 1000)
    expect(hub.total('nexus_test_flush_last_total')).toBe(2)
    expect(alarm.runs).toBe(1)
    expect(alarm.at).toBeNull()
  })

  it('a call that follows no count (nothing unsent) brings no alarm, however soon after a send', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const board = new ObjectAlarm(env)
    const c = counter('nexus_test_flush_nothing_total', 'test')
    await board.runFor(2 * FLUSH_INTERVAL_MS)
    c.inc()
    await sendMetricsSoon(env, board)
    expect(hub.total('nexus_test_flush_nothing_total')).toBe(1)
    await board.runFor(1000)
    // A refused submission counted at the edge: the board counts nothing, but calls all the same.
    await sendMetricsSoon(env, board)
    expect(board.at).toBeNull()
    await board.runFor(60_000)
    expect(board.runs).toBe(0)
  })

  it('an earlier alarm of the object is kept: metrics never put it off', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const ticks = counter('nexus_test_flush_earlier_total', 'test')
    ticks.inc()
    await sendMetricsSoon(env, alarm)
    const soon = Date.now() + 50
    alarm.at = soon
    ticks.inc()
    await sendMetricsSoon(env, alarm)
    expect(alarm.at).toBe(soon)
  })

  it('an alarm whose own work counts something (a gauge set again) sends it and is not brought back for it, again and again', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    // Sends take a moment: the alarm's end finds its own send still in flight.
    hub.answerMs = 50
    const size = gauge('nexus_test_flush_gauge_bytes', 'test')
    const board = new ObjectAlarm(env, (self) => {
      size.set({}, 1)
      void sendMetricsSoon(env, self)
    })
    await board.runFor(2 * FLUSH_INTERVAL_MS)
    size.set({}, 1)
    void sendMetricsSoon(env, board)
    await board.runFor(1000)
    size.set({}, 1)
    void sendMetricsSoon(env, board)
    await board.runFor(10 * 60_000, 500)
    expect(board.runs).toBeLessThanOrEqual(1)
    expect(board.at).toBeNull()
  })

  it('an object that counted once is not woken again while another object of its isolate keeps counting', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    hub.answerMs = 50
    const busy = new ObjectAlarm(env)
    const quiet = new ObjectAlarm(env)
    const c = counter('nexus_test_flush_neighbour_total', 'test')
    await runAll([busy, quiet], 2 * FLUSH_INTERVAL_MS)
    // The busy one sends; a second later the quiet one counts, within the interval: its alarm
    // is brought forward for it.
    c.inc()
    void sendMetricsSoon(env, busy)
    await runAll([busy, quiet], 1000)
    c.inc()
    void sendMetricsSoon(env, quiet)
    await runAll([busy, quiet], 100)
    expect(quiet.at).not.toBeNull()
    for (let i = 0; i < 600; i++) {
      c.inc()
      void sendMetricsSoon(env, busy)
      await runAll([busy, quiet], 100)
    }
    await runAll([busy, quiet], 2 * FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_neighbour_total')).toBe(602)
    expect(quiet.runs).toBeLessThanOrEqual(1)
    expect(quiet.at).toBeNull()
  })

  it('an object whose counts another object’s send has carried is not brought back by that other’s newer counts', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const busy = new ObjectAlarm(env)
    const quiet = new ObjectAlarm(env)
    const c = counter('nexus_test_flush_carried_total', 'test')
    await runAll([busy, quiet], 2 * FLUSH_INTERVAL_MS)
    c.inc()
    await sendMetricsSoon(env, busy)
    // Within the interval: the quiet one's count waits, its alarm brought forward.
    await vi.advanceTimersByTimeAsync(1000)
    c.inc()
    await sendMetricsSoon(env, quiet)
    expect(quiet.at).not.toBeNull()
    // The busy one's next send, due first (its own alarm), carries the quiet one's count...
    await vi.advanceTimersByTimeAsync(quiet.at! - Date.now() - 50)
    await vi.advanceTimersByTimeAsync(100)
    await busy.runIfDue()
    await sendMetricsSoon(env, busy)
    expect(hub.total('nexus_test_flush_carried_total')).toBe(2)
    // ...and the busy one counts again, not due: unsent, but none of it the quiet one's.
    c.inc()
    await sendMetricsSoon(env, busy)
    await quiet.runIfDue()
    await settle()
    expect(quiet.at).toBeNull()
    expect(busy.at).not.toBeNull()
  })

  it('a hub that never answers is given up on at its deadline, and the object tries again later and later, not in a loop of alarms', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const c = counter('nexus_test_flush_hung_total', 'test')
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    hub.hung = true
    c.inc()
    void sendMetricsSoon(env, alarm)
    await alarm.runFor(60_000)
    // Tries that fail wait longer each time (10 s, 20 s, 40 s...): not one every interval.
    expect(alarm.runs).toBeLessThanOrEqual(3)
    hub.hung = false
    await alarm.runFor(16 * FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_hung_total')).toBe(1)
  })

  it('keeps what the hub did not take and delivers it, once, when the hub is back', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const joins = counter('nexus_test_flush_outage_total', 'test')
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    hub.down = true
    for (let i = 0; i < 5; i++) {
      joins.inc()
      void sendMetricsSoon(env, alarm)
      await alarm.runFor(FLUSH_INTERVAL_MS)
    }
    expect(hub.total('nexus_test_flush_outage_total')).toBe(0)
    hub.down = false
    joins.inc()
    void sendMetricsSoon(env, alarm)
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_outage_total')).toBe(6)
  })

  it('an object that goes quiet after a failed send still delivers, once the hub is back: its alarm tries again', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const alarm = new ObjectAlarm(env)
    const closes = counter('nexus_test_flush_quiet_total', 'test')
    await alarm.runFor(2 * FLUSH_INTERVAL_MS)
    hub.down = true
    closes.inc({}, 7)
    void sendMetricsSoon(env, alarm)
    await alarm.runFor(FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_quiet_total')).toBe(0)
    // Nothing more is counted; the hub comes back.
    hub.down = false
    await alarm.runFor(3 * FLUSH_INTERVAL_MS)
    expect(hub.total('nexus_test_flush_quiet_total')).toBe(7)
  })
})

describe('where series go', () => {
  onAFakeClock()

  it('each series to one shard, batch after batch, spread over several; a shard that fails gets its part again, the others do not apply theirs twice', async () => {
    const hub = new HubOnTheSide()
    const env = hub.env()
    const boards = counter('nexus_test_flush_shards_total', 'test')
    const ids = Array.from({ length: 40 }, (_, i) => `board-${i}`)
    for (const board of ids) boards.inc({ board })
    await sendMetrics(env)
    for (const board of ids) boards.inc({ board }, 2)
    await sendMetrics(env)
    const shards = new Set<string>()
    for (const board of ids) {
      const at = hub.placements.get(`nexus_test_flush_shards_total ${JSON.stringify({ board })}`)!
      // Each series went to the same shard both times, whatever else the batch held.
      expect(at.size).toBe(1)
      shards.add([...at][0]!)
    }
    expect(shards.size).toBeGreaterThan(1)
    expect(hub.total('nexus_test_flush_shards_total')).toBe(40 * 3)

    // One shard down: the batch is not acknowledged; sent again, only that shard's part is new.
    hub.downShard = [...shards][0]!
    for (const board of ids) boards.inc({ board })
    await expect(sendMetrics(env)).rejects.toThrow('hub unreachable')
    hub.downShard = null
    await sendMetrics(env)
    expect(hub.total('nexus_test_flush_shards_total')).toBe(40 * 4)
  })
})
