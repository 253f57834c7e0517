/**
 * Structured logs: one JSON object per line, so Workers Logs / Logpush can filter on fields.
 * The level comes from LOG_LEVEL (default 'info').
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const
export type LogLevel = Exclude<keyof typeof levels, 'silent'>

let threshold: number = levels.info

/** Sets the minimum level logged, from the LOG_LEVEL variable. Unknown values keep 'info'. */
export function setLogLevel(level: string | undefined): void {
  if (level && level in levels) threshold = levels[level as keyof typeof levels]
}

/** Writes one structured log line. */
export function log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
  if (levels[level] < threshold) return
  const line = JSON.stringify({ level, msg, time: new Date().toISOString(), ...fields })
  if (level === 'error') console.error(line)
  else if (level === 'warn') console.warn(line)
  else console.log(line)
}

/**
 * Renders an unknown thrown value for a log line without losing its stack. Credentials in a URL
 * quoted by the error (`scheme://user:password@host`: a database or Redis connection string a
 * client repeats in its message) are blanked: logs reach more people than secrets do.
 */
export function errorFields(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    return {
      error: withoutCredentials(err.message),
      errorName: err.name,
      stack: err.stack === undefined ? undefined : withoutCredentials(err.stack),
    }
  }
  return { error: withoutCredentials(String(err)) }
}

/**
 * `text` with the user-information part of every URL in it blanked: everything between the
 * scheme's `//` and the last `@` before the next space or quote, since a password a connection
 * string failed to parse for may hold `/` or `@` itself.
 */
export function withoutCredentials(text: string): string {
  // Bounded (a scheme of at most 32 characters, starting a word; user information of at most
  // 512), so that a long run of letters costs linear time, not quadratic.
  return text.replace(/(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}:\/\/)[^\s"']{0,512}@/gi, '$1***@')
}

/** An error's message for storage or an answer (a close's `lastError`), credentials blanked. */
export function errorMessage(err: unknown): string {
  return withoutCredentials(err instanceof Error ? err.message : String(err))
}
