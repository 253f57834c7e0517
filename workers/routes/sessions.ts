import { z } from '@hono/zod-openapi'
import type { Context } from 'hono'
import { decodeJwt } from 'jose'
import type { AppEnv } from '../app-env.ts'
import { PLAYER_HEADER } from '../../durable-objects/game-session.ts'
import { getRules, viewRecord, type RosterEntry } from '../core/rules/index.ts'
import { getSql, isNeonOutage } from '../db/client.ts'
import { errorFields, log } from '../lib/log.ts'
import { authenticate, bearer, GUEST_ID_PREFIX, verifyPlayerToken } from '../lib/auth.ts'
import {
  BEARER,
  BEARER_OR_QUERY_TOKEN,
  createRoute,
  decimalInt,
  newRouter,
  problemResponses,
} from '../lib/openapi.ts'
import { boundedInt } from '../lib/config.ts'
import { ApiError, apiErrorFrom } from '../lib/problem.ts'
import { SESSION_AUDIENCE, verifySessionToken } from '../lib/session-token.ts'
import { acceptedSocket, socketOffer, type SocketOffer } from '../lib/socket-auth.ts'
import { within } from '../lib/within.ts'
import { adminKeyGuard } from '../middleware/auth.ts'
import { countPlayerRead, enforceEdgeLimit } from '../middleware/rate-limit.ts'
import { CONNECTION_ID_RULE, ConnectionId, SessionId, SINCE_FORM } from '../sessions/schemas.ts'
import { loadArchivedEvents, loadArchivedSession, NeonSessionStore } from '../sessions/store.ts'
import { type SessionApi, sessionStub } from '../sessions/stub.ts'

export const sessionRoutes = newRouter()

/** Most log records one page of `/events` returns. */
export const MAX_EVENTS_PAGE = 500

const SessionParam = z.object({ id: SessionId })

const Placement = z.object({
  playerId: z.string(),
  team: z.number().int(),
  place: z.number().int(),
  score: z.number().optional(),
})

export const RatingChange = z.object({
  playerId: z.string(),
  before: z.object({ rating: z.number(), rd: z.number(), volatility: z.number() }),
  after: z.object({ rating: z.number(), rd: z.number(), volatility: z.number() }),
})

export const SessionView = z
  .object({
    sessionId: z.string(),
    rules: z.string(),
    status: z.enum(['live', 'finished']),
    roster: z.array(z.object({ playerId: z.string(), team: z.number().int() })),
    queue: z.string().nullable(),
    seq: z.number().int().nullable().openapi({ description: 'Last event; null once archived' }),
    createdAt: z.number(),
    endedAt: z.number().nullable(),
    result: z
      .object({
        placements: z.array(Placement),
        reason: z.enum(['finished', 'forfeit', 'abandoned', 'cancelled']),
        winner: z.string().nullable(),
      })
      .nullable(),
    ratingChanges: z.array(RatingChange).nullable(),
    setup: z
      .object({ seed: z.string(), options: z.unknown() })
      .nullable()
      .optional()
      .openapi({
        description:
          'Admins only: the secret seed and rules options that, with the roster and the log ' +
          '(`/events`), replay the game; null while it is live, and for a session cleared before ' +
          '2026-12-05. Players never get it.',
      }),
    end: z
      .object({
        stage: z.enum(['record', 'submit', 'archive', 'retain', 'done']),
        archived: z.number().int().nullable().openapi({
          description: 'Log records archived so far; null once the object was cleared',
        }),
        attempts: z.number().int(),
        nextAttemptAt: z.number().nullable(),
        lastError: z.string().nullable(),
        notSubmitted: z
          .array(
            z.object({
              playerId: z.string(),
              reason: z.string().openapi({
                description:
                  "The board's problem type (`forbidden`: the winner banned there; `conflict`: " +
                  'the board full; `not-found`: no such board; …), `paused`, or `unanswered` ' +
                  '(the board never answered within its day of remembering keys)',
              }),
              detail: z.string(),
            }),
          )
          .openapi({
            description:
              "Winners whose win the end gave up putting on the queue's board, and why: the " +
              'stage moved on (a retry would not change the answer, or could count it twice). ' +
              'A refused win never counted; an `unanswered` one may have. Kept after the object ' +
              'is cleared; empty for sessions whose end ran before 2026-12-07.',
          }),
      })
      .nullable()
      .optional()
      .openapi({
        description:
          "Admins only: where the end's durable work stands (`record` the result and ratings in " +
          "Neon, `submit` the win to the queue's leaderboard, `archive` the log, `retain` until " +
          'the storage is cleared, `done`), with its failed attempts in a row, when it tries ' +
          'next and its last error; null while the game is live. A session stuck at one stage ' +
          'shows why here. Null for a session whose object was cleared while Neon still lists it ' +
          'as live.',
      }),
  })
  .openapi('Session')

