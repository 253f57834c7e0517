/**
 * RankIndex against redis-server's sorted set, same operations and sizes, on this machine.
 * Run: npx node bench/rank-index.bench.ts   (writes bench/results/rank-index.md)
 *
 * Fairness:
 * - Redis gets plain scores with member = playerId (no composite tie-break encoding, which would
 *   only slow it down); scores are random integers in [0, 1e9), so ties are rare for both.
 * - RankIndex holds keys (score, subscore, seq) and no player ids, while ZADD, ZREVRANK and ZSCORE
 *   take a member and find its score in Redis's own hash. So every index operation that starts from
 *   a player goes through a `Map<string, RankKey>` from player id to current key kept here beside
 *   the index, and the map's reads and writes are timed with the index call (insert = map.set +
 *   insert, update = map.get + replace + map.set, rank = map.get + rankOf, around = map.get +
 *   around). The map stands in for the Durable Object's SQLite primary-key read, whose cost the
 *   HTTP benchmark (bench/leaderboard-http.bench.ts) measures. The other way, key to player, is a
 *   SQLite index read in the Durable Object and is not done here: pages and windows return keys,
 *   where Redis returns members with scores. A bulk load builds the index alone: the player to key
 *   lookup is SQLite's and survives a wake, while Redis's ZADD also fills its member hash.
 * - Redis is driven through a pipelining client: one write per batch, so its per-command network
 *   cost is amortised over the batch (pipeline depth = batch size, printed in the report). Each
 *   point operation is its own command (one ZADD per submission), as a game server would send them.
 * - RankIndex is called in-process with the same batches and the same random operations; its
 *   numbers therefore contain no network at all, which is the point of keeping the index in the
 *   Durable Object.
 * - Each figure is the median over RUNS runs of (operations / time spent in timed batches); p99 is
 *   over every batch of every run. One unmeasured warm-up run precedes each measurement.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { RankIndex, compareEntries } from '../workers/core/rank-index.ts'
import type { RankKey } from '../workers/core/rank-index.ts'
import { startRedis } from '../local/redis.ts'
import { RespClient, RespError } from './lib/resp.ts'
import type { RespValue } from './lib/resp.ts'

const SIZES = [1_000, 100_000, 1_000_000]
const RUNS = 7
/** Point operations per batch, and Redis pipeline depth for them. */
const POINT_BATCH = 1_000
/** Range reads per batch (each returns up to 100 entries), and Redis pipeline depth for them. */
const RANGE_BATCH = 100
const POINT_OPS = 50_000
const RANGE_OPS = 5_000
/** Runs for bulk loads, which take seconds each at 1M entries. */
const LOAD_RUNS = 3
const TOP = 100
const AROUND = 21
const KEY = 'bench:board'

interface Measured {
  opsPerSec: number
  p99Ms: number
}

/** Rank of a key by the tree alone, per board size (no Redis counterpart, so not a table row). */
const keyRanks = new Map<number, Measured>()

interface Row {
  size: number
  op: string
  batch: string
  index: Measured
  redis: Measured
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >>> 1
  return sorted.length % 2 === 1
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number
}

/** A run reports its per-batch times; ops/s is computed from their sum. */
type Run = () => Promise<{ ops: number; batchMs: number[] }>

async function measure(run: Run, runs = RUNS, warmUp = true): Promise<Measured> {
  if (warmUp) await run() // JIT for the index, caches and allocator for Redis
  const throughputs: number[] = []
  const batches: number[] = []
  for (let i = 0; i < runs; i++) {
    const { ops, batchMs } = await run()
    const total = batchMs.reduce((a, b) => a + b, 0)
    throughputs.push((ops / total) * 1000)
    batches.push(...batchMs)
  }
  return { opsPerSec: median(throughputs), p99Ms: percentile(batches, 99) }
}

/** Deterministic PRNG (mulberry32) so both contenders see the same operations. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Times `body(from, to)` over [0, ops) in batches of `batch`. */
function timeSync(ops: number, batch: number, body: (from: number, to: number) => void): number[] {
  const times: number[] = []
  for (let from = 0; from < ops; from += batch) {
    const to = Math.min(ops, from + batch)
    const t0 = performance.now()
    body(from, to)
    times.push(performance.now() - t0)
  }
  return times
}

async function timeAsync(
  ops: number,
  batch: number,
  body: (from: number, to: number) => Promise<void>,
): Promise<number[]> {
  const times: number[] = []
  for (let from = 0; from < ops; from += batch) {
    const to = Math.min(ops, from + batch)
    const t0 = performance.now()
    await body(from, to)
    times.push(performance.now() - t0)
  }
  return times
}

