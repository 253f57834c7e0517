/**
 * What the runtime charges for the steps a match and a session are made of, on the workerd and
 * flags of the Nexus benchmark server, with nothing of Nexus in it: a call into an object, a
 * SQLite statement, a commit, a new object, its first and further tables, an alarm. Next to the
 * matchmaking benchmark's CPU per match, it says which of Nexus's steps are the runtime's price.
 *
 *   npx node bench/runtime-costs.bench.ts [--rounds 7] [--ops 10000]
 *
 * A Worker runs each step `--ops` times in a sequential loop (one call into a Durable Object per
 * step, each awaited). The cost of a step is workerd's CPU time over the loop (user + system, from
 * /proc) over `--ops`, with the loop's wall time beside it: nothing else runs in that workerd, so
 * the two agree unless the machine's host takes the CPU away (steal time). Steps are reported
 * against the call that does nothing (the baseline in the same round); rounds alternate the
 * steps; medians over rounds.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { convertV4MiniflareOptions, Miniflare } from 'miniflare'
import { flag, fmt, median } from './lib/load.ts'
import { cpuMs, descendantsNamed } from './lib/process-cpu.ts'
import { WORKERD_SETTINGS } from './lib/serve-floor.ts'

const ROUNDS = flag('rounds', 7)
const OPS = flag('ops', 10000)
// Durable Object storage in memory, as for the Nexus server (bench/lib/stack.ts).
if (existsSync('/dev/shm')) process.env.TMPDIR = '/dev/shm'

const script = `
import { DurableObject } from 'cloudflare:workers'
const TABLE = (i) => 'CREATE TABLE t' + i + ' (id TEXT PRIMARY KEY, v TEXT NOT NULL);'
export class Steps extends DurableObject {
  sql = this.ctx.storage.sql
  prepare() {
    this.sql.exec('CREATE TABLE IF NOT EXISTS a (id INTEGER PRIMARY KEY, v TEXT)')
    return Number(this.sql.exec('SELECT coalesce(max(id), 0) AS m FROM a').one().m)
  }
  nothing() { return 1 }
  read(k) { return this.sql.exec('SELECT v FROM a WHERE id = ?', k).toArray().length }
  insert(k, n) {
    for (let i = 0; i < n; i++) this.sql.exec('INSERT INTO a (id, v) VALUES (?, ?)', k * 100 + i, 'x')
    return 1
  }
  insertInTransaction(k, n) {
    this.ctx.storage.transactionSync(() => this.insert(k, n))
    return 1
  }
  tables(n, oneExec) {
    if (oneExec) this.sql.exec(Array.from({ length: n }, (_, i) => TABLE(i)).join(''))
    else for (let i = 0; i < n; i++) this.sql.exec(TABLE(i))
    return 1
  }
  async alarmRead() {
    await this.ctx.storage.getAlarm()
    return 1
  }
  async alarmAt(t) { await this.ctx.storage.setAlarm(t); return 1 }
  async alarm() {}
}
const STEPS = {
  nothing: (s) => s.nothing(),
  read: (s, k) => s.read(k),
  insert1: (s, k) => s.insert(k, 1),
  insert10: (s, k) => s.insert(k, 10),
  insert2txn: (s, k) => s.insertInTransaction(k, 2),
  insert2: (s, k) => s.insert(k, 2),
  alarmRead: (s) => s.alarmRead(),
  alarm: (s, k) => s.alarmAt(Date.now() + 3600000 + k),
}
const NEW = {
  newObject: (s) => s.nothing(),
  newObject1Table: (s) => s.tables(1, false),
  newObject5Tables: (s) => s.tables(5, false),
  newObject5TablesOneExec: (s) => s.tables(5, true),
  newObjectAlarm: (s) => s.alarmAt(Date.now() + 3600000),
}
export default {
  async fetch(request, env) {
    const url = new URL(request.url)
    const step = url.searchParams.get('step')
    const n = Number(url.searchParams.get('n'))
    if (step in NEW) {
      for (let i = 0; i < n; i++) await NEW[step](env.STEPS.get(env.STEPS.newUniqueId()))
      return new Response('ok')
    }
    // A fresh object per loop, so that keys never collide across rounds.
    const s = env.STEPS.get(env.STEPS.newUniqueId())
    const base = await s.prepare()
    for (let k = base + 1; k <= base + n; k++) await STEPS[step](s, k)
    return new Response('ok')
  },
}
`

const STEPS: [string, string][] = [
  ['nothing', 'a call into an existing object that does nothing (baseline)'],
  ['read', '… reading one row by primary key'],
  ['insert1', '… inserting one row (and the commit after the call)'],
  ['insert2', '… inserting two rows'],
  ['insert2txn', '… inserting two rows in `transactionSync`'],
  ['insert10', '… inserting ten rows'],
  ['alarmRead', '… reading its alarm'],
  ['alarm', '… setting its alarm'],
  ['newObject', 'a call into a new object that does nothing'],
  ['newObject1Table', '… that creates one table'],
  ['newObject5Tables', '… that creates five tables, a statement each'],
  ['newObject5TablesOneExec', '… that creates five tables in one `exec`'],
  ['newObjectAlarm', '… that sets its alarm'],
]

const mf = new Miniflare(
  convertV4MiniflareOptions({
    workers: [
      {
        name: 'runtime-costs',
        modules: true,
        script,
        ...WORKERD_SETTINGS,
        durableObjects: { STEPS: { className: 'Steps', useSQLite: true } },
      },
    ],
  }),
)
/** Per step, one value per round: CPU µs per call, the same over the baseline, wall µs per call. */
const cpuPerCall = new Map<string, number[]>()
const vsBaseline = new Map<string, number[]>()
const wallPerCall = new Map<string, number[]>()
const push = (m: Map<string, number[]>, k: string, v: number) =>
  (m.get(k) ?? m.set(k, []).get(k)!).push(v)
