import { z } from '@hono/zod-openapi'
import { getSql } from '../db/client.ts'
import { isoMicros, isoUtc } from '../db/iso-time.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { ResourceId } from '../lib/fields.ts'
import { playerId, requirePlayer } from '../middleware/auth.ts'
import { playerReadLimit } from '../middleware/rate-limit.ts'
import { receivedInvites } from '../parties/store.ts'
import { readProfile } from '../players/profile.ts'
import { Limit, StoredJsonObject } from './leaderboard-schemas.ts'
import { SessionPage, sessionPage } from './session-listing.ts'
import { decodeTimeCursor, encodeTimeCursor } from './time-cursor.ts'

export const playerRoutes = newRouter()

const Reward = z
  .object({
    leaderboardId: z.string(),
    cycle: z.number().int(),
    rank: z.number().int(),
    reward: StoredJsonObject,
    createdAt: z.string(),
    voidedAt: z
      .string()
      .nullable()
      .openapi({ description: 'Voided by an admin (not to be paid); null while it stands' }),
  })
  .openapi('Reward')

const Profile = z
  .object({
    playerId: z.string(),
    name: z.string().nullable(),
    rating: z
      .number()
      .openapi({ description: 'Glicko-2 rating (1500 before a first rated match)' }),
    ratingDeviation: z.number(),
  })
  .openapi('Profile')

const meRoute = createRoute({
  method: 'get',
  path: '/me',
  summary: "The caller's profile: name and rating",
  description:
    'The rating matchmaking uses for the caller; a player Nexus has not seen yet (an identity ' +
    "provider's, before first use) gets what a first join would use: 1500, deviation 350.",
  middleware: [requirePlayer(), playerReadLimit()] as const,
  responses: {
    200: { description: 'The caller', content: { 'application/json': { schema: Profile } } },
    ...problemResponses(401, 403, 429),
  },
})

playerRoutes.openapi(meRoute, async (c) => {
  const { playerId: id, name, rating, ratingDeviation } = await readProfile(c.env, playerId(c))
  return c.json({ playerId: id, name, rating, ratingDeviation }, 200)
})

const rewardsRoute = createRoute({
  method: 'get',
  path: '/me/rewards',
  summary: "The caller's rewards, newest first",
  middleware: [requirePlayer(), playerReadLimit()] as const,
  request: { query: z.object({ limit: Limit(100, 50), cursor: z.string().max(200).optional() }) },
  responses: {
    200: {
      description: 'Rewards; pass nextCursor as cursor for older ones',
      content: {
        'application/json': {
          schema: z.object({ rewards: z.array(Reward), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...problemResponses(401, 403, 422, 429),
  },
})

/** Cursor: the last row's (created_at, leaderboard_id, cycle), so pages are stable. */
function parseCursor(cursor: string | undefined): [string, string, number] | null {
  if (cursor === undefined) return null
  // Exactly what this endpoint issues (its columns are text ids and int4 cycles).
  const { time, rest } = decodeTimeCursor(cursor, (v) =>
    v.length === 2 &&
    typeof v[0] === 'string' &&
    ResourceId.safeParse(v[0]).success &&
    Number.isSafeInteger(v[1]) &&
    (v[1] as number) >= 1 &&
    (v[1] as number) <= 2_147_483_647
      ? ([v[0], v[1] as number] as const)
      : null,
  )
  return [time, rest[0], rest[1]]
}

playerRoutes.openapi(rewardsRoute, async (c) => {
  const me = playerId(c)
  const { limit, cursor } = c.req.valid('query')
  const after = parseCursor(cursor)
  const rows = (await getSql(c.env).query(
    `select leaderboard_id, cycle, rank, reward, created_at, ${isoMicros('created_at')} as created_iso,
            ${isoUtc('voided_at')} as voided_at
       from rewards
      where player_id = $1 and ($2::timestamptz is null or (created_at, leaderboard_id, cycle) < ($2::timestamptz, $3, $4))
      order by created_at desc, leaderboard_id desc, cycle desc limit $5`,
    [me, after?.[0] ?? null, after?.[1] ?? '', after?.[2] ?? 0, limit],
  )) as {
    leaderboard_id: string
    cycle: number
    rank: number
    reward: Record<string, unknown>
    created_iso: string
    voided_at: string | null
  }[]
  const last = rows[rows.length - 1]
  c.header('cache-control', 'private, no-store')
  return c.json(
    {
      rewards: rows.map((r) => ({
        leaderboardId: r.leaderboard_id,
        cycle: r.cycle,
        rank: r.rank,
        reward: r.reward,
        createdAt: r.created_iso,
        voidedAt: r.voided_at,
      })),
      nextCursor:
        rows.length === limit && last
          ? encodeTimeCursor(last.created_iso, last.leaderboard_id, last.cycle)
          : null,
    },
    200,
  )
})

const mySessionsRoute = createRoute({
  method: 'get',
  path: '/me/sessions',
  summary: "The caller's matches, newest first: how each ended, their place and rating change",
  description:
    'Every session with the caller on its roster, live ones included (a live one has no result ' +
    'yet), from Neon: a new session is listed moments after its creation. Pass `nextCursor` as ' +
    '`cursor` for older ones. The whole session is `GET /v1/sessions/{id}`, its log `/events`.',
  middleware: [requirePlayer(), playerReadLimit()] as const,
  request: {
    query: z.object({
      status: z.enum(['live', 'finished']).optional(),
      limit: Limit(50, 20),
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
    ...problemResponses(401, 403, 422, 429),
  },
})

playerRoutes.openapi(mySessionsRoute, async (c) => {
  const { status, limit, cursor } = c.req.valid('query')
  const page = await sessionPage(
    c.env,
    { status, playerId: playerId(c), sinceErasure: true, limit },
    cursor,
  )
  c.header('cache-control', 'private, no-store')
  return c.json(page, 200)
})

const ReceivedInvite = z
  .object({
    partyId: z.string(),
    leader: z.string(),
    invitedAt: z.string(),
    expiresAt: z.string(),
  })
  .openapi('ReceivedPartyInvite')

const partyInvitesRoute = createRoute({
  method: 'get',
  path: '/me/party-invites',
  summary: 'Pending party invites to the caller, newest first',
  description:
    'Unexpired invites only. Accept one with POST /v1/parties/{partyId}/members, decline it with ' +
    'DELETE /v1/parties/{partyId}/invites/me.',
  middleware: [requirePlayer(), playerReadLimit()] as const,
  request: { query: z.object({ limit: Limit(100, 50) }) },
  responses: {
    200: {
      description: 'Invites',
      content: { 'application/json': { schema: z.object({ invites: z.array(ReceivedInvite) }) } },
    },
    ...problemResponses(401, 403, 422, 429),
  },
})

playerRoutes.openapi(partyInvitesRoute, async (c) => {
  const { limit } = c.req.valid('query')
  const invites = await receivedInvites(c.env, playerId(c), limit)
  c.header('cache-control', 'private, no-store')
  return c.json({ invites }, 200)
})
