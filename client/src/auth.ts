import type { Schemas } from './api.gen.ts'
import type { Transport } from './http.ts'
import { randomUUID } from './platform.ts'
import { NexusNetworkError, NexusProblem } from './problem.ts'

/** Where the client keeps its device id between runs (`localStorage` fits in browsers). */
export interface KeyValueStorage {
  getItem(key: string): string | null
  setItem(key: string, value: string): void
}

/** A store that forgets everything when the process ends. */
export function memoryStorage(): KeyValueStorage {
  const m = new Map<string, string>()
  return { getItem: (k) => m.get(k) ?? null, setItem: (k, v) => void m.set(k, v) }
}

export const DEVICE_ID_KEY = 'nexus.deviceId'
/** What the server takes as a device id. */
const DEVICE_ID = /^[A-Za-z0-9._:-]{8,128}$/

/**
 * A stored device id the server takes, or null: one another storage adapter kept JSON-quoted is
 * the same id; a placeholder ("undefined", "null") or a value cut short is none.
 */
function usableDeviceId(stored: string | null): string | null {
  if (stored === null) return null
  let id = stored
  if (id.startsWith('"')) {
    try {
      const parsed: unknown = JSON.parse(id)
      if (typeof parsed === 'string') id = parsed
    } catch {
      return null
    }
  }
  return DEVICE_ID.test(id) && id !== 'undefined' && id !== 'null' ? id : null
}

/**
 * A token from elsewhere (the studio's own identity provider), and how long it lasts: best as
 * `expiresIn`, the seconds it is valid for from now (as the guest sign-in's `expiresIn`), timed
 * on this device's clock. `expiresAt` (epoch ms, the provider's clock) alone also works; a device
 * clock set far off then times a JWT with `iat` and `exp` by its lifetime instead.
 */
export type TokenSource = () => Promise<
  { token: string } & (
    { expiresIn: number; expiresAt?: number } | { expiresAt: number; expiresIn?: undefined }
  )
>

/** What a token source answered, timed: the JWT's own `iat`/`exp` read when they are needed. */
function timed(
  t: { token: string; expiresIn?: number; expiresAt?: number },
  now: number,
): { expiresAt: number; lifetimeMs?: number } {
  if (typeof t.expiresIn === 'number') {
    const lifetimeMs = t.expiresIn * 1000
    return { expiresAt: now + lifetimeMs, lifetimeMs }
  }
  const expiresAt = t.expiresAt ?? now
  const lifetimeMs = jwtLifetimeMs(t.token)
  if (lifetimeMs === null) {
    // An opaque token: what it has left now is the best guess of its lifetime, so that one that
    // lives less than the renewal margin is renewed by half of it, not on every request.
    const left = expiresAt - now
    return left > 0 ? { expiresAt, lifetimeMs: left } : { expiresAt }
  }
  // A device clock that reads the expiry as past, or further off than the token lives, is set
  // wrong (players move it to skip timers): time the lifetime from now on the device's clock.
  const left = expiresAt - now
  if (left <= 0 || left > lifetimeMs) return { expiresAt: now + lifetimeMs, lifetimeMs }
  return { expiresAt, lifetimeMs }
}

/** A JWT's claims, read without checking anything (the server checks); null for another token. */
function jwtClaims(token: string): Record<string, unknown> | null {
  const payload = token.split('.')[1]
  if (token.split('.').length !== 3 || !payload) return null
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/')
    const claims: unknown = JSON.parse(
      atob(b64.padEnd(b64.length + ((4 - (b64.length % 4)) % 4), '=')),
    )
    return claims !== null && typeof claims === 'object'
      ? (claims as Record<string, unknown>)
      : null
  } catch {
    return null
  }
}

/** `exp - iat` of a JWT, in ms; null for a token that is not a JWT with both. */
function jwtLifetimeMs(token: string): number | null {
  const { iat, exp } = jwtClaims(token) ?? {}
  if (typeof iat !== 'number' || typeof exp !== 'number' || exp <= iat) return null
  return (exp - iat) * 1000
}

/** A JWT's `sub`, the player id the server reads from it; null for another token. */
export function jwtSubject(token: string): string | null {
  const sub = jwtClaims(token)?.sub
  return typeof sub === 'string' && sub !== '' ? sub : null
}

