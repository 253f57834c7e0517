import type { JsonValue } from './json.ts'
import { checkJson, isPlainObject } from './json.ts'
import type { ActionContext, Applied, GameResult, GameSetup, RuleError, Rules } from './types.ts'
import { ruleError } from './types.ts'

/**
 * relay: the server keeps order and fans out, clients decide everything else (chat, positions,
 * client-authoritative games). `{"type":"action","action":"message","data":<JSON>}` becomes the
 * event `{ kind: 'message', from, data }` for everyone, with `from` the authenticated sender.
 *
 * `data` must be plain JSON of at most 4 KiB (UTF-8 of its JSON text) nested at most 16 deep.
 * A relay never ends by itself, except when every player has been absent past the grace period
 * (reason `abandoned`, no winner, everyone placed 1st). A player reported absent counts as present
 * again when they reconnect (`onReturn`) or send a message.
 *
 * A relay holds at most `maxMessages` messages (option, 1 to 500,000, default 500,000); past
 * that, messages are refused (`log_full`) and the session ends as any relay does, when everyone
 * has left. A player's absence and return are records too, and count against the same bound:
 * otherwise leaving and coming back, once a grace period, would grow a log no message can. Once
 * full, a return is refused (the player stays absent to the rules, so the relay still ends when
 * the others leave), while an absence is always taken, as the end depends on it: past the bound a
 * log grows by at most one record per player. Every message is a record in the session's log, kept in its object while it runs and
 * archived to Neon after: without a bound, a room nobody leaves would grow its storage forever.
 * A record holds `data` twice (the logged action and its event), so the largest is about 8.6 KB
 * and 500,000 of them about 4.3 GB, well inside a Durable Object's 10 GB (raising `RELAY_LIMITS`
 * or the ceiling needs this sum done again). States from before the bound (no `maxMessages`)
 * stay unbounded, so their logs replay as recorded.
 */

export const RELAY_LIMITS = { maxBytes: 4096, maxDepth: 16 } as const
/** The most messages one relay may hold, and the default of its `maxMessages` option. */
export const RELAY_MAX_MESSAGES = 500_000

export interface RelayPlayer {
  playerId: string
  team: number
  absent: boolean
}

export interface RelayState {
  players: RelayPlayer[]
  /** Messages relayed so far. */
  messages: number
  /** Messages after which more are refused (`log_full`); absent in states from before the bound. */
  maxMessages?: number
  /**
   * Absences and returns logged, counted with `messages` against `maxMessages`; absent in states
   * from before 2026-12-05, whose presence records are not counted.
   */
  presence?: number
  /** True once every player has been absent at the same time. */
  ended: boolean
}

export interface RelayAction {
  action: 'message'
  data: JsonValue
}

export type RelayEvent =
  | { kind: 'message'; from: string; data: JsonValue }
  | { kind: 'absent'; player: string; ended: boolean }
  | { kind: 'returned'; player: string }

export interface RelayOptions {
  /** Messages after which more are refused (1 to 500,000, default 500,000). */
  maxMessages?: number
}

function init(setup: GameSetup): RelayState | RuleError {
  let maxMessages = RELAY_MAX_MESSAGES
  const { options } = setup
  if (options !== undefined && options !== null) {
    if (!isPlainObject(options) || Object.keys(options).some((k) => k !== 'maxMessages')) {
      return ruleError('invalid_options', 'relay options are { maxMessages?: number }')
    }
    const v = options.maxMessages
    if (v !== undefined) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > RELAY_MAX_MESSAGES) {
        return ruleError(
          'invalid_options',
          `maxMessages must be an integer from 1 to ${RELAY_MAX_MESSAGES.toLocaleString('en-US')}`,
        )
      }
      maxMessages = v
    }
  }
  return {
    players: setup.roster.map(({ playerId, team }) => ({ playerId, team, absent: false })),
    messages: 0,
    maxMessages,
    presence: 0,
    ended: false,
  }
}

