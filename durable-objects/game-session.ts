import { DurableObject } from 'cloudflare:workers'
import { AlarmFailures, backOffAlarm, spreadBackoffMs } from '../workers/lib/alarm-backoff.ts'
import {
  createMatch,
  getRules,
  isRuleError,
  resultOf,
  resultRefusal,
  startRefusal,
  step,
  type AnyRules,
  type GameResult,
  type Input,
  type LogRecord,
  type MatchState,
  type RosterEntry,
  type RuleError,
  viewRecord,
} from '../workers/core/rules/index.ts'
import {
  asStored,
  exceedsUtf8Bytes,
  jsonbExtraBytesIn,
  jsonEqual,
  utf8Length,
} from '../workers/core/rules/json.ts'
import { IDEMPOTENCY_TTL_MS, MATCH_WIN, MATCH_WIN_KEY_PREFIX } from '../workers/core/leaderboard.ts'
import type { Env } from '../workers/env.ts'
import { isDatabaseUnreachable, isNeonOutage } from '../workers/db/client.ts'
import { boardStub } from '../workers/leaderboards/stub.ts'
import { boundedInt } from '../workers/lib/config.ts'
import { errorFields, errorMessage, log, configureLog } from '../workers/lib/log.ts'
import { counter, histogram } from '../workers/lib/metrics.ts'
import { guardedAlarm, sendMetricsAtAlarm, sendMetricsSoon } from '../workers/lib/metrics-flush.ts'
import { problemResponse, type ProblemType, unavailableAcrossRpc } from '../workers/lib/problem.ts'
import {
  all,
  hasTable,
  insertRows,
  one,
  schemaVersion,
  setSchemaVersion,
} from '../workers/lib/sql.ts'
import {
  ACTION_REF_RULE,
  ActionRef,
  ClientMessage,
  CONNECTION_ID_RULE,
  SINCE_FORM,
  ConnectionId,
  SessionSetupSchema,
  type ServerMessage,
  type SessionStatus,
} from '../workers/sessions/schemas.ts'
import {
  NeonSessionStore,
  type NotSubmittedWin,
  type RatingChange,
  type ReplayableSetup,
  type SessionStore,
} from '../workers/sessions/store.ts'
import { canonicalJson } from '../workers/lib/canonical-json.ts'
import { takeToken, type Bucket } from '../workers/lib/token-bucket.ts'
import {
  farTooLarge,
  FLOOD_CLOSE,
  OVERSIZED_CLOSE,
  refusedTooOften,
  type RefusalCounts,
} from '../workers/lib/flood.ts'
import { sha256Hex } from '../workers/lib/hash.ts'
import { within } from '../workers/lib/within.ts'
import { GUEST_ID_PREFIX } from '../workers/lib/auth.ts'
import { answerClose, closeSilent, closingSince, fellSilent } from '../workers/lib/socket-close.ts'

/**
 * GameSession: one match, its single writer. Design (why it is built this way):
 *
 * Storage (SQLite, schema versioned in `meta`):
 * - `meta`: the normalized setup (with the secret seed) and its hash, status, creation time, the
 *   latest MatchState snapshot, the result and its rating changes.
 * - `log`: one row per accepted input (`seq` primary key, the engine's LogRecord as JSON).
 * - `timers`: grace deadlines of players who are not connected (also set at creation for every
 *   player, so a no-show is handled like a leaver); `absent`: players reported absent, who get a
 *   `return` input when they reconnect.
 * - `work`: pending durable work with backoff: `register` (list the session in Neon) and `end`
 *   (record result + ratings → submit to the leaderboard → archive the log in pages → keep the
 *   finished session for the retention period → clear storage).
 *
 * Inputs: every accepted input goes `step()` → one `transactionSync` (append the log record, save
 * a snapshot every `snapshotEvery` records and at the end, mark the end) → broadcast
 * `{"type":"event", seq, event}` to every socket (under rules with `viewEvent`, each player's
 * view of the event: `viewRecord`). The object runs one event at a time and the
 * broadcast is synchronous right after the write, so all clients see one order, and nothing is
 * sent that is not stored. A refused input changes nothing and answers the sender only.
 *
 * Waking (after eviction or a restart): load the latest snapshot and re-apply the log records
 * after it through the same `step()`, checking each record reproduces itself; sockets survive
 * hibernation, their player is in their attachment.
 *
 * Sockets (hibernation API): the Worker verifies the session token and forwards the upgrade with
 * the player in `x-nexus-session-player` (the object is reachable only through the Worker). A
 * fresh join gets `welcome {seq, state}`; `?since=<seq>` gets `resumed {since, seq}` then exactly
 * the events `since+1 … seq` from the log, then live ones: no gap, no duplicate. A long resume
 * goes out RESUME_CHUNK events per turn, so other players' actions are not held up behind it:
 * the socket joins the live broadcasts in the same turn as its last chunk. Frames are capped
 * at 8 KiB and rate-limited per player, across their sockets (token bucket: 20/s, burst 40;
 * a bucket per socket would refill on every reconnect; buckets are in memory, so a wake refills
 * them). A client's close is answered with its code; reserved ones (1005, 1006, 1015)
 * cannot be sent, so those get a close without a code.
 *
 * Presence: the last socket of a player closing starts a grace timer; past it, the rules get an
 * `absent` input (dice-race, hot-potato: forfeit). Reconnecting in time cancels the timer. Sockets
 * lost with the object report no close: its next wake (load()) starts their grace, and while the
 * game is live the alarm is never more than a grace ahead, so that wake comes. The graces and the
 * retention below come from the environment (`sessionTimings`).
 *
 * Clock: `tick` is milliseconds since creation, or, for rules with a `tickRate`, ticks since
 * creation; an alarm then feeds a `tick` input at that rate while the game runs, or, for rules
 * that name their next deadline (`nextTick`, dice-race's turn timer), at that tick only, or, for
 * rules that name the next moment a tick can matter (`quietUntil`, hot-potato's fuse), then with
 * the tick of the moment. Every timed job shares the one alarm; `now` is a field tests move
 * instead of sleeping.
 *
 * The end: when `rules.result()` turns non-null, the status becomes `finished` in the same write
 * as the last record, everyone gets the event and `ended {result}`, sockets close, and the `end`
 * job starts. Neon being down delays it (retried with backoff); nothing is lost because the
 * object keeps everything until Neon has acknowledged it. After the retention period the setup
 * hash goes to Neon (so a late `create` stays idempotent) and the storage is cleared whole; reads
 * then come from Neon.
 *
 * Leaderboard submissions at the end: each member of the team placed first in a result with a
 * winner gets score 1 (a win; meant for an `incr` board), idempotency key `session:<id>`. A board
 * that is rate-limiting the player or cannot read its configuration (`unavailable`) is retried
 * with backoff; a refusal no retry can fix (no such board, out of bounds) is logged and skipped.
 * A call without an answer is retried only while the board remembers its key (less an hour):
 * later, a retry could count the win twice, so it is given up on (at most once, logged).
 */

const SCHEMA_VERSION = 1
/** A snapshot of the match every this many log records (wake = snapshot + at most this many steps). */
export const SNAPSHOT_EVERY = 50
/** How long a disconnected player may stay away before the rules hear of it (default). */
export const GRACE_MS = 60_000
/** How long a player may take to connect at all (default). */
export const JOIN_GRACE_MS = 120_000
/** How long a finished session stays in the object after its archive is complete (default). */
/** How long an admin's create waits for the session's listing in Neon before answering. */
export const LISTING_WAIT_MS = 3_000

export const RETENTION_MS = 24 * 60 * 60 * 1000
/** Log records per archive write (one statement each), at most. */
export const ARCHIVE_PAGE_SIZE = 500
/**
 * Record text per archive write, at most (always at least one record). Every layer on the way to
 * Neon escapes it again (the array literal, then the request's JSON), so a quote-heavy page
 * grows up to fourfold: 2 MiB stays under Neon's 10 MiB request limit, which a page of 500 large
 * relay messages crossed on every retry.
 */
export const ARCHIVE_PAGE_CHARS = 2 * 1024 * 1024
export const MAX_FRAME_BYTES = 8 * 1024
export const RATE_PER_SECOND = 20
export const RATE_BURST = 40
export const MAX_SOCKETS_PER_PLAYER = 4
/**
 * Sockets this session closed whose client has not answered the close within
 * UNANSWERED_CLOSE_MS, a player may hold before their connects are refused (409): each stays
 * listed until its client answers or the runtime drops it, and a client that reconnects without
 * ever answering (a fifth connect closes the oldest) could fill the object's sockets for everyone
 * (32 a player, 2,048 for a full roster of 64, far under the runtime's 32,768). An honest client
 * answers at once; one whose network keeps dropping leaves one unanswered at each drop (its
 * reconnect closes the dead socket) until the runtime notices the connection gone: not 32 of
 * them in that time.
 */
export const MAX_UNANSWERED_CLOSES = 32
/** How long a closed socket's client has to answer before it counts (a round trip and more). */
export const UNANSWERED_CLOSE_MS = 5_000
/** The close of a player's oldest socket that their 5th connection replaced. */
export const REPLACED_CLOSE = { code: 4001, reason: 'replaced by a newer connection' } as const
/** The close of a socket its own client reconnected past (the same `?conn=`). */
export const SUPERSEDED_CLOSE = {
  code: 4003,
  reason: 'superseded by the same client reconnecting',
} as const
/**
 * The close of an erased player's sockets (their erasure, or this session's listing finding it):
 * the game goes on without them, as after any player's leaving.
 */
export const ERASED_CLOSE = { code: 4004, reason: 'the player was erased' } as const
/**
 * The close of a socket that fell too far behind (MAX_UNACKED_CHARS): its client reconnects and
 * resumes from the last event it read, from the log if further back than a resume sends.
 */
export const BEHIND_CLOSE = { code: 4008, reason: 'too far behind: resume' } as const
/**
 * Characters of events sent to a socket that has acknowledged what it reads (`ack`) and not yet
 * acknowledged, past which, with the oldest of them sent BEHIND_FOR_MS ago, it is closed
 * (BEHIND_CLOSE). The runtime gives a server socket no back-pressure: what a client does not
 * read waits in the object's memory (128 MB for everyone), so a phone on a weak link in a busy
 * room would hold more and more of it. The SDK acknowledges up to four times a second, so a
 * client that keeps up never has an event unacknowledged for long, however large a burst.
 */
export const MAX_UNACKED_CHARS = 1024 * 1024
export const BEHIND_FOR_MS = 10_000
/** The alarm looks for silent sockets (SILENT_SOCKET_MS) at most this often. */
export const SILENT_CHECK_EVERY_MS = 10_000
/** Catch-up runs (of 100 deadlines each) an admin's end plays before it answers "send again". */
const MAX_END_CATCH_UP_RUNS = 20
/**
 * Deadlines one catch-up plays at most (each a logged record): past it, the alarm, due at once,
 * plays the rest, and frames are served in between.
 */
const MAX_DEADLINES_PER_CATCH_UP = 100
/** Missed events a resume sends per turn of the object. */
export const RESUME_CHUNK = 500
/**
 * Missed events one resume may send in all. The runtime gives a server socket no back-pressure:
 * whatever a resume sends is buffered in the object's memory (128 MB) until the client reads it,
 * so a resume from the start of a long relay game (events up to 8 KiB each), on several sockets
 * at once, could reset the object and drop every player. A client further behind reads the log
 * (`GET /v1/sessions/:id/events`, 500 a page), then resumes from the last event it read.
 */
export const MAX_RESUME_EVENTS = 2_000
/**
 * Missed events one player's resumes may have sent in a minute, across their sockets: a few full
 * resumes (a flaky network), not a loop of upgrades each asking for the whole backlog again,
 * which costs the object a read and a send of up to 2,000 events per upgrade. Past it a resume
 * is 429 with `Retry-After`; a welcome without `since` costs a snapshot and is not counted.
 */
export const RESUME_EVENTS_PER_MINUTE = 4 * MAX_RESUME_EVENTS
const MAX_BACKOFF_MS = 5 * 60 * 1000
/** How soon a session that does not load in this version looks again, at first and at most. */
export const UNLOADABLE_RETRY_MS = 5 * 60 * 1000
export const UNLOADABLE_RETRY_MAX_MS = 6 * 60 * 60 * 1000
/** When a session first failed to load, kept (storage's key-value API) until it loads again. */
const UNLOADABLE_SINCE_KEY = 'unloadableSince'
const WORK_BUDGET_MS = 20_000
/** The Worker names the verified player in this header; clients cannot reach the object. */
export const PLAYER_HEADER = 'x-nexus-session-player'

const sessionsCreated = counter('nexus_session_created_total', 'Sessions created, by rules')
const sessionsEnded = counter(
  'nexus_session_ended_total',
  'Games over, by rules and how they ended (finished, forfeit, abandoned, cancelled)',
)
const inputsAccepted = counter('nexus_session_inputs_total', 'Inputs accepted into session logs')
const inputsRefused = counter('nexus_session_refusals_total', 'Socket frames refused, by code')
const endsRecorded = counter('nexus_session_results_total', 'Results recorded in Neon')
const endRetries = counter('nexus_session_end_retries_total', 'End-of-game work retried')
const resultsNotSubmitted = counter(
  'nexus_session_results_not_submitted_total',
  "Winners' results a board refused, or that were not sent again once a retry could count them twice",
)
/**
 * A board call that got no answer is sent again only this long after it began: within the
 * board's memory of idempotency keys, less an hour for the two objects' clocks and the call.
 */
const UNANSWERED_RETRY_MS = IDEMPOTENCY_TTL_MS - 60 * 60 * 1000
/** A board's refusal kept with a win given up on: its detail, cut to this. */
const NOT_SUBMITTED_DETAIL_CHARS = 200
const gameLength = histogram(
  'nexus_session_duration_seconds',
  'From creation to the end of the game',
  [10, 30, 60, 120, 300, 600, 1800, 3600, 7200],
)