/** `Auth.onSignOut`'s listener: the token signed out, and who is leaving (see there). */
export type SignOutListener = (token: string | null, leaving?: string | null) => void

/**
 * Holds the player's token and renews it before it expires (and after any 401), one renewal at a
 * time however many requests are waiting for it.
 */
export class Auth {
  /**
   * `expiresAt` is on this device's clock. `lifetimeMs` is how long the token lived when issued,
   * when known, so renewal never starts before half of it has passed.
   */
  private current: {
    token: string
    expiresAt: number
    lifetimeMs?: number
    playerId: string | null
  } | null = null
  private source: (() => Promise<void>) | null = null
  private renewing: Promise<void> | null = null
  /**
   * Bumped by every sign-in and sign-out: a token fetched for an older one (a renewal still on
   * its way when the player signed out) must not sign the player back in.
   */
  private generation = 0
  /** After a failed early renewal, none is tried again before this (device clock). */
  private retryRenewalAt = 0
  private readonly signOutListeners = new Set<SignOutListener>()
  private readonly transport: () => Transport
  private readonly storage: KeyValueStorage
  /** The device id, once read or made (`deviceId`). */
  private device: string | null = null
  /** Renew when the token has less than this left. */
  readonly refreshMarginMs: number
  private readonly now: () => number

  constructor(opts: {
    transport: () => Transport
    storage: KeyValueStorage
    refreshMarginMs: number
    now: () => number
  }) {
    this.transport = opts.transport
    this.storage = opts.storage
    this.refreshMarginMs = opts.refreshMarginMs
    this.now = opts.now
  }

  /** The signed-in player's id (a guest's, a `useTokens` player's or its JWT's `sub`), or null. */
  get playerId(): string | null {
    return this.current?.playerId ?? null
  }

  /**
   * Whether a player is signed in, or a sign-in is under way (requests then wait for its token,
   * rather than going out as the admin key of a client that has one).
   */
  get signedIn(): boolean {
    return this.source !== null
  }

  /**
   * Signs in as the guest player of this device. The device id is generated once and kept in the
   * client's storage, so the same device is the same player on every run. The player signed in
   * before (if any) is signed out at once: see `useTokens`.
   *
   * @example
   * const { playerId } = await nexus.auth.guest()
   */
  async guest(deviceId?: string): Promise<Schemas['TokenResponse']> {
    // An empty id given is none given, as it always was.
    const fixed = deviceId || this.deviceId()
    // This device's guest signing in again (an app's wake handler, the network not up yet): one
    // that fails leaves them signed in with the token they have, their game and tickets on.
    // (The one whose sign-in is on its way, when one is: a handler run twice at once.)
    const signedInDevice = this.pending ? (this.pending.kept?.device ?? null) : this.guestDevice
    const again = signedInDevice === fixed
    let answer!: Schemas['TokenResponse']
    await this.signIn(
      async (generation) => {
        answer = await this.guestToken(fixed, generation)
        if (generation === this.generation) this.guestDevice = fixed
      },
      { keepOnFailure: again },
    )
    return answer
  }

  /** The device whose guest is signed in (by `guest()`), or null. */
  private guestDevice: string | null = null

  /**
   * This device's id: the one kept in storage, or a new one kept there. Storage that throws
   * (full, or disabled: a private window, cookies blocked) or holds what the server would refuse
   * (another adapter's quoting, a truncated value, "undefined") must not keep a player from
   * signing in, nor make each sign-in a new player: the id is remembered here too.
   */
  private deviceId(): string {
    let stored: string | null = null
    try {
      stored = this.storage.getItem(DEVICE_ID_KEY)
    } catch {
      stored = null
    }
    const usable = usableDeviceId(stored)
    if (usable !== null) {
      this.device = usable
      return usable
    }
    // None stored that the server takes: the one this client made (storage failed to keep it
    // then: it is offered again), or a new one.
    const id = this.device ?? randomUUID()
    try {
      this.storage.setItem(DEVICE_ID_KEY, id)
      // Another tab signing in for the first time at the same moment may have written its own:
      // the one storage keeps is the device's, for both.
      this.device = usableDeviceId(this.storage.getItem(DEVICE_ID_KEY)) ?? id
    } catch {
      this.device = id
    }
    return this.device
  }

