import type { Env } from '../env.ts'
import { errorFields, log } from '../lib/log.ts'
import { cancelPartyTicket } from '../matchmaking/stub.ts'
import { forgetPartyTickets, stalePartyTickets } from './store.ts'

/**
 * After a membership change: the party's tickets from before no longer stand for it, so each is
 * cancelled in its pool (`party_changed`); a ticket already matched keeps its match. Tickets
 * whose pool answered are forgotten; one whose pool could not be reached stays noted, and is
 * logged: the change has committed either way, so the caller still gets its answer, and the
 * cron (`retryStalePartyTickets`) or the next change tries again. Returns the tickets cancelled.
 */
export async function cancelStaleTickets(
  env: Env,
  partyId: string,
  tickets: readonly string[],
  context: Record<string, unknown> = {},
): Promise<string[]> {
  if (tickets.length === 0) return []
  const outcomes = await Promise.allSettled(tickets.map((t) => cancelPartyTicket(env, t)))
  const settled: string[] = []
  const cancelled: string[] = []
  outcomes.forEach((outcome, i) => {
    const ticketId = tickets[i]!
    if (outcome.status === 'fulfilled') {
      settled.push(ticketId)
      if (outcome.value) cancelled.push(ticketId)
    } else {
      log('warn', 'stale party ticket not cancelled', {
        ...context,
        partyId,
        ticketId,
        ...errorFields(outcome.reason),
      })
    }
  })
  try {
    await forgetPartyTickets(env, partyId, settled, cancelled)
  } catch (err) {
    // Harmless: cancelling a settled ticket again changes nothing.
    log('warn', 'party tickets not forgotten', { ...context, partyId, ...errorFields(err) })
  }
  return cancelled
}

/** Stale tickets the cron retries per run; more wait for the next minute. */
const RETRY_BATCH = 100

/**
 * For the cron: cancels tickets still noted for a party whose members changed after the note
 * (their pool could not be reached at the change), so a party's old roster never stays queued
 * until the next change. Returns how many were cancelled.
 */
export async function retryStalePartyTickets(env: Env): Promise<number> {
  const stale = await stalePartyTickets(env, RETRY_BATCH)
  const byParty = new Map<string, string[]>()
  for (const { partyId, ticketId } of stale) {
    const tickets = byParty.get(partyId) ?? []
    tickets.push(ticketId)
    byParty.set(partyId, tickets)
  }
  let cancelled = 0
  for (const [partyId, tickets] of byParty) {
    cancelled += (await cancelStaleTickets(env, partyId, tickets, { by: 'cron' })).length
  }
  return cancelled
}
