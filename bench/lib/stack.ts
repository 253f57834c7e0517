/**
 * The whole local stack for benchmarks and load tests: a temporary PostgreSQL behind the Neon
 * relay (migrated), optionally redis-server behind the Upstash endpoint, and `wrangler dev`
 * serving the Worker on 127.0.0.1. Everything stops with `stop()`.
 */
import { execFileSync, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../local/process.ts'
import { startNeonRelay, startPostgres, startRedis, startUpstashRest } from '../../local/index.ts'
import { runMigrations } from '../../scripts/migrate.ts'
import { startWranglerDev } from '../../scripts/wrangler-dev.ts'

export const BENCH_ADMIN_KEY = 'bench-admin-key'

const root = fileURLToPath(new URL('../../', import.meta.url))

export interface Stack {
  url: string
  /** How the Worker is served, for reports. */
  runtime: string
  adminKey: string
  databaseUrl: string
  postgresPort: number
  /**
   * Restarts workerd over the same storage, so that every Durable Object wakes from SQLite on its
   * next request (Miniflare only).
   */
  restart?(): Promise<void>
  /**
   * With NEXUS_BENCH_PROFILE and NEXUS_BENCH_PROFILE_WINDOWS=1 (Miniflare only): profiles only
   * between `start` and `stop`, one file per window, for a benchmark to profile what it measures.
   */
  profileWindow?: { start(): Promise<void>; stop(): Promise<void> }
  stop(): Promise<void>
}

export async function startStack(
  opts: {
    redis?: boolean
    vars?: Record<string, string>
    /**
     * `miniflare` (default, or NEXUS_BENCH_RUNTIME): the bundled Worker served by Miniflare, one
     * workerd between client and code, as on Cloudflare. `wrangler`: `wrangler dev`, which adds
     * its own proxy in front (two workerd hops per request and per WebSocket frame).
     */
    runtime?: 'miniflare' | 'wrangler'
  } = {},
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
      // The benchmarks join with a few hundred players over and over, far past a player's joins
      // a minute; they measure the path, not the limit.
      JOINS_PER_MINUTE: '10000',
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
    const port = await freePort()
    const runtime =
      opts.runtime ?? (process.env.NEXUS_BENCH_RUNTIME === 'wrangler' ? 'wrangler' : 'miniflare')
    let restart: (() => Promise<void>) | undefined
    let profileWindow: Stack['profileWindow']
    if (runtime === 'miniflare') {
      const server = await startMiniflareServer(port, vars)
      stops.push(server.stop)
      restart = server.restart
      profileWindow = server.profileWindow
    } else {
      // Durable Object storage in a fresh directory in memory (tmpfs when there is one), as the
      // PostgreSQL beside it runs with fsync off: a local disk's fsync per commit would otherwise
      // dominate every durable write, which on Cloudflare is a replicated commit, not a local fsync.
      const state = await mkdtemp(
        join(existsSync('/dev/shm') ? '/dev/shm' : tmpdir(), 'nexus-bench-state-'),
      )
      stops.push(() => rm(state, { recursive: true, force: true }))
      const wrangler = startWranglerDev({ port, vars, stdio: 'ignore', persistTo: state })
      stops.push(() => wrangler.stop())
      await wrangler.ready
    }
    return {
      url: `http://127.0.0.1:${port}`,
      runtime:
        runtime === 'miniflare'
          ? 'Local Worker served by Miniflare (workerd, no dev proxy)'
          : 'Local Worker under `wrangler dev` (workerd behind its dev proxy)',
      adminKey: BENCH_ADMIN_KEY,
      databaseUrl: pg.url,
      postgresPort: pg.port,
      ...(restart ? { restart } : {}),
      ...(profileWindow ? { profileWindow } : {}),
      stop,
    }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Bundles the Worker as `wrangler deploy` would, then serves it with Miniflare in a child process. */
async function startMiniflareServer(
  port: number,
  vars: Record<string, string>,
): Promise<{
  stop(): Promise<void>
  restart(): Promise<void>
  profileWindow?: Stack['profileWindow']
}> {
  const out = await mkdtemp(join(tmpdir(), 'nexus-bench-bundle-'))
  const windows =
    !!process.env.NEXUS_BENCH_PROFILE && process.env.NEXUS_BENCH_PROFILE_WINDOWS === '1'
  execFileSync('npx', ['wrangler', 'deploy', '--dry-run', '--outdir', out], {
    cwd: root,
    stdio: 'ignore',
  })
  const child = spawn(
    process.execPath,
    [
      `${root}bench/lib/miniflare-server.ts`,
      JSON.stringify({
        port,
        modulesRoot: out,
        vars,
        ...(process.env.NEXUS_BENCH_PROFILE ? { profile: process.env.NEXUS_BENCH_PROFILE } : {}),
        ...(windows ? { profileWindows: true } : {}),
      }),
    ],
    {
      cwd: root,
      // Miniflare keeps Durable Object storage under the temporary directory: in memory, as for
      // wrangler dev above, so a disk's fsync is not what the benchmarks measure.
      env: { ...process.env, ...(existsSync('/dev/shm') ? { TMPDIR: '/dev/shm' } : {}) },
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`miniflare exited with ${code}`)))
    child.stdout!.on('data', (d: Buffer) => {
      if (String(d).includes('listening')) resolve()
    })
  })
  /** Sends `command` to the server and waits for its `ack` line. */
  const ask = (command: string, ack: string) =>
    new Promise<void>((resolve) => {
      const onData = (d: Buffer) => {
        if (!String(d).includes(ack)) return
        child.stdout!.off('data', onData)
        resolve()
      }
      child.stdout!.on('data', onData)
      child.stdin!.write(`${command}\n`)
    })
  return {
    ...(windows
      ? {
          profileWindow: {
            start: () => ask('profile-start', 'profile-started'),
            stop: () => ask('profile-stop', 'profile-stopped'),
          },
        }
      : {}),
    async restart() {
      await new Promise<void>((resolve, reject) => {
        const onData = (d: Buffer) => {
          if (!String(d).includes('restarted')) return
          child.stdout!.off('data', onData)
          resolve()
        }
        child.stdout!.on('data', onData)
        child.once('exit', (code) => reject(new Error(`miniflare exited with ${code}`)))
        child.stdin!.write('restart\n')
      })
    },
    async stop() {
      if (child.exitCode === null) {
        child.stdin!.write('stop\n')
        await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))])
        if (process.env.NEXUS_BENCH_PROFILE) await exited
      }
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
        await exited
        clearTimeout(timer)
      }
      await rm(out, { recursive: true, force: true })
    },
  }
}
