/**
 * The cycle-end burst: every player submits in the last seconds of a cycle, some landing just
 * after the boundary. Nothing may be lost: the closed cycle's archive plus the new cycle must
 * hold exactly the submissions that succeeded.
 *
 *   npx node bench/load/burst.ts [--players 500] [--window 5]
 */
import { fileURLToPath } from 'node:url'
import {
  flag,
  guests,
  must,
  ok,
  openLoop,
  Recorder,
  summarize,
  withStack,
  writeReport,
  type Ctx,
} from './lib.ts'

interface CycleInfo {
  cycle: number
  startsAt: number
  endsAt: number
  entries: number
}

export async function burst(ctx: Ctx) {
  const nPlayers = flag('players', 500)
  const windowS = flag('window', 5)
  const board = `load-burst-${Date.now()}`
  await must(ctx, 'PUT', `/v1/admin/leaderboards/${board}`, { cycle: { every: '1m' } })
  const players = await guests(ctx, nPlayers)
  const info = async () =>
    ((await must(ctx, 'GET', `/v1/leaderboards/${board}`)) as { cycle: CycleInfo }).cycle
  let cycle = await info()
  // The burst must fit before the boundary: if this minute is nearly over, aim at the next.
  const lead = windowS * 1000 + 2000
  const target = cycle.endsAt - Date.now() >= lead ? cycle.endsAt : cycle.endsAt + 60_000
  const startAt = target - windowS * 1000
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())))
  cycle = await info()
  const closing = cycle.cycle
  const rec = new Recorder()
  const boundaryT = target - Date.now() + rec.now()
  // Arrivals crowd toward the end: most of them in the final second or two, a few just after it.
  const offsets = players.map(() => (1 - Math.random() ** 2) * (windowS * 1000 + 800))
  let okCount = 0
  await openLoop({
    rec,
    offsetsMs: offsets,
    maxInFlight: 256,
    send: (i) => [
      'submit',
      async () => {
        const good = await ok(
          fetch(`${ctx.stack.url}/v1/leaderboards/${board}/scores`, {
            method: 'POST',
            headers: {
              authorization: `Bearer ${players[i]!.token}`,
              'content-type': 'application/json',
              'idempotency-key': crypto.randomUUID(),
            },
            body: JSON.stringify({ score: i }),
          }),
        )
        if (good) okCount++
        return good
      },
    ],
  })
  rec.marks.push({ t: boundaryT, label: 'cycle boundary' })
  // The board rolls over by its alarm; wait (bounded) for the archive of the closed cycle.
  const deadline = Date.now() + 60_000
  let archive: { state: string; entries: number; archived: number } | null = null
  while (Date.now() < deadline) {
    const res = await fetch(`${ctx.stack.url}/v1/admin/leaderboards/${board}/cycles/${closing}`, {
      headers: ctx.admin,
    })
    if (res.ok) {
      archive = (await res.json()) as { state: string; entries: number; archived: number }
      if (archive.state === 'done') break
    } else await res.arrayBuffer()
    await new Promise((r) => setTimeout(r, 500))
  }
  const archivedAfterMs = Date.now() - target
  const next = await info()
  const accounted = (archive?.entries ?? 0) + (next.cycle === closing + 1 ? next.entries : 0)
  const s = summarize(rec.recs)
  const before = summarize(rec.recs.filter((r) => r.t < boundaryT))
  return writeReport({
    name: 'burst',
    title: 'Cycle-end burst',
    description:
      `${nPlayers} players each submit once in the last ${windowS} s of a 1-minute cycle (arrivals crowding toward the end, ` +
      'open loop, up to 256 in flight); some land just after the boundary, in the next cycle.',
    command: `npx node bench/load/burst.ts --players ${nPlayers} --window ${windowS}`,
    rows: [
      ['all submits', s],
      ['before the boundary', before],
    ],
    notes: [
      `closed cycle ${closing}: ${archive?.entries ?? '?'} entries, archive ${archive?.state ?? 'not found'} ${fmtS(archivedAfterMs)} after the boundary; next cycle: ${next.entries} entries`,
      `accepted submissions ${okCount}, accounted for in the two cycles ${accounted}`,
    ],
    thresholds: [
      { name: 'error rate', actual: s.errorRate * 100, op: '<=', limit: 0.1, unit: '%' },
      { name: 'p99 latency', actual: s.p99, op: '<=', limit: 3000, unit: ' ms' },
      { name: 'accepted submissions lost', actual: okCount - accounted, op: '==', limit: 0 },
      {
        name: 'archive done after the boundary',
        actual: archivedAfterMs / 1000,
        op: '<=',
        limit: 30,
        unit: ' s',
      },
    ],
    rec,
  })
}

function fmtS(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await withStack(burst)
  console.log(r.markdown)
  process.exit(r.pass ? 0 : 1)
}
