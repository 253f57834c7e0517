/**
 * Join → match_found latency over WebSockets through the local Worker and one MatchPool, next to
 * a ping → pong round trip on the same sockets (the no-op: Worker-free, pool-only). Scenarios:
 * - burst: N clients send `join` at the same instant (everyone matchable; 2 teams × 1);
 * - paced: pairs join one pair at a time (the unloaded latency of one match);
 * - steady: a pair joins every --pair-interval ms (default 10: 100 matches a second) without
 *   waiting for earlier pairs, the sustained load of a busy queue;
 * - ping burst: the same N sockets send `ping` at once.
 * The same scenarios run against two workerd floors (a pool object that only pairs sockets, and
 * the same creating one object per pair) and Colyseus's own matchmaking. For Nexus and the floors
 * the report also gives workerd's CPU time over each burst (from /proc), beside its latency.
 *
 *   npx node bench/matchmaking.bench.ts [--clients 200] [--rounds 3] [--pair-interval 10] [--only nexus]
 *
 * `--only nexus` runs Nexus alone (for profiling with NEXUS_BENCH_PROFILE); nothing is written.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import { flag, fmt, median, quantile } from './lib/load.ts'
import { colyseusClient, startColyseus, type ColyseusRoom } from './lib/colyseus.ts'
import { cpuMs, descendantsNamed } from './lib/process-cpu.ts'
import { startStack } from './lib/stack.ts'
import { startWorkerdFloor } from './lib/workerd-floor.ts'
import { ctxOf, EVERYONE_MATCHES_DUEL, must } from './load/lib.ts'

const CLIENTS = Math.max(2, Math.floor(flag('clients', 200) / 2) * 2)
const ROUNDS = flag('rounds', 3)
const TIMEOUT_MS = 30_000
const onlyAt = process.argv.indexOf('--only')
const ONLY_NEXUS = onlyAt > 0 && process.argv[onlyAt + 1] === 'nexus'
/** Steady scenario: milliseconds between one pair's joins and the next pair's. */
const PAIR_INTERVAL_MS = flag('pair-interval', 10)

/**
 * Starts `start(k)` for pairs k = 0, 1, … at a fixed schedule (open loop: a late answer does not
 * delay the next pair) and returns every promise it started, in order.
 */
async function onSchedule<T>(
  pairs: number,
  start: (k: number) => Promise<T>[],
): Promise<Promise<T>[]> {
  const started: Promise<T>[] = []
  const t0 = performance.now()
  for (let k = 0; k < pairs; k++) {
    started.push(...start(k))
    const due = t0 + (k + 1) * PAIR_INTERVAL_MS
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, due - performance.now())))
  }
  return started
}

type Message = { type: string; [k: string]: unknown }

/** An open socket whose messages are handed to whoever waits for them next. */
class Client {
  readonly ws: WebSocket
  readonly token: string
  /** Every message type received, in order (for diagnosing a stuck client). */
  readonly seen: string[] = []
  ticketId: string | null = null
  private waiter: ((m: Message) => void) | null = null

  private constructor(ws: WebSocket, token: string) {
    this.ws = ws
    this.token = token
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as Message
      this.seen.push(m.type)
      if (m.type === 'queued') this.ticketId = String(m.ticketId)
      this.waiter?.(m)
    })
  }

  static open(url: string, token: string): Promise<Client> {
    return new Promise((resolve, reject) => {
      // No permessage-deflate, as Nexus deployed (wrangler.toml: no_web_socket_compression) and
      // Colyseus agree: Miniflare's own entry worker would otherwise negotiate it locally.
      const ws = new WebSocket(url, {
        headers: { authorization: `Bearer ${token}` },
        perMessageDeflate: false,
      })
      const client = new Client(ws, token)
      ws.once('open', () => resolve(client))
      ws.once('error', reject)
      ws.once('unexpected-response', (_req, res) => {
        let body = ''
        res.on('data', (chunk: Buffer) => (body += String(chunk)))
        res.on('end', () => reject(new Error(`upgrade ${res.statusCode}: ${body}`)))
      })
    })
  }

  /** Sends `frame` and resolves with the milliseconds until a message of `type` arrives. */
  timed(frame: Message, type: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`no ${type} in ${TIMEOUT_MS} ms`)),
        TIMEOUT_MS,
      )
      const t0 = performance.now()
      this.waiter = (m) => {
        if (m.type === 'error') reject(new Error(JSON.stringify(m)))
        if (m.type !== type) return
        clearTimeout(timer)
        this.waiter = null
        resolve(performance.now() - t0)
      }
      this.ws.send(JSON.stringify(frame))
    })
  }

  close(): void {
    this.ws.close(1000)
  }
}

