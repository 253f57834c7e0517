import { NeonDbError } from '@neondatabase/serverless'
import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import { createApp } from '../../workers/app.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import {
  getSql,
  isDatabaseUnreachable,
  isTransientDatabaseError,
  pgErrorCode,
} from '../../workers/db/client.ts'
import { createBoard, pg } from './helpers/boards.ts'
import { bearer, call, callWithEnv, json, newGuest, problem, ADMIN_KEY } from './helpers/http.ts'
import { logLines } from './helpers/logs.ts'

const testEnv = env as unknown as Record<string, string>

const PROBLEM = 'application/problem+json'

/** Makes a dice-race queue of two teams of two in region `eu`, as an admin. */
function putDuoQueue(queue: string): Promise<Response> {
  return call(
    `/v1/admin/queues/${queue}`,
    json(
      'PUT',
      {
        teams: 2,
        teamSize: 2,
        rules: 'dice-race',
        maxRatingGap: 100,
        widenPerSecond: 10,
        regions: ['eu'],
      },
      ADMIN_KEY,
    ),
  )
}

describe('the error funnel renders RFC 9457 problems', () => {
  it('404 for an unknown route', async () => {
    const p = await problem(await call('/v1/nope'))
    expect(p).toMatchObject({
      status: 404,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:not-found',
    })
    expect(p.body.title).toBe('Not found')
    expect(typeof p.body.requestId).toBe('string')
  })

  it('an unknown path of any length is echoed and logged cut to 256 characters: any caller writes it into a log kept for months', async () => {
    const lines = logLines('info')
    const long = `/v1/${'x'.repeat(5_000)}`
    const p = await problem(await call(long))
    expect(p.status).toBe(404)
    expect(String(p.body.detail).length).toBeLessThan(300)
    expect(String(p.body.detail)).toContain('/v1/xxx')
    const logged = lines.filter((l) => l.msg === 'request' && String(l.path).startsWith('/v1/xxx'))
    expect(logged).toHaveLength(1)
    expect(String(logged[0]!.path).length).toBeLessThanOrEqual(257)
  })

  it('405 with Allow for a known path and a wrong method', async () => {
    const res = await call('/v1/auth/guest', { method: 'GET' })
    const p = await problem(res)
    expect(p).toMatchObject({
      status: 405,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:method-not-allowed',
    })
    expect(res.headers.get('allow')).toContain('POST')
  })

  it('400 for malformed JSON, before validation', async () => {
    const p = await problem(
      await call('/v1/auth/guest', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"deviceId": ',
      }),
    )
    expect(p).toMatchObject({
      status: 400,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:malformed-json',
    })
  })

  it('an empty body with a JSON content type is 400 malformed-json, like any other broken JSON', async () => {
    const p = await problem(
      await call('/v1/auth/guest', {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': '0' },
        body: '',
      }),
    )
    expect(p).toMatchObject({ status: 400, type: 'urn:nexus:problem:malformed-json' })
  })

  it('a PUT without a body is 422 and changes nothing (it would otherwise reset every setting)', async () => {
    const board = await createBoard({ cycle: { every: '1h' }, scoreMax: 100 })
    const tag = crypto.randomUUID().slice(0, 8)
    const queue = `q-empty-put-${tag}`
    const player = `p-empty-put-${tag}`
    for (const path of [
      `/v1/admin/leaderboards/${board}`,
      `/v1/admin/queues/${queue}`,
      `/v1/admin/players/${player}`,
    ]) {
      const p = await problem(await call(path, { method: 'PUT', ...bearer(ADMIN_KEY) }))
      expect(p).toMatchObject({
        status: 422,
        contentType: PROBLEM,
        type: 'urn:nexus:problem:validation',
      })
    }
    const info = (await (await call(`/v1/leaderboards/${board}`)).json()) as {
      config: { cycle: unknown; scoreMax: number }
    }
    expect(info.config).toMatchObject({ cycle: { every: '1h' }, scoreMax: 100 })
    // Nor did the other two create what they name.
    expect(await pg()`select id from queues where id = ${queue}`).toEqual([])
    expect(await pg()`select id from players where id = ${player}`).toEqual([])
  })

  it('an empty body is the same however it is framed: Content-Length 0 or streamed (chunked)', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    const framings = {
      'content-length 0': () => ({ headers: { 'content-length': '0' }, body: null }),
      'streamed, no bytes': () => ({
        headers: {},
        body: new ReadableStream<Uint8Array>({ start: (c) => c.close() }),
        duplex: 'half',
      }),
    }
    for (const [framing, init] of Object.entries(framings)) {
      const send = (path: string, method: string, credential: string, type?: string) => {
        const i = init()
        const headers = { ...i.headers, authorization: `Bearer ${credential}` }
        return call(path, {
          ...i,
          method,
          headers: type ? { ...headers, 'content-type': type } : headers,
        } as RequestInit)
      }
      const guest = await newGuest()
      // Optional bodies: none is fine; an empty one labelled JSON is broken JSON (docs/problems.md).
      const closed = await send(`/v1/admin/leaderboards/${board}/close`, 'POST', ADMIN_KEY)
      expect(closed.status, framing).toBe(202)
      const labelled = await problem(
        await send(`/v1/admin/leaderboards/${board}/close`, 'POST', ADMIN_KEY, 'application/json'),
      )
      expect(labelled, framing).toMatchObject({
        status: 400,
        type: 'urn:nexus:problem:malformed-json',
      })
      // A POST that takes no body accepts an empty one, labelled or not.
      const party = await send('/v1/parties', 'POST', guest.token, 'application/json')
      expect(party.status, framing).toBe(201)
      // A PUT needs its whole resource.
      const put = await problem(await send(`/v1/admin/leaderboards/${board}`, 'PUT', ADMIN_KEY))
      expect(put, framing).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
    const info = (await (await call(`/v1/leaderboards/${board}`)).json()) as {
      config: { cycle: unknown }
    }
    expect(info.config.cycle).toEqual({ every: '1h' })
  })

  it('415 for a body that is not JSON', async () => {
    const p = await problem(
      await call('/v1/auth/guest', {
        method: 'POST',
        headers: { 'content-type': 'text/plain' },
        body: 'deviceId=abc',
      }),
    )
    expect(p).toMatchObject({
      status: 415,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:unsupported-media-type',
    })
  })

  it('a DELETE takes no body: one of another type is 415, one with fields 422, and nothing is deleted; none, or {}, deletes', async () => {
    const board = await createBoard()
    const del = (body: string | null, type?: string) =>
      call(`/v1/admin/leaderboards/${board}`, {
        method: 'DELETE',
        headers: {
          authorization: `Bearer ${ADMIN_KEY}`,
          ...(type === undefined ? {} : { 'content-type': type }),
        },
        ...(body === null ? {} : { body }),
      })
    expect(await problem(await del('hello', 'text/plain'))).toMatchObject({
      status: 415,
      type: 'urn:nexus:problem:unsupported-media-type',
    })
    const fields = await problem(await del('{"after":"b"}', 'application/json'))
    expect(fields).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(fields.body.errors).toEqual([{ path: 'after', message: 'unknown field' }])
    expect(await problem(await del('[]', 'application/json'))).toMatchObject({ status: 422 })
    const kept = await pg()`select deleted_at from leaderboards where id = ${board}`
    expect(kept).toEqual([{ deleted_at: null }])
    expect((await del('{}', 'application/json')).status).toBe(200)
    const other = await createBoard()
    const bare = await call(`/v1/admin/leaderboards/${other}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(bare.status).toBe(200)
  })

  it('a PUT sent as a patch document is 415 and changes nothing: a PUT is the whole board, and a patch read as one would reset every setting it leaves out', async () => {
    const board = await createBoard({ scoreMax: 1000, submitsPerMinute: 30 })
    for (const type of ['application/merge-patch+json', 'application/json-patch+json']) {
      const res = await call(`/v1/admin/leaderboards/${board}`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': type },
        body: '{"paused":true}',
      })
      expect(await problem(res)).toMatchObject({
        status: 415,
        type: 'urn:nexus:problem:unsupported-media-type',
      })
    }
    const [row] = await pg()`select version, config from leaderboards where id = ${board}`
    expect(row).toMatchObject({ version: 1, config: { scoreMax: 1000, submitsPerMinute: 30 } })
    expect((row!.config as { paused?: boolean }).paused).not.toBe(true)
  })

  it('a body in a charset other than UTF-8 is 415, not stored mangled; UTF-8 named in any spelling goes through', async () => {
    const guest = await newGuest()
    // "José" in Latin-1: read as UTF-8 it would be stored as "Jos\ufffd".
    const latin1 = new Uint8Array([...new TextEncoder().encode('{"name":"Jos'), 0xe9, 0x22, 0x7d])
    const send = (type: string, body: BodyInit) =>
      call('/v1/parties', {
        method: 'POST',
        headers: { authorization: `Bearer ${guest.token}`, 'content-type': type },
        body,
      })
    for (const type of [
      'application/json; charset=iso-8859-1',
      'application/json; charset="windows-1252"',
      'application/json;charset=utf-16',
    ]) {
      expect(await problem(await send(type, latin1))).toMatchObject({
        status: 415,
        type: 'urn:nexus:problem:unsupported-media-type',
      })
    }
    const none = await call('/v1/parties/me', bearer(guest.token))
    expect(none.status).toBe(404)
    await none.body?.cancel()
    const formed = await send('application/json; charset="UTF-8"', '{}')
    expect(formed.status).toBe(201)
    await formed.body?.cancel()
  })

  it('a wrong method or an unknown path is 405 or 404 whatever the body, not a complaint about the body', async () => {
    const board = await createBoard()
    // Only GET is served there (the admin PUT lives under /v1/admin).
    const put = await call(`/v1/leaderboards/${board}`, { method: 'PUT', ...bearer(ADMIN_KEY) })
    expect(await problem(put)).toMatchObject({
      status: 405,
      type: 'urn:nexus:problem:method-not-allowed',
    })
    expect(put.headers.get('allow')).toContain('GET')
    const del = await call(`/v1/leaderboards/${board}`, {
      method: 'DELETE',
      headers: { 'content-type': 'application/json' },
      body: '{"reason":"x"}',
    })
    expect((await problem(del)).status).toBe(405)
    const typo = await call(`/v1/leaderbords/${board}/scores`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'score=1',
    })
    expect(await problem(typo)).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    // Past the body cap too: the path, not the size, is what is wrong.
    const large = JSON.stringify({ pad: 'x'.repeat(70_000) })
    const bigTypo = await call(`/v1/leaderbords/${board}/scores`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: large,
    })
    expect((await problem(bigTypo)).status).toBe(404)
    const bigWrong = await call(`/v1/leaderboards/${board}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: large,
    })
    expect((await problem(bigWrong)).status).toBe(405)
    // Where a route takes it, the cap holds.
    const bigRight = await call(`/v1/leaderboards/${board}/scores`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: large,
    })
    expect((await problem(bigRight)).status).toBe(413)
  })

  it('OPTIONS that is not a preflight says what a path takes, and 404 on a path there is none', async () => {
    const known = await call('/v1/auth/guest', { method: 'OPTIONS' })
    expect(known.status).toBe(204)
    expect(known.headers.get('allow')!.split(', ')).toEqual(
      expect.arrayContaining(['POST', 'OPTIONS']),
    )
    expect(known.headers.get('access-control-allow-methods')).toBeNull()
    // An empty answer, not a problem document.
    expect(known.headers.get('content-type')).toBeNull()
    const unknown = await call('/v1/no-such-thing', { method: 'OPTIONS' })
    expect(await problem(unknown)).toMatchObject({
      status: 404,
      type: 'urn:nexus:problem:not-found',
    })
  })

  it('a 201 says where what it made is (Location), and a GET there reads it; a retry that made nothing says none', async () => {
    const [leader, invitee] = [await newGuest(), await newGuest()]
    const follow = async (res: Response, token: string) => {
      expect(res.status).toBe(201)
      const location = res.headers.get('location')!
      expect(location).toMatch(/^\/v1\//)
      const read = await call(location, bearer(token))
      expect(read.status, location).toBe(200)
      return { made: (await res.json()) as Record<string, unknown>, read: await read.json() }
    }
    const party = await follow(
      await call('/v1/parties', json('POST', {}, leader.token)),
      leader.token,
    )
    expect(party.read).toMatchObject({ id: party.made.id })
    const again = await call('/v1/parties', json('POST', {}, leader.token))
    expect(again.status).toBe(200)
    expect(again.headers.get('location')).toBeNull()
    await again.body?.cancel()
    // An invite's place is where it is revoked (or declined).
    const invited = await call(
      `/v1/parties/${String(party.made.id)}/invites`,
      json('POST', { playerId: invitee.playerId }, leader.token),
    )
    expect(invited.status).toBe(201)
    await invited.body?.cancel()
    const revoked = await call(invited.headers.get('location')!, {
      method: 'DELETE',
      ...bearer(leader.token),
    })
    expect(revoked.status).toBe(204)
    const seen = await call(`/v1/parties/${String(party.made.id)}`, bearer(leader.token))
    expect(((await seen.json()) as { invites: unknown[] }).invites).toEqual([])

    const queue = `loc-${crypto.randomUUID().slice(0, 8)}`
    expect((await putDuoQueue(queue)).status).toBe(201)
    const joiner = await newGuest()
    const ticket = await follow(
      await call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, joiner.token)),
      joiner.token,
    )
    expect(ticket.read).toMatchObject({ ticketId: ticket.made.ticketId, status: 'waiting' })

    const session = await follow(
      await call(
        '/v1/admin/sessions',
        json(
          'POST',
          { rules: 'relay', roster: [{ playerId: 'loc-a' }, { playerId: 'loc-b' }] },
          ADMIN_KEY,
        ),
      ),
      ADMIN_KEY,
    )
    expect(session.read).toMatchObject({ sessionId: session.made.sessionId })
  })

  it('413 for a body over the cap, whatever its content', async () => {
    const big = JSON.stringify({ deviceId: 'x'.repeat(70 * 1024) })
    const p = await problem(
      await call('/v1/auth/guest', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: big,
      }),
    )
    expect(p).toMatchObject({
      status: 413,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:payload-too-large',
    })
  })

  it('413 also for a streamed body without Content-Length', async () => {
    const chunk = new TextEncoder().encode('x'.repeat(16 * 1024))
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 6) controller.enqueue(chunk)
        else controller.close()
      },
    })
    const p = await problem(
      await call('/v1/auth/guest', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
        duplex: 'half',
      } as RequestInit),
    )
    expect(p).toMatchObject({ status: 413, type: 'urn:nexus:problem:payload-too-large' })
  })

  it('422 naming the failing field', async () => {
    const p = await problem(await call('/v1/auth/guest', json('POST', { deviceId: 42 })))
    expect(p).toMatchObject({
      status: 422,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:validation',
    })
    expect(p.body.errors).toEqual([expect.objectContaining({ path: 'deviceId' })])
  })

  it('422 for unknown fields and for a JSON body of the wrong shape', async () => {
    const extra = await problem(
      await call('/v1/auth/guest', json('POST', { deviceId: 'abcdefgh-1', admin: true })),
    )
    expect(extra).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    const array = await problem(await call('/v1/auth/guest', json('POST', ['abcdefgh'])))
    expect(array).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
  })

  it('422 for admin player updates out of bounds, and nothing changes', async () => {
    const id = `bounds-${crypto.randomUUID()}`
    const ok = await call(`/v1/admin/players/${id}`, json('PUT', { rating: 1234 }, ADMIN_KEY))
    expect(ok.status).toBe(200)
    for (const bad of [
      { rating: -1 },
      { rating: 1e9 },
      { rating: 'NaN' },
      { ratingDeviation: 0 },
      { ratingDeviation: 29 },
      { ratingDeviation: 351 },
      { ratingDeviation: '350' },
      { name: '' },
      { name: 'x'.repeat(65) },
      // Characters are counted as JSON Schema's maxLength counts them: an emoji is one.
      { name: '😀'.repeat(65) },
      // Control characters break the UIs that show names; a name must show something.
      { name: 'Ada\nLovelace' },
      { name: 'Ada\u0007' },
      { name: '\u0085Ada' },
      // Not controls, but they break the line as one.
      { name: 'Top\u2028Player' },
      { name: 'Top\u2029Player' },
      { name: '\u200b' },
      { name: '\u200e\u202e' },
      // Letters and symbols fonts draw as nothing, and a mark with nothing to sit on.
      { name: '\u3164' },
      { name: '\u115f\u1160' },
      { name: '\u2800\u2800' },
      { name: '\u0301' },
      // Overrides and isolates reorder what follows: a name that reads as something else.
      { name: 'Ada\u202egnp.exe' },
      { name: '\u2067Ada' },
      {},
    ]) {
      const p = await problem(await call(`/v1/admin/players/${id}`, json('PUT', bad, ADMIN_KEY)))
      expect(p, JSON.stringify(bad)).toMatchObject({
        status: 422,
        type: 'urn:nexus:problem:validation',
      })
    }
    // Not one of them stored anything: no name, the rating as it was.
    const read = await call(`/v1/admin/players/${id}`, bearer(ADMIN_KEY))
    expect(await read.json()).toMatchObject({
      playerId: id,
      name: null,
      rating: 1234,
      ratingDeviation: 350,
    })
    // A deviation set with the rating, for games to correct a rating set by hand quickly.
    const sure = await call(
      `/v1/admin/players/${id}`,
      json('PUT', { rating: 2000, ratingDeviation: 300 }, ADMIN_KEY),
    )
    expect(await sure.json()).toMatchObject({ rating: 2000, ratingDeviation: 300 })
    const deviationAlone = await call(
      `/v1/admin/players/${id}`,
      json('PUT', { ratingDeviation: 120 }, ADMIN_KEY),
    )
    expect(await deviationAlone.json()).toMatchObject({ rating: 2000, ratingDeviation: 120 })
    await call(
      `/v1/admin/players/${id}`,
      json('PUT', { rating: 1234, ratingDeviation: 350 }, ADMIN_KEY),
    )
    const again = await call(`/v1/admin/players/${id}`, json('PUT', { name: 'Ada' }, ADMIN_KEY))
    expect(await again.json()).toMatchObject({ playerId: id, name: 'Ada', rating: 1234 })
    // Any script, emoji sequences (joined with U+200D) and bidi marks inside a name are fine.
    for (const name of [
      'Zoë 李',
      '👩\u200d💻 Ada',
      '\u05e9\u05dc\u05d5\u05dd\u200f 7',
      '😀'.repeat(64),
      // Combining marks on letters (a decomposed é, Devanagari vowel signs).
      'Jose\u0301',
      '\u0928\u092e\u0938\u094d\u0924\u0947',
    ]) {
      const res = await call(`/v1/admin/players/${id}`, json('PUT', { name }, ADMIN_KEY))
      expect(await res.json(), name).toMatchObject({ name })
    }
  })

  it('422 for "me" as a player id anywhere one is written (it names the caller in paths), and nothing is stored', async () => {
    const me = await problem(
      await call('/v1/admin/players/me', json('PUT', { name: 'Me' }, ADMIN_KEY)),
    )
    expect(me).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    const board = `me-${crypto.randomUUID().slice(0, 8)}`
    expect((await call(`/v1/admin/leaderboards/${board}`, json('PUT', {}, ADMIN_KEY))).status).toBe(
      201,
    )
    const submit = await problem(
      await call(
        `/v1/leaderboards/${board}/scores`,
        json('POST', { playerId: 'me', score: 5 }, ADMIN_KEY, { 'idempotency-key': 'me-1' }),
      ),
    )
    expect(submit).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(submit.body.errors).toEqual([expect.objectContaining({ path: 'playerId' })])
    // Nor may a game server queue a party with a member `me`.
    const queue = `me-q-${crypto.randomUUID().slice(0, 8)}`
    expect((await putDuoQueue(queue)).status).toBe(201)
    const join = await problem(
      await call(
        `/v1/matchmaking/${queue}/tickets`,
        json('POST', { playerId: 'alice', party: ['alice', 'me'] }, ADMIN_KEY),
      ),
    )
    expect(join).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    const top = (await (await call(`/v1/leaderboards/${board}/top`)).json()) as { total: number }
    expect(top.total).toBe(0)
    // Routes that only look a player up still reach one (a row written before this rule).
    const ban = await problem(await call('/v1/admin/players/me/ban', bearer(ADMIN_KEY)))
    expect(ban).toMatchObject({ status: 404, type: 'urn:nexus:problem:not-found' })
    // And a token whose subject is `me` (an identity provider's) is no credential.
    const { token } = await issuePlayerToken(env, 'me')
    const mine = await problem(await call('/v1/players/me/rewards', bearer(token)))
    expect(mine).toMatchObject({ status: 401, type: 'urn:nexus:problem:unauthorized' })
  })

  it("a join naming a region PostgreSQL cannot store (a NUL, a lone surrogate) is 422 at region, not 500, and spends none of the player's joins; a game server's party member '.' or '..' is 422 and claims nothing", async () => {
    const queue = `nul-q-${crypto.randomUUID().slice(0, 8)}`
    expect((await putDuoQueue(queue)).status).toBe(201)
    const g = await newGuest()
    const once = { JOINS_PER_MINUTE: '1' }
    for (const region of ['e\u0000u', '\ud800']) {
      const res = await callWithEnv(
        once,
        `/v1/matchmaking/${queue}/tickets`,
        json('POST', { region }, g.token),
      )
      const refused = await problem(res)
      expect(refused, region).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(refused.body.errors).toEqual([expect.objectContaining({ path: 'region' })])
    }
    // On a socket's connect too, before any claim.
    const upgrade = await call(`/v1/matchmaking/${queue}?region=%00`, {
      headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
    })
    expect(upgrade.status).toBe(422)
    await upgrade.body?.cancel()
    // The minute's one join is still the player's.
    const joined = await callWithEnv(
      once,
      `/v1/matchmaking/${queue}/tickets`,
      json('POST', { region: 'eu' }, g.token),
    )
    expect(joined.status).toBe(201)
    await joined.body?.cancel()
    for (const member of ['.', '..']) {
      const join = await problem(
        await call(
          `/v1/matchmaking/${queue}/tickets`,
          json('POST', { playerId: 'alice', party: ['alice', member] }, ADMIN_KEY),
        ),
      )
      expect(join, member).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    }
    const claims = await pg()`select player_id from queue_claims where queue = ${queue}`
    expect(claims.map((r) => (r as { player_id: string }).player_id)).toEqual([g.playerId])
  })

  it('500 without internals for an unexpected error, with a request id to find it in logs', async () => {
    const app = createApp()
    app.get('/explode', () => {
      throw new Error('secret connection string postgres://user:pw@host')
    })
    const res = await app.request('/explode', {}, { LOG_LEVEL: 'silent' })
    const text = await res.text()
    expect(res.status).toBe(500)
    expect(res.headers.get('content-type')).toBe(PROBLEM)
    expect(text).not.toContain('secret')
    expect(JSON.parse(text)).toMatchObject({ type: 'urn:nexus:problem:internal', status: 500 })
    expect(JSON.parse(text).requestId).toBe(res.headers.get('x-request-id'))
  })

  it("the request id is always Nexus's own: a client's x-request-id is logged beside it, never used as it", async () => {
    const app = createApp()
    app.get('/explode', () => {
      throw new Error('boom')
    })
    const lines: string[] = []
    const capture = (line: unknown) => void lines.push(String(line))
    const spies = [vi.spyOn(console, 'log'), vi.spyOn(console, 'error')]
    for (const spy of spies) spy.mockImplementation(capture)
    try {
      const sameId = { headers: { 'x-request-id': 'trace-7' } }
      const first = await app.request('/explode', sameId, { LOG_LEVEL: 'info' })
      const second = await app.request('/explode', sameId, { LOG_LEVEL: 'info' })
      const ids = [first, second].map((r) => r.headers.get('x-request-id'))
      expect(ids[0]).not.toBe('trace-7')
      expect(ids[0]).not.toBe(ids[1])
      expect(((await first.json()) as { requestId: string }).requestId).toBe(ids[0])
      const requestLines = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.msg === 'request')
      expect(requestLines.map((l) => [l.requestId, l.clientRequestId])).toEqual([
        [ids[0], 'trace-7'],
        [ids[1], 'trace-7'],
      ])
      // An id that could break a log line or a search is not logged at all.
      lines.length = 0
      await app.request('/explode', { headers: { 'x-request-id': 'a"b c' } }, { LOG_LEVEL: 'info' })
      const bad = lines
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .find((l) => l.msg === 'request')
      expect(bad).toBeDefined()
      expect(bad).not.toHaveProperty('clientRequestId')
    } finally {
      for (const spy of spies) spy.mockRestore()
    }
  })

  it('500 for an error Postgres reports (it has a SQLSTATE): the database answered', async () => {
    const app = createApp()
    app.get('/divide', async (c) => c.json(await getSql(c.env).query('select 1 / 0 as x')))
    const res = await app.request('/divide', {}, { ...env, LOG_LEVEL: 'silent' })
    expect(res.status).toBe(500)
    expect(((await res.json()) as { type: string }).type).toBe('urn:nexus:problem:internal')
  })
})