function parseAction(raw: unknown): RelayAction | RuleError {
  if (!isPlainObject(raw)) return ruleError('invalid_action', 'an action must be an object')
  for (const key of Object.keys(raw)) {
    if (key !== 'type' && key !== 'action' && key !== 'data') {
      return ruleError('invalid_action', `unexpected field ${key.slice(0, 32)}`)
    }
  }
  if ('type' in raw && raw.type !== 'action') {
    return ruleError('invalid_action', 'type must be "action"')
  }
  if (raw.action !== 'message') return ruleError('invalid_action', 'the only action is "message"')
  if (!('data' in raw)) return ruleError('invalid_action', 'a message needs data')
  const checked = checkJson(raw.data, RELAY_LIMITS)
  if (!checked.ok) {
    return ruleError(checked.tooLarge ? 'too_large' : 'invalid_action', `data: ${checked.reason}`)
  }
  return { action: 'message', data: checked.value }
}

function findPlayer(state: RelayState, player: string): number {
  return state.players.findIndex((p) => p.playerId === player)
}

/** Whether the log holds its limit: messages and presence records, `maxMessages` in all. */
function isFull(state: RelayState): boolean {
  return (
    state.maxMessages !== undefined && state.messages + (state.presence ?? 0) >= state.maxMessages
  )
}

function logFull(state: RelayState): RuleError {
  return ruleError(
    'log_full',
    `this session holds its limit of ${state.maxMessages} records (messages, absences and returns); start a new one`,
  )
}

/** The state's presence count after one more absence or return, where it counts them. */
function countedPresence(state: RelayState): Pick<RelayState, 'presence'> {
  return state.presence === undefined ? {} : { presence: state.presence + 1 }
}

function setAbsent(state: RelayState, index: number, absent: boolean): RelayPlayer[] {
  return state.players.map((p, i) => (i === index ? { ...p, absent } : p))
}

function apply(
  state: RelayState,
  action: RelayAction,
  ctx: ActionContext,
): Applied<RelayState, RelayEvent> | RuleError {
  if (state.ended) return ruleError('game_over', 'the game is over')
  const index = findPlayer(state, ctx.player)
  if (index === -1) return ruleError('not_a_player', 'you are not in this game')
  if (isFull(state)) return logFull(state)
  const players = state.players[index]?.absent ? setAbsent(state, index, false) : state.players
  return {
    state: { ...state, players, messages: state.messages + 1 },
    event: { kind: 'message', from: ctx.player, data: action.data },
  }
}

function onAbsent(
  state: RelayState,
  ctx: ActionContext,
): Applied<RelayState, RelayEvent> | RuleError {
  if (state.ended) return ruleError('game_over', 'the game is over')
  const index = findPlayer(state, ctx.player)
  if (index === -1) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  if (state.players[index]?.absent) return ruleError('already_absent', `${ctx.player} is absent`)
  const players = setAbsent(state, index, true)
  const ended = players.every((p) => p.absent)
  return {
    state: { ...state, players, ended, ...countedPresence(state) },
    event: { kind: 'absent', player: ctx.player, ended },
  }
}

function onReturn(
  state: RelayState,
  ctx: ActionContext,
): Applied<RelayState, RelayEvent> | RuleError {
  if (state.ended) return ruleError('game_over', 'the game is over')
  const index = findPlayer(state, ctx.player)
  if (index === -1) return ruleError('not_a_player', `${ctx.player} is not in this game`)
  if (!state.players[index]?.absent) return ruleError('not_absent', `${ctx.player} is present`)
  if (state.presence !== undefined && isFull(state)) return logFull(state)
  return {
    state: { ...state, players: setAbsent(state, index, false), ...countedPresence(state) },
    event: { kind: 'returned', player: ctx.player },
  }
}

function result(state: RelayState): GameResult | null {
  if (!state.ended) return null
  return {
    placements: state.players.map((p) => ({ playerId: p.playerId, team: p.team, place: 1 })),
    reason: 'abandoned',
    winner: null,
  }
}

/** The relay rules module (nothing is hidden, so `view` is the whole state). */
export const relay: Rules<RelayState, RelayAction, RelayEvent> = {
  name: 'relay',
  players: { min: 1, max: 64 },
  init,
  parseAction,
  apply,
  onAbsent,
  onReturn,
  result,
  view: (state) => state,
}
