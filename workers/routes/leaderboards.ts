import { z } from '@hono/zod-openapi'
import type { Context, MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import type { BoardEntry, BoardProblem } from '../../durable-objects/leaderboard.ts'
import { submissionRefusals } from '../leaderboards/metrics.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { unknownBoards } from '../leaderboards/unknown-boards.ts'
import { RecentlyUnknown } from '../lib/recently-unknown.ts'
import { boundedInt } from '../lib/config.ts'
import { createRoute, decimalInt, newRouter, problemResponses } from '../lib/openapi.ts'
import { IdempotencyKey, PlayerId, ResourceId } from '../lib/fields.ts'
import { MATCH_WIN_KEY_PREFIX, shownConfig } from '../core/leaderboard.ts'
import { ApiError } from '../lib/problem.ts'
import { sealHolds, sealOf } from '../lib/auth.ts'
import { cachedRead, forgetStaleRead } from '../lib/read-cache.ts'
import { getSql } from '../db/client.ts'
import { playerNames } from '../leaderboards/names.ts'
import {
  countEdgeRefusal,
  countedClientIp,
  countedClientNetwork,
  enforceEdgeLimit,
  overEdgeLimit,
  refundEdgeHit,
  countPlayerRead,
  refuseNamerOfUnknownIds,
  playerReadsPerMinute,
  type EdgeRateLimitOptions,
} from '../middleware/rate-limit.ts'
import { carriesAdminKey, requirePlayerForMe, requirePrincipal } from '../middleware/auth.ts'
import {
  countUnknownIdUnlessAdmin,
  refuseNamerOfUnknownIdsUnlessAdmin,
} from '../middleware/unknown-ids.ts'
import { canonicalJson } from '../lib/canonical-json.ts'
import {
  Cursor,
  CycleInfo,
  CycleParam,
  Entry,
  LeaderboardConfigStored,
  Limit,
  ScoreSubmission,
  SubmitResult,
  TopPage,
} from './leaderboard-schemas.ts'
import { sha256Hex } from '../lib/hash.ts'

export const leaderboardRoutes = newRouter()

/** Live reads may be this stale, end to end; the contract promises at most 5 s. */
const LIVE_TTL_SECONDS = 4
/** A completed archive never changes. */
const ARCHIVE_TTL_SECONDS = 300
/** Another player's history: it changes only as cycles close and are archived. */
const HISTORY_TTL_SECONDS = 60
/**
 * Closed cycles found not archived (yet), by `board:cycle`, for 2 s: a refusal no layer caches
 * for clients (the standings may be in a moment later), so without it every client polling for
 * last cycle's results at a close, while its first page can take two minutes, was a Neon query,
 * as was each request naming a made-up board. Its 404 asks them to come back in 5 s.
 */
const notArchivedYet = new RecentlyUnknown(2_000)
const NOT_ARCHIVED_RETRY_SECONDS = 5

const SubmissionKey = IdempotencyKey.openapi({
  description:
    'Unique per logical submission; a retry sends the same key. Not beginning `session:` (the ' +
    'keys game sessions submit wins with).',
  example: '7d0e3c52-run-118',
})

const BoardParam = z.object({ id: ResourceId })

/**
 * The board's object, unless the board was just found not to exist: then 404 at once, without
 * waking an object that would ask Neon again (workers/leaderboards/unknown-boards.ts).
 */
function board(c: Context<AppEnv>, id: string) {
  if (unknownBoards.has(id)) {
    throw new ApiError('not-found', `No leaderboard '${id}'`, {}, { 'cache-control': 'no-store' })
  }
  return boardStub(c.env, id)
}

/**
 * The board's object for a read the caches missed, unless the client's address has named too
 * many boards or queues that do not exist lately (429). Not for an early refresh (the answer it
 * would replace is still good, and is served), nor for submissions (a player's scores, and their
 * replays, go through whatever others on their address do: those are judged by the player).
 */
async function boardToRead(c: Context<AppEnv>, id: string, how: { refresh: boolean }) {
  if (!how.refresh) await refuseNamerOfUnknownIdsUnlessAdmin(c)
  return board(c, id)
}

/** A refusal the board made (and counted, for submissions). */
class BoardRefusal extends ApiError {}

function fail(c: Context<AppEnv>, p: BoardProblem): never {
  if (p.unknownBoard) {
    unknownBoards.remember(p.unknownBoard)
    // Counted beside the answer: the 404 goes out now, the address's next such read is judged.
    c.executionCtx.waitUntil(countUnknownIdUnlessAdmin(c, p.unknownBoard))
  }
  throw new BoardRefusal(p.problem, p.detail, p.extensions ?? {}, p.headers ?? {})
}

/**
 * Counts the submissions the Worker refuses before asking the board (which counts its own), and
 * those a board failed with an error rather than a refusal (its storage full, say), which it
 * could not count: as `unavailable` when answered 503, else `internal`.
 */
const countRefusedSubmissions: MiddlewareHandler<AppEnv> = async function countRefusedSubmissions(
  c,
  next,
) {
  await next()
  if (c.error instanceof ApiError && !(c.error instanceof BoardRefusal)) {
    submissionRefusals.inc({ reason: c.error.problem })
  } else if (c.error !== undefined && !(c.error instanceof ApiError) && c.res.status >= 500) {
    submissionRefusals.inc({ reason: c.res.status === 503 ? 'unavailable' : 'internal' })
  }
}

async function named(c: Context<AppEnv>, entries: BoardEntry[]) {
  const names = await playerNames(
    c.env,
    entries.map((e) => e.playerId),
  )
  return entries.map((e) => ({
    rank: e.rank,
    playerId: e.playerId,
    name: names.get(e.playerId) ?? null,
    score: e.score,
    subscore: e.subscore,
    metadata: e.metadata,
  }))
}

// ---------------------------------------------------------------------------------------------

const getBoardRoute = createRoute({
  method: 'get',
  path: '/{id}',
  summary: 'A leaderboard: its configuration and current cycle',
  request: { params: BoardParam },
  responses: {
    200: {
      description: 'Configuration and current cycle',
      content: {
        'application/json': {
          schema: z.object({
            id: z.string(),
            config: LeaderboardConfigStored,
            cycle: CycleInfo,
          }),
        },
      },
    },
    ...problemResponses(404, 422, 429),
  },
})

/**
 * How long a cache may keep an answer about the live cycle, in seconds: LIVE_TTL_SECONDS, and
 * never past the cycle's end. A client counting down to `endsAt` reads again at the boundary,
 * and must get the next cycle, not the one that just ended (with its end in the past) for up to
 * 4 s more; a top page's cursor belongs to its cycle, too.
 */
function liveTtlUntil(endsAt: number | null): number {
  if (endsAt === null) return LIVE_TTL_SECONDS
  return Math.max(0, Math.min(LIVE_TTL_SECONDS, (endsAt - Date.now()) / 1000))
}

leaderboardRoutes.openapi(getBoardRoute, (async (c: Context<AppEnv>) => {
  const { id } = c.req.param() as { id: string }
  let endsAt: number | null = null
  return cachedRead(c, {
    key: `lb:${id}:info`,
    ttlSeconds: LIVE_TTL_SECONDS,
    ttlOf: () => liveTtlUntil(endsAt),
    visibility: 'public',
    beforeSharedLookup: () => void board(c, id),
    load: async (how) => {
      const info = await (await boardToRead(c, id, how)).info(id)
      if ('ok' in info) fail(c, info)
      endsAt = info.cycle.endsAt
      return {
        id,
        config: shownConfig(info.config),
        cycle: info.cycle,
      }
    },
  })
}) as never)

// ---------------------------------------------------------------------------------------------

/**
 * A player's submissions across boards, per minute. Only when Redis is configured: the Durable
 * Object enforces each board's exact limit anyway. Counted in the handler, after validation, so
 * a malformed request uses none of it.
 */
const SUBMIT_EDGE_LIMIT: EdgeRateLimitOptions = {
  name: 'score-submit',
  limit: (c) => boundedInt(c.env.EDGE_SUBMITS_PER_MINUTE, 120, 1, 100_000),
  key: (c) => {
    const p = c.get('principal')
    return c.env.UPSTASH_REDIS_REST_URL && p?.kind === 'player' ? p.playerId : undefined
  },
}

/**
 * Submissions sent past SUBMIT_EDGE_LIMIT that still go to their board for a replay (a retry gets
 * its first answer), a minute: as many again. Past both, the 429 comes without a call on the
 * board; a client retries a submission a few times, not a hundred, and its key's answer waits
 * 24 h for a later retry.
 */
const SUBMIT_REPLAY_LIMIT: EdgeRateLimitOptions = {
  ...SUBMIT_EDGE_LIMIT,
  name: 'score-submit-replays',
}

/** Submissions the board refused as malformed whose edge count was given back, a minute. */
const SUBMIT_REFUSED_LIMIT: EdgeRateLimitOptions = {
  ...SUBMIT_EDGE_LIMIT,
  name: 'score-submit-refused',
}

const submitRoute = createRoute({
  method: 'post',
  path: '/{id}/scores',
  summary: 'Submit a score',
  description:
    'Needs a player token, or the admin key with `playerId` (a game server submitting for a player). ' +
    'A retry with the same Idempotency-Key returns the first answer with `replayed: true`; the same key ' +
    'with a different body is refused (422 idempotency-key-reused). Keys are remembered for 24 h. ' +
    "A player new to the cycle while it holds the board's `maxEntries` players is 409 conflict " +
    '(`limit`), until the next cycle; a paused board answers 409 conflict with `paused: true`.',
  middleware: [countRefusedSubmissions, requirePrincipal()] as const,
  request: {
    params: BoardParam,
    headers: z.object({ 'idempotency-key': SubmissionKey }),
    body: { content: { 'application/json': { schema: ScoreSubmission } }, required: true },
  },
  responses: {
    200: {
      description: 'Accepted (or replayed)',
      content: { 'application/json': { schema: SubmitResult } },
    },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422, 429),
  },
})

