import { getSql, type DbEnv } from '../db/client.ts'
import { errorFields, log } from '../lib/log.ts'

const NAME_TTL_MS = 60_000
const MAX_CACHED = 20_000
const names = new Map<string, { name: string | null; at: number }>()

/** Forgets a player's name in this isolate (it was just changed here). */
export function forgetPlayerName(id: string): void {
  names.delete(id)
}

/**
 * Display names for players, from Neon, remembered for a minute per isolate. Names decorate a
 * read; if Neon is down the read still succeeds, with names left null.
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
  try {
    const rows = (await getSql(env).query(
      'select id, name from players where id = any($1::text[])',
      [missing],
    )) as {
      id: string
      name: string | null
    }[]
    const found = new Map(rows.map((r) => [r.id, r.name]))
    if (names.size + missing.length > MAX_CACHED) names.clear()
    for (const id of missing) {
      const name = found.get(id) ?? null
      names.set(id, { name, at: now })
      out.set(id, name)
    }
  } catch (err) {
    log('warn', 'player names unavailable', errorFields(err))
  }
  return out
}
