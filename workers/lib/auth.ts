import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  SignJWT,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type JWTPayload,
  type JWTVerifyOptions,
} from 'jose'
import { errorFields, log, withoutCredentials } from './log.ts'
import { ApiError } from './problem.ts'
import { misconfigured } from './misconfigured.ts'
import { isPrototypeKey } from './fields.ts'

/** Issuer of the tokens Nexus signs itself. */
export const NEXUS_ISSUER = 'nexus'
/** Audience of player tokens Nexus signs. Session tokens use their own audience. */
export const PLAYER_AUDIENCE = 'nexus:player'
/** Tolerated clock difference between Nexus and a token's issuer. */
export const CLOCK_SKEW_SECONDS = 30

const MAX_TOKEN_LENGTH = 4096
const MAX_PLAYER_ID_LENGTH = 128

export interface AuthEnv {
  AUTH_SECRET?: string
  /** The secret AUTH_SECRET replaced, still verified (never signed with) during a rotation. */
  AUTH_SECRET_PREVIOUS?: string
  JWKS_URL?: string
  JWT_ISSUER?: string
  JWT_AUDIENCE?: string
  ADMIN_KEY?: string
  /** The admin key ADMIN_KEY replaced, still taken during a rotation. */
  ADMIN_KEY_PREVIOUS?: string
  METRICS_TOKEN?: string
  TOKEN_TTL_SECONDS?: string
}

export type Principal =
  | {
      kind: 'player'
      playerId: string
      source: 'nexus' | 'jwks'
      /** When the token was issued (its `iat`, in ms), when it says. */
      issuedAt?: number
      /** When the token expires (its `exp`, in ms): a socket's rights end with it. */
      expiresAt?: number
    }
  | { kind: 'admin' }

/**
 * Why a player token issued before its player's erasure is refused, by a board (a submission) or
 * by matchmaking (a join's claim).
 */
export const STALE_TOKEN_DETAIL =
  "This token was issued before the player's data was erased: sign in again"

/** A verified token's `iat` as `issuedAt` and `exp` as `expiresAt` (ms), when it has them. */
function tokenTimes(payload: JWTPayload): { issuedAt?: number; expiresAt?: number } {
  return {
    ...(typeof payload.iat === 'number' ? { issuedAt: payload.iat * 1000 } : {}),
    ...(typeof payload.exp === 'number' ? { expiresAt: payload.exp * 1000 } : {}),
  }
}

const encoder = new TextEncoder()

/**
 * The HMAC key for AUTH_SECRET, imported once per isolate: every signed or verified token would
 * otherwise pay a WebCrypto key import (measurable when a pool signs a token per matched player).
 */
const hmacKeys = new Map<string, Promise<CryptoKey>>()

/**
 * The shortest AUTH_SECRET Nexus signs with, in UTF-8 bytes: HS256's own key size. Anyone can get
 * a token signed with it (a guest sign-in) and try secrets against it offline at billions a
 * second; a short or memorable one would let them forge any player's tokens.
 */
export const MIN_AUTH_SECRET_BYTES = 32

/** Why AUTH_SECRET cannot sign (missing, or too short), or null when it can; `/ready` says it too. */
export function authSecretProblem(env: AuthEnv): string | null {
  const secret = env.AUTH_SECRET
  if (!secret) return 'AUTH_SECRET is not configured'
  if (encoder.encode(secret).length < MIN_AUTH_SECRET_BYTES) {
    return `AUTH_SECRET is too short (under ${MIN_AUTH_SECRET_BYTES} bytes): no token is signed or accepted with it`
  }
  return null
}

function secretKey(env: AuthEnv): Promise<CryptoKey> {
  // A secret with a key here passed the check when its key was made.
  const known = env.AUTH_SECRET ? hmacKeys.get(env.AUTH_SECRET) : undefined
  if (known) return known
  const problem = authSecretProblem(env)
  if (problem !== null) throw misconfigured('AUTH_SECRET', problem)
  const secret = env.AUTH_SECRET!
  const key = crypto.subtle.importKey(
    'raw',
    encoder.encode(secret),
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign', 'verify'],
  )
  // A rotated secret replaces the old key; the map never holds more than a few.
  if (hmacKeys.size >= 4) hmacKeys.clear()
  hmacKeys.set(secret, key)
  return key
}

/** Logged once per isolate, as the current secret's problem is. */
let previousSecretProblemLogged = false

