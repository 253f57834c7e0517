import { z } from '@hono/zod-openapi'
import {
  countUnknownIdUnlessAdmin,
  refuseNamerOfUnknownIdsUnlessAdmin,
} from '../middleware/unknown-ids.ts'
import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { queueWideWaits, waitPercentiles } from '../matchmaking/wait-stats.ts'
import {
  MAX_WAIT_MS,
  SOCKET_CONTEXT_HEADER,
  type PoolProblem,
  type ReattachContext,
  type SocketContext,
  type TicketView,
  type Viewer,
} from '../../durable-objects/match-pool.ts'
import { partyJoinRefusal, soloJoin } from '../core/party.ts'
import {
  authenticate,
  bearer,
  type Principal,
  STALE_TOKEN_DETAIL,
  verifyPlayerToken,
} from '../lib/auth.ts'
import { isDatabaseUnreachable, isTransientDatabaseError } from '../db/client.ts'
import { errorFields, log } from '../lib/log.ts'
import { BEARER_OR_QUERY_TOKEN, createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { IdempotencyKey, NewPlayerId, ResourceId } from '../lib/fields.ts'
import { bannedJoinDetail } from '../players/bans.ts'
import { ApiError, apiErrorFrom, isLoadToShed, overloadedRetryAfter } from '../lib/problem.ts'
import { issueSessionToken } from '../lib/session-token.ts'
import { acceptedSocket, socketOffer } from '../lib/socket-auth.ts'
import { NoAnswerInTime, within } from '../lib/within.ts'
import { cachedRead } from '../lib/read-cache.ts'
import {
  conflictDetail,
  fenceOthers,
  joinsRefused,
  readAndClaim,
  type TokenCaller,
  type JoinRead,
  type QueueClaim,
} from '../matchmaking/claims.ts'
import {
  disconnectGraceMs,
  loadQueueConfig,
  outOfPlay,
  RegionId,
  type QueueConfig,
} from '../matchmaking/config.ts'
import { unknownQueues } from '../matchmaking/unknown-queues.ts'
import { Party, TicketAttributes } from '../matchmaking/protocol.ts'
import { NOT_STORABLE_REASON, storableText } from '../core/rules/json.ts'
import {
  cancelPartyTicket,
  parseTicketId,
  poolFetcher,
  poolStub,
  ticketsOfPool,
} from '../matchmaking/stub.ts'
import { adminKeyGuard, requirePrincipal } from '../middleware/auth.ts'
import {
  countMatchmakingConnect,
  countJoinRefused,
  countTicketCall,
  overJoinReplays,
  overMatchmakingJoins,
} from '../middleware/rate-limit.ts'
import { forgetSettledTickets } from '../parties/stale-tickets.ts'
import { matchmakingPlayer, recordPartyTicket } from '../parties/store.ts'

export const matchmakingRoutes = newRouter()

/** A player's own token as a claim's caller (the admin key has none: a game server's join). */
function tokenCaller(principal: Principal): TokenCaller | undefined {
  return principal.kind === 'player'
    ? { playerId: principal.playerId, issuedAt: principal.issuedAt ?? 0 }
    : undefined
}

const QueueParam = z.object({ queue: ResourceId })

const TicketIdParam = z
  .string()
  .max(160)
  .refine((id) => parseTicketId(id) !== null, 'not a ticket id (queue:region:uuid)')
  .openapi({ example: 'duel:eu:0f8c2a4e-4a1b-4c9e-9b1a-3f5d7e9a1c2b' })

const MatchPlayer = z.object({ playerId: z.string(), team: z.number().int() })

const Ticket = z
  .object({
    ticketId: z.string(),
    queue: z.string(),
    region: z.string(),
    status: z.enum(['waiting', 'matching', 'matched', 'cancelled', 'expired']).openapi({
      description:
        'waiting; matching (the match is made, its session is being created); matched; ' +
        'cancelled (see reason: cancelled, disconnected, queue_changed, session_failed, party_changed, banned, erased); expired',
    }),
    leader: z.string(),
    players: z.array(z.string()),
    attributes: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])).nullable(),
    enqueuedAt: z.number(),
    expiresAt: z.number(),
    expiresIn: z
      .number()
      .int()
      .openapi({
        description:
          'Milliseconds the ticket has left when this answer was made (0 once over): time a wait by ' +
          "this and the device's own clock, which may be far from the server's.",
      }),
    reason: z.string().nullable(),
    match: z
      .object({
        sessionId: z.string(),
        players: z.array(MatchPlayer),
        token: z
          .string()
          .optional()
          .openapi({ description: "The caller's session token (player callers)" }),
        tokens: z
          .record(z.string(), z.string())
          .optional()
          .openapi({ description: 'A session token per player (admin callers)' }),
      })
      .nullable(),
    existing: z.boolean().optional(),
  })
  .openapi('Ticket')

function fail(p: PoolProblem): never {
  // What a pool cannot do now (full, a claim missing during a deploy) it can in a moment.
  const headers: Record<string, string> = p.problem === 'unavailable' ? { 'retry-after': '5' } : {}
  throw new ApiError(p.problem, p.detail, p.extensions ?? {}, headers)
}

