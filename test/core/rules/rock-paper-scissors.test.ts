import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { viewRecord } from '../../../workers/core/rules/engine.ts'
import type { GameSetup, Input, LogRecord, MatchState } from '../../../workers/core/rules/index.ts'
import {
  createMatch,
  getRules,
  isRuleError,
  optionsRefusal,
  replay,
  resultOf,
  step,
} from '../../../workers/core/rules/index.ts'
import type {
  RpsEvent,
  RpsPlayer,
  RpsMove,
  RpsState,
  RpsView,
} from '../../../workers/core/rules/rock-paper-scissors.ts'
import { rockPaperScissors as rps } from '../../../workers/core/rules/rock-paper-scissors.ts'
import {
  accepted,
  deepFreeze,
  expectDeterministic,
  mustCreate,
  refusalCode,
  roster,
  roundTrip,
  runLive,
} from './helpers.ts'

/**
 * rock-paper-scissors through the engine, as a GameSession runs it. The module exists to exercise
 * hidden information per event, so most of the weight is on what each player may see.
 */

type Match = MatchState<RpsState>

const MOVES: readonly RpsMove[] = ['rock', 'paper', 'scissors']
/** Any move, as it would appear in JSON. Player ids in these tests never look like one. */
const ANY_MOVE = /"(rock|paper|scissors)"/

const move = (player: string, m: string, tick = 0): Input => ({
  kind: 'action',
  player,
  tick,
  action: { type: 'action', move: m },
})
const connect = (player: string, tick = 0): Input => ({ kind: 'connect', player, tick })
const absent = (player: string, tick = 0): Input => ({ kind: 'absent', player, tick })
const tick = (t: number): Input => ({ kind: 'tick', tick: t })

/** `view` as the rules type it: what the registry hands out returns `unknown`. */
const viewOf = (state: RpsState, player: string) => rps.view(state, player) as RpsView

const ok = (match: Match, input: Input) => accepted(rps, match, input)
const refusedWith = (match: Match, input: Input) => refusalCode(rps, match, input)

const setupOf = (options?: unknown): GameSetup => ({
  roster: roster('a', 'b'),
  seed: 'rps',
  ...(options === undefined ? {} : { options }),
})

/** A game of a and b, both connected at tick 0: its first round ends at `roundSeconds` s. */
function started(options?: unknown): Match {
  let match = mustCreate(rps, setupOf(options))
  match = ok(match, connect('a', 0)).match
  return ok(match, connect('b', 0)).match
}

/** Plays one round by moves: a then b, at `at` (a) and `at + 1` (b). */
function playRound(match: Match, ma: RpsMove, mb: RpsMove, at = 0) {
  const first = ok(match, move('a', ma, at))
  return ok(first.match, move('b', mb, at + 1))
}

/** A tick that must change nothing: not logged, and the very same match back. */
function idleTick(match: Match, t: number): void {
  const out = step(rps, match, tick(t))
  if (isRuleError(out)) throw new Error(`refused: ${out.error.code}`)
  expect(out.record).toBeNull()
  expect(out.match).toBe(match)
}

