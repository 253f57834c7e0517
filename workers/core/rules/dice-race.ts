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
import { competitionPlaces, isRuleError, ruleError } from './types.ts'

/**
 * dice-race: turn-based and authoritative. Players take turns in roster order; the player whose
 * turn it is sends `{"type":"action","action":"roll"}`, the server rolls a seeded die (1–6) and
 * moves them forward; the first to reach `target` (default 100) wins.
 *
 * A player absent past the grace period forfeits: they leave the turn order for good (a later
 * reconnection does not bring them back). When one player remains they win by forfeit; when none
 * remain (a solo game), or all who remained went away together (`onAbandon`), the game is
 * abandoned.
 *
 * Placements: the winner first, then players still in the game by position (highest first), then
 * those who forfeited by position; equal outcomes share a place (a draw between them in
 * ratings), listed in turn order. Ranking leavers
 * below everyone who stayed keeps abandoning from ever paying off in ratings.
 *
 * Refusals: `not_your_turn` (someone else's turn, or the sender forfeited), `not_a_player`,
 * `game_over`, `invalid_action` (anything but a roll, malformed payloads), `already_absent`.
 *
 * Turn timer (option `turnSeconds`): a player who has not rolled when their turn's time is up
 * has the server roll for them (`auto: true`), so one idle client cannot hold the game. Ticks
 * are milliseconds of game time (`tickRate` 1000, as untimed games count them); the session
 * wakes only at each turn's deadline (`nextTick`). A deadline is game time: each turn's runs
 * from the previous deadline or the last accepted input, however late the alarm that applies
 * it. The clock starts once every player has connected (`onConnect`, a `joined` event each) or
 * forfeited for never coming, so a first player still connecting is not rolled for; until then a
 * player in turn may roll, and no turn runs out. Games without the option keep no deadline and
 * are never woken, and log no connections.
 */

export const DEFAULT_TARGET = 100
const MAX_TARGET = 10_000
const MIN_TURN_SECONDS = 5
const MAX_TURN_SECONDS = 3600
/** Ticks are milliseconds: the same clock untimed dice-race games have always logged. */
const TICKS_PER_SECOND = 1000
const DIE_SIDES = 6

export interface DicePlayer {
  playerId: string
  team: number
  position: number
  /** True once absent past the grace period: out of the turn order for good. */
  forfeited: boolean
}

export interface DiceState {
  target: number
  /** In turn order (the roster's order). */
  players: DicePlayer[]
  /** Index in `players` of whose turn it is; -1 once the game is over. */
  turn: number
  /** Accepted rolls so far. */
  rolls: number
  winner: string | null
  /** Why it ended; null while it runs. */
  ended: GameResult['reason'] | null
  /** With `turnSeconds`: a turn's length in ticks (absent in untimed games). */
  turnTicks?: number
  /**
   * With `turnSeconds`: the tick at which the current turn is rolled for its player; absent until
   * the clock starts.
   */
  turnEndsAt?: number
  /**
   * Set for games of two teams or more: once every player still in is on one team, that team
   * wins by forfeit (its leader in the race is the winner). Games created before this field
   * (2026-12-06) lack it and end by forfeit only with one player left, so their logs replay.
   */
  lastTeamWins?: true
  /**
   * With `turnSeconds`: players still to connect before the clock starts (empty once it has).
   * Timed games created before this field (2026-12-04) lack it: their clock ran from creation.
   */
  awaiting?: string[]
}

export interface DiceAction {
  action: 'roll'
}

export type DiceEvent =
  | {
      kind: 'roll'
      player: string
      die: number
      /** The roller's new position. */
      position: number
      /** Whose turn it is now; null once the game is over. */
      next: string | null
      winner: string | null
      /** Rolled by the server: the player's turn time ran out (`turnSeconds`). */
      auto?: true
    }
  | {
      kind: 'forfeit'
      player: string
      next: string | null
      winner: string | null
      /** Set when the game ended with this forfeit. */
      ended: GameResult['reason'] | null
    }
  /** Every player still in the game went away together: over, without a winner. */
  | { kind: 'abandoned'; players: string[]; ended: 'abandoned' }
  /**
   * A timed game's player connected for the first time; `awaiting` lists who is still to come,
   * and when it is empty the turn clock runs (the current turn's deadline is in the state).
   */
  | { kind: 'joined'; player: string; awaiting: string[] }

export interface DiceOptions {
  /** Position to reach to win, 1 to 10000; default 100. */
  target?: number
  /** Seconds a player has for each turn, 5 to 3600; default none (no turn timer). */
  turnSeconds?: number
}

