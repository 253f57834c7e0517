/**
 * What both example games do around their game loop when run from the command line: with
 * `--admin-key`, create the board and the queue (PUTs are idempotent, so running again is fine);
 * sign two guests in; let both play; print the board's top and the results.
 *
 *   npx node examples/<game>.ts [--url http://127.0.0.1:8787] [--admin-key dev-admin-key]
 */
import { createClient, type NexusClient } from '../client/src/index.ts'

export interface TwoPlayerGame<R> {
  board: { id: string; name: string }
  queue: { id: string; rules: string; rulesOptions: Record<string, unknown> }
  /** One player's whole game, as the example exports it. */
  play(
    nexus: NexusClient,
    opts: { queue: string; board: string; log: (line: string) => void },
  ): Promise<R>
}

export async function runTwoPlayers<R>(game: TwoPlayerGame<R>): Promise<void> {
  const arg = (name: string) => {
    const i = process.argv.indexOf(`--${name}`)
    return i > 0 ? process.argv[i + 1] : undefined
  }
  const baseUrl = arg('url') ?? 'http://127.0.0.1:8787'
  const adminKey = arg('admin-key')
  const queue = game.queue.id
  const board = game.board.id
  if (adminKey) {
    const put = async (path: string, body: unknown) => {
      const res = await fetch(baseUrl + path, {
        method: 'PUT',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      if (!res.ok) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`)
    }
    // The game sessions put the wins on the board; players may not post their own.
    await put(`/v1/admin/leaderboards/${board}`, {
      operator: 'incr',
      name: game.board.name,
      serverScoresOnly: true,
    })
    await put(`/v1/admin/queues/${queue}`, {
      leaderboardId: board,
      teams: 2,
      teamSize: 1,
      rules: game.queue.rules,
      rulesOptions: game.queue.rulesOptions,
      maxRatingGap: 200,
      widenPerSecond: 50,
      regions: ['eu'],
    })
  }
  const players = await Promise.all(
    [1, 2].map(async () => {
      const nexus = createClient({ baseUrl })
      await nexus.auth.guest()
      return nexus
    }),
  )
  const results = await Promise.all(
    players.map((nexus) => game.play(nexus, { queue, board, log: (l) => console.log(l) })),
  )
  const top = await players[0]!.leaderboards.top(board, { limit: 5 }, { fresh: true })
  console.log('top:', top.entries.map((e) => `#${e.rank} ${e.playerId} ${e.score}`).join(', '))
  console.log(JSON.stringify(results))
}

/** The player's wins on `board` (an `incr` board of wins) before a game: 0 without an entry. */
export async function winsBefore(nexus: NexusClient, board: string): Promise<number> {
  const standing = await nexus.leaderboards.rank(board, 'me', { fresh: true })
  return standing.entry?.score ?? 0
}

/**
 * The player's rank on `board` once their game has ended: the game's session puts a winner's
 * win there itself (the queue's `leaderboardId`), a moment after the end, so a winner reads
 * until it shows, their wins past `before` (for up to 30 s); a loser has nothing to wait for.
 */
export async function rankAfterGame(
  nexus: NexusClient,
  board: string,
  won: boolean,
  before: number,
): Promise<number | null> {
  const giveUpAt = Date.now() + 30_000
  for (;;) {
    const standing = await nexus.leaderboards.rank(board, 'me', { fresh: true })
    const counted = (standing.entry?.score ?? 0) > before
    if (counted || !won || Date.now() >= giveUpAt) return standing.entry?.rank ?? null
    await new Promise((resolve) => setTimeout(resolve, 250))
  }
}