function viewerOf(principal: Principal): Viewer {
  return principal.kind === 'admin'
    ? { kind: 'admin' }
    : { kind: 'player', playerId: principal.playerId }
}

/** How old a queue's public stats may be: they change with every join and match. */
const STATS_TTL_SECONDS = 2
/** How long a queue's public settings may be kept after an admin changed them. */
const SETTINGS_TTL_SECONDS = 4

/**
 * A queue this isolate knows does not exist, before the shared cache is asked (cachedRead's
 * `beforeSharedLookup`). Not the client's made-up ids: past those, an address (a carrier's NAT
 * among them) is still served what the caches hold.
 */
function queueNamed(queue: string): void {
  if (unknownQueues.has(queue)) throw missingQueue(queue)
}

function missingQueue(queue: string): ApiError {
  return new ApiError('not-found', `No queue '${queue}'`, {}, { 'cache-control': 'no-store' })
}

async function queueConfig(
  c: Context<AppEnv>,
  queue: string,
  how: { refresh: boolean },
): Promise<{ config: QueueConfig; version: number }> {
  if (unknownQueues.has(queue)) throw missingQueue(queue)
  // An early refresh replaces an answer still good, which is served whatever this says.
  if (!how.refresh) await refuseNamerOfUnknownIdsUnlessAdmin(c)
  const q = await loadQueueConfig(c.env, queue)
  if (!q) {
    unknownQueues.remember(queue)
    await countUnknownIdUnlessAdmin(c, queue)
    throw missingQueue(queue)
  }
  return q
}

function regionOf(config: QueueConfig, region: string | undefined): string {
  if (region === undefined) return config.regions[0]!
  if (!config.regions.includes(region)) {
    throw new ApiError('validation', `Region '${region}' is not one of this queue's regions`, {
      errors: [{ path: 'region', message: `one of: ${config.regions.join(', ')}` }],
    })
  }
  return region
}

/**
 * Completes a join's claim on the queue (one ticket per player per queue, across regions) by
 * fencing the other regions it names, or refuses the join: 409 when one of the players already
 * waits in another region, 503 when a pool cannot be reached. The ticket is named to its own
 * player and the admin key only.
 */
async function fenceForJoin(
  c: Context<AppEnv>,
  queue: string,
  region: string,
  read: JoinRead,
  principal: Principal,
): Promise<QueueClaim> {
  // Validated against the config the claim was checked against: every player has a claim.
  let r: Awaited<ReturnType<typeof fenceOthers>>
  try {
    // Bounded as a socket's connect is: a slow pool elsewhere answers this join 503, not late.
    r = await within(
      fenceOthers(
        c.env,
        queue,
        region,
        read.claimed,
        read.queue!.config.regions,
        principal.kind === 'player' ? principal.playerId : undefined,
      ),
      FENCE_TIMEOUT_MS,
      'fencing other regions',
    )
  } catch (err) {
    log('warn', 'other regions not fenced for a join', {
      requestId: c.get('requestId'),
      queue,
      region,
      ...errorFields(err),
    })
    // An overloaded pool, or one still out at the deadline, is not asked again in a moment (the
    // SDK would, three times, past the joins of everyone else); anything else may pass quickly.
    throw new ApiError(
      'unavailable',
      'The queue cannot be joined now; try again',
      {},
      isLoadToShed(err) ? overloadedRetryAfter() : { 'retry-after': '2' },
    )
  }
  if (r.ok) return r.claim
  const caller = principal.kind === 'admin' ? null : principal.playerId
  const own = caller === null || caller === r.playerId
  throw new ApiError('conflict', conflictDetail(r, caller), {
    players: [r.playerId],
    region: r.region,
    ...(own ? { ticketId: r.ticketId, ticketStatus: r.matching ? 'matching' : 'waiting' } : {}),
  })
}

/** Adds session tokens to a matched ticket: the caller's own, or everyone's for the admin key. */
async function withTokens(c: Context<AppEnv>, ticket: TicketView, viewer: Viewer) {
  if (!ticket.match) return ticket
  const { sessionId } = ticket.match
  if (viewer.kind === 'player') {
    const token = await issueSessionToken(c.env, sessionId, viewer.playerId)
    return { ...ticket, match: { ...ticket.match, token } }
  }
  const tokens: Record<string, string> = {}
  for (const p of ticket.players) tokens[p] = await issueSessionToken(c.env, sessionId, p)
  return { ...ticket, match: { ...ticket.match, tokens } }
}

// ---------------------------------------------------------------------------------------------

