import { call } from './http.ts'

/**
 * Promise-based WebSocket helpers for workerd tests. Every socket opened by `connect` records
 * each message (parsed JSON when possible) and its close, so nothing that arrives before a test
 * asks for it is lost; `nextMessage` waits a bounded time and rejects when nothing matches.
 */

interface Log {
  messages: unknown[]
  /** Index of the first message `nextMessage` has not returned or skipped. */
  cursor: number
  closed: { code: number; reason: string } | null
  listeners: Set<() => void>
}

const logs = new WeakMap<WebSocket, Log>()

function logOf(ws: WebSocket): Log {
  const log = logs.get(ws)
  if (!log) throw new Error('socket was not opened with connect() or track()')
  return log
}

/** Starts recording an accepted socket's messages and close. */
export function track(ws: WebSocket): WebSocket {
  const log: Log = { messages: [], cursor: 0, closed: null, listeners: new Set() }
  logs.set(ws, log)
  const notify = () => {
    for (const l of [...log.listeners]) l()
  }
  ws.addEventListener('message', (e) => {
    const data = e.data
    let value: unknown = data
    if (typeof data === 'string') {
      try {
        value = JSON.parse(data)
      } catch {
        value = data
      }
    }
    log.messages.push(value)
    notify()
  })
  ws.addEventListener('close', (e) => {
    log.closed = { code: e.code, reason: e.reason }
    notify()
  })
  return ws
}

/**
 * Opens a WebSocket to the Worker under test with a bearer token (header, or `?token=` when
 * `via` is 'query'). Throws with the response body when the upgrade is refused.
 *
 * @example
 * const ws = await connect('/v1/matchmaking/duel?region=eu', token)
 */
export async function connect(
  path: string,
  token?: string,
  via: SocketCredential = 'header',
): Promise<WebSocket> {
  const res = await upgrade(path, token, via)
  if (res.status !== 101 || !res.webSocket) {
    throw new Error(`upgrade refused: ${res.status} ${await res.text()}`)
  }
  const ws = res.webSocket
  ws.accept()
  return track(ws)
}

/**
 * Where a socket's token travels: the Authorization header, `?token=`, or the subprotocols a
 * browser sends (`nexus.v1` and `nexus.token.<token>`).
 */
export type SocketCredential = 'header' | 'query' | 'protocol'

/** The raw upgrade response (to assert refusals). */
export function upgrade(
  path: string,
  token?: string,
  via: SocketCredential = 'header',
): Promise<Response> {
  const headers: Record<string, string> = { upgrade: 'websocket' }
  let url = path
  if (token && via === 'header') headers.authorization = `Bearer ${token}`
  if (token && via === 'protocol')
    headers['sec-websocket-protocol'] = `nexus.v1, nexus.token.${token}`
  if (token && via === 'query')
    url += `${path.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`
  return call(url, { headers })
}

/**
 * The next message (after those already returned or skipped) that satisfies `pred`; earlier
 * non-matching messages are skipped. Rejects after `timeoutMs`, or when the socket closes first.
 */
export function nextMessage<T = Record<string, unknown>>(
  ws: WebSocket,
  pred: (m: Record<string, unknown>) => boolean = () => true,
  timeoutMs = 5000,
): Promise<T> {
  const log = logOf(ws)
  return new Promise<T>((resolve, reject) => {
    const check = (): boolean => {
      while (log.cursor < log.messages.length) {
        const m = log.messages[log.cursor++]
        if (m !== null && typeof m === 'object' && pred(m as Record<string, unknown>)) {
          resolve(m as T)
          return true
        }
      }
      if (log.closed) {
        reject(new Error(`socket closed (${log.closed.code}) before a matching message`))
        return true
      }
      return false
    }
    if (check()) return
    const listener = () => {
      if (check()) cleanup()
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(
        new Error(
          `no matching message within ${timeoutMs} ms; received: ${JSON.stringify(log.messages)}`,
        ),
      )
    }, timeoutMs)
    const cleanup = () => {
      clearTimeout(timer)
      log.listeners.delete(listener)
    }
    log.listeners.add(listener)
  })
}

/** Shorthand: the next message of a given `type`. */
export function nextOfType<T = Record<string, unknown>>(
  ws: WebSocket,
  type: string,
  timeoutMs = 5000,
): Promise<T> {
  return nextMessage<T>(ws, (m) => m.type === type, timeoutMs)
}

/** Every message the socket received so far, in order. */
export function collect(ws: WebSocket): unknown[] {
  return [...logOf(ws).messages]
}

/** Resolves with the close code and reason once the socket is closed; rejects after `timeoutMs`. */
export function closed(ws: WebSocket, timeoutMs = 5000): Promise<{ code: number; reason: string }> {
  const log = logOf(ws)
  return new Promise((resolve, reject) => {
    if (log.closed) return resolve(log.closed)
    const listener = () => {
      if (log.closed) {
        cleanup()
        resolve(log.closed)
      }
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`socket not closed within ${timeoutMs} ms`))
    }, timeoutMs)
    const cleanup = () => {
      clearTimeout(timer)
      log.listeners.delete(listener)
    }
    log.listeners.add(listener)
  })
}

/**
 * Polls `probe` until it returns a value other than undefined; rejects after `timeoutMs`. For
 * effects that happen on the server after a client action with no message to wait for (a close
 * handler running), never to hide a race.
 */
export async function until<T>(
  probe: () => Promise<T | undefined>,
  timeoutMs = 5000,
  what = 'condition',
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const v = await probe()
    if (v !== undefined) return v
    if (Date.now() > deadline) throw new Error(`${what} not reached within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 10))
  }
}
