import { boundedInt } from '../lib/config.ts'
import { z } from '@hono/zod-openapi'
import { and, eq, isNull, sql } from 'drizzle-orm'
import {
  getRules,
  MAX_ROSTER,
  optionsRefusal,
  RULES_OPTIONS_LIMITS,
  rulesNames,
} from '../core/rules/index.ts'
import { textArrayLiteral } from '../db/array-literal.ts'
import { ifMatchHolds, ifMatchParam, versionWanted, type IfMatch } from '../lib/preconditions.ts'
import { getDb, getSql, type DbEnv } from '../db/client.ts'
import { takesMatchWinsSql } from '../leaderboards/config-store.ts'
import { isoUtc } from '../db/iso-time.ts'
import { queues } from '../db/schema.ts'
import { DELETED_QUEUE_MATCHES_SETTLED_MS } from './claims.ts'
import { boundedJson, ResourceId } from '../lib/fields.ts'

/** Region names: short, lowercase, URL-safe (`eu`, `us-east`). */
export const RegionId = z
  .string()
  .min(1)
  .max(32)
  .regex(
    /^[a-z0-9][a-z0-9-]*$/,
    'lowercase letters, digits and "-", starting with a letter or digit',
  )
  .openapi({ example: 'eu' })

/** A queue's stored configuration, with every default filled in. */
export interface QueueConfig {
  teams: number
  teamSize: number
  rules: string
  rulesOptions?: unknown
  maxRatingGap: number
  widenPerSecond: number
  maxWidenedGap?: number
  regions: string[]
  maxPartySize: number
  ticketTtlSeconds: number
  /**
   * How long a socket's waiting ticket outlives its last socket (a network switch, an app sent to
   * the background); absent in configurations saved before it existed (then the default).
   */
  disconnectGraceSeconds?: number
  leaderboardId: string | null
  /** Out of play: no waiting tickets, no joins (absent: in play). */
  paused?: true
}

/** A waiting ticket's disconnect grace when its queue names none. */
export const DEFAULT_DISCONNECT_GRACE_SECONDS = 10

/**
 * `PUT /v1/admin/queues/:queue` body. Cross-field rules (match size within the rules' player
 * range, party size within a team, options the rules accept) report the field to change.
 */
