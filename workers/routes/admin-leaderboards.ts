import { z } from '@hono/zod-openapi'
import { normalisedCycle } from '../core/cycle.ts'
import { NOT_STORABLE_REASON, storableText } from '../core/rules/json.ts'
import {
  MATCH_WIN,
  shownConfig,
  withConfigDefaults,
  type LeaderboardConfig,
} from '../core/leaderboard.ts'
import { getSql } from '../db/client.ts'
import { isoUtc } from '../db/iso-time.ts'
import {
  advanceLeaderboardVersion,
  loadLeaderboardConfig,
  markConfigPushed,
  queuesNaming,
  saveLeaderboardConfig,
} from '../leaderboards/config-store.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { unknownBoards } from '../leaderboards/unknown-boards.ts'
import { errorFields, log } from '../lib/log.ts'
import { createRoute, decimalInt, newRouter, problemResponses } from '../lib/openapi.ts'
import { IdempotencyKey, PlayerId, ResourceId } from '../lib/fields.ts'
import { sha256Hex } from '../lib/hash.ts'
import { ApiError } from '../lib/problem.ts'
import { overruled, versionPastOverrule } from '../lib/config-push.ts'
import { IfMatchHeader, preconditionFailed, readIfMatch, versionTag } from '../lib/preconditions.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { hasBody } from '../middleware/json-body.ts'
import { canonicalJson } from '../lib/canonical-json.ts'
import { accountBan, type AccountBan } from '../players/bans.ts'
import { MAX_BANS } from '../../durable-objects/leaderboard.ts'
import {
  CycleInfo,
  CycleParam,
  LeaderboardConfigInput,
  maxEntriesOrDefault,
  LeaderboardConfigStored,
  StoredJsonObject,
  ImportEntry,
  Limit,
} from './leaderboard-schemas.ts'
import { IdPageQueryWithStatus, idPage } from './id-page.ts'

export const adminLeaderboards = newRouter()

