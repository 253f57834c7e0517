import { env } from 'cloudflare:workers'
import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it, onTestFinished } from 'vitest'
import {
  ADMIN_KEY,
  BASE,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clientAddress,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { UNKNOWN_IDS_PER_MINUTE } from '../../workers/middleware/rate-limit.ts'
import { unknownBoards } from '../../workers/leaderboards/unknown-boards.ts'
import { boardId, createBoard, fresh, pg, submitFor, type Top } from './helpers/boards.ts'
import {
  edgeCacheUrl,
  forgetIsolateReads,
  MAX_REDIS_ANSWER_CHARS,
  readersWaitingOnLoad,
  storedReadKey,
} from '../../workers/lib/read-cache.ts'
import { getRedis } from '../../workers/lib/redis.ts'
import { until } from './helpers/sockets.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import {
  forgetPlayerName,
  MAX_CACHED_NAMES,
  playerNames,
  rememberedNameCount,
} from '../../workers/leaderboards/names.ts'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { RANK_INDEX_REBUILD_MAX_ENTRIES } from '../../durable-objects/leaderboard.ts'
import type { RankIndex } from '../../workers/core/rank-index.ts'
import { replaceMethod } from './helpers/replace-method.ts'

function counterTotal(name: string): number {
  const family = localFamilies().find((f) => f.name === name)
  return ((family?.series ?? []) as { value: number }[]).reduce((sum, s) => sum + s.value, 0)
}

/** A walk of `board`'s top from its first page to its end (at most 100 pages), `limit` a page. */
async function walkFrom(board: string, first: Top, limit: number): Promise<Top['entries']> {
  const walked = [...first.entries]
  let cursor = first.nextCursor
  for (let pages = 0; cursor && pages < 100; pages++) {
    const page = await fresh<Top>(`/v1/leaderboards/${board}/top?limit=${limit}&cursor=${cursor}`)
    walked.push(...page.entries)
    cursor = page.nextCursor
  }
  return walked
}

/** Seeds `n` players p000..p(n-1) with distinct scores through the public API. */
async function seed(board: string, n: number, score: (i: number) => number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const res = await submitFor(board, `p${String(i).padStart(3, '0')}`, { score: score(i) })
    if (res.status !== 200) throw new Error(`seed: ${res.status} ${await res.text()}`)
  }
}

/** Counts the calls reaching board `b`'s `top` until the test ends, each first waiting `delayMs`. */
/** Counts the board's `top` calls; with `hold`, each waits for it before answering. */
async function countTopCalls(b: string, hold?: Promise<void>): Promise<{ calls: number }> {
  const counted = { calls: 0 }
  await replaceMethod<Leaderboard, 'top'>(
    env.LEADERBOARD.getByName(b),
    'top',
    (original) =>
      async function (this: Leaderboard, ...args: Parameters<Leaderboard['top']>) {
        counted.calls++
        if (hold) await hold
        return original.apply(this, args)
      },
  )
  return counted
}

