import { env } from 'cloudflare:workers'
import { importJWK, SignJWT, generateKeyPair } from 'jose'
import { describe, expect, it, onTestFinished } from 'vitest'
import { jwksTimings, loseJwksFetchForTest } from '../../workers/lib/auth.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { createBoard, pg } from './helpers/boards.ts'
import { createQueue } from './helpers/matchmaking.ts'
import { errorLines, logLines } from './helpers/logs.ts'
import { reportedSettings } from '../../workers/lib/misconfigured.ts'
import {
  ADMIN_KEY_GUESSES_PER_MINUTE,
  ADMIN_KEY_GUESSES_PER_NETWORK_MINUTE,
} from '../../workers/middleware/auth.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  clientAddress,
  json,
  newGuest,
  problem,
  signInsOverTheLimit,
} from './helpers/http.ts'

const testEnv = env as unknown as Record<string, string>

/** A route any player may call but that needs a valid principal: the admin route answers 403 for players. */
const ADMIN_PROBE = '/v1/admin/players/someone'

async function hs256(
  claims: Record<string, unknown>,
  opts: {
    secret?: string
    exp?: number
    aud?: string
    iss?: string
    sub?: string
    iat?: boolean
  } = {},
) {
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(opts.sub ?? 'player-1')
    .setIssuer(opts.iss ?? 'nexus')
    .setAudience(opts.aud ?? 'nexus:player')
    .setExpirationTime(opts.exp ?? now + 600)
  return (opts.iat === false ? jwt : jwt.setIssuedAt(now)).sign(
    new TextEncoder().encode(opts.secret ?? testEnv.AUTH_SECRET),
  )
}

async function idpToken(
  opts: { aud?: string; iss?: string; exp?: number; sub?: string; iat?: boolean } = {},
) {
  const key = await importJWK(JSON.parse(testEnv.TEST_IDP_PRIVATE_JWK!), 'RS256')
  const now = Math.floor(Date.now() / 1000)
  const jwt = new SignJWT({})
    .setProtectedHeader({ alg: 'RS256', kid: 'test-idp-key' })
    .setSubject(opts.sub ?? 'idp|user-42')
    .setIssuer(opts.iss ?? 'https://idp.test')
    .setAudience(opts.aud ?? 'nexus-game')
    .setExpirationTime(opts.exp ?? now + 600)
  return (opts.iat === false ? jwt : jwt.setIssuedAt(now)).sign(key)
}

/** GET /v1/players/me/... does not exist yet in the foundation; the admin probe tells apart 401 (who?) from 403 (not allowed). */
async function probe(credential: string | null): Promise<Response> {
  const init = credential === null ? {} : bearer(credential)
  return call(ADMIN_PROBE, {
    ...init,
    method: 'PUT',
    headers: { ...(init.headers ?? {}), 'content-type': 'application/json' },
    body: '{"name":"x"}',
  })
}

/** The admin probe's request, from client address `ip`. */
function probeFrom(ip: string, credential: string): RequestInit {
  return {
    method: 'PUT',
    headers: {
      authorization: `Bearer ${credential}`,
      'content-type': 'application/json',
      'cf-connecting-ip': ip,
    },
    body: '{"name":"x"}',
  }
}

async function statusFor(credential: string | null) {
  return problem(await probe(credential))
}

/** This isolate's count of admin keys refused unread (`nexus_rate_limited_total`). */
function adminKeyRefusals(): number {
  const family = localFamilies().find((f) => f.name === 'nexus_rate_limited_total')
  const series = family?.series.find((x) => x.labels.limit === 'admin-key')
  return series && 'value' in series ? series.value : 0
}

