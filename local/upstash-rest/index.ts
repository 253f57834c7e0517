import { timingSafeEqual } from 'node:crypto'
import { createServer } from 'node:http'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { HttpError, closeServer, listen, readBody, sendJson } from '../http.ts'
import { prepareCommand, toJson } from './commands.ts'
import type { JsonReply, PreparedCommand } from './commands.ts'
import { RespError, RespPool } from './resp.ts'
import type { RespValue } from './resp.ts'
import { ScriptShaMap } from './scripts.ts'

export { RespConnection, RespError, RespParser, RespPool, encodeCommand } from './resp.ts'
export type { RespArg, RespValue } from './resp.ts'
export { rewriteScript, sha1 } from './scripts.ts'

export interface StartUpstashRestOptions {
  redisPort: number
  /** Defaults to 127.0.0.1. */
  redisHost?: string
  /** The bearer token clients must send (`new Redis({ url, token })`). */
  token: string
  /**
   * A second token that runs reads only, as an Upstash database's read-only token does: writes
   * sent with it are refused (NOPERM).
   */
  readOnlyToken?: string
  /** Defaults to a free port on 127.0.0.1. */
  port?: number
  /** Request bodies above this are answered 413. Defaults to 10 MiB. */
  maxBodyBytes?: number
  /** Pooled RESP connections to redis-server. Defaults to 4. */
  connections?: number
}

export interface UpstashRest {
  port: number
  /** `http://127.0.0.1:<port>`: the `url` for `new Redis({ url, token })`. */
  url: string
  close(): Promise<void>
}

type Entry = { result: JsonReply } | { error: string }

function entry(reply: RespValue, base64: boolean): Entry {
  return reply instanceof RespError ? { error: reply.message } : { result: toJson(reply, base64) }
}

