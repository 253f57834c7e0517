import { Redis } from '@upstash/redis/cloudflare'
import { counter } from './metrics.ts'
import { errorFields, log } from './log.ts'
import { within } from './within.ts'

const redisFailures = counter('nexus_redis_failures_total', 'Redis calls that failed or timed out')
const redisSkipped = counter(
  'nexus_redis_skipped_total',
  'Redis calls skipped because the circuit breaker was open',
)
// A counter, not a 0/1 gauge: every isolate has its own breaker, and counts add up across them
// where one gauge series would show whichever isolate wrote last.
const redisCircuitOpens = counter(
  'nexus_redis_circuit_opens_total',
  "Times one of an isolate's Redis circuits (reads, writes) opened (Redis skipped for a while after failures)",
  { unlabelled: true },
)

export interface AcceleratorOptions {
  /** Per-call deadline; Redis is an accelerator, so a slow answer is worth less than none. */
  timeoutMs?: number
  /** Consecutive failures that open the circuit. */
  failureThreshold?: number
  /** How long the circuit stays open before one trial call is let through. */
  openMs?: number
  now?: () => number
}

/** How long past its deadline a trial call is still waited for before it counts as lost. */
const TRIAL_GRACE_MS = 1_000
/** The key readiness checks write (and let expire): one per deployment, a few bytes. */
const READY_PROBE_KEY = 'nexus:ready-probe'

/**
 * One circuit: after `failureThreshold` consecutive failures it opens for `openMs`, then lets
 * one trial call through, whose outcome closes or reopens it.
 */
class Circuit {
  private consecutiveFailures = 0
  private openUntil = 0
  /**
   * When the half-open circuit's trial call began, or null. A trial whose request was cancelled
   * never settles (the runtime drops a cancelled request's promises, its deadline's timer
   * included), so one older than its deadline counts as lost and the next call is a new trial:
   * a flag that only the trial cleared left the isolate skipping Redis for good.
   */
  private trialStartedAt: number | null = null

  private readonly failureThreshold: number
  private readonly openMs: number
  private readonly trialLostAfterMs: number
  private readonly now: () => number

  constructor(
    failureThreshold: number,
    openMs: number,
    trialLostAfterMs: number,
    now: () => number,
  ) {
    this.failureThreshold = failureThreshold
    this.openMs = openMs
    this.trialLostAfterMs = trialLostAfterMs
    this.now = now
  }

  get state(): 'closed' | 'open' | 'half-open' {
    if (this.consecutiveFailures < this.failureThreshold) return 'closed'
    return this.now() < this.openUntil ? 'open' : 'half-open'
  }

  /** Whether a call may go to Redis now; if it is the half-open circuit's trial, its token. */
  admit(): { trial: number | null } | null {
    const state = this.state
    const now = this.now()
    const trialRunning =
      this.trialStartedAt !== null && now - this.trialStartedAt < this.trialLostAfterMs
    if (state === 'open' || (state === 'half-open' && trialRunning)) return null
    const trial = state === 'half-open' ? now : null
    if (trial !== null) this.trialStartedAt = trial
    return { trial }
  }

  settled(trial: number | null): void {
    if (trial !== null && this.trialStartedAt === trial) this.trialStartedAt = null
  }

  succeeded(): void {
    this.consecutiveFailures = 0
  }

  /** Counts a failure; true when it opened the circuit. */
  failed(): boolean {
    // Calls in flight when the circuit opened fail after it: the same outage, so they neither
    // count as openings nor keep it open longer (a trial's failure, half-open, opens it again).
    const open = this.state === 'open'
    this.consecutiveFailures++
    if (this.consecutiveFailures >= this.failureThreshold && !open) {
      this.openUntil = this.now() + this.openMs
      return true
    }
    return false
  }

  get failures(): number {
    return this.consecutiveFailures
  }
}

/**
 * Upstash Redis as an accelerator: every call has a deadline, failures are counted, and after
 * `failureThreshold` consecutive failures the circuit opens and calls return `undefined` at once
 * for `openMs`, then one trial call decides whether it closes. Callers always have a fallback
 * (the Durable Object, the Cache API), so `undefined` means "go the slow way", never an error.
 *
 * Reads and writes have a circuit each: a Redis that answers reads but refuses writes (full with
 * eviction off, a read-only token) fails every write while its reads succeed, and one shared
 * count, reset by each read, never opened: every rate-limit hit and cache fill paid a round trip
 * to be refused. The read cache's fills have a circuit of their own too: they are large (up to
 * 256K characters, escaped twice on the way) and sent after the answer, and a few of them timing
 * out from a location far from the primary would otherwise switch the rate-limit counts of the
 * isolate to its own memory for the circuit's open time.
 *
 * @example
 * const cached = await accel.run('top.get', (r) => r.get<string>(key))
 * if (cached === undefined) { ... read from the Durable Object ... }
 */
export class RedisAccelerator {
  readonly redis: Redis
  private readonly timeoutMs: number
  private readonly reads: Circuit
  private readonly writes: Circuit
  private readonly fills: Circuit

  constructor(redis: Redis, opts: AcceleratorOptions = {}) {
    this.redis = redis
    this.timeoutMs = opts.timeoutMs ?? 250
    const failureThreshold = opts.failureThreshold ?? 3
    const openMs = opts.openMs ?? 10_000
    const now = opts.now ?? Date.now
    const circuit = () =>
      new Circuit(failureThreshold, openMs, this.timeoutMs + TRIAL_GRACE_MS, now)
    this.reads = circuit()
    this.writes = circuit()
    this.fills = circuit()
  }

