import { asStored, jsonEqual } from './json.ts'
import { createRng, seedRng } from './rng.ts'
import type {
  Applied,
  GameResult,
  GameSetup,
  Rng,
  RngGenerator,
  Rules,
  RngState,
  RuleError,
} from './types.ts'
import { isRuleError, ruleError } from './types.ts'

/**
 * The engine a GameSession DO runs: one pure `step()` for live inputs and one `replay()` that
 * rebuilds a match from its log through that same `step()`. See types.ts for the determinism
 * argument.
 */

/** Everything a match is, as plain JSON: what the DO persists. */
export interface MatchState<S = unknown> {
  /** Name of the rules that produced `game`. */
  rules: string
  /** Sequence number of the last log record (0 before any). */
  seq: number
  /** Tick of the last log record (0 before any); inputs may not go back in time. */
  tick: number
  /** sfc32 words; advanced only by accepted inputs. */
  rng: RngState
  game: S
  /** The result of a game ended from outside its rules (an `end` input); absent otherwise. */
  ended?: GameResult
}

/** A player's action; `action` is untrusted as received, and parsed as stored in the log. */
export interface ActionInput {
  kind: 'action'
  player: string
  tick: number
  action: unknown
  /**
   * The client's name for the action, kept beside it in the log (the rules never see it): the
   * sender's answers carry it back.
   */
  ref?: string | number
}
/** A clock tick, for rules with a `tickRate`. */
export interface TickInput {
  kind: 'tick'
  tick: number
}
/** A player stayed disconnected past the grace period. */
export interface AbsentInput {
  kind: 'absent'
  player: string
  tick: number
}
/** A player reconnected after being reported absent. */
export interface ReturnInput {
  kind: 'return'
  player: string
  tick: number
}
/** A player opened a connection to the session (for rules with `onConnect`). */
export interface ConnectInput {
  kind: 'connect'
  player: string
  tick: number
}
/**
 * Every player still in the game stayed away past the same deadline (nobody connected at all, or
 * every socket went with a restart): reported one by one, the first reports would hand the last
 * one a win by forfeit. Only for rules with `onAbandon`.
 */
export interface AbandonInput {
  kind: 'abandon'
  tick: number
}
/**
 * The game is ended from outside its rules (an admin cancelling a match): no winner, nobody rated.
 * `placements` (the roster, each at place 1) are the result's, carried in the input so that the
 * engine, which does not hold the roster, replays the same result.
 */
export interface EndInput {
  kind: 'end'
  tick: number
  placements: GameResult['placements']
}
export type Input =
  ActionInput | TickInput | AbsentInput | ReturnInput | ConnectInput | AbandonInput | EndInput

/** The game's result: the rules' own, or the one an `end` input gave it; null while it runs. */
export function resultOf<S, A, E>(rules: Rules<S, A, E>, match: MatchState<S>): GameResult | null {
  const result = match.ended ?? rules.result(match.game)
  // A module that leaves `winner` out (plain JavaScript) means none.
  return result && result.winner === undefined ? { ...result, winner: null } : result
}

/**
 * Why a result the rules gave cannot be recorded, or null: every roster player once, on their
 * roster team, at an integer place from 1; the winner, if any, in first place; none for a game
 * abandoned or cancelled (unrated, it must send no win either). A result is
 * written to Neon, rates its players and may send a win to a leaderboard, all from this: a
 * zero-based place would give the win to the second, an id off the roster would be rated.
 * @example resultRefusal({ placements: [], reason: 'finished', winner: null }, roster) // 'placements name 0 of 2 roster players'
 */
