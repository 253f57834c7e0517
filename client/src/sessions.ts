import type { GameResult } from '../../workers/core/rules/types.ts'
import type {
  ServerMessage as SessionServerMessage,
  SessionStatus,
} from '../../workers/sessions/schemas.ts'
import type { Schemas } from './api.gen.ts'
import { jwtSubject, type Auth } from './auth.ts'
import { type Credential, cuttableSleep, type Ok, type QueryOf, type Transport } from './http.ts'
import {
  isTransient,
  NexusNetworkError,
  NexusProblem,
  retryAfterMs,
  validationProblem,
} from './problem.ts'
import type { SocketSettings } from './matchmaking.ts'
import { randomUUID } from './platform.ts'
import {
  Emitter,
  HEALTHY_SOCKET_MS,
  isOpen,
  keepalive,
  lifetime,
  messageText,
  monotonicNow,
  onPageWake,
  openSocket,
  reconnectDelay,
  serverLosesSocketIn,
  type SocketLike,
  socketCredential,
  toSocketUrl,
  utf8Bytes,
  WAKE_PROBE_MS,
} from './socket.ts'

export type { GameResult, SessionServerMessage, SessionStatus }
export type SessionView = Schemas['Session']
export type EventsPage = Ok<'/v1/sessions/{id}/events', 'get'>
export type MatchHistoryPage = Ok<'/v1/players/me/sessions', 'get'>
/**
 * The token a game connects with: the match's session token or the player's own, or a function
 * returning the current one (read again before every reconnect).
 */
export type GameToken = string | (() => string | Promise<string>)

export interface GameEvents {
  /**
   * A fresh join: the state as this player may see it, as of `seq`; `tick` is the game's clock
   * as the server sent it (`tickRate` ticks a second): `game.tick()` counts on from it.
   */
  welcome: {
    seq: number
    state: unknown
    you: string
    status: SessionStatus
    tick: number
    tickRate: number
  }
  /** A reconnect resumed after `since`; the missed events follow as `event`s. */
  resumed: { since: number; seq: number; tick: number; tickRate: number }
  /** One accepted input, in order, never repeated, never skipped, with the tick it came at. */
  event: { seq: number; tick: number; event: unknown }
  /**
   * The server refused one of this player's frames; nothing changed. `ref` is the action's
   * `ref` when it had one (an `act()`'s: its promise rejects too). `send()` past its pace is
   * refused so by the SDK itself, unsent (`rate_limited`, no `ref`).
   */
  refused: { code: string; message: string; ref?: string | number }
  ended: { seq: number; result: GameResult }
  reconnecting: { attempt: number; delayMs: number; since: number | null }
  /**
   * The connection is over for good without the game's end: the server out of reach past
   * `reconnectForMs`, the player connected elsewhere (`SessionConnectionReplaced`), erased, or
   * refused. `ended` and `ready` reject with the same error. Not for `close()` or a sign-out,
   * which the app made.
   */
  failed: { error: unknown }
}

/** What `act()` resolves with: the event the action made, as every player got it. */
export interface ActOutcome {
  seq: number
  tick: number
  event: unknown
}

/**
 * An `act()` the session refused (`code`: `not_your_turn`, `invalid_action`, `rate_limited`,
 * `catching_up`, which asks to send again, …), or that the game ended before: `game_over`.
 * Nothing of it was applied.
 */
export class ActionRefused extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'ActionRefused'
    this.code = code
  }
}

/**
 * An `act()` whose connection ended (closed, replaced, failed) after it was sent and before its
 * answer came: it may have been applied. The game's state (or the log) says whether it was.
 */
export class ActionOutcomeUnknown extends NexusNetworkError {
  constructor(cause: unknown) {
    super('the connection ended before the action was answered: it may have been applied', {
      cause,
    })
    this.name = 'ActionOutcomeUnknown'
  }
}

/** The most an action frame may hold (the server's MAX_FRAME_BYTES): larger, it is refused. */
const MAX_ACTION_BYTES = 8 * 1024
/**
 * What `send()` keeps to, under the session's frame allowance per player (20 a second, burst
 * 40), which also pays for acts and other tabs' frames (pings are the runtime's, free): a game sending once per animation frame
 * (144 a second) had every frame past it refused by the session, and past a thousand refusals in
 * 10 s its socket closed as flooding, again after every reconnect. A quarter is left for the rest,
 * so that a turn's act between two sends is not the frame refused.
 */
const SEND_PER_SECOND = 15
const SEND_BURST = 30

/** An action of `act()` not answered yet: sent on the current socket or waiting to be. */
interface PendingAct {
  frame: string
  /** Sent on the current socket (a drop clears it: sent again after the resume). */
  sent: boolean
  /** Sent on any socket: it may have been applied, if no answer ever says. */
  everSent: boolean
  /** Sent on a socket since lost: applied or not, only an answer naming its ref says. */
  earlier: boolean
  resolve: (outcome: ActOutcome) => void
  reject: (err: unknown) => void
}

/**
 * How long a session holds a player's seat before they first connect (its join grace: the
 * server's SESSION_JOIN_GRACE_SECONDS, 120 by default); a first connect keeps trying that long.
 */
const JOIN_GRACE_MS = 120_000

/** How long an act's answer may take before the connection is checked (watchAnswer). */
export const ACT_ANSWER_MS = 3_000

/**
 * A live connection to a game session. It keeps the last `seq` it saw and, when the socket drops,
 * reconnects with `?since=seq`, so listeners get every event exactly once, in order.
 *
 * @example
 * const game = nexus.sessions.connect(match.sessionId, match.token)
 * game.on('event', ({ event }) => render(event))
 * await game.act({ action: 'roll' })
 * const result = await game.ended
 */
