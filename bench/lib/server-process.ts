/**
 * Starts a benchmark peer server as a child process and waits until it prints that it is
 * listening; `stop` ends it (SIGTERM, then SIGKILL after 5 s).
 */
import { spawn } from 'node:child_process'

export async function startServerProcess(
  name: string,
  args: string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ stop(): Promise<void> }> {
  const child = spawn(process.execPath, args, {
    ...options,
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`${name} exited with ${code}`)))
    child.stdout!.on('data', (d: Buffer) => {
      if (String(d).includes('listening')) resolve()
    })
  })
  return {
    async stop() {
      if (child.exitCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
      await exited
      clearTimeout(timer)
    },
  }
}