/** Who reads: the admin key, or a player by their own token or by a session token of this session. */
type Viewer =
  { kind: 'admin' } | { kind: 'player'; playerId: string; sessionToken: boolean; issuedAt?: number }

/**
 * The request's credential. On a socket upgrade, which a browser cannot give a header, also
 * the subprotocol `nexus.token.<token>` (`offer`) or `?token=`; in the URL of a plain request a
 * token would end up in proxy logs and referrers, so there it does not count.
 */
function credentialOf(c: Context<AppEnv>, offer: SocketOffer | null): string {
  const credential =
    bearer(c.req.header('authorization')) ??
    (offer ? (offer.token ?? c.req.query('token')) : undefined)
  if (!credential) {
    throw new ApiError(
      'unauthorized',
      offer || c.req.query('token') === undefined
        ? 'Send "Authorization: Bearer <token>" (on a socket, or the subprotocol "nexus.token.<token>" beside "nexus.v1")'
        : '?token= is for sockets only: send "Authorization: Bearer <token>"',
    )
  }
  return credential
}

/** The admin key, a session token for this session, or a player token. */
async function viewerOf(c: Context<AppEnv>, sessionId: string): Promise<Viewer> {
  const credential = credentialOf(c, null)
  // A session token is this route's own; anything else is taken as on every other route, wrong
  // admin keys counted toward the address's lockout by the same rule.
  if (forSessions(credential) === true) {
    const playerId = await verifySessionToken(c.env, credential, sessionId)
    return { kind: 'player', playerId, sessionToken: true }
  }
  const principal = await authenticate(c.env, credential, adminKeyGuard(c))
  return principal.kind === 'admin'
    ? { kind: 'admin' }
    : {
        kind: 'player',
        playerId: principal.playerId,
        sessionToken: false,
        issuedAt: principal.issuedAt,
      }
}

/**
 * Whether a JWT is one for sessions, unverified (only which kind of token it is); null for
 * anything that is not a JWT.
 */
function forSessions(credential: string): boolean | null {
  let audience: unknown
  try {
    audience = decodeJwt(credential).aud
  } catch {
    return null
  }
  return Array.isArray(audience)
    ? audience.includes(SESSION_AUDIENCE)
    : audience === SESSION_AUDIENCE
}

/**
 * The player a JWT speaks for: a session token for this session, or the player's own token. The
 * session's object then admits only its roster. A player token is taken too because a session
 * token lasts 6 hours: a player of a longer game (a relay room) must still be able to come back.
 */
async function playerOf(
  c: Context<AppEnv>,
  credential: string,
  sessionId: string,
): Promise<Extract<Viewer, { kind: 'player' }>> {
  const sessions = forSessions(credential)
  if (sessions === null) throw new ApiError('unauthorized', 'The bearer token is not a JWT')
  if (sessions) {
    const playerId = await verifySessionToken(c.env, credential, sessionId)
    return { kind: 'player', playerId, sessionToken: true }
  }
  const p = await verifyPlayerToken(c.env, credential)
  if (p.kind !== 'player') throw new ApiError('unauthorized', 'A player token is required')
  return { kind: 'player', playerId: p.playerId, sessionToken: false, issuedAt: p.issuedAt }
}

