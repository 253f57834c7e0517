import { getSql, type DbEnv } from '../db/client.ts'
import type { Env } from '../env.ts'
import { errorFields, log } from '../lib/log.ts'
import { within } from '../lib/within.ts'
import { sessionStub } from './stub.ts'

/** A session that does not answer within this counts as unreachable (the caller retries). */
const SESSION_CALL_MS = 10_000

/**
 * The most live sessions one call takes a player out of, the newest first: matchmaking puts a
 * player in one per queue at a time, so only an admin's own sessions by the hundred pass it (a
 * warning says so). It bounds the call's object calls beside its 200 boards.
 */
export const ERASED_SESSIONS_PER_CALL = 100

/**
 * Takes an erased player out of every live session Neon lists them in (GameSession's
 * `removeErasedPlayer`): their sockets close and their tokens play no more. `sessions`: those
 * this call took them out of. A session listed
 * after the erasure's tombstone finds the erasure itself, when it lists itself. Idempotent: each
 * call of an erasure's walk does it again, and a session that could not be reached is named for
 * a retry.
 *
 * @example
 * const { sessions, unreached } = await removeFromLiveSessions(env, playerId)
 */
export async function removeFromLiveSessions(
  env: Pick<Env, 'GAME_SESSION'> & DbEnv,
  playerId: string,
  erasedAt: number,
): Promise<{ sessions: string[]; unreached: string[] }> {
  // From the player's live sessions as Neon has them (not their whole history): a session over
  // whose status Neon has not caught up with is asked too, and answers nothing.
  const rows = (await getSql(env).query(
    `select session_id from live_session_players
      where player_id = $1
      order by created_at desc limit $2`,
    [playerId, ERASED_SESSIONS_PER_CALL],
  )) as { session_id: string }[]
  const ids = rows.map((r) => r.session_id)
  if (ids.length === ERASED_SESSIONS_PER_CALL) {
    log('warn', 'erased player in more live sessions than a call takes', {
      playerId,
      taken: ERASED_SESSIONS_PER_CALL,
    })
  }
  const outcomes = await Promise.allSettled(
    ids.map((id) =>
      // A session made after the erasure is a player's back under the id since: theirs.
      within(
        sessionStub(env, id).removeErasedPlayer(playerId, erasedAt),
        SESSION_CALL_MS,
        'session removal',
      ),
    ),
  )
  const sessions: string[] = []
  const unreached: string[] = []
  outcomes.forEach((o, i) => {
    const session = ids[i]!
    if (o.status === 'rejected') {
      log('warn', 'erased player not taken out of a session', {
        playerId,
        session,
        ...errorFields(o.reason),
      })
      unreached.push(session)
    } else if (o.value.ok && o.value.taken) sessions.push(session)
    // Not found: its storage was cleared since Neon listed it, so nothing of it plays.
  })
  return { sessions, unreached }
}