export const QueueConfigInput = z
  .object({
    teams: z.number().int().min(1).max(16).openapi({ example: 2 }),
    teamSize: z.number().int().min(1).max(16).openapi({ example: 1 }),
    rules: z
      .string()
      .refine((r) => rulesNames.includes(r), `one of: ${rulesNames.join(', ')}`)
      .openapi({
        enum: [...rulesNames],
        example: 'dice-race',
        description: 'The rules module the matched sessions play',
      }),
    rulesOptions: boundedJson(z.unknown(), RULES_OPTIONS_LIMITS)
      .optional()
      .openapi({
        description: `Options for the rules module; at most ${RULES_OPTIONS_LIMITS.maxBytes} bytes of JSON, ${RULES_OPTIONS_LIMITS.maxDepth} levels deep`,
      }),
    maxRatingGap: z.number().min(0).max(10_000).openapi({ example: 100 }),
    widenPerSecond: z.number().min(0).max(10_000).openapi({ example: 10 }),
    maxWidenedGap: z
      .number()
      .min(0)
      .max(100_000)
      .optional()
      .openapi({ description: 'Upper bound of the widened gap; unbounded when absent' }),
    regions: z
      .array(RegionId)
      .min(1)
      .max(16)
      .refine((r) => new Set(r).size === r.length, 'regions must be distinct')
      .openapi({ example: ['eu', 'us'] }),
    maxPartySize: z
      .number()
      .int()
      .min(1)
      .max(16)
      .optional()
      .openapi({ description: 'Most players on one ticket; defaults to teamSize' }),
    ticketTtlSeconds: z
      .number()
      .int()
      .min(10)
      .max(3600)
      .optional()
      .openapi({ description: 'A waiting ticket expires after this long (default 300)' }),
    disconnectGraceSeconds: z
      .number()
      .int()
      .min(10)
      .max(300)
      .optional()
      .openapi({
        description: `How long a socket ticket waits for its player to reconnect after the socket goes, before it is cancelled (default ${DEFAULT_DISCONNECT_GRACE_SECONDS}); at least 10, which the SDK's fallback to HTTP counts on`,
      }),
    leaderboardId: ResourceId.nullable()
      .optional()
      .openapi({
        description:
          'Where finished sessions submit results (not a match of one ticket: a party filling a ' +
          'one-team queue by itself beat nobody outside it)',
      }),
    paused: z
      .boolean()
      .optional()
      .openapi({
        description:
          'true takes the queue out of play (a season over, an incident): waiting tickets are ' +
          "cancelled (`queue_changed`) and joins refused (409 `conflict`; a socket's `error` " +
          '`conflict`) until a PUT without it; matches already made play on',
      }),
  })
  .strict()
  .superRefine((q, ctx) => {
    const rules = getRules(q.rules)
    if (q.teams * q.teamSize > MAX_ROSTER) {
      // Whatever the rules say: no session holds more.
      ctx.addIssue({
        code: 'custom',
        path: ['teamSize'],
        message: `a match holds at most ${MAX_ROSTER} players; teams × teamSize is ${q.teams * q.teamSize}`,
      })
    } else if (rules) {
      const size = q.teams * q.teamSize
      if (size < rules.players.min || size > rules.players.max) {
        ctx.addIssue({
          code: 'custom',
          path: ['teamSize'],
          message: `${q.rules} needs ${rules.players.min} to ${rules.players.max} players; teams × teamSize is ${size}`,
        })
      } else {
        // A trial start refuses options the rules would refuse when the first match starts, and
        // a size at which the game is over before it starts (every match would be refused).
        const roster = Array.from({ length: size }, (_, i) => ({
          playerId: `p${i}`,
          team: i % q.teams,
        }))
        const refusal = optionsRefusal(rules, roster, q.rulesOptions)
        if (refusal) {
          const path = q.rulesOptions !== undefined ? 'rulesOptions' : 'teamSize'
          ctx.addIssue({ code: 'custom', path: [path], message: refusal })
        }
      }
    }
    if (q.maxPartySize !== undefined && q.maxPartySize > q.teamSize) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxPartySize'],
        message: 'a party plays on one team: at most teamSize',
      })
    }
    if (q.maxWidenedGap !== undefined && q.maxWidenedGap < q.maxRatingGap) {
      ctx.addIssue({
        code: 'custom',
        path: ['maxWidenedGap'],
        message: 'must be at least maxRatingGap',
      })
    }
  })
  .openapi('QueueConfig')

export type QueueConfigBody = z.infer<typeof QueueConfigInput>

/** Fills the documented defaults in. */
export function normalizeQueueConfig(
  input: QueueConfigBody,
): QueueConfig & { disconnectGraceSeconds: number } {
  return {
    teams: input.teams,
    teamSize: input.teamSize,
    rules: input.rules,
    ...(input.rulesOptions !== undefined ? { rulesOptions: input.rulesOptions } : {}),
    maxRatingGap: input.maxRatingGap,
    widenPerSecond: input.widenPerSecond,
    ...(input.maxWidenedGap !== undefined ? { maxWidenedGap: input.maxWidenedGap } : {}),
    regions: input.regions,
    maxPartySize: input.maxPartySize ?? input.teamSize,
    ticketTtlSeconds: input.ticketTtlSeconds ?? 300,
    disconnectGraceSeconds: input.disconnectGraceSeconds ?? DEFAULT_DISCONNECT_GRACE_SECONDS,
    leaderboardId: input.leaderboardId ?? null,
    // Stored only when true: a configuration in play reads as those saved before the field.
    ...(input.paused === true ? { paused: true as const } : {}),
  }
}

/** A queue's disconnect grace in milliseconds, for configurations of any age. */
export function disconnectGraceMs(config: QueueConfig): number {
  return (config.disconnectGraceSeconds ?? DEFAULT_DISCONNECT_GRACE_SECONDS) * 1000
}

/** A queue's configuration and its version (each update adds one); null if none, or deleted. */
export async function loadQueueConfig(
  env: DbEnv,
  id: string,
): Promise<{ config: QueueConfig; version: number; knownRegions: string[] } | null> {
  const [row] = await getDb(env)
    .select({ config: queues.config, version: queues.version, knownRegions: queues.knownRegions })
    .from(queues)
    .where(and(eq(queues.id, id), isNull(queues.deletedAt)))
  return row
    ? {
        config: row.config as QueueConfig,
        version: row.version,
        // Every region the queue has had (a PUT adds its own): where a ticket may still be.
        knownRegions: row.knownRegions ?? (row.config as QueueConfig).regions,
      }
    : null
}

