import { INVITE_TTL_SECONDS, MAX_PARTY_SIZE, type PartyRoster } from '../core/party.ts'
import { defaultRating } from '../core/rating.ts'
import { getSql, pgErrorCode, type DbEnv } from '../db/client.ts'
import { GUEST_ID_PREFIX, STALE_TOKEN_DETAIL } from '../lib/auth.ts'
import { ApiError } from '../lib/problem.ts'
import { erasedSinceToken } from '../players/stale-token.ts'
import { isoUtc } from '../db/iso-time.ts'

/*
 * Parties in Neon (`parties`, `party_members`, `party_invites`), over the HTTP driver. It has no
 * interactive transactions, so every write is one non-interactive transaction that:
 *
 * 1. locks the party's row (`for update`), so writes to one party run one after another and each
 *    statement after the lock sees the others' committed effects (READ COMMITTED takes a new
 *    snapshot per statement): the size bound holds under concurrent invites, and a leader
 *    handover never races a leave;
 * 2. writes with guards in the statements themselves (only the leader invites, only a valid
 *    invite becomes a membership), so a refused write writes nothing;
 * 3. reads the facts that say why a guarded write wrote nothing, and the party as it now is.
 *
 * One round trip per request; a refused request changed nothing. A player is in at most one
 * party because `party_members.player_id` is the primary key: of two accepts racing for one
 * player, the second fails on it (23505) and its whole transaction, invite included, rolls back.
 */

/** Expired invites deleted per invite write: enough to outpace the one row a write adds. */
const EXPIRED_SWEEP = 100

export interface PartyMember {
  playerId: string
  joinedAt: string
}

export interface PartyInvite {
  playerId: string
  invitedAt: string
  expiresAt: string
}

/** A party as its members and invitees read it. */
export interface PartyView {
  id: string
  leader: string
  /** Longest-standing first; the first not banned is the next leader if the leader leaves. */
  members: PartyMember[]
  /** Pending, unexpired invites. */
  invites: PartyInvite[]
  /** The latest matchmaking ticket the leader made for the party, if any. */
  ticketId: string | null
  /**
   * The latest ticket in each queue and region the party joined since its latest membership
   * change, newest made first (by when the pool made it, not when its note came: a note retried
   * late is of an older ticket; at most MAX_VIEW_TICKETS): a party may wait in several queues at once,
   * and a member waiting for one of them looks for its ticket here.
   */
  tickets: string[]
  createdAt: string
}

/** Tickets a party view lists: more queues and regions at once than any party waits in. */
const MAX_VIEW_TICKETS = 16

/** An invite as its invitee lists it. */
export interface ReceivedInvite {
  partyId: string
  leader: string
  invitedAt: string
  expiresAt: string
}

/** The party view of the party `where` picks: no row when there is none. */
const view = (where: string) => `
  select p.id, p.leader, p.ticket_id, ${isoUtc('p.created_at')} as created_at,
    coalesce((select json_agg(json_build_object('playerId', m.player_id, 'joinedAt', ${isoUtc('m.joined_at')})
                              order by m.joined_at, m.player_id)
                from party_members m where m.party_id = p.id), '[]'::json) as members,
    coalesce((select json_agg(json_build_object('playerId', i.player_id,
                                                'invitedAt', ${isoUtc('i.invited_at')},
                                                'expiresAt', ${isoUtc('i.expires_at')})
                              order by i.invited_at, i.player_id)
                from party_invites i where i.party_id = p.id and i.expires_at > now()), '[]'::json)
      as invites,
    coalesce((select json_agg(t.ticket_id order by t.enqueued_at desc, t.ticket_id)
                from (select t.ticket_id, t.enqueued_at from party_tickets t
                       where t.party_id = p.id and t.noted_at >= p.updated_at
                       order by t.enqueued_at desc, t.ticket_id limit ${MAX_VIEW_TICKETS}) t),
              '[]'::json)
      as tickets
    from parties p where ${where}`

/** The view of party `$1`. */
const VIEW = view('p.id = $1')

