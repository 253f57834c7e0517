/**
 * Starts one of the workerd floor servers (bench/lib/workerd-*-server.ts) on a free loopback
 * port, as its own process: the same workerd and flags as the Nexus server, running only the
 * minimum a workload needs of the platform, so a benchmark can tell the runtime's share from
 * Nexus's.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../local/process.ts'

export async function startWorkerdFloor(
  server: 'workerd-relay-server.ts' | 'workerd-pairing-server.ts',
): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort()
  const child = spawn(
    process.execPath,
    [fileURLToPath(new URL(`./${server}`, import.meta.url)), String(port)],
    {
      // Durable Object storage in memory, as for the Nexus server.
      env: { ...process.env, ...(existsSync('/dev/shm') ? { TMPDIR: '/dev/shm' } : {}) },
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  )
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${server} exited with ${code}`)))
    child.stdout!.on('data', (d: Buffer) => {
      if (String(d).includes('listening')) resolve()
    })
  })
  return {
    url: `ws://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}