describe('top pages with cursors', () => {
  it('walks the whole board in pages with contiguous ranks', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 25, (i) => i * 3)
    const seen: { rank: number; playerId: string; score: number }[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: Top = await fresh<Top>(
        `/v1/leaderboards/${b}/top?limit=7${cursor ? `&cursor=${cursor}` : ''}`,
      )
      seen.push(...page.entries)
      cursor = page.nextCursor
      pages++
    } while (cursor && pages < 10)
    expect(pages).toBe(4)
    expect(seen.map((e) => e.rank)).toEqual(Array.from({ length: 25 }, (_, i) => i + 1))
    expect(seen.map((e) => e.score)).toEqual(Array.from({ length: 25 }, (_, i) => (24 - i) * 3))
  })

  it('neither skips nor repeats an entry while scores change between pages', async () => {
    const b = await createBoard({ operator: 'set', submitsPerMinute: 600 })
    await seed(b, 30, (i) => 1000 - i * 10) // p000 = 1000 (rank 1) … p029 = 710
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=10`)
    const seen = first.entries.map((e) => e.playerId)
    // Between pages: someone already seen drops to the bottom, someone not yet seen jumps to the top,
    // someone not yet seen moves within the unseen part, and a new player arrives below the cursor.
    await submitFor(b, 'p002', { score: 1 })
    await submitFor(b, 'p025', { score: 5000 })
    await submitFor(b, 'p015', { score: 712 })
    await submitFor(b, 'newcomer', { score: 800 })
    // And the last entry of the first page (the cursor's own entry) moves.
    await submitFor(b, 'p009', { score: 4000 })
    const walked = await walkFrom(b, first, 10)
    // The walk reads the board as of its first page: every one of the 30, once, in their order then,
    // with contiguous ranks, whatever moved in between. (The changes show on the next walk.)
    expect(walked.map((e) => e.playerId)).toEqual(
      Array.from({ length: 30 }, (_, i) => `p${String(i).padStart(3, '0')}`),
    )
    expect(walked.map((e) => e.score)).toEqual(Array.from({ length: 30 }, (_, i) => 1000 - i * 10))
    expect(walked.map((e) => e.rank)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    expect(seen).toHaveLength(10)
    const next = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=3`)
    expect(next.entries.map((e) => e.playerId)).toEqual(['p025', 'p009', 'p000'])
  })

  it('a page scans a bounded part of the board however much was written since the walk began: short pages, then the rest, each entry once', async () => {
    const b = await createBoard({ operator: 'set' })
    const stub = env.LEADERBOARD.getByName(b)
    const keysScanned: number[] = []
    await runInDurableObject(stub, async (inst: Leaderboard) => {
      const r = await inst.importEntries(
        b,
        Array.from({ length: 30 }, (_, i) => ({
          playerId: `p${String(i).padStart(3, '0')}`,
          score: 1000 - i * 10,
          subscore: 0,
          metadata: null,
        })),
      )
      if (!r.ok) throw new Error(r.detail)
      inst.pageScanBudget = 40
    })
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=5`)
    // Since the first page: 400 newcomers among the entries not yet read, and two of those
    // entries move (their versions as of the walk come from history).
    await runInDurableObject(stub, async (inst: Leaderboard) => {
      const r = await inst.importEntries(b, [
        ...Array.from({ length: 400 }, (_, i) => ({
          playerId: `new${i}`,
          score: 940 - (i % 250),
          subscore: 0,
          metadata: null,
        })),
        { playerId: 'p020', score: 5, subscore: 0, metadata: null },
        { playerId: 'p012', score: 999, subscore: 0, metadata: null },
      ])
      if (!r.ok) throw new Error(r.detail)
      // Count the keys each page reads from the two indexes.
      const holder = inst as unknown as Record<'index' | 'history', { page: RankIndex['page'] }>
      for (const name of ['index', 'history'] as const) {
        const real = holder[name].page.bind(holder[name])
        holder[name].page = (after, limit) => {
          const keys = real(after, limit)
          keysScanned[keysScanned.length - 1]! += keys.length
          return keys
        }
      }
    })
    const walked = [...first.entries]
    const sizes: number[] = []
    let cursor = first.nextCursor
    while (cursor && sizes.length < 100) {
      keysScanned.push(0)
      const page: Top = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=5&cursor=${cursor}`)
      walked.push(...page.entries)
      sizes.push(page.entries.length)
      cursor = page.nextCursor
    }
    expect(cursor).toBeNull()
    // The board as of the first page: every one of the 30 once, in order, ranks contiguous.
    expect(walked.map((e) => e.playerId)).toEqual(
      Array.from({ length: 30 }, (_, i) => `p${String(i).padStart(3, '0')}`),
    )
    expect(walked.map((e) => e.rank)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    // Some pages came back short (the budget ran out among the newcomers), and no page read more
    // than the budget and a chunk of each index.
    expect(sizes.some((n) => n < 5)).toBe(true)
    expect(Math.max(...keysScanned)).toBeLessThanOrEqual(2 * (40 + 32))
  })

  it('a first page is never cut short by the versions kept for older walks', async () => {
    const b = await createBoard({ operator: 'set' })
    const stub = env.LEADERBOARD.getByName(b)
    const entries = (score: (i: number) => number) =>
      Array.from({ length: 100 }, (_, i) => ({
        playerId: `v${String(i).padStart(3, '0')}`,
        score: score(i),
        subscore: 0,
        metadata: null,
      }))
    await runInDurableObject(stub, async (inst: Leaderboard) => {
      // 100 players, then every one of them lower: 100 replaced versions, all above the board.
      for (const batch of [entries((i) => 1000 + i), entries((i) => 100 - i)]) {
        const r = await inst.importEntries(b, batch)
        if (!r.ok) throw new Error(r.detail)
      }
      inst.pageScanBudget = 40
    })
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=5`)
    expect(first.entries.map((e) => e.playerId)).toEqual(['v000', 'v001', 'v002', 'v003', 'v004'])
    const walked = await walkFrom(b, first, 5)
    expect(walked.map((e) => e.rank)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    expect(walked.map((e) => e.score)).toEqual(Array.from({ length: 100 }, (_, i) => 100 - i))
  })

  it('a walk shows each entry with the metadata submitted with the score it shows, whatever was submitted since', async () => {
    const b = await createBoard({ operator: 'set', submitsPerMinute: 600 })
    for (let i = 0; i < 12; i++) {
      const res = await submitFor(b, `m${i}`, { score: 100 - i, metadata: { car: `car-${i}` } })
      expect(res.status).toBe(200)
    }
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=5`)
    // Between pages, players on the pages still to come submit new scores with new metadata.
    await submitFor(b, 'm7', { score: 500, metadata: { car: 'new-7' } })
    await submitFor(b, 'm10', { score: 1, metadata: { car: 'new-10' } })
    const walked = await walkFrom(b, first, 5)
    expect(walked.map((e) => [e.playerId, e.score, e.metadata])).toEqual(
      Array.from({ length: 12 }, (_, i) => [`m${i}`, 100 - i, { car: `car-${i}` }]),
    )
    // A new walk shows the new versions, each with its own metadata.
    const now = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=1`)
    expect(now.entries[0]).toMatchObject({ playerId: 'm7', score: 500, metadata: { car: 'new-7' } })
  })

  it('the metadata kept for walks is bounded: past it, the oldest versions go and a walk that needs them is 409', async () => {
    const b = await createBoard({
      operator: 'set',
      submitsPerMinute: 600,
      metadataMaxBytes: 4096,
      maxEntries: 100_000,
    })
    const car = (tag: string) => ({ car: tag.padEnd(1000, '.') })
    for (let i = 0; i < 6; i++)
      await submitFor(b, `m${i}`, { score: 100 - i, metadata: car(`${i}`) })
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      inst.historyMetadataLimit = 3_000
    })
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=2`)
    // Two replaced versions (about 2,000 code units of metadata) are kept: the walk goes on.
    await submitFor(b, 'm4', { score: 200, metadata: car('new-4') })
    await submitFor(b, 'm5', { score: 201, metadata: car('new-5') })
    const second = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=2&cursor=${first.nextCursor}`)
    expect(second.entries.map((e) => e.playerId)).toEqual(['m2', 'm3'])
    // A third is over the bound: the oldest version goes, and the walk that needs it restarts.
    await submitFor(b, 'm3', { score: 202, metadata: car('new-3') })
    const res = await call(`/v1/leaderboards/${b}/top?limit=2&cursor=${second.nextCursor}`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(res.status).toBe(409)
    expect((await problem(res)).type).toContain('conflict')
  })

  it('versions kept for walks are let go once no walk may need them, by any call: a board whose writes stopped, read for one player, does not hold them', async () => {
    const b = await createBoard({ operator: 'set', submitsPerMinute: 600 })
    for (let i = 0; i < 5; i++) await submitFor(b, `h${i}`, { score: i })
    for (let i = 0; i < 5; i++) await submitFor(b, `h${i}`, { score: 10 + i })
    const kept = () =>
      runInDurableObject(
        env.LEADERBOARD.getByName(b),
        (inst: Leaderboard) =>
          (inst as unknown as { replaced: Map<number, unknown> }).replaced.size,
      )
    expect(await kept()).toBe(5)
    // Five minutes on, with no write since, a read comes.
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      const later = Date.now() + 5 * 60_000 + 1_000
      inst.now = () => later
    })
    const read = await fresh<{ entry: { score: number } }>(`/v1/leaderboards/${b}/players/h0`)
    expect(read.entry.score).toBe(10)
    expect(await kept()).toBe(0)
  })

  it('a cursor edited to claim other ranks, unsealed, made up or taken to another board is 422 and serves no page', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    const other = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 9, (i) => 100 - i)
    await seed(other, 9, (i) => 100 - i)
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=4`)
    const next = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=4&cursor=${first.nextCursor}`)
    expect(next.entries.map((e) => e.rank)).toEqual([5, 6, 7, 8])
    // cycle.snapshot.lastRank.key.seal: the rank the walk has reached set back to 0 would label
    // p004..p007 ranks 1 to 4, on a page served publicly.
    const parts = first.nextCursor!.split('.')
    expect(parts).toHaveLength(5)
    const edited = [parts[0], parts[1], '0', parts[3], parts[4]].join('.')
    // The seal's last character changed (to another one, whatever it was).
    const real = first.nextCursor!
    const resealed = real.slice(0, -1) + (real.endsWith('A') ? 'B' : 'A')
    for (const cursor of [edited, resealed, `${real}x`]) {
      for (const cacheControl of ['no-cache', undefined]) {
        const res = await call(`/v1/leaderboards/${b}/top?limit=4&cursor=${cursor}`, {
          headers: cacheControl ? { 'cache-control': cacheControl } : {},
        })
        expect((await problem(res)).type, cursor).toBe('urn:nexus:problem:validation')
      }
    }
    // The same walk on another board: its seal is this board's.
    const elsewhere = await call(`/v1/leaderboards/${other}/top?limit=4&cursor=${first.nextCursor}`)
    expect((await problem(elsewhere)).status).toBe(422)
    // Without its seal, or made up in the same shape: not a cursor of the board's (an answer
    // saying "from before a deployment, start again" would send a client round and round).
    for (const cursor of [parts.slice(0, 4).join('.'), 'a.b.c.d', '1.30.10.eyJ']) {
      const res = await call(`/v1/leaderboards/${b}/top?limit=4&cursor=${cursor}`)
      expect(await problem(res), cursor).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
    }
    // The real cursor still reads the page it always did.
    expect(
      await fresh<Top>(`/v1/leaderboards/${b}/top?limit=4&cursor=${first.nextCursor}`),
    ).toEqual(next)
  })

  it('a walk begun after an import rolled back goes on exactly across a restart', async () => {
    const b = await createBoard({ operator: 'set', submitsPerMinute: 600 })
    await seed(b, 6, (i) => 100 - i)
    const stub = env.LEADERBOARD.getByName(b)
    // An import whose transaction fails (a trigger refuses its second row): nothing is stored.
    await runInDurableObject(stub, async (board: Leaderboard, state) => {
      state.storage.sql.exec(`CREATE TRIGGER refuse BEFORE INSERT ON entries
        WHEN NEW.player_id = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END`)
      await expect(
        board.importEntries(b, [
          { playerId: 'p001', score: 1, subscore: 0, metadata: null },
          { playerId: 'refused', score: 1, subscore: 0, metadata: null },
        ]),
      ).rejects.toThrow('refused')
      state.storage.sql.exec(`DROP TRIGGER refuse`)
    })
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=2`)
    expect(first.entries.map((e) => e.playerId)).toEqual(['p000', 'p001'])
    // Nothing was written between the first page and the restart, so the walk goes on, and the
    // changes after the restart are kept for it: the board as of the first page, exactly. (The
    // rolled-back import once moved the board's sequence anyway: the first page's snapshot then
    // counted these two later writes as already seen.)
    await evictDurableObject(stub)
    await submitFor(b, 'p000', { score: 1 })
    await submitFor(b, 'p005', { score: 1000 })
    const rest = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=10&cursor=${first.nextCursor}`)
    expect(rest.entries.map((e) => [e.rank, e.playerId, e.score])).toEqual([
      [3, 'p002', 98],
      [4, 'p003', 97],
      [5, 'p004', 96],
      [6, 'p005', 95],
    ])
  })

  it('a forged cursor is 422; a cursor from a closed cycle is 409', async () => {
    const b = await createBoard()
    await seed(b, 3, (i) => i)
    const p1 = await problem(await call(`/v1/leaderboards/${b}/top?cursor=1.AAAA`))
    expect(p1).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    const page = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=1`)
    const closed = await call(`/v1/admin/leaderboards/${b}/close`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(closed.status).toBe(202)
    const p2 = await problem(
      await call(`/v1/leaderboards/${b}/top?cursor=${page.nextCursor}`, {
        headers: { 'cache-control': 'no-cache' },
      }),
    )
    expect(p2).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
  })

  it("after a close, a walk's 409 takes the closed cycle's first page out of the caches: starting again gets the new cycle, not the same cursor", async () => {
    const b = await createBoard()
    await seed(b, 3, (i) => i)
    // The first page is read, and cached, before the close.
    const before = await call(`/v1/leaderboards/${b}/top?limit=1`)
    const page = (await before.json()) as Top & { cycle: number }
    expect(page.cycle).toBe(1)
    expect((await call(`/v1/leaderboards/${b}/top?limit=1`)).headers.get('x-cache')).toMatch(/^HIT/)
    const closed = await call(`/v1/admin/leaderboards/${b}/close`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(closed.status).toBe(202)
    // The walk's next page is refused: its cursor is of the closed cycle.
    const next = await call(`/v1/leaderboards/${b}/top?limit=1&cursor=${page.nextCursor}`)
    expect(next.status).toBe(409)
    // Starting again, as the 409 says, reads the new cycle's first page, not the cached one.
    const again = await call(`/v1/leaderboards/${b}/top?limit=1`)
    expect(again.headers.get('x-cache')).toBe('MISS')
    expect(((await again.json()) as { cycle: number }).cycle).toBe(2)
    // A refused cursor while the cached page is of the current cycle evicts nothing: nobody can
    // empty the caches of a hot page by sending stale cursors.
    const refused = await call(`/v1/leaderboards/${b}/top?limit=1&cursor=${page.nextCursor}`)
    expect(refused.status).toBe(409)
    const cached = await call(`/v1/leaderboards/${b}/top?limit=1`)
    expect(cached.headers.get('x-cache')).toMatch(/^HIT/)
  })

  it('a walk refused as too old (the board restarted since its first page) takes that first page out of the caches: starting again gets a walk that goes on', async () => {
    const b = await createBoard()
    await seed(b, 3, (i) => i)
    const first = (await (await call(`/v1/leaderboards/${b}/top?limit=1`)).json()) as Top
    expect((await call(`/v1/leaderboards/${b}/top?limit=1`)).headers.get('x-cache')).toMatch(/^HIT/)
    // A write, then a restart: the board keeps no history from before it.
    expect((await submitFor(b, 'late', { score: 10 })).status).toBe(200)
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    const next = await call(`/v1/leaderboards/${b}/top?limit=1&cursor=${first.nextCursor}`)
    expect(next.status).toBe(409)
    // Starting again reads a new first page (the cached one's cursor would be refused again).
    const again = await call(`/v1/leaderboards/${b}/top?limit=1`)
    expect(again.headers.get('x-cache')).toBe('MISS')
    const page = (await again.json()) as Top
    expect(page.entries[0]!.playerId).toBe('late')
    const second = await call(`/v1/leaderboards/${b}/top?limit=1&cursor=${page.nextCursor}`)
    expect(second.status).toBe(200)
  })

  it('a missing board is 404 with the request id, and the refusal is not cached', async () => {
    const missing = boardId('missing')
    for (const path of [`/v1/leaderboards/${missing}`, `/v1/leaderboards/${missing}/top`]) {
      const res = await call(path)
      const p = await problem(res)
      expect(p, path).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
      expect(p.body.requestId, path).toBeTruthy()
      expect(res.headers.get('x-request-id'), path).toBe(p.body.requestId)
      expect(res.headers.get('cache-control'), path).toBe('no-store')
    }
    // Created a moment later, it is found at once.
    await createBoard({}, missing)
    expect((await call(`/v1/leaderboards/${missing}`)).status).toBe(200)
  })

  it('limit is bounded: 0, 101 and "ten" are 422', async () => {
    const b = await createBoard()
    for (const limit of ['0', '101', 'ten', '-1', '1.5']) {
      const p = await problem(await call(`/v1/leaderboards/${b}/top?limit=${limit}`))
      expect(p.status, limit).toBe(422)
    }
  })

  it('every limit the reads enforce is stated in the OpenAPI document, with its default', async () => {
    const doc = (await (await call('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { parameters?: { name: string; schema: unknown }[] }>>
    }
    const limitOf = (path: string) =>
      doc.paths[path]?.get?.parameters?.find((p) => p.name === 'limit')?.schema
    const expected: Record<string, [max: number, dflt: number]> = {
      '/v1/leaderboards/{id}/top': [100, 10],
      '/v1/leaderboards/{id}/around/{playerId}': [100, 11],
      '/v1/leaderboards/{id}/cycles/{cycle}/top': [1000, 10],
      '/v1/leaderboards/{id}/players/{playerId}/history': [100, 20],
      '/v1/players/me/rewards': [100, 50],
    }
    for (const [path, [maximum, dflt]] of Object.entries(expected)) {
      expect(limitOf(path), path).toMatchObject({
        type: 'integer',
        minimum: 1,
        maximum,
        default: dflt,
      })
    }
    const b = await createBoard()
    expect((await call(`/v1/leaderboards/${b}/top?limit=100`)).status).toBe(200)
    expect((await call(`/v1/leaderboards/${b}/top?limit=101`)).status).toBe(422)
  })
})

describe('a player and the players around them', () => {
  it('player rank by id and by "me"; a player without a score has entry null', async () => {
    const b = await createBoard()
    const { token, playerId } = await newGuest()
    await seed(b, 5, (i) => i * 10)
    await call(
      `/v1/leaderboards/${b}/scores`,
      json('POST', { score: 25 }, token, { 'idempotency-key': 'me-1' }),
    )
    const byId = await fresh<{ entry: { rank: number; score: number } | null; total: number }>(
      `/v1/leaderboards/${b}/players/${playerId}`,
    )
    expect(byId.entry).toMatchObject({ rank: 3, score: 25 })
    expect(byId.total).toBe(6)
    const me = await fresh<{ playerId: string; entry: { rank: number } }>(
      `/v1/leaderboards/${b}/players/me`,
      { authorization: `Bearer ${token}` },
    )
    expect(me).toMatchObject({ playerId, entry: { rank: 3 } })
    // Cached by the player's own client only, and per credential.
    const mine = await call(`/v1/leaderboards/${b}/players/me`, {
      headers: { authorization: `Bearer ${token}` },
    })
    expect(mine.headers.get('cache-control')).toMatch(/^private, max-age=\d+$/)
    expect(mine.headers.get('vary')).toBe('Authorization')
    await mine.body?.cancel()
    const anyone = await call(`/v1/leaderboards/${b}/players/${playerId}`)
    expect(anyone.headers.get('vary')).toBeNull()
    await anyone.body?.cancel()
    const nobody = await fresh<{ entry: null }>(`/v1/leaderboards/${b}/players/nobody`)
    expect(nobody.entry).toBeNull()
    // The document admits that null: `{$ref: Entry}` or null, not Entry and (object or null).
    const doc = (await (await call('/openapi.json')).json()) as {
      paths: Record<string, { get: { responses: Record<string, unknown> } }>
    }
    const answer = doc.paths['/v1/leaderboards/{id}/players/{playerId}']!.get.responses['200'] as {
      content: { 'application/json': { schema: { properties: { entry: unknown } } } }
    }
    expect(answer.content['application/json'].schema.properties.entry).toEqual({
      anyOf: [{ $ref: '#/components/schemas/Entry' }, { type: 'null' }],
    })
    expect((await problem(await call(`/v1/leaderboards/${b}/players/me`))).status).toBe(401)
  })

  it('around: centred in the middle, shifted at the top and the bottom, whole board when small', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 20, (i) => 100 - i) // p000 rank 1 … p019 rank 20
    const ranks = async (p: string, limit: number) =>
      (await fresh<Top>(`/v1/leaderboards/${b}/around/${p}?limit=${limit}`)).entries.map(
        (e) => e.rank,
      )
    expect(await ranks('p009', 5)).toEqual([8, 9, 10, 11, 12])
    expect(await ranks('p000', 5)).toEqual([1, 2, 3, 4, 5])
    expect(await ranks('p001', 5)).toEqual([1, 2, 3, 4, 5])
    expect(await ranks('p019', 5)).toEqual([16, 17, 18, 19, 20])
    expect(await ranks('p018', 4)).toEqual([17, 18, 19, 20])
    expect(await ranks('p010', 100)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    const p = await problem(await call(`/v1/leaderboards/${b}/around/nobody`))
    expect(p).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
  })

  it('names come from the players table', async () => {
    const b = await createBoard()
    await call('/v1/admin/players/named-one', json('PUT', { name: 'Ada' }, ADMIN_KEY))
    await submitFor(b, 'named-one', { score: 3 })
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top`)).entries[0]).toMatchObject({
      playerId: 'named-one',
      name: 'Ada',
    })
  })

  it('a Neon that takes the names query and never answers does not hold the read: names come back null', async () => {
    const b = await createBoard()
    const player = `hung-name-${crypto.randomUUID().slice(0, 8)}`
    await call(`/v1/admin/players/${player}`, json('PUT', { name: 'Grace' }, ADMIN_KEY))
    await submitFor(b, player, { score: 3 })
    const sent = Date.now()
    const res = await callWithEnv(
      {
        DATABASE_URL: env.TEST_SILENT_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_SILENT_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      `/v1/leaderboards/${b}/top`,
      { headers: { 'cache-control': 'no-cache' } },
    )
    expect(res.status).toBe(200)
    // The names' own limit (1 s), well short of Neon's statement deadline (8 s), which would
    // end the wait too, with the same null names.
    expect(Date.now() - sent).toBeLessThan(5_000)
    expect(((await res.json()) as Top).entries[0]).toMatchObject({ playerId: player, name: null })
    // Neon answering again, the name is read (the null was not remembered as the name).
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top`)).entries[0]).toMatchObject({
      name: 'Grace',
    })
  })

  it('a rename shows at once on reads served by the isolate that took it', async () => {
    const b = await createBoard()
    const player = `renamed-${crypto.randomUUID().slice(0, 8)}`
    await call(`/v1/admin/players/${player}`, json('PUT', { name: 'Alpha' }, ADMIN_KEY))
    await submitFor(b, player, { score: 3 })
    const nameOnTop = async () => (await fresh<Top>(`/v1/leaderboards/${b}/top`)).entries[0]!.name
    expect(await nameOnTop()).toBe('Alpha')
    await call(`/v1/admin/players/${player}`, json('PUT', { name: 'Bravo' }, ADMIN_KEY))
    expect(await nameOnTop()).toBe('Bravo')
  })

  it('a name read in flight during a rename is not remembered', async () => {
    const player = `renamed-${crypto.randomUUID().slice(0, 8)}`
    await call(`/v1/admin/players/${player}`, json('PUT', { name: 'Alpha' }, ADMIN_KEY))
    // A read of the names (a board's page being decorated) is on its way to Neon when this isolate
    // takes a rename: the read comes back with the old name, which must not be remembered.
    const inFlight = playerNames(env, [player])
    forgetPlayerName(player)
    expect((await inFlight).get(player)).toBe('Alpha')
    // The new name lands in Neon only after that read answered, so the next read can only see it
    // by asking Neon again (had the old name been remembered, it would say Alpha for a minute).
    await pg()`update players set name = 'Bravo' where id = ${player}`
    expect((await playerNames(env, [player])).get(player)).toBe('Bravo')
  })

  it("an isolate's full cache of names lets the oldest go, not every name: one read since stays remembered", async () => {
    const player = `kept-${crypto.randomUUID().slice(0, 8)}`
    await call(`/v1/admin/players/${player}`, json('PUT', { name: 'Alpha' }, ADMIN_KEY))
    const madeUp = (n: number) =>
      Array.from({ length: n }, () => `nobody-${crypto.randomUUID().slice(0, 12)}`)
    // Full: names read (in pages of a thousand, a board's largest) until it holds its most.
    for (let i = 0; i < 40 && rememberedNameCount() < MAX_CACHED_NAMES; i++) {
      await playerNames(env, madeUp(1_000))
    }
    expect(rememberedNameCount()).toBe(MAX_CACHED_NAMES)
    expect((await playerNames(env, [player])).get(player)).toBe('Alpha')
    await playerNames(env, madeUp(1_000))
    expect(rememberedNameCount()).toBe(MAX_CACHED_NAMES)
    // The player's still remembered: a rename behind this isolate's back does not show for its
    // minute (emptied, the cache would have asked Neon again).
    await pg()`update players set name = 'Bravo' where id = ${player}`
    expect((await playerNames(env, [player])).get(player)).toBe('Alpha')
  })
})

