import { getSql, type DbEnv } from '../db/client.ts'
import { errorFields, log } from '../lib/log.ts'
import { within } from '../lib/within.ts'

/**
 * Boards one request about a player (an erasure, an account ban or its lifting) walks at most; a
 * deployment with more is walked over several calls, each naming where the last one stopped.
 */
export const boardWalkLimits = { boardsPerCall: 200 }

/** Boards called side by side, and how long one may take to answer. */
const BOARDS_AT_ONCE = 20
const BOARD_CALL_MS = 10_000

/** A page of board ids in byte order after `after` (every board in Neon, the deleted aside). */
async function boardsAfter(env: DbEnv, after: string, limit: number): Promise<string[]> {
  const rows = (await getSql(env).query(
    `select id from leaderboards where id collate "C" > $1 and deleted_at is null
      order by id collate "C" limit $2`,
    [after, limit],
  )) as { id: string }[]
  return rows.map((r) => r.id)
}

/** What one board answered, or that it did not (an error, or no answer in time). */
export type BoardOutcome<T> = { board: string; answer: T } | { board: string; failed: unknown }

/**
 * Calls `call` on the next page of boards after `after`, BOARDS_AT_ONCE side by side, each given
 * BOARD_CALL_MS to answer. `next` is the last board walked when more remain (the caller's next
 * `after`), else null. `what` names the call in the log of a board that failed.
 */
export async function walkBoards<T>(
  env: DbEnv,
  after: string,
  what: string,
  call: (boardId: string) => Promise<T>,
): Promise<{ outcomes: BoardOutcome<T>[]; next: string | null }> {
  const perCall = boardWalkLimits.boardsPerCall
  const ids = await boardsAfter(env, after, perCall + 1)
  const page = ids.slice(0, perCall)
  const outcomes: BoardOutcome<T>[] = []
  for (let i = 0; i < page.length; i += BOARDS_AT_ONCE) {
    const chunk = page.slice(i, i + BOARDS_AT_ONCE)
    const settled = await Promise.allSettled(
      chunk.map((id) => within(call(id), BOARD_CALL_MS, what)),
    )
    settled.forEach((s, j) => {
      const board = chunk[j]!
      if (s.status === 'fulfilled') outcomes.push({ board, answer: s.value })
      else {
        log('warn', `${what} failed`, { board, ...errorFields(s.reason) })
        outcomes.push({ board, failed: s.reason })
      }
    })
  }
  return { outcomes, next: ids.length > perCall ? page[page.length - 1]! : null }
}