/** What a caller (`$2`) is to party `$1`; no row when the party does not exist. */
/**
 * Whether the player in `param` holds an account ban: a banned player's token (issued before the
 * ban, valid for up to a day) makes no party, sends no invite and joins none, so they can neither
 * pester players with invites nor get into a party whose every join the ban then refuses.
 */
const BANNED = (param: string) => `exists (select 1 from player_bans where player_id = ${param})`
const BANNED_DETAIL = 'This player is banned'
/**
 * A player whose accept could never succeed: banned, or an erased guest (a guest's id never
 * comes back; an identity provider's player erased may, and is invited as anyone).
 */
const UNINVITABLE = (param: string) =>
  `(${BANNED(param)} or (starts_with(${param}, '${GUEST_ID_PREFIX}')
     and exists (select 1 from erased_players where id = ${param})))`
/** A party whose leader is banned: it cannot queue while they lead it. */
const LEADER_BANNED = (party: string) =>
  `exists (select 1 from parties lp join player_bans lb on lb.player_id = lp.leader
            where lp.id = ${party})`

const ROLE = `
  select p.leader,
    exists (select 1 from party_members m where m.party_id = p.id and m.player_id = $2) as member,
    exists (select 1 from party_invites i where i.party_id = p.id and i.player_id = $2
                                         and i.expires_at > now()) as invited
    from parties p where p.id = $1`

const LOCK = `select id from parties where id = $1 for update`

interface ViewRow {
  id: string
  leader: string
  ticket_id: string | null
  created_at: string
  members: PartyMember[]
  invites: PartyInvite[]
  tickets: string[]
}

interface RoleRow {
  leader: string
  member: boolean
  invited: boolean
}

function viewOf(row: ViewRow): PartyView {
  return {
    id: row.id,
    leader: row.leader,
    members: row.members,
    invites: row.invites,
    ticketId: row.ticket_id,
    tickets: row.tickets,
    createdAt: row.created_at,
  }
}

/** The 404 for a party the caller is neither in nor invited to (or that does not exist). */
export function partyNotFound(partyId: string): ApiError {
  return new ApiError('not-found', `No party '${partyId}' that you are in or invited to`)
}

/** Refuses a caller who is not the leader: 403 if they can see the party, else 404. */
function leaderOnly(partyId: string, role: RoleRow | undefined, what: string): ApiError {
  if (role && (role.member || role.invited)) {
    return new ApiError('forbidden', `Only the party's leader ('${role.leader}') ${what}`)
  }
  return partyNotFound(partyId)
}

/** The party `playerId` is in, if any (for the 409 that names it). */
async function partyIdOf(env: DbEnv, playerId: string): Promise<string | null> {
  const rows = (await getSql(env).query(`select party_id from party_members where player_id = $1`, [
    playerId,
  ])) as { party_id: string }[]
  return rows[0]?.party_id ?? null
}

async function alreadyInParty(env: DbEnv, playerId: string): Promise<ApiError> {
  const current = await partyIdOf(env, playerId)
  return new ApiError(
    'conflict',
    current
      ? `You are already in party '${current}'; leave it first (a player is in one party at a time)`
      : 'You are already in a party; leave it first (a player is in one party at a time)',
    current ? { partyId: current } : {},
  )
}

/**
 * The player acting with their own token, and when it was issued (ms; 0 when the token does not
 * say): a token from before the player's erasure puts the id in no party, since the leader's
 * join would queue it into a match that gives it a profile again.
 */
export interface PartyCaller {
  playerId: string
  issuedAt: number
}

/**
 * Creates a party led by `leader`, who becomes its first member. 409 `conflict` when the
 * leader is already in a party, except one as a create just left it (`isFreshlyCreated`), which
 * is answered as it is (`created: false`): a create whose answer was lost, sent again, gets the
 * party it made rather than "leave it first"; 403 for a token issued before the leader's erasure.
 */
