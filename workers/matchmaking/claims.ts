import { defaultRating } from '../core/rating.ts'
import { numberArrayLiteral, textArrayLiteral } from '../db/array-literal.ts'
import { getSql, type DbEnv } from '../db/client.ts'
import { log, errorFields } from '../lib/log.ts'
import { within } from '../lib/within.ts'
import { erasedSinceToken } from '../players/stale-token.ts'
import { GUEST_ID_PREFIX } from '../lib/auth.ts'
import { counter } from '../lib/metrics.ts'
import type { Env } from '../env.ts'
import type { QueueConfig } from './config.ts'
import { poolStub } from './stub.ts'

/*
 * One ticket per player per queue, across the queue's regions.
 *
 * Each region is its own MatchPool, the one writer of its tickets, so no pool can see another's.
 * A claim in Neon (`queue_claims`, one row per queue and player) orders a player's joins: each
 * join (and each socket connect) takes the next `version`, and the row's `regions` names every
 * region that may still hold one of the player's tickets. Before queueing in region R, the join
 * fences every other region named there: that pool either answers that the player has a live
 * ticket there (the join is refused, 409), or promises to refuse any claim of the player up to
 * the join's version minus one, from now on. So of two joins in two regions, whichever queues
 * second finds the first's ticket, or the first finds its fence: never two live tickets. Row
 * locks serialise the upserts, so every join's fences cover every claim taken before it.
 *
 * A pool also takes a claim itself when a socket's `join` finds the socket's claim fenced (the
 * player joined elsewhere since) or too old, and for a party's members.
 */

/**
 * Joins refused for this rule, by queue, region and reason: `other_region` (a player on the
 * ticket waits in another region of the queue) or `superseded` (a player joined there while this
 * join was under way, or the join's claim ran out).
 */
export const joinsRefused = counter(
  'nexus_matchmaking_joins_refused_total',
  'Joins refused because a player waits in another region of the queue, by reason',
)

/** Every claim is good this long after it was taken: a pool refuses an older one. */
export const CLAIM_MAX_AGE_MS = 5 * 60_000

/**
 * How long a fence counts (and is kept): well past CLAIM_MAX_AGE_MS, so no claim it refuses
 * outlives it.
 */
export const FENCE_RETENTION_MS = 15 * 60_000

/**
 * A match whose session is not made within this is given up, however few its attempts: a
 * backlog sent 64 a step can space attempts far apart, and its players, held in `matching`,
 * must not outlive their claims on the queue (pruned 2 hours after a join), or a join in another
 * region would find no claim to fence, and the player could end in two matches.
 */
export const MATCH_GIVE_UP_MS = 30 * 60_000

/**
 * After this since a queue's deletion, none of its pools still makes a match (MATCH_GIVE_UP_MS,
 * the attempt due past it, an alarm running late): a queue made again sooner keeps its players'
 * claims naming regions it no longer has, whose pools a join elsewhere must still fence.
 */
export const DELETED_QUEUE_MATCHES_SETTLED_MS = MATCH_GIVE_UP_MS + 15 * 60_000

/** The claims a join holds: each player's version, and when they were taken (real time). */
export interface QueueClaim {
  versions: Record<string, number>
  claimedAt: number
}

/** A player on the ticket already waits in another region of the queue. */
export interface ClaimConflict {
  ok: false
  playerId: string
  region: string
  ticketId: string
  /** The ticket is in a match being made: it can no longer be cancelled. */
  matching?: boolean
}

/** The queue's settings in Neon do not take this ticket in this region any more. */
export interface QueueChanged {
  ok: false
  queueChanged: true
}

/** Players on the ticket under an account ban (`player_bans`): nothing was claimed. */
export interface ClaimBanned {
  ok: false
  banned: string[]
}

/** The caller's token was issued before their erasure (`erased_players`): nothing was claimed. */
export interface ClaimStaleToken {
  ok: false
  staleToken: true
}

/**
 * Others on a player's ticket (a leader's party join) erased since they joined the party: the
 * party changed under the join, and nothing was claimed.
 */
