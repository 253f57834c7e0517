import { inArray } from 'drizzle-orm'
import { defaultRating } from '../core/rating.ts'
import { getDb, type DbEnv } from '../db/client.ts'
import { players } from '../db/schema.ts'

/**
 * The ratings matchmaking uses: each player's stored Glicko-2 rating (the mean, not the
 * conservative value: windows compare skill, and uncertainty is what widening absorbs). An
 * unknown player is a new player (1500); no row is created for them here.
 */
export async function storedRatings(env: DbEnv, ids: string[]): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  const rows = await getDb(env)
    .select({ id: players.id, rating: players.rating })
    .from(players)
    .where(inArray(players.id, ids))
  for (const r of rows) out.set(r.id, r.rating)
  for (const id of ids) if (!out.has(id)) out.set(id, defaultRating().rating)
  return out
}
