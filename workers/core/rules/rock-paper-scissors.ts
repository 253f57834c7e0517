import { isPlainObject } from './json.ts'
import type {
  ActionContext,
  Applied,
  GameResult,
  GameSetup,
  RuleError,
  Rules,
  TickContext,
} from './types.ts'
import { intOption, optionFields } from './options.ts'
import { isRuleError, ruleError } from './types.ts'

/**
 * rock-paper-scissors: two players, simultaneous hidden moves, a match of `rounds` rounds (an odd
 * number, default 3): the first to win `(rounds + 1) / 2` of them wins the match (`finished`).
 *
 * A round: each player sends `{"type":"action","move":"rock"|"paper"|"scissors","round":n}` once
 * (`round` optional, and best sent: see the refusals). Rock
 * beats scissors, scissors beats paper, paper beats rock; equal moves are a draw, which does not
 * count toward the target. The first move of a round is kept in the state as pending (event
 * `chosen`); the second resolves the round (event `round`, both moves revealed) and the next
 * round starts at once.
 *
 * Hidden information, the reason this module exists: until its round resolves, a pending move is
 * seen by its player alone. `view` shows the opponent only that a player has chosen
 * (`chosen: true`), and `viewEvent` strips `move` from another player's `chosen` event. No other
 * event carries a pending move, and nothing counts moves by kind, so nothing else leaks it. (The
 * engine's `viewRecord` also leaves another player's action out of the log a player is served.)
 * A move whose round never resolves (the game ended by an absence first) is never revealed.
 *
 * Round clock (option `roundSeconds`, default 30): each round has a deadline, `roundSeconds`
 * after it started. Ticks are milliseconds (`tickRate` 1000) and the session wakes only at the
 * deadline (`nextTick`). The clock starts once both players have connected (`onConnect`, a
 * `joined` event each), so nobody times out while the other is still loading; moves are accepted
 * before that too. A deadline is game time: a round resolved by a move starts at that move's
 * tick, one resolved by its deadline starts at that deadline however late the alarm applied it.
 * At the deadline, one player having chosen wins the round (the other `timedOut`); neither
 * having chosen makes it a draw with both timed out, and two such rounds in a row end the game
 * (nobody is playing) on the round wins so far: more wins is a win, equal wins `abandoned` (no
 * winner, nobody rated); games from before `idleEndsOnWins` end `abandoned` either way.
 *
 * Bounds: at most `MAX_ROUNDS` (100) rounds are played, draws included, so a log cannot grow
 * without end; after the last one the player with more round wins wins (`finished`), and equal
 * wins are a draw (`finished`, no winner, both placed 1st).
 *
 * A player absent past the grace period forfeits and the other wins (`forfeit`); both gone at
 * once (`onAbandon`) ends it `abandoned`. The game ends at the first absence, so there is no
 * `onReturn`.
 *
 * Placements: the winner 1st (score: round wins), the other 2nd; a draw or an abandoned game
 * places both 1st.
 *
 * Refusals: `game_over`, `not_a_player`, `already_chosen` (a second move in the same round),
 * `too_late` (a move naming a round already over: sent before its deadline, arrived after; or a
 * move at or after the deadline before the tick that times it out was applied), `wrong_round` (a
 * move naming a round not yet in play), `invalid_action` (malformed payloads); for connections
 * `already_joined`. A move that names no round is for the round in play when it is applied, so a
 * client should name it: a session plays a passed deadline before the frame that comes after it.
 *
 * Events (all public except the `move` of another player's `chosen`):
 * - `{kind:'joined', player, awaiting, endsAt}`: a player's first connection; `awaiting` empty
 *   means the clock started, and `endsAt` is the first round's deadline (null until then).
 * - `{kind:'chosen', round, player, move}`: the first move of round `round` (1-based); others see
 *   `{kind:'chosen', round, player}`.
 * - `{kind:'round', round, moves, timedOut, winner, wins, matchWinner, ended, endsAt}`: round
 *   `round` resolved. `moves` maps each player id to their move, or null for one who timed out;
 *   `timedOut` lists those (roster order, empty when both chose); `winner` is the round's, null
 *   for a draw; `wins` maps each player id to their round wins so far; `matchWinner` and `ended`
 *   (`finished` | `abandoned`) are set when the game ended with this round; `endsAt` is the next
 *   round's deadline (null when over or before the clock starts).
 * - `{kind:'forfeit', player, winner, ended:'forfeit'}` and
 *   `{kind:'abandoned', players, ended:'abandoned'}`.
 */

export const RPS_MOVES = ['rock', 'paper', 'scissors'] as const
export type RpsMove = (typeof RPS_MOVES)[number]

