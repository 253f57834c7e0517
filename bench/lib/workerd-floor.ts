/**
 * Starts one of the workerd floor servers (bench/lib/workerd-*-server.ts) on a free loopback
 * port, as its own process: the same workerd and flags as the Nexus server, running only the
 * minimum a workload needs of the platform, so a benchmark can tell the runtime's share from
 * Nexus's.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../local/process.ts'
import { startServerProcess } from './server-process.ts'

export async function startWorkerdFloor(
  server: 'workerd-relay-server.ts' | 'workerd-pairing-server.ts',
): Promise<{ url: string; stop(): Promise<void> }> {
  const port = await freePort()
  const floor = await startServerProcess(
    server,
    [fileURLToPath(new URL(`./${server}`, import.meta.url)), String(port)],
    // Durable Object storage in memory, as for the Nexus server.
    { env: { ...process.env, ...(existsSync('/dev/shm') ? { TMPDIR: '/dev/shm' } : {}) } },
  )
  return { url: `ws://127.0.0.1:${port}`, stop: () => floor.stop() }
}