export async function createParty(
  env: DbEnv,
  leader: PartyCaller,
): Promise<{ party: PartyView; created: boolean }> {
  const sql = getSql(env)
  const id = crypto.randomUUID()
  const params = [id, leader.playerId, leader.issuedAt]
  try {
    const results = await sql.transaction([
      sql.query(
        `insert into parties (id, leader) select $1, $2
          where not ${erasedSinceToken('$2', '$3')} and not ${BANNED('$2')}`,
        params,
      ),
      sql.query(
        `insert into party_members (party_id, player_id) select id, leader from parties where id = $1`,
        [id],
      ),
      sql.query(VIEW, [id]),
      sql.query(`select ${BANNED('$1')} as banned`, [leader.playerId]),
    ])
    const created = (results[2] as ViewRow[])[0]
    if (!created) {
      const { banned } = (results[3] as { banned: boolean }[])[0]!
      throw new ApiError('forbidden', banned ? BANNED_DETAIL : STALE_TOKEN_DETAIL)
    }
    return { party: viewOf(created), created: true }
  } catch (err) {
    if (pgErrorCode(err) !== '23505') throw err
    const own = await partyOfPlayer(env, leader.playerId)
    if (own !== null && isFreshlyCreated(own, leader.playerId))
      return { party: own, created: false }
    throw await alreadyInParty(env, leader.playerId)
  }
}

/**
 * A create sent again finds its party as the first create left it: made moments ago, led by the
 * caller alone, nothing sent from it (no invite, no ticket). A party older than this, or that did
 * anything, is another one, and a create meanwhile is 409 (leave it first).
 */
export const RECREATE_WINDOW_MS = 10 * 60 * 1000

function isFreshlyCreated(party: PartyView, leader: string): boolean {
  return (
    party.leader === leader &&
    party.members.length === 1 &&
    party.invites.length === 0 &&
    party.ticketId === null &&
    party.tickets.length === 0 &&
    Date.now() - Date.parse(party.createdAt) < RECREATE_WINDOW_MS
  )
}

/** The party `playerId` is a member of, or null. */
export async function partyOfPlayer(env: DbEnv, playerId: string): Promise<PartyView | null> {
  const rows = (await getSql(env).query(
    view('p.id = (select party_id from party_members where player_id = $1)'),
    [playerId],
  )) as ViewRow[]
  return rows[0] ? viewOf(rows[0]) : null
}

/** A party, if `caller` is a member or holds a pending invite to it; otherwise null. */
export async function visibleParty(
  env: DbEnv,
  partyId: string,
  caller: string,
): Promise<PartyView | null> {
  const rows = (await getSql(env).query(
    view(`p.id = $1
      and (exists (select 1 from party_members where party_id = $1 and player_id = $2)
        or exists (select 1 from party_invites
                    where party_id = $1 and player_id = $2 and expires_at > now()))`),
    [partyId, caller],
  )) as ViewRow[]
  return rows[0] ? viewOf(rows[0]) : null
}

/**
 * Invites `target` to the party (the caller must lead it); inviting again while the invite is
 * pending refreshes its expiry (`created` false). Each invite written also sweeps a bounded
 * batch of expired invites, so they never pile up. Refusals: 404 (no such party for
 * the caller), 403 (a member or invitee who is not the leader), 409 (`target` is already a
 * member, or the party is full).
 */
