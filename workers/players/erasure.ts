import { getSql, type DbEnv } from '../db/client.ts'
import { removeMember } from '../parties/store.ts'
import { ARCHIVE_PAGES_LOCK } from '../leaderboards/archive-writer.ts'

/**
 * What a player's erasure found and did in Neon. `staleTickets` are the matchmaking tickets of the
 * party the player left, which no longer stand for it (the caller cancels them, as any leave's).
 */
export interface NeonErasure {
  /** Whether Neon had a `players` row (a device link, a name or a rating) to delete. */
  hadProfile: boolean
  /** When Neon recorded the erasure (ms; this call's, for an erasure sent again). */
  erasedAt: number
  /** The party the player was in, which goes on without them (or ends, if they were its last). */
  leftParty: string | null
  staleTickets: string[]
  /**
   * Whether the player is under an account ban that now keeps their guest device (its hash), so
   * that the device does not sign in as a new, unbanned player. Lifting the ban deletes it.
   */
  deviceKeptForBan: boolean
}

/**
 * Locks a guest device (`$1`, its hash) until the transaction ends: a guest sign-in and the
 * erasure that hands the device to the player's ban take it, so a sign-in never sees the player
 * gone without the device kept (and makes a new, unbanned player for it).
 */
export const DEVICE_LOCK = `select ${lockDevice('$1::text')}`

/**
 * Locks a player's account (`$1`, their id) until the transaction ends: an account ban and the
 * erasure that hands a banned guest's device to the ban take it, so a ban committing while the
 * erasure looks for one is either seen by it (the device kept) or comes after the profile's end.
 */
export const PLAYER_LOCK = `select pg_advisory_xact_lock(hashtextextended('player:' || $1, 0))`

/** The advisory lock of the device whose hash is the SQL expression `device`. */
function lockDevice(device: string): string {
  return `pg_advisory_xact_lock(hashtextextended('device:' || ${device}, 0))`
}

/**
 * Erases what Neon holds that identifies a player: their profile row (the guest device link, the
 * display name, the rating), their party membership (a leader hands over to the longest-standing
 * member, as when leaving) and invites to them (the display name and metadata copied into closed
 * cycles' archived standings are `clearArchivedNames`'); and keeps their bare id in
 * `erased_players`, so that what comes in
 * under it later (a match they were in ending, a cycle still being archived) recreates no profile
 * and archives no metadata. What stays is keyed by the bare id and names nobody once the profile
 * is gone: archived ranks and scores, rewards, match results and rating changes (other players'
 * records depend on them). Idempotent: erasing again finds nothing new.
 *
 * The tombstone goes first, then invites, so an accept racing the erasure finds its invite gone
 * (or its token refused) rather than putting the player into a party after they left theirs.
 */
/**
 * A call that starts anew (`$2` false, no `after`) finds the stored erasure over: its walk
 * ended, or it began an hour and more ago and was left. A call going on with a walk (`after`)
 * never starts a new one: it walks only the boards after its cursor, and a new time there would
 * leave the boards before it comparing tokens with the old one.
 */
const OVER = `(not $2 and (erased_players.completed_at is not null
  or erased_players.erased_at < now() - interval '1 hour'))`

