import { defaultRating, idleRating } from '../core/rating.ts'
import { getSql, type DbEnv } from '../db/client.ts'

/** A player as Nexus holds them, for the player and for support. */
export interface Profile {
  playerId: string
  name: string | null
  /** The Glicko-2 rating a join uses (1500 for a player Nexus has not seen yet). */
  rating: number
  /**
   * The deviation as it stands now: the stored one grown by each day since the player's last
   * rated match (or an admin's setting of it), which is what a match ending now starts from.
   */
  ratingDeviation: number
  /** Whether Nexus holds a profile for the id (a guest's sign-in, a result, an admin's PUT). */
  seen: boolean
  banned: boolean
  /** Erased at some time: a player of an identity provider may have come back since. */
  erased: boolean
}

/**
 * A player's profile, in one statement: the stored one, or what a first join would use for an
 * id Nexus has not seen (players of an identity provider appear on first use; an erased one has
 * no profile left).
 */
export async function readProfile(env: DbEnv, playerId: string): Promise<Profile> {
  const [row] = (await getSql(env).query(
    `select (select json_build_object('name', name, 'rating', rating,
                                      'rd', rating_deviation, 'volatility', rating_volatility,
                                      'ratedAt', ${RATED_AT_MS})
               from players where id = $1) as player,
            exists (select 1 from player_bans where player_id = $1) as banned,
            exists (select 1 from erased_players where id = $1) as erased`,
    [playerId],
  )) as {
    player: {
      name: string | null
      rating: number
      rd: number
      volatility: number
      ratedAt: number | null
    } | null
    banned: boolean
    erased: boolean
  }[]
  const fresh = defaultRating()
  const player = row!.player
  return {
    playerId,
    name: player?.name ?? null,
    rating: Number(player?.rating ?? fresh.rating),
    ratingDeviation: player === null ? fresh.rd : deviationNow(player, Date.now()),
    seen: player !== null,
    banned: row!.banned,
    erased: row!.erased,
  }
}

/**
 * When a player was last rated, in epoch milliseconds (null: never rated, RD still a new
 * player's). A player rated before `rated_at` existed (or by a Worker of the version before,
 * after the migration) is taken as rated at their row's last change: an admin's later rename
 * makes that later, so their deviation grows less than it should, never more.
 */
export const RATED_AT_MS = `(extract(epoch from coalesce(rated_at,
  case when rating_deviation < 350 then updated_at end)) * 1000)::float8`

/** A stored deviation as it stands at `now`, grown by the idle days since `ratedAt`. */
export function deviationNow(
  stored: { rating: number; rd: number; volatility: number; ratedAt: number | null },
  now: number,
): number {
  const rating = {
    rating: Number(stored.rating),
    rd: Number(stored.rd),
    volatility: Number(stored.volatility),
  }
  if (stored.ratedAt === null) return rating.rd
  return idleRating(rating, now - Number(stored.ratedAt)).rd
}
