import { z } from '@hono/zod-openapi'
import { getSql } from '../db/client.ts'
import { forgetPlayerName } from '../leaderboards/names.ts'
import { boardStub } from '../leaderboards/stub.ts'
import { log } from '../lib/log.ts'
import { createRoute, newRouter, problemResponses } from '../lib/openapi.ts'
import { DisplayName, NewPlayerId, PlayerId, ResourceId } from '../lib/fields.ts'
import { ApiError } from '../lib/problem.ts'
import { GUEST_ID_PREFIX } from '../lib/auth.ts'
import { requireAdmin } from '../middleware/auth.ts'
import { cancelStaleTickets } from '../parties/stale-tickets.ts'
import {
  clearArchivedNames,
  clearLateArchivedNames,
  eraseFromNeon,
  markErasureComplete,
} from '../players/erasure.ts'
import { removeFromLiveSessions } from '../sessions/erased-players.ts'
import { accountBan, banAccount, liftAccountBan } from '../players/bans.ts'
import { removeFromQueues } from '../matchmaking/claims.ts'
import { walkBoards } from '../players/board-walk.ts'
import { deviationNow, RATED_AT_MS, readProfile } from '../players/profile.ts'
import { MAX_BANS } from '../../durable-objects/leaderboard.ts'
import { BanRequest } from './admin-leaderboards.ts'
import { RewardPage, RewardsQuery, rewardPage } from './reward-page.ts'

export const adminPlayers = newRouter()

const PlayerUpdate = z
  .object({
    rating: z.number().min(0).max(5000).optional(),
    ratingDeviation: z
      .number()
      .min(30)
      .max(350)
      .optional()
      .openapi({
        description:
          'How sure the rating is (30 to 350, a new player 350): a rating set by hand for a player ' +
          'whose games said otherwise sticks for dozens of games at a low deviation; a high one ' +
          'lets their next games correct it quickly',
      }),
    name: DisplayName.optional(),
  })
  .strict()
  .refine(
    (v) => v.rating !== undefined || v.ratingDeviation !== undefined || v.name !== undefined,
    'give rating, ratingDeviation, name, or several',
  )
  .openapi('PlayerUpdate')

const Player = z
  .object({
    playerId: z.string(),
    name: z.string().nullable(),
    rating: z.number(),
    ratingDeviation: z.number().openapi({
      description:
        "As it stands now: grown by each day since the player's last rated match or an admin's " +
        'setting of it (Neon keeps the value as of then)',
    }),
  })
  .openapi('Player')

const PlayerRecord = Player.extend({
  seen: z.boolean().openapi({
    description:
      'Whether Nexus holds a profile for the id; when not, the rating is what a first join uses',
  }),
  banned: z.boolean().openapi({ description: 'Under an account ban (`…/ban`)' }),
  erased: z.boolean().openapi({
    description:
      'Erased at some time (`DELETE …`): an erased guest never returns, while a player of an ' +
      'identity provider may have come back since (then `seen` again)',
  }),
}).openapi('PlayerRecord')

const getPlayerRoute = createRoute({
  method: 'get',
  path: '/{playerId}',
  summary: 'A player, for support: name, rating, and whether banned or erased',
  description:
    'Any id is answered: one Nexus has not seen (a player of an identity provider before first ' +
    'use, an erased one) has `seen: false` and the rating a first join would use.',
  middleware: [requireAdmin()] as const,
  request: { params: z.object({ playerId: PlayerId }) },
  responses: {
    200: { description: 'The player', content: { 'application/json': { schema: PlayerRecord } } },
    ...problemResponses(401, 403, 422),
  },
})

adminPlayers.openapi(getPlayerRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  return c.json(await readProfile(c.env, playerId), 200)
})

const playerRewardsRoute = createRoute({
  method: 'get',
  path: '/{playerId}/rewards',
  summary: "A player's rewards across boards, for support, newest first",
  description:
    'What `GET /v1/players/me/rewards` shows the player (voided ones marked `voidedAt`), with ' +
    "each void's `voidReason`. Pass `nextCursor` as `cursor` for older ones.",
  middleware: [requireAdmin()] as const,
  request: { params: z.object({ playerId: PlayerId }), query: RewardsQuery },
  responses: {
    200: { description: 'Rewards', content: { 'application/json': { schema: RewardPage } } },
    ...problemResponses(401, 403, 422),
  },
})

