import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it, onTestFinished } from 'vitest'
import type { MatchPool } from '../../durable-objects/match-pool.ts'
import type { Env } from '../../workers/env.ts'
import { pushLostQueueConfigs, runScheduled } from '../../workers/scheduled.ts'
import { pruneIdleClaims, removeFromQueues } from '../../workers/matchmaking/claims.ts'
import {
  CLAIM_MAX_AGE_MS,
  FENCE_RETENTION_MS,
  type FenceEntry,
} from '../../workers/matchmaking/claims.ts'
import { localFamilies } from '../../workers/lib/metrics.ts'
import { holdLock, pg } from './helpers/boards.ts'
import { replaceMethod } from './helpers/replace-method.ts'
import { ADMIN_KEY, call, json, newGuest, problem } from './helpers/http.ts'
import { connect, nextOfType, until } from './helpers/sockets.ts'
import {
  createQueue,
  DUEL,
  fireAlarm,
  graceUntil,
  joinFor,
  newClock,
  poolOf,
  rig,
  sessionCalls,
  setRating,
  ticketOf,
  type Queued,
  type Ticket,
} from './helpers/matchmaking.ts'

/*
 * One ticket per player per queue, across its regions: each region is its own pool, and a join
 * fences the other regions through the player's claim in Neon (workers/matchmaking/claims.ts).
 */

const TWO_REGIONS = { regions: ['eu', 'us'] }

function joinAs(queue: string, token: string, region: string): Promise<Response> {
  return call(`/v1/matchmaking/${queue}/tickets`, json('POST', { region }, token))
}

