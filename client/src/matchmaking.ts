import type {
  MatchPlayer,
  ServerMessage as MatchServerMessage,
  TicketAttributesValue,
} from '../../workers/matchmaking/protocol.ts'
import type { Schemas } from './api.gen.ts'
import type { Auth } from './auth.ts'
import { backoff, type Ok, type RetryPolicy, sleep, type Transport } from './http.ts'
import { NexusProblem } from './problem.ts'
import {
  Emitter,
  isOpen,
  messageText,
  openSocket,
  type SocketFactory,
  type SocketLike,
  toSocketUrl,
} from './socket.ts'

export type { MatchPlayer, MatchServerMessage }
export type Ticket = Schemas['Ticket']
export type QueueStats = Ok<'/v1/matchmaking/{queue}/stats', 'get'>
export type QueueInfo = Ok<'/v1/matchmaking/{queue}', 'get'>

/** A found match: the session to connect to and this player's token for it. */
export interface Match {
  ticketId: string
  sessionId: string
  token: string
  players: MatchPlayer[]
}

export interface JoinOptions {
  region?: string
  attributes?: TicketAttributesValue
  /** `auto` (default): WebSocket, falling back to HTTP long-polling when sockets fail. */
  transport?: 'auto' | 'websocket' | 'http'
}

export interface TicketEvents {
  queued: { ticketId: string; existing: boolean; expiresAt: number }
  /** The connection in use changed (a fallback to HTTP, say). */
  transport: 'websocket' | 'http'
  reconnecting: { attempt: number; delayMs: number }
  match: Match
  /** The ticket ended without a match: cancelled (see `reason`) or expired. */
  ended: { outcome: 'cancelled' | 'expired'; reason: string }
}

/** Why `matched` rejected: the ticket was cancelled or expired without a match. */
export class MatchmakingEnded extends Error {
  readonly outcome: 'cancelled' | 'expired'
  readonly reason: string
  constructor(outcome: 'cancelled' | 'expired', reason: string) {
    super(`matchmaking ${outcome}: ${reason}`)
    this.name = 'MatchmakingEnded'
    this.outcome = outcome
    this.reason = reason
  }
}

export interface SocketSettings {
  factory: SocketFactory | null
  openTimeoutMs: number
  /** Consecutive failed reconnects before giving up on sockets (then HTTP, or failure). */
  maxReconnects: number
  backoff: RetryPolicy
}

/** A long poll holds this long on the server (its maximum is 25 s). */
const LONG_POLL_SECONDS = 20
/** After a reconnect the pool re-attaches a waiting ticket at once; past this we ask over HTTP. */
const REATTACH_WAIT_MS = 3000

/**
 * One player in one queue: joins over a WebSocket (reconnecting, re-attaching the same ticket
 * within the server's 10 s grace) or, when sockets do not work, over HTTP with long-polling.
 * Await `matched` for the session; `cancel()` leaves.
 *
 * @example
 * const ticket = nexus.matchmaking.join('duel')
 * ticket.on('queued', ({ ticketId }) => show(`waiting… ${ticketId}`))
 * const match = await ticket.matched
 */
export class MatchTicket extends Emitter<TicketEvents> {
  readonly queue: string
  readonly matched: Promise<Match>
  ticketId: string | null = null
  transport: 'websocket' | 'http' = 'websocket'
  private done = false
  private socket: SocketLike | null = null
  private readonly abort = new AbortController()
  private resolveMatch!: (m: Match) => void
  private rejectMatch!: (e: unknown) => void
  private readonly deps: { t: Transport; auth: Auth; sockets: SocketSettings }
  private readonly opts: JoinOptions

  constructor(
    queue: string,
    opts: JoinOptions,
    deps: { t: Transport; auth: Auth; sockets: SocketSettings },
  ) {
    super()
    this.queue = queue
    this.opts = opts
    this.deps = deps
    this.matched = new Promise<Match>((resolve, reject) => {
      this.resolveMatch = resolve
      this.rejectMatch = reject
    })
    // Callers that only listen to events must not see an unhandled rejection.
    this.matched.catch(() => {})
    void this.run().catch((err: unknown) => this.fail(err))
  }

