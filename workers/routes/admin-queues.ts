import { z } from '@hono/zod-openapi'
import { log, errorFields } from '../lib/log.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { ResourceId } from '../lib/fields.ts'
import { getSql, LOCK_NOT_AVAILABLE, pgErrorCode } from '../db/client.ts'
import type { Env } from '../env.ts'
import { isoUtc } from '../db/iso-time.ts'
import { IdPageQueryWithStatus, idPage } from './id-page.ts'
import { ApiError } from '../lib/problem.ts'
import { versionPastOverrule } from '../lib/config-push.ts'
import { IfMatchHeader, preconditionFailed, readIfMatch, versionTag } from '../lib/preconditions.ts'
import { getRules, rulesNames } from '../core/rules/index.ts'
import {
  advanceQueueVersion,
  deleteQueueConfig,
  disconnectGraceMs,
  loadQueueConfig,
  markQueuePushed,
  normalizeQueueConfig,
  QueueConfigInput,
  saveQueueConfig,
  type QueueDeletion,
} from '../matchmaking/config.ts'
import { poolStub } from '../matchmaking/stub.ts'
import { unknownQueues } from '../matchmaking/unknown-queues.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { within } from '../lib/within.ts'
import { resultsBoardRefusal } from '../leaderboards/config-store.ts'

export const adminQueues = newRouter()

// `paused` is what an admin set; a queue on rules a deploy removed takes no joins either, and an
// operator reading the listing must see which.
const RULES_KNOWN =
  'Whether this deployment has the queue’s rules: when false, the queue takes no joins (as if ' +
  'paused) until a PUT points it at rules it has'

