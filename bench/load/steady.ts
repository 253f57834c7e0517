/**
 * Steady state: many players, 70% reads / 30% submits, closed loop, on a 10,000-entry board.
 *
 *   npx node bench/load/steady.ts [--seconds 30] [--concurrency 32] [--players 200]
 */
import { fileURLToPath } from 'node:url'
import { flag, summarize, withStack, writeReport, type Ctx } from './lib.ts'
import { runSteadyMix } from './mix.ts'

export async function steady(ctx: Ctx) {
  const seconds = flag('seconds', 30)
  const concurrency = flag('concurrency', 32)
  const nPlayers = flag('players', 200)
  const rec = await runSteadyMix(ctx, 'steady', { seconds, concurrency, players: nPlayers })
  const all = summarize(rec.recs)
  const reads = summarize(rec.recs.filter((r) => r.kind !== 'submit'))
  const submits = summarize(rec.recs.filter((r) => r.kind === 'submit'))
  return writeReport({
    name: 'steady',
    title: 'Steady state: 70% reads / 30% submits',
    description:
      `${nPlayers} guest players, ${concurrency} concurrent keep-alive clients for ${seconds} s, closed loop, on a board pre-filled ` +
      'with 10,000 entries. Reads: top 10 (edge-cached), around a player and a player’s rank; submits with a fresh idempotency key each.',
    command: `npx node bench/load/steady.ts --seconds ${seconds} --concurrency ${concurrency} --players ${nPlayers}`,
    rows: [
      ['all', all],
      ['reads', reads],
      ['submits', submits],
    ],
    thresholds: [
      { name: 'error rate', actual: all.errorRate * 100, op: '<=', limit: 0.5, unit: '%' },
      { name: 'p95 latency', actual: all.p95, op: '<=', limit: 750, unit: ' ms' },
      { name: 'p99 latency', actual: all.p99, op: '<=', limit: 1500, unit: ' ms' },
      { name: 'throughput', actual: all.throughput, op: '>=', limit: 50, unit: ' req/s' },
    ],
    rec,
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await withStack(steady)
  console.log(r.markdown)
  process.exit(r.pass ? 0 : 1)
}
