import { describe, expect, it, onTestFinished } from 'vitest'
import {
  bucketQuantile,
  parsePrometheus,
  summarizeMetrics,
} from '../../workers/dashboard/metrics.ts'
import { renderFamilies } from '../../workers/lib/metric-families.ts'
import { REWARDS_OF_LAST_DAY } from '../../workers/routes/dashboard.ts'
import { Counter, Histogram } from '../../workers/lib/metrics.ts'
import { createBoard, pg, submitFor } from './helpers/boards.ts'
import { runInDurableObject } from 'cloudflare:test'
import type { Leaderboard } from '../../durable-objects/leaderboard.ts'
import { createQueue } from './helpers/matchmaking.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import {
  ADMIN_KEY,
  bearer,
  call,
  callWithEnv,
  clearOfTurn,
  json,
  newGuest,
} from './helpers/http.ts'
import { env, exports } from 'cloudflare:workers'

/** A request to the Worker at a URL of the test's choosing (scheme and host). */
function callUrl(url: string): Promise<Response> {
  return (exports as unknown as { default: Fetcher }).default.fetch(
    new Request(url, { redirect: 'manual' }),
  )
}

describe('the dashboard page', () => {
  it('is a shell with no data, under a CSP that allows only its own origin', async () => {
    const res = await callUrl('https://nexus.test/dashboard')
    expect(res.status).toBe(200)
    expect(res.headers.get('strict-transport-security')).toBe('max-age=31536000')
    const csp = res.headers.get('content-security-policy')!
    expect(csp).toContain("default-src 'none'")
    expect(csp).toContain("script-src 'self'")
    expect(csp).not.toContain('unsafe-inline')
    expect(res.headers.get('x-frame-options')).toBe('DENY')
    // A page that opened it cannot navigate it elsewhere (a copy asking for the key again).
    expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin')
    const html = await res.text()
    expect(html).toContain('<script src="/dashboard/app.js" defer></script>')
    expect(html).not.toMatch(/<script>[^<]/)
    const js = await call('/dashboard/app.js')
    expect(js.headers.get('content-type')).toContain('javascript')
    expect(await js.text()).toContain("var API = '/dashboard/api'")
  })
})

describe('the dashboard over plain HTTP', () => {
  it('is sent to HTTPS, where the admin key it asks for travels encrypted, but on this machine', async () => {
    const plain = await callUrl('http://nexus.test/dashboard?interval=2000')
    expect(plain.status).toBe(308)
    expect(plain.headers.get('location')).toBe('https://nexus.test/dashboard?interval=2000')
    expect(await plain.text()).not.toContain('admin-key')
    for (const local of ['http://127.0.0.1:8787/dashboard', 'http://localhost:8787/dashboard']) {
      const res = await callUrl(local)
      expect(res.status, local).toBe(200)
      // HSTS would pin every port of this machine to HTTPS.
      expect(res.headers.get('strict-transport-security')).toBeNull()
      expect(await res.text()).toContain('admin-key')
    }
  })
})

