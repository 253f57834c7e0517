import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import { INVITE_TTL_SECONDS, MAX_PARTY_SIZE } from '../../workers/core/party.ts'
import { PARTY_CHANGES_PER_MINUTE } from '../../workers/middleware/rate-limit.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { recordPartyTicket, stalePartyTickets } from '../../workers/parties/store.ts'
import { runScheduled } from '../../workers/scheduled.ts'
import { cancelStaleTickets, retryStalePartyTickets } from '../../workers/parties/stale-tickets.ts'
import { verifySessionToken } from '../../workers/lib/session-token.ts'
import { createBoard, holdLock, pg } from './helpers/boards.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfMinuteTurn,
  json,
  problem,
} from './helpers/http.ts'
import {
  graceUntil,
  createQueue,
  joinFor,
  newClock,
  poolOf,
  queueId,
  rig,
  recordingCreator,
  holdSigning,
  sessionCalls,
  ticketOf,
  type Ticket,
  type Found,
  type Queued,
} from './helpers/matchmaking.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { OPEN_CONNECTIONS } from '../../workers/lib/settle-at-most.ts'
import { closed, collect, connect, nextOfType, until } from './helpers/sockets.ts'

interface Party {
  id: string
  leader: string
  members: { playerId: string; joinedAt: string }[]
  invites: { playerId: string; invitedAt: string; expiresAt: string }[]
  ticketId: string | null
  tickets: string[]
  createdAt: string
}
interface Player {
  playerId: string
  token: string
}

/** A player with a real player token (as an identity provider's player: no row until used). */
async function player(id = `pp-${crypto.randomUUID()}`): Promise<Player> {
  return { playerId: id, token: (await issuePlayerToken(env, id)).token }
}

function players(n: number): Promise<Player[]> {
  return Promise.all(Array.from({ length: n }, () => player()))
}

function send(method: string, path: string, who: Player | string, body?: unknown) {
  const token = typeof who === 'string' ? who : who.token
  return call(path, body === undefined ? { ...bearer(token), method } : json(method, body, token))
}

async function ok<T = Party>(res: Promise<Response>, status = 200): Promise<T> {
  const r = await res
  if (r.status !== status) throw new Error(`expected ${status}, got ${r.status}: ${await r.text()}`)
  return (await r.json()) as T
}

const create = (p: Player) => ok(send('POST', '/v1/parties', p), 201)
const invite = (partyId: string, by: Player, who: Player) =>
  send('POST', `/v1/parties/${partyId}/invites`, by, { playerId: who.playerId })
const accept = (partyId: string, p: Player) => send('POST', `/v1/parties/${partyId}/members`, p)
const leave = (partyId: string, by: Player, who = 'me') =>
  send('DELETE', `/v1/parties/${partyId}/members/${who}`, by)
const uninvite = (partyId: string, by: Player, who = 'me') =>
  send('DELETE', `/v1/parties/${partyId}/invites/${who}`, by)
const myInvites = async (p: Player) =>
  (
    await ok<{ invites: { partyId: string; leader: string; expiresAt: string }[] }>(
      send('GET', '/v1/players/me/party-invites', p),
    )
  ).invites

/**
 * A member leaves and comes back as the routes would commit it, without either change's cancel
 * reaching the pool (as when it cannot be reached): the party's tickets from before stay noted.
 */
async function leaveAndComeBackUnseen(partyId: string, playerId: string): Promise<void> {
  const sql = pg()
  await sql`delete from party_members where party_id = ${partyId} and player_id = ${playerId}`
  await sql`update parties set updated_at = clock_timestamp() where id = ${partyId}`
  await sql`insert into party_members (party_id, player_id) values (${partyId}, ${playerId})`
  await sql`update parties set updated_at = clock_timestamp() where id = ${partyId}`
}

/**
 * A member leaves as the leave route commits it, without its cancel reaching any pool (one that
 * cannot be reached, or a request cut off after the commit): the party's tickets stay noted.
 */
async function leaveUnseen(partyId: string, playerId: string): Promise<void> {
  await pg()`with gone as (
      delete from party_members where party_id = ${partyId} and player_id = ${playerId}
      returning player_id
    )
    update parties set updated_at = clock_timestamp()
     where id = ${partyId} and exists (select 1 from gone)`
}

/** A party of `members` led by the first, formed through the routes. */
async function formParty(members: Player[]): Promise<Party> {
  const [leader, ...rest] = members
  const party = await create(leader!)
  for (const m of rest) {
    await ok(invite(party.id, leader!, m), 201)
    await ok(accept(party.id, m))
  }
  return ok(send('GET', '/v1/parties/me', leader!))
}

/**
 * A ticket's party notes driven by hand, in its pool: `owe` notes one owed for a party (as the
 * write that makes a party's ticket does), `record` sends that party's note and takes its answer
 * (whether the ticket was cancelled for it).
 */
function byHand(
  queue: string,
  ticketId: string,
  steps: (notes: {
    owe(partyId: string): void
    record(partyId: string): Promise<boolean>
  }) => Promise<void>,
): Promise<void> {
  return runInDurableObject(poolOf(queue), async (inst: MatchPool, state) => {
    const row = state.storage.sql.exec(`SELECT * FROM tickets WHERE id = ?`, ticketId).one()
    const pool = inst as unknown as {
      owePartyNote(partyId: string, ticketId: string): void
      recordPartyTicket(partyId: string, row: unknown): Promise<boolean>
    }
    await steps({
      owe: (partyId) => pool.owePartyNote(partyId, ticketId),
      record: (partyId) => pool.recordPartyTicket(partyId, row),
    })
  })
}

/** Everything Neon holds about a party (expired invites included), to show nothing changed. */
async function stored(partyId: string) {
  const sql = pg()
  const [party, members, invites] = await Promise.all([
    sql`select leader, ticket_id, updated_at from parties where id = ${partyId}`,
    sql`select player_id, joined_at from party_members where party_id = ${partyId} order by player_id`,
    sql`select player_id, expires_at from party_invites where party_id = ${partyId} order by player_id`,
  ])
  return JSON.stringify({ party, members, invites })
}

async function expectProblem(res: Promise<Response>, status: number, type: string) {
  const p = await problem(await res)
  expect(p.contentType).toBe('application/problem+json')
  expect({ status: p.status, type: p.type }).toEqual({
    status,
    type: `urn:nexus:problem:${type}`,
  })
  return p
}

async function waiting(queue: string): Promise<number> {
  return runInDurableObject(
    poolOf(queue),
    async (inst: MatchPool) => (await inst.stats('eu')).waitingTickets,
  )
}

/**
 * Holds party `partyId`'s row lock for `seconds` (as a membership change does while it runs),
 * then runs `after` in the same transaction; resolves once the lock is taken, with the
 * transaction's end.
 */
/**
 * A party of two (teams of 3) queued by its leader over a socket, each player's socket on the
 * ticket, in a queue with `overrides`, on a clock the test moves.
 */
async function partyQueuedOnSockets(overrides: Record<string, unknown> = {}) {
  const q = await createQueue({ teamSize: 3, maxPartySize: 3, ...overrides })
  const clock = newClock()
  await rig(q, clock)
  const [a, b] = await players(2)
  await formParty([a!, b!])
  const url = `/v1/matchmaking/${q}`
  const wb = await connect(url, b!.token)
  const wa = await connect(url, a!.token)
  wa.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
  const { ticketId } = await nextOfType<Queued>(wa, 'queued')
  await nextOfType<Queued>(wb, 'queued')
  return { q, clock, a, b, url, wa, wb, ticketId }
}

/**
 * `n` ended parties' notes of a ticket each in the pool `pool` (`queue:region`), noted 10 minutes
 * ago (stale); the parties' ids.
 */
async function staleNotes(n: number, pool: string): Promise<string[]> {
  const parties = Array.from({ length: n }, () => crypto.randomUUID())
  await pg().query(
    `insert into party_tickets (party_id, ticket_id, noted_at)
     select p, $2 || ':' || gen_random_uuid(), now() - interval '10 minutes'
       from unnest($1::text[]) p`,
    [parties, pool],
  )
  return parties
}

async function holdPartyLock(
  partyId: string,
  seconds: number,
  after: { text: string; params: unknown[] }[] = [],
): Promise<{ done: Promise<unknown>; contended: () => Promise<true> }> {
  return holdLock(
    { text: 'select id from parties where id = $1 for update', params: [partyId] },
    seconds,
    after,
  )
}

/**
 * A party one place short of full plus `x`'s invite, which runs out in two seconds: the setting
 * of the invite-expiry races below.
 */
async function fullPartyWithExpiringInvite() {
  const [leader, ...rest] = await players(MAX_PARTY_SIZE + 1)
  const members = rest.slice(0, MAX_PARTY_SIZE - 2)
  const [x, y] = rest.slice(MAX_PARTY_SIZE - 2)
  const party = await formParty([leader!, ...members])
  await ok(invite(party.id, leader!, x!), 201)
  await pg()`update party_invites set expires_at = clock_timestamp() + interval '2 seconds'
             where party_id = ${party.id} and player_id = ${x!.playerId}`
  return { party, leader: leader!, x: x!, y: y! }
}

/** Whether `x`'s invite to the party has not run out yet (the race below needs it not to). */
async function inviteStillPending(partyId: string, x: Player): Promise<boolean> {
  const [row] = await pg()`select expires_at > clock_timestamp() as pending from party_invites
                           where party_id = ${partyId} and player_id = ${x.playerId}`
  return row?.pending === true
}