/**
 * Creates or replaces a queue's configuration; returns whether it was created (or made again
 * after a deletion, at a version past the deleted one's), and every region the queue has had
 * (this config's included), which the config must be pushed to. Null, and
 * nothing saved, when the board it names is not there (never made, or deleted) or its bounds
 * refuse a win (takesMatchWins), unless this queue named it already; `retireOwed`, and
 * nothing saved, for a deleted queue whose deletion some regions this config leaves out have not
 * been told yet (made again now, its regions would replace theirs, and nothing would tell them;
 * those it names are pushed the new version, past the deletion's). The board's row
 * is held (`for share`) until the save commits: its deletion waits for it and then sees this
 * queue (deleteLeaderboardConfig), so a queue never sends its results to a board deleted at the
 * same moment, nor to one whose PUT narrows its bounds then (saveLeaderboardConfig).
 */
export async function saveQueueConfig(
  env: DbEnv,
  id: string,
  config: QueueConfig,
  ifMatch?: IfMatch,
): Promise<
  | { created: boolean; version: number; knownRegions: string[]; unchanged?: true }
  | { retireOwed: string[] }
  | { preconditionFailed: true; version: number | null }
  | null
> {
  const sql = getSql(env)
  // With If-Match ($p: ifMatchParam), only a queue in force at a version it names changes.
  const wanted = ifMatchParam(ifMatch)
  const inForceAsWanted = (p: string) =>
    `(${p}::bigint[] is null or exists (select 1 from queues q1 where q1.id = $1
        and q1.deleted_at is null and ${versionWanted('q1.version', p)}))`
  // Every region the queue has had, old and new; each is owed this version until it acknowledges.
  const everyRegion = `array(select distinct r from unnest(q.known_regions || excluded.known_regions) r order by r)`
  // A queue made again after its deletion starts from its own regions: those of the queue before
  // were told of the deletion and delete their storage; pushed again, they would be made anew.
  const regions = `case when q.deleted_at is null then ${everyRegion} else excluded.known_regions end`
  // In each statement, $1 is the queue's id; the board it names is the parameter given.
  // There, and taking a win, unless this queue named it already (a pause must not need the board
  // fixed first): under the board row's lock, which a PUT of the board takes to judge its bounds
  // against the queues naming it (saveLeaderboardConfig).
  const boardThere = (p: string) =>
    `(${p}::text is null or exists (select 1 from leaderboards l
        where l.id = ${p} and l.deleted_at is null
          and (${takesMatchWinsSql('l.config')} or exists (select 1 from queues q0
                where q0.id = $1 and q0.deleted_at is null and q0.config->>'leaderboardId' = ${p}))))`
  // Regions owed the deletion that the config (its regions the parameter given) leaves out.
  const owedLeftOut = (regions: string) =>
    `array(select r from unnest(unpushed_regions) r where r <> all(${regions}::text[]) order by r)`
  const retireOwed = (regions: string) =>
    `exists (select 1 from queues where id = $1 and deleted_at is not null
               and cardinality(${owedLeftOut(regions)}) > 0)`
  const [, prior, , saved] = (await sql.transaction([
    sql.query('select 1 from leaderboards where id = $1 and deleted_at is null for share', [
      config.leaderboardId,
    ]),
    // Under the row's lock, which a deletion takes too: a deletion committed while this waited
    // is seen, and the queue is made again (201).
    sql.query(
      `select deleted_at is not null as deleted, version, known_regions, config = $3::jsonb as same,
              case when deleted_at is not null then ${owedLeftOut('$2')} end as retire_owed
         from queues where id = $1 for update`,
      [id, textArrayLiteral(config.regions), JSON.stringify(config)],
    ),
    // Made again: the players' claims (kept, with their versions, which fences count against)
    // stop naming regions the queue no longer has, whose pools a join or a ban would fence (and
    // wake, deleted, to store the fence). Not while such a pool may still be making a match
    // from before the deletion: a join in a region kept must be refused while its player is in
    // it (the claims name the region until a join's fence there, or the prune, drops it).
    sql.query(
      `update queue_claims c set regions = coalesce(
           (select jsonb_object_agg(e.key, e.value) from jsonb_each(c.regions) e
             where e.key = any($2::text[])), '{}'::jsonb)
        where c.queue = $1
          and exists (select 1 from queues q where q.id = $1 and q.deleted_at is not null
                        and q.deleted_at < now() - make_interval(secs => $5::float8 / 1000))
          and ${boardThere('$3')} and not ${retireOwed('$2')} and ${inForceAsWanted('$4')}`,
      [
        id,
        textArrayLiteral(config.regions),
        config.leaderboardId,
        wanted,
        DELETED_QUEUE_MATCHES_SETTLED_MS,
      ],
    ),
    sql.query(
      `insert into queues as q (id, config, known_regions, unpushed_regions)
       select $1, $2::jsonb, $3::text[], $3::text[]
        where ${boardThere('$4')} and not ${retireOwed('$3')} and ${inForceAsWanted('$5')}
       on conflict (id) do update set config = excluded.config, version = q.version + 1,
          updated_at = now(), known_regions = ${regions}, unpushed_regions = ${regions},
          deleted_at = null
       returning version, known_regions`,
      [id, JSON.stringify(config), textArrayLiteral(config.regions), config.leaderboardId, wanted],
    ),
  ])) as [
    unknown,
    {
      deleted: boolean
      version: number
      known_regions: string[]
      same: boolean
      retire_owed: string[] | null
    }[],
    unknown,
    { version: number; known_regions: string[] }[],
  ]
  const row = saved[0]
  const inForce = prior[0] && !prior[0].deleted ? prior[0] : undefined
  if (!row && wanted !== null) {
    // The configuration asked for in force already: a retry whose first try landed.
    if (inForce?.same) {
      return {
        created: false,
        version: inForce.version,
        knownRegions: inForce.known_regions,
        unchanged: true,
      }
    }
    if (!inForce || !ifMatchHolds(ifMatch, inForce.version)) {
      return { preconditionFailed: true, version: inForce?.version ?? null }
    }
  }
  const owed = prior[0]?.retire_owed ?? []
  if (!row) return owed.length > 0 ? { retireOwed: owed } : null
  return {
    created: row.version === 1 || prior[0]?.deleted === true,
    version: row.version,
    knownRegions: row.known_regions,
  }
}

