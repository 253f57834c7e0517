import { describe, expect, it } from 'vitest'
import { ADMIN_KEY, bearer, call, json, newGuest } from './helpers/http.ts'
import { createBoard } from './helpers/boards.ts'
import { createQueue, DUEL, joinFor, newClock, poolOf, rig } from './helpers/matchmaking.ts'
import { until } from './helpers/sockets.ts'
import { logLines } from './helpers/logs.ts'
import { connect, createSession, playerIds } from './helpers/session-sockets.ts'

/*
 * What a studio's support reads when a player says "my score didn't count", "I was queued and
 * dropped", "the game said I forfeited": the log lines that answer it, at the level production
 * keeps (`warn` at scale) when the player did not choose what happened.
 */

const linesWith = (lines: Record<string, unknown>[], msg: string) =>
  lines.filter((l) => l.msg === msg)

describe('log lines support reads', () => {
  it("a refused submission's request line says why, at warn, with the idempotency key, the client's request id and Cloudflare's ray", async () => {
    const board = await createBoard({ paused: true })
    const lines = logLines('warn')
    const res = await call(
      `/v1/leaderboards/${board}/scores`,
      json('POST', { playerId: 'support-p1', score: 5 }, ADMIN_KEY, {
        'idempotency-key': 'support-key-1',
        'x-request-id': 'client-call-1',
        'cf-ray': '8f1e2d3c4b5a6978-AMS',
      }),
    )
    expect(res.status).toBe(409)
    const [line] = linesWith(lines, 'request').filter(
      (l) => l.path === `/v1/leaderboards/${board}/scores`,
    )
    expect(line).toMatchObject({
      level: 'warn',
      status: 409,
      problem: 'conflict',
      idempotencyKey: 'support-key-1',
      clientRequestId: 'client-call-1',
      cfRay: '8f1e2d3c4b5a6978-AMS',
      requestId: res.headers.get('x-request-id'),
    })
    expect(String(line!.detail)).toMatch(/paused/i)
    // An answer that worked stays below `warn`, and so does a player knocking on an admin route
    // (a bot with a free guest token could fill the log at the level production keeps).
    const ok = await call(`/v1/leaderboards/${board}/top`)
    expect(ok.status).toBe(200)
    const guest = await newGuest()
    const knock = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { paused: false }, guest.token),
    )
    expect(knock.status).toBe(403)
    expect(linesWith(lines, 'request').map((l) => l.status)).toEqual([409])
  })

  it('a ticket that ends says why and whose it was, at warn when the player did not choose it; a match made names its session and players', async () => {
    const queue = await createQueue()
    await rig(queue, newClock())
    const lines = logLines('info')
    const [left, removed, a, b] = playerIds(4, 'support')
    const cancelled = await joinFor(queue, left!)
    const del = await call(`/v1/matchmaking/tickets/${cancelled.ticketId}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(del.status).toBeLessThan(300)
    const banned = await joinFor(queue, removed!)
    await poolOf(queue).removePlayer(removed!, Number.MAX_SAFE_INTEGER, 'banned')
    const finished = linesWith(lines, 'ticket finished')
    expect(finished.find((l) => l.ticketId === cancelled.ticketId)).toMatchObject({
      level: 'info',
      players: [left],
      outcome: 'cancelled',
      reason: 'cancelled',
    })
    expect(finished.find((l) => l.ticketId === banned.ticketId)).toMatchObject({
      level: 'warn',
      players: [removed],
      reason: 'banned',
    })

    await joinFor(queue, a!)
    const matched = await joinFor(queue, b!)
    expect(matched.status).toBe('matched')
    const [made] = linesWith(lines, 'match made')
    expect(made).toMatchObject({ sessionId: matched.match!.sessionId })
    expect((made!.players as string[]).sort()).toEqual([a, b].sort())
  })

  it("tickets a step ends by the dozen (a queue paused) log one warn line for all, each its own at info: Cloudflare keeps 256 KB of an invocation's logs", async () => {
    const queue = await createQueue({ teamSize: 3 })
    await rig(queue, newClock())
    const players = playerIds(3, 'support')
    for (const p of players) await joinFor(queue, p)
    const lines = logLines('info')
    const paused = await call(
      `/v1/admin/queues/${queue}`,
      json('PUT', { ...DUEL, teamSize: 3, paused: true }, ADMIN_KEY),
    )
    expect(paused.status).toBe(200)
    await until(
      async () => (linesWith(lines, 'tickets finished').length > 0 ? true : undefined),
      5000,
      'the summary line',
    )
    expect(linesWith(lines, 'tickets finished')).toEqual([
      expect.objectContaining({ level: 'warn', reason: 'queue_changed', count: 3 }),
    ])
    const each = linesWith(lines, 'ticket finished')
    expect(each.map((l) => l.level)).toEqual(['info', 'info', 'info'])
    expect(each.flatMap((l) => l.players as string[]).sort()).toEqual([...players].sort())
  })

  it('a session names its players when it is made', async () => {
    const lines = logLines('info')
    const players = playerIds(2, 'support')
    const { sessionId } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
    })
    const [created] = linesWith(lines, 'session created').filter((l) =>
      String(l.actor).includes(sessionId),
    )
    expect(created).toMatchObject({ players })
  })

  it("an admin's read of a session shows where its end's work stands (null while live); a player's read does not", async () => {
    const players = playerIds(1, 'support')
    const { sessionId, tokens } = await createSession({
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1 },
    })
    const read = async (token: string) =>
      (await (await call(`/v1/sessions/${sessionId}`, bearer(token))).json()) as Record<
        string,
        unknown
      >
    expect((await read(ADMIN_KEY)).end).toBeNull()
    const socket = await connect(sessionId, tokens[players[0]!]!)
    await socket.nextOf('welcome')
    socket.roll()
    await socket.nextOf('ended')
    const view = await read(ADMIN_KEY)
    expect(view.status).toBe('finished')
    expect(view.end).toMatchObject({
      stage: expect.stringMatching(/^(record|submit|archive|retain|done)$/),
      attempts: expect.any(Number),
      lastError: null,
      notSubmitted: [],
    })
    expect(await read(tokens[players[0]!]!)).not.toHaveProperty('end')
  })
})