export class GameConnection extends Emitter<GameEvents> {
  readonly sessionId: string
  /** The last event seen (the welcome's seq at first); null before the first welcome. */
  seq: number | null = null
  /** Resolves with the result when the game ends; rejects if the session cannot be reached. */
  readonly ended: Promise<GameResult>
  /**
   * Resolves once the first welcome (or resume) arrived; rejects as `ended` does when the
   * session cannot be reached (or the connection is closed) before that.
   */
  readonly ready: Promise<void>
  private socket: SocketLike | null = null
  private done = false
  /** Aborted when the connection is over: cuts a reconnect pause short. */
  private readonly stop = new AbortController()
  private resolveEnded!: (r: GameResult) => void
  private rejectEnded!: (e: unknown) => void
  private resolveReady!: () => void
  private rejectReady!: (e: unknown) => void
  private readonly t: Transport
  private readonly auth: Auth | null
  private readonly token: () => string | Promise<string>
  /**
   * Set once the server refused the given token while the client is signed in: a session token
   * lasts 6 hours, and the player's own token (which auth renews) lets the player back in after.
   */
  private asPlayer = false
  /** The player this game's tokens name (their `sub`), once known: whose game it is. */
  private player: string | null = null
  private readonly sockets: SocketSettings
  /** Stops listening for the player signing out, which closes the connection. */
  private readonly offSignOut: () => void
  /** Stops listening for the page coming back (`wake()`). */
  private readonly offPageWake: () => void
  /** The open socket's keepalive, which `wake()` asks to ping now. */
  private alive: ReturnType<typeof keepalive> | null = null
  /** Cut short by `wake()`: the pause before the next reconnect. */
  private pauseCut: AbortController | null = null
  /**
   * This connection's name to the server (`?conn=`): a reconnect supersedes the socket before
   * it, so an action the old socket carried is in the resumed events or never applied.
   */
  private readonly conn = randomUUID()
  /**
   * The start of this connection's refs: short, as every ref is kept in the log beside its
   * action, and unique enough (48 bits) among one player's connections, the only ones whose
   * refs reach this one.
   */
  private readonly refPrefix = this.conn.replace(/-/g, '').slice(0, 12)
  private nextRef = 1
  /** What is left of `send()`'s allowance (SEND_PER_SECOND), and when it was counted. */
  private sendAllowance = { tokens: SEND_BURST, at: monotonicNow() }
  /** `act()`s unanswered, by ref, in the order they were made. */
  private readonly pending = new Map<string, PendingAct>()
  /**
   * Whether actions may go out on the socket now: after its welcome, or once a resume's missed
   * events have all arrived (`resumedTo`), which settle the actions they hold first.
   */
  private acting = false
  /** The seq a resume's missed events run to, while they arrive. */
  private resumedTo: number | null = null
  /**
   * Whether the session answers an action's `ref`: true when its `welcome` or `resumed` says so
   * (`refs`, or `acks`, which came after), false once it refused a frame for carrying one; null
   * while unknown (the release of 2026-12-06 answers refs and says nothing). A server from before
   * refs refuses every frame carrying one, with an error that does not carry it back: an act sent
   * there would never hear.
   */
  private refs: boolean | null = null
  /**
   * The session said it takes refs, then came back saying nothing (rolled back), and no answer
   * has named a ref since: an act sent on a socket since lost is not sent again (`startActing`).
   */
  private rolledBack = false