describe('edge cache', () => {
  it('serves repeated reads from the cache with an honest max-age, and no-cache reads fresh', async () => {
    // No early refresh (a draw of 0.999999 keeps an answer until its TTL).
    const random = Math.random
    Math.random = () => 0.999999
    onTestFinished(() => {
      Math.random = random
    })
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    // Waits for the answer's background work too: its write to the edge cache, read below.
    const first = await callWithEnv({}, `/v1/leaderboards/${b}/top`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    const maxAge = Number(/max-age=(\d+)/.exec(first.headers.get('cache-control') ?? '')?.[1])
    expect(first.headers.get('cache-control')).toMatch(/^public, max-age=\d+$/)
    expect(maxAge).toBeLessThanOrEqual(5)
    await first.body?.cancel()
    await submitFor(b, 'b', { score: 2 })
    const second = await call(`/v1/leaderboards/${b}/top`)
    // Still the cached page (within its ≤ 5 s), from this isolate's memory; its max-age is the
    // time it has left (no Age beside it, which downstream caches would subtract again).
    expect(second.headers.get('x-cache')).toBe('HIT memory')
    expect(((await second.json()) as Top).total).toBe(1)
    const left = Number(/max-age=(\d+)/.exec(second.headers.get('cache-control') ?? '')?.[1])
    expect(left).toBeLessThanOrEqual(maxAge)
    expect(second.headers.get('age')).toBeNull()
    // Another isolate of this location has nothing in memory and finds the page in the Cache API.
    forgetIsolateReads()
    const third = await call(`/v1/leaderboards/${b}/top`)
    expect(third.headers.get('x-cache')).toBe('HIT edge')
    expect(((await third.json()) as Top).total).toBe(1)
    expect((await call(`/v1/leaderboards/${b}/top`)).headers.get('x-cache')).toBe('HIT memory')
    const bypass = await fresh<Top>(`/v1/leaderboards/${b}/top`)
    expect(bypass.total).toBe(2)
  })

  it("a page is not kept past its cycle's end: its cursor would be refused in the next cycle", async () => {
    const b = await createBoard({ cycle: { every: '1h' } })
    await submitFor(b, 'a', { score: 1 })
    // The cycle ends 2.5 s after the read reaches the board (as if it had come just before the
    // boundary), however long the way to it took.
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['top']>) {
          ;(this as unknown as { current: { endsAt: number } }).current.endsAt = Date.now() + 2_500
          return original.apply(this, args)
        },
    )
    const res = await call(`/v1/leaderboards/${b}/top`)
    expect(res.headers.get('x-cache')).toBe('MISS')
    // Kept (and allowed downstream) for the time left in the cycle, not the usual 4 s.
    const maxAge = Number(/max-age=(\d+)/.exec(res.headers.get('cache-control') ?? '')?.[1])
    expect(maxAge).toBeLessThanOrEqual(2)
    await res.body?.cancel()
    // So does every layer that stored it: the location's cache and Redis.
    const key = `lb:${b}:top:10:`
    const edgeTtl = await until(async () => {
      const hit = await caches.default.match(edgeCacheUrl(BASE, storedReadKey(env, key)))
      await hit?.body?.cancel()
      return hit?.headers.get('x-ttl-ms') ?? undefined
    })
    expect(Number(edgeTtl)).toBeLessThanOrEqual(2_500)
    const redis = getRedis(env)!
    const redisTtl = await until(async () => {
      const left = await redis.run('test.pttl', (r) =>
        r.pttl(`nexus:read:${storedReadKey(env, key)}`),
      )
      return left !== undefined && left > 0 ? left : undefined
    })
    expect(redisTtl).toBeLessThanOrEqual(2_500)
  })

  it("the board's settings, a player's standing and around are not kept past the cycle's end either: the first read after it shows the next cycle", async () => {
    const b = await createBoard({ cycle: { every: '1h' } })
    await submitFor(b, 'a', { score: 1 })
    // Time for six reads before the end (a slow machine's), and still less than the usual 4 s.
    const endsAt = Date.now() + 3_900
    await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) => {
      ;(inst as unknown as { current: { endsAt: number } }).current.endsAt = endsAt
    })
    const paths = [
      `/v1/leaderboards/${b}`,
      `/v1/leaderboards/${b}/players/a`,
      `/v1/leaderboards/${b}/around/a`,
    ]
    const cycleOf = (body: { cycle: number | { cycle: number } }) =>
      typeof body.cycle === 'number' ? body.cycle : body.cycle.cycle
    const before: number[] = []
    for (const path of paths) {
      // callWithEnv waits for the read's cache writes.
      const res = await callWithEnv({}, path)
      expect(res.headers.get('x-cache'), path).toBe('MISS')
      const maxAge = Number(/max-age=(\d+)/.exec(res.headers.get('cache-control') ?? '')?.[1])
      expect(maxAge, path).toBeLessThanOrEqual(3)
      before.push(cycleOf((await res.json()) as { cycle: number }))
      // Served from the caches until then.
      const again = await call(path)
      if (Date.now() < endsAt - 100) expect(again.headers.get('x-cache'), path).toMatch(/^HIT/)
      await again.body?.cancel()
    }
    await until(async () => (Date.now() > endsAt + 50 ? true : undefined), 5_000, 'the boundary')
    for (const [i, path] of paths.slice(0, 2).entries()) {
      const res = await call(path)
      expect(res.status, path).toBe(200)
      expect(cycleOf((await res.json()) as { cycle: number }), path).toBe(before[i]! + 1)
    }
    // Nobody has entered the next cycle yet: around the player is 404, not the ended cycle's.
    const around = await call(paths[2]!)
    expect((await problem(around)).status).toBe(404)
  })

  it('a slow load that ends after a newer answer was stored puts its older one back neither at the edge nor in Redis: reads do not go back to before a write', async () => {
    const b = await createBoard()
    await submitFor(b, `${b}-first`, { score: 1 })
    const path = `/v1/leaderboards/${b}/top`
    const key = `lb:${b}:top:10:`
    const board = await countTopCalls(b)
    // A load whose names come from a Neon that never answers (its 1 s limit): it read the board
    // before the write below, and stores its answer a second later.
    const slow = callWithEnv(
      {
        DATABASE_URL: env.TEST_SILENT_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_SILENT_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      path,
      { headers: { 'cache-control': 'no-cache' } },
    )
    await until(
      async () => (board.calls > 0 ? true : undefined),
      5000,
      'the slow load at the board',
    )
    await submitFor(b, `${b}-second`, { score: 2 })
    // A quicker load, begun after the write, stores the newer page first.
    expect((await fresh<Top>(path)).total).toBe(2)
    const older = (await (await slow).json()) as Top
    expect(older.total).toBe(1)
    // Another isolate: the location's cache has the newer page, and so has Redis.
    forgetIsolateReads()
    const edge = await call(path)
    expect(edge.headers.get('x-cache')).toBe('HIT edge')
    expect(((await edge.json()) as Top).total).toBe(2)
    const held = await getRedis(env)!.run('test.get', (r) =>
      r.get<{ body: string }>(`nexus:read:${storedReadKey(env, key)}`),
    )
    expect((JSON.parse(held!.body) as Top).total).toBe(2)
  })

  it('an early refresh chosen at one layer goes to the board, not to the same answer one layer down', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const first = await callWithEnv({}, `/v1/leaderboards/${b}/top`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    await first.body?.cancel()
    await submitFor(b, 'b', { score: 2 })
    // The memory layer draws "refresh now" (a draw of 0 always does); every later draw says
    // "keep", so the edge, holding the same answer, would serve it again if asked to roll.
    const random = Math.random
    let draws = 0
    Math.random = () => (draws++ === 0 ? 0 : 0.999999)
    const lookups = (layer: string, outcome: string) => {
      const family = localFamilies().find((f) => f.name === 'nexus_cache_lookups_total')
      const series = (family?.series ?? []) as {
        labels: { layer: string; outcome: string }
        value: number
      }[]
      return (
        series.find((x) => x.labels.layer === layer && x.labels.outcome === outcome)?.value ?? 0
      )
    }
    const counts = () =>
      ['memory', 'edge'].flatMap((layer) =>
        ['hit', 'miss', 'refresh'].map((outcome) => lookups(layer, outcome)),
      )
    const before = counts()
    let refreshed: Response
    try {
      refreshed = await call(`/v1/leaderboards/${b}/top`)
    } finally {
      Math.random = random
    }
    expect(draws).toBeGreaterThan(0)
    expect(refreshed.headers.get('x-cache')).toBe('MISS')
    expect(((await refreshed.json()) as Top).total).toBe(2)
    // Counted as answers passed over for a refresh, at both layers: neither hits nor misses.
    const after = counts()
    expect(after.map((n, i) => n - before[i]!)).toEqual([0, 0, 1, 0, 0, 1])
  })

  /**
   * `n` reads at once of board `b`'s top page, which no cache holds: the first load held at the
   * board, the others waiting for it, until `whileHeld` is done. Their answers, and the board's
   * calls.
   */
  async function readsBehindOneLoad(
    b: string,
    n: number,
    whileHeld: () => Promise<unknown> = async () => {},
  ) {
    let release!: () => void
    const board = await countTopCalls(
      b,
      new Promise<void>((resolve) => {
        release = resolve
      }),
    )
    try {
      const reads = Array.from({ length: n }, () => call(`/v1/leaderboards/${b}/top`))
      await until(
        async () =>
          (board.calls >= 1 && readersWaitingOnLoad(`lb:${b}:top:10:`) >= n - 1) || undefined,
      )
      await whileHeld()
      release()
      return { answers: await Promise.all(reads), calls: board.calls }
    } finally {
      release()
    }
  }

  it('one load of a key no cache holds at a time in an isolate (every key is new after a deploy): readers meanwhile wait for its answer, not each sent to the board', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const { answers, calls } = await readsBehindOneLoad(b, 5)
    expect(calls).toBe(1)
    const sources = answers.map((r) => r.headers.get('x-cache')).sort()
    expect(sources).toEqual(['MISS', 'MISS shared', 'MISS shared', 'MISS shared', 'MISS shared'])
    for (const r of answers) expect(((await r.json()) as Top).total).toBe(1)
  })

  it('readers waiting for a load slower than the answer lives (a waking Neon) are served its answer, not each sent to load again', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const began = Date.now()
    // Held past the answer's 4 s (and short of the 5 s a read may lag a write, past which the
    // waiting readers load for themselves).
    const { answers, calls } = await readsBehindOneLoad(b, 4, () =>
      until(async () => (Date.now() > began + 4_100 ? true : undefined), 6_000, 'the hold'),
    )
    expect(calls).toBe(1)
    expect(answers.map((r) => r.headers.get('x-cache')).sort()).toEqual([
      'MISS',
      'MISS shared',
      'MISS shared',
      'MISS shared',
    ])
  }, 20_000)

  it('readers waiting for a load that never ends (its request cut off) wait 5 s at most, then one of them loads and the others wait for it', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    let release!: () => void
    const hang = new Promise<void>((resolve) => {
      release = resolve
    })
    let calls = 0
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['top']>) {
          if (calls++ === 0) await hang
          return original.apply(this, args)
        },
    )
    const key = `lb:${b}:top:10:`
    try {
      const stuck = call(`/v1/leaderboards/${b}/top`)
      await until(async () => (calls >= 1 ? true : undefined))
      const waiting = Array.from({ length: 3 }, () => call(`/v1/leaderboards/${b}/top`))
      await until(async () => readersWaitingOnLoad(key) >= 3 || undefined)
      // Answered while the first load still hangs, by one load more.
      const answers = await Promise.all(waiting)
      for (const r of answers) {
        expect(r.status).toBe(200)
        expect(((await r.json()) as Top).total).toBe(1)
      }
      expect(calls).toBe(2)
      // One loaded; the others had its answer, waiting for it or, their wait up just after it
      // ended, from the isolate's memory.
      const sources = answers.map((r) => r.headers.get('x-cache'))
      expect(sources.filter((source) => source === 'MISS')).toHaveLength(1)
      for (const source of sources.filter((source) => source !== 'MISS')) {
        expect(['MISS shared', 'HIT memory']).toContain(source)
      }
      release()
      expect((await stuck).status).toBe(200)
    } finally {
      release()
    }
  }, 20_000)

  it("readers waiting for a load whose answer comes with no time left (the board read just before its cycle's end) are not served it: each reads the next cycle", async () => {
    const b = await createBoard({ cycle: { every: '1h' } })
    await submitFor(b, 'a', { score: 1 })
    // The board's first read comes 300 ms before its cycle's end (moved there as the read
    // arrives, however long the way to it took); its answer is held on the way back past it.
    let endsAt: number | null = null
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['top']>) {
          if (endsAt === null) {
            endsAt = Date.now() + 300
            ;(this as unknown as { current: { endsAt: number } }).current.endsAt = endsAt
          }
          const answer = await original.apply(this, args)
          await held
          return answer
        },
    )
    const key = `lb:${b}:top:10:`
    let answers: Response[]
    try {
      const reads = Array.from({ length: 4 }, () => call(`/v1/leaderboards/${b}/top`))
      await until(async () => readersWaitingOnLoad(key) >= 3 || undefined)
      await until(
        async () => (endsAt !== null && Date.now() > endsAt + 50 ? true : undefined),
        5_000,
        'the boundary',
      )
      release()
      answers = await Promise.all(reads)
    } finally {
      release()
    }
    const cycles = await Promise.all(
      answers.map(async (r) => [r.headers.get('x-cache'), ((await r.json()) as Top).cycle]),
    )
    const ended = Math.min(...cycles.map(([, cycle]) => cycle as number))
    // One reader had the board's answer of the ended cycle (max-age 0); the others read the next.
    expect(cycles.filter(([, cycle]) => cycle === ended)).toEqual([['MISS', ended]])
    expect(cycles.filter(([, cycle]) => cycle === ended + 1)).toHaveLength(3)
  })

  it('readers waiting for a load that the board fails (out of reach of Neon, overloaded) answer its failure too, uncached: none goes to the board itself', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    let calls = 0
    let release!: () => void
    const held = new Promise<void>((resolve) => {
      release = resolve
    })
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      () =>
        async function () {
          calls++
          await held
          return {
            ok: false as const,
            problem: 'unavailable' as const,
            detail: 'The database is unreachable; retry shortly',
          }
        } as never,
    )
    const key = `lb:${b}:top:10:`
    let answers: Response[]
    try {
      const reads = Array.from({ length: 4 }, () => call(`/v1/leaderboards/${b}/top`))
      await until(async () => readersWaitingOnLoad(key) >= 3 || undefined)
      release()
      answers = await Promise.all(reads)
    } finally {
      release()
    }
    for (const res of answers) {
      expect(await problem(res)).toMatchObject({
        status: 503,
        type: 'urn:nexus:problem:unavailable',
      })
      expect(res.headers.get('cache-control')).toBe('no-store')
    }
    expect(calls).toBe(1)
  })

  it('one early refresh of an answer at a time in an isolate: readers meanwhile are served the answer in hand, not sent to the board too', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const first = await call(`/v1/leaderboards/${b}/top`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    await first.body?.cancel()
    // A board held until the others are answered: they all come while the refresh is under way.
    let release!: () => void
    const board = await countTopCalls(
      b,
      new Promise<void>((resolve) => {
        release = resolve
      }),
    )
    // Every roll says "refresh now": each reader would go to the board on its own.
    const random = Math.random
    Math.random = () => 0
    let answers: Response[]
    try {
      const answered: Response[] = []
      const reads = Array.from({ length: 5 }, () =>
        call(`/v1/leaderboards/${b}/top`).then((r) => {
          answered.push(r)
          return r
        }),
      )
      // Four answered without the board (a reader sent to it would wait on the hold too).
      await until(async () => answered.length >= 4 || undefined)
      expect(answered.length).toBe(4)
      release()
      answers = await Promise.all(reads)
    } finally {
      Math.random = random
      release()
    }
    expect(board.calls).toBe(1)
    const sources = answers.map((r) => r.headers.get('x-cache')).sort()
    expect(sources).toEqual(['HIT memory', 'HIT memory', 'HIT memory', 'HIT memory', 'MISS'])
    for (const r of answers) expect(((await r.json()) as Top).total).toBe(1)
  })

  it('a refresh whose request never ended (cancelled before it let go) holds back no newer answer: its readers may refresh that one', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const path = `/v1/leaderboards/${b}/top`
    const first = await call(path)
    expect(first.headers.get('x-cache')).toBe('MISS')
    await first.body?.cancel()
    // The board's first call hangs for the whole test: the refresh that makes it never ends, as
    // one whose client went away is cut off before its `finally`.
    const counted = { calls: 0 }
    let release!: () => void
    const hang = new Promise<void>((resolve) => {
      release = resolve
    })
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['top']>) {
          if (counted.calls++ === 0) await hang
          return original.apply(this, args)
        },
    )
    const random = Math.random
    Math.random = () => 0
    try {
      const lost = call(path)
      await until(async () => counted.calls >= 1 || undefined)
      // A newer answer comes in meanwhile (a fresh read here; the next expiry's load as well).
      const newer = await call(path, { headers: { 'cache-control': 'no-cache' } })
      expect(newer.headers.get('x-cache')).toBe('MISS')
      await newer.body?.cancel()
      expect(counted.calls).toBe(2)
      // A reader rolling "refresh now" for the newer answer goes to the board.
      const refreshed = await call(path)
      expect(refreshed.headers.get('x-cache')).toBe('MISS')
      await refreshed.body?.cancel()
      expect(counted.calls).toBe(3)
      release()
      await (await lost).body?.cancel()
    } finally {
      Math.random = random
      release()
    }
  })

  it('a read that took the refresh but was served a newer answer by a layer below frees it: the next reader may refresh', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const path = `/v1/leaderboards/${b}/top`
    // callWithEnv waits for the read's background cache writes, so none comes after the put below.
    const first = await callWithEnv({}, path)
    expect(first.headers.get('x-cache')).toBe('MISS')
    const body = await first.text()
    // The location's cache holds a newer copy than this isolate's memory (another isolate's).
    await caches.default.put(
      new Request(edgeCacheUrl(BASE, storedReadKey(env, `lb:${b}:top:10:`))),
      new Response(body, {
        headers: {
          'content-type': 'application/json',
          'cache-control': 'public, s-maxage=4',
          'x-stored-at': String(Date.now()),
          'x-compute-ms': '1',
        },
      }),
    )
    const board = await countTopCalls(b)
    const random = Math.random
    // The memory's copy rolls "refresh now"; the newer one below rolls "keep".
    const draws = [0, 0.999999]
    Math.random = () => draws.shift() ?? 0
    try {
      const served = await call(path)
      expect(served.headers.get('x-cache')).toBe('HIT edge')
      await served.body?.cancel()
      expect(board.calls).toBe(0)
      // The next reader rolls "refresh now" too: free to, it goes to the board.
      forgetIsolateReads()
      await caches.default.delete(
        new Request(edgeCacheUrl(BASE, storedReadKey(env, `lb:${b}:top:10:`))),
      )
      const next = await call(path)
      await next.body?.cancel()
    } finally {
      Math.random = random
    }
    expect(board.calls).toBe(1)
  })

  it('an early refresh that fails (the board out of reach) serves the answer it passed over, still within its TTL', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const first = await call(`/v1/leaderboards/${b}/top`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    await first.body?.cancel()
    await replaceMethod<Leaderboard, 'top'>(
      env.LEADERBOARD.getByName(b),
      'top',
      () => () => Promise.reject(new Error('board out of reach')),
    )
    // Every draw says "refresh now".
    const random = Math.random
    Math.random = () => 0
    let served: Response
    try {
      served = await call(`/v1/leaderboards/${b}/top`)
    } finally {
      Math.random = random
    }
    expect(served.status).toBe(200)
    expect(served.headers.get('x-cache')).toBe('HIT memory')
    expect(((await served.json()) as Top).entries[0]!.playerId).toBe('a')
    // Without a cached answer, the failure is the answer.
    const uncached = await call(`/v1/leaderboards/${b}/top?limit=5`)
    expect(uncached.status).toBe(500)
    await uncached.body?.cancel()
  })

  it('a Cache API that fails is a miss: the read is answered from the board', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const edge = caches.default
    const match = edge.match.bind(edge)
    edge.match = () => Promise.reject(new Error('cache unavailable'))
    try {
      const res = await call(`/v1/leaderboards/${b}/top`)
      expect(res.status).toBe(200)
      expect(((await res.json()) as Top).entries[0]!.playerId).toBe('a')
    } finally {
      edge.match = match
    }
  })

  it("a Cache API that fails keeps the answer in Redis all the same: the next location's read is a Redis hit", async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const path = `/v1/leaderboards/${b}/top?limit=3`
    const edge = caches.default
    const match = edge.match.bind(edge)
    edge.match = () => Promise.reject(new Error('cache unavailable'))
    try {
      // callWithEnv waits for the read's background writes to end.
      const res = await callWithEnv({}, path)
      expect(res.headers.get('x-cache')).toBe('MISS')
      await res.body?.cancel()
    } finally {
      edge.match = match
    }
    forgetIsolateReads()
    const next = await call(path)
    expect(next.headers.get('x-cache')).toBe('HIT redis')
    expect(((await next.json()) as Top).entries[0]!.playerId).toBe('a')
  })

  it('with Redis down, a read that misses the isolate and the edge asks it, and is served from the Durable Object; so is a fresh read, whose limit Redis keeps', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const down = { UPSTASH_REDIS_REST_URL: 'http://127.0.0.1:1', UPSTASH_REDIS_REST_TOKEN: 'x' }
    const redisLookups = () => {
      const family = localFamilies().find((f) => f.name === 'nexus_cache_lookups_total')
      const series = (family?.series ?? []) as { labels: { layer: string }; value: number }[]
      return series.filter((x) => x.labels.layer === 'redis').reduce((n, x) => n + x.value, 0)
    }
    const redisTrouble = () =>
      counterTotal('nexus_redis_failures_total') + counterTotal('nexus_redis_skipped_total')
    forgetIsolateReads()
    const [lookupsBefore, troubleBefore] = [redisLookups(), redisTrouble()]
    // A new board's first read: in no isolate's memory, nor at the edge.
    const res = await callWithEnv(down, `/v1/leaderboards/${b}/top`)
    expect(res.status).toBe(200)
    expect(res.headers.get('x-cache')).toBe('MISS')
    expect(((await res.json()) as Top).entries.map((e) => e.playerId)).toEqual(['a'])
    expect(redisLookups()).toBeGreaterThan(lookupsBefore)
    expect(redisTrouble()).toBeGreaterThan(troubleBefore)
    // A fresh read from a client address: its count is kept in Redis, which cannot count it.
    await submitFor(b, 'b', { score: 2 })
    const fresh = await callWithEnv(down, `/v1/leaderboards/${b}/top`, {
      headers: { 'cache-control': 'no-cache', 'cf-connecting-ip': '203.0.113.77' },
    })
    expect(fresh.status).toBe(200)
    expect(((await fresh.json()) as Top).entries.map((e) => e.playerId)).toEqual(['b', 'a'])
  })
})

