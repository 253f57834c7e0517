import { createHash } from 'node:crypto'

// Flags Redis 7 accepts in a `#!lua flags=…` shebang. Upstash adds its own (e.g.
// `allow-key-locking`, used by @upstash/ratelimit) which Redis rejects.
const REDIS_SCRIPT_FLAGS = new Set([
  'no-writes',
  'allow-oom',
  'allow-stale',
  'no-cluster',
  'allow-cross-slot-keys',
])

/** Lower-case hex SHA1, as Redis names scripts. */
export function sha1(text: string): string {
  return createHash('sha1').update(text).digest('hex')
}

/**
 * Makes an Upstash-flavoured Lua script acceptable to Redis 7: keeps the shebang (so the script
 * keeps shebang semantics) but drops flags and options Redis does not know. Other lines are
 * untouched, so error line numbers stay the same. Returns the script itself when nothing changes.
 *
 * @example
 * rewriteScript('#!lua flags=allow-key-locking,no-writes\nreturn 1')
 * // '#!lua flags=no-writes\nreturn 1'
 */
export function rewriteScript(script: string): string {
  if (!script.startsWith('#!')) return script
  const newline = script.indexOf('\n')
  const firstLine = newline === -1 ? script : script.slice(0, newline)
  const rest = newline === -1 ? '' : script.slice(newline)
  const cr = firstLine.endsWith('\r') ? '\r' : ''
  const [engine = 'lua', ...options] = firstLine.slice(2).trim().split(/\s+/)
  const flags: string[] = []
  for (const option of options) {
    if (!option.startsWith('flags=')) continue
    for (const flag of option.slice('flags='.length).split(',')) {
      if (REDIS_SCRIPT_FLAGS.has(flag)) flags.push(flag)
    }
  }
  const shebang = (flags.length > 0 ? `#!${engine} flags=${flags.join(',')}` : `#!${engine}`) + cr
  return shebang === firstLine ? script : shebang + rest
}

/**
 * Remembers, for each rewritten script, which SHA1 the client knows it by (the original's) and
 * which one Redis knows it by (the rewritten one's).
 */
export class ScriptShaMap {
  readonly #toRedis = new Map<string, string>()

  /** Rewrites `script` and records the SHA mapping if it changed. */
  prepare(script: string): string {
    const rewritten = rewriteScript(script)
    if (rewritten !== script) this.#toRedis.set(sha1(script), sha1(rewritten))
    return rewritten
  }

  /** The SHA Redis knows for a SHA the client sent; unknown SHAs pass through (→ NOSCRIPT). */
  toRedis(sha: string): string {
    return this.#toRedis.get(sha.toLowerCase()) ?? sha
  }
}
