import type { GameResult, LogRecord, RosterEntry } from '../core/rules/index.ts'
import { defaultRating, idleRating, updateRatings, type RatedPlayer } from '../core/rating.ts'
import { RATED_AT_MS } from '../players/profile.ts'
import { getSql, pgErrorCode, type DbEnv } from '../db/client.ts'
import { isoMicros } from '../db/iso-time.ts'
import { storableJsonText } from '../core/rules/json.ts'
import { GUEST_ID_PREFIX } from '../lib/auth.ts'

/** A session as Neon lists it (`game_sessions`). */
export interface SessionRecord {
  sessionId: string
  rules: string
  roster: RosterEntry[]
  queue: string | null
  region: string | null
}

/** A player's rating before and after one match. */
export interface RatingChange {
  playerId: string
  before: { rating: number; rd: number; volatility: number }
  after: { rating: number; rd: number; volatility: number }
}

export interface ResultInput extends SessionRecord {
  result: GameResult
  /** When the session was created: its Neon row's `created_at` if the listing had not landed. */
  createdAt: number
  /**
   * The match's time (when its earliest ticket joined its pool; `createdAt` if not given):
   * players erased since have nothing of it kept, one erased before it whose id came back plays
   * as new.
   */
  madeAt?: number
  endedAt: number
}

export interface Recorded {
  /** False when the result was already recorded (a repeated or racing end): nothing changed. */
  recorded: boolean
  /**
   * The result's rating changes: applied by this call, or, when it was already recorded, as the
   * call that recorded it applied them (a retry after a lost answer still learns them).
   */
  ratingChanges: RatingChange[]
  /**
   * Players of the result erased since the match's time (`madeAt`): no rating of theirs
   * changed, no profile was made for them, and nothing of theirs is to go on a board.
   */
  erased: string[]
}

/**
 * Where a GameSession's durable facts go. One implementation writes to Neon; tests wrap it to
 * inject faults (Neon down, a crash after commit).
 */
export interface SessionStore {
  /** Lists the session (status `live`); doing it again changes nothing. */
  register(session: SessionRecord, createdAt: number): Promise<void>
  /**
   * Records the result and updates the players' ratings in one transaction, only if the result
   * is new: a second call for the same session (retry, race) changes nothing.
   */
  recordResult(input: ResultInput): Promise<Recorded>
  /** Archives log records; writing the same records again changes nothing. */
  archiveLog(sessionId: string, records: readonly LogRecord[]): Promise<void>
  /**
   * Of `ids`, the players erased since `since` (ms), and erased guests whenever
   * (ERASURE_COUNTS): nothing of theirs goes on a board.
   */
  erasedAmong(ids: readonly string[], since: number): Promise<string[]>
  /**
   * Keeps the setup's hash on the session's Neon row before the object's storage is cleared, so
   * that a keyed admin create sent again later is answered from it, and the seed and options, so
   * that the archived log still replays (an admin's audit). False, keeping nothing, unless Neon
   * holds the ended game whole: its row finished, its result, and its log up to `lastSeq` (a
   * database restored to a point before the object wrote them has lost them).
   */
  keepSetup(
    sessionId: string,
    setupHash: string,
    kept: KeptSetup,
    lastSeq: number,
  ): Promise<boolean>
  /** The setup hash Neon keeps for a session whose storage was cleared, or null. */
  archivedSetupHash(sessionId: string): Promise<string | null>
}

/**
 * Of erased players (alias `e`), those whose erasure counts against a match made at `$2` (ms
 * since the epoch): erased since, or a guest, whose id never comes back (its device signs in as
 * a new player), erased whenever.
 */
const ERASURE_COUNTS = `(e.erased_at >= to_timestamp($2 / 1000.0)
                          or starts_with(e.id, '${GUEST_ID_PREFIX}'))`

/** Players of `$1` whose erasure counts against a match made at `$2` (ERASURE_COUNTS). */
const ERASED_SINCE = `select id from erased_players e
                       where id = any($1::text[]) and ${ERASURE_COUNTS}`

