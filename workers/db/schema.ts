import { sql } from 'drizzle-orm'
import {
  bigint,
  boolean,
  doublePrecision,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
} from 'drizzle-orm/pg-core'

/**
 * Players known to Nexus: guests (identified by a device id) and players of a studio's own
 * identity provider (identified by the token's `sub`). Ratings live here because matchmaking
 * reads them and match results update them, both in Neon transactions.
 */
export const players = pgTable(
  'players',
  {
    id: text('id').primaryKey(),
    /** A guest's device id as its SHA-256 (hex), never in the clear: it is the guest's credential. */
    deviceId: text('device_id').unique(),
    name: text('name'),
    rating: doublePrecision('rating').notNull().default(1500),
    ratingDeviation: doublePrecision('rating_deviation').notNull().default(350),
    ratingVolatility: doublePrecision('rating_volatility').notNull().default(0.06),
    /**
     * When the player's last rated match ended: the time since grows their rating deviation
     * (Glicko-2's idle periods). Null: never rated.
     */
    ratedAt: timestamp('rated_at', { withTimezone: true, mode: 'date' }),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
  },
  // No index on rating: nothing reads players by it, and one made every rating update rewrite
  // the row's other index entries too (no heap-only update). Migration 0024 drops it.
)

/**
 * Players erased on request (`DELETE /v1/admin/players/:playerId`), by their bare id: what comes
 * in under that id afterwards (the result of a match they were already in) recreates no profile
 * and is archived without their name or metadata.
 */