function init(setup: GameSetup): DiceState | RuleError {
  const options = optionFields(setup.options, 'dice-race', ['target', 'turnSeconds'])
  if (isRuleError(options)) return options
  const target = intOption(options.target, 'target', 1, MAX_TARGET, DEFAULT_TARGET)
  if (isRuleError(target)) return target
  // No timer unless asked for (0: none).
  const turnSeconds = intOption(
    options.turnSeconds,
    'turnSeconds',
    MIN_TURN_SECONDS,
    MAX_TURN_SECONDS,
    0,
  )
  if (isRuleError(turnSeconds)) return turnSeconds
  const turnTicks = turnSeconds === 0 ? undefined : turnSeconds * TICKS_PER_SECOND
  // Only timed games carry the fields: untimed states stay as they always were. The clock waits
  // for every player to connect.
  const timer =
    turnTicks === undefined
      ? {}
      : { turnTicks, awaiting: setup.roster.map(({ playerId }) => playerId) }
  return {
    target,
    players: setup.roster.map(({ playerId, team }) => ({
      playerId,
      team,
      position: 0,
      forfeited: false,
    })),
    turn: 0,
    rolls: 0,
    winner: null,
    ended: null,
    // A team whose opponents all left has won: without this, its players racing each other
    // on, then both closing the app, made the game abandoned and unrated, the leavers' loss
    // gone with it.
    ...(new Set(setup.roster.map((p) => p.team)).size > 1 ? { lastTeamWins: true as const } : {}),
    ...timer,
  }
}

function parseAction(raw: unknown): DiceAction | RuleError {
  if (!isPlainObject(raw)) return ruleError('invalid_action', 'an action must be an object')
  for (const key of Object.keys(raw)) {
    if (key !== 'type' && key !== 'action') {
      return ruleError('invalid_action', `unexpected field ${key.slice(0, 32)}`)
    }
  }
  if ('type' in raw && raw.type !== 'action') {
    return ruleError('invalid_action', 'type must be "action"')
  }
  if (raw.action !== 'roll') return ruleError('invalid_action', 'the only action is "roll"')
  return { action: 'roll' }
}

/** The next player still in the game after index `from`, cyclically (may be `from` itself). */
function nextActive(players: readonly DicePlayer[], from: number): number {
  for (let k = 1; k <= players.length; k++) {
    const i = (from + k) % players.length
    if (players[i]?.forfeited === false) return i
  }
  return -1
}

function apply(
  state: DiceState,
  _action: DiceAction,
  ctx: ActionContext,
): Applied<DiceState, DiceEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const index = state.players.findIndex((p) => p.playerId === ctx.player)
  const me = state.players[index]
  if (me === undefined) return ruleError('not_a_player', 'you are not in this game')
  if (me.forfeited) return ruleError('not_your_turn', 'you forfeited this game')
  if (index !== state.turn) {
    const current = state.players[state.turn]?.playerId ?? 'nobody'
    return ruleError('not_your_turn', `it is ${current}'s turn`)
  }
  return roll(state, index, ctx, ctx.tick)
}

/**
 * The player at `index` rolls; the next turn's deadline (timed games) is `from` plus a turn: the
 * roll's moment for a player's own roll, the deadline that ran out for the server's.
 */
function roll(
  state: DiceState,
  index: number,
  ctx: TickContext,
  from: number,
  auto = false,
): Applied<DiceState, DiceEvent> {
  const me = state.players[index]!
  const die = ctx.rng.int(1, DIE_SIDES)
  const position = me.position + die
  const players = state.players.map((p, i) => (i === index ? { ...p, position } : p))
  const won = position >= state.target
  const turn = won ? -1 : nextActive(players, index)
  const next = won ? null : (players[turn]?.playerId ?? null)
  const winner = won ? me.playerId : null
  return {
    state: {
      ...state,
      players,
      turn,
      rolls: state.rolls + 1,
      winner,
      ended: won ? 'finished' : null,
      ...nextDeadline(state, from),
    },
    event: {
      kind: 'roll',
      player: me.playerId,
      die,
      position,
      next,
      winner,
      ...(auto ? { auto: true as const } : {}),
    },
  }
}

/**
 * A timed game's deadline for a turn beginning at `from`; nothing for an untimed one, or while
 * the clock waits for players to connect.
 */
function nextDeadline(state: DiceState, from: number): Pick<DiceState, 'turnEndsAt'> {
  if (state.turnTicks === undefined || (state.awaiting?.length ?? 0) > 0) return {}
  return { turnEndsAt: from + state.turnTicks }
}

/**
 * A timed game's player connected: the first time, they are no longer awaited, and once nobody
 * is the current turn's clock starts now. Anything else changes nothing (refused, not logged).
 */
