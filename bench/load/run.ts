/**
 * Runs the load scenarios against one local stack (127.0.0.1 only), writes each one's
 * `results/<name>.md` and `.svg`, gathers them into `RESULTS.md`, and exits non-zero when any
 * threshold failed.
 *
 *   npx node bench/load/run.ts                       # all five, ~6 minutes
 *   npx node bench/load/run.ts --only steady,burst   # some
 *   npx node bench/load/run.ts --quick               # shorter runs (CI smoke): ~2 minutes
 *
 * Scenario flags pass through (`--seconds`, `--concurrency`, `--players`, `--entries`,
 * `--joins`, `--window`, `--soak-seconds`, `--close-seconds`).
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { startStack } from '../lib/stack.ts'
import { burst } from './burst.ts'
import { closeUnderLoad } from './close.ts'
import { flashCrowd } from './flash-crowd.ts'
import { ctxOf, formatMarkdown, LOAD_VARS, RESULTS_DIR, type Ctx } from './lib.ts'
import { soak } from './soak.ts'
import { steady } from './steady.ts'

const scenarios: Record<string, (ctx: Ctx) => Promise<{ pass: boolean; markdown: string }>> = {
  steady,
  burst,
  close: closeUnderLoad,
  'flash-crowd': flashCrowd,
  soak,
}

const QUICK = [
  '--seconds',
  '10',
  '--soak-seconds',
  '45',
  '--close-seconds',
  '25',
  '--entries',
  '20000',
  '--joins',
  '600',
  '--players',
  '200',
]

if (process.argv.includes('--quick')) {
  for (let i = 0; i < QUICK.length; i += 2) {
    if (!process.argv.includes(QUICK[i]!)) process.argv.push(QUICK[i]!, QUICK[i + 1]!)
  }
}
const only = process.argv.indexOf('--only')
const names = only > 0 ? process.argv[only + 1]!.split(',') : Object.keys(scenarios)
for (const n of names)
  if (!scenarios[n]) throw new Error(`no scenario '${n}' (${Object.keys(scenarios).join(', ')})`)

const stack = await startStack({ redis: true, vars: LOAD_VARS })
const outcomes: { name: string; pass: boolean; markdown: string }[] = []
try {
  for (const name of names) {
    console.error(`— ${name}`)
    const r = await scenarios[name]!(ctxOf(stack))
    console.error(r.pass ? `  ${name}: pass` : `  ${name}: THRESHOLDS FAILED`)
    outcomes.push({ name, ...r })
  }
} finally {
  await stack.stop()
}

const md = [
  '## Load tests',
  '',
  'Five scenarios studios run before launch, against the whole local stack on 127.0.0.1: `wrangler dev` (workerd) with the ' +
    'Durable Objects, PostgreSQL behind the Neon relay, redis-server behind the Upstash endpoint. The load generator runs in ' +
    'one Node process on the same machine, so every number is a floor for what Cloudflare serves, useful for regressions ' +
    'and for shapes (what a burst or a close does to latency), not as capacity figures.',
  '',
  `Run them with \`npm run load\` (or \`npx node bench/load/run.ts\`); \`--quick\` for a shorter pass. Each scenario exits ` +
    'non-zero when a threshold fails.',
  '',
  // Every scenario's latest results, so a partial run (`--only`) keeps the others.
  ...Object.keys(scenarios)
    .map((n) => `${RESULTS_DIR}${n}.md`)
    .filter((f) => existsSync(f))
    .map((f) => readFileSync(f, 'utf8').replace(/\]\(([\w-]+\.svg)\)/g, '](results/$1)')),
].join('\n')
writeFileSync(fileURLToPath(new URL('./RESULTS.md', import.meta.url)), await formatMarkdown(md))
console.log(md)
const failed = outcomes.filter((o) => !o.pass).map((o) => o.name)
if (failed.length) {
  console.error(`thresholds failed: ${failed.join(', ')}`)
  process.exit(1)
}
