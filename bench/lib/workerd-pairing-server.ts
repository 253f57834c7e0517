/**
 * The runtime's floor for matchmaking: a pool object that pairs sockets in arrival order and
 * nothing else (no token, no rating, no ticket records, no claims, no signed session tokens).
 * Served by Miniflare with the same workerd and flags as the Nexus server
 * (bench/lib/miniflare-server.ts), as its own process, so the matchmaking benchmark can tell
 * Nexus's own cost from the runtime's.
 *
 *   node bench/lib/workerd-pairing-server.ts <port>
 *
 * Sockets connect to `/pair/<pool>` or `/pair-with-rooms/<pool>`; `{"type":"join"}` waits for the
 * next join on the same pool, and both get `{"type":"match_found"}`. Under `/pair-with-rooms/`
 * each pair first gets a new Room object, which keeps its roster in SQLite and answers, as a
 * GameSession must at least do before its players are told where to go: the floor of a match
 * that makes a session object. `{"type":"ping"}` is answered by the runtime itself, as on Nexus.
 */
import { serveFloor } from './serve-floor.ts'

const port = Number(process.argv[2])

const script = `
import { DurableObject } from 'cloudflare:workers'

export class Pairer extends DurableObject {
  waiting = null

  constructor(ctx, env) {
    super(ctx, env)
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair('{"type":"ping"}', '{"type":"pong"}'))
  }

  async fetch(request) {
    const rooms = new URL(request.url).pathname.startsWith('/pair-with-rooms/')
    const [client, server] = Object.values(new WebSocketPair())
    this.ctx.acceptWebSocket(server)
    server.serializeAttachment({ rooms })
    return new Response(null, { status: 101, webSocket: client })
  }

  async webSocketMessage(ws, message) {
    if (JSON.parse(message).type !== 'join') return
    if (this.waiting === null || this.waiting === ws) {
      this.waiting = ws
      return
    }
    const pair = [this.waiting, ws]
    this.waiting = null
    let sessionId = null
    if (ws.deserializeAttachment().rooms) {
      sessionId = crypto.randomUUID()
      await this.env.ROOM.getByName(sessionId).create(2)
    }
    const frame = JSON.stringify({ type: 'match_found', sessionId })
    for (const s of pair) s.send(frame)
  }

  webSocketClose(ws) {
    if (this.waiting === ws) this.waiting = null
    try {
      ws.close()
    } catch {}
  }
}

export class Room extends DurableObject {
  create(players) {
    this.ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS setup (players INTEGER NOT NULL)')
    this.ctx.storage.sql.exec('INSERT INTO setup (players) VALUES (?)', players)
    return true
  }
}

export default {
  fetch(request, env) {
    const pool = new URL(request.url).pathname.split('/').pop()
    return env.PAIRER.getByName(pool).fetch(request)
  },
}
`

await serveFloor('pairing', port, script, { PAIRER: 'Pairer', ROOM: 'Room' })