function onConnect(
  state: DiceState,
  ctx: ActionContext,
): Applied<DiceState, DiceEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  if (state.awaiting === undefined || !state.awaiting.includes(ctx.player)) {
    return ruleError('already_joined', `${ctx.player} has connected before`)
  }
  const awaiting = state.awaiting.filter((id) => id !== ctx.player)
  const started = { ...state, awaiting }
  return {
    state: { ...started, ...nextDeadline(started, ctx.tick) },
    event: { kind: 'joined', player: ctx.player, awaiting },
  }
}

/** A turn whose time ran out is rolled by the server, for its player. */
function onTick(state: DiceState, ctx: TickContext): { state: DiceState; event?: DiceEvent } {
  if (state.ended !== null || state.turnEndsAt === undefined || ctx.tick < state.turnEndsAt) {
    return { state }
  }
  return roll(state, state.turn, ctx, state.turnEndsAt, true)
}

function nextTick(state: DiceState): number | null {
  return state.ended === null && state.turnEndsAt !== undefined ? state.turnEndsAt : null
}

function onAbsent(state: DiceState, ctx: ActionContext): Applied<DiceState, DiceEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const index = state.players.findIndex((p) => p.playerId === ctx.player)
  const me = state.players[index]
  if (me === undefined) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  if (me.forfeited) return ruleError('already_absent', `${ctx.player} already forfeited`)
  const players = state.players.map((p, i) => (i === index ? { ...p, forfeited: true } : p))
  const remaining = players.filter((p) => !p.forfeited)
  let turn = state.turn === index ? nextActive(players, index) : state.turn
  let winner: string | null = null
  let ended: DiceState['ended'] = null
  if (remaining.length === 1 && players.length > 1) {
    winner = remaining[0]?.playerId ?? null
    ended = 'forfeit'
    turn = -1
  } else if (state.lastTeamWins && remaining.length > 1 && oneTeam(remaining)) {
    // The team's furthest player wins for it (the first in turn order among equals).
    winner = remaining.reduce((best, p) => (p.position > best.position ? p : best)).playerId
    ended = 'forfeit'
    turn = -1
  } else if (remaining.length === 0) {
    ended = 'abandoned'
    turn = -1
  }
  const next = turn === -1 ? null : (players[turn]?.playerId ?? null)
  // One who never connected is awaited no more: the clock starts if nobody else is awaited.
  const awaited = state.awaiting?.includes(me.playerId) === true
  const awaiting = awaited ? { awaiting: state.awaiting!.filter((id) => id !== me.playerId) } : {}
  const after = { ...state, ...awaiting }
  // A turn handed on by the forfeit starts now, and so does the one in play when the clock
  // starts with it; a turn someone else holds keeps its deadline.
  const starts = awaited && after.awaiting!.length === 0
  const timer = (turn !== state.turn || starts) && turn !== -1 ? nextDeadline(after, ctx.tick) : {}
  return {
    state: { ...after, players, turn, winner, ended, ...timer },
    event: { kind: 'forfeit', player: me.playerId, next, winner, ended },
  }
}

function oneTeam(players: readonly DicePlayer[]): boolean {
  return players.every((p) => p.team === players[0]!.team)
}

function onAbandon(state: DiceState): Applied<DiceState, DiceEvent> {
  const left = state.players.filter((p) => !p.forfeited).map((p) => p.playerId)
  const players = state.players.map((p) => (p.forfeited ? p : { ...p, forfeited: true }))
  return {
    state: { ...state, players, turn: -1, winner: null, ended: 'abandoned' },
    event: { kind: 'abandoned', players: left, ended: 'abandoned' },
  }
}

/**
 * The winner first, then players still in by position, then those who left by position. Equal
 * outcomes (the same standing, the same position: two no-shows at 0) share a place, which the
 * ratings count as a draw; they are listed in turn order.
 */
function result(state: DiceState): GameResult | null {
  if (state.ended === null) return null
  const standing = (d: DicePlayer): number =>
    d.playerId === state.winner ? 0 : d.forfeited ? 2 : 1
  const outcome = (x: DicePlayer, y: DicePlayer): number =>
    standing(x) - standing(y) || y.position - x.position
  const order = state.players
    .map((p, i) => ({ p, i }))
    .sort((x, y) => outcome(x.p, y.p) || x.i - y.i)
  const places = competitionPlaces(order, (x, y) => outcome(x.p, y.p) === 0)
  return {
    placements: order.map(({ p }, k) => ({
      playerId: p.playerId,
      team: p.team,
      place: places[k]!,
      score: p.position,
    })),
    reason: state.ended,
    winner: state.winner,
  }
}

/** The dice-race rules module (everything is public, so `view` is the whole state). */
export const diceRace: Rules<DiceState, DiceAction, DiceEvent> = {
  name: 'dice-race',
  players: { min: 1, max: 16 },
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
  view: (state) => state,
}