export interface ClaimMembersErased {
  ok: false
  erasedMembers: string[]
}

export type ClaimResult =
  | { ok: true; claim: QueueClaim; ratings: Map<string, number> }
  | ClaimConflict
  | QueueChanged
  | ClaimBanned
  | ClaimStaleToken
  | ClaimMembersErased

/**
 * The player whose own token asks for the claim, and when that token was issued (ms; 0 when it
 * does not say): a token from before the player's erasure claims nothing, so an erased player's
 * client, still signed in, cannot queue the id into a match that would give it a profile again.
 * Absent for a game server's join (the admin key).
 */
export interface TokenCaller {
  playerId: string
  issuedAt: number
}

/**
 * Why a join is refused for a conflict, in words: the ticket is named only to its own player
 * (`caller`) or the admin key (`caller` null).
 */
export function conflictDetail(c: ClaimConflict, caller: string | null): string {
  const where = c.matching
    ? `Player '${c.playerId}' is being matched in region '${c.region}' of this queue`
    : `Player '${c.playerId}' already waits in region '${c.region}' of this queue`
  if (caller !== null && caller !== c.playerId) return where
  // A ticket in a match being made cannot be cancelled (409): its match comes instead.
  return c.matching
    ? `${where} (ticket ${c.ticketId}): wait for its match`
    : `${where} (ticket ${c.ticketId}): cancel it to join here`
}

/**
 * What a pool answers to a fence: done, or the live ticket that refuses it (`matching` when in
 * a match being made; a pool of the version before does not say).
 */
export type FenceReply =
  { ok: true } | { ok: false; playerId: string; ticketId: string; matching?: boolean }

export interface FenceEntry {
  playerId: string
  /** Every claim of this player up to this version is refused from now on (FENCE_RETENTION_MS). */
  upTo: number
}

/**
 * A claim row untouched this long is pruned by the cron. Safe because nothing it stood for is
 * left by then: a ticket is made within CLAIM_MAX_AGE_MS of its claim and lives at most an hour
 * (`ticketTtlSeconds` ≤ 3600) plus the minutes a match's session creation may retry; fences
 * from it are gone after FENCE_RETENTION_MS, and sockets' claims after CLAIM_MAX_AGE_MS. The
 * player's next join starts a new row at version 1, which no remaining fence refuses.
 */
export const CLAIM_IDLE_HOURS = 2

/** Idle claim rows one statement deletes. */
const PRUNE_BATCH = 5_000
/** A cron run deletes batches for at most this long (well inside its own time). */
const PRUNE_BUDGET_MS = 20_000

/**
 * For the cron: deletes claim rows idle for CLAIM_IDLE_HOURS, a batch at a time while batches come
 * back full, within a time budget, so `queue_claims` holds only recent players, not everyone who
 * ever joined. (One batch a minute was 7.2 M rows a day, fewer than a large game's players make.)
 * A join racing the delete either updates the row first (it is then not idle and stays) or makes a
 * new one. Rows a transaction holds are skipped, not waited on: a party's join locks its members'
 * rows in id order, this delete in its plan's, and the two waiting on each other was a deadlock
 * that failed one of them.
 */
export async function pruneIdleClaims(env: DbEnv): Promise<number> {
  const deadline = Date.now() + PRUNE_BUDGET_MS
  let pruned = 0
  for (;;) {
    const rows = await getSql(env).query(
      `delete from queue_claims
        where (queue, player_id) in (
                select queue, player_id from queue_claims
                 where claimed_at < now() - make_interval(hours => ${CLAIM_IDLE_HOURS})
                 order by claimed_at limit $1
                   for update skip locked)
          and claimed_at < now() - make_interval(hours => ${CLAIM_IDLE_HOURS})
        returning 1`,
      [PRUNE_BATCH],
    )
    pruned += rows.length
    if (rows.length < PRUNE_BATCH || Date.now() >= deadline) return pruned
  }
}

