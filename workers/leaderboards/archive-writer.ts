import { numberArrayLiteral, textArrayLiteral } from '../db/array-literal.ts'
import { getSql, type DbEnv } from '../db/client.ts'
import { storableJsonText } from '../core/rules/json.ts'

/**
 * A page's rows column by column, in rank order: the parameter arrays the set-based insert
 * unnests, so nothing is rebuilt between reading the page and sending it.
 */
export interface ArchiveColumns {
  playerIds: string[]
  ranks: number[]
  scores: number[]
  subscores: number[]
  /** JSON text, or null. */
  metadata: (string | null)[]
  /** Epoch milliseconds. */
  submittedAt: number[]
}

/** The `void_reason` of a reward written voided: its player's account ban came first. */
export const BANNED_BEFORE_THE_END = 'account banned before the cycle ended'

export interface ArchiveReward {
  playerId: string
  rank: number
  /** JSON text. */
  reward: string
}

export interface ArchivePage {
  leaderboardId: string
  cycle: number
  startsAt: number
  endsAt: number
  entries: number
  rows: ArchiveColumns
  rewards: ArchiveReward[]
  /** Rows archived once this page is in, counting earlier pages. */
  archivedThrough: number
}

/**
 * Where a closing cycle's pages go. One implementation writes to Neon; tests wrap it to inject
 * faults between pages.
 */
export interface ArchiveWriter {
  /** Writes one page in one transaction; writing the same page again changes nothing. */
  writePage(page: ArchivePage): Promise<void>
  /**
   * Marks the cycle's archive complete, if Neon holds every row of it (or `force`); idempotent.
   * Answers how many rows it found missing, in which case nothing is marked.
   */
  complete(
    page: Omit<ArchivePage, 'rows' | 'rewards'>,
    opts?: { force?: boolean },
  ): Promise<{ missing: number } | void>
}

/**
 * Every archive page holds this lock shared for its transaction, and an erasure's last clear of
 * the player's archived names (clearLateArchivedNames) takes it alone for an instant, before it
 * looks: a page whose statement took its snapshot before the erasure's tombstone (and so writes
 * the player's name) has then committed, and a page after it sees the tombstone.
 */
const ARCHIVE_PAGES_KEY = `hashtextextended('archive_pages', 0)`
export const ARCHIVE_PAGES_SHARED = `pg_advisory_xact_lock_shared(${ARCHIVE_PAGES_KEY})`
export const ARCHIVE_PAGES_LOCK = `pg_advisory_xact_lock(${ARCHIVE_PAGES_KEY})`

/**
 * Writes archive pages into Neon over the HTTP driver: each page is one transaction of set-based
 * inserts (unnest of parameter arrays: one round trip, no per-row statements). Unique keys
 * (board, cycle, player) in `leaderboard_archive` and `rewards` with ON CONFLICT DO NOTHING make
 * a retried page a no-op, so a crash between Neon's commit and the Durable Object recording its
 * progress loses nothing and duplicates nothing.
 *
 * The progress upsert comes last in each transaction (it is the archive insert's own statement):
 * every page updates the same `leaderboard_cycles` row, and its row lock is held until commit, so
 * taken first it would make the pages in flight wait for one another's whole transaction instead
 * of only for the commit.
 */
export class NeonArchiveWriter implements ArchiveWriter {
  private readonly env: DbEnv

  constructor(env: DbEnv) {
    this.env = env
  }

