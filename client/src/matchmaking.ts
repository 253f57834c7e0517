import type {
  MatchPlayer,
  ServerMessage as MatchServerMessage,
  TicketAttributesValue,
} from '../../workers/matchmaking/protocol.ts'
import type { Schemas } from './api.gen.ts'
import type { Auth } from './auth.ts'
import {
  backoff,
  type Credential,
  cuttableSleep,
  type Ok,
  type RetryPolicy,
  sleep,
  type Transport,
} from './http.ts'
import {
  isTransient,
  NexusNetworkError,
  NexusProblem,
  retryAfterMs,
  validationProblem,
} from './problem.ts'
import { fresh, type ReadOptions } from './read-options.ts'
import { randomUUID } from './platform.ts'
import {
  HEALTHY_SOCKET_MS,
  Emitter,
  isOpen,
  keepalive,
  type KeepaliveSettings,
  lifetime,
  messageText,
  monotonicNow,
  onPageWake,
  openSocket,
  reconnectDelay,
  serverLosesSocketIn,
  type SocketFactory,
  type SocketLike,
  socketCredential,
  toSocketUrl,
  utf8Bytes,
  WAKE_PROBE_MS,
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
  /**
   * A party leader queueing the party: every member's player id, the leader included (in any
   * order; `joinWithParty` fills it from the party). Anyone else naming a party is refused
   * (`NexusProblem` `forbidden`).
   */
  party?: string[]
  /**
   * `auto` (default): WebSocket, falling back to HTTP long-polling when sockets fail.
   * `websocket`: sockets only; a queued ticket whose socket is lost keeps reconnecting through
   * most of the queue's `disconnectGraceSeconds`, then fails (and its ticket is deleted).
   */
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
  /**
   * The wait failed: the join refused (a ban, a ticket in another region, a rate limit, an
   * unknown queue) or the server out of reach for longer than the ticket could wait. `matched`
   * rejects with the same error.
   */
  failed: { error: unknown }
}

/** The largest frame a pool reads (the server's MAX_CLIENT_FRAME_BYTES). */
const MAX_JOIN_FRAME_BYTES = 4096

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

/**
 * What a client's tickets share: the transport, auth, socket settings and, per client, the
 * waits whose cancel is still settling an unanswered HTTP join (`pendingCancels`).
 */
export interface MatchDeps {
  t: Transport
  auth: Auth
  sockets: SocketSettings
  pendingCancels?: Set<{ queue: string; done: Promise<void> }>
}

export interface SocketSettings extends KeepaliveSettings {
  factory: SocketFactory | null
  openTimeoutMs: number
  /** Consecutive failed reconnects before giving up on sockets (then HTTP, or failure). */
  maxReconnects: number
  /** Game connections: how long to keep trying to reach the session, past `maxReconnects`. */
  reconnectForMs: number
  backoff: RetryPolicy
}

/** How long a ticket being matched is waited for past its expiry (its session's creation retries). */
const MATCHING_WAIT_MS = 15 * 60_000
/** A long poll holds this long on the server (its maximum is 25 s). */
const LONG_POLL_SECONDS = 20
/**
 * A long-poll answered with the ticket still waiting sooner than this (well before its hold
 * would have ended) is followed by a pause.
 */
const EARLY_ANSWER_MS = (LONG_POLL_SECONDS - 2) * 1000
const EARLY_ANSWER_PAUSE_MS = 1000
/** After a reconnect the pool re-attaches a waiting ticket at once; past this we ask over HTTP. */
const REATTACH_WAIT_MS = 3000
/** How often a party member without a ticket reads the party for the leader's new one. */
const PARTY_POLL_MS = 2000
/**
 * How long a queued ticket's socket may stay down before the ticket goes over HTTP: the pool
 * cancels a ticket at least 10 s after its socket goes (its disconnect grace), and an HTTP join ends that
 * grace on the same ticket, so the join must come well within it (reconnects alone can take
 * longer than the grace when WebSocket stays blocked while HTTP works).
 */
const HTTP_WITHIN_GRACE_MS = 6000
/** How long a socket may take to open on a try made once that time is up (then HTTP). */
const LAST_TRY_OPEN_MS = 1000
/**
 * How long a read of a waiting ticket keeps its player present to the pool, by this device's
 * count: the pool keeps them 35 s past the read (its longest long-poll and 10 s); 5 s spared for
 * the read's way back and the two clocks.
 */
const READ_PRESENCE_MS = 30_000
/** Over `transport: 'websocket'`, the share of the pool's grace a queued ticket's socket may stay down. */
const WEBSOCKET_GRACE_SHARE = 0.8
/** How long `cancel()` waits for the pool to answer a socket `cancel` before it asks over HTTP. */
const CANCEL_ANSWER_MS = 5000
/**
 * How long a match announced without this player's token is read for the token: a player who
 * has not connected to the session within its join grace (120 s by default) forfeits anyway.
 */
const TOKEN_READ_MS = 120_000

/** Whether a ticket can still end in a match. */
function live(t: Ticket): boolean {
  return t.status === 'waiting' || t.status === 'matching'
}