/** What the matchmaker (or the admin route) hands a new session. */
export interface SessionSetup {
  /** The object is addressed by `env.GAME_SESSION.getByName(sessionId)`. */
  sessionId: string
  /** A name in `rulesNames` (workers/core/rules/index.ts). */
  rules: string
  /** In turn order. */
  roster: { playerId: string; team: number }[]
  /** Secret; drawn with crypto.getRandomValues. */
  seed: string
  /** Rules options (e.g. dice-race `{ target }`). */
  options?: unknown
  queue?: string | null
  region?: string | null
  /** Where results are submitted at the end (may be null). */
  leaderboardId?: string | null
}

interface NormalizedSetup {
  sessionId: string
  rules: string
  roster: RosterEntry[]
  seed: string
  options: unknown
  queue: string | null
  region: string | null
  leaderboardId: string | null
}

export type CreateResult =
  { ok: true; created: boolean } | { ok: false; problem: ProblemType; detail: string }

/** An admin's end that came while the clock owes more turns than one request plays. */
export interface CatchingUp {
  ok: false
  problem: 'unavailable'
  detail: string
  retryAfter: number
}

/** No session here: none by this id, or one whose storage was cleared (Neon has it then). */
export interface NotFound {
  ok: false
  problem: 'not-found'
  detail: string
}

export interface SessionInfo {
  ok: true
  sessionId: string
  rules: string
  status: SessionStatus
  roster: RosterEntry[]
  queue: string | null
  leaderboardId: string | null
  seq: number
  createdAt: number
  /**
   * The match's time (`madeAt`): what a read by a player back under an erased id is judged by, as
   * the result is.
   */
  madeAt: number
  /** Players of the roster erased while it ran: their reads are refused, as their sockets are. */
  erasedPlayers: string[]
  endedAt: number | null
  result: GameResult | null
  ratingChanges: RatingChange[] | null
  /** The seed and options, once the game is over (null while live): for an admin's replay. */
  setup: ReplayableSetup | null
  /** Where the end's durable work stands (null while live): for an admin's read. */
  end: EndStatus | null
}

export type EndStage = 'record' | 'submit' | 'archive' | 'retain' | 'done'

export interface EndStatus {
  stage: EndStage
  archived: number
  attempts: number
  nextAttemptAt: number | null
  lastError: string | null
  /** Wins the end gave up putting on the queue's board (refused, or never answered). */
  notSubmitted: NotSubmittedWin[]
}

interface WorkRow {
  job: 'register' | 'end'
  stage: string
  cursor: number
  attempts: number
  next_attempt_at: number
  last_error: string | null
}

interface Attachment {
  playerId: string
  /**
   * When the socket's last frame came, to within HEARD_AT_EVERY_MS: `lastFrameAt` is memory
   * only, and a client that pings only when it sends nothing else would otherwise be taken as
   * silent after the object slept.
   */
  heardAt?: number
  /** When it was accepted; sockets from before this field count as the oldest. */
  connectedAt?: number
  /** The client's name for the connection (`?conn=`), if it gave one. */
  conn?: string
  /**
   * When a connect of its player first found it closing, its client not having answered the
   * close (unansweredCloses): here, as the object's memory is not across a hibernation.
   */
  closingSince?: number
}

/** How stale an attachment's `heardAt` may get: it is rewritten at most this often. */
const HEARD_AT_EVERY_MS = 30_000

/** Accepted ranges of the timing variables: seconds, seconds, hours. */
export const SESSION_TIMING_BOUNDS = {
  SESSION_GRACE_SECONDS: { min: 5, max: 3600 },
  SESSION_JOIN_GRACE_SECONDS: { min: 5, max: 3600 },
  SESSION_RETENTION_HOURS: { min: 1, max: 720 },
} as const

type TimingVar = keyof typeof SESSION_TIMING_BOUNDS

export interface SessionTimings {
  graceMs: number
  joinGraceMs: number
  retentionMs: number
}

/**
 * The session timings from the environment, each bounded; a missing or out-of-range value gives
 * the default (a typo must neither forfeit players on every blip nor keep sessions forever).
 * @example sessionTimings({ SESSION_GRACE_SECONDS: '30' }).graceMs // 30_000
 */
export function sessionTimings(env: Partial<Pick<Env, TimingVar>>): SessionTimings {
  const read = (name: TimingVar, fallbackMs: number, unitMs: number): number => {
    const { min, max } = SESSION_TIMING_BOUNDS[name]
    return boundedInt(env[name], fallbackMs / unitMs, min, max) * unitMs
  }
  return {
    graceMs: read('SESSION_GRACE_SECONDS', GRACE_MS, 1000),
    joinGraceMs: read('SESSION_JOIN_GRACE_SECONDS', JOIN_GRACE_MS, 1000),
    retentionMs: read('SESSION_RETENTION_HOURS', RETENTION_MS, 3_600_000),
  }
}

/** Thrown by a work step to retry later without it counting as a crash (e.g. rate-limited). */
class RetryLater extends Error {}

/**
 * One game session: roster, event log, rules, clock. See the design notes above.
 */
/** A socket's acknowledgements (GameSession.acks). */
interface AckWindow {
  /** Characters of events sent since its first `ack`. */
  sent: number
  /** Of those, the ones its latest `ack` covers. */
  acked: number
  /** The latest event it acknowledged. */
  seq: number
  /** Each event sent, `sent` after it, and when it was sent, from `head` on. */
  seqs: number[]
  sentAfter: number[]
  sentAt: number[]
  head: number
}