/**
 * Refuses a player not on the session's roster, and one whose own token speaks for a player
 * back under an id erased since the session was made (an identity provider keeps the id): what
 * was erased is not theirs to read, as their own listing says (`sinceErasure`). Guest ids never
 * come back, and a session token was issued for this match to the player it names.
 */
async function authorize(
  c: Context<AppEnv>,
  viewer: Viewer,
  session: {
    roster: readonly RosterEntry[]
    createdAt: number
    madeAt?: number
    erasedPlayers?: readonly string[]
    status?: string
  },
): Promise<void> {
  if (viewer.kind === 'admin') return
  const refused = () => new ApiError('forbidden', 'Only the players of this session may see it')
  // Said so (`erased: true`) where the player is erased for good: taken out by the session, or a
  // guest (whose id never comes back). The SDK, which cannot read a refused socket's answer,
  // learns from this read that the connection is over (SessionPlayerErased). A player of an
  // identity provider back under an erased id is live: refused this session, not told erased.
  const erasedOut = (forGood: boolean) =>
    forGood
      ? new ApiError('forbidden', 'This player was erased: the session takes nothing of theirs', {
          erased: true,
        })
      : refused()
  const guest = viewer.playerId.startsWith(GUEST_ID_PREFIX)
  if (!session.roster.some((p) => p.playerId === viewer.playerId)) throw refused()
  const madeAt = session.madeAt ?? session.createdAt
  if (session.erasedPlayers === undefined) {
    // Read from Neon, its object cleared: whoever's token it is (an erased guest's old one, a
    // session token, a player back under the id), an erasure that counts against the match
    // (erased since it was made; a guest, ever) refuses it, as it refused their socket while the
    // game ran. Neon is asked anyway for such a read.
    const erased = await new NeonSessionStore(c.env).erasedAmong([viewer.playerId], madeAt)
    if (erased.length > 0) throw erasedOut(guest)
    return
  }
  // Erased while it ran, whatever their token (a session token too): the object refuses their
  // sockets alike.
  if (session.erasedPlayers.includes(viewer.playerId)) throw erasedOut(true)
  // Ended, not yet cleared: no erasure walk asks it (a player may have hundreds within the
  // retention), so its reads ask Neon, as a cleared one's do, whatever the token; that check
  // covers a player back under an erased id too.
  if (session.status !== 'live') {
    if (await erasedSinceMatch(c, viewer.playerId, madeAt)) throw erasedOut(guest)
    return
  }
  // By the match's time, as its result is: a session the pool created after an erasure, from a
  // match made (a ticket joined) before it, was the erased player's.
  if (await erasedSince(c, viewer, madeAt)) throw refused()
}

/**
 * Whether an erasure could be why `viewer` may not read a session: not for a session token
 * (issued for this match to the player it names), nor for a guest (whose id never comes back).
 */
function mayBeBackUnderErasedId(viewer: Extract<Viewer, { kind: 'player' }>): boolean {
  return !viewer.sessionToken && !viewer.playerId.startsWith(GUEST_ID_PREFIX)
}

/**
 * How long a session read or reconnect waits on Neon for the erasure check before skipping it:
 * past a Neon compute waking from scale to zero, well short of Neon's own 8 s.
 */
export const ERASURE_CHECK_WAIT_MS = 3_000

/**
 * Whether `viewer`'s own token speaks for a player back under an id erased after `createdAt`.
 * Neon is asked only when it could (mayBeBackUnderErasedId), and not for a token issued before
 * the session (a player back since holds one issued after the erasure, so after the session).
 */
