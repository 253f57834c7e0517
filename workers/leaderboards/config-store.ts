import { and, eq, isNull, sql } from 'drizzle-orm'
import { MATCH_WIN, takesMatchWins, type LeaderboardConfig } from '../core/leaderboard.ts'
import { getDb, getSql, type Db, type DbEnv } from '../db/client.ts'
import { leaderboardCycles, leaderboards } from '../db/schema.ts'
import { ifMatchHolds, ifMatchParam, type IfMatch } from '../lib/preconditions.ts'

/** SQL: whether the board configuration `config` (a jsonb expression) takes a match's win. */
export function takesMatchWinsSql(config: string): string {
  return `(coalesce((${config}->>'scoreMin')::float8, '-infinity') <= ${MATCH_WIN.score}
    and coalesce((${config}->>'scoreMax')::float8, 'infinity') >= ${MATCH_WIN.score}
    and coalesce((${config}->>'subscoreMin')::float8, '-infinity') <= ${MATCH_WIN.subscore}
    and coalesce((${config}->>'subscoreMax')::float8, 'infinity') >= ${MATCH_WIN.subscore})`
}

/** Whether the stored configuration of the row at hand takes a match's win. */
const storedTakesMatchWins = sql.raw(takesMatchWinsSql('"leaderboards"."config"'))

/** lastArchivedCycle of the board of the row at hand, for a statement over `leaderboards`. */
// The outer row named in full: drizzle writes a single-table statement's columns bare, and a bare
// "id" would be taken as an inner column if leaderboard_cycles ever had one.
const lastCycleOfRow = sql<number>`(select coalesce(max(${leaderboardCycles.cycle}), 0)::int
  from ${leaderboardCycles} where ${leaderboardCycles.leaderboardId} = ${sql.raw('"leaderboards"."id"')})`

/**
 * The stored configuration of a board, or null if there is no such board; with the last cycle
 * Neon has of it (lastArchivedCycle), for a board's object that has none of its own.
 */
export async function loadLeaderboardConfig(
  env: DbEnv,
  id: string,
): Promise<{ config: LeaderboardConfig; version: number; lastCycle: number } | null> {
  const [row] = await getDb(env)
    .select({
      config: leaderboards.config,
      version: leaderboards.version,
      lastCycle: lastCycleOfRow,
    })
    .from(leaderboards)
    .where(and(eq(leaderboards.id, id), isNull(leaderboards.deletedAt)))
  return row
    ? {
        config: row.config as LeaderboardConfig,
        version: row.version,
        lastCycle: Number(row.lastCycle),
      }
    : null
}

/**
 * Why board `id` cannot take a queue's or a session's results (there is none, or its bounds
 * refuse a win), with a message for a 422 on the `leaderboardId` field; null when it can.
 */
export async function resultsBoardRefusal(
  env: DbEnv,
  id: string,
): Promise<{ missing: boolean; message: string } | null> {
  const board = await loadLeaderboardConfig(env, id)
  return resultsRefusalOf(board?.config ?? null)
}

/** resultsBoardRefusal, of a board's configuration as read (null: no such board). */
export function resultsRefusalOf(
  config: LeaderboardConfig | null,
): { missing: boolean; message: string } | null {
  if (!config) return { missing: true, message: 'no such leaderboard' }
  if (takesMatchWins(config)) return null
  return {
    missing: false,
    message:
      `its bounds refuse a win (score ${MATCH_WIN.score}, subscore ${MATCH_WIN.subscore}, ` +
      'which a finished match submits for each winner)',
  }
}

/** The queues (up to 100, by id) that send their results to board `id`. */
export async function queuesNaming(env: DbEnv, id: string): Promise<string[]> {
  const rows = (await getSql(env).query(
    `select id from queues where config->>'leaderboardId' = $1 and deleted_at is null
      order by id limit 100`,
    [id],
  )) as { id: string }[]
  return rows.map((r) => r.id)
}

/**
 * The last cycle of `id` that Neon has (its archive began), 0 for none: a board's object that
 * starts with no stored cycle (its storage lost or moved while Neon kept the history: a new
 * Workers account, a wiped local state) goes on after it, so that no cycle number is used twice.
 */
export async function lastArchivedCycle(env: DbEnv, id: string): Promise<number> {
  const [row] = await getDb(env)
    .select({ last: sql<number>`coalesce(max(${leaderboardCycles.cycle}), 0)::int` })
    .from(leaderboardCycles)
    .where(eq(leaderboardCycles.leaderboardId, id))
  return Number(row?.last ?? 0)
}

