import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { counter } from '../lib/metrics.ts'
import { ApiError } from '../lib/problem.ts'
import { hitWindow, knownOverWindow, unhitWindow } from '../lib/rate-limit.ts'
import { RecentlyUnknown } from '../lib/recently-unknown.ts'
import { getRedis } from '../lib/redis.ts'
import { boundedInt } from '../lib/config.ts'
import { rateLimitAddress, rateLimitNetwork } from '../core/client-address.ts'
import { joinsPerMinute } from '../matchmaking/config.ts'

const rejections = counter('nexus_rate_limited_total', 'Requests refused by an edge rate limit')

export interface EdgeRateLimitOptions {
  /** Names the limit in keys, metrics and errors. */
  name: string
  /** Requests allowed per window; a function reads it from the environment. */
  limit: number | ((c: Context<AppEnv>) => number)
  windowSeconds?: number
  /** Who is limited; undefined skips the limit for this request. */
  key: (c: Context<AppEnv>) => string | undefined
}

/**
 * Counts this request against an edge limit (a fixed window per key, shared through Redis when
 * configured, per isolate otherwise) and throws the 429 with Retry-After past it (counted in
 * `nexus_rate_limited_total`). Called by a route's handler once its input is validated, not as
 * route middleware, which `@hono/zod-openapi` runs before the validators: a malformed request
 * (422) must cost none of the allowance.
 *
 * @example
 * await enforceEdgeLimit(c, { name: 'guest-auth', limit: 30, key: countedClientIp })
 */
export async function enforceEdgeLimit(
  c: Context<AppEnv>,
  opts: EdgeRateLimitOptions,
): Promise<void> {
  const refusal = await overEdgeLimit(c, opts)
  if (refusal) {
    rejections.inc({ limit: opts.name })
    throw refusal
  }
}

/**
 * Counts this request against an edge limit. Returns the 429 to answer when it is over the
 * limit (not yet counted in `nexus_rate_limited_total`: see `countEdgeRefusal`), else null. For
 * a route that must look at the request before refusing it (a submission's replay is answered
 * past the limit).
 */
export async function overEdgeLimit(
  c: Context<AppEnv>,
  opts: EdgeRateLimitOptions,
  now = Date.now(),
): Promise<ApiError | null> {
  const key = opts.key(c)
  if (key === undefined) return null
  const limit = typeof opts.limit === 'function' ? opts.limit(c) : opts.limit
  const windowMs = (opts.windowSeconds ?? 60) * 1000
  const d = await hitWindow(getRedis(c.env), `${opts.name}:${key}`, limit, windowMs, now)
  if (d.allowed) return null
  return new ApiError(
    'rate-limited',
    `Too many ${opts.name} requests; retry in ${d.retryAfter} s`,
    { retryAfter: d.retryAfter },
    { 'retry-after': String(d.retryAfter) },
  )
}

/**
 * Takes back the hit `overEdgeLimit` counted at `at` for this request, which turned out to be
 * malformed in a way only a later step could tell (a score outside its board's bounds): bad
 * input costs the caller none of the allowance.
 */
export async function refundEdgeHit(
  c: Context<AppEnv>,
  opts: EdgeRateLimitOptions,
  at: number,
): Promise<void> {
  const key = opts.key(c)
  if (key === undefined) return
  await unhitWindow(getRedis(c.env), `${opts.name}:${key}`, (opts.windowSeconds ?? 60) * 1000, at)
}

/** Counts a refusal by the edge limit `name` in `nexus_rate_limited_total`. */
export function countEdgeRefusal(name: string): void {
  rejections.inc({ limit: name })
}

/** CF-Connecting-IP of a subrequest from a Worker on another Cloudflare zone. */
const WORKER_SUBREQUEST_IP = '2a06:98c0:3600::103'

/**
 * The address a per-address limit counts, or none (not counted) for a request without one:
 * Cloudflare names every client's, so such a request was made from inside the runtime (a
 * service binding, a test); one counter shared by all of them would let any lock the others out,
 * as the admin-key guard says too.
 */
export function countedClientIp(c: Context<AppEnv>): string | undefined {
  return c.req.header('cf-connecting-ip') === undefined ? undefined : clientIp(c)
}