leaderboardRoutes.openapi(submitRoute, async (c) => {
  const { id } = c.req.valid('param')
  const body = c.req.valid('json')
  const key = c.req.valid('header')['idempotency-key']
  // The sessions' own (they submit over RPC, never here), whoever sends it: taken first, it
  // would have the session's submission of the player's win refused as a reused key.
  if (key.startsWith(MATCH_WIN_KEY_PREFIX)) {
    throw new ApiError(
      'validation',
      `Keys beginning "${MATCH_WIN_KEY_PREFIX}" are those of the wins game sessions submit`,
      {
        errors: [
          {
            path: 'idempotency-key',
            message: `must not begin "${MATCH_WIN_KEY_PREFIX}"`,
          },
        ],
      },
    )
  }
  const principal = c.get('principal')!
  let playerId: string
  if (principal.kind === 'admin') {
    if (!body.playerId) {
      throw new ApiError('validation', 'With the admin key, say which player: playerId', {
        errors: [{ path: 'playerId', message: 'required with the admin key' }],
      })
    }
    playerId = body.playerId
  } else {
    if (body.playerId !== undefined && body.playerId !== principal.playerId) {
      throw new ApiError('forbidden', 'Players submit only their own scores')
    }
    playerId = principal.playerId
  }
  const metadata = body.metadata === null ? null : canonicalJson(body.metadata)
  const requestHash = await sha256Hex(
    canonicalJson([id, playerId, body.score, body.subscore, metadata]),
  )
  // A player who named too many boards that do not exist lately is refused before a board is
  // asked: each made-up id is a fresh Durable Object and a Neon read, with no edge limit on
  // submissions without Redis. By the player, not their address, which others share.
  refuseNamerOfUnknownIds(c, 'player')
  // Over the edge limit, the board still answers a replay (a retry must get its first answer),
  // and refuses anything else without a change; past as many such calls again, the edge refuses
  // them all without asking the board.
  const countedAt = Date.now()
  const overLimit = await overEdgeLimit(c, SUBMIT_EDGE_LIMIT, countedAt)
  if (overLimit && (await overEdgeLimit(c, SUBMIT_REPLAY_LIMIT, countedAt))) {
    countEdgeRefusal(SUBMIT_REPLAY_LIMIT.name)
    throw overLimit
  }
  const reply = await board(c, id).submit({
    boardId: id,
    playerId,
    score: body.score,
    subscore: body.subscore,
    metadata,
    idempotencyKey: key,
    requestHash,
    // A token without `iat` counts as the oldest (an erased player's board refuses it).
    ...(principal.kind === 'player'
      ? { tokenIssuedAt: principal.issuedAt ?? 0, byPlayer: true as const }
      : {}),
    ...(overLimit ? { replayOnly: true } : {}),
  })
  if (!reply.ok) {
    if (overLimit && reply.problem === 'rate-limited') {
      countEdgeRefusal(SUBMIT_EDGE_LIMIT.name)
      throw overLimit
    }
    // Malformed for this board (a score outside its bounds, metadata past its limit), which
    // only the board could tell: as a request the schema refuses, it costs none of the budget;
    // up to as many such refusals again a minute, so that a loop of them is not free (each is a
    // call on the board, and Redis commands).
    if (
      !overLimit &&
      reply.problem === 'validation' &&
      !(await overEdgeLimit(c, SUBMIT_REFUSED_LIMIT, countedAt))
    ) {
      await refundEdgeHit(c, SUBMIT_EDGE_LIMIT, countedAt)
    }
    fail(c, reply)
  }
  return c.json(reply.result, 200)
})

