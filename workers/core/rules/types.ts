/**
 * Game rules: the contract between a GameSession Durable Object and a pure rules module.
 *
 * How determinism is kept (why replaying the log reproduces the live state trivially):
 *
 * - A match is one plain-JSON value, `MatchState` (see engine.ts): `{ rules, seq, tick, rng, game }`.
 *   `game` is the rules' own state; `rng` holds the four 32-bit words of an sfc32 generator seeded
 *   from the match seed. Everything that decides the next state is inside that value, so it
 *   survives `JSON.stringify`/`JSON.parse` (DO storage, eviction) without loss.
 * - Rules never see the RNG words. For each input the engine builds a fresh `Rng` from
 *   `match.rng`, passes it as `ctx.rng`, and on success stores the advanced words back next to the
 *   new game state. A refused input throws the advanced generator away, so refusals consume no
 *   randomness and change nothing. Rules cannot forget to persist the RNG, and `view()` cannot
 *   leak it to clients (which would let them predict dice), because it is not in `game`.
 * - Rules are pure functions of (state, action, ctx): no wall clock, no `Math.random`, no I/O, no
 *   mutation of their inputs. The tick comes from the DO in `ctx.tick`.
 * - Every accepted input becomes one log record `{ seq, input, event }` that stores the input as
 *   the rules parsed it. `replay()` starts again from `createMatch(setup)` and feeds the inputs
 *   back through the same `step()` the DO uses, checking each produced event equals the stored
 *   one. Same start state + same inputs + pure rules = same states and events.
 * - The seed is secret (the DO draws it from `crypto.getRandomValues`): sfc32 is fast and
 *   well distributed but not cryptographic, so clients must never get the seed or the RNG words.
 */

/** A generator view handed to rules; it advances a private copy of the match's RNG words. */
export interface Rng {
  /** Next 32-bit unsigned integer. */
  uint32(): number
  /** Next float in [0, 1) with 32 bits of randomness. */
  float(): number
  /** Uniform integer in [min, max] (inclusive, unbiased); both must be safe integers. */
  int(min: number, max: number): number
}

/** The engine's generator: the rules' view, and the words to store back in the match. */
export interface RngGenerator extends Rng {
  /** The current state words, to store in the match. */
  state(): RngState
}

/** sfc32 state: four unsigned 32-bit integers (plain JSON). */
export type RngState = [number, number, number, number]

/** A player as the match was formed: id and team index (0-based). */
export interface RosterEntry {
  playerId: string
  team: number
}

/** What a GameSession knows when a match is created. */
export interface GameSetup {
  /** Players in turn order (for turn-based rules). Ids are unique. */
  roster: RosterEntry[]
  /** Secret seed; the same seed and inputs give the same game. */
  seed: string
  /** Rule-specific options (validated by `init`). */
  options?: unknown
}

/** Context of a player-caused input (an action, an absence, a return). */
export interface ActionContext {
  /** The authenticated player the input is about (never taken from the client payload). */
  player: string
  /** The session's tick when the input was applied (non-decreasing). */
  tick: number
  rng: Rng
}

/** Context of a clock tick for real-time rules. */
export interface TickContext {
  tick: number
  rng: Rng
}

/** A refusal: the sender gets `{"type":"error", code, message}`; nothing changes. */
export interface RuleError {
  error: { code: string; message: string }
}

/**
 * The outcome of an accepted input: the next state and the event broadcast to everyone. Events
 * are public to the whole roster unless the rules say what each player sees of one (`viewEvent`).
 */
export interface Applied<S, E> {
  state: S
  event: E
}

/** Final standings, used to record results and update ratings. */
export interface GameResult {
  /** Every roster player once; place 1 is best. */
  placements: { playerId: string; team: number; place: number; score?: number }[]
  /**
   * finished: won by play; forfeit: won because others left; abandoned: everyone left;
   * cancelled: an admin ended the game (no winner, nobody rated).
   */
  reason: 'finished' | 'forfeit' | 'abandoned' | 'cancelled'
  /** The winner's id, or null when there is none (abandoned, or rules without winners). */
  winner: string | null
}

/**
 * A rules module. `S` is its game state, `A` its parsed action, `E` its event; all plain JSON.
 * States and actions must not have a top-level `error` key (that shape marks a `RuleError`).
 * Every function is pure and must not mutate its arguments.
 */