adminPlayers.openapi(playerRewardsRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  return c.json(
    await rewardPage(c.env, playerId, c.req.valid('query'), { withVoidReason: true }),
    200,
  )
})

const putPlayerRoute = createRoute({
  method: 'put',
  path: '/{playerId}',
  summary: "Set a player's rating or name",
  description:
    'Creates the player if unknown (players of an external identity provider appear on first ' +
    "use). 409 for an erased guest's id: a guest's id never comes back.",
  middleware: [requireAdmin()] as const,
  request: {
    params: z.object({ playerId: NewPlayerId }),
    body: { content: { 'application/json': { schema: PlayerUpdate } }, required: true },
  },
  responses: {
    200: { description: 'The player', content: { 'application/json': { schema: Player } } },
    ...problemResponses(400, 401, 403, 409, 413, 415, 422),
  },
})

adminPlayers.openapi(putPlayerRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const update = c.req.valid('json')
  const given: [column: string, value: string | number][] = []
  if (update.name !== undefined) given.push(['name', update.name])
  if (update.rating !== undefined) given.push(['rating', update.rating])
  if (update.ratingDeviation !== undefined) {
    given.push(['rating_deviation', update.ratingDeviation])
  }
  // A deviation set by hand is the uncertainty as of now: the next match grows it by the days
  // idle since then, not since the player's last match (a year away made a hand-set 30 about 200).
  const stamped = update.ratingDeviation !== undefined ? ['updated_at', 'rated_at'] : ['updated_at']
  // One statement: an erased guest's id never comes back (its device signs in as a new
  // player), so nothing is kept under it again; an identity provider's player keeps theirs.
  const [row] = (await getSql(c.env).query(
    `insert into players (id, ${[...given.map(([col]) => col), ...stamped].join(', ')})
     select $1, ${[...given.map((_, i) => `$${i + 2}`), ...stamped.map(() => 'now()')].join(', ')}
      where not (starts_with($1, '${GUEST_ID_PREFIX}')
                 and exists (select 1 from erased_players where id = $1))
     on conflict (id) do update
       set ${[...given.map(([col]) => `${col} = excluded.${col}`), ...stamped.map((col) => `${col} = now()`)].join(', ')}
     returning id, name, rating, rating_deviation, rating_volatility, ${RATED_AT_MS} as rated_at`,
    [playerId, ...given.map(([, value]) => value)],
  )) as {
    id: string
    name: string | null
    rating: number
    rating_deviation: number
    rating_volatility: number
    rated_at: number | null
  }[]
  if (!row) {
    throw new ApiError('conflict', `Player '${playerId}' was erased; a guest's id never returns`)
  }
  // Other isolates take the new name within their minute (docs/leaderboards.md, Reads).
  if (update.name !== undefined) forgetPlayerName(playerId)
  return c.json(
    {
      playerId: row.id,
      name: row.name,
      rating: Number(row.rating),
      // As GET shows it: grown by the idle days when this PUT did not set it.
      ratingDeviation: deviationNow(
        {
          rating: row.rating,
          rd: row.rating_deviation,
          volatility: row.rating_volatility,
          ratedAt: row.rated_at,
        },
        Date.now(),
      ),
    },
    200,
  )
})

/** Where a call that walks every board (an erasure, an account ban or its lifting) starts. */
const AfterBoard = z.object({
  after: ResourceId.optional().openapi({ description: '`boards.next` of the call before' }),
})

const BoardsNext = ResourceId.nullable().openapi({
  description: 'Boards remain after this one: call again with `after` set to it (202)',
})

/** What such a call did on the boards: an erasure's removals, or an account ban's. */
const BoardsWalked = z.object({
  walked: z.number().int().openapi({ description: 'Boards this call walked' }),
  entriesRemoved: z
    .number()
    .int()
    .openapi({ description: "Of those, boards whose current cycle held the player's entry" }),
  next: BoardsNext,
})

/** What a ban or an erasure did in the queues. */
const TicketsCancelled = z.object({
  cancelled: z.array(z.string()).openapi({
    description:
      "The player's waiting matchmaking tickets this call cancelled (a party's whole ticket; " +
      'reason `banned` or `erased`): every call of a walk does this first, so a later call ' +
      'finds nothing left',
  }),
})

