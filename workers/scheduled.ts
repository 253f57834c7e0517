import { previousBoundary, parseSchedule } from './core/cycle.ts'
import type { Env } from './env.ts'
import {
  advanceLeaderboardVersion,
  boardsArchiving,
  boardsChangedSince,
  markConfigPushed,
  randomUnpushedBoard,
  scheduledBoards,
  unpushedConfigs,
} from './leaderboards/config-store.ts'
import {
  ARCHIVE_SPREAD_MS,
  archiveDelayMs,
  LATE_ARCHIVE_SPREAD_MS,
  type LeaderboardConfig,
} from './core/leaderboard.ts'
import { boardStub } from './leaderboards/stub.ts'
import { errorFields, log, configureLog } from './lib/log.ts'
import { counter } from './lib/metrics.ts'
import { within } from './lib/within.ts'
import { pruneIdleClaims } from './matchmaking/claims.ts'
import { pruneSessionLogs } from './sessions/log-retention.ts'
import {
  advanceQueueVersion,
  markQueuePushed,
  randomUnpushedQueue,
  unpushedQueues,
  type QueueConfig,
} from './matchmaking/config.ts'
import { poolStub } from './matchmaking/stub.ts'
import { retryStalePartyTickets } from './parties/stale-tickets.ts'
import { OPEN_CONNECTIONS, settleAtMost } from './lib/settle-at-most.ts'

const cronRuns = counter(
  'nexus_cron_boards_poked_total',
  'Boards whose cycle the cron rolled over or whose archive it resumed: their own alarm had not',
  { unlabelled: true },
)

const PAGE = 200
/**
 * Unpushed board configurations a page reads: each carries its reward tiers (up to about 55 KB,
 * more once escaped for the answer), and 200 of those would pass the 10 MB Neon answers to the
 * HTTP driver, failing that first page, and so every lost push, on every run.
 */
const CONFIG_PAGE = 20
/**
 * How far back a run looks for boundaries when it cannot read the trigger's schedule: a run by
 * hand, or a trigger whose day fields are not `*`.
 */
const DEFAULT_LOOKBACK_MS = 10 * 60 * 1000

/**
 * How far back a run at `scheduledTime` looks for boundaries a board's alarm may have missed: to
 * the trigger's run two before this one, by the trigger's own schedule (`cron`, as Cloudflare
 * gives it to the handler). Each boundary is then asked about by two runs, the second a chance
 * for a board that did not answer the first, however often the cron runs: a fixed 10 minutes
 * woke every board ten times after each of its boundaries (a daily board sharing midnight with
 * thousands of others, ten runs' worth of calls), and missed boundaries under a sparser cron.
 * Read only from triggers that run every day (day of month, month and day of week all `*`):
 * Cloudflare numbers the days of the week from Sunday = 1, as our board schedules do not, and
 * takes forms (`L`, `#`) they refuse, so a weekday trigger read our way would skip days.
 */
export function lookbackMs(cron: string | undefined, scheduledTime: number): number {
  const fields = cron?.trim().split(/\s+/) ?? []
  const daily = fields.length === 5 && fields.slice(2).every((f) => f === '*')
  const schedule = daily ? parseSchedule({ cron }) : null
  if (schedule === null || 'error' in schedule) return DEFAULT_LOOKBACK_MS
  let run: number | null = scheduledTime
  // This run (at or just before its scheduled time), then the two before it.
  for (let back = 0; back < 3 && run !== null; back++) {
    run = previousBoundary(schedule, back === 0 ? run : run - 1)
  }
  return run === null ? DEFAULT_LOOKBACK_MS : scheduledTime - run
}

/**
 * The every-minute cron: a safety net for the boards' own alarms. It walks every scheduled board
 * in pages and pokes those whose cycle boundary passed recently, so a board whose alarm was lost
 * still closes on time. Poking is idempotent: a board that already rolled over does nothing.
 * Then it pushes board and queue configurations whose push a PUT lost, cancels party tickets a
 * membership change could not reach (`retryStalePartyTickets`), prunes idle claims on queues
 * (`pruneIdleClaims`) and, when SESSION_LOG_RETENTION_DAYS is set, old games' logs
 * (`pruneSessionLogs`).
 */