describe('forming a party', () => {
  it('create, invite, list invites, accept: members and invitees read the party', async () => {
    const [a, b, c] = await players(3)
    const party = await create(a!)
    expect(party).toMatchObject({ leader: a!.playerId, invites: [], ticketId: null })
    expect(party.members.map((m) => m.playerId)).toEqual([a!.playerId])
    expect(await ok(send('GET', '/v1/parties/me', a!))).toEqual(party)
    await expectProblem(send('GET', '/v1/parties/me', b!), 404, 'not-found')

    const before = Date.now()
    const invited = await ok(invite(party.id, a!, b!), 201)
    expect(invited.invites.map((i) => i.playerId)).toEqual([b!.playerId])
    const expiresAt = Date.parse(invited.invites[0]!.expiresAt)
    expect(expiresAt).toBeGreaterThanOrEqual(before + INVITE_TTL_SECONDS * 1000 - 5000)
    expect(expiresAt).toBeLessThanOrEqual(Date.now() + INVITE_TTL_SECONDS * 1000 + 5000)

    const received = await myInvites(b!)
    expect(received).toEqual([
      expect.objectContaining({
        partyId: party.id,
        leader: a!.playerId,
        expiresAt: invited.invites[0]!.expiresAt,
      }),
    ])
    // The invitee reads the party before deciding; a stranger cannot.
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).id).toBe(party.id)
    await expectProblem(send('GET', `/v1/parties/${party.id}`, c!), 404, 'not-found')

    // Inviting again restarts the same invite's time: one about to run out has its full time.
    await pg()`update party_invites set expires_at = now() + interval '1 minute'
               where party_id = ${party.id} and player_id = ${b!.playerId}`
    const refreshedAt = Date.now()
    const again = await ok(invite(party.id, a!, b!), 200)
    expect(again.invites).toHaveLength(1)
    expect(Date.parse(again.invites[0]!.expiresAt)).toBeGreaterThanOrEqual(
      refreshedAt + INVITE_TTL_SECONDS * 1000 - 5000,
    )

    const joined = await ok(accept(party.id, b!))
    expect(joined.members.map((m) => m.playerId)).toEqual([a!.playerId, b!.playerId])
    expect(joined.invites).toEqual([])
    expect(await myInvites(b!)).toEqual([])
    // Accepting again, as a member: the party, unchanged.
    const state = await stored(party.id)
    expect(await ok(accept(party.id, b!))).toEqual(joined)
    expect(await stored(party.id)).toBe(state)
    expect(await ok(send('GET', '/v1/parties/me', b!))).toEqual(joined)
  })

  it('a player in a party cannot form or join another (409, naming the party); a create sent again while its first left the caller alone leading a party, no invites out (its answer lost), answers that party', async () => {
    const [a, b, c] = await players(3)
    const p1 = await create(a!)
    // Sent again: the party it made, 200, and no second one.
    expect(await ok(send('POST', '/v1/parties', a!), 200)).toEqual(p1)
    const led = await pg()`select id from parties where leader = ${a!.playerId}`
    expect(led).toEqual([{ id: p1.id }])
    // Made more than 10 minutes ago, it is no longer what a create just left: 409.
    await pg()`update parties set created_at = now() - interval '11 minutes' where id = ${p1.id}`
    expect((await send('POST', '/v1/parties', a!)).status).toBe(409)
    await pg()`update parties set created_at = now() where id = ${p1.id}`
    // Nor with an invite out.
    await ok(invite(p1.id, a!, c!), 201)
    const again = await expectProblem(send('POST', '/v1/parties', a!), 409, 'conflict')
    expect(again.detail).toContain(p1.id)
    expect(again.body.partyId).toBe(p1.id)
    const p2 = await create(b!)
    await ok(invite(p2.id, b!, a!), 201)
    const state = [await stored(p1.id), await stored(p2.id)]
    const taken = await expectProblem(accept(p2.id, a!), 409, 'conflict')
    expect(taken.detail).toContain(p1.id)
    // Nothing moved; the invite stays, to accept after leaving.
    expect([await stored(p1.id), await stored(p2.id)]).toEqual(state)
    expect((await leave(p1.id, a!)).status).toBe(204)
    expect((await ok(accept(p2.id, a!))).members.map((m) => m.playerId)).toEqual([
      b!.playerId,
      a!.playerId,
    ])
  })

  it('forming a party and accepting take no body: a field is 422, broken JSON 400, another type 415; nothing is formed until a good one', async () => {
    const [a, b] = await players(2)
    const party = await create(a!)
    await ok(invite(party.id, a!, b!), 201)
    const state = await stored(party.id)
    for (const path of ['/v1/parties', `/v1/parties/${party.id}/members`]) {
      const raw = (body: string, type: string) =>
        call(path, {
          method: 'POST',
          headers: { authorization: `Bearer ${b!.token}`, 'content-type': type },
          body,
        })
      await expectProblem(raw('{"name":"squad"}', 'application/json'), 422, 'validation')
      await expectProblem(raw('{"name":', 'application/json'), 400, 'malformed-json')
      await expectProblem(raw('join me', 'text/plain'), 415, 'unsupported-media-type')
      // The JSON types every route takes alike (those with a body schema are gated by the
      // OpenAPI layer too): a versioned vendor type, or a stray `;`, is not one of them.
      for (const type of ['application/vnd.game.v1+json', 'application/json;']) {
        await expectProblem(raw('{}', type), 415, 'unsupported-media-type')
      }
    }
    await expectProblem(send('GET', '/v1/parties/me', b!), 404, 'not-found')
    // With parameters, JSON is JSON: the form goes through.
    const formed = await call('/v1/parties', {
      method: 'POST',
      headers: {
        authorization: `Bearer ${b!.token}`,
        'content-type': 'application/json; charset=utf-8',
      },
      body: '{}',
    })
    expect(formed.status).toBe(201)
    await formed.body?.cancel()
    expect(await stored(party.id)).toBe(state)
  })

  it('the admin key is not a player: 403 on every party route', async () => {
    const [a] = await players(1)
    const party = await create(a!)
    const id = party.id
    const routes: [string, string, unknown?][] = [
      ['POST', '/v1/parties'],
      ['GET', '/v1/parties/me'],
      ['GET', `/v1/parties/${id}`],
      ['POST', `/v1/parties/${id}/invites`, { playerId: 'someone' }],
      ['DELETE', `/v1/parties/${id}/invites/someone`],
      ['POST', `/v1/parties/${id}/members`],
      ['DELETE', `/v1/parties/${id}/members/${a!.playerId}`],
      ['GET', '/v1/players/me/party-invites'],
    ]
    const state = await stored(id)
    for (const [method, path, body] of routes) {
      await expectProblem(send(method, path, ADMIN_KEY, body), 403, 'forbidden')
    }
    await expectProblem(call('/v1/parties/me'), 401, 'unauthorized')
    expect(await stored(id)).toBe(state)
  })
})

describe('declining, revoking, leaving', () => {
  it('the invitee declines, the leader revokes; repeats answer 204 again', async () => {
    const [a, b, c, d, e] = await players(5)
    const party = await formParty([a!, d!])
    await ok(invite(party.id, a!, b!), 201)
    await ok(invite(party.id, a!, c!), 201)
    await ok(invite(party.id, a!, e!), 201)

    expect((await uninvite(party.id, b!)).status).toBe(204)
    expect((await uninvite(party.id, b!)).status).toBe(204)
    expect(await myInvites(b!)).toEqual([])
    await expectProblem(send('GET', `/v1/parties/${party.id}`, b!), 404, 'not-found')
    await expectProblem(accept(party.id, b!), 404, 'not-found')

    expect((await uninvite(party.id, a!, c!.playerId)).status).toBe(204)
    expect((await uninvite(party.id, a!, c!.playerId)).status).toBe(204)
    await expectProblem(accept(party.id, c!), 404, 'not-found')

    // Someone else's invite: a member who does not lead is 403, a stranger 404.
    const state = await stored(party.id)
    const member = await expectProblem(uninvite(party.id, d!, e!.playerId), 403, 'forbidden')
    expect(member.detail).toContain(a!.playerId)
    await expectProblem(uninvite(party.id, c!, e!.playerId), 404, 'not-found')
    expect(await stored(party.id)).toBe(state)
    expect(
      (await ok(send('GET', `/v1/parties/${party.id}`, e!))).invites.map((i) => i.playerId),
    ).toEqual([e!.playerId])
  })

  it('a leaving leader hands over to the longest-standing member; the last to leave ends the party', async () => {
    const [a, b, c, d, x] = await players(5)
    const party = await formParty([a!, b!, c!])
    expect(party.members.map((m) => m.playerId)).toEqual([a!.playerId, b!.playerId, c!.playerId])

    expect((await leave(party.id, a!)).status).toBe(204)
    expect((await leave(party.id, a!)).status).toBe(204)
    const handed = await ok(send('GET', `/v1/parties/${party.id}`, c!))
    expect(handed.leader).toBe(b!.playerId)
    expect(handed.members.map((m) => m.playerId)).toEqual([b!.playerId, c!.playerId])
    await expectProblem(send('GET', `/v1/parties/${party.id}`, a!), 404, 'not-found')
    // The new leader leads: invites and removes.
    await ok(invite(party.id, b!, d!), 201)
    await ok(accept(party.id, d!))
    await expectProblem(invite(party.id, c!, x!), 403, 'forbidden')

    expect((await leave(party.id, b!, c!.playerId)).status).toBe(204)
    expect((await leave(party.id, b!, c!.playerId)).status).toBe(204)
    await expectProblem(send('GET', '/v1/parties/me', c!), 404, 'not-found')
    // Removing someone else: the removed player is now a stranger (404), a member 403.
    const state = await stored(party.id)
    await expectProblem(leave(party.id, c!, b!.playerId), 404, 'not-found')
    await expectProblem(leave(party.id, d!, b!.playerId), 403, 'forbidden')
    expect(await stored(party.id)).toBe(state)

    await ok(invite(party.id, b!, x!), 201)
    expect((await leave(party.id, b!, b!.playerId)).status).toBe(204)
    expect((await ok(send('GET', '/v1/parties/me', d!))).leader).toBe(d!.playerId)
    expect((await leave(party.id, d!)).status).toBe(204)
    const sql = pg()
    expect(await sql`select id from parties where id = ${party.id}`).toEqual([])
    // Its invites went with it.
    expect(await sql`select 1 from party_invites where party_id = ${party.id}`).toEqual([])
    expect(await myInvites(x!)).toEqual([])
    expect((await leave(party.id, d!)).status).toBe(204)
    await expectProblem(accept(party.id, x!), 404, 'not-found')
  })
})

describe('invite refusals change nothing', () => {
  it('403 for members, 404 for strangers, 409 for members and a full party, 422 for bad input', async () => {
    const [a, b, c, s] = await players(4)
    const party = await formParty([a!, b!])
    const state = await stored(party.id)
    await expectProblem(invite(party.id, b!, c!), 403, 'forbidden')
    await expectProblem(invite(party.id, s!, c!), 404, 'not-found')
    const self = await expectProblem(invite(party.id, a!, a!), 409, 'conflict')
    expect(self.detail).toContain('already a member')
    // A member (as after a retried invite the player accepted meanwhile): `member: true`, which a
    // full party's refusal does not carry.
    const member = await expectProblem(invite(party.id, a!, b!), 409, 'conflict')
    expect(member.body.member).toBe(true)
    await expectProblem(invite(crypto.randomUUID(), a!, c!), 404, 'not-found')
    const bad: [string, unknown][] = [
      [`/v1/parties/${party.id}/invites`, {}],
      [`/v1/parties/${party.id}/invites`, { playerId: 'x'.repeat(129) }],
      [`/v1/parties/${party.id}/invites`, { playerId: 'has space' }],
      [`/v1/parties/${party.id}/invites`, { playerId: c!.playerId, extra: 1 }],
      // `me` names the caller in paths: a member called `me` could never be removed.
      [`/v1/parties/${party.id}/invites`, { playerId: 'me' }],
      ['/v1/parties/not-a-party/invites', { playerId: c!.playerId }],
    ]
    for (const [path, body] of bad) {
      const p = await expectProblem(send('POST', path, a!, body), 422, 'validation')
      expect((p.body.errors as unknown[]).length).toBeGreaterThan(0)
    }
    await expectProblem(
      call(`/v1/parties/${party.id}/invites`, {
        method: 'POST',
        headers: { authorization: `Bearer ${a!.token}`, 'content-type': 'application/json' },
        body: '{"playerId":',
      }),
      400,
      'malformed-json',
    )
    await expectProblem(send('GET', '/v1/parties/12345', a!), 422, 'validation')
    await expectProblem(
      send('DELETE', `/v1/parties/${party.id}/members/a b`, a!),
      422,
      'validation',
    )
    expect(await stored(party.id)).toBe(state)
  })

  it(`a party holds at most ${MAX_PARTY_SIZE} members and pending invites`, async () => {
    const [a, b, ...rest] = await players(MAX_PARTY_SIZE + 1)
    const party = await formParty([a!, b!])
    const invitees = rest.slice(0, MAX_PARTY_SIZE - 2)
    for (const p of invitees) await ok(invite(party.id, a!, p), 201)
    const state = await stored(party.id)
    const full = await expectProblem(
      invite(party.id, a!, rest[MAX_PARTY_SIZE - 2]!),
      409,
      'conflict',
    )
    expect(full.detail).toContain(String(MAX_PARTY_SIZE))
    expect(full.body).toMatchObject({ limit: MAX_PARTY_SIZE })
    expect(full.body.member).toBeUndefined()
    expect(await stored(party.id)).toBe(state)
    // Re-inviting someone already counted is a refresh, not a new place.
    await ok(invite(party.id, a!, invitees[0]!), 200)
    // An expired invite frees its place, and the next invite write sweeps it away.
    await pg()`update party_invites set expires_at = now() - interval '1 second'
                where party_id = ${party.id} and player_id = ${invitees[1]!.playerId}`
    await ok(invite(party.id, a!, rest[MAX_PARTY_SIZE - 2]!), 201)
    expect(
      await pg()`select 1 from party_invites where party_id = ${party.id} and player_id = ${invitees[1]!.playerId}`,
    ).toEqual([])
  })

  it('an expired invite is not listed and cannot be accepted', async () => {
    const [a, b] = await players(2)
    const party = await create(a!)
    await ok(invite(party.id, a!, b!), 201)
    await pg()`update party_invites set expires_at = now() - interval '1 second'
                where party_id = ${party.id} and player_id = ${b!.playerId}`
    expect(await myInvites(b!)).toEqual([])
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).invites).toEqual([])
    await expectProblem(send('GET', `/v1/parties/${party.id}`, b!), 404, 'not-found')
    const state = await stored(party.id)
    const p = await expectProblem(accept(party.id, b!), 404, 'not-found')
    expect(p.detail).toContain('expired')
    // A refused invite sweeps nothing either: the expired row is still there.
    await expectProblem(invite(party.id, a!, a!), 409, 'conflict')
    expect(await stored(party.id)).toBe(state)
    await expectProblem(send('GET', '/v1/parties/me', b!), 404, 'not-found')
    // Inviting again sweeps the expired invite and makes a new one, which can be accepted.
    await ok(invite(party.id, a!, b!), 201)
    expect((await ok(accept(party.id, b!))).members).toHaveLength(2)
  })
})

