import type { Schemas } from './api.gen.ts'
import type { Transport } from './http.ts'

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

/** A token from elsewhere (the studio's own identity provider), and when it expires. */
export type TokenSource = () => Promise<{ token: string; expiresAt: number }>

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
  private source: TokenSource | null = null
  private renewing: Promise<void> | null = null
  private readonly transport: () => Transport
  private readonly storage: KeyValueStorage
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

  /** The signed-in player's id (guest sign-in), or null. */
  get playerId(): string | null {
    return this.current?.playerId ?? null
  }

  get signedIn(): boolean {
    return this.current !== null
  }

  /**
   * Signs in as the guest player of this device. The device id is generated once and kept in the
   * client's storage, so the same device is the same player on every run.
   *
   * @example
   * const { playerId } = await nexus.auth.guest()
   */
  async guest(deviceId?: string): Promise<Schemas['TokenResponse']> {
    let id = deviceId ?? this.storage.getItem(DEVICE_ID_KEY)
    if (!id) {
      id = crypto.randomUUID()
      this.storage.setItem(DEVICE_ID_KEY, id)
    }
    const fixed = id
    this.source = async () => this.guestToken(fixed)
    const t = await this.guestToken(fixed)
    return t
  }

  private async guestToken(deviceId: string): Promise<Schemas['TokenResponse']> {
    const t = await this.transport().request('post', '/v1/auth/guest', {
      body: { deviceId },
      retry: true,
    })
    // Timed by this device's clock from the server's "valid for": a device clock set far off
    // (players move it to skip timers) must not make every token look expired.
    const lifetimeMs = t.expiresIn * 1000
    this.current = {
      token: t.token,
      expiresAt: this.now() + lifetimeMs,
      lifetimeMs,
      playerId: t.playerId,
    }
    return t
  }

  /**
   * Uses tokens from another source (the studio's identity provider); called again whenever the
   * token nears its expiry or the server refuses it.
   */
  async useTokens(source: TokenSource, playerId: string | null = null): Promise<void> {
    this.source = async () => {
      const t = await source()
      this.current = { ...t, playerId }
      return t
    }
    await this.source()
  }

  /** Forgets the token (the device id stays). */
  signOut(): void {
    this.current = null
    this.source = null
  }

  /**
   * A valid token, renewed first when it is about to expire or `force` says so. With `rejected`
   * (the token a server just refused), a forced renewal happens only if that token is still the
   * current one: of many requests refused at once, the first renews and the rest use its token.
   */
  async token(force = false, rejected?: string): Promise<string> {
    if (!this.source) throw new Error('Not signed in: call auth.guest() or auth.useTokens() first')
    const margin = Math.min(this.refreshMarginMs, (this.current?.lifetimeMs ?? Infinity) / 2)
    const stale = !this.current || this.current.expiresAt - this.now() < margin
    const renewedSince = rejected !== undefined && !!this.current && this.current.token !== rejected
    if ((force && !renewedSince) || stale) {
      this.renewing ??= (async () => {
        try {
          await this.source!()
        } finally {
          this.renewing = null
        }
      })()
      await this.renewing
    }
    return this.current!.token
  }
}