export const erasedPlayers = pgTable(
  'erased_players',
  {
    id: text('id').primaryKey(),
    erasedAt: timestamp('erased_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    /**
     * When the erasure's walk ended (its closing sweep), null while it goes on: a call after it
     * is a new erasure, with a time of its own (the player may have come back since).
     */
    completedAt: timestamp('completed_at', { withTimezone: true, mode: 'date' }),
    /**
     * How far the erasure's clear of the player's names in `leaderboard_archive` has gone, in
     * the archive's player index order (board, cycle), and whether it reached the end: each
     * call goes on from there (`clearArchivedNames`). A new erasure starts it again.
     */
    archiveBoard: text('archive_board'),
    archiveCycle: integer('archive_cycle'),
    archiveCleared: boolean('archive_cleared').notNull().default(false),
  },
  // A new board takes on the erasures of the last weeks (recentErasuresAfter): tombstones are
  // kept for good, so without it that read walks every erasure ever made.
  (t) => [index('erased_players_erased_at_idx').on(t.erasedAt)],
)

/**
 * Players banned across the deployment (`PUT /v1/admin/players/:playerId/ban`): no guest token,
 * no matchmaking, and a ban on every board. Keyed by the bare id, with no profile needed: players
 * of an external identity provider may have none.
 */
export const playerBans = pgTable('player_bans', {
  playerId: text('player_id').primaryKey(),
  reason: text('reason'),
  bannedAt: timestamp('banned_at', { withTimezone: true, mode: 'date' })
    .notNull()
    .default(sql`now()`),
  /**
   * The banned guest's device (its SHA-256, as `players.device_id`), kept when an erasure deletes
   * the profile that linked it: the device would otherwise sign in as a new, unbanned player.
   * Deleted with the ban.
   */
  deviceId: text('device_id').unique(),
})

/**
 * Columns of a resource whose configuration an admin sets: Neon keeps the record, the resource's
 * Durable Object a copy. `version` grows by one at each change.
 */
function configColumns() {
  return {
    id: text('id').primaryKey(),
    config: jsonb('config').notNull(),
    version: integer('version').notNull().default(1),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
  }
}

/**
 * Leaderboard configuration. Neon is the record; the board's Durable Object keeps a copy it
 * receives on every change (and fetches from here if it wakes without one).
 */
export const leaderboards = pgTable('leaderboards', {
  ...configColumns(),
  // The latest version the board's object acknowledged: below `version`, a push was lost, and
  // the cron pushes it again.
  pushedVersion: integer('pushed_version').notNull().default(0),
  /**
   * Set when the board was deleted (`DELETE /v1/admin/leaderboards/:id`): the row stays, so that
   * `version` never goes back and a board made again under the id is told from the one before.
   */
  deletedAt: timestamp('deleted_at', { withTimezone: true, mode: 'date' }),
  /** The version the board, as it is now, was created at: above it, a PUT changed it. */
  bornVersion: integer('born_version').notNull().default(1),
  // The configuration's cycle, kept beside it by PostgreSQL: the cron reads every scheduled
  // board's cycle each minute, and reading it out of `config` decompressed whole configurations
  // (reward tiers make them tens of KiB, stored out of line).
  cycle: jsonb('cycle').generatedAlwaysAs(sql`config->'cycle'`),
})

/** One row per closed cycle: its window and how its archive went. */
export const leaderboardCycles = pgTable(
  'leaderboard_cycles',
  {
    leaderboardId: text('leaderboard_id').notNull(),
    cycle: integer('cycle').notNull(),
    startsAt: timestamp('starts_at', { withTimezone: true, mode: 'date' }).notNull(),
    endsAt: timestamp('ends_at', { withTimezone: true, mode: 'date' }).notNull(),
    entries: integer('entries').notNull(),
    archivedRows: integer('archived_rows').notNull().default(0),
    completedAt: timestamp('completed_at', { withTimezone: true, mode: 'date' }),
  },
  (t) => [
    primaryKey({ columns: [t.leaderboardId, t.cycle] }),
    // The cron's safety net finds archives left unfinished without reading every closed cycle.
    // An erasure's last look at the archive: the cycles completed since it began, whose pages
    // may have been written by statements that began before it (`clearLateArchivedNames`).
    index('leaderboard_cycles_completed_at_idx').on(t.completedAt),
    index('leaderboard_cycles_unfinished_idx')
      .on(t.leaderboardId)
      .where(sql`${t.completedAt} is null`),
  ],
)

/**
 * Final standings of closed cycles. The primary key (board, cycle, player) makes every archive
 * page idempotent: a page written twice (crash, retry, racing close) inserts nothing new.
 */
export const leaderboardArchive = pgTable(
  'leaderboard_archive',
  {
    leaderboardId: text('leaderboard_id').notNull(),
    cycle: integer('cycle').notNull(),
    playerId: text('player_id').notNull(),
    rank: integer('rank').notNull(),
    score: doublePrecision('score').notNull(),
    subscore: doublePrecision('subscore').notNull(),
    name: text('name'),
    metadata: jsonb('metadata'),
    submittedAt: timestamp('submitted_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.leaderboardId, t.cycle, t.playerId] }),
    uniqueIndex('leaderboard_archive_rank_idx').on(t.leaderboardId, t.cycle, t.rank),
    index('leaderboard_archive_player_idx').on(t.playerId, t.leaderboardId, t.cycle),
  ],
)

/** Rewards paid at cycle close: at most one per (board, cycle, player), whatever retries happen. */
export const rewards = pgTable(
  'rewards',
  {
    leaderboardId: text('leaderboard_id').notNull(),
    cycle: integer('cycle').notNull(),
    playerId: text('player_id').notNull(),
    rank: integer('rank').notNull(),
    reward: jsonb('reward').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    /** Set by an admin (a cheat found after the close): not to be paid; null while it stands. */
    voidedAt: timestamp('voided_at', { withTimezone: true, mode: 'date' }),
    voidReason: text('void_reason'),
  },
  (t) => [
    primaryKey({ columns: [t.leaderboardId, t.cycle, t.playerId] }),
    index('rewards_player_idx').on(t.playerId, t.createdAt),
    // The dashboard's rewards paid in the last day, per board, without reading a board's history.
    index('rewards_board_recent_idx').on(t.leaderboardId, t.createdAt),
    // A cycle's payout list in rank order, a page at a time (the admin payout route).
    index('rewards_cycle_rank_idx').on(t.leaderboardId, t.cycle, t.rank),
  ],
)

/** Matchmaking queue configuration (Neon is the record; each MatchPool keeps a copy). */
export const queues = pgTable('queues', {
  ...configColumns(),
  // Every region the queue has had: a config push goes to all of them, so a region's pool hears
  // that it was taken out even if the push of that change failed (it gets no joins to learn it).
  knownRegions: text('known_regions')
    .array()
    .notNull()
    .default(sql`'{}'::text[]`),
  // Regions whose pool has not acknowledged the current version: a PUT names every known region,
  // each acknowledged push takes its region out, and the cron pushes again to those left (a
  // region taken out gets no joins to learn a lost push from).
  unpushedRegions: text('unpushed_regions')
    .array()
    .notNull()
    .default(sql`'{}'::text[]`),
  // Set by a deletion (`DELETE /v1/admin/queues/:queue`): the row stays, so that a queue made
  // again under the id takes versions past the deleted one, which its pools refuse calls up to
  // (until they delete their storage), as they do any older configuration.
  deletedAt: timestamp('deleted_at', { withTimezone: true, mode: 'date' }),
})

/**
 * Which regions of a queue a player may hold a ticket in: one claim per (queue, player), so a
 * player waits in at most one region of a queue. `version` grows with every join (or socket
 * connect) of that player to the queue; `regions` maps each region that may still hold a live
 * ticket to the version claimed there. A join fences the other regions before queueing
 * (docs/matchmaking.md, "One ticket per queue").
 */
export const queueClaims = pgTable(
  'queue_claims',
  {
    queue: text('queue').notNull(),
    playerId: text('player_id').notNull(),
    version: bigint('version', { mode: 'number' }).notNull(),
    regions: jsonb('regions').$type<Record<string, number>>().notNull(),
    claimedAt: timestamp('claimed_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    primaryKey({ columns: [t.queue, t.playerId] }),
    // The cron prunes claims idle past any ticket's life (`pruneIdleClaims`).
    index('queue_claims_claimed_at_idx').on(t.claimedAt),
    // A ban or an erasure reads a player's claims in every queue (`removeFromQueues`), under the
    // player's lock: the primary key leads with the queue.
    index('queue_claims_player_idx').on(t.playerId),
  ],
)

/** Every game session created (by the matchmaker or an admin), for listing and auditing. */
export const gameSessions = pgTable(
  'game_sessions',
  {
    id: text('id').primaryKey(),
    queue: text('queue'),
    region: text('region'),
    rules: text('rules').notNull(),
    roster: jsonb('roster').notNull(),
    status: text('status').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    endedAt: timestamp('ended_at', { withTimezone: true, mode: 'date' }),
    /**
     * The hash of the session's setup, written when its object's storage is cleared: a keyed
     * admin create sent again after that is answered from it (the object keeps nothing).
     */
    setupHash: text('setup_hash'),
    /**
     * The seed and rules options of an ended session, written with `setup_hash`: with them and
     * the archived log, an admin replays the game (an audit) once its object keeps nothing.
     */
    setup: jsonb('setup'),
  },
  (t) => [
    index('game_sessions_status_idx').on(t.status, t.createdAt),
    // The admin's listing, newest first: of every session, of a queue's.
    index('game_sessions_created_idx').on(t.createdAt, t.id),
    index('game_sessions_queue_idx').on(t.queue, t.createdAt),
  ],
)

/**
 * A row per player of every session, with the session's creation time: a player's matches,
 * newest first, a page at a time in the primary key's order (a GIN index on the roster finds
 * them too, but every page would read all of a player's sessions to sort them).
 */
export const sessionPlayers = pgTable(
  'session_players',
  {
    playerId: text('player_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
    sessionId: text('session_id').notNull(),
  },
  (t) => [primaryKey({ columns: [t.playerId, t.createdAt, t.sessionId] })],
)

/**
 * The rows of `session_players` whose session is live, kept by PostgreSQL (a trigger on
 * `game_sessions`, migration 0033): a player's live sessions, read without walking their whole
 * history (a player of thousands of matches has one or two live).
 */
export const liveSessionPlayers = pgTable(
  'live_session_players',
  {
    playerId: text('player_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull(),
    sessionId: text('session_id').notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.playerId, t.createdAt, t.sessionId] }),
    // The session's rows leave together when it ends.
    index('live_session_players_session_idx').on(t.sessionId),
  ],
)

/**
 * The result of a finished match. The primary key (session) makes recording it exactly once:
 * the rating update is in the same transaction and only happens when this row is new.
 */
export const matchResults = pgTable('match_results', {
  sessionId: text('session_id').primaryKey(),
  queue: text('queue'),
  rules: text('rules').notNull(),
  result: jsonb('result').notNull(),
  ratingChanges: jsonb('rating_changes').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
    .notNull()
    .default(sql`now()`),
})

/** A finished session's event log, archived page by page; (session, seq) makes pages idempotent. */
export const sessionLogs = pgTable(
  'session_logs',
  {
    sessionId: text('session_id').notNull(),
    seq: integer('seq').notNull(),
    record: jsonb('record').notNull(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.seq] })],
)