const Erasure = z
  .object({
    playerId: z.string(),
    profileDeleted: z.boolean().openapi({
      description: 'Whether there was a profile (device link, name, rating) to delete',
    }),
    leftParty: z
      .string()
      .nullable()
      .openapi({ description: 'The party the player was taken out of' }),
    archivedRowsCleared: z
      .number()
      .int()
      .openapi({ description: 'Archived standings whose copied name and metadata were cleared' }),
    deviceKeptForBan: z.boolean().openapi({
      description:
        "The player is under an account ban, which now keeps their guest device's hash so that " +
        'the device cannot sign in as a new player; lifting the ban deletes it',
    }),
    tickets: TicketsCancelled,
    sessions: z
      .object({
        left: z.array(z.string()).openapi({
          description:
            'Live sessions this call took the player out of (their sockets closed; none of ' +
            'theirs is taken again; a retry lists only those an earlier call did not reach): ' +
            'the game goes on as after any leaving',
        }),
      })
      .openapi({ description: 'The live sessions the player was in' }),
    boards: BoardsWalked,
  })
  .openapi('PlayerErasure')

const eraseRoute = createRoute({
  method: 'delete',
  path: '/{playerId}',
  summary: "Erase a player's personal data",
  description:
    "For a player's request to be forgotten. Deletes their profile (a guest's device link, the " +
    'display name, the rating: the device signs in as a new player afterwards), takes them out of ' +
    'their party (a leader hands over, its queued tickets are cancelled as on any leave) and off ' +
    'invites, cancels a matchmaking ticket of theirs still waiting (reason `erased`, before any ' +
    'board, by every call: the call that ends the walk is 503 naming `pools` it could not reach, ' +
    'after its boards), takes them out of every live session they are in (their sockets close ' +
    'and none of theirs is taken again, whatever their token: the game goes on as after their ' +
    'leaving, a forfeit once their grace is over where the rules say so; by every call, and ' +
    'the call that ends the walk is 503 naming `sessions` it could not reach), clears the name and metadata copied into archived standings (2,000 rows a statement, ' +
    'each call going on from the last: up to 5 s a call with boards left, and to the end on the call that ends the ' +
    "walk, which is 503 with `Retry-After: 1` and this call's `archivedRowsCleared` while more are left; " +
    "`archivedRowsCleared` counts the call's own), and removes their entry from every " +
    "board's current cycle. Ranks, scores, rewards and match results stay under the bare id, which " +
    'names nobody once the profile is gone; the id is kept as erased, so a match the player was ' +
    "still in rates and records nothing of theirs; an account ban keeps a banned guest's device " +
    '(its hash) so it cannot sign in as a new player. Walks at most 200 boards per call, in id order: 202 ' +
    'with `boards.next` says to call again with `after`; 200 when every board is done. Idempotent: ' +
    'safe to retry, and a board that cannot be reached is 503 (`boards` lists them) for a retry. ' +
    'A call once a walk has ended (its 200) erases anew, as of then: tokens issued since the first ' +
    'are refused too (a player of an identity provider who came back). ' +
    "Tokens already issued stay valid until they expire (at most 30 days): sign the player's " +
    'client out. Boards and matchmaking refuse them (403) from then on.',
  middleware: [requireAdmin()] as const,
  request: {
    params: z.object({ playerId: PlayerId }),
    query: AfterBoard,
  },
  responses: {
    200: { description: 'Erased everywhere', content: { 'application/json': { schema: Erasure } } },
    202: {
      description: 'Erased in Neon and on the boards walked; more boards remain',
      content: { 'application/json': { schema: Erasure } },
    },
    ...problemResponses(401, 403, 422, 503),
  },
})

/**
 * The answer to a walk that could not reach `failed` boards: 503 naming them (the first 100).
 * Every walk is idempotent, so the caller sends the same call again.
 */
function unreached(done: string, failed: readonly string[], next: string | null): ApiError {
  // With `next` (bans and lifts), a board that keeps failing (a full one, one under a flood)
  // need not hold back the boards after it: the walk goes on from there, and the failed ones are
  // sent again later from this call's `after`.
  return new ApiError(
    'unavailable',
    `${done}, but ${failed.length} board(s) could not be reached: retry` +
      (next === null ? '' : ', or go on with `after` = `next` and retry these later'),
    { boards: failed.slice(0, 100), ...(next === null ? {} : { next }) },
    { 'retry-after': '5' },
  )
}

