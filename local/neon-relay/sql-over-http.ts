import type { IncomingMessage, ServerResponse } from 'node:http'
import pg from 'pg'
import type { CustomTypesConfig, FieldDef, PoolClient, QueryConfig, QueryResult } from 'pg'
import { HttpError, readBody, sendJson } from '../http.ts'

export interface SqlTarget {
  host: string
  port: number
}

interface QueryBody {
  query: string
  params: unknown[]
}

type HttpResult = {
  command: string
  rowCount: number | null
  rows: unknown[]
  fields: {
    name: string
    dataTypeID: number
    tableID: number
    columnID: number
    dataTypeSize: number
    dataTypeModifier: number
    format: string
  }[]
  rowAsArray: boolean
}

// Values come back exactly as Postgres's text output: the driver parses them itself.
const RAW_TEXT: CustomTypesConfig = { getTypeParser: () => (value: string) => value }

const ISOLATION: Record<string, string> = {
  ReadUncommitted: 'READ UNCOMMITTED',
  ReadCommitted: 'READ COMMITTED',
  RepeatableRead: 'REPEATABLE READ',
  Serializable: 'SERIALIZABLE',
}

// Fields of a Postgres error, as Neon's HTTP API reports them (and the driver copies them).
const ERROR_FIELDS = [
  'severity',
  'code',
  'detail',
  'hint',
  'position',
  'internalPosition',
  'internalQuery',
  'where',
  'schema',
  'table',
  'column',
  'dataType',
  'constraint',
  'file',
  'line',
  'routine',
] as const

const MAX_POOLS = 32

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name.toLowerCase()]
  return Array.isArray(value) ? value[0] : value
}

function parseQuery(raw: unknown): QueryBody {
  if (typeof raw !== 'object' || raw === null) throw new HttpError(400, 'invalid query object')
  const { query, params } = raw as { query?: unknown; params?: unknown }
  if (typeof query !== 'string') throw new HttpError(400, '"query" must be a string')
  if (params !== undefined && !Array.isArray(params)) {
    throw new HttpError(400, '"params" must be an array')
  }
  return { query, params: params ?? [] }
}

function toHttpResult(result: QueryResult, arrayMode: boolean): HttpResult {
  return {
    command: result.command,
    rowCount: result.rowCount,
    rows: result.rows as unknown[],
    fields: result.fields.map((f: FieldDef) => ({
      name: f.name,
      dataTypeID: f.dataTypeID,
      tableID: f.tableID,
      columnID: f.columnID,
      dataTypeSize: f.dataTypeSize,
      dataTypeModifier: f.dataTypeModifier,
      format: f.format,
    })),
    rowAsArray: arrayMode,
  }
}

function errorBody(error: pg.DatabaseError): Record<string, string> {
  const body: Record<string, string> = { message: error.message }
  for (const field of ERROR_FIELDS) {
    const value = error[field]
    if (value !== undefined) body[field] = value
  }
  return body
}

/**
 * What Neon's proxy answers itself, before a query reaches Postgres: it authenticates the
 * connection string and connects on its own, and its errors (a wrong password, a compute it
 * cannot wake) come back as 400 with an empty `code`, never Postgres's SQLSTATE.
 */
class ProxyError extends Error {}

/** A pool's client; a refusal while connecting is the proxy's (ProxyError), as on Neon. */
/** An answer past Neon's limit on its size: Neon answers 507, and a batch is rolled back. */
class TooLarge extends Error {
  constructor(maxBytes: number) {
    super(`response is too large (max is ${maxBytes} bytes)`)
  }
}

async function connect(pool: pg.Pool): Promise<PoolClient> {
  try {
    return await pool.connect()
  } catch (error) {
    if (error instanceof pg.DatabaseError) throw new ProxyError(error.message)
    throw error
  }
}

/**
 * Neon's SQL-over-HTTP endpoint (`POST /sql`, used by `neon()` and drizzle's neon-http) on top of
 * node-postgres. Credentials come from the `Neon-Connection-String` header, but the host and
 * port are always the local Postgres's. Every query uses the extended protocol, so one
 * statement per query is enforced as on Neon.
 */
export class SqlOverHttp {
  readonly #target: SqlTarget
  readonly #pools = new Map<string, pg.Pool>()
  readonly #maxBodyBytes: number
  readonly #maxResponseBytes: number

  constructor(
    target: SqlTarget,
    maxBodyBytes = 10 * 1024 * 1024,
    maxResponseBytes = 10 * 1024 * 1024,
  ) {
    this.#target = target
    this.#maxBodyBytes = maxBodyBytes
    this.#maxResponseBytes = maxResponseBytes
  }

  /** A result's JSON, or, past Neon's limit on an answer, a TooLarge to answer 507 with. */
  #resultText(body: unknown): string {
    const text = JSON.stringify(body)
    if (Buffer.byteLength(text) > this.#maxResponseBytes) throw new TooLarge(this.#maxResponseBytes)
    return text
  }

