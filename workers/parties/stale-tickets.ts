import type { DbEnv } from '../db/client.ts'
import type { Env } from '../env.ts'
import { errorFields, log } from '../lib/log.ts'
import { within } from '../lib/within.ts'
import { cancelPartyTicket, parseTicketId } from '../matchmaking/stub.ts'
import { forgetPartyTickets, pruneOldPartyTickets, stalePartyTickets } from './store.ts'
import { OPEN_CONNECTIONS, settleAtMost } from '../lib/settle-at-most.ts'

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
  unreachable?: Set<string>,
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
      unreachable?.add(poolKeyOf(ticketId))
      log('warn', 'stale party ticket not cancelled', {
        ...context,
        partyId,
        ticketId,
        ...errorFields(outcome.reason),
      })
    }
  })
  await forgetSettledTickets(env, partyId, settled, cancelled, context)
  return cancelled
}

/**
 * Forgets the notes of tickets whose pools have settled them (`forgetPartyTickets`), waiting at
 * most `timeoutMs` when given. A failure is logged and harmless: the notes stay, and cancelling a
 * settled ticket again (the cron, the next change) changes nothing before they are forgotten.
 */
export async function forgetSettledTickets(
  env: DbEnv,
  partyId: string,
  settled: readonly string[],
  cancelled: readonly string[],
  context: Record<string, unknown> = {},
  timeoutMs?: number,
): Promise<void> {
  if (settled.length === 0) return
  try {
    const forgetting = forgetPartyTickets(env, partyId, settled, cancelled)
    await (timeoutMs === undefined
      ? forgetting
      : within(forgetting, timeoutMs, 'party tickets forgotten'))
  } catch (err) {
    log('warn', 'party tickets not forgotten', { ...context, partyId, ...errorFields(err) })
  }
}

/** The pool a ticket id names (`queue:region`), or the id itself when it names none. */
function poolKeyOf(ticketId: string): string {
  const pool = parseTicketId(ticketId)
  return pool ? `${pool.queue}:${pool.region}` : ticketId
}

/** Stale notes the cron reads at a time. */
const RETRY_PAGE = 100
/**
 * How long one cron run spends on them: with pools down, each page can take POOL_CALL_MS, and a
 * run must not still be at it when the next minute's begins.
 */
const RETRY_BUDGET_MS = 40_000
/**
 * Subrequests one cron run spends on them (a pool call per ticket, a Neon write per party, a read
 * per page): what the run's other jobs leave of its 10,000 (workers/scheduled.ts), since the
 * time budget alone let a backlog of quick cancels take thousands and starve the jobs after it.
 */
const RETRY_MAX_CALLS = 1_500

type NoteKey = { partyId: string; ticketId: string }

/**
 * For the cron: cancels tickets still noted for a party whose members changed after the note
 * (their pool could not be reached at the change), so a party's old roster never stays queued
 * until the next change. A run walks the stale notes a page at a time, each page's parties side
 * by side, from a random party round to it again, until it has seen them all or spent
 * RETRY_BUDGET_MS or RETRY_MAX_CALLS (no party's cancel begins after either). A pool that fails
 * a cancel is not asked again in the run: notes whose pool stays down (or hangs, POOL_CALL_MS a
 * call) hold up no others, within a run or across runs. Returns how many were cancelled.
 */
export async function retryStalePartyTickets(
  env: Env,
  opts: { budgetMs?: number; maxCalls?: number; from?: string } = {},
): Promise<number> {
  const deadline = Date.now() + (opts.budgetMs ?? RETRY_BUDGET_MS)
  const calls = { left: (opts.maxCalls ?? RETRY_MAX_CALLS) - 1 }
  const from = opts.from ?? crypto.randomUUID()
  await pruneOldPartyTickets(env)
  let cancelled = 0
  // Pools that failed a cancel in this run: not asked again in it (each would wait POOL_CALL_MS
  // for a pool that hangs, party after party); their notes wait for the next run.
  const unreachable = new Set<string>()
  // Two legs: from `from` to the last note, then from the first note up to `from`.
  for (const leg of [{ partyId: from, ticketId: '' }, null]) {
    for (let after: NoteKey | null = leg; ;) {
      if (Date.now() > deadline || calls.left <= 0) return cancelled
      calls.left--
      const page = await stalePartyTickets(env, after, RETRY_PAGE)
      const mine = leg === null ? page.filter((n) => n.partyId < from) : page
      cancelled += await cancelPage(env, mine, deadline, calls, unreachable)
      if (page.length < RETRY_PAGE || mine.length < page.length) break
      after = page[page.length - 1]!
    }
  }
  return cancelled
}

/**
 * Cancels a page of stale notes, its parties side by side; returns how many were cancelled.
 * Parties not begun by `deadline` or within the calls left, and tickets of pools in
 * `unreachable`, are left noted.
 */
async function cancelPage(
  env: Env,
  notes: NoteKey[],
  deadline: number,
  calls: { left: number },
  unreachable: Set<string>,
): Promise<number> {
  const byParty = new Map<string, string[]>()
  for (const { partyId, ticketId } of notes) {
    const tickets = byParty.get(partyId) ?? []
    tickets.push(ticketId)
    byParty.set(partyId, tickets)
  }
  // At most a connection's worth at once: each party's cancel ends in a Neon write.
  const done = await settleAtMost([...byParty], OPEN_CONNECTIONS, ([partyId, tickets]) => {
    if (Date.now() > deadline) return Promise.resolve([])
    const reachable = tickets.filter((t) => !unreachable.has(poolKeyOf(t)))
    // A call on each ticket's pool, and the Neon write that forgets the notes.
    const cost = reachable.length === 0 ? 0 : reachable.length + 1
    if (calls.left < cost) return Promise.resolve([])
    calls.left -= cost
    return cancelStaleTickets(env, partyId, reachable, { by: 'cron' }, unreachable)
  })
  const failed = done.find((d) => d.status === 'rejected')
  if (failed) throw failed.reason
  return done.reduce((n, d) => n + (d.status === 'fulfilled' ? d.value.length : 0), 0)
}
