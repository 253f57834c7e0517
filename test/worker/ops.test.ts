import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { neon } from '@neondatabase/serverless'
import { Redis } from '@upstash/redis/cloudflare'
import { describe, expect, it, onTestFinished, vi } from 'vitest'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { configureLocalRelay } from '../../workers/db/client.ts'
import { checksUnderWay } from '../../workers/routes/ops.ts'
import { setLogLevel } from '../../workers/lib/log.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { hitWindow } from '../../workers/lib/rate-limit.ts'
import { getRedis, RedisAccelerator } from '../../workers/lib/redis.ts'
import migrationJournal from '../../migrations/meta/_journal.json'
import { pg } from './helpers/boards.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  json,
  newGuest,
  problem,
  signInsOverTheLimit,
} from './helpers/http.ts'

const testEnv = env as unknown as Record<string, string>
const unreachablePostgres = {
  DATABASE_URL: testEnv.TEST_UNREACHABLE_DATABASE_URL,
  NEON_LOCAL_RELAY: testEnv.TEST_UNREACHABLE_NEON_RELAY,
}
/** Nothing listens on port 1 of the loopback: an Upstash endpoint that is down. */
const unreachableRedis = {
  UPSTASH_REDIS_REST_URL: 'http://127.0.0.1:1',
  UPSTASH_REDIS_REST_TOKEN: 'x',
}

function wrongPassword(databaseUrl: string): string {
  const url = new URL(databaseUrl)
  url.password = 'not-the-password'
  return url.toString()
}

/** Every console line until `stop()`: what the logs of the requests meanwhile hold. */
function captureLogs(): string[] & { stop(): void } {
  const lines = [] as unknown as string[] & { stop(): void }
  const spies = [vi.spyOn(console, 'log'), vi.spyOn(console, 'warn'), vi.spyOn(console, 'error')]
  for (const spy of spies) spy.mockImplementation((line: unknown) => void lines.push(String(line)))
  lines.stop = () => {
    for (const spy of spies) spy.mockRestore()
  }
  onTestFinished(lines.stop)
  return lines
}

