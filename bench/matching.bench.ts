/**
 * MatchIndex on 100,000 waiting tickets, for 1v1, 2v2 with duos, and 5v5 with parties.
 * Run: npx node bench/matching.bench.ts   (writes bench/results/matching.md)
 *
 * Pool: ticket ratings ~ Normal(1500, 300), party members within ~N(0, 50) of their party's base,
 * waits uniform in 0..120 s, rules: start gap 50, +5 per second, capped at 400.
 *
 * What is timed, per queue shape:
 * - build: adding 100,000 tickets to an empty index.
 * - full sweep: the first findMatches over those 100,000 (every ticket is new, so every one is
 *   searched, oldest first). With this density nearly all of them match.
 * - steady join: after the sweep, JOINS tickets arrive 5 ms apart (200 joins/s, realistic
 *   ratings and parties); each sample is one `add` plus one `findMatches(now)`, as the
 *   MatchPool DO does on a join. The pool is whatever the matcher leaves waiting.
 * - backlog join: 100,000 tickets waiting unmatched (a fresh index whose first call has run with
 *   `max: 1`, e.g. just restored from storage or after a burst), then JOINS samples of `add` plus
 *   `findMatches(now, { max: 1 })` with time advancing 5 ms each: the cost of one bounded call
 *   while 100,000 wait. The first call (which takes note of all 100,000 new tickets) is reported
 *   separately.
 * Percentiles are over all samples of one run, after WARMUP unmeasured samples.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { MatchIndex, type QueueRules, type Ticket } from '../workers/core/matching.ts'

const POOL = 100_000
const JOINS = 5_000
const WARMUP = 200
const STEP_MS = 5
const NOW = 1_000_000_000

interface Shape {
  name: string
  rules: QueueRules
  /** Cumulative distribution of party sizes: [size, probability]. */
  parties: [number, number][]
}

const base = { maxRatingGap: 50, widenPerSecond: 5, maxWidenedGap: 400 }
const SHAPES: Shape[] = [
  { name: '1v1', rules: { teams: 2, teamSize: 1, ...base }, parties: [[1, 1]] },
  {
    name: '2v2 (30% duos)',
    rules: { teams: 2, teamSize: 2, ...base },
    parties: [
      [1, 0.7],
      [2, 0.3],
    ],
  },
  {
    name: '5v5 (parties of 1/2/3/5)',
    rules: { teams: 2, teamSize: 5, ...base },
    parties: [
      [1, 0.6],
      [2, 0.2],
      [3, 0.12],
      [5, 0.08],
    ],
  },
]

/**
 * Queues whose waiting parties can never add up to a team, ratings aside. Every ticket accepts most
 * of the others, so a matcher that searched each one on every join would be quadratic here.
 */
const UNFILLABLE_POOL = 400
const UNFILLABLE: Shape[] = [
  {
    name: '4 teams of 16, parties of 9–15',
    rules: { teams: 4, teamSize: 16, ...base },
    parties: [9, 10, 11, 12, 13, 14, 15].map((size): [number, number] => [size, 1 / 7]),
  },
  {
    name: '2 teams of 4, parties of 3',
    rules: { teams: 2, teamSize: 4, ...base },
    parties: [[3, 1]],
  },
]

/** mulberry32: small, fast, seedable. */
function rng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function normal(random: () => number): number {
  const u = 1 - random()
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random())
}

function makeTickets(shape: Shape, count: number, seed: number, at: () => number): Ticket[] {
  const random = rng(seed)
  const out: Ticket[] = []
  for (let i = 0; i < count; i++) {
    let r = random()
    let size = 1
    for (const [s, p] of shape.parties) {
      size = s
      if (r < p) break
      r -= p
    }
    const center = 1500 + 300 * normal(random)
    out.push({
      id: `s${seed}-${i}`,
      players: Array.from({ length: size }, (_, k) => ({
        playerId: `s${seed}-${i}-${k}`,
        rating: Math.round(center + 50 * normal(random)),
      })),
      enqueuedAt: at(),
    })
  }
  return out
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!
}

function ms(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)
}

function us(x: number): string {
  return (x * 1000).toFixed(x * 1000 >= 100 ? 0 : 1)
}

interface Row {
  shape: string
  buildMs: number
  sweepMs: number
  matches: number
  left: number
  steadyP50: number
  steadyP99: number
  steadyPool: number
  steadyMatched: number
  backlogFirstMs: number
  backlogP50: number
  backlogP99: number
  backlogPool: number
}

