/**
 * Soak: the steady mix at a moderate rate for minutes; latency must not drift upward and errors
 * must stay near zero (leaks, growing tables, caches that never evict show up as drift).
 *
 *   npx node bench/load/soak.ts [--seconds 180] [--concurrency 12] [--players 200]
 */
import { fileURLToPath } from 'node:url'
import { flag, summarize, withStack, writeReport, type Ctx } from './lib.ts'
import { runSteadyMix } from './mix.ts'

export async function soak(ctx: Ctx) {
  const seconds = flag('soak-seconds', flag('seconds', 180))
  const concurrency = flag('concurrency', 12)
  const nPlayers = flag('players', 200)
  const rec = await runSteadyMix(ctx, 'soak', { seconds, concurrency, players: nPlayers })
  const third = (seconds * 1000) / 3
  const first = summarize(rec.recs.filter((r) => r.t < third))
  const last = summarize(rec.recs.filter((r) => r.t >= 2 * third))
  const all = summarize(rec.recs)
  return writeReport({
    name: 'soak',
    title: `Soak: ${Math.round(seconds / 60)} minutes of the steady mix`,
    description:
      `${nPlayers} players, ${concurrency} concurrent clients for ${seconds} s (70% reads / 30% submits). ` +
      'The first and last thirds are compared: p99 must not grow by more than half (plus 50 ms of noise).',
    command: `npx node bench/load/soak.ts --seconds ${seconds} --concurrency ${concurrency}`,
    rows: [
      ['all', all],
      ['first third', first],
      ['last third', last],
    ],
    thresholds: [
      { name: 'error rate', actual: all.errorRate * 100, op: '<=', limit: 0.1, unit: '%' },
      {
        name: 'p99, last third',
        actual: last.p99,
        op: '<=',
        limit: first.p99 * 1.5 + 50,
        unit: ' ms',
      },
      {
        name: 'throughput, last third',
        actual: last.throughput,
        op: '>=',
        limit: first.throughput * 0.7,
        unit: ' req/s',
      },
    ],
    rec,
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await withStack(soak)
  console.log(r.markdown)
  process.exit(r.pass ? 0 : 1)
}