export async function invite(
  env: DbEnv,
  partyId: string,
  caller: string,
  target: string,
): Promise<{ party: PartyView; created: boolean }> {
  const sql = getSql(env)
  const results = await sql.transaction([
    sql.query(LOCK, [partyId]),
    sql.query(ROLE, [partyId, caller]),
    sql.query(
      `select
         exists (select 1 from party_members where party_id = $1 and player_id = $2) as member,
         exists (select 1 from party_invites where party_id = $1 and player_id = $2
                                              and expires_at > clock_timestamp()) as pending`,
      [partyId, target],
    ),
    // The sweep rides on writes that happen, so a refused invite deletes nothing either; it
    // leaves the row being written alone (one statement may not change a row twice).
    // Whether an invite still holds a place is judged at `clock_timestamp()`, under the party's
    // lock, as an accept judges it: by `now()` (the transaction's start, before any wait for the
    // lock) an accept that waited behind this invite could take a place this invite counted as
    // freed, and the party would pass its size.
    sql.query(
      `with written as (
         insert into party_invites (party_id, player_id, expires_at)
         select p.id, $3, now() + make_interval(secs => $4)
           from parties p
          where p.id = $1 and p.leader = $2 and not ${BANNED('$2')}
            and not ${UNINVITABLE('$3')}
            and not exists (select 1 from party_members where party_id = $1 and player_id = $3)
            and (select count(*) from party_members where party_id = $1)
              + (select count(*) from party_invites
                  where party_id = $1 and player_id <> $3 and expires_at > clock_timestamp()) < $5
         on conflict (party_id, player_id)
           do update set invited_at = excluded.invited_at, expires_at = excluded.expires_at
         returning 1
       ),
       swept as (
         delete from party_invites
          where ctid = any(array(
                  select ctid from party_invites
                   where expires_at <= now() and not (party_id = $1 and player_id = $3)
                   limit $6 for update skip locked))
            and exists (select 1 from written)
       )
       select count(*)::int as written, ${BANNED('$2')} as banned,
              ${UNINVITABLE('$3')} as uninvitable
         from written`,
      [partyId, caller, target, INVITE_TTL_SECONDS, MAX_PARTY_SIZE, EXPIRED_SWEEP],
    ),
    sql.query(VIEW, [partyId]),
  ])
  const role = (results[1] as RoleRow[])[0]
  const invitee = (results[2] as { member: boolean; pending: boolean }[])[0]!
  const outcome = (results[3] as { written: number; banned: boolean; uninvitable: boolean }[])[0]!
  const written = outcome.written === 1
  if (!role?.member || role.leader !== caller) throw leaderOnly(partyId, role, 'invites players')
  if (outcome.banned) throw new ApiError('forbidden', BANNED_DETAIL)
  if (invitee.member) {
    // `member`: the leader's retry of an invite the player has accepted meanwhile finds what it
    // asked for, and can tell it from a full party.
    throw new ApiError('conflict', `'${target}' is already a member of this party`, {
      member: true,
    })
  }
  if (outcome.uninvitable) {
    // Written, it would hold one of the party's places for its 10 minutes, for nobody.
    throw new ApiError('conflict', `'${target}' cannot join a party (banned or erased)`, {
      invitable: false,
    })
  }
  if (!written) {
    throw new ApiError(
      'conflict',
      `The party is full: at most ${MAX_PARTY_SIZE} members and pending invites together`,
      { limit: MAX_PARTY_SIZE },
    )
  }
  return { party: viewOf((results[4] as ViewRow[])[0]!), created: !invitee.pending }
}

/** Pending, unexpired invites `playerId` received, newest first. */
export async function receivedInvites(
  env: DbEnv,
  playerId: string,
  limit: number,
): Promise<ReceivedInvite[]> {
  const rows = (await getSql(env).query(
    `select i.party_id, p.leader, ${isoUtc('i.invited_at')} as invited_at,
            ${isoUtc('i.expires_at')} as expires_at
       from party_invites i join parties p on p.id = i.party_id
      where i.player_id = $1 and i.expires_at > now() and not ${LEADER_BANNED('p.id')}
      order by i.invited_at desc, i.party_id
      limit $2`,
    [playerId, limit],
  )) as { party_id: string; leader: string; invited_at: string; expires_at: string }[]
  return rows.map((r) => ({
    partyId: r.party_id,
    leader: r.leader,
    invitedAt: r.invited_at,
    expiresAt: r.expires_at,
  }))
}

/**
 * Accepts the caller's invite: the invite is consumed and the caller becomes a member, both or
 * neither. A member of this party accepting again gets the party. Refusals: 404 (no pending
 * invite: never sent, revoked, declined or expired), 409 (the caller is in another party; the
 * invite stays, to accept after leaving), 403 (a token issued before the caller's erasure;
 * nothing changes).
 */
