/**
 * Postgres array literals for set-based statements (`unnest($1::text[], …)`), written here
 * because the Neon driver quotes and regex-escapes every element, numbers too: about a sixth of a
 * Leaderboard object's CPU per archive page of 1,000 rows.
 */

const NEEDS_ESCAPE = /["\\]/
const ESCAPED = /["\\]/g

/**
 * `{1,2.5,-3}`. For finite numbers only: `String()` gives a form float8, int and bigint read
 * back exactly.
 */
export function numberArrayLiteral(values: readonly number[]): string {
  return `{${values.join(',')}}`
}

/** `{"a","b \"c\"",NULL}`: every element quoted, with `"` and `\` escaped; null is SQL NULL. */
export function textArrayLiteral(values: readonly (string | null)[]): string {
  let out = '{'
  for (let i = 0; i < values.length; i++) {
    if (i > 0) out += ','
    const v = values[i]
    if (v === null || v === undefined) out += 'NULL'
    else out += `"${NEEDS_ESCAPE.test(v) ? v.replace(ESCAPED, '\\$&') : v}"`
  }
  return `${out}}`
}
