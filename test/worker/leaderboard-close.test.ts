import { env } from 'cloudflare:workers'
import { metricTotal } from './helpers/metric-totals.ts'
import {
  createExecutionContext,
  createScheduledController,
  evictDurableObject,
  runInDurableObject,
  waitOnExecutionContext,
} from 'cloudflare:test'
import { describe, expect, it, onTestFinished } from 'vitest'
import {
  CLOSE_RECORD_KEPT_MS,
  type CloseStatus,
  type Leaderboard,
} from '../../durable-objects/leaderboard.ts'
import {
  NeonArchiveWriter,
  type ArchivePage,
  type ArchiveWriter,
} from '../../workers/leaderboards/archive-writer.ts'
import worker from '../../workers/index.ts'
import {
  ADMIN_KEY,
  BASE,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clientAddress,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { boardId, createBoard, fresh, pg, submitFor, type Top } from './helpers/boards.ts'
import { countRowsRead } from './helpers/rows-read.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { CYCLE_REWARDS_PAGE } from '../../workers/routes/admin-leaderboards.ts'
import { errorLines } from './helpers/logs.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { canonicalJson } from '../../workers/lib/canonical-json.ts'
import { ARCHIVE_SPREAD_MS, archiveDelayMs } from '../../workers/core/leaderboard.ts'
import { runScheduled } from '../../workers/scheduled.ts'
import { until } from './helpers/sockets.ts'
import { edgeCacheUrl, MAX_REDIS_TTL_MS, storedReadKey } from '../../workers/lib/read-cache.ts'
import { getRedis } from '../../workers/lib/redis.ts'

const N = 10_000
const REWARDS = [
  { fromRank: 1, toRank: 1, reward: { coins: 1000, badge: 'champion' } },
  { fromRank: 2, toRank: 10, reward: { coins: 100 } },
  { fromRank: 11, toRank: 100, reward: { coins: 10 } },
]

function stub(board: string) {
  return env.LEADERBOARD.getByName(board)
}

/** Player i scores (i * 7919) % N: a permutation of 0..N-1, so the expected rank of each is known. */
const scoreOf = (i: number) => (i * 7919) % N
const playerOf = (i: number) => `c${String(i).padStart(5, '0')}`

/** Submits `n` scores straight to the board object: player `player(i)` scores `score(i)`. */
async function submitEach(
  inst: Leaderboard,
  board: string,
  n: number,
  player: (i: number) => string,
  score: (i: number) => number = (i) => i,
  metadata: (i: number) => string | null = () => null,
): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await inst.submit({
      boardId: board,
      playerId: player(i),
      score: score(i),
      subscore: 0,
      metadata: metadata(i),
      idempotencyKey: `seed-${i}`,
      requestHash: `h${i}`,
    })
    if (!r.ok) throw new Error(r.detail)
  }
}

async function seedBoard(
  board: string,
  extra: (inst: Leaderboard) => Promise<void> = async () => {},
) {
  await runInDurableObject(stub(board), async (inst: Leaderboard) => {
    await submitEach(inst, board, N, playerOf, scoreOf, (i) =>
      i % 1000 === 0 ? '{"lap":1}' : null,
    )
    await extra(inst)
  })
}

async function closeNow(board: string, body?: unknown): Promise<Response> {
  return call(
    `/v1/admin/leaderboards/${board}/close`,
    body === undefined
      ? { method: 'POST', headers: { authorization: `Bearer ${ADMIN_KEY}` } }
      : json('POST', body, ADMIN_KEY),
  )
}

/** The same close with its body streamed (chunked: no Content-Length), as some clients send it. */
async function closeStreamed(board: string, body: unknown): Promise<Response> {
  const bytes = new TextEncoder().encode(JSON.stringify(body))
  return call(`/v1/admin/leaderboards/${board}/close`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
    body: new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes)
        controller.close()
      },
    }),
    duplex: 'half',
  } as RequestInit)
}

async function status(board: string, cycle: number): Promise<CloseStatus> {
  return runInDurableObject(stub(board), (inst: Leaderboard) => inst.closeStatus(cycle)!)
}

/** Drives the archive to completion the way the alarm does, without waiting for backoffs. */
async function archiveUntilDone(board: string, cycle: number): Promise<CloseStatus> {
  for (let i = 0; i < 100; i++) {
    const s = await status(board, cycle)
    if (s.state === 'done') return s
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
  }
  throw new Error('archive did not finish')
}

/**
 * One archive attempt by hand on cycle 1, answering the retry time it recorded, which it then
 * puts an hour away: the test makes the next attempt itself, and on a slow machine the board's
 * alarm (set by the close, and again after the attempt) would otherwise make it first, with the
 * test's faulty writer still in place.
 */
function archiveAttempt(board: string): Promise<number> {
  return runInDurableObject(stub(board), async (inst: Leaderboard, state) => {
    await inst.runArchive({ force: true })
    const { next_attempt_at: retryAt } = state.storage.sql
      .exec<{ next_attempt_at: number }>(`SELECT next_attempt_at FROM closes WHERE cycle = 1`)
      .one()
    state.storage.sql.exec(
      `UPDATE closes SET next_attempt_at = ? WHERE cycle = 1 AND state != 'done'`,
      Date.now() + 3_600_000,
    )
    return retryAt
  })
}

/** What Neon holds for a cycle: counts and the facts that prove exactly-once. */
async function archived(board: string, cycle: number) {
  const sql = pg()
  const [a] =
    await sql`select count(*)::int as rows, count(distinct rank)::int as ranks, min(rank)::int as min, max(rank)::int as max,
                               count(distinct player_id)::int as players from leaderboard_archive where leaderboard_id = ${board} and cycle = ${cycle}`
  const [r] = await sql`select count(*)::int as rewards, count(distinct player_id)::int as rewarded,
                               coalesce(sum((reward->>'coins')::int), 0)::int as coins from rewards where leaderboard_id = ${board} and cycle = ${cycle}`
  const [c] =
    await sql`select entries, archived_rows, completed_at is not null as complete from leaderboard_cycles where leaderboard_id = ${board} and cycle = ${cycle}`
  return { ...a, ...r, cycle: c }
}

const EXPECTED_COINS = 1000 + 9 * 100 + 90 * 10

/** Neon's progress figure for a cycle beside the rows it really holds. */
async function neonProgress(board: string, cycle: number) {
  const sql = pg()
  const [p] = await sql`select c.archived_rows,
                               (select count(*)::int from leaderboard_archive a
                                 where a.leaderboard_id = c.leaderboard_id and a.cycle = c.cycle) as rows
                          from leaderboard_cycles c where c.leaderboard_id = ${board} and c.cycle = ${cycle}`
  return p as { archived_rows: number; rows: number }
}

function expectExactlyOnce(a: Awaited<ReturnType<typeof archived>>) {
  expect(a).toMatchObject({
    rows: N,
    ranks: N,
    min: 1,
    max: N,
    players: N,
    rewards: 100,
    rewarded: 100,
    coins: EXPECTED_COINS,
  })
  expect(a.cycle).toEqual({ entries: N, archived_rows: N, complete: true })
}

async function entriesLeftInObject(board: string, cycle: number): Promise<number> {
  return runInDurableObject(stub(board), (inst: Leaderboard, state) => {
    void inst
    return state.storage.sql
      .exec<{ n: number }>('SELECT count(*) AS n FROM entries WHERE cycle = ?', cycle)
      .one().n
  })
}