export async function acceptInvite(
  env: DbEnv,
  partyId: string,
  { playerId: caller, issuedAt }: PartyCaller,
): Promise<MembershipChange<PartyView>> {
  const sql = getSql(env)
  let results: unknown[]
  try {
    results = await sql.transaction([
      sql.query(LOCK, [partyId]),
      sql.query(
        // Whether the token predates an erasure is read in this statement's snapshot, the one
        // the accept is decided by (a later statement could see a tombstone committed between).
        `with stale as (select ${erasedSinceToken('$2', '$3')} as yes),
         banned as (select ${BANNED('$2')} as yes),
         led_by_banned as (select ${LEADER_BANNED('$1')} as yes),
         inv as (
           delete from party_invites
            where party_id = $1 and player_id = $2 and expires_at > clock_timestamp()
              and not (select yes from stale) and not (select yes from banned)
              and not (select yes from led_by_banned)
           returning party_id
         ),
         ins as (
           insert into party_members (party_id, player_id) select party_id, $2 from inv
           returning player_id
         ),
         touched as (
           update parties set updated_at = clock_timestamp()
            where id = $1 and exists (select 1 from ins)
         )
         select (select yes from stale) as stale_token, (select yes from banned) as banned,
                (select yes from led_by_banned)
                  and exists (select 1 from party_invites
                               where party_id = $1 and player_id = $2
                                 and expires_at > clock_timestamp()) as leader_banned,
                coalesce((select (${NOTED_TICKETS}) from ins), (${STALE_NOTES})) as stale_tickets`,
        [partyId, caller, issuedAt],
      ),
      sql.query(
        `select exists (select 1 from party_members where party_id = $1 and player_id = $2)
                  as member,
                (select ${isoUtc('expires_at')} from party_invites
                  where party_id = $1 and player_id = $2) as expired_at`,
        [partyId, caller],
      ),
      sql.query(VIEW, [partyId]),
    ])
  } catch (err) {
    if (pgErrorCode(err) === '23505') throw await alreadyInParty(env, caller)
    throw err
  }
  const accept = (
    results[1] as {
      stale_token: boolean
      banned: boolean
      leader_banned: boolean
      stale_tickets: string[] | null
    }[]
  )[0]!
  const staleTickets = accept.stale_tickets ?? []
  const state = (results[2] as { member: boolean; expired_at: string | null }[])[0]!
  if (accept.stale_token) throw new ApiError('forbidden', STALE_TOKEN_DETAIL)
  if (accept.banned) throw new ApiError('forbidden', BANNED_DETAIL)
  if (!state.member && accept.leader_banned) {
    // The invite stays: it is good again once someone else leads the party.
    throw new ApiError(
      'forbidden',
      `Party '${partyId}' is led by a banned player: it cannot queue while they lead it`,
    )
  }
  if (!state.member) {
    throw new ApiError(
      'not-found',
      state.expired_at
        ? `Your invite to party '${partyId}' expired at ${state.expired_at}; ask for a new one`
        : `No pending invite to party '${partyId}' (never sent, revoked, declined, or the party ended)`,
    )
  }
  return { result: viewOf((results[3] as ViewRow[])[0]!), staleTickets }
}

/**
 * Removes an invite: the leader revokes it, or the invitee declines. Idempotent: once the
 * caller may ask, the answer is the same whether or not there was an invite to remove.
 * Refusals: 403 (a member or invitee who is not the leader, for someone else's invite), 404
 * (a stranger to the party, for someone else's invite).
 */
export async function deleteInvite(
  env: DbEnv,
  partyId: string,
  caller: string,
  target: string,
): Promise<void> {
  const sql = getSql(env)
  const results = await sql.transaction([
    sql.query(LOCK, [partyId]),
    sql.query(ROLE, [partyId, caller]),
    sql.query(
      `delete from party_invites
        where party_id = $1 and player_id = $2
          and ($2 = $3 or exists (select 1 from parties where id = $1 and leader = $3))`,
      [partyId, target, caller],
    ),
  ])
  if (target === caller) return
  const role = (results[1] as RoleRow[])[0]
  if (role?.leader !== caller) throw leaderOnly(partyId, role, 'revokes invites')
}

/**
 * Removes a member: a member leaves (`target` is the caller), or the leader removes one. A
 * leader who leaves hands over to the longest-standing member; the last member leaving deletes
 * the party and its invites. Idempotent like `deleteInvite`. Refusals: 403 (a member or
 * invitee who is not the leader, removing someone else), 404 (a stranger, the same).
 */