/**
 * The HMAC key of AUTH_SECRET_PREVIOUS, or null when none is set (or it is too short to have
 * signed anything: then logged once, and ignored). Tokens, cursors and seals signed with it are
 * still taken while a rotation's clients renew theirs; nothing new is signed with it.
 */
function previousSecretKey(env: AuthEnv): Promise<CryptoKey> | null {
  const secret = env.AUTH_SECRET_PREVIOUS
  if (!secret || secret === env.AUTH_SECRET) return null
  if (encoder.encode(secret).length < MIN_AUTH_SECRET_BYTES) {
    if (!previousSecretProblemLogged) {
      previousSecretProblemLogged = true
      log('error', 'AUTH_SECRET_PREVIOUS is too short: ignored', {
        minBytes: MIN_AUTH_SECRET_BYTES,
      })
    }
    return null
  }
  return secretKey({ AUTH_SECRET: secret })
}

/**
 * `jwtVerify` with AUTH_SECRET's key, and, for a signature that is not its, AUTH_SECRET_PREVIOUS's
 * (a token issued before a rotation). Any other failure (expired, wrong audience) is final.
 */
async function verifyWithSecrets(
  env: AuthEnv,
  token: string,
  options: JWTVerifyOptions,
): ReturnType<typeof jwtVerify> {
  const current = await secretKey(env)
  try {
    return await jwtVerify(token, current, options)
  } catch (err) {
    const previous = previousSecretKey(env)
    if (previous === null || !(err instanceof joseErrors.JWSSignatureVerificationFailed)) throw err
    return await jwtVerify(token, await previous, options)
  }
}

/**
 * HMAC-SHA256 of `label` under AUTH_SECRET, hex: a value only this deployment can derive from a
 * client's input (an admin session's seed from its Idempotency-Key, say).
 */
export async function keyedDigest(env: AuthEnv, label: string): Promise<string> {
  const mac = await crypto.subtle.sign('HMAC', await secretKey(env), encoder.encode(label))
  return [...new Uint8Array(mac)].map((b) => b.toString(16).padStart(2, '0')).join('')
}

/** Bytes of a seal kept (128 bits): as unguessable as a session id, 22 characters of base64url. */
const SEAL_BYTES = 16

/**
 * A seal on `value`, a string handed to clients that the server reads back and must trust (a page
 * cursor carrying the rank it goes on from): base64url of HMAC-SHA256 under AUTH_SECRET of
 * `purpose` and the value, cut to SEAL_BYTES.
 */
export async function sealOf(env: AuthEnv, purpose: string, value: string): Promise<string> {
  return sealWith(await secretKey(env), purpose, value)
}

async function sealWith(key: CryptoKey, purpose: string, value: string): Promise<string> {
  const mac = await crypto.subtle.sign('HMAC', key, encoder.encode(`${purpose}\n${value}`))
  let binary = ''
  for (const b of new Uint8Array(mac, 0, SEAL_BYTES)) binary += String.fromCharCode(b)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}

/** Whether `seal` is `value`'s under `purpose`, compared in time independent of where they differ. */
export async function sealHolds(
  env: AuthEnv,
  purpose: string,
  value: string,
  seal: string,
): Promise<boolean> {
  const matches = (expected: string) => {
    if (seal.length !== expected.length) return false
    let diff = 0
    for (let i = 0; i < seal.length; i++) diff |= seal.charCodeAt(i) ^ expected.charCodeAt(i)
    return diff === 0
  }
  if (matches(await sealOf(env, purpose, value))) return true
  // Handed out before a rotation (a page cursor a client still holds).
  const previous = previousSecretKey(env)
  return previous !== null && matches(await sealWith(await previous, purpose, value))
}

/**
 * The longest a player token may still have to live when presented (its `exp` from now). Nexus
 * issues at most this; a token minted further out (a game server's ten-year token) is refused,
 * so a leaked token dies within a month without rotating AUTH_SECRET for everyone.
 */
export const MAX_TOKEN_LIFETIME_SECONDS = 30 * 86_400

/** Lifetime of tokens Nexus issues, from TOKEN_TTL_SECONDS (default one day, bounded). */
export function tokenTtlSeconds(env: AuthEnv): number {
  const n = Number(env.TOKEN_TTL_SECONDS ?? 86_400)
  return Number.isInteger(n) && n >= 60 && n <= MAX_TOKEN_LIFETIME_SECONDS ? n : 86_400
}

/**
 * Refuses a verified token whose `exp` lies beyond MAX_TOKEN_LIFETIME_SECONDS from now or from its
 * `iat`, or whose `iat` lies ahead of now. The erasure checks compare `iat` with an erasure's
 * time and forget an erasure once no token from before it can be alive: a token stamped later
 * than it was issued (an `iat` in milliseconds, an issuer's fast clock), or one living longer than
 * that, would get past them.
 */