  private async guestToken(deviceId: string, generation: number) {
    const t = await this.transport().request('post', '/v1/auth/guest', {
      body: { deviceId },
      retry: true,
    })
    // Timed by this device's clock from the server's "valid for": a device clock set far off
    // (players move it to skip timers) must not make every token look expired.
    if (generation === this.generation) {
      this.current = { token: t.token, ...timed(t, this.now()), playerId: t.playerId }
    }
    return t
  }

  /**
   * Uses tokens from another source (the studio's identity provider); called again whenever the
   * token nears its expiry or the server refuses it. The player signed in before (if any) is
   * signed out at once, as `signOut()` does (their tickets and game connections end), and
   * requests made meanwhile wait for the new token, unless the new token turns out to be theirs
   * too. Who that is: `playerId` if given, else the JWT's `sub` (as the server reads it), so an
   * app calling this again from its provider's refresh hook keeps the player's game. When the
   * first token cannot be had, this rejects and the client is left signed out. A source's failure other than a `NexusProblem`
   * (fetch's `TypeError` offline, say) is thrown as a `NexusNetworkError` whose `cause` it is,
   * so that it is retried as any network failure is.
   */
  async useTokens(source: TokenSource, playerId: string | null = null): Promise<void> {
    await this.signIn(async (generation) => {
      let t: Awaited<ReturnType<TokenSource>>
      try {
        t = await source()
      } catch (err) {
        if (err instanceof NexusProblem || err instanceof NexusNetworkError) throw err
        throw new NexusNetworkError('the token source failed', { cause: err })
      }
      if (generation === this.generation) {
        this.current = {
          token: t.token,
          ...timed(t, this.now()),
          playerId: playerId ?? jwtSubject(t.token),
        }
      }
    })
  }

  /**
   * Signs out: forgets the token (the device id stays), drops a renewal still on its way, and
   * ends this client's live matchmaking tickets (cancelled on the server) and game connections.
   */
  signOut(): void {
    this.forget()
  }

  /**
   * Called whenever the signed-in player is signed out or replaced, with the token they had (to
   * leave what they were in), or null when there was none, and, when another sign-in replaces
   * them, who they were (their id, null if unknown); `undefined` for a plain `signOut()`, which
   * ends everything. Returns the function that stops it.
   * @internal for the SDK's matchmaking and sessions clients.
   */
  onSignOut(listener: SignOutListener, opts: { toldDuringSignIn?: boolean } = {}): () => void {
    this.signOutListeners.add(listener)
    // Made while a sign-in is on its way, but not waiting for its token (a game connection given
    // its session token): told when it completes too, to judge whose it is itself.
    if (opts.toldDuringSignIn) this.pending?.hearers.add(listener)
    return () => this.signOutListeners.delete(listener)
  }

  /** Whether a sign-in is on its way. @internal */
  get signingIn(): boolean {
    return this.pending !== null
  }

  /**
   * Drops the current identity at once (what is on its way for it too) and, unless `quietly`,
   * tells the listeners; answers the new generation.
   */
  private forget(quietly = false): number {
    // During a sign-in, the player before it is the one signed out (with their token, which the
    // sign-in dropped): what they are in ends on the server too.
    const signedIn = this.pending
      ? (this.pending.before ?? { token: null, playerId: null })
      : this.signedInAs()
    this.current = null
    this.source = null
    this.guestDevice = null
    this.pending = null
    this.renewing = null
    this.retryRenewalAt = 0
    const generation = ++this.generation
    if (signedIn && !quietly) this.signedOut(signedIn.token)
    return generation
  }

  /** Which sign-in is current: it changes with every sign-in and sign-out (not a renewal). */
  identity(): number {
    return this.generation
  }

  /**
   * Whether the player signed in at `identity` (a sign-in's generation) is still the one signed
   * in: the same sign-in, or later ones that each turned out to be that player again (a guest
   * signing in again on the same device), so that a request of theirs retrying meanwhile goes
   * on with the new token.
   */
  stillSignedIn(identity: number): boolean {
    let g: number | undefined = this.generation
    while (g !== undefined && g !== identity) g = this.continues.get(g)
    return g === identity
  }

  /** Sign-ins that turned out to be the player before again: generation → the one it continued. */
  private readonly continues = new Map<number, number>()

