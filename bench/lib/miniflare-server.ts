/**
 * Serves the bundled Worker with Miniflare directly (no `wrangler dev` proxy in front), as its
 * own process, for benchmarks: every request and WebSocket frame then crosses one workerd, as
 * on Cloudflare, instead of two. Durable Object storage is Miniflare's default (temporary).
 *
 *   node bench/lib/miniflare-server.ts '{"port":8788,"modulesRoot":"/tmp/x","vars":{…}}'
 */
import { writeFileSync } from 'node:fs'
import { convertV4MiniflareOptions, Miniflare } from 'miniflare'
import WebSocket from 'ws'
import { WORKERD_SETTINGS } from './serve-floor.ts'

const { port, modulesRoot, vars, profile, profileWindows } = JSON.parse(
  process.argv[2] ?? '{}',
) as {
  port: number
  modulesRoot: string
  vars: Record<string, string>
  /** Where to write a CPU profile of the Worker's isolate (NEXUS_BENCH_PROFILE), if anywhere. */
  profile?: string
  /**
   * Profile only between the parent's `profile-start` and `profile-stop` (a benchmark's measured
   * windows), one file per window: `<profile>.1`, `<profile>.2`, …
   */
  profileWindows?: boolean
}
const inspectorPort = profile ? port + 1 : undefined
const sqlite = (className: string) => ({ className, useSQLite: true })
const options = convertV4MiniflareOptions({
  host: '127.0.0.1',
  port,
  ...(inspectorPort ? { inspectorPort } : {}),
  workers: [
    {
      name: 'nexus',
      modules: true,
      scriptPath: `${modulesRoot}/index.js`,
      modulesRoot,
      ...WORKERD_SETTINGS,
      durableObjects: {
        LEADERBOARD: sqlite('Leaderboard'),
        MATCH_POOL: sqlite('MatchPool'),
        GAME_SESSION: sqlite('GameSession'),
        METRICS_HUB: sqlite('MetricsHub'),
      },
      bindings: vars,
    },
  ],
})
const mf = new Miniflare(options)
await mf.ready
const profiler = inspectorPort ? await startProfiler(inspectorPort, !profileWindows) : null
console.log(`miniflare listening on ${port}`)
const stop = () =>
  void (profiler ? profiler.stop() : Promise.resolve())
    .catch((err: unknown) => console.error('profile failed', err))
    .then(() => mf.dispose())
    .then(() => process.exit(0))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
// Miniflare's own exit hook answers SIGTERM first, so the parent asks for a clean stop (the
// profile written) on stdin.
process.stdin.on('data', (d) => {
  if (String(d).includes('profile-start')) {
    void profiler?.start().then(() => console.log('profile-started'))
  } else if (String(d).includes('profile-stop')) {
    void profiler?.stop().then(() => console.log('profile-stopped'))
  } else if (String(d).includes('stop')) stop()
  // A new workerd over the same (temporary) storage: every Durable Object wakes from SQLite on its
  // next request, as after an eviction or a deploy.
  if (String(d).includes('restart')) {
    void mf
      .setOptions(options)
      .then(() => console.log('restarted'))
      .catch((err: unknown) => console.error('restart failed', err))
  }
})

/**
 * Samples the Worker's isolate (its Durable Objects included) through workerd's inspector, for
 * finding where a benchmark's time goes; `chrome://inspect` or `bench/lib/profile-summary.ts`
 * reads the result.
 */
async function startProfiler(
  port: number,
  now: boolean,
): Promise<{ start(): Promise<void>; stop(): Promise<void> }> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as {
    title: string
    webSocketDebuggerUrl: string
  }[]
  const target = targets.find((t) => t.title.includes('nexus')) ?? targets[0]
  if (!target) throw new Error('no inspector target')
  const ws = new WebSocket(target.webSocketDebuggerUrl)
  await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
  let nextId = 1
  const pending = new Map<number, (result: unknown) => void>()
  ws.on('message', (data) => {
    const m = JSON.parse(String(data)) as { id?: number; result?: unknown }
    if (m.id !== undefined) pending.get(m.id)?.(m.result)
  })
  const call = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve) => {
      const id = nextId++
      pending.set(id, resolve)
      ws.send(JSON.stringify({ id, method, params }))
    })
  await call('Profiler.enable')
  await call('Profiler.setSamplingInterval', { interval: 200 })
  let running = false
  let windows = 0
  const start = async () => {
    await call('Profiler.start')
    running = true
  }
  if (now) await start()
  return {
    start,
    async stop() {
      if (!running) return
      running = false
      const result = (await call('Profiler.stop')) as { profile: unknown }
      const file = profileWindows ? `${profile!}.${++windows}` : profile!
      writeFileSync(file, JSON.stringify(result.profile))
      console.error(`profile written to ${file}`)
    },
  }
}
