import { type OpenAPIHono, z } from '@hono/zod-openapi'
import { type Context, Hono } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { getSql } from '../db/client.ts'
import { authSecretProblem, identityProviderProblem } from '../lib/auth.ts'
import { renderFamilies } from '../lib/metric-families.ts'
import { clusterMetrics } from '../lib/metrics-flush.ts'
import { Problem, problemResponses } from '../lib/openapi.ts'
import { ApiError, problemBody } from '../lib/problem.ts'
import { getRedis } from '../lib/redis.ts'
import { requireMetricsReader } from '../middleware/auth.ts'
import { within } from '../lib/within.ts'
import { errorFields, log } from '../lib/log.ts'
import { DOCS_CSS, DOCS_HTML, DOCS_JS } from './docs-page.ts'
import { PAGE_HEADERS } from '../lib/page-headers.ts'
import migrationJournal from '../../migrations/meta/_journal.json'

export const ops = new Hono<AppEnv>()

const PROBE_TIMEOUT_MS = 2000

ops.get('/health', (c) => c.json({ status: 'ok' }))

type Check = 'up' | 'down' | 'not-configured'

/**
 * The newest migration this version was built with: `npm run db:migrate` records each one it
 * applies with its journal time (`when`) in drizzle.__drizzle_migrations.
 */
const NEWEST_MIGRATION = migrationJournal.entries[migrationJournal.entries.length - 1]!

/** PostgreSQL's SQLSTATE for a table that is not there. */
const UNDEFINED_TABLE = '42P01'

/**
 * Whether Postgres answers, and whether its schema has this version's newest migration: a
 * version deployed before its migrations (or onto a database never migrated) fails wherever it
 * touches what is not there yet, while `select 1` would call it ready. Newer migrations than this
 * version's are fine (they are applied before a deploy).
 */
async function probePostgres(c: Context<AppEnv>): Promise<{ check: Check; behind?: string }> {
  let newest: number | undefined
  const check = await probe('postgres', async () => {
    try {
      const [row] = (await getSql(c.env).query(
        'select max(created_at)::text as newest from drizzle.__drizzle_migrations',
      )) as { newest: string | null }[]
      newest = row?.newest == null ? 0 : Number(row.newest)
    } catch (err) {
      if ((err as { code?: string }).code !== UNDEFINED_TABLE) throw err
      newest = 0
    }
  })
  if (check === 'up' && newest! < NEWEST_MIGRATION.when) {
    return { check, behind: NEWEST_MIGRATION.tag }
  }
  return { check }
}

async function probe(name: string, run: () => Promise<unknown>): Promise<Check> {
  try {
    await within(run(), PROBE_TIMEOUT_MS, `${name} probe`)
    return 'up'
  } catch (err) {
    // /ready says only "down": the cause (a role that may not read the migrations table, a
    // timeout, a refused password) is for the log. At most once a second per isolate, as the
    // checks are.
    log('warn', 'readiness check failed', { check: name, ...errorFields(err) })
    return 'down'
  }
}

/**
 * How long an isolate reuses its last readiness checks: `/ready` needs no credential, and each
 * check is a Neon query and a Redis command, which a loop of requests must not multiply. A
 * monitor polling every few seconds still sees every change within a second.
 */
const CHECKS_REUSED_MS = 1_000
interface ReadyChecks {
  at: number
  checks: { postgres: Check; redis: Check }
  schemaBehind: string | undefined
}
const recentChecks = new Map<string, ReadyChecks>()
/**
 * Checks under way, by configuration: requests arriving while one runs wait for it. Reusing only
 * finished checks let a burst of requests each start a Neon query and a Redis write of its own.
 * Exported for tests, which put a lost check in it; nothing else writes it.
 * @internal
 */
