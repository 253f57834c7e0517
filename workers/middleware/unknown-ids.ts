import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { bearer, isAdminKey } from '../lib/auth.ts'
import { carriesAdminKey } from './auth.ts'
import { countUnknownId, refuseForUnknownIds, unknownIdsRefusal } from './rate-limit.ts'

/**
 * The limits on naming boards and queues that do not exist, but not for the admin key: a game
 * server reading, submitting to or queuing for what an event has deleted is no script trying
 * ids, and its 404s counted by its address would refuse that address's reads, its own included.
 */

/** refuseNamerOfUnknownIds by the client's address, unless the request carries the admin key. */
export async function refuseNamerOfUnknownIdsUnlessAdmin(c: Context<AppEnv>): Promise<void> {
  const refusal = unknownIdsRefusal(c)
  // The key is compared only for an address already past the limit.
  if (refusal && !(await carriesAdminKey(c))) refuseForUnknownIds(refusal)
}

/**
 * countUnknownId, unless the request carries the admin key. Compared without counting a wrong
 * key as a guess: the count is made after the 404 has gone out, so its outcome tells a guesser
 * nothing, while a client sending `Bearer undefined` on every read would otherwise lock its
 * address (an office, a carrier's NAT) out of the admin key.
 */
export async function countUnknownIdUnlessAdmin(c: Context<AppEnv>, id: string): Promise<void> {
  const principal = c.get('principal')
  const credential = bearer(c.req.header('authorization'))
  const admin = principal
    ? principal.kind === 'admin'
    : credential !== undefined && !!c.env.ADMIN_KEY && (await isAdminKey(c.env, credential))
  if (admin) return
  await countUnknownId(c, id)
}