/** What the claim upsert returns for each player. */
interface ClaimRow {
  player_id: string
  version: number
  regions: Record<string, number>
}

/**
 * Takes the next claim on `queue` for each of `ids` (sorted: one lock order for every statement,
 * so two party joins sharing members cannot deadlock), and answers with the queue as this
 * statement saw it, so the caller validates against the very config the claim was checked
 * against (separate statements each see their own snapshot, and a config change between them
 * would let a refused join claim, or an accepted one not). The region is `$2`, or the queue's
 * first region when `$2` is null. Nothing is claimed unless the queue has that region and takes
 * tickets that large, and none of the players is under an account ban (`banned` names those): a
 * join's region comes from its caller, a claim must not name regions that are not the queue's
 * (their pools would be asked to fence), and a join refused as invalid or banned changes nothing.
 * A leader's party join read its members before this statement: one erased since joining the
 * party (`erased_members`; a guest's id never comes back) is not queued by the leader's token, as
 * their own token would not queue them; a game server's join (no caller) may queue anyone.
 */
const CLAIM_UPSERT = `
  with q as (select config, version from queues where id = $1 and deleted_at is null),
  target as (select coalesce($2::text, q.config->'regions'->>0) as region from q),
  banned as (select player_id from player_bans where player_id = any($3::text[])),
  stale as (select 1 where ${erasedSinceToken('$4', '$5')}),
  erased_members as (
    select p as player_id from unnest($3::text[]) as p
     where $4::text is not null and p <> $4::text
       and exists (select 1 from erased_players e where e.id = p
             and (starts_with(p, '${GUEST_ID_PREFIX}')
                  or e.erased_at >= coalesce(
                       (select m.joined_at from party_members m where m.player_id = p),
                       '-infinity'::timestamptz)))),
  claimed as (
    insert into queue_claims (queue, player_id, version, regions)
    select $1, p, 1, jsonb_build_object(t.region, 1)
    from unnest($3::text[]) as p, target t, q
    where q.config->'regions' ? t.region
      and (q.config->>'maxPartySize')::int >= cardinality($3::text[])
      and not exists (select 1 from banned)
      and not exists (select 1 from stale)
      and not exists (select 1 from erased_members)
    order by p
    on conflict (queue, player_id) do update set
      version = queue_claims.version + 1,
      regions = queue_claims.regions
        || jsonb_build_object((select region from target), queue_claims.version + 1),
      claimed_at = now()
    returning player_id, version::float8 as version, regions
  )
  select (select config from q) as config, (select version from q) as version,
    coalesce((select json_agg(claimed) from claimed), '[]'::json) as claimed,
    coalesce((select json_agg(player_id order by player_id) from banned), '[]'::json) as banned,
    exists (select 1 from stale) as stale_token,
    coalesce((select json_agg(player_id order by player_id) from erased_members), '[]'::json)
      as erased_members`

/**
 * Locks the claims of the players in `$1` (a text array) until the transaction ends, in id order
 * (no two joins deadlock): a join's claim and a ban's or an erasure's read of the claims
 * (`removeFromQueues`) take it first, so the read waits for a claim under way, even a player's
 * first on a queue (a row no FOR UPDATE can wait for), and a claim after it sees the ban.
 * Advisory, on a hash of the id: two players sharing a hash only wait for each other.
 */
const LOCK_CLAIMS = `select pg_advisory_xact_lock(hashtextextended('queue_claims:' || p, 0))
  from unnest($1::text[]) as p order by p`

/** The one row CLAIM_UPSERT answers. */
interface ClaimAnswer {
  config: QueueConfig | null
  version: number | null
  claimed: ClaimRow[]
  banned: string[]
  stale_token: boolean
  erased_members: string[]
}

/** CLAIM_UPSERT's parameters after the queue, the region and the players. */
function callerParams(caller: TokenCaller | undefined): [string | null, number | null] {
  return caller ? [caller.playerId, caller.issuedAt] : [null, null]
}

function sortedIds(playerIds: readonly string[]): string[] {
  return [...new Set(playerIds)].sort()
}