describe('party changes per minute', () => {
  it(`refuses a player past ${PARTY_CHANGES_PER_MINUTE} party changes a minute (a create and leave loop) with 429 and Retry-After, changing nothing; other players change theirs`, async () => {
    const [p, other] = (await players(2)) as [Player, Player]
    let refused: Response | undefined
    // Which change was refused, and the party a refused leave was to leave.
    let refusedLeaving: string | undefined
    // Two minutes' worth at most: a window may turn once inside the loop.
    for (let i = 0; i < PARTY_CHANGES_PER_MINUTE + 2 && !refused; i++) {
      const made = await send('POST', '/v1/parties', p)
      if (made.status === 429) {
        refused = made
        break
      }
      const party = (await made.json()) as Party
      const left = await leave(party.id, p)
      if (left.status === 429) {
        refused = left
        refusedLeaving = party.id
      } else await left.body?.cancel()
    }
    expect(refused).toBeDefined()
    expect(await problem(refused!)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThan(0)
    // A refused create made no party; a refused leave left the caller in the party as it was.
    const mine = await send('GET', '/v1/parties/me', p)
    if (refusedLeaving === undefined) expect(mine.status).toBe(404)
    else {
      expect(mine.status).toBe(200)
      const party = (await mine.json()) as Party
      expect(party.id).toBe(refusedLeaving)
      expect(party.members.map((m) => m.playerId)).toEqual([p.playerId])
    }
    await create(other)
  })
})

describe("a player's reads of their own party", () => {
  it('are at most OWN_PARTY_READS_PER_MINUTE a minute (each a Neon query): past it 429 with Retry-After; other players read theirs', async () => {
    await clearOfMinuteTurn(5_000)
    const [p, other] = (await players(2)) as [Player, Player]
    await create(p)
    await create(other)
    const read = (who: Player) =>
      callWithEnv({ OWN_PARTY_READS_PER_MINUTE: '2' }, '/v1/parties/me', bearer(who.token))
    for (let i = 0; i < 2; i++) expect((await read(p)).status).toBe(200)
    const refused = await read(p)
    expect(await problem(refused)).toMatchObject({
      status: 429,
      type: 'urn:nexus:problem:rate-limited',
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0)
    expect((await read(other)).status).toBe(200)
  })
})

describe('malformed party changes', () => {
  it(`cost none of the player's ${PARTY_CHANGES_PER_MINUTE} changes a minute: each is 422, and a well-formed change after them all is taken`, async () => {
    await clearOfMinuteTurn(10_000)
    const [p] = (await players(1)) as [Player]
    const malformed: [string, string, unknown][] = [
      ['POST', '/v1/parties/not-a-uuid/members', undefined],
      ['POST', `/v1/parties/${crypto.randomUUID()}/invites`, { playerId: 'me' }],
      ['POST', '/v1/parties', { bogus: 1 }],
    ]
    for (let i = 0; i < PARTY_CHANGES_PER_MINUTE; i++) {
      const [method, path, body] = malformed[i % malformed.length]!
      const res = await send(method, path, p, body)
      expect(res.status, path).toBe(422)
      await res.body?.cancel()
    }
    const made = await send('POST', '/v1/parties', p)
    expect(made.status).toBe(201)
    await made.body?.cancel()
  })
})

describe('concurrency', () => {
  it('two accepts at once: the player ends in exactly one party, the other keeps its invite', async () => {
    for (let round = 0; round < 3; round++) {
      const [l1, l2, x] = await players(3)
      const [p1, p2] = await Promise.all([create(l1!), create(l2!)])
      await Promise.all([ok(invite(p1.id, l1!, x!), 201), ok(invite(p2.id, l2!, x!), 201)])
      const [r1, r2] = await Promise.all([accept(p1.id, x!), accept(p2.id, x!)])
      expect([r1.status, r2.status].sort()).toEqual([200, 409])
      const [won, lost] = r1.status === 200 ? [p1, p2] : [p2, p1]
      const loser = await problem(r1.status === 200 ? r2 : r1)
      expect(loser.type).toBe('urn:nexus:problem:conflict')
      expect(loser.detail).toContain(won.id)
      const sql = pg()
      expect(
        await sql`select party_id from party_members where player_id = ${x!.playerId}`,
      ).toEqual([{ party_id: won.id }])
      expect(
        await sql`select player_id from party_members where party_id = ${lost.id}`,
      ).toHaveLength(1)
      expect(
        await sql`select 1 from party_invites where party_id = ${lost.id} and player_id = ${x!.playerId}`,
      ).toHaveLength(1)
      expect(
        await sql`select 1 from party_invites where party_id = ${won.id} and player_id = ${x!.playerId}`,
      ).toHaveLength(0)
    }
  })

  it('an invite written while an accept waits for the lock past its invite’s expiry: the accept is refused, the party never passes its size', async () => {
    const { party, x, y } = await fullPartyWithExpiringInvite()
    // The leader's invite of Y holds the party's lock past X's expiry and, X's invite no longer
    // holding a place, writes Y's.
    const inviteY = await holdPartyLock(party.id, 3, [
      {
        text: `insert into party_invites (party_id, player_id, expires_at)
               values ($1, $2, now() + interval '1 hour')`,
        params: [party.id, y.playerId],
      },
    ])
    // X accepts before the expiry, and waits for the lock until after it.
    expect(await inviteStillPending(party.id, x)).toBe(true)
    const accepted = accept(party.id, x)
    await inviteY.contended()
    await inviteY.done
    const refused = await expectProblem(accepted, 404, 'not-found')
    expect(refused.detail).toContain('expired')
    const [row] = await pg().query(
      `select (select count(*)::int from party_members where party_id = $1)
            + (select count(*)::int from party_invites
                where party_id = $1 and expires_at > now()) as places`,
      [party.id],
    )
    expect(row).toEqual({ places: MAX_PARTY_SIZE })
  })

  it('an invite that waited for the lock past a pending invite’s expiry counts that place as free', async () => {
    const { party, leader, x, y } = await fullPartyWithExpiringInvite()
    // Something else holds the party's lock past X's expiry (an accept, a leave).
    const holder = await holdPartyLock(party.id, 3)
    // The leader invites Y before X's invite expires; the invite waits until after.
    expect(await inviteStillPending(party.id, x)).toBe(true)
    const invited = invite(party.id, leader, y)
    await holder.contended()
    await holder.done
    expect((await invited).status).toBe(201)
  })
})

describe('queueing as a party over HTTP', () => {
  it('a party that queues and cancels again and again keeps a note of its latest ticket only, which a membership change cancels', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    const clock = newClock()
    await rig(q, clock)
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    const roster = { party: [a!, b!, c!].map((p) => p.playerId) }
    for (let i = 0; i < 25; i++) {
      const t = await ok<Ticket>(send('POST', `/v1/matchmaking/${q}/tickets`, a!, roster), 201)
      await ok(send('DELETE', `/v1/matchmaking/tickets/${t.ticketId}`, a!))
      clock.t += 1000
    }
    const last = await ok<Ticket>(send('POST', `/v1/matchmaking/${q}/tickets`, a!, roster), 201)
    const notes = () =>
      pg()`select ticket_id from party_tickets where party_id = ${party.id} order by ticket_id`
    expect(await notes()).toEqual([{ ticket_id: last.ticketId }])
    expect((await leave(party.id, c!)).status).toBe(204)
    expect(await ticketOf(last.ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await notes()).toEqual([])
  })

  it("the leader's join puts every member on one ticket; members read it, re-join into it, and play on one team", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2, maxRatingGap: 100 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    const res = await send('POST', `/v1/matchmaking/${q}/tickets`, a!, {
      party: [b!.playerId, a!.playerId],
    })
    expect(res.status).toBe(201)
    const ticket = (await res.json()) as Ticket
    expect(ticket.players).toEqual([a!.playerId, b!.playerId])
    expect(ticket.leader).toBe(a!.playerId)
    expect((await ok(send('GET', '/v1/parties/me', b!))).ticketId).toBe(ticket.ticketId)
    expect((await ticketOf(ticket.ticketId, b!.token)).status).toBe('waiting')
    // A member joining alone gets the party's ticket.
    const mine = await ok<Ticket>(send('POST', `/v1/matchmaking/${q}/tickets`, b!, {}))
    expect(mine).toMatchObject({ ticketId: ticket.ticketId, existing: true })
    // So does the leader naming the party again.
    const again = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
    )
    expect(again).toMatchObject({ ticketId: ticket.ticketId, existing: true })
    expect(await waiting(q)).toBe(1)

    const s1 = `${q}-s1`
    const s2 = `${q}-s2`
    await joinFor(q, s1)
    const last = await joinFor(q, s2)
    expect(last.status).toBe('matched')
    const team = new Map(last.match!.players.map((p) => [p.playerId, p.team]))
    expect(team.get(a!.playerId)).toBe(team.get(b!.playerId))
    expect(team.get(s1)).toBe(team.get(s2))
    expect(team.get(s1)).not.toBe(team.get(a!.playerId))
    const forB = await ticketOf(ticket.ticketId, b!.token)
    expect(forB.status).toBe('matched')
    expect(await verifySessionToken(env, forB.match!.token!, forB.match!.sessionId)).toBe(
      b!.playerId,
    )
    // The party outlives its match.
    expect((await ok(send('GET', '/v1/parties/me', a!))).id).toBe(party.id)
  })

  it("a leader's keyed retry after a member left is answered with the first try's ticket (matched), not refused for the roster", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2, maxRatingGap: 100 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    const roster = { party: [a!.playerId, b!.playerId] }
    const keyed = () =>
      call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', roster, a!.token, { 'idempotency-key': 'party-retry-1' }),
      )
    const first = await ok<Ticket>(keyed(), 201)
    await joinFor(q, `${q}-s1`)
    expect((await joinFor(q, `${q}-s2`)).status).toBe('matched')
    // The first answer was lost; meanwhile a member leaves the party.
    expect((await leave(party.id, b!)).status).toBe(204)
    const retry = await ok<Ticket & { existing: boolean }>(keyed(), 200)
    expect(retry).toMatchObject({ ticketId: first.ticketId, status: 'matched', existing: true })
    expect(await verifySessionToken(env, retry.match!.token!, retry.match!.sessionId)).toBe(
      a!.playerId,
    )
    // Without the key, the same body is refused for its roster, as before.
    const unkeyed = await send('POST', `/v1/matchmaking/${q}/tickets`, a!, roster)
    expect(unkeyed.status).toBe(403)
  })

  it('a member who does not lead, a wrong member list, or no party: 403 and no ticket', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 2 })
    await rig(q, newClock())
    const [a, b, c, loner, stranger] = await players(5)
    const party = await formParty([a!, b!, c!])
    const join = (p: Player, ids: Player[]) =>
      send('POST', `/v1/matchmaking/${q}/tickets`, p, { party: ids.map((x) => x.playerId) })
    const cases: [Player, Player[], string][] = [
      [b!, [a!, b!, c!], 'leader'],
      [a!, [a!, b!], 'missing'],
      // Naming only oneself is a solo join in no party; in one, it would leave the rest behind.
      [a!, [a!], 'missing'],
      [b!, [b!], 'leader'],
      [a!, [a!, b!, stranger!], 'Not members'],
      [loner!, [loner!, stranger!], 'no party'],
    ]
    for (const [who, ids, reason] of cases) {
      const p = await expectProblem(join(who, ids), 403, 'forbidden')
      expect(p.detail).toContain(reason)
    }
    // The right list, but more players than this queue's tickets hold.
    const big = await expectProblem(join(a!, [c!, b!, a!]), 422, 'validation')
    expect(big.body.errors).toEqual([{ path: 'party', message: 'at most 2 players' }])
    expect(await waiting(q)).toBe(0)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
  })

  it("a member leaving cancels the party's waiting ticket (party_changed), and members' sockets hear it", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    const wb = await connect(`/v1/matchmaking/${q}`, b!.token)
    const ticket = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, {
        party: [a!, b!, c!].map((p) => p.playerId),
      }),
      201,
    )
    expect((await nextOfType<Queued>(wb, 'queued')).ticketId).toBe(ticket.ticketId)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBe(ticket.ticketId)

    expect((await leave(party.id, c!)).status).toBe(204)
    const cancelled = await nextOfType<{ ticketId: string; reason: string }>(wb, 'cancelled')
    expect(cancelled).toMatchObject({ ticketId: ticket.ticketId, reason: 'party_changed' })
    expect(await ticketOf(ticket.ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await waiting(q)).toBe(0)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    // Leaving again changes nothing more; the party queues again as it now is.
    expect((await leave(party.id, c!)).status).toBe(204)
    const next = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
      201,
    )
    expect(next.ticketId).not.toBe(ticket.ticketId)
    expect(await waiting(q)).toBe(1)
  })

  it('a new member cancels the waiting ticket; an invite alone does not', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, d] = await players(3)
    const party = await formParty([a!, b!])
    const ticket = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
      201,
    )
    await ok(invite(party.id, a!, d!), 201)
    expect((await ticketOf(ticket.ticketId)).status).toBe('waiting')
    const joined = await ok(accept(party.id, d!))
    expect(joined.ticketId).toBeNull()
    expect(await ticketOf(ticket.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await waiting(q)).toBe(0)
  })

  it("a note forgets earlier notes of its own pool only: another region's clock may run behind", async () => {
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    const roster = [a!.playerId, b!.playerId]
    const id = (region: string) => `q-notes:${region}:${crypto.randomUUID()}`
    const notes = async () =>
      (
        await pg()`select ticket_id from party_tickets where party_id = ${party.id} order by ticket_id`
      ).map((r) => r.ticket_id as string)
    // Region us made its ticket at its 995, after eu's made at eu's 1000 had ended; eu's note
    // arrives late. Both stay: their clocks cannot be compared.
    const us = id('us')
    const eu = id('eu')
    expect(await recordPartyTicket(env, party.id, us, roster, 995)).toBe(true)
    expect(await recordPartyTicket(env, party.id, eu, roster, 1000)).toBe(true)
    expect(await notes()).toEqual([eu, us].sort())
    // In one pool, the later ticket's note forgets the earlier one's, and not the other way.
    const eu2 = id('eu')
    expect(await recordPartyTicket(env, party.id, eu2, roster, 1005)).toBe(true)
    expect(await notes()).toEqual([eu2, us].sort())
    expect(await recordPartyTicket(env, party.id, eu, roster, 1000)).toBe(true)
    expect(await notes()).toEqual([eu, eu2, us].sort())
  })

  it('a ticket recorded for a party whose members changed since the join read them is cancelled', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, gone] = await players(3)
    const party = await formParty([a!, b!])
    // The race, laid out in order: a join read [a, b, gone]; `gone` left before the ticket was
    // recorded on the party.
    const ticket = await joinFor(q, a!.playerId, { party: [a!, b!, gone!].map((p) => p.playerId) })
    await byHand(q, ticket.ticketId, async (notes) => {
      // Owed in the write that made the ticket, as a party's join does.
      notes.owe(party.id)
      await notes.record(party.id)
    })
    expect(await ticketOf(ticket.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    // The same roster as the party's members (in any order) is recorded.
    const right = await joinFor(q, a!.playerId, { party: [b!.playerId, a!.playerId] })
    expect(
      await recordPartyTicket(
        env,
        party.id,
        right.ticketId,
        [b!.playerId, a!.playerId],
        right.enqueuedAt,
      ),
    ).toBe(true)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(right.ticketId)
    expect(await recordPartyTicket(env, party.id, 'other', [a!.playerId], Date.now())).toBe(false)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(right.ticketId)
  })

  it('a late answer for a party that no longer holds the ticket, after the note of the party that does decided it, leaves the ticket waiting', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    const ticket = await joinFor(q, a!.playerId, { party: [a!.playerId, b!.playerId] })
    // An old party of the same players had its note sent; the ticket was then handed to this
    // party's join, whose note came back first: current, so the note owed is settled.
    const oldParty = crypto.randomUUID()
    await byHand(q, ticket.ticketId, async (notes) => {
      notes.owe(oldParty)
      notes.owe(party.id)
      expect(await notes.record(party.id)).toBe(false)
      // The old party's answer, late: not current (that party is gone), and no longer its say.
      expect(await notes.record(oldParty)).toBe(false)
    })
    expect((await ticketOf(ticket.ticketId)).status).toBe('waiting')
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(ticket.ticketId)
  })

  it('a party waiting in two queues loses both tickets when the leader removes a member; a matched ticket keeps its match', async () => {
    const q1 = await createQueue({ teamSize: 3, maxPartySize: 3 })
    const q2 = await createQueue({ teamSize: 3, maxPartySize: 3 })
    const q3 = await createQueue({ teamSize: 2, maxPartySize: 2, maxRatingGap: 100 })
    // Each pool's clock a second past the one before: the tickets below are made in that order.
    const start = newClock().t
    for (const [i, q] of [q1, q2, q3].entries()) await rig(q, { t: start + i * 1000 })
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    const join = (q: string, ps: Player[]) =>
      ok<Ticket>(
        send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: ps.map((p) => p.playerId) }),
        201,
      )
    const t1 = await join(q1, [a!, b!, c!])
    const t2 = await join(q2, [a!, b!, c!])
    const both = await ok(send('GET', `/v1/parties/${party.id}`, b!))
    expect(both.ticketId).toBe(t2.ticketId)
    // A member waiting for the first queue finds its ticket too: each queue's, newest first.
    expect(both.tickets).toEqual([t2.ticketId, t1.ticketId])
    // Newest by when the pool made it: a note of the older ticket that Neon took late (its pool
    // retrying it) does not put that ticket first.
    await pg()`update party_tickets set noted_at = clock_timestamp() where ticket_id = ${t1.ticketId}`
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).tickets).toEqual([
      t2.ticketId,
      t1.ticketId,
    ])

    expect((await leave(party.id, a!, c!.playerId)).status).toBe(204)
    for (const t of [t1, t2]) {
      expect(await ticketOf(t.ticketId)).toMatchObject({
        status: 'cancelled',
        reason: 'party_changed',
      })
    }
    expect(await ok(send('GET', `/v1/parties/${party.id}`, b!))).toMatchObject({
      ticketId: null,
      tickets: [],
    })

    // Queued again as a pair, matched, and then a member leaves: the match stands, and the party
    // still points its members at the matched ticket.
    const t3 = await join(q3, [a!, b!])
    const solo = await joinFor(q3, `${q3}-s1`)
    await joinFor(q3, `${q3}-s2`)
    expect((await ticketOf(t3.ticketId)).status).toBe('matched')
    expect(solo.ticketId).not.toBe(t3.ticketId)
    expect((await leave(party.id, b!)).status).toBe(204)
    expect((await ticketOf(t3.ticketId, a!.token)).status).toBe('matched')
    // ... though not as a ticket of the party as it now is, for members who wait for the next.
    expect(await ok(send('GET', `/v1/parties/${party.id}`, a!))).toMatchObject({
      ticketId: t3.ticketId,
      tickets: [],
    })
  })

  it('a ticket a membership change could not cancel (its pool unreachable) is cancelled by the next cron; later notes are not', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    const q2 = await createQueue({ teamSize: 3, maxPartySize: 2 })
    for (const queue of [q, q2]) await rig(queue, newClock())
    const [a, b, c, d, e] = await players(5)
    const party = await formParty([a!, b!, c!])
    await formParty([d!, e!])
    const joinAs = (q: string, leader: Player, ps: Player[]) =>
      ok<Ticket>(
        send('POST', `/v1/matchmaking/${q}/tickets`, leader, {
          party: ps.map((p) => p.playerId),
        }),
        201,
      )
    const t = await joinAs(q, a!, [a!, b!, c!])
    const untouched = await joinAs(q2, d!, [d!, e!])
    // C leaves, and the change commits as the leave route commits it, but the cancellation
    // never reaches the pool: the ticket stays waiting and noted.
    await leaveUnseen(party.id, c!.playerId)
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')

    await runScheduled(env, Date.now())
    expect(await ticketOf(t.ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    const noted = await pg()`select ticket_id from party_tickets where party_id = ${party.id}`
    expect(noted).toHaveLength(0)
    // A party whose members did not change keeps its ticket.
    expect((await ticketOf(untouched.ticketId)).status).toBe('waiting')

    // The party as it now is queues again; that note is newer than the change, so it stands.
    const again = await joinAs(q, a!, [a!, b!])
    await runScheduled(env, Date.now())
    expect((await ticketOf(again.ticketId)).status).toBe('waiting')
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(again.ticketId)
  })

  it("a leave or an accept whose pool is slow to cancel the party's ticket is answered in about 2 s, not after the pool's 10 s deadline, and the cancel still lands after the answer", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c, d] = await players(4)
    const party = await formParty([a!, b!, c!])
    const join = (ps: Player[]) =>
      ok<Ticket>(
        send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: ps.map((p) => p.playerId) }),
        201,
      )
    // The pool's cancels wait at a gate the test opens (a pool that does not answer meanwhile).
    let open!: () => void
    let gate = Promise.resolve()
    const closeGate = () => {
      gate = new Promise<void>((r) => {
        open = r
      })
    }
    await replaceMethod<MatchPool, 'cancel'>(
      poolOf(q),
      'cancel',
      (original) =>
        async function (this: MatchPool, ...args: Parameters<MatchPool['cancel']>) {
          await gate
          return original.apply(this, args)
        },
    )

    // Each answer is timed against the pool's 10 s, not the test's timeout against the whole.
    const timed = async <T>(work: Promise<T>): Promise<T> => {
      const started = Date.now()
      const answer = await work
      expect(Date.now() - started).toBeLessThan(6_000)
      return answer
    }
    const first = await join([a!, b!, c!])
    closeGate()
    expect((await timed(send('DELETE', `/v1/parties/${party.id}/members/me`, c!))).status).toBe(204)
    // Answered while the pool still holds the cancel; it lands once the pool answers.
    expect((await ticketOf(first.ticketId)).status).toBe('waiting')
    open()
    await until(async () =>
      (await ticketOf(first.ticketId)).status === 'cancelled' ? true : undefined,
    )
    expect(await ticketOf(first.ticketId)).toMatchObject({ reason: 'party_changed' })

    // An accept likewise; its answer still names the ticket it has not seen cancelled.
    const second = await join([a!, b!])
    await ok(invite(party.id, a!, d!), 201)
    closeGate()
    const accepted = await timed(ok(accept(party.id, d!)))
    expect(accepted.ticketId).toBe(second.ticketId)
    expect((await ticketOf(second.ticketId)).status).toBe('waiting')
    open()
    await until(async () =>
      (await ticketOf(second.ticketId)).status === 'cancelled' ? true : undefined,
    )
  })

  it("a leave or an accept sent again after its first try committed, but whose cancel never reached the pool, cancels the party's ticket then", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c, d] = await players(4)
    const party = await formParty([a!, b!, c!])
    const joinAs = (ps: Player[]) =>
      ok<Ticket>(
        send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: ps.map((p) => p.playerId) }),
        201,
      )
    const t = await joinAs([a!, b!, c!])
    // C's leave commits as the route commits it, but its cancel is lost (the pool did not
    // answer, or the client's request was cut off after the commit): C's client sends it again.
    await leaveUnseen(party.id, c!.playerId)
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    expect((await leave(party.id, c!)).status).toBe(204)
    expect(await ticketOf(t.ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })

    // The same for an accept: D's first accept commits without its cancel reaching the pool.
    const t2 = await joinAs([a!, b!])
    await ok(invite(party.id, a!, d!), 201)
    await pg()`with inv as (
        delete from party_invites where party_id = ${party.id} and player_id = ${d!.playerId}
        returning party_id
      ), ins as (
        insert into party_members (party_id, player_id) select party_id, ${d!.playerId} from inv
        returning player_id
      )
      update parties set updated_at = clock_timestamp()
       where id = ${party.id} and exists (select 1 from ins)`
    expect((await ticketOf(t2.ticketId)).status).toBe('waiting')
    expect((await accept(party.id, d!)).status).toBe(200)
    expect((await ticketOf(t2.ticketId, a!.token)).status).toBe('cancelled')
    // A ticket noted since the latest change stands through a repeat of that change.
    const t3 = await joinAs([a!, b!, d!])
    expect((await leave(party.id, c!)).status).toBe(204)
    expect((await accept(party.id, d!)).status).toBe(200)
    expect((await ticketOf(t3.ticketId)).status).toBe('waiting')
  })

  it("a party's join first cancels its ticket from before the latest change, so a cron that read that ticket as stale cannot end the join's; the cron cancels one whose party ended", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c, d, e] = await players(5)
    const party = await formParty([a!, b!, c!])
    const pair = await formParty([d!, e!])
    const joinAs = (leader: Player, ps: Player[]) =>
      send('POST', `/v1/matchmaking/${q}/tickets`, leader, { party: ps.map((p) => p.playerId) })
    const t = await ok<Ticket>(joinAs(a!, [a!, b!, c!]), 201)
    const u = await ok<Ticket>(joinAs(d!, [d!, e!]), 201)
    // C leaves and comes back, and neither change reaches the pool (as with the routes when the
    // pool cannot be reached): T is noted before the latest change…
    const sql = pg()
    await leaveAndComeBackUnseen(party.id, c!.playerId)
    // …and a cron run reads it as stale, its call to the pool still to come.
    const readByCron = (await stalePartyTickets(env, null, 1000)).filter(
      (n) => n.partyId === party.id,
    )
    expect(readByCron.map((n) => n.ticketId)).toEqual([t.ticketId])
    // The leader joins again with the same three: T, though its players are the party's again,
    // is cancelled as the change would have cancelled it, and the join gets a ticket of its own.
    const again = await ok<Ticket & { existing: boolean }>(joinAs(a!, [a!, b!, c!]), 201)
    expect(again.existing).toBe(false)
    expect(again.ticketId).not.toBe(t.ticketId)
    expect(await ticketOf(t.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await sql`select ticket_id from party_tickets where party_id = ${party.id}`).toEqual([
      { ticket_id: again.ticketId },
    ])
    // The cron's cancel of what it read arrives now: the join's ticket is not among it.
    await cancelStaleTickets(
      env,
      party.id,
      readByCron.map((n) => n.ticketId),
    )
    expect((await ticketOf(again.ticketId)).status).toBe('waiting')
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(again.ticketId)
    // The pair's party ends (both leave) without its ticket being cancelled.
    await sql`delete from party_members where party_id = ${pair.id}`
    await sql`delete from parties where id = ${pair.id}`

    await runScheduled(env, Date.now())
    expect((await ticketOf(again.ticketId)).status).toBe('waiting')
    expect(await ticketOf(u.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await sql`select 1 from party_tickets where party_id = ${pair.id}`).toHaveLength(0)
  })

  it('a party made again with the same players, whose join was handed the ticket of the party before (ended while its pool was out of reach), keeps it through the cron', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const first = await formParty([a!, b!])
    const joinAs = (leader: Player, ps: Player[]) =>
      send('POST', `/v1/matchmaking/${q}/tickets`, leader, { party: ps.map((p) => p.playerId) })
    const t = await ok<Ticket>(joinAs(a!, [a!, b!]), 201)
    // Both leave, and the pool hears of neither: the party ends with its note of T left for the
    // cron.
    const sql = pg()
    await sql`delete from party_members where party_id = ${first.id}`
    await sql`delete from parties where id = ${first.id}`
    // The same two make a party again and queue: handed T, which holds exactly them.
    const second = await formParty([a!, b!])
    const again = await ok<Ticket & { existing: boolean }>(joinAs(a!, [a!, b!]), 200)
    expect(again).toMatchObject({ ticketId: t.ticketId, existing: true })
    expect(
      (await stalePartyTickets(env, null, 1000)).filter((n) => n.ticketId === t.ticketId),
    ).toEqual([])
    // A leave of the party before sent again (its answer was lost) finishes that change's
    // cancels: not of the ticket the new party holds.
    await leave(first.id, b!)
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    await runScheduled(env, Date.now())
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    expect((await ok(send('GET', `/v1/parties/${second.id}`, b!))).ticketId).toBe(t.ticketId)
    // Once the new party changes, its note of T is stale too, and T is the cron's to cancel.
    await leaveUnseen(second.id, b!.playerId)
    await runScheduled(env, Date.now())
    expect(await ticketOf(t.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
  })

  it('a ticket handed to a party made again with the same players is not cancelled by a change in the party before, which went on without them', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const [a, b, c] = await players(3)
    const first = await formParty([a!, b!])
    const joinAs = (leader: Player, ps: Player[]) =>
      send('POST', `/v1/matchmaking/${q}/tickets`, leader, { party: ps.map((p) => p.playerId) })
    const t = await ok<Ticket>(joinAs(a!, [a!, b!]), 201)
    // C joins, then A and B leave, and the pool hears of none of it: the party goes on as C's,
    // its note of T left stale.
    const sql = pg()
    await sql`insert into party_members (party_id, player_id) values (${first.id}, ${c!.playerId})`
    await sql`update parties set leader = ${c!.playerId}, updated_at = clock_timestamp()
      where id = ${first.id}`
    await sql`delete from party_members where party_id = ${first.id}
      and player_id = any(${[a!.playerId, b!.playerId]})`
    await sql`update parties set updated_at = clock_timestamp() where id = ${first.id}`
    // A and B make a party again and queue: handed T.
    await formParty([a!, b!])
    const again = await ok<Ticket & { existing: boolean }>(joinAs(a!, [a!, b!]), 200)
    expect(again).toMatchObject({ ticketId: t.ticketId, existing: true })
    // C leaves the party before: its change cancels what it noted, not T.
    expect((await leave(first.id, c!)).status).toBeLessThan(300)
    expect((await ticketOf(t.ticketId)).status).toBe('waiting')
  })

  it('the cron tries every stale note on every run: notes whose pool stays down do not keep the ones after them waiting', async () => {
    const sql = pg()
    // 150 notes of ended parties whose tickets are in a pool that does not answer, noted first…
    const down = queueId('down')
    const parties = await staleNotes(150, `${down}:eu`)
    // …and, after them in every order, one whose pool answers.
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const t = await joinFor(q, `${q}-leader`)
    await sql`insert into party_tickets (party_id, ticket_id) values ('ffffffff-ffff-4fff-bfff-ffffffffffff', ${t.ticketId})`
    // The pools' class, patched for the test: a cancel of a ticket of `down` fails.
    type Cancel = (this: MatchPool, ticketId: string, ...rest: unknown[]) => Promise<unknown>
    let realCancel: Cancel | undefined
    const poolDown = (isDown: boolean) =>
      runInDurableObject(poolOf(q), (inst: MatchPool) => {
        const proto = Object.getPrototypeOf(inst) as { cancel: Cancel }
        if (!isDown) {
          proto.cancel = realCancel!
          return
        }
        const cancel = (realCancel = proto.cancel)
        proto.cancel = async function (ticketId, ...rest) {
          if (ticketId.startsWith(`${down}:`)) throw new Error('pool down')
          return cancel.call(this, ticketId, ...rest)
        }
      })
    await poolDown(true)
    try {
      await runScheduled(env, Date.now())
    } finally {
      await poolDown(false)
      await sql`delete from party_tickets where party_id = any(${parties})`
    }
    expect(await ticketOf(t.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await sql`select 1 from party_tickets where ticket_id = ${t.ticketId}`).toHaveLength(0)
  })

  it("a pool that fails a run's cancel is not asked again in that run: its other parties' notes wait for the next, at one wave's cost", async () => {
    const sql = pg()
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    // 30 ended parties' tickets in one region of the queue, whose pool fails every cancel.
    const parties = await staleNotes(30, `${q}:down`)
    let calls = 0
    await replaceMethod<MatchPool, 'cancel'>(
      poolOf(q, 'down'),
      'cancel',
      (cancel) =>
        async function (this: MatchPool, ticketId, ...rest) {
          if (ticketId.startsWith(`${q}:down:`)) {
            calls++
            throw new Error('pool down')
          }
          return cancel.call(this, ticketId, ...rest)
        },
    )
    try {
      await retryStalePartyTickets(env, { from: '0' })
    } finally {
      await sql`delete from party_tickets where party_id = any(${parties})`
    }
    // The parties begun together before the first failure came back: one lane's worth each.
    expect(calls).toBeGreaterThan(0)
    expect(calls).toBeLessThanOrEqual(OPEN_CONNECTIONS)
  })

  it('a cron run walks the stale notes from where it starts round to it again, and stops at its time budget', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [low, high] = [await joinFor(q, `${q}-low`), await joinFor(q, `${q}-high`)]
    // Notes of ended parties on either side of where the run starts.
    const lowParty = `10000000-0000-4000-8000-${crypto.randomUUID().slice(-12)}`
    const highParty = `e0000000-0000-4000-8000-${crypto.randomUUID().slice(-12)}`
    const sql = pg()
    await sql`insert into party_tickets (party_id, ticket_id) values (${lowParty}, ${low.ticketId}), (${highParty}, ${high.ticketId})`
    // Out of time at once: nothing is tried, and the notes wait for the next run.
    expect(await retryStalePartyTickets(env, { budgetMs: -1, from: '8' })).toBe(0)
    expect((await ticketOf(low.ticketId)).status).toBe('waiting')
    // From the middle: the note after it, then, round from the first, the one before it.
    expect(await retryStalePartyTickets(env, { from: '8' })).toBeGreaterThanOrEqual(2)
    for (const t of [low, high]) {
      expect(await ticketOf(t.ticketId)).toMatchObject({
        status: 'cancelled',
        reason: 'party_changed',
      })
    }
    expect(
      await sql`select 1 from party_tickets where party_id in (${lowParty}, ${highParty})`,
    ).toHaveLength(0)
  })

  it('a cron run spends at most its count of calls on stale notes (its subrequests are bounded): the notes left wait for the next run', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [low, high] = [await joinFor(q, `${q}-low`), await joinFor(q, `${q}-high`)]
    const lowParty = `10000000-0000-4000-8000-${crypto.randomUUID().slice(-12)}`
    // Past every party id but this one (other files' notes included), where the run starts.
    const start = 'ffffffff-ffff-4fff-8fff-'
    const highParty = `${start}${crypto.randomUUID().slice(-12)}`
    const sql = pg()
    await sql`insert into party_tickets (party_id, ticket_id) values (${lowParty}, ${low.ticketId}), (${highParty}, ${high.ticketId})`
    // The prune and a page's read leave one call: too few for a party's cancel and forget.
    expect(await retryStalePartyTickets(env, { from: start, maxCalls: 3 })).toBe(0)
    expect((await ticketOf(high.ticketId)).status).toBe('waiting')
    // One call more: the party after the start, and no other.
    expect(await retryStalePartyTickets(env, { from: start, maxCalls: 4 })).toBe(1)
    expect((await ticketOf(high.ticketId)).status).toBe('cancelled')
    expect((await ticketOf(low.ticketId)).status).toBe('waiting')
    expect(await sql`select 1 from party_tickets where party_id = ${lowParty}`).toHaveLength(1)
    expect(await retryStalePartyTickets(env, { from: start })).toBeGreaterThanOrEqual(1)
    expect((await ticketOf(low.ticketId)).status).toBe('cancelled')
  })

  it('a note racing a membership change waits for it and is refused: the change and the note are ordered by the party lock', async () => {
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    // A membership change that holds the party's lock for a moment, as removeMember's does.
    const change = await holdPartyLock(party.id, 0.5, [
      {
        text: `delete from party_members where party_id = $1 and player_id = $2`,
        params: [party.id, c!.playerId],
      },
    ])
    // The join read the old roster; its note arrives while the change holds the lock.
    const noted = recordPartyTicket(
      env,
      party.id,
      'race:eu:ticket',
      [a!, b!, c!].map((p) => p.playerId),
      Date.now(),
    )
    await change.done
    expect(await noted).toBe(false)
    const [row] = await pg().query(
      `select ticket_id, (select count(*)::int from party_tickets where party_id = $1) as noted
         from parties where id = $1`,
      [party.id],
    )
    expect(row).toEqual({ ticket_id: null, noted: 0 })
  })

  it("a party of one is not handed a game server's ticket with others on it: 409, and that ticket stays", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const served = await joinFor(q, a!.playerId, { party: [a!.playerId, b!.playerId] })
    const party = await formParty([a!])
    const refused = await expectProblem(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId] }),
      409,
      'conflict',
    )
    expect(refused.detail).toContain(a!.playerId)
    // B's place is not given up for A's party join; the party notes no ticket.
    expect((await ticketOf(served.ticketId)).status).toBe('waiting')
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    // Alone, A is handed the ticket they are on, as a member reconnecting is.
    const solo = await ok<Ticket>(send('POST', `/v1/matchmaking/${q}/tickets`, a!, {}))
    expect(solo.ticketId).toBe(served.ticketId)
  })

  it('a game server still queues any party with the admin key', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const t = await joinFor(q, `${q}-x`, { party: [`${q}-x`, `${q}-y`] })
    expect(t.players).toEqual([`${q}-x`, `${q}-y`])
  })

  it("a party that fills a one-team queue's match by itself plays it off the queue's board: it beat nobody outside it; two tickets' match reaches it", async () => {
    const board = await createBoard({ operator: 'incr' })
    const q = await createQueue({ teams: 1, teamSize: 2, maxPartySize: 2, leaderboardId: board })
    await rig(q, newClock())
    const setupOf = (playerId: string) =>
      [...sessionCalls.values()].find((calls) =>
        calls[0]!.roster.some((p) => p.playerId === playerId),
      )?.[0]
    const party = await joinFor(q, `${q}-main`, { party: [`${q}-main`, `${q}-alt`] })
    expect(party.status).toBe('matched')
    expect(setupOf(`${q}-main`)?.leaderboardId).toBeNull()
    await joinFor(q, `${q}-one`)
    const second = await joinFor(q, `${q}-two`)
    expect(second.status).toBe('matched')
    expect(setupOf(`${q}-two`)?.leaderboardId).toBe(board)
  })
})