export class GameSession extends DurableObject<Env> {
  private readonly sql: SqlStorage
  private setup: NormalizedSetup | null = null
  private setupHash: string | null = null
  private rules: AnyRules | null = null
  private match: MatchState | null = null
  private status: SessionStatus | null = null
  private createdAt = 0
  /**
   * The match's time: when its earliest ticket joined its pool (MatchPool.earliestJoin), or the
   * creation for an admin's session. A player erased since has nothing of this match kept (no
   * rating or profile, no win on a board); one erased before it whose id came back (an identity
   * provider's) plays as a new player.
   */
  private madeAt = 0
  /**
   * Players of the roster erased while the session ran (removeErasedPlayer): no socket or read of
   * theirs is taken.
   */
  private erasedPlayers = new Set<string>()
  /**
   * The join grace's end, as every player's first timer holds it: a player whose timer still
   * says so has never connected (a connect deletes it; a later absence writes another time).
   * Kept in the timers themselves, not in a record each connect updates, so that a Worker of the
   * version before, which knows nothing of it, leaves it true. A later absence's timer never
   * lands on it (absenceDue).
   */
  private joinDue = 0
  private purged = false
  /** When the alarm next looks for silent sockets (SILENT_CHECK_EVERY_MS). */
  private silentCheckAt = 0
  /** When each socket last sent a frame the object saw (pings are the runtime's: fellSilent). */
  private readonly lastFrameAt = new WeakMap<WebSocket, number>()
  /** Frame buckets by player (at most the roster's 64). */
  private readonly buckets = new Map<string, Bucket>()
  /**
   * The accepted sockets, listed once per wake and then kept up to date: listing them on every
   * broadcast was a tenth of a busy session's CPU.
   */
  private sockets: Set<WebSocket> | null = null
  private working: Promise<void> | null = null
  /** Replaceable so tests can inject faults; production writes to Neon. */
  store: SessionStore
  /** The session's clock; tests move it instead of sleeping. */
  now: () => number = Date.now
  /** Snapshot interval; tests lower it to cover snapshot + tail replay on wake. */
  snapshotEvery = SNAPSHOT_EVERY
  /** How long the end's call to a board may take before the stage backs off (tests lower it). */
  boardCallMs = 20_000
  /** Events a resume sends per turn; tests lower it to cover a resume in several turns. */
  resumeChunk = RESUME_CHUNK
  /** Events a resume may send in all; tests lower it. */
  maxResume = MAX_RESUME_EVENTS
  /** Events one player's resumes may send per minute; tests lower it. */
  resumedPerMinute = RESUME_EVENTS_PER_MINUTE
  /**
   * Each player's resume budget: events left, refilled continuously at resumedPerMinute a minute
   * up to a minute's worth, as of `at`. A bucket, not a calendar minute, whose turn let a whole
   * minute's budget be spent at its end and another at the next one's start. Kept in `meta` too
   * (one row a player, written by each resume, which sends up to thousands of events anyway): an
   * idle object sleeps within seconds, and a budget forgotten with it gave each wake a fresh one.
   */
  private readonly resumeBudgets = new Map<string, { left: number; at: number }>()
  /**
   * Set by the latest catch-up when it stopped at MAX_DEADLINES_PER_CATCH_UP with deadlines still
   * passed: the alarm, due at once, plays the rest, and actions wait for it.
   */
  private clockBehind = false
  /**
   * A deadline (`nextTick`) the clock reached and the rules did nothing at, until the next input
   * changes the game: not woken for again. The rules should have named a later one (docs/rules.md);
   * woken for at once, again and again, it would run the alarm back to back for the whole game.
   */
  private stalledDeadline: number | null = null
  /** A deadline the rules named that is not a number was logged (once an instance). */
  private badDeadlineLogged = false
  /**
   * Sockets still being sent the events they missed: live broadcasts skip them (their resume
   * reads those events from the log), and they join in the turn of their last chunk.
   */
  private readonly resuming = new Set<WebSocket>()
  /**
   * What was sent to each socket that acknowledges what it reads, since its first `ack` (kept in
   * memory only: a wake, which comes after a quiet spell, starts each again at its next `ack`):
   * characters sent, characters it acknowledged, and the running count after each event sent,
   * from `head` on, to find how much an `ack` of a given event covers.
   */
  private readonly acks = new WeakMap<WebSocket, AckWindow>()
  /** Characters sent and not acknowledged past which a socket is closed; tests lower it. */
  maxUnacked = MAX_UNACKED_CHARS
  /** How long the oldest of them must have waited too; tests lower it. */
  behindForMs = BEHIND_FOR_MS
  /** From SESSION_GRACE_SECONDS, SESSION_JOIN_GRACE_SECONDS, SESSION_RETENTION_HOURS. */
  graceMs: number
  joinGraceMs: number
  retentionMs: number

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env)
    // On Cloudflare an object may run in an isolate no request of the Worker has set it in.
    configureLog(env)
    this.sql = ctx.storage.sql
    const timings = sessionTimings(env)
    this.graceMs = timings.graceMs
    this.joinGraceMs = timings.joinGraceMs
    this.retentionMs = timings.retentionMs
    this.store = new NeonSessionStore(env)
    ctx.setWebSocketAutoResponse(
      new WebSocketRequestResponsePair('{"type":"ping"}', '{"type":"pong"}'),
    )
    void ctx.blockConcurrencyWhile(async () => {
      try {
        this.load()
      } catch (err) {
        // Its rules are not in this version, or its log does not replay through them (a release
        // that broke replay, a rollback). Thrown here, the object would reset at every wake, the
        // alarm's included, and the alarm be dropped after its retries: once code that loads it
        // is deployed, nothing would wake it again, and its graces, result and archive would
        // wait for ever. It stays armed instead, looking again every few minutes.
        this.loadFailure = errorMessage(err)
        log('error', 'session does not load', { actor: this.actor, ...errorFields(err) })
        await this.armWhileUnloadable()
        return
      }
      // Loaded again after versions that could not (rolled forward): the count starts over.
      if (await ctx.storage.get(UNLOADABLE_SINCE_KEY))
        await ctx.storage.delete(UNLOADABLE_SINCE_KEY)
      // Timers load() wrote for sockets lost with the last instance (a deploy, a restart) need
      // an alarm, or a session nobody returns to would never forfeit, end or be archived.
      await this.scheduleAlarm()
    })
  }

  /** Why this session did not load in this version (see the constructor), or null. */
  private loadFailure: string | null = null

  /**
   * Sets the alarm of a session that does not load to look again: 5 minutes after its first
   * failure, then half the time it has been failing, up to 6 hours. A rollback rolled forward
   * soon is picked up in minutes; a session whose rules were removed for good costs a wake or
   * so a quarter of a day, not one every 5 minutes for ever.
   */
  private async armWhileUnloadable(): Promise<void> {
    const now = this.now()
    let since = await this.ctx.storage.get<number>(UNLOADABLE_SINCE_KEY)
    if (since === undefined) {
      since = now
      await this.ctx.storage.put(UNLOADABLE_SINCE_KEY, since)
    }
    const wait = Math.min(UNLOADABLE_RETRY_MAX_MS, Math.max(UNLOADABLE_RETRY_MS, (now - since) / 2))
    await this.ctx.storage.setAlarm(now + wait)
  }

  /**
   * Refuses a call to a session that did not load: what it holds cannot be read or changed. The
   * Worker answers 503 with Retry-After; why is in the object's log line, not the answer.
   */
  private refuseUnloadable(): void {
    if (this.loadFailure !== null) {
      throw unavailableAcrossRpc('This session cannot be loaded now; retry later')
    }
  }

  private get actor(): string {
    return `GameSession:${this.setup?.sessionId ?? this.ctx.id.toString()}`
  }

  // ---------------------------------------------------------------------------------------------
  // Loading

  private createSchema(): void {
    if (schemaVersion(this.sql) < 1) {
      this.sql.exec(`
        CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, record TEXT NOT NULL);
        CREATE TABLE IF NOT EXISTS timers (player_id TEXT PRIMARY KEY, due INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS absent (player_id TEXT PRIMARY KEY) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS work (
          job TEXT PRIMARY KEY, stage TEXT NOT NULL, cursor INTEGER NOT NULL DEFAULT 0,
          attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at INTEGER NOT NULL DEFAULT 0,
          last_error TEXT
        ) WITHOUT ROWID;
      `)
      setSchemaVersion(this.sql, SCHEMA_VERSION)
    }
  }

  private load(): void {
    // An object nobody created writes nothing: probing ids leaves no storage behind.
    if (!hasTable(this.sql, 'meta')) return
    this.createSchema()
    this.setupHash = this.getMeta('setup_hash') ?? null
    this.purged = this.getMeta('purged') === '1'
    const setup = this.getMeta('setup')
    if (!setup) return
    this.setup = JSON.parse(setup) as NormalizedSetup
    this.rules = getRules(this.setup.rules) ?? null
    if (!this.rules) throw new Error(`${this.actor}: unknown rules ${this.setup.rules}`)
    this.status = (this.getMeta('status') ?? 'live') as SessionStatus
    this.createdAt = Number(this.getMeta('created_at') ?? 0)
    this.madeAt = Number(this.getMeta('made_at') ?? this.createdAt)
    this.erasedPlayers = new Set(JSON.parse(this.getMeta('erased_players') ?? '[]') as string[])
    // Sessions from before `join_due` wrote their join timers at creation + the join grace.
    this.joinDue = Number(this.getMeta('join_due') ?? this.createdAt + this.joinGraceMs)
    let match = JSON.parse(this.getMeta('snapshot')!) as MatchState
    // The tail after the snapshot goes through the same step() that produced it.
    for (const row of this.sql.exec<{ record: string }>(
      `SELECT record FROM log WHERE seq > ? ORDER BY seq`,
      match.seq,
    )) {
      const record = JSON.parse(row.record) as LogRecord
      const out = step(this.rules, match, record.input, { pastResult: true })
      if (isRuleError(out) || !out.record || !jsonEqual(asStored(out.record), record)) {
        throw new Error(`${this.actor}: log record ${record.seq} does not replay`)
      }
      match = out.match
    }
    this.match = match
    if (this.overByTheRules()) {
      // Every input is refused `game_over` until an admin ends it (cancelled). Not ended here:
      // a `result` wrong in a release would end and rate every live game it woke, past what a
      // rollback could undo.
      log('warn', 'game over by the rules, with no input that ended it: end it (admin)', {
        actor: this.actor,
        rules: this.rules.name,
      })
    }
    if (this.status === 'live') {
      // Sockets closed while the object was gone (eviction, restart) never reported it.
      const due = this.absenceDue()
      const absent = new Set(
        all<{ player_id: string }>(this.sql, `SELECT player_id FROM absent`).map(
          (r) => r.player_id,
        ),
      )
      for (const p of this.setup.roster) {
        if (!absent.has(p.playerId) && this.openSockets(p.playerId).length === 0) {
          this.sql.exec(
            `INSERT OR IGNORE INTO timers (player_id, due) VALUES (?, ?)`,
            p.playerId,
            due,
          )
        }
      }
    }
  }

  private getMeta(key: string): string | undefined {
    return one<{ value: string }>(this.sql, `SELECT value FROM meta WHERE key = ?`, key)?.value
  }

  private setMeta(key: string, value: string): void {
    this.sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)`, key, value)
  }

  // ---------------------------------------------------------------------------------------------
  // Creation

  /**
   * Creates the session. Idempotent: the same setup again answers `created: false` and changes
   * nothing (also after the storage was cleared); a different setup under this id is a conflict.
   *
   * `listing: 'deferred'` (the matchmaker) returns as soon as the session exists and lists it in
   * Neon from the alarm right after, so players hear of their match without waiting for a Neon
   * round trip; the default (admin creation) returns once it is listed, or once a first attempt
   * failed (the alarm retries).
   */
  async create(
    input: SessionSetup,
    opts: {
      listing?: 'now' | 'deferred'
      /**
       * A create that may be sent again after the session was played and its storage cleared (a
       * keyed admin create): finding nothing here, it asks Neon for the setup hash a clearing
       * keeps, and answers from it rather than start the session over. Read here, not by the
       * caller before the call: a clearing between the two, and a reset of this object after
       * it, left nothing to tell the create from a first one.
       */
      keyed?: boolean
      /**
       * That hash as the caller read it from Neon: what a Worker of the version before `keyed`
       * sends (a gradual deployment), answered from as before.
       */
      archivedSetupHash?: string
      /**
       * When the match's earliest ticket joined its pool (ms): a creation retried for minutes
       * still judges its players' erasures by it (`madeAt`), not by when the session came to
       * exist, and a ticket that joined before an erasure counts as the erased player's.
       */
      matchedAt?: number
    } = {},
  ): Promise<CreateResult> {
    this.refuseUnloadable()
    const parsed = SessionSetupSchema.safeParse(input)
    if (!parsed.success) {
      const issue = parsed.error.issues[0]
      return {
        ok: false,
        problem: 'validation',
        detail: `${issue?.path.join('.') || '(root)'}: ${issue?.message ?? 'invalid'}`,
      }
    }
    const s = parsed.data
    const setup: NormalizedSetup = {
      sessionId: s.sessionId,
      rules: s.rules,
      roster: s.roster.map((p) => ({ playerId: p.playerId, team: p.team })),
      seed: s.seed,
      options: s.options ?? null,
      queue: s.queue ?? null,
      region: s.region ?? null,
      leaderboardId: s.leaderboardId ?? null,
    }
    const hash = await sha256Hex(canonicalJson(setup))
    // From here to the write nothing awaits, so a racing create sees this one's result.
    if (this.setupHash !== null) {
      if (this.setupHash === hash) {
        // A retried create may follow one that committed but was cut off before its alarm.
        await this.scheduleAlarm()
        return { ok: true, created: false }
      }
      return {
        ok: false,
        problem: 'conflict',
        detail: `Session '${s.sessionId}' exists with a different setup`,
      }
    }
    if (opts.keyed === true || opts.archivedSetupHash !== undefined) {
      // The clearing writes the hash to Neon before it deletes anything: read after it, this
      // finds the hash.
      let archived: string | null
      try {
        archived = opts.archivedSetupHash ?? (await this.store.archivedSetupHash(s.sessionId))
      } catch (err) {
        if (!isDatabaseUnreachable(err)) throw err
        return {
          ok: false,
          problem: 'unavailable',
          detail: 'The database is unreachable; send the create again shortly',
        }
      }
      if (archived !== null) {
        if (archived === hash) return { ok: true, created: false }
        return {
          ok: false,
          problem: 'conflict',
          detail: `Session '${s.sessionId}' was played with a different setup`,
        }
      }
      // A create racing this one made it while Neon answered: answered by that one's result.
      if (this.setupHash !== null) return this.create(input, opts)
    }
    // Cleared here while this create read Neon: the next create's read there finds the hash.
    if (this.purged) {
      return {
        ok: false,
        problem: 'unavailable',
        detail: `Session '${s.sessionId}' was just archived; send the create again`,
      }
    }
    const rules = getRules(setup.rules)!
    const match = createMatch(rules, {
      roster: setup.roster,
      seed: setup.seed,
      ...(setup.options !== null ? { options: setup.options } : {}),
    })
    if (isRuleError(match)) {
      return { ok: false, problem: 'validation', detail: match.error.message }
    }
    const over = startRefusal(rules, match)
    if (over !== null) return { ok: false, problem: 'validation', detail: over }
    // Played from its stored form, as a wake would: a value JSON does not keep (a Map, NaN)
    // differs from the first action on, not only once the object has slept.
    const snapshot = JSON.stringify(match)
    const stored = JSON.parse(snapshot) as MatchState
    const now = this.now()
    const madeAt =
      typeof opts.matchedAt === 'number' && Number.isFinite(opts.matchedAt)
        ? Math.min(opts.matchedAt, now)
        : now
    this.ctx.storage.transactionSync(() => {
      this.createSchema()
      // A statement per table, not per row: a match made waits on this.
      const meta: [string, string][] = [
        ['setup', JSON.stringify(setup)],
        ['setup_hash', hash],
        ['session_id', setup.sessionId],
        ['created_at', String(now)],
        ['made_at', String(madeAt)],
        ['join_due', String(now + this.joinGraceMs)],
        ['status', 'live'],
        ['snapshot', snapshot],
      ]
      insertRows(this.sql, `INSERT OR REPLACE INTO meta (key, value)`, meta)
      insertRows(
        this.sql,
        `INSERT OR REPLACE INTO timers (player_id, due)`,
        setup.roster.map((p) => [p.playerId, now + this.joinGraceMs]),
      )
      this.sql.exec(`INSERT OR REPLACE INTO work (job, stage) VALUES ('register', 'pending')`)
    })
    this.setup = setup
    this.setupHash = hash
    this.rules = rules
    this.match = stored
    this.status = 'live'
    this.createdAt = now
    this.madeAt = madeAt
    this.joinDue = now + this.joinGraceMs
    sessionsCreated.inc({ rules: setup.rules })
    log('info', 'session created', {
      actor: this.actor,
      rules: setup.rules,
      // Who played it, so that a player's complaint finds the session by grep.
      players: setup.roster.map((p) => p.playerId),
    })
    if (opts.listing === 'deferred') {
      // The listing is due now, and nothing of a new session is due before it: the alarm is now
      // (what scheduleAlarm would find, in three more steps for each match a pool makes).
      await this.ctx.storage.setAlarm(now)
    } else {
      // The alarm is armed for the game's own deadlines while the listing awaits Neon: an object
      // reset during that call would otherwise leave a session nothing ever wakes (never ended,
      // listed or cleared). A failed listing does not fail the creation: the alarm retries it.
      // The answer waits for the listing a moment, not for a Neon that hangs (its 8 s): the
      // listing goes on, and arms the alarm for a retry, after the answer.
      const listing = this.runEndWork().finally(() => this.scheduleAlarm())
      await this.scheduleAlarm()
      await within(listing, LISTING_WAIT_MS, 'session listing').catch(() => {})
    }
    return { ok: true, created: true }
  }

  // ---------------------------------------------------------------------------------------------
  // Reads

  /** Status, roster and result; `not-found` when there is no live copy here. */
  info(): SessionInfo | NotFound {
    this.refuseUnloadable()
    if (!this.setup || !this.match || !this.status) return this.notFound()
    const result = this.getMeta('result')
    const changes = this.getMeta('rating_changes')
    const endedAt = this.getMeta('ended_at')
    return {
      ok: true,
      sessionId: this.setup.sessionId,
      rules: this.setup.rules,
      status: this.status,
      roster: this.setup.roster,
      queue: this.setup.queue,
      leaderboardId: this.setup.leaderboardId,
      seq: this.match.seq,
      createdAt: this.createdAt,
      madeAt: this.madeAt,
      erasedPlayers: [...this.erasedPlayers],
      endedAt: endedAt ? Number(endedAt) : null,
      result: result ? (JSON.parse(result) as GameResult) : null,
      ratingChanges: changes ? (JSON.parse(changes) as RatingChange[]) : null,
      setup:
        this.status === 'live'
          ? null
          : { seed: this.setup.seed, options: this.setup.options ?? null },
      end: this.endStatus(),
    }
  }

  /**
   * Ends a live game from outside its rules (an admin cancelling it): an `end` input logged and
   * broadcast like any other, the result `cancelled` (no winner, nobody rated), then the usual
   * end work (the result in Neon, the log archived). A game already over is answered as it ended,
   * so a retry changes nothing.
   */
  async end(): Promise<SessionInfo | NotFound | CatchingUp> {
    this.refuseUnloadable()
    if (!this.setup || !this.match || !this.status) return this.notFound()
    if (this.status === 'live') {
      const now = this.now()
      // What the game's clock did before now happens first, as for any input: ticks, and graces
      // that ran out (a forfeit due before the end stands). All of it, however far behind the
      // clock is (a frame or the alarm plays 100 deadlines a turn; an end cannot wait for the
      // alarm to play the rest, nor skip them).
      try {
        this.runClock(now)
        for (let runs = 1; this.clockBehind && this.status === 'live'; runs++) {
          if (runs === MAX_END_CATCH_UP_RUNS) {
            // More than one request should play: the alarm, due at once, plays on meanwhile.
            await this.scheduleAlarm()
            return {
              ok: false,
              problem: 'unavailable',
              detail: 'The game is still playing the turns its clock owes; send the end again',
              retryAfter: 1,
            }
          }
          this.runClock(now)
        }
      } catch (err) {
        // Rules that throw at a deadline (a bug in onTick or onAbsent) fail every alarm and
        // frame: the end is what an admin sends such a stuck game, so it goes ahead without them.
        log('error', 'session clock failed; ending without it', {
          actor: this.actor,
          ...errorFields(err),
        })
      }
      if (this.status === 'live') {
        const out = this.applyInput(
          {
            kind: 'end',
            tick: this.tickAt(now),
            placements: this.setup.roster.map((p) => ({
              playerId: p.playerId,
              team: p.team,
              place: 1,
            })),
          },
          undefined,
          // Live here, even if the rules a deploy changed call it over (step()).
          { pastResult: true },
        )
        if (isRuleError(out)) throw new Error(`end refused: ${out.error.message}`)
      }
      // The end work (or the clock's next deadline) runs from the alarm.
      await this.scheduleAlarm()
    }
    return this.info()
  }

  /**
   * Log records from `from` (inclusive), at most `limit`, and where the next page starts: as
   * `player` may see them (`viewRecord`), or whole for an admin (null).
   */
  events(
    from: number,
    limit: number,
    player: string | null,
  ): { ok: true; events: LogRecord[]; nextFrom: number | null; seq: number } | NotFound {
    this.refuseUnloadable()
    if (!this.setup || !this.match || !this.rules) return this.notFound()
    const rules = this.rules
    const rows = all<{ seq: number; record: string }>(
      this.sql,
      `SELECT seq, record FROM log WHERE seq >= ? ORDER BY seq LIMIT ?`,
      from,
      limit,
    )
    const events = rows.map((r) => {
      const record = JSON.parse(r.record) as LogRecord
      return player === null ? record : viewRecord(rules, record, player)
    })
    const last = rows[rows.length - 1]
    return {
      ok: true,
      events,
      nextFrom: last && last.seq < this.match.seq ? last.seq + 1 : null,
      seq: this.match.seq,
    }
  }

  /** The live match as the object holds it (tests compare it with a replay of the log). */
  current(): { status: SessionStatus; match: MatchState; setup: SessionSetup } | null {
    this.refuseUnloadable()
    if (!this.setup || !this.match || !this.status) return null
    return { status: this.status, match: this.match, setup: this.setup }
  }

  /**
   * Takes an erased player out of the game: their sockets close (ERASED_CLOSE) and none of
   * theirs is accepted again, so the game goes on as after any player's leaving (their grace,
   * then what the rules do with a player gone: a forfeit in dice-race). Their old tokens, a
   * session's among them, would otherwise play on, and send what the log keeps, until the game
   * ended. Whatever the game's status, so that no read of theirs is served either. Idempotent:
   * `taken` says whether this call took them out (false: not on the roster, out already, or a
   * match made after `erasedAt`, the erasure's time: a player back under the id since, as an
   * identity provider's may be, plays it; a guest's id never comes back).
   *
   * A session that does not load (its rules gone from this version, a log that does not
   * replay) plays nothing meanwhile: the player is kept as erased for when it loads again, rather
   * than failing the erasure for as long as it stays so.
   */
  async removeErasedPlayer(
    playerId: string,
    erasedAt?: number,
  ): Promise<{ ok: true; taken: boolean; socketsClosed: number } | NotFound> {
    if (this.loadFailure === null && (!this.setup || !this.match || !this.status)) {
      return this.notFound()
    }
    // From storage, not memory: an object that did not load has only part of it in memory.
    const setupText = this.getMeta('setup')
    if (!setupText) return this.notFound()
    const setup = JSON.parse(setupText) as NormalizedSetup
    const madeAt = Number(this.getMeta('made_at') ?? this.getMeta('created_at') ?? 0)
    const notTaken = { ok: true as const, taken: false, socketsClosed: 0 }
    if (!setup.roster.some((p) => p.playerId === playerId)) return notTaken
    if (erasedAt !== undefined && !playerId.startsWith(GUEST_ID_PREFIX) && madeAt > erasedAt) {
      return notTaken
    }
    const erased = new Set(JSON.parse(this.getMeta('erased_players') ?? '[]') as string[])
    const taken = !erased.has(playerId)
    if (taken) {
      erased.add(playerId)
      this.setMeta('erased_players', JSON.stringify([...erased]))
      log('info', 'erased player out of the game', { actor: this.actor, player: playerId })
    }
    this.erasedPlayers = erased
    let socketsClosed = 0
    for (const ws of this.openSockets(playerId)) {
      try {
        ws.close(ERASED_CLOSE.code, ERASED_CLOSE.reason)
      } catch {
        // Closing already.
      }
      socketsClosed++
      await this.closedBySession(ws)
    }
    return { ok: true, taken, socketsClosed }
  }

  /**
   * Whether Neon has `player` erased since the match (a guest: ever), for an ended game. Skipped
   * (false) when Neon is out of reach or does not answer within 3 s, as the Worker's read check
   * is: a finished game's final state is all it serves. Null for any other failure (a missing
   * table, a refused role): a fault to see, answered 503, not a reason to skip.
   */
  private async erasedSinceTheMatch(player: string): Promise<boolean | null> {
    try {
      const erased = await within(
        this.store.erasedAmong([player], this.madeAt),
        3_000,
        'the erasure check',
      )
      return erased.length > 0
    } catch (err) {
      const skip = isNeonOutage(err)
      log(skip ? 'warn' : 'error', skip ? 'erasure check skipped' : 'erasure check failed', {
        actor: this.actor,
        ...errorFields(err),
      })
      return skip ? false : null
    }
  }

  /** Progress of the end-of-game work, or null while the game runs. */
  endStatus(): EndStatus | null {
    this.refuseUnloadable()
    if (!this.setup) return this.purged ? doneStatus() : null
    const row = one<WorkRow>(this.sql, `SELECT * FROM work WHERE job = 'end'`)
    if (!row) return this.purged ? doneStatus() : null
    return {
      stage: row.stage as EndStage,
      archived: row.cursor,
      attempts: row.attempts,
      nextAttemptAt: row.stage === 'done' ? null : row.next_attempt_at,
      lastError: row.last_error,
      notSubmitted: this.notSubmittedWins(),
    }
  }

  /** The wins the end gave up putting on the queue's board, and why. */
  private notSubmittedWins(): NotSubmittedWin[] {
    return JSON.parse(this.getMeta('not_submitted') ?? '[]') as NotSubmittedWin[]
  }

  private notFound(): NotFound {
    return {
      ok: false,
      problem: 'not-found',
      detail: this.purged ? 'The session has ended and was archived' : 'No such session',
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sockets

  /**
   * Accepts a socket for the player the Worker verified (header `x-nexus-session-player`).
   * Refusals are problem+json responses, before any upgrade; the Worker renders them through its
   * error funnel.
   */
  override async fetch(request: Request): Promise<Response> {
    if (this.loadFailure !== null) {
      return problemResponse(
        'unavailable',
        'This session cannot be loaded now; retry later',
        {},
        { 'retry-after': '60' },
      )
    }
    if (request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      return problemResponse('bad-request', 'Expected a WebSocket upgrade')
    }
    if (!this.setup || !this.match || !this.rules) {
      return problemResponse('not-found', 'No such session (or it ended and was archived)')
    }
    const player = request.headers.get(PLAYER_HEADER) ?? ''
    if (!this.setup.roster.some((p) => p.playerId === player)) {
      return problemResponse('forbidden', 'You are not a player of this session')
    }
    if (this.erasedPlayers.has(player)) {
      return problemResponse('forbidden', 'This player was erased: the game goes on without them', {
        erased: true,
      })
    }
    // Ended: no erasure walk asks it, so a socket of theirs asks Neon, as a read does.
    if (this.status !== 'live') {
      const erased = await this.erasedSinceTheMatch(player)
      if (erased === null) {
        return problemResponse(
          'unavailable',
          'The erasure check failed; retry later',
          {},
          { 'retry-after': '5' },
        )
      }
      // Taken out while Neon was asked (the walk, for a session Neon still lists as live).
      if (erased || this.erasedPlayers.has(player)) {
        // Erased for good (taken out here, or a guest, whose id never comes back); a player of
        // an identity provider back under the id is live, and only refused this session.
        const forGood = this.erasedPlayers.has(player) || player.startsWith(GUEST_ID_PREFIX)
        return problemResponse(
          'forbidden',
          'This player was erased',
          forGood ? { erased: true } : {},
        )
      }
      if (!this.setup || !this.match) {
        return problemResponse('not-found', 'No such session (or it ended and was archived)')
      }
    }
    const params = new URL(request.url).searchParams
    const conn = params.get('conn')
    if (conn !== null && !ConnectionId.safeParse(conn).success) {
      return problemResponse('validation', CONNECTION_ID_RULE, {
        errors: [{ path: 'conn', message: CONNECTION_ID_RULE }],
      })
    }
    const sinceRaw = params.get('since')
    let since: number | null = null
    if (sinceRaw !== null) {
      since = SINCE_FORM.test(sinceRaw) ? Number(sinceRaw) : NaN
      if (!(since >= 0 && since <= this.match.seq)) {
        return problemResponse(
          'validation',
          `since must be an integer from 0 to ${this.match.seq}`,
          {
            errors: [{ path: 'since', message: `0 to ${this.match.seq}` }],
          },
        )
      }
    }
    // Sockets of this player that died without a close count for nothing: they would otherwise
    // fill the player's connections until the runtime noticed, and refuse the player's return.
    await this.dropSilentSockets(this.openSockets(player))
    // The clock first, before a late alarm: graces that ended before this connection (this
    // player's among them) count, so one who stayed away past the grace cannot return to escape it.
    const now = this.now()
    if (this.status === 'live') this.runClock(now)
    if (this.clockBehind && this.status === 'live') {
      // Deadlines that passed while the game was away are still to be played (by the alarm, due
      // at once); a return applied now would come before them in the log. Refused before the
      // socket exists, so no disconnect restarts this player's grace.
      await this.scheduleAlarm()
      return problemResponse(
        'unavailable',
        'The game is playing turns that ran out while it was away: connect again in a moment',
        {},
        { 'retry-after': '1' },
      )
    }
    // Judged after the clock ran: the turns it played are missed events too, and a resume must
    // not pass the cap by them.
    if (since !== null && this.match.seq - since > this.maxResume) {
      const from = this.match.seq - this.maxResume
      return problemResponse(
        'validation',
        `A resume sends at most ${this.maxResume} missed events: since must be from ${from} to ` +
          `${this.match.seq}. Read the events after ${since} from GET /v1/sessions/:id/events, ` +
          'then resume from the last one read',
        { errors: [{ path: 'since', message: `${from} to ${this.match.seq}` }] },
      )
    }
    if (this.unansweredCloses(player, now) >= MAX_UNANSWERED_CLOSES) {
      return problemResponse(
        'conflict',
        `${MAX_UNANSWERED_CLOSES} of this player's connections were closed and their client never ` +
          'answered: answer a close (the SDK does), then connect again',
        {},
        { 'retry-after': '10' },
      )
    }
    // Last of the refusals: an upgrade refused for another reason (a game catching up) sends
    // nothing, so it spends none of the player's budget.
    if (since !== null && since < this.match.seq) {
      const refusal = this.countResume(player, this.match.seq - since)
      if (refusal) return refusal
    }
    // The same client's earlier socket goes first, before this one's resume is read from the
    // log: closed, it applies nothing more (webSocketMessage hears nothing on a socket it
    // closed), so the resume holds every action it ever will, and the client knows which of its
    // actions to send again. Its player has this socket: no grace starts.
    if (conn !== null) {
      for (const ws of this.openSockets(player)) {
        if (attachment(ws)?.conn !== conn) continue
        try {
          ws.close(SUPERSEDED_CLOSE.code, SUPERSEDED_CLOSE.reason)
        } catch {
          // Closing already.
        }
        this.sockets?.delete(ws)
        this.resuming.delete(ws)
      }
    }
    // A player's 5th connection replaces the one heard from least lately rather than being
    // refused: a browser sees no refused upgrade's status, only a failure it would retry, and
    // the newest tab is the one the player is looking at. By last heard, not by age: sockets a
    // client has given up on (it reconnects after 10 to 30 s of silence) count here until they
    // fall silent (90 s), and the oldest may be a tab in use. It hears why in its close code
    // (the SDK stops there).
    const open = this.openSockets(player)
    if (open.length >= MAX_SOCKETS_PER_PLAYER) {
      const heard = (ws: WebSocket) =>
        Math.max(
          this.ctx.getWebSocketAutoResponseTimestamp(ws)?.getTime() ?? 0,
          this.lastFrameAt.get(ws) ?? attachment(ws)?.heardAt ?? 0,
          attachment(ws)?.connectedAt ?? 0,
        )
      const oldest = open.reduce((a, b) => (heard(b) < heard(a) ? b : a))
      try {
        oldest.close(REPLACED_CLOSE.code, REPLACED_CLOSE.reason)
      } catch {
        // Closing already.
      }
      // The player keeps their other sockets and gets this one: no grace starts.
      this.sockets?.delete(oldest)
      this.resuming.delete(oldest)
    }
    const pair = new WebSocketPair()
    const server = pair[1]
    this.ctx.acceptWebSocket(server, [player])
    server.serializeAttachment({
      playerId: player,
      connectedAt: now,
      ...(conn !== null ? { conn } : {}),
    } satisfies Attachment)
    this.sockets?.add(server)
    // Everything below runs without awaiting, so no live event can slip in between.
    try {
      if (since === null) {
        send(server, {
          type: 'welcome',
          seq: this.match.seq,
          state: this.rules.view(this.match.game, player),
          you: player,
          status: this.status!,
          ...this.clockNow(),
          acks: true,
          refs: true,
        })
      } else {
        send(server, {
          type: 'resumed',
          since,
          seq: this.match.seq,
          ...this.clockNow(),
          acks: true,
          refs: true,
        })
        const sent = this.sendMissed(server, since)
        if (sent !== null) {
          this.resuming.add(server)
          void this.resume(server, sent)
        }
      }
      if (this.status === 'live') {
        // Closed already (its missed events could not be viewed): the player is not back.
        if (server.readyState !== WebSocket.OPEN) {
          await this.scheduleAlarm()
          return new Response(null, { status: 101, webSocket: pair[0] })
        }
        this.cameBack(player)
        const wasAbsent = one<{ n: number }>(
          this.sql,
          `SELECT count(*) AS n FROM absent WHERE player_id = ?`,
          player,
        )!.n
        const tick = this.tickAt(now)
        if (wasAbsent > 0) {
          // Still absent to the rules until they take the return (rules that throw on it hear
          // it again on the player's next connect).
          this.applyInput({ kind: 'return', player, tick }, () => {
            this.sql.exec(`DELETE FROM absent WHERE player_id = ?`, player)
          })
        }
        // Rules that wait for their players hear of every connection (refused, it logs nothing).
        this.applyInput({ kind: 'connect', player, tick })
      } else if (!this.resuming.has(server)) {
        // Over (perhaps by the clock just now, before this socket joined the broadcasts); a
        // resuming socket is sent `ended` after its last missed event.
        this.sendEnded(server)
      }
    } catch (err) {
      // The rules threw (a view, a connect's input): the socket accepted above must not stay
      // open as the player's presence, which no grace would ever end, nor hold one of their 4.
      try {
        server.close(1011, 'internal error')
      } catch {
        // Closing already.
      }
      await this.closedBySession(server)
      throw err
    }
    await this.scheduleAlarm()
    return new Response(null, { status: 101, webSocket: pair[0] })
  }

  /** Takes a resume's `events` from its player's budget, or refuses it past what is left. */
  private countResume(player: string, events: number): Response | null {
    const now = this.now()
    const full = this.resumedPerMinute
    const perMs = full / 60_000
    const budget = this.resumeBudgets.get(player) ?? this.storedBudget(player)
    // A clock that went back refills nothing.
    const left = budget ? Math.min(full, budget.left + Math.max(0, now - budget.at) * perMs) : full
    if (events > left) {
      this.keepBudget(player, { left, at: now })
      const retryAfter = Math.max(1, Math.ceil((events - left) / perMs / 1000))
      return problemResponse(
        'rate-limited',
        `Resumes may send this player ${full} missed events a minute, and ${Math.floor(left)} ` +
          `are left: resume again in ${retryAfter} s, or read the events from ` +
          'GET /v1/sessions/:id/events',
        { retryAfter },
        { 'retry-after': String(retryAfter) },
      )
    }
    this.keepBudget(player, { left: left - events, at: now })
    return null
  }

  private storedBudget(player: string): { left: number; at: number } | undefined {
    const stored = this.getMeta(`resume_budget:${player}`)
    return stored === undefined ? undefined : (JSON.parse(stored) as { left: number; at: number })
  }

  private keepBudget(player: string, budget: { left: number; at: number }): void {
    this.resumeBudgets.set(player, budget)
    this.setMeta(`resume_budget:${player}`, JSON.stringify(budget))
  }

  /**
   * Sends up to `resumeChunk` logged events after `after`; returns the last seq sent when more
   * may follow, or null when the socket has every event so far.
   */
  private sendMissed(ws: WebSocket, after: number): number | null {
    let last = after
    let n = 0
    const hides = this.rules?.viewEvent !== undefined
    const player = attachment(ws)?.playerId
    // Whose view to send is unknown: nothing (live broadcasts skip such a socket too).
    if (hides && player === undefined) return null
    for (const row of this.sql.exec<{ seq: number; record: string }>(
      `SELECT seq, record FROM log WHERE seq > ? ORDER BY seq LIMIT ?`,
      after,
      this.resumeChunk,
    )) {
      const stored = JSON.parse(row.record) as LogRecord
      const record = hides ? this.viewFor(stored, player!, ws) : stored
      if (record === null) return null
      ws.send(eventFrame(record, player))
      last = row.seq
      n++
    }
    return n < this.resumeChunk ? null : last
  }

  /**
   * The rest of a long resume, a chunk per turn. The check that nothing is left and the socket's
   * joining the broadcasts happen in one synchronous step, so no event falls between them.
   */
  private async resume(ws: WebSocket, after: number): Promise<void> {
    try {
      let sent: number | null = after
      while (sent !== null) {
        await new Promise((resolve) => setTimeout(resolve, 0))
        if (!this.resuming.has(ws)) return
        sent = this.sendMissed(ws, sent)
      }
      this.resuming.delete(ws)
      if (this.status !== 'live') this.sendEnded(ws)
    } catch (err) {
      this.resuming.delete(ws)
      log('warn', 'resume failed', {
        actor: this.actor,
        player: attachment(ws)?.playerId,
        ...errorFields(err),
      })
      try {
        ws.close(1011, 'resume failed; reconnect with since')
      } catch {
        // Already closed.
      }
    }
  }

  override async webSocketMessage(ws: WebSocket, message: string | ArrayBuffer): Promise<void> {
    // A socket this object closed (a flood, a game's end, silence) still delivers what its client
    // sends until the client answers the close, and a flooding client never does: nothing it
    // sends then is heard, counted or answered.
    if (ws.readyState !== WebSocket.OPEN) return
    if (this.loadFailure !== null) {
      try {
        ws.close(1011, 'session unavailable; reconnect later')
      } catch {
        // Already closing.
      }
      return
    }
    try {
      const player = attachment(ws)?.playerId
      if (!player) {
        ws.close(1008, 'unknown connection')
        return
      }
      if (farTooLarge(message)) {
        log('warn', 'socket closed for an oversized frame', {
          actor: this.actor,
          player,
          size: typeof message === 'string' ? message.length : message.byteLength,
        })
        message = ''
        try {
          ws.close(OVERSIZED_CLOSE.code, OVERSIZED_CLOSE.reason)
        } catch {
          // Already closing.
        }
        return await this.closedBySession(ws)
      }
      const heardAt = this.now()
      this.lastFrameAt.set(ws, heardAt)
      const att = attachment(ws)!
      if (!(heardAt - (att.heardAt ?? -Infinity) < HEARD_AT_EVERY_MS)) {
        att.heardAt = heardAt
        ws.serializeAttachment(att)
      }
      // An acknowledgement that covers events sent since the last is free (there are no more of
      // them than events sent to the socket); one that does not counts as any frame does.
      if (this.acknowledged(ws, message)) return
      // Every frame counts against the rate first, refused ones too: each costs an answer.
      if (!this.takeToken(player)) {
        if (refusedTooOften(this.refusals, player, heardAt)) {
          return await this.closeFlooding(ws, player)
        }
        return this.refuse(
          ws,
          'rate_limited',
          `At most ${RATE_PER_SECOND} frames per second (burst ${RATE_BURST})`,
          refOf(message),
        )
      }
      if (typeof message !== 'string') return this.refuse(ws, 'binary', 'Frames are JSON text')
      if (exceedsUtf8Bytes(message, MAX_FRAME_BYTES)) {
        return this.refuse(ws, 'too_large', `Frames are limited to ${MAX_FRAME_BYTES} bytes`)
      }
      let raw: unknown
      try {
        raw = JSON.parse(message)
      } catch {
        return this.refuse(ws, 'malformed', 'Frames must be JSON')
      }
      const msg = ClientMessage.safeParse(raw)
      if (!msg.success) {
        const atRef = msg.error.issues.some((i) => i.path[0] === 'ref')
        return this.refuse(
          ws,
          'invalid_message',
          atRef
            ? ACTION_REF_RULE
            : 'Send {"type":"action", …}, {"type":"ack","seq":N} or {"type":"ping"}',
        )
      }
      if (msg.data.type === 'ping') return void send(ws, { type: 'pong' })
      // One that covers nothing new (its token taken above); one past the last event is bogus.
      if (msg.data.type === 'ack') {
        if (msg.data.seq > (this.match?.seq ?? 0)) {
          return this.refuse(ws, 'invalid_message', 'ack names an event not sent yet')
        }
        return
      }
      const { ref, ...action } = msg.data
      // Whatever the rules take of it, the action goes into the log as JSON.stringify writes it,
      // and the log into Neon's jsonb, which writes its numbers out in full: bounded as written
      // there too (whichever way the client wrote its numbers). A number JSON writes without an
      // exponent grows nothing, and the frame's own bound holds the rest: a walk, no stringify.
      const extra = jsonbExtraBytesIn(action)
      if (extra > 0 && utf8Length(JSON.stringify(action)) + extra > MAX_FRAME_BYTES) {
        return this.refuse(
          ws,
          'too_large',
          `Frames are limited to ${MAX_FRAME_BYTES} bytes, numbers counted written out in full ` +
            '(1e308 as 309 digits, as PostgreSQL stores them)',
          ref,
        )
      }
      if (this.status !== 'live' || !this.match) {
        return this.refuse(ws, 'game_over', 'The game is over', ref)
      }
      const now = this.now()
      if (this.clockedFrames()) this.runClock(now)
      // The clock ended the game before this frame: everyone, the sender too, was sent `ended`.
      if (this.status !== 'live') return await this.scheduleAlarm()
      const tick = this.tickAt(now)
      if (this.clockBehind) {
        // More deadlines passed than one catch-up plays (a long stall): applied now, the action
        // would skip the rest. The alarm, due at once, plays them; the sender sends again.
        await this.scheduleAlarm()
        return this.refuse(
          ws,
          'catching_up',
          'Turns that ran out while the game was away are still being played: send again',
          ref,
        )
      }
      const out = this.applyInput({
        kind: 'action',
        player,
        tick,
        action,
        ...(ref !== undefined ? { ref } : {}),
      })
      if (isRuleError(out)) return this.refuse(ws, out.error.code, out.error.message, ref)
      // An action may name a nearer deadline (a move clock it started) than the alarm set.
      if (this.status !== 'live' || this.wakesOnHint()) await this.scheduleAlarm()
    } catch (err) {
      log('error', 'socket message failed', {
        actor: this.actor,
        player: attachment(ws)?.playerId,
        ...errorFields(err),
      })
      this.refuse(ws, 'internal', 'Something went wrong', refOf(message))
    }
  }

  override async webSocketClose(ws: WebSocket, code: number, reason: string): Promise<void> {
    answerClose(ws, code, reason)
    if (this.loadFailure !== null) return
    this.sockets?.delete(ws)
    this.resuming.delete(ws)
    await this.disconnected(ws)
  }

  override async webSocketError(ws: WebSocket, error: unknown): Promise<void> {
    log('warn', 'socket error', {
      actor: this.actor,
      player: attachment(ws)?.playerId,
      ...errorFields(error),
    })
    if (this.loadFailure !== null) return
    this.sockets?.delete(ws)
    this.resuming.delete(ws)
    await this.disconnected(ws)
  }

  /**
   * Each player's frames over the allowance, lately (flood.ts): by player, as the allowance is,
   * so that neither a player's several sockets nor a reconnect after the close get a limit anew.
   * A roster's players at most, so the map stays small.
   */
  private readonly refusals: RefusalCounts<string> = new Map()

  /** Closes a socket that kept sending past its allowance, as if its client had closed it. */
  private async closeFlooding(ws: WebSocket, player: string): Promise<void> {
    log('warn', 'flooding socket closed', { actor: this.actor, player })
    try {
      ws.close(FLOOD_CLOSE.code, FLOOD_CLOSE.reason)
    } catch {
      // Already closing.
    }
    await this.closedBySession(ws)
  }

  /**
   * Closes those of `sockets` that fell silent (SILENT_SOCKET_MS: they pinged, then nothing), as
   * if their clients had closed them: the last of a player's starts the player's grace.
   */
  private async dropSilentSockets(sockets: readonly WebSocket[]): Promise<void> {
    const now = this.now()
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue
      // After a wake only the stored time is known, and a frame may have come up to
      // HEARD_AT_EVERY_MS after it: judged by the latest it could be, never closed early.
      const stored = attachment(ws)?.heardAt
      const heard =
        this.lastFrameAt.get(ws) ?? (stored === undefined ? undefined : stored + HEARD_AT_EVERY_MS)
      if (!fellSilent(this.ctx, ws, now, heard)) continue
      log('info', 'silent socket closed', { actor: this.actor, player: attachment(ws)?.playerId })
      closeSilent(ws)
      await this.closedBySession(ws)
    }
  }

  /**
   * A socket this session closed, handled as if its client had closed it (the runtime's report
   * of the close may never come): no more broadcasts or resume to it, and the last of a player's
   * starts their grace. The grace's timer is written before the first await.
   */
  private closedBySession(ws: WebSocket): Promise<void> {
    this.sockets?.delete(ws)
    this.resuming.delete(ws)
    return this.disconnected(ws)
  }

  private async disconnected(ws: WebSocket): Promise<void> {
    try {
      const player = attachment(ws)?.playerId
      if (!player || this.status !== 'live') return
      if (this.openSockets(player).some((s) => s !== ws)) return
      // A grace already running is kept: a socket the session closed as silent may still be
      // reported closed by the runtime later, and that must not start the grace over.
      this.sql.exec(
        `INSERT OR IGNORE INTO timers (player_id, due) VALUES (?, ?)`,
        player,
        this.absenceDue(),
      )
      await this.scheduleAlarm()
    } catch (err) {
      log('error', 'disconnect handling failed', {
        actor: this.actor,
        player: attachment(ws)?.playerId,
        ...errorFields(err),
      })
    }
  }

  /**
   * When the grace of a player who just went ends: never the join grace's end itself, which marks
   * a player who never came (joinDue), so a close in that very millisecond is a millisecond later.
   */
  private absenceDue(): number {
    const due = this.now() + this.graceMs
    return due === this.joinDue ? due + 1 : due
  }

  /**
   * Of `player`'s sockets this session closed, those whose client has not answered within
   * UNANSWERED_CLOSE_MS of a connect first finding them closing (noted on the socket then).
   */
  private unansweredCloses(player: string, now: number): number {
    let held = 0
    let closing = 0
    for (const ws of this.ctx.getWebSockets(player)) {
      if (ws.readyState !== WebSocket.CLOSING) continue
      closing++
      const since = closingSince(ws, attachment(ws), this.closingSeen, now)
      if (since !== undefined && now - since >= UNANSWERED_CLOSE_MS) held++
    }
    // Of any age, past twice the limit: a burst of connects closes sockets faster than the 5 s
    // each waits before it counts (an honest client's closes are answered within a round trip,
    // so few are ever closing at once).
    return closing >= 2 * MAX_UNANSWERED_CLOSES ? Math.max(held, MAX_UNANSWERED_CLOSES) : held
  }
  /** unansweredCloses' note where a socket's attachment could not take it. */
  private readonly closingSeen = new WeakMap<WebSocket, number>()

  private openSockets(player: string): WebSocket[] {
    return this.ctx
      .getWebSockets(player)
      .filter((s) => s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING)
  }

  private refuse(ws: WebSocket, code: string, message: string, ref?: ActionRef): void {
    inputsRefused.inc({ code })
    this.sendMetrics()
    send(ws, { type: 'error', code, message, ...(ref !== undefined ? { ref } : {}) })
  }

  private takeToken(player: string): boolean {
    return takeToken(this.buckets, player, this.now(), RATE_PER_SECOND, RATE_BURST)
  }

  /**
   * Sends a record's event to every socket not still resuming: one frame for all, or under rules
   * with `viewEvent` each player's own (made once per player, however many sockets they have).
   */
  private broadcast(record: LogRecord): void {
    this.sockets ??= new Set(this.ctx.getWebSockets())
    const rules = this.rules
    // The sender's sockets get the action's ref (nobody else's business): their own frame.
    const { input } = record
    const referred = input.kind === 'action' && input.ref !== undefined ? input.player : null
    const shared = rules?.viewEvent ? null : eventFrame(record)
    const views = shared === null || referred !== null ? new Map<string, string>() : null
    // One reading of the clock for the broadcast, taken at the first acknowledging socket.
    let now: number | undefined
    for (const ws of this.sockets) {
      if (this.resuming.has(ws)) continue
      let frame = shared
      const player = frame === null || referred !== null ? attachment(ws)?.playerId : undefined
      if (frame === null || (player !== undefined && player === referred)) {
        if (player === undefined) continue
        frame = views!.get(player) ?? null
        if (frame === null) {
          const view = this.viewFor(record, player, ws)
          if (view === null) continue
          frame = eventFrame(view, player)
          views!.set(player, frame)
        }
      }
      try {
        ws.send(frame)
      } catch {
        // A socket closing under us; its close handler deals with the player.
        this.sockets.delete(ws)
        continue
      }
      const window = this.acks.get(ws)
      if (window) {
        now ??= this.now()
        window.sent += frame.length
        window.seqs.push(record.seq)
        window.sentAfter.push(window.sent)
        window.sentAt.push(now)
        // Behind by much, for long: a burst a client is reading (a large event, say) is not.
        if (
          window.sent - window.acked > this.maxUnacked &&
          now - window.sentAt[window.head]! >= this.behindForMs
        ) {
          this.closeBehind(ws)
        }
      }
    }
  }

  /**
   * Takes `message` as an acknowledgement if it is one (its first starts the socket's window);
   * true if it covers events broadcast to the socket since its last, which is free of the frame
   * allowance (there are never more of those than events sent to it). Any other ack, the first
   * included, goes on to be counted as any frame is.
   */
  private acknowledged(ws: WebSocket, message: string | ArrayBuffer): boolean {
    if (typeof message !== 'string' || message.length > 64 || !message.includes('"ack"')) {
      return false
    }
    let seq: unknown
    try {
      const parsed = JSON.parse(message) as { type?: unknown; seq?: unknown }
      if (parsed.type !== 'ack' || Object.keys(parsed).length !== 2) return false
      seq = parsed.seq
    } catch {
      return false
    }
    if (
      typeof seq !== 'number' ||
      !Number.isInteger(seq) ||
      seq < 0 ||
      seq > (this.match?.seq ?? 0)
    ) {
      return false
    }
    const window = this.acks.get(ws)
    if (!window) {
      this.acks.set(ws, { sent: 0, acked: 0, seqs: [], sentAfter: [], sentAt: [], head: 0, seq })
      return false
    }
    if (seq <= window.seq) return false
    window.seq = seq
    const from = window.head
    while (window.head < window.seqs.length && window.seqs[window.head]! <= seq) {
      window.acked = window.sentAfter[window.head]!
      window.head++
    }
    const covered = window.head > from
    // Read past: dropped, so the lists hold only what is on its way.
    if (window.head >= 1024 && window.head * 2 >= window.seqs.length) {
      window.seqs.splice(0, window.head)
      window.sentAfter.splice(0, window.head)
      window.sentAt.splice(0, window.head)
      window.head = 0
    }
    return covered
  }

  /** Closes a socket too far behind what it acknowledged, as if its client had closed it. */
  private closeBehind(ws: WebSocket): void {
    log('info', 'socket too far behind closed', {
      actor: this.actor,
      player: attachment(ws)?.playerId,
    })
    this.acks.delete(ws)
    try {
      ws.close(BEHIND_CLOSE.code, BEHIND_CLOSE.reason)
    } catch {
      // Already closing.
    }
    // Its grace, if it was its player's last, is written before the first await in there, and
    // errors are its own to log.
    void this.closedBySession(ws)
  }

  /**
   * `record` as `player` may see it; null when the rules' `viewEvent` threw, and then `ws` is
   * closed as if its client had closed it (the last of a player's starts their grace): a player
   * whose view cannot be made gets no event rather than the whole one (a resume would fail the
   * same way, so the client hears of it at once).
   */
  private viewFor(record: LogRecord, player: string, ws: WebSocket): LogRecord | null {
    try {
      return viewRecord(this.rules!, record, player)
    } catch (err) {
      log('error', 'event view failed', { actor: this.actor, seq: record.seq, ...errorFields(err) })
      try {
        ws.close(1011, 'event view failed')
      } catch {
        // Already closed.
      }
      // Its grace timer is written at once: a caller going on (an upgrade) sees it.
      void this.closedBySession(ws)
      return null
    }
  }

  private sendEnded(ws: WebSocket): void {
    // Closed meanwhile (an event view that failed): nothing more can go out on it.
    if (ws.readyState !== WebSocket.OPEN) return
    const result = this.getMeta('result')
    if (!result) return
    send(ws, { type: 'ended', seq: this.match!.seq, result: JSON.parse(result) as GameResult })
    ws.close(1000, 'game over')
  }

  // ---------------------------------------------------------------------------------------------
  // Inputs

  /**
   * For rules with a tick loop: runs the game's clock up to `tick` before an input stamped with
   * it, so a deadline that passed first (a fuse, `startAfter`) takes effect first, however late
   * the alarm or the frame comes. A tick that changes nothing is not logged. Rules that name their
   * deadlines (`nextTick`) get one tick per deadline passed, each at its own moment: a wake after
   * several turns ran out plays them all, in game time.
   */
  private catchUp(tick: number): void {
    this.clockBehind = false
    const rules = this.rules
    if (!rules?.tickRate || this.status !== 'live') return
    if (!rules.nextTick) {
      this.applyInput({ kind: 'tick', tick })
      return
    }
    for (let n = 0; this.status === 'live'; n++) {
      const due = this.deadlineOf(rules.nextTick(this.match!.game), 'nextTick')
      if (due === null || due > tick) return
      if (n === MAX_DEADLINES_PER_CATCH_UP) {
        this.clockBehind = true
        return
      }
      const out = this.applyInput({ kind: 'tick', tick: Math.max(due, this.match!.tick) })
      // A deadline that changed nothing would come round again: stop rather than spin.
      if (out === null || isRuleError(out)) {
        this.stalledDeadline = due
        return
      }
    }
  }

  /**
   * Whether frames run the clock first: a tick loop (`quietUntil` rules too: graces that ended
   * before a frame count before it, even while nothing else is due), or rules with a deadline
   * pending.
   */
  private clockedFrames(): boolean {
    const rules = this.rules
    if (!rules?.tickRate) return false
    return (
      !rules.nextTick ||
      (this.match !== null && this.deadlineOf(rules.nextTick(this.match.game), 'nextTick') !== null)
    )
  }

  /**
   * A tick the rules named (`nextTick`, `quietUntil`) as the clock can play it: a fraction (a
   * timer of `seconds * tickRate` with fractional seconds) is the whole tick after it, where the
   * tick played for it would be refused (ticks are whole) and the deadline never come; anything
   * but a finite number (NaN from a field an older state lacks) is no deadline, logged once.
   */
  private deadlineOf(named: unknown, hook: 'nextTick' | 'quietUntil'): number | null {
    if (named === null) return null
    if (typeof named === 'number' && Number.isFinite(named)) return Math.max(0, Math.ceil(named))
    if (!this.badDeadlineLogged) {
      this.badDeadlineLogged = true
      log('error', 'rules named a next tick that is not a number', {
        actor: this.actor,
        rules: this.rules?.name,
        hook,
        value: String(named).slice(0, 40),
      })
    }
    return null
  }

  /** Rules that say when their clock next matters (`nextTick`, `quietUntil`), so no tick loop. */
  private wakesOnHint(): boolean {
    return this.rules?.nextTick !== undefined || this.rules?.quietUntil !== undefined
  }

  /**
   * The tick such rules next need a wake for, or null for none until an input. Rules that throw
   * here get none: the alarm is set at every wake, in the constructor too, where a throw would
   * reset the object at every wake with no backoff; the watchdog (a grace period) still comes,
   * and the frames and alarm that run the clock meet the throw where it is handled.
   */
  private wakeTick(): number | null {
    const rules = this.rules
    const game = this.match?.game
    if (!rules || game === undefined) return null
    try {
      if (rules.nextTick) return this.deadlineOf(rules.nextTick(game), 'nextTick')
      return rules.quietUntil ? this.deadlineOf(rules.quietUntil(game), 'quietUntil') : null
    } catch (err) {
      log('error', 'rules failed to name their next tick', {
        actor: this.actor,
        rules: rules.name,
        ...errorFields(err),
      })
      return null
    }
  }

  /**
   * The game's clock as a frame leaves: a client counts down to a deadline its state names in
   * ticks from here, not from when an event reached it (a late alarm's event, or missed ones a
   * resume sends, arrive long after their tick).
   */
  private clockNow(): { tick: number; tickRate: number; elapsedMs: number; running: boolean } {
    const now = this.now()
    const tickRate = this.rules?.tickRate ?? 1000
    // Over, the game's clock stopped at its last input: it does not count on past the end.
    if (this.status !== 'live') {
      const tick = this.match?.tick ?? 0
      return { tick, tickRate, elapsedMs: (tick * 1000) / tickRate, running: false }
    }
    return {
      tick: this.tickAt(now),
      tickRate,
      // Unrounded, for a client to count on from: at 5 ticks a second, the tick alone rounds
      // away up to 200 ms, and a count from it as much again.
      elapsedMs: Math.max(0, now - this.createdAt),
      running: true,
    }
  }

  private tickAt(now: number): number {
    const elapsed = Math.max(0, now - this.createdAt)
    const rate = this.rules?.tickRate
    const tick = rate ? Math.floor((elapsed * rate) / 1000) : elapsed
    return Math.max(this.match?.tick ?? 0, tick)
  }

  /**
   * Applies one input: refused → nothing changes; accepted → logged (and the end marked) in one
   * transaction, then broadcast. Returns the record (null when the input changed nothing).
   * `alongside` writes what the input's cause changes (a grace's end) whatever the rules say, in
   * the same transaction as the record: only once the rules have answered, so that rules that
   * throw leave it to be tried again, not half done.
   */
  private applyInput(
    input: Input,
    alongside?: () => void,
    opts: { pastResult?: boolean } = {},
  ): LogRecord | null | RuleError {
    const out = step(this.rules!, this.match!, input, opts)
    if (isRuleError(out) || !out.record) {
      // Not for a game over by rules a deploy changed: a grace's end refused there would be
      // spent (its timer gone, the player marked absent) with the rules never told.
      if (alongside && !this.overByTheRules()) this.ctx.storage.transactionSync(alongside)
      return isRuleError(out) ? out : null
    }
    // Logged, sent and replayed in its stored form: a value JSON does not keep (NaN, a Map)
    // reaches players as the log has it, and a wake's replay compares like with like.
    const text = JSON.stringify(out.record)
    const record = JSON.parse(text) as LogRecord
    const result = resultOf(this.rules!, out.match)
    // A result that cannot be recorded is a bug in the rules: nothing of the input is kept (a
    // throw, as any other), rather than wrong ratings or a win given to the wrong player.
    const unrecordable = result && resultRefusal(result, this.setup!.roster)
    if (unrecordable) {
      throw new Error(`${this.rules!.name}: a result Nexus cannot record: ${unrecordable}`)
    }
    const now = this.now()
    const append = () =>
      this.sql.exec(`INSERT INTO log (seq, record) VALUES (?, ?)`, record.seq, text)
    const snapshot = record.seq % this.snapshotEvery === 0
    // The state goes on from what storage holds at each snapshot, as it would after a wake.
    let next = out.match
    if (!snapshot && !result && !alongside) {
      // The common case is one statement, atomic by itself: no savepoint around it.
      append()
    } else {
      this.ctx.storage.transactionSync(() => {
        alongside?.()
        append()
        if (snapshot || result) {
          const state = JSON.stringify(out.match)
          this.setMeta('snapshot', state)
          next = JSON.parse(state) as MatchState
        }
        if (result) {
          this.setMeta('status', 'finished')
          this.setMeta('result', JSON.stringify(result))
          this.setMeta('ended_at', String(now))
          this.sql.exec(`DELETE FROM timers`)
          this.sql.exec(`INSERT OR IGNORE INTO work (job, stage) VALUES ('end', 'record')`)
        }
      })
    }
    this.match = next
    this.stalledDeadline = null
    inputsAccepted.inc({ kind: input.kind, rules: this.rules!.name })
    this.sendMetrics()
    this.broadcast(record)
    if (result) {
      this.status = 'finished'
      gameLength.observe({ rules: this.rules!.name }, (now - this.createdAt) / 1000)
      sessionsEnded.inc({ rules: this.rules!.name, reason: result.reason })
      log('info', 'game over', { actor: this.actor, reason: result.reason, winner: result.winner })
      for (const ws of this.ctx.getWebSockets()) {
        // A socket still resuming gets `ended` after the last event it missed.
        if (this.resuming.has(ws)) continue
        try {
          this.sendEnded(ws)
        } catch {
          // Closing already.
        }
      }
    }
    return record
  }

  /**
   * Whether a live game's state is over by the running rules with no input that ended it: a
   * deploy changed `result` (load()). Every input is refused `game_over` until an admin ends it.
   */
  private overByTheRules(): boolean {
    return (
      this.status === 'live' &&
      this.rules !== null &&
      this.match !== null &&
      resultOf(this.rules, this.match) !== null
    )
  }

  // ---------------------------------------------------------------------------------------------
  // The alarm: grace timers, the tick loop, durable work, retention.

  /** Alarm runs that failed in a row (backOffAlarm). */
  private readonly alarmFailures = new AlarmFailures(this.ctx.storage.sql)

  override async alarm(): Promise<void> {
    if (this.loadFailure !== null) return this.armWhileUnloadable()
    try {
      const now = this.now()
      // A clock that throws (a bug in the rules) is retried with backoff, but does not keep the
      // game from being listed (an admin finds it there to end it) or its dead sockets dropped.
      let clockFault: unknown = null
      if (this.status === 'live' && this.match) {
        try {
          this.runClock(now)
        } catch (err) {
          clockFault = err
        }
      }
      // The watchdog (scheduleAlarm) brings a live game here at least once a grace period; a
      // tick loop far more often, and looking at every socket at each tick is not needed.
      if (this.status === 'live' && now >= this.silentCheckAt) {
        this.silentCheckAt = now + SILENT_CHECK_EVERY_MS
        await this.dropSilentSockets(this.ctx.getWebSockets())
      }
      if (this.status === 'live') {
        // While the game runs, the alarm does not wait on Neon (listing the session): a slow or
        // hanging Neon would stop the tick loop and the graces. The work arms the alarm when done.
        void this.runEndWork()
          .then(async () => {
            await this.scheduleAlarm()
            // The run failed (its clock): the alarm the work set keeps the run's backoff.
            await backOffAlarm(this.ctx.storage, this.alarmFailures.value, this.now())
          })
          .catch((err: unknown) => {
            log('error', 'session work failed', { actor: this.actor, ...errorFields(err) })
          })
      } else {
        await this.runEndWork()
      }
      if (clockFault !== null) throw clockFault
      this.alarmFailures.succeeded()
    } catch (err) {
      log('error', 'alarm failed', {
        actor: this.actor,
        failuresInARow: this.alarmFailures.failed(),
        ...errorFields(err),
      })
    } finally {
      await this.scheduleAlarm()
      await backOffAlarm(this.ctx.storage, this.alarmFailures.value, this.now())
      // Last: the alarm that sends may be one brought forward for it.
      void sendMetricsAtAlarm(this.env, this.metricsAlarm)
    }
  }

  /** After counting: sends this isolate's metrics, or brings the alarm forward for them. */
  private sendMetrics(): void {
    void sendMetricsSoon(this.env, this.metricsAlarm)
  }

  /**
   * The alarm as metrics may move it: not while it backs off (its failures count too, and would
   * bring it back every interval), nor once the storage is gone or was never made (an alarm
   * would make it again). Judged when it would be set.
   */
  private readonly metricsAlarm = guardedAlarm(
    this.ctx.storage,
    () =>
      !this.purged &&
      this.setup !== null &&
      this.alarmFailures.value === 0 &&
      this.loadFailure === null,
  )

  /**
   * Everything the clock owes the game up to `now`, in time order: each group of graces that
   * ended (preceded by the tick of its moment), then, for rules with a tick loop, the tick of
   * `now`. The alarm runs it; so does any input to a tick-loop game, before the input, since a
   * frame may arrive before a late alarm and must not jump the clock past graces that ended.
   */
  private runClock(now: number): void {
    const dueBy = () =>
      all<{ player_id: string; due: number }>(
        this.sql,
        `SELECT player_id, due FROM timers WHERE due <= ? ORDER BY due, player_id`,
        now,
      )
    let due = dueBy()
    let putOff = 0
    for (let i = 0; i < due.length && this.status === 'live';) {
      // Graces that end at the same moment (nobody connected at all, or every socket lost in
      // a restart) end together: in player-id order, the first absences would hand the last
      // player a win by forfeit for having left as they did.
      let end = i
      while (end < due.length && due[end]!.due === due[i]!.due) end++
      const together = due.slice(i, end).map((d) => d.player_id)
      // The graces ended at `due`, however late the clock runs: what the game's clock did
      // before then happens first, and the absences are stamped with that moment.
      const tick = this.tickAt(due[i]!.due)
      i = end
      this.catchUp(tick)
      // Deadlines before this grace's end are left: the alarm, due at once, plays them, then
      // the grace, in order (the grace's timers stay until then).
      if (this.clockBehind) return
      if (this.status !== 'live') break
      if (this.abandonedBy(together, tick)) {
        // Put off to a later grace's end (abandonedBy): if that one has ended too, the two are
        // judged together in this run, as they would have been by an alarm between them.
        // Each put-off merges a group into a later one, so this ends; bounded all the same.
        if (this.status === 'live' && ++putOff <= this.setup!.roster.length) {
          due = dueBy()
          i = 0
        }
        continue
      }
      for (const player of together) {
        if (this.status !== 'live') break
        const out = this.applyInput({ kind: 'absent', player, tick }, () => {
          this.sql.exec(`DELETE FROM timers WHERE player_id = ?`, player)
          this.sql.exec(`INSERT OR IGNORE INTO absent (player_id) VALUES (?)`, player)
        })
        // "The game said I forfeited": the grace that ran out, and whose.
        log('info', 'player absent past the grace', { actor: this.actor, player })
        if (isRuleError(out)) {
          log('debug', 'absence refused by the rules', {
            actor: this.actor,
            player,
            ...out.error,
          })
        }
      }
    }
    this.catchUp(this.tickAt(now))
  }

  /**
   * A player's socket back: their grace ends. One back within a grace put off for them (past
   * their own) settles the wait for everyone: the others' graces running now are settled (not
   * put off again), so a player who came back, whichever it was, wins when the others' end
   * (abandonedBy) rather than having them put off to their next absence.
   */
  private cameBack(player: string): void {
    const mine = one<{ due: number }>(
      this.sql,
      `DELETE FROM timers WHERE player_id = ? RETURNING due`,
      player,
    )
    if (mine === undefined) return
    if (this.putOffGraces()[player] !== mine.due) return
    // Apart from the graces abandonedBy put off: these did not let anyone back past their own,
    // and a return within one of them settles nothing.
    const settled = this.settledGraces()
    for (const t of all<{ player_id: string; due: number }>(
      this.sql,
      `SELECT player_id, due FROM timers WHERE due != ?`,
      this.joinDue,
    )) {
      settled[t.player_id] = t.due
    }
    this.setMeta('settled_graces', JSON.stringify(settled))
  }

  /** Each grace put off to a later leaver's end (abandonedBy), by player: the end it was put to. */
  private putOffGraces(): Record<string, number> {
    return JSON.parse(this.getMeta('put_off') ?? '{}') as Record<string, number>
  }

  /**
   * Graces running when a player came back within a grace put off for them (cameBack), by
   * player: the end each had then. Not put off again (abandonedBy).
   */
  private settledGraces(): Record<string, number> {
    return JSON.parse(this.getMeta('settled_graces') ?? '{}') as Record<string, number>
  }

  /**
   * Ends the game without a winner, for rules that can say so (`onAbandon`), when `players`,
   * whose graces ended together, are everyone still in it but players who never came (still
   * within their join grace); false when that is not the case. One at a time, the first reported
   * would hand the last a win by forfeit for leaving as they did, or for never playing at all.
   * When the others still in have left too, their graces still running, these graces are made
   * to end with the last of theirs (true, nothing applied yet).
   */
  private abandonedBy(players: string[], tick: number): boolean {
    if (!this.rules!.onAbandon) return false
    const leaving = new Set(players)
    // Still in: those whose absence the rules would take. Not the `absent` table: a player who
    // forfeited and came back to watch, or one the potato knocked out, is out of it yet not there.
    const stillIn = this.setup!.roster.filter(
      (p) =>
        !isRuleError(step(this.rules!, this.match!, { kind: 'absent', player: p.playerId, tick })),
    )
    const timers = all<{ player_id: string; due: number }>(
      this.sql,
      `SELECT player_id, due FROM timers`,
    )
    const neverCame = new Set(timers.filter((t) => t.due === this.joinDue).map((t) => t.player_id))
    // Left too, their own grace still running (no socket since).
    const awayUntil = new Map(
      timers
        .filter((t) => t.due !== this.joinDue && !leaving.has(t.player_id))
        .map((t) => [t.player_id, t.due]),
    )
    if (stillIn.length < 2) return false
    const gone = (id: string) => leaving.has(id) || neverCame.has(id)
    if (!stillIn.every((p) => gone(p.playerId) || awayUntil.has(p.playerId))) return false
    const later = stillIn
      .filter((p) => awayUntil.has(p.playerId))
      .map((p) => awayUntil.get(p.playerId)!)
    if (later.length > 0) {
      // A player who never came is not waited for: the join grace was their chance (and, moved,
      // their timer would read as a grace of one who had played, to come back to after it).
      if (players.some((p) => neverCame.has(p))) return false
      // Put off once only. A grace already put off that finds a later one still running at its
      // new end means one of the others came back since (and left again): they won, now.
      const putOff = this.putOffGraces()
      const settled = this.settledGraces()
      const dueOf = new Map(timers.map((t) => [t.player_id, t.due]))
      const waitedOnce = (p: string, marks: Record<string, number>) =>
        Object.hasOwn(marks, p) && marks[p] === dueOf.get(p)
      if (players.some((p) => waitedOnce(p, putOff) || waitedOnce(p, settled))) return false
      // Everyone else still in has left too, a moment later: taken now, the later leaver would
      // win by this one's forfeit. These graces run on to the last of theirs instead, and end
      // with it: together, the game is abandoned; if one of them comes back first, these
      // forfeit then, and the one who came back plays on (or wins).
      const until = Math.max(...later)
      for (const player of players) {
        this.sql.exec(`UPDATE timers SET due = ? WHERE player_id = ?`, until, player)
        putOff[player] = until
      }
      this.setMeta('put_off', JSON.stringify(putOff))
      return true
    }
    // Rules that refuse it (a module in plain JavaScript may) hear the absences one at a time
    // instead: marked absent without them, the players would be out to the session and in to
    // the rules, with no grace left to end the game.
    const trial = step(this.rules!, this.match!, { kind: 'abandon', tick })
    if (isRuleError(trial)) {
      log('debug', 'abandon refused by the rules', { actor: this.actor, ...trial.error })
      return false
    }
    this.applyInput({ kind: 'abandon', tick }, () => {
      for (const player of players) {
        this.sql.exec(`DELETE FROM timers WHERE player_id = ?`, player)
        this.sql.exec(`INSERT OR IGNORE INTO absent (player_id) VALUES (?)`, player)
      }
    })
    return true
  }

  private async scheduleAlarm(): Promise<void> {
    if (this.purged || !this.setup) return
    const now = this.now()
    const candidates: number[] = []
    // A game over by rules a deploy changed (load()) takes no tick and no absence, so is woken
    // for neither: each such wake would be refused, and come straight back.
    if (this.status === 'live' && !this.overByTheRules()) {
      const t = one<{ t: number | null }>(this.sql, `SELECT min(due) AS t FROM timers`)?.t
      if (t != null) candidates.push(t)
      const rate = this.rules?.tickRate
      if (rate && this.wakesOnHint()) {
        // Rules that name their next deadline are woken for it alone, not every tick.
        let tick = this.wakeTick()
        // A `quietUntil` that has come: a tick loop from then on, each tick once.
        if (tick !== null && !this.rules!.nextTick) tick = Math.max(tick, this.tickAt(now) + 1)
        if (tick !== null && this.stalledDeadline !== null && tick <= this.stalledDeadline) {
          tick = null
        }
        if (tick !== null) candidates.push(this.createdAt + Math.ceil((tick * 1000) / rate))
      } else if (rate) {
        candidates.push(this.createdAt + ((this.tickAt(now) + 1) * 1000) / rate)
      }
    }
    if (this.status === 'live' && !this.overByTheRules()) {
      // A watchdog: sockets lost with the object (a deploy, a restart) report no close, and only
      // a wake starts their grace (load()); nor do connections that died (dropSilentSockets).
      // Without it a game whose players all left that way would wait for a request that may
      // never come, and never end. (A game over by rules a deploy changed waits for an admin's
      // end, which no grace brings nearer.)
      candidates.push(now + this.graceMs)
    }
    // Work under way arms the alarm itself when it is done (alarm()).
    const w = this.working
      ? null
      : one<{ t: number | null }>(
          this.sql,
          `SELECT min(next_attempt_at) AS t FROM work WHERE stage != 'done'`,
        )?.t
    if (w != null) candidates.push(w)
    if (candidates.length === 0) return
    const next = Math.max(now, Math.min(...candidates))
    const existing = await this.ctx.storage.getAlarm()
    if (existing === null || existing > next || existing < now) {
      await this.ctx.storage.setAlarm(next)
    }
  }

  /**
   * Runs pending durable work (register, then the end's stages) until done, out of time, or
   * failed (then it backs off). One run at a time: a concurrent caller waits for the running one.
   * `force` ignores a backoff (not the retention period). Returns the end's progress.
   */
  async runEndWork(opts: { force?: boolean } = {}): Promise<EndStatus | null> {
    this.refuseUnloadable()
    if (!this.setup) return this.endStatus()
    if (!this.working) {
      this.working = this.workLoop(opts.force ?? false).finally(() => {
        this.working = null
      })
    }
    await this.working
    return this.endStatus()
  }

  private async workLoop(force: boolean): Promise<void> {
    const deadline = this.now() + WORK_BUDGET_MS
    for (let i = 0; i < 10_000 && !this.purged; i++) {
      const now = this.now()
      // The first job due, not the first job: one backing off (the end, Neon down) must not hide
      // another that is due (the listing), whose time the alarm is set for, or that alarm finds
      // nothing to do and is set for now again, for as long as the backoff lasts.
      const job = one<WorkRow>(
        this.sql,
        `SELECT * FROM work WHERE stage != 'done'
           AND (next_attempt_at <= ? OR (? AND stage != 'retain'))
         ORDER BY job LIMIT 1`,
        now,
        force ? 1 : 0,
      )
      if (!job) return
      if (now > deadline) return
      try {
        await this.workStep(job)
      } catch (err) {
        const attempts = job.attempts + 1
        const backoff = spreadBackoffMs(attempts, MAX_BACKOFF_MS)
        const message = errorMessage(err)
        if (this.purged) return
        this.sql.exec(
          `UPDATE work SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE job = ?`,
          attempts,
          this.now() + backoff,
          message.slice(0, 500),
          job.job,
        )
        endRetries.inc({ job: job.job, stage: job.stage })
        this.sendMetrics()
        log(err instanceof RetryLater ? 'info' : 'warn', 'session work failed; will retry', {
          actor: this.actor,
          job: job.job,
          stage: job.stage,
          attempts,
          backoffMs: backoff,
          ...errorFields(err),
        })
        return
      }
      force = false
    }
  }

  private advance(job: string, stage: string, extra: { cursor?: number; due?: number } = {}): void {
    this.sql.exec(
      `UPDATE work SET stage = ?, cursor = coalesce(?, cursor), attempts = 0, next_attempt_at = ?,
              last_error = NULL WHERE job = ?`,
      stage,
      extra.cursor ?? null,
      extra.due ?? 0,
      job,
    )
  }

  private async workStep(job: WorkRow): Promise<void> {
    const setup = this.setup!
    const record = {
      sessionId: setup.sessionId,
      rules: setup.rules,
      roster: setup.roster,
      queue: setup.queue,
      region: setup.region,
    }
    if (job.job === 'register') {
      await this.store.register(record, this.createdAt)
      // Asked once the listing has committed: an erasure committed before this question is found
      // here, and one committed after it finds the session listed when its walk asks Neon
      // (workers/sessions/erased-players.ts). Neither can miss both.
      const ids = setup.roster.map((p) => p.playerId)
      for (const id of await this.store.erasedAmong(ids, this.madeAt)) {
        await this.removeErasedPlayer(id)
      }
      this.advance('register', 'done')
      return
    }
    switch (job.stage) {
      case 'record': {
        const result = JSON.parse(this.getMeta('result')!) as GameResult
        const endedAt = Number(this.getMeta('ended_at'))
        let out: Awaited<ReturnType<SessionStore['recordResult']>>
        try {
          out = await this.store.recordResult({
            ...record,
            result,
            createdAt: this.createdAt,
            madeAt: this.madeAt,
            endedAt,
          })
        } catch (err) {
          // The board needs nothing from Neon: the win goes on the cycle the game ended in,
          // not on whichever is live when Neon is back (a weekly board closing in an outage
          // would leave out every win of its last hours). The stage after the result finds
          // those winners done.
          if (setup.leaderboardId && isDatabaseUnreachable(err)) {
            await this.submitToLeaderboard(setup.leaderboardId, { neonDown: true }).catch(
              (e: unknown) =>
                log('warn', 'win not submitted ahead of its result', {
                  actor: this.actor,
                  ...errorFields(e),
                }),
            )
          }
          throw err
        }
        this.ctx.storage.transactionSync(() => {
          this.setMeta('rating_changes', JSON.stringify(out.ratingChanges))
          // Erased players' wins go on no board (workers/players/erasure.ts). They read the game
          // no more either, as if the erasure's walk had reached it (it asked before this
          // session was listed, or while its result was being recorded).
          if (out.erased.length > 0) {
            this.setMeta('erased', JSON.stringify(out.erased))
            const erased = new Set([...this.erasedPlayers, ...out.erased])
            this.setMeta('erased_players', JSON.stringify([...erased]))
            this.erasedPlayers = erased
          }
          // The result upserted the session's Neon row too.
          this.advance('register', 'done')
          this.advance('end', setup.leaderboardId ? 'submit' : 'archive')
        })
        if (out.recorded) endsRecorded.inc({ rules: setup.rules })
        this.sendMetrics()
        log('info', 'result recorded', { actor: this.actor, recorded: out.recorded })
        return
      }
      case 'submit': {
        await this.submitToLeaderboard(setup.leaderboardId!)
        this.advance('end', 'archive')
        return
      }
      case 'archive': {
        const rows = all<{ seq: number; record: string }>(
          this.sql,
          `SELECT seq, record FROM log WHERE seq > ? ORDER BY seq LIMIT ?`,
          job.cursor,
          ARCHIVE_PAGE_SIZE,
        )
        if (rows.length === 0) {
          this.advance('end', 'retain', { due: this.now() + this.retentionMs })
          return
        }
        const page = pageBySize(rows, ARCHIVE_PAGE_CHARS)
        await this.store.archiveLog(
          setup.sessionId,
          page.map((r) => JSON.parse(r.record) as LogRecord),
        )
        // Neon has the page: only now does the cursor move past it.
        this.advance('end', 'archive', { cursor: page[page.length - 1]!.seq })
        return
      }
      case 'retain': {
        // Neon keeps what a late create is answered from; the object then keeps nothing.
        const notSubmitted = this.notSubmittedWins()
        const lastSeq = one<{ n: number }>(
          this.sql,
          `SELECT coalesce(max(seq), 0) AS n FROM log`,
        )!.n
        const kept = await this.store.keepSetup(
          setup.sessionId,
          this.setupHash!,
          {
            seed: setup.seed,
            options: setup.options ?? null,
            madeAt: this.madeAt,
            ...(notSubmitted.length > 0 ? { notSubmitted } : {}),
          },
          lastSeq,
        )
        if (!kept) {
          // Neon lacks what this object wrote of the game (restored to a point before it): the
          // object still has it all, so it is written again, as at the end (a result recorded
          // once, against the ratings as they are now; a win a board has is not sent again; log
          // pages Neon has change nothing), and only then cleared, a retention period later.
          log('warn', 'ended game missing from Neon (restored?); recording it again', {
            actor: this.actor,
            lastSeq,
          })
          this.advance('end', 'record', { cursor: 0 })
          return
        }
        await this.purge()
        return
      }
      default:
        throw new Error(`unknown stage ${job.stage}`)
    }
  }

  /**
   * Winners get score 1 on the queue's board; the key makes a repeated submission a replay. The
   * winners are every member of a team placed first: the team the ratings count as the winner;
   * with everyone on one team, the winner alone.
   */
  private async submitToLeaderboard(
    boardId: string,
    opts: { neonDown?: boolean } = {},
  ): Promise<void> {
    const setup = this.setup!
    const result = JSON.parse(this.getMeta('result')!) as GameResult
    // A game of one beat nobody: a solo dice race played to its end, again and again, would
    // farm a win each time (ratings count it as no match either).
    if (result.winner === null || result.placements.length < 2) return
    const winningTeams = new Set(result.placements.filter((x) => x.place === 1).map((x) => x.team))
    // Winners done with are noted (on the board, refused, or given up on below), so a stage
    // retried past the board's 24 h memory of idempotency keys (a winner rate-limited, a board
    // down for a day) never counts one twice, nor a refusal twice.
    const submitted = new Set(JSON.parse(this.getMeta('submitted') ?? '[]') as string[])
    const doneWith = (playerId: string) => {
      submitted.add(playerId)
      this.setMeta('submitted', JSON.stringify([...submitted]))
    }
    // A win given up on is kept for the admin's read of the session (and Neon's, once cleared):
    // support asked "where is my win?" finds the answer there, not only in a log line.
    const notSubmitted = this.notSubmittedWins()
    const giveUp = (playerId: string, reason: string, detail: string) => {
      doneWith(playerId)
      notSubmitted.push({ playerId, reason, detail: detail.slice(0, NOT_SUBMITTED_DETAIL_CHARS) })
      this.setMeta('not_submitted', JSON.stringify(notSubmitted))
      resultsNotSubmitted.inc({ reason })
    }
    // A call whose answer never came may have counted the win: when each such call began. Its
    // retry is a replay only while the board remembers the key, so after that it is not sent.
    const unanswered = JSON.parse(this.getMeta('submit_unanswered') ?? '{}') as Record<
      string,
      number
    >
    const saveUnanswered = () => this.setMeta('submit_unanswered', JSON.stringify(unanswered))
    // Everyone on one team (a free-for-all queue, `teams: 1`): the team is no side, and only the
    // winner won (the ratings count nobody: a match needs two sides).
    const oneTeam = new Set(result.placements.map((x) => x.team)).size < 2
    const winners = result.placements.filter((x) =>
      oneTeam ? x.playerId === result.winner : winningTeams.has(x.team),
    )
    // Erased when the result was recorded, or since (this stage may run long after).
    const erased = new Set(JSON.parse(this.getMeta('erased') ?? '[]') as string[])
    const pending = winners
      .map((w) => w.playerId)
      .filter((id) => !submitted.has(id) && !erased.has(id))
    // Neon down: the board's own check of the token's time (below) stands alone; it refuses the
    // players whose erasure has reached it (none can begin while Neon is down).
    if (!opts.neonDown) {
      for (const id of await this.store.erasedAmong(pending, this.madeAt)) erased.add(id)
    }
    for (const p of winners) {
      if (submitted.has(p.playerId) || erased.has(p.playerId)) continue
      // Own members only: ids are refused at the door if they name one of the prototype's, but a
      // record written before that must not read `constructor` as a time.
      const since = Object.hasOwn(unanswered, p.playerId) ? unanswered[p.playerId] : undefined
      if (since !== undefined && this.now() - since >= UNANSWERED_RETRY_MS) {
        giveUp(
          p.playerId,
          'unanswered',
          `The board never answered the call made at ${new Date(since).toISOString()}: it may ` +
            'have counted the win, and a retry now could count it twice',
        )
        this.sendMetrics()
        log(
          'error',
          'session result not submitted: the board never answered, and a retry now could count it twice',
          {
            actor: this.actor,
            boardId,
            player: p.playerId,
            firstCallAt: since,
          },
        )
        continue
      }
      const idempotencyKey = `${MATCH_WIN_KEY_PREFIX}${setup.sessionId}`
      const requestHash = await sha256Hex(
        canonicalJson([
          boardId,
          p.playerId,
          MATCH_WIN.score,
          MATCH_WIN.subscore,
          null,
          idempotencyKey,
        ]),
      )
      // Noted before the call, not once it went unanswered: an object reset while the call is
      // out (a deploy) never sees it fail, and the board may have kept the key.
      if (since === undefined) {
        unanswered[p.playerId] = this.now()
        saveUnanswered()
      }
      const submitting = boardStub(this.env, boardId).submit({
        boardId,
        playerId: p.playerId,
        score: MATCH_WIN.score,
        subscore: MATCH_WIN.subscore,
        metadata: null,
        idempotencyKey,
        requestHash,
        // As a token from the session's creation: a board the winner's erasure has walked
        // refuses it, even when Neon showed no erasure a moment ago (erasedAmong above).
        tokenIssuedAt: this.madeAt,
      })
      // A board that never answers would hold the end's work, and the alarm waiting on it.
      const reply = await within(submitting, this.boardCallMs, 'board submit')
      if (reply.ok) {
        doneWith(p.playerId)
        continue
      }
      if (reply.problem === 'rate-limited') {
        // Past the limit the board answers a key it keeps as a replay: this one it does not
        // keep, so no call of this win has counted, and its retries have their full time again.
        delete unanswered[p.playerId]
        saveUnanswered()
        throw new RetryLater(reply.detail)
      }
      // The board could not read its configuration (Neon down at its cold start), or could not
      // settle a lost deletion: answered before it looks at the key, so this call did not count,
      // and if it was the first, nothing has: retried until it lands.
      if (reply.problem === 'unavailable' || reply.problem === 'internal') {
        if (since === undefined) {
          delete unanswered[p.playerId]
          saveUnanswered()
        }
        throw new Error(reply.detail)
      }
      // A missing board or a score it refuses will not get better by retrying: noted as done
      // with, so a retry of the stage for another winner neither sends it nor counts it again.
      // A paused board's refusal apart from a full one's (both `conflict`): its own reason.
      giveUp(p.playerId, reply.extensions?.paused === true ? 'paused' : reply.problem, reply.detail)
      this.sendMetrics()
      log('warn', 'leaderboard refused a session result', {
        actor: this.actor,
        boardId,
        player: p.playerId,
        problem: reply.problem,
        detail: reply.detail,
      })
    }
  }

  /**
   * Clears the storage once Neon has everything. Nothing is kept: an object with no stored data is
   * not billed, where a tombstone made every match ever played cost its object's empty tables
   * (about 28 KB) for good. Reads then come from Neon, and a late create is answered from the
   * setup hash Neon keeps (`keepSetup`).
   */
  private async purge(): Promise<void> {
    const sessionId = this.setup?.sessionId ?? ''
    this.resuming.clear()
    for (const ws of this.ctx.getWebSockets()) {
      try {
        ws.close(1001, 'session archived')
      } catch {
        // Closing already.
      }
    }
    // One step: a crash leaves either the whole session, alarm and all (the alarm comes back to
    // clear it), or nothing. deleteAll() takes the alarm too (compatibility dates from
    // 2026-02-24); the deleteAlarm() after it is for a runtime that does not.
    await this.ctx.storage.deleteAll()
    await this.ctx.storage.deleteAlarm()
    this.alarmFailures.forget()
    this.setup = null
    this.setupHash = null
    this.rules = null
    this.match = null
    this.status = null
    this.purged = true
    log('info', 'session storage cleared', { actor: this.actor, sessionId })
  }
}

