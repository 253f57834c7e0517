/**
 * The runtime's floor for a session's fan-out: a Durable Object that does only what the workload
 * needs of the platform. It accepts sockets through the hibernation API, numbers each frame and
 * sends it to every socket: no token, no validation, no rate limit, no log, no metrics. Served by
 * Miniflare with the same workerd and flags as the Nexus server (bench/lib/miniflare-server.ts),
 * as its own process, so the sessions benchmark can tell Nexus's own cost from the runtime's.
 *
 *   node bench/lib/workerd-relay-server.ts <port>
 *
 * A socket connects to `/<any name>`; sockets on the same name share one object. Under `/log/…`
 * the object also appends each event to a SQLite table before sending it, as a GameSession
 * appends to its log: the runtime's floor for a durable event log. Frames are the
 * Nexus client's: `{"type":"action","action":"message","data":…}` in, `{"type":"event","seq":n,
 * "event":{"kind":"message","from":"","data":…}}` out to everyone.
 */
import { serveFloor } from './serve-floor.ts'

const port = Number(process.argv[2])

const script = `
import { DurableObject } from 'cloudflare:workers'

export class Relay extends DurableObject {
  seq = 0
  sockets = null
  logged = false

  async fetch(request) {
    if (new URL(request.url).pathname.startsWith('/log/') && !this.logged) {
      this.ctx.storage.sql.exec('CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, record TEXT NOT NULL)')
      this.logged = true
    }
    const [client, server] = Object.values(new WebSocketPair())
    this.ctx.acceptWebSocket(server)
    this.sockets?.add(server)
    return new Response(null, { status: 101, webSocket: client })
  }

  webSocketMessage(ws, message) {
    const action = JSON.parse(message)
    const seq = ++this.seq
    const event = { kind: 'message', from: '', data: action.data }
    if (this.logged) {
      this.ctx.storage.sql.exec('INSERT INTO log (seq, record) VALUES (?, ?)', seq, JSON.stringify({ seq, event }))
    }
    const frame = JSON.stringify({ type: 'event', seq, event })
    this.sockets ??= new Set(this.ctx.getWebSockets())
    for (const s of this.sockets) s.send(frame)
  }

  webSocketClose(ws) {
    this.sockets?.delete(ws)
    try {
      ws.close()
    } catch {}
  }
}

export default {
  fetch(request, env) {
    return env.RELAY.getByName(new URL(request.url).pathname).fetch(request)
  },
}
`

await serveFloor('relay', port, script, { RELAY: 'Relay' })