describe('rock-paper-scissors', () => {
  it('starts with no wins, both awaited, and no clock', () => {
    const match = mustCreate(rps, setupOf())
    expect(match.game).toEqual({
      rounds: 3,
      roundTicks: 30_000,
      players: [
        { playerId: 'a', team: 0, wins: 0, move: null },
        { playerId: 'b', team: 1, wins: 0, move: null },
      ],
      played: 0,
      idleRounds: 0,
      idleEndsOnWins: true,
      awaiting: ['a', 'b'],
      roundEndsAt: null,
      winner: null,
      ended: null,
    })
    expect(resultOf(rps, match)).toBeNull()
    expect(rps.nextTick!(match.game)).toBeNull()
    expect(getRules('rock-paper-scissors')).toBe(rps)
  })

  it('checks its options, each bad one refused as invalid_options, and the roster size', () => {
    const accepted: [unknown, number, number][] = [
      [undefined, 3, 30_000],
      [null, 3, 30_000],
      [{}, 3, 30_000],
      [{ rounds: 1 }, 1, 30_000],
      [{ rounds: 99 }, 99, 30_000],
      [{ roundSeconds: 5 }, 3, 5_000],
      [{ rounds: 7, roundSeconds: 3600 }, 7, 3_600_000],
    ]
    for (const [options, rounds, roundTicks] of accepted) {
      expect(mustCreate(rps, setupOf(options)).game).toMatchObject({ rounds, roundTicks })
      expect(optionsRefusal(rps, roster('a', 'b'), options)).toBeNull()
    }
    const refused: unknown[] = [
      { rounds: 0 },
      { rounds: 2 },
      { rounds: 4 },
      { rounds: 100 },
      { rounds: 101 },
      { rounds: -1 },
      { rounds: 1.5 },
      { rounds: '3' },
      { rounds: null },
      { roundSeconds: 4 },
      { roundSeconds: 3601 },
      { roundSeconds: 10.5 },
      { roundSeconds: '30' },
      { roundSeconds: null },
      { rounds: 3, best: 3 },
      { turnSeconds: 30 },
      [],
      [3],
      5,
      'rounds',
      true,
    ]
    for (const options of refused) {
      const out = createMatch(rps, setupOf(options))
      expect(isRuleError(out) && out.error.code, JSON.stringify(options)).toBe('invalid_options')
      expect(optionsRefusal(rps, roster('a', 'b'), options)).toEqual(
        isRuleError(out) ? out.error.message : null,
      )
    }
    for (const bad of [roster('solo'), roster('a', 'b', 'c'), []]) {
      const out = createMatch(rps, { roster: bad, seed: 's' })
      expect(isRuleError(out) && out.error.code).toBe('invalid_setup')
    }
  })

  it('parses exactly one move, strictly, and parsing is idempotent', () => {
    for (const m of MOVES) {
      const parsed = rps.parseAction({ type: 'action', move: m })
      expect(parsed).toEqual({ move: m })
      expect(rps.parseAction(parsed)).toEqual(parsed)
      const named = rps.parseAction({ type: 'action', move: m, round: 100 })
      expect(named).toEqual({ move: m, round: 100 })
      expect(rps.parseAction(named)).toEqual(named)
      expect(rps.parseAction({ move: m })).toEqual({ move: m })
    }
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.record(
            { type: fc.constantFrom('action', 'chat', 1), move: fc.constantFrom(...MOVES, 'x') },
            { requiredKeys: [] },
          ),
        ),
        (raw) => {
          const parsed = rps.parseAction(raw)
          if (!isRuleError(parsed)) expect(rps.parseAction(roundTrip(parsed))).toEqual(parsed)
          else expect(parsed.error.code).toBe('invalid_action')
        },
      ),
    )
  })

  // Written out, not computed by the module: [a's move, b's move, the round's winner].
  const TABLE: [RpsMove, RpsMove, 'a' | 'b' | null][] = [
    ['rock', 'scissors', 'a'],
    ['scissors', 'paper', 'a'],
    ['paper', 'rock', 'a'],
    ['scissors', 'rock', 'b'],
    ['paper', 'scissors', 'b'],
    ['rock', 'paper', 'b'],
    ['rock', 'rock', null],
    ['paper', 'paper', null],
    ['scissors', 'scissors', null],
  ]

  it.each(TABLE)('a plays %s, b plays %s: the round goes to %s', (ma, mb, winner) => {
    const start = started()
    const first = ok(start, move('a', ma, 1_000))
    expect(first.event).toEqual({ kind: 'chosen', round: 1, player: 'a', move: ma })
    const second = ok(first.match, move('b', mb, 2_000))
    expect(second.event).toEqual({
      kind: 'round',
      round: 1,
      moves: { a: ma, b: mb },
      timedOut: [],
      winner,
      wins: { a: winner === 'a' ? 1 : 0, b: winner === 'b' ? 1 : 0 },
      matchWinner: null,
      ended: null,
      endsAt: 32_000, // the next round runs from the deciding move
    })
    expect(second.match.game).toMatchObject({ played: 1, roundEndsAt: 32_000 })
    expect(second.match.game.players.map((p) => p.move)).toEqual([null, null])
    // Who moves first does not matter.
    const reversed = ok(ok(start, move('b', mb, 1_000)).match, move('a', ma, 2_000))
    expect(reversed.event).toEqual(second.event)
  })

  it('takes the match at (rounds + 1) / 2 round wins, draws not counting', () => {
    let match = started({ rounds: 3 })
    match = playRound(match, 'rock', 'scissors', 1_000).match // a 1–0
    match = playRound(match, 'rock', 'paper', 2_000).match // 1–1
    const draw = playRound(match, 'paper', 'paper', 3_000)
    expect(draw.event).toMatchObject({ winner: null, wins: { a: 1, b: 1 }, ended: null })
    const last = playRound(draw.match, 'scissors', 'paper', 4_000)
    expect(last.event).toEqual({
      kind: 'round',
      round: 4,
      moves: { a: 'scissors', b: 'paper' },
      timedOut: [],
      winner: 'a',
      wins: { a: 2, b: 1 },
      matchWinner: 'a',
      ended: 'finished',
      endsAt: null,
    })
    expect(rps.nextTick!(last.match.game)).toBeNull()
    expect(resultOf(rps, last.match)).toEqual({
      reason: 'finished',
      winner: 'a',
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 2 },
        { playerId: 'b', team: 1, place: 2, score: 1 },
      ],
    })
    expect(refusedWith(last.match, move('a', 'rock', 5_000))).toBe('game_over')

    // Best of 1: the first won round ends it; best of 5 needs three. The loser is placed 2nd.
    const one = playRound(started({ rounds: 1 }), 'rock', 'paper')
    expect(one.event).toMatchObject({ matchWinner: 'b', ended: 'finished' })
    expect(resultOf(rps, one.match)?.placements.map((p) => [p.playerId, p.place])).toEqual([
      ['b', 1],
      ['a', 2],
    ])
    let five = started({ rounds: 5 })
    for (let i = 0; i < 2; i++) five = playRound(five, 'paper', 'rock', i * 10).match
    expect(resultOf(rps, five)).toBeNull()
    expect(playRound(five, 'paper', 'rock', 100).event).toMatchObject({
      wins: { a: 3, b: 0 },
      matchWinner: 'a',
    })
  })

  it('refuses without any change: a second move, strangers, malformed payloads, too late, the end', () => {
    const match = ok(started({ roundSeconds: 10 }), move('a', 'rock', 1_000)).match
    expect(refusedWith(match, move('a', 'rock', 2_000))).toBe('already_chosen')
    expect(refusedWith(match, move('a', 'paper', 2_000))).toBe('already_chosen')
    expect(refusedWith(match, move('zed', 'rock', 2_000))).toBe('not_a_player')
    const payloads: unknown[] = [
      null,
      'rock',
      42,
      ['rock'],
      {},
      { type: 'action' },
      { move: 'lizard' },
      { move: 'Rock' },
      { move: 0 },
      { move: ['rock'] },
      { move: { rock: true } },
      { type: 'chat', move: 'rock' },
      { type: 'action', move: 'rock', extra: 1 },
      { move: 'rock', round: 0 },
      { move: 'rock', round: 101 },
      { move: 'rock', round: 1.5 },
      { move: 'rock', round: '1' },
      { move: 'rock', round: null },
      { action: 'rock' },
      { move: 'rock', x: 'y'.repeat(100_000) },
      new Date(),
    ]
    for (const action of payloads) {
      expect(refusedWith(match, { kind: 'action', player: 'b', tick: 2_000, action })).toBe(
        'invalid_action',
      )
    }
    // A move naming a round not in play: one over (sent before its deadline, come after), or ahead.
    const roundOne = ok(match, move('b', 'paper', 2_000)).match
    const forRound = (round: number): Input => ({
      kind: 'action',
      player: 'a',
      tick: 3_000,
      action: { type: 'action', move: 'rock', round },
    })
    expect(refusedWith(roundOne, forRound(1))).toBe('too_late')
    expect(refusedWith(roundOne, forRound(3))).toBe('wrong_round')
    expect(ok(roundOne, forRound(2)).event).toEqual({
      kind: 'chosen',
      round: 2,
      player: 'a',
      move: 'rock',
    })
    // The round ends at 10 s: a move at or after it is refused even before the tick is applied.
    expect(refusedWith(match, move('b', 'paper', 10_000))).toBe('too_late')
    expect(ok(match, move('b', 'paper', 9_999)).event).toMatchObject({ kind: 'round', winner: 'b' })
    expect(refusedWith(match, connect('a', 2_000))).toBe('already_joined')
    expect(refusedWith(match, connect('zed', 2_000))).toBe('not_a_player')
    expect(refusedWith(match, absent('zed', 2_000))).toBe('not_a_player')

    const over = playRound(started({ rounds: 1 }), 'rock', 'scissors').match
    for (const input of [
      move('a', 'rock', 5),
      move('b', 'rock', 5),
      move('zed', 'rock', 5),
      connect('a', 5),
      absent('b', 5),
      tick(1_000_000),
      { kind: 'abandon', tick: 5 } as Input,
    ]) {
      expect(refusedWith(over, input)).toBe('game_over')
    }
    // The rules refuse on their own too, not only through the engine.
    const ctx = { player: 'b', tick: 5, rng: { uint32: () => 0 } } as never
    const direct = [
      rps.apply(over.game, { move: 'rock' }, ctx),
      rps.onAbsent(over.game, ctx),
      rps.onConnect!(over.game, ctx),
    ]
    for (const out of direct) expect(isRuleError(out) && out.error.code).toBe('game_over')
  })

  it('ends at the 100-round cap: more round wins wins, equal wins is a draw', () => {
    // Best of 99 needs 50 wins; one win and 99 draws reach the cap first.
    let match = started({ rounds: 99 })
    match = playRound(match, 'rock', 'scissors', 0).match
    for (let r = 2; r < 100; r++) match = playRound(match, 'paper', 'paper', r * 10).match
    expect(match.game).toMatchObject({ played: 99, ended: null })
    const last = playRound(match, 'paper', 'paper', 2_000)
    expect(last.event).toMatchObject({
      round: 100,
      winner: null,
      wins: { a: 1, b: 0 },
      matchWinner: 'a',
      ended: 'finished',
      endsAt: null,
    })
    expect(resultOf(rps, last.match)).toEqual({
      reason: 'finished',
      winner: 'a',
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 1 },
        { playerId: 'b', team: 1, place: 2, score: 0 },
      ],
    })

    let drawn = started({ rounds: 99 })
    for (let r = 1; r <= 100; r++) {
      const out = playRound(drawn, 'rock', 'rock', r * 10)
      expect(out.event).toMatchObject({ round: r, ended: r === 100 ? 'finished' : null })
      drawn = out.match
    }
    expect(resultOf(rps, drawn)).toEqual({
      reason: 'finished',
      winner: null,
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 0 },
        { playerId: 'b', team: 1, place: 1, score: 0 },
      ],
    })
    expect(refusedWith(drawn, move('a', 'rock', 5_000))).toBe('game_over')
  })
})

