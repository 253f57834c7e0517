import { runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import { ADMIN_KEY, call, json, newGuest, problem } from './helpers/http.ts'
import { createBoard, holdLock, pg } from './helpers/boards.ts'
import { DUEL, poolOf, queueId } from './helpers/matchmaking.ts'
import { replaceMethod } from './helpers/replace-method.ts'

function put(id: string, body: unknown, credential = ADMIN_KEY) {
  return call(`/v1/admin/queues/${id}`, json('PUT', body, credential))
}

describe('PUT /v1/admin/queues/:queue', () => {
  it('creates with defaults, stores in Neon, pushes to every region; an update bumps the version', async () => {
    const id = queueId()
    const res = await put(id, { ...DUEL, regions: ['eu', 'us'] })
    expect(res.status).toBe(201)
    const created = (await res.json()) as { config: Record<string, unknown>; version: number }
    expect(created.version).toBe(1)
    expect(created.config).toMatchObject({
      maxPartySize: 1,
      ticketTtlSeconds: 300,
      disconnectGraceSeconds: 10,
      leaderboardId: null,
      regions: ['eu', 'us'],
    })
    const [row] = await pg()`select config, version from queues where id = ${id}`
    expect(row!.version).toBe(1)
    expect((row!.config as { rules: string }).rules).toBe('dice-race')

    const board = await createBoard({ operator: 'incr' })
    const upd = await put(id, {
      ...DUEL,
      teamSize: 2,
      maxPartySize: 2,
      regions: ['eu', 'us'],
      ticketTtlSeconds: 60,
      rulesOptions: { target: 50 },
      leaderboardId: board,
    })
    expect(upd.status).toBe(200)
    expect(((await upd.json()) as { version: number }).version).toBe(2)
    for (const region of ['eu', 'us']) {
      const seen = await runInDurableObject(poolOf(id, region), async (inst: MatchPool) =>
        inst.configure(id, region, { ...DUEL, maxPartySize: 1 } as never, 1),
      )
      // The pool already holds version 2: an older push changes nothing.
      expect(seen.version).toBe(2)
    }
    const get = await call(`/v1/admin/queues/${id}`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(((await get.json()) as { config: { teamSize: number } }).config.teamSize).toBe(2)
    const pub = await call(`/v1/matchmaking/${id}`)
    expect(await pub.json()).toMatchObject({
      teams: 2,
      teamSize: 2,
      regions: ['eu', 'us'],
      ticketTtlSeconds: 60,
    })
  })

  it.each([
    ['teams', { teams: 0 }],
    ['teamSize', { teamSize: 1.5 }],
    ['teamSize', { teams: 16, teamSize: 16, rules: 'dice-race' }],
    ['rules', { rules: 'chess' }],
    ['maxRatingGap', { maxRatingGap: -1 }],
    ['widenPerSecond', { widenPerSecond: 'fast' }],
    ['regions', { regions: [] }],
    ['regions', { regions: ['eu', 'eu'] }],
    ['regions.0', { regions: ['EU West'] }],
    ['maxPartySize', { maxPartySize: 2 }],
    ['ticketTtlSeconds', { ticketTtlSeconds: 5 }],
    ['disconnectGraceSeconds', { disconnectGraceSeconds: 9 }],
    ['disconnectGraceSeconds', { disconnectGraceSeconds: 301 }],
    ['disconnectGraceSeconds', { disconnectGraceSeconds: 12.5 }],
    ['disconnectGraceSeconds', { disconnectGraceSeconds: '30' }],
    ['maxWidenedGap', { maxWidenedGap: 50 }],
    ['rulesOptions', { rulesOptions: { target: 'lots' } }],
    ['leaderboardId', { leaderboardId: 'bad id' }],
    ['leaderboardId', { leaderboardId: 'no-such-board-anywhere' }],
    ['paused', { paused: 'yes' }],
    ['paused', { paused: 1 }],
    ['', { extra: true }],
  ])('refuses a bad %s with 422 naming it, and makes no queue', async (path, patch) => {
    const id = queueId()
    const res = await put(id, { ...DUEL, ...patch })
    const p = await problem(res)
    expect(p.status).toBe(422)
    expect(p.type).toBe('urn:nexus:problem:validation')
    const paths = (p.body.errors as { path: string }[]).map((e) => e.path)
    expect(paths).toContain(path)
    expect(await pg()`select 1 from queues where id = ${id}`).toEqual([])
    const served = await call(`/v1/matchmaking/${id}`)
    expect(served.status).toBe(404)
    await served.body?.cancel()
  })

  it('refuses (422) a results board whose bounds refuse a win (score 1, subscore 0), for a queue and for an admin session; the board cannot be narrowed so (409) while a queue sends its results there', async () => {
    const tooHigh = await createBoard({ operator: 'incr', scoreMin: 10 })
    const noSubscore = await createBoard({ operator: 'incr', subscoreMax: -1 })
    for (const board of [tooHigh, noSubscore]) {
      const id = queueId()
      const p = await problem(await put(id, { ...DUEL, leaderboardId: board }))
      expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(p.body.errors).toEqual([
        { path: 'leaderboardId', message: expect.stringContaining('refuse a win') },
      ])
      // Nothing was saved.
      expect(await pg()`select 1 from queues where id = ${id}`).toEqual([])
      const [a, b] = await Promise.all([newGuest(), newGuest()])
      const created = await problem(
        await call(
          '/v1/admin/sessions',
          json(
            'POST',
            {
              rules: 'dice-race',
              roster: [{ playerId: a.playerId }, { playerId: b.playerId }],
              leaderboardId: board,
            },
            ADMIN_KEY,
          ),
        ),
      )
      expect(created).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(created.body.errors).toEqual([
        { path: 'leaderboardId', message: expect.stringContaining('refuse a win') },
      ])
    }

    // A board a queue sends its results to keeps bounds that take a win.
    const board = await createBoard({ operator: 'incr' })
    const id = queueId()
    expect((await put(id, { ...DUEL, leaderboardId: board })).status).toBe(201)
    const narrow = (body: Record<string, unknown>) =>
      call(`/v1/admin/leaderboards/${board}`, json('PUT', { operator: 'incr', ...body }, ADMIN_KEY))
    const refused = await problem(await narrow({ scoreMin: 2 }))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.queues).toEqual([id])
    const [kept] =
      await pg()`select config->>'scoreMin' as min from leaderboards where id = ${board}`
    expect(kept!.min).not.toBe('2')
    // Bounds that still take a win are fine; once the queue points elsewhere, so is any.
    expect((await narrow({ scoreMax: 1000 })).status).toBe(200)
    expect((await put(id, { ...DUEL, leaderboardId: null })).status).toBe(200)
    expect((await narrow({ scoreMin: 2 })).status).toBe(200)
  })

  it("a board PUT refusing a win and a queue's PUT naming the board at the same moment: one waits for the other and is refused; never both", async () => {
    // A queue's save naming the board is under way (it holds the board's row) when the board's
    // PUT comes: the PUT waits for it, then sees the queue, and is 409.
    const board = await createBoard({ operator: 'incr' })
    const queue = queueId()
    expect((await put(queue, { ...DUEL, leaderboardId: null })).status).toBe(201)
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
    const narrowing = call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { operator: 'incr', scoreMin: 2 }, ADMIN_KEY),
    )
    await saving.done
    const refused = await problem(await narrowing)
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.queues).toEqual([queue])

    // A board PUT refusing a win is under way (it holds the row) when a queue's PUT names the
    // board: the queue's waits for it, then finds the bounds, and saves nothing.
    const other = await createBoard({ operator: 'incr' })
    const changing = await holdLock(
      { text: 'select 1 from leaderboards where id = $1 for update', params: [other] },
      { afterWaiter: 0.5 },
      [
        {
          text: `update leaderboards set config = jsonb_set(config, '{scoreMin}', '2') where id = $1`,
          params: [other],
        },
      ],
    )
    const named = queueId()
    const putting = put(named, { ...DUEL, leaderboardId: other })
    await changing.done
    const bad = await problem(await putting)
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(bad.body.errors).toEqual([
      { path: 'leaderboardId', message: expect.stringContaining('refuse a win') },
    ])
    expect(await pg()`select 1 from queues where id = ${named}`).toEqual([])
  })

  it('a board and a queue that already refuse a win together (from before the check) can still be paused, and the board given new rewards', async () => {
    const board = await createBoard({ operator: 'incr' })
    const queue = queueId()
    expect((await put(queue, { ...DUEL, leaderboardId: board })).status).toBe(201)
    await pg()`update leaderboards set config = jsonb_set(config, '{scoreMin}', '10') where id = ${board}`
    const boardPut = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { operator: 'incr', scoreMin: 10, paused: true }, ADMIN_KEY),
    )
    expect(boardPut.status).toBe(200)
    expect((await put(queue, { ...DUEL, leaderboardId: board, paused: true })).status).toBe(200)
  })

  it("a PUT after Neon's version count went back (a restore, a new database) is applied all the same, past the pools' version; one whose push finds a later PUT in force is 409", async () => {
    const id = queueId()
    const regions = ['eu', 'us']
    const held = (region: string) =>
      runInDurableObject(poolOf(id, region), (inst: MatchPool) => {
        const self = inst as unknown as { version: number; config: { ticketTtlSeconds: number } }
        return { version: self.version, ttl: self.config.ticketTtlSeconds }
      })
    expect((await put(id, { ...DUEL, regions, ticketTtlSeconds: 60 })).status).toBe(201)
    expect((await put(id, { ...DUEL, regions, ticketTtlSeconds: 70 })).status).toBe(200)
    // The pools hold version 2; Neon's record goes back to version 1, so this PUT's version is
    // the number the pools already hold, with another configuration.
    await pg()`update queues set version = 1 where id = ${id}`
    const res = await put(id, { ...DUEL, regions, ticketTtlSeconds: 80 })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { version: number }).version).toBe(3)
    for (const region of regions) expect(await held(region)).toEqual({ version: 3, ttl: 80 })
    const [row] = (await pg()`select version, unpushed_regions from queues where id = ${id}`) as {
      version: number
      unpushed_regions: string[]
    }[]
    expect(row).toEqual({ version: 3, unpushed_regions: [] })

    // Another PUT saves version 5 and reaches the eu pool while this one's (version 4) is on its
    // way there.
    await replaceMethod<MatchPool, 'configure'>(
      poolOf(id, 'eu'),
      'configure',
      (configure) =>
        async function (this: MatchPool, queue, region, config, version) {
          if (queue === id && region === 'eu' && version === 4) {
            await pg()`update queues set version = 5 where id = ${id}`
            await configure.call(this, queue, region, { ...config, ticketTtlSeconds: 100 }, 5)
          }
          return configure.call(this, queue, region, config, version)
        },
    )
    const p = await problem(await put(id, { ...DUEL, regions, ticketTtlSeconds: 90 }))
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(await held('eu')).toEqual({ version: 5, ttl: 100 })
  })

  it("a region whose pool answers the PUT's second push with another configuration in force stays owed it, not noted as pushed", async () => {
    const id = queueId()
    const regions = ['eu', 'us']
    expect((await put(id, { ...DUEL, regions, ticketTtlSeconds: 60 })).status).toBe(201)
    expect((await put(id, { ...DUEL, regions, ticketTtlSeconds: 70 })).status).toBe(200)
    // Neon's count goes back (a restore): the PUT's first push is overruled by both pools, and
    // its second, at version 3, finds the us pool at a later version (as a restore could leave
    // it), which it does not apply.
    await pg()`update queues set version = 1 where id = ${id}`
    await replaceMethod<MatchPool, 'configure'>(
      poolOf(id, 'us'),
      'configure',
      (configure) =>
        async function (this: MatchPool, queue, region, config, version) {
          if (queue === id && region === 'us' && version === 3) {
            return { version: 4, waiting: 0, inForce: false }
          }
          return configure.call(this, queue, region, config, version)
        },
    )
    const res = await put(id, { ...DUEL, regions, ticketTtlSeconds: 80 })
    expect(res.status).toBe(200)
    const [row] = (await pg()`select version, unpushed_regions from queues where id = ${id}`) as {
      version: number
      unpushed_regions: string[]
    }[]
    expect(row).toEqual({ version: 3, unpushed_regions: ['us'] })
  })

  it('a PUT whose pools still run the version before (a gradual deployment: no inForce in their answer) is applied once, its version as Neon gave it', async () => {
    const id = queueId()
    expect((await put(id, { ...DUEL, ticketTtlSeconds: 60 })).status).toBe(201)
    await replaceMethod<MatchPool, 'configure'>(
      poolOf(id),
      'configure',
      (configure) =>
        async function (this: MatchPool, ...args: Parameters<MatchPool['configure']>) {
          const { inForce: _f, ...before } = await configure.apply(this, args)
          return before as Awaited<ReturnType<MatchPool['configure']>>
        },
    )
    const res = await put(id, { ...DUEL, ticketTtlSeconds: 70 })
    expect(res.status).toBe(200)
    expect(((await res.json()) as { version: number }).version).toBe(2)
    const [row] = (await pg()`select version from queues where id = ${id}`) as { version: number }[]
    expect(row!.version).toBe(2)
  })

  it('a configuration saved before disconnectGraceSeconds existed reads with its default, for admins and players', async () => {
    const id = queueId()
    expect((await put(id, DUEL)).status).toBe(201)
    // As such a configuration is stored: without the field.
    await pg()`update queues set config = config - 'disconnectGraceSeconds' where id = ${id}`
    const get = await call(`/v1/admin/queues/${id}`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(((await get.json()) as { config: unknown }).config).toMatchObject({
      disconnectGraceSeconds: 10,
    })
    const pub = await call(`/v1/matchmaking/${id}`, { headers: { 'cache-control': 'no-cache' } })
    expect(await pub.json()).toMatchObject({ disconnectGraceSeconds: 10 })
  })

  it('takes If-Match: the GET and PUT give the version as the ETag; a queue changed since is 412 and kept; a retry that landed answers as it did', async () => {
    const id = queueId()
    const withTag = (body: unknown, tag: string) =>
      call(`/v1/admin/queues/${id}`, json('PUT', body, ADMIN_KEY, { 'if-match': tag }))
    const stored = async () =>
      (await pg()`select version, config->>'maxRatingGap' as gap from queues where id = ${id}`)[0]
    // None to change: 412, and none made.
    const none = await problem(await withTag(DUEL, '*'))
    expect(none).toMatchObject({ status: 412, type: 'urn:nexus:problem:precondition-failed' })
    expect(none.body.version).toBeNull()
    expect(await stored()).toBeUndefined()

    expect((await put(id, DUEL)).headers.get('etag')).toBe('"1"')
    const read = await call(`/v1/admin/queues/${id}`, {
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(read.headers.get('etag')).toBe('"1"')
    const changed = await withTag({ ...DUEL, maxRatingGap: 150 }, '"1"')
    expect(changed.status).toBe(200)
    expect(changed.headers.get('etag')).toBe('"2"')
    // Its retry, the answer lost: the same version, nothing saved again, the pool told again.
    const retry = await withTag({ ...DUEL, maxRatingGap: 150 }, '"1"')
    expect(retry.status).toBe(200)
    expect(await retry.json()).toMatchObject({ version: 2, config: { maxRatingGap: 150 } })
    expect(await stored()).toMatchObject({ version: 2, gap: '150' })

    // Another admin's change, then a PUT naming the version before it: refused, the change kept.
    expect((await put(id, { ...DUEL, maxRatingGap: 300 })).status).toBe(200)
    const stale = await problem(await withTag({ ...DUEL, maxRatingGap: 150 }, '"2"'))
    expect(stale).toMatchObject({ status: 412, body: { version: 3 } })
    expect(await stored()).toMatchObject({ version: 3, gap: '300' })
    // The pool holds the change (an older push changes nothing, and says what it holds).
    const held = await runInDurableObject(poolOf(id), async (inst: MatchPool) =>
      inst.configure(id, 'eu', DUEL as never, 1),
    )
    expect(held.version).toBe(3)
  })

  it('a retry answered from the configuration in force, whose queue is deleted before its push, is 412 with version null', async () => {
    const id = queueId()
    expect((await put(id, DUEL)).status).toBe(201)
    const body = { ...DUEL, maxRatingGap: 150 }
    const withTag = () =>
      call(`/v1/admin/queues/${id}`, json('PUT', body, ADMIN_KEY, { 'if-match': '"1"' }))
    expect((await withTag()).status).toBe(200)
    // The retry finds version 2 in force; the queue's deletion lands before its push, whose
    // pool holds the deleted version.
    await replaceMethod<MatchPool, 'configure'>(
      poolOf(id),
      'configure',
      (configure) =>
        async function (this: MatchPool, queue, region, config, version) {
          if (queue === id && version === 2) {
            await pg()`update queues set deleted_at = now(), version = version + 1 where id = ${id}`
            return { version: 3, waiting: 0, inForce: false }
          }
          return configure.call(this, queue, region, config, version)
        },
    )
    const p = await problem(await withTag())
    expect(p).toMatchObject({ status: 412, type: 'urn:nexus:problem:precondition-failed' })
    expect(p.body.version).toBeNull()
  })

  it('refuses a missing field, the reserved name, players and no credential', async () => {
    const refusal = (status: number, type: string) => ({
      status,
      contentType: 'application/problem+json',
      type: `urn:nexus:problem:${type}`,
    })
    const { teams: _teams, ...noTeams } = DUEL
    const noTeamsId = queueId()
    const missing = await problem(await put(noTeamsId, noTeams))
    expect(missing).toMatchObject(refusal(422, 'validation'))
    expect((missing.body.errors as { path: string }[]).map((e) => e.path)).toContain('teams')
    expect(await problem(await put('tickets', DUEL))).toMatchObject(refusal(422, 'validation'))
    const guest = await newGuest()
    const byPlayer = queueId()
    expect(await problem(await put(byPlayer, DUEL, guest.token))).toMatchObject(
      refusal(403, 'forbidden'),
    )
    const anonymous = queueId()
    expect(
      await problem(await call(`/v1/admin/queues/${anonymous}`, json('PUT', DUEL))),
    ).toMatchObject(refusal(401, 'unauthorized'))
    // None of them made a queue: not in Neon, and not served to players.
    const refused = [noTeamsId, byPlayer, anonymous]
    expect(await pg()`select id from queues where id = any(${[...refused, 'tickets']})`).toEqual([])
    for (const q of refused) {
      expect((await call(`/v1/matchmaking/${q}`)).status).toBe(404)
      expect((await call(`/v1/matchmaking/${q}/stats`)).status).toBe(404)
    }
  })

  it('unknown queues are 404 for joins, sockets and stats', async () => {
    const guest = await newGuest()
    const q = queueId()
    expect((await call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, guest.token))).status).toBe(
      404,
    )
    expect((await call(`/v1/matchmaking/${q}/stats`)).status).toBe(404)
    expect(
      (
        await call(`/v1/matchmaking/${q}`, {
          headers: { upgrade: 'websocket', authorization: `Bearer ${guest.token}` },
        })
      ).status,
    ).toBe(404)
  })
})