/** How long a call with boards left to walk clears archived names for (it goes on next call). */
const ARCHIVE_CLEAR_PAGE_MS = 5_000
/** How long the call that ends a walk clears them for, before a 503 whose retry goes on. */
const ARCHIVE_CLEAR_LAST_MS = 15_000

/** 503 naming the queue pools (the first 100) a ban's or an erasure's step could not reach. */
function poolsUnreached(done: string, pools: readonly string[]): ApiError {
  return new ApiError(
    'unavailable',
    `${done}, but ${pools.length} queue pool(s) could not be reached: retry`,
    { pools: pools.slice(0, 100) },
    { 'retry-after': '5' },
  )
}

adminPlayers.openapi(eraseRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const after = c.req.valid('query').after ?? ''
  // A call with `after` goes on with a walk, which keeps its time however long it takes.
  const neon = await eraseFromNeon(c.env, playerId, { continuing: after !== '' })
  forgetPlayerName(playerId)
  // A ticket left waiting would make a match after the erasure, which plays them as a new player
  // (the session, made after the erasure, does not count them as erased): a profile again. So
  // every call cancels theirs first, before the boards, however many calls the walk takes: the
  // tombstone already keeps them from queueing again. A pool out of reach is reported after the
  // walk, so that it holds up no board's removal. Beside the party's old tickets, not after
  // them: those wait up to 10 s a pool that does not answer, while the player's own could match.
  const [queues, sessions] = await Promise.all([
    removeFromQueues(c.env, playerId, 'erased'),
    removeFromLiveSessions(c.env, playerId, neon.erasedAt),
    neon.leftParty
      ? cancelStaleTickets(c.env, neon.leftParty, neon.staleTickets, { by: 'erasure' })
      : undefined,
  ])
  const { outcomes, next } = await walkBoards(c.env, after, 'erasure: board removal', (id) =>
    boardStub(c.env, id).removeEntry(id, playerId, { erasedAt: neon.erasedAt }),
  )
  let entriesRemoved = 0
  const failed: string[] = []
  for (const o of outcomes) {
    if ('answer' in o && o.answer.ok) {
      if (o.answer.removed) entriesRemoved++
      continue
    }
    // A board deleted since it was listed holds nobody: its object answers `not-found` only once
    // its storage is gone (`deleteBoard`).
    if ('answer' in o && !o.answer.ok && o.answer.problem === 'not-found') continue
    failed.push(o.board)
    if ('answer' in o && !o.answer.ok)
      log('warn', 'erasure: entry not removed', { board: o.board, problem: o.answer.problem })
  }
  // No `next` here: a walk that went on past a board would end marked complete with that board
  // never reached, and the page sent again later would begin a new erasure (a call from the
  // start finds the erasure over).
  if (failed.length > 0) throw unreached('The player is erased from Neon', failed, null)
  // A pool out of reach fails only the call that ends the walk: every call tries it again, and
  // the walk goes on meanwhile (a 503 carries no `next`, so failing earlier calls would hold
  // the boards after the first page back for as long as the pool is down).
  if (queues.unreached.length > 0 && next === null) {
    throw poolsUnreached('The player is erased from Neon and on every board', queues.unreached)
  }
  if (sessions.unreached.length > 0 && next === null) {
    throw new ApiError(
      'unavailable',
      `The player is erased from Neon and on every board, but ${sessions.unreached.length} ` +
        'live session(s) could not be reached: retry',
      { sessions: sessions.unreached.slice(0, 100) },
      { 'retry-after': '5' },
    )
  }
  // The archive's copies of the name, going on from where the erasure's last call stopped: as
  // far as a few seconds go on a call with boards still to walk (most players' in one
  // statement), to the end on the call that ends the walk, which answers 503 (its retry goes
  // on) until it gets there.
  const clear = await clearArchivedNames(
    c.env,
    playerId,
    neon.erasedAt,
    next === null ? ARCHIVE_CLEAR_LAST_MS : ARCHIVE_CLEAR_PAGE_MS,
  )
  if (next === null && !clear.done) {
    throw new ApiError(
      'unavailable',
      `The player is erased from Neon and on every board; ${clear.cleared} archived standings ` +
        'had their name cleared in this call, and more are left: retry',
      { archivedRowsCleared: clear.cleared },
      { 'retry-after': '1' },
    )
  }
  // The call that ends the walk sweeps Neon once more: a write that began before the tombstone
  // (a party created, an archive page with the player's name) may commit after the first pass,
  // and nothing would come back for it. Idempotent, and it keeps the tombstone's time.
  const sweep = next === null ? await eraseFromNeon(c.env, playerId, { continuing: true }) : null
  if (sweep?.leftParty) {
    await cancelStaleTickets(c.env, sweep.leftParty, sweep.staleTickets, { by: 'erasure' })
  }
  // And the archive's pages a statement that began before the erasure wrote after the clear.
  const late = sweep ? await clearLateArchivedNames(c.env, playerId, neon.erasedAt) : 0
  if (sweep) await markErasureComplete(c.env, playerId, neon.erasedAt)
  return c.json(
    {
      playerId,
      profileDeleted: neon.hadProfile || sweep?.hadProfile === true,
      leftParty: neon.leftParty ?? sweep?.leftParty ?? null,
      archivedRowsCleared: clear.cleared + late,
      deviceKeptForBan: sweep?.deviceKeptForBan ?? neon.deviceKeptForBan,
      tickets: { cancelled: queues.cancelled },
      sessions: { left: sessions.sessions },
      boards: { walked: outcomes.length, entriesRemoved, next },
    },
    next === null ? 200 : 202,
  )
})

