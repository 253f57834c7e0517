import { runInDurableObject } from 'cloudflare:test'
import { onTestFinished } from 'vitest'
import { env } from 'cloudflare:workers'
import {
  CHECK_GRANULARITY_MS,
  type MatchPool,
  type TicketView,
} from '../../../durable-objects/match-pool.ts'
import type { SessionCreator, SessionSetup } from '../../../workers/matchmaking/session.ts'
import { poolName } from '../../../workers/matchmaking/stub.ts'
import { ADMIN_KEY, call, json } from './http.ts'
import { replaceMethod } from './replace-method.ts'
import { until } from './sockets.ts'

/** A fresh queue id per test, so tests never share pools. */
export function queueId(prefix = 'q'): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`
}

export const DUEL = {
  teams: 2,
  teamSize: 1,
  rules: 'dice-race',
  maxRatingGap: 100,
  widenPerSecond: 10,
  regions: ['eu'],
}

export async function createQueue(
  config: Record<string, unknown> = {},
  id = queueId(),
): Promise<string> {
  const res = await call(`/v1/admin/queues/${id}`, json('PUT', { ...DUEL, ...config }, ADMIN_KEY))
  if (res.status !== 201) throw new Error(`create queue: ${res.status} ${await res.text()}`)
  return id
}

export function poolOf(queue: string, region = 'eu') {
  return env.MATCH_POOL.getByName(poolName(queue, region))
}

/** Every `create` the pools under test received, by session id (a retry appends). */
export const sessionCalls = new Map<string, SessionSetup[]>()

/** Records each call and answers like an idempotent GameSession would. */
export const recordingCreator: SessionCreator = async (setup) => {
  const calls = sessionCalls.get(setup.sessionId) ?? []
  calls.push(setup)
  sessionCalls.set(setup.sessionId, calls)
  return { ok: true, created: calls.length === 1 }
}

/** A clock tests move by hand; it starts an hour ahead so real alarms never fire mid-test. */
export interface Clock {
  t: number
}

/**
 * When a pool checks for a match that its windows allow from `due` on: at the first multiple of
 * its check granularity from then (a join's own check is at once).
 */
export function checkAt(due: number): number {
  return Math.ceil(due / CHECK_GRANULARITY_MS) * CHECK_GRANULARITY_MS
}

export function newClock(): Clock {
  return { t: Date.now() + 3_600_000 }
}

/**
 * Gives a pool the test's clock and session creator (again after an eviction, which makes a
 * new instance). `graceMs` shortens or keeps the disconnect grace.
 */
export async function rig(
  queue: string,
  clock: Clock,
  opts: { region?: string; creator?: SessionCreator; graceMs?: number } = {},
): Promise<void> {
  await runInDurableObject(poolOf(queue, opts.region), (inst: MatchPool) => {
    inst.now = () => clock.t
    inst.sessionCreator = opts.creator ?? recordingCreator
    if (opts.graceMs !== undefined) inst.graceMs = opts.graceMs
  })
}

/** Sets a player's stored rating (admin route), creating the player. */
export async function setRating(playerId: string, rating: number): Promise<void> {
  const res = await call(`/v1/admin/players/${playerId}`, json('PUT', { rating }, ADMIN_KEY))
  if (res.status !== 200) throw new Error(`set rating: ${res.status} ${await res.text()}`)
}

export type Ticket = TicketView & {
  existing?: boolean
  match: (TicketView['match'] & { token?: string; tokens?: Record<string, string> }) | null
}

/** Joins over HTTP as a game server (admin key) for `playerId`, with an optional party. */
export async function joinFor(
  queue: string,
  playerId: string,
  body: Record<string, unknown> = {},
): Promise<Ticket> {
  const res = await call(
    `/v1/matchmaking/${queue}/tickets`,
    json('POST', { playerId, ...body }, ADMIN_KEY),
  )
  if (res.status !== 201 && res.status !== 200)
    throw new Error(`join: ${res.status} ${await res.text()}`)
  return (await res.json()) as Ticket
}

/** Reads a ticket with a credential (admin key by default). */
export async function ticketOf(
  ticketId: string,
  credential = ADMIN_KEY,
  wait = 0,
): Promise<Ticket> {
  const res = await call(`/v1/matchmaking/tickets/${ticketId}${wait ? `?wait=${wait}` : ''}`, {
    headers: { authorization: `Bearer ${credential}` },
  })
  if (res.status !== 200) throw new Error(`ticket: ${res.status} ${await res.text()}`)
  return (await res.json()) as Ticket
}

/** Runs the pool's alarm handler now (whatever time it was set for), as the runtime would. */
export async function fireAlarm(queue: string, region = 'eu'): Promise<void> {
  await runInDurableObject(poolOf(queue, region), (inst: MatchPool) => inst.alarm())
}

/** When a ticket's disconnect grace ends, as its pool holds it; null while none runs. */
export async function graceUntil(
  queue: string,
  ticketId: string,
  region = 'eu',
): Promise<number | null> {
  return runInDurableObject(
    poolOf(queue, region),
    (_i: MatchPool, state) =>
      state.storage.sql
        .exec<{ g: number | null }>(`SELECT grace_until AS g FROM tickets WHERE id = ?`, ticketId)
        .one().g,
  )
}

/** When the pool's alarm is set for, or null. */
export async function alarmAt(queue: string, region = 'eu'): Promise<number | null> {
  return runInDurableObject(poolOf(queue, region), (_inst: MatchPool, state) =>
    state.storage.getAlarm(),
  )
}

/** The pool's `queued` frame. */
export interface Queued {
  ticketId: string
  existing: boolean
  expiresAt: number
  expiresIn: number
}

/** The pool's `match_found` frame. */
export interface Found {
  ticketId: string
  sessionId: string
  token: string
  players: { playerId: string; team: number }[]
}

/**
 * Holds the pool's signing of session tokens until `release()`; `started()` resolves once one is
 * held. A flag, not a promise, tells the test: one resolved by the pool would run the test on in
 * the pool's context. `release()` lets go from inside the pool, so that what the signing resumes
 * runs as the pool's own.
 */
export async function holdSigning(
  queue: string,
  region = 'eu',
): Promise<{ started: () => Promise<unknown>; release: () => Promise<void> }> {
  let letGo!: () => void
  const held = new Promise<void>((r) => (letGo = r))
  onTestFinished(() => letGo())
  let signing = false
  type Signer = { sessionToken(sessionId: string, playerId: string): Promise<string> }
  await replaceMethod<Signer, 'sessionToken'>(
    poolOf(queue, region),
    'sessionToken',
    (sign) =>
      async function (this: Signer, sessionId: string, playerId: string) {
        signing = true
        await held
        return sign.call(this, sessionId, playerId)
      },
  )
  return {
    started: () => until(async () => signing || undefined, 5000, 'a session token being signed'),
    release: () => runInDurableObject(poolOf(queue, region), () => letGo()),
  }
}