export async function runScheduled(
  env: Env,
  now: number,
  cron?: string,
): Promise<{
  poked: number
  nudged: number
  configsPushed: number
  staleTicketsCancelled: number
  claimsPruned: number
  sessionLogsPruned: number
}> {
  configureLog(env)
  // Each job on its own: one failing (Neon down, say) does not skip the others.
  const lookback = lookbackMs(cron, now)
  const { poked, nudged } = await job('boards not walked', () => pokeBoards(env, now, lookback), {
    poked: 0,
    nudged: 0,
  })
  const configsPushed =
    (await job('lost config pushes not retried', () => pushLostConfigs(env), 0)) +
    (await job('lost queue config pushes not retried', () => pushLostQueueConfigs(env), 0))
  const staleTicketsCancelled = await job(
    'stale party tickets not retried',
    () => retryStalePartyTickets(env),
    0,
  )
  const claimsPruned = await job('idle queue claims not pruned', () => pruneIdleClaims(env), 0)
  const { rows: sessionLogsPruned } = await job(
    'old session logs not pruned',
    () => pruneSessionLogs(env),
    { sessions: 0, rows: 0, passedOver: 0 },
  )
  const done = {
    poked,
    nudged,
    configsPushed,
    staleTicketsCancelled,
    claimsPruned,
    sessionLogsPruned,
  }
  // A run that had work to do says so; the quiet ones (most minutes) only at debug. Boards asked
  // whether a recent boundary needs them are not work: with cycles of 2 minutes or less there
  // are some every minute, and their own alarms have done it (`nudged` counts those that had not).
  const worked =
    nudged + configsPushed + staleTicketsCancelled + claimsPruned + sessionLogsPruned > 0
  log(worked ? 'info' : 'debug', 'cron run', done)
  return done
}

/** Runs one of the cron's jobs; a failure is logged and counts as nothing done (`none`). */
async function job<T>(failure: string, run: () => Promise<T>, none: T): Promise<T> {
  try {
    return await run()
  } catch (err) {
    log('error', `cron: ${failure}`, errorFields(err))
    return none
  }
}

/**
 * A board that does not answer within this (stuck on a slow Neon at its wake, say) is left for
 * the next run, so it cannot hold up the other boards and the cron's later jobs.
 */
const BOARD_CALL_MS = 20_000

/**
 * Boards whose last configuration push was lost get it again (the board ignores an older one),
 * a page at a time with the page's pushes side by side, from a board drawn at random round to it
 * again, until every one was tried or the run's time or count (MAX_CONFIG_PUSHES) for them is spent (a push begun by then may
 * run on, BOARD_CALL_MS a call): boards that fail for good, whichever their ids, do not keep the
 * others from being retried.
 */
export async function pushLostConfigs(
  env: Env,
  opts: { budgetMs?: number; start?: string | null; maxPushes?: number } = {},
): Promise<number> {
  const deadline = Date.now() + (opts.budgetMs ?? PUSH_BUDGET_MS)
  const maxPushes = opts.maxPushes ?? MAX_CONFIG_PUSHES
  let tried = 0
  let pushed = 0
  await forEachPageRound(
    unpushedConfigs,
    env,
    CONFIG_PAGE,
    opts.start !== undefined ? opts.start : await randomUnpushedBoard(env),
    async (boards) => {
      // At most a connection's worth at once: each push ends in a Neon write.
      const results = await settleAtMost(boards, OPEN_CONNECTIONS, async (b) => {
        if (Date.now() > deadline || tried >= maxPushes) throw new Error(PAST_BUDGET)
        tried++
        const push = async (version: number) => {
          const answer = await within(
            boardStub(env, b.id).configure(
              b.id,
              b.config as LeaderboardConfig,
              version,
              Number(b.lastCycle),
            ),
            BOARD_CALL_MS,
            'config push',
          )
          // A deletion not settled yet: the push is tried again at the next run.
          if ('problem' in answer) throw new Error(answer.detail)
          return answer
        }
        let version = b.version
        const answer = await push(version)
        if (answer.inForce === false) {
          // The board runs another configuration at this version or a later one: Neon's count
          // went back (a restore), as a PUT finds it, and the push takes a version past the
          // board's. Unless a PUT saved another meanwhile: that PUT pushes its own.
          const advanced = await advanceLeaderboardVersion(
            env,
            b.id,
            version,
            Math.max(answer.configVersion ?? version, version) + 1,
          )
          if (advanced === null) return
          version = advanced
          await push(version)
        }
        await markConfigPushed(env, b.id, version)
      })
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') pushed++
        else if (!isPastBudget(r.reason))
          log('warn', 'config push retry failed', {
            board: boards[i]!.id,
            ...errorFields(r.reason),
          })
      })
      return Date.now() > deadline || tried >= maxPushes ? 'stop' : undefined
    },
  )
  return pushed
}

