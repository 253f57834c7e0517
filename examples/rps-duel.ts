/**
 * A game of hidden moves with @nexus/client: sign in as a guest, find a match, play
 * rock-paper-scissors over the session socket (one move a round, riding out reconnects), then
 * show where we stand on the leaderboard the game's session put the win on.
 *
 * The opponent's move of a round stays hidden until both have chosen: what a player gets of it
 * before then is a `chosen` event without `move` (and, in a welcome, `chosen: true`). The result
 * keeps what this player saw, so it can be checked that nothing more arrived.
 *
 * Against a local Nexus (`npm run dev`), two players on this machine play each other:
 *
 *   npx node examples/rps-duel.ts [--url http://127.0.0.1:8787] [--admin-key dev-admin-key]
 *
 * With `--admin-key` the example first creates its board (`rps-wins`, which takes scores from
 * game sessions only) and its queue (`rps`, whose results go to that board); without it they
 * must already exist.
 */
import { fileURLToPath } from 'node:url'
import { ActionRefused, type NexusClient } from '../client/src/index.ts'
import { rankAfterGame, runTwoPlayers, winsBefore } from './two-players.ts'

export const MOVES = ['rock', 'paper', 'scissors'] as const
export type Move = (typeof MOVES)[number]

/** One round as its `round` event revealed it. */
export interface RpsRound {
  round: number
  /** Player id → move; null for a player who timed out. */
  moves: Record<string, Move | null>
  /** The round's winner; null for a draw. */
  winner: string | null
}

export interface RpsResult {
  playerId: string
  won: boolean
  /** Every round played, draws included, in order. */
  rounds: RpsRound[]
  /**
   * What this player saw of the opponent's move before its round resolved: the opponent's
   * `chosen` events exactly as they arrived (the rules strip their `move`), and the opponent as
   * each welcome's state showed them (`move` null, `chosen` true once they chose).
   */
  sawOpponent: { chosen: Record<string, unknown>[]; welcome: Record<string, unknown>[] }
  /** This player's own `chosen` events as they arrived: these keep their `move`. */
  ownChosen: Record<string, unknown>[]
  rank: number | null
}

/**
 * The move for a round: a hash of the seed and the round, so it is the same however often it is
 * asked for (a move sent again after a reconnect is the same move). Two seeds draw a round a third
 * of the time, so a match ends after a few rounds.
 */
export function moveFor(seed: number, round: number): Move {
  let h = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) + Math.imul(round, 0xc2b2ae35)) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0
  return MOVES[((h ^ (h >>> 16)) >>> 0) % 3]!
}

/** A seed from a string (FNV-1a): a player's default seed comes from their id. */
function seedOf(text: string): number {
  let h = 0x811c9dc5
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193)
  return h >>> 0
}

/**
 * One player's whole game: queue, play, record. Returns when the game has ended.
 *
 * @example
 * const nexus = createClient({ baseUrl })
 * await nexus.auth.guest()
 * const r = await playRps(nexus, { queue: 'rps', board: 'rps-wins' })
 */
