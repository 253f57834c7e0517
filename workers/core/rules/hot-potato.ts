import { isPlainObject } from './json.ts'
import type {
  ActionContext,
  Applied,
  GameResult,
  GameSetup,
  Rng,
  RuleError,
  Rules,
  TickContext,
} from './types.ts'
import { competitionPlaces, ruleError } from './types.ts'

/**
 * hot-potato: real-time, driven by the session's clock at `HOT_POTATO_TICK_RATE` ticks per second.
 *
 * Start: players say `{"type":"action","action":"ready"}`. The fuse is lit when every player still
 * in is ready, or `startAfter` ticks (default 150, 30 s) after every player still in has
 * connected (`onConnect`, a `joined` event each; one who never comes forfeits when the session's
 * join grace ends) if at least one of them is ready, so one idle client cannot hold a match
 * forever and nobody loses to a fuse that burnt before they connected. When it is lit, the seeded
 * RNG picks the holder among the players still in and the fuse length (`minFuse` to `maxFuse`
 * ticks, defaults 15 to 50: 3 to 10 s). Matches created before the connections counted (their
 * state has no `awaiting`) count `startAfter` from the match's start, as their logs recorded.
 *
 * Nobody ready at that moment ends the game `abandoned`, without a winner: everyone sat idle, and
 * lit anyway, the fuse would play the match out by itself and hand the last player left a rated
 * win nobody played for. Matches created before this rule (their state has no
 * `nobodyReadyEnds`) keep lighting, so their logs replay.
 *
 * Play: the holder sends `{"type":"action","action":"pass","to":"<playerId>"}` to hand the potato
 * to any other player still in. Passing does not reset the fuse. On the first tick at or after
 * `explodesAt` the holder is out and, if more than one player remains, a new round starts at once
 * (new holder and new fuse from the RNG). The last player in wins (`finished`).
 *
 * The fuse is a deadline in ticks rather than a counter decremented per tick: the session wakes
 * at the next moment a tick can change something (`quietUntil`: the start or the fuse's end) and
 * feeds the current tick number, and alarms can run late (a busy object, an eviction). With a deadline a late tick cannot stretch the fuse that is burning, and a
 * tick before the deadline changes nothing, so it is neither stored nor broadcast. The next round's
 * fuse is lit at the tick that applied the explosion: after a late alarm, later in game time than
 * an on-time one would have lit it (the tick is logged, so a replay lights it the same). For the same reason a pass
 * at or after `explodesAt` is refused (`too_late`) even if the tick that explodes the potato has
 * not been applied yet. Events carry their `tick`, so clients can show the countdown.
 *
 * A player absent past the grace period forfeits: out for good (a later reconnection does not
 * bring them back). If they held the potato, a new round starts. When one player remains they
 * win by forfeit.
 *
 * Placements: the winner, then players the potato knocked out (the later, the better), then
 * those who forfeited (the later, the better). Ranking leavers below everyone who played on keeps
 * leaving from ever paying off in ratings.
 *
 * Refusals: `not_a_player`, `out` (the sender is out), `game_over`, `invalid_action` (malformed
 * payloads), `already_ready`, `already_started` (ready after the fuse was lit), `not_started`
 * (pass before it), `not_holder`, `invalid_target` (self, stranger, or a player who is out),
 * `too_late`, and for absences `already_absent` / `already_out`.
 */

export const HOT_POTATO_TICK_RATE = 5
export const HOT_POTATO_DEFAULTS = { minFuse: 15, maxFuse: 50, startAfter: 150 } as const
/** Upper bound of every tick option: 10 minutes at 5 ticks per second. */
export const MAX_OPTION_TICKS = 3000
const MAX_PLAYER_ID_LENGTH = 128

export interface PotatoPlayer {
  playerId: string
  team: number
  ready: boolean
  /** Why the player is out; null while in. */
  out: 'exploded' | 'absent' | null
}

