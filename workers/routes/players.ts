import { z } from '@hono/zod-openapi'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { playerId, requirePlayer } from '../middleware/auth.ts'
import { countPlayerRead } from '../middleware/rate-limit.ts'
import { receivedInvites } from '../parties/store.ts'
import { readProfile } from '../players/profile.ts'
import { Limit } from './leaderboard-schemas.ts'
import { RewardPage, RewardsQuery, rewardPage } from './reward-page.ts'
import { SessionPage, sessionPage } from './session-listing.ts'

export const playerRoutes = newRouter()

const Profile = z
  .object({
    playerId: z.string(),
    name: z.string().nullable(),
    rating: z
      .number()
      .openapi({ description: 'Glicko-2 rating (1500 before a first rated match)' }),
    ratingDeviation: z.number().openapi({
      description:
        "How sure the rating is, as it stands now: grown by each day since the player's last " +
        'rated match (what a match ending now starts from)',
    }),
  })
  .openapi('Profile')

const meRoute = createRoute({
  method: 'get',
  path: '/me',
  summary: "The caller's profile: name and rating",
  description:
    'The rating matchmaking uses for the caller; a player Nexus has not seen yet (an identity ' +
    "provider's, before first use) gets what a first join would use: 1500, deviation 350.",
  middleware: [requirePlayer()] as const,
  responses: {
    200: { description: 'The caller', content: { 'application/json': { schema: Profile } } },
    ...problemResponses(401, 403, 429),
  },
})

playerRoutes.openapi(meRoute, async (c) => {
  await countPlayerRead(c)
  const { playerId: id, name, rating, ratingDeviation } = await readProfile(c.env, playerId(c))
  return c.json({ playerId: id, name, rating, ratingDeviation }, 200)
})

const rewardsRoute = createRoute({
  method: 'get',
  path: '/me/rewards',
  summary: "The caller's rewards, newest first",
  middleware: [requirePlayer()] as const,
  request: { query: RewardsQuery },
  responses: {
    200: {
      description: 'Rewards; pass nextCursor as cursor for older ones',
      content: { 'application/json': { schema: RewardPage } },
    },
    ...problemResponses(401, 403, 422, 429),
  },
})

playerRoutes.openapi(rewardsRoute, async (c) => {
  const page = await rewardPage(c.env, playerId(c), c.req.valid('query'), {
    sinceErasure: true,
    beforeQuery: () => countPlayerRead(c),
  })
  c.header('cache-control', 'private, no-store')
  return c.json(page, 200)
})

const mySessionsRoute = createRoute({
  method: 'get',
  path: '/me/sessions',
  summary: "The caller's matches, newest first: how each ended, their place and rating change",
  description:
    'Every session with the caller on its roster since their erasure, if any, live ones ' +
    'included (a live one has no result yet), from Neon: a new session is listed moments after ' +
    'its creation. Pass `nextCursor` as `cursor` for older ones. The whole session is ' +
    '`GET /v1/sessions/{id}`, its log `/events`.',
  middleware: [requirePlayer()] as const,
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
    () => countPlayerRead(c),
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
    'Unexpired invites only, and none of a party led by a banned player (it cannot queue). Accept ' +
    'one with POST /v1/parties/{partyId}/members, decline it with ' +
    'DELETE /v1/parties/{partyId}/invites/me.',
  middleware: [requirePlayer()] as const,
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
  await countPlayerRead(c)
  const { limit } = c.req.valid('query')
  const invites = await receivedInvites(c.env, playerId(c), limit)
  c.header('cache-control', 'private, no-store')
  return c.json({ invites }, 200)
})
