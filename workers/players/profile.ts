import { defaultRating } from '../core/rating.ts'
import { getSql, type DbEnv } from '../db/client.ts'

/** A player as Nexus holds them, for the player and for support. */
export interface Profile {
  playerId: string
  name: string | null
  /** The Glicko-2 rating a join uses (1500 for a player Nexus has not seen yet). */
  rating: number
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
                                      'rd', rating_deviation)
               from players where id = $1) as player,
            exists (select 1 from player_bans where player_id = $1) as banned,
            exists (select 1 from erased_players where id = $1) as erased`,
    [playerId],
  )) as {
    player: { name: string | null; rating: number; rd: number } | null
    banned: boolean
    erased: boolean
  }[]
  const fresh = defaultRating()
  return {
    playerId,
    name: row!.player?.name ?? null,
    rating: Number(row!.player?.rating ?? fresh.rating),
    ratingDeviation: Number(row!.player?.rd ?? fresh.rd),
    seen: row!.player !== null,
    banned: row!.banned,
    erased: row!.erased,
  }
}
