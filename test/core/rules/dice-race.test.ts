import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { DiceEvent, DiceState } from '../../../workers/core/rules/dice-race.ts'
import { diceRace } from '../../../workers/core/rules/dice-race.ts'
import type { Input, LogRecord, MatchState } from '../../../workers/core/rules/index.ts'
import {
  createMatch,
  createRng,
  isRuleError,
  replay,
  seedRng,
  step,
} from '../../../workers/core/rules/index.ts'
import { accepted, mustCreate, refusalCode, roster, runLive } from './helpers.ts'

const ROLL = { type: 'action', action: 'roll' }
const roll = (player: string, tick = 0): Input => ({ kind: 'action', player, tick, action: ROLL })
const absent = (player: string, tick = 0): Input => ({ kind: 'absent', player, tick })
const connect = (player: string, tick = 0): Input => ({ kind: 'connect', player, tick })

type Match = MatchState<DiceState>

const ok = (match: Match, input: Input) => accepted(diceRace, match, input)
const refusedWith = (match: Match, input: Input) => refusalCode(diceRace, match, input)

describe('dice-race', () => {
  it('starts everyone at 0 with the first roster player to move', () => {
    const match = mustCreate(diceRace, { roster: roster('a', 'b'), seed: 's' })
    expect(match.game).toEqual({
      target: 100,
      players: [
        { playerId: 'a', team: 0, position: 0, forfeited: false },
        { playerId: 'b', team: 1, position: 0, forfeited: false },
      ],
      turn: 0,
      rolls: 0,
      winner: null,
      ended: null,
      lastTeamWins: true,
    })
    expect(diceRace.result(match.game)).toBeNull()
  })

  it('checks options and roster size', () => {
    const setup = { roster: roster('a', 'b'), seed: 's' }
    expect(mustCreate(diceRace, { ...setup, options: { target: 7 } }).game.target).toBe(7)
    for (const options of [{ target: 0 }, { target: 1.5 }, { target: '9' }, { goal: 9 }, [], 5]) {
      const out = createMatch(diceRace, { ...setup, options })
      expect(isRuleError(out) && out.error.code).toBe('invalid_options')
    }
    const many = Array.from({ length: 17 }, (_, i) => `p${i}`)
    for (const bad of [
      { roster: [], seed: 's' },
      { roster: roster(...many), seed: 's' },
      { roster: roster('a', 'a'), seed: 's' },
      { roster: [{ playerId: '', team: 0 }], seed: 's' },
      { roster: [{ playerId: 'a', team: -1 }], seed: 's' },
      { roster: roster('a'), seed: '' },
    ]) {
      const out = createMatch(diceRace, bad)
      expect(isRuleError(out) && out.error.code).toBe('invalid_setup')
    }
  })

  it('rolls the seeded die for the player in turn, in roster order', () => {
    let match = mustCreate(diceRace, { roster: roster('a', 'b', 'c'), seed: 'turns' })
    const dice = createRng(seedRng('turns'))
    const expected = { a: 0, b: 0, c: 0 }
    const order = ['a', 'b', 'c', 'a', 'b', 'c', 'a'] as const
    order.forEach((player, i) => {
      const die = dice.int(1, 6)
      expected[player] += die
      const out = ok(match, roll(player, i))
      match = out.match
      expect(out.event).toEqual({
        kind: 'roll',
        player,
        die,
        position: expected[player],
        next: order[(i + 1) % 3] ?? 'b',
        winner: null,
      })
    })
    expect(match.game.players.map((p) => p.position)).toEqual([expected.a, expected.b, expected.c])
    expect(match.game.rolls).toBe(7)
    expect(match.seq).toBe(7)
  })

  it('refuses out-of-turn rolls, strangers and bad payloads without any change', () => {
    const match = mustCreate(diceRace, { roster: roster('a', 'b'), seed: 's' })
    expect(refusedWith(match, roll('b'))).toBe('not_your_turn')
    expect(refusedWith(match, roll('zed'))).toBe('not_a_player')
    const payloads: unknown[] = [
      null,
      'roll',
      42,
      ['roll'],
      {},
      { action: 'jump' },
      { action: 'ROLL' },
      { action: 6 },
      { action: ['roll'] },
      { type: 'chat', action: 'roll' },
      { type: 'action', action: 'roll', die: 6 },
      { action: 'roll', x: 'y'.repeat(100_000) },
      new Date(),
    ]
    for (const action of payloads) {
      expect(refusedWith(match, { kind: 'action', player: 'a', tick: 0, action })).toBe(
        'invalid_action',
      )
    }
    // A bare `{ action: 'roll' }` (no envelope type) is accepted too.
    expect(
      ok(match, { kind: 'action', player: 'a', tick: 0, action: { action: 'roll' } }),
    ).toBeTruthy()
  })

  it('ends when someone reaches the target, and accepts nothing after', () => {
    // Target 1: the first roll always wins.
    const match0 = mustCreate(diceRace, {
      roster: roster('a', 'b', 'c'),
      seed: 'end',
      options: { target: 1 },
    })
    const { match, event } = ok(match0, roll('a'))
    expect(event).toMatchObject({ kind: 'roll', player: 'a', next: null, winner: 'a' })
    expect(match.game.turn).toBe(-1)
    expect(diceRace.result(match.game)).toEqual({
      reason: 'finished',
      winner: 'a',
      placements: [
        { playerId: 'a', team: 0, place: 1, score: event.kind === 'roll' ? event.position : -1 },
        { playerId: 'b', team: 1, place: 2, score: 0 },
        { playerId: 'c', team: 2, place: 2, score: 0 },
      ],
    })
    expect(refusedWith(match, roll('a'))).toBe('game_over')
    expect(refusedWith(match, roll('b'))).toBe('game_over')
    expect(refusedWith(match, absent('b'))).toBe('game_over')
    // The rules refuse on their own too, not only through the engine.
    const direct = diceRace.apply(
      match.game,
      { action: 'roll' },
      { player: 'b', tick: 0, rng: createRng(match.rng) },
    )
    expect(isRuleError(direct) && direct.error.code).toBe('game_over')
  })

  it('takes a forfeiting player out of the turn order and ends by forfeit', () => {
    let match = mustCreate(diceRace, { roster: roster('a', 'b', 'c'), seed: 'ff' })
    match = ok(match, roll('a')).match // b to move
    // b, whose turn it is, forfeits: the turn passes to c.
    const f1 = ok(match, absent('b'))
    expect(f1.event).toEqual({ kind: 'forfeit', player: 'b', next: 'c', winner: null, ended: null })
    match = f1.match
    expect(refusedWith(match, roll('b'))).toBe('not_your_turn')
    expect(refusedWith(match, absent('b'))).toBe('already_absent')
    expect(refusedWith(match, absent('nobody'))).toBe('not_a_player')
    match = ok(match, roll('c')).match
    expect(match.game.turn).toBe(0) // back to a, skipping b
    match = ok(match, roll('a')).match
    // It is c's turn; a forfeits out of turn, which leaves c alone: c wins by forfeit.
    const f2 = ok(match, absent('a'))
    expect(f2.event).toEqual({
      kind: 'forfeit',
      player: 'a',
      next: null,
      winner: 'c',
      ended: 'forfeit',
    })
    const result = diceRace.result(f2.match.game)
    expect(result?.reason).toBe('forfeit')
    expect(result?.winner).toBe('c')
    // c first, then the leavers by position, ties to the earlier in turn order.
    const [pa, pb] = [
      f2.match.game.players[0]?.position ?? 0,
      f2.match.game.players[1]?.position ?? 0,
    ]
    const leavers = pa >= pb ? ['a', 'b'] : ['b', 'a']
    expect(result?.placements.map((p) => p.playerId)).toEqual(['c', ...leavers])
    expect(result?.placements.map((p) => p.place)).toEqual([1, 2, 3])
  })

  it('a team whose opponents have all forfeited wins by forfeit, and is rated the winner: its players leaving then cannot make it abandoned', () => {
    const teams = [
      { playerId: 'a1', team: 0 },
      { playerId: 'b1', team: 1 },
      { playerId: 'a2', team: 0 },
      { playerId: 'b2', team: 1 },
    ]
    let match = mustCreate(diceRace, { roster: teams, seed: 'teams' })
    match = ok(match, roll('a1')).match
    match = ok(match, roll('b1')).match
    match = ok(match, roll('a2')).match
    // b1 goes: a team is still in on each side, so the race goes on.
    const f1 = ok(match, absent('b1'))
    expect(f1.event).toMatchObject({ player: 'b1', ended: null, winner: null })
    // b2 goes too: only team 0 is left, and it has won; its furthest player is the winner.
    const f2 = ok(f1.match, absent('b2'))
    const [a1, a2] = [f2.match.game.players[0]!, f2.match.game.players[2]!]
    const furthest = a2.position > a1.position ? 'a2' : 'a1'
    expect(f2.event).toEqual({
      kind: 'forfeit',
      player: 'b2',
      next: null,
      winner: furthest,
      ended: 'forfeit',
    })
    const result = diceRace.result(f2.match.game)!
    expect(result.reason).toBe('forfeit')
    // Team 0 is placed above team 1 (ratings place a team at its best member).
    const placeOf = (id: string) => result.placements.find((p) => p.playerId === id)!.place
    expect(Math.max(placeOf('a1'), placeOf('a2'))).toBeLessThan(
      Math.min(placeOf('b1'), placeOf('b2')),
    )
    // Over: team 0's players leaving now change nothing.
    expect(refusedWith(f2.match, absent('a1'))).toBe('game_over')
    expect(refusedWith(f2.match, roll('a1'))).toBe('game_over')
    // Everyone on one team (a co-op race an admin made): the last player in wins, as before.
    const coop = teams.map((p) => ({ ...p, team: 0 }))
    let together = mustCreate(diceRace, { roster: coop, seed: 'teams' })
    expect(together.game.lastTeamWins).toBeUndefined()
    for (const id of ['b1', 'b2']) {
      const step = ok(together, absent(id))
      expect(step.event).toMatchObject({ ended: null })
      together = step.match
    }
  })

  it('a game created before teams won by forfeit (no lastTeamWins in its state) goes on as it did: its log replays', () => {
    const teams = [
      { playerId: 'a1', team: 0 },
      { playerId: 'b1', team: 1 },
      { playerId: 'a2', team: 0 },
      { playerId: 'b2', team: 1 },
    ]
    const made = mustCreate(diceRace, { roster: teams, seed: 'old' })
    const { lastTeamWins: _, ...oldState } = made.game
    let match: Match = { ...made, game: oldState }
    match = ok(match, absent('b1')).match
    const f2 = ok(match, absent('b2'))
    expect(f2.event).toMatchObject({ ended: null, winner: null, next: 'a1' })
    expect(ok(f2.match, roll('a1')).event).toMatchObject({ kind: 'roll', player: 'a1' })
  })

  it('abandons a solo game whose only player leaves', () => {
    const match = mustCreate(diceRace, { roster: roster('solo'), seed: 's' })
    const { match: after, event } = ok(match, absent('solo'))
    expect(event).toEqual({
      kind: 'forfeit',
      player: 'solo',
      next: null,
      winner: null,
      ended: 'abandoned',
    })
    expect(diceRace.result(after.game)).toEqual({
      reason: 'abandoned',
      winner: null,
      placements: [{ playerId: 'solo', team: 0, place: 1, score: 0 }],
    })
  })

  it('ends abandoned, with no winner, when everyone still in goes away together', () => {
    const start = mustCreate(diceRace, { roster: roster('a', 'b', 'c'), seed: 's' })
    // a rolls; c leaves; then a and b go at once (their graces ended together).
    const inputs: Input[] = [roll('a'), absent('c'), { kind: 'abandon', tick: 0 }]
    const live = runLive(diceRace, start, inputs)
    expect(live.records.at(-1)!.event).toEqual({
      kind: 'abandoned',
      players: ['a', 'b'],
      ended: 'abandoned',
    })
    const result = diceRace.result(live.match.game)!
    expect(result).toMatchObject({ reason: 'abandoned', winner: null })
    expect(result.placements.map((p) => p.playerId).sort()).toEqual(['a', 'b', 'c'])
    // Logged like any input: the log replays into the live state, and nothing follows it.
    expect(replay(diceRace, { roster: roster('a', 'b', 'c'), seed: 's' }, live.records)).toEqual(
      live.match,
    )
    expect(refusedWith(live.match, roll('b'))).toBe('game_over')
    // Reported one at a time instead, the first report hands the other a win by forfeit.
    const beforeAbandon = runLive(diceRace, start, inputs.slice(0, 2)).match
    expect(ok(beforeAbandon, absent('a')).event).toMatchObject({ winner: 'b', ended: 'forfeit' })
  })

  it('places the winner, then players still in by position, then leavers; equal outcomes share a place, listed in turn order', () => {
    const p = (playerId: string, position: number, forfeited = false) => ({
      playerId,
      team: 0,
      position,
      forfeited,
    })
    const state: DiceState = {
      target: 100,
      players: [
        p('a', 40),
        p('b', 70, true),
        p('c', 100),
        p('d', 40),
        p('e', 55),
        p('f', 70, true),
      ],
      turn: -1,
      rolls: 0,
      winner: 'c',
      ended: 'finished',
    }
    expect(diceRace.result(state)?.placements.map((x) => [x.playerId, x.place])).toEqual([
      ['c', 1],
      ['e', 2],
      ['a', 3],
      ['d', 3],
      ['b', 5],
      ['f', 5],
    ])
  })
})