describe('rock-paper-scissors round clock', () => {
  it('does not run before both players connected; moves are accepted meanwhile', () => {
    let match = mustCreate(rps, setupOf({ roundSeconds: 10 }))
    idleTick(match, 1_000_000)
    const a = ok(match, connect('a', 1_000_000))
    expect(a.event).toEqual({ kind: 'joined', player: 'a', awaiting: ['b'], endsAt: null })
    match = a.match
    expect(rps.nextTick!(match.game)).toBeNull()
    idleTick(match, 2_000_000)
    // A whole round played before b's client connected: no deadline for the next one yet.
    const round = playRound(match, 'rock', 'paper', 2_000_000)
    expect(round.event).toMatchObject({ winner: 'b', endsAt: null })
    match = ok(round.match, move('a', 'paper', 2_500_000)).match
    idleTick(match, 3_000_000)
    expect(refusedWith(match, connect('a', 3_000_000))).toBe('already_joined')
    // The last one in starts the clock for the round in play, a's move kept.
    const b = ok(match, connect('b', 3_000_000))
    expect(b.event).toEqual({ kind: 'joined', player: 'b', awaiting: [], endsAt: 3_010_000 })
    expect(b.match.game).toMatchObject({ awaiting: [], roundEndsAt: 3_010_000 })
    expect(rps.nextTick!(b.match.game)).toBe(3_010_000)
    expect(b.match.game.players[0]?.move).toBe('paper')
    expect(refusedWith(b.match, connect('b', 3_000_001))).toBe('already_joined')
  })

  it('gives the round to the only player who chose, at the deadline and not before', () => {
    const match = ok(started({ roundSeconds: 10 }), move('b', 'scissors', 3_000)).match
    expect(rps.nextTick!(match.game)).toBe(10_000)
    idleTick(match, 9_999)
    const due = ok(match, tick(10_000))
    expect(due.event).toEqual({
      kind: 'round',
      round: 1,
      moves: { a: null, b: 'scissors' },
      timedOut: ['a'],
      winner: 'b',
      wins: { a: 0, b: 1 },
      matchWinner: null,
      ended: null,
      endsAt: 20_000,
    })
    // A late alarm does not stretch the game: the next round runs from the deadline.
    const late = ok(match, tick(17_500))
    expect(late.event).toEqual(due.event)
    expect(late.match.game.roundEndsAt).toBe(20_000)
    // Once applied, the deadline that ran out is due no more.
    expect(rps.nextTick!(late.match.game)).toBe(20_000)
    idleTick(late.match, 19_999)
  })

  it('makes a round nobody chose a draw, and two in a row end the game abandoned', () => {
    let match = started({ roundSeconds: 5 })
    const first = ok(match, tick(5_000))
    expect(first.event).toEqual({
      kind: 'round',
      round: 1,
      moves: { a: null, b: null },
      timedOut: ['a', 'b'],
      winner: null,
      wins: { a: 0, b: 0 },
      matchWinner: null,
      ended: null,
      endsAt: 10_000,
    })
    match = first.match
    expect(match.game.idleRounds).toBe(1)
    const second = ok(match, tick(10_000))
    expect(second.event).toMatchObject({
      round: 2,
      timedOut: ['a', 'b'],
      winner: null,
      matchWinner: null,
      ended: 'abandoned',
      endsAt: null,
    })
    expect(rps.nextTick!(second.match.game)).toBeNull()
    expect(resultOf(rps, second.match)).toEqual({
      reason: 'abandoned',
      winner: null,
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 0 },
        { playerId: 'b', team: 1, place: 1, score: 0 },
      ],
    })
  })

  it('counts only double time-outs in a row: a round with a move in between resets the count', () => {
    let match = started({ roundSeconds: 5 })
    match = ok(match, tick(5_000)).match // nobody: 1
    match = ok(match, move('a', 'rock', 6_000)).match
    match = ok(match, tick(10_000)).match // a alone: the count starts again
    expect(match.game).toMatchObject({ idleRounds: 0, played: 2 })
    match = ok(match, tick(15_000)).match // nobody: 1
    expect(match.game).toMatchObject({ idleRounds: 1, ended: null })
    match = playRound(match, 'rock', 'rock', 16_000).match // a draw by play resets it too
    expect(match.game).toMatchObject({ idleRounds: 0, ended: null })
    match = ok(match, tick(21_001)).match
    // a won a round, b none: the idle end is a's win on the rounds played, not a wiped score.
    const end = ok(match, tick(26_001))
    expect(end.match.game).toMatchObject({ ended: 'finished', winner: 'a' })
    expect(end.event).toMatchObject({ matchWinner: 'a', ended: 'finished' })
    expect(resultOf(rps, end.match)).toMatchObject({ reason: 'finished', winner: 'a' })
  })

  it('a player behind cannot wipe the score by going idle while the leader is away: two idle rounds end on the wins so far; a game from before the rule ends abandoned, as its log did', () => {
    let match = started({ roundSeconds: 5, rounds: 5 })
    match = playRound(match, 'rock', 'scissors', 1_000).match // a 1-0
    match = playRound(match, 'rock', 'scissors', 2_000).match // a 2-0
    // a drops; b, behind, waits without moving for two rounds.
    const before = match
    // Round 3's deadline is 5 s after round 2's deciding move (2,001), round 4's 5 s after that.
    match = ok(match, tick(7_001)).match
    const end = ok(match, tick(12_001))
    expect(end.event).toMatchObject({ kind: 'round', matchWinner: 'a', ended: 'finished' })
    expect(resultOf(rps, end.match)).toMatchObject({ reason: 'finished', winner: 'a' })
    // The absence that would have come after changes nothing.
    expect(refusedWith(end.match, absent('a', 60_000))).toBe('game_over')
    const { idleEndsOnWins: _, ...old } = before.game
    let oldMatch: typeof before = { ...before, game: old }
    oldMatch = ok(oldMatch, tick(7_001)).match
    expect(ok(oldMatch, tick(12_001)).match.game).toMatchObject({
      ended: 'abandoned',
      winner: null,
    })
  })
})

