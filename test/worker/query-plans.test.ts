import { env } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { getDb, type DbEnv } from '../../workers/db/client.ts'
import { COMPLETE_CYCLE } from '../../workers/leaderboards/archive-writer.ts'
import { scheduledBoardsQuery } from '../../workers/leaderboards/config-store.ts'
import { CLAIMS_OF_PLAYER } from '../../workers/matchmaking/claims.ts'
import {
  ARCHIVE_CLEAR_STEP,
  LATE_ARCHIVE_CLEAR,
  RECENT_ERASURES_AFTER,
} from '../../workers/players/erasure.ts'
import { PRUNE_OLD_PARTY_TICKETS, STALE_PARTY_TICKETS } from '../../workers/parties/store.ts'
import { KEEP_SETUP, sessionListQuery, type SessionListing } from '../../workers/sessions/store.ts'
import { pg } from './helpers/boards.ts'

/**
 * Queries the cron or a ban runs over tables that grow with the players, planned as PostgreSQL
 * would plan them on big tables: with sequential scans priced out (the test database's tables
 * are small, where a scan is cheapest), a query no index serves still gets one, and shows it.
 */
async function planOf(
  query: string,
  params: unknown[],
  { sorts = true }: { sorts?: boolean } = {},
): Promise<string> {
  const sql = pg()
  const results = (await sql.transaction([
    sql.query('set local enable_seqscan = off'),
    // Priced out too where a page must come in index order, not from sorting what matched.
    ...(sorts ? [] : [sql.query('set local enable_sort = off')]),
    // A delete's plan is shown without running it.
    sql.query(`explain (format json) ${query}`, params),
  ])) as { 'QUERY PLAN': unknown }[][]
  return JSON.stringify(results[results.length - 1]![0]!['QUERY PLAN'])
}