/** What a queue's deletion found (deleteQueueConfig). */
export type QueueDeletion =
  /** Marked deleted at `version`; its pools are to be told (`retire`). */
  | { outcome: 'deleted'; version: number; deletedAt: string; knownRegions: string[] }
  /** No such queue, or deleted already (a retry whose first answer was lost). */
  | { outcome: 'gone' }
  /** In play: a deletion needs the queue paused first (its waiting tickets cancelled). */
  | { outcome: 'in-play' }
  /** Paused, but these regions' pools have not taken the paused version yet. */
  | { outcome: 'unpushed'; config: QueueConfig; version: number; regions: string[] }

/**
 * Marks a queue deleted if it is paused and every region's pool has taken the paused version
 * (so none waits a ticket), moving its version on by one. The row's lock is taken first, with a
 * `lock_timeout` (a PUT holding it past that: the transaction rolls back, the error's code
 * 55P03), so a PUT and a deletion are ordered: a PUT after it makes the queue again, at a later
 * version; one before it leaves a configuration the deletion checks.
 */
export async function deleteQueueConfig(
  env: DbEnv,
  id: string,
  lockTimeoutMs = 4_000,
): Promise<QueueDeletion> {
  const sql = getSql(env)
  const [, , read, marked] = (await sql.transaction([
    sql.query(`set local lock_timeout = ${Math.trunc(lockTimeoutMs)}`),
    sql.query('select 1 from queues where id = $1 and deleted_at is null for update', [id]),
    sql.query(
      `select config, version, unpushed_regions from queues where id = $1 and deleted_at is null`,
      [id],
    ),
    sql.query(
      `update queues set deleted_at = now(), updated_at = now(), version = version + 1,
              unpushed_regions = known_regions
        where id = $1 and deleted_at is null and (config->>'paused')::boolean is true
          and unpushed_regions = '{}'::text[]
        returning version, known_regions, ${isoUtc('deleted_at')} as deleted_at`,
      [id],
    ),
  ])) as [
    unknown,
    unknown,
    { config: QueueConfig; version: number; unpushed_regions: string[] }[],
    { version: number; known_regions: string[]; deleted_at: string }[],
  ]
  const done = marked[0]
  if (done) {
    return {
      outcome: 'deleted',
      version: done.version,
      deletedAt: done.deleted_at,
      knownRegions: done.known_regions,
    }
  }
  const row = read[0]
  if (!row) return { outcome: 'gone' }
  if (row.config.paused !== true) return { outcome: 'in-play' }
  return {
    outcome: 'unpushed',
    config: row.config,
    version: row.version,
    regions: row.unpushed_regions,
  }
}