export async function playRps(
  nexus: NexusClient,
  opts: { queue: string; board: string; seed?: number; log?: (line: string) => void },
): Promise<RpsResult> {
  const log = opts.log ?? (() => {})
  const me = nexus.auth.playerId!
  const seed = opts.seed ?? seedOf(me)
  // What the board showed before, to tell when this game's win has come.
  const before = await winsBefore(nexus, opts.board)
  const ticket = nexus.matchmaking.join(opts.queue)
  ticket.on('queued', ({ ticketId }) => log(`${me}: queued as ${ticketId}`))
  ticket.on('transport', (t) => log(`${me}: matchmaking now over ${t}`))
  const match = await ticket.matched
  log(`${me}: matched in ${match.sessionId}`)

  const rounds: RpsRound[] = []
  const sawOpponent: RpsResult['sawOpponent'] = { chosen: [], welcome: [] }
  const ownChosen: Record<string, unknown>[] = []

  const game = nexus.sessions.connect(match.sessionId, match.token)
  // The round in play as the server last said (null once over), the round whose move the log
  // shows as ours, and the round whose move is on its way. A move goes once per round, through
  // `act()`: applied once even if the connection drops as it is sent (the SDK sends it again
  // after the reconnect only if the game never had it).
  let inPlay: number | null = null
  let counted = 0
  let playing: number | null = null
  const play = () => {
    if (inPlay === null || counted === inPlay || playing !== null) return
    const round = inPlay
    playing = round
    const move = moveFor(seed, round)
    log(`${me}: round ${round}: playing ${move}`)
    // Naming the round: a move that arrives after its deadline is refused, not moved on to the
    // next round.
    game.act({ move, round }).then(
      () => {
        playing = null
        play()
      },
      (err: unknown) => {
        playing = null
        if (!(err instanceof ActionRefused)) return
        log(`${me}: round ${round}: refused (${err.code})`)
        // Turns that ran out while the game was away are still being played: again soon. Any
        // other refusal (`too_late`: the round's end came first) waits for the next event.
        if (err.code === 'catching_up') setTimeout(play, 1000)
      },
    )
  }
  game.on('welcome', (w) => {
    // The state as this player may see it: the opponent's pending move is only `chosen: true`.
    const s = w.state as {
      played: number
      ended: string | null
      players: { playerId: string; chosen: boolean; move: Move | null }[]
    }
    inPlay = s.ended === null ? s.played + 1 : null
    for (const p of s.players) {
      if (p.playerId !== me) sawOpponent.welcome.push({ ...p })
      // A fresh join after our move of this round (another device, say): it stands.
      else if (p.move !== null && inPlay !== null) counted = inPlay
    }
    play()
  })
  game.on('event', (ev) => {
    const e = ev.event as { kind?: string; player?: string; round?: number }
    if (e.kind === 'joined') {
      const j = ev.event as { player: string; endsAt: number | null }
      log(`${me}: ${j.player} joined${j.endsAt !== null ? '; the round clock started' : ''}`)
    } else if (e.kind === 'chosen' && e.player === me) {
      ownChosen.push({ ...e })
      counted = e.round!
      log(`${me}: round ${e.round}: our move is in`)
    } else if (e.kind === 'chosen') {
      // All this player learns before the round resolves: that the opponent chose, not what.
      sawOpponent.chosen.push({ ...e })
      log(`${me}: round ${e.round}: ${e.player} has chosen`)
    } else if (e.kind === 'round') {
      const r = ev.event as RpsRound & { ended: string | null }
      rounds.push({ round: r.round, moves: { ...r.moves }, winner: r.winner })
      if (r.moves[me] != null) counted = r.round
      const shown = Object.entries(r.moves).map(([id, m]) => `${id} ${m ?? '(timed out)'}`)
      log(`${me}: round ${r.round}: ${shown.join(' vs ')}; ${r.winner ?? 'draw'}`)
      inPlay = r.ended === null ? r.round + 1 : null
    } else if (e.kind === 'forfeit' || e.kind === 'abandoned') {
      inPlay = null
    }
    play()
  })
  game.on('reconnecting', ({ attempt }) => log(`${me}: reconnecting (attempt ${attempt})`))
  const result = await game.ended
  const won = result.winner === me

  // The board counts wins (an `incr` board the queue names): the session puts a win there, not
  // the player, who could otherwise post wins without playing.
  const rank = await rankAfterGame(nexus, opts.board, won, before)
  log(`${me}: ${won ? 'won' : 'lost'} after ${rounds.length} rounds; rank ${rank ?? '-'}`)
  return {
    playerId: me,
    won,
    rounds,
    sawOpponent,
    ownChosen,
    rank,
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await runTwoPlayers({
    board: { id: 'rps-wins', name: 'RPS wins' },
    queue: {
      id: 'rps',
      rules: 'rock-paper-scissors',
      rulesOptions: { rounds: 3, roundSeconds: 30 },
    },
    play: playRps,
  })
}