export function resultRefusal(
  result: GameResult,
  roster: readonly { playerId: string; team: number }[],
): string | null {
  const teams = new Map(roster.map((p) => [p.playerId, p.team]))
  const placed = new Set<string>()
  const first = new Set<string>()
  if (!Array.isArray(result.placements)) return 'placements is not a list'
  for (const p of result.placements) {
    const team = teams.get(p?.playerId)
    if (team === undefined)
      return `placements name '${String(p?.playerId).slice(0, 64)}', not on the roster`
    if (placed.has(p.playerId)) return `placements name '${p.playerId}' twice`
    if (p.team !== team) return `placements put '${p.playerId}' on team ${p.team}, not ${team}`
    if (!Number.isInteger(p.place) || p.place < 1) {
      return `placements give '${p.playerId}' place ${p.place}: places are integers from 1`
    }
    if (p.score !== undefined && !Number.isFinite(p.score)) {
      return `placements give '${p.playerId}' a score that is not a finite number`
    }
    placed.add(p.playerId)
    if (p.place === 1) first.add(p.playerId)
  }
  if (placed.size !== teams.size) {
    return `placements name ${placed.size} of ${teams.size} roster players`
  }
  if (!['finished', 'forfeit', 'abandoned', 'cancelled'].includes(result.reason)) {
    return `reason '${String(result.reason).slice(0, 32)}' is not finished, forfeit, abandoned or cancelled`
  }
  if (result.winner !== null && !first.has(result.winner)) {
    return `winner '${String(result.winner).slice(0, 64)}' is not in first place`
  }
  // Nobody is rated for such a game; a winner would still be sent a win for the leaderboard.
  if (result.winner !== null && (result.reason === 'abandoned' || result.reason === 'cancelled')) {
    return `an ${result.reason === 'abandoned' ? 'abandoned' : 'cancelled'} game has no winner`
  }
  return null
}

/**
 * One accepted input and the event it produced. Broadcast as `{"type":"event", seq, …}` and
 * stored in order; `replay()` re-applies `input` and checks it yields `event` again.
 */
export interface LogRecord<E = unknown> {
  seq: number
  input: Input
  /** null only for a tick that changed state without an event. */
  event: E | null
}

/**
 * What `player` may see of a log record: its input without the action when another player sent
 * it (an action is what a player chose: a move not yet revealed, a card played face down; what
 * the game made public of it is in the event), and the event as it is, or under rules with
 * `viewEvent` their view of it. Whatever the rules: ones that keep hands out of their events but
 * define no `viewEvent` would otherwise serve every card played to anyone reading the log. A
 * player cannot replay such a log (nor could they: the seed is not theirs); an admin, who gets
 * it whole, can.
 */
export function viewRecord<S, A, E>(
  rules: Rules<S, A, E>,
  record: LogRecord<E>,
  player: string,
): LogRecord<unknown> {
  const { input } = record
  const theirs = input.kind !== 'action' || input.player === player
  if (!rules.viewEvent && theirs) return record
  return {
    seq: record.seq,
    input: theirs ? input : ({ kind: 'action', player: input.player, tick: input.tick } as Input),
    event:
      record.event === null || !rules.viewEvent
        ? record.event
        : rules.viewEvent(record.event, player),
  }
}

/** An accepted input: the next match, and the record to log and broadcast (null: nothing to log). */
export interface Stepped<S, E> {
  match: MatchState<S>
  record: LogRecord<E> | null
}

const MAX_PLAYER_ID_LENGTH = 128
const MAX_SEED_LENGTH = 256

/**
 * Start a match: check the roster against the rules, seed the RNG, build the initial state.
 * @example
 * const match = createMatch(diceRace, { roster: [{ playerId: 'a', team: 0 }, { playerId: 'b', team: 1 }], seed })
 * if (isRuleError(match)) throw new Error(match.error.message)
 */
export function createMatch<S, A, E>(
  rules: Rules<S, A, E>,
  setup: GameSetup,
): MatchState<S> | RuleError {
  const problem = checkSetup(rules, setup)
  if (problem !== null) return ruleError('invalid_setup', problem)
  const rng = createRng(seedRng(setup.seed))
  const game = rules.init(setup, rulesView(rng))
  if (isRuleError(game)) return game
  return { rules: rules.name, seq: 0, tick: 0, rng: rng.state(), game }
}

/**
 * Why a match just made cannot be played: its rules call it over from the first state (a
 * last-player-standing game of one), where a session would start live and refuse every input,
 * with nothing to wake it, until an admin ended it. Null when it can. Not checked on replay: a
 * session made before this check loads, for an admin to end.
 */
export function startRefusal<S, A, E>(rules: Rules<S, A, E>, match: MatchState<S>): string | null {
  const result = resultOf(rules, match)
  return result === null
    ? null
    : `${rules.name} is over before it starts with this roster and these options (${result.reason})`
}

/**
 * The generator as rules get it: draws only. Its words stay the engine's, which stores them in
 * the match, out of `game`, so that no rules module can keep or show them (they would let a
 * client predict every later draw).
 */
function rulesView(rng: RngGenerator): Rng {
  return {
    uint32: () => rng.uint32(),
    float: () => rng.float(),
    int: (min, max) => rng.int(min, max),
  }
}

