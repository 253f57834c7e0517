import { within } from './within.ts'
import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import type { Env } from '../env.ts'
import { countedClientIp, countedClientNetwork } from '../middleware/rate-limit.ts'
import { boundedInt } from './config.ts'
import { refreshEarly } from './early-refresh.ts'
import { counter } from './metrics.ts'
import { ApiError } from './problem.ts'
import { hitWindow } from './rate-limit.ts'
import { RecentAnswers } from './recent-answers.ts'
import { getRedis } from './redis.ts'

const cacheLookups = counter('nexus_cache_lookups_total', 'Cached reads by layer and outcome')
const freshReadsLimited = counter(
  'nexus_fresh_reads_limited_total',
  'Reads asking for a fresh answer (Cache-Control: no-cache) served from the caches instead, past FRESH_READS_PER_MINUTE',
  { unlabelled: true },
)

/** Fresh reads a client address may ask for per minute before it is served from the caches. */
export const DEFAULT_FRESH_READS_PER_MINUTE = 120

/** Stored alongside a cached body so every layer can tell its age and how costly it was. */
interface CachedBody {
  body: string
  storedAt: number
  /** How long producing the answer took, for early refresh. */
  computeMs?: number
  /** The answer's own TTL, when `ttlOf` gave one. */
  ttlMs?: number
}

export interface CachedReadOptions {
  /** Identifies the resource across requests (not the raw URL: `me` is resolved to a player). */
  key: string
  /** How stale an answer may be, end to end, after the data changed. */
  ttlSeconds: number
  /**
   * When how long an answer may be kept depends on the answer (a finished archive never
   * changes): its TTL in seconds. Each layer stores it with the answer.
   */
  ttlOf?: (answer: unknown) => number
  /** 'private' answers may be cached by the client only, never by shared caches. */
  visibility: 'public' | 'private'
  /**
   * Whether Redis, shared by every location, holds the answer too (default true). Off for reads
   * of one player's standing: another location rarely asks for the same player within seconds,
   * so each such read would pay Upstash a GET and a SET (billed per command) for nothing.
   */
  sharedAcrossLocations?: boolean
  /**
   * Refusals that cost nothing to make and that no cached answer could change (an id this
   * isolate knows does not exist), thrown before the shared cache is asked: its lookup is a
   * Redis command, billed, which a loop on a made-up id paid on every request before `load`
   * refused it. Not for an early refresh (the answer it would replace is served).
   */
  beforeSharedLookup?: () => void
  /**
   * Produces the fresh answer (a 200 body). A refusal is thrown as an ApiError, which the error
   * funnel renders like any other and no layer caches. `refresh`: an early refresh of an answer
   * still valid (not a miss: a load that limits a caller's misses lets it through).
   */
  load: (how: { refresh: boolean }) => Promise<unknown>
}

/**
 * The first layer: answers this isolate produced or fetched lately. A hot read (a board's top page)
 * is then served without even the Cache API's lookup, which is a call out of the isolate. Entries
 * carry the time the answer was produced, like every other layer, so the same TTL bounds their
 * staleness.
 */
const isolateReads = new RecentAnswers(500, 32 * 1024)

/** The largest answer (characters of JSON) shared through Redis; larger ones stay per location. */
export const MAX_REDIS_ANSWER_CHARS = 256 * 1024

/**
 * How long Redis keeps an answer at most, whatever its own time (a finished archive's pages keep
 * 5 minutes in each location's cache). Any cursor and limit make a page of their own, so a walk
 * of a large closed cycle, or a client asking page after page, would otherwise hold hundreds of
 * megabytes there for 5 minutes: Upstash refuses writes once full (its default), rate-limit
 * counts included, and with eviction on it would evict those counts.
 */
export const MAX_REDIS_TTL_MS = 30_000

/** Forgets every answer this isolate holds in memory, as a newly started isolate would have none. */
export function forgetIsolateReads(): void {
  isolateReads.clear()
}