describe('queueing as a party over sockets', () => {
  it("members' sockets get the leader's party ticket, then match_found on one team", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3, maxRatingGap: 100 })
    await rig(q, newClock())
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    const url = `/v1/matchmaking/${q}`
    // b is connected before the leader joins; c connects after.
    const wb = await connect(url, b!.token)
    const wa = await connect(url, a!.token)
    wa.send(JSON.stringify({ type: 'join', party: [c!.playerId, a!.playerId, b!.playerId] }))
    const qa = await nextOfType<Queued>(wa, 'queued')
    expect(qa.existing).toBe(false)
    const qb = await nextOfType<Queued>(wb, 'queued')
    expect(qb.ticketId).toBe(qa.ticketId)
    const wc = await connect(url, c!.token)
    const qc = await nextOfType<Queued>(wc, 'queued')
    expect(qc).toMatchObject({ ticketId: qa.ticketId, existing: true })
    // Sending join anyway changes nothing: the party's ticket again.
    wc.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType<Queued>(wc, 'queued')).toMatchObject({
      ticketId: qa.ticketId,
      existing: true,
    })
    const t = await ticketOf(qa.ticketId, c!.token)
    expect(t.players).toEqual([a!.playerId, b!.playerId, c!.playerId])
    await until(async () => {
      const p = await ok(send('GET', `/v1/parties/${party.id}`, b!))
      return p.ticketId === qa.ticketId ? true : undefined
    })

    const solos = [1, 2, 3].map((i) => `${q}-s${i}`)
    for (const s of solos) await joinFor(q, s)
    const found = await Promise.all([wa, wb, wc].map((ws) => nextOfType<Found>(ws, 'match_found')))
    expect(new Set(found.map((f) => f.sessionId)).size).toBe(1)
    const team = new Map(found[0]!.players.map((p) => [p.playerId, p.team]))
    expect(new Set([a, b, c].map((p) => team.get(p!.playerId))).size).toBe(1)
    expect(new Set(solos.map((s) => team.get(s))).size).toBe(1)
    expect(team.get(solos[0]!)).not.toBe(team.get(a!.playerId))
    for (const [i, p] of [a, b, c].entries()) {
      expect(await verifySessionToken(env, found[i]!.token, found[i]!.sessionId)).toBe(p!.playerId)
    }
    for (const ws of [wa, wb, wc]) ws.close(1000)
  })

  it("a member's socket taken by the party's new ticket while it was told of an old match keeps waiting on it: not closed, no grace", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const [l, m] = await players(2)
    // m's own ticket from before the party, matched.
    const old = await joinFor(q, m!.playerId)
    for (const i of [1, 2, 3]) await joinFor(q, `${q}-r${i}`)
    expect((await ticketOf(old.ticketId)).status).toBe('matched')
    await formParty([l!, m!])
    const ws = await connect(`/v1/matchmaking/${q}`, m!.token)
    const signing = await holdSigning(q)
    ws.send(JSON.stringify({ type: 'attach', ticketId: old.ticketId }))
    await signing.started()
    // While the old match's token is signed, the leader queues the party: m's socket takes it.
    const joined = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, l!, { party: [l!.playerId, m!.playerId] }),
      201,
    )
    expect((await nextOfType<Queued>(ws, 'queued')).ticketId).toBe(joined.ticketId)
    await signing.release()
    expect(await nextOfType<Found>(ws, 'match_found')).toMatchObject({ ticketId: old.ticketId })
    ws.send(JSON.stringify({ type: 'ping' }))
    expect(await nextOfType(ws, 'pong')).toBeDefined()
    expect(await graceUntil(q, joined.ticketId)).toBeNull()
    ws.close(1000)
  })

  it('a member who does not lead, a wrong list, or an old roster: party_forbidden and no ticket', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c, loner, stranger] = await players(5)
    const party = await formParty([a!, b!, c!])
    const url = `/v1/matchmaking/${q}`
    const ids = (...ps: Player[]) => ps.map((p) => p.playerId)
    const wb = await connect(url, b!.token)
    const wa = await connect(url, a!.token)
    const wl = await connect(url, loner!.token)
    const cases: [WebSocket, string[], string][] = [
      [wb, ids(a!, b!, c!), 'leader'],
      [wa, ids(a!, b!), 'missing'],
      [wa, ids(a!), 'missing'],
      [wb, ids(b!), 'leader'],
      [wa, ids(a!, b!, c!, stranger!), 'Not members'],
      [wl, ids(loner!, stranger!), 'no party'],
    ]
    for (const [ws, party, reason] of cases) {
      ws.send(JSON.stringify({ type: 'join', party }))
      const e = await nextOfType<{ code: string; message: string }>(ws, 'error')
      expect(e.code).toBe('party_forbidden')
      expect(e.message).toContain(reason)
    }
    expect(await waiting(q)).toBe(0)
    expect(collect(wb).filter((m) => (m as { type: string }).type === 'queued')).toEqual([])

    // The join is checked against the party as it is now, not as it was when the socket
    // connected: c leaves after the sockets opened, so the old roster is refused on the same
    // socket and the new one is accepted.
    expect((await leave(party.id, c!)).status).toBe(204)
    wa.send(JSON.stringify({ type: 'join', party: ids(a!, b!, c!) }))
    const old = await nextOfType<{ code: string; message: string }>(wa, 'error')
    expect(old.code).toBe('party_forbidden')
    expect(old.message).toContain('Not members')
    expect(await waiting(q)).toBe(0)
    wa.send(JSON.stringify({ type: 'join', party: ids(a!, b!) }))
    const queued = await nextOfType<Queued>(wa, 'queued')
    expect((await nextOfType<Queued>(wb, 'queued')).ticketId).toBe(queued.ticketId)
    expect(await waiting(q)).toBe(1)
    expect((await ok(send('GET', '/v1/parties/me', a!))).id).toBe(party.id)
    for (const ws of [wa, wb, wl]) ws.close(1000)
  })

  it("a leader's socket join after changes that never reached the pool cancels the party's old ticket and queues a new one; the leader's socket stays open", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    const url = `/v1/matchmaking/${q}`
    const wb = await connect(url, b!.token)
    const wa = await connect(url, a!.token)
    const roster = [a!.playerId, b!.playerId, c!.playerId]
    wa.send(JSON.stringify({ type: 'join', party: roster }))
    const first = await nextOfType<Queued>(wa, 'queued')
    expect((await nextOfType<Queued>(wb, 'queued')).ticketId).toBe(first.ticketId)
    await until(async () => {
      const p = await ok(send('GET', `/v1/parties/${party.id}`, b!))
      return p.ticketId === first.ticketId ? true : undefined
    })
    // C leaves and comes back; neither change reaches the pool.
    const sql = pg()
    await leaveAndComeBackUnseen(party.id, c!.playerId)

    wa.send(JSON.stringify({ type: 'join', party: roster }))
    const second = await nextOfType<Queued>(wa, 'queued')
    expect(second.existing).toBe(false)
    expect(second.ticketId).not.toBe(first.ticketId)
    // The leader's socket gets the answer to its join, the new ticket, and nothing that reads as
    // the end of its wait (the SDK ends on `cancelled`); it stays open.
    const heard = collect(wa) as { type: string; ticketId?: string; reason?: string }[]
    expect(heard.filter((m) => m.type === 'cancelled')).toEqual([])
    expect(heard.filter((m) => m.type === 'queued').map((m) => m.ticketId)).toEqual([
      first.ticketId,
      second.ticketId,
    ])
    // B's socket, on the old ticket, hears it end as it would from the change.
    expect(await nextOfType<{ reason: string }>(wb, 'cancelled')).toMatchObject({
      ticketId: first.ticketId,
      reason: 'party_changed',
    })
    expect(wa.readyState).toBe(WebSocket.OPEN)
    expect(await ticketOf(first.ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
    expect(await waiting(q)).toBe(1)
    await until(async () => {
      const notes = await sql`select ticket_id from party_tickets where party_id = ${party.id}`
      return notes.length === 1 && notes[0]!.ticket_id === second.ticketId ? true : undefined
    })
    await runScheduled(env, Date.now())
    expect((await ticketOf(second.ticketId, a!.token)).status).toBe('waiting')
    for (const ws of [wa, wb]) ws.close(1000)
  })

  it("a leader's join to another region while the party's ticket waits is told of that ticket, its own, with its id (the pool named a member found first)", async () => {
    const q = await createQueue({ regions: ['eu', 'us'], teamSize: 2, maxPartySize: 2 })
    const clock = newClock()
    await rig(q, clock)
    await rig(q, clock, { region: 'us' })
    // The member's id sorts first: the one a pool finds first without being told whose join.
    const [leader, member] = (await players(2)).sort((x, y) => (x!.playerId < y!.playerId ? 1 : -1))
    await formParty([leader!, member!])
    const party = [leader!.playerId, member!.playerId]
    const first = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, leader!, { party, region: 'us' }),
      201,
    )
    const refused = await problem(
      await send('POST', `/v1/matchmaking/${q}/tickets`, leader!, { party, region: 'eu' }),
    )
    expect(refused.status).toBe(409)
    expect(refused.body).toMatchObject({ ticketId: first.ticketId, ticketStatus: 'waiting' })
    expect(refused.detail).toContain(`Player '${leader!.playerId}' already waits in region 'us'`)
  })

  it("a leader's socket join is refused while a member waits alone in another region of the queue; the member's ticket id is not shown to the leader", async () => {
    const q = await createQueue({ regions: ['eu', 'us'], teamSize: 2, maxPartySize: 2 })
    const clock = newClock()
    await rig(q, clock)
    await rig(q, clock, { region: 'us' })
    const [a, b] = await players(2)
    await formParty([a!, b!])
    const solo = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, b!, { region: 'us' }),
      201,
    )
    const wa = await connect(`/v1/matchmaking/${q}?region=eu`, a!.token)
    wa.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    const e = await nextOfType<{ code: string; message: string }>(wa, 'error')
    expect(e.code).toBe('conflict')
    expect(e.message).toContain(`Player '${b!.playerId}' already waits in region 'us'`)
    expect(e.message).not.toContain(solo.ticketId)
    expect(await waiting(q)).toBe(0)

    // Once the member's own ticket is cancelled, the same socket queues the party.
    expect((await send('DELETE', `/v1/matchmaking/tickets/${solo.ticketId}`, b!)).status).toBe(200)
    wa.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    const queued = await nextOfType<Queued>(wa, 'queued')
    expect((await ticketOf(queued.ticketId)).players.sort()).toEqual(
      [a!.playerId, b!.playerId].sort(),
    )
    wa.close(1000)
  })

  it("a party join whose note Neon does not answer does not hold the socket's next frames: a cancel right after it cancels at once, before the ticket can be matched", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    await formParty([a!, b!])
    // Neon takes the party read and the claim, then does not answer the note of the ticket.
    const gate = { noted: false }
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      // Longer than the wait for `cancelled` below: a cancel held behind the note fails.
      inst.neonTimeoutMs = 60_000
      inst.partyTicketNoter = () => {
        gate.noted = true
        return new Promise<boolean>(() => {})
      }
    })
    const ws = await connect(`/v1/matchmaking/${q}`, a!.token)
    ws.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    ws.send(JSON.stringify({ type: 'cancel' }))
    const queued = await nextOfType<Queued>(ws, 'queued')
    const cancelled = await nextOfType<{ ticketId: string; reason: string }>(ws, 'cancelled', 5000)
    expect(gate.noted).toBe(true)
    expect(cancelled).toMatchObject({ ticketId: queued.ticketId, reason: 'cancelled' })
    expect((await ticketOf(queued.ticketId)).status).toBe('cancelled')
    expect(await waiting(q)).toBe(0)
    ws.close(1000)
  })

  it("a party ticket whose note a reset cut off is noted by the new instance's alarm at once, not after the dead send's lease: a membership change then cancels it", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3, ticketTtlSeconds: 3600 })
    const clock = newClock()
    await rig(q, clock)
    const [a, b, c] = await players(3)
    const party = await formParty([a!, b!, c!])
    let asked = 0
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.partyTicketNoter = () => {
        asked++
        return new Promise<boolean>(() => {})
      }
    })
    const join = send('POST', `/v1/matchmaking/${q}/tickets`, a!, {
      party: [a!, b!, c!].map((p) => p.playerId),
    }).catch((err: unknown) => err)
    await until(async () => (asked > 0 ? true : undefined))
    // A deploy resets the pool while the note is out: the ticket is in, the note never made.
    await runInDurableObject(poolOf(q), (_i: MatchPool, state) => state.abort('reset')).catch(
      () => undefined,
    )
    await join
    const [ticket] = await runInDurableObject(poolOf(q), (_i: MatchPool, state) =>
      state.storage.sql.exec<{ id: string }>(`SELECT id FROM tickets`).toArray(),
    )
    const ticketId = ticket!.id
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // The new instance's alarm sends the note at once (its clock is the real one until the
    // test's is back), not after the 30 s lease of the send the reset cut off.
    await runDurableObjectAlarm(poolOf(q))
    await until(
      async () =>
        (await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId === ticketId || undefined,
      5_000,
      'the party noting its ticket',
    )
    await rig(q, clock)
    expect((await leave(party.id, c!)).status).toBe(204)
    expect(await ticketOf(ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'party_changed',
    })
  })

  it("a party ticket whose note Neon refused is noted by the pool's alarm, backing off; the join was answered at once", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3, ticketTtlSeconds: 3600 })
    const clock = newClock()
    await rig(q, clock)
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    let refusals = 2
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      const real = inst.partyTicketNoter
      inst.partyTicketNoter = (...args) =>
        refusals-- > 0 ? Promise.reject(new Error('Neon is down')) : real(...args)
    })
    const t = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
      201,
    )
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    // Tried again a second later, refused again; then two seconds after that, noted.
    clock.t += 1000
    await runDurableObjectAlarm(poolOf(q))
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    clock.t += 1000
    await runDurableObjectAlarm(poolOf(q))
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBeNull()
    clock.t += 1000
    await runDurableObjectAlarm(poolOf(q))
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBe(t.ticketId)
    expect(refusals).toBeLessThan(0)
  })

  it('a party join answered by a pool of the version before (a gradual deployment), which notes nothing, is noted by the route', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    type Join = MatchPool['join']
    await replaceMethod<MatchPool, 'join'>(
      poolOf(q),
      'join',
      (join) =>
        async function (this: MatchPool, input: Parameters<Join>[0]) {
          const r = await join.call(this, { ...input, partyId: undefined })
          if (r.ok) delete (r as { partyChanged?: boolean }).partyChanged
          return r
        } as Join,
    )
    const t = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
      201,
    )
    expect((await ok(send('GET', `/v1/parties/${party.id}`, b!))).ticketId).toBe(t.ticketId)
  })

  it("a late note of a party's older ticket (sent again after Neon failed it) leaves the party pointing at the ticket it joined with since", async () => {
    const [a, b] = await players(2)
    const party = await formParty([a!, b!])
    const ids = [a!.playerId, b!.playerId]
    const older = `q-late:eu:${crypto.randomUUID()}`
    const newer = `q-late:eu:${crypto.randomUUID()}`
    expect(await recordPartyTicket(env, party.id, newer, ids, 2_000)).toBe(true)
    expect(await recordPartyTicket(env, party.id, older, ids, 1_000)).toBe(true)
    expect((await ok(send('GET', `/v1/parties/${party.id}`, a!))).ticketId).toBe(newer)
  })

  it('a keyed party join sent again while its ticket waits is answered from the ticket, again and again, without reading the party from Neon; once matched, with match_found', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock(), { graceMs: 10_000 })
    const [a, b, c, d] = await players(4)
    await formParty([a!, b!])
    const join = JSON.stringify({
      type: 'join',
      party: [a!.playerId, b!.playerId],
      joinKey: 'pk-1',
    })
    const first = await connect(`/v1/matchmaking/${q}`, a!.token)
    first.send(join)
    const queued = await nextOfType<Queued>(first, 'queued')
    first.close(1001, 'network')
    // Each party read is a Neon query, which a join sent again (it takes no allowance) must
    // not cost.
    let partyReads = 0
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      const read = inst.partyReader
      inst.partyReader = (id) => {
        partyReads++
        return read(id)
      }
    })
    const second = await connect(`/v1/matchmaking/${q}`, a!.token)
    // The socket took the waiting ticket over when it connected.
    expect(await nextOfType<Queued>(second, 'queued')).toMatchObject({
      ticketId: queued.ticketId,
      existing: true,
    })
    for (let i = 0; i < 3; i++) {
      second.send(join)
      expect(await nextOfType<Queued>(second, 'queued')).toMatchObject({
        ticketId: queued.ticketId,
        existing: true,
      })
    }
    expect(partyReads).toBe(0)
    expect(await waiting(q)).toBe(1)
    await joinFor(q, c!.playerId)
    await joinFor(q, d!.playerId)
    const found = await nextOfType<Found>(second, 'match_found')
    expect(found.ticketId).toBe(queued.ticketId)
    expect(await verifySessionToken(env, found.token, found.sessionId)).toBe(a!.playerId)
    expect(found.players.map((p) => p.playerId).sort()).toEqual(
      [a, b, c, d].map((p) => p!.playerId).sort(),
    )
    expect((await closed(second)).code).toBe(1000)
    // Sent again once matched (the answer lost with a third socket): match_found, nothing queued.
    const third = await connect(`/v1/matchmaking/${q}`, a!.token)
    third.send(join)
    expect((await nextOfType<Found>(third, 'match_found')).sessionId).toBe(found.sessionId)
    expect(partyReads).toBe(0)
    expect(await waiting(q)).toBe(0)
    expect((await ticketOf(queued.ticketId)).status).toBe('matched')
  })

  it("a member's socket whose token has expired is not put on the leader's new ticket (closed, 4001); its reconnect with a live token is", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    await formParty([a!, b!])
    const url = `/v1/matchmaking/${q}`
    const early = await issuePlayerToken(env, b!.playerId, Date.now() - 2 * 3_600_000)
    const wb = await connect(url, early.token)
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.tokenClock = () => early.expiresAt + 60_000
    })
    const wa = await connect(url, a!.token)
    wa.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    const { ticketId } = await nextOfType<Queued>(wa, 'queued')
    expect((await closed(wb)).code).toBe(4001)
    expect(collect(wb).map((m) => (m as { type: string }).type)).not.toContain('queued')
    const back = await connect(url, b!.token)
    expect(await nextOfType<Queued>(back, 'queued')).toMatchObject({ ticketId, existing: true })
    wa.close(1000)
    back.close(1000)
  })

  it("a member whose socket's token expired while the leader's HTTP ticket waited is told the match on the socket they connect with a live token", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock(), { graceMs: 60_000 })
    const [a, b, c, d] = await players(4)
    await formParty([a!, b!])
    const early = await issuePlayerToken(env, b!.playerId, Date.now() - 2 * 3_600_000)
    const wb = await connect(`/v1/matchmaking/${q}`, early.token)
    // The leader queues the party over HTTP; the member's socket is put on the ticket.
    const joined = await send('POST', `/v1/matchmaking/${q}/tickets`, a!, {
      party: [a!.playerId, b!.playerId],
    })
    expect(joined.status).toBe(201)
    const { ticketId } = (await joined.json()) as { ticketId: string }
    expect(await nextOfType<Queued>(wb, 'queued')).toMatchObject({ ticketId })
    await runInDurableObject(poolOf(q), (inst: MatchPool) => {
      inst.tokenClock = () => early.expiresAt + 60_000
    })
    await joinFor(q, c!.playerId)
    await joinFor(q, d!.playerId)
    expect((await closed(wb)).code).toBe(4001)
    expect(collect(wb).map((m) => (m as { type: string }).type)).not.toContain('match_found')
    const back = await connect(`/v1/matchmaking/${q}`, b!.token)
    const found = await nextOfType<Found>(back, 'match_found')
    expect(found.ticketId).toBe(ticketId)
    expect(await verifySessionToken(env, found.token, found.sessionId)).toBe(b!.playerId)
  })

  it("a party ticket's grace is each player's: a leader who left is gone though a member's socket stays, and the ticket waits for everyone who had a socket on it to be back", async () => {
    const { q, clock, a, b, url, wa, wb, ticketId } = await partyQueuedOnSockets()
    // The leader leaves; the member's socket stays open: the leader's grace runs all the same.
    wa.close(1000, 'bye')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      'a grace',
    )
    // Back in time: the grace ends.
    const wa2 = await connect(url, a!.token)
    expect(await nextOfType<Queued>(wa2, 'queued')).toMatchObject({ ticketId, existing: true })
    expect(await graceUntil(q, ticketId)).toBeNull()
    // Both leave, and only the leader comes back: the member is still gone, and the grace runs on.
    wa2.close(1000, 'bye')
    wb.close(1000, 'bye')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      'a grace',
    )
    const wa3 = await connect(url, a!.token)
    await nextOfType<Queued>(wa3, 'queued')
    expect(await graceUntil(q, ticketId)).not.toBeNull()
    // Nor does the leader's party join sent again (Play pressed twice, a client's retry): it
    // shows only the leader to be here.
    wa3.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    expect(await nextOfType<Queued>(wa3, 'queued')).toMatchObject({ ticketId, existing: true })
    expect(await graceUntil(q, ticketId)).not.toBeNull()
    clock.t += 10_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await nextOfType(wa3, 'cancelled')).toMatchObject({ ticketId, reason: 'disconnected' })
    expect((await ticketOf(ticketId, a!.token)).status).toBe('cancelled')
  })

  it("a member whose socket is gone and who polls the party's ticket over HTTP instead (the SDK's fallback) keeps it while it polls: the grace runs on past its length, the leader's blip does not end the party, and the ticket is cancelled once the polls stop", async () => {
    const { q, clock, a, b, url, wa, wb, ticketId } = await partyQueuedOnSockets()
    const start = clock.t
    // The member's network goes: its socket is gone, and the grace (10 s) starts.
    wb.close(1000, 'network lost')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      'a grace',
    )
    // It reads the ticket over HTTP instead, and again 20 s on (a long-poll held that long).
    expect((await ticketOf(ticketId, b!.token)).status).toBe('waiting')
    clock.t = start + 10_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // The leader's socket blips and comes back: the party waits on.
    wa.close(1000, 'blip')
    await until(async () => ((await waiting(q)) === 1 ? true : undefined), 5000, 'the close')
    const wa2 = await connect(url, a!.token)
    expect(await nextOfType<Queued>(wa2, 'queued')).toMatchObject({ ticketId, existing: true })
    clock.t = start + 20_000
    // A raw client's join sent again alone over HTTP is handed the same ticket and is a read too.
    const again = await ok<Ticket>(send('POST', `/v1/matchmaking/${q}/tickets`, b!, {}))
    expect(again).toMatchObject({ ticketId, existing: true })
    clock.t = start + 40_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // The member stops polling: 35 s after its last read it is gone, and so is the ticket.
    clock.t = start + 20_000 + 35_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await nextOfType(wa2, 'cancelled')).toMatchObject({ ticketId, reason: 'disconnected' })
    expect((await ticketOf(ticketId)).status).toBe('cancelled')
  })

  it("a member's long-poll counts as presence until it is answered, not only from when it came: a poll held 20 s leaves the usual 35 s after its answer", async () => {
    const { q, clock, b, wb, ticketId } = await partyQueuedOnSockets()
    const start = clock.t
    wb.close(1000, 'network lost')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      'a grace',
    )
    // A long-poll, held while the pool's clock moves 20 s on (the test's clock: the hold is 2 s).
    const held = ticketOf(ticketId, b!.token, 2)
    await until(
      () =>
        runInDurableObject(poolOf(q), (inst: MatchPool) =>
          (inst as unknown as { waiters: Map<string, unknown> }).waiters.has(ticketId)
            ? true
            : undefined,
        ),
      5000,
      'the poll held',
    )
    clock.t = start + 20_000
    expect((await held).status).toBe('waiting')
    // 34 s after its answer (54 s after it came): still here.
    clock.t = start + 54_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    // 35 s after it, with no read since: gone, and the ticket with it.
    clock.t = start + 55_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await ticketOf(ticketId)).toMatchObject({ status: 'cancelled', reason: 'disconnected' })
  })

  it("a leader's keyed HTTP join of the party retried while Neon is out of reach is answered from the pool with the ticket its first try made", async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    await formParty([a!, b!])
    const key = `join-${crypto.randomUUID()}`
    const body = { party: [a!.playerId, b!.playerId], region: 'eu' }
    const init = json('POST', body, a!.token, { 'idempotency-key': key })
    const first = await call(`/v1/matchmaking/${q}/tickets`, init)
    expect(first.status).toBe(201)
    const { ticketId } = (await first.json()) as Ticket
    const again = await callWithEnv(
      { DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL },
      `/v1/matchmaking/${q}/tickets`,
      json('POST', body, a!.token, { 'idempotency-key': key }),
    )
    expect(again.status).toBe(200)
    expect(await again.json()).toMatchObject({ ticketId, status: 'waiting', existing: true })
  })

  it("a leader's HTTP join of the party's ticket (the SDK's fallback) shows only the leader to be here: it does not take the ticket over from a member whose socket is gone, whose grace ends it", async () => {
    const { q, clock, a, b, wa, wb, ticketId } = await partyQueuedOnSockets()
    const start = clock.t
    // The member closes the game; then the leader's socket is lost too.
    wb.close(1000, 'closed the game')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      "the member's grace",
    )
    wa.close(1000, 'network lost')
    await until(async () => ((await waiting(q)) === 1 ? true : undefined), 5000, 'the close')
    // The leader's client joins again over HTTP, as the party, and polls.
    clock.t = start + 6_000
    const again = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
    )
    expect(again).toMatchObject({ ticketId, existing: true })
    expect(await graceUntil(q, ticketId)).toBe(start + 10_000)
    clock.t = start + 8_000
    expect((await ticketOf(ticketId, a!.token)).status).toBe('waiting')
    // The member's grace ends with the member still away: the party is out of the queue, not
    // matched for a player who left.
    clock.t = start + 10_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await ticketOf(ticketId, a!.token)).toMatchObject({
      status: 'cancelled',
      reason: 'disconnected',
    })
  })

  it('a leader reading over HTTP while the pool still holds its dead socket (a phone that changed networks) is counted: the ticket is not cancelled under it once the socket is seen gone', async () => {
    const { q, clock, a, b, wa, ticketId } = await partyQueuedOnSockets()
    const start = clock.t
    // The leader's client gives its socket up (the pool still sees it open), joins again over
    // HTTP as the party, and reads the ticket.
    clock.t = start + 6_000
    const again = await ok<Ticket>(
      send('POST', `/v1/matchmaking/${q}/tickets`, a!, { party: [a!.playerId, b!.playerId] }),
    )
    expect(again).toMatchObject({ ticketId, existing: true })
    clock.t = start + 7_000
    expect((await ticketOf(ticketId, a!.token)).status).toBe('waiting')
    // The pool sees the socket gone only at 20 s: the leader's reads keep it here 35 s past the
    // last, beyond the socket's 10 s grace.
    clock.t = start + 20_000
    wa.close(1000, 'seen gone late')
    await until(
      async () => ((await graceUntil(q, ticketId)) === start + 42_000 ? true : undefined),
      5000,
      "the leader's presence from its last read",
    )
    clock.t = start + 30_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect((await ticketOf(ticketId)).status).toBe('waiting')
  })

  it("a game server's HTTP join of a party's socket ticket (the admin key) shows none of its players to be here: a leader whose socket is gone is still judged by its grace", async () => {
    const { q, clock, a, b, wa, ticketId } = await partyQueuedOnSockets()
    const start = clock.t
    wa.close(1000, 'closed the game')
    await until(
      async () => ((await graceUntil(q, ticketId)) !== null ? true : undefined),
      5000,
      "the leader's grace",
    )
    clock.t = start + 6_000
    const joined = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: a!.playerId, party: [a!.playerId, b!.playerId] }, ADMIN_KEY),
    )
    expect(joined.status).toBe(200)
    expect(await joined.json()).toMatchObject({ ticketId, existing: true })
    clock.t = start + 10_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await ticketOf(ticketId)).toMatchObject({ status: 'cancelled', reason: 'disconnected' })
  })

  it('a ticket being matched gets no grace from a member coming back while another is away: nothing would clear it, and the alarm would come back at once until the ticket went', async () => {
    const { q, clock, b, url, wa, ticketId } = await partyQueuedOnSockets({
      teamSize: 2,
      maxPartySize: 2,
    })
    // The match's session is slow to come.
    let release!: () => void
    const creating = new Promise<void>((r) => (release = r))
    await rig(q, clock, {
      creator: async (setup) => {
        await creating
        return recordingCreator(setup)
      },
    })
    const rival = joinFor(q, `${q}-r1`, { party: [`${q}-r1`, `${q}-r2`] })
    await until(
      async () => ((await ticketOf(ticketId)).status === 'matching' ? true : undefined),
      5000,
      'the party matched',
    )
    // The leader's socket goes; the member reconnects.
    wa.close(1000, 'network lost')
    const wb2 = await connect(url, b!.token)
    await nextOfType(wb2, 'queued')
    expect(await graceUntil(q, ticketId)).toBeNull()
    await runInDurableObject(poolOf(q), () => release())
    await rival
    expect((await ticketOf(ticketId)).status).toBe('matched')
    wb2.close()
  })

  it("each player of a party ticket has a grace of their own: another's return does not cut it short, and one whose socket goes while another's grace runs gets all of theirs", async () => {
    const { q, clock, a, b, url, wa, wb, ticketId } = await partyQueuedOnSockets({
      disconnectGraceSeconds: 120,
    })
    const start = clock.t
    const graceIs = (t: number | null, what: string) =>
      until(async () => ((await graceUntil(q, ticketId)) === t ? true : undefined), 5000, what)
    // The member's socket goes: its 120 s start. A read of the ticket 8 s on (its 35 s of
    // polling end well before them) changes nothing.
    wb.close(1000, 'network lost')
    await graceIs(start + 120_000, "the member's grace")
    clock.t = start + 8_000
    await ticketOf(ticketId, b!.token)
    // The leader's socket blips 12 s in and comes back: the member's grace is still all there.
    clock.t = start + 12_000
    wa.close(1000, 'blip')
    await graceIs(start + 120_000, 'the earliest of the two graces')
    const wa2 = await connect(url, a!.token)
    await nextOfType<Queued>(wa2, 'queued')
    expect(await graceUntil(q, ticketId)).toBe(start + 120_000)
    // The member is back 100 s in: nobody is gone.
    clock.t = start + 100_000
    const wb2 = await connect(url, b!.token)
    await nextOfType<Queued>(wb2, 'queued')
    expect(await graceUntil(q, ticketId)).toBeNull()
    // The member goes again, then the leader 10 s later: each has 120 s from their own loss.
    clock.t = start + 110_000
    wb2.close(1000, 'network lost')
    await graceIs(start + 230_000, "the member's second grace")
    clock.t = start + 120_000
    wa2.close(1000, 'network lost')
    await until(async () => ((await waiting(q)) === 1 ? true : undefined), 5000, 'the close')
    const wb3 = await connect(url, b!.token)
    await nextOfType<Queued>(wb3, 'queued')
    await graceIs(start + 240_000, "the leader's grace, all of it")
    clock.t = start + 239_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect((await ticketOf(ticketId)).status).toBe('waiting')
    clock.t = start + 240_000
    await runInDurableObject(poolOf(q), (inst: MatchPool) => inst.alarm())
    expect(await nextOfType(wb3, 'cancelled')).toMatchObject({ ticketId, reason: 'disconnected' })
  })

  it("a member's `attach` takes its socket onto the party's ticket and never makes one: a matched ticket is answered match_found, a cancelled one cancelled, a ticket not theirs not_queued", async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(q, newClock())
    const [a, b, stranger] = await players(3)
    await formParty([a!, b!])
    const url = `/v1/matchmaking/${q}`
    const wa = await connect(url, a!.token)
    wa.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    const { ticketId } = await nextOfType<Queued>(wa, 'queued')

    // Waiting: the member's socket is on it (as its connect already said).
    const wb = await connect(url, b!.token)
    await nextOfType<Queued>(wb, 'queued')
    wb.send(JSON.stringify({ type: 'attach', ticketId }))
    expect(await nextOfType<Queued>(wb, 'queued')).toMatchObject({ ticketId, existing: true })
    // Someone not on the ticket, and a ticket id the pool never made: not_queued, nothing made.
    const ws = await connect(url, stranger!.token)
    ws.send(JSON.stringify({ type: 'attach', ticketId }))
    expect((await nextOfType<{ code: string }>(ws, 'error')).code).toBe('not_queued')
    ws.send(JSON.stringify({ type: 'attach', ticketId: `${q}:eu:${crypto.randomUUID()}` }))
    expect((await nextOfType<{ code: string }>(ws, 'error')).code).toBe('not_queued')
    // Malformed: no id, an id too long, another field.
    for (const frame of [
      { type: 'attach' },
      { type: 'attach', ticketId: 'x'.repeat(161) },
      { type: 'attach', ticketId, party: [stranger!.playerId] },
    ]) {
      ws.send(JSON.stringify(frame))
      expect((await nextOfType<{ code: string }>(ws, 'error')).code).toBe('invalid')
    }
    expect(await waiting(q)).toBe(1)

    // Matched: b hears it on its socket (so the pool owes b nothing on a later connect), then a
    // new socket of b's attaches and gets the match from the attach alone, and no ticket alone.
    await joinFor(q, `${q}-s1`)
    await joinFor(q, `${q}-s2`)
    const found = await nextOfType<Found>(wa, 'match_found')
    expect((await nextOfType<Found>(wb, 'match_found')).sessionId).toBe(found.sessionId)
    await closed(wb)
    const late = await connect(url, b!.token)
    late.send(JSON.stringify({ type: 'attach', ticketId }))
    const told = await nextOfType<Found>(late, 'match_found')
    expect(told).toMatchObject({ ticketId, sessionId: found.sessionId })
    expect(await verifySessionToken(env, told.token, told.sessionId)).toBe(b!.playerId)
    await closed(late)
    expect(await waiting(q)).toBe(0)

    // Cancelled: told so.
    const wa2 = await connect(url, a!.token)
    wa2.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    const second = await nextOfType<Queued>(wa2, 'queued')
    wa2.send(JSON.stringify({ type: 'cancel' }))
    await nextOfType(wa2, 'cancelled')
    const wb2 = await connect(url, b!.token)
    wb2.send(JSON.stringify({ type: 'attach', ticketId: second.ticketId }))
    expect(await nextOfType(wb2, 'cancelled')).toMatchObject({
      ticketId: second.ticketId,
      reason: 'cancelled',
    })
    expect(await waiting(q)).toBe(0)
    for (const w of [wa, ws]) w.close(1000)
  })

  it('a cancel sent right after a party join on the same socket cancels the ticket that join made', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 3 })
    await rig(q, newClock())
    const [a, b] = await players(2)
    await formParty([a!, b!])
    const ws = await connect(`/v1/matchmaking/${q}`, a!.token)
    ws.send(JSON.stringify({ type: 'join', party: [a!.playerId, b!.playerId] }))
    ws.send(JSON.stringify({ type: 'cancel' }))
    const queued = await nextOfType<Queued>(ws, 'queued')
    const cancelled = await nextOfType<{ ticketId: string; reason: string }>(ws, 'cancelled')
    expect(cancelled).toMatchObject({ ticketId: queued.ticketId, reason: 'cancelled' })
    expect(collect(ws).some((m) => (m as { type: string }).type === 'error')).toBe(false)
    expect(await waiting(q)).toBe(0)
  })

  it(`a leader socket carries a full party of ${MAX_PARTY_SIZE} with the longest ids`, async () => {
    const q = await createQueue({
      teams: 1,
      teamSize: MAX_PARTY_SIZE,
      maxPartySize: MAX_PARTY_SIZE,
    })
    await rig(q, newClock())
    const members = await Promise.all(
      Array.from({ length: MAX_PARTY_SIZE }, (_, i) =>
        player(`${i}-${crypto.randomUUID()}`.padEnd(128, 'x')),
      ),
    )
    await formParty(members)
    const ws = await connect(`/v1/matchmaking/${q}`, members[0]!.token)
    ws.send(JSON.stringify({ type: 'join', party: members.map((m) => m.playerId) }))
    await nextOfType<Queued>(ws, 'queued')
    const found = await nextOfType<Found>(ws, 'match_found')
    expect(found.players.map((p) => p.playerId).sort()).toEqual(
      members.map((m) => m.playerId).sort(),
    )
    ws.close(1000)
  })
})