// ---------------------------------------------------------------------------------------------

const topRoute = createRoute({
  method: 'get',
  path: '/{id}/top',
  summary: 'The current cycle, best first, a page at a time',
  description:
    'Pass `nextCursor` back as `cursor` for the next page. A walk reads the board as of its first page, ' +
    'so pages neither repeat nor skip entries while scores change; a cursor older than the 5 minutes of ' +
    'history the board keeps, from a closed cycle, or from before a restart is 409: start again without ' +
    'one. A cursor is sealed for its board: an edited one, one of another board, or one handed out ' +
    'before the deployment that began sealing cursors is 422. Served from the caches, at most 4 s ' +
    'stale (`Cache-Control: no-cache` asks for a fresh read); an address naming many boards that do ' +
    'not exist is 429.',
  request: { params: BoardParam, query: z.object({ limit: Limit(100, 10), cursor: Cursor }) },
  responses: {
    200: { description: 'A page', content: { 'application/json': { schema: TopPage } } },
    ...problemResponses(404, 409, 422, 429),
  },
})

/** The walk a top cursor continues (`cycle.snapshot`, its first two fields), or null. */
function walkOf(cursor: unknown): string | null {
  if (typeof cursor !== 'string') return null
  const [cycle, snapshot] = cursor.split('.', 2)
  return snapshot === undefined ? null : `${cycle}.${snapshot}`
}

