/**
 * Counts the rows an object's own queries read from its (real) SQLite storage while `work` runs:
 * how a test shows a query found its rows through an index instead of reading a whole table.
 * The object must keep its `SqlStorage` in a `sql` field, as every Nexus Durable Object does.
 */
export async function countRowsRead<T>(
  inst: object,
  work: () => Promise<T>,
): Promise<{ result: T; rowsRead: number }> {
  const holder = inst as { sql: SqlStorage }
  const real = holder.sql
  const cursors: SqlStorageCursor<Record<string, SqlStorageValue>>[] = []
  holder.sql = new Proxy(real, {
    get(target, prop) {
      if (prop === 'exec') {
        return (query: string, ...bindings: SqlStorageValue[]) => {
          const cursor = target.exec(query, ...bindings)
          cursors.push(cursor)
          return cursor
        }
      }
      const value = Reflect.get(target, prop) as unknown
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value
    },
  })
  try {
    const result = await work()
    return { result, rowsRead: cursors.reduce((sum, c) => sum + c.rowsRead, 0) }
  } finally {
    holder.sql = real
  }
}
