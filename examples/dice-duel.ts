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
import type { NexusClient } from '../client/src/index.ts'
import { runTwoPlayers } from './two-players.ts'

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
  // Whose turn the server last said, and the seq it said it at. A roll is sent once per turn; it
  // counts once the log moves on. One sent into a dropping socket may be lost: a reconnect whose
  // log has not moved since then shows that, and the roll is sent again.
  let turn: string | null = null
  let seq = 0
  let sentAt: number | null = null
  let rolls = 0
  const roll = () => {
    if (turn !== me || sentAt === seq || !game.connected) return
    sentAt = seq
    game.send({ action: 'roll' })
  }
  game.on('welcome', (w) => {
    // dice-race's state names whose turn it is by index into its players.
    const s = w.state as { turn: number; players: { playerId: string }[] }
    seq = w.seq
    turn = s.players[s.turn]?.playerId ?? null
    roll()
  })
  game.on('event', (ev) => {
    const e = ev.event as { kind?: string; player?: string; die?: number; next?: string | null }
    seq = ev.seq
    if (e.kind === 'roll') log(`${me}: ${e.player} rolled ${e.die}`)
    if (e.kind === 'roll' && e.player === me) rolls++
    // Only a change of turn calls for a roll: a `joined` event (a timed game's arrivals) leaves
    // the turn as it was, and a roll already sent for it stands.
    if (e.next === undefined) return
    turn = e.next
    roll()
  })
  // The missed events follow this frame and roll when it is our turn; with none missed, a roll
  // sent at this seq never reached the game, so it goes again.
  game.on('resumed', (r) => {
    if (r.seq === seq) sentAt = null
    roll()
  })
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

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runTwoPlayers({
    board: { id: 'duel-wins', name: 'Duel wins' },
    queue: { id: 'duel', rules: 'dice-race', rulesOptions: { target: 30, turnSeconds: 30 } },
    play: playDuel,
  })
}
