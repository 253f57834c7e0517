/**
 * tic-tac-toe: the worked example of docs/rules.md (tested in
 * test/core/rules/tic-tac-toe-example.test.ts; not registered, so no queue can name it).
 *
 * Two players, turn-based. The first in the roster plays X and moves first, or, with the option
 * `{ first: "random" }`, the seeded RNG draws who does. A move is
 * `{"type":"action","action":"mark","cell":4}`, cells 0–8 row by row. Three in a row wins
 * (`finished`); a full board without one is a draw (`finished`, no winner, both placed 1st).
 * A player absent past the grace period forfeits, and the other wins (`forfeit`); both gone at
 * once ends it `abandoned`.
 *
 * Refusals: `not_your_turn`, `occupied`, `not_a_player`, `invalid_action`, `game_over`.
 */
// In workers/core/rules/ these are './json.ts' and './types.ts'.
import { isPlainObject } from '../../workers/core/rules/json.ts'
import type {
  ActionContext,
  Applied,
  GameResult,
  GameSetup,
  Rng,
  RuleError,
  Rules,
} from '../../workers/core/rules/types.ts'
import { ruleError } from '../../workers/core/rules/types.ts'

/** Plain JSON, replaced (never changed in place) by every accepted input. */
export interface TttState {
  /** `players[0]` plays X and moves first. */
  players: { playerId: string; team: number }[]
  /** Cells 0–8, row by row: the index in `players` of who marked it, or null. */
  board: (number | null)[]
  /** Index in `players` of whose turn it is; -1 once the game is over. */
  turn: number
  winner: string | null
  /** Why it ended; null while it runs. */
  ended: GameResult['reason'] | null
}

export interface TttAction {
  action: 'mark'
  cell: number
}

/** Public: every player (and the log) gets these as they are. */
export type TttEvent =
  | { kind: 'mark'; player: string; cell: number; next: string | null; winner: string | null }
  | { kind: 'forfeit'; player: string; winner: string }
  | { kind: 'abandoned' }

/** Cells of the three rows, three columns and two diagonals. */
// prettier-ignore
const LINES = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]]

function init(setup: GameSetup, rng: Rng): TttState | RuleError {
  const options = setup.options ?? {}
  if (!isPlainObject(options) || Object.keys(options).some((k) => k !== 'first')) {
    return ruleError('invalid_options', 'tic-tac-toe options are { first?: "roster" | "random" }')
  }
  const first = options.first ?? 'roster'
  if (first !== 'roster' && first !== 'random') {
    return ruleError('invalid_options', 'first must be "roster" or "random"')
  }
  // The seeded RNG, never Math.random(): a replay draws the same first player.
  const swap = first === 'random' && rng.int(0, 1) === 1
  const roster = swap ? [...setup.roster].reverse() : setup.roster // a copy: inputs stay as given
  const players = roster.map(({ playerId, team }) => ({ playerId, team }))
  return { players, board: Array<number | null>(9).fill(null), turn: 0, winner: null, ended: null }
}

function parseAction(raw: unknown): TttAction | RuleError {
  if (!isPlainObject(raw)) return ruleError('invalid_action', 'an action must be an object')
  if (Object.keys(raw).some((k) => k !== 'type' && k !== 'action' && k !== 'cell')) {
    return ruleError('invalid_action', 'an action is {"action":"mark","cell":<0-8>}')
  }
  if ('type' in raw && raw.type !== 'action') {
    return ruleError('invalid_action', 'type must be "action"')
  }
  if (raw.action !== 'mark') return ruleError('invalid_action', 'the only action is "mark"')
  const { cell } = raw
  if (typeof cell !== 'number' || !Number.isInteger(cell) || cell < 0 || cell > 8) {
    return ruleError('invalid_action', 'cell must be an integer from 0 to 8')
  }
  // A fresh object of known fields: what the log stores, and parses again on replay.
  return { action: 'mark', cell }
}

function apply(
  state: TttState,
  action: TttAction,
  ctx: ActionContext,
): Applied<TttState, TttEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const me = state.players.findIndex((p) => p.playerId === ctx.player)
  if (me === -1) return ruleError('not_a_player', 'you are not in this game')
  if (me !== state.turn) {
    return ruleError('not_your_turn', `it is ${state.players[state.turn]?.playerId}'s turn`)
  }
  if (state.board[action.cell] !== null)
    return ruleError('occupied', `cell ${action.cell} is taken`)
  const board = state.board.map((c, i) => (i === action.cell ? me : c))
  const won = LINES.some((line) => line.every((i) => board[i] === me))
  const over = won || board.every((c) => c !== null)
  const turn = over ? -1 : 1 - me
  const winner = won ? ctx.player : null
  return {
    state: { ...state, board, turn, winner, ended: over ? 'finished' : null },
    event: {
      kind: 'mark',
      player: ctx.player,
      cell: action.cell,
      next: state.players[turn]?.playerId ?? null,
      winner,
    },
  }
}

/** Gone past the grace period: with two players, the other one wins by forfeit. */
function onAbsent(state: TttState, ctx: ActionContext): Applied<TttState, TttEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const me = state.players.findIndex((p) => p.playerId === ctx.player)
  if (me === -1) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  const winner = state.players[1 - me]!.playerId
  return {
    state: { ...state, turn: -1, winner, ended: 'forfeit' },
    event: { kind: 'forfeit', player: ctx.player, winner },
  }
}

/** Both gone at once: reported one by one, the first absence would hand the second a win. */
function onAbandon(state: TttState): Applied<TttState, TttEvent> {
  return {
    state: { ...state, turn: -1, winner: null, ended: 'abandoned' },
    event: { kind: 'abandoned' },
  }
}

function result(state: TttState): GameResult | null {
  if (state.ended === null) return null
  // The winner 1st and the loser 2nd; a draw (or an abandoned game) places both 1st.
  const placements = state.players
    .map(({ playerId, team }) => {
      const place = state.winner === null || state.winner === playerId ? 1 : 2
      return { playerId, team, place }
    })
    .sort((a, b) => a.place - b.place)
  return { placements, reason: state.ended, winner: state.winner }
}

/** The tic-tac-toe rules module (nothing is hidden, so `view` is the whole state). */
export const ticTacToe: Rules<TttState, TttAction, TttEvent> = {
  name: 'tic-tac-toe',
  players: { min: 2, max: 2 },
  init,
  parseAction,
  apply,
  onAbsent,
  onAbandon,
  result,
  view: (state) => state,
}