async function erasedSince(
  c: Context<AppEnv>,
  viewer: Extract<Viewer, { kind: 'player' }>,
  createdAt: number,
): Promise<boolean> {
  if (!erasureCheckAsksNeon(viewer, createdAt)) return false
  try {
    // A Neon that hangs must not hold a running game's reads and reconnects for its 8 s.
    const erased = await within(
      getSql(c.env).query(
        'select 1 from erased_players where id = $1 and erased_at > to_timestamp($2 / 1000.0)',
        [viewer.playerId, createdAt],
      ),
      ERASURE_CHECK_WAIT_MS,
      'the erasure check',
    )
    return erased.length > 0
  } catch (err) {
    // Neon out of reach or slow: the session is served as before this check (it guards a rare
    // case, a player back under an erased id, and must not take a running game's reads down with
    // Neon). Anything else (a missing table, a refused role) is a fault to see, not a reason to
    // skip.
    if (!isNeonOutage(err)) throw err
    log('warn', 'erasure check skipped', { sessionCreatedAt: createdAt, ...errorFields(err) })
    return false
  }
}

/** Whether erasedSince asks Neon about `viewer` for a session made at `createdAt`. */
function erasureCheckAsksNeon(
  viewer: Extract<Viewer, { kind: 'player' }>,
  createdAt: number,
): boolean {
  if (!mayBeBackUnderErasedId(viewer)) return false
  // `iat` is in whole seconds: a token stamped in the session's second may be later than it.
  return viewer.issuedAt === undefined || viewer.issuedAt + 1000 > createdAt
}

/**
 * Whether Neon has `playerId` erased since the match (a guest: ever), as a result judges it.
 * Skipped, as erasedSince is, when Neon does not answer in time.
 */
async function erasedSinceMatch(
  c: Context<AppEnv>,
  playerId: string,
  madeAt: number,
): Promise<boolean> {
  try {
    const erased = await within(
      new NeonSessionStore(c.env).erasedAmong([playerId], madeAt),
      ERASURE_CHECK_WAIT_MS,
      'the erasure check',
    )
    return erased.length > 0
  } catch (err) {
    if (!isNeonOutage(err)) throw err
    log('warn', 'erasure check skipped', { madeAt, ...errorFields(err) })
    return false
  }
}

/** Verifies the player's token, then hands the upgrade to the session's object. */
async function connect(c: Context<AppEnv>, sessionId: string): Promise<Response> {
  const offer = socketOffer(c.req.header('sec-websocket-protocol'))
  const player = await playerOf(c, credentialOf(c, offer), sessionId)
  // Their forms are checked here, before a connect is counted or anything is asked; whether
  // `since` is within the log, the session itself says.
  const since = c.req.query('since')
  if (since !== undefined && !SINCE_FORM.test(since)) {
    throw new ApiError('validation', 'since must be an integer from 0 in plain decimal digits', {
      errors: [{ path: 'since', message: 'an integer from 0, in plain decimal digits' }],
    })
  }
  const conn = c.req.query('conn')
  if (conn !== undefined && !ConnectionId.safeParse(conn).success) {
    throw new ApiError('validation', CONNECTION_ID_RULE, {
      errors: [{ path: 'conn', message: CONNECTION_ID_RULE }],
    })
  }
  // Before the session or Neon is asked: each connect is a call on the thread that plays the
  // match (and an ended one's a Neon query), and a client reconnecting in a loop would spend
  // them without end.
  await enforceEdgeLimit(c, {
    name: 'session-connects',
    limit: boundedInt(c.env.SESSION_CONNECTS_PER_MINUTE, 120, 1, 100_000),
    key: () => player.playerId,
  })
  if (mayBeBackUnderErasedId(player)) {
    // A session made before an erasure of the id is not a returning player's (as a read of it).
    const info = await sessionStub(c.env, sessionId).info()
    const onRoster = info.ok && info.roster.some((p) => p.playerId === player.playerId)
    if (info.ok && onRoster && (await erasedSince(c, player, info.madeAt ?? info.createdAt))) {
      throw new ApiError('forbidden', 'Only the players of this session may see it')
    }
  }
  const url = new URL('https://game-session.internal/connect')
  if (since !== undefined) url.searchParams.set('since', since)
  if (conn !== undefined) url.searchParams.set('conn', conn)
  // A new request: only the verified player travels to the object, never client headers.
  const res = await c.env.GAME_SESSION.getByName(sessionId).fetch(
    new Request(url, { headers: { upgrade: 'websocket', [PLAYER_HEADER]: player.playerId } }),
  )
  if (res.status === 101) return acceptedSocket(res, offer)
  throw await apiErrorFrom(res)
}

