import { Hono, type Context } from 'hono'
import type { AppEnv } from '../app-env.ts'
import { DASHBOARD_CSS } from '../dashboard/styles.ts'
import { DASHBOARD_HTML } from '../dashboard/page.ts'
import { DASHBOARD_JS } from '../dashboard/app.ts'
import { summarizeMetrics } from '../dashboard/metrics.ts'
import { getSql } from '../db/client.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { playerNames } from '../leaderboards/names.ts'
import { errorFields, errorMessage, log } from '../lib/log.ts'
import { renderFamilies } from '../lib/metric-families.ts'
import { clusterMetrics } from '../lib/metrics-flush.ts'
import { metricsSource } from '../lib/metrics.ts'
import { ApiError } from '../lib/problem.ts'
import type { QueueConfig } from '../matchmaking/config.ts'
import { poolStub } from '../matchmaking/stub.ts'
import { queueWideWaits, waitPercentiles } from '../matchmaking/wait-stats.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { HSTS, PAGE_HEADERS } from '../lib/page-headers.ts'
import { isLoopbackHost } from '../lib/auth.ts'
import { within } from '../lib/within.ts'

/**
 * The operator dashboard. `/dashboard` serves a page that holds no data: it asks for the admin
 * key, keeps it in `sessionStorage` (gone with the tab) and reads `/dashboard/api/*` with
 * `Authorization: Bearer`, which only the admin key opens. Scripts and styles are same-origin
 * files, so the page runs under a CSP that allows nothing else.
 */
export const dashboard = new Hono<AppEnv>()

/** Boards and queues shown in the overview (each costs a Durable Object call per refresh). */
const MAX_LISTED = 50
const MAX_LIVE_SESSIONS = 50
/**
 * A paid cycle's players are counted up to this many: the detail is read every 5 s while shown,
 * and a board paying a hundred thousand ranks a cycle would read that many rows for each of
 * its last 10 paid cycles each time (its ranks come from two probes of the rank index).
 */
const MAX_COUNTED_REWARDS = 1_000

/**
 * The rewards a board (the SQL expression `board`) paid in the last day and not voided, counted
 * up to `cap` (a SQL expression): the count stops reading there. Exported for the test of that.
 */
export const REWARDS_OF_LAST_DAY = (board: string, cap: string) =>
  `(select count(*)::int from (select 1 from rewards r
      where r.leaderboard_id = ${board} and r.created_at > now() - interval '1 day'
        and r.voided_at is null limit ${cap}) paid)`

/**
 * The page where the admin key is typed is served over HTTPS only, but on this machine: a custom
 * domain does not make browsers use HTTPS (a bookmark or a typed address may be plain HTTP), and
 * the key the page sends to the API would then travel in clear.
 */
dashboard.get('/', (c) => {
  const url = new URL(c.req.url)
  if (isLoopbackHost(url.hostname)) return c.html(DASHBOARD_HTML, 200, PAGE_HEADERS)
  if (url.protocol === 'http:') {
    url.protocol = 'https:'
    return c.redirect(url.toString(), 308)
  }
  return c.html(DASHBOARD_HTML, 200, { ...PAGE_HEADERS, ...HSTS })
})
dashboard.get('/app.js', (c) =>
  c.body(DASHBOARD_JS, 200, {
    ...PAGE_HEADERS,
    'content-type': 'text/javascript; charset=utf-8',
  }),
)
dashboard.get('/app.css', (c) =>
  c.body(DASHBOARD_CSS, 200, { ...PAGE_HEADERS, 'content-type': 'text/css; charset=utf-8' }),
)

dashboard.use('/api/*', requireAdmin(), async function noStore(c, next) {
  await next()
  c.header('cache-control', 'no-store')
})

/**
 * How long the overview waits for one board or pool: one stuck (a slow Neon at its wake) would
 * otherwise hold the whole page, every refresh, with nothing on it to say so.
 */