export async function eraseFromNeon(
  env: DbEnv,
  playerId: string,
  opts: { continuing: boolean },
): Promise<NeonErasure> {
  const sql = getSql(env)
  // First, on its own: what commits after it (a result, an archive page, a party created or an
  // invite accepted with the player's old token) sees the tombstone. The calls of one erasure
  // (its walk's pages, a retry of one, its closing sweep) keep its time, which the boards of its
  // earlier pages compare tokens with. One whose walk has ended (`markErasureComplete`), or was
  // left an hour and more ago, is over: a call from the start now is a new erasure and takes now,
  // so that a player of an identity provider who came back since loses their tokens of since too.
  // A call going on with a walk keeps its erasure's time even once the walk ended (a retry of the
  // call that ended it, its answer lost; a second sweep racing the first): it walks only the
  // boards after its cursor, and those before would go on comparing tokens with the old time.
  const [tombstone] = (await sql.query(
    // Both assignments read the row as it was (an UPDATE's SET sees the old values).
    `insert into erased_players (id) values ($1)
     on conflict (id) do update set
       erased_at = case when ${OVER} then now() else erased_players.erased_at end,
       completed_at = case when ${OVER} then null else erased_players.completed_at end,
       archive_board = case when ${OVER} then null else erased_players.archive_board end,
       archive_cycle = case when ${OVER} then null else erased_players.archive_cycle end,
       archive_cleared = case when ${OVER} then false else erased_players.archive_cleared end
     returning erased_at`,
    [playerId, opts.continuing],
  )) as { erased_at: string | Date }[]
  await sql.query(`delete from party_invites where player_id = $1`, [playerId])
  const [membership] = (await sql.query(`select party_id from party_members where player_id = $1`, [
    playerId,
  ])) as { party_id: string }[]
  let staleTickets: string[] = []
  if (membership) {
    staleTickets = (await removeMember(env, membership.party_id, playerId, playerId)).staleTickets
  }
  const [, , ...results] = await sql.transaction([
    sql.query(PLAYER_LOCK, [playerId]),
    sql.query(
      `select ${lockDevice('device_id')}
         from players where id = $1 and device_id is not null`,
      [playerId],
    ),
    // Before the profile goes: a banned guest's device stays banned (see `deviceKeptForBan`),
    // unless another ban holds it already (a new player a sign-in made for the device while an
    // earlier erasure ran, banned since).
    sql.query(
      `update player_bans b set device_id = p.device_id
         from players p
        where b.player_id = $1 and p.id = $1 and p.device_id is not null
          and not exists (select 1 from player_bans o where o.device_id = p.device_id)`,
      [playerId],
    ),
    // Asked apart from the update: a retried erasure finds the profile gone, the device kept.
    sql.query(
      `select exists (select 1 from player_bans where player_id = $1 and device_id is not null)
         as kept`,
      [playerId],
    ),
    sql.query(`delete from players where id = $1 returning 1 as gone`, [playerId]),
  ])
  return {
    hadProfile: (results[2] as unknown[]).length > 0,
    erasedAt: new Date(tombstone!.erased_at).getTime(),
    leftParty: membership?.party_id ?? null,
    staleTickets,
    deviceKeptForBan: (results[1] as { kept: boolean }[])[0]?.kept === true,
  }
}

/** Archived standings a statement of `clearArchivedNames` takes at most. */
export const ARCHIVE_CLEAR_BATCH = 2_000

/** The erasure whose time is `$n` (ms; Neon keeps microseconds). */
const THIS_ERASURE = (n: string) => `abs(extract(epoch from erased_at) * 1000 - ${n}::float8) < 1`

/** The batch's last row is past the erasure's place (in an UPDATE of `erased_players`). */
const AHEAD = `((select leaderboard_id from last) is not null
  and (archive_board is null
       or (archive_board, archive_cycle) < ((select leaderboard_id from last),
                                             (select cycle from last))))`

/**
 * One batch of `clearArchivedNames`: ($1 player, after ($2 board, $3 cycle), $4 batch, $5 the
 * erasure's time), the erasure's place moved along in the same statement. Exported for the test
 * of its plan.
 */
export const ARCHIVE_CLEAR_STEP = `with page as (
     select leaderboard_id, cycle from leaderboard_archive
      where player_id = $1 and (leaderboard_id, cycle) > ($2::text, $3::int)
      order by leaderboard_id, cycle limit $4
   ),
   cleared as (
     update leaderboard_archive a set name = null, metadata = null
       from page p
      where a.player_id = $1 and a.leaderboard_id = p.leaderboard_id and a.cycle = p.cycle
        and (a.name is not null or a.metadata is not null)
     returning 1
   ),
   last as (select leaderboard_id, cycle from page order by leaderboard_id desc, cycle desc limit 1),
   -- How far it went, for the next call: never back (two calls of one erasure at once: judged on
   -- the row as it is once locked), and only for this erasure (a call of one before it, still
   -- running when a new one began, moves nothing of the new one's).
   moved as (
     update erased_players set
       archive_board = case when ${AHEAD} then (select leaderboard_id from last)
                            else archive_board end,
       archive_cycle = case when ${AHEAD} then (select cycle from last) else archive_cycle end,
       archive_cleared = archive_cleared or (select count(*) from page) < $4
      where id = $1 and ${THIS_ERASURE('$5')}
     returning 1
   )
   select (select count(*)::int from cleared) as cleared,
          (select count(*)::int from page) as seen,
          (select leaderboard_id from last) as last_board,
          (select cycle from last) as last_cycle`

/** `clearLateArchivedNames`' statement ($1 player, $2 erased at, ms); exported for its plan. */
export const LATE_ARCHIVE_CLEAR = `with late as (
     select leaderboard_id, cycle from leaderboard_cycles where completed_at is null
     union all
     select leaderboard_id, cycle from leaderboard_cycles
      where completed_at >= to_timestamp($2::float8 / 1000)
   ),
   cleared as (
     update leaderboard_archive a set name = null, metadata = null
       from late l
      where a.leaderboard_id = l.leaderboard_id and a.cycle = l.cycle and a.player_id = $1
        and (a.name is not null or a.metadata is not null)
     returning 1
   )
   select count(*)::int as n from cleared`