export async function removeMember(
  env: DbEnv,
  partyId: string,
  caller: string,
  target: string,
): Promise<MembershipChange<void>> {
  const sql = getSql(env)
  const results = await sql.transaction([
    sql.query(LOCK, [partyId]),
    sql.query(ROLE, [partyId, caller]),
    sql.query(
      `with gone as (
         delete from party_members
          where party_id = $1 and player_id = $2
            and ($2 = $3 or exists (select 1 from parties where id = $1 and leader = $3))
         returning player_id
       ),
       changed as (
         update parties set updated_at = clock_timestamp()
          where id = $1 and exists (select 1 from gone)
         returning (${NOTED_TICKETS}) as notes
       )
       select coalesce((select notes from changed), (${STALE_NOTES})) as stale_tickets`,
      [partyId, target, caller],
    ),
    // A banned member leads only when every member is banned: a party led by one can never
    // queue, and nobody but its leader can remove them.
    sql.query(
      `update parties p
          set leader = (select m.player_id from party_members m where m.party_id = p.id
                         order by ${BANNED('m.player_id')}, m.joined_at, m.player_id limit 1)
        where p.id = $1
          and not exists (select 1 from party_members m
                           where m.party_id = p.id and m.player_id = p.leader)
          and exists (select 1 from party_members m where m.party_id = p.id)`,
      [partyId],
    ),
    sql.query(
      `delete from parties p
        where p.id = $1 and not exists (select 1 from party_members m where m.party_id = p.id)`,
      [partyId],
    ),
  ])
  const staleTickets = (results[2] as { stale_tickets: string[] }[])[0]?.stale_tickets ?? []
  if (target === caller) return { result: undefined, staleTickets }
  const role = (results[1] as RoleRow[])[0]
  if (role?.leader !== caller) throw leaderOnly(partyId, role, 'removes members')
  return { result: undefined, staleTickets }
}

/**
 * What a membership change answers besides its result: the matchmaking tickets noted for the
 * party before the change, which no longer stand for it. The caller cancels them, then forgets
 * them (`forgetPartyTickets`); until then they stay noted, for the cron or a later change.
 */
export interface MembershipChange<T> {
  result: T
  staleTickets: string[]
}

/**
 * The ticket of note `t` is another party's own now: noted for it since its latest membership
 * change (a party made again with the same players, the one before ended or changed while the
 * ticket's pool was out of reach, whose join was handed the ticket). Not for `t`'s party to
 * cancel, whatever changed in it.
 */
const HELD_ELSEWHERE = `exists (select 1 from party_tickets c join parties cp on cp.id = c.party_id
  where c.ticket_id = t.ticket_id and c.party_id <> t.party_id and c.noted_at >= cp.updated_at)`

/** Every ticket noted for party `$1` (see `party_tickets`), as a text[] (empty when none). */
const NOTED_TICKETS = `select coalesce(array_agg(t.ticket_id order by t.noted_at), '{}')
                         from party_tickets t where t.party_id = $1 and not ${HELD_ELSEWHERE}`

/**
 * A note `t` (joined to its party `p`, absent once the party ended) made before the party's
 * latest membership change: it no longer stands for the party. Unless another party notes its
 * ticket as its own since its own latest change: a party made again with the same players (the
 * one before ended while the ticket's pool was out of reach), whose join was handed the ticket.
 */
const NOTE_IS_STALE = `(p.id is null or t.noted_at < p.updated_at) and not ${HELD_ELSEWHERE}`

/**
 * Party `$1`'s notes from before its latest membership change, all of them once it ended: what
 * a change left for the cron. A change sent again that finds itself done (its first try
 * committed, and its answer or its cancels were lost: the client retries) answers these, so the
 * retry finishes the cancel instead of leaving it to the next cron run.
 */
const STALE_NOTES = `select coalesce(array_agg(t.ticket_id order by t.noted_at), '{}')
                       from party_tickets t left join parties p on p.id = t.party_id
                      where t.party_id = $1 and ${NOTE_IS_STALE}`

/** How long a noted ticket is kept: longer than any ticket can wait (ticketTtlSeconds ≤ 1 h). */
const NOTED_TICKET_HOURS = 2

