import { z } from '@hono/zod-openapi'
import { sql } from 'drizzle-orm'
import { getDb } from '../db/client.ts'
import { players } from '../db/schema.ts'
import { forgetPlayerName } from '../leaderboards/names.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { errorFields, log } from '../lib/log.ts'
import {
  createRoute,
  DisplayName,
  newRouter,
  PlayerId,
  problemResponses,
  ResourceId,
} from '../lib/openapi.ts'
import { ApiError } from '../lib/problem.ts'
import { within } from '../lib/within.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { cancelStaleTickets } from '../parties/stale-tickets.ts'
import { boardsAfter, eraseFromNeon, erasureLimits } from '../players/erasure.ts'

export const adminPlayers = newRouter()

const PlayerUpdate = z
  .object({
    rating: z.number().min(0).max(5000).optional(),
    name: DisplayName.optional(),
  })
  .strict()
  .refine((v) => v.rating !== undefined || v.name !== undefined, 'give rating, name or both')
  .openapi('PlayerUpdate')

const Player = z
  .object({
    playerId: z.string(),
    name: z.string().nullable(),
    rating: z.number(),
    ratingDeviation: z.number(),
  })
  .openapi('Player')

const putPlayerRoute = createRoute({
  method: 'put',
  path: '/{playerId}',
  summary: "Set a player's rating or name",
  description:
    'Creates the player if unknown (players of an external identity provider appear on first use).',
  middleware: [requireAdmin()] as const,
  request: {
    params: z.object({ playerId: PlayerId }),
    body: { content: { 'application/json': { schema: PlayerUpdate } }, required: true },
  },
  responses: {
    200: { description: 'The player', content: { 'application/json': { schema: Player } } },
    ...problemResponses(400, 401, 403, 413, 415, 422),
  },
})

adminPlayers.openapi(putPlayerRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const update = c.req.valid('json')
  const set: Partial<typeof players.$inferInsert> = { updatedAt: sql`now()` as unknown as Date }
  if (update.name !== undefined) set.name = update.name
  if (update.rating !== undefined) set.rating = update.rating
  const [row] = await getDb(c.env)
    .insert(players)
    .values({ id: playerId, ...set })
    .onConflictDoUpdate({ target: players.id, set })
    .returning()
  if (!row) throw new Error('player upsert returned no row')
  // Other isolates take the new name within their minute (docs/leaderboards.md, Reads).
  if (update.name !== undefined) forgetPlayerName(playerId)
  return c.json(
    { playerId: row.id, name: row.name, rating: row.rating, ratingDeviation: row.ratingDeviation },
    200,
  )
})

const Erasure = z
  .object({
    playerId: z.string(),
    profileDeleted: z.boolean().openapi({
      description: 'Whether there was a profile (device link, name, rating) to delete',
    }),
    leftParty: z
      .string()
      .nullable()
      .openapi({ description: 'The party the player was taken out of' }),
    archivedRowsCleared: z
      .number()
      .int()
      .openapi({ description: 'Archived standings whose copied name and metadata were cleared' }),
    boards: z.object({
      walked: z.number().int().openapi({ description: 'Boards this call walked' }),
      entriesRemoved: z
        .number()
        .int()
        .openapi({ description: "Of those, boards whose current cycle held the player's entry" }),
      next: ResourceId.nullable().openapi({
        description: 'Boards remain after this one: call again with `after` set to it (202)',
      }),
    }),
  })
  .openapi('PlayerErasure')

const eraseRoute = createRoute({
  method: 'delete',
  path: '/{playerId}',
  summary: "Erase a player's personal data",
  description:
    "For a player's request to be forgotten. Deletes their profile (a guest's device link, the " +
    'display name, the rating: the device signs in as a new player afterwards), takes them out of ' +
    'their party (a leader hands over, its queued tickets are cancelled as on any leave) and off ' +
    'invites, clears the name and metadata copied into archived standings, and removes their entry from every ' +
    "board's current cycle. Ranks, scores, rewards and match results stay under the bare id, which " +
    'names nobody once the profile is gone; the id is kept as erased, so a match the player was ' +
    'still in rates and records nothing of theirs. Walks at most 200 boards per call, in id order: 202 ' +
    'with `boards.next` says to call again with `after`; 200 when every board is done. Idempotent: ' +
    'safe to retry, and a board that cannot be reached is 503 (`boards` lists them) for a retry. ' +
    "Tokens already issued stay valid until they expire (at most 30 days): sign the player's " +
    'client out.',
  middleware: [requireAdmin()] as const,
  request: {
    params: z.object({ playerId: PlayerId }),
    query: z.object({
      after: ResourceId.optional().openapi({ description: '`boards.next` of the call before' }),
    }),
  },
  responses: {
    200: { description: 'Erased everywhere', content: { 'application/json': { schema: Erasure } } },
    202: {
      description: 'Erased in Neon and on the boards walked; more boards remain',
      content: { 'application/json': { schema: Erasure } },
    },
    ...problemResponses(401, 403, 422, 503),
  },
})

/** Boards called side by side, and how long one may take to answer. */
const BOARDS_AT_ONCE = 20
const BOARD_CALL_MS = 10_000

adminPlayers.openapi(eraseRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const after = c.req.valid('query').after ?? ''
  const neon = await eraseFromNeon(c.env, playerId)
  forgetPlayerName(playerId)
  if (neon.leftParty) {
    await cancelStaleTickets(c.env, neon.leftParty, neon.staleTickets, { by: 'erasure' })
  }
  const perCall = erasureLimits.boardsPerCall
  const ids = await boardsAfter(c.env, after, perCall + 1)
  const page = ids.slice(0, perCall)
  let entriesRemoved = 0
  const failed: string[] = []
  for (let i = 0; i < page.length; i += BOARDS_AT_ONCE) {
    const chunk = page.slice(i, i + BOARDS_AT_ONCE)
    const outcomes = await Promise.allSettled(
      chunk.map((id) =>
        within(boardStub(c.env, id).removeEntry(id, playerId), BOARD_CALL_MS, 'board removal'),
      ),
    )
    outcomes.forEach((o, j) => {
      if (o.status === 'fulfilled' && o.value.ok) {
        if (o.value.removed) entriesRemoved++
        return
      }
      failed.push(chunk[j]!)
      log('warn', 'erasure: entry not removed', {
        board: chunk[j]!,
        ...(o.status === 'rejected'
          ? errorFields(o.reason)
          : { problem: o.value.ok ? '' : o.value.problem }),
      })
    })
  }
  if (failed.length > 0) {
    throw new ApiError(
      'unavailable',
      `The player is erased from Neon, but ${failed.length} board(s) could not be reached: retry`,
      { boards: failed.slice(0, 100) },
      { 'retry-after': '5' },
    )
  }
  const next = ids.length > perCall ? page[page.length - 1]! : null
  return c.json(
    {
      playerId,
      profileDeleted: neon.hadProfile,
      leftParty: neon.leftParty,
      archivedRowsCleared: neon.archivedRowsCleared,
      boards: { walked: page.length, entriesRemoved, next },
    },
    next === null ? 200 : 202,
  )
})