/**
 * Forgets one answer before its time when the copy this isolate or this location holds is
 * `stale` (the first page of a cycle that has ended, whose cursor the board now refuses): in
 * this isolate's memory, this location's cache and Redis. Only a stale copy held here lets the
 * caller empty them, so that nobody can evict a hot answer from every layer at will. Other
 * isolates and locations keep theirs until it expires or they find the same. Never throws: the
 * answer then lasts its TTL, as it would have.
 */
export async function forgetStaleRead(
  c: Context<AppEnv>,
  key: string,
  stale: (answer: unknown) => boolean,
): Promise<void> {
  const cache = typeof caches !== 'undefined' ? caches.default : undefined
  const isStale = (body: string): boolean => {
    try {
      return stale(JSON.parse(body))
    } catch {
      return false
    }
  }
  const inMemory = isolateReads.get(key)
  let found = inMemory !== undefined && isStale(inMemory.body)
  if (!found && cache) {
    const hit = await cache.match(cacheRequest(c, key)).catch(() => undefined)
    const body = hit ? await hit.text().catch(() => undefined) : undefined
    found = body !== undefined && isStale(body)
  }
  if (!found) return
  isolateReads.forget(key)
  await Promise.all([
    cache?.delete(cacheRequest(c, key)).catch(() => false),
    getRedis(c.env)?.write('read-cache.forget', (r) =>
      r.del(`nexus:read:${storedReadKey(c.env, key)}`),
    ),
  ])
}

/**
 * Sets KEYS[1] to ARGV[1] for ARGV[3] ms unless what it holds was produced after ARGV[2] (its
 * `storedAt`): a slow load ending after a quicker one that began later must not put its older
 * answer back over the newer, for every location to read.
 */
const SET_UNLESS_NEWER = `
local current = redis.call('GET', KEYS[1])
if current then
  local ok, held = pcall(cjson.decode, current)
  if ok and type(held) == 'table' and tonumber(held.storedAt) and
      tonumber(held.storedAt) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1`

/**
 * The key a read's answer is stored under in the shared layers (the location's Cache API, Redis):
 * the read's own key, under the running version's id. Those layers outlive a deploy, and an answer
 * cached by the version before, in the shape that version wrote, would otherwise be served by this
 * one for up to its TTL (a minute for a closed cycle). A deploy starts them cold, as an expiry does.
 */
export function storedReadKey(env: Pick<Env, 'CF_VERSION_METADATA'>, key: string): string {
  const version = env.CF_VERSION_METADATA?.id
  return version ? `${version}/${key}` : key
}

/**
 * Where the location's Cache API keeps the answer stored under `storedKey`: under the host the request came to.
 * Cloudflare asks that cache requests use the Worker's own hostname; a made-up one (this used
 * `read-cache.nexus.internal`) can cost DNS lookups and cache efficiency there. The path is one
 * no route serves, and the Cache API's entries are never served to clients by themselves.
 */
export function edgeCacheUrl(origin: string, storedKey: string): string {
  return `${origin}/__nexus/read-cache/${encodeURIComponent(storedKey)}`
}

function cacheRequest(c: Context<AppEnv>, key: string): Request {
  return new Request(edgeCacheUrl(new URL(c.req.url).origin, storedReadKey(c.env, key)))
}

/**
 * Serves a JSON read from this isolate's memory, then the location's Cache API, then Redis
 * (shared by every location, when configured), then `load` (the Durable Object). Each layer stores the time the answer was
 * produced and serves it only while younger than the TTL, and `Cache-Control: max-age` is the
 * time left, so no client sees data more than `ttlSeconds` older than the source (but for a reader
 * that waited for another's load of the key: up to 5 s after that load began). Readers refresh
 * an entry early with rising probability as it nears expiry (see `refreshEarly`), so an expiry
 * does not stampede the object. A client sending `Cache-Control: no-cache` gets a fresh answer
 * (which refreshes the caches).
 *
 * @example
 * return cachedRead(c, { key: `lb:${id}:top:${limit}:${cursor}`, ttlSeconds: 4, visibility: 'public', load })
 */
