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