type Rows = Record<string, { p50: number[]; p99: number[]; max: number[] }>

/**
 * Runs every scenario (ping burst, join burst, one pair at a time, a pair every PAIR_INTERVAL_MS)
 * on sockets from `openAll`, a warm-up round and then ROUNDS recorded ones.
 */
async function scenarios(
  openAll: () => Promise<Client[]>,
  settled: (clients: Client[], runs: Promise<number>[]) => Promise<number[]>,
  /** Profiles each recorded burst (NEXUS_BENCH_PROFILE_WINDOWS), when given. */
  profileWindow?: { start(): Promise<void>; stop(): Promise<void> },
): Promise<{ rows: Rows; burstCpuMs: number[] }> {
  const rows: Record<string, { p50: number[]; p99: number[]; max: number[] }> = {}
  /** workerd's CPU time over each recorded burst, from the joins sent to the last match_found. */
  const burstCpuMs: number[] = []
  const workerd = descendantsNamed('workerd')
  const record = (name: string, latencies: number[]) => {
    const row = (rows[name] ??= { p50: [], p99: [], max: [] })
    row.p50.push(quantile(latencies, 0.5))
    row.p99.push(quantile(latencies, 0.99))
    row.max.push(Math.max(...latencies))
  }

  // Warm-up: one full burst, not recorded.
  for (let round = 0; round <= ROUNDS; round++) {
    let clients = await openAll()
    const pings = await settled(
      clients,
      clients.map((c) => c.timed({ type: 'ping' }, 'pong')),
    )
    if (round > 0) await profileWindow?.start()
    const cpuBefore = cpuMs(workerd)
    const burst = await settled(
      clients,
      clients.map((c) => c.timed({ type: 'join' }, 'match_found')),
    )
    if (round > 0) burstCpuMs.push(cpuMs(workerd) - cpuBefore)
    if (round > 0) await profileWindow?.stop()
    for (const c of clients) c.close()

    clients = await openAll()
    const paced: number[] = []
    for (let i = 0; i < clients.length; i += 2) {
      const pair = [clients[i]!, clients[i + 1]!]
      paced.push(
        ...(await settled(
          pair,
          pair.map((c) => c.timed({ type: 'join' }, 'match_found')),
        )),
      )
    }
    for (const c of clients) c.close()

    clients = await openAll()
    const steady = await settled(
      clients,
      await onSchedule(clients.length / 2, (k) =>
        [clients[2 * k]!, clients[2 * k + 1]!].map((c) => c.timed({ type: 'join' }, 'match_found')),
      ),
    )
    for (const c of clients) c.close()
    if (round === 0) continue
    record(`ping → pong, ${CLIENTS} at once (no-op)`, pings)
    record(`join → match_found, ${CLIENTS} at once`, burst)
    record('join → match_found, one pair at a time', paced)
    record(`join → match_found, a pair every ${PAIR_INTERVAL_MS} ms`, steady)
    console.error(`round ${round}/${ROUNDS} done`)
  }

  return { rows, burstCpuMs }
}

