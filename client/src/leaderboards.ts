import type { Schemas } from './api.gen.ts'
import { PlayerChanged, type Credential, type Ok, type QueryOf, type Transport } from './http.ts'
import { randomUUID } from './platform.ts'
import { NexusNetworkError, NexusProblem, withIdempotencyKey } from './problem.ts'
import { fresh, type ReadOptions } from './read-options.ts'

export type { ReadOptions } from './read-options.ts'

export type Entry = Schemas['Entry']
export type TopPage = Schemas['TopPage']
export type SubmitResult = Schemas['SubmitResult']
export type BoardInfo = Ok<'/v1/leaderboards/{id}', 'get'>
export type Standing = Ok<'/v1/leaderboards/{id}/players/{playerId}', 'get'>
export type AroundPage = Ok<'/v1/leaderboards/{id}/around/{playerId}', 'get'>
export type HistoryPage = Ok<'/v1/leaderboards/{id}/players/{playerId}/history', 'get'>
export type ArchivePage = Ok<'/v1/leaderboards/{id}/cycles/{cycle}/top', 'get'>
export type RewardsPage = Ok<'/v1/players/me/rewards', 'get'>

/** What a player submits; `playerId` is only for game servers using the admin key. */
export type Submission = Schemas['ScoreSubmission']

/**
 * How the keys `submit` draws begin: `s1.`, then when the key was drawn (this device's clock, ms
 * in base 36), so that a key handed back days later (an offline queue's) says how old it is.
 */
