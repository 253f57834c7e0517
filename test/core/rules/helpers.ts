import fc from 'fast-check'
import { expect } from 'vitest'
import type {
  GameSetup,
  Input,
  LogRecord,
  MatchState,
  Rules,
  RuleError,
} from '../../../workers/core/rules/index.ts'
import {
  createMatch,
  isRuleError,
  replay,
  resultOf,
  resultRefusal,
  step,
} from '../../../workers/core/rules/index.ts'

/** Freeze a value and everything under it, so any mutation by the code under test throws. */
export function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}

/** A JSON round trip, as DO storage would do. */
export function roundTrip<T>(value: T): T {
  return JSON.parse(JSON.stringify(value)) as T
}

/** A roster in turn order, each player on its own team. */
export const roster = (...ids: string[]) => ids.map((playerId, team) => ({ playerId, team }))

/** Steps an input the rules must accept with an event; returns the new match and the event. */
export function accepted<S, A, E>(
  rules: Rules<S, A, E>,
  match: MatchState<S>,
  input: Input,
): { match: MatchState<S>; event: E } {
  const out = step(rules, match, input)
  if (isRuleError(out)) throw new Error(`refused: ${out.error.code}`)
  if (out.record?.event == null) throw new Error('no event')
  return { match: out.match, event: out.record.event }
}

/** Steps an input the rules must refuse, checking the match is untouched; returns the code. */
export function refusalCode<S, A, E>(
  rules: Rules<S, A, E>,
  match: MatchState<S>,
  input: Input,
): string {
  const before = JSON.stringify(match)
  const out = step(rules, deepFreeze(match), input)
  expect(JSON.stringify(match)).toBe(before)
  if (!isRuleError(out)) throw new Error('accepted')
  return out.error.code
}

export function mustCreate<S, A, E>(
  rules: Rules<S, A, E>,
  setup: Parameters<typeof createMatch>[1],
): MatchState<S> {
  const match = createMatch(rules, setup)
  if (isRuleError(match)) throw new Error(`setup refused: ${match.error.message}`)
  return match
}

export interface Outcome<S, E> {
  match: MatchState<S>
  records: LogRecord<E>[]
  /** One entry per input: the record it produced, null if nothing to log, or the refusal. */
  results: (LogRecord<E> | null | RuleError)[]
}

/**
 * Run inputs like a GameSession would, checking on the way that the engine never mutates the
 * match (it is deep-frozen) and that a refusal leaves it as it was.
 */
export function runLive<S, A, E>(
  rules: Rules<S, A, E>,
  start: MatchState<S>,
  inputs: readonly Input[],
  opts: { evictEveryStep?: boolean } = {},
): Outcome<S, E> {
  let match = deepFreeze(start)
  const records: LogRecord<E>[] = []
  const results: (LogRecord<E> | null | RuleError)[] = []
  for (const input of inputs) {
    const before = JSON.stringify(match)
    const out = step(rules, match, input)
    if (JSON.stringify(match) !== before) throw new Error('step changed its input match')
    if (isRuleError(out)) {
      results.push(out)
      continue
    }
    if (out.record === null && out.match !== match) throw new Error('unlogged change')
    if (out.record !== null) records.push(out.record)
    results.push(out.record)
    match = deepFreeze(opts.evictEveryStep ? roundTrip(out.match) : out.match)
  }
  return { match, records, results }
}

/**
 * Plays `inputs` live from `setup` and checks what determinism promises: the log replays to the
 * live match, as it is and as storage hands it back (JSON), and the same seed and inputs give the
 * same game, evicted after every step or not. Returns the live run.
 */
export function expectDeterministic<S, A, E>(
  rules: Rules<S, A, E>,
  setup: GameSetup,
  inputs: readonly Input[],
): Outcome<S, E> {
  const live = runLive(rules, mustCreate(rules, setup), inputs)
  expect(replay(rules, setup, live.records)).toEqual(live.match)
  expect(replay(rules, roundTrip(setup), roundTrip(live.records))).toEqual(live.match)
  const again = runLive(rules, roundTrip(mustCreate(rules, setup)), inputs, {
    evictEveryStep: true,
  })
  expect(again.results).toEqual(live.results)
  expect(again.match).toEqual(live.match)
  // A game that ended gave a result a session can record (every roster player placed, once).
  const result = resultOf(rules, live.match)
  if (result) expect(resultRefusal(result, setup.roster)).toBeNull()
  return live
}

/**
 * Strings over all of UTF-16: lone surrogates, astral pairs, multi-byte characters. Cheaper than
 * fast-check's `unit: 'binary'`, which costs over a second to set up.
 */
export const utf16Arb = fc
  .array(
    fc.oneof(
      fc.integer({ min: 0, max: 0xffff }).map((c) => String.fromCharCode(c)),
      fc.integer({ min: 0x10000, max: 0x10ffff }).map((c) => String.fromCodePoint(c)),
      fc.constantFrom('a', 'é', '€', '"', '\\', '\n'),
    ),
    { maxLength: 30 },
  )
  .map((parts) => parts.join(''))