try {
  await mf.ready
  const workerd = descendantsNamed('workerd')
  if (workerd.length === 0) throw new Error('no workerd process found under this one')
  const time = async (step: string, n: number) => {
    const cpu0 = cpuMs(workerd)
    const t0 = performance.now()
    const res = await mf.dispatchFetch(`http://bench/?step=${step}&n=${n}`)
    if (!res.ok) throw new Error(`${step}: ${res.status} ${await res.text()}`)
    await res.text()
    return {
      wall: ((performance.now() - t0) * 1000) / n,
      cpu: ((cpuMs(workerd) - cpu0) * 1000) / n,
    }
  }
  // Warm-up: every step once, compiled and its statements prepared.
  for (const [step] of STEPS) await time(step, 50)
  for (let round = 0; round < ROUNDS; round++) {
    const us = new Map<string, { wall: number; cpu: number }>()
    // New objects cost ten times as much: fewer of them keep rounds short.
    for (const [step] of STEPS)
      us.set(step, await time(step, step.startsWith('new') ? OPS / 10 : OPS))
    for (const [step, v] of us) {
      push(cpuPerCall, step, v.cpu)
      push(vsBaseline, step, v.cpu - us.get('nothing')!.cpu)
      push(wallPerCall, step, v.wall)
    }
    console.error(`round ${round + 1}/${ROUNDS} done`)
  }
} finally {
  await mf.dispose()
}

const rows = STEPS.map(
  ([step, label]) =>
    `| ${label} | ${fmt(median(cpuPerCall.get(step)!), 1)} | ` +
    `${step === 'nothing' ? '' : fmt(median(vsBaseline.get(step)!), 1)} | ` +
    `${fmt(median(wallPerCall.get(step)!), 1)} |`,
)
const report = [
  '# Runtime costs: the steps of a match, without Nexus',
  '',
  `The workerd and flags of the Nexus benchmark server (Miniflare, in the benchmark's process), Durable Object ` +
    `storage in memory. A Worker awaits each step ${OPS} times in a row (a new object: ${OPS / 10}), ` +
    `one call into a Durable Object per step. Costs are workerd's CPU time (user + system, from /proc) ` +
    `over the loop per call, with the loop's wall time beside them. ` +
    `${ROUNDS} rounds alternating the steps after a warm-up; medians over rounds. Node ${process.version}, ` +
    `${new Date().toISOString().slice(0, 10)}.`,
  '',
  `Command: \`npx node bench/runtime-costs.bench.ts --rounds ${ROUNDS} --ops ${OPS}\``,
  '',
  '| step | CPU µs per call | CPU µs more than the baseline (same round) | wall µs per call |',
  '| --- | ---: | ---: | ---: |',
  ...rows,
  '',
].join('\n')
mkdirSync('bench/results', { recursive: true })
writeFileSync('bench/results/runtime-costs.md', report)
console.log(report)