describe('fresh reads (Cache-Control: no-cache)', () => {
  it('past FRESH_READS_PER_MINUTE per client address are served from the caches, and say so', async () => {
    const { callWithEnv } = await import('./helpers/http.ts')
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    // Addresses no other test uses; an IPv6 client is counted by its /64.
    const prefix = `2001:db8:${hex()}:${hex()}`
    const read = (ip: string) =>
      callWithEnv({ FRESH_READS_PER_MINUTE: '2' }, `/v1/leaderboards/${b}/top`, {
        headers: { 'cache-control': 'no-cache', 'cf-connecting-ip': ip },
      })
    // Counted by the minute: its turn after the second read would leave none limited.
    await clearOfMinuteTurn(5_000)
    const limitedBefore = counterTotal('nexus_fresh_reads_limited_total')
    const seen: { limited: boolean; cache: string | null; total: number }[] = []
    for (let i = 0; i < 4; i++) {
      // The board changes before every read, so a fresh answer and a cached one differ.
      await submitFor(b, `p${i}`, { score: 10 + i })
      const res = await read(`${prefix}::${i + 1}`)
      seen.push({
        limited: res.headers.get('x-fresh-read') === 'limited',
        cache: res.headers.get('x-cache'),
        total: ((await res.json()) as Top).total,
      })
    }
    // 'a' and p0…pi are on the board at read i.
    seen.forEach((s, i) => {
      if (s.limited) {
        expect(s.cache).toBe('HIT memory')
        expect(s.total).toBeLessThan(i + 2)
      } else {
        expect(s.cache).toBe('MISS')
        expect(s.total).toBe(i + 2)
      }
    })
    expect(seen.slice(0, 2).map((s) => s.limited)).toEqual([false, false])
    // Two a minute (a minute boundary during the loop may allow one more).
    const limited = seen.filter((s) => s.limited).length
    expect(limited).toBeGreaterThanOrEqual(1)
    expect(counterTotal('nexus_fresh_reads_limited_total') - limitedBefore).toBe(limited)
    // Another client is not limited by this one.
    const other = await read(`2001:db8:${hex()}:${hex()}::1`)
    expect(other.headers.get('x-cache')).toBe('MISS')
    expect(other.headers.get('x-fresh-read')).toBeNull()
    expect(((await other.json()) as Top).total).toBe(5)
  })
})

