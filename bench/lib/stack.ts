/**
 * The whole local stack for benchmarks and load tests: a temporary PostgreSQL behind the Neon
 * relay (migrated), optionally redis-server behind the Upstash endpoint, and `wrangler dev`
 * serving the Worker on 127.0.0.1. Everything stops with `stop()`.
 */
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../local/process.ts'
import { startNeonRelay, startPostgres, startRedis, startUpstashRest } from '../../local/index.ts'
import { runMigrations } from '../../scripts/migrate.ts'
import { startWranglerDev } from '../../scripts/wrangler-dev.ts'

export const BENCH_ADMIN_KEY = 'bench-admin-key'

export interface Stack {
  url: string
  adminKey: string
  databaseUrl: string
  postgresPort: number
  stop(): Promise<void>
}

export async function startStack(
  opts: { redis?: boolean; vars?: Record<string, string> } = {},
): Promise<Stack> {
  const stops: (() => Promise<void>)[] = []
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch((err: unknown) => console.error(err))
  }
  try {
    const pg = await startPostgres()
    stops.push(() => pg.stop())
    const relay = await startNeonRelay({ postgresPort: pg.port })
    stops.push(() => relay.close())
    await runMigrations({ databaseUrl: pg.url, relay: relay.address })
    const vars: Record<string, string> = {
      DATABASE_URL: pg.url,
      NEON_LOCAL_RELAY: relay.address,
      ADMIN_KEY: BENCH_ADMIN_KEY,
      AUTH_SECRET: 'bench-auth-secret-0123456789abcdef',
      LOG_LEVEL: 'warn',
      ...opts.vars,
    }
    if (opts.redis) {
      const redis = await startRedis()
      stops.push(() => redis.stop())
      const upstash = await startUpstashRest({ redisPort: redis.port, token: 'bench' })
      stops.push(() => upstash.close())
      vars.UPSTASH_REDIS_REST_URL = upstash.url
      vars.UPSTASH_REDIS_REST_TOKEN = 'bench'
    }
    // Durable Object storage in a fresh directory in memory (tmpfs when there is one), as the
    // PostgreSQL beside it runs with fsync off: a local disk's fsync per commit would otherwise
    // dominate every durable write, which on Cloudflare is a replicated commit, not a local fsync.
    const state = await mkdtemp(
      join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'nexus-bench-state-'),
    )
    stops.push(() => rm(state, { recursive: true, force: true }))
    const wrangler = startWranglerDev({
      port: await freePort(),
      vars,
      stdio: 'ignore',
      persistTo: state,
    })
    stops.push(() => wrangler.stop())
    await wrangler.ready
    return {
      url: wrangler.url,
      adminKey: BENCH_ADMIN_KEY,
      databaseUrl: pg.url,
      postgresPort: pg.port,
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}