/**
 * Creates or replaces a board's configuration; returns whether it was created (or made again
 * after a deletion: a new board, born at this version, created now), and (for the push) the last
 * cycle Neon has of it, in the same statement.
 */
export async function saveLeaderboardConfig(
  env: DbEnv,
  id: string,
  config: LeaderboardConfig,
  ifMatch?: IfMatch,
): Promise<
  | { created: boolean; version: number; lastCycle: number; unchanged?: true }
  | { namedByQueues: true }
  | { preconditionFailed: true; version: number | null }
> {
  const db = getDb(env)
  // Bounds that refuse a win are not saved while a queue sends its results here, unless the
  // board's refused one already (a PUT that makes nothing worse: a pause, new rewards). Judged
  // under the row's lock, which a queue's save holds while it checks this board's bounds
  // (saveQueueConfig), in a statement that starts once the lock is had: never both.
  const guard = takesMatchWins(config)
    ? undefined
    : sql`not (${storedTakesMatchWins}) or not exists (select 1 from queues q
        where q.config->>'leaderboardId' = ${id} and q.deleted_at is null)`
  const upsert = db
    .insert(leaderboards)
    .values({ id, config })
    .onConflictDoUpdate({
      target: leaderboards.id,
      ...(guard ? { setWhere: guard } : {}),
      set: {
        config,
        version: sql`${leaderboards.version} + 1`,
        updatedAt: sql`now()`,
        deletedAt: null,
        bornVersion: sql`case when ${leaderboards.deletedAt} is null then ${leaderboards.bornVersion}
          else ${leaderboards.version} + 1 end`,
        // When the board as it is now was made.
        createdAt: sql`case when ${leaderboards.deletedAt} is null then ${leaderboards.createdAt}
          else now() end`,
      },
    })
    .returning({
      version: leaderboards.version,
      bornVersion: leaderboards.bornVersion,
      lastCycle: lastCycleOfRow,
    })
  // With If-Match, only a board in force at a version it names changes: never one made.
  const wanted = ifMatchParam(ifMatch)
  const conditionalUpdate = db
    .update(leaderboards)
    .set({ config, version: sql`${leaderboards.version} + 1`, updatedAt: sql`now()` })
    .where(
      and(
        eq(leaderboards.id, id),
        isNull(leaderboards.deletedAt),
        sql`(cardinality(${wanted}::bigint[]) = 0 or ${leaderboards.version} = any(${wanted}::bigint[]))`,
        guard,
      ),
    )
    .returning({
      version: leaderboards.version,
      bornVersion: leaderboards.bornVersion,
      lastCycle: lastCycleOfRow,
    })
  const [locked, [row]] = await db.batch([
    db.execute(sql`select ${leaderboards.version} as version,
        ${leaderboards.deletedAt} is not null as deleted,
        ${leaderboards.config} = ${JSON.stringify(config)}::jsonb as same, ${lastCycleOfRow} as last_cycle
      from ${leaderboards} where ${leaderboards.id} = ${id} for update`),
    wanted === null ? upsert : conditionalUpdate,
  ])
  if (!row && wanted !== null) {
    const held = (
      locked.rows as { version: number; deleted: boolean; same: boolean; last_cycle: number }[]
    )[0]
    const inForce = held && !held.deleted ? held : undefined
    // The configuration asked for in force already: a retry whose first try landed.
    if (inForce?.same) {
      return {
        created: false,
        version: inForce.version,
        lastCycle: Number(inForce.last_cycle),
        unchanged: true,
      }
    }
    if (!inForce || !ifMatchHolds(ifMatch, inForce.version)) {
      return { preconditionFailed: true, version: inForce?.version ?? null }
    }
  }
  if (!row) return { namedByQueues: true }
  const version = row?.version ?? 1
  return {
    created: version === (row?.bornVersion ?? 1),
    version,
    lastCycle: Number(row?.lastCycle ?? 0),
  }
}

/**
 * Moves a board's version from `from` to `to` (above the one its object holds, when Neon's count
 * went back: a restore, a new database), keeping the configuration; the new version, or null if
 * the version is no longer `from` (another PUT saved one since).
 */
export async function advanceLeaderboardVersion(
  env: DbEnv,
  id: string,
  from: number,
  to: number,
): Promise<number | null> {
  const [row] = await getDb(env)
    .update(leaderboards)
    .set({ version: to, updatedAt: sql`now()` })
    .where(
      sql`${leaderboards.id} = ${id} and ${leaderboards.version} = ${from} and ${leaderboards.deletedAt} is null`,
    )
    .returning({ version: leaderboards.version })
  return row?.version ?? null
}

