import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env, exports } from 'cloudflare:workers'
import worker from '../../../workers/index.ts'
import type { Env } from '../../../workers/env.ts'

export const ADMIN_KEY = 'test-admin-key'
export const BASE = 'http://nexus.test'

/** Sends a request to the Worker under test, as a client would. */
export function call(path: string, init: RequestInit = {}): Promise<Response> {
  return (exports as unknown as { default: Fetcher }).default.fetch(new Request(BASE + path, init))
}

/** Sends a request to the same Worker code with some bindings replaced (degradation tests). */
export async function callWithEnv(
  overrides: Partial<Env>,
  path: string,
  init: RequestInit = {},
): Promise<Response> {
  const ctx = createExecutionContext()
  const res = await worker.fetch(
    new Request(BASE + path, init),
    { ...(env as Env), ...overrides },
    ctx,
  )
  await waitOnExecutionContext(ctx)
  return res
}

/** JSON request init with a bearer credential. */
export function json(
  method: string,
  body: unknown,
  credential?: string,
  headers: Record<string, string> = {},
): RequestInit {
  return {
    method,
    headers: {
      'content-type': 'application/json',
      ...(credential ? { authorization: `Bearer ${credential}` } : {}),
      ...headers,
    },
    body: JSON.stringify(body),
  }
}

export function bearer(credential: string, headers: Record<string, string> = {}): RequestInit {
  return { headers: { authorization: `Bearer ${credential}`, ...headers } }
}

let deviceCounter = 0

/** A new guest player with its token. */
export async function newGuest(): Promise<{ token: string; playerId: string }> {
  const deviceId = `test-device-${crypto.randomUUID()}-${deviceCounter++}`
  const res = await call(
    '/v1/auth/guest',
    json('POST', { deviceId }, undefined, {
      'cf-connecting-ip': `10.9.${deviceCounter % 250}.${deviceCounter % 200}`,
    }),
  )
  if (res.status !== 200) throw new Error(`guest auth failed: ${res.status} ${await res.text()}`)
  return (await res.json()) as { token: string; playerId: string }
}

/** Asserts-friendly view of a problem response. */
export async function problem(res: Response): Promise<{
  status: number
  contentType: string | null
  type: string
  detail?: string
  body: Record<string, unknown>
}> {
  const body = (await res.json()) as Record<string, unknown>
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    type: String(body.type),
    ...(typeof body.detail === 'string' ? { detail: body.detail } : {}),
    body,
  }
}

/**
 * Seven guest sign-ins from one address at 3 a minute (`GUEST_AUTH_PER_MINUTE`), under `vars`:
 * the devices refused (a window's end may fall inside the loop once, so 1 to 4 of them), and the
 * first refusal.
 */
export async function signInsOverTheLimit(
  address: string,
  vars: Record<string, string | undefined> = {},
): Promise<{ refused: string[]; limited: Response | undefined }> {
  const refused: string[] = []
  let limited: Response | undefined
  for (let i = 0; i < 7; i++) {
    const deviceId = `rl-${crypto.randomUUID()}`
    const res = await callWithEnv(
      { ...vars, GUEST_AUTH_PER_MINUTE: '3' },
      '/v1/auth/guest',
      json('POST', { deviceId }, undefined, { 'cf-connecting-ip': address }),
    )
    if (res.status === 429) {
      refused.push(deviceId)
      limited ??= res
    } else {
      if (res.status !== 200) throw new Error(`sign-in: ${res.status} ${await res.text()}`)
      await res.body?.cancel()
    }
  }
  return { refused, limited }
}

/**
 * A client address (`cf-connecting-ip`) no other test draws: counts kept by address in Redis
 * (wrong admin keys, sign-ins) are shared by every test file, and addresses drawn from a /24
 * met often enough for one test's lockout to answer another's request. 10.128.0.0/9, at random.
 */
export function clientAddress(): string {
  // 10.128.0.0/9: the rest of 10/8 is taken by fixed addresses (newGuest's sign-ins, CORS tests).
  const n = crypto.getRandomValues(new Uint32Array(1))[0]! & 0x7fffff
  return `10.${128 + (n >>> 16)}.${(n >>> 8) & 255}.${n & 255}`
}

/**
 * Waits for the next turn of a clock of `periodMs` (aligned to the epoch, as cycles and counts by
 * the minute are) when fewer than `needMs` are left of this one: a test that reads a board's
 * 1-minute cycle and then acts on it on the real clock would see the boundary pass in between.
 */
export async function clearOfTurn(periodMs: number, needMs: number): Promise<void> {
  const left = periodMs - (Date.now() % periodMs)
  if (left < needMs) await new Promise((r) => setTimeout(r, left + 50))
}

/**
 * `clearOfTurn` for counts by the minute (the admin-key lockout's), which start again at its
 * turn: a test that sends a minute's allowance and then expects the lockout would see none if the
 * turn came in between.
 */
export function clearOfMinuteTurn(needMs = 15_000): Promise<void> {
  return clearOfTurn(60_000, needMs)
}
