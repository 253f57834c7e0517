/**
 * Typed reads from a Durable Object's SQLite storage. Values always travel as `?` bindings;
 * no SQL is ever built by splicing values into text.
 */
export function all<T>(sql: SqlStorage, query: string, ...bindings: SqlStorageValue[]): T[] {
  return sql.exec(query, ...bindings).toArray() as T[]
}

/** The first row of a query, or undefined. */
export function one<T>(
  sql: SqlStorage,
  query: string,
  ...bindings: SqlStorageValue[]
): T | undefined {
  const rows = sql.exec(query, ...bindings).toArray()
  return rows[0] as T | undefined
}

/**
 * The schema version a Durable Object's storage is at (0 for new storage), from its `meta` table,
 * which this creates if needed. DDL runs once per object behind this version.
 *
 * @example
 * if (schemaVersion(sql) < 1) { sql.exec(`CREATE TABLE …`); setSchemaVersion(sql, 1) }
 */
export function schemaVersion(sql: SqlStorage): number {
  sql.exec(`CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`)
  return Number(
    one<{ value: string }>(sql, `SELECT value FROM meta WHERE key = 'schema'`)?.value ?? 0,
  )
}

/** Whether the storage holds table `name` (a wake of an object that stored nothing makes none). */
export function hasTable(sql: SqlStorage, name: string): boolean {
  return (
    one<{ x: number }>(
      sql,
      `SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = ?`,
      name,
    ) !== undefined
  )
}

/**
 * `keys`' values in an object's `meta` table, as far as they can be read: for naming an object
 * whose load failed (a schema step that throws runs before the load reads its name).
 */
export function metaValuesIfReadable(
  sql: SqlStorage,
  keys: readonly string[],
): Record<string, string> {
  try {
    const rows = sql
      .exec<{ key: string; value: string }>(
        `SELECT key, value FROM meta WHERE key IN (${keys.map(() => '?').join(', ')})`,
        ...keys,
      )
      .toArray()
    return Object.fromEntries(rows.map((r) => [r.key, r.value]))
  } catch {
    return {}
  }
}

/** Records the schema version reached. */
export function setSchemaVersion(sql: SqlStorage, version: number): void {
  sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)`, String(version))
}

/**
 * Most values one statement may bind in a Durable Object's SQLite on Cloudflare (local SQLite
 * takes far more, so only this bound keeps a statement that works locally working deployed).
 */
export const MAX_BOUND_VALUES = 100

/**
 * Inserts `rows` with as few statements as MAX_BOUND_VALUES allows (one, for the few rows a
 * match or a session writes). `into` is the statement up to its values: `INSERT INTO t (a, b)`.
 */
export function insertRows(sql: SqlStorage, into: string, rows: SqlStorageValue[][]): void {
  const width = rows[0]?.length ?? 0
  if (width === 0) return
  const tuple = `(${new Array<string>(width).fill('?').join(', ')})`
  const perStatement = Math.max(1, Math.floor(MAX_BOUND_VALUES / width))
  for (let i = 0; i < rows.length; i += perStatement) {
    const chunk = rows.slice(i, i + perStatement)
    sql.exec(`${into} VALUES ${chunk.map(() => tuple).join(', ')}`, ...chunk.flat())
  }
}
