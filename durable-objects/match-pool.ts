import { DurableObject } from 'cloudflare:workers'
import { AlarmFailures, backOffAlarm, spreadBackoffMs } from '../workers/lib/alarm-backoff.ts'
import { defaultRating } from '../workers/core/rating.ts'
import {
  MatchIndex,
  type Match,
  type QueueRules,
  type TicketPlayer,
} from '../workers/core/matching.ts'
import { partyJoinRefusal, soloJoin } from '../workers/core/party.ts'
import { exceedsUtf8Bytes } from '../workers/core/rules/json.ts'
import type { Env } from '../workers/env.ts'
import {
  DEFAULT_DISCONNECT_GRACE_SECONDS,
  disconnectGraceMs,
  joinsPerMinute,
  outOfPlay,
  type QueueConfig,
} from '../workers/matchmaking/config.ts'
import {
  CLIENT_MESSAGE_TYPES,
  ClientMessage,
  MAX_CLIENT_FRAME_BYTES,
  type ErrorCode,
  type MatchPlayer,
  type ServerMessage,
  type TicketAttributesValue,
} from '../workers/matchmaking/protocol.ts'
import {
  gameSessionCreator,
  newSeed,
  type CreateSessionResult,
  type SessionCreator,
  type SessionSetup,
} from '../workers/matchmaking/session.ts'
import { CLOCK_SKEW_SECONDS, STALE_TOKEN_DETAIL } from '../workers/lib/auth.ts'
import {
  CLAIM_MAX_AGE_MS,
  claimQueue,
  conflictDetail,
  FENCE_RETENTION_MS,
  joinsRefused,
  MATCH_GIVE_UP_MS,
  type FenceEntry,
  type FenceReply,
  type QueueClaim,
} from '../workers/matchmaking/claims.ts'
import { newTicketId, ticketsOfPool } from '../workers/matchmaking/stub.ts'
import { forgetSettledTickets } from '../workers/parties/stale-tickets.ts'
import {
  matchmakingPlayer,
  recordPartyTicket,
  type MatchmakingPlayer,
} from '../workers/parties/store.ts'
import { errorFields, log, configureLog, withoutCredentials } from '../workers/lib/log.ts'
import { counter, gauge, histogram } from '../workers/lib/metrics.ts'
import {
  guardedAlarm,
  sendMetricsAtAlarm,
  sendMetricsNow,
  sendMetricsSoon,
} from '../workers/lib/metrics-flush.ts'
import { canonicalJson } from '../workers/lib/canonical-json.ts'
import type { WaitSamples } from '../workers/matchmaking/wait-stats.ts'
import { takeToken, type Bucket } from '../workers/lib/token-bucket.ts'
import { OPEN_CONNECTIONS, settleAtMost } from '../workers/lib/settle-at-most.ts'
import {
  farTooLarge,
  FLOOD_CLOSE,
  OVERSIZED_CLOSE,
  refusedTooOften,
  type RefusalCounts,
} from '../workers/lib/flood.ts'
import { databaseRetryAfter, problemResponse, type ProblemType } from '../workers/lib/problem.ts'
import { issueSessionToken } from '../workers/lib/session-token.ts'
import {
  answerClose,
  closeSilent,
  closingSince,
  fellSilent,
  SILENT_SOCKET_MS,
} from '../workers/lib/socket-close.ts'
import {
  all,
  hasTable,
  metaValuesIfReadable,
  insertRows,
  one,
  schemaVersion,
  setSchemaVersion,
} from '../workers/lib/sql.ts'
import { within } from '../workers/lib/within.ts'
import { CoarseTimers } from '../workers/lib/coarse-timers.ts'
import { bannedJoinDetail } from '../workers/players/bans.ts'

/*
 * MatchPool: the waiting room of one queue in one region, addressed as
 * `env.MATCH_POOL.getByName(`${queue}:${region}`)`. Decisions:
 *
 * - Tickets. Ids are `queue:region:uuid`, so `GET /v1/matchmaking/tickets/:id` finds the pool
 *   from the id alone (parsed strictly by `parseTicketId`). A ticket's players, ratings, times
 *   and state live in SQLite; the rating-ordered `MatchIndex` is rebuilt from the waiting rows
 *   whenever the object wakes, so an evicted pool loses nothing.
 * - States: waiting → matching (match persisted, session not yet confirmed) → matched; or
 *   waiting → cancelled (by the player, a disconnect past the grace, a queue change that no
 *   longer fits it) or expired (its TTL passed). Finished tickets stay readable for
 *   RESULT_RETENTION_MS (so a long-polling client picks up its match), then are swept.
 * - One active ticket per player per pool (the `active` table's primary key). A second join by
 *   the same player returns the ticket it already has (waiting or matching) with
 *   `existing: true`: joins are idempotent, and a socket that reconnects simply re-attaches. A
 *   party ticket naming a player who already waits elsewhere in the pool is refused (conflict).
 *   Two regions of a queue are two pools; a player waits in one of them at a time (claims and
 *   fences, below and docs/matchmaking.md, "One ticket per queue").
 * - Ratings come from the Worker (Neon `players`, 1500 for unknown players); whatever a client
 *   sends as `rating` is ignored. A socket's rating is read when it connects.
 * - Parties: one ticket, several players, always on one team. A game server with the admin key
 *   names any party over HTTP. Players form parties themselves (Neon `parties`, see
 *   workers/parties/store.ts); a player's join may name a party only when the player leads one
 *   and names exactly its members, checked against Neon at that join (by the Worker over HTTP,
 *   by the pool for a socket's `join` frame). When a party ticket is made, the members' open
 *   sockets in this pool are attached to it and told (`queued`), so they get `match_found`
 *   without joining themselves. The ticket is recorded on the party in Neon (`ticketId`, for
 *   members who poll over HTTP) only if the members are still the ticket's players; if they
 *   changed meanwhile the ticket is cancelled (`party_changed`). A membership change after the
 *   record (accept, leave, remove) cancels the recorded ticket the same way (parties routes).
 * - A match is made in one synchronous step: `findMatches` takes the tickets out of the index and
 *   the same `transactionSync` writes the match (session id, roster and seed fixed forever),
 *   moves its tickets to `matching` and takes the lease of the first creation attempt (the alarm
 *   is armed for its end before the call). Only then is the GameSession created, with that
 *   stored setup; `create` is idempotent per session id, so a retry (from the alarm, after a
 *   failure or an eviction mid-call) never makes a second session. On success the tickets become `matched`
 *   and every connected member gets `match_found` with a token for that session and player.
 *   Failures back off (1 s doubling to 60 s); after MAX_CREATE_ATTEMPTS, or a refusal that no
 *   retry can fix, the match is abandoned and its tickets cancelled (`session_failed`): tickets
 *   never return to the pool, so no player can end up in two matches.
 * - Sockets use the hibernation API: tag `p:<playerId>`, attachment `{playerId, rating,
 *   ticketId}`. A socket that closes while its (socket-made) ticket waits starts a grace of
 *   the queue's `disconnectGraceSeconds` (10 s by default); a new socket of the same player in the same pool before the grace ends
 *   re-attaches the ticket, otherwise the alarm cancels it (`disconnected`). HTTP tickets have no
 *   grace: their TTL bounds an abandoned client.
 * - Client frames are at most 4 KiB of JSON, parsed with zod; anything else is answered with an
 *   `error` frame on that socket only and changes nothing, but a frame over 64 Ki characters
 *   closes its socket (1009, flood.ts), as if its client had gone.
 * - One alarm for all timed work: the index's next useful check, expiries, disconnect graces,
 *   session-create retries and sweeps. It is idempotent (the runtime retries alarms).
 * - Time: `now` is a field, so tests move time forward instead of sleeping.
 */

const SCHEMA_VERSION = 13
/** Finished tickets and matches stay readable this long. */
export const RESULT_RETENTION_MS = 10 * 60 * 1000
/**
 * How long a deleted queue's pool keeps its storage at least: well past the age of any call that
 * read the queue before its deletion and is still on its way (a join's claim is refused past
 * CLAIM_MAX_AGE_MS), which would otherwise find no pool and make one.
 */
export const DELETED_POOL_KEPT_MS = FENCE_RETENTION_MS
/** Recent wait times kept for percentiles. */
const WAIT_SAMPLES = 500
/**
 * Waits older than this leave the percentiles: a region idle since last week must not lend its
 * waits to the queue's figures (nor keep its own gauges where they were) today.
 */
const WAIT_SAMPLE_WINDOW_MS = 60 * 60 * 1000
/** Matches-per-minute and wait percentiles are gauges: recomputed at most this often. */
const RATES_EVERY_MS = 1000
const MAX_CREATE_ATTEMPTS = 12
/**
 * A party ticket's note in flight holds it this long (`owePartyNote`): past it, the alarm takes
 * the note up, as after a reset that cut the call off.
 */
const NOTE_LEASE_MS = 30_000
/** Owed party notes the alarm sends at a time. */
const NOTES_PER_STEP = 16
/** Join keys a player's joins bind to one ticket at most (`bindKey`). */
const KEYS_PER_TICKET = 8
/** A session create gets this long; its match is retried from the alarm when the time is up. */
const CREATE_LEASE_MS = 30_000
const MAX_BACKOFF_MS = 60_000
/** Matches made per `findMatches` call; the rest carries over to an immediate alarm. */
const MATCHES_PER_STEP = 64
/**
 * Alarm-driven searches come at multiples of this (`checkGranularityMs`): in a crowd of 4-a-side
 * trios joining at 10 a second, the instants at which some pair newly accepts each other came
 * hundreds of times a second, each a search that almost never matched (a CPU-second of searching
 * per wall-clock second). A match that widening allows waits at most this much longer; one a join
 * makes is made in that join's call.
 */
export const CHECK_GRANULARITY_MS = 250
/** Longest long-poll the pool holds. */
export const MAX_WAIT_MS = 25_000
/**
 * Held long-polls end on steps of this (up to this late), one timer per step: a full pool holds
 * more polls than an object may have timers (CoarseTimers).
 */
const WAIT_STEP_MS = 250
/**
 * A player of a socket ticket whose socket is gone and who reads the ticket over HTTP instead
 * (the SDK's fallback: a party member's never joins again) is here this long after each read:
 * a long-poll's hold, and time for the next.
 */
const POLL_PRESENCE_MS = MAX_WAIT_MS + 10_000

/**
 * The most waiting tickets one pool (a queue in a region) holds; a join past it is 503 with
 * Retry-After. The index keeps every waiting ticket in memory (about 0.7 KB each, a party's
 * more), rebuilt at every wake: this keeps it to a few tens of MB of the object's 128, where a
 * pool past a few hundred thousand would fail every wake and take its tickets down with it. A
 * queue that has fifty thousand players waiting in one region matches them as they come.
 */
const MAX_WAITING_TICKETS = 50_000
/**
 * The most sockets one pool accepts: Cloudflare's hibernation API takes at most 32,768 on an
 * object, and the one past it would throw (a 500). Short of it, so a reconnect racing the count
 * still fits; a socket refused here is 503 with Retry-After, and the SDK's HTTP tickets (which
 * hold no socket) still join. Fifty thousand waiting players in a region need not all hold one.
 */
const MAX_POOL_SOCKETS = 32_000
/**
 * When the pool is full, a socket that holds no ticket, never pinged and sent nothing for this
 * long since it connected is closed to make room: sockets opened and left idle (thousands of free
 * guests' four each) would otherwise hold every place, since a socket that never pings is never
 * judged silent. The SDK pings every 20 s, and a party member's socket waiting for its leader's
 * join does too.
 */
export const IDLE_SOCKET_MS = 120_000
/** A full pool looks for such sockets at most this often. */
const IDLE_SWEEP_EVERY_MS = 10_000
/** The close of such a socket (IDLE_SOCKET_MS). */
export const IDLE_CLOSE = {
  code: 4008,
  reason: 'the pool is full and this socket held no ticket and sent nothing',
} as const

/**
 * The close of a socket whose token has expired (at its next `join` or `attach`, the pool's next
 * look at its sockets, or a match it would be told of): its rights end with the token, so that a
 * leaked one cannot queue for as long as a socket stays up. The SDK reconnects with a fresh
 * token, as after any drop, and its ticket waits through the grace meanwhile.
 */
export const TOKEN_EXPIRED_CLOSE = { code: 4001, reason: 'token expired' } as const
/**
 * Long-polls one reader (a player, or the admin key) holds at once on a ticket (their devices
 * and tabs); a further one answers that reader's oldest at once, which its client polls again,
 * so a client opening polls without end (HTTP/2 streams cost it next to nothing) cannot make
 * the pool hold them all, nor answer another member's polls early.
 */
export const MAX_WAITS_PER_READER = 4
/**
 * Open sockets one player may hold on one pool (tabs, devices, a reconnect before the old socket
 * is noticed closed); one more is refused (409) until one closes or falls silent (the connect
 * drops those first). A game session replaces the oldest instead: there a replaced socket's
 * client is told (4001) and stops, where the SDK reconnects a pool's lost socket, which would
 * then replace another in turn.
 */
const MAX_SOCKETS_PER_PLAYER = 4
/**
 * Frames one socket may send: a steady rate with a burst (a client sends a join, a cancel and a
 * ping now and then), and frames waiting behind one still handled (a party join awaits Neon).
 * Past either, the frame is answered `rate_limited` and dropped: unbounded, one socket could queue
 * frames in the object's memory faster than Neon answers them, each waiting its turn to call it.
 */
export const FRAMES_PER_SECOND = 10
export const FRAME_BURST = 20
export const MAX_PENDING_FRAMES = 8
/** Players whose join allowance a pool keeps at once (each a few dozen bytes). */
const MAX_JOIN_BUCKETS = 50_000
/**
 * A socket `join` that reads its party or takes a claim waits this long for Neon (and the other
 * regions' pools), then answers `unavailable`.
 */
const NEON_TIMEOUT_MS = 5_000

const waitingTickets = gauge('nexus_matchmaking_waiting_tickets', 'Tickets waiting, per pool')
const waitingPlayers = gauge('nexus_matchmaking_waiting_players', 'Players waiting, per pool')
const ticketOutcomes = counter(
  'nexus_matchmaking_tickets_total',
  'Tickets by outcome: joined, matched, cancelled, disconnected, expired, session_failed, ' +
    'queue_changed, party_changed, banned, erased',
)
const matchesMade = counter('nexus_matchmaking_matches_total', 'Matches created, per pool')
const waitSeconds = histogram(
  'nexus_matchmaking_wait_seconds',
  'From join to match, per pool',
  // Up to the longest ticket time-to-live (an hour), and past it for matches whose session
  // took retries.
  [1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200],
)
const waitP50 = gauge(
  'nexus_matchmaking_wait_p50_seconds',
  "Median wait of the last hour's matched tickets, at most the latest 500, per pool (0 with none: see wait_samples)",
)
const waitP95 = gauge(
  'nexus_matchmaking_wait_p95_seconds',
  "95th percentile wait of the last hour's matched tickets, at most the latest 500, per pool (0 with none: see wait_samples)",
)
// The percentiles read 0 over no waits at all: a queue that matches nobody (every ticket leaving
// unmatched) would look like one whose players wait no time. This says how many they are over.
const waitSamples = gauge(
  'nexus_matchmaking_wait_samples',
  'Matched tickets of the last hour the wait percentiles are taken over (at most the latest 500), per pool',
)
const matchesPerMinute = gauge(
  'nexus_matchmaking_matches_per_minute',
  'Matches created in the last minute, per pool',
)
const createFailures = counter(
  'nexus_matchmaking_session_create_failures_total',
  'GameSession create attempts that failed (retried unless abandoned)',
)

export type TicketStatus = 'waiting' | 'matching' | 'matched' | 'cancelled' | 'expired'

/** A ticket as clients see it. */
export interface TicketView {
  ticketId: string
  queue: string
  region: string
  status: TicketStatus
  /** The player who joined (the party leader). */
  leader: string
  players: string[]
  attributes: TicketAttributesValue | null
  enqueuedAt: number
  expiresAt: number
  /** Milliseconds left when the view was made (0 once over), by the pool's clock. */
  expiresIn: number
  /** Why a ticket was cancelled; null otherwise. */
  reason: string | null
  /** The match, once its session exists. */
  match: { sessionId: string; players: MatchPlayer[] } | null
}

/** A refusal the Worker renders as problem+json. */
export interface PoolProblem {
  ok: false
  problem: ProblemType
  detail: string
  extensions?: Record<string, unknown>
}

type Reply<T> = ({ ok: true } & T) | PoolProblem

/** A join refused because these players' claims on the queue are missing or fenced here. */
interface Superseded {
  ok: false
  superseded: string[]
}

/** Who asks about a ticket: a player (only its own tickets) or the admin key. */
export type Viewer = { kind: 'admin' } | { kind: 'player'; playerId: string }

/** Who reads a ticket, as a key: the admin key's readers are one reader. */
function readerKey(viewer: Viewer): string {
  return viewer.kind === 'admin' ? '' : `p:${viewer.playerId}`
}

export interface JoinInput {
  queue: string
  region: string
  config: QueueConfig
  version: number
  /** The leader first; ratings as stored in Neon. */
  players: TicketPlayer[]
  attributes?: TicketAttributesValue | null
  /** Every player's claim on the queue (`claimQueue`), taken for this join. */
  claim: QueueClaim
  /** The join's key (`Idempotency-Key`): a join sent again gets the ticket the first one made. */
  joinKey?: string | null
  /**
   * The player-formed party the join is for: its ticket is noted on the party in Neon by the pool
   * (`recordPartyTicket`), and only a ticket of exactly its players is handed back (a party of one
   * would otherwise be handed a ticket with others on it, a game server's, which its note,
   * finding other players, would then cancel).
   */
  partyId?: string | null
  /**
   * A game server's join (the admin key): it shows none of its players to be here, so it ends no
   * grace and counts as nobody's read of the ticket.
   */
  byServer?: boolean
  /**
   * The joining party's tickets in this pool noted before its latest membership change (Neon),
   * which no longer stand for it: cancelled (`party_changed`) before the join is looked at, so
   * the join is never handed one of them (see `endStaleTickets`).
   */
  staleTickets?: readonly string[]
}

/** The party a socket's `join` queues, as read from Neon for that join. */
export interface SocketParty {
  id: string
  leader: string
  /** Every member with their stored rating: the leader first (it leads the ticket). */
  players: TicketPlayer[]
  /** The party's tickets in this pool from before its latest membership change. */
  staleTickets: readonly string[]
}

/** What the Worker tells the pool when it forwards a socket upgrade (header `x-nexus-socket`). */
export interface SocketContext {
  queue: string
  region: string
  config: QueueConfig
  version: number
  playerId: string
  /** When the socket's token was issued (ms; 0 when it does not say), for its later claims. */
  tokenIssuedAt: number
  /** When the socket's token expires (ms): its later joins need a socket with a newer one. */
  tokenExpiresAt?: number
  rating: number
  /** The player's claim on the queue taken at connect, if it could be (`claimQueue`). */
  claim: SocketClaim | null
}

/** One player's claim on the queue: its version, and when it was taken (real time). */
export interface SocketClaim {
  version: number
  claimedAt: number
}

/**
 * What the Worker forwards for a socket when Neon could not be read at its connect: the pool
 * lets it in only to take back a ticket the player already waits on there.
 */
export interface ReattachContext {
  reattachOnly: true
  playerId: string
  tokenIssuedAt: number
  tokenExpiresAt?: number
  /**
   * When the Worker stops waiting for this connect (ms, real time): past it, nothing is taken,
   * so a match owed is not told on a socket nobody holds any more.
   */
  answerBy?: number
}

