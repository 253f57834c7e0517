import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import type { Env } from '../env.ts'

/** The board's RPC surface, with the plain return types its methods declare. */
export type BoardApi = Pick<
  Leaderboard,
  | 'configure'
  | 'submit'
  | 'importEntries'
  | 'removeEntry'
  | 'ban'
  | 'unban'
  | 'bans'
  | 'info'
  | 'operatorInfo'
  | 'top'
  | 'player'
  | 'around'
  | 'close'
  | 'tick'
  | 'closeProgress'
  | 'runArchive'
  | 'deleteBoard'
>

/**
 * The Durable Object of a board, addressed by the board's id. Every method's arguments and
 * results are plain structured-cloneable data, so the stub's promised types are the methods'
 * own; the cast spares callers the RPC type mapping, which widens discriminated unions.
 */
export function boardStub(env: Pick<Env, 'LEADERBOARD'>, id: string): BoardApi {
  return env.LEADERBOARD.getByName(id) as unknown as BoardApi
}
