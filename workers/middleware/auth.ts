import type { Context, MiddlewareHandler } from 'hono'
import type { AppEnv } from '../app-env.ts'
import {
  adminKeyTokenShaped,
  type AdminKeyGuard,
  authenticate,
  bearer,
  isMetricsToken,
  isTokenShaped,
  unguessable,
  type Principal,
} from '../lib/auth.ts'
import { mayRequireCredential, requiresCredential } from '../lib/openapi.ts'
import { misconfigured } from '../lib/misconfigured.ts'
import { ApiError } from '../lib/problem.ts'
import { hitWindow } from '../lib/rate-limit.ts'
import { getRedis } from '../lib/redis.ts'
import { clientIp, countedClientNetwork, countEdgeRefusal } from './rate-limit.ts'

/** Wrong admin keys an address may send a minute before its keys are no longer compared. */
export const ADMIN_KEY_GUESSES_PER_MINUTE = 20

/**
 * Wrong admin keys an IPv6 /48 may send a minute, all its /64s together: a /48 is handed out free
 * by tunnel brokers, and counted by /64 alone it would get 65,536 times the allowance. Ten times
 * one address's, as guest sign-ins count a /48.
 */
export const ADMIN_KEY_GUESSES_PER_NETWORK_MINUTE = 10 * ADMIN_KEY_GUESSES_PER_MINUTE

/**
 * Addresses past their allowance, until when: consulted before each comparison without a round
 * trip. Counting is shared through Redis when configured, so an isolate that has not seen an
 * address learns it is over on that address's first wrong key there.
 */
const blockedUntil = new Map<string, number>()
const MAX_BLOCKED = 10_000

/**
 * Keys this isolate compared, by address, in the current minute: wrong ones and those whose
 * comparison is under way. Redis's count comes a round trip after each wrong key, so a burst sent
 * at once was compared in full before the first wrong key was counted; this count is taken before
 * each comparison. One more than the allowance, as Redis's count lets the guess that reaches it
 * through.
 */
const comparedThisMinute = new Map<string, { minute: number; keys: number }>()
const MINUTE_MS = 60_000

/** Counts nothing: for a request without an address. */
const UNCOUNTED: AdminKeyGuard = {
  wait: () => 0,
  refused: () => {},
  comparing: () => ({ right() {} }),
  wrong: async () => {},
}

const adminOriginLists = new Map<string, ReadonlySet<string>>()

/**
 * The origin of the browser page behind a request, when the admin key is not taken from it:
 * browsers name the page's origin in `Origin` on every cross-origin request (and on same-origin
 * ones but GET and HEAD). The API's own origin (the dashboard) and those in `ADMIN_ORIGINS` (a
 * comma-separated list) may send it; `null` (a sandboxed frame, a file) may not.
 */
export function foreignPageOf(c: Context<AppEnv>): string | undefined {
  const origin = c.req.header('origin')
  if (origin === undefined || origin === new URL(c.req.url).origin) return undefined
  const setting = c.env.ADMIN_ORIGINS ?? ''
  let allowed = adminOriginLists.get(setting)
  if (!allowed) {
    allowed = new Set(
      setting
        .split(',')
        .map((o) => o.trim())
        .filter(Boolean)
        .map(asOrigin),
    )
    adminOriginLists.set(setting, allowed)
  }
  return allowed.has(origin) ? undefined : origin
}

/**
 * An origin as a browser names it in `Origin` (`https://ops.example.com`): a setting written as a
 * URL (a trailing slash, capitals, a default port) would otherwise never match.
 */
export function asOrigin(entry: string): string {
  try {
    const origin = new URL(entry).origin
    return origin === 'null' ? entry : origin
  } catch {
    return entry
  }
}

/**
 * Counts wrong admin keys by the client's address (IPv6 by its /64, and by its /48); a request
 * from a browser page on an origin not allowed the admin key has none compared (`foreignPage`).
 */
