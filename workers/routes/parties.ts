import { z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { INVITE_TTL_SECONDS, MAX_PARTY_SIZE } from '../core/party.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { NewPlayerId, PlayerId } from '../lib/fields.ts'
import { ApiError } from '../lib/problem.ts'
import { within } from '../lib/within.ts'
import { playerId, requirePlayer } from '../middleware/auth.ts'
import { noBodyFields } from '../middleware/json-body.ts'
import { countOwnPartyRead, countPartyChange, countPlayerRead } from '../middleware/rate-limit.ts'
import { cancelStaleTickets } from '../parties/stale-tickets.ts'
import {
  acceptInvite,
  createParty,
  deleteInvite,
  invite,
  partyNotFound,
  partyOfPlayer,
  removeMember,
  visibleParty,
  type PartyCaller,
} from '../parties/store.ts'

/**
 * Parties players form themselves: a leader invites, invitees accept or decline, members leave,
 * and the leader queues the whole party (see docs/matchmaking.md). Player tokens only: the admin
 * key is not a player (a game server that forms parties itself names them on its joins).
 */
export const partyRoutes = newRouter()

const PartyId = z.uuid().openapi({ example: '6f1d2c3b-4a5e-4f60-9a8b-7c6d5e4f3a2b' })

/** A player id, or `me` for the caller. */
const PlayerOrMe = z.union([z.literal('me'), PlayerId])

const Party = z
  .object({
    id: z.string(),
    leader: z.string(),
    members: z
      .array(z.object({ playerId: z.string(), joinedAt: z.string() }))
      .openapi({ description: 'Longest-standing first; the first after the leader leads next' }),
    invites: z
      .array(z.object({ playerId: z.string(), invitedAt: z.string(), expiresAt: z.string() }))
      .openapi({ description: 'Pending invites (expired ones are not listed)' }),
    ticketId: z
      .string()
      .nullable()
      .openapi({
        description:
          'The latest matchmaking ticket the leader made for the party (read it with ' +
          'GET /v1/matchmaking/tickets/{ticketId}); null before the first',
      }),
    tickets: z
      .array(z.string())
      .max(16)
      .openapi({
        description:
          'The latest ticket in each queue and region the party joined since its members last ' +
          'changed, newest first (a party may wait in several queues at once); ended ones too, ' +
          'until a later join of that queue and region replaces them',
      }),
    createdAt: z.string(),
  })
  .openapi('Party')

const partyJson = { 'application/json': { schema: Party } }

/** The caller and their token's age (0 when it does not say, as the older). */
function partyCaller(c: Context<AppEnv>): PartyCaller {
  const p = c.get('principal')
  return { playerId: playerId(c), issuedAt: p?.kind === 'player' ? (p.issuedAt ?? 0) : 0 }
}

/**
 * How long a membership change's answer waits for the pools to cancel the party's old tickets.
 * A pool slower than that (overloaded, unreachable) is waited for after the answer, up to the
 * cancel's own deadline, and the cron takes on what that leaves: a client gives a request about
 * 10 s (the SDK does), and a change that has committed must not come back as a failure it retries.
 */
const CANCEL_WAIT_MS = 2_000

/** The tickets the answer saw cancelled (cancelStaleTickets), the rest going on after it. */
async function cancelBeforeAnswer(
  c: Context<AppEnv>,
  partyId: string,
  tickets: readonly string[],
): Promise<string[]> {
  if (tickets.length === 0) return []
  const cancelling = cancelStaleTickets(c.env, partyId, tickets, { requestId: c.get('requestId') })
  c.executionCtx.waitUntil(cancelling)
  // cancelStaleTickets itself never rejects: a rejection here is the wait running out.
  return within(cancelling, CANCEL_WAIT_MS, 'party ticket cancels').catch(() => [])
}

function resolve(c: Context<AppEnv>, raw: string): string {
  return raw === 'me' ? playerId(c) : raw
}

// ---------------------------------------------------------------------------------------------

const createPartyRoute = createRoute({
  method: 'post',
  path: '/',
  summary: 'Form a party, led by the caller',
  description:
    'The caller becomes the leader and first member. A player is in one party at a time: a ' +
    'member of another party gets 409 (leave it first), except a party as a create leaves it ' +
    '(made in the last 10 minutes, led by the caller alone, no invite or ticket sent from it), ' +
    'answered as it is with 200: a create sent again after its answer was lost gets the party it ' +
    'made. A token issued before its player was erased gets 403.',
  middleware: [requirePlayer(), noBodyFields()] as const,
  // No body, or `{}`; a body that is not JSON, too large or of another type is still refused.
  responses: {
    200: { description: 'The party the caller already leads alone', content: partyJson },
    201: { description: 'The new party', content: partyJson },
    ...problemResponses(400, 401, 403, 409, 413, 415, 422, 429),
  },
})

partyRoutes.openapi(createPartyRoute, async (c) => {
  await countPartyChange(c)
  const { party, created } = await createParty(c.env, partyCaller(c))
  if (created) c.header('location', `/v1/parties/${encodeURIComponent(party.id)}`)
  return c.json(party, created ? 201 : 200)
})

const myPartyRoute = createRoute({
  method: 'get',
  path: '/me',
  summary: "The caller's party",
  middleware: [requirePlayer()] as const,
  responses: {
    200: { description: 'The party', content: partyJson },
    ...problemResponses(401, 403, 404, 429),
  },
})

partyRoutes.openapi(myPartyRoute, async (c) => {
  await countOwnPartyRead(c)
  const party = await partyOfPlayer(c.env, playerId(c))
  if (!party) throw new ApiError('not-found', 'You are in no party')
  c.header('cache-control', 'private, no-store')
  return c.json(party, 200)
})

const PartyParam = z.object({ partyId: PartyId })

const getPartyRoute = createRoute({
  method: 'get',
  path: '/{partyId}',
  summary: 'A party the caller is in or invited to',
  description: 'Members and players with a pending invite read it; for anyone else it is 404.',
  middleware: [requirePlayer()] as const,
  request: { params: PartyParam },
  responses: {
    200: { description: 'The party', content: partyJson },
    ...problemResponses(401, 403, 404, 422, 429),
  },
})

partyRoutes.openapi(getPartyRoute, async (c) => {
  const { partyId } = c.req.valid('param')
  // A query in Neon each: counted as the player's other reads of their own data are.
  await countPlayerRead(c)
  const party = await visibleParty(c.env, partyId, playerId(c))
  if (!party) throw partyNotFound(partyId)
  c.header('cache-control', 'private, no-store')
  return c.json(party, 200)
})

// ---------------------------------------------------------------------------------------------

const InviteBody = z
  .object({
    // `me` names the caller in this API's paths: a member called `me` could not be removed.
    playerId: NewPlayerId.openapi({
      description: 'The player to invite; not `me`, which names the caller in paths',
    }),
  })
  .strict()
  .openapi('PartyInviteRequest')

const inviteRoute = createRoute({
  method: 'post',
  path: '/{partyId}/invites',
  summary: 'Invite a player (leader only)',
  description:
    `The invite can be accepted for ${INVITE_TTL_SECONDS / 60} minutes; inviting the same player ` +
    `again refreshes it (200). A party holds at most ${MAX_PARTY_SIZE} members and pending invites ` +
    'together. 403 for members and invitees who do not lead, 404 for players not in or invited to the party, ' +
    '409 when the player is already a member (the caller included; `member: true`, which a retried invite ' +
    'the player accepted meanwhile gets), the party is full (`limit`), or the player could never ' +
    "accept: banned, or an erased guest's id (`invitable: false`).",
  middleware: [requirePlayer()] as const,
  request: {
    params: PartyParam,
    body: { content: { 'application/json': { schema: InviteBody } }, required: true },
  },
  responses: {
    201: { description: 'Invited; the party', content: partyJson },
    200: { description: 'The invite was refreshed; the party', content: partyJson },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422, 429),
  },
})