export const RPS_DEFAULTS = { rounds: 3, roundSeconds: 30 } as const
const MAX_OPTION_ROUNDS = 99
const MIN_ROUND_SECONDS = 5
const MAX_ROUND_SECONDS = 3600
/** Rounds played in all, draws included: bounds the log of a match that keeps drawing. */
export const MAX_ROUNDS = 100
/** Rounds in a row in which neither player chose, after which nobody is deemed to be playing. */
const IDLE_ROUNDS_END = 2
/** Ticks are milliseconds, as in dice-race. */
const TICKS_PER_SECOND = 1000

/** What each move beats. */
const BEATS: Readonly<Record<RpsMove, RpsMove>> = {
  rock: 'scissors',
  scissors: 'paper',
  paper: 'rock',
}

export interface RpsPlayer {
  playerId: string
  team: number
  /** Rounds won. */
  wins: number
  /** This round's move, until the round resolves: secret from the other player (see `view`). */
  move: RpsMove | null
}

export interface RpsState {
  /** The match is the best of `rounds`: `(rounds + 1) / 2` round wins take it. */
  rounds: number
  /** A round's length in ticks. */
  roundTicks: number
  /** In roster order; always two. */
  players: RpsPlayer[]
  /** Rounds resolved so far, draws included; the round in play is `played + 1`. */
  played: number
  /** Rounds in a row that timed out with no move from either player. */
  idleRounds: number
  /**
   * Two idle rounds end the game on the round wins so far: more wins is a win (`finished`), only
   * equal wins `abandoned`. Set for every new match; states from before (2026-12-06) lack it and
   * end `abandoned` whatever the score, as their logs recorded.
   */
  idleEndsOnWins?: true
  /** Players still to connect before the clock starts (empty once it has). */
  awaiting: string[]
  /** The tick at which the round in play times out; null before the clock starts and once over. */
  roundEndsAt: number | null
  winner: string | null
  /** Why it ended; null while it runs. */
  ended: GameResult['reason'] | null
}

export interface RpsAction {
  move: RpsMove
  /**
   * The round the move is for (1-based), as the client saw it: a move sent just before a
   * deadline that arrives after it is refused (`too_late`) instead of counting for the next round.
   * Without it the move is for the round in play when it is applied.
   */
  round?: number
}

export type RpsEvent =
  /** `endsAt`: the first round's deadline once `awaiting` is empty (the clock started), else null. */
  | { kind: 'joined'; player: string; awaiting: string[]; endsAt: number | null }
  /** `move` is seen by `player` alone (`viewEvent`). */
  | { kind: 'chosen'; round: number; player: string; move: RpsMove }
  | {
      kind: 'round'
      round: number
      /** Player id → move; null for a player who timed out. */
      moves: Record<string, RpsMove | null>
      timedOut: string[]
      /** The round's winner; null for a draw. */
      winner: string | null
      /** Player id → rounds won so far. */
      wins: Record<string, number>
      matchWinner: string | null
      ended: 'finished' | 'abandoned' | null
      /** The next round's deadline; null once over or before the clock starts. */
      endsAt: number | null
    }
  | { kind: 'forfeit'; player: string; winner: string; ended: 'forfeit' }
  | { kind: 'abandoned'; players: string[]; ended: 'abandoned' }

/** What another player sees of a `chosen` event: that the move was made, not which. */
export interface RpsHiddenChosen {
  kind: 'chosen'
  round: number
  player: string
}

/** A player as `view` shows them: `move` is the viewer's own pending move, null for the other. */
export interface RpsPlayerView {
  playerId: string
  team: number
  wins: number
  chosen: boolean
  move: RpsMove | null
}

export type RpsView = Omit<RpsState, 'players'> & { players: RpsPlayerView[] }

export interface RpsOptions {
  /** Odd, 1 to 99; default 3. */
  rounds?: number
  /** Seconds each player has to choose in a round, 5 to 3600; default 30. */
  roundSeconds?: number
}

function init(setup: GameSetup): RpsState | RuleError {
  const options = optionFields(setup.options, 'rock-paper-scissors', ['rounds', 'roundSeconds'])
  if (isRuleError(options)) return options
  const rounds = intOption(options.rounds, 'rounds', 1, MAX_OPTION_ROUNDS, RPS_DEFAULTS.rounds)
  if (isRuleError(rounds) || rounds % 2 === 0) {
    return ruleError(
      'invalid_options',
      `rounds must be an odd integer from 1 to ${MAX_OPTION_ROUNDS}`,
    )
  }
  const roundSeconds = intOption(
    options.roundSeconds,
    'roundSeconds',
    MIN_ROUND_SECONDS,
    MAX_ROUND_SECONDS,
    RPS_DEFAULTS.roundSeconds,
  )
  if (isRuleError(roundSeconds)) return roundSeconds
  return {
    rounds,
    roundTicks: roundSeconds * TICKS_PER_SECOND,
    players: setup.roster.map(({ playerId, team }) => ({ playerId, team, wins: 0, move: null })),
    played: 0,
    idleRounds: 0,
    // A player behind who stops playing while the other is away (or waits out the other's drop)
    // must not wipe the leader's score: ending abandoned, unrated, whatever it stood at, did.
    idleEndsOnWins: true,
    awaiting: setup.roster.map(({ playerId }) => playerId),
    roundEndsAt: null,
    winner: null,
    ended: null,
  }
}

