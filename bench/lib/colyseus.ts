/**
 * Starts the Colyseus peer (bench/peers) on a free loopback port, installing it from npm into
 * bench/peers/node_modules on first use (it is a benchmark-only dependency, never shipped).
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { freePort } from '../../local/process.ts'
import { startServerProcess } from './server-process.ts'

const peers = fileURLToPath(new URL('../peers/', import.meta.url))

export async function startColyseus(): Promise<{ url: string; stop(): Promise<void> }> {
  if (!existsSync(`${peers}node_modules/@colyseus/core`)) {
    execFileSync('npm', ['install', '--no-audit', '--no-fund', '--prefix', peers], {
      stdio: 'inherit',
    })
  }
  const port = await freePort()
  const server = await startServerProcess(
    'colyseus',
    [`${peers}colyseus-server.ts`, String(port)],
    {
      cwd: peers,
    },
  )
  return { url: `ws://127.0.0.1:${port}`, stop: () => server.stop() }
}

/** The Colyseus client SDK, loaded from bench/peers. */
export async function colyseusClient(url: string) {
  const sdk = (await import(`${peers}node_modules/@colyseus/sdk/build/index.mjs`)) as {
    Client: new (url: string) => {
      joinOrCreate(name: string, options?: Record<string, unknown>): Promise<ColyseusRoom>
    }
  }
  return new sdk.Client(url)
}

export interface ColyseusRoom {
  send(type: string, data: unknown): void
  onMessage(type: string, cb: (data: never) => void): void
  leave(consented?: boolean): Promise<unknown>
}