/** Table rows of medians over rounds, one per scenario. */
function table(rows: Rows, who: string): string[] {
  return Object.entries(rows).map(
    ([name, r]) =>
      `| ${who}: ${name} | ${fmt(median(r.p50), 1)} | ${fmt(median(r.p99), 1)} | ${fmt(median(r.max), 1)} |`,
  )
}

let nexusRows: Rows = {}
const burstCpu: Record<string, number[]> = {}
const stack = await startStack({ vars: { GUEST_AUTH_PER_MINUTE: '10000' } })
try {
  const queue = 'bench-duel'
  await must(ctxOf(stack), 'PUT', `/v1/admin/queues/${queue}`, EVERYONE_MATCHES_DUEL)

  const tokens: string[] = []
  for (let i = 0; i < CLIENTS; i += 16) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(16, CLIENTS - i) }, async (_, j) => {
        const res = await fetch(`${stack.url}/v1/auth/guest`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ deviceId: `bench-device-${i + j}` }),
        })
        if (!res.ok) throw new Error(`guest: ${res.status} ${await res.text()}`)
        return ((await res.json()) as { token: string }).token
      }),
    )
    tokens.push(...batch)
  }
  const wsUrl = `${stack.url.replace(/^http/, 'ws')}/v1/matchmaking/${queue}`
  const openAll = () => Promise.all(tokens.map((t) => Client.open(wsUrl, t)))

  /** Waits for every timed frame; if any failed, shows what the stuck clients' tickets say. */
  const settled = async (clients: Client[], runs: Promise<number>[]): Promise<number[]> => {
    const results = await Promise.allSettled(runs)
    const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [i] : []))
    if (failed.length === 0) return results.map((r) => (r as PromiseFulfilledResult<number>).value)
    for (const i of failed.slice(0, 5)) {
      const c = clients[i]!
      const ticket = c.ticketId
        ? await (
            await fetch(`${stack.url}/v1/matchmaking/tickets/${c.ticketId}`, {
              headers: { authorization: `Bearer ${c.token}` },
            })
          ).text()
        : 'no ticket'
      console.error(`client ${i}: seen ${c.seen.join(',')}; ticket ${ticket}`)
    }
    throw new Error(
      `${failed.length} clients failed: ${String((results[failed[0]!] as PromiseRejectedResult).reason)}`,
    )
  }

  const measured = await scenarios(openAll, settled, stack.profileWindow)
  nexusRows = measured.rows
  burstCpu.Nexus = measured.burstCpuMs

  // The window Colyseus's join is timed over starts at its seat reservation, before any socket:
  // these start at the socket's open, whose upgrade reads the player's rating and takes the
  // claim in Neon.
  const connectAndJoin = async (token: string): Promise<{ open: number; total: number }> => {
    const t0 = performance.now()
    const client = await Client.open(wsUrl, token)
    // The upgrade alone: the token's check, the rating read and claim taken in Neon, the pool's accept.
    const open = performance.now() - t0
    await client.timed({ type: 'join' }, 'match_found')
    const total = performance.now() - t0
    client.close()
    return { open, total }
  }
  for (let round = 0; round <= ROUNDS; round++) {
    const paced: { open: number; total: number }[] = []
    for (let i = 0; i < tokens.length; i += 2) {
      paced.push(
        ...(await Promise.all([connectAndJoin(tokens[i]!), connectAndJoin(tokens[i + 1]!)])),
      )
    }
    const burst = await Promise.all(tokens.map(connectAndJoin))
    // A request that reads Neon once (the queue's configuration, with the admin key) and does
    // little else, paced like the pairs: what a Neon round trip from the Worker costs of the
    // upgrade's time, which reads the rating and takes the claim in one.
    const neon: number[] = []
    for (let i = 0; i < tokens.length; i += 2) {
      neon.push(
        ...(await Promise.all(
          [0, 1].map(async () => {
            const t0 = performance.now()
            const res = await fetch(`${stack.url}/v1/admin/queues/${queue}`, {
              headers: { authorization: `Bearer ${stack.adminKey}` },
            })
            if (!res.ok) throw new Error(`queue read: ${res.status}`)
            await res.arrayBuffer()
            return performance.now() - t0
          }),
        )),
      )
    }
    if (round === 0) continue
    for (const [name, latencies] of [
      [`connect + join → match_found, ${CLIENTS} at once`, burst.map((l) => l.total)],
      ['connect + join → match_found, one pair at a time', paced.map((l) => l.total)],
      [`connect → open (its part of the row above), ${CLIENTS} at once`, burst.map((l) => l.open)],
      ['connect → open (its part of the row above), one pair at a time', paced.map((l) => l.open)],
      ['GET /v1/admin/queues/:queue (one Neon read), two at a time', neon],
    ] as const) {
      const row = (nexusRows[name] ??= { p50: [], p99: [], max: [] })
      row.p50.push(quantile(latencies, 0.5))
      row.p99.push(quantile(latencies, 0.99))
      row.max.push(Math.max(...latencies))
    }
    console.error(`connect round ${round}/${ROUNDS} done`)
  }
} catch (err) {
  // What the pool saw, to tell a slow match from a lost one.
  const metrics = await (await fetch(`${stack.url}/metrics`)).text()
  console.error(
    metrics
      .split('\n')
      .filter((l) => l.startsWith('nexus_matchmaking') && !l.includes('_bucket'))
      .join('\n'),
  )
  throw err
} finally {
  await stack.stop()
}

