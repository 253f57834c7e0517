import {
  createExecutionContext,
  createScheduledController,
  evictDurableObject,
  runInDurableObject,
} from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import type { LeaderboardConfig } from '../../workers/core/leaderboard.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clearOfTurn,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { boardId, createBoard, fresh, pg, storedBy, submitFor, type Top } from './helpers/boards.ts'
import { createQueue } from './helpers/matchmaking.ts'
import { lookbackMs, pokeBoards, pushLostConfigs, runScheduled } from '../../workers/scheduled.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { hubShardName, METRICS_HUB_SHARDS, sendMetrics } from '../../workers/lib/metrics-flush.ts'
import worker from '../../workers/index.ts'

/** Boards the cron had to nudge, as this isolate has counted them. */
function cronNudges(): number {
  return (
    localFamilies()
      .find((f) => f.name === 'nexus_cron_boards_poked_total')
      ?.series.reduce((n, x) => n + ('value' in x ? x.value : 0), 0) ?? 0
  )
}

/**
 * A board (a 1-minute cycle unless `every` says) whose clock stands `afterBoundary` ms past its
 * cycle's end: its alarm for the end has not run yet, or (`lost`) is gone.
 */
async function boardPast(afterBoundary: number, lost: boolean, every: '1m' | '1h' = '1m') {
  // The alarm read below is the one for the cycle the score went to: not across a boundary.
  await clearOfTurn(every === '1m' ? 60_000 : 3_600_000, 5_000)
  const id = await createBoard({ cycle: { every } })
  expect((await submitFor(id, 'p', { score: 1 })).status).toBe(200)
  const at = await runInDurableObject(
    env.LEADERBOARD.getByName(id),
    async (inst: Leaderboard, state) => {
      const info = await inst.info(id)
      if ('ok' in info) throw new Error(info.detail)
      const t = info.cycle.endsAt! + afterBoundary
      inst.now = () => t
      if (lost) await state.storage.deleteAlarm()
      else expect(await state.storage.getAlarm()).toBe(info.cycle.endsAt)
      return t
    },
  )
  return { id, at }
}