const OBJECT_CALL_MS = 3_000
/** The lists as a whole: Neon's queries (8 s at most each, together) and then their objects'. */
const LISTS_MS = 15_000

/**
 * One failing or slow board or pool must not blank or hold the whole page: it shows as an error
 * row.
 */
async function settle<T>(
  what: string,
  run: () => Promise<T>,
  ms = OBJECT_CALL_MS,
): Promise<T | { error: string }> {
  try {
    return await within(run(), ms, what)
  } catch (err) {
    log('warn', 'dashboard read failed', { what, ...errorFields(err) })
    return { error: errorMessage(err) }
  }
}

dashboard.get('/api/overview', async (c) => {
  // The traffic figures come from the metrics hub, not Neon: a Neon outage, when an operator
  // most wants them, leaves them on the page, with the lists said to be unavailable.
  const [listed, metrics] = await Promise.all([
    settle('overview lists', () => listings(c), LISTS_MS),
    clusterMetrics(c.env),
  ])
  const lists = 'error' in listed ? null : listed
  return c.json({
    now: Date.now(),
    // Why the lists are missing (Neon unreachable, most likely), or null.
    listsError: 'error' in listed ? listed.error : null,
    ...(lists ?? {
      totals: null,
      boards: [],
      queues: [],
      sessions: { live: null, recent: [] },
    }),
    metrics: summarizeMetrics(renderFamilies(metrics.families)),
    metricsScope: metrics.scope,
    // Which isolate's totals these are, when they are one isolate's: the next overview may come
    // from another, whose totals are not the same count, and no rate spans the two.
    metricsSource: metrics.scope === 'isolate' ? metricsSource() : null,
  })
})

/**
 * The overview's boards, queues and live sessions: the latest changed MAX_LISTED of each, with
 * their objects' figures, and how many there are in all.
 */