export const checksUnderWay = new Map<string, { started: number; checks: Promise<ReadyChecks> }>()
/**
 * How long a check may be under way: its probes give up after PROBE_TIMEOUT_MS. One older never
 * settles: the runtime cancels what a request started when its client goes (a monitor that gives
 * up first), and a check the request began is dropped with it, `waitUntil` or not (past 30 s).
 */
const CHECK_LOST_MS = PROBE_TIMEOUT_MS + 1_000

/** The check under way for `key`, or a new one in its place when there is none or it was lost. */
function sharedCheck(
  c: Context<AppEnv>,
  key: string,
): { started: number; checks: Promise<ReadyChecks> } {
  const underWay = checksUnderWay.get(key)
  if (underWay && Date.now() - underWay.started < CHECK_LOST_MS) return underWay
  const started = { started: Date.now(), checks: runChecks(c) }
  started.checks = started.checks.finally(() => {
    if (checksUnderWay.get(key) === started) checksUnderWay.delete(key)
  })
  checksUnderWay.set(key, started)
  // Kept running past this request's end for those waiting on it (a client that gives up).
  c.executionCtx.waitUntil(started.checks.catch(() => undefined))
  return started
}

async function runChecks(c: Context<AppEnv>): Promise<ReadyChecks> {
  const redis = getRedis(c.env)
  const [postgres, redisCheck] = await Promise.all([
    c.env.DATABASE_URL
      ? probePostgres(c)
      : Promise.resolve({ check: 'not-configured' as const, behind: undefined }),
    redis
      ? probe('redis', async () => {
          await redis.probe(PROBE_TIMEOUT_MS)
        })
      : Promise.resolve<Check>('not-configured'),
  ])
  // Dated when they finished: a probe that timed out took 2 s, and dated from its start it
  // would be stale at once, each request probing anew while a dependency is down.
  return {
    at: Date.now(),
    checks: { postgres: postgres.check, redis: redisCheck },
    schemaBehind: postgres.behind,
  }
}

/**
 * Ready when Postgres answers, and Redis too if it is configured. Redis being down makes Nexus
 * slower, not unavailable, but an operator wants to see it here: it reports 503 as well, with
 * each dependency named, and `checkedAt`, when the checks finished (at most a second before).
 */
ops.get('/ready', async (c) => {
  // The token too: another one for the same database may refuse what this one may do.
  const key = `${c.env.DATABASE_URL ?? ''} ${c.env.UPSTASH_REDIS_REST_URL ?? ''} ${c.env.UPSTASH_REDIS_REST_TOKEN ?? ''}`
  let recent = recentChecks.get(key)
  if (!recent || !(Date.now() - recent.at < CHECKS_REUSED_MS)) {
    const underWay = sharedCheck(c, key)
    // A wait on a check lost since (above) ends: the first to find it so starts the next shared
    // one, and every waiter takes that (never a check each, whatever the burst).
    recent = await within(underWay.checks, CHECK_LOST_MS, 'readiness checks').catch(() =>
      within(sharedCheck(c, key).checks, CHECK_LOST_MS, 'readiness checks'),
    )
    recentChecks.delete(key)
    recentChecks.set(key, recent)
    // One key per configuration: a handful at most outside tests.
    if (recentChecks.size > 16) recentChecks.delete(recentChecks.keys().next().value!)
  }
  const { checks, at: checkedAt, schemaBehind } = recent
  const problems = Object.entries(checks).flatMap(([name, v]) =>
    v === 'down'
      ? [name === 'redis' ? 'redis unreachable or refusing writes' : `${name} unreachable`]
      : name === 'postgres' && v === 'not-configured'
        ? ['postgres not configured (DATABASE_URL)']
        : [],
  )
  if (schemaBehind !== undefined) {
    problems.push(
      `postgres schema behind this version: ${schemaBehind} not applied (npm run db:migrate)`,
    )
  }
  // Without a secret it can sign with, every token route answers 503: not ready either; nor
  // with identity provider settings that refuse every provider token.
  const secret = authSecretProblem(c.env)
  if (secret !== null) problems.push(secret)
  const provider = identityProviderProblem(c.env)
  if (provider !== null) problems.push(provider)
  if (!c.env.ADMIN_KEY) problems.push('ADMIN_KEY is not configured')
  c.header('cache-control', 'no-store')
  if (problems.length === 0) return c.json({ status: 'ready', checks, checkedAt })
  return c.json(
    {
      ...problemBody('unavailable', `Not ready: ${problems.join(', ')}`),
      requestId: c.get('requestId'),
      checks,
      checkedAt,
    },
    503,
    { 'content-type': 'application/problem+json' },
  )
})