/** Optimistic rating updates retry this often when another match rated the same players meanwhile. */
const RATING_ATTEMPTS = 5

/**
 * Whether a result changes ratings: abandoned and cancelled games do not (nobody won), and a match
 * needs two teams to be rated at all.
 */
export function isRated(result: GameResult): boolean {
  if (result.reason === 'abandoned' || result.reason === 'cancelled') return false
  return new Set(result.placements.map((p) => p.team)).size >= 2
}

/**
 * New ratings for a result: one team per team index, placed at its best member's place (Glicko-2
 * over pairwise team results, see workers/core/rating.ts).
 *
 * @example
 * ratingChangesFor(result, new Map([['a', { rating: 1500, rd: 350, volatility: 0.06 }]]))
 */
export function ratingChangesFor(
  result: GameResult,
  current: ReadonlyMap<string, { rating: number; rd: number; volatility: number }>,
): RatingChange[] {
  if (!isRated(result)) return []
  const byTeam = new Map<number, { players: RatedPlayer[]; place: number }>()
  for (const p of result.placements) {
    const r = current.get(p.playerId) ?? defaultRating()
    const team = byTeam.get(p.team) ?? { players: [], place: p.place }
    team.players.push({ id: p.playerId, ...r })
    team.place = Math.min(team.place, p.place)
    byTeam.set(p.team, team)
  }
  const teams = [...byTeam.entries()].sort((a, b) => a[0] - b[0]).map(([, t]) => t)
  const rated = updateRatings(
    teams.map((t) => t.players),
    teams.map((t) => t.place),
  )
  return rated.map((after) => {
    const before = current.get(after.id) ?? defaultRating()
    return {
      playerId: after.id,
      before: { rating: before.rating, rd: before.rd, volatility: before.volatility },
      after: { rating: after.rating, rd: after.rd, volatility: after.volatility },
    }
  })
}

/**
 * `keepSetup`'s statement. The log's last record stands for the rest: pages are archived in
 * order, each in one statement, so whatever point Neon is restored to holds a first part of the
 * log. (Counting the rows instead read a relay game's 500,000 from the table, past the 8 s
 * deadline, on every try: the object then never cleared.)
 */
export const KEEP_SETUP = `update game_sessions s set setup_hash = $2, setup = $3::jsonb
  where s.id = $1 and s.status = 'finished'
    and exists (select 1 from match_results r where r.session_id = $1)
    and ($4::bigint = 0 or exists (select 1 from session_logs l
                                    where l.session_id = $1 and l.seq = $4::bigint))
  returning 1 as kept`

/**
 * The Neon implementation, over the HTTP driver (no interactive transactions):
 *
 * - `recordResult` reads the players' ratings, computes the new ones, then writes in one
 *   transaction whose main statement inserts the `match_results` row (primary key: the session)
 *   and, only if that insert happened, updates the ratings — guarded by the values it read, so a
 *   rating another match changed in between makes the statement fail (division by zero on a
 *   count mismatch) and the whole write is retried from a fresh read. Two ends of one session
 *   racing: the second waits on the primary key, inserts nothing, updates nothing.
 * - `archiveLog` inserts records with ON CONFLICT DO NOTHING on (session, seq).
 */
export class NeonSessionStore implements SessionStore {
  private readonly env: DbEnv

  constructor(env: DbEnv) {
    this.env = env
  }

  async keepSetup(
    sessionId: string,
    setupHash: string,
    kept: KeptSetup,
    lastSeq: number,
  ): Promise<boolean> {
    const rows = await getSql(this.env).query(KEEP_SETUP, [
      sessionId,
      setupHash,
      JSON.stringify(kept),
      lastSeq,
    ])
    return rows.length > 0
  }

  /** The setup hash Neon keeps for a session whose storage was cleared, or null. */
  async archivedSetupHash(sessionId: string): Promise<string | null> {
    const [row] = (await getSql(this.env).query(
      `select setup_hash from game_sessions where id = $1`,
      [sessionId],
    )) as { setup_hash: string | null }[]
    return row?.setup_hash ?? null
  }