/** What an HTTP join or a socket connect reads from Neon, with the claim it takes there. */
export interface JoinRead {
  /** The queue's configuration, or null for an unknown queue (then nothing was claimed). */
  queue: { config: QueueConfig; version: number } | null
  /**
   * Each player's stored Glicko-2 rating: the mean, not the conservative value (windows compare
   * skill, and uncertainty is what widening absorbs); 1500 for a player Nexus has not seen.
   */
  ratings: Map<string, number>
  /** The claims taken, or none when the queue has no such region. */
  claimed: ClaimRow[]
  /** Those of the players under an account ban (`player_bans`): nothing was claimed. */
  banned: string[]
  /** The caller's token predates their erasure (TokenCaller): nothing was claimed. */
  staleToken: boolean
  /** Others on the ticket erased since they joined the party (ClaimMembersErased). */
  erasedMembers: string[]
}

/**
 * One Neon round trip for a join: the queue, the players' ratings, and the next claim on the
 * queue for each player in `region` (the queue's first when undefined). The caller checks the
 * queue and region, then passes `claimed` to `fenceOthers` before queueing.
 */
export async function readAndClaim(
  env: DbEnv,
  queue: string,
  region: string | undefined,
  playerIds: readonly string[],
  caller?: TokenCaller,
): Promise<JoinRead> {
  const ids = sortedIds(playerIds)
  const sql = getSql(env)
  const [, players, [answer]] = (await sql.transaction([
    sql.query(LOCK_CLAIMS, [textArrayLiteral(ids)]),
    sql.query(RATINGS, [textArrayLiteral(ids)]),
    sql.query(CLAIM_UPSERT, [
      queue,
      region ?? null,
      textArrayLiteral(ids),
      ...callerParams(caller),
    ]),
  ])) as [unknown, { id: string; rating: number }[], ClaimAnswer[]]
  return {
    queue: answer!.config ? { config: answer!.config, version: answer!.version! } : null,
    ratings: ratingsOf(ids, players),
    claimed: answer!.claimed,
    banned: answer!.banned,
    staleToken: answer!.stale_token,
    erasedMembers: answer!.erased_members,
  }
}

/**
 * Takes the next claim on `queue` in `region` for each of `playerIds` and fences the other
 * regions that may hold their tickets. Throws when Neon or a pool cannot be reached (the caller
 * answers `unavailable`): the claims may then be taken and some regions fenced, which refuses
 * only claims older than these, so a retry is safe.
 */
export async function claimQueue(
  env: Pick<Env, 'MATCH_POOL'> & DbEnv,
  queue: string,
  region: string,
  playerIds: readonly string[],
  caller?: TokenCaller,
): Promise<ClaimResult> {
  const ids = sortedIds(playerIds)
  const sql = getSql(env)
  // The ratings as they are now, in the same round trip: a socket's join past its claim's age
  // queues with them, not with what it read when it connected, maybe hours and games ago.
  const [, players, [answer]] = (await sql.transaction([
    sql.query(LOCK_CLAIMS, [textArrayLiteral(ids)]),
    sql.query(RATINGS, [textArrayLiteral(ids)]),
    sql.query(CLAIM_UPSERT, [queue, region, textArrayLiteral(ids), ...callerParams(caller)]),
  ])) as [unknown, { id: string; rating: number }[], ClaimAnswer[]]
  if (answer!.banned.length > 0) return { ok: false, banned: answer!.banned }
  if (answer!.stale_token) return { ok: false, staleToken: true }
  if (answer!.erased_members.length > 0) {
    return { ok: false, erasedMembers: answer!.erased_members }
  }
  // The queue as Neon holds it no longer takes this ticket here (a region or size change on its
  // way to the pool): nothing was claimed, and the pool, once told, refuses the join as invalid.
  if (answer!.claimed.length < ids.length) return { ok: false, queueChanged: true }
  const fenced = await fenceOthers(
    env,
    queue,
    region,
    answer!.claimed,
    answer!.config!.regions,
    caller?.playerId,
  )
  return fenced.ok ? { ...fenced, ratings: ratingsOf(ids, players) } : fenced
}