/** A refusal as no client or cache in between may keep it (`no-store`); anything else as it is. */
function uncacheable(err: unknown): unknown {
  if (!(err instanceof ApiError)) return err
  return new ApiError(err.problem, err.message, err.extensions, {
    'cache-control': 'no-store',
    ...err.headers,
  })
}

/**
 * Keys whose early refresh this isolate has under way, with when it began and the date of the
 * answer it refreshes: readers of that answer meanwhile are served it. Each rolls for itself,
 * and near an answer's expiry most of a burst would win the roll (a client sending a thousand
 * copies of one read in its last 50 ms had some 800 loads made, none counted against a route's
 * limit of misses). One past REFRESH_LOST_MS is taken as lost (its request cancelled before its
 * `finally`) and another may start; so is one whose answer has been replaced by a newer one
 * (the next expiry's load, a fresh read): it refreshes an answer nobody is served any more, and
 * would otherwise keep the newer one from being refreshed early, up to 10 s of a 4 s answer.
 */
const refreshesUnderWay = new Map<string, { began: number; answerAt: number }>()
const REFRESH_LOST_MS = 10_000

/**
 * The load of a key no layer holds, under way in this isolate: readers of the key meanwhile wait
 * for its answer rather than each going to the object (after a deploy every key is new, and a
 * hot board's readers would all reach the object while it rebuilds its index). Its answer is
 * shared, and so is its failure (an object overloaded or out of reach, Neon down): each waiting
 * reader answers it too. A refusal (a limit of the first reader's own) sends each waiting reader
 * to load for itself.
 */
const coldLoads = new Map<string, ColdLoad>()
/** The most a read may lag a write (docs/leaderboards.md: "within the 5 s bound"). */
const MAX_STALE_MS = 5_000
/** How long a reader waits for another's load of a key at most. */
const COLD_WAIT_MS = 5_000

/** A load's answer as its waiting readers are served it. */
interface SharedAnswer {
  text: string
  storedAt: number
  ttlMs: number | undefined
  /**
   * Until when it is served to readers waiting: its TTL from the load's end, as its loader serves
   * it (a load slower than the TTL, a waking Neon's, would otherwise serve none of them, each
   * then loading for itself after waiting it out), never past a cycle's end (its TTL, measured at
   * the load's end, does not reach it), and no later than MAX_STALE_MS (or its TTL, if longer:
   * a finished archive's page, another player's history) from the load's start: a write the load
   * may have missed is then shown within that, as every read promises.
   */
  servableUntil: number
}

interface ColdLoad {
  answer: Promise<SharedAnswer>
  began: number
  /** Readers waiting for it now. */
  waiting: number
  /**
   * Settles the answer (null: the load failed; with `failure`, one each waiting reader answers
   * too, else each loads for itself); only the first call counts.
   */
  settle(answer: SharedAnswer | null, failure?: unknown): void
}

/** A load's failure its waiting readers answer too: the object or a service out of reach. */
class SharedFailure extends Error {
  readonly failure: unknown
  constructor(failure: unknown) {
    super('the load failed')
    this.failure = failure
  }
}

function newColdLoad(began: number): ColdLoad {
  let settle!: ColdLoad['settle']
  const answer = new Promise<SharedAnswer>((resolve, reject) => {
    settle = (a, failure) =>
      a
        ? resolve(a)
        : reject(failure === undefined ? new Error('the load failed') : new SharedFailure(failure))
  })
  answer.catch(() => {})
  return { answer, began, waiting: 0, settle }
}

/** How many readers wait for the load of `key` under way in this isolate (tests). */
export function readersWaitingOnLoad(key: string): number {
  return coldLoads.get(key)?.waiting ?? 0
}