const getRoute = createRoute({
  method: 'get',
  path: '/{id}',
  summary: 'A session: status, roster, result — or its socket when upgraded',
  description:
    'With `Upgrade: websocket` and the session token, or the token of a player on the roster ' +
    '(`Authorization: Bearer`, or the subprotocols `nexus.v1` and `nexus.token.<token>`, answered with `nexus.v1`, or `?token=`, ' +
    'which logs keep; a session token lasts 6 h, a game may last longer): the game ' +
    'socket. The server sends `{"type":"welcome","seq","state","you","status"}` with the game\'s clock ' +
    '(`tick`, `tickRate`, `elapsedMs`, `running`); clients send `{"type":"action",…}`; ' +
    'everyone receives `{"type":"event","seq","tick","event"}` in one order; a refused frame gets ' +
    '`{"type":"error","code","message"}` (sender only). An action may carry `ref` (1 to 64 printable ' +
    'ASCII characters without spaces, or a whole number from 0 to 2^53 - 1), which the rules never see: its `error`, and its `event` as ' +
    "the sender's own sockets get it, carry it back. `?since=<seq>` instead sends " +
    '`{"type":"resumed","since","seq"}` with the clock and exactly the events after `since`, then live ones. At the end: ' +
    '`{"type":"ended","seq","result"}` and the socket closes. Frames: at most 8 KiB, 20/s (burst 40). ' +
    'A player holds at most 4 sockets: a 5th replaces the one heard from least lately, closed with 4001.\n\n' +
    'Without upgrade: the session for its players (session or player token, in the header only) and ' +
    'admins. Once a finished session is archived (its retention, 24 h by default, counted from when ' +
    'Neon has its result and whole log), the answer comes from Neon with ' +
    '`seq: null`. A player reads at most SESSION_READS_PER_MINUTE sessions a minute (default ' +
    '120; 429 with `Retry-After` past it, before the session is asked).',
  security: BEARER_OR_QUERY_TOKEN,
  request: {
    params: SessionParam,
    query: z.object({
      token: z
        .string()
        .max(4096)
        .optional()
        .openapi({
          description:
            'Socket only (browsers cannot set headers on sockets; the `nexus.token.<token>` ' +
            'subprotocol is preferred, as URLs are logged): a plain read with it is 401',
        }),
      since: z
        .string()
        .max(16)
        .optional()
        .openapi({
          type: 'integer',
          minimum: 0,
          description:
            "Socket only: resume after this seq, an integer from 0 to the session's current seq in " +
            'plain decimal digits (no sign, leading zero or exponent), at most 2,000 events behind ' +
            "it (read older events from `/events` first); anything else is 422. A player's resumes " +
            'send at most 8,000 missed events a minute in all: past that a resume is 429 with ' +
            '`Retry-After`. ' +
            'Without an upgrade it is not read (beyond being at most 16 characters)',
        }),
      conn: z
        .string()
        .max(64)
        .optional()
        .openapi({
          description:
            "Socket only: the client's name for this connection, 1 to 64 letters, digits, `_` or " +
            "`-` (else 422). The player's open sockets opened with the same `conn` are closed (4003) " +
            'before this one is answered, and nothing more they carry is applied: a client ' +
            'reconnecting with `since` and its `conn` finds each of its actions in the resumed ' +
            'events (with its `ref`) or knows it was never applied, and may send it again. ' +
            'Without an upgrade it is not read (beyond being at most 64 characters)',
        }),
    }),
  },
  responses: {
    101: { description: 'Switching to the game socket' },
    200: { description: 'The session', content: { 'application/json': { schema: SessionView } } },
    ...problemResponses(401, 403, 404, 409, 422, 429, 503),
  },
})

