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

/** Records the schema version reached. */
export function setSchemaVersion(sql: SqlStorage, version: number): void {
  sql.exec(`INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)`, String(version))
}