describe('rock-paper-scissors absences', () => {
  it('hands the other player a win by forfeit, a pending move staying hidden', () => {
    const match = ok(started(), move('a', 'rock', 1_000)).match
    const gone = ok(match, absent('b', 2_000))
    expect(gone.event).toEqual({ kind: 'forfeit', player: 'b', winner: 'a', ended: 'forfeit' })
    expect(rps.nextTick!(gone.match.game)).toBeNull()
    expect(resultOf(rps, gone.match)).toEqual({
      reason: 'forfeit',
      winner: 'a',
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 0 },
        { playerId: 'b', team: 1, place: 2, score: 0 },
      ],
    })
    // The round never resolved: b is never shown a's move.
    expect(JSON.stringify(rps.view(gone.match.game, 'b'))).not.toMatch(ANY_MOVE)
    expect(refusedWith(gone.match, absent('a', 3_000))).toBe('game_over')
    expect(refusedWith(gone.match, absent('b', 3_000))).toBe('game_over')

    // The one who chose can forfeit too.
    expect(ok(match, absent('a', 2_000)).event).toMatchObject({ winner: 'b', ended: 'forfeit' })
  })

  it('ends abandoned, with no winner, when both go at once', () => {
    const setup = setupOf()
    const live = runLive(rps, mustCreate(rps, setup), [
      connect('a', 0),
      move('b', 'paper', 100),
      { kind: 'abandon', tick: 120_000 },
    ])
    expect(live.records.at(-1)?.event).toEqual({
      kind: 'abandoned',
      players: ['a', 'b'],
      ended: 'abandoned',
    })
    expect(resultOf(rps, live.match)).toEqual({
      reason: 'abandoned',
      winner: null,
      placements: [
        { playerId: 'a', team: 0, place: 1, score: 0 },
        { playerId: 'b', team: 1, place: 1, score: 0 },
      ],
    })
    expect(replay(rps, setup, live.records)).toEqual(live.match)
  })
})