/**
 * One player in one queue: joins over a WebSocket (reconnecting, re-attaching the same ticket
 * within the server's 10 s grace) or, when sockets do not work, over HTTP with long-polling.
 * Await `matched` for the session; `cancel()` leaves (on a party ticket, the whole party).
 * A party member's ticket (`waitForParty`) never joins: it waits for the leader's ticket.
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
  /** Whether the ticket goes over HTTP from the start (asked for, no sockets, a join too large). */
  private readonly overHttp: boolean
  private done = false
  private socket: SocketLike | null = null
  private readonly abort = new AbortController()
  private resolveMatch!: (m: Match) => void
  private rejectMatch!: (e: unknown) => void
  private readonly deps: MatchDeps
  private readonly opts: JoinOptions
  /** Resolves once this wait is over (ended or failed). */
  private readonly over: Promise<void>
  private markOver!: () => void
  /** `member`: a party member waiting for the ticket the leader makes, never joining itself. */
  private readonly role: 'join' | 'member'
  /**
   * Names this join on every socket and HTTP attempt: a join sent again after a socket dropped
   * before its answer (or an HTTP answer lost) gets the ticket the first one made, even matched
   * or cancelled meanwhile, never a second ticket.
   */
  private readonly joinKey = randomUUID()
  /** A member's party ticket that had ended before the wait began (the last game's). */
  private staleTicketId: string | null = null
  /**
   * When the ticket expires, on this device's monotonic clock (now + the server's `expiresIn`):
   * HTTP polls ride out the network till then. Not the server's `expiresAt`, nor the wall clock,
   * since players set device clocks far off, before a wait and during it, and a clock ahead would
   * give up on a ticket still waiting.
   */
  private expiresBy = 0
  /** `unavailable` answers to this ticket's join so far. */
  private unavailableAnswers = 0
  /** The pool's region: as asked, or the region of the party ticket a member took up. */
  private region: string | undefined
  /**
   * How long the pool keeps a socket ticket after its socket goes (the queue's
   * `disconnectGraceSeconds`, read with its settings; 10 s until then), and when the socket of a
   * queued ticket went: the HTTP fallback rides out the network for that long, not less.
   */
  private graceMs = 10_000
  private queuedSocketLostAt: number | null = null
  /** When the pool takes the socket serveSocket gave up on as silent as gone (Date.now). */
  private silentSocketLostAt: number | null = null
  /** An HTTP join is on its way: a cancel meanwhile leaves it to the answer (`cancelAsked`). */
  private joining = false
  /**
   * `cancel()` came while a join was unanswered (the HTTP join on its way, or a socket `join`
   * without its `queued`): the join's answer decides, since the ticket it made may have matched
   * at once (and the match then wins, as it does on the server).
   */
  private cancelAsked = false
  /** This ticket's cancel is among those a next join of the queue waits for. */
  private cancelSettlingNoted = false
  /** A socket `join` went out: the pool may hold a ticket for it even if no answer came. */
  private socketJoinSent = false
  /** The socket a `cancel` frame went out on (one is enough per socket: its frames are ordered). */
  private cancelSentOn: SocketLike | null = null
  /** Reading the ticket for a token that `match_found` lacked: no more sockets are needed. */
  private tokenRead: Promise<void> | null = null
  /** Who leaves the ticket: the player, or after a sign-out the token the player had. */
  private leaveAs: Credential = { kind: 'player' }
  /** Stops listening for the player signing out (see `signedOut`). */
  private readonly offSignOut: () => void
  /** Stops listening for the page coming back (`wake()`). */
  private readonly offPageWake: () => void
  /** The open socket's keepalive, which `wake()` asks to ping now. */
  private alive: ReturnType<typeof keepalive> | null = null
  /** Cut short by `wake()`: the pause before the next reconnect. */
  private pauseCut: AbortController | null = null

  constructor(queue: string, opts: JoinOptions, deps: MatchDeps, role: 'join' | 'member' = 'join') {
    super()
    this.over = new Promise<void>((resolve) => (this.markOver = resolve))
    this.queue = queue
    this.opts = opts
    this.deps = deps
    this.role = role
    this.region = opts.region
    // A join the schema takes but a pool's frame cannot hold (a full party with long attributes)
    // goes over HTTP, whose body may be larger, unless sockets were asked for.
    this.overHttp =
      opts.transport === 'http' ||
      !deps.sockets.factory ||
      (role === 'join' &&
        opts.transport !== 'websocket' &&
        utf8Bytes(this.joinFrame()) > MAX_JOIN_FRAME_BYTES)
    if (this.overHttp) this.transport = 'http'
    this.offSignOut = deps.auth.onSignOut((token) => this.signedOut(token))
    this.offPageWake = onPageWake(() => this.wake())
    this.matched = new Promise<Match>((resolve, reject) => {
      this.resolveMatch = resolve
      this.rejectMatch = reject
    })
    // Callers that only listen to events must not see an unhandled rejection.
    this.matched.catch(() => {})
    // Started a moment later: listeners attached right after `join()` see its first events.
    void Promise.resolve()
      .then(() => this.run())
      .catch((err: unknown) => this.fail(err))
  }

  /**
   * The next event of one type, as a promise; rejected if the wait is over first without one
   * (`await ticket.once('queued')` for a join the server refuses): with why it failed, the
   * `MatchmakingEnded`, or, matched, an error saying so.
   *
   * @example
   * const { ticketId } = await ticket.once('queued')
   */
  override once<K extends keyof TicketEvents>(type: K): Promise<TicketEvents[K]> {
    return new Promise((resolve, reject) => {
      const off = this.on(type, (value) => {
        off()
        resolve(value)
      })
      // After the last event of the wait: a `match`, `ended` or `failed` awaited resolves first.
      void this.over.then(() => {
        off()
        this.matched.then(
          () => reject(new Error(`the ticket was matched before a '${String(type)}' event`)),
          reject,
        )
      })
    })
  }

  /**
   * Leaves the queue. Resolves once the server confirms (or the ticket already ended). A ticket
   * already `matching` (its session being made) can no longer leave: `matched` still resolves.
   * While the HTTP join is on its way it resolves at once, and the join's answer decides: its
   * ticket leaves, or, matched already, `matched` resolves with the match. So too for a socket
   * join still unanswered, after up to 5 s for the answer.
   */
  async cancel(): Promise<void> {
    if (this.done) return
    const idBefore = this.ticketId
    if (this.role === 'member' && idBefore === null) {
      // Nothing on the server to leave: the leader has not queued yet.
      this.end('cancelled', 'cancelled')
      return
    }
    // A second cancel while the first one's leave is under way waits on that one's answer too.
    if (idBefore === null && (this.joining || this.cancelAsked)) {
      // The join's answer names the ticket to leave, or the match it already has.
      this.cancelAsked = true
      this.noteCancelSettling()
      return
    }
    // A socket join sent but unanswered (its `queued` lost with a dropped socket, say) may have
    // made a ticket that waits out the pool's disconnect grace (10 s at least), matchable all along: ending
    // the wait here alone could leave the player matched into a game they left. Only the join's
    // answer names that ticket, so the join is carried on, as an HTTP join on its way is: the
    // next socket sends it again (keyed, so it finds that ticket and makes no other) with a
    // `cancel` right behind it, and whichever answer comes (`queued` is cancelled, the fallback's
    // HTTP join leaves its ticket) ends the wait.
    const unanswered = idBefore === null && this.socketJoinSent
    if (unanswered) {
      this.cancelAsked = true
      // Its join is sent again after this cancel returns: a next join waits for it.
      this.noteCancelSettling()
    }
    const socket = this.transport === 'websocket' && isOpen(this.socket) ? this.socket : null
    if (socket && idBefore !== null) {
      // Asked from now, not only once the socket's answer is late: a socket that only looks
      // open (a phone that just changed networks) carries the cancel nowhere, and a join of this
      // queue meanwhile would be handed this waiting ticket by the pool, which the HTTP cancel
      // after the wait then ended; a socket reconnecting meanwhile sends the cancel again.
      this.cancelAsked = true
      this.noteCancelSettling()
    }
    // The pool handles a socket's frames in order: this cancel follows its join, if unanswered.
    if (socket) this.sendCancel(socket)
    if (socket || unanswered) {
      // Cut short when the ticket ends (its abort); no listener is left behind either way.
      await sleep(CANCEL_ANSWER_MS, this.abort.signal)
      if (this.done) return
    }
    // A join answered while the cancel was on its way made the ticket after all.
    const ticketId = this.ticketId ?? idBefore
    if (ticketId) {
      // Asked for good: the network away for now does not drop it (the ticket would wait on
      // through the pool's disconnect grace, and be taken back by the next socket or the HTTP
      // fallback, matchable), and a socket that reconnects meanwhile sends it on.
      this.cancelAsked = true
      // A join of this queue made meanwhile waits for it: the pool would hand that join this
      // ticket (the player's waiting one), and this cancel, landing after, would end it.
      this.noteCancelSettling()
      try {
        if ((await this.leaveThroughLosses(ticketId)) === false) this.cancelAsked = false
      } catch (err) {
        if (this.done) return
        throw err
      }
    } else if (!unanswered) this.end('cancelled', 'cancelled')
  }

  /**
   * `leave`, tried again through network losses and failures of the moment until the ticket
   * ends (here, or through a cancel a reconnected socket sends), or would have expired anyway.
   */
  private leaveThroughLosses(ticketId: string): Promise<boolean | undefined> {
    return this.persist(() => this.leave(ticketId), {
      needed: () => !this.done,
      giveUp: () => monotonicNow() >= this.expiresBy,
      signal: this.abort.signal,
    })
  }

  /**
   * The player signed out (or another signed in): the ticket ends (`ended`, reason
   * `signed_out`), and leaves the server with the token it was made with, best effort: a socket
   * `cancel`, and the HTTP leave of a ticket with a known id (or of one an HTTP join on its way
   * makes, when it answers).
   */
  private signedOut(token: string | null): void {
    if (this.done) return
    if (token !== null) this.leaveAs = { kind: 'bearer', token }
    if (this.transport === 'websocket' && isOpen(this.socket)) this.sendCancel(this.socket)
    // A member's ticket is the party's: it leaves as a member's cancel() takes it out.
    const ticketId = this.ticketId
    if (ticketId !== null && token !== null) void this.deleteTicket(ticketId).catch(() => {})
    this.end('cancelled', 'signed_out')
  }

  /**
   * A member's bare join (to a server from before `attach`) is meant only to attach it to the
   * party's ticket, which the server answers `existing`. A new ticket means the party's ended
   * between the read that found it and the join, and the server made one of this player alone:
   * that one leaves at once (the leader's next join would be refused for it), and the party's
   * ticket is read for how it ended.
   */
  private leaveStray(ticketId: string, socket: SocketLike): void {
    this.strayTickets.add(ticketId)
    socket.send(JSON.stringify({ type: 'cancel' }))
    this.settleFromRead(socket)
  }

  /**
   * Takes a member's socket onto the party's ticket: `attach` never makes a ticket, and a ticket
   * that ended meanwhile is answered as it ended. A server from before `attach` refuses the
   * type, and gets the bare `join` that attached members then (leaveStray covers its one risk).
   */
  private sendAttach(socket: SocketLike): void {
    if (this.attachRefused || this.ticketId === null) {
      socket.send(JSON.stringify({ type: 'join' }))
      return
    }
    this.attachSentOn = socket
    socket.send(JSON.stringify({ type: 'attach', ticketId: this.ticketId }))
  }

  /** The socket whose `attach` has had no answer yet. */
  private attachSentOn: SocketLike | null = null
  /** The server answered `attach` `unknown_type`: it predates the frame. */
  private attachRefused = false

  /**
   * Reads the party's ticket being waited on over HTTP and settles the wait by what it says. One
   * this player can no longer read (404: swept from its pool some minutes after it ended) is no
   * longer waited on: `socket` closes, and the next one watches the party for the leader's next.
   */
  private settleFromRead(socket: SocketLike): void {
    const partyTicket = this.ticketId
    if (partyTicket === null) return
    void this.persist(() => this.readPartyTicket(partyTicket), {
      needed: () => !this.done,
      signal: this.abort.signal,
    })
      .then((t) => {
        if (t === null) {
          if (this.done || this.ticketId !== partyTicket) return
          this.staleTicketId = partyTicket
          this.ticketId = null
          socket.close(1000, 'party ticket gone')
          return
        }
        if (t) this.settle(t)
      })
      .catch((err: unknown) => this.fail(err))
  }

  /** Sockets that delivered a frame: only those count as having worked (HEALTHY_SOCKET_MS). */
  private readonly heardFrom = new WeakSet<SocketLike>()

  /** Tickets of this player alone that a member's join made by mistake (leaveStray). */
  private readonly strayTickets = new Set<string>()

  private sendCancel(socket: SocketLike): void {
    this.cancelSentOn = socket
    socket.send(JSON.stringify({ type: 'cancel' }))
  }

  /**
   * Takes the ticket out of the queue and ends this wait; false when the ticket is `matching`
   * (its session being made): it can no longer leave, and the match that comes is delivered as
   * usual.
   */
  private async leave(ticketId: string): Promise<boolean> {
    try {
      this.settle(await this.deleteTicket(ticketId))
    } catch (err) {
      // Matched in the meantime: the match wins, as it does on the server.
      if (!(err instanceof NexusProblem && err.problem === 'conflict')) throw err
      const t = await this.read(ticketId)
      if (!this.settle(t) && live(t)) return false
    }
    this.end('cancelled', 'cancelled')
    return true
  }

  /**
   * This wait's HTTP join is still sent again after a cancel (its answer lost): a join of the
   * same queue made meanwhile waits for it, or that join's answer (the player's new ticket, which
   * the pool hands a keyed join it knows nothing of) would be the one this wait leaves.
   */
  private noteCancelSettling(): void {
    const pending = this.deps.pendingCancels
    if (!pending || this.done || this.cancelSettlingNoted) return
    this.cancelSettlingNoted = true
    const entry = { queue: this.queue, done: this.over }
    pending.add(entry)
    void this.over.then(() => pending.delete(entry))
  }

  /** Waits (for as long as a join is sent again at most) for earlier cancels of this queue. */
  private async afterEarlierCancels(): Promise<void> {
    const earlier = [...(this.deps.pendingCancels ?? [])]
      .filter((e) => e.queue === this.queue)
      .map((e) => e.done)
    if (earlier.length === 0) return
    const stop = new AbortController()
    const abort = () => stop.abort()
    this.abort.signal.addEventListener('abort', abort)
    try {
      await Promise.race([
        Promise.all(earlier),
        sleep(this.deps.sockets.reconnectForMs, stop.signal),
      ])
    } finally {
      stop.abort()
      this.abort.signal.removeEventListener('abort', abort)
    }
  }

  private async run(): Promise<void> {
    if (this.done) return
    if (this.role === 'join') await this.afterEarlierCancels()
    if (this.done) return
    const mode = this.opts.transport ?? 'auto'
    if (this.role === 'member') await this.startMember()
    if (this.done) return
    if (!this.overHttp) {
      const fallback = await this.runSocket()
      if (this.done) return
      if (mode === 'websocket') throw fallback
    }
    // The event says the connection changed; a ticket on HTTP from the start says so in
    // `transport` (an async caller such as joinWithParty could not listen in time anyway).
    if (this.transport !== 'http') {
      this.transport = 'http'
      this.emit('transport', 'http')
    }
    await this.runHttp()
  }

  /** Runs over sockets until done; returns the reason to fall back when sockets do not work. */
  private async runSocket(): Promise<unknown> {
    const { sockets, t, auth } = this.deps
    let failures = 0
    let lastError: unknown = null
    this.queuedSocketLostAt = null
    // Over `websocket` only no HTTP join follows a lost socket: a queued ticket's reconnects go
    // on through the pool's grace (most of it: a reconnect must land within it), past
    // maxReconnects, rather than give up after a few seconds the pool would have waited.
    const websocketOnly = this.opts.transport === 'websocket'
    const lossAllowedMs = () =>
      websocketOnly ? this.graceMs * WEBSOCKET_GRACE_SHARE : HTTP_WITHIN_GRACE_MS
    // A queued ticket whose socket has been gone too long for the pool's grace goes over HTTP
    // (or, over `websocket` only, fails).
    const graceRunningOut = () =>
      this.queuedSocketLostAt !== null && Date.now() - this.queuedSocketLostAt >= lossAllowedMs()
    const outOfAttempts = () =>
      failures > sockets.maxReconnects && !(websocketOnly && this.queuedSocketLostAt !== null)
    // A queued ticket's pauses end by the time its socket may stay down: the last try starts
    // within it, however long the backoff has grown.
    const leftOfAllowance = () =>
      this.queuedSocketLostAt === null
        ? Infinity
        : Math.max(0, lossAllowedMs() - (Date.now() - this.queuedSocketLostAt))
    while (!this.done) {
      let token: string
      try {
        token = await auth.token()
      } catch (err) {
        // Renewing the token needs the network as much as the socket does.
        if (this.done) return null
        if (!isTransient(err)) throw err
        lastError = err
        failures++
        if (outOfAttempts() || graceRunningOut()) return lastError
        await this.pause(failures, err, leftOfAllowance())
        continue
      }
      // Ended while the token was coming (signed out, or in as another player, whose token this
      // may be): no socket.
      if (this.done) return null
      const credential = socketCredential(sockets.factory!, token)
      const url = toSocketUrl(
        t.url(
          '/v1/matchmaking/{queue}',
          { queue: this.queue },
          { region: this.region, ...credential.query },
        ),
      )
      // A queued ticket's socket is gone: an attempt may take no longer than what is left of the
      // time the pool's grace allows (a second at least, for one more try once it is up), or one
      // that hangs (a stalled upgrade) would outlast the grace.
      const openWithinMs = Math.min(
        sockets.openTimeoutMs,
        Math.max(LAST_TRY_OPEN_MS, leftOfAllowance()),
      )
      let socket: SocketLike
      try {
        socket = await openSocket(sockets.factory!, url, credential.protocols, openWithinMs)
      } catch (err) {
        if (this.done) return null
        lastError = err
        failures++
        // A queued ticket's socket lost (every queued player at once after a deploy, say), past
        // its attempts (over `websocket` only, it goes on through the grace): the queue was read
        // when the ticket was made, and a region taken out since cancels the ticket, so its
        // settings as cached will do (a fresh read each would be a Neon read each).
        const queued = this.queuedSocketLostAt !== null
        if (failures === 1 || failures > sockets.maxReconnects) await this.checkQueue(!queued)
        // Cancelled meanwhile: no renewal, no `reconnecting` after `ended`.
        if (this.done) return null
        if (failures === 1 && !graceRunningOut()) {
          // The upgrade's 401 is hidden as well: the token may be what was refused (a rotated
          // secret), so it is renewed once per run of failures, as a 401 over HTTP would be
          // (not when the grace is running out: HTTP renews it anyway if need be).
          await auth.token(true, token).catch((renewErr: unknown) => {
            if (!this.done && !isTransient(renewErr)) throw renewErr
          })
          if (this.done) return null
        }
        if (outOfAttempts() || graceRunningOut()) return lastError
        await this.pause(failures, undefined, leftOfAllowance())
        continue
      }
      if (this.done) {
        // Cancelled while the socket was opening: it must not join.
        socket.close(1000, 'cancelled')
        return null
      }
      const openedAt = { monotonic: monotonicNow(), wall: Date.now() }
      this.queuedSocketLostAt = null
      this.socket = socket
      if (this.transport !== 'websocket') this.emit('transport', 'websocket')
      this.transport = 'websocket'
      await this.serveSocket(socket)
      this.socket = null
      if (this.done) return null
      if (this.tokenRead) {
        // Matched: only the token is missing, and it comes over HTTP (no socket needed).
        await this.tokenRead
        return null
      }
      // A socket given up on as silent is taken as gone by the pool, its grace begun, only
      // once its silence is long enough: from then (Date.now's time).
      // So is one whose join went out unanswered: the pool may have made its ticket (the `queued`
      // lost with the socket), and keeps it only for its grace.
      if (this.ticketId !== null || this.socketJoinSent) {
        this.queuedSocketLostAt = this.silentSocketLostAt ?? Date.now()
      }
      this.silentSocketLostAt = null
      // Only a socket that stayed up a while, and delivered frames (a pong counts), starts the
      // count again (see HEALTHY_SOCKET_MS): one a proxy opens and passes nothing through is a
      // failure, or it would be tried for ever.
      if (lifetime(openedAt) >= HEALTHY_SOCKET_MS && this.heardFrom.has(socket)) failures = 0
      failures++
      if (failures > sockets.maxReconnects) {
        return new NexusNetworkError('the matchmaking socket keeps closing')
      }
      await this.pause(failures, undefined, leftOfAllowance())
    }
    return null
  }

  /** Waits before the next try: the backoff, or as long as the server asked if longer. */
  private async pause(attempt: number, err?: unknown, capMs = Infinity): Promise<void> {
    const delayMs = Math.min(
      capMs,
      Math.max(reconnectDelay(this.deps.sockets.backoff, attempt), retryAfterMs(err)),
    )
    this.emit('reconnecting', { attempt, delayMs })
    // What the server asked for is waited out whatever wakes: only the backoff beyond it is cut.
    const askedMs = Math.min(delayMs, retryAfterMs(err))
    await cuttableSleep(delayMs, this.abort.signal, (cut) => (this.pauseCut = cut), askedMs)
    this.pauseCut = null
  }

  /**
   * Checks the wait's socket now, as when the app comes back to the foreground or the network
   * returns: an open socket is pinged and given up on (and reconnected) if nothing answers within
   * 3 s; a reconnect waiting out its pause tries within half a second (a random part of it: a
   * network back for many devices at once). In a browser page it runs by itself when
   * the page is shown again, restored or back online; from React Native, call it on AppState's
   * `active`.
   */
  wake(): void {
    if (this.done) return
    this.alive?.probe(WAKE_PROBE_MS)
    this.pauseCut?.abort()
  }

  /**
   * Throws what an HTTP join would when the queue itself is the problem: browsers hide a refused
   * upgrade's answer, so the queue is read (404 unknown, 422 for a region it does not have). The
   * network being away, or the server failing for now, says nothing: the caller keeps trying.
   */
  private async checkQueue(fresh = true): Promise<void> {
    let info: QueueInfo
    try {
      info = await this.deps.t.request('get', '/v1/matchmaking/{queue}', {
        path: { queue: this.queue },
        // Fresh: the settings are cached, and a region just taken out of the queue must be
        // seen as gone, not retried for as long as a cached answer still lists it.
        ...(fresh ? { headers: { 'cache-control': 'no-cache' } } : {}),
        retry: true,
        signal: this.abort.signal,
      })
    } catch (err) {
      if (!isTransient(err)) throw err
      return
    }
    const grace: unknown = info.disconnectGraceSeconds
    if (typeof grace === 'number' && grace > 0) this.graceMs = grace * 1000
    const region = this.region
    // Only a list the answer does carry can refuse the region (a proxy's or a mock's may not).
    const regions: unknown = info.regions
    if (region !== undefined && Array.isArray(regions) && !regions.includes(region)) {
      // A ticket of this wait there may have been matched while its socket was away: the pool
      // of a region taken out still owes the match, and a read of the ticket takes it.
      const ticketId = this.ticketId
      if (ticketId !== null) {
        // Unread for now (the network, a pool slow to answer), or in a match being made: the
        // wait goes on (reconnecting, or over HTTP) to hear how it ends. Refused, the region's
        // own refusal below stands.
        const t = await this.read(ticketId).catch((err: unknown) =>
          isTransient(err) ? 'later' : null,
        )
        if (this.done || t === 'later') return
        if (t !== null && (this.settle(t) || t.status === 'matching')) return
      }
      const names = regions.join(', ')
      throw validationProblem(
        `Region '${region}' is not one of this queue's regions (${names})`,
        'region',
        `one of ${names}`,
      )
    }
  }

  /** Handles one open socket; resolves when it closes (or stops answering pings). */
  private serveSocket(socket: SocketLike): Promise<void> {
    return new Promise<void>((resolve) => {
      let attached = false
      // The re-attach check below; a socket that closes first leaves it to the next one.
      let reattach: ReturnType<typeof setTimeout> | undefined
      // Cuts the check's pauses short when this socket is gone.
      const gone = new AbortController()
      const over = () => {
        clearTimeout(reattach)
        alive.stop()
        if (this.alive === alive) this.alive = null
        gone.abort()
        resolve()
      }
      this.silentSocketLostAt = null
      const alive = keepalive(socket, this.deps.sockets, (silentForMs) => {
        this.silentSocketLostAt = Date.now() + serverLosesSocketIn(silentForMs)
        // Its close may take as long as the dead connection does: reconnect now.
        socket.close(4000, 'keepalive timeout')
        over()
      })
      this.alive = alive
      socket.addEventListener('message', (e) => {
        alive.heard()
        this.heardFrom.add(socket)
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
      socket.addEventListener('close', over)
      if (this.ticketId === null) {
        if (this.role === 'member') {
          // A member waits: the leader's new ticket attaches this socket and sends `queued`. One
          // made before the socket connected (since the wait's first party read, or while a
          // socket was down; perhaps in another region, or already matched) shows on the party.
          // The leader may queue in another region than this socket's pool, which then never
          // sends anything: the party is read every PARTY_POLL_MS (as over HTTP) until it names
          // a ticket.
          const region = this.region
          const needed = () => !attached && !this.done && this.ticketId === null && isOpen(socket)
          const watch = async (): Promise<boolean> => {
            while (needed()) {
              // A member has no ticket to expire yet: it waits as long as the socket is up.
              const found = await this.persist(() => this.checkParty(), {
                needed,
                signal: gone.signal,
              })
              if (found) return true
              await sleep(PARTY_POLL_MS, gone.signal)
            }
            return false
          }
          reattach = setTimeout(() => {
            if (!needed()) return
            void watch()
              .then((found) => {
                if (!found || this.done || !isOpen(socket)) return
                // A live ticket this socket was not attached to: a member's join attaches it,
                // in the ticket's pool (a reconnect there re-attaches it by itself).
                if (this.region === region) this.sendAttach(socket)
                else socket.close(1000, 'region')
              })
              .catch((err: unknown) => this.fail(err))
          }, REATTACH_WAIT_MS)
          return
        }
        const frame = this.joinFrame()
        // Refused here as the pool would refuse it (far larger, the pool closes the socket, and
        // every reconnect would send it again).
        if (utf8Bytes(frame) > MAX_JOIN_FRAME_BYTES) {
          this.fail(
            new NexusProblem({
              type: 'urn:nexus:problem:bad-request',
              title: 'too_large',
              status: 400,
              detail: `Frames are limited to ${MAX_JOIN_FRAME_BYTES} bytes: fewer or smaller attributes`,
            }),
          )
          socket.close(1000, 'error')
          return
        }
        socket.send(frame)
        this.socketJoinSent = true
        // Cancelled while an earlier join went unanswered: this one finds its ticket (or makes
        // one), and the cancel right behind it takes that ticket out (see cancel()).
        if (this.cancelAsked && !this.done && this.cancelSentOn !== socket) this.sendCancel(socket)
      } else {
        // A reconnect: the pool re-attaches a waiting ticket by itself. Joining again could make a
        // second ticket if this one was matched meanwhile, so ask over HTTP instead.
        reattach = setTimeout(() => {
          const ticketId = this.ticketId
          if (attached || this.done || !ticketId) return
          void this.persist(() => this.read(ticketId), {
            needed: () => !attached && isOpen(socket),
            giveUp: () => monotonicNow() >= this.expiresBy,
            signal: gone.signal,
          })
            .then((t) => {
              if (!t || this.settle(t) || !isOpen(socket)) return
              // Still waiting and not re-attached: the owner's join sent again with its key finds
              // that ticket (or the match made since the read) and makes no other; a bare join
              // could make a new solo ticket if the ticket ended in between. A member has no join
              // of its own: it attaches to the party's ticket.
              if (this.role === 'member') this.sendAttach(socket)
              else socket.send(this.joinFrame())
            })
            .catch((err: unknown) => this.fail(err))
        }, REATTACH_WAIT_MS)
      }
    })
  }

  /** The owner's join, keyed: sent again, it finds the ticket it made and makes no other. */
  private joinFrame(): string {
    // Its size was judged when it was first sent: the same options make the same size.
    return JSON.stringify({
      type: 'join',
      ...(this.opts.party ? { party: this.opts.party } : {}),
      ...(this.opts.attributes ? { attributes: this.opts.attributes } : {}),
      joinKey: this.joinKey,
    })
  }

  /**
   * A `match_found` came without this player's session token: reads the ticket, whose answer
   * carries it, through transient failures and answers still without one, for TOKEN_READ_MS;
   * then `matched` rejects with `unavailable` (503) naming the session, which a signed-in player
   * may still join with their own token. A refusal (the ticket no longer kept: `not-found`) is
   * thrown as it is.
   */
  private async readToken(found: { ticketId: string; sessionId: string }): Promise<void> {
    const giveUpAt = Date.now() + TOKEN_READ_MS
    const giveUp = (why: string) =>
      new NexusProblem({
        type: 'urn:nexus:problem:unavailable',
        title: 'Service unavailable',
        status: 503,
        detail: `Matched into session ${found.sessionId}, but this player's session token could not be read: ${why}`,
        ticketId: found.ticketId,
        sessionId: found.sessionId,
      })
    for (let misses = 0; !this.done;) {
      let t: Ticket | undefined
      try {
        t = await this.persist(() => this.read(found.ticketId), {
          needed: () => !this.done,
          giveUp: () => Date.now() >= giveUpAt,
          signal: this.abort.signal,
        })
      } catch (err) {
        // Transient failures are thrown only once the time is up.
        if (this.done || !isTransient(err)) throw err
        throw giveUp(err instanceof Error ? err.message : String(err))
      }
      // Matched with its token: the match (`finish`); ended (never expected): `end`.
      if (t === undefined || this.settle(t)) return
      if (Date.now() >= giveUpAt) throw giveUp(`the ticket reads '${t.status}' without one`)
      await sleep(backoff(this.deps.sockets.backoff, misses++), this.abort.signal)
    }
  }

  /**
   * `attempt`, tried again after transient failures (the network, the server failing for now)
   * with backoff, as the ticket waits on the server all the same: undefined once `needed` no
   * longer holds, and the last failure once `giveUp` says the wait is over (the ticket would
   * have expired).
   */
  private async persist<T>(
    attempt: () => Promise<T>,
    opts: {
      needed: () => boolean
      giveUp?: () => boolean
      signal: AbortSignal
      /**
       * When (Date.now) a try must begin to count (a pool's grace ending): a pause, however long
       * the server asked, ends by then; past it, pauses are as ever.
       */
      lastTryBy?: () => number
    },
  ): Promise<T | undefined> {
    for (let failures = 0; !this.done && opts.needed();) {
      try {
        return await attempt()
      } catch (err) {
        if (this.done || !isTransient(err) || opts.giveUp?.()) throw err
        let wait = Math.max(backoff(this.deps.sockets.backoff, failures++), retryAfterMs(err))
        const left = opts.lastTryBy ? opts.lastTryBy() - Date.now() : 0
        if (left > 0) wait = Math.min(wait, left)
        await sleep(wait, opts.signal)
      }
    }
    return undefined
  }

  private onSocketMessage(msg: MatchServerMessage, socket: SocketLike): void {
    if (msg.type !== 'error' && msg.type !== 'pong' && this.attachSentOn === socket) {
      this.attachSentOn = null
    }
    switch (msg.type) {
      case 'queued':
        if (this.role === 'member' && msg.existing === false) {
          this.leaveStray(msg.ticketId, socket)
          return
        }
        this.ticketId = msg.ticketId
        // Reconnects go to this region's pool by name, which needs no read of the queue: the
        // ticket is taken back there even while the server cannot read the queue's settings.
        if (typeof msg.region === 'string') this.region = msg.region
        // A server from before the setting sends none: the 10 s that was fixed then.
        const grace: unknown = msg.disconnectGraceSeconds
        if (typeof grace === 'number' && grace > 0) this.graceMs = grace * 1000
        this.expiresBy = expiresBy(msg)
        if (this.cancelAsked) {
          // The answer to a join cancelled before it came (a ticket re-attached on connect, say):
          // the ticket leaves, unless a cancel is on its way on this socket already.
          if (this.cancelSentOn !== socket) this.sendCancel(socket)
          return
        }
        this.emit('queued', {
          ticketId: msg.ticketId,
          existing: msg.existing,
          expiresAt: msg.expiresAt,
        })
        return
      case 'match_found':
        if (!msg.token) {
          // A pool that could not sign this player's session token sends none and closes the
          // socket: `matched` must not resolve without one, nor wait forever. The ticket's HTTP
          // read carries the caller's token, signed by the Worker.
          this.tokenRead ??= this.readToken(msg).catch((err: unknown) => this.fail(err))
          socket.close(1000, 'matched')
          return
        }
        this.finish({
          ticketId: msg.ticketId,
          sessionId: msg.sessionId,
          token: msg.token,
          players: msg.players,
        })
        socket.close(1000, 'matched')
        return
      case 'cancelled':
        if (this.strayTickets.has(msg.ticketId)) return
        this.end('cancelled', msg.reason)
        socket.close(1000, 'cancelled')
        return
      case 'expired':
        if (this.strayTickets.has(msg.ticketId)) return
        this.end('expired', 'expired')
        socket.close(1000, 'expired')
        return
      case 'error': {
        if (this.attachSentOn === socket) {
          this.attachSentOn = null
          if (msg.code === 'unknown_type') {
            this.attachRefused = true
            this.sendAttach(socket)
            return
          }
          // The pool no longer holds the party's ticket (long over): the ticket's read says how
          // it ended, or fails the wait as a read would.
          if (msg.code === 'not_queued') {
            this.settleFromRead(socket)
            return
          }
        }
        // `not_queued` answers a cancel that raced the end of the ticket; nothing to do.
        if (msg.code === 'not_queued') return
        if (msg.code === 'unavailable' && this.ticketId !== null) {
          // Asked again for a ticket it has (a keyed join after a reconnect), the server could
          // not answer for now: the ticket stands, and a new socket takes it back.
          if (this.unavailableAnswers++ < this.deps.sockets.maxReconnects) {
            socket.close(1000, 'unavailable')
            return
          }
        }
        if (msg.code === 'unavailable' && this.ticketId === null) {
          // The join made nothing: a cancel waiting for its answer ends the ticket now.
          this.socketJoinSent = false
          if (this.cancelAsked) {
            this.end('cancelled', 'cancelled')
            socket.close(1000, 'cancelled')
            return
          }
          // The server could not answer the join for now (e.g. it could not read the party): a
          // new socket sends it again after the usual reconnect backoff, up to maxReconnects times.
          if (this.unavailableAnswers++ < this.deps.sockets.maxReconnects) {
            socket.close(1000, 'unavailable')
            return
          }
        }
        // The same problems an HTTP join gets for the same refusal.
        const [problem, status] =
          msg.code === 'conflict'
            ? (['conflict', 409] as const)
            : msg.code === 'party_forbidden' || msg.code === 'banned' || msg.code === 'signed_out'
              ? (['forbidden', 403] as const)
              : msg.code === 'unavailable'
                ? (['unavailable', 503] as const)
                : msg.code === 'rate_limited'
                  ? (['rate-limited', 429] as const)
                  : msg.code === 'invalid'
                    ? (['validation', 422] as const)
                    : msg.code === 'key_reused'
                      ? (['idempotency-key-reused', 422] as const)
                      : (['bad-request', 400] as const)
        this.fail(
          new NexusProblem({
            type: `urn:nexus:problem:${problem}`,
            title: msg.code,
            status,
            detail: msg.message,
            // The wait a refused join was told, as an HTTP join's 429 carries it.
            ...(typeof msg.retryAfter === 'number' ? { retryAfter: msg.retryAfter } : {}),
          }),
        )
        socket.close(1000, 'error')
        return
      }
      case 'pong':
        return
    }
  }

  private async runHttp(): Promise<void> {
    const { t } = this.deps
    if (this.ticketId === null && this.role === 'member') await this.pollParty()
    if (this.done) return
    // A ticket a socket made: the server cancels it once its socket has been gone for the grace
    // (the queue's) unless the player joins again, which answers that same ticket while it is live.
    const socketTicket = this.role === 'join' ? this.ticketId : null
    // The pool keeps that ticket, matchable, for its grace after the socket went: the network
    // is ridden out until then (a mobile player switching networks), not given up at once.
    const lostAt = this.queuedSocketLostAt
    // A read that found the ticket waiting keeps this player present to the pool for a while
    // (READ_PRESENCE_MS): the join that takes the ticket over may go on trying until then too,
    // rather than give up (and cancel a ticket the pool keeps) at the socket's grace.
    let presentUntil = -Infinity
    const keptUntil = () => Math.max((lostAt ?? -Infinity) + this.graceMs, presentUntil)
    const graceOver = () => lostAt === null || Date.now() >= keptUntil()
    // A pause the server asks for (an overloaded pool's 6 to 15 s) may not carry the read and the
    // join past the grace: the last try starts a second before it ends.
    const lastTryBy = () => keptUntil() - LAST_TRY_OPEN_MS
    const withinGrace = {
      needed: () => true,
      giveUp: graceOver,
      signal: this.abort.signal,
      lastTryBy,
    }
    if (socketTicket !== null) {
      // Read past the grace too, for as long as a match made within it holds its seat (the
      // session's join grace): the server keeps a matched ticket readable for minutes.
      const now = await this.persist(() => this.read(socketTicket), {
        ...withinGrace,
        giveUp: () => lostAt === null || Date.now() - lostAt >= this.graceMs + TOKEN_READ_MS,
      })
      if (now !== undefined && this.settle(now)) return
      if (now !== undefined && live(now)) presentUntil = Date.now() + READ_PRESENCE_MS
    }
    if (this.ticketId === null || socketTicket !== null) {
      let ticket: Ok<'/v1/matchmaking/{queue}/tickets', 'post'>
      this.joining = true
      try {
        const join = () =>
          t.request('post', '/v1/matchmaking/{queue}/tickets', {
            path: { queue: this.queue },
            headers: { 'idempotency-key': this.joinKey },
            body: {
              // The region the ticket is in once known (a socket's `queued` said it): without
              // one the server takes the queue's first region, which a change of the queue's
              // regions can make another pool, where this join's key means nothing.
              ...(this.region ? { region: this.region } : {}),
              ...(this.opts.party ? { party: this.opts.party } : {}),
              ...(this.opts.attributes ? { attributes: this.opts.attributes } : {}),
            },
            as: { kind: 'player' },
            // Keyed: a retry gets the ticket the first attempt made, whatever became of it.
            retry: true,
          })
        // A join's answer lost (the network gone just then) may leave a ticket it made on the
        // server, matchable until it expires: the join is sent again, keyed, until an answer
        // names it (a cancel meanwhile then leaves it), for as long as a socket would reconnect.
        // Time spent trying, not asleep (a phone locked meanwhile): the clock that stops then.
        const startedAt = monotonicNow()
        const untilAnswered = {
          needed: () => true,
          giveUp: () => monotonicNow() - startedAt >= this.deps.sockets.reconnectForMs,
          signal: this.abort.signal,
        }
        const answer = await this.persist(join, socketTicket === null ? untilAnswered : withinGrace)
        // Ended meanwhile (cancelled, signed out): nothing to take up.
        if (answer === undefined) return
        ticket = answer
      } catch (err) {
        // The player asked to leave, and no answer came in all that time: a ticket the join may
        // have made cannot be named, and waits out its time to live (best effort ends here).
        if (this.cancelAsked) return this.end('cancelled', 'cancelled')
        // The party changed while its leader joined: the pool cancelled the ticket it made
        // (`party_changed`, as its members' sockets hear), and the leader ends as they do.
        if (
          err instanceof NexusProblem &&
          err.problem === 'conflict' &&
          typeof err.body.partyId === 'string'
        ) {
          return this.end('cancelled', 'party_changed')
        }
        throw err
      } finally {
        this.joining = false
      }
      if (this.cancelAsked && !this.done) {
        // Cancelled while the join was on its way: a match it already has wins (as a cancel
        // that meets a match does), else its ticket leaves, unless it is `matching` by now.
        if (this.settle(ticket)) return
        const left = await this.leaveThroughLosses(ticket.ticketId).catch((err: unknown) => {
          // Named for `fail`, which leaves it on the server, best effort, one last time.
          this.ticketId ??= ticket.ticketId
          throw err
        })
        if (left !== false) return
        this.ticketId = ticket.ticketId
      } else if (this.done || (socketTicket !== null && ticket.ticketId !== socketTicket)) {
        // Cancelled while the join was on its way, or the socket's ticket ended just before it:
        // the ticket this join made must not wait on alone (the loop below reads the old one).
        const left = await this.deleteTicket(ticket.ticketId).then(
          () => true,
          (err: unknown) => {
            if (err instanceof NexusProblem && err.problem === 'conflict') return false
            throw err
          },
        )
        // The join's own matching matched it as it was made: that match stands (as in cancel()),
        // unless the socket's ticket has one too, which the loop below then takes.
        if (!left && socketTicket !== null && !this.done) {
          if ((await this.read(socketTicket)).status !== 'matched') this.ticketId = ticket.ticketId
        }
      } else {
        this.ticketId = ticket.ticketId
        this.emit('queued', {
          ticketId: ticket.ticketId,
          existing: ticket.existing ?? false,
          expiresAt: ticket.expiresAt,
        })
        if (this.settle(ticket)) return
      }
    }
    const ticketId = this.ticketId
    if (ticketId === null) return
    let failures = 0
    // A ticket is waiting when first polled: the join (or the party's read) found it so.
    let lastStatus: Ticket['status'] = 'waiting'
    while (!this.done) {
      let ticket: Ticket
      const askedAt = monotonicNow()
      try {
        ticket = await this.read(ticketId, LONG_POLL_SECONDS)
      } catch (err) {
        if (this.done) return
        // The ticket may wait on the server whether or not this device can reach it (a party's
        // that others had sockets on is kept 35 s past this device's last read): keep asking
        // until it would have expired anyway, and then for as long as a match made just before
        // that holds its seat (the session's join grace); the server says how it ended.
        if (!isTransient(err) || monotonicNow() >= this.expiresBy + TOKEN_READ_MS) throw err
        await this.pause(++failures, err)
        continue
      }
      // Reached again after `reconnecting`: said as a socket's reconnect says it (the pool's
      // `queued` again), so that a screen showing the loss can clear it.
      const recovered = failures > 0
      failures = 0
      const ended = this.settle(ticket)
      if (!ended && recovered && !this.cancelAsked && ticket.status === 'waiting') {
        this.emit('queued', {
          ticketId: ticket.ticketId,
          existing: true,
          expiresAt: ticket.expiresAt,
        })
      }
      // Answered early with nothing new (the pool answers a reader's oldest poll when a fifth of
      // theirs comes: five tabs of one player, each tab's poll answered in turn however long it
      // was held; a server that holds none; a ticket matched whose match record was swept, which
      // reads the same until the ticket goes too): a pause, or the tabs would take turns at
      // network speed until the ticket ends. (A poll answered because the ticket moved on, to
      // `matching`, is asked again at once: its match comes moments later.)
      const unchanged = ticket.status === lastStatus
      lastStatus = ticket.status
      if (!ended && !this.done && unchanged && monotonicNow() - askedAt < EARLY_ANSWER_MS) {
        await sleep(EARLY_ANSWER_PAUSE_MS, this.abort.signal).catch(() => {})
      }
    }
  }

  /**
   * A member's first look at the party: fails when the player is in none, takes up a ticket the
   * leader already made, and remembers an ended one so that it is not mistaken for a new one.
   */
  private async startMember(): Promise<void> {
    // A network blip here would end a wait the member means to keep, as the later reads would not.
    const steady = { needed: () => true, signal: this.abort.signal }
    const party = await this.persist(() => this.readParty(), steady)
    if (party && this.leadsNow(party)) return
    const ticketId = party ? this.ticketOfQueue(party) : null
    if (ticketId === null) return
    const ticket = await this.persist(() => this.readPartyTicket(ticketId), steady)
    if (ticket === undefined) return
    if (
      ticket !== null &&
      ticket.queue === this.queue &&
      (await this.persist(() => this.stillToPlay(ticket), steady)) === true
    ) {
      // Matched while this member was away (the app killed, a wait begun late): their game is
      // still on, and they are in it.
      this.takeUp(ticket)
      this.settle(ticket)
      return
    }
    if (ticket === null || !live(ticket) || ticket.queue !== this.queue) {
      this.staleTicketId = ticketId
      return
    }
    this.takeUp(ticket)
  }

  /**
   * Whether a matched ticket's game is still live: then it is this wait's match, not the last
   * game's. Its session is asked with the token the ticket carries for this player; a session
   * gone or not readable is not one to join.
   */
  private async stillToPlay(ticket: Ticket): Promise<boolean> {
    if (ticket.status !== 'matched' || !ticket.match?.token) return false
    try {
      const session = await this.deps.t.request('get', '/v1/sessions/{id}', {
        path: { id: ticket.match.sessionId },
        as: { kind: 'bearer', token: ticket.match.token },
        retry: true,
        signal: this.abort.signal,
      })
      return session.status === 'live'
    } catch (err) {
      // A refusal says the game is not this player's to join; a 503 or a lost answer says
      // nothing yet, and is asked again (`persist`) rather than taken as a game over.
      if (err instanceof NexusProblem && !isTransient(err)) return false
      throw err
    }
  }

  /**
   * Without a socket, nothing pushes the leader's ticket: read the party until it names one,
   * through network losses too (the member has no ticket that could expire yet).
   */
  private async pollParty(): Promise<void> {
    const needed = () => !this.done
    while (!(await this.persist(() => this.checkParty(), { needed, signal: this.abort.signal }))) {
      if (this.done) return
      await sleep(PARTY_POLL_MS, this.abort.signal)
    }
  }

  /** Takes up the leader's new ticket if the party names one; true when it did. */
  private async checkParty(): Promise<boolean> {
    const party = await this.readParty()
    if (this.leadsNow(party)) return true
    const ticketId = this.ticketOfQueue(party)
    if (ticketId === null || ticketId === this.staleTicketId) return false
    const ticket = await this.readPartyTicket(ticketId)
    if (this.done || this.ticketId !== null) return true
    if (ticket === null || ticket.queue !== this.queue) {
      // Not one to wait on: the leader queued elsewhere (this wait is for this queue only), or
      // this player cannot read it.
      this.staleTicketId = ticketId
      return false
    }
    this.takeUp(ticket)
    this.settle(ticket)
    return true
  }

  /**
   * A member waits for the leader to queue; one who leads the party now (the leader left, and the
   * party passed to them) would wait for good, the party with them: the wait ends, `cancelled`
   * with reason `leader`, for the game to queue the party (`joinWithParty`). True when it ended.
   */
  private leadsNow(party: { leader: string }): boolean {
    if (this.deps.auth.playerId === null || party.leader !== this.deps.auth.playerId) return false
    this.end('cancelled', 'leader')
    return true
  }

  /**
   * The party's latest ticket in this wait's queue: a party may wait in several queues at once,
   * each ticket listed in `tickets` (ids name their queue first). A server from before that list
   * names only the latest ticket of all, which the caller checks is of this queue.
   */
  private ticketOfQueue(party: { ticketId: string | null; tickets?: string[] }): string | null {
    if (party.tickets === undefined) return party.ticketId
    const listed = party.tickets.find((id) => id.startsWith(`${this.queue}:`))
    if (listed !== undefined) return listed
    // A matched ticket leaves the list at the party's next change, and stays its `ticketId`:
    // a member on it still finds its game.
    return party.ticketId?.startsWith(`${this.queue}:`) ? party.ticketId : null
  }

  /**
   * The ticket a party names, or null when this player cannot read it (404): swept from its pool
   * some minutes after it ended (the party keeps naming its last ticket), or made before the
   * player joined the party, so without them on it. Neither is one to wait on.
   */
  private async readPartyTicket(ticketId: string): Promise<Ticket | null> {
    try {
      return await this.read(ticketId)
    } catch (err) {
      if (err instanceof NexusProblem && err.problem === 'not-found') return null
      throw err
    }
  }

  /** A member takes up the party's ticket, in whichever region the leader queued. */
  private takeUp(ticket: Ticket): void {
    this.ticketId = ticket.ticketId
    this.region = ticket.region
    this.expiresBy = expiresBy(ticket)
    this.emit('queued', { ticketId: ticket.ticketId, existing: true, expiresAt: ticket.expiresAt })
  }

  private readParty() {
    return this.deps.t.request('get', '/v1/parties/me', {
      as: { kind: 'player' },
      retry: true,
      signal: this.abort.signal,
    })
  }

  private deleteTicket(ticketId: string): Promise<Ticket> {
    return this.deps.t.request('delete', '/v1/matchmaking/tickets/{ticketId}', {
      path: { ticketId },
      as: this.leaveAs,
      retry: true,
    })
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
    // A ticket being matched is past expiry's reach: the server does not expire it while its
    // session is made, which may retry for minutes (a ticket matched at the end of its time).
    this.expiresBy =
      t.status === 'matching'
        ? Math.max(expiresBy(t), monotonicNow() + MATCHING_WAIT_MS)
        : expiresBy(t)
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
    this.offSignOut()
    this.offPageWake()
    this.abort.abort()
    if (isOpen(this.socket)) this.socket.close(1000, 'matched')
    this.emit('match', m)
    this.resolveMatch(m)
    this.markOver()
  }

  private end(outcome: 'cancelled' | 'expired', reason: string): void {
    if (this.done) return
    this.done = true
    this.offSignOut()
    this.offPageWake()
    this.abort.abort()
    if (isOpen(this.socket)) this.socket.close(1000, outcome)
    this.emit('ended', { outcome, reason })
    this.rejectMatch(new MatchmakingEnded(outcome, reason))
    this.markOver()
  }

  private fail(err: unknown): void {
    if (this.done) return
    this.done = true
    this.offSignOut()
    this.offPageWake()
    this.abort.abort()
    if (isOpen(this.socket)) this.socket.close(1000, 'failed')
    // A ticket this wait made is left on the server, best effort: still matchable through the
    // pool's disconnect grace, it would make a match this player never joins (and forfeits).
    // Over HTTP, which may work where the socket did not (a proxy blocking WebSockets). A
    // member's failure leaves the party's ticket to its leader: it is the whole party's.
    const ticketId = this.ticketId
    if (ticketId !== null && this.role === 'join') void this.deleteTicket(ticketId).catch(() => {})
    this.emit('failed', { error: err })
    this.rejectMatch(err)
    this.markOver()
  }
}

/** Matchmaking: join queues, read their public settings and stats. */
export class Matchmaking {
  private readonly deps: MatchDeps

  constructor(deps: MatchDeps) {
    this.deps = { ...deps, pendingCancels: new Set() }
  }

  /** Joins a queue as the signed-in player; see `MatchTicket`. */
  join(queue: string, opts: JoinOptions = {}): MatchTicket {
    return new MatchTicket(queue, opts, this.deps)
  }

  /**
   * A party leader queues the party: reads the signed-in player's party and joins naming its
   * members (one ticket, one team). No party: `NexusProblem` `not-found`, from the read; a member
   * who does not lead: `matched` rejects with `forbidden` naming the leader. Members call
   * `waitForParty` with the same queue and region.
   *
   * @example
   * const ticket = await nexus.matchmaking.joinWithParty('squads')
   * const match = await ticket.matched
   */
  async joinWithParty(queue: string, opts: Omit<JoinOptions, 'party'> = {}): Promise<MatchTicket> {
    const party = await this.deps.t.request('get', '/v1/parties/me', {
      as: { kind: 'player' },
      retry: true,
    })
    return this.join(queue, { ...opts, party: party.members.map((m) => m.playerId) })
  }

  /**
   * A party member's side of a party join: never joins, waits for the ticket the leader makes
   * in this queue and region and resolves `matched` with this player's own token. Over a socket
   * the server attaches it to the leader's new ticket (and the party is read every few seconds
   * too, for a ticket in another region than the socket's); over HTTP it reads the party until its
   * `ticketId` names a new ticket. Open it before the leader queues (a ticket that ended before
   * the wait began is taken as the last game's). `cancel()` on a ticket takes the whole party
   * out. Rejects with `NexusProblem` `not-found` when the player is in no party.
   *
   * @example
   * const ticket = friend.matchmaking.waitForParty('squads')
   * const match = await ticket.matched
   */
  waitForParty(queue: string, opts: Omit<JoinOptions, 'party' | 'attributes'> = {}): MatchTicket {
    return new MatchTicket(queue, opts, this.deps, 'member')
  }

  /**
   * Waiting players, matches per minute and wait percentiles, up to 2 s old (`fresh` reads them
   * as they are now, limited per client address).
   */
  stats(queue: string, opts: ReadOptions = {}): Promise<QueueStats> {
    return this.deps.t.request('get', '/v1/matchmaking/{queue}/stats', {
      path: { queue },
      headers: fresh(opts),
      retry: true,
    })
  }

  /** The queue's public settings (teams, team size, rules, regions), up to 4 s old. */
  info(queue: string, opts: ReadOptions = {}): Promise<QueueInfo> {
    return this.deps.t.request('get', '/v1/matchmaking/{queue}', {
      path: { queue },
      headers: fresh(opts),
      retry: true,
    })
  }
}

/**
 * When a ticket expires, on this device's monotonic clock (monotonicNow): now plus the time the
 * server said it had left. Not the wall clock, which a player may set a day forward to skip a
 * game's timer while waiting (a network loss then ended a live ticket as past its time), or back.
 * (A server from before `expiresIn` sent only its own `expiresAt`.)
 */
function expiresBy(t: { expiresAt: number; expiresIn?: number }): number {
  const left = typeof t.expiresIn === 'number' ? t.expiresIn : t.expiresAt - Date.now()
  return monotonicNow() + left
}