function checkLifetime(payload: JWTPayload): void {
  const now = Math.floor(Date.now() / 1000)
  const exp = payload.exp ?? 0
  const days = MAX_TOKEN_LIFETIME_SECONDS / 86_400
  if (exp - now > MAX_TOKEN_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS) {
    throw new ApiError(
      'unauthorized',
      `The token expires too far ahead: player tokens may live at most ${days} days`,
    )
  }
  if (typeof payload.iat !== 'number') return
  if (payload.iat > now + CLOCK_SKEW_SECONDS) {
    throw new ApiError(
      'unauthorized',
      'The token was issued in the future: its iat, in seconds since 1970, is ahead of the clock',
    )
  }
  if (exp - payload.iat > MAX_TOKEN_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS) {
    throw new ApiError(
      'unauthorized',
      `The token lives too long (exp - iat): player tokens may live at most ${days} days`,
    )
  }
}

/**
 * Signs an HS256 token for a player.
 *
 * @example
 * const { token, expiresAt } = await issuePlayerToken(env, 'g_4f…')
 */
export async function issuePlayerToken(
  env: AuthEnv,
  playerId: string,
  now = Date.now(),
): Promise<{ token: string; expiresAt: number }> {
  const iat = Math.floor(now / 1000)
  const exp = iat + tokenTtlSeconds(env)
  const token = await new SignJWT({})
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(playerId)
    .setIssuer(NEXUS_ISSUER)
    .setAudience(PLAYER_AUDIENCE)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(await secretKey(env))
  return { token, expiresAt: exp * 1000 }
}

/**
 * Signs an HS256 token with custom claims and audience (session tokens, ticket tokens).
 */
export async function signScopedToken(
  env: AuthEnv,
  audience: string,
  subject: string,
  claims: Record<string, unknown>,
  ttlSeconds: number,
  now = Date.now(),
): Promise<string> {
  const iat = Math.floor(now / 1000)
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(subject)
    .setIssuer(NEXUS_ISSUER)
    .setAudience(audience)
    .setIssuedAt(iat)
    .setExpirationTime(iat + ttlSeconds)
    .sign(await secretKey(env))
}

/** Verifies a token Nexus signed for `audience`; returns its claims or throws 401. */
export async function verifyScopedToken(
  env: AuthEnv,
  token: string,
  audience: string,
): Promise<JWTPayload & { sub: string }> {
  checkTokenShape(token)
  try {
    const { payload } = await verifyWithSecrets(env, token, {
      algorithms: ['HS256'],
      issuer: NEXUS_ISSUER,
      audience,
      clockTolerance: CLOCK_SKEW_SECONDS,
      requiredClaims: ['sub', 'exp'],
    })
    return payload as JWTPayload & { sub: string }
  } catch (err) {
    throw tokenError(err)
  }
}

/** After a failed key-set fetch, the keys served last are used this long before trying again. */
const JWKS_RETRY_MS = 30_000
/** How long one key-set fetch may take (and so how long others wait on it). */
const JWKS_FETCH_MS = 3_000
/**
 * After a fetch, a token naming a key the set lacks is refused this long without fetching again
 * (jose's cooldown). An object so that a test of a rotation need not wait it out.
 */
export const jwksTimings = { cooldownMs: 30_000 }

interface JwksState {
  remote: ReturnType<typeof createRemoteJWKSet>
  failedAt: number
  /** The keys served last, as of the last failed fetch (built once, not per request). */
  fallback: ReturnType<typeof createLocalJWKSet> | null
  /** When a request of this isolate began asking the provider (0: none is). */
  askingSince: number
  /** The keys last fetched, as a local set (built once per fetch, not per request). */
  held: { text: string; keys: ReturnType<typeof createLocalJWKSet> } | null
}

/** The keys `state` last fetched, as a local key set, or null before any fetch succeeded. */
function heldKeys(state: JwksState): ReturnType<typeof createLocalJWKSet> | null {
  const jwks: JSONWebKeySet | undefined = state.remote.jwks()
  if (!jwks) return null
  // jose hands out a copy each time: the same keys are told by their text.
  const text = JSON.stringify(jwks)
  if (state.held?.text !== text) state.held = { text, keys: createLocalJWKSet(jwks) }
  return state.held.keys
}

const jwksByUrl = new Map<string, JwksState>()

