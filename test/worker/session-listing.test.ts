import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { GameResult } from '../../workers/core/rules/index.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { pg } from './helpers/boards.ts'
import { ADMIN_KEY, bearer, call, callWithEnv, json, newGuest, problem } from './helpers/http.ts'
import {
  connect,
  createSession,
  playerIds,
  playToEnd,
  sessionObject,
  type TestSocket,
  upgrade,
} from './helpers/session-sockets.ts'
import { until } from './helpers/sockets.ts'
import { newSeed } from '../../workers/matchmaking/session.ts'

interface Listed {
  sessionId: string
  rules: string
  status: 'live' | 'finished'
  roster: { playerId: string; team: number }[]
  queue: string | null
  region: string | null
  createdAt: number
  endedAt: number | null
  reason: string | null
  winner: string | null
  place: number | null
  ratingChange: { before: { rating: number }; after: { rating: number } } | null
}

interface Page {
  sessions: Listed[]
  nextCursor: string | null
}

async function list(
  query: string,
  path = '/v1/admin/sessions',
  credential = ADMIN_KEY,
): Promise<Page> {
  const res = await call(`${path}?${query}`, bearer(credential))
  expect(res.status, await res.clone().text()).toBe(200)
  return (await res.json()) as Page
}

/** Every page of a listing, following `nextCursor`. */
async function allPages(query: string): Promise<Page[]> {
  const pages: Page[] = []
  let cursor: string | null = null
  do {
    const page = await list(cursor === null ? query : `${query}&cursor=${cursor}`)
    pages.push(page)
    cursor = page.nextCursor
  } while (cursor !== null && pages.length < 20)
  return pages
}

