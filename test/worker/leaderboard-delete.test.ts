import { env } from 'cloudflare:workers'
import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { NeonArchiveWriter } from '../../workers/leaderboards/archive-writer.ts'
import { ADMIN_KEY, bearer, call, json, newGuest, problem } from './helpers/http.ts'
import { createBoard, fresh, holdLock, pg, submitFor, type Top } from './helpers/boards.ts'
import { DUEL, createQueue, queueId } from './helpers/matchmaking.ts'
import { boardWalkLimits } from '../../workers/players/board-walk.ts'
import { scheduledBoards, unpushedConfigs } from '../../workers/leaderboards/config-store.ts'
import type { Env } from '../../workers/env.ts'

function stub(board: string) {
  return env.LEADERBOARD.getByName(board)
}

function deleteBoard(board: string, credential = ADMIN_KEY): Promise<Response> {
  return call(`/v1/admin/leaderboards/${board}`, { ...bearer(credential), method: 'DELETE' })
}

function put(board: string, config: Record<string, unknown>): Promise<Response> {
  return call(`/v1/admin/leaderboards/${board}`, json('PUT', config, ADMIN_KEY))
}

/** Imports one entry (a paused board takes imports). */
function putEntry(board: string, playerId: string, score: number): Promise<Response> {
  return call(
    `/v1/admin/leaderboards/${board}/entries`,
    json('POST', { entries: [{ playerId, score }] }, ADMIN_KEY),
  )
}

function banOn(board: string, playerId: string): Promise<Response> {
  return call(`/v1/admin/leaderboards/${board}/bans/${playerId}`, json('PUT', {}, ADMIN_KEY))
}

/** The tables the board's object stores (none once its storage is gone). */
function tablesOf(board: string): Promise<string[]> {
  return runInDurableObject(stub(board), (_inst: Leaderboard, state) =>
    state.storage.sql
      .exec<{ name: string }>(
        `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite%'`,
      )
      .toArray()
      .map((r) => r.name),
  )
}

/** Closes the live cycle by hand and drives its archive to the end, as the alarm would. */
async function closeAndArchive(board: string): Promise<number> {
  const closed = await call(`/v1/admin/leaderboards/${board}/close`, {
    ...bearer(ADMIN_KEY),
    method: 'POST',
  })
  expect(closed.status).toBe(202)
  const { closed: close } = (await closed.json()) as { closed: { cycle: number } }
  await runInDurableObject(stub(board), async (inst: Leaderboard) => {
    for (let i = 0; i < 20 && inst.closeStatus(close.cycle)?.state !== 'done'; i++) {
      await inst.runArchive({ force: true })
    }
    expect(inst.closeStatus(close.cycle)?.state).toBe('done')
  })
  return close.cycle
}

/**
 * Makes the next deletion's Neon step of the board's object fail as an unreachable Neon does,
 * after it ran (`committed`: the answer lost) or instead of it. One call only, so nothing else
 * the object does (another test's erasure walking every board, say) meets an unreachable Neon.
 */
async function loseNextDeletion(board: string, committed: boolean): Promise<void> {
  await runInDurableObject(stub(board), (inst: Leaderboard) => {
    const real = inst.neonDeletion
    const unreachable = {
      DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
      NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
    }
    inst.neonDeletion = async (e, id, version) => {
      inst.neonDeletion = real
      if (committed) await real(e, id, version)
      return real(unreachable as typeof e, id, version)
    }
  })
}