const getTicketRoute = createRoute({
  method: 'get',
  path: '/tickets/{ticketId}',
  summary: 'A ticket’s status (long-poll with ?wait=)',
  description:
    'Players read only their own tickets (another player’s ticket is 404); the admin key reads any. ' +
    'With `wait` (seconds, at most 25) a waiting or matching ticket is held until it is matched, ' +
    'cancelled or expired, or the wait ends. A reader holds at most 4 such polls on a ticket: ' +
    'one more answers its oldest at once. A player reads and cancels tickets at most ' +
    'TICKET_CALLS_PER_MINUTE times a minute in all (default 120; 429 with Retry-After past it); ' +
    'the admin key is not limited. ' +
    'A matched ticket carries the session and a session token.',
  middleware: [requirePrincipal()] as const,
  request: {
    params: z.object({ ticketId: TicketIdParam }),
    query: z.object({
      // Seconds, in plain decimal (`1e1` or `0x2` are refused, not read as other numbers).
      wait: z
        .string()
        .regex(/^(0|[1-9][0-9]{0,5})(\.[0-9]{1,3})?$/, 'seconds in decimal, at most 3 decimals')
        .transform(Number)
        .pipe(
          z
            .number()
            .min(0)
            .max(MAX_WAIT_MS / 1000),
        )
        .optional()
        .openapi({ type: 'number', minimum: 0, maximum: MAX_WAIT_MS / 1000 }),
    }),
  },
  responses: {
    200: { description: 'The ticket', content: { 'application/json': { schema: Ticket } } },
    ...problemResponses(401, 404, 422, 429),
  },
})

matchmakingRoutes.openapi(getTicketRoute, async (c) => {
  const { ticketId } = c.req.valid('param')
  const { wait } = c.req.valid('query')
  const { queue, region } = parseTicketId(ticketId)!
  const viewer = viewerOf(c.get('principal')!)
  await countTicketCall(c)
  if (wait !== undefined && wait > 0) c.set('heldOpen', true)
  const r = await poolStub(c.env, queue, region).ticket(
    ticketId,
    viewer,
    Math.round((wait ?? 0) * 1000),
  )
  if (!r.ok) fail(r)
  c.header('cache-control', 'no-store')
  return c.json(await withTokens(c, r.ticket, viewer), 200)
})

const cancelTicketRoute = createRoute({
  method: 'delete',
  path: '/tickets/{ticketId}',
  summary: 'Cancel a waiting ticket',
  description:
    'Any player on the ticket may cancel it (the whole party leaves). Cancelling again answers the ' +
    'same; a ticket already matched or expired, or being matched at that moment, is 409. Counted ' +
    'with the player’s ticket reads (TICKET_CALLS_PER_MINUTE, 429 past it).',
  middleware: [requirePrincipal()] as const,
  request: { params: z.object({ ticketId: TicketIdParam }) },
  responses: {
    200: { description: 'Cancelled', content: { 'application/json': { schema: Ticket } } },
    ...problemResponses(401, 404, 409, 422, 429),
  },
})

matchmakingRoutes.openapi(cancelTicketRoute, async (c) => {
  const { ticketId } = c.req.valid('param')
  const { queue, region } = parseTicketId(ticketId)!
  await countTicketCall(c)
  const r = await poolStub(c.env, queue, region).cancel(ticketId, viewerOf(c.get('principal')!))
  if (!r.ok) fail(r)
  return c.json(r.ticket, 200)
})

/**
 * Notes a party's ticket as the route did before pools noted their own (2026-12-04), for a pool
 * still on that version during a gradual deployment: a ticket left un-noted would escape every
 * membership change. A failed note is logged and the ticket stands, as it did then.
 */
async function noteForOlderPool(
  c: Context<AppEnv>,
  partyId: string,
  ticket: TicketView,
): Promise<void> {
  if (ticket.status !== 'waiting' && ticket.status !== 'matching') return
  try {
    const current = await recordPartyTicket(
      c.env,
      partyId,
      ticket.ticketId,
      ticket.players,
      ticket.enqueuedAt,
    )
    if (current || !(await cancelPartyTicket(c.env, ticket.ticketId))) return
  } catch (err) {
    log('warn', 'party ticket not recorded', {
      partyId,
      ticketId: ticket.ticketId,
      ...errorFields(err),
    })
    return
  }
  throw new ApiError('conflict', 'The party changed while joining; join again with its members', {
    partyId,
  })
}

// ---------------------------------------------------------------------------------------------

/**
 * A region a join names: bounded and storable only, so that one the queue does not have,
 * whatever its shape (`EU`, `us_east`), is answered with the queue's regions (`regionOf`), which
 * is what the player or studio needs. Nothing addresses a pool by it before `regionOf` has found
 * it in the queue.
 */
const RegionName = z
  .string()
  .min(1)
  .max(32)
  // It goes to Neon with the claim, before `regionOf`: PostgreSQL takes no NUL or lone surrogate
  // in text, and would fail the join (500) instead of refusing it.
  .refine(storableText, NOT_STORABLE_REASON)
  .openapi({ example: 'eu' })

const JoinBody = z
  .object({
    region: RegionName.optional().openapi({
      description: "One of the queue's regions (a 422 lists them). Default: its first region",
    }),
    rating: z.unknown().optional().openapi({
      description: 'Ignored: matchmaking uses the rating Nexus stores',
    }),
    party: Party.optional().openapi({
      description:
        'Everyone on the ticket, the leader included. With a player token: exactly the members ' +
        'of the party the caller leads (any order); with the admin key: any players',
    }),
    attributes: TicketAttributes.optional(),
    playerId: NewPlayerId.optional().openapi({
      description: 'With the admin key: the leader (a game server joining for its players)',
    }),
  })
  .strict()
  .openapi('JoinTicket')