function checkSetup<S, A, E>(rules: Rules<S, A, E>, setup: GameSetup): string | null {
  if (typeof setup !== 'object' || setup === null) return 'setup must be an object'
  const { roster, seed } = setup
  if (typeof seed !== 'string' || seed.length === 0 || seed.length > MAX_SEED_LENGTH) {
    return `seed must be a string of 1 to ${MAX_SEED_LENGTH} characters`
  }
  if (!Array.isArray(roster)) return 'roster must be an array'
  const { min, max } = rules.players
  if (roster.length < min || roster.length > max) {
    return `${rules.name} needs ${min} to ${max} players, got ${roster.length}`
  }
  const seen = new Set<string>()
  for (const entry of roster) {
    if (typeof entry !== 'object' || entry === null) return 'roster entries must be objects'
    const { playerId, team } = entry
    if (
      typeof playerId !== 'string' ||
      playerId.length === 0 ||
      playerId.length > MAX_PLAYER_ID_LENGTH
    ) {
      return `playerId must be a string of 1 to ${MAX_PLAYER_ID_LENGTH} characters`
    }
    if (!Number.isSafeInteger(team) || team < 0) return 'team must be a non-negative integer'
    if (seen.has(playerId)) return `duplicate player ${playerId}`
    seen.add(playerId)
  }
  return null
}

/**
 * Apply one input. A refusal (`RuleError`) means nothing changed: the DO sends the error to the
 * sender only. Otherwise persist `match` and, if `record` is non-null, append and broadcast it.
 * Never mutates `match`.
 *
 * A game over (`result`) refuses every input (`game_over`) unless `pastResult`: a logged record
 * replayed (a deploy may change `result` so that a live game is over partway through records
 * the code before it accepted: they stand, and the session loads), or an admin's end of a game
 * its session still holds live (the same deploy leaves it refusing everything else).
 * @example
 * const out = step(rules, match, { kind: 'action', player: 'a', tick: 0, action: { type: 'action', action: 'roll' } })
 * if (isRuleError(out)) send(ws, { type: 'error', ...out.error })
 * else if (out.record) broadcast({ type: 'event', ...out.record })
 */
export function step<S, A, E>(
  rules: Rules<S, A, E>,
  match: MatchState<S>,
  input: Input,
  { pastResult = false }: { pastResult?: boolean } = {},
): Stepped<S, E> | RuleError {
  if (match.rules !== rules.name) {
    return ruleError('wrong_rules', `match runs ${match.rules}, not ${rules.name}`)
  }
  if (!Number.isSafeInteger(input.tick) || input.tick < match.tick) {
    return ruleError('invalid_tick', `tick must be an integer >= ${match.tick}`)
  }
  if (
    input.kind !== 'tick' &&
    input.kind !== 'abandon' &&
    input.kind !== 'end' &&
    typeof input.player !== 'string'
  ) {
    return ruleError('invalid_input', 'player must be a string')
  }
  // Past an end the engine logged itself (`ended`: an admin's end), nothing ever: only the
  // rules' own `result` is what a deploy may have changed.
  if (match.ended != null || (!pastResult && resultOf(rules, match) !== null)) {
    return ruleError('game_over', 'the game is over')
  }

  const rng = createRng(match.rng)
  const ctx = { tick: input.tick, rng: rulesView(rng) }
  let logged: Input
  let state: S
  let event: E | undefined
  let ended: GameResult | undefined
  switch (input.kind) {
    case 'action': {
      const action = rules.parseAction(input.action)
      if (isRuleError(action)) return action
      // The log keeps the parsed action, and a replay (every wake) parses it again: a parser that
      // refuses or changes its own output would play today and leave a log no wake can load,
      // the session unusable from then on. Refused here instead, the action changes nothing.
      const reparsed = rules.parseAction(JSON.parse(JSON.stringify(action)) as unknown)
      if (isRuleError(reparsed) || !jsonEqual(reparsed, action)) {
        throw new Error(
          `${rules.name}: parseAction of its own parsed action ${JSON.stringify(action).slice(0, 200)} ` +
            (isRuleError(reparsed)
              ? `is refused (${reparsed.error.code})`
              : `gives another (${JSON.stringify(reparsed).slice(0, 200)})`) +
            ': parsing a parsed action must give an equal one (docs/rules.md)',
        )
      }
      const out = rules.apply(match.game, action, { ...ctx, player: input.player })
      if (isRuleError(out)) return out
      state = out.state
      event = out.event
      logged = {
        kind: 'action',
        player: input.player,
        tick: input.tick,
        action,
        ...(input.ref !== undefined ? { ref: input.ref } : {}),
      }
      break
    }
    case 'absent':
    case 'return':
    case 'connect': {
      const hook =
        input.kind === 'absent'
          ? rules.onAbsent
          : input.kind === 'return'
            ? rules.onReturn
            : rules.onConnect
      if (hook === undefined) return { match, record: null }
      const out = hook.call(rules, match.game, { ...ctx, player: input.player })
      if (isRuleError(out)) return out
      state = out.state
      event = out.event
      logged = { kind: input.kind, player: input.player, tick: input.tick }
      break
    }
    case 'abandon': {
      if (rules.onAbandon === undefined) {
        return ruleError('invalid_input', `${rules.name} has no abandon input`)
      }
      // Typed to apply; a module in plain JavaScript may refuse, which changes nothing.
      const out = rules.onAbandon(match.game, ctx) as Applied<S, E> | RuleError
      if (isRuleError(out)) return out
      state = out.state
      event = out.event
      logged = { kind: 'abandon', tick: input.tick }
      break
    }
    case 'end': {
      if (!Array.isArray(input.placements) || input.placements.length === 0) {
        return ruleError('invalid_input', 'placements must list the roster')
      }
      state = match.game
      // Not the rules' event type: every rules module's game can end this way.
      event = { kind: 'cancelled', ended: 'cancelled' } as E
      ended = { reason: 'cancelled', winner: null, placements: input.placements }
      logged = { kind: 'end', tick: input.tick, placements: input.placements }
      break
    }
    case 'tick': {
      if (rules.onTick === undefined) return { match, record: null }
      const out = rules.onTick(match.game, ctx) as { state: S; event?: E } | RuleError
      // A refusal (plain JavaScript; typed out) is a tick at which nothing happened.
      if (isRuleError(out)) return { match, record: null }
      if (out.state === match.game && out.event === undefined) return { match, record: null }
      state = out.state
      event = out.event
      logged = { kind: 'tick', tick: input.tick }
      break
    }
    default:
      return ruleError('invalid_input', 'unknown input kind')
  }
  const seq = match.seq + 1
  // A tick that changed state without an event still needs a record (replay needs the input);
  // null keeps the record plain JSON.
  const record: LogRecord<E> = { seq, input: logged, event: event ?? null }
  return {
    match: {
      rules: rules.name,
      seq,
      tick: input.tick,
      rng: rng.state(),
      game: state,
      ...(ended ? { ended } : {}),
    },
    record,
  }
}

