/**
 * `npm run dev`: Nexus on http://127.0.0.1:8787 with nothing to install or sign up for.
 *
 * - Postgres: DATABASE_URL if set (Neon or any Postgres), else an embedded PostgreSQL kept in
 *   .nexus/pg, reached through the local Neon relay so the Worker uses the real Neon driver.
 * - Migrations applied before the Worker starts.
 * - Redis: only when UPSTASH_REDIS_REST_URL is set; otherwise the Cache API alone.
 * - Secrets: .dev.vars or the environment win; otherwise ADMIN_KEY=dev-admin-key and a dev
 *   AUTH_SECRET, printed at start so nobody mistakes them for production values.
 *
 * Ctrl-C stops wrangler, the relay and Postgres.
 */
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { parseEnv } from 'node:util'
import { fileURLToPath } from 'node:url'
import { serverCanReach, startNeonRelay, startPostgres } from '../local/index.ts'
import { runMigrations } from './migrate.ts'
import { startWranglerDev } from './wrangler-dev.ts'
import { errorMessage } from '../workers/lib/log.ts'

const root = fileURLToPath(new URL('..', import.meta.url))
const port = Number(process.env.PORT ?? 8787)

/**
 * The Worker's settings (workers/env.ts). wrangler reads .dev.vars itself but not the environment,
 * so those set in the environment are handed to it here.
 */
const SETTINGS = [
  'DATABASE_URL',
  'NEON_LOCAL_RELAY',
  'AUTH_SECRET',
  'AUTH_SECRET_PREVIOUS',
  'ADMIN_KEY',
  'ADMIN_KEY_PREVIOUS',
  'METRICS_TOKEN',
  'JWKS_URL',
  'JWT_ISSUER',
  'JWT_AUDIENCE',
  'GUEST_AUTH',
  'CORS_ORIGINS',
  'ADMIN_ORIGINS',
  'TOKEN_TTL_SECONDS',
  'GUEST_AUTH_PER_MINUTE',
  'EDGE_SUBMITS_PER_MINUTE',
  'FRESH_READS_PER_MINUTE',
  'UPSTASH_REDIS_REST_URL',
  'UPSTASH_REDIS_REST_TOKEN',
  'SESSION_EVENT_READS_PER_MINUTE',
  'SESSION_READS_PER_MINUTE',
  'SESSION_CONNECTS_PER_MINUTE',
  'OWN_PARTY_READS_PER_MINUTE',
  'PLAYER_READS_PER_MINUTE',
  'TICKET_CALLS_PER_MINUTE',
  'JOINS_PER_MINUTE',
  'SESSION_GRACE_SECONDS',
  'SESSION_JOIN_GRACE_SECONDS',
  'SESSION_RETENTION_HOURS',
  'SESSION_LOG_RETENTION_DAYS',
  'LOG_LEVEL',
]

/** Why nothing can listen on 127.0.0.1:`port` (undefined when it is free). */
function portProblem(port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const server = createServer()
    server.once('error', (err: NodeJS.ErrnoException) =>
      resolve(
        err.code === 'EADDRINUSE'
          ? `port ${port} on 127.0.0.1 is in use: stop what holds it, or pick another with PORT=${port + 1} npm run dev`
          : `cannot listen on 127.0.0.1:${port}: ${err.message}`,
      ),
    )
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(undefined)))
  })
}

/** .dev.vars as wrangler reads it (dotenv rules: quotes, `export`, comments), by Node's parser. */
function readDevVars(): Record<string, string> {
  const file = `${root}.dev.vars`
  if (!existsSync(file)) return {}
  return parseEnv(readFileSync(file, 'utf8')) as Record<string, string>
}

/** A database URL as the log may show it: host, port and database, never the password. */
function describeDatabase(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl)
    return `${url.hostname}${url.port ? `:${url.port}` : ''}${url.pathname}`
  } catch {
    return 'DATABASE_URL (not a URL)'
  }
}

const stops: (() => Promise<void>)[] = []
// One shutdown, which every later caller waits for: wrangler exiting because we stopped it must
// not end the process before the relay and PostgreSQL are stopped (an immediate shutdown).
let stopping: Promise<never> | undefined
function stopAll(code: number): Promise<never> {
  stopping ??= (async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => console.error(err))
    process.exit(code)
  })()
  return stopping
}
process.on('SIGINT', () => void stopAll(0))
process.on('SIGTERM', () => void stopAll(0))
// A closed terminal: PostgreSQL would take its SIGHUP as "reload", and wrangler runs in a session
// of its own, so both would outlive us holding .nexus/pg and the port.
process.on('SIGHUP', () => void stopAll(0))

