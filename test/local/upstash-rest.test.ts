import { Redis } from '@upstash/redis'
import { createHash, randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startRedis } from '../../local/redis.ts'
import type { LocalRedis } from '../../local/redis.ts'
import { RespConnection, startUpstashRest } from '../../local/upstash-rest/index.ts'
import type { UpstashRest } from '../../local/upstash-rest/index.ts'

const TOKEN = 'local-test-token'
let server: LocalRedis
let rest: UpstashRest
let redis: Redis
// A plain RESP connection straight to redis-server: the ground truth the endpoint is checked against.
let raw: RespConnection

const sha1 = (text: string) => createHash('sha1').update(text).digest('hex')
const key = (name: string) => `${name}:${randomBytes(4).toString('hex')}`

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(`${rest.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TOKEN}`, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: res.status, headers: res.headers, body: (await res.json()) as unknown }
}

beforeAll(async () => {
  server = await startRedis()
  rest = await startUpstashRest({ redisPort: server.port, token: TOKEN })
  redis = new Redis({ url: rest.url, token: TOKEN, retry: false })
  raw = await RespConnection.open(server.host, server.port)
})

afterAll(async () => {
  raw?.close()
  await rest?.close()
  await server?.stop()
})

describe('the real @upstash/redis client', () => {
  it('sets with EX and gets', async () => {
    const k = key('ex')
    expect(await redis.set(k, 'value', { ex: 100 })).toBe('OK')
    expect(await redis.get(k)).toBe('value')
    const [ttl] = await raw.send([['TTL', k]])
    expect(ttl).toBeGreaterThan(90)
    expect(ttl).toBeLessThanOrEqual(100)
    expect(await redis.get(key('missing'))).toBeNull()
  })

  it('runs reads only for its read-only token: a write is refused with NOPERM, as Upstash does', async () => {
    const ro = await startUpstashRest({
      redisPort: server.port,
      token: TOKEN,
      readOnlyToken: 'read-only',
    })
    try {
      await redis.set('ro:k', 'v')
      const reader = new Redis({ url: ro.url, token: 'read-only', retry: false })
      expect(await reader.get('ro:k')).toBe('v')
      await expect(reader.set('ro:k', 'w')).rejects.toThrow(/NOPERM/)
      await expect(reader.incr('ro:n')).rejects.toThrow(/NOPERM/)
      expect(await redis.get('ro:k')).toBe('v')
      expect(await redis.exists('ro:n')).toBe(0)
      // The full token still writes.
      const writer = new Redis({ url: ro.url, token: TOKEN, retry: false })
      expect(await writer.set('ro:k', 'w')).toBe('OK')
    } finally {
      await ro.close()
    }
  })

  it('increments', async () => {
    const k = key('counter')
    const results = await Promise.all(Array.from({ length: 25 }, () => redis.incr(k)))
    expect([...results].sort((a, b) => a - b)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
    expect(await redis.incrby(k, 10)).toBe(35)
  })

  it('keeps a sorted set ordered like a brute-force sort', async () => {
    const k = key('board')
    const entries = Array.from({ length: 40 }, (_, i) => ({
      member: `p${i}`,
      score: Math.floor(Math.random() * 1000),
    }))
    const [first, ...rest] = entries
    if (first === undefined) throw new Error('no entries')
    await redis.zadd(k, first, ...rest)
    const expected = [...entries].sort((a, b) =>
      a.score !== b.score ? a.score - b.score : a.member < b.member ? -1 : 1,
    )
    expect(await redis.zrange(k, 0, -1)).toEqual(expected.map((e) => e.member))
    const withScores = await redis.zrange(k, 0, 2, { withScores: true })
    expect(withScores).toEqual(expected.slice(0, 3).flatMap((e) => [e.member, e.score]))
    const probe = expected[17]
    if (probe === undefined) throw new Error('no probe')
    expect(await redis.zrank(k, probe.member)).toBe(17)
    expect(await redis.zrevrank(k, probe.member)).toBe(entries.length - 1 - 17)
  })

  it('round-trips hashes and JSON values', async () => {
    const h = key('hash')
    await redis.hset(h, { name: 'Ada', level: 7, tags: ['a', 'b'] })
    expect(await redis.hgetall(h)).toEqual({ name: 'Ada', level: 7, tags: ['a', 'b'] })
    const j = key('json')
    const doc = { player: 'p1', stats: { wins: 3, ratio: 0.75 }, list: [1, 'two', null] }
    await redis.set(j, doc)
    expect(await redis.get(j)).toEqual(doc)
    const [stored] = await raw.send([['GET', j]])
    expect(JSON.parse(String(stored))).toEqual(doc)
  })

  it('auto-pipelines concurrent commands into POST /pipeline', async () => {
    const paths: string[] = []
    const realFetch = globalThis.fetch
    globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
      paths.push(new URL(input instanceof Request ? input.url : input).pathname)
      return realFetch(input, init)
    }) as typeof fetch
    try {
      const k = key('auto')
      const results = await Promise.all([redis.set(k, 'a'), redis.get(k), redis.strlen(k)])
      expect(results).toEqual(['OK', 'a', 1])
    } finally {
      globalThis.fetch = realFetch
    }
    // How the client batches is its business; every request must be a pipeline, and batched.
    expect(paths.length).toBeGreaterThan(0)
    expect(paths.length).toBeLessThan(3)
    expect(new Set(paths)).toEqual(new Set(['/pipeline']))
  })

  it('runs an explicit pipeline in order', async () => {
    const k = key('pipe')
    const results = await redis.pipeline().set(k, 5).incr(k).get(k).del(k).get(k).exec()
    expect(results).toEqual(['OK', 6, 6, 1, null])
  })

  it('runs multi() as a transaction', async () => {
    const k = key('tx')
    expect(await redis.multi().set(k, 1).incrby(k, 41).get(k).exec()).toEqual(['OK', 42, 42])
  })

  it('keeps runtime errors per command inside multi(), like Redis and Upstash', async () => {
    const s = key('tx-str')
    const after = key('tx-after')
    const results = await redis
      .multi()
      .set(s, 'text')
      .incr(s)
      .set(after, 'done')
      .exec({ keepErrors: true })
    expect(results[0]).toMatchObject({ result: 'OK', error: undefined })
    expect(results[1]?.error).toMatch(/not an integer/)
    expect(results[2]).toMatchObject({ result: 'OK', error: undefined })
    expect(await redis.get(after)).toBe('done')
    await expect(redis.multi().set(s, 'x').incr(s).exec()).rejects.toThrow(/not an integer/)
  })

  it('surfaces an error reply as an error', async () => {
    const k = key('str')
    await redis.set(k, 'not a number')
    await expect(redis.incr(k)).rejects.toThrow(/ERR value is not an integer/)
    // and a later command on the same client still works
    expect(await redis.get(k)).toBe('not a number')
  })

  it('round-trips non-ASCII and binary-ish strings through base64 encoding', async () => {
    const k = key('utf8')
    const text = 'héllo wörld ✓ 🎮 — 日本語 \u0000 end'
    await redis.set(k, text)
    expect(await redis.get(k)).toBe(text)
    const [stored] = await raw.send([['GET', k]])
    expect(stored).toEqual(Buffer.from(text))
  })

  it('rejects a wrong token with 401', async () => {
    const wrong = new Redis({ url: rest.url, token: 'not-the-token', retry: false })
    await expect(wrong.get('anything')).rejects.toThrow(/Unauthorized/)
    const res = await fetch(rest.url, { method: 'POST', body: '["PING"]' })
    expect(res.status).toBe(401)
  })

  it('runs EVAL and EVALSHA', async () => {
    const k = key('lua')
    const script = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    expect(await redis.eval(script, [k], ['5'])).toBe(5)
    const sha = await redis.scriptLoad(script)
    expect(sha).toBe(sha1(script))
    expect(await redis.evalsha(sha, [k], ['2'])).toBe(7)
  })

  it('accepts Upstash-only shebang flags and maps the original SHA for EVALSHA', async () => {
    const k = key('ratelimit')
    const script = "#!lua flags=allow-key-locking\nreturn redis.call('INCR', KEYS[1])"
    // Real Redis refuses this script as written: that is what the endpoint must fix.
    const [refused] = await raw.send([['EVAL', script, '1', k]])
    expect(String((refused as { message?: string }).message)).toMatch(/flag/i)

    await expect(redis.evalsha(sha1(script), [k], [])).rejects.toThrow(/NOSCRIPT/)
    expect(await redis.eval(script, [k], [])).toBe(1)
    expect(await redis.evalsha(sha1(script), [k], [])).toBe(2)

    const other = "#!lua flags=allow-key-locking\nreturn redis.call('INCRBY', KEYS[1], 10)"
    expect(await redis.scriptLoad(other)).toBe(sha1(other))
    expect(await redis.evalsha(sha1(other), [k], [])).toBe(12)
    expect(await redis.scriptExists(sha1(other), sha1('return 0 -- never loaded'))).toEqual([1, 0])
  })

  it('keeps the shebang flags Redis knows (no-writes still forbids writes)', async () => {
    const k = key('ro')
    const script = "#!lua flags=allow-key-locking,no-writes\nreturn redis.call('SET', KEYS[1], 'x')"
    await expect(redis.eval(script, [k], [])).rejects.toThrow(/Write commands are not allowed/)
    const read = "#!lua flags=no-writes,allow-key-locking\nreturn redis.call('EXISTS', KEYS[1])"
    expect(await redis.eval(read, [k], [])).toBe(0)
  })
})

