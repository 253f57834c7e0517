/**
 * How much memory a board's rank index needs, by size: what bounds a board's live cycle in a
 * Durable Object, which has 128 MB on Cloudflare (local workerd sets no limit).
 * Run: npx node --expose-gc bench/rank-index-memory.bench.ts   (writes bench/results/rank-index-memory.md)
 *
 * The index holds keys only (score, subscore, seq); player ids live in SQLite, so the index is
 * measured alone. Its keys sit in one Float64Array per node, whose backing stores V8 may keep
 * outside its heap: both `heapUsed` and `arrayBuffers` of process.memoryUsage() are counted, as
 * the isolate's memory limit counts both. Two shapes per size: bulk-loaded from keys in board
 * order (a wake reading SQLite, leaves filled to 3/4) and grown by inserting one key at a time in
 * random order (a cycle filling up during the week, where splits leave leaves emptier).
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RankIndex } from '../workers/core/rank-index.ts'
import type { RankKey } from '../workers/core/rank-index.ts'

const SIZES = [100_000, 300_000, 1_000_000, 3_000_000]
const RUNS = 3
const SHAPES = ['bulk-loaded', 'grown by inserts'] as const
type Shape = (typeof SHAPES)[number]
/** The previous design (player ids and one object per entry in memory) at 1,000,000 entries. */
const PREVIOUS = { index: 177, ids: 61, total: 238, perEntry: 186 }
const gc = (globalThis as { gc?: () => void }).gc
if (!gc) {
  console.error('run with --expose-gc: npx node --expose-gc bench/rank-index-memory.bench.ts')
  process.exit(2)
}

const MiB = 1024 * 1024
/** Cloudflare's Durable Object limit, 128 MB, read as the smaller 128 × 10^6 bytes. */
const LIMIT = 128e6

interface Measured {
  heap: number
  buffers: number
}

/** Random scores in board order (descending), as a wake streams them out of SQLite. */
function* inOrder(n: number): Generator<RankKey> {
  const gap = (2 * 1e9) / n
  let score = 1e9
  for (let i = 0; i < n; i++) {
    score -= Math.floor(Math.random() * gap)
    yield { score, subscore: 0, seq: i + 1 }
  }
}

function build(n: number, shape: Shape): RankIndex {
  const index = new RankIndex('desc')
  if (shape === 'bulk-loaded') index.load(inOrder(n))
  else {
    for (let i = 0; i < n; i++) {
      index.insert({ score: Math.floor(Math.random() * 1e9), subscore: 0, seq: i + 1 })
    }
  }
  return index
}

/**
 * One measurement, in a process of its own: a loop in one process measured garbage of earlier
 * runs and V8's own choices as often as the index.
 */
function measureOnce(n: number, shape: Shape): Measured {
  const out = execFileSync(
    process.execPath,
    ['--expose-gc', fileURLToPath(import.meta.url), '--one', String(n), shape],
    { encoding: 'utf8' },
  )
  return JSON.parse(out.trim().split('\n').at(-1)!) as Measured
}

if (process.argv[2] === '--one') {
  const n = Number(process.argv[3])
  const shape = process.argv[4] as Shape
  const usage = () => {
    gc!()
    gc!()
    const { heapUsed, arrayBuffers } = process.memoryUsage()
    return { heapUsed, arrayBuffers }
  }
  // Compile the index's code first, so the difference below is the index's data alone.
  build(20_000, shape)
  const base = usage()
  const index = build(n, shape)
  const after = usage()
  if (index.size !== n) throw new Error(`index holds ${index.size}, wanted ${n}`)
  const measured: Measured = {
    heap: after.heapUsed - base.heapUsed,
    buffers: after.arrayBuffers - base.arrayBuffers,
  }
  console.log(JSON.stringify(measured))
  process.exit(0)
}

