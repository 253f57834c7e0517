import { DurableObject } from 'cloudflare:workers'
import { AlarmFailures, backOffAlarm, spreadBackoffMs } from '../workers/lib/alarm-backoff.ts'
import { canonicalJson } from '../workers/lib/canonical-json.ts'
import {
  parseSchedule,
  nextBoundary,
  previousBoundary,
  type Schedule,
} from '../workers/core/cycle.ts'
import {
  applySubmission,
  ARCHIVE_SPREAD_MS,
  archiveDelayMs,
  LATE_ARCHIVE_SPREAD_MS,
  IDEMPOTENCY_TTL_MS,
  lastRewardedRank,
  MATCH_WIN_KEY_PREFIX,
  rewardFor,
  type CycleRules,
  type LeaderboardConfig,
  type RewardTier,
  withConfigDefaults,
} from '../workers/core/leaderboard.ts'
import {
  compareEntries,
  decodeCursor,
  encodeCursor,
  RankIndex,
  type RankKey,
} from '../workers/core/rank-index.ts'
import type { Env } from '../workers/env.ts'
import { jsonbLength } from '../workers/core/rules/json.ts'
import {
  NeonArchiveWriter,
  type ArchiveColumns,
  type ArchiveReward,
  type ArchiveWriter,
} from '../workers/leaderboards/archive-writer.ts'
import { isDatabaseUnreachable, LOCK_NOT_AVAILABLE, pgErrorCode } from '../workers/db/client.ts'
import {
  boardRecord,
  deleteLeaderboardConfig,
  fencedBoardRecord,
  lastArchivedCycle,
  loadLeaderboardConfig,
} from '../workers/leaderboards/config-store.ts'
import { accountBansAfter } from '../workers/players/bans.ts'
import { recentErasuresAfter } from '../workers/players/erasure.ts'
import {
  CLOCK_SKEW_SECONDS,
  GUEST_ID_PREFIX,
  MAX_TOKEN_LIFETIME_SECONDS,
  STALE_TOKEN_DETAIL,
} from '../workers/lib/auth.ts'
import { submissionRefusals } from '../workers/leaderboards/metrics.ts'
import { errorFields, errorMessage, log, configureLog } from '../workers/lib/log.ts'
import { counter, gauge, histogram } from '../workers/lib/metrics.ts'
import {
  guardedAlarm,
  sendMetricsAtAlarm,
  sendMetricsNow,
  sendMetricsSoon,
} from '../workers/lib/metrics-flush.ts'
import type { ProblemType } from '../workers/lib/problem.ts'
import {
  all,
  hasTable,
  metaValuesIfReadable,
  one,
  schemaVersion,
  setSchemaVersion,
} from '../workers/lib/sql.ts'
import { within } from '../workers/lib/within.ts'

/** Rows per archive page: each page is one Neon transaction. */
export const ARCHIVE_PAGE_SIZE = 1000
/**
 * Text per archive page, at most (always at least one row): player ids, metadata and the rewards
 * that go in the same request. Every layer on the way to Neon escapes it again (the array
 * literal, then the request's JSON), so quote-heavy text grows up to fourfold (as does non-ASCII
 * text, in UTF-8 bytes): 1,000 rows of 4 KiB crossed Neon's 10 MiB request limit on every retry,
 * and 2 M characters stays under it.
 */
export const ARCHIVE_PAGE_CHARS = 2 * 1024 * 1024
/** Archive pages in flight at once: each is its own transaction, so they need no ordering. */
const ARCHIVE_CONCURRENCY = 4
/**
 * A cycle's entries, counted through the narrow index by seq (seq, cycle, player_id): SQLite
 * would otherwise count the rank index, whose rows carry the metadata, reading up to 4 KB an
 * entry for a count (seconds at a million). The narrow index cannot seek a cycle, so this reads
 * every cycle's rows (a closed one's until its rows are deleted), at about 40 bytes each: about
 * 50 ms a million, where the rank index read 0.2 to 2.3 s for the current cycle alone.
 * Exported for the test of its plan.
 */
export const COUNT_CYCLE_ENTRIES = `SELECT count(*) AS n FROM entries INDEXED BY entries_seq WHERE cycle = ?`

/**
 * Entries past which a wake leaves schema 2's rebuild of the rank index (with each entry's
 * metadata) for a later wake with fewer: a board of a version before 2026-12-02 holding a few
 * hundred thousand entries with kilobytes of metadata took tens of seconds to build it, in the
 * wake's blocking load, which the runtime cut off and started again at every wake. Until then the
 * narrower index (schema 1's) serves the same order; only an archive's reads look entries up.
 */
export const RANK_INDEX_REBUILD_MAX_ENTRIES = 50_000
const RANK_INDEX_PENDING = 'rank_index_pending'

/**
 * Failures in a row an archive batch that moved its cursor keeps (the failure itself then counts
 * one more): its retry waits a few seconds at most, 4 s, where one that moved nothing backs off
 * to 5 minutes.
 */
const PARTIAL_FAILURES_KEPT = 2

/** Rows deleted per statement once a cycle is safely in Neon. */
const PURGE_BATCH = 2_000
/**
 * Statements of PURGE_BATCH one archive run makes (its own step), then the alarm comes straight
 * back for the rest: counted, not timed (see SWEEP_MAX_BATCHES), so that deleting a million-entry
 * cycle neither holds the board for its whole length nor commits as one write. Rows carry their
 * metadata twice (the table and the rank index): 80,000 a run held the board 3 s with 512-byte
 * metadata and 8 to 11 s with 4 KB (measured with SQLite on the board's schema), queueing every
 * call at the busiest minutes of the new cycle; 4,000 are about 0.15 s and 0.5 s.
 */
const PURGE_MAX_BATCHES = 2
/** One alarm invocation works this long, then yields to a fresh one. */
const ARCHIVE_BUDGET_MS = 20_000
/**
 * A page write or completion with no answer in this long counts as failed (and is retried with
 * backoff): a request that never settles would otherwise hold the archive, and the alarm that
 * waits on it, for good. A write that did commit meanwhile changes nothing when sent again. A
 * backstop: Neon's requests give up sooner, at its query deadline (8 s, workers/db/client.ts).
 */
const ARCHIVE_CALL_MS = 60_000
/** An alarm this far past its time is taken as lost by the cron's check. */
const ALARM_LATE_MS = 60_000
/**
 * The idempotency records' player id for admin imports' keys: no player has it (ids are at least
 * one character), so an import's key never meets a player's submission key.
 */
const IMPORT_KEYS = ''
/** Likewise for admin closes' keys: player ids have no spaces. */
const CLOSE_KEYS = ' close'
const IDEMPOTENCY_SWEEP_BATCH = 5000
const SWEEP_INTERVAL_MS = 10 * 60 * 1000
/**
 * One sweep deletes at most this many batches, then leaves the rest to an alarm 1 s later: one
 * batch of IDEMPOTENCY_SWEEP_BATCH is about 0.15 s on a table of millions of records (keys
 * expire in time order, scattered over the primary key's pages; eight were over a second),
 * and 5,000 a second outpaces what a million players make expire. Counted, not timed: a
 * deployed object's clock stands still while it computes without I/O, so a time budget would
 * never run out.
 */
const SWEEP_MAX_BATCHES = 1
const MAX_BACKOFF_MS = 5 * 60 * 1000
/**
 * How long a done close's record (its status for the admin route) is kept: past it, the cycle's
 * record is Neon's (`leaderboard_cycles`, its standings and rewards), and a busy `1m` board
 * would otherwise add 1,440 rows a day here for good.
 */
export const CLOSE_RECORD_KEPT_MS = 35 * 24 * 60 * 60 * 1000
/**
 * The oldest close records each finished close looks at to prune: more than the one it adds, so
 * a backlog drains; few, so a close reads a bounded number of rows (records finish in cycle
 * order, so the oldest are first).
 */
const CLOSE_RECORDS_PRUNED = 32
/** How long a client may take to page through `top`: replaced versions are kept this long. */
const WALK_TTL_MS = 5 * 60 * 1000
/**
 * Keys one page of `top` may scan in each index (live, history) before it answers with what it
 * has and a cursor at the point it reached: entries written after a walk's snapshot are passed
 * over, and on a board that grew a lot since (or for a forged cursor's old snapshot) a page would
 * otherwise read most of the board on the object's one thread. About a millisecond of scanning.
 */
const PAGE_SCAN_BUDGET = 10_000
/**
 * At most this many replaced versions are kept (about 250 bytes each with the player id, so about
 * 12 MB in all of a Durable Object's 128); older walks then restart. 50,000 keeps five minutes of
 * walks at about 170 replacements a second.
 */
const MAX_HISTORY = 50_000
/**
 * The metadata those versions carry (a walk shows each entry with the metadata of its version),
 * in UTF-16 code units: at most 4 MB a board. Metadata is at most 4096 bytes an entry, so a board
 * with large metadata keeps fewer versions, and its older walks restart sooner.
 */
const MAX_HISTORY_METADATA = 2_000_000

const submissions = counter(
  'nexus_leaderboard_submissions_total',
  'Score submissions accepted (replays included)',
)
/** Bans one board keeps at most (a row each, and a primary-key read per submission). */
export const MAX_BANS = 100_000
/**
 * Meta keys of the catch-up with what the board missed (`catchUp`): the last player id taken on of
 * the account bans and of the erasures, and when to retry.
 */
const ACCOUNT_BANS_AFTER = 'account_bans_after'
const ERASURES_AFTER = 'erasures_after'
/** Meta key: the configuration version a deletion began under (`deleteBoard`). */
const DELETING = 'deleting'
/** How soon an alarm asks Neon again about a deletion it could not settle. */
const DELETION_RETRY_MS = 60_000
/** After Neon failed a call's settling of a deletion, the calls answered 503 without asking. */
const SETTLE_RETRY_MS = 5_000
const CATCH_UP_RETRY_AT = 'account_bans_retry_at'
/** Set for a board that existed before boards took account bans on: it takes the older ones. */
const ACCOUNT_BANS_OLDER_THAN_BOARD = 'account_bans_older_than_board'
const CATCH_UP_PAGE_SIZE = 1000
const CATCH_UP_PAGES_PER_RUN = 10
/**
 * How long a board keeps a player's erasure: as long as a token issued before it can be
 * accepted. That is MAX_TOKEN_LIFETIME_SECONDS, plus the clock skew twice (verification takes
 * a token up to that long past its `exp`, and an identity provider's `exp` may lie that far past
 * the lifetime), and a second for the whole-second `iat`.
 */
const ERASURE_KEPT_MS = (MAX_TOKEN_LIFETIME_SECONDS + 2 * CLOCK_SKEW_SECONDS + 1) * 1000
/** Erasures past ERASURE_KEPT_MS are forgotten at the next turn of this (UTC days). */
export const ERASURES_FORGOTTEN_EVERY_MS = 86_400_000
/** How long a board waits to read account bans again after Neon failed it. */
const ACCOUNT_BANS_RETRY_MS = 30_000

/** A ban as the admin API shows it. */
export interface BanView {
  playerId: string
  reason: string | null
  bannedAt: string
  /** Placed by the player's account ban, and lifted with it. */
  byAccount: boolean
}

const entriesRemoved = counter(
  'nexus_leaderboard_entries_removed_total',
  'Entries taken out of a current cycle, by cause: admin (moderation), ban, erasure',
)
const rowsArchived = counter(
  'nexus_leaderboard_rows_archived_total',
  'Rows written to the Neon archive',
  { unlabelled: true },
)
const closeRetries = counter(
  'nexus_leaderboard_close_retries_total',
  'Archive attempts that failed and were retried',
  { unlabelled: true },
)
const closeFailuresInARow = gauge(
  'nexus_leaderboard_close_failures_in_a_row',
  "Archive attempts of a board's oldest unfinished close that failed in a row, per board (0 once one goes through): the closes after it wait for it",
)
const storageBytes = gauge(
  'nexus_leaderboard_storage_bytes',
  "A board object's SQLite size, per board, as of its latest submission or alarm (Cloudflare's limit: 10 GB an object)",
)
/** A board past this logs a warning as it reports: its storage nears the object's 10 GB. */
const STORAGE_WARN_BYTES = 8 * 1024 ** 3
/**
 * Past this a board takes no new players (503, Retry-After): its entries' budget holds two cycles
 * (ENTRIES_STORAGE_BUDGET_BYTES), but each close waiting on Neon keeps its cycle's rows until
 * archived, so a Neon outage over several boundaries can fill the object's 10 GB, and a full
 * object refuses every write, the archive's progress and its deletes included. What is left
 * here goes to the players ranked already and to the archive once Neon is back.
 */
export const NEW_PLAYERS_STORAGE_LIMIT_BYTES = 9_000_000_000
/** A board taking submissions reports its storage this often at most (and at each alarm). */
const STORAGE_REPORT_MS = 60_000
const closeDuration = histogram(
  'nexus_leaderboard_close_duration_seconds',
  'From a cycle freezing to its archive being complete in Neon',
  [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 900, 3600],
)

/** What the board's current cycle is and by which rules it ranks. */
interface CurrentCycle extends CycleRules {
  cycle: number
  startsAt: number
  endsAt: number | null
}

interface CloseRow {
  cycle: number
  starts_at: number
  ends_at: number
  sort_order: string
  rewards: string
  entries: number
  state: 'archiving' | 'purging' | 'done'
  cursor: string | null
  archived: number
  attempts: number
  next_attempt_at: number
  last_error: string | null
  closed_at: number
  finished_at: number | null
  reason: string
}

/** A position in a frozen cycle's order: (ord_score, ord_sub, seq, player_id). */
type PageKey = [number, number, number, string]

/** A frozen entry as the archive reads it: see pageAfter. */
type PageRow = [string, number, number, number, string | null, number]

interface ImportResult {
  cycle: number
  imported: number
  total: number
}

/** Archive pages read from a frozen cycle, starting after `cursor` with `archived` rows before. */
interface ArchiveBatch {
  cycle: number
  cursor: string | null
  archived: number
  pages: {
    rows: ArchiveColumns
    rewards: ArchiveReward[]
    archivedThrough: number
    /** The cursor once this page is in: JSON of its last row's PageKey. */
    cursor: string
  }[]
}

/** A refusal the Worker renders as problem+json. */
export interface BoardProblem {
  ok: false
  problem: ProblemType
  detail: string
  extensions?: Record<string, unknown>
  headers?: Record<string, string>
  /** Set on the not-found for a board nobody created: its id (not shown to clients). */
  unknownBoard?: string
}

export interface SubmitInput {
  boardId: string
  playerId: string
  score: number
  subscore: number
  /** Canonical JSON text, or null. */
  metadata: string | null
  idempotencyKey: string
  /** SHA-256 of the canonical request, to tell a retry from a different request under one key. */
  requestHash: string
  /**
   * When the player's token was issued (ms; 0 for a token that does not say), if a player's own
   * token sent it: one issued before the player's erasure is refused (`removeEntry` with
   * `erasedAt`). Absent for a game server's submission (the admin key).
   */
  tokenIssuedAt?: number
  /**
   * Sent by the player themselves (their own token), not by a game server or a game session for
   * them: a board that takes scores from servers only refuses it.
   */
  byPlayer?: true
  /**
   * The Worker's edge limit refused this request: answer it only if it replays a stored answer
   * (a retry is never refused for the limit its first attempt used up), and change nothing.
   */
  replayOnly?: boolean
}

export interface SubmitResult {
  cycle: number
  score: number
  best: number
  rank: number
  replayed: boolean
}

export interface BoardEntry {
  rank: number
  playerId: string
  score: number
  subscore: number
  metadata: Json
}

export interface CycleInfo {
  cycle: number
  startsAt: number
  endsAt: number | null
  entries: number
  /** The rules this cycle ranks by: a change of either takes effect at the next cycle. */
  sortOrder: CycleRules['sortOrder']
  operator: CycleRules['operator']
}

export interface CloseStatus {
  cycle: number
  state: 'archiving' | 'purging' | 'done'
  entries: number
  archived: number
  attempts: number
  nextAttemptAt: number | null
  lastError: string | null
  reason: string
}

type Reply<T> = ({ ok: true } & T) | BoardProblem

/** Unfinished closes the dashboard is shown of one board (the oldest first). */
const UNFINISHED_CLOSES_SHOWN = 5