describe('reads naming boards and queues that do not exist', () => {
  /** Reads made-up ids from `address` until one is refused (at most two minutes' worth). */
  async function namesUntilRefused(address: string, path: (id: string) => string) {
    const answers: number[] = []
    for (let i = 0; i < 2 * UNKNOWN_IDS_PER_MINUTE + 1; i++) {
      // callWithEnv waits for the count made beside the 404.
      const res = await callWithEnv({}, path(`made-up-${crypto.randomUUID()}`), {
        headers: { 'cf-connecting-ip': address },
      })
      answers.push(res.status)
      if (res.status === 429) return { answers, refused: res }
      await res.body?.cancel()
    }
    return { answers, refused: undefined }
  }

  it(`refuses an address past ${UNKNOWN_IDS_PER_MINUTE} made-up ids a minute (429) before asking a board or Neon, serves it cached answers still, and leaves other addresses be`, async () => {
    // No early refresh (a draw of 0.999999 keeps an answer until its TTL).
    const random = Math.random
    Math.random = () => 0.999999
    onTestFinished(() => {
      Math.random = random
    })
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const address = clientAddress()
    const real = `/v1/leaderboards/${b}/top`
    // Sixty-odd reads, each a board's wake and a Neon query, within one minute's count.
    await clearOfMinuteTurn(20_000)
    const { answers, refused } = await namesUntilRefused(
      address,
      (id) => `/v1/leaderboards/${id}/top`,
    )
    // Every one before the refusal was a 404, at least a minute's allowance of them.
    expect(refused).toBeDefined()
    expect(answers.slice(0, -1).every((s) => s === 404)).toBe(true)
    expect(answers.length).toBeGreaterThan(UNKNOWN_IDS_PER_MINUTE)
    const p = await problem(refused!)
    expect(p).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThan(0)
    const from = (path: string, ip: string) => call(path, { headers: { 'cf-connecting-ip': ip } })
    // The same address: another made-up board, and a made-up queue, are refused at once.
    expect((await from(`/v1/leaderboards/made-up-${crypto.randomUUID()}`, address)).status).toBe(
      429,
    )
    expect((await from(`/v1/matchmaking/made-up-${crypto.randomUUID()}`, address)).status).toBe(429)
    expect(
      (await from(`/v1/matchmaking/made-up-${crypto.randomUUID()}/stats`, address)).status,
    ).toBe(429)
    // A read the caches answer is served as before (cached by another reader just now: the
    // reads above may have taken longer than its 4 s).
    await (await callWithEnv({}, real)).body?.cancel()
    const cached = await from(real, address)
    expect(cached.status).toBe(200)
    expect(cached.headers.get('x-cache')).toMatch(/^HIT/)
    // A player on that address submits a score all the same.
    const g = await newGuest()
    const submitted = await call(
      `/v1/leaderboards/${b}/scores`,
      json('POST', { score: 7 }, g.token, {
        'cf-connecting-ip': address,
        'idempotency-key': `k-${crypto.randomUUID()}`,
      }),
    )
    expect(submitted.status).toBe(200)
    // Another address names a made-up board and is told it does not exist.
    expect(
      (await from(`/v1/leaderboards/made-up-${crypto.randomUUID()}`, clientAddress())).status,
    ).toBe(404)
  })

  it(`refuses a player's submissions past ${UNKNOWN_IDS_PER_MINUTE} made-up boards a minute (429) before asking a board, by the player: another player on the same address submits`, async () => {
    // Counted by the minute: not across its turn.
    await clearOfMinuteTurn(20_000)
    const b = await createBoard()
    const address = clientAddress()
    const g = await newGuest()
    const submit = (board: string, token = g.token) =>
      callWithEnv({}, `/v1/leaderboards/${board}/scores`, {
        ...json('POST', { score: 7 }, token, {
          'cf-connecting-ip': address,
          'idempotency-key': `k-${crypto.randomUUID()}`,
        }),
      })
    const answers: number[] = []
    let refused: Response | undefined
    for (let i = 0; i < 2 * UNKNOWN_IDS_PER_MINUTE + 1 && !refused; i++) {
      // callWithEnv waits for the count made beside the 404.
      const res = await submit(`made-up-${crypto.randomUUID()}`)
      answers.push(res.status)
      if (res.status === 429) refused = res
      else await res.body?.cancel()
    }
    expect(refused).toBeDefined()
    expect(answers.slice(0, -1).every((s) => s === 404)).toBe(true)
    // At the allowance, well before the player's submissions a minute (120) run out.
    expect(answers.length).toBeGreaterThan(UNKNOWN_IDS_PER_MINUTE)
    expect(answers.length).toBeLessThanOrEqual(UNKNOWN_IDS_PER_MINUTE + 2)
    const p = await problem(refused!)
    expect(p).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    expect(p.detail).toMatch(/do not exist/)
    // The same player, to a real board, for the rest of the minute too: nothing is stored.
    expect((await submit(b)).status).toBe(429)
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top`)).total).toBe(0)
    // Another player on that address submits.
    const other = await newGuest()
    expect((await submit(b, other.token)).status).toBe(200)
  })

  it(`a game server's submissions with the admin key to ${UNKNOWN_IDS_PER_MINUTE} and more boards that do not exist (an event's, deleted) are each 404 and not counted: its address reads on`, async () => {
    await clearOfMinuteTurn(20_000)
    const address = clientAddress()
    const answers = new Set<number>()
    for (let i = 0; i < UNKNOWN_IDS_PER_MINUTE + 5; i++) {
      // callWithEnv waits for any count made beside the 404.
      const res = await callWithEnv(
        {},
        `/v1/leaderboards/cup-${crypto.randomUUID()}/scores`,
        json('POST', { playerId: `p-${i}`, score: 7 }, ADMIN_KEY, {
          'cf-connecting-ip': address,
          'idempotency-key': `k-${crypto.randomUUID()}`,
        }),
      )
      answers.add(res.status)
      await res.body?.cancel()
    }
    expect([...answers]).toEqual([404])
    const read = await call(`/v1/leaderboards/made-up-${crypto.randomUUID()}`, {
      headers: { 'cf-connecting-ip': address },
    })
    expect(read.status).toBe(404)
  })

  it(`a game server's reads with the admin key of ${UNKNOWN_IDS_PER_MINUTE} and more boards that no longer exist are each 404 and not counted; from an address past the limit, its reads are still served`, async () => {
    await clearOfMinuteTurn(30_000)
    const b = await createBoard()
    const address = clientAddress()
    const asServer = { authorization: `Bearer ${ADMIN_KEY}`, 'cf-connecting-ip': address }
    const statuses = new Set<number>()
    for (let i = 0; i < UNKNOWN_IDS_PER_MINUTE + 5; i++) {
      // callWithEnv waits for any count made beside the 404.
      const res = await callWithEnv({}, `/v1/leaderboards/gone-${crypto.randomUUID()}/top`, {
        headers: asServer,
      })
      statuses.add(res.status)
      await res.body?.cancel()
    }
    expect([...statuses]).toEqual([404])
    // Players' scripts on that address take it past the limit: their reads are refused, the
    // game server's are not.
    const { refused } = await namesUntilRefused(address, (id) => `/v1/leaderboards/${id}/top`)
    expect(refused).toBeDefined()
    const anyone = await call(`/v1/leaderboards/${b}/top?limit=3`, {
      headers: { 'cf-connecting-ip': address },
    })
    expect(anyone.status).toBe(429)
    const server = await call(`/v1/leaderboards/${b}/top?limit=3`, { headers: asServer })
    expect(server.status).toBe(200)
  })

  it(`a game server still on the admin key a rotation left in ADMIN_KEY_PREVIOUS (a short one, moving to a long one) is not counted for boards that no longer exist either`, async () => {
    await clearOfMinuteTurn(20_000)
    const settings = {
      ADMIN_KEY: `${crypto.randomUUID()}${crypto.randomUUID()}`,
      ADMIN_KEY_PREVIOUS: ADMIN_KEY,
    }
    const address = clientAddress()
    for (let i = 0; i < UNKNOWN_IDS_PER_MINUTE + 5; i++) {
      const res = await callWithEnv(settings, `/v1/leaderboards/gone-${crypto.randomUUID()}/top`, {
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'cf-connecting-ip': address },
      })
      expect(res.status).toBe(404)
      await res.body?.cancel()
    }
    // Not counted: anyone else on the address still reads boards no cache holds.
    const other = await callWithEnv(settings, `/v1/leaderboards/made-up-${crypto.randomUUID()}`, {
      headers: { 'cf-connecting-ip': address },
    })
    expect(other.status).toBe(404)
  })

  it('reads of boards that no longer exist sending a credential that is no admin key (`Bearer undefined`, signed out) are no admin-key guesses: the address is not blocked', async () => {
    await clearOfMinuteTurn(20_000)
    // An unguessable admin key (32 characters or more), as production has.
    const settings = { ADMIN_KEY: `${crypto.randomUUID()}${crypto.randomUUID()}` }
    const address = clientAddress()
    for (let i = 0; i < 30; i++) {
      // callWithEnv waits for the count made beside the 404.
      const res = await callWithEnv(settings, `/v1/leaderboards/gone-${crypto.randomUUID()}/top`, {
        headers: { authorization: 'Bearer undefined', 'cf-connecting-ip': address },
      })
      expect(res.status).toBe(404)
      await res.body?.cancel()
    }
    // Past 20 wrong keys a minute, an address's wrong keys would be 429 unread.
    const wrong = await callWithEnv(settings, '/v1/admin/leaderboards', {
      headers: { authorization: 'Bearer not-the-key', 'cf-connecting-ip': address },
    })
    expect(wrong.status).toBe(401)
    const right = await callWithEnv(settings, '/v1/admin/leaderboards', {
      headers: { authorization: `Bearer ${settings.ADMIN_KEY}`, 'cf-connecting-ip': address },
    })
    expect(right.status).toBe(200)
  })

  it('a made-up board or queue this isolate knows is answered 404 before the shared cache is asked (a Redis command, billed, per read)', async () => {
    const redisLookups = () => {
      const family = localFamilies().find((f) => f.name === 'nexus_cache_lookups_total')
      const series = (family?.series ?? []) as { labels: { layer: string }; value: number }[]
      return series.filter((x) => x.labels.layer === 'redis').reduce((n, x) => n + x.value, 0)
    }
    for (const path of [
      `/v1/leaderboards/made-up-${crypto.randomUUID()}/top`,
      `/v1/leaderboards/made-up-${crypto.randomUUID()}`,
      `/v1/matchmaking/made-up-${crypto.randomUUID()}`,
      `/v1/matchmaking/made-up-${crypto.randomUUID()}/stats`,
    ]) {
      const address = clientAddress()
      const read = () => callWithEnv({}, path, { headers: { 'cf-connecting-ip': address } })
      // The first asks everyone, and the isolate remembers the id.
      expect((await read()).status, path).toBe(404)
      const before = redisLookups()
      for (let i = 0; i < 3; i++) {
        const res = await read()
        expect(res.status, path).toBe(404)
        expect(res.headers.get('cache-control')).toBe('no-store')
      }
      expect(redisLookups(), path).toBe(before)
    }
  })

  it('counts an id once a minute per address: a client asking again and again for a board that is gone is not refused', async () => {
    const address = clientAddress()
    const gone = `gone-${crypto.randomUUID()}`
    for (let i = 0; i < 2 * UNKNOWN_IDS_PER_MINUTE + 1; i++) {
      // As if the isolate's 4 s memory of the unknown id had passed: the board is asked again.
      unknownBoards.forget(gone)
      const res = await callWithEnv({}, `/v1/leaderboards/${gone}/top`, {
        headers: { 'cf-connecting-ip': address },
      })
      expect(res.status, `read ${i + 1}`).toBe(404)
      await res.body?.cancel()
    }
  })

  it(`counts made-up queue ids too: past ${UNKNOWN_IDS_PER_MINUTE} a minute from one address, 429`, async () => {
    const { answers, refused } = await namesUntilRefused(
      clientAddress(),
      (id) => `/v1/matchmaking/${id}`,
    )
    expect(refused).toBeDefined()
    expect(answers.slice(0, -1).every((s) => s === 404)).toBe(true)
    expect(answers.length).toBeGreaterThan(UNKNOWN_IDS_PER_MINUTE)
  })
})

