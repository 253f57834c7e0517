import { connect } from 'node:net'
import type { Socket } from 'node:net'

/** A Redis error reply (`-ERR …`), kept as a value because pipelines mix errors and results. */
export class RespError {
  readonly message: string
  constructor(message: string) {
    this.message = message
  }
}

/**
 * A RESP2 reply: simple strings as `string`, bulk strings as `Buffer` (they may be binary),
 * integers as `number`, nil as `null`, arrays recursively.
 */
export type RespValue = string | Buffer | number | null | RespError | RespValue[]

export type RespArg = string | Buffer

const CRLF = Buffer.from('\r\n')

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand(args: readonly RespArg[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg) : arg
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF)
  }
  return Buffer.concat(parts)
}

type Token =
  | { kind: 'value'; value: RespValue; next: number }
  | { kind: 'array'; length: number; next: number }

/**
 * Incremental RESP2 parser. Keeps partially received arrays on a stack and buffers incoming
 * chunks until the next token can be complete, so large replies cost linear time.
 */
export class RespParser {
  #chunks: Buffer[] = []
  #buffered = 0
  #need = 1
  #stack: { items: RespValue[]; remaining: number }[] = []

  /** Feeds bytes; returns every top-level reply completed by them, in order. */
  push(chunk: Buffer): RespValue[] {
    this.#chunks.push(chunk)
    this.#buffered += chunk.length
    if (this.#buffered < this.#need) return []
    const buf = this.#chunks.length === 1 ? chunk : Buffer.concat(this.#chunks)
    const out: RespValue[] = []
    let offset = 0
    for (;;) {
      const token = readToken(buf, offset)
      if (typeof token === 'number') {
        this.#need = token - offset
        break
      }
      offset = token.next
      let value: RespValue
      if (token.kind === 'array') {
        if (token.length > 0) {
          this.#stack.push({ items: [], remaining: token.length })
          continue
        }
        value = []
      } else {
        value = token.value
      }
      for (;;) {
        const top = this.#stack.at(-1)
        if (top === undefined) {
          out.push(value)
          break
        }
        top.items.push(value)
        top.remaining -= 1
        if (top.remaining > 0) break
        this.#stack.pop()
        value = top.items
      }
    }
    const rest = buf.subarray(offset)
    this.#chunks = rest.length > 0 ? [rest] : []
    this.#buffered = rest.length
    return out
  }
}

// Returns the token at `offset`, or the buffer length needed before it can be read.
function readToken(buf: Buffer, offset: number): Token | number {
  const end = buf.indexOf(CRLF, offset)
  if (end === -1) return Math.max(buf.length + 1, offset + 3)
  const type = buf[offset]
  const line = buf.toString('utf8', offset + 1, end)
  const next = end + 2
  switch (type) {
    case 0x2b: // +
      return { kind: 'value', value: line, next }
    case 0x2d: // -
      return { kind: 'value', value: new RespError(line), next }
    case 0x3a: // :
      return { kind: 'value', value: Number(line), next }
    case 0x24: {
      // $
      const length = Number(line)
      if (length < 0) return { kind: 'value', value: null, next }
      if (buf.length < next + length + 2) return next + length + 2
      // Copy so the reply does not pin the whole receive buffer.
      const value = Buffer.from(buf.subarray(next, next + length))
      return { kind: 'value', value, next: next + length + 2 }
    }
    case 0x2a: {
      // *
      const length = Number(line)
      if (length < 0) return { kind: 'value', value: null, next }
      return { kind: 'array', length, next }
    }
    default:
      throw new Error(`unexpected RESP type byte ${String(type)}`)
  }
}

interface Pending {
  resolve: (value: RespValue) => void
  reject: (error: Error) => void
}

/**
 * One pipelined connection to redis-server: commands are written as they come and replies are
 * matched to them in order.
 */
export class RespConnection {
  readonly #socket: Socket
  readonly #parser = new RespParser()
  readonly #pending: Pending[] = []
  #closedError: Error | undefined