/** A socket connect refused while Neon cannot be read, the player holding no ticket here. */
const NEON_DOWN_AT_CONNECT =
  'The queue cannot be read now (its database is unreachable), and only a ticket already ' +
  'waiting in this region can be taken back without it; retry shortly'

export const SOCKET_CONTEXT_HEADER = 'x-nexus-socket'

/** Waits: the last 500 of the last hour (WaitSamples), with their times for merging regions. */
export interface PoolStats extends WaitSamples {
  region: string
  waitingTickets: number
  waitingPlayers: number
  matchesLastMinute: number
}

interface TicketRow {
  id: string
  state: TicketStatus
  leader: string
  players: string
  attributes: string | null
  transport: 'http' | 'socket'
  enqueued_at: number
  expires_at: number
  grace_until: number | null
  match_id: string | null
  reason: string | null
  finished_at: number | null
  /** Schema 5's join key, read once by the move to `join_keys` (schema 6); null since. */
  join_key: string | null
  /** 1 for a game server's join, 0 for a player's (schema 13); null from code before it. */
  by_server: number | null
}

interface MatchRow {
  id: string
  state: 'pending' | 'created' | 'failed'
  setup: string
  ticket_ids: string
  created_at: number
  attempts: number
  next_attempt_at: number
  last_error: string | null
  done_at: number | null
}

interface Attachment {
  playerId: string
  /** The socket's token's `iat` in ms (SocketContext); absent on sockets from before it was kept. */
  tokenIssuedAt?: number
  /** Its `exp` in ms, likewise. */
  tokenExpiresAt?: number
  rating: number
  ticketId: string | null
  /**
   * The player's claim on the queue this socket holds (from its connect, or its last `join` that
   * took one): a `join` with it needs no Neon while it is good (CLAIM_MAX_AGE_MS). Null once a
   * join elsewhere fenced it.
   */
  claim?: SocketClaim | null
  /** When it was accepted (the pool's clock); absent on sockets from before it was kept. */
  connectedAt?: number
  /**
   * When a connect of its player first found it closing (the pool's clock; UNANSWERED_CLOSE_MS):
   * kept here, as the object's memory is not across a hibernation.
   */
  closingSince?: number
}

function problem(
  p: ProblemType,
  detail: string,
  extensions?: Record<string, unknown>,
): PoolProblem {
  return { ok: false, problem: p, detail, ...(extensions ? { extensions } : {}) }
}

/** A claim still within CLAIM_MAX_AGE_MS of its taking (real time), or null. */
function unexpired(claim: SocketClaim | null | undefined): SocketClaim | null {
  return claim && Date.now() - claim.claimedAt <= CLAIM_MAX_AGE_MS ? claim : null
}

function rulesOf(config: QueueConfig): QueueRules {
  return {
    teams: config.teams,
    teamSize: config.teamSize,
    maxRatingGap: config.maxRatingGap,
    widenPerSecond: config.widenPerSecond,
    ...(config.maxWidenedGap !== undefined ? { maxWidenedGap: config.maxWidenedGap } : {}),
  }
}

/**
 * Players in turn order: first of each team, then second of each team, and so on, from team
 * `firstTeam` round. Which team that is is drawn for each match: the matcher lists first the team
 * of the ticket that waited longest, and turn-based rules give the roster's first player the
 * first turn (worth some 55% of dice-race's wins), which a player could have by joining only
 * where nobody waits (the queue's stats say where).
 */
function rosterOf(match: Match, firstTeam: number): MatchPlayer[] {
  const roster: MatchPlayer[] = []
  const longest = Math.max(...match.teams.map((t) => t.playerIds.length))
  for (let i = 0; i < longest; i++) {
    for (let k = 0; k < match.teams.length; k++) {
      const team = (firstTeam + k) % match.teams.length
      const playerId = match.teams[team]!.playerIds[i]
      if (playerId !== undefined) roster.push({ playerId, team })
    }
  }
  return roster
}

/**
 * The match's roster in turn order, its start drawn: which team's player comes first, and in a
 * one-team queue (free for all) which player, as the matcher lists the oldest ticket first.
 */
function drawnTurnOrder(match: Match): MatchPlayer[] {
  const roster = rosterOf(match, drawn(match.teams.length))
  if (match.teams.length > 1) return roster
  const first = drawn(roster.length)
  return [...roster.slice(first), ...roster.slice(0, first)]
}

/** A uniformly drawn index below `n` (unpredictable: not the seed's, which admins see). */
function drawn(n: number): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]! % n
}

/** Nearest-rank percentile of sorted values. */
/** What a keyed join asked for, as compared on its retry: its players (any order), its attributes. */
function joinRequest(ids: readonly string[], attributes: TicketAttributesValue | null): string {
  return canonicalJson({ players: [...ids].sort(), attributes })
}

function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}

/**
 * Whether a waiting socket ticket with no players noted in ticket_sockets (from before the notes),
 * judged as a whole, has lost its players: no socket at all is open on it (`open`, players with
 * an open socket there). A ticket with players noted is judged by each (MatchPool.judgeGrace).
 */
function unnotedTicketLost(open: ReadonlySet<string> | undefined): boolean {
  return open === undefined || open.size === 0
}

/**
 * The pool of one (queue, region). See the comment at the top of this file for its decisions.
 *
 * Lifecycle:
 * - constructor: schema once, then config and waiting tickets from SQLite into the index.
 * - `configure` / `join`: the Worker passes the queue config with its Neon version; a newer one
 *   replaces the stored copy and rebuilds the index.
 * - `fetch`: WebSocket upgrades only; messages arrive in `webSocketMessage` even after the
 *   object hibernated.
 * - `alarm`: expiries, graces, matching as windows widen, session retries, sweeps.
 */
/**
 * How long after a player's socket is first seen closing (the pool closed it, its client has not
 * answered) it counts again against the player's MAX_SOCKETS_PER_PLAYER: an answer takes a round
 * trip, a client that never answers keeps the place.
 */
const UNANSWERED_CLOSE_MS = 5_000
/** Closing sockets of a player's whose clients fell silent that are not counted (UNANSWERED_CLOSE_MS). */
const SILENT_CLOSES_FORGIVEN = 2

/** A frame over MAX_CLIENT_FRAME_BYTES, in place of its text while it waits its turn. */
const TOO_LARGE = Symbol('too large')

/** Over MAX_CLIENT_FRAME_BYTES of UTF-8 (a string's length counts UTF-16 units: "€" is 1, 3 bytes). */
function tooLargeFrame(message: string | ArrayBuffer): boolean {
  return typeof message === 'string'
    ? exceedsUtf8Bytes(message, MAX_CLIENT_FRAME_BYTES)
    : message.byteLength > MAX_CLIENT_FRAME_BYTES
}

