import { diceRace } from './dice-race.ts'
import { hotPotato } from './hot-potato.ts'
import { relay } from './relay.ts'
import { rockPaperScissors } from './rock-paper-scissors.ts'
import { createMatch } from './engine.ts'
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
  step,
  viewRecord,
} from './engine.ts'
export type { Input, LogRecord, MatchState, Stepped } from './engine.ts'
export { createRng, isRngState, seedRng } from './rng.ts'
export { diceRace } from './dice-race.ts'
export { hotPotato } from './hot-potato.ts'
export { relay } from './relay.ts'
export { rockPaperScissors } from './rock-paper-scissors.ts'

const registry: ReadonlyMap<string, AnyRules> = new Map<string, AnyRules>([
  [relay.name, relay],
  [diceRace.name, diceRace],
  [hotPotato.name, hotPotato],
  [rockPaperScissors.name, rockPaperScissors],
])

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
  if (!checkJson(options, RULES_OPTIONS_LIMITS).ok) return null
  const trial = createMatch(rules, { roster, seed: 'validate', options })
  return isRuleError(trial) ? trial.error.message : null
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