  /** Sends a result, or, past Neon's limit on an answer, Neon's 507 in its place. */
  #sendResult(res: ServerResponse, body: unknown): void {
    let text: string
    try {
      text = this.#resultText(body)
    } catch (error) {
      if (!(error instanceof TooLarge)) throw error
      sendJson(res, 507, { message: error.message })
      return
    }
    this.#sendText(res, text)
  }

  #sendText(res: ServerResponse, text: string): void {
    res.writeHead(200, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
    })
    res.end(text)
  }

  /** Answers one `POST /sql` request. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    let pool: pg.Pool
    let body: unknown
    try {
      pool = this.#pool(header(req, 'Neon-Connection-String'))
      body = JSON.parse((await readBody(req, this.#maxBodyBytes)).toString('utf8'))
    } catch (error) {
      req.resume()
      if (error instanceof HttpError) sendJson(res, error.status, { message: error.message })
      else sendJson(res, 400, { message: 'request body is not valid JSON' })
      return
    }
    const rawText = header(req, 'Neon-Raw-Text-Output') === 'true'
    const arrayMode = header(req, 'Neon-Array-Mode') === 'true'
    const config = (q: QueryBody): QueryConfig & { rowMode?: 'array'; queryMode: 'extended' } => ({
      text: q.query,
      values: q.params,
      ...(rawText ? { types: RAW_TEXT } : {}),
      ...(arrayMode ? { rowMode: 'array' as const } : {}),
      queryMode: 'extended',
    })

    try {
      const batch = (body as { queries?: unknown } | null)?.queries
      if (batch === undefined) {
        const query = parseQuery(body)
        const client = await connect(pool)
        let result: QueryResult
        try {
          result = await client.query(config(query))
        } catch (error) {
          // As node-postgres's own pool.query: a client whose query failed is not reused.
          client.release(error as Error)
          throw error
        }
        client.release()
        this.#sendResult(res, toHttpResult(result, arrayMode))
        return
      }
      if (!Array.isArray(batch)) throw new HttpError(400, '"queries" must be an array')
      const queries = batch.map(parseQuery)
      const begin = this.#beginStatement(req)
      const client = await connect(pool)
      let broken: Error | undefined
      try {
        await client.query(begin)
        const results: HttpResult[] = []
        for (const query of queries) {
          results.push(toHttpResult(await client.query(config(query)), arrayMode))
        }
        // Neon measures the answer before it commits, and rolls back one too large to send: a
        // client told 507 must not find the writes made.
        const text = this.#resultText({ results })
        await client.query('COMMIT')
        this.#sendText(res, text)
      } catch (error) {
        broken = await this.#rollback(client, error)
        throw error
      } finally {
        client.release(broken)
      }
    } catch (error) {
      if (error instanceof TooLarge) sendJson(res, 507, { message: error.message })
      else if (error instanceof ProxyError) sendJson(res, 400, { message: error.message, code: '' })
      else if (error instanceof HttpError) sendJson(res, error.status, { message: error.message })
      else if (error instanceof pg.DatabaseError) sendJson(res, 400, errorBody(error))
      else sendJson(res, 502, { message: `cannot reach Postgres: ${(error as Error).message}` })
    }
  }

  /** Ends every pool. */
  async close(): Promise<void> {
    const pools = [...this.#pools.values()]
    this.#pools.clear()
    await Promise.all(pools.map((p) => p.end().catch(() => undefined)))
  }

  #beginStatement(req: IncomingMessage): string {
    const parts = ['BEGIN']
    const isolation = header(req, 'Neon-Batch-Isolation-Level')
    if (isolation !== undefined) {
      const level = ISOLATION[isolation]
      if (level === undefined) throw new HttpError(400, `unknown isolation level ${isolation}`)
      parts.push(`ISOLATION LEVEL ${level}`)
    }
    const readOnly = header(req, 'Neon-Batch-Read-Only')
    if (readOnly !== undefined) parts.push(readOnly === 'true' ? 'READ ONLY' : 'READ WRITE')
    const deferrable = header(req, 'Neon-Batch-Deferrable')
    if (deferrable !== undefined) {
      parts.push(deferrable === 'true' ? 'DEFERRABLE' : 'NOT DEFERRABLE')
    }
    return parts.join(' ')
  }

  // Returns an error when the connection is unusable and must be discarded, not reused.
  async #rollback(client: PoolClient, cause: unknown): Promise<Error | undefined> {
    // A connection is fine after Postgres refused a statement, or after an answer too large.
    if (!(cause instanceof pg.DatabaseError || cause instanceof TooLarge)) {
      return cause instanceof Error ? cause : new Error()
    }
    try {
      await client.query('ROLLBACK')
      return undefined
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error))
    }
  }

  #pool(connectionString: string | undefined): pg.Pool {
    if (connectionString === undefined) {
      throw new HttpError(400, 'missing Neon-Connection-String header')
    }
    let url: URL
    try {
      url = new URL(connectionString)
    } catch {
      throw new HttpError(400, 'Neon-Connection-String is not a valid URL')
    }
    if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
      throw new HttpError(400, 'Neon-Connection-String must be a postgres:// URL')
    }
    const user = decodeURIComponent(url.username)
    const password = decodeURIComponent(url.password)
    const database = decodeURIComponent(url.pathname.slice(1))
    if (user === '' || database === '') {
      throw new HttpError(400, 'Neon-Connection-String needs a user and a database')
    }
    const key = JSON.stringify([user, password, database])
    let pool = this.#pools.get(key)
    if (pool !== undefined) return pool
    if (this.#pools.size >= MAX_POOLS) {
      const [oldestKey, oldest] = this.#pools.entries().next().value ?? []
      if (oldestKey !== undefined) this.#pools.delete(oldestKey)
      void oldest?.end().catch(() => undefined)
    }
    pool = new pg.Pool({
      host: this.#target.host,
      port: this.#target.port,
      user,
      password,
      database,
      max: 5,
      idleTimeoutMillis: 10_000,
      allowExitOnIdle: true,
    })
    // An idle client losing its connection (Postgres restarted) must not crash the process.
    pool.on('error', () => undefined)
    this.#pools.set(key, pool)
    return pool
  }
}