describe("a Durable Object the runtime cannot reach now is 503, not a bug's 500", () => {
  /** A LEADERBOARD binding whose every board call fails as the runtime makes it fail. */
  function failingBoards(error: Error): unknown {
    const stub = new Proxy({}, { get: () => () => Promise.reject(error) })
    return { getByName: () => stub, idFromName: () => ({}), get: () => stub }
  }
  const runtimeError = (message: string, props: Record<string, boolean>) =>
    Object.assign(new Error(message), props)

  it('a reset by a deploy is 503 unavailable; an overloaded object is 503 with Retry-After; our own throw is 500', async () => {
    const board = await createBoard()
    const guest = await newGuest()
    const submit = (LEADERBOARD: unknown) =>
      callWithEnv(
        { LEADERBOARD: LEADERBOARD as never, LOG_LEVEL: 'silent' },
        `/v1/leaderboards/${board}/scores`,
        json('POST', { score: 10 }, guest.token, { 'idempotency-key': crypto.randomUUID() }),
      )

    const reset = await submit(
      failingBoards(
        runtimeError('Durable Object reset because its code was updated.', { retryable: true }),
      ),
    )
    expect(await problem(reset)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    expect(reset.headers.get('retry-after')).toBeNull()

    const overloaded = await submit(
      failingBoards(runtimeError('Durable Object is overloaded.', { overloaded: true })),
    )
    expect(await problem(overloaded)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    // Past the SDK's 5 s cap on retrying by itself: it hands the error back, and load is shed.
    const wait = Number(overloaded.headers.get('retry-after'))
    expect(wait).toBeGreaterThanOrEqual(6)
    expect(wait).toBeLessThanOrEqual(15)

    const bug = await submit(failingBoards(runtimeError('x is undefined', { remote: true })))
    expect(await problem(bug)).toMatchObject({ status: 500, type: 'urn:nexus:problem:internal' })

    // The real board saw none of it.
    const standing = await call(`/v1/leaderboards/${board}/players/me`, bearer(guest.token))
    expect(((await standing.json()) as { entry: unknown }).entry).toBeNull()
  })
})

describe('a Neon that takes a query and never answers', () => {
  it('is given up on: a guest sign-in answers 503, not never', async () => {
    const deviceId = `silent-neon-${crypto.randomUUID()}`
    const res = await callWithEnv(
      {
        DATABASE_URL: testEnv.TEST_SILENT_DATABASE_URL,
        NEON_LOCAL_RELAY: testEnv.TEST_SILENT_NEON_RELAY,
        LOG_LEVEL: 'silent',
      },
      '/v1/auth/guest',
      json('POST', { deviceId }),
    )
    expect(await problem(res)).toMatchObject({
      status: 503,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:unavailable',
    })
  })
})

describe('the OpenAPI document lists the statuses any route may answer', () => {
  it('503 with Postgres unreachable, on a route that reads it; every operation lists 500 and 503', async () => {
    const guest = await call('/v1/auth/guest', json('POST', { deviceId: 'doc-503-device' }))
    const { token } = (await guest.json()) as { token: string }
    const res = await callWithEnv(
      {
        DATABASE_URL: testEnv.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: testEnv.TEST_UNREACHABLE_NEON_RELAY,
      },
      '/v1/players/me/rewards',
      bearer(token),
    )
    expect(await problem(res)).toMatchObject({
      status: 503,
      contentType: PROBLEM,
      type: 'urn:nexus:problem:unavailable',
    })
    const doc = (await (await call('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, unknown> }>>
    }
    const missing: string[] = []
    for (const [path, ops] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(ops)) {
        for (const status of ['500', '503']) {
          if (!op.responses[status]) missing.push(`${method} ${path} ${status}`)
        }
      }
    }
    expect(missing).toEqual([])
    expect(Object.keys(doc.paths).length).toBeGreaterThan(20)
  })
})

describe('which database errors are 503', () => {
  it("Postgres saying it cannot serve now (its backend terminated: 57P01) is; a query's own error is not", async () => {
    const failure = async (query: string) => {
      try {
        await getSql(env as never).query(query)
      } catch (err) {
        return err
      }
      throw new Error(`no error from ${query}`)
    }
    expect(
      isDatabaseUnreachable(await failure('select pg_terminate_backend(pg_backend_pid())')),
    ).toBe(true)
    expect(isDatabaseUnreachable(await failure('select * from no_such_table'))).toBe(false)
  })

  it("Neon's endpoint failing without a SQLSTATE is, but not its answer being too large (HTTP 507: the query's own doing)", () => {
    // As the driver makes them from Neon's HTTP answers (it names the status in the message).
    const answered = (status: number, body: string) =>
      new NeonDbError(`Server error (HTTP status ${status}): ${body}`)
    expect(isDatabaseUnreachable(answered(502, 'bad gateway'))).toBe(true)
    expect(isDatabaseUnreachable(answered(503, 'compute is waking up'))).toBe(true)
    expect(
      isDatabaseUnreachable(answered(507, 'response is too large (max is 10485760 bytes)')),
    ).toBe(false)
  })

  it('a request too large for Neon (HTTP 413, the query’s own doing) is not unreachable', async () => {
    // A real one: the relay refuses bodies over 10 MiB as Neon does.
    const tooLarge = await getSql(env as never)
      .query('select length($1::text)', ['x'.repeat(11 * 1024 * 1024)])
      .then(
        () => null,
        (err: unknown) => err,
      )
    expect(tooLarge).toBeInstanceOf(NeonDbError)
    expect(String((tooLarge as Error).message)).toContain('413')
    expect(isDatabaseUnreachable(tooLarge)).toBe(false)
  })

  it('a query cancelled by its statement timeout (57014) may succeed again, and is 503; a wrong query is not', async () => {
    const sql = getSql(env as never)
    const timedOut = await sql
      .transaction([sql.query('set local statement_timeout = 10'), sql.query('select pg_sleep(1)')])
      .then(
        () => null,
        (err: unknown) => err,
      )
    expect(pgErrorCode(timedOut)).toBe('57014')
    expect(isTransientDatabaseError(timedOut)).toBe(true)
    const wrong = await sql.query('select * from no_such_table').then(
      () => null,
      (err: unknown) => err,
    )
    expect(isTransientDatabaseError(wrong)).toBe(false)
  })
})