/**
 * Lost pushes a run tries at most: boards (each push up to four subrequests: two calls on the
 * board, two Neon queries), and queues (a call on each region's pool, up to 16, and Neon). With
 * the boards' ticks (MAX_BOARD_TICKS: 4,000), these (2,000 and 1,700) and the stale party
 * tickets' (RETRY_MAX_CALLS: 1,500) a run stays under its 10,000 subrequests, with some hundreds
 * left for its pages and prunes: after a deploy lost thousands of pushes, every minute's run
 * takes the next ones.
 */
const MAX_CONFIG_PUSHES = 500
const MAX_QUEUE_PUSHES = 100

/**
 * How long a run spends on each kind of lost push: a push waits up to BOARD_CALL_MS for its
 * object, six at a time, so a page of boards or pools that hang would otherwise hold the run
 * (and its later jobs) for minutes. Those left are the next run's.
 */
const PUSH_BUDGET_MS = 20_000
const PAST_BUDGET = 'left for the next run: past the run’s time or count for it'
const isPastBudget = (err: unknown) => err instanceof Error && err.message === PAST_BUDGET

/**
 * Queue regions whose pool has not acknowledged the queue's current version get it again (a pool
 * ignores a version it has). A region taken out of its queue needs this most: it gets no joins to
 * learn of its removal from, so its waiting tickets would otherwise hold their players until they
 * expire. A deleted queue's regions not yet told of the deletion are told (`retire`), so that each
 * pool closes its sockets and deletes its storage in time. As pushLostConfigs, from a queue drawn
 * at random, within the run's time for them. Returns the pushes acknowledged.
 */
export async function pushLostQueueConfigs(
  env: Env,
  opts: { budgetMs?: number; maxQueues?: number } = {},
): Promise<number> {
  const deadline = Date.now() + (opts.budgetMs ?? PUSH_BUDGET_MS)
  const maxQueues = opts.maxQueues ?? MAX_QUEUE_PUSHES
  let tried = 0
  let pushed = 0
  await forEachPageRound(
    unpushedQueues,
    env,
    PAGE,
    await randomUnpushedQueue(env),
    async (page) => {
      // At most a connection's worth at once: each push ends in Neon writes.
      const results = await settleAtMost(page, OPEN_CONNECTIONS, (q) => {
        if (Date.now() > deadline || tried >= maxQueues) {
          return Promise.reject(new Error(PAST_BUDGET))
        }
        tried++
        return pushOwed(env, q)
      })
      results.forEach((r, i) => {
        if (r.status === 'fulfilled') pushed += r.value
        else if (!isPastBudget(r.reason))
          log('warn', 'queue config pushes not noted', {
            queue: page[i]!.id,
            ...errorFields(r.reason),
          })
      })
      return Date.now() > deadline || tried >= maxQueues ? 'stop' : undefined
    },
  )
  return pushed
}

/**
 * Pushes one queue's current version to the regions owed it (a deleted queue's: its deletion),
 * and notes those that took it; how many did.
 */