/** Thrown by `replay()` when the log does not reproduce itself (corruption or impure rules). */
export class ReplayError extends Error {
  readonly seq: number
  constructor(seq: number, message: string) {
    super(`replay diverged at seq ${seq}: ${message}`)
    this.name = 'ReplayError'
    this.seq = seq
  }
}

/**
 * Rebuild a match from its setup and log, re-applying every input through `step()` and checking
 * that each one is accepted with the same event. It needs the setup's secret seed, so it is the
 * server's and the tests' tool: tests prove with it that the live state is the replayed state. (The DO itself wakes from its stored snapshot and
 * feeds only the log after it through `step()`, so a rules change keyed on a state field leaves
 * sessions created before it as they were.)
 * @example
 * const match = replay(rules, setup, await loadRecords())
 * @throws ReplayError if a record is out of order, refused, or produces a different event.
 */
export function replay<S, A, E>(
  rules: Rules<S, A, E>,
  setup: GameSetup,
  records: readonly LogRecord<unknown>[],
): MatchState<S> {
  const start = createMatch(rules, setup)
  if (isRuleError(start)) throw new ReplayError(0, `setup refused: ${start.error.message}`)
  // A session starts from its stored first state, and logs each record in its stored form. (It
  // also goes on from the stored state at each snapshot, which this does not know of: for rules
  // whose state JSON keeps whole, as it must be, that changes nothing.)
  let match: MatchState<S> = asStored(start)
  for (const record of records) {
    if (record.seq !== match.seq + 1) {
      throw new ReplayError(record.seq, `expected seq ${match.seq + 1}`)
    }
    const out = step(rules, match, record.input, { pastResult: true })
    if (isRuleError(out)) {
      throw new ReplayError(record.seq, `input refused (${out.error.code}): ${out.error.message}`)
    }
    if (out.record === null) throw new ReplayError(record.seq, 'input produced no record')
    if (!jsonEqual(asStored(out.record), record)) {
      throw new ReplayError(record.seq, 'a different event or input was produced')
    }
    match = out.match
  }
  return match
}
