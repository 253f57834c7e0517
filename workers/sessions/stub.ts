import type { GameSession } from '../../durable-objects/game-session.ts'
import type { Env } from '../env.ts'

type Methods =
  | 'create'
  | 'info'
  | 'end'
  | 'events'
  | 'current'
  | 'endStatus'
  | 'runEndWork'
  | 'removeErasedPlayer'

/** Every RPC answers asynchronously, whatever the method's own signature. */
type Remote<F> = F extends (...args: infer A) => infer R
  ? (...args: A) => Promise<Awaited<R>>
  : never

/** The session's RPC surface, with the plain return types its methods declare. */
export type SessionApi = { [K in Methods]: Remote<GameSession[K]> } & {
  fetch(request: Request): Promise<Response>
}

/**
 * The Durable Object of a session, addressed by the session's id. Arguments and results are plain
 * structured-cloneable data, so the stub's promised types are the methods' own; the cast spares
 * callers the RPC type mapping, which widens discriminated unions.
 *
 * @example
 * const r = await sessionStub(env, sessionId).create(setup)
 */
export function sessionStub(env: Pick<Env, 'GAME_SESSION'>, sessionId: string): SessionApi {
  return env.GAME_SESSION.getByName(sessionId) as unknown as SessionApi
}