leaderboardRoutes.openapi(topRoute, (async (c: Context<AppEnv>) => {
  const { id } = c.req.param() as { id: string }
  const { limit, cursor } = (
    c.req as unknown as { valid(t: 'query'): { limit: number; cursor?: string } }
  ).valid('query')
  // Refused before any cache: a made-up cursor neither reaches the board nor fills a cache entry.
  const walk = cursor === undefined ? null : await openTopCursor(c, id, cursor)
  // A page is not kept past its cycle's end: its cursor belongs to that cycle, and a first page
  // served from a cache after the boundary would hand out a cursor the board refuses (409),
  // again and again until the cached page expired.
  let endsAt: number | null = null
  return cachedRead(c, {
    key: `lb:${id}:top:${limit}:${cursor ?? ''}`,
    ttlSeconds: LIVE_TTL_SECONDS,
    ttlOf: () => liveTtlUntil(endsAt),
    visibility: 'public',
    beforeSharedLookup: () => void board(c, id),
    load: async (how) => {
      const r = await (await boardToRead(c, id, how)).top(id, walk, limit)
      if (!r.ok) {
        // A cursor the board refuses (of a cycle closed early, by an admin or a new schedule,
        // which no cached first page's end foresaw; or of a walk whose snapshot the board no
        // longer keeps, after a restart, say): the client starts again without one, and must not
        // be handed the same page, and its cursor, from a cache. Only a page of another cycle
        // or of that very walk goes: made-up cursors must not evict a hot page at will.
        const current = r.extensions?.cycle
        if (r.problem === 'conflict' && cursor && typeof current === 'number') {
          await forgetStaleRead(c, `lb:${id}:top:${limit}:`, (page) => {
            const { cycle, nextCursor } = page as { cycle?: unknown; nextCursor?: unknown }
            return cycle !== current || walkOf(nextCursor) === walkOf(cursor)
          })
        }
        fail(c, r)
      }
      endsAt = r.endsAt
      return {
        cycle: r.cycle,
        entries: await named(c, r.entries),
        nextCursor: r.nextCursor === null ? null : await sealTopCursor(c, id, r.nextCursor),
        total: r.total,
      }
    },
  })
}) as never)

