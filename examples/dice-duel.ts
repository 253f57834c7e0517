/**
 * A game loop with @nexus/client: sign in as a guest, find a match, play dice-race over the
 * session socket (rolling whenever it is our turn, riding out reconnects), then post the result
 * to a leaderboard and show where we stand.
 *
 * Against a local Nexus (`npm run dev`), two players on this machine play each other:
 *
 *   npx node examples/dice-duel.ts [--url http://127.0.0.1:8787] [--admin-key dev-admin-key]
 *
 * With `--admin-key` the example first creates its queue (`duel`) and board (`duel-wins`);
 * without it they must already exist.
 */
import { fileURLToPath } from 'node:url'
import { createClient, type NexusClient } from '../client/src/index.ts'

export interface DuelResult {
  playerId: string
  won: boolean
  rolls: number
  rank: number | null
}

/**
 * One player's whole game: queue, play, record. Returns when the game has ended.
 *
 * @example
 * const nexus = createClient({ baseUrl })
 * await nexus.auth.guest()
 * const r = await playDuel(nexus, { queue: 'duel', board: 'duel-wins' })
 */
export async function playDuel(
  nexus: NexusClient,
  opts: { queue: string; board: string; log?: (line: string) => void },
): Promise<DuelResult> {
  const log = opts.log ?? (() => {})
  const me = nexus.auth.playerId!
  const ticket = nexus.matchmaking.join(opts.queue)
  ticket.on('queued', ({ ticketId }) => log(`${me}: queued as ${ticketId}`))
  ticket.on('transport', (t) => log(`${me}: matchmaking now over ${t}`))
  const match = await ticket.matched
  log(`${me}: matched in ${match.sessionId}`)

  const game = nexus.sessions.connect(match.sessionId, match.token)
  let myTurn = false
  let rolls = 0
  const roll = () => {
    if (!myTurn || !game.connected) return
    myTurn = false
    rolls++
    game.send({ action: 'roll' })
  }
  game.on('welcome', ({ state }) => {
    // dice-race's state names whose turn it is by index into its players.
    const s = state as { turn: number; players: { playerId: string }[] }
    myTurn = s.players[s.turn]?.playerId === me
    roll()
  })
  game.on('event', ({ event }) => {
    const e = event as { kind?: string; player?: string; die?: number; next?: string | null }
    if (e.kind === 'roll') log(`${me}: ${e.player} rolled ${e.die}`)
    if (e.next !== undefined) myTurn = e.next === me
    roll()
  })
  // After a reconnect, whose turn it is came with the missed events; roll if it is ours.
  game.on('resumed', () => roll())
  game.on('reconnecting', ({ attempt }) => log(`${me}: reconnecting (attempt ${attempt})`))
  game.on('refused', ({ code }) => log(`${me}: refused (${code})`))
  const result = await game.ended
  const won = result.winner === me

  // The board counts wins: an `incr` board, one point per win.
  if (won) await nexus.leaderboards.submit(opts.board, { score: 1 })
  const standing = await nexus.leaderboards.rank(opts.board, 'me', { fresh: true })
  log(`${me}: ${won ? 'won' : 'lost'} after ${rolls} rolls; rank ${standing.entry?.rank ?? '-'}`)
  return { playerId: me, won, rolls, rank: standing.entry?.rank ?? null }
}

async function main(): Promise<void> {
  const arg = (name: string) => {
    const i = process.argv.indexOf(`--${name}`)
    return i > 0 ? process.argv[i + 1] : undefined
  }
  const baseUrl = arg('url') ?? 'http://127.0.0.1:8787'
  const adminKey = arg('admin-key')
  const queue = 'duel'
  const board = 'duel-wins'
  if (adminKey) {
    const put = async (path: string, body: unknown) => {
      const res = await fetch(baseUrl + path, {
        method: 'PUT',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      })
      if (!res.ok) throw new Error(`PUT ${path}: ${res.status} ${await res.text()}`)
    }
    await put(`/v1/admin/leaderboards/${board}`, { operator: 'incr', name: 'Duel wins' })
    await put(`/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 1,
      rules: 'dice-race',
      rulesOptions: { target: 30 },
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
    players.map((nexus) => playDuel(nexus, { queue, board, log: (l) => console.log(l) })),
  )
  const top = await players[0]!.leaderboards.top(board, { limit: 5 }, { fresh: true })
  console.log('top:', top.entries.map((e) => `#${e.rank} ${e.playerId} ${e.score}`).join(', '))
  console.log(JSON.stringify(results))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main()