  private constructor(socket: Socket) {
    this.#socket = socket
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => {
      let replies: RespValue[]
      try {
        replies = this.#parser.push(chunk)
      } catch (error) {
        this.#fail(error instanceof Error ? error : new Error(String(error)))
        socket.destroy()
        return
      }
      for (const reply of replies) this.#pending.shift()?.resolve(reply)
    })
    socket.on('error', (error) => this.#fail(error))
    socket.on('close', () => this.#fail(new Error('redis connection closed')))
  }

  /** Opens a connection, failing after `timeoutMs` if redis-server does not accept it. */
  static open(host: string, port: number, timeoutMs = 2_000): Promise<RespConnection> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new Error(`connecting to redis ${host}:${port} timed out`))
      }, timeoutMs)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.removeAllListeners('error')
        resolve(new RespConnection(socket))
      })
      socket.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
    })
  }

  get alive(): boolean {
    return this.#closedError === undefined
  }

  get pending(): number {
    return this.#pending.length
  }

  /**
   * Writes all `commands` in one go (nothing else can interleave, which MULTI/EXEC relies on) and
   * resolves with their replies. Rejects only if the connection fails.
   */
  send(commands: readonly (readonly RespArg[])[]): Promise<RespValue[]> {
    if (this.#closedError !== undefined) return Promise.reject(this.#closedError)
    const replies = commands.map(
      () =>
        new Promise<RespValue>((resolve, reject) => {
          this.#pending.push({ resolve, reject })
        }),
    )
    this.#socket.write(Buffer.concat(commands.map(encodeCommand)))
    return Promise.all(replies)
  }

  close(): void {
    this.#fail(new Error('redis connection closed'))
    this.#socket.destroy()
  }

  #fail(error: Error): void {
    this.#closedError ??= error
    for (const pending of this.#pending.splice(0)) pending.reject(error)
  }
}

/**
 * A few persistent pipelined connections, opened lazily and replaced when they break.
 *
 * @example
 * const pool = new RespPool('127.0.0.1', 6379, 4)
 * const [reply] = await pool.send([['PING']])
 */
export class RespPool {
  readonly #host: string
  readonly #port: number
  readonly #slots: (Promise<RespConnection> | undefined)[]
  readonly #timeoutMs: number
  readonly #dedicated = new Set<RespConnection>()
  #next = 0
  #closed = false

  constructor(host: string, port: number, size = 4, timeoutMs = 10_000) {
    this.#host = host
    this.#port = port
    this.#slots = Array.from({ length: size }, () => undefined)
    this.#timeoutMs = timeoutMs
  }

  /** Sends the commands as one unit on one pooled connection. */
  async send(commands: readonly (readonly RespArg[])[]): Promise<RespValue[]> {
    const connection = await this.#connection()
    let timer: NodeJS.Timeout | undefined
    try {
      return await Promise.race([
        connection.send(commands),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => {
            // Replies can no longer be matched to requests on this connection.
            connection.close()
            reject(new Error(`redis did not answer within ${this.#timeoutMs} ms`))
          }, this.#timeoutMs)
        }),
      ])
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * Sends on a connection of its own, closed afterwards: for blocking commands (BLPOP, XREAD
   * BLOCK…) that would otherwise stall every request queued behind them. `signal` aborts it.
   */
  async sendDedicated(
    commands: readonly (readonly RespArg[])[],
    signal?: AbortSignal,
  ): Promise<RespValue[]> {
    if (this.#closed) throw new Error('redis pool closed')
    const connection = await RespConnection.open(this.#host, this.#port)
    this.#dedicated.add(connection)
    const abort = () => connection.close()
    signal?.addEventListener('abort', abort)
    try {
      return await connection.send(commands)
    } finally {
      signal?.removeEventListener('abort', abort)
      this.#dedicated.delete(connection)
      connection.close()
    }
  }

  async close(): Promise<void> {
    this.#closed = true
    const slots = this.#slots.splice(0)
    for (const connection of this.#dedicated) connection.close()
    await Promise.all(
      slots.map(async (slot) => {
        const connection = await slot?.catch(() => undefined)
        connection?.close()
      }),
    )
  }

  async #connection(): Promise<RespConnection> {
    if (this.#closed) throw new Error('redis pool closed')
    const index = this.#next
    this.#next = (this.#next + 1) % this.#slots.length
    const slot = this.#slots[index]
    if (slot !== undefined) {
      const existing = await slot.catch(() => undefined)
      if (existing?.alive) return existing
    }
    const opening = RespConnection.open(this.#host, this.#port)
    this.#slots[index] = opening
    try {
      return await opening
    } catch (error) {
      if (this.#slots[index] === opening) this.#slots[index] = undefined
      throw error
    }
  }
}
