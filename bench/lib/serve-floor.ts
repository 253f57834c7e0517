/**
 * The child side of a workerd floor (bench/lib/workerd-floor.ts starts it): serves one Worker
 * script with Miniflare on a loopback port, with the runtime settings of the Nexus benchmark
 * server, and prints that it is listening.
 */
import { convertV4MiniflareOptions, Miniflare } from 'miniflare'

/** The Nexus benchmark server's runtime settings (bench/lib/miniflare-server.ts), for the floors too. */
export const WORKERD_SETTINGS = {
  compatibilityDate: '2026-11-01',
  compatibilityFlags: ['nodejs_compat', 'no_web_socket_compression'],
}

/** Serves `script` (an ES module) on `port` with SQLite-backed Durable Objects, binding → class. */
export async function serveFloor(
  name: string,
  port: number,
  script: string,
  durableObjects: Record<string, string>,
): Promise<void> {
  const mf = new Miniflare(
    convertV4MiniflareOptions({
      host: '127.0.0.1',
      port,
      workers: [
        {
          name,
          modules: true,
          script,
          ...WORKERD_SETTINGS,
          durableObjects: Object.fromEntries(
            Object.entries(durableObjects).map(([binding, className]) => [
              binding,
              { className, useSQLite: true },
            ]),
          ),
        },
      ],
    }),
  )
  await mf.ready
  console.log(`workerd ${name} listening on ${port}`)
  const stop = () => void mf.dispose().then(() => process.exit(0))
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}