function closeStatusOf(row: CloseRow): CloseStatus {
  return {
    cycle: row.cycle,
    state: row.state,
    entries: row.entries,
    archived: row.archived,
    attempts: row.attempts,
    nextAttemptAt: row.state === 'done' ? null : row.next_attempt_at,
    lastError: row.last_error,
    reason: row.reason,
  }
}

function refuse(
  problem: ProblemType,
  detail: string,
  extensions?: Record<string, unknown>,
  headers?: Record<string, string>,
): BoardProblem {
  return {
    ok: false,
    problem,
    detail,
    ...(extensions ? { extensions } : {}),
    ...(headers ? { headers } : {}),
  }
}

/** Thrown in an import's transaction to roll it back: the batch would pass `maxEntries`. */
class BoardFull extends Error {}

/** Thrown in an import's transaction to roll it back: new players past the storage limit. */
class StorageFull extends Error {
  readonly bytes: number
  constructor(bytes: number) {
    super('storage nearly full')
    this.bytes = bytes
  }
}

function storageFull(bytes: number): BoardProblem {
  return refuse(
    'unavailable',
    `This board's storage is nearly full (${bytes} bytes of the object's 10 GB): players ranked ` +
      'in the current cycle still submit; others can enter once closed cycles are archived and ' +
      'deleted or idempotency records expire',
    { retryAfter: 60, storageFull: true },
    { 'retry-after': '60' },
  )
}

function boardFull(maxEntries: number): BoardProblem {
  return refuse(
    'conflict',
    `This board's cycle holds at most ${maxEntries} players (its maxEntries); new players can enter from the next cycle`,
    { limit: maxEntries },
  )
}

/** A `replayOnly` submission that replays nothing: the Worker answers it with its edge 429. */
const NOT_A_REPLAY: BoardProblem = refuse('rate-limited', 'Not a replay, and over the edge limit')

/**
 * One leaderboard: the single writer of its live cycle.
 *
 * Lifecycle:
 * - constructor: creates the schema once and loads the current cycle, before any request is let
 *   in. The in-memory rank index is rebuilt from SQLite when something first needs it (`index`).
 * - `configure`: receives configuration from the Worker (Neon is the record).
 * - `submit` / reads: every call first rolls the cycle over if its end has passed, so writes after
 *   a boundary land in the new cycle at once and closing never blocks them.
 * - `close` / boundary: freezes the cycle (its rows stay in SQLite under their cycle number) and
 *   archives it into Neon page by page from the alarm, recording progress after each page that
 *   Neon acknowledged; only then are the frozen rows deleted.
 * - `alarm`: cycle end, archive pages and retries with backoff, expiry of idempotency keys. It is
 *   idempotent, since the runtime retries it.
 */
export class Leaderboard extends DurableObject<Env> {
  private readonly sql: SqlStorage
  /** When this object last reported its storage (`reportStorage`). */
  private storageReportedAt = -Infinity
  /** The storage size last reported (reportStorage), sent again only when it changed. */
  private reportedBytes: number | null = null
  private boardId: string | null = null
  private config: LeaderboardConfig | null = null
  private schedule: Schedule | null = null
  private current: CurrentCycle | null = null
  /**
   * The current cycle's rank index; null after a wake until something needs it (`index`). A wake
   * for the cron's tick, an alarm (a boundary, archive pages, key expiry), a close, or a removal
   * or ban (an erasure or account ban walking every board) never reads the standings into
   * memory: for a million entries that is seconds of CPU and about 70 MB.
   */
  private loadedIndex: RankIndex | null = new RankIndex('desc')
  /** The current cycle's entries counted in SQLite while the index is not loaded (`entryCount`). */
  private countedEntries: number | null = null
  /**
   * The last submission's sequence number. Persisted only with the current cycle (saveCurrent):
   * between cycle changes the highest seq among the cycle's entries is the same number, so a
   * wake takes the larger of the two and a submission writes no meta row.
   */
  private seq = 0
  /**
   * Accepted submissions per player in the current minute, for the rate limit. Every accepted
   * submission writes exactly one idempotency record in its transaction (replays and refusals
   * write none), so the records are the durable count, read back when the window changes.
   */
  private window: { start: number; counts: Map<string, number> } | null = null
  /** The Neon version of the configuration in force (0: not known, as before versions were kept). */
  private configVersion = 0
  /**
   * Versions of entries replaced recently, so a walk through `top` reads one consistent snapshot
   * (the board as of the walk's first page): no entry is repeated or skipped however scores move
   * between pages. `replaced` is keyed by the version's seq and says whose it was and when it was
   * replaced (the entries table no longer has it).
   */
  private history = new RankIndex('desc')
  private replaced = new Map<number, ReplacedVersion>()
  /** The metadata `replaced` holds, in UTF-16 code units, and its bound (tests lower it). */
  private replacedMetadata = 0
  historyMetadataLimit = MAX_HISTORY_METADATA
  /** A closed cycle's deletion: rows per statement and statements per run (tests lower them). */
  purgeBatch = PURGE_BATCH
  purgeBatchesPerRun = PURGE_MAX_BATCHES
  /** Keys a page of `top` scans in each index before it answers (PAGE_SCAN_BUDGET; tests lower it). */
  pageScanBudget = PAGE_SCAN_BUDGET
  /** How long a call to Neon's archive may go unanswered (ARCHIVE_CALL_MS; tests lower it). */
  archiveCallMs = ARCHIVE_CALL_MS
  /** Walks whose snapshot is older than this seq can no longer be served exactly. */
  private historyHorizon = 0
  /** Closes whose archive, found incomplete in Neon at its end, was sent again from the start. */
  private readonly archivesSentAgain = new Set<number>()
  /** Players banned from the board; a submission looks a ban up only while there is one. */
  private banCount = 0
  /** MAX_BANS; tests lower it. */
  maxBans = MAX_BANS
  /** NEW_PLAYERS_STORAGE_LIMIT_BYTES; tests lower it. */
  newPlayersStorageLimit = NEW_PLAYERS_STORAGE_LIMIT_BYTES
  /**
   * Players erased within a token's lifetime; a player's submission looks its token up against
   * them only while there is one (`tokenPredatesErasure`).
   */
  private erasureCount = 0
  private archiving: Promise<void> | null = null
  /**
   * The configuration version a deletion began under (`deleteBoard`), while whether Neon marked
   * the board deleted is not known: set before Neon is asked, cleared when it did not.
   */
  private deletingVersion: number | null = null
  /**
   * How many times this object's storage was deleted (`wipe`): a configuration read from Neon
   * before a deletion, whose answer comes after it, is read again rather than applied.
   */
  private wipes = 0
  /** Until when a call answers 503 at once rather than ask Neon about a deletion again. */
  private settleRetryAt = 0
  /** The last version of the board this object deleted (0: none since it woke). */
  private deletedVersion = 0
  /** The catch-up running now, so that a push and the alarm never run two at once. */
  private catchingUp: Promise<void> | null = null
  /** Account bans or erasures still to take on (`catchUp`); the meta keys, in memory. */
  private catchUpPending = false
  /** Rows read from Neon per statement, and statements per run, of a catch-up (tests lower them). */
  catchUpPageSize = CATCH_UP_PAGE_SIZE
  /** The spread of scheduled closes' archive starts (archiveDelayMs); tests set 0. */
  archiveSpreadMs = ARCHIVE_SPREAD_MS
  catchUpPagesPerRun = CATCH_UP_PAGES_PER_RUN
  /** Neon's reads of a catch-up; replaceable so tests can hold one between its read and its use. */
  catchUpReads = { accountBansAfter, recentErasuresAfter }
  /** Neon's read of the configuration after a cold start; replaceable so tests can hold one. */
  configRead = loadLeaderboardConfig
  /** Neon's read of a board's last cycle for a push that did not bring it; replaceable too. */
  lastCycleRead = lastArchivedCycle
  /** Neon's step of a deletion; replaceable so tests can have its answer lost. */
  neonDeletion = deleteLeaderboardConfig
  /** Neon's fence and read of the board's row when a deletion is settled; replaceable so tests can fail it. */
  boardRead = fencedBoardRecord
  /** Replaceable so tests can inject faults between pages; production always writes to Neon. */
  archiveWriter: ArchiveWriter
  /** RANK_INDEX_REBUILD_MAX_ENTRIES; tests lower it rather than store 50,000 entries. */
  static rankIndexRebuildMaxEntries = RANK_INDEX_REBUILD_MAX_ENTRIES