/**
 * For tests only: a key-set fetch of `url` begun now that will never finish (its request gone).
 * @internal
 */
export function loseJwksFetchForTest(url: string): void {
  const state = jwksByUrl.get(url)
  if (state) state.askingSince = Date.now()
}

/**
 * The key for a token of the studio's identity provider. While the provider's key set cannot be
 * fetched, the keys it served last keep verifying (stale-if-error): an outage there must not
 * sign every player out. With no keys at all, the answer is 503, not 401: the token may be fine.
 */
async function identityProviderKey(
  url: string,
  header: JWSHeaderParameters,
  token: FlattenedJWSInput,
): Promise<CryptoKey> {
  let state = jwksByUrl.get(url)
  if (!state) {
    state = {
      remote: createRemoteJWKSet(new URL(url), {
        timeoutDuration: JWKS_FETCH_MS,
        cooldownDuration: jwksTimings.cooldownMs,
      }),
      failedAt: 0,
      fallback: null,
      askingSince: 0,
      held: null,
    }
    jwksByUrl.set(url, state)
  }
  // Another request of this isolate is asking the provider: jose shares no fetch between
  // requests on Workers, so every token arriving meanwhile (at each 10-minute refresh, a burst at
  // an isolate's start, junk `kid`s once the cooldown is over) fetched the key set again, at the
  // provider's slowest moments the most. Those wait for its keys instead, polling this isolate's
  // state (a promise of another request's is not theirs to wait on).
  // A token naming a key the held ones lack (the provider rotated: the fetch under way may
  // bring it) waits for that fetch too, rather than being refused as forged.
  // A fetch still unfinished past its deadline was lost (its request's client went away and the
  // runtime dropped it, its `finally` with it): then this request fetches for itself, rather
  // than refusing a rotated key as forged or answering 503 for keys nobody is fetching.
  let lost = false
  if (Date.now() - state.askingSince < JWKS_FETCH_MS) {
    for (;;) {
      const finished = state.askingSince === 0
      lost = !finished && Date.now() - state.askingSince >= JWKS_FETCH_MS
      const keys = heldKeys(state)
      if (keys) {
        try {
          return await keys(header, token)
        } catch (err) {
          if (finished || !(err instanceof joseErrors.JWKSNoMatchingKey)) throw err
          if (lost) break
        }
      } else if (finished || lost) break
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    if (!lost) {
      if (state.fallback) return state.fallback(header, token)
      throw keysUnavailable(JWKS_FETCH_MS)
    }
  }
  const sinceFailure = Date.now() - state.failedAt
  if (sinceFailure < JWKS_RETRY_MS) {
    if (state.fallback) return state.fallback(header, token)
    // No keys to fall back on: refused until the retry is due, not fetched again for every
    // token, so that anyone sending junk tokens cannot make Nexus hammer the studio's provider.
    throw keysUnavailable(JWKS_RETRY_MS - sinceFailure)
  }
  const asking = Date.now()
  state.askingSince = asking
  try {
    return await state.remote(header, token)
  } catch (err) {
    // A token naming a key the provider does not have is the token's fault.
    if (
      err instanceof joseErrors.JWKSNoMatchingKey ||
      err instanceof joseErrors.JWKSMultipleMatchingKeys
    ) {
      throw err
    }
    state.failedAt = Date.now()
    log('warn', 'identity provider keys not fetched', {
      url: withoutCredentials(url),
      ...errorFields(err),
    })
    const last = state.remote.jwks()
    state.fallback = last ? createLocalJWKSet(last) : null
    if (state.fallback) return state.fallback(header, token)
    throw keysUnavailable(JWKS_RETRY_MS)
  } finally {
    // Not another request's fetch, begun once this one's wait was over.
    if (state.askingSince === asking) state.askingSince = 0
  }
}

/** `a, b` → ['a', 'b']: a setting that may name several values. */
function commaList(value: string): string[] {
  return value
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v !== '')
}

function keysUnavailable(retryInMs: number): ApiError {
  return new ApiError(
    'unavailable',
    "The identity provider's keys cannot be fetched now; try again",
    {},
    { 'retry-after': String(Math.max(1, Math.ceil(retryInMs / 1000))) },
  )
}

/**
 * Why the identity provider's settings cannot be used, or null (none set, or all three usable):
 * provider tokens are 503 meanwhile, and `/ready` says so. Key sets are often shared by many apps
 * (one per Firebase, one per Auth0 tenant): without an issuer and audience to check, a token
 * minted for any of them would pass. An issuer and audience without the key set are a key set
 * forgotten: provider tokens are 503 then too, not 401 (which would sign the players out).
 */
