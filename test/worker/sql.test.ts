import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { all, insertRows, MAX_BOUND_VALUES } from '../../workers/lib/sql.ts'

/** Runs `fn` on the SQLite storage of a Durable Object nobody else uses. */
function inFreshStorage<T>(fn: (sql: SqlStorage) => T): Promise<T> {
  return runInDurableObject(
    env.GAME_SESSION.getByName(`sql-test-${crypto.randomUUID()}`),
    (_, state) => fn(state.storage.sql),
  )
}

describe('insertRows', () => {
  it('writes every row, each statement binding at most the deployed limit of values', async () => {
    const { bound, rows } = await inFreshStorage((sql) => {
      sql.exec(`CREATE TABLE t (n INTEGER PRIMARY KEY, a TEXT, b INTEGER)`)
      // Watches the statements on their way to the real storage.
      const bound: number[] = []
      const watched = {
        exec: (query: string, ...values: SqlStorageValue[]) => {
          bound.push(values.length)
          return sql.exec(query, ...values)
        },
      } as unknown as SqlStorage
      const written = Array.from({ length: 70 }, (_, n) => [n, `row ${n}`, n * n])
      insertRows(watched, `INSERT INTO t (n, a, b)`, written)
      return {
        bound,
        rows: all<{ n: number; a: string; b: number }>(sql, `SELECT * FROM t ORDER BY n`),
      }
    })
    // 33 rows of 3 values fit in 100: 33, 33 and 4 rows.
    expect(bound).toEqual([99, 99, 12])
    expect(Math.max(...bound)).toBeLessThanOrEqual(MAX_BOUND_VALUES)
    expect(rows).toEqual(Array.from({ length: 70 }, (_, n) => ({ n, a: `row ${n}`, b: n * n })))
  })

  it('writes one statement for a few rows, and none for no rows', async () => {
    const counts = await inFreshStorage((sql) => {
      sql.exec(`CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)`)
      let statements = 0
      const watched = {
        exec: (query: string, ...values: SqlStorageValue[]) => {
          statements++
          return sql.exec(query, ...values)
        },
      } as unknown as SqlStorage
      insertRows(watched, `INSERT INTO t (k, v)`, [])
      const none = statements
      insertRows(watched, `INSERT INTO t (k, v)`, [
        ['x', '1'],
        ['y', '2'],
      ])
      return { none, few: statements - none, rows: all(sql, `SELECT k, v FROM t ORDER BY k`) }
    })
    expect(counts).toEqual({
      none: 0,
      few: 1,
      rows: [
        { k: 'x', v: '1' },
        { k: 'y', v: '2' },
      ],
    })
  })
})