function joins(
  index: MatchIndex,
  shape: Shape,
  seed: number,
  start: number,
  max: number | undefined,
): { samples: number[]; matchedTickets: number } {
  let now = start
  const arrivals = makeTickets(shape, JOINS + WARMUP, seed, () => now)
  const samples: number[] = []
  let matchedTickets = 0
  arrivals.forEach((t, i) => {
    now += STEP_MS
    t.enqueuedAt = now
    const t0 = performance.now()
    index.add(t)
    const found = index.findMatches(now, max === undefined ? {} : { max })
    const dt = performance.now() - t0
    for (const m of found) matchedTickets += m.tickets.length
    if (i >= WARMUP) samples.push(dt)
  })
  samples.sort((a, b) => a - b)
  return { samples, matchedTickets }
}

function run(shape: Shape, seed: number): Row {
  const random = rng(seed * 7 + 1)
  const pool = makeTickets(shape, POOL, seed, () => NOW - Math.floor(random() * 120_000))

  const index = new MatchIndex(shape.rules)
  let t0 = performance.now()
  for (const t of pool) index.add(t)
  const buildMs = performance.now() - t0

  t0 = performance.now()
  const swept = index.findMatches(NOW)
  const sweepMs = performance.now() - t0
  const perMatch = shape.rules.teams * shape.rules.teamSize
  for (const m of swept) {
    const players = m.teams.reduce((s, t) => s + t.playerIds.length, 0)
    if (players !== perMatch) throw new Error(`bad match size ${players}`)
  }
  const left = index.size

  const steady = joins(index, shape, seed + 1000, NOW, undefined)

  const backlog = new MatchIndex(shape.rules)
  for (const t of pool) backlog.add(t)
  t0 = performance.now()
  backlog.findMatches(NOW, { max: 1 })
  const backlogFirstMs = performance.now() - t0
  const bl = joins(backlog, shape, seed + 2000, NOW, 1)

  return {
    shape: shape.name,
    buildMs,
    sweepMs,
    matches: swept.length,
    left,
    steadyP50: percentile(steady.samples, 0.5),
    steadyP99: percentile(steady.samples, 0.99),
    steadyPool: index.size,
    steadyMatched: steady.matchedTickets,
    backlogFirstMs,
    backlogP50: percentile(bl.samples, 0.5),
    backlogP99: percentile(bl.samples, 0.99),
    backlogPool: backlog.size,
  }
}

interface UnfillableRow {
  shape: string
  sweepMs: number
  p50: number
  p99: number
  pool: number
  matched: number
}

function runUnfillable(shape: Shape, seed: number): UnfillableRow {
  const random = rng(seed * 7 + 1)
  const index = new MatchIndex(shape.rules)
  const pool = makeTickets(shape, UNFILLABLE_POOL, seed, () => NOW - Math.floor(random() * 120_000))
  for (const t of pool) index.add(t)
  const t0 = performance.now()
  const swept = index.findMatches(NOW)
  const sweepMs = performance.now() - t0
  const steady = joins(index, shape, seed + 1000, NOW, undefined)
  return {
    shape: shape.name,
    sweepMs,
    p50: percentile(steady.samples, 0.5),
    p99: percentile(steady.samples, 0.99),
    pool: index.size,
    // Tickets matched, by the sweep and the joins after it (a match holds several).
    matched: swept.reduce((n, m) => n + m.tickets.length, 0) + steady.matchedTickets,
  }
}

/**
 * A crowd of one party size at one rating (new players all at the default 1500, queueing in
 * parties of 3 for 5v5: at most two such parties fit a match), then solos joining one by one at
 * the same rating, each join followed by `findMatches(now)`. Every fourth solo completes a match
 * with two of the parties; a search must get past the crowd to the solos.
 */
const CROWD = 5_000
const CROWD_JOINS = 1_000

interface CrowdRow {
  sweepMs: number
  p50: number
  p99: number
  matches: number
}