const DRAWN_KEY =
  /^s1\.([0-9a-z]{8,11})\.[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/
/** Keys were first drawn so on this day (2026-12-07): an earlier time is not one of them. */
const DRAWN_SINCE_MS = Date.UTC(2026, 11, 7)

/**
 * The longest after its first sending that `submit` sends a key it drew again. The server keeps a
 * key's answer for 24 hours; past that the same submission would be taken as new, counted twice on
 * an `incr` board. An hour is left for the device's clock to differ from the time it was sent.
 */
export const SUBMISSION_KEY_MAX_AGE_MS = 23 * 3_600_000

/**
 * A submission handed back with a key this client drew more than SUBMISSION_KEY_MAX_AGE_MS ago:
 * the server no longer remembers it, so sending it again could apply it twice. Nothing was sent.
 * Drop it, or, if the game knows it was never applied, submit it as new (without the key).
 */
export class SubmissionKeyTooOld extends Error {
  readonly idempotencyKey: string
  /** When the key was drawn, in epoch ms (this device's clock). */
  readonly drawnAt: number

  constructor(idempotencyKey: string, drawnAt: number) {
    super(
      `This submission's key was drawn ${Math.round((Date.now() - drawnAt) / 3_600_000)} h ago; ` +
        'the server keeps keys 24 h, so it may be applied twice if sent again',
    )
    this.name = 'SubmissionKeyTooOld'
    this.idempotencyKey = idempotencyKey
    this.drawnAt = drawnAt
  }
}

/**
 * Leaderboards: submit with automatic idempotency keys and retries; live reads (top, rank,
 * around) that may be up to 4 s stale; history from the archive.
 */
export class Leaderboards {
  private readonly t: Transport
  private readonly who: () => Credential

  constructor(transport: Transport, who: () => Credential) {
    this.t = transport
    this.who = who
  }

  /**
   * Submits a score. One idempotency key is drawn per call and reused by every retry, so a
   * submission that timed out but was applied is not applied twice (the answer then says
   * `replayed: true`). Pass the key of an error (`idempotencyKey`) to send it again across
   * restarts, within the 24 hours the server keeps it: a key drawn here more than 23 hours ago
   * rejects with `SubmissionKeyTooOld`, sending nothing. A key of your own is sent at any age.
   *
   * @example
   * const { rank, best } = await nexus.leaderboards.submit('daily', { score: 4200 })
   */
  submit(
    board: string,
    submission: Submission,
    opts: { idempotencyKey?: string } = {},
  ): Promise<SubmitResult> {
    const given = opts.idempotencyKey
    const drawn = given === undefined ? null : DRAWN_KEY.exec(given)
    if (given !== undefined && drawn) {
      const drawnAt = parseInt(drawn[1]!, 36)
      // A key of the game's own that happens to look like one (`s1.season.…`) dates nothing.
      if (drawnAt >= DRAWN_SINCE_MS && Date.now() - drawnAt > SUBMISSION_KEY_MAX_AGE_MS) {
        return Promise.reject(new SubmissionKeyTooOld(given, drawnAt))
      }
    }
    const key = given ?? `s1.${Date.now().toString(36)}.${randomUUID()}`
    return this.t
      .request('post', '/v1/leaderboards/{id}/scores', {
        path: { id: board },
        headers: { 'idempotency-key': key },
        body: submission,
        as: submission.playerId !== undefined ? { kind: 'admin' } : this.who(),
        retry: true,
      })
      .catch((err: unknown) => {
        // A submission whose answers were all lost may have been applied: sent again later with
        // this key it is answered, not applied twice (an `incr` board would count it twice).
        // The error may be shared (a token renewal that every waiting request rejects with), so
        // each submission throws its own, as the same class, with its own key.
        if (err instanceof NexusNetworkError || err instanceof NexusProblem) {
          throw withIdempotencyKey(err, key)
        }
        // The player signed out or switched during the retries: an attempt may have landed.
        if (err instanceof PlayerChanged) err.idempotencyKey = key
        throw err
      })
  }

  /** The board's configuration and current cycle. */
  info(board: string, opts: ReadOptions = {}): Promise<BoardInfo> {
    return this.t.request('get', '/v1/leaderboards/{id}', {
      path: { id: board },
      headers: fresh(opts),
      retry: true,
    })
  }

  /** A page of the current cycle, best first; pass `nextCursor` back as `cursor`. */
  top(
    board: string,
    query: QueryOf<'/v1/leaderboards/{id}/top', 'get'> = {},
    opts: ReadOptions = {},
  ): Promise<TopPage> {
    return this.t.request('get', '/v1/leaderboards/{id}/top', {
      path: { id: board },
      query,
      headers: fresh(opts),
      retry: true,
    })
  }

  /**
   * Every entry of the current cycle, page by page (stable under concurrent submits). A walk that
   * cannot go on (its cycle closed meanwhile, or it outlived the minutes of history the board
   * keeps for it) throws `NexusProblem` `conflict` (409) after the entries it has yielded: start
   * again for the board as it is now. Read it through at a steady pace.
   *
   * @example
   * for await (const e of nexus.leaderboards.entries('daily')) console.log(e.rank, e.name)
   */
  async *entries(board: string, pageSize = 100, opts: ReadOptions = {}): AsyncGenerator<Entry> {
    let cursor: string | undefined
    do {
      const page = await this.top(board, { limit: pageSize, ...(cursor ? { cursor } : {}) }, opts)
      yield* page.entries
      cursor = page.nextCursor ?? undefined
    } while (cursor)
  }

  /** A player's rank and score this cycle; `'me'` (the default) is the signed-in player. */
  rank(board: string, playerId = 'me', opts: ReadOptions = {}): Promise<Standing> {
    return this.t.request('get', '/v1/leaderboards/{id}/players/{playerId}', {
      path: { id: board, playerId },
      headers: fresh(opts),
      as: playerId === 'me' ? { kind: 'player' } : { kind: 'none' },
      retry: true,
    })
  }

  /** The entries around a player (`limit` in all, default 11), shifted at the board's edges. */
  around(
    board: string,
    playerId = 'me',
    query: QueryOf<'/v1/leaderboards/{id}/around/{playerId}', 'get'> = {},
    opts: ReadOptions = {},
  ): Promise<AroundPage> {
    return this.t.request('get', '/v1/leaderboards/{id}/around/{playerId}', {
      path: { id: board, playerId },
      query,
      headers: fresh(opts),
      as: playerId === 'me' ? { kind: 'player' } : { kind: 'none' },
      retry: true,
    })
  }

  /**
   * A player's results in closed cycles, newest first; pass `nextBefore` back as `before`. The
   * signed-in player's own (`me`) is read fresh; another player's may be a minute old (`fresh`
   * asks for it as it is now, within the server's limit of such reads).
   */
  history(
    board: string,
    playerId = 'me',
    query: QueryOf<'/v1/leaderboards/{id}/players/{playerId}/history', 'get'> = {},
    opts: ReadOptions = {},
  ): Promise<HistoryPage> {
    return this.t.request('get', '/v1/leaderboards/{id}/players/{playerId}/history', {
      path: { id: board, playerId },
      query,
      headers: fresh(opts),
      as: playerId === 'me' ? { kind: 'player' } : { kind: 'none' },
      retry: true,
    })
  }

  /**
   * A closed cycle's final standings from the archive (`complete` false while archiving). Until
   * the archive's first ranks reach Neon it is `not-found` (404): up to 2 minutes after a close by
   * the schedule (boards sharing a boundary spread their archives), moments after one by hand.
   */
  archive(
    board: string,
    cycle: number,
    query: QueryOf<'/v1/leaderboards/{id}/cycles/{cycle}/top', 'get'> = {},
  ): Promise<ArchivePage> {
    return this.t.request('get', '/v1/leaderboards/{id}/cycles/{cycle}/top', {
      path: { id: board, cycle },
      query,
      retry: true,
    })
  }

  /** The signed-in player's rewards, newest first. */
  rewards(query: QueryOf<'/v1/players/me/rewards', 'get'> = {}): Promise<RewardsPage> {
    return this.t.request('get', '/v1/players/me/rewards', {
      query,
      as: { kind: 'player' },
      retry: true,
    })
  }
}