partyRoutes.openapi(inviteRoute, async (c) => {
  const { partyId } = c.req.valid('param')
  const body = c.req.valid('json')
  await countPartyChange(c)
  const r = await invite(c.env, partyId, playerId(c), body.playerId)
  // The invite made: revoked or declined there.
  if (r.created) {
    c.header(
      'location',
      `/v1/parties/${encodeURIComponent(partyId)}/invites/${encodeURIComponent(body.playerId)}`,
    )
  }
  return c.json(r.party, r.created ? 201 : 200)
})

const revokeRoute = createRoute({
  method: 'delete',
  path: '/{partyId}/invites/{playerId}',
  summary: 'Revoke an invite (leader) or decline one (the invitee, `me`)',
  description:
    'Idempotent: 204 whether or not an invite was there, once the caller may ask (the invitee ' +
    'for their own invite, the leader for any). 403 for other members and invitees, 404 for ' +
    'anyone else.',
  middleware: [requirePlayer()] as const,
  request: { params: z.object({ partyId: PartyId, playerId: PlayerOrMe }) },
  responses: {
    204: { description: 'No such invite any more' },
    ...problemResponses(401, 403, 404, 422, 429),
  },
})

partyRoutes.openapi(revokeRoute, async (c) => {
  const params = c.req.valid('param')
  await countPartyChange(c)
  await deleteInvite(c.env, params.partyId, playerId(c), resolve(c, params.playerId))
  return c.body(null, 204)
})

