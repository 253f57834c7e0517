import { locationHintFor } from '../core/location.ts'
import type { Env } from '../env.ts'
import type { ProblemType } from '../lib/problem.ts'
import type { MatchPlayer } from './protocol.ts'

/**
 * What the pool hands a GameSession when it creates a match: the agreed interface between the
 * matchmaker and `durable-objects/game-session.ts` (declared here too, so the pool depends on
 * the shape, not on the session's implementation).
 */
export interface SessionSetup {
  /** The session's Durable Object is `env.GAME_SESSION.getByName(sessionId)`. */
  sessionId: string
  rules: string
  /** In turn order. */
  roster: MatchPlayer[]
  /** Secret; drawn with crypto.getRandomValues. */
  seed: string
  options?: unknown
  queue?: string | null
  region?: string | null
  leaderboardId?: string | null
}

export type CreateSessionResult =
  { ok: true; created: boolean } | { ok: false; problem: ProblemType; detail: string }

/**
 * Creates a session; idempotent for the same setup (the pool retries with the very same one).
 * `matchedAt`: when the match's earliest ticket joined (MatchPool.earliestJoin), which the
 * session judges its players' erasures by.
 */
export type SessionCreator = (
  setup: SessionSetup,
  matchedAt?: number,
) => Promise<CreateSessionResult>

interface SessionApi {
  create(
    setup: SessionSetup,
    opts?: { listing?: 'now' | 'deferred'; matchedAt?: number },
  ): Promise<CreateSessionResult>
}

/**
 * The production creator: the session's own Durable Object. Its listing in Neon follows from the
 * session's alarm, so `match_found` does not wait for a Neon round trip.
 */
export function gameSessionCreator(env: Pick<Env, 'GAME_SESSION'>): SessionCreator {
  return (setup, matchedAt) => {
    // Created near its players: the pool's region names where (workers/core/location.ts).
    const locationHint = setup.region ? locationHintFor(setup.region) : null
    const session = env.GAME_SESSION.getByName(
      setup.sessionId,
      locationHint ? { locationHint } : undefined,
    ) as unknown as SessionApi
    return session.create(setup, {
      listing: 'deferred',
      ...(matchedAt !== undefined ? { matchedAt } : {}),
    })
  }
}

/** A secret seed: 32 random bytes, hex. */
export function newSeed(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(32))
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}
