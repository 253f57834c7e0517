/**
 * A minimal pipelining RESP2 client for benchmarks: one batch of commands in flight at a time,
 * written with a single socket write and resolved when every reply has arrived. Bulk strings are
 * decoded to JS strings (as any client must); integers to numbers.
 */
import { connect } from 'node:net'
import type { Socket } from 'node:net'

export type RespValue = string | number | null | RespError | RespValue[]

export class RespError extends Error {}

type Arg = string | number

/** Thrown inside the parser when the buffer ends mid-reply; the reply is re-read when more arrives. */
const INCOMPLETE = Symbol('incomplete')

export class RespClient {
  readonly #socket: Socket
  #buffer: Buffer = Buffer.alloc(0)
  #offset = 0
  #replies: RespValue[] = []
  #expected = 0
  #resolve: ((replies: RespValue[]) => void) | null = null
  #reject: ((error: Error) => void) | null = null

  private constructor(socket: Socket) {
    this.#socket = socket
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('error', (error) => this.#fail(error))
    socket.on('close', () => this.#fail(new Error('connection closed')))
  }

  /** Connects to 127.0.0.1:port. */
  static connect(port: number): Promise<RespClient> {
    return new Promise((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port })
      socket.once('connect', () => {
        socket.removeListener('error', reject)
        resolve(new RespClient(socket))
      })
      socket.once('error', reject)
    })
  }

  /** Sends all commands in one write and resolves with their replies in order. */
  pipeline(commands: readonly (readonly Arg[])[]): Promise<RespValue[]> {
    if (this.#resolve !== null) return Promise.reject(new Error('one pipeline at a time'))
    if (commands.length === 0) return Promise.resolve([])
    let out = ''
    for (const command of commands) {
      out += `*${command.length}\r\n`
      for (const arg of command) {
        const s = typeof arg === 'number' ? String(arg) : arg
        out += `$${Buffer.byteLength(s)}\r\n${s}\r\n`
      }
    }
    return new Promise((resolve, reject) => {
      this.#replies = []
      this.#expected = commands.length
      this.#resolve = resolve
      this.#reject = reject
      this.#socket.write(out)
    })
  }

  /** One command; throws a RespError reply. */
  async command(...args: Arg[]): Promise<RespValue> {
    const [reply] = await this.pipeline([args])
    if (reply instanceof RespError) throw reply
    return reply as RespValue
  }

  close(): void {
    this.#socket.removeAllListeners('close')
    this.#socket.destroy()
  }

  #fail(error: Error): void {
    const reject = this.#reject
    this.#resolve = null
    this.#reject = null
    reject?.(error)
  }

  #onData(chunk: Buffer): void {
    this.#buffer =
      this.#offset < this.#buffer.length
        ? Buffer.concat([this.#buffer.subarray(this.#offset), chunk])
        : chunk
    this.#offset = 0
    while (this.#offset < this.#buffer.length) {
      const start = this.#offset
      let value: RespValue
      try {
        value = this.#read()
      } catch (error) {
        if (error === INCOMPLETE) {
          this.#offset = start
          return
        }
        throw error
      }
      this.#replies.push(value)
      if (this.#replies.length === this.#expected) {
        const resolve = this.#resolve
        const replies = this.#replies
        this.#resolve = null
        this.#reject = null
        this.#replies = []
        resolve?.(replies)
      }
    }
  }

  /** Index just past the next CRLF, or INCOMPLETE. */
  #lineEnd(): number {
    const cr = this.#buffer.indexOf(13, this.#offset)
    if (cr < 0 || cr + 1 >= this.#buffer.length) throw INCOMPLETE
    return cr
  }

  #readInteger(): number {
    const buf = this.#buffer
    const cr = this.#lineEnd()
    let i = this.#offset
    let negative = false
    if (buf[i] === 45) {
      negative = true
      i++
    }
    let n = 0
    for (; i < cr; i++) n = n * 10 + ((buf[i] as number) - 48)
    this.#offset = cr + 2
    return negative ? -n : n
  }

  #read(): RespValue {
    const buf = this.#buffer
    if (this.#offset >= buf.length) throw INCOMPLETE
    const type = buf[this.#offset++]
    switch (type) {
      case 43: // +
      case 45: {
        // -
        const cr = this.#lineEnd()
        const text = buf.toString('utf8', this.#offset, cr)
        this.#offset = cr + 2
        return type === 43 ? text : new RespError(text)
      }
      case 58: // :
        return this.#readInteger()
      case 36: {
        // $
        const length = this.#readInteger()
        if (length < 0) return null
        if (this.#offset + length + 2 > buf.length) throw INCOMPLETE
        const text = buf.toString('utf8', this.#offset, this.#offset + length)
        this.#offset += length + 2
        return text
      }
      case 42: {
        // *
        const length = this.#readInteger()
        if (length < 0) return null
        const items: RespValue[] = []
        for (let i = 0; i < length; i++) items.push(this.#read())
        return items
      }
      default:
        throw new Error(`unexpected RESP type byte ${String(type)}`)
    }
  }
}