/**
 * Clears the display name and metadata copied into the player's archived standings, a batch of
 * ARCHIVE_CLEAR_BATCH rows a statement in the order of the archive's player index, going on from
 * where the erasure's earlier calls stopped (kept in its `erased_players` row with each batch),
 * until the end or `budgetMs` is spent (no batch begins after it). Apart from the profile's
 * deletion, so that a player of years of short cycles (hundreds of thousands of rows) has their
 * profile deleted at once, and no statement runs into Neon's query deadline. Answers how many
 * rows it cleared and whether the erasure's clear has reached the end (then it reads one row).
 *
 * @example
 * const { cleared, done } = await clearArchivedNames(env, playerId, erasedAt, 5_000)
 */
export async function clearArchivedNames(
  env: DbEnv,
  playerId: string,
  erasedAt: number,
  budgetMs: number,
): Promise<{ cleared: number; done: boolean }> {
  const sql = getSql(env)
  const deadline = Date.now() + budgetMs
  const [at] = (await sql.query(
    `select archive_board, archive_cycle, archive_cleared from erased_players
      where id = $1 and ${THIS_ERASURE('$2')}`,
    [playerId, erasedAt],
  )) as { archive_board: string | null; archive_cycle: number | null; archive_cleared: boolean }[]
  // Its clear done; or a new erasure began since (this call's is over, and clears nothing of it).
  if (!at || at.archive_cleared) return { cleared: 0, done: true }
  let cleared = 0
  // Board ids are never empty: ('', 0) comes before every row.
  let after: [string, number] = [at.archive_board ?? '', at.archive_cycle ?? 0]
  for (;;) {
    const [batch] = (await sql.query(ARCHIVE_CLEAR_STEP, [
      playerId,
      after[0],
      after[1],
      ARCHIVE_CLEAR_BATCH,
      erasedAt,
    ])) as { cleared: number; seen: number; last_board: string | null; last_cycle: number | null }[]
    cleared += batch!.cleared
    if (batch!.seen < ARCHIVE_CLEAR_BATCH) return { cleared, done: true }
    after = [batch!.last_board!, batch!.last_cycle!]
    if (Date.now() >= deadline) return { cleared, done: false }
  }
}

/**
 * The erasure's last look at the archive: a page written by a statement that began before the
 * erasure's tombstone (so it did not see it) may commit with the player's name after the clear
 * passed its place. Its cycle was not complete before that commit (a cycle completes after its
 * pages, and a page's rows are never written after that), so it is one still unfinished, or
 * completed since the erasure began: the player's row in each of those, by primary key. Pages
 * still under way are waited for. Answers how many it cleared.
 */
export async function clearLateArchivedNames(
  env: DbEnv,
  playerId: string,
  erasedAt: number,
): Promise<number> {
  const sql = getSql(env)
  // Once the pages under way have committed: one whose statement began before the tombstone may
  // not have yet, and its rows would be out of the clear's sight (ARCHIVE_PAGES_LOCK). The lock
  // is a barrier only, let go at once: a page that takes it after began after the tombstone, and
  // writes the player nameless. Held through the clear, every board's archive would wait on it.
  await sql.query(`select ${ARCHIVE_PAGES_LOCK}`)
  const rows = (await sql.query(LATE_ARCHIVE_CLEAR, [playerId, erasedAt])) as { n: number }[]
  return rows[0]?.n ?? 0
}

/** Exported for the test of its plan: it finds the recent ones by `erased_at`'s index. */
export const RECENT_ERASURES_AFTER = `select id, (extract(epoch from erased_at) * 1000)::float8 as erased_at
  from erased_players
  where id > $1 and erased_at > now() - make_interval(secs => $3::float8 / 1000)
  order by id limit $2`

/**
 * Erasures from the last `withinMs` (ms), in player id order, a page after `after`: what a board
 * created after some of them takes on (their walks reached the boards that existed then), so
 * that it too refuses the erased players' old tokens.
 */
export async function recentErasuresAfter(
  env: DbEnv,
  after: string,
  limit: number,
  withinMs: number,
): Promise<{ playerId: string; erasedAt: number }[]> {
  const rows = (await getSql(env).query(RECENT_ERASURES_AFTER, [after, limit, withinMs])) as {
    id: string
    erased_at: number
  }[]
  return rows.map((r) => ({ playerId: r.id, erasedAt: Math.floor(r.erased_at) }))
}

/**
 * Marks a player's erasure done (its walk's closing sweep ran): the next call for the player is
 * a new erasure, with a time of its own (`eraseFromNeon`).
 */
export async function markErasureComplete(
  env: DbEnv,
  playerId: string,
  erasedAt: number,
): Promise<void> {
  // Not a new erasure's, begun while this one's last call ran.
  await getSql(env).query(
    `update erased_players set completed_at = now()
      where id = $1 and completed_at is null and ${THIS_ERASURE('$2')}`,
    [playerId, erasedAt],
  )
}
