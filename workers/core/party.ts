/**
 * Parties players form themselves, and the one rule matchmaking applies to them: a player's own
 * join may name a party of several players only when that player leads a party and names exactly
 * its members. Both join paths (HTTP tickets, the socket `join` frame) use `partyJoinRefusal`, so
 * they refuse the same joins with the same reasons.
 */

/** Members plus pending invites a party holds at most. */
export const MAX_PARTY_SIZE = 8

/** How long an invite can be accepted. */
export const INVITE_TTL_SECONDS = 10 * 60

/** A party as matchmaking needs it: its leader and every member, the leader included. */
export interface PartyRoster {
  id: string
  leader: string
  members: readonly string[]
}

/** A join whose `party` names only the caller: a solo join, for a player in no party. */
export function soloJoin(caller: string, named: readonly string[]): boolean {
  return named.length === 1 && named[0] === caller
}

/**
 * Why `caller` may not join a queue naming `named` as its party (several players), or null when
 * it may: `caller` leads `party` and `named` holds exactly its members, in any order.
 *
 * @example
 * partyJoinRefusal({ id: 'p1', leader: 'a', members: ['a', 'b'] }, 'a', ['b', 'a']) // null
 * partyJoinRefusal({ id: 'p1', leader: 'a', members: ['a', 'b'] }, 'b', ['a', 'b'])
 * // "Only the party's leader ('a') joins a queue for the party"
 */
export function partyJoinRefusal(
  party: PartyRoster | null,
  caller: string,
  named: readonly string[],
): string | null {
  if (!party) {
    return 'You are in no party: form one (POST /v1/parties) and invite players, or join alone'
  }
  if (party.leader !== caller) {
    return `Only the party's leader ('${party.leader}') joins a queue for the party`
  }
  const members = new Set(party.members)
  const strangers = named.filter((p) => !members.has(p))
  if (strangers.length > 0) {
    return `Not members of your party: ${strangers.map((p) => `'${p}'`).join(', ')}`
  }
  const listed = new Set(named)
  const missing = party.members.filter((p) => !listed.has(p))
  if (missing.length > 0) {
    return `Name every member of your party; missing: ${missing.map((p) => `'${p}'`).join(', ')}`
  }
  return null
}