  /**
   * The sign-in on its way, if any: who was signed in before it, and the generations it would
   * continue if it turns out to be that player again. A sign-in that overtakes it takes both
   * over, so that `guest()` called twice at once (a resume handler run twice) is still the same
   * player again, and a different player signs out the one before with their own token.
   */
  private pending: {
    before: { token: string | null; playerId: string | null } | null
    continued: Array<[generation: number, before: number]>
    /**
     * The sign-out listeners when the player before was signed in: what was made while the
     * sign-in was on its way (a join, a game's connect) waits for the new player's token, and
     * is theirs, not the player before's to end.
     */
    hearers: Set<SignOutListener>
    /** The same player's identity to keep if this sign-in fails (`guest()` again on the device). */
    kept: { current: NonNullable<Auth['current']>; device: string | null } | null
  } | null = null

  /** Who is signed in now (their token, if one is held), or null. */
  private signedInAs(): { token: string | null; playerId: string | null } | null {
    if (this.source === null) return null
    return { token: this.current?.token ?? null, playerId: this.current?.playerId ?? null }
  }

  private signedOut(
    token: string | null,
    leaving?: { playerId: string | null; hearers: ReadonlySet<SignOutListener> },
  ): void {
    for (const listener of [...(leaving?.hearers ?? this.signOutListeners)]) {
      // One that has stopped listening since is not told.
      if (!this.signOutListeners.has(listener)) continue
      try {
        listener(token, leaving?.playerId)
      } catch (err) {
        console.error(err)
      }
    }
  }

  /**
   * Starts a new sign-in: the previous token is dropped at once, and requests meanwhile wait for
   * the first one (as the single renewal on its way). The player before is signed out (their
   * tickets and game connections end) unless the sign-in turns out to be theirs again (a guest
   * signing in again on the same device, say). Rejects, leaving the client signed out, when that
   * token cannot be had, or when another sign-in or a sign-out came first.
   */
  private async signIn(
    fetchToken: (generation: number) => Promise<void>,
    opts: { keepOnFailure?: boolean } = {},
  ): Promise<void> {
    const overtaken = this.pending
    const before = overtaken ? overtaken.before : this.signedInAs()
    const hearers = overtaken ? overtaken.hearers : new Set(this.signOutListeners)
    // An overtaking sign-in keeps what the one it overtook would have, if it too may.
    const kept = !opts.keepOnFailure
      ? null
      : overtaken
        ? overtaken.kept
        : this.current
          ? { current: this.current, device: this.guestDevice }
          : null
    const continued: Array<[number, number]> = [...(overtaken?.continued ?? []), [0, 0]]
    const beforeGeneration = this.generation
    const generation = this.forget(true)
    continued[continued.length - 1] = [generation, beforeGeneration]
    this.pending = { before, continued, hearers, kept }
    const source = () => fetchToken(generation)
    this.source = source
    const first: Promise<void> = source().finally(() => {
      if (this.renewing === first) this.renewing = null
    })
    this.renewing = first
    try {
      await first
    } catch (err) {
      if (generation === this.generation) {
        if (kept && before) {
          // The same player again: still signed in, with the token they had, which this
          // sign-in's source renews when it must; their requests waiting meanwhile go on.
          this.current = kept.current
          this.guestDevice = kept.device
          this.pending = null
          for (const [g, b] of continued) this.continues.set(g, b)
          throw err
        }
        this.forget(true)
        if (before) this.signedOut(before.token, { playerId: before.playerId, hearers })
      }
      throw err
    }
    if (generation !== this.generation) {
      // Overtaken: whatever overtook it told the listeners what it had to.
      throw new Error('Signed out before the sign-in completed')
    }
    this.pending = null
    const samePlayer =
      before?.playerId != null && before.playerId === (this.current?.playerId ?? null)
    if (samePlayer) for (const [g, b] of continued) this.continues.set(g, b)
    else this.continues.clear()
    if (before && !samePlayer) this.signedOut(before.token, { playerId: before.playerId, hearers })
  }

