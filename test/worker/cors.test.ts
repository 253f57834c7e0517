import { describe, expect, it } from 'vitest'
import { createBoard, submitFor } from './helpers/boards.ts'
import { createQueue } from './helpers/matchmaking.ts'
import { call, callWithEnv, newGuest, problem } from './helpers/http.ts'

const GAME = 'https://game.example.com'

/** A browser's preflight for `method` with `headers` from `origin`. */
const preflight = (path: string, origin: string, method: string, headers: string) => ({
  path,
  init: {
    method: 'OPTIONS',
    headers: {
      origin,
      'access-control-request-method': method,
      'access-control-request-headers': headers,
    },
  },
})

describe('browser games on another origin (CORS)', () => {
  it('a preflight is answered with what a game may send, and every answer, errors and cached reads included, may be read', async () => {
    const p = preflight('/v1/auth/guest', GAME, 'POST', 'content-type')
    const pre = await call(p.path, p.init)
    expect(pre.status).toBe(204)
    expect(pre.headers.get('access-control-allow-origin')).toBe('*')
    expect(pre.headers.get('access-control-allow-methods')!.split(',')).toEqual(
      expect.arrayContaining(['GET', 'POST', 'PUT', 'DELETE']),
    )
    expect(pre.headers.get('access-control-allow-headers')!.split(',')).toEqual(
      expect.arrayContaining(['authorization', 'content-type', 'idempotency-key', 'cache-control']),
    )
    expect(pre.headers.get('access-control-max-age')).toBe('600')

    const guest = await call('/v1/auth/guest', {
      method: 'POST',
      headers: {
        origin: GAME,
        'content-type': 'application/json',
        'cf-connecting-ip': '10.77.0.1',
      },
      body: JSON.stringify({ deviceId: `cors-${crypto.randomUUID()}` }),
    })
    expect(guest.status).toBe(200)
    expect(guest.headers.get('access-control-allow-origin')).toBe('*')
    expect(guest.headers.get('access-control-expose-headers')!.split(',')).toEqual(
      expect.arrayContaining(['x-request-id', 'retry-after', 'x-cache']),
    )

    // A refusal is readable too, with its problem.
    const missing = await call('/v1/leaderboards/no-such-board/top', { headers: { origin: GAME } })
    expect(missing.status).toBe(404)
    expect(missing.headers.get('access-control-allow-origin')).toBe('*')
    expect((await problem(missing)).type).toContain('not-found')

    // So is a read served from a cache.
    const board = await createBoard()
    expect((await submitFor(board, 'cors-1', { score: 5 })).status).toBe(200)
    const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
    // Every draw says "keep", so the second read cannot be chosen for an early refresh (a MISS).
    const random = Math.random
    Math.random = () => 0.999999
    const seen: (string | null)[] = []
    try {
      for (let i = 0; i < 2; i++) {
        const top = await call(`/v1/leaderboards/${board}/top`, { headers: { origin: GAME } })
        expect(top.status).toBe(200)
        expect(top.headers.get('access-control-allow-origin')).toBe('*')
        // The read answers itself, and still carries the request's id.
        expect(top.headers.get('x-request-id')).toMatch(UUID)
        seen.push(top.headers.get('x-cache'))
        await top.body?.cancel()
      }
    } finally {
      Math.random = random
    }
    expect(seen).toEqual(['MISS', expect.stringMatching(/^HIT/)])
  })

  it('with CORS_ORIGINS listed, only those origins may read answers; others get no allowance', async () => {
    const only = { CORS_ORIGINS: `${GAME}, https://beta.example.com` }
    const p = preflight('/v1/auth/guest', GAME, 'POST', 'content-type')
    const pre = await callWithEnv(only, p.path, p.init)
    expect(pre.status).toBe(204)
    expect(pre.headers.get('access-control-allow-origin')).toBe(GAME)
    expect(pre.headers.get('vary')).toContain('Origin')

    const other = preflight('/v1/auth/guest', 'https://evil.example.com', 'POST', 'content-type')
    const refused = await callWithEnv(only, other.path, other.init)
    expect(refused.headers.get('access-control-allow-origin')).toBeNull()

    const health = await callWithEnv(only, '/health', {
      headers: { origin: 'https://beta.example.com' },
    })
    expect(health.status).toBe(200)
    expect(health.headers.get('access-control-allow-origin')).toBe('https://beta.example.com')
    expect(health.headers.get('vary')).toContain('Origin')
    const elsewhere = await callWithEnv(only, '/health', {
      headers: { origin: 'https://evil.example.com' },
    })
    expect(elsewhere.status).toBe(200)
    expect(elsewhere.headers.get('access-control-allow-origin')).toBeNull()
  })

  it('origins listed as URLs (a trailing slash, capitals, a default port) match the pages they name; an admin tool on ADMIN_ORIGINS gets past its preflight and reads the admin answer', async () => {
    const ops = 'https://ops.example.com'
    const settings = {
      CORS_ORIGINS: 'https://Game.example.com:443/',
      ADMIN_ORIGINS: `${ops}/`,
      ADMIN_KEY: 'cors-admin-key-0123456789',
    }
    const p = preflight('/v1/auth/guest', GAME, 'POST', 'content-type')
    const game = await callWithEnv(settings, p.path, p.init)
    expect(game.headers.get('access-control-allow-origin')).toBe(GAME)
    const admin = preflight('/v1/admin/queues', ops, 'GET', 'authorization')
    const pre = await callWithEnv(settings, admin.path, admin.init)
    expect(pre.status).toBe(204)
    expect(pre.headers.get('access-control-allow-origin')).toBe(ops)
    const listed = await callWithEnv(settings, '/v1/admin/queues', {
      headers: { origin: ops, authorization: `Bearer ${settings.ADMIN_KEY}` },
    })
    expect(listed.status).toBe(200)
    expect(listed.headers.get('access-control-allow-origin')).toBe(ops)
    // Not a page on neither list.
    const other = preflight('/v1/admin/queues', 'https://evil.example.com', 'GET', 'authorization')
    const refused = await callWithEnv(settings, other.path, other.init)
    expect(refused.headers.get('access-control-allow-origin')).toBeNull()
  })

  it('a socket upgrade from a page on another origin still opens', async () => {
    const q = await createQueue()
    const g = await newGuest()
    const res = await call(`/v1/matchmaking/${q}?region=eu`, {
      headers: { upgrade: 'websocket', origin: GAME, authorization: `Bearer ${g.token}` },
    })
    expect(res.status).toBe(101)
    expect(res.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/)
    res.webSocket!.accept()
    res.webSocket!.close(1000)
  })
})
