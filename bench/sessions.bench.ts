/**
 * Event fan-out latency of game sessions through the local Worker, side by side with a Colyseus
 * room broadcasting the same messages to the same number of clients, in the same run.
 *
 * Each session has `players` clients, each sending `rate` actions per second; every action becomes
 * an event for all of them. Latency is from a sender's `send` to each recipient's receipt (all
 * clients are in this process, so they share one clock). `--sessions` runs that many sessions at
 * once, to see how it holds under load. Baseline on the Nexus sockets: `ping` → `pong`, which the
 * runtime answers without running the object's code. Two more contenders on the same workerd tell
 * the runtime's share from Nexus's: a bare relay object (the floor: accept, number, send) and the
 * same object appending each event to SQLite first (the floor of a durable log).
 *
 * The run also checks what the latency must not cost: on Nexus every client receives every event,
 * in the same order, with contiguous sequence numbers.
 *
 * `--runs` repeats the measurement (Nexus, the floors, then Colyseus, in turn, every server up throughout);
 * the table gives the median over runs of each run's p50 and p99, and the ratio is the median of
 * each run's Nexus p99 over the Colyseus p99 of the same run.
 *
 *   npx node bench/sessions.bench.ts [--players 8] [--rate 20] [--seconds 10] [--sessions 1] [--runs 1]
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import WebSocket from 'ws'
import { socketProtocols } from '../client/src/socket.ts'
import { colyseusClient, startColyseus, type ColyseusRoom } from './lib/colyseus.ts'
import { flag, fmt, median, quantile } from './lib/load.ts'
import { startStack } from './lib/stack.ts'
import { startWorkerdFloor } from './lib/workerd-floor.ts'

const PLAYERS = Math.max(2, flag('players', 8))
const RATE = Math.max(1, flag('rate', 20))
const SECONDS = Math.max(1, flag('seconds', 10))
const SESSIONS = Math.max(1, flag('sessions', 1))
const RUNS = Math.max(1, flag('runs', 1))
const PINGS = 200
const TIMEOUT_MS = 60_000

/** One client of one session, whichever server it talks to. */
interface Player {
  send(n: number, t: number): void
  /** Called with the event's room-wide sequence number and the sender's timestamp. */
  onEvent(cb: (seq: number, t: number) => void): void
  close(): void
}

interface Frame {
  type: string
  seq?: number
  event?: { kind: string; from: string; data: { n: number; t: number } }
  code?: string
}

function open(url: string, protocols: string[] = []): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    // No permessage-deflate, as Nexus deployed (wrangler.toml: no_web_socket_compression) and
    // Colyseus agree: Miniflare's own entry worker would otherwise negotiate it locally.
    const ws = new WebSocket(url, protocols, { perMessageDeflate: false })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
    ws.once('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (chunk: Buffer) => (body += String(chunk)))
      res.on('end', () => reject(new Error(`upgrade ${res.statusCode}: ${body}`)))
    })
  })
}

/**
 * Drives `sessions` (arrays of players) for SECONDS at RATE per player and returns every
 * recipient's latency, checking each session's clients all saw the same contiguous sequence.
 */
async function fanout(
  sessions: Player[][],
): Promise<{ latencies: number[]; elapsed: number; ordered: boolean }> {
  const perSession = PLAYERS * RATE * SECONDS
  const expected = perSession * PLAYERS * sessions.length
  const latencies: number[] = []
  const seqs = sessions.map((players) => players.map(() => [] as number[]))
  let received = 0
  const allIn = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`only ${received} of ${expected} events arrived`)),
      SECONDS * 1000 + TIMEOUT_MS,
    )
    sessions.forEach((players, s) =>
      players.forEach((p, i) =>
        p.onEvent((seq, t) => {
          latencies.push(performance.now() - t)
          seqs[s]![i]!.push(seq)
          if (++received === expected) {
            clearTimeout(timer)
            resolve()
          }
        }),
      ),
    )
  })
  const started = performance.now()
  const interval = 1000 / RATE
  await Promise.all(
    sessions.flatMap((players, s) =>
      players.map(async (p, i) => {
        // Phases staggered across every client of every session, so load is steady.
        const offset = (interval * (s * PLAYERS + i)) / (PLAYERS * sessions.length)
        for (let n = 0; n < RATE * SECONDS; n++) {
          const wait = started + offset + n * interval - performance.now()
          if (wait > 0) await new Promise((r) => setTimeout(r, wait))
          p.send(n, performance.now())
        }
      }),
    ),
  )
  await allIn
  const elapsed = (performance.now() - started) / 1000
  const ordered = seqs.every((clients) => {
    const first = clients[0]!
    return first.every((s, k) => s === k + 1) && clients.every((c) => c.join() === first.join())
  })
  return { latencies, elapsed, ordered }
}