sessionRoutes.openapi(getRoute, (async (c: Context<AppEnv>) => {
  const { id } = c.req.param() as { id: string }
  if (c.req.header('upgrade')?.toLowerCase() === 'websocket') return connect(c, id)
  const viewer = await viewerOf(c, id)
  if (viewer.kind === 'player') {
    // Each read is a call on the thread that plays the match (a made-up id's, on an object made
    // up for it): a player looping on it, even on their own live game, would hold that game up.
    await enforceEdgeLimit(c, {
      name: 'session-reads',
      limit: boundedInt(c.env.SESSION_READS_PER_MINUTE, 120, 1, 100_000),
      key: () => viewer.playerId,
    })
  }
  const info = await sessionStub(c.env, id).info()
  // Past its object (its storage cleared, or never a session), a session is read from Neon: a
  // player's such reads count as their account's do, or made-up ids would query Neon without end.
  // So too an ended one's, which asks Neon whether the player was erased, and a live one's that
  // asks it (a token of an identity provider issued since the match: one renewed hourly, say).
  if (
    viewer.kind === 'player' &&
    (!info.ok ||
      info.status !== 'live' ||
      erasureCheckAsksNeon(viewer, info.madeAt ?? info.createdAt))
  ) {
    await countPlayerRead(c, viewer.playerId)
  }
  const { view, madeAt } = await sessionView(c, id, info, { withSetup: viewer.kind === 'admin' })
  await authorize(c, viewer, {
    ...view,
    ...(madeAt !== undefined ? { madeAt } : {}),
    ...(info.ok ? { erasedPlayers: info.erasedPlayers } : {}),
  })
  return c.json(view)
}) as never)

/**
 * A session as the API shows it: from its object while it holds the session, from Neon's archive
 * once its storage was cleared; 404 when neither has it. With it, the match's time its reads are
 * judged by (`madeAt`; none for a session cleared before it was kept).
 */
export async function sessionView(
  c: Context<AppEnv>,
  id: string,
  info: Awaited<ReturnType<SessionApi['info']>>,
  opts: { withSetup: boolean },
): Promise<{ view: z.infer<typeof SessionView>; madeAt?: number }> {
  if (info.ok) {
    const view: z.infer<typeof SessionView> = {
      sessionId: info.sessionId,
      rules: info.rules,
      status: info.status,
      roster: info.roster,
      queue: info.queue,
      seq: info.seq,
      createdAt: info.createdAt,
      endedAt: info.endedAt,
      result: info.result,
      ratingChanges: info.ratingChanges,
      ...(opts.withSetup ? { setup: info.setup, end: info.end } : {}),
    }
    return { view, madeAt: info.madeAt }
  }
  // An object that holds nothing: a session whose storage was cleared (Neon has it), or none.
  const archived = await loadArchivedSession(c.env, id)
  if (!archived) throw new ApiError('not-found', `No session '${id}'`)
  const view: z.infer<typeof SessionView> = {
    sessionId: archived.sessionId,
    rules: archived.rules,
    // A session's storage is cleared only after it ended.
    status: archived.status === 'live' ? 'live' : 'finished',
    roster: archived.roster,
    queue: archived.queue,
    seq: null,
    createdAt: archived.createdAt,
    endedAt: archived.endedAt,
    result: archived.result,
    ratingChanges: archived.ratingChanges,
    // Cleared: its object's storage goes only once every stage is done, but for a row Neon still
    // has as live (its end never reached Neon), which says nothing of where the end stands.
    ...(opts.withSetup
      ? {
          setup: archived.setup,
          end:
            archived.status === 'live'
              ? null
              : {
                  stage: 'done' as const,
                  archived: null,
                  attempts: 0,
                  nextAttemptAt: null,
                  lastError: null,
                  notSubmitted: archived.notSubmitted,
                },
        }
      : {}),
  }
  return { view, ...(archived.madeAt !== undefined ? { madeAt: archived.madeAt } : {}) }
}

const LogRecordSchema = z
  .object({
    seq: z.number().int(),
    // What came in (`kind`: action, tick, absent, …) and the game's clock then; the rest is the
    // kind's own (docs/rules.md).
    input: z.looseObject({
      kind: z.string(),
      tick: z.number().int(),
      ref: z.union([z.string(), z.number().int()]).optional().openapi({
        description: "An action's `ref`, as its sender gave it (their own actions only)",
      }),
    }),
    event: z.unknown(),
  })
  .openapi('SessionLogRecord')