describe('the dashboard API', () => {
  it('needs the admin key', async () => {
    const none = await call('/dashboard/api/overview')
    expect(none.status).toBe(401)
    expect(none.headers.get('content-type')).toBe('application/problem+json')
    const { token } = await newGuest()
    expect((await call('/dashboard/api/overview', bearer(token))).status).toBe(403)
    expect((await call('/dashboard/api/overview', bearer('wrong-key'))).status).toBe(401)
  })

  it('lists boards with their cycle, queues with their waiting players, and traffic', async () => {
    const relayQueue = {
      teams: 2,
      teamSize: 1,
      rules: 'relay',
      maxRatingGap: 100,
      widenPerSecond: 10,
      regions: ['eu'],
    }
    const board = await createBoard({ name: 'Weekly', cycle: { every: '7d' } })
    const queue = `q-${crypto.randomUUID().slice(0, 8)}`
    const put = await call(`/v1/admin/queues/${queue}`, json('PUT', relayQueue, ADMIN_KEY))
    expect(put.status).toBe(201)
    const { token } = await newGuest()
    const join = await call(`/v1/matchmaking/${queue}/tickets`, json('POST', {}, token))
    expect(join.status).toBe(201)

    const res = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    expect(res.status).toBe(200)
    expect(res.headers.get('cache-control')).toBe('no-store')
    const o = (await res.json()) as {
      boards: { id: string; name: string; cycle: { cycle: number; entries: number } }[]
      queues: { id: string; waitingPlayers: number; regions: { region: string }[] }[]
      metrics: { routes: { route: string; requests: number }[] }
    }
    expect(o.boards.find((b) => b.id === board)).toMatchObject({
      name: 'Weekly',
      cycle: { cycle: 1, entries: 0 },
      paused: false,
    })
    expect(o.queues.find((q) => q.id === queue)).toMatchObject({
      waitingPlayers: 1,
      paused: false,
      regions: [{ region: 'eu' }],
    })
    const routes = o.metrics.routes.map((r) => r.route)
    expect(routes).toContain('/v1/matchmaking/:queue/tickets')

    const detail = await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))
    expect(detail.status).toBe(200)
    expect(await detail.json()).toMatchObject({ id: board, top: [], cycles: [], rewards: [] })
    const missing = await call('/dashboard/api/boards/no-such-board-x', bearer(ADMIN_KEY))
    expect(missing.status).toBe(404)

    // A paused queue shows as paused, its waiting player gone.
    const pause = await call(
      `/v1/admin/queues/${queue}`,
      json('PUT', { ...relayQueue, paused: true }, ADMIN_KEY),
    )
    expect(pause.status).toBe(200)
    const after = (await (await call('/dashboard/api/overview', bearer(ADMIN_KEY))).json()) as {
      queues: { id: string; paused: boolean; waitingPlayers: number }[]
    }
    expect(after.queues.find((q) => q.id === queue)).toMatchObject({
      paused: true,
      waitingPlayers: 0,
    })
    // A deleted one is not shown (its deletion made it the latest changed).
    const deleted = await call(`/v1/admin/queues/${queue}`, {
      ...bearer(ADMIN_KEY),
      method: 'DELETE',
    })
    expect(deleted.status).toBe(200)
    const gone = (await (await call('/dashboard/api/overview', bearer(ADMIN_KEY))).json()) as {
      queues: { id: string }[]
    }
    expect(gone.queues.map((q) => q.id)).not.toContain(queue)
    // And a paused board as paused.
    const pauseBoard = await call(
      `/v1/admin/leaderboards/${board}`,
      json('PUT', { name: 'Weekly', cycle: { every: '7d' }, paused: true }, ADMIN_KEY),
    )
    expect(pauseBoard.status).toBe(200)
    const later = (await (await call('/dashboard/api/overview', bearer(ADMIN_KEY))).json()) as {
      boards: { id: string; paused: boolean }[]
    }
    expect(later.boards.find((b) => b.id === board)?.paused).toBe(true)
  })
})