const joinRoute = createRoute({
  method: 'post',
  path: '/{queue}/tickets',
  summary: 'Join a queue over plain HTTP',
  description:
    'For clients that cannot hold a socket: poll the ticket (long-poll) until it is matched. A player ' +
    'who already holds a ticket in this pool gets that ticket back (200, `existing: true`), so a ' +
    "party member joining alone gets the party's ticket. Party tickets (several players on one " +
    'team) are made by the leader of a party (POST /v1/parties), naming exactly its members, or ' +
    'by a game server with the admin key; anything else is 403 with the reason in `detail`. A party ' +
    'whose members change while the join is under way gets 409 and no ticket: join again. A ' +
    'player waits in one region of a queue at a time: while a ticket of one of the players waits ' +
    'in another region, the join is 409 naming that `region` (and, to that player and the admin ' +
    'key, its `ticketId`); cancel it to switch regions. With an `Idempotency-Key`, the same join ' +
    'sent again gets the ticket the first one was answered with (200, `existing: true`) in whatever state it is ' +
    'now, matched with its tokens included, for as long as the pool keeps it (10 minutes after it ' +
    'ends); the same key for other players or attributes is 422 idempotency-key-reused. A player ' +
    'joins at most JOINS_PER_MINUTE times a minute (30 by default): past it 429 with Retry-After, ' +
    'but for a keyed join sent again whose first try made a ticket; game servers are not counted.',
  middleware: [requirePrincipal()] as const,
  request: {
    params: QueueParam,
    headers: z.object({
      'idempotency-key': IdempotencyKey.optional().openapi({
        description: 'Unique per logical join; a retry sends the same key',
        example: '0b7c61f2-join-1',
      }),
    }),
    // No body at all is a join with every default (`{}`): the queue's first region, alone.
    body: { content: { 'application/json': { schema: JoinBody } }, required: false },
  },
  responses: {
    201: { description: 'Queued', content: { 'application/json': { schema: Ticket } } },
    200: {
      description: 'The ticket this player already has',
      content: { 'application/json': { schema: Ticket } },
    },
    ...problemResponses(400, 401, 403, 404, 409, 413, 415, 422, 429),
  },
})