describe('closing a cycle of 10,000 entries', () => {
  it('archives exactly 10,000 rows with their ranks, pays each reward once, then frees the object', async () => {
    const board = await createBoard({ rewards: REWARDS })
    const { token, playerId } = await newGuest()
    await seedBoard(board, async (inst) => {
      // A real player takes first place with a score above every seeded one.
      await inst.submit({
        boardId: board,
        playerId,
        score: N + 5,
        subscore: 0,
        metadata: null,
        idempotencyKey: 'guest',
        requestHash: 'g',
      })
    })
    const rowsBefore = metricTotal('nexus_leaderboard_rows_archived_total')
    const closesBefore = metricTotal('nexus_leaderboard_close_duration_seconds')
    const res = await closeNow(board)
    expect(res.status).toBe(202)
    const body = (await res.json()) as { closed: CloseStatus; current: { cycle: number } }
    expect(body.closed).toMatchObject({ cycle: 1, entries: N + 1, reason: 'manual' })
    expect(body.current.cycle).toBe(2)

    const done = await archiveUntilDone(board, 1)
    expect(done).toMatchObject({ state: 'done', archived: N + 1 })
    // On /metrics (with any other board's archive this file's earlier tests left running).
    expect(
      metricTotal('nexus_leaderboard_rows_archived_total') - rowsBefore,
    ).toBeGreaterThanOrEqual(N + 1)
    expect(
      metricTotal('nexus_leaderboard_close_duration_seconds') - closesBefore,
    ).toBeGreaterThanOrEqual(1)
    // The close stays on as the cycle's record, without the reward tiers only its archive read.
    const kept = await runInDurableObject(stub(board), (_inst: Leaderboard, state) =>
      state.storage.sql.exec(`SELECT rewards, cursor FROM closes WHERE cycle = 1`).toArray(),
    )
    expect(kept).toEqual([{ rewards: '[]', cursor: null }])
    const sql = pg()
    const [counts] =
      await sql`select count(*)::int as n, max(rank)::int as max from leaderboard_archive where leaderboard_id = ${board} and cycle = 1`
    expect(counts).toEqual({ n: N + 1, max: N + 1 })
    // Ranks follow the order: the guest first, then score N-1 at rank 2 … score 0 at rank N+1.
    const sample =
      await sql`select player_id, rank, score from leaderboard_archive where leaderboard_id = ${board} and cycle = 1 and rank in (1, 2, 5000, 10001) order by rank`
    const playerWithScore = (s: number) =>
      playerOf(Array.from({ length: N }, (_, i) => i).find((i) => scoreOf(i) === s)!)
    expect(sample).toEqual([
      { player_id: playerId, rank: 1, score: N + 5 },
      { player_id: playerWithScore(N - 1), rank: 2, score: N - 1 },
      { player_id: playerWithScore(N - 4999), rank: 5000, score: N - 4999 },
      { player_id: playerWithScore(0), rank: N + 1, score: 0 },
    ])
    // Metadata and submission times come through as stored, each with its own player.
    const extras =
      await sql`select player_id, metadata, subscore, submitted_at > now() - interval '1 hour' as recent from leaderboard_archive
                where leaderboard_id = ${board} and cycle = 1 and player_id in (${playerOf(1000)}, ${playerOf(1001)}) order by player_id`
    expect(extras).toEqual([
      { player_id: playerOf(1000), metadata: { lap: 1 }, subscore: 0, recent: true },
      { player_id: playerOf(1001), metadata: null, subscore: 0, recent: true },
    ])
    const [rw] =
      await sql`select count(*)::int as n from rewards where leaderboard_id = ${board} and cycle = 1`
    expect(rw!.n).toBe(100)
    expect(await entriesLeftInObject(board, 1)).toBe(0)

    // The guest sees their reward; the closed cycle is served from Neon; history lists the result.
    const mine = await fresh<{
      rewards: { leaderboardId: string; cycle: number; rank: number; reward: unknown }[]
    }>('/v1/players/me/rewards', { authorization: `Bearer ${token}` })
    expect(mine.rewards).toEqual([
      expect.objectContaining({
        leaderboardId: board,
        cycle: 1,
        rank: 1,
        reward: { coins: 1000, badge: 'champion' },
      }),
    ])
    const closedTop = await fresh<Top & { complete: boolean }>(
      `/v1/leaderboards/${board}/cycles/1/top?limit=3`,
    )
    expect(closedTop).toMatchObject({ cycle: 1, complete: true, total: N + 1 })
    expect(closedTop.entries.map((e) => e.rank)).toEqual([1, 2, 3])
    const page2 = await fresh<Top>(
      `/v1/leaderboards/${board}/cycles/1/top?limit=3&cursor=${closedTop.nextCursor}`,
    )
    expect(page2.entries.map((e) => e.rank)).toEqual([4, 5, 6])
    const history = await fresh<{
      results: { cycle: number; rank: number }[]
      nextBefore: number | null
    }>(`/v1/leaderboards/${board}/players/me/history?limit=1`, {
      authorization: `Bearer ${token}`,
    })
    expect(history.results).toEqual([
      expect.objectContaining({ cycle: 1, rank: 1, entries: N + 1 }),
    ])
    // A full page that is the last: no `nextBefore` to an empty one.
    expect(history.nextBefore).toBeNull()
    // The live board is empty and taking scores in cycle 2.
    expect((await fresh<Top>(`/v1/leaderboards/${board}/top`)).total).toBe(0)
    const next = (await (await submitFor(board, 'later', { score: 1 })).json()) as { cycle: number }
    expect(next.cycle).toBe(2)
  })

  it('pages Neon acknowledged and then lost (restored to a point before them) are sent again before the archive is marked complete: every rank and reward, once', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await seedBoard(board, async (inst) => {
      const real = new NeonArchiveWriter(env)
      let lost = false
      const restored: ArchiveWriter = {
        async writePage(page) {
          await real.writePage(page)
          // The first page (the rewarded ranks) is in; then Neon goes back to before it.
          if (page.archivedThrough === 1000 && !lost) {
            lost = true
            await pg()`delete from rewards where leaderboard_id = ${board} and cycle = 1`
            await pg()`delete from leaderboard_archive where leaderboard_id = ${board} and cycle = 1`
            await pg()`delete from leaderboard_cycles where leaderboard_id = ${board} and cycle = 1`
          }
        },
        complete: (p, opts) => real.complete(p, opts),
      }
      inst.archiveWriter = restored
    })
    expect((await closeNow(board)).status).toBe(202)
    await archiveUntilDone(board, 1)
    expectExactlyOnce(await archived(board, 1))
  })

  it('resumes exactly after a fault between pages, and after a crash between Neon’s commit and the progress record', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await seedBoard(board, async (inst) => {
      const real = new NeonArchiveWriter(env)
      const failed = new Set<number>()
      const faulty: ArchiveWriter = {
        async writePage(page) {
          // Each fault strikes once, on the page ending at that row, whatever else is in flight.
          if (page.archivedThrough === 3000 && !failed.has(3000)) {
            failed.add(3000)
            // Neon commits the page, then the object dies before recording it.
            await real.writePage(page)
            throw new Error('injected crash after commit')
          }
          if (page.archivedThrough === 5000 && !failed.has(5000)) {
            failed.add(5000)
            throw new Error('injected fault before commit')
          }
          return real.writePage(page)
        },
        complete: (p) => real.complete(p),
      }
      inst.archiveWriter = faulty
    })
    expect((await closeNow(board)).status).toBe(202)
    const attemptedAt = Date.now()
    const retryAt = await archiveAttempt(board)
    let s = await status(board, 1)
    // Pages before the failed one are recorded; the failed one and any after it are sent again.
    expect(s).toMatchObject({
      state: 'archiving',
      archived: 2000,
      attempts: 1,
      lastError: 'injected crash after commit',
    })
    // The failure put its retry off (a backoff), not at once.
    expect(retryAt).toBeGreaterThan(attemptedAt)
    // Neon's own figure counts the rows it holds, pages past the failed one included.
    let progress = await neonProgress(board, 1)
    expect(progress.archived_rows).toBe(progress.rows)
    await archiveAttempt(board)
    s = await status(board, 1)
    // Two failed batches in a row, though each moved the cursor: the backoff grows.
    expect(s).toMatchObject({
      state: 'archiving',
      archived: 4000,
      attempts: 2,
      lastError: 'injected fault before commit',
    })
    // Pages after the missing one (5,000) are in: the figure is a count, not the highest rank in.
    progress = await neonProgress(board, 1)
    expect(progress.rows).toBeGreaterThan(4000)
    expect(progress.rows).toBeLessThan(N)
    expect(progress.archived_rows).toBe(progress.rows)
    // The frozen rows stay until Neon has all of them.
    expect(await entriesLeftInObject(board, 1)).toBe(N)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    await archiveUntilDone(board, 1)
    expectExactlyOnce(await archived(board, 1))
    expect(await entriesLeftInObject(board, 1)).toBe(0)
  })

  it('a close whose batches each land a page and fail the next backs off a few seconds at most (not to minutes): it is moving', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await seedBoard(board, async (inst) => {
      const real = new NeonArchiveWriter(env)
      let calls = 0
      inst.archiveWriter = {
        async writePage(page) {
          // A batch's four pages go out together, and its second fails: the first lands and
          // the cursor moves past it, every run.
          if (calls++ % 4 === 1) throw new Error('injected fault on a second page')
          return real.writePage(page)
        },
        complete: (p) => real.complete(p),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    const seen: { attempts: number; waitMs: number }[] = []
    for (let i = 0; i < 4; i++) {
      const retryAt = await archiveAttempt(board)
      // From the attempt's end, after its failure: the retry at most 4 s from then.
      const after = Date.now()
      const s = await status(board, 1)
      seen.push({ attempts: s.attempts, waitMs: retryAt - after })
      expect(s.archived).toBeGreaterThan(i * 1000)
    }
    // Failures in a row, though kept past the pages that land, stop at three.
    expect(seen.map((s) => s.attempts)).toEqual([1, 2, 3, 3])
    for (const s of seen) expect(s.waitMs).toBeLessThanOrEqual(4_000)
    await archiveUntilDone(board, 1)
    expectExactlyOnce(await archived(board, 1))
  })

  it('with Postgres unreachable for a while, backs off, keeps everything, and finishes when it returns', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await seedBoard(board, async (inst) => {
      inst.archiveWriter = new NeonArchiveWriter({
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      })
    })
    expect((await closeNow(board)).status).toBe(202)
    for (let i = 0; i < 3; i++) {
      const before = Date.now()
      await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
      const after = Date.now()
      const s = await status(board, 1)
      expect(s).toMatchObject({ state: 'archiving', archived: 0, attempts: i + 1 })
      // Exponential backoff: 1 s, 2 s, 4 s from the failure (which came between before and
      // after), each less up to a quarter at random.
      expect(s.nextAttemptAt! - before).toBeGreaterThanOrEqual(0.75 * 1000 * 2 ** i)
      expect(s.nextAttemptAt! - after).toBeLessThanOrEqual(1000 * 2 ** i)
    }
    // The board's own retry put off (its alarm would try again in seconds, with the test's
    // unreachable writer still in place): the count below is of these three.
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(
        `UPDATE closes SET next_attempt_at = ? WHERE cycle = 1 AND state != 'done'`,
        Date.now() + 3_600_000,
      )
    })
    // Which board is stuck, and how long it has been failing: three in a row.
    const failuresInARow = async () => {
      const text = await (await call('/metrics', bearer(ADMIN_KEY))).text()
      const line = text
        .split('\n')
        .find((l) => l.startsWith(`nexus_leaderboard_close_failures_in_a_row{board="${board}"}`))
      return line === undefined ? null : Number(line.split(' ').at(-1))
    }
    expect(await failuresInARow()).toBe(3)
    // Closing never blocks the next cycle.
    const during = (await (await submitFor(board, 'during-outage', { score: 3 })).json()) as {
      cycle: number
    }
    expect(during.cycle).toBe(2)
    const metrics = await (await call('/metrics', bearer(ADMIN_KEY))).text()
    expect(metrics).toMatch(/nexus_leaderboard_close_retries_total \d+/)

    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    await archiveUntilDone(board, 1)
    expectExactlyOnce(await archived(board, 1))
    expect(await failuresInARow()).toBe(0)
  })

  it("an admin's close sent while an attempt that fails is in flight retries at once, not after that attempt's backoff", async () => {
    const board = await createBoard({ rewards: REWARDS })
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let releaseRetry!: () => void
    const retryHeld = new Promise<void>((r) => (releaseRetry = r))
    onTestFinished(() => {
      release()
      releaseRetry()
    })
    // Flags, not promises: one resolved by the board would run the test on in its context.
    let writing = false
    let retrying = false
    let failedAt = 0
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 5, (i) => `h${i}`)
      const neon = new NeonArchiveWriter(env)
      let calls = 0
      inst.archiveWriter = {
        writePage: async (page) => {
          calls++
          if (calls === 1) {
            writing = true
            await held
            failedAt = Date.now()
            throw new Error('injected: Neon went away mid-page')
          }
          if (calls === 2) {
            retrying = true
            await retryHeld
          }
          return neon.writePage(page)
        },
        complete: (page) => neon.complete(page),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    await until(async () => writing || undefined, 5000, 'the first page in flight')
    // The operator, seeing the archive stuck, asks for a retry while that page is out.
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
    await runInDurableObject(stub(board), () => release())
    await until(async () => retrying || undefined, 5000, 'the retry in flight')
    // The retry was due at once: not a backoff of 1 s or more past the failure.
    const s = await status(board, 1)
    expect(s).toMatchObject({ state: 'archiving', attempts: 1 })
    expect(s.nextAttemptAt!).toBeLessThan(failedAt + 500)
    await runInDurableObject(stub(board), () => releaseRetry())
    await until(
      async () => ((await status(board, 1)).state === 'done' ? true : undefined),
      5000,
      'the archive done',
    )
    expect(await archived(board, 1)).toMatchObject({ rows: 5 })
  })

  it("the cron's tick while the board's alarm is archiving a page does not call the archive stalled (the alarm is running, not lost)", async () => {
    const board = await createBoard({ rewards: REWARDS })
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    onTestFinished(() => release())
    let writing = false
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 5, (i) => `t${i}`)
      const neon = new NeonArchiveWriter(env)
      inst.archiveWriter = {
        writePage: async (page) => {
          writing = true
          await held
          return neon.writePage(page)
        },
        complete: (page) => neon.complete(page),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    await until(async () => writing || undefined, 5000, 'a page in flight')
    const ticked = await runInDurableObject(stub(board), (inst: Leaderboard) => inst.tick(board))
    expect(ticked).toMatchObject({ pending: 1, stalled: false, overdue: false })
    await runInDurableObject(stub(board), () => release())
    await until(
      async () => ((await status(board, 1)).state === 'done' ? true : undefined),
      5000,
      'the archive done',
    )
  })

  it('a later close waiting behind one that backs off does not bring the alarm back at once: it waits for the retry', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 5, (i) => `w${i}`)
      inst.archiveWriter = new NeonArchiveWriter({
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      })
    })
    expect((await closeNow(board)).status).toBe(202)
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
    expect(await status(board, 1)).toMatchObject({ state: 'archiving', attempts: 1 })
    // Cycle 2 gets a score and closes too, behind cycle 1 (archives go in cycle order; the
    // admin's close tries cycle 1 again at once, and fails again).
    expect((await submitFor(board, 'w-late', { score: 3 })).status).toBe(200)
    expect((await closeNow(board, { cycle: 2 })).status).toBe(202)
    const { attempts } = await status(board, 1)
    // Cycle 1's retry a minute away (as after a few failures), so nothing here comes near it.
    const retryAt = Date.now() + 60_000
    const alarm = await runInDurableObject(stub(board), async (inst: Leaderboard, state) => {
      state.storage.sql.exec(`UPDATE closes SET next_attempt_at = ? WHERE cycle = 1`, retryAt)
      await inst.alarm()
      return state.storage.getAlarm()
    })
    // The alarm ran nothing (cycle 1's retry is not due) and is set for that retry, not for now.
    expect(await status(board, 1)).toMatchObject({ attempts })
    expect(alarm).toBe(retryAt)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    await archiveUntilDone(board, 1)
    await archiveUntilDone(board, 2)
    expect(await archived(board, 2)).toMatchObject({ rows: 1 })
  })

  it('a page Neon never answers counts as failed after the time limit: the archive backs off and is not held, and finishes once Neon answers', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 50, (i) => `h${i}`)
      const real = new NeonArchiveWriter(env)
      inst.archiveCallMs = 200
      inst.archiveWriter = {
        // A request that never settles (a half-open connection).
        writePage: () => new Promise<never>(() => {}),
        complete: (p) => real.complete(p),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    const attemptedAt = Date.now()
    const retryAt = await archiveAttempt(board)
    const s = await status(board, 1)
    expect(s).toMatchObject({ state: 'archiving', archived: 0, attempts: 1 })
    expect(s.lastError).toContain('took over 200 ms')
    expect(retryAt).toBeGreaterThan(attemptedAt)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    await archiveUntilDone(board, 1)
    expect(await archived(board, 1)).toMatchObject({ rows: 50, players: 50 })
  })

  it('two closes racing (and the archive run twice at once) close one cycle and write everything once', async () => {
    const board = await createBoard({ rewards: REWARDS })
    await seedBoard(board)
    const [a, b] = await Promise.all([closeNow(board, { cycle: 1 }), closeNow(board, { cycle: 1 })])
    expect([a.status, b.status]).toEqual([202, 202])
    const bodies = (await Promise.all([a.json(), b.json()])) as {
      closed: CloseStatus
      current: { cycle: number }
    }[]
    expect(bodies.map((x) => x.closed.cycle)).toEqual([1, 1])
    expect(bodies.map((x) => x.current.cycle)).toEqual([2, 2])
    // A retry of the close after the fact is still the same close.
    const retry = (await (await closeNow(board, { cycle: 1 })).json()) as {
      current: { cycle: number }
    }
    expect(retry.current.cycle).toBe(2)
    // Closing a cycle that never existed is a conflict.
    expect((await problem(await closeNow(board, { cycle: 7 }))).status).toBe(409)

    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await Promise.all([
        inst.runArchive({ force: true }),
        inst.runArchive({ force: true }),
        inst.alarm(),
      ])
    })
    await archiveUntilDone(board, 1)
    expectExactlyOnce(await archived(board, 1))
    // Running the finished archive again writes nothing.
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
    expectExactlyOnce(await archived(board, 1))
  })

  it('rewards are paid by the tiers in force when the cycle froze, not by tiers changed before its archive ran', async () => {
    const OLD = [
      { fromRank: 1, toRank: 1, reward: { coins: 500, badge: 'first' } },
      { fromRank: 2, toRank: 3, reward: { coins: 50 } },
    ]
    const NEW = [
      { fromRank: 1, toRank: 2, reward: { gems: 7 } },
      { fromRank: 3, toRank: 5, reward: { gems: 1 } },
    ]
    const board = await createBoard({ rewards: OLD })
    const paid = async (cycle: number) =>
      pg()`select player_id, rank, reward from rewards
            where leaderboard_id = ${board} and cycle = ${cycle} order by rank`
    // Cycle 1 freezes with p00000…p00005 (p00005 first); every page of its archive fails, so
    // nothing of it is in Neon yet.
    await closeWithFailingPages(board, 6, () => true)
    expect(await status(board, 1)).toMatchObject({ state: 'archiving', archived: 0 })
    expect(await paid(1)).toEqual([])
    // The tiers change while cycle 1 waits for its archive; then the archive runs to the end.
    const put = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { rewards: NEW }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    expect(await paid(1)).toEqual([
      { player_id: 'p00005', rank: 1, reward: { coins: 500, badge: 'first' } },
      { player_id: 'p00004', rank: 2, reward: { coins: 50 } },
      { player_id: 'p00003', rank: 3, reward: { coins: 50 } },
    ])
    // The next cycle froze under the new tiers, and pays by them.
    for (let i = 0; i < 6; i++) {
      expect((await submitFor(board, `n${i}`, { score: 100 - i })).status).toBe(200)
    }
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 2)).state).toBe('done')
    expect(await paid(2)).toEqual([
      { player_id: 'n0', rank: 1, reward: { gems: 7 } },
      { player_id: 'n1', rank: 2, reward: { gems: 7 } },
      { player_id: 'n2', rank: 3, reward: { gems: 1 } },
      { player_id: 'n3', rank: 4, reward: { gems: 1 } },
      { player_id: 'n4', rank: 5, reward: { gems: 1 } },
    ])
  })
})

