/**
 * Serves the bundled Worker with Miniflare directly (no `wrangler dev` proxy in front), as its
 * own process, for benchmarks: every request and WebSocket frame then crosses one workerd, as
 * on Cloudflare, instead of two. Durable Object storage is Miniflare's default (temporary).
 *
 *   node bench/lib/miniflare-server.ts '{"port":8788,"modulesRoot":"/tmp/x","vars":{…}}'
 */
import { convertV4MiniflareOptions, Miniflare } from 'miniflare'

const { port, modulesRoot, vars } = JSON.parse(process.argv[2] ?? '{}') as {
  port: number
  modulesRoot: string
  vars: Record<string, string>
}
const sqlite = (className: string) => ({ className, useSQLite: true })
const mf = new Miniflare(
  convertV4MiniflareOptions({
    host: '127.0.0.1',
    port,
    workers: [
      {
        name: 'nexus',
        modules: true,
        scriptPath: `${modulesRoot}/index.js`,
        modulesRoot,
        compatibilityDate: '2026-11-01',
        compatibilityFlags: ['nodejs_compat'],
        durableObjects: {
          LEADERBOARD: sqlite('Leaderboard'),
          MATCH_POOL: sqlite('MatchPool'),
          GAME_SESSION: sqlite('GameSession'),
        },
        bindings: vars,
      },
    ],
  }),
)
await mf.ready
console.log(`miniflare listening on ${port}`)
const stop = () => void mf.dispose().then(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
