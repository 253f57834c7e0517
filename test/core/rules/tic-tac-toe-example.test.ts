import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { TttEvent, TttState } from '../../../examples/rules/tic-tac-toe.ts'
import { ticTacToe } from '../../../examples/rules/tic-tac-toe.ts'
import type { GameSetup, Input, LogRecord, MatchState } from '../../../workers/core/rules/index.ts'
import {
  createMatch,
  isRuleError,
  optionsRefusal,
  replay,
  resultOf,
  step,
} from '../../../workers/core/rules/index.ts'
import {
  accepted,
  expectDeterministic,
  mustCreate,
  refusalCode,
  roster,
  roundTrip,
  runLive,
} from './helpers.ts'

/**
 * The worked example of docs/rules.md (examples/rules/tic-tac-toe.ts), through the real engine
 * as a GameSession runs it: createMatch, step, resultOf, and replay of the log.
 */

type Match = MatchState<TttState>

const setup: GameSetup = { roster: roster('x', 'o'), seed: 'ttt' }
const mark = (player: string, cell: number, tick = 0): Input => ({
  kind: 'action',
  player,
  tick,
  action: { type: 'action', action: 'mark', cell },
})
const absent = (player: string, tick = 0): Input => ({ kind: 'absent', player, tick })

const ok = (match: Match, input: Input) => accepted(ticTacToe, match, input)
const refusedWith = (match: Match, input: Input) => refusalCode(ticTacToe, match, input)

/** Plays `cells` alternately from x, as a session would log them; returns the match and its log. */
function play(cells: number[], start = mustCreate(ticTacToe, setup)) {
  const inputs = cells.map((cell, i) => mark(i % 2 === 0 ? 'x' : 'o', cell, i * 1000))
  const live = runLive(ticTacToe, start, inputs)
  expect(live.records).toHaveLength(cells.length) // every one accepted
  return live
}

