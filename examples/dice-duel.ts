/**
 * A game loop with @nexus/client: sign in as a guest, find a match, play dice-race over the
 * session socket (rolling whenever it is our turn, riding out reconnects), then show where we
 * stand on the leaderboard the game's session put the win on.
 *
 * Against a local Nexus (`npm run dev`), two players on this machine play each other:
 *
 *   npx node examples/dice-duel.ts [--url http://127.0.0.1:8787] [--admin-key dev-admin-key]
 *
 * With `--admin-key` the example first creates its board (`duel-wins`, which takes scores from
 * game sessions only) and its queue (`duel`, whose results go to that board); without it they
 * must already exist.
 */
import { fileURLToPath } from 'node:url'
import { ActionRefused, type NexusClient } from '../client/src/index.ts'
import { rankAfterGame, runTwoPlayers, winsBefore } from './two-players.ts'

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
  // What the board showed before, to tell when this game's win has come.
  const before = await winsBefore(nexus, opts.board)
  const ticket = nexus.matchmaking.join(opts.queue)
  ticket.on('queued', ({ ticketId }) => log(`${me}: queued as ${ticketId}`))
  ticket.on('transport', (t) => log(`${me}: matchmaking now over ${t}`))
  const match = await ticket.matched
  log(`${me}: matched in ${match.sessionId}`)

  const game = nexus.sessions.connect(match.sessionId, match.token)
  // Whose turn the server last said. A roll goes once per turn, through `act()`: applied once
  // even if the connection drops as it is sent (the SDK sends it again after the reconnect only
  // if the game never had it).
  let turn: string | null = null
  let rolling = false
  let rolls = 0
  const roll = () => {
    if (turn !== me || rolling) return
    rolling = true
    game.act({ action: 'roll' }).then(
      () => {
        rolling = false
        // Its event has already moved the turn on (to us again, in a game of one).
        roll()
      },
      (err: unknown) => {
        rolling = false
        // Turns that ran out while the game was away are still being played: roll again soon.
        if (err instanceof ActionRefused && err.code === 'catching_up') setTimeout(roll, 1000)
        else if (err instanceof ActionRefused) log(`${me}: roll refused (${err.code})`)
      },
    )
  }
  game.on('welcome', (w) => {
    // dice-race's state names whose turn it is by index into its players.
    const s = w.state as { turn: number; players: { playerId: string }[] }
    turn = s.players[s.turn]?.playerId ?? null
    roll()
  })
  game.on('event', (ev) => {
    const e = ev.event as { kind?: string; player?: string; die?: number; next?: string | null }
    if (e.kind === 'roll') log(`${me}: ${e.player} rolled ${e.die}`)
    if (e.kind === 'roll' && e.player === me) rolls++
    // Only a change of turn calls for a roll: a `joined` event (a timed game's arrivals) leaves
    // the turn as it was, and a roll already sent for it stands.
    if (e.next === undefined) return
    turn = e.next
    roll()
  })
  game.on('reconnecting', ({ attempt }) => log(`${me}: reconnecting (attempt ${attempt})`))
  const result = await game.ended
  const won = result.winner === me

  // The board counts wins (an `incr` board the queue names): the session puts a win there, not
  // the player, who could otherwise post wins without playing.
  const rank = await rankAfterGame(nexus, opts.board, won, before)
  log(`${me}: ${won ? 'won' : 'lost'} after ${rolls} rolls; rank ${rank ?? '-'}`)
  return { playerId: me, won, rolls, rank }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runTwoPlayers({
    board: { id: 'duel-wins', name: 'Duel wins' },
    queue: { id: 'duel', rules: 'dice-race', rulesOptions: { target: 30, turnSeconds: 30 } },
    play: playDuel,
  })
}
