import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { RETENTION_MS, type GameSession } from '../../../durable-objects/game-session.ts'
import type { DiceState } from '../../../workers/core/rules/dice-race.ts'
import type { Input, LogRecord } from '../../../workers/core/rules/index.ts'
import { ADMIN_KEY, call, json } from './http.ts'

/** A frame the session sent, loosely typed for assertions. */
export interface Frame {
  type: string
  seq?: number
  [key: string]: unknown
}

const DEFAULT_WAIT_MS = 5000

/**
 * A client socket on a game session that records every frame. `next()` takes the first frame not
 * yet taken that matches, waiting for it with a bound that FAILS the test — never a sleep.
 */
export class TestSocket {
  readonly ws: WebSocket
  /** Every frame received, in order. */
  readonly frames: Frame[] = []
  private readonly pending: Frame[] = []
  private waiters: { match: (f: Frame) => boolean; resolve: (f: Frame) => void }[] = []
  closed: { code: number; reason: string } | null = null
  private closeWaiters: (() => void)[] = []

  constructor(ws: WebSocket) {
    this.ws = ws
    ws.accept()
    ws.addEventListener('message', (e) => {
      const frame = JSON.parse(String(e.data)) as Frame
      this.frames.push(frame)
      const i = this.waiters.findIndex((w) => w.match(frame))
      if (i >= 0) {
        const [w] = this.waiters.splice(i, 1)
        w!.resolve(frame)
      } else this.pending.push(frame)
    })
    ws.addEventListener('close', (e) => {
      this.closed = { code: e.code, reason: e.reason }
      for (const w of this.closeWaiters) w()
      this.closeWaiters = []
    })
  }

  /** The next frame (matching `match`), or a test failure after `timeoutMs`. */
  next(match: (f: Frame) => boolean = () => true, timeoutMs = DEFAULT_WAIT_MS): Promise<Frame> {
    const i = this.pending.findIndex(match)
    if (i >= 0) return Promise.resolve(this.pending.splice(i, 1)[0]!)
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done)
        reject(
          new Error(
            `no matching frame within ${timeoutMs} ms; received ${JSON.stringify(this.frames).slice(-800)}`,
          ),
        )
      }, timeoutMs)
      const done = (f: Frame) => {
        clearTimeout(timer)
        resolve(f)
      }
      this.waiters.push({ match, resolve: done })
    })
  }

  /** The next frame of a type. */
  nextOf(type: string, timeoutMs?: number): Promise<Frame> {
    return this.next((f) => f.type === type, timeoutMs)
  }

  /** Frames received but not taken yet. */
  untaken(): Frame[] {
    return [...this.pending]
  }

  send(message: unknown): void {
    this.ws.send(typeof message === 'string' ? message : JSON.stringify(message))
  }

  roll(): void {
    this.send({ type: 'action', action: 'roll' })
  }

  /** Resolves when the server closed the socket, or fails after `timeoutMs`. */
  whenClosed(timeoutMs = DEFAULT_WAIT_MS): Promise<{ code: number; reason: string }> {
    if (this.closed) return Promise.resolve(this.closed)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('socket not closed in time')), timeoutMs)
      this.closeWaiters.push(() => {
        clearTimeout(timer)
        resolve(this.closed!)
      })
    })
  }

  close(): void {
    try {
      this.ws.close(1000, 'bye')
    } catch {
      // Already closed.
    }
  }
}

/** The raw upgrade response for a session socket. */
export function upgrade(
  sessionId: string,
  token: string | null,
  opts: { since?: number | string; viaQuery?: boolean; viaProtocol?: boolean; conn?: string } = {},
): Promise<Response> {
  const q = new URLSearchParams()
  if (opts.since !== undefined) q.set('since', String(opts.since))
  if (opts.conn !== undefined) q.set('conn', opts.conn)
  if (token && opts.viaQuery) q.set('token', token)
  const qs = q.size > 0 ? `?${q}` : ''
  const headers: Record<string, string> = { upgrade: 'websocket' }
  if (token && opts.viaProtocol)
    headers['sec-websocket-protocol'] = `nexus.v1, nexus.token.${token}`
  else if (token && !opts.viaQuery) headers.authorization = `Bearer ${token}`
  return call(`/v1/sessions/${sessionId}${qs}`, { headers })
}