const listRoute = createRoute({
  method: 'get',
  path: '/',
  summary: 'Every board, a page at a time in id order',
  description:
    'For operators: each board’s id, name, schedule, whether paused and configuration version (the whole ' +
    'configuration is one `GET /v1/leaderboards/:id` away). Pass `next` as `after` for the page after. ' +
    '`status=deleted` lists the deleted boards instead, each with when it was deleted (`deletedAt`).',
  middleware: [requireAdmin()] as const,
  request: { query: IdPageQueryWithStatus('boards') },
  responses: {
    200: {
      description: 'A page of boards',
      content: {
        'application/json': {
          schema: z.object({
            boards: z.array(
              z.object({
                id: z.string(),
                name: z.string().nullable(),
                cycle: z
                  .unknown()
                  .openapi({ description: 'The schedule: `{every}`, `{cron}` or null' }),
                paused: z.boolean(),
                version: z.number().int(),
                updatedAt: z.string(),
                deletedAt: z.string().nullable(),
              }),
            ),
            next: z.string().nullable().openapi({ description: 'More boards after this id' }),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 422),
  },
})

adminLeaderboards.openapi(listRoute, async (c) => {
  const { after, limit, status } = c.req.valid('query')
  const rows = (await getSql(c.env).query(
    `select id, config->>'name' as name, cycle, version,
            coalesce((config->>'paused')::boolean, false) as paused, ${isoUtc('updated_at')} as updated_at,
            ${isoUtc('deleted_at')} as deleted_at
       from leaderboards where id > $1 and (deleted_at is not null) = $3 order by id limit $2`,
    [after ?? '', limit + 1, status === 'deleted'],
  )) as {
    id: string
    name: string | null
    cycle: unknown
    paused: boolean
    version: number
    updated_at: string
    deleted_at: string | null
  }[]
  const { page, next } = idPage(rows, limit)
  return c.json(
    {
      boards: page.map((r) => ({
        id: r.id,
        name: r.name,
        cycle: r.cycle ?? null,
        paused: r.paused,
        version: r.version,
        updatedAt: r.updated_at,
        deletedAt: r.deleted_at,
      })),
      next,
    },
    200,
  )
})

const BoardParam = z.object({ id: ResourceId })

const BoardSaved = z.object({
  id: z.string(),
  config: LeaderboardConfigStored,
  cycle: CycleInfo,
  version: z.number().int(),
})

const CloseStatus = z
  .object({
    cycle: z.number().int(),
    state: z.enum(['archiving', 'purging', 'done']),
    entries: z.number().int(),
    archived: z.number().int(),
    attempts: z.number().int(),
    nextAttemptAt: z.number().nullable(),
    lastError: z.string().nullable(),
    reason: z.string(),
  })
  .openapi('CloseStatus')

const StoredBoard = z.object({
  id: z.string(),
  config: LeaderboardConfigStored,
  version: z.number().int(),
})

const getRoute = createRoute({
  method: 'get',
  path: '/{id}',
  summary: 'A leaderboard’s stored configuration',
  description:
    'As Neon holds it, with its `version` (also the `ETag`, for a `PUT` with `If-Match`). ' +
    '`GET /v1/leaderboards/:id` shows the configuration the board applies, cached for seconds.',
  middleware: [requireAdmin()] as const,
  request: { params: BoardParam },
  responses: {
    200: { description: 'The board', content: { 'application/json': { schema: StoredBoard } } },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminLeaderboards.openapi(getRoute, async (c) => {
  const { id } = c.req.valid('param')
  const board = await loadLeaderboardConfig(c.env, id)
  if (!board) throw new ApiError('not-found', `No leaderboard '${id}'`)
  const config = withConfigDefaults(board.config)
  c.header('etag', versionTag(board.version))
  return c.json({ id, config: shownConfig(config), version: board.version }, 200)
})

const putRoute = createRoute({
  method: 'put',
  path: '/{id}',
  summary: 'Create or update a leaderboard',
  description:
    'Stored in Neon, then pushed to the board. On a live board, bounds, rate and metadata limits and ' +
    'rewards apply at once; a new cycle schedule moves the current cycle’s end to its next boundary; ' +
    'sortOrder and operator take effect at the next cycle (at once in a cycle nobody has entered yet). ' +
    'Bounds that refuse a win (score 1, subscore 0) are refused (409, `queues`) while a queue sends ' +
    'its results to the board. The answer’s `ETag` is the version saved; with `If-Match`, a ' +
    'board changed meanwhile (by another admin, say) is not overwritten: 412.',
  middleware: [requireAdmin()] as const,
  request: {
    params: BoardParam,
    headers: z.object({ 'if-match': IfMatchHeader }),
    body: { content: { 'application/json': { schema: LeaderboardConfigInput } }, required: true },
  },
  responses: {
    200: {
      description: 'Updated',
      content: {
        'application/json': {
          schema: BoardSaved,
        },
      },
    },
    201: {
      description: 'Created',
      content: {
        'application/json': {
          schema: BoardSaved,
        },
      },
    },
    ...problemResponses(400, 401, 403, 409, 412, 413, 415, 422, 503),
  },
})

adminLeaderboards.openapi(putRoute, async (c) => {
  const { id } = c.req.valid('param')
  const { paused, serverScoresOnly, ...body } = c.req.valid('json')
  const ifMatch = readIfMatch(c.req.valid('header')['if-match'], c.req.header('if-match'))
  // Flags are kept only while true: a configuration without them has no such fields, as before
  // they existed, and compares unchanged.
  const config: LeaderboardConfig = {
    ...body,
    // As the schedule reads it: single spaces in a cron, a zone in the case the runtime spells it.
    cycle: normalisedCycle(body.cycle),
    maxEntries: maxEntriesOrDefault(body),
    ...(paused === true ? { paused: true as const } : {}),
    ...(serverScoresOnly === true ? { serverScoresOnly: true as const } : {}),
  }
  // Neon first: it is the record. If pushing to the board then fails, the request fails and a
  // retry pushes it again; a board that has never had a config fetches it from Neon on its
  // first call. (A board that has one keeps it until a push succeeds.) The push carries Neon's
  // version, so of two PUTs racing, the board keeps the later one whatever order they arrive in.
  const saved = await saveLeaderboardConfig(c.env, id, config, ifMatch)
  if ('preconditionFailed' in saved) throw preconditionFailed('leaderboard', saved.version)
  // Bounds that refuse a win, while queues send their results here: every one would be dropped.
  if ('namedByQueues' in saved) {
    const queues = await queuesNaming(c.env, id)
    throw new ApiError(
      'conflict',
      `Queues send their results to this board (${queues.join(', ') || 'one did as this was saved'}), and these bounds ` +
        `refuse a win (score ${MATCH_WIN.score}, subscore ${MATCH_WIN.subscore}): point ` +
        'them elsewhere first',
      { queues },
    )
  }
  const { created } = saved
  let { version } = saved
  unknownBoards.forget(id)
  const push = async () => {
    const answer = await boardStub(c.env, id).configure(id, config, version, saved.lastCycle)
    // Refused: a deletion of the board's not yet settled with Neon (503 while out of reach).
    if ('problem' in answer) {
      throw new ApiError(answer.problem, answer.detail, answer.extensions ?? {}, answer.headers)
    }
    const { configVersion, inForce, ...cycle } = answer
    // A board of the version before answers neither: it applied the push or ignored an older
    // one, as before, and is taken at its word.
    return { held: configVersion ?? version, inForce: inForce !== false, cycle }
  }
  let pushed: Awaited<ReturnType<typeof push>>
  try {
    pushed = await push()
  } catch (err) {
    // A retry answered from the configuration in force saved no version of its own, which a
    // deletion since would have had to pass: deleted meanwhile, its board refuses the push.
    // (A re-read that fails leaves the push's own error to answer.)
    if (saved.unchanged && (await loadLeaderboardConfig(c.env, id).catch(() => true)) === null) {
      throw preconditionFailed('leaderboard', null)
    }
    throw err
  }
  const { held, inForce } = pushed
  let { cycle } = pushed
  if (!inForce) {
    // Another PUT's configuration in force (409), or Neon's count gone back: a version past it.
    version = await versionPastOverrule(id, version, held, (from, to) =>
      advanceLeaderboardVersion(c.env, id, from, to),
    )
    const again = await push()
    // Past every version the board held a moment ago, and still not in force: a PUT saved since
    // (a version past this one in Neon too) reached the board first, and its configuration runs.
    if (!again.inForce) throw overruled(id)
    cycle = again.cycle
  }
  // Unmarked (this push failed, or the Worker stopped here), the cron pushes it again, which
  // the board ignores once it has it: a failed mark must not fail a PUT already in force.
  try {
    await markConfigPushed(c.env, id, version)
  } catch (err) {
    log('warn', 'config push not marked', { board: id, version, ...errorFields(err) })
  }
  c.header('etag', versionTag(version))
  return c.json({ id, config: shownConfig(config), cycle, version }, created ? 201 : 200)
})

const deleteRoute = createRoute({
  method: 'delete',
  path: '/{id}',
  summary: 'Delete a leaderboard',
  description:
    'Marks the board’s configuration deleted in Neon and removes everything its object stores: it takes no more scores, its ' +
    'reads are 404 and the cron no longer closes it. Closed cycles’ archives, rewards and players’ history ' +
    'stay in Neon and readable; a board created again under the id numbers its cycles after them. ' +
    'Refused (409) while a queue sends its results to the board (`queues`), while a closed cycle is still ' +
    'being archived (`closing`, with Retry-After), while the live cycle holds entries on a board that is ' +
    'not paused (`entries`: pause it first, and they are discarded, or close the cycle), while it writes ' +
    'to Neon (`busy`, with Retry-After), and when a PUT saved a configuration during the deletion ' +
    '(`version`). A retry after a deletion that succeeded is 404.',
  middleware: [requireAdmin()] as const,
  request: { params: BoardParam },
  responses: {
    200: {
      description: 'Deleted',
      content: {
        'application/json': {
          schema: z.object({
            id: z.string(),
            deleted: z.literal(true),
            discardedEntries: z
              .number()
              .int()
              .openapi({ description: 'Entries of the live cycle (a paused board’s) discarded' }),
            lastCycle: z.number().int().openapi({
              description:
                'The last cycle number the board used; a board made again starts after the archived ones',
            }),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 409, 422, 500, 503),
  },
})

adminLeaderboards.openapi(deleteRoute, async (c) => {
  const { id } = c.req.valid('param')
  const r = await boardStub(c.env, id).deleteBoard(id)
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  unknownBoards.remember(id)
  return c.json(
    { id, deleted: true as const, discardedEntries: r.discardedEntries, lastCycle: r.lastCycle },
    200,
  )
})

const closeRoute = createRoute({
  method: 'post',
  path: '/{id}/close',
  summary: 'Close the current cycle now',
  description:
    'Ends the current cycle at once and starts the next, which runs to the following boundary. ' +
    'The closed cycle is archived to Neon in the background (see the cycle status). Calling it while an ' +
    'archive waits out a retry backoff retries at once. A cycle whose boundary has passed (its alarm ' +
    'late) is closed by its schedule, and that is the answer: the cycle begun since is not closed too. ' +
    'To retry safely, name the `cycle` or send an `Idempotency-Key`: a retry then answers with the ' +
    'close the first call made (`replayed: true` with a key) and closes nothing more; without either, ' +
    'a retry after the first call got through closes the next cycle.',
  middleware: [requireAdmin()] as const,
  request: {
    params: BoardParam,
    headers: z.object({
      'idempotency-key': IdempotencyKey.optional().openapi({
        description: 'Unique per close; a retry sends the same key (remembered for 24 h)',
      }),
    }),
    body: {
      required: false,
      content: {
        'application/json': {
          schema: z
            .object({
              cycle: z.number().int().min(1).max(2_000_000_000).optional().openapi({
                description:
                  'Close only this cycle, and only if it is still current (safe to retry)',
              }),
            })
            .strict(),
        },
      },
    },
  },
  responses: {
    202: {
      description: 'Closed; archiving',
      content: {
        'application/json': {
          schema: z.object({
            closed: CloseStatus,
            current: CycleInfo,
            replayed: z.boolean().openapi({
              description: 'True when this answers a retry of a keyed close',
            }),
          }),
        },
      },
    },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422),
  },
})

adminLeaderboards.openapi(closeRoute, async (c) => {
  const { id } = c.req.valid('param')
  // The body is optional; a streamed one (no Content-Length) names its cycle all the same.
  const body = hasBody(c) ? c.req.valid('json') : {}
  const key = c.req.valid('header')['idempotency-key']
  const r = await boardStub(c.env, id).close(id, {
    retryNow: true,
    ...(body.cycle ? { cycle: body.cycle } : {}),
    key:
      key === undefined
        ? null
        : { key, requestHash: await sha256Hex(canonicalJson(['close', id, body.cycle ?? null])) },
  })
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  return c.json({ closed: r.closed, current: r.current, replayed: r.replayed }, 202)
})

const statusRoute = createRoute({
  method: 'get',
  path: '/{id}/cycles/{cycle}',
  summary: "A closed cycle's archive progress",
  description:
    'The board keeps a close’s record for 35 days after its archive finished (pruned as later ' +
    'closes finish); an older cycle is 404 here, its standings and rewards being in Neon (`GET /v1/leaderboards/{id}/cycles/{cycle}/top`, ' +
    '`GET /v1/admin/leaderboards/{id}/cycles/{cycle}/rewards`).',
  middleware: [requireAdmin()] as const,
  request: {
    params: CycleParam,
  },
  responses: {
    200: { description: 'Progress', content: { 'application/json': { schema: CloseStatus } } },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminLeaderboards.openapi(statusRoute, async (c) => {
  const { id, cycle } = c.req.valid('param')
  const status = await boardStub(c.env, id).closeProgress(id, cycle)
  if (status && 'ok' in status) {
    throw new ApiError(status.problem, status.detail, status.extensions, status.headers)
  }
  if (!status) {
    // A done close's record is kept CLOSE_RECORD_KEPT_MS; an older cycle's standings are Neon's.
    throw new ApiError(
      'not-found',
      `Cycle ${cycle} of '${id}' has not closed, or its close record is over 35 days old (a closed cycle's standings: GET /v1/leaderboards/${id}/cycles/${cycle}/top)`,
    )
  }
  return c.json(status, 200)
})

const importRoute = createRoute({
  method: 'post',
  path: '/{id}/entries',
  summary: 'Import standings into the current cycle',
  description:
    'Sets up to 500 players’ standings at once, each replacing the player’s current one (as the `set` ' +
    'operator does), in one transaction; the body is at most 64 KiB like every request (with ' +
    'metadata, fewer entries fit: 413 past it). For migrating a board from another system, or setting ' +
    'standings outright; not for a game server’s results, which go through `POST /v1/leaderboards/{id}/scores` ' +
    'with the admin key: an import ignores the board’s `best` or `incr` operator, its bans and its pause. Send an `Idempotency-Key` to make retries safe: a retry gets the first ' +
    'answer with `replayed: true` and changes nothing (without one, a batch sent again is applied ' +
    'again, undoing what those players submitted since, or landing in a new cycle); the same key with ' +
    'another batch is 422 idempotency-key-reused. Keys are remembered for 24 h. A batch whose new ' +
    "players would take the cycle past the board's `maxEntries` is 409 conflict (`limit`), all of it.",
  middleware: [requireAdmin()] as const,
  request: {
    params: BoardParam,
    headers: z.object({
      'idempotency-key': IdempotencyKey.optional().openapi({
        description: 'Unique per batch; a retry sends the same key',
      }),
    }),
    body: {
      required: true,
      content: {
        'application/json': {
          schema: z.object({ entries: z.array(ImportEntry).min(1).max(500) }).strict(),
        },
      },
    },
  },
  responses: {
    200: {
      description: 'Imported',
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            imported: z.number().int(),
            total: z.number().int(),
            replayed: z.boolean(),
          }),
        },
      },
    },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422),
  },
})

adminLeaderboards.openapi(importRoute, async (c) => {
  const { id } = c.req.valid('param')
  const { entries } = c.req.valid('json')
  const seen = new Set<string>()
  for (const [i, e] of entries.entries()) {
    if (seen.has(e.playerId)) {
      throw new ApiError('validation', `entries.${i}: player '${e.playerId}' appears twice`, {
        errors: [{ path: `entries.${i}.playerId`, message: 'duplicate player in the batch' }],
      })
    }
    seen.add(e.playerId)
  }
  const batch = entries.map((e) => ({
    playerId: e.playerId,
    score: e.score,
    subscore: e.subscore,
    metadata: e.metadata === null ? null : canonicalJson(e.metadata),
  }))
  const key = c.req.valid('header')['idempotency-key']
  const r = await boardStub(c.env, id).importEntries(
    id,
    batch,
    key === undefined ? null : { key, requestHash: await sha256Hex(canonicalJson([id, batch])) },
  )
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  return c.json({ cycle: r.cycle, imported: r.imported, total: r.total, replayed: r.replayed }, 200)
})

const removeRoute = createRoute({
  method: 'delete',
  path: '/{id}/players/{playerId}',
  summary: "Remove a player's entry from the current cycle",
  description:
    'For moderation (a cheater’s score): the entry leaves the current cycle at once and everyone ' +
    'below moves up; cached reads catch up within 4 s, and top-list walks begun before still see ' +
    'the board as it was when they began. `removed` is false when the player had no entry, so a ' +
    'retry changes nothing (unless the player submitted in between: it removes that score too). ' +
    'The player may submit again (a retried submission answers its first ' +
    'response and does not restore the score). A closed cycle is archived as it stood: check ' +
    '`cycle` in the answer, since a removal sent after a boundary reaches the new cycle.',
  middleware: [requireAdmin()] as const,
  request: { params: z.object({ id: ResourceId, playerId: PlayerId }) },
  responses: {
    200: {
      description: 'The entry is not in the current cycle (any more)',
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            removed: z.boolean(),
            total: z.number().int().openapi({ description: 'Entries in the cycle now' }),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminLeaderboards.openapi(removeRoute, async (c) => {
  const { id, playerId } = c.req.valid('param')
  const r = await boardStub(c.env, id).removeEntry(id, playerId)
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  return c.json({ cycle: r.cycle, removed: r.removed, total: r.total }, 200)
})

const BanParams = z.object({ id: ResourceId, playerId: PlayerId })
const Ban = z
  .object({
    playerId: z.string(),
    reason: z.string().nullable(),
    bannedAt: z.string(),
    byAccount: z.boolean().openapi({
      description:
        "Placed by the player's account ban (`PUT /v1/admin/players/{playerId}/ban`), and lifted with it",
    }),
  })
  .openapi('LeaderboardBan')

/** A reason an admin gives, for the studio's records: 1–256 characters PostgreSQL can store. */
const Reason = z
  .string()
  .min(1)
  .max(256)
  // Stored in Neon or the board's SQLite: text Postgres cannot store (a NUL, a lone surrogate)
  // is refused here, not by the database as a 500 or silently changed.
  .refine(storableText, NOT_STORABLE_REASON)

/** A ban's body, on a board or on a player's account. */
export const BanRequest = z
  .object({
    reason: Reason.optional().openapi({
      description: 'Why, for the studio’s records; shown in the board’s ban list',
    }),
  })
  .strict()
  .openapi('BanRequest')

const VoidRequest = z
  .object({
    reason: Reason.optional().openapi({
      description: 'Why, for the studio’s records; shown with the reward (`voidReason`)',
    }),
  })
  .strict()
  .openapi('VoidRequest')

const banRoute = createRoute({
  method: 'put',
  path: '/{id}/bans/{playerId}',
  summary: 'Ban a player from the board',
  description:
    'The player’s entry leaves the current cycle (as removing it does) and their submissions are ' +
    'refused with 403 `forbidden` in every cycle until the ban is lifted; a retried submission ' +
    'from before still gets its first answer. Banning again keeps the first ban’s time and takes ' +
    `the new reason, if it gives one. At most ${MAX_BANS.toLocaleString('en')} bans per board (409 past that). ` +
    'Imports (`POST …/entries`) are the admin’s own and are not checked against bans. A ban set here ' +
    'over one the player’s account ban placed becomes the board’s own: lifting the account ban keeps it.',
  middleware: [requireAdmin()] as const,
  request: {
    params: BanParams,
    body: {
      required: true,
      content: {
        'application/json': { schema: BanRequest },
      },
    },
  },
  responses: {
    200: {
      description: 'Banned',
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            banned: z.literal(true),
            removed: z
              .boolean()
              .openapi({ description: 'Whether an entry left the current cycle' }),
            total: z.number().int(),
          }),
        },
      },
    },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422),
  },
})

adminLeaderboards.openapi(banRoute, async (c) => {
  const { id, playerId } = c.req.valid('param')
  const { reason } = c.req.valid('json')
  const r = await boardStub(c.env, id).ban(id, playerId, reason ?? null)
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  return c.json({ cycle: r.cycle, banned: true as const, removed: r.removed, total: r.total }, 200)
})

const unbanRoute = createRoute({
  method: 'delete',
  path: '/{id}/bans/{playerId}',
  summary: "Lift a player's ban",
  description:
    'The player may submit again; entries the ban removed do not come back. `lifted` is false ' +
    'when there was no ban, so a retry changes nothing. 409 (`accountBan: true`) while the ' +
    "player's account is banned: lift that first (`DELETE /v1/admin/players/{playerId}/ban`), " +
    "which lifts the bans it placed on every board; a board's own ban is then lifted here.",
  middleware: [requireAdmin()] as const,
  request: { params: BanParams },
  responses: {
    200: {
      description: 'Not banned (any more)',
      content: { 'application/json': { schema: z.object({ lifted: z.boolean() }) } },
    },
    ...problemResponses(401, 403, 404, 409, 422, 503),
  },
})

adminLeaderboards.openapi(unbanRoute, async (c) => {
  const { id, playerId } = c.req.valid('param')
  const board = boardStub(c.env, id)
  const banOnBoard = async (ban: AccountBan) => {
    const kept = await board.ban(id, playerId, ban.reason, { byAccount: true })
    if (!kept.ok && kept.problem !== 'not-found') {
      throw new ApiError(kept.problem, kept.detail, kept.extensions ?? {}, kept.headers)
    }
  }
  /**
   * Makes the board follow the player's account ban: its ban put there while the account's stands
   * (a lift that failed after taking it off, before putting it back, is repaired by its retry;
   * a board admin's own ban stays as it is), and taken off again if the account's was lifted
   * meanwhile (its walk may have passed this board already). Each step looks at Neon after the
   * board's: an account ban placed after that look walks the board after the step.
   */
  const followAccountBan = async (first: AccountBan): Promise<'stands' | 'lifted'> => {
    // Each round ends with a look at Neon after the board's step; an account banned and lifted
    // again and again meanwhile is given a few rounds, then the lift is to be sent again.
    let ban = first
    for (let round = 0; round < 4; round++) {
      await banOnBoard(ban)
      if ((await accountBan(c.env, playerId)) !== null) return 'stands'
      await board.unban(id, playerId, { byAccount: true })
      const again = await accountBan(c.env, playerId)
      if (again === null) return 'lifted'
      ban = again
    }
    // Given up on as the account stood at the last look, banned: the board too, as it may have
    // missed that ban's walk. A retry settles it either way.
    await banOnBoard(ban)
    throw new ApiError(
      'unavailable',
      "The player's account ban kept changing while the board followed it: send the lift again",
      {},
      { 'retry-after': '1' },
    )
  }
  const underAccountBan = () =>
    new ApiError(
      'conflict',
      `'${playerId}' is under an account ban: lift that first (DELETE /v1/admin/players/${playerId}/ban), which lifts the bans it placed; a board's own ban is then lifted here`,
      { accountBan: true },
    )
  // Lifted on one board, an account ban would let the player's old tokens (and a game server's
  // submissions for them) score there again while it stands everywhere else.
  const before = await accountBan(c.env, playerId)
  if (before !== null && (await followAccountBan(before)) === 'stands') throw underAccountBan()
  const r = await board.unban(id, playerId)
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  // An account ban committed since the read above may have walked this board before the lift
  // (its ban there kept the board's own, or was the one lifted): put it back. One committed after
  // this read walks the board after the lift, and bans the player there itself.
  const since = await accountBan(c.env, playerId)
  if (since !== null && (await followAccountBan(since)) === 'stands') throw underAccountBan()
  return c.json({ lifted: r.lifted }, 200)
})

const bansRoute = createRoute({
  method: 'get',
  path: '/{id}/bans',
  summary: "The board's bans, by player id",
  middleware: [requireAdmin()] as const,
  request: {
    params: BoardParam,
    query: z.object({
      limit: Limit(100, 50),
      cursor: PlayerId.optional().openapi({ description: 'nextCursor of the page before' }),
    }),
  },
  responses: {
    200: {
      description: 'A page of bans',
      content: {
        'application/json': {
          schema: z.object({ bans: z.array(Ban), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminLeaderboards.openapi(bansRoute, async (c) => {
  const { id } = c.req.valid('param')
  const { limit, cursor } = c.req.valid('query')
  const r = await boardStub(c.env, id).bans(id, cursor ?? null, limit)
  if (!r.ok) throw new ApiError(r.problem, r.detail, r.extensions ?? {}, r.headers)
  return c.json({ bans: r.bans, nextCursor: r.next }, 200)
})

const CycleReward = z
  .object({
    playerId: z.string(),
    rank: z.number().int(),
    reward: StoredJsonObject,
    awardedAt: z.string().openapi({
      description: "When the close wrote the reward; paying it out is the game's",
    }),
    voidedAt: z.string().nullable().openapi({
      description: 'When an admin voided it (not to be paid); null while it stands',
    }),
    voidReason: z.string().nullable(),
  })
  .openapi('CycleReward')

const cycleRewardsRoute = createRoute({
  method: 'get',
  path: '/{id}/cycles/{cycle}/rewards',
  summary: "A closed cycle's rewards, by rank, for paying them out",
  description:
    'Every reward the close wrote for the cycle, by rank. A reward is one row per (board, cycle, ' +
    'player) however often the close ran, so a game server that pays out keyed by that triple ' +
    'pays each once. `complete` is false while the cycle is still being archived: rewards are ' +
    'written with their archive pages, in any order, so a page may miss ranks that come later; ' +
    'pay what is listed, skipping any with `voidedAt` (voided by an admin), and read again once ' +
    '`complete`. Pass `nextCursor` as `cursor` for the next page. 404 until the close has begun ' +
    'writing to Neon.',
  middleware: [requireAdmin()] as const,
  request: {
    params: CycleParam,
    query: z.object({
      limit: Limit(1000, 100),
      cursor: decimalInt(1, 2_147_483_647)
        .optional()
        .openapi({ description: 'nextCursor of the page before' }),
    }),
  },
  responses: {
    200: {
      description: 'A page of rewards',
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            complete: z.boolean(),
            rewards: z.array(CycleReward),
            nextCursor: z.string().nullable(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422),
  },
})

/** A reward's columns as the admin routes read them (`RewardRow`). */
const REWARD_COLUMNS = `player_id, rank, reward, ${isoUtc('created_at')} as awarded_at,
         ${isoUtc('voided_at')} as voided_at, void_reason`

/**
 * A page of a cycle's rewards in rank order, after rank `$3`: read through
 * `rewards_cycle_rank_idx`, so a page costs its rows, not the cycle's whole payout list.
 */
export const CYCLE_REWARDS_PAGE = `
  select ${REWARD_COLUMNS}
    from rewards where leaderboard_id = $1 and cycle = $2 and rank > $3
   order by rank limit $4`

adminLeaderboards.openapi(cycleRewardsRoute, async (c) => {
  const { id, cycle } = c.req.valid('param')
  const { limit, cursor } = c.req.valid('query')
  const sql = getSql(c.env)
  const [meta] = (await sql.query(
    'select completed_at from leaderboard_cycles where leaderboard_id = $1 and cycle = $2',
    [id, cycle],
  )) as { completed_at: string | null }[]
  if (!meta) throw new ApiError('not-found', `Cycle ${cycle} of '${id}' is not archived (yet)`)
  const rows = (await sql.query(CYCLE_REWARDS_PAGE, [
    id,
    cycle,
    cursor ?? 0,
    limit + 1,
  ])) as RewardRow[]
  const page = rows.slice(0, limit)
  return c.json(
    {
      cycle,
      complete: meta.completed_at !== null,
      rewards: page.map(rewardView),
      nextCursor: rows.length > limit ? String(page[page.length - 1]!.rank) : null,
    },
    200,
  )
})

const VoidParams = CycleParam.extend({ playerId: PlayerId })

/** A reward as `change` (an `update rewards … returning *`) left it, as the routes answer it. */
const REWARD_AFTER = (change: string) => `
  with changed as (${change})
  select ${REWARD_COLUMNS} from changed`

type RewardRow = {
  player_id: string
  rank: number
  reward: Record<string, unknown>
  awarded_at: string
  voided_at: string | null
  void_reason: string | null
}

function rewardView(r: RewardRow): z.infer<typeof CycleReward> {
  return {
    playerId: r.player_id,
    rank: r.rank,
    reward: r.reward,
    awardedAt: r.awarded_at,
    voidedAt: r.voided_at,
    voidReason: r.void_reason,
  }
}

const voidRewardRoute = createRoute({
  method: 'put',
  path: '/{id}/cycles/{cycle}/rewards/{playerId}/void',
  summary: 'Void a reward of a closed cycle (a cheat found after the close)',
  description:
    'The reward stays in the ledger, marked `voidedAt` (and `voidReason`): a game server paying ' +
    'out skips it, and the player sees it voided. Nexus pays nothing itself, so one the game paid ' +
    'already is the game’s to take back. Voiding again keeps the first time and takes the new ' +
    'reason if it gives one. The ranks below do not move: the standings are archived as they ' +
    'stood. `DELETE` on the same path restores it. 404 when the close wrote no reward for the ' +
    'player in that cycle (yet: an archive in progress writes its rewards with its pages).',
  middleware: [requireAdmin()] as const,
  request: {
    params: VoidParams,
    body: { required: true, content: { 'application/json': { schema: VoidRequest } } },
  },
  responses: {
    200: { description: 'Voided', content: { 'application/json': { schema: CycleReward } } },
    ...problemResponses(400, 401, 403, 404, 413, 415, 422),
  },
})

adminLeaderboards.openapi(voidRewardRoute, async (c) => {
  const { id, cycle, playerId } = c.req.valid('param')
  const { reason } = c.req.valid('json')
  const [row] = (await getSql(c.env).query(
    REWARD_AFTER(`update rewards
        set voided_at = coalesce(voided_at, now()), void_reason = coalesce($4, void_reason)
      where leaderboard_id = $1 and cycle = $2 and player_id = $3
      returning *`),
    [id, cycle, playerId, reason ?? null],
  )) as RewardRow[]
  if (!row) throw noReward(id, cycle, playerId)
  return c.json(rewardView(row), 200)
})

const restoreRewardRoute = createRoute({
  method: 'delete',
  path: '/{id}/cycles/{cycle}/rewards/{playerId}/void',
  summary: 'Restore a voided reward',
  description:
    'The reward stands again (`voidedAt` and `voidReason` null); restoring one that stands ' +
    'changes nothing, so a retry is safe. 404 when there is no such reward.',
  middleware: [requireAdmin()] as const,
  request: { params: VoidParams },
  responses: {
    200: { description: 'Standing', content: { 'application/json': { schema: CycleReward } } },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminLeaderboards.openapi(restoreRewardRoute, async (c) => {
  const { id, cycle, playerId } = c.req.valid('param')
  const [row] = (await getSql(c.env).query(
    REWARD_AFTER(`update rewards set voided_at = null, void_reason = null
      where leaderboard_id = $1 and cycle = $2 and player_id = $3
      returning *`),
    [id, cycle, playerId],
  )) as RewardRow[]
  if (!row) throw noReward(id, cycle, playerId)
  return c.json(rewardView(row), 200)
})

function noReward(id: string, cycle: number, playerId: string): ApiError {
  return new ApiError('not-found', `No reward for '${playerId}' in cycle ${cycle} of '${id}'`)
}