/** Each player's stored rating (RATINGS), 1500 for one Nexus has not seen. */
function ratingsOf(
  ids: readonly string[],
  rows: readonly { id: string; rating: number }[],
): Map<string, number> {
  const ratings = new Map(rows.map((p) => [p.id, p.rating]))
  for (const id of ids) if (!ratings.has(id)) ratings.set(id, defaultRating().rating)
  return ratings
}

/** The players in `$1` (a text array) with their stored ratings. */
const RATINGS = `select id, rating from players where id = any($1::text[])`

/**
 * How long a fence of a region the queue no longer has is waited for. Such a pool takes no new
 * tickets and cancels its waiting ones once it hears the change, so its fence only guards a
 * ticket it had in a match being made; when it does not answer (an operator took the region out
 * because its pool is down), the join goes on without it.
 */
const REMOVED_REGION_FENCE_MS = 2_000

/**
 * The second half of a claim: fences every other region the claims name (usually none), then
 * forgets them. A conflict when one of them holds a live ticket of a player on the claim.
 * Throws when a pool of one of the queue's `regions` (as the claim read them) cannot be
 * reached; a pool of a region taken out of the queue is asked for REMOVED_REGION_FENCE_MS, and
 * left named in the claims if it does not answer.
 */
export async function fenceOthers(
  env: Pick<Env, 'MATCH_POOL'> & DbEnv,
  queue: string,
  region: string,
  rows: readonly ClaimRow[],
  regions: readonly string[],
  /** The player whose join this is: their entry first, so a conflict names their own ticket. */
  caller?: string,
): Promise<{ ok: true; claim: QueueClaim } | ClaimConflict> {
  const claimedAt = Date.now()
  const versions: Record<string, number> = {}
  const fences = new Map<string, FenceEntry[]>()
  const ordered = [...rows].sort(
    (a, b) => Number(b.player_id === caller) - Number(a.player_id === caller),
  )
  for (const row of ordered) {
    versions[row.player_id] = row.version
    for (const other of Object.keys(row.regions)) {
      if (other === region) continue
      let entries = fences.get(other)
      if (!entries) fences.set(other, (entries = []))
      entries.push({ playerId: row.player_id, upTo: row.version - 1 })
    }
  }
  const claim = { versions, claimedAt }
  if (fences.size === 0) return { ok: true, claim }
  const replies = await Promise.all(
    [...fences].map(async ([other, entries]) => {
      const fence = poolStub(env, queue, other).fence(entries)
      if (regions.includes(other)) return { region: other, reply: await fence }
      try {
        return {
          region: other,
          reply: await within(fence, REMOVED_REGION_FENCE_MS, 'fencing a removed region'),
        }
      } catch (err) {
        log('warn', 'a region taken out of the queue not fenced', {
          queue,
          region: other,
          ...errorFields(err),
        })
        return { region: other, reply: null }
      }
    }),
  )
  for (const { region: held, reply } of replies) {
    if (reply !== null && !reply.ok) {
      return {
        ok: false,
        playerId: reply.playerId,
        region: held,
        ticketId: reply.ticketId,
        ...(reply.matching ? { matching: true } : {}),
      }
    }
  }
  const answered = new Set(replies.filter((r) => r.reply !== null).map((r) => r.region))
  await forgetFenced(
    env,
    queue,
    region,
    [...fences].flatMap(([other, entries]) => (answered.has(other) ? entries : [])),
  )
  return { ok: true, claim }
}

/**
 * Drops the regions just fenced from the claims (those not claimed again since), so the next
 * join asks only regions that may hold a ticket. Only an optimisation: a region left named is
 * fenced again next time, so a failure is logged and ignored.
 */
