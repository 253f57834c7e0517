/**
 * How much heap a board's rank index needs, by size: what bounds a board's live cycle in a
 * Durable Object, which has 128 MB on Cloudflare (local workerd sets no limit).
 * Run: npx node --expose-gc bench/rank-index-memory.bench.ts   (writes bench/results/rank-index-memory.md)
 *
 * Player ids are guest ids (`g_` and a UUID, 38 characters), made flat strings as SQLite hands
 * them over, and measured apart from the index: the object holds them either way.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RankIndex } from '../workers/core/rank-index.ts'

const SIZES = [100_000, 300_000, 1_000_000]
const RUNS = 3
const gc = (globalThis as { gc?: () => void }).gc
if (!gc) {
  console.error('run with --expose-gc: npx node --expose-gc bench/rank-index-memory.bench.ts')
  process.exit(2)
}

const MiB = 1024 * 1024
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

/**
 * One measurement, in a process of its own: a loop in one process measured garbage of earlier
 * runs and V8's own choices as often as the index.
 */
function measureOnce(n: number): { ids: number; index: number } {
  const out = execFileSync(
    process.execPath,
    ['--expose-gc', fileURLToPath(import.meta.url), '--one', String(n)],
    { encoding: 'utf8' },
  )
  return JSON.parse(out.trim().split('\n').at(-1)!) as { ids: number; index: number }
}

if (process.argv[2] === '--one') {
  const n = Number(process.argv[3])
  const heap = () => {
    gc!()
    gc!()
    return process.memoryUsage().heapUsed
  }
  const base = heap()
  // Buffer round trip: a flat string, as the SQLite driver returns, not a concatenation.
  const ids = Array.from({ length: n }, () => Buffer.from(`g_${crypto.randomUUID()}`).toString())
  const withIds = heap()
  const index = new RankIndex('desc')
  index.load(
    ids.map((playerId, i) => ({
      playerId,
      score: Math.floor(Math.random() * 1e9),
      subscore: 0,
      seq: i + 1,
    })),
  )
  const withIndex = heap()
  if (index.size !== n) throw new Error('index lost entries')
  console.log(JSON.stringify({ ids: withIds - base, index: withIndex - withIds }))
  process.exit(0)
}

const rows: string[] = []
for (const n of SIZES) {
  const runs = Array.from({ length: RUNS }, () => measureOnce(n))
  const ids = median(runs.map((r) => r.ids))
  const index = median(runs.map((r) => r.index))
  rows.push(
    `| ${n.toLocaleString('en-US')} | ${(index / MiB).toFixed(0)} | ${(index / n).toFixed(0)} | ${(ids / MiB).toFixed(0)} | ${((index + ids) / MiB).toFixed(0)} |`,
  )
  console.log(rows.at(-1))
}

const md = `# RankIndex memory

Command: \`npx node --expose-gc bench/rank-index-memory.bench.ts\`

Node ${process.version}, ${new Date().toISOString().slice(0, 10)}. Heap used after a full GC, median of ${RUNS} runs per size, each in a process of its own: the
index loaded with random scores (its tree, entry objects and player map), and apart from it the
player ids (38-character guest ids, flat strings as SQLite returns them), which the board holds
either way.

| entries | index (MiB) | index bytes per entry | player ids (MiB) | together (MiB) |
| ---: | ---: | ---: | ---: | ---: |
${rows.join('\n')}

A Durable Object on Cloudflare has 128 MB for its isolate. So a board's live cycle should stay
under about 300,000 players there (docs/operating.md, "Cycle size"); a larger audience is sharded
into several boards. The million-entry close benchmark runs in local workerd, which sets no
memory limit.
`
const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'rank-index-memory.md')
mkdirSync(dirname(out), { recursive: true })
writeFileSync(out, md)
console.log(`wrote ${out}`)