export interface PotatoState {
  minFuse: number
  maxFuse: number
  startAfter: number
  /**
   * Nobody ready at `startAfter` ends the game `abandoned`. True for every new match; absent in
   * states created before the rule, which light the fuse regardless, as their logs recorded.
   */
  nobodyReadyEnds?: true
  /**
   * Players still to connect (`onConnect`): while one of them is still in, `startAfter` does not
   * count. Absent in states created before, which count it from the match's start.
   */
  awaiting?: string[]
  /** With `awaiting`: the tick at which `startAfter` is up, once nobody still in is awaited. */
  startAt?: number | null
  /**
   * Set for games of two teams or more: once every player still in is on one team, that team
   * has won (the first of them in roster order is the winner). Absent in states created before
   * (2026-12-06), which play on until one player is left, as their logs recorded.
   */
  lastTeamWins?: true
  /** In roster order. */
  players: PotatoPlayer[]
  /** Who holds the potato; null before the fuse is lit and once the game is over. */
  holder: string | null
  /** Tick at which the current fuse burns out; null before it is lit and once the game is over. */
  explodesAt: number | null
  /** Fuses lit so far. */
  round: number
  passes: number
  /** Players who are out, in the order they went out. */
  outOrder: string[]
  /**
   * The tick each player went out at, so that players out together (graces that ended at the
   * same moment) share a place. An empty record for every new match; absent in states created
   * before it, whose results keep placing them by the order they went out.
   */
  outTicks?: Record<string, number>
  winner: string | null
  /** Why it ended; null while it runs. */
  ended: GameResult['reason'] | null
}

export type PotatoAction = { action: 'ready' } | { action: 'pass'; to: string }

/**
 * Every event but `joined` (which comes only before the fuse is lit, and says neither) says where
 * the potato is now: `holder` (for a `pass`, `to`) and `explodesAt` after the event. (A pass has
 * no `holder` field, nor `joined` these two: adding them would change the events of logs already
 * written, which `replay()` checks.)
 */
export type PotatoEvent =
  /** A player connected for the first time; `startAt` is set once nobody still in is awaited. */
  | { kind: 'joined'; player: string; tick: number; awaiting: string[]; startAt: number | null }
  | {
      kind: 'ready'
      player: string
      tick: number
      holder: string | null
      explodesAt: number | null
    }
  /** `startAfter` was reached before everyone was ready. */
  | { kind: 'lit'; tick: number; holder: string; explodesAt: number }
  | { kind: 'pass'; from: string; to: string; tick: number; explodesAt: number }
  | {
      kind: 'exploded' | 'forfeit'
      player: string
      tick: number
      holder: string | null
      explodesAt: number | null
      winner: string | null
      /** Set when the game ended with this event. */
      ended: GameResult['reason'] | null
    }
  /**
   * Every player still in the game went away together, or nobody was ready at `startAfter`: over,
   * without a winner.
   */
  | {
      kind: 'abandoned'
      players: string[]
      tick: number
      holder: null
      explodesAt: null
      ended: 'abandoned'
    }

export interface PotatoOptions {
  /** Shortest fuse in ticks (1 to 3000, default 15). */
  minFuse?: number
  /** Longest fuse in ticks (minFuse to 3000, default 50). */
  maxFuse?: number
  /**
   * Ticks after every player still in has connected at which the fuse is lit if at least one of
   * them is ready, and the game ends `abandoned` if none is (1 to 3000, default 150).
   */
  startAfter?: number
}

const OPTION_KEYS = ['minFuse', 'maxFuse', 'startAfter'] as const

function init(setup: GameSetup): PotatoState | RuleError {
  const values: Record<(typeof OPTION_KEYS)[number], number> = { ...HOT_POTATO_DEFAULTS }
  const { options } = setup
  if (options !== undefined && options !== null) {
    if (
      !isPlainObject(options) ||
      Object.keys(options).some((k) => !(OPTION_KEYS as readonly string[]).includes(k))
    ) {
      return ruleError(
        'invalid_options',
        'hot-potato options are { minFuse?: number, maxFuse?: number, startAfter?: number }',
      )
    }
    for (const key of OPTION_KEYS) {
      const v = options[key]
      if (v === undefined) continue
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_OPTION_TICKS) {
        return ruleError(
          'invalid_options',
          `${key} must be an integer from 1 to ${MAX_OPTION_TICKS}`,
        )
      }
      values[key] = v
    }
  }
  if (values.minFuse > values.maxFuse) {
    return ruleError(
      'invalid_options',
      `minFuse (${values.minFuse}) must not exceed maxFuse (${values.maxFuse})`,
    )
  }
  return {
    ...values,
    nobodyReadyEnds: true,
    awaiting: setup.roster.map((p) => p.playerId),
    startAt: null,
    players: setup.roster.map(({ playerId, team }) => ({
      playerId,
      team,
      ready: false,
      out: null,
    })),
    holder: null,
    explodesAt: null,
    round: 0,
    passes: 0,
    outOrder: [],
    outTicks: {},
    winner: null,
    ended: null,
    // A team whose opponents are all out has won: playing on among themselves, its players
    // closing the app together (or nobody readying) ended the game abandoned, unrated.
    ...(new Set(setup.roster.map((p) => p.team)).size > 1 ? { lastTeamWins: true as const } : {}),
  }
}

