/**
 * A matchmaking flash crowd: thousands of players join one queue within seconds (a game server
 * joining for them with the admin key, as after a tournament's start), then every ticket must be
 * matched into 1v1 sessions.
 *
 *   npx node bench/load/flash-crowd.ts [--joins 2000] [--window 5]
 */
import { fileURLToPath } from 'node:url'
import {
  flag,
  must,
  noteFailure,
  openLoop,
  Recorder,
  summarize,
  withStack,
  writeReport,
  type Ctx,
} from './lib.ts'

export async function flashCrowd(ctx: Ctx) {
  const joins = flag('joins', 2000)
  const windowS = flag('window', 5)
  const queue = `crowd-${Date.now()}`
  await must(ctx, 'PUT', `/v1/admin/queues/${queue}`, {
    teams: 2,
    teamSize: 1,
    rules: 'relay',
    maxRatingGap: 400,
    widenPerSecond: 100,
    regions: ['eu'],
    ticketTtlSeconds: 600,
  })
  const rec = new Recorder()
  const tickets: (string | null)[] = Array.from({ length: joins }, () => null)
  await openLoop({
    rec,
    offsetsMs: Array.from({ length: joins }, () => Math.random() * windowS * 1000),
    maxInFlight: 256,
    send: (i) => [
      'join',
      async () => {
        const res = await fetch(`${ctx.stack.url}/v1/matchmaking/${queue}/tickets`, {
          method: 'POST',
          headers: ctx.admin,
          body: JSON.stringify({ playerId: `crowd-${i}` }),
        })
        if (res.status !== 201) {
          const body = await res.text()
          noteFailure(
            `HTTP ${res.status} ${/"type":"([^"]+)"/.exec(body)?.[1] ?? body.slice(0, 120)}`,
          )
          return false
        }
        tickets[i] = ((await res.json()) as { ticketId: string }).ticketId
        return true
      },
    ],
  })
  const joinedAt = rec.now()
  rec.mark('all joined')
  // Drain: wait (bounded) until no one who could still be matched waits (after a failed join
  // leaves an odd crowd, one player of a 1v1 queue has no one left to play).
  const deadline = Date.now() + 60_000
  let waiting = -1
  while (Date.now() < deadline) {
    // Fresh: the stats are cached for up to 2 s, which would make the drain look that much later.
    const stats = (await must(ctx, 'GET', `/v1/matchmaking/${queue}/stats`, undefined, {
      'cache-control': 'no-cache',
    })) as { waitingPlayers: number }
    waiting = stats.waitingPlayers
    if (waiting <= 1) break
    await new Promise((r) => setTimeout(r, 250))
  }
  const drainedMs = rec.now() - joinedAt
  rec.mark('drained')
  // Every ticket read back, to count the matched ones (not measured as load).
  const statuses = new Map<string, number>()
  const sessions = new Set<string>()
  let k = 0
  const ids = tickets.filter((t): t is string => t !== null)
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (k < ids.length) {
        const id = ids[k++]!
        const res = await fetch(`${ctx.stack.url}/v1/matchmaking/tickets/${id}`, {
          headers: ctx.admin,
        })
        const t = (await res.json()) as { status: string; match: { sessionId: string } | null }
        statuses.set(t.status, (statuses.get(t.status) ?? 0) + 1)
        if (t.match) sessions.add(t.match.sessionId)
      }
    }),
  )
  const matched = statuses.get('matched') ?? 0
  const s = summarize(rec.recs)
  return writeReport({
    name: 'flash-crowd',
    title: `Matchmaking flash crowd (${joins.toLocaleString('en-US')} joins in ${windowS} s)`,
    description:
      `${joins} players join one 1v1 queue at uniformly random moments within ${windowS} s (open loop, up to 256 in flight), ` +
      'over HTTP with the admin key (a game server joining for its players). Each match creates its game session before the ' +
      'tickets turn `matched`.',
    command: `npx node bench/load/flash-crowd.ts --joins ${joins} --window ${windowS}`,
    rows: [['joins', s]],
    notes: [
      `ticket states after the drain: ${[...statuses].map(([k2, v]) => `${k2} ${v}`).join(', ')}; ${sessions.size} sessions`,
      `queue drained (no one waiting) ${(drainedMs / 1000).toFixed(1)} s after the last join answered`,
    ],
    thresholds: [
      { name: 'join error rate', actual: s.errorRate * 100, op: '<=', limit: 0.5, unit: '%' },
      // The crowd arrives faster than one pool admits joins on this machine (one Durable Object
      // per queue and region, a Neon rating read per join, a session per match), so joins queue:
      // the bounds are on the pool's admission rate and on how long the last joiner waits.
      { name: 'join p99', actual: s.p99, op: '<=', limit: 15_000, unit: ' ms' },
      { name: 'joins admitted per second', actual: s.throughput, op: '>=', limit: 30, unit: '/s' },
      {
        name: 'tickets matched',
        actual: (matched / Math.max(1, ids.length)) * 100,
        op: '>=',
        limit: 99,
        unit: '%',
      },
      {
        name: 'sessions per 2 matched tickets',
        actual: sessions.size * 2,
        op: '==',
        limit: matched,
      },
      { name: 'drain time', actual: drainedMs / 1000, op: '<=', limit: 30, unit: ' s' },
    ],
    rec,
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const r = await withStack(flashCrowd)
  console.log(r.markdown)
  process.exit(r.pass ? 0 : 1)
}