describe('the dashboard overview’s totals and outages', () => {
  it('counts every board and queue in its headline figures, not only the 50 it lists', async () => {
    const board = await createBoard({ name: 'Counted' })
    const queue = await createQueue()
    // Sixty more of each, copies of those two (no schedule, nothing to push), changed longest
    // ago, so that they come last in the lists and other files' boards and queues stay listed:
    // more than a list holds, however few the database had.
    const tag = `dash-${crypto.randomUUID().slice(0, 8)}`
    await pg()`insert into leaderboards (id, config, version, pushed_version, updated_at)
      select ${tag} || '-b' || i, config, version, version, '2000-01-01'
        from leaderboards, generate_series(1, 60) as i where id = ${board}`
    await pg()`insert into queues (id, config, version, updated_at)
      select ${tag} || '-q' || i, config, version, '2000-01-01'
        from queues, generate_series(1, 60) as i where id = ${queue}`
    onTestFinished(async () => {
      await pg()`update leaderboards set deleted_at = now() where id like ${tag + '-%'}`
      await pg()`update queues set deleted_at = now() where id like ${tag + '-%'}`
    })
    const o = (await (await call('/dashboard/api/overview', bearer(ADMIN_KEY))).json()) as {
      totals: { boards: number; queues: number }
      boards: unknown[]
      queues: unknown[]
      listsError: string | null
    }
    expect(o.listsError).toBeNull()
    for (const k of ['boards', 'queues'] as const) {
      expect(o[k]).toHaveLength(50)
      expect(o.totals[k]).toBeGreaterThanOrEqual(61)
    }
  })

  it('with Postgres unreachable still answers with the traffic, the lists said to be unavailable', async () => {
    const testEnv = env as unknown as Record<string, string>
    const res = await callWithEnv(
      {
        DATABASE_URL: testEnv.TEST_UNREACHABLE_DATABASE_URL,
        NEON_LOCAL_RELAY: testEnv.TEST_UNREACHABLE_NEON_RELAY,
      },
      '/dashboard/api/overview',
      bearer(ADMIN_KEY),
    )
    expect(res.status).toBe(200)
    const o = (await res.json()) as {
      totals: unknown
      boards: unknown[]
      listsError: string | null
      metrics: { requests: number }
    }
    expect(o.totals).toBeNull()
    expect(o.boards).toEqual([])
    expect(o.listsError).toEqual(expect.any(String))
    expect(o.metrics.requests).toBeGreaterThan(0)
  })
})