describe("the admin's session listing", () => {
  it("lists a player's sessions newest first, a page at a time, with how each ended; filters by status and queue", async () => {
    const [alice, bob, carol] = playerIds(3, 'listed') as [string, string, string]
    const queue = `q-list-${crypto.randomUUID().slice(0, 8)}`
    const first = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: alice }, { playerId: bob }],
      queue,
    })
    const second = await createSession({
      rules: 'relay',
      roster: [{ playerId: alice }, { playerId: carol }],
    })
    const third = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: bob }, { playerId: alice }],
      queue,
    })
    const ended = await call(`/v1/admin/sessions/${second.sessionId}/end`, {
      method: 'POST',
      ...bearer(ADMIN_KEY),
    })
    expect(ended.status).toBe(200)
    // Each session lists itself from its own alarm, its end once Neon has the result.
    await until(async () => {
      const page = await list(`playerId=${alice}&status=finished`)
      return page.sessions.length === 1 ? true : undefined
    })
    await until(async () => {
      const page = await list(`playerId=${alice}`)
      return page.sessions.length === 3 ? true : undefined
    })

    const pages = await allPages(`playerId=${alice}&limit=2`)
    expect(pages.map((p) => p.sessions.length)).toEqual([2, 1])
    const listed = pages.flatMap((p) => p.sessions)
    // Newest first: each no newer than the one before it.
    for (let i = 1; i < listed.length; i++) {
      expect(listed[i]!.createdAt).toBeLessThanOrEqual(listed[i - 1]!.createdAt)
    }
    const byId = new Map(listed.map((s) => [s.sessionId, s]))
    expect([...byId.keys()].sort()).toEqual(
      [first.sessionId, second.sessionId, third.sessionId].sort(),
    )
    expect(byId.get(second.sessionId)).toMatchObject({
      rules: 'relay',
      status: 'finished',
      reason: 'cancelled',
      queue: null,
      roster: [
        { playerId: alice, team: 0 },
        { playerId: carol, team: 1 },
      ],
    })
    expect(byId.get(second.sessionId)!.endedAt).toBeGreaterThanOrEqual(
      byId.get(second.sessionId)!.createdAt,
    )
    expect(byId.get(first.sessionId)).toMatchObject({
      rules: 'dice-race',
      status: 'live',
      reason: null,
      endedAt: null,
      queue,
    })

    // Filters narrow it: a status, a queue, another player, and all of them at once.
    const finished = await list(`playerId=${alice}&status=finished`)
    expect(finished.sessions.map((s) => s.sessionId)).toEqual([second.sessionId])
    const live = await list(`playerId=${alice}&status=live`)
    expect(live.sessions.map((s) => s.sessionId).sort()).toEqual(
      [first.sessionId, third.sessionId].sort(),
    )
    const ofQueue = await list(`queue=${queue}`)
    expect(ofQueue.sessions.map((s) => s.sessionId).sort()).toEqual(
      [first.sessionId, third.sessionId].sort(),
    )
    expect((await list(`playerId=${carol}`)).sessions.map((s) => s.sessionId)).toEqual([
      second.sessionId,
    ])
    expect((await list(`queue=${queue}&playerId=${carol}`)).sessions).toEqual([])
    // The whole listing holds them too (other tests' sessions beside them).
    expect((await list('limit=1')).sessions).toHaveLength(1)
  })

  it('sessions created in the same microsecond are each listed once across pages', async () => {
    const [player] = playerIds(1, 'tied') as [string]
    const ids = ['a', 'b', 'c'].map((s) => `tied-${s}-${crypto.randomUUID()}`)
    const roster = JSON.stringify([{ playerId: player, team: 0 }])
    for (const id of ids) {
      await pg()`insert into game_sessions (id, rules, roster, status, created_at)
        values (${id}, 'relay', ${roster}::jsonb, 'live', '2026-01-01T00:00:00.123456Z')`
    }
    const pages = await allPages(`playerId=${player}&limit=1`)
    // Three full pages, then one that finds nothing older.
    expect(pages.map((p) => p.sessions.length)).toEqual([1, 1, 1, 0])
    expect(pages.flatMap((p) => p.sessions.map((s) => s.sessionId))).toEqual([...ids].reverse())
  })

  it('is for the admin key only; each bad filter or cursor is 422 and reads nothing', async () => {
    expect((await problem(await call('/v1/admin/sessions'))).status).toBe(401)
    const guest = await newGuest()
    const asPlayer = await problem(await call('/v1/admin/sessions', bearer(guest.token)))
    expect(asPlayer).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const forged = (items: unknown[]) =>
      btoa(JSON.stringify(items)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
    const bad = [
      'status=ended',
      'limit=0',
      'limit=101',
      'limit=ten',
      `queue=${'q'.repeat(200)}`,
      'playerId=',
      `playerId=${'p'.repeat(300)}`,
      'cursor=not-a-cursor',
      `cursor=${forged(['2026-02-30T00:00:00.000000Z', 's_1'])}`,
      `cursor=${forged(['2026-01-01T00:00:00.000Z', 's_1'])}`,
      `cursor=${forged(['2026-01-01T00:00:00.000000Z', '../x'])}`,
      `cursor=${forged(['2026-01-01T00:00:00.000000Z', 's_1', 'extra'])}`,
      `cursor=${'x'.repeat(400)}`,
    ]
    // Against a Neon that cannot be reached: a query it made would answer 503, not 422.
    const testEnv = env as unknown as Record<string, string>
    const unreachable = {
      DATABASE_URL: testEnv.TEST_UNREACHABLE_DATABASE_URL!,
      NEON_LOCAL_RELAY: testEnv.TEST_UNREACHABLE_NEON_RELAY!,
    }
    expect((await callWithEnv(unreachable, '/v1/admin/sessions', bearer(ADMIN_KEY))).status).toBe(
      503,
    )
    for (const query of bad) {
      const refused = await problem(
        await callWithEnv(unreachable, `/v1/admin/sessions?${query}`, bearer(ADMIN_KEY)),
      )
      expect(refused, query).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
    // A POST to the same path is still the admin's create.
    const created = await call(
      '/v1/admin/sessions',
      json('POST', { rules: 'relay', roster: [{ playerId: playerIds(1)[0]! }] }, ADMIN_KEY),
    )
    expect(created.status).toBe(201)
  })
})

/** A dice race between two players played to its end over sockets: rated, with a winner. */
async function playedGame(players: [string, string]) {
  const { sessionId, tokens } = await createSession({
    rules: 'dice-race',
    roster: players.map((playerId) => ({ playerId })),
    options: { target: 10 },
  })
  const sockets: Record<string, TestSocket> = {}
  for (const p of players) {
    sockets[p] = await connect(sessionId, tokens[p]!)
    await sockets[p].nextOf('welcome')
  }
  await playToEnd(sockets, players[0])
  const ended = await sockets[players[1]]!.nextOf('ended')
  for (const socket of Object.values(sockets)) socket.close()
  return { sessionId, result: ended.result as GameResult }
}