function parseAction(raw: unknown): PotatoAction | RuleError {
  if (!isPlainObject(raw)) return ruleError('invalid_action', 'an action must be an object')
  if ('type' in raw && raw.type !== 'action') {
    return ruleError('invalid_action', 'type must be "action"')
  }
  const allowed = raw.action === 'pass' ? ['type', 'action', 'to'] : ['type', 'action']
  for (const key of Object.keys(raw)) {
    if (!allowed.includes(key)) {
      return ruleError('invalid_action', `unexpected field ${key.slice(0, 32)}`)
    }
  }
  if (raw.action === 'ready') return { action: 'ready' }
  if (raw.action !== 'pass') return ruleError('invalid_action', 'actions are "ready" and "pass"')
  const to = raw.to
  if (typeof to !== 'string' || to.length === 0 || to.length > MAX_PLAYER_ID_LENGTH) {
    return ruleError(
      'invalid_action',
      `to must be a player id of 1 to ${MAX_PLAYER_ID_LENGTH} characters`,
    )
  }
  return { action: 'pass', to }
}

function inGame(players: readonly PotatoPlayer[]): PotatoPlayer[] {
  return players.filter((p) => p.out === null)
}

/**
 * `awaiting` and `startAt` once `players` are in and `awaiting` still to connect at `tick`:
 * `startAfter` starts counting when nobody still in is awaited. Nothing for a state from before.
 */
function arrivals(
  state: PotatoState,
  players: readonly PotatoPlayer[],
  awaiting: string[] | undefined,
  tick: number,
): Pick<PotatoState, 'awaiting' | 'startAt'> {
  if (awaiting === undefined) return {}
  if (state.startAt != null) return { awaiting, startAt: state.startAt }
  const allHere = inGame(players).every((p) => !awaiting.includes(p.playerId))
  return { awaiting, startAt: allHere ? tick + state.startAfter : null }
}

/** A new round among the players still in: a holder and a fuse, both from the seeded RNG. */
function lightFuse(
  state: PotatoState,
  players: PotatoPlayer[],
  tick: number,
  rng: Rng,
): Pick<PotatoState, 'holder' | 'explodesAt' | 'round'> {
  const live = inGame(players)
  const holder = live[rng.int(0, live.length - 1)]?.playerId ?? null
  const explodesAt = tick + rng.int(state.minFuse, state.maxFuse)
  return { holder, explodesAt, round: state.round + 1 }
}

/**
 * `player` goes out: the game ends if one player remains, a new round starts if they held the
 * potato, and otherwise (while waiting) the fuse is lit if everyone left is ready.
 */
function knockOut(
  state: PotatoState,
  player: string,
  cause: 'exploded' | 'absent',
  tick: number,
  rng: Rng,
): Applied<PotatoState, PotatoEvent> {
  const players = state.players.map((p) => (p.playerId === player ? { ...p, out: cause } : p))
  const outOrder = [...state.outOrder, player]
  const outTicks =
    state.outTicks === undefined ? {} : { outTicks: { ...state.outTicks, [player]: tick } }
  // One who never came is awaited no more: the others' start may count from now.
  const arrived = arrivals(
    state,
    players,
    state.awaiting?.filter((id) => id !== player),
    tick,
  )
  const live = inGame(players)
  let next: PotatoState
  // One player left, or (in teams) one team: the first of them in roster order wins.
  const oneSideLeft =
    live.length <= 1 || (state.lastTeamWins && live.every((p) => p.team === live[0]!.team))
  if (oneSideLeft) {
    const winner = live[0]?.playerId ?? null
    const ended: GameResult['reason'] =
      winner === null ? 'abandoned' : cause === 'exploded' ? 'finished' : 'forfeit'
    next = {
      ...state,
      players,
      outOrder,
      ...outTicks,
      ...arrived,
      holder: null,
      explodesAt: null,
      winner,
      ended,
    }
  } else if (state.explodesAt === null) {
    next = { ...state, players, outOrder, ...outTicks, ...arrived }
    if (live.every((p) => p.ready)) next = { ...next, ...lightFuse(state, players, tick, rng) }
  } else if (state.holder === player) {
    next = { ...state, players, outOrder, ...outTicks, ...lightFuse(state, players, tick, rng) }
  } else {
    next = { ...state, players, outOrder, ...outTicks }
  }
  return {
    state: next,
    event: {
      kind: cause === 'exploded' ? 'exploded' : 'forfeit',
      player,
      tick,
      holder: next.holder,
      explodesAt: next.explodesAt,
      winner: next.winner,
      ended: next.ended,
    },
  }
}