describe('freeing the object after a close', () => {
  it("deletes a closed cycle's rows a bounded number of batches at a time, the alarm coming straight back for the rest", async () => {
    const board = await createBoard()
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 60, (i) => `f${i}`)
      // Batches of 10 rows, two to a run.
      inst.purgeBatch = 10
      inst.purgeBatchesPerRun = 2
    })
    expect((await closeNow(board)).status).toBe(202)
    // One run archives the cycle (a page), then deletes two batches of its rows and stops there.
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
    expect(await status(board, 1)).toMatchObject({ state: 'purging', archived: 60 })
    expect(await entriesLeftInObject(board, 1)).toBe(40)
    const { alarm, now } = await runInDurableObject(
      stub(board),
      async (_i: Leaderboard, state) => ({
        alarm: await state.storage.getAlarm(),
        now: Date.now(),
      }),
    )
    expect(alarm).not.toBeNull()
    expect(alarm!).toBeLessThanOrEqual(now)
    // The board takes scores in the next cycle between runs.
    const next = (await (await submitFor(board, 'between', { score: 1 })).json()) as {
      cycle: number
    }
    expect(next.cycle).toBe(2)
    // The alarm's run deletes two more batches; the runs after finish the deletion.
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect(await entriesLeftInObject(board, 1)).toBe(20)
    expect(await archiveUntilDone(board, 1)).toMatchObject({ state: 'done', archived: 60 })
    expect(await entriesLeftInObject(board, 1)).toBe(0)
    expect(await entriesLeftInObject(board, 2)).toBe(1)
    const [rows] =
      await pg()`select count(*)::int as n, count(distinct player_id)::int as players from leaderboard_archive where leaderboard_id = ${board} and cycle = 1`
    expect(rows).toEqual({ n: 60, players: 60 })
  })
})

describe('closing a named cycle', () => {
  it('reads the cycle from a streamed body too: a retry closes nothing new, a cycle not current is 409', async () => {
    const board = await createBoard()
    await submitFor(board, 'only', { score: 1 })
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)

    const retried = await closeStreamed(board, { cycle: 1 })
    expect(retried.status).toBe(202)
    expect(await retried.json()).toMatchObject({ closed: { cycle: 1 }, current: { cycle: 2 } })

    const withLength = await problem(await closeNow(board, { cycle: 7 }))
    const streamed = await problem(await closeStreamed(board, { cycle: 7 }))
    expect(withLength).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(streamed).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(streamed.body.cycle).toBe(withLength.body.cycle)

    // Cycle 2 is still the current one, open and unclosed.
    const cycle2 = await call(`/v1/admin/leaderboards/${board}/cycles/2`, bearer(ADMIN_KEY))
    expect(cycle2.status).toBe(404)
    const info = await fresh<{ cycle: { cycle: number } }>(`/v1/leaderboards/${board}`)
    expect(info.cycle.cycle).toBe(2)
  })
})

describe('reading a cycle while it is archived', () => {
  it("a finished cycle's page is kept 5 minutes in the location's cache, and 30 s at most in Redis (any cursor and limit make a page of their own)", async () => {
    const board = await createBoard()
    expect((await submitFor(board, 'kept', { score: 1 })).status).toBe(200)
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const res = await callWithEnv({}, `/v1/leaderboards/${board}/cycles/1/top?limit=7`)
    expect(res.headers.get('x-cache')).toBe('MISS')
    expect(((await res.json()) as { complete: boolean }).complete).toBe(true)
    const key = `lb:${board}:cycle:1:7:0`
    const edgeTtl = await until(async () => {
      const hit = await caches.default.match(edgeCacheUrl(BASE, storedReadKey(env, key)))
      await hit?.body?.cancel()
      return hit?.headers.get('x-ttl-ms') ?? undefined
    })
    expect(Number(edgeTtl)).toBe(300_000)
    const redis = getRedis(env)!
    const redisTtl = await until(async () => {
      const left = await redis.run('test.pttl', (r) =>
        r.pttl(`nexus:read:${storedReadKey(env, key)}`),
      )
      return left !== undefined && left > 0 ? left : undefined
    })
    expect(redisTtl).toBeLessThanOrEqual(MAX_REDIS_TTL_MS)
  })

  it("a closed cycle's standings show a player's name as it is now: a rename reaches them; an entry archived without a name stays without", async () => {
    const board = await createBoard()
    const named = `named-${crypto.randomUUID().slice(0, 8)}`
    const unnamed = `unnamed-${crypto.randomUUID().slice(0, 8)}`
    const rename = async (name: string) =>
      expect(
        (await call(`/v1/admin/players/${named}`, json('PUT', { name }, ADMIN_KEY))).status,
      ).toBe(200)
    await rename('Slur')
    expect((await submitFor(board, named, { score: 2 })).status).toBe(200)
    expect((await submitFor(board, unnamed, { score: 1 })).status).toBe(200)
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const names = async () =>
      (await fresh<Top>(`/v1/leaderboards/${board}/cycles/1/top`)).entries.map((e) => [
        e.playerId,
        e.name,
      ])
    expect(await names()).toEqual([
      [named, 'Slur'],
      [unnamed, null],
    ])
    // A moderator renames the player: the closed cycle shows the new name, not the one archived.
    await rename('Player123')
    expect(await names()).toEqual([
      [named, 'Player123'],
      [unnamed, null],
    ])
    // Named after the close: its entry was archived without a name, and stays so.
    await call(`/v1/admin/players/${unnamed}`, json('PUT', { name: 'Later' }, ADMIN_KEY))
    expect((await names())[1]).toEqual([unnamed, null])
  })

  it('a cycle not archived yet is 404 with Retry-After, remembered for a moment: polls meanwhile are not each a Neon query (they are answered with Neon down)', async () => {
    const board = await createBoard()
    const url = `/v1/leaderboards/${board}/cycles/1/top`
    const first = await call(url)
    expect(first.status).toBe(404)
    expect(first.headers.get('retry-after')).toBe('5')
    expect(first.headers.get('cache-control')).toBe('no-store')
    expect((await problem(first)).type).toBe('urn:nexus:problem:not-found')
    // The next poll, with Neon out of reach: answered from the isolate's memory.
    const again = await callWithEnv(
      {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      url,
    )
    expect(again.status).toBe(404)
    expect(again.headers.get('retry-after')).toBe('5')
  })

  it("a closed cycle's pages the caches miss are Neon queries, PLAYER_READS_PER_MINUTE of them per client address a minute: past it 429 with Retry-After; cached pages and other addresses read on", async () => {
    await clearOfMinuteTurn(10_000)
    const board = await createBoard({ submitsPerMinute: 600 })
    await runInDurableObject(stub(board), (inst: Leaderboard) =>
      submitEach(inst, board, 6, (i) => `p${i}`),
    )
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const address = clientAddress()
    const page = (cursor: number, from = address) =>
      callWithEnv(
        { PLAYER_READS_PER_MINUTE: '2' },
        `/v1/leaderboards/${board}/cycles/1/top?limit=2&cursor=${cursor}`,
        { headers: { 'cf-connecting-ip': from } },
      )
    const first = await page(0)
    expect([first.status, first.headers.get('x-cache')]).toEqual([200, 'MISS'])
    expect(((await first.json()) as Top).entries.map((e) => e.rank)).toEqual([1, 2])
    // A cached page is not a Neon query: not counted.
    const cached = await page(0)
    expect([cached.status, cached.headers.get('x-cache')?.slice(0, 3)]).toEqual([200, 'HIT'])
    expect((await page(2)).status).toBe(200)
    // A third page this minute, past the allowance of 2: refused, and nothing asked of Neon.
    const refused = await page(4)
    expect(refused.status).toBe(429)
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await problem(refused)).type).toBe('urn:nexus:problem:rate-limited')
    // Another address has its own allowance.
    const other = await page(4, clientAddress())
    expect(other.status).toBe(200)
    expect(((await other.json()) as Top).entries.map((e) => e.rank)).toEqual([5, 6])
    // A game server exporting the standings with the admin key is not counted: pages no cache
    // holds (a limit of 1 is a page of its own), past the allowance, from the refused address.
    for (const cursor of [0, 1, 2, 3]) {
      const exported = await callWithEnv(
        { PLAYER_READS_PER_MINUTE: '2' },
        `/v1/leaderboards/${board}/cycles/1/top?limit=1&cursor=${cursor}`,
        bearer(ADMIN_KEY, { 'cf-connecting-ip': address }),
      )
      expect(exported.status).toBe(200)
      expect(((await exported.json()) as Top).entries.map((e) => e.rank)).toEqual([cursor + 1])
    }
  })

  it("counts a closed cycle's pages the caches miss across an IPv6 client's /48 too, at ten times one address's allowance: rotating /64s does not escape it", async () => {
    await clearOfMinuteTurn(15_000)
    const board = await createBoard({ submitsPerMinute: 600 })
    await runInDurableObject(stub(board), (inst: Leaderboard) =>
      submitEach(inst, board, 6, (i) => `p${i}`),
    )
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const network = `2001:db8:${hex()}`
    // 25 pages no cache holds (each its own limit and cursor), each from a /64 of its own.
    const statuses: number[] = []
    for (let i = 0; i < 25; i++) {
      const res = await callWithEnv(
        { PLAYER_READS_PER_MINUTE: '2' },
        `/v1/leaderboards/${board}/cycles/1/top?limit=${1 + (i % 5)}&cursor=${Math.floor(i / 5)}`,
        { headers: { 'cf-connecting-ip': `${network}:${i.toString(16)}::1` } },
      )
      statuses.push(res.status)
      await res.body?.cancel()
    }
    // Each /64 within its own 2; the network's 20 then run out.
    expect(statuses.slice(0, 20)).toEqual(Array(20).fill(200))
    expect(statuses.slice(20)).toEqual(Array(5).fill(429))
  })

  it('stops a page at the first rank not in Neon yet, with a cursor to read on from; that answer is kept 4 s at most', async () => {
    const board = await createBoard({ submitsPerMinute: 600 })
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      await submitEach(inst, board, 2500, (i) => `h${String(i).padStart(5, '0')}`)
      // The page of ranks 1001–2000 fails once; 2001–2500 goes in before it.
      const real = new NeonArchiveWriter(env)
      let failed = false
      const faulty: ArchiveWriter = {
        async writePage(page) {
          if (page.archivedThrough === 2000 && !failed) {
            failed = true
            throw new Error('injected: Neon blip')
          }
          return real.writePage(page)
        },
        complete: (p) => real.complete(p),
      }
      inst.archiveWriter = faulty
    })
    expect((await closeNow(board)).status).toBe(202)
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
    const url = `/v1/leaderboards/${board}/cycles/1/top?limit=5&cursor=1000`
    const duringRes = await call(url)
    // Ranks 1001–2000 are not in yet: nothing to give, and the cursor to ask again with.
    const during = (await duringRes.json()) as Top & { complete: boolean }
    expect(during).toMatchObject({ complete: false, entries: [], nextCursor: '1000' })
    expect(duringRes.headers.get('cache-control')).toMatch(/max-age=[0-4]$/)
    const first = (await (
      await call(`/v1/leaderboards/${board}/cycles/1/top?limit=5`)
    ).json()) as Top
    expect(first.entries.map((e) => e.rank)).toEqual([1, 2, 3, 4, 5])

    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const afterRes = await call(url, { headers: { 'cache-control': 'no-cache' } })
    const after = (await afterRes.json()) as Top & { complete: boolean }
    expect(after.complete).toBe(true)
    expect(after.entries.map((e) => e.rank)).toEqual([1001, 1002, 1003, 1004, 1005])
    // A finished archive never changes: it is kept for minutes, not seconds.
    expect(afterRes.headers.get('cache-control')).toMatch(/max-age=(29\d|300)$/)
  })
})