const AccountBan = z
  .object({
    playerId: z.string(),
    reason: z.string().nullable(),
    bannedAt: z.string().openapi({ description: 'When the player was first banned (ISO 8601)' }),
  })
  .openapi('AccountBan')

const AccountBanResult = AccountBan.extend({
  tickets: TicketsCancelled,
  boards: BoardsWalked.extend({
    full: z.array(z.string()).openapi({
      description: `Boards that refused the ban: they hold ${MAX_BANS.toLocaleString('en')} bans already`,
    }),
  }),
}).openapi('AccountBanResult')

const banAccountRoute = createRoute({
  method: 'put',
  path: '/{playerId}/ban',
  summary: 'Ban a player from the whole deployment',
  description:
    'For a cheater or an abuser. At once: no guest token is issued to the player (403 ' +
    '`forbidden`), matchmaking refuses their joins and any party join that includes them (403), ' +
    'every board bans them as its own ban does (their entry leaves the current cycle, their ' +
    'submissions are refused), boards created later included, and every call first cancels a ' +
    'ticket of theirs waiting in a queue (reason `banned`; the call that ends the walk is 503 ' +
    'naming `pools` it could not reach, after its boards). Walks at most 200 boards per call, in id order: 202 with `boards.next` ' +
    'says to call again with `after`; 200 when every board is done; 503 lists boards that could not ' +
    'be reached, for a retry. Idempotent: banning again keeps the first time and takes a new ' +
    'reason if it gives one. Not reached: a match already made and the game in progress, and players of your ' +
    'own identity provider (JWKS) sign in there: stop issuing them tokens. Lift with DELETE.',
  middleware: [requireAdmin()] as const,
  request: {
    params: z.object({ playerId: PlayerId }),
    query: AfterBoard,
    body: {
      required: true,
      content: {
        'application/json': { schema: BanRequest },
      },
    },
  },
  responses: {
    200: {
      description: 'Banned everywhere',
      content: {
        'application/json': {
          schema: AccountBanResult,
        },
      },
    },
    202: {
      description: 'Banned in Neon and on the boards walked; more boards remain',
      content: { 'application/json': { schema: AccountBanResult } },
    },
    ...problemResponses(400, 401, 403, 413, 415, 422, 503),
  },
})