function runCrowd(): CrowdRow {
  const index = new MatchIndex({ teams: 2, teamSize: 5, ...base })
  const at1500 = (id: string, size: number, enqueuedAt: number): Ticket => ({
    id,
    players: Array.from({ length: size }, (_, k) => ({ playerId: `${id}-${k}`, rating: 1500 })),
    enqueuedAt,
  })
  for (let i = 0; i < CROWD; i++) index.add(at1500(`crowd-${i}`, 3, NOW - 120_000 + i))
  let t0 = performance.now()
  let matches = index.findMatches(NOW).length
  const sweepMs = performance.now() - t0
  const samples: number[] = []
  for (let i = 0; i < CROWD_JOINS; i++) {
    const now = NOW + (i + 1) * STEP_MS
    t0 = performance.now()
    index.add(at1500(`solo-${i}`, 1, now))
    matches += index.findMatches(now).length
    samples.push(performance.now() - t0)
  }
  samples.sort((a, b) => a - b)
  return { sweepMs, p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), matches }
}

/**
 * Parties that make teams only with a size that waits far away: 2 teams of 4, parties of 3
 * (each team needs a solo beside its trio), FAR_POOL of them waiting, then two solos at 4000 and
 * 4600 (far outside every trio's window, but enough that trios can fill teams as far as the
 * pool's sizes go), then FAR_JOINS trios at 1500, one every STEP_MS, each followed by
 * `findMatches(now)`. No trio can match: a join must not search the trios around it again.
 */
const FAR_POOL = 20_000
const FAR_JOINS = 1_000

interface FarRow {
  firstJoinMs: number
  p50: number
  p99: number
  matches: number
}

function runFarSizes(seed: number): FarRow {
  const random = rng(seed)
  const index = new MatchIndex({ teams: 2, teamSize: 4, ...base })
  const trio = (id: string, rating: number, enqueuedAt: number): Ticket => ({
    id,
    players: Array.from({ length: 3 }, (_, k) => ({ playerId: `${id}-${k}`, rating })),
    enqueuedAt,
  })
  for (let i = 0; i < FAR_POOL; i++) {
    index.add(trio(`trio-${i}`, 1500 + 300 * normal(random), NOW - Math.floor(random() * 120_000)))
  }
  let matches = index.findMatches(NOW).length
  let now = NOW
  for (const [id, rating] of [
    ['solo-a', 4000],
    ['solo-b', 4600],
  ] as const) {
    now += STEP_MS
    index.add({ id, players: [{ playerId: id, rating }], enqueuedAt: now })
    matches += index.findMatches(now).length
  }
  const samples: number[] = []
  for (let i = 0; i < FAR_JOINS; i++) {
    now += STEP_MS
    const t0 = performance.now()
    index.add(trio(`join-${i}`, 1500, now))
    matches += index.findMatches(now).length
    samples.push(performance.now() - t0)
  }
  const firstJoinMs = samples[0]!
  samples.sort((a, b) => a - b)
  return { firstJoinMs, p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), matches }
}