describe("a player's own matches", () => {
  it('GET /v1/players/me/sessions lists the caller’s matches newest first, with the winner, their place and rating change', async () => {
    const [me, rival, stranger] = playerIds(3, 'history') as [string, string, string]
    const token = (await issuePlayerToken(env, me)).token
    const played = await playedGame([me, rival])
    const live = await createSession({
      rules: 'relay',
      roster: [{ playerId: me }, { playerId: stranger }],
    })
    await createSession({ rules: 'relay', roster: [{ playerId: rival }, { playerId: stranger }] })
    // The result and the rating changes, as the session itself tells its players.
    const view = await until(async () => {
      const res = await call(`/v1/sessions/${played.sessionId}`, bearer(token))
      const v = (await res.json()) as {
        ratingChanges: { playerId: string; before: unknown; after: unknown }[] | null
      }
      return v.ratingChanges ? v : undefined
    })
    await until(async () => {
      const page = await list('', '/v1/players/me/sessions', token)
      return page.sessions.length === 2 &&
        page.sessions.some((s) => s.sessionId === played.sessionId && s.status === 'finished')
        ? true
        : undefined
    })

    const mine = await list('limit=1', '/v1/players/me/sessions', token)
    expect(mine.sessions).toHaveLength(1)
    const older = await list(`cursor=${mine.nextCursor}`, '/v1/players/me/sessions', token)
    const sessions = [...mine.sessions, ...older.sessions]
    expect(older.nextCursor).toBeNull()
    expect(sessions.map((s) => s.sessionId).sort()).toEqual(
      [played.sessionId, live.sessionId].sort(),
    )
    const game = sessions.find((s) => s.sessionId === played.sessionId)!
    const myPlace = played.result.placements.find((p) => p.playerId === me)!.place
    const myChange = view.ratingChanges!.find((c) => c.playerId === me)!
    expect(game).toMatchObject({
      status: 'finished',
      reason: 'finished',
      winner: played.result.winner,
      place: myPlace,
      ratingChange: { before: myChange.before, after: myChange.after },
    })
    expect(sessions.find((s) => s.sessionId === live.sessionId)).toMatchObject({
      status: 'live',
      winner: null,
      place: null,
      ratingChange: null,
    })
    const finishedOnly = await list('status=finished', '/v1/players/me/sessions', token)
    expect(finishedOnly.sessions.map((s) => s.sessionId)).toEqual([played.sessionId])

    // The admin's listing for a player says how it went for that player; for nobody, it cannot.
    const rivalsView = await list(`playerId=${rival}&status=finished`)
    const rivalPlace = played.result.placements.find((p) => p.playerId === rival)!.place
    expect(rivalsView.sessions).toMatchObject([{ sessionId: played.sessionId, place: rivalPlace }])
    const unfiltered = await allPages('status=finished&limit=100')
    const anyones = unfiltered
      .flatMap((p) => p.sessions)
      .find((s) => s.sessionId === played.sessionId)
    expect(anyones).toMatchObject({ winner: played.result.winner, place: null, ratingChange: null })
  })

  it("a session the pool created after an erasure, from a match made before it, is the erased player's: the player back under the id cannot read or join it with their own token", async () => {
    const [me, rival] = playerIds(2, 'made-before') as [string, string]
    const matchedAt = Date.now() - 60_000
    await pg()`insert into erased_players (id, erased_at, completed_at)
      values (${me}, now() - interval '30 seconds', now() - interval '30 seconds')`
    // The pool's creation retried: the session comes to exist only now.
    const sessionId = `s_made-before-${crypto.randomUUID()}`
    const created = await sessionObject(sessionId).create(
      {
        sessionId,
        rules: 'relay',
        roster: [me, rival].map((playerId, team) => ({ playerId, team })),
        seed: newSeed(),
      },
      { listing: 'now', matchedAt },
    )
    expect(created).toMatchObject({ ok: true })
    const token = (await issuePlayerToken(env, me)).token
    for (const path of [`/v1/sessions/${sessionId}`, `/v1/sessions/${sessionId}/events?from=1`]) {
      expect((await problem(await call(path, bearer(token)))).status, path).toBe(403)
    }
    const socket = await upgrade(sessionId, token)
    expect(socket.webSocket).toBeFalsy()
    expect((await problem(socket)).status).toBe(403)
    // The rival, never erased, reads it.
    const rivalToken = (await issuePlayerToken(env, rival)).token
    expect((await call(`/v1/sessions/${sessionId}`, bearer(rivalToken))).status).toBe(200)
  })

  it("a player erased who came back under the id (an identity provider's) sees only the matches since; support sees every one", async () => {
    const [me, rival] = playerIds(2, 'returned') as [string, string]
    const before = await createSession({
      rules: 'relay',
      roster: [{ playerId: me }, { playerId: rival }],
    })
    await until(async () =>
      (await list(`playerId=${me}`)).sessions.length === 1 ? true : undefined,
    )
    // Erased after that match (as the erasure records it), then back under the same id.
    await pg()`insert into erased_players (id, erased_at, completed_at)
      values (${me}, now(), now())`
    const after = await createSession({
      rules: 'relay',
      roster: [{ playerId: me }, { playerId: rival }],
    })
    const token = (await issuePlayerToken(env, me)).token
    const mine = await until(async () => {
      const page = await list('', '/v1/players/me/sessions', token)
      return page.sessions.length > 0 ? page : undefined
    })
    expect(mine.sessions.map((s) => s.sessionId)).toEqual([after.sessionId])
    const support = await until(async () => {
      const page = await list(`playerId=${me}`)
      return page.sessions.length === 2 ? page : undefined
    })
    expect(support.sessions.map((s) => s.sessionId)).toEqual([after.sessionId, before.sessionId])
    // Nor by the session's id: the one before the erasure is the erased player's, not theirs
    // (refused as a session they are not in is); support reads it.
    for (const path of [
      `/v1/sessions/${before.sessionId}`,
      `/v1/sessions/${before.sessionId}/events?from=1`,
    ]) {
      expect((await problem(await call(path, bearer(token)))).status, path).toBe(403)
      expect((await call(path, bearer(ADMIN_KEY))).status, path).toBe(200)
    }
    for (const path of [
      `/v1/sessions/${after.sessionId}`,
      `/v1/sessions/${after.sessionId}/events?from=1`,
    ]) {
      expect((await call(path, bearer(token))).status, path).toBe(200)
    }
    // With Neon out of reach the check cannot be made, and the read is served rather than failed
    // (a running game's reads must not fail with Neon).
    const unreachable = {
      DATABASE_URL: (env as unknown as Record<string, string>).TEST_UNREACHABLE_DATABASE_URL,
      NEON_LOCAL_RELAY: (env as unknown as Record<string, string>).TEST_UNREACHABLE_NEON_RELAY,
    }
    const served = await callWithEnv(unreachable, `/v1/sessions/${before.sessionId}`, bearer(token))
    expect(served.status).toBe(200)
    // Nor its socket: refused before the upgrade; the session since connects.
    const refusedSocket = await upgrade(before.sessionId, token)
    expect(refusedSocket.webSocket).toBeFalsy()
    expect((await problem(refusedSocket)).status).toBe(403)
    const socket = await upgrade(after.sessionId, token)
    expect(socket.status).toBe(101)
    socket.webSocket?.accept()
    socket.webSocket?.close()
  })

  it('is for players only; bad paging is 422', async () => {
    expect((await problem(await call('/v1/players/me/sessions'))).status).toBe(401)
    const asAdmin = await problem(await call('/v1/players/me/sessions', bearer(ADMIN_KEY)))
    expect(asAdmin).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const guest = await newGuest()
    for (const query of ['limit=0', 'limit=51', 'status=over', 'cursor=nope', 'playerId=other']) {
      const res = await call(`/v1/players/me/sessions?${query}`, bearer(guest.token))
      if (query === 'playerId=other') {
        // Not a filter of this route: ignored, as any query parameter a route does not read.
        expect(res.status).toBe(200)
        expect(((await res.json()) as Page).sessions).toEqual([])
        continue
      }
      const refused = await problem(res)
      expect(refused, query).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
  })
})