/**
 * The IPv6 network (/48) of a counted client, for the wider of two limits; none for IPv4 clients
 * and for Workers of other zones (each counted by its zone).
 */
export function countedClientNetwork(c: Context<AppEnv>): string | undefined {
  const ip = c.req.header('cf-connecting-ip')
  if (ip === undefined || (ip === WORKER_SUBREQUEST_IP && c.req.header('cf-worker'))) return
  return rateLimitNetwork(ip) ?? undefined
}

/**
 * The client's address as Cloudflare reports it, as rate limits count it (IPv6 by its /64).
 * Every Worker on another zone reaches Nexus from one address, Cloudflare's, with the calling
 * Worker's zone in CF-Worker (Cloudflare sets both; a client's request carries its own address):
 * each zone is counted apart, so a stranger's Worker cannot use up the allowance of a studio's
 * game servers running as Workers (its guest sign-ins, its admin key's wrong guesses).
 */
export function clientIp(c: Context<AppEnv>): string {
  const ip = c.req.header('cf-connecting-ip') ?? 'unknown'
  const zone = c.req.header('cf-worker')
  if (ip === WORKER_SUBREQUEST_IP && zone) return `worker:${zone}`
  return rateLimitAddress(ip)
}

/**
 * PLAYER_READS_PER_MINUTE (default 120): a player's own account reads, and the reads of other
 * players' histories the caches miss from one address.
 */
export const playerReadsPerMinute = (c: Context<AppEnv>): number =>
  boundedInt(c.env.PLAYER_READS_PER_MINUTE, 120, 1, 100_000)

/** The calling player, for limits counted per player (a game server's admin key is not). */
function callingPlayer(c: Context<AppEnv>): string | undefined {
  const p = c.get('principal')
  return p?.kind === 'player' ? p.playerId : undefined
}

const PLAYER_READS: EdgeRateLimitOptions = {
  name: 'player-reads',
  limit: playerReadsPerMinute,
  key: callingPlayer,
}

/**
 * Counts a player's read of what Neon keeps for them (their profile, rewards, matches, invites,
 * their history on a board), at most PLAYER_READS_PER_MINUTE a minute in all, and throws the 429
 * past it: each is a query on the deployment's one database, never shared through a cache, and a
 * client reading in a loop (a bug, or many tabs) would otherwise run them without end. Called by
 * the route's handler, once its input is validated, so a malformed read (422) costs the player
 * none of the allowance, as a malformed submission costs none of theirs. The party reads the SDK
 * polls while a member waits are not counted here.
 */
export async function countPlayerRead(c: Context<AppEnv>, playerId?: string): Promise<void> {
  await enforceEdgeLimit(
    c,
    playerId === undefined ? PLAYER_READS : { ...PLAYER_READS, key: () => playerId },
  )
}

const TICKET_CALLS: EdgeRateLimitOptions = {
  name: 'ticket-calls',
  limit: (c) => boundedInt(c.env.TICKET_CALLS_PER_MINUTE, 120, 1, 100_000),
  key: callingPlayer,
}

/**
 * Counts a player's read or cancel of a matchmaking ticket, at most TICKET_CALLS_PER_MINUTE a
 * minute in all (default 120), and throws the 429 past it. Each is a call on the pool that
 * matches the whole queue in that region, one thread with a soft limit of about 1,000 calls a
 * second (a made-up ticket id's, on a pool made up for it): a client polling without `wait`,
 * or cancelling, in a loop would spend its neighbours' share. The SDK's long-polls read about
 * three times a minute (once a second at most when a fifth poll of the same player answers its
 * oldest). A game server's calls (the admin key) are not counted.
 */
export async function countTicketCall(c: Context<AppEnv>): Promise<void> {
  await enforceEdgeLimit(c, TICKET_CALLS)
}

const MATCHMAKING_JOINS: EdgeRateLimitOptions = {
  name: 'matchmaking-joins',
  limit: (c) => joinsPerMinute(c.env),
  key: callingPlayer,
}