/** Records that the board's object acknowledged `version` (never moving back). */
export async function markConfigPushed(env: DbEnv, id: string, version: number): Promise<void> {
  await getDb(env)
    .update(leaderboards)
    .set({ pushedVersion: sql`greatest(${leaderboards.pushedVersion}, ${version})` })
    .where(eq(leaderboards.id, id))
}

/** Boards whose latest configuration their object has not acknowledged, a page at a time in id order. */
export async function unpushedConfigs(env: DbEnv, afterId: string, limit: number) {
  return getDb(env)
    .select({
      id: leaderboards.id,
      config: leaderboards.config,
      version: leaderboards.version,
      lastCycle: lastCycleOfRow,
    })
    .from(leaderboards)
    .where(
      sql`${leaderboards.id} > ${afterId} and ${leaderboards.pushedVersion} < ${leaderboards.version}
        and ${leaderboards.deletedAt} is null`,
    )
    .orderBy(leaderboards.id)
    .limit(limit)
}

/** One board whose latest configuration is unacknowledged, drawn at random (null: none). */
export async function randomUnpushedBoard(env: DbEnv): Promise<string | null> {
  const [row] = await getDb(env)
    .select({ id: leaderboards.id })
    .from(leaderboards)
    .where(
      sql`${leaderboards.pushedVersion} < ${leaderboards.version} and ${leaderboards.deletedAt} is null`,
    )
    .orderBy(sql`random()`)
    .limit(1)
  return row?.id ?? null
}

/**
 * Boards with a schedule, a page at a time in id order (for the cron): each board's id and cycle
 * alone, not its configuration (reward tiers of up to 50 KiB a board, read every minute).
 */
export async function scheduledBoards(env: DbEnv, afterId: string, limit: number) {
  return scheduledBoardsQuery(getDb(env), afterId, limit)
}

/** The query behind `scheduledBoards`, unsent (its plan is tested). */
export function scheduledBoardsQuery(db: Db, afterId: string, limit: number) {
  return db
    .select({ id: leaderboards.id, cycle: leaderboards.cycle })
    .from(leaderboards)
    .where(
      sql`${leaderboards.id} > ${afterId} and ${leaderboards.cycle} <> 'null'::jsonb and ${leaderboards.deletedAt} is null`,
    )
    .orderBy(leaderboards.id)
    .limit(limit)
}

/**
 * Boards whose configuration changed since `sinceMs`, a page at a time in id order (for the cron:
 * a change of schedule moves a board out of the boundaries the cron asks about, while a cycle the
 * change froze under the old schedule has not begun its archive, so Neon does not show it yet).
 */
export async function boardsChangedSince(
  env: DbEnv,
  sinceMs: number,
  afterId: string,
  limit: number,
) {
  return getDb(env)
    .select({ id: leaderboards.id })
    .from(leaderboards)
    .where(
      sql`${leaderboards.updatedAt} > to_timestamp(${sinceMs / 1000}) and ${leaderboards.deletedAt} is null and ${leaderboards.id} > ${afterId}`,
    )
    .orderBy(leaderboards.id)
    .limit(limit)
}

/**
 * Boards with a cycle whose archive has begun in Neon but not finished, a page at a time in id
 * order (for the cron: such a board's own alarm should be finishing it).
 */
export async function boardsArchiving(env: DbEnv, afterId: string, limit: number) {
  return getDb(env)
    .selectDistinct({ id: leaderboardCycles.leaderboardId })
    .from(leaderboardCycles)
    .where(
      sql`${leaderboardCycles.completedAt} is null and ${leaderboardCycles.leaderboardId} > ${afterId}`,
    )
    .orderBy(leaderboardCycles.leaderboardId)
    .limit(limit)
}

/**
 * Marks a board deleted, moving its version past both Neon's and `version`, if it is not at a
 * later version than `version` (the one its object checked: a PUT saved since keeps the board)
 * and no queue sends its results to it: `deleted`; `gone`, with the row's version, when it was
 * deleted already (a deletion before this one committed, its answer lost) or there is no row;
 * `changed` with the version a PUT saved since; `named` with the queues (the first 100) naming
 * it. A version below `version` is Neon's count gone back (a restore), not a PUT, and the board
 * is deleted all the same.
 *
 * The board's row is locked first, and the queues read after: a queue's PUT naming the board
 * holds the row (`for share`, saveQueueConfig) until it commits, so either its queue is seen here,
 * or it finds the board deleted; never both a deleted board and a queue sending results to it.
 */