/** The cycle a board has stored as current (read without running its clock). */
function cycleNumber(id: string): Promise<number> {
  return runInDurableObject(env.LEADERBOARD.getByName(id), (_i: Leaderboard, state) => {
    const row = state.storage.sql
      .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'current'`)
      .one()
    return (JSON.parse(row.value) as { cycle: number }).cycle
  })
}

describe('leaderboard configuration', () => {
  it('creates a board with defaults (201), then updates it (200), readable by anyone', async () => {
    // The running cycle is read twice: the same one, not across a boundary.
    await clearOfTurn(5 * 60_000, 5_000)
    const id = boardId()
    const created = await call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', { cycle: { every: '5m' } }, ADMIN_KEY),
    )
    expect(created.status).toBe(201)
    const body = (await created.json()) as {
      config: Record<string, unknown>
      cycle: { cycle: number; startsAt: number; endsAt: number }
    }
    expect(body.config).toMatchObject({
      sortOrder: 'desc',
      operator: 'best',
      submitsPerMinute: 10,
      metadataMaxBytes: 512,
      maxEntries: 1_000_000,
      rewards: [],
    })
    expect(body.cycle.cycle).toBe(1)
    // 5-minute cycles are aligned to the epoch: the window contains now and spans 5 minutes.
    expect(body.cycle.endsAt - body.cycle.startsAt).toBe(5 * 60_000)
    expect(body.cycle.startsAt % (5 * 60_000)).toBe(0)
    expect(body.cycle.startsAt).toBeLessThanOrEqual(Date.now())
    expect(body.cycle.endsAt).toBeGreaterThan(Date.now())

    // Someone is ranked, so the running cycle keeps its rules (an empty one would take the new).
    expect((await submitFor(id, 'ranked', { score: 1 })).status).toBe(200)
    const updated = await call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', { cycle: { every: '5m' }, sortOrder: 'asc', submitsPerMinute: 30 }, ADMIN_KEY),
    )
    expect(updated.status).toBe(200)
    const info = (await (
      await call(`/v1/leaderboards/${id}`, { headers: { 'cache-control': 'no-cache' } })
    ).json()) as { config: Record<string, unknown>; cycle: Record<string, unknown> }
    expect(info.config).toMatchObject({ sortOrder: 'asc', submitsPerMinute: 30 })
    // The running cycle still ranks by the rules it started with, and says so.
    expect(info.cycle).toMatchObject({ cycle: 1, sortOrder: 'desc', operator: 'best' })
  })

  it('a configuration whose push to the board was lost reaches it with the next cron', async () => {
    const id = await createBoard({ scoreMax: 1000, submitsPerMinute: 600 })
    // Version 2 is in Neon, but its push never reached the board (as a PUT that failed after
    // saving leaves it).
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMax}', '500'),
      version = version + 1 where id = ${id}`
    expect((await submitFor(id, 'p1', { score: 800 })).status).toBe(200)
    await runScheduled(env, Date.now())
    const refused = await problem(await submitFor(id, 'p2', { score: 800 }))
    expect(refused).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    const [row] = await pg()`select version, pushed_version from leaderboards where id = ${id}`
    expect(row).toEqual({ version: 2, pushed_version: 2 })
  })

  it("the cron's lost pushes stop at the run's time for them: those left are the next run's", async () => {
    const id = await createBoard({ scoreMax: 1000, submitsPerMinute: 600 })
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMax}', '500'),
      version = version + 1 where id = ${id}`
    // A run out of time for them: nothing pushed, none marked.
    await pushLostConfigs(env as never, { budgetMs: -1 })
    expect((await submitFor(id, 'p1', { score: 800 })).status).toBe(200)
    const [before] = await pg()`select pushed_version from leaderboards where id = ${id}`
    expect(before).toEqual({ pushed_version: 1 })
    await pushLostConfigs(env as never)
    expect((await submitFor(id, 'p2', { score: 800 })).status).toBe(422)
    const [after] = await pg()`select pushed_version from leaderboards where id = ${id}`
    expect(after).toEqual({ pushed_version: 2 })
  })

  it("the cron's lost pushes go round from a board drawn at random: those after it first, then from the first up to it, each once", async () => {
    const run = `lost-${crypto.randomUUID().slice(0, 8)}`
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push(await createBoard({ scoreMax: 1000 }, `${run}-${i}`))
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMax}', '500'),
      version = version + 1 where id = any(${ids})`
    const pushedTo: string[] = []
    await replaceMethod<Leaderboard, 'configure'>(
      env.LEADERBOARD.getByName(ids[0]!),
      'configure',
      (configure) =>
        function (this: Leaderboard, boardId, ...rest) {
          if (boardId.startsWith(run)) pushedTo.push(boardId)
          return configure.call(this, boardId, ...rest)
        },
    )
    await pushLostConfigs(env as never, { start: ids[1]! })
    expect(pushedTo).toEqual([ids[2], ids[0], ids[1]])
    const rows = await pg()`select pushed_version from leaderboards where id = any(${ids})`
    expect(rows).toEqual([{ pushed_version: 2 }, { pushed_version: 2 }, { pushed_version: 2 }])
  })

  it("the cron's lost pushes stop at the run's count for them (its subrequests are bounded): the next run takes the rest", async () => {
    const run = `lost-${crypto.randomUUID().slice(0, 8)}`
    const ids: string[] = []
    for (let i = 0; i < 3; i++) ids.push(await createBoard({ scoreMax: 1000 }, `${run}-${i}`))
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMax}', '500'),
      version = version + 1 where id = any(${ids})`
    const pushed = async () =>
      (
        (await pg()`select id from leaderboards where id = any(${ids}) and pushed_version = 2
                      order by id`) as { id: string }[]
      ).map((r) => r.id)
    // From the first: those after it come first, one of them this run.
    expect(await pushLostConfigs(env as never, { start: ids[0]!, maxPushes: 1 })).toBe(1)
    expect(await pushed()).toEqual([ids[1]])
    await pushLostConfigs(env as never, { start: ids[1]!, maxPushes: 1 })
    expect(await pushed()).toEqual([ids[1], ids[2]])
    // The next run, from just before the first: it comes first.
    await pushLostConfigs(env as never, { start: `${run}-`, maxPushes: 1 })
    expect(await pushed()).toEqual(ids)
  })

  it('a configuration saved before maxEntries existed is the one in force: its push at the same version is marked pushed, not overruled', async () => {
    const id = await createBoard({ scoreMax: 1000 })
    // The row as a Worker of the version before saved it, its push not yet marked.
    await pg()`update leaderboards set config = config - 'maxEntries', pushed_version = 0
      where id = ${id}`
    await runScheduled(env, Date.now())
    const [row] = await pg()`select version, pushed_version from leaderboards where id = ${id}`
    expect(row).toEqual({ version: 1, pushed_version: 1 })
    const info = await fresh<{ config: { maxEntries: number } }>(`/v1/leaderboards/${id}`)
    expect(info.config.maxEntries).toBe(1_000_000)
  })

  it('a configuration the board failed to store is not taken as applied: the cron pushes it again, and it lasts past a wake', async () => {
    const id = await createBoard({ scoreMax: 1000, submitsPerMinute: 600 })
    const board = env.LEADERBOARD.getByName(id)
    // The board's write of the new configuration fails (its storage full, say).
    type Writes = { setMeta(key: string, value: string): void }
    const writesBack = await replaceMethod<Writes, 'setMeta'>(
      board,
      'setMeta',
      (original) =>
        function (this: Writes, key, value) {
          if (key === 'config') throw new Error('SQLITE_FULL: database or disk is full')
          original.call(this, key, value)
        },
    )
    const put = await call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', { scoreMax: 500, submitsPerMinute: 600 }, ADMIN_KEY),
    )
    expect(put.status).toBe(500)
    await put.body?.cancel()
    writesBack()
    // The board runs by the configuration it holds, not the one it failed to store…
    expect((await submitFor(id, 'p1', { score: 800 })).status).toBe(200)
    // …until the cron pushes the new one again, which then lasts past a wake.
    await runScheduled(env, Date.now())
    await evictDurableObject(board)
    const refused = await problem(await submitFor(id, 'p2', { score: 800 }))
    expect(refused).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })

  it('a lost push is retried even behind a full page of pushes that fail for good', async () => {
    const id = await createBoard({ scoreMax: 1000, submitsPerMinute: 600 })
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMax}', '500'),
      version = version + 1 where id = ${id}`
    // 201 boards (more than the cron's page) whose stored configuration their objects refuse,
    // changed before this board's: every push to them fails, every run.
    const prefix = boardId('stuck')
    const stuck = Array.from({ length: 201 }, (_, i) => `${prefix}-${i}`)
    await pg()`insert into leaderboards (id, config, version, pushed_version, updated_at)
      select unnest(${stuck}::text[]), '{"cycle": {"every": "never"}}'::jsonb, 2, 1,
        now() - interval '1 hour'`
    try {
      const run = await runScheduled(env, Date.now())
      expect(run.configsPushed).toBeGreaterThanOrEqual(1)
      const refused = await problem(await submitFor(id, 'p2', { score: 800 }))
      expect(refused).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      const [row] = await pg()`select version, pushed_version from leaderboards where id = ${id}`
      expect(row).toEqual({ version: 2, pushed_version: 2 })
      const [left] = await pg()`select count(*)::int as n from leaderboards
        where id = any(${stuck}) and pushed_version < version`
      expect(left!.n).toBe(201)
    } finally {
      await pg()`delete from leaderboards where id = any(${stuck})`
    }
  })

  it('refuses each invalid configuration with 422 naming the field, and keeps the old one', async () => {
    const id = await createBoard({ scoreMax: 1000 })
    const bad: [Record<string, unknown>, string][] = [
      [{ sortOrder: 'sideways' }, 'sortOrder'],
      [{ operator: 'max' }, 'operator'],
      [{ cycle: { every: '30s' } }, 'cycle'],
      [{ cycle: { cron: '0 0 31 2 *' } }, 'cycle'],
      [{ cycle: { every: '5m', cron: '* * * * *' } }, 'cycle'],
      [{ cycle: '5m' }, 'cycle'],
      [{ cycle: { cron: '0 0 * * *', timeZone: 'Mars/Base' } }, 'cycle'],
      [{ cycle: { cron: '0 0 * * *', timeZone: 'x'.repeat(65) } }, 'cycle'],
      [{ cycle: { cron: '0 0 * * *', timeZone: 5 } }, 'cycle'],
      [{ cycle: { every: '1d', timeZone: 'Europe/Berlin' } }, 'cycle'],
      [{ scoreMin: 10, scoreMax: 5 }, 'scoreMax'],
      [{ scoreMax: 1e300 }, 'scoreMax'],
      [{ submitsPerMinute: 0 }, 'submitsPerMinute'],
      [{ submitsPerMinute: 1.5 }, 'submitsPerMinute'],
      [{ submitsPerMinute: 601 }, 'submitsPerMinute'],
      // At most 50 tiers, ranks at most 100,000 (a tier to rank 10,000,000 would pay every
      // entry of a million-entry cycle).
      [
        {
          rewards: Array.from({ length: 51 }, (_, i) => ({
            fromRank: i + 1,
            toRank: i + 1,
            reward: { coins: 1 },
          })),
        },
        'rewards',
      ],
      [{ rewards: [{ fromRank: 1, toRank: 100_001, reward: { coins: 1 } }] }, 'rewards.0.toRank'],
      [{ metadataMaxBytes: 100_000 }, 'metadataMaxBytes'],
      [{ maxEntries: 0 }, 'maxEntries'],
      [{ maxEntries: 1_500_001 }, 'maxEntries'],
      [{ maxEntries: 2.5 }, 'maxEntries'],
      [{ maxEntries: '10' }, 'maxEntries'],
      // Each within its bounds, together past what a board may store: two cycles of entries
      // at 180 + 2 × 4096 bytes each within 6 GB hold at most 358,337 a cycle.
      [{ metadataMaxBytes: 4096, maxEntries: 358_338 }, 'maxEntries'],
      [{ metadataMaxBytes: 1024, maxEntries: 1_500_000 }, 'maxEntries'],
      [
        {
          rewards: [
            { fromRank: 1, toRank: 10, reward: { coins: 1 } },
            { fromRank: 5, toRank: 20, reward: { coins: 1 } },
          ],
        },
        'rewards',
      ],
      [{ rewards: [{ fromRank: 3, toRank: 1, reward: {} }] }, 'rewards.0.toRank'],
      [
        { rewards: [{ fromRank: 1, toRank: 1, reward: { blob: 'x'.repeat(2000) } }] },
        'rewards.0.reward',
      ],
      // 1,000 characters but 3,000 bytes: the limit is in bytes.
      [
        { rewards: [{ fromRank: 1, toRank: 1, reward: { blob: '€'.repeat(1000) } }] },
        'rewards.0.reward',
      ],
      [{ colour: 'blue' }, ''],
      [{ name: 'Weekly\nCup' }, 'name'],
      [{ name: '\u200b' }, 'name'],
    ]
    for (const [config, path] of bad) {
      const p = await problem(
        await call(`/v1/admin/leaderboards/${id}`, json('PUT', config, ADMIN_KEY)),
      )
      expect(p, JSON.stringify(config)).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
      if (path)
        expect(
          (p.body.errors as { path: string }[]).map((e) => e.path),
          JSON.stringify(config),
        ).toContain(path)
    }
    const info = (await (
      await call(`/v1/leaderboards/${id}`, { headers: { 'cache-control': 'no-cache' } })
    ).json()) as { config: { scoreMax: number } }
    expect(info.config.scoreMax).toBe(1000)
    // And Neon, which the cron pushes from: no refused configuration was saved there first.
    const [row] = await pg()`select version, config from leaderboards where id = ${id}`
    expect(row).toMatchObject({ version: 1, config: { scoreMax: 1000 } })
  })

  it('takes metadataMaxBytes at its most with maxEntries its two cycles fit in the board (358,337 at 4 KB), and the default 512 bytes with maxEntries at its most; left out, maxEntries is 1,000,000 or what fits, if fewer', async () => {
    const maxEntriesOf = async (id: string) =>
      (await fresh<{ config: { maxEntries: number } }>(`/v1/leaderboards/${id}`)).config.maxEntries
    const id = await createBoard({ metadataMaxBytes: 4096, maxEntries: 358_337 })
    expect(await maxEntriesOf(id)).toBe(358_337)
    const put = (config: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', config, ADMIN_KEY))
    expect((await put({ metadataMaxBytes: 512, maxEntries: 1_500_000 })).status).toBe(200)
    expect(await maxEntriesOf(id)).toBe(1_500_000)
    expect((await put({ metadataMaxBytes: 4096 })).status).toBe(200)
    expect(await maxEntriesOf(id)).toBe(358_337)
    expect((await put({ metadataMaxBytes: 1024 })).status).toBe(200)
    expect(await maxEntriesOf(id)).toBe(1_000_000)
  })

  it('pushes arriving out of order end on the newest version: an older one changes nothing', async () => {
    const id = await createBoard({ scoreMax: 100 })
    const put = (body: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', body, ADMIN_KEY)).then(
        (r) => r.json() as Promise<{ config: LeaderboardConfig; version: number }>,
      )
    const v2 = await put({ scoreMax: 200 })
    const v3 = await put({ scoreMax: 300 })
    expect([v2.version, v3.version]).toEqual([2, 3])
    // Version 2's push arrives late, after version 3's.
    await runInDurableObject(env.LEADERBOARD.getByName(id), (inst: Leaderboard) =>
      inst.configure(id, v2.config, v2.version),
    )
    const board = (await (await call(`/v1/leaderboards/${id}`)).json()) as {
      config: LeaderboardConfig
    }
    expect(board.config.scoreMax).toBe(300)
  })

  it("a PUT after Neon's version count went back (a restore, a new database) is applied all the same, past the board's version", async () => {
    const id = await createBoard({ scoreMax: 100 })
    const put = (body: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', body, ADMIN_KEY))
    expect((await put({ scoreMax: 200 })).status).toBe(200)
    expect((await put({ scoreMax: 300 })).status).toBe(200)
    // The board holds version 3; Neon's record goes back to version 2, so this PUT's version is
    // the number the board already holds, with another configuration.
    await pg()`update leaderboards set version = 2, pushed_version = 2 where id = ${id}`
    const res = await put({ scoreMax: 400 })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { version: number }).version).toBe(4)
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(400)
    const [row] =
      (await pg()`select version, pushed_version from leaderboards where id = ${id}`) as {
        version: number
        pushed_version: number
      }[]
    expect(row).toEqual({ version: 4, pushed_version: 4 })
  })

  it("a PUT whose second push, past the board's version after Neon's count went back, finds a later PUT in force is 409, not 200", async () => {
    const id = await createBoard({ scoreMax: 100 })
    const put = (body: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', body, ADMIN_KEY))
    expect((await put({ scoreMax: 200 })).status).toBe(200)
    expect((await put({ scoreMax: 300 })).status).toBe(200)
    // The board holds version 3; Neon's record goes back to version 2 (a restore). This PUT
    // saves version 3, is overruled, takes version 4, and meanwhile another PUT saves version 5
    // and reaches the board first.
    await pg()`update leaderboards set version = 2, pushed_version = 2 where id = ${id}`
    await replaceMethod<Leaderboard, 'configure'>(
      env.LEADERBOARD.getByName(id),
      'configure',
      (configure) =>
        async function (this: Leaderboard, boardId, config, version, ...rest) {
          if (boardId === id && version === 4) {
            await pg()`update leaderboards set version = 5 where id = ${id}`
            await configure.call(this, boardId, { ...config, scoreMax: 500 }, 5, ...rest)
          }
          return configure.call(this, boardId, config, version, ...rest)
        },
    )
    const p = await problem(await put({ scoreMax: 400 }))
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(500)
    // Not marked as pushed at the version it lost with.
    const [row] = await pg()`select pushed_version from leaderboards where id = ${id}`
    expect(row).not.toEqual({ pushed_version: 4 })
  })

  it("a configuration whose push was lost after Neon's version count went back reaches the board with the cron, past the board's version", async () => {
    const id = await createBoard({ scoreMax: 100 })
    const put = (body: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', body, ADMIN_KEY))
    expect((await put({ scoreMax: 200 })).status).toBe(200)
    expect((await put({ scoreMax: 300 })).status).toBe(200)
    // The board holds version 3; Neon goes back to version 2 and then saves a configuration at
    // version 3 whose push is lost (the PUT failed after saving).
    await pg()`update leaderboards set version = 3, pushed_version = 2,
                 config = jsonb_set(config, '{scoreMax}', '400') where id = ${id}`
    await runScheduled(env, Date.now())
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(400)
    const [row] = await pg()`select version, pushed_version from leaderboards where id = ${id}`
    expect(row).toEqual({ version: 4, pushed_version: 4 })
  })

  it('a PUT whose push finds a later PUT applied already is 409: the later configuration is in force, not this one', async () => {
    const id = await createBoard({ scoreMax: 100 })
    // Another PUT saves and pushes version 3 while this one's push (version 2) is on its way.
    await replaceMethod<Leaderboard, 'configure'>(
      env.LEADERBOARD.getByName(id),
      'configure',
      (configure) =>
        async function (this: Leaderboard, boardId, config, version) {
          if (boardId === id && version === 2) {
            await pg()`update leaderboards set version = 3,
                         config = jsonb_set(config, '{scoreMax}', '300') where id = ${id}`
            await configure.call(this, boardId, { ...config, scoreMax: 300 }, 3)
          }
          return configure.call(this, boardId, config, version)
        },
    )
    const p = await problem(
      await call(`/v1/admin/leaderboards/${id}`, json('PUT', { scoreMax: 200 }, ADMIN_KEY)),
    )
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(300)
  })

  it('a PUT whose board still runs the version before (a gradual deployment: no inForce in its answer) is applied as before', async () => {
    const id = await createBoard({ scoreMax: 100 })
    await replaceMethod<Leaderboard, 'configure'>(
      env.LEADERBOARD.getByName(id),
      'configure',
      (configure) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['configure']>) {
          const answer = await configure.apply(this, args)
          if ('problem' in answer) return answer
          const { configVersion: _v, inForce: _f, ...before } = answer
          return before as Awaited<ReturnType<Leaderboard['configure']>>
        },
    )
    const res = await call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', { scoreMax: 200 }, ADMIN_KEY),
    )
    expect(res.status).toBe(200)
    expect(((await res.json()) as { version: number }).version).toBe(2)
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(200)
  })

  it('a new order applies at once to a cycle nobody entered yet, and waits for the next cycle once someone has', async () => {
    const id = await createBoard()
    const put = (body: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', body, ADMIN_KEY))
    const cycleOf = async () =>
      (await fresh<{ cycle: { sortOrder: string; operator: string } }>(`/v1/leaderboards/${id}`))
        .cycle
    expect((await put({ sortOrder: 'asc', operator: 'incr' })).status).toBe(200)
    expect(await cycleOf()).toMatchObject({ sortOrder: 'asc', operator: 'incr' })
    for (const [player, score] of [
      ['low', 1],
      ['high', 2],
    ] as const)
      expect((await submitFor(id, player, { score })).status).toBe(200)
    expect((await submitFor(id, 'low', { score: 5 })).status).toBe(200)
    const top = await fresh<Top>(`/v1/leaderboards/${id}/top`)
    expect(top.entries.map((e) => [e.playerId, e.score])).toEqual([
      ['high', 2],
      ['low', 6],
    ])
    // With entries ranked by it, the cycle keeps its rule.
    expect((await put({ sortOrder: 'desc' })).status).toBe(200)
    expect(await cycleOf()).toMatchObject({ sortOrder: 'asc', operator: 'incr' })
  })

  it('a new schedule restarts a cycle nobody entered at its own boundary; one with entries keeps its start', async () => {
    await clearOfTurn(5 * 60_000, 5_000)
    const id = boardId()
    const put = (cycle: unknown) =>
      call(`/v1/admin/leaderboards/${id}`, json('PUT', { cycle }, ADMIN_KEY))
    const cycleOf = async () =>
      (await fresh<{ cycle: { startsAt: number; endsAt: number } }>(`/v1/leaderboards/${id}`)).cycle
    expect((await put({ every: '1d' })).status).toBe(201)
    const daily = await cycleOf()
    expect(daily.startsAt % 86_400_000).toBe(0)
    // Nobody entered the daily cycle: it becomes a 5-minute one, not one begun at midnight.
    expect((await put({ every: '5m' })).status).toBe(200)
    const short = await cycleOf()
    expect(short.startsAt % (5 * 60_000)).toBe(0)
    expect(short.endsAt - short.startsAt).toBe(5 * 60_000)
    expect(short.startsAt).toBeLessThanOrEqual(Date.now())
    // Someone is ranked: the cycle they entered keeps its start, and ends on the new schedule.
    expect((await submitFor(id, 'ranked', { score: 1 })).status).toBe(200)
    expect((await put({ every: '1h' })).status).toBe(200)
    const hourly = await cycleOf()
    expect(hourly.startsAt).toBe(short.startsAt)
    expect(hourly.endsAt % 3_600_000).toBe(0)
    // Closed by hand: the next cycle starts at the close. A new schedule does not move that start
    // back to its own boundary, over the cycle just closed.
    const closed = await call(`/v1/admin/leaderboards/${id}/close`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(closed.status).toBeLessThan(300)
    const next = await cycleOf()
    expect(next.startsAt).toBeGreaterThan(hourly.startsAt)
    expect((await put({ every: '1d' })).status).toBe(200)
    expect((await cycleOf()).startsAt).toBe(next.startsAt)
  })

  it("a cron in a time zone turns on that zone's wall clock, and is stored and answered as the schedule reads it", async () => {
    const id = boardId()
    const put = await call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', { cycle: { timeZone: 'asia/tokyo', cron: '0  0 * * *' } }, ADMIN_KEY),
    )
    expect(put.status).toBe(201)
    const saved = (await put.json()) as {
      config: { cycle: unknown }
      cycle: { startsAt: number; endsAt: number }
    }
    // Japan's clocks stay at +09:00 all year: its midnight is 15:00 UTC, a day apart.
    const stored = { cron: '0 0 * * *', timeZone: 'Asia/Tokyo' }
    expect(saved.config.cycle).toEqual(stored)
    const { cycle } = await fresh<{ cycle: { startsAt: number; endsAt: number } }>(
      `/v1/leaderboards/${id}`,
    )
    expect(cycle.endsAt % 86_400_000).toBe(15 * 3_600_000)
    expect(cycle.endsAt - cycle.startsAt).toBe(86_400_000)
    expect(cycle.startsAt).toBeLessThanOrEqual(Date.now())
    expect(cycle.endsAt).toBeGreaterThan(Date.now())
    const [row] = await pg()`select config->'cycle' as cycle from leaderboards where id = ${id}`
    expect(row?.cycle).toEqual(stored)
  })

  it("a zoned cycle whose stored end its schedule no longer names (its zone's clock rules changed since it began) runs on to the boundary named now; where they end it earlier, the next cycle starts at the stored end", async () => {
    const HOUR = 3_600_000
    // Tokyo's hours are UTC's (+09:00, no summer time): a zoned schedule, whose boundaries
    // would move with its zone's rules, worked out here without a change to them.
    const id = await createBoard({ cycle: { cron: '0 * * * *', timeZone: 'Asia/Tokyo' } })
    expect((await submitFor(id, 'p', { score: 1 })).status).toBe(200)
    type Window = { cycle: number; startsAt: number; endsAt: number }
    const board = env.LEADERBOARD.getByName(id)
    /** Stores the current cycle's end as other rules worked it out, and sets the board's clock. */
    const storeEnd = (endsAt: (w: Window) => number, at: (w: Window) => number) =>
      runInDurableObject(board, (inst: Leaderboard) => {
        const b = inst as unknown as { current: Window; saveCurrent(): void }
        b.current = { ...b.current, endsAt: endsAt(b.current) }
        b.saveCurrent()
        const t = at(b.current)
        inst.now = () => t
        return { ...b.current }
      })
    const current = () =>
      runInDurableObject(board, async (inst: Leaderboard) => {
        const info = await inst.info(id)
        if ('ok' in info) throw new Error(info.detail)
        return info.cycle as Window
      })
    const closeOf = (cycle: number) =>
      runInDurableObject(board, (_i: Leaderboard, state) =>
        state.storage.sql
          .exec<{
            starts_at: number
            ends_at: number
          }>(`SELECT starts_at, ends_at FROM closes WHERE cycle = ?`, cycle)
          .toArray(),
      )

    // Rules that put the hour later (the runtime learning of them after the cycle began, its
    // start no longer a boundary either): the stored end, 20 minutes before the hour, stands for
    // that hour. The cycle runs on to it, and nothing is closed.
    const first = await storeEnd(
      (w) => w.startsAt + HOUR - HOUR / 3,
      (w) => w.endsAt + 1000,
    )
    expect((await submitFor(id, 'p', { score: 2 })).status).toBe(200)
    expect(await current()).toMatchObject({
      cycle: first.cycle,
      startsAt: first.startsAt,
      endsAt: first.startsAt + HOUR,
    })
    expect(await closeOf(first.cycle)).toEqual([])

    // Rules that put the hour earlier: the stored end, 20 minutes past the next hour, stands for
    // that hour, gone by. The cycle ends at its stored end, and the next starts there, not back
    // at the hour.
    await storeEnd(
      (w) => w.startsAt + HOUR + HOUR / 3,
      (w) => w.endsAt + 1000,
    )
    expect((await submitFor(id, 'p', { score: 3 })).status).toBe(200)
    expect(await closeOf(first.cycle)).toEqual([
      { starts_at: first.startsAt, ends_at: first.startsAt + HOUR + HOUR / 3 },
    ])
    expect(await current()).toMatchObject({
      cycle: first.cycle + 1,
      startsAt: first.startsAt + HOUR + HOUR / 3,
      endsAt: first.startsAt + 2 * HOUR,
    })

    // The board asleep past the hour its stored end stood for: the cycle closes at that hour.
    const second = await storeEnd(
      (w) => w.endsAt - HOUR / 3,
      (w) => w.endsAt + HOUR / 2,
    )
    expect((await submitFor(id, 'p', { score: 4 })).status).toBe(200)
    expect(await closeOf(second.cycle)).toEqual([
      { starts_at: second.startsAt, ends_at: second.endsAt + HOUR / 3 },
    ])
  })

  it('the cron counts only boards it had to nudge, not every board whose boundary is recent', async () => {
    // A boundary passing between the runs would give the cron a board to nudge.
    await clearOfMinuteTurn(5_000)
    const id = await createBoard({ cycle: { every: '1m' } })
    await runScheduled(env, Date.now())
    // The board's own tick has done whatever was due: the cron finds nothing to do.
    await runInDurableObject(env.LEADERBOARD.getByName(id), (inst: Leaderboard) => inst.tick(id))
    const before = cronNudges()
    const run = await runScheduled(env, Date.now())
    await runScheduled(env, Date.now())
    expect(cronNudges() - before).toBe(0)
    // Asked (its boundary is recent), not nudged: what decides whether the run logs at info.
    expect(run.poked).toBeGreaterThanOrEqual(1)
    expect(run.nudged).toBe(0)
  })

  it('the cron that comes just before a boundary’s alarm rolls the board over without counting a lost alarm; with that alarm lost, it counts', async () => {
    const onTime = await boardPast(5_000, false)
    let before = cronNudges()
    await runScheduled(env, onTime.at)
    expect(await cycleNumber(onTime.id)).toBe(2)
    expect(cronNudges() - before).toBe(0)

    const late = await boardPast(5_000, true)
    before = cronNudges()
    await runScheduled(env, late.at)
    expect(await cycleNumber(late.id)).toBe(2)
    expect(cronNudges() - before).toBe(1)
  })

  it("a cron run's counts reach the metrics hub when the run ends, even right after a send", async () => {
    const hubTotal = async (name: string) => {
      let total = 0
      for (let shard = 0; shard < METRICS_HUB_SHARDS; shard++) {
        const families = await env.METRICS_HUB.getByName(hubShardName(shard)).families()
        for (const s of families.find((f) => f.name === name)?.series ?? []) {
          total += 'value' in s ? s.value : 0
        }
      }
      return total
    }
    const late = await boardPast(5_000, true)
    // This isolate has just sent what it counted: a send only when due would wait 10 s.
    await sendMetrics(env)
    const before = await hubTotal('nexus_cron_boards_poked_total')
    await worker.scheduled(
      createScheduledController({ scheduledTime: late.at, cron: '* * * * *' }),
      env,
      createExecutionContext(),
    )
    expect(await cycleNumber(late.id)).toBe(2)
    expect((await hubTotal('nexus_cron_boards_poked_total')) - before).toBe(1)
  })

  it('a cron run calls at most so many boards, in a random order, so that the boards it leaves out are not the same ones every run', async () => {
    const run = `round-${crypto.randomUUID().slice(0, 8)}`
    // Boards on 1-minute cycles are due at every run.
    const ids: string[] = []
    for (let i = 0; i < 4; i++)
      ids.push(await createBoard({ cycle: { every: '1m' } }, `${run}-${i}`))
    const called: string[] = []
    await replaceMethod<Leaderboard, 'tick'>(
      env.LEADERBOARD.getByName(ids[0]!),
      'tick',
      (tick) =>
        function (this: Leaderboard, id) {
          if (id.startsWith(run)) called.push(id)
          return tick.call(this, id)
        },
    )
    const mineFirst = (order: (mine: string[]) => string[]) => (due: string[]) => [
      ...order(due.filter((id) => id.startsWith(run))),
      ...due.filter((id) => !id.startsWith(run)),
    ]
    const at = Date.now()
    // Two calls, in the order the run drew: not the first in id order.
    await pokeBoards(env as never, at, 120_000, {
      maxTicks: 2,
      order: mineFirst((mine) => mine.reverse()),
    })
    expect(called).toEqual([ids[3], ids[2]])
    // Drawn otherwise, the next run calls the others.
    called.length = 0
    await pokeBoards(env as never, at, 120_000, { maxTicks: 2, order: mineFirst((mine) => mine) })
    expect(called).toEqual([ids[0], ids[1]])
    // The draw itself: each of them called, once, whatever the order.
    called.length = 0
    await pokeBoards(env as never, at, 120_000)
    expect([...called].sort()).toEqual(ids)
  })

  it('a cron run with more boards due than it may call still asks about a board whose configuration just changed: the due ones leave it calls', async () => {
    const run = `reserve-${crypto.randomUUID().slice(0, 8)}`
    const due: string[] = []
    for (let i = 0; i < 4; i++) {
      due.push(await createBoard({ cycle: { every: '1m' } }, `${run}-${i}`))
    }
    // Changed just now, due for nothing (no schedule); first in id order among changed boards.
    const changed = await createBoard({}, `0-${run}`)
    const called: string[] = []
    await replaceMethod<Leaderboard, 'tick'>(
      env.LEADERBOARD.getByName(due[0]!),
      'tick',
      (tick) =>
        function (this: Leaderboard, id) {
          if (id.startsWith(run) || id === changed) called.push(id)
          return tick.call(this, id)
        },
    )
    // Four calls in all, the four due boards first: two of them are called, and the changed one.
    await pokeBoards(env as never, Date.now(), 120_000, {
      maxTicks: 4,
      reservedTicks: 2,
      order: (ids) => [...due, ...ids.filter((id) => !due.includes(id))],
    })
    expect(called.slice(0, 3)).toEqual([due[0], due[1], changed])
  })

  it("the cron asks a board about a lost boundary in two of its runs, by the trigger's own schedule", async () => {
    const every = '1h' // its boundaries on the hour, as the triggers' runs are
    // Every minute: a boundary 90 s back is within this run's reach and the one's before.
    const recent = await boardPast(90_000, true, every)
    await runScheduled(env, recent.at, '* * * * *')
    expect(await cycleNumber(recent.id)).toBe(2)
    // 5 minutes back, two runs have asked already: this one does not wake the board again.
    const older = await boardPast(5 * 60_000, true, every)
    await runScheduled(env, older.at, '* * * * *')
    expect(await cycleNumber(older.id)).toBe(1)
    // A run by hand (no trigger schedule to read) looks back 10 minutes.
    await runScheduled(env, older.at)
    expect(await cycleNumber(older.id)).toBe(2)
    // Every 30 minutes: the run 30 minutes after the boundary still reaches it (a fixed
    // lookback shorter than the trigger's period missed it for good).
    const sparse = await boardPast(30 * 60_000, true, every)
    await runScheduled(env, sparse.at, '*/30 * * * *')
    expect(await cycleNumber(sparse.id)).toBe(2)
  })

  it('the cron sets again a lost alarm for an archive not yet begun, though the schedule changed since the freeze (Neon shows neither the boundary nor the archive)', async () => {
    // A boundary 90 s back whose alarm was lost; the cycle holds a score.
    const { id, at } = await boardPast(90_000, true)
    // The schedule is taken away: the board freezes the ended cycle under the old one first,
    // and sets its alarm for that archive's start...
    const res = await call(`/v1/admin/leaderboards/${id}`, json('PUT', { cycle: null }, ADMIN_KEY))
    expect(res.status).toBe(200)
    // ...which is lost too.
    await runInDurableObject(env.LEADERBOARD.getByName(id), async (_inst: Leaderboard, state) => {
      const pending = state.storage.sql
        .exec<{ n: number }>(`SELECT count(*) AS n FROM closes WHERE state != 'done'`)
        .one().n
      expect(pending).toBe(1)
      await state.storage.deleteAlarm()
    })
    await runScheduled(env, at, '* * * * *')
    const alarm = await runInDurableObject(
      env.LEADERBOARD.getByName(id),
      (_inst: Leaderboard, state) => state.storage.getAlarm(),
    )
    expect(alarm).not.toBeNull()
  })

  it("the cron's lookback reaches its trigger's run two before, for triggers that run every day; others, and runs by hand, look back 10 minutes", () => {
    const at = Date.UTC(2026, 11, 7, 17, 0) // a Monday, 17:00
    const minute = 60_000
    expect(lookbackMs('* * * * *', at)).toBe(2 * minute)
    expect(lookbackMs('*/10 * * * *', at)).toBe(20 * minute)
    expect(lookbackMs('0 9,17 * * *', at)).toBe(24 * 60 * minute)
    // A run arriving a little after its scheduled minute still counts as that minute's.
    expect(lookbackMs('* * * * *', at + 700)).toBe(2 * minute + 700)
    // Cloudflare numbers weekdays from Sunday = 1: read our way, Monday's run would look back
    // to Saturday, not to Friday's last runs.
    for (const cron of ['*/10 * * * 2-6', '0 0 1 * *', '0 0 * 1 *', '0 0 L * *', '', undefined]) {
      expect(lookbackMs(cron, at)).toBe(10 * minute)
    }
  })

  it('is admin-only: a player token gets 403, no credential 401', async () => {
    const { token } = await newGuest()
    expect(
      (await problem(await call(`/v1/admin/leaderboards/${boardId()}`, json('PUT', {}, token))))
        .status,
    ).toBe(403)
    expect(
      (await problem(await call(`/v1/admin/leaderboards/${boardId()}`, json('PUT', {})))).status,
    ).toBe(401)
  })

  it('an admin write or read of a board whose object cannot read its configuration (Neon unreachable) is 503 with Retry-After: 5, on every admin board route', async () => {
    const made = await createBoard()
    const [{ config }] = (await pg()`select config from leaderboards where id = ${made}`) as [
      { config: unknown },
    ]
    const id = boardId('unreached')
    await pg()`insert into leaderboards (id, config) values (${id}, ${JSON.stringify(config)}::jsonb)`
    const testEnv = env as unknown as Record<string, string>
    await runInDurableObject(env.LEADERBOARD.getByName(id), (inst: Leaderboard) => {
      const real = inst.configRead
      inst.configRead = (e, board) =>
        real(
          {
            ...e,
            DATABASE_URL: testEnv.TEST_UNREACHABLE_DATABASE_URL,
            NEON_LOCAL_RELAY: testEnv.TEST_UNREACHABLE_NEON_RELAY,
          } as typeof e,
          board,
        )
    })
    const base = `/v1/admin/leaderboards/${id}`
    const calls: [string, RequestInit][] = [
      ['import', json('POST', { entries: [{ playerId: 'p1', score: 1 }] }, ADMIN_KEY)],
      ['remove', { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_KEY}` } }],
      ['ban', json('PUT', { reason: 'x' }, ADMIN_KEY)],
      ['bans', { headers: { authorization: `Bearer ${ADMIN_KEY}` } }],
      ['cycle', { headers: { authorization: `Bearer ${ADMIN_KEY}` } }],
      ['unban', { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_KEY}` } }],
    ]
    const paths: Record<string, string> = {
      import: `${base}/entries`,
      remove: `${base}/players/p1`,
      ban: `${base}/bans/p1`,
      bans: `${base}/bans`,
      cycle: `${base}/cycles/1`,
      unban: `${base}/bans/p1`,
    }
    for (const [name, init] of calls) {
      const res = await call(paths[name]!, init)
      expect([name, res.status, res.headers.get('retry-after')]).toEqual([name, 503, '5'])
      await res.body?.cancel()
    }
  })

  it("a board's first call that reads its configuration while a made-up id's call drops the empty schema still configures it", async () => {
    // A board in Neon whose object has never run: its first calls read the configuration there.
    const made = await createBoard()
    const [{ config }] = (await pg()`select config from leaderboards where id = ${made}`) as [
      { config: unknown },
    ]
    const id = boardId('cold')
    await pg()`insert into leaderboards (id, config) values (${id}, ${JSON.stringify(config)}::jsonb)`
    const stub = env.LEADERBOARD.getByName(id)
    await runInDurableObject(stub, async (inst: Leaderboard, state) => {
      const first = inst.info(id)
      // While its read is on the way, a call that found no board (its read came back before the
      // PUT committed) drops the empty schema, as it does for ids nobody created.
      await state.storage.deleteAll()
      ;(inst as unknown as { schemaReady: boolean }).schemaReady = false
      expect(await first).toMatchObject({ cycle: { cycle: 1 } })
    })
    // The board works from then on: a submission, a read, the PUT's push again.
    expect((await submitFor(id, 'cold-player', { score: 5 })).status).toBe(200)
    expect((await fresh<Top>(`/v1/leaderboards/${id}/top`)).entries).toMatchObject([
      { playerId: 'cold-player', score: 5 },
    ])
    const again = await call(`/v1/admin/leaderboards/${id}`, json('PUT', config, ADMIN_KEY))
    expect(again.status).toBe(200)
  })

  it("an unknown board's close progress is 404, and its object keeps nothing", async () => {
    const id = boardId('missing')
    const p = await problem(await call(`/v1/admin/leaderboards/${id}/cycles/1`, bearer(ADMIN_KEY)))
    expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    expect(await storedBy(id)).toEqual({ tables: [], alarm: null })
  })

  it("a made-up id's object makes no tables: not at its wake, nor while Neon is asked whether the board exists", async () => {
    const id = boardId('made-up')
    // Woken (the test's own call wakes it): nothing stored, not even an empty schema.
    expect(await storedBy(id)).toEqual({ tables: [], alarm: null })
    let tablesWhileAsked: string[] | null = null
    await runInDurableObject(env.LEADERBOARD.getByName(id), (inst: Leaderboard, state) => {
      const real = inst.configRead
      inst.configRead = (e, board) => {
        tablesWhileAsked = state.storage.sql
          .exec<{ name: string }>(
            `SELECT name FROM sqlite_master WHERE name NOT LIKE '\_cf%' ESCAPE '\\'`,
          )
          .toArray()
          .map((r) => r.name)
        return real(e, board)
      }
    })
    const p = await problem(await call(`/v1/leaderboards/${id}/top`))
    expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    expect(tablesWhileAsked).toEqual([])
    expect(await storedBy(id)).toEqual({ tables: [], alarm: null })
  })

  it('an unknown board is 404 on every read', async () => {
    const id = boardId('missing')
    for (const path of [
      `/v1/leaderboards/${id}`,
      `/v1/leaderboards/${id}/top`,
      `/v1/leaderboards/${id}/players/p1`,
      `/v1/leaderboards/${id}/around/p1`,
    ]) {
      const p = await problem(await call(path))
      expect(p, path).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    }
    const submitted = await problem(await submitFor(id, 'p1', { score: 1 }))
    expect(submitted).toMatchObject({ status: 404 })
    // The made-up id's object keeps nothing: no tables, no alarm.
    expect(await storedBy(id)).toEqual({ tables: [], alarm: null })
    // Created later under that id, the board works from the same object.
    await createBoard({}, id)
    expect((await submitFor(id, 'p1', { score: 7 })).status).toBe(200)
    expect((await fresh<Top>(`/v1/leaderboards/${id}/top`)).entries.map((e) => e.score)).toEqual([
      7,
    ])
  })

  it('a board id outside the allowed alphabet or length is 422', async () => {
    for (const id of ['a'.repeat(65), '-leading-dash', 'sp%20ace']) {
      const p = await problem(
        await call(`/v1/admin/leaderboards/${id}`, json('PUT', {}, ADMIN_KEY)),
      )
      expect(p.status, id).toBe(422)
    }
  })
})