export interface Rules<S, A, E = unknown> {
  /** Registry name, e.g. `dice-race`; what a queue's `rules` field names. */
  readonly name: string
  /** How many players a match of these rules may have. */
  readonly players: { readonly min: number; readonly max: number }
  /** Ticks per second for real-time rules; undefined = event-driven only (no `onTick`). */
  readonly tickRate?: number
  /** Initial state; may refuse bad `options`. The roster was already checked by the engine. */
  init(setup: GameSetup, rng: Rng): S | RuleError
  /**
   * Validate an untrusted client message (`{"type":"action", …}`; the `type` key is allowed and
   * ignored). Strict shape, bounded size. Must be idempotent: parsing a parsed action returns an
   * equal action, because replay parses logged actions again.
   */
  parseAction(raw: unknown): A | RuleError
  /** Apply a parsed action by `ctx.player`. */
  apply(state: S, action: A, ctx: ActionContext): Applied<S, E> | RuleError
  /**
   * A clock tick (only when `tickRate` is set). Return the very same `state` object and no event
   * when nothing happened; anything else is logged.
   */
  onTick?(state: S, ctx: TickContext): { state: S; event?: E }
  /**
   * For rules whose ticks matter only at moments their state knows (a deadline): the next tick at
   * which `onTick` may change something, or null for none. The session then wakes for that tick
   * alone instead of every tick. Without it, every tick is fed.
   */
  nextTick?(state: S): number | null
  /**
   * For rules fed every tick whose ticks change nothing until a moment their state knows (a fuse
   * burning to a deadline): that tick, or null for none until the next input. The session sleeps
   * until then instead of waking every tick; woken, it feeds the tick of the moment, as every
   * tick is fed (a late wake is late in game time too), where `nextTick`'s deadlines are each
   * played at their own tick. A hint only: ticks fed before it must change nothing.
   */
  quietUntil?(state: S): number | null
  /** `ctx.player` stayed disconnected past the grace period. Refuse if it changes nothing. */
  onAbsent(state: S, ctx: ActionContext): Applied<S, E> | RuleError
  /** `ctx.player` came back after `onAbsent`. Optional; refuse if it changes nothing. */
  onReturn?(state: S, ctx: ActionContext): Applied<S, E> | RuleError
  /**
   * `ctx.player` opened a connection (every one: the first, a reconnect, a second tab), after any
   * `onReturn`. Optional; refuse if it changes nothing, which logs nothing. For rules whose clock
   * should wait for the players (dice-race's turn timer starts once every player has connected).
   */
  onConnect?(state: S, ctx: ActionContext): Applied<S, E> | RuleError
  /**
   * Every player still in the game went away at once (their graces ended together): end the game
   * without a winner (`abandoned`). Optional: rules where the last `onAbsent` already ends a game
   * without a winner need none; rules that would give the last one reported a win by forfeit do.
   */
  onAbandon?(state: S, ctx: TickContext): Applied<S, E>
  /** Non-null once the game is over; after that the engine refuses every input (`game_over`). */
  result(state: S): GameResult | null
  /**
   * What `player` may see (hidden information); sent in `welcome`.
   */
  view(state: S, player: string): unknown
  /**
   * What `player` may see of an event (hidden information: a card drawn, a move not yet
   * revealed). Optional: without it every roster player gets every event as it is. With it, each
   * player gets their view of every event (live, in a resume, from the log route), and the log
   * route leaves other players' actions out of the inputs it gives a player; admins get the log
   * whole. Pure, like the rest, and must not mutate `event`.
   */
  viewEvent?(event: E, player: string): unknown
}

/** A rules module with its types erased, as the registry hands it out. */
export type AnyRules = Rules<unknown, unknown, unknown>

/**
 * Places for players listed best first: 1, 2, 2, 4… (standard competition ranking), where
 * `tied(previous, next)` says two neighbours had the same outcome. Equal places rate as a draw.
 * @example competitionPlaces([9, 7, 7, 3], (a, b) => a === b) // [1, 2, 2, 4]
 */
export function competitionPlaces<T>(order: readonly T[], tied: (a: T, b: T) => boolean): number[] {
  const places: number[] = []
  order.forEach((x, k) => places.push(k > 0 && tied(order[k - 1]!, x) ? places[k - 1]! : k + 1))
  return places
}

/**
 * Build a refusal.
 * @example return ruleError('not_your_turn', 'it is bob’s turn')
 */
export function ruleError(code: string, message: string): RuleError {
  return { error: { code, message } }
}

/** True for a `RuleError` value (an object whose `error` holds a string code). */
export function isRuleError(value: unknown): value is RuleError {
  if (typeof value !== 'object' || value === null || !('error' in value)) return false
  const error: unknown = value.error
  return (
    typeof error === 'object' &&
    error !== null &&
    'code' in error &&
    typeof error.code === 'string' &&
    'message' in error &&
    typeof error.message === 'string'
  )
}