describe('made-up ids from one IPv6 network', () => {
  it(`are limited across the /48's /64s at ten times one address's ${UNKNOWN_IDS_PER_MINUTE} a minute`, async () => {
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const network = `2001:db8:${hex()}`
    const perSubnet = UNKNOWN_IDS_PER_MINUTE / 2
    let named = 0
    let refused: { subnet: number; res: Response } | undefined
    // Each /64 names half its own allowance, so only the network's count can refuse; two
    // minutes' worth at most, in case a minute turns in the loop.
    for (let subnet = 0; !refused && named <= 20 * UNKNOWN_IDS_PER_MINUTE; subnet++) {
      for (let i = 0; i < perSubnet; i++) {
        const res = await callWithEnv({}, `/v1/matchmaking/made-up-${crypto.randomUUID()}`, {
          headers: { 'cf-connecting-ip': `${network}:${subnet.toString(16)}::1` },
        })
        named++
        if (res.status === 429) {
          refused = { subnet, res }
          break
        }
        expect(res.status).toBe(404)
        await res.body?.cancel()
      }
    }
    expect(refused).toBeDefined()
    expect(named).toBeGreaterThan(10 * UNKNOWN_IDS_PER_MINUTE)
    expect(await problem(refused!.res)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    // A /64 of the same network that named nothing yet is refused too; another network is not.
    const fromSubnet = (ip: string) =>
      call(`/v1/matchmaking/made-up-${crypto.randomUUID()}`, {
        headers: { 'cf-connecting-ip': ip },
      })
    expect((await fromSubnet(`${network}:ffff::1`)).status).toBe(429)
    expect((await fromSubnet(`2001:db8:${hex()}:1::1`)).status).toBe(404)
  })
})

describe('fresh reads from one IPv6 network', () => {
  it("are limited across the /48's /64s at ten times one address's allowance", async () => {
    const { callWithEnv } = await import('./helpers/http.ts')
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const network = `2001:db8:${hex()}`
    const limitedOf = async (sub: number) => {
      const res = await callWithEnv({ FRESH_READS_PER_MINUTE: '1' }, `/v1/leaderboards/${b}/top`, {
        headers: {
          'cache-control': 'no-cache',
          'cf-connecting-ip': `${network}:${sub.toString(16)}::1`,
        },
      })
      await res.arrayBuffer()
      return res.headers.get('x-fresh-read') === 'limited'
    }
    // One read from each of 25 /64s: each within its own allowance of 1.
    const limited: boolean[] = []
    for (let sub = 0; sub < 25; sub++) limited.push(await limitedOf(sub))
    expect(limited.slice(0, 10)).toEqual(Array(10).fill(false))
    // Past the network's 10 a minute (a minute's end in the loop lets at most 10 more through).
    expect(limited.filter(Boolean).length).toBeGreaterThanOrEqual(5)
  })
})

describe('the board survives eviction', () => {
  it('rebuilds its index from SQLite with the same standings', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 15, (i) => (i * 7) % 11)
    const before = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    const after = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    expect(after).toEqual(before)
    // And it keeps accepting writes in order after the wake.
    await submitFor(b, 'p003', { score: 100 })
    expect((await fresh<Top>(`/v1/leaderboards/${b}/top?limit=1`)).entries[0]!.playerId).toBe(
      'p003',
    )
  })
})

