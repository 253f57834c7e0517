import { neon } from '@neondatabase/serverless'
import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { configureLocalRelay } from '../../../workers/db/client.ts'
import { ADMIN_KEY, call, json } from './http.ts'
import { until } from './sockets.ts'

const testEnv = env as unknown as Record<string, string>

/** A fresh board id per test, so tests never share state. */
export function boardId(prefix = 'lb'): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`
}

export async function createBoard(
  config: Record<string, unknown> = {},
  id = boardId(),
): Promise<string> {
  const res = await call(`/v1/admin/leaderboards/${id}`, json('PUT', config, ADMIN_KEY))
  if (res.status !== 201) throw new Error(`create board: ${res.status} ${await res.text()}`)
  return id
}

let keyCounter = 0

/** Submits as a game server (admin key) for a player. */
export function submitFor(
  board: string,
  playerId: string,
  body: Record<string, unknown>,
  key = `k-${keyCounter++}-${crypto.randomUUID()}`,
): Promise<Response> {
  return call(
    `/v1/leaderboards/${board}/scores`,
    json('POST', { ...body, playerId }, ADMIN_KEY, { 'idempotency-key': key }),
  )
}

/** Submits with a player's own token. */
export function submitAs(
  board: string,
  token: string,
  body: Record<string, unknown>,
  key = `k-${keyCounter++}-${crypto.randomUUID()}`,
): Promise<Response> {
  return call(
    `/v1/leaderboards/${board}/scores`,
    json('POST', body, token, { 'idempotency-key': key }),
  )
}

/** A read that bypasses every cache layer, to see the board as it is now. */
export async function fresh<T>(path: string, headers: Record<string, string> = {}): Promise<T> {
  const res = await call(path, { headers: { 'cache-control': 'no-cache', ...headers } })
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${await res.text()}`)
  return (await res.json()) as T
}

export interface TopEntry {
  rank: number
  playerId: string
  name: string | null
  score: number
  subscore: number
  metadata: unknown
}

export interface Top {
  cycle: number
  entries: TopEntry[]
  nextCursor: string | null
  total: number
}

/** Direct SQL against the test PostgreSQL, through the Neon driver, for asserting what Neon holds. */
export function pg() {
  configureLocalRelay(testEnv.DATABASE_URL!, testEnv.NEON_LOCAL_RELAY!)
  return neon(testEnv.DATABASE_URL!)
}

/**
 * Resolves once some statement is blocked by the one whose text contains `marker` (a holder
 * sleeping inside its transaction): the request racing it is waiting on its lock, not after it.
 */
export function blockedBy(marker: string, what: string): Promise<true> {
  const sql = pg()
  return until(
    async () =>
      (
        await sql.query(
          `select 1 from pg_stat_activity w, pg_stat_activity h
            where h.query like $1 and h.pid <> pg_backend_pid()
              and h.pid = any(pg_blocking_pids(w.pid))`,
          [`%${marker}%`],
        )
      ).length > 0 || undefined,
    5000,
    what,
  )
}

/**
 * Runs `lock` (a statement taking a row lock), then a hold, then `statements`, in one
 * transaction: a write holding a row lock while it runs. The hold is a sleep of `seconds`, or
 * (`{ afterWaiter }`) lasts until another request waits on the lock (at most 6 s, within the
 * driver's 8 s deadline) and then `afterWaiter` seconds more, so that a stall of this machine
 * before the racing request arrives does not end the hold first; with `until` (an SQL condition),
 * until that holds instead of until a request waits. Resolves once the hold has begun, with the
 * transaction's end and a wait for a request to queue behind it.
 */
export async function holdLock(
  lock: { text: string; params: unknown[] },
  seconds: number | { afterWaiter: number; until?: string },
  statements: { text: string; params: unknown[] }[] = [],
): Promise<{ done: Promise<unknown>; contended: () => Promise<true> }> {
  const sql = pg()
  const marker = `held_lock_${crypto.randomUUID().replaceAll('-', '')}`
  const hold =
    typeof seconds === 'number'
      ? `select pg_sleep(${seconds}) as ${marker}`
      : `do $$ begin -- ${marker}
           for i in 1..60 loop
             -- A transaction reads the backends once and keeps them: one that connected since
             -- (the waiter, on a new connection) would never be seen.
             perform pg_stat_clear_snapshot();
             exit when ${
               seconds.until ??
               `exists (select 1 from pg_stat_activity w
                         where pg_backend_pid() = any(pg_blocking_pids(w.pid)))`
             };
             perform pg_sleep(0.1);
           end loop;
           perform pg_sleep(${seconds.afterWaiter});
         end $$`
  const done = sql.transaction([
    sql.query(lock.text, lock.params),
    sql.query(hold),
    ...statements.map((q) => sql.query(q.text, q.params)),
  ])
  // Awaited by the caller; a failure before it is (the wait below timing out) is not unhandled.
  done.catch(() => undefined)
  await until(
    async () =>
      (
        await sql.query(`select 1 from pg_stat_activity where state = 'active' and query like $1`, [
          `%${marker}%`,
        ])
      ).length > 0 || undefined,
    10_000,
    'the transaction holding the lock',
  )
  return { done, contended: () => blockedBy(marker, 'a request waiting on the lock') }
}

/**
 * What a board's object has stored: its tables and its alarm. Asked of an object not in memory,
 * its wake makes the schema first: ask right after the call whose leftovers are in question.
 */
export function storedBy(id: string) {
  return runInDurableObject(env.LEADERBOARD.getByName(id), async (_inst, state) => ({
    tables: state.storage.sql
      .exec<{ name: string }>(
        `SELECT name FROM sqlite_master WHERE name NOT LIKE '\_cf%' ESCAPE '\\'`,
      )
      .toArray()
      .map((r) => r.name),
    alarm: await state.storage.getAlarm(),
  }))
}
