import { z } from '@hono/zod-openapi'
import { sql } from 'drizzle-orm'
import { getDb } from '../db/client.ts'
import { players } from '../db/schema.ts'
import { forgetPlayerName } from '../leaderboards/names.ts'
import { createRoute, DisplayName, newRouter, PlayerId, problemResponses } from '../lib/openapi.ts'
import { requireAdmin } from '../middleware/auth.ts'

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
