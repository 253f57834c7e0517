/**
 * HTTP submissions and top reads through the local Worker, against a no-op route (/health) of
 * the same Worker, same load generator, same run. Rounds alternate the scenarios so drift on this
 * shared machine hits them alike; we report medians over rounds and ratios to the no-op.
 *
 *   npx node bench/leaderboard-http.bench.ts [--rounds 5] [--seconds 5] [--concurrency 16]
 *
 * `--only submit` runs the no-op and the scenarios whose name contains "submit" (for profiling
 * one path); such a run prints its table but does not replace bench/results.
 */
import { writeFileSync, mkdirSync } from 'node:fs'
import { flag, fmt, median, quantile, runLoad } from './lib/load.ts'
import { startStack } from './lib/stack.ts'

const ROUNDS = flag('rounds', 5)
const SECONDS = flag('seconds', 5)
const CONCURRENCY = flag('concurrency', 16)
/** Guest players of the player-token submission scenario. */
const PLAYERS = flag('players', 1000)
const onlyAt = process.argv.indexOf('--only')
const ONLY = onlyAt > 0 ? process.argv[onlyAt + 1] : undefined

// The uncached scenario measures the board's own read path: one load generator's address asks for
// far more fresh reads than FRESH_READS_PER_MINUTE lets a client have.
const stack = await startStack({
  vars: { FRESH_READS_PER_MINUTE: '1000000', GUEST_AUTH_PER_MINUTE: '10000' },
})
try {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' }
  const board = 'bench-board'
  const put = await fetch(`${stack.url}/v1/admin/leaderboards/${board}`, {
    method: 'PUT',
    headers: admin,
    body: JSON.stringify({ submitsPerMinute: 600 }),
  })
  if (!put.ok) throw new Error(`create board: ${put.status} ${await put.text()}`)
  // A board of realistic size before measuring reads.
  for (let b = 0; b < 20; b++) {
    const entries = Array.from({ length: 500 }, (_, i) => ({
      playerId: `seed-${b}-${i}`,
      score: Math.round(Math.random() * 1e6),
    }))
    const r = await fetch(`${stack.url}/v1/admin/leaderboards/${board}/entries`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ entries }),
    })
    if (!r.ok) throw new Error(`seed: ${r.status} ${await r.text()}`)
  }

  // Players submitting with their own tokens (HS256 guest tokens, verified on every request):
  // enough of them that none passes the board's 600 a minute at this machine's rates.
  const players: string[] = []
  for (let i = 0; i < PLAYERS; i += 20) {
    players.push(
      ...(await Promise.all(
        Array.from({ length: Math.min(20, PLAYERS - i) }, async (_, j) => {
          const res = await fetch(`${stack.url}/v1/auth/guest`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ deviceId: `bench-lb-device-${i + j}` }),
          })
          if (!res.ok) throw new Error(`guest: ${res.status} ${await res.text()}`)
          return ((await res.json()) as { token: string }).token
        }),
      )),
    )
  }

  let submitted = 0
  let playerSubmitted = 0
  const scenarios: Record<string, (i: number) => Promise<boolean>> = {
    'no-op (GET /health)': async () => (await fetch(`${stack.url}/health`)).ok,
    'submit (POST /scores)': async () => {
      const n = submitted++
      const res = await fetch(`${stack.url}/v1/leaderboards/${board}/scores`, {
        method: 'POST',
        headers: { ...admin, 'idempotency-key': `bench-${n}` },
        body: JSON.stringify({ playerId: `bench-player-${n}`, score: Math.random() * 1e6 }),
      })
      await res.arrayBuffer()
      return res.ok
    },
    'submit as a player (POST /scores, own token)': async () => {
      const n = playerSubmitted++
      const res = await fetch(`${stack.url}/v1/leaderboards/${board}/scores`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${players[n % players.length]}`,
          'content-type': 'application/json',
          'idempotency-key': `bench-player-${n}`,
        },
        body: JSON.stringify({ score: Math.random() * 1e6 }),
      })
      await res.arrayBuffer()
      return res.ok
    },
    'top, cached (GET /top?limit=10)': async () => {
      const res = await fetch(`${stack.url}/v1/leaderboards/${board}/top?limit=10`)
      await res.arrayBuffer()
      return res.ok
    },
    'top, uncached (Cache-Control: no-cache)': async () => {
      const res = await fetch(`${stack.url}/v1/leaderboards/${board}/top?limit=10`, {
        headers: { 'cache-control': 'no-cache' },
      })
      await res.arrayBuffer()
      return res.ok
    },
  }
  if (ONLY) {
    for (const name of Object.keys(scenarios))
      if (!name.startsWith('no-op') && !name.includes(ONLY)) delete scenarios[name]
  }
  // Warm up every path (JIT, connections, caches).
  for (const send of Object.values(scenarios))
    await runLoad({ concurrency: CONCURRENCY, durationMs: 1000, send })

  const rows: Record<
    string,
    {
      tput: number[]
      p50: number[]
      p99: number[]
      errors: number
      ratio: number[]
      p99ratio: number[]
    }
  > = {}
  for (let round = 0; round < ROUNDS; round++) {
    const results: Record<string, { tput: number; p50: number; p99: number; errors: number }> = {}
    for (const [name, send] of Object.entries(scenarios)) {
      const r = await runLoad({ concurrency: CONCURRENCY, durationMs: SECONDS * 1000, send })
      results[name] = {
        tput: r.throughput,
        p50: quantile(r.latenciesMs, 0.5),
        p99: quantile(r.latenciesMs, 0.99),
        errors: r.errors,
      }
    }
    const base = results['no-op (GET /health)']!
    for (const [name, r] of Object.entries(results)) {
      const row = (rows[name] ??= {
        tput: [],
        p50: [],
        p99: [],
        errors: 0,
        ratio: [],
        p99ratio: [],
      })
      row.tput.push(r.tput)
      row.p50.push(r.p50)
      row.p99.push(r.p99)
      row.errors += r.errors
      row.ratio.push(r.tput / base.tput)
      row.p99ratio.push(r.p99 / base.p99)
    }
    console.error(`round ${round + 1}/${ROUNDS} done`)
  }

  const lines = [
    '| scenario | throughput (req/s, median) | vs no-op | p50 ms | p99 ms | p99 vs no-op | errors |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...Object.entries(rows).map(
      ([name, r]) =>
        `| ${name} | ${fmt(median(r.tput), 0)} | ${fmt(median(r.ratio) * 100, 0)}% | ${fmt(median(r.p50), 2)} | ${fmt(median(r.p99), 2)} | ${fmt(median(r.p99ratio), 2)}× | ${r.errors} |`,
    ),
  ]
  const md = [
    '# Leaderboard HTTP benchmark',
    '',
    `${stack.runtime}, real PostgreSQL behind the Neon relay, no Redis. ${ROUNDS} rounds × ${SECONDS} s per scenario, ` +
      `${CONCURRENCY} concurrent keep-alive clients in one Node process on the same 2-core machine. Medians over rounds; ratios are taken within each round. ` +
      `Board pre-filled with 10,000 entries. \`submit\`: a game server's, with the admin key, each adding a new player; ` +
      `\`submit as a player\`: ${PLAYERS} guest players' own (HS256 tokens verified on each request), in turn, each replacing the player's score if better. Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    `Command: \`npx node bench/leaderboard-http.bench.ts --rounds ${ROUNDS} --seconds ${SECONDS} --concurrency ${CONCURRENCY}\``,
    '',
    ...lines,
    '',
    'Throughput vs the no-op in each round (the spread behind the medians):',
    '',
    ...Object.entries(rows)
      .filter(([name]) => name !== 'no-op (GET /health)')
      .map(([name, r]) => `- ${name}: ${r.ratio.map((x) => `${fmt(x * 100, 0)}%`).join(', ')}`),
    '',
    'Goal: submissions and top reads at ≥ 50% of the no-op throughput, with p99 under 3× the no-op p99.',
    '',
  ].join('\n')
  console.log(md)
  if (!ONLY) {
    mkdirSync('bench/results', { recursive: true })
    writeFileSync('bench/results/leaderboard-http.md', md)
  }
} finally {
  await stack.stop()
}
