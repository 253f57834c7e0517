/**
 * What workerd spends, in CPU time, to create a game session and to match a pair of players,
 * against a no-op route of the same Worker in the same run. The matchmaking benchmark's burst is
 * bound by workerd's CPU on these two cores; this says which part of a match costs what.
 *
 *   npx node bench/session-create.bench.ts [--rounds 5] [--seconds 3] [--concurrency 8]
 *
 * CPU is workerd's user + system time from /proc (Linux), over each scenario's window, divided
 * by the operations completed in it. Rounds alternate the scenarios; medians over rounds.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpuMs, descendantsNamed } from './lib/process-cpu.ts'
import { flag, median, runLoad } from './lib/load.ts'
import { startStack } from './lib/stack.ts'
import { ctxOf, EVERYONE_MATCHES_DUEL, must, ok } from './load/lib.ts'

const ROUNDS = flag('rounds', 5)
const SECONDS = flag('seconds', 3)
const CONCURRENCY = flag('concurrency', 8)

interface Scenario {
  name: string
  send: (i: number) => Promise<boolean>
}

const stack = await startStack()
const perOp = new Map<string, number[]>()
try {
  const workerd = descendantsNamed('workerd')
  if (workerd.length === 0) throw new Error('no workerd process found under this one')
  const ctx = ctxOf(stack)
  const queue = 'bench-pairs'
  await must(ctx, 'PUT', `/v1/admin/queues/${queue}`, EVERYONE_MATCHES_DUEL)
  // A live session to read: the same call path as creating one, to an object that exists.
  const { sessionId } = (await must(ctx, 'POST', '/v1/admin/sessions', {
    rules: 'relay',
    roster: [{ playerId: 'reader-a' }, { playerId: 'reader-b' }],
  })) as { sessionId: string }

  let run = 0
  const send = (path: string, body?: unknown) =>
    ok(
      fetch(stack.url + path, {
        method: body === undefined ? 'GET' : 'POST',
        headers: ctx.admin,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      }),
    )
  const scenarios: Scenario[] = [
    { name: 'no-op (`GET /health`)', send: () => send('/health') },
    {
      // The unit of a session's listing and of an HTTP join's rating read.
      name: 'one Neon query (`GET /ready`: `select 1` through the Neon driver)',
      send: () => send('/ready'),
    },
    {
      name: 'read a live session (`GET /v1/sessions/:id`: one call to an existing object)',
      send: () => send(`/v1/sessions/${sessionId}`),
    },
    {
      name: 'create a relay session for 2 (`POST /v1/admin/sessions`, listed in Neon)',
      send: (i) =>
        send('/v1/admin/sessions', {
          rules: 'relay',
          roster: [{ playerId: `c${run}-${i}-a` }, { playerId: `c${run}-${i}-b` }],
        }),
    },
    {
      // Both join at once, so the second join makes the match: its session is created, listed
      // from the session's alarm, and both tickets turn matched.
      name: 'match a pair: two HTTP joins (a game server for its players)',
      send: async (i) => {
        const tickets = `/v1/matchmaking/${queue}/tickets`
        const [a, b] = await Promise.all([
          send(tickets, { playerId: `m${run}-${i}-a` }),
          send(tickets, { playerId: `m${run}-${i}-b` }),
        ])
        return a && b
      },
    },
  ]

  // Warm-up: JIT, the pool object, the connections.
  for (const s of scenarios)
    await runLoad({ concurrency: CONCURRENCY, durationMs: 1000, send: s.send })
  for (run = 1; run <= ROUNDS; run++) {
    for (const s of scenarios) {
      const before = cpuMs(workerd)
      const res = await runLoad({
        concurrency: CONCURRENCY,
        durationMs: SECONDS * 1000,
        send: s.send,
      })
      // What the last operations left for alarms (a session's listing) lands in the window.
      await new Promise((r) => setTimeout(r, 500))
      const spent = cpuMs(workerd) - before
      if (res.errors > 0) throw new Error(`${s.name}: ${res.errors} of ${res.requests} failed`)
      const list = perOp.get(s.name) ?? []
      list.push((spent * 1000) / res.requests)
      perOp.set(s.name, list)
    }
    console.error(`round ${run}/${ROUNDS} done`)
  }
} finally {
  await stack.stop()
}

const names = [...perOp.keys()]
const noop = median(perOp.get(names[0]!)!)
const lines = [
  '# Workerd CPU per session and per match',
  '',
  `Local Worker served by Miniflare (workerd, no dev proxy), real PostgreSQL behind the Neon relay. ` +
    `${ROUNDS} rounds × ${SECONDS} s per scenario, ${CONCURRENCY} concurrent clients, scenarios ` +
    `alternating within each round; workerd's user + system CPU time (from /proc) over each ` +
    `scenario's window and 0.5 s after it, divided by the operations completed. Medians over ` +
    `rounds. Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
  '',
  `Command: \`npx node bench/session-create.bench.ts --rounds ${ROUNDS} --seconds ${SECONDS} --concurrency ${CONCURRENCY}\``,
  '',
  '| operation | workerd CPU per operation (µs, median) | vs no-op | each round (µs) |',
  '| --- | ---: | ---: | --- |',
  ...names.map((name) => {
    const values = perOp.get(name)!
    const m = median(values)
    return `| ${name} | ${m.toFixed(0)} | ${(m / noop).toFixed(1)}× | ${values.map((v) => v.toFixed(0)).join(', ')} |`
  }),
]
const report = lines.join('\n') + '\n'
process.stdout.write('\n' + report)
mkdirSync('bench/results', { recursive: true })
writeFileSync('bench/results/session-create.md', report)
