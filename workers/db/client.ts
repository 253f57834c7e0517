import { neon, neonConfig, NeonDbError } from '@neondatabase/serverless'
import { drizzle, type NeonHttpDatabase } from 'drizzle-orm/neon-http'
import { misconfigured } from '../lib/misconfigured.ts'
import { NoAnswerInTime } from '../lib/within.ts'
import * as schema from './schema.ts'

export type Db = NeonHttpDatabase<typeof schema>

/**
 * How long a query waits for Neon's answer before it counts as unreachable: a 503 on a request
 * path, a retry with backoff in an object's alarm. Neon answers in milliseconds, or a few seconds
 * while its compute wakes; a connection that never answers would otherwise hold a request, a
 * board's catch-up of bans (and every call waiting on it) or a session's end work for as long as
 * the runtime lets it. Shorter than the SDK's 10 s, so a client whose request waits on one query gets the 503
 * rather than its own timeout. A write cut off may still have committed: every write path already takes that outcome
 * (an answer lost on the way) and is safe to send again.
 */
export const NEON_QUERY_TIMEOUT_MS = 8_000

/**
 * Neon's fetch with the deadline over the answer and its body. The body is read here, under the
 * deadline, and handed on whole (the driver reads it whole anyway); the timer is cleared once it
 * is in. `AbortSignal.timeout` was the first version: its timer outlived every query, and a
 * Durable Object with a timer pending does not hibernate (billed for 8 s after each query; tests
 * waiting for an object to settle waited them out). The driver turns the abort into "Error
 * connecting to database", which isDatabaseUnreachable counts.
 */
async function fetchWithDeadline(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  const deadline = new AbortController()
  const timer = setTimeout(() => deadline.abort(), NEON_QUERY_TIMEOUT_MS)
  const signal = init?.signal ? AbortSignal.any([init.signal, deadline.signal]) : deadline.signal
  try {
    const res = await fetch(input, { ...init, signal })
    const body = await res.arrayBuffer()
    return new Response(body, {
      status: res.status,
      statusText: res.statusText,
      headers: res.headers,
    })
  } finally {
    clearTimeout(timer)
  }
}

neonConfig.fetchFunction = fetchWithDeadline

/**
 * Local relays by the `host:port` of the Postgres they front. The Neon driver's endpoint
 * settings are global to the isolate, so they are functions that pick the relay for the
 * connection's own host; a connection with no local relay goes to Neon as usual.
 */
const localRelays = new Map<string, string>()
let neonConfigured = false

/**
 * Routes the Neon driver's connections for `databaseUrl` through a local relay (`host:port`),
 * for development and tests against a local Postgres. Production never calls it.
 */
export function configureLocalRelay(databaseUrl: string, relay: string): void {
  const { hostname, port } = new URL(databaseUrl)
  const key = `${hostname}:${port || '5432'}`
  if (localRelays.get(key) === relay) return
  localRelays.set(key, relay)
  if (neonConfigured) return
  neonConfigured = true
  const defaultFetchEndpoint = neonConfig.fetchEndpoint
  const defaultWsProxy = neonConfig.wsProxy
  neonConfig.fetchEndpoint = (host, p, options) => {
    const r = localRelays.get(`${host}:${p}`)
    if (r) return `http://${r}/sql`
    return typeof defaultFetchEndpoint === 'function'
      ? defaultFetchEndpoint(host, p, options)
      : defaultFetchEndpoint
  }
  neonConfig.wsProxy = (host, p) => {
    const r = localRelays.get(`${host}:${p}`)
    if (r) return `${r}/v1?address=${host}:${p}`
    return typeof defaultWsProxy === 'function' ? defaultWsProxy(host, p) : defaultWsProxy
  }
  // A local relay speaks plain ws:// and hands Postgres an unencrypted loopback connection.
  neonConfig.useSecureWebSocket = false
  neonConfig.pipelineTLS = false
  neonConfig.pipelineConnect = false
}

const dbs = new Map<string, Db>()

/** Connection settings a Db needs; both the Worker's Env and a Durable Object's env satisfy it. */
export interface DbEnv {
  DATABASE_URL?: string
  NEON_LOCAL_RELAY?: string
}