export class MatchPool extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private queue: string | null = null
  private region: string | null = null
  private config: QueueConfig | null = null
  private version = 0
  /**
   * The version Neon's deletion of the queue took (`retire`); above `version`, the queue as this
   * pool holds it is deleted. A queue made again under the id takes a later version.
   */
  private deletedVersion = 0
  /** When (by `now()`) the pool learnt of its queue's deletion (`retire`). */
  private deletedAt = 0
  private index: MatchIndex | null = null
  /**
   * When a socket on a waiting ticket may next have fallen silent (dropSilentSockets, run by the
   * alarm); null when none is open. Pings do not wake the pool, so this is recomputed by looking.
   */
  private nextSilentCheck: number | null = null
  private waitingPlayerTotal = 0
  /** MAX_WAITING_TICKETS; a field so that tests can lower it. */
  maxWaitingTickets = MAX_WAITING_TICKETS
  /** MAX_POOL_SOCKETS; a field so that tests can lower it. */
  maxSockets = MAX_POOL_SOCKETS
  /**
   * At least as many as the sockets open: the count at the last listing, plus those accepted
   * since (closes are not taken off). Listing every socket at each connect would cost a crowd
   * reconnecting after a deploy a walk over all the others each; the list is read again only
   * when this bound reaches the limit.
   */
  private socketBound: number | null = null

  private socketsAtMost(): number {
    if (this.socketBound === null || this.socketBound >= this.maxSockets) {
      this.socketBound = this.ctx.getWebSockets().length
    }
    return this.socketBound
  }
  /** Long-polls held, by ticket, then by reader (`readerKey`). */
  private readonly waiters = new Map<string, Map<string, Set<() => void>>>()
  private readonly waitTimers = new CoarseTimers(WAIT_STEP_MS)
  private readonly delivering = new Set<string>()
  /**
   * The earliest waiting ticket's expiry or socket grace end, if known: housekeeping on every
   * join and connect skips its two queries until then. Only ever too early (a cancel or match
   * leaves it as it was), which costs one recount, never a missed expiry.
   */
  private nextDeadline: number | null = null
  /** When the rate gauges were last computed; a burst of matches recomputes them once a second. */
  private ratesAt = -Infinity
  private ratesStale = false
  /** When the matches-per-minute gauge next falls (a counted match leaves the minute), if ever. */
  private ratesDropAt: number | null = null
  /** Replaceable so tests can inject failures; production creates the session's Durable Object. */
  sessionCreator: SessionCreator
  /** Notes a party's ticket in Neon (recordPartyTicket); replaceable so tests can hold it. */
  partyTicketNoter: (
    partyId: string,
    ticketId: string,
    players: string[],
    enqueuedAt: number,
  ) => Promise<boolean>
  /** Reads a player's party and ratings from Neon (matchmakingPlayer); replaceable likewise. */
  partyReader: (playerId: string) => Promise<MatchmakingPlayer>
  /** How long a socket's frame waits on Neon before it is answered without it (tests lower it). */
  neonTimeoutMs = NEON_TIMEOUT_MS
  /** The pool's clock; tests move it forward instead of sleeping. */
  now: () => number = Date.now
  /**
   * How long a socket ticket survives its last socket closing: the queue's
   * `disconnectGraceSeconds`, unless a test sets it here.
   */
  graceMs: number | undefined = undefined

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    // On Cloudflare an object may run in an isolate no request of the Worker has set it in.
    configureLog(env)
    this.sql = ctx.storage.sql
    this.sessionCreator = gameSessionCreator(env)
    this.partyTicketNoter = (partyId, ticketId, players, enqueuedAt) =>
      recordPartyTicket(this.env, partyId, ticketId, players, enqueuedAt)
    this.partyReader = (playerId) => matchmakingPlayer(this.env, playerId)
    // Clients ping every 20 s to notice dead connections: the runtime answers without waking the
    // pool (or spending a socket's frame allowance).
    ctx.setWebSocketAutoResponse(
      new WebSocketRequestResponsePair('{"type":"ping"}', '{"type":"pong"}'),
    )
    void ctx.blockConcurrencyWhile(async () => {
      // Nothing stored (a new pool, or one a deletion wiped): its schema waits for a call that
      // needs it (ensureSchema). A late socket event of a wiped pool (a client that never answered
      // its close, reported minutes later) would otherwise make an empty store for good.
      if (!hasTable(this.sql, 'meta')) return
      try {
        this.load()
      } catch (err) {
        // The object resets and every call to it fails until a version that loads it is
        // deployed: the runtime's own error does not say which pool.
        const { queue, region } = metaValuesIfReadable(this.sql, ['queue', 'region'])
        log('error', 'pool does not load', {
          actor: this.actor,
          queue,
          region,
          ...errorFields(err),
        })
        throw err
      }
      // Sockets outlive the instance (hibernation, an eviction), and so do their pings' times.
      this.nextSilentCheck = this.nextSilence(Date.now())
      this.startGracesOfLostSockets()
      this.notesDueNow()
      // Its own work comes back with it: a match waiting for its session, or a party note,
      // whose alarm was lost (a pool that did not load for a while lost it after the runtime's
      // retries) waits for no join. Not the rate gauges a wake marks stale: they wait for an
      // alarm armed for work (an alarm at every wake for them alone was a run per request).
      await this.scheduleAlarm({ rates: false })
    })
  }

  private get actor(): string {
    return `MatchPool:${this.queue ?? '?'}:${this.region ?? this.ctx.id.toString()}`
  }

  /** The schema exists; false once the pool of a made-up ticket id dropped it (forgetUnknown). */
  private schemaReady = false

  private load(): void {
    this.schemaReady = true
    if (schemaVersion(this.sql) < 1) {
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS tickets (
          id TEXT PRIMARY KEY, state TEXT NOT NULL, leader TEXT NOT NULL, players TEXT NOT NULL,
          attributes TEXT, transport TEXT NOT NULL, enqueued_at INTEGER NOT NULL,
          expires_at INTEGER NOT NULL, grace_until INTEGER, match_id TEXT, reason TEXT,
          finished_at INTEGER
        );
        CREATE INDEX IF NOT EXISTS tickets_state ON tickets (state, expires_at);
        CREATE INDEX IF NOT EXISTS tickets_finished ON tickets (finished_at)
          WHERE finished_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS tickets_grace ON tickets (grace_until)
          WHERE grace_until IS NOT NULL;
        CREATE TABLE IF NOT EXISTS active (
          player_id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS active_ticket ON active (ticket_id);
        CREATE TABLE IF NOT EXISTS matches (
          id TEXT PRIMARY KEY, state TEXT NOT NULL, setup TEXT NOT NULL, ticket_ids TEXT NOT NULL,
          created_at INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
          next_attempt_at INTEGER NOT NULL, last_error TEXT, done_at INTEGER
        );
        CREATE INDEX IF NOT EXISTS matches_state ON matches (state, next_attempt_at);
        CREATE TABLE IF NOT EXISTS wait_samples (
          seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER NOT NULL, wait_ms INTEGER NOT NULL
        );
      `)
      setSchemaVersion(this.sql, 1)
    }
    if (schemaVersion(this.sql) < 2) {
      // Finished matches stay RESULT_RETENTION_MS (a busy pool keeps tens of thousands): the
      // alarm's sweep and the matches-per-minute gauge must find theirs without reading them all.
      this.sql.exec(`
        CREATE INDEX IF NOT EXISTS matches_done ON matches (done_at) WHERE done_at IS NOT NULL;
        CREATE INDEX IF NOT EXISTS matches_created ON matches (state, created_at);
      `)
      setSchemaVersion(this.sql, 2)
    }
    if (schemaVersion(this.sql) < 3) {
      // Claims on the queue refused here because a newer join of the player came elsewhere.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS fences (
          player_id TEXT PRIMARY KEY, up_to INTEGER NOT NULL, at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS fences_at ON fences (at);
      `)
      setSchemaVersion(this.sql, 3)
    }
    if (schemaVersion(this.sql) < 4) {
      // Matches per minute count matches by when they were made (done_at), not paired.
      this.sql.exec(`
        CREATE INDEX IF NOT EXISTS matches_made ON matches (state, done_at);
        DROP INDEX IF EXISTS matches_created;
      `)
      setSchemaVersion(this.sql, 4)
    }
    if (schemaVersion(this.sql) < 5) {
      // A join's key finds the ticket it made, for as long as the ticket is kept.
      this.sql.exec(`
        ALTER TABLE tickets ADD COLUMN join_key TEXT;
        CREATE UNIQUE INDEX IF NOT EXISTS tickets_join_key ON tickets (leader, join_key)
          WHERE join_key IS NOT NULL;
      `)
      setSchemaVersion(this.sql, 5)
    }
    if (schemaVersion(this.sql) < 6) {
      // A join's key names the ticket it was answered with, made by it or handed to it (a member
      // handed their party's ticket, a second join handed the waiting one): a retry of either
      // must find that ticket, not queue the player again once it has moved on.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS join_keys (
          player_id TEXT NOT NULL, join_key TEXT NOT NULL, ticket_id TEXT NOT NULL,
          request TEXT NOT NULL, PRIMARY KEY (player_id, join_key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS join_keys_ticket ON join_keys (ticket_id);
      `)
      const keyed = all<{
        id: string
        leader: string
        join_key: string
        players: string
        attributes: string | null
      }>(
        this.sql,
        `SELECT id, leader, join_key, players, attributes FROM tickets WHERE join_key IS NOT NULL`,
      )
      for (const t of keyed) {
        const ids = (JSON.parse(t.players) as TicketPlayer[]).map((p) => p.playerId)
        const attributes =
          t.attributes === null ? null : (JSON.parse(t.attributes) as TicketAttributesValue)
        this.sql.exec(
          `INSERT OR IGNORE INTO join_keys (player_id, join_key, ticket_id, request) VALUES (?, ?, ?, ?)`,
          t.leader,
          t.join_key,
          t.id,
          joinRequest(ids, attributes),
        )
      }
      setSchemaVersion(this.sql, 6)
    }
    if (schemaVersion(this.sql) < 7) {
      // Party tickets whose note on the party (Neon) is owed: written with the ticket, so a reset
      // between the two, or Neon out of reach, leaves the note to the alarm, not undone for good.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS party_notes (
          ticket_id TEXT PRIMARY KEY, party_id TEXT NOT NULL,
          attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS party_notes_due ON party_notes (next_attempt_at);
      `)
      setSchemaVersion(this.sql, 7)
    }
    if (schemaVersion(this.sql) < 8) {
      // Players of a socket ticket matched while no socket of theirs was open (a reconnect on its
      // way, within the grace): a socket of theirs that connects by `until` hears the match.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS unheard (
          player_id TEXT PRIMARY KEY, ticket_id TEXT NOT NULL, until INTEGER NOT NULL
        ) WITHOUT ROWID;
      `)
      setSchemaVersion(this.sql, 8)
    }
    if (schemaVersion(this.sql) < 9) {
      // The players who have had a socket on a ticket: each is judged present or gone on their
      // own, so a party's ticket is not kept matchable for a leader who left while a member's
      // socket stays open. A ticket from before has none noted and is judged as a whole.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS ticket_sockets (
          ticket_id TEXT NOT NULL, player_id TEXT NOT NULL, PRIMARY KEY (ticket_id, player_id)
        ) WITHOUT ROWID;
      `)
      setSchemaVersion(this.sql, 9)
    }
    // 11: 10 once stood for `polled_at` alone (2026-12-05, for 18 minutes): a pool saved then
    // would skip the step for `gone_until` and fail at every wake. Each column is looked for.
    if (schemaVersion(this.sql) < 11) {
      // Each of them has a grace of their own (`gone_until`, from when their socket went), and
      // one whose socket is gone and who reads the ticket over HTTP instead is here while they
      // poll (`polled_at`, POLL_PRESENCE_MS): the ticket's grace_until is the earliest of those.
      const columns = new Set(
        all<{ name: string }>(this.sql, `SELECT name FROM pragma_table_info('ticket_sockets')`).map(
          (c) => c.name,
        ),
      )
      if (!columns.has('polled_at')) {
        this.sql.exec(`ALTER TABLE ticket_sockets ADD COLUMN polled_at INTEGER`)
      }
      if (!columns.has('gone_until')) {
        this.sql.exec(`ALTER TABLE ticket_sockets ADD COLUMN gone_until INTEGER`)
      }
      setSchemaVersion(this.sql, 11)
    }
    if (schemaVersion(this.sql) < 12) {
      // Players' socket join allowances (takeJoinToken), which a hibernation would otherwise
      // hand back full: a client pausing between bursts until the pool slept had twice its joins.
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS join_allowance (
          player_id TEXT PRIMARY KEY, tokens REAL NOT NULL, at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS join_allowance_at ON join_allowance (at);
      `)
      setSchemaVersion(this.sql, 12)
    }
    if (schemaVersion(this.sql) < 13) {
      // Tickets a game server made (the admin key): their players are not told of the match on
      // their own connect or join (`unheard`), which the server that made it tells them of.
      const columns = new Set(
        all<{ name: string }>(this.sql, `SELECT name FROM pragma_table_info('tickets')`).map(
          (c) => c.name,
        ),
      )
      if (!columns.has('by_server')) {
        this.sql.exec(`ALTER TABLE tickets ADD COLUMN by_server INTEGER`)
      }
      setSchemaVersion(this.sql, SCHEMA_VERSION)
    }
    const meta = new Map(
      all<{ key: string; value: string }>(this.sql, `SELECT key, value FROM meta`).map((r) => [
        r.key,
        r.value,
      ]),
    )
    this.queue = meta.get('queue') ?? null
    this.region = meta.get('region') ?? null
    this.version = Number(meta.get('version') ?? 0)
    // A wipe's deleted version outlives the storage while this instance lives (readBeforeDeletion).
    this.deletedVersion = Math.max(this.deletedVersion, Number(meta.get('deleted') ?? 0))
    if (meta.has('deleted_at')) this.deletedAt = Number(meta.get('deleted_at'))
    const config = meta.get('config')
    if (config) {
      this.config = JSON.parse(config) as QueueConfig
      this.rebuildIndex()
      // The rate gauges the last instance published may be out of date (it was evicted before
      // they fell): the next alarm, which that instance armed for the fall, recomputes them.
      this.ratesStale = true
    }
  }

  /**
   * Starts the disconnect grace of each player of a waiting socket ticket who has no socket open
   * on it and no grace running (of a ticket from before the notes: its grace, when none of its
   * sockets is open): sockets lost with the last instance (a deploy, a restart) report no close,
   * and their tickets would otherwise wait, matchable, until they expire. After a hibernation
   * the sockets are still open and attached, and nothing changes. The number of tickets whose
   * grace was judged again.
   */
  private startGracesOfLostSockets(): number {
    if (!this.config) return 0
    // Each player who had a socket on the ticket needs one open (a party's too); a ticket with
    // none noted (from before the notes), any socket. One pass over the sockets and the notes,
    // not a lookup per ticket: this runs at every wake.
    const openOn = new Map<string, Set<string>>()
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue
      const att = ws.deserializeAttachment() as Attachment | null
      if (!att?.ticketId) continue
      const players = openOn.get(att.ticketId) ?? new Set<string>()
      players.add(att.playerId)
      openOn.set(att.ticketId, players)
    }
    // Per ticket, its noted players whose own grace is not running (gone_until null).
    const notRunning = new Map<string, string[]>()
    for (const r of all<{ ticket_id: string; player_id: string; gone_until: number | null }>(
      this.sql,
      `SELECT ticket_id, player_id, gone_until FROM ticket_sockets`,
    )) {
      const players = notRunning.get(r.ticket_id) ?? []
      if (r.gone_until === null) players.push(r.player_id)
      notRunning.set(r.ticket_id, players)
    }
    const now = this.now()
    let started = 0
    for (const t of all<Pick<TicketRow, 'id' | 'grace_until'>>(
      this.sql,
      `SELECT id, grace_until FROM tickets WHERE state = 'waiting' AND transport = 'socket'`,
    )) {
      const open = openOn.get(t.id)
      const waitingFor = notRunning.get(t.id)
      if (waitingFor !== undefined) {
        // A player with no socket open whose grace is not running yet: theirs starts now.
        if (waitingFor.every((p) => open?.has(p))) continue
        this.judgeGrace(t, open ?? new Set(), now)
        started++
      } else if (t.grace_until === null && unnotedTicketLost(open)) {
        const graceUntil = now + this.ticketGraceMs()
        this.sql.exec(`UPDATE tickets SET grace_until = ? WHERE id = ?`, graceUntil, t.id)
        this.deadlineAt(graceUntil)
        started++
      }
    }
    return started
  }

  private ensureSchema(): void {
    if (!this.schemaReady) this.load()
  }

  /**
   * A pool that was never configured (a ticket id naming a queue or region that does not exist)
   * drops the schema its wake made, so made-up ids leave no stored object behind.
   */
  private async forgetUnknown(ticketId: string): Promise<Reply<never>> {
    await this.dropUnconfigured()
    return problem('not-found', `No ticket '${ticketId}'`)
  }

  /**
   * Drops the storage a wake made in a pool no queue has configured; unless it holds fences: a
   * region just added, whose configuration push is still to come, fenced by a join elsewhere.
   * Dropped, those would let a join here with an older claim make a second live ticket.
   */
  private async dropUnconfigured(): Promise<void> {
    const live = Date.now() - FENCE_RETENTION_MS
    if (one(this.sql, `SELECT 1 AS held FROM fences WHERE at >= ? LIMIT 1`, live)) return
    await this.ctx.storage.deleteAll()
    this.schemaReady = false
    this.alarmFailures.forget()
  }

  private setMeta(key: string, value: string): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value)
  }

  /** Loads every waiting ticket into a fresh index (after a wake or a config change). */
  private rebuildIndex(): void {
    const config = this.config!
    const index = new MatchIndex(rulesOf(config), { checkGranularityMs: CHECK_GRANULARITY_MS })
    const misfits: string[] = []
    // A region taken out of the queue matches no one any more: its tickets leave, as every
    // waiting ticket does from a paused queue.
    const regionGone = this.region !== null && !config.regions.includes(this.region)
    // Not when its rules are missing from this version: during a gradual deployment that adds
    // them, a pool still on the version before would send every waiting ticket away, where a
    // session on the new version may well start; joins are refused (`outOfPlay`) instead.
    const closed = regionGone || config.paused === true || this.deleted
    // Streamed, with only what the index holds: every waiting ticket's whole row at once (its
    // attributes up to a few KB) would peak far above what the index keeps.
    const waiting = this.sql.exec<Pick<TicketRow, 'id' | 'players' | 'enqueued_at'>>(
      `SELECT id, players, enqueued_at FROM tickets WHERE state = 'waiting'`,
    )
    for (const row of waiting) {
      const players = JSON.parse(row.players) as TicketPlayer[]
      // A party over the queue's party size (never above its team size) could not join now, so
      // it does not stay matchable either.
      if (closed || players.length > config.maxPartySize) misfits.push(row.id)
      else index.add({ id: row.id, players, enqueuedAt: row.enqueued_at })
    }
    this.index = index
    this.nextDeadline = null
    this.waitingPlayerTotal = 0
    for (const t of index.tickets()) this.waitingPlayerTotal += t.players.length
    for (const id of misfits) {
      this.finish(id, 'cancelled', 'queue_changed', this.now(), { many: true })
    }
    manyFinished(this.actor, 'queue_changed', misfits)
    if (regionGone) {
      // Sockets without a ticket would otherwise join a region the queue no longer has. Those on
      // a waiting ticket closed with it just now; those on a match still being created stay for
      // their `match_found`.
      for (const ws of this.ctx.getWebSockets()) {
        const att = ws.deserializeAttachment() as Attachment | null
        if (!att?.ticketId) this.closeSocket(ws, 1000, 'region removed')
      }
    }
    // A wake's count of what was already waiting: sent with the isolate's next batch, not owed.
    // Owed, every wake of a pool in an isolate that had just sent would bring its alarm back for
    // it, and the next wake (a fresh instance) again, every 10 s for as long as tickets wait.
    this.updateGauges(false)
  }

  /** Takes a newer configuration; true if it did. */
  private applyConfig(
    queue: string,
    region: string,
    config: QueueConfig,
    version: number,
  ): boolean {
    if (this.config && version <= this.version) return false
    this.ctx.storage.transactionSync(() => {
      this.setMeta('queue', queue)
      this.setMeta('region', region)
      this.setMeta('config', JSON.stringify(config))
      this.setMeta('version', String(version))
    })
    this.queue = queue
    this.region = region
    this.config = config
    this.version = version
    this.rebuildIndex()
    return true
  }

  /** Receives a queue configuration (Neon is the record); an older version changes nothing. */
  async configure(
    queue: string,
    region: string,
    config: QueueConfig,
    version: number,
  ): Promise<{ version: number; waiting: number; inForce: boolean }> {
    // Not in force, at a version past the deleted one: a PUT after Neon's count went back (a
    // restore) moves its version past it, as past any version a pool holds.
    if (this.readBeforeDeletion(version)) {
      return { version: this.deletedVersion, waiting: 0, inForce: false }
    }
    this.ensureSchema()
    const applied = this.applyConfig(queue, region, config, version)
    await this.scheduleAlarm()
    return {
      version: this.version,
      waiting: this.index?.size ?? 0,
      // Whether `config` is what this pool runs (not: a later PUT's is, or Neon's count went
      // back and this version number was another configuration's).
      inForce: applied || canonicalJson(this.config) === canonicalJson(config),
    }
  }

  /**
   * The queue was deleted in Neon, at `version`, after it was paused: a ticket still waiting here
   * (a pool that missed the pause) is cancelled, the sockets without a ticket close, and joins
   * and connects that read the queue before its deletion are refused as for a queue that is not
   * there. The pool keeps what may still be asked of it (a match being made, ended tickets'
   * answers, fences) for as long as it would anyway, and at least DELETED_POOL_KEPT_MS, then its
   * alarm deletes its storage (`wipeIfSettled`). A queue made again under the id before then
   * takes a later version, and this pool runs it. A deletion at or below the version held (the
   * queue made again since, or Neon's count gone back) changes nothing (`applied` false, with
   * the version held, logged). Answers whether it applied, the sockets closed and the version
   * the pool holds.
   */
  async retire(version: number): Promise<{ applied: boolean; closed: number; version: number }> {
    this.ensureSchema()
    if (this.config === null || version <= this.version) {
      if (this.config !== null) {
        log('warn', 'queue deletion not applied: the pool holds a later version', {
          actor: this.actor,
          deletedVersion: version,
          version: this.version,
        })
      } else await this.dropUnconfigured()
      return { applied: false, closed: 0, version: this.version }
    }
    if (version > this.deletedVersion) {
      this.ctx.storage.transactionSync(() => {
        this.setMeta('deleted', String(version))
        this.setMeta('deleted_at', String(this.now()))
      })
      this.deletedVersion = version
      this.deletedAt = this.now()
      this.rebuildIndex()
    }
    let closed = 0
    for (const ws of this.ctx.getWebSockets()) {
      const att = ws.deserializeAttachment() as Attachment | null
      // A socket on a match being made stays for its `match_found`.
      if (att?.ticketId) continue
      this.closeSocket(ws, 1000, 'queue deleted')
      closed++
    }
    await this.scheduleAlarm()
    return { applied: true, closed, version: this.version }
  }

  /**
   * A deleted queue's pool deletes its storage once nothing in it can be asked for any more: no
   * ticket (waiting, being matched, or ended within RESULT_RETENTION_MS: its answer is read over
   * HTTP), no match, fence, party note or unheard match left (the sweep, just before, dropped
   * those past their retention), and DELETED_POOL_KEPT_MS since the deletion. A socket still
   * open closes. The deleted version stays known while this instance lives (`readBeforeDeletion`).
   * True if it did.
   */
  private async wipeIfSettled(now: number): Promise<boolean> {
    if (now < this.deletedAt + DELETED_POOL_KEPT_MS) return false
    const left = one<{ n: number }>(
      this.sql,
      `SELECT (SELECT count(*) FROM tickets) + (SELECT count(*) FROM matches)
            + (SELECT count(*) FROM fences) + (SELECT count(*) FROM party_notes)
            + (SELECT count(*) FROM unheard) AS n`,
    )!.n
    if (left > 0) return false
    for (const ws of this.ctx.getWebSockets()) this.closeSocket(ws, 1000, 'queue deleted')
    // The pool's last word on /metrics: nothing waits or matches here. A wait percentile left as
    // it was would stand for a queue that is gone until the hub forgets the series (35 days).
    const labels = this.labels()
    for (const g of [
      waitingTickets,
      waitingPlayers,
      matchesPerMinute,
      waitP50,
      waitP95,
      waitSamples,
    ]) {
      g.set(labels, 0)
    }
    // Now: the pool's storage and alarm go, and no later alarm of its would send them.
    void sendMetricsNow(this.env)
    await this.ctx.storage.deleteAlarm()
    await this.ctx.storage.deleteAll()
    log('info', 'deleted queue: pool storage deleted', { actor: this.actor })
    this.schemaReady = false
    this.alarmFailures.forget()
    this.queue = null
    this.region = null
    this.config = null
    this.version = 0
    this.index = null
    this.nextDeadline = null
    this.waitingPlayerTotal = 0
    return true
  }

  /**
   * A call carrying the queue as it was before its deletion (`version` at most the deleted one),
   * read from Neon before it: refused, before its wake makes a schema in a pool whose storage the
   * deletion took. Known from storage until the wipe, and after it while the instance lives;
   * after its eviction, DELETED_POOL_KEPT_MS after the deletion, no such call is still under way.
   */
  private readBeforeDeletion(version: number): boolean {
    return version <= this.deletedVersion
  }

  /**
   * When a deleted queue's pool will have nothing left to keep (`wipeIfSettled`): the last of its
   * ended tickets, done matches, unheard matches and fences past its retention, and
   * DELETED_POOL_KEPT_MS after the deletion. Null while a ticket waits or is being matched, a
   * match is being made or a note is owed: each has an alarm of its own, after which this is
   * asked again.
   */
  private wipeDueAt(now: number): number | null {
    const last = one<{
      busy: number
      finished: number | null
      done: number | null
      unheard: number | null
      fence: number | null
    }>(
      this.sql,
      `SELECT (SELECT count(*) FROM tickets WHERE finished_at IS NULL)
            + (SELECT count(*) FROM matches WHERE done_at IS NULL)
            + (SELECT count(*) FROM party_notes) AS busy,
              (SELECT max(finished_at) FROM tickets) AS finished,
              (SELECT max(done_at) FROM matches) AS done,
              (SELECT max(until) FROM unheard) AS unheard,
              (SELECT max(at) FROM fences) AS fence`,
    )!
    if (last.busy > 0) return null
    let due = Math.max(now, this.deletedAt + DELETED_POOL_KEPT_MS)
    if (last.finished !== null) due = Math.max(due, last.finished + RESULT_RETENTION_MS)
    if (last.done !== null) due = Math.max(due, last.done + RESULT_RETENTION_MS)
    if (last.unheard !== null) due = Math.max(due, last.unheard)
    // Fences keep real time (the sweep drops those before Date.now() - FENCE_RETENTION_MS).
    if (last.fence !== null) {
      due = Math.max(due, now + (last.fence + FENCE_RETENTION_MS + 1 - Date.now()))
    }
    return due
  }

  /** The queue this pool holds was deleted (and not made again since). */
  private get deleted(): boolean {
    return this.deletedVersion > this.version
  }

  // ---------------------------------------------------------------------------------------------
  // Tickets

  /**
   * Enqueues a ticket (or returns the one its player already has) and runs matching; the reply
   * shows the ticket after matching, so it may already be matched.
   */
  async join(input: JoinInput): Promise<
    Reply<{
      ticket: TicketView
      existing: boolean
      staleCancelled: string[]
      /** The party changed while joining: its note found other members, and the ticket is cancelled. */
      partyChanged: boolean
    }>
  > {
    if (this.readBeforeDeletion(input.version)) {
      return problem('not-found', `No queue '${input.queue}'`)
    }
    this.ensureSchema()
    const changed = this.applyConfig(input.queue, input.region, input.config, input.version)
    // A newer configuration makes matching due now (windows may have widened), even when this
    // join itself is refused: the settle below does not run then.
    if (changed) await this.scheduleAlarm()
    // A Worker of the version before claims, during a gradual deployment: its client retries.
    if (!input.claim) return problem('unavailable', 'The queue cannot be joined now; try again')
    const claims =
      Date.now() - input.claim.claimedAt <= CLAIM_MAX_AGE_MS ? input.claim.versions : {}
    const staleCancelled = this.endStaleTickets(input.staleTickets ?? [])
    if (staleCancelled.length > 0) await this.scheduleAlarm()
    const entered = this.enqueue(
      input.players,
      input.attributes ?? null,
      'http',
      input.byServer === true ? null : input.players[0]!.playerId,
      claims,
      input.joinKey ? { owner: input.players[0]!.playerId, key: input.joinKey } : null,
      input.partyId != null,
    )
    if (!entered.ok) {
      if ('superseded' in entered) {
        this.countRefusal('superseded')
        return problem(
          'conflict',
          `Player '${entered.superseded[0]}' joined this queue in another region since this ` +
            'join began (or the join took over 5 minutes): it is refused',
          { players: entered.superseded },
        )
      }
      return entered
    }
    if (!entered.existing) this.attachMembers(entered.row)
    const partyId = input.partyId ?? null
    // Owed in the same write as the ticket (nothing awaited between them), then sent.
    const noting =
      partyId !== null && (entered.row.state === 'waiting' || entered.row.state === 'matching')
    if (noting) this.owePartyNote(partyId, entered.row.id)
    const [, partyChanged] = await Promise.all([
      this.settle(),
      noting ? this.recordPartyTicket(partyId, entered.row) : false,
    ])
    const row = this.row(entered.row.id)!
    this.heardOverHttp(input.players[0]!.playerId, row)
    return {
      ok: true,
      ticket: this.view(row),
      existing: entered.existing,
      staleCancelled,
      partyChanged,
    }
  }

  /**
   * Cancels (`party_changed`) the waiting tickets (of this pool) of a joining party that were noted
   * before its latest membership change: a change whose pool could not be reached left them waiting, and the
   * cron will cancel them. Were one handed to this join (its players being the party's again, say a
   * member left and came back), the cron's cancel, read before this join's note and arriving after
   * it, would end the ticket the join was answered with; and a change is meant to end the party's
   * ticket whether or not its pool answered at once. The joining socket, if on one of them, is
   * detached and not told: the answer to its join (the new ticket's `queued`, or the refusal) is
   * what it hears, as a client that sent a join waits for (a `cancelled` first reads as the end
   * of its wait: the SDK closed). Returns the tickets cancelled.
   */
  private endStaleTickets(tickets: readonly string[], joining?: WebSocket): string[] {
    const cancelled: string[] = []
    for (const ticketId of tickets) {
      if (this.row(ticketId)?.state !== 'waiting') continue
      const att = joining?.deserializeAttachment() as Attachment | null | undefined
      const onIt = att?.ticketId === ticketId
      if (onIt) this.detachSocket(joining!)
      this.finish(ticketId, 'cancelled', 'party_changed', this.now())
      cancelled.push(ticketId)
    }
    return cancelled
  }

  /**
   * The ticket a join with this key was answered with (made by it, or handed to it), while the
   * pool keeps it (as long as it waits, and RESULT_RETENTION_MS after it ends); null if none. The
   * key names one join of `owner`'s: the same key for other players or other attributes is
   * refused (`idempotency-key-reused`).
   */
  private keyedTicket(
    owner: string,
    ids: readonly string[],
    attributes: TicketAttributesValue | null,
    joinKey: string,
  ): Reply<{ row: TicketRow }> | null {
    const bound = one<{ ticket_id: string; request: string }>(
      this.sql,
      `SELECT ticket_id, request FROM join_keys WHERE player_id = ? AND join_key = ?`,
      owner,
      joinKey,
    )
    if (!bound) return null
    // The same attributes in another key order are the same join (as a score's metadata is).
    if (bound.request !== joinRequest(ids, attributes)) {
      return problem(
        'idempotency-key-reused',
        'This join key was used for a different join (other players or attributes)',
      )
    }
    const row = this.row(bound.ticket_id)
    return row ? { ok: true, row } : null
  }

  /**
   * Remembers which ticket a keyed join was answered with (a retry gets the same one), for at
   * most KEYS_PER_TICKET keys of one player's on one ticket: a join with a new key is handed a
   * ticket its player already has without a claim or any other cost, so without a bound a client
   * sending joins with fresh keys would fill the pool's storage. A join past it is answered all
   * the same; its retry is handed the ticket while it waits.
   */
  private bindKey(
    owner: string,
    joinKey: string,
    ticketId: string,
    ids: readonly string[],
    attributes: TicketAttributesValue | null,
  ): void {
    const bound = one<{ n: number }>(
      this.sql,
      `SELECT count(*) AS n FROM join_keys WHERE ticket_id = ? AND player_id = ?`,
      ticketId,
      owner,
    )!.n
    if (bound >= KEYS_PER_TICKET) return
    this.sql.exec(
      `INSERT OR IGNORE INTO join_keys (player_id, join_key, ticket_id, request) VALUES (?, ?, ?, ?)`,
      owner,
      joinKey,
      ticketId,
      joinRequest(ids, attributes),
    )
  }

  /**
   * The synchronous half of a join: duplicate check, claim check, rows, index. A new ticket needs
   * every player's claim on the queue (`claims`, by player id) newer than any fence here;
   * otherwise the join is `superseded`, naming the players whose claims are missing or fenced.
   */
  private enqueue(
    players: TicketPlayer[],
    attributes: TicketAttributesValue | null,
    transport: 'http' | 'socket',
    /** The player who sent the join, the only one it shows to be here; null for a server. */
    caller: string | null,
    claims: Readonly<Record<string, number>>,
    key: { owner: string; key: string } | null = null,
    forParty = false,
  ): Reply<{ row: TicketRow; existing: boolean }> | Superseded {
    const config = this.config!
    const now = this.now()
    this.housekeep(now)
    const ids = players.map((p) => p.playerId)
    // A retry of a keyed join is answered with its ticket whatever changed since (the queue's
    // regions or party size, say): that ticket may be matched, and its game wait for the player.
    if (key !== null) {
      const keyed = this.keyedTicket(key.owner, ids, attributes, key.key)
      if (keyed) {
        if (!keyed.ok) return keyed
        if (keyed.row.state !== 'waiting') return { ok: true, row: keyed.row, existing: true }
      }
    }
    // A join that read the queue just before the region was taken out of it.
    if (this.region !== null && !config.regions.includes(this.region)) {
      return problem('validation', `Region '${this.region}' is not one of this queue's regions`, {
        errors: [{ path: 'region', message: `one of: ${config.regions.join(', ')}` }],
      })
    }
    // A socket's join, on a socket kept for a match being made when its queue was deleted.
    if (this.deleted) return problem('not-found', `No queue '${this.queue}'`)
    const out = outOfPlay(config)
    if (out) return problem('conflict', out.detail, out.extensions)
    if (ids.length > config.maxPartySize) {
      return problem('validation', `A ticket holds at most ${config.maxPartySize} players`, {
        errors: [{ path: 'party', message: `at most ${config.maxPartySize} players` }],
      })
    }
    const held = all<{ player_id: string; ticket_id: string }>(
      this.sql,
      `SELECT player_id, ticket_id FROM active WHERE player_id IN (${ids.map(() => '?').join(',')})`,
      ...ids,
    )
    if (held.length > 0) {
      const ticketId = held[0]!.ticket_id
      const existing = this.row(ticketId)!
      const members = JSON.parse(existing.players) as TicketPlayer[]
      const same =
        held.length === ids.length &&
        held.every((h) => h.ticket_id === ticketId) &&
        members.length === ids.length
      // A player alone may be handed the ticket they are on with others (a member's reconnect);
      // a party's join only its own (`JoinInput.partyId`).
      if (same || (!forParty && ids.length === 1 && held.length === 1)) {
        // The player who sent it is here: a disconnect grace running on the ticket ends once
        // everyone else who had a socket on it is back too (a leader's join sent again does not
        // bring back a member whose socket is gone, over either transport). An HTTP join of the
        // whole ticket that nobody else has had a socket on takes it over: held over HTTP from
        // then on, a new instance of the pool (a deploy) does not take it for a socket ticket
        // that lost its socket. A party's with members who had sockets stays theirs to judge.
        const takenOver =
          same &&
          transport === 'http' &&
          existing.transport === 'socket' &&
          !this.othersNoted(existing, caller)
        if (takenOver) {
          this.sql.exec(
            `UPDATE tickets SET grace_until = NULL, transport = 'http' WHERE id = ?`,
            ticketId,
          )
        } else {
          // A player alone joining over HTTP is one who polls from then on (POLL_PRESENCE_MS).
          if (transport === 'http' && caller !== null) this.notePoll(existing, caller)
          this.endGraceIfAllBack(existing, transport === 'http' || caller === null ? [] : [caller])
        }
        if (key !== null) this.bindKey(key.owner, key.key, ticketId, ids, attributes)
        return {
          ok: true,
          row: {
            ...existing,
            grace_until: this.row(ticketId)!.grace_until,
            transport: takenOver ? 'http' : existing.transport,
          },
          existing: true,
        }
      }
      return problem(
        'conflict',
        `Player '${held[0]!.player_id}' already has a ticket in this queue`,
        { players: held.map((h) => h.player_id) },
      )
    }
    // A player joining over HTTP whose ticket was matched while they were away (unheard) is
    // handed that match, as a socket connect is: its game waits for them.
    const missed = transport === 'http' && caller !== null ? this.missedMatchFor(caller, ids) : null
    if (missed) {
      if (key !== null) this.bindKey(key.owner, key.key, missed.id, ids, attributes)
      return { ok: true, row: missed, existing: true }
    }
    if (this.index!.size >= this.maxWaitingTickets) {
      return problem(
        'unavailable',
        `This queue holds at most ${this.maxWaitingTickets} waiting tickets in a region; ` +
          'try again in a few seconds',
        { limit: this.maxWaitingTickets },
      )
    }
    const superseded = this.fenced(ids, claims)
    if (superseded.length > 0) return { ok: false, superseded }
    const ticketId = newTicketId(this.queue!, this.region!)
    const expiresAt = now + config.ticketTtlSeconds * 1000
    // The row as written, so that the join need not read it back.
    const row: TicketRow = {
      id: ticketId,
      state: 'waiting',
      leader: ids[0]!,
      players: JSON.stringify(players),
      attributes: attributes ? JSON.stringify(attributes) : null,
      transport,
      enqueued_at: now,
      expires_at: expiresAt,
      grace_until: null,
      match_id: null,
      reason: null,
      finished_at: null,
      join_key: null,
      by_server: caller === null ? 1 : 0,
    }
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        `INSERT INTO tickets (id, state, leader, players, attributes, transport, enqueued_at, expires_at, by_server)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        row.id,
        row.state,
        row.leader,
        row.players,
        row.attributes,
        row.transport,
        row.enqueued_at,
        row.expires_at,
        row.by_server,
      )
      insertRows(
        this.sql,
        `INSERT INTO active (player_id, ticket_id)`,
        ids.map((id) => [id, ticketId]),
      )
      if (key !== null) this.bindKey(key.owner, key.key, ticketId, ids, attributes)
    })
    this.deadlineAt(expiresAt)
    this.index!.add({ id: ticketId, players, enqueuedAt: now })
    this.waitingPlayerTotal += players.length
    ticketOutcomes.inc({ ...this.labels(), outcome: 'joined' })
    this.updateGauges()
    return { ok: true, row, existing: false }
  }

  /**
   * Of `ids`, the players whose claim is missing from `claims` or fenced here. A fence past
   * FENCE_RETENTION_MS counts for nothing even before a sweep deletes it: every claim it refused
   * has aged out, and a claim row pruned since restarts its versions below it.
   */
  private fenced(ids: string[], claims: Readonly<Record<string, number>>): string[] {
    const fences = new Map(
      all<{ player_id: string; up_to: number }>(
        this.sql,
        `SELECT player_id, up_to FROM fences
         WHERE player_id IN (${ids.map(() => '?').join(',')}) AND at >= ?`,
        ...ids,
        Date.now() - FENCE_RETENTION_MS,
      ).map((f) => [f.player_id, f.up_to]),
    )
    return ids.filter((id) => {
      const version = Object.hasOwn(claims, id) ? claims[id] : undefined
      return version === undefined || version <= (fences.get(id) ?? 0)
    })
  }

  /**
   * A socket's claim, if it is good here: taken within CLAIM_MAX_AGE_MS and not fenced. Every
   * claim ages out, so a pool need keep a fence only FENCE_RETENTION_MS.
   */
  private goodClaim(playerId: string, claim: SocketClaim | null | undefined): SocketClaim | null {
    const fresh = unexpired(claim)
    if (!fresh) return null
    return this.fenced([playerId], { [playerId]: fresh.version }).length === 0 ? fresh : null
  }

  /**
   * A join of these players came in another region of the queue. If one of them holds a live
   * ticket here (waiting, or in a match being made), that join is refused and nothing changes.
   * Otherwise this pool refuses their claims up to `upTo` from now on, including those its
   * sockets hold (a `join` on such a socket takes a new claim, which asks that region in turn).
   */
  async fence(entries: FenceEntry[]): Promise<FenceReply> {
    this.ensureSchema()
    // A ticket that ran out is not live, even before the alarm that ends it.
    const swept = this.housekeep(this.now())
    try {
      const ids = entries.map((e) => e.playerId)
      // The first entry's own ticket first (the joining player's: told of it with its id, which
      // a party's leader is not for a member's).
      const held = one<{ player_id: string; ticket_id: string }>(
        this.sql,
        `SELECT player_id, ticket_id FROM active
         WHERE player_id IN (${ids.map(() => '?').join(',')})
         ORDER BY player_id = ? DESC LIMIT 1`,
        ...ids,
        ids[0] ?? '',
      )
      if (held) {
        const state = one<{ state: string }>(
          this.sql,
          `SELECT state FROM tickets WHERE id = ?`,
          held.ticket_id,
        )?.state
        return {
          ok: false,
          playerId: held.player_id,
          ticketId: held.ticket_id,
          ...(state === 'matching' ? { matching: true } : {}),
        }
      }
      this.fenceNow(entries)
      return { ok: true }
    } finally {
      if (swept) await this.scheduleAlarm()
    }
  }

  /** Refuses the players' claims up to `upTo` from now on, those its sockets hold included. */
  private fenceNow(entries: readonly FenceEntry[]): void {
    const at = Date.now()
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`DELETE FROM fences WHERE at < ?`, at - FENCE_RETENTION_MS)
      for (const e of entries) {
        this.sql.exec(
          `INSERT INTO fences (player_id, up_to, at) VALUES (?, ?, ?)
           ON CONFLICT (player_id) DO UPDATE SET up_to = max(up_to, excluded.up_to), at = excluded.at`,
          e.playerId,
          e.upTo,
          at,
        )
      }
    })
    for (const e of entries) {
      for (const ws of this.ctx.getWebSockets(`p:${e.playerId}`)) {
        const att = ws.deserializeAttachment() as Attachment | null
        if (att?.claim && att.claim.version <= e.upTo) {
          ws.serializeAttachment({ ...att, claim: null } satisfies Attachment)
        }
      }
    }
  }

  /**
   * The player must wait in this queue no more: under an account ban from now on (`banned`), or
   * erased (`erased`), in Neon already (PUT /v1/admin/players/:id/ban, DELETE
   * /v1/admin/players/:id). The waiting ticket that holds them here is cancelled with that reason
   * (a party's whole ticket, every player on it told), and every claim of theirs up to `upTo` (the
   * version Neon held once the change was in) is refused, those its sockets hold included. So a
   * join that claimed before the change and reaches this pool after it is refused, and a socket's
   * next `join` takes a new claim from Neon. A ticket already in a match being made keeps its
   * match. Idempotent. Answers the ticket cancelled, if any.
   */
  async removePlayer(
    playerId: string,
    upTo: number,
    reason: 'banned' | 'erased',
  ): Promise<{ cancelled: string | null }> {
    this.ensureSchema()
    const now = this.now()
    this.housekeep(now)
    const held = one<{ ticket_id: string }>(
      this.sql,
      `SELECT ticket_id FROM active WHERE player_id = ?`,
      playerId,
    )
    let cancelled: string | null = null
    if (held && this.row(held.ticket_id)?.state === 'waiting') {
      this.finish(held.ticket_id, 'cancelled', reason, now)
      cancelled = held.ticket_id
    }
    this.fenceNow([{ playerId, upTo }])
    await this.scheduleAlarm()
    return { cancelled }
  }

  /**
   * A ticket, if `viewer` may see it (its players, or the admin key). With `waitMs`, a ticket
   * still waiting or matching is held until it changes or the wait ends (long-poll).
   */
  async ticket(
    ticketId: string,
    viewer: Viewer,
    waitMs = 0,
  ): Promise<Reply<{ ticket: TicketView }>> {
    // Nothing stored (a made-up queue or region): no schema made only to be dropped again.
    if (!this.schemaReady) return problem('not-found', `No ticket '${ticketId}'`)
    if (!this.config && this.queue === null) return this.forgetUnknown(ticketId)
    const before = this.readable(ticketId, viewer)
    if (!before.ok) return before
    if (this.housekeep(this.now())) await this.scheduleAlarm()
    let row = this.row(ticketId)
    if (row && viewer.kind === 'player') this.notePoll(row, viewer.playerId)
    if (row && waitMs > 0 && (row.state === 'waiting' || row.state === 'matching')) {
      await this.waitForChange(ticketId, readerKey(viewer), Math.min(waitMs, MAX_WAIT_MS))
      // A ticket that ran out while held, before the alarm got to it, answers expired.
      if (this.housekeep(this.now())) await this.scheduleAlarm()
      row = this.row(ticketId)
      // Here until answered: the client's next poll comes after this answer, which a flaky link
      // may take long to carry, not after the moment this one came.
      if (row && viewer.kind === 'player') this.notePoll(row, viewer.playerId)
    }
    if (!row) return problem('not-found', `No ticket '${ticketId}'`)
    // A poll held until the match counts too: the SDK hears its matches on such polls alone, and
    // an app killed while one was held cannot be told from one that got the answer (its next
    // join would be sent back to a game it has, or left).
    if (viewer.kind === 'player') this.heardOverHttp(viewer.playerId, row)
    return { ok: true, ticket: this.view(row) }
  }

  /**
   * A player who reads their matched ticket over HTTP has the match (its answer carries their
   * session token): a socket they open within the grace is not sent it again, which would take
   * a client queueing anew back to that game.
   */
  private heardOverHttp(playerId: string, row: TicketRow): void {
    if (row.state !== 'matched') return
    this.sql.exec(`DELETE FROM unheard WHERE player_id = ? AND ticket_id = ?`, playerId, row.id)
  }

  /**
   * The ticket `owner`'s join with this key was answered with, while the pool keeps it; null if
   * none (or the pool holds nothing), `idempotency-key-reused` for the key of another join. For a
   * keyed retry the route refused before it reached the pool.
   */
  async ticketByKey(
    owner: string,
    joinKey: string,
    ids: readonly string[],
    attributes: TicketAttributesValue | null,
  ): Promise<Reply<{ ticket: TicketView }> | null> {
    if (!this.schemaReady) return null
    if (this.queue === null) {
      // A region the client named that no queue ever had: its wake leaves no stored object.
      await this.dropUnconfigured()
      return null
    }
    const keyed = this.keyedTicket(owner, ids, attributes, joinKey)
    if (!keyed || !keyed.ok) return keyed
    this.heardOverHttp(owner, keyed.row)
    return { ok: true, ticket: this.view(keyed.row) }
  }

  /**
   * Cancels a waiting ticket; cancelling a cancelled ticket again answers the same. `reason` is
   * `party_changed` when a party's membership changed after its ticket was made (the parties
   * routes, with the admin viewer).
   */
  async cancel(
    ticketId: string,
    viewer: Viewer,
    reason: 'cancelled' | 'party_changed' = 'cancelled',
  ): Promise<Reply<{ ticket: TicketView }>> {
    if (!this.schemaReady) return problem('not-found', `No ticket '${ticketId}'`)
    if (!this.config && this.queue === null) return this.forgetUnknown(ticketId)
    const before = this.readable(ticketId, viewer)
    if (!before.ok) return before
    const now = this.now()
    this.housekeep(now)
    const row = this.row(ticketId)!
    if (row.state === 'waiting') this.finish(ticketId, 'cancelled', reason, now)
    else if (row.state !== 'cancelled') {
      return problem(
        'conflict',
        `Ticket '${ticketId}' is ${row.state} and can no longer be cancelled`,
        { ticketStatus: row.state },
      )
    }
    await this.scheduleAlarm()
    return { ok: true, ticket: this.view(this.row(ticketId)!) }
  }

  private readable(ticketId: string, viewer: Viewer): Reply<{ row: TicketRow }> {
    const row = this.row(ticketId)
    // Someone else's ticket is indistinguishable from no ticket.
    if (
      !row ||
      (viewer.kind === 'player' &&
        !(JSON.parse(row.players) as TicketPlayer[]).some((p) => p.playerId === viewer.playerId))
    ) {
      return problem('not-found', `No ticket '${ticketId}'`)
    }
    return { ok: true, row }
  }

  private row(ticketId: string): TicketRow | undefined {
    return one<TicketRow>(this.sql, `SELECT * FROM tickets WHERE id = ?`, ticketId)
  }

  private view(row: TicketRow): TicketView {
    let match: TicketView['match'] = null
    if (row.state === 'matched' && row.match_id) {
      const m = one<{ setup: string }>(
        this.sql,
        `SELECT setup FROM matches WHERE id = ?`,
        row.match_id,
      )
      if (m) {
        const setup = JSON.parse(m.setup) as SessionSetup
        match = { sessionId: setup.sessionId, players: setup.roster }
      }
    }
    return {
      ticketId: row.id,
      queue: this.queue!,
      region: this.region!,
      status: row.state,
      leader: row.leader,
      players: (JSON.parse(row.players) as TicketPlayer[]).map((p) => p.playerId),
      attributes: row.attributes ? (JSON.parse(row.attributes) as TicketAttributesValue) : null,
      enqueuedAt: row.enqueued_at,
      expiresAt: row.expires_at,
      expiresIn: this.expiresIn(row),
      reason: row.state === 'cancelled' ? row.reason : null,
      match,
    }
  }

  /**
   * How long a ticket has left, by the pool's clock: a client times its own wait by this, since a
   * device's clock may be far from the server's (players move it to skip game timers).
   */
  private expiresIn(row: TicketRow): number {
    return Math.max(0, row.expires_at - this.now())
  }

  private waitForChange(ticketId: string, reader: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let readers = this.waiters.get(ticketId)
      if (!readers) this.waiters.set(ticketId, (readers = new Map()))
      let set = readers.get(reader)
      if (!set) readers.set(reader, (set = new Set()))
      const done = () => {
        stopTimer()
        set.delete(done)
        if (set.size === 0 && readers.get(reader) === set) readers.delete(reader)
        if (readers.size === 0 && this.waiters.get(ticketId) === readers) {
          this.waiters.delete(ticketId)
        }
        resolve()
      }
      const stopTimer = this.waitTimers.after(ms, done)
      if (set.size >= MAX_WAITS_PER_READER) set.values().next().value!()
      set.add(done)
    })
  }

  private wake(ticketId: string): void {
    const readers = this.waiters.get(ticketId)
    if (!readers) return
    for (const set of [...readers.values()]) for (const done of [...set]) done()
  }

  /**
   * Ends a waiting ticket (cancelled or expired): out of the index, the player free to join
   * again, its sockets told and closed, long-polls answered.
   */
  private finish(
    ticketId: string,
    state: 'cancelled' | 'expired',
    reason: string,
    now: number,
    opts: { many?: boolean } = {},
  ): void {
    const row = this.row(ticketId)
    if (!row || row.state !== 'waiting') return
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        `UPDATE tickets SET state = ?, reason = ?, finished_at = ?, grace_until = NULL WHERE id = ?`,
        state,
        reason,
        now,
        ticketId,
      )
      this.sql.exec(`DELETE FROM active WHERE ticket_id = ?`, ticketId)
    })
    const players = JSON.parse(row.players) as TicketPlayer[]
    if (this.index?.remove(ticketId)) this.waitingPlayerTotal -= players.length
    ticketOutcomes.inc({ ...this.labels(), outcome: state === 'expired' ? 'expired' : reason })
    // Support is asked "I was queued and then dropped": the line that says why outlives the
    // ticket's row (kept 10 minutes). At `warn` when the player did not choose it and it was no
    // plain time-out (a lost connection, a party or queue change, an erasure or a ban), but for
    // one of many ended in one step (a queue changed, a mass disconnect), whose caller logs one
    // line for all at `warn`: Cloudflare keeps 256 KB of an invocation's logs.
    const chosen = state === 'expired' || reason === 'cancelled'
    log(chosen || opts.many ? 'info' : 'warn', 'ticket finished', {
      actor: this.actor,
      ticketId,
      players: players.map((p) => p.playerId),
      outcome: state,
      reason,
      waitedMs: now - row.enqueued_at,
    })
    this.updateGauges()
    const message: ServerMessage =
      state === 'expired' ? { type: 'expired', ticketId } : { type: 'cancelled', ticketId, reason }
    for (const ws of this.socketsOf(row)) {
      this.send(ws, message)
      this.detachSocket(ws)
      this.closeSocket(ws, 1000, state === 'expired' ? 'ticket expired' : 'ticket cancelled')
    }
    this.wake(ticketId)
  }

  /** Expires tickets and ends graces that are due; true if anything changed. */
  private housekeep(now: number): boolean {
    if (this.nextDeadline !== null && now < this.nextDeadline) return false
    // Two indexed lookups: this runs on every join, so it must not scan the waiting tickets.
    const expired = all<{ id: string }>(
      this.sql,
      `SELECT id FROM tickets WHERE state = 'waiting' AND expires_at <= ?`,
      now,
    )
    for (const t of expired) this.finish(t.id, 'expired', 'expired', now)
    const gone = all<{ id: string }>(
      this.sql,
      `SELECT id FROM tickets WHERE grace_until IS NOT NULL AND grace_until <= ?`,
      now,
    )
    const cancelled: string[] = []
    for (const t of gone) {
      const row = this.row(t.id)
      if (!row) continue
      // The earliest of its players' own deadlines: theirs may have moved on since (a poll).
      if (this.judgeGrace(row, this.openOn(row), now) === true) continue
      this.finish(t.id, 'cancelled', 'disconnected', now, { many: true })
      cancelled.push(t.id)
    }
    manyFinished(this.actor, 'disconnected', cancelled)
    this.nextDeadline = this.earliestDeadline()
    return expired.length + cancelled.length > 0
  }

  /** The earliest expiry or grace end still ahead (Infinity when there is none). */
  private earliestDeadline(): number {
    const expiry = one<{ t: number | null }>(
      this.sql,
      `SELECT min(expires_at) AS t FROM tickets WHERE state = 'waiting'`,
    )
    const grace = one<{ t: number | null }>(
      this.sql,
      `SELECT min(grace_until) AS t FROM tickets WHERE grace_until IS NOT NULL`,
    )
    return Math.min(expiry?.t ?? Infinity, grace?.t ?? Infinity)
  }

  private deadlineAt(t: number): void {
    if (this.nextDeadline !== null) this.nextDeadline = Math.min(this.nextDeadline, t)
  }

  // ---------------------------------------------------------------------------------------------
  // Matching

  /**
   * Runs matching now, persists what it found, creates those sessions, and sets the alarm. Earlier
   * matches whose creation is due again are the alarm's (deliverDue), which is armed for them.
   */
  private async settle(): Promise<void> {
    const made = this.matchNow(this.now())
    if (made.length > 0) await this.deliverAll(made)
    await this.scheduleAlarm()
  }

  /**
   * Finds matches and records them in the same synchronous step that took their tickets out of
   * the index: nothing can interleave, and a crash before the write leaves the tickets waiting.
   * Each is recorded with its first creation attempt's lease already taken (see deliverDue), and
   * returned for the caller to deliver.
   */
  private matchNow(now: number): MatchRow[] {
    const index = this.index
    const config = this.config
    if (!index || !config) return []
    const found = index.findMatches(now, { max: MATCHES_PER_STEP })
    if (found.length === 0) return []
    for (const m of found) for (const t of m.tickets) this.waitingPlayerTotal -= t.players.length
    const made: MatchRow[] = []
    const madeLines: { sessionId: string; ticketIds: string[]; players: string[] }[] = []
    try {
      this.ctx.storage.transactionSync(() => {
        for (const m of found) {
          const sessionId = crypto.randomUUID()
          const setup: SessionSetup = {
            sessionId,
            rules: config.rules,
            roster: drawnTurnOrder(m),
            seed: newSeed(),
            ...(config.rulesOptions !== undefined ? { options: config.rulesOptions } : {}),
            queue: this.queue,
            region: this.region,
            // A match of one ticket (a party filling a one-team queue) beat nobody outside it:
            // a party with an alt, played again and again, would farm the board's wins.
            leaderboardId: m.tickets.length > 1 ? config.leaderboardId : null,
          }
          const ticketIds = m.tickets.map((t) => t.id)
          const row: MatchRow = {
            id: sessionId,
            state: 'pending',
            setup: JSON.stringify(setup),
            ticket_ids: JSON.stringify(ticketIds),
            created_at: now,
            attempts: 0,
            next_attempt_at: now + CREATE_LEASE_MS,
            last_error: null,
            done_at: null,
          }
          // Stored with its first attempt counted (the call below, under its lease): one a reset
          // cuts off counts too. `row` is the match as before that lease, as deliverDue reads it.
          this.sql.exec(
            `INSERT INTO matches (id, state, setup, ticket_ids, created_at, next_attempt_at, attempts)
             VALUES (?, ?, ?, ?, ?, ?, 1)`,
            row.id,
            row.state,
            row.setup,
            row.ticket_ids,
            row.created_at,
            row.next_attempt_at,
          )
          this.sql.exec(
            `UPDATE tickets SET state = 'matching', match_id = ?, grace_until = NULL
             WHERE id IN (${ticketIds.map(() => '?').join(', ')}) AND state = 'waiting'`,
            sessionId,
            ...ticketIds,
          )
          made.push(row)
          madeLines.push({ sessionId, ticketIds, players: setup.roster.map((p) => p.playerId) })
        }
      })
    } catch (err) {
      // The index already let the tickets go; SQLite still has them waiting, so start over from it.
      log('error', 'recording matches failed', { actor: this.actor, ...errorFields(err) })
      this.rebuildIndex()
      return []
    }
    // Logged once recorded (a transaction that failed made none).
    for (const line of madeLines) log('info', 'match made', { actor: this.actor, ...line })
    this.updateGauges()
    return made
  }

  /**
   * Creates the sessions of pending matches whose attempt is due. Each attempt first takes a
   * lease: its next attempt moves CREATE_LEASE_MS ahead and the alarm is armed for it, so an
   * instance reset during the call leaves a retry behind, and the alarm does not spin on
   * attempts still in flight.
   */
  private async deliverDue(now: number): Promise<void> {
    // A step's worth: a GameSession outage leaves matches pending by the thousand, and a step
    // sending every one at once would load them all and outrun the runtime's subrequests. The
    // alarm, armed for the rest (due now), comes straight back.
    const due = all<MatchRow>(
      this.sql,
      `SELECT * FROM matches WHERE state = 'pending' AND next_attempt_at <= ?
       ORDER BY created_at LIMIT ?`,
      now,
      MATCHES_PER_STEP,
    )
    if (due.length === 0) return
    // The lease counts as an attempt: one whose instance was reset during the call never
    // answers, and would otherwise be tried for good, its players held in `matching`.
    this.sql.exec(
      `UPDATE matches SET next_attempt_at = ?, attempts = attempts + 1
       WHERE id IN (${due.map(() => '?').join(', ')})`,
      now + CREATE_LEASE_MS,
      ...due.map((m) => m.id),
    )
    // (One whose call is still out keeps it: its answer decides.)
    const spent = due.filter(
      (m) =>
        (m.attempts >= MAX_CREATE_ATTEMPTS || now - m.created_at >= MATCH_GIVE_UP_MS) &&
        !this.delivering.has(m.id),
    )
    for (const m of spent) {
      this.failAttempt(m, {
        ok: false,
        problem: 'unavailable',
        detail: `gave up after ${m.attempts} attempts${m.last_error ? ` (last: ${m.last_error})` : ''}`,
      })
    }
    await this.deliverAll(due.filter((m) => !spent.includes(m)))
  }

  /**
   * Creates the sessions of pending matches whose lease this step took (their rows as read or
   * written by it), with the alarm armed for the lease first.
   */
  private async deliverAll(leased: MatchRow[]): Promise<void> {
    // Claimed before anything awaits, while the rows are current. A call still out for one of
    // them keeps it: its answer may come a moment after its lease ran out, even while this step
    // arms the alarm, and a second call then would complete the match twice from a stale row.
    const claimed = leased.filter((m) => !this.delivering.has(m.id))
    for (const m of claimed) this.delivering.add(m.id)
    try {
      await this.scheduleAlarm()
    } catch (err) {
      for (const m of claimed) this.delivering.delete(m.id)
      throw err
    }
    await Promise.all(claimed.map((m) => this.deliver(m)))
  }

  /**
   * When the match's earliest ticket joined: the time its session judges its players' erasures
   * by. Not when the match was made: a ticket that joined before a player's erasure is theirs (a
   * join after it with their old token is refused), and a match made between the erasure and
   * the cancel of their ticket (a moment, or as long as their pool does not answer the erasure)
   * would otherwise play them as a new player, and give them a profile and a rating again. A
   * player erased after that join who came back and joined this match since is counted erased
   * for it too: their result is not rated, a rare loss on the side of their privacy.
   */
  private earliestJoin(row: MatchRow): number {
    const joined = one<{ at: number | null }>(
      this.sql,
      `SELECT min(t.enqueued_at) AS at FROM tickets t JOIN json_each(?) j ON t.id = j.value`,
      row.ticket_ids,
    )
    return Math.min(joined?.at ?? row.created_at, row.created_at)
  }

  /** Creates the session of a match deliverAll claimed for this step, and releases the claim. */
  private async deliver(row: MatchRow): Promise<void> {
    try {
      const setup = JSON.parse(row.setup) as SessionSetup
      let result: CreateSessionResult
      try {
        result = await within(
          this.sessionCreator(setup, this.earliestJoin(row)),
          CREATE_LEASE_MS,
          'session creation',
        )
      } catch (err) {
        result = {
          ok: false,
          problem: 'unavailable',
          detail: err instanceof Error ? err.message : String(err),
        }
      }
      if (result.ok) await this.completeMatch(row, setup)
      else this.failAttempt(row, result)
    } finally {
      this.delivering.delete(row.id)
    }
  }

  private async completeMatch(row: MatchRow, setup: SessionSetup): Promise<void> {
    const now = this.now()
    const ticketIds = JSON.parse(row.ticket_ids) as string[]
    // At most MAX_ROSTER tickets (a ticket holds one player or more), within MAX_BOUND_VALUES.
    const ticketList = ticketIds.map(() => '?').join(', ')
    const read = new Map(
      all<TicketRow>(
        this.sql,
        `SELECT * FROM tickets WHERE id IN (${ticketList})`,
        ...ticketIds,
      ).map((t) => [t.id, t]),
    )
    const tickets = ticketIds.flatMap((id) => read.get(id) ?? [])
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`UPDATE matches SET state = 'created', done_at = ? WHERE id = ?`, now, row.id)
      if (tickets.length === 0) return
      this.sql.exec(
        `UPDATE tickets SET state = 'matched', finished_at = ? WHERE id IN (${ticketList})`,
        now,
        ...ticketIds,
      )
      this.sql.exec(`DELETE FROM active WHERE ticket_id IN (${ticketList})`, ...ticketIds)
      insertRows(
        this.sql,
        `INSERT INTO wait_samples (at, wait_ms)`,
        // The wait a player sees: from the join to match_found, session creation included.
        tickets.map((t) => [now, Math.max(0, now - t.enqueued_at)]),
      )
      this.sql.exec(
        `DELETE FROM wait_samples WHERE seq <= (SELECT max(seq) FROM wait_samples) - ?`,
        WAIT_SAMPLES,
      )
    })
    const labels = this.labels()
    matchesMade.inc(labels)
    for (const t of tickets) {
      ticketOutcomes.inc({ ...labels, outcome: 'matched' }, 1)
      waitSeconds.observe(labels, Math.max(0, now - t.enqueued_at) / 1000)
    }
    this.updateRates(now)
    // Tokens first (signing awaits), then every send in one synchronous pass. A socket whose
    // token has expired is told nothing (closed, 4001): its player hears the match when a socket
    // with a live token connects, as one with no socket open at the match does.
    const expired: [string, string][] = []
    const deliveries = tickets.flatMap((t) =>
      this.socketsOf(t).flatMap((ws) => {
        const att = ws.deserializeAttachment() as Attachment
        if (this.tokenExpired(att)) {
          this.closeExpired(ws)
          expired.push([att.playerId, t.id])
          return []
        }
        return [{ t, ws, playerId: att.playerId }]
      }),
    )
    // Players with no socket open now hear the match when one connects, or when they join
    // again over HTTP, within the grace: a socket ticket's (in its grace, a reconnect on its
    // way), and an HTTP ticket's (an app killed between its polls, opened again and joining
    // anew, where a new ticket would leave this game waiting for them to forfeit). A read of
    // the matched ticket, the long-poll this step wakes included, is hearing it (heardOverHttp).
    // Not a game server's ticket: that server tells its players, and a socket they open to
    // queue anew is not sent back to its game.
    const told = new Set(deliveries.map((d) => d.playerId))
    // An HTTP ticket whose row says nothing of who made it was written by code before schema 13
    // (before an upgrade, or after a rollback to it): taken for a server's.
    const byServer = (t: TicketRow) =>
      t.by_server === 1 || (t.by_server === null && t.transport === 'http')
    const unheard = tickets.flatMap((t) =>
      (byServer(t) ? [] : (JSON.parse(t.players) as TicketPlayer[]))
        .filter((p) => !told.has(p.playerId))
        .map((p) => [p.playerId, t.id, now + this.ticketGraceMs()]),
    )
    // And those whose socket was closed for its expired token, on any ticket (a party member's
    // socket on an HTTP ticket too): their socket with a live token is told.
    for (const [playerId, ticketId] of expired) {
      if (told.has(playerId) || unheard.some((u) => u[0] === playerId)) continue
      unheard.push([playerId, ticketId, now + this.ticketGraceMs()])
    }
    if (unheard.length > 0) {
      insertRows(this.sql, `INSERT OR REPLACE INTO unheard (player_id, ticket_id, until)`, unheard)
    }
    const tokens = await Promise.all(
      // Session tokens are checked against real time, whatever the pool's clock says.
      deliveries.map((d) =>
        this.sessionToken(setup.sessionId, d.playerId).catch((err: unknown) => {
          log('error', 'signing a session token failed', { actor: this.actor, ...errorFields(err) })
          return null
        }),
      ),
    )
    // A socket that closed while the tokens were signed hears nothing, and its close found the
    // ticket matched (no grace): its player is owed the match as one with no socket open at the
    // match is, unless another of their sockets is told.
    const heard = new Set(
      deliveries.filter((d) => d.ws.readyState === WebSocket.OPEN).map((d) => d.playerId),
    )
    const dropped = new Map(
      deliveries
        .filter((d) => !heard.has(d.playerId))
        .map((d) => [d.playerId, [d.playerId, d.t.id, this.now() + this.ticketGraceMs()]]),
    )
    if (dropped.size > 0) {
      insertRows(this.sql, `INSERT OR REPLACE INTO unheard (player_id, ticket_id, until)`, [
        ...dropped.values(),
      ])
    }
    deliveries.forEach(({ t, ws }, i) => {
      const token = tokens[i]
      // Without a token (signing failed: AUTH_SECRET gone, say) the match is still told, so the
      // client stops waiting on a socket nothing more comes on, and reads its ticket over HTTP
      // for the token (the SDK does, for up to 2 minutes).
      this.send(ws, {
        type: 'match_found',
        ticketId: t.id,
        sessionId: setup.sessionId,
        ...(token ? { token } : {}),
        players: setup.roster,
      })
      // A join on this socket while the tokens were signed (a second tap with a new key) made it
      // another ticket's: it stays open for that wait, which would otherwise go on with no socket
      // and no grace, matchable while nobody listens.
      const att = ws.deserializeAttachment() as Attachment | null
      if (att?.ticketId !== t.id && att?.ticketId != null) return
      this.detachSocket(ws)
      this.closeSocket(ws, 1000, 'match found')
    })
    for (const t of tickets) this.wake(t.id)
  }

  /** A session token for a match's player (a method, so that tests can hold a signing). */
  private sessionToken(sessionId: string, playerId: string): Promise<string> {
    return issueSessionToken(this.env, sessionId, playerId)
  }

  private failAttempt(row: MatchRow, result: Extract<CreateSessionResult, { ok: false }>): void {
    const now = this.now()
    const attempts = row.attempts + 1
    createFailures.inc(this.labels())
    this.sendMetrics()
    const hopeless =
      attempts >= MAX_CREATE_ATTEMPTS ||
      now - row.created_at >= MATCH_GIVE_UP_MS ||
      result.problem === 'conflict' ||
      result.problem === 'validation'
    log(hopeless ? 'error' : 'warn', 'session create failed', {
      actor: this.actor,
      sessionId: row.id,
      attempts,
      problem: result.problem,
      detail: result.detail,
      abandoned: hopeless,
    })
    if (!hopeless) {
      const backoff = spreadBackoffMs(attempts, MAX_BACKOFF_MS)
      this.sql.exec(
        `UPDATE matches SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE id = ?`,
        attempts,
        now + backoff,
        withoutCredentials(result.detail).slice(0, 500),
        row.id,
      )
      return
    }
    const ticketIds = JSON.parse(row.ticket_ids) as string[]
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(
        `UPDATE matches SET state = 'failed', attempts = ?, last_error = ?, done_at = ? WHERE id = ?`,
        attempts,
        withoutCredentials(result.detail).slice(0, 500),
        now,
        row.id,
      )
      for (const id of ticketIds) {
        this.sql.exec(
          `UPDATE tickets SET state = 'cancelled', reason = 'session_failed', finished_at = ? WHERE id = ?`,
          now,
          id,
        )
        this.sql.exec(`DELETE FROM active WHERE ticket_id = ?`, id)
      }
    })
    for (const id of ticketIds) {
      const t = this.row(id)
      if (!t) continue
      ticketOutcomes.inc({ ...this.labels(), outcome: 'session_failed' })
      for (const ws of this.socketsOf(t)) {
        this.send(ws, { type: 'cancelled', ticketId: id, reason: 'session_failed' })
        this.detachSocket(ws)
        this.closeSocket(ws, 1011, 'session could not be created')
      }
      this.wake(id)
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sockets

  /** WebSocket upgrades forwarded by the Worker, which authenticated the player. */
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      return new Response('expected a WebSocket upgrade', { status: 426 })
    }
    const raw = request.headers.get(SOCKET_CONTEXT_HEADER)
    if (!raw) return new Response('missing socket context', { status: 400 })
    const sc = JSON.parse(raw) as SocketContext | ReattachContext
    if (!('reattachOnly' in sc) && this.readBeforeDeletion(sc.version)) {
      return problemResponse('not-found', `No queue '${sc.queue}'`)
    }
    this.ensureSchema()
    const now = this.now()
    let rating: number
    if ('reattachOnly' in sc) {
      // Neon could not be read: only a player whose ticket waits here is let in, to take it back
      // (a new join needs the queue's settings, the player's rating and a claim, all in Neon).
      if (this.queue === null) {
        // A region no queue ever had here (any player may name one): its wake leaves no
        // stored object behind.
        await this.dropUnconfigured()
        return problemResponse('unavailable', NEON_DOWN_AT_CONNECT, {}, databaseRetryAfter())
      }
      if (this.housekeep(now)) await this.scheduleAlarm()
      const held = this.activeTicketOf(sc.playerId)
      // Or one matched while they were away: told below, as any connect is (it needs no Neon).
      if (!held && !this.owesMatch(sc.playerId, now))
        return problemResponse('unavailable', NEON_DOWN_AT_CONNECT, {}, databaseRetryAfter())
      const own = held
        ? (JSON.parse(held.players) as TicketPlayer[]).find((p) => p.playerId === sc.playerId)
        : undefined
      rating = own?.rating ?? defaultRating().rating
    } else {
      const changed = this.applyConfig(sc.queue, sc.region, sc.config, sc.version)
      // A newer config may let waiting tickets match now (a wider gap): the alarm looks again.
      if (this.housekeep(now) || changed) await this.scheduleAlarm()
      rating = sc.rating
    }
    // Connections that died without a close (a phone off the network) hold none of the places.
    await this.dropSilentSockets(now, this.ctx.getWebSockets(`p:${sc.playerId}`))
    // A socket this pool closed counts until its client answers the close: a client that never
    // does would otherwise hold any number of the pool's places (maxSockets) with no limit of
    // its own. From a few seconds after it was first seen closing, which an answer beats.
    let forgiven = 0
    const open = this.ctx.getWebSockets(`p:${sc.playerId}`).filter((ws) => {
      if (ws.readyState === WebSocket.OPEN) return true
      if (ws.readyState !== WebSocket.CLOSING) return false
      const since = closingSince(
        ws,
        ws.deserializeAttachment() as Attachment | null,
        this.closingSeen,
        now,
      )
      if (since === undefined) return false
      // One whose client has gone quiet (it pinged, then nothing: a phone off the network, closed
      // as silent) is not holding on, and goes whenever the runtime notices the connection dead:
      // a few of those are not counted, however long that takes, but not any number (a client
      // that pinged once and then held on would add to what it holds with every silence). Its
      // pings are the runtime's, timed in real time.
      if (forgiven < SILENT_CLOSES_FORGIVEN && fellSilent(this.ctx, ws, Date.now())) {
        forgiven++
        return false
      }
      return now - since >= UNANSWERED_CLOSE_MS
    })
    if (open.length >= MAX_SOCKETS_PER_PLAYER) {
      return problemResponse(
        'conflict',
        `At most ${MAX_SOCKETS_PER_PLAYER} connections per player to one pool`,
      )
    }
    if (this.socketsAtMost() >= this.maxSockets) await this.dropIdleSockets(now)
    if (this.socketsAtMost() >= this.maxSockets) {
      return problemResponse(
        'unavailable',
        `This queue's pool in this region holds at most ${this.maxSockets} sockets: ` +
          'try again later, or join over HTTP (POST /v1/matchmaking/:queue/tickets)',
        { limit: this.maxSockets },
        { 'retry-after': '5' },
      )
    }
    if ('reattachOnly' in sc && sc.answerBy !== undefined && Date.now() > sc.answerBy) {
      // The Worker has answered this connect already: what is owed waits for the next.
      return problemResponse(
        'unavailable',
        'The connect was given up; retry',
        {},
        {
          'retry-after': '1',
        },
      )
    }
    const { 0: client, 1: server } = new WebSocketPair()
    this.ctx.acceptWebSocket(server, [`p:${sc.playerId}`])
    this.socketBound!++
    const attachment: Attachment = {
      playerId: sc.playerId,
      ...(typeof sc.tokenIssuedAt === 'number' ? { tokenIssuedAt: sc.tokenIssuedAt } : {}),
      ...(typeof sc.tokenExpiresAt === 'number' ? { tokenExpiresAt: sc.tokenExpiresAt } : {}),
      rating,
      ticketId: null,
      claim: 'reattachOnly' in sc ? null : this.goodClaim(sc.playerId, sc.claim),
      connectedAt: now,
    }
    // A reconnect: the player's socket ticket is still waiting, so this socket takes it over.
    const row = this.activeTicketOf(sc.playerId)
    const missed = row ? undefined : this.takeUnheardMatch(sc.playerId)
    if (missed) {
      // Matched while the player was away: this socket hears it, as theirs would have.
      server.serializeAttachment(attachment)
      // A token that could not be signed now leaves it to the next connect.
      if (!(await this.answerFromTicket(server, missed.row))) missed.putBack()
    } else if (row) {
      attachment.ticketId = row.id
      server.serializeAttachment(attachment)
      this.noteSocketOn(row.id, sc.playerId)
      this.endGraceIfAllBack(row)
      this.send(server, this.queuedFrame(row, true))
    } else {
      server.serializeAttachment(attachment)
    }
    // Its ticket's wait (or the one it joins) then has it looked at for silence.
    this.nextSilentCheck = Math.min(this.nextSilentCheck ?? Infinity, this.now() + SILENT_SOCKET_MS)
    return new Response(null, { status: 101, webSocket: client })
  }

  /** Whether a match made while `playerId` was away waits to be told to them (`unheard`). */
  private owesMatch(playerId: string, now: number): boolean {
    return (
      one<{ n: number }>(
        this.sql,
        `SELECT count(*) AS n FROM unheard WHERE player_id = ? AND until > ?`,
        playerId,
        now,
      )!.n > 0
    )
  }

  /**
   * The matched ticket `caller` has not heard of (takeUnheardMatch) that a join of `ids` is
   * answered with: the caller alone, or the caller's whole ticket (a party's join sent again).
   * A join of other players leaves it for the caller's next connect or join.
   */
  private missedMatchFor(caller: string, ids: string[]): TicketRow | null {
    const missed = this.takeUnheardMatch(caller)
    if (!missed) return null
    const players = (JSON.parse(missed.row.players) as TicketPlayer[]).map((p) => p.playerId)
    const same =
      (ids.length === 1 && ids[0] === caller) ||
      (ids.length === players.length && ids.every((id) => players.includes(id)))
    if (!same) {
      missed.putBack()
      return null
    }
    return missed.row
  }

  /**
   * Takes the player's ticket that was matched while no socket of theirs was open, if the
   * grace after the match has not run out (`unheard`): one connect gets it, even of two at once.
   * `putBack` returns it for the next connect if this one could not be told.
   */
  private takeUnheardMatch(playerId: string): { row: TicketRow; putBack: () => void } | undefined {
    this.sql.exec(`DELETE FROM unheard WHERE until <= ?`, this.now())
    const held = one<{ ticket_id: string; until: number }>(
      this.sql,
      `DELETE FROM unheard WHERE player_id = ? RETURNING ticket_id, until`,
      playerId,
    )
    const row = held ? this.row(held.ticket_id) : undefined
    if (!held || row?.state !== 'matched') return undefined
    const putBack = () =>
      this.sql.exec(
        `INSERT OR IGNORE INTO unheard (player_id, ticket_id, until) VALUES (?, ?, ?)`,
        playerId,
        held.ticket_id,
        held.until,
      )
    return { row, putBack }
  }

  private activeTicketOf(playerId: string): TicketRow | undefined {
    const held = one<{ ticket_id: string }>(
      this.sql,
      `SELECT ticket_id FROM active WHERE player_id = ?`,
      playerId,
    )
    return held ? this.row(held.ticket_id) : undefined
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    // A socket this pool closed (a flood, a match sent) still delivers what its client sends
    // until the client answers the close, and a flooding client never does: not heard at all.
    if (ws.readyState !== WebSocket.OPEN) return
    this.ensureSchema()
    if (farTooLarge(message)) {
      const att = ws.deserializeAttachment() as Attachment | null
      log('warn', 'socket closed for an oversized frame', {
        actor: this.actor,
        player: att?.playerId,
        size: typeof message === 'string' ? message.length : message.byteLength,
      })
      message = ''
      try {
        ws.close(OVERSIZED_CLOSE.code, OVERSIZED_CLOSE.reason)
      } catch {
        // Already closing.
      }
      // As if its client had closed it: a socket ticket's grace starts.
      return this.onSocketGone(ws)
    }
    this.lastFrameAt.set(ws, this.now())
    const pending = this.pendingFrames.get(ws) ?? 0
    if (pending >= MAX_PENDING_FRAMES || !this.takeFrameToken(ws)) {
      if (refusedTooOften(this.refusals, ws, this.frameClock())) {
        const att = ws.deserializeAttachment() as Attachment | null
        log('warn', 'flooding socket closed', { actor: this.actor, player: att?.playerId })
        try {
          ws.close(FLOOD_CLOSE.code, FLOOD_CLOSE.reason)
        } catch {
          // Already closing.
        }
        // As if its client had closed it: a socket ticket's grace starts.
        return this.onSocketGone(ws)
      }
      return this.sendError(
        ws,
        'rate_limited',
        `At most ${FRAMES_PER_SECOND} frames a second (burst ${FRAME_BURST}), and ${MAX_PENDING_FRAMES} waiting for an answer`,
      )
    }
    this.pendingFrames.set(ws, pending + 1)
    // Judged too large now, and only that kept while it waits its turn: a frame may be up to
    // FRAME_CLOSE_SIZE here, and eight of them behind a join waiting on Neon would all be kept
    // in the object's memory.
    // (A paused async function keeps its parameters alive: the text is let go of here, not left
    // in this frame while it awaits.)
    const kept = tooLargeFrame(message) ? TOO_LARGE : message
    message = ''
    // One socket's frames are handled in the order they came: a party `join` awaits Neon, and a
    // `cancel` sent right after it must find the ticket that join makes, not overtake it.
    const handled = (this.inFlight.get(ws) ?? Promise.resolve()).then(() =>
      this.handleFrame(ws, kept),
    )
    this.inFlight.set(ws, handled)
    try {
      await handled
    } finally {
      if (this.inFlight.get(ws) === handled) this.inFlight.delete(ws)
      const left = (this.pendingFrames.get(ws) ?? 1) - 1
      if (left > 0) this.pendingFrames.set(ws, left)
      else this.pendingFrames.delete(ws)
    }
  }

  /** Frames of each socket still being handled (a socket with none has no entry). */
  private readonly inFlight = new Map<WebSocket, Promise<void>>()
  /** How many of each socket's frames are being handled or wait to be (none: no entry). */
  private readonly pendingFrames = new Map<WebSocket, number>()
  /** Each socket's frames over the allowance, lately (flood.ts). */
  private readonly refusals: RefusalCounts<WebSocket> = new WeakMap()
  /**
   * Each player's allowance of socket `join`s (JOINS_PER_MINUTE, a third of it at once), across
   * their sockets on this pool: each queues a ticket a match may turn into a game session, and a
   * party join reads Neon first. The socket's frame allowance alone let a player's four sockets
   * do that 40 times a second.
   */
  private readonly joinTokens = new Map<string, Bucket>()
  /** Each socket's frame allowance (gone with the socket object, as after a hibernation). */
  private readonly frameTokens = new WeakMap<WebSocket, Bucket>()
  /** Real time for the frame allowance (tests move it by hand). */
  frameClock: () => number = Date.now
  /** Real time for sockets' token expiry, which tokens date by (tests move it by hand). */
  tokenClock: () => number = Date.now

  private takeJoinToken(
    playerId: string,
  ): { ok: true } | { ok: false; perMinute: number; retryAfter: number } {
    const perMinute = joinsPerMinute(this.env)
    const burst = Math.max(1, Math.floor(perMinute / 3))
    const now = this.frameClock()
    if (this.joinTokens.size >= MAX_JOIN_BUCKETS) {
      // Full buckets hold nothing a new one would not: drop those first, then the oldest.
      const refill = (1000 * burst * 60) / perMinute
      for (const [id, b] of this.joinTokens) if (now - b.at >= refill) this.joinTokens.delete(id)
      for (const id of this.joinTokens.keys()) {
        if (this.joinTokens.size < MAX_JOIN_BUCKETS) break
        this.joinTokens.delete(id)
      }
    }
    // What this instance does not hold, storage may (spent before the object slept).
    if (!this.joinTokens.has(playerId)) {
      const kept = one<{ tokens: number; at: number }>(
        this.sql,
        `SELECT tokens, at FROM join_allowance WHERE player_id = ?`,
        playerId,
      )
      if (kept) this.joinTokens.set(playerId, { tokens: kept.tokens, at: kept.at })
    }
    const ok = takeToken(this.joinTokens, playerId, now, perMinute / 60, burst)
    // Written only when a join is let through: a refused one spends nothing (its bucket refills
    // from the last taken as it would from this), and a client sending refused joins at the
    // frame rate must not make the pool write at that rate.
    if (ok) {
      const bucket = this.joinTokens.get(playerId)!
      this.sql.exec(
        `INSERT OR REPLACE INTO join_allowance (player_id, tokens, at) VALUES (?, ?, ?)`,
        playerId,
        bucket.tokens,
        bucket.at,
      )
    }
    if (ok) return { ok }
    // Until one whole join has come back, as the HTTP join's Retry-After says it.
    const missing = 1 - this.joinTokens.get(playerId)!.tokens
    return { ok, perMinute, retryAfter: Math.max(1, Math.ceil((missing * 60) / perMinute)) }
  }

  private takeFrameToken(ws: WebSocket): boolean {
    return takeToken(this.frameTokens, ws, this.frameClock(), FRAMES_PER_SECOND, FRAME_BURST)
  }

  private async handleFrame(
    ws: WebSocket,
    message: string | ArrayBuffer | typeof TOO_LARGE,
  ): Promise<void> {
    try {
      await this.onMessage(ws, message)
    } catch (err) {
      log('error', 'socket message failed', { actor: this.actor, ...errorFields(err) })
      this.sendError(ws, 'unavailable', 'The message could not be handled; try again')
    }
  }

  private async onMessage(
    ws: WebSocket,
    message: string | ArrayBuffer | typeof TOO_LARGE,
  ): Promise<void> {
    if (message === TOO_LARGE) {
      return this.sendError(
        ws,
        'too_large',
        `Frames are limited to ${MAX_CLIENT_FRAME_BYTES} bytes`,
      )
    }
    if (typeof message !== 'string') {
      return this.sendError(ws, 'malformed', 'Frames are JSON text')
    }
    let data: unknown
    try {
      data = JSON.parse(message)
    } catch {
      return this.sendError(ws, 'malformed', 'The frame is not valid JSON')
    }
    const type = (data as { type?: unknown } | null)?.type
    if (typeof type !== 'string' || !CLIENT_MESSAGE_TYPES.includes(type)) {
      return this.sendError(ws, 'unknown_type', `Known types: ${CLIENT_MESSAGE_TYPES.join(', ')}`)
    }
    const parsed = ClientMessage.safeParse(data)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      return this.sendError(
        ws,
        'invalid',
        issue ? `${issue.path.map(String).join('.') || '(root)'}: ${issue.message}` : 'invalid',
      )
    }
    const msg = parsed.data
    const att = ws.deserializeAttachment() as Attachment
    if ((msg.type === 'join' || msg.type === 'attach') && this.tokenExpired(att)) {
      this.closeExpired(ws)
      // Gone as any socket that closes: its ticket's grace starts, which a reconnect ends.
      return this.onSocketGone(ws)
    }
    switch (msg.type) {
      case 'ping':
        return this.send(ws, { type: 'pong' })
      case 'cancel': {
        // A ticket that ran out before this cancel expired (as HTTP says), not cancelled.
        const swept = this.housekeep(this.now())
        const row = att.ticketId ? this.row(att.ticketId) : undefined
        if (!row || row.state !== 'waiting') {
          if (swept) await this.scheduleAlarm()
          return this.sendError(ws, 'not_queued', 'There is no waiting ticket to cancel')
        }
        this.finish(row.id, 'cancelled', 'cancelled', this.now())
        await this.scheduleAlarm()
        return
      }
      case 'attach': {
        const swept = this.housekeep(this.now())
        if (swept) await this.scheduleAlarm()
        // Due expiries and graces ended first: one that ended this socket's ticket closed it.
        if (ws.readyState !== WebSocket.OPEN) return
        const row = this.row(msg.ticketId)
        const players = row ? (JSON.parse(row.players) as TicketPlayer[]) : []
        if (!row || !players.some((p) => p.playerId === att.playerId)) {
          return this.sendError(
            ws,
            'not_queued',
            `This pool holds no ticket '${msg.ticketId}' of yours`,
          )
        }
        await this.takeOver(ws, att, row)
        return
      }
      case 'join': {
        // A join sent again for a ticket its key already made: no new ticket, no allowance.
        if (msg.joinKey !== undefined && this.config) {
          // Sent again, its socket having dropped before the answer: a ticket the first one made
          // that has moved on since is answered as it stands, and nothing is queued.
          const swept = this.housekeep(this.now())
          if (swept) await this.scheduleAlarm()
          const keyed = this.keyedTicket(
            att.playerId,
            msg.party ?? [att.playerId],
            msg.attributes ?? null,
            msg.joinKey,
          )
          if (keyed && !keyed.ok) return this.sendError(ws, 'key_reused', keyed.detail)
          // Answered from the ticket as an `attach` is, before any party read: a client sending
          // it again and again (a loop, many sockets) would cost Neon a read each time, past
          // every allowance (a join sent again takes none).
          if (keyed) {
            await this.takeOver(ws, att, keyed.row)
            return
          }
        }
        const allowance = this.takeJoinToken(att.playerId)
        if (!allowance.ok) {
          return this.send(ws, {
            type: 'error',
            code: 'rate_limited',
            message: `At most ${allowance.perMinute} joins a minute; wait before joining again`,
            retryAfter: allowance.retryAfter,
          })
        }
        let party: SocketParty | null = null
        if (msg.party) {
          const p = await this.currentParty(att.playerId, msg.party)
          if (!p.ok) return this.sendError(ws, p.code, p.message)
          party = p.party
        }
        if (!this.config) return this.sendError(ws, 'unavailable', 'The queue is not configured')
        // Due expiries and graces end first: one that ends this socket's own ticket tells the
        // socket and closes it, and a closed socket queues nothing (no one would hear of the
        // match). A party read awaited Neon: the socket may have gone meanwhile, too.
        const swept = this.housekeep(this.now())
        if (ws.readyState !== WebSocket.OPEN) {
          if (swept) await this.scheduleAlarm()
          return
        }
        let players = party?.players ?? [{ playerId: att.playerId, rating: att.rating }]
        const attributes = msg.attributes ?? null
        const stale = ticketsOfPool(party?.staleTickets ?? [], this.queue!, this.region!)
        const staleCancelled = this.endStaleTickets(stale, ws)
        if (staleCancelled.length > 0) await this.scheduleAlarm()
        // The socket's own claim (read now: a fence may have dropped it since the frame came);
        // `enqueue` checks it against the fences.
        const held = unexpired((ws.deserializeAttachment() as Attachment).claim)
        const joinKey = msg.joinKey === undefined ? null : { owner: att.playerId, key: msg.joinKey }
        let entered = this.enqueue(
          players,
          attributes,
          'socket',
          att.playerId,
          held === null ? {} : { [att.playerId]: held.version },
          joinKey,
          party !== null,
        )
        if (!entered.ok && 'superseded' in entered) {
          // A party's members, or a player who joined elsewhere since connecting: a new claim,
          // which asks the other regions (one Neon statement, and a call to each region asked).
          const claimed = await this.claimFor(
            players.map((p) => p.playerId),
            att.playerId,
            att.tokenIssuedAt,
          )
          if (!claimed.ok) {
            if (claimed.code === 'conflict') this.countRefusal('other_region')
            await this.scheduleAlarm()
            return this.sendError(ws, claimed.code, claimed.message)
          }
          if (ws.readyState !== WebSocket.OPEN) return this.scheduleAlarm()
          // The ratings as Neon has them now: a socket kept open for hours (four idle ones, say)
          // must not queue at the rating it read when it connected, games ago.
          players = players.map((p) => ({
            ...p,
            rating: claimed.ratings.get(p.playerId) ?? p.rating,
          }))
          // Kept for the socket's next join only if no fence came while the claim was taken: a
          // fence then found no claim on the socket to drop, and would not come again.
          const current = ws.deserializeAttachment() as Attachment
          ws.serializeAttachment({
            ...current,
            rating: claimed.ratings.get(att.playerId) ?? current.rating,
            claim: this.goodClaim(att.playerId, {
              version: claimed.claim.versions[att.playerId]!,
              claimedAt: claimed.claim.claimedAt,
            }),
          } satisfies Attachment)
          entered = this.enqueue(
            players,
            attributes,
            'socket',
            att.playerId,
            claimed.claim.versions,
            joinKey,
            party !== null,
          )
          if (!entered.ok && 'superseded' in entered) {
            this.countRefusal('superseded')
            await this.scheduleAlarm()
            return this.sendError(
              ws,
              'conflict',
              `Player '${entered.superseded[0]}' joined this queue in another region meanwhile`,
            )
          }
        }
        if (!entered.ok) {
          const code =
            entered.problem === 'conflict' || entered.problem === 'unavailable'
              ? entered.problem
              : entered.problem === 'idempotency-key-reused'
                ? 'key_reused'
                : 'invalid'
          return this.sendError(ws, code, entered.detail)
        }
        const row = entered.row
        // The keyed ticket moved on while this join awaited Neon (the party read, a claim).
        if (row.state !== 'waiting') {
          await this.answerFromTicket(ws, row)
          return
        }
        // Owed in the same write as the ticket (nothing awaited between them), then sent below.
        if (party) this.owePartyNote(party.id, row.id)
        ws.serializeAttachment({
          ...(ws.deserializeAttachment() as Attachment),
          ticketId: row.id,
        } satisfies Attachment)
        this.noteSocketOn(row.id, att.playerId)
        this.send(ws, this.queuedFrame(row, entered.existing))
        if (!entered.existing) this.attachMembers(row, ws)
        if (party) {
          // Beside the socket's next frames, not ahead of them: a `cancel` sent right after the
          // join takes the ticket out at once, where it waited up to the Neon timeout while the
          // ticket could be matched. A note cut off by a reset stays owed (party_notes).
          void Promise.all([
            this.recordPartyTicket(party.id, row),
            forgetSettledTickets(
              this.env,
              party.id,
              stale,
              staleCancelled,
              { actor: this.actor },
              this.neonTimeoutMs,
            ),
          ]).catch((err: unknown) => {
            log('error', 'party ticket note failed', { actor: this.actor, ...errorFields(err) })
          })
        }
        // Beside the socket's next frames too: the sessions of the matches this step makes
        // (other players', maybe) are created before `settle` returns, and a `cancel` sent right
        // behind the join waited for them, while another step could match the ticket. A match
        // of this ticket tells the socket itself; a creation cut off is owed (its lease).
        void this.settle().catch((err: unknown) => {
          log('error', 'matching after a join failed', { actor: this.actor, ...errorFields(err) })
        })
        return
      }
    }
  }

  /**
   * Whether the socket's token has expired, with the skew the Worker's check allows (a socket
   * from before expiry was kept has none).
   */
  private tokenExpired(att: Attachment): boolean {
    return (
      att.tokenExpiresAt !== undefined &&
      this.tokenClock() >= att.tokenExpiresAt + CLOCK_SKEW_SECONDS * 1000
    )
  }

  private closeExpired(ws: WebSocket): void {
    try {
      ws.close(TOKEN_EXPIRED_CLOSE.code, TOKEN_EXPIRED_CLOSE.reason)
    } catch {
      // Already closing.
    }
  }

  /**
   * Puts the socket on ticket `row` of its player's (an `attach`, or a join sent again with its
   * key) and answers with the ticket as it stands: `queued` while it waits, else how it ended.
   */
  private async takeOver(ws: WebSocket, att: Attachment, row: TicketRow): Promise<void> {
    if (att.ticketId !== null && att.ticketId !== row.id) {
      const other = this.row(att.ticketId)
      if (other?.state === 'waiting') {
        return this.sendError(ws, 'conflict', `This socket waits on ticket '${other.id}'`)
      }
    }
    if (row.state !== 'waiting') {
      await this.answerFromTicket(ws, row)
      return
    }
    ws.serializeAttachment({ ...att, ticketId: row.id } satisfies Attachment)
    this.noteSocketOn(row.id, att.playerId)
    // A player on the ticket is here: a disconnect grace running on it ends, once everyone who
    // had a socket on it is.
    this.endGraceIfAllBack(row)
    this.send(ws, this.queuedFrame(row, true))
  }

  /** Notes that `playerId` has had a socket on ticket `ticketId` (ticket_sockets). */
  private noteSocketOn(ticketId: string, playerId: string): void {
    // Here on a socket: a grace of theirs, or polls of theirs, are over.
    this.sql.exec(
      `INSERT INTO ticket_sockets (ticket_id, player_id) VALUES (?, ?)
       ON CONFLICT (ticket_id, player_id) DO UPDATE SET gone_until = NULL, polled_at = NULL`,
      ticketId,
      playerId,
    )
  }

  /**
   * Ends the disconnect grace of `row` once everyone who had a socket on it is back (`present`:
   * players here though their socket is not attached yet); until then it runs to the earliest
   * of the absent players' own deadlines, none of which a return of someone else moves.
   */
  private endGraceIfAllBack(row: TicketRow, present: readonly string[] = []): void {
    // A ticket being matched (or over) has no grace to end, and must not be given one: nothing
    // would clear it, and its deadline, past, would bring the alarm back at once until it went.
    if (row.state !== 'waiting') return
    const open = this.openOn(row)
    for (const p of present) open.add(p)
    if (this.judgeGrace(row, open, this.now()) === null && !unnotedTicketLost(open)) {
      this.sql.exec(`UPDATE tickets SET grace_until = NULL WHERE id = ?`, row.id)
    }
  }

  /** Whether a player other than `playerId` (any, for null) has had a socket on `row`. */
  private othersNoted(row: TicketRow, playerId: string | null): boolean {
    return (
      one<{ n: number }>(
        this.sql,
        `SELECT count(*) AS n FROM ticket_sockets WHERE ticket_id = ? AND player_id IS NOT ?`,
        row.id,
        playerId,
      )!.n > 0
    )
  }

  /** The players with a socket open on `row`. */
  private openOn(row: TicketRow): Set<string> {
    return new Set(
      this.socketsOf(row).map((ws) => (ws.deserializeAttachment() as Attachment).playerId),
    )
  }

  /**
   * Sets the grace of `row`, a ticket with players noted in ticket_sockets, from theirs, `open`
   * those with a socket open on it now: each of the others is here until their own deadline, the
   * later of the end of their grace (from when their socket went; started now for one whose
   * socket went unseen, with an instance) and POLL_PRESENCE_MS after their last read of the
   * ticket over HTTP. The ticket's grace_until becomes the earliest deadline (none when everyone
   * is here); false when that is past: someone is gone. Null, changing nothing, for a ticket
   * with nobody noted (from before the notes), which is judged as a whole.
   */
  private judgeGrace(
    row: Pick<TicketRow, 'id'>,
    open: ReadonlySet<string>,
    now: number,
  ): boolean | null {
    const noted = all<{ player_id: string; polled_at: number | null; gone_until: number | null }>(
      this.sql,
      `SELECT player_id, polled_at, gone_until FROM ticket_sockets WHERE ticket_id = ?`,
      row.id,
    )
    if (noted.length === 0) return null
    let until = Infinity
    for (const n of noted) {
      if (open.has(n.player_id)) continue
      let gone = n.gone_until
      if (gone === null) {
        gone = now + this.ticketGraceMs()
        this.sql.exec(
          `UPDATE ticket_sockets SET gone_until = ? WHERE ticket_id = ? AND player_id = ?`,
          gone,
          row.id,
          n.player_id,
        )
      }
      const polled = n.polled_at === null ? -Infinity : n.polled_at + POLL_PRESENCE_MS
      until = Math.min(until, Math.max(gone, polled))
    }
    const graceUntil = until === Infinity ? null : until
    this.sql.exec(`UPDATE tickets SET grace_until = ? WHERE id = ?`, graceUntil, row.id)
    if (graceUntil !== null) this.deadlineAt(graceUntil)
    return graceUntil === null || graceUntil > now
  }

  /**
   * `playerId` read waiting socket ticket `row` over HTTP: see POLL_PRESENCE_MS. Counted even
   * while a socket of theirs looks open: a phone that changed networks leaves its socket open to
   * the pool (until its silence is judged, up to 90 s) while the client, which gave it up, reads
   * over HTTP; a read uncounted then would leave only the socket's grace once it is seen gone,
   * and cancel the ticket under a client still reading it. A read by one who stays on the socket
   * keeps them here at most 35 s past its loss.
   */
  private notePoll(row: TicketRow, playerId: string): void {
    if (row.state !== 'waiting' || row.transport !== 'socket') return
    this.sql.exec(
      `UPDATE ticket_sockets SET polled_at = ? WHERE ticket_id = ? AND player_id = ?`,
      this.now(),
      row.id,
      playerId,
    )
  }

  /** The `queued` frame for `row`: a socket's ticket, made by its join or taken up (`existing`). */
  private queuedFrame(row: TicketRow, existing: boolean): ServerMessage {
    return {
      type: 'queued',
      disconnectGraceSeconds: this.ticketGraceMs() / 1000,
      region: this.region!,
      ticketId: row.id,
      existing,
      expiresAt: row.expires_at,
      expiresIn: this.expiresIn(row),
    }
  }

  /**
   * Tells a socket how a ticket stands that is no longer waiting, as its own socket was told:
   * `queued` while its session is being made (the socket then gets `match_found` with the
   * others), `match_found` with a token once matched, `cancelled` or `expired` once over.
   */
  private async answerFromTicket(ws: WebSocket, row: TicketRow): Promise<boolean> {
    if (ws.readyState !== WebSocket.OPEN) return false
    const att = ws.deserializeAttachment() as Attachment
    if (row.state === 'matching') {
      ws.serializeAttachment({ ...att, ticketId: row.id } satisfies Attachment)
      this.send(ws, this.queuedFrame(row, true))
      return true
    }
    if (row.state === 'matched') {
      const match = this.view(row).match
      if (!match) {
        this.sendError(ws, 'conflict', 'The ticket this join made was matched long ago')
        return false
      }
      let token: string
      try {
        token = await this.sessionToken(match.sessionId, att.playerId)
      } catch (err) {
        log('error', 'signing a session token failed', { actor: this.actor, ...errorFields(err) })
        this.sendError(ws, 'unavailable', 'The match could not be sent now; try again')
        return false
      }

      this.send(ws, {
        type: 'match_found',
        ticketId: row.id,
        sessionId: match.sessionId,
        token,
        players: match.players,
      })
      // A party's new ticket took the socket while the token was signed (its leader queued
      // again): it stays open for that wait, as after a match told (completeMatch).
      const now = ws.deserializeAttachment() as Attachment | null
      if (now?.ticketId != null && now.ticketId !== row.id) return true
      this.closeSocket(ws, 1000, 'match found')
      return true
    }
    this.send(
      ws,
      row.state === 'expired'
        ? { type: 'expired', ticketId: row.id }
        : { type: 'cancelled', ticketId: row.id, reason: row.reason ?? 'cancelled' },
    )
    this.closeSocket(ws, 1000, row.state === 'expired' ? 'ticket expired' : 'ticket cancelled')
    return true
  }

  /**
   * Takes a claim on the queue for `ids` (`claimQueue`) for a socket's `join`, or says why not:
   * one of them waits in another region (`conflict`), one of them is under an account ban
   * (`banned`), the socket's token predates its player's erasure (`signed_out`), or Neon or a pool
   * did not answer in time.
   */
  private async claimFor(
    ids: string[],
    caller: string,
    tokenIssuedAt: number | undefined,
  ): Promise<
    | { ok: true; claim: QueueClaim; ratings: Map<string, number> }
    | { ok: false; code: ErrorCode; message: string }
  > {
    let r: Awaited<ReturnType<typeof claimQueue>>
    try {
      r = await within(
        claimQueue(
          this.env,
          this.queue!,
          this.region!,
          ids,
          tokenIssuedAt === undefined ? undefined : { playerId: caller, issuedAt: tokenIssuedAt },
        ),
        this.neonTimeoutMs,
        'queue claim',
      )
    } catch (err) {
      log('warn', 'queue claim not taken', { actor: this.actor, ...errorFields(err) })
      return {
        ok: false,
        code: 'unavailable',
        message: 'The queue cannot be joined now; try again',
      }
    }
    if (r.ok) return r
    if ('banned' in r) {
      return { ok: false, code: 'banned', message: bannedJoinDetail(caller, r.banned) }
    }
    if ('staleToken' in r) return { ok: false, code: 'signed_out', message: STALE_TOKEN_DETAIL }
    if ('erasedMembers' in r) {
      return {
        ok: false,
        code: 'party_forbidden',
        message: 'The party changed while joining; join again with its members',
      }
    }
    if ('queueChanged' in r) {
      // Its push reaches this pool shortly; the join then gets the settings' own answer.
      return {
        ok: false,
        code: 'unavailable',
        message: "The queue's settings are changing; try again",
      }
    }
    return { ok: false, code: 'conflict', message: conflictDetail(r, caller) }
  }

  /**
   * The party a socket's `join` naming `named` queues, read from Neon now (a party changes
   * while its members hold sockets open), or why it may not.
   */
  private async currentParty(
    playerId: string,
    named: readonly string[],
  ): Promise<
    { ok: true; party: SocketParty | null } | { ok: false; code: ErrorCode; message: string }
  > {
    let read: MatchmakingPlayer
    try {
      read = await within(this.partyReader(playerId), this.neonTimeoutMs, 'party read')
    } catch (err) {
      log('warn', 'party not read', { actor: this.actor, playerId, ...errorFields(err) })
      return { ok: false, code: 'unavailable', message: 'Parties cannot be read now; try again' }
    }
    const party = read.party
    // Naming only oneself, in no party, is a solo join (null); in a party it misses the others.
    if (party === null && soloJoin(playerId, named)) return { ok: true, party: null }
    const refusal = partyJoinRefusal(party, playerId, named)
    if (refusal || !party) {
      return { ok: false, code: 'party_forbidden', message: refusal ?? 'You are in no party' }
    }
    if (party.banned.length > 0) {
      return {
        ok: false,
        code: 'banned',
        message: bannedJoinDetail(playerId, party.banned),
      }
    }
    return {
      ok: true,
      party: {
        id: party.id,
        leader: party.leader,
        players: party.members.map((id) => ({ playerId: id, rating: party.ratings.get(id)! })),
        staleTickets: party.staleTickets,
      },
    }
  }

  /**
   * Attaches the other players' open sockets in this pool to their new party ticket and tells
   * them (`queued`), so members who connected before their leader joined get `match_found` too.
   */
  private attachMembers(row: TicketRow, except?: WebSocket): void {
    const players = JSON.parse(row.players) as TicketPlayer[]
    if (players.length < 2) return
    for (const p of players) {
      for (const ws of this.ctx.getWebSockets(`p:${p.playerId}`)) {
        if (ws === except || ws.readyState !== WebSocket.OPEN) continue
        const att = ws.deserializeAttachment() as Attachment | null
        if (!att || att.ticketId === row.id) continue
        // Its rights ended with its token: it takes on no ticket (the member's client reconnects
        // with a live one, and is attached then).
        if (this.tokenExpired(att)) {
          this.closeExpired(ws)
          continue
        }
        ws.serializeAttachment({ ...att, ticketId: row.id } satisfies Attachment)
        this.noteSocketOn(row.id, att.playerId)
        this.send(ws, this.queuedFrame(row, true))
      }
    }
  }

  /**
   * Owes Neon the note of a party's ticket (`recordPartyTicket`), in the write that made or
   * handed the ticket: a reset before the note is sent, or Neon out of reach, leaves it owed, and
   * the alarm sends it (`retryPartyNotes`). Held for NOTE_LEASE_MS while this call sends it.
   */
  private owePartyNote(partyId: string, ticketId: string): void {
    this.sql.exec(
      `INSERT OR REPLACE INTO party_notes (ticket_id, party_id, attempts, next_attempt_at)
       VALUES (?, ?, 0, ?)`,
      ticketId,
      partyId,
      this.now() + NOTE_LEASE_MS,
    )
  }

  /**
   * Notes the ticket on the party in Neon, for members who poll over HTTP and for membership
   * changes to cancel. If the party's members changed since they were read for this join, the
   * ticket no longer stands for the party and is cancelled (`party_changed`), as a change after
   * the note cancels it from the parties routes; true then. A note that fails (Neon down, or not
   * answering within the Neon timeout, since the socket's next frames wait for it) stays owed,
   * and the alarm tries again with backoff while the ticket lasts.
   */
  private async recordPartyTicket(partyId: string, row: TicketRow): Promise<boolean> {
    const players = (JSON.parse(row.players) as TicketPlayer[]).map((p) => p.playerId)
    let current: boolean
    try {
      current = await within(
        this.partyTicketNoter(partyId, row.id, players, row.enqueued_at),
        this.neonTimeoutMs,
        'party ticket note',
      )
    } catch (err) {
      const owed = one<{ attempts: number }>(
        this.sql,
        `SELECT attempts FROM party_notes WHERE ticket_id = ? AND party_id = ?`,
        row.id,
        partyId,
      )
      const attempts = (owed?.attempts ?? 0) + 1
      const backoff = spreadBackoffMs(attempts, MAX_BACKOFF_MS)
      log('warn', 'party ticket not recorded; will retry', {
        actor: this.actor,
        partyId,
        ticketId: row.id,
        attempts,
        ...errorFields(err),
      })
      if (owed) {
        this.sql.exec(
          `UPDATE party_notes SET attempts = ?, next_attempt_at = ? WHERE ticket_id = ? AND party_id = ?`,
          attempts,
          this.now() + backoff,
          row.id,
          partyId,
        )
        await this.scheduleAlarm()
      }
      return false
    }
    // Another party's join was handed the ticket meanwhile (the same players, their old party
    // gone unseen): its note decides now, and this answer, for a party that no longer holds the
    // ticket, neither settles that note nor ends the ticket. No note owed at all: another answer
    // (that party's, or this one's retry) has decided already, and ended the ticket if it had to.
    const owner = one<{ party_id: string }>(
      this.sql,
      `SELECT party_id FROM party_notes WHERE ticket_id = ?`,
      row.id,
    )?.party_id
    if (owner !== partyId) return false
    this.sql.exec(`DELETE FROM party_notes WHERE ticket_id = ?`, row.id)
    if (current) return false
    log('info', 'party changed while joining', { actor: this.actor, partyId, ticketId: row.id })
    const cancelled = this.row(row.id)?.state === 'waiting'
    this.finish(row.id, 'cancelled', 'party_changed', this.now())
    await this.scheduleAlarm()
    return cancelled
  }

  /**
   * Party notes owed are due now in a new instance: one held for a send the last instance had
   * under way (NOTE_LEASE_MS) would wait out the lease, 30 s in which the party's membership
   * changes miss the ticket (nothing else sends the note: a socket's reconnect takes its ticket
   * back without a join). A note that failed is left to its backoff (a Neon outage is not
   * retried at every wake).
   */
  private notesDueNow(): number {
    if (!this.schemaReady) return 0
    const now = this.now()
    return this.sql.exec(
      `UPDATE party_notes SET next_attempt_at = ? WHERE next_attempt_at > ? AND attempts = 0`,
      now,
      now,
    ).rowsWritten
  }

  /**
   * Sends the party notes owed and due (a reset cut their first try off, or Neon failed it), a
   * step's worth. A ticket that has ended meanwhile (cancelled, expired) needs none; a matched
   * one still gets it, so that members polling the party find their game.
   */
  private async retryPartyNotes(now: number): Promise<void> {
    const due = all<{ ticket_id: string; party_id: string }>(
      this.sql,
      `SELECT ticket_id, party_id FROM party_notes WHERE next_attempt_at <= ?
       ORDER BY next_attempt_at LIMIT ?`,
      now,
      NOTES_PER_STEP,
    )
    const sends: { partyId: string; row: TicketRow }[] = []
    for (const note of due) {
      const row = this.row(note.ticket_id)
      if (!row || row.state === 'cancelled' || row.state === 'expired') {
        this.sql.exec(`DELETE FROM party_notes WHERE ticket_id = ?`, note.ticket_id)
        continue
      }
      this.sql.exec(
        `UPDATE party_notes SET next_attempt_at = ? WHERE ticket_id = ?`,
        now + NOTE_LEASE_MS,
        note.ticket_id,
      )
      sends.push({ partyId: note.party_id, row })
    }
    // Six at a time, as many as an invocation may have open: the rest would wait in the
    // runtime's line with their Neon deadline running, and a Neon slow after a reset (when every
    // owed note is due at once) would see them time out unsent.
    const results = await settleAtMost(sends, OPEN_CONNECTIONS, (s) =>
      this.recordPartyTicket(s.partyId, s.row),
    )
    // As Promise.all did: the alarm logs the failure and backs off (the note stays owed).
    const failed = results.find((r) => r.status === 'rejected')
    if (failed) throw failed.reason
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    answerClose(ws, code, reason)
    await this.onSocketGone(ws)
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log('warn', 'socket error', { actor: this.actor, ...errorFields(error) })
    await this.onSocketGone(ws)
  }

  /**
   * Closes the sockets that fell silent (SILENT_SOCKET_MS: they pinged, then nothing), as if their
   * clients had closed them: a ticket whose last socket that was starts its grace, instead of
   * staying matchable until its TTL for a player who is gone. Sockets without a ticket go too:
   * left open, each would be the next silence forever, and the alarm came straight back for it.
   */
  private async dropSilentSockets(now: number, some?: WebSocket[]): Promise<void> {
    for (const ws of some ?? this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue
      // Its rights ended with its token: a socket kept up with pings would otherwise hold its
      // ticket matchable, with no grace, for the ticket's whole life.
      const att = ws.deserializeAttachment() as Attachment | null
      if (att && this.tokenExpired(att)) {
        log('info', 'socket closed at its token’s expiry', {
          actor: this.actor,
          ticketId: att.ticketId,
        })
        this.closeExpired(ws)
        await this.onSocketGone(ws)
        continue
      }
      if (!fellSilent(this.ctx, ws, now)) continue
      log('info', 'silent socket closed', { actor: this.actor, ticketId: att?.ticketId ?? null })
      closeSilent(ws)
      await this.onSocketGone(ws)
    }
    // Only a look at every socket tells the next silence. After a look at some (a player's, at
    // their connect) the next check stays as it was: closing sockets can only put it later, and
    // every socket of a crowd connecting must not cost a walk over all the others.
    if (some === undefined) this.nextSilentCheck = this.nextSilence(now)
  }

  /**
   * closingSince's note where a socket's attachment could not take it. In the attachment, since
   * in this instance's memory alone every hibernation forgot it, and a client that never answers
   * closes could add a socket to what it holds after each.
   */
  private readonly closingSeen = new WeakMap<WebSocket, number>()
  /** When each socket's last frame came, while the object is in memory (IDLE_SOCKET_MS). */
  private readonly lastFrameAt = new WeakMap<WebSocket, number>()
  /** When this instance began: what a socket accepted before `connectedAt` was kept counts from. */
  private readonly startedAt = Date.now()
  /** The last look for idle sockets (dropIdleSockets), at most one per IDLE_SWEEP_EVERY_MS. */
  private lastIdleSweep = -Infinity

  /**
   * Closes the sockets that hold no ticket, never pinged, and sent nothing for IDLE_SOCKET_MS
   * since they connected (a frame before a wake counts from the connect), as their clients
   * closing them would: what a full pool does before refusing a connect. Returns how many.
   */
  private async dropIdleSockets(now: number): Promise<number> {
    // A walk over every socket: a crowd connecting to a full pool must not pay one each.
    if (now - this.lastIdleSweep < IDLE_SWEEP_EVERY_MS) return 0
    this.lastIdleSweep = now
    let dropped = 0
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue
      if (this.ctx.getWebSocketAutoResponseTimestamp(ws) !== null) continue
      const att = ws.deserializeAttachment() as Attachment | null
      if (!att || att.ticketId !== null) continue
      const heard = Math.max(att.connectedAt ?? this.startedAt, this.lastFrameAt.get(ws) ?? 0)
      if (now - heard < IDLE_SOCKET_MS) continue
      try {
        ws.close(IDLE_CLOSE.code, IDLE_CLOSE.reason)
      } catch {
        // Closing already.
      }
      dropped++
      await this.onSocketGone(ws)
    }
    if (dropped > 0) {
      log('info', 'idle sockets closed: the pool is full', { actor: this.actor, dropped })
      // Counted again at the next look: closed, they no longer hold their places.
      this.socketBound = null
    }
    return dropped
  }

  /**
   * When one of the open sockets may next have fallen silent: a silence after its last ping, or
   * after `now` for one that has not pinged yet (it may start). Sockets without a ticket count
   * too (a party member's, say), since a ticket may come to them before the next look; the
   * alarm comes for it only while tickets wait. Null when no socket is open.
   */
  private nextSilence(now: number): number | null {
    let next = Infinity
    for (const ws of this.ctx.getWebSockets()) {
      if (ws.readyState !== WebSocket.OPEN) continue
      const pinged = this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? now
      next = Math.min(next, pinged + SILENT_SOCKET_MS + 1)
    }
    // Sockets whose tokens have expired are closed at these looks too (dropSilentSockets), within
    // SILENT_SOCKET_MS: each expiry is not a look of its own, which would walk every socket about
    // as often as one of them expires (every few seconds in a full pool).
    return next === Infinity ? null : next
  }

  /** How long a socket ticket outlives its last socket: the queue's, unless a test set one. */
  private ticketGraceMs(): number {
    if (this.graceMs !== undefined) return this.graceMs
    return this.config ? disconnectGraceMs(this.config) : DEFAULT_DISCONNECT_GRACE_SECONDS * 1000
  }

  /** The last socket of a waiting socket ticket left: its grace starts. */
  private async onSocketGone(ws: WebSocket): Promise<void> {
    if (!this.schemaReady) return
    try {
      const att = ws.deserializeAttachment() as Attachment | null
      if (!att?.ticketId) return
      const row = this.row(att.ticketId)
      if (!row || row.state !== 'waiting' || row.transport !== 'socket') return
      // Gone once no other socket of theirs is on it, whoever else's is (a party's members).
      const mine = (other: WebSocket) =>
        other !== ws &&
        (other.deserializeAttachment() as Attachment | null)?.playerId === att.playerId
      if (this.socketsOf(row).some(mine)) return
      const now = this.now()
      // Their own grace, whoever else's is running. One already running is kept: a socket the
      // pool closed as silent may still be reported closed by the runtime later, and that must
      // not start it over.
      this.sql.exec(
        `UPDATE ticket_sockets SET gone_until = coalesce(gone_until, ?)
          WHERE ticket_id = ? AND player_id = ?`,
        now + this.ticketGraceMs(),
        row.id,
        att.playerId,
      )
      const open = new Set(
        this.socketsOf(row)
          .filter((other) => other !== ws)
          .map((other) => (other.deserializeAttachment() as Attachment).playerId),
      )
      if (this.judgeGrace(row, open, now) === null) {
        // From before the notes: one grace for the ticket, kept once running (as above).
        const graceUntil = row.grace_until ?? now + this.ticketGraceMs()
        this.sql.exec(`UPDATE tickets SET grace_until = ? WHERE id = ?`, graceUntil, row.id)
        this.deadlineAt(graceUntil)
      }
      await this.scheduleAlarm()
    } catch (err) {
      log('error', 'socket close handling failed', { actor: this.actor, ...errorFields(err) })
    }
  }

  /** Open sockets attached to a ticket. */
  private socketsOf(row: TicketRow): WebSocket[] {
    const out: WebSocket[] = []
    for (const p of JSON.parse(row.players) as TicketPlayer[]) {
      for (const ws of this.ctx.getWebSockets(`p:${p.playerId}`)) {
        if (ws.readyState !== WebSocket.OPEN) continue
        const att = ws.deserializeAttachment() as Attachment | null
        if (att?.ticketId === row.id) out.push(ws)
      }
    }
    return out
  }

  private detachSocket(ws: WebSocket): void {
    const att = ws.deserializeAttachment() as Attachment | null
    if (att) ws.serializeAttachment({ ...att, ticketId: null } satisfies Attachment)
  }

  private send(ws: WebSocket, message: ServerMessage): void {
    try {
      ws.send(JSON.stringify(message))
    } catch {
      // Gone already: its close handler does the bookkeeping.
    }
  }

  private sendError(ws: WebSocket, code: ErrorCode, message: string): void {
    this.send(ws, { type: 'error', code, message })
  }

  private closeSocket(ws: WebSocket, code: number, reason: string): void {
    try {
      ws.close(code, reason)
    } catch {
      // Already closing or closed.
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Stats

  /** Waiting counts, matches in the last minute and recent wait times of this pool. */
  async stats(region: string): Promise<PoolStats> {
    this.ensureSchema()
    const now = this.now()
    if (this.housekeep(now)) await this.scheduleAlarm()
    const hourAgo = now - WAIT_SAMPLE_WINDOW_MS
    const samples = all<{ wait_ms: number; at: number }>(
      this.sql,
      `SELECT wait_ms, at FROM wait_samples WHERE at >= ? ORDER BY seq DESC LIMIT ?`,
      hourAgo,
      WAIT_SAMPLES,
    )
    return {
      region,
      waitingTickets: this.index?.size ?? 0,
      waitingPlayers: this.waitingPlayerTotal,
      matchesLastMinute: this.matchesSince(now - 60_000),
      waitSamplesMs: samples.map((r) => r.wait_ms),
      waitSampleAts: samples.map((r) => r.at),
      waitSamplesSince: samples.length < WAIT_SAMPLES ? hourAgo : samples.at(-1)!.at,
    }
  }

  /**
   * Matches made since `since`, dated by when their session was made and their players told (a
   * session that came up only after retries counts then, as `nexus_matchmaking_matches_total` does).
   */
  private matchesSince(since: number): number {
    return one<{ n: number }>(
      this.sql,
      `SELECT count(*) AS n FROM matches WHERE state = 'created' AND done_at >= ?`,
      since,
    )!.n
  }

  private labels(): { queue: string; region: string } {
    return { queue: this.queue ?? '?', region: this.region ?? '?' }
  }

  private countRefusal(reason: 'other_region' | 'superseded'): void {
    joinsRefused.inc({ ...this.labels(), reason })
    this.sendMetrics()
  }

  private updateGauges(owed = true): void {
    if (!this.queue) return
    waitingTickets.set(this.labels(), this.index?.size ?? 0)
    waitingPlayers.set(this.labels(), this.waitingPlayerTotal)
    if (owed) this.sendMetrics()
  }

  private updateRates(now: number): void {
    if (now < this.ratesAt + RATES_EVERY_MS) {
      this.ratesStale = true
      return
    }
    this.ratesAt = now
    this.ratesStale = false
    const labels = this.labels()
    matchesPerMinute.set(labels, this.matchesSince(now - 60_000))
    // The gauge must fall as matches leave the last minute, with or without new ones.
    // So must the wait percentiles as waits leave their window.
    const oldest = one<{ match: number | null; sample: number | null }>(
      this.sql,
      `SELECT (SELECT min(done_at) FROM matches WHERE state = 'created' AND done_at >= ?) AS match,
              (SELECT min(at) FROM wait_samples WHERE at >= ?) AS sample`,
      now - 60_000,
      now - WAIT_SAMPLE_WINDOW_MS,
    )
    const drops = [
      oldest?.match == null ? Infinity : oldest.match + 60_000 + 1,
      // A minute late at most: one alarm takes out the waits of a minute, not one alarm each.
      oldest?.sample == null ? Infinity : oldest.sample + WAIT_SAMPLE_WINDOW_MS + 60_000,
    ]
    const drop = Math.min(...drops)
    this.ratesDropAt = drop === Infinity ? null : drop
    const sorted = all<{ wait_ms: number }>(
      this.sql,
      `SELECT wait_ms FROM wait_samples WHERE at >= ? ORDER BY wait_ms`,
      now - WAIT_SAMPLE_WINDOW_MS,
    ).map((r) => r.wait_ms)
    waitP50.set(labels, (percentile(sorted, 50) ?? 0) / 1000)
    waitP95.set(labels, (percentile(sorted, 95) ?? 0) / 1000)
    waitSamples.set(labels, sorted.length)
    this.sendMetrics()
  }

  // ---------------------------------------------------------------------------------------------
  // The alarm: one schedule for every timed job of the pool.

  /** Alarm runs that failed in a row (backOffAlarm). */
  private readonly alarmFailures = new AlarmFailures(this.ctx.storage.sql)

  override async alarm(): Promise<void> {
    if (!this.schemaReady) return
    let wiped = false
    try {
      const now = this.now()
      // Only once one may have fallen silent: alarms come often while matches are made.
      if (this.nextSilentCheck !== null && now >= this.nextSilentCheck) {
        await this.dropSilentSockets(now)
      }
      this.housekeep(now)
      const made = this.matchNow(now)
      if (made.length > 0) await this.deliverAll(made)
      await this.deliverDue(now)
      await this.retryPartyNotes(this.now())
      this.sweep(this.now())
      if (this.deleted && (await this.wipeIfSettled(this.now()))) {
        wiped = true
        return
      }
      const later = this.now()
      if (this.ratesStale || (this.ratesDropAt !== null && later >= this.ratesDropAt)) {
        this.updateRates(later)
      }
      this.alarmFailures.succeeded()
    } catch (err) {
      log('error', 'alarm failed', {
        actor: this.actor,
        failuresInARow: this.alarmFailures.failed(),
        ...errorFields(err),
      })
    } finally {
      if (!wiped) {
        await this.scheduleAlarm()
        await backOffAlarm(this.ctx.storage, this.alarmFailures.value, this.now())
        // Last: the alarm that sends may be one brought forward for it.
        void sendMetricsAtAlarm(this.env, this.metricsAlarm)
      }
    }
  }

  /** After counting: sends this isolate's metrics, or brings the alarm forward for them. */
  private sendMetrics(): void {
    void sendMetricsSoon(this.env, this.metricsAlarm)
  }

  /**
   * The alarm as metrics may move it: not while it backs off (its failures count too, and would
   * bring it back every interval), nor for a pool whose storage was wiped or never made (an
   * alarm would make it again). Judged when it would be set.
   */
  private readonly metricsAlarm = guardedAlarm(
    this.ctx.storage,
    () => this.schemaReady && this.queue !== null && this.alarmFailures.value === 0,
  )

  /** Forgets finished tickets, matches and samples past their retention. */
  private sweep(now: number): void {
    // Fences keep real time (claims carry it), whatever the pool's clock says.
    this.sql.exec(`DELETE FROM fences WHERE at < ?`, Date.now() - FENCE_RETENTION_MS)
    // Join allowances full again (a minute refills any): a new one starts full.
    this.sql.exec(`DELETE FROM join_allowance WHERE at < ?`, this.frameClock() - 60_000)
    const before = now - RESULT_RETENTION_MS
    // `<=`: the alarm comes exactly at finished_at + RESULT_RETENTION_MS.
    this.sql.exec(
      `DELETE FROM join_keys WHERE ticket_id IN
         (SELECT id FROM tickets WHERE finished_at IS NOT NULL AND finished_at <= ?)`,
      before,
    )
    this.sql.exec(
      `DELETE FROM ticket_sockets WHERE ticket_id IN
         (SELECT id FROM tickets WHERE finished_at IS NOT NULL AND finished_at <= ?)`,
      before,
    )
    this.sql.exec(`DELETE FROM tickets WHERE finished_at IS NOT NULL AND finished_at <= ?`, before)
    this.sql.exec(
      `DELETE FROM matches WHERE done_at IS NOT NULL AND done_at <= ? AND state != 'pending'`,
      before,
    )
    // Matches owed to players who never came back: a connect drops those too, but a queue its
    // players stopped connecting to would keep them.
    this.sql.exec(`DELETE FROM unheard WHERE until <= ?`, now)
  }

  private async scheduleAlarm(opts: { rates?: boolean } = {}): Promise<void> {
    const now = this.now()
    const candidates: number[] = []
    const check = this.index?.nextUsefulCheck(now)
    if (check != null) candidates.push(check)
    // Each a min over its own index.
    this.nextDeadline ??= this.earliestDeadline()
    if (this.nextDeadline !== Infinity) candidates.push(this.nextDeadline)
    // While tickets wait, a socket of theirs may die without a close (dropSilentSockets).
    if (this.nextSilentCheck !== null && this.index !== null && this.index.size > 0) {
      candidates.push(this.nextSilentCheck)
    }
    if (this.ratesStale && opts.rates !== false) candidates.push(this.ratesAt + RATES_EVERY_MS)
    // Rates are not recomputed within RATES_EVERY_MS of the last time: an alarm at a drop time
    // inside that second would only mark them stale, and come straight back, again and again.
    if (this.ratesDropAt !== null) {
      candidates.push(Math.max(this.ratesDropAt, this.ratesAt + RATES_EVERY_MS))
    }
    // One statement: this runs two or three times per match made.
    const due = one<{ attempt: number | null; finished: number | null; note: number | null }>(
      this.sql,
      `SELECT (SELECT min(next_attempt_at) FROM matches WHERE state = 'pending') AS attempt,
              (SELECT min(finished_at) FROM tickets WHERE finished_at IS NOT NULL) AS finished,
              (SELECT min(next_attempt_at) FROM party_notes) AS note`,
    )
    if (due?.attempt != null) candidates.push(due.attempt)
    if (due?.note != null) candidates.push(due.note)
    if (due?.finished != null) candidates.push(due.finished + RESULT_RETENTION_MS)
    const wipeAt = this.deleted ? this.wipeDueAt(now) : null
    if (wipeAt !== null) candidates.push(wipeAt)
    if (candidates.length === 0) return
    const next = Math.max(now, Math.min(...candidates))
    const existing = await this.ctx.storage.getAlarm()
    if (existing === null || existing > next || existing < now)
      await this.ctx.storage.setAlarm(next)
  }
}

/**
 * One `warn` line for tickets a step ended together for a reason their players did not choose
 * (each has its own `ticket finished` line at `info`): a queue changed or a mass disconnect ends
 * thousands at once, past what Cloudflare keeps of one invocation's logs at a line each.
 */
function manyFinished(actor: string, reason: string, ticketIds: readonly string[]): void {
  if (ticketIds.length === 0) return
  log('warn', 'tickets finished', {
    actor,
    reason,
    count: ticketIds.length,
    ticketIds: ticketIds.slice(0, 50),
  })
}