const mib = (bytes: number) => (bytes / MiB).toFixed(1)
const fmt = (n: number) => n.toLocaleString('en-US')
const results: { n: number; shape: Shape; heap: number; buffers: number; total: number }[] = []
const started = Date.now()
for (const n of SIZES) {
  for (const shape of SHAPES) {
    const runs = Array.from({ length: RUNS }, () => measureOnce(n, shape))
      .map((r) => ({ ...r, total: r.heap + r.buffers }))
      .sort((a, b) => a.total - b.total)
    // The run with the median total, so its parts add up.
    const run = runs[runs.length >>> 1]!
    results.push({ n, shape, ...run })
    const r = results.at(-1)!
    console.log(
      `${fmt(n)} ${shape}: heap ${mib(r.heap)} MiB + array buffers ${mib(r.buffers)} MiB = ` +
        `${mib(r.total)} MiB, ${(r.total / n).toFixed(1)} bytes per entry`,
    )
  }
}
const seconds = (Date.now() - started) / 1000

const rows = results.map(
  (r) =>
    `| ${fmt(r.n)} | ${r.shape} | ${mib(r.heap)} | ${mib(r.buffers)} | ${mib(r.total)} | ${(r.total / r.n).toFixed(1)} |`,
)
const at = (n: number, shape: Shape) => results.find((r) => r.n === n && r.shape === shape)!
const million = at(1_000_000, 'grown by inserts')
const millionLoaded = at(1_000_000, 'bulk-loaded')
/** The emptier shape's bytes per entry over the sizes measured: what to plan with. */
const worstPerEntry = Math.max(
  ...results.filter((r) => r.shape === 'grown by inserts').map((r) => r.total / r.n),
)
const largest = at(SIZES[SIZES.length - 1]!, 'grown by inserts')
const fitsIn = (bytes: number) => Math.floor(bytes / worstPerEntry / 100_000) * 100_000

const md = `# RankIndex memory

Command: \`npx node --expose-gc bench/rank-index-memory.bench.ts\`

Node ${process.version}, ${new Date().toISOString().slice(0, 10)}. Memory of the index alone (it holds keys: score,
subscore, seq; player ids stay in SQLite), after a full GC, as the growth of V8's heap
(\`heapUsed\`: nodes, child and count arrays) plus the growth of array buffers (\`arrayBuffers\`: the
Float64Array of keys in each node, whose backing store lives outside the V8 heap; a Durable
Object's memory limit counts it too). Both are live bytes: the process holds more (heap pages V8
keeps committed, the allocator's overhead per backing store), part of what the room left below is
for. Median of ${RUNS} runs per size and shape, each in a process of its own. Two shapes: bulk-loaded
from keys in board order, as after a wake (leaves filled to 3/4), and grown by inserting one key
at a time in random order, as a cycle fills up during the week (splits leave leaves emptier).
Took ${seconds.toFixed(0)} s.

| entries | shape | V8 heap (MiB) | array buffers (MiB) | total (MiB) | bytes per entry |
| ---: | --- | ---: | ---: | ---: | ---: |
${rows.join('\n')}

At 1,000,000 entries the index takes ${mib(million.total)} MiB grown by inserts and ${mib(millionLoaded.total)} MiB
bulk-loaded. The design this replaces, with player ids and one object per entry in memory,
measured ${PREVIOUS.total} MiB at 1,000,000 (${PREVIOUS.perEntry} bytes per entry for the index, ${PREVIOUS.index} MiB, plus ${PREVIOUS.ids} MiB
of ids): over the limit on its own.

A Durable Object on Cloudflare has 128 MB for its whole isolate, and the index must leave room
for the rest of it: the Worker's code and its own heap, SQLite result buffers while a request or
a close page is served, and the cycle's history of replaced versions (bounded). At
${worstPerEntry.toFixed(1)} bytes per entry (the grown shape, the larger), a quarter of the limit holds about
${fmt(fitsIn(LIMIT / 4))} entries and half of it about ${fmt(fitsIn(LIMIT / 2))}: a million-player cycle takes
${((million.total / LIMIT) * 100).toFixed(0)}% of the 128 MB, while ${fmt(largest.n)} entries (${mib(largest.total)} MiB grown) would take
${((largest.total / LIMIT) * 100).toFixed(0)}% on their own. The million-entry close benchmark runs in local workerd, which
sets no memory limit.
`
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'rank-index-memory.md')
mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, md)
console.log(`wrote ${out}`)