async function forgetFenced(
  env: DbEnv,
  queue: string,
  region: string,
  fenced: FenceEntry[],
): Promise<void> {
  const upTo = new Map<string, number>()
  // Sorted, as the upsert locks them: two statements sharing players cannot deadlock.
  for (const f of [...fenced].sort((a, b) => (a.playerId < b.playerId ? -1 : 1))) {
    upTo.set(f.playerId, f.upTo)
  }
  try {
    await getSql(env).query(
      `update queue_claims c set regions = (
         select coalesce(jsonb_object_agg(e.key, e.value), '{}'::jsonb)
         from jsonb_each(c.regions) e
         where e.key = $2 or (e.value)::bigint > x.up_to)
       from unnest($3::text[], $4::bigint[]) as x(player_id, up_to)
       where c.queue = $1 and c.player_id = x.player_id`,
      [queue, region, textArrayLiteral([...upTo.keys()]), numberArrayLiteral([...upTo.values()])],
    )
  } catch (err) {
    log('warn', 'fenced regions not forgotten', { queue, region, ...errorFields(err) })
  }
}

/** A pool that does not answer within this counts as unreachable (the caller retries). */
const REMOVE_POOL_CALL_MS = 10_000

/**
 * A player's claims in every queue ($1 the player), each kept from now on as a join keeps it: the
 * fences a ban or erasure puts up from them (15 minutes) must not outlive the rows, or a join
 * after the prune, its claim counted from 1 again, would be refused by them. `deleted`: the
 * queue was deleted, and its pools take no joins to fence against (a call would make a pool
 * whose storage the deletion took anew).
 */
export const CLAIMS_OF_PLAYER = `update queue_claims set claimed_at = now() where player_id = $1
  returning queue, version::float8 as version, regions,
    coalesce((select q.deleted_at is not null from queues q where q.id = queue_claims.queue),
             false) as deleted`

/**
 * After a player's account ban or erasure is in Neon (`reason`): every pool that may hold a
 * ticket or a claimed socket of theirs (the regions their claims name, one claim row per queue
 * joined in the last CLAIM_IDLE_HOURS) cancels their waiting ticket and refuses their claims up to
 * the version Neon holds now (MatchPool.removePlayer). Read after the change committed, and
 * after any claim under way (LOCK_CLAIMS), that version covers every join that claimed before
 * it; a claim after it sees the change and claims nothing. Answers the tickets cancelled and the
 * pools (`queue/region`) that could not be reached, for a retry.
 */
export async function removeFromQueues(
  env: Pick<Env, 'MATCH_POOL'> & DbEnv,
  playerId: string,
  reason: 'banned' | 'erased',
): Promise<{ cancelled: string[]; unreached: string[] }> {
  const sql = getSql(env)
  const [, rows] = (await sql.transaction([
    // A claim being taken right now (its statement began before the change committed, so it
    // did not see it) is waited for, and its version read.
    sql.query(LOCK_CLAIMS, [textArrayLiteral([playerId])]),
    sql.query(CLAIMS_OF_PLAYER, [playerId]),
  ])) as [
    unknown,
    { queue: string; version: number; regions: Record<string, number>; deleted: boolean }[],
  ]
  const pools = rows.flatMap((r) =>
    r.deleted
      ? []
      : Object.keys(r.regions).map((region) => ({ queue: r.queue, region, upTo: r.version })),
  )
  const outcomes = await Promise.allSettled(
    pools.map((p) =>
      within(
        poolStub(env, p.queue, p.region).removePlayer(playerId, p.upTo, reason),
        REMOVE_POOL_CALL_MS,
        'pool removal',
      ),
    ),
  )
  const cancelled: string[] = []
  const unreached: string[] = []
  outcomes.forEach((o, i) => {
    const pool = `${pools[i]!.queue}/${pools[i]!.region}`
    if (o.status === 'rejected') {
      log('warn', 'player not removed from a pool', {
        playerId,
        pool,
        reason,
        ...errorFields(o.reason),
      })
      unreached.push(pool)
    } else if (o.value.cancelled) cancelled.push(o.value.cancelled)
  })
  return { cancelled, unreached }
}