describe("a pool's owed party notes", () => {
  it(`are sent ${OPEN_CONNECTIONS} at a time, as many calls as an invocation may have open, and every one of a step is sent`, async () => {
    const q = await createQueue()
    await rig(q, newClock())
    const pool = poolOf(q)
    const owed = Array.from({ length: 16 }, (_, i) => `${q}:eu:note-${i}`)
    let running = 0
    let most = 0
    const sent: string[] = []
    // Private methods of the pool: every owed ticket is a waiting one, and each note is counted
    // instead of written to Neon.
    type Methods = Record<string, (...args: never[]) => unknown>
    const back = await replaceMethod<Methods, 'row'>(pool, 'row', () => (id: string) => ({
      id,
      state: 'waiting',
    }))
    const backRecord = await replaceMethod<Methods, 'recordPartyTicket'>(
      pool,
      'recordPartyTicket',
      () =>
        async function (_party: string, row: { id: string }) {
          running++
          most = Math.max(most, running)
          // Each stays under way a few turns, as a Neon round trip does.
          for (let i = 0; i < 5; i++) await Promise.resolve()
          sent.push(row.id)
          running--
          return false
        },
    )
    try {
      await runInDurableObject(pool, async (inst: MatchPool) => {
        const pool = inst as unknown as {
          ensureSchema(): void
          sql: SqlStorage
          retryPartyNotes(now: number): Promise<void>
        }
        pool.ensureSchema()
        for (const id of owed) {
          pool.sql.exec(
            `INSERT INTO party_notes (ticket_id, party_id, attempts, next_attempt_at) VALUES (?, 'party', 0, 0)`,
            id,
          )
        }
        await pool.retryPartyNotes(Date.now())
      })
    } finally {
      back()
      backRecord()
    }
    expect(most).toBe(OPEN_CONNECTIONS)
    expect(sent.sort()).toEqual([...owed].sort())
  })
})