describe('the dashboard overview at scale', () => {
  it("counts a board's rewards of the last day, not its whole history", async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    // Two rewards today, three from a week ago (cycles closed long since), and one today that
    // an admin voided, which is not paid.
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward, created_at)
      select ${board}, c, 'p' || c, 1, '{}'::jsonb,
             case when c <= 2 then now() - interval '1 hour' else now() - interval '7 days' end
        from generate_series(1, 5) as c`
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward, voided_at)
      values (${board}, 6, 'cheat', 1, '{}'::jsonb, now())`
    const res = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const o = (await res.json()) as { boards: { id: string; rewardsPaidLastDay: number }[] }
    expect(o.boards.find((b) => b.id === board)).toMatchObject({
      rewardsPaidLastDay: 2,
      moreRewardsPaid: false,
    })
  })

  it("counts a board's rewards of the last day up to 1,000 (a floor past it): a board paying thousands a day is not read whole every refresh", async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward)
      select ${board}, 1, 'p' || r, r, '{}'::jsonb from generate_series(1, 1500) as r`
    const res = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const o = (await res.json()) as { boards: { id: string }[] }
    expect(o.boards.find((b) => b.id === board)).toMatchObject({
      rewardsPaidLastDay: 1000,
      moreRewardsPaid: true,
    })
    // PostgreSQL stops reading the board's rewards at the cap: 1,001 of its 1,500 rows.
    const [plan] = (await pg().query(
      `explain (analyze, format json) select ${REWARDS_OF_LAST_DAY('$1', '$2')} as n`,
      [board, 1001],
    )) as { 'QUERY PLAN': unknown }[]
    const scans: { rows: number; loops: number }[] = []
    const walk = (node: Record<string, unknown>) => {
      if (node['Relation Name'] === 'rewards')
        scans.push({ rows: node['Actual Rows'] as number, loops: node['Actual Loops'] as number })
      for (const child of (node.Plans as Record<string, unknown>[] | undefined) ?? []) walk(child)
    }
    walk((plan!['QUERY PLAN'] as { Plan: Record<string, unknown> }[])[0]!.Plan)
    expect(scans).toEqual([{ rows: 1001, loops: 1 }])
  })

  it('a board that does not answer within 3 s shows as unavailable; the rest of the page comes', async () => {
    const stuck = await createBoard()
    const fine = await createBoard()
    // Its answer comes, but after 8 s (a slow Neon at its wake).
    await replaceMethod<Leaderboard, 'operatorInfo'>(
      env.LEADERBOARD.getByName(stuck),
      'operatorInfo',
      (original) =>
        function (this: Leaderboard, id) {
          if (id !== stuck) return original.call(this, id)
          return new Promise((resolve) => setTimeout(() => resolve(original.call(this, id)), 8_000))
        },
    )
    const res = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const o = (await res.json()) as { boards: { id: string; error: string | null }[] }
    expect(o.boards.find((b) => b.id === stuck)?.error).toEqual(expect.any(String))
    expect(o.boards.find((b) => b.id === fine)?.error).toBeNull()
  })

  it("a board's page shows the payouts of its last 10 cycles that paid, newest first", async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    // 14 closed cycles; 13 and 7 paid nobody. Cycle c paid ranks 1 to c (c players).
    await pg()`insert into leaderboard_cycles (leaderboard_id, cycle, starts_at, ends_at, entries)
      select ${board}, c, now() - interval '1 day', now() - interval '1 hour', 100
        from generate_series(1, 14) as c`
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward)
      select ${board}, c, 'p' || r, r, '{}'::jsonb
        from generate_series(1, 14) as c, generate_series(1, c) as r
       where c not in (7, 13)`
    const detail = await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))
    const { rewards } = (await detail.json()) as {
      rewards: { cycle: number; players: number; ranks: [number, number] }[]
    }
    const paid = [14, 12, 11, 10, 9, 8, 6, 5, 4, 3]
    expect(rewards).toEqual(
      paid.map((c) => ({ cycle: c, players: c, morePlayers: false, ranks: [1, c] })),
    )
  })

  it('leaves voided rewards out of the cycles that paid and of their ranks', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    await pg()`insert into leaderboard_cycles (leaderboard_id, cycle, starts_at, ends_at, entries)
      select ${board}, c, now() - interval '1 day', now() - interval '1 hour', 10
        from generate_series(1, 3) as c`
    // Cycle 3's only reward was voided (its player erased); cycle 2's rank 1 too.
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward, voided_at)
      values (${board}, 3, 'a', 1, '{}'::jsonb, now()),
             (${board}, 2, 'a', 1, '{}'::jsonb, now()),
             (${board}, 2, 'b', 2, '{}'::jsonb, null),
             (${board}, 2, 'c', 3, '{}'::jsonb, null),
             (${board}, 1, 'b', 1, '{}'::jsonb, null)`
    const detail = await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))
    const { rewards } = (await detail.json()) as {
      rewards: { cycle: number; players: number; ranks: [number, number] }[]
    }
    expect(rewards).toEqual([
      { cycle: 2, players: 2, morePlayers: false, ranks: [2, 3] },
      { cycle: 1, players: 1, morePlayers: false, ranks: [1, 1] },
    ])
  })

  it("counts a paid cycle's players up to 1,000 (a floor past it), leaving voided rewards out", async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    await pg()`insert into leaderboard_cycles (leaderboard_id, cycle, starts_at, ends_at, entries)
      select ${board}, c, now() - interval '1 day', now() - interval '1 hour', 5000
        from generate_series(1, 2) as c`
    // Cycle 2 paid 1,500 ranks, cycle 1 paid 1,001 of which 2 were voided since (an erasure).
    await pg()`insert into rewards (leaderboard_id, cycle, player_id, rank, reward, voided_at)
      select ${board}, c, 'p' || r, r, '{}'::jsonb, case when c = 1 and r <= 2 then now() end
        from generate_series(1, 2) as c, generate_series(1, case c when 2 then 1500 else 1001 end) as r`
    const detail = await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))
    const { rewards } = (await detail.json()) as { rewards: unknown[] }
    expect(rewards).toEqual([
      { cycle: 2, players: 1000, morePlayers: true, ranks: [1, 1500] },
      // Ranks 1 and 2 voided: the ranks paid and in force.
      { cycle: 1, players: 999, morePlayers: false, ranks: [3, 1001] },
    ])
  })
})

describe('the dashboard and an archive that keeps failing', () => {
  it('shows the close the board has not finished, with its failed attempts and last error, before Neon has any page of it', async () => {
    const board = await createBoard({ cycle: { every: '1h' } })
    for (const p of ['a', 'b', 'c']) await submitFor(board, p, { score: p.charCodeAt(0) })
    const object = env.LEADERBOARD.getByName(board)
    const real = await runInDurableObject(object, (inst: Leaderboard) => {
      const writer = inst.archiveWriter
      inst.archiveWriter = {
        writePage: () => Promise.reject(new Error('injected: Neon refuses the page')),
        complete: (p) => writer.complete(p),
      }
      return writer
    })
    const closed = await call(`/v1/admin/leaderboards/${board}/close`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_KEY}` },
    })
    expect(closed.status).toBe(202)
    // Two attempts by hand; the board's own retry is put an hour away so the test makes them.
    for (let i = 0; i < 2; i++) {
      await runInDurableObject(object, async (inst: Leaderboard, state) => {
        await inst.runArchive({ force: true })
        state.storage.sql.exec(
          `UPDATE closes SET next_attempt_at = ? WHERE state != 'done'`,
          Date.now() + 3_600_000,
        )
      })
    }
    const failing = {
      cycle: 1,
      state: 'archiving',
      entries: 3,
      archived: 0,
      attempts: 2,
      lastError: 'injected: Neon refuses the page',
    }
    const overview = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const { boards } = (await overview.json()) as { boards: { id: string; archiving: unknown }[] }
    expect(boards.find((b) => b.id === board)?.archiving).toMatchObject(failing)
    const detail = async () =>
      (await (await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))).json()) as {
        cycles: { cycle: number }[]
        unfinishedCloses: unknown[]
      }
    const stuck = await detail()
    // Neon has no record of the close: only the board's tells the operator.
    expect(stuck.cycles).toEqual([])
    expect(stuck.unfinishedCloses).toEqual([expect.objectContaining(failing)])

    // Neon takes the pages again: the archive finishes and the board has nothing unfinished.
    await runInDurableObject(object, async (inst: Leaderboard) => {
      inst.archiveWriter = real
      for (let i = 0; i < 10 && inst.closeStatus(1)?.state !== 'done'; i++) {
        await inst.runArchive({ force: true })
      }
    })
    const done = await detail()
    expect(done.unfinishedCloses).toEqual([])
    expect(done.cycles).toEqual([expect.objectContaining({ cycle: 1, entries: 3, archived: 3 })])
    const after = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const listed = (await after.json()) as { boards: { id: string; archiving: unknown }[] }
    expect(listed.boards.find((b) => b.id === board)?.archiving).toBeNull()
  })
})

