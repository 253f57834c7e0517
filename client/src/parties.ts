import type { Schemas } from './api.gen.ts'
import type { Ok, QueryOf, Transport } from './http.ts'
import { NexusProblem } from './problem.ts'

export type Party = Schemas['Party']
export type PartyMember = Party['members'][number]
export type PartyInvite = Party['invites'][number]
/** An invite the signed-in player received. */
export type ReceivedPartyInvite = Schemas['ReceivedPartyInvite']
export type ReceivedPartyInvites = Ok<'/v1/players/me/party-invites', 'get'>

/**
 * Parties players form themselves: the leader invites, invitees accept or decline, members
 * leave, and the leader queues the whole party (`nexus.matchmaking.joinWithParty`). Every call
 * is made as the signed-in player. Refusals are `NexusProblem`s: `forbidden` (a member who
 * does not lead inviting, revoking or removing), `not-found` (a party the player is neither in
 * nor invited to, an invite no longer pending), `conflict` (already in another party, inviting a
 * member, a full party).
 *
 * @example
 * const party = await nexus.parties.create()
 * await nexus.parties.invite(party.id, friendId)
 * // the friend:
 * const { invites } = await friend.parties.invites()
 * await friend.parties.accept(invites[0].partyId)
 */
export class Parties {
  private readonly t: Transport

  constructor(transport: Transport) {
    this.t = transport
  }

  /**
   * Forms a party led by the signed-in player. Retried: an attempt after a lost answer gets the
   * party the first one made (the server answers a party as a create leaves it, as it is). In
   * another party already: 409 `conflict`, its id in `body.partyId`.
   */
  create(): Promise<Party> {
    return this.t.request('post', '/v1/parties', { as: { kind: 'player' }, retry: true })
  }

  /** The signed-in player's party, or null when they are in none. */
  async mine(): Promise<Party | null> {
    try {
      return await this.t.request('get', '/v1/parties/me', { as: { kind: 'player' }, retry: true })
    } catch (err) {
      // The only 404 this route gives: no party. Anything else is a real failure.
      if (err instanceof NexusProblem && err.problem === 'not-found') return null
      throw err
    }
  }

  /** A party the signed-in player is in or invited to (an invitee reads it to decide). */
  get(partyId: string): Promise<Party> {
    return this.t.request('get', '/v1/parties/{partyId}', {
      path: { partyId },
      as: { kind: 'player' },
      retry: true,
    })
  }

  /**
   * Invites a player (leader only). The invite can be accepted for 10 minutes; inviting the same
   * player again restarts that, so retries are safe. A retry after the player accepted is 409
   * `conflict` with `member: true` in the problem's `body`: the invite did what it was for.
   */
  invite(partyId: string, playerId: string): Promise<Party> {
    return this.t.request('post', '/v1/parties/{partyId}/invites', {
      path: { partyId },
      body: { playerId },
      as: { kind: 'player' },
      retry: true,
    })
  }

  /** Pending invites to the signed-in player, newest first (`limit` ≤ 100, default 50). */
  invites(
    query: QueryOf<'/v1/players/me/party-invites', 'get'> = {},
  ): Promise<ReceivedPartyInvites> {
    return this.t.request('get', '/v1/players/me/party-invites', {
      query,
      as: { kind: 'player' },
      retry: true,
    })
  }

  /**
   * Accepts an invite: the signed-in player joins the party. A member accepting again gets the
   * party, so retries are safe. In another party: 409 `conflict`, and the invite stays (leave,
   * then accept).
   */
  accept(partyId: string): Promise<Party> {
    return this.t.request('post', '/v1/parties/{partyId}/members', {
      path: { partyId },
      as: { kind: 'player' },
      retry: true,
    })
  }

  /** Declines the signed-in player's invite. Idempotent. */
  decline(partyId: string): Promise<void> {
    return this.revoke(partyId, 'me')
  }

  /** Revokes a player's invite (leader only; `'me'` declines one's own). Idempotent. */
  async revoke(partyId: string, playerId: string): Promise<void> {
    await this.t.request('delete', '/v1/parties/{partyId}/invites/{playerId}', {
      path: { partyId, playerId },
      as: { kind: 'player' },
      retry: true,
    })
  }

  /**
   * Leaves the party. A leader who leaves hands it to the longest-standing member (one not
   * banned, while there is one); the last
   * member's leaving ends it. The party's waiting matchmaking ticket is cancelled (reason
   * `party_changed`), since it no longer stands for the party. Idempotent.
   */
  leave(partyId: string): Promise<void> {
    return this.remove(partyId, 'me')
  }

  /** Removes a member (leader only; `'me'` leaves). Idempotent. */
  async remove(partyId: string, playerId: string): Promise<void> {
    await this.t.request('delete', '/v1/parties/{partyId}/members/{playerId}', {
      path: { partyId, playerId },
      as: { kind: 'player' },
      retry: true,
    })
  }
}
