/**
 * The peer Nexus is compared with: a Colyseus server on 127.0.0.1, run as its own process like
 * `wrangler dev` is. Two room types mirror the Nexus benchmarks:
 * - `relay`: every message a client sends is broadcast to every client of the room, stamped with a
 *   room-wide sequence number (what a Nexus `relay` GameSession does, without the durable log);
 * - `duel`: Colyseus's own matchmaking fills rooms of `size` players in arrival order and tells
 *   every member when the room is full (what a MatchPool's `match_found` does, without ratings).
 *
 *   node bench/peers/colyseus-server.ts <port>
 */
import { Room, Server, type Client } from '@colyseus/core'
import { WebSocketTransport } from '@colyseus/ws-transport'

class RelayRoom extends Room {
  seq = 0
  onCreate() {
    this.maxClients = 64
    this.onMessage('action', (client: Client, data: unknown) => {
      this.broadcast('event', { seq: ++this.seq, from: client.sessionId, data })
    })
  }
}

class DuelRoom extends Room {
  onCreate(options: { size?: number }) {
    this.maxClients = options.size ?? 2
  }
  onJoin() {
    if (this.clients.length === this.maxClients) {
      void this.lock()
      this.broadcast('match_found', { roomId: this.roomId, players: this.clients.length })
    }
  }
}

const port = Number(process.argv[2] ?? 2567)
const server = new Server({
  transport: new WebSocketTransport(),
  logger: { info() {}, debug() {}, warn: console.warn, error: console.error },
})
server.define('relay', RelayRoom)
server.define('duel', DuelRoom)
await server.listen(port, '127.0.0.1')
console.log(`colyseus listening on ${port}`)