const listRoute = createRoute({
  method: 'get',
  path: '/',
  summary: 'Every queue, a page at a time in id order',
  description:
    'For operators: each queue’s id, rules, regions, whether it is paused, and its configuration ' +
    'version (the whole configuration is `GET /v1/admin/queues/:queue`). Pass `next` as `after` ' +
    'for the page after. `status=deleted` lists the deleted queues instead, each with when it was ' +
    'deleted (`deletedAt`).',
  middleware: [requireAdmin()] as const,
  request: { query: IdPageQueryWithStatus('queues (paused ones included)') },
  responses: {
    200: {
      description: 'A page of queues',
      content: {
        'application/json': {
          schema: z.object({
            queues: z.array(
              z.object({
                id: z.string(),
                rules: z.string(),
                regions: z.array(z.string()),
                paused: z.boolean(),
                rulesKnown: z.boolean().openapi({ description: RULES_KNOWN }),
                version: z.number().int(),
                updatedAt: z.string(),
                deletedAt: z.string().nullable(),
              }),
            ),
            next: z.string().nullable().openapi({ description: 'More queues after this id' }),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 422),
  },
})

adminQueues.openapi(listRoute, async (c) => {
  const { after, limit, status } = c.req.valid('query')
  const rows = (await getSql(c.env).query(
    `select id, config->>'rules' as rules, config->'regions' as regions,
            coalesce((config->>'paused')::boolean, false) as paused, version,
            ${isoUtc('updated_at')} as updated_at,
            ${isoUtc('deleted_at')} as deleted_at
       from queues where id > $1 and (deleted_at is not null) = $3 order by id limit $2`,
    [after ?? '', limit + 1, status === 'deleted'],
  )) as {
    id: string
    rules: string
    regions: string[]
    paused: boolean
    version: number
    updated_at: string
    deleted_at: string | null
  }[]
  const { page, next } = idPage(rows, limit)
  return c.json(
    {
      queues: page.map((r) => ({
        id: r.id,
        rules: r.rules,
        regions: r.regions,
        paused: r.paused,
        rulesKnown: getRules(r.rules) !== undefined,
        version: r.version,
        updatedAt: r.updated_at,
        deletedAt: r.deleted_at,
      })),
      next,
    },
    200,
  )
})

// `tickets` would shadow /v1/matchmaking/tickets/:ticketId.
const QueueId = ResourceId.refine((q) => q !== 'tickets', '"tickets" is reserved')

const QueueParam = z.object({ queue: QueueId })

const StoredQueue = z
  .object({
    id: z.string(),
    config: z.object({
      teams: z.number().int(),
      teamSize: z.number().int(),
      rules: z.string().openapi({ enum: [...rulesNames] }),
      rulesOptions: z.unknown().optional(),
      maxRatingGap: z.number(),
      widenPerSecond: z.number(),
      maxWidenedGap: z.number().optional(),
      regions: z.array(z.string()),
      maxPartySize: z.number().int(),
      ticketTtlSeconds: z.number().int(),
      disconnectGraceSeconds: z.number().int(),
      leaderboardId: z.string().nullable(),
      paused: z.boolean().openapi({ description: 'Out of play: no waiting tickets, no joins' }),
    }),
    version: z.number().int(),
    rulesKnown: z.boolean().openapi({ description: RULES_KNOWN }),
  })
  .openapi('Queue')

const putRoute = createRoute({
  method: 'put',
  path: '/{queue}',
  summary: 'Create or update a matchmaking queue',
  description:
    'Stored in Neon, then pushed to the pool of every region the queue has had. Waiting tickets ' +
    'keep their join time and time-to-live and are matched under the new settings at once; a ' +
    'party that no longer fits a team, and tickets in a region taken out, are cancelled ' +
    '(`queue_changed`). A pool that missed the push picks the new version up with its next join, ' +
    'and from the every-minute cron, which pushes again to every region that has not acknowledged it. ' +
    'A deleted queue is made again (201); not, though, without a region still owed its deletion ' +
    '(409 `unpushedRegions`, Retry-After: 60, until the cron has told that pool). The answer’s ' +
    '`ETag` is the version saved; with `If-Match`, a queue changed meanwhile (by another admin, ' +
    'say) is not overwritten: 412.',
  middleware: [requireAdmin()] as const,
  request: {
    params: QueueParam,
    headers: z.object({ 'if-match': IfMatchHeader }),
    body: { content: { 'application/json': { schema: QueueConfigInput } }, required: true },
  },
  responses: {
    200: { description: 'Updated', content: { 'application/json': { schema: StoredQueue } } },
    201: { description: 'Created', content: { 'application/json': { schema: StoredQueue } } },
    ...problemResponses(400, 401, 403, 409, 412, 413, 415, 422, 503),
  },
})

adminQueues.openapi(putRoute, async (c) => {
  const { queue } = c.req.valid('param')
  const config = normalizeQueueConfig(c.req.valid('json'))
  const ifMatch = readIfMatch(c.req.valid('header')['if-match'], c.req.header('if-match'))
  const saved = await saveQueueConfig(c.env, queue, config, ifMatch)
  if (saved && 'preconditionFailed' in saved) throw preconditionFailed('queue', saved.version)
  if (saved && 'retireOwed' in saved) {
    throw new ApiError(
      'conflict',
      `Queue '${queue}' was deleted and its regions ${saved.retireOwed.join(', ')} have not been told yet (the cron tells them within a minute): make it again after`,
      { unpushedRegions: saved.retireOwed },
      { 'retry-after': '60' },
    )
  }
  // A mistyped board, or one whose bounds refuse a win, would drop every result with only a log
  // line to show for it: not saved (judged under the board's lock), and here is why.
  if (!saved) {
    const why = (await resultsBoardRefusal(c.env, config.leaderboardId!)) ?? {
      message: 'changed as this queue was saved: try again',
    }
    throw new ApiError('validation', `Leaderboard '${config.leaderboardId}': ${why.message}`, {
      errors: [{ path: 'leaderboardId', message: why.message }],
    })
  }
  const { created, knownRegions } = saved
  let { version } = saved
  unknownQueues.forget(queue)
  // Neon is the record and every join carries the version, so a failed push only delays it.
  // Regions taken out hear it too, at this change or any later one (a push can fail, and such a
  // region gets no joins to learn it from): their waiting tickets leave with `queue_changed`.
  // A pool that does not answer in time is one not reached: left to the cron's push, as a
  // failed one is, so that a slow region does not hold up the answer (a PUT taking it out too).
  const push = () =>
    Promise.allSettled(
      knownRegions.map((region) =>
        within(
          poolStub(c.env, queue, region).configure(queue, region, config, version),
          POOL_CALL_MS,
          'config push',
        ),
      ),
    )
  let pushed = await push()
  // A pool of the version before says nothing of `inForce`: taken as running this push.
  const overruled = pushed.flatMap((p) =>
    p.status === 'fulfilled' && p.value.inForce === false ? [p.value.version] : [],
  )
  // A retry answered from the configuration in force saved no version of its own, which a
  // deletion since would have had to pass: deleted meanwhile, its pools refuse the push.
  // (A re-read that fails goes on as any overruled push does.)
  if (
    saved.unchanged &&
    overruled.length > 0 &&
    (await loadQueueConfig(c.env, queue).catch(() => true)) === null
  ) {
    throw preconditionFailed('queue', null)
  }
  if (overruled.length > 0) {
    // Another PUT's configuration in force (409), or Neon's count gone back: a version past the
    // pools', which they apply, and Neon and the pools agree again.
    version = await versionPastOverrule(queue, version, Math.max(...overruled), (from, to) =>
      advanceQueueVersion(c.env, queue, from, to),
    )
    pushed = await push()
  }
  const acknowledged: string[] = []
  pushed.forEach((p, i) => {
    // A pool that answered with another configuration in force (a version past this one) is
    // still owed it: the cron's push moves the version past the pool's, as this PUT's did.
    if (p.status === 'fulfilled' && p.value.inForce !== false) acknowledged.push(knownRegions[i]!)
    else if (p.status === 'rejected') {
      log('warn', 'queue config push failed', { queue, version, ...errorFields(p.reason) })
    }
  })
  // The regions left owed this version get it from the cron within a minute.
  await markQueuePushed(c.env, queue, version, acknowledged).catch((err: unknown) =>
    log('warn', 'queue config pushes not noted; the cron pushes again', {
      queue,
      version,
      ...errorFields(err),
    }),
  )
  c.header('etag', versionTag(version))
  return c.json(
    // A PUT names rules this deployment has (the schema allows no others).
    { id: queue, config: { ...config, paused: config.paused === true }, version, rulesKnown: true },
    created ? 201 : 200,
  )
})

const getRoute = createRoute({
  method: 'get',
  path: '/{queue}',
  summary: 'A queue’s stored configuration',
  middleware: [requireAdmin()] as const,
  request: { params: QueueParam },
  responses: {
    200: { description: 'The queue', content: { 'application/json': { schema: StoredQueue } } },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminQueues.openapi(getRoute, async (c) => {
  const { queue } = c.req.valid('param')
  const q = await loadQueueConfig(c.env, queue)
  if (!q) throw new ApiError('not-found', `No queue '${queue}'`)
  c.header('etag', versionTag(q.version))
  // A configuration saved before a field existed reads with that field's default.
  const config = {
    ...q.config,
    disconnectGraceSeconds: disconnectGraceMs(q.config) / 1000,
    paused: q.config.paused === true,
  }
  return c.json(
    { id: queue, config, version: q.version, rulesKnown: getRules(q.config.rules) !== undefined },
    200,
  )
})

const deleteRoute = createRoute({
  method: 'delete',
  path: '/{queue}',
  summary: 'Delete a matchmaking queue',
  description:
    'For a queue whose time is over (an event’s): pause it first (`paused: true` in its PUT), which ' +
    'cancels its waiting tickets. The deletion marks its configuration deleted in Neon: its joins ' +
    'and connects are 404, its settings and stats too once their caches turn (4 s, 2 s), the ' +
    'listings and the dashboard pass it over, and a board it named may be deleted. Sockets still ' +
    'open on its pools close (1000), except one on a match being made, which stays for its ' +
    '`match_found` (a `join` on it is answered `error` `invalid`); a pool not reached is told by ' +
    'the cron. Matches already ' +
    'made play on, and their sessions, results and history stay. A PUT makes it again under the ' +
    'id (201). Refused (409) while the queue is in play (`paused: false`: pause it first), while ' +
    'a region’s pool has not taken the pause (`unpushedRegions`, with Retry-After: the cron ' +
    'pushes it within a minute), and while a PUT holds it (`busy`, with Retry-After). A retry ' +
    'after a deletion that succeeded is 404.',
  middleware: [requireAdmin()] as const,
  request: { params: QueueParam },
  responses: {
    200: {
      description: 'Deleted',
      content: {
        'application/json': {
          schema: z.object({
            id: z.string(),
            deleted: z.literal(true),
            version: z.number().int().openapi({
              description: 'The version the deletion took; a queue made again takes a later one',
            }),
            deletedAt: z.string(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 409, 422, 503),
  },
})

adminQueues.openapi(deleteRoute, async (c) => {
  const { queue } = c.req.valid('param')
  let deletion = await deleteOrBusy(c.env, queue)
  if (deletion.outcome === 'unpushed') {
    // The pause has not reached every pool: one may still hold waiting tickets. Pushed now, and
    // asked again, rather than sending the operator away for the cron's minute.
    const { config, version, regions } = deletion
    const pushed = await Promise.allSettled(
      regions.map((region) =>
        within(
          poolStub(c.env, queue, region).configure(queue, region, config, version),
          POOL_CALL_MS,
          'pause push',
        ),
      ),
    )
    const acknowledged = regions.filter((_, i) => {
      const p = pushed[i]!
      return p.status === 'fulfilled' && p.value.inForce !== false
    })
    await markQueuePushed(c.env, queue, version, acknowledged)
    deletion = await deleteOrBusy(c.env, queue)
  }
  switch (deletion.outcome) {
    case 'gone':
      throw new ApiError('not-found', `No queue '${queue}'`)
    case 'in-play':
      throw new ApiError(
        'conflict',
        'The queue is in play: pause it first (a PUT with "paused": true cancels its waiting tickets)',
        { paused: false },
      )
    case 'unpushed':
      throw new ApiError(
        'conflict',
        `The pause has not reached these regions' pools yet (${deletion.regions.join(', ')}); the cron pushes it within a minute`,
        { unpushedRegions: deletion.regions },
        { 'retry-after': '60' },
      )
  }
  const { version, deletedAt, knownRegions } = deletion
  unknownQueues.remember(queue)
  // A pool not reached now is told by the cron within a minute (the deletion owes every region
  // it, in `unpushed_regions`, until each answers); meanwhile it refuses joins as paused.
  const retired = await Promise.allSettled(
    knownRegions.map((region) =>
      within(poolStub(c.env, queue, region).retire(version), POOL_CALL_MS, 'pool retire'),
    ),
  )
  retired.forEach((r, i) => {
    if (r.status === 'rejected') {
      log('warn', 'queue deleted; a pool not told yet (the cron tells it)', {
        queue,
        region: knownRegions[i],
        ...errorFields(r.reason),
      })
    }
  })
  // Told, applied or not (pushOwed in workers/scheduled.ts says why).
  const told = knownRegions.filter((_, i) => retired[i]!.status === 'fulfilled')
  await markQueuePushed(c.env, queue, version, told).catch((err: unknown) =>
    log('warn', 'queue deletion: pools told, not noted; the cron tells them again', {
      queue,
      ...errorFields(err),
    }),
  )
  log('info', 'queue deleted', { queue, version })
  return c.json({ id: queue, deleted: true as const, version, deletedAt }, 200)
})

/**
 * A pool that does not answer a deletion's call within this: its pause push makes the deletion
 * 409 (`unpushedRegions`); its `retire` is logged and left to the cron.
 */
const POOL_CALL_MS = 5_000

/** deleteQueueConfig, with a row held past its lock timeout answered 409 `busy`. */
async function deleteOrBusy(env: Env, queue: string): Promise<QueueDeletion> {
  try {
    return await deleteQueueConfig(env, queue)
  } catch (err) {
    if (pgErrorCode(err) !== LOCK_NOT_AVAILABLE) throw err
    throw new ApiError(
      'conflict',
      'The queue is being changed (a PUT); retry in a few seconds',
      { busy: true },
      { 'retry-after': '5' },
    )
  }
}