describe('guest auth', () => {
  it('issues a token and the same player for the same deviceId, which Neon holds only hashed', async () => {
    const deviceId = `device-${crypto.randomUUID()}`
    const a = await call('/v1/auth/guest', json('POST', { deviceId }))
    const b = await call('/v1/auth/guest', json('POST', { deviceId }))
    const stored = await pg()`select device_id from players where device_id = ${deviceId}
                                or device_id = encode(sha256(convert_to(${deviceId}, 'UTF8')), 'hex')`
    expect(stored).toHaveLength(1)
    expect(stored[0]!.device_id).not.toBe(deviceId)
    expect(stored[0]!.device_id).toMatch(/^[0-9a-f]{64}$/)
    expect(a.status).toBe(200)
    const ja = (await a.json()) as { token: string; playerId: string; expiresAt: number }
    const jb = (await b.json()) as { token: string; playerId: string }
    expect(ja.playerId).toMatch(/^g_/)
    expect(jb.playerId).toBe(ja.playerId)
    expect(ja.expiresAt).toBeGreaterThan(Date.now())
    const other = (await (
      await call('/v1/auth/guest', json('POST', { deviceId: `device-${crypto.randomUUID()}` }))
    ).json()) as { playerId: string }
    expect(other.playerId).not.toBe(ja.playerId)
  })

  it('issues guest tokens living TOKEN_TTL_SECONDS (a day by default; 60 s to 30 days, anything else the default), as `exp - iat` and `expiresIn` say', async () => {
    const lifetime = async (ttl: string | undefined) => {
      const res = await callWithEnv(
        ttl === undefined ? {} : { TOKEN_TTL_SECONDS: ttl },
        '/v1/auth/guest',
        json('POST', { deviceId: `device-${crypto.randomUUID()}` }),
      )
      expect(res.status).toBe(200)
      const { token, expiresIn } = (await res.json()) as { token: string; expiresIn: number }
      const claims = JSON.parse(atob(token.split('.')[1]!.replace(/-/g, '+').replace(/_/g, '/')))
      // What is left of it when answered, in whole seconds.
      expect(claims.exp - claims.iat - expiresIn).toBeGreaterThanOrEqual(0)
      expect(claims.exp - claims.iat - expiresIn).toBeLessThanOrEqual(1)
      return claims.exp - claims.iat
    }
    expect(await lifetime(undefined)).toBe(86_400)
    expect(await lifetime('3600')).toBe(3600)
    expect(await lifetime('60')).toBe(60)
    expect(await lifetime('2592000')).toBe(2_592_000)
    for (const bad of ['59', '2592001', '1.5', 'abc']) expect(await lifetime(bad)).toBe(86_400)
  })

  it('concurrent first logins of one device converge on one player', async () => {
    const deviceId = `device-${crypto.randomUUID()}`
    const results = await Promise.all(
      Array.from({ length: 8 }, () =>
        call('/v1/auth/guest', json('POST', { deviceId })).then(async (r) => ({
          status: r.status,
          ...((await r.json()) as { playerId: string }),
        })),
      ),
    )
    for (const r of results) expect(r).toMatchObject({ status: 200, playerId: /^g_/ })
    expect(new Set(results.map((r) => r.playerId)).size).toBe(1)
  })

  it('a guest token is accepted as a player and refused on admin routes with 403', async () => {
    const { token } = await newGuest()
    const p = await statusFor(token)
    expect(p).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
  })

  it('can be switched off', async () => {
    const p = await problem(
      await callWithEnv(
        { GUEST_AUTH: 'off' },
        '/v1/auth/guest',
        json('POST', { deviceId: 'device-off-1' }),
      ),
    )
    expect(p).toMatchObject({ status: 403, type: 'urn:nexus:problem:guest-auth-disabled' })
  })

  it('stays off when GUEST_AUTH is spelled "OFF", "false", "0" or "no": only a clear "on" leaves it open', async () => {
    const guest = (value: string) =>
      callWithEnv(
        { GUEST_AUTH: value },
        '/v1/auth/guest',
        json('POST', { deviceId: `device-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': clientAddress(),
        }),
      )
    for (const off of ['OFF', 'Off', ' off', 'false', '0', 'no', 'disabled']) {
      expect(await problem(await guest(off)), off).toMatchObject({
        status: 403,
        type: 'urn:nexus:problem:guest-auth-disabled',
      })
    }
    for (const on of ['ON', 'true', '1', 'yes']) {
      const res = await guest(on)
      expect(res.status, on).toBe(200)
      await res.body?.cancel()
    }
  })

  it('is rate limited per client address with Retry-After; a refused sign-in makes no player', async () => {
    const ip = clientAddress()
    const { refused, limited } = await signInsOverTheLimit(ip)
    expect(refused.length).toBeGreaterThanOrEqual(1)
    expect(refused.length).toBeLessThanOrEqual(4)
    const p = await problem(limited!)
    expect(p).toMatchObject({ status: 429, type: 'urn:nexus:problem:rate-limited' })
    expect(Number(limited!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    expect(Number(limited!.headers.get('retry-after'))).toBeLessThanOrEqual(60)
    const made = await pg()`select 1 from players where device_id in (
      select encode(sha256(convert_to(d, 'UTF8')), 'hex') from unnest(${refused}::text[]) d)`
    expect(made).toEqual([])
  })

  it('does not count requests without an address (made inside the runtime: a service binding, a test), which would otherwise all share one count', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await callWithEnv(
        { GUEST_AUTH_PER_MINUTE: '1' },
        '/v1/auth/guest',
        json('POST', { deviceId: `no-address-${crypto.randomUUID()}` }),
      )
      expect(res.status).toBe(200)
      await res.body?.cancel()
    }
  })

  it("counts Workers on other zones, which all arrive from one Cloudflare address, by their zone: one zone's sign-ins leave another's allowance whole", async () => {
    // The count is by the minute: its turn between the sign-ins would let them all through.
    await clearOfMinuteTurn(5_000)
    const signIn = (zone: string) =>
      callWithEnv(
        { GUEST_AUTH_PER_MINUTE: '3' },
        '/v1/auth/guest',
        json('POST', { deviceId: `rlz-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': '2a06:98c0:3600::103',
          'cf-worker': zone,
        }),
      )
    const [stranger, studio] = [
      `evil-${crypto.randomUUID()}.example`,
      `game-${crypto.randomUUID()}.example`,
    ]
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) {
      const res = await signIn(stranger)
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(1)
    const res = await signIn(studio)
    expect(res.status).toBe(200)
    await res.body?.cancel()
  })

  it('a malformed sign-in (422) costs the address none of its GUEST_AUTH_PER_MINUTE', async () => {
    await clearOfMinuteTurn(5_000)
    const ip = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}::5`
    const signIn = (deviceId: unknown) =>
      callWithEnv(
        { GUEST_AUTH_PER_MINUTE: '2' },
        '/v1/auth/guest',
        json('POST', { deviceId }, undefined, { 'cf-connecting-ip': ip }),
      )
    for (const bad of ['x', 42, 'y'.repeat(10_000)]) {
      const res = await signIn(bad)
      expect(res.status).toBe(422)
      await res.body?.cancel()
    }
    const statuses: number[] = []
    for (let i = 0; i < 3; i++) {
      const res = await signIn(`ok-${crypto.randomUUID()}`)
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses).toEqual([200, 200, 429])
  })

  it('counts an IPv6 client by its /64: rotating addresses inside it does not reset the limit', async () => {
    await clearOfMinuteTurn(5_000)
    const prefix = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}:7`
    const statuses: number[] = []
    for (let i = 1; i <= 6; i++) {
      const res = await callWithEnv(
        { GUEST_AUTH_PER_MINUTE: '3' },
        '/v1/auth/guest',
        json('POST', { deviceId: `rl6-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': `${prefix}::${i.toString(16)}`,
        }),
      )
      statuses.push(res.status)
      await res.body?.cancel()
    }
    // Six addresses, one /64, a limit of 3 (a window boundary may reset the count once).
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThanOrEqual(1)
  })

  it("counts a /48's /64s together too, at ten times one /64's allowance: rotating /64s does not escape it", async () => {
    const network = `2001:db8:${Math.floor(Math.random() * 0xffff).toString(16)}`
    const statuses: number[] = []
    // 45 sign-ins, each from a /64 of its own in one /48; a /64 may make 2, the /48 20.
    for (let i = 1; i <= 45; i++) {
      const res = await callWithEnv(
        { GUEST_AUTH_PER_MINUTE: '2' },
        '/v1/auth/guest',
        json('POST', { deviceId: `rl48-${crypto.randomUUID()}` }, undefined, {
          'cf-connecting-ip': `${network}:${i.toString(16)}::1`,
        }),
      )
      statuses.push(res.status)
      await res.body?.cancel()
    }
    // A window boundary may reset the count once: 40 at most then, and still some refused.
    expect(statuses.filter((s) => s === 200).length).toBeLessThanOrEqual(40)
    expect(statuses).toContain(429)
  })
})

describe('bad credentials, one by one', () => {
  it('missing token → 401 with WWW-Authenticate', async () => {
    const res = await call(ADMIN_PROBE, json('PUT', { name: 'x' }))
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="nexus"')
    expect(await problem(res)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('a malformed Authorization header → 401', async () => {
    const res = await call(ADMIN_PROBE, {
      method: 'PUT',
      headers: { authorization: 'Basic Zm9vOmJhcg==', 'content-type': 'application/json' },
      body: '{}',
    })
    expect(await problem(res)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('a bearer credential that is no token, on a player route → 401 saying so, not naming it an admin key', async () => {
    const p = await problem(await call('/v1/parties/me', bearer('not-a-jwt')))
    expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    expect(p.detail).toBe('The bearer credential is neither a token (a JWT) nor the admin key')
  })

  it('forged token (wrong secret) → 401 with WWW-Authenticate', async () => {
    const res = await probe(await hs256({}, { secret: 'not-the-secret-at-all-0123456789' }))
    expect(res.headers.get('www-authenticate')).toBe('Bearer realm="nexus"')
    expect(await problem(res)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it("a token whose header's alg is no string (a scanner's) → 401, logged as nothing wrong with the server", async () => {
    const errors = errorLines()
    const encode = (v: unknown) =>
      btoa(JSON.stringify(v)).replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')
    for (const alg of [1, null, { a: 1 }]) {
      const res = await probe(`${encode({ alg })}.${encode({})}.`)
      expect(await problem(res)).toMatchObject({
        status: 401,
        type: 'urn:nexus:problem:unauthorized',
        detail: 'The token header is not valid',
      })
    }
    expect(errors).toEqual([])
  })

  it('tampered payload → 401', async () => {
    const token = await hs256({})
    const [h, , s] = token.split('.')
    const payload = btoa(
      JSON.stringify({ sub: 'someone-else', iss: 'nexus', aud: 'nexus:player', exp: 9999999999 }),
    )
      .replace(/=+$/, '')
      .replace(/\+/g, '-')
      .replace(/\//g, '_')
    expect(await statusFor(`${h}.${payload}.${s}`)).toMatchObject({ status: 401 })
  })

  it('alg "none" → 401', async () => {
    const enc = (o: unknown) => btoa(JSON.stringify(o)).replace(/=+$/, '')
    const token = `${enc({ alg: 'none' })}.${enc({ sub: 'x', iss: 'nexus', aud: 'nexus:player', exp: 9999999999 })}.`
    expect(await statusFor(token)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('expired token → 401 token-expired; within the clock-skew tolerance → accepted', async () => {
    const now = Math.floor(Date.now() / 1000)
    expect(await statusFor(await hs256({}, { exp: now - 120 }))).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:token-expired',
    })
    // Expired 10 s ago, within the 30 s tolerance: authenticated (then 403 on the admin route).
    expect(await statusFor(await hs256({}, { exp: now - 10 }))).toMatchObject({ status: 403 })
  })

  it('a token that expires more than 30 days ahead → 401 naming the limit; 30 days → accepted', async () => {
    const now = Math.floor(Date.now() / 1000)
    const tenYears = await statusFor(await hs256({}, { exp: now + 10 * 365 * 86_400 }))
    expect(tenYears).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    expect(tenYears.detail).toContain('30 days')
    expect(await statusFor(await hs256({}, { exp: now + 31 * 86_400 }))).toMatchObject({
      status: 401,
    })
    // An identity provider's token: the same limit.
    expect(await statusFor(await idpToken({ exp: now + 30 * 86_400 }))).toMatchObject({
      status: 403,
    })
    expect(await statusFor(await idpToken({ exp: now + 31 * 86_400 }))).toMatchObject({
      status: 401,
    })
    expect(await statusFor(await hs256({}, { exp: now + 30 * 86_400 }))).toMatchObject({
      status: 403,
    })
  })

  it('a token issued in the future (an iat ahead of the clock, or in milliseconds) or living longer than 30 days (exp - iat) → 401, whatever is left of it: it would get past the erasure checks', async () => {
    const now = Math.floor(Date.now() / 1000)
    const refused = async (token: string, words: string) => {
      const p = await statusFor(token)
      expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
      expect(p.detail).toContain(words)
    }
    // A game server stamping its tokens in milliseconds, or an issuer's clock an hour fast.
    await refused(await hs256({ iat: Date.now() }, { iat: false }), 'issued in the future')
    await refused(await hs256({ iat: now + 3600 }, { iat: false }), 'issued in the future')
    // Forty days long, presented with ten left: as long-lived as it ever was.
    await refused(
      await hs256({ iat: now - 30 * 86_400 }, { iat: false, exp: now + 10 * 86_400 }),
      'lives too long',
    )
    // Within the clock skew (an issuer 20 s fast), and thirty days long: accepted (then 403 on
    // the admin route).
    expect(await statusFor(await hs256({ iat: now + 20 }, { iat: false }))).toMatchObject({
      status: 403,
    })
    expect(
      await statusFor(await hs256({ iat: now - 86_400 }, { iat: false, exp: now + 29 * 86_400 })),
    ).toMatchObject({ status: 403 })
  })

  it('wrong audience → 401', async () => {
    expect(await statusFor(await hs256({}, { aud: 'nexus:session' }))).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('wrong issuer → 401', async () => {
    expect(await statusFor(await hs256({}, { iss: 'someone' }))).toMatchObject({ status: 401 })
  })

  it("a game server's token without iat → 401 naming it: it could not be told from one issued before its player was erased", async () => {
    const p = await statusFor(await hs256({}, { iat: false }))
    expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    expect(p.body.detail).toContain('"iat"')
  })

  it('an AUTH_SECRET under 32 bytes signs nothing and accepts nothing: 503 naming it, never a token', async () => {
    const short = { AUTH_SECRET: 'only-thirty-one-bytes-long-0123', LOG_LEVEL: 'silent' }
    const deviceId = `short-secret-${crypto.randomUUID()}`
    const guest = await callWithEnv(short, '/v1/auth/guest', json('POST', { deviceId }))
    const refused = await problem(guest)
    expect(refused).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(refused.body.detail).toContain('AUTH_SECRET is too short')
    // Refused, it made no player for the device.
    const [made] =
      await pg()`select count(*)::int as n from players where device_id = encode(sha256(${deviceId}::bytea), 'hex')`
    expect(made!.n).toBe(0)
    // A token signed with that secret (by a game server, say) is not accepted either.
    const forged = await hs256({}, { secret: short.AUTH_SECRET })
    const submit = await callWithEnv(short, ADMIN_PROBE, json('PUT', { name: 'x' }, forged))
    expect(await problem(submit)).toMatchObject({ status: 503 })
    // And the deployment is not ready, so a health check holds a rollout with it back.
    const ready = await problem(await callWithEnv(short, '/ready'))
    expect(ready).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(ready.body.detail).toContain('AUTH_SECRET is too short')
  })

  it('without AUTH_SECRET, a player token is 503 naming it, not a 401 that would have the client sign its player out', async () => {
    const token = await hs256({})
    const res = await callWithEnv(
      { AUTH_SECRET: '', LOG_LEVEL: 'silent' },
      ADMIN_PROBE,
      json('PUT', { name: 'x' }, token),
    )
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.detail).toContain('AUTH_SECRET is not configured')
  })

  it('without ADMIN_KEY, an admin call is 503 naming it, not a 401 that reads as a wrong key, and it is no guess: the address is not locked out once the key is set', async () => {
    await clearOfMinuteTurn()
    const ip = clientAddress()
    const put = (overrides: Record<string, string | undefined>, credential: string) =>
      callWithEnv(overrides, ADMIN_PROBE, probeFrom(ip, credential))
    reportedSettings.clear()
    const lines = logLines('warn')
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      const res = await put({ ADMIN_KEY: undefined }, ADMIN_KEY)
      const p = await problem(res)
      expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
      expect(p.body.detail).toContain('ADMIN_KEY is not configured')
    }
    // The operator learns of it at `error`, once (each 503's request line is a `warn`).
    expect(lines.filter((l) => l.level === 'error')).toEqual([
      expect.objectContaining({ msg: 'a setting is missing or wrong', setting: 'ADMIN_KEY' }),
    ])
    // Once it is set, the same address's key is compared: none of those calls was a guess.
    expect((await put({}, ADMIN_KEY)).status).toBe(200)
  })

  it('without ADMIN_KEY, a credential elsewhere is judged as ever: a player route answers a wrong one 401, and wrong metrics tokens are counted toward the lockout', async () => {
    await clearOfMinuteTurn()
    const ip = clientAddress()
    // A short metrics token: the block holds it back too (an unguessable one passes, below).
    const noAdminKey = {
      ADMIN_KEY: undefined,
      METRICS_TOKEN: `metrics-${crypto.randomUUID().slice(0, 8)}`,
    }
    const mine = await callWithEnv(noAdminKey, '/v1/players/me', bearer('garbage-without-dots'))
    expect(await problem(mine)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    const scrape = (token: string) =>
      callWithEnv(noAdminKey, '/metrics', {
        headers: { authorization: `Bearer ${token}`, 'cf-connecting-ip': ip },
      })
    for (let i = 0; i < ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await scrape(`guess-${i}`)).status).toBe(401)
    }
    // The guess past the allowance is still compared; from then on none is, the right one too.
    expect((await scrape('guess-last')).status).toBe(401)
    expect((await scrape(noAdminKey.METRICS_TOKEN)).status).toBe(429)
  })

  it('wrong admin key → 401 with WWW-Authenticate, right one → 200', async () => {
    const wrong = await probe('not-the-admin-key')
    expect(wrong.headers.get('www-authenticate')).toBe('Bearer realm="nexus"')
    expect(await problem(wrong)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    expect(await statusFor(ADMIN_KEY + 'x')).toMatchObject({ status: 401 })
    const ok = await call(ADMIN_PROBE, json('PUT', { name: 'x' }, ADMIN_KEY))
    expect(ok.status).toBe(200)
  })

  it('an address that sent 20 wrong admin keys in a minute gets 429 for its keys, right or wrong; its players and other addresses do not', async () => {
    await clearOfMinuteTurn()
    const from = (ip: string, credential: string) => call(ADMIN_PROBE, probeFrom(ip, credential))
    const ip = clientAddress()
    for (let i = 0; i < ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await from(ip, `guess-${i}`)).status).toBe(401)
    }
    // The guess past the allowance is still compared (and wrong); from then on none is.
    expect((await from(ip, 'guess-last')).status).toBe(401)
    const refusedBefore = adminKeyRefusals()
    const blocked = await from(ip, ADMIN_KEY)
    expect(blocked.status).toBe(429)
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(await problem(blocked)).toMatchObject({ type: 'urn:nexus:problem:rate-limited' })
    expect((await from(ip, 'guess-more')).status).toBe(429)
    // Each key refused unread is counted, not only the block's start.
    expect(adminKeyRefusals() - refusedBefore).toBe(2)
    // Players at that address are not held up, and an expired token is still told so (renewal).
    expect((await from(ip, await hs256({}))).status).toBe(403)
    const expired = await from(ip, await hs256({}, { exp: Math.floor(Date.now() / 1000) - 120 }))
    expect(await problem(expired)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:token-expired',
    })
    // Another address still gets its key compared.
    expect((await from(clientAddress(), ADMIN_KEY)).status).toBe(200)
  })

  it('an unguessable admin key or metrics token (32 characters or more) still passes from a blocked address: wrong keys there stay 429, uncounted', async () => {
    await clearOfMinuteTurn()
    const strong = {
      ADMIN_KEY: crypto.randomUUID().replaceAll('-', '') + crypto.randomUUID().replaceAll('-', ''),
      METRICS_TOKEN: `metrics-${crypto.randomUUID()}-${crypto.randomUUID()}`,
    }
    const from = (ip: string, credential: string) =>
      callWithEnv(strong, ADMIN_PROBE, probeFrom(ip, credential))
    const ip = clientAddress()
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await from(ip, `guess-${i}`)).status).toBe(401)
    }
    const refusedBefore = adminKeyRefusals()
    expect((await from(ip, 'guess-more')).status).toBe(429)
    // The game server's key at that address: compared, and right.
    expect((await from(ip, strong.ADMIN_KEY)).status).toBe(200)
    expect((await from(ip, strong.ADMIN_KEY + 'x')).status).toBe(429)
    const scrape = await callWithEnv(strong, '/metrics', {
      headers: { authorization: `Bearer ${strong.METRICS_TOKEN}`, 'cf-connecting-ip': ip },
    })
    expect(scrape.status).toBe(200)
    // Only the two wrong keys were refused; the right ones were not counted as refusals.
    expect(adminKeyRefusals() - refusedBefore).toBe(2)
    // A short key keeps the block whole: its right key is refused too (the tests around).
    expect(ADMIN_KEY.length).toBeLessThan(32)
  })

  it("an IPv6 /48's /64s together may send ten times one address's wrong admin keys a minute; then keys from anywhere in it are 429, other networks' are not", async () => {
    // 220 keys one after another, each two Redis round trips: slow ones take seconds.
    await clearOfMinuteTurn(30_000)
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const network = `2001:db8:${hex()}`
    const from = (ip: string, credential: string) =>
      call(ADMIN_PROBE, json('PUT', { name: 'x' }, credential, { 'cf-connecting-ip': ip }))
    const statuses: number[] = []
    // Each /64 stays within its own allowance; together they pass the network's.
    for (
      let sub = 0;
      sub < ADMIN_KEY_GUESSES_PER_NETWORK_MINUTE / ADMIN_KEY_GUESSES_PER_MINUTE + 1;
      sub++
    ) {
      for (let i = 0; i < ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
        statuses.push((await from(`${network}:${sub.toString(16)}::1`, `guess-${sub}-${i}`)).status)
      }
    }
    // The allowance and the guess past it are compared (401); none after.
    const compared = ADMIN_KEY_GUESSES_PER_NETWORK_MINUTE + 1
    expect(statuses.slice(0, compared)).toEqual(Array(compared).fill(401))
    expect(statuses.slice(compared).every((s) => s === 429)).toBe(true)
    expect((await from(`${network}:ffff::1`, ADMIN_KEY)).status).toBe(429)
    expect((await from(`2001:db8:${hex()}:1::1`, ADMIN_KEY)).status).toBe(200)
  })

  it('a burst of wrong admin keys sent at once is compared no further than the allowance', async () => {
    await clearOfMinuteTurn()
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const ip = `2001:db8:${hex()}:${hex()}::1`
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        call(ADMIN_PROBE, json('PUT', { name: 'x' }, `burst-${i}`, { 'cf-connecting-ip': ip })),
      ),
    )
    const statuses = answers.map((r) => r.status)
    // As one after another: the allowance and the guess that reaches it are compared (401), the
    // rest refused (429). A burst that straddles a minute's end may be compared that many times
    // in each of the two minutes, and no more.
    const compared = statuses.filter((s) => s === 401).length
    expect(compared).toBeGreaterThanOrEqual(ADMIN_KEY_GUESSES_PER_MINUTE + 1)
    expect(compared).toBeLessThanOrEqual(2 * (ADMIN_KEY_GUESSES_PER_MINUTE + 1))
    expect(statuses.filter((s) => s === 429).length).toBe(60 - compared)
    // A game server's admin key, sent many at once from one address, is never held up by it.
    const server = `2001:db8:${hex()}:${hex()}::2`
    const right = await Promise.all(
      Array.from({ length: 30 }, () =>
        call(ADMIN_PROBE, json('PUT', { name: 'x' }, ADMIN_KEY, { 'cf-connecting-ip': server })),
      ),
    )
    expect(right.map((r) => r.status)).toEqual(Array(30).fill(200))
  })

  it('a burst of wrong metrics tokens sent at once is compared no further than the allowance; the scraper and the admin key are never held up', async () => {
    await clearOfMinuteTurn()
    const hex = () => Math.floor(Math.random() * 0xffff).toString(16)
    const ip = `2001:db8:${hex()}:${hex()}::3`
    const scrape = (credential: string, from: string) =>
      call('/metrics', {
        headers: { authorization: `Bearer ${credential}`, 'cf-connecting-ip': from },
      })
    const answers = await Promise.all(
      Array.from({ length: 60 }, (_, i) => scrape(`burst-${i}`, ip)),
    )
    const statuses = answers.map((r) => r.status)
    // Compared (401) up to the allowance and the guess that reaches it, in each minute a burst
    // may straddle; refused (429) past it. (The comparison is counted before it starts, so this
    // holds however long a comparison takes; here it settles fast enough to hold either way.)
    const compared = statuses.filter((s) => s === 401).length
    expect(compared).toBeGreaterThanOrEqual(1)
    expect(compared).toBeLessThanOrEqual(2 * (ADMIN_KEY_GUESSES_PER_MINUTE + 1))
    expect(statuses.filter((s) => s === 429).length).toBe(60 - compared)
    // A scraper's token and the admin key, many at once from one address, all get through.
    const scraper = `2001:db8:${hex()}:${hex()}::4`
    const right = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        scrape(i % 2 === 0 ? testEnv.METRICS_TOKEN! : ADMIN_KEY, scraper),
      ),
    )
    expect(right.map((r) => r.status)).toEqual(Array(60).fill(200))
  })

  it('Workers on other zones, which all arrive from one Cloudflare address, are counted by their zone; a client naming a zone is counted by its address', async () => {
    await clearOfMinuteTurn()
    const from = (headers: Record<string, string>, credential: string, path = ADMIN_PROBE) =>
      call(path, {
        method: path === ADMIN_PROBE ? 'PUT' : 'GET',
        headers: {
          authorization: `Bearer ${credential}`,
          'content-type': 'application/json',
          ...headers,
        },
        ...(path === ADMIN_PROBE ? { body: '{"name":"x"}' } : {}),
      })
    const workerIp = '2a06:98c0:3600::103'
    const stranger = {
      'cf-connecting-ip': workerIp,
      'cf-worker': `evil-${crypto.randomUUID()}.example`,
    }
    const studio = {
      'cf-connecting-ip': workerIp,
      'cf-worker': `game-${crypto.randomUUID()}.example`,
    }
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await from(stranger, `guess-${i}`)).status).toBe(401)
    }
    expect((await from(stranger, ADMIN_KEY)).status).toBe(429)
    expect((await from(studio, ADMIN_KEY)).status).toBe(200)
    // From an ordinary address a CF-Worker header names nothing: a new value each time does not
    // start a new count.
    const ip = clientAddress()
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      const res = await from({ 'cf-connecting-ip': ip, 'cf-worker': `z${i}.example` }, `g-${i}`)
      expect(res.status).toBe(401)
    }
    expect(
      (await from({ 'cf-connecting-ip': ip, 'cf-worker': 'fresh.example' }, ADMIN_KEY)).status,
    ).toBe(429)
    // Nor is the metrics token compared for a blocked address.
    expect(
      (await from({ 'cf-connecting-ip': ip }, testEnv.METRICS_TOKEN!, '/metrics')).status,
    ).toBe(429)
  })

  it('guesses at a metrics token shaped like a JWT count toward the lockout too', async () => {
    await clearOfMinuteTurn()
    const METRICS_TOKEN = 'mmmm.nnnn.oooo'
    const ip = clientAddress()
    const scrape = (token: string) =>
      callWithEnv({ METRICS_TOKEN }, '/metrics', {
        headers: { authorization: `Bearer ${token}`, 'cf-connecting-ip': ip },
      })
    // Each a wrong token-shaped guess (401 as a token that fails verification).
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await scrape(`mmmm.nnnn.${i}`)).status).toBe(401)
    }
    // Past the allowance the metrics token itself is no longer compared from that address: it is
    // answered as the token it looks like, which fails (a token's refusal is never a 429).
    expect((await scrape(METRICS_TOKEN)).status).toBe(401)
    // Another address still scrapes with it.
    const elsewhere = await callWithEnv({ METRICS_TOKEN }, '/metrics', {
      headers: { authorization: `Bearer ${METRICS_TOKEN}`, 'cf-connecting-ip': '192.0.2.250' },
    })
    expect(elsewhere.status).toBe(200)
  })

  it('an admin key shaped like a JWT still works as the admin key; one character off → 401', async () => {
    // Tokens are verified before the key comparison, so this shape takes the other path.
    const jwtShapedKey = 'aaaa.bbbb.cccc'
    const put = (key: string) =>
      callWithEnv({ ADMIN_KEY: jwtShapedKey }, ADMIN_PROBE, json('PUT', { name: 'x' }, key))
    expect((await put(jwtShapedKey)).status).toBe(200)
    expect(await problem(await put('aaaa.bbbb.cccd'))).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    // A player token is still a player there, not an admin.
    const { token } = await newGuest()
    expect((await put(token)).status).toBe(403)
  })

  it('an admin key shaped like a JWT: wrong guesses in that shape count toward the lockout too', async () => {
    await clearOfMinuteTurn()
    const jwtShapedKey = 'aaaa.bbbb.cccc'
    const ip = clientAddress()
    const put = (key: string, from: string) =>
      callWithEnv(
        { ADMIN_KEY: jwtShapedKey },
        ADMIN_PROBE,
        json('PUT', { name: 'x' }, key, { 'cf-connecting-ip': from }),
      )
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await put(`aaaa.bbbb.g${i}`, ip)).status).toBe(401)
    }
    // Past the allowance the key is not compared from there: the right one is refused (as a
    // token, which it is shaped like), and counted as refused; from another address it works.
    const refusedBefore = adminKeyRefusals()
    expect((await put(jwtShapedKey, ip)).status).toBe(401)
    expect(adminKeyRefusals() - refusedBefore).toBe(1)
    expect((await put(jwtShapedKey, clientAddress())).status).toBe(200)
  })
})

describe('rotating secrets', () => {
  const probeWith = (overrides: Record<string, string>, credential: string) =>
    callWithEnv(
      { LOG_LEVEL: 'silent', ...overrides },
      ADMIN_PROBE,
      json('PUT', { name: 'x' }, credential),
    )

  it('AUTH_SECRET_PREVIOUS: tokens the replaced secret signed are taken while it is set, new ones are signed with AUTH_SECRET alone; a previous secret under 32 bytes is ignored', async () => {
    const replaced = testEnv.AUTH_SECRET!
    const current = `rotated-${crypto.randomUUID()}-${crypto.randomUUID()}`
    const rotating = { AUTH_SECRET: current, AUTH_SECRET_PREVIOUS: replaced }
    const before = await hs256({})
    // A player's token (403 here: a player, not the admin), not a forgery (401).
    expect((await problem(await probeWith(rotating, before))).status).toBe(403)
    const stranger = await hs256({}, { secret: `someone-else-${crypto.randomUUID()}` })
    expect((await problem(await probeWith(rotating, stranger))).status).toBe(401)
    // An expired token of the replaced secret is refused as expired, not taken.
    const expired = await hs256({}, { exp: Math.floor(Date.now() / 1000) - 120 })
    const old = await problem(await probeWith(rotating, expired))
    expect(old).toMatchObject({ status: 401 })
    expect(old.body.detail).toContain('expired')
    // Signed in during the rotation: with AUTH_SECRET, so taken once the old one is gone.
    const deviceId = `rotation-${crypto.randomUUID()}`
    const signedIn = await callWithEnv(rotating, '/v1/auth/guest', json('POST', { deviceId }))
    expect(signedIn.status).toBe(200)
    const { token } = (await signedIn.json()) as { token: string }
    expect((await problem(await probeWith({ AUTH_SECRET: current }, token))).status).toBe(403)
    expect((await problem(await probeWith({ AUTH_SECRET: replaced }, token))).status).toBe(401)
    // Once the previous secret is removed, its tokens are refused.
    expect((await problem(await probeWith({ AUTH_SECRET: current }, before))).status).toBe(401)
    // Too short to have signed anything: ignored.
    const short = { AUTH_SECRET: current, AUTH_SECRET_PREVIOUS: 'only-thirty-one-bytes-long-0123' }
    const shortSigned = await hs256({}, { secret: short.AUTH_SECRET_PREVIOUS })
    expect((await problem(await probeWith(short, shortSigned))).status).toBe(401)
  })

  it('an address past its wrong admin keys is refused a short ADMIN_KEY_PREVIOUS, right or not (429), while an unguessable ADMIN_KEY still passes: the block answers no guess at the old key', async () => {
    await clearOfMinuteTurn()
    const ip = clientAddress()
    const current = `admin-${crypto.randomUUID()}-${crypto.randomUUID()}`
    const short = `old-${crypto.randomUUID().slice(0, 8)}`
    const rotating = { ADMIN_KEY: current, ADMIN_KEY_PREVIOUS: short, LOG_LEVEL: 'silent' }
    const put = (credential: string) =>
      callWithEnv(rotating, ADMIN_PROBE, probeFrom(ip, credential))
    expect((await put(short)).status).toBe(200)
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await put(`guess-${i}`)).status).toBe(401)
    }
    expect((await problem(await put(short))).status).toBe(429)
    expect((await put(current)).status).toBe(200)
  })

  it('with a token-shaped ADMIN_KEY_PREVIOUS, failed tokens count as wrong admin keys: past the allowance, they are refused unread', async () => {
    await clearOfMinuteTurn()
    const ip = clientAddress()
    const current = `admin-${crypto.randomUUID()}-${crypto.randomUUID()}`
    // Short enough to be guessed (under 32 characters): only the count keeps it from that.
    const tokenShaped = `aaaa.${crypto.randomUUID().slice(0, 8)}.bbbb`
    const rotating = { ADMIN_KEY: current, ADMIN_KEY_PREVIOUS: tokenShaped, LOG_LEVEL: 'silent' }
    const put = (credential: string) =>
      callWithEnv(rotating, ADMIN_PROBE, probeFrom(ip, credential))
    for (let i = 0; i <= ADMIN_KEY_GUESSES_PER_MINUTE; i++) {
      expect((await put(`aaaa.guess-${i}.bbbb`)).status).toBe(401)
    }
    // Counted: the right previous key is refused with the rest now (it is no longer compared).
    expect((await put(tokenShaped)).status).not.toBe(200)
  })

  it('ADMIN_KEY_PREVIOUS: the replaced admin key is taken while it is set, beside the new one; alone, without ADMIN_KEY, it opens nothing', async () => {
    const replaced = testEnv.ADMIN_KEY!
    const current = `admin-${crypto.randomUUID()}-${crypto.randomUUID()}`
    const rotating = { ADMIN_KEY: current, ADMIN_KEY_PREVIOUS: replaced }
    expect((await probeWith(rotating, replaced)).status).toBe(200)
    expect((await probeWith(rotating, current)).status).toBe(200)
    expect((await problem(await probeWith(rotating, `wrong-${current}`))).status).toBe(401)
    expect((await problem(await probeWith({ ADMIN_KEY: current }, replaced))).status).toBe(401)
    expect(
      (await problem(await probeWith({ ADMIN_KEY: '', ADMIN_KEY_PREVIOUS: replaced }, replaced)))
        .status,
    ).toBe(503)
  })
})

describe('the admin key from browser pages', () => {
  const EVIL = 'https://games.example.net'
  const fromPage = (origin: string, credential: string, ip: string, player = 'someone') =>
    call(
      `/v1/admin/players/${player}`,
      json('PUT', { name: 'from-a-page' }, credential, { 'cf-connecting-ip': ip, origin }),
    )

  it("a page on another origin cannot spend an address's allowance of wrong admin keys: its keys are never compared, and the address's own key still works", async () => {
    await clearOfMinuteTurn()
    const ip = clientAddress()
    const refusedBefore = adminKeyRefusals()
    // Well past the allowance, as a page open in an operator's browser would send them.
    for (let i = 0; i < ADMIN_KEY_GUESSES_PER_MINUTE + 5; i++) {
      const p = await problem(await fromPage(EVIL, `page-guess-${i}`, ip))
      expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
      expect(p.detail).toContain('ADMIN_ORIGINS')
    }
    // Refused before any comparison, so none counted as refused unread either.
    expect(adminKeyRefusals()).toBe(refusedBefore)
    // The game server (or the dashboard) at that address is not locked out.
    expect((await call(ADMIN_PROBE, probeFrom(ip, ADMIN_KEY))).status).toBe(200)
  })

  it("the right admin key from a page on another origin → 401 and no change; from the API's own origin or one in ADMIN_ORIGINS → 200", async () => {
    const player = `page-target-${crypto.randomUUID()}`
    const right = await fromPage(EVIL, ADMIN_KEY, clientAddress(), player)
    expect(await problem(right)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
    // A sandboxed frame or a file names its origin `null`: no more trusted.
    expect((await fromPage('null', ADMIN_KEY, clientAddress(), player)).status).toBe(401)
    const nameOf = async () =>
      (
        (await (await call(`/v1/admin/players/${player}`, bearer(ADMIN_KEY))).json()) as {
          name: string | null
        }
      ).name
    expect(await nameOf()).toBeNull()

    // The dashboard's origin is the API's own: its writes carry Origin, and go through.
    expect((await fromPage('http://nexus.test', ADMIN_KEY, clientAddress(), player)).status).toBe(
      200,
    )
    // A studio's own tool on another origin, listed.
    const tool = 'https://ops.studio.example'
    const listed = (credential: string, origin = tool) =>
      callWithEnv(
        // Written as a URL, as a studio may: the origin is what counts.
        { ADMIN_ORIGINS: `https://other.example, HTTPS://Ops.Studio.example:443/` },
        `/v1/admin/players/${player}`,
        json('PUT', { name: 'from-the-tool' }, credential, { origin }),
      )
    expect((await listed(ADMIN_KEY)).status).toBe(200)
    expect((await listed('not-the-key')).status).toBe(401)
    // Not a prefix match: the origin is the whole scheme, host and port.
    expect((await listed(ADMIN_KEY, `${tool}:8443`)).status).toBe(401)
    expect(await nameOf()).toBe('from-the-tool')
  })

  it("a page on another origin still sends players' tokens; the metrics token and an admin key shaped like a JWT are not taken from it", async () => {
    const { token } = await newGuest()
    // A player's token works from any page (the probe is an admin route: a player is 403 there).
    expect((await fromPage(EVIL, token, clientAddress())).status).toBe(403)
    const me = await call('/v1/players/me', {
      headers: { authorization: `Bearer ${token}`, origin: EVIL },
    })
    expect(me.status).toBe(200)

    const METRICS_TOKEN = 'scrape-from-a-page'
    const scrape = (origin?: string) =>
      callWithEnv({ METRICS_TOKEN }, '/metrics', {
        headers: { authorization: `Bearer ${METRICS_TOKEN}`, ...(origin ? { origin } : {}) },
      })
    expect((await scrape(EVIL)).status).toBe(401)
    expect((await scrape()).status).toBe(200)

    const jwtShapedKey = 'aaaa.bbbb.cccc'
    const put = (origin?: string) =>
      callWithEnv(
        { ADMIN_KEY: jwtShapedKey },
        ADMIN_PROBE,
        json('PUT', { name: 'x' }, jwtShapedKey, origin ? { origin } : {}),
      )
    expect((await put(EVIL)).status).toBe(401)
    expect((await put()).status).toBe(200)
  })
})

describe("a studio's own identity provider (JWKS)", () => {
  it('accepts its RS256 tokens with the right issuer and audience', async () => {
    const p = await statusFor(await idpToken())
    expect(p.status).toBe(403) // authenticated as a player; the probe route is admin-only
  })

  it('refuses a token without iat (401 naming it): without it a token could not be told from one issued before its player was erased', async () => {
    const p = await statusFor(await idpToken({ iat: false }))
    expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    expect(p.body.detail).toContain('"iat"')
  })

  it('refuses a subject that is not a string, or is a path step ("." or ".."), and names the length limit of a token too long', async () => {
    const now = Math.floor(Date.now() / 1000)
    const numeric = await new SignJWT({ sub: 12345 } as unknown as Record<string, unknown>)
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer('nexus')
      .setAudience('nexus:player')
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(new TextEncoder().encode(testEnv.AUTH_SECRET))
    for (const token of [
      numeric,
      await hs256({}, { sub: '.' }),
      await hs256({}, { sub: '..' }),
      await idpToken({ sub: '..' }),
    ]) {
      const p = await statusFor(token)
      expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
      expect(p.detail).toContain('not a valid player id')
    }
    // A game server cannot bring such a player into being either.
    const made = await call(
      '/v1/admin/sessions',
      json('POST', { rules: 'relay', roster: [{ playerId: '..' }] }, ADMIN_KEY),
    )
    expect(made.status).toBe(422)
    const long = await statusFor(await hs256({ padding: 'x'.repeat(5000) }))
    expect(long).toMatchObject({ status: 401 })
    expect(long.detail).toContain('longer than 4096 characters')
  })

  it('refuses a player id every JavaScript object already has a member for (`__proto__`, `constructor`, `toString`): as a subject (401), in a roster, a submission or a join for a player (422), and nothing is made', async () => {
    const board = await createBoard()
    const queue = await createQueue({ teamSize: 2, maxPartySize: 2 })
    for (const id of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      for (const token of [await hs256({}, { sub: id }), await idpToken({ sub: id })]) {
        const p = await statusFor(token)
        expect(p, id).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
        expect(p.detail).toContain('not a valid player id')
      }
      const session = await call(
        '/v1/admin/sessions',
        json(
          'POST',
          { rules: 'relay', roster: [{ playerId: id }, { playerId: 'p-2' }] },
          ADMIN_KEY,
        ),
      )
      expect(await problem(session), id).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
      const submitted = await call(
        `/v1/leaderboards/${board}/scores`,
        json('POST', { score: 5, playerId: id }, ADMIN_KEY, {
          'idempotency-key': `k-${crypto.randomUUID()}`,
        }),
      )
      expect(await problem(submitted), id).toMatchObject({ status: 422 })
      // A game server's join for such a player, alone or in a party.
      for (const body of [{ playerId: id }, { playerId: 'p-1', party: ['p-1', id] }]) {
        const joined = await call(`/v1/matchmaking/${queue}/tickets`, json('POST', body, ADMIN_KEY))
        expect(await problem(joined), JSON.stringify(body)).toMatchObject({
          status: 422,
          type: 'urn:nexus:problem:validation',
        })
      }
    }
    const top = await call(`/v1/leaderboards/${board}/top`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(((await top.json()) as { entries: unknown[] }).entries).toEqual([])
    const stats = await call(`/v1/matchmaking/${queue}/stats`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(((await stats.json()) as { waitingTickets: number }).waitingTickets).toBe(0)
  })

  it("refuses a subject shaped like a guest's id, which would sign in as that guest", async () => {
    const guest = await newGuest()
    expect(guest.playerId.startsWith('g_')).toBe(true)
    const p = await statusFor(await idpToken({ sub: guest.playerId }))
    expect(p).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
    expect(p.body.detail).toContain('guest')
    expect(await statusFor(await idpToken({ sub: 'gg_player' }))).toMatchObject({ status: 403 })
  })

  it('reads JWT_ISSUER or JWT_AUDIENCE that names nothing (",", spaces) as missing: 503, not a 401 for every player', async () => {
    const token = await idpToken()
    for (const bad of [{ JWT_ISSUER: ',' }, { JWT_AUDIENCE: '  ' }, { JWT_ISSUER: ' , ' }]) {
      const res = await callWithEnv(bad, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
      expect(await problem(res), JSON.stringify(bad)).toMatchObject({
        status: 503,
        type: 'urn:nexus:problem:unavailable',
      })
    }
  })

  it('takes JWT_ISSUER and JWT_AUDIENCE as comma-separated lists (a tenant under two domains, a game with two clients)', async () => {
    const lists = {
      JWT_ISSUER: 'https://login.example.com, https://idp.test',
      JWT_AUDIENCE: 'web-client,nexus-game',
    }
    const status = async (token: string) =>
      (
        await callWithEnv(lists, ADMIN_PROBE, {
          ...bearer(token),
          method: 'PUT',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          body: '{}',
        })
      ).status
    // Either issuer and either audience: a player (then 403 on the admin route).
    expect(await status(await idpToken())).toBe(403)
    expect(await status(await idpToken({ aud: 'web-client' }))).toBe(403)
    // Names outside the lists: 401.
    expect(await status(await idpToken({ iss: 'https://evil.test' }))).toBe(401)
    expect(await status(await idpToken({ aud: 'another-game' }))).toBe(401)
  })

  it('refuses wrong audience, wrong issuer, expired, and a key not in the JWKS', async () => {
    expect(await statusFor(await idpToken({ aud: 'another-game' }))).toMatchObject({ status: 401 })
    expect(await statusFor(await idpToken({ iss: 'https://evil.test' }))).toMatchObject({
      status: 401,
    })
    expect(
      await statusFor(await idpToken({ exp: Math.floor(Date.now() / 1000) - 300 })),
    ).toMatchObject({ status: 401, type: 'urn:nexus:problem:token-expired' })
    const { privateKey } = await generateKeyPair('RS256')
    const stranger = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'test-idp-key' })
      .setSubject('idp|mallory')
      .setIssuer('https://idp.test')
      .setAudience('nexus-game')
      .setExpirationTime('10m')
      .sign(privateKey)
    expect(await statusFor(stranger)).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('accepts a token without kid while the key set holds several keys without ids (mid-rotation)', async () => {
    const JWKS_URL = testEnv.JWKS_URL!.replace('/.well-known/jwks.json', '/rotating/jwks.json')
    const sign = async (key: CryptoKey | Uint8Array) =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'RS256' })
        .setSubject('idp|user-43')
        .setIssuer('https://idp.test')
        .setAudience('nexus-game')
        .setIssuedAt()
        .setExpirationTime('10m')
        .sign(key)
    const put = async (token: string) =>
      problem(await callWithEnv({ JWKS_URL }, ADMIN_PROBE, json('PUT', { name: 'x' }, token)))
    const signed = await sign(await importJWK(JSON.parse(testEnv.TEST_IDP_PRIVATE_JWK!), 'RS256'))
    // Authenticated as a player; the probe route is admin-only.
    expect(await put(signed)).toMatchObject({ status: 403 })
    // A key in neither: still refused.
    const { privateKey } = await generateKeyPair('RS256')
    expect(await put(await sign(privateKey))).toMatchObject({
      status: 401,
      type: 'urn:nexus:problem:unauthorized',
    })
  })

  it('without JWT_ISSUER or JWT_AUDIENCE, or without JWKS_URL beside them, no identity-provider token is accepted: 503, not a player, nor a 401 signing players out', async () => {
    const token = await idpToken()
    for (const unset of [{ JWT_ISSUER: '' }, { JWT_AUDIENCE: '' }, { JWKS_URL: '' }]) {
      const res = await callWithEnv(unset, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
      expect(await problem(res)).toMatchObject({
        status: 503,
        type: 'urn:nexus:problem:unavailable',
      })
    }
  })

  it('a JWKS_URL that is not an https URL (plain http only to this machine) is 503, not 401: the server is misconfigured, not the token', async () => {
    const token = await idpToken()
    for (const JWKS_URL of [
      'idp.test/.well-known/jwks.json',
      'ftp://idp.test/jwks.json',
      // Keys in cleartext over a network could be swapped on the way.
      'http://idp.test/.well-known/jwks.json',
    ]) {
      const res = await callWithEnv({ JWKS_URL }, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
      const p = await problem(res)
      expect(p, JWKS_URL).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
      // Refused as configured, never fetched (a fetch that failed would say so, with Retry-After).
      expect(p.body.detail, JWKS_URL).toContain('invalid JWKS_URL')
      expect(res.headers.get('retry-after'), JWKS_URL).toBeNull()
    }
  })

  it("the provider's keys out of reach is 503 with Retry-After, not 401: the token may be fine", async () => {
    const res = await callWithEnv(
      { JWKS_URL: `http://127.0.0.1:9/${crypto.randomUUID()}/jwks.json` },
      ADMIN_PROBE,
      json('PUT', { name: 'x' }, await idpToken()),
    )
    expect(await problem(res)).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(res.headers.get('retry-after')).toBe('30')
  })

  it('tokens arriving while the key set is being fetched wait for that fetch: one fetch for a burst of valid tokens at an isolate start, none for a burst of junk key ids after', async () => {
    const name = crypto.randomUUID()
    const base = testEnv.JWKS_URL!.replace('/.well-known/jwks.json', `/slow/${name}`)
    const put = (token: string) =>
      callWithEnv({ JWKS_URL: `${base}/jwks.json` }, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
    const hits = async () => ((await (await fetch(`${base}/hits`)).json()) as { hits: number }).hits
    const token = await idpToken()
    const burst = await Promise.all(Array.from({ length: 20 }, () => put(token)))
    // Every one a player (403 on the admin route), from one fetch.
    expect(burst.map((r) => r.status)).toEqual(Array(20).fill(403))
    expect(await hits()).toBe(1)
    // Key ids the provider never had, all at once: refused, and nobody fetched for them.
    const key = await importJWK(JSON.parse(testEnv.TEST_IDP_PRIVATE_JWK!), 'RS256')
    const now = Math.floor(Date.now() / 1000)
    const junk = await Promise.all(
      Array.from({ length: 20 }, async (_, i) =>
        put(
          await new SignJWT({})
            .setProtectedHeader({ alg: 'RS256', kid: `made-up-${i}` })
            .setSubject('idp|mallory')
            .setIssuer('https://idp.test')
            .setAudience('nexus-game')
            .setIssuedAt(now)
            .setExpirationTime(now + 600)
            .sign(key),
        ),
      ),
    )
    expect(junk.map((r) => r.status)).toEqual(Array(20).fill(401))
    expect(await hits()).toBe(1)
  })

  it('tokens naming a key the provider has just added, arriving while one of them fetches the key set, wait for it: accepted, not refused as forged', async () => {
    const name = crypto.randomUUID()
    const base = testEnv.JWKS_URL!.replace('/.well-known/jwks.json', `/growing/${name}`)
    const cooldown = jwksTimings.cooldownMs
    // No cooldown, so that the rotation need not wait 30 s after the first fetch.
    jwksTimings.cooldownMs = 0
    onTestFinished(() => {
      jwksTimings.cooldownMs = cooldown
    })
    const put = (token: string) =>
      callWithEnv({ JWKS_URL: `${base}/jwks.json` }, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
    // The first fetch holds the first key only.
    expect((await put(await idpToken())).status).toBe(403)
    const key2 = await importJWK(JSON.parse(testEnv.TEST_IDP_NEXT_PRIVATE_JWK!), 'RS256')
    const now = Math.floor(Date.now() / 1000)
    const signed = () =>
      new SignJWT({})
        .setProtectedHeader({ alg: 'RS256', kid: 'test-idp-key-2' })
        .setSubject('idp|rotated')
        .setIssuer('https://idp.test')
        .setAudience('nexus-game')
        .setIssuedAt(now)
        .setExpirationTime(now + 600)
        .sign(key2)
    const burst = await Promise.all(Array.from({ length: 6 }, async () => put(await signed())))
    expect(burst.map((r) => r.status)).toEqual(Array(6).fill(403))
    const hits = (await (await fetch(`${base}/hits`)).json()) as { hits: number }
    expect(hits.hits).toBe(2)
  })

  it("a key-set fetch that never finishes (its request's client gone, the runtime dropped it) holds a rotated key's token for its deadline at most: then it fetches for itself and is accepted, not refused as forged", async () => {
    const name = crypto.randomUUID()
    const base = testEnv.JWKS_URL!.replace('/.well-known/jwks.json', `/growing/${name}`)
    const url = `${base}/jwks.json`
    const cooldown = jwksTimings.cooldownMs
    jwksTimings.cooldownMs = 0
    onTestFinished(() => {
      jwksTimings.cooldownMs = cooldown
    })
    const put = (token: string) =>
      callWithEnv({ JWKS_URL: url }, ADMIN_PROBE, json('PUT', { name: 'x' }, token))
    // The first fetch holds the first key only.
    expect((await put(await idpToken())).status).toBe(403)
    const key2 = await importJWK(JSON.parse(testEnv.TEST_IDP_NEXT_PRIVATE_JWK!), 'RS256')
    const now = Math.floor(Date.now() / 1000)
    const rotated = await new SignJWT({})
      .setProtectedHeader({ alg: 'RS256', kid: 'test-idp-key-2' })
      .setSubject('idp|rotated-lost')
      .setIssuer('https://idp.test')
      .setAudience('nexus-game')
      .setIssuedAt(now)
      .setExpirationTime(now + 600)
      .sign(key2)
    loseJwksFetchForTest(url)
    expect((await put(rotated)).status).toBe(403)
    const hits = (await (await fetch(`${base}/hits`)).json()) as { hits: number }
    expect(hits.hits).toBe(2)
  })

  it('a provider that is down is asked once per 30 s, not once per token (anyone can send tokens)', async () => {
    const name = crypto.randomUUID()
    const base = testEnv.JWKS_URL!.replace('/.well-known/jwks.json', `/failing/${name}`)
    const token = await idpToken()
    for (let i = 0; i < 10; i++) {
      const res = await callWithEnv(
        { JWKS_URL: `${base}/jwks.json` },
        ADMIN_PROBE,
        json('PUT', { name: 'x' }, token),
      )
      expect(await problem(res)).toMatchObject({
        status: 503,
        type: 'urn:nexus:problem:unavailable',
      })
      const retryAfter = Number(res.headers.get('retry-after'))
      expect(retryAfter).toBeGreaterThanOrEqual(1)
      expect(retryAfter).toBeLessThanOrEqual(30)
    }
    expect(await (await fetch(`${base}/hits`)).json()).toEqual({ hits: 1 })
  })
})