describe('metadata PostgreSQL cannot store', () => {
  it('held from before submissions refused it, does not stop the archive: it arrives with U+FFFD', async () => {
    const board = await createBoard()
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const r = await inst.submit({
        boardId: board,
        playerId: 'legacy',
        score: 1,
        subscore: 0,
        // As canonicalJson stored it: JSON escapes for a NUL and an unpaired surrogate.
        metadata: '{"\\ud800":"a\\u0000b"}',
        idempotencyKey: 'legacy-1',
        requestHash: 'h-legacy',
      })
      if (!r.ok) throw new Error(r.detail)
    })
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const rows = await pg()`select player_id, metadata from leaderboard_archive
                            where leaderboard_id = ${board} and cycle = 1`
    expect(rows).toEqual([{ player_id: 'legacy', metadata: { '\ufffd': 'a\ufffdb' } }])
  })

  it('of the largest size, quote-heavy, on every entry, is archived whole: pages stay under Neon’s request limit', async () => {
    const board = await createBoard({ metadataMaxBytes: 4096, maxEntries: 100_000 })
    const n = 1100
    // 4,008 bytes as stored; escaped twice on the way to Neon, a 1,000-row page would be 16 MB.
    const metadataOf = (i: number) => canonicalJson({ q: '"'.repeat(1995), i })
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const entries = Array.from({ length: n }, (_, i) => ({
        playerId: `m${String(i).padStart(5, '0')}`,
        score: i,
        subscore: 0,
        metadata: metadataOf(i),
      }))
      for (let i = 0; i < n; i += 500) {
        const r = await inst.importEntries(board, entries.slice(i, i + 500))
        if (!r.ok) throw new Error(r.detail)
      }
    })
    expect(new TextEncoder().encode(metadataOf(n - 1)).length).toBeLessThanOrEqual(4096)
    // Pages this heavy go one at a time: four in flight, each held several times over on its way
    // to Neon, would take much of an object's 128 MB.
    const flight = { now: 0, most: 0 }
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      const real = inst.archiveWriter
      inst.archiveWriter = {
        async writePage(page) {
          flight.most = Math.max(flight.most, ++flight.now)
          try {
            return await real.writePage(page)
          } finally {
            flight.now--
          }
        },
        complete: (p) => real.complete(p),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    expect(flight.most).toBe(1)
    const rows = await pg()`select count(*)::int as rows, count(distinct rank)::int as ranks,
                                   count(*) filter (where length(metadata->>'q') = 1995)::int as whole
                              from leaderboard_archive where leaderboard_id = ${board} and cycle = 1`
    expect(rows).toEqual([{ rows: n, ranks: n, whole: n }])
  })

  it('quote-heavy, with a quote-heavy reward for every rank, is archived whole: the rewards in a page’s request count too', async () => {
    // ~2 KiB of metadata alone lets 1,000 rows under the bound; their 1 KiB rewards, in the same
    // request, would take it past Neon's 10 MiB.
    const reward = { t: '"'.repeat(505) }
    expect(new TextEncoder().encode(JSON.stringify(reward)).length).toBeLessThanOrEqual(1024)
    const board = await createBoard({
      metadataMaxBytes: 4096,
      maxEntries: 100_000,
      rewards: [{ fromRank: 1, toRank: 100_000, reward }],
    })
    const n = 1100
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const entries = Array.from({ length: n }, (_, i) => ({
        playerId: `r${String(i).padStart(5, '0')}`,
        score: i,
        subscore: 0,
        metadata: canonicalJson({ q: '"'.repeat(1040), i }),
      }))
      for (let i = 0; i < n; i += 500) {
        const r = await inst.importEntries(board, entries.slice(i, i + 500))
        if (!r.ok) throw new Error(r.detail)
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const [a] = await pg()`select count(*)::int as rows from leaderboard_archive
                            where leaderboard_id = ${board} and cycle = 1`
    const [r] = await pg()`select count(*)::int as rewards,
                                  count(*) filter (where length(reward->>'t') = 505)::int as whole
                             from rewards where leaderboard_id = ${board} and cycle = 1`
    expect({ ...a, ...r }).toEqual({ rows: n, rewards: n, whole: n })
  })
})

describe('closing without naming the cycle', () => {
  it('a close that comes after a boundary the board has not rolled over yet answers with that cycle, closed by its schedule; the cycle just begun stays open', async () => {
    // Its cycle is read on the real clock and then acted on: not across a boundary.
    await clearOfMinuteTurn(5_000)
    const board = await createBoard({ cycle: { every: '1m' } })
    await submitFor(board, 'early', { score: 10 })
    const info = await fresh<{ cycle: { cycle: number; endsAt: number } }>(
      `/v1/leaderboards/${board}`,
    )
    // The boundary passes and the board's alarm is late.
    const skew = info.cycle.endsAt - Date.now() + 1000
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + skew
    })
    const res = await closeNow(board)
    expect(res.status).toBe(202)
    expect(await res.json()).toMatchObject({
      closed: { cycle: 1, reason: 'schedule', entries: 1 },
      current: { cycle: 2 },
      replayed: false,
    })
    expect(await runInDurableObject(stub(board), (inst: Leaderboard) => inst.closeStatus(2))).toBe(
      null,
    )
    const late = (await (await submitFor(board, 'late', { score: 5 })).json()) as { cycle: number }
    expect(late.cycle).toBe(2)
  })

  it('with an Idempotency-Key a retry answers the first close and closes nothing more; another close with that key is 422; without a key a retry closes the next cycle', async () => {
    const board = await createBoard()
    await submitFor(board, 'a', { score: 1 })
    const keyed = (key: string, body?: unknown) =>
      call(
        `/v1/admin/leaderboards/${board}/close`,
        body === undefined
          ? {
              method: 'POST',
              headers: { authorization: `Bearer ${ADMIN_KEY}`, 'idempotency-key': key },
            }
          : {
              ...json('POST', body, ADMIN_KEY),
              headers: {
                authorization: `Bearer ${ADMIN_KEY}`,
                'content-type': 'application/json',
                'idempotency-key': key,
              },
            },
      )
    const first = await keyed('close-1')
    expect(first.status).toBe(202)
    expect(await first.json()).toMatchObject({
      closed: { cycle: 1, entries: 1 },
      current: { cycle: 2 },
      replayed: false,
    })
    await submitFor(board, 'b', { score: 2 })
    const again = await keyed('close-1')
    expect(again.status).toBe(202)
    expect(await again.json()).toMatchObject({
      closed: { cycle: 1 },
      current: { cycle: 2 },
      replayed: true,
    })
    expect(await problem(await keyed('close-1', { cycle: 2 }))).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:idempotency-key-reused',
    })
    // Cycle 2 is still open, with b in it.
    const info = await fresh<{ cycle: { cycle: number }; count: number }>(
      `/v1/leaderboards/${board}`,
    )
    expect(info.cycle.cycle).toBe(2)
    // Without a key, the same request sent again is a new close: of cycle 2.
    expect(await (await closeNow(board)).json()).toMatchObject({ closed: { cycle: 2 } })
    expect(await (await closeNow(board)).json()).toMatchObject({ closed: { cycle: 3 } })
  })
})

