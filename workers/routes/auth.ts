import { z } from '@hono/zod-openapi'
import { getSql } from '../db/client.ts'
import { authSecretProblem, GUEST_ID_PREFIX, issuePlayerToken } from '../lib/auth.ts'
import { DEVICE_LOCK } from '../players/erasure.ts'
import { boundedInt } from '../lib/config.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { ApiError } from '../lib/problem.ts'
import {
  countedClientIp,
  countedClientNetwork,
  enforceEdgeLimit,
  type EdgeRateLimitOptions,
} from '../middleware/rate-limit.ts'
import { sha256Hex } from '../lib/hash.ts'

export const auth = newRouter()

const GuestRequest = z
  .object({
    deviceId: z
      .string()
      .min(8)
      .max(128)
      .regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits, ".", "_", ":" and "-"')
      .openapi({
        description:
          'A random identifier the client generates once and keeps; whoever presents it is this player.',
        example: 'b3c1f0e2-5a4d-4f6b-9c8e-7d2a1b0c9e8f',
      }),
  })
  .strict()
  .openapi('GuestRequest')

const TokenResponse = z
  .object({
    token: z.string(),
    playerId: z.string(),
    expiresAt: z.number().int().openapi({ description: 'Unix time in milliseconds' }),
    expiresIn: z
      .number()
      .int()
      .openapi({
        description:
          'Seconds the token stays valid from now: for clients to time renewal by their own ' +
          "clock, which may be far from the server's",
      }),
  })
  .openapi('TokenResponse')

const guestRoute = createRoute({
  method: 'post',
  path: '/guest',
  summary: 'Issue a guest token for a device',
  description:
    'The same deviceId always maps to the same player. Call again to refresh an expiring token. ' +
    'A player under an account ban gets 403 `forbidden`.',
  request: { body: { content: { 'application/json': { schema: GuestRequest } }, required: true } },
  responses: {
    200: {
      description: 'A player token',
      content: { 'application/json': { schema: TokenResponse } },
    },
    ...problemResponses(400, 403, 413, 415, 422, 429, 503),
  },
})

/**
 * Whether GUEST_AUTH leaves guest sign-in on: unset, `on`, `true`, `1` or `yes` (any case). Any
 * other value is taken as meant to switch it off, so `OFF` or `false` cannot leave it open.
 */
function guestAuthEnabled(raw: string | undefined): boolean {
  const value = raw?.trim().toLowerCase()
  return !value || ['on', 'true', '1', 'yes'].includes(value)
}

/** GUEST_AUTH_PER_MINUTE sign-ins a minute per client address (default 30). */
const GUEST_AUTH: EdgeRateLimitOptions = {
  name: 'guest-auth',
  limit: (c) => boundedInt(c.env.GUEST_AUTH_PER_MINUTE, 30, 1, 10_000),
  key: countedClientIp,
}

/**
 * Each sign-in from a new device makes a player in Neon: a /48's many /64s (free from tunnel
 * brokers) are counted together too, at ten times one /64's allowance.
 */
const GUEST_AUTH_NETWORK: EdgeRateLimitOptions = {
  name: 'guest-auth-network',
  limit: (c) => 10 * boundedInt(c.env.GUEST_AUTH_PER_MINUTE, 30, 1, 10_000),
  key: countedClientNetwork,
}

auth.openapi(guestRoute, async (c) => {
  if (!guestAuthEnabled(c.env.GUEST_AUTH)) {
    throw new ApiError('guest-auth-disabled', 'This deployment does not issue guest tokens')
  }
  const { deviceId } = c.req.valid('json')
  // Counted once the request is known to be well formed: a malformed one (422) costs the
  // address none of its sign-ins.
  await enforceEdgeLimit(c, GUEST_AUTH)
  await enforceEdgeLimit(c, GUEST_AUTH_NETWORK)
  // A deployment that cannot sign the token makes no player for it either (a refusal changes
  // nothing): checked before Neon, as the signing would fail only after the row was in.
  const secretProblem = authSecretProblem(c.env)
  if (secretProblem !== null) throw new ApiError('unavailable', secretProblem)
  // Stored as its SHA-256: the device id is the guest's only credential, and a copy of the
  // table must not be enough to sign in as anyone.
  const deviceKey = await sha256Hex(deviceId)
  // One statement, so concurrent first logins of one device converge on one player; it reads
  // the player's account ban in the same round trip. A device whose banned player was erased is
  // still banned (the ban kept it), and gets no new player. The device's lock comes first, in the
  // same transaction: an erasure moving the device onto the ban holds it, so this statement's
  // snapshot comes after that erasure (without it, a sign-in begun before the erasure committed
  // would wait on the deleted row, then insert a new, unbanned player for the device).
  const sql = getSql(c.env)
  const [, [row]] = (await sql.transaction([
    sql.query(DEVICE_LOCK, [deviceKey]),
    sql.query(
      `with banned_device as (select 1 from player_bans where device_id = $2),
     p as (
       insert into players (id, device_id)
       select $1, $2 where not exists (select 1 from banned_device)
       on conflict (device_id) do update set updated_at = now()
       returning id
     )
     select (select id from p) as id,
            exists (select 1 from banned_device)
              or exists (select 1 from p join player_bans b on b.player_id = p.id) as banned,
            exists (select 1 from p join erased_players e on e.id = p.id) as erasing`,
      [`${GUEST_ID_PREFIX}${crypto.randomUUID()}`, deviceKey],
    ),
  ])) as [unknown, { id: string | null; banned: boolean; erasing: boolean }[]]
  if (!row) throw new Error('guest upsert returned no row')
  if (row.banned) throw new ApiError('forbidden', 'This player is banned')
  // The player's erasure has begun (its tombstone is in) and not yet deleted the profile: a token
  // for the id now would be newer than the erasure, so nothing would refuse it. Once the erasure
  // is done, the device signs in as a new player.
  if (row.erasing) {
    throw new ApiError(
      'unavailable',
      "This player's data is being erased; sign in again shortly",
      {},
      { 'retry-after': '5' },
    )
  }
  if (row.id === null) throw new Error('guest upsert returned no player')
  const { token, expiresAt } = await issuePlayerToken(c.env, row.id)
  const expiresIn = Math.max(0, Math.floor((expiresAt - Date.now()) / 1000))
  return c.json({ token, playerId: row.id, expiresAt, expiresIn }, 200)
})