  constructor(
    sessionId: string,
    token: GameToken,
    opts: { since?: number },
    deps: { t: Transport; auth?: Auth; sockets: SocketSettings },
  ) {
    super()
    this.sessionId = sessionId
    this.token = typeof token === 'string' ? () => token : token
    this.t = deps.t
    this.auth = deps.auth ?? null
    this.sockets = deps.sockets
    if (opts.since !== undefined) this.seq = opts.since
    this.ended = new Promise<GameResult>((resolve, reject) => {
      this.resolveEnded = resolve
      this.rejectEnded = reject
    })
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve
      this.rejectReady = reject
    })
    this.ended.then(
      (result) => this.overForOnce(result),
      (err: unknown) => this.overForOnce({ failed: err }),
    )
    this.ready.catch(() => {})
    this.player = typeof token === 'string' ? jwtSubject(token) : null
    const madeDuringSignIn = this.auth?.signingIn ?? false
    this.offSignOut =
      this.auth?.onSignOut(
        (_token, leaving) => {
          // Another player signing in: the game ends if it is the one leaving's. Whose it is its
          // token says; one made while the sign-in was on its way, whose token does not say yet
          // (a function), waits for the new player's and is theirs. A plain sign-out (no
          // `leaving`), or a player not known, ends it whatever it is.
          if (leaving) {
            if (this.player !== null ? this.player !== leaving : madeDuringSignIn) return
          }
          this.shut('connection closed: the player signed out')
        },
        { toldDuringSignIn: true },
      ) ?? (() => {})
    this.offPageWake = onPageWake(() => this.wake())
    void this.run().catch((err: unknown) => this.fail(err))
  }

  /**
   * The game's clock now, in its ticks (milliseconds since the session began, for rules without
   * a `tickRate`), estimated from the last welcome or resume and the time since; null before
   * the first. Count down to a deadline the state names in ticks (dice-race's `turnEndsAt`,
   * hot-potato's `explodesAt`) as `deadline - game.tick()`: an event's arrival is no clock (a
   * late alarm's event, or missed ones a resume sends, arrive long after their tick).
   */
  tick(): number | null {
    const at = this.clockAnchor
    if (at === null) return null
    if (!at.running) return at.tick
    const elapsedMs = at.elapsedMs + (monotonicNow() - at.receivedAt) + at.sleptMs
    // Never before an event already heard: its tick had come.
    const floor = Math.max(at.tick, this.lastEventTick ?? 0)
    return Math.max(floor, Math.floor((elapsedMs * at.tickRate) / 1000))
  }

  /**
   * The server's clock at the last welcome or resume (stopped once the game is over), and when it
   * arrived here.
   */
  private clockAnchor: {
    tick: number
    tickRate: number
    elapsedMs: number
    running: boolean
    receivedAt: number
    /**
     * Time the device slept since (`wake()` counts it), which the monotonic clock left out; and
     * where the next count starts, by both clocks.
     */
    sleptMs: number
    sleepCountedAt: { monotonic: number; wall: number }
  } | null = null

  /**
   * Counts the time the device slept since the anchor or the last count: the monotonic clock
   * stops while the device sleeps (a phone locked during the opponent's turn, its socket kept),
   * the wall clock does not. Only at a wake (the page shown again, the app back in the
   * foreground), so that a wall clock set forward while awake moves no countdown.
   */
  private countSleep(): void {
    const at = this.clockAnchor
    if (at === null || !at.running) return
    const now = { monotonic: monotonicNow(), wall: Date.now() }
    const slept = now.wall - at.sleepCountedAt.wall - (now.monotonic - at.sleepCountedAt.monotonic)
    if (slept > 0) at.sleptMs += slept
    at.sleepCountedAt = now
  }

  /** The tick of the last event heard: where the clock stops when the game ends. */
  private lastEventTick: number | null = null

  private anchorClock(msg: {
    tick?: number
    tickRate?: number
    elapsedMs?: number
    running?: boolean
  }): void {
    // A server from before these fields: no anchor, tick() stays as it was.
    if (typeof msg.tick !== 'number' || typeof msg.tickRate !== 'number') return
    this.clockAnchor = {
      tick: msg.tick,
      tickRate: msg.tickRate,
      elapsedMs:
        typeof msg.elapsedMs === 'number' ? msg.elapsedMs : (msg.tick * 1000) / msg.tickRate,
      running: msg.running !== false,
      receivedAt: monotonicNow(),
      sleptMs: 0,
      sleepCountedAt: { monotonic: monotonicNow(), wall: Date.now() },
    }
  }

  /**
   * The next event of one type, as a promise; rejected if the connection is over first without
   * one (the game ended, the connection failed, was closed or replaced): with why it failed, or,
   * ended, an error saying so. `once('ended')` resolves with the end.
   *
   * @example
   * const { state } = await game.once('welcome')
   */
  override once<K extends keyof GameEvents>(type: K): Promise<GameEvents[K]> {
    const over = this.overOutcome
    if (over !== null) {
      return Promise.reject('failed' in over ? over.failed : gameEndedBefore(type))
    }
    return new Promise((resolve, reject) => {
      // Kept only while it waits: `await game.once('event')` in a loop for hours holds one.
      const waiting = (outcome: GameResult | { failed: unknown }) => {
        off()
        reject('failed' in outcome ? outcome.failed : gameEndedBefore(type))
      }
      const off = this.on(type, (value) => {
        off()
        this.onceWaiting.delete(waiting)
        resolve(value)
      })
      this.onceWaiting.add(waiting)
    })
  }

  /**
   * `once()`s still waiting, told when the connection is over (after the last event: `ended` is
   * emitted in the same step that settles it, before these run, so an `ended` awaited resolves
   * first).
   */
  private readonly onceWaiting = new Set<(outcome: GameResult | { failed: unknown }) => void>()

  /** How the connection ended, once it has: a `once()` asked after that rejects at once. */
  private overOutcome: GameResult | { failed: unknown } | null = null

  private overForOnce(outcome: GameResult | { failed: unknown }): void {
    this.overOutcome = outcome
    const waiting = [...this.onceWaiting]
    this.onceWaiting.clear()
    for (const w of waiting) w(outcome)
  }

  /** Whether a socket is open right now. */
  get connected(): boolean {
    return isOpen(this.socket)
  }

  /**
   * Sends an action (`{type: 'action'}` is added), fire and forget: for a stream where a lost
   * update is replaced by the next (a position). Throws `NexusNetworkError` while reconnecting;
   * an action sent into a dropping socket may or may not have been applied, and the resumed
   * events say which (the reconnect closes the old socket before they are read). An action over
   * 8 KiB throws `ActionRefused` `too_large`, unsent; past 15 a second (burst 30: the session takes
   * 20 a second from a player, acts and other tabs included) an action is not sent and a `refused`
   * event says `rate_limited`, as the session would. `act()` sends one that must land once, and
   * says what became of it.
   */
  send(action: Record<string, unknown>): void {
    if (!isOpen(this.socket)) throw new NexusNetworkError('not connected to the session')
    const frame = JSON.stringify({ ...action, type: 'action' })
    // Refused here as the session would refuse it (far larger, it closes the socket and counts
    // the player gone).
    if (utf8Bytes(frame) > MAX_ACTION_BYTES) {
      throw new ActionRefused('too_large', `Frames are limited to ${MAX_ACTION_BYTES} bytes`)
    }
    // Past the allowance: refused here, as the session would refuse it (a `refused` event), and
    // not sent, so that a game sending faster than the session takes is not closed as flooding.
    const now = monotonicNow()
    const allowance = this.sendAllowance
    allowance.tokens = Math.min(
      SEND_BURST,
      allowance.tokens + (Math.max(0, now - allowance.at) * SEND_PER_SECOND) / 1000,
    )
    allowance.at = now
    if (allowance.tokens < 1) {
      // Later, as the session's own refusal would come: a listener that sends again on it must
      // not recurse within this call.
      queueMicrotask(() =>
        this.emit('refused', {
          code: 'rate_limited',
          message: `At most ${SEND_PER_SECOND} frames per second (burst ${SEND_BURST}); not sent`,
        }),
      )
      return
    }
    allowance.tokens--
    this.socket.send(frame)
  }

  /**
   * Sends an action that must be applied once and only once (a turn, a move, a purchase), and
   * resolves with the event it made; rejects with `ActionRefused` when the session refuses it
   * (nothing applied). Through a dropped connection it waits: after the reconnect, an action the
   * resumed events do not hold was never applied (the server closed the old socket before
   * reading them) and goes again, by itself; one made while reconnecting goes once the
   * connection is back. If the connection is over first (closed, replaced, failed for good), an
   * act already sent rejects `ActionOutcomeUnknown` (it may have been applied: the state says),
   * one never sent as `ended` does; the game's end first rejects `ActionRefused` `game_over` (its
   * event would have come before the end). An action over 8 KiB is refused `too_large` here. Actions go out
   * in the order they were made; the session takes 20 frames a second (burst 40) per player, and
   * refuses the rest `rate_limited`. For a stream where a lost update is replaced by the next (a
   * position), `send()` is the lighter way.
   *
   * @example
   * try {
   *   const { event } = await game.act({ action: 'roll' })
   * } catch (err) {
   *   if (err instanceof ActionRefused && err.code === 'not_your_turn') showWait()
   * }
   */
  act(action: Record<string, unknown>): Promise<ActOutcome> {
    if (this.done) return this.ended.then(() => Promise.reject(gameOver()))
    if (this.refs === false) return Promise.reject(refsUnsupported())
    const ref = `${this.refPrefix}.${this.nextRef++}`
    let frame: string
    try {
      frame = JSON.stringify({ ...action, type: 'action', ref })
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    // The server refuses a frame this large unread, without its ref: this act would never hear.
    if (utf8Bytes(frame) > MAX_ACTION_BYTES) {
      return Promise.reject(
        new ActionRefused('too_large', `Frames are limited to ${MAX_ACTION_BYTES} bytes`),
      )
    }
    return new Promise<ActOutcome>((resolve, reject) => {
      const act: PendingAct = {
        frame,
        sent: false,
        everSent: false,
        earlier: false,
        resolve,
        reject,
      }
      this.pending.set(ref, act)
      if (this.acting) this.sendPending(act)
    })
  }

  /** Sends an act on the current socket, if it is open (a drop sends it again after). */
  private sendPending(act: PendingAct): void {
    if (!isOpen(this.socket)) return
    act.sent = true
    act.everSent = true
    this.socket.send(act.frame)
    this.watchAnswer()
  }

  /** The timer of watchAnswer, while one is set. */
  private answerWatch: ReturnType<typeof setTimeout> | undefined

  /**
   * An act sent and not answered within ACT_ANSWER_MS checks the connection as `wake()` does: a
   * socket that died without a close (a phone gone from Wi-Fi to cellular, with no `online`
   * event) would keep the act until the next ping's timeout, up to 30 s, while a turn timer ran
   * out on the server. A live session answers an act within milliseconds.
   */
  private watchAnswer(): void {
    if (this.answerWatch !== undefined) return
    const socket = this.socket
    this.answerWatch = setTimeout(() => {
      this.answerWatch = undefined
      if (this.done || this.socket !== socket) return
      if ([...this.pending.values()].some((act) => act.sent)) this.alive?.probe(WAKE_PROBE_MS)
    }, ACT_ANSWER_MS)
  }

  /**
   * Takes what a `welcome` or `resumed` says of refs: saying nothing leaves them unknown, and
   * after saying it takes them is a rollback (`rolledBack`).
   */
  private takeRefs(msg: { refs?: unknown; acks?: unknown }): void {
    if (msg.refs === true || msg.acks === true) {
      this.refs = true
      this.rolledBack = false
      return
    }
    if (this.refs !== true) return
    this.refs = null
    this.rolledBack = true
  }

  /**
   * A refusal naming no ref, of the field `ref` itself (`unexpected field ref`), while an act is
   * out on this socket, from a session not known to take refs: it is from before them, and
   * refuses every act. The acts waiting fail `unsupported` (it refused each it read: nothing
   * applied), but one sent on a socket since lost, which may have been (`ActionOutcomeUnknown`);
   * later ones fail at once.
   */
  private refusedForRef(msg: { ref?: unknown; message?: unknown }): void {
    if (this.refs === true || msg.ref !== undefined) return
    if (typeof msg.message !== 'string' || !/\bfield ref\b/.test(msg.message)) return
    if (![...this.pending.values()].some((act) => act.sent)) return
    this.refs = false
    const waiting = [...this.pending.values()]
    this.pending.clear()
    for (const act of waiting) {
      act.reject(act.earlier ? new ActionOutcomeUnknown(refsUnsupported()) : refsUnsupported())
    }
  }

  /**
   * The socket takes actions again: the acts not answered go, in their order. But for one sent on
   * a socket since lost to a session rolled back since (it said it takes refs, and now says
   * nothing): the resume's events, all in by now, would not name it, and sent again it might be
   * applied twice (a rules module that ignores the field). It fails, as unknown.
   */
  private startActing(): void {
    this.acting = true
    if (this.rolledBack) {
      for (const [ref, act] of this.pending) {
        if (!act.earlier) continue
        this.pending.delete(ref)
        act.reject(new ActionOutcomeUnknown(refsUnsupported()))
      }
    }
    for (const act of this.pending.values()) if (!act.sent) this.sendPending(act)
  }

  /** Settles the act whose ref an event or refusal of this player carries. */
  private settleAct(ref: unknown, outcome: ActOutcome | ActionRefused): void {
    if (typeof ref !== 'string') return
    // An answer naming a ref: the session takes them, whatever its welcome said.
    this.rolledBack = false
    const act = this.pending.get(ref)
    if (act === undefined) return
    this.pending.delete(ref)
    if (outcome instanceof ActionRefused) act.reject(outcome)
    else act.resolve(outcome)
  }

  /**
   * Every act unanswered fails: the connection is over. One sent may have been applied
   * (`ActionOutcomeUnknown`, unless `applied` is known false: the game's end came after every
   * event, so an act without one was not).
   */
  private failActs(
    err: unknown,
    opts: { appliedUnknown: boolean } = { appliedUnknown: true },
  ): void {
    const acts = [...this.pending.values()]
    this.pending.clear()
    for (const act of acts) {
      act.reject(act.everSent && opts.appliedUnknown ? new ActionOutcomeUnknown(err) : err)
    }
  }

  /**
   * Closes the connection for good (the server's absence grace then applies). Signing out (or
   * in as another player) closes it too.
   */
  close(): void {
    this.shut('connection closed by the client')
  }

  private shut(why: string): void {
    // Over already (ended, failed, replaced): its outcome stands, a `close()` in an `ended`
    // listener included.
    if (this.done) return
    this.done = true
    clearTimeout(this.answerWatch)
    this.offSignOut()
    this.offPageWake()
    this.stop.abort()
    if (isOpen(this.socket)) this.socket.close(1000, 'bye')
    const closed = new NexusNetworkError(why)
    this.rejectReady(closed)
    this.rejectEnded(closed)
    this.failActs(closed)
  }

  /** The token for the next attempt, read afresh: the one given, or the player's own. */
  private async currentToken(): Promise<string> {
    if (this.asPlayer) return this.auth!.token()
    try {
      const token = await this.token()
      this.player = jwtSubject(token) ?? this.player
      return token
    } catch (err) {
      // The game's own token function, failing offline (fetch's TypeError): ridden out as the
      // network is, as auth.useTokens' sources are.
      if (err instanceof NexusProblem || err instanceof NexusNetworkError) throw err
      throw new NexusNetworkError('the game token function failed', { cause: err })
    }
  }

  private readSession(token: string) {
    // As the player, the transport renews a refused token and asks again.
    const as: Credential = this.asPlayer ? { kind: 'player' } : { kind: 'bearer', token }
    return this.t.request('get', '/v1/sessions/{id}', {
      path: { id: this.sessionId },
      as,
      // Once: the reconnect loop pauses and tries the socket again on a transient failure (its
      // Retry-After honoured), and every player of a restarting session asks it at once.
      retry: false,
      signal: this.stop.signal,
    })
  }

  /** Emits, in order, the logged events after `seq`, a page at a time (a session's archive). */
  private async catchUpFromLog(token: string): Promise<void> {
    const as: Credential = this.asPlayer ? { kind: 'player' } : { kind: 'bearer', token }
    for (let from: number | null = this.seq! + 1; from !== null && !this.done;) {
      const page: EventsPage = await this.t.request('get', '/v1/sessions/{id}/events', {
        path: { id: this.sessionId },
        query: { from, limit: 500 },
        as,
        retry: true,
        signal: this.stop.signal,
      })
      for (const record of page.events) {
        if (this.done) return
        if (record.seq <= this.seq!) continue
        if (record.seq !== this.seq! + 1) {
          throw new NexusNetworkError(`the archived log skips from ${this.seq} to ${record.seq}`)
        }
        this.seq = record.seq
        this.lastEventTick = record.input.tick
        // Only this player's own records carry a ref, and this connection's start with its own.
        // Settled before the event is handed out: a listener may close the connection.
        if (record.input.kind === 'action') {
          this.settleAct(record.input.ref, {
            seq: record.seq,
            tick: record.input.tick,
            event: record.event,
          })
        }
        this.emit('event', { seq: record.seq, tick: record.input.tick, event: record.event })
      }
      from = page.nextFrom
    }
  }

  private async run(): Promise<void> {
    const { maxReconnects, reconnectForMs } = this.sockets
    // Attempts that failed in a row (they set the backoff), and among them sockets that opened
    // and dropped at once: the server answers those, so they give up on the count alone.
    let failures = 0
    let drops = 0
    // Not reaching the server gives up only once the time budget is spent as well: the server
    // holds the seat for its grace (60 s), and a player in a tunnel should get it back. Before
    // the first socket opened, the seat is held for the session's join grace instead (120 s by
    // default), which a player joining from a train needs as much.
    let lostAt = monotonicNow()
    let everOpened = false
    const outOfTime = () =>
      failures > maxReconnects &&
      monotonicNow() - lostAt >=
        (everOpened ? reconnectForMs : Math.max(reconnectForMs, JOIN_GRACE_MS))
    while (!this.done) {
      let token: string
      try {
        token = await this.currentToken()
      } catch (err) {
        // Renewing the player's token needs the network as much as the socket does.
        if (this.done) return
        failures++
        if (!isTransient(err) || outOfTime()) throw err
        await this.pause(failures, err)
        continue
      }
      // Closed while the token was coming (a renewal over the network): no socket, which the
      // server would take for the player's return.
      if (this.done) return
      const credential = socketCredential(this.sockets.factory!, token)
      const url = toSocketUrl(
        this.t.url(
          '/v1/sessions/{id}',
          { id: this.sessionId },
          {
            ...credential.query,
            conn: this.conn,
            ...(this.seq !== null ? { since: this.seq } : {}),
          },
        ),
      )
      let socket: SocketLike
      try {
        socket = await openSocket(
          this.sockets.factory!,
          url,
          credential.protocols,
          this.sockets.openTimeoutMs,
          this.stop.signal,
        )
      } catch (err) {
        if (this.done) return
        failures++
        // Browsers hide a refused upgrade's answer; the plain GET tells why (404, 403, 401).
        // The network being away (or the server briefly failing) is no answer: keep trying, as
        // the server holds the seat for its grace.
        let view: Awaited<ReturnType<typeof this.readSession>>
        try {
          view = await this.readSession(token)
        } catch (readErr) {
          if (this.done) return
          if (this.mayConnectAsPlayer(readErr)) {
            this.asPlayer = true
            this.player = this.auth?.playerId ?? this.player
            continue
          }
          // The session says the player was erased: over for good, as a 4004 close says.
          if (readErr instanceof NexusProblem && readErr.body.erased === true) {
            throw new SessionPlayerErased()
          }
          if (!isTransient(readErr)) throw readErr
          if (outOfTime()) throw err
          await this.pause(failures, readErr)
          continue
        }
        // Reading the log fails like the socket did when the network is away: keep trying
        // (`this.seq` moves page by page, so a retry resumes where the read stopped).
        const fromLog = async (): Promise<boolean> => {
          try {
            await this.catchUpFromLog(token)
            return true
          } catch (logErr) {
            if (logErr instanceof NexusProblem && logErr.body.erased === true) {
              throw new SessionPlayerErased()
            }
            if (this.done || !isTransient(logErr) || outOfTime()) throw logErr
            await this.pause(failures, logErr)
            return false
          }
        }
        if (view.status === 'finished' && view.result && view.seq === null) {
          // Archived: no socket will ever open again, but the result is known, and the events
          // this connection has not had yet are in the archived log.
          if (this.seq !== null && !(await fromLog())) continue
          if (this.done) return
          this.finish(this.seq ?? 0, view.result)
          return
        }
        // The plain GET takes no `since`, so it cannot say that this was the refusal.
        if (this.seq !== null && view.seq !== null && this.seq > view.seq) {
          throw sinceTooFar(this.seq, view.seq)
        }
        // Further behind than one resume sends: the missed events come from the log, then the
        // socket resumes from the last one read. Not a failure of the connection.
        if (this.seq !== null && view.seq !== null && view.seq - this.seq > MAX_RESUME_EVENTS) {
          if (!(await fromLog())) continue
          if (this.done) return
          failures--
          continue
        }
        if (outOfTime()) throw err
        await this.pause(failures)
        continue
      }
      if (this.done) {
        // Closed while the socket was opening.
        socket.close(1000, 'bye')
        return
      }
      const openedAt = { monotonic: monotonicNow(), wall: Date.now() }
      everOpened = true
      this.socket = socket
      const closeCode = await this.serve(socket)
      this.socket = null
      // The acts go again on the next socket, which watches them afresh (watchAnswer).
      clearTimeout(this.answerWatch)
      this.answerWatch = undefined
      // What the lost socket carried unanswered goes again once the next one has resumed.
      this.acting = false
      this.resumedTo = null
      for (const act of this.pending.values()) {
        if (act.sent) act.earlier = true
        act.sent = false
      }
      if (this.done) return
      // The player connected to this session elsewhere (a 5th tab or device): that one plays on,
      // and this one coming back would only replace another.
      if (closeCode === REPLACED_CLOSE_CODE) throw new SessionConnectionReplaced()
      // Every socket of theirs is refused from now on: a browser sees a refused upgrade only as
      // a failure, which it would retry until its budget ran out.
      if (closeCode === ERASED_CLOSE_CODE) throw new SessionPlayerErased()
      // Only a socket that stayed up a while, and delivered frames, starts the count again: one
      // that opens and drops at once must not reconnect forever without backing off, nor one a
      // proxy opens and passes nothing through (the keepalive gives it up after as long).
      if (lifetime(openedAt) >= HEALTHY_SOCKET_MS && this.heardFrom.has(socket)) {
        failures = 0
        drops = 0
      }
      // The time budget runs from this loss, however short the socket's life: the server starts
      // the seat's grace again at every close (`drops` bounds sockets that keep closing). A
      // socket that went silent is closed by the server, its grace begun, only once its silence
      // is long enough: from then.
      lostAt = this.serverLosesAt ?? monotonicNow()
      this.serverLosesAt = null
      failures++
      drops++
      if (drops > maxReconnects) throw new NexusNetworkError('the session socket keeps closing')
      await this.pause(failures)
    }
  }

  /** A refused token (a session token past its 6 hours, say) of a client signed in as a player. */
  private mayConnectAsPlayer(err: unknown): boolean {
    return (
      !this.asPlayer &&
      err instanceof NexusProblem &&
      err.status === 401 &&
      this.auth !== null &&
      this.auth.signedIn
    )
  }

  /** Waits before the next try: the backoff, or as long as the server asked if longer. */
  private async pause(attempt: number, err?: unknown): Promise<void> {
    const askedMs = retryAfterMs(err)
    const delayMs = Math.max(reconnectDelay(this.sockets.backoff, attempt), askedMs)
    this.emit('reconnecting', { attempt, delayMs, since: this.seq })
    // What the server asked for is waited out whatever wakes: only the backoff beyond it is cut.
    await cuttableSleep(delayMs, this.stop.signal, (cut) => (this.pauseCut = cut), askedMs)
    this.pauseCut = null
  }

  /**
   * Checks the connection now, as when the app comes back to the foreground or the network
   * returns: an open socket is pinged and given up on (and reconnected) if nothing answers
   * within 3 s, since a device that slept or switched networks keeps a dead socket looking open
   * until its next ping times out; a reconnect waiting out its pause tries within half a second
   * (a random part of it: a network back for many devices at once). In a browser
   * page it runs by itself when the page is shown again, restored or back online; from React
   * Native, call it on AppState's `active`.
   */
  wake(): void {
    if (this.done) return
    this.countSleep()
    this.alive?.probe(WAKE_PROBE_MS)
    this.pauseCut?.abort()
  }

  /**
   * Handles one open socket; resolves when it closes (with the server's close code, if any) or
   * stops answering pings.
   */
  /** Sockets that delivered a frame: only those count as having worked (HEALTHY_SOCKET_MS). */
  private readonly heardFrom = new WeakSet<SocketLike>()

  /** When the server takes the socket `serve` gave up on as silent as gone (monotonicNow). */
  private serverLosesAt: number | null = null

  private serve(socket: SocketLike): Promise<number | null> {
    this.serverLosesAt = null
    return new Promise<number | null>((resolve) => {
      const alive = keepalive(socket, this.sockets, (silentForMs) => {
        this.serverLosesAt = monotonicNow() + serverLosesSocketIn(silentForMs)
        // Its close may take as long as the dead connection does: reconnect now.
        if (this.alive === alive) this.alive = null
        socket.close(4000, 'keepalive timeout')
        resolve(null)
      })
      this.alive = alive
      socket.addEventListener('close', (e) => {
        alive.stop()
        if (this.alive === alive) this.alive = null
        resolve(typeof e.code === 'number' ? e.code : null)
      })
      socket.addEventListener('message', (e) => {
        // A socket given up on (its keepalive timed out) may still deliver: its answers are
        // stale, and the resume on the next one has the events.
        if (this.socket !== socket) return
        alive.heard()
        this.heardFrom.add(socket)
        const text = messageText(e)
        if (text === null) return
        let msg: SessionServerMessage
        try {
          msg = JSON.parse(text) as SessionServerMessage
        } catch {
          return
        }
        this.onMessage(msg, socket)
      })
    })
  }

  private onMessage(msg: SessionServerMessage, socket: SocketLike): void {
    switch (msg.type) {
      case 'welcome':
        this.seq = msg.seq
        this.takeRefs(msg)
        this.newAckWindow(msg.acks === true)
        this.acknowledge(socket)
        this.anchorClock(msg)
        this.emit('welcome', {
          seq: msg.seq,
          state: msg.state,
          you: msg.you,
          status: msg.status,
          tick: msg.tick,
          tickRate: msg.tickRate,
        })
        this.resolveReady()
        this.startActing()
        return
      case 'resumed':
        this.takeRefs(msg)
        this.newAckWindow(msg.acks === true)
        this.acknowledge(socket)
        this.anchorClock(msg)
        this.emit('resumed', {
          since: msg.since,
          seq: msg.seq,
          tick: msg.tick,
          tickRate: msg.tickRate,
        })
        this.resolveReady()
        if (this.seq !== null && this.seq >= msg.seq) this.startActing()
        else this.resumedTo = msg.seq
        return
      case 'event':
        if (this.seq !== null && msg.seq <= this.seq) return
        if (this.seq !== null && msg.seq !== this.seq + 1) {
          // Never expected (the server resumes without gaps); reconnecting from seq repairs it.
          socket.close(4000, 'gap')
          return
        }
        this.seq = msg.seq
        this.acknowledge(socket)
        if (typeof msg.tick === 'number') this.lastEventTick = msg.tick
        // Settled before the event is handed out: a listener may close the connection.
        this.settleAct(msg.ref, { seq: msg.seq, tick: msg.tick, event: msg.event })
        this.emit('event', { seq: msg.seq, tick: msg.tick, event: msg.event })
        if (this.resumedTo !== null && msg.seq >= this.resumedTo) {
          this.resumedTo = null
          this.startActing()
        }
        return
      case 'error':
        this.emit('refused', {
          code: msg.code,
          message: msg.message,
          ...(msg.ref !== undefined ? { ref: msg.ref } : {}),
        })
        this.settleAct(msg.ref, new ActionRefused(msg.code, msg.message))
        this.refusedForRef(msg)
        return
      case 'ended':
        this.finish(msg.seq, msg.result)
        return
      case 'pong':
        return
    }
  }

  /**
   * The latest `ack` sent on the current socket: its event, and when (monotonic ms); and whether
   * the session takes them (its `welcome` or `resumed` said so: an older one would refuse each).
   */
  private acked = { seq: -1, at: -Infinity, taken: false }

  /**
   * Tells the server what this connection has read, so that it can close a socket that falls
   * too far behind (a weak link in a busy room) rather than hold everything unread in memory:
   * at once on a new socket, then, while events come, at most every ACK_EVERY_MS.
   */
  private acknowledge(socket: SocketLike): void {
    const seq = this.seq
    if (!this.acked.taken || seq === null || !isOpen(socket) || this.socket !== socket) return
    if (this.done || this.stop.signal.aborted) return
    const now = monotonicNow()
    const first = this.acked.seq < 0
    if (!first && seq <= this.acked.seq) return
    if (!first && now - this.acked.at < ACK_EVERY_MS) {
      // The last of a burst is acknowledged when the interval is up, not only with the next
      // event, which in a turn-based game may be a while coming.
      if (this.ackLater === null) {
        this.ackLater = setTimeout(
          () => {
            this.ackLater = null
            this.acknowledge(socket)
          },
          ACK_EVERY_MS - (now - this.acked.at),
        )
        // A timer of its own must not keep a Node process running.
        ;(this.ackLater as { unref?: () => void }).unref?.()
      }
      return
    }
    this.acked = { seq, at: now, taken: true }
    socket.send(JSON.stringify({ type: 'ack', seq }))
  }

  /** The acknowledgement owed at the end of ACK_EVERY_MS, if one is (`acknowledge`). */
  private ackLater: ReturnType<typeof setTimeout> | null = null

  /** A new socket's acknowledgements: none owed from the one before. */
  private newAckWindow(taken: boolean): void {
    if (this.ackLater !== null) clearTimeout(this.ackLater)
    this.ackLater = null
    this.acked = { seq: -1, at: -Infinity, taken }
  }

  private finish(seq: number, result: GameResult): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.answerWatch)
    // The game's clock stopped at its last input, the one that ended it.
    const at = this.clockAnchor
    if (at !== null && at.running) {
      this.clockAnchor = { ...at, tick: this.lastEventTick ?? this.tick()!, running: false }
    }
    this.offSignOut()
    this.offPageWake()
    this.stop.abort()
    // Settled before the event: a listener may close the connection, or await `ended`. An act
    // not answered by now was not applied: its event would have come before the end.
    this.resolveReady()
    this.resolveEnded(result)
    this.failActs(gameOver(), { appliedUnknown: false })
    this.emit('ended', { seq, result })
    if (isOpen(this.socket)) this.socket.close(1000, 'ended')
  }

  private fail(err: unknown): void {
    if (this.done) return
    this.done = true
    clearTimeout(this.answerWatch)
    this.offSignOut()
    this.offPageWake()
    this.stop.abort()
    if (isOpen(this.socket)) this.socket.close(1000, 'failed')
    // Told as an event too: an app that drives its screens by events (a spinner shown on
    // `reconnecting`) and never awaits `ended` would otherwise hear nothing.
    this.emit('failed', { error: err })
    this.rejectReady(err)
    this.rejectEnded(err)
    this.failActs(err)
  }
}