// Counts per route, queue and board say a lot about a game: not for the open internet.
ops.get('/metrics', requireMetricsReader(), async (c) => {
  const { families, scope } = await clusterMetrics(c.env)
  c.header('cache-control', 'no-store')
  // One isolate's totals under the cluster's names would read as counter resets, and the next
  // full scrape as a jump of the whole cluster's count: a failed scrape (a gap) is honest.
  if (scope === 'isolate') {
    throw new ApiError('unavailable', 'The metrics hub is unreachable; the scrape is not served')
  }
  return c.body(renderFamilies(families), 200, {
    'content-type': 'text/plain; version=0.0.4; charset=utf-8',
    'nexus-metrics-scope': scope,
  })
})

ops.get('/docs', (c) => c.html(DOCS_HTML, 200, PAGE_HEADERS))
ops.get('/docs/app.js', (c) =>
  c.body(DOCS_JS, 200, { ...PAGE_HEADERS, 'content-type': 'text/javascript; charset=utf-8' }),
)
ops.get('/docs/app.css', (c) =>
  c.body(DOCS_CSS, 200, { ...PAGE_HEADERS, 'content-type': 'text/css; charset=utf-8' }),
)

const Check = z.enum(['up', 'down', 'not-configured'])
const Checks = z.object({ postgres: Check, redis: Check })

/**
 * Describes the operational routes in the OpenAPI document. They are plain Hono routes (no
 * request to validate), so nothing registers them otherwise.
 */
export function documentOps(app: OpenAPIHono<AppEnv>): void {
  const registry = app.openAPIRegistry
  registry.registerPath({
    method: 'get',
    path: '/health',
    summary: 'Liveness: the Worker answers (no dependency is asked)',
    responses: {
      200: {
        description: 'Alive',
        content: { 'application/json': { schema: z.object({ status: z.literal('ok') }) } },
      },
      ...problemResponses(),
    },
  })
  registry.registerPath({
    method: 'get',
    path: '/ready',
    summary: 'Readiness: PostgreSQL answers, and Redis when configured',
    description: `Each check has ${PROBE_TIMEOUT_MS / 1000} s. Redis down makes Nexus slower, not unavailable, but is reported (503) so an operator sees it. An isolate reuses its checks for ${CHECKS_REUSED_MS / 1000} s (\`checkedAt\`, ms since the epoch, says when they finished).`,
    responses: {
      200: {
        description: 'Ready',
        content: {
          'application/json': {
            schema: z.object({ status: z.literal('ready'), checks: Checks, checkedAt: z.number() }),
          },
        },
      },
      ...problemResponses(),
      503: {
        description: 'Not ready, naming each dependency',
        content: {
          'application/problem+json': {
            schema: Problem.extend({ checks: Checks, checkedAt: z.number() }),
          },
        },
      },
    },
  })
  registry.registerPath({
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus metrics of the whole deployment (text format 0.0.4)',
    description:
      'With the metrics token (METRICS_TOKEN) or the admin key. 503 while the metrics hub cannot ' +
      'be reached: a gap, never one isolate’s counts read as the whole.',
    security: [{ bearer: [] }],
    responses: {
      200: { description: 'The metrics', content: { 'text/plain': { schema: z.string() } } },
      ...problemResponses(401, 403),
    },
  })
}