matchmakingRoutes.openapi(joinRoute, async (c) => {
  const { queue } = c.req.valid('param')
  const body = c.req.valid('json')
  const joinKey = c.req.valid('header')['idempotency-key'] ?? null
  const principal = c.get('principal')!
  let leader: string
  /** The player-formed party this join is for, once checked against Neon. */
  let partyId: string | null = null
  /** That party's tickets noted before its latest membership change. */
  let staleTickets: readonly string[] = []
  /** Why the player's party does not match the join's roster, when it does not. */
  let rosterRefusal: ApiError | null = null
  /** The player's joins past JOINS_PER_MINUTE: the 429, unless a keyed retry's ticket answers. */
  let joinsRefusal: ApiError | null = null
  /**
   * Neon down (`err`): a keyed retry whose first try made its ticket in the region it names is
   * answered from the pool (its match may be made, a seat waiting), as a socket's connect takes a
   * waiting ticket back. Anything else (`err` thrown) waits for Neon.
   */
  const answeredWithoutNeon = async (err: unknown, ids: string[]) => {
    const prior =
      joinKey !== null &&
      body.region !== undefined &&
      RegionId.safeParse(body.region).success &&
      (isDatabaseUnreachable(err) || isTransientDatabaseError(err))
        ? await poolStub(c.env, queue, body.region)
            .ticketByKey(leader, joinKey, ids, body.attributes ?? null)
            .catch(() => null)
        : null
    if (!prior?.ok) throw err
    const ticket = await withTokens(c, prior.ticket, viewerOf(principal))
    return c.json({ ...ticket, existing: true }, 200)
  }
  if (principal.kind === 'admin') {
    if (!body.playerId) {
      throw new ApiError('validation', 'With the admin key, say which player leads: playerId', {
        errors: [{ path: 'playerId', message: 'required with the admin key' }],
      })
    }
    leader = body.playerId
    if (body.party && !body.party.includes(leader)) {
      throw new ApiError('validation', 'The party must include its leader (playerId)', {
        errors: [{ path: 'party', message: 'must include playerId' }],
      })
    }
  } else {
    if (body.playerId !== undefined && body.playerId !== principal.playerId) {
      throw new ApiError('forbidden', 'Players join only for themselves')
    }
    leader = principal.playerId
    joinsRefusal = await overMatchmakingJoins(c)
    if (body.party && !joinsRefusal) {
      let roster: Awaited<ReturnType<typeof matchmakingPlayer>>['party']
      try {
        roster = (await matchmakingPlayer(c.env, leader)).party
      } catch (err) {
        return answeredWithoutNeon(err, [leader, ...body.party.filter((p) => p !== leader)])
      }
      // Naming only oneself is a solo join for a player in no party; in a party, it would leave
      // the others behind, and is refused like any other party join that misses a member.
      if (!(roster === null && soloJoin(leader, body.party))) {
        const refusal = partyJoinRefusal(roster, leader, body.party)
        if (refusal) rosterRefusal = new ApiError('forbidden', refusal)
        else {
          partyId = roster!.id
          staleTickets = roster!.staleTickets
        }
      }
    }
  }
  const ids = [leader, ...(body.party ?? []).filter((p) => p !== leader)]
  const attributes = body.attributes ?? null
  /**
   * A retry of a keyed join refused now for what changed since its first try (the player joined
   * elsewhere, the queue's regions or party size changed) is answered with the ticket that try
   * got, as it stands (matched, say, its game waiting), when `region`'s pool still keeps it.
   */
  const answeredBefore = async (region: string, refusal: unknown) => {
    if (joinKey === null || !(refusal instanceof ApiError)) throw refusal
    if (refusal.problem !== 'conflict' && refusal.problem !== 'validation') throw refusal
    // A name no region can have has no pool to ask (and none is made up for it).
    if (!RegionId.safeParse(region).success) throw refusal
    const prior = await poolStub(c.env, queue, region).ticketByKey(leader, joinKey, ids, attributes)
    if (!prior) throw refusal
    if (!prior.ok) fail(prior)
    const ticket = await withTokens(c, prior.ticket, viewerOf(principal))
    return c.json({ ...ticket, existing: true }, 200)
  }
  const refusedNow = joinsRefusal ?? rosterRefusal
  if (refusedNow) {
    // Counted as refused only when it is: a keyed retry answered 200 below was not.
    const refuse: (pastReplays?: boolean) => never = (pastReplays = false) => {
      if (joinsRefusal) countJoinRefused(pastReplays)
      throw refusedNow
    }
    // A keyed retry whose first try was answered before the party changed (a member left since,
    // say), or before the player's joins ran past their allowance, gets that answer, as the
    // socket's join does: its ticket may be matched, a seat waiting.
    if (joinKey === null) refuse()
    // Past the joins, each such retry is still a Neon read and a pool's answer: counted apart,
    // or a player over their allowance would have both for every request they sent.
    if (joinsRefusal && (await overJoinReplays(c))) refuse(true)
    const stored = await loadQueueConfig(c.env, queue)
    const region = body.region ?? stored?.config.regions[0]
    // Only a pool the queue has had may hold the ticket: a made-up name would make up a pool.
    if (region === undefined || !stored?.knownRegions.includes(region)) refuse()
    const prior = await poolStub(c.env, queue, region).ticketByKey(leader, joinKey, ids, attributes)
    if (!prior?.ok) refuse()
    const ticket = await withTokens(c, prior.ticket, viewerOf(principal))
    return c.json({ ...ticket, existing: true }, 200)
  }
  // The queue, the ratings and the players' claims on the queue, in one Neon round trip.
  let read: JoinRead
  try {
    read = await readAndClaim(c.env, queue, body.region, ids, tokenCaller(principal))
  } catch (err) {
    return answeredWithoutNeon(err, ids)
  }
  if (!read.queue) throw new ApiError('not-found', `No queue '${queue}'`)
  if (read.banned.length > 0) throw new ApiError('forbidden', bannedJoinDetail(leader, read.banned))
  if (read.staleToken) throw new ApiError('forbidden', STALE_TOKEN_DETAIL)
  if (read.erasedMembers.length > 0) {
    throw new ApiError('conflict', 'The party changed while joining; join again with its members', {
      partyId,
    })
  }
  const { config, version } = read.queue
  const { ratings } = read
  let region: string
  try {
    region = regionOf(config, body.region)
    // Refused here, before the pool is asked (its fences too); a keyed retry still gets the
    // ticket its first try made.
    const out = outOfPlay(config)
    if (out) throw new ApiError('conflict', out.detail, out.extensions)
    if (ids.length > config.maxPartySize) {
      throw new ApiError('validation', `A ticket holds at most ${config.maxPartySize} players`, {
        errors: [{ path: 'party', message: `at most ${config.maxPartySize} players` }],
      })
    }
  } catch (err) {
    return answeredBefore(body.region ?? config.regions[0]!, err)
  }
  let claim: QueueClaim
  try {
    claim = await fenceForJoin(c, queue, region, read, principal)
  } catch (err) {
    // Its ticket answered (matched, say) before the player joined elsewhere: that, not the other
    // region's conflict; counted as refused only when it is.
    try {
      return await answeredBefore(region, err)
    } catch (refused) {
      if (refused === err && err instanceof ApiError && err.problem === 'conflict') {
        joinsRefused.inc({ queue, region, reason: 'other_region' })
      }
      throw refused
    }
  }
  const stale = ticketsOfPool(staleTickets, queue, region)
  const r = await poolStub(c.env, queue, region).join({
    queue,
    region,
    config,
    version,
    players: ids.map((playerId) => ({ playerId, rating: ratings.get(playerId)! })),
    attributes,
    claim,
    joinKey,
    partyId,
    byServer: principal.kind === 'admin',
    staleTickets: stale,
  })
  if (!r.ok) fail(r)
  // The pool settled them (cancelled those still waiting); a note left behind the cron forgets.
  if (partyId) {
    await forgetSettledTickets(c.env, partyId, stale, r.staleCancelled, {
      requestId: c.get('requestId'),
    })
  }
  // A pool of the version before this one (a gradual deployment) does not note the ticket.
  if (partyId && r.partyChanged === undefined) await noteForOlderPool(c, partyId, r.ticket)
  // The pool noted the ticket on the party, and found the members changed since this join read
  // them: the ticket is cancelled, and the party joins again as it now is.
  if (r.partyChanged) {
    throw new ApiError('conflict', 'The party changed while joining; join again with its members', {
      partyId,
    })
  }
  const ticket = await withTokens(c, r.ticket, viewerOf(principal))
  if (!r.existing)
    c.header('location', `/v1/matchmaking/tickets/${encodeURIComponent(ticket.ticketId)}`)
  return c.json({ ...ticket, existing: r.existing }, r.existing ? 200 : 201)
})