describe('operations endpoints', () => {
  it('/openapi.json is built once and may be cached at the edge: the same document every time, Cache-Control public for 5 minutes', async () => {
    const first = await call('/openapi.json')
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-control')).toBe('public, max-age=300')
    expect(first.headers.get('content-type')).toContain('application/json')
    const text = await first.text()
    expect((JSON.parse(text) as { openapi: string }).openapi).toBe('3.1.0')
    expect(await (await call('/openapi.json')).text()).toBe(text)
  })

  it('/health answers without touching dependencies', async () => {
    const res = await callWithEnv(unreachablePostgres, '/health')
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'ok' })
  })

  it('/ready is 200 when Postgres and Redis answer', async () => {
    const res = await call('/ready')
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({
      status: 'ready',
      checks: { postgres: 'up', redis: 'up' },
      checkedAt: expect.any(Number),
    })
  })

  it('/ready reuses its checks for a second: a loop of requests asks Neon and Redis once', async () => {
    const before = Date.now()
    const answers = []
    for (let i = 0; i < 5; i++) {
      answers.push((await (await call('/ready')).json()) as { checkedAt: number })
    }
    const times = new Set(answers.map((a) => a.checkedAt))
    // A second's boundary may fall inside the loop once.
    expect(times.size).toBeLessThanOrEqual(2)
    for (const a of answers) expect(a.checkedAt).toBeGreaterThan(before - 1_000)
  })

  it("/ready is not held for good by a check the runtime dropped (its request's client gone): waited on for its probes' deadline at most, then checked anew; one that old is not waited on, but replaced", async () => {
    // Configurations of their own (Redis unconfigured, a token no other test uses): no check of
    // another test's is reused.
    const ownConfig = () => ({
      UPSTASH_REDIS_REST_URL: '',
      UPSTASH_REDIS_REST_TOKEN: crypto.randomUUID(),
    })
    const keyOf = (own: { UPSTASH_REDIS_REST_TOKEN: string }) =>
      `${(env as unknown as { DATABASE_URL?: string }).DATABASE_URL ?? ''}  ${own.UPSTASH_REDIS_REST_TOKEN}`
    const never = new Promise<never>(() => {})
    // Lost just now: a request waits on it, then checks for itself.
    const recent = ownConfig()
    checksUnderWay.set(keyOf(recent), { started: Date.now(), checks: never })
    const waited = await callWithEnv(recent, '/ready')
    expect(waited.status).toBe(200)
    expect(await waited.json()).toMatchObject({ status: 'ready', checks: { postgres: 'up' } })
    // Lost long ago: a new check takes its place (and leaves when done).
    const old = ownConfig()
    checksUnderWay.set(keyOf(old), { started: Date.now() - 60_000, checks: never })
    const fresh = await callWithEnv(old, '/ready')
    expect(fresh.status).toBe(200)
    expect(checksUnderWay.has(keyOf(old))).toBe(false)
    checksUnderWay.delete(keyOf(recent))
  })

  it('/ready is 503 naming Redis when it answers reads but refuses writes (a read-only token in place of the database’s own): it would count no limit and share no answer', async () => {
    const res = await callWithEnv(
      { UPSTASH_REDIS_REST_TOKEN: env.TEST_READ_ONLY_UPSTASH_TOKEN },
      '/ready',
    )
    expect(res.status).toBe(503)
    const body = (await res.json()) as { checks: Record<string, string>; detail: string }
    expect(body.checks).toEqual({ postgres: 'up', redis: 'down' })
    expect(body.detail).toContain('redis unreachable or refusing writes')
  })

  it("/ready's failed checks log why, which its answer does not say: Redis out of reach, a Neon role that may not read the migrations", async () => {
    const lines = captureLogs()
    const down = await callWithEnv({ ...unreachableRedis, LOG_LEVEL: 'warn' }, '/ready')
    expect(down.status).toBe(503)
    await down.body?.cancel()
    const failures = () =>
      lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'readiness check failed')
    expect(failures()).toEqual([
      expect.objectContaining({ level: 'warn', check: 'redis', error: expect.any(String) }),
    ])
    // The 503's request line is a `warn` too: a service out of reach, not a fault to page on.
    expect(
      lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'request' && l.path === '/ready'),
    ).toEqual([expect.objectContaining({ level: 'warn', status: 503 })])
    // A role that connects but may not read the migrations table.
    const role = `ready_${crypto.randomUUID().slice(0, 8)}`
    await pg().query(`CREATE ROLE ${role} LOGIN PASSWORD 'ready-probe'`)
    onTestFinished(() =>
      pg()
        .query(`DROP ROLE IF EXISTS ${role}`)
        .then(() => {}),
    )
    const url = new URL(env.DATABASE_URL!)
    url.username = role
    url.password = 'ready-probe'
    const denied = await callWithEnv({ DATABASE_URL: url.toString(), LOG_LEVEL: 'warn' }, '/ready')
    expect(denied.status).toBe(503)
    await denied.body?.cancel()
    expect(failures().find((l) => l.check === 'postgres')).toMatchObject({
      error: expect.stringContaining('permission denied'),
    })
  })

  it('/ready is 503 naming Postgres when it is unreachable', async () => {
    const res = await callWithEnv(unreachablePostgres, '/ready')
    expect(res.status).toBe(503)
    expect(res.headers.get('content-type')).toBe('application/problem+json')
    const body = (await res.json()) as {
      type: string
      checks: Record<string, string>
      detail: string
    }
    expect(body.type).toBe('urn:nexus:problem:unavailable')
    expect(body.checks).toEqual({ postgres: 'down', redis: 'up' })
    expect(body.detail).toContain('postgres')
  })

  it('a request that needs Postgres while it is unreachable is 503 unavailable, not 500', async () => {
    const responses = [
      await callWithEnv(
        unreachablePostgres,
        '/v1/auth/guest',
        json('POST', { deviceId: `pg-down-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': '203.0.113.200',
        }),
      ),
      await callWithEnv(
        unreachablePostgres,
        `/v1/matchmaking/pg-down-${crypto.randomUUID()}/stats`,
      ),
      // The SQL endpoint itself down, not only Postgres behind it: the driver's fetch throws.
      await callWithEnv(
        {
          DATABASE_URL: 'postgresql://nexus:nexus@127.0.0.1:1/nexus',
          NEON_LOCAL_RELAY: '127.0.0.1:1',
        },
        `/v1/matchmaking/pg-down-${crypto.randomUUID()}/stats`,
      ),
      // Neon's proxy refusing the credentials (a password rotated in Neon, not yet in the
      // Worker): its answer carries no SQLSTATE, as any other refusal of the proxy's own.
      await callWithEnv(
        { DATABASE_URL: wrongPassword(testEnv.DATABASE_URL!) },
        `/v1/matchmaking/pg-down-${crypto.randomUUID()}/stats`,
      ),
    ]
    for (const res of responses) {
      expect(res.status).toBe(503)
      expect(res.headers.get('content-type')).toBe('application/problem+json')
      const body = (await res.json()) as { type: string; requestId: string }
      expect(body.type).toBe('urn:nexus:problem:unavailable')
      expect(body.requestId).toBe(res.headers.get('x-request-id'))
    }
  })

  it('a board its object has not loaded answers 503 unavailable while Neon is down, not 500', async () => {
    const id = `pg-down-board-${crypto.randomUUID().slice(0, 8)}`
    const stub = env.LEADERBOARD.getByName(id)
    // The object reads its configuration from Neon on first use; here Neon is out of reach.
    await runInDurableObject(stub, (inst: Leaderboard) => {
      ;(inst as unknown as { env: unknown }).env = { ...env, ...unreachablePostgres }
    })
    const responses = [
      await call(`/v1/leaderboards/${id}/top`),
      await call(`/v1/leaderboards/${id}`),
      await call(
        `/v1/leaderboards/${id}/scores`,
        json('POST', { playerId: 'p', score: 1 }, ADMIN_KEY, { 'idempotency-key': 'k' }),
      ),
    ]
    for (const res of responses) {
      expect(res.status).toBe(503)
      expect(((await res.json()) as { type: string }).type).toBe('urn:nexus:problem:unavailable')
    }
  })

  it('an Upstash URL the client refuses (a rediss:// string) is Redis down, not a 500 on every route, and its password is in no log line', async () => {
    const password = `pw-${crypto.randomUUID()}`
    const misconfigured = {
      UPSTASH_REDIS_REST_URL: `rediss://default:${password}@example.upstash.io:6379`,
      UPSTASH_REDIS_REST_TOKEN: 'x',
      LOG_LEVEL: 'debug',
    }
    const lines: string[] = []
    const spies = [vi.spyOn(console, 'log'), vi.spyOn(console, 'warn'), vi.spyOn(console, 'error')]
    for (const spy of spies)
      spy.mockImplementation((line: unknown) => void lines.push(String(line)))
    try {
      const ready = await callWithEnv(misconfigured, '/ready')
      expect(ready.status).toBe(503)
      expect(((await ready.json()) as { checks: unknown }).checks).toEqual({
        postgres: 'up',
        redis: 'down',
      })
      const guest = await callWithEnv(
        misconfigured,
        '/v1/auth/guest',
        json('POST', { deviceId: `bad-redis-url-${crypto.randomUUID()}` }),
      )
      expect(guest.status).toBe(200)
    } finally {
      for (const spy of spies) spy.mockRestore()
    }
    // Said by its scheme alone: the client's own error quotes the whole URL.
    expect(lines.some((l) => l.includes('not an https:// REST URL (rediss)'))).toBe(true)
    expect(lines.filter((l) => l.includes(password))).toEqual([])
  })

  it("a DATABASE_URL whose password makes it no URL is in no log line (the driver's error quotes it whole, under drizzle's own); nor are a client's address and the command an Upstash error repeats", async () => {
    const secret = crypto.randomUUID()
    const lines = captureLogs()
    const bad = await callWithEnv(
      {
        // A `#` in a password not percent-encoded: the driver cannot parse it, and says so with
        // the whole string. A quote stops the credentials pattern short of the `@`.
        DATABASE_URL: `postgresql://nexus:it's#${secret}@ep-x.neon.tech/nexus`,
        NEON_LOCAL_RELAY: '',
        LOG_LEVEL: 'debug',
      },
      `/v1/matchmaking/q-${crypto.randomUUID()}/stats`,
    )
    expect(bad.status).toBe(503)
    // Redis refusing writes (a read-only token): the refused count's key holds the address.
    const address = `198.51.100.${1 + Math.floor(Math.random() * 250)}`
    const guest = await callWithEnv(
      { UPSTASH_REDIS_REST_TOKEN: env.TEST_READ_ONLY_UPSTASH_TOKEN, LOG_LEVEL: 'debug' },
      '/v1/auth/guest',
      json('POST', { deviceId: `ro-${crypto.randomUUID()}` }, undefined, {
        'cf-connecting-ip': address,
      }),
    )
    expect(guest.status).toBe(200)
    lines.stop()
    // Logged, so the test would see a leak: the driver's reason, and Redis's refusal.
    expect(lines.some((l) => l.includes('not a valid URL'))).toBe(true)
    expect(lines.some((l) => l.includes('redis call failed') && l.includes('NOPERM'))).toBe(true)
    expect(lines.filter((l) => l.includes(secret))).toEqual([])
    expect(lines.filter((l) => l.includes(address))).toEqual([])
  })

  it('/ready is 503 naming identity provider settings that refuse every provider token, and 200 with none of them set', async () => {
    for (const [settings, named] of [
      [{ JWT_ISSUER: '' }, 'JWT_ISSUER or JWT_AUDIENCE is missing'],
      [{ JWT_AUDIENCE: '' }, 'JWT_ISSUER or JWT_AUDIENCE is missing'],
      [{ JWKS_URL: 'http://idp.test/.well-known/jwks.json' }, 'invalid JWKS_URL'],
      [{ JWKS_URL: '' }, 'set without JWKS_URL'],
    ] as const) {
      const res = await callWithEnv(settings, '/ready')
      const body = (await res.json()) as { detail: string }
      expect([res.status, body.detail], JSON.stringify(settings)).toEqual([
        503,
        expect.stringContaining(named),
      ])
    }
    const none = await callWithEnv({ JWKS_URL: '', JWT_ISSUER: '', JWT_AUDIENCE: '' }, '/ready')
    expect(none.status).toBe(200)
  })

  it('/ready is 503 naming Redis when it is down, and Postgres still up', async () => {
    const res = await callWithEnv(unreachableRedis, '/ready')
    expect(res.status).toBe(503)
    expect(((await res.json()) as { checks: unknown }).checks).toEqual({
      postgres: 'up',
      redis: 'down',
    })
  })

  it('/ready without Redis configured reports it as not configured and is ready', async () => {
    const res = await callWithEnv({ UPSTASH_REDIS_REST_URL: undefined }, '/ready')
    expect(res.status).toBe(200)
    expect(((await res.json()) as { checks: unknown }).checks).toEqual({
      postgres: 'up',
      redis: 'not-configured',
    })
  })

  it('/ready without DATABASE_URL says Postgres is not configured, not that it is unreachable', async () => {
    const res = await callWithEnv({ DATABASE_URL: undefined }, '/ready')
    expect(res.status).toBe(503)
    const body = (await res.json()) as { checks: Record<string, string>; detail: string }
    expect(body.checks.postgres).toBe('not-configured')
    expect(body.detail).toBe('Not ready: postgres not configured (DATABASE_URL)')
  })

  it('/ready is 503 naming the newest migration while the database lacks it (a version deployed before `npm run db:migrate`, or a database never migrated), and ready once it is in', async () => {
    const sql = pg()
    const name = `ready_${crypto.randomUUID().replaceAll('-', '').slice(0, 16)}`
    await sql.query(`create database ${name}`)
    onTestFinished(async () => {
      await sql.query(`drop database if exists ${name} with (force)`)
    })
    const url = new URL(env.DATABASE_URL!)
    url.pathname = `/${name}`
    const other = neon(url.toString())
    const ready = () => callWithEnv({ DATABASE_URL: url.toString() }, '/ready')
    const [newest, before] = [...migrationJournal.entries].reverse()
    const behind = `Not ready: postgres schema behind this version: ${newest!.tag} not applied (npm run db:migrate)`

    const never = await ready()
    expect(never.status).toBe(503)
    const neverBody = (await never.json()) as { checks: Record<string, string>; detail: string }
    expect(neverBody.checks.postgres).toBe('up')
    expect(neverBody.detail).toBe(behind)

    // Migrated up to the one before the newest, as drizzle's migrator records them.
    await other.query('create schema drizzle')
    await other.query(
      'create table drizzle.__drizzle_migrations (id serial primary key, hash text not null, created_at bigint)',
    )
    await other.query(
      "insert into drizzle.__drizzle_migrations (hash, created_at) values ('h', $1)",
      [before!.when],
    )
    // /ready reuses its checks for a second.
    await new Promise((r) => setTimeout(r, 1_100))
    expect(((await (await ready()).json()) as { detail: string }).detail).toBe(behind)

    await other.query(
      "insert into drizzle.__drizzle_migrations (hash, created_at) values ('h', $1)",
      [newest!.when],
    )
    await new Promise((r) => setTimeout(r, 1_100))
    const now = await ready()
    expect(now.status).toBe(200)
  })

  it('/ready without ADMIN_KEY is 503 naming it: no board or queue can be set up without it', async () => {
    const res = await callWithEnv({ ADMIN_KEY: undefined }, '/ready')
    expect(res.status).toBe(503)
    const body = (await res.json()) as { checks: Record<string, string>; detail: string }
    expect(body.checks).toMatchObject({ postgres: 'up' })
    expect(body.detail).toBe('Not ready: ADMIN_KEY is not configured')
  })

  it("keeps serving when Redis is down: guest sign-ins are limited per address by the isolate's own count", async () => {
    const started = Date.now()
    for (let i = 0; i < 5; i++) {
      const res = await callWithEnv(
        unreachableRedis,
        '/v1/auth/guest',
        json('POST', { deviceId: `redis-down-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': `203.0.113.${i}`,
        }),
      )
      expect(res.status).toBe(200)
    }
    // The breaker opens after a few failures, so later requests do not wait for Redis at all.
    expect(Date.now() - started).toBeLessThan(5 * 1000)

    // One address (an IPv6 /64 of its own, so no other test's count is in the way) signs in 7
    // times at 3 a minute: a window's end may fall inside the loop once, so 3 to 6 get in.
    const address = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}:${Math.floor(Math.random() * 0xffff).toString(16)}::1`
    const { refused, limited } = await signInsOverTheLimit(address, unreachableRedis)
    expect(refused.length).toBeGreaterThanOrEqual(1)
    expect(refused.length).toBeLessThanOrEqual(4)
    expect(await problem(limited!)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(Number(limited!.headers.get('retry-after'))).toBeLessThanOrEqual(60)
    // A refused sign-in made no player.
    const made = await pg()`select 1 from players where device_id in (
      select encode(sha256(convert_to(d, 'UTF8')), 'hex') from unnest(${refused}::text[]) d)`
    expect(made).toEqual([])
  })

  it('a Redis that answers reads but refuses writes: after three refused counts the isolate stops sending them and counts limits itself, while its reads still go to Redis', async () => {
    setLogLevel('silent')
    onTestFinished(() => setLogLevel('info'))
    // The real Upstash client against the local endpoint, with the read-only token.
    const readOnly = new RedisAccelerator(
      new Redis({
        url: testEnv.UPSTASH_REDIS_REST_URL,
        token: testEnv.TEST_READ_ONLY_UPSTASH_TOKEN,
        retry: false,
      }),
    )
    const key = `ro-read-${crypto.randomUUID()}`
    await getRedis(env)!.write('test.set', (r) => r.set(key, 'kept'))
    const skipped = () => {
      const family = localFamilies().find((f) => f.name === 'nexus_redis_skipped_total')
      const series = (family?.series ?? []) as { labels: { operation: string }; value: number }[]
      return series.find((s) => s.labels.operation === 'ratelimit')?.value ?? 0
    }
    const before = skipped()
    const limitKey = `ro-limit-${crypto.randomUUID()}`
    const allowed: boolean[] = []
    for (let i = 0; i < 5; i++) {
      allowed.push((await hitWindow(readOnly, limitKey, 2, 60_000)).allowed)
      // Each hit beside a read Redis answers, as a request's limit and cache read go together.
      expect(await readOnly.run('test.get', (r) => r.get(key))).toBe('kept')
    }
    // Three counts refused (each one round trip), then the circuit of writes is open: the last
    // two were not sent. The isolate's own count limited the key all the same.
    expect(skipped() - before).toBe(2)
    expect(readOnly.writeState).toBe('open')
    expect(readOnly.state).toBe('closed')
    expect(allowed).toEqual([true, true, false, false, false])
  })

  it('a key over its limit is refused for the rest of its window without counting in Redis again', async () => {
    const redis = getRedis(env)!
    const key = `over-${crypto.randomUUID()}`
    const minute = 60_000
    // Early in a window, so that the hits below fall in it.
    const now = Math.floor(Date.now() / minute) * minute + 1_000
    const decisions = []
    for (let i = 0; i < 10; i++) decisions.push(await hitWindow(redis, key, 2, minute, now + i))
    expect(decisions.map((d) => d.allowed)).toEqual([true, true, ...new Array(8).fill(false)])
    expect(decisions[9]!.retryAfter).toBe(59)
    // Redis counted up to the first refusal: the seven after it cost Upstash nothing.
    const counted = await redis.run('test.get', (r) =>
      r.get<number>(`nexus:rl:${key}:${now - 1_000}`),
    )
    expect(Number(counted)).toBe(3)
    // A caller with a higher limit on the same key is still counted (and allowed).
    expect((await hitWindow(redis, key, 10, minute, now + 20)).allowed).toBe(true)
    // The next window counts again.
    const next = await hitWindow(redis, key, 2, minute, now + minute)
    expect(next.allowed).toBe(true)
  })

  it('/ready checks once for a burst of requests: those arriving while a check runs wait for it', async () => {
    // A configuration no request here has used yet (checks are remembered by configuration).
    const url = new URL(testEnv.DATABASE_URL!)
    url.searchParams.set('application_name', `ready-${crypto.randomUUID().slice(0, 8)}`)
    const answers = await Promise.all(
      Array.from({ length: 20 }, () => callWithEnv({ DATABASE_URL: url.toString() }, '/ready')),
    )
    const bodies = (await Promise.all(answers.map((r) => r.json()))) as {
      checkedAt: number
      checks: { postgres: string }
    }[]
    expect(bodies[0]!.checks.postgres).toBe('up')
    // One check, finished once: each request probing on its own finished at times of their own.
    expect(new Set(bodies.map((b) => b.checkedAt)).size).toBe(1)
  })

  it('/metrics exposes request counts and latency per route and status', async () => {
    await call('/health')
    await call('/v1/does-not-exist')
    const text = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(text).toContain('# TYPE nexus_http_requests_total counter')
    expect(text).toMatch(
      /nexus_http_requests_total\{method="GET",route="\/health",status="200"\} \d+/,
    )
    expect(text).toMatch(
      /nexus_http_requests_total\{method="GET",route="unmatched",status="404"\} \d+/,
    )
    expect(text).toMatch(
      /nexus_http_request_duration_seconds_bucket\{method="GET",route="\/health",status="200",le="\+Inf"\} \d+/,
    )
  })

  it('/metrics answers the metrics token and the admin key only', async () => {
    for (const credential of ['test-metrics-token', ADMIN_KEY]) {
      const res = await call('/metrics', bearer(credential))
      expect(res.status).toBe(200)
      expect(await res.text()).toContain('# TYPE nexus_http_requests_total counter')
    }
    const anonymous = await call('/metrics')
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers.get('content-type')).toBe('application/problem+json')
    expect(((await anonymous.json()) as { type: string }).type).toBe(
      'urn:nexus:problem:unauthorized',
    )
    const wrong = await call('/metrics', bearer('not-the-metrics-token'))
    expect(wrong.status).toBe(401)
    expect(await wrong.text()).not.toContain('nexus_http_requests_total')
    const player = await call('/metrics', bearer((await newGuest()).token))
    expect(player.status).toBe(403)
    expect(((await player.json()) as { type: string }).type).toBe('urn:nexus:problem:forbidden')
  })

  it('/openapi.json describes the routes with the schemas that validate them', async () => {
    const doc = (await (await call('/openapi.json')).json()) as {
      openapi: string
      paths: Record<
        string,
        Record<string, { requestBody?: { content: Record<string, { schema: unknown }> } }>
      >
      components: {
        schemas: Record<
          string,
          { properties?: Record<string, { maxLength?: number; minLength?: number }> }
        >
      }
    }
    expect(doc.openapi).toBe('3.1.0')
    expect(doc.paths['/v1/auth/guest']?.post).toBeDefined()
    expect(doc.components.schemas.GuestRequest?.properties?.deviceId).toMatchObject({
      minLength: 8,
      maxLength: 128,
    })
    expect(doc.components.schemas.Problem).toBeDefined()
  })

  it('/docs renders an HTML reference of the document, under the dashboard’s strict headers: its script and style are files of its own', async () => {
    const res = await call('/docs')
    expect(res.headers.get('content-type')).toContain('text/html')
    const html = await res.text()
    expect(html).toContain('/openapi.json')
    // Nothing inline: the CSP runs only this origin's files.
    expect(html).not.toMatch(/<script>|<style>/)
    for (const [path, type] of [
      ['/docs', 'text/html'],
      ['/docs/app.js', 'text/javascript'],
      ['/docs/app.css', 'text/css'],
    ] as const) {
      const page = await call(path)
      expect(page.status, path).toBe(200)
      expect(page.headers.get('content-type'), path).toContain(type)
      expect(page.headers.get('content-security-policy'), path).toContain("script-src 'self'")
      expect(page.headers.get('content-security-policy'), path).toContain("frame-ancestors 'none'")
      expect(page.headers.get('cross-origin-opener-policy'), path).toBe('same-origin')
      expect(page.headers.get('x-content-type-options'), path).toBe('nosniff')
      await page.body?.cancel()
    }
    expect(await (await call('/docs/app.js')).text()).toContain("fetch('/openapi.json')")
  })
})

describe('the Neon driver reaches the real PostgreSQL', () => {
  it('runs queries and a transaction through the relay', async () => {
    configureLocalRelay(testEnv.DATABASE_URL!, testEnv.NEON_LOCAL_RELAY!)
    const sql = neon(testEnv.DATABASE_URL!)
    const [row] =
      await sql`select current_setting('server_version_num')::int as v, 1 + ${41}::int as answer`
    expect(row).toMatchObject({ answer: 42 })
    expect(Number(row!.v)).toBeGreaterThanOrEqual(150000)
    const [, count] = await sql.transaction([
      sql`select 1`,
      sql`select count(*)::int as n from players`,
    ])
    expect(typeof (count as { n: number }[])[0]!.n).toBe('number')
  })

  it("leaves no timer behind once a query's answer is in: an object with one pending does not hibernate", async () => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] })
    try {
      const [row] = await pg()`select 1 as one`
      expect(row).toEqual({ one: 1 })
      // The query's deadline was set (a timer) and cleared with its answer. (The first version,
      // AbortSignal.timeout, kept a timer of the runtime's own, which this count cannot see.)
      expect(vi.getTimerCount()).toBe(0)
    } finally {
      vi.useRealTimers()
    }
  })
})