describe('writes to a board that has just woken', () => {
  const indexLoaded = (inst: Leaderboard) =>
    (inst as unknown as { loadedIndex: unknown }).loadedIndex !== null

  it('a removal and a ban answer the true total without reading the standings into memory; an import after a wake counts its new players once, replayed too', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 10, (i) => i)
    const stub = env.LEADERBOARD.getByName(b)
    await evictDurableObject(stub)
    const removals = (cause: string) =>
      localFamilies()
        .find((f) => f.name === 'nexus_leaderboard_entries_removed_total')
        ?.series.filter((s) => s.labels.cause === cause)
        .reduce((n, s) => n + ('value' in s ? s.value : 0), 0) ?? 0
    const before = { admin: removals('admin'), ban: removals('ban') }
    const r = await runInDurableObject(stub, async (inst: Leaderboard) => ({
      removed: await inst.removeEntry(b, 'p001'),
      banned: await inst.ban(b, 'p002', null),
      loaded: indexLoaded(inst),
    }))
    expect(r.removed).toMatchObject({ ok: true, removed: true, total: 9 })
    expect(r.banned).toMatchObject({ ok: true, removed: true, total: 8 })
    expect(r.loaded).toBe(false)
    expect({ admin: removals('admin'), ban: removals('ban') }).toEqual({
      admin: before.admin + 1,
      ban: before.ban + 1,
    })
    const top = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    expect(top.total).toBe(8)
    expect(top.entries.map((e) => e.playerId)).toEqual([
      'p009',
      'p008',
      'p007',
      'p006',
      'p005',
      'p004',
      'p003',
      'p000',
    ])

    await evictDurableObject(stub)
    const importOnce = () =>
      call(
        `/v1/admin/leaderboards/${b}/entries`,
        json(
          'POST',
          {
            entries: [
              { playerId: 'new1', score: 100 },
              { playerId: 'new2', score: 50 },
              { playerId: 'p003', score: 99 },
            ],
          },
          ADMIN_KEY,
          { 'idempotency-key': 'import-after-wake' },
        ),
      )
    const first = await importOnce()
    expect(first.status).toBe(200)
    expect(await first.json()).toMatchObject({ imported: 3, total: 10 })
    expect(await (await importOnce()).json()).toMatchObject({
      imported: 3,
      total: 10,
      replayed: true,
    })
    const after = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=3`)
    expect(after.total).toBe(10)
    expect(after.entries.map((e) => e.playerId)).toEqual(['new1', 'p003', 'new2'])
  })
})

describe('removing an entry (moderation)', () => {
  const remove = (board: string, playerId: string, credential = ADMIN_KEY) =>
    call(`/v1/admin/leaderboards/${board}/players/${playerId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${credential}` },
    })
  const ids = (page: Top) => page.entries.map((e) => e.playerId)
  /** The players of a walk from its first page to its end, `limit` a page. */
  async function walkOn(board: string, first: Top, limit: number): Promise<string[]> {
    return (await walkFrom(board, first, limit)).map((e) => e.playerId)
  }

  it('takes the entry out at once, closes the ranks up, spares walks begun before, and a retry changes nothing', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 10, (i) => i * 10)
    const before = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    // A walk begins; p001 is on its last page.
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=4`)

    const cheaterKey = 'k-cheater-1'
    const res = await remove(b, 'p001')
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ cycle: before.cycle, removed: true, total: 9 })

    const now = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    expect(ids(now)).toEqual(ids(before).filter((id) => id !== 'p001'))
    expect(now.entries.map((e) => e.rank)).toEqual(Array.from({ length: 9 }, (_, i) => i + 1))
    expect(now.total).toBe(9)
    const p000 = await fresh<{ entry: { rank: number } }>(`/v1/leaderboards/${b}/players/p000`)
    expect(p000.entry.rank).toBe(9)
    expect(await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/p001`)).toMatchObject({
      entry: null,
    })
    const around = await problem(
      await call(`/v1/leaderboards/${b}/players/p001/around`, {
        headers: { 'cache-control': 'no-cache' },
      }),
    )
    expect(around.status).toBe(404)

    // The walk begun before goes on over the board as it was: every entry once, p001 included.
    expect(await walkOn(b, first, 4)).toEqual(ids(before))

    // Again: nothing to remove, nothing changes.
    expect(await (await remove(b, 'p001')).json()).toEqual({
      cycle: before.cycle,
      removed: false,
      total: 9,
    })
    // Across a wake the board stays as it is, and writes go on in order.
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    expect(ids(await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`))).toEqual(ids(now))
    // The player may play on: a new submission counts, from nothing.
    expect((await submitFor(b, 'p001', { score: 5 }, cheaterKey)).status).toBe(200)
    const back = await fresh<{ entry: { score: number; rank: number } }>(
      `/v1/leaderboards/${b}/players/p001`,
    )
    // 5 ranks it above p000's 0, below p002's 20.
    expect(back.entry).toMatchObject({ score: 5, rank: 9 })
    expect(
      (await fresh<{ entry: { rank: number } }>(`/v1/leaderboards/${b}/players/p000`)).entry.rank,
    ).toBe(10)
  })

  it("an erasure spares walks begun before as a removal does, but without the erased player's metadata: their submissions, replaced ones included, are theirs to have erased", async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    for (const [player, score] of [
      ['p000', 10],
      ['p001', 20],
      ['p002', 30],
    ] as const) {
      const res = await submitFor(b, player, { score, metadata: { car: `${player}-car` } })
      expect(res.status).toBe(200)
    }
    // A walk begins at the top; p001 and p000 are on its later pages.
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=1`)
    // p001 improves (its score of 20 a replaced version), then is erased.
    expect((await submitFor(b, 'p001', { score: 25, metadata: { car: 'p001-new' } })).status).toBe(
      200,
    )
    const erased = await runInDurableObject(env.LEADERBOARD.getByName(b), (inst: Leaderboard) =>
      inst.removeEntry(b, 'p001', { erasedAt: Date.now() }),
    )
    expect(erased).toMatchObject({ ok: true, removed: true })
    const walked = await walkFrom(b, first, 1)
    // Every entry once, as the board stood when the walk began, p001's without its metadata.
    expect(walked.map((e) => [e.playerId, e.score, e.metadata])).toEqual([
      ['p002', 30, { car: 'p002-car' }],
      ['p001', 20, null],
      ['p000', 10, { car: 'p000-car' }],
    ])
  })

  it('a walk begun right after a removal goes on across a wake', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 6, (i) => i)
    // The highest write on the board is now the removal, which no entry carries.
    expect((await remove(b, 'p005')).status).toBe(200)
    const first = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=2`)
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    expect(await walkOn(b, first, 2)).toEqual(['p004', 'p003', 'p002', 'p001', 'p000'])
  })

  it('a retried submission of the removed score answers its first response and does not restore it', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    const key = `k-removed-${crypto.randomUUID()}`
    expect((await submitFor(b, 'cheat', { score: 999 }, key)).status).toBe(200)
    expect((await remove(b, 'cheat')).status).toBe(200)
    const retry = await submitFor(b, 'cheat', { score: 999 }, key)
    expect(await retry.json()).toMatchObject({ replayed: true })
    expect(
      await fresh<{ entry: unknown; total: number }>(`/v1/leaderboards/${b}/players/cheat`),
    ).toMatchObject({ entry: null, total: 0 })
  })

  it('refusals change nothing: 401 without the admin key, 403 for a player, 404 for an unknown board, 422 for a bad player id', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 3, (i) => i)
    const before = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    const guest = await newGuest()
    expect(
      (await problem(await call(`/v1/admin/leaderboards/${b}/players/p000`, { method: 'DELETE' })))
        .status,
    ).toBe(401)
    expect((await problem(await remove(b, 'p000', guest.token))).status).toBe(403)
    expect(
      (await problem(await remove(`nope-${crypto.randomUUID().slice(0, 8)}`, 'p000'))).status,
    ).toBe(404)
    const bad = await problem(await remove(b, 'a%20b'))
    expect({ status: bad.status, type: bad.type }).toEqual({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    expect(await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)).toEqual(before)
  })
})

describe('bans', () => {
  const admin = (method: string, path: string, body?: unknown, credential = ADMIN_KEY) =>
    call(
      `/v1/admin/leaderboards/${path}`,
      body === undefined
        ? { method, headers: { authorization: `Bearer ${credential}` } }
        : json(method, body, credential),
    )
  const standing = (b: string, p: string) =>
    fresh<{ entry: { score: number } | null; total: number }>(`/v1/leaderboards/${b}/players/${p}`)

  it('a ban takes the entry out and refuses the player’s submissions in every cycle until lifted', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 3, (i) => i + 1)
    const earlierKey = `k-before-ban-${crypto.randomUUID()}`
    expect((await submitFor(b, 'p001', { score: 50 }, earlierKey)).status).toBe(200)

    const banned = await admin('PUT', `${b}/bans/p001`, { reason: 'aimbot' })
    expect(banned.status).toBe(200)
    expect(await banned.json()).toMatchObject({ banned: true, removed: true, total: 2 })
    expect(await standing(b, 'p001')).toMatchObject({ entry: null, total: 2 })

    const refused = await problem(await submitFor(b, 'p001', { score: 99 }))
    expect({ status: refused.status, type: refused.type }).toEqual({
      status: 403,
      type: 'urn:nexus:problem:forbidden',
    })
    // A retry of a submission answered before the ban gets its answer, and restores nothing.
    const retry = await submitFor(b, 'p001', { score: 50 }, earlierKey)
    expect(await retry.json()).toMatchObject({ replayed: true })
    expect(await standing(b, 'p001')).toMatchObject({ entry: null })
    // Banning again keeps the first ban, with the new reason; nothing left to remove.
    const again = await admin('PUT', `${b}/bans/p001`, { reason: 'aimbot, confirmed' })
    expect(await again.json()).toMatchObject({ banned: true, removed: false })
    const list = await admin('GET', `${b}/bans`)
    const { bans } = (await list.json()) as {
      bans: { playerId: string; reason: string; byAccount: boolean }[]
    }
    // Without the account bans the board took on at creation (another file's tests may hold some).
    expect(bans.filter((x) => !x.byAccount)).toEqual([
      {
        playerId: 'p001',
        reason: 'aimbot, confirmed',
        bannedAt: expect.any(String),
        byAccount: false,
      },
    ])

    // The ban outlives a wake and the cycle: the next cycle refuses the player too.
    await evictDurableObject(env.LEADERBOARD.getByName(b))
    expect((await admin('POST', `${b}/close`, {})).status).toBe(202)
    expect((await submitFor(b, 'p001', { score: 7 })).status).toBe(403)

    expect(await (await admin('DELETE', `${b}/bans/p001`)).json()).toEqual({ lifted: true })
    expect(await (await admin('DELETE', `${b}/bans/p001`)).json()).toEqual({ lifted: false })
    expect((await submitFor(b, 'p001', { score: 7 })).status).toBe(200)
    expect(await standing(b, 'p001')).toMatchObject({ entry: { score: 7 } })
  })

  it('lists bans a page at a time; refusals change nothing', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 3, (i) => i)
    for (const p of ['p002', 'p000', 'p001']) {
      expect((await admin('PUT', `${b}/bans/${p}`, {})).status).toBe(200)
    }
    // A board takes on the account bans Neon holds when it is created (another file's tests may
    // hold some then): the pages are read whole, and this board's own bans picked from them.
    const pages: { playerId: string; reason: string | null; byAccount: boolean }[][] = []
    for (let cursor: string | null = null; ;) {
      const page = (await (
        await admin('GET', `${b}/bans?limit=2${cursor ? `&cursor=${cursor}` : ''}`)
      ).json()) as {
        bans: { playerId: string; reason: string | null; byAccount: boolean }[]
        nextCursor: string | null
      }
      pages.push(page.bans)
      cursor = page.nextCursor
      if (cursor === null) break
    }
    expect(pages.every((page) => page.length >= 1 && page.length <= 2)).toBe(true)
    const own = pages.flat().filter((x) => !x.byAccount)
    expect(own.map((x) => x.playerId)).toEqual(['p000', 'p001', 'p002'])
    expect(own[0]!.reason).toBeNull()
    // Nothing repeated or skipped across pages: every ban listed once, in player id order.
    const ids = pages.flat().map((x) => x.playerId)
    expect(ids).toEqual([...new Set(ids)].sort())

    const before = JSON.stringify(await (await admin('GET', `${b}/bans`)).json())
    const guest = await newGuest()
    const cases: [Response, number][] = [
      [await admin('PUT', `${b}/bans/p003`, { reason: 'x'.repeat(257) }), 422],
      [await admin('PUT', `${b}/bans/p003`, { reason: '' }), 422],
      [await admin('PUT', `${b}/bans/p003`, { reason: 'a\u0000b' }), 422],
      [await admin('PUT', `${b}/bans/p003`, { why: 'x' }), 422],
      [await admin('PUT', `${b}/bans/a%20b`, {}), 422],
      [await admin('PUT', `${b}/bans/p003`, {}, guest.token), 403],
      [await admin('PUT', `nope-${crypto.randomUUID().slice(0, 8)}/bans/p003`, {}), 404],
      [await admin('GET', `${b}/bans?limit=101`), 422],
    ]
    for (const [res, status] of cases) expect((await problem(res)).status).toBe(status)
    expect(JSON.stringify(await (await admin('GET', `${b}/bans`)).json())).toBe(before)
  })
})