export function adminKeyGuard(c: Context<AppEnv>): AdminKeyGuard {
  const foreignPage = foreignPageOf(c)
  if (foreignPage !== undefined) return { ...UNCOUNTED, foreignPage }
  // Cloudflare names every client's address. Without one (a request made inside workerd, as
  // tests do) nothing is counted: a counter shared by all such requests would let any of them
  // lock the others out.
  const ip = c.req.header('cf-connecting-ip')
  if (!ip) return UNCOUNTED
  // Worked out when a key is first compared, not for every request a player's token passes.
  let address: string | undefined
  const addressOf = () => (address ??= clientIp(c))
  // Blocked networks share blockedUntil with addresses, under a key no address can take.
  const networkKey = () => {
    const network = countedClientNetwork(c)
    return network === undefined ? undefined : `net:${network}`
  }
  const blockedFor = (): number => {
    const address = addressOf()
    const now = Date.now()
    const network = networkKey()
    const netUntil = network === undefined ? undefined : blockedUntil.get(network)
    if (netUntil !== undefined) {
      if (netUntil > now) return Math.ceil((netUntil - now) / 1000)
      blockedUntil.delete(network!)
    }
    const here = comparedThisMinute.get(address)
    if (here?.minute === Math.floor(now / MINUTE_MS) && here.keys > ADMIN_KEY_GUESSES_PER_MINUTE) {
      return Math.ceil(((here.minute + 1) * MINUTE_MS - now) / 1000)
    }
    const until = blockedUntil.get(address)
    if (until === undefined) return 0
    const left = until - now
    if (left > 0) return Math.ceil(left / 1000)
    blockedUntil.delete(address)
    return 0
  }
  return {
    wait: blockedFor,
    refused() {
      // Each key refused unread counts: the series says how hard a blocked client keeps trying.
      countEdgeRefusal('admin-key')
    },
    comparing() {
      const address = addressOf()
      const minute = Math.floor(Date.now() / MINUTE_MS)
      let here = comparedThisMinute.get(address)
      if (here?.minute !== minute) {
        if (comparedThisMinute.size >= MAX_BLOCKED) comparedThisMinute.clear()
        here = { minute, keys: 0 }
        comparedThisMinute.set(address, here)
      }
      const counted = here
      counted.keys++
      return {
        right() {
          counted.keys--
        },
      }
    },
    async wrong() {
      const address = addressOf()
      const network = networkKey()
      const redis = getRedis(c.env)
      const [d, n] = await Promise.all([
        hitWindow(redis, `admin-key:${address}`, ADMIN_KEY_GUESSES_PER_MINUTE, 60_000),
        network === undefined
          ? undefined
          : hitWindow(redis, `admin-key-${network}`, ADMIN_KEY_GUESSES_PER_NETWORK_MINUTE, 60_000),
      ])
      const block = (key: string, retryAfter: number) => {
        if (blockedUntil.size >= MAX_BLOCKED) blockedUntil.clear()
        blockedUntil.set(key, Date.now() + retryAfter * 1000)
      }
      if (!d.allowed) block(address, d.retryAfter)
      if (n && !n.allowed) block(network!, n.retryAfter)
    },
  }
}

async function principalOf(c: Context<AppEnv>): Promise<Principal> {
  const existing = c.get('principal')
  if (existing) return existing
  const credential = bearer(c.req.header('authorization'))
  if (!credential) {
    throw new ApiError('unauthorized', 'Send "Authorization: Bearer <token>"')
  }
  const principal = await authenticate(c.env, credential, adminKeyGuard(c))
  c.set('principal', principal)
  return principal
}

/**
 * Whether a request to a route anyone may call carries the admin key (a game server's, which
 * such a route's per-address limits for players would hold to one address's allowance). Compared
 * and counted as anywhere, so it is no free oracle for guesses; a wrong, refused or player's
 * credential is no error here: the read goes on as anyone's.
 */
export async function carriesAdminKey(c: Context<AppEnv>): Promise<boolean> {
  if (!c.env.ADMIN_KEY || !bearer(c.req.header('authorization'))) return false
  try {
    return (await principalOf(c)).kind === 'admin'
  } catch {
    return false
  }
}

