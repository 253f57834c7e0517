import type { IncomingMessage } from 'node:http'
import { connect } from 'node:net'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer } from 'ws'
import type { RawData, WebSocket } from 'ws'

export interface TunnelTarget {
  host: string
  port: number
}

/** Paths the Neon driver dials: `/v1` is what our wsProxy setting uses, `/v2` its default. */
const PATHS = new Set(['/v1', '/v2'])

// Above this many bytes queued towards the browser side, stop reading from Postgres.
const HIGH_WATER = 1024 * 1024

/**
 * Parses `address=host:port` and returns the port if it is the local Postgres's, else an error
 * message. The host is ignored on purpose: the relay never dials anything but `target`.
 */
export function checkAddress(address: string | null, target: TunnelTarget): string | undefined {
  if (address === null) return 'missing ?address=host:port'
  const colon = address.lastIndexOf(':')
  const port = colon === -1 ? NaN : Number(address.slice(colon + 1))
  if (!Number.isInteger(port)) return `bad address ${address}`
  if (port !== target.port) return `refused: only the local Postgres port ${target.port} is relayed`
  return undefined
}

function rejectUpgrade(socket: Duplex, status: number, reason: string, message: string): void {
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain\r\n` +
      `Content-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`,
  )
}

function toBuffer(data: RawData): Buffer {
  if (Array.isArray(data)) return Buffer.concat(data)
  return data instanceof ArrayBuffer ? Buffer.from(data) : data
}

/**
 * WebSocket-to-TCP tunnels for the Neon driver's WebSocket mode (Pool/Client): every binary frame
 * goes to Postgres as bytes and every byte from Postgres goes back as a binary frame. Frames do
 * not align with Postgres messages; this is a byte stream, nothing is parsed.
 */
export class WsTunnels {
  readonly #target: TunnelTarget
  readonly #wss = new WebSocketServer({ noServer: true, perMessageDeflate: false })
  readonly #open = new Set<{ ws: WebSocket; tcp: Socket }>()

  constructor(target: TunnelTarget) {
    this.#target = target
  }

  /** Handles an HTTP upgrade request (wire to `server.on('upgrade', …)`). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', () => socket.destroy())
    const url = new URL(req.url ?? '/', 'http://localhost')
    if (!PATHS.has(url.pathname)) {
      rejectUpgrade(socket, 404, 'Not Found', 'unknown path')
      return
    }
    const problem = checkAddress(url.searchParams.get('address'), this.#target)
    if (problem !== undefined) {
      rejectUpgrade(socket, 403, 'Forbidden', problem)
      return
    }
    // Dial Postgres first, so a server that is down is an HTTP error, not an open-then-close.
    const tcp = connect({ host: this.#target.host, port: this.#target.port })
    const onConnectError = (error: Error) => {
      rejectUpgrade(socket, 502, 'Bad Gateway', `cannot reach Postgres: ${error.message}`)
    }
    tcp.once('error', onConnectError)
    tcp.once('connect', () => {
      tcp.off('error', onConnectError)
      if (socket.destroyed) {
        tcp.destroy()
        return
      }
      this.#wss.handleUpgrade(req, socket, head, (ws) => this.#pipe(ws, tcp))
    })
  }

  #pipe(ws: WebSocket, tcp: Socket): void {
    const link = { ws, tcp }
    this.#open.add(link)
    tcp.setNoDelay(true)
    let inFlight = 0

    ws.on('message', (data) => {
      if (!tcp.write(toBuffer(data))) {
        ws.pause()
        tcp.once('drain', () => ws.resume())
      }
    })
    tcp.on('data', (chunk: Buffer) => {
      inFlight += chunk.length
      if (inFlight > HIGH_WATER) tcp.pause()
      ws.send(chunk, { binary: true }, () => {
        inFlight -= chunk.length
        if (inFlight <= HIGH_WATER && tcp.isPaused()) tcp.resume()
      })
    })

    const finish = () => {
      if (!this.#open.delete(link)) return
      tcp.destroy()
      if (ws.readyState === ws.OPEN) ws.close()
      else if (ws.readyState !== ws.CLOSED) ws.terminate()
    }
    ws.on('close', () => {
      // Half-close so Postgres still receives what is buffered (e.g. Terminate) and ends the
      // session itself; the timer only guards against a peer that never closes.
      tcp.end()
      setTimeout(finish, 5_000).unref()
    })
    ws.on('error', finish)
    tcp.on('error', finish)
    tcp.on('close', finish)
  }

  /** Number of live tunnels (for leak checks in tests). */
  get size(): number {
    return this.#open.size
  }

  /** Closes every tunnel. */
  closeAll(): void {
    for (const { ws, tcp } of this.#open) {
      tcp.destroy()
      ws.terminate()
    }
    this.#open.clear()
    this.#wss.close()
  }
}