describe('the dashboard during a gradual deployment', () => {
  it('reads a board object still on the version before (no operatorInfo) through its info: the board is listed, with no closes shown', async () => {
    // Cycle 1 throughout: not begun just before the hour turns.
    await clearOfTurn(3_600_000, 30_000)
    const board = await createBoard({ cycle: { every: '1h' } })
    await submitFor(board, 'a', { score: 1 })
    const proto = await runInDurableObject(
      env.LEADERBOARD.getByName(board),
      (inst: Leaderboard) => Object.getPrototypeOf(inst) as { operatorInfo?: unknown },
    )
    const real = proto.operatorInfo
    delete proto.operatorInfo
    onTestFinished(() => {
      proto.operatorInfo = real
    })
    const detail = await call(`/dashboard/api/boards/${board}`, bearer(ADMIN_KEY))
    expect(detail.status).toBe(200)
    expect(await detail.json()).toMatchObject({
      id: board,
      cycle: { cycle: 1, entries: 1 },
      unfinishedCloses: [],
    })
    const overview = await call('/dashboard/api/overview', bearer(ADMIN_KEY))
    const { boards } = (await overview.json()) as {
      boards: { id: string; error: string | null; archiving: unknown }[]
    }
    expect(boards.find((b) => b.id === board)).toMatchObject({ error: null, archiving: null })
  })
})