// ---------------------------------------------------------------------------------------------

const acceptRoute = createRoute({
  method: 'post',
  path: '/{partyId}/members',
  summary: 'Accept an invite: the caller joins the party',
  description:
    'Consumes the invite. 404 when there is no pending invite (never sent, revoked, declined or ' +
    'expired; the detail says which it can tell); 409 when the caller is in another party (the ' +
    'invite stays: leave, then accept). A member of this party accepting again gets the party (200). ' +
    'A token issued before its player was erased gets 403 (the invite stays), and so does an ' +
    'invite of a party whose leader is banned (it stays, good again once someone else leads). ' +
    "The party's waiting matchmaking ticket, if any, is cancelled (reason `party_changed`): it was " +
    'made without the new member. The answer waits at most 2 s for that (the cancel goes on after ' +
    'it); `ticketId` is null once it has seen the ticket cancelled.',
  middleware: [requirePlayer(), noBodyFields()] as const,
  // No body, or `{}`; a body that is not JSON, too large or of another type is still refused.
  request: { params: PartyParam },
  responses: {
    200: { description: 'The party, with the caller as a member', content: partyJson },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422, 429),
  },
})

partyRoutes.openapi(acceptRoute, async (c) => {
  const { partyId } = c.req.valid('param')
  await countPartyChange(c)
  const { result, staleTickets } = await acceptInvite(c.env, partyId, partyCaller(c))
  const cancelled = await cancelBeforeAnswer(c, partyId, staleTickets)
  if (result.ticketId !== null && cancelled.includes(result.ticketId)) result.ticketId = null
  return c.json(result, 200)
})

const leaveRoute = createRoute({
  method: 'delete',
  path: '/{partyId}/members/{playerId}',
  summary: 'Leave the party (`me`), or remove a member (leader)',
  description:
    'A leader who leaves hands the party to the longest-standing member (one not banned, while ' +
    'there is one); the last member leaving ' +
    "ends the party and its invites. The party's waiting matchmaking ticket, if any, is cancelled " +
    '(reason `party_changed`): it no longer stands for the party; the answer waits at most 2 s for ' +
    'that (the cancel goes on after it). Idempotent: 204 whether or not the ' +
    'player was a member, once the caller may ask. 403 for members and invitees removing someone ' +
    'else without leading, 404 for anyone else.',
  middleware: [requirePlayer()] as const,
  request: { params: z.object({ partyId: PartyId, playerId: PlayerOrMe }) },
  responses: {
    204: { description: 'Not a member any more' },
    ...problemResponses(401, 403, 404, 422, 429),
  },
})

partyRoutes.openapi(leaveRoute, async (c) => {
  const params = c.req.valid('param')
  await countPartyChange(c)
  const { staleTickets } = await removeMember(
    c.env,
    params.partyId,
    playerId(c),
    resolve(c, params.playerId),
  )
  await cancelBeforeAnswer(c, params.partyId, staleTickets)
  return c.body(null, 204)
})
