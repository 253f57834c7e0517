import { z } from '@hono/zod-openapi'
import { getRules, optionsRefusal, RULES_OPTIONS_LIMITS, rulesNames } from '../core/rules/index.ts'
import { resultsBoardRefusal, resultsRefusalOf } from '../leaderboards/config-store.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { isDatabaseUnreachable } from '../db/client.ts'
import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import {
  boundedJson,
  IdempotencyKey,
  NewPlayerId,
  objectRecord,
  PlayerId,
  ResourceId,
} from '../lib/fields.ts'
import { ApiError } from '../lib/problem.ts'
import { keyedDigest } from '../lib/auth.ts'
import { issueSessionToken } from '../lib/session-token.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { noBodyFields } from '../middleware/json-body.ts'
import { sessionView, SessionView } from './sessions.ts'
import { MAX_ROSTER, SessionId } from '../sessions/schemas.ts'
import { sessionStub } from '../sessions/stub.ts'
import { NeonSessionStore } from '../sessions/store.ts'
import { Limit } from './leaderboard-schemas.ts'
import { SessionPage, sessionPage } from './session-listing.ts'

export const adminSessions = newRouter()

const CreateSession = z
  .object({
    rules: z.enum(rulesNames as [string, ...string[]]),
    roster: z
      .array(
        z
          .object({
            playerId: NewPlayerId,
            team: z
              .number()
              .int()
              .min(0)
              .max(MAX_ROSTER)
              .optional()
              .openapi({
                description:
                  'Team index; default: the player’s position (everyone for themselves). Every ' +
                  'player has one, or none does (422)',
              }),
          })
          .strict(),
      )
      .min(1)
      .max(MAX_ROSTER)
      .refine((r) => new Set(r.map((p) => p.playerId)).size === r.length, {
        message: 'player ids must be unique',
      })
      .openapi({ description: 'In turn order' }),
    options: boundedJson(
      objectRecord(z.record(z.string(), z.unknown()), { type: 'object', additionalProperties: {} }),
      RULES_OPTIONS_LIMITS,
    )
      .optional()
      .openapi({
        description: `Rules options, e.g. dice-race \`{"target": 10}\`; at most ${RULES_OPTIONS_LIMITS.maxBytes} bytes of JSON, ${RULES_OPTIONS_LIMITS.maxDepth} levels deep`,
      }),
    leaderboardId: ResourceId.optional().openapi({
      description: 'Winners get score 1 on this board at the end',
    }),
    queue: ResourceId.optional(),
  })
  .strict()
  .superRefine((s, ctx) => {
    // A player without a team plays on the team of their position: beside players given teams,
    // that would be someone's team (a 1v1 meant as ranked made one team, rated nothing).
    const given = s.roster.filter((p) => p.team !== undefined).length
    if (given > 0 && given < s.roster.length) {
      const missing = s.roster.findIndex((p) => p.team === undefined)
      ctx.addIssue({
        code: 'custom',
        path: ['roster', missing, 'team'],
        message: 'give every player a team, or none (then everyone plays for themselves)',
      })
      return
    }
    const rules = getRules(s.rules)
    if (!rules) return
    const { min, max } = rules.players
    if (s.roster.length < min || s.roster.length > max) {
      ctx.addIssue({
        code: 'custom',
        path: ['roster'],
        message: `${s.rules} needs ${min} to ${max} players`,
      })
      return
    }
    if (s.options === undefined) return
    // The same trial start the session makes, so a refusal names the field to change.
    const roster = s.roster.map((p, i) => ({ playerId: p.playerId, team: p.team ?? i }))
    const refusal = optionsRefusal(rules, roster, s.options)
    if (refusal) ctx.addIssue({ code: 'custom', path: ['options'], message: refusal })
  })
  .openapi('CreateSession')

const CreatedSession = z.object({
  sessionId: z.string(),
  tokens: z.record(z.string(), z.string()),
})