function isMove(value: unknown): value is RpsMove {
  return value === 'rock' || value === 'paper' || value === 'scissors'
}

function parseAction(raw: unknown): RpsAction | RuleError {
  if (!isPlainObject(raw)) return ruleError('invalid_action', 'an action must be an object')
  for (const key of Object.keys(raw)) {
    if (key !== 'type' && key !== 'move' && key !== 'round') {
      return ruleError('invalid_action', `unexpected field ${key.slice(0, 32)}`)
    }
  }
  if ('type' in raw && raw.type !== 'action') {
    return ruleError('invalid_action', 'type must be "action"')
  }
  if (!isMove(raw.move)) {
    return ruleError('invalid_action', 'move must be "rock", "paper" or "scissors"')
  }
  const round = raw.round
  if (round === undefined) return { move: raw.move }
  if (typeof round !== 'number' || !Number.isInteger(round) || round < 1 || round > MAX_ROUNDS) {
    return ruleError('invalid_action', `round must be an integer from 1 to ${MAX_ROUNDS}`)
  }
  // A fresh object of known fields: what the log stores, and parses again on replay.
  return { move: raw.move, round }
}

function apply(
  state: RpsState,
  action: RpsAction,
  ctx: ActionContext,
): Applied<RpsState, RpsEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const index = state.players.findIndex((p) => p.playerId === ctx.player)
  const me = state.players[index]
  if (me === undefined) return ruleError('not_a_player', 'you are not in this game')
  const inPlay = state.played + 1
  if (action.round !== undefined && action.round < inPlay) {
    return ruleError('too_late', `round ${action.round} is over; round ${inPlay} is in play`)
  }
  if (action.round !== undefined && action.round > inPlay) {
    return ruleError('wrong_round', `round ${inPlay} is in play, not round ${action.round}`)
  }
  if (me.move !== null) {
    return ruleError('already_chosen', `you already chose in round ${inPlay}`)
  }
  // Live, the session applies a due deadline before the move; this keeps a round's moves those
  // made before its deadline however the inputs come.
  if (state.roundEndsAt !== null && ctx.tick >= state.roundEndsAt) {
    return ruleError('too_late', `round ${state.played + 1} is over`)
  }
  const players = state.players.map((p, i) => (i === index ? { ...p, move: action.move } : p))
  if (players.some((p) => p.move === null)) {
    return {
      state: { ...state, players },
      event: { kind: 'chosen', round: state.played + 1, player: me.playerId, move: action.move },
    }
  }
  return resolve({ ...state, players }, ctx.tick)
}

/** The winner's index in a round of two moves (null: timed out), or -1 for a draw. */
function roundWinner(a: RpsMove | null, b: RpsMove | null): number {
  if (a === b) return -1
  if (b === null) return 0
  if (a === null) return 1
  return BEATS[a] === b ? 0 : 1
}

/**
 * Resolve the round in play with the players' moves as they stand (null: timed out). The next
 * round, if any, starts at `from`: the deciding move's tick, or the deadline that ran out.
 */
function resolve(state: RpsState, from: number): Applied<RpsState, RpsEvent> {
  const [a, b] = state.players as [RpsPlayer, RpsPlayer]
  const w = roundWinner(a.move, b.move)
  const players = state.players.map((p, i) => ({
    ...p,
    wins: i === w ? p.wins + 1 : p.wins,
    move: null,
  }))
  const played = state.played + 1
  const idle = a.move === null && b.move === null
  const idleRounds = idle ? state.idleRounds + 1 : 0
  const target = (state.rounds + 1) / 2
  let winner: string | null = null
  let ended: 'finished' | 'abandoned' | null = null
  const [x, y] = players as [RpsPlayer, RpsPlayer]
  const ahead = x.wins === y.wins ? null : x.wins > y.wins ? x.playerId : y.playerId
  if (idleRounds >= IDLE_ROUNDS_END) {
    ended = state.idleEndsOnWins && ahead !== null ? 'finished' : 'abandoned'
    winner = ended === 'finished' ? ahead : null
  } else if (players.some((p) => p.wins >= target)) {
    ended = 'finished'
    winner = players.find((p) => p.wins >= target)?.playerId ?? null
  } else if (played >= MAX_ROUNDS) {
    ended = 'finished'
    winner = ahead
  }
  const roundEndsAt = ended === null && state.awaiting.length === 0 ? from + state.roundTicks : null
  return {
    state: { ...state, players, played, idleRounds, roundEndsAt, winner, ended },
    event: {
      kind: 'round',
      round: played,
      moves: Object.fromEntries(state.players.map((p) => [p.playerId, p.move])),
      timedOut: state.players.filter((p) => p.move === null).map((p) => p.playerId),
      winner: state.players[w]?.playerId ?? null,
      wins: Object.fromEntries(players.map((p) => [p.playerId, p.wins])),
      matchWinner: winner,
      ended,
      endsAt: roundEndsAt,
    },
  }
}