/** A player as matchmaking sees them: their rating and, if they are in one, their party. */
export interface MatchmakingPlayer {
  /** The stored rating (1500 without a row). */
  rating: number
  /**
   * The leader first, then the members in joining order, each with their rating; and the tickets
   * noted for the party before its latest membership change (`staleTickets`), which no longer
   * stand for it: a change whose pool could not be reached left them waiting (a join cancels them
   * first: `MatchPool.endStaleTickets`).
   */
  party:
    | (PartyRoster & {
        ratings: Map<string, number>
        staleTickets: string[]
        /** Members under an account ban: the party cannot queue until they leave it. */
        banned: string[]
      })
    | null
}

/**
 * `playerId`'s rating and party in one round trip (a socket connect needs both).
 */
export async function matchmakingPlayer(env: DbEnv, playerId: string): Promise<MatchmakingPlayer> {
  const rows = (await getSql(env).query(
    `select own.rating as own_rating, p.id, p.leader, m.player_id, pl.rating,
            exists (select 1 from player_bans b where b.player_id = m.player_id) as banned,
            (select coalesce(array_agg(t.ticket_id), '{}') from party_tickets t
              where t.party_id = p.id and t.noted_at < p.updated_at
                and not ${HELD_ELSEWHERE}) as stale
       from (select $1::text as id) me
       left join players own on own.id = me.id
       left join party_members mine on mine.player_id = me.id
       left join parties p on p.id = mine.party_id
       left join party_members m on m.party_id = p.id
       left join players pl on pl.id = m.player_id
      order by m.player_id = p.leader desc, m.joined_at, m.player_id`,
    [playerId],
  )) as {
    own_rating: number | string | null
    id: string | null
    leader: string | null
    player_id: string | null
    rating: number | string | null
    banned: boolean
    stale: string[] | null
  }[]
  const ratingOf = (r: number | string | null) => (r === null ? defaultRating().rating : Number(r))
  const first = rows[0]!
  if (first.id === null) return { rating: ratingOf(first.own_rating), party: null }
  const ratings = new Map<string, number>()
  for (const r of rows) ratings.set(r.player_id!, ratingOf(r.rating))
  return {
    rating: ratingOf(first.own_rating),
    party: {
      id: first.id,
      leader: first.leader!,
      members: rows.map((r) => r.player_id!),
      ratings,
      staleTickets: first.stale ?? [],
      banned: rows.filter((r) => r.banned).map((r) => r.player_id!),
    },
  }
}

/**
 * Notes a matchmaking ticket on the party (`party_tickets`, and `ticketId` for members to find)
 * if the party's members are still exactly the ticket's players. False when they changed since
 * they were read for the join (or the party ended): the ticket no longer stands for the party,
 * and the caller cancels it. The comparison runs under the party's row lock, in a statement that
 * starts after any membership change holding that lock has committed, so a change and a note
 * are ordered: either the change finds the ticket noted, or the note finds the change.
 */
export async function recordPartyTicket(
  env: DbEnv,
  partyId: string,
  ticketId: string,
  players: readonly string[],
  enqueuedAt: number,
): Promise<boolean> {
  const sql = getSql(env)
  const results = await sql.transaction([
    sql.query(LOCK, [partyId]),
    sql.query(
      `with current as (
         select 1 from parties p
          where p.id = $1
            and (select array_agg(m.player_id order by m.player_id collate "C")
                   from party_members m where m.party_id = p.id)
              = (select array_agg(x order by x collate "C") from unnest($3::text[]) x)
       ),
       noted as (
         insert into party_tickets (party_id, ticket_id, noted_at, enqueued_at)
         select $1, $2, clock_timestamp(), $4 from current
         -- A join handed its existing ticket confirms it for the party as it is now.
         on conflict (party_id, ticket_id)
           do update set noted_at = excluded.noted_at, enqueued_at = excluded.enqueued_at
       ),
       -- Notes since the latest membership change are of these same players; a player holds one
       -- ticket per queue, so one of them made before this ticket in this queue has ended (this
       -- one was made, or handed, instead). Only notes of this ticket's pool are compared: their
       -- enqueued_at is that pool's clock, while another region's clock may run a little behind.
       -- Forgetting them keeps a party that queues and cancels all day to a note or so per queue
       -- and region, which a membership change then cancels. Notes from before the change stay,
       -- to be cancelled.
       ended as (
         delete from party_tickets t
          using parties p
          where t.party_id = $1 and p.id = $1 and exists (select 1 from current)
            and t.ticket_id <> $2
            and split_part(t.ticket_id, ':', 1) = split_part($2, ':', 1)
            and split_part(t.ticket_id, ':', 2) = split_part($2, ':', 2)
            and t.noted_at >= p.updated_at
            and t.enqueued_at < $4
       ),
       -- The pointer members find their ticket by: not taken back by a late note (one the pool
       -- sent again after Neon failed it) from a ticket the party was made since.
       latest as (
         update parties p set ticket_id = $2
          where p.id = $1 and exists (select 1 from current)
            and not exists (select 1 from party_tickets t
                             where t.party_id = $1 and t.ticket_id = p.ticket_id
                               and t.ticket_id <> $2 and t.enqueued_at > $4)
       ),
       pruned as (
         delete from party_tickets
          where party_id = $1 and noted_at < now() - make_interval(hours => ${NOTED_TICKET_HOURS})
       )
       select exists (select 1 from current) as current`,
      [partyId, ticketId, players, enqueuedAt],
    ),
  ])
  return (results[1] as { current: boolean }[])[0]?.current === true
}

