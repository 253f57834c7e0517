import { signScopedToken, verifyScopedToken, type AuthEnv } from './auth.ts'
import { ApiError } from './problem.ts'

/** Audience of tokens that admit one player to one game session. */
export const SESSION_AUDIENCE = 'nexus:session'
/** A session token outlives any sensible match; reconnects within it need no new token. */
export const SESSION_TOKEN_TTL_SECONDS = 6 * 60 * 60

/**
 * Signs a token scoped to one session and one player (what `match_found` carries).
 *
 * @example
 * const token = await issueSessionToken(env, sessionId, playerId)
 */
export function issueSessionToken(
  env: AuthEnv,
  sessionId: string,
  playerId: string,
  now = Date.now(),
): Promise<string> {
  return signScopedToken(
    env,
    SESSION_AUDIENCE,
    playerId,
    { sid: sessionId },
    SESSION_TOKEN_TTL_SECONDS,
    now,
  )
}

/**
 * Verifies a session token for `sessionId`; returns the player. A token for another session, a
 * player token, or a forged/expired one is refused with 401/403 problems.
 */
export async function verifySessionToken(
  env: AuthEnv,
  token: string,
  sessionId: string,
): Promise<string> {
  const claims = await verifyScopedToken(env, token, SESSION_AUDIENCE)
  if (claims.sid !== sessionId) throw new ApiError('forbidden', 'This token is for another session')
  return claims.sub
}