  /** Leaves the queue. Resolves once the server confirms (or the ticket already ended). */
  async cancel(): Promise<void> {
    if (this.done) return
    const ticketId = this.ticketId
    if (isOpen(this.socket) && this.transport === 'websocket') {
      const ended = new Promise<void>((resolve) => {
        this.on('ended', () => resolve())
        this.on('match', () => resolve())
      })
      this.socket.send(JSON.stringify({ type: 'cancel' }))
      await Promise.race([ended, sleep(5000)])
      if (this.done) return
    }
    if (ticketId) {
      try {
        const t = await this.deps.t.request('delete', '/v1/matchmaking/tickets/{ticketId}', {
          path: { ticketId },
          as: { kind: 'player' },
          retry: true,
        })
        this.settle(t)
      } catch (err) {
        // Matched in the meantime: the match wins, as it does on the server.
        if (!(err instanceof NexusProblem && err.problem === 'conflict')) throw err
        const t = await this.read(ticketId)
        this.settle(t)
      }
    }
    this.end('cancelled', 'cancelled')
  }

  private async run(): Promise<void> {
    const mode = this.opts.transport ?? 'auto'
    if (mode !== 'http' && this.deps.sockets.factory) {
      const fallback = await this.runSocket()
      if (this.done) return
      if (mode === 'websocket') throw fallback
    }
    this.transport = 'http'
    this.emit('transport', 'http')
    await this.runHttp()
  }

  /** Runs over sockets until done; returns the reason to fall back when sockets do not work. */
  private async runSocket(): Promise<unknown> {
    const { sockets, t, auth } = this.deps
    let failures = 0
    let lastError: unknown = null
    while (!this.done) {
      const token = await auth.token()
      const url = toSocketUrl(
        t.url(
          '/v1/matchmaking/{queue}',
          { queue: this.queue },
          {
            region: this.opts.region,
            token,
          },
        ),
      )
      let socket: SocketLike
      try {
        socket = await openSocket(sockets.factory!, url, sockets.openTimeoutMs)
      } catch (err) {
        lastError = err
        failures++
        if (failures === 1 || failures > sockets.maxReconnects) {
          // The HTTP answer says whether the queue itself is the problem (404, 401…).
          await this.deps.t.request('get', '/v1/matchmaking/{queue}', {
            path: { queue: this.queue },
            retry: true,
          })
        }
        if (failures > sockets.maxReconnects) return lastError
        const delayMs = backoff(sockets.backoff, failures - 1)
        this.emit('reconnecting', { attempt: failures, delayMs })
        await sleep(delayMs)
        continue
      }
      failures = 0
      this.socket = socket
      if (this.transport !== 'websocket') this.emit('transport', 'websocket')
      this.transport = 'websocket'
      await this.serveSocket(socket)
      this.socket = null
      if (this.done) return null
      failures++
      const delayMs = backoff(sockets.backoff, failures - 1)
      this.emit('reconnecting', { attempt: failures, delayMs })
      await sleep(delayMs)
    }
    return null
  }

  /** Handles one open socket; resolves when it closes. */
  private serveSocket(socket: SocketLike): Promise<void> {
    return new Promise<void>((resolve) => {
      let attached = false
      socket.addEventListener('message', (e) => {
        const text = messageText(e)
        if (text === null) return
        let msg: MatchServerMessage
        try {
          msg = JSON.parse(text) as MatchServerMessage
        } catch {
          return
        }
        if (msg.type === 'queued') attached = true
        this.onSocketMessage(msg, socket)
      })
      socket.addEventListener('close', () => resolve())
      if (this.ticketId === null) {
        socket.send(
          JSON.stringify({
            type: 'join',
            ...(this.opts.attributes ? { attributes: this.opts.attributes } : {}),
          }),
        )
      } else {
        // A reconnect: the pool re-attaches a waiting ticket by itself. Joining again could make a
        // second ticket if this one was matched meanwhile, so ask over HTTP instead.
        setTimeout(() => {
          if (attached || this.done || !this.ticketId) return
          void this.read(this.ticketId)
            .then((t) => {
              if (!this.settle(t) && isOpen(socket)) {
                socket.send(JSON.stringify({ type: 'join' }))
              }
            })
            .catch((err: unknown) => this.fail(err))
        }, REATTACH_WAIT_MS)
      }
    })
  }