describe('rock-paper-scissors hidden information', () => {
  it('shows a pending move to its player alone, in the state and in its event', () => {
    const start = started()
    const { match, event } = ok(start, move('a', 'scissors', 1_000))
    deepFreeze(event)
    expect(rps.viewEvent!(event, 'a')).toEqual({
      kind: 'chosen',
      round: 1,
      player: 'a',
      move: 'scissors',
    })
    expect(rps.viewEvent!(event, 'b')).toEqual({ kind: 'chosen', round: 1, player: 'a' })
    expect(rps.viewEvent!(event, 'zed')).toEqual({ kind: 'chosen', round: 1, player: 'a' })
    expect(event).toEqual({ kind: 'chosen', round: 1, player: 'a', move: 'scissors' })

    expect(viewOf(match.game, 'a').players).toEqual([
      { playerId: 'a', team: 0, wins: 0, chosen: true, move: 'scissors' },
      { playerId: 'b', team: 1, wins: 0, chosen: false, move: null },
    ])
    expect(viewOf(match.game, 'b').players).toEqual([
      { playerId: 'a', team: 0, wins: 0, chosen: true, move: null },
      { playerId: 'b', team: 1, wins: 0, chosen: false, move: null },
    ])
    expect(JSON.stringify(rps.view(match.game, 'b'))).not.toMatch(ANY_MOVE)
    // The log a player is served: the other's action is left out, and so is the move.
    const record: LogRecord<RpsEvent> = { seq: 3, input: move('a', 'scissors', 1_000), event }
    expect(JSON.stringify(viewRecord(rps, record, 'b'))).not.toMatch(ANY_MOVE)
    expect(viewRecord(rps, record, 'a')).toEqual(record)
    // Once the round resolves, both moves are public.
    const round = ok(match, move('b', 'rock', 2_000)).event
    expect(rps.viewEvent!(round, 'b')).toEqual(round)
    expect(rps.viewEvent!(round, 'a')).toEqual(round)
  })
})