describe('metrics summary', () => {
  it('reads back what the registry renders', () => {
    const c = new Counter('t_requests_total', 'test')
    c.inc({ method: 'GET', route: '/a', status: 200 }, 7)
    c.inc({ method: 'GET', route: '/a', status: 503 }, 2)
    c.inc({ method: 'POST', route: '/b "x"', status: 404 })
    const samples = parsePrometheus(renderFamilies([c.family()]))
    expect(samples).toEqual([
      { name: 't_requests_total', labels: { method: 'GET', route: '/a', status: '200' }, value: 7 },
      { name: 't_requests_total', labels: { method: 'GET', route: '/a', status: '503' }, value: 2 },
      {
        name: 't_requests_total',
        labels: { method: 'POST', route: '/b "x"', status: '404' },
        value: 1,
      },
    ])
  })

  it('unescapes label values in one pass: an escaped backslash before "n" is no newline', () => {
    const value = 'a\\n"b\nc\\'
    const text = renderFamilies([
      {
        kind: 'counter',
        name: 't_total',
        help: 't',
        series: [{ labels: { route: value }, value: 1 }],
      },
    ])
    expect(parsePrometheus(text)).toEqual([{ name: 't_total', labels: { route: value }, value: 1 }])
  })

  it('estimates quantiles inside the bucket that holds the true one', () => {
    const buckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    for (let run = 0; run < 50; run++) {
      const h = new Histogram('t_duration_seconds', 'test', buckets)
      const values = Array.from(
        { length: 1 + Math.floor(Math.random() * 400) },
        () => Math.random() ** 3 * 3,
      )
      for (const v of values) h.observe({ route: '/x' }, v)
      const cumulative = parsePrometheus(renderFamilies([h.family()]))
        .filter((s) => s.name === 't_duration_seconds_bucket')
        .map(
          (s) =>
            [s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), s.value] as [number, number],
        )
      const sorted = [...values].sort((a, b) => a - b)
      for (const q of [0.5, 0.95, 0.99]) {
        const truth = sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!
        const est = bucketQuantile(cumulative, q)!
        const upper = buckets.find((b) => truth <= b) ?? Infinity
        const lower = [...buckets].reverse().find((b) => b < truth) ?? 0
        // Within the true value's bucket (the +Inf bucket answers its lower edge).
        expect(est).toBeGreaterThanOrEqual(lower)
        expect(est).toBeLessThanOrEqual(Number.isFinite(upper) ? upper : lower)
      }
    }
    expect(
      bucketQuantile(
        [
          [1, 0],
          [Infinity, 0],
        ],
        0.5,
      ),
    ).toBeNull()
  })

  it('counts 4xx and 5xx per route across statuses', () => {
    const text = [
      'nexus_http_requests_total{method="GET",route="/a",status="200"} 90',
      'nexus_http_requests_total{method="GET",route="/a",status="429"} 6',
      'nexus_http_requests_total{method="GET",route="/a",status="500"} 4',
      'nexus_http_request_duration_seconds_bucket{method="GET",route="/a",status="200",le="0.1"} 90',
      'nexus_http_request_duration_seconds_bucket{method="GET",route="/a",status="200",le="+Inf"} 90',
      'nexus_http_request_duration_seconds_bucket{method="GET",route="/a",status="500",le="0.1"} 0',
      'nexus_http_request_duration_seconds_bucket{method="GET",route="/a",status="500",le="+Inf"} 4',
      'nexus_pool_waiting{queue="q",region="eu"} 3',
      'nexus_pool_waiting{queue="q",region="us"} 2',
    ].join('\n')
    const s = summarizeMetrics(text)
    expect(s).toMatchObject({ requests: 100, clientErrors: 6, serverErrors: 4 })
    expect(s.routes[0]).toMatchObject({
      route: '/a',
      requests: 100,
      clientErrors: 6,
      serverErrors: 4,
    })
    expect(s.routes[0]!.p50).toBeCloseTo((0.1 * 47) / 90, 6)
    expect(s.families).toEqual([{ name: 'nexus_pool_waiting', value: 5, series: 2 }])
  })
})