export async function pushOwed(
  env: Env,
  q: Awaited<ReturnType<typeof unpushedQueues>>[number],
): Promise<number> {
  // A pool's answer to a push says whether the configuration is in force. A deletion's, applied
  // or not, is taken as told: a pool that did not apply it holds a later version than the
  // deletion's (the queue made again, or Neon's count gone back), which is what Neon owes it now.
  const call = (region: string): Promise<{ version?: number; inForce?: boolean }> =>
    q.deleted
      ? poolStub(env, q.id, region).retire(q.version)
      : poolStub(env, q.id, region).configure(q.id, region, q.config as QueueConfig, q.version)
  const outcomes = await Promise.allSettled(
    q.regions.map((region) =>
      within(call(region), BOARD_CALL_MS, q.deleted ? 'queue deletion retry' : 'queue config push'),
    ),
  )
  // A pool running another configuration at this version or a later one: Neon's count went back
  // (a restore), as a PUT finds it. The queue takes a version past the pools', owed to every
  // region, which the next run pushes (unless a PUT saved another meanwhile).
  const overruled = outcomes.flatMap((o) =>
    o.status === 'fulfilled' && o.value.inForce === false ? [o.value.version ?? 0] : [],
  )
  if (overruled.length > 0) {
    await advanceQueueVersion(env, q.id, q.version, Math.max(q.version, ...overruled) + 1)
    return 0
  }
  const acknowledged = q.regions.filter((_, i) => outcomes[i]!.status === 'fulfilled')
  const missed = q.regions.filter((_, i) => outcomes[i]!.status === 'rejected')
  const firstFailure = outcomes.find((o) => o.status === 'rejected')
  if (firstFailure) {
    log('warn', 'queue config push retry failed', {
      queue: q.id,
      regions: missed,
      ...errorFields(firstFailure.reason),
    })
  }
  await markQueuePushed(env, q.id, q.version, acknowledged)
  return acknowledged.length
}

/**
 * Pokes the boards whose cycle boundary passed within `lookback`, then those whose configuration
 * changed lately (a schedule changed after a freeze), then those with an archive begun in Neon
 * and not finished (a close long past its boundary, or of a board without a schedule, whose alarm
 * was lost would otherwise wait for the next boundary, if any); returns how many answered, and
 * how many of those had something to do that their own alarm had not done. The boards due take
 * at most the run's calls less `reservedTicks` (a twentieth: 200), so that a run with thousands
 * due (daily boards at midnight) still looks after the others: the runs a changed board is
 * asked about in are those very runs.
 */
export async function pokeBoards(
  env: Env,
  now: number,
  lookback: number,
  opts: { maxTicks?: number; reservedTicks?: number; order?: (ids: string[]) => string[] } = {},
): Promise<{ poked: number; nudged: number }> {
  const poked = new Set<string>()
  let nudged = 0
  const maxTicks = opts.maxTicks ?? MAX_BOARD_TICKS
  const reserved = Math.min(opts.reservedTicks ?? Math.floor(maxTicks / 20), maxTicks)
  const ticks: Ticks = { left: maxTicks - reserved, skipped: new Set() }
  const due: string[] = []
  await forEachPage(scheduledBoards, env, PAGE, async (boards) => {
    for (const b of boards) {
      const schedule = parseSchedule(b.cycle)
      if ('error' in schedule) continue
      const boundary = previousBoundary(schedule, now)
      if (boundary === null) continue
      // Its close starts archiving up to archiveDelayMs after the boundary (a freeze this run
      // makes, up to LATE_ARCHIVE_SPREAD_MS after it), and nothing in Neon shows that close until
      // its first page: the runs that ask reach past that start, so an alarm lost for it is set
      // again by them, not by the board's next boundary a week later.
      const start = previousBoundary(schedule, boundary - 1)
      const delay =
        start === null
          ? ARCHIVE_SPREAD_MS
          : archiveDelayMs(b.id, ARCHIVE_SPREAD_MS, boundary - start)
      if (now - boundary < lookback + delay + LATE_ARCHIVE_SPREAD_MS) due.push(b.id)
    }
  })
  // In a random order: with more boards due than a run may call, each run leaves out others,
  // not always the same ones (those last in id order, at every boundary).
  const order = (opts.order ?? shuffled)(due)
  for (let i = 0; i < order.length; i += PAGE) {
    nudged += await tickBoards(env, order.slice(i, i + PAGE), poked, ticks)
  }
  ticks.left += reserved
  /** Ticks the boards of a page not poked yet this run; stops the walk once out of calls. */
  const tickNew = async (boards: { id: string }[]) => {
    nudged += await tickBoards(
      env,
      boards.map((b) => b.id).filter((id) => !poked.has(id)),
      poked,
      ticks,
    )
    return ticks.left <= 0 ? ('stop' as const) : undefined
  }
  // A schedule changed since a boundary the runs above would have asked about (to none, or to a
  // week): the cycle that change froze under the old one starts its archive within the spread,
  // and until its first page nothing in Neon shows it. Asked about as long as that boundary is.
  // First of the two walks: there are few such boards, and only these runs look for them.
  const changedSince = now - (lookback + ARCHIVE_SPREAD_MS + LATE_ARCHIVE_SPREAD_MS)
  if (ticks.left > 0) {
    await forEachPage(
      (e, after, limit) => boardsChangedSince(e, changedSince, after, limit),
      env,
      PAGE,
      tickNew,
    )
  }
  if (ticks.left > 0) await forEachPage(boardsArchiving, env, PAGE, tickNew)
  if (ticks.skipped.size > 0) {
    log('warn', 'cron: boards due not called, past the run’s calls to boards', {
      skipped: ticks.skipped.size,
      limit: maxTicks - reserved,
    })
  }
  return { poked: poked.size, nudged }
}