function cancel(ticketId: string, token: string): Promise<Response> {
  return call(`/v1/matchmaking/tickets/${ticketId}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  })
}

async function waiting(queue: string, region: string): Promise<number> {
  return runInDurableObject(
    poolOf(queue, region),
    async (inst: MatchPool) => (await inst.stats(region)).waitingTickets,
  )
}

/** The refusals counted for this rule in this isolate, for a queue, region and reason. */
function refusals(queue: string, region: string, reason: string): number {
  const family = localFamilies().find((f) => f.name === 'nexus_matchmaking_joins_refused_total')
  const series = (family?.series ?? []) as { labels: Record<string, string>; value: number }[]
  return (
    series.find(
      (x) => x.labels.queue === queue && x.labels.region === region && x.labels.reason === reason,
    )?.value ?? 0
  )
}

async function rigBoth(queue: string): Promise<void> {
  const clock = newClock()
  await rig(queue, clock, { region: 'eu' })
  await rig(queue, clock, { region: 'us' })
}

/**
 * Holds the `fence` calls a pool makes to other pools until `release()`: the moment a claim is
 * under way, made wide enough to put another join in it. A plain flag both sides poll, since a
 * promise made here cannot be awaited inside the Durable Object.
 */
function holdFences(queue: string, region: string) {
  const gate = { reached: false, released: false }
  const installed = runInDurableObject(poolOf(queue, region), (inst: MatchPool) => {
    const holder = inst as unknown as { env: Env }
    const real = holder.env
    const pools = {
      getByName(name: string) {
        const stub = real.MATCH_POOL.getByName(name)
        return {
          async fence(entries: FenceEntry[]) {
            gate.reached = true
            while (!gate.released) await new Promise((r) => setTimeout(r, 5))
            return stub.fence(entries)
          },
        }
      },
    }
    holder.env = new Proxy(real, {
      get: (target, key) => (key === 'MATCH_POOL' ? pools : Reflect.get(target, key)),
    })
  })
  return {
    installed,
    reached: until(async () => (gate.reached ? true : undefined), 5000, 'a fence call'),
    release: () => {
      gate.released = true
    },
  }
}

/**
 * A player's socket in us whose claim is fenced: the player then queued in eu and cancelled, so
 * the socket's next join must take a new claim.
 */
async function socketWithFencedClaim() {
  const q = await createQueue(TWO_REGIONS)
  await rigBoth(q)
  const g = await newGuest()
  const us = await connect(`/v1/matchmaking/${q}?region=us`, g.token)
  const eu = (await (await joinAs(q, g.token, 'eu')).json()) as Ticket
  expect((await cancel(eu.ticketId, g.token)).status).toBe(200)
  return { q, g, us }
}

/**
 * Holds `method` of `queue`'s pool in `region` (every call to it) until the test releases it or
 * ends: a region's pool that has stopped answering.
 */
async function hangPool(
  queue: string,
  region: string,
  method: 'fence' | 'configure' | 'stats',
): Promise<() => void> {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  await replaceMethod<MatchPool, typeof method>(
    poolOf(queue, region),
    method,
    (original) =>
      async function (this: MatchPool, ...args: unknown[]) {
        const self = this as unknown as { queue: string | null; region: string | null }
        const name = method === 'stats' ? args[0] : self.region
        if ((self.queue === queue || method !== 'fence') && name === region) await released
        return (original as (...a: unknown[]) => unknown).apply(this, args)
      } as never,
  )
  onTestFinished(release)
  return release
}

describe('a region whose pool does not answer', () => {
  it("a join elsewhere that must fence it answers 503 within the socket connect's 5 s, not when it answers", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    const eu = (await (await joinAs(q, g.token, 'eu')).json()) as Ticket
    expect((await cancel(eu.ticketId, g.token)).status).toBe(200)
    await hangPool(q, 'eu', 'fence')
    const started = Date.now()
    const res = await joinAs(q, g.token, 'us')
    expect(await problem(res)).toMatchObject({ status: 503, type: 'urn:nexus:problem:unavailable' })
    // A pool still out at the deadline is not asked again in a moment: past the SDK's 5 s.
    const wait = Number(res.headers.get('retry-after'))
    expect(wait).toBeGreaterThanOrEqual(6)
    expect(wait).toBeLessThanOrEqual(15)
    expect(Date.now() - started).toBeLessThan(8_000)
  })

  it('taking the dead region out of the queue lets its recent players join the others: its fence is asked for 2 s, and the region stays named in their claims for when it answers', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const [g, h] = await Promise.all([newGuest(), newGuest()])
    for (const p of [g, h]) {
      const eu = (await (await joinAs(q, p.token, 'eu')).json()) as Ticket
      expect((await cancel(eu.ticketId, p.token)).status).toBe(200)
    }
    const releaseFence = await hangPool(q, 'eu', 'fence')
    await hangPool(q, 'eu', 'configure')
    expect((await joinAs(q, g.token, 'us')).status).toBe(503)
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, regions: ['us'] }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    const started = Date.now()
    const joined = await joinAs(q, g.token, 'us')
    expect(joined.status).toBe(201)
    expect(((await joined.json()) as Ticket).status).toBe('waiting')
    expect(Date.now() - started).toBeLessThan(5_000)
    // Not forgotten: a pool that never answered may still hold a ticket of theirs.
    const claim = async (playerId: string) =>
      (
        await pg()`select regions from queue_claims where queue = ${q} and player_id = ${playerId}`
      )[0]!.regions as Record<string, number>
    expect(Object.keys(await claim(g.playerId)).sort()).toEqual(['eu', 'us'])
    // Answering again, it is fenced as before and then forgotten.
    releaseFence()
    expect((await joinAs(q, h.token, 'us')).status).toBe(201)
    expect(Object.keys(await claim(h.playerId))).toEqual(['us'])
  })

  it('an admin PUT answers within 5 s of a region that does not take its push, and leaves it to the cron', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const release = await hangPool(q, 'eu', 'configure')
    const started = Date.now()
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, ...TWO_REGIONS, maxRatingGap: 333 }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    expect(Date.now() - started).toBeLessThan(8_000)
    const [row] = await pg()`select unpushed_regions from queues where id = ${q}`
    expect(row!.unpushed_regions).toEqual(['eu'])
    // Answering again, it gets the configuration from the cron; not from a run out of time for
    // these pushes, which leaves it to the next.
    release()
    await pushLostQueueConfigs(env as never, { budgetMs: -1 })
    const [kept] = await pg()`select unpushed_regions from queues where id = ${q}`
    expect(kept!.unpushed_regions).toEqual(['eu'])
    // Nor from one whose count of queues is spent.
    await pushLostQueueConfigs(env as never, { maxQueues: 0 })
    const [stillKept] = await pg()`select unpushed_regions from queues where id = ${q}`
    expect(stillKept!.unpushed_regions).toEqual(['eu'])
    await runScheduled(env, Date.now())
    const [after] = await pg()`select unpushed_regions from queues where id = ${q}`
    expect(after!.unpushed_regions).toEqual([])
  })

  it("the queue's public stats, every region's pool too slow to answer, are 503 with a Retry-After of seconds (not a 500 the SDK retries at once)", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const releases = [await hangPool(q, 'eu', 'stats'), await hangPool(q, 'us', 'stats')]
    try {
      const res = await call(`/v1/matchmaking/${q}/stats`, {
        headers: { 'cache-control': 'no-cache' },
      })
      expect(await problem(res)).toMatchObject({
        status: 503,
        type: 'urn:nexus:problem:unavailable',
      })
      const wait = Number(res.headers.get('retry-after'))
      expect(wait).toBeGreaterThanOrEqual(6)
      expect(wait).toBeLessThanOrEqual(15)
    } finally {
      for (const release of releases) release()
    }
  })

  it("the queue's public stats answer the other regions, and mark it unavailable", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    await joinFor(q, `${q}-a`, { region: 'eu' })
    await hangPool(q, 'us', 'stats')
    const res = await call(`/v1/matchmaking/${q}/stats`, {
      headers: { 'cache-control': 'no-cache' },
    })
    expect(res.status).toBe(200)
    const stats = (await res.json()) as {
      waitingTickets: number
      regions: { region: string; available: boolean; waitingTickets: number }[]
    }
    expect(stats.waitingTickets).toBe(1)
    expect(stats.regions).toEqual([
      expect.objectContaining({ region: 'eu', available: true, waitingTickets: 1 }),
      expect.objectContaining({ region: 'us', available: false, waitingTickets: 0 }),
    ])
  })
})

describe('one ticket per player per queue, across regions', () => {
  it('a join elsewhere while the ticket is in a match being made is refused saying so: wait for the match, not cancel (which it could not)', async () => {
    const q = await createQueue(TWO_REGIONS)
    const clock = newClock()
    // Sessions cannot be made for now: the match stays in the making.
    await rig(q, clock, {
      region: 'eu',
      creator: async () => ({ ok: false, problem: 'unavailable', detail: 'down' }),
    })
    await rig(q, clock, { region: 'us' })
    const [a, b] = [await newGuest(), await newGuest()]
    const inEu = (await (await joinAs(q, a.token, 'eu')).json()) as Ticket
    await joinAs(q, b.token, 'eu')
    expect((await ticketOf(inEu.ticketId, a.token)).status).toBe('matching')
    const us = await joinAs(q, a.token, 'us')
    const p = await problem(us)
    expect(p).toMatchObject({ status: 409, type: 'urn:nexus:problem:conflict' })
    expect(p.body).toMatchObject({ ticketId: inEu.ticketId, ticketStatus: 'matching' })
    expect(p.detail).toContain('wait for its match')
    // As the pool says of a cancel then.
    expect((await cancel(inEu.ticketId, a.token)).status).toBe(409)
  })

  it('a join in a second region while the first ticket waits is refused (409 naming it) and queues nothing; after a cancel it queues there', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    const eu = await joinAs(q, g.token, 'eu')
    expect(eu.status).toBe(201)
    const inEu = (await eu.json()) as Ticket

    const us = await joinAs(q, g.token, 'us')
    expect(us.status).toBe(409)
    const p = await problem(us)
    expect(p.type).toMatch(/conflict$/)
    expect(p.body).toMatchObject({
      region: 'eu',
      ticketId: inEu.ticketId,
      ticketStatus: 'waiting',
      players: [g.playerId],
    })
    expect(p.detail).toContain('cancel it to join here')
    expect(await waiting(q, 'us')).toBe(0)
    expect((await ticketOf(inEu.ticketId, g.token)).status).toBe('waiting')
    expect(refusals(q, 'us', 'other_region')).toBe(1)

    // The same region again is the ticket the player has (no claim conflict with itself).
    const again = await joinAs(q, g.token, 'eu')
    expect(again.status).toBe(200)
    expect(((await again.json()) as Ticket).ticketId).toBe(inEu.ticketId)

    expect((await cancel(inEu.ticketId, g.token)).status).toBe(200)
    const moved = await joinAs(q, g.token, 'us')
    expect(moved.status).toBe(201)
    const inUs = (await moved.json()) as Ticket
    expect(inUs.ticketId).toMatch(new RegExp(`^${q}:us:`))
    // And now eu refuses, naming us.
    const back = await joinAs(q, g.token, 'eu')
    expect(back.status).toBe(409)
    expect((await problem(back)).body).toMatchObject({ region: 'us', ticketId: inUs.ticketId })
    expect(await waiting(q, 'eu')).toBe(0)
  })

  it('a keyed retry refused for the other region gets its ticket only when it asks for the same join; another under the key is 422', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const keyed = (attributes: Record<string, string>) =>
      call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', { region: 'eu', attributes }, g.token, { 'idempotency-key': 'k-eu' }),
      )
    expect((await keyed({ m: 'a' })).status).toBe(201)
    const rivals = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { region: 'eu', attributes: { m: 'a' } }, rival.token),
    )
    expect(((await rivals.json()) as Ticket).status).toBe('matched')
    // The player now waits in us: a new join in eu would be refused for it.
    const us = await call(`/v1/matchmaking/${q}/tickets`, json('POST', { region: 'us' }, g.token))
    expect(us.status).toBe(201)
    const other = await problem(await keyed({ m: 'b' }))
    expect(other).toMatchObject({ status: 422, type: 'urn:nexus:problem:idempotency-key-reused' })
    const same = await keyed({ m: 'a' })
    expect(same.status).toBe(200)
    expect(((await same.json()) as Ticket).status).toBe('matched')
  })

  it('a keyed join naming a region no queue has is 422 and leaves no stored pool behind', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    const res = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { region: 'nowhere' }, g.token, { 'idempotency-key': 'k-x' }),
    )
    expect((await problem(res)).status).toBe(422)
    // The same live object the route asked: its storage is empty again.
    const tables = await runInDurableObject(poolOf(q, 'nowhere'), (_i: MatchPool, state) =>
      state.storage.sql.exec(`SELECT name FROM sqlite_master`).toArray(),
    )
    expect(tables).toEqual([])
  })

  it("a join naming a region of any other shape (capitals, an underscore, a space) is told the queue's regions, over HTTP and on a socket's connect; past 32 characters it is a bound", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    for (const [i, region] of ['EU', 'us_east', 'us east', 'eu/1'].entries()) {
      const p = await problem(
        await call(
          `/v1/matchmaking/${q}/tickets`,
          json('POST', { region }, g.token, { 'idempotency-key': `k-shape-${i}` }),
        ),
      )
      expect(p, region).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
      expect(p.body.errors, region).toEqual([{ path: 'region', message: 'one of: eu, us' }])
      const socket = await call(`/v1/matchmaking/${q}?region=${encodeURIComponent(region)}`, {
        headers: { upgrade: 'websocket', authorization: `Bearer ${g.token}` },
      })
      expect((await problem(socket)).body.errors, region).toEqual([
        { path: 'region', message: 'one of: eu, us' },
      ])
    }
    const long = await problem(await joinAs(q, g.token, 'e'.repeat(33)))
    expect(long).toMatchObject({ status: 422, type: 'urn:nexus:problem:validation' })
    expect(await waiting(q, 'eu')).toBe(0)
    expect(await waiting(q, 'us')).toBe(0)
  })

  it('a matched ticket no longer holds the player: the next join may be in another region', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const [a, b] = await Promise.all([newGuest(), newGuest()])
    expect((await joinAs(q, a.token, 'eu')).status).toBe(201)
    const tb = (await (await joinAs(q, b.token, 'eu')).json()) as Ticket
    expect(tb.status).toBe('matched')
    const next = await joinAs(q, a.token, 'us')
    expect(next.status).toBe(201)
    expect(((await next.json()) as Ticket).status).toBe('waiting')
  })

  it('a party is refused in one region while a member waits alone in another; the conflict names the member', async () => {
    const q = await createQueue({ ...TWO_REGIONS, teamSize: 2, maxPartySize: 2 })
    await rigBoth(q)
    const [leader, member] = [`${q}-lead`, `${q}-member`]
    const solo = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: member, region: 'us' }, ADMIN_KEY),
    )
    expect(solo.status).toBe(201)
    const soloTicket = (await solo.json()) as Ticket
    const party = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: leader, party: [leader, member], region: 'eu' }, ADMIN_KEY),
    )
    expect(party.status).toBe(409)
    expect((await problem(party)).body).toMatchObject({
      players: [member],
      region: 'us',
      ticketId: soloTicket.ticketId,
    })
    expect(await waiting(q, 'eu')).toBe(0)
    // The leader was not queued either: alone, the leader may join anywhere.
    const alone = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: leader, region: 'us' }, ADMIN_KEY),
    )
    expect(alone.status).toBe(201)
  })

  it('joins racing in two regions: each player queues in exactly one, and once they can match, no player is in two matches', async () => {
    // Ratings 200 apart and no window: nobody can match while the joins race, so a ticket
    // leaves only by a refusal, never by a match that frees its player to join again.
    const q = await createQueue({ ...TWO_REGIONS, maxRatingGap: 0, widenPerSecond: 0 })
    await rigBoth(q)
    const players = Array.from({ length: 24 }, (_, i) => `${q}-p${i}`)
    await Promise.all(players.map((p, i) => setRating(p, i * 200)))
    const results = await Promise.all(
      players.flatMap((playerId) =>
        ['eu', 'us'].map(async (region) => {
          const res = await call(
            `/v1/matchmaking/${q}/tickets`,
            json('POST', { playerId, region }, ADMIN_KEY),
          )
          return { playerId, region, status: res.status }
        }),
      ),
    )
    for (const playerId of players) {
      // One queued; the other was refused: its pool found the player's ticket there (409 naming
      // it), or the other join had fenced its claim (409, superseded).
      const statuses = results.filter((r) => r.playerId === playerId).map((r) => r.status)
      expect(statuses.sort()).toEqual([201, 409])
    }
    const counts = { eu: await waiting(q, 'eu'), us: await waiting(q, 'us') }
    expect(counts.eu + counts.us).toBe(players.length)

    // Now any two may match: each pool matches what it holds, and nobody twice.
    const put = await call(
      `/v1/admin/queues/${q}`,
      json('PUT', { ...DUEL, ...TWO_REGIONS, maxRatingGap: 5000 }, ADMIN_KEY),
    )
    expect(put.status).toBe(200)
    await fireAlarm(q, 'eu')
    await fireAlarm(q, 'us')
    const matched = new Map<string, number>()
    for (const [, calls] of sessionCalls) {
      const setup = calls[0]!
      if (setup.queue !== q) continue
      for (const p of setup.roster) matched.set(p.playerId, (matched.get(p.playerId) ?? 0) + 1)
    }
    expect([...matched.values()].every((n) => n === 1)).toBe(true)
    // Pairs within each region; an odd one out per region stays waiting.
    expect(matched.size).toBe(players.length - (counts.eu % 2) - (counts.us % 2))
  })

  it("a socket's join after its player queued in another region gets a conflict frame and queues nothing; once that ticket is gone, it queues", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    // Connected first: the socket's claim is taken at connect, then fenced by the HTTP join.
    const ws = await connect(`/v1/matchmaking/${q}?region=us`, g.token)
    const eu = (await (await joinAs(q, g.token, 'eu')).json()) as Ticket
    ws.send(JSON.stringify({ type: 'join' }))
    const err = await nextOfType<{ code: string; message: string }>(ws, 'error')
    expect(err.code).toBe('conflict')
    expect(err.message).toContain("region 'eu'")
    expect(err.message).toContain(eu.ticketId)
    expect(await waiting(q, 'us')).toBe(0)

    expect((await cancel(eu.ticketId, g.token)).status).toBe(200)
    ws.send(JSON.stringify({ type: 'join' }))
    const queued = await nextOfType<Queued>(ws, 'queued')
    expect(queued.ticketId).toMatch(new RegExp(`^${q}:us:`))
    // The socket's ticket now holds the player: an HTTP join in eu is refused.
    const refused = await joinAs(q, g.token, 'eu')
    expect(refused.status).toBe(409)
    expect((await problem(refused)).body).toMatchObject({ region: 'us', ticketId: queued.ticketId })
    ws.close(1000)
  })

  it('a socket ticket in its disconnect grace still holds the player; once the grace ends, another region takes the join', async () => {
    const q = await createQueue(TWO_REGIONS)
    const clock = newClock()
    await rig(q, clock, { region: 'eu', graceMs: 10_000 })
    await rig(q, clock, { region: 'us' })
    const g = await newGuest()
    const ws = await connect(`/v1/matchmaking/${q}?region=eu`, g.token)
    ws.send(JSON.stringify({ type: 'join' }))
    const { ticketId } = await nextOfType<Queued>(ws, 'queued')
    ws.close(1000)
    // Until the pool has seen the close and started the grace, and during the grace: refused.
    expect((await joinAs(q, g.token, 'us')).status).toBe(409)
    // The grace runs from the pool's clock when it saw the close: moved only once it has.
    await until(async () => ((await graceUntil(q, ticketId, 'eu')) !== null ? true : undefined))
    clock.t += 10_001
    const res = await joinAs(q, g.token, 'us')
    expect(res.status).toBe(201)
    expect((await ticketOf(ticketId, g.token)).status).toBe('cancelled')
  })

  it("a fence that comes while a socket's join is taking its claim leaves the socket without it: its next join asks again, after the fence is long gone", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    const us = await connect(`/v1/matchmaking/${q}?region=us`, g.token)
    // A connect in eu fences the us socket's claim: its join must take a new one.
    const eu0 = await connect(`/v1/matchmaking/${q}?region=eu`, g.token)
    eu0.close(1000)
    // Hold the us pool's call to fence eu, so a newer claim can come in the meantime.
    const gate = holdFences(q, 'us')
    await gate.installed
    us.send(JSON.stringify({ type: 'join' }))
    await gate.reached
    const eu = await connect(`/v1/matchmaking/${q}?region=eu`, g.token)
    gate.release()
    expect((await nextOfType<{ code: string }>(us, 'error')).code).toBe('conflict')
    eu.send(JSON.stringify({ type: 'join' }))
    await nextOfType<Queued>(eu, 'queued')
    // The fence in us has been swept (as 15 minutes later): the socket must not queue on the
    // claim it was taking when the fence came.
    await runInDurableObject(poolOf(q, 'us'), (_i: MatchPool, state) => {
      state.storage.sql.exec(`UPDATE fences SET at = at - ?`, FENCE_RETENTION_MS + 60_000)
    })
    await fireAlarm(q, 'us')
    us.send(JSON.stringify({ type: 'join' }))
    const err = await nextOfType<{ code: string; message: string }>(us, 'error')
    expect(err.code).toBe('conflict')
    expect(err.message).toContain("region 'eu'")
    expect(await waiting(q, 'us')).toBe(0)
    for (const ws of [us, eu]) ws.close(1000)
  })

  it('a keyed join retried after its ticket was matched gets the match, even once the player waits in another region', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const [g, rival] = await Promise.all([newGuest(), newGuest()])
    const keyed = (region: string) =>
      call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', { region }, g.token, { 'idempotency-key': 'eu-join' }),
      )
    expect((await keyed('eu')).status).toBe(201)
    const matched = (await (await joinAs(q, rival.token, 'eu')).json()) as Ticket
    expect(matched.status).toBe('matched')
    // The player has moved on to a ticket in us; the eu join's answer was lost, and is retried.
    expect((await joinAs(q, g.token, 'us')).status).toBe(201)
    const retry = await keyed('eu')
    expect(retry.status).toBe(200)
    const ticket = (await retry.json()) as Ticket
    expect(ticket).toMatchObject({ status: 'matched', existing: true })
    expect(ticket.match!.sessionId).toBe(matched.match!.sessionId)
    expect(typeof ticket.match!.token).toBe('string')
    // Answered, so not counted as refused for the other region.
    expect(refusals(q, 'eu', 'other_region')).toBe(0)
    // A join without that key is still refused while the player waits in us.
    expect((await joinAs(q, g.token, 'eu')).status).toBe(409)
    expect(refusals(q, 'eu', 'other_region')).toBe(1)
  })

  it("with Neon unreachable, a socket's join that needs a new claim gets unavailable and queues nothing; once Neon is back it queues", async () => {
    const { q, us } = await socketWithFencedClaim()
    const setNeon = (reachable: boolean) =>
      runInDurableObject(poolOf(q, 'us'), (inst: MatchPool) => {
        const holder = inst as unknown as { env: Env & { realEnv?: Env } }
        const real = holder.env.realEnv ?? holder.env
        holder.env = reachable
          ? real
          : ({
              ...real,
              realEnv: real,
              DATABASE_URL: env.TEST_UNREACHABLE_DATABASE_URL,
              NEON_LOCAL_RELAY: env.TEST_UNREACHABLE_NEON_RELAY,
            } as Env & { realEnv: Env })
      })
    await setNeon(false)
    us.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<{ code: string }>(us, 'error', 10_000)).code).toBe('unavailable')
    expect(await waiting(q, 'us')).toBe(0)
    await setNeon(true)
    us.send(JSON.stringify({ type: 'join' }))
    expect((await nextOfType<Queued>(us, 'queued')).ticketId).toMatch(new RegExp(`^${q}:us:`))
    us.close(1000)
  })

  it("a socket's join that needs a new claim after Neon's settings dropped its region (the push not yet arrived) gets unavailable and claims nothing", async () => {
    const { q, g, us } = await socketWithFencedClaim()
    // us leaves the queue in Neon; the us pool has not heard yet.
    await pg()`update queues set config = jsonb_set(config, '{regions}', '["eu"]') where id = ${q}`
    us.send(JSON.stringify({ type: 'join' }))
    const err = await nextOfType<{ code: string; message: string }>(us, 'error')
    expect(err).toMatchObject({ code: 'unavailable' })
    expect(err.message).toContain('settings are changing')
    expect(await waiting(q, 'us')).toBe(0)
    const rows =
      await pg()`select regions from queue_claims where queue = ${q} and player_id = ${g.playerId}`
    expect(rows).toEqual([{ regions: { eu: 2 } }])
    us.close(1000)
  })

  it('a join whose claim was fenced, or taken too long ago, is refused by the pool and queues nothing', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const player = `${q}-late`
    const input = (version: number, claimedAt = Date.now()) => ({
      queue: q,
      region: 'us',
      config: { ...DUEL, ...TWO_REGIONS } as never,
      version: 1,
      players: [{ playerId: player, rating: 1500 }],
      claim: { versions: { [player]: version }, claimedAt },
    })
    // As a newer join in eu does: claims up to 4 are refused in us from now on.
    const fenced = await runInDurableObject(poolOf(q, 'us'), async (inst: MatchPool) => {
      const reply = await inst.fence([{ playerId: player, upTo: 4 }])
      const old = await inst.join(input(4))
      const stale = await inst.join(input(5, Date.now() - CLAIM_MAX_AGE_MS - 1))
      return { reply, old, stale, waiting: (await inst.stats('us')).waitingTickets }
    })
    expect(fenced.reply).toEqual({ ok: true })
    expect(fenced.old).toMatchObject({
      ok: false,
      problem: 'conflict',
      extensions: { players: [player] },
    })
    expect(fenced.stale).toMatchObject({ ok: false, problem: 'conflict' })
    expect(fenced.waiting).toBe(0)
    expect(refusals(q, 'us', 'superseded')).toBe(2)
    // A newer claim queues, and then a fence is refused: the player's ticket here is live.
    const newer = await runInDurableObject(poolOf(q, 'us'), async (inst: MatchPool) => {
      const joined = await inst.join(input(5))
      return { joined, reply: await inst.fence([{ playerId: player, upTo: 9 }]) }
    })
    expect(newer.joined).toMatchObject({ ok: true, existing: false })
    expect(newer.reply).toMatchObject({ ok: false, playerId: player })
  })

  it('a fence past its 15 minutes refuses nothing, swept or not (a pruned claim row restarts at version 1)', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const player = `${q}-back`
    const joined = await runInDurableObject(poolOf(q, 'us'), async (inst: MatchPool, state) => {
      await inst.fence([{ playerId: player, upTo: 7 }])
      // As if set 16 minutes ago, in a pool that has had no alarm since to sweep it.
      state.storage.sql.exec(`UPDATE fences SET at = at - ?`, FENCE_RETENTION_MS + 60_000)
      return inst.join({
        queue: q,
        region: 'us',
        config: { ...DUEL, ...TWO_REGIONS } as never,
        version: 1,
        players: [{ playerId: player, rating: 1500 }],
        claim: { versions: { [player]: 1 }, claimedAt: Date.now() },
      })
    })
    expect(joined).toMatchObject({ ok: true, existing: false })
  })

  it("a ban's fences do not outlive the player's claims: the ban keeps each claim from the prune as a join does", async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const player = `${q}-banned`
    const res = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: player, region: 'eu' }, ADMIN_KEY),
    )
    expect(res.status).toBe(201)
    // Joined nearly two hours ago: the prune would take the row in minutes, the fences not.
    await pg()`update queue_claims set claimed_at = now() - interval '1 hour 55 minutes'
      where queue = ${q} and player_id = ${player}`
    const { cancelled } = await removeFromQueues(env as unknown as Env, player, 'banned')
    expect(cancelled).toHaveLength(1)
    const [row] = await pg()`select claimed_at > now() - interval '1 minute' as kept
      from queue_claims where queue = ${q} and player_id = ${player}`
    expect(row).toEqual({ kept: true })
  })

  it('fences in a pool whose configuration has not arrived yet (a region just added) survive a call that finds it unconfigured', async () => {
    const q = await createQueue(TWO_REGIONS)
    const unconfigured = poolOf(q, 'new-region')
    const player = `${q}-fenced`
    const fences = await runInDurableObject(unconfigured, async (inst: MatchPool, state) => {
      await inst.fence([{ playerId: player, upTo: 3 }])
      // A keyed retry's lookup there, as the route makes it, finds no queue configured.
      expect(await inst.ticketByKey(player, 'k-1', [player], null)).toBeNull()
      return state.storage.sql
        .exec<{ player_id: string; up_to: number }>(`SELECT player_id, up_to FROM fences`)
        .toArray()
    })
    expect(fences).toEqual([{ player_id: player, up_to: 3 }])
    // Once the fences have run out, nothing is kept: the next such call drops the storage.
    const tables = await runInDurableObject(unconfigured, async (inst: MatchPool, state) => {
      state.storage.sql.exec(`UPDATE fences SET at = at - ?`, FENCE_RETENTION_MS + 60_000)
      expect(await inst.ticketByKey(player, 'k-1', [player], null)).toBeNull()
      return state.storage.sql.exec(`SELECT name FROM sqlite_master`).toArray()
    })
    expect(tables).toEqual([])
  })

  it('the cron prunes claims idle for two hours; recent ones stay, and a pruned player joins again at version 1', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const [idle, recent] = [`${q}-idle`, `${q}-recent`]
    for (const [playerId, region] of [
      [idle, 'eu'],
      [recent, 'us'],
    ]) {
      const res = await call(
        `/v1/matchmaking/${q}/tickets`,
        json('POST', { playerId, region }, ADMIN_KEY),
      )
      expect(res.status).toBe(201)
      const t = (await res.json()) as Ticket
      expect((await cancel(t.ticketId, ADMIN_KEY)).status).toBe(200)
    }
    await pg()`update queue_claims set claimed_at = now() - interval '2 hours 1 minute'
      where queue = ${q} and player_id = ${idle}`
    await pg()`update queue_claims set claimed_at = now() - interval '1 hour 59 minutes'
      where queue = ${q} and player_id = ${recent}`
    const { claimsPruned } = await runScheduled(env as never, Date.now())
    expect(claimsPruned).toBeGreaterThanOrEqual(1)
    const left =
      await pg()`select player_id from queue_claims where queue = ${q} order by player_id`
    expect(left).toEqual([{ player_id: recent }])
    // A new row for the idle player, in the other region: nothing of the old one refuses it.
    const again = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: idle, region: 'us' }, ADMIN_KEY),
    )
    expect(again.status).toBe(201)
    const [row] = await pg()`select version::int as version, regions from queue_claims
      where queue = ${q} and player_id = ${idle}`
    expect(row).toEqual({ version: 1, regions: { us: 1 } })
  })

  it('the cron prunes every idle claim in batches, not one batch a run', async () => {
    const q = await createQueue(TWO_REGIONS)
    // More than one statement's batch (5,000).
    const n = 12_000
    await pg()`insert into queue_claims (queue, player_id, version, regions, claimed_at)
      select ${q}, 'p' || i, 1, '{"eu":1}'::jsonb, now() - interval '3 hours'
        from generate_series(1, ${n}) as i`
    // Other tests' cron runs share the database, so the count it returns may be shared too.
    await pruneIdleClaims(env as never)
    expect(await pg()`select count(*)::int as n from queue_claims where queue = ${q}`).toEqual([
      { n: 0 },
    ])
  })

  it("the prune passes over a claim a join holds rather than wait on it (a party's join and the prune locking in opposite orders deadlocked)", async () => {
    const q = await createQueue(TWO_REGIONS)
    const [held, a, b] = [`${q}-0held`, `${q}-a`, `${q}-b`]
    await pg()`insert into queue_claims (queue, player_id, version, regions, claimed_at)
      select ${q}, x, 1, '{"eu":1}'::jsonb, now() - interval '3 hours'
        from unnest(${[held, a, b]}::text[]) x`
    // A join's transaction holding one idle row, until the other two are gone (at most 6 s).
    const { done } = await holdLock(
      {
        text: 'select 1 from queue_claims where queue = $1 and player_id = $2 for update',
        params: [q, held],
      },
      {
        afterWaiter: 0,
        until: `not exists (select 1 from queue_claims
                             where queue = '${q}' and player_id <> '${held}')`,
      },
    )
    await pruneIdleClaims(env as never)
    await done
    // The held row is left for a later run; waiting on it, the prune took it once the hold ended.
    expect(
      await pg()`select player_id from queue_claims where queue = ${q} order by player_id`,
    ).toEqual([{ player_id: held }])
  })

  it('a join refused as invalid (unknown region, party too large, unknown queue) takes no claim', async () => {
    const q = await createQueue(TWO_REGIONS)
    const [a, b] = [`${q}-a`, `${q}-b`]
    const join = (queue: string, body: Record<string, unknown>) =>
      call(`/v1/matchmaking/${queue}/tickets`, json('POST', { playerId: a, ...body }, ADMIN_KEY))
    expect((await join(q, { region: 'ap' })).status).toBe(422)
    // DUEL: one player per ticket.
    expect((await join(q, { region: 'eu', party: [a, b] })).status).toBe(422)
    expect((await join(`${q}-none`, { region: 'eu' })).status).toBe(404)
    const rows = await pg()`select player_id from queue_claims where queue like ${`${q}%`}`
    expect(rows).toEqual([])
  })

  it('a region switch leaves the claim naming only the region joined (the next join asks no other pool)', async () => {
    const q = await createQueue(TWO_REGIONS)
    await rigBoth(q)
    const g = await newGuest()
    const t = (await (await joinAs(q, g.token, 'eu')).json()) as Ticket
    await cancel(t.ticketId, g.token)
    expect((await joinAs(q, g.token, 'us')).status).toBe(201)
    const rows = await pg()`select version::int as version, regions from queue_claims
      where queue = ${q} and player_id = ${g.playerId}`
    expect(rows).toEqual([{ version: 2, regions: { us: 2 } }])
  })
})