function gameEndedBefore(type: string): Error {
  return new Error(`the game ended before a '${type}' event`)
}

function gameOver(): ActionRefused {
  return new ActionRefused('game_over', 'The game is over')
}

/** `act()` on a session server that does not answer refs: `send()` still reaches it. */
function refsUnsupported(): ActionRefused {
  return new ActionRefused(
    'unsupported',
    'This session server does not answer act() (a version from before 2026-12-06): use send()',
  )
}

/** How often a connection acknowledges what it read, at most (ms). */
const ACK_EVERY_MS = 250

/** The close code of a socket the player's newer connection to the session replaced. */
export const REPLACED_CLOSE_CODE = 4001

/**
 * A game connection ended because the same player connected to the session elsewhere past the
 * server's 4 connections a player (another tab or device): that newer one plays on. `ended` and
 * `ready` reject with it; the connection does not reconnect (it would replace another).
 */
export class SessionConnectionReplaced extends Error {
  constructor() {
    super('This player connected to the session elsewhere; this connection was replaced')
    this.name = 'SessionConnectionReplaced'
  }
}

/** The close of an erased player's sockets (ERASED_CLOSE in durable-objects/game-session.ts). */
export const ERASED_CLOSE_CODE = 4004

/**
 * A game connection ended because its player was erased (an admin's `DELETE
 * /v1/admin/players/:id`): the session takes none of their sockets again. `ended` and `ready`
 * reject with it; the connection does not reconnect.
 */
