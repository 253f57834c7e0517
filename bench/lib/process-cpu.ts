/**
 * CPU time of this process's child processes, read from Linux's /proc: for benchmarks that count
 * what a server (workerd) spends per request rather than how long a client waited, which on a
 * shared 2-core machine mixes in the load generator's own work.
 */
import { execFileSync } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'

/** Clock ticks per second, the unit of utime and stime in /proc/<pid>/stat. */
const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // The command name may hold spaces and parentheses; the fields after its last ')' do not.
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
}

/** Processes named `name` (as in /proc/<pid>/comm) descending from `ancestor`. */
export function descendantsNamed(name: string, ancestor = process.pid): number[] {
  if (process.platform !== 'linux') throw new Error('reading CPU time needs Linux /proc')
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      if (readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== name) continue
      for (let pid = Number(entry), depth = 0; pid > 1 && depth < 10; depth++) {
        pid = parentOf(pid)
        if (pid === ancestor) {
          found.push(Number(entry))
          break
        }
      }
    } catch {
      // The process ended while we looked.
    }
  }
  return found
}

/** User plus system CPU time of `pids` so far, in milliseconds (all their threads). */
export function cpuMs(pids: readonly number[]): number {
  let ticks = 0
  for (const pid of pids) {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const after = fields.slice(fields.lastIndexOf(')') + 2).split(' ')
    // utime and stime are fields 14 and 15 of stat; `after` starts at field 3.
    ticks += Number(after[11]) + Number(after[12])
  }
  return (ticks * 1000) / TICKS_PER_SECOND
}

/** Resident memory (VmRSS) of `pids` now, in bytes. */
export function residentBytes(pids: readonly number[]): number {
  let kib = 0
  for (const pid of pids) {
    const match = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    kib += Number(match?.[1] ?? 0)
  }
  return kib * 1024
}