/** Once `underWay` holds 1,000 keys, drops those begun REFRESH_LOST_MS ago and more (lost). */
function forgetLost(underWay: Map<string, { began: number }>, now: number): void {
  if (underWay.size < 1_000) return
  for (const [key, { began }] of underWay) {
    if (now - began >= REFRESH_LOST_MS) underWay.delete(key)
  }
}

export async function cachedRead(c: Context<AppEnv>, opts: CachedReadOptions): Promise<Response> {
  const ttlMs = opts.ttlSeconds * 1000
  const asked = /no-cache|no-store|max-age=0/i.test(c.req.header('cache-control') ?? '')
  // A fresh answer costs the board a call, so asking for one is limited per client address
  // (through Redis when configured): past the limit the read is served like any other, at most
  // ttlSeconds stale, and says so in `x-fresh-read`.
  const limited = asked && !(await freshReadAllowed(c))
  const bypass = asked && !limited
  const cache = typeof caches !== 'undefined' ? caches.default : undefined
  const redis = opts.sharedAcrossLocations === false ? undefined : getRedis(c.env)
  const redisKey = `nexus:read:${storedReadKey(c.env, opts.key)}`
  // The answer a layer chose to refresh early, by when it was produced: the layers below hold
  // the same answer under the same date, and rolling again for it at each would make an early
  // refresh ever rarer the more layers there are, until expiry sent everyone to the object.
  let refreshing = -Infinity
  // The key's early refresh for the isolate, when this read took it (refreshesUnderWay).
  let ownRefresh: { began: number; answerAt: number } | null = null
  // The load of a key no layer holds, when this read makes it for the isolate (coldLoads).
  let leading: ColdLoad | null = null
  // That answer, served after all if the refresh fails while it is still within its TTL: an
  // early refresh is a head start on the next answer, not a reason to fail this read.
  const passedOver: {
    hit: { body: string; storedAt: number; ttlMs: number; layer: string } | null
  } = { hit: null }
  // How a layer's lookup went, counted by `usable`: `refresh` for an answer passed over for an
  // early refresh (valid, so neither a hit nor a miss of the hit ratio).
  let outcome: 'hit' | 'miss' | 'refresh' = 'miss'
  const usable = (
    layer: string,
    entry: { body?: string; storedAt: number; computeMs: number; ttlMs?: number },
  ): boolean => {
    const entryTtlMs = entry.ttlMs ?? ttlMs
    // The clock read now, not at the request's start: the layers above took time (a Redis
    // check, a Cache API lookup), and an answer must not be served older than its TTL.
    const at = Date.now()
    outcome = 'miss'
    if (!(at - entry.storedAt < entryTtlMs)) return false
    outcome = 'refresh'
    if (entry.storedAt <= refreshing) return false
    const underWay = refreshesUnderWay.get(opts.key)
    const anotherRefreshes =
      ownRefresh === null &&
      underWay !== undefined &&
      at - underWay.began < REFRESH_LOST_MS &&
      entry.storedAt <= underWay.answerAt
    if (anotherRefreshes || !refreshEarly(entry.storedAt, entryTtlMs, entry.computeMs, at)) {
      outcome = 'hit'
      return true
    }
    refreshing = entry.storedAt
    if (ownRefresh === null) {
      forgetLost(refreshesUnderWay, at)
      ownRefresh = { began: at, answerAt: entry.storedAt }
      refreshesUnderWay.set(opts.key, ownRefresh)
    }
    if (entry.body !== undefined) {
      passedOver.hit = { body: entry.body, storedAt: entry.storedAt, ttlMs: entryTtlMs, layer }
    }
    return false
  }

  try {
    if (!bypass) {
      const hit = isolateReads.get(opts.key)
      outcome = 'miss'
      if (hit && usable('memory', { ...hit, computeMs: hit.computeMs ?? 1 })) {
        cacheLookups.inc({ layer: 'memory', outcome: 'hit' })
        return respond(hit.body, hit.storedAt, 'HIT memory', hit.ttlMs)
      }
      cacheLookups.inc({ layer: 'memory', outcome })
    }
    if (!bypass && cache) {
      // A Cache API that fails is a miss: the layers below still answer.
      const hit = await cache.match(cacheRequest(c, opts.key)).catch(() => undefined)
      const storedAt = Number(hit?.headers.get('x-stored-at'))
      const computeMs = Number(hit?.headers.get('x-compute-ms') ?? 1)
      const entryTtl = hit?.headers.get('x-ttl-ms')
        ? Number(hit.headers.get('x-ttl-ms'))
        : undefined
      const body = hit ? await hit.text().catch(() => undefined) : undefined
      outcome = 'miss'
      if (body !== undefined && usable('edge', { body, storedAt, computeMs, ttlMs: entryTtl })) {
        cacheLookups.inc({ layer: 'edge', outcome: 'hit' })
        isolateReads.remember(opts.key, { body, storedAt, computeMs, ttlMs: entryTtl })
        return respond(body, storedAt, 'HIT edge', entryTtl)
      }
      cacheLookups.inc({ layer: 'edge', outcome })
    }
    if (!bypass && redis) {
      if (passedOver.hit === null && opts.beforeSharedLookup) {
        try {
          opts.beforeSharedLookup()
        } catch (err) {
          throw uncacheable(err)
        }
      }
      const hit = await redis.run('read-cache.get', (r) => r.get<CachedBody>(redisKey))
      outcome = 'miss'
      if (
        hit &&
        typeof hit.body === 'string' &&
        usable('redis', { ...hit, computeMs: hit.computeMs ?? 1 })
      ) {
        cacheLookups.inc({ layer: 'redis', outcome: 'hit' })
        isolateReads.remember(opts.key, hit)
        if (cache)
          c.executionCtx.waitUntil(
            putEdge(
              cache,
              cacheRequest(c, opts.key),
              hit.body,
              hit.storedAt,
              hit.ttlMs,
              hit.computeMs ?? 1,
              ttlMs,
            ),
          )
        return respond(hit.body, hit.storedAt, 'HIT redis', hit.ttlMs)
      }
      cacheLookups.inc({ layer: 'redis', outcome: hit === undefined ? 'unavailable' : outcome })
    }

    // A key no layer holds: its load under way in this isolate (not one lost with its request,
    // past REFRESH_LOST_MS) is waited for, and its answer served until `servableUntil`. One not
    // served (lost, failed, too slow) is given up on, and so is the next reader's load after
    // it (one reader makes it, the others wait on it) before this reader loads for itself.
    const cold = !bypass && passedOver.hit === null
    for (let loads = 0; cold && loads < 2; loads++) {
      const underWay = coldLoads.get(opts.key)
      if (!underWay || Date.now() - underWay.began >= REFRESH_LOST_MS) break
      // Bounded apart: a load whose request was cancelled before it settled leaves its
      // readers nothing to wake them.
      const left = Math.min(COLD_WAIT_MS, REFRESH_LOST_MS - (Date.now() - underWay.began))
      underWay.waiting++
      const shared = await within(underWay.answer, left, 'a load of the key')
        .catch((err: unknown) => (err instanceof SharedFailure ? err : null))
        .finally(() => underWay.waiting--)
      // The object (or Neon) failed the load: it would fail this reader's too, and each reader
      // trying for itself would only add to the load of an object already failing (overloaded).
      if (shared instanceof SharedFailure) throw uncacheable(shared.failure)
      if (shared && Date.now() < shared.servableUntil) {
        return respond(shared.text, shared.storedAt, 'MISS shared', shared.ttlMs)
      }
      // Not served: the load is taken as lost, the next reader's to make; one that ended since
      // may have left its answer in the isolate's memory.
      if (coldLoads.get(opts.key) === underWay) coldLoads.delete(opts.key)
      const kept = isolateReads.get(opts.key)
      if (kept && Date.now() - kept.storedAt < (kept.ttlMs ?? ttlMs)) {
        return respond(kept.body, kept.storedAt, 'HIT memory', kept.ttlMs)
      }
    }
    if (cold) forgetLost(coldLoads, Date.now())
    const other = coldLoads.get(opts.key)
    if (cold && !(other && Date.now() - other.began < REFRESH_LOST_MS)) {
      leading = newColdLoad(Date.now())
      coldLoads.set(opts.key, leading)
      // Kept running to its answer though the reader goes away (a client that closes its
      // connection): cancelled, it would leave its waiting readers to wait their time out.
      c.executionCtx.waitUntil(leading.answer.catch(() => {}))
    }
    const started = Date.now()
    let loaded: unknown
    try {
      loaded = await opts.load({ refresh: passedOver.hit !== null })
    } catch (err) {
      // A refusal (a board deleted meanwhile, a refused cursor) is the answer; a failure is not.
      const kept = passedOver.hit
      const refused = err instanceof ApiError && err.status < 500
      if (kept && !refused && Date.now() - kept.storedAt < kept.ttlMs) {
        // Counted `refresh` at its lookup already: served after all, it is not a second lookup.
        return respond(kept.body, kept.storedAt, `HIT ${kept.layer}`, kept.ttlMs)
      }
      // A failure is every waiting reader's answer too; a refusal may be this reader's alone (its
      // own limit), so they load for themselves (in `finally`).
      if (!refused) leading?.settle(null, err)
      // Nor may the client or a cache in between keep it: the board may exist a moment later.
      throw uncacheable(err)
    }
    // Dated when the load began, not when it ended: the board answered at some point in between,
    // and a slow load (names from a waking Neon) must not stretch how stale an answer can be.
    const fresh = { text: JSON.stringify(loaded), storedAt: started }
    const computeMs = Math.max(1, Date.now() - started)
    // Whole milliseconds (Redis takes no fraction); an answer with none left is not kept at all.
    const answerTtl = opts.ttlOf ? Math.floor(opts.ttlOf(loaded) * 1000) : undefined
    if (answerTtl !== undefined && answerTtl <= 0) {
      // Of no time left (a cycle's end): not for readers waiting, who may be past it.
      leading?.settle(null)
      return respond(fresh.text, fresh.storedAt, 'MISS', 0)
    }
    leading?.settle({
      text: fresh.text,
      storedAt: fresh.storedAt,
      ttlMs: answerTtl,
      servableUntil: Math.min(
        Date.now() + (answerTtl ?? ttlMs),
        fresh.storedAt + Math.max(MAX_STALE_MS, answerTtl ?? ttlMs),
      ),
    })
    const value: CachedBody = { body: fresh.text, storedAt: fresh.storedAt, computeMs }
    if (answerTtl !== undefined) value.ttlMs = answerTtl
    isolateReads.remember(opts.key, value)
    const stores: Promise<unknown>[] = []
    if (cache)
      stores.push(
        putEdge(
          cache,
          cacheRequest(c, opts.key),
          fresh.text,
          fresh.storedAt,
          answerTtl,
          computeMs,
          ttlMs,
        ),
      )
    // Redis takes answers of up to MAX_REDIS_ANSWER_CHARS: a larger one escaped twice over on its
    // way to Upstash could pass its 10 MB request limit, or the 250 ms deadline, and each refusal
    // would count toward opening the breaker for every read.
    if (redis && fresh.text.length <= MAX_REDIS_ANSWER_CHARS) {
      const px = Math.min(answerTtl ?? ttlMs, MAX_REDIS_TTL_MS)
      stores.push(
        redis.fill('read-cache.set', (r) =>
          r.eval(SET_UNLESS_NEWER, [redisKey], [JSON.stringify(value), value.storedAt, px]),
        ),
      )
    }
    // Each to its end: a Cache API that fails must not cut the Redis write short (Redis is then
    // the one layer the locations share).
    c.executionCtx.waitUntil(Promise.allSettled(stores))
    return respond(fresh.text, fresh.storedAt, 'MISS', answerTtl)
  } finally {
    // However the read ends (a layer below held a newer answer, the load failed): the key's
    // refresh is free again for the isolate's next reader, unless a reader of a newer answer
    // has taken it since.
    if (ownRefresh !== null && refreshesUnderWay.get(opts.key) === ownRefresh) {
      refreshesUnderWay.delete(opts.key)
    }
    if (leading) {
      // Failed (or refused): each reader waiting loads for itself.
      leading.settle(null)
      if (coldLoads.get(opts.key) === leading) coldLoads.delete(opts.key)
    }
  }

  function respond(text: string, storedAt: number, source: string, entryTtlMs = ttlMs): Response {
    const left = Math.max(0, Math.floor((storedAt + entryTtlMs - Date.now()) / 1000))
    return new Response(text, {
      status: 200,
      headers: {
        'content-type': 'application/json',
        // max-age is already the time left; an Age beside it would be taken off again by every
        // HTTP cache downstream (RFC 9111 §4.2.3), which would keep the answer half as long.
        'cache-control': `${opts.visibility}, max-age=${left}`,
        'x-cache': source,
        // A private answer is the caller's own (`me`): a browser shared by two players must not
        // hand one the other's from its cache.
        ...(opts.visibility === 'private' ? { vary: 'Authorization' } : {}),
        ...(limited ? { 'x-fresh-read': 'limited' } : {}),
      },
    })
  }
}