export function identityProviderProblem(env: AuthEnv): string | null {
  const { JWKS_URL: url, JWT_ISSUER: issuer, JWT_AUDIENCE: audience } = env
  if (!url) {
    return issuer || audience
      ? 'JWT_ISSUER or JWT_AUDIENCE is set without JWKS_URL (all three or none)'
      : null
  }
  // `,` or spaces name nothing: every provider token would be refused (401, signing players out).
  if (!issuer || !audience || commaList(issuer).length === 0 || commaList(audience).length === 0) {
    return 'JWKS_URL is set, but JWT_ISSUER or JWT_AUDIENCE is missing'
  }
  if (!isKeySetUrl(url)) return 'invalid JWKS_URL: not https (plain http only to this machine)'
  return null
}

/**
 * Whether the identity provider's keys may be fetched from `value`: https, or plain http to this
 * machine only (a local provider in development and tests). Keys fetched in cleartext over a
 * network could be swapped on the way, and whoever swapped them could sign in as any player.
 */
function isKeySetUrl(value: string): boolean {
  try {
    const { protocol, hostname } = new URL(value)
    if (protocol === 'https:') return true
    return protocol === 'http:' && LOOPBACK_HOSTS.has(hostname)
  } catch {
    return false
  }
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]'])

/** Whether `hostname` (as a URL gives it) is this machine: plain HTTP to it never leaves it. */
export function isLoopbackHost(hostname: string): boolean {
  return LOOPBACK_HOSTS.has(hostname)
}

/** Three base64url segments: header, payload, signature. */
const JWT_SHAPE = /^[\w-]+\.[\w-]+\.[\w-]*$/

/** Whether `value` has a JWT's shape (three dot-separated base64url parts). */
export function isTokenShaped(value: string): boolean {
  return JWT_SHAPE.test(value)
}

function checkTokenShape(token: string): void {
  if (token.length > MAX_TOKEN_LENGTH) {
    throw new ApiError(
      'unauthorized',
      `The bearer token is longer than ${MAX_TOKEN_LENGTH} characters (an identity provider's token with many permissions or claims can be)`,
    )
  }
  if (!JWT_SHAPE.test(token)) throw new ApiError('unauthorized', 'The bearer token is not a JWT')
}

function tokenError(err: unknown): ApiError {
  if (err instanceof ApiError) return err
  if (err instanceof joseErrors.JWTExpired)
    return new ApiError('token-expired', 'The token has expired')
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    return new ApiError('unauthorized', `The token's "${err.claim}" claim is not accepted`)
  }
  if (err instanceof joseErrors.JOSEError) {
    return new ApiError('unauthorized', 'The token signature or format is not valid')
  }
  // Not the token's fault as far as anyone can tell (an identity provider's RSA key under 2,048
  // bits, which the verifier refuses with a TypeError; a bug): answered as a bad token, and
  // logged, or every player of that provider is signed out with nothing saying why.
  log('error', 'token verification failed unexpectedly', errorFields(err))
  return new ApiError('unauthorized', 'The token could not be verified')
}

/**
 * Verifies a player's bearer token: HS256 tokens signed with AUTH_SECRET (Nexus's own, e.g.
 * guest tokens), or RS/ES/EdDSA tokens of the studio's identity provider via JWKS_URL, checked
 * against JWT_ISSUER and JWT_AUDIENCE. Throws 401 problems for every other case.
 */