function apply(
  state: PotatoState,
  action: PotatoAction,
  ctx: ActionContext,
): Applied<PotatoState, PotatoEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const me = state.players.find((p) => p.playerId === ctx.player)
  if (me === undefined) return ruleError('not_a_player', 'you are not in this game')
  if (me.out !== null) return ruleError('out', 'you are out of this game')

  if (action.action === 'ready') {
    if (state.explodesAt !== null) return ruleError('already_started', 'the fuse is already lit')
    if (me.ready) return ruleError('already_ready', 'you are ready already')
    const players = state.players.map((p) => (p === me ? { ...p, ready: true } : p))
    let next: PotatoState = { ...state, players }
    if (inGame(players).every((p) => p.ready)) {
      next = { ...next, ...lightFuse(state, players, ctx.tick, ctx.rng) }
    }
    return {
      state: next,
      event: {
        kind: 'ready',
        player: me.playerId,
        tick: ctx.tick,
        holder: next.holder,
        explodesAt: next.explodesAt,
      },
    }
  }

  if (state.explodesAt === null) return ruleError('not_started', 'the fuse is not lit yet')
  if (state.holder !== me.playerId) {
    return ruleError('not_holder', `${state.holder ?? 'nobody'} holds the potato`)
  }
  if (ctx.tick >= state.explodesAt) return ruleError('too_late', 'the fuse has burnt out')
  const target = state.players.find((p) => p.playerId === action.to)
  if (target === undefined || target === me || target.out !== null) {
    return ruleError('invalid_target', 'pass to another player who is still in')
  }
  return {
    state: { ...state, holder: target.playerId, passes: state.passes + 1 },
    event: {
      kind: 'pass',
      from: me.playerId,
      to: target.playerId,
      tick: ctx.tick,
      explodesAt: state.explodesAt,
    },
  }
}

function onTick(state: PotatoState, ctx: TickContext): { state: PotatoState; event?: PotatoEvent } {
  if (state.ended !== null) return { state }
  if (state.explodesAt === null) {
    const startAt = state.awaiting === undefined ? state.startAfter : state.startAt
    if (startAt == null || ctx.tick < startAt) return { state }
    if (state.nobodyReadyEnds && !inGame(state.players).some((p) => p.ready)) {
      return onAbandon(state, ctx)
    }
    const lit = lightFuse(state, state.players, ctx.tick, ctx.rng)
    return {
      state: { ...state, ...lit },
      event: { kind: 'lit', tick: ctx.tick, holder: lit.holder!, explodesAt: lit.explodesAt! },
    }
  }
  if (ctx.tick < state.explodesAt || state.holder === null) return { state }
  return knockOut(state, state.holder, 'exploded', ctx.tick, ctx.rng)
}

/**
 * The first tick at which `onTick` changes something: the start (`startAfter`, counted once
 * everyone has connected) or the fuse's end; null while players are awaited or once it is over.
 * The session sleeps until then: a match whose players load for two minutes, or whose fuse burns
 * for ten seconds, is not woken five times a second to learn that nothing happened.
 */
function quietUntil(state: PotatoState): number | null {
  if (state.ended !== null) return null
  if (state.explodesAt !== null) return state.holder === null ? null : state.explodesAt
  return state.awaiting === undefined ? state.startAfter : (state.startAt ?? null)
}

/**
 * A player's first connection: awaited no more. Anything else changes nothing (refused, not
 * logged), as does every connection to a match from before the connections counted.
 */
