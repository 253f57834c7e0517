import { describe, expect, it } from 'vitest'
import { createBoard, fresh, type Top } from './helpers/boards.ts'
import { createQueue, queueId } from './helpers/matchmaking.ts'
import { connect, nextOfType } from './helpers/sockets.ts'
import { ADMIN_KEY, bearer, call, json, newGuest, problem } from './helpers/http.ts'
import { createSession, playerIds } from './helpers/session-sockets.ts'

/** `[[[…]]]`, `levels` arrays deep: a few bytes per level, far under the 64 KiB body cap. */
const nested = (levels: number) => '['.repeat(levels) + ']'.repeat(levels)
/** A request with a JSON body written as text (nesting JSON.stringify itself would refuse). */
const sendRaw = (
  method: string,
  path: string,
  credential: string,
  body: string,
  headers: Record<string, string> = {},
) =>
  call(path, {
    method,
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${credential}`,
      ...headers,
    },
    body,
  })
/** An object nested `levels` deep: `{"a":{"a":…{}}}`. */
const nestedObject = (levels: number): unknown =>
  levels <= 1 ? {} : { a: nestedObject(levels - 1) }

describe('free-form JSON fields are bounded in depth, however deep the input', () => {
  it('score metadata: 8 levels are kept, 9 and 30,000 are 422, and nothing is stored', async () => {
    const board = await createBoard({ metadataMaxBytes: 4096, maxEntries: 100_000 })
    const guest = await newGuest()
    const submit = (metadata: string, key: string) =>
      sendRaw(
        'POST',
        `/v1/leaderboards/${board}/scores`,
        guest.token,
        `{"score":1,"metadata":${metadata}}`,
        { 'idempotency-key': key },
      )
    // Before: a recursive depth check overflowed the stack on 10,000 levels and answered 500.
    for (const [levels, key] of [
      [30_000, 'deep-30000'],
      [9, 'deep-9'],
    ] as const) {
      const p = await problem(await submit(`{"a":${nested(levels - 1)}}`, key))
      expect(p, `${levels} levels`).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
      expect(p.body.errors).toEqual([{ path: 'metadata', message: 'nested deeper than 8' }])
    }
    expect((await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries).toEqual([])

    const ok = await submit(JSON.stringify(nestedObject(8)), 'deep-8')
    expect(ok.status).toBe(200)
    const top = await fresh<Top>(`/v1/leaderboards/${board}/top`)
    expect(top.entries.map((e) => e.metadata)).toEqual([nestedObject(8)])
  })

  it('a "__proto__" key in metadata is refused, not dropped; nested, it is kept like any key', async () => {
    const board = await createBoard()
    const guest = await newGuest()
    const submit = (body: string, key: string) =>
      sendRaw('POST', `/v1/leaderboards/${board}/scores`, guest.token, body, {
        'idempotency-key': key,
      })
    const p = await problem(await submit('{"score":1,"metadata":{"__proto__":{"x":1}}}', 'proto-1'))
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(p.body.errors).toEqual([
      { path: 'metadata.__proto__', message: '"__proto__" cannot be a key' },
    ])
    expect((await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries).toEqual([])
    const nested = '{"score":1,"metadata":{"a":{"__proto__":{"x":1}}}}'
    expect((await submit(nested, 'proto-2')).status).toBe(200)
    const [entry] = (await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries
    expect(JSON.stringify(entry!.metadata)).toBe('{"a":{"__proto__":{"x":1}}}')
  })

  it('a "__proto__" key in ticket attributes (HTTP and socket) or in session options is refused, not dropped', async () => {
    const queue = await createQueue()
    const guest = await newGuest()
    const join = await problem(
      await sendRaw(
        'POST',
        `/v1/matchmaking/${queue}/tickets`,
        guest.token,
        '{"region":"eu","attributes":{"__proto__":"ranked"}}',
      ),
    )
    expect(join).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(join.body.errors).toEqual([
      { path: 'attributes.__proto__', message: '"__proto__" cannot be a key' },
    ])
    const ws = await connect(`/v1/matchmaking/${queue}?region=eu`, guest.token)
    ws.send('{"type":"join","attributes":{"__proto__":"ranked"}}')
    const refused = await nextOfType<{ code: string; message: string }>(ws, 'error')
    expect(refused.code).toBe('invalid')
    expect(refused.message).toContain('__proto__')
    ws.close(1000)
    const stats = await fresh<{ waitingTickets: number }>(`/v1/matchmaking/${queue}/stats`)
    expect(stats.waitingTickets).toBe(0)

    const roster = playerIds(2).map((playerId) => ({ playerId }))
    const session = await problem(
      await sendRaw(
        'POST',
        '/v1/admin/sessions',
        ADMIN_KEY,
        `{"rules":"dice-race","roster":${JSON.stringify(roster)},"options":{"__proto__":{"target":5}}}`,
      ),
    )
    expect(session).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    // (The rules' own check of the options refuses it too.)
    expect(session.body.errors).toContainEqual({
      path: 'options.__proto__',
      message: '"__proto__" cannot be a key',
    })
  })

  it('metadata on an import and a reward on a board config: 422 for deep nesting, nothing changes', async () => {
    const board = await createBoard({ rewards: [{ fromRank: 1, toRank: 1, reward: { coins: 5 } }] })
    const imported = await sendRaw(
      'POST',
      `/v1/admin/leaderboards/${board}/entries`,
      ADMIN_KEY,
      `{"entries":[{"playerId":"a","score":1,"metadata":{"a":${nested(30_000)}}}]}`,
    )
    expect(await problem(imported)).toMatchObject({
      status: 422,
      type: 'urn:nexus:problem:validation',
    })
    expect((await fresh<Top>(`/v1/leaderboards/${board}/top`)).entries).toEqual([])

    const config = await sendRaw(
      'PUT',
      `/v1/admin/leaderboards/${board}`,
      ADMIN_KEY,
      `{"rewards":[{"fromRank":1,"toRank":1,"reward":{"a":${nested(30_000)}}}]}`,
    )
    const p = await problem(config)
    expect(p).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(p.body.errors).toEqual([{ path: 'rewards.0.reward', message: 'nested deeper than 8' }])
    const stored = await fresh<{ config: { rewards: unknown } }>(`/v1/leaderboards/${board}`)
    expect(stored.config.rewards).toEqual([{ fromRank: 1, toRank: 1, reward: { coins: 5 } }])
  })

  it('rules options, on a session and on a queue: 422 past 8 levels; a session refused by its rules names the field', async () => {
    const roster = playerIds(2).map((playerId) => ({ playerId }))
    for (const levels of [9, 3000]) {
      const res = await sendRaw(
        'POST',
        '/v1/admin/sessions',
        ADMIN_KEY,
        `{"rules":"relay","roster":${JSON.stringify(roster)},"options":{"x":${nested(levels - 1)}}}`,
      )
      const p = await problem(res)
      expect(p, `${levels} levels`).toMatchObject({ status: 422 })
      expect(p.body.errors).toEqual([{ path: 'options', message: 'nested deeper than 8' }])
    }
    // What the rules refuse is named too (it came back from the session object without `errors`).
    const target = await problem(
      await call(
        '/v1/admin/sessions',
        json('POST', { rules: 'dice-race', roster, options: { target: 0 } }, ADMIN_KEY),
      ),
    )
    expect(target).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(target.body.errors).toEqual([
      { path: 'options', message: expect.stringContaining('target') as string },
    ])
    const players = await problem(
      await call(
        '/v1/admin/sessions',
        json('POST', { rules: 'hot-potato', roster: roster.slice(0, 1) }, ADMIN_KEY),
      ),
    )
    expect(players.body.errors).toEqual([
      { path: 'roster', message: expect.stringContaining('hot-potato needs') as string },
    ])
    // A valid session still starts.
    await createSession({ rules: 'dice-race', roster, options: { target: 10 } })

    const queue = queueId()
    const res = await sendRaw(
      'PUT',
      `/v1/admin/queues/${queue}`,
      ADMIN_KEY,
      `{"teams":2,"teamSize":1,"rules":"relay","maxRatingGap":100,"widenPerSecond":1,"regions":["eu"],"rulesOptions":{"x":${nested(1000)}}}`,
    )
    const q = await problem(res)
    expect(q).toMatchObject({ status: 422 })
    expect(q.body.errors).toEqual([{ path: 'rulesOptions', message: 'nested deeper than 8' }])
    expect((await call(`/v1/matchmaking/${queue}`)).status).toBe(404)
  })
})

describe('a POST that takes no input refuses fields instead of ignoring them', () => {
  it('forming a party: a field is 422 naming it and forms nothing; {} or no body forms one', async () => {
    const [a, b] = [await newGuest(), await newGuest()]
    const refused = await problem(await call('/v1/parties', json('POST', { bogus: 1 }, a.token)))
    expect(refused).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(refused.body.errors).toEqual([{ path: 'bogus', message: 'unknown field' }])
    const array = await problem(await call('/v1/parties', json('POST', [1], a.token)))
    expect(array.body.errors).toEqual([{ path: '(body)', message: 'must be {} or absent' }])
    expect((await call('/v1/parties/me', bearer(a.token))).status).toBe(404)

    expect((await call('/v1/parties', json('POST', {}, a.token))).status).toBe(201)
    expect((await call('/v1/parties', { method: 'POST', ...bearer(b.token) })).status).toBe(201)
  })
})

describe('credentials in the URL are for sockets only', () => {
  it('a session read with ?token= is 401 and says to use the header; the header works', async () => {
    const [p1, p2] = playerIds(2) as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: p1 }, { playerId: p2 }],
    })
    for (const path of [`/v1/sessions/${sessionId}`, `/v1/sessions/${sessionId}/events`]) {
      for (const credential of [tokens[p1]!, ADMIN_KEY]) {
        const p = await problem(await call(`${path}?token=${encodeURIComponent(credential)}`))
        expect(p, path).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
        expect(p.body.detail).toContain('?token= is for sockets only')
      }
      expect((await call(path, bearer(tokens[p1]!))).status, path).toBe(200)
    }
  })
})

describe('the OpenAPI document says which operations need a credential', () => {
  it('every operation that can answer 401 declares one, and no other does', async () => {
    const doc = (await (await call('/openapi.json')).json()) as {
      paths: Record<
        string,
        Record<
          string,
          { security?: Record<string, string[]>[]; responses: Record<string, unknown> }
        >
      >
      components: { securitySchemes: Record<string, unknown> }
    }
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['bearer', 'token'])
    const mismatched: string[] = []
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        const declares = (op.security ?? []).some((r) => Object.keys(r).length > 0)
        if (declares !== Boolean(op.responses['401'])) mismatched.push(`${method} ${path}`)
      }
    }
    expect(mismatched).toEqual([])
    const security = (method: string, path: string) => doc.paths[path]?.[method]?.security
    expect(security('put', '/v1/admin/leaderboards/{id}')).toEqual([{ bearer: [] }])
    expect(security('post', '/v1/leaderboards/{id}/scores')).toEqual([{ bearer: [] }])
    expect(security('get', '/v1/sessions/{id}')).toEqual([{ bearer: [] }, { token: [] }])
    // The queue's plain read is public; its socket needs a credential.
    expect(security('get', '/v1/matchmaking/{queue}')).toEqual([{}, { bearer: [] }, { token: [] }])
    expect(security('post', '/v1/auth/guest')).toBeUndefined()
    expect(security('get', '/v1/leaderboards/{id}/top')).toBeUndefined()
  })
})

describe('numbers in URLs are plain decimal', () => {
  it('limits, cursors of events, cycle numbers and waits written otherwise are 422, not read as other numbers', async () => {
    const b = await createBoard()
    const { sessionId } = await createSession({
      rules: 'relay',
      roster: playerIds(1).map((playerId) => ({ playerId })),
    })
    const g = await newGuest()
    const ticket = `/v1/matchmaking/tickets/${queueId()}:eu:${crypto.randomUUID()}`
    const urls: [url: string, param: string, credential: string][] = [
      [`/v1/leaderboards/${b}/top?limit=%s`, 'limit', ''],
      [`/v1/leaderboards/${b}/around/p1?limit=%s`, 'limit', ''],
      [`/v1/sessions/${sessionId}/events?from=%s`, 'from', ADMIN_KEY],
      [`/v1/sessions/${sessionId}/events?limit=%s`, 'limit', ADMIN_KEY],
      [`/v1/leaderboards/${b}/cycles/%s/top`, 'cycle', ''],
      [`/v1/leaderboards/${b}/players/p1/history?before=%s`, 'before', ''],
      [`/v1/admin/leaderboards/${b}/cycles/%s`, 'cycle', ADMIN_KEY],
      [`${ticket}?wait=%s`, 'wait', g.token],
    ]
    // Each of these is a number to JavaScript's Number(), and none is how a number is written.
    const spellings = ['1e1', '0x2', '1.0', '%20%203', '%2B3', '01', 'Infinity']
    for (const [url, param, credential] of urls) {
      for (const spelling of spellings) {
        if (param === 'wait' && spelling === '1.0') continue // seconds may have decimals
        const target = url.replace('%s', spelling)
        const p = await problem(await call(target, credential ? bearer(credential) : {}))
        expect([target, p.status, p.type]).toEqual([target, 422, 'urn:nexus:problem:validation'])
        expect(
          (p.body.errors as { path: string }[]).map((e) => e.path),
          target,
        ).toContain(param)
      }
    }
    // Written plainly, the same numbers are taken.
    expect((await call(`/v1/leaderboards/${b}/top?limit=10`)).status).toBe(200)
    expect(
      (await call(`/v1/sessions/${sessionId}/events?from=1&limit=2`, bearer(ADMIN_KEY))).status,
    ).toBe(200)
    expect((await call(`${ticket}?wait=0.5`, bearer(g.token))).status).toBe(404)
  })
})
