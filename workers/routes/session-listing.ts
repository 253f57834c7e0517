import { z } from '@hono/zod-openapi'
import type { DbEnv } from '../db/client.ts'
import { SessionId } from '../sessions/schemas.ts'
import { listSessions, type SessionListing } from '../sessions/store.ts'
import { RatingChange } from './sessions.ts'
import { decodeTimeCursor, encodeTimeCursor } from './time-cursor.ts'

/** A session as the listings give it (the admin's, a player's own). */
export const ListedSession = z
  .object({
    sessionId: z.string(),
    rules: z.string(),
    status: z.enum(['live', 'finished']),
    roster: z.array(z.object({ playerId: z.string(), team: z.number().int() })),
    queue: z.string().nullable(),
    region: z.string().nullable(),
    createdAt: z.number(),
    endedAt: z.number().nullable(),
    reason: z
      .enum(['finished', 'forfeit', 'abandoned', 'cancelled'])
      .nullable()
      .openapi({ description: 'How it ended; null while live' }),
    winner: z.string().nullable().openapi({
      description: 'null while live, and for a game without one (abandoned, cancelled)',
    }),
    place: z
      .number()
      .int()
      .nullable()
      .openapi({
        description:
          'The place (1 is first) of the player the listing is for (`playerId`, or the caller); ' +
          'null while live, and in a listing for nobody',
      }),
    ratingChange: RatingChange.omit({ playerId: true })
      .nullable()
      .openapi({
        description:
          "That player's rating before and after the match; null while live, for an unrated " +
          'match, and in a listing for nobody',
      }),
  })
  .openapi('ListedSession')

/** A page of a listing; `nextCursor` is the `cursor` of the next page. */
export const SessionPage = z
  .object({ sessions: z.array(ListedSession), nextCursor: z.string().nullable() })
  .openapi('SessionPage')

/**
 * A page of a listing from its cursor (`nextCursor` of the page before; a forged one is 422),
 * with the cursor of the next page: null once a page comes back short.
 */
export async function sessionPage(
  env: DbEnv,
  listing: Omit<SessionListing, 'after'>,
  cursor: string | undefined,
  /** Runs once the cursor is known to be good, before the query (a player's read counted). */
  beforeQuery?: () => Promise<void>,
) {
  const after =
    cursor === undefined
      ? undefined
      : decodeTimeCursor(cursor, (v) =>
          v.length === 1 && SessionId.safeParse(v[0]).success ? (v[0] as string) : null,
        )
  await beforeQuery?.()
  const rows = await listSessions(env, {
    ...listing,
    after: after && { time: after.time, sessionId: after.rest },
  })
  const last = rows[rows.length - 1]
  return {
    sessions: rows.map(({ cursorTime: _, ...listed }) => listed),
    nextCursor:
      rows.length === listing.limit && last
        ? encodeTimeCursor(last.cursorTime, last.sessionId)
        : null,
  }
}
