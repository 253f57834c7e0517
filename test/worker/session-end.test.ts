import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { metricTotal } from './helpers/metric-totals.ts'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import { RETENTION_MS } from '../../durable-objects/game-session.ts'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { updateRatings, type Rating } from '../../workers/core/rating.ts'
import {
  getRules,
  type AnyRules,
  replay,
  type GameResult,
  type LogRecord,
} from '../../workers/core/rules/index.ts'
import type { DiceState } from '../../workers/core/rules/dice-race.ts'
import { NeonSessionStore, type SessionStore } from '../../workers/sessions/store.ts'
import { boardId, createBoard, fresh, pg, submitFor } from './helpers/boards.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  clearOfMinuteTurn,
  clearOfTurn,
  json,
  newGuest,
  problem,
} from './helpers/http.ts'
import { until } from './helpers/sockets.ts'
import { issueSessionToken } from '../../workers/lib/session-token.ts'
import { newSeed } from '../../workers/matchmaking/session.ts'
import {
  clearAfterRetention,
  clockAtCreation,
  connect,
  createSession,
  inObject,
  sessionObject,
  playerIds,
  playToEnd,
  type TestSocket,
  seenBy,
} from './helpers/session-sockets.ts'

const INITIAL_RATING: Rating = { rating: 1500, rd: 200, volatility: 0.06 }

/**
 * The session's result in Neon is `reason` (`abandoned` unless said) without a winner, and it
 * moved nobody: ratings as seeded (INITIAL_RATING), no entry on the queue's board.
 */