describe('a leaderboard PUT with If-Match', () => {
  const put = (id: string, body: Record<string, unknown>, ifMatch?: string) =>
    call(
      `/v1/admin/leaderboards/${id}`,
      json('PUT', body, ADMIN_KEY, ifMatch === undefined ? {} : { 'if-match': ifMatch }),
    )
  const stored = async (id: string) =>
    (await pg()`select version, config from leaderboards where id = ${id}`)[0] as
      { version: number; config: LeaderboardConfig } | undefined

  it('the admin read and every PUT give the version as the ETag; a PUT naming it changes the board', async () => {
    const id = await createBoard({ scoreMax: 100 })
    const read = await call(`/v1/admin/leaderboards/${id}`, bearer(ADMIN_KEY))
    expect(read.status).toBe(200)
    expect(read.headers.get('etag')).toBe('"1"')
    expect(await read.json()).toMatchObject({ id, version: 1, config: { scoreMax: 100 } })
    const changed = await put(id, { scoreMax: 200 }, '"1"')
    expect(changed.status).toBe(200)
    expect(changed.headers.get('etag')).toBe('"2"')
    expect(await changed.json()).toMatchObject({ version: 2, config: { scoreMax: 200 } })
    // Any of several tags, `*` for any version in force, and the tag as Cloudflare's compression
    // of an answer hands it on (weakened).
    expect((await put(id, { scoreMax: 300 }, '"9", "2"')).status).toBe(200)
    expect((await put(id, { scoreMax: 400 }, '*')).status).toBe(200)
    expect((await put(id, { scoreMax: 500 }, 'W/"4"')).status).toBe(200)
    expect((await put(id, { scoreMax: 600 }, 'W/"4"')).status).toBe(412)
    expect(await stored(id)).toMatchObject({ version: 5, config: { scoreMax: 500 } })
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(500)
  })

  it('a board another admin changed since the version named is 412 with the version in force, and keeps that change', async () => {
    const id = await createBoard({ scoreMax: 100 })
    expect((await put(id, { scoreMax: 200 })).status).toBe(200)
    const p = await problem(await put(id, { scoreMax: 300 }, '"1"'))
    expect(p).toMatchObject({ status: 412, type: 'urn:nexus:problem:precondition-failed' })
    expect(p.body.version).toBe(2)
    expect(await stored(id)).toMatchObject({ version: 2, config: { scoreMax: 200 } })
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(200)
  })

  it("a retry whose first try landed answers as that try did: the same version, nothing saved again; after another admin's change it is 412", async () => {
    const id = await createBoard({ scoreMax: 100 })
    const first = await put(id, { scoreMax: 200, submitsPerMinute: 20 }, '"1"')
    expect(first.status).toBe(200)
    // The answer lost, the tool sends the same request again.
    const retry = await put(id, { submitsPerMinute: 20, scoreMax: 200 }, '"1"')
    expect(retry.status).toBe(200)
    expect(retry.headers.get('etag')).toBe('"2"')
    expect(await retry.json()).toMatchObject({ version: 2, config: { scoreMax: 200 } })
    expect((await stored(id))?.version).toBe(2)
    // Another admin's change in between: the retry would undo it.
    expect((await put(id, { scoreMax: 500 })).status).toBe(200)
    const late = await problem(await put(id, { scoreMax: 200, submitsPerMinute: 20 }, '"1"'))
    expect(late).toMatchObject({ status: 412, body: { version: 3 } })
    expect(await stored(id)).toMatchObject({ version: 3, config: { scoreMax: 500 } })
  })

  it('two admins changing the same version at once: one PUT lands, the other is 412, and the board holds the one that landed', async () => {
    const id = await createBoard({ scoreMax: 100 })
    const answers = await Promise.all([
      put(id, { scoreMax: 111 }, '"1"'),
      put(id, { scoreMax: 222 }, '"1"'),
    ])
    expect(answers.map((a) => a.status).sort()).toEqual([200, 412])
    const landed = answers[0].status === 200 ? 111 : 222
    expect(await stored(id)).toMatchObject({ version: 2, config: { scoreMax: landed } })
    const board = await fresh<{ config: LeaderboardConfig }>(`/v1/leaderboards/${id}`)
    expect(board.config.scoreMax).toBe(landed)
  })

  it('a retry answered from the configuration in force, whose board is deleted before its hand-over, is 412 with version null, not a 500', async () => {
    const id = await createBoard({ scoreMax: 100 })
    expect((await put(id, { scoreMax: 200 }, '"1"')).status).toBe(200)
    // The retry finds version 2 in force; an admin's deletion lands before its hand-over (Neon
    // marks the board deleted, and the board refuses pushes of the versions before).
    await replaceMethod<Leaderboard, 'configure'>(
      env.LEADERBOARD.getByName(id),
      'configure',
      (configure) =>
        async function (this: Leaderboard, boardId, config, version, lastCycle) {
          if (boardId === id && version === 2) {
            await pg()`update leaderboards set deleted_at = now(), version = version + 1
                        where id = ${id}`
            throw new Error(`No leaderboard '${id}': deleted at version 3`)
          }
          return configure.call(this, boardId, config, version, lastCycle)
        },
    )
    const p = await problem(await put(id, { scoreMax: 200 }, '"1"'))
    expect(p).toMatchObject({ status: 412, type: 'urn:nexus:problem:precondition-failed' })
    expect(p.body.version).toBeNull()
  })

  it('If-Match on a board that does not exist (never made, or deleted) is 412 with version null and makes none', async () => {
    const id = boardId()
    for (const tag of ['"1"', '*']) {
      const p = await problem(await put(id, { scoreMax: 100 }, tag))
      expect(p).toMatchObject({ status: 412, type: 'urn:nexus:problem:precondition-failed' })
      expect(p.body.version).toBeNull()
    }
    expect(await stored(id)).toBeUndefined()
    const gone = await createBoard({ paused: true })
    expect(
      (await call(`/v1/admin/leaderboards/${gone}`, { method: 'DELETE', ...bearer(ADMIN_KEY) }))
        .status,
    ).toBe(200)
    const p = await problem(await put(gone, { paused: true }, '*'))
    expect(p).toMatchObject({ status: 412, body: { version: null } })
    expect((await call(`/v1/admin/leaderboards/${gone}`, bearer(ADMIN_KEY))).status).toBe(404)
  })

  it('bounds refusing a win are 409 with a matching If-Match too, while a queue sends its results to the board', async () => {
    const id = await createBoard()
    await createQueue({ leaderboardId: id })
    const p = await problem(await put(id, { scoreMax: 0 }, '"1"'))
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect((await stored(id))?.version).toBe(1)
  })

  it('a malformed If-Match is 422 naming it, and changes nothing', async () => {
    const id = await createBoard({ scoreMax: 100 })
    const tags = [
      '1',
      'w/"1"',
      'W/1',
      '"x"',
      '"1",',
      `"1"${', "2"'.repeat(20)}`,
      `"${'1'.repeat(16)}"`,
    ]
    const refused = async (res: Response, tag: string) => {
      const p = await problem(res)
      expect(p, tag).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect((p.body.errors as { path: string }[])[0]!.path, tag).toBe('if-match')
    }
    for (const tag of tags) await refused(await put(id, { scoreMax: 200 }, tag), tag)
    // An empty one (a tool's unset variable), when it reaches the Worker, is not taken for none.
    // Sent to it directly: workerd drops a header with an empty value on the way in (over HTTP
    // too, docs/leaderboards.md), which the Worker cannot help.
    const empty = json('PUT', { scoreMax: 200 }, ADMIN_KEY, { 'if-match': '' })
    await refused(await callWithEnv({}, `/v1/admin/leaderboards/${id}`, empty), '(empty)')
    expect(await stored(id)).toMatchObject({ version: 1, config: { scoreMax: 100 } })
  })
})