export async function verifyPlayerToken(env: AuthEnv, token: string): Promise<Principal> {
  checkTokenShape(token)
  let alg: string | undefined
  try {
    alg = decodeProtectedHeader(token).alg
  } catch {
    throw new ApiError('unauthorized', 'The token header is not valid')
  }
  // The header is any JSON object to the decoder: an `alg` that is no string is a bad token, not
  // a fault (past here a TypeError would be logged as one).
  if (alg !== undefined && typeof alg !== 'string') {
    throw new ApiError('unauthorized', 'The token header is not valid')
  }
  try {
    // With AUTH_SECRET missing too: secretKey's 503 (a server's configuration, which a 401
    // would have clients answer by signing their players out).
    if (alg === 'HS256') {
      const { payload } = await verifyWithSecrets(env, token, {
        algorithms: ['HS256'],
        issuer: NEXUS_ISSUER,
        audience: PLAYER_AUDIENCE,
        clockTolerance: CLOCK_SKEW_SECONDS,
        // `iat`, as for a provider's tokens (below): a game server's token without one counted
        // as issued before any erasure of its player, refused from queues and parties for good.
        requiredClaims: ['sub', 'exp', 'iat'],
      })
      checkLifetime(payload)
      return {
        kind: 'player',
        playerId: playerIdFrom(payload),
        source: 'nexus',
        ...tokenTimes(payload),
      }
    }
    const providerAlg = alg !== undefined && alg !== 'none' && !alg.startsWith('HS')
    // A misconfigured server, not a bad token: 401 would make clients sign their players out
    // (an issuer and audience set without JWKS_URL included).
    const misconfigured = providerAlg ? identityProviderProblem(env) : null
    if (misconfigured !== null) {
      log('error', misconfigured, { url: withoutCredentials(env.JWKS_URL ?? '') })
      throw new ApiError(
        'unavailable',
        `Identity provider tokens are not accepted: ${misconfigured}`,
      )
    }
    if (env.JWKS_URL && providerAlg) {
      const jwksUrl = env.JWKS_URL
      const options: JWTVerifyOptions = {
        algorithms: [
          'RS256',
          'RS384',
          'RS512',
          'PS256',
          'ES256',
          'ES384',
          'ES512',
          'EdDSA',
          'Ed25519',
        ],
        // Each a comma-separated list: a tenant reached under two domains issues two `iss`, and
        // a game's web and mobile clients may be two audiences.
        issuer: commaList(env.JWT_ISSUER!),
        audience: commaList(env.JWT_AUDIENCE!),
        clockTolerance: CLOCK_SKEW_SECONDS,
        // `iat` tells a token issued before its player's erasure from one after (a player coming
        // back under the same id): without it every token of theirs counted as older, refused
        // from queues and parties for good and from boards for a month, whatever they did.
        requiredClaims: ['sub', 'exp', 'iat'],
      }
      const payload = await jwtVerify(token, (h, t) => identityProviderKey(jwksUrl, h, t), options)
        .then((verified) => verified.payload)
        .catch((err: unknown) => {
          // A token without `kid` while the key set holds several keys of its type (a provider
          // rotating keys that have no ids): the token is good if one of them verifies it.
          if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err
          return verifyWithAnyKey(token, err, options)
        })
      checkLifetime(payload)
      const playerId = playerIdFrom(payload)
      // Guest ids are public (every board shows them): a provider whose subjects players choose
      // (a user name) would otherwise let a player sign in as a guest who took that id.
      if (playerId.startsWith(GUEST_ID_PREFIX)) {
        throw new ApiError(
          'unauthorized',
          `The token subject starts with "${GUEST_ID_PREFIX}", which names Nexus's guests`,
        )
      }
      return {
        kind: 'player',
        playerId,
        source: 'jwks',
        ...tokenTimes(payload),
      }
    }
  } catch (err) {
    throw tokenError(err)
  }
  // The header's own words, bounded: any caller writes them.
  const named = alg === undefined ? 'no algorithm' : String(alg).slice(0, 20)
  throw new ApiError('unauthorized', `Tokens signed with ${named} are not accepted`)
}

async function verifyWithAnyKey(
  token: string,
  keys: AsyncIterable<CryptoKey>,
  options: JWTVerifyOptions,
): Promise<JWTPayload> {
  for await (const key of keys) {
    try {
      return (await jwtVerify(token, key, options)).payload
    } catch (err) {
      if (!(err instanceof joseErrors.JWSSignatureVerificationFailed)) throw err
    }
  }
  throw new joseErrors.JWSSignatureVerificationFailed()
}

/** What every guest's player id starts with; an identity provider's subjects may not. */
export const GUEST_ID_PREFIX = 'g_'

function playerIdFrom(payload: JWTPayload): string {
  const sub: unknown = payload.sub
  // `me` names the caller in this API's paths: such a player could not read their own standing;
  // `.` and `..` are path steps every URL library folds away, so no admin route could name them.
  // A number (a game server minting tokens from a numeric user id) is not an id either: ids are
  // compared as text everywhere. Nor `constructor` or `__proto__` (isPrototypeKey).
  if (
    typeof sub !== 'string' ||
    !sub ||
    sub.length > MAX_PLAYER_ID_LENGTH ||
    !isPrintable(sub) ||
    sub === 'me' ||
    sub === '.' ||
    sub === '..' ||
    isPrototypeKey(sub)
  ) {
    throw new ApiError('unauthorized', 'The token subject is not a valid player id')
  }
  return sub
}

function isPrintable(s: string): boolean {
  return /^[\x21-\x7e]+$/.test(s)
}