// --- The workerd floors: the same workerd pairing sockets and nothing else -----------------------
// One pool object pairs joins in arrival order (bench/lib/workerd-pairing-server.ts); with rooms,
// each pair first gets a new object that keeps its roster in SQLite, as a GameSession at least must.
if (ONLY_NEXUS) {
  console.log(table(nexusRows, 'Nexus').join('\n'))
  console.log(`workerd CPU per burst (ms): ${burstCpu.Nexus!.map((x) => fmt(x, 0)).join(', ')}`)
  process.exit(0)
}
const floorRows: Record<string, Rows> = {}
const floor = await startWorkerdFloor('workerd-pairing-server.ts')
try {
  for (const variant of ['pair', 'pair-with-rooms'] as const) {
    const url = `${floor.url}/${variant}/bench`
    const openAll = () => Promise.all(Array.from({ length: CLIENTS }, () => Client.open(url, '')))
    const settled = async (_clients: Client[], runs: Promise<number>[]) => Promise.all(runs)
    const measured = await scenarios(openAll, settled)
    floorRows[variant] = measured.rows
    burstCpu[
      variant === 'pair' ? 'workerd floor, pairs only' : 'workerd floor, a new object per pair'
    ] = measured.burstCpuMs
  }
} finally {
  await floor.stop()
}

// --- Colyseus: its own matchmaking for the same number of clients, same machine ---------------
// A client asks to join a 2-player room (`joinOrCreate`: an HTTP seat reservation, then a socket to
// the room); Colyseus fills rooms in arrival order and the room tells both players when it is full.
const peerRows: Record<string, { p50: number[]; p99: number[]; max: number[] }> = {}
const colyseus = await startColyseus()
try {
  const join = async (): Promise<{ ms: number; room: ColyseusRoom }> => {
    const client = await colyseusClient(colyseus.url)
    const t0 = performance.now()
    const room = await client.joinOrCreate('duel', { size: 2 })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no match_found from Colyseus')), TIMEOUT_MS)
      room.onMessage('match_found', () => {
        clearTimeout(timer)
        resolve()
      })
    })
    return { ms: performance.now() - t0, room }
  }
  for (let round = 0; round <= ROUNDS; round++) {
    const burst = await Promise.all(Array.from({ length: CLIENTS }, () => join()))
    await Promise.all(burst.map((b) => b.room.leave(true)))
    const paced: { ms: number; room: ColyseusRoom }[] = []
    for (let i = 0; i < CLIENTS; i += 2) paced.push(...(await Promise.all([join(), join()])))
    await Promise.all(paced.map((b) => b.room.leave(true)))
    const steady = await Promise.all(await onSchedule(CLIENTS / 2, () => [join(), join()]))
    await Promise.all(steady.map((b) => b.room.leave(true)))
    if (round === 0) continue
    for (const [name, v] of [
      [`join → match_found, ${CLIENTS} at once`, burst.map((b) => b.ms)],
      ['join → match_found, one pair at a time', paced.map((b) => b.ms)],
      [`join → match_found, a pair every ${PAIR_INTERVAL_MS} ms`, steady.map((b) => b.ms)],
    ] as const) {
      const row = (peerRows[name] ??= { p50: [], p99: [], max: [] })
      row.p50.push(quantile(v, 0.5))
      row.p99.push(quantile(v, 0.99))
      row.max.push(Math.max(...v))
    }
    console.error(`colyseus round ${round}/${ROUNDS} done`)
  }
} finally {
  await colyseus.stop()
}