// ---------------------------------------------------------------------------------------------
// Model-based property test: an independent, imperative simulation of the rules predicts every
// outcome (accepted or which refusal, and each event) for random inputs from random players.

/** `who`: a roster index, `ids.length` for a stranger, or -1 for whoever the model says moves. */
type Op = { kind: 'roll'; who: number; payload: number } | { kind: 'absent'; who: number }

const PAYLOADS: unknown[] = [
  ROLL,
  { action: 'roll' },
  { action: 'jump' },
  { type: 'action' },
  'roll',
  null,
  { type: 'action', action: 'roll', extra: true },
]
const VALID_PAYLOADS = new Set([0, 1])

interface Expected {
  code?: string
  event?: DiceEvent
}

/** Turn ops into inputs (resolving "whoever moves" by the model) and predict each outcome. */
function simulate(
  ids: string[],
  seed: string,
  target: number,
  ops: Op[],
): { inputs: Input[]; expected: Expected[] } {
  const dice = createRng(seedRng(seed))
  const pos = ids.map(() => 0)
  const out = ids.map(() => false)
  let turn = 0
  let over = false
  const nextIn = (from: number): number => {
    for (let k = 1; k <= ids.length; k++) {
      if (!out[(from + k) % ids.length]) return (from + k) % ids.length
    }
    return -1
  }
  const inputs: Input[] = []
  const expected = ops.map((op, tick): Expected => {
    const who = op.who === -1 ? Math.max(turn, 0) : op.who < ids.length ? op.who : -1
    const name = who === -1 ? 'stranger' : (ids[who] as string)
    inputs.push(
      op.kind === 'roll'
        ? { kind: 'action', player: name, tick, action: PAYLOADS[op.payload] }
        : { kind: 'absent', player: name, tick },
    )
    if (over) return { code: 'game_over' }
    if (op.kind === 'roll') {
      if (!VALID_PAYLOADS.has(op.payload)) return { code: 'invalid_action' }
      if (who === -1) return { code: 'not_a_player' }
      if (out[who] || who !== turn) return { code: 'not_your_turn' }
      const die = dice.int(1, 6)
      const position = (pos[who] ?? 0) + die
      pos[who] = position
      if (position >= target) {
        over = true
        return { event: { kind: 'roll', player: name, die, position, next: null, winner: name } }
      }
      turn = nextIn(who)
      const next = ids[turn] ?? null
      return { event: { kind: 'roll', player: name, die, position, next, winner: null } }
    }
    if (who === -1) return { code: 'not_a_player' }
    if (out[who]) return { code: 'already_absent' }
    out[who] = true
    const left = ids.filter((_, i) => !out[i])
    if (left.length === 0) {
      over = true
      return {
        event: { kind: 'forfeit', player: name, next: null, winner: null, ended: 'abandoned' },
      }
    }
    if (left.length === 1 && ids.length > 1) {
      over = true
      const winner = left[0] ?? null
      return { event: { kind: 'forfeit', player: name, next: null, winner, ended: 'forfeit' } }
    }
    if (turn === who) turn = nextIn(who)
    const next = ids[turn] ?? null
    return { event: { kind: 'forfeit', player: name, next, winner: null, ended: null } }
  })
  return { inputs, expected }
}

