import { spawn } from 'node:child_process'
import { tmpdir } from 'node:os'
import { OutputTail, exited, freePort, onProcessExit, stopChild } from './process.ts'

export interface StartRedisOptions {
  /** Defaults to a free port on 127.0.0.1. */
  port?: number
}

export interface LocalRedis {
  host: string
  port: number
  /** The redis-server pid (for checks that nothing is left running). */
  pid: number
  stop(): Promise<void>
}

const HOST = '127.0.0.1'
const START_TIMEOUT_MS = 10_000

/**
 * Starts `redis-server` (from PATH) on 127.0.0.1 with no persistence (no RDB, no AOF), as a child
 * of this process. Throws a clear error when redis-server is not installed.
 *
 * @example
 * const redis = await startRedis()
 * // … RESP on redis.host:redis.port …
 * await redis.stop()
 */
export async function startRedis(opts: StartRedisOptions = {}): Promise<LocalRedis> {
  const port = opts.port ?? (await freePort())
  const args = [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--daemonize',
    'no',
    '--save',
    '',
    '--appendonly',
    'no',
    // No dump.rdb lands in the caller's working directory even on SHUTDOWN SAVE.
    '--dir',
    tmpdir(),
    '--loglevel',
    'notice',
  ]
  const tail = new OutputTail()
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  child.stderr.on('data', (c: Buffer) => tail.push(c))
  const unregister = onProcessExit(() => child.kill('SIGKILL'))

  const stop = async () => {
    unregister()
    await stopChild(child, 'SIGTERM', 5_000)
  }

  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`redis-server did not start within ${START_TIMEOUT_MS} ms:\n${tail.text}`))
      }, START_TIMEOUT_MS)
      child.stdout.on('data', (chunk: Buffer) => {
        tail.push(chunk)
        if (tail.text.includes('Ready to accept connections')) {
          clearTimeout(timer)
          resolve()
        }
      })
      child.once('error', (error: NodeJS.ErrnoException) => {
        clearTimeout(timer)
        reject(
          error.code === 'ENOENT'
            ? new Error('redis-server is not on PATH (apt-get install redis-server)')
            : error,
        )
      })
      void exited(child).then(() => {
        clearTimeout(timer)
        reject(new Error(`redis-server exited during start-up:\n${tail.text}`))
      })
    })
  } catch (error) {
    await stop()
    throw error
  }
  // Keep draining output so the server never blocks on a full pipe.
  child.stdout.removeAllListeners('data')
  child.stdout.on('data', (c: Buffer) => tail.push(c))
  if (child.pid === undefined) throw new Error('redis-server has no pid')
  return { host: HOST, port, pid: child.pid, stop }
}