/**
 * The drizzle database over Neon's HTTP driver for this environment, one per connection string
 * per isolate. Throws `unavailable` when no database is configured.
 *
 * @example
 * const db = getDb(c.env)
 * const [p] = await db.select().from(players).where(eq(players.id, id))
 */
export function getDb(env: DbEnv): Db {
  const url = env.DATABASE_URL
  if (!url) throw misconfigured('DATABASE_URL', 'No database is configured (DATABASE_URL)')
  let db = dbs.get(url)
  if (!db) {
    if (env.NEON_LOCAL_RELAY) configureLocalRelay(url, env.NEON_LOCAL_RELAY)
    db = drizzle({ client: neon(url), schema })
    dbs.set(url, db)
  }
  return db
}

/** The raw Neon HTTP query function, for the few statements drizzle cannot express. */
export function getSql(env: DbEnv) {
  const url = env.DATABASE_URL
  if (!url) throw misconfigured('DATABASE_URL', 'No database is configured (DATABASE_URL)')
  if (env.NEON_LOCAL_RELAY) configureLocalRelay(url, env.NEON_LOCAL_RELAY)
  return neon(url)
}

/** PostgreSQL's SQLSTATE for a lock not had within `lock_timeout`. */
export const LOCK_NOT_AVAILABLE = '55P03'

/** Postgres error code of a failed query (e.g. '23505' unique violation), if it is one. */
export function pgErrorCode(err: unknown): string | undefined {
  let e: unknown = err
  for (let i = 0; i < 3 && e && typeof e === 'object'; i++) {
    const code = (e as { code?: unknown }).code
    if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code
    e = (e as { cause?: unknown }).cause
  }
  return undefined
}

/**
 * SQLSTATEs that say the server is not there for us right now, not that the query was wrong:
 * connection exceptions (class 08), admin or crash shutdown, cannot connect now (57P01–57P03),
 * too many connections (53300).
 */
const UNAVAILABLE_SQLSTATE = /^(08...|57P0[123]|53300)$/

/**
 * SQLSTATEs of a query that lost a race or a time limit, not one that was wrong: serialization
 * failure (40001), deadlock (40P01), lock not available (55P03), cancelled by a statement
 * timeout (57014). The same request can succeed when sent again.
 */
const TRANSIENT_SQLSTATE = /^(40001|40P01|55P03|57014)$/

/** Whether a failed query may succeed when sent again as it is (TRANSIENT_SQLSTATE). */
export function isTransientDatabaseError(err: unknown): boolean {
  const code = pgErrorCode(err)
  return code !== undefined && TRANSIENT_SQLSTATE.test(code)
}

/**
 * Whether a failed query never got an answer from Postgres: the Neon driver could not reach its
 * endpoint (its fetch threw), the endpoint refused without a SQLSTATE (the compute is down or
 * cannot be woken), or Postgres answered that it cannot serve now (UNAVAILABLE_SQLSTATE).
 * Drizzle wraps the driver's error in one whose `cause` it is. Any other SQLSTATE is about the
 * query and is not this.
 */
export function isDatabaseUnreachable(err: unknown): boolean {
  const code = pgErrorCode(err)
  if (code !== undefined) return UNAVAILABLE_SQLSTATE.test(code)
  let e: unknown = err
  for (let i = 0; i < 3 && e && typeof e === 'object'; i++) {
    // Neon's answer was too large (HTTP 507, the driver's "Server error (HTTP status 507)"), or
    // the request (413): the query's own doing, the same every time it is sent.
    if (e instanceof NeonDbError) return !TOO_LARGE.test(e.message)
    e = (e as { cause?: unknown }).cause
  }
  return false
}

const TOO_LARGE = /^Server error \(HTTP status (507|413)\)/

/**
 * Whether a check that asks Neon beside a request (an erasure check on a session's read) may be
 * skipped for this failure: Neon out of reach, slow past the check's wait, or a transient error.
 * Anything else (a missing table, a refused role) is a fault to see, not a reason to skip.
 */
export function isNeonOutage(err: unknown): boolean {
  return (
    err instanceof NoAnswerInTime || isDatabaseUnreachable(err) || isTransientDatabaseError(err)
  )
}
