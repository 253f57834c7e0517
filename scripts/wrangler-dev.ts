/**
 * Runs `wrangler dev` for the Worker in its own process group, so stopping it stops workerd too.
 * Shared by `npm run dev`, the benchmarks and the load tests.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { onProcessExit } from '../local/process.ts'

const root = fileURLToPath(new URL('..', import.meta.url))

export interface WranglerDev {
  url: string
  child: ChildProcess
  /** Resolves when /health answers; rejects if wrangler exits first or it takes too long. */
  ready: Promise<void>
  stop(): Promise<void>
}

export function startWranglerDev(opts: {
  port: number
  vars: Record<string, string>
  stdio?: 'inherit' | 'ignore'
  readyTimeoutMs?: number
  /** Where Durable Object storage lives; default `.wrangler/state` (kept between runs). */
  persistTo?: string
}): WranglerDev {
  const args = [
    'wrangler',
    'dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--show-interactive-dev-session=false',
  ]
  if (opts.persistTo) args.push('--persist-to', opts.persistTo)
  for (const [k, v] of Object.entries(opts.vars)) args.push('--var', `${k}:${v}`)
  const child = spawn('npx', args, {
    cwd: root,
    stdio: opts.stdio ?? 'inherit',
    detached: true,
    env: process.env,
  })
  const url = `http://127.0.0.1:${opts.port}`
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  // Its own process group outlives us: if we go without stop() (a crash, an uncaught error),
  // the group goes too, not left holding the port for the next run.
  const forget = onProcessExit(() => {
    if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL')
  })
  void exited.then(forget)

  const ready = (async () => {
    const deadline = Date.now() + (opts.readyTimeoutMs ?? 120_000)
    let gone = false
    void exited.then(() => (gone = true))
    while (Date.now() < deadline) {
      if (gone) throw new Error('wrangler dev exited before serving')
      try {
        // Each try bounded: a proxy that takes the request and never answers is not ready.
        const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) })
        await res.body?.cancel()
        if (res.ok) return
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 250))
    }
    throw new Error(`wrangler dev did not answer on ${url} in time`)
  })()

  async function stop(): Promise<void> {
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
    try {
      process.kill(-child.pid, 'SIGTERM')
    } catch {
      return
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL')
      } catch {
        // already gone
      }
    }, 5000)
    await exited
    clearTimeout(timer)
  }

  return { url, child, ready, stop }
}