function checkReplies(replies: RespValue[]): RespValue[] {
  for (const reply of replies) if (reply instanceof RespError) throw reply
  return replies
}

let sink = 0

async function benchSize(
  size: number,
  redis: RespClient,
  rows: Row[],
  log: (s: string) => void,
): Promise<void> {
  const random = prng(size)
  const ids: string[] = []
  const scores: number[] = []
  for (let i = 0; i < size; i++) {
    ids.push(`player:${i}`)
    scores.push(Math.floor(random() * 1e9))
  }
  let seq = 0
  const index = new RankIndex('desc')
  /** Player id to current key: the Durable Object's SQLite primary-key read, here a Map. */
  const keyOf = new Map<string, RankKey>()
  const pointBatch = Math.min(POINT_BATCH, size)
  const add = (label: string, batch: string, i: Measured, r: Measured) => {
    rows.push({ size, op: label, batch, index: i, redis: r })
    log(
      `${size.toLocaleString('en-US')} ${label}: index ${Math.round(i.opsPerSec).toLocaleString('en-US')}/s, ` +
        `redis ${Math.round(r.opsPerSec).toLocaleString('en-US')}/s`,
    )
  }
  /** ZADDs of 1,000 members each, the players numbered in `order`, in that order. */
  const zaddMany = (key: string, order: number[]): string[][] => {
    const commands: string[][] = []
    for (let start = 0; start < order.length; start += 1_000) {
      const command = ['ZADD', key]
      for (const i of order.slice(start, start + 1_000)) {
        command.push(String(scores[i]), ids[i] as string)
      }
      commands.push(command)
    }
    return commands
  }
  const players = (from: number, to: number) =>
    Array.from({ length: to - from }, (_, i) => from + i)

  // insert: new players join a board that already holds size - fresh entries, so every insert
  // happens at (nearly) the target size. They are removed again, untimed, after each run; a
  // board smaller than POINT_OPS is rebuilt from empty until POINT_OPS inserts were made.
  const fresh = Math.min(POINT_OPS, size)
  const base = size - fresh
  const reps = Math.ceil(POINT_OPS / fresh)
  for (let i = 0; i < base; i++) {
    keyOf.set(ids[i] as string, { score: scores[i] as number, subscore: 0, seq: seq++ })
  }
  index.load(keyOf.values())
  await redis.command('DEL', KEY)
  checkReplies(await redis.pipeline(zaddMany(KEY, players(0, base))))
  const insertIndex = await measure(async () => {
    const batchMs: number[] = []
    for (let rep = 0; rep < reps; rep++) {
      batchMs.push(
        ...timeSync(fresh, pointBatch, (from, to) => {
          for (let i = base + from; i < base + to; i++) {
            const key: RankKey = { score: scores[i] as number, subscore: 0, seq: seq++ }
            keyOf.set(ids[i] as string, key)
            index.insert(key)
          }
        }),
      )
      for (let i = base; i < size; i++) {
        index.remove(keyOf.get(ids[i] as string) as RankKey)
        keyOf.delete(ids[i] as string)
      }
    }
    return { ops: fresh * reps, batchMs }
  })
  const insertRedis = await measure(async () => {
    const batchMs: number[] = []
    for (let rep = 0; rep < reps; rep++) {
      batchMs.push(
        ...(await timeAsync(fresh, pointBatch, async (from, to) => {
          const commands: string[][] = []
          for (let i = base + from; i < base + to; i++) {
            commands.push(['ZADD', KEY, String(scores[i]), ids[i] as string])
          }
          checkReplies(await redis.pipeline(commands))
        })),
      )
      const removals: string[][] = []
      for (let i = base; i < size; i++) removals.push(['ZREM', KEY, ids[i] as string])
      checkReplies(await redis.pipeline(removals))
    }
    return { ops: fresh * reps, batchMs }
  })
  add('insert (ZADD new member)', `${pointBatch}`, insertIndex, insertRedis)
  for (let i = base; i < size; i++) {
    const key: RankKey = { score: scores[i] as number, subscore: 0, seq: seq++ }
    keyOf.set(ids[i] as string, key)
    index.insert(key)
  }
  checkReplies(await redis.pipeline(zaddMany(KEY, players(base, size))))
  const card = await redis.command('ZCARD', KEY)
  if (card !== size || index.size !== size || keyOf.size !== size)
    throw new Error(`built ${card} / ${index.size} / ${keyOf.size}, wanted ${size}`)

  // update: a random player's score changes (a new submission, so a new seq).
  const opIds: string[] = []
  const opScores: number[] = []
  const newOps = () => {
    opIds.length = 0
    opScores.length = 0
    for (let i = 0; i < POINT_OPS; i++) {
      opIds.push(ids[Math.floor(random() * size)] as string)
      opScores.push(Math.floor(random() * 1e9))
    }
  }
  const updateIndex = await measure(async () => {
    newOps()
    const batchMs = timeSync(POINT_OPS, POINT_BATCH, (from, to) => {
      for (let i = from; i < to; i++) {
        const id = opIds[i] as string
        const next: RankKey = { score: opScores[i] as number, subscore: 0, seq: seq++ }
        index.replace(keyOf.get(id), next)
        keyOf.set(id, next)
      }
    })
    return { ops: POINT_OPS, batchMs }
  })
  const updateRedis = await measure(async () => {
    newOps()
    const batchMs = await timeAsync(POINT_OPS, POINT_BATCH, async (from, to) => {
      const commands: string[][] = []
      for (let i = from; i < to; i++)
        commands.push(['ZADD', KEY, String(opScores[i]), opIds[i] as string])
      checkReplies(await redis.pipeline(commands))
    })
    return { ops: POINT_OPS, batchMs }
  })
  add('update (ZADD existing)', `${POINT_BATCH}`, updateIndex, updateRedis)

  // rank of a random player.
  const rankIndex = await measure(async () => {
    newOps()
    const batchMs = timeSync(POINT_OPS, POINT_BATCH, (from, to) => {
      for (let i = from; i < to; i++) {
        sink += index.rankOf(keyOf.get(opIds[i] as string) as RankKey) as number
      }
    })
    return { ops: POINT_OPS, batchMs }
  })
  const rankRedis = await measure(async () => {
    newOps()
    const batchMs = await timeAsync(POINT_OPS, POINT_BATCH, async (from, to) => {
      const commands: string[][] = []
      for (let i = from; i < to; i++) commands.push(['ZREVRANK', KEY, opIds[i] as string])
      for (const r of checkReplies(await redis.pipeline(commands))) sink += r as number
    })
    return { ops: POINT_OPS, batchMs }
  })
  add('rank (ZREVRANK)', `${POINT_BATCH}`, rankIndex, rankRedis)

  // rank of a key, the tree alone: the same random players' keys, copied beforehand into fresh
  // objects side by side, so neither the map nor keys scattered over the heap are timed. Its
  // growth with the board is the tree's own (see the report); Redis has no such operation.
  keyRanks.set(
    size,
    await measure(async () => {
      newOps()
      const keys = opIds.map((id) => ({ ...(keyOf.get(id) as RankKey) }))
      const batchMs = timeSync(POINT_OPS, POINT_BATCH, (from, to) => {
        for (let i = from; i < to; i++) sink += index.rankOf(keys[i] as RankKey) as number
      })
      return { ops: POINT_OPS, batchMs }
    }),
  )

  // score of a random player: the lookup by id that every rank by player starts with (here the
  // map), and nothing else. Its growth with the board is the floor under rank's (see the report).
  const scoreIndex = await measure(async () => {
    newOps()
    const batchMs = timeSync(POINT_OPS, POINT_BATCH, (from, to) => {
      for (let i = from; i < to; i++) sink += (keyOf.get(opIds[i] as string) as RankKey).score
    })
    return { ops: POINT_OPS, batchMs }
  })
  const scoreRedis = await measure(async () => {
    newOps()
    const batchMs = await timeAsync(POINT_OPS, POINT_BATCH, async (from, to) => {
      const commands: string[][] = []
      for (let i = from; i < to; i++) commands.push(['ZSCORE', KEY, opIds[i] as string])
      for (const r of checkReplies(await redis.pipeline(commands))) sink += Number(r)
    })
    return { ops: POINT_OPS, batchMs }
  })
  add('score (ZSCORE)', `${POINT_BATCH}`, scoreIndex, scoreRedis)

  // top page: the first 100 entries.
  const topIndex = await measure(async () => {
    const batchMs = timeSync(RANGE_OPS, RANGE_BATCH, (from, to) => {
      for (let i = from; i < to; i++) sink += index.page(null, TOP).length
    })
    return { ops: RANGE_OPS, batchMs }
  })
  const topRedis = await measure(async () => {
    const batchMs = await timeAsync(RANGE_OPS, RANGE_BATCH, async (from, to) => {
      const commands: string[][] = []
      for (let i = from; i < to; i++) {
        commands.push(['ZREVRANGE', KEY, '0', String(TOP - 1), 'WITHSCORES'])
      }
      for (const r of checkReplies(await redis.pipeline(commands)))
        sink += (r as RespValue[]).length
    })
    return { ops: RANGE_OPS, batchMs }
  })
  add(`top ${TOP} (ZREVRANGE 0 ${TOP - 1})`, `${RANGE_BATCH}`, topIndex, topRedis)

  // around: rank of a random player, then the 21 entries centred on it.
  const window = Math.min(AROUND, size)
  const aroundIndex = await measure(async () => {
    newOps()
    const batchMs = timeSync(RANGE_OPS, RANGE_BATCH, (from, to) => {
      for (let i = from; i < to; i++) {
        sink += index.around(keyOf.get(opIds[i] as string) as RankKey, AROUND).length
      }
    })
    return { ops: RANGE_OPS, batchMs }
  })
  const aroundRedis = await measure(async () => {
    newOps()
    const batchMs = await timeAsync(RANGE_OPS, RANGE_BATCH, async (from, to) => {
      const ranks: string[][] = []
      for (let i = from; i < to; i++) ranks.push(['ZREVRANK', KEY, opIds[i] as string])
      const replies = checkReplies(await redis.pipeline(ranks))
      const ranges = replies.map((r) => {
        const start = Math.max(0, Math.min((r as number) - ((window - 1) >>> 1), size - window))
        return ['ZREVRANGE', KEY, String(start), String(start + window - 1), 'WITHSCORES']
      })
      for (const r of checkReplies(await redis.pipeline(ranges))) sink += (r as RespValue[]).length
    })
    return { ops: RANGE_OPS, batchMs }
  })
  add(`around ${AROUND} (ZREVRANK + ZREVRANGE)`, `${RANGE_BATCH}`, aroundIndex, aroundRedis)

  // bulk load: the Durable Object's rebuild on wake, against ZADD with 1,000 members per command.
  // Twice: from keys in no order, and from keys already in board order, which is how a wake reads
  // them (SQLite, ORDER BY the rank index) and which load streams straight into leaves without a
  // sort. Redis gets the members in the same order each time. Fewer runs: at 1M one load takes
  // seconds on each side.
  const loadReps = Math.ceil(POINT_OPS / size)
  const warm = size < 1_000_000
  const unsorted = ids.map((_, i) => i)
  const keys: RankKey[] = unsorted.map((i) => ({ score: scores[i] as number, subscore: 0, seq: i }))
  const sorted = [...unsorted].sort((a, b) =>
    compareEntries('desc', keys[a] as RankKey, keys[b] as RankKey),
  )
  const bulkLoad = async (label: string, order: number[]) => {
    const input = order.map((i) => keys[i] as RankKey)
    const loadIndex = await measure(
      async () => {
        const batchMs: number[] = []
        for (let rep = 0; rep < loadReps; rep++) {
          const target = new RankIndex('desc')
          batchMs.push(...timeSync(1, 1, () => target.load(input)))
          if (target.size !== size) throw new Error(`loaded ${target.size}, wanted ${size}`)
          sink += target.size
        }
        return { ops: size * loadReps, batchMs }
      },
      LOAD_RUNS,
      warm,
    )
    const loadCommands = zaddMany(`${KEY}:load`, order)
    const loadRedis = await measure(
      async () => {
        const batchMs: number[] = []
        for (let rep = 0; rep < loadReps; rep++) {
          await redis.command('DEL', `${KEY}:load`)
          batchMs.push(
            ...(await timeAsync(1, 1, async () => {
              checkReplies(await redis.pipeline(loadCommands))
            })),
          )
        }
        await redis.command('DEL', `${KEY}:load`)
        return { ops: size * loadReps, batchMs }
      },
      LOAD_RUNS,
      warm,
    )
    add(label, 'whole board', loadIndex, loadRedis)
  }
  await bulkLoad('bulk load, unsorted (load / ZADD ×1000 members)', unsorted)
  await bulkLoad('bulk load, in order (load / ZADD ×1000 members)', sorted)
  await redis.command('DEL', KEY)
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}

