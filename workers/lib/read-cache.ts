import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { counter } from './metrics.ts'
import { getRedis } from './redis.ts'

const cacheLookups = counter('nexus_cache_lookups_total', 'Cached reads by layer and outcome')

/** Stored alongside a cached body so every layer can tell its age. */
interface CachedBody {
  body: string
  storedAt: number
}

export interface CachedReadOptions {
  /** Identifies the resource across requests (not the raw URL: `me` is resolved to a player). */
  key: string
  /** How stale an answer may be, end to end, after the data changed. */
  ttlSeconds: number
  /** 'private' answers may be cached by the client only, never by shared caches. */
  visibility: 'public' | 'private'
  /** Produces the fresh answer; only 200s are cached. */
  load: () => Promise<{ status: number; body: unknown }>
}

const inflight = new Map<string, Promise<{ status: number; text: string; storedAt: number }>>()

function cacheRequest(key: string): Request {
  return new Request(`https://read-cache.nexus.internal/${encodeURIComponent(key)}`)
}

/**
 * Serves a JSON read through the location's Cache API, then Redis (shared by every location,
 * when configured), then `load` (the Durable Object). Each layer stores the time the answer was
 * produced and serves it only while younger than the TTL, and `Cache-Control: max-age` is the
 * time left, so no client sees data more than `ttlSeconds` older than the source. Concurrent
 * misses for one key in an isolate share one load, so an expiry does not stampede the object.
 * A client sending `Cache-Control: no-cache` gets a fresh answer (which refreshes the caches).
 *
 * @example
 * return cachedRead(c, { key: `lb:${id}:top:${limit}:${cursor}`, ttlSeconds: 4, visibility: 'public', load })
 */
export async function cachedRead(c: Context<AppEnv>, opts: CachedReadOptions): Promise<Response> {
  const now = Date.now()
  const ttlMs = opts.ttlSeconds * 1000
  const bypass = /no-cache|no-store|max-age=0/i.test(c.req.header('cache-control') ?? '')
  const cache = typeof caches !== 'undefined' ? caches.default : undefined
  const redis = getRedis(c.env)
  const redisKey = `nexus:read:${opts.key}`

  if (!bypass && cache) {
    const hit = await cache.match(cacheRequest(opts.key))
    const storedAt = Number(hit?.headers.get('x-stored-at'))
    if (hit && now - storedAt < ttlMs) {
      cacheLookups.inc({ layer: 'edge', outcome: 'hit' })
      return respond(await hit.text(), storedAt, 'HIT edge')
    }
    cacheLookups.inc({ layer: 'edge', outcome: 'miss' })
  }
  if (!bypass && redis) {
    const hit = await redis.run('read-cache.get', (r) => r.get<CachedBody>(redisKey))
    if (hit && typeof hit.body === 'string' && now - hit.storedAt < ttlMs) {
      cacheLookups.inc({ layer: 'redis', outcome: 'hit' })
      if (cache) c.executionCtx.waitUntil(putEdge(cache, opts.key, hit.body, hit.storedAt, ttlMs))
      return respond(hit.body, hit.storedAt, 'HIT redis')
    }
    cacheLookups.inc({ layer: 'redis', outcome: hit === undefined ? 'unavailable' : 'miss' })
  }

  let pending = inflight.get(opts.key)
  if (!pending || bypass) {
    pending = opts
      .load()
      .then(({ status, body }) => ({ status, text: JSON.stringify(body), storedAt: Date.now() }))
    if (!bypass) {
      inflight.set(opts.key, pending)
      void pending.finally(() => inflight.delete(opts.key)).catch(() => {})
    }
  } else {
    cacheLookups.inc({ layer: 'load', outcome: 'coalesced' })
  }
  const fresh = await pending
  if (fresh.status !== 200) {
    return new Response(fresh.text, {
      status: fresh.status,
      headers: { 'content-type': 'application/problem+json', 'cache-control': 'no-store' },
    })
  }
  const stores: Promise<unknown>[] = []
  if (cache) stores.push(putEdge(cache, opts.key, fresh.text, fresh.storedAt, ttlMs))
  if (redis) {
    const value: CachedBody = { body: fresh.text, storedAt: fresh.storedAt }
    stores.push(redis.run('read-cache.set', (r) => r.set(redisKey, value, { px: ttlMs })))
  }
  c.executionCtx.waitUntil(Promise.all(stores))
  return respond(fresh.text, fresh.storedAt, 'MISS')

  function respond(text: string, storedAt: number, source: string): Response {
    const left = Math.max(0, Math.floor((storedAt + ttlMs - Date.now()) / 1000))
    return new Response(text, {
      status: 200,
      headers: {
        'content-type': 'application/json',
        'cache-control': `${opts.visibility}, max-age=${left}`,
        age: String(Math.max(0, Math.floor((Date.now() - storedAt) / 1000))),
        'x-cache': source,
      },
    })
  }
}

async function putEdge(
  cache: Cache,
  key: string,
  text: string,
  storedAt: number,
  ttlMs: number,
): Promise<void> {
  const left = Math.max(1, Math.floor((storedAt + ttlMs - Date.now()) / 1000))
  await cache.put(
    cacheRequest(key),
    new Response(text, {
      headers: {
        'content-type': 'application/json',
        'cache-control': `public, s-maxage=${left}`,
        'x-stored-at': String(storedAt),
      },
    }),
  )
}