/**
 * A player's first connection: no longer awaited, and once neither is, the round in play gets
 * its deadline from now. Any later connection changes nothing (refused, not logged).
 */
function onConnect(state: RpsState, ctx: ActionContext): Applied<RpsState, RpsEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  if (!state.players.some((p) => p.playerId === ctx.player)) {
    return ruleError('not_a_player', `${ctx.player} is not in this game`)
  }
  if (!state.awaiting.includes(ctx.player)) {
    return ruleError('already_joined', `${ctx.player} has connected before`)
  }
  const awaiting = state.awaiting.filter((id) => id !== ctx.player)
  const roundEndsAt = awaiting.length === 0 ? ctx.tick + state.roundTicks : null
  return {
    state: { ...state, awaiting, roundEndsAt },
    event: { kind: 'joined', player: ctx.player, awaiting, endsAt: roundEndsAt },
  }
}

/** A round whose deadline passed resolves with the moves made (see `resolve`). */
function onTick(state: RpsState, ctx: TickContext): { state: RpsState; event?: RpsEvent } {
  if (state.ended !== null || state.roundEndsAt === null || ctx.tick < state.roundEndsAt) {
    return { state }
  }
  return resolve(state, state.roundEndsAt)
}

function nextTick(state: RpsState): number | null {
  return state.ended === null ? state.roundEndsAt : null
}

/** Gone past the grace period: the other player wins by forfeit. */
function onAbsent(state: RpsState, ctx: ActionContext): Applied<RpsState, RpsEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const index = state.players.findIndex((p) => p.playerId === ctx.player)
  if (index === -1) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  const winner = state.players[1 - index]!.playerId
  return {
    state: { ...state, roundEndsAt: null, winner, ended: 'forfeit' },
    event: { kind: 'forfeit', player: ctx.player, winner, ended: 'forfeit' },
  }
}

/** Both gone at once: reported one by one, the first absence would hand the second a win. */
function onAbandon(state: RpsState): Applied<RpsState, RpsEvent> {
  return {
    state: { ...state, roundEndsAt: null, winner: null, ended: 'abandoned' },
    event: {
      kind: 'abandoned',
      players: state.players.map((p) => p.playerId),
      ended: 'abandoned',
    },
  }
}

function result(state: RpsState): GameResult | null {
  if (state.ended === null) return null
  // The winner 1st, the other 2nd; without a winner (a draw, abandoned) both 1st.
  const placements = state.players
    .map(({ playerId, team, wins }) => ({
      playerId,
      team,
      place: state.winner === null || state.winner === playerId ? 1 : 2,
      score: wins,
    }))
    .sort((x, y) => x.place - y.place)
  return { placements, reason: state.ended, winner: state.winner }
}

/** The state as `player` may see it: the other player's pending move is only `chosen: true`. */
function view(state: RpsState, player: string): RpsView {
  return {
    ...state,
    players: state.players.map(({ playerId, team, wins, move }) => ({
      playerId,
      team,
      wins,
      chosen: move !== null,
      move: playerId === player ? move : null,
    })),
  }
}

/** Every event is public but another player's `chosen`, which loses its `move`. */
function viewEvent(event: RpsEvent, player: string): RpsEvent | RpsHiddenChosen {
  if (event.kind !== 'chosen' || event.player === player) return event
  return { kind: 'chosen', round: event.round, player: event.player }
}

/** The rock-paper-scissors rules module: two players, simultaneous hidden moves. */
export const rockPaperScissors: Rules<RpsState, RpsAction, RpsEvent> = {
  name: 'rock-paper-scissors',
  players: { min: 2, max: 2 },
  tickRate: TICKS_PER_SECOND,
  init,
  parseAction,
  apply,
  onTick,
  nextTick,
  onAbsent,
  onConnect,
  onAbandon,
  result,
  view,
  viewEvent,
}