/**
 * Counts a player's HTTP join of a queue toward JOINS_PER_MINUTE, before the claim it takes in
 * Neon; returns the 429 to answer past it, which a keyed join sent again does not get when its
 * first try made a ticket (the route asks the pool): so not counted in `nexus_rate_limited_total`
 * here, but by the route when it answers it (countJoinRefused). A game server's joins (the admin
 * key) are not counted: it joins for many players.
 */
export async function overMatchmakingJoins(c: Context<AppEnv>): Promise<ApiError | null> {
  return overEdgeLimit(c, MATCHMAKING_JOINS)
}

/**
 * Counts a join's 429 in `nexus_rate_limited_total` once it is answered: under the replays' limit
 * when a keyed retry passed that too, else under the joins'.
 */
export function countJoinRefused(pastReplays: boolean): void {
  rejections.inc({ limit: pastReplays ? JOIN_REPLAYS.name : MATCHMAKING_JOINS.name })
}

const JOIN_REPLAYS: EdgeRateLimitOptions = {
  name: 'matchmaking-join-replays',
  limit: (c) => joinsPerMinute(c.env),
  key: callingPlayer,
}

/**
 * Counts a keyed join sent past the player's joins (JOINS_PER_MINUTE), which the route answers
 * from the pool when its first try made a ticket, toward as many again; true past it (the join's
 * own 429 is the answer then). A client retries a join a few times, not thirty.
 */
export async function overJoinReplays(c: Context<AppEnv>): Promise<boolean> {
  return (await overEdgeLimit(c, JOIN_REPLAYS)) !== null
}

const MATCHMAKING_CONNECTS: EdgeRateLimitOptions = {
  name: 'matchmaking-connects',
  limit: (c) => 4 * joinsPerMinute(c.env),
  key: callingPlayer,
}

/**
 * Counts a player's socket connect to a queue toward four times JOINS_PER_MINUTE and throws the
 * 429 past it, before the claim each takes in Neon. Not toward the joins themselves: the SDK
 * reconnects to take back a waiting ticket, and a reconnect refused with the joins would let
 * that ticket's disconnect grace run out. The pool counts a socket's `join`s.
 */
export async function countMatchmakingConnect(c: Context<AppEnv>): Promise<void> {
  await enforceEdgeLimit(c, MATCHMAKING_CONNECTS)
}

/**
 * Made-up board or queue ids one client address (an IPv6 client's /64; its /48 ten times as
 * many) may name a minute. Each is a miss of every cache layer, a Neon query, and for a board a
 * fresh Durable Object: a script trying ids cost the deployment all three per request, where
 * the per-isolate memory of an unknown id helps only when the same id comes again. Past it, the
 * address's reads the caches miss naming a board or queue are refused (429) for the rest of the
 * minute; cached answers, early refreshes and submissions go on. An id is counted once a minute
 * per address and isolate: an old client polling a deleted board is not a script trying ids.
 */
export const UNKNOWN_IDS_PER_MINUTE = 60

const UNKNOWN_IDS: EdgeRateLimitOptions = {
  name: 'unknown-ids',
  limit: UNKNOWN_IDS_PER_MINUTE,
  key: (c) => countedClientIp(c),
}

const UNKNOWN_IDS_NETWORK: EdgeRateLimitOptions = {
  name: 'unknown-ids-net',
  limit: 10 * UNKNOWN_IDS_PER_MINUTE,
  key: (c) => countedClientNetwork(c),
}

/**
 * The same, by player: what a player's submissions are judged by, which go through whatever
 * others on their address do (a school's NAT), so a script submitting to made-up boards (each a
 * fresh Durable Object and a Neon read) is stopped by its own token, not its address's.
 */
const UNKNOWN_IDS_PLAYER: EdgeRateLimitOptions = {
  name: 'unknown-ids-player',
  limit: UNKNOWN_IDS_PER_MINUTE,
  key: callingPlayer,
}

/** Ids counted lately, by address or player: each is counted once a minute (in this isolate). */
const countedUnknownIds = new RecentlyUnknown(60_000, 10_000)

/**
 * Counts a made-up id this request named toward UNKNOWN_IDS_PER_MINUTE (it answers 404 anyway),
 * by the client's address and, for a player's request, by the player. Routes count through
 * `countUnknownIdUnlessAdmin` (middleware/unknown-ids.ts).
 */
