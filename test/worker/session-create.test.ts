import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { SessionSetup } from '../../durable-objects/game-session.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { verifySessionToken } from '../../workers/lib/session-token.ts'
import { MAX_ROSTER } from '../../workers/sessions/schemas.ts'
import { sessionStub } from '../../workers/sessions/stub.ts'
import { createBoard, pg } from './helpers/boards.ts'
import { ADMIN_KEY_GUESSES_PER_MINUTE } from '../../workers/middleware/auth.ts'
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
import { createSession, inObject, playerIds } from './helpers/session-sockets.ts'
import { until } from './helpers/sockets.ts'

function setupFor(players: string[], extra: Partial<SessionSetup> = {}): SessionSetup {
  return {
    sessionId: `s_t-${crypto.randomUUID()}`,
    rules: 'dice-race',
    roster: players.map((playerId, team) => ({ playerId, team })),
    seed: 'a'.repeat(64),
    options: { target: 20 },
    queue: 'duel',
    region: 'eu',
    leaderboardId: null,
    ...extra,
  }
}

/**
 * Neon takes the session's listing and does not answer until the test calls the function this
 * returns (in the object's own context, where the listing's promise was made).
 */
async function holdListing(sessionId: string): Promise<() => Promise<void>> {
  let listed!: () => void
  await inObject(sessionId, (inst) => {
    const neon = inst.store
    inst.store = {
      ...neon,
      register: (...args) =>
        new Promise<void>((resolve) => {
          listed = resolve
        }).then(() => neon.register(...args)),
    }
  })
  return () => inObject(sessionId, () => listed())
}
describe('creating sessions', () => {
  it('as an admin: answers the session id and a session token per player, and lists it in Neon', async () => {
    const players = playerIds(3)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 10 },
    })
    expect(sessionId).toMatch(/^s_[0-9a-f-]{36}$/)
    expect(Object.keys(tokens).sort()).toEqual([...players].sort())
    // The answer carries every player's token: no cache may keep it.
    const again = await call(
      '/v1/admin/sessions',
      json('POST', { rules: 'relay', roster: [{ playerId: players[0]! }] }, ADMIN_KEY),
    )
    expect(again.status).toBe(201)
    expect(again.headers.get('cache-control')).toBe('no-store')
    for (const p of players) expect(await verifySessionToken(env, tokens[p]!, sessionId)).toBe(p)
    const rows =
      (await pg()`select rules, status, roster from game_sessions where id = ${sessionId}`) as {
        rules: string
        status: string
        roster: unknown
      }[]
    expect(rows).toEqual([
      {
        rules: 'dice-race',
        status: 'live',
        roster: players.map((playerId, team) => ({ playerId, team })),
      },
    ])
  })

  it('as an admin with an Idempotency-Key: a retry answers the same session and creates none; another body under the key is 422', async () => {
    const players = playerIds(2)
    const body = { rules: 'dice-race', roster: players.map((playerId) => ({ playerId })) }
    const create = (b: unknown, key: string) =>
      call('/v1/admin/sessions', json('POST', b, ADMIN_KEY, { 'idempotency-key': key }))
    const key = `create-${crypto.randomUUID()}`
    const first = await create(body, key)
    expect(first.status).toBe(201)
    const { sessionId } = (await first.json()) as { sessionId: string }
    const retry = await create(body, key)
    expect(retry.status).toBe(200)
    const again = (await retry.json()) as { sessionId: string; tokens: Record<string, string> }
    expect(again.sessionId).toBe(sessionId)
    for (const p of players)
      expect(await verifySessionToken(env, again.tokens[p]!, sessionId)).toBe(p)
    const other = await problem(await create({ ...body, options: { target: 10 } }, key))
    expect(other).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    // One session for the key, in Neon as in its object; another key is another session.
    const listed = await pg()`select id from game_sessions
      where roster @> ${JSON.stringify([{ playerId: players[0] }])}::jsonb`
    expect(listed).toEqual([{ id: sessionId }])
    const second = (await (await create(body, `${key}-2`)).json()) as { sessionId: string }
    expect(second.sessionId).not.toBe(sessionId)
  })

  it('a keyed create retried after its board was deleted answers its session, not the board check; a new key with that board is 422', async () => {
    const board = await createBoard({ operator: 'incr' })
    const players = playerIds(2)
    const body = {
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      leaderboardId: board,
    }
    const create = (key: string) =>
      call('/v1/admin/sessions', json('POST', body, ADMIN_KEY, { 'idempotency-key': key }))
    const key = `create-board-${crypto.randomUUID()}`
    const first = await create(key)
    expect(first.status).toBe(201)
    const { sessionId } = (await first.json()) as { sessionId: string }
    // The event ends: its board is paused and deleted. The first answer was lost.
    const paused = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { operator: 'incr', paused: true }, ADMIN_KEY),
    )
    expect(paused.status).toBe(200)
    const deleted = await call(`/v1/admin/leaderboards/${board}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(deleted.status).toBe(200)
    const retry = await create(key)
    expect(retry.status).toBe(200)
    const again = (await retry.json()) as { sessionId: string; tokens: Record<string, string> }
    expect(again.sessionId).toBe(sessionId)
    for (const p of players)
      expect(await verifySessionToken(env, again.tokens[p]!, sessionId)).toBe(p)
    const fresh = await problem(await create(`${key}-new`))
    expect(fresh).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })

  it('refuses bad requests with 422 naming the field, and players with 403', async () => {
    // Each case its own players, so that a session created despite the refusal would be found.
    const one = () => playerIds(1, 'refused')[0]!
    const dup = one()
    const bad: [
      { roster: { playerId: string; team?: number }[] } & Record<string, unknown>,
      string,
    ][] = [
      [{ rules: 'chess', roster: [{ playerId: one() }] }, 'rules'],
      [{ rules: 'relay', roster: [] }, 'roster'],
      [{ rules: 'relay', roster: [{ playerId: dup }, { playerId: dup }] }, 'roster'],
      [{ rules: 'relay', roster: [{ playerId: `${one()} y` }] }, 'roster.0.playerId'],
      [{ rules: 'relay', roster: [{ playerId: one() }], seed: 'mine' }, ''],
      // Some players given teams and some not: the others' positions would name teams too
      // (a and b below on one team, a 1v1 rated as nothing).
      [
        { rules: 'dice-race', roster: [{ playerId: one() }, { playerId: one(), team: 0 }] },
        'roster.0.team',
      ],
      // A mistyped board would silently drop every result of the game.
      [
        { rules: 'relay', roster: [{ playerId: one() }], leaderboardId: 'no-such-board-anywhere' },
        'leaderboardId',
      ],
    ]
    const validation = {
      status: 422,
      contentType: 'application/problem+json',
      type: 'urn:nexus:problem:validation',
    }
    const refused: string[] = []
    const since = new Date()
    for (const [body, path] of bad) {
      const p = await problem(await call('/v1/admin/sessions', json('POST', body, ADMIN_KEY)))
      expect(p).toMatchObject(validation)
      const errors = p.body.errors as { path: string }[]
      expect(errors.map((e) => e.path)).toContain(path)
      refused.push(...body.roster.map((r) => r.playerId))
    }
    // Refused by the rules themselves: options out of range, too many players.
    const lone = one()
    const target = await call(
      '/v1/admin/sessions',
      json(
        'POST',
        { rules: 'dice-race', roster: [{ playerId: lone }], options: { target: 0 } },
        ADMIN_KEY,
      ),
    )
    expect(await problem(target)).toMatchObject(validation)
    refused.push(lone)
    const crowded = playerIds(17, 'crowd')
    const crowd = await problem(
      await call(
        '/v1/admin/sessions',
        json(
          'POST',
          { rules: 'dice-race', roster: crowded.map((playerId) => ({ playerId })) },
          ADMIN_KEY,
        ),
      ),
    )
    expect(crowd).toMatchObject(validation)
    expect(crowd.detail).toMatch(/1 to 16 players/)
    refused.push(...crowded)
    const guest = await newGuest()
    const asPlayer = await call(
      '/v1/admin/sessions',
      json('POST', { rules: 'relay', roster: [{ playerId: guest.playerId }] }, guest.token),
    )
    expect(await problem(asPlayer)).toMatchObject({
      status: 403,
      contentType: 'application/problem+json',
      type: 'urn:nexus:problem:forbidden',
    })
    refused.push(guest.playerId)
    // None of them made a session (the empty roster has no player to find it by: its time does).
    const made = await pg()`select id, roster from game_sessions
      where exists (
        select 1 from jsonb_array_elements(roster) r where r->>'playerId' = any(${refused}::text[])
      ) or (roster = '[]'::jsonb and created_at >= ${since})`
    expect(made).toEqual([])
  })

  it("an admin's create arms the session's alarm before it lists the session in Neon: a reset during that call leaves it a wake", async () => {
    const setup = setupFor(playerIds(2))
    const listed = await holdListing(setup.sessionId)
    const stub = sessionStub(env, setup.sessionId)
    const creating = stub.create(setup)
    // The listing waits on Neon; the game's join-grace deadlines already have their alarm.
    const alarm = await until(() =>
      inObject(setup.sessionId, async (_, state) => (await state.storage.getAlarm()) ?? undefined),
    )
    expect(alarm).toBeGreaterThan(Date.now())
    await listed()
    expect(await creating).toEqual({ ok: true, created: true })
    const [row] = await pg()`select id from game_sessions where id = ${setup.sessionId}`
    expect(row).toEqual({ id: setup.sessionId })
  })

  it("an admin's create answers after LISTING_WAIT_MS when Neon does not answer the listing, and the listing lands after it", async () => {
    const setup = setupFor(playerIds(2))
    const listed = await holdListing(setup.sessionId)
    const stub = sessionStub(env, setup.sessionId)
    expect(await stub.create(setup)).toEqual({ ok: true, created: true })
    expect(await pg()`select id from game_sessions where id = ${setup.sessionId}`).toEqual([])
    await listed()
    await until(async () => {
      const rows = await pg()`select id from game_sessions where id = ${setup.sessionId}`
      return rows.length === 1 || undefined
    })
  })

  it('by the matchmaker: create is idempotent for the same setup and a conflict for another', async () => {
    const setup = setupFor(playerIds(2))
    const stub = sessionStub(env, setup.sessionId)
    const [a, b] = await Promise.all([stub.create(setup), stub.create(setup)])
    expect([a, b]).toContainEqual({ ok: true, created: true })
    expect([a, b]).toContainEqual({ ok: true, created: false })
    expect(await stub.create(structuredClone(setup))).toEqual({ ok: true, created: false })
    expect(await stub.create({ ...setup, seed: 'b'.repeat(64) })).toMatchObject({
      ok: false,
      problem: 'conflict',
    })
    expect(await stub.create({ ...setup, options: { target: 21 } })).toMatchObject({
      ok: false,
      problem: 'conflict',
    })
    const info = await stub.info()
    expect(info).toMatchObject({ ok: true, status: 'live', seq: 0, queue: 'duel' })
    const bad = setupFor(['x'], { rules: 'poker' })
    expect(await sessionStub(env, bad.sessionId).create(bad)).toMatchObject({
      ok: false,
      problem: 'validation',
    })
    // A roster naming a member every object has (`constructor`): the rules' states key plain
    // objects by player, where it would read the prototype's.
    const inherited = setupFor(['constructor', 'p-2'])
    expect(await sessionStub(env, inherited.sessionId).create(inherited)).toMatchObject({
      ok: false,
      problem: 'validation',
    })
  })

  it('by the matchmaker, a full roster: every player gets a join deadline, and its own alarm lists it in Neon', async () => {
    const setup = setupFor(playerIds(MAX_ROSTER), { rules: 'relay', options: undefined })
    const stub = sessionStub(env, setup.sessionId)
    expect(await stub.create(setup, { listing: 'deferred' })).toEqual({ ok: true, created: true })
    const deadlines = await inObject(
      setup.sessionId,
      (_inst, state) => state.storage.sql.exec(`SELECT count(*) AS n FROM timers`).one().n,
    )
    expect(deadlines).toBe(MAX_ROSTER)
    // Nothing but the session's alarm lists it: no request comes after a deferred create.
    const rows = await until(
      async () => {
        const r = (await pg()`select roster from game_sessions where id = ${setup.sessionId}`) as {
          roster: unknown[]
        }[]
        return r.length > 0 ? r : undefined
      },
      5000,
      'the listing',
    )
    expect(rows.map((r) => r.roster.length)).toEqual([MAX_ROSTER])
  })
})

describe('GET /v1/sessions/:id', () => {
  it('shows status and roster to its players (session or player token) and admins only', async () => {
    const member = await newGuest()
    const outsider = await newGuest()
    const [other] = playerIds(1)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: member.playerId }, { playerId: other! }],
    })
    const expected = {
      sessionId,
      rules: 'dice-race',
      status: 'live',
      roster: [
        { playerId: member.playerId, team: 0 },
        { playerId: other, team: 1 },
      ],
      seq: 0,
      endedAt: null,
      result: null,
    }
    for (const credential of [tokens[other!]!, member.token, ADMIN_KEY]) {
      const res = await call(`/v1/sessions/${sessionId}`, bearer(credential))
      expect(res.status).toBe(200)
      // A player's view of its game: no cache keeps it.
      expect(res.headers.get('cache-control')).toBe('no-store')
      expect(await res.json()).toMatchObject(expected)
    }
    expect(
      (await problem(await call(`/v1/sessions/${sessionId}`, bearer(outsider.token)))).status,
    ).toBe(403)
    expect((await problem(await call(`/v1/sessions/${sessionId}`))).status).toBe(401)
    expect((await problem(await call(`/v1/sessions/${sessionId}`, bearer('nope')))).status).toBe(
      401,
    )
    const missing = await call('/v1/sessions/s_missing', bearer(ADMIN_KEY))
    expect((await problem(missing)).type).toBe('urn:nexus:problem:not-found')
  })
  it("an admin key with one dot: guesses in its shape count; players' expired tokens, no guess at it, do not", async () => {
    await clearOfMinuteTurn()
    const dottedKey = 'nexus.prod-key'
    const read = (key: string, from: string) =>
      callWithEnv(
        { ADMIN_KEY: dottedKey },
        '/v1/sessions/s_missing',
        bearer(key, { 'cf-connecting-ip': from }),
      )
    const player = await newGuest()
    const expired = (await issuePlayerToken(env, player.playerId, Date.now() - 2 * 86_400_000))
      .token
    const quiet = clientAddress()
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await read(expired, quiet)).status).toBe(401)
    }
    expect((await read(dottedKey, quiet)).status).toBe(404)
    const guesser = clientAddress()
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await read(`nexus.g${i}`, guesser)).status).toBe(401)
    }
    expect((await read(dottedKey, guesser)).status).toBe(429)
  })

  it('an admin key with dots: wrong guesses in that shape count toward the lockout here too', async () => {
    await clearOfMinuteTurn()
    const dottedKey = 'aaaa.bbbb.cccc'
    const ip = clientAddress()
    const read = (key: string, from: string) =>
      callWithEnv(
        { ADMIN_KEY: dottedKey },
        '/v1/sessions/s_missing',
        bearer(key, { 'cf-connecting-ip': from }),
      )
    expect((await read(dottedKey, ip)).status).toBe(404)
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await read(`aaaa.bbbb.g${i}`, ip)).status).toBe(401)
    }
    // Past the allowance the key is not compared from there: the right one is refused as a
    // token, while from another address it is the admin's.
    expect((await read(dottedKey, ip)).status).toBe(401)
    expect((await read(dottedKey, clientAddress())).status).toBe(404)
  })
})

describe('an admin create naming a leaderboard while Neon is unreachable', () => {
  it('asks the board itself: a board that takes wins gets its session (201), one that refuses a win and one that does not exist are 422', async () => {
    const neonDown = {
      DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
      NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      LOG_LEVEL: 'silent',
    }
    const wins = await createBoard({ operator: 'incr' })
    const refusing = await createBoard({ scoreMax: 0 })
    const create = (leaderboardId: string) =>
      callWithEnv(
        neonDown,
        '/v1/admin/sessions',
        json(
          'POST',
          { rules: 'relay', roster: [{ playerId: playerIds(1)[0]! }], leaderboardId },
          ADMIN_KEY,
        ),
      )
    const made = await create(wins)
    expect(made.status).toBe(201)
    const { sessionId } = (await made.json()) as { sessionId: string }
    const info = await inObject(sessionId, (inst) => inst.info())
    expect(info).toMatchObject({ ok: true, status: 'live' })
    for (const [board, message] of [
      [refusing, /refuse a win/],
      [`no-such-board-${crypto.randomUUID()}`, /no such leaderboard/],
    ] as const) {
      const p = await problem(await create(board))
      expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(p.body.errors).toEqual([
        { path: 'leaderboardId', message: expect.stringMatching(message) },
      ])
    }
  })
})
