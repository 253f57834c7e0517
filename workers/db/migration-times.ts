/**
 * Journal times (`when` in migrations/meta/_journal.json) a migration was recorded under by an
 * earlier version of it, by the time the journal gives it now. 0026 was rewritten the day it
 * came (its GIN index on rosters replaced by `session_players`), and a database that ran it as
 * first written records the first time.
 */
export const EARLIER_MIGRATION_TIMES: ReadonlyMap<number, number> = new Map([
  [1796461127098, 1796460009877],
])

/** Whether the migration the journal times `when` is among those `recorded` as applied. */
export function migrationRecorded(when: number, recorded: ReadonlySet<number>): boolean {
  const earlier = EARLIER_MIGRATION_TIMES.get(when)
  return recorded.has(when) || (earlier !== undefined && recorded.has(earlier))
}