// ---------------------------------------------------------------------------------------------
// Properties over random games: moves (valid and junk) from both players and a stranger,
// connections, absences, ticks at deadlines and between them, inputs back in time.

type Op =
  | { kind: 'move'; who: number; payload: number; dt: number; back: boolean }
  | { kind: 'connect' | 'absent'; who: number; dt: number; back: boolean }
  | { kind: 'deadline' | 'tick' | 'abandon'; dt: number; back: boolean }

const IDS = ['a', 'b', 'zed']
const PAYLOADS: unknown[] = [
  { type: 'action', move: 'rock' },
  { move: 'paper' },
  { type: 'action', move: 'scissors' },
  { move: 'lizard' },
  { type: 'chat', move: 'rock' },
  { move: 'rock', extra: 1 },
  'rock',
  null,
]

const whoArb = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 1) }, fc.constant(2))
const dtArb = fc.oneof(
  fc.constant(0),
  fc.integer({ min: 0, max: 2_000 }),
  fc.integer({ min: 0, max: 8_000 }),
)
const backArb = fc.oneof({ weight: 15, arbitrary: fc.constant(false) }, fc.constant(true))
const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 12,
    arbitrary: fc.record({
      kind: fc.constant('move' as const),
      who: whoArb,
      payload: fc.oneof(
        { weight: 6, arbitrary: fc.integer({ min: 0, max: 2 }) },
        fc.nat(PAYLOADS.length - 1),
      ),
      dt: dtArb,
      back: backArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('connect' as const),
      who: whoArb,
      dt: dtArb,
      back: backArb,
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constantFrom('deadline' as const, 'tick' as const),
      dt: dtArb,
      back: backArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constantFrom('absent' as const),
      who: whoArb,
      dt: dtArb,
      back: backArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('abandon' as const), dt: dtArb, back: backArb }),
  },
)