async function listings(c: Context<AppEnv>) {
  const sql = getSql(c.env)
  const [boards, queues, live, rewardTotals, counts] = await Promise.all([
    // The latest first, then their names: `config->>'name'` in the outer query reads the
    // configurations of the boards listed only, not of every board before the sort.
    sql.query(
      `select id, config->>'name' as name, version
         from (select id, config, version, updated_at from leaderboards
                where deleted_at is null order by updated_at desc limit $1) latest
        order by updated_at desc`,
      [MAX_LISTED],
    ) as unknown as Promise<{ id: string; name: string | null; version: number }[]>,
    sql.query(
      `select id, config, version from queues where deleted_at is null
        order by updated_at desc limit $1`,
      [MAX_LISTED],
    ) as unknown as Promise<{ id: string; config: QueueConfig; version: number }[]>,
    sql.query(
      `select id, queue, region, rules, roster, extract(epoch from created_at) * 1000 as created_ms
         from game_sessions where status = 'live' order by created_at desc limit $1`,
      [MAX_LIVE_SESSIONS],
    ) as unknown as Promise<
      {
        id: string
        queue: string | null
        region: string | null
        rules: string
        roster: { playerId: string; team: number }[]
        created_ms: string
      }[]
    >,
    // The last day's only: a board's whole history grows for good (a `1m` board pays at every
    // close), and this runs every 5 s while a dashboard is open. Counted up to
    // MAX_COUNTED_REWARDS a board, as the board's page does: an hourly board paying 10,000 ranks
    // would read 240,000 rows a refresh.
    sql.query(
      `select b.id as leaderboard_id, ${REWARDS_OF_LAST_DAY('b.id', '$2')} as rewards
         from (select id from leaderboards where deleted_at is null
                order by updated_at desc limit $1) b`,
      [MAX_LISTED, MAX_COUNTED_REWARDS + 1],
    ) as unknown as Promise<{ leaderboard_id: string; rewards: number }[]>,
    // In all, not only those listed: the headline counts these.
    sql.query(
      `select (select count(*)::int from leaderboards where deleted_at is null) as boards,
              (select count(*)::int from queues where deleted_at is null) as queues,
              (select count(*)::int from game_sessions where status = 'live') as live`,
    ) as unknown as Promise<{ boards: number; queues: number; live: number }[]>,
  ])
  const paid = new Map(rewardTotals.map((r) => [r.leaderboard_id, r]))

  const boardRows = await Promise.all(
    boards.map(async (b) => {
      const info = await settle(`board ${b.id}`, () => operatorInfo(c, b.id))
      return {
        id: b.id,
        name: b.name,
        version: b.version,
        cycle: 'cycle' in info ? info.cycle : null,
        schedule: 'config' in info ? info.config.cycle : null,
        paused: 'config' in info && info.config.paused === true,
        // `error`: the call failed; `detail`: the board could not read its configuration.
        error: 'error' in info ? info.error : 'ok' in info ? info.detail : null,
        // The oldest close whose archive has not finished, with its failed attempts, or null.
        archiving: 'unfinishedCloses' in info ? (info.unfinishedCloses[0] ?? null) : null,
        rewardsPaidLastDay: Math.min(paid.get(b.id)?.rewards ?? 0, MAX_COUNTED_REWARDS),
        // More were paid than counted: the count stops there (a floor).
        moreRewardsPaid: (paid.get(b.id)?.rewards ?? 0) > MAX_COUNTED_REWARDS,
      }
    }),
  )

  const queueRows = await Promise.all(
    queues.map(async (q) => {
      const regions = await Promise.all(
        q.config.regions.map(async (region) => {
          const s = await settle(`pool ${q.id}:${region}`, () =>
            poolStub(c.env, q.id, region).stats(region),
          )
          if ('error' in s) return { region, error: s.error }
          return {
            region,
            waitingTickets: s.waitingTickets,
            waitingPlayers: s.waitingPlayers,
            matchesPerMinute: s.matchesLastMinute,
            waitSeconds: waitPercentiles(s.waitSamplesMs),
            samples: s,
          }
        }),
      )
      const ok = regions.filter((r) => !('error' in r)) as Extract<
        (typeof regions)[number],
        { waitingTickets: number }
      >[]
      return {
        id: q.id,
        version: q.version,
        rules: q.config.rules,
        teams: q.config.teams,
        teamSize: q.config.teamSize,
        paused: q.config.paused === true,
        waitingTickets: ok.reduce((n, r) => n + r.waitingTickets, 0),
        waitingPlayers: ok.reduce((n, r) => n + r.waitingPlayers, 0),
        matchesPerMinute: ok.reduce((n, r) => n + r.matchesPerMinute, 0),
        waitSeconds: waitPercentiles(queueWideWaits(ok.map((r) => r.samples))),
        regions: regions.map((r) => {
          if ('error' in r) return r
          const { samples: _omitted, ...rest } = r
          return rest
        }),
      }
    }),
  )

  const totals = counts[0] ?? { boards: 0, queues: 0, live: 0 }
  return {
    totals: { boards: totals.boards, queues: totals.queues },
    boards: boardRows,
    queues: queueRows,
    sessions: {
      live: totals.live,
      recent: live.map((s) => ({
        id: s.id,
        queue: s.queue,
        region: s.region,
        rules: s.rules,
        players: s.roster.map((p) => p.playerId),
        createdAt: Number(s.created_ms),
      })),
    },
  }
}

/**
 * A board's `operatorInfo`; from a board object still on the version before (a gradual
 * deployment runs both, and that one has no such method), its `info` with no closes listed.
 */
async function operatorInfo(c: Context<AppEnv>, id: string) {
  const stub = boardStub(c.env, id)
  try {
    return await stub.operatorInfo(id)
  } catch (err) {
    if (!/operatorInfo/.test(errorMessage(err))) throw err
    const info = await stub.info(id)
    return 'ok' in info ? info : { ...info, unfinishedCloses: [] }
  }
}