export class SessionPlayerErased extends Error {
  constructor() {
    super("This player's data was erased; the session takes no connection of theirs")
    this.name = 'SessionPlayerErased'
  }
}

/**
 * Missed events the server sends one resume at most (`MAX_RESUME_EVENTS` in
 * durable-objects/game-session.ts; a test keeps the two equal): a connection further behind
 * reads the rest from the log first.
 */
export const MAX_RESUME_EVENTS = 2_000

/** The 422 the server answers a `since` past the session's seq (its socket refusal, unseen). */
function sinceTooFar(since: number, seq: number): NexusProblem {
  return validationProblem(
    `since must be an integer from 0 to ${seq} (was ${since})`,
    'since',
    `0 to ${seq}`,
  )
}

/** Game sessions: the live socket, and the session and its log over HTTP. */
export class Sessions {
  private readonly deps: { t: Transport; auth?: Auth; sockets: SocketSettings }

  constructor(deps: { t: Transport; auth?: Auth; sockets: SocketSettings }) {
    this.deps = deps
  }

  /**
   * Connects to a session with the token the match gave, or the player's own token, or a
   * function returning the current one (called before every reconnect). A session token lasts
   * 6 hours: when the server refuses it and the client is signed in, the connection goes on with
   * the player's own token, which auth renews. `since` resumes after that seq (e.g. after an app
   * restart that kept it); one past the session's seq is refused with `validation` (422).
   */
  connect(sessionId: string, token: GameToken, opts: { since?: number } = {}): GameConnection {
    if (!this.deps.sockets.factory) {
      throw new NexusNetworkError('no WebSocket on this platform: pass `WebSocket` to createClient')
    }
    const { since } = opts
    // Refused here, at once: the server's 422 comes on a socket upgrade, which a browser hides,
    // and the connection would retry it as a network failure.
    if (since !== undefined && !(Number.isSafeInteger(since) && since >= 0)) {
      throw validationProblem(
        `since must be a whole number from 0 (was ${since})`,
        'since',
        'a whole number from 0',
      )
    }
    return new GameConnection(sessionId, token, opts, this.deps)
  }

  /** Status, roster and result, for players of the session (its token) and admins. */
  get(sessionId: string, token: string): Promise<SessionView> {
    return this.deps.t.request('get', '/v1/sessions/{id}', {
      path: { id: sessionId },
      as: { kind: 'bearer', token },
      retry: true,
    })
  }

  /**
   * The signed-in player's matches, newest first (live ones too): how each ended, the winner,
   * their place and rating change. Pass `nextCursor` back as `cursor` for older ones.
   */
  history(query: QueryOf<'/v1/players/me/sessions', 'get'> = {}): Promise<MatchHistoryPage> {
    return this.deps.t.request('get', '/v1/players/me/sessions', {
      query,
      as: { kind: 'player' },
      retry: true,
    })
  }

  /** A page of the event log; pass `nextFrom` back as `from`. */
  events(
    sessionId: string,
    token: string,
    query: Omit<QueryOf<'/v1/sessions/{id}/events', 'get'>, 'token'> = {},
  ): Promise<EventsPage> {
    return this.deps.t.request('get', '/v1/sessions/{id}/events', {
      path: { id: sessionId },
      query,
      as: { kind: 'bearer', token },
      retry: true,
    })
  }
}

export { NexusProblem }
