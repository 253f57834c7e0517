import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it, onTestFinished } from 'vitest'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import { issuePlayerToken } from '../../workers/lib/auth.ts'
import { boardWalkLimits } from '../../workers/players/board-walk.ts'
import {
  blockedBy,
  boardId,
  createBoard,
  fresh,
  holdLock,
  pg,
  submitAs,
  submitFor,
} from './helpers/boards.ts'
import { ADMIN_KEY, bearer, call, json, problem } from './helpers/http.ts'
import {
  createQueue,
  DUEL,
  joinFor,
  newClock,
  poolOf,
  rig,
  ticketOf,
} from './helpers/matchmaking.ts'
import { claimQueue } from '../../workers/matchmaking/claims.ts'
import { sha256Hex } from '../../workers/lib/hash.ts'
import { DEVICE_LOCK, PLAYER_LOCK } from '../../workers/players/erasure.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { connect, nextOfType, until, upgrade } from './helpers/sockets.ts'

interface BanResult {
  playerId: string
  reason: string | null
  bannedAt: string
  tickets: { cancelled: string[] }
  boards: { walked: number; entriesRemoved: number; full: string[]; next: string | null }
}
interface LiftResult {
  playerId: string
  lifted: boolean
  boards: { walked: number; lifted: number; next: string | null }
}
interface BoardBan {
  playerId: string
  reason: string | null
  byAccount: boolean
}

const banPath = (playerId: string, after?: string) =>
  `/v1/admin/players/${playerId}/ban${after ? `?after=${after}` : ''}`

/**
 * This file's boards, and where its walks start: after every other test's boards. Other files run
 * at the same time against the same database, and one of them briefly keeps boards whose objects
 * refuse every call (leaderboard-config's lost pushes); a walk reaching those answers 503. The
 * route's own walk from the first board is the same code, started with `after` empty.
 */
const PREFIX = 'zz-bans'

/** A board's configuration with only the fields a board needs, stored in Neon by hand. */
const BARE_CONFIG = {
  sortOrder: 'desc',
  operator: 'best',
  cycle: null,
  submitsPerMinute: 10,
  metadataMaxBytes: 512,
  rewards: [],
}

/**
 * Stores `board` in Neon (BARE_CONFIG) and configures its object while it reaches Neon through
 * `neon` (`tune` sets the object up first); when that began, and the alarm it left.
 */
async function configureWithNeon(
  board: string,
  neon: { DATABASE_URL?: string; NEON_LOCAL_RELAY?: string },
  tune: (inst: Leaderboard) => void = () => {},
) {
  await pg()`insert into leaderboards (id, config) values (${board}, ${JSON.stringify(BARE_CONFIG)}::jsonb)`
  return runInDurableObject(env.LEADERBOARD.getByName(board), async (inst: Leaderboard, state) => {
    const reachable = (inst as unknown as { env: typeof env }).env
    ;(inst as unknown as { env: unknown }).env = { ...reachable, ...neon }
    tune(inst)
    const before = Date.now()
    try {
      // As the PUT's push: version 1, and no cycle in Neon before, read with the save.
      await inst.configure(
        board,
        BARE_CONFIG as unknown as Parameters<Leaderboard['configure']>[1],
        1,
        0,
      )
    } finally {
      ;(inst as unknown as { env: unknown }).env = reachable
    }
    return { before, alarm: await state.storage.getAlarm() }
  })
}
const newBoard = (config: Record<string, unknown> = {}) => createBoard(config, boardId(PREFIX))

/**
 * Calls a ban or a lift across this file's boards, following `boards.next`: the first answer,
 * each board count summed over the calls, and the boards walked.
 */
async function walkAll<T extends { boards: { walked: number; next: string | null } }>(
  send: (after?: string) => Promise<Response>,
  count: (body: T) => number,
): Promise<{ first: T; total: number; walked: number }> {
  let first: T | undefined
  let total = 0
  let walked = 0
  for (let after = PREFIX; ;) {
    const res = await send(after)
    if (res.status !== 200 && res.status !== 202) {
      throw new Error(`walk: ${res.status} ${await res.text()}`)
    }
    const body = (await res.json()) as T
    expect(res.status).toBe(body.boards.next === null ? 200 : 202)
    first ??= body
    total += count(body)
    walked += body.boards.walked
    if (body.boards.next === null) return { first, total, walked }
    after = body.boards.next
  }
}

/**
 * Players this file banned. Every board created anywhere takes on the account bans Neon holds,
 * so each test takes its own back out of Neon when it ends: later boards start with none.
 */
const bannedHere = new Set<string>()
afterEach(async () => {
  const ids = [...bannedHere]
  bannedHere.clear()
  if (ids.length > 0) await pg()`delete from player_bans where player_id = any(${ids})`
})

function banAll(playerId: string, body: Record<string, unknown> = {}) {
  bannedHere.add(playerId)
  return walkAll<BanResult>(
    (after) => call(banPath(playerId, after), json('PUT', body, ADMIN_KEY)),
    (b) => b.boards.entriesRemoved,
  )
}
const liftAll = (playerId: string) =>
  walkAll<LiftResult>(
    (after) => call(banPath(playerId, after), { ...bearer(ADMIN_KEY), method: 'DELETE' }),
    (b) => b.boards.lifted,
  )

/**
 * A board's bans, but for other files' account bans: a board made here catches up on every
 * account ban in Neon, and players.test.ts bans identity-provider ids (`idp-…`, which this file
 * never uses) at any moment while it runs beside this one.
 */
async function boardBans(board: string): Promise<BoardBan[]> {
  const res = await call(`/v1/admin/leaderboards/${board}/bans?limit=100`, bearer(ADMIN_KEY))
  expect(res.status).toBe(200)
  return ((await res.json()) as { bans: BoardBan[] }).bans.filter(
    (b) => !b.playerId.startsWith('idp-'),
  )
}

const banOnBoard = (board: string, playerId: string, reason: string) =>
  call(`/v1/admin/leaderboards/${board}/bans/${playerId}`, json('PUT', { reason }, ADMIN_KEY))

async function guestWithDevice() {
  const deviceId = `ban-device-${crypto.randomUUID()}`
  const login = () => call('/v1/auth/guest', json('POST', { deviceId }))
  const first = await login()
  expect(first.status).toBe(200)
  return { ...((await first.json()) as { token: string; playerId: string }), login, deviceId }
}

const joinAs = (queue: string, token: string, body: Record<string, unknown> = {}) =>
  call(`/v1/matchmaking/${queue}/tickets`, json('POST', body, token))

