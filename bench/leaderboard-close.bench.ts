/**
 * Closing a 1,000,000-entry cycle into PostgreSQL through the real path (Leaderboard DO → Neon
 * driver → relay → PostgreSQL, pages of 1,000 rows, each one transaction), against PostgreSQL's
 * own COPY of the same rows into a table of the same shape, in the same run on the same server.
 *
 *   npx node bench/leaderboard-close.bench.ts [--entries 1000000]
 *
 * Needs `psql` on PATH for the COPY baseline (Debian: postgresql-client).
 */
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { flag, fmt } from './lib/load.ts'
import { descendantsNamed, residentBytes } from './lib/process-cpu.ts'
import { startStack } from './lib/stack.ts'

const ENTRIES = flag('entries', 1_000_000)
const BATCH = 500

function psql(url: string, args: string[], stdin?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAt', ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => (out += d))
    child.stderr.on('data', (d: Buffer) => (err += d))
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`psql: ${err}`))))
    child.stdin.end(stdin ?? '')
  })
}

const score = (i: number) => (i * 7919) % ENTRIES

const stack = await startStack()
try {
  const admin = { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' }
  const board = 'close-bench'
  const put = await fetch(`${stack.url}/v1/admin/leaderboards/${board}`, {
    method: 'PUT',
    headers: admin,
    body: JSON.stringify({
      scoreMax: 1e9,
      // Room for the run's players (a PUT past the 1,500,000 a board may hold is refused).
      maxEntries: ENTRIES,
      rewards: [{ fromRank: 1, toRank: 100, reward: { coins: 10 } }],
    }),
  })
  if (!put.ok) throw new Error(`create: ${put.status} ${await put.text()}`)

  const seedStarted = performance.now()
  let next = 0
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (;;) {
        const from = next
        next += BATCH
        if (from >= ENTRIES) return
        const entries = Array.from({ length: Math.min(BATCH, ENTRIES - from) }, (_, k) => ({
          playerId: `p${from + k}`,
          score: score(from + k),
        }))
        const r = await fetch(`${stack.url}/v1/admin/leaderboards/${board}/entries`, {
          method: 'POST',
          headers: admin,
          body: JSON.stringify({ entries }),
        })
        if (!r.ok) throw new Error(`import: ${r.status} ${await r.text()}`)
        await r.arrayBuffer()
      }
    }),
  )
  const seedSeconds = (performance.now() - seedStarted) / 1000
  console.error(`seeded ${ENTRIES} entries in ${fmt(seedSeconds)} s`)

  // A wake: a new workerd over the same storage, as after an eviction or a deploy. Its resident
  // memory is read with the Worker loaded, before the board wakes, after a request that does not
  // need the standings (the board's status), and after the first read of them, which rebuilds the
  // rank index from SQLite.
  if (!stack.restart)
    throw new Error('timing a wake needs the Miniflare runtime (not wrangler dev)')
  await stack.restart()
  const health = await fetch(`${stack.url}/health`)
  if (!health.ok) throw new Error(`health after restart: ${health.status}`)
  await health.arrayBuffer()
  const workerd = descendantsNamed('workerd')
  const rssBefore = residentBytes(workerd)
  const statusStarted = performance.now()
  const info = await fetch(`${stack.url}/v1/leaderboards/${board}`, {
    headers: { 'cache-control': 'no-cache' },
  })
  const status = (await info.json()) as { cycle?: { entries?: number } }
  const statusSeconds = (performance.now() - statusStarted) / 1000
  if (!info.ok || status.cycle?.entries !== ENTRIES) {
    throw new Error(`status wake: ${info.status} ${JSON.stringify(status).slice(0, 300)}`)
  }
  const rssStatus = residentBytes(workerd)
  const wakeStarted = performance.now()
  const woke = await fetch(`${stack.url}/v1/leaderboards/${board}/top?limit=10`, {
    headers: { 'cache-control': 'no-cache' },
  })
  const top = (await woke.json()) as { total?: number }
  const wakeSeconds = (performance.now() - wakeStarted) / 1000
  if (!woke.ok || top.total !== ENTRIES) {
    throw new Error(`wake: ${woke.status} ${JSON.stringify(top).slice(0, 300)}`)
  }
  const rssAfter = residentBytes(workerd)
  console.error(
    `status in ${fmt(statusSeconds)} s, top read in ${fmt(wakeSeconds)} s, workerd ` +
      `${fmt(rssBefore / 2 ** 20)} → ${fmt(rssStatus / 2 ** 20)} → ${fmt(rssAfter / 2 ** 20)} MiB`,
  )

  // The close comes to a board that has just woken, as a scheduled one does after a quiet night.
  await stack.restart()
  await (await fetch(`${stack.url}/health`)).arrayBuffer()
  const closeStarted = performance.now()
  const closed = await fetch(`${stack.url}/v1/admin/leaderboards/${board}/close`, {
    method: 'POST',
    headers: { authorization: admin.authorization },
  })
  if (closed.status !== 202) throw new Error(`close: ${closed.status} ${await closed.text()}`)
  await closed.arrayBuffer()
  const closeAnswerSeconds = (performance.now() - closeStarted) / 1000
  let archivedAt = 0
  for (;;) {
    const s = (await (
      await fetch(`${stack.url}/v1/admin/leaderboards/${board}/cycles/1`, {
        headers: { authorization: admin.authorization },
      })
    ).json()) as { state: string; archived: number; attempts: number }
    if (s.state !== 'archiving' && archivedAt === 0) archivedAt = performance.now()
    if (s.state === 'done') break
    if (performance.now() - closeStarted > 600_000)
      throw new Error(`close did not finish: ${JSON.stringify(s)}`)
    await new Promise((r) => setTimeout(r, 200))
  }
  const archiveSeconds = (archivedAt - closeStarted) / 1000
  const doneSeconds = (performance.now() - closeStarted) / 1000
  const [rows, rewards] = (
    await psql(stack.databaseUrl, [
      '-c',
      `select count(*) from leaderboard_archive where leaderboard_id = '${board}'`,
      '-c',
      `select count(*) from rewards where leaderboard_id = '${board}'`,
    ])
  )
    .trim()
    .split('\n')
    .map(Number)
  if (rows !== ENTRIES || rewards !== 100)
    throw new Error(`archive incomplete: ${rows} rows, ${rewards} rewards`)

  // COPY baseline: the same rows (same columns, same keys and indexes) straight into PostgreSQL.
  await psql(stack.databaseUrl, [
    '-c',
    'create table copy_bench (like leaderboard_archive including all)',
  ])
  const csv: string[] = []
  const ranked = Array.from({ length: ENTRIES }, (_, i) => i).sort((a, b) => score(b) - score(a))
  ranked.forEach((i, r) =>
    csv.push(`copy-bench,1,p${i},${r + 1},${score(i)},0,,,2026-11-24 00:00:00+00`),
  )
  const copyStarted = performance.now()
  await psql(
    stack.databaseUrl,
    ['-c', '\\copy copy_bench from stdin with (format csv)'],
    csv.join('\n') + '\n',
  )
  const copySeconds = (performance.now() - copyStarted) / 1000

  const md = [
    '# Closing a 1,000,000-entry cycle',
    '',
    `${stack.runtime}, real PostgreSQL ${'(temporary cluster, fsync off)'} behind the Neon relay. ${ENTRIES.toLocaleString('en')} entries ` +
      `imported through the admin API, then \`POST /close\`; the board's alarm archives pages of 1,000 rows (one Neon HTTP transaction each: archive rows + rewards + progress), ` +
      `then purges the frozen rows from the Durable Object. Before the close, workerd is restarted over the same storage (the wake of a ${ENTRIES.toLocaleString('en')}-entry board, as after an eviction or a deploy) and two requests timed: the board's status, which does not need the standings, then its first read of them, which rebuilds the rank index from SQLite; then workerd is restarted again, so the close comes to a board that has just woken. The baseline is \`\\copy\` of the same rows into a table with the same keys and indexes, same server, same run. Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
    '',
    `Command: \`npx node bench/leaderboard-close.bench.ts --entries ${ENTRIES}\``,
    '',
    '| measure | value |',
    '| --- | ---: |',
    `| seed (import API, ${BATCH}/request) | ${fmt(seedSeconds)} s |`,
    `| wake after a restart: the board's status (entries counted in SQLite) | ${fmt(statusSeconds)} s |`,
    `| then the first read of the standings: rank index rebuilt from SQLite | ${fmt(wakeSeconds)} s |`,
    `| workerd resident memory (${workerd.length} process): before the wake → after the status → after the read | ${fmt(rssBefore / 2 ** 20, 0)} → ${fmt(rssStatus / 2 ** 20, 0)} → ${fmt(rssAfter / 2 ** 20, 0)} MiB |`,
    `| after another restart, \`POST /close\` to the woken board → its answer | ${fmt(closeAnswerSeconds)} s |`,
    `| close → archive complete in Neon | ${fmt(archiveSeconds)} s (${fmt(ENTRIES / archiveSeconds, 0)} rows/s) |`,
    `| close → frozen rows purged from the object | ${fmt(doneSeconds)} s |`,
    `| PostgreSQL COPY of the same rows | ${fmt(copySeconds)} s (${fmt(ENTRIES / copySeconds, 0)} rows/s) |`,
    `| archive rate / COPY rate | ${fmt((copySeconds / archiveSeconds) * 100, 0)}% |`,
    `| rows archived / rewards paid | ${rows} / ${rewards} |`,
    '',
    'Goal: archive under 60 s and at least 50% of the COPY rate.',
    '',
  ].join('\n')
  console.log(md)
  mkdirSync('bench/results', { recursive: true })
  writeFileSync('bench/results/leaderboard-close.md', md)
} finally {
  await stack.stop()
}
