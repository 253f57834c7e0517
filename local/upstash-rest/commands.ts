import { RespError } from './resp.ts'
import type { RespValue } from './resp.ts'
import { sha1 } from './scripts.ts'
import type { ScriptShaMap } from './scripts.ts'

/** A command ready for Redis, plus a fix-up applied to its reply. */
export interface PreparedCommand {
  args: string[]
  blocking: boolean
  fixReply: (reply: RespValue) => RespValue
}

// Commands that change or depend on the state of the (shared, pooled) connection, or that would
// stop or take over the server: a REST endpoint has no connection of its own to offer them.
const REFUSED = new Set([
  'MULTI',
  'EXEC',
  'DISCARD',
  'WATCH',
  'UNWATCH',
  'SELECT',
  'SWAPDB',
  'AUTH',
  'HELLO',
  'RESET',
  'QUIT',
  'CLIENT',
  'SUBSCRIBE',
  'PSUBSCRIBE',
  'SSUBSCRIBE',
  'UNSUBSCRIBE',
  'PUNSUBSCRIBE',
  'SUNSUBSCRIBE',
  'MONITOR',
  'SYNC',
  'PSYNC',
  'REPLCONF',
  'REPLICAOF',
  'SLAVEOF',
  'SHUTDOWN',
  'DEBUG',
])

const BLOCKING = new Set([
  'BLPOP',
  'BRPOP',
  'BRPOPLPUSH',
  'BLMOVE',
  'BLMPOP',
  'BZPOPMIN',
  'BZPOPMAX',
  'BZMPOP',
  'WAIT',
  'WAITAOF',
])

const identity = (reply: RespValue): RespValue => reply

function toArg(value: unknown): string | undefined {
  switch (typeof value) {
    case 'string':
      return value
    case 'number':
    case 'boolean':
      return String(value)
    default:
      return undefined
  }
}

/**
 * What a read-only token may run, as Upstash's read-only user (`default_ro`, ACL `+@read`) may:
 * anything else is refused with Redis's NOPERM.
 */
const READ_ONLY = new Set([
  'GET',
  'MGET',
  'GETRANGE',
  'STRLEN',
  'EXISTS',
  'TYPE',
  'TTL',
  'PTTL',
  'PING',
  'ECHO',
  'TIME',
  'DBSIZE',
  'SCAN',
  'KEYS',
  'HGET',
  'HMGET',
  'HGETALL',
  'HLEN',
  'HEXISTS',
  'LRANGE',
  'LLEN',
  'SMEMBERS',
  'SISMEMBER',
  'SCARD',
  'ZRANGE',
  'ZREVRANGE',
  'ZSCORE',
  'ZRANK',
  'ZREVRANK',
  'ZCARD',
  'ZCOUNT',
  'EVAL_RO',
  'EVALSHA_RO',
])

/**
 * Validates one command from a request body and rewrites what Redis would not accept as sent:
 * Upstash-only Lua shebang flags (EVAL, SCRIPT LOAD) and the SHAs of rewritten scripts
 * (EVALSHA, SCRIPT EXISTS). Returns an error message for refused or malformed commands.
 */
export function prepareCommand(
  raw: unknown,
  scripts: ScriptShaMap,
  /** Sent with the read-only token: only READ_ONLY commands run. */
  readOnly = false,
): PreparedCommand | string {
  if (!Array.isArray(raw) || raw.length === 0) {
    return 'ERR command must be a non-empty JSON array'
  }
  const args: string[] = []
  for (const item of raw) {
    const arg = toArg(item)
    if (arg === undefined) return 'ERR command arguments must be strings or numbers'
    args.push(arg)
  }
  const name = (args[0] ?? '').toUpperCase()
  if (REFUSED.has(name)) return `ERR command is not available over REST: ${name}`
  if (readOnly && !READ_ONLY.has(name)) {
    return `NOPERM this user has no permissions to run the '${name.toLowerCase()}' command`
  }
  const blocking =
    BLOCKING.has(name) ||
    ((name === 'XREAD' || name === 'XREADGROUP') && args.some((a) => a.toUpperCase() === 'BLOCK'))

  let fixReply = identity
  const second = args[1]
  if ((name === 'EVAL' || name === 'EVAL_RO') && second !== undefined) {
    args[1] = scripts.prepare(second)
  } else if ((name === 'EVALSHA' || name === 'EVALSHA_RO') && second !== undefined) {
    args[1] = scripts.toRedis(second)
  } else if (name === 'SCRIPT' && second !== undefined) {
    const sub = second.toUpperCase()
    const script = args[2]
    if (sub === 'LOAD' && script !== undefined) {
      args[2] = scripts.prepare(script)
      // The client expects the SHA of the script it sent, which is what it will EVALSHA.
      const clientSha = sha1(script)
      fixReply = (reply) => (reply instanceof RespError ? reply : clientSha)
    } else if (sub === 'EXISTS') {
      for (let i = 2; i < args.length; i++) {
        const sha = args[i]
        if (sha !== undefined) args[i] = scripts.toRedis(sha)
      }
    }
  }
  return { args, blocking, fixReply }
}

/** JSON form of a reply: strings as UTF-8 or base64, integers and nil as they are. */
export type JsonReply = string | number | null | JsonReply[]

/**
 * Converts a RESP reply to the JSON Upstash returns. With `base64`, every string (simple or
 * bulk) is base64 of its bytes, as Upstash does for `Upstash-Encoding: base64`.
 */
export function toJson(reply: RespValue, base64: boolean): JsonReply {
  if (reply === null || typeof reply === 'number') return reply
  if (Array.isArray(reply)) return reply.map((item) => toJson(item, base64))
  if (reply instanceof RespError) return reply.message
  if (typeof reply === 'string') return base64 ? Buffer.from(reply).toString('base64') : reply
  return base64 ? reply.toString('base64') : reply.toString('utf8')
}