function fmtMs(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(2) : ms.toFixed(3)
}

async function main(): Promise<void> {
  const started = Date.now()
  const server = await startRedis()
  const redis = await RespClient.connect(server.port)
  const serverVersion =
    /redis_version:(\S+)/.exec(String(await redis.command('INFO', 'server')))?.[1] ?? 'unknown'
  const rows: Row[] = []
  try {
    for (const size of SIZES)
      await benchSize(size, redis, rows, (s) => process.stderr.write(`${s}\n`))
  } finally {
    redis.close()
    await server.stop()
  }

  const row = (size: number, op: string) => {
    const found = rows.find((r) => r.size === size && r.op.startsWith(op))
    if (found === undefined) throw new Error(`missing ${op} row`)
    return found
  }
  const smallest = SIZES[0] as number
  const largest = SIZES[SIZES.length - 1] as number
  const growth = (op: string, who: 'index' | 'redis') =>
    (row(smallest, op)[who].opsPerSec / row(largest, op)[who].opsPerSec).toFixed(2)
  const lines = [
    '# RankIndex vs Redis sorted set',
    '',
    'Command: `npx node bench/rank-index.bench.ts`',
    '',
    `Machine: ${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores; Node ${process.version}; redis-server ${serverVersion} on 127.0.0.1.`,
    `Each figure: median over ${RUNS} runs (after a warm-up run) of operations per second; p99 is of per-batch`,
    `wall time over all runs. Redis is pipelined: pipeline depth = the batch size (${POINT_BATCH} for point operations,`,
    `${RANGE_BATCH} for range reads; around needs two round trips per batch, ranks then ranges). Point operations`,
    `per run: ${fmt(POINT_OPS)} (random players, uniform); range reads per run: ${fmt(RANGE_OPS)}. Insert adds new`,
    `players to a board already holding the rest of the entries (removed again untimed; the 1,000 board is`,
    `rebuilt from empty). Bulk load: ${LOAD_RUNS} runs, a "batch" is one whole board (RankIndex.load vs pipelined`,
    'ZADDs of 1,000 members each), once from keys in no order and once from keys already in board order, as a',
    'wake reads them from SQLite (load then skips its sort); Redis gets the members in the same order; no warm-up',
    "at 1M; with one batch a run, a bulk load's p99 is the slowest of its runs. Redis members are player ids with plain scores (no composite tie-break encoding, which would only",
    'slow Redis down); RankIndex orders by score, subscore, seq. RankIndex runs in-process: its figures contain',
    'no network, Redis figures do.',
    '',
    'RankIndex holds keys (score, subscore, seq), not player ids, while ZADD, ZREVRANK and ZSCORE find a',
    "member's score in Redis's own hash. So the RankIndex figures include the lookup from player id to current",
    'key in a `Map<string, RankKey>` kept beside the index, timed with it: insert is map.set + insert, update is',
    'map.get + replace + map.set, rank is map.get + rankOf, around is map.get + around, score is map.get alone.',
    "The map stands in for the Durable Object's SQLite primary-key read, which the leaderboard HTTP benchmark",
    'measures. Top and around return keys, Redis members with scores: turning keys into players is a SQLite',
    'index read in the Durable Object, not timed here. Bulk load builds the index alone (the player lookup is',
    "SQLite's and outlives a wake), while ZADD also fills Redis's member hash.",
    '',
    '| entries | operation | batch | RankIndex ops/s | RankIndex p99 batch (ms) | Redis ops/s | Redis p99 batch (ms) | RankIndex ÷ Redis |',
    '|---:|---|---:|---:|---:|---:|---:|---:|',
    ...rows.map(
      (r) =>
        `| ${fmt(r.size)} | ${r.op} | ${r.batch} | ${fmt(r.index.opsPerSec)} | ${fmtMs(r.index.p99Ms)} | ` +
        `${fmt(r.redis.opsPerSec)} | ${fmtMs(r.redis.p99Ms)} | ${(r.index.opsPerSec / r.redis.opsPerSec).toFixed(1)}× |`,
    ),
    '',
    `rank at ${fmt(largest)} vs ${fmt(smallest)} entries (time per operation): RankIndex ${growth('rank', 'index')}×, ` +
      `Redis ${growth('rank', 'redis')}×.`,
    `score at ${fmt(largest)} vs ${fmt(smallest)} entries (the lookup by player id alone, the map here): RankIndex ${growth('score', 'index')}×, ` +
      `Redis ${growth('score', 'redis')}×.`,
    `rank of a key, the tree alone (no lookup by player; ops/s ${SIZES.map((n) => `${fmt(n)}: ${fmt(keyRanks.get(n)!.opsPerSec)}`).join(', ')}): ` +
      `${fmt(largest)} vs ${fmt(smallest)} entries ${(keyRanks.get(smallest)!.opsPerSec / keyRanks.get(largest)!.opsPerSec).toFixed(2)}×.`,
    '',
    `Total benchmark time: ${((Date.now() - started) / 1000).toFixed(0)} s.`,
    '',
  ]
  const report = lines.join('\n')
  process.stdout.write(report)
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'rank-index.md')
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, report)
  if (sink === Number.MIN_VALUE) process.stderr.write('') // keeps results observable
}

await main()