  async register(s: SessionRecord, createdAt: number): Promise<void> {
    const sql = getSql(this.env)
    await sql.query(
      `insert into game_sessions (id, queue, region, rules, roster, status, created_at)
       values ($1, $2, $3, $4, $5::jsonb, 'live', to_timestamp($6 / 1000.0))
       on conflict (id) do nothing`,
      [s.sessionId, s.queue, s.region, s.rules, JSON.stringify(s.roster), createdAt],
    )
  }

  async recordResult(input: ResultInput): Promise<Recorded> {
    const ids = input.result.placements.map((p) => p.playerId)
    const madeAt = input.madeAt ?? input.createdAt
    for (let attempt = 1; ; attempt++) {
      const sql = getSql(this.env)
      const [rows, erasedRows] = (await sql.transaction([
        sql.query(
          `select id, rating, rating_deviation, rating_volatility, ${RATED_AT_MS} as rated_at
             from players where id = any($1::text[])`,
          [ids],
        ),
        // Erased since the match was made (a guest: ever); one erased before it who came back
        // (an identity provider's player keeps their id) plays as a new player.
        sql.query(ERASED_SINCE, [ids, madeAt]),
      ])) as [
        {
          id: string
          rating: number
          rating_deviation: number
          rating_volatility: number
          rated_at: number | null
        }[],
        { id: string }[],
      ]
      const erased = new Set(erasedRows.map((r) => r.id))
      const stored = new Map(
        rows.map((r) => [
          r.id,
          {
            rating: Number(r.rating),
            rd: Number(r.rating_deviation),
            volatility: Number(r.rating_volatility),
          },
        ]),
      )
      // Rated as they stand at the match's end: the days since their last rated match grew
      // their uncertainty (a player back after a year moves fast to where they now are).
      const current = new Map(
        rows.map((r) => [
          r.id,
          r.rated_at === null
            ? stored.get(r.id)!
            : idleRating(stored.get(r.id)!, input.endedAt - Number(r.rated_at)),
        ]),
      )
      // The others are rated against an erased player as against a new one; theirs is not kept.
      const changes = ratingChangesFor(input.result, current).filter((c) => !erased.has(c.playerId))
      // The write is guarded by the values read (a result of another match stored meanwhile
      // makes it read again), which are the stored ones, not those grown by idle days.
      const guard = changes.map((c) => stored.get(c.playerId) ?? defaultRating())
      // The players' rows are written in id order, whatever the roster's: two matches of the
      // same players ending at once then take their row locks in the same order, not each
      // waiting on the other's (a deadlock Postgres ends by failing one).
      const writes = changes
        .map((c, i) => ({ c, g: guard[i]! }))
        .sort((a, b) => (a.c.playerId < b.c.playerId ? -1 : a.c.playerId > b.c.playerId ? 1 : 0))
      try {
        const results = await sql.transaction([
          // Players of an identity provider appear on first use; new ones start at the defaults
          // the guard below expects. Not an erased one: one erased after the read above has no
          // row, so the guard's count fails and the read runs again, seeing the erasure.
          sql.query(
            // In id order, as the update below: two matches of the same new players, their
            // rosters in opposite orders, would otherwise each wait on the other's new row.
            `insert into players (id) select x from unnest($1::text[]) x
              where not exists (select 1 from erased_players e
                                 where e.id = x and ${ERASURE_COUNTS})
              order by x
             on conflict (id) do nothing`,
            [ids, madeAt],
          ),
          sql.query(
            `with ins as (
               insert into match_results (session_id, queue, rules, result, rating_changes)
               values ($1, $2, $3, $4::jsonb, $5::jsonb)
               on conflict (session_id) do nothing
               returning session_id
             ),
             upd as (
               update players p
                  set rating = u.rating, rating_deviation = u.rd, rating_volatility = u.vol,
                      updated_at = now(),
                      rated_at = greatest(p.rated_at, to_timestamp($14 / 1000.0))
                 from unnest($6::text[], $7::float8[], $8::float8[], $9::float8[],
                             $10::float8[], $11::float8[], $12::float8[])
                      as u(id, rating, rd, vol, old_rating, old_rd, old_vol)
                where p.id = u.id and exists (select 1 from ins)
                  and p.rating = u.old_rating and p.rating_deviation = u.old_rd
                  and p.rating_volatility = u.old_vol
               returning p.id
             )
             select (select count(*) from ins)::int as inserted,
                    1 / (case when not exists (select 1 from ins)
                                or (select count(*) from upd) = $13 then 1 else 0 end) as ok`,
            [
              input.sessionId,
              input.queue,
              input.rules,
              JSON.stringify(input.result),
              JSON.stringify(changes),
              writes.map((w) => w.c.playerId),
              writes.map((w) => w.c.after.rating),
              writes.map((w) => w.c.after.rd),
              writes.map((w) => w.c.after.volatility),
              writes.map((w) => w.g.rating),
              writes.map((w) => w.g.rd),
              writes.map((w) => w.g.volatility),
              changes.length,
              input.endedAt,
            ],
          ),
          sql.query(
            `insert into game_sessions (id, queue, region, rules, roster, status, created_at, ended_at)
             values ($1, $2, $3, $4, $5::jsonb, 'finished', to_timestamp($7 / 1000.0),
                     to_timestamp($6 / 1000.0))
             on conflict (id) do update set status = 'finished',
               ended_at = coalesce(game_sessions.ended_at, excluded.ended_at)`,
            [
              input.sessionId,
              input.queue,
              input.region,
              input.rules,
              JSON.stringify(input.roster),
              input.endedAt,
              input.createdAt,
            ],
          ),
          // A statement of its own, so its snapshot includes a racing record that committed
          // while the insert above waited on it (read committed: one snapshot per statement).
          sql.query(`select rating_changes from match_results where session_id = $1`, [
            input.sessionId,
          ]),
        ])
        const main = results[1] as { inserted: number }[]
        const stored = results[3] as { rating_changes: RatingChange[] | null }[]
        const inserted = Number(main[0]?.inserted ?? 0) === 1
        return {
          recorded: inserted,
          ratingChanges: inserted ? changes : (stored[0]?.rating_changes ?? []),
          erased: [...erased],
        }
      } catch (err) {
        // 22012: a rating changed between the read and the write; read again. 40P01: Postgres
        // ended a deadlock with another transaction on these rows (one not writing in id order).
        const code = pgErrorCode(err)
        if ((code === '22012' || code === '40P01') && attempt < RATING_ATTEMPTS) continue
        throw err
      }
    }
  }

