/**
 * Prints where a CPU profile's time went: self time by function, heaviest first.
 *
 *   NEXUS_BENCH_PROFILE=/tmp/x.cpuprofile npx node bench/matchmaking.bench.ts …
 *   npx node bench/lib/profile-summary.ts /tmp/x.cpuprofile [--top 40]
 *
 * With NEXUS_BENCH_PROFILE_WINDOWS=1, benchmarks that support it (matchmaking: each recorded
 * burst) profile only what they measure, one file per window; pass them all
 * (`/tmp/x.cpuprofile.*`) to sum them.
 */
import { readFileSync } from 'node:fs'
import { flag } from './load.ts'

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}
// Several files (one per profiled window) count as one profile.
const files: string[] = []
for (const arg of process.argv.slice(2)) {
  if (arg.startsWith('--')) break
  files.push(arg)
}
if (files.length === 0) throw new Error('usage: profile-summary.ts <file.cpuprofile>… [--top N]')
const profile = { nodes: [] as ProfileNode[], samples: [] as number[], timeDeltas: [] as number[] }
for (const [i, file] of files.entries()) {
  const one = JSON.parse(readFileSync(file, 'utf8')) as typeof profile
  // Node ids are per file: offset them so that files do not collide.
  const offset = i * 10_000_000
  for (const n of one.nodes) {
    profile.nodes.push({ ...n, id: n.id + offset, children: n.children?.map((c) => c + offset) })
  }
  profile.samples.push(...one.samples.map((id) => id + offset))
  profile.timeDeltas.push(...one.timeDeltas)
}
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
/**
 * A gap between two samples longer than this is time the profiler took no samples (seconds of it
 * at the end of a benchmark's profile), not time spent in the sample next to it: counting it gave
 * one function 43% of a run it hardly used.
 */
const GAP_US = 50_000
let gaps = 0
/** Time each sample stands for, in µs (0 for one after a gap). */
const times = profile.samples.map((_, i) => {
  const dt = profile.timeDeltas[i] ?? 0
  if (dt <= GAP_US) return dt
  gaps += dt
  return 0
})
const self = new Map<string, number>()
let total = 0
profile.samples.forEach((id, i) => {
  const dt = times[i]!
  const n = byId.get(id)!
  const f = n.callFrame
  const key = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-1)[0]}:${f.lineNumber + 1}`
  self.set(key, (self.get(key) ?? 0) + dt)
  total += dt
})
const top = flag('top', 40)
console.log(
  `total ${(total / 1000).toFixed(0)} ms sampled` +
    (gaps > 0 ? ` (${(gaps / 1000).toFixed(0)} ms of gaps over ${GAP_US / 1000} ms left out)` : ''),
)
for (const [key, us] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) {
  console.log(
    `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${key}`,
  )
}

// `--callers <function>`: whose calls that function's self time came from.
const ci = process.argv.indexOf('--callers')
if (ci > 0) {
  const name = process.argv[ci + 1]!
  const parent = new Map<number, ProfileNode>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const callers = new Map<string, number>()
  profile.samples.forEach((id, i) => {
    const n = byId.get(id)!
    if (n.callFrame.functionName !== name) return
    const p = parent.get(n.id)
    const f = p?.callFrame
    const key = f ? `${f.functionName || '(anonymous)'}:${f.lineNumber + 1}` : '(root)'
    callers.set(key, (callers.get(key) ?? 0) + times[i]!)
  })
  console.log(`\ncallers of ${name}:`)
  for (const [key, us] of [...callers].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`${(us / 1000).toFixed(1).padStart(8)} ms  ${key}`)
  }
}

// `--inclusive`: time with each function anywhere on the stack (its callees included).
if (process.argv.includes('--inclusive')) {
  const parent = new Map<number, ProfileNode>()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n)
  const inclusive = new Map<string, number>()
  profile.samples.forEach((id, i) => {
    const seen = new Set<string>()
    for (let n: ProfileNode | undefined = byId.get(id); n; n = parent.get(n.id)) {
      const f = n.callFrame
      seen.add(
        `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-1)[0]}:${f.lineNumber + 1}`,
      )
    }
    for (const key of seen) inclusive.set(key, (inclusive.get(key) ?? 0) + times[i]!)
  })
  console.log('\ninclusive:')
  for (const [key, us] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    console.log(
      `${((100 * us) / total).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(1).padStart(8)} ms  ${key}`,
    )
  }
}
