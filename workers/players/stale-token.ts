import { GUEST_ID_PREFIX } from '../lib/auth.ts'

/**
 * A boolean SQL expression: whether the player whose id is the statement parameter `id` (say
 * `'$2'`) was erased after their token was issued (the parameter `issuedAt`, ms; 0 for a token
 * that does not say). Such a token is refused wherever it would put the id somewhere again (a
 * queue, a party). A token's `iat` is whole seconds, so a token issued in the second of the
 * erasure counts as newer, as the boards count it: a player of an identity provider may come
 * back under their id. A guest's id never comes back (their device signs in as a new player), so
 * every token of an erased guest is refused, one issued in that second by a sign-in that read
 * Neon just before the erasure included.
 */
export function erasedSinceToken(id: string, issuedAt: string): string {
  return `exists (select 1 from erased_players
     where id = ${id}::text and (starts_with(id, '${GUEST_ID_PREFIX}')
       or erased_at >= to_timestamp((${issuedAt}::float8 + 1000) / 1000)))`
}