  /** The state of the circuit of reads. */
  get state(): 'closed' | 'open' | 'half-open' {
    return this.reads.state
  }

  /** The state of the circuit of writes. */
  get writeState(): 'closed' | 'open' | 'half-open' {
    return this.writes.state
  }

  /** Runs a read `fn` against Redis within the deadline; `undefined` if Redis is unavailable. */
  run<T>(operation: string, fn: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    return this.call(this.reads, operation, fn)
  }

  /** As `run`, for a call that writes: its failures open the circuit of writes only. */
  write<T>(operation: string, fn: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    return this.call(this.writes, operation, fn)
  }

  /** As `write`, for filling the read cache: its failures open the circuit of fills only. */
  fill<T>(operation: string, fn: (redis: Redis) => Promise<T>): Promise<T | undefined> {
    return this.call(this.fills, operation, fn)
  }

  private async call<T>(
    circuit: Circuit,
    operation: string,
    fn: (redis: Redis) => Promise<T>,
  ): Promise<T | undefined> {
    const admitted = circuit.admit()
    if (!admitted) {
      redisSkipped.inc({ operation })
      return undefined
    }
    try {
      const result = await within(fn(this.redis), this.timeoutMs, 'Redis')
      circuit.succeeded()
      return result
    } catch (err) {
      redisFailures.inc({ operation })
      if (circuit.failed()) redisCircuitOpens.inc()
      log('warn', 'redis call failed', {
        operation,
        ...errorFields(err),
        failures: circuit.failures,
      })
      return undefined
    } finally {
      circuit.settled(admitted.trial)
    }
  }

  /**
   * Probes Redis regardless of the breaker, for readiness checks, with a write: a Redis that
   * answers reads but refuses writes (full with eviction off, or a read-only token in place of
   * the database's own) counts nothing and shares no answer, and would pass a PING. Throws what
   * went wrong, for the readiness log.
   */
  async probe(timeoutMs = 1000): Promise<void> {
    const written = this.redis.set(READY_PROBE_KEY, Date.now(), { px: 60_000 })
    const answer = await within(written, timeoutMs, 'Redis')
    if (answer !== 'OK') throw new Error(`Redis answered ${String(answer).slice(0, 100)} to a SET`)
  }
}

export interface RedisEnv {
  UPSTASH_REDIS_REST_URL?: string
  UPSTASH_REDIS_REST_TOKEN?: string
}

const accelerators = new Map<string, RedisAccelerator>()

/**
 * The Redis accelerator for this environment, or null when Redis is not configured. One per
 * URL and token per isolate, so the breaker's memory spans requests (a token's rights are its
 * own: a read-only one's calls fail where the database's own succeed).
 */
export function getRedis(env: RedisEnv): RedisAccelerator | null {
  const url = env.UPSTASH_REDIS_REST_URL
  if (!url) return null
  const token = env.UPSTASH_REDIS_REST_TOKEN ?? ''
  const key = `${url} ${token}`
  let accel = accelerators.get(key)
  if (!accel) {
    accel = new RedisAccelerator(newRedis(url, token))
    accelerators.set(key, accel)
  }
  return accel
}

/**
 * The Upstash client, or, for a URL it refuses (the `rediss://` connection string, a pasted
 * newline), a stand-in failing every call with that error: Redis is then down, as `/ready`
 * says, and the paths that use it fall back, instead of every request failing with a 500.
 */
function newRedis(url: string, token: string): Redis {
  try {
    return new Redis({
      url,
      token,
      // Retries would multiply the deadline; the breaker and the fallback path handle failure.
      // (`retry: false` still tries twice in this client: its loop runs attempts + 1 times.)
      retry: { retries: 0, backoff: () => 0 },
      // A call past its deadline is abandoned by `within`, not cancelled: this ends its fetch
      // too, so an unanswered call does not hold one of the request's few connections. As a
      // function, so each call gets its own (and an abort throws rather than answering
      // "Aborted"); the longest deadline here, the readiness ping's (PROBE_TIMEOUT_MS in
      // routes/ops.ts: at 1 s here, a Redis answering /ready in 1-2 s was reported down).
      signal: () => AbortSignal.timeout(2000),
      // Off: the client is shared by the isolate's requests, and read-your-writes would make
      // every read wait for the replica to catch up with any write any request made (rate
      // counters, cache fills); the cache takes stale answers by design.
      readYourWrites: false,
      enableTelemetry: false,
      // Off: the client is shared by every request of the isolate, and auto-pipelining would
      // batch one request's command into another request's fetch, which Workers forbid
      // ("Cannot perform I/O on behalf of a different request"). Multi-command calls use
      // explicit pipelines or transactions instead.
      enableAutoPipelining: false,
    })
  } catch {
    // Not the client's error: it quotes the URL, and a connection string carries the password.
    const scheme = /^([a-z][a-z0-9+.-]{0,15}):/i.exec(url)?.[1] ?? 'no scheme'
    const why =
      scheme.toLowerCase() === 'https'
        ? 'has a space or a line break in it'
        : `is not an https:// REST URL (${scheme})`
    const refused = new Error(`UPSTASH_REDIS_REST_URL ${why}; Redis is treated as down`)
    log('error', refused.message)
    const failing = () => {
      throw refused
    }
    return new Proxy({}, { get: () => failing }) as Redis
  }
}