async function freshReadAllowed(c: Context<AppEnv>): Promise<boolean> {
  const limit = boundedInt(
    c.env.FRESH_READS_PER_MINUTE,
    DEFAULT_FRESH_READS_PER_MINUTE,
    1,
    1_000_000,
  )
  const address = countedClientIp(c)
  if (address === undefined) return true
  // An IPv6 /48's /64s together too, at ten times one's allowance: a /48 is free from tunnel
  // brokers, and each of its 65,536 /64s would otherwise have the whole allowance on its own.
  const network = countedClientNetwork(c)
  const redis = getRedis(c.env)
  const [d, n] = await Promise.all([
    hitWindow(redis, `fresh-read:${address}`, limit, 60_000),
    network === undefined
      ? undefined
      : hitWindow(redis, `fresh-read-net:${network}`, 10 * limit, 60_000),
  ])
  const allowed = d.allowed && (n?.allowed ?? true)
  if (!allowed) freshReadsLimited.inc()
  return allowed
}

async function putEdge(
  cache: Cache,
  request: Request,
  text: string,
  storedAt: number,
  answerTtlMs: number | undefined,
  computeMs: number,
  readTtlMs: number,
): Promise<void> {
  const ttlMs = answerTtlMs ?? readTtlMs
  const left = Math.max(1, Math.floor((storedAt + ttlMs - Date.now()) / 1000))
  try {
    // A newer answer stored meanwhile (a quicker load that began after this one) stays: put
    // back, this one would have reads go back to before a write they had already shown.
    const current = await cache.match(request)
    if (current) {
      const currentAt = Number(current.headers.get('x-stored-at'))
      await current.body?.cancel()
      if (currentAt > storedAt) return
    }
    await cache.put(
      request,
      new Response(text, {
        headers: {
          'content-type': 'application/json',
          'cache-control': `public, s-maxage=${left}`,
          'x-stored-at': String(storedAt),
          'x-compute-ms': String(computeMs),
          ...(answerTtlMs !== undefined ? { 'x-ttl-ms': String(answerTtlMs) } : {}),
        },
      }),
    )
  } catch {
    // A Cache API that fails keeps nothing, as its lookups miss: the layers beside it still do.
  }
}