  async erasedAmong(ids: readonly string[], since: number): Promise<string[]> {
    if (ids.length === 0) return []
    const rows = (await getSql(this.env).query(ERASED_SINCE, [ids, since])) as { id: string }[]
    return rows.map((r) => r.id)
  }

  async archiveLog(sessionId: string, records: readonly LogRecord[]): Promise<void> {
    if (records.length === 0) return
    const sql = getSql(this.env)
    await sql.query(
      `insert into session_logs (session_id, seq, record)
       select $1, u.seq, u.record::jsonb from unnest($2::int[], $3::text[]) as u(seq, record)
       on conflict (session_id, seq) do nothing`,
      // Such text is refused as input now; a log may still hold records written before that.
      [
        sessionId,
        records.map((r) => r.seq),
        records.map((r) => storableJsonText(JSON.stringify(r))),
      ],
    )
  }
}

/** A finished, purged session as Neon remembers it. */
/** What, beside the roster and the log, replays a session: its secret seed and rules options. */
export interface ReplayableSetup {
  seed: string
  options: unknown
}

/**
 * What a clearing keeps in Neon's `setup`: the replayable setup, and the match's time, which an
 * archived session's reads judge erasures by as its object did (absent for sessions cleared
 * before 2026-12-06: those are judged by their creation).
 */
export interface KeptSetup extends ReplayableSetup {
  madeAt?: number
  /** Absent when every win reached the board (and for sessions cleared before 2026-12-07). */
  notSubmitted?: NotSubmittedWin[]
}

