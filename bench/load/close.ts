/**
 * A cycle close under load: a board of 100,000 entries is closed while players keep reading and
 * submitting; the archive pages all of it into Neon in the background.
 *
 *   npx node bench/load/close.ts [--entries 100000] [--seconds 40] [--concurrency 16]
 */
import { fileURLToPath } from 'node:url'
import {
  closedLoop,
  flag,
  guests,
  must,
  Recorder,
  summarize,
  withStack,
  writeReport,
  type Ctx,
} from './lib.ts'
import { enroll, playerMix, seedBoard } from './mix.ts'

export async function closeUnderLoad(ctx: Ctx) {
  const nEntries = flag('entries', 100_000)
  const seconds = flag('close-seconds', flag('seconds', 40))
  const concurrency = flag('concurrency', 16)
  const board = `load-close-${Date.now()}`
  await must(ctx, 'PUT', `/v1/admin/leaderboards/${board}`, {
    submitsPerMinute: 600,
    cycle: { every: '1d' },
  })
  const seedStarted = Date.now()
  await seedBoard(ctx, board, nEntries)
  const seedMs = Date.now() - seedStarted
  const players = await guests(ctx, 200)
  await enroll(ctx, board, players)
  const rec = new Recorder()
  let closeAt = Infinity
  let doneAt = Infinity
  let status: { entries: number; archived: number; state: string } | null = null
  const closer = (async () => {
    await new Promise((r) => setTimeout(r, 5000))
    const info = (await must(ctx, 'GET', `/v1/leaderboards/${board}`)) as {
      cycle: { cycle: number }
    }
    rec.mark('close')
    closeAt = rec.now()
    await must(ctx, 'POST', `/v1/admin/leaderboards/${board}/close`, { cycle: info.cycle.cycle })
    const deadline = Date.now() + 120_000
    while (Date.now() < deadline) {
      status = (await must(
        ctx,
        'GET',
        `/v1/admin/leaderboards/${board}/cycles/${info.cycle.cycle}`,
      )) as {
        entries: number
        archived: number
        state: string
      }
      if (status.state === 'done') break
      await new Promise((r) => setTimeout(r, 250))
    }
    doneAt = rec.now()
    rec.mark('archived')
  })()
  await closedLoop({
    rec,
    concurrency,
    durationMs: seconds * 1000,
    next: playerMix(ctx, board, players),
  })
  await closer
  const before = summarize(rec.recs.filter((r) => r.t < closeAt))
  const during = summarize(rec.recs.filter((r) => r.t >= closeAt && r.t < doneAt))
  const after = summarize(rec.recs.filter((r) => r.t >= doneAt))
  const all = summarize(rec.recs)
  const s = status as { entries: number; archived: number; state: string } | null
  return writeReport({
    name: 'close',
    title: `Cycle close under load (${nEntries.toLocaleString('en-US')} entries)`,
    description:
      `A board pre-filled with ${nEntries.toLocaleString('en-US')} entries (imported in ${(seedMs / 1000).toFixed(1)} s) is closed 5 s into ` +
      `${seconds} s of the players’ mix (${concurrency} concurrent clients, 70% reads / 30% submits); the archive runs while they play.`,
    command: `npx node bench/load/close.ts --entries ${nEntries} --seconds ${seconds} --concurrency ${concurrency}`,
    rows: [
      ['before the close', before],
      ['while archiving', during],
      ['after the archive', after],
      ['all', all],
    ],
    notes: [
      `archive: ${s?.archived ?? '?'} of ${s?.entries ?? '?'} rows, state ${s?.state ?? '?'}, ${((doneAt - closeAt) / 1000).toFixed(1)} s after the close`,
    ],
    thresholds: [
      { name: 'error rate', actual: all.errorRate * 100, op: '<=', limit: 0.5, unit: '%' },
      { name: 'p99 while archiving', actual: during.p99, op: '<=', limit: 2000, unit: ' ms' },
      { name: 'archive time', actual: (doneAt - closeAt) / 1000, op: '<=', limit: 90, unit: ' s' },
      {
        name: 'rows archived',
        actual: s?.state === 'done' ? s.archived : 0,
        op: '>=',
        limit: nEntries,
      },
    ],
    rec,
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await withStack(closeUnderLoad)
  console.log(r.markdown)
  process.exit(r.pass ? 0 : 1)
}