describe('a board that takes scores from servers only', () => {
  it("refuses a player's own submission (403), changing nothing, while game servers submit and a retry gets its first answer; a PUT without it takes players' scores again", async () => {
    const config = { name: 'Duel wins', operator: 'incr' }
    const board = await createBoard(config)
    const g = await newGuest()
    const own = (score: number, key = crypto.randomUUID()) =>
      call(
        `/v1/leaderboards/${board}/scores`,
        json('POST', { score }, g.token, { 'idempotency-key': key }),
      )
    const firstKey = `own-${crypto.randomUUID()}`
    expect((await own(1, firstKey)).status).toBe(200)
    const put = (body: Record<string, unknown>) =>
      call(`/v1/admin/leaderboards/${board}`, json('PUT', body, ADMIN_KEY))
    const closed = await put({ ...config, serverScoresOnly: true })
    expect(closed.status).toBe(200)
    expect(await closed.json()).toMatchObject({ config: { serverScoresOnly: true } })
    expect(
      (await fresh<{ config: { serverScoresOnly: boolean } }>(`/v1/leaderboards/${board}`)).config
        .serverScoresOnly,
    ).toBe(true)

    const refused = await problem(await own(1_000_000))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // A retry of the submission made before still gets its first answer.
    const retry = await own(1, firstKey)
    expect(retry.status).toBe(200)
    expect(await retry.json()).toMatchObject({ replayed: true, best: 1 })
    // A game server submits for the player.
    expect((await submitFor(board, g.playerId, { score: 1 })).status).toBe(200)
    const standing = async () =>
      (
        await fresh<{ entry: { score: number } | null }>(
          `/v1/leaderboards/${board}/players/${g.playerId}`,
        )
      ).entry?.score
    expect(await standing()).toBe(2)
    // A board object that wakes takes it from its stored configuration.
    await evictDurableObject(env.LEADERBOARD.getByName(board))
    expect((await problem(await own(5))).status).toBe(403)
    expect(await standing()).toBe(2)
    // Not a boolean: 422, nothing changed.
    const bad = await problem(await put({ ...config, serverScoresOnly: 'yes' }))
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await problem(await own(5))).status).toBe(403)

    // A PUT without it takes players' scores again, and stores no such field.
    expect((await put(config)).status).toBe(200)
    expect((await own(1)).status).toBe(200)
    expect(await standing()).toBe(3)
    const [row] = await pg()`select config from leaderboards where id = ${board}`
    expect('serverScoresOnly' in (row!.config as object)).toBe(false)
  })
})

