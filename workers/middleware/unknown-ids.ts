import type { Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { bearer, isUnguessableAdminKey, unguessable } from '../lib/auth.ts'
import { carriesAdminKey, foreignPageOf } from './auth.ts'
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
 * countUnknownId, unless the request carries the admin key. An unguessable key is compared
 * without counting a wrong one as a guess (a client sending `Bearer undefined` on every read would
 * otherwise lock its address, an office or a carrier's NAT, out of the admin key), as guessing it
 * is hopeless whatever the count or the timing tells; a guessable one only counted, as anywhere;
 * and none from a browser page on another origin, where no admin key is ever compared.
 */
export async function countUnknownIdUnlessAdmin(c: Context<AppEnv>, id: string): Promise<void> {
  if (await carriesAdminKeyQuietly(c)) return
  await countUnknownId(c, id)
}

async function carriesAdminKeyQuietly(c: Context<AppEnv>): Promise<boolean> {
  const principal = c.get('principal')
  if (principal) return principal.kind === 'admin'
  const credential = bearer(c.req.header('authorization'))
  if (credential === undefined || !c.env.ADMIN_KEY || foreignPageOf(c) !== undefined) return false
  if (await isUnguessableAdminKey(c.env, credential)) return true
  // A guessable key still taken (the one a move to a long key left in ADMIN_KEY_PREVIOUS, say)
  // is compared counted, as anywhere.
  const { ADMIN_KEY, ADMIN_KEY_PREVIOUS } = c.env
  const guessable =
    !unguessable(ADMIN_KEY) || (!!ADMIN_KEY_PREVIOUS && !unguessable(ADMIN_KEY_PREVIOUS))
  return guessable && (await carriesAdminKey(c))
}