dashboard.get('/api/boards/:id', async (c) => {
  const id = c.req.param('id')
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(id)) {
    throw new ApiError('validation', 'Not a leaderboard id', {
      errors: [{ path: 'id', message: 'letters, digits, "_", "." and "-"' }],
    })
  }
  const sql = getSql(c.env)
  const stub = boardStub(c.env, id)
  const [info, top, cycles, rewards] = await Promise.all([
    operatorInfo(c, id),
    stub.top(id, null, 10),
    sql.query(
      `select cycle, extract(epoch from starts_at) * 1000 as starts_ms, extract(epoch from ends_at) * 1000 as ends_ms,
              entries, archived_rows, extract(epoch from completed_at) * 1000 as completed_ms
         from leaderboard_cycles where leaderboard_id = $1 order by cycle desc limit 10`,
      [id],
    ) as unknown as Promise<
      {
        cycle: number
        starts_ms: string
        ends_ms: string
        entries: number
        archived_rows: number
        completed_ms: string | null
      }[]
    >,
    // The last 10 cycles that paid (rewards not voided since: a cycle whose every reward was
    // voided paid nobody), each found by one probe of the rewards index from the
    // newest back (a board that pays nobody costs one probe, not a walk of its cycles), then
    // each one's payouts: grouping all the board's rewards would read its whole history (a `1m`
    // board pays at every close) every time a dashboard shows the board.
    sql.query(
      `with recursive paid (cycle, n) as (
         (select cycle, 1 from rewards where leaderboard_id = $1 and voided_at is null
           order by cycle desc limit 1)
         union all
         select (select r.cycle from rewards r
                  where r.leaderboard_id = $1 and r.cycle < paid.cycle and r.voided_at is null
                  order by r.cycle desc limit 1), n + 1
           from paid where paid.cycle is not null and n < 10
       )
       select paid.cycle,
              (select count(*)::int from (
                 select 1 from rewards
                  where leaderboard_id = $1 and cycle = paid.cycle and voided_at is null
                  limit $2) counted) as players,
              (select min(rank)::int from rewards
                where leaderboard_id = $1 and cycle = paid.cycle and voided_at is null) as best_rank,
              (select max(rank)::int from rewards
                where leaderboard_id = $1 and cycle = paid.cycle and voided_at is null) as worst_rank
         from paid
        where paid.cycle is not null
        order by paid.cycle desc`,
      [id, MAX_COUNTED_REWARDS + 1],
    ) as unknown as Promise<
      { cycle: number; players: number; best_rank: number; worst_rank: number }[]
    >,
  ])
  if ('ok' in info) throw new ApiError(info.problem, info.detail)
  const entries = top.ok ? top.entries : []
  const names = await playerNames(
    c.env,
    entries.map((e) => e.playerId),
  )
  return c.json({
    now: Date.now(),
    id,
    config: info.config,
    cycle: info.cycle,
    top: entries.map((e) => ({
      rank: e.rank,
      playerId: e.playerId,
      name: names.get(e.playerId) ?? null,
      score: e.score,
    })),
    // Closes the board has not finished archiving (with their failed attempts and last error):
    // one failing before its first page is in Neon is in none of `cycles`.
    unfinishedCloses: info.unfinishedCloses,
    cycles: cycles.map((r) => ({
      cycle: r.cycle,
      startsAt: Number(r.starts_ms),
      endsAt: Number(r.ends_ms),
      entries: r.entries,
      archived: r.archived_rows,
      completedAt: r.completed_ms === null ? null : Number(r.completed_ms),
    })),
    rewards: rewards.map((r) => ({
      cycle: r.cycle,
      players: Math.min(r.players, MAX_COUNTED_REWARDS),
      // More were paid than counted: the count stops there (`players` is then a floor).
      morePlayers: r.players > MAX_COUNTED_REWARDS,
      ranks: [r.best_rank, r.worst_rank],
    })),
  })
})
