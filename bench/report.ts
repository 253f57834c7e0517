/**
 * Rebuilds BENCHMARKS.md from the result files each benchmark writes (bench/results/*.md, and
 * bench/load/RESULTS.md, which bench/load/run.ts gathers from bench/load/results/*.md: a note added
 * to one of those by hand reaches this document once run.ts runs again, or is added there too),
 * so the document always shows the numbers of the last run of each, with the command that made
 * them.
 *
 *   npx node bench/report.ts
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'

const sections: [string, string][] = [
  ['bench/results', 'rank-index.md'],
  ['bench/results', 'rank-index-memory.md'],
  ['bench/results', 'leaderboard-http.md'],
  ['bench/results', 'leaderboard-close.md'],
  ['bench/results', 'matching.md'],
  ['bench/results', 'matchmaking.md'],
  ['bench/results', 'session-create.md'],
  ['bench/results', 'runtime-costs.md'],
  ['bench/results', 'sessions.md'],
]
const extra = (dir: string) =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith('.md'))
        .sort()
    : []
for (const f of extra('bench/results'))
  if (!sections.some(([, n]) => n === f)) sections.push(['bench/results', f])
if (existsSync('bench/load/RESULTS.md')) sections.push(['bench/load', 'RESULTS.md'])

const intro = `# Benchmarks

Measured on this project's reference machine: 2 shared cores, 24 GiB, Debian 12, Node 22. Absolute
times on such a machine are noise; what these numbers are for is the ratios, each taken against a
baseline in the same process or the same run (redis-server, a no-op route of the same Worker,
PostgreSQL's COPY, Colyseus). Each section says the command that produced it; \`npx node
bench/report.ts\` rebuilds this file from the latest results.
`

const parts = [intro]
for (const [dir, file] of sections) {
  const path = `${dir}/${file}`
  if (!existsSync(path)) continue
  // Links in a result file are relative to its folder; this document sits at the top.
  const text = readFileSync(path, 'utf8')
    .trim()
    .replace(/\]\((?!https?:|\/)([^)]+)\)/g, `](${dir}/$1)`)
  // Shift headings so each result file's top heading is a section (##) of this document.
  const top = Math.min(...[...text.matchAll(/^(#+) /gm)].map((m) => m[1]!.length))
  const shift = Number.isFinite(top) ? 2 - top : 0
  parts.push(
    text.replace(/^(#+) /gm, (_, h: string) => `${'#'.repeat(Math.max(1, h.length + shift))} `),
  )
}
writeFileSync('BENCHMARKS.md', parts.join('\n\n') + '\n')
console.log(`BENCHMARKS.md: ${parts.length - 1} sections`)