const gameArb = fc.record({
  seed: fc.string({ minLength: 1, maxLength: 12 }),
  rounds: fc.constantFrom(1, 3, 5),
  /** Both players connect first, so the clock runs from the start (else it waits for them). */
  connected: fc.boolean(),
  ops: fc.array(opArb, { maxLength: 60, size: 'max' }),
})

interface Driven {
  setup: GameSetup
  inputs: Input[]
  /** Every accepted input that was logged: the match it produced and its record. */
  steps: { match: Match; record: LogRecord<RpsEvent> }[]
  match: Match
}

/** Turns ops into inputs against the live match (a deadline op ticks at `nextTick`) and runs them. */
function drive({
  seed,
  rounds,
  connected,
  ops,
}: {
  seed: string
  rounds: number
  connected: boolean
  ops: Op[]
}): Driven {
  const setup: GameSetup = { roster: roster('a', 'b'), seed, options: { rounds, roundSeconds: 5 } }
  let match = deepFreeze(mustCreate(rps, setup))
  let clock = 0
  const inputs: Input[] = []
  const steps: Driven['steps'] = []
  const first: Op[] = connected
    ? [0, 1].map((who) => ({ kind: 'connect', who, dt: 0, back: false }))
    : []
  for (const op of [...first, ...ops]) {
    clock += op.dt
    const at = op.back ? Math.max(0, clock - 3_000) : clock
    let input: Input
    switch (op.kind) {
      case 'move':
        input = { kind: 'action', player: IDS[op.who]!, tick: at, action: PAYLOADS[op.payload] }
        break
      case 'connect':
      case 'absent':
        input = { kind: op.kind, player: IDS[op.who]!, tick: at }
        break
      case 'deadline': {
        // As the session's alarm does: the deadline, or now if it is already past.
        const due = Math.max(rps.nextTick!(match.game) ?? clock, match.tick)
        clock = Math.max(clock, due)
        input = tick(due)
        break
      }
      case 'tick':
        input = tick(at)
        break
      case 'abandon':
        input = { kind: 'abandon', tick: at }
        break
    }
    inputs.push(input)
    const out = step(rps, match, input)
    if (isRuleError(out)) continue
    if (out.record === null) {
      expect(out.match).toBe(match) // nothing logged, nothing changed
      continue
    }
    match = deepFreeze(out.match)
    steps.push({ match, record: deepFreeze(out.record) })
  }
  return { setup, inputs, steps, match }
}

/** `game` with player `index`'s pending move replaced by `m`. */
const withMove = (game: RpsState, index: number, m: RpsMove): RpsState => ({
  ...game,
  players: game.players.map((p, i) => (i === index ? { ...p, move: m } : p)),
})

