/**
 * Structured logs: one JSON object per line, so Workers Logs / Logpush can filter on fields.
 * The level comes from LOG_LEVEL (default 'info').
 */
const levels = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 } as const
export type LogLevel = Exclude<keyof typeof levels, 'silent'>

let threshold: number = levels.info

/**
 * Lines at or above this level are written whatever LOG_LEVEL says (null: none). For tests, which
 * read what an object logs at its start, where the environment's LOG_LEVEL (silent in tests)
 * applies before a test could change it.
 */
export const logFloor: { level: LogLevel | null } = { level: null }

/** Sets the minimum level logged, from the LOG_LEVEL variable. Unknown values keep 'info'. */
export function setLogLevel(level: string | undefined): void {
  if (level && level in levels) threshold = levels[level as keyof typeof levels]
}

/** The deployment's secrets, longest first, each blanked wherever a log line would quote it. */
let secrets: string[] = []
/** The same, as JSON writes them inside a string: what a serialized line is searched for. */
let secretsEscaped: string[] = []
let secretsKey = ''

/** What `configureLog` reads: the level, and the secrets no log line may quote. */
export interface LogEnv {
  LOG_LEVEL?: string
  DATABASE_URL?: string
  UPSTASH_REDIS_REST_TOKEN?: string
  ADMIN_KEY?: string
  ADMIN_KEY_PREVIOUS?: string
  AUTH_SECRET?: string
  AUTH_SECRET_PREVIOUS?: string
  METRICS_TOKEN?: string
}

/**
 * Sets the level from LOG_LEVEL, and registers the deployment's secrets, so that a log line
 * quoting one (an error repeating a connection string that would not parse, with a password
 * that `withoutCredentials`' pattern cannot find the end of) has it blanked. Called wherever
 * an environment comes in: a request, a cron run, an object's start.
 */
export function configureLog(env: LogEnv): void {
  setLogLevel(env.LOG_LEVEL)
  const { DATABASE_URL, UPSTASH_REDIS_REST_TOKEN, ADMIN_KEY, AUTH_SECRET, METRICS_TOKEN } = env
  const { ADMIN_KEY_PREVIOUS, AUTH_SECRET_PREVIOUS } = env
  const values = [
    UPSTASH_REDIS_REST_TOKEN,
    ADMIN_KEY,
    ADMIN_KEY_PREVIOUS,
    AUTH_SECRET,
    AUTH_SECRET_PREVIOUS,
    METRICS_TOKEN,
  ]
  const key = [DATABASE_URL, ...values].join('\n')
  if (key === secretsKey) return
  secretsKey = key
  if (DATABASE_URL) values.push(DATABASE_URL, ...urlPasswords(DATABASE_URL))
  secrets = [
    ...new Set(
      // A short value would blank ordinary words: one under 8 characters is left to the URL
      // pattern (a password) or not blanked at all (an admin key that short is guessable anyway).
      values.filter((v): v is string => v !== undefined && v.length >= MIN_SECRET_LENGTH),
    ),
  ]
    // The longest first: a password inside its connection string goes with the string.
    .sort((a, b) => b.length - a.length)
  secretsEscaped = secrets.map((v) => JSON.stringify(v).slice(1, -1))
}

const MIN_SECRET_LENGTH = 8

/**
 * The password of a connection string, as written and percent-decoded, found without parsing
 * the URL (a password holding `#`, `/`, `?` or a quote is exactly what makes one fail to parse):
 * after the user's `:`, up to the last `@`. None when it is the user's name or the database's
 * (`postgres:postgres@…`): blanking it would blank every mention of PostgreSQL, and it is no
 * secret.
 */
function urlPasswords(url: string): string[] {
  const m = /^[a-z][a-z0-9+.-]*:\/\/([^:@/]*):(.+)@[^@]*?(?:\/([^/?#]*))?(?:[?#].*)?$/is.exec(url)
  if (!m) return []
  const [, user, password, database] = m as unknown as [string, string, string, string?]
  if (password === user || password === database) return []
  let decoded = password
  try {
    decoded = decodeURIComponent(password)
  } catch {
    // Not percent-encoded validly: as written only.
  }
  return decoded === password ? [password] : [password, decoded]
}

/** `text` with every registered secret in it blanked. */
function withoutSecrets(text: string): string {
  for (const secret of secrets) {
    if (text.includes(secret)) text = text.split(secret).join('***')
  }
  return text
}

/**
 * `value` with the registered secrets blanked in its strings, a few levels down: before the line
 * is serialized, so that a match never starts inside one of JSON's escapes.
 */
function blankSecrets(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return withoutSecrets(value)
  if (depth >= 3 || value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) return value.map((v) => blankSecrets(v, depth + 1))
  if (Object.getPrototypeOf(value) !== Object.prototype) return value
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = blankSecrets(v, depth + 1)
  return out
}

/** Writes one structured log line. */
export function log(level: LogLevel, msg: string, fields: Record<string, unknown> = {}): void {
  if (levels[level] < threshold && !(logFloor.level && levels[level] >= levels[logFloor.level]))
    return
  const body = { level, msg, time: new Date().toISOString(), ...fields }
  let line = JSON.stringify(body)
  // A string holding a secret serializes with the secret's escaped form in it, so a line without
  // any (every line, nearly) is written as it is; one with a match is made again from its
  // strings, blanked before serializing.
  if (secretsEscaped.some((e) => line.includes(e))) line = JSON.stringify(blankSecrets(body))
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
    // What a wrapper wraps (drizzle's "Failed query" wraps the driver's error, which says what
    // went wrong): its message too, a few levels down, as carefully.
    const causes: string[] = []
    let cause = (err as { cause?: unknown }).cause
    for (let depth = 0; cause !== undefined && cause !== null && depth < 3; depth++) {
      causes.push(scrub(cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)))
      cause = cause instanceof Error ? (cause as { cause?: unknown }).cause : undefined
    }
    return {
      error: scrub(err.message),
      errorName: err.name,
      stack: err.stack === undefined ? undefined : scrub(err.stack),
      ...(causes.length === 0 ? {} : { cause: causes.join(' <- ') }),
    }
  }
  return { error: scrub(String(err)) }
}

/**
 * An error's text for a log line: credentials blanked, and the command an Upstash error repeats
 * after its message (`…, command was: [["incr","nexus:rl:guest-auth:<client address>:…"]]`: rate
 * limit keys hold clients' addresses, and a cache write the whole answer) left out.
 */
function scrub(text: string): string {
  return withoutSecrets(
    withoutCredentials(text.replace(/, command was: [^\n]*/g, ', command left out')),
  )
}

/**
 * A request's path as logged and echoed: any caller chooses it, up to the URL's limit (16 KB a
 * request), and a log service keeps every line for months.
 */
export function clippedPath(path: string): string {
  return path.length <= MAX_PATH_CHARS ? path : `${path.slice(0, MAX_PATH_CHARS)}…`
}
const MAX_PATH_CHARS = 256

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
  return scrub(err instanceof Error ? err.message : String(err))
}