/** The prune of notes too old to stand for a waiting ticket (tickets live at most an hour). */
export const PRUNE_OLD_PARTY_TICKETS = `delete from party_tickets
  where noted_at < now() - make_interval(hours => ${NOTED_TICKET_HOURS})`

/** Forgets notes too old to stand for a waiting ticket. */
export async function pruneOldPartyTickets(env: DbEnv): Promise<void> {
  await getSql(env).query(PRUNE_OLD_PARTY_TICKETS)
}

/**
 * A page of stale notes: ($1 limit, after ($2 party, $3 ticket)), in byte order. Not one whose
 * ticket another party notes as its own now: a party made again with the same players (the one
 * before ended while its ticket's pool was out of reach) whose join was handed that ticket.
 */
export const STALE_PARTY_TICKETS = `select t.party_id, t.ticket_id
  from party_tickets t left join parties p on p.id = t.party_id
  where ${NOTE_IS_STALE}
    and (t.party_id collate "C", t.ticket_id collate "C") > ($2::text, $3::text)
  order by t.party_id collate "C", t.ticket_id collate "C" limit $1`

/**
 * Tickets noted for a party before its latest membership change (or for a party that has since
 * ended), a page at a time in (party, ticket) byte order after `after`: a change cancels the party's
 * tickets and forgets those whose pool answered, so these are the ones whose pool could not be
 * reached. Notes and changes both stamp `clock_timestamp()` under the party's lock, after any
 * change or note holding it committed, so the order of the stamps is the order of the events (a
 * transaction's `now()` is its start, which can precede a wait for the lock).
 */
export async function stalePartyTickets(
  env: DbEnv,
  after: { partyId: string; ticketId: string } | null,
  limit: number,
): Promise<{ partyId: string; ticketId: string }[]> {
  const rows = (await getSql(env).query(STALE_PARTY_TICKETS, [
    limit,
    after?.partyId ?? '',
    after?.ticketId ?? '',
  ])) as { party_id: string; ticket_id: string }[]
  return rows.map((r) => ({ partyId: r.party_id, ticketId: r.ticket_id }))
}

/**
 * After a membership change's tickets were dealt with: `settled` are the tickets whose pools
 * answered (cancelled now, or already matched or ended), no longer to be cancelled; `cancelled`
 * are those that were cancelled, which members must not be pointed at any more. A matched
 * ticket stays the party's `ticketId`, so members who poll still find their match.
 */
export async function forgetPartyTickets(
  env: DbEnv,
  partyId: string,
  settled: readonly string[],
  cancelled: readonly string[],
): Promise<void> {
  if (settled.length === 0) return
  await getSql(env).query(
    `with forgotten as (
       delete from party_tickets where party_id = $1 and ticket_id = any($2::text[])
     )
     update parties set ticket_id = null where id = $1 and ticket_id = any($3::text[])`,
    [partyId, settled, cancelled],
  )
}
