import type { Env } from '../env.ts'
import { errorFields, log } from '../lib/log.ts'
import { within } from '../lib/within.ts'
import { cancelPartyTicket } from '../matchmaking/stub.ts'
import { forgetPartyTickets, stalePartyTickets } from './store.ts'

/**
 * A pool that does not answer a cancel within this is taken as unreachable: the note stays for
 * the cron's next run, and neither a membership change's answer nor the cron waits longer.
 */
const POOL_CALL_MS = 10_000

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
  const outcomes = await Promise.allSettled(
    tickets.map((t) => within(cancelPartyTicket(env, t), POOL_CALL_MS, 'party ticket cancel')),
  )
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

/** Stale notes the cron reads at a time; it walks all of them on every run. */
const RETRY_PAGE = 100

/**
 * For the cron: cancels tickets still noted for a party whose members changed after the note
 * (their pool could not be reached at the change), so a party's old roster never stays queued
 * until the next change. Every stale note is tried on every run, a page at a time with the
 * page's parties side by side: notes whose pool stays down must not keep the ones after them
 * from being retried. Returns how many were cancelled.
 */
export async function retryStalePartyTickets(env: Env): Promise<number> {
  let cancelled = 0
  for (let after: { partyId: string; ticketId: string } | null = null; ;) {
    const page = await stalePartyTickets(env, after, RETRY_PAGE)
    const byParty = new Map<string, string[]>()
    for (const { partyId, ticketId } of page) {
      const tickets = byParty.get(partyId) ?? []
      tickets.push(ticketId)
      byParty.set(partyId, tickets)
    }
    const done = await Promise.all(
      [...byParty].map(([partyId, tickets]) =>
        cancelStaleTickets(env, partyId, tickets, { by: 'cron' }),
      ),
    )
    for (const d of done) cancelled += d.length
    if (page.length < RETRY_PAGE) return cancelled
    after = page[page.length - 1]!
  }
}
