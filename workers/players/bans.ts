import { getSql, type DbEnv } from '../db/client.ts'
import { PLAYER_LOCK } from './erasure.ts'

/** A player's account ban, as Neon keeps it. */
export interface AccountBan {
  playerId: string
  reason: string | null
  bannedAt: string
}

interface BanRow {
  player_id: string
  reason: string | null
  banned_at: string | Date
}

const view = (r: BanRow): AccountBan => ({
  playerId: r.player_id,
  reason: r.reason,
  bannedAt: new Date(r.banned_at).toISOString(),
})

/**
 * Records a player's account ban. Banning again keeps the first ban's time and takes the new
 * reason if it gives one, as a board's ban does; so a retried ban changes nothing. The invites
 * the player had not answered go with it: they could not be accepted, and each held one of its
 * party's places.
 */
export async function banAccount(
  env: DbEnv,
  playerId: string,
  reason: string | null,
): Promise<AccountBan> {
  const sql = getSql(env)
  // Under the player's lock: an erasure under way sees this ban (and keeps the device for it)
  // or has ended before it (PLAYER_LOCK).
  const [, rows] = (await sql.transaction([
    sql.query(PLAYER_LOCK, [playerId]),
    sql.query(
      `with ban as (
         insert into player_bans (player_id, reason) values ($1, $2)
         on conflict (player_id) do update set reason = coalesce(excluded.reason, player_bans.reason)
         returning player_id, reason, banned_at
       ),
       unanswered as (delete from party_invites where player_id = $1)
       select * from ban`,
      [playerId, reason],
    ),
  ])) as [unknown, BanRow[]]
  return view(rows[0]!)
}

/** Lifts a player's account ban; the ban that was lifted, or null if there was none. */
export async function liftAccountBan(env: DbEnv, playerId: string): Promise<AccountBan | null> {
  const [row] = (await getSql(env).query(
    `delete from player_bans where player_id = $1 returning player_id, reason, banned_at`,
    [playerId],
  )) as BanRow[]
  return row ? view(row) : null
}

/** A player's account ban, or null. */
export async function accountBan(env: DbEnv, playerId: string): Promise<AccountBan | null> {
  const [row] = (await getSql(env).query(
    `select player_id, reason, banned_at from player_bans where player_id = $1`,
    [playerId],
  )) as BanRow[]
  return row ? view(row) : null
}

/**
 * Account bans in player id order, a page after `after`: what a board created after some of them
 * takes on (they walked the boards that existed then). `olderThanBoard`: only bans placed before
 * that board was created.
 */
export async function accountBansAfter(
  env: DbEnv,
  after: string,
  limit: number,
  opts: { olderThanBoard: string | null } = { olderThanBoard: null },
): Promise<{ playerId: string; reason: string | null }[]> {
  const rows = (await getSql(env).query(
    `select player_id, reason from player_bans
      where player_id > $1
        and ($3::text is null
             or banned_at < (select created_at from leaderboards where id = $3::text))
      order by player_id limit $2`,
    [after, limit, opts.olderThanBoard],
  )) as { player_id: string; reason: string | null }[]
  return rows.map((r) => ({ playerId: r.player_id, reason: r.reason }))
}

/** Why a join is refused when `banned`, among its players, are under account bans. */
export function bannedJoinDetail(leader: string, banned: readonly string[]): string {
  if (banned.includes(leader)) return 'This player is banned'
  return `A member of the party is banned: ${banned.slice(0, 10).join(', ')}`
}