/**
 * Parties players form themselves (invites, accepts, leaves). The leader is also a member row;
 * `ticket_id` is the party's latest matchmaking ticket, recorded when the leader joins a queue
 * with the party, so members who cannot hold a socket can find and poll it.
 */
export const parties = pgTable('parties', {
  id: text('id').primaryKey(),
  leader: text('leader').notNull(),
  ticketId: text('ticket_id'),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' })
    .notNull()
    .default(sql`now()`),
  updatedAt: timestamp('updated_at', { withTimezone: true, mode: 'date' })
    .notNull()
    .default(sql`now()`),
})

/**
 * Every ticket a party's leader made for the party in the last two hours (longer than any ticket
 * lives), in any queue and region, that may still be waiting: a membership change cancels all of
 * them, since a party may wait in several queues at once. `parties.ticket_id` is the latest of
 * them. A row is written only while the party's members are the ticket's players (see
 * `recordPartyTicket`); a note of the same queue and players made earlier then goes (a player
 * holds one ticket per queue, so that one has ended); rows older than two hours are pruned on
 * each write and by the cron.
 */
export const partyTickets = pgTable(
  'party_tickets',
  {
    // No foreign key: a note outlives its party (the last member leaving deletes it) until the
    // ticket is known cancelled, so the cron can still cancel one a change could not reach.
    partyId: text('party_id').notNull(),
    ticketId: text('ticket_id').notNull(),
    notedAt: timestamp('noted_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    /** When the pool made the ticket (ms since the epoch); null on notes from before 0014. */
    enqueuedAt: bigint('enqueued_at', { mode: 'number' }),
  },
  (t) => [
    primaryKey({ columns: [t.partyId, t.ticketId] }),
    // The cron walks stale notes in byte order (`stalePartyTickets`), which the primary key, in
    // the database's collation, cannot give: without this each page sorted the whole table.
    index('party_tickets_byte_order_idx').on(
      sql`${t.partyId} collate "C"`,
      sql`${t.ticketId} collate "C"`,
    ),
    // A ticket noted for a party since made again with the same players (handed the ticket its
    // players were on) is not the cron's to cancel for the party before (STALE_PARTY_TICKETS).
    index('party_tickets_ticket_idx').on(t.ticketId),
    // The cron's prune of notes past any ticket's life (`pruneOldPartyTickets`).
    index('party_tickets_noted_at_idx').on(t.notedAt),
  ],
)

/**
 * Who is in which party. `player_id` is the primary key, so a player is in at most one party:
 * two accepts racing for the same player are decided by it, and the loser's transaction rolls
 * back whole.
 */
export const partyMembers = pgTable(
  'party_members',
  {
    playerId: text('player_id').primaryKey(),
    partyId: text('party_id')
      .notNull()
      .references(() => parties.id, { onDelete: 'cascade' }),
    joinedAt: timestamp('joined_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
  },
  (t) => [index('party_members_party_idx').on(t.partyId, t.joinedAt)],
)

/**
 * Pending invites. Expired rows are ignored by every read and deleted a bounded batch at a time
 * on each invite write, so the table holds little more than the live invites.
 */
export const partyInvites = pgTable(
  'party_invites',
  {
    partyId: text('party_id')
      .notNull()
      .references(() => parties.id, { onDelete: 'cascade' }),
    playerId: text('player_id').notNull(),
    invitedAt: timestamp('invited_at', { withTimezone: true, mode: 'date' })
      .notNull()
      .default(sql`now()`),
    expiresAt: timestamp('expires_at', { withTimezone: true, mode: 'date' }).notNull(),
  },
  (t) => [
    primaryKey({ columns: [t.partyId, t.playerId] }),
    index('party_invites_player_idx').on(t.playerId, t.expiresAt),
    index('party_invites_expires_idx').on(t.expiresAt),
  ],
)

/**
 * Where a cron job that walks a large table in order stopped (`pruneSessionLogs`: the last
 * session, by creation time and id, whose log it deleted), so that each run goes on from there
 * instead of reading what it already did.
 */
export const maintenanceCursors = pgTable('maintenance_cursors', {
  job: text('job').primaryKey(),
  at: timestamp('at', { withTimezone: true, mode: 'date' }).notNull(),
  id: text('id').notNull(),
})
