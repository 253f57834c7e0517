import { evictDurableObject, runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import { ERASURES_FORGOTTEN_EVERY_MS, type Leaderboard } from '../../durable-objects/leaderboard.ts'
import {
  ARCHIVE_PAGES_LOCK,
  ARCHIVE_PAGES_SHARED,
  NeonArchiveWriter,
} from '../../workers/leaderboards/archive-writer.ts'
import { boardWalkLimits } from '../../workers/players/board-walk.ts'
import {
  ARCHIVE_CLEAR_BATCH,
  clearArchivedNames,
  PLAYER_LOCK,
} from '../../workers/players/erasure.ts'
import { NeonSessionStore } from '../../workers/sessions/store.ts'
import { boardId, createBoard, fresh, holdLock, pg, submitAs, submitFor } from './helpers/boards.ts'
import {
  CLOCK_SKEW_SECONDS,
  issuePlayerToken,
  MAX_TOKEN_LIFETIME_SECONDS,
} from '../../workers/lib/auth.ts'
import { ADMIN_KEY, bearer, call, callWithEnv, json, newGuest, problem } from './helpers/http.ts'
import { createQueue, joinFor, newClock, poolOf, rig, ticketOf } from './helpers/matchmaking.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { connect, nextOfType, upgrade } from './helpers/sockets.ts'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import { ERASED_CLOSE_CODE } from '../../client/src/sessions.ts'
import { ERASED_CLOSE, GRACE_MS, type GameSession } from '../../durable-objects/game-session.ts'
import {
  clearAfterRetention,
  connect as connectToSession,
  createSession,
  inObject,
  playerIds,
  playToEnd,
  renameRules,
  sessionObject,
  upgrade as upgradeSession,
} from './helpers/session-sockets.ts'

interface Erasure {
  playerId: string
  profileDeleted: boolean
  leftParty: string | null
  archivedRowsCleared: number
  deviceKeptForBan: boolean
  tickets: { cancelled: string[] }
  sessions: { left: string[] }
  boards: { walked: number; entriesRemoved: number; next: string | null }
}

const erase = (playerId: string, after?: string, token = ADMIN_KEY) =>
  call(`/v1/admin/players/${playerId}${after ? `?after=${after}` : ''}`, {
    ...bearer(token),
    method: 'DELETE',
  })

const asPlayer = (token: string, method: string, path: string, body?: unknown) =>
  call(path, body === undefined ? { ...bearer(token), method } : json(method, body, token))

/**
 * This file's boards, and where its walks start: after every other test's boards. Other files run
 * at the same time against the same database, and one of them briefly keeps boards whose objects
 * refuse every call (leaderboard-config's lost pushes); a walk reaching those answers 503. The
 * route's walk from the first board is the same code, started with `after` empty.
 */
const PREFIX = 'zz-erase'
const newBoard = () => createBoard({}, boardId(PREFIX))

/**
 * Erases a player across this file's boards, following `boards.next`; the first call's answer
 * and the entries removed over all calls.
 */
/** Archives cycle 1 of `board` with one entry, score 10, as a close's page writes it. */
function archiveOnlyEntry(
  board: string,
  playerId: string,
  metadata: string | null,
  submittedAt: number,
): Promise<void> {
  return new NeonArchiveWriter(env).writePage({
    leaderboardId: board,
    cycle: 1,
    startsAt: Date.now() - 60_000,
    endsAt: Date.now(),
    entries: 1,
    rows: {
      playerIds: [playerId],
      ranks: [1],
      scores: [10],
      subscores: [0],
      metadata: [metadata],
      submittedAt: [submittedAt],
    },
    rewards: [],
    archivedThrough: 1,
  })
}

/** A guest and another player's dice race, played to its end over sockets (not yet cleared). */
async function playedWithGuest(tag: string) {
  const guest = await newGuest()
  const [other] = playerIds(1, tag) as [string]
  const { sessionId, tokens } = await createSession({
    rules: 'dice-race',
    roster: [{ playerId: guest.playerId }, { playerId: other }],
    options: { target: 10 },
  })
  const sockets = {
    [guest.playerId]: await connectToSession(sessionId, tokens[guest.playerId]!),
    [other]: await connectToSession(sessionId, tokens[other]!),
  }
  const welcome = await sockets[other]!.nextOf('welcome')
  await sockets[guest.playerId]!.nextOf('welcome')
  const state = welcome.state as { players: { playerId: string }[]; turn: number }
  await playToEnd(sockets, state.players[state.turn]!.playerId)
  return { guest, other, sessionId, tokens }
}

async function eraseAll(playerId: string): Promise<{ first: Erasure; entriesRemoved: number }> {
  let first: Erasure | undefined
  let entriesRemoved = 0
  for (let after = PREFIX; ;) {
    const res = await erase(playerId, after)
    if (res.status !== 200 && res.status !== 202) {
      throw new Error(`erase: ${res.status} ${await res.text()}`)
    }
    const body = (await res.json()) as Erasure
    expect(res.status).toBe(body.boards.next === null ? 200 : 202)
    first ??= body
    entriesRemoved += body.boards.entriesRemoved
    if (body.boards.next === null) return { first, entriesRemoved }
    after = body.boards.next
  }
}

/** Walks this file's boards a call at a time until a call answers other than 202 (done or refused). */
async function eraseUntilRefused(playerId: string): Promise<Response> {
  for (let after = PREFIX; ;) {
    const res = await erase(playerId, after)
    if (res.status !== 202) return res
    after = ((await res.json()) as Erasure).boards.next!
  }
}

/**
 * Whether the board holds `player`'s erasure. Other files' erasures reach the same board (their
 * walks, its catch-up) at any moment, so only this player's record is counted.
 */
function erasuresOf(state: DurableObjectState, player: string): number {
  return state.storage.sql
    .exec<{ n: number }>(`SELECT count(*) AS n FROM erasures WHERE player_id = ?`, player)
    .one().n
}

async function guestWithDevice() {
  const deviceId = `erase-device-${crypto.randomUUID()}`
  const login = async () => {
    const res = await call('/v1/auth/guest', json('POST', { deviceId }))
    expect(res.status).toBe(200)
    return (await res.json()) as { token: string; playerId: string }
  }
  return { ...(await login()), login, deviceId }
}

describe('erasing a player (admin)', () => {
  it('deletes the profile, hands the party over, drops invites, clears archived names and takes the player off every board; a retry changes nothing', async () => {
    const sql = pg()
    const gone = await guestWithDevice()
    const [member, otherLeader, stays] = [await newGuest(), await newGuest(), await newGuest()]
    expect(
      (
        await call(
          `/v1/admin/players/${gone.playerId}`,
          json('PUT', { name: 'Alice Example', rating: 1700 }, ADMIN_KEY),
        )
      ).status,
    ).toBe(200)
    // The player leads a party of two, and is invited to another.
    const party = (await (await asPlayer(gone.token, 'POST', '/v1/parties')).json()) as {
      id: string
    }
    await asPlayer(gone.token, 'POST', `/v1/parties/${party.id}/invites`, {
      playerId: member.playerId,
    })
    expect((await asPlayer(member.token, 'POST', `/v1/parties/${party.id}/members`)).status).toBe(
      200,
    )
    const other = (await (await asPlayer(otherLeader.token, 'POST', '/v1/parties')).json()) as {
      id: string
    }
    await asPlayer(otherLeader.token, 'POST', `/v1/parties/${other.id}/invites`, {
      playerId: gone.playerId,
    })
    // On two boards, beside a player who stays; and in a closed cycle's archive, by name.
    const boards = [await newBoard(), await newBoard()]
    for (const b of boards) {
      await submitFor(b, gone.playerId, { score: 50, metadata: { car: 'red' } })
      await submitFor(b, stays.playerId, { score: 40 })
    }
    await sql`insert into leaderboard_archive
        (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
      values (${boards[0]!}, 1, ${gone.playerId}, 1, 99, 0, 'Alice Example', '{"city":"Oslo"}', now()),
             (${boards[0]!}, 1, ${stays.playerId}, 2, 98, 0, 'Bob', '{"city":"Rome"}', now())`

    const { first, entriesRemoved } = await eraseAll(gone.playerId)
    expect(first).toMatchObject({
      playerId: gone.playerId,
      profileDeleted: true,
      leftParty: party.id,
      archivedRowsCleared: 1,
      deviceKeptForBan: false,
    })
    expect(entriesRemoved).toBe(2)

    expect(await sql`select 1 from players where id = ${gone.playerId}`).toEqual([])
    expect(await sql`select 1 from party_invites where player_id = ${gone.playerId}`).toEqual([])
    expect(await sql`select 1 from party_members where player_id = ${gone.playerId}`).toEqual([])
    expect(await sql`select leader from parties where id = ${party.id}`).toEqual([
      { leader: member.playerId },
    ])
    expect(
      await sql`select player_id, rank, score, name, metadata from leaderboard_archive
                 where leaderboard_id = ${boards[0]!} order by rank`,
    ).toEqual([
      { player_id: gone.playerId, rank: 1, score: 99, name: null, metadata: null },
      { player_id: stays.playerId, rank: 2, score: 98, name: 'Bob', metadata: { city: 'Rome' } },
    ])
    for (const b of boards) {
      const top = await fresh<{ entries: { playerId: string; rank: number }[] }>(
        `/v1/leaderboards/${b}/top`,
      )
      expect(top.entries).toEqual([expect.objectContaining({ playerId: stays.playerId, rank: 1 })])
    }
    // The device is no longer linked: it signs in as someone new.
    const again = await gone.login()
    expect(again.playerId).not.toBe(gone.playerId)

    // A retry finds nothing left to do, and says so.
    const retry = await eraseAll(gone.playerId)
    expect(retry.first).toMatchObject({
      profileDeleted: false,
      leftParty: null,
      archivedRowsCleared: 0,
    })
    expect(retry.entriesRemoved).toBe(0)
    // And changes nothing: no profile back, the party as the first call left it, the archive
    // and the boards as they were, the device still the new player's.
    expect(await sql`select 1 from players where id = ${gone.playerId}`).toEqual([])
    expect(await sql`select 1 from party_members where player_id = ${gone.playerId}`).toEqual([])
    expect(await sql`select leader from parties where id = ${party.id}`).toEqual([
      { leader: member.playerId },
    ])
    expect(
      await sql`select player_id, name, metadata from leaderboard_archive
                 where leaderboard_id = ${boards[0]!} order by rank`,
    ).toEqual([
      { player_id: gone.playerId, name: null, metadata: null },
      { player_id: stays.playerId, name: 'Bob', metadata: { city: 'Rome' } },
    ])
    for (const b of boards) {
      const top = await fresh<{ entries: { playerId: string }[] }>(`/v1/leaderboards/${b}/top`)
      expect(top.entries.map((e) => e.playerId)).toEqual([stays.playerId])
    }
    expect((await gone.login()).playerId).toBe(again.playerId)
    expect(await sql`select 1 from players where id = ${again.playerId}`).toHaveLength(1)
  })

  it('a player of thousands of archived standings has their names cleared a batch at a time, each batch kept, the profile deleted first', async () => {
    const gone = await newGuest()
    const stays = `${PREFIX}-stays-${crypto.randomUUID()}`
    const boards = [await newBoard(), await newBoard(), await newBoard()]
    const rows = 3 * 1_500
    const sql = pg()
    await sql`insert into leaderboard_archive
        (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
      select b, c, p, case when p = ${stays} then 2 else 1 end, 10, 0, 'Name', '{"a":1}', now()
        from unnest(${boards}::text[]) b, generate_series(1, 1500) c,
             unnest(array[${gone.playerId}, ${stays}]) p`
    const named = async (playerId: string) =>
      (
        (await sql`select count(*)::int as n from leaderboard_archive
                    where player_id = ${playerId} and (name is not null or metadata is not null)`) as {
          n: number
        }[]
      )[0]!.n
    // The erasure begun (its tombstone), calls with no time to spend clear one batch each, each
    // going on from the last: what a call cleared stays cleared, and is not read again.
    const [{ at: erasedAt }] = (await sql`insert into erased_players (id) values (${gone.playerId})
      returning (extract(epoch from erased_at) * 1000)::float8 as at`) as [{ at: number }]
    for (let call = 1; call <= 2; call++) {
      expect(await clearArchivedNames(env, gone.playerId, erasedAt, 0)).toEqual({
        cleared: ARCHIVE_CLEAR_BATCH,
        done: false,
      })
      expect(await named(gone.playerId)).toBe(rows - call * ARCHIVE_CLEAR_BATCH)
    }
    // A call of an erasure before this one (still running when this one began) clears nothing
    // of this one's, and moves nothing of its place.
    expect(await clearArchivedNames(env, gone.playerId, erasedAt - 60_000, 0)).toEqual({
      cleared: 0,
      done: true,
    })
    expect(await named(gone.playerId)).toBe(rows - 2 * ARCHIVE_CLEAR_BATCH)
    // The erasure's calls take the rest, and the call that ends it answers for them.
    const { first } = await eraseAll(gone.playerId)
    expect(first).toMatchObject({
      profileDeleted: true,
      archivedRowsCleared: rows - 2 * ARCHIVE_CLEAR_BATCH,
    })
    expect(await named(gone.playerId)).toBe(0)
    expect(await named(stays)).toBe(rows)
    // Done: a call of the same erasure reads no row of them again.
    expect(await clearArchivedNames(env, gone.playerId, erasedAt, 0)).toEqual({
      cleared: 0,
      done: true,
    })
    await sql`delete from leaderboard_archive where leaderboard_id = any(${boards})`
  })

  it('the call that ends an erasure clears the name from a page written late, by a statement that began before the erasure, in a cycle not complete before it', async () => {
    const gone = await newGuest()
    const board = await newBoard()
    const sql = pg()
    const { first } = await eraseAll(gone.playerId)
    expect(first.archivedRowsCleared).toBe(0)
    // Pages that commit after the erasure's clear, with the name (their statement began before
    // the tombstone): one in a cycle still being archived, one in a cycle completed since the
    // erasure began.
    await sql`insert into leaderboard_cycles
        (leaderboard_id, cycle, starts_at, ends_at, entries, archived_rows, completed_at)
      values (${board}, 1, now() - interval '2 hours', now() - interval '1 hour', 5, 1, null),
             (${board}, 2, now() - interval '1 hour', now(), 5, 5, now() + interval '1 second')`
    await sql`insert into leaderboard_archive
        (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
      values (${board}, 1, ${gone.playerId}, 1, 9, 0, 'Late', '{"a":1}', now()),
             (${board}, 2, ${gone.playerId}, 1, 9, 0, 'Late', '{"a":1}', now())`
    // The walk's last call sent again (its answer lost): the same erasure.
    const again = await erase(gone.playerId, PREFIX)
    expect(again.status).toBe(200)
    expect(((await again.json()) as Erasure).archivedRowsCleared).toBe(2)
    expect(
      await sql`select cycle, name, metadata from leaderboard_archive
                 where leaderboard_id = ${board} order by cycle`,
    ).toEqual([
      { cycle: 1, name: null, metadata: null },
      { cycle: 2, name: null, metadata: null },
    ])
    await sql`delete from leaderboard_archive where leaderboard_id = ${board}`
    await sql`delete from leaderboard_cycles where leaderboard_id = ${board}`
  })

  it('the call that ends an erasure waits for archive pages under way (their statement began before it), and clears the name such a page commits', async () => {
    const gone = await newGuest()
    const board = await newBoard()
    const sql = pg()
    await eraseAll(gone.playerId)
    await sql`insert into leaderboard_cycles (leaderboard_id, cycle, starts_at, ends_at, entries, archived_rows)
      values (${board}, 1, now() - interval '1 hour', now(), 5, 0)`
    // A page as the archive writes it, whose statement took its snapshot before the tombstone:
    // it holds the pages' lock, and commits the player's name only once the last call has come.
    const page = await holdLock(
      { text: `select ${ARCHIVE_PAGES_SHARED}`, params: [] },
      { afterWaiter: 0.3 },
      [
        {
          text: `insert into leaderboard_archive
                   (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
                 values ($1, 1, $2, 1, 9, 0, 'Late', '{"a":1}', now())`,
          params: [board, gone.playerId],
        },
      ],
    )
    // The walk's last call sent again (its answer lost): its clear waits for the page.
    const again = erase(gone.playerId, PREFIX)
    await page.contended()
    await page.done
    expect((await again).status).toBe(200)
    expect(
      await sql`select name, metadata from leaderboard_archive where leaderboard_id = ${board}`,
    ).toEqual([{ name: null, metadata: null }])
    await sql`delete from leaderboard_archive where leaderboard_id = ${board}`
    await sql`delete from leaderboard_cycles where leaderboard_id = ${board}`
  })

  it("an account ban committing while the erasure looks for one (they take the player's lock in turn) is seen by it: the guest's device stays banned", async () => {
    const gone = await newGuest()
    // The ban, placed as the erasure reaches the profile: it holds the player's lock until the
    // erasure waits on it, and commits then.
    const ban = await holdLock(
      { text: PLAYER_LOCK, params: [gone.playerId] },
      { afterWaiter: 0.2 },
      [
        {
          text: `insert into player_bans (player_id, reason) values ($1, 'cheating')`,
          params: [gone.playerId],
        },
      ],
    )
    const erasing = eraseAll(gone.playerId)
    await ban.contended()
    await ban.done
    const { first } = await erasing
    expect(first.deviceKeptForBan).toBe(true)
    expect(
      await pg()`select device_id is not null as kept from player_bans where player_id = ${gone.playerId}`,
    ).toEqual([{ kept: true }])
    // Boards made later take the account bans in force: other tests' boards would list it.
    await pg()`delete from player_bans where player_id = ${gone.playerId}`
  })

  it('the call that ends an erasure does not hold archive pages while it clears: a page of another board is written while its clear waits on a row', async () => {
    const gone = await newGuest()
    const board = await newBoard()
    const sql = pg()
    await eraseAll(gone.playerId)
    await sql`insert into leaderboard_cycles (leaderboard_id, cycle, starts_at, ends_at, entries, archived_rows)
      values (${board}, 1, now() - interval '1 hour', now(), 5, 1)`
    await sql`insert into leaderboard_archive
        (leaderboard_id, cycle, player_id, rank, score, subscore, name, metadata, submitted_at)
      values (${board}, 1, ${gone.playerId}, 1, 9, 0, 'Late', '{"a":1}', now())`
    // Something else holds the late row (a long transaction of an analyst's, say): the clear
    // waits on it.
    const row = await holdLock(
      {
        text: `select 1 from leaderboard_archive where leaderboard_id = $1 and player_id = $2 for update`,
        params: [board, gone.playerId],
      },
      { afterWaiter: 4 },
    )
    const again = erase(gone.playerId, PREFIX)
    await row.contended()
    // Meanwhile every board's closes go on: a page is not held behind the erasure's clear.
    const other = (await newGuest()).playerId
    const otherBoard = `erasure-barrier-${crypto.randomUUID().slice(0, 8)}`
    const first = await Promise.race([
      archiveOnlyEntry(otherBoard, other, null, Date.now()).then(() => 'the page'),
      row.done.then(() => 'the row let go'),
    ])
    expect(first).toBe('the page')
    await row.done
    expect((await again).status).toBe(200)
    expect(
      await sql`select name, metadata from leaderboard_archive where leaderboard_id = ${board}`,
    ).toEqual([{ name: null, metadata: null }])
    await sql`delete from leaderboard_archive where leaderboard_id in (${board}, ${otherBoard})`
    await sql`delete from leaderboard_cycles where leaderboard_id in (${board}, ${otherBoard})`
  })

  it("an archive page waits while an erasure takes the pages' lock (each page holds it shared)", async () => {
    const player = (await newGuest()).playerId
    const board = `erasure-lock-${crypto.randomUUID().slice(0, 8)}`
    const clear = await holdLock(
      { text: `select ${ARCHIVE_PAGES_LOCK}`, params: [] },
      {
        afterWaiter: 0.2,
      },
    )
    const writing = archiveOnlyEntry(board, player, null, Date.now())
    await clear.contended()
    await clear.done
    await writing
    expect(
      await pg()`select rank from leaderboard_archive where leaderboard_id = ${board}`,
    ).toEqual([{ rank: 1 }])
  })

  it('a cycle archived after the erasure keeps the rank and score, without the name or metadata', async () => {
    const gone = await newGuest()
    await call(`/v1/admin/players/${gone.playerId}`, json('PUT', { name: 'Gone' }, ADMIN_KEY))
    await eraseAll(gone.playerId)
    // A page of a cycle frozen before the erasure, archived after it.
    const board = `erased-archive-${crypto.randomUUID().slice(0, 8)}`
    await archiveOnlyEntry(board, gone.playerId, '{"home":"Springfield"}', Date.now() - 30_000)
    expect(
      await pg()`select rank, score, name, metadata from leaderboard_archive where leaderboard_id = ${board}`,
    ).toEqual([{ rank: 1, score: 10, name: null, metadata: null }])
  })

  it("a score taken by a board the erasure's walk had not reached yet (an old token, after the erasure began) is archived without its metadata; one submitted after the walk ended keeps it", async () => {
    const id = `idp-walking-${crypto.randomUUID().slice(0, 8)}`
    // The erasure began a minute ago and its walk is still going.
    await pg()`insert into erased_players (id, erased_at) values (${id}, now() - interval '1 minute')`
    const during = `erased-walking-${crypto.randomUUID().slice(0, 8)}`
    await archiveOnlyEntry(during, id, '{"home":"Springfield"}', Date.now() - 5_000)
    expect(
      await pg()`select rank, metadata from leaderboard_archive where leaderboard_id = ${during}`,
    ).toEqual([{ rank: 1, metadata: null }])
    // A walk left unfinished for over an hour is over: a score submitted since is theirs.
    const left = `idp-left-${crypto.randomUUID().slice(0, 8)}`
    await pg()`insert into erased_players (id, erased_at) values (${left}, now() - interval '2 hours')`
    const afterLeft = `erased-left-${crypto.randomUUID().slice(0, 8)}`
    await archiveOnlyEntry(afterLeft, left, '{"home":"Ogdenville"}', Date.now() - 5_000)
    expect(
      await pg()`select metadata from leaderboard_archive where leaderboard_id = ${afterLeft}`,
    ).toEqual([{ metadata: { home: 'Ogdenville' } }])
    // The walk ended: a score submitted since (the player back, with a new token) is theirs.
    await pg()`update erased_players set completed_at = now() - interval '30 seconds' where id = ${id}`
    const after = `erased-walked-${crypto.randomUUID().slice(0, 8)}`
    await archiveOnlyEntry(after, id, '{"home":"Shelbyville"}', Date.now() - 5_000)
    expect(
      await pg()`select metadata from leaderboard_archive where leaderboard_id = ${after}`,
    ).toEqual([{ metadata: { home: 'Shelbyville' } }])
  })

  it('a cycle archived after the erasure shows no name from a profile made under the id since (an identity provider keeps the id)', async () => {
    const id = `idp-renamed-${crypto.randomUUID().slice(0, 8)}`
    const submittedAt = Date.now() - 30_000
    await eraseAll(id)
    // Back under the same id, and named again, before the cycle they scored in is archived.
    const renamed = await call(
      `/v1/admin/players/${id}`,
      json('PUT', { name: 'Someone new' }, ADMIN_KEY),
    )
    expect(renamed.status).toBe(200)
    const board = `erased-renamed-${crypto.randomUUID().slice(0, 8)}`
    await archiveOnlyEntry(board, id, null, submittedAt)
    expect(
      await pg()`select name from leaderboard_archive where leaderboard_id = ${board} and player_id = ${id}`,
    ).toEqual([{ name: null }])
  })

  it('a player back under an erased id (an identity provider keeps it) reads as theirs only the rewards and results of scores submitted since the erasure ended (as the archive judges them): support and the public history still see all', async () => {
    const id = `idp-rewards-${crypto.randomUUID().slice(0, 8)}`
    const board = `erased-rewards-${crypto.randomUUID().slice(0, 8)}`
    const archiveCycle = (cycle: number, submittedAt: number, reward: string) =>
      new NeonArchiveWriter(env).writePage({
        leaderboardId: board,
        cycle,
        startsAt: submittedAt - 60_000,
        endsAt: submittedAt + 1,
        entries: 1,
        rows: {
          playerIds: [id],
          ranks: [1],
          scores: [10 * cycle],
          subscores: [0],
          metadata: [null],
          submittedAt: [submittedAt],
        },
        rewards: [{ playerId: id, rank: 1, reward }],
        archivedThrough: 1,
      })
    // Won before the erasure: cycle 1 archived before it, cycle 2 (a score from before it) after.
    await archiveCycle(1, Date.now() - 120_000, '{"gems":500}')
    const scoredBefore = Date.now() - 60_000
    await eraseAll(id)
    await archiveCycle(2, scoredBefore, '{"gems":300}')
    // Back, scoring again: a score from after the erasure ended (PostgreSQL's time, to the
    // microsecond; scores carry milliseconds). And one taken while its walk went on (an old
    // token's, on a board not reached yet), which the archive judged the erased player's.
    const [erased] = await pg()`select (extract(epoch from erased_at) * 1000)::float8 as at,
                                       (extract(epoch from completed_at) * 1000)::float8 as done
                                  from erased_players where id = ${id}`
    expect(Number(erased!.done)).toBeGreaterThan(Math.ceil(Number(erased!.at)) + 1)
    await archiveCycle(3, Math.ceil(Number(erased!.done)) + 1, '{"gems":100}')
    await archiveCycle(4, Math.ceil(Number(erased!.at)) + 1, '{"gems":50}')
    const token = (await issuePlayerToken(env, id, Date.now())).token
    const mine = (await (await call('/v1/players/me/rewards', bearer(token))).json()) as {
      rewards: { cycle: number }[]
    }
    expect(mine.rewards.map((r) => r.cycle)).toEqual([3])
    const support = (await (
      await call(`/v1/admin/players/${id}/rewards`, bearer(ADMIN_KEY))
    ).json()) as { rewards: { cycle: number }[] }
    expect(support.rewards.map((r) => r.cycle).sort()).toEqual([1, 2, 3, 4])
    const history = (path: string, credential: string) =>
      call(path, bearer(credential)).then(
        async (r) => ((await r.json()) as { results: { cycle: number }[] }).results,
      )
    expect(
      (await history(`/v1/leaderboards/${board}/players/me/history`, token)).map((r) => r.cycle),
    ).toEqual([3])
    expect(
      (await history(`/v1/leaderboards/${board}/players/${id}/history`, token)).map((r) => r.cycle),
    ).toEqual([4, 3, 2, 1])
    // The board's archive pruned, its rewards kept (docs/operating.md, a deleted board's): with
    // the scores' times gone, none is shown as theirs (the ones from before the erasure are
    // someone else's, and nothing tells which those were); support still sees all.
    await pg()`delete from leaderboard_archive where leaderboard_id = ${board}`
    const afterPrune = (await (await call('/v1/players/me/rewards', bearer(token))).json()) as {
      rewards: { cycle: number }[]
    }
    expect(afterPrune.rewards).toEqual([])
    const supportAfter = (await (
      await call(`/v1/admin/players/${id}/rewards`, bearer(ADMIN_KEY))
    ).json()) as { rewards: { cycle: number }[] }
    expect(supportAfter.rewards).toHaveLength(4)
  })

  it('a match made before the erasure rates nothing of the erased player; one made after (an identity provider keeps the id) plays them as new', async () => {
    const tag = crypto.randomUUID().slice(0, 8)
    const [gone, other] = [`idp-gone-${tag}`, `idp-other-${tag}`]
    const store = new NeonSessionStore(env)
    const resultOf = (createdAt: number) =>
      store.recordResult({
        sessionId: `s_t-${crypto.randomUUID()}`,
        rules: 'dice-race',
        roster: [
          { playerId: gone, team: 0 },
          { playerId: other, team: 1 },
        ],
        queue: null,
        region: null,
        result: {
          placements: [
            { playerId: gone, team: 0, place: 1 },
            { playerId: other, team: 1, place: 2 },
          ],
          reason: 'finished',
          winner: gone,
        },
        createdAt,
        endedAt: Date.now(),
      })
    const before = Date.now() - 60_000
    await eraseAll(gone)
    const old = await resultOf(before)
    expect(old.erased).toEqual([gone])
    expect(old.ratingChanges.map((c) => c.playerId)).toEqual([other])
    expect(await pg()`select 1 from players where id = ${gone}`).toEqual([])
    const later = await resultOf(Date.now())
    expect(later.erased).toEqual([])
    expect(later.ratingChanges.map((c) => c.playerId).sort()).toEqual([gone, other].sort())
    expect((await pg()`select 1 from players where id = ${gone}`).length).toBe(1)
  })

  it("an erased guest's id keeps nothing again, whenever its match was made (a guest's id never returns): no rating or profile, no win for a board; an admin PUT under it is 409", async () => {
    const guest = await guestWithDevice()
    const other = `idp-other-${crypto.randomUUID().slice(0, 8)}`
    await eraseAll(guest.playerId)
    const store = new NeonSessionStore(env)
    // A match made after the erasure: a game server's join for the id, say.
    const madeAt = Date.now() + 1_000
    const out = await store.recordResult({
      sessionId: `s_t-${crypto.randomUUID()}`,
      rules: 'dice-race',
      roster: [
        { playerId: guest.playerId, team: 0 },
        { playerId: other, team: 1 },
      ],
      queue: null,
      region: null,
      result: {
        placements: [
          { playerId: guest.playerId, team: 0, place: 1 },
          { playerId: other, team: 1, place: 2 },
        ],
        reason: 'finished',
        winner: guest.playerId,
      },
      createdAt: madeAt,
      endedAt: madeAt,
    })
    expect(out.erased).toEqual([guest.playerId])
    expect(out.ratingChanges.map((c) => c.playerId)).toEqual([other])
    expect(await store.erasedAmong([guest.playerId, other], madeAt)).toEqual([guest.playerId])
    const put = await problem(
      await call(`/v1/admin/players/${guest.playerId}`, json('PUT', { name: 'Back' }, ADMIN_KEY)),
    )
    expect(put).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(await pg()`select 1 from players where id = ${guest.playerId}`).toEqual([])
    // An identity provider's player erased the same way can be set up again (the id returns).
    const idp = `idp-back-${crypto.randomUUID().slice(0, 8)}`
    await eraseAll(idp)
    const back = await call(`/v1/admin/players/${idp}`, json('PUT', { name: 'Back' }, ADMIN_KEY))
    expect(back.status).toBe(200)
    expect(await back.json()).toMatchObject({ playerId: idp, name: 'Back', rating: 1500 })
  })

  it('cancels a ticket the player has waiting (reason erased), which would otherwise make a profile for them again', async () => {
    // Two teams of two: one waiting player makes no match.
    const queue = await createQueue({ teamSize: 2 })
    await rig(queue, newClock())
    const gone = `erase-q-${crypto.randomUUID().slice(0, 8)}`
    const ticket = await joinFor(queue, gone)
    // By the first call of a walk that takes several (a board a call, two boards at least):
    // matched while later calls walk the boards, the ticket would make a profile again.
    await newBoard()
    await newBoard()
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 1
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    const res = await erase(gone, PREFIX)
    expect(res.status).toBe(202)
    const first = (await res.json()) as Erasure
    expect(first.tickets).toEqual({ cancelled: [ticket.ticketId] })
    expect(await ticketOf(ticket.ticketId)).toMatchObject({ status: 'cancelled', reason: 'erased' })
    boardWalkLimits.boardsPerCall = perCall
    await eraseAll(gone)
    // Three more players would make a match of four with it: they wait, no match is made.
    const others = []
    for (const n of [1, 2, 3]) {
      others.push(await joinFor(queue, `erase-q-other-${n}-${crypto.randomUUID()}`))
    }
    for (const t of others) expect((await ticketOf(t.ticketId)).status).toBe('waiting')
    // Erasing again: nothing left to cancel.
    expect((await eraseAll(gone)).first.tickets).toEqual({ cancelled: [] })
  })

  it('a token issued before the erasure is refused by every board; one issued after it submits; the boards forget the erasure once no such token can live', async () => {
    const gone = `idp-tok-${crypto.randomUUID().slice(0, 8)}`
    const boards = [await newBoard(), await newBoard()]
    const old = (await issuePlayerToken(env, gone, Date.now() - 60_000)).token
    const firstKey = `first-${crypto.randomUUID()}`
    for (const b of boards) {
      expect((await submitAs(b, old, { score: 5 }, firstKey)).status).toBe(200)
    }
    await eraseAll(gone)
    // A retry of a submission from before is refused too: its answer (the score, a rank) is
    // of an entry erased, and is not handed to the old token again.
    const retried = await problem(await submitAs(boards[0]!, old, { score: 5 }, firstKey))
    expect(retried).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // The erased player's client, still signed in, cannot put an entry back under the id.
    for (const b of boards) {
      const refused = await problem(
        await submitAs(b, old, { score: 6, metadata: { city: 'Rome' } }),
      )
      expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
      expect(
        await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${gone}`),
      ).toMatchObject({ entry: null })
    }
    // An identity provider's player coming back under the same id signs in anew.
    const fresher = (await issuePlayerToken(env, gone, Date.now() + 2_000)).token
    expect((await submitAs(boards[0]!, fresher, { score: 7 })).status).toBe(200)
    // A game server's submission for the id (the admin key) is not a token of theirs.
    expect((await submitFor(boards[1]!, gone, { score: 8 })).status).toBe(200)
    // A token issued just before the erasure is accepted until its `exp` plus the clock skew,
    // which for an identity provider's may lie the skew past the longest lifetime: until
    // then the board still refuses it.
    const board = env.LEADERBOARD.getByName(boards[0]!)
    const lastAccepted = (MAX_TOKEN_LIFETIME_SECONDS + 2 * CLOCK_SKEW_SECONDS - 5) * 1000
    const kept = await runInDurableObject(board, async (inst: Leaderboard, state) => {
      inst.now = () => Date.now() + lastAccepted
      await inst.alarm()
      return erasuresOf(state, gone)
    })
    expect(kept).toBe(1)
    expect((await submitAs(boards[0]!, old, { score: 9 })).status).toBe(403)
    // Past the longest a token may live, the board keeps nothing of the erasure.
    const left = await runInDurableObject(
      env.LEADERBOARD.getByName(boards[0]!),
      async (inst: Leaderboard, state) => {
        inst.now = () => Date.now() + 31 * 86_400_000
        await inst.alarm()
        return erasuresOf(state, gone)
      },
    )
    expect(left).toBe(0)
  })

  it('a board forgets erasures a day at a time: the wake for them falls on the turn of a UTC day, not one per erasure', async () => {
    const board = await newBoard()
    const gone = `idp-day-${crypto.randomUUID().slice(0, 8)}`
    await eraseAll(gone)
    const { alarm, erasedAt } = await runInDurableObject(
      env.LEADERBOARD.getByName(board),
      async (inst: Leaderboard, state) => {
        const erasedAt = state.storage.sql
          .exec<{ t: number }>(`SELECT erased_at AS t FROM erasures WHERE player_id = ?`, gone)
          .one().t
        await state.storage.deleteAlarm()
        await (inst as unknown as { scheduleAlarm(): Promise<void> }).scheduleAlarm()
        return { alarm: await state.storage.getAlarm(), erasedAt }
      },
    )
    // No cycle, no keys: erasures are all this board wakes for (other files' ones too).
    expect(alarm! % ERASURES_FORGOTTEN_EVERY_MS).toBe(0)
    const keptUntil = erasedAt + (MAX_TOKEN_LIFETIME_SECONDS + 2 * CLOCK_SKEW_SECONDS) * 1000
    expect(alarm!).toBeGreaterThan(keptUntil - ERASURES_FORGOTTEN_EVERY_MS)
  })

  it("an erased guest's tokens are refused everywhere, even one dated after the erasure (a sign-in racing it): a guest's id never comes back", async () => {
    const board = await newBoard()
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const guest = await newGuest()
    await eraseAll(guest.playerId)
    // What a sign-in that read Neon just before the erasure's tombstone would hand out: a token
    // whose whole-second `iat` is the erasure's own second or later.
    const racing = (await issuePlayerToken(env, guest.playerId, Date.now() + 2_000)).token
    const submitted = await problem(await submitAs(board, racing, { score: 5 }))
    expect(submitted).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // Nor a game server's submission for the id (the admin key), queued before the erasure, say.
    const forGuest = await problem(await submitFor(board, guest.playerId, { score: 6 }))
    expect(forGuest).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(
      await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${guest.playerId}`),
    ).toMatchObject({ entry: null })
    const joined = await problem(
      await call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, racing)),
    )
    expect(joined).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const party = await problem(await asPlayer(racing, 'POST', '/v1/parties'))
    expect(party).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(await pg()`select 1 from parties where leader = ${guest.playerId}`).toEqual([])
    expect(await pg()`select 1 from players where id = ${guest.playerId}`).toEqual([])
  })

  it("a token issued before the erasure cannot queue (HTTP, a socket connect, an open socket's next join); one issued after it can", async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const gone = `idp-q-${crypto.randomUUID().slice(0, 8)}`
    const old = (await issuePlayerToken(env, gone, Date.now() - 60_000)).token
    const open = await connect(`/v1/matchmaking/${queue}`, old)
    await eraseAll(gone)
    const join = (token: string) =>
      call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, token))
    const http = await problem(await join(old))
    expect(http).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(http.body.detail).toContain('erased')
    const socket = await upgrade(`/v1/matchmaking/${queue}`, old)
    expect(socket.webSocket).toBeFalsy()
    expect(await problem(socket)).toMatchObject({ status: 403 })
    // The socket opened before: the erasure dropped its claim, and the claim it asks for now is
    // refused.
    open.send(JSON.stringify({ type: 'join' }))
    expect(await nextOfType<{ code: string }>(open, 'error')).toMatchObject({ code: 'signed_out' })
    open.close(1000)
    const waiting = await runInDurableObject(poolOf(queue), (inst: MatchPool) => inst.stats('eu'))
    expect(waiting.waitingTickets).toBe(0)
    // An identity provider's player coming back under the id signs in anew, and queues.
    const fresher = (await issuePlayerToken(env, gone, Date.now() + 2_000)).token
    expect((await join(fresher)).status).toBe(201)
  })

  it("a token issued before the erasure puts the id in no party (creating one, accepting an invite: 403, nothing changes), so a leader's join cannot queue it; one issued after it can", async () => {
    const sql = pg()
    const gone = `idp-party-${crypto.randomUUID().slice(0, 8)}`
    const leader = await newGuest()
    const old = (await issuePlayerToken(env, gone, Date.now() - 60_000)).token
    await eraseAll(gone)
    const created = await problem(await asPlayer(old, 'POST', '/v1/parties'))
    expect(created).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(created.body.detail).toContain('erased')
    expect(await sql`select 1 from parties where leader = ${gone}`).toEqual([])
    // Invited after the erasure (an id is only a name), the old client accepts: refused, and
    // the invite stays for a newer token.
    const party = (await (await asPlayer(leader.token, 'POST', '/v1/parties')).json()) as {
      id: string
    }
    expect(
      (await asPlayer(leader.token, 'POST', `/v1/parties/${party.id}/invites`, { playerId: gone }))
        .status,
    ).toBe(201)
    const accepted = await problem(await asPlayer(old, 'POST', `/v1/parties/${party.id}/members`))
    expect(accepted).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(await sql`select 1 from party_members where player_id = ${gone}`).toEqual([])
    expect(await sql`select 1 from party_invites where player_id = ${gone}`).toHaveLength(1)
    // The leader queues the party: the erased id is not on the ticket.
    const queue = await createQueue({ teamSize: 3 })
    const join = await call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, leader.token))
    expect(join.status).toBe(201)
    const ticket = (await join.json()) as { ticketId: string; players: string[] }
    expect(ticket.players).toEqual([leader.playerId])
    // A player of an identity provider coming back under the id accepts with a newer token.
    const fresher = (await issuePlayerToken(env, gone, Date.now() + 2_000)).token
    expect((await asPlayer(fresher, 'POST', `/v1/parties/${party.id}/members`)).status).toBe(200)
    expect(await sql`select 1 from party_members where player_id = ${gone}`).toHaveLength(1)
  })

  it("a leader's join that read a member just before the member's erasure claims nothing (409 over HTTP, party_forbidden on a socket); the member back after it, with a newer token, is queued", async () => {
    const sql = pg()
    const member = `idp-member-${crypto.randomUUID().slice(0, 8)}`
    const leader = await newGuest()
    const party = (await (await asPlayer(leader.token, 'POST', '/v1/parties')).json()) as {
      id: string
    }
    const invite = () =>
      asPlayer(leader.token, 'POST', `/v1/parties/${party.id}/invites`, { playerId: member })
    expect((await invite()).status).toBe(201)
    const before = (await issuePlayerToken(env, member, Date.now() - 60_000)).token
    expect((await asPlayer(before, 'POST', `/v1/parties/${party.id}/members`)).status).toBe(200)
    const queue = await createQueue({ teamSize: 2, maxPartySize: 2 })
    const body = { party: [leader.playerId, member] }
    // The erasure's first write, its tombstone, is in; the membership it removes next is not.
    await sql`insert into erased_players (id) values (${member})`
    const refused = await problem(
      await call(`/v1/matchmaking/${queue}/tickets`, json('POST', body, leader.token)),
    )
    expect(refused).toMatchObject({
      status: 409,
      type: 'urn:nexus:problem:conflict',
      body: { partyId: party.id },
    })
    const ws = await connect(`/v1/matchmaking/${queue}`, leader.token)
    ws.send(JSON.stringify({ type: 'join', ...body }))
    expect((await nextOfType<{ code: string }>(ws, 'error')).code).toBe('party_forbidden')
    ws.close(1000)
    expect(await sql`select 1 from queue_claims where player_id = ${member}`).toEqual([])
    // The erasure takes the member out; a player of the identity provider comes back under the
    // id, is invited again and accepts with a token issued after the erasure: queued.
    await sql`delete from party_members where player_id = ${member}`
    expect((await invite()).status).toBe(201)
    const after = (await issuePlayerToken(env, member, Date.now() + 2_000)).token
    expect((await asPlayer(after, 'POST', `/v1/parties/${party.id}/members`)).status).toBe(200)
    const joined = await call(`/v1/matchmaking/${queue}/tickets`, json('POST', body, leader.token))
    expect(joined.status).toBe(201)
    expect(((await joined.json()) as { players: string[] }).players.sort()).toEqual(
      [leader.playerId, member].sort(),
    )
  })

  it('erasing a player again who came back since (an identity provider keeps the id) refuses their tokens of since, within the hour too; a call of an erasure still under way keeps its time', async () => {
    const sql = pg()
    const id = `idp-again-${crypto.randomUUID().slice(0, 8)}`
    await eraseAll(id)
    // That erasure ended ten minutes ago; the player signed in again five minutes ago.
    await sql`update erased_players set erased_at = now() - interval '10 minutes',
      completed_at = now() - interval '10 minutes' where id = ${id}`
    const since = (await issuePlayerToken(env, id, Date.now() - 5 * 60_000)).token
    const queue = await createQueue()
    const join = () => call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, since))
    const first = await join()
    expect(first.status).toBe(201)
    const ticket = (await first.json()) as { ticketId: string }
    // Erased again: the ticket is cancelled, and the token of since cannot queue again. A new
    // erasure is a call from the start (no `after`): it walks every board from the first, other
    // files' too, and may answer 503 for one of theirs; this file's are walked after it.
    await (await erase(id)).body?.cancel()
    await eraseAll(id)
    expect(await ticketOf(ticket.ticketId)).toMatchObject({ status: 'cancelled' })
    const refused = await problem(await join())
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // An erasure whose walk has not ended (a call refused halfway, say) keeps its time when
    // called again.
    await sql`update erased_players set erased_at = now() - interval '10 minutes',
      completed_at = null where id = ${id}`
    const [before] = await sql`select erased_at from erased_players where id = ${id}`
    await eraseAll(id)
    expect(await sql`select erased_at from erased_players where id = ${id}`).toEqual([before])
    // A walk going on (`after`) past an hour since it began keeps its time too.
    await sql`update erased_players set erased_at = now() - interval '2 hours',
      completed_at = null where id = ${id}`
    const [walking] = await sql`select erased_at from erased_players where id = ${id}`
    expect((await erase(id, 'zzzz')).status).toBe(200)
    expect(await sql`select erased_at from erased_players where id = ${id}`).toEqual([walking])
    // A call going on with a walk that has ended (a retry of the call that ended it, its answer
    // lost): the same erasure still, its time kept and its walk still ended; the boards before
    // its cursor, which it does not walk again, compare tokens with that time.
    const [ended] = await sql`select erased_at, completed_at from erased_players where id = ${id}`
    expect(ended!.completed_at).not.toBeNull()
    expect((await erase(id, 'zzzz')).status).toBe(200)
    expect(
      await sql`select erased_at from erased_players where id = ${id} and completed_at is not null`,
    ).toEqual([{ erased_at: ended!.erased_at }])
    // A call without `after` on a walk left unended: within the hour the same erasure; two
    // hours on, a new one. (It walks every board from the first, other files' too, and may
    // answer 503 for one of theirs: the time is what is checked.)
    const fromTheStart = async (ago: string) => {
      await sql`update erased_players set erased_at = now() - ${ago}::interval,
        completed_at = null where id = ${id}`
      const [then] = await sql`select erased_at from erased_players where id = ${id}`
      await (await erase(id)).body?.cancel()
      const [now] = await sql`select erased_at from erased_players where id = ${id}`
      return { kept: String(then!.erased_at) === String(now!.erased_at) }
    }
    expect(await fromTheStart('10 minutes')).toEqual({ kept: true })
    expect(await fromTheStart('2 hours')).toEqual({ kept: false })
  })

  it('a board created after the erasure refuses the old token too (pushed, or configured from Neon on its first call); so does a board from before that upgrade, on its wake', async () => {
    const gone = `idp-late-${crypto.randomUUID().slice(0, 8)}`
    const old = (await issuePlayerToken(env, gone, Date.now() - 60_000)).token
    await eraseAll(gone)
    const pushed = await newBoard()
    const refused = await problem(await submitAs(pushed, old, { score: 5 }))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    // In Neon, never handed to its object (a PUT whose push failed): the submission is the
    // call that configures it.
    const unpushed = boardId(PREFIX)
    await pg()`insert into leaderboards (id, config)
               select ${unpushed}, config from leaderboards where id = ${pushed}`
    expect((await submitAs(unpushed, old, { score: 5 })).status).toBe(403)
    for (const b of [pushed, unpushed]) {
      expect(
        await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${gone}`),
      ).toMatchObject({ entry: null })
    }
    const fresher = (await issuePlayerToken(env, gone, Date.now() + 2_000)).token
    expect((await submitAs(pushed, fresher, { score: 7 })).status).toBe(200)

    // A board created before boards took erasures on, which an erasure's walk missed (it was
    // made after the erasure): it takes the erasure on when the wake upgrades it.
    const missed = `idp-missed-${crypto.randomUUID().slice(0, 8)}`
    const missedOld = (await issuePlayerToken(env, missed, Date.now() - 60_000)).token
    const older = await newBoard()
    await pg()`insert into erased_players (id) values (${missed})`
    const stub = env.LEADERBOARD.getByName(older)
    await runInDurableObject(stub, (_i, state) => {
      state.storage.sql.exec(`UPDATE meta SET value = '10' WHERE key = 'schema'`)
    })
    await evictDurableObject(stub)
    expect((await submitAs(older, missedOld, { score: 5 })).status).toBe(403)
  })

  it("calls that reach a new board together all wait for what it takes on: none of an erased player's old-token submissions gets in", async () => {
    const gone = `idp-race-${crypto.randomUUID().slice(0, 8)}`
    const old = (await issuePlayerToken(env, gone, Date.now() - 60_000)).token
    await eraseAll(gone)
    // In Neon only (its push lost): the first calls all read its configuration at once, and
    // the one that comes back first configures it.
    const template = await newBoard()
    const board = boardId(PREFIX)
    await pg()`insert into leaderboards (id, config)
               select ${board}, config from leaderboards where id = ${template}`
    const statuses = await Promise.all(
      Array.from({ length: 6 }, () => submitAs(board, old, { score: 5 }).then((r) => r.status)),
    )
    expect(statuses).toEqual(Array(6).fill(403))
    expect(
      await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${gone}`),
    ).toMatchObject({ entry: null })
  })

  it('a guest signing in while their erasure is under way (its tombstone in, the profile not yet deleted) gets 503, not a token newer than the erasure; once it is done, a new player', async () => {
    const guest = await guestWithDevice()
    // An erasure stopped after its first step (Neon failed after it, say), to be sent again.
    await pg()`insert into erased_players (id) values (${guest.playerId})`
    const res = await call('/v1/auth/guest', json('POST', { deviceId: guest.deviceId }))
    expect(res.headers.get('retry-after')).toBe('5')
    expect(await problem(res)).toMatchObject({
      status: 503,
      type: 'urn:nexus:problem:unavailable',
    })
    await eraseAll(guest.playerId)
    const after = await guest.login()
    expect(after.playerId).not.toBe(guest.playerId)
  })

  it("an erasure that fails before the profile is deleted already refuses the old token's party writes; the retry finishes it", async () => {
    const sql = pg()
    const guest = await guestWithDevice()
    const old = (await issuePlayerToken(env, guest.playerId, Date.now() - 60_000)).token
    const leader = await newGuest()
    const party = (await (await asPlayer(leader.token, 'POST', '/v1/parties')).json()) as {
      id: string
    }
    // Invited before the erasure (once it began, the id could not be: an erased guest's never
    // comes back).
    expect(
      (
        await asPlayer(leader.token, 'POST', `/v1/parties/${party.id}/invites`, {
          playerId: guest.playerId,
        })
      ).status,
    ).toBe(201)
    // Neon fails the erasure's last step, the profile's deletion, for this player only (other
    // files share the database).
    const fn = `fail_erasure_${guest.playerId.replace(/\W/g, '_')}`
    await sql.query(`create function ${fn}() returns trigger language plpgsql as $$
      begin raise exception 'injected failure'; end $$`)
    await sql.query(`create trigger ${fn} before delete on players for each row
      when (old.id = '${guest.playerId}') execute function ${fn}()`)
    onTestFinished(async () => {
      await sql.query(`drop trigger if exists ${fn} on players`)
      await sql.query(`drop function if exists ${fn}()`)
    })
    const failed = await erase(guest.playerId, PREFIX)
    expect(failed.status).toBeGreaterThanOrEqual(500)
    expect(await sql`select 1 from players where id = ${guest.playerId}`).toHaveLength(1)

    // Meanwhile the old client forms a party and accepts an invite: both refused, nothing written.
    const created = await problem(await asPlayer(old, 'POST', '/v1/parties'))
    expect(created).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const invited = await problem(
      await asPlayer(leader.token, 'POST', `/v1/parties/${party.id}/invites`, {
        playerId: guest.playerId,
      }),
    )
    expect(invited).toMatchObject({ status: 409, body: { invitable: false } })
    const accepted = await problem(await asPlayer(old, 'POST', `/v1/parties/${party.id}/members`))
    expect(accepted).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    expect(await sql`select 1 from party_members where player_id = ${guest.playerId}`).toEqual([])

    await sql.query(`drop trigger ${fn} on players`)
    const { first } = await eraseAll(guest.playerId)
    expect(first.profileDeleted).toBe(true)
    expect(await sql`select 1 from players where id = ${guest.playerId}`).toEqual([])
    expect(await sql`select 1 from party_invites where player_id = ${guest.playerId}`).toEqual([])
  })

  it('walks the boards a page per call: 202 with the board to go on after, then 200', async () => {
    const boards = [await newBoard(), await newBoard(), await newBoard()]
    const player = `erase-${crypto.randomUUID()}`
    for (const b of boards) await submitFor(b, player, { score: 1 })
    const perCall = boardWalkLimits.boardsPerCall
    boardWalkLimits.boardsPerCall = 2
    onTestFinished(() => {
      boardWalkLimits.boardsPerCall = perCall
    })
    let after = PREFIX
    let removed = 0
    for (let calls = 1; ; calls++) {
      expect(calls).toBeLessThan(10_000)
      const res = await erase(player, after)
      const body = (await res.json()) as Erasure
      removed += body.boards.entriesRemoved
      expect(res.status).toBe(body.boards.next === null ? 200 : 202)
      if (body.boards.next === null) break
      expect(body.boards.walked).toBe(2)
      after = body.boards.next
    }
    expect(removed).toBe(3)
    for (const b of boards) {
      const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${player}`)
      expect(mine.entry).toBeNull()
    }
  })

  it('a party created under the id while the walk ran (its write began before the tombstone) is swept by the call that ends the walk', async () => {
    const board = await newBoard()
    const player = `erase-late-${crypto.randomUUID()}`
    await submitFor(board, player, { score: 1 })
    const partyId = `late-${crypto.randomUUID()}`
    let committed = false
    // While the boards are walked, after the erasure's first pass over Neon: the party's commit.
    await replaceMethod<Leaderboard, 'removeEntry'>(
      env.LEADERBOARD.getByName(board),
      'removeEntry',
      (removeEntry) =>
        async function (this: Leaderboard, boardId, playerId, opts) {
          if (playerId === player && !committed) {
            committed = true
            await pg()`insert into parties (id, leader) values (${partyId}, ${player})`
            await pg()`insert into party_members (party_id, player_id)
              values (${partyId}, ${player})`
          }
          return removeEntry.call(this, boardId, playerId, opts)
        },
    )
    const { first } = await eraseAll(player)
    expect(committed).toBe(true)
    expect(first.leftParty).toBe(partyId)
    expect(await pg()`select 1 from party_members where player_id = ${player}`).toEqual([])
    expect(await pg()`select 1 from parties where id = ${partyId}`).toEqual([])
  })

  it("a ticket waiting at the erasure and matched before the erasure's cancel reaches its pool is judged by when it joined: the match counts the player erased (no profile, no rating)", async () => {
    // Near real time: the erasure's time is Neon's.
    const clock = { t: Date.now() - 120_000 }
    const queue = await createQueue()
    const matchedAt: (number | undefined)[] = []
    await rig(queue, clock, {
      creator: async (_setup, at) => {
        matchedAt.push(at)
        return { ok: true, created: true }
      },
    })
    const tag = crypto.randomUUID().slice(0, 8)
    const [gone, other] = [`idp-waiting-${tag}`, `idp-opponent-${tag}`]
    await joinFor(queue, gone)
    const joinedAt = clock.t
    // The erasure's cancel does not reach the pool.
    const poolBack = await replaceMethod<MatchPool, 'removePlayer'>(
      poolOf(queue),
      'removePlayer',
      () => () => Promise.reject(new Error('pool down')),
    )
    expect((await eraseUntilRefused(gone)).status).toBe(503)
    // Matched after the erasure.
    clock.t = Date.now() + 1_000
    const joined = await joinFor(queue, other)
    poolBack()
    expect(joined.status).toBe('matched')
    expect(matchedAt).toEqual([joinedAt])
    const store = new NeonSessionStore(env)
    expect(await store.erasedAmong([gone, other], matchedAt[0]!)).toEqual([gone])
  })

  it('takes the player out of every live session they are in: their sockets close, no token of theirs connects or reads again, and the game goes on without them (a forfeit once their grace is over)', async () => {
    const [gone, stays] = playerIds(2, 'erase-live') as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: gone }, { playerId: stays }],
      options: { target: 1000 },
    })
    const goneSocket = await connectToSession(sessionId, tokens[gone]!)
    const staysSocket = await connectToSession(sessionId, tokens[stays]!)
    await goneSocket.nextOf('welcome')
    await staysSocket.nextOf('welcome')
    // Their own player token too, issued before the erasure.
    const { token: playerToken } = await issuePlayerToken(env, gone)
    const { first } = await eraseAll(gone)
    expect(first.sessions).toEqual({ left: [sessionId] })
    expect(await goneSocket.whenClosed()).toEqual(ERASED_CLOSE)
    // What the SDK stops on, rather than reconnect into refusals.
    expect(ERASED_CLOSE.code).toBe(ERASED_CLOSE_CODE)
    for (const token of [tokens[gone]!, playerToken]) {
      const refused = await problem(await upgradeSession(sessionId, token))
      expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
      const read = await call(`/v1/sessions/${sessionId}`, bearer(token))
      expect(read.status).toBe(403)
      const events = await call(`/v1/sessions/${sessionId}/events`, bearer(token))
      expect(events.status).toBe(403)
    }
    // The other player reads and plays on; once the erased player's grace is over, they win.
    expect((await call(`/v1/sessions/${sessionId}`, bearer(tokens[stays]!))).status).toBe(200)
    await inObject(sessionId, (inst) => {
      const base = inst.now()
      inst.now = () => base + GRACE_MS + 1000
    })
    expect(await runDurableObjectAlarm(sessionObject(sessionId))).toBe(true)
    const end = await staysSocket.nextOf('ended')
    expect(end.result).toMatchObject({ reason: 'forfeit', winner: stays })
    // A retry asks the session again and changes nothing.
    expect((await eraseAll(gone)).first.sessions).toEqual({ left: [] })
  })

  it('a session listed after the erasure (made from a match before it) finds the erasure itself: the erased player never connects', async () => {
    const guest = await newGuest()
    const [other] = playerIds(1, 'erase-later')
    await eraseAll(guest.playerId)
    // A guest's id never comes back: any session naming it was made before its erasure, as a
    // pool's match from a ticket that joined before it is.
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: guest.playerId }, { playerId: other! }],
    })
    const refused = await problem(await upgradeSession(sessionId, tokens[guest.playerId]!))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const info = await inObject(sessionId, (inst) => inst.info())
    expect(info).toMatchObject({ erasedPlayers: [guest.playerId] })
    const welcome = await (await connectToSession(sessionId, tokens[other!]!)).nextOf('welcome')
    expect(welcome.you).toBe(other)
  })

  it('a live session that does not load in this version (its rules gone) does not hold the erasure up: the player stays out of it once it loads again', async () => {
    const [gone, stays] = playerIds(2, 'erase-unloadable') as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: gone }, { playerId: stays }],
    })
    await renameRules(sessionId, 'rules-this-version-lacks')
    await evictDurableObject(sessionObject(sessionId))
    const { first } = await eraseAll(gone)
    expect(first.sessions).toEqual({ left: [sessionId] })
    // Rolled forward: it loads, and keeps the player out.
    await renameRules(sessionId, 'dice-race')
    await evictDurableObject(sessionObject(sessionId))
    const refused = await problem(await upgradeSession(sessionId, tokens[gone]!))
    expect(refused).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
    const welcome = await (await connectToSession(sessionId, tokens[stays]!)).nextOf('welcome')
    expect(welcome.you).toBe(stays)
  })

  it('a session made after the erasure, which a call of the same walk finds (it keeps the erasure time), is left to the player back under the id (an identity provider keeps it)', async () => {
    const [back, other] = playerIds(2, 'erase-back') as [string, string]
    await eraseAll(back)
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: [{ playerId: back }, { playerId: other }],
    })
    const socket = await connectToSession(sessionId, tokens[back]!)
    await socket.nextOf('welcome')
    // The walk's later calls (`after`) keep its time.
    expect((await eraseAll(back)).first.sessions).toEqual({ left: [] })
    socket.send({ type: 'ping' })
    expect(await socket.nextOf('pong')).toEqual({ type: 'pong' })
    expect(socket.closed).toBeNull()
  })

  it("a session archived and cleared is not read by an erased player's old tokens either (a guest's, a session token): the other player reads it", async () => {
    const { guest, other, sessionId, tokens } = await playedWithGuest('erase-archived')
    // Its end's work, then its retention: the object is cleared, Neon holds it.
    await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    const cleared = await clearAfterRetention(sessionId)
    expect(cleared?.stage).toBe('done')
    await eraseAll(guest.playerId)
    for (const token of [guest.token, tokens[guest.playerId]!]) {
      // Said to be an erasure (`erased`), which the SDK ends the connection on for good.
      const read = await problem(await call(`/v1/sessions/${sessionId}`, bearer(token)))
      expect(read).toMatchObject({ status: 403, type: 'urn:nexus:problem:forbidden' })
      expect(read.body.erased).toBe(true)
      expect((await call(`/v1/sessions/${sessionId}/events`, bearer(token))).status).toBe(403)
    }
    expect((await call(`/v1/sessions/${sessionId}`, bearer(tokens[other]!))).status).toBe(200)
    expect((await call(`/v1/sessions/${sessionId}/events`, bearer(tokens[other]!))).status).toBe(
      200,
    )
  })

  it("an erasure after the game ended, before its object was cleared, refuses the player's old tokens there too (reads and sockets ask Neon); so does one its result found first", async () => {
    const played = () => playedWithGuest('erase-ended')
    const readable = async (sessionId: string, token: string) =>
      (await call(`/v1/sessions/${sessionId}`, bearer(token))).status
    // Erased once the result is in Neon (the session no longer live there, so not walked).
    const after = await played()
    await inObject(after.sessionId, (inst) => inst.runEndWork({ force: true }))
    const { first } = await eraseAll(after.guest.playerId)
    expect(first.sessions.left).toEqual([])
    for (const token of [after.guest.token, after.tokens[after.guest.playerId]!]) {
      expect(await readable(after.sessionId, token)).toBe(403)
      // A guest's id never comes back: erased for good, and said so.
      const read = await problem(await call(`/v1/sessions/${after.sessionId}`, bearer(token)))
      expect(read.body.erased).toBe(true)
      expect((await call(`/v1/sessions/${after.sessionId}/events`, bearer(token))).status).toBe(403)
      const socket = await upgradeSession(after.sessionId, token)
      expect(socket.webSocket).toBeFalsy()
      expect(socket.status).toBe(403)
    }
    expect(await readable(after.sessionId, after.tokens[after.other]!)).toBe(200)
    const others = await upgradeSession(after.sessionId, after.tokens[after.other]!)
    expect(others.status).toBe(101)
    others.webSocket?.accept()
    others.webSocket?.close(1000)
    // Those reads ask Neon, so they count toward the player's reads a minute (made-up polling
    // would otherwise query Neon without end).
    const reads = (n: number) =>
      Promise.all(
        Array.from({ length: n }, () =>
          callWithEnv(
            { PLAYER_READS_PER_MINUTE: '2' },
            `/v1/sessions/${after.sessionId}`,
            bearer(after.tokens[after.other]!),
          ).then((r) => r.status),
        ),
      )
    expect((await reads(4)).filter((s) => s === 429).length).toBeGreaterThan(0)
    // A Neon failure that is not an outage (a missing table, a refused role) is a fault, not a
    // reason to let the socket in: 503.
    await inObject(after.sessionId, (inst) => {
      inst.store.erasedAmong = () =>
        Promise.reject(new Error('relation "erased_players" does not exist'))
    })
    const faulty = await upgradeSession(after.sessionId, after.tokens[after.other]!)
    expect(faulty.status).toBe(503)
    // Erased before the result was recorded, with no walk reaching the session (its tombstone
    // alone): the result finds the erasure and the session takes the player out.
    const during = await played()
    await pg()`insert into erased_players (id) values (${during.guest.playerId})`
    await inObject(during.sessionId, (inst) => inst.runEndWork({ force: true }))
    expect(await readable(during.sessionId, during.tokens[during.guest.playerId]!)).toBe(403)
    expect(await readable(during.sessionId, during.tokens[during.other]!)).toBe(200)
  })

  it("a session archived and cleared judges a returning player's reads by the match's time, as its object did: a match made before their erasure is not theirs to read again", async () => {
    // An identity provider's player, erased, then back under the id with a new token.
    const [gone, other] = playerIds(2, 'erase-made') as [string, string]
    const erasedAt = Date.now()
    await eraseAll(gone)
    const back = (await issuePlayerToken(env, gone, Date.now() + 2_000)).token
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: gone }, { playerId: other }],
    })
    // Its match was made before the erasure (a ticket that joined then; the pool passes its time).
    await inObject(sessionId, (inst, state) => {
      state.storage.sql.exec(`UPDATE meta SET value = ? WHERE key = 'made_at'`, erasedAt - 60_000)
      ;(inst as unknown as { madeAt: number }).madeAt = erasedAt - 60_000
    })
    // Refused, but not told erased: the player is live (back under the id), and their SDK must not
    // end as for an erased player (SessionPlayerErased).
    const live = await problem(await call(`/v1/sessions/${sessionId}`, bearer(back)))
    expect(live.status).toBe(403)
    expect(live.body.erased).toBeUndefined()
    const ended = await call(`/v1/admin/sessions/${sessionId}/end`, {
      ...bearer(ADMIN_KEY),
      method: 'POST',
    })
    expect(ended.status).toBe(200)
    await inObject(sessionId, (inst) => inst.runEndWork({ force: true }))
    const cleared = await clearAfterRetention(sessionId)
    expect(cleared?.stage).toBe('done')
    // Read from Neon now: still refused to the returning player, by the match's time.
    const cleared403 = await problem(await call(`/v1/sessions/${sessionId}`, bearer(back)))
    expect(cleared403.status).toBe(403)
    expect(cleared403.body.erased).toBeUndefined()
    expect((await call(`/v1/sessions/${sessionId}/events`, bearer(back))).status).toBe(403)
    expect((await call(`/v1/sessions/${sessionId}`, bearer(tokens[other]!))).status).toBe(200)
    // What an admin reads of the kept setup is the setup alone.
    const admin = (await (await call(`/v1/sessions/${sessionId}`, bearer(ADMIN_KEY))).json()) as {
      setup: Record<string, unknown>
    }
    expect(Object.keys(admin.setup).sort()).toEqual(['options', 'seed'])
  })

  it('a live session that cannot be reached fails the call that ends the walk (503 naming it); the retry takes the player out', async () => {
    const [gone, stays] = playerIds(2, 'erase-down') as [string, string]
    const { sessionId, tokens } = await createSession({
      rules: 'relay',
      roster: [{ playerId: gone }, { playerId: stays }],
    })
    const socket = await connectToSession(sessionId, tokens[gone]!)
    await socket.nextOf('welcome')
    const sessionBack = await replaceMethod<GameSession, 'removeErasedPlayer'>(
      sessionObject(sessionId),
      'removeErasedPlayer',
      () => () => Promise.reject(new Error('session down')),
    )
    const res = await eraseUntilRefused(gone)
    expect(res.headers.get('retry-after')).toBe('5')
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.sessions).toEqual([sessionId])
    expect(socket.closed).toBeNull()
    sessionBack()
    expect((await eraseAll(gone)).first.sessions).toEqual({ left: [sessionId] })
    expect((await socket.whenClosed()).code).toBe(ERASED_CLOSE.code)
  })

  it('a pool that cannot be reached holds up no board: the walk removes the entries, then 503 names the pool; the retry cancels the ticket', async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const board = await newBoard()
    const player = `erase-q-down-${crypto.randomUUID().slice(0, 8)}`
    await submitFor(board, player, { score: 1 })
    const ticket = await joinFor(queue, player)
    const poolBack = await replaceMethod<MatchPool, 'removePlayer'>(
      poolOf(queue),
      'removePlayer',
      () => () => Promise.reject(new Error('pool down')),
    )
    const res = await eraseUntilRefused(player)
    expect(res.headers.get('retry-after')).toBe('5')
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.pools).toEqual([`${queue}/eu`])
    // The boards were walked all the same.
    expect(
      (await fresh<{ entry: unknown }>(`/v1/leaderboards/${board}/players/${player}`)).entry,
    ).toBeNull()
    expect((await ticketOf(ticket.ticketId)).status).toBe('waiting')
    poolBack()
    const retry = await eraseAll(player)
    expect(retry.first.tickets).toEqual({ cancelled: [ticket.ticketId] })
  })

  it('a board that cannot be reached is 503 naming it, with Retry-After; the retry finishes the job', async () => {
    const [up, down] = [await newBoard(), await newBoard()]
    const player = `erase-${crypto.randomUUID()}`
    for (const b of [up, down]) await submitFor(b, player, { score: 1 })
    const boardBack = await replaceMethod<Leaderboard, 'removeEntry'>(
      env.LEADERBOARD.getByName(down),
      'removeEntry',
      (removeEntry) =>
        function (this: Leaderboard, boardId, playerId) {
          if (boardId === down) return Promise.reject(new Error('board down'))
          return removeEntry.call(this, boardId, playerId)
        },
    )
    // The walk, a page at a time, until the page holding the board that is down.
    const res = await eraseUntilRefused(player)
    expect(res.headers.get('retry-after')).toBe('5')
    const p = await problem(res)
    expect(p).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    expect(p.body.boards).toEqual([down])
    expect(
      (await fresh<{ entry: unknown }>(`/v1/leaderboards/${down}/players/${player}`)).entry,
    ).not.toBeNull()
    boardBack()
    await eraseAll(player)
    for (const b of [up, down]) {
      const mine = await fresh<{ entry: unknown }>(`/v1/leaderboards/${b}/players/${player}`)
      expect(mine.entry).toBeNull()
    }
  })

  it('bad input and callers: 401 without a credential, 403 for a player, 422 for a bad id or after, and nothing erased', async () => {
    const guest = await newGuest()
    await call(`/v1/admin/players/${guest.playerId}`, json('PUT', { name: 'Kept' }, ADMIN_KEY))
    const cases: [string, Response, number, string][] = [
      [
        'no credential',
        await call(`/v1/admin/players/${guest.playerId}`, { method: 'DELETE' }),
        401,
        'unauthorized',
      ],
      ['a player token', await erase(guest.playerId, undefined, guest.token), 403, 'forbidden'],
      ['an id with a space', await erase('a%20b'), 422, 'validation'],
      ['an id too long', await erase('p'.repeat(129)), 422, 'validation'],
      ['a bad after', await erase(guest.playerId, '-x'), 422, 'validation'],
    ]
    for (const [name, res, status, type] of cases) {
      const p = await problem(res)
      expect([name, p.status, p.type]).toEqual([name, status, `urn:nexus:problem:${type}`])
    }
    expect(await pg()`select name from players where id = ${guest.playerId}`).toEqual([
      { name: 'Kept' },
    ])
  })
})