describe('a paused board', () => {
  it('takes no scores until a PUT without paused (409 with paused: true), while retries get their first answer and reads, imports and the listing go on', async () => {
    const config = { name: 'Event', cycle: { every: '7d' } }
    const board = await createBoard(config)
    const first = `first-${crypto.randomUUID()}`
    expect((await submitFor(board, 'early', { score: 10 }, first)).status).toBe(200)
    const put = (body: Record<string, unknown>) =>
      call(`/v1/admin/leaderboards/${board}`, json('PUT', body, ADMIN_KEY))
    const paused = await put({ ...config, paused: true })
    expect(paused.status).toBe(200)
    expect(((await paused.json()) as { config: { paused: boolean } }).config.paused).toBe(true)

    const refused = await problem(await submitFor(board, 'late', { score: 20 }))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.paused).toBe(true)
    expect((await problem(await submitFor(board, 'early', { score: 30 }))).status).toBe(409)
    // A retry of a submission made before the pause still gets its first answer.
    const retry = await submitFor(board, 'early', { score: 10 }, first)
    expect(retry.status).toBe(200)
    expect(await retry.json()).toMatchObject({ replayed: true, score: 10 })
    // Nothing changed on the board; reads and the admin's import go on.
    const top = await fresh<Top>(`/v1/leaderboards/${board}/top`)
    expect(top.entries.map((e) => [e.playerId, e.score])).toEqual([['early', 10]])
    const imported = await call(
      `/v1/admin/leaderboards/${board}/entries`,
      json('POST', { entries: [{ playerId: 'imported', score: 5 }] }, ADMIN_KEY),
    )
    expect(imported.status).toBe(200)
    expect(await imported.json()).toMatchObject({ imported: 1 })
    const afterImport = await fresh<Top>(`/v1/leaderboards/${board}/top`)
    expect(afterImport.entries.map((e) => e.playerId)).toEqual(['early', 'imported'])
    // Neon keeps it, and a board object that wakes from there refuses as well.
    const [stored] = await pg()`select config from leaderboards where id = ${board}`
    expect((stored!.config as { paused?: boolean }).paused).toBe(true)
    await evictDurableObject(env.LEADERBOARD.getByName(board))
    expect((await problem(await submitFor(board, 'late', { score: 20 }))).status).toBe(409)
    // Past the edge limit too: 409, not a 429 telling the client to retry what cannot pass.
    const guest = await newGuest()
    await clearOfMinuteTurn(5_000)
    const overLimit = async () =>
      (
        await callWithEnv(
          { EDGE_SUBMITS_PER_MINUTE: '1' },
          `/v1/leaderboards/${board}/scores`,
          json('POST', { score: 1 }, guest.token, { 'idempotency-key': crypto.randomUUID() }),
        )
      ).status
    expect([await overLimit(), await overLimit()]).toEqual([409, 409])
    const info = await fresh<{ config: { paused: boolean } }>(`/v1/leaderboards/${board}`)
    expect(info.config.paused).toBe(true)
    const listed = (await (
      await call(`/v1/admin/leaderboards?after=${board.slice(0, -1)}&limit=100`, bearer(ADMIN_KEY))
    ).json()) as { boards: { id: string; paused: boolean }[] }
    expect(listed.boards.find((b) => b.id === board)?.paused).toBe(true)

    // A paused flag that is not a boolean is 422, and changes nothing.
    const bad = await problem(await put({ ...config, paused: 'yes' }))
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await problem(await submitFor(board, 'late', { score: 20 }))).status).toBe(409)

    // A PUT without it resumes, at once.
    expect((await put(config)).status).toBe(200)
    expect((await submitFor(board, 'late', { score: 20 })).status).toBe(200)
    expect(
      (await fresh<{ config: { paused: boolean } }>(`/v1/leaderboards/${board}`)).config.paused,
    ).toBe(false)
    // As stored, a board in play has no paused field: configurations from before it compare as they were.
    const [row] = await pg()`select config from leaderboards where id = ${board}`
    expect('paused' in (row!.config as object)).toBe(false)
  })
})