function main(): void {
  const rows: Row[] = []
  SHAPES.forEach((shape, i) => {
    const row = run(shape, 42 + i)
    rows.push(row)
    process.stdout.write(`${shape.name}: done\n`)
  })
  const unfillable = UNFILLABLE.map((shape, i) => runUnfillable(shape, 142 + i))
  const crowd = runCrowd()
  const far = runFarSizes(7)

  const lines: string[] = []
  lines.push('# MatchIndex benchmark')
  lines.push('')
  lines.push(
    `${POOL.toLocaleString('en-US')} waiting tickets, ratings ~ Normal(1500, 300), waits 0–120 s, ` +
      `gap 50 + 5/s capped at 400. Node ${process.version}, ${cpus()[0]?.model ?? 'unknown CPU'}, ` +
      `${new Date().toISOString().slice(0, 10)}. Run: \`npx node bench/matching.bench.ts\`.`,
  )
  lines.push('')
  lines.push('## Build and full sweep of 100,000 tickets')
  lines.push('')
  lines.push('| queue | build (add 100k) | full sweep (findMatches) | matches | tickets left |')
  lines.push('| --- | ---: | ---: | ---: | ---: |')
  for (const r of rows) {
    lines.push(
      `| ${r.shape} | ${ms(r.buildMs)} ms | ${ms(r.sweepMs)} ms | ${r.matches.toLocaleString('en-US')} | ${r.left.toLocaleString('en-US')} |`,
    )
  }
  lines.push('')
  lines.push(`## One join + findMatches (${JOINS.toLocaleString('en-US')} samples each)`)
  lines.push('')
  lines.push(
    '| queue | steady: p50 | steady: p99 | steady: pool after | backlog of 100k: first call | backlog: p50 | backlog: p99 | backlog: pool after |',
  )
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |')
  for (const r of rows) {
    lines.push(
      `| ${r.shape} | ${us(r.steadyP50)} µs | ${us(r.steadyP99)} µs | ${r.steadyPool.toLocaleString('en-US')} | ${ms(r.backlogFirstMs)} ms | ${us(r.backlogP50)} µs | ${us(r.backlogP99)} µs | ${r.backlogPool.toLocaleString('en-US')} |`,
    )
  }
  lines.push('')
  lines.push(
    '- steady: after the sweep, one ticket joins every 5 ms and `findMatches(now)` runs after each ' +
      'join; the pool is what stays unmatched. Only the new ticket, its neighbours and tickets ' +
      'whose windows just reached a partner are searched.',
  )
  lines.push(
    '- backlog: 100,000 tickets wait (none matched yet); each sample is one join plus ' +
      '`findMatches(now, { max: 1 })`. The first call takes note of all 100,000 new tickets.',
  )
  lines.push('')
  lines.push('## Queues whose parties can never fill a team')
  lines.push('')
  lines.push(
    `${UNFILLABLE_POOL} tickets waiting (waits 0–120 s), then ${JOINS.toLocaleString('en-US')} joins ` +
      `of the same shape, one every ${STEP_MS} ms, each followed by \`findMatches(now)\`.`,
  )
  lines.push('')
  lines.push(
    '| queue | first sweep | join + findMatches: p50 | p99 | waiting after | tickets matched |',
  )
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: |')
  for (const r of unfillable) {
    lines.push(
      `| ${r.shape} | ${ms(r.sweepMs)} ms | ${us(r.p50)} µs | ${us(r.p99)} µs | ${r.pool.toLocaleString('en-US')} | ${r.matched} |`,
    )
  }
  lines.push('')
  lines.push(
    '- A ticket whose party size cannot make the teams with the sizes waiting (ratings aside) is ' +
      'not searched; it is due again only when it comes to accept a ticket that can fill teams, ' +
      'and a failed search keeps the first time its walk could go otherwise. Before that ' +
      '(2026-12-02, the previous `workers/core/matching.ts` on the same machine, 100 joins after a ' +
      'warm-up), every join had each ticket that accepted the newcomer walk its whole window: 17.5 ' +
      'ms at p50 per join for 4 teams of 16 and 10.2 ms for 2 teams of 4, with 400 to 510 waiting.',
  )
  lines.push('')
  lines.push('## A crowd of one party size at one rating')
  lines.push('')
  lines.push(
    `5v5, ${CROWD.toLocaleString('en-US')} parties of 3 waiting, every player at 1500 (at most two ` +
      `such parties fit a match), then ${CROWD_JOINS.toLocaleString('en-US')} solos at 1500, one ` +
      `every ${STEP_MS} ms, each followed by \`findMatches(now)\`. Every fourth solo makes a match ` +
      'with two parties, if a search gets past the crowd to the solos.',
  )
  lines.push('')
  lines.push('| first sweep | join + findMatches: p50 | p99 | matches made | of possible |')
  lines.push('| ---: | ---: | ---: | ---: | ---: |')
  lines.push(
    `| ${ms(crowd.sweepMs)} ms | ${us(crowd.p50)} µs | ${us(crowd.p99)} µs | ${crowd.matches} | ${Math.floor(CROWD_JOINS / 4)} |`,
  )
  lines.push('')
  lines.push('## Parties that make teams only with a size waiting far away')
  lines.push('')
  lines.push(
    `2 teams of 4, ${FAR_POOL.toLocaleString('en-US')} parties of 3 waiting (ratings and waits as ` +
      'above), two solos at 4000 and 4600 (outside every window), then ' +
      `${FAR_JOINS.toLocaleString('en-US')} parties of 3 at 1500, one every ${STEP_MS} ms, each ` +
      'followed by `findMatches(now)`. None can match; the first join after the solos searches ' +
      'the parties around it once each (they had been set aside as unable to fill teams).',
  )
  lines.push('')
  lines.push('| first join after the solos | join + findMatches: p50 | p99 | matches made |')
  lines.push('| ---: | ---: | ---: | ---: |')
  lines.push(
    `| ${ms(far.firstJoinMs)} ms | ${us(far.p50)} µs | ${us(far.p99)} µs | ${far.matches} |`,
  )
  const report = lines.join('\n') + '\n'
  process.stdout.write('\n' + report)
  const out = join(dirname(fileURLToPath(import.meta.url)), 'results', 'matching.md')
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, report)
}

main()