describe('rock-paper-scissors properties', () => {
  it('generates games that reach every ending, with moves pending and rounds timed out', () => {
    const endings = new Set<string>()
    let pending = 0
    let timedOut = 0
    let decided = 0
    for (const game of fc.sample(gameArb, { numRuns: 500, seed: 7 })) {
      const { match, steps } = drive(game)
      const result = resultOf(rps, match)
      // How it ended, and by what: a double time-out's round or an abandon, a round won or a
      // forfeit.
      const last = steps.at(-1)?.record.event
      if (result && last) {
        // An idle end (a round both timed out) told from a round won by play.
        const idle = last.kind === 'round' && last.timedOut.length === 2 ? ':idle' : ''
        endings.add(
          `${result.reason}:${last.kind}${idle}:${result.winner === null ? 'none' : 'winner'}`,
        )
      }
      for (const { match: m, record } of steps) {
        if (m.game.players.some((p) => p.move !== null)) pending++
        if (record.event?.kind === 'round' && record.event.timedOut.length > 0) timedOut++
        if (record.event?.kind === 'round' && record.event.timedOut.length === 0) decided++
      }
    }
    expect([...endings].sort()).toEqual([
      'abandoned:abandoned:none',
      'abandoned:round:idle:none',
      'finished:round:idle:winner',
      'finished:round:winner',
      'forfeit:forfeit:winner',
    ])
    expect(pending).toBeGreaterThan(100)
    expect(timedOut).toBeGreaterThan(50)
    expect(decided).toBeGreaterThan(50)
  })

  it('never shows a pending move to anyone but its player, in the state, the events or the log', () => {
    fc.assert(
      fc.property(gameArb, (game) => {
        for (const { match, record } of drive(game).steps) {
          const state = match.game
          const event = record.event!
          const before = JSON.stringify({ state, record })
          // A 'chosen' event: whole for its player, without the move for everyone else.
          if (event.kind === 'chosen') {
            expect(rps.viewEvent!(event, event.player)).toEqual(event)
            for (const other of IDS.filter((id) => id !== event.player)) {
              expect(rps.viewEvent!(event, other)).toEqual({
                kind: 'chosen',
                round: event.round,
                player: event.player,
              })
            }
          } else {
            for (const id of IDS) expect(rps.viewEvent!(event, id)).toEqual(event)
          }
          state.players.forEach((p, i) => {
            if (p.move === null) return
            // At most one move is pending (the second resolves the round), and the state keeps
            // no past moves: whatever move anyone else sees would be this one.
            for (const other of IDS.filter((id) => id !== p.playerId)) {
              const theirs = rps.view(state, other)
              expect(JSON.stringify(theirs)).not.toMatch(ANY_MOVE)
              // Nor does anything else in it depend on which move it is.
              for (const m of MOVES) expect(rps.view(withMove(state, i, m), other)).toEqual(theirs)
              // Every record that left the move pending (its 'chosen', connections, the end).
              expect(JSON.stringify(rps.viewEvent!(event, other))).not.toMatch(ANY_MOVE)
              expect(JSON.stringify(viewRecord(rps, record, other))).not.toMatch(ANY_MOVE)
            }
            expect(viewOf(state, p.playerId).players[i]).toEqual({
              playerId: p.playerId,
              team: p.team,
              wins: p.wins,
              chosen: true,
              move: p.move,
            })
          })
          // Both were handed deep-frozen values; they are unchanged too.
          expect(JSON.stringify({ state, record })).toBe(before)
        }
      }),
      { numRuns: 300 },
    )
  })

  it('replays its log into the live state, and the same seed and inputs give the same game', () => {
    fc.assert(
      fc.property(gameArb, (game) => {
        const { setup, inputs, match } = drive(game)
        expect(expectDeterministic(rps, setup, inputs).match).toEqual(match)
      }),
      { numRuns: 200 },
    )
  })

  it('keeps its invariants: wins only grow, a round resolves once, nothing after the end', () => {
    fc.assert(
      fc.property(gameArb, (game) => {
        const { setup, steps } = drive(game)
        let prev = mustCreate(rps, setup).game
        for (const { match, record } of steps) {
          const state = match.game
          const event = record.event!
          expect(prev.ended).toBeNull()
          state.players.forEach((p, i) =>
            expect(p.wins).toBeGreaterThanOrEqual(prev.players[i]!.wins),
          )
          expect(state.players.filter((p) => p.move !== null).length).toBeLessThanOrEqual(1)
          if (event.kind === 'round') {
            expect(state.played).toBe(prev.played + 1)
            expect(event.round).toBe(state.played)
            // The moves revealed are the one pending before and the one that resolved it.
            for (const p of prev.players) {
              if (p.move !== null) expect(event.moves[p.playerId]).toBe(p.move)
            }
            const target = (state.rounds + 1) / 2
            if (event.ended === 'finished') {
              expect(event.matchWinner).not.toBeNull()
              if (state.idleRounds >= 2) {
                // Ended idle: on the round wins so far, the leader's.
                const other = state.players.find((p) => p.playerId !== event.matchWinner)!
                expect(event.wins[event.matchWinner!]).toBeGreaterThan(other.wins)
              } else expect(event.wins[event.matchWinner!]).toBe(target)
            }
            if (event.ended === 'abandoned') {
              const [x, y] = state.players as [RpsPlayer, RpsPlayer]
              expect(x.wins).toBe(y.wins)
            }
          } else {
            expect(state.played).toBe(prev.played)
          }
          expect(rps.nextTick!(state) === null).toBe(
            state.ended !== null || state.awaiting.length > 0,
          )
          prev = state
        }
      }),
      { numRuns: 200 },
    )
  })
})