  /** The board's clock; tests move it forward instead of sleeping past a cycle boundary. */
  now: () => number = Date.now

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    // On Cloudflare an object may run in an isolate no request of the Worker has set it in.
    configureLog(env)
    this.sql = ctx.storage.sql
    this.archiveWriter = new NeonArchiveWriter(env)
    void ctx.blockConcurrencyWhile(async () => {
      // Nothing stored (an id nobody created, a board deleted): the schema waits for a call that
      // needs it (ensureSchema). Made at every wake, each made-up id a client sent cost some
      // thirty statements, then a deleteAll to take them back.
      if (!hasTable(this.sql, 'meta')) return
      try {
        this.load()
      } catch (err) {
        // The object resets and every call to it fails until a version that loads it is
        // deployed (a stored cycle a rollback refuses, a schema step that fails): the runtime's
        // own error does not say which board.
        const { board_id: board } = metaValuesIfReadable(this.sql, ['board_id'])
        log('error', 'board does not load', { actor: this.actor, board, ...errorFields(err) })
        throw err
      }
      // Its own work comes back with it: a close whose alarm was lost (a board that did not
      // load for a while lost it after the runtime's retries) waits for no boundary or write,
      // and a board upgraded to catch up with account bans or erasures does so on its alarm.
      await this.scheduleAlarm()
    })
  }

  private get actor(): string {
    return `Leaderboard:${this.boardId ?? this.ctx.id.toString()}`
  }

  /** The schema exists; false once the object of an id nobody created dropped it. */
  private schemaReady = false

  private ensureSchema(): void {
    if (!this.schemaReady) this.load()
  }

  private load(): void {
    this.schemaReady = true
    if (schemaVersion(this.sql) < 1) {
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS entries (
          cycle INTEGER NOT NULL, player_id TEXT NOT NULL,
          score REAL NOT NULL, subscore REAL NOT NULL, seq INTEGER NOT NULL,
          ord_score REAL NOT NULL, ord_sub REAL NOT NULL,
          metadata TEXT, submitted_at INTEGER NOT NULL,
          PRIMARY KEY (cycle, player_id)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS entries_order ON entries (cycle, ord_score, ord_sub, seq, player_id);
        CREATE TABLE IF NOT EXISTS idempotency (
          player_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
          response TEXT NOT NULL, created_at INTEGER NOT NULL,
          PRIMARY KEY (player_id, key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created_at);
        CREATE TABLE IF NOT EXISTS submit_windows (
          player_id TEXT PRIMARY KEY, window_start INTEGER NOT NULL, count INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS closes (
          cycle INTEGER PRIMARY KEY, starts_at INTEGER NOT NULL, ends_at INTEGER NOT NULL,
          sort_order TEXT NOT NULL, rewards TEXT NOT NULL, entries INTEGER NOT NULL,
          state TEXT NOT NULL, cursor TEXT, archived INTEGER NOT NULL DEFAULT 0,
          attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL DEFAULT 0,
          last_error TEXT, closed_at INTEGER NOT NULL, finished_at INTEGER, reason TEXT NOT NULL
        );
      `)
      setSchemaVersion(this.sql, 1)
    }
    if (schemaVersion(this.sql) < 2) {
      // The archive reads a frozen cycle in rank order: with submitted_at and metadata in the
      // rank index it reads the index alone instead of looking each row up in the table, which
      // was most of a page's read cost. Built now only for a board small enough
      // (RANK_INDEX_REBUILD_MAX_ENTRIES); a larger one's waits (below).
      if (this.rankIndexRebuildFits()) this.rebuildRankIndex()
      else {
        this.setMeta(RANK_INDEX_PENDING, '1')
        log('warn', 'rank index rebuild left for a smaller board', { actor: this.actor })
      }
      setSchemaVersion(this.sql, 2)
    }
    if (schemaVersion(this.sql) < 3) {
      // Rate windows are counted from the idempotency records (one per accepted submission), so
      // a submission writes one row fewer; see windowCounts.
      this.sql.exec(`DROP TABLE IF EXISTS submit_windows`)
      setSchemaVersion(this.sql, 3)
    }
    if (schemaVersion(this.sql) < 4) {
      // Every close leaves a 'done' row (its status stays readable), so a `1m` board gains
      // 1,440 a day; the archive loop, the alarm and the cron's tick look only for the pending
      // ones, which without this index meant reading every closed cycle each time.
      this.sql.exec(
        `CREATE INDEX IF NOT EXISTS closes_pending ON closes (cycle) WHERE state != 'done'`,
      )
      setSchemaVersion(this.sql, 4)
    }
    if (schemaVersion(this.sql) < 5) {
      // The rank index holds keys, not players: a page's players are read by seq (unique on a
      // board). A WITHOUT ROWID index carries the primary key, so this is (seq, cycle, player_id).
      this.sql.exec(`CREATE INDEX IF NOT EXISTS entries_seq ON entries (seq)`)
      setSchemaVersion(this.sql, 5)
    }
    if (schemaVersion(this.sql) < 6) {
      // A done close keeps neither its reward tiers nor its cursor (only its archive read them):
      // closes done before this stop carrying them too.
      this.sql.exec(`UPDATE closes SET rewards = '[]', cursor = NULL WHERE state = 'done'`)
      setSchemaVersion(this.sql, 6)
    }
    if (schemaVersion(this.sql) < 7) {
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS bans (
          player_id TEXT PRIMARY KEY, reason TEXT, banned_at INTEGER NOT NULL
        ) WITHOUT ROWID;
      `)
      setSchemaVersion(this.sql, 7)
    }
    if (schemaVersion(this.sql) < 8) {
      // A player's account ban (PUT /v1/admin/players/:id/ban) bans them on every board; lifting
      // it lifts only the bans it placed, never one the board's admin set.
      this.sql.exec(`ALTER TABLE bans ADD COLUMN by_account INTEGER NOT NULL DEFAULT 0`)
      setSchemaVersion(this.sql, 8)
    }
    if (schemaVersion(this.sql) < 9) {
      // Boards created before boards took account bans on at creation may have missed bans
      // placed before they existed: they catch up once (catchUp).
      if (one(this.sql, `SELECT 1 AS yes FROM meta WHERE key = 'board_id'`)) {
        this.setMeta(ACCOUNT_BANS_AFTER, '')
        this.setMeta(ACCOUNT_BANS_OLDER_THAN_BOARD, '1')
      }
      setSchemaVersion(this.sql, 9)
    }
    if (schemaVersion(this.sql) < 10) {
      // Erased players, kept as long as a token issued before their erasure may live: such a
      // token's submissions are refused (tokenPredatesErasure).
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS erasures (
          player_id TEXT PRIMARY KEY, erased_at INTEGER NOT NULL
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS erasures_at ON erasures (erased_at);
      `)
      setSchemaVersion(this.sql, 10)
    }
    if (schemaVersion(this.sql) < 11) {
      // Boards created before boards took erasures on at creation may have missed erasures made
      // before they existed (within a token's lifetime): they catch up once (catchUp). Taking on
      // one the board has already changes nothing.
      if (one(this.sql, `SELECT 1 AS yes FROM meta WHERE key = 'board_id'`)) {
        this.setMeta(ERASURES_AFTER, '')
      }
      setSchemaVersion(this.sql, 11)
    }
    if (this.meta(RANK_INDEX_PENDING) !== undefined && this.rankIndexRebuildFits()) {
      this.rebuildRankIndex()
      this.sql.exec(`DELETE FROM meta WHERE key = ?`, RANK_INDEX_PENDING)
    }
    this.banCount = one<{ n: number }>(this.sql, `SELECT count(*) AS n FROM bans`)!.n
    this.countErasures()
    this.catchUpPending = this.catchUpLeft()
    const meta = new Map(
      all<{ key: string; value: string }>(this.sql, `SELECT key, value FROM meta`).map((r) => [
        r.key,
        r.value,
      ]),
    )
    this.boardId = meta.get('board_id') ?? null
    this.seq = Number(meta.get('seq') ?? 0)
    this.configVersion = Number(meta.get('config_version') ?? 0)
    const deleting = meta.get(DELETING)
    this.deletingVersion = deleting === undefined ? null : Number(deleting)
    const config = meta.get('config')
    if (config) this.applyConfig(JSON.parse(config) as LeaderboardConfig)
    const current = meta.get('current')
    if (current) {
      this.current = JSON.parse(current) as CurrentCycle
      this.loadedIndex = null
      this.countedEntries = null
      // Replaced versions are not persisted: walks begun before this wake restart.
      this.history = new RankIndex(this.current.sortOrder)
      this.replaced.clear()
      this.replacedMetadata = 0
      // Between cycle changes the last seq is the highest entry's (see `seq`); seqs only grow,
      // so the highest of any cycle's is the current one's. One step down the seq index.
      const highest = one<{ seq: number | null }>(this.sql, `SELECT max(seq) AS seq FROM entries`)!
      if (highest.seq !== null && highest.seq > this.seq) this.seq = highest.seq
    }
    this.historyHorizon = this.seq
  }

  /** Whether the entries are few enough to build schema 2's rank index in a wake's load. */
  private rankIndexRebuildFits(): boolean {
    // Counted through the narrow index schema 1 made (the table has no other).
    const { n } = one<{ n: number }>(this.sql, `SELECT count(*) AS n FROM entries`)!
    return n <= Leaderboard.rankIndexRebuildMaxEntries
  }

  /** Replaces schema 1's order index with the rank index carrying each entry's archive fields. */
  private rebuildRankIndex(): void {
    this.sql.exec(`
      DROP INDEX IF EXISTS entries_order;
      CREATE INDEX IF NOT EXISTS entries_rank
        ON entries (cycle, ord_score, ord_sub, seq, player_id, submitted_at, metadata);
    `)
  }

  /** The current cycle's rank index, rebuilt from SQLite on first use after a wake. */
  private get index(): RankIndex {
    return this.loadedIndex ?? this.rebuildIndex()
  }

  private set index(index: RankIndex) {
    this.loadedIndex = index
    this.countedEntries = null
  }

  /** The current cycle's entries, without loading the index for it. */
  private entryCount(): number {
    if (this.loadedIndex) return this.loadedIndex.size
    if (this.countedEntries === null) {
      // What changes the cycle's entries loads the index, or keeps this count (`takeOut`).
      this.countedEntries = this.current
        ? one<{ n: number }>(this.sql, COUNT_CYCLE_ENTRIES, this.current.cycle)!.n
        : 0
    }
    return this.countedEntries
  }

  private resetHistory(): void {
    this.history = new RankIndex(this.current!.sortOrder)
    this.replaced.clear()
    this.replacedMetadata = 0
    this.historyHorizon = this.seq
  }

  /** Keeps the version a submission replaces, for walks that started before it. */
  private remember(playerId: string, previous: Standing, replacedAt: number, now: number): void {
    this.history.insert(previous)
    this.replaced.set(previous.seq, {
      playerId,
      score: previous.score,
      subscore: previous.subscore,
      metadata: previous.metadata,
      replacedAt,
      at: now,
    })
    this.replacedMetadata += previous.metadata?.length ?? 0
    this.trimHistory(now)
  }

  /**
   * Lets go of the replaced versions no walk may still need (older than WALK_TTL_MS) and of those
   * past the caps. Run by submissions, and by reads and the alarm too: a board whose writes
   * stopped after a burst kept up to the caps (about 16 MB) for as long as it stayed awake.
   */
  private trimHistory(now: number): void {
    for (const [seq, v] of this.replaced) {
      if (
        v.at >= now - WALK_TTL_MS &&
        this.replaced.size <= MAX_HISTORY &&
        this.replacedMetadata <= this.historyMetadataLimit
      ) {
        break
      }
      this.replaced.delete(seq)
      this.replacedMetadata -= v.metadata?.length ?? 0
      this.history.remove({ score: v.score, subscore: v.subscore, seq })
      if (v.replacedAt > this.historyHorizon) this.historyHorizon = v.replacedAt
    }
  }

  private rebuildIndex(): RankIndex {
    const cur = this.current
    const index = new RankIndex(cur?.sortOrder ?? 'desc')
    if (cur) {
      // In rank order from the covering index, so the keys stream into the tree's leaves with no
      // sort and no copy of the board. ord_* are the score and subscore times the direction.
      const dir = cur.sortOrder === 'desc' ? -1 : 1
      const cursor = this.sql.exec<{ ord_score: number; ord_sub: number; seq: number }>(
        `SELECT ord_score, ord_sub, seq FROM entries WHERE cycle = ? ORDER BY ord_score, ord_sub, seq`,
        cur.cycle,
      )
      index.load(
        (function* () {
          for (const r of cursor)
            yield { score: r.ord_score * dir + 0, subscore: r.ord_sub * dir + 0, seq: r.seq }
        })(),
      )
    }
    this.index = index
    return index
  }

  /** This minute's accepted submissions per player, recounted from SQLite when the minute changes. */
  private windowCounts(windowStart: number): Map<string, number> {
    if (this.window?.start !== windowStart) {
      const counts = new Map<string, number>()
      for (const r of this.sql.exec<{ player_id: string; n: number }>(
        `SELECT player_id, count(*) AS n FROM idempotency
          WHERE created_at >= ? AND created_at < ? GROUP BY player_id`,
        windowStart,
        windowStart + 60_000,
      ))
        counts.set(r.player_id, r.n)
      this.window = { start: windowStart, counts }
    }
    return this.window.counts
  }

  private applyConfig(config: LeaderboardConfig): void {
    const schedule = parseSchedule(config.cycle)
    if ('error' in schedule) throw new Error(`stored cycle is invalid: ${schedule.error}`)
    this.config = withConfigDefaults(config)
    this.schedule = schedule
  }

  private meta(key: string): string | undefined {
    return one<{ value: string }>(this.sql, `SELECT value FROM meta WHERE key = ?`, key)?.value
  }

  private setMeta(key: string, value: string): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value)
  }

  private saveCurrent(): void {
    this.setMeta('current', JSON.stringify(this.current))
    // A new cycle starts with no entries to recover the seq from.
    this.setMeta('seq', String(this.seq))
  }

  /**
   * Makes sure the board knows its configuration, fetching it from Neon after a cold start; null
   * when it does, else why not (`not-found`, or `unavailable` while Neon cannot be reached).
   */
  private async ensureConfigured(boardId: string): Promise<BoardProblem | null> {
    if (this.deletingVersion !== null) {
      const unsettled = await this.settleDeletion(boardId)
      if (unsettled) return unsettled
    }
    if (this.config) {
      // Every call, read or write: a board kept awake by reads of players alone holds no
      // versions past their time.
      this.trimHistory(this.now())
      // A board still taking on account bans or erasures answers once it has them (unless Neon
      // failed it and the retry is not due: awaitCatchUp).
      if (this.catchUpPending) await this.awaitCatchUp()
      return null
    }
    // No schema before Neon has said the board exists (below): none to drop for a made-up id.
    const wipes = this.wipes
    let stored: Awaited<ReturnType<typeof loadLeaderboardConfig>>
    try {
      stored = await this.configRead(this.env, boardId)
    } catch (err) {
      // Thrown, it would cross the RPC as a plain error and answer 500.
      if (!isDatabaseUnreachable(err)) throw err
      log('warn', 'board config not read', { actor: this.actor, ...errorFields(err) })
      await this.dropSchemaOfUnknown()
      return refuse(
        'unavailable',
        'The database is unreachable; retry shortly',
        {},
        { 'retry-after': '5' },
      )
    }
    // Another call may have configured the board while this one waited for Neon: this one then
    // waits for its catch-up too, as any call does. Or deleted it: what was read is of before.
    if (this.config || this.wipes !== wipes) return this.ensureConfigured(boardId)
    if (!stored) {
      await this.dropSchemaOfUnknown()
      return { ...refuse('not-found', `No leaderboard '${boardId}'`), unknownBoard: boardId }
    }
    // A call that found no board (its read came back before the board's PUT committed) may have
    // dropped the empty schema while this one waited.
    this.ensureSchema()
    this.configureNow(boardId, stored.config, this.now(), stored.version, stored.lastCycle)
    await this.catchUp(Infinity)
    // As a pushed configuration does: the cycle's end wakes the board, whoever calls next.
    await this.scheduleAlarm()
    return null
  }

  /**
   * For an id nobody created (or not yet, as far as this object knows): drops the empty schema
   * its wake made, so that calls for made-up ids leave no storage behind (an object with any
   * stored data is kept, and billed, for good). Marked before the await: a call configuring the
   * board meanwhile re-makes the schema.
   */
  private async dropSchemaOfUnknown(): Promise<void> {
    if (this.boardId !== null) return
    this.schemaReady = false
    if (!hasTable(this.sql, 'meta')) return
    await this.ctx.storage.deleteAll()
    this.alarmFailures.forget()
  }

  /**
   * Stores a new configuration. A new board starts cycle 1 now. On a live board, bounds, limits
   * and rewards apply at once (rewards are those in force when the cycle closes); a schedule
   * change moves the current cycle's end to the new schedule's next boundary; sortOrder and
   * operator take effect at the next cycle, so one cycle is always ranked by one rule (at once
   * while the current cycle has no entries).
   */
  async configure(
    boardId: string,
    config: LeaderboardConfig,
    version?: number,
    /** The last cycle Neon has of the board (lastArchivedCycle), read by the pusher. */
    lastCycle?: number,
  ): Promise<(CycleInfo & { configVersion: number; inForce: boolean }) | BoardProblem> {
    if (this.deletingVersion !== null) {
      // Answered, not thrown: a PUT answers it as any refused call (503 with Retry-After while
      // Neon is out of reach), not as a failure of the Worker's own (500).
      const unsettled = await this.settleDeletion(boardId)
      if (unsettled) return unsettled
    }
    // A push read before the board's deletion (the cron's, of a version not yet acknowledged)
    // that comes after it: a board made again since has a later version. Known in memory only,
    // with no Neon read on a board's first push; such a push delayed past the object's eviction
    // would find no mark (the cron pushes within seconds of reading).
    if (!this.config && version !== undefined && version <= this.deletedVersion) {
      throw new Error(`No leaderboard '${boardId}': deleted at version ${this.deletedVersion}`)
    }
    // A board with no cycle yet goes on from Neon's numbering; a pusher that did not read it (a
    // Worker of the version before) has it asked here, before anything else, so that the checks
    // below judge the board as it is after the wait.
    const wipes = this.wipes
    const archived = this.current ? 0 : (lastCycle ?? (await this.lastCycleRead(this.env, boardId)))
    // Deleted while Neon was asked: the push is of the board of before, as above. (A board made
    // again since would have come with a later version.)
    if (this.wipes !== wipes && (version === undefined || version <= this.deletedVersion)) {
      throw new Error(`No leaderboard '${boardId}': deleted at version ${this.deletedVersion}`)
    }
    // Pushes of two PUTs may arrive in either order: an older version than the one applied
    // changes nothing, so the board ends on Neon's last word. `configVersion` and `inForce` tell
    // the caller whether its configuration is the one in force (not: its PUT lost to a later
    // one, or Neon's count went back).
    if (version !== undefined && this.config && version <= this.configVersion) {
      return {
        ...this.cycleInfo(),
        configVersion: this.configVersion,
        inForce: canonicalJson(this.config) === canonicalJson(withConfigDefaults(config)),
      }
    }
    this.ensureSchema()
    const now = this.now()
    // A cycle that ended under the old schedule ends as it was, before the new one applies:
    // otherwise a new schedule would stretch it to the new boundary, unclosed and unpaid.
    this.rollover(now)
    this.configureNow(boardId, config, now, version, archived)
    await this.catchUp(Infinity)
    await this.scheduleAlarm()
    return { ...this.cycleInfo(), configVersion: this.configVersion, inForce: true }
  }

  /** `archivedCycles`: the last cycle Neon has of this board (0: none), for a board's first. */
  private configureNow(
    boardId: string,
    config: LeaderboardConfig,
    now: number,
    version: number | undefined,
    archivedCycles: number,
  ): void {
    const previousCycle = JSON.stringify(this.config?.cycle ?? null)
    this.applyConfig(config)
    if (version !== undefined) this.configVersion = version
    try {
      this.storeConfig(boardId, this.config!, now, version, previousCycle, archivedCycles)
    } catch (err) {
      // The transaction rolled back, and what was set in memory meanwhile goes back to what
      // storage holds: else the board would answer by a configuration it never stored, and take
      // the cron's push of the same version again for one it had (marked pushed, and lost at
      // the next wake).
      this.config = null
      this.schedule = null
      this.current = null
      this.boardId = null
      this.load()
      throw err
    }
  }

  /** configureNow's write: the configuration, and the current cycle as it now stands. */
  private storeConfig(
    boardId: string,
    config: LeaderboardConfig,
    now: number,
    version: number | undefined,
    previousCycle: string,
    archivedCycles: number,
  ): void {
    this.ctx.storage.transactionSync(() => {
      this.boardId = boardId
      this.setMeta('board_id', boardId)
      this.setMeta('config', JSON.stringify(config))
      if (version !== undefined) this.setMeta('config_version', String(version))
      if (!this.current) {
        const first = archivedCycles + 1
        this.current = this.cycleFrom(first, previousBoundary(this.schedule!, now) ?? now, now)
        this.index = new RankIndex(config.sortOrder)
        this.resetHistory()
        this.saveCurrent()
        // Account bans placed and players erased before this board existed walked the boards
        // of their time.
        this.setMeta(ACCOUNT_BANS_AFTER, '')
        this.setMeta(ERASURES_AFTER, '')
        this.catchUpPending = true
      } else {
        if (JSON.stringify(config.cycle) !== previousCycle) {
          this.current.endsAt = nextBoundary(this.schedule!, now)
          // A cycle nobody entered starts over on the new schedule, as carryEmpty starts one: a
          // daily cycle shown (and archived) as begun months ago, under the old one, misleads.
          // Never earlier than it began: a cycle just rolled over (or closed by hand) would
          // otherwise reach back over the one before it.
          if (this.entryCount() === 0) {
            this.current.startsAt = Math.max(
              this.current.startsAt,
              previousBoundary(this.schedule!, now) ?? now,
            )
          }
        }
        // A cycle nobody entered yet has nothing ranked by the old rule: it takes the new one now
        // (else a board without a schedule would keep it until someone closed a cycle by hand).
        const cur = this.current
        if (
          this.entryCount() === 0 &&
          (cur.sortOrder !== config.sortOrder || cur.operator !== config.operator)
        ) {
          this.current = { ...cur, sortOrder: config.sortOrder, operator: config.operator }
          this.index = new RankIndex(config.sortOrder)
          this.resetHistory()
        }
        this.saveCurrent()
      }
    })
  }

  private cycleInfo(): CycleInfo {
    const cur = this.current!
    return {
      cycle: cur.cycle,
      startsAt: cur.startsAt,
      endsAt: cur.endsAt,
      entries: this.entryCount(),
      sortOrder: cur.sortOrder,
      operator: cur.operator,
    }
  }

  /**
   * Moves on from a cycle whose scheduled end has passed: closes it, or, if nobody entered it,
   * carries it into the period containing `now`. True if the cycle's window moved either way.
   */
  private rollover(now: number): boolean {
    const cur = this.current
    if (!cur || cur.endsAt === null || now < cur.endsAt) return false
    // A zoned schedule's stored end that is no longer one of its boundaries: it was worked out
    // under clock rules its zone has changed since (a country moving its clocks at short notice,
    // the runtime's copy of the IANA database updated, maybe after the change). Where the
    // boundary it stood for now comes later (the nearer of the two), the cycle runs on to it,
    // rather than close an hour early and leave the next an hour long; where it came earlier,
    // the cycle ends at its stored end and the next starts there (freezeRows). (UTC schedules'
    // boundaries never move.)
    const schedule = this.schedule!
    if (schedule.kind === 'cron' && schedule.timeZone !== null) {
      const earlier = previousBoundary(schedule, cur.endsAt)
      const later = nextBoundary(schedule, cur.endsAt)
      if (
        earlier !== cur.endsAt &&
        later !== null &&
        (earlier === null || later - cur.endsAt < cur.endsAt - earlier)
      ) {
        this.current = { ...cur, endsAt: later }
        try {
          this.saveCurrent()
        } catch (err) {
          this.current = cur
          throw err
        }
        log('warn', "cycle's end moved: its zone's clock rules changed", {
          actor: this.actor,
          cycle: cur.cycle,
          endsAt: later,
        })
        if (now < later) return true
      }
    }
    if (this.entryCount() === 0) this.carryEmpty(now)
    else this.freeze(now, this.current!.endsAt!, 'schedule')
    return true
  }

  /**
   * A read's rollover. A freeze that fails (its storage full, most likely) is logged and the read
   * served from the cycle storage holds, rather than failed: the alarm, which logs each failure,
   * and the next write try the freeze again. Such reads are not cached (their cycle has ended),
   * so each comes here: the log says so once a minute, not once a read.
   */
  private async rolloverForRead(): Promise<void> {
    let rolled: boolean
    try {
      rolled = this.rollover(this.now())
    } catch (err) {
      const at = Date.now()
      if (at - this.readRolloverLoggedAt >= 60_000) {
        this.readRolloverLoggedAt = at
        log('error', 'cycle not rolled over for a read', { actor: this.actor, ...errorFields(err) })
      }
      return
    }
    if (rolled) await this.scheduleAlarm()
  }

  /** When a read last logged a failed rollover (rolloverForRead). */
  private readRolloverLoggedAt = 0

  /**
   * A cycle nobody entered is not closed at its boundary: closing it would archive nothing and
   * pay nobody, yet leave a close row here and a cycle row in Neon for every period an idle board
   * sits through (288 a day for a `5m` board, forever). It keeps its number and starts over in
   * the current period, ranked by the configuration in force, as a new cycle would be. One
   * synchronous write of the cycle record: a crash before it leaves the ended window, which the
   * next call carries the same way, and nothing can interleave with it.
   */
  private carryEmpty(now: number): void {
    const cur = this.current!
    const startsAt = previousBoundary(this.schedule!, now) ?? now
    this.current = this.cycleFrom(cur.cycle, startsAt, now)
    try {
      this.saveCurrent()
    } catch (err) {
      // Not written (storage full, say): the board stays in the window storage holds, as after a
      // freeze refused, rather than take writes into one a wake would not know.
      this.current = cur
      throw err
    }
    this.index = new RankIndex(this.current.sortOrder)
    this.resetHistory()
  }

  /**
   * A cycle from `startsAt` to the schedule's next boundary after `now`, ranked by the
   * configuration in force: what a new board, a close and a carried empty cycle each start.
   */
  private cycleFrom(cycle: number, startsAt: number, now: number): CurrentCycle {
    const config = this.config!
    return {
      cycle,
      startsAt,
      endsAt: nextBoundary(this.schedule!, now),
      sortOrder: config.sortOrder,
      operator: config.operator,
    }
  }

  /**
   * Ends the current cycle at `endsAt` and starts the next one. The frozen rows stay in SQLite
   * under their cycle number until Neon has them; the new cycle starts empty, in memory and on
   * disk, in the same synchronous step, so no write can land in between.
   */
  private freeze(now: number, endsAt: number, reason: 'schedule' | 'manual'): void {
    const cur = this.current!
    const entries = this.entryCount()
    try {
      this.freezeRows(cur, endsAt, entries, now, reason)
    } catch (err) {
      // Rolled back (storage full, say): the board stays in the cycle storage still holds.
      this.current = cur
      throw err
    }
    this.index = new RankIndex(this.current!.sortOrder)
    this.resetHistory()
    log('info', 'cycle frozen', { actor: this.actor, cycle: cur.cycle, entries, reason })
  }

  /** freeze's write: the close record, and the next cycle as the current one. */
  private freezeRows(
    cur: CurrentCycle,
    endsAt: number,
    entries: number,
    now: number,
    reason: 'schedule' | 'manual',
  ): void {
    const config = this.config!
    const schedule = this.schedule!
    this.ctx.storage.transactionSync(() => {
      // A scheduled close starts its archive a little after the boundary, by the board's id
      // (archiveDelayMs); an admin's close at once.
      // Counted from the boundary, so a freeze that came late (by the cron, a write) waits no
      // longer than the delay from it.
      // Boards frozen long after it (a cron back from an outage) are spread over the next few
      // seconds by the same figure, not started together.
      const delay = archiveDelayMs(this.boardId ?? '', this.archiveSpreadMs, endsAt - cur.startsAt)
      const firstAttempt =
        reason === 'manual' ? 0 : Math.max(endsAt + delay, now + (delay % LATE_ARCHIVE_SPREAD_MS))
      this.sql.exec(
        `INSERT OR IGNORE INTO closes (cycle, starts_at, ends_at, sort_order, rewards, entries, state, closed_at, reason, next_attempt_at)
         VALUES (?, ?, ?, ?, ?, ?, 'archiving', ?, ?, ?)`,
        cur.cycle,
        cur.startsAt,
        endsAt,
        cur.sortOrder,
        JSON.stringify(config.rewards),
        entries,
        now,
        reason,
        firstAttempt,
      )
      // Never before the closed cycle's end: where a zone's new clock rules put a boundary
      // earlier than the stored end, the next cycle starts at that end, not over the last hour.
      this.current = this.cycleFrom(
        cur.cycle + 1,
        reason === 'manual' ? now : Math.max(previousBoundary(schedule, now) ?? now, endsAt),
        now,
      )
      this.saveCurrent()
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Submissions

  /**
   * Applies one score submission. Everything between the idempotency check and the write is
   * synchronous, so concurrent submissions (even with one key) are serialised by the object.
   * What happens on retry: the same key and body replay the stored answer with `replayed: true`;
   * the same key with another body is refused. A refused submission stores nothing.
   */
  async submit(input: SubmitInput): Promise<Reply<{ result: SubmitResult }>> {
    try {
      const reply = await this.trySubmit(input)
      // The Worker answers (and counts) a request over its edge limit that is not a replay.
      if (!reply.ok && reply !== NOT_A_REPLAY) {
        const storage = reply.extensions?.storageFull === true
        submissionRefusals.inc({ reason: storage ? 'storage_full' : reply.problem })
      }
      return reply
    } finally {
      // Accepted or refused, the submission was counted.
      this.sendMetrics()
      // Storage grows with submissions, so it is reported as they come (a board with no schedule
      // may see no alarm for a day); at most once a minute.
      if (Date.now() - this.storageReportedAt >= STORAGE_REPORT_MS) this.reportStorage()
    }
  }

  private async trySubmit(input: SubmitInput): Promise<Reply<{ result: SubmitResult }>> {
    // Over the edge limit, a board that was never configured has nothing to replay: no Neon
    // lookup for it (the edge limit is there to shed such load).
    if (input.replayOnly && !this.config) {
      await this.dropSchemaOfUnknown()
      return NOT_A_REPLAY
    }
    const unknown = await this.ensureConfigured(input.boardId)
    if (unknown) return unknown
    const now = this.now()
    // A retry's answer first: it is the first attempt's whatever cycle is current now, and is
    // given even while a rollover fails (a freeze its storage refuses), as a read is.
    const seen = this.keyedAnswer(input.playerId, input.idempotencyKey, now)
    if (!seen && this.rollover(now)) await this.scheduleAlarm()
    const config = this.config!

    if (seen) {
      if (seen.request_hash !== input.requestHash) {
        return refuse(
          'idempotency-key-reused',
          'This Idempotency-Key was used for a different submission',
        )
      }
      // The erased player's own client, still signed in: the answer is of an entry erased
      // (score, rank), and is not theirs to be handed again. The key is kept, so that a game
      // server's retry of it cannot put the score back.
      if (input.byPlayer && this.tokenPredatesErasure(input.playerId, input.tokenIssuedAt)) {
        return refuse('forbidden', STALE_TOKEN_DETAIL)
      }
      submissions.inc({ replayed: 'true' })
      return {
        ok: true,
        result: { ...(JSON.parse(seen.response) as SubmitResult), replayed: true },
      }
    }
    // Before the edge limit's answer: a client over it would be told to retry (429) what a
    // paused board refuses (409) however long it waits.
    if (config.paused) {
      return refuse('conflict', 'This board is paused: it takes no scores until it is resumed', {
        paused: true,
      })
    }
    if (input.replayOnly) return NOT_A_REPLAY
    if (config.serverScoresOnly && input.byPlayer) {
      return refuse(
        'forbidden',
        'This board takes scores from game servers and game sessions only, not from players',
      )
    }
    if (this.isBanned(input.playerId)) {
      return refuse('forbidden', 'This player is banned from this board')
    }
    if (this.tokenPredatesErasure(input.playerId, input.tokenIssuedAt)) {
      return refuse(
        'forbidden',
        input.tokenIssuedAt === undefined
          ? "This guest's data was erased: their id takes no scores"
          : STALE_TOKEN_DETAIL,
      )
    }

    if (input.score < config.scoreMin || input.score > config.scoreMax) {
      return refuse(
        'validation',
        `score must be between ${config.scoreMin} and ${config.scoreMax}`,
        {
          errors: [
            { path: 'score', message: `must be between ${config.scoreMin} and ${config.scoreMax}` },
          ],
        },
      )
    }
    if (input.subscore < config.subscoreMin || input.subscore > config.subscoreMax) {
      return refuse(
        'validation',
        `subscore must be between ${config.subscoreMin} and ${config.subscoreMax}`,
        {
          errors: [
            {
              path: 'subscore',
              message: `must be between ${config.subscoreMin} and ${config.subscoreMax}`,
            },
          ],
        },
      )
    }
    if (input.metadata !== null && jsonbLength(input.metadata) > config.metadataMaxBytes) {
      return refuse(
        'validation',
        `metadata is limited to ${config.metadataMaxBytes} bytes of JSON on this board`,
        {
          errors: [{ path: 'metadata', message: `at most ${config.metadataMaxBytes} bytes` }],
        },
      )
    }

    const windowStart = now - (now % 60_000)
    const windowCounts = this.windowCounts(windowStart)
    const used = windowCounts.get(input.playerId) ?? 0
    if (used >= config.submitsPerMinute) {
      const retryAfter = Math.max(1, Math.ceil((windowStart + 60_000 - now) / 1000))
      return refuse(
        'rate-limited',
        `At most ${config.submitsPerMinute} submissions per minute on this board`,
        { retryAfter },
        { 'retry-after': String(retryAfter) },
      )
    }

    const cur = this.current!
    const previous = this.standingOf(input.playerId)
    if (!previous && this.index.size >= config.maxEntries) return boardFull(config.maxEntries)
    // A game's win is let in: one small row, sent once per game, and refused it would go to a
    // later cycle than the game ended in.
    if (!previous && !input.idempotencyKey.startsWith(MATCH_WIN_KEY_PREFIX)) {
      const bytes = this.ctx.storage.sql.databaseSize
      if (bytes >= this.newPlayersStorageLimit) return storageFull(bytes)
    }
    const outcome = applySubmission(cur.operator, cur.sortOrder, previous, {
      score: input.score,
      subscore: input.subscore,
    })
    // With `incr` a total can leave the bounds a single submission respects. What the submission
    // leaves as it was is not checked, the standing or one of its totals: bounds lowered below a
    // player's best (or subscore total) must not refuse their later, in-bounds scores.
    const totals = [
      ['score', 'the total', outcome.score, previous?.score, config.scoreMin, config.scoreMax],
      [
        'subscore',
        'the subscore total',
        outcome.subscore,
        previous?.subscore,
        config.subscoreMin,
        config.subscoreMax,
      ],
    ] as const
    if (outcome.changed) {
      for (const [path, what, total, before, min, max] of totals) {
        if (total === before) continue
        if (!Number.isFinite(total) || total < min || total > max) {
          return refuse('validation', `${what} would leave the board's bounds [${min}, ${max}]`, {
            errors: [{ path, message: 'total out of bounds' }],
          })
        }
      }
    }

    // The index moves first so the answer (with its rank) exists before anything is written; the
    // entry and the stored answer (which is also the rate window's count) then commit in one
    // transaction, so a retry after a crash finds both or neither. If the write fails, the index
    // moves back.
    const seq = this.seq + 1
    const entry: RankKey = outcome.changed
      ? { score: outcome.score, subscore: outcome.subscore, seq }
      : previous!
    if (outcome.changed) this.index.replace(previous, entry)
    const result: SubmitResult = {
      cycle: cur.cycle,
      score: input.score,
      best: outcome.score,
      rank: this.index.rankOf(entry)!,
      replayed: false,
    }
    // `set` to the same values or `incr` by zero: the entry keeps its place among ties, and takes
    // the submission's metadata, as an import of the same standing does (on these boards the
    // latest submission's metadata rides with the entry; on `best` the best's does).
    const metadataOnly = !outcome.changed && previous !== undefined && cur.operator !== 'best'
    try {
      this.ctx.storage.transactionSync(() => {
        if (outcome.changed) this.writeEntry(input.playerId, entry, input.metadata, now)
        else if (metadataOnly) {
          this.sql.exec(
            `UPDATE entries SET metadata = ? WHERE cycle = ? AND player_id = ? AND metadata IS NOT ?`,
            input.metadata,
            cur.cycle,
            input.playerId,
            input.metadata,
          )
        }
        this.rememberAnswer(input.playerId, input.idempotencyKey, input.requestHash, result, now)
      })
    } catch (err) {
      if (outcome.changed) {
        this.index.remove(entry)
        if (previous) this.index.insert(previous)
      }
      throw err
    }
    windowCounts.set(input.playerId, used + 1)
    if (outcome.changed) {
      this.seq = seq
      if (previous) this.remember(input.playerId, previous, seq, now)
    }
    submissions.inc({ replayed: 'false' })
    await this.alarmForKeys(now)
    return { ok: true, result }
  }

  /**
   * Sets many players' standings in the current cycle at once (an admin migrating a board from
   * another system; a game server's results are submissions, which follow the operator). Each
   * entry replaces the player's standing, as `set` does, so importing the same batch again
   * changes nothing; the batch is one transaction. Bounds and metadata limits are checked for the
   * whole batch before anything is written.
   */
  /** The first answer to a request with this key, while the key lasts (24 h, swept or not yet). */
  private keyedAnswer(
    owner: string,
    key: string,
    now: number,
  ): { request_hash: string; response: string } | undefined {
    return one<{ request_hash: string; response: string }>(
      this.sql,
      `SELECT request_hash, response FROM idempotency
        WHERE player_id = ? AND key = ? AND created_at >= ?`,
      owner,
      key,
      now - IDEMPOTENCY_TTL_MS,
    )
  }

  /**
   * After a key was written: its sweep is due a day from now, and an alarm set further out (for
   * a cycle's end a month away, set while the board held no keys) would leave expired keys in
   * storage until then.
   */
  private async alarmForKeys(now: number): Promise<void> {
    const alarm = await this.ctx.storage.getAlarm()
    if (alarm === null || alarm > now + IDEMPOTENCY_TTL_MS) await this.scheduleAlarm()
  }

  /** Keeps a keyed request's answer for its retries; called in the transaction of its effect. */
  private rememberAnswer(
    owner: string,
    key: string,
    requestHash: string,
    answer: unknown,
    now: number,
  ): void {
    this.sql.exec(
      // REPLACE: an expired key not yet swept is taken as new.
      `INSERT OR REPLACE INTO idempotency (player_id, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)`,
      owner,
      key,
      requestHash,
      JSON.stringify(answer),
      now,
    )
  }

  async importEntries(
    boardId: string,
    entries: { playerId: string; score: number; subscore: number; metadata: string | null }[],
    key: { key: string; requestHash: string } | null = null,
  ): Promise<Reply<{ cycle: number; imported: number; total: number; replayed: boolean }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const now = this.now()
    if (key) {
      // A retry gets the first answer and changes nothing: sent again after the players had
      // submitted since, or after the cycle ended, the batch would undo those or land twice.
      const seen = this.keyedAnswer(IMPORT_KEYS, key.key, now)
      if (seen) {
        if (seen.request_hash !== key.requestHash) {
          return refuse(
            'idempotency-key-reused',
            'This Idempotency-Key was used for a different import',
          )
        }
        return { ok: true, ...(JSON.parse(seen.response) as ImportResult), replayed: true }
      }
    }
    if (this.rollover(now)) await this.scheduleAlarm()
    const config = this.config!
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!
      for (const [field, value, min, max] of [
        ['score', e.score, config.scoreMin, config.scoreMax],
        ['subscore', e.subscore, config.subscoreMin, config.subscoreMax],
      ] as const) {
        if (value < min || value > max) {
          return refuse('validation', `entries.${i}: ${field} outside the board's bounds`, {
            errors: [{ path: `entries.${i}.${field}`, message: 'outside the board’s bounds' }],
          })
        }
      }
      if (e.metadata !== null && jsonbLength(e.metadata) > config.metadataMaxBytes) {
        return refuse(
          'validation',
          `entries.${i}: metadata over ${config.metadataMaxBytes} bytes`,
          {
            errors: [
              {
                path: `entries.${i}.metadata`,
                message: `at most ${config.metadataMaxBytes} bytes`,
              },
            ],
          },
        )
      }
    }
    const cur = this.current!
    const changed: { playerId: string; next: RankKey; previous: Standing | undefined }[] = []
    let metadataOnly = 0
    // The board's seq moves only once the batch commits: a rolled-back batch must not leave it
    // past every stored row, or a wake would recover a lower one and let old cursors through.
    let seq = this.seq
    let result: ImportResult | undefined
    // Loaded before the batch's rows are written: built inside the transaction, the index would
    // hold them already and count them twice.
    const index = this.index
    try {
      this.ctx.storage.transactionSync(() => {
        let newPlayers = 0
        for (const e of entries) {
          // Read inside the transaction: a player twice in one batch finds the first write.
          const previous = this.standingOf(e.playerId)
          if (previous && previous.score === e.score && previous.subscore === e.subscore) {
            // The same standing keeps its place among ties; only new metadata is written, and counts.
            const metadataChanged = this.sql.exec(
              `UPDATE entries SET metadata = ? WHERE cycle = ? AND player_id = ? AND metadata IS NOT ?`,
              e.metadata,
              cur.cycle,
              e.playerId,
              e.metadata,
            ).rowsWritten
            if (metadataChanged > 0) metadataOnly++
            continue
          }
          const next = { score: e.score, subscore: e.subscore, seq: ++seq }
          this.writeEntry(e.playerId, next, e.metadata, now)
          changed.push({ playerId: e.playerId, next, previous })
          if (!previous) newPlayers++
        }
        // Rolls the batch back: it is taken whole or not at all.
        // Players ranked already are not held to it (a limit lowered below the cycle's count).
        if (newPlayers > 0 && index.size + newPlayers > config.maxEntries) throw new BoardFull()
        if (newPlayers > 0) {
          const bytes = this.ctx.storage.sql.databaseSize
          if (bytes >= this.newPlayersStorageLimit) throw new StorageFull(bytes)
        }
        result = {
          cycle: cur.cycle,
          imported: changed.length + metadataOnly,
          total: index.size + newPlayers,
        }
        if (key) {
          // With the batch, in its transaction: no batch applied without its key, nor the reverse.
          this.rememberAnswer(IMPORT_KEYS, key.key, key.requestHash, result, now)
        }
      })
    } catch (err) {
      if (err instanceof BoardFull) return boardFull(config.maxEntries)
      if (err instanceof StorageFull) {
        // Counted as a submission's would be: the operator's alert for a filling board.
        submissionRefusals.inc({ reason: 'storage_full' })
        this.reportStorage()
        this.sendMetrics()
        return storageFull(err.bytes)
      }
      throw err
    }
    this.seq = seq
    for (const { playerId, next, previous } of changed) {
      index.replace(previous, next)
      if (previous) this.remember(playerId, previous, next.seq, now)
    }
    if (key) await this.alarmForKeys(now)
    // An import is the largest way a board grows: its size reported as a submission's is.
    if (Date.now() - this.storageReportedAt >= STORAGE_REPORT_MS) this.reportStorage()
    return { ok: true, ...result!, replayed: false }
  }

  /**
   * Takes a player's entry out of the current cycle (a moderator removing a cheater's score):
   * everyone below moves up at once. Walks begun before see the board as it was when they began,
   * the entry included, as they do for a replaced score. Removing a player with no entry changes
   * nothing (`removed: false`), so a retry is harmless unless the player submitted in between
   * (the retry then removes that new score too). The player may submit again; a retried
   * submission of theirs answers its first response and does not bring the score back. A cycle
   * that has closed is archived as it stood: this reaches the current cycle only.
   */
  async removeEntry(
    boardId: string,
    playerId: string,
    opts: { erasedAt?: number } = {},
  ): Promise<Reply<{ cycle: number; removed: boolean; total: number }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const now = this.now()
    if (this.rollover(now)) await this.scheduleAlarm()
    const { erasedAt } = opts
    const removed = this.takeOut(
      playerId,
      now,
      erasedAt === undefined ? 'admin' : 'erasure',
      erasedAt === undefined ? undefined : () => this.noteErasure(playerId, erasedAt),
    )
    if (erasedAt !== undefined) {
      this.forgetMetadataOf(playerId)
      this.countErasures()
      await this.scheduleAlarm()
    }
    return { ok: true, cycle: this.current!.cycle, removed, total: this.entryCount() }
  }

  /**
   * An erased player's metadata leaves the versions walks under way still see (for up to
   * WALK_TTL_MS): what they submitted is theirs to have erased. The versions stay, score and all,
   * so a walk begun before neither skips nor repeats anyone.
   */
  private forgetMetadataOf(playerId: string): void {
    for (const v of this.replaced.values()) {
      if (v.playerId !== playerId || v.metadata === null) continue
      this.replacedMetadata -= v.metadata.length
      v.metadata = null
    }
  }

  /**
   * Whether a submission with a token issued at `issuedAt` comes from before the player's erasure
   * (`removeEntry` with `erasedAt`): the erased player's own client, still signed in, which would
   * put a new entry, metadata and all, under the id. A token from after it (a player of an
   * identity provider coming back under the same id) is theirs. Tokens carry whole seconds, so a
   * token of the erasure's own second counts as after it, except a guest's: a guest's id never
   * comes back (the device signs in as a new player), so any token of an erased guest is old.
   */
  private tokenPredatesErasure(playerId: string, issuedAt: number | undefined): boolean {
    if (this.erasureCount === 0) return false
    const guest = playerId.startsWith(GUEST_ID_PREFIX)
    // A game server's (the admin key: no token) for an erased guest's id too: nobody comes back
    // under it, and a match's result or a profile under it is refused likewise.
    if (issuedAt === undefined && !guest) return false
    const erased = one<{ erased_at: number }>(
      this.sql,
      `SELECT erased_at FROM erasures WHERE player_id = ?`,
      playerId,
    )
    if (erased === undefined) return false
    return guest || issuedAt! + 1000 <= erased.erased_at
  }

  private noteErasure(playerId: string, erasedAt: number): void {
    this.sql.exec(
      `INSERT INTO erasures (player_id, erased_at) VALUES (?, ?)
       ON CONFLICT (player_id) DO UPDATE SET erased_at = max(erased_at, excluded.erased_at)`,
      playerId,
      erasedAt,
    )
  }

  private countErasures(): void {
    this.erasureCount = one<{ n: number }>(this.sql, `SELECT count(*) AS n FROM erasures`)!.n
  }

  /**
   * Removes the player's entry from the current cycle, with `alsoWrite` (if any) in the same
   * transaction; false (and `alsoWrite` still done) when there was none.
   */
  private takeOut(
    playerId: string,
    now: number,
    cause: 'admin' | 'ban' | 'erasure',
    alsoWrite?: () => void,
  ): boolean {
    const cur = this.current!
    const previous = this.standingOf(playerId)
    if (!previous) {
      alsoWrite?.()
      return false
    }
    const removedAt = this.seq + 1
    this.ctx.storage.transactionSync(() => {
      this.sql.exec(`DELETE FROM entries WHERE cycle = ? AND player_id = ?`, cur.cycle, playerId)
      // No entry carries this write's seq, so a wake would not recover it from the entries.
      this.setMeta('seq', String(removedAt))
      alsoWrite?.()
    })
    this.seq = removedAt
    // A board not read since it woke keeps its standings on disk: a ban or an erasure walking
    // every board must not load each one's.
    if (this.loadedIndex) this.loadedIndex.remove(previous)
    else if (this.countedEntries !== null) this.countedEntries--
    this.remember(playerId, previous, removedAt, now)
    entriesRemoved.inc({ cause })
    this.sendMetrics()
    return true
  }

  /**
   * Bans a player from the board: their entry leaves the current cycle (as `removeEntry`) and
   * their submissions are refused (403) until `unban`, in every cycle. Banning again keeps the
   * first ban's time, and takes the new reason if it gives one. At most MAX_BANS players per board.
   * `byAccount`: the ban comes from the player's account ban. It leaves a ban the board's admin
   * set as it is; one the board's admin sets over it becomes theirs (the account's lifting then
   * keeps it).
   */
  async ban(
    boardId: string,
    playerId: string,
    reason: string | null,
    opts: { byAccount?: boolean } = {},
  ): Promise<Reply<{ cycle: number; removed: boolean; total: number }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const now = this.now()
    if (this.rollover(now)) await this.scheduleAlarm()
    const removed = this.banNow(playerId, reason, opts.byAccount === true, now)
    if (removed === null) {
      return refuse('conflict', `A board holds at most ${this.maxBans} bans; lift some first`, {
        limit: this.maxBans,
      })
    }
    return { ok: true, cycle: this.current!.cycle, removed, total: this.entryCount() }
  }

  /**
   * `ban`'s writes: whether the player's entry left the current cycle, or null when the board
   * is full of bans and the player not among them.
   */
  private banNow(
    playerId: string,
    reason: string | null,
    byAccount: boolean,
    now: number,
  ): boolean | null {
    const already = this.isBanned(playerId)
    if (!already && this.banCount >= this.maxBans) return null
    const removed = this.takeOut(playerId, now, 'ban', () => {
      this.sql.exec(
        byAccount
          ? `INSERT INTO bans (player_id, reason, banned_at, by_account) VALUES (?, ?, ?, 1)
             ON CONFLICT (player_id) DO UPDATE SET reason = coalesce(excluded.reason, bans.reason)
             WHERE bans.by_account = 1`
          : `INSERT INTO bans (player_id, reason, banned_at, by_account) VALUES (?, ?, ?, 0)
             ON CONFLICT (player_id) DO UPDATE
             SET reason = coalesce(excluded.reason, bans.reason), by_account = 0`,
        playerId,
        reason,
        now,
      )
    })
    if (!already) this.banCount++
    return removed
  }

  /**
   * Takes on the account bans (Neon's `player_bans`) and the erasures (`erased_players`, those a
   * token may still predate) this board may have missed: each walks the boards that exist when
   * it happens, so a board created after it bans those players here, or refuses their tokens
   * issued before the erasure, once, when it first gets its configuration. (A board from before this existed
   * takes, once after the upgrade, the bans older than its creation: newer ones walked it, and a
   * ban of theirs its admin lifted stays lifted.) Pages in player id order; the last id applied
   * is kept, so a crash or an unreachable Neon resumes where it stopped, 30 s later (the alarm,
   * or the next call). A player this board bans already keeps the ban it has. A lift that
   * comes while this runs waits for it (`awaitCatchUp`), so that a page read before the lift
   * does not ban the player again after it.
   * `maxPages`: the alarm's runs stop after a few pages and come back; a call waiting for the
   * bans reads them to the end. Never throws: a failure is logged and retried.
   */
  private async catchUp(maxPages: number): Promise<void> {
    while (this.catchingUp) await this.catchingUp
    if (!this.catchUpPending) return
    this.catchingUp = this.catchUpNow(maxPages)
      .catch((err: unknown) => {
        log('warn', 'account bans or erasures not taken on', {
          actor: this.actor,
          ...errorFields(err),
        })
        this.setMeta(CATCH_UP_RETRY_AT, String(this.now() + ACCOUNT_BANS_RETRY_MS))
      })
      .finally(() => {
        this.catchingUp = null
      })
    return this.catchingUp
  }

  /**
   * What a call to a board still catching up waits for: the catch-up to its end, unless Neon
   * failed it and its retry is not due (the board then serves calls without it meanwhile).
   */
  private async awaitCatchUp(): Promise<void> {
    // One under way (a push's, whose retry time is not due) is waited for all the same: it may
    // hold a page read before a ban's lifting, and a lift that passed it would be undone by it.
    while (this.catchingUp) await this.catchingUp
    while (this.catchUpDue(this.now())) await this.catchUp(Infinity)
    // Failed just now, the alarm comes for the retry; done, it comes to forget the erasures taken
    // on once no token can predate them.
    await this.scheduleAlarm()
  }

  private catchUpDue(now: number): boolean {
    return this.catchUpPending && now >= Number(this.meta(CATCH_UP_RETRY_AT) ?? 0)
  }

  private catchUpLeft(): boolean {
    return this.meta(ACCOUNT_BANS_AFTER) !== undefined || this.meta(ERASURES_AFTER) !== undefined
  }

  /** Account bans first, then erasures, `maxPages` pages of either in all. */
  private async catchUpNow(maxPages: number): Promise<void> {
    if (!this.current || this.boardId === null) return
    const pages = await this.catchUpAccountBans(maxPages)
    await this.catchUpErasures(maxPages - pages)
    this.catchUpPending = this.catchUpLeft()
    // More pages than one run takes: the alarm comes straight back for them.
    if (this.catchUpPending) this.setMeta(CATCH_UP_RETRY_AT, String(this.now()))
    else this.sql.exec(`DELETE FROM meta WHERE key = ?`, CATCH_UP_RETRY_AT)
  }

  /** Pages of account bans, up to `maxPages`; the pages read. */
  private async catchUpAccountBans(maxPages: number): Promise<number> {
    const olderThanBoard = this.meta(ACCOUNT_BANS_OLDER_THAN_BOARD) !== undefined
    for (let page = 0; page < maxPages; page++) {
      const after = this.meta(ACCOUNT_BANS_AFTER)
      if (after === undefined || this.boardId === null) return page
      const bans = await this.catchUpReads.accountBansAfter(this.env, after, this.catchUpPageSize, {
        olderThanBoard: olderThanBoard ? this.boardId : null,
      })
      const now = this.now()
      for (const ban of bans) {
        if (this.isBanned(ban.playerId)) continue
        if (this.banNow(ban.playerId, ban.reason, true, now) === null) {
          log('warn', 'account bans not all taken: the board is full of bans', {
            actor: this.actor,
            from: ban.playerId,
          })
          this.accountBansDone()
          return page + 1
        }
      }
      if (bans.length < this.catchUpPageSize) {
        this.accountBansDone()
        return page + 1
      }
      this.setMeta(ACCOUNT_BANS_AFTER, bans[bans.length - 1]!.playerId)
    }
    return maxPages
  }

  private accountBansDone(): void {
    this.sql.exec(
      `DELETE FROM meta WHERE key IN (?, ?)`,
      ACCOUNT_BANS_AFTER,
      ACCOUNT_BANS_OLDER_THAN_BOARD,
    )
  }

  /**
   * Pages of erasures a token may still predate, up to `maxPages`: each refuses the erased
   * player's old tokens here as the erasure's walk would have (`removeEntry`'s `erasedAt`). An
   * entry under the id stays: made since, it came from a newer token or a game server.
   */
  private async catchUpErasures(maxPages: number): Promise<void> {
    for (let page = 0; page < maxPages; page++) {
      const after = this.meta(ERASURES_AFTER)
      if (after === undefined) return
      const erasures = await this.catchUpReads.recentErasuresAfter(
        this.env,
        after,
        this.catchUpPageSize,
        ERASURE_KEPT_MS,
      )
      this.ctx.storage.transactionSync(() => {
        for (const e of erasures) this.noteErasure(e.playerId, e.erasedAt)
        if (erasures.length < this.catchUpPageSize) {
          this.sql.exec(`DELETE FROM meta WHERE key = ?`, ERASURES_AFTER)
        } else {
          this.setMeta(ERASURES_AFTER, erasures[erasures.length - 1]!.playerId)
        }
      })
      this.countErasures()
    }
  }

  /**
   * Lifts a player's ban; true if there was one. Their removed entries do not come back.
   * `byAccount`: only a ban their account ban placed (the board's admin's own stays).
   */
  async unban(
    boardId: string,
    playerId: string,
    opts: { byAccount?: boolean } = {},
  ): Promise<Reply<{ lifted: boolean }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const lifted =
      this.sql.exec(
        opts.byAccount === true
          ? `DELETE FROM bans WHERE player_id = ? AND by_account = 1`
          : `DELETE FROM bans WHERE player_id = ?`,
        playerId,
      ).rowsWritten > 0
    if (lifted) this.banCount--
    return { ok: true, lifted }
  }

  /** The board's bans in player id order, a page at a time after `after`. */
  async bans(
    boardId: string,
    after: string | null,
    limit: number,
  ): Promise<Reply<{ bans: BanView[]; next: string | null }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const rows = all<{
      player_id: string
      reason: string | null
      banned_at: number
      by_account: number
    }>(
      this.sql,
      `SELECT player_id, reason, banned_at, by_account FROM bans WHERE player_id > ?
        ORDER BY player_id LIMIT ?`,
      after ?? '',
      limit + 1,
    )
    const page = rows.slice(0, limit)
    return {
      ok: true,
      bans: page.map((r) => ({
        playerId: r.player_id,
        reason: r.reason,
        bannedAt: new Date(r.banned_at).toISOString(),
        byAccount: r.by_account === 1,
      })),
      next: rows.length > limit ? page[page.length - 1]!.player_id : null,
    }
  }

  private isBanned(playerId: string): boolean {
    if (this.banCount === 0) return false
    return one(this.sql, `SELECT 1 AS banned FROM bans WHERE player_id = ?`, playerId) !== undefined
  }

  /**
   * Writes a player's standing in the current cycle. `ord_*` hold the score and subscore negated
   * on descending boards, so the archive walks every board with one ascending index.
   */
  private writeEntry(playerId: string, entry: RankKey, metadata: string | null, now: number): void {
    const cur = this.current!
    const dir = cur.sortOrder === 'desc' ? -1 : 1
    this.sql.exec(
      `INSERT OR REPLACE INTO entries (cycle, player_id, score, subscore, seq, ord_score, ord_sub, metadata, submitted_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
      cur.cycle,
      playerId,
      entry.score,
      entry.subscore,
      entry.seq,
      entry.score * dir + 0,
      entry.subscore * dir + 0,
      metadata,
      now,
    )
  }

  /**
   * The player's key in the current cycle, from the entries table: the rank index holds keys
   * only, so who has which key is SQLite's to say (a primary-key read).
   */
  private standingOf(playerId: string): Standing | undefined {
    return one<Standing>(
      this.sql,
      `SELECT score, subscore, seq, metadata FROM entries WHERE cycle = ? AND player_id = ?`,
      this.current!.cycle,
      playerId,
    )
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  /** Configuration and the current cycle, or why not (an unknown board, Neon down). */
  async info(
    boardId: string,
  ): Promise<{ config: LeaderboardConfig; cycle: CycleInfo } | BoardProblem> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    await this.rolloverForRead()
    return { config: this.config!, cycle: this.cycleInfo() }
  }

  /**
   * A page of the current cycle. The first page fixes a snapshot (the board's write sequence
   * number); every later page reads the board as of that snapshot, from the live index and the
   * versions replaced since, so a walk neither repeats nor skips an entry while scores change.
   * Cursors carry (cycle, snapshot, last rank, last key); one from a closed cycle, or older than
   * the kept history, is refused with 409 and the client starts again.
   */
  async top(
    boardId: string,
    cursor: string | null,
    limit: number,
  ): Promise<
    Reply<{
      cycle: number
      /** When the cycle ends (null: never), so that a cached page does not outlive its cycle. */
      endsAt: number | null
      entries: BoardEntry[]
      nextCursor: string | null
      total: number
    }>
  > {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    await this.rolloverForRead()
    const cur = this.current!
    let walk: BoardCursor = { cycle: cur.cycle, snapshot: this.seq, lastRank: 0, key: null }
    if (cursor !== null) {
      const parsed = parseBoardCursor(cursor)
      if (!parsed) {
        return refuse('validation', 'cursor is not valid', {
          errors: [{ path: 'cursor', message: 'not a cursor this board issued' }],
        })
      }
      if (parsed.cycle !== cur.cycle) {
        return refuse(
          'conflict',
          `The cursor belongs to cycle ${parsed.cycle}; the board is now in cycle ${cur.cycle}. Start again without a cursor.`,
          {
            cycle: cur.cycle,
          },
        )
      }
      if (parsed.snapshot < this.historyHorizon || parsed.snapshot > this.seq) {
        return refuse(
          'conflict',
          'The cursor is too old to continue consistently. Start again without a cursor.',
          { cycle: cur.cycle },
        )
      }
      walk = parsed
    }
    // One more than the page: whether there is a next page comes from the same scan.
    const scan = this.snapshotPage(walk.key, walk.snapshot, limit + 1)
    const page = scan.items.slice(0, limit)
    const entries = await this.decorate(page, walk.lastRank + 1)
    // A scan that ran out of budget covered the board up to its frontier: the next page goes on
    // from there (this one may be short, even empty, but nothing up to there is left out).
    const nextKey =
      scan.items.length > limit ? page[limit - 1]! : scan.frontier !== null ? scan.frontier : null
    return {
      ok: true,
      cycle: cur.cycle,
      endsAt: cur.endsAt,
      entries,
      nextCursor:
        nextKey === null
          ? null
          : formatBoardCursor({
              cycle: cur.cycle,
              snapshot: walk.snapshot,
              lastRank: walk.lastRank + page.length,
              key: nextKey,
            }),
      total: this.index.size,
    }
  }

  /**
   * Up to `limit` entries after `after` in the board as it was at write `snapshot`, scanning at
   * most PAGE_SCAN_BUDGET keys of each index. Entries written after the snapshot are passed over
   * (their earlier versions come from history), so an old snapshot on a board that grew since
   * could otherwise make one page read most of the board. When the budget runs out first,
   * `frontier` is the last key both scans covered: `items` are then exactly the snapshot's
   * entries after `after` up to it (fewer than `limit`, perhaps none), and the walk goes on
   * after it. `frontier` is null when the scan was not cut short.
   */
  private snapshotPage(
    after: RankKey | null,
    snapshot: number,
    limit: number,
  ): { items: PageItem[]; frontier: RankKey | null } {
    const order = this.current!.sortOrder
    const step = Math.max(limit, 32)
    const beyond = (key: RankKey, frontier: RankKey | null) =>
      frontier !== null && compareEntries(order, key, frontier) > 0
    let frontier: RankKey | null = null
    const live: PageItem[] = []
    let from = after
    let budget = this.pageScanBudget
    live: while (live.length < limit) {
      const chunk = this.index.page(from, step)
      for (const e of chunk) {
        if (e.seq <= snapshot && live.push(e) === limit) break live
      }
      if (chunk.length < step) break
      from = chunk[chunk.length - 1]!
      budget -= chunk.length
      if (budget <= 0) {
        frontier = from
        break
      }
    }
    const old: PageItem[] = []
    // A snapshot of now (a walk's first page) needs no replaced version: none was replaced after
    // it. Scanning them anyway could only spend the budget and cut the page short for nothing.
    if (this.replaced.size > 0 && snapshot < this.seq) {
      from = after
      budget = this.pageScanBudget
      old: while (old.length < limit) {
        const chunk = this.history.page(from, step)
        for (const v of chunk) {
          if (beyond(v, frontier)) break old
          const info = this.replaced.get(v.seq)!
          if (v.seq <= snapshot && snapshot < info.replacedAt) {
            if (old.push({ ...v, playerId: info.playerId, metadata: info.metadata }) === limit) {
              break old
            }
          }
        }
        if (chunk.length < step) break
        from = chunk[chunk.length - 1]!
        budget -= chunk.length
        if (budget <= 0) {
          // Both scans covered the board up to the nearer of their two ends.
          if (!beyond(from, frontier)) frontier = from
          break
        }
      }
    }
    const items = [...live, ...old]
      .filter((e) => !beyond(e, frontier))
      .sort((a, b) => compareEntries(order, a, b))
      .slice(0, limit)
    return { items, frontier }
  }

  /** A player's standing in the current cycle (entry null when the player has not scored). */
  async player(
    boardId: string,
    playerId: string,
  ): Promise<
    Reply<{ cycle: number; endsAt: number | null; entry: BoardEntry | null; total: number }>
  > {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    await this.rolloverForRead()
    const row = one<RankKey & { metadata: string | null }>(
      this.sql,
      `SELECT score, subscore, seq, metadata FROM entries WHERE cycle = ? AND player_id = ?`,
      this.current!.cycle,
      playerId,
    )
    return {
      ok: true,
      cycle: this.current!.cycle,
      // So that a cache keeps the answer no longer than its cycle lasts.
      endsAt: this.current!.endsAt,
      entry: row
        ? {
            rank: this.index.rankOf(row)!,
            playerId,
            score: row.score,
            subscore: row.subscore,
            metadata: row.metadata ? (JSON.parse(row.metadata) as Json) : null,
          }
        : null,
      total: this.index.size,
    }
  }

  /** A window of `limit` entries around a player, shifted at the edges of the board. */
  async around(
    boardId: string,
    playerId: string,
    limit: number,
  ): Promise<
    Reply<{ cycle: number; endsAt: number | null; entries: BoardEntry[]; total: number }>
  > {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    await this.rolloverForRead()
    const key = this.standingOf(playerId)
    if (!key) {
      return refuse(
        'not-found',
        `Player '${playerId}' has no score in cycle ${this.current!.cycle}`,
      )
    }
    const window = this.index.around(key, limit)
    if (window.length === 0) throw new Error(`rank index lacks ${playerId}'s standing`)
    return {
      ok: true,
      cycle: this.current!.cycle,
      // So that a cache keeps the answer no longer than its cycle lasts.
      endsAt: this.current!.endsAt,
      entries: await this.decorate(window, this.index.rankOf(window[0]!)!),
      total: this.index.size,
    }
  }

  /**
   * Adds ranks (contiguous from `firstRank`), players and metadata. A live key's player and
   * metadata are read by its seq, in bounded batches; a replaced version (a walk's snapshot)
   * carries its own, the metadata submitted with the score it shows.
   */
  private async decorate(page: PageItem[], firstRank: number): Promise<BoardEntry[]> {
    const live = new Map<number, { player_id: string; metadata: string | null }>()
    const seqs = page.filter((e) => e.playerId === undefined).map((e) => e.seq)
    for (let i = 0; i < seqs.length; i += 90) {
      const chunk = seqs.slice(i, i + 90)
      // By seq alone (unique on the board): with `cycle = ?` too, SQLite prefers scanning the
      // whole cycle through entries_rank.
      for (const r of all<{ player_id: string; seq: number; metadata: string | null }>(
        this.sql,
        `SELECT player_id, seq, metadata FROM entries WHERE seq IN (${chunk.map(() => '?').join(',')})`,
        ...chunk,
      ))
        live.set(r.seq, r)
    }
    return page.map((e, i) => {
      let playerId = e.playerId
      let metadata: Json = e.metadata ? (JSON.parse(e.metadata) as Json) : null
      if (playerId === undefined) {
        const row = live.get(e.seq)
        // Index and table change in one synchronous step; a key without its row is a bug.
        if (!row) throw new Error(`rank index has seq ${e.seq}, which the entries table lacks`)
        playerId = row.player_id
        metadata = row.metadata ? (JSON.parse(row.metadata) as Json) : null
      }
      return { rank: firstRank + i, playerId, score: e.score, subscore: e.subscore, metadata }
    })
  }

  // ---------------------------------------------------------------------------------------------
  // Closing

  /**
   * Closes a cycle now (admin) and starts archiving it. With `cycle`, only that cycle is closed,
   * and only if it is still current: a retried or racing close of the same cycle (or one the
   * schedule closed first) answers with the existing close and changes nothing. A cycle nobody
   * entered is carried at its boundary, not closed, so it is still current after it and a close
   * naming it then closes it. Without `cycle`, the cycle that was current when the call came is
   * closed: by its schedule, if its boundary has passed (the alarm being late), else now. With
   * `key`, a retry (same key, same request) answers with the cycle the first call closed and
   * closes nothing more. With `retryNow`, an archive waiting out a backoff retries at once.
   */
  async close(
    boardId: string,
    opts: {
      retryNow?: boolean
      cycle?: number
      key?: { key: string; requestHash: string } | null
    } = {},
  ): Promise<Reply<{ closed: CloseStatus; current: CycleInfo; replayed: boolean }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    const now = this.now()
    const key = opts.key ?? null
    const seen = key && this.keyedAnswer(CLOSE_KEYS, key.key, now)
    if (seen) {
      if (seen.request_hash !== key!.requestHash) {
        return refuse('idempotency-key-reused', 'This Idempotency-Key was used for another close')
      }
      // The alarm set for now by the answer carries a rollover on.
      this.rollover(now)
      return this.closeAnswer(
        (JSON.parse(seen.response) as { cycle: number }).cycle,
        opts,
        now,
        true,
      )
    }
    const wasCurrent = this.current!.cycle
    const rolled = this.rollover(now)
    // The cycle the caller saw as current, closed by its schedule in this very call: that close
    // is the answer, not a second one of the cycle that has just begun.
    const closedCycle =
      opts.cycle ?? (rolled && this.closeStatus(wasCurrent) ? wasCurrent : this.current!.cycle)
    if (closedCycle === this.current!.cycle) this.freeze(now, now, 'manual')
    else if (!this.closeStatus(closedCycle)) {
      return refuse(
        'conflict',
        `Cycle ${closedCycle} is not the current cycle (${this.current!.cycle}) and has not closed` +
          (closedCycle < this.current!.cycle
            ? ' in the last 35 days (older closes are in Neon: GET /v1/leaderboards/{id}/cycles/{cycle}/top)'
            : ''),
        {
          cycle: this.current!.cycle,
        },
      )
    }
    if (key) this.rememberAnswer(CLOSE_KEYS, key.key, key.requestHash, { cycle: closedCycle }, now)
    return this.closeAnswer(closedCycle, opts, now, false)
  }

  private async closeAnswer(
    cycle: number,
    opts: { retryNow?: boolean },
    now: number,
    replayed: boolean,
  ): Promise<Reply<{ closed: CloseStatus; current: CycleInfo; replayed: boolean }>> {
    if (opts.retryNow) {
      this.sql.exec(`UPDATE closes SET next_attempt_at = 0 WHERE state != 'done'`)
      // An attempt in flight that fails would set its backoff over this: it retries at once.
      this.retriesAsked++
    }
    await this.ctx.storage.setAlarm(now)
    const closed = this.closeStatus(cycle)
    if (!closed) {
      // A keyed retry, within the key's 24 h, of a close whose record later closes pruned
      // (CLOSE_RECORD_KEPT_MS): refused as a close naming that cycle now is.
      return refuse(
        'conflict',
        `Cycle ${cycle}'s close record is over 35 days old (its standings: GET /v1/leaderboards/{id}/cycles/${cycle}/top)`,
        { cycle: this.current!.cycle },
      )
    }
    return { ok: true, closed, current: this.cycleInfo(), replayed }
  }

  /**
   * The scheduled path (cron): rolls over if due and makes sure pending archives progress.
   * `stalled`: an archive was pending with no alarm to carry it on (lost, or over a minute late).
   */
  async tick(
    boardId: string,
  ): Promise<{ rolledOver: boolean; overdue: boolean; pending: number; stalled: boolean }> {
    if (await this.ensureConfigured(boardId)) {
      return { rolledOver: false, overdue: false, pending: 0, stalled: false }
    }
    const now = this.now()
    const endsAt = this.current?.endsAt ?? null
    // Read before the rollover sets the next one: whether the board's own alarm was still there.
    // An alarm running now (an archive's page, minutes of them for a large cycle) has none set
    // until it ends, and is not lost: it sets the next when it is done.
    const alarm = await this.ctx.storage.getAlarm()
    const running = this.alarmRunning
    const rolledOver = this.rollover(now)
    // The cron often comes a moment before the alarm set for the boundary, and that alarm would
    // have done the same: only a boundary with no alarm due for it says the alarm was lost.
    const overdue = rolledOver && endsAt !== null && !running && (alarm === null || alarm > endsAt)
    const pending = one<{ n: number }>(
      this.sql,
      `SELECT count(*) AS n FROM closes WHERE state != 'done'`,
    )!.n
    const stalled = pending > 0 && !running && (alarm === null || alarm < now - ALARM_LATE_MS)
    if (rolledOver || pending > 0) await this.scheduleAlarm()
    return { rolledOver, overdue, pending, stalled }
  }

  /**
   * A close's progress, for the admin route: null if that cycle has not closed. An object with no
   * board stored asks Neon whether the board exists, so an id nobody created keeps nothing.
   */
  async closeProgress(boardId: string, cycle: number): Promise<CloseStatus | null | BoardProblem> {
    if (this.boardId === null || this.deletingVersion !== null) {
      const unknown = await this.ensureConfigured(boardId)
      if (unknown) return unknown
    }
    return this.closeStatus(cycle)
  }

  /**
   * For the dashboard: the board's configuration and cycle, and its closes whose archive has not
   * finished (the oldest few): a close failing page after page (Neon refusing a row, a timeout)
   * writes nothing to Neon's `leaderboard_cycles` before its first page lands, so only the board
   * knows it is stuck, and how often it tried.
   */
  async operatorInfo(
    boardId: string,
  ): Promise<
    { config: LeaderboardConfig; cycle: CycleInfo; unfinishedCloses: CloseStatus[] } | BoardProblem
  > {
    const info = await this.info(boardId)
    if ('ok' in info) return info
    const unfinished = all<CloseRow>(
      this.sql,
      `SELECT * FROM closes WHERE state != 'done' ORDER BY cycle LIMIT ?`,
      UNFINISHED_CLOSES_SHOWN,
    )
    return { ...info, unfinishedCloses: unfinished.map(closeStatusOf) }
  }

  /** Progress of a closed cycle's archive, or null if that cycle has not closed here. */
  closeStatus(cycle: number): CloseStatus | null {
    if (!this.schemaReady) return null
    const row = one<CloseRow>(this.sql, `SELECT * FROM closes WHERE cycle = ?`, cycle)
    return row ? closeStatusOf(row) : null
  }

  /**
   * Runs the archive until done, out of time, or failed (then backs off). Only one run at a time:
   * a concurrent caller waits for the running one instead of writing the same pages twice.
   */
  async runArchive(opts: { force?: boolean } = {}): Promise<void> {
    if (this.archiving) return this.archiving
    this.archiving = this.archiveLoop(opts.force ?? false).finally(() => {
      this.archiving = null
    })
    return this.archiving
  }

  /** Admins' asks for a retry now (`close`): an attempt failing after one retries at once. */
  private retriesAsked = 0

  private async archiveLoop(force: boolean): Promise<void> {
    const deadline = this.now() + ARCHIVE_BUDGET_MS
    // Pages read while the previous ones were in flight; used only if they follow the cursor.
    let next: ArchiveBatch | null = null
    let purged = 0
    for (;;) {
      const close = one<CloseRow>(
        this.sql,
        `SELECT * FROM closes WHERE state != 'done' ORDER BY cycle LIMIT 1`,
      )
      if (!close) return
      if (!force && close.next_attempt_at > this.now()) return
      if (this.now() > deadline) return
      const retriesAsked = this.retriesAsked
      try {
        if (close.state === 'archiving') {
          next = await this.archiveNextPages(close, next, deadline)
        } else {
          // The rest is the next run's: the alarm is due at once (next_attempt_at has passed).
          if (purged++ === this.purgeBatchesPerRun) return
          this.purgeSome(close)
        }
      } catch (err) {
        // Consecutive failures without progress: a batch that moved the cursor reset the count.
        const attempts =
          one<{ attempts: number }>(
            this.sql,
            `SELECT attempts FROM closes WHERE cycle = ?`,
            close.cycle,
          )!.attempts + 1
        const backoff =
          this.retriesAsked === retriesAsked ? spreadBackoffMs(attempts, MAX_BACKOFF_MS) : 0
        const message = errorMessage(err)
        this.sql.exec(
          `UPDATE closes SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE cycle = ?`,
          attempts,
          this.now() + backoff,
          message.slice(0, 500),
          close.cycle,
        )
        closeRetries.inc()
        this.reportCloseFailures(attempts)
        this.sendMetrics()
        log('warn', 'archive page failed; will retry', {
          actor: this.actor,
          cycle: close.cycle,
          archived: close.archived,
          attempts,
          backoffMs: backoff,
          ...errorFields(err),
        })
        return
      }
      force = false
    }
  }

  /**
   * Sends the next pages (up to ARCHIVE_CONCURRENCY at once, each its own Neon transaction) and
   * moves the recorded cursor over the longest run of acknowledged pages from the start. A page
   * acknowledged after a failed one is simply sent again next time: pages are idempotent.
   *
   * While Neon works on these pages, the object reads the ones after them (its SQLite reads are
   * a large share of a page's cost), so the two overlap instead of taking turns. Those are only
   * sent, by the next call, if every page of this batch is acknowledged and the cursor still
   * ends where they begin; otherwise they are read again from the recorded cursor.
   */
  private async archiveNextPages(
    close: CloseRow,
    prefetched: ArchiveBatch | null,
    deadline: number,
  ): Promise<ArchiveBatch | null> {
    const base = {
      leaderboardId: this.boardId!,
      cycle: close.cycle,
      startsAt: close.starts_at,
      endsAt: close.ends_at,
      entries: close.entries,
    }
    const batch =
      prefetched?.cycle === close.cycle &&
      prefetched.cursor === close.cursor &&
      prefetched.archived === close.archived
        ? prefetched
        : this.readBatch(close, close.cursor, close.archived)
    const pages = batch.pages

    if (pages.length === 0) {
      const force = this.archivesSentAgain.has(close.cycle)
      const completed = await within(
        this.archiveWriter.complete({ ...base, archivedThrough: close.archived }, { force }),
        this.archiveCallMs,
        'completing the archive',
      )
      if (completed && completed.missing > 0) {
        // Pages Neon acknowledged are gone from it (restored to a point before them): every
        // page again, from the first (a page Neon has changes nothing), then complete. Once per
        // close and instance: missing again, the archive is marked complete as it stands.
        this.archivesSentAgain.add(close.cycle)
        log('error', 'archive incomplete in Neon: sending every page again', {
          actor: this.actor,
          cycle: close.cycle,
          missing: completed.missing,
        })
        this.sql.exec(
          `UPDATE closes SET cursor = NULL, archived = 0, attempts = 0, next_attempt_at = 0 WHERE cycle = ?`,
          close.cycle,
        )
        return null
      }
      this.sql.exec(
        `UPDATE closes SET state = 'purging', attempts = 0, next_attempt_at = 0, last_error = NULL WHERE cycle = ?`,
        close.cycle,
      )
      closeDuration.observe({}, (this.now() - close.closed_at) / 1000)
      this.reportCloseFailures(0)
      this.sendMetrics()
      log('info', 'cycle archived', { actor: this.actor, cycle: close.cycle, rows: close.archived })
      return null
    }

    const sending = Promise.allSettled(
      pages.map((page) =>
        within(
          this.archiveWriter.writePage({
            ...base,
            rows: page.rows,
            rewards: page.rewards,
            archivedThrough: page.archivedThrough,
          }),
          this.archiveCallMs,
          'an archive page',
        ),
      ),
    )
    let next: ArchiveBatch | null = null
    if (this.now() <= deadline) {
      // The output gate holds these requests until the cursor recorded for the previous pages is
      // durable: let that happen first, or the synchronous reads below would hold them back.
      await this.ctx.storage.sync()
      const last = pages[pages.length - 1]!
      next = this.readBatch(close, last.cursor, last.archivedThrough)
    }
    const outcomes = await sending
    const acknowledged = outcomes.findIndex((o) => o.status === 'rejected')
    const done = acknowledged === -1 ? pages.length : acknowledged
    if (done > 0) {
      // Neon has these pages: only now does the cursor move past them. A batch that failed part
      // of the way keeps some of its failures in a row (at most PARTIAL_FAILURES_KEPT, its retry
      // a few seconds off): reset by the page that landed, a Neon refusing a third of its calls
      // kept every board archiving at it each second, sending again the pages after the failed
      // one each time; kept whole, a close landing pages every run backed off to 5 minutes, a
      // million rows taking a day.
      const whole = acknowledged === -1
      const page = pages[done - 1]!
      this.sql.exec(
        whole
          ? `UPDATE closes SET cursor = ?, archived = ?, attempts = 0, next_attempt_at = 0, last_error = NULL WHERE cycle = ?`
          : `UPDATE closes SET cursor = ?, archived = ?, attempts = min(attempts, ${PARTIAL_FAILURES_KEPT}) WHERE cycle = ?`,
        page.cursor,
        page.archivedThrough,
        close.cycle,
      )
      rowsArchived.inc({}, page.archivedThrough - close.archived)
      if (whole) this.reportCloseFailures(0)
      this.sendMetrics()
    }
    if (acknowledged !== -1) throw (outcomes[acknowledged] as PromiseRejectedResult).reason
    return next
  }

  /** Up to ARCHIVE_CONCURRENCY pages of a frozen cycle after a cursor, ranked from `archived`. */
  private readBatch(close: CloseRow, cursor: string | null, archived: number): ArchiveBatch {
    const tiers = JSON.parse(close.rewards) as RewardTier[]
    const lastPaid = lastRewardedRank(tiers)
    const dir = close.sort_order === 'desc' ? -1 : 1
    const batch: ArchiveBatch = { cycle: close.cycle, cursor, archived, pages: [] }
    let after = cursor ? (JSON.parse(cursor) as PageKey) : null
    // The text of the whole batch is bounded as a page's is: pages in flight and the batch read
    // ahead meanwhile are held in memory at once, each several times over on its way to Neon
    // (the array literal, the request's JSON, its bytes), in an object's 128 MB. Light pages
    // (most boards) still go four at a time; heavy ones, one or two.
    let batchChars = 0
    for (let p = 0; p < ARCHIVE_CONCURRENCY && batchChars < ARCHIVE_PAGE_CHARS; p++) {
      const rows = this.pageAfter(close.cycle, after)
      if (rows.length === 0) break
      const columns: ArchiveColumns = {
        playerIds: [],
        ranks: [],
        scores: [],
        subscores: [],
        metadata: [],
        submittedAt: [],
      }
      const rewards: ArchiveReward[] = []
      let chars = 0
      let taken = 0
      for (let i = 0; i < rows.length; i++) {
        const row = rows[i]!
        const playerId = row[0]
        const rank = archived + 1
        const tier = rank <= lastPaid ? rewardFor(tiers, rank) : undefined
        const reward = tier ? JSON.stringify(tier.reward) : null
        // The page's rewards go in the same request: they count too.
        chars +=
          playerId.length + (row[4]?.length ?? 0) + (reward ? playerId.length + reward.length : 0)
        // The rows after it go in the next page (read again from this page's cursor).
        if (i > 0 && chars > ARCHIVE_PAGE_CHARS) break
        taken = i + 1
        archived = rank
        columns.playerIds.push(playerId)
        columns.ranks.push(rank)
        // The inverse of writeEntry's ord_* (exact: only the sign changes).
        columns.scores.push(row[2] * dir + 0)
        columns.subscores.push(row[3] * dir + 0)
        columns.metadata.push(row[4])
        columns.submittedAt.push(row[5])
        if (reward) rewards.push({ playerId, rank, reward })
      }
      const [playerId, seq, ordScore, ordSub] = rows[taken - 1]!
      after = [ordScore, ordSub, seq, playerId]
      batchChars += chars
      batch.pages.push({
        rows: columns,
        rewards,
        archivedThrough: archived,
        cursor: JSON.stringify(after),
      })
    }
    return batch
  }

  /**
   * The next page of a frozen cycle in rank order, after a key (from the start when null), as
   * [player_id, seq, ord_score, ord_sub, metadata, submitted_at]: columns of the rank index only,
   * so SQLite never visits the table, and arrays rather than objects, which cost half as much to
   * hand over from SQLite.
   */
  private pageAfter(cycle: number, after: PageKey | null): PageRow[] {
    const columns = `player_id, seq, ord_score, ord_sub, metadata, submitted_at`
    const cursor = after
      ? this.sql.exec(
          `SELECT ${columns} FROM entries
            WHERE cycle = ? AND (ord_score, ord_sub, seq, player_id) > (?, ?, ?, ?)
            ORDER BY ord_score, ord_sub, seq, player_id LIMIT ?`,
          cycle,
          ...after,
          ARCHIVE_PAGE_SIZE,
        )
      : this.sql.exec(
          `SELECT ${columns} FROM entries
            WHERE cycle = ? ORDER BY ord_score, ord_sub, seq, player_id LIMIT ?`,
          cycle,
          ARCHIVE_PAGE_SIZE,
        )
    return Array.from(cursor.raw<PageRow>())
  }

  private purgeSome(close: CloseRow): void {
    const deleted = this.sql.exec(
      `DELETE FROM entries WHERE cycle = ? AND player_id IN (SELECT player_id FROM entries WHERE cycle = ? LIMIT ?)`,
      close.cycle,
      close.cycle,
      this.purgeBatch,
    ).rowsWritten
    if (deleted === 0) {
      this.sql.exec(
        // A done close is kept as a record of the cycle (one row per cycle, for
        // CLOSE_RECORD_KEPT_MS), so what only its archive needed goes: a board's reward tiers may
        // be KBs, closed every minute.
        `UPDATE closes SET state = 'done', finished_at = ?, rewards = '[]', cursor = NULL WHERE cycle = ?`,
        this.now(),
        close.cycle,
      )
      this.sql.exec(
        `DELETE FROM closes WHERE cycle IN (SELECT cycle FROM closes ORDER BY cycle LIMIT ?)
            AND state = 'done' AND finished_at < ?`,
        CLOSE_RECORDS_PRUNED,
        this.now() - CLOSE_RECORD_KEPT_MS,
      )
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Deletion.

  /**
   * Deletes the board: marks its configuration row in Neon deleted, then deletes everything this
   * object stores. Refused while a closed cycle is still being archived (its standings and
   * rewards would be lost), and while the live cycle holds entries on a board in play (pause it
   * first, or close the cycle): a paused board's live entries are discarded. Closed cycles'
   * archives, rewards and history stay in Neon, and a board made again under the id numbers its
   * cycles after them.
   *
   * Neon first, then the storage, in one step no other call to this object comes into. The row is
   * marked only if it is not past the version checked here: a PUT that saved another since keeps
   * the board (409). If Neon's answer is lost, the object cannot know whether it was marked: it
   * keeps its storage, marked (`deletingVersion`), and the next call or alarm asks Neon again
   * (`settleDeletion`), so that it never serves a board Neon no longer has.
   */
  async deleteBoard(
    boardId: string,
  ): Promise<Reply<{ discardedEntries: number; lastCycle: number }>> {
    const unknown = await this.ensureConfigured(boardId)
    if (unknown) return unknown
    return this.ctx.blockConcurrencyWhile(() => this.deleteNow(boardId))
  }

  private async deleteNow(
    boardId: string,
  ): Promise<Reply<{ discardedEntries: number; lastCycle: number }>> {
    try {
      return await this.deleteSteps(boardId)
    } catch (err) {
      // Out of blockConcurrencyWhile, an error would reset the object (a freeze of an ended cycle
      // that the board's full storage refuses, say): answered instead, the storage as it was.
      log('error', 'board deletion failed', { actor: this.actor, ...errorFields(err) })
      return refuse(
        'internal',
        'The deletion failed; retry it, or look at the logs if it fails again',
      )
    }
  }

  private async deleteSteps(
    boardId: string,
  ): Promise<Reply<{ discardedEntries: number; lastCycle: number }>> {
    // Deleted by a call that waited for this one's configuration read.
    if (!this.config) return refuse('not-found', `No leaderboard '${boardId}'`)
    // An archive run or a catch-up awaiting Neon would write, once it is answered, to the tables
    // the deletion drops: both end within seconds.
    if (this.archiving || this.catchingUp) {
      return refuse(
        'conflict',
        'The board is writing to Neon (an archive page or a catch-up); retry in a few seconds',
        { busy: true },
        { 'retry-after': '5' },
      )
    }
    const now = this.now()
    // A cycle whose end has passed closes as it would have: archived, its rewards paid.
    if (this.rollover(now)) await this.scheduleAlarm()
    const closing = one<{ cycle: number }>(
      this.sql,
      `SELECT cycle FROM closes WHERE state != 'done' ORDER BY cycle LIMIT 1`,
    )
    if (closing) {
      return refuse(
        'conflict',
        `Cycle ${closing.cycle} is still being archived; delete the board once it is done (see its close status)`,
        { closing: closing.cycle },
        { 'retry-after': '60' },
      )
    }
    const entries = this.entryCount()
    if (entries > 0 && this.config.paused !== true) {
      return refuse(
        'conflict',
        `The live cycle holds ${entries} entries: pause the board first (they are then discarded), or close the cycle`,
        { entries, paused: false },
      )
    }
    let deletedVersion: number
    try {
      // A board configured before versions were kept holds 0: Neon's is the one to guard on.
      const version = this.configVersion || ((await boardRecord(this.env, boardId))?.version ?? 0)
      this.setMeta(DELETING, String(version))
      this.deletingVersion = version
      const deleted = await this.neonDeletion(this.env, boardId, version)
      if (deleted.outcome === 'changed') {
        this.clearDeleting()
        return refuse(
          'conflict',
          'The configuration changed since the checks (a PUT): read the board and delete it again',
          { version: deleted.version },
        )
      }
      if (deleted.outcome === 'named') {
        // Every result of theirs would go to a board that is gone (counted, never ranked).
        this.clearDeleting()
        return refuse(
          'conflict',
          `Queues send their results to this board: change their leaderboardId first (${deleted.queues.join(', ')})`,
          { queues: deleted.queues },
        )
      }
      // Marked now: one past the version guarded on. Marked before (a deletion whose answer was
      // lost): the row's own, which a PUT and a second deletion since may have moved further.
      deletedVersion = Math.max(
        version + 1,
        deleted.outcome === 'gone' ? (deleted.version ?? 0) : 0,
      )
    } catch (err) {
      // The row's lock was not had in time: the transaction rolled back, nothing was deleted.
      if (pgErrorCode(err) === LOCK_NOT_AVAILABLE) {
        this.clearDeleting()
        return refuse(
          'conflict',
          'The board is being changed (a PUT, or a queue naming it); retry in a few seconds',
          { busy: true },
          { 'retry-after': '5' },
        )
      }
      // Thrown here, the error would reset the object mid-step. A mark that was set stays, and
      // the alarm asks Neon about it (`settleDeletion`) if no call does first.
      if (this.deletingVersion !== null) await this.alarmNoLaterThan(now + DELETION_RETRY_MS)
      if (isDatabaseUnreachable(err)) {
        log('warn', 'board deletion: Neon not reached', { actor: this.actor, ...errorFields(err) })
        return refuse(
          'unavailable',
          'The database could not be reached; retry the deletion',
          {},
          { 'retry-after': '5' },
        )
      }
      log('error', 'board deletion failed', { actor: this.actor, ...errorFields(err) })
      return refuse(
        'internal',
        'The deletion failed; retry it, or look at the logs if it fails again',
      )
    }
    const lastCycle = this.current!.cycle
    await this.wipe(deletedVersion)
    log('info', 'board deleted', { board: boardId, discardedEntries: entries, lastCycle })
    return { ok: true, discardedEntries: entries, lastCycle }
  }

  /**
   * After a deletion whose Neon answer was lost: null once settled, else why not (Neon
   * unreachable). The row not marked deleted and born at or before the marked version: the
   * deletion has not reached Neon (a PUT may have changed the board since), and the mark goes,
   * once the row is fenced past the marked version so that the deletion, if it still arrives,
   * marks nothing (`fencedBoardRecord`; the cron pushes the version the fence made). The
   * row marked deleted, or born after the mark (deleted and made again since), or none: the board
   * this storage holds is gone, and so does the storage.
   */
  private async settleDeletion(boardId: string): Promise<BoardProblem | null> {
    return this.ctx.blockConcurrencyWhile(async () => {
      const marked = this.deletingVersion
      if (marked === null) return null
      const unavailable = refuse(
        'unavailable',
        'The database is unreachable; retry shortly',
        {},
        { 'retry-after': '5' },
      )
      // Calls queue behind this one: with Neon down, each would wait out its deadline in turn.
      if (this.now() < this.settleRetryAt) return unavailable
      let record: Awaited<ReturnType<typeof fencedBoardRecord>>
      try {
        record = await this.boardRead(this.env, boardId, marked)
      } catch (err) {
        log('warn', 'board deletion not settled', { actor: this.actor, ...errorFields(err) })
        this.settleRetryAt = this.now() + SETTLE_RETRY_MS
        await this.alarmNoLaterThan(this.now() + DELETION_RETRY_MS)
        if (isDatabaseUnreachable(err)) return unavailable
        return refuse('internal', 'The board could not settle its deletion; see the logs')
      }
      // Deleted, or deleted and made again since (born after the mark): this storage is of a
      // board that is gone. Otherwise the deletion never reached Neon (a PUT may have since).
      if (!record || record.deleted || record.bornVersion > marked) {
        // The versions of the board that went: up to its deleted row's, or to the one before the
        // board made since; at least the one the deletion moved Neon to.
        const last = record?.deleted ? record.version : (record?.bornVersion ?? 0) - 1
        await this.wipe(Math.max(marked + 1, last))
        return null
      }
      this.clearDeleting()
      // The fence moved Neon's version of the configuration this object holds: taken as pushed,
      // so that a deletion sent again guards on it rather than finding the board changed.
      if (record.fenced && this.configVersion === marked) {
        this.configVersion = marked + 1
        this.setMeta('config_version', String(marked + 1))
      }
      return null
    })
  }

  /** Brings the alarm forward to `at` if it is later or unset. */
  private async alarmNoLaterThan(at: number): Promise<void> {
    const existing = await this.ctx.storage.getAlarm()
    if (existing === null || existing > at) await this.ctx.storage.setAlarm(at)
  }

  private clearDeleting(): void {
    this.sql.exec(`DELETE FROM meta WHERE key = ?`, DELETING)
    this.deletingVersion = null
  }

  /**
   * Deletes everything stored, the alarm too, and forgets the board: an id nobody made, whose
   * versions up to `deletedVersion` were the deleted board's.
   */
  private async wipe(deletedVersion: number): Promise<void> {
    const boardId = this.boardId
    await this.ctx.storage.deleteAll()
    await this.ctx.storage.deleteAlarm()
    if (boardId !== null) {
      storageBytes.set({ board: boardId }, 0)
      this.reportedBytes = null
      // Now: the board's alarm is gone, and an operator's alert on its size would stand.
      void sendMetricsNow(this.env)
    }
    this.schemaReady = false
    this.boardId = null
    this.config = null
    this.schedule = null
    this.current = null
    this.loadedIndex = new RankIndex('desc')
    this.countedEntries = null
    this.seq = 0
    this.window = null
    this.configVersion = 0
    this.history = new RankIndex('desc')
    this.replaced.clear()
    this.replacedMetadata = 0
    this.historyHorizon = 0
    this.banCount = 0
    this.erasureCount = 0
    this.catchUpPending = false
    this.deletingVersion = null
    this.alarmFailures.forget()
    this.wipes++
    this.deletedVersion = Math.max(this.deletedVersion, deletedVersion)
  }

  // ---------------------------------------------------------------------------------------------
  // The alarm: one schedule for every timed job of the board.

  /** Alarm runs that failed in a row (backOffAlarm). */
  private readonly alarmFailures = new AlarmFailures(this.ctx.storage.sql)
  /** Whether alarm() is running: the runtime shows no alarm set until it ends (tick). */
  private alarmRunning = false

  override async alarm(): Promise<void> {
    if (!this.schemaReady) return
    if (this.deletingVersion !== null && this.boardId !== null) {
      // A deletion whose Neon answer was lost: settled here too, so that the board neither waits
      // for a call nor runs its jobs on storage about to go.
      if (await this.settleDeletion(this.boardId)) {
        await this.ctx.storage.setAlarm(this.now() + DELETION_RETRY_MS)
        return
      }
      if (!this.schemaReady) return
    }
    this.alarmRunning = true
    try {
      const now = this.now()
      // Each job runs whatever the one before did: a freeze its storage refuses (full) must not
      // hold back the archive and the sweep, the jobs that free storage.
      let failure: unknown = null
      const jobs: [string, () => unknown][] = [
        ['rollover', () => this.rollover(now)],
        ['archive', () => this.runArchive()],
        ['sweep', () => this.sweep(now)],
        ['trim history', () => this.trimHistory(now)],
        ['forget erasures', () => this.forgetErasures(now)],
        // Only once its retry is due (an alarm for another job comes sooner): a call coming
        // meanwhile waits for a catch-up under way, and Neon failed it a moment ago.
        ['catch up', () => (this.catchUpDue(now) ? this.catchUp(this.catchUpPagesPerRun) : null)],
      ]
      for (const [job, run] of jobs) {
        try {
          await run()
        } catch (err) {
          // Each failure is told, with its job: the first alone would hide another's (Neon down
          // for the archive while every freeze fails for a full storage).
          log('error', 'alarm job failed', { actor: this.actor, job, ...errorFields(err) })
          failure ??= err
        }
      }
      if (failure !== null) throw failure
      this.alarmFailures.succeeded()
    } catch (err) {
      log('error', 'alarm failed', {
        actor: this.actor,
        failuresInARow: this.alarmFailures.failed(),
        ...errorFields(err),
      })
    } finally {
      try {
        this.reportStorage()
        await this.scheduleAlarm()
        await backOffAlarm(this.ctx.storage, this.alarmFailures.value, this.now())
      } finally {
        this.alarmRunning = false
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
   * bring it back every interval), nor for a board wiped or never made (an alarm would make its
   * storage again). Judged when it would be set.
   */
  private readonly metricsAlarm = guardedAlarm(
    this.ctx.storage,
    () => this.boardId !== null && this.schemaReady && this.alarmFailures.value === 0,
  )

  /** The failures in a row last reported for this board (null: none this instance). */
  private reportedCloseFailures: number | null = null

  /** Sets this board's close failures gauge when it changes. */
  private reportCloseFailures(n: number): void {
    // After a wake the hub may hold a count from before it: the first report says it anew.
    if (this.boardId === null || n === this.reportedCloseFailures) return
    this.reportedCloseFailures = n
    closeFailuresInARow.set({ board: this.boardId }, n)
  }

  /**
   * The object's storage, for operators: entries, and a row per accepted submission kept 24 h for
   * its key (about 0.3 KB each), grow with play, and a full object refuses every write.
   */
  private reportStorage(): void {
    if (this.boardId === null) return
    this.storageReportedAt = Date.now()
    const bytes = this.ctx.storage.sql.databaseSize
    // Only a change is sent: each alarm reports it, and a value sent again would be a count owed,
    // bringing the alarm back for it.
    if (bytes !== this.reportedBytes) {
      this.reportedBytes = bytes
      storageBytes.set({ board: this.boardId }, bytes)
      this.sendMetrics()
    }
    if (bytes > STORAGE_WARN_BYTES) {
      log('warn', 'board storage nears the object limit', { actor: this.actor, bytes })
    }
  }

  /** Deletes expired idempotency keys, a bounded batch at a time. */
  private sweep(now: number): void {
    const due = Number(this.meta('next_sweep') ?? 0)
    if (now < due) return
    // Batches until the expired keys are gone or the budget is spent; a busy board expires keys
    // as fast as it takes them, so one batch per interval would fall behind for good.
    let more = false
    for (let batch = 1; ; batch++) {
      const deleted = this.sql.exec(
        `DELETE FROM idempotency WHERE (player_id, key) IN
           (SELECT player_id, key FROM idempotency WHERE created_at < ? LIMIT ?)`,
        now - IDEMPOTENCY_TTL_MS,
        IDEMPOTENCY_SWEEP_BATCH,
      ).rowsWritten
      more = deleted >= IDEMPOTENCY_SWEEP_BATCH
      if (!more || batch >= SWEEP_MAX_BATCHES) break
    }
    // With keys left over, the next alarm comes right back for them.
    this.setMeta('next_sweep', String(more ? now + 1000 : now + SWEEP_INTERVAL_MS))
  }

  /** Erasures older than any token issued before them refuse nothing more: forgotten. */
  private forgetErasures(now: number): void {
    if (this.erasureCount === 0) return
    this.sql.exec(`DELETE FROM erasures WHERE erased_at <= ?`, now - ERASURE_KEPT_MS)
    this.countErasures()
  }

  private async scheduleAlarm(): Promise<void> {
    const now = this.now()
    const candidates: number[] = []
    if (this.current?.endsAt != null) candidates.push(this.current.endsAt)
    // The oldest unfinished close's retry, the one archiveLoop takes first: a newer close behind
    // it (next_attempt_at 0) would otherwise bring the alarm back at once, again and again, for
    // as long as the older one backs off (a Neon outage across a cycle boundary).
    const pending = one<{ t: number | null }>(
      this.sql,
      `SELECT next_attempt_at AS t FROM closes WHERE state != 'done' ORDER BY cycle LIMIT 1`,
    )
    if (pending?.t != null) candidates.push(Math.max(pending.t, now))
    const hasKeys = one<{ t: number | null }>(
      this.sql,
      `SELECT min(created_at) AS t FROM idempotency`,
    )
    if (hasKeys?.t != null) {
      const due = Number(this.meta('next_sweep') ?? 0)
      candidates.push(Math.max(due, hasKeys.t + IDEMPOTENCY_TTL_MS, now))
    }
    if (this.erasureCount > 0) {
      const oldest = one<{ t: number }>(this.sql, `SELECT min(erased_at) AS t FROM erasures`)!.t
      // Forgotten a day at a time: every erasure's walk writes one on every board, so a wake per
      // erasure kept retired boards waking some hundreds of times a day. Kept up to a day longer,
      // an erasure refuses only tokens that have expired anyway.
      const due = Math.ceil((oldest + ERASURE_KEPT_MS) / ERASURES_FORGOTTEN_EVERY_MS)
      candidates.push(Math.max(due * ERASURES_FORGOTTEN_EVERY_MS, now))
    }
    if (this.catchUpPending) {
      candidates.push(Math.max(Number(this.meta(CATCH_UP_RETRY_AT) ?? 0), now))
    }
    // A deletion Neon's answer to was lost: asked about again (`settleDeletion`).
    if (this.deletingVersion !== null) candidates.push(now + DELETION_RETRY_MS)
    if (candidates.length === 0) return
    const next = Math.min(...candidates)
    const existing = await this.ctx.storage.getAlarm()
    if (existing === null || existing > next || existing < now)
      await this.ctx.storage.setAlarm(next)
  }
}

interface BoardCursor {
  cycle: number
  /** The write sequence number the walk reads the board as of. */
  snapshot: number
  /** Rank of the last entry returned so far. */
  lastRank: number
  key: RankKey | null
}

type Json = string | number | boolean | null | Json[] | { [key: string]: Json }

/**
 * A key on a page: a live one (player and metadata read from SQLite), or a replaced version's,
 * which carries both.
 */
type PageItem = RankKey & { playerId?: string; metadata?: string | null }

/** A player's entry in the current cycle: its key and the metadata submitted with it. */
type Standing = RankKey & { metadata: string | null }

/** A standing replaced in the current cycle, kept for walks that began before (keyed by seq). */
interface ReplacedVersion {
  playerId: string
  score: number
  subscore: number
  metadata: string | null
  /** The seq of the submission that replaced it. */
  replacedAt: number
  at: number
}

/** `cycle.snapshot.lastRank.key`: opaque to clients, checked strictly here. */
function formatBoardCursor(c: BoardCursor & { key: RankKey }): string {
  return `${c.cycle}.${c.snapshot}.${c.lastRank}.${encodeCursor(c.key)}`
}

function parseBoardCursor(cursor: string): (BoardCursor & { key: RankKey }) | null {
  const parts = cursor.split('.')
  if (parts.length !== 4) return null
  const [cycle, snapshot, lastRank] = parts
    .slice(0, 3)
    .map((p) => (/^(0|[1-9][0-9]{0,15})$/.test(p) ? Number(p) : NaN)) as [number, number, number]
  if (
    !(cycle >= 1) ||
    !(snapshot >= 0) ||
    // 0: a walk whose pages so far were cut short before any entry (see snapshotPage).
    !(lastRank >= 0) ||
    ![cycle, snapshot, lastRank].every(Number.isSafeInteger)
  )
    return null
  const key = decodeCursor(parts[3])
  return key ? { cycle, snapshot, lastRank, key } : null
}
