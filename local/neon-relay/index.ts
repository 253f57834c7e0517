import { createServer } from 'node:http'
import { closeServer, listen, sendJson } from '../http.ts'
import { SqlOverHttp } from './sql-over-http.ts'
import { WsTunnels } from './ws-tunnel.ts'

export { checkAddress } from './ws-tunnel.ts'

export interface StartNeonRelayOptions {
  /** Port of the local Postgres: the only server the relay ever connects to. */
  postgresPort: number
  /** Defaults to 127.0.0.1. */
  postgresHost?: string
  /** Defaults to a free port on 127.0.0.1. */
  port?: number
}

export interface NeonRelay {
  port: number
  /** `http://127.0.0.1:<port>` */
  url: string
  /** `127.0.0.1:<port>`, the form `neonConfig.wsProxy` wants (no scheme). */
  address: string
  /** WebSocket tunnels currently open (for leak checks). */
  openTunnels(): number
  close(): Promise<void>
}

/** The subset of the driver's `neonConfig` that routes it through a local relay. */
export interface NeonLocalSettings {
  wsProxy: (host: string, port: number | string) => string
  fetchEndpoint: (host: string, port: number | string) => string
  useSecureWebSocket: boolean
  pipelineTLS: boolean
  pipelineConnect: 'password' | false
}

/**
 * The `neonConfig` settings that send the Neon driver to a local relay. `pipelineConnect:
 * 'password'` works because the local Postgres uses `password` auth, as Neon does.
 *
 * @example
 * Object.assign(neonConfig, neonLocalSettings(relay.address))
 * neonConfig.webSocketConstructor = WebSocket // from 'ws', in Node
 */
export function neonLocalSettings(address: string): NeonLocalSettings {
  return {
    wsProxy: (host, port) => `${address}/v1?address=${host}:${port}`,
    fetchEndpoint: () => `http://${address}/sql`,
    useSecureWebSocket: false,
    pipelineTLS: false,
    pipelineConnect: 'password',
  }
}

/**
 * Starts one HTTP server on 127.0.0.1 that lets the real `@neondatabase/serverless` driver reach a
 * local Postgres:
 * - WebSocket upgrades on `/v1?address=host:port` are piped to Postgres as a byte stream
 *   (Pool/Client). Only the configured Postgres is dialled; another port is refused (403).
 * - `POST /sql` implements Neon's SQL-over-HTTP API (`neon()`, drizzle's neon-http).
 *
 * @example
 * const relay = await startNeonRelay({ postgresPort: pgServer.port })
 * neonConfig.wsProxy = (host, port) => `${relay.address}/v1?address=${host}:${port}`
 * neonConfig.useSecureWebSocket = false
 * neonConfig.fetchEndpoint = () => `${relay.url}/sql`
 */
export async function startNeonRelay(opts: StartNeonRelayOptions): Promise<NeonRelay> {
  const target = { host: opts.postgresHost ?? '127.0.0.1', port: opts.postgresPort }
  const tunnels = new WsTunnels(target)
  const sql = new SqlOverHttp(target)

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname
    if (path !== '/sql') {
      req.resume()
      sendJson(res, 404, { message: `unknown path ${path}` })
      return
    }
    if (req.method !== 'POST') {
      req.resume()
      sendJson(res, 405, { message: 'only POST is supported' })
      return
    }
    sql.handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { message: String(error) })
      else res.destroy()
    })
  })
  server.on('upgrade', (req, socket, head) => tunnels.handleUpgrade(req, socket, head))
  server.keepAliveTimeout = 5_000

  let port: number
  try {
    port = await listen(server, opts.port)
  } catch (error) {
    await sql.close()
    throw error
  }
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    address: `127.0.0.1:${port}`,
    openTunnels: () => tunnels.size,
    async close() {
      tunnels.closeAll()
      await closeServer(server)
      await sql.close()
    },
  }
}