describe('cycles close on schedule', () => {
  it('the cron closes a board whose cycle ended, and writes after the boundary go to the new cycle', async () => {
    // Its cycle is read on the real clock and then acted on: not across a boundary.
    await clearOfMinuteTurn(5_000)
    const board = await createBoard({
      cycle: { every: '1m' },
      rewards: [{ fromRank: 1, toRank: 1, reward: { coins: 5 } }],
    })
    await submitFor(board, 'early', { score: 10 })
    const info = await fresh<{ cycle: { cycle: number; endsAt: number } }>(
      `/v1/leaderboards/${board}`,
    )
    expect(info.cycle.cycle).toBe(1)
    // Move the board's clock past the boundary instead of waiting a minute.
    const skew = info.cycle.endsAt - Date.now() + 1000
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + skew
    })
    // Not waiting on the execution context: the cron's work must be done when its handler
    // returns (work left to waitUntil may be cut off 30 s after a cron handler returns).
    await worker.scheduled(
      createScheduledController({ scheduledTime: Date.now() + skew, cron: '* * * * *' }),
      env,
      createExecutionContext(),
    )
    const s = await status(board, 1)
    expect(s).toMatchObject({ cycle: 1, reason: 'schedule', entries: 1 })
    const after = (await (await submitFor(board, 'late', { score: 99 })).json()) as {
      cycle: number
      rank: number
    }
    expect(after).toMatchObject({ cycle: 2, rank: 1 })
    await archiveUntilDone(board, 1)
    const [row] =
      await pg()`select player_id, rank from leaderboard_archive where leaderboard_id = ${board} and cycle = 1`
    expect(row).toEqual({ player_id: 'early', rank: 1 })
    const [reward] = await pg()`select player_id from rewards where leaderboard_id = ${board}`
    expect(reward).toEqual({ player_id: 'early' })
  })

  it('a cycle nobody entered is carried over its boundaries, not closed: no close, no Neon row, until someone plays', async () => {
    // Its cycle is read on the real clock and then acted on: not across a boundary.
    await clearOfMinuteTurn(5_000)
    const board = await createBoard({
      cycle: { every: '1m' },
      rewards: [{ fromRank: 1, toRank: 1, reward: { coins: 5 } }],
    })
    type Info = { cycle: { cycle: number; startsAt: number; endsAt: number; entries: number } }
    const before = await fresh<Info>(`/v1/leaderboards/${board}`)
    const firstEnd = before.cycle.endsAt
    let skew = 0
    const cronAt = async (t: number) => {
      skew = t - Date.now()
      await runInDurableObject(stub(board), (inst: Leaderboard) => {
        inst.now = () => Date.now() + skew
      })
      const ctx = createExecutionContext()
      await worker.scheduled(
        createScheduledController({ scheduledTime: t, cron: '* * * * *' }),
        env,
        ctx,
      )
      await waitOnExecutionContext(ctx)
    }
    // Three boundaries pass, the cron running after each, with nobody submitting.
    for (let k = 0; k < 3; k++) await cronAt(firstEnd + k * 60_000 + 1000)
    const idle = await fresh<Info>(`/v1/leaderboards/${board}`)
    expect(idle.cycle).toMatchObject({
      cycle: 1,
      startsAt: firstEnd + 2 * 60_000,
      endsAt: firstEnd + 3 * 60_000,
      entries: 0,
    })
    const closesHere = await runInDurableObject(
      stub(board),
      (_inst: Leaderboard, state) =>
        state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM closes').one().n,
    )
    expect(closesHere).toBe(0)
    const [cycles] =
      await pg()`select count(*)::int as n from leaderboard_cycles where leaderboard_id = ${board}`
    expect(cycles).toEqual({ n: 0 })
    expect((await call(`/v1/admin/leaderboards/${board}/cycles/1`, bearer(ADMIN_KEY))).status).toBe(
      404,
    )

    // The first entry lands in cycle 1, which closes at its (carried) boundary like any other.
    const first = (await (await submitFor(board, 'first', { score: 3 })).json()) as {
      cycle: number
      rank: number
    }
    expect(first).toMatchObject({ cycle: 1, rank: 1 })
    await cronAt(firstEnd + 3 * 60_000 + 1000)
    expect(await status(board, 1)).toMatchObject({ cycle: 1, reason: 'schedule', entries: 1 })
    expect(await archiveUntilDone(board, 1)).toMatchObject({ state: 'done', archived: 1 })
    const [reward] =
      await pg()`select player_id, cycle from rewards where leaderboard_id = ${board}`
    expect(reward).toEqual({ player_id: 'first', cycle: 1 })

    // An admin's close is explicit: it closes an empty cycle too.
    const closed = await closeNow(board)
    expect(closed.status).toBe(202)
    expect(await closed.json()).toMatchObject({
      closed: { cycle: 2, entries: 0, reason: 'manual' },
    })
  })

  it('a schedule change after a boundary the board has not rolled over yet closes the ended cycle first', async () => {
    const board = await createBoard({ cycle: { every: '1h' }, submitsPerMinute: 600 })
    const out = await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const submit = (playerId: string, key: string) =>
        inst.submit({
          boardId: board,
          playerId,
          score: 10,
          subscore: 0,
          metadata: null,
          idempotencyKey: key,
          requestHash: key,
        })
      await submit('before', 'k1')
      const info = await inst.info(board)
      if (!info || !('config' in info)) throw new Error('no board info')
      const end = info.cycle.endsAt!
      // 30 s past the hour, before any alarm or request rolled the cycle over.
      inst.now = () => end + 30_000
      const after = await inst.configure(board, { ...info.config, cycle: { every: '1d' } })
      if ('problem' in after) throw new Error(after.detail)
      const late = await submit('after', 'k2')
      return { end, after, late, closed: inst.closeStatus(1) }
    })
    expect(out.after.cycle).toBe(2)
    expect(out.late).toMatchObject({ ok: true, result: { cycle: 2 } })
    expect(out.closed).toMatchObject({ cycle: 1, entries: 1 })
  })

  it('a board first configured from Neon (its push lost) sets its alarm for the cycle end on that first call', async () => {
    const template = await createBoard({ cycle: { every: '1h' } })
    const board = boardId()
    // In Neon, never handed to its object (a PUT whose push failed): the first read configures it.
    await pg()`insert into leaderboards (id, config)
               select ${board}, config from leaderboards where id = ${template}`
    const res = await call(`/v1/leaderboards/${board}/top`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(res.status).toBe(200)
    const { alarm, endsAt } = await runInDurableObject(
      stub(board),
      async (inst: Leaderboard, state) => {
        const info = await inst.info(board)
        if (!info || !('config' in info)) throw new Error('no board info')
        return { alarm: await state.storage.getAlarm(), endsAt: info.cycle.endsAt }
      },
    )
    expect(endsAt).not.toBeNull()
    expect(alarm).toBe(endsAt)
  })

  it("a board whose object lost its storage while Neon kept its history goes on from Neon's last cycle: the next close archives and pays in full, the old cycle untouched", async () => {
    const tiers = [
      { fromRank: 1, toRank: 1, reward: { coins: 1000 } },
      { fromRank: 2, toRank: 2, reward: { coins: 100 } },
    ]
    const board = await createBoard({ rewards: tiers })
    await submitFor(board, 'a', { score: 10 })
    await submitFor(board, 'b', { score: 5 })
    expect((await closeNow(board)).status).toBe(202)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const standings = async (cycle: number) =>
      pg()`select a.player_id, a.rank, a.score, (r.reward->>'coins')::int as coins
             from leaderboard_archive a left join rewards r
               on r.leaderboard_id = a.leaderboard_id and r.cycle = a.cycle and r.player_id = a.player_id
            where a.leaderboard_id = ${board} and a.cycle = ${cycle} order by a.rank`
    const cycleOne = await standings(1)
    expect(cycleOne).toEqual([
      { player_id: 'a', rank: 1, score: 10, coins: 1000 },
      { player_id: 'b', rank: 2, score: 5, coins: 100 },
    ])
    /** The object's storage gone (a new account's namespace, a wiped local state); Neon kept. */
    const wipe = async () => {
      // Reset rather than evicted: an eviction waits for the object's metrics sender (10 s).
      await runInDurableObject(stub(board), async (_: Leaderboard, state) => {
        await state.storage.deleteAll()
        state.abort('storage lost')
      }).catch((err: unknown) => expect(String(err)).toContain('storage lost'))
    }
    // Configured again from Neon by its first call.
    await wipe()
    await submitFor(board, 'b', { score: 20 })
    await submitFor(board, 'c', { score: 7 })
    const info = await fresh<{ cycle: { cycle: number } }>(`/v1/leaderboards/${board}`)
    expect(info.cycle.cycle).toBe(2)
    expect(await (await closeNow(board)).json()).toMatchObject({ closed: { cycle: 2 } })
    expect((await archiveUntilDone(board, 2)).state).toBe('done')
    expect(await standings(2)).toEqual([
      { player_id: 'b', rank: 1, score: 20, coins: 1000 },
      { player_id: 'c', rank: 2, score: 7, coins: 100 },
    ])
    expect(await standings(1)).toEqual(cycleOne)
    // Configured again by a PUT's push.
    await wipe()
    const put = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { rewards: tiers }, ADMIN_KEY),
    )
    expect(((await put.json()) as { cycle: { cycle: number } }).cycle.cycle).toBe(3)
  })

  it('an empty cycle whose carry into the new period its storage refuses (full) stays as storage holds it, in memory too: a write is refused, not put in a window storage does not have', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    let t = Date.now()
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => t
    })
    const { endsAt } = (await fresh<{ cycle: { endsAt: number } }>(`/v1/leaderboards/${board}`))
      .cycle
    // Nobody entered; the hour ends while the board's storage is full.
    type Writes = { setMeta(key: string, value: string): void }
    const writesBack = await replaceMethod<Writes, 'setMeta'>(
      stub(board),
      'setMeta',
      (original) =>
        function (this: Writes, key, value) {
          if (key === 'current') throw new Error('SQLITE_FULL: database or disk is full')
          original.call(this, key, value)
        },
    )
    t = endsAt + 1000
    expect(
      (await call(`/v1/leaderboards/${board}`, { headers: { 'cache-control': 'no-cache' } }))
        .status,
    ).toBe(200)
    const held = () =>
      runInDurableObject(stub(board), (inst: Leaderboard, state) => {
        const memory = (inst as unknown as { current: { startsAt: number; endsAt: number } })
          .current
        const stored = JSON.parse(
          state.storage.sql
            .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'current'`)
            .one().value,
        ) as { startsAt: number; endsAt: number }
        return {
          memory: [memory.startsAt, memory.endsAt],
          stored: [stored.startsAt, stored.endsAt],
        }
      })
    const after = await held()
    expect(after.memory).toEqual(after.stored)
    expect(after.stored[1]).toBe(endsAt)
    const refused = await submitFor(board, 'a', { score: 1 })
    expect(refused.status).toBe(500)
    await refused.body?.cancel()
    // With room again, the carry is made and the write lands in the new period.
    writesBack()
    const a = (await (await submitFor(board, 'a', { score: 1 })).json()) as { cycle: number }
    expect(a.cycle).toBe(1)
    const carried = await held()
    expect(carried.memory).toEqual(carried.stored)
    expect(carried.stored[0]).toBe(endsAt)
  })

  it('a freeze its storage refuses (full) leaves the board in the cycle storage holds, and the alarm still archives the cycle before', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    let t = Date.now()
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => t
      inst.archiveWriter = new NeonArchiveWriter({
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      })
    })
    await submitFor(board, 'a', { score: 1 })
    // Cycle 1 frozen by hand; its archive cannot reach Neon yet.
    expect((await closeNow(board)).status).toBe(202)
    await submitFor(board, 'b', { score: 5 })
    // The board's storage is full: the next freeze's write of its new current cycle fails.
    type Writes = { setMeta(key: string, value: string): void }
    const writesBack = await replaceMethod<Writes, 'setMeta'>(
      stub(board),
      'setMeta',
      (original) =>
        function (this: Writes, key, value) {
          if (key === 'current') throw new Error('SQLITE_FULL: database or disk is full')
          original.call(this, key, value)
        },
    )
    const refused = await closeNow(board)
    expect(refused.status).toBe(500)
    await refused.body?.cancel()
    const info = await fresh<{ cycle: { cycle: number; entries: number } }>(
      `/v1/leaderboards/${board}`,
    )
    expect(info.cycle).toMatchObject({ cycle: 2, entries: 1 })
    const cKey = `c-${crypto.randomUUID()}`
    const c = (await (await submitFor(board, 'c', { score: 9 }, cKey)).json()) as {
      cycle: number
      rank: number
    }
    expect(c).toMatchObject({ cycle: 2, rank: 1 })
    // Neon is back and the hour ends: the alarm's freeze of cycle 2 fails the same way, and cycle
    // 1's archive, which frees storage, runs all the same.
    t += 3_600_000
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
      await inst.alarm()
    })
    expect(await status(board, 1)).toMatchObject({ state: 'done', archived: 1 })
    // A retry of c's submission (its answer lost) gets that answer, though its cycle cannot close.
    const retried = await submitFor(board, 'c', { score: 9 }, cKey)
    expect(retried.status).toBe(200)
    expect(await retried.json()).toEqual({ ...c, replayed: true })
    // Reads are served meanwhile, from the cycle storage holds.
    const page = await fresh<Top>(`/v1/leaderboards/${board}/top`)
    expect(page).toMatchObject({ cycle: 2 })
    expect(page.entries.map((e) => e.playerId)).toEqual(['c', 'b'])
    // With room again, the next run freezes cycle 2 by its schedule, b and c in it.
    writesBack()
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect(await status(board, 2)).toMatchObject({ entries: 2 })
    expect(await archiveUntilDone(board, 2)).toMatchObject({ state: 'done', archived: 2 })
  })

  it("a scheduled close starts its archive within two minutes of the boundary, by the board's id (boards sharing a boundary do not all write to Neon at once); an admin's close at once", async () => {
    // A board whose archive waits at least a second (the id picks where in the window it lands).
    let id = boardId()
    while (archiveDelayMs(id, ARCHIVE_SPREAD_MS, 3_600_000) < 1000) id = boardId()
    const board = await createBoard({ cycle: { every: '1h' } }, id)
    let t = Date.now()
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => t
    })
    await submitFor(board, 'a', { score: 1 })
    const endsAt = (await fresh<{ cycle: { endsAt: number } }>(`/v1/leaderboards/${board}`)).cycle
      .endsAt
    t = endsAt
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    const frozen = await status(board, 1)
    expect(frozen).toMatchObject({ state: 'archiving', archived: 0, reason: 'schedule' })
    const delay = frozen.nextAttemptAt! - endsAt
    expect(delay).toBeGreaterThanOrEqual(0)
    expect(delay).toBeLessThan(120_000)
    // Its alarm comes back for it, and nothing is written before.
    const alarm = await runInDurableObject(stub(board), (_: Leaderboard, state) =>
      state.storage.getAlarm(),
    )
    expect(alarm).toBeLessThanOrEqual(frozen.nextAttemptAt!)
    t = frozen.nextAttemptAt! - 1
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect(await status(board, 1)).toMatchObject({ state: 'archiving', archived: 0 })
    t = frozen.nextAttemptAt!
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect((await status(board, 1)).archived).toBe(1)
    // A close by hand is archived at once.
    await submitFor(board, 'b', { score: 2 })
    expect((await closeNow(board)).status).toBe(202)
    expect((await status(board, 2)).nextAttemptAt).toBeLessThanOrEqual(t)
  })

  it('a scheduled close frozen late (its alarm missed the boundary by minutes) archives within seconds, not the whole spread again', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    let t = Date.now()
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => t
    })
    await submitFor(board, 'a', { score: 1 })
    const { endsAt } = (await fresh<{ cycle: { endsAt: number } }>(`/v1/leaderboards/${board}`))
      .cycle
    t = endsAt + 10 * 60_000
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    const frozen = await status(board, 1)
    expect(frozen).toMatchObject({ reason: 'schedule' })
    // Boards frozen late together are spread over 10 s, not 2 minutes.
    expect(frozen.nextAttemptAt! - t).toBeGreaterThanOrEqual(0)
    expect(frozen.nextAttemptAt! - t).toBeLessThan(10_000)
    t = frozen.nextAttemptAt!
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect((await status(board, 1)).archived).toBe(1)
  })

  it("a scheduled close whose archive start is lost (its alarm gone after the freeze) is picked up by the cron's runs up to the start, not only by those just after the boundary", async () => {
    // A board whose archive starts well past the two runs after the boundary (every minute).
    let id = boardId()
    while (archiveDelayMs(id, ARCHIVE_SPREAD_MS, 3_600_000) < 100_000) id = boardId()
    const board = await createBoard({ cycle: { every: '1h' } }, id)
    let t = Date.now()
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => t
    })
    await submitFor(board, 'a', { score: 1 })
    const { endsAt } = (await fresh<{ cycle: { endsAt: number } }>(`/v1/leaderboards/${board}`))
      .cycle
    t = endsAt
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    const start = (await status(board, 1)).nextAttemptAt!
    expect(start - endsAt).toBeGreaterThanOrEqual(100_000)
    // The alarm set for the start is lost.
    const alarmOf = () =>
      runInDurableObject(stub(board), (_: Leaderboard, state) => state.storage.getAlarm())
    await runInDurableObject(stub(board), (_: Leaderboard, state) => state.storage.deleteAlarm())
    // The every-minute run just after the start (past the two runs after the boundary).
    t = start + 30_000
    await runScheduled(env, t, '* * * * *')
    const alarm = await alarmOf()
    expect(alarm).not.toBeNull()
    expect(alarm!).toBeLessThanOrEqual(t)
    await runInDurableObject(stub(board), (inst: Leaderboard) => inst.alarm())
    expect((await status(board, 1)).archived).toBe(1)
  })

  it('a late write to an ended cycle goes to the new one even without the cron', async () => {
    // Its cycle is read on the real clock and then acted on: not across a boundary.
    await clearOfMinuteTurn(5_000)
    const board = await createBoard({ cycle: { every: '1m' } })
    await submitFor(board, 'a', { score: 1 })
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + 61_000
    })
    const r = (await (await submitFor(board, 'b', { score: 2 })).json()) as {
      cycle: number
      rank: number
    }
    expect(r).toMatchObject({ cycle: 2, rank: 1 })
    expect((await status(board, 1)).entries).toBe(1)
  })
})

describe('a board with a long history of closed cycles', () => {
  it('its alarm and the cron’s tick read the pending archives only, not a row per closed cycle', async () => {
    const board = await createBoard({ cycle: { every: '1m' } })
    // Two weeks of a `1m` board: 20,000 cycles closed and archived, cycle 20,001 running.
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO closes (cycle, starts_at, ends_at, sort_order, rewards, entries, state, closed_at, finished_at, reason)
         SELECT i, i * 60000, i * 60000 + 60000, 'desc', '[]', 0, 'done', i * 60000 + 60000, i * 60000 + 60000, 'schedule' FROM n`,
      )
      state.storage.sql.exec(
        `UPDATE meta SET value = json_set(value, '$.cycle', 20001) WHERE key = 'current'`,
      )
    })
    await evictDurableObject(stub(board))
    expect((await submitFor(board, 'a', { score: 1 })).status).toBe(200)
    const { rowsRead } = await runInDurableObject(stub(board), (inst: Leaderboard) =>
      countRowsRead(inst, async () => {
        await inst.tick(board)
        await inst.alarm()
      }),
    )
    expect(rowsRead).toBeLessThan(100)
    // The running cycle still closes and archives as cycle 20,001.
    expect((await closeNow(board, { cycle: 20001 })).status).toBe(202)
    expect(await archiveUntilDone(board, 20001)).toMatchObject({ state: 'done', archived: 1 })
  })

  it("keeps a done close's record 35 days: each finished close prunes the oldest past that, a few at a time; an older cycle's status is 404 naming where its standings are", async () => {
    const board = await createBoard({ cycle: { every: '1m' } })
    const closesLeft = () =>
      runInDurableObject(stub(board), (_inst: Leaderboard, state) =>
        state.storage.sql
          .exec<{ n: number; first: number }>(
            `SELECT count(*) AS n, min(cycle) AS first FROM closes`,
          )
          .one(),
      )
    // Cycles 1-50 finished just over 35 days ago, 51-100 just under; cycle 101 running.
    const now = Date.now()
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO closes (cycle, starts_at, ends_at, sort_order, rewards, entries, state, closed_at, finished_at, reason)
         SELECT i, 0, 60000, 'desc', '[]', 1, 'done', 60000, CASE WHEN i <= 50 THEN ? ELSE ? END, 'schedule' FROM n`,
        now - CLOSE_RECORD_KEPT_MS - 60_000,
        now - CLOSE_RECORD_KEPT_MS + 3_600_000,
      )
      state.storage.sql.exec(
        `UPDATE meta SET value = json_set(value, '$.cycle', 101) WHERE key = 'current'`,
      )
    })
    await evictDurableObject(stub(board))
    const closeOne = async (cycle: number) => {
      expect((await submitFor(board, 'a', { score: cycle })).status).toBe(200)
      expect((await closeNow(board, { cycle })).status).toBe(202)
      expect(await archiveUntilDone(board, cycle)).toMatchObject({ state: 'done', archived: 1 })
    }
    const adminStatus = (cycle: number) =>
      call(`/v1/admin/leaderboards/${board}/cycles/${cycle}`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      })

    // The first close finished prunes 32 of the 50 old records, the oldest first.
    await closeOne(101)
    expect(await closesLeft()).toEqual({ n: 100 - 32 + 1, first: 33 })
    // The next, the 18 old ones left; then nothing under 35 days old goes.
    await closeOne(102)
    expect(await closesLeft()).toEqual({ n: 50 + 2, first: 51 })
    await closeOne(103)
    expect(await closesLeft()).toEqual({ n: 50 + 3, first: 51 })

    const pruned = await adminStatus(50)
    const p = (await pruned.json()) as { type: string; detail: string }
    expect([pruned.status, p.type]).toEqual([404, 'urn:nexus:problem:not-found'])
    expect(p.detail).toContain(`/v1/leaderboards/${board}/cycles/50/top`)
    const kept = await adminStatus(51)
    expect([kept.status, ((await kept.json()) as CloseStatus).state]).toEqual([200, 'done'])
    // A close naming a pruned cycle is refused as one that never closed here, saying why.
    const late = await closeNow(board, { cycle: 50 })
    expect(late.status).toBe(409)
    expect(((await late.json()) as { detail: string }).detail).toContain('in the last 35 days')
    // A keyed close retried (within its key's day) after its cycle's record was pruned is
    // refused the same way, not answered with no close.
    const keyed = () =>
      call(`/v1/admin/leaderboards/${board}/close`, {
        ...json('POST', { cycle: 103 }, ADMIN_KEY),
        headers: {
          authorization: `Bearer ${ADMIN_KEY}`,
          'content-type': 'application/json',
          'idempotency-key': 'close-103',
        },
      })
    expect((await keyed()).status).toBe(202)
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(`DELETE FROM closes WHERE cycle = 103`)
    })
    const replay = await keyed()
    expect(replay.status).toBe(409)
    expect(((await replay.json()) as { detail: string }).detail).toContain('over 35 days old')
  })
})

describe('a board woken by its boundary', () => {
  /** Whether the object has read its standings into memory since it woke. */
  const indexLoaded = (inst: Leaderboard) =>
    (inst as unknown as { loadedIndex: unknown }).loadedIndex !== null

  it('closes and archives its cycle without reading the standings into memory, and reads after a wake rank as before', async () => {
    const board = await createBoard({ cycle: { every: '1d' }, rewards: REWARDS })
    const n = 2000
    await runInDurableObject(stub(board), (inst: Leaderboard) =>
      submitEach(inst, board, n, playerOf, scoreOf),
    )
    const before = await fresh<Top>(`/v1/leaderboards/${board}/top?limit=100`)
    const lastSeq = await runInDurableObject(
      stub(board),
      (_inst: Leaderboard, state) =>
        state.storage.sql.exec<{ seq: number }>(`SELECT max(seq) AS seq FROM entries`).one().seq,
    )

    // A wake that is not for the standings (the cron's tick, before the boundary) leaves them on
    // disk, and the first read after it ranks exactly as before the wake.
    await evictDurableObject(stub(board))
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      expect(indexLoaded(inst)).toBe(false)
      expect(await inst.tick(board)).toMatchObject({ rolledOver: false })
      expect(indexLoaded(inst)).toBe(false)
    })
    expect(await fresh<Top>(`/v1/leaderboards/${board}/top?limit=100`)).toEqual(before)

    // The day ends while the board sleeps; its alarm wakes it to close the cycle.
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(
        `UPDATE meta SET value = json_set(value, '$.endsAt', ?) WHERE key = 'current'`,
        Date.now() - 1000,
      )
    })
    await evictDurableObject(stub(board))
    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      // Every build of the index goes through rebuildIndex: count them.
      const woken = inst as unknown as { rebuildIndex: () => unknown }
      const rebuild = woken.rebuildIndex.bind(inst)
      let builds = 0
      woken.rebuildIndex = () => {
        builds++
        return rebuild()
      }
      await inst.alarm()
      // The cycle rolled over to a new, empty one without the closed one ever being loaded.
      expect(builds).toBe(0)
      expect((inst as unknown as { loadedIndex: { size: number } }).loadedIndex.size).toBe(0)
    })
    expect(await status(board, 1)).toMatchObject({ entries: n, reason: 'schedule' })
    expect(await archiveUntilDone(board, 1)).toMatchObject({ state: 'done', archived: n })
    // The archive ranks from SQLite: scoreOf is a permutation of 0..N-1, so player i's score
    // among the first n is known, and the archived top 100 is the live top 100.
    const [top] =
      await pg()`select array_agg(player_id order by rank) as ids from leaderboard_archive
                             where leaderboard_id = ${board} and cycle = 1 and rank <= 100`
    expect(top!.ids).toEqual(before.entries.map((e) => e.playerId))
    expect(await archived(board, 1)).toMatchObject({ rows: n, rewards: 100, rewarded: 100 })

    // The new cycle takes submissions after another wake (the closed cycle's rows are deleted
    // by now), numbered after every earlier one.
    await evictDurableObject(stub(board))
    const r = (await (await submitFor(board, 'after', { score: 1 })).json()) as {
      cycle: number
      rank: number
    }
    expect(r).toMatchObject({ cycle: 2, rank: 1 })
    const seq = await runInDurableObject(
      stub(board),
      (_inst: Leaderboard, state) =>
        state.storage.sql
          .exec<{ seq: number }>(`SELECT seq FROM entries WHERE cycle = 2 AND player_id = 'after'`)
          .one().seq,
    )
    expect(seq).toBeGreaterThan(lastSeq)
  })
})

describe('an account ban that reaches a board after its boundary', () => {
  it('writes the reward of a player banned before the cycle ended voided (a payer skips it); a ban from after the end leaves the reward standing', async () => {
    const board = await createBoard({
      rewards: [{ fromRank: 1, toRank: 3, reward: { coins: 10 } }],
    })
    const run = crypto.randomUUID().slice(0, 8)
    const [early, late, fine] = [`ban-early-${run}`, `ban-late-${run}`, `ban-fine-${run}`]
    for (const [player, score] of [
      [early, 3],
      [late, 2],
      [fine, 1],
    ] as const) {
      expect((await submitFor(board, player, { score })).status).toBe(200)
    }
    // Neon holds both bans; their walks have not reached this board (thousands of boards).
    await pg()`insert into player_bans (player_id, banned_at)
               values (${early}, now() - interval '1 minute'), (${late}, now() + interval '1 hour')`
    onTestFinished(async () => {
      await pg()`delete from player_bans where player_id in (${early}, ${late})`
    })
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
    await archiveUntilDone(board, 1)
    const rows = await pg()`select player_id, rank, voided_at is not null as voided, void_reason
                              from rewards where leaderboard_id = ${board} order by rank`
    expect(rows).toEqual([
      {
        player_id: early,
        rank: 1,
        voided: true,
        void_reason: 'account banned before the cycle ended',
      },
      { player_id: late, rank: 2, voided: false, void_reason: null },
      { player_id: fine, rank: 3, voided: false, void_reason: null },
    ])
    // The payout list says so.
    const payout = (await (
      await call(`/v1/admin/leaderboards/${board}/cycles/1/rewards`, bearer(ADMIN_KEY))
    ).json()) as { rewards: { playerId: string; voidedAt: string | null }[] }
    expect(payout.rewards.map((r) => r.voidedAt !== null)).toEqual([true, false, false])
  })
})

describe('history cursors', () => {
  /** The cursor encoding the rewards route uses (base64url JSON), around any value. */
  const forged = (v: unknown) =>
    btoa(JSON.stringify(v)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')

  it('rewards page by their cursor; one the route never issued is 422, never a 500', async () => {
    const { token, playerId } = await newGuest()
    const rewards = [{ fromRank: 1, toRank: 1, reward: { coins: 1 } }]
    for (const board of [await createBoard({ rewards }), await createBoard({ rewards })]) {
      await submitFor(board, playerId, { score: 1 })
      expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
      await archiveUntilDone(board, 1)
    }
    type Page = { rewards: { leaderboardId: string }[]; nextCursor: string | null }
    const mine = (query: string) =>
      call(`/v1/players/me/rewards?${query}`, bearer(token, { 'cache-control': 'no-cache' }))
    const first = (await (await mine('limit=1')).json()) as Page
    expect(first.rewards).toHaveLength(1)
    const second = (await (await mine(`limit=1&cursor=${first.nextCursor}`)).json()) as Page
    expect(second.rewards).toHaveLength(1)
    expect(second.rewards[0]!.leaderboardId).not.toBe(first.rewards[0]!.leaderboardId)
    // The last page says so: no cursor to an empty page (a read counted for nothing).
    expect(second.nextCursor).toBeNull()
    expect(((await (await mine('limit=2')).json()) as Page).nextCursor).toBeNull()

    const cursors = [
      forged(['2025-01-01T00:00:00.000000Z', 'lb-a', 3_000_000_000]), // past int4
      forged(['2025-01-01T00:00:00.000000Z', 'lb\u0000a', 1]), // a NUL PostgreSQL refuses
      forged(['2020', 'lb-a', 1]), // Date.parse reads it, PostgreSQL does not
      forged(['2025-02-30T00:00:00.000000Z', 'lb-a', 1]), // Date.parse rolls it into March
      forged(['2025-01-01T00:00:00.000000Z', 'lb-a', 0]),
    ]
    for (const cursor of cursors) {
      const p = await problem(await mine(`cursor=${cursor}`))
      expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
  })

  it('a closed cycle’s page cursor past any rank Neon can hold is 422, never a 500', async () => {
    const board = await createBoard()
    await submitFor(board, 'only', { score: 1 })
    expect((await closeNow(board, { cycle: 1 })).status).toBe(202)
    await archiveUntilDone(board, 1)
    const page = (cursor: string) =>
      call(`/v1/leaderboards/${board}/cycles/1/top?cursor=${cursor}`, {
        headers: { 'cache-control': 'no-cache' },
      })
    expect(await problem(await page('3000000000'))).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    // The last rank Neon can hold is still a cursor: past the end, an empty page.
    const last = (await (await page('2147483647')).json()) as Top
    expect(last).toMatchObject({ entries: [], nextCursor: null })
  })
})

/** Closes cycle 1 of a board holding `n` entries, with the archive pages `failing` picks failing. */
async function closeWithFailingPages(
  board: string,
  n: number,
  failing: (through: number) => boolean,
) {
  await runInDurableObject(stub(board), async (inst: Leaderboard) => {
    const entries = Array.from({ length: n }, (_, i) => ({
      playerId: `p${String(i).padStart(5, '0')}`,
      score: i,
      subscore: 0,
      metadata: null,
    }))
    for (let i = 0; i < n; i += 500) {
      const r = await inst.importEntries(board, entries.slice(i, i + 500))
      if (!r.ok) throw new Error(r.detail)
    }
    const real = new NeonArchiveWriter(env)
    inst.archiveWriter = {
      async writePage(page) {
        if (failing(page.archivedThrough)) throw new Error('injected: Neon blip')
        return real.writePage(page)
      },
      complete: (p) => real.complete(p),
    }
  })
  expect((await closeNow(board)).status).toBe(202)
  await runInDurableObject(stub(board), (inst: Leaderboard) => inst.runArchive({ force: true }))
}

describe('a closed cycle read while it is archived', () => {
  type Page = { complete: boolean; entries: { rank: number }[]; nextCursor: string | null }
  const read = async (board: string, query = '') =>
    call(`/v1/leaderboards/${board}/cycles/1/top${query}`, {
      headers: { 'cache-control': 'no-cache' },
    })

  it("an admin lists a cycle's rewards by rank, for paying out: partial while archiving, every reward once when complete", async () => {
    const board = await createBoard({
      rewards: [
        { fromRank: 1, toRank: 1200, reward: { coins: 10 } },
        { fromRank: 1201, toRank: 1500, reward: { coins: 1 } },
      ],
    })
    type Page = {
      cycle: number
      complete: boolean
      rewards: { playerId: string; rank: number; reward: { coins: number }; awardedAt: string }[]
      nextCursor: string | null
    }
    const list = async (query = '') => {
      const res = await call(
        `/v1/admin/leaderboards/${board}/cycles/1/rewards?${query}`,
        bearer(ADMIN_KEY),
      )
      expect(res.status).toBe(200)
      return (await res.json()) as Page
    }
    const all = async () => {
      const out: Page['rewards'] = []
      let page = await list('limit=400')
      out.push(...page.rewards)
      while (page.nextCursor) {
        page = await list(`limit=400&cursor=${page.nextCursor}`)
        out.push(...page.rewards)
      }
      return { complete: page.complete, rewards: out }
    }
    // The page of ranks 1–1,000 fails; 1,001–2,000 is in.
    await closeWithFailingPages(board, 2000, (through) => through === 1000)
    const partial = await all()
    expect(partial.complete).toBe(false)
    expect(partial.rewards.map((r) => r.rank)).toEqual(
      Array.from({ length: 500 }, (_, i) => 1001 + i),
    )

    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
    })
    await archiveUntilDone(board, 1)
    const done = await all()
    expect(done.complete).toBe(true)
    expect(done.rewards.map((r) => r.rank)).toEqual(Array.from({ length: 1500 }, (_, i) => i + 1))
    expect(new Set(done.rewards.map((r) => r.playerId)).size).toBe(1500)
    // The highest score ranks first: p01999 (score 1999) is rank 1.
    expect(done.rewards[0]).toMatchObject({ playerId: 'p01999', rank: 1, reward: { coins: 10 } })
    expect(done.rewards[1200]).toMatchObject({ rank: 1201, reward: { coins: 1 } })
    expect(Date.parse(done.rewards[0]!.awardedAt)).not.toBeNaN()
    // A page is read in rank order from an index, not by sorting the cycle's whole payout list
    // (up to 100,000 rewards, read again for every page). With sorting priced out, the planner
    // still has to sort unless an index gives the order.
    const sql = pg()
    const [, plan] = await sql.transaction([
      sql`set local enable_sort = off`,
      sql.query(`explain ${CYCLE_REWARDS_PAGE}`, [board, 1, 400, 401]),
    ])
    const lines = (plan as { 'QUERY PLAN': string }[]).map((r) => r['QUERY PLAN']).join('\n')
    expect(lines).toContain('rewards_cycle_rank_idx')
    expect(lines).not.toMatch(/\bSort\b/)

    // Refusals: an unknown cycle 404, a bad cursor or limit 422, a player 403.
    const status = async (path: string, credential = ADMIN_KEY) =>
      (await problem(await call(path, bearer(credential)))).status
    expect(await status(`/v1/admin/leaderboards/${board}/cycles/9/rewards`)).toBe(404)
    expect(await status(`/v1/admin/leaderboards/${board}/cycles/1/rewards?cursor=x`)).toBe(422)
    expect(await status(`/v1/admin/leaderboards/${board}/cycles/1/rewards?limit=1001`)).toBe(422)
    const guest = await newGuest()
    expect(await status(`/v1/admin/leaderboards/${board}/cycles/1/rewards`, guest.token)).toBe(403)
  })

  it('an admin voids a reward (a cheat found after the close): kept in the ledger marked voided, for the payer and the player; restored by DELETE; each retry changes nothing', async () => {
    const board = await createBoard({ rewards: [{ fromRank: 1, toRank: 2, reward: { coins: 5 } }] })
    const [cheat, honest] = [`cheat-${crypto.randomUUID()}`, `honest-${crypto.randomUUID()}`]
    await submitFor(board, cheat, { score: 100 })
    await submitFor(board, honest, { score: 50 })
    // The pages the archive writes, to write one again after the void (a retry of the archive).
    const pages: ArchivePage[] = []
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      const real = new NeonArchiveWriter(env)
      inst.archiveWriter = {
        writePage: (page) => {
          pages.push(page)
          return real.writePage(page)
        },
        complete: (p) => real.complete(p),
      }
    })
    expect((await closeNow(board)).status).toBe(202)
    await archiveUntilDone(board, 1)
    const path = (player: string) =>
      `/v1/admin/leaderboards/${board}/cycles/1/rewards/${player}/void`
    type Reward = {
      playerId: string
      rank: number
      voidedAt: string | null
      voidReason: string | null
    }
    const voided = await call(path(cheat), json('PUT', { reason: 'speed hack' }, ADMIN_KEY))
    expect(voided.status).toBe(200)
    const first = (await voided.json()) as Reward
    expect(first).toMatchObject({ playerId: cheat, rank: 1, voidReason: 'speed hack' })
    expect(Date.parse(first.voidedAt!)).not.toBeNaN()
    // Voided again: the first time stays, a new reason is taken; without one, the reason stays.
    const again = (await (
      await call(path(cheat), json('PUT', { reason: 'confirmed' }, ADMIN_KEY))
    ).json()) as Reward
    expect(again).toMatchObject({ voidedAt: first.voidedAt, voidReason: 'confirmed' })
    // The archive's page written again (a retry after a lost answer) leaves the void standing.
    expect(pages.length).toBeGreaterThan(0)
    for (const page of pages) await new NeonArchiveWriter(env).writePage(page)
    expect(await (await call(path(cheat), json('PUT', {}, ADMIN_KEY))).json()).toMatchObject({
      voidedAt: first.voidedAt,
      voidReason: 'confirmed',
    })
    // The payout list and the player's own rewards say so; the honest player's stands, rank 2.
    const listed = (await (
      await call(`/v1/admin/leaderboards/${board}/cycles/1/rewards`, bearer(ADMIN_KEY))
    ).json()) as { rewards: Reward[] }
    expect(listed.rewards).toMatchObject([
      { playerId: cheat, rank: 1, voidedAt: first.voidedAt, voidReason: 'confirmed' },
      { playerId: honest, rank: 2, voidedAt: null, voidReason: null },
    ])
    const mine = async (player: string) =>
      (
        (await (
          await call('/v1/players/me/rewards', bearer((await issuePlayerToken(env, player)).token))
        ).json()) as { rewards: { voidedAt: string | null }[] }
      ).rewards
    expect(await mine(cheat)).toMatchObject([{ voidedAt: first.voidedAt }])
    expect(await mine(honest)).toMatchObject([{ voidedAt: null }])
    // The player is not shown the admin's note.
    expect((await mine(cheat))[0]).not.toHaveProperty('voidReason')
    // Support reads a player's rewards as the player does, with each void's reason; only with
    // the admin key.
    const support = await call(`/v1/admin/players/${cheat}/rewards`, bearer(ADMIN_KEY))
    expect(support.status).toBe(200)
    expect(((await support.json()) as { rewards: unknown[] }).rewards).toEqual(
      (await mine(cheat)).map((r) => ({ ...r, voidReason: 'confirmed' })),
    )
    const asPlayer = await call(
      `/v1/admin/players/${cheat}/rewards`,
      bearer((await issuePlayerToken(env, cheat)).token),
    )
    expect((await problem(asPlayer)).status).toBe(403)
    const badCursor = await call(`/v1/admin/players/${cheat}/rewards?cursor=x`, bearer(ADMIN_KEY))
    expect(await problem(badCursor)).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    // Restored, twice: it stands, and the second changes nothing.
    for (let i = 0; i < 2; i++) {
      const restored = await call(path(cheat), {
        method: 'DELETE',
        headers: { authorization: `Bearer ${ADMIN_KEY}` },
      })
      expect(restored.status).toBe(200)
      expect(await restored.json()).toMatchObject({
        playerId: cheat,
        voidedAt: null,
        voidReason: null,
      })
    }
    // Refusals change nothing: no such reward 404, a bad reason or body 422, a player 403.
    const refused = async (url: string, init: RequestInit) =>
      (await problem(await call(url, init))).status
    expect(await refused(path('nobody'), json('PUT', {}, ADMIN_KEY))).toBe(404)
    expect(
      await refused(
        `/v1/admin/leaderboards/${board}/cycles/2/rewards/${honest}/void`,
        json('PUT', {}, ADMIN_KEY),
      ),
    ).toBe(404)
    expect(await refused(path(honest), json('PUT', { reason: '' }, ADMIN_KEY))).toBe(422)
    expect(await refused(path(honest), json('PUT', { reason: 'x'.repeat(257) }, ADMIN_KEY))).toBe(
      422,
    )
    expect(await refused(path(honest), json('PUT', { why: 'x' }, ADMIN_KEY))).toBe(422)
    const guest = await newGuest()
    expect(await refused(path(honest), json('PUT', {}, guest.token))).toBe(403)
    expect(await mine(honest)).toMatchObject([{ voidedAt: null }])
  })

  it('is 404 until its first ranks are in, even with later ones in first', async () => {
    const board = await createBoard()
    await closeWithFailingPages(board, 2000, (through) => through === 1000)
    const p = await problem(await read(board))
    expect([p.status, p.type]).toEqual([404, 'urn:nexus:problem:not-found'])
  })

  it('gives a walk a cursor to go on from at the last rank in, whatever its page size', async () => {
    // Of 2,500 ranks only 1–1000 are in: a page of 601–1000 is short, and not the end.
    const board = await createBoard()
    await closeWithFailingPages(board, 2500, (through) => through !== 1000)
    const page = (await (await read(board, '?limit=600&cursor=600')).json()) as Page
    expect(page.complete).toBe(false)
    expect(page.entries.map((e) => e.rank)).toEqual(Array.from({ length: 400 }, (_, i) => 601 + i))
    expect(page.nextCursor).toBe('1000')
  })

  it('once complete, is served from the caches while Neon is unreachable', async () => {
    const board = await createBoard()
    await closeWithFailingPages(board, 5, () => false)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const path = `/v1/leaderboards/${board}/cycles/1/top?limit=5`
    const first = await call(path)
    expect(((await first.json()) as Page).complete).toBe(true)
    const down = await callWithEnv(
      {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      },
      path,
    )
    expect(down.status).toBe(200)
    expect(down.headers.get('x-cache')).toMatch(/^HIT/)
    expect(((await down.json()) as Page).entries.map((e) => e.rank)).toEqual([1, 2, 3, 4, 5])
  })
})

describe('the cron as a safety net for archives', () => {
  it('resumes an archive begun in Neon whose alarm was lost, on a board without a schedule', async () => {
    const board = await createBoard()
    // Ranks 1001–2000 go in; the first page fails, and the board's alarm is then lost.
    await closeWithFailingPages(board, 2000, (through) => through === 1000)
    // Its next attempt is an hour away (a backoff), and the alarm that would make it is lost.
    const retryAt = Date.now() + 3_600_000
    await runInDurableObject(stub(board), async (inst: Leaderboard, state) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
      state.storage.sql.exec(`UPDATE closes SET next_attempt_at = ?`, retryAt)
      await state.storage.deleteAlarm()
    })
    const [before] =
      await pg()`select completed_at from leaderboard_cycles where leaderboard_id = ${board}`
    expect(before).toEqual({ completed_at: null })

    const nudged = () => metricTotal('nexus_cron_boards_poked_total')
    const nudgedBefore = nudged()
    const ctx = createExecutionContext()
    await worker.scheduled(
      createScheduledController({ scheduledTime: Date.now(), cron: '* * * * *' }),
      env,
      ctx,
    )
    await waitOnExecutionContext(ctx)
    expect(nudged() - nudgedBefore).toBeGreaterThanOrEqual(1)
    // The board has its alarm back, for its next attempt; that attempt finishes the archive.
    const alarm = await runInDurableObject(stub(board), (_i, state) => state.storage.getAlarm())
    expect(alarm).toBe(retryAt)
    expect((await archiveUntilDone(board, 1)).state).toBe('done')
    const [n] =
      await pg()`select count(*)::int as n from leaderboard_archive where leaderboard_id = ${board}`
    expect(n).toEqual({ n: 2000 })
  })

  it("a close that never reached Neon, whose alarm was lost, is taken up at the board's next wake", async () => {
    const board = await createBoard()
    // The first page fails (Neon down), so Neon has no record of the close for the cron to find.
    await closeWithFailingPages(board, 300, () => true)
    const retryAt = Date.now() + 3_600_000
    await runInDurableObject(stub(board), async (_inst: Leaderboard, state) => {
      state.storage.sql.exec(`UPDATE closes SET next_attempt_at = ?`, retryAt)
      await state.storage.deleteAlarm()
    })
    const [none] =
      await pg()`select count(*)::int as n from leaderboard_cycles where leaderboard_id = ${board}`
    expect(none).toEqual({ n: 0 })
    // A wake for anything (a player's read) brings the alarm back, for the close's next attempt.
    await evictDurableObject(stub(board))
    await fresh(`/v1/leaderboards/${board}`)
    const alarm = await runInDurableObject(stub(board), (_i, state) => state.storage.getAlarm())
    expect(alarm).toBe(retryAt)
    expect((await archiveUntilDone(board, 1)).archived).toBe(300)
  })

  it('a board that does not load names itself in an error line (its calls fail until a version that loads it)', async () => {
    const board = await createBoard()
    onTestFinished(async () => {
      // Out of the cron's walks in the rest of this file: each would fail on it.
      await pg()`delete from leaderboards where id = ${board}`
    })
    await submitFor(board, 'a', { score: 1 })
    // A stored cycle this version refuses, as after a rollback past the version that wrote it.
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(
        `UPDATE meta SET value = json_set(value, '$.cycle', json('{"every":"1s"}')) WHERE key = 'config'`,
      )
    })
    await evictDurableObject(stub(board))
    const lines = errorLines()
    const read = await call(`/v1/leaderboards/${board}`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(read.status).toBeGreaterThanOrEqual(500)
    await read.body?.cancel()
    const line = lines.find((l) => l.msg === 'board does not load')
    expect(line).toMatchObject({ level: 'error', actor: `Leaderboard:${board}` })
    expect(String(line!.error)).toContain('stored cycle is invalid')
  })

  it('a board whose schema step fails (before the load reads its name) names itself in the error line too', async () => {
    const board = await createBoard()
    onTestFinished(async () => {
      await pg()`delete from leaderboards where id = ${board}`
    })
    await submitFor(board, 'a', { score: 1 })
    // Schema 7 again: step 8 adds a column the table already has, and throws.
    await runInDurableObject(stub(board), (_inst: Leaderboard, state) => {
      state.storage.sql.exec(`UPDATE meta SET value = '7' WHERE key = 'schema'`)
    })
    await evictDurableObject(stub(board))
    const lines = errorLines()
    const read = await call(`/v1/leaderboards/${board}`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(read.status).toBeGreaterThanOrEqual(500)
    await read.body?.cancel()
    const line = lines.find((l) => l.msg === 'board does not load')
    expect(line).toMatchObject({ level: 'error', board })
    expect(String(line!.error)).toContain('duplicate column')
  })
})