  /**
   * A valid token, renewed first when it is about to expire or `force` says so. With `rejected`
   * (the token a server just refused), a forced renewal happens only if that token is still the
   * current one: of many requests refused at once, the first renews and the rest use its token.
   */
  async token(force = false, rejected?: string): Promise<string> {
    if (!this.source) throw notSignedIn()
    const margin = Math.min(this.refreshMarginMs, (this.current?.lifetimeMs ?? Infinity) / 2)
    const now = this.now()
    const stale = !this.current || this.current.expiresAt - now < margin
    const renewedSince = rejected !== undefined && !!this.current && this.current.token !== rejected
    const forced = force && !renewedSince
    const valid = !!this.current && this.current.expiresAt > now
    // An early renewal that failed is not tried on every request: the token still works.
    if (forced || (stale && !(valid && now < this.retryRenewalAt))) {
      if (!this.renewing) {
        const started: Promise<void> = answeredWithin(this.source(), TOKEN_SOURCE_WAIT_MS).then(
          () => {
            if (this.renewing === started) this.renewing = null
          },
          (err: unknown) => {
            if (this.renewing === started) this.renewing = null
            throw err
          },
        )
        this.renewing = started
      }
      const renewal = this.renewing
      if (!forced && valid) {
        // Early (the token has minutes left) and not asked for: the request goes on with the
        // token it has, without waiting for a token source that may be slow or stalled (a
        // provider's fetch has no timeout); a renewal that fails is tried again by a later
        // request, RENEWAL_RETRY_MS on.
        renewal.catch((err: unknown) => {
          const retryAfter = err instanceof NexusProblem ? (err.retryAfter ?? 0) * 1000 : 0
          this.retryRenewalAt = this.now() + Math.max(retryAfter, RENEWAL_RETRY_MS)
        })
        return this.current!.token
      }
      // A forced renewal's caller was refused its token: that token back is no answer.
      await this.settled(
        answeredWithin(renewal, TOKEN_SOURCE_WAIT_MS),
        forced ? (rejected ?? this.current?.token) : undefined,
      )
    }
    // Signed in anew while the renewal was on its way (a wake handler's `guest()`, a provider's
    // refresh hook): that sign-in's token, once it comes. Whose it is, the caller judges: what
    // was the player before's has been told of the change first, as the sign-in's own wait on
    // the token was registered before this one.
    // A sign-in's source is not cut off (its late answer still signs the player in), but the
    // requests waiting on it are, as on a renewal's.
    while (!this.current && this.renewing !== null) {
      await this.settled(answeredWithin(this.renewing, TOKEN_SOURCE_WAIT_MS))
    }
    // Signed out while the renewal was on its way.
    if (!this.current) throw notSignedIn()
    return this.current.token
  }

  /**
   * Waits for a renewal or a sign-in; its failure is thrown unless what came since makes it
   * moot: a sign-in begun meanwhile that has landed or is on its way (the failed one was dropped
   * for it: a renewal whose provider's refresh token that sign-in rotated, the first of two
   * sign-ins at once), or the same player kept after their own sign-in failed (`guest()` again
   * on the device), whose token still works, unless it is the token the caller was `refused`.
   * A renewal dropped by a sign-out is answered as signed out, not with its own failure.
   */
  private async settled(waiting: Promise<void>, refused?: string): Promise<void> {
    const generation = this.generation
    const signingIn = this.pending !== null
    try {
      await waiting
    } catch (err) {
      const changed = this.generation !== generation
      const overtaken = changed && (this.current !== null || this.renewing !== null)
      const kept = signingIn && !changed && this.current !== null
      const refusedAgain = refused !== undefined && this.current?.token === refused
      if ((overtaken || kept) && !refusedAgain) return
      if (changed && !signingIn && this.current === null && this.renewing === null) {
        throw notSignedIn()
      }
      throw err
    }
  }
}

/** How long after a failed early renewal the next is tried (at least; `retryAfter` if longer). */
const RENEWAL_RETRY_MS = 10_000

/**
 * How long a request waits for the token source: a provider's refresh whose fetch hangs (fetch
 * has no timeout, a network switching on resume) would otherwise hold every request waiting on a
 * token for good, and each later one joins it. Past it the waiting requests fail (a network
 * error); a renewal is given up (the next calls the source again; a late answer is taken all the
 * same), a sign-in is not (its late answer signs the player in, as it would have).
 */
export const TOKEN_SOURCE_WAIT_MS = 30_000

function answeredWithin(work: Promise<void>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new NexusNetworkError(`the token source did not answer within ${ms / 1000} s`)),
      ms,
    )
  })
  // A source that fails after the wait ended is not an unhandled rejection.
  work.catch(() => undefined)
  return Promise.race([work, late]).finally(() => clearTimeout(timer))
}

const notSignedIn = () => new Error('Not signed in: call auth.guest() or auth.useTokens() first')