const gameArb = fc
  .record({
    players: fc.integer({ min: 1, max: 5 }),
    seed: fc.string({ minLength: 1, maxLength: 20 }),
    target: fc.oneof(fc.integer({ min: 1, max: 40 }), fc.constant(100)),
  })
  .chain(({ players, seed, target }) =>
    fc.record({
      ids: fc.constant(Array.from({ length: players }, (_, i) => `p${i}`)),
      seed: fc.constant(seed),
      target: fc.constant(target),
      ops: fc.array(
        fc.oneof(
          {
            weight: 30,
            arbitrary: fc.record({
              kind: fc.constant('roll' as const),
              who: fc.oneof({ weight: 3, arbitrary: fc.constant(-1) }, fc.nat(players)),
              payload: fc.oneof(
                { weight: 4, arbitrary: fc.constant(0) },
                fc.nat(PAYLOADS.length - 1),
              ),
            }),
          },
          {
            weight: 1,
            arbitrary: fc.record({
              kind: fc.constant('absent' as const),
              who: fc.oneof(fc.constant(-1), fc.nat(players)),
            }),
          },
        ),
        { maxLength: 150, size: 'max' },
      ),
    }),
  )

describe('dice-race turn timer (turnSeconds)', () => {
  const tick = (t: number): Input => ({ kind: 'tick', tick: t })
  /** A timed game of a, b and c, all three connected at tick 0: its clock runs from there. */
  const timed = (turnSeconds = 10) => {
    let match = mustCreate(diceRace, {
      roster: roster('a', 'b', 'c'),
      seed: 't',
      options: { turnSeconds },
    })
    for (const p of ['a', 'b', 'c']) match = ok(match, connect(p, 0)).match
    return match
  }

  it('the clock waits for every player to connect: no turn runs out before, and a player in turn may roll', () => {
    let match = mustCreate(diceRace, {
      roster: roster('a', 'b', 'c'),
      seed: 'w',
      options: { turnSeconds: 10 },
    })
    expect(match.game).toMatchObject({ awaiting: ['a', 'b', 'c'] })
    expect(match.game).not.toHaveProperty('turnEndsAt')
    expect(diceRace.nextTick!(match.game)).toBeNull()
    // However long nobody connects, a tick changes nothing.
    const idle = step(diceRace, match, { kind: 'tick', tick: 1_000_000 })
    expect(!isRuleError(idle) && idle.record).toBeNull()
    const a = ok(match, connect('a', 2_000))
    expect(a.event).toEqual({ kind: 'joined', player: 'a', awaiting: ['b', 'c'] })
    match = a.match
    expect(diceRace.nextTick!(match.game)).toBeNull()
    // a, in turn, rolls before the others are in: b's turn has no deadline yet.
    match = ok(match, roll('a', 3_000)).match
    expect(match.game).toMatchObject({ turn: 1 })
    expect(match.game).not.toHaveProperty('turnEndsAt')
    match = ok(match, connect('b', 4_000)).match
    // A second connection of b changes nothing and is not logged.
    expect(refusedWith(match, connect('b', 5_000))).toBe('already_joined')
    // The last one in starts the clock: b's turn runs 10 s from c's arrival.
    const c = ok(match, connect('c', 7_000))
    expect(c.event).toEqual({ kind: 'joined', player: 'c', awaiting: [] })
    expect(c.match.game).toMatchObject({ turn: 1, turnEndsAt: 17_000, awaiting: [] })
    expect(diceRace.nextTick!(c.match.game)).toBe(17_000)
    expect(refusedWith(c.match, connect('a', 8_000))).toBe('already_joined')
  })

  it('one who never connects forfeits when their grace ends, and the clock starts then', () => {
    let match = mustCreate(diceRace, {
      roster: roster('a', 'b', 'c'),
      seed: 'g',
      options: { turnSeconds: 10 },
    })
    match = ok(match, connect('a', 1_000)).match
    match = ok(match, connect('b', 1_500)).match
    // c never comes: at the join grace's end c forfeits, and a's turn (still a's) starts then.
    const gone = ok(match, absent('c', 120_000))
    expect(gone.event).toMatchObject({ kind: 'forfeit', player: 'c', next: 'a' })
    expect(gone.match.game).toMatchObject({ turn: 0, turnEndsAt: 130_000, awaiting: [] })
    // Forfeited, c connecting changes nothing.
    expect(refusedWith(gone.match, connect('c', 121_000))).toBe('already_joined')
  })

  it('a timed game from before the clock waited (no awaiting list) takes no notice of connections', () => {
    const before = mustCreate(diceRace, {
      roster: roster('a', 'b'),
      seed: 'old',
      options: { turnSeconds: 10 },
    })
    const { awaiting: _, ...game } = before.game
    const old = { ...before, game: { ...game, turnEndsAt: 10_000 } }
    expect(refusedWith(old, connect('a', 500))).toBe('already_joined')
    expect(diceRace.nextTick!(old.game)).toBe(10_000)
  })

  it('rolls for a player whose turn ran out, and the next turn runs from that deadline', () => {
    let match = timed()
    expect(match.game).toMatchObject({ turnTicks: 10_000, turnEndsAt: 10_000 })
    expect(diceRace.nextTick!(match.game)).toBe(10_000)
    // Before the deadline a tick changes nothing, and is not logged.
    const early = step(diceRace, match, tick(9_999))
    expect(!isRuleError(early) && early.record).toBeNull()
    // The alarm comes late (at 15 s): a's turn is rolled for a, and b's turn ends 10 s after a's did.
    const late = ok(match, tick(15_000))
    expect(late.event).toMatchObject({ kind: 'roll', player: 'a', next: 'b', auto: true })
    match = late.match
    expect(match.game).toMatchObject({ turn: 1, turnEndsAt: 20_000 })
    // b rolls at 17 s: c's turn ends 10 s after b's roll.
    const own = ok(match, roll('b', 17_000))
    expect(own.event).not.toHaveProperty('auto')
    expect(own.match.game.turnEndsAt).toBe(27_000)
    // A roll sent after its turn ran out, once the clock has caught up, is refused.
    const passed = ok(own.match, tick(27_000)).match
    expect(refusedWith(passed, roll('c', 27_500))).toBe('not_your_turn')
  })

  it('a forfeit that hands the turn on starts it then; one that does not keeps the deadline', () => {
    const match = timed()
    // a, whose turn it is, forfeits at 4 s: b's turn ends at 14 s.
    const handed = ok(match, absent('a', 4_000)).match
    expect(handed.game).toMatchObject({ turn: 1, turnEndsAt: 14_000 })
    // c forfeits at 6 s while it is b's turn: b's deadline stays.
    const kept = ok(handed, absent('c', 6_000)).match
    expect(kept.game).toMatchObject({ turnEndsAt: 14_000 })
    // b is the last one in and wins: no deadline is asked for any more.
    expect(kept.game.ended).toBe('forfeit')
    expect(diceRace.nextTick!(kept.game)).toBeNull()
  })

  it('games without it keep no deadline, ask for no ticks, and ticks change nothing', () => {
    const match = mustCreate(diceRace, { roster: roster('a', 'b'), seed: 't' })
    expect(match.game).not.toHaveProperty('turnEndsAt')
    expect(diceRace.nextTick!(match.game)).toBeNull()
    const out = step(diceRace, match, tick(10_000_000))
    expect(!isRuleError(out) && out.record).toBeNull()
  })

  it('turnSeconds is a whole number of seconds from 5 to 3600', () => {
    const setup = { roster: roster('a', 'b'), seed: 's' }
    expect(mustCreate(diceRace, { ...setup, options: { turnSeconds: 5 } }).game.turnTicks).toBe(
      5000,
    )
    for (const turnSeconds of [4, 3601, 1.5, '10', null]) {
      const out = createMatch(diceRace, { ...setup, options: { turnSeconds } })
      expect(isRuleError(out) && out.error.code).toBe('invalid_options')
    }
  })

  it('a timed game left to its clock plays to the end, and its log replays to the live state', () => {
    const setup = {
      roster: roster('a', 'b'),
      seed: 'idle',
      options: { target: 20, turnSeconds: 5 },
    }
    let match = mustCreate(diceRace, setup)
    const records: LogRecord[] = []
    for (const p of ['a', 'b']) {
      const out = step(diceRace, match, connect(p, 0))
      if (isRuleError(out) || !out.record) throw new Error('the connection did nothing')
      records.push(out.record)
      match = out.match
    }
    // Nobody ever rolls: each deadline the alarm reaches rolls for the player in turn.
    for (let i = 0; i < 100 && diceRace.result(match.game) === null; i++) {
      const out = step(diceRace, match, tick(diceRace.nextTick!(match.game)!))
      if (isRuleError(out) || !out.record) throw new Error('the deadline did nothing')
      records.push(out.record)
      match = out.match
    }
    expect(diceRace.result(match.game)).toMatchObject({ reason: 'finished' })
    expect(
      records.slice(2).every((r) => (r.event as DiceEvent & { auto?: true }).auto === true),
    ).toBe(true)
    expect(replay(diceRace, setup, records)).toEqual(match)
  })
})