/**
 * The board's cursor carries the rank its walk has reached, which the next page's ranks count
 * on: handed out sealed (`<board's cursor>.<seal>`), so that an edited one cannot label entries
 * with ranks they do not have, on a page served publicly and cached.
 */
function sealTopCursor(c: Context<AppEnv>, boardId: string, cursor: string): Promise<string> {
  return sealOf(c.env, `top-cursor:${boardId}`, cursor).then((seal) => `${cursor}.${seal}`)
}

/**
 * The board's cursor inside a sealed one; 422 `validation` when the seal is not this board's
 * (or AUTH_SECRET changed since). Cursors have been sealed since 2026-12-05, and a walk lasts
 * minutes: one without a seal is not the board's, whatever its shape.
 */
async function openTopCursor(c: Context<AppEnv>, boardId: string, sealed: string): Promise<string> {
  const dot = sealed.lastIndexOf('.')
  const cursor = sealed.slice(0, Math.max(dot, 0))
  if (dot > 0 && (await sealHolds(c.env, `top-cursor:${boardId}`, cursor, sealed.slice(dot + 1)))) {
    return cursor
  }
  throw new ApiError('validation', 'cursor is not valid', {
    errors: [{ path: 'cursor', message: 'not a cursor this board issued' }],
  })
}

// ---------------------------------------------------------------------------------------------

const PlayerParam = z.object({ id: ResourceId, playerId: z.union([z.literal('me'), PlayerId]) })

function resolvePlayer(c: Context<AppEnv>, playerId: string): string {
  if (playerId !== 'me') return playerId
  const p = c.get('principal')
  if (p?.kind !== 'player') throw new ApiError('forbidden', '"me" needs a player token')
  return p.playerId
}