/**
 * Where the embedded PostgreSQL keeps its data: `.nexus/pg`, unless we are root in a checkout the
 * `postgres` user cannot enter (under /root, say). Then a directory of this checkout's own under
 * /var/lib, which it can.
 */
function devDataDir(): string {
  const local = `${root}.nexus/pg`
  if (serverCanReach(local)) return local
  const id = createHash('sha256').update(root).digest('hex').slice(0, 12)
  return `/var/lib/nexus-dev/${id}/pg`
}

/**
 * wrangler's local dev fires no cron triggers, and a deployed Nexus runs its cron every minute
 * (the boards' safety net, lost configuration pushes, stale party tickets, idle claims): fire it
 * at the top of each minute, with that minute as its scheduled time, so local runs as deployed.
 */
function startLocalCron(url: string): () => void {
  let timer: NodeJS.Timeout | undefined
  const fire = async (minute: number) => {
    try {
      const res = await fetch(`${url}/cdn-cgi/local/scheduled?cron=*+*+*+*+*&time=${minute}`)
      if (!res.ok) console.error(`[nexus] the cron's run failed: ${res.status}`)
    } catch (err) {
      console.error('[nexus] the cron could not be fired:', err)
    }
  }
  const next = () => {
    const minute = Math.floor(Date.now() / 60_000) * 60_000 + 60_000
    timer = setTimeout(() => {
      void fire(minute)
      next()
    }, minute - Date.now())
  }
  next()
  return () => clearTimeout(timer)
}

async function main(): Promise<void> {
  const devVars = readDevVars()
  const configured = (k: string) => process.env[k] ?? devVars[k]
  const vars: Record<string, string> = {}
  for (const name of SETTINGS) {
    const value = process.env[name]
    if (value !== undefined) vars[name] = value
  }
  const busy = await portProblem(port)
  if (busy) {
    console.error(`[nexus] ${busy}`)
    return stopAll(1)
  }

  let databaseUrl = configured('DATABASE_URL')
  let relay = configured('NEON_LOCAL_RELAY')
  if (!databaseUrl) {
    mkdirSync(`${root}.nexus`, { recursive: true })
    const dataDir = devDataDir()
    const pg = await startPostgres({ kind: 'embedded', dataDir, persistent: true })
    stops.push(() => pg.stop())
    const neonRelay = await startNeonRelay({ postgresPort: pg.port })
    stops.push(() => neonRelay.close())
    databaseUrl = pg.url
    relay = `127.0.0.1:${neonRelay.port}`
    vars.DATABASE_URL = databaseUrl
    vars.NEON_LOCAL_RELAY = relay
    console.log(
      `[nexus] embedded PostgreSQL on 127.0.0.1:${pg.port} (data in ${dataDir}), Neon relay on ${relay}`,
    )
  }
  if (configured('DATABASE_URL')) {
    // Often exported by a shell for another project: say which database this run migrates.
    console.log(
      `[nexus] DATABASE_URL from ${process.env.DATABASE_URL ? 'the environment' : '.dev.vars'}: ${describeDatabase(databaseUrl)}`,
    )
  }
  await runMigrations({ databaseUrl, relay })
  console.log(`[nexus] migrations applied to ${describeDatabase(databaseUrl)}`)

  const defaultAdminKey = !configured('ADMIN_KEY')
  if (defaultAdminKey) vars.ADMIN_KEY = 'dev-admin-key'
  if (!configured('AUTH_SECRET')) vars.AUTH_SECRET = 'dev-auth-secret-change-me-in-production'
  if (!configured('GUEST_AUTH')) vars.GUEST_AUTH = 'on'
  console.log(
    `[nexus] admin key: ${defaultAdminKey ? 'dev-admin-key (default)' : 'from .dev.vars/env'}; ` +
      `Redis: ${configured('UPSTASH_REDIS_REST_URL') ? 'on' : 'off (Cache API only)'}`,
  )

  const wrangler = startWranglerDev({ port, vars })
  stops.push(() => wrangler.stop())
  wrangler.ready.then(
    () => {
      console.log(`[nexus] serving on ${wrangler.url} (Ctrl-C stops everything)`)
      const stopCron = startLocalCron(wrangler.url)
      stops.push(async () => stopCron())
    },
    async (err: unknown) => {
      // Exited early (its own output says why), or never answered: nothing is served.
      console.error('[nexus] dev failed to start:', err instanceof Error ? err.message : err)
      await stopAll(1)
    },
  )
  const child = wrangler.child
  // A signal's end (code null) is a failure unless we sent it (stopAll exits first then).
  child.once('exit', (code) => void stopAll(code ?? 1))
}

main().catch(async (err: unknown) => {
  console.error('[nexus] dev failed to start:', errorMessage(err))
  await stopAll(1)
})
