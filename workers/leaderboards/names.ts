import { getSql, type DbEnv } from '../db/client.ts'
import { errorFields, log } from '../lib/log.ts'
import { within } from '../lib/within.ts'

const NAME_TTL_MS = 60_000
/**
 * How long a read waits for names: past it the read answers with them null. A Neon that hangs
 * (rather than failing fast) would otherwise hold every read that misses the caches, and what it
 * finally produced would already be too old for any cache to keep.
 */
const NAMES_WAIT_MS = 1_000
/** Names an isolate remembers at most. */
export const MAX_CACHED_NAMES = 20_000
const names = new Map<string, { name: string | null; at: number }>()
/**
 * Counts renames this isolate took: a read that began before one may have fetched the old name,
 * and must not remember it for another minute. Renames are rare, so one counter for all players.
 */
let renames = 0

/** How many names this isolate remembers now. @internal For tests. */
export function rememberedNameCount(): number {
  return names.size
}

/** Forgets a player's name in this isolate (it was just changed here). */
export function forgetPlayerName(id: string): void {
  names.delete(id)
  renames++
}

/**
 * Display names for players, from Neon, remembered for a minute per isolate. Names decorate a
 * read; if Neon is down, or has not answered within NAMES_WAIT_MS, the read still succeeds, with
 * names left null.
 */
export async function playerNames(
  env: DbEnv,
  ids: readonly string[],
): Promise<Map<string, string | null>> {
  const now = Date.now()
  const out = new Map<string, string | null>()
  const missing: string[] = []
  for (const id of new Set(ids)) {
    const hit = names.get(id)
    if (hit && now - hit.at < NAME_TTL_MS) out.set(id, hit.name)
    else missing.push(id)
  }
  if (missing.length === 0 || !env.DATABASE_URL) return out
  const renamesBefore = renames
  try {
    const rows = (await within(
      getSql(env).query('select id, name from players where id = any($1::text[])', [missing]),
      NAMES_WAIT_MS,
      'reading player names',
    )) as { id: string; name: string | null }[]
    const found = new Map(rows.map((r) => [r.id, r.name]))
    const remember = renames === renamesBefore
    if (remember) {
      // The names remembered longest go first (a Map keeps insertion order, and a name read
      // again is put back at the end): emptied at once, as before, every reader of the isolate
      // asked Neon again, and a script reading made-up windows emptied it at will.
      for (const id of names.keys()) {
        if (names.size + missing.length <= MAX_CACHED_NAMES) break
        names.delete(id)
      }
    }
    for (const id of missing) {
      const name = found.get(id) ?? null
      if (remember) {
        names.delete(id)
        names.set(id, { name, at: now })
      }
      out.set(id, name)
    }
  } catch (err) {
    log('warn', 'player names unavailable', errorFields(err))
  }
  return out
}