export interface ArchivedSession {
  sessionId: string
  rules: string
  status: string
  roster: RosterEntry[]
  queue: string | null
  createdAt: number
  endedAt: number | null
  result: GameResult | null
  ratingChanges: RatingChange[] | null
  /** Null for a session cleared before 2026-12-05 (migration 0030), which kept only its hash. */
  setup: ReplayableSetup | null
  /** The match's time, where the clearing kept it (since 2026-12-06). */
  madeAt?: number
  /** Wins the end gave up putting on the queue's board (kept since 2026-12-07). */
  notSubmitted: NotSubmittedWin[]
}

/**
 * A winner whose win never reached the queue's board: `reason` is the board's problem type
 * (`forbidden`, `conflict`, `not-found`, …), `paused`, or `unanswered` (the board never
 * answered within its memory of keys, so a retry could have counted it twice).
 */
export interface NotSubmittedWin {
  playerId: string
  reason: string
  detail: string
}

/** A session from Neon (after its object's storage was cleared), or null. */
export async function loadArchivedSession(
  env: DbEnv,
  sessionId: string,
): Promise<ArchivedSession | null> {
  const sql = getSql(env)
  const rows = (await sql.query(
    `select s.id, s.rules, s.status, s.roster, s.queue,
            extract(epoch from s.created_at) * 1000 as created_at,
            extract(epoch from s.ended_at) * 1000 as ended_at,
            r.result, r.rating_changes, s.setup
       from game_sessions s left join match_results r on r.session_id = s.id
      where s.id = $1`,
    [sessionId],
  )) as {
    id: string
    rules: string
    status: string
    roster: RosterEntry[]
    queue: string | null
    created_at: string | number
    ended_at: string | number | null
    result: GameResult | null
    rating_changes: RatingChange[] | null
    setup: KeptSetup | null
  }[]
  const r = rows[0]
  if (!r) return null
  const { madeAt, notSubmitted, ...setup } = r.setup ?? { seed: '', options: null }
  return {
    sessionId: r.id,
    rules: r.rules,
    status: r.status,
    roster: r.roster,
    queue: r.queue,
    createdAt: Math.round(Number(r.created_at)),
    endedAt: r.ended_at === null ? null : Math.round(Number(r.ended_at)),
    result: r.result,
    ratingChanges: r.rating_changes,
    setup: r.setup === null ? null : setup,
    ...(typeof madeAt === 'number' ? { madeAt } : {}),
    notSubmitted: Array.isArray(notSubmitted) ? notSubmitted : [],
  }
}

/** Archived log records `from …` (inclusive), at most `limit`. */
export async function loadArchivedEvents(
  env: DbEnv,
  sessionId: string,
  from: number,
  limit: number,
): Promise<LogRecord[]> {
  const sql = getSql(env)
  const rows = (await sql.query(
    // bigint: `from` may lie past the int column's range (an empty page, not an error).
    `select record from session_logs where session_id = $1 and seq >= $2::bigint order by seq limit $3`,
    [sessionId, from, limit],
  )) as { record: LogRecord }[]
  return rows.map((r) => r.record)
}

/** What a session listing asks for (the admin's, or a player's own): any of the filters, newest first. */
export interface SessionListing {
  status?: 'live' | 'finished'
  queue?: string
  /** On the roster. */
  playerId?: string
  /**
   * With `playerId`: only sessions since the player's erasure, if any (a player of an identity
   * provider who came back under the id is a new player; what was erased is not theirs to read).
   */
  sinceErasure?: boolean
  /** Older than this row (a cursor's): its `created_at` to the microsecond, and its id. */
  after?: { time: string; sessionId: string }
  limit: number
}

/** A session as the listing gives it. */
export interface ListedSession {
  sessionId: string
  rules: string
  status: 'live' | 'finished'
  roster: RosterEntry[]
  queue: string | null
  region: string | null
  createdAt: number
  endedAt: number | null
  /** How it ended (its result's reason); null while live. */
  reason: 'finished' | 'forfeit' | 'abandoned' | 'cancelled' | null
  winner: string | null
  /** With `playerId`: that player's place, and their rating change (null if unrated). */
  place: number | null
  ratingChange: Omit<RatingChange, 'playerId'> | null
  /** `created_at` to the microsecond, for the cursor. */
  cursorTime: string
}

