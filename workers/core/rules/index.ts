import { diceRace } from './dice-race.ts'
import { hotPotato } from './hot-potato.ts'
import { relay } from './relay.ts'
import { rockPaperScissors } from './rock-paper-scissors.ts'
import { createMatch, startRefusal } from './engine.ts'
import { checkJson, type JsonLimits } from './json.ts'
import { isRuleError, type AnyRules, type RosterEntry } from './types.ts'

export type * from './types.ts'
export { competitionPlaces, isRuleError, ruleError } from './types.ts'
export {
  createMatch,
  replay,
  ReplayError,
  resultOf,
  resultRefusal,
  startRefusal,
  step,
  viewRecord,
} from './engine.ts'
export type { Input, LogRecord, MatchState, Stepped } from './engine.ts'
export { createRng, isRngState, seedRng } from './rng.ts'
export { diceRace } from './dice-race.ts'
export { hotPotato } from './hot-potato.ts'
export { relay } from './relay.ts'
export { rockPaperScissors } from './rock-paper-scissors.ts'

/** The most ticks a second a module may ask for (dice-race counts milliseconds of game time). */
export const MAX_TICK_RATE = 1000

/** Most players a session may have, whatever the rules allow. */
export const MAX_ROSTER = 64

/** What every rules module must have (docs/rules.md); the other hooks are optional. */
const REQUIRED_HOOKS = ['init', 'parseAction', 'apply', 'onAbsent', 'result', 'view'] as const

/**
 * Why the session could not run `rules` as declared, or null. Checked when the registry is
 * built, so a module declared wrong fails `wrangler dev` and the tests at once, not a live game:
 * a `tickRate` of 0 or NaN would silently mean no clock, and `onTick` without a rate is never
 * called.
 */
export function declarationRefusal(rules: AnyRules): string | null {
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(rules.name)) {
    return `name '${rules.name}': lower-case letters, digits and "-", at most 64`
  }
  // A module in plain JavaScript has no compiler to say so: without `onAbsent`, say, absences
  // would be dropped and every player who left counted as still in.
  for (const hook of REQUIRED_HOOKS) {
    if (typeof rules[hook] !== 'function') return `${rules.name}: ${hook} is required`
  }
  const rate = rules.tickRate
  if (rate !== undefined && (!Number.isInteger(rate) || rate < 1 || rate > MAX_TICK_RATE)) {
    return `${rules.name}: tickRate ${rate} is not an integer from 1 to ${MAX_TICK_RATE}`
  }
  if (rate === undefined && (rules.onTick || rules.nextTick || rules.quietUntil)) {
    return `${rules.name}: onTick, nextTick and quietUntil need a tickRate`
  }
  // A queue checks its size against these: past a session's roster, every match it made would
  // fail at the session and its players be cancelled (session_failed), again at every join.
  const players = rules.players as { min?: unknown; max?: unknown } | undefined
  const { min, max } = players ?? {}
  if (
    !Number.isInteger(min) ||
    !Number.isInteger(max) ||
    (min as number) < 1 ||
    (min as number) > (max as number) ||
    (max as number) > MAX_ROSTER
  ) {
    return `${rules.name}: players needs whole numbers 1 <= min <= max <= ${MAX_ROSTER} (a session's roster)`
  }
  return null
}

function registered(modules: AnyRules[]): ReadonlyMap<string, AnyRules> {
  const byName = new Map<string, AnyRules>()
  for (const rules of modules) {
    const refusal = declarationRefusal(rules)
    if (refusal) throw new Error(`rules module refused: ${refusal}`)
    if (byName.has(rules.name)) throw new Error(`two rules modules named '${rules.name}'`)
    byName.set(rules.name, rules)
  }
  return byName
}

const registry = registered([relay, diceRace, hotPotato, rockPaperScissors])

/**
 * Rules options are stored with a queue and copied into every session it makes; the shipped
 * rules read a field or two. Bounded in size and nesting wherever they come in.
 */
export const RULES_OPTIONS_LIMITS: JsonLimits = { maxBytes: 4096, maxDepth: 8 }

/**
 * Why `rules` would refuse to start a match of `roster` with `options` (a trial start), or null.
 * Options outside RULES_OPTIONS_LIMITS give null: their own field check reports them.
 * @example optionsRefusal(diceRace, roster, { target: 0 }) // 'target must be an integer from 1 to 10000'
 */
export function optionsRefusal(
  rules: AnyRules,
  roster: RosterEntry[],
  options: unknown,
): string | null {
  if (options !== undefined && !checkJson(options, RULES_OPTIONS_LIMITS).ok) return null
  const trial = createMatch(rules, {
    roster,
    seed: 'validate',
    ...(options !== undefined ? { options } : {}),
  })
  return isRuleError(trial) ? trial.error.message : startRefusal(rules, trial)
}

/** Names of the shipped rules, for validating a queue's `rules` field. */
export const rulesNames: readonly string[] = Object.freeze([...registry.keys()])

/**
 * The rules module registered under `name`, or undefined.
 * @example
 * const rules = getRules(queue.rules)
 * if (!rules) throw new HTTPException(400, { message: `unknown rules ${queue.rules}` })
 */
export function getRules(name: string): AnyRules | undefined {
  return registry.get(name)
}