describe('banning a player from the deployment (admin)', () => {
  it('no guest token, no matchmaking, off every board and refused there; lifting restores each; retries change nothing', async () => {
    const guest = await guestWithDevice()
    const boards = [await newBoard(), await newBoard()]
    for (const b of boards) expect((await submitAs(b, guest.token, { score: 7 })).status).toBe(200)
    const queue = await createQueue()
    await rig(queue, newClock())

    const { first, total, walked } = await banAll(guest.playerId, { reason: 'aimbot' })
    expect(first).toMatchObject({ playerId: guest.playerId, reason: 'aimbot' })
    expect(total).toBe(2)
    const got = await call(banPath(guest.playerId), bearer(ADMIN_KEY))
    expect(await got.json()).toEqual({
      playerId: guest.playerId,
      reason: 'aimbot',
      bannedAt: first.bannedAt,
    })

    // Signing in again is refused; the token already issued is refused by matchmaking and by
    // every board, which no longer ranks the player.
    const signIn = await problem(await guest.login())
    expect(signIn).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(signIn.body.detail).toContain('banned')
    const join = await problem(await joinAs(queue, guest.token))
    expect(join).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const socket = await upgrade(`/v1/matchmaking/${queue}`, guest.token)
    expect(socket.webSocket).toBeFalsy()
    expect(await problem(socket)).toMatchObject({
      status: 403,
      type: 'urn:nexus:problem:forbidden',
    })
    for (const b of boards) {
      const refused = await problem(await submitAs(b, guest.token, { score: 9 }))
      expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
      expect(
        await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${guest.playerId}`),
      ).toMatchObject({ entry: null })
      expect(await boardBans(b)).toEqual([
        expect.objectContaining({ playerId: guest.playerId, reason: 'aimbot', byAccount: true }),
      ])
    }

    // Banning again keeps the first time, takes the new reason, and removes nothing more.
    const again = await banAll(guest.playerId, { reason: 'aimbot, confirmed' })
    expect(again.first).toMatchObject({ reason: 'aimbot, confirmed', bannedAt: first.bannedAt })
    expect(again.total).toBe(0)
    expect((await boardBans(boards[0]!))[0]).toMatchObject({ reason: 'aimbot, confirmed' })

    const lift = await liftAll(guest.playerId)
    expect(lift.first).toMatchObject({ playerId: guest.playerId, lifted: true })
    // Every board the ban walked held a ban it placed (this file's other boards too).
    expect(lift.total).toBe(walked)
    expect((await call(banPath(guest.playerId), bearer(ADMIN_KEY))).status).toBe(404)
    expect((await guest.login()).status).toBe(200)
    expect((await joinAs(queue, guest.token)).status).toBe(201)
    for (const b of boards) {
      expect(await boardBans(b)).toEqual([])
      // The entry the ban removed does not come back; a new score counts.
      expect(
        await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${guest.playerId}`),
      ).toMatchObject({ entry: null })
      expect((await submitAs(b, guest.token, { score: 3 })).status).toBe(200)
    }
    // Lifting again: nothing to lift, anywhere.
    const liftAgain = await liftAll(guest.playerId)
    expect(liftAgain.first.lifted).toBe(false)
    expect(liftAgain.total).toBe(0)
  })

  it("a board's own ban outlives the account ban: one set before keeps its reason, one set over it becomes the board's", async () => {
    const player = `ban-${crypto.randomUUID()}`
    const [before, after] = [await newBoard(), await newBoard()]
    expect((await banOnBoard(before, player, 'griefing')).status).toBe(200)
    const ban = await banAll(player, { reason: 'aimbot' })
    expect(await boardBans(before)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'griefing', byAccount: false }),
    ])
    expect(await boardBans(after)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'aimbot', byAccount: true }),
    ])
    expect((await banOnBoard(after, player, 'griefing here too')).status).toBe(200)
    expect(await boardBans(after)).toEqual([
      expect.objectContaining({ reason: 'griefing here too', byAccount: false }),
    ])
    // A board's ban is not lifted while the account ban stands (it would let the player score
    // there alone): 409, and the ban stays.
    const liftHere = await problem(
      await call(`/v1/admin/leaderboards/${after}/bans/${player}`, {
        ...bearer(ADMIN_KEY),
        method: 'DELETE',
      }),
    )
    expect(liftHere).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(liftHere.body).toMatchObject({ accountBan: true })
    expect((await boardBans(after)).map((x) => x.playerId)).toEqual([player])
    const lift = await liftAll(player)
    expect(lift.first.lifted).toBe(true)
    // Every board the ban walked but these two, which hold bans of their own now.
    expect(lift.total).toBe(ban.walked - 2)
    for (const b of [before, after]) {
      expect((await boardBans(b)).map((x) => x.playerId)).toEqual([player])
      expect((await submitFor(b, player, { score: 1 })).status).toBe(403)
    }
    // The account's ban lifted, a board's own is lifted on that board.
    const liftedHere = await call(`/v1/admin/leaderboards/${after}/bans/${player}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(await liftedHere.json()).toEqual({ lifted: true })
  })

  it("a lift refused for an account ban makes sure of the account's ban on the board (a lift that failed after taking it off is repaired by its retry), unless the account's ban was lifted meanwhile", async () => {
    const player = `ban-${crypto.randomUUID()}`
    const board = await newBoard()
    // Banned by account in Neon; the board holds no ban of theirs (an earlier lift took it off
    // and failed before putting it back).
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'aimbot')`
    onTestFinished(async () => {
      await pg()`delete from player_bans where player_id = ${player}`
    })
    const lift = () =>
      call(`/v1/admin/leaderboards/${board}/bans/${player}`, {
        ...bearer(ADMIN_KEY),
        method: 'DELETE',
      })
    expect((await problem(await lift())).body).toMatchObject({ accountBan: true })
    expect(await boardBans(board)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'aimbot', byAccount: true }),
    ])
    expect((await submitFor(board, player, { score: 1 })).status).toBe(403)
    // The account's ban lifted while such a lift puts the board's back (its walk past the board
    // already): the board's goes too.
    expect((await liftAll(player)).first.lifted).toBe(true)
    // The board's next ban calls: the account's ban is lifted just after each.
    let liftsAfterBoardBan = 1
    await replaceMethod<Leaderboard, 'ban'>(
      env.LEADERBOARD.getByName(board),
      'ban',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['ban']>) {
          const answer = await original.apply(this, args)
          if (args[1] === player && liftsAfterBoardBan > 0) {
            liftsAfterBoardBan--
            await pg()`delete from player_bans where player_id = ${player}`
          }
          return answer
        },
    )
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'again')`
    // Lifted: the lift goes on, and there is nothing left to lift.
    expect(await (await lift()).json()).toEqual({ lifted: false })
    expect(await boardBans(board)).toEqual([])
    // Banned again while such a lift takes the board's off (the new ban's walk found it there):
    // put back. The lift puts the board's on, finds the account's gone, takes it off, and
    // meanwhile this one.
    let bansDuringUndo = 1
    await replaceMethod<Leaderboard, 'unban'>(
      env.LEADERBOARD.getByName(board),
      'unban',
      (original) =>
        async function (this: Leaderboard, ...args: Parameters<Leaderboard['unban']>) {
          if (args[1] === player && args[2]?.byAccount === true && bansDuringUndo > 0) {
            bansDuringUndo--
            await pg()`insert into player_bans (player_id, reason) values (${player}, 'fourth')`
          }
          return original.apply(this, args)
        },
    )
    liftsAfterBoardBan = 1
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'third')`
    expect((await problem(await lift())).body).toMatchObject({ accountBan: true })
    expect(await boardBans(board)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'fourth', byAccount: true }),
    ])
    // Banned and lifted twice over while the lift follows it: the board ends as the account
    // does, unbanned (it held the account's ban only: nothing of its own to lift).
    liftsAfterBoardBan = 2
    bansDuringUndo = 1
    await pg()`delete from player_bans where player_id = ${player}`
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'fifth')`
    expect(await (await lift()).json()).toEqual({ lifted: false })
    expect(await boardBans(board)).toEqual([])
    // Banned and lifted again and again while the lift follows it: after a few rounds it gives up
    // (503, to be sent again), leaving the board banned as the account stood at its last look.
    liftsAfterBoardBan = 4
    bansDuringUndo = 4
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'sixth')`
    const gaveUp = await problem(await lift())
    expect(gaveUp).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(await boardBans(board)).toEqual([
      expect.objectContaining({ playerId: player, byAccount: true }),
    ])
    expect((await pg()`select 1 from player_bans where player_id = ${player}`).length).toBe(1)
  })

  it("a board's lift racing an account ban (committed after the lift's check, its walk at the board before the lift) leaves the player banned there: 409 accountBan", async () => {
    const player = `ban-${crypto.randomUUID()}`
    const board = await newBoard()
    expect((await banOnBoard(board, player, 'griefing')).status).toBe(200)
    // The account ban commits in Neon and its walk bans the player on the board (keeping the
    // board's own ban) just as the lift's call reaches the board, its check of Neon done.
    await replaceMethod<Leaderboard, 'unban'>(
      env.LEADERBOARD.getByName(board),
      'unban',
      (original) =>
        async function (this: Leaderboard, boardId, playerId, opts) {
          if (boardId === board && playerId === player && opts?.byAccount !== true) {
            await pg()`insert into player_bans (player_id, reason) values (${player}, 'aimbot')`
            expect((await this.ban(board, player, 'aimbot', { byAccount: true })).ok).toBe(true)
          }
          return original.call(this, boardId, playerId, opts)
        },
    )
    const lift = await problem(
      await call(`/v1/admin/leaderboards/${board}/bans/${player}`, {
        ...bearer(ADMIN_KEY),
        method: 'DELETE',
      }),
    )
    expect(lift).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(lift.body).toMatchObject({ accountBan: true })
    // Banned there as everywhere, by the account ban (whose lifting lifts it).
    expect(await boardBans(board)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'aimbot', byAccount: true }),
    ])
    expect((await submitFor(board, player, { score: 1 })).status).toBe(403)
    // Lifted, so that this file's boards made after it do not take it on.
    expect((await liftAll(player)).first.lifted).toBe(true)
    expect(await boardBans(board)).toEqual([])
  })

  it('a socket opened before the ban: its join is refused once its claim needs Neon again', async () => {
    const queue = await createQueue()
    await rig(queue, newClock())
    const playerId = `ban-s-${crypto.randomUUID()}`
    const { token } = await issuePlayerToken(env, playerId)
    const ws = await connect(`/v1/matchmaking/${queue}`, token)
    await banAll(playerId, { reason: 'aimbot' })
    // The claim the socket took when it connected grows too old to join with (5 minutes): the
    // pool takes a new one from Neon, which refuses it.
    await runInDurableObject(poolOf(queue), (_inst: MatchPool, state) => {
      for (const socket of state.getWebSockets()) {
        const att = socket.deserializeAttachment() as { claim?: { claimedAt: number } | null }
        if (att.claim) socket.serializeAttachment({ ...att, claim: { ...att.claim, claimedAt: 0 } })
      }
    })
    ws.send(JSON.stringify({ type: 'join' }))
    const e = await nextOfType<{ code: string; message: string }>(ws, 'error')
    expect(e).toMatchObject({ code: 'banned', message: 'This player is banned' })
    const waiting = await runInDurableObject(poolOf(queue), async (inst: MatchPool) =>
      inst.stats('eu'),
    )
    expect(waiting.waitingTickets).toBe(0)
    ws.close(1000)
  })

  it("a banned player's token (issued before the ban) makes no party, sends no invite and joins none: 403, nothing written", async () => {
    const [banned, other, host] = await Promise.all(
      [1, 2, 3].map(async () => {
        const playerId = `ban-party-${crypto.randomUUID()}`
        return { playerId, token: (await issuePlayerToken(env, playerId)).token }
      }),
    )
    const partyOf = async (token: string) =>
      (await (await call('/v1/parties', json('POST', {}, token))).json()) as { id: string }
    // Before the ban: the player leads a party, and has an invite to another's.
    const led = await partyOf(banned!.token)
    const hosted = await partyOf(host!.token)
    const invitedBefore = await call(
      `/v1/parties/${hosted.id}/invites`,
      json('POST', { playerId: banned!.playerId }, host!.token),
    )
    expect(invitedBefore.status).toBe(201)
    await banAll(banned!.playerId)

    const expectBanned = async (res: Response) => {
      const p = await problem(res)
      expect(p).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
      expect(p.body.detail).toBe('This player is banned')
    }
    await expectBanned(
      await call(
        `/v1/parties/${led.id}/invites`,
        json('POST', { playerId: other!.playerId }, banned!.token),
      ),
    )
    // Leaving is not refused; then, in no party, they make none and join none.
    const left = await call(`/v1/parties/${led.id}/members/me`, {
      ...bearer(banned!.token),
      method: 'DELETE',
    })
    expect(left.status).toBeLessThan(300)
    await expectBanned(await call('/v1/parties', json('POST', {}, banned!.token)))
    await expectBanned(
      await call(`/v1/parties/${hosted.id}/members`, { ...bearer(banned!.token), method: 'POST' }),
    )
    const [invites, memberships, leads] = await Promise.all([
      pg()`select party_id from party_invites where player_id = ${other!.playerId}`,
      pg()`select party_id from party_members where player_id = ${banned!.playerId}`,
      pg()`select id from parties where leader = ${banned!.playerId}`,
    ])
    expect({ invites, memberships, leads }).toEqual({ invites: [], memberships: [], leads: [] })
  })

  it("a party around a banned player stays usable: a leaving leader hands over to one not banned, invites to players who could never accept are refused, and a banned leader's invites are neither listed nor accepted", async () => {
    const players = await Promise.all(
      [1, 2, 3, 4, 5, 6, 7].map(async () => {
        const playerId = `ban-lead-${crypto.randomUUID()}`
        return { playerId, token: (await issuePlayerToken(env, playerId)).token }
      }),
    )
    type P = (typeof players)[0]
    const [leader, first, second, host, invitee, otherHost, later] = players as [
      P,
      P,
      P,
      P,
      P,
      P,
      P,
    ]
    type Party = { id: string; leader: string; invites: { playerId: string }[] }
    const partyOf = async (token: string) =>
      (await (await call('/v1/parties', json('POST', {}, token))).json()) as Party
    const invite = (party: string, playerId: string, token: string) =>
      call(`/v1/parties/${party}/invites`, json('POST', { playerId }, token))
    const accept = (party: string, token: string) =>
      call(`/v1/parties/${party}/members`, { ...bearer(token), method: 'POST' })
    const party = await partyOf(leader.token)
    // `first` joins before `second`: the longest-standing member, then banned.
    for (const m of [first, second]) {
      expect((await invite(party.id, m.playerId, leader.token)).status).toBe(201)
      expect((await accept(party.id, m.token)).status).toBe(200)
    }
    await banAll(first.playerId)
    const left = await call(`/v1/parties/${party.id}/members/me`, {
      ...bearer(leader.token),
      method: 'DELETE',
    })
    expect(left.status).toBe(204)
    const read = (await (
      await call(`/v1/parties/${party.id}`, bearer(second.token))
    ).json()) as Party
    expect(read.leader).toBe(second.playerId)

    // Invites that could never be accepted take no place: a banned player, an erased guest's id.
    const erasedGuest = `g_${crypto.randomUUID()}`
    await pg()`insert into erased_players (id) values (${erasedGuest})`
    for (const target of [leader.playerId, erasedGuest]) {
      if (target === leader.playerId) await banAll(leader.playerId)
      const refused = await problem(await invite(party.id, target, second.token))
      expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
      expect(refused.body).toMatchObject({ invitable: false })
    }
    expect(await pg()`select player_id from party_invites where party_id = ${party.id}`).toEqual([])
    // An invite out before its player's ban goes with the ban: it held a place for nobody.
    expect((await invite(party.id, later.playerId, second.token)).status).toBe(201)
    await banAll(later.playerId)
    expect(await pg()`select player_id from party_invites where party_id = ${party.id}`).toEqual([])

    // A leader banned after inviting: the invite is not listed, and its accept is 403 and keeps it.
    const hosted = await partyOf(host.token)
    expect((await invite(hosted.id, invitee.playerId, host.token)).status).toBe(201)
    const elsewhere = await partyOf(otherHost.token)
    expect((await invite(elsewhere.id, invitee.playerId, otherHost.token)).status).toBe(201)
    await banAll(host.playerId)
    // Only the banned leader's invite is hidden; another party's stays listed.
    const listed = (await (
      await call('/v1/players/me/party-invites', bearer(invitee.token))
    ).json()) as { invites: { partyId: string }[] }
    expect(listed.invites.map((i) => i.partyId)).toEqual([elsewhere.id])
    const refused = await problem(await accept(hosted.id, invitee.token))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(refused.body.detail).toContain('led by a banned player')
    const [kept, joined] = await Promise.all([
      pg()`select player_id from party_invites where party_id = ${hosted.id}`,
      pg()`select party_id from party_members where player_id = ${invitee.playerId}`,
    ])
    expect({ kept, joined }).toEqual({ kept: [{ player_id: invitee.playerId }], joined: [] })
  })

  it('a party with a banned member cannot queue, over HTTP or a socket, until the member leaves', async () => {
    const queue = await createQueue({ teamSize: 2, maxPartySize: 2 })
    await rig(queue, newClock())
    const [leader, member] = await Promise.all(
      [1, 2].map(async () => {
        const playerId = `ban-p-${crypto.randomUUID()}`
        return { playerId, token: (await issuePlayerToken(env, playerId)).token }
      }),
    )
    const party = (await (await call('/v1/parties', json('POST', {}, leader!.token))).json()) as {
      id: string
    }
    const invited = await call(
      `/v1/parties/${party.id}/invites`,
      json('POST', { playerId: member!.playerId }, leader!.token),
    )
    expect(invited.status).toBe(201)
    expect(
      (await call(`/v1/parties/${party.id}/members`, { ...bearer(member!.token), method: 'POST' }))
        .status,
    ).toBe(200)
    await banAll(member!.playerId, { reason: 'smurfing' })

    const both = [leader!.playerId, member!.playerId]
    const claims = () =>
      pg()`select player_id, version from queue_claims where queue = ${queue} order by player_id`
    const http = await problem(await joinAs(queue, leader!.token, { party: both }))
    expect(http).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(http.body.detail).toContain(member!.playerId)
    // The refused join claimed nothing on the queue, for the leader either.
    expect(await claims()).toEqual([])
    const ws = await connect(`/v1/matchmaking/${queue}`, leader!.token)
    const connected = await claims()
    ws.send(JSON.stringify({ type: 'join', party: both }))
    const e = await nextOfType<{ code: string; message: string }>(ws, 'error')
    expect(e).toMatchObject({ code: 'banned' })
    expect(e.message).toContain(member!.playerId)
    expect(await claims()).toEqual(connected)

    // The leader removes the member; alone, the leader queues.
    const kicked = await call(`/v1/parties/${party.id}/members/${member!.playerId}`, {
      ...bearer(leader!.token),
      method: 'DELETE',
    })
    expect(kicked.status).toBe(204)
    ws.send(JSON.stringify({ type: 'join', party: [leader!.playerId] }))
    expect(await nextOfType<{ ticketId: string }>(ws, 'queued')).toHaveProperty('ticketId')
    ws.close(1000)
  })

  it("a board full of bans refuses another (409, its limit) but takes a ban again and makes room at a lift; an account ban's walk names it as full, and the player is banned everywhere else", async () => {
    const [full, other] = [await newBoard(), await newBoard()]
    const players = Array.from({ length: 4 }, (_, i) => `ban-full-${i}-${crypto.randomUUID()}`)
    for (const b of [full, other]) await submitFor(b, players[3]!, { score: 1 })
    // Room for two more bans than the board holds now (other files' account bans it took on).
    const limit = await runInDurableObject(env.LEADERBOARD.getByName(full), (inst: Leaderboard) => {
      const board = inst as unknown as { banCount: number; maxBans: number }
      board.maxBans = board.banCount + 2
      return board.maxBans
    })
    for (const p of players.slice(0, 2))
      expect((await banOnBoard(full, p, 'spam')).status).toBe(200)
    const refused = await problem(await banOnBoard(full, players[2]!, 'spam'))
    expect(refused).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(refused.body.limit).toBe(limit)
    // Banned again: no new place taken.
    expect((await banOnBoard(full, players[0]!, 'spam, again')).status).toBe(200)
    // A lift makes room.
    const lift = await call(`/v1/admin/leaderboards/${full}/bans/${players[1]}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(lift.status).toBe(200)
    expect((await banOnBoard(full, players[2]!, 'spam')).status).toBe(200)
    // The board is full again: an account ban walks past it, naming it, and bans the rest.
    bannedHere.add(players[3]!)
    const fulls: string[] = []
    for (let after = PREFIX; ;) {
      const res = await call(banPath(players[3]!, after), json('PUT', {}, ADMIN_KEY))
      expect([200, 202]).toContain(res.status)
      const body = (await res.json()) as BanResult
      fulls.push(...body.boards.full)
      if (body.boards.next === null) break
      after = body.boards.next
    }
    expect(fulls).toEqual([full])
    expect((await submitFor(other, players[3]!, { score: 2 })).status).toBe(403)
    expect(
      (await fresh<{ entry: unknown }>(`/v1/leaderboards/${full}/players/${players[3]}`)).entry,
    ).not.toBeNull()
  })

  it('walks the boards a page per call; a board that cannot be reached is 503 naming it, and the retry finishes the job', async () => {
    const [up, down] = [await newBoard(), await newBoard()]
    const player = `ban-${crypto.randomUUID()}`
    for (const b of [up, down]) await submitFor(b, player, { score: 1 })
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    const boardBack = await replaceMethod<Leaderboard, 'ban'>(
      env.LEADERBOARD.getByName(down),
      'ban',
      (ban) =>
        function (this: Leaderboard, boardId, playerId, reason, opts) {
          if (boardId === down) return Promise.reject(new Error('board down'))
          return ban.call(this, boardId, playerId, reason, opts)
        },
    )
    let res: Response
    let after = PREFIX
    bannedHere.add(player)
    for (;;) {
      res = await call(banPath(player, after), json('PUT', {}, ADMIN_KEY))
      if (res.status !== 202) break
      const body = (await res.json()) as BanResult
      expect(body.boards.walked).toBe(1)
      after = body.boards.next!
    }
    expect(res.headers.get('retry-after')).toBe('5')
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.boards).toEqual([down])
    // Banned in Neon already: sign-in and matchmaking refuse from the first call.
    expect((await call(banPath(player), bearer(ADMIN_KEY))).status).toBe(200)
    boardBack()
    // The retry goes on from the page that failed, to the last.
    for (;;) {
      const retry = await call(banPath(player, after), json('PUT', {}, ADMIN_KEY))
      expect([200, 202]).toContain(retry.status)
      const body = (await retry.json()) as BanResult
      if (body.boards.next === null) break
      after = body.boards.next
    }
    for (const b of [up, down]) expect((await submitFor(b, player, { score: 2 })).status).toBe(403)
  })

  it("cancels the tickets waiting when the ban comes (a party ticket whole, a socket told), drops sockets' claims at once, and refuses a join that claimed before it", async () => {
    // Two teams of three: the four players below wait without making a match.
    const queue = await createQueue({ teamSize: 3, maxPartySize: 2 })
    await rig(queue, newClock())
    const id = (name: string) => `ban-q-${name}-${crypto.randomUUID().slice(0, 8)}`
    const [solo, member, mate, onSocket, idle, racing] = [
      'solo',
      'member',
      'mate',
      'socket',
      'idle',
      'racing',
    ].map(id) as [string, string, string, string, string, string]
    const soloTicket = await joinFor(queue, solo)
    const partyTicket = await joinFor(queue, mate, { party: [mate, member] })
    const socketToken = (await issuePlayerToken(env, onSocket)).token
    const ws = await connect(`/v1/matchmaking/${queue}`, socketToken)
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<{ ticketId: string }>(ws, 'queued')
    const idleWs = await connect(
      `/v1/matchmaking/${queue}`,
      (await issuePlayerToken(env, idle)).token,
    )
    // A join that has its claim from Neon, and reaches the pool only after the ban.
    const early = await claimQueue(env, queue, 'eu', [racing])
    if (!early.ok) throw new Error('no claim')

    const soloBan = await banAll(solo)
    expect(soloBan.first.tickets).toEqual({ cancelled: [soloTicket.ticketId] })
    expect(await ticketOf(soloTicket.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'banned',
    })
    const memberBan = await banAll(member)
    expect(memberBan.first.tickets).toEqual({ cancelled: [partyTicket.ticketId] })
    expect(await ticketOf(partyTicket.ticketId)).toMatchObject({
      status: 'cancelled',
      reason: 'banned',
    })
    const socketBan = await banAll(onSocket)
    expect(socketBan.first.tickets).toEqual({ cancelled: [queued.ticketId] })
    expect(await nextOfType<{ reason: string }>(ws, 'cancelled')).toMatchObject({
      ticketId: queued.ticketId,
      reason: 'banned',
    })
    // The socket that had not joined yet: its claim is dropped, so its join asks Neon now.
    expect((await banAll(idle)).first.tickets).toEqual({ cancelled: [] })
    idleWs.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType<{ code: string }>(idleWs, 'error')).toMatchObject({ code: 'banned' })
    idleWs.close(1000)

    await banAll(racing)
    const late = await runInDurableObject(poolOf(queue), (inst: MatchPool) =>
      inst.join({
        queue,
        region: 'eu',
        config: { ...DUEL, teamSize: 3, maxPartySize: 2 } as never,
        version: 1,
        players: [{ playerId: racing, rating: 1500 }],
        claim: early.claim,
      }),
    )
    expect(late).toMatchObject({ ok: false, problem: 'conflict' })
    expect(
      (await runInDurableObject(poolOf(queue), (inst: MatchPool) => inst.stats('eu')))
        .waitingTickets,
    ).toBe(0)
    // The innocent party member may queue again, alone.
    expect((await joinFor(queue, mate)).status).toBe('waiting')
    // A retry of a ban changes nothing more.
    expect((await banAll(solo)).first.tickets).toEqual({ cancelled: [] })
  })

  it("a player's first join of a queue, whose claim is being taken while the ban commits, is waited for: no ticket of theirs waits after the ban", async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const player = `ban-first-${crypto.randomUUID().slice(0, 8)}`
    const sql = pg()
    // Another transaction holds an uncommitted claim row of the player's for a moment, then rolls
    // back: the join's claim statement, begun before the ban commits, waits on that row, and
    // inserts the player's first claim after the ban's read of the claims has begun.
    const marker = `claim_row_${crypto.randomUUID().replaceAll('-', '')}`
    const held = sql
      .transaction([
        sql.query(
          `insert into queue_claims (queue, player_id, version, regions) values ($1, $2, 1, '{}')`,
          [queue, player],
        ),
        sql.query(`select pg_sleep(3) as ${marker}`),
        sql.query(`select 1 / 0`),
      ])
      .catch(() => 'rolled back')
    const active = (pattern: string, waiting = false) =>
      until(
        async () =>
          (
            await sql.query(
              `select 1 from pg_stat_activity where state = 'active' and query like $1
                  and ($2::boolean = false or wait_event_type = 'Lock')
                  and pid <> pg_backend_pid()`,
              [pattern, waiting],
            )
          ).length > 0 || undefined,
        5000,
        pattern,
      )
    await active(`%${marker}%`)
    const join = call(
      `/v1/matchmaking/${queue}/tickets`,
      json('POST', { playerId: player }, ADMIN_KEY),
    )
    // The claim statement (its start: PostgreSQL shows a query's first 1,024 bytes).
    await active('%banned as (select player_id from player_bans%', true)
    const ban = banAll(player)
    expect(await held).toBe('rolled back')
    const [joined, banned] = await Promise.all([join, ban])
    // Either the ban's fence reached the pool before the join (refused) or the ban cancelled
    // the ticket the join made: never a ticket left waiting for the banned player.
    if (joined.status === 201) {
      const ticket = (await joined.json()) as { ticketId: string }
      expect(banned.first.tickets).toEqual({ cancelled: [ticket.ticketId] })
      expect(await ticketOf(ticket.ticketId)).toMatchObject({
        status: 'cancelled',
        reason: 'banned',
      })
    } else {
      expect(joined.status).toBe(409)
    }
    expect(
      (await runInDurableObject(poolOf(queue), (inst: MatchPool) => inst.stats('eu')))
        .waitingTickets,
    ).toBe(0)
  })

  it('cancels a ticket waiting by the first call of a walk that takes several, not the last: matched meanwhile, the banned would play', async () => {
    // Two teams of two: one waiting player makes no match.
    const queue = await createQueue({ teamSize: 2 })
    await rig(queue, newClock())
    const player = `ban-first-${crypto.randomUUID().slice(0, 8)}`
    const ticket = await joinFor(queue, player)
    await newBoard()
    await newBoard()
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    bannedHere.add(player)
    const res = await call(banPath(player, PREFIX), json('PUT', {}, ADMIN_KEY))
    expect(res.status).toBe(202)
    expect(((await res.json()) as BanResult).tickets).toEqual({ cancelled: [ticket.ticketId] })
    expect(await ticketOf(ticket.ticketId)).toMatchObject({ status: 'cancelled', reason: 'banned' })
    // Three more players would make a match of four with it: they wait, no match is made.
    for (const n of [1, 2, 3]) {
      const other = await joinFor(queue, `ban-first-other-${n}-${crypto.randomUUID()}`)
      expect(other.status).toBe('waiting')
    }
    boardWalkLimits.boardsPerCall = perCall
    // The rest of the walk finds nothing left to cancel.
    expect((await banAll(player)).first.tickets).toEqual({ cancelled: [] })
  })

  it('a board that keeps failing need not hold the walk back: its 503 names it and gives `next`, from which the walk goes on; the page sent again later reaches it', async () => {
    const player = `ban-stuck-${crypto.randomUUID().slice(0, 8)}`
    const boards = [await newBoard(), await newBoard()].sort()
    for (const b of boards) await submitFor(b, player, { score: 1 })
    const [stuck, later] = boards as [string, string]
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    // Every instance shares the method: only the stuck board's calls fail.
    const boardBack = await replaceMethod<Leaderboard, 'ban'>(
      env.LEADERBOARD.getByName(stuck),
      'ban',
      (original) =>
        function (this: Leaderboard, ...args: Parameters<Leaderboard['ban']>) {
          if (args[0] === stuck) return Promise.reject(new Error('board full'))
          return original.apply(this, args)
        },
    )
    bannedHere.add(player)
    let after = PREFIX
    let stuckAt: string | null = null
    for (let calls = 0; calls < 500; calls++) {
      const res = await call(banPath(player, after), json('PUT', {}, ADMIN_KEY))
      if (res.status === 200) break
      if (res.status === 503) {
        const p = await problem(res)
        expect(p.body.boards).toEqual([stuck])
        stuckAt = after
        after = p.body.next as string
        continue
      }
      expect(res.status).toBe(202)
      after = ((await res.json()) as BanResult).boards.next!
    }
    expect(stuckAt).not.toBeNull()
    // The board after the stuck one was banned all the same; the stuck one not yet.
    expect((await submitFor(later, player, { score: 2 })).status).toBe(403)
    expect((await submitFor(stuck, player, { score: 2 })).status).toBe(200)
    boardBack()
    // That page sent again, as the operator would once the board can take it.
    const again = await call(banPath(player, stuckAt!), json('PUT', {}, ADMIN_KEY))
    expect([200, 202]).toContain(again.status)
    expect((await submitFor(stuck, player, { score: 3 })).status).toBe(403)
  })

  it('a pool that cannot be reached does not hold the walk back: every board is banned, the call that ends the walk is 503 naming the pool, its retry cancels the ticket', async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const player = `ban-walk-${crypto.randomUUID().slice(0, 8)}`
    const ticket = await joinFor(queue, player)
    const boards = [await newBoard(), await newBoard()]
    for (const b of boards) await submitFor(b, player, { score: 1 })
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    const poolBack = await replaceMethod<MatchPool, 'removePlayer'>(
      poolOf(queue),
      'removePlayer',
      () => () => Promise.reject(new Error('pool down')),
    )
    bannedHere.add(player)
    let after = PREFIX
    let res: Response
    for (;;) {
      res = await call(banPath(player, after), json('PUT', {}, ADMIN_KEY))
      if (res.status !== 202) break
      after = ((await res.json()) as BanResult).boards.next!
    }
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.pools).toEqual([`${queue}/eu`])
    for (const b of boards) expect((await submitFor(b, player, { score: 2 })).status).toBe(403)
    expect((await ticketOf(ticket.ticketId)).status).toBe('waiting')
    poolBack()
    const retry = await call(banPath(player, after), json('PUT', {}, ADMIN_KEY))
    expect(retry.status).toBe(200)
    expect(((await retry.json()) as BanResult).tickets).toEqual({ cancelled: [ticket.ticketId] })
  })

  it('a pool that cannot be reached is 503 naming it, with the player banned in Neon; the retry cancels the ticket', async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const player = `ban-q-down-${crypto.randomUUID().slice(0, 8)}`
    const ticket = await joinFor(queue, player)
    const poolBack = await replaceMethod<MatchPool, 'removePlayer'>(
      poolOf(queue),
      'removePlayer',
      () => () => Promise.reject(new Error('pool down')),
    )
    bannedHere.add(player)
    const res = await call(banPath(player, PREFIX), json('PUT', {}, ADMIN_KEY))
    expect(res.headers.get('retry-after')).toBe('5')
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.pools).toEqual([`${queue}/eu`])
    expect((await call(banPath(player), bearer(ADMIN_KEY))).status).toBe(200)
    expect((await ticketOf(ticket.ticketId)).status).toBe('waiting')
    poolBack()
    const retry = await banAll(player)
    expect(retry.first.tickets).toEqual({ cancelled: [ticket.ticketId] })
  })

  it('a board created after the ban takes it on before its creation answers, pushed or configured from Neon on its first call; lifting reaches it', async () => {
    const player = `ban-late-${crypto.randomUUID()}`
    const { token } = await issuePlayerToken(env, player)
    await banAll(player, { reason: 'aimbot' })

    const pushed = await newBoard()
    expect(await boardBans(pushed)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'aimbot', byAccount: true }),
    ])
    const refused = await problem(await submitAs(pushed, token, { score: 5 }))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })

    // In Neon, never handed to its object (a PUT whose push failed): the first call configures
    // it, and a banned player's submission is that first call.
    const unpushed = boardId(PREFIX)
    await pg()`insert into leaderboards (id, config)
               select ${unpushed}, config from leaderboards where id = ${pushed}`
    const first = await problem(await submitAs(unpushed, token, { score: 5 }))
    expect(first).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(await boardBans(unpushed)).toEqual([
      expect.objectContaining({ playerId: player, byAccount: true }),
    ])

    const lift = await liftAll(player)
    expect(lift.first.lifted).toBe(true)
    for (const b of [pushed, unpushed]) {
      expect(await boardBans(b)).toEqual([])
      expect((await submitAs(b, token, { score: 6 })).status).toBe(200)
    }
  })

  it('a new board whose Neon takes the bans query and never answers is configured all the same, and retries 30 s later', async () => {
    const board = boardId(PREFIX)
    const attempt = await configureWithNeon(board, {
      DATABASE_URL: env.TEST_SILENT_DATABASE_URL,
      NEON_LOCAL_RELAY: env.TEST_SILENT_NEON_RELAY,
    })
    // The hung query was given up on (every call to the board waited on it), not waited for.
    expect(attempt.alarm).toBeGreaterThanOrEqual(attempt.before + 30_000)
    // And the board serves: its retry is not due, so a call does not wait for it again.
    expect((await submitFor(board, `silent-bans-${board}`, { score: 4 })).status).toBe(200)
  })

  it('a new board that cannot read the account bans retries from its alarm, pages through them, and resumes after an eviction where it stopped', async () => {
    const tag = crypto.randomUUID().slice(0, 8)
    const banned = Array.from(
      { length: 25 },
      (_, i) => `ban-many-${tag}-${String(i).padStart(2, '0')}`,
    )
    for (const p of banned) bannedHere.add(p)
    await pg()`insert into player_bans (player_id, reason)
               select unnest(${banned}::text[]), 'bot farm'`
    const board = boardId(PREFIX)
    const stubOf = env.LEADERBOARD.getByName(board)
    const attempt = await configureWithNeon(
      board,
      {
        DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
      },
      (inst) => {
        inst.catchUpPageSize = 10
        inst.catchUpPagesPerRun = 2
      },
    )
    // Configured all the same; the catch-up waits 30 s rather than hammering Neon.
    expect(attempt.alarm).toBeGreaterThanOrEqual(attempt.before + 30_000)
    expect(await boardBans(board)).toEqual([])

    // The retry, once due, takes two pages of ten (a run's share), and comes right back for
    // the rest.
    await runInDurableObject(stubOf, (inst: Leaderboard) => {
      inst.now = () => attempt.alarm!
    })
    expect(await runDurableObjectAlarm(stubOf)).toBe(true)
    // Read in the object's storage: a call through the route would wait for the rest (below).
    const afterOneRun = await runInDurableObject(stubOf, (_i, state) => ({
      bans: state.storage.sql
        .exec<{ player_id: string; reason: string; by_account: number }>(
          `SELECT player_id, reason, by_account FROM bans ORDER BY player_id`,
        )
        .toArray(),
      alarm: state.storage.getAlarm(),
    }))
    expect(afterOneRun.bans.map((b) => b.player_id)).toEqual(banned.slice(0, 20))
    expect(afterOneRun.bans.every((b) => b.by_account === 1 && b.reason === 'bot farm')).toBe(true)
    const next = await afterOneRun.alarm
    expect(next).not.toBeNull()
    expect(next!).toBeLessThanOrEqual(attempt.alarm!)

    // Evicted before that run, with its retry put off for half an hour, the board goes on from
    // the last player it took once the retry is due by its clock, and the call that comes then
    // waits for it: the last banned player's submission is refused.
    const later = Date.now() + 1_800_000
    await runInDurableObject(stubOf, async (_i, state) => {
      state.storage.sql.exec(
        `UPDATE meta SET value = ? WHERE key = 'account_bans_retry_at'`,
        String(later),
      )
      await state.storage.setAlarm(later)
    })
    await evictDurableObject(stubOf)
    const woken = await runInDurableObject(stubOf, (inst: Leaderboard, state) => {
      inst.now = () => later
      return state.storage.sql.exec<{ n: number }>(`SELECT count(*) AS n FROM bans`).one().n
    })
    expect(woken).toBe(20)
    expect((await submitFor(board, banned[24]!, { score: 1 })).status).toBe(403)
    expect((await boardBans(board)).map((b) => b.playerId)).toEqual(banned)
    expect((await submitFor(board, banned[0]!, { score: 1 })).status).toBe(403)
    expect((await submitFor(board, `not-${tag}`, { score: 1 })).status).toBe(200)
    // Caught up: no alarm left for it (the board has no schedule and no idempotency keys due).
    const meta = await runInDurableObject(stubOf, (_i, state) =>
      state.storage.sql
        .exec(`SELECT key FROM meta WHERE key LIKE 'account_bans%'`)
        .toArray()
        .map((r) => r.key),
    )
    expect(meta).toEqual([])
  })

  it("a call that comes while a catch-up holds a page of account bans waits for it, though the catch-up's retry is not due; an alarm for another job does not start one before it is", async () => {
    const player = `ban-held-${crypto.randomUUID().slice(0, 8)}`
    bannedHere.add(player)
    await pg()`insert into player_bans (player_id, reason) values (${player}, 'held')`
    const board = boardId(PREFIX)
    const stubOf = env.LEADERBOARD.getByName(board)
    // Neon out of reach at the first push: the catch-up's retry is 30 s away.
    const attempt = await configureWithNeon(board, {
      DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
      NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
    })
    expect(attempt.alarm).toBeGreaterThanOrEqual(attempt.before + 30_000)
    // An alarm run for something else before then leaves the catch-up for its time.
    expect(await runDurableObjectAlarm(stubOf)).toBe(true)
    expect(await boardBans(board)).toEqual([])

    // A second push runs the catch-up at once, and its page of bans is held once read. Flags,
    // not promises: one resolved by the board would run the test on in the board's context.
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    onTestFinished(() => release())
    let pageHeld = false
    let callWaiting = false
    await runInDurableObject(stubOf, (inst: Leaderboard) => {
      const real = inst.catchUpReads.accountBansAfter
      inst.catchUpReads = {
        ...inst.catchUpReads,
        accountBansAfter: async (...args) => {
          const page = await real(...args)
          pageHeld = true
          await held
          return page
        },
      }
    })
    type Waiter = { awaitCatchUp(): Promise<void> }
    await replaceMethod<Waiter, 'awaitCatchUp'>(
      stubOf,
      'awaitCatchUp',
      (wait) =>
        function (this: Waiter) {
          callWaiting = true
          return wait.call(this)
        },
    )
    const pushing = stubOf.configure(
      board,
      BARE_CONFIG as unknown as Parameters<Leaderboard['configure']>[1],
      2,
      0,
    )
    await until(async () => pageHeld || undefined, 5000, 'the page of bans held')
    // The player's submission comes while the page is held: answered before the page is taken
    // on, it would rank a banned player. The page is let go once the call is at the wait.
    const submitting = submitFor(board, player, { score: 1 })
    await until(async () => callWaiting || undefined, 5000, 'the submission at the wait')
    await runInDurableObject(stubOf, () => release())
    const refused = await problem(await submitting)
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    await pushing
    expect((await boardBans(board)).map((b) => b.playerId)).toEqual([player])
  })

  it('a board from before boards took account bans on catches up once, on the wake that upgrades it', async () => {
    const board = await newBoard()
    const [player, lifted] = [`ban-old-${crypto.randomUUID()}`, `ban-new-${crypto.randomUUID()}`]
    // A ban from before the board existed, which no walk brought to it (as for a board created
    // before this), and a newer one whose walk did and which the board's admin lifted there.
    bannedHere.add(player).add(lifted)
    await pg()`insert into player_bans (player_id, reason, banned_at)
               values (${player}, 'old ban', now() - interval '1 day'), (${lifted}, 'new ban', now())`
    for (const p of [player, lifted]) {
      expect((await submitFor(board, p, { score: 1 })).status).toBe(200)
    }
    await runInDurableObject(env.LEADERBOARD.getByName(board), (_i, state) => {
      state.storage.sql.exec(`UPDATE meta SET value = '8' WHERE key = 'schema'`)
    })
    await evictDurableObject(env.LEADERBOARD.getByName(board))
    // The wake sets the alarm for it; running it takes the ban on and the entry out.
    const woken = await runInDurableObject(env.LEADERBOARD.getByName(board), (_i, state) =>
      state.storage.getAlarm(),
    )
    expect(woken).not.toBeNull()
    expect(woken!).toBeLessThanOrEqual(Date.now())
    expect(await runDurableObjectAlarm(env.LEADERBOARD.getByName(board))).toBe(true)
    expect(await boardBans(board)).toEqual([
      expect.objectContaining({ playerId: player, reason: 'old ban', byAccount: true }),
    ])
    expect(
      await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${player}`),
    ).toMatchObject({ entry: null })
    expect((await submitFor(board, lifted, { score: 2 })).status).toBe(200)
  })

  it("an erasure keeps a banned guest's device banned: it signs in as nobody until the ban is lifted, then as a new player", async () => {
    const guest = await guestWithDevice()
    await banAll(guest.playerId, { reason: 'aimbot' })
    const erased = await call(`/v1/admin/players/${guest.playerId}?after=${PREFIX}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(erased.status).toBe(200)
    expect(await erased.json()).toMatchObject({ profileDeleted: true, deviceKeptForBan: true })
    // Sent again (a retry, or the next page of a long walk), it still says so.
    const retried = await call(`/v1/admin/players/${guest.playerId}?after=${PREFIX}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(await retried.json()).toMatchObject({ profileDeleted: false, deviceKeptForBan: true })
    // Neon keeps device ids as their SHA-256.
    const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(guest.deviceId))
    const deviceKey = [...new Uint8Array(digest)]
      .map((b) => b.toString(16).padStart(2, '0'))
      .join('')
    const linked = () => pg()`select id from players where device_id = ${deviceKey}`
    expect(await linked()).toEqual([])
    // The device, whose profile is gone, is refused, and no new player is made for it.
    const refused = await problem(await guest.login())
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(await linked()).toEqual([])
    // Lifting the ban lets the device in again, as the new player an erasure leaves it.
    expect((await liftAll(guest.playerId)).first.lifted).toBe(true)
    const again = await guest.login()
    expect(again.status).toBe(200)
    const { playerId } = (await again.json()) as { playerId: string }
    expect(playerId).not.toBe(guest.playerId)
    expect(await linked()).toEqual([{ id: playerId }])
  })

  it("a banned guest's sign-in while their erasure hands the device to the ban: refused, and no new player is made for the device", async () => {
    const guest = await guestWithDevice()
    await banAll(guest.playerId, { reason: 'aimbot' })
    const deviceKey = await sha256Hex(guest.deviceId)
    // The erasure's hand-over, held open for a moment as it is while it runs: the device's lock,
    // the device moved onto the ban, the profile deleted, not yet committed.
    const sql = pg()
    const marker = `erasing_${crypto.randomUUID().replaceAll('-', '')}`
    const erasing = sql.transaction([
      sql.query(DEVICE_LOCK, [deviceKey]),
      sql.query(`update player_bans set device_id = $2 where player_id = $1`, [
        guest.playerId,
        deviceKey,
      ]),
      sql.query(`delete from players where id = $1`, [guest.playerId]),
      sql.query(`select pg_sleep(3) as ${marker}`),
    ])
    await until(
      async () =>
        (
          await sql.query(
            `select 1 from pg_stat_activity where state = 'active' and query like $1`,
            [`%${marker}%`],
          )
        ).length > 0 || undefined,
      5000,
      'the erasure under way',
    )
    const signIn = guest.login()
    // The sign-in waits on the device's lock the erasure holds (it must not come after it).
    await blockedBy(marker, 'the sign-in waiting on the device lock')
    await erasing
    expect(await problem(await signIn)).toMatchObject({
      status: 403,
      type: 'urn:nexus:problem:forbidden',
    })
    expect(await sql.query(`select id from players where device_id = $1`, [deviceKey])).toEqual([])
  })

  it("an account ban waits while the player's erasure hands the device over (the player's lock): it comes before it or after it, not between", async () => {
    const guest = await guestWithDevice()
    const erasing = await holdLock(
      { text: PLAYER_LOCK, params: [guest.playerId] },
      { afterWaiter: 0.2 },
    )
    const banning = call(banPath(guest.playerId, PREFIX), json('PUT', {}, ADMIN_KEY))
    await erasing.contended()
    await erasing.done
    expect((await banning).status).toBeLessThan(300)
    // Lifted: boards made later take the account bans in force (the next test's).
    const lifted = await call(banPath(guest.playerId, PREFIX), {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(lifted.status).toBeLessThan(300)
  })

  it('bad input and callers: 401 without a credential, 403 for a player, 422 for a bad id, reason or after, 415 and 400 for bodies, and nothing banned', async () => {
    const player = `ban-${crypto.randomUUID()}`
    const board = await newBoard()
    await submitFor(board, player, { score: 1 })
    const { token } = await issuePlayerToken(env, player)
    const cases: [Promise<Response>, number, string][] = [
      [
        call(banPath(player), {
          method: 'PUT',
          headers: { 'content-type': 'application/json' },
          body: '{}',
        }),
        401,
        'unauthorized',
      ],
      [call(banPath(player), json('PUT', {}, token)), 403, 'forbidden'],
      [call(banPath(player), { ...bearer(token), method: 'DELETE' }), 403, 'forbidden'],
      [call(banPath(player), bearer(token)), 403, 'forbidden'],
      [call('/v1/admin/players/bad%20id/ban', json('PUT', {}, ADMIN_KEY)), 422, 'validation'],
      [
        call(banPath(player), json('PUT', { reason: 'x'.repeat(257) }, ADMIN_KEY)),
        422,
        'validation',
      ],
      [call(banPath(player), json('PUT', { reason: '' }, ADMIN_KEY)), 422, 'validation'],
      // Text Postgres cannot store: a NUL (was a 500), a lone surrogate (was stored changed).
      [call(banPath(player), json('PUT', { reason: 'a\u0000b' }, ADMIN_KEY)), 422, 'validation'],
      [call(banPath(player), json('PUT', { reason: 'a\ud800b' }, ADMIN_KEY)), 422, 'validation'],
      [call(banPath(player), json('PUT', { reason: 7 }, ADMIN_KEY)), 422, 'validation'],
      [call(banPath(player), json('PUT', { until: 'never' }, ADMIN_KEY)), 422, 'validation'],
      [
        call(`${banPath(player)}?after=${'b'.repeat(300)}`, json('PUT', {}, ADMIN_KEY)),
        422,
        'validation',
      ],
      [
        call(banPath(player), {
          ...bearer(ADMIN_KEY),
          method: 'PUT',
          headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'text/plain' },
          body: '{}',
        }),
        415,
        'unsupported-media-type',
      ],
      [
        call(banPath(player), {
          method: 'PUT',
          headers: { authorization: `Bearer ${ADMIN_KEY}`, 'content-type': 'application/json' },
          body: '{"reason":',
        }),
        400,
        'malformed-json',
      ],
    ]
    for (const [res, status, type] of cases) {
      const p = await problem(await res)
      expect({ status: p.status, type: p.type }).toEqual({
        status,
        type: `urn:nexus:problem:${type}`,
      })
    }
    expect((await call(banPath(player), bearer(ADMIN_KEY))).status).toBe(404)
    expect(await boardBans(board)).toEqual([])
    expect((await submitAs(board, token, { score: 2 })).status).toBe(200)
    // Characters are counted as the OpenAPI's maxLength counts them: an emoji is one.
    const emoji = (n: number) => '\u{1F409}'.repeat(n)
    const long = await problem(
      await call(banPath(player), json('PUT', { reason: emoji(257) }, ADMIN_KEY)),
    )
    expect(long.status).toBe(422)
    const banned = await call(banPath(player), json('PUT', { reason: emoji(256) }, ADMIN_KEY))
    expect(banned.status).toBe(200)
    const read = (await (await call(banPath(player), bearer(ADMIN_KEY))).json()) as {
      reason: string
    }
    expect(read.reason).toBe(emoji(256))
  })
})