const md = [
  '# Matchmaking: join to match, Nexus and Colyseus',
  '',
  `${stack.runtime}, real PostgreSQL behind the Neon relay. ${CLIENTS} guest players on ` +
    `WebSockets (the \`ws\` client, one Node process on the same machine) to one pool (2 teams × 1, everyone ` +
    `matchable), ${ROUNDS} rounds after a warm-up; medians over rounds. Latency is from sending \`join\` on an open ` +
    `socket to receiving \`match_found\` (\`connect + join\`: from opening the socket, whose upgrade checks the token and ` +
    `reads the player's rating and takes the queue claim in Neon, the window Colyseus's rows are timed over; \`connect → open\`: ` +
    `that upgrade alone; beside it, one Neon read through the Worker, an admin's read of the queue, paced as the pairs are); a Nexus match includes recording it in the pool's SQLite, creating its GameSession ` +
    `(which lists itself in Neon right after, from its own alarm) and signing a session token per player. Colyseus 0.18, same machine, its own process: ` +
    `\`joinOrCreate\` of a 2-player room, from the call to the room telling both players it is full (its seat ` +
    `reservation and room socket included; no ratings). The workerd floors: the same workerd and flags, a pool object ` +
    `that pairs joins in arrival order and nothing else (no token, rating, ticket record or signed token), and the same with ` +
    `a new object per pair that keeps its roster in SQLite before both are told (bench/lib/workerd-pairing-server.ts). ` +
    `Node ${process.version}, ${new Date().toISOString().slice(0, 10)}.`,
  '',
  `Command: \`npx node bench/matchmaking.bench.ts --clients ${CLIENTS} --rounds ${ROUNDS} --pair-interval ${PAIR_INTERVAL_MS}\``,
  '',
  '| scenario | p50 ms | p99 ms | max ms |',
  '| --- | ---: | ---: | ---: |',
  ...table(nexusRows, 'Nexus'),
  ...table(floorRows.pair!, 'workerd floor, pairs only'),
  ...table(floorRows['pair-with-rooms']!, 'workerd floor, a new object per pair'),
  ...table(peerRows, 'Colyseus'),
  '',
  `workerd's CPU time over the ${CLIENTS}-join burst (from /proc, from the joins sent to the last match_found; median over rounds, ` +
    `and per match): ${Object.entries(burstCpu)
      .map(
        ([who, ms]) =>
          `${who} ${fmt(median(ms), 0)} ms (${fmt(median(ms) / (CLIENTS / 2), 2)} ms per match)`,
      )
      .join('; ')}. Each round: ${Object.entries(burstCpu)
      .map(([who, ms]) => `${who} ${ms.map((x) => fmt(x, 0)).join(', ')}`)
      .join('; ')}.`,
  '',
  'Goal: p99 time to match under 100 ms once enough players wait, and faster than Colyseus.',
  '',
].join('\n')
console.log(md)
mkdirSync('bench/results', { recursive: true })
writeFileSync('bench/results/matchmaking.md', md)
