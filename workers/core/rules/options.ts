import { isPlainObject } from './json.ts'
import { ruleError, type RuleError } from './types.ts'

/**
 * A rules module's options as an object holding only `fields` (absent or null: none set), or the
 * refusal naming what the module takes (as numbers: every option of the shipped rules is one).
 * @example const o = optionFields(setup.options, 'dice-race', ['target', 'turnSeconds'])
 */
export function optionFields(
  options: unknown,
  rules: string,
  fields: readonly string[],
): Record<string, unknown> | RuleError {
  if (options === undefined || options === null) return {}
  if (!isPlainObject(options) || Object.keys(options).some((k) => !fields.includes(k))) {
    const shape = fields.map((f) => `${f}?: number`).join(', ')
    return ruleError('invalid_options', `${rules} options are { ${shape} }`)
  }
  return options
}

/**
 * An integer option from `min` to `max` (inclusive), `fallback` when it is not set, or the
 * refusal saying so.
 * @example const target = intOption(o.target, 'target', 1, 10_000, 100)
 */
export function intOption(
  value: unknown,
  name: string,
  min: number,
  max: number,
  fallback: number,
): number | RuleError {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    return ruleError('invalid_options', `${name} must be an integer from ${min} to ${max}`)
  }
  return value
}