describe('dice-race properties', () => {
  it('agrees with an independent simulation on every input', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, target, ops }) => {
        const start = mustCreate(diceRace, { roster: roster(...ids), seed, options: { target } })
        const { inputs, expected } = simulate(ids, seed, target, ops)
        const live = runLive(diceRace, start, inputs)
        live.results.forEach((got, i) => {
          const want = expected[i] as Expected
          if (want.code !== undefined) expect(isRuleError(got) && got.error.code).toBe(want.code)
          else expect((got as LogRecord<DiceEvent>).event).toEqual(want.event)
        })
      }),
      { numRuns: 300 },
    )
  })

  it('keeps its invariants: growing positions, one mover, one winner, nothing after the end', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, target, ops }) => {
        let match = mustCreate(diceRace, { roster: roster(...ids), seed, options: { target } })
        for (const input of simulate(ids, seed, target, ops).inputs) {
          const before = match.game
          const out = step(diceRace, match, input)
          if (before.ended !== null) {
            expect(isRuleError(out) && out.error.code).toBe('game_over')
            continue
          }
          if (isRuleError(out)) continue
          const after = out.match.game
          after.players.forEach((p, i) =>
            expect(p.position).toBeGreaterThanOrEqual(before.players[i]?.position ?? 0),
          )
          const moved = after.players.filter((p, i) => p.position !== before.players[i]?.position)
          if (input.kind === 'action') {
            // Only the player in turn moves, by one die.
            expect(moved.map((p) => p.playerId)).toEqual([before.players[before.turn]?.playerId])
            expect(input.player).toBe(before.players[before.turn]?.playerId)
            const gain = (moved[0]?.position ?? 0) - (before.players[before.turn]?.position ?? 0)
            expect(gain >= 1 && gain <= 6).toBe(true)
          } else {
            expect(moved).toEqual([])
          }
          const result = diceRace.result(after)
          if (result !== null) {
            const winners = result.placements.filter((p) => p.place === 1)
            if (result.winner !== null) expect(winners).toHaveLength(1)
            // Places go 1, 2, 2, 4…: shared only by equal outcomes (standing and position).
            const standing = (id: string) =>
              id === result.winner
                ? 0
                : after.players.find((x) => x.playerId === id)!.forfeited
                  ? 2
                  : 1
            result.placements.forEach((p, k) => {
              const prev = result.placements[k - 1]
              const tied =
                prev !== undefined &&
                prev.score === p.score &&
                standing(prev.playerId) === standing(p.playerId)
              expect(p.place).toBe(tied ? prev.place : k + 1)
            })
            if (result.reason === 'finished') {
              expect(
                after.players.find((p) => p.playerId === result.winner)?.position,
              ).toBeGreaterThanOrEqual(target)
            } else if (result.reason === 'forfeit') {
              expect(after.players.filter((p) => !p.forfeited).map((p) => p.playerId)).toEqual([
                result.winner,
              ])
            } else {
              expect(result.winner).toBeNull()
            }
            if (result.winner !== null) expect(winners[0]?.playerId).toBe(result.winner)
          } else {
            // While running, the player in turn is still in the game.
            expect(after.players[after.turn]?.forfeited).toBe(false)
          }
          match = out.match
        }
      }),
      { numRuns: 300 },
    )
  })

  it('replays its log into the live state', () => {
    fc.assert(
      fc.property(gameArb, ({ ids, seed, target, ops }) => {
        const setup = { roster: roster(...ids), seed, options: { target } }
        const { inputs } = simulate(ids, seed, target, ops)
        const live = runLive(diceRace, mustCreate(diceRace, setup), inputs)
        expect(replay(diceRace, setup, live.records)).toEqual(live.match)
      }),
      { numRuns: 200 },
    )
  })
})