  private onSocketMessage(msg: MatchServerMessage, socket: SocketLike): void {
    switch (msg.type) {
      case 'queued':
        this.ticketId = msg.ticketId
        this.emit('queued', {
          ticketId: msg.ticketId,
          existing: msg.existing,
          expiresAt: msg.expiresAt,
        })
        return
      case 'match_found':
        this.finish({
          ticketId: msg.ticketId,
          sessionId: msg.sessionId,
          token: msg.token,
          players: msg.players,
        })
        socket.close(1000, 'matched')
        return
      case 'cancelled':
        this.end('cancelled', msg.reason)
        socket.close(1000, 'cancelled')
        return
      case 'expired':
        this.end('expired', 'expired')
        socket.close(1000, 'expired')
        return
      case 'error':
        // `not_queued` answers a cancel that raced the end of the ticket; nothing to do.
        if (msg.code === 'not_queued') return
        this.fail(
          new NexusProblem({
            type: `urn:nexus:problem:${msg.code === 'conflict' ? 'conflict' : 'bad-request'}`,
            title: msg.code,
            status: msg.code === 'conflict' ? 409 : 400,
            detail: msg.message,
          }),
        )
        socket.close(1000, 'error')
        return
      case 'pong':
        return
    }
  }

  private async runHttp(): Promise<void> {
    const { t } = this.deps
    if (this.ticketId === null) {
      const ticket = await t.request('post', '/v1/matchmaking/{queue}/tickets', {
        path: { queue: this.queue },
        body: {
          ...(this.opts.region ? { region: this.opts.region } : {}),
          ...(this.opts.attributes ? { attributes: this.opts.attributes } : {}),
        },
        as: { kind: 'player' },
        // Joins are idempotent: a retry gets the ticket the first attempt made.
        retry: true,
      })
      this.ticketId = ticket.ticketId
      this.emit('queued', {
        ticketId: ticket.ticketId,
        existing: ticket.existing ?? false,
        expiresAt: ticket.expiresAt,
      })
      if (this.settle(ticket)) return
    }
    while (!this.done) {
      let ticket: Ticket
      try {
        ticket = await this.read(this.ticketId, LONG_POLL_SECONDS)
      } catch (err) {
        if (this.done) return
        throw err
      }
      this.settle(ticket)
    }
  }

  private read(ticketId: string, waitSeconds = 0): Promise<Ticket> {
    return this.deps.t.request('get', '/v1/matchmaking/tickets/{ticketId}', {
      path: { ticketId },
      query: waitSeconds > 0 ? { wait: waitSeconds } : {},
      as: { kind: 'player' },
      retry: true,
      timeoutMs: (waitSeconds + 10) * 1000,
      signal: this.abort.signal,
    })
  }

  /** Applies an HTTP view of the ticket; true when it ended the ticket. */
  private settle(t: Ticket): boolean {
    if (t.status === 'matched' && t.match?.token) {
      this.finish({
        ticketId: t.ticketId,
        sessionId: t.match.sessionId,
        token: t.match.token,
        players: t.match.players,
      })
      return true
    }
    if (t.status === 'cancelled') {
      this.end('cancelled', t.reason ?? 'cancelled')
      return true
    }
    if (t.status === 'expired') {
      this.end('expired', 'expired')
      return true
    }
    return false
  }

  private finish(m: Match): void {
    if (this.done) return
    this.done = true
    this.abort.abort()
    this.emit('match', m)
    this.resolveMatch(m)
  }

  private end(outcome: 'cancelled' | 'expired', reason: string): void {
    if (this.done) return
    this.done = true
    this.abort.abort()
    this.emit('ended', { outcome, reason })
    this.rejectMatch(new MatchmakingEnded(outcome, reason))
  }

  private fail(err: unknown): void {
    if (this.done) return
    this.done = true
    this.abort.abort()
    if (isOpen(this.socket)) this.socket.close(1000, 'failed')
    this.rejectMatch(err)
  }
}

/** Matchmaking: join queues, read their public settings and stats. */
export class Matchmaking {
  private readonly deps: { t: Transport; auth: Auth; sockets: SocketSettings }

  constructor(deps: { t: Transport; auth: Auth; sockets: SocketSettings }) {
    this.deps = deps
  }

  /** Joins a queue as the signed-in player; see `MatchTicket`. */
  join(queue: string, opts: JoinOptions = {}): MatchTicket {
    return new MatchTicket(queue, opts, this.deps)
  }

  /** Waiting players, matches per minute and wait percentiles. */
  stats(queue: string): Promise<QueueStats> {
    return this.deps.t.request('get', '/v1/matchmaking/{queue}/stats', {
      path: { queue },
      retry: true,
    })
  }

  /** The queue's public settings (teams, team size, rules, regions). */
  info(queue: string): Promise<QueueInfo> {
    return this.deps.t.request('get', '/v1/matchmaking/{queue}', { path: { queue }, retry: true })
  }
}
