import { execFileSync, type ChildProcess } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'
import { createServer } from 'node:net'

/**
 * Asks the kernel for a free TCP port on 127.0.0.1 (bind to 0, read it back, release it).
 *
 * @example
 * const port = await freePort()
 */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      if (address === null || typeof address === 'string') {
        server.close()
        reject(new Error('could not read the bound port'))
        return
      }
      server.close(() => resolve(address.port))
    })
  })
}

/** Keeps the last `limit` characters written to it, for error messages about a failed child. */
export class OutputTail {
  #text = ''
  readonly #limit: number
  constructor(limit = 8192) {
    this.#limit = limit
  }
  push(chunk: Buffer | string): void {
    this.#text = (this.#text + chunk.toString()).slice(-this.#limit)
  }
  get text(): string {
    return this.#text
  }
}

/** True while a process with this pid exists (zombies included until reaped). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/** Pids whose parent is `pid`: from /proc on Linux, from `ps` elsewhere (macOS). */
export function childPids(pid: number): number[] {
  let entries: string[]
  try {
    entries = readdirSync('/proc')
  } catch {
    return childPidsFromPs(pid)
  }
  const children: number[] = []
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      // The command name may contain spaces and parentheses: fields resume after the last ')'.
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      if (Number(fields[1]) === pid) children.push(Number(entry))
    } catch {
      // The process ended while we were reading.
    }
  }
  return children
}

function childPidsFromPs(pid: number): number[] {
  let out: string
  try {
    out = execFileSync('ps', ['-A', '-o', 'pid=,ppid='], { encoding: 'utf8' })
  } catch {
    return []
  }
  const children: number[] = []
  for (const line of out.split('\n')) {
    const [child, parent] = line.trim().split(/\s+/).map(Number)
    if (parent === pid && child !== undefined && Number.isInteger(child)) children.push(child)
  }
  return children
}

/** Resolves once the child has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise((resolve) => child.once('exit', () => resolve()))
}

/**
 * Sends `signal`, waits up to `graceMs` for the child to exit, then SIGKILLs it and waits again.
 *
 * @example
 * await stopChild(child, 'SIGINT', 10_000)
 */
export async function stopChild(
  child: ChildProcess,
  signal: NodeJS.Signals,
  graceMs: number,
): Promise<void> {
  // A child that failed to spawn has no pid and will never emit 'exit'.
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  const done = exited(child)
  child.kill(signal)
  let timer: NodeJS.Timeout | undefined
  const timedOut = await Promise.race([
    done.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), graceMs)
    }),
  ])
  clearTimeout(timer)
  if (timedOut) {
    child.kill('SIGKILL')
    await done
  }
}

const exitCleanups = new Set<() => void>()
let exitHookInstalled = false

/**
 * Runs `cleanup` synchronously if the Node process exits while a server we started is still up,
 * so an aborted test run or dev session does not leave Postgres or Redis behind. Returns a
 * function that unregisters it (call it from a normal stop).
 */
export function onProcessExit(cleanup: () => void): () => void {
  if (!exitHookInstalled) {
    exitHookInstalled = true
    process.on('exit', () => {
      for (const fn of exitCleanups) {
        try {
          fn()
        } catch {
          // Best effort: the process is going away.
        }
      }
    })
  }
  exitCleanups.add(cleanup)
  return () => {
    exitCleanups.delete(cleanup)
  }
}