export async function countUnknownId(c: Context<AppEnv>, id: string): Promise<void> {
  const counted = [UNKNOWN_IDS, UNKNOWN_IDS_PLAYER].flatMap((opts) => {
    const key = opts.key(c)
    if (key === undefined) return []
    const seen = `${opts.name} ${key} ${id}`
    if (countedUnknownIds.has(seen)) return []
    countedUnknownIds.remember(seen)
    return opts === UNKNOWN_IDS ? [UNKNOWN_IDS, UNKNOWN_IDS_NETWORK] : [opts]
  })
  await Promise.all(counted.map((opts) => overEdgeLimit(c, opts)))
}

/**
 * Throws the 429 when this isolate knows the client's address (or its IPv6 /48), or for
 * `by: 'player'` the calling player, to be past UNKNOWN_IDS_PER_MINUTE this minute; asks
 * nobody, so it costs nothing before a board's or Neon's answer.
 */
export function refuseNamerOfUnknownIds(
  c: Context<AppEnv>,
  by: 'address' | 'player' = 'address',
): void {
  const refusal = unknownIdsRefusal(c, by)
  if (refusal) refuseForUnknownIds(refusal)
}

/** The 429 refuseNamerOfUnknownIds would throw, or null; counts nothing. */
export function unknownIdsRefusal(
  c: Context<AppEnv>,
  by: 'address' | 'player' = 'address',
): ApiError | null {
  const now = Date.now()
  const limits = by === 'player' ? [UNKNOWN_IDS_PLAYER] : [UNKNOWN_IDS, UNKNOWN_IDS_NETWORK]
  const over = limits.some((opts) => {
    const key = opts.key(c)
    const limit = opts.limit as number
    return key !== undefined && knownOverWindow(`${opts.name}:${key}`, limit, 60_000, now)
  })
  if (!over) return null
  const retryAfter = Math.max(1, Math.ceil((60_000 - (now % 60_000)) / 1000))
  return new ApiError(
    'rate-limited',
    `Too many requests naming boards or queues that do not exist; retry in ${retryAfter} s`,
    { retryAfter },
    { 'retry-after': String(retryAfter) },
  )
}

/** Throws an unknown-ids refusal, counted. */
export function refuseForUnknownIds(refusal: ApiError): never {
  rejections.inc({ limit: UNKNOWN_IDS.name })
  throw refusal
}

/**
 * A player's party changes a minute (create, invite, withdraw an invite, accept, leave, remove):
 * each is a write transaction in Neon, and a create-and-leave loop had no bound at all. A player
 * forming a party clicks a few of these a minute.
 */
export const PARTY_CHANGES_PER_MINUTE = 60

const PARTY_CHANGES: EdgeRateLimitOptions = {
  name: 'party-changes',
  limit: PARTY_CHANGES_PER_MINUTE,
  key: callingPlayer,
}

/**
 * Counts a player's party change and throws the 429 past PARTY_CHANGES_PER_MINUTE. Called by the
 * route's handler, once its input is validated: a malformed request (422) costs none of it.
 */
export async function countPartyChange(c: Context<AppEnv>): Promise<void> {
  await enforceEdgeLimit(c, PARTY_CHANGES)
}

/**
 * A player's reads of their own party (`GET /v1/parties/me`) a minute: a Neon query each. Apart
 * from PLAYER_READS_PER_MINUTE, which the SDK's polls would use up (every 2 s for each wait of a
 * party member, 30 a minute a wait), and high enough for a member waiting in many queues at once;
 * a client reading in a loop is held to ten a second.
 */
const OWN_PARTY_READS: EdgeRateLimitOptions = {
  name: 'own-party-reads',
  limit: (c) => boundedInt(c.env.OWN_PARTY_READS_PER_MINUTE, 600, 1, 100_000),
  key: callingPlayer,
}

/** Counts a player's read of their own party; the 429 past OWN_PARTY_READS_PER_MINUTE (600). */
export async function countOwnPartyRead(c: Context<AppEnv>): Promise<void> {
  await enforceEdgeLimit(c, OWN_PARTY_READS)
}
