import { describe, expect, it } from 'vitest'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clientAddress,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { createBoard, pg } from './helpers/boards.ts'

const profileOf = async (playerId: string) =>
  (await call(`/v1/admin/players/${playerId}`, bearer(ADMIN_KEY))).json()

describe('player profiles', () => {
  it("a player reads their own name and rating; support reads anyone's, with whether banned or erased", async () => {
    const guest = await newGuest()
    const me = await call('/v1/players/me', bearer(guest.token))
    expect(me.status).toBe(200)
    expect(me.headers.get('cache-control')).toBe('no-store')
    expect(await me.json()).toEqual({
      playerId: guest.playerId,
      name: null,
      rating: 1500,
      ratingDeviation: 350,
    })
    const set = await call(
      `/v1/admin/players/${guest.playerId}`,
      json('PUT', { name: 'Ada', rating: 1720 }, ADMIN_KEY),
    )
    expect(set.status).toBe(200)
    expect(await (await call('/v1/players/me', bearer(guest.token))).json()).toMatchObject({
      name: 'Ada',
      rating: 1720,
    })
    expect(await profileOf(guest.playerId)).toEqual({
      playerId: guest.playerId,
      name: 'Ada',
      rating: 1720,
      ratingDeviation: 350,
      seen: true,
      banned: false,
      erased: false,
    })
    // An id Nexus has not seen: what a first join would use, and said so.
    const stranger = `idp-${crypto.randomUUID()}`
    expect(await profileOf(stranger)).toEqual({
      playerId: stranger,
      name: null,
      rating: 1500,
      ratingDeviation: 350,
      seen: false,
      banned: false,
      erased: false,
    })
    // Banned and erased ids, as Neon holds them.
    const banned = `idp-${crypto.randomUUID()}`
    await pg()`insert into player_bans (player_id, reason) values (${banned}, 'test')`
    expect(await profileOf(banned)).toMatchObject({ banned: true, erased: false, seen: false })
    const erased = `idp-${crypto.randomUUID()}`
    await pg()`insert into erased_players (id) values (${erased})`
    expect(await profileOf(erased)).toMatchObject({ banned: false, erased: true, seen: false })
  })

  it('the deviation shown is the one a match ending now starts from: grown by the days idle since the last rating', async () => {
    const guest = await newGuest()
    const set = await call(
      `/v1/admin/players/${guest.playerId}`,
      json('PUT', { rating: 2100, ratingDeviation: 30 }, ADMIN_KEY),
    )
    expect(await set.json()).toMatchObject({ rating: 2100, ratingDeviation: 30 })
    // A year without a rated match: Glicko-2 adds one idle period a day, each the volatility.
    await pg()`update players set rated_at = now() - interval '365 days', rating_volatility = 0.06
               where id = ${guest.playerId}`
    const phi = 30 / 173.7178
    const aYearOn = Math.sqrt(phi * phi + 365 * 0.06 * 0.06) * 173.7178 // ≈ 201
    const me = (await (await call('/v1/players/me', bearer(guest.token))).json()) as {
      ratingDeviation: number
    }
    expect(me.ratingDeviation).toBeCloseTo(aYearOn, 6)
    expect(
      ((await profileOf(guest.playerId)) as { ratingDeviation: number }).ratingDeviation,
    ).toBeCloseTo(aYearOn, 6)
    // A rename leaves the deviation to grow; its answer shows it grown, as GET does.
    const renamed = await call(
      `/v1/admin/players/${guest.playerId}`,
      json('PUT', { name: 'Back' }, ADMIN_KEY),
    )
    expect(((await renamed.json()) as { ratingDeviation: number }).ratingDeviation).toBeCloseTo(
      aYearOn,
      6,
    )
    // The stored value is untouched: the next match grows it itself.
    const [row] = await pg()`select rating_deviation from players where id = ${guest.playerId}`
    expect(Number(row!.rating_deviation)).toBe(30)
  })

  it('who may ask: a player only for themselves, support only with the admin key; bad ids are 422', async () => {
    const guest = await newGuest()
    expect((await problem(await call('/v1/players/me'))).status).toBe(401)
    expect((await problem(await call('/v1/players/me', bearer(ADMIN_KEY)))).status).toBe(403)
    const asPlayer = await problem(
      await call(`/v1/admin/players/${guest.playerId}`, bearer(guest.token)),
    )
    expect(asPlayer).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect((await problem(await call(`/v1/admin/players/${guest.playerId}`))).status).toBe(401)
    const bad = await problem(await call(`/v1/admin/players/${'x'.repeat(300)}`, bearer(ADMIN_KEY)))
    expect(bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })
})

describe('admin listings', () => {
  it('list boards and queues a page at a time in id order, for the admin key only; bad paging is 422', async () => {
    const tag = `zz-list-${crypto.randomUUID().slice(0, 8)}`
    for (const s of ['a', 'b', 'c']) {
      const res = await call(
        `/v1/admin/leaderboards/${tag}-${s}`,
        json('PUT', { name: `Board ${s}`, cycle: { every: '1d' } }, ADMIN_KEY),
      )
      expect(res.status).toBe(201)
    }
    const page = async (path: string) => (await call(path, bearer(ADMIN_KEY))).json()
    const first = (await page(`/v1/admin/leaderboards?after=${tag}&limit=2`)) as {
      boards: { id: string; name: string; cycle: unknown; version: number }[]
      next: string | null
    }
    expect(first.boards).toMatchObject([
      { id: `${tag}-a`, name: 'Board a', cycle: { every: '1d' }, version: 1 },
      { id: `${tag}-b`, name: 'Board b', cycle: { every: '1d' }, version: 1 },
    ])
    expect(first.next).toBe(`${tag}-b`)
    const second = (await page(`/v1/admin/leaderboards?after=${first.next}&limit=2`)) as {
      boards: { id: string }[]
    }
    expect(second.boards[0]!.id).toBe(`${tag}-c`)
    // Past the last board of all: an empty page, and no next.
    const end = (await page(`/v1/admin/leaderboards?after=${'z'.repeat(64)}`)) as {
      boards: unknown[]
      next: string | null
    }
    expect(end).toEqual({ boards: [], next: null })

    const queue = `${tag}-q`
    const DUEL = {
      teams: 2,
      teamSize: 1,
      rules: 'dice-race',
      maxRatingGap: 100,
      widenPerSecond: 10,
    }
    expect(
      (
        await call(
          `/v1/admin/queues/${queue}`,
          json('PUT', { ...DUEL, regions: ['eu', 'us'] }, ADMIN_KEY),
        )
      ).status,
    ).toBe(201)
    const queues = (await page(`/v1/admin/queues?after=${tag}&limit=1`)) as {
      queues: unknown[]
      next: string | null
    }
    expect(queues.queues).toMatchObject([
      { id: queue, rules: 'dice-race', regions: ['eu', 'us'], paused: false, version: 1 },
    ])

    const guest = await newGuest()
    expect((await problem(await call('/v1/admin/queues', bearer(guest.token)))).status).toBe(403)
    expect((await problem(await call('/v1/admin/leaderboards'))).status).toBe(401)
    for (const bad of ['limit=0', 'limit=101', 'limit=ten', `after=${'x'.repeat(200)}`]) {
      const refused = await problem(await call(`/v1/admin/leaderboards?${bad}`, bearer(ADMIN_KEY)))
      expect(refused, bad).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
  })
})

describe("a player's reads of their own account", () => {
  it('are PLAYER_READS_PER_MINUTE a minute in all (profile, rewards, matches, invites, a board history): past it 429 with Retry-After; other players, and the party the SDK polls, read on', async () => {
    // Counted by the minute: not across its turn.
    await clearOfMinuteTurn(10_000)
    const [me, other] = await Promise.all([newGuest(), newGuest()])
    const read = (path: string, token: string) =>
      callWithEnv({ PLAYER_READS_PER_MINUTE: '6' }, path, bearer(token))
    const paths = [
      '/v1/players/me',
      '/v1/players/me/rewards',
      '/v1/players/me/sessions',
      '/v1/players/me/party-invites',
      `/v1/leaderboards/no-board-${crypto.randomUUID().slice(0, 8)}/players/me/history`,
      `/v1/parties/${crypto.randomUUID()}`,
    ]
    const statuses = []
    for (const path of paths) statuses.push((await read(path, me.token)).status)
    // A board nobody made, a party the player is not in: 404, counted as any read.
    expect(statuses).toEqual([200, 200, 200, 200, 404, 404])
    const refused = await read('/v1/players/me', me.token)
    expect(await problem(refused.clone())).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await read(paths[4]!, me.token)).status).toBe(429)
    // The party a waiting member's SDK reads every 2 s is not counted (404: in no party).
    expect((await read('/v1/parties/me', me.token)).status).toBe(404)
    expect((await read('/v1/players/me', other.token)).status).toBe(200)
  })

  it('a malformed read (422) costs the player none of the allowance', async () => {
    await clearOfMinuteTurn(10_000)
    const me = await newGuest()
    const read = (path: string) =>
      callWithEnv({ PLAYER_READS_PER_MINUTE: '2' }, path, bearer(me.token))
    const board = `no-board-${crypto.randomUUID().slice(0, 8)}`
    for (const path of [
      '/v1/players/me/rewards?cursor=garbage',
      '/v1/players/me/sessions?limit=0',
      '/v1/players/me/sessions?cursor=garbage',
      '/v1/players/me/party-invites?limit=x',
      `/v1/leaderboards/${board}/players/me/history?limit=0`,
    ]) {
      expect(await problem(await read(path)), path).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
    }
    expect((await read('/v1/players/me')).status).toBe(200)
    expect((await read('/v1/players/me/rewards')).status).toBe(200)
    expect((await read('/v1/players/me')).status).toBe(429)
  })

  it("the caller's own history is kept by no cache, a browser's included: the next player signed in on the device would be served it", async () => {
    const board = await createBoard()
    const guest = await newGuest()
    const own = await call(`/v1/leaderboards/${board}/players/me/history`, bearer(guest.token))
    expect(own.status).toBe(200)
    expect(own.headers.get('cache-control')).toBe('private, no-store')
    expect(await own.json()).toEqual({ results: [], nextBefore: null })
  })

  it("a board's history of another player, public, is served through the read caches; what they miss is counted per address, not as the caller's account reads", async () => {
    await clearOfMinuteTurn(10_000)
    const board = await createBoard()
    const address = clientAddress()
    const guest = await newGuest()
    const read = (player: string) =>
      callWithEnv(
        { PLAYER_READS_PER_MINUTE: '1' },
        `/v1/leaderboards/${board}/players/${player}/history`,
        bearer(guest.token, { 'cf-connecting-ip': address }),
      )
    const [a, b] = [`a-${crypto.randomUUID()}`, `b-${crypto.randomUUID()}`]
    const first = await read(a)
    expect(first.status).toBe(200)
    expect(first.headers.get('cache-control')).toMatch(/public/)
    expect(await first.json()).toEqual({ results: [], nextBefore: null })
    // Served from the caches: not a Neon query, not counted.
    const again = await read(a)
    expect(again.status).toBe(200)
    expect(again.headers.get('x-cache')).toMatch(/^HIT/)
    // Another player's is a miss: the address's second this minute, past the allowance of 1.
    const refused = await problem(await read(b))
    expect(refused).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    // An early refresh of the cached one is not a miss: past the allowance, it is still made
    // (not counted, nor refused with a 429).
    const random = Math.random
    Math.random = () => 0
    let refreshed: Response
    try {
      refreshed = await read(a)
    } finally {
      Math.random = random
    }
    expect([refreshed.status, refreshed.headers.get('x-cache')]).toEqual([200, 'MISS'])
    expect(await refreshed.json()).toEqual({ results: [], nextBefore: null })
    // The caller's own account reads are their own count, untouched.
    const mine = await callWithEnv(
      { PLAYER_READS_PER_MINUTE: '1' },
      `/v1/leaderboards/${board}/players/me/history`,
      bearer(guest.token, { 'cf-connecting-ip': address }),
    )
    expect(mine.status).toBe(200)
  })

  it("a board's history read with the admin key (a game server reading a tournament's entrants) is not counted per address; a wrong key reads as anyone's, counted", async () => {
    await clearOfMinuteTurn(10_000)
    const board = await createBoard()
    const address = clientAddress()
    const read = (player: string, credential: string) =>
      callWithEnv(
        { PLAYER_READS_PER_MINUTE: '1' },
        `/v1/leaderboards/${board}/players/${player}/history`,
        bearer(credential, { 'cf-connecting-ip': address }),
      )
    // Five players no cache holds, past the address's allowance of 1: all read.
    for (let i = 0; i < 5; i++) {
      const res = await read(`entrant-${i}-${crypto.randomUUID()}`, ADMIN_KEY)
      expect(res.status).toBe(200)
      expect(await res.json()).toEqual({ results: [], nextBefore: null })
    }
    // The address's allowance is untouched: a wrong key's read is its first, the next refused.
    expect((await read(`x-${crypto.randomUUID()}`, 'not-the-admin-key')).status).toBe(200)
    const refused = await problem(await read(`y-${crypto.randomUUID()}`, 'not-the-admin-key'))
    expect(refused).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
  })
})