const eventsRoute = createRoute({
  method: 'get',
  path: '/{id}/events',
  summary: "A session's event log, a page at a time",
  security: BEARER,
  description:
    'Log records `{seq, input, event}` from `from` (inclusive, default 1), at most `limit` (default ' +
    `100, at most ${MAX_EVENTS_PAGE}). Pass \`nextFrom\` back as \`from\` for the next page; null means ` +
    "the end of the log so far. Replaying the records from the start (an admin's copy, with the " +
    "setup's seed) reproduces the session's state. A player gets other players' inputs without " +
    'their `action` or `ref`, and under rules with hidden information (`rock-paper-scissors`) each event as ' +
    'they may see it; admins get the log whole. A player ' +
    'reads at most SESSION_EVENT_READS_PER_MINUTE pages a minute (default 120; 429 with ' +
    'Retry-After past it); the admin key is not limited.',
  request: {
    params: SessionParam,
    query: z.object({
      from: decimalInt(1, Number.MAX_SAFE_INTEGER)
        .default(1)
        .openapi({ default: 1, description: 'The first seq to return (inclusive)' }),
      limit: decimalInt(1, MAX_EVENTS_PAGE)
        .default(100)
        .openapi({ default: 100, description: 'Most records in the page' }),
    }),
  },
  responses: {
    200: {
      description: 'A page of the log',
      content: {
        'application/json': {
          schema: z.object({
            events: z.array(LogRecordSchema),
            nextFrom: z.number().int().nullable(),
          }),
        },
      },
    },
    ...problemResponses(401, 403, 404, 422, 429, 503),
  },
})

sessionRoutes.openapi(eventsRoute, (async (c: Context<AppEnv>) => {
  const { id } = c.req.param() as { id: string }
  const { from, limit } = (
    c.req as unknown as { valid(t: 'query'): { from: number; limit: number } }
  ).valid('query')
  const viewer = await viewerOf(c, id)
  if (viewer.kind === 'player') {
    // Each page reads up to MAX_EVENTS_PAGE records on the thread that plays the match (or two
    // Neon queries once archived): a player looping on it would hold up everyone's game.
    await enforceEdgeLimit(c, {
      name: 'session-events',
      limit: boundedInt(c.env.SESSION_EVENT_READS_PER_MINUTE, 120, 1, 100_000),
      key: () => viewer.playerId,
    })
  }
  const stub = sessionStub(c.env, id)
  const info = await stub.info()
  if (info.ok) {
    await authorize(c, viewer, info)
    const page = await stub.events(from, limit, viewer.kind === 'player' ? viewer.playerId : null)
    if (page.ok) return c.json({ events: page.events, nextFrom: page.nextFrom })
    // Cleared between the two calls: the log is in Neon by then.
  }
  // An object that holds nothing: a session whose storage was cleared (Neon has it), or none.
  const archived = await loadArchivedSession(c.env, id)
  if (!archived) throw new ApiError('not-found', `No session '${id}'`)
  await authorize(c, viewer, archived)
  const events = await loadArchivedEvents(c.env, id, from, limit + 1)
  const more = events.length > limit
  const page = events.slice(0, limit)
  if (viewer.kind === 'admin') {
    return c.json({ events: page, nextFrom: more ? page[page.length - 1]!.seq + 1 : null })
  }
  const rules = getRules(archived.rules)
  if (!rules) {
    // Rules this deployment no longer has (renamed, removed): what a player may see of their
    // events is theirs to say, so the player gets nothing rather than the whole log.
    throw new ApiError(
      'unavailable',
      `This session's rules ('${archived.rules}') are not in this deployment: its log can be ` +
        'read with the admin key',
    )
  }
  return c.json({
    events: page.map((r) => viewRecord(rules, r, viewer.playerId)),
    nextFrom: more ? page[page.length - 1]!.seq + 1 : null,
  })
}) as never)