  async writePage(page: ArchivePage): Promise<void> {
    const sql = getSql(this.env)
    // First, before any statement's snapshot: an erasure's last clear waits for pages that hold
    // it (ARCHIVE_PAGES_LOCK).
    const queries = [sql.query(`select ${ARCHIVE_PAGES_SHARED}`)]
    if (page.rewards.length > 0) {
      queries.push(
        sql.query(
          // A player whose account was banned before the cycle ended, whose ban reached the
          // board only after its boundary (a long walk): their reward is written voided, as
          // support would void it, rather than paid.
          `insert into rewards (leaderboard_id, cycle, player_id, rank, reward, voided_at, void_reason)
           select $1, $2, u.player_id, u.rank, u.reward::jsonb,
                  case when b.player_id is not null then now() end,
                  case when b.player_id is not null then '${BANNED_BEFORE_THE_END}' end
             from unnest($3::text[], $4::int[], $5::text[]) as u(player_id, rank, reward)
             left join player_bans b
               on b.player_id = u.player_id and b.banned_at < to_timestamp($6::float8 / 1000)
           on conflict (leaderboard_id, cycle, player_id) do nothing`,
          [
            page.leaderboardId,
            page.cycle,
            page.rewards.map((r) => r.playerId),
            page.rewards.map((r) => r.rank),
            page.rewards.map((r) => r.reward),
            page.endsAt,
          ],
        ),
      )
    }
    // The cycle's archived_rows grows by the rows this statement inserted, not by the page's
    // size: a page sent again adds nothing, and pages committing out of order add up exactly.
    queries.push(
      sql.query(
        `with page as (
           insert into leaderboard_archive
             (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
           select $1, $2, u.player_id, u.rank, u.score, u.subscore,
                  -- Neither the name nor the metadata of a score submitted before its player's
                  -- erasure was done: before it began (a profile made under the id since, an
                  -- identity provider's player back and named again, is not theirs), or while
                  -- its walk had not yet reached the board (which took the old token's score).
                  -- An erasure whose walk has not ended counts as not done, for an hour: a walk
                  -- left longer is over (as a new erasure takes it), and a player back since
                  -- keeps their name.
                  case when e.id is null then p.name end,
                  case when e.id is null then u.metadata::jsonb end,
                  to_timestamp(u.submitted_at / 1000.0)
             from unnest($3::text[], $4::int[], $5::float8[], $6::float8[], $7::text[], $8::bigint[])
                  as u(player_id, rank, score, subscore, metadata, submitted_at)
             left join players p on p.id = u.player_id
             left join erased_players e
                    on e.id = u.player_id
                   and coalesce(e.completed_at, e.erased_at + interval '1 hour')
                       >= to_timestamp(u.submitted_at / 1000.0)
           on conflict (leaderboard_id, cycle, player_id) do nothing
           returning 1
         )
         insert into leaderboard_cycles
           (leaderboard_id, cycle, starts_at, ends_at, entries, archived_rows)
         values ($1, $2, to_timestamp($9 / 1000.0), to_timestamp($10 / 1000.0), $11,
                 (select count(*) from page))
         on conflict (leaderboard_id, cycle) do update set
           archived_rows = leaderboard_cycles.archived_rows + excluded.archived_rows`,
        [
          page.leaderboardId,
          page.cycle,
          textArrayLiteral(page.rows.playerIds),
          numberArrayLiteral(page.rows.ranks),
          numberArrayLiteral(page.rows.scores),
          numberArrayLiteral(page.rows.subscores),
          // Refused at submission now; a board may still hold metadata stored before that.
          textArrayLiteral(
            page.rows.metadata.map((m) => (m === null ? null : storableJsonText(m))),
          ),
          numberArrayLiteral(page.rows.submittedAt),
          page.startsAt,
          page.endsAt,
          page.entries,
        ],
      ),
    )
    await sql.transaction(queries)
  }

  /**
   * Records the archive complete once every page is in, with its rows as Neon has them (the
   * highest rank: ranks run from 1 without a gap, one row each, under a unique index). Not while
   * Neon holds fewer rows than the cycle's entries (the rows its pages inserted): pages the board
   * saw acknowledged are gone (Neon restored to a point before them), and the archive, marked
   * complete, would lack them for good, its top ranks most likely.
   */
  async complete(
    page: Omit<ArchivePage, 'rows' | 'rewards'>,
    opts: { force?: boolean } = {},
  ): Promise<{ missing: number }> {
    const sql = getSql(this.env)
    const [row] = (await sql.query(COMPLETE_CYCLE, [
      page.leaderboardId,
      page.cycle,
      page.startsAt,
      page.endsAt,
      page.entries,
      opts.force === true,
    ])) as { held: number; done: boolean }[]
    return { missing: row!.done ? 0 : Math.max(page.entries - row!.held, 0) }
  }
}

/**
 * A cycle's archive complete. Its row count is the highest rank, read from one end of the rank
 * index: a count(*) read every row of the cycle from the table (rows just written are not yet
 * visible to an index-only scan), a gigabyte for a million entries with metadata, against
 * Neon's 8 s statement deadline on every retry.
 */
export const COMPLETE_CYCLE = `with held as (
     select coalesce((select archived_rows from leaderboard_cycles
                       where leaderboard_id = $1 and cycle = $2), 0) as rows),
   completed as (
     insert into leaderboard_cycles
       (leaderboard_id, cycle, starts_at, ends_at, entries, archived_rows, completed_at)
     select $1, $2, to_timestamp($3 / 1000.0), to_timestamp($4 / 1000.0), $5,
            coalesce((select rank from leaderboard_archive
                       where leaderboard_id = $1 and cycle = $2
                       order by rank desc limit 1), 0),
            now()
       from held where $6::boolean or held.rows >= $5
     on conflict (leaderboard_id, cycle) do update set
       archived_rows = excluded.archived_rows,
       completed_at = coalesce(leaderboard_cycles.completed_at, excluded.completed_at)
     returning 1)
   select (select rows from held)::int as held, exists (select 1 from completed) as done`
