import type { MatchPool } from '../../durable-objects/match-pool.ts'
import { locationHintFor } from '../core/location.ts'
import type { Env } from '../env.ts'

/** The pool's RPC surface, with the plain return types its methods declare. */
export type PoolApi = Pick<
  MatchPool,
  | 'configure'
  | 'join'
  | 'ticket'
  | 'ticketByKey'
  | 'cancel'
  | 'stats'
  | 'fence'
  | 'removePlayer'
  | 'retire'
>

/** Name of the pool of one queue in one region. */
export function poolName(queue: string, region: string): string {
  return `${queue}:${region}`
}

/**
 * The Durable Object of a (queue, region) pool. Arguments and results are plain data, so the
 * stub's promised types are the methods' own; the cast spares callers the RPC type mapping.
 */
export function poolStub(env: Pick<Env, 'MATCH_POOL'>, queue: string, region: string): PoolApi {
  return poolFetcher(env, queue, region) as unknown as PoolApi
}

/**
 * The raw stub, for WebSocket upgrades (`fetch`). Every call names the region's location hint,
 * since any call may be the one that creates the pool (workers/core/location.ts).
 */
export function poolFetcher(env: Pick<Env, 'MATCH_POOL'>, queue: string, region: string) {
  const locationHint = locationHintFor(region)
  return env.MATCH_POOL.getByName(
    poolName(queue, region),
    locationHint ? { locationHint } : undefined,
  )
}

const TICKET_ID =
  /^([A-Za-z0-9][A-Za-z0-9_.-]{0,63}):([a-z0-9][a-z0-9-]{0,31}):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/

/**
 * Ticket ids name their pool: `queue:region:uuid`, so a ticket can be found from its id alone.
 * @example newTicketId('duel', 'eu') // 'duel:eu:2b7c…'
 */
export function newTicketId(queue: string, region: string): string {
  return `${queue}:${region}:${crypto.randomUUID()}`
}

/** The pool of a ticket id, or null when the id is not one Nexus issues. */
export function parseTicketId(id: string): { queue: string; region: string } | null {
  const m = TICKET_ID.exec(id)
  return m ? { queue: m[1]!, region: m[2]! } : null
}

/** Of `tickets`, those of the pool of `queue` in `region` (ticket ids name their pool). */
export function ticketsOfPool(tickets: readonly string[], queue: string, region: string): string[] {
  const prefix = `${poolName(queue, region)}:`
  return tickets.filter((t) => t.startsWith(prefix))
}

/**
 * Cancels a party's ticket that no longer stands for the party (its members changed), with
 * reason `party_changed`; true if it is now cancelled. A ticket no longer waiting (matched,
 * expired) is left as it is. A pool that cannot be reached throws, for the caller to log: its
 * membership change has committed either way.
 */
export async function cancelPartyTicket(
  env: Pick<Env, 'MATCH_POOL'>,
  ticketId: string,
): Promise<boolean> {
  const pool = parseTicketId(ticketId)
  if (!pool) return false
  const r = await poolStub(env, pool.queue, pool.region).cancel(
    ticketId,
    { kind: 'admin' },
    'party_changed',
  )
  return r.ok && r.ticket.status === 'cancelled'
}