/** A socket connect waits this long for the other regions' pools, then connects without a claim. */
const FENCE_TIMEOUT_MS = 5_000

/**
 * The player's claim on the queue for a socket, taken at connect (with the rating) so a `join` on
 * it needs no Neon. Without one (the player waits in another region, or a pool did not answer in
 * time) the socket still opens: its `join` takes the claim then, and says why if it cannot.
 */
async function connectClaim(
  c: Context<AppEnv>,
  queue: string,
  region: string,
  read: JoinRead,
  playerId: string,
): Promise<SocketContext['claim']> {
  try {
    const r = await within(
      fenceOthers(c.env, queue, region, read.claimed, read.queue!.config.regions, playerId),
      FENCE_TIMEOUT_MS,
      'fencing other regions',
    )
    return r.ok && Object.hasOwn(r.claim.versions, playerId)
      ? { version: r.claim.versions[playerId]!, claimedAt: r.claim.claimedAt }
      : null
  } catch (err) {
    log('warn', 'other regions not fenced at connect', {
      requestId: c.get('requestId'),
      queue,
      region,
      ...errorFields(err),
    })
    return null
  }
}

// ---------------------------------------------------------------------------------------------

const Percentiles = z.object({ p50: z.number().nullable(), p95: z.number().nullable() })

const statsRoute = createRoute({
  method: 'get',
  path: '/{queue}/stats',
  summary: 'Waiting players, match rate and wait times of a queue',
  description:
    'Waiting per region, matches created in the last minute, and the median and 95th percentile ' +
    'wait (join to match, seconds) over each region’s last 500 matched tickets of the last hour ' +
    '(the whole queue’s: over the span every region’s samples cover, so that each region counts ' +
    'by its share of the matches). Served through ' +
    'the read caches, at most 2 s old (`Cache-Control: no-cache` asks for a fresh answer, limited ' +
    'per client address as on leaderboard reads).',
  request: { params: QueueParam },
  responses: {
    200: {
      description: 'Stats',
      content: {
        'application/json': {
          schema: z.object({
            queue: z.string(),
            waitingTickets: z.number().int(),
            waitingPlayers: z.number().int(),
            matchesPerMinute: z.number().int(),
            waitSeconds: Percentiles,
            regions: z.array(
              z.object({
                region: z.string(),
                available: z.boolean().openapi({
                  description:
                    'False when the region’s pool did not answer in time: its figures are 0 and ' +
                    'left out of the queue’s',
                }),
                waitingTickets: z.number().int(),
                waitingPlayers: z.number().int(),
                matchesPerMinute: z.number().int(),
                waitSeconds: Percentiles,
              }),
            ),
          }),
        },
      },
    },
    ...problemResponses(404, 422, 429),
  },
})

/**
 * A region's pool that has not given its stats within this is answered as unavailable: well under
 * the answer's 2 s in the caches, so that the answer is cached (an answer is dated from when its
 * load began, and one 3 s in the making was stale as it was stored, each read waiting again).
 */
const STATS_POOL_MS = 1_000

/** The public stats' wait figures: the median and 95th percentile, in seconds. */
function p50p95(samplesMs: readonly number[]) {
  const { p50, p95 } = waitPercentiles(samplesMs)
  return { p50, p95 }
}

matchmakingRoutes.openapi(statsRoute, (async (c: Context<AppEnv>) => {
  const queue = c.req.param('queue')!
  // Public and unauthenticated, and each answer asks Neon and every region's pool (which are busy
  // matching): served through the read caches, a couple of seconds old at most.
  return cachedRead(c, {
    key: `mm:${queue}:stats`,
    ttlSeconds: STATS_TTL_SECONDS,
    visibility: 'public',
    beforeSharedLookup: () => queueNamed(queue),
    load: async (how) => {
      const { config } = await queueConfig(c, queue, how)
      // Each region on its own: one pool failing or slow (a location in trouble) leaves the
      // others' figures for every lobby screen, where it took the whole answer with it.
      const settled = await Promise.allSettled(
        config.regions.map((region) =>
          within(poolStub(c.env, queue, region).stats(region), STATS_POOL_MS, 'region stats'),
        ),
      )
      const pools = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []))
      if (pools.length === 0) throw (settled[0] as PromiseRejectedResult).reason
      settled.forEach((r, i) => {
        if (r.status === 'rejected') {
          log('warn', 'region stats not read', {
            requestId: c.get('requestId'),
            queue,
            region: config.regions[i],
            ...errorFields(r.reason),
          })
        }
      })
      return {
        queue,
        waitingTickets: pools.reduce((n, p) => n + p.waitingTickets, 0),
        waitingPlayers: pools.reduce((n, p) => n + p.waitingPlayers, 0),
        matchesPerMinute: pools.reduce((n, p) => n + p.matchesLastMinute, 0),
        waitSeconds: p50p95(queueWideWaits(pools)),
        regions: settled.map((r, i) =>
          r.status === 'fulfilled'
            ? {
                region: r.value.region,
                available: true,
                waitingTickets: r.value.waitingTickets,
                waitingPlayers: r.value.waitingPlayers,
                matchesPerMinute: r.value.matchesLastMinute,
                waitSeconds: p50p95(r.value.waitSamplesMs),
              }
            : {
                region: config.regions[i]!,
                available: false,
                waitingTickets: 0,
                waitingPlayers: 0,
                matchesPerMinute: 0,
                waitSeconds: { p50: null, p95: null },
              },
        ),
      }
    },
  })
}) as never)