function sameToken(given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

function bearer(req: IncomingMessage, url: URL): string | undefined {
  const header = req.headers.authorization
  if (header !== undefined) {
    const match = /^Bearer\s+(.+)$/i.exec(header)
    return match?.[1]?.trim()
  }
  return url.searchParams.get('_token') ?? undefined
}

/**
 * Starts an HTTP endpoint on 127.0.0.1 that speaks Upstash's REST protocol to the real
 * `@upstash/redis` client and forwards commands to a local redis-server over RESP.
 *
 * - `POST /` `["SET","k","v"]` → `{"result":…}` (200) or `{"error":…}` (400)
 * - `POST /pipeline` and `POST /multi-exec` `[[…],[…]]` → `[{"result"}|{"error"}, …]`
 * - `Authorization: Bearer <token>` (or `?_token=`) required, else 401
 * - `Upstash-Encoding: base64` → every string in the result base64-encoded
 * - Lua scripts with Upstash-only shebang flags are rewritten; EVALSHA with the original SHA works
 *
 * @example
 * const rest = await startUpstashRest({ redisPort: redis.port, token: 'local-token' })
 * const client = new Redis({ url: rest.url, token: 'local-token' })
 */
export async function startUpstashRest(opts: StartUpstashRestOptions): Promise<UpstashRest> {
  const redisHost = opts.redisHost ?? '127.0.0.1'
  const maxBodyBytes = opts.maxBodyBytes ?? 10 * 1024 * 1024
  const pool = new RespPool(redisHost, opts.redisPort, opts.connections ?? 4)
  const scripts = new ScriptShaMap()
  // The client sends back whatever sync token it last saw; one redis-server is always
  // read-your-writes consistent, so a counter that only moves forward is enough.
  let syncToken = 0

  const run = (commands: PreparedCommand[], signal: AbortSignal): Promise<RespValue[]> => {
    const args = commands.map((c) => c.args)
    return commands.some((c) => c.blocking) ? pool.sendDedicated(args, signal) : pool.send(args)
  }

  const handle = async (req: IncomingMessage, res: ServerResponse, signal: AbortSignal) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const base64 = (req.headers['upstash-encoding'] ?? '').toString().toLowerCase() === 'base64'
    const reply = (status: number, body: unknown) => {
      syncToken += 1
      sendJson(res, status, body, { 'upstash-sync-token': String(syncToken) })
    }

    const token = bearer(req, url)
    const readOnly =
      token !== undefined &&
      opts.readOnlyToken !== undefined &&
      sameToken(token, opts.readOnlyToken)
    if (token === undefined || (!readOnly && !sameToken(token, opts.token))) {
      req.resume()
      reply(401, { error: 'Unauthorized' })
      return
    }
    if (req.method !== 'POST') {
      req.resume()
      reply(405, { error: 'ERR only POST is supported' })
      return
    }
    const path = url.pathname.replace(/\/+$/, '')
    if (path !== '' && path !== '/pipeline' && path !== '/multi-exec') {
      req.resume()
      const what = path.startsWith('/subscribe') || path.startsWith('/psubscribe')
      reply(what ? 501 : 404, {
        error: what
          ? 'ERR pub/sub over REST is not supported by the local endpoint'
          : `ERR unknown endpoint ${path}`,
      })
      return
    }

    let body: unknown
    try {
      body = JSON.parse((await readBody(req, maxBodyBytes)).toString('utf8'))
    } catch (error) {
      if (error instanceof HttpError) reply(error.status, { error: `ERR ${error.message}` })
      else reply(400, { error: 'ERR request body is not valid JSON' })
      return
    }

    try {
      if (path === '') {
        const command = prepareCommand(body, scripts, readOnly)
        if (typeof command === 'string') {
          reply(400, { error: command })
          return
        }
        const [result = null] = await run([command], signal)
        const fixed = command.fixReply(result)
        if (fixed instanceof RespError) reply(400, { error: fixed.message })
        else reply(200, { result: toJson(fixed, base64) })
        return
      }

      if (!Array.isArray(body) || body.length === 0) {
        reply(400, { error: 'ERR body must be a non-empty JSON array of commands' })
        return
      }
      const prepared = body.map((raw: unknown) => prepareCommand(raw, scripts, readOnly))

      if (path === '/pipeline') {
        const runnable = prepared.filter((c): c is PreparedCommand => typeof c !== 'string')
        const replies = runnable.length > 0 ? await run(runnable, signal) : []
        let next = 0
        reply(
          200,
          prepared.map((command) => {
            if (typeof command === 'string') return { error: command }
            const result = replies[next++] ?? null
            return entry(command.fixReply(result), base64)
          }),
        )
        return
      }

      // /multi-exec: a command Redis would reject while queueing aborts the whole transaction,
      // and so does one refused here; errors raised while executing stay per command.
      const refused = prepared.find((c): c is string => typeof c === 'string')
      if (refused !== undefined) {
        reply(400, {
          error: `EXECABORT Transaction discarded because of previous errors: ${refused}`,
        })
        return
      }
      const commands = prepared as PreparedCommand[]
      const replies = await pool.send([['MULTI'], ...commands.map((c) => c.args), ['EXEC']])
      const exec = replies.at(-1) ?? null
      if (!Array.isArray(exec)) {
        const queueError = replies.slice(1, -1).find((r) => r instanceof RespError)
        const detail = queueError instanceof RespError ? `: ${queueError.message}` : ''
        const message = exec instanceof RespError ? exec.message : 'EXEC returned no results'
        reply(400, { error: `${message.replace(/\.$/, '')}${detail}` })
        return
      }
      reply(
        200,
        exec.map((result, i) => entry(commands[i]?.fixReply(result) ?? result, base64)),
      )
    } catch (error) {
      reply(502, { error: `ERR redis unreachable: ${(error as Error).message}` })
    }
  }

  const server = createServer((req, res) => {
    const controller = new AbortController()
    res.on('close', () => {
      if (!res.writableFinished) controller.abort()
    })
    handle(req, res, controller.signal).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { error: `ERR ${String(error)}` })
      else res.destroy()
    })
  })
  // Upstash clients keep connections alive; make sure idle sockets never outlive close().
  server.keepAliveTimeout = 5_000

  let port: number
  try {
    port = await listen(server, opts.port)
  } catch (error) {
    await pool.close()
    throw error
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      await closeServer(server)
      await pool.close()
    },
  }
}