describe('DELETE /v1/admin/leaderboards/:id', () => {
  it('refuses a board in play with entries, deletes it once paused: reads and scores are 404, Neon and the object keep nothing of it, its closed cycles stay readable, and a board made again numbers its cycles after them', async () => {
    const config = { name: 'Halloween', cycle: { every: '7d' } }
    const board = await createBoard(config)
    expect((await submitFor(board, 'ann', { score: 50 })).status).toBe(200)
    expect((await submitFor(board, 'bob', { score: 40 })).status).toBe(200)
    const closedCycle = await closeAndArchive(board)
    expect((await submitFor(board, 'cat', { score: 30 })).status).toBe(200)

    // In play with an entry: 409, and nothing changes.
    const inPlay = await problem(await deleteBoard(board))
    expect(inPlay).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(inPlay.body).toMatchObject({ entries: 1, paused: false })
    expect(
      (await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries.map((e) => e.playerId),
    ).toEqual(['cat'])
    expect((await pg()`select 1 from leaderboards where id = ${board}`).length).toBe(1)

    // Not the admin: 401 for a wrong key, 403 for a player's token; nothing changes.
    expect((await problem(await deleteBoard(board, 'wrong-key'))).status).toBe(401)
    expect((await problem(await deleteBoard(board, (await newGuest()).token))).status).toBe(403)
    expect(
      (await pg()`select deleted_at from leaderboards where id = ${board}`)[0]!.deleted_at,
    ).toBeNull()

    expect((await put(board, { ...config, paused: true })).status).toBe(200)
    const deleted = await deleteBoard(board)
    expect(deleted.status).toBe(200)
    expect(await deleted.json()).toEqual({
      id: board,
      deleted: true,
      discardedEntries: 1,
      lastCycle: closedCycle + 1,
    })

    // Gone for players and the game server.
    expect(
      (
        await problem(
          await call(`/v1/leaderboards/${board}`, { headers: { 'cache-control': 'no-cache' } }),
        )
      ).status,
    ).toBe(404)
    expect(
      (
        await problem(
          await call(`/v1/leaderboards/${board}/top`, { headers: { 'cache-control': 'no-cache' } }),
        )
      ).status,
    ).toBe(404)
    expect((await problem(await submitFor(board, 'dan', { score: 1 }))).status).toBe(404)
    // Neon marks it deleted, its version moved on (the cron no longer sees it); the object
    // keeps no storage.
    const [row] = await pg()`select version, deleted_at from leaderboards where id = ${board}`
    expect(row!.deleted_at).not.toBeNull()
    expect(row!.version).toBe(3)
    expect(await tablesOf(board)).toEqual([])
    const listing = async (query: string) =>
      (
        (await (
          await call(
            `/v1/admin/leaderboards?after=${board.slice(0, -1)}&limit=100${query}`,
            bearer(ADMIN_KEY),
          )
        ).json()) as { boards: { id: string; deletedAt: string | null }[] }
      ).boards.find((b) => b.id === board)
    expect(await listing('')).toBeUndefined()
    // Listed among the deleted boards, with when.
    const gone = await listing('&status=deleted')
    expect(gone).toMatchObject({ id: board, version: 3, name: 'Halloween' })
    expect(Date.parse(gone!.deletedAt!)).toBeGreaterThan(Date.now() - 60_000)
    // A listing's status other than the two is 422.
    const badStatus = await call(`/v1/admin/leaderboards?status=gone`, bearer(ADMIN_KEY))
    expect((await problem(badStatus)).status).toBe(422)

    // The closed cycle's standings and a player's history stay.
    const archivedTop = await fresh<{ entries: { playerId: string }[] }>(
      `/v1/leaderboards/${board}/cycles/${closedCycle}/top`,
    )
    expect(archivedTop.entries.map((e) => e.playerId)).toEqual(['ann', 'bob'])
    const history = await fresh<{ results: { cycle: number; rank: number }[] }>(
      `/v1/leaderboards/${board}/players/bob/history`,
    )
    expect(history.results).toEqual([expect.objectContaining({ cycle: closedCycle, rank: 2 })])
    // A player with no result there: the board's cycles still exist, so no 404.
    const none = await fresh<{ results: unknown[] }>(
      `/v1/leaderboards/${board}/players/cat/history`,
    )
    expect(none.results).toEqual([])

    // A retry of the deletion: the board is gone.
    expect((await problem(await deleteBoard(board))).status).toBe(404)

    // Made again: a new board, empty, whose first cycle comes after the archived one, and whose
    // version goes on from the deleted one's (a push of before can never pass for it).
    const again = await put(board, config)
    expect(again.status).toBe(201)
    const made = (await again.json()) as {
      version: number
      cycle: { cycle: number; entries: number }
    }
    expect(made.version).toBe(4)
    expect(made.cycle).toMatchObject({ cycle: closedCycle + 1, entries: 0 })
    expect((await submitFor(board, 'eve', { score: 5 })).status).toBe(200)
    expect(
      (await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries.map((e) => e.playerId),
    ).toEqual(['eve'])
  })

  it('deletes a paused board with no entries and a board in play with none; an unknown id is 404 and an id out of bounds 422', async () => {
    for (const config of [{ cycle: { every: '1d' } }, { cycle: { every: '1d' }, paused: true }]) {
      const empty = await createBoard(config)
      const r = await deleteBoard(empty)
      expect(r.status).toBe(200)
      expect(await r.json()).toMatchObject({ discardedEntries: 0, lastCycle: 1 })
    }
    expect(
      (await problem(await deleteBoard(`lb-nobody-${crypto.randomUUID().slice(0, 8)}`))).status,
    ).toBe(404)
    const bad = await problem(await deleteBoard('x'.repeat(200)))
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })

  it('refuses while a closed cycle is still being archived (409 closing, Retry-After), keeping it, and deletes once it is archived', async () => {
    const board = await createBoard({
      cycle: { every: '7d' },
      rewards: [{ fromRank: 1, toRank: 1, reward: { coins: 5 } }],
    })
    expect((await submitFor(board, 'ann', { score: 9 })).status).toBe(200)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter({
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      })
    })
    const closed = await call(`/v1/admin/leaderboards/${board}/close`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(closed.status).toBe(202)
    // One attempt, failed; the retry's alarm goes, so that no attempt is in flight (a deletion
    // would then be `busy`) when the deletion comes.
    await runInDurableObject(stub(board), async (inst: Leaderboard, state) => {
      await inst.runArchive({ force: true })
      await state.storage.deleteAlarm()
    })

    const refusal = await deleteBoard(board)
    expect(refusal.headers.get('retry-after')).toBe('60')
    const refused = await problem(refusal)
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.closing).toBe(1)
    expect((await pg()`select 1 from leaderboards where id = ${board}`).length).toBe(1)
    expect(await tablesOf(board)).toContain('closes')
    // The refusal set the archive's alarm again (it had gone): the close it waits for goes on.
    const alarm = await runInDurableObject(stub(board), (_inst: Leaderboard, state) =>
      state.storage.getAlarm(),
    )
    expect(alarm).not.toBeNull()

    await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      inst.archiveWriter = new NeonArchiveWriter(env)
      for (let i = 0; i < 20 && inst.closeStatus(1)?.state !== 'done'; i++) {
        await inst.runArchive({ force: true })
      }
    })
    expect((await deleteBoard(board)).status).toBe(200)
    // The reward the close paid stays.
    const paid = await pg()`select player_id from rewards where leaderboard_id = ${board}`
    expect(paid.map((r) => r.player_id)).toEqual(['ann'])
  })

  it('refuses while a queue sends its results to the board (409 naming the queue)', async () => {
    const board = await createBoard({})
    const queue = queueId()
    const made = await call(
      `/v1/admin/queues/${queue}`,
      json('PUT', { ...DUEL, leaderboardId: board }, ADMIN_KEY),
    )
    expect(made.status).toBe(201)
    const refused = await problem(await deleteBoard(board))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.queues).toEqual([queue])
    expect((await fresh<{ config: unknown }>(`/v1/leaderboards/${board}`)).config).toBeTruthy()

    const moved = await call(
      `/v1/admin/queues/${queue}`,
      json('PUT', { ...DUEL, leaderboardId: null }, ADMIN_KEY),
    )
    expect(moved.status).toBe(200)
    expect((await deleteBoard(board)).status).toBe(200)
  })

  it("a queue's PUT naming the board while it is deleted: the deletion waits for it and refuses, or the PUT waits for the deletion and is 422; never both", async () => {
    // A queue's save naming the board is under way (it holds the board's row) when the deletion
    // comes: the deletion waits for it, then sees the queue.
    const board = await createBoard({ paused: true })
    const queue = await createQueue({ ...DUEL })
    // The save holds the row until the deletion waits on it, and a moment more.
    const saving = await holdLock(
      { text: 'select 1 from leaderboards where id = $1 for share', params: [board] },
      { afterWaiter: 0.5 },
      [
        {
          text: `update queues set config = jsonb_set(config, '{leaderboardId}', to_jsonb($2::text)) where id = $1`,
          params: [queue, board],
        },
      ],
    )
    const deleting = deleteBoard(board)
    await saving.done
    const refused = await problem(await deleting)
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.queues).toEqual([queue])
    expect((await fresh<{ config: unknown }>(`/v1/leaderboards/${board}`)).config).toBeTruthy()

    // A deletion under way (it holds the row) when a queue's PUT names the board: the PUT waits
    // for it, then finds no board, and saves nothing.
    const other = await createBoard({ paused: true })
    const deletion = await holdLock(
      { text: 'select 1 from leaderboards where id = $1 for update', params: [other] },
      { afterWaiter: 0.5 },
      [
        {
          text: 'update leaderboards set deleted_at = now(), version = version + 1 where id = $1',
          params: [other],
        },
      ],
    )
    const named = queueId()
    const putting = call(
      `/v1/admin/queues/${named}`,
      json('PUT', { ...DUEL, leaderboardId: other }, ADMIN_KEY),
    )
    await deletion.done
    const bad = await problem(await putting)
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect((await pg()`select 1 from queues where id = ${named}`).length).toBe(0)
  })

  it("a board whose row another change holds past the deletion's lock timeout (4 s) is busy (409, Retry-After: 5) and kept; deleted once it is let go", async () => {
    const board = await createBoard({ paused: true })
    // The lock timeout shortened to 1 s for the test; the row held until the deletion waits on it
    // and 2 s more.
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      const real = inst.neonDeletion
      inst.neonDeletion = (e, id, version) => {
        inst.neonDeletion = real
        return real(e, id, version, 1_000)
      }
    })
    const held = await holdLock(
      { text: 'select 1 from leaderboards where id = $1 for update', params: [board] },
      { afterWaiter: 2 },
    )
    const answer = await deleteBoard(board)
    expect(answer.headers.get('retry-after')).toBe('5')
    const busy = await problem(answer)
    expect(busy).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(busy.body.busy).toBe(true)
    await held.done
    expect(
      (await pg()`select deleted_at from leaderboards where id = ${board}`)[0]!.deleted_at,
    ).toBeNull()
    expect(await tablesOf(board)).toContain('entries')
    expect((await deleteBoard(board)).status).toBe(200)
  })

  it("the cron's reads leave a deleted board out (nothing to push, nothing to close), and its object stays empty after an eviction", async () => {
    const board = await createBoard({ cycle: { every: '1m' }, paused: true })
    // A push the board never acknowledged: the cron would push it again, were the board not deleted.
    await pg()`update leaderboards set version = version + 1, config = config || '{"name":"Late"}'::jsonb where id = ${board}`
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      ;(inst as unknown as { configVersion: number }).configVersion = 2
    })
    expect((await deleteBoard(board)).status).toBe(200)
    const [row] =
      await pg()`select version, pushed_version, deleted_at from leaderboards where id = ${board}`
    expect(row!.deleted_at).not.toBeNull()
    expect(row!.pushed_version).toBe(row!.version)
    // Neither the cron's boards to close nor its pushes owed list it.
    const neonEnv = env as unknown as Env
    const before = board.slice(0, -1)
    expect((await scheduledBoards(neonEnv, before, 100)).map((b) => b.id)).not.toContain(board)
    // The deletion marks its version pushed; a deleted row owed a push (a version pushed before the
    // deletion's mark, as a Worker of the version before would leave it) is not pushed either.
    await pg()`update leaderboards set pushed_version = 0 where id = ${board}`
    expect((await unpushedConfigs(neonEnv, before, 100)).map((b) => b.id)).not.toContain(board)
    await evictDurableObject(stub(board))
    // No configuration pushed back: the object, woken, finds no board (and keeps nothing).
    const info = await runInDurableObject(stub(board), (inst: Leaderboard) => inst.info(board))
    expect(info).toMatchObject({ ok: false, problem: 'not-found' })
    expect(await tablesOf(board)).toEqual([])
    expect(
      (await pg()`select deleted_at from leaderboards where id = ${board}`)[0]!.deleted_at,
    ).not.toBeNull()
  })

  it('keeps the board when a PUT saved another configuration during the deletion (409 with the version)', async () => {
    const board = await createBoard({ name: 'Before' })
    // A PUT whose save reached Neon and whose push has not reached the board yet. (Marked pushed,
    // so that a cron run of another test file does not deliver it first; a whole stored
    // configuration, as other files' erasure walks wake this board's object in their own storage,
    // which reads it from Neon.)
    await pg()`update leaderboards set version = version + 1, pushed_version = version + 1, config = config || '{"name":"After"}'::jsonb where id = ${board}`
    const refused = await problem(await deleteBoard(board))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.version).toBe(2)
    expect((await pg()`select 1 from leaderboards where id = ${board}`).length).toBe(1)
    expect((await submitFor(board, 'ann', { score: 1 })).status).toBe(200)
  })

  it("deletes a board whose Neon version went back below its object's (a restore): not a PUT saved since", async () => {
    const board = await createBoard({ name: 'One', paused: true })
    expect((await put(board, { name: 'Two', paused: true })).status).toBe(200)
    await pg()`update leaderboards set version = 1 where id = ${board}`
    expect((await deleteBoard(board)).status).toBe(200)
    expect(await tablesOf(board)).toEqual([])
  })

  it('with Neon unreachable, answers 503 and keeps the board; a deletion whose answer was lost is settled by the next call or alarm', async () => {
    // Neon never answered: the row is still there, so the next call finds the board as it was.
    const kept = await createBoard({ name: 'Kept', paused: true })
    await loseNextDeletion(kept, false)
    const answer = await deleteBoard(kept)
    expect(answer.headers.get('retry-after')).toBe('5')
    const unreachable = await problem(answer)
    expect(unreachable).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(
      (await fresh<{ config: { name: string } }>(`/v1/leaderboards/${kept}`)).config.name,
    ).toBe('Kept')
    expect(await tablesOf(kept)).toContain('entries')

    // Neon marked the board deleted but its answer was lost: the board's alarm asks Neon again
    // and clears the storage; reads are 404. (No walk of the boards calls it meanwhile: they
    // list the boards Neon has not deleted.)
    const lost = await createBoard({ name: 'Lost', paused: true })
    await loseNextDeletion(lost, true)
    expect((await problem(await deleteBoard(lost))).status).toBe(503)
    // The board set its alarm to ask again within a minute: nothing else would call it now.
    const alarm = await runInDurableObject(stub(lost), (_inst: Leaderboard, state) =>
      state.storage.getAlarm(),
    )
    expect(alarm).not.toBeNull()
    expect(alarm!).toBeLessThanOrEqual(Date.now() + 60_000)
    expect(await runDurableObjectAlarm(stub(lost))).toBe(true)
    expect(await tablesOf(lost)).toEqual([])
    expect(
      (
        await problem(
          await call(`/v1/leaderboards/${lost}`, { headers: { 'cache-control': 'no-cache' } }),
        )
      ).status,
    ).toBe(404)
  })

  it('a deletion that reaches PostgreSQL only after its board settled it as never made (its answer given up on while Neon woke) marks nothing: the board goes on, and a deletion sent again deletes it', async () => {
    const board = await createBoard({ name: 'Late', paused: true })
    let late: (() => Promise<{ outcome: string }>) | undefined
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      const real = inst.neonDeletion
      const unreachable = {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      }
      inst.neonDeletion = (e, id, version) => {
        inst.neonDeletion = real
        late = () => real(e, id, version)
        return real(unreachable as typeof e, id, version)
      }
    })
    expect((await problem(await deleteBoard(board))).status).toBe(503)
    // The next call settles the deletion: Neon holds the board as it was, so the board goes on.
    expect(
      (await fresh<{ config: { name: string } }>(`/v1/leaderboards/${board}`)).config.name,
    ).toBe('Late')
    // The deletion's transaction reaches PostgreSQL only now: it finds the board changed.
    expect((await late!()).outcome).toBe('changed')
    expect(
      (await pg()`select deleted_at from leaderboards where id = ${board}`)[0]!.deleted_at,
    ).toBeNull()
    expect(
      (await fresh<{ config: { name: string } }>(`/v1/leaderboards/${board}`)).config.name,
    ).toBe('Late')
    // The admin's retry deletes it (not 409 "changed since": the fence changed no setting).
    expect((await deleteBoard(board)).status).toBe(200)
    expect(
      (await pg()`select deleted_at from leaderboards where id = ${board}`)[0]!.deleted_at,
    ).not.toBeNull()
    expect(await tablesOf(board)).toEqual([])
  })

  it('while Neon cannot settle a lost deletion, calls are answered 503 at once for 5 s rather than each waiting on Neon in turn', async () => {
    const board = await createBoard({ name: 'Unsettled', paused: true })
    await loseNextDeletion(board, false)
    expect((await problem(await deleteBoard(board))).status).toBe(503)
    const asked = await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const real = inst.boardRead
      const unreachable = {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      }
      let reads = 0
      inst.boardRead = (e, id, marked) => {
        reads++
        return real(unreachable as typeof e, id, marked)
      }
      const t = Date.now()
      inst.now = () => t
      const first = await inst.info(board)
      const second = await inst.info(board)
      const readsWhileFailing = reads
      // Past the 5 s, with Neon back: asked again, and settled (never deleted: the board stays).
      inst.boardRead = real
      inst.now = () => t + 5_001
      const third = await inst.info(board)
      inst.now = Date.now
      return { first, second, readsWhileFailing, third }
    })
    expect(asked.first).toMatchObject({ ok: false, problem: 'unavailable' })
    expect(asked.second).toMatchObject({ ok: false, problem: 'unavailable' })
    expect(asked.readsWhileFailing).toBe(1)
    expect(asked.third).toMatchObject({ config: { name: 'Unsettled' } })
  })

  it('a PUT while a lost deletion cannot be settled (Neon out of reach from the board) is 503 with Retry-After: 5, as the other calls are, not 500; applied once it is settled', async () => {
    const board = await createBoard({ name: 'Unsettled', paused: true })
    await loseNextDeletion(board, false)
    expect((await problem(await deleteBoard(board))).status).toBe(503)
    let real: Leaderboard['boardRead'] | undefined
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      real = inst.boardRead
      const unreachable = {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      }
      inst.boardRead = (e, id, marked) => real!(unreachable as typeof e, id, marked)
    })
    const refused = await put(board, { name: 'Renamed', paused: true })
    expect(refused.headers.get('retry-after')).toBe('5')
    expect(await problem(refused)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    // Neon in reach again, past the 5 s: settled (never deleted), and the PUT applies.
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.boardRead = real!
      inst.now = () => Date.now() + 5_001
    })
    expect((await put(board, { name: 'Renamed', paused: true })).status).toBe(200)
    expect(
      (await fresh<{ config: { name: string } }>(`/v1/leaderboards/${board}`)).config.name,
    ).toBe('Renamed')
  })

  it('an erasure walking the boards takes a board whose object finds no board (deleted since it was listed) as done, not as unreachable', async () => {
    const board = `lb-gone-${crypto.randomUUID().slice(0, 8)}`
    const model = await createBoard({ paused: true })
    await pg()`insert into leaderboards (id, config) select ${board}, config from leaderboards where id = ${model}`
    // This file's object of it reads no row from Neon, as after a deletion between the walk's
    // listing and its call. (Other files' objects of it, in their own storage, read it as it is.)
    await runInDurableObject(stub(board), (inst: Leaderboard) => {
      inst.configRead = async () => null
    })
    const player = `erase-${crypto.randomUUID().slice(0, 8)}`
    // A walk of one board a call, from this one: other files' boards are not this test's.
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    const erased = await call(`/v1/admin/players/${player}?after=${board.slice(0, -1)}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect([200, 202]).toContain(erased.status)
    expect(((await erased.json()) as { boards: { walked: number } }).boards.walked).toBe(1)
    await pg()`update leaderboards set deleted_at = now(), version = version + 1 where id = ${board}`
  })

  it('after a deletion whose answer was lost, a PUT keeps the board if Neon never deleted it, and makes a new one if it did', async () => {
    // Never deleted in Neon: the PUT (say, to resume) keeps the board's entries and bans.
    const kept = await createBoard({ name: 'Kept', paused: true })
    expect((await putEntry(kept, 'ann', 7)).status).toBe(200)
    expect((await banOn(kept, 'cheat')).status).toBe(200)
    await loseNextDeletion(kept, false)
    expect((await problem(await deleteBoard(kept))).status).toBe(503)
    expect((await put(kept, { name: 'Kept' })).status).toBe(200)
    expect(
      (await fresh<Top>(`/v1/leaderboards/${kept}/top`)).entries.map((e) => e.playerId),
    ).toEqual(['ann'])
    expect((await problem(await submitFor(kept, 'cheat', { score: 1 }))).status).toBe(403)

    // Deleted in Neon, the answer lost, then made again: the board is new, nothing of the old.
    const remade = await createBoard({ name: 'Old', paused: true })
    expect((await putEntry(remade, 'ann', 7)).status).toBe(200)
    expect((await banOn(remade, 'cheat')).status).toBe(200)
    await loseNextDeletion(remade, true)
    expect((await problem(await deleteBoard(remade))).status).toBe(503)
    const again = await put(remade, { name: 'New' })
    expect(again.status).toBe(201)
    expect((await fresh<Top>(`/v1/leaderboards/${remade}/top`)).entries).toEqual([])
    expect((await submitFor(remade, 'cheat', { score: 1 })).status).toBe(200)
  })

  it('a push read before the deletion and arriving after it does not bring the board back', async () => {
    const board = await createBoard({ name: 'Gone', paused: true })
    expect((await deleteBoard(board)).status).toBe(200)
    // The cron's push of a version it read before the deletion.
    const late = await runInDurableObject(stub(board), (inst: Leaderboard) =>
      inst.configure(board, { name: 'Gone', paused: true } as never, 1, 0).then(
        () => 'applied',
        (err: Error) => err.message,
      ),
    )
    expect(late).toMatch(/deleted/)
    expect(await tablesOf(board)).toEqual([])
    expect((await problem(await submitFor(board, 'ann', { score: 1 }))).status).toBe(404)
  })

  it("a push that asked Neon for the board's last cycle while the board was deleted does not bring it back", async () => {
    const board = `lb-push-race-${crypto.randomUUID().slice(0, 8)}`
    const model = await createBoard({ paused: true })
    await pg()`insert into leaderboards (id, config) select ${board}, config from leaderboards where id = ${model}`
    const [{ config }] = (await pg()`select config from leaderboards where id = ${model}`) as [
      { config: never },
    ]
    const outcome = await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const real = inst.lastCycleRead
      let release!: () => void
      const held = new Promise<void>((resolve) => (release = resolve))
      let asked = false
      inst.lastCycleRead = async (e, id) => {
        inst.lastCycleRead = real
        asked = true
        await held
        return real(e, id)
      }
      // A push of a Worker of the version before (no last cycle with it), to an object that
      // holds nothing yet.
      const push = inst.configure(board, config, 1).then(
        () => 'applied',
        (err: Error) => err.message,
      )
      for (let waited = 0; !asked; waited += 5) {
        if (waited > 5_000) throw new Error('the push never asked Neon')
        await new Promise((r) => setTimeout(r, 5))
      }
      const deleted = await inst.deleteBoard(board)
      release()
      return { deleted, push: await push }
    })
    expect(outcome.deleted).toMatchObject({ ok: true })
    expect(outcome.push).toMatch(/deleted/)
    expect(await tablesOf(board)).toEqual([])
  })

  it('a call whose configuration read from Neon began before the deletion and ended after it answers 404, not the board of before', async () => {
    const board = `lb-race-${crypto.randomUUID().slice(0, 8)}`
    // In Neon only (the stored configuration of a board made by a PUT): its object has never
    // been told of it, so a call reads it from there.
    const model = await createBoard({ paused: true })
    await pg()`insert into leaderboards (id, config) select ${board}, config from leaderboards where id = ${model}`
    const outcome = await runInDurableObject(stub(board), async (inst: Leaderboard) => {
      const real = inst.configRead
      let release!: () => void
      const held = new Promise<void>((resolve) => (release = resolve))
      let readDone = false
      inst.configRead = async (e, id) => {
        const row = await real(e, id)
        readDone = true
        await held
        return row
      }
      const read = inst.info(board)
      for (let waited = 0; !readDone; waited += 5) {
        if (waited > 5_000) throw new Error('the read from Neon was never held')
        await new Promise((r) => setTimeout(r, 5))
      }
      inst.configRead = real
      const deleted = await inst.deleteBoard(board)
      release()
      return { deleted, read: await read }
    })
    expect(outcome.deleted).toMatchObject({ ok: true })
    expect(outcome.read).toMatchObject({ ok: false, problem: 'not-found' })
    expect(await tablesOf(board)).toEqual([])
  })
})
