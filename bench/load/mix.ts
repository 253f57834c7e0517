/**
 * The players' traffic mix shared by the steady, soak and close scenarios: 70% reads (top,
 * around a player, a player's rank) and 30% submits, from a pool of guest players.
 */
import { closedLoop, guests, must, noteFailure, ok, Recorder, type Ctx } from './lib.ts'

export interface Player {
  token: string
  playerId: string
}

/** Request `i` of the mix against `board`. */
export function playerMix(ctx: Ctx, board: string, players: Player[]) {
  const base = `${ctx.stack.url}/v1/leaderboards/${board}`
  return (i: number): [string, () => Promise<boolean>] => {
    const p = players[i % players.length]!
    const roll = Math.random()
    if (roll < 0.3) {
      return [
        'submit',
        () =>
          ok(
            fetch(`${base}/scores`, {
              method: 'POST',
              headers: {
                authorization: `Bearer ${p.token}`,
                'content-type': 'application/json',
                'idempotency-key': crypto.randomUUID(),
              },
              body: JSON.stringify({ score: Math.round(Math.random() * 1e6) }),
            }),
          ),
      ]
    }
    if (roll < 0.6) return ['top', () => ok(fetch(`${base}/top?limit=10`))]
    if (roll < 0.8) {
      // A player with no score yet this cycle (right after a close) is answered 404 not-found:
      // the right answer, not a failure.
      return [
        'around',
        async () => {
          const res = await fetch(`${base}/around/${p.playerId}?limit=11`)
          const body = await res.text()
          if (res.ok || (res.status === 404 && body.includes('urn:nexus:problem:not-found'))) {
            return true
          }
          noteFailure(`HTTP ${res.status}`)
          return false
        },
      ]
    }
    return ['rank', () => ok(fetch(`${base}/players/${p.playerId}`))]
  }
}

/** Fills a board with `n` entries through the admin import, 500 at a time. */
export async function seedBoard(
  ctx: Ctx,
  board: string,
  n: number,
  prefix = 'seed',
): Promise<void> {
  const batches = Math.ceil(n / 500)
  let next = 0
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      while (next < batches) {
        const b = next++
        const entries = Array.from({ length: Math.min(500, n - b * 500) }, (_, i) => ({
          playerId: `${prefix}-${b}-${i}`,
          score: Math.round(Math.random() * 1e6),
        }))
        const res = await fetch(`${ctx.stack.url}/v1/admin/leaderboards/${board}/entries`, {
          method: 'POST',
          headers: ctx.admin,
          body: JSON.stringify({ entries }),
        })
        if (!res.ok) throw new Error(`seed: ${res.status} ${await res.text()}`)
        await res.arrayBuffer()
      }
    }),
  )
}

/** Gives every player a score first, so reads around them find them (setup, not measured). */
export async function enroll(ctx: Ctx, board: string, players: Player[]): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < players.length) {
        const p = players[next++]!
        const res = await fetch(`${ctx.stack.url}/v1/leaderboards/${board}/scores`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${p.token}`,
            'content-type': 'application/json',
            'idempotency-key': crypto.randomUUID(),
          },
          body: JSON.stringify({ score: Math.round(Math.random() * 1e6) }),
        })
        if (!res.ok) throw new Error(`enroll: ${res.status} ${await res.text()}`)
        await res.arrayBuffer()
      }
    }),
  )
}

/**
 * The steady mix both the steady and the soak scenarios run: a fresh board pre-filled with 10,000
 * entries, `players` guests, and `concurrency` closed-loop clients for `seconds`.
 */
export async function runSteadyMix(
  ctx: Ctx,
  name: string,
  opts: { seconds: number; concurrency: number; players: number },
): Promise<Recorder> {
  const board = `load-${name}-${Date.now()}`
  await must(ctx, 'PUT', `/v1/admin/leaderboards/${board}`, { submitsPerMinute: 600 })
  await seedBoard(ctx, board, 10_000)
  const players = await guests(ctx, opts.players)
  await enroll(ctx, board, players)
  const rec = new Recorder()
  await closedLoop({
    rec,
    concurrency: opts.concurrency,
    durationMs: opts.seconds * 1000,
    next: playerMix(ctx, board, players),
  })
  return rec
}