/** Puts a board's object back as schema 1 left it: the narrower order index, version 1. */
function asSchemaOneLeftIt(stub: DurableObjectStub) {
  return runInDurableObject(stub, (_i, state) => {
    state.storage.sql.exec(`
      DROP INDEX entries_rank;
      DROP INDEX entries_seq;
      CREATE INDEX entries_order ON entries (cycle, ord_score, ord_sub, seq, player_id);
      CREATE TABLE submit_windows (
        player_id TEXT PRIMARY KEY, window_start INTEGER NOT NULL, count INTEGER NOT NULL
      ) WITHOUT ROWID;
      DROP TABLE bans;
      UPDATE meta SET value = '1' WHERE key = 'schema';
    `)
  })
}

/** A board object's schema as stored: its entries' indexes, leftovers, version. */
function storedSchema(stub: DurableObjectStub) {
  return runInDurableObject(stub, (_i, state) => ({
    names: state.storage.sql
      .exec<{ name: string }>(
        `SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'entries' ORDER BY name`,
      )
      .toArray()
      .map((r) => r.name),
    windowsTable: state.storage.sql
      .exec(`SELECT name FROM sqlite_master WHERE name = 'submit_windows'`)
      .toArray().length,
    pending: state.storage.sql
      .exec(`SELECT value FROM meta WHERE key = 'rank_index_pending'`)
      .toArray().length,
    version: state.storage.sql
      .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'schema'`)
      .one().value,
  }))
}

describe('a board stored by the previous schema', () => {
  it('moves to the current schema on its next wake (covering rank index, no rate-window table, players found by seq), standings unchanged', async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 12, (i) => (i * 5) % 7)
    const before = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    const stub = env.LEADERBOARD.getByName(b)
    await asSchemaOneLeftIt(stub)
    // A close done before schema 6, still carrying its reward tiers and cursor.
    await runInDurableObject(stub, (_i, state) => {
      state.storage.sql.exec(`
        INSERT INTO closes (cycle, starts_at, ends_at, sort_order, rewards, entries, state, cursor,
                            closed_at, finished_at, reason)
        VALUES (0, 0, 1, 'desc', '[{"fromRank":1,"toRank":1,"reward":{"coins":1}}]', 1, 'done',
                '[0,0,1,"p"]', 1, 2, 'schedule');
      `)
    })
    await evictDurableObject(stub)
    expect(await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)).toEqual(before)
    expect(
      await runInDurableObject(stub, (_i, state) =>
        state.storage.sql.exec(`SELECT rewards, cursor FROM closes WHERE cycle = 0`).toArray(),
      ),
    ).toEqual([{ rewards: '[]', cursor: null }])
    const indexes = await storedSchema(stub)
    expect(indexes.names).toContain('entries_rank')
    expect(indexes.names).not.toContain('entries_order')
    // Rate windows are counted from the idempotency records since version 3.
    expect(indexes.windowsTable).toBe(0)
    // The rank index holds keys only; pages find their players by seq since version 5.
    expect(indexes.names).toContain('entries_seq')
    expect(indexes.version).toBe('11')
  })
})

describe('a board stored by schema 1 with many entries', () => {
  it("leaves the rank index's rebuild for a wake with few enough entries: it wakes, standings unchanged, on schema 1's index meanwhile", async () => {
    const b = await createBoard({ submitsPerMinute: 600 })
    await seed(b, 12, (i) => (i * 5) % 7)
    const before = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    const stub = env.LEADERBOARD.getByName(b)
    type Board = { rankIndexRebuildMaxEntries: number }
    // Twelve entries count as many here (the rebuild's bound at 5).
    const boardClass = await runInDurableObject(stub, (inst: Leaderboard) => {
      const cls = inst.constructor as unknown as Board
      cls.rankIndexRebuildMaxEntries = 5
      return cls
    })
    onTestFinished(() => {
      boardClass.rankIndexRebuildMaxEntries = RANK_INDEX_REBUILD_MAX_ENTRIES
    })
    await asSchemaOneLeftIt(stub)
    const indexes = async () => {
      const { names, pending, version } = await storedSchema(stub)
      return { names, pending, version }
    }
    await evictDurableObject(stub)
    expect(await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)).toEqual(before)
    expect(await indexes()).toEqual({
      names: ['entries_order', 'entries_seq'],
      pending: 1,
      version: '11',
    })
    expect((await submitFor(b, 'late', { score: 3 })).status).toBe(200)
    // Few enough (the bound back where it is): the next wake builds it.
    boardClass.rankIndexRebuildMaxEntries = RANK_INDEX_REBUILD_MAX_ENTRIES
    await evictDurableObject(stub)
    const after = await fresh<Top>(`/v1/leaderboards/${b}/top?limit=100`)
    expect(after.entries.map((e) => e.playerId)).toContain('late')
    expect(await indexes()).toEqual({
      names: ['entries_rank', 'entries_seq'],
      pending: 0,
      version: '11',
    })
  })
})

describe('Redis as the cache shared by every location', () => {
  it('serves no answer another deployed version cached: the shared layers key answers by version', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const path = `/v1/leaderboards/${b}/top?limit=5`
    const key = `lb:${b}:top:5:`
    // What the version before a deploy left at the edge and in Redis, in a shape of its own.
    const before = { CF_VERSION_METADATA: { id: 'version-before', tag: '', timestamp: '' } }
    const old = JSON.stringify({ entries: [{ player: 'a', points: 1 }] })
    const stored = { body: old, storedAt: Date.now(), computeMs: 1 }
    await caches.default.put(
      new Request(edgeCacheUrl(BASE, storedReadKey(before, key))),
      new Response(old, {
        headers: {
          'content-type': 'application/json',
          'cache-control': 'public, s-maxage=60',
          'x-stored-at': String(stored.storedAt),
          'x-compute-ms': '1',
        },
      }),
    )
    const redis = getRedis(env)!
    await redis.run('test.set', (r) =>
      r.set(`nexus:read:${storedReadKey(before, key)}`, JSON.stringify(stored), { px: 60_000 }),
    )
    expect(env.CF_VERSION_METADATA?.id).toBeTruthy()
    expect(storedReadKey(env, key)).not.toBe(storedReadKey(before, key))
    forgetIsolateReads()
    // callWithEnv waits for the read's background cache writes, so none comes after the ones below.
    const read = await callWithEnv({}, path)
    expect(read.headers.get('x-cache')).toBe('MISS')
    expect(((await read.json()) as Top).entries[0]!.playerId).toBe('a')
    // The same entries under this version's key are served: the reads above looked there.
    forgetIsolateReads()
    await caches.default.delete(new Request(edgeCacheUrl(BASE, storedReadKey(env, key))))
    await redis.run('test.set', (r) =>
      r.set(`nexus:read:${storedReadKey(env, key)}`, JSON.stringify(stored), { px: 60_000 }),
    )
    const served = await call(path)
    expect(served.headers.get('x-cache')).toBe('HIT redis')
    expect(await served.text()).toBe(old)
  })

  it('answers from Redis when this location’s cache has nothing', async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    // callWithEnv waits for the background cache writes (waitUntil) to finish.
    const { callWithEnv } = await import('./helpers/http.ts')
    const first = await callWithEnv({}, `/v1/leaderboards/${b}/top?limit=5`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    await first.body?.cancel()
    // Another location: its own Cache API is empty; simulate by dropping this location's entry.
    const key = edgeCacheUrl(BASE, storedReadKey(env, `lb:${b}:top:5:`))
    await caches.default.delete(new Request(key))
    forgetIsolateReads()
    const second = await call(`/v1/leaderboards/${b}/top?limit=5`)
    expect(second.headers.get('x-cache')).toBe('HIT redis')
    expect(((await second.json()) as Top).entries[0]!.playerId).toBe('a')
  })

  it("keeps one player's standing (rank, around) out of Redis: another location rarely asks for the same player, and each would cost Upstash two commands", async () => {
    const b = await createBoard()
    await submitFor(b, 'a', { score: 1 })
    const { callWithEnv } = await import('./helpers/http.ts')
    for (const [path, key] of [
      ['players/a', `lb:${b}:player:a`],
      ['around/a?limit=5', `lb:${b}:around:a:5`],
    ] as const) {
      const first = await callWithEnv({}, `/v1/leaderboards/${b}/${path}`)
      expect(first.headers.get('x-cache')).toBe('MISS')
      await first.body?.cancel()
      // Another location, whose own caches are empty, loads it from the board.
      await caches.default.delete(new Request(edgeCacheUrl(BASE, storedReadKey(env, key))))
      forgetIsolateReads()
      const second = await call(`/v1/leaderboards/${b}/${path}`)
      expect(second.headers.get('x-cache')).toBe('MISS')
      await second.body?.cancel()
    }
  })

  it(`keeps answers over ${MAX_REDIS_ANSWER_CHARS / 1024} K characters out of Redis: each location loads its own`, async () => {
    const b = await createBoard({ metadataMaxBytes: 4096, maxEntries: 100_000 })
    await runInDurableObject(env.LEADERBOARD.getByName(b), async (inst: Leaderboard) => {
      const entries = Array.from({ length: 100 }, (_, i) => ({
        playerId: `big${i}`,
        score: i,
        subscore: 0,
        metadata: JSON.stringify({ q: '"'.repeat(1995) }),
      }))
      const r = await inst.importEntries(b, entries)
      if (!r.ok) throw new Error(r.detail)
    })
    const { callWithEnv } = await import('./helpers/http.ts')
    const first = await callWithEnv({}, `/v1/leaderboards/${b}/top?limit=100`)
    expect(first.headers.get('x-cache')).toBe('MISS')
    expect((await first.text()).length).toBeGreaterThan(MAX_REDIS_ANSWER_CHARS)
    const key = edgeCacheUrl(BASE, storedReadKey(env, `lb:${b}:top:100:`))
    await caches.default.delete(new Request(key))
    forgetIsolateReads()
    const second = await call(`/v1/leaderboards/${b}/top?limit=100`)
    expect(second.headers.get('x-cache')).toBe('MISS')
    expect(((await second.json()) as Top).entries).toHaveLength(100)
  })
})