/** Opens SESSIONS Nexus sessions (admin-created `relay` games) with every player's socket. */
async function nexusSessions(
  stack: Awaited<ReturnType<typeof startStack>>,
  run: number,
  refusals: string[],
): Promise<{ sessions: Player[][]; sockets: WebSocket[] }> {
  const wsBase = stack.url.replace(/^http/, 'ws')
  const sessions: Player[][] = []
  const sockets: WebSocket[] = []
  for (let s = 0; s < SESSIONS; s++) {
    const ids = Array.from({ length: PLAYERS }, (_, i) => `bench-r${run}-s${s}-p${i}`)
    const res = await fetch(`${stack.url}/v1/admin/sessions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ rules: 'relay', roster: ids.map((playerId) => ({ playerId })) }),
    })
    if (res.status !== 201) throw new Error(`create: ${res.status} ${await res.text()}`)
    const { sessionId, tokens } = (await res.json()) as {
      sessionId: string
      tokens: Record<string, string>
    }
    const socks = await Promise.all(
      // The token as the SDK sends it, in the subprotocols.
      ids.map((p) => open(`${wsBase}/v1/sessions/${sessionId}`, socketProtocols(tokens[p]!))),
    )
    sockets.push(...socks)
    sessions.push(socketPlayers(socks, refusals))
  }
  return { sessions, sockets }
}

/** Players on sockets that speak the Nexus session protocol (Nexus, and the workerd floor). */
function socketPlayers(socks: WebSocket[], refusals: string[]): Player[] {
  return socks.map((ws) => ({
    send: (n, t) => ws.send(JSON.stringify({ type: 'action', action: 'message', data: { n, t } })),
    onEvent: (cb) =>
      ws.on('message', (data) => {
        const f = JSON.parse(String(data)) as Frame
        if (f.type === 'error') refusals.push(f.code ?? '?')
        if (f.type === 'event' && f.event?.kind === 'message') cb(f.seq!, f.event.data.t)
      }),
    close: () => ws.close(1000),
  }))
}

/** SESSIONS groups of PLAYERS sockets on the workerd floor, one relay object per group. */
async function floorSessions(
  url: string,
  run: number,
  refusals: string[],
  logged: boolean,
): Promise<Player[][]> {
  const sessions: Player[][] = []
  for (let s = 0; s < SESSIONS; s++) {
    const path = `${logged ? '/log' : ''}/r${run}-s${s}`
    const socks = await Promise.all(Array.from({ length: PLAYERS }, () => open(url + path)))
    sessions.push(socketPlayers(socks, refusals))
  }
  return sessions
}

/** Ping → pong round trips, one at a time per socket, on the first session's sockets. */
async function pings(sockets: WebSocket[]): Promise<number[]> {
  const out: number[] = []
  await Promise.all(
    sockets.slice(0, PLAYERS).map(async (ws) => {
      for (let i = 0; i < PINGS / PLAYERS; i++) {
        const t0 = performance.now()
        await new Promise<void>((resolve) => {
          const on = (data: WebSocket.RawData) => {
            if ((JSON.parse(String(data)) as Frame).type !== 'pong') return
            ws.off('message', on)
            resolve()
          }
          ws.on('message', on)
          ws.send('{"type":"ping"}')
        })
        out.push(performance.now() - t0)
      }
    }),
  )
  return out
}

/** Opens SESSIONS Colyseus rooms of PLAYERS clients each. */
async function colyseusSessions(url: string): Promise<Player[][]> {
  const sessions: Player[][] = []
  for (let s = 0; s < SESSIONS; s++) {
    const first = await (
      (await colyseusClient(url)) as unknown as {
        create(name: string): Promise<ColyseusRoom>
      }
    ).create('relay')
    const roomId = (first as unknown as { roomId: string }).roomId
    const rooms: ColyseusRoom[] = [first]
    for (let i = 1; i < PLAYERS; i++) {
      const c = (await colyseusClient(url)) as unknown as {
        joinById(id: string): Promise<ColyseusRoom>
      }
      rooms.push(await c.joinById(roomId))
    }
    sessions.push(
      rooms.map((room) => ({
        send: (n, t) => room.send('action', { n, t }),
        onEvent: (cb) =>
          room.onMessage('event', (m: never) =>
            cb((m as { seq: number }).seq, (m as { data: { t: number } }).data.t),
          ),
        close: () => void room.leave(true),
      })),
    )
  }
  return sessions
}

interface RunResult {
  latencies: number[]
  elapsed: number
  ordered: boolean
}

// Both servers stay up for every run; runs alternate Nexus and Colyseus, so drift on this shared
// machine hits them alike, and each run's ratio compares neighbours.
const stack = await startStack()
const colyseus = await startColyseus()
const floor = await startWorkerdFloor('workerd-relay-server.ts')
const nexusRuns: RunResult[] = []
const floorRuns: RunResult[] = []
const loggedFloorRuns: RunResult[] = []
const peerRuns: RunResult[] = []
const pingMs: number[] = []
const refusals: string[] = []
try {
  for (let run = 0; run < RUNS; run++) {
    const { sessions, sockets } = await nexusSessions(stack, run, refusals)
    pingMs.push(...(await pings(sockets)))
    const nexus = await fanout(sessions)
    for (const p of sessions.flat()) p.close()
    if (!nexus.ordered) throw new Error('Nexus clients saw different or non-contiguous sequences')
    if (refusals.length > 0) throw new Error(`refused: ${refusals.slice(0, 5).join(', ')}`)
    nexusRuns.push(nexus)

    for (const [logged, runs] of [
      [false, floorRuns],
      [true, loggedFloorRuns],
    ] as const) {
      const bare = await floorSessions(floor.url, run, refusals, logged)
      const floorRun = await fanout(bare)
      for (const p of bare.flat()) p.close()
      if (!floorRun.ordered) throw new Error('workerd floor clients saw different sequences')
      runs.push(floorRun)
    }

    const rooms = await colyseusSessions(colyseus.url)
    const peer = await fanout(rooms)
    for (const p of rooms.flat()) p.close()
    peerRuns.push(peer)
    console.error(`run ${run + 1}/${RUNS} done`)
  }
} finally {
  await colyseus.stop()
  await floor.stop()
  await stack.stop()
}

const p99 = (r: RunResult) => quantile(r.latencies, 0.99)
const ratios = nexusRuns.map((r, i) => p99(r) / p99(peerRuns[i]!))
const floorRatios = floorRuns.map((r, i) => p99(r) / p99(peerRuns[i]!))
const overFloor = nexusRuns.map((r, i) => p99(r) / p99(floorRuns[i]!))
const overLoggedFloor = nexusRuns.map((r, i) => p99(r) / p99(loggedFloorRuns[i]!))
const nexus = {
  elapsed: median(nexusRuns.map((r) => r.elapsed)),
  ordered: nexusRuns.every((r) => r.ordered),
}
const peer = { ordered: peerRuns.every((r) => r.ordered) }
/** Median over runs of each run's p50 and p99; the worst single latency of any run. */
const row = (name: string, runs: number[][]) =>
  `| ${name} | ${runs.reduce((n, r) => n + r.length, 0)} | ${fmt(median(runs.map((r) => median(r))), 2)} | ${fmt(
    median(runs.map((r) => quantile(r, 0.99))),
    2,
  )} | ${fmt(Math.max(...runs.map((r) => r.reduce((m, x) => (x > m ? x : m), -Infinity))), 2)} |`

const total = PLAYERS * RATE * SECONDS * SESSIONS
const md = [
  `# Game sessions: event fan-out, ${SESSIONS === 1 ? '1 session' : `${SESSIONS} sessions at once`}, Nexus and Colyseus`,
  '',
  `Command: \`npx node bench/sessions.bench.ts --players ${PLAYERS} --rate ${RATE} --seconds ${SECONDS} --sessions ${SESSIONS} --runs ${RUNS}\``,
  '',
  `${SESSIONS} session(s) at once, ${PLAYERS} players each, every player sending ${RATE} actions/s for ${SECONDS} s ` +
    `(${fmt(total / nexus.elapsed, 0)} actions/s in, ${fmt((total * PLAYERS) / nexus.elapsed, 0)} events/s out on Nexus). ` +
    'Latency: a sender’s `send` to each recipient receiving the event (same process, same clock). ' +
    `Nexus: ${stack.runtime}, one \`relay\` GameSession per session, each action validated, written to the session’s durable log ` +
    'and broadcast with its sequence number. Colyseus 0.18: a room per session broadcasting each message with a room sequence ' +
    'number, no log. workerd floor: the same workerd and flags, one Durable Object per session that accepts the sockets ' +
    '(hibernation API), numbers each frame and sends it to every socket, and nothing else (bench/lib/workerd-relay-server.ts); ' +
    'with a durable log, the same object also appends each event to a SQLite table first, as a GameSession does. ' +
    'Each server runs as its own process on the same 2 cores as the clients; runs alternate Nexus, the floor, the logged floor, Colyseus.',
  '',
  '| measure | samples | p50 ms | p99 ms | max ms |',
  '| --- | ---: | ---: | ---: | ---: |',
  row(
    'Nexus: action → event, every recipient',
    nexusRuns.map((r) => r.latencies),
  ),
  row(
    'workerd floor: a bare relay object, every recipient',
    floorRuns.map((r) => r.latencies),
  ),
  row(
    'workerd floor with a durable log: the same, appending each event to SQLite',
    loggedFloorRuns.map((r) => r.latencies),
  ),
  row(
    'Colyseus: message → broadcast, every recipient',
    peerRuns.map((r) => r.latencies),
  ),
  row('Nexus: ping → pong (baseline)', [pingMs]),
  '',
  `${RUNS} run(s). Nexus p99 / Colyseus p99, median over runs: ${fmt(median(ratios), 2)}× ` +
    `(each run: ${ratios.map((r) => `${fmt(r, 2)}×`).join(', ')}). ` +
    `Every Nexus client received all events of its session in the same order, without a gap (${nexus.ordered ? 'checked' : 'FAILED'}); ` +
    `Colyseus clients too (${peer.ordered ? 'checked' : 'not in order'}).`,
  '',
  `The workerd floor, median over runs of the per-run ratios: its p99 / Colyseus p99 ${fmt(median(floorRatios), 2)}× ` +
    `(each run: ${floorRatios.map((r) => `${fmt(r, 2)}×`).join(', ')}); Nexus p99 / its p99 ${fmt(median(overFloor), 2)}× ` +
    `(each run: ${overFloor.map((r) => `${fmt(r, 2)}×`).join(', ')}); ` +
    `Nexus p99 / the logged floor's p99 ${fmt(median(overLoggedFloor), 2)}× (each run: ${overLoggedFloor.map((r) => `${fmt(r, 2)}×`).join(', ')}).`,
  '',
  'Goal: p99 under 20 ms locally and no worse than Colyseus.',
  '',
].join('\n')
mkdirSync('bench/results', { recursive: true })
writeFileSync(`bench/results/sessions${SESSIONS > 1 ? `-${SESSIONS}` : ''}.md`, md)
console.log(md)