function onConnect(
  state: PotatoState,
  ctx: ActionContext,
): Applied<PotatoState, PotatoEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  if (state.awaiting === undefined || !state.awaiting.includes(ctx.player)) {
    return ruleError('already_joined', `${ctx.player} has connected before`)
  }
  const arrived = arrivals(
    state,
    state.players,
    state.awaiting.filter((id) => id !== ctx.player),
    ctx.tick,
  )
  return {
    state: { ...state, ...arrived },
    event: {
      kind: 'joined',
      player: ctx.player,
      tick: ctx.tick,
      awaiting: arrived.awaiting!,
      startAt: arrived.startAt ?? null,
    },
  }
}

function onAbsent(
  state: PotatoState,
  ctx: ActionContext,
): Applied<PotatoState, PotatoEvent> | RuleError {
  if (state.ended !== null) return ruleError('game_over', 'the game is over')
  const me = state.players.find((p) => p.playerId === ctx.player)
  if (me === undefined) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  if (me.out === 'absent') return ruleError('already_absent', `${ctx.player} already forfeited`)
  if (me.out !== null) return ruleError('already_out', `${ctx.player} is out already`)
  return knockOut(state, me.playerId, 'absent', ctx.tick, ctx.rng)
}

function onAbandon(state: PotatoState, ctx: TickContext): Applied<PotatoState, PotatoEvent> {
  const left = inGame(state.players).map((p) => p.playerId)
  const players = state.players.map((p) =>
    left.includes(p.playerId) ? { ...p, out: 'absent' as const } : p,
  )
  // Out together, so they share a place (a state from before outTicks keeps going without).
  const outTicks =
    state.outTicks === undefined
      ? {}
      : { outTicks: { ...state.outTicks, ...Object.fromEntries(left.map((id) => [id, ctx.tick])) } }
  return {
    state: {
      ...state,
      players,
      ...outTicks,
      outOrder: [...state.outOrder, ...left],
      holder: null,
      explodesAt: null,
      winner: null,
      ended: 'abandoned',
    },
    event: {
      kind: 'abandoned',
      players: left,
      tick: ctx.tick,
      holder: null,
      explodesAt: null,
      ended: 'abandoned',
    },
  }
}

/**
 * The winner first, then those knocked out by the potato, then those who left; later out is
 * better. Players out for the same cause at the same tick (graces that ended together) share a
 * place, which the ratings count as a draw; a match from before outTicks places them by the
 * order they went out.
 */
function result(state: PotatoState): GameResult | null {
  if (state.ended === null) return null
  const outAt = new Map(state.outOrder.map((id, i) => [id, i]))
  // The winner's teammates still in come next (a team's win: they were never knocked out).
  const rank = (p: PotatoPlayer): number =>
    p.playerId === state.winner
      ? 0
      : state.lastTeamWins && p.out === null && state.winner !== null
        ? 0.5
        : p.out === 'absent'
          ? 2
          : 1
  const order = state.players
    .map((p, i) => ({ p, i }))
    .sort(
      (x, y) =>
        rank(x.p) - rank(y.p) ||
        (outAt.get(y.p.playerId) ?? -1) - (outAt.get(x.p.playerId) ?? -1) ||
        x.i - y.i,
    )
  const outTick = (p: PotatoPlayer) => state.outTicks?.[p.playerId]
  const together = (a: PotatoPlayer, b: PotatoPlayer) =>
    a.out !== null && a.out === b.out && outTick(a) !== undefined && outTick(a) === outTick(b)
  const places = competitionPlaces(order, (x, y) => together(x.p, y.p))
  return {
    placements: order.map(({ p }, k) => ({
      playerId: p.playerId,
      team: p.team,
      place: places[k]!,
    })),
    reason: state.ended,
    winner: state.winner,
  }
}

/** The hot-potato rules module (everything is public, so `view` is the whole state). */
export const hotPotato: Rules<PotatoState, PotatoAction, PotatoEvent> = {
  name: 'hot-potato',
  players: { min: 2, max: 32 },
  tickRate: HOT_POTATO_TICK_RATE,
  init,
  parseAction,
  apply,
  onTick,
  quietUntil,
  onConnect,
  onAbsent,
  onAbandon,
  result,
  view: (state) => state,
}