async function expectAbandonedUnrated(
  sessionId: string,
  board: string,
  players: string[],
  reason: GameResult['reason'] = 'abandoned',
): Promise<void> {
  const [row] = await resultRows(sessionId)
  expect(row!.result).toMatchObject({ reason, winner: null })
  expect(row!.rating_changes).toEqual([])
  const after = await ratingsOf(players)
  for (const p of players) expect(after[p]).toEqual(INITIAL_RATING)
  for (const p of players) {
    const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${p}`)
    expect(mine.entry).toBeNull()
  }
}

async function seedRatings(ratings: Record<string, Rating>): Promise<void> {
  const sql = pg()
  for (const [id, r] of Object.entries(ratings)) {
    await sql`insert into players (id, rating, rating_deviation, rating_volatility)
              values (${id}, ${r.rating}, ${r.rd}, ${r.volatility})`
  }
}

async function ratingsOf(ids: string[]): Promise<Record<string, Rating>> {
  const rows = (await pg()`select id, rating, rating_deviation, rating_volatility from players
                           where id = any(${ids})`) as {
    id: string
    rating: number
    rating_deviation: number
    rating_volatility: number
  }[]
  return Object.fromEntries(
    rows.map((r) => [
      r.id,
      { rating: r.rating, rd: r.rating_deviation, volatility: r.rating_volatility },
    ]),
  )
}

/** What one 1v1 result does to two ratings, by the Glicko-2 module (tested on its own). */
function expectedAfter(
  ratings: Record<string, Rating>,
  winner: string,
  loser: string,
): Record<string, Rating> {
  const [w, l] = updateRatings(
    [[{ id: winner, ...ratings[winner]! }], [{ id: loser, ...ratings[loser]! }]],
    [1, 2],
  )
  return {
    [winner]: { rating: w!.rating, rd: w!.rd, volatility: w!.volatility },
    [loser]: { rating: l!.rating, rd: l!.rd, volatility: l!.volatility },
  }
}

/** A 1v1 dice-race that `winner` (team 0) won against `loser` (team 1), ended at `endedAt`. */
function oneOnOne(winner: string, loser: string, endedAt: number) {
  return {
    sessionId: `s_1v1-${crypto.randomUUID()}`,
    rules: 'dice-race',
    roster: [
      { playerId: winner, team: 0 },
      { playerId: loser, team: 1 },
    ],
    queue: null,
    region: null,
    createdAt: endedAt - 60_000,
    endedAt,
    result: {
      placements: [
        { playerId: winner, team: 0, place: 1 },
        { playerId: loser, team: 1, place: 2 },
      ],
      reason: 'finished' as const,
      winner,
    },
  }
}

async function resultRows(sessionId: string) {
  return (await pg()`select result, rating_changes from match_results where session_id = ${sessionId}`) as {
    result: GameResult
    rating_changes: unknown[]
  }[]
}

/**
 * Plays a dice-race to 10 (two players by default); returns the winner (and the winning team's
 * members), a loser and the final event seq.
 */
async function playGame(
  opts: {
    leaderboardId?: string
    before?: (sessionId: string) => Promise<void>
    /** Each player's team, in turn order (default: two players, one per team). */
    teams?: number[]
  } = {},
) {
  const teams = opts.teams ?? [0, 1]
  const players = playerIds(teams.length)
  const { sessionId, tokens } = await createSession({
    rules: 'dice-race',
    roster: players.map((playerId, i) => ({ playerId, team: teams[i] })),
    options: { target: 10 },
    ...(opts.leaderboardId ? { leaderboardId: opts.leaderboardId } : {}),
  })
  if (opts.before) await opts.before(sessionId)
  const sockets: Record<string, TestSocket> = {}
  for (const p of players) {
    sockets[p] = await connect(sessionId, tokens[p]!)
    await sockets[p].nextOf('welcome')
  }
  const events = await playToEnd(sockets, players[0]!)
  const ended = await sockets[players[1]!]!.nextOf('ended')
  const result = ended.result as GameResult
  const winner = result.winner!
  const loser = players.find((p) => p !== winner)!
  const teamOf = (p: string) => teams[players.indexOf(p)]
  const winners = players.filter((p) => teamOf(p) === teamOf(winner))
  return { sessionId, tokens, players, winner, winners, loser, seq: events.length, result }
}

/** A store whose Neon is down: a game's end work waits at its first stage. */
function neonDown(): SessionStore {
  const down = () => Promise.reject(new Error('Neon is down'))
  return {
    register: async () => {},
    recordResult: down,
    archiveLog: down,
    erasedAmong: down,
    keepSetup: down,
    archivedSetupHash: down,
  }
}

/**
 * Plays a game whose end work waits at its first stage (Neon down) until the test gives the
 * session a working store again (`inst.store = new NeonSessionStore(env)`).
 */
function playGameHeld(opts: { leaderboardId?: string; teams?: number[] } = {}) {
  return playGame({
    ...opts,
    before: (sessionId) =>
      inObject(sessionId, (inst) => {
        inst.store = neonDown()
      }),
  })
}

type BoardSubmit = Leaderboard['submit']

/**
 * Wraps board `board`'s `submit` until the test ends (RPC calls the class's method, so the
 * prototype's is wrapped; calls to other boards go through): `wrap` gets the real method and the
 * input. Returns the way to put the real one back sooner.
 */
async function wrapBoardSubmit(
  board: string,
  wrap: (
    real: (input: Parameters<BoardSubmit>[0]) => ReturnType<BoardSubmit>,
    input: Parameters<BoardSubmit>[0],
  ) => ReturnType<BoardSubmit>,
): Promise<() => void> {
  const proto = await runInDurableObject(
    env.LEADERBOARD.getByName(board),
    (inst: Leaderboard) => Object.getPrototypeOf(inst) as Pick<Leaderboard, 'submit'>,
  )
  const submit = proto.submit
  proto.submit = function (this: Leaderboard, input) {
    const real = (i: typeof input) => submit.call(this, i)
    return input.boardId === board ? wrap(real, input) : real(input)
  }
  const restore = () => {
    proto.submit = submit
  }
  onTestFinished(restore)
  return restore
}

/** Board `board` answers its first submit call with `problem` (the call not counted), then as usual. */
async function refuseFirstCall(
  board: string,
  problem: 'internal' | 'unavailable',
  detail: string,
): Promise<void> {
  let refused = false
  await wrapBoardSubmit(board, async (real, input) => {
    if (refused) return real(input)
    refused = true
    return { ok: false, problem, detail }
  })
}

/** Moves the board's clock and the session's to `at`, then runs the session's end work there. */
async function endWorkAt(board: string, sessionId: string, at: number) {
  await runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
    inst.now = () => at
  })
  return inObject(sessionId, (inst) => {
    inst.now = () => at
    return inst.runEndWork({ force: true })
  })
}

/** Gives a live session's object rules with a deadline always due, at which they fail (a bug). */
function breakTheClock(inst: unknown): void {
  const self = inst as { rules: AnyRules }
  self.rules = {
    ...self.rules,
    nextTick: () => 0,
    onTick: () => {
      throw new Error('a bug in the rules')
    },
  } as AnyRules
}

describe('the end of a game', () => {
  it('a game of one player, won, puts nothing on the board: it beat nobody', async () => {
    const board = await createBoard({ operator: 'incr' })
    const [solo] = playerIds(1) as [string]
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: solo }],
      options: { target: 1 },
      leaderboardId: board,
    })
    const socket = await connect(sessionId, tokens[solo]!)
    await socket.nextOf('welcome')
    await playToEnd({ [solo]: socket }, solo)
    const ended = await socket.nextOf('ended')
    expect(ended.result).toMatchObject({ reason: 'finished', winner: solo })
    expect(await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))).toMatchObject({
      stage: 'retain',
    })
    const standing = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${solo}`)
    expect(standing.entry).toBeNull()
  })

  it('an admin ends a live game: every socket hears it, the result is cancelled, nobody is rated or put on the board, and a retry changes nothing', async () => {
    const board = await createBoard({ operator: 'incr' })
    const players = playerIds(2)
    await seedRatings(Object.fromEntries(players.map((p) => [p, INITIAL_RATING])))
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 100 },
      leaderboardId: board,
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const ws of sockets) await ws.nextOf('welcome')
    sockets[0]!.roll()
    for (const ws of sockets) await ws.nextOf('event')

    // While the game is live even an admin is not told the seed (it would tell the dice ahead).
    const liveView = await call(`/v1/sessions/${sessionId}`, bearer(ADMIN_KEY))
    expect(((await liveView.json()) as { setup: unknown }).setup).toBeNull()

    const end = () =>
      call(`/v1/admin/sessions/${sessionId}/end`, { ...bearer(ADMIN_KEY), method: 'POST' })
    const res = await end()
    expect(res.status).toBe(200)
    const view = (await res.json()) as {
      status: string
      seq: number
      result: GameResult
      setup: { seed: string; options: unknown }
    }
    expect(view.setup.options).toEqual({ target: 100 })
    expect(view.setup.seed).toMatch(/.{16,}/)
    const placements = players.map((playerId, team) => ({ playerId, team, place: 1 }))
    expect(view).toMatchObject({
      status: 'finished',
      seq: 2,
      result: { reason: 'cancelled', winner: null, placements },
    })
    for (const ws of sockets) {
      expect((await ws.nextOf('event')).event).toEqual({ kind: 'cancelled', ended: 'cancelled' })
      expect((await ws.nextOf('ended')).result).toEqual(view.result)
      expect((await ws.whenClosed()).code).toBe(1000)
    }
    // The log replays to the state the object holds, the end included.
    const { match, setup } = await inObject(sessionId, (inst) => inst.current()!)
    const log = (await (
      await call(`/v1/sessions/${sessionId}/events`, bearer(ADMIN_KEY))
    ).json()) as { events: LogRecord[] }
    expect(log.events.map((e) => e.input.kind)).toEqual(['action', 'end'])
    expect(view.setup).toEqual({ seed: setup.seed, options: setup.options })
    const replayed = replay(
      getRules('dice-race')!,
      { roster: setup.roster, seed: setup.seed, options: setup.options },
      log.events,
    )
    expect(replayed).toEqual(match)

    // Again: answered as it ended, nothing new logged.
    const again = await end()
    expect(await again.json()).toMatchObject({ seq: 2, result: { reason: 'cancelled' } })
    // The end work runs past its board stage, so what the board holds below is its doing.
    for (let i = 0; i < 5; i++) {
      const status = await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
      if (status && ['archive', 'retain', 'done'].includes(status.stage)) break
    }
    const work = await inObject(sessionId, (inst) => inst.endStatus())
    expect(['archive', 'retain', 'done']).toContain(work!.stage)
    await expectAbandonedUnrated(sessionId, board, players, 'cancelled')
  })

  it('a game whose rules throw at every deadline is still listed in Neon from its alarm, for an admin to find and end', async () => {
    const players = playerIds(2)
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const listed = async () =>
      (await pg()`select id from game_sessions where id = ${sessionId}`).length === 1
    await until(async () => ((await listed()) ? true : undefined), 5000, 'first listing')
    // Its listing lost (it failed, say, and a release then broke the rules' clock): owed again.
    await pg()`delete from session_players where session_id = ${sessionId}`
    await pg()`delete from game_sessions where id = ${sessionId}`
    await inObject(sessionId, (inst, state) => {
      breakTheClock(inst)
      state.storage.sql.exec(
        `INSERT OR REPLACE INTO work (job, stage) VALUES ('register', 'pending')`,
      )
    })
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    await until(async () => ((await listed()) ? true : undefined), 5000, 'listed again')
  })

  it('an admin ends a game whose rules throw at every deadline (a bug): cancelled, not 500', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 100 },
    })
    const sockets = await Promise.all(players.map((p) => connect(sessionId, tokens[p]!)))
    for (const ws of sockets) await ws.nextOf('welcome')
    await inObject(sessionId, (inst) => breakTheClock(inst))
    const res = await call(`/v1/admin/sessions/${sessionId}/end`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ status: 'finished', result: { reason: 'cancelled' } })
    for (const ws of sockets) {
      expect((await ws.nextOf('event')).event).toEqual({ kind: 'cancelled', ended: 'cancelled' })
    }
  })

  it('a game the deployed rules call over partway through its logged records (a new end condition it had met) still loads, refuses every action (game_over), wakes for no deadline nor grace of its own, and ends by an admin: cancelled', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      // Timed: a turn deadline the stuck game must not be woken for again and again.
      options: { target: 1000, turnSeconds: 5 },
    })
    const sockets = Object.fromEntries(
      await Promise.all(players.map(async (p) => [p, await connect(sessionId, tokens[p]!)])),
    ) as Record<string, TestSocket>
    const state = (await sockets[players[0]!]!.nextOf('welcome')).state as DiceState
    await sockets[players[1]!]!.nextOf('welcome')
    // Three rolls: two logged after the first.
    void state
    for (let i = 0; i < 3; i++) {
      const game = await inObject(sessionId, (inst) => inst.current()!.match.game as DiceState)
      sockets[game.players[game.turn]!.playerId]!.roll()
      await sockets[players[0]!]!.next(
        (f) => f.type === 'event' && (f.event as { kind: string }).kind === 'roll',
      )
    }
    const seq = await inObject(sessionId, (inst) => inst.current()!.match.seq)
    // The deploy: the first roll now ends the game. The two records after it stand.
    const dice = getRules('dice-race') as unknown as { result: (s: DiceState) => unknown }
    const before = dice.result
    dice.result = (s: DiceState) =>
      s.rolls >= 1 ? before({ ...s, ended: 'finished', winner: s.players[0]!.playerId }) : before(s)
    onTestFinished(() => {
      dice.result = before
    })
    await evictDurableObject(sessionObject(sessionId))
    expect(await inObject(sessionId, (inst) => inst.info())).toMatchObject({
      ok: true,
      status: 'live',
      seq,
    })
    const back = await connect(sessionId, tokens[players[0]!]!, { since: seq })
    await back.nextOf('resumed')
    back.roll()
    expect(await back.nextOf('error')).toMatchObject({ code: 'game_over' })
    // Past the turn's deadline and the other player's grace: each would be refused, and the
    // alarm set for it would come straight back. Nor is it woken every grace (its watchdog): it
    // waits for an admin's end, and wakes for nothing till then.
    sockets[players[1]!]!.close()
    await inObject(sessionId, (inst) => {
      const at = inst.now() + 2 * inst.graceMs
      inst.now = () => at
    })
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const alarm = await inObject(sessionId, (_inst, state) => state.storage.getAlarm())
    expect(alarm).toBeNull()
    const res = await call(`/v1/admin/sessions/${sessionId}/end`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ status: 'finished', result: { reason: 'cancelled' } })
    expect(await back.nextOf('ended')).toMatchObject({ result: { reason: 'cancelled' } })
  })

  it('an end sent after a grace ran out: the forfeit due first stands', async () => {
    const players = playerIds(2)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    // The first player connects; the second never does, and its join grace runs out before the
    // end comes, with no alarm in between.
    const ws = await connect(sessionId, tokens[players[0]!]!)
    await ws.nextOf('welcome')
    const info = await inObject(sessionId, async (inst, state) => {
      const { due } = state.storage.sql
        .exec<{ due: number }>('SELECT max(due) AS due FROM timers')
        .one()
      inst.now = () => due + 1
      return inst.end()
    })
    expect(info).toMatchObject({
      status: 'finished',
      result: { reason: 'forfeit', winner: players[0] },
    })
  })

  it('counts sessions created, and games over by rules and how they ended', async () => {
    const count = metricTotal
    const created = count('nexus_session_created_total', { rules: 'dice-race' })
    const cancelled = { rules: 'dice-race', reason: 'cancelled' }
    const ended = count('nexus_session_ended_total', cancelled)
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: playerIds(2).map((playerId) => ({ playerId })),
    })
    expect(count('nexus_session_created_total', { rules: 'dice-race' })).toBe(created + 1)
    expect(count('nexus_session_ended_total', cancelled)).toBe(ended)
    const end = () =>
      call(`/v1/admin/sessions/${sessionId}/end`, { ...bearer(ADMIN_KEY), method: 'POST' })
    expect((await end()).status).toBe(200)
    expect(count('nexus_session_ended_total', cancelled)).toBe(ended + 1)
    // Ended twice, counted once.
    expect((await end()).status).toBe(200)
    expect(count('nexus_session_ended_total', cancelled)).toBe(ended + 1)
  })

  it("counts a played game's inputs by kind, its length, its recorded result, and its end's retries while Neon is away", async () => {
    const rules = { rules: 'dice-race' }
    const before = {
      actions: metricTotal('nexus_session_inputs_total', { ...rules, kind: 'action' }),
      lengths: metricTotal('nexus_session_duration_seconds', rules),
      results: metricTotal('nexus_session_results_total', rules),
      retries: metricTotal('nexus_session_end_retries_total', { job: 'end', stage: 'record' }),
    }
    const game = await playGame({
      before: (sessionId) =>
        inObject(sessionId, (inst) => {
          inst.store = neonDown()
        }),
    })
    // Every roll an accepted action (dice-race takes no connects: refused, they log nothing).
    expect(
      metricTotal('nexus_session_inputs_total', { ...rules, kind: 'action' }) - before.actions,
    ).toBeGreaterThanOrEqual(game.seq)
    expect(
      metricTotal('nexus_session_duration_seconds', rules) - before.lengths,
    ).toBeGreaterThanOrEqual(1)
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(
      metricTotal('nexus_session_end_retries_total', { job: 'end', stage: 'record' }) -
        before.retries,
    ).toBeGreaterThanOrEqual(1)
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(await resultRows(game.sessionId)).toHaveLength(1)
    expect(
      metricTotal('nexus_session_results_total', rules) - before.results,
    ).toBeGreaterThanOrEqual(1)
  })

  it('ending a session: 401 without a credential, 403 for a player, 404 for an unknown session, 422 for a bad id, 415 for a body of another type', async () => {
    const players = playerIds(2)
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const guest = await newGuest()
    const post = (id: string, init: RequestInit = {}) =>
      call(`/v1/admin/sessions/${id}/end`, { method: 'POST', ...init })
    const refusal = (status: number, type: string) => ({
      status,
      contentType: 'application/problem+json',
      type: `urn:nexus:problem:${type}`,
    })
    expect(await problem(await post(sessionId))).toMatchObject(refusal(401, 'unauthorized'))
    expect(await problem(await post(sessionId, bearer(guest.token)))).toMatchObject(
      refusal(403, 'forbidden'),
    )
    expect(await problem(await post(`s_${crypto.randomUUID()}`, bearer(ADMIN_KEY)))).toMatchObject(
      refusal(404, 'not-found'),
    )
    expect(await problem(await post('not a session', bearer(ADMIN_KEY)))).toMatchObject(
      refusal(422, 'validation'),
    )
    const typed = await post(sessionId, {
      headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'text/plain' },
      body: 'end it',
    })
    expect(await problem(typed)).toMatchObject(refusal(415, 'unsupported-media-type'))
    // None of them ended it.
    const info = await inObject(sessionId, (inst) => inst.current()!)
    expect(info.status).toBe('live')
  })

  it('records one result and rates once, even with the end work run twice at once', async () => {
    const players: string[] = []
    const initial: Record<string, Rating> = {}
    const game = await playGame({
      before: async (sessionId) => {
        const roster = await inObject(sessionId, (inst) => inst.current()!.setup.roster)
        roster.forEach((p, i) => {
          players.push(p.playerId)
          initial[p.playerId] = { rating: 1600 - 200 * i, rd: 120 + 60 * i, volatility: 0.06 }
        })
        await seedRatings(initial)
      },
    })
    const [s1, s2] = await Promise.all([
      inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
      inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ])
    expect(s1?.stage).toBe('retain')
    expect(s2?.stage).toBe('retain')
    const rows = await resultRows(game.sessionId)
    expect(rows).toHaveLength(1)
    expect(rows[0]!.result).toEqual(game.result)
    const after = await ratingsOf(players)
    const expected = expectedAfter(initial, game.winner, game.loser)
    for (const p of players) {
      expect(after[p]!.rating).toBeCloseTo(expected[p]!.rating, 9)
      expect(after[p]!.rd).toBeCloseTo(expected[p]!.rd, 9)
    }
    expect(after[game.winner]!.rating).toBeGreaterThan(initial[game.winner]!.rating)
    expect(after[game.loser]!.rating).toBeLessThan(initial[game.loser]!.rating)

    const [s] = (await pg()`select status, ended_at is not null as ended from game_sessions
                            where id = ${game.sessionId}`) as { status: string; ended: boolean }[]
    expect(s).toEqual({ status: 'finished', ended: true })
    const logs =
      (await pg()`select seq, record from session_logs where session_id = ${game.sessionId}
                             order by seq`) as { seq: number; record: LogRecord }[]
    expect(logs.map((l) => l.seq)).toEqual(Array.from({ length: game.seq }, (_, i) => i + 1))

    const res = await call(`/v1/sessions/${game.sessionId}`, bearer(game.tokens[game.loser]!))
    expect(res.status).toBe(200)
    const view = (await res.json()) as Record<string, unknown>
    expect(view).toMatchObject({
      sessionId: game.sessionId,
      rules: 'dice-race',
      status: 'finished',
      seq: game.seq,
      result: { winner: game.winner, reason: 'finished' },
    })
    expect(view.roster).toEqual(players.map((playerId, team) => ({ playerId, team })))
    expect((view.ratingChanges as { playerId: string }[]).map((c) => c.playerId).sort()).toEqual(
      [...players].sort(),
    )
  })

  it('in Neon: a player back after a year is rated with the uncertainty a year away gives (RD grown by idle days), and moves faster than one who played yesterday', async () => {
    const [back, regular] = playerIds(2, 'idle')
    const endedAt = Date.now()
    const day = 86_400_000
    const sql = pg()
    for (const [id, ratedAt] of [
      [back!, endedAt - 365 * day],
      [regular!, endedAt - day / 2],
    ] as const) {
      await sql`insert into players (id, rating, rating_deviation, rating_volatility, rated_at)
                values (${id}, 1700, 30, 0.06, to_timestamp(${ratedAt} / 1000.0))`
    }
    const store = new NeonSessionStore(env)
    const win = (winner: string, loser: string) => oneOnOne(winner, loser, endedAt)
    const recorded = await store.recordResult(win(back!, regular!))
    expect(recorded.recorded).toBe(true)
    const change = (id: string) => recorded.ratingChanges.find((c) => c.playerId === id)!
    // sqrt((30 / 173.7178)² + 365 × 0.06²) × 173.7178: a year of daily idle periods.
    expect(change(back!).before.rd).toBeCloseTo(201.38, 1)
    expect(change(regular!).before.rd).toBe(30)
    const gained = change(back!).after.rating - 1700
    const lost = 1700 - change(regular!).after.rating
    expect(gained).toBeGreaterThan(5 * lost)
    const stored = await ratingsOf([back!, regular!])
    expect(stored[back!]!.rd).toBeCloseTo(change(back!).after.rd, 9)
    // The next match counts its idle days from this one's end.
    const rows = (await sql`select id, (extract(epoch from rated_at) * 1000)::float8 as at
                            from players where id = any(${[back!, regular!]})`) as {
      at: number
    }[]
    for (const r of rows) expect(Math.abs(r.at - endedAt)).toBeLessThan(1)
    // A player rated before rated_at existed counts from their row's last change.
    const [legacy] = playerIds(1, 'legacy')
    await sql`insert into players (id, rating, rating_deviation, rating_volatility, updated_at)
              values (${legacy!}, 1700, 30, 0.06, to_timestamp(${endedAt - 365 * day} / 1000.0))`
    const again = await store.recordResult(win(legacy!, regular!))
    expect(again.ratingChanges.find((c) => c.playerId === legacy)!.before.rd).toBeCloseTo(201.38, 1)
  })

  it("in Neon: a deviation an admin sets is the uncertainty as of then: a player away a year, set to RD 30, plays their next match at about 30, not a year's growth from 30", async () => {
    const [veteran, opponent] = playerIds(2, 'set-rd')
    const endedAt = Date.now()
    const day = 86_400_000
    const sql = pg()
    for (const id of [veteran!, opponent!]) {
      await sql`insert into players (id, rating, rating_deviation, rating_volatility, rated_at)
                values (${id}, 1700, 200, 0.06, to_timestamp(${endedAt - 365 * day} / 1000.0))`
    }
    const set = await call(
      `/v1/admin/players/${veteran}`,
      json('PUT', { rating: 2400, ratingDeviation: 30 }, ADMIN_KEY),
    )
    expect(set.status).toBe(200)
    // The veteran loses.
    const recorded = await new NeonSessionStore(env).recordResult(
      oneOnOne(opponent!, veteran!, endedAt),
    )
    const before = (id: string) => recorded.ratingChanges.find((c) => c.playerId === id)!.before
    // Set moments ago: well under a day's growth from 30.
    expect(before(veteran!)).toMatchObject({ rating: 2400 })
    expect(before(veteran!).rd).toBeLessThan(31)
    // Not set: a year away grows theirs as before (capped at a new player's 350).
    expect(before(opponent!).rd).toBeGreaterThan(200)
  })

  it('in Neon: two racing records of one result write one row and rate once; two results both count', async () => {
    const [a, b] = playerIds(2, 'n')
    const initial = {
      [a!]: { rating: 1500, rd: 200, volatility: 0.06 },
      [b!]: { rating: 1500, rd: 200, volatility: 0.06 },
    }
    await seedRatings(initial)
    const store = new NeonSessionStore(env)
    const result = (winner: string, loser: string): GameResult => ({
      placements: [
        { playerId: winner, team: winner === a ? 0 : 1, place: 1 },
        { playerId: loser, team: loser === a ? 0 : 1, place: 2 },
      ],
      reason: 'finished',
      winner,
    })
    const base = {
      rules: 'dice-race',
      roster: [
        { playerId: a!, team: 0 },
        { playerId: b!, team: 1 },
      ],
      queue: null,
      region: null,
      createdAt: Date.now() - 60_000,
      endedAt: Date.now(),
    }
    const s1 = `s_race-${crypto.randomUUID()}`
    const outs = await Promise.all([
      store.recordResult({ ...base, sessionId: s1, result: result(a!, b!) }),
      store.recordResult({ ...base, sessionId: s1, result: result(a!, b!) }),
    ])
    expect(outs.map((o) => o.recorded).sort()).toEqual([false, true])
    const once = expectedAfter(initial, a!, b!)
    let now = await ratingsOf([a!, b!])
    expect(now[a!]!.rating).toBeCloseTo(once[a!]!.rating, 9)
    expect(now[b!]!.rating).toBeCloseTo(once[b!]!.rating, 9)
    // And by hand, apart from the module: Glickman's formulas (τ 0.5) for 1500/200/0.06 beating
    // its equal give 1578.80 and 1421.20, both RD 180.08.
    expect(now[a!]).toMatchObject({
      rating: expect.closeTo(1578.8, 1),
      rd: expect.closeTo(180.08, 1),
    })
    expect(now[b!]).toMatchObject({
      rating: expect.closeTo(1421.2, 1),
      rd: expect.closeTo(180.08, 1),
    })
    expect(await resultRows(s1)).toHaveLength(1)
    // The record that lost the race learns the changes the winner applied, as a retry does.
    const winner = outs.find((o) => o.recorded)!
    expect(winner.ratingChanges).toHaveLength(2)
    for (const o of outs) expect(o.ratingChanges).toEqual(winner.ratingChanges)
    // The same race with the overlap made certain: each record's insert of the result waits 300 ms
    // before going in (a trigger for these session ids only), so both are past their earlier
    // statements when the second insert meets the first's uncommitted row and waits on its commit.
    const sql = pg()
    await sql.query(`create or replace function nexus_test_slow_insert() returns trigger
      language plpgsql as $$ begin perform pg_sleep(0.3); return new; end $$`)
    await sql.query(`drop trigger if exists nexus_test_slow_insert on match_results`)
    await sql.query(`create trigger nexus_test_slow_insert before insert on match_results
      for each row when (new.session_id like 's_slowrace-%') execute function nexus_test_slow_insert()`)
    try {
      const slow = `s_slowrace-${crypto.randomUUID()}`
      const [x, y] = playerIds(2, 'slow')
      // Players who exist already: new ones would order the two records at their first insert.
      await seedRatings({ [x!]: INITIAL_RATING, [y!]: INITIAL_RATING })
      const record = () =>
        store.recordResult({
          ...base,
          roster: [
            { playerId: x!, team: 0 },
            { playerId: y!, team: 1 },
          ],
          sessionId: slow,
          result: {
            placements: [
              { playerId: x!, team: 0, place: 1 },
              { playerId: y!, team: 1, place: 2 },
            ],
            reason: 'finished',
            winner: x!,
          },
        })
      const pair = await Promise.all([record(), record()])
      expect(pair.map((o) => o.recorded).sort()).toEqual([false, true])
      expect(pair[0]!.ratingChanges).toHaveLength(2)
      expect(pair[1]!.ratingChanges).toEqual(pair[0]!.ratingChanges)
    } finally {
      await sql.query(`drop trigger if exists nexus_test_slow_insert on match_results`)
    }
    // A retry after a lost answer changes nothing and still learns the changes that were applied.
    const retried = await store.recordResult({ ...base, sessionId: s1, result: result(a!, b!) })
    expect(retried.recorded).toBe(false)
    expect(retried.ratingChanges).toEqual(winner.ratingChanges)
    expect((await ratingsOf([a!]))[a!]!.rating).toBeCloseTo(once[a!]!.rating, 9)

    // Two different matches of the same players racing: neither update is lost.
    const s2 = `s_race-${crypto.randomUUID()}`
    const s3 = `s_race-${crypto.randomUUID()}`
    const two = await Promise.all([
      store.recordResult({ ...base, sessionId: s2, result: result(a!, b!) }),
      store.recordResult({ ...base, sessionId: s3, result: result(b!, a!) }),
    ])
    expect(two.map((o) => o.recorded)).toEqual([true, true])
    now = await ratingsOf([a!, b!])
    const orderOne = expectedAfter(expectedAfter(once, a!, b!), b!, a!)
    const orderTwo = expectedAfter(expectedAfter(once, b!, a!), a!, b!)
    const matches = (e: Record<string, Rating>) =>
      Math.abs(now[a!]!.rating - e[a!]!.rating) < 1e-9 &&
      Math.abs(now[b!]!.rating - e[b!]!.rating) < 1e-9
    expect(matches(orderOne) || matches(orderTwo)).toBe(true)
  })

  it('in Neon: two matches of the same players ending at once, each listing them in the other order, both rate: neither waits on the other for good', async () => {
    // Each row update of these players waits 200 ms first (a trigger for their ids only), so
    // that both records are holding one player's row when they reach the other's. Taken in each
    // match's own order, that was a deadlock Postgres broke by failing one record.
    const [a, b] = playerIds(2, 'lockorder')
    await seedRatings({ [a!]: INITIAL_RATING, [b!]: INITIAL_RATING })
    const sql = pg()
    await sql.query(`create or replace function nexus_test_slow_update() returns trigger
      language plpgsql as $$ begin perform pg_sleep(0.2); return new; end $$`)
    await sql.query(`drop trigger if exists nexus_test_slow_update on players`)
    await sql.query(`create trigger nexus_test_slow_update before update on players
      for each row when (new.id like 'lockorder%') execute function nexus_test_slow_update()`)
    onTestFinished(async () => {
      await sql.query(`drop trigger if exists nexus_test_slow_update on players`)
    })
    const store = new NeonSessionStore(env)
    const record = (first: string, second: string) =>
      store.recordResult({
        sessionId: `s_lockorder-${crypto.randomUUID()}`,
        rules: 'dice-race',
        roster: [
          { playerId: first, team: 0 },
          { playerId: second, team: 1 },
        ],
        queue: null,
        region: null,
        createdAt: Date.now() - 60_000,
        endedAt: Date.now(),
        result: {
          placements: [
            { playerId: first, team: 0, place: 1 },
            { playerId: second, team: 1, place: 2 },
          ],
          reason: 'finished',
          winner: first,
        },
      })
    const both = await Promise.all([record(a!, b!), record(b!, a!)])
    expect(both.map((o) => o.recorded)).toEqual([true, true])
    // Each result counted once: one win and one loss each, whichever was rated first.
    const now = await ratingsOf([a!, b!])
    const initial = { [a!]: INITIAL_RATING, [b!]: INITIAL_RATING }
    const orderOne = expectedAfter(expectedAfter(initial, a!, b!), b!, a!)
    const orderTwo = expectedAfter(expectedAfter(initial, b!, a!), a!, b!)
    const close = (e: Record<string, Rating>) =>
      Math.abs(now[a!]!.rating - e[a!]!.rating) < 1e-9 &&
      Math.abs(now[b!]!.rating - e[b!]!.rating) < 1e-9
    expect(close(orderOne) || close(orderTwo)).toBe(true)
  })

  it('a crash after Neon committed, then the retry: still one result and one rating update', async () => {
    let commits = 0
    const game = await playGame({
      before: async (sessionId) => {
        await inObject(sessionId, (inst) => {
          const real = new NeonSessionStore(env)
          const crashing: SessionStore = {
            register: (s, t) => real.register(s, t),
            async recordResult(input) {
              const out = await real.recordResult(input)
              commits++
              throw new Error(`injected crash after commit (${out.recorded})`)
            },
            archiveLog: (id, r) => real.archiveLog(id, r),
            erasedAmong: (ids, since) => real.erasedAmong(ids, since),
            keepSetup: (id, hash, r, n) => real.keepSetup(id, hash, r, n),
            archivedSetupHash: (id) => real.archivedSetupHash(id),
          }
          inst.store = crashing
        })
      },
    })
    const initial: Record<string, Rating> = {
      [game.winner]: { rating: 1500, rd: 350, volatility: 0.06 },
      [game.loser]: { rating: 1500, rd: 350, volatility: 0.06 },
    }
    let status = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(status).toMatchObject({ stage: 'record' })
    expect(status!.attempts).toBeGreaterThanOrEqual(1)
    expect(status!.lastError).toMatch(/injected crash after commit/)
    expect(commits).toBeGreaterThanOrEqual(1)
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    status = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(status).toMatchObject({ stage: 'retain', attempts: 0, lastError: null })
    expect(await resultRows(game.sessionId)).toHaveLength(1)
    const after = await ratingsOf([game.winner, game.loser])
    const expected = expectedAfter(initial, game.winner, game.loser)
    expect(after[game.winner]!.rating).toBeCloseTo(expected[game.winner]!.rating, 9)
    expect(after[game.loser]!.rating).toBeCloseTo(expected[game.loser]!.rating, 9)
    // The session shows the changes the lost answer carried, as Neon recorded them.
    const [stored] = (await pg()`select rating_changes from match_results
                                 where session_id = ${game.sessionId}`) as {
      rating_changes: unknown[]
    }[]
    const view = (await (
      await call(`/v1/sessions/${game.sessionId}`, bearer(ADMIN_KEY))
    ).json()) as { ratingChanges: unknown[] }
    expect(stored!.rating_changes).toHaveLength(2)
    expect(view.ratingChanges).toEqual(stored!.rating_changes)
  })

  it('with Neon unreachable at the end, backs off, keeps everything, and finishes later', async () => {
    const game = await playGame({
      before: async (sessionId) => {
        await inObject(sessionId, (inst) => {
          inst.store = new NeonSessionStore({
            DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
            NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
          })
        })
      },
    })
    const first = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const second = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(first).toMatchObject({ stage: 'record' })
    expect(second).toMatchObject({ stage: 'record' })
    expect(second!.attempts).toBeGreaterThan(first!.attempts)
    expect(second!.nextAttemptAt!).toBeGreaterThan(Date.now())
    expect(await resultRows(game.sessionId)).toHaveLength(0)
    // The session is still whole in the object meanwhile.
    const info = await inObject(game.sessionId, (inst) => inst.info())
    expect(info).toMatchObject({ ok: true, status: 'finished', seq: game.seq })

    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain', archived: game.seq })
    expect(await resultRows(game.sessionId)).toHaveLength(1)
    const [n] =
      (await pg()`select count(*)::int as n from session_logs where session_id = ${game.sessionId}`) as {
        n: number
      }[]
    expect(n!.n).toBe(game.seq)
  })

  it("a session's listing due while its end backs off is tried, not passed over: the alarm is not set for now again and again", async () => {
    // Neon down all game long: the listing (register) and the end both back off.
    const game = await playGameHeld()
    const { registerAttempts, alarmIn } = await inObject(game.sessionId, async (inst, state) => {
      inst.store = { ...neonDown(), register: () => Promise.reject(new Error('Neon is down')) }
      const now = Date.now()
      state.storage.sql.exec(
        `INSERT OR REPLACE INTO work (job, stage, attempts, next_attempt_at) VALUES ('register', 'pending', 3, ?)`,
        now - 1000,
      )
      state.storage.sql.exec(`UPDATE work SET next_attempt_at = ? WHERE job = 'end'`, now + 60_000)
      await inst.alarm()
      const row = state.storage.sql
        .exec<{ attempts: number }>(`SELECT attempts FROM work WHERE job = 'register'`)
        .one()
      return { registerAttempts: row.attempts, alarmIn: (await state.storage.getAlarm())! - now }
    })
    // The listing was tried (and backed off); with nothing due, the alarm waits for the next try.
    expect(registerAttempts).toBe(4)
    expect(alarmIn).toBeGreaterThanOrEqual(1000)
  })

  it("archives a log of large, quote-heavy relay messages whole: pages are cut by size, under Neon's request limit", async () => {
    const players = playerIds(2)
    const { sessionId } = await createSession({
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })
    // A client sending its state as a JSON string: each quote is escaped once in the record, then
    // again by every layer to Neon. 500 such records made one 500-record page over 10 MiB.
    const state: Record<string, string> = {}
    for (
      let i = 0;
      JSON.stringify(JSON.stringify({ ...state, [`k${i}`]: 'v' })).length <= 4096;
      i++
    )
      state[`k${i}`] = 'v'
    const data = JSON.stringify(state)
    const status = await inObject(sessionId, async (inst) => {
      const session = inst as unknown as { applyInput(input: unknown): unknown }
      for (let i = 0; i < 500; i++) {
        const out = session.applyInput({
          kind: 'action',
          player: players[i % 2],
          tick: i,
          action: { type: 'action', action: 'message', data },
        })
        expect(out).toHaveProperty('seq')
      }
      for (const p of players) session.applyInput({ kind: 'absent', player: p, tick: 1000 })
      return inst.runEndWork({ force: true })
    })
    const seq = await inObject(sessionId, (inst) => inst.info())
    expect(seq).toMatchObject({ ok: true, status: 'finished' })
    const last = (seq as { seq: number }).seq
    expect(last).toBe(502)
    expect(status).toMatchObject({ stage: 'retain', archived: last })
    const [n] =
      (await pg()`select count(*)::int as n, max(seq)::int as top from session_logs where session_id = ${sessionId}`) as {
        n: number
        top: number
      }[]
    expect(n).toEqual({ n: last, top: last })
  })

  it("submits the winner's result to the queue's leaderboard exactly once", async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board })
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    // As if the object died after the board took the score: the submission runs again.
    await inObject(game.sessionId, async (inst, state) => {
      state.storage.sql.exec(`UPDATE work SET stage = 'submit' WHERE job = 'end'`)
      await inst.runEndWork({ force: true })
    })
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry?.score).toBe(1)
    const loser = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${game.loser}`)
    expect(loser.entry).toBeNull()
  })

  it('a team win counts on the board for every member of the winning team, as in the ratings (a board that takes no scores from players takes them from its sessions)', async () => {
    const board = await createBoard({ operator: 'incr', serverScoresOnly: true })
    const game = await playGame({ leaderboardId: board, teams: [0, 1, 0, 1] })
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const [row] = await resultRows(game.sessionId)
    const rated = row!.rating_changes as { playerId: string; before: Rating; after: Rating }[]
    const won = rated.filter((c) => c.after.rating > c.before.rating).map((c) => c.playerId)
    expect(won.sort()).toEqual([...game.winners].sort())
    expect(game.winners).toHaveLength(2)
    for (const p of game.players) {
      const mine = await fresh<{ entry: { score: number } | null }>(
        `/v1/leaderboards/${board}/players/${p}`,
      )
      expect(mine.entry?.score ?? null, p).toBe(game.winners.includes(p) ? 1 : null)
    }
  })

  it('a win sent to a paused board is not put on it, counted as paused, not sent again once it resumes, and named in the admin read of the session before and after its object is cleared', async () => {
    const config = { operator: 'incr' }
    const board = await createBoard(config)
    const put = (body: Record<string, unknown>) =>
      call(`/v1/admin/leaderboards/${board}`, json('PUT', body, ADMIN_KEY))
    expect((await put({ ...config, paused: true })).status).toBe(200)
    const pausedCount = () =>
      metricTotal('nexus_session_results_not_submitted_total', { reason: 'paused' })
    const before = pausedCount()
    const game = await playGame({ leaderboardId: board })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'retain' })
    expect(pausedCount() - before).toBe(1)
    expect((await put(config)).status).toBe(200)
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry).toBeNull()
    // Support, asked where the win went, reads it in the session: the end moved on, clean.
    const endOf = async () =>
      (
        (await (await call(`/v1/sessions/${game.sessionId}`, bearer(ADMIN_KEY))).json()) as {
          end: { stage: string; lastError: string | null; notSubmitted: unknown }
        }
      ).end
    const given = [{ playerId: game.winner, reason: 'paused', detail: expect.any(String) }]
    expect(await endOf()).toMatchObject({ stage: 'retain', lastError: null, notSubmitted: given })
    expect((await clearAfterRetention(game.sessionId))?.stage).toBe('done')
    expect(await endOf()).toMatchObject({ stage: 'done', notSubmitted: given })
  })

  it('with Neon unreachable at the end, the win goes on the board at once, on the cycle the game ended in; the result lands later and the win is not counted again', async () => {
    // Cycle 1 throughout: not begun just before the hour turns.
    await clearOfTurn(3_600_000, 30_000)
    const board = await createBoard({ operator: 'incr', cycle: { every: '1h' } })
    const game = await playGame({
      leaderboardId: board,
      before: async (sessionId) => {
        await inObject(sessionId, (inst) => {
          inst.store = new NeonSessionStore({
            DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
            NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
          })
        })
      },
    })
    const scoreOf = async (p: string) =>
      await fresh<{ cycle: number; entry: { score: number } | null }>(
        `/v1/leaderboards/${board}/players/${p}`,
      )
    const before = await scoreOf(game.winner)
    const held = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(held).toMatchObject({ stage: 'record' })
    expect(await resultRows(game.sessionId)).toHaveLength(0)
    const during = await scoreOf(game.winner)
    expect(during.entry?.score).toBe(1)
    expect(during.cycle).toBe(before.cycle)
    // More attempts while Neon is away, then Neon back: the result is recorded, the win stays one.
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    expect(await resultRows(game.sessionId)).toHaveLength(1)
    expect((await scoreOf(game.winner)).entry?.score).toBe(1)
    expect((await scoreOf(game.loser)).entry).toBeNull()
  })

  it('with everyone on one team (a free-for-all), only the winner gets the win on the board', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board, teams: [0, 0, 0] })
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    for (const p of game.players) {
      const mine = await fresh<{ entry: { score: number } | null }>(
        `/v1/leaderboards/${board}/players/${p}`,
      )
      expect(mine.entry?.score ?? null, p).toBe(p === game.winner ? 1 : null)
    }
  })

  it('a winner already on the board is not counted again when the stage is retried after the board forgot its key (24 h)', async () => {
    const board = await createBoard({ operator: 'incr', submitsPerMinute: 1 })
    // The end work waits at its first stage until the test knows the winners.
    const game = await playGameHeld({
      leaderboardId: board,
      teams: [0, 1, 0, 1],
    })
    const winners = game.result.placements
      .filter((p) => game.winners.includes(p.playerId))
      .map((p) => p.playerId)
    // The second winner has used this minute's one submission: the stage stops after the first.
    // The minute must not turn before the stage reaches the board, which would take it.
    await clearOfMinuteTurn(10_000)
    await submitFor(board, winners[1]!, { score: 5 })
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    const stopped = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(stopped).toMatchObject({ stage: 'submit' })
    const scoreOf = async (p: string) =>
      (await fresh<{ entry: { score: number } | null }>(`/v1/leaderboards/${board}/players/${p}`))
        .entry?.score ?? null
    expect(await scoreOf(winners[0]!)).toBe(1)
    // A day and more later (the board no longer remembers the key), the stage runs again.
    await runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + 25 * 60 * 60 * 1000
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    expect(await scoreOf(winners[0]!)).toBe(1)
    expect(await scoreOf(winners[1]!)).toBe(6)
  })

  it('a win the board refuses (a banned winner) is not sent again when the stage is retried for another winner, and is counted once', async () => {
    const board = await createBoard({ operator: 'incr', submitsPerMinute: 1 })
    const game = await playGameHeld({ leaderboardId: board, teams: [0, 1, 0, 1] })
    const [banned, limited] = game.result.placements
      .filter((p) => game.winners.includes(p.playerId))
      .map((p) => p.playerId) as [string, string]
    const ban = await call(
      `/v1/admin/leaderboards/${board}/bans/${banned}`,
      json('PUT', { reason: 'aimbot' }, ADMIN_KEY),
    )
    expect(ban.status).toBe(200)
    // The other winner has used this minute's one submission: the stage stops at them.
    // The minute must not turn before the stage reaches the board, which would take it.
    await clearOfMinuteTurn(10_000)
    await submitFor(board, limited, { score: 5 })
    const refusedCount = () =>
      metricTotal('nexus_session_results_not_submitted_total', { reason: 'forbidden' })
    const before = refusedCount()
    // The board's answer to the banned winner is a refusal no retry changes, so it is not sent
    // again: this counts every call the board gets for them.
    let callsForBanned = 0
    await wrapBoardSubmit(board, (real, input) => {
      if (input.playerId === banned) callsForBanned++
      return real(input)
    })
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'submit' })
    expect({ calls: callsForBanned, counted: refusedCount() - before }).toEqual({
      calls: 1,
      counted: 1,
    })
    // A minute on, the stage runs again and puts the other winner's win on the board.
    await runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + 61_000
    })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'retain' })
    expect({ calls: callsForBanned, counted: refusedCount() - before }).toEqual({
      calls: 1,
      counted: 1,
    })
    const scoreOf = async (p: string) =>
      (await fresh<{ entry: { score: number } | null }>(`/v1/leaderboards/${board}/players/${p}`))
        .entry?.score ?? null
    expect(await scoreOf(limited)).toBe(6)
    expect(await scoreOf(banned)).toBeNull()
  })

  it('a win whose board call got no answer is sent again while the board remembers its key (a replay), and not at all after: counted once either way', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGameHeld({
      leaderboardId: board,
      teams: [0, 1, 0, 1],
    })
    const [first, second] = game.result.placements
      .filter((p) => game.winners.includes(p.playerId))
      .map((p) => p.playerId)
    // The board counts these players' wins, then the answer is lost on the way back. (RPC calls
    // the class's methods, so the prototype's is wrapped, for this board only.)
    const lost = new Set([first!, second!])
    await wrapBoardSubmit(board, async (real, input) => {
      const reply = await real(input)
      if (lost.has(input.playerId)) throw new Error('connection reset')
      return reply
    })
    const scoreOf = async (p: string) =>
      (await fresh<{ entry: { score: number } | null }>(`/v1/leaderboards/${board}/players/${p}`))
        .entry?.score ?? null
    const t0 = Date.now()
    const at = (hours: number) =>
      Promise.all([
        inObject(game.sessionId, (inst) => {
          inst.now = () => t0 + hours * 3_600_000
        }),
        runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
          inst.now = () => t0 + hours * 3_600_000
        }),
      ])
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'submit' })
    expect(await scoreOf(first!)).toBe(1)
    // Two hours on, the first winner's answer comes through: a replay, still 1. The second's
    // call is counted and its answer lost in turn.
    lost.delete(first!)
    await at(2)
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'submit' })
    expect(await scoreOf(first!)).toBe(1)
    expect(await scoreOf(second!)).toBe(1)
    // A day and more after that call (the board forgot the key), the stage ends without sending
    // it again: sent, it would count as a second win.
    lost.clear()
    await at(2 + 24.5)
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'retain' })
    expect(await scoreOf(first!)).toBe(1)
    expect(await scoreOf(second!)).toBe(1)
    // Support reads that the second's win was given up on, unanswered (it may have counted, as it
    // did here), and when its call was made; the first's, answered at last, is not named.
    const { end } = (await (
      await call(`/v1/sessions/${game.sessionId}`, bearer(ADMIN_KEY))
    ).json()) as { end: { notSubmitted: { playerId: string; reason: string; detail: string }[] } }
    expect(end.notSubmitted).toEqual([
      { playerId: second, reason: 'unanswered', detail: expect.stringMatching(/call made at 20/) },
    ])
  })

  it('a winner erased while the game ran: no rating or profile for them, no win on the board; the other player is rated', async () => {
    const board = await createBoard({ operator: 'incr' })
    // The end work waits at its first stage while the winner is erased.
    const game = await playGameHeld({
      leaderboardId: board,
    })
    const erased = await call(`/v1/admin/players/${game.winner}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect([200, 202]).toContain(erased.status)
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    expect(await pg()`select 1 from players where id = ${game.winner}`).toEqual([])
    const [row] = await resultRows(game.sessionId)
    const rated = row!.rating_changes as { playerId: string }[]
    expect(rated.map((c) => c.playerId)).toEqual([game.loser])
    expect((await pg()`select 1 from players where id = ${game.loser}`).length).toBe(1)
    const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${game.winner}`)
    expect(mine.entry).toBeNull()
  })

  it("a match made before a player's erasure whose session is created after it (the pool's creation retried): nothing of the erased player is kept, whoever wins", async () => {
    const board = await createBoard({ operator: 'incr' })
    const players = playerIds(2)
    const [gone, other] = players as [string, string]
    const matchedAt = Date.now() - 1_000
    const erased = await call(`/v1/admin/players/${gone}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect([200, 202]).toContain(erased.status)
    // The pool's retried creation: the session comes to exist only now, after the erasure.
    const sessionId = `s_made-before-${crypto.randomUUID()}`
    // The game is played with both players: the listing's own erasure check (its alarm, due at
    // once, which would take the erased player out mid-game whenever it ran) is held back, as if
    // Neon answered it after the game. What is judged here is the end's record, by the match's
    // time. (A player taken out while the game runs: 'a winner erased while the game ran'.)
    await inObject(sessionId, (inst) => {
      const real = new NeonSessionStore(env)
      inst.store = {
        register: (rec, t) => real.register(rec, t),
        recordResult: (input) => real.recordResult(input),
        archiveLog: (id, r) => real.archiveLog(id, r),
        erasedAmong: async () => [],
        keepSetup: (id, hash, r, n) => real.keepSetup(id, hash, r, n),
        archivedSetupHash: (id) => real.archivedSetupHash(id),
      }
    })
    const created = await sessionObject(sessionId).create(
      {
        sessionId,
        rules: 'dice-race',
        roster: players.map((playerId, team) => ({ playerId, team })),
        seed: newSeed(),
        options: { target: 10 },
        leaderboardId: board,
      },
      { listing: 'deferred', matchedAt },
    )
    expect(created).toEqual({ ok: true, created: true })
    const sockets: Record<string, TestSocket> = {}
    for (const p of players) {
      sockets[p] = await connect(sessionId, await issueSessionToken(env, sessionId, p))
      await sockets[p].nextOf('welcome')
    }
    await playToEnd(sockets, gone)
    await sockets[other]!.nextOf('ended')
    const done = await inObject(sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
      return inst.runEndWork({ force: true })
    })
    expect(done).toMatchObject({ stage: 'retain' })
    expect(await pg()`select 1 from players where id = ${gone}`).toEqual([])
    const [row] = await resultRows(sessionId)
    expect((row!.rating_changes as { playerId: string }[]).map((c) => c.playerId)).toEqual([other])
    const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${gone}`)
    expect(mine.entry).toBeNull()
  })

  it('a winner erased after the result was recorded, while its board submission waits: the win goes on no board', async () => {
    const board = await createBoard({ operator: 'incr', submitsPerMinute: 1 })
    const game = await playGameHeld({
      leaderboardId: board,
    })
    // The winner has used this minute's one submission: the result is recorded, the board's
    // stage waits.
    // The minute must not turn before the stage reaches the board, which would take it.
    await clearOfMinuteTurn(10_000)
    await submitFor(board, game.winner, { score: 5 })
    await inObject(game.sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'submit' })
    const erased = await call(`/v1/admin/players/${game.winner}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect([200, 202]).toContain(erased.status)
    await runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
      inst.now = () => Date.now() + 61_000
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${game.winner}`)
    expect(mine.entry).toBeNull()
  })

  it("a winner whose erasure reaches the board between the submit stage's read of Neon and its call: the board refuses the win", async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGameHeld({ leaderboardId: board })
    // The erasure's walk has reached the board (as `removeEntry` with the erasure's time), and the
    // stage read Neon just before the erasure committed there: it saw nobody erased.
    await runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) =>
      inst.removeEntry(board, game.winner, { erasedAt: Date.now() + 5_000 }),
    )
    await inObject(game.sessionId, (inst) => {
      const real = new NeonSessionStore(env)
      const beforeTheErasure: SessionStore = {
        register: (s, t) => real.register(s, t),
        recordResult: (input) => real.recordResult(input),
        archiveLog: (id, r) => real.archiveLog(id, r),
        erasedAmong: async () => [],
        keepSetup: (id, hash, r, n) => real.keepSetup(id, hash, r, n),
        archivedSetupHash: (id) => real.archivedSetupHash(id),
      }
      inst.store = beforeTheErasure
    })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${game.winner}`)
    expect(mine.entry).toBeNull()
  })

  it('a game nobody joined ends abandoned at the join grace: no winner, no rating moves, no win on the board', async () => {
    const board = await createBoard({ operator: 'incr' })
    const players = playerIds(2)
    await seedRatings(Object.fromEntries(players.map((p) => [p, INITIAL_RATING])))
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      leaderboardId: board,
    })
    // Both join graces end at the same moment; the alarm handles them then.
    await inObject(sessionId, async (inst, state) => {
      const { due } = state.storage.sql
        .exec<{ due: number }>('SELECT max(due) AS due FROM timers')
        .one()
      inst.now = () => due
      await inst.alarm()
      await inst.runEndWork({ force: true })
    })
    await expectAbandonedUnrated(sessionId, board, players)
  })

  it('a hot-potato match nobody connects to ends abandoned when the join grace ends: no winner, no rating moves, no win on the board', async () => {
    const board = await createBoard({ operator: 'incr' })
    const players = playerIds(3)
    await seedRatings(Object.fromEntries(players.map((p) => [p, INITIAL_RATING])))
    // Nobody connects. Lit at startAfter, the fuse would knock players out one by one and hand
    // the last a rated win; it waits for the players instead, and their join graces, ending
    // together, end the game.
    const { sessionId } = await createSession({
      rules: 'hot-potato',
      roster: players.map((playerId) => ({ playerId })),
      options: { startAfter: 3, minFuse: 1, maxFuse: 1 },
      leaderboardId: board,
    })
    await clockAtCreation(sessionId)
    // The join grace's end (the environment's SESSION_JOIN_GRACE_SECONDS).
    const joinDue = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql.exec<{ due: number }>('SELECT max(due) AS due FROM timers').one().due,
    )
    const waiting = await inObject(sessionId, async (inst) => {
      inst.now = () => joinDue - 1000
      await inst.alarm()
      return inst.current()!
    })
    expect(waiting.status).toBe('live')
    expect(waiting.match.seq).toBe(0)
    const info = await inObject(sessionId, async (inst) => {
      inst.now = () => joinDue + 1000
      await inst.alarm()
      return inst.current()!
    })
    expect(info.status).not.toBe('live')
    expect(info.match.seq).toBe(1)
    await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    await expectAbandonedUnrated(sessionId, board, players)
  })

  it('a board that takes the win and never answers does not hold the end: the stage backs off and is tried again', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board })
    const first = await inObject(game.sessionId, (inst) => {
      const real = (inst as unknown as { env: typeof env }).env
      ;(inst as unknown as { env: unknown }).env = {
        ...real,
        LEADERBOARD: { getByName: () => ({ submit: () => new Promise(() => {}) }) },
      }
      const wait = inst.boardCallMs
      inst.boardCallMs = 200
      return inst.runEndWork({ force: true }).finally(() => {
        ;(inst as unknown as { env: unknown }).env = real
        // The retry's real board is given its usual time: a slow machine may take over 200 ms.
        inst.boardCallMs = wait
      })
    })
    expect(first).toMatchObject({ stage: 'submit', attempts: 1 })
    expect(first!.lastError).toMatch(/board submit took over 200 ms/)
    // The board answering again, the retry hands it the win.
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry?.score).toBe(1)
  })

  it('a board call is noted before it goes out, so a reset while it is out (a deploy) still keeps it from being sent again once the board forgot its key: counted once', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board })
    // The board counts the win, and its answer never comes back: the object is reset meanwhile.
    const restore = await wrapBoardSubmit(board, async (real, input) => {
      await real(input)
      return new Promise<never>(() => {})
    })
    const scoreOf = async () =>
      (
        await fresh<{ entry: { score: number } | null }>(
          `/v1/leaderboards/${board}/players/${game.winner}`,
        )
      ).entry?.score ?? null
    const out = inObject(game.sessionId, (inst) => {
      inst.boardCallMs = 3_000
      return inst.runEndWork({ force: true })
    })
    await until(async () => ((await scoreOf()) === 1 ? true : undefined), 5000, 'the win counted')
    // While the call is out, the object has already noted it in storage: reset now (a deploy),
    // it would still know the call went, though it never saw it fail.
    const noted = await inObject(game.sessionId, (inst) =>
      (inst as unknown as { getMeta(key: string): string | null }).getMeta('submit_unanswered'),
    )
    expect(Object.keys(JSON.parse(noted ?? '{}') as object)).toEqual([game.winner])
    expect(await out).toMatchObject({ stage: 'submit', attempts: 1 })
    restore()
    // A day and more on, the board has forgotten the key: the call is not sent again.
    const later = Date.now() + 25 * 3_600_000
    const done = await endWorkAt(board, game.sessionId, later)
    expect(done).toMatchObject({ stage: 'retain' })
    expect(await scoreOf()).toBe(1)
  })

  it('a board that fails a call in a way it may not the next time (internal) gets the win on a retry', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board })
    await refuseFirstCall(board, 'internal', 'injected: a query that lost a race')
    const first = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(first).toMatchObject({ stage: 'submit', attempts: 1 })
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain' })
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry?.score).toBe(1)
  })

  it('a board that answers unavailable (the call did not count) gets the win even a day later: the answer clears the mark of an unanswered call', async () => {
    const board = await createBoard({ operator: 'incr' })
    const game = await playGame({ leaderboardId: board })
    await refuseFirstCall(board, 'unavailable', 'injected: Neon down at its start')
    const first = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(first).toMatchObject({ stage: 'submit', attempts: 1 })
    const later = Date.now() + 24 * 3_600_000
    const done = await endWorkAt(board, game.sessionId, later)
    expect(done).toMatchObject({ stage: 'retain' })
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry?.score).toBe(1)
  })

  it('a board that cannot read its configuration (Neon down as it starts) gets the win later', async () => {
    const template = await createBoard({ operator: 'incr' })
    const board = boardId()
    // In Neon, but never handed to its object (a PUT whose hand-over failed): on first use the
    // object reads its configuration from Neon, which is out of reach for it here.
    await pg()`insert into leaderboards (id, config)
               select ${board}, config from leaderboards where id = ${template}`
    const setBoardEnv = (boardEnv: unknown) =>
      runInDurableObject(env.LEADERBOARD.getByName(board), (inst: Leaderboard) => {
        ;(inst as unknown as { env: unknown }).env = boardEnv
      })
    await setBoardEnv({
      ...env,
      DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
      NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
    })
    const game = await playGame({ leaderboardId: board })
    const first = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(first).toMatchObject({ stage: 'submit', attempts: 1 })
    expect(first!.lastError).toMatch(/unreachable/)

    await setBoardEnv(env)
    const done = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(done).toMatchObject({ stage: 'retain', archived: game.seq })
    const mine = await fresh<{ entry: { score: number } | null }>(
      `/v1/leaderboards/${board}/players/${game.winner}`,
    )
    expect(mine.entry?.score).toBe(1)
  })

  /** A game played against Neon, its result and log recorded: its object waits out retention. */
  async function playedToRetention() {
    const game = await playGame({
      before: (sessionId) =>
        inObject(sessionId, (inst) => {
          inst.store = new NeonSessionStore(env)
        }),
    })
    expect(
      await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true })),
    ).toMatchObject({ stage: 'retain' })
    return game
  }

  for (const restored of ['listed live again', 'not listed at all'] as const) {
    it(`a game Neon lost to a restore (its result, ratings and log gone; the session ${restored}) is written again at its retention's end, once, before its object is cleared`, async () => {
      const game = await playedToRetention()
      const logRows = async () =>
        Number(
          (
            await pg()`select count(*) as n from session_logs where session_id = ${game.sessionId}`
          )[0]!.n,
        )
      const archived = await logRows()
      expect(archived).toBeGreaterThan(0)
      const initial: Record<string, Rating> = {
        [game.winner]: { rating: 1500, rd: 350, volatility: 0.06 },
        [game.loser]: { rating: 1500, rd: 350, volatility: 0.06 },
      }
      // The database as it was before the game ended (or began).
      const sql = pg()
      await sql`delete from session_logs where session_id = ${game.sessionId}`
      await sql`delete from match_results where session_id = ${game.sessionId}`
      await sql`update players set rating = 1500, rating_deviation = 350, rating_volatility = 0.06
                where id = any(${[game.winner, game.loser]})`
      if (restored === 'listed live again') {
        await sql`update game_sessions set status = 'live', ended_at = null where id = ${game.sessionId}`
      } else {
        await sql`delete from game_sessions where id = ${game.sessionId}`
      }
      const kept = await clearAfterRetention(game.sessionId)
      expect(kept?.stage).toBe('retain')
      expect((await resultRows(game.sessionId)).map((r) => r.result)).toEqual([game.result])
      const [row] =
        await sql`select status, setup_hash from game_sessions where id = ${game.sessionId}`
      expect(row).toEqual({ status: 'finished', setup_hash: null })
      expect(await logRows()).toBe(archived)
      const after = await ratingsOf([game.winner, game.loser])
      const expected = expectedAfter(initial, game.winner, game.loser)
      expect(after[game.winner]!.rating).toBeCloseTo(expected[game.winner]!.rating, 9)
      expect(after[game.loser]!.rating).toBeCloseTo(expected[game.loser]!.rating, 9)
      // A retention later, Neon holds it whole: cleared, its log read from Neon.
      expect((await clearAfterRetention(game.sessionId))?.stage).toBe('done')
      const read = (await (
        await call(`/v1/sessions/${game.sessionId}/events?limit=500`, bearer(ADMIN_KEY))
      ).json()) as { events: unknown[] }
      expect(read.events).toHaveLength(archived)
      expect((await ratingsOf([game.winner]))[game.winner]!.rating).toBeCloseTo(
        expected[game.winner]!.rating,
        9,
      )
    })
  }

  it("a game whose log's last records Neon lost to a restore (its result kept) archives them again before its object is cleared", async () => {
    const game = await playedToRetention()
    const sql = pg()
    const seqs = async () =>
      (
        await sql`select seq from session_logs where session_id = ${game.sessionId} order by seq`
      ).map((r) => Number(r.seq))
    const archived = await seqs()
    expect(archived.length).toBeGreaterThan(1)
    // Restored to a point between the log's pages: the result and the first records are there.
    await sql`delete from session_logs where session_id = ${game.sessionId}
                and seq = ${archived[archived.length - 1]!}`
    expect((await clearAfterRetention(game.sessionId))?.stage).toBe('retain')
    expect(await seqs()).toEqual(archived)
    expect((await resultRows(game.sessionId)).map((r) => r.result)).toEqual([game.result])
    expect((await clearAfterRetention(game.sessionId))?.stage).toBe('done')
  })

  it('a keyed admin create sent again after its session was played and cleared: the same session (200) from Neon, and another body under the key is 422', async () => {
    const players = playerIds(2)
    const body = { rules: 'dice-race', roster: players.map((playerId) => ({ playerId })) }
    const key = `cleared-${crypto.randomUUID()}`
    const create = (b: unknown) =>
      call('/v1/admin/sessions', json('POST', b, ADMIN_KEY, { 'idempotency-key': key }))
    const first = await create(body)
    expect(first.status).toBe(201)
    const { sessionId } = (await first.json()) as { sessionId: string }
    const ended = await call(`/v1/admin/sessions/${sessionId}/end`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(ended.status).toBe(200)
    await inObject(sessionId, (inst) => {
      inst.store = new NeonSessionStore(env)
    })
    expect(await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))).toMatchObject({
      stage: 'retain',
    })
    const cleared = await clearAfterRetention(sessionId)
    expect(cleared?.stage).toBe('done')
    // A new instance over the empty storage, as after any eviction.
    await evictDurableObject(sessionObject(sessionId))
    const retry = await create(body)
    expect(retry.status).toBe(200)
    expect(((await retry.json()) as { sessionId: string }).sessionId).toBe(sessionId)
    const other = await problem(await create({ ...body, options: { target: 10 } }))
    expect(other).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    // Nothing was started over: the object still holds nothing, and reads come from Neon.
    const tables = await inObject(
      sessionId,
      (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>(`SELECT count(*) AS n FROM sqlite_master WHERE name = 'meta'`)
          .one().n,
    )
    expect(tables).toBe(0)
    const view = await call(`/v1/sessions/${sessionId}`, bearer(ADMIN_KEY))
    expect(view.status).toBe(200)
    expect(await view.json()).toMatchObject({ sessionId, status: 'finished', seq: null })
  })

  it('a clearing whose Neon write fails (the setup hash a late create is answered from) clears nothing; the next run clears it', async () => {
    const game = await playGame()
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const logRows = () =>
      inObject(game.sessionId, (_inst, state) =>
        state.storage.sql
          .exec<{ n: number }>(`SELECT count(*) AS n FROM sqlite_master WHERE name = 'log'`)
          .one().n === 0
          ? 0
          : state.storage.sql.exec<{ n: number }>('SELECT count(*) AS n FROM log').one().n,
      )
    expect(await logRows()).toBe(game.seq)
    let failures = 0
    await inObject(game.sessionId, async (inst) => {
      const base = inst.now()
      inst.now = () => base + RETENTION_MS + 1000
      const real = new NeonSessionStore(env)
      inst.store = {
        register: (s, t) => real.register(s, t),
        recordResult: (input) => real.recordResult(input),
        archiveLog: (id, r) => real.archiveLog(id, r),
        erasedAmong: (ids, since) => real.erasedAmong(ids, since),
        keepSetup: async (id, hash, r, n) => {
          if (failures++ === 0) throw new Error('Neon is down')
          return real.keepSetup(id, hash, r, n)
        },
        archivedSetupHash: (id) => real.archivedSetupHash(id),
      }
      return inst.runEndWork()
    })
    expect(failures).toBe(1)
    expect(await logRows()).toBe(game.seq)
    expect(
      (await pg()`select setup_hash from game_sessions where id = ${game.sessionId}`)[0]!
        .setup_hash,
    ).toBeNull()
    // Its retry, once the failure's backoff is over.
    const status = await inObject(game.sessionId, (inst) => {
      const base = inst.now()
      inst.now = () => base + 60_000
      return inst.runEndWork()
    })
    expect(status?.stage).toBe('done')
    expect(await logRows()).toBe(0)
  })

  it('a log read in pages while the object is cleared between two of them: every event once, in order, as the live log had them', async () => {
    const game = await playGame()
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const token = game.tokens[game.loser]!
    const page = async (from: number) =>
      (await (
        await call(`/v1/sessions/${game.sessionId}/events?from=${from}&limit=1`, bearer(token))
      ).json()) as { events: LogRecord[]; nextFrom: number | null }
    const live = (await (
      await call(`/v1/sessions/${game.sessionId}/events?limit=500`, bearer(ADMIN_KEY))
    ).json()) as { events: LogRecord[] }
    expect(live.events.length).toBeGreaterThan(1)
    const first = await page(1)
    // The retention runs out between the first page (from the object) and the rest (from Neon).
    const status = await clearAfterRetention(game.sessionId)
    expect(status?.stage).toBe('done')
    const read = [...first.events]
    for (let from = first.nextFrom; from !== null;) {
      const next = await page(from)
      read.push(...next.events)
      from = next.nextFrom
    }
    expect(read.map((e) => e.seq)).toEqual(live.events.map((e) => e.seq))
    expect(read).toEqual(seenBy(live.events, game.loser))
  })

  it('after the retention period clears the object; reads then come from Neon (any page), creates stay idempotent', async () => {
    const game = await playGame()
    await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    const live = (await (
      await call(`/v1/sessions/${game.sessionId}/events?limit=500`, bearer(ADMIN_KEY))
    ).json()) as { events: LogRecord[] }
    const { setup, match: liveMatch } = await inObject(game.sessionId, (inst) => inst.current()!)

    // Not yet: the retention period has not passed.
    let status = await inObject(game.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(status?.stage).toBe('retain')
    status = await clearAfterRetention(game.sessionId)
    expect(status?.stage).toBe('done')
    // Nothing left in the object (no table, no alarm): Neon keeps the setup's hash instead.
    const left = await inObject(game.sessionId, async (_inst, state) => ({
      tables: state.storage.sql
        .exec<{ name: string }>(
          `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\_cf\_%' ESCAPE '\\'`,
        )
        .toArray()
        .map((r) => r.name),
      alarm: await state.storage.getAlarm(),
    }))
    expect(left).toEqual({ tables: [], alarm: null })
    const [kept] = await pg()`select setup_hash from game_sessions where id = ${game.sessionId}`
    expect(kept!.setup_hash).toMatch(/^[0-9a-f]{64}$/)

    const res = await call(`/v1/sessions/${game.sessionId}`, bearer(game.tokens[game.winner]!))
    expect(res.status).toBe(200)
    const seen = (await res.json()) as Record<string, unknown>
    expect(seen).toMatchObject({
      sessionId: game.sessionId,
      status: 'finished',
      seq: null,
      result: { winner: game.winner },
    })
    // The seed is the server's: a player never gets it.
    expect(seen).not.toHaveProperty('setup')
    // An admin gets the seed and options Neon kept, and the archived log replays with them to
    // the state the object had before it was cleared (an audit of a disputed game).
    const audited = (await (
      await call(`/v1/sessions/${game.sessionId}`, bearer(ADMIN_KEY))
    ).json()) as {
      roster: { playerId: string; team: number }[]
      setup: { seed: string; options: unknown }
    }
    expect(audited.setup).toEqual({ seed: setup.seed, options: setup.options ?? null })
    const whole = (await (
      await call(`/v1/sessions/${game.sessionId}/events?limit=500`, bearer(ADMIN_KEY))
    ).json()) as { events: LogRecord[] }
    expect(
      replay(
        getRules(setup.rules)!,
        {
          roster: audited.roster,
          seed: audited.setup.seed,
          options: audited.setup.options ?? undefined,
        },
        whole.events,
      ),
    ).toEqual(liveMatch)
    const archived = (await (
      await call(`/v1/sessions/${game.sessionId}/events?limit=3`, bearer(game.tokens[game.loser]!))
    ).json()) as { events: LogRecord[]; nextFrom: number | null }
    expect(archived.events).toEqual(seenBy(live.events.slice(0, 3), game.loser))
    expect(archived.nextFrom).toBe(live.events.length > 3 ? 4 : null)

    // Past the end of the archived log, however far: an empty last page, not an error.
    for (const from of [live.events.length + 1, 2 ** 31, Number.MAX_SAFE_INTEGER]) {
      const past = await call(
        `/v1/sessions/${game.sessionId}/events?from=${from}`,
        bearer(ADMIN_KEY),
      )
      expect(past.status).toBe(200)
      expect(await past.json()).toEqual({ events: [], nextFrom: null })
    }

    // A keyed create sent again is answered from the hash Neon keeps, and starts nothing over,
    // by an instance that has kept nothing of the session in memory either (reset since).
    await evictDurableObject(sessionObject(game.sessionId))
    const again = await inObject(game.sessionId, (inst) => inst.create(setup, { keyed: true }))
    expect(again).toEqual({ ok: true, created: false })
    const other = await inObject(game.sessionId, (inst) =>
      inst.create({ ...setup, seed: `${setup.seed}x` }, { keyed: true }),
    )
    expect(other).toMatchObject({ ok: false, problem: 'conflict' })
    // A Worker of the version before (a gradual deployment) sends the hash it read itself.
    const fromOlderWorker = await inObject(game.sessionId, (inst) =>
      inst.create(setup, { archivedSetupHash: kept!.setup_hash as string }),
    )
    expect(fromOlderWorker).toEqual({ ok: true, created: false })
    const socket = await call(`/v1/sessions/${game.sessionId}`, {
      headers: { upgrade: 'websocket', authorization: `Bearer ${game.tokens[game.winner]}` },
    })
    expect((await problem(socket)).status).toBe(404)
  })
})