const createSessionRoute = createRoute({
  method: 'post',
  path: '/',
  summary: 'Create a game session directly (custom games, tests)',
  description:
    'The server draws the seed. Answers the session id and one session token per player, for ' +
    '`GET /v1/sessions/{id}` (socket and plain). With an `Idempotency-Key`, a retry answers the same ' +
    'session (200, fresh tokens) and creates nothing; the same key with another body is 422 ' +
    'idempotency-key-reused. Without one, each request creates a session.',
  middleware: [requireAdmin()] as const,
  request: {
    headers: z.object({
      'idempotency-key': IdempotencyKey.optional().openapi({
        description: 'Unique per session to create; a retry sends the same key',
      }),
    }),
    body: { content: { 'application/json': { schema: CreateSession } }, required: true },
  },
  responses: {
    201: { description: 'Created', content: { 'application/json': { schema: CreatedSession } } },
    200: {
      description: 'Created before, by a request with this Idempotency-Key',
      content: { 'application/json': { schema: CreatedSession } },
    },
    ...problemResponses(400, 401, 403, 413, 415, 422, 503),
  },
})

/**
 * Why board `id` cannot take this session's results, or null; with Neon unreachable, asked of
 * the board itself, which answers from its own storage: a session needs nothing from Neon to
 * start, and game servers' ranked games went on failing for a whole outage.
 */
async function resultsRefusal(c: Context<AppEnv>, id: string) {
  try {
    return await resultsBoardRefusal(c.env, id)
  } catch (err) {
    if (!isDatabaseUnreachable(err)) throw err
    const info = await boardStub(c.env, id).info(id)
    if (!('ok' in info)) return resultsRefusalOf(info.config)
    if (info.problem === 'not-found') return resultsRefusalOf(null)
    // A board that has not kept its configuration asks Neon too.
    throw err
  }
}

/** Whether session `id` was made: its object holds it, or Neon kept it when it was cleared. */
async function madeAlready(c: Context<AppEnv>, id: string): Promise<boolean> {
  if ((await sessionStub(c.env, id).info()).ok) return true
  return (await new NeonSessionStore(c.env).archivedSetupHash(id)) !== null
}

adminSessions.openapi(createSessionRoute, async (c) => {
  const body = c.req.valid('json')
  const key = c.req.valid('header')['idempotency-key']
  let sessionId: string
  let seed: string
  if (key === undefined) {
    sessionId = `s_${crypto.randomUUID()}`
    seed = [...crypto.getRandomValues(new Uint8Array(32))]
      .map((b) => b.toString(16).padStart(2, '0'))
      .join('')
  } else {
    // A retry names the same session with the same secret seed, so the session's own create,
    // idempotent for one setup, makes nothing new; another body under the key is another setup.
    sessionId = `s_k${(await keyedDigest(c.env, `admin-session-id:${key}`)).slice(0, 32)}`
    seed = await keyedDigest(c.env, `admin-session-seed:${key}`)
  }
  // A mistyped board, or one that refuses a win, would drop every result of the game with only
  // a log line to show for it. Not for a keyed retry of a session made already: the board may
  // have changed since (deleted at its event's end), and the retry wants its session's tokens.
  const boardRefusal = body.leaderboardId ? await resultsRefusal(c, body.leaderboardId) : null
  if (boardRefusal !== null && !(key !== undefined && (await madeAlready(c, sessionId)))) {
    throw new ApiError(
      'validation',
      `Leaderboard '${body.leaderboardId}': ${boardRefusal.message}`,
      { errors: [{ path: 'leaderboardId', message: boardRefusal.message }] },
    )
  }
  // A retry may come after the session was played and its storage cleared: the object then asks
  // Neon for its setup's hash, which answers it.
  const r = await sessionStub(c.env, sessionId).create(
    {
      sessionId,
      rules: body.rules,
      roster: body.roster.map((p, i) => ({ playerId: p.playerId, team: p.team ?? i })),
      seed,
      ...(body.options !== undefined ? { options: body.options } : {}),
      queue: body.queue ?? null,
      region: null,
      leaderboardId: body.leaderboardId ?? null,
    },
    { keyed: key !== undefined },
  )
  if (!r.ok && key !== undefined && r.problem === 'conflict') {
    throw new ApiError(
      'idempotency-key-reused',
      'This Idempotency-Key was used to create a different session',
    )
  }
  // The checks above are the session's own, so a refusal here is not expected; it still says why
  // (503: Neon out of reach for a keyed create, or the session cleared while it was asked).
  if (!r.ok) {
    throw new ApiError(
      r.problem,
      r.detail,
      r.problem === 'validation' ? { errors: [{ path: '', message: r.detail }] } : undefined,
      r.problem === 'unavailable' ? { 'retry-after': '1' } : {},
    )
  }
  const tokens: Record<string, string> = {}
  for (const p of body.roster)
    tokens[p.playerId] = await issueSessionToken(c.env, sessionId, p.playerId)
  if (r.created) c.header('location', `/v1/sessions/${encodeURIComponent(sessionId)}`)
  return c.json({ sessionId, tokens }, r.created ? 201 : 200)
})