function doneStatus(): EndStatus {
  return {
    stage: 'done',
    archived: 0,
    attempts: 0,
    nextAttemptAt: null,
    lastError: null,
    notSubmitted: [],
  }
}

function send(ws: WebSocket, message: ServerMessage): void {
  try {
    ws.send(JSON.stringify(message))
  } catch {
    // Closed meanwhile: its close handler deals with the player.
  }
}

/** A record's event frame; with its action's ref when `to` is the player who sent it. */
function eventFrame(record: LogRecord, to?: string): string {
  const { input } = record
  const ref = input.kind === 'action' && input.player === to ? input.ref : undefined
  return JSON.stringify({
    type: 'event',
    seq: record.seq,
    tick: input.tick,
    event: record.event,
    ...(ref !== undefined ? { ref } : {}),
  } satisfies ServerMessage)
}

/**
 * The ref of a frame refused before it was read (over the rate, or failing): read when it is
 * small enough to be an action at all, so a client learns which of its actions was refused.
 */
function refOf(message: string | ArrayBuffer): ActionRef | undefined {
  if (typeof message !== 'string' || exceedsUtf8Bytes(message, MAX_FRAME_BYTES)) return undefined
  try {
    const ref = (JSON.parse(message) as { ref?: unknown } | null)?.ref
    const parsed = ActionRef.safeParse(ref)
    return parsed.success ? parsed.data : undefined
  } catch {
    return undefined
  }
}

/**
 * Each socket's attachment, read once per wake: only `heardAt` changes after accept, written
 * through this object.
 */
const attachments = new WeakMap<WebSocket, Attachment>()

function attachment(ws: WebSocket): Attachment | null {
  const known = attachments.get(ws)
  if (known) return known
  const a = ws.deserializeAttachment() as Attachment | null
  if (!a || typeof a.playerId !== 'string') return null
  attachments.set(ws, a)
  return a
}

/** The longest prefix of `rows` whose record text stays within `maxChars`; never empty. */
function pageBySize<T extends { record: string }>(rows: T[], maxChars: number): T[] {
  let chars = 0
  let end = 0
  while (end < rows.length && (end === 0 || chars + rows[end]!.record.length <= maxChars)) {
    chars += rows[end]!.record.length
    end++
  }
  return rows.slice(0, end)
}