describe('the REST protocol', () => {
  it('answers single commands, pipelines and multi-exec in Upstash shapes', async () => {
    const k = key('shape')
    expect(await post('/', ['SET', k, 'v'])).toMatchObject({ status: 200, body: { result: 'OK' } })
    expect(await post('/', ['INCR', k])).toMatchObject({
      status: 400,
      body: { error: 'ERR value is not an integer or out of range' },
    })
    expect((await post('/pipeline', [['GET', k], ['NOSUCHCOMMAND'], ['STRLEN', k]])).body).toEqual([
      { result: 'v' },
      { error: expect.stringMatching(/unknown command/) },
      { result: 1 },
    ])
    expect(
      (
        await post('/multi-exec', [
          ['SET', k, '1'],
          ['INCR', k],
        ])
      ).body,
    ).toEqual([{ result: 'OK' }, { result: 2 }])
  })

  it('aborts a multi-exec whose command cannot be queued, running none of it', async () => {
    const k = key('abort')
    const res = await post('/multi-exec', [['SET', k, '1'], ['NOSUCHCOMMAND']])
    expect(res.status).toBe(400)
    expect(res.body).toMatchObject({ error: expect.stringMatching(/^EXECABORT.*unknown command/) })
    expect(await raw.send([['EXISTS', k]])).toEqual([0])
  })

  it('base64-encodes every string when asked, leaving integers and nil alone', async () => {
    const k = key('b64')
    const text = 'ünïcødé ✓'
    await post('/', ['RPUSH', k, text, 'plain'])
    const res = await post(
      '/pipeline',
      [['LRANGE', k, '0', '-1'], ['LLEN', k], ['GET', key('none')], ['PING']],
      {
        'Upstash-Encoding': 'base64',
      },
    )
    const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64')
    expect(res.body).toEqual([
      { result: [b64(text), b64('plain')] },
      { result: 2 },
      { result: null },
      { result: b64('PONG') },
    ])
    expect((await post('/', ['LINDEX', k, '0'])).body).toEqual({ result: text })
  })

  it('sends a sync token that only moves forward', async () => {
    const a = Number((await post('/', ['PING'])).headers.get('upstash-sync-token'))
    const b = Number((await post('/', ['PING'])).headers.get('upstash-sync-token'))
    expect(b).toBeGreaterThan(a)
  })

  it('refuses connection-state commands, unknown paths and oversized bodies', async () => {
    expect(await post('/', ['MULTI'])).toMatchObject({ status: 400 })
    expect(await post('/', ['SELECT', '1'])).toMatchObject({ status: 400 })
    expect(await post('/nope', ['PING'])).toMatchObject({ status: 404 })
    expect(await post('/', 'not json')).toMatchObject({ status: 400 })
    const huge = JSON.stringify(['SET', 'big', 'x'.repeat(11 * 1024 * 1024)])
    expect(await post('/', huge)).toMatchObject({ status: 413 })
  })

  it('gives a blocking command its own connection so other requests do not wait', async () => {
    const q = key('queue')
    const blocked = post('/', ['BLPOP', q, '5'])
    let unblocked = false
    void blocked.then(() => (unblocked = true))
    expect((await post('/', ['PING'])).body).toEqual({ result: 'PONG' })
    expect(
      (await post('/pipeline', [['PING'], ['PING'], ['PING'], ['PING'], ['PING']])).status,
    ).toBe(200)
    // Answered while the BLPOP still waits: not behind it.
    expect(unblocked).toBe(false)
    await post('/', ['RPUSH', q, 'job'])
    expect((await blocked).body).toEqual({ result: [q, 'job'] })
  })
})

describe('when redis-server goes away', () => {
  it('answers an error quickly, then recovers when Redis is back', async () => {
    const own = await startRedis()
    const endpoint = await startUpstashRest({ redisPort: own.port, token: TOKEN })
    const client = new Redis({ url: endpoint.url, token: TOKEN, retry: false })
    try {
      expect(await client.set('k', 'v')).toBe('OK')
      await own.stop()
      const started = Date.now()
      await expect(client.get('k')).rejects.toThrow(/redis unreachable/)
      await expect(client.get('k')).rejects.toThrow(/redis unreachable/)
      expect(Date.now() - started).toBeLessThan(2_000)

      const again = await startRedis({ port: own.port })
      try {
        // A fresh server without persistence: the old value is gone, the endpoint works again.
        expect(await client.get('k')).toBeNull()
        expect(await client.set('k', 'back')).toBe('OK')
        expect(await client.get('k')).toBe('back')
      } finally {
        await again.stop()
      }
    } finally {
      await endpoint.close()
      await own.stop()
    }
  })
})