const endRoute = createRoute({
  method: 'post',
  path: '/{id}/end',
  summary: 'End a live session now (cancel the match)',
  description:
    'For a match that must stop (a cheating report, maintenance, a stuck custom game): an `end` ' +
    'event is logged and broadcast, every socket gets `ended` with the result `cancelled` (no ' +
    'winner, every player at place 1, nobody rated, nothing submitted to a leaderboard), and the ' +
    'result and log go to Neon as for any end. A session already over answers as it ended, so a ' +
    'retry changes nothing.',
  middleware: [requireAdmin(), noBodyFields()] as const,
  request: { params: z.object({ id: SessionId }) },
  responses: {
    200: {
      description: 'The session, ended',
      content: { 'application/json': { schema: SessionView } },
    },
    ...problemResponses(400, 401, 403, 404, 413, 415, 422, 503),
  },
})

adminSessions.openapi(endRoute, async (c) => {
  const { id } = c.req.valid('param')
  const info = await sessionStub(c.env, id).end()
  if (!info.ok && info.problem === 'unavailable') {
    throw new ApiError('unavailable', info.detail, {}, { 'retry-after': String(info.retryAfter) })
  }
  return c.json((await sessionView(c, id, info, { withSetup: true })).view, 200)
})

const listRoute = createRoute({
  method: 'get',
  path: '/',
  summary: 'Sessions as Neon lists them, newest first',
  description:
    'For support and operators: every session, or those of one `status`, one `queue` (a session created ' +
    'without one has none) or with one player on the roster. A session is listed `live` from moments ' +
    'after its creation (its own alarm writes the row) until Neon has its result: one whose end ' +
    'is waiting for Neon stays `live` here until it is written. The whole session, its result ' +
    'and rating changes are `GET /v1/sessions/{id}`. Pass `nextCursor` as `cursor` for older ones.',
  middleware: [requireAdmin()] as const,
  request: {
    query: z.object({
      status: z.enum(['live', 'finished']).optional(),
      queue: ResourceId.optional(),
      playerId: PlayerId.optional(),
      limit: Limit(100, 50),
      cursor: z.string().max(300).optional(),
    }),
  },
  responses: {
    200: {
      description: 'A page of sessions',
      content: {
        'application/json': { schema: SessionPage },
      },
    },
    ...problemResponses(401, 403, 422),
  },
})

adminSessions.openapi(listRoute, async (c) => {
  const { status, queue, playerId, limit, cursor } = c.req.valid('query')
  return c.json(await sessionPage(c.env, { status, queue, playerId, limit }, cursor), 200)
})