const playerRoute = createRoute({
  method: 'get',
  path: '/{id}/players/{playerId}',
  summary: "A player's rank and score in the current cycle (`me` for the caller)",
  middleware: [requirePlayerForMe()] as const,
  request: { params: PlayerParam },
  responses: {
    200: {
      description: "The player's standing; entry is null when they have no score this cycle",
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            playerId: z.string(),
            entry: z.union([Entry, z.null()]),
            total: z.number().int(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422),
  },
})

leaderboardRoutes.openapi(playerRoute, (async (c: Context<AppEnv>) => {
  const { id, playerId: raw } = c.req.param() as { id: string; playerId: string }
  const playerId = resolvePlayer(c, raw)
  let endsAt: number | null = null
  return cachedRead(c, {
    key: `lb:${id}:player:${playerId}`,
    ttlSeconds: LIVE_TTL_SECONDS,
    ttlOf: () => liveTtlUntil(endsAt),
    visibility: raw === 'me' ? 'private' : 'public',
    sharedAcrossLocations: false,
    load: async (how) => {
      const r = await (await boardToRead(c, id, how)).player(id, playerId)
      if (!r.ok) fail(c, r)
      // A board of the version before does not say.
      endsAt = r.endsAt ?? null
      const entry = r.entry ? (await named(c, [r.entry]))[0]! : null
      return { cycle: r.cycle, playerId, entry, total: r.total }
    },
  })
}) as never)

const aroundRoute = createRoute({
  method: 'get',
  path: '/{id}/around/{playerId}',
  summary: 'Entries around a player (`me` for the caller), shifted at the edges of the board',
  middleware: [requirePlayerForMe()] as const,
  request: { params: PlayerParam, query: z.object({ limit: Limit(100, 11) }) },
  responses: {
    200: {
      description: 'A window of entries',
      content: {
        'application/json': {
          schema: z.object({
            cycle: z.number().int(),
            entries: z.array(Entry),
            total: z.number().int(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422),
  },
})

leaderboardRoutes.openapi(aroundRoute, (async (c: Context<AppEnv>) => {
  const { id, playerId: raw } = c.req.param() as { id: string; playerId: string }
  const { limit } = (c.req as unknown as { valid(t: 'query'): { limit: number } }).valid('query')
  const playerId = resolvePlayer(c, raw)
  let endsAt: number | null = null
  return cachedRead(c, {
    key: `lb:${id}:around:${playerId}:${limit}`,
    ttlSeconds: LIVE_TTL_SECONDS,
    ttlOf: () => liveTtlUntil(endsAt),
    visibility: raw === 'me' ? 'private' : 'public',
    sharedAcrossLocations: false,
    load: async (how) => {
      const r = await (await boardToRead(c, id, how)).around(id, playerId, limit)
      if (!r.ok) fail(c, r)
      endsAt = r.endsAt ?? null
      return { cycle: r.cycle, entries: await named(c, r.entries), total: r.total }
    },
  })
}) as never)

// ---------------------------------------------------------------------------------------------
// History, from Neon

const cycleTopRoute = createRoute({
  method: 'get',
  path: '/{id}/cycles/{cycle}/top',
  summary: "A closed cycle's final standings, from the archive",
  description:
    '`complete` is false while the cycle is still being archived. Through the read caches; a ' +
    'page they miss counts toward PLAYER_READS_PER_MINUTE per client address (429 past it).',
  request: {
    params: CycleParam,
    query: z.object({
      limit: Limit(1000, 10),
      cursor: Cursor.openapi({
        pattern: '^(0|[1-9][0-9]{0,9})$',
        description:
          '`nextCursor` of the page before: the last rank it held, a whole number from 0 to ' +
          '2147483647 in plain decimal digits; anything else is 422',
      }),
    }),
  },
  responses: {
    200: {
      description: 'A page of the archive',
      content: {
        'application/json': {
          schema: TopPage.extend({
            complete: z.boolean(),
            entries: z.array(Entry.extend({ submittedAt: z.string() })),
          }),
        },
      },
    },
    ...problemResponses(404, 422, 429),
  },
})

leaderboardRoutes.openapi(cycleTopRoute, (async (c: Context<AppEnv>) => {
  const { id } = c.req.param() as { id: string }
  const { cycle, limit, cursor } = {
    ...(c.req as unknown as { valid(t: 'param'): { cycle: number } }).valid('param'),
    ...(c.req as unknown as { valid(t: 'query'): { limit: number; cursor?: string } }).valid(
      'query',
    ),
  }
  const afterRank = cursor === undefined ? 0 : Number(cursor)
  if (
    !Number.isSafeInteger(afterRank) ||
    afterRank < 0 ||
    // Ranks are int4 in Neon: a larger cursor was never issued and PostgreSQL would refuse it.
    afterRank > 2_147_483_647 ||
    (cursor !== undefined && String(afterRank) !== cursor)
  ) {
    throw new ApiError('validation', 'cursor is not valid', {
      errors: [{ path: 'cursor', message: 'not a cursor this endpoint issued' }],
    })
  }
  const sql = getSql(c.env)
  const notYet = () =>
    new ApiError(
      'not-found',
      `Cycle ${cycle} of '${id}' is not archived (yet)`,
      {},
      { 'retry-after': String(NOT_ARCHIVED_RETRY_SECONDS) },
    )
  const archiveKey = `${id}:${cycle}`
  if (notArchivedYet.has(archiveKey)) throw notYet()
  return cachedRead(c, {
    key: `lb:${id}:cycle:${cycle}:${limit}:${afterRank}`,
    ttlSeconds: LIVE_TTL_SECONDS,
    // A page of a finished archive never changes, so it is kept longer; and since the cycle's
    // row is read in the load, a cached page is served with Neon down and costs it nothing.
    ttlOf: (page) =>
      (page as { complete: boolean }).complete ? ARCHIVE_TTL_SECONDS : LIVE_TTL_SECONDS,
    visibility: 'public',
    load: async ({ refresh }) => {
      // A page the caches miss is two Neon queries, and any cursor and limit make a page of
      // its own: counted per client address, as another player's history is, so that a
      // script walking cursors cannot have Neon query without end. An early refresh is not.
      if (!refresh) await countHistoryMiss(c)
      const [meta] = (await sql.query(
        'select entries, completed_at from leaderboard_cycles where leaderboard_id = $1 and cycle = $2',
        [id, cycle],
      )) as { entries: number; completed_at: string | null }[]
      if (!meta) {
        notArchivedYet.remember(archiveKey)
        throw notYet()
      }
      const complete = meta.completed_at !== null
      // The player's name as it is now, where the archive kept one: a rename (a moderator's)
      // reaches closed cycles too. An entry archived without one (the player had none, or was
      // erased) stays without, as does one whose profile is gone (an erasure under way).
      const rows = (await sql.query(
        `select a.rank, a.player_id, case when a.name is not null then p.name end as name,
                a.score, a.subscore, a.metadata, a.submitted_at
           from leaderboard_archive a left join players p on p.id = a.player_id
          where a.leaderboard_id = $1 and a.cycle = $2 and a.rank > $3 order by a.rank limit $4`,
        [id, cycle, afterRank, limit],
      )) as {
        rank: number
        player_id: string
        name: string | null
        score: number
        subscore: number
        metadata: unknown
        submitted_at: string
      }[]
      // Archive pages commit in any order: while archiving, a later page may be in before an
      // earlier one. The answer stops at the first missing rank, so a walk never passes a gap.
      const gap = rows.findIndex((r, i) => r.rank !== afterRank + i + 1)
      if (gap !== -1) rows.length = gap
      // Until the first ranks are in, the standings are not there to read, whatever else is.
      if (!complete && afterRank === 0 && rows.length === 0) {
        notArchivedYet.remember(archiveKey)
        throw notYet()
      }
      const through = rows[rows.length - 1]?.rank ?? afterRank
      // More to come: a full page, or, while archiving, ranks not in yet (the cursor continues
      // from the last rank given, or is the request's own when none was: read again later).
      const more = through < meta.entries && (rows.length === limit || gap !== -1 || !complete)
      return {
        cycle,
        complete,
        total: meta.entries,
        entries: rows.map((r) => ({
          rank: r.rank,
          playerId: r.player_id,
          name: r.name,
          score: r.score,
          subscore: r.subscore,
          metadata: r.metadata,
          submittedAt: new Date(r.submitted_at).toISOString(),
        })),
        nextCursor: more ? String(through) : null,
      }
    },
  })
}) as never)

const historyRoute = createRoute({
  method: 'get',
  path: '/{id}/players/{playerId}/history',
  summary: "A player's results across closed cycles, newest first",
  description:
    "`me` (a player token): the caller's own, from Neon on every read, counted in their " +
    'PLAYER_READS_PER_MINUTE (429 past it). Another player’s: public, through the read caches, ' +
    'at most a minute old; a read the caches miss counts toward that many per client address.',
  middleware: [requirePlayerForMe()] as const,
  request: {
    params: PlayerParam,
    query: z.object({
      limit: Limit(100, 20),
      before: decimalInt(1, 2_000_000_000).optional(),
    }),
  },
  responses: {
    200: {
      description: 'Results, newest cycle first; pass nextBefore as before for older ones',
      content: {
        'application/json': {
          schema: z.object({
            results: z.array(
              z.object({
                cycle: z.number().int(),
                rank: z.number().int(),
                score: z.number(),
                subscore: z.number(),
                entries: z.number().int(),
              }),
            ),
            nextBefore: z.number().int().nullable(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422, 429),
  },
})

leaderboardRoutes.openapi(historyRoute, (async (c: Context<AppEnv>) => {
  const { id, playerId: raw } = c.req.param() as { id: string; playerId: string }
  const { limit, before } = (
    c.req as unknown as { valid(t: 'query'): { limit: number; before?: number } }
  ).valid('query')
  const playerId = resolvePlayer(c, raw)
  const read = () => historyPage(c, id, playerId, limit, before)
  if (raw === 'me') {
    // The caller's own, counted in their account reads (countPlayerRead), never shared; from
    // their erasure on, if any (a provider's player back under the id is a new player).
    await countPlayerRead(c)
    // Not kept at all, as every other read of the caller's own: `private, max-age=0` let a
    // browser's cache serve it to the next player signed in on the device, offline.
    c.header('cache-control', 'private, no-store')
    return c.json(await historyPage(c, id, playerId, limit, before, { sinceErasure: true }), 200)
  }
  // Anyone's, public: through the read caches, so that a client polling it (or many asking for
  // a popular player's) costs Neon a query a minute, not one each. It changes only as cycles close.
  // What the caches miss is a Neon query: counted per client address, so that a script walking
  // players or pages cannot have Neon query without end.
  return cachedRead(c, {
    key: `lb:${id}:history:${playerId}:${limit}:${before ?? ''}`,
    ttlSeconds: HISTORY_TTL_SECONDS,
    visibility: 'public',
    load: async ({ refresh }) => {
      // An early refresh is the caches' doing, not a miss of the caller's: not counted.
      if (!refresh) await countHistoryMiss(c)
      return read()
    },
  })
}) as never)

/**
 * Reads of what Neon keeps of closed cycles that the caches missed (another player's history, a
 * page of a closed cycle's standings), per client address a minute. A player's token changes
 * nothing (these routes are public); the admin key is not counted: a game server reading the
 * histories of a tournament's entrants, or walking a million-entry cycle, is no script of
 * strangers'.
 */
const HISTORY_MISS_LIMIT: EdgeRateLimitOptions = {
  name: 'history-reads',
  limit: playerReadsPerMinute,
  key: (c) => countedClientIp(c),
}

/**
 * The same across an IPv6 client's /48, at ten times it, as every other per-address limit is:
 * one /48 holds 65,536 /64s, each counted alone above.
 */
const HISTORY_MISS_NETWORK_LIMIT: EdgeRateLimitOptions = {
  name: 'history-reads-net',
  limit: (c) => 10 * playerReadsPerMinute(c),
  key: (c) => countedClientNetwork(c),
}

/** Counts a closed-cycle read the caches missed, by address and by /48; the 429 past either. */
async function countHistoryMiss(c: Context<AppEnv>): Promise<void> {
  if (await carriesAdminKey(c)) return
  await enforceEdgeLimit(c, HISTORY_MISS_LIMIT)
  await enforceEdgeLimit(c, HISTORY_MISS_NETWORK_LIMIT)
}

/**
 * A page of a player's results on a board, newest cycle first (404 for a board nobody made).
 * With `sinceErasure` (the player's own read), only scores submitted after their erasure, if any.
 */
async function historyPage(
  c: Context<AppEnv>,
  id: string,
  playerId: string,
  limit: number,
  before: number | undefined,
  { sinceErasure = false }: { sinceErasure?: boolean } = {},
) {
  const rows = (await getSql(c.env).query(
    `select a.cycle, a.rank, a.score, a.subscore, c.entries from leaderboard_archive a
       join leaderboard_cycles c on c.leaderboard_id = a.leaderboard_id and c.cycle = a.cycle
      where a.player_id = $1 and a.leaderboard_id = $2 and a.cycle < $3
        -- Scores after the erasure, as the archive judged them (a walk not ended counts as under
        -- way, for an hour).
        and ($5::boolean is false or a.submitted_at > coalesce(
              (select coalesce(completed_at, erased_at + interval '1 hour')
                 from erased_players where id = $1), '-infinity'))
      order by a.cycle desc limit $4`,
    // One more than the page: `nextBefore` only when there is more to read.
    [playerId, id, before ?? 2_147_483_647, limit + 1, sinceErasure],
  )) as { cycle: number; rank: number; score: number; subscore: number; entries: number }[]
  const more = rows.length > limit
  if (more) rows.length = limit
  // No results: a board nobody created is 404, as every other read of it is (asked only when
  // there is nothing to show). A deleted board keeps its row, and its history stays readable.
  if (rows.length === 0) {
    const [board] = await getSql(c.env).query('select 1 from leaderboards where id = $1', [id])
    if (!board) throw new ApiError('not-found', `No leaderboard '${id}'`)
  }
  const last = rows[rows.length - 1]
  return { results: rows, nextBefore: more && last ? last.cycle : null }
}