describe('query plans on tables that grow', () => {
  it("a ban's or an erasure's read of a player's claims goes by an index on the player", async () => {
    const plan = await planOf(CLAIMS_OF_PLAYER, ['p-plan'])
    expect(plan).toContain('queue_claims_player_idx')
    expect(plan).not.toContain('Seq Scan')
  })

  it("the cron's page of stale party notes walks an index in byte order: no scan, no sort of the table", async () => {
    const plan = await planOf(STALE_PARTY_TICKETS, [100, '', ''], { sorts: false })
    expect(plan).toContain('party_tickets_byte_order_idx')
    expect(plan).not.toContain('"Node Type":"Sort"')
    expect(plan).not.toContain('Seq Scan')
  })

  it("a close's completion reads the cycle's row count from one end of the rank index, not by counting every row", async () => {
    const plan = await planOf(COMPLETE_CYCLE, ['plan-board', 1, 0, 60_000, 10, false])
    expect(plan).toContain('leaderboard_archive_rank_idx')
    expect(plan).toContain('Backward')
    expect(plan).not.toContain('"Node Type":"Aggregate"')
  })

  it("a game's object, before it clears itself, finds its log's last record in Neon by the log's key, not by counting the log", async () => {
    const plan = await planOf(KEEP_SETUP, ['plan-session', 'hash', '{}', 500_000])
    expect(plan).toContain('session_logs_session_id_seq_pk')
    expect(plan).not.toContain('"Node Type":"Aggregate"')
    expect(plan).not.toContain('Seq Scan')
  })

  it("the cron's prune of old party notes finds them by an index on their time", async () => {
    const plan = await planOf(PRUNE_OLD_PARTY_TICKETS, [])
    expect(plan).toContain('party_tickets_noted_at_idx')
    expect(plan).not.toContain('Seq Scan')
  })

  it("a new board's read of the last weeks' erasures finds them by their time, not by walking every erasure ever made", async () => {
    // Tombstones are kept for good, so most are old: a year of them, added and analyzed (the
    // planner then knows how few are recent), planned and deleted in one transaction.
    const prefix = `plan-erased-${crypto.randomUUID()}-`
    const sql = pg()
    const results = (await sql.transaction([
      sql.query(
        `insert into erased_players (id, erased_at)
         select $1 || n, now() - interval '1 year' + n * interval '1 minute'
         from generate_series(1, 20000) n`,
        [prefix],
      ),
      sql.query('analyze erased_players'),
      sql.query(`explain (format json) ${RECENT_ERASURES_AFTER}`, ['', 100, 40 * 86_400_000]),
      sql.query('delete from erased_players where id like $1', [`${prefix}%`]),
    ])) as { 'QUERY PLAN': unknown }[][]
    const plan = JSON.stringify(results[2]![0]!['QUERY PLAN'])
    expect(plan).toContain('erased_players_erased_at_idx')
    expect(plan).not.toContain('Seq Scan')
  })

  it('a session listing reads a page from an index in order, by player, by queue and of everything', async () => {
    const cases: [SessionListing, string | RegExp][] = [
      [{ playerId: 'p-plan', limit: 50 }, 'session_players_player_id_created_at_session_id_pk'],
      [
        {
          playerId: 'p-plan',
          sinceErasure: true,
          status: 'finished',
          limit: 50,
          after: { time: '2026-01-01T00:00:00.000000Z', sessionId: 's_1' },
        },
        'session_players_player_id_created_at_session_id_pk',
      ],
      [
        { playerId: 'p-plan', status: 'live', limit: 50 },
        'live_session_players_player_id_created_at_session_id_pk',
      ],
      [{ queue: 'q-plan', limit: 50 }, 'game_sessions_queue_idx'],
      // Either walks in order: live sessions are the newest, as the planner may know.
      [{ status: 'live', limit: 50 }, /game_sessions_(status|created)_idx/],
      [{ limit: 50 }, 'game_sessions_created_idx'],
      [
        { limit: 50, after: { time: '2026-01-01T00:00:00.000000Z', sessionId: 's_1' } },
        'game_sessions_created_idx',
      ],
    ]
    for (const [listing, index] of cases) {
      const { text, params } = sessionListQuery(listing)
      const plan = await planOf(text, params, { sorts: false })
      expect(plan, JSON.stringify(listing)).toMatch(index)
      expect(plan, JSON.stringify(listing)).not.toContain('Seq Scan')
      expect(plan, JSON.stringify(listing)).not.toContain('"Node Type":"Sort"')
    }
  })

  it("a player's live sessions, and an erasure's walk of them, read none of their finished ones", async () => {
    // A player of 20,000 finished matches, playing one now that began before most of them
    // (untimed games run for days): added, measured and deleted in one transaction.
    const prefix = `hist-${crypto.randomUUID()}-`
    const player = `${prefix}player`
    const live = `${prefix}live`
    const listing = sessionListQuery({ playerId: player, status: 'live', limit: 20 })
    const erasureWalk = `select session_id from live_session_players
      where player_id = $1 order by created_at desc limit 100`
    const sql = pg()
    const results = (await sql.transaction([
      sql.query(
        `insert into game_sessions (id, rules, roster, status, created_at, ended_at)
         select $1 || n, 'relay',
                jsonb_build_array(jsonb_build_object('playerId', $2::text, 'team', 0)),
                'finished', now() - n * interval '1 minute', now() - n * interval '1 minute'
           from generate_series(1, 20000) n`,
        [prefix, player],
      ),
      sql.query(
        `insert into game_sessions (id, rules, roster, status, created_at)
         values ($1, 'relay', jsonb_build_array(jsonb_build_object('playerId', $2::text, 'team', 0)),
                 'live', now() - interval '30 days')`,
        [live, player],
      ),
      sql.query('analyze session_players'),
      sql.query('analyze live_session_players'),
      sql.query(`explain (analyze, buffers, format json) ${listing.text}`, listing.params),
      sql.query(`explain (analyze, buffers, format json) ${erasureWalk}`, [player]),
      sql.query(listing.text, listing.params),
      // The live one ends: it leaves the live table with its status.
      sql.query(`update game_sessions set status = 'finished', ended_at = now() where id = $1`, [
        live,
      ]),
      sql.query(listing.text, listing.params),
      sql.query('delete from session_players where player_id = $1', [player]),
      sql.query('delete from game_sessions where id like $1', [`${prefix}%`]),
    ])) as unknown[][]
    const blocks = (i: number) => {
      const plan = (results[i] as { 'QUERY PLAN': { Plan: Record<string, number> }[] }[])[0]![
        'QUERY PLAN'
      ][0]!.Plan
      return plan['Shared Hit Blocks']! + plan['Shared Read Blocks']!
    }
    // Walking the history would touch a block per finished session, thousands of them.
    expect(blocks(4)).toBeLessThan(50)
    expect(blocks(5)).toBeLessThan(50)
    expect((results[6] as { id: string }[]).map((r) => r.id)).toEqual([live])
    expect(results[8]).toEqual([])
  })

  it("an erasure's batches over a player's archived standings, and its last look at late pages, go by indexes", async () => {
    const step = await planOf(ARCHIVE_CLEAR_STEP, ['p-plan', '', 0, 2000, Date.now()])
    expect(step).toContain('leaderboard_archive_player_idx')
    expect(step).not.toContain('Seq Scan')
    const late = await planOf(LATE_ARCHIVE_CLEAR, ['p-plan', Date.now()])
    // (Unfinished cycles by either index: a btree on completed_at finds its nulls too.)
    expect(late).toContain('leaderboard_cycles_completed_at_idx')
    expect(late).not.toContain('Seq Scan')
  })

  it("the cron's minute read of scheduled boards reads no board's configuration", async () => {
    // Boards whose configurations PostgreSQL stores out of line (random text does not compress),
    // inserted and deleted in the transaction that measures, so no other test ever sees them.
    const boards = 40
    const bigConfig = () => ({
      cycle: null,
      padding: Array.from({ length: 600 }, () => crypto.randomUUID()).join(''),
    })
    const query = scheduledBoardsQuery(getDb(env as unknown as DbEnv), '', 100_000).toSQL()
    const sql = pg()
    const blocksTouched = async (withBigBoards: boolean): Promise<number> => {
      const prefix = `toast-${crypto.randomUUID()}-`
      const results = (await sql.transaction([
        ...(withBigBoards
          ? [
              sql.query(
                `insert into leaderboards (id, config, version, pushed_version)
                 select $1 || n, $2::jsonb, 1, 1 from generate_series(1, $3) n`,
                [prefix, JSON.stringify(bigConfig()), boards],
              ),
            ]
          : []),
        sql.query(`explain (analyze, buffers, format json) ${query.sql}`, query.params),
        ...(withBigBoards
          ? [sql.query('delete from leaderboards where id like $1', [`${prefix}%`])]
          : []),
      ])) as { 'QUERY PLAN': { Plan: Record<string, number> }[] }[][]
      const plan = results[withBigBoards ? 1 : 0]![0]!['QUERY PLAN'][0]!.Plan
      return plan['Shared Hit Blocks']! + plan['Shared Read Blocks']!
    }
    const without = await blocksTouched(false)
    const withBig = await blocksTouched(true)
    // Reading each configuration would fetch its out-of-line pages (and their index): at least
    // two blocks a board. The boards' own rows are small and share a few pages.
    expect(withBig - without).toBeLessThan(boards / 4)
  })
})