/** `ids` in a random order (Fisher–Yates), in place. */
function shuffled(ids: string[]): string[] {
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[ids[i], ids[j]] = [ids[j]!, ids[i]!]
  }
  return ids
}

/**
 * forEachPage from the row `start` (inclusive, at the end) round to it again: from the row after
 * it to the last, then from the first to it, so that rows which fail at every run (objects that
 * hang, within a run's time for them) are not always the first, and the rest always cut off.
 * The second leg stops at `start` itself, compared for equality (the database's collation, not
 * JavaScript's, orders ids); a `start` gone meanwhile makes it read on to the end, where the rows
 * the first leg settled are no longer read. `start` null: once from the first row.
 */
async function forEachPageRound<T extends { id: string }>(
  read: (env: Env, after: string, limit: number) => Promise<T[]>,
  env: Env,
  size: number,
  start: string | null,
  each: (page: T[]) => Promise<void | 'stop'>,
): Promise<void> {
  if (start === null) return forEachPage(read, env, size, each)
  let stopped = false
  await forEachPage(
    read,
    env,
    size,
    async (page) => {
      const answer = await each(page)
      if (answer === 'stop') stopped = true
      return answer
    },
    start,
  )
  if (stopped) return
  await forEachPage(read, env, size, async (page) => {
    const at = page.findIndex((r) => r.id === start)
    const answer = await each(at === -1 ? page : page.slice(0, at + 1))
    return at !== -1 || answer === 'stop' ? 'stop' : undefined
  })
}

/**
 * Runs `each` on every page of `read`'s rows in id order after `from` (keyset paging, PAGE rows
 * at a time), one page after another, until a page is short or `each` says `stop`.
 */
async function forEachPage<T extends { id: string }>(
  read: (env: Env, after: string, limit: number) => Promise<T[]>,
  env: Env,
  size: number,
  each: (page: T[]) => Promise<void | 'stop'>,
  from = '',
): Promise<void> {
  for (let after = from; ;) {
    const page = await read(env, after, size)
    if ((await each(page)) === 'stop') return
    if (page.length < size) return
    after = page[page.length - 1]!.id
  }
}

/**
 * Calls to boards one run makes at most: a run may make 10,000 subrequests (Workers Paid), and
 * its later jobs (pushes, party tickets, prunes) need theirs. Every board is due in three to five
 * runs after its boundary, so thousands sharing one (daily boards at midnight) are still each
 * called, by one run or another.
 */
const MAX_BOARD_TICKS = 4_000

/** A run's calls to boards: how many are left, and the boards due it did not call. */
interface Ticks {
  left: number
  skipped: Set<string>
}

/**
 * Ticks boards side by side, as many as `ticks` has left; adds those that answered to `poked`;
 * returns how many were nudged.
 */
async function tickBoards(
  env: Env,
  all: string[],
  poked: Set<string>,
  ticks: Ticks,
): Promise<number> {
  const ids = all.slice(0, Math.max(ticks.left, 0))
  ticks.left -= ids.length
  for (const id of all.slice(ids.length)) ticks.skipped.add(id)
  const results = await Promise.allSettled(
    ids.map((id) => within(boardStub(env, id).tick(id), BOARD_CALL_MS, 'board tick')),
  )
  let nudged = 0
  results.forEach((r, i) => {
    if (r.status === 'rejected') {
      log('error', 'cron tick failed', { board: ids[i]!, ...errorFields(r.reason) })
      return
    }
    poked.add(ids[i]!)
    // Only a board that had something to do its own alarm should have done: a cycle to roll
    // over a minute after its boundary (the cron may just come first), or an archive left with
    // no alarm to carry it on (one merely in progress is not).
    if (r.value.overdue || r.value.stalled) nudged++
  })
  cronRuns.inc({}, nudged)
  return nudged
}