describe('tic-tac-toe example', () => {
  it('starts with an empty board and the first roster player (X) to move', () => {
    const match = mustCreate(ticTacToe, setup)
    expect(match.game).toEqual({
      players: [
        { playerId: 'x', team: 0 },
        { playerId: 'o', team: 1 },
      ],
      board: [null, null, null, null, null, null, null, null, null],
      turn: 0,
      winner: null,
      ended: null,
    })
    expect(resultOf(ticTacToe, match)).toBeNull()
  })

  it('checks its options and roster size, as a queue configuration does', () => {
    for (const options of [null, {}, { first: 'roster' }, { first: 'random' }]) {
      expect(optionsRefusal(ticTacToe, setup.roster, options)).toBeNull()
    }
    for (const options of [{ first: 'o' }, { first: 1 }, { second: 'x' }, [], 'random']) {
      const out = createMatch(ticTacToe, { ...setup, options })
      expect(isRuleError(out) && out.error.code).toBe('invalid_options')
      expect(optionsRefusal(ticTacToe, setup.roster, options)).toEqual(
        isRuleError(out) ? out.error.message : null,
      )
    }
    for (const bad of [roster('solo'), roster('a', 'b', 'c')]) {
      const out = createMatch(ticTacToe, { roster: bad, seed: 's' })
      expect(isRuleError(out) && out.error.code).toBe('invalid_setup')
    }
  })

  it('draws the first player from the seed with first: "random", the same for the same seed', () => {
    const firsts = new Set<string>()
    for (let i = 0; i < 40; i++) {
      const s = { ...setup, seed: `seed-${i}`, options: { first: 'random' } }
      const first = mustCreate(ticTacToe, s).game.players[0]?.playerId ?? ''
      expect(mustCreate(ticTacToe, roundTrip(s)).game.players[0]?.playerId).toBe(first)
      firsts.add(first)
    }
    expect([...firsts].sort()).toEqual(['o', 'x'])
  })

  it('ends on three in a row: the winner 1st, the loser 2nd, and nothing after', () => {
    // x: 0, 1, 2 (the top row); o: 3, 4.
    const { match, records } = play([0, 3, 1, 4, 2])
    expect(records.at(-1)?.event).toEqual({
      kind: 'mark',
      player: 'x',
      cell: 2,
      next: null,
      winner: 'x',
    })
    expect(resultOf(ticTacToe, match)).toEqual({
      reason: 'finished',
      winner: 'x',
      placements: [
        { playerId: 'x', team: 0, place: 1 },
        { playerId: 'o', team: 1, place: 2 },
      ],
    })
    expect(refusedWith(match, mark('o', 5, 5000))).toBe('game_over')
    expect(refusedWith(match, absent('o', 5000))).toBe('game_over')
    expect(replay(ticTacToe, setup, records)).toEqual(match)
  })

  it('ends a full board without a line as a draw: no winner, both 1st', () => {
    // x o x / x o o / o x x
    const { match, records } = play([0, 1, 2, 4, 3, 5, 7, 6, 8])
    expect(records.at(-1)?.event).toEqual({
      kind: 'mark',
      player: 'x',
      cell: 8,
      next: null,
      winner: null,
    })
    expect(resultOf(ticTacToe, match)).toEqual({
      reason: 'finished',
      winner: null,
      placements: [
        { playerId: 'x', team: 0, place: 1 },
        { playerId: 'o', team: 1, place: 1 },
      ],
    })
    expect(replay(ticTacToe, setup, records)).toEqual(match)
  })

  it('refuses out-of-turn and occupied-cell marks, strangers and bad payloads, changing nothing', () => {
    let match = mustCreate(ticTacToe, setup)
    expect(refusedWith(match, mark('o', 4))).toBe('not_your_turn')
    match = ok(match, mark('x', 4)).match
    expect(refusedWith(match, mark('x', 0))).toBe('not_your_turn') // twice in a row
    expect(refusedWith(match, mark('o', 4))).toBe('occupied')
    expect(refusedWith(match, mark('zed', 0))).toBe('not_a_player')
    for (const action of [
      null,
      'mark',
      { action: 'mark' },
      { action: 'mark', cell: 9 },
      { action: 'mark', cell: -1 },
      { action: 'mark', cell: 1.5 },
      { action: 'mark', cell: '0' },
      { action: 'place', cell: 0 },
      { type: 'chat', action: 'mark', cell: 0 },
      { action: 'mark', cell: 0, extra: true },
    ]) {
      expect(refusedWith(match, { kind: 'action', player: 'o', tick: 0, action })).toBe(
        'invalid_action',
      )
    }
    // The refusals consumed nothing: o's mark is still the second record.
    const next = ok(match, {
      kind: 'action',
      player: 'o',
      tick: 0,
      action: { action: 'mark', cell: 0 },
    })
    expect(next.match.seq).toBe(2)
    expect(next.event).toEqual({ kind: 'mark', player: 'o', cell: 0, next: 'x', winner: null })
  })

  it('hands a player absent past the grace a loss by forfeit; both gone at once is abandoned', () => {
    const started = ok(mustCreate(ticTacToe, setup), mark('x', 4)).match
    const gone = ok(started, absent('x'))
    expect(gone.event).toEqual({ kind: 'forfeit', player: 'x', winner: 'o' })
    expect(resultOf(ticTacToe, gone.match)).toEqual({
      reason: 'forfeit',
      winner: 'o',
      placements: [
        { playerId: 'o', team: 1, place: 1 },
        { playerId: 'x', team: 0, place: 2 },
      ],
    })
    expect(refusedWith(started, absent('zed'))).toBe('not_a_player')
    const both = ok(started, { kind: 'abandon', tick: 0 })
    expect(both.event).toEqual({ kind: 'abandoned' })
    expect(resultOf(ticTacToe, both.match)).toMatchObject({ reason: 'abandoned', winner: null })
  })

  it('an admin’s end cancels it with no code of its own, and the log still replays', () => {
    const { match, records } = play([4, 0])
    const placements = setup.roster.map((p) => ({ ...p, place: 1 }))
    const out = step(ticTacToe, match, { kind: 'end', tick: 5000, placements })
    if (isRuleError(out) || out.record === null) throw new Error('the end was refused')
    expect(resultOf(ticTacToe, out.match)).toEqual({
      reason: 'cancelled',
      winner: null,
      placements,
    })
    expect(replay(ticTacToe, setup, [...records, out.record])).toEqual(out.match)
  })
})

// ---------------------------------------------------------------------------------------------
// Properties over random inputs, as test/core/rules/engine.test.ts runs them for the shipped rules.

/** `turn`: whoever is to move when the input comes, so that most games play to an end. */
const playerArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant('turn') },
  fc.constantFrom('x', 'o', 'stranger'),
)
const actionArb: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.nat(8).map((cell) => ({ type: 'action', action: 'mark', cell })) },
  fc.constantFrom(
    { action: 'mark', cell: 9 },
    { action: 'mark', cell: '4' },
    { action: 'mark', cell: 4, extra: 1 },
    { type: 'other', action: 'mark', cell: 4 },
  ),
  fc.anything({ maxDepth: 2 }),
)
const CANCELLED = setup.roster.map((p) => ({ ...p, place: 1 }))

type Op = { kind: Input['kind']; player?: string; action?: unknown }

/** Mostly marks; now and then presence, a tick, both players leaving, an admin's end. */
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 100,
    arbitrary: fc.record({
      kind: fc.constant('action' as const),
      player: playerArb,
      action: actionArb,
    }),
  },
  ...(['absent', 'return', 'connect'] as const).map((kind) => ({
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant(kind), player: playerArb }),
  })),
  ...(['tick', 'abandon', 'end'] as const).map((kind) => ({
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant(kind) }),
  })),
)

/**
 * Inputs from ops: `turn` becomes the player in turn as the game goes, and ticks (milliseconds,
 * for event-driven rules) mostly grow and sometimes go back (which the engine refuses).
 */