/**
 * Notes that these regions' pools took `version`. A newer version saved meanwhile owes every
 * region again, so an acknowledgement of an older one changes nothing.
 */
export async function markQueuePushed(
  env: DbEnv,
  id: string,
  version: number,
  regions: string[],
): Promise<void> {
  if (regions.length === 0) return
  await getDb(env)
    .update(queues)
    .set({
      unpushedRegions: sql`array(select r from unnest(${queues.unpushedRegions}) r
        where r <> all(${textArrayLiteral(regions)}::text[]) order by r)`,
    })
    .where(and(eq(queues.id, id), eq(queues.version, version)))
}

/**
 * Moves a queue's version from `from` to `to` (above the one a pool holds, when Neon's count went
 * back: a restore, a new database), keeping its configuration and the regions owed it; the new
 * version, or null if the version is no longer `from` (another PUT saved one since).
 */
export async function advanceQueueVersion(
  env: DbEnv,
  id: string,
  from: number,
  to: number,
): Promise<number | null> {
  const [row] = await getDb(env)
    .update(queues)
    .set({ version: to, updatedAt: sql`now()`, unpushedRegions: sql`${queues.knownRegions}` })
    .where(and(eq(queues.id, id), eq(queues.version, from)))
    .returning({ version: queues.version })
  return row?.version ?? null
}

/**
 * Queues with regions owed their current version, a page at a time in id order (for the cron):
 * a deleted queue's are owed the deletion (`deleted`), not its configuration.
 */
export async function unpushedQueues(env: DbEnv, afterId: string, limit: number) {
  return getDb(env)
    .select({
      id: queues.id,
      config: queues.config,
      version: queues.version,
      regions: queues.unpushedRegions,
      deleted: sql<boolean>`${queues.deletedAt} is not null`,
    })
    .from(queues)
    .where(sql`${queues.id} > ${afterId} and ${queues.unpushedRegions} <> '{}'::text[]`)
    .orderBy(queues.id)
    .limit(limit)
}

/** One queue with regions owed its version, drawn at random (null: none). */
export async function randomUnpushedQueue(env: DbEnv): Promise<string | null> {
  const [row] = await getDb(env)
    .select({ id: queues.id })
    .from(queues)
    .where(sql`${queues.unpushedRegions} <> '{}'::text[]`)
    .orderBy(sql`random()`)
    .limit(1)
  return row?.id ?? null
}

/**
 * JOINS_PER_MINUTE (default 30, 1–10,000): a player's joins of a queue a minute, counted at the
 * edge for HTTP joins (socket connects apart, at four times it), and by each pool for its
 * sockets' `join` frames. Every join takes a claim in Neon, and every match a join completes makes a game
 * session with rows kept for good: without a bound, two guests joining each other in a loop made
 * a session a second, and a socket's party joins were a Neon query each at its frame rate.
 */
export function joinsPerMinute(env: { JOINS_PER_MINUTE?: string }): number {
  return boundedInt(env.JOINS_PER_MINUTE, 30, 1, 10_000)
}

/**
 * Why a stored queue takes no joins, or null when it does: paused by an admin, or playing rules
 * this version of Nexus does not have (removed by a deploy while the queue still named them):
 * every match of such a queue would be refused by its game session, every ticket in it
 * cancelled `session_failed`, and its players would join again, and again. Until an admin points
 * it at other rules, joins are refused; tickets already waiting are left to their time-to-live
 * (a pool still on the version before a deploy that adds the rules must not send them away).
 */
export function outOfPlay(
  config: QueueConfig,
): { detail: string; extensions: { paused: true; rules?: string } } | null {
  if (config.paused === true) {
    return { detail: 'This queue is paused: it takes no tickets now', extensions: { paused: true } }
  }
  if (getRules(config.rules) === undefined) {
    return {
      detail: `This queue plays rules '${config.rules}', which this version of Nexus does not have: it takes no tickets until an admin points it at other rules`,
      extensions: { paused: true, rules: config.rules },
    }
  }
  return null
}