adminPlayers.openapi(banAccountRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const after = c.req.valid('query').after ?? ''
  const { reason } = c.req.valid('json')
  // Neon first: sign-in and matchmaking refuse the player from here on, whatever the boards do.
  const ban = await banAccount(c.env, playerId, reason ?? null)
  // Then the queues, by every call and before the boards, as an erasure does: a ticket left
  // waiting while a walk of many boards goes on, or is retried for a board that keeps failing,
  // would be matched. A pool out of reach is reported after the walk, holding up no board.
  const queues = await removeFromQueues(c.env, playerId, 'banned')
  const { outcomes, next } = await walkBoards(c.env, after, 'account ban: board ban', (id) =>
    boardStub(c.env, id).ban(id, playerId, ban.reason, { byAccount: true }),
  )
  let entriesRemoved = 0
  const full: string[] = []
  const failed: string[] = []
  for (const o of outcomes) {
    if (!('answer' in o)) failed.push(o.board)
    else if (o.answer.ok) {
      if (o.answer.removed) entriesRemoved++
    } else if (o.answer.problem === 'conflict') full.push(o.board)
    // A board gone since it was listed has nobody to ban.
    else if (o.answer.problem !== 'not-found') failed.push(o.board)
  }
  if (failed.length > 0) throw unreached('The player is banned in Neon', failed, next)
  if (full.length > 0) log('warn', 'account ban: boards full of bans', { playerId, boards: full })
  // As an erasure's: only the call that ends the walk fails for a pool out of reach.
  if (queues.unreached.length > 0 && next === null) {
    throw poolsUnreached('The player is banned in Neon and on every board', queues.unreached)
  }
  return c.json(
    {
      ...ban,
      tickets: { cancelled: queues.cancelled },
      boards: { walked: outcomes.length, entriesRemoved, full, next },
    },
    next === null ? 200 : 202,
  )
})

const AccountBanLift = z
  .object({
    playerId: z.string(),
    lifted: z.boolean(),
    boards: z.object({
      walked: z.number().int(),
      lifted: z.number().int().openapi({
        description: 'Of those, boards that held a ban the account ban placed',
      }),
      next: BoardsNext,
    }),
  })
  .openapi('AccountBanLift')

const liftAccountBanRoute = createRoute({
  method: 'delete',
  path: '/{playerId}/ban',
  summary: "Lift a player's account ban",
  description:
    'The player may sign in, queue and submit again. Lifts the bans the account ban placed on ' +
    "boards; a ban a board's admin set stays. Entries the ban removed do not come back. Walks " +
    'boards as the ban does (202 with `boards.next`, 503 for boards that could not be reached); ' +
    '`lifted` is false when Neon held no ban, so a retry changes nothing.',
  middleware: [requireAdmin()] as const,
  request: { params: z.object({ playerId: PlayerId }), query: AfterBoard },
  responses: {
    200: {
      description: 'Not banned (any more) on any board',
      content: {
        'application/json': {
          schema: AccountBanLift,
        },
      },
    },
    202: {
      description: 'Lifted in Neon and on the boards walked; more boards remain',
      content: { 'application/json': { schema: AccountBanLift } },
    },
    ...problemResponses(401, 403, 422, 503),
  },
})

adminPlayers.openapi(liftAccountBanRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const after = c.req.valid('query').after ?? ''
  const lifted = (await liftAccountBan(c.env, playerId)) !== null
  const { outcomes, next } = await walkBoards(c.env, after, 'account ban: board lift', (id) =>
    boardStub(c.env, id).unban(id, playerId, { byAccount: true }),
  )
  let boardsLifted = 0
  const failed: string[] = []
  for (const o of outcomes) {
    if (!('answer' in o)) failed.push(o.board)
    else if (o.answer.ok) {
      if (o.answer.lifted) boardsLifted++
    } else if (o.answer.problem !== 'not-found') failed.push(o.board)
  }
  if (failed.length > 0) throw unreached('The ban is lifted in Neon', failed, next)
  return c.json(
    { playerId, lifted, boards: { walked: outcomes.length, lifted: boardsLifted, next } },
    next === null ? 200 : 202,
  )
})

const accountBanRoute = createRoute({
  method: 'get',
  path: '/{playerId}/ban',
  summary: "A player's account ban",
  description: '404 when the player is not banned.',
  middleware: [requireAdmin()] as const,
  request: { params: z.object({ playerId: PlayerId }) },
  responses: {
    200: { description: 'The ban', content: { 'application/json': { schema: AccountBan } } },
    ...problemResponses(401, 403, 404, 422),
  },
})

adminPlayers.openapi(accountBanRoute, async (c) => {
  const { playerId } = c.req.valid('param')
  const ban = await accountBan(c.env, playerId)
  if (!ban) throw new ApiError('not-found', `Player '${playerId}' is not banned`)
  return c.json(ban, 200)
})