export async function deleteLeaderboardConfig(
  env: DbEnv,
  id: string,
  version: number,
  /** How long to wait for the board's row (tests shorten or lengthen it). */
  lockTimeoutMs = 4_000,
): Promise<
  | { outcome: 'deleted' }
  | { outcome: 'gone'; version: number | null }
  | { outcome: 'changed'; version: number }
  | { outcome: 'named'; queues: string[] }
> {
  const sql = getSql(env)
  const [, , read, marked] = (await sql.transaction([
    // Given up on before the client's deadline (NEON_QUERY_TIMEOUT_MS): a deletion still waiting
    // in PostgreSQL when its caller has stopped waiting would commit after the object had been
    // told, by a read that does not wait, that it never happened.
    sql.query(`set local lock_timeout = ${Math.trunc(lockTimeoutMs)}`),
    sql.query('select 1 from leaderboards where id = $1 for update', [id]),
    sql.query(
      `select (select version from leaderboards where id = $1) as version,
              (select deleted_at is not null from leaderboards where id = $1) as was_deleted,
              array(select q.id from queues q
                     where q.config->>'leaderboardId' = $1 and q.deleted_at is null
                     order by q.id limit 100) as queues`,
      [id],
    ),
    sql.query(
      `update leaderboards set deleted_at = now(), updated_at = now(),
              version = greatest(version, $2) + 1, pushed_version = greatest(version, $2) + 1
        where id = $1 and version <= $2 and deleted_at is null
          and not exists (select 1 from queues q
                           where q.config->>'leaderboardId' = $1 and q.deleted_at is null)
        returning version`,
      [id, version],
    ),
  ])) as [
    unknown,
    unknown,
    { version: number | null; was_deleted: boolean | null; queues: string[] }[],
    { version: number }[],
  ]
  if (marked.length > 0) return { outcome: 'deleted' }
  const row = read[0]!
  if (row.version === null || row.was_deleted) return { outcome: 'gone', version: row.version }
  if (row.version > version) return { outcome: 'changed', version: row.version }
  return { outcome: 'named', queues: row.queues }
}

/**
 * A board's row as a deletion whose answer was lost left it (`boardRecord`), fenced first: a row
 * that is not deleted and that the deletion could still mark (at or below `marked`, born at or
 * before it) is moved one version past `marked`. A deletion still on its way to PostgreSQL (the
 * client's deadline passed while Neon woke, or while the statement waited in line) then finds
 * the board changed and marks nothing, where it would have deleted a board its object had gone on
 * with. One holding the row's lock commits first, and the fence and the read after it see it.
 * `fenced`: the row was at `marked` and is now at the next version, its configuration the same.
 */
export async function fencedBoardRecord(
  env: DbEnv,
  id: string,
  marked: number,
): Promise<{ version: number; deleted: boolean; bornVersion: number; fenced: boolean } | null> {
  const sql = getSql(env)
  const [before, , after] = (await sql.transaction([
    sql.query('select version from leaderboards where id = $1 for update', [id]),
    sql.query(
      `update leaderboards set version = greatest(version, $2) + 1, updated_at = now()
        where id = $1 and deleted_at is null and version <= $2 and born_version <= $2`,
      [id, marked],
    ),
    sql.query(
      `select version, deleted_at is not null as deleted, born_version
         from leaderboards where id = $1`,
      [id],
    ),
  ])) as [
    { version: number }[],
    unknown,
    { version: number; deleted: boolean; born_version: number }[],
  ]
  const row = after[0]
  if (!row) return null
  return {
    version: row.version,
    deleted: row.deleted,
    bornVersion: row.born_version,
    fenced: !row.deleted && before[0]?.version === marked && row.version === marked + 1,
  }
}

/**
 * A board's row as a deletion left it: its version, whether deleted, and the version the board
 * as it is now was born at; null when there is none.
 */
export async function boardRecord(
  env: DbEnv,
  id: string,
): Promise<{ version: number; deleted: boolean; bornVersion: number } | null> {
  const [row] = await getDb(env)
    .select({
      version: leaderboards.version,
      deletedAt: leaderboards.deletedAt,
      bornVersion: leaderboards.bornVersion,
    })
    .from(leaderboards)
    .where(eq(leaderboards.id, id))
  return row
    ? { version: row.version, deleted: row.deletedAt !== null, bornVersion: row.bornVersion }
    : null
}