/** Opens a socket and fails loudly if the upgrade is refused. */
export async function connect(
  sessionId: string,
  token: string,
  opts: { since?: number; viaQuery?: boolean; viaProtocol?: boolean; conn?: string } = {},
): Promise<TestSocket> {
  const res = await upgrade(sessionId, token, opts)
  if (res.status !== 101 || !res.webSocket) {
    throw new Error(`upgrade refused: ${res.status} ${await res.text()}`)
  }
  return new TestSocket(res.webSocket)
}

export interface Created {
  sessionId: string
  tokens: Record<string, string>
}

/** Creates a session through the admin route. */
export async function createSession(body: Record<string, unknown>): Promise<Created> {
  const res = await call('/v1/admin/sessions', json('POST', body, ADMIN_KEY))
  if (res.status !== 201) throw new Error(`create session: ${res.status} ${await res.text()}`)
  return (await res.json()) as Created
}

/** Fresh player ids, unique per test. */
export function playerIds(n: number, prefix = 'p'): string[] {
  const tag = crypto.randomUUID().slice(0, 8)
  return Array.from({ length: n }, (_, i) => `${prefix}${i}-${tag}`)
}

export function sessionObject(sessionId: string): DurableObjectStub<GameSession> {
  return env.GAME_SESSION.getByName(sessionId)
}

/** Runs `fn` inside a session's object, with its instance and storage. */
export function inObject<R>(
  sessionId: string,
  fn: (inst: GameSession, state: DurableObjectState) => R | Promise<R>,
): Promise<R> {
  return runInDurableObject(sessionObject(sessionId), fn)
}

/**
 * Runs a session's end work as its retention runs out: its object is cleared once the work is
 * done, Neon holding the session. The end's status after it.
 */
export function clearAfterRetention(sessionId: string) {
  return inObject(sessionId, (inst) => {
    const base = inst.now()
    inst.now = () => base + RETENTION_MS + 1000
    return inst.runEndWork()
  })
}

/**
 * Names other rules in a session's stored setup, as a version that lacks them (or has them back)
 * would find it at the next wake: evict the object after.
 */
export function renameRules(sessionId: string, rules: string): Promise<void> {
  return inObject(sessionId, (_inst, state) => {
    const row = state.storage.sql
      .exec<{ value: string }>(`SELECT value FROM meta WHERE key = 'setup'`)
      .one()
    const setup = JSON.parse(row.value) as { rules: string }
    setup.rules = rules
    state.storage.sql.exec(`UPDATE meta SET value = ? WHERE key = 'setup'`, JSON.stringify(setup))
  })
}

/**
 * Stops a session's clock at its creation (the test moves it from there: `inst.now`), so a slow
 * machine cannot move a deadline; returns the creation time.
 */
export function clockAtCreation(sessionId: string): Promise<number> {
  return inObject(sessionId, (inst) => {
    const info = inst.info()
    const created = info.ok ? info.createdAt : 0
    inst.now = () => created
    return created
  })
}

/** The dice-race state of a welcome frame. */
export function diceState(frame: Frame): DiceState {
  return frame.state as DiceState
}

/**
 * Plays a dice-race to the end: whoever's turn it is (from the events) rolls, until `ended`.
 * Returns the events in order as the first socket saw them.
 */
export async function playToEnd(
  sockets: Record<string, TestSocket>,
  first: string,
  maxRolls = 200,
): Promise<Frame[]> {
  const watcher = Object.values(sockets)[0]!
  const events: Frame[] = []
  let turn: string | null = first
  for (let i = 0; i < maxRolls && turn !== null; i++) {
    sockets[turn]!.roll()
    const e = await watcher.nextOf('event')
    events.push(e)
    turn = (e.event as { next: string | null }).next
  }
  if (turn !== null) throw new Error('the game did not end')
  return events
}

/**
 * A log as a player is served it, from the admin's whole one: other players' actions left out
 * of their inputs (what a game made public of them is in its events).
 */
export function seenBy(records: LogRecord[], player: string): LogRecord[] {
  return records.map((r) =>
    r.input.kind === 'action' && r.input.player !== player
      ? { ...r, input: { kind: 'action', player: r.input.player, tick: r.input.tick } as Input }
      : r,
  )
}
