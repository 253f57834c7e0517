import { z } from '@hono/zod-openapi'
import { getSql, type DbEnv } from '../db/client.ts'
import { isoMicros, isoUtc } from '../db/iso-time.ts'
import { ResourceId } from '../lib/fields.ts'
import { Limit, StoredJsonObject } from './leaderboard-schemas.ts'
import { decodeTimeCursor, encodeTimeCursor } from './time-cursor.ts'

/** A player's rewards across boards, newest first: theirs (`/me/rewards`) and support's view. */

const Reward = z
  .object({
    leaderboardId: z.string(),
    cycle: z.number().int(),
    rank: z.number().int(),
    reward: StoredJsonObject,
    createdAt: z.string(),
    voidedAt: z
      .string()
      .nullable()
      .openapi({ description: 'Voided by an admin (not to be paid); null while it stands' }),
    voidReason: z
      .string()
      .nullable()
      .optional()
      .openapi({
        description:
          "Support's read only (`/v1/admin/players/:playerId/rewards`): why it was voided, as the " +
          "admin gave it, or `account banned before the cycle ended` (the close's own, for a ban " +
          'that reached the board late; a lifted ban leaves it voided, DELETE …/void restores it)',
      }),
  })
  .openapi('Reward')

export const RewardsQuery = z.object({
  limit: Limit(100, 50),
  cursor: z.string().max(200).optional(),
})

export const RewardPage = z
  .object({ rewards: z.array(Reward), nextCursor: z.string().nullable() })
  .openapi('RewardPage')

/** Cursor: the last row's (created_at, leaderboard_id, cycle), so pages are stable. */
function parseCursor(cursor: string | undefined): [string, string, number] | null {
  if (cursor === undefined) return null
  // Exactly what this endpoint issues (its columns are text ids and int4 cycles).
  const { time, rest } = decodeTimeCursor(cursor, (v) =>
    v.length === 2 &&
    typeof v[0] === 'string' &&
    ResourceId.safeParse(v[0]).success &&
    Number.isSafeInteger(v[1]) &&
    (v[1] as number) >= 1 &&
    (v[1] as number) <= 2_147_483_647
      ? ([v[0], v[1] as number] as const)
      : null,
  )
  return [time, rest[0], rest[1]]
}

/**
 * A page of `playerId`'s rewards, newest first, after the cursor's row. With `sinceErasure` (the
 * player's own read), none won by a score submitted before their erasure: a player of an identity
 * provider who came back under the id is a new player, and what was erased is not theirs to
 * claim (support's read shows everything). A cycle archived after the erasure writes the erased
 * player's reward later, so the cut is by the score's submission, as archived names are.
 */
export async function rewardPage(
  env: DbEnv,
  playerId: string,
  { limit, cursor }: z.infer<typeof RewardsQuery>,
  {
    sinceErasure = false,
    withVoidReason = false,
    beforeQuery,
  }: {
    sinceErasure?: boolean
    /** Support's read: each void's reason, which a player's own read leaves out (admin notes). */
    withVoidReason?: boolean
    /** Runs once the cursor is known to be good, before the query (a player's read counted). */
    beforeQuery?: () => Promise<void>
  } = {},
): Promise<z.infer<typeof RewardPage>> {
  const after = parseCursor(cursor)
  await beforeQuery?.()
  const rows = (await getSql(env).query(
    `select r.leaderboard_id, r.cycle, r.rank, r.reward, r.created_at,
            ${isoMicros('r.created_at')} as created_iso, ${isoUtc('r.voided_at')} as voided_at,
            r.void_reason
       from rewards r
      where r.player_id = $1
        and ($2::timestamptz is null
             or (r.created_at, r.leaderboard_id, r.cycle) < ($2::timestamptz, $3, $4))
        and ($6::boolean is false or not exists (
              select 1 from erased_players e
                left join leaderboard_archive a
                  on a.leaderboard_id = r.leaderboard_id and a.cycle = r.cycle
                 and a.player_id = r.player_id
               -- Judged by the score's time, as the archive judged it (an erasure's walk not
               -- ended counts as under way, for an hour); one no longer known (its archive row
               -- pruned: a deleted board's, docs/operating.md) may be the erased player's, and
               -- is not shown.
               where e.id = r.player_id
                 and (a.submitted_at is null
                      or a.submitted_at <= coalesce(e.completed_at, e.erased_at + interval '1 hour'))))
      order by r.created_at desc, r.leaderboard_id desc, r.cycle desc limit $5`,
    // One more than the page: a cursor only when there is more to read.
    [playerId, after?.[0] ?? null, after?.[1] ?? '', after?.[2] ?? 0, limit + 1, sinceErasure],
  )) as {
    leaderboard_id: string
    cycle: number
    rank: number
    reward: Record<string, unknown>
    created_iso: string
    voided_at: string | null
    void_reason: string | null
  }[]
  const more = rows.length > limit
  if (more) rows.length = limit
  const last = rows[rows.length - 1]
  return {
    rewards: rows.map((r) => ({
      leaderboardId: r.leaderboard_id,
      cycle: r.cycle,
      rank: r.rank,
      reward: r.reward,
      createdAt: r.created_iso,
      voidedAt: r.voided_at,
      ...(withVoidReason ? { voidReason: r.void_reason } : {}),
    })),
    nextCursor:
      more && last ? encodeTimeCursor(last.created_iso, last.leaderboard_id, last.cycle) : null,
  }
}