/**
 * The listing's statement, built with only the filters asked for, so that each page is read in
 * an index's order: a player's from `session_players` (their sessions by time; their live ones
 * from `live_session_players`), a queue's and the whole table's on (…, created_at) walked
 * backwards.
 */
export function sessionListQuery(f: SessionListing): { text: string; params: unknown[] } {
  const params: unknown[] = []
  const param = (value: unknown): string => `$${params.push(value)}`
  const where: string[] = []
  // Without a player, their place and rating change are null: `player` stays null.
  let player = 'null::text'
  // The (time, id) the page is ordered and cut by: the player's index rows, or the sessions'.
  let order = ['s.created_at', 's.id']
  let from = 'game_sessions s'
  if (f.playerId !== undefined) {
    player = `${param(f.playerId)}::text`
    // A player's live sessions from the table of live ones alone: their history may be thousands
    // of finished ones, which a page of live ones would otherwise walk to the end.
    const players = f.status === 'live' ? 'live_session_players' : 'session_players'
    from = `${players} sp join game_sessions s on s.id = sp.session_id`
    order = ['sp.created_at', 'sp.session_id']
    where.push(`sp.player_id = ${player}`)
    if (f.sinceErasure) {
      where.push(`sp.created_at > coalesce((select erased_at from erased_players
                                             where id = ${player}), '-infinity')`)
    }
  }
  if (f.status !== undefined) where.push(`s.status = ${param(f.status)}`)
  if (f.queue !== undefined) where.push(`s.queue = ${param(f.queue)}`)
  if (f.after !== undefined) {
    where.push(
      `(${order.join(', ')}) < (${param(f.after.time)}::timestamptz, ${param(f.after.sessionId)})`,
    )
  }
  const text = `select s.id, s.rules, s.status, s.roster, s.queue, s.region,
            (extract(epoch from s.created_at) * 1000)::float8 as created_at,
            (extract(epoch from s.ended_at) * 1000)::float8 as ended_at,
            ${isoMicros('s.created_at')} as cursor_time, r.result->>'reason' as reason,
            r.result->>'winner' as winner,
            (select (p->>'place')::int from jsonb_array_elements(r.result->'placements') p
              where p->>'playerId' = ${player} limit 1) as place,
            (select jsonb_build_object('before', c->'before', 'after', c->'after')
               from jsonb_array_elements(r.rating_changes) c
              where c->>'playerId' = ${player} limit 1) as rating_change
       from ${from} left join match_results r on r.session_id = s.id
      ${where.length > 0 ? `where ${where.join(' and ')}` : ''}
      order by ${order.map((c) => `${c} desc`).join(', ')} limit ${param(f.limit)}`
  return { text, params }
}

/** A page of a session listing (`sessionListQuery`). */
export async function listSessions(env: DbEnv, f: SessionListing): Promise<ListedSession[]> {
  const { text, params } = sessionListQuery(f)
  const rows = (await getSql(env).query(text, params)) as {
    id: string
    rules: string
    status: 'live' | 'finished'
    roster: RosterEntry[]
    queue: string | null
    region: string | null
    created_at: number | string
    ended_at: number | string | null
    cursor_time: string
    reason: ListedSession['reason']
    winner: string | null
    place: number | null
    rating_change: ListedSession['ratingChange']
  }[]
  return rows.map((r) => ({
    sessionId: r.id,
    rules: r.rules,
    status: r.status,
    roster: r.roster.map((p) => ({ playerId: p.playerId, team: p.team })),
    queue: r.queue,
    region: r.region,
    createdAt: Math.round(Number(r.created_at)),
    endedAt: r.ended_at === null ? null : Math.round(Number(r.ended_at)),
    reason: r.reason,
    winner: r.winner,
    place: r.place,
    ratingChange: r.rating_change,
    cursorTime: r.cursor_time,
  }))
}