/**
 * Compares a presented key with ADMIN_KEY in constant time: both are hashed first, so neither
 * their contents nor their lengths leak through timing. ADMIN_KEY_PREVIOUS, while set, is taken
 * too: game servers move to a new key one by one, not all in the instant it is set.
 */
export async function isAdminKey(env: AuthEnv, presented: string): Promise<boolean> {
  const [current, previous] = await Promise.all([
    sameSecret(presented, env.ADMIN_KEY),
    // Only beside a current key: with ADMIN_KEY unset the admin routes are closed (503).
    env.ADMIN_KEY ? sameSecret(presented, env.ADMIN_KEY_PREVIOUS) : false,
  ])
  return current || previous
}

/**
 * Whether `presented` is an admin key (ADMIN_KEY, or ADMIN_KEY_PREVIOUS beside it) that is itself
 * unguessable: the only comparison an address past its wrong-key allowance still gets. Each key
 * is judged alone: a short previous key passing while blocked would answer every guess at it.
 */
export async function isUnguessableAdminKey(env: AuthEnv, presented: string): Promise<boolean> {
  const [current, previous] = await Promise.all([
    unguessable(env.ADMIN_KEY) ? sameSecret(presented, env.ADMIN_KEY) : false,
    env.ADMIN_KEY && unguessable(env.ADMIN_KEY_PREVIOUS)
      ? sameSecret(presented, env.ADMIN_KEY_PREVIOUS)
      : false,
  ])
  return current || previous
}

/**
 * Whether an admin key taken now (ADMIN_KEY, or ADMIN_KEY_PREVIOUS beside it) is shaped like a
 * token: then failed tokens count as wrong admin keys, or that key would be guessed uncounted.
 */
export function adminKeyTokenShaped(env: AuthEnv): boolean {
  if (env.ADMIN_KEY === undefined || env.ADMIN_KEY === '') return false
  return (
    JWT_SHAPE.test(env.ADMIN_KEY) ||
    (env.ADMIN_KEY_PREVIOUS !== undefined && JWT_SHAPE.test(env.ADMIN_KEY_PREVIOUS))
  )
}

/** Whether `presented` is the metrics scrape token (METRICS_TOKEN), compared in constant time. */
export async function isMetricsToken(env: AuthEnv, presented: string): Promise<boolean> {
  return sameSecret(presented, env.METRICS_TOKEN)
}

async function sameSecret(presented: string, secret: string | undefined): Promise<boolean> {
  if (!secret) return false
  const [a, b] = await Promise.all([
    crypto.subtle.digest('SHA-256', encoder.encode(presented)),
    secretDigest(secret),
  ])
  return crypto.subtle.timingSafeEqual(a, b)
}

/** The configured secrets' digests, computed once per isolate rather than on every comparison. */
const secretDigests = new Map<string, Promise<ArrayBuffer>>()

function secretDigest(secret: string): Promise<ArrayBuffer> {
  let digest = secretDigests.get(secret)
  if (!digest) {
    digest = crypto.subtle.digest('SHA-256', encoder.encode(secret))
    // A failed digest is not remembered, so the next comparison tries again.
    digest.catch(() => secretDigests.delete(secret))
    secretDigests.set(secret, digest)
  }
  return digest
}

/** The bearer credential of an Authorization header, or undefined. */
export function bearer(header: string | undefined | null): string | undefined {
  if (!header) return undefined
  const m = /^Bearer[ ]+(\S+)\s*$/i.exec(header)
  return m?.[1]
}

/**
 * Counts wrong admin keys per client, so the key cannot be guessed at the speed requests are
 * served (the middleware's is per address: workers/middleware/auth.ts).
 */
export interface AdminKeyGuard {
  /** Seconds this client must wait before another admin key of its is compared; 0 if none. */
  wait(): number
  /** A key of this client's refused unread (429) while it waits. */
  refused(): void
  /**
   * Counts a key about to be compared against this client's allowance at once, before its
   * answer: a burst of guesses sent together must not all be compared before the first is
   * counted. `right()` gives the count back for the admin key itself.
   */
  comparing(): { right(): void }
  /** Counts a wrong admin key from this client (across isolates, where Redis is configured). */
  wrong(): Promise<void>
  /**
   * The origin of the browser page that sent the request, when it is one the admin key is not
   * taken from (`ADMIN_ORIGINS`): no admin key is compared, and nothing counted.
   */
  readonly foreignPage?: string
}

/**
 * The length from which a key is taken as beyond guessing (`openssl rand -hex 32` makes 64): a
 * client blocked for wrong keys still has such a key compared, and the right one passes.
 */