function inputsFor(s: GameSetup, ops: [Op, number][]): Input[] {
  let match = mustCreate(ticTacToe, s)
  let tick = 0
  return ops.map(([op, dt]) => {
    tick = Math.max(0, tick + dt)
    const player = op.player === 'turn' ? match.game.players[match.game.turn]?.playerId : op.player
    const input = {
      ...op,
      tick,
      ...(op.player === undefined ? {} : { player: player ?? 'x' }),
      ...(op.kind === 'end' ? { placements: CANCELLED } : {}),
    } as Input
    const out = step(ticTacToe, match, input)
    if (!isRuleError(out)) match = out.match
    return input
  })
}

const gameArb = fc
  .record({
    setup: fc.record({
      roster: fc.constant(roster('x', 'o')),
      seed: fc.string({ minLength: 1, maxLength: 16 }),
      options: fc.constantFrom(undefined, { first: 'roster' }, { first: 'random' }),
    }),
    ops: fc.array(fc.tuple(opArb, fc.integer({ min: -1, max: 3000 })), {
      maxLength: 40,
      size: 'max',
    }),
  })
  .map(({ setup: s, ops }) => ({ setup: s, inputs: inputsFor(s, ops) }))

/** Whether player index `who` holds a whole line of `board`. */
const hasLine = (board: (number | null)[], who: number): boolean =>
  [
    [0, 1, 2],
    [3, 4, 5],
    [6, 7, 8],
    [0, 3, 6],
    [1, 4, 7],
    [2, 5, 8],
    [0, 4, 8],
    [2, 4, 6],
  ].some((line) => line.every((i) => board[i] === who))

describe('tic-tac-toe example properties', () => {
  it('generates games that reach every ending, so the properties below cover them all', () => {
    const endings = new Set<string>()
    for (const { setup: s, inputs } of fc.sample(gameArb, { numRuns: 1000, seed: 1 })) {
      const r = resultOf(ticTacToe, runLive(ticTacToe, mustCreate(ticTacToe, s), inputs).match)
      endings.add(
        r === null ? 'running' : r.reason === 'finished' && r.winner === null ? 'draw' : r.reason,
      )
    }
    expect([...endings].sort()).toEqual([
      'abandoned',
      'cancelled',
      'draw',
      'finished',
      'forfeit',
      'running',
    ])
  })

  it('replays its log into the live state, and the same seed gives the same game', () => {
    fc.assert(
      fc.property(gameArb, ({ setup: s, inputs }) => {
        // runLive deep-freezes every match, so a rule that mutated its state would throw here.
        const live = expectDeterministic(ticTacToe, s, inputs)
        expect(roundTrip(live.match)).toEqual(live.match) // plain JSON
      }),
      { numRuns: 300 },
    )
  })

  it('keeps its invariants: alternating marks, a result exactly when the game ended, nothing after', () => {
    fc.assert(
      fc.property(gameArb, ({ setup: s, inputs }) => {
        let match = mustCreate(ticTacToe, s)
        for (const input of inputs) {
          const out = step(ticTacToe, match, input)
          if (resultOf(ticTacToe, match) !== null) {
            // (The engine checks that time does not go back before anything else.)
            const code = input.tick < match.tick ? 'invalid_tick' : 'game_over'
            expect(isRuleError(out) && out.error.code).toBe(code)
            continue
          }
          if (isRuleError(out)) continue
          match = out.match
          const { board, players, turn, winner, ended } = match.game
          const [xs = 0, os = 0] = [0, 1].map((who) => board.filter((c) => c === who).length)
          expect(xs - os === 0 || xs - os === 1).toBe(true) // X first, then in turn
          const result = resultOf(ticTacToe, match)
          if (result === null) {
            expect(ended).toBeNull()
            expect(turn).toBe(xs > os ? 1 : 0)
            expect(hasLine(board, 0) || hasLine(board, 1) || !board.includes(null)).toBe(false)
            continue
          }
          expect(result.placements.map((p) => p.playerId).sort()).toEqual(['o', 'x'])
          // One winner placed alone at the top, or nobody's win and both 1st.
          const first = result.placements.filter((p) => p.place === 1).map((p) => p.playerId)
          expect(first.sort()).toEqual(result.winner === null ? ['o', 'x'] : [winner])
          if (result.reason === 'finished') {
            const w = players.findIndex((p) => p.playerId === result.winner)
            // A win is a line of the winner's; a draw, a full board.
            expect(w === -1 ? !board.includes(null) : hasLine(board, w)).toBe(true)
          }
        }
      }),
      { numRuns: 300 },
    )
  })

  it('logs only what changed the game: presence inputs it has no hook for leave no record', () => {
    fc.assert(
      fc.property(gameArb, ({ setup: s, inputs }) => {
        const live = runLive(ticTacToe, mustCreate(ticTacToe, s), inputs)
        for (const record of live.records as LogRecord<TttEvent>[]) {
          expect(['action', 'absent', 'abandon', 'end']).toContain(record.input.kind)
          expect(record.event).not.toBeNull()
        }
      }),
      { numRuns: 100 },
    )
  })
})