// ---------------------------------------------------------------------------------------------

/**
 * How long a socket's reconnect waits for the Neon round trip of its claim before taking its
 * waiting ticket back without it: well inside the SDK's 6 s before it falls back to HTTP, and
 * the queue's disconnect grace (10 s at least).
 */
export const RECONNECT_NEON_WAIT_MS = 3_000

const socketRoute = createRoute({
  method: 'get',
  path: '/{queue}',
  summary: 'Join a queue over a WebSocket (or, without an upgrade, read the queue)',
  // The plain read needs no credential; the socket needs either.
  security: [{}, ...BEARER_OR_QUERY_TOKEN],
  description:
    'With `Upgrade: websocket` and a player token (`Authorization: Bearer …`; browsers, which ' +
    'cannot set it: the subprotocols `nexus.v1` and `nexus.token.<token>`, answered with ' +
    '`nexus.v1`; or `?token=`, which logs keep): send `{"type":"join"}` (a party leader adds ' +
    '`"party"`: every member\'s id, as Neon holds the party at that join); receive `{"type":"queued","ticketId"}`, then ' +
    '`{"type":"match_found","sessionId","token","players"}` (or `expired` / `cancelled`). Send ' +
    '`{"type":"cancel"}` to leave. A bad frame gets `{"type":"error","code","message"}` and changes ' +
    "nothing. Closing the socket cancels the ticket after the queue's `disconnectGraceSeconds` " +
    '(10 s by default) unless the player reconnects. ' +
    'A player holds at most 4 sockets on one pool; a 5th is 409. A `join` while the player ' +
    'waits in another region of the queue gets an `error` with code `conflict`. ' +
    'Without an upgrade: the queue’s public settings, through the read caches (at most 4 s old).',
  request: {
    params: QueueParam,
    query: z.object({
      region: RegionName.optional(),
      token: z.string().max(4096).optional(),
    }),
  },
  responses: {
    101: { description: 'Switching protocols (WebSocket)' },
    200: {
      description: 'The queue’s public settings',
      content: {
        'application/json': {
          schema: z.object({
            queue: z.string(),
            teams: z.number().int(),
            teamSize: z.number().int(),
            rules: z.string(),
            regions: z.array(z.string()),
            maxPartySize: z.number().int(),
            ticketTtlSeconds: z.number().int(),
            disconnectGraceSeconds: z.number().int(),
            paused: z.boolean().openapi({
              description: 'Out of play for now: joins are refused (409)',
            }),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 409, 422),
  },
})

matchmakingRoutes.openapi(socketRoute, (async (c: Context<AppEnv>) => {
  const queue = c.req.param('queue')!
  const query = c.req.query()
  if (c.req.header('upgrade')?.toLowerCase() !== 'websocket') {
    return cachedRead(c, {
      key: `mm:${queue}:settings`,
      ttlSeconds: SETTINGS_TTL_SECONDS,
      visibility: 'public',
      beforeSharedLookup: () => queueNamed(queue),
      load: async (how) => {
        const { config } = await queueConfig(c, queue, how)
        return {
          queue,
          teams: config.teams,
          teamSize: config.teamSize,
          rules: config.rules,
          regions: config.regions,
          maxPartySize: config.maxPartySize,
          ticketTtlSeconds: config.ticketTtlSeconds,
          disconnectGraceSeconds: disconnectGraceMs(config) / 1000,
          paused: outOfPlay(config) !== null,
        }
      },
    })
  }
  // Before any upgrade: an unauthenticated socket never opens.
  const header = bearer(c.req.header('authorization'))
  const offer = socketOffer(c.req.header('sec-websocket-protocol'))
  const credential = header ?? offer.token ?? query.token
  if (!credential) {
    throw new ApiError(
      'unauthorized',
      'Send "Authorization: Bearer <token>", or the subprotocol "nexus.token.<token>" beside "nexus.v1"',
    )
  }
  // Sockets are for players: outside the Authorization header, only a player token counts, and
  // the admin key is not even compared (a URL ends up in logs), so an answer never confirms a
  // key someone put there.
  const principal = header
    ? await authenticate(c.env, credential, adminKeyGuard(c))
    : await verifyPlayerToken(c.env, credential)
  c.set('principal', principal)
  if (principal.kind !== 'player') {
    throw new ApiError('forbidden', 'Matchmaking sockets are for players; game servers use HTTP')
  }
  await countMatchmakingConnect(c)
  // The rating and the claim are taken once per socket, with the queue, in one Neon round trip;
  // a party is read by the pool when a `join` names one.
  const caller = tokenCaller(principal)!
  // A region a pool may be named by (a malformed one is refused by the full path, once read).
  const reattachable = query.region !== undefined && RegionId.safeParse(query.region).success
  const reading = readAndClaim(c.env, queue, query.region, [principal.playerId], caller)
  reading.catch(() => {})
  /**
   * A connect that only takes back what the pool of `region` holds for the player without Neon:
   * their waiting ticket, or a match made while they were away.
   */
  const reattachOnly = (region: string, answerBy?: number) => {
    const context: ReattachContext = {
      reattachOnly: true,
      playerId: principal.playerId,
      tokenIssuedAt: caller.issuedAt,
      ...(principal.expiresAt !== undefined ? { tokenExpiresAt: principal.expiresAt } : {}),
      ...(answerBy !== undefined ? { answerBy } : {}),
    }
    const headers = new Headers({ upgrade: 'websocket' })
    headers.set(SOCKET_CONTEXT_HEADER, JSON.stringify(context))
    return poolFetcher(c.env, queue, region).fetch(
      new Request('https://match-pool/socket', { headers }),
    )
  }
  let read: JoinRead
  try {
    // A connect naming a region (a reconnect names the one its `queued` said) waits for Neon a
    // few seconds only before trying to take a waiting ticket back without it: after a deploy
    // every queued player reconnects at once, and a Neon slowed by that, or waking, would hold
    // each past the SDK's few seconds before it falls back to HTTP, and into the ticket's grace.
    read = reattachable
      ? await within(reading, RECONNECT_NEON_WAIT_MS, 'the claim of a connect')
      : await reading
  } catch (err) {
    // Neon down: a player whose ticket waits in the region named (the SDK names the one its
    // `queued` said) may still take it back, so a dropped socket does not cost the ticket.
    if (!reattachable || query.region === undefined) throw err
    const slow = err instanceof NoAnswerInTime
    if (!slow && !isDatabaseUnreachable(err) && !isTransientDatabaseError(err)) throw err
    log('warn', 'socket connect without Neon: taking a waiting ticket back only', {
      requestId: c.get('requestId'),
      queue,
      region: query.region,
      ...errorFields(err),
    })
    const res = await reattachOnly(query.region)
    if (res.status === 101) return acceptedSocket(res, offer)
    if (!slow) throw await apiErrorFrom(res)
    // Neon slow, not down, and no ticket of theirs waiting there (a first join naming its
    // region, a match made while they were away): the connect goes on once Neon answers, or
    // fails at its deadline as any.
    await res.body?.cancel()
    read = await reading
  }
  if (!read.queue) throw new ApiError('not-found', `No queue '${queue}'`)
  if (read.banned.length > 0) throw new ApiError('forbidden', 'This player is banned')
  if (read.staleToken) throw new ApiError('forbidden', STALE_TOKEN_DETAIL)
  const { config, version } = read.queue
  let region: string
  try {
    region = regionOf(config, query.region)
  } catch (err) {
    // A region taken out of the queue since the player's ticket there was matched, while they
    // were away: its pool still owes them the match (only a region the queue had has a pool).
    if (!reattachable || query.region === undefined) throw err
    const stored = await loadQueueConfig(c.env, queue)
    if (!stored?.knownRegions.includes(query.region)) throw err
    // Bounded: the region may have been taken out because its pool does not answer. A pool that
    // answers later takes nothing: the match it owes waits for the next connect.
    const waitMs = FENCE_TIMEOUT_MS / 2
    // The pool's clock stands still while it computes: its answer's way back gets most of the
    // margin.
    const res = await within(
      reattachOnly(query.region, Date.now() + waitMs - 1500),
      waitMs,
      'a removed region',
    ).catch((e: unknown) => (e instanceof NoAnswerInTime ? null : undefined))
    if (res?.status === 101) return acceptedSocket(res, offer)
    await res?.body?.cancel()
    // Its pool did not answer in time: what it may owe is kept for a connect sent again. (A
    // pool that fails outright, or answers, leaves the region's own refusal.)
    if (res === null) {
      throw new ApiError(
        'unavailable',
        `Region '${query.region}' was taken out of this queue, and its pool did not answer in time; try again`,
        {},
        { 'retry-after': '1' },
      )
    }
    throw err
  }
  const context: SocketContext = {
    queue,
    region,
    config,
    version,
    playerId: principal.playerId,
    tokenIssuedAt: caller.issuedAt,
    ...(principal.expiresAt !== undefined ? { tokenExpiresAt: principal.expiresAt } : {}),
    rating: read.ratings.get(principal.playerId)!,
    claim: await connectClaim(c, queue, region, read, principal.playerId),
  }
  const headers = new Headers({ upgrade: 'websocket' })
  headers.set(SOCKET_CONTEXT_HEADER, JSON.stringify(context))
  const res = await poolFetcher(c.env, queue, region).fetch(
    new Request('https://match-pool/socket', { headers }),
  )
  if (res.status === 101) return acceptedSocket(res, offer)
  throw await apiErrorFrom(res)
}) as never)