export const UNGUESSABLE_KEY_LENGTH = 32

/**
 * Whether `secret` is long enough that a block for wrong guesses need not hold up the right
 * one: the block is there to slow guessing, and a key this long is not found by guessing at any
 * speed. A shorter key keeps the block whole (its right key refused too), or the block would
 * answer each guess right or wrong.
 */
export function unguessable(secret: string | undefined): boolean {
  return secret !== undefined && secret.length >= UNGUESSABLE_KEY_LENGTH
}

/**
 * Whether `credential` is the admin key, with `guard` counting a wrong one. A client past its
 * allowance gets 429 without a comparison, however right its key, unless the admin key is
 * unguessable: then the right one passes (a cloud neighbour sharing the game servers' /48 could
 * otherwise keep them out with a few hundred wrong keys a minute) and a wrong one is 429,
 * uncounted.
 */
export async function checkAdminKey(
  env: AuthEnv,
  credential: string,
  guard: AdminKeyGuard | undefined,
): Promise<boolean> {
  const wait = guard?.wait() ?? 0
  if (wait > 0) {
    if (await isUnguessableAdminKey(env, credential)) return true
    guard!.refused()
    throw new ApiError(
      'rate-limited',
      `Too many wrong admin keys from this address; retry in ${wait} s`,
      { retryAfter: wait },
      { 'retry-after': String(wait) },
    )
  }
  const compared = guard?.comparing()
  if (await isAdminKey(env, credential)) {
    compared?.right()
    return true
  }
  await guard?.wrong()
  return false
}

/**
 * Authenticates a bearer credential as a player token or the admin key. A credential shaped like
 * a JWT is verified as a token first (the common case pays no key comparison); one that fails
 * verification is still compared with the admin key, so an admin key of any shape works. With a
 * `guard`, wrong admin keys are counted per client (token-shaped ones only when the admin key is
 * token-shaped too); a token that fails (an expired one, say) is answered as a token whatever the
 * guard says, so players' renewals never see its 429.
 */
export async function authenticate(
  env: AuthEnv,
  credential: string,
  guard?: AdminKeyGuard,
): Promise<Principal> {
  if (JWT_SHAPE.test(credential)) {
    try {
      return await verifyPlayerToken(env, credential)
    } catch (err) {
      if (guard?.foreignPage !== undefined) throw err
      // An admin key shaped like a token is guessed in that shape, so such guesses count
      // (uncounted, they would dodge the lockout). With any other admin key, no token-shaped
      // credential can be it, and a player's expired token is no guess.
      const counted = adminKeyTokenShaped(env)
      if ((guard?.wait() ?? 0) === 0) {
        const compared = counted ? guard?.comparing() : undefined
        if (await isAdminKey(env, credential)) {
          compared?.right()
          return { kind: 'admin' }
        }
      } else if (counted) {
        if (await isUnguessableAdminKey(env, credential)) {
          return { kind: 'admin' }
        }
        // A guess refused unread, as checkAdminKey's 429 is (answered as the token's own error).
        guard!.refused()
        throw err
      }
      if (counted) await guard?.wrong()
      throw err
    }
  }
  if (guard?.foreignPage !== undefined) {
    if (!credential.includes('.')) throw adminKeyFromForeignPage(guard.foreignPage)
    return verifyPlayerToken(env, credential)
  }
  if (await checkAdminKey(env, credential, guard)) return { kind: 'admin' }
  // Something with no dot can only have been meant as an admin key; with dots, as a token.
  if (!credential.includes('.')) throw notACredential()
  return verifyPlayerToken(env, credential)
}

/**
 * A credential that could only be the admin key, from a browser page on another origin. Any page
 * a player opens can send requests to the API with a header of its choosing (`CORS_ORIGINS` lets
 * it, for games): compared and counted, its wrong keys locked the visitor's address out of the
 * admin key (a studio's office, its game servers' NAT); compared and not counted, they would be
 * guesses for free. So such keys are not compared at all, right or wrong.
 */
export function adminKeyFromForeignPage(origin: string): ApiError {
  return new ApiError(
    'unauthorized',
    `The admin key is not taken from browser pages on other origins (this one: ${origin.slice(0, 200)}); list the origins of the studio's own tools in ADMIN_ORIGINS`,
  )
}

/** Something with no dot is no token, and it is not the admin key either. */
export function notACredential(): ApiError {
  return new ApiError(
    'unauthorized',
    'The bearer credential is neither a token (a JWT) nor the admin key',
  )
}
