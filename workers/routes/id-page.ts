import { z } from '@hono/zod-openapi'
import { ResourceId } from '../lib/fields.ts'
import { Limit } from './leaderboard-schemas.ts'

/** The query of an admin listing read a page at a time in id order. */
export const IdPageQuery = z.object({
  after: ResourceId.optional().openapi({ description: '`next` of the page before' }),
  limit: Limit(100, 50),
})

/**
 * The query of an admin listing of things that can be deleted (boards, queues): those in use
 * (default), or, with `status=deleted`, those deleted.
 */
export function IdPageQueryWithStatus(things: string) {
  return IdPageQuery.extend({
    status: z
      .enum(['active', 'deleted'])
      .optional()
      .openapi({
        description: `The ${things} in use (default), or those deleted`,
      }),
  })
}

/**
 * A page of rows read with one more than `limit` (`id > after order by id limit limit + 1`): the
 * page, and the id to go on after, null on the last page.
 */
export function idPage<T extends { id: string }>(
  rows: T[],
  limit: number,
): { page: T[]; next: string | null } {
  const page = rows.slice(0, limit)
  return { page, next: rows.length > limit ? page[page.length - 1]!.id : null }
}