/**
 * Requires a player token or the admin key (a game server acting for players).
 *
 * @example
 * scores.post('/:id/scores', requirePrincipal(), handler)
 */
export const requirePrincipal = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requirePrincipal(c, next) {
    await principalOf(c)
    await next()
  })

/** Requires a player token; the admin key is refused with 403. */
export const requirePlayer = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requirePlayer(c, next) {
    const p = await principalOf(c)
    if (p.kind !== 'player') throw new ApiError('forbidden', 'This route is for players')
    await next()
  })

/** Requires a player token when the path's `playerId` is `me`; other ids are public reads. */
export const requirePlayerForMe = (): MiddlewareHandler<AppEnv> =>
  mayRequireCredential(async function requirePlayerForMe(c, next) {
    if (c.req.param('playerId') === 'me') return requirePlayer()(c, next)
    await next()
  })

/** Requires the admin key; a player token is refused with 403. */
export const requireAdmin = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requireAdmin(c, next) {
    // Without ADMIN_KEY no credential can be right here: an operator who has not set it yet is
    // told so, not that their key is wrong (401), and nothing is compared, so their calls are no
    // guesses for the lockout to count. Elsewhere a credential is still judged as ever: a wrong
    // one is 401 and counted, so the metrics token cannot be guessed freely where the admin key
    // is left unset.
    if (!c.env.ADMIN_KEY) {
      throw misconfigured(
        'ADMIN_KEY',
        'ADMIN_KEY is not configured (set it with `wrangler secret put ADMIN_KEY`); /ready says so too',
      )
    }
    const p = await principalOf(c)
    if (p.kind !== 'admin') throw new ApiError('forbidden', 'This route needs the admin key')
    await next()
  })

/** The authenticated player's id; throws 403 for the admin key. */
export function playerId(c: Context<AppEnv>): string {
  const p = c.get('principal')
  if (p?.kind !== 'player') throw new ApiError('forbidden', 'This route is for players')
  return p.playerId
}

/**
 * Requires the metrics scrape token (METRICS_TOKEN), so a Prometheus config need not hold the
 * admin key, or the admin key itself; a player token is refused with 403.
 */
export const requireMetricsReader = (): MiddlewareHandler<AppEnv> =>
  requiresCredential(async function requireMetricsReader(c, next) {
    const credential = bearer(c.req.header('authorization'))
    // An address past its allowance of wrong keys gets no comparison with the metrics token
    // either (principalOf answers it 429); a wrong one counts as a wrong admin key there.
    const guard = adminKeyGuard(c)
    // The comparison is counted against the allowance before it starts, as the admin key's is:
    // a burst of guesses sent at once would otherwise all pass `wait()` before the first was
    // counted. Given back as soon as it answers: a guess is then counted by the admin-key check
    // below (in the same synchronous step, for a credential that is not a token), the scraper's
    // own token not at all.
    // An unguessable metrics token is compared while blocked too, as an unguessable admin key
    // is (checkAdminKey): a neighbour's wrong keys must not stop the scrape.
    if (
      credential &&
      guard.foreignPage === undefined &&
      guard.wait() > 0 &&
      unguessable(c.env.METRICS_TOKEN) &&
      (await isMetricsToken(c.env, credential))
    ) {
      return next()
    }
    if (credential && guard.foreignPage === undefined && guard.wait() === 0) {
      const compared = guard.comparing()
      let isMetrics: boolean
      try {
        isMetrics = await isMetricsToken(c.env, credential)
      } finally {
        compared.right()
      }
      if (isMetrics) return next()
      // There, a credential shaped like a token counts only when the admin key has that shape:
      // a metrics token of that shape would be guessed in it, uncounted.
      const { METRICS_TOKEN } = c.env
      if (
        METRICS_TOKEN !== undefined &&
        isTokenShaped(METRICS_TOKEN) &&
        isTokenShaped(credential) &&
        !adminKeyTokenShaped(c.env)
      ) {
        await guard.wrong()
      }
    }
    const p = await principalOf(c)
    if (p.kind !== 'admin') {
      throw new ApiError('forbidden', '/metrics needs the metrics token or the admin key')
    }
    await next()
  })
