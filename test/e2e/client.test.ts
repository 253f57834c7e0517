/**
 * The client SDK against the real local server (wrangler dev, real Durable Objects, PostgreSQL
 * behind the Neon relay, Redis behind the Upstash endpoint), with Node's own fetch and WebSocket.
 */
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { GENERATED_PATH, renderClientTypes } from '../../client/scripts/generate.ts'
import {
  ActionRefused,
  createClient,
  MatchmakingEnded,
  NexusNetworkError,
  NexusProblem,
  type GameConnection,
  type Match,
  type NexusClient,
  type SocketEvent,
  type SocketFactory,
  type SocketLike,
} from '../../client/src/index.ts'
import { playDuel } from '../../examples/dice-duel.ts'
import { playRps } from '../../examples/rps-duel.ts'
import { admin, eventually, guestClient, stack, uid, within } from './helpers.ts'

describe('types', () => {
  it('api.gen.ts is generated from the server’s current OpenAPI document', async () => {
    const doc = (await (await fetch(`${stack().url}/openapi.json`)).json()) as unknown
    expect(readFileSync(GENERATED_PATH, 'utf8')).toBe(await renderClientTypes(doc))
  })
})

describe('auth', () => {
  it('the same device is the same player; a new device a new one', async () => {
    const a = createClient({ baseUrl: stack().url })
    const b = createClient({ baseUrl: stack().url })
    const device = `device-${crypto.randomUUID()}`
    const first = await a.auth.guest(device)
    const again = await b.auth.guest(device)
    const other = await b.auth.guest(`device-${crypto.randomUUID()}`)
    expect(again.playerId).toBe(first.playerId)
    expect(other.playerId).not.toBe(first.playerId)
  })

  it('keeps a generated device id in the storage it is given', async () => {
    const store = new Map<string, string>()
    const storage = {
      getItem: (k: string) => store.get(k) ?? null,
      setItem: (k: string, v: string) => void store.set(k, v),
    }
    const one = await createClient({ baseUrl: stack().url, storage }).auth.guest()
    const two = await createClient({ baseUrl: stack().url, storage }).auth.guest()
    expect(store.size).toBe(1)
    expect(two.playerId).toBe(one.playerId)
  })

  it('renews a token the server refuses and retries the request once', async () => {
    const board = uid('auth')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, {})
    const real = await guestClient()
    const realToken = await real.auth.token()
    let calls = 0
    const nexus = createClient({ baseUrl: stack().url })
    await nexus.auth.useTokens(async () => {
      calls++
      // The first token is garbage: the server answers 401 and the client must fetch another.
      return calls === 1
        ? { token: 'not-a-token', expiresAt: Date.now() + 3600_000 }
        : { token: realToken, expiresAt: Date.now() + 3600_000 }
    })
    const r = await nexus.leaderboards.submit(board, { score: 7 })
    expect(calls).toBe(2)
    expect(r.rank).toBe(1)
  })

  it('renews a token that is about to expire before using it', async () => {
    let guestCalls = 0
    const nexus = createClient({
      baseUrl: stack().url,
      fetch: (input, init) => {
        if (String(input).endsWith('/v1/auth/guest')) guestCalls++
        return fetch(input, init)
      },
    })
    const issued = await nexus.auth.guest(`renew-${crypto.randomUUID()}`)
    const realNow = Date.now
    // Two minutes before the token's end, by this device's clock: inside the renewal margin.
    Date.now = () => realNow() + (issued.expiresIn - 120) * 1000
    try {
      await nexus.leaderboards.rewards()
      expect(guestCalls).toBe(2)
      // The new token is fresh: the next call uses it as it is.
      await nexus.leaderboards.rewards()
      expect(guestCalls).toBe(2)
    } finally {
      Date.now = realNow
    }
  })
})

describe('leaderboards', () => {
  it('top, rank and around agree with the scores submitted', async () => {
    const board = uid('lb')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, { submitsPerMinute: 600 })
    const players = await Promise.all(Array.from({ length: 6 }, () => guestClient()))
    const scores = [50, 10, 70, 30, 60, 20]
    for (const [i, p] of players.entries())
      await p.leaderboards.submit(board, { score: scores[i]! })
    const expected = players
      .map((p, i) => ({ playerId: p.auth.playerId!, score: scores[i]! }))
      .sort((a, b) => b.score - a.score)

    const top = await players[0]!.leaderboards.top(board, { limit: 4 }, { fresh: true })
    expect(top.entries.map((e) => [e.playerId, e.score])).toEqual(
      expected.slice(0, 4).map((e) => [e.playerId, e.score]),
    )
    expect(top.total).toBe(6)
    const all: string[] = []
    for await (const e of players[0]!.leaderboards.entries(board, 2, { fresh: true }))
      all.push(e.playerId)
    expect(all).toEqual(expected.map((e) => e.playerId))

    const me = players[3]!
    const myRank = expected.findIndex((e) => e.playerId === me.auth.playerId) + 1
    const standing = await me.leaderboards.rank(board, 'me', { fresh: true })
    expect(standing.entry?.rank).toBe(myRank)
    const around = await me.leaderboards.around(board, 'me', { limit: 3 }, { fresh: true })
    expect(around.entries.map((e) => e.rank)).toEqual([myRank - 1, myRank, myRank + 1])
  })

  it('a submission whose answer was lost is retried with the same key and applied once', async () => {
    const board = uid('idem')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, {
      operator: 'incr',
      submitsPerMinute: 600,
    })
    let submits = 0
    const keys: string[] = []
    const nexus = await guestClient({
      retry: { baseDelayMs: 10 },
      fetch: async (input, init) => {
        const res = await fetch(input, init)
        if (String(input).endsWith('/scores')) {
          submits++
          keys.push(new Headers(init?.headers).get('idempotency-key') ?? '')
          // The server applied it, but the answer never reaches the game.
          if (submits === 1) throw new TypeError('fetch failed: connection reset')
        }
        return res
      },
    })
    const r = await nexus.leaderboards.submit(board, { score: 5 })
    expect(submits).toBe(2)
    expect(keys[0]).toBe(keys[1])
    expect(r.replayed).toBe(true)
    expect(r.best).toBe(5) // incremented once, not twice
    const second = await nexus.leaderboards.submit(board, { score: 5 })
    expect(second).toMatchObject({ best: 10, replayed: false })
  })

  it('a party create whose answer was lost is sent again and answers the party it made: one party, not a 409', async () => {
    let creates = 0
    const nexus = await guestClient({
      retry: { baseDelayMs: 10 },
      fetch: async (input, init) => {
        const res = await fetch(input, init)
        if (String(input).endsWith('/v1/parties') && init?.method?.toUpperCase() === 'POST') {
          creates++
          // The server made it, but the answer never reaches the game.
          if (creates === 1) throw new TypeError('fetch failed: connection reset')
        }
        return res
      },
    })
    const party = await nexus.parties.create()
    expect(creates).toBe(2)
    expect(await nexus.parties.mine()).toEqual(party)
  })

  it('failures surface as typed problems', async () => {
    const nexus = await guestClient()
    const missing = await nexus.leaderboards.top(uid('nope')).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(NexusProblem)
    expect(missing).toMatchObject({ problem: 'not-found', status: 404 })

    const board = uid('bounds')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, { scoreMax: 100 })
    const invalid = (await nexus.leaderboards
      .submit(board, { score: 1000 })
      .catch((e: unknown) => e)) as NexusProblem
    expect(invalid).toBeInstanceOf(NexusProblem)
    expect(invalid.problem).toBe('validation')
    expect(invalid.type).toBe('urn:nexus:problem:validation')
    expect(invalid.requestId).toBeTruthy()
  })

  it('history and the archive show a closed cycle', async () => {
    const board = uid('hist')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, { cycle: { every: '7d' } })
    const [a, b] = await Promise.all([guestClient(), guestClient()])
    await a.leaderboards.submit(board, { score: 3 })
    await b.leaderboards.submit(board, { score: 9 })
    const { cycle } = await a.leaderboards.info(board, { fresh: true })
    await admin('POST', `/v1/admin/leaderboards/${board}/close`, { cycle: cycle.cycle })
    await eventually('the archive', async () => {
      const s = (await admin('GET', `/v1/admin/leaderboards/${board}/cycles/${cycle.cycle}`)) as {
        state: string
      }
      return s.state === 'done'
    })
    const history = await a.leaderboards.history(board)
    expect(history.results).toEqual([
      { cycle: cycle.cycle, rank: 2, score: 3, subscore: 0, entries: 2 },
    ])
    const archive = await a.leaderboards.archive(board, cycle.cycle)
    expect(archive.complete).toBe(true)
    expect(archive.entries.map((e) => e.playerId)).toEqual([b.auth.playerId, a.auth.playerId])
  })
})

/** A socket factory that records the sockets it opens, so a test can cut one. */
function recordingSockets(): { factory: SocketFactory; opened: SocketLike[] } {
  const opened: SocketLike[] = []
  return {
    opened,
    factory: (url, protocols) => {
      const s = new WebSocket(url, protocols) as unknown as SocketLike
      opened.push(s)
      return s
    },
  }
}

/**
 * Node's WebSocket, except that the first socket loses the pool's answer to its join: the
 * connection dies (closed 4001) as that answer arrives, so the client never sees it, though the
 * pool made the ticket. `lost` hears the frame's type.
 */
function firstAnswerLost(lost: string[]): SocketFactory {
  let first = true
  return (url, protocols) => {
    const real = new WebSocket(url, protocols)
    if (!first) return real as unknown as SocketLike
    first = false
    return {
      get readyState() {
        return real.readyState
      },
      send: (d) => real.send(d),
      close: (code, reason) => real.close(code, reason),
      addEventListener: (type, l) => {
        if (type !== 'message') return real.addEventListener(type, l as never)
        real.addEventListener('message', (e) => {
          if (real.readyState !== WebSocket.OPEN) return
          const type = (JSON.parse(String(e.data)) as { type: string }).type
          // The runtime's answer to the client's first ping is not an answer to the join.
          if (type === 'pong') return l(e as never)
          lost.push(type)
          real.close(4001, 'network went away')
        })
      },
    }
  }
}

/**
 * Node's WebSocket for the first socket (recorded, so a test can cut it); every later one fails
 * to open once `gate` settles (a network still down), as a refused upgrade does to the client.
 */
function firstThenRefused(gate: Promise<unknown>): {
  factory: SocketFactory
  opened: SocketLike[]
} {
  const opened: SocketLike[] = []
  return {
    opened,
    factory: (url, protocols) => {
      if (opened.length === 0) {
        const s = new WebSocket(url, protocols) as unknown as SocketLike
        opened.push(s)
        return s
      }
      const listeners: Record<string, ((e: object) => void)[]> = {}
      void gate.then(() => {
        for (const l of listeners.error ?? []) l({})
        for (const l of listeners.close ?? []) l({ code: 1006 })
      })
      return {
        readyState: 0,
        send: () => {},
        close: () => {},
        addEventListener: (type, l) => void (listeners[type] ??= []).push(l as (e: object) => void),
      }
    },
  }
}

/** A platform whose sockets never open (a proxy that strips upgrades, say). */
const brokenSockets: SocketFactory = () => {
  const listeners: Record<string, ((e: object) => void)[]> = {}
  setTimeout(() => {
    for (const l of listeners.error ?? []) l({})
    for (const l of listeners.close ?? []) l({ code: 1006 })
  }, 5)
  return {
    readyState: 0,
    send: () => {},
    close: () => {},
    addEventListener: (type, l) => void (listeners[type] ??= []).push(l as (e: object) => void),
  }
}

/** Node's WebSocket, created only after `delayMs` (a slow mobile network's upgrade). */
/** Sockets that open only once `gate` settles (the connect held back until then). */
function slowSockets(gate: Promise<unknown>): SocketFactory {
  return (url, protocols) => {
    const listeners: [string, (e: SocketEvent) => void][] = []
    let real: WebSocket | null = null
    let closed = false
    const proxy: SocketLike = {
      get readyState() {
        return real ? real.readyState : closed ? 3 : 0
      },
      send: (d) => real!.send(d),
      close: (code, reason) => {
        closed = true
        real?.close(code, reason)
      },
      addEventListener: (type, l) => {
        listeners.push([type, l])
        real?.addEventListener(type, l as never)
      },
    }
    void gate.finally(() => {
      if (closed) return
      real = new WebSocket(url, protocols)
      for (const [type, l] of listeners) real.addEventListener(type as 'message', l as never)
    })
    return proxy
  }
}

/** What a call was refused with (fails the test if it was not refused). */
function refusalOf(call: Promise<unknown>): Promise<unknown> {
  return within(
    call.then(
      () => {
        throw new Error('expected a refusal')
      },
      (e: unknown) => e,
    ),
    'the refusal',
    30_000,
  )
}

/** A one-on-one dice-race queue's settings, without its regions. */
const DICE_DUEL = {
  teams: 2,
  teamSize: 1,
  rules: 'dice-race',
  maxRatingGap: 1000,
  widenPerSecond: 100,
}

async function duelQueue(target = 6, leaderboardId?: string): Promise<string> {
  const queue = uid('duel')
  await admin('PUT', `/v1/admin/queues/${queue}`, {
    ...(leaderboardId ? { leaderboardId } : {}),
    teams: 2,
    teamSize: 1,
    rules: 'dice-race',
    rulesOptions: { target },
    maxRatingGap: 1000,
    widenPerSecond: 100,
    regions: ['eu'],
  })
  return queue
}

describe('matchmaking', () => {
  it('two players over sockets get the same match', async () => {
    const queue = await duelQueue()
    const [a, b] = await Promise.all([guestClient(), guestClient()])
    const ta = a.matchmaking.join(queue)
    const queued = await within(ta.once('queued'), 'queued')
    expect(queued.ticketId).toMatch(new RegExp(`^${queue}:eu:`))
    const tb = b.matchmaking.join(queue)
    const [ma, mb] = await Promise.all([ta.matched, tb.matched])
    expect(ma.sessionId).toBe(mb.sessionId)
    expect(new Set(ma.players.map((p) => p.playerId))).toEqual(
      new Set([a.auth.playerId, b.auth.playerId]),
    )
    expect(ta.transport).toBe('websocket')
  })

  it('falls back to HTTP long-polling when sockets do not open', async () => {
    const queue = await duelQueue()
    const a = await guestClient({
      WebSocket: brokenSockets,
      maxReconnects: 1,
      retry: { baseDelayMs: 10 },
    })
    const b = await guestClient()
    const ta = a.matchmaking.join(queue)
    await within(ta.once('transport'), 'the fallback')
    await within(ta.once('queued'), 'queued over HTTP')
    expect(ta.transport).toBe('http')
    const tb = b.matchmaking.join(queue)
    const [ma, mb] = await Promise.all([ta.matched, tb.matched])
    expect(ma.sessionId).toBe(mb.sessionId)
    expect(ma.token).not.toBe(mb.token)
  })

  it('a dropped socket reconnects and keeps its ticket', async () => {
    const queue = await duelQueue()
    const sockets = recordingSockets()
    const a = await guestClient({ WebSocket: sockets.factory, retry: { baseDelayMs: 50 } })
    const ta = a.matchmaking.join(queue)
    const first = await within(ta.once('queued'), 'queued')
    const requeued = within(ta.once('queued'), 'queued again')
    sockets.opened[0]!.close(4001, 'network went away')
    const again = await requeued
    expect(sockets.opened.length).toBe(2)
    expect(again).toMatchObject({ ticketId: first.ticketId, existing: true })
    const b = await guestClient()
    const [ma, mb] = await Promise.all([ta.matched, b.matchmaking.join(queue).matched])
    expect(ma.sessionId).toBe(mb.sessionId)
  })

  it('a dropped socket that cannot reconnect falls back to HTTP and keeps its ticket past the 10 s grace', async () => {
    const queue = await duelQueue()
    const opened: SocketLike[] = []
    // The first socket works; after it drops, sockets never open again (a proxy change, say).
    const a = await guestClient({
      maxReconnects: 1,
      retry: { baseDelayMs: 10 },
      WebSocket: (url, protocols) => {
        if (opened.length > 0) return brokenSockets(url, protocols)
        const s = new WebSocket(url, protocols) as unknown as SocketLike
        opened.push(s)
        return s
      },
    })
    const ta = a.matchmaking.join(queue)
    const first = await within(ta.once('queued'), 'queued')
    const fellBack = within(ta.once('transport'), 'the fallback')
    opened[0]!.close(4001, 'network went away')
    expect(await fellBack).toBe('http')
    let ended: unknown = null
    ta.matched.catch((e: unknown) => (ended = e))
    // The pool cancels a socket ticket a grace after its socket is gone unless the player is
    // back: the wait is the queue's grace running out (and 2 s more), not a race.
    const { disconnectGraceSeconds } = await a.matchmaking.info(queue)
    expect(disconnectGraceSeconds).toBeGreaterThan(0)
    await new Promise((resolve) => setTimeout(resolve, (disconnectGraceSeconds + 2) * 1000))
    expect(ended).toBeNull()
    expect((await a.matchmaking.stats(queue, { fresh: true })).waitingPlayers).toBe(1)
    const b = await guestClient()
    const [ma, mb] = await within(
      Promise.all([ta.matched, b.matchmaking.join(queue).matched]),
      'the match',
    )
    expect(ma.sessionId).toBe(mb.sessionId)
    expect(ma.ticketId).toBe(first.ticketId)
  })

  it('a player waits in one region of a queue: a join elsewhere fails with conflict, over sockets and HTTP', async () => {
    const queue = uid('duel')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 1,
      rules: 'dice-race',
      maxRatingGap: 0,
      widenPerSecond: 0,
      regions: ['eu', 'us'],
    })
    const a = await guestClient()
    const inEu = a.matchmaking.join(queue, { region: 'eu' })
    const queued = await within(inEu.once('queued'), 'queued')
    const overSocket = await a.matchmaking
      .join(queue, { region: 'us' })
      .matched.catch((e: unknown) => e)
    expect(overSocket).toBeInstanceOf(NexusProblem)
    expect(overSocket).toMatchObject({ problem: 'conflict', status: 409 })
    expect((overSocket as NexusProblem).detail).toContain("region 'eu'")
    const overHttp = await a.matchmaking
      .join(queue, { region: 'us', transport: 'http' })
      .matched.catch((e: unknown) => e)
    expect(overHttp).toBeInstanceOf(NexusProblem)
    expect((overHttp as NexusProblem).body).toMatchObject({
      region: 'eu',
      ticketId: queued.ticketId,
    })
    // Cancelled in eu, the player can wait in us.
    await inEu.cancel()
    const inUs = a.matchmaking.join(queue, { region: 'us' })
    expect((await within(inUs.once('queued'), 'queued in us')).ticketId).toMatch(
      new RegExp(`^${queue}:us:`),
    )
    await inUs.cancel()
  })

  it('cancel ends the ticket; stats and unknown queues', async () => {
    const queue = await duelQueue()
    const a = await guestClient()
    const t = a.matchmaking.join(queue)
    await within(t.once('queued'), 'queued')
    const stats = await a.matchmaking.stats(queue, { fresh: true })
    expect(stats.waitingPlayers).toBe(1)
    await t.cancel()
    await expect(t.matched).rejects.toBeInstanceOf(MatchmakingEnded)
    expect((await a.matchmaking.stats(queue, { fresh: true })).waitingPlayers).toBe(0)

    const missing = a.matchmaking.join(uid('nope'))
    const err = await missing.matched.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect(err).toMatchObject({ problem: 'not-found' })
  })

  it('cancel() while the socket join is unanswered (its `queued` lost with the socket) takes the ticket out of the pool, not only the client', async () => {
    const queue = await duelQueue()
    const lost: string[] = []
    const a = await guestClient({ WebSocket: firstAnswerLost(lost) })
    const ta = a.matchmaking.join(queue)
    // The player cancels while the client waits to reconnect, before any answer named the ticket.
    await within(ta.once('reconnecting'), 'the drop')
    expect(lost).toEqual(['queued'])
    await within(ta.cancel(), 'the cancel')
    await expect(ta.matched).rejects.toBeInstanceOf(MatchmakingEnded)
    // Left to the pool's 10 s disconnect grace, the ticket would be matched with the next player.
    expect((await a.matchmaking.stats(queue, { fresh: true })).waitingPlayers).toBe(0)
  })

  it('a region the queue does not have: a socket join rejects with the 422 an HTTP join gets', async () => {
    const queue = await duelQueue()
    const nexus = await guestClient({ maxReconnects: 1, retry: { baseDelayMs: 10 } })
    const overHttp = await refusalOf(
      nexus.matchmaking.join(queue, { region: 'mars', transport: 'http' }).matched,
    )
    expect(overHttp).toMatchObject({ problem: 'validation', status: 422 })
    const overSocket = await refusalOf(
      nexus.matchmaking.join(queue, { region: 'mars', transport: 'websocket' }).matched,
    )
    expect(overSocket).not.toBeInstanceOf(NexusNetworkError)
    expect(overSocket).toMatchObject({ problem: 'validation', status: 422 })
  })

  it('a region just taken out of the queue: a socket join rejects with 422, though a cached read of the settings still lists it', async () => {
    const queue = uid('moved')
    const settings = DICE_DUEL
    await admin('PUT', `/v1/admin/queues/${queue}`, { ...settings, regions: ['eu', 'us'] })
    const nexus = await guestClient({ maxReconnects: 1, retry: { baseDelayMs: 10 } })
    expect((await nexus.matchmaking.info(queue)).regions).toEqual(['eu', 'us'])
    await admin('PUT', `/v1/admin/queues/${queue}`, { ...settings, regions: ['eu'] })
    // The cached settings (up to 4 s old) still list `us`; the SDK's check of a refused
    // socket reads them fresh.
    expect((await nexus.matchmaking.info(queue)).regions).toEqual(['eu', 'us'])
    const overSocket = await refusalOf(
      nexus.matchmaking.join(queue, { region: 'us', transport: 'websocket' }).matched,
    )
    expect(overSocket).not.toBeInstanceOf(NexusNetworkError)
    expect(overSocket).toMatchObject({ problem: 'validation', status: 422 })
  })

  it('a socket wait whose ticket was matched while its socket was away, in a region taken out meanwhile, takes that match: the refused reconnect reads its ticket before failing', async () => {
    const queue = uid('gone')
    const settings = { ...DICE_DUEL, disconnectGraceSeconds: 60 }
    await admin('PUT', `/v1/admin/queues/${queue}`, { ...settings, regions: ['eu', 'us'] })
    let letThrough!: () => void
    const gate = new Promise<void>((resolve) => (letThrough = resolve))
    const { factory, opened } = firstThenRefused(gate)
    const nexus = await guestClient({ WebSocket: factory, maxReconnects: 3 })
    const wait = nexus.matchmaking.join(queue, { region: 'us', transport: 'websocket' })
    await within(wait.once('queued'), 'queued')
    // The network goes: the client's reconnects are held until the region has gone.
    opened[0]!.close(4001, 'network went away')
    await within(wait.once('reconnecting'), 'the drop')
    const rival = (await admin('POST', `/v1/matchmaking/${queue}/tickets`, {
      playerId: uid('rival'),
      region: 'us',
    })) as { status: string; match: { sessionId: string } }
    expect(rival.status).toBe('matched')
    await admin('PUT', `/v1/admin/queues/${queue}`, { ...settings, regions: ['eu'] })
    letThrough()
    const match = await within(wait.matched, 'the match', 20_000)
    expect(match.sessionId).toBe(rival.match.sessionId)
  })
})

describe('parties', () => {
  /** The problem a call was refused with (fails the test if it was not refused). */
  async function refusal(call: Promise<unknown>): Promise<NexusProblem> {
    const err = await call.then(
      () => null,
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(NexusProblem)
    return err as NexusProblem
  }

  it('create, invite, accept, decline, revoke; a member cannot invite; the leader hands over on leaving', async () => {
    const [leader, friend, third] = await Promise.all([guestClient(), guestClient(), guestClient()])
    const [L, F, T] = [leader, friend, third].map((n) => n.auth.playerId!) as [
      string,
      string,
      string,
    ]
    expect(await leader.parties.mine()).toBeNull()
    const party = await leader.parties.create()
    expect(party).toMatchObject({ leader: L, invites: [], ticketId: null })
    expect(party.members.map((m) => m.playerId)).toEqual([L])

    const invited = await leader.parties.invite(party.id, F)
    expect(invited.invites.map((i) => i.playerId)).toEqual([F])
    const { invites } = await friend.parties.invites({ limit: 5 })
    expect(invites).toEqual([expect.objectContaining({ partyId: party.id, leader: L })])
    // An invitee reads the party it is invited to before deciding.
    expect((await friend.parties.get(party.id)).leader).toBe(L)
    const joined = await friend.parties.accept(party.id)
    expect(joined.members.map((m) => m.playerId)).toEqual([L, F])
    expect(joined.invites).toEqual([])
    expect((await friend.parties.invites()).invites).toEqual([])
    expect((await friend.parties.mine())?.id).toBe(party.id)

    // Only the leader invites: a member is refused with a typed problem naming the leader.
    const forbidden = await refusal(friend.parties.invite(party.id, T))
    expect(forbidden).toMatchObject({
      type: 'urn:nexus:problem:forbidden',
      problem: 'forbidden',
      status: 403,
    })
    expect(forbidden.detail).toContain(L)
    expect((await leader.parties.get(party.id)).invites).toEqual([])

    // Declined by the invitee, then revoked by the leader: either way the invite is gone.
    await leader.parties.invite(party.id, T)
    await third.parties.decline(party.id)
    expect((await third.parties.invites()).invites).toEqual([])
    await leader.parties.invite(party.id, T)
    await leader.parties.revoke(party.id, T)
    expect(await refusal(third.parties.accept(party.id))).toMatchObject({ problem: 'not-found' })
    const other = await refusal(third.parties.get(party.id))
    expect(other).toMatchObject({ problem: 'not-found', status: 404 })

    // The leader leaves: the longest-standing member leads, and removes members.
    await leader.parties.leave(party.id)
    expect(await leader.parties.mine()).toBeNull()
    const handed = await friend.parties.mine()
    expect(handed).toMatchObject({ id: party.id, leader: F })
    expect(handed!.members.map((m) => m.playerId)).toEqual([F])
    await friend.parties.invite(party.id, T)
    await third.parties.accept(party.id)
    await friend.parties.remove(party.id, T)
    expect(await third.parties.mine()).toBeNull()
    // The last member leaving ends the party.
    await friend.parties.leave(party.id)
    expect(await friend.parties.mine()).toBeNull()
  })

  it('the leader queues the party over HTTP: every member on one ticket, one team, one match', async () => {
    const queue = uid('squad')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 3,
      maxPartySize: 3,
      rules: 'dice-race',
      maxRatingGap: 1000,
      widenPerSecond: 100,
      regions: ['eu'],
    })
    const [leader, onSocket, overHttp, loner] = await Promise.all([
      guestClient(),
      guestClient(),
      guestClient(),
      guestClient(),
    ])
    const party = await leader.parties.create()
    for (const member of [onSocket, overHttp]) {
      await leader.parties.invite(party.id, member.auth.playerId!)
      await member.parties.accept(party.id)
    }
    const ids = [leader, onSocket, overHttp].map((n) => n.auth.playerId!)

    // Neither someone in no party nor a member who does not lead queues a party.
    const alone = loner.matchmaking.waitForParty(queue)
    expect(await refusal(alone.matched)).toMatchObject({ problem: 'not-found' })
    const notLeader = await onSocket.matchmaking.joinWithParty(queue)
    const refused = await refusal(notLeader.matched)
    expect(refused).toMatchObject({ type: 'urn:nexus:problem:forbidden', status: 403 })
    expect(refused.detail).toContain(ids[0])
    expect((await leader.parties.mine())!.ticketId).toBeNull()

    // Members wait first: one on its socket, one reading the party over HTTP.
    const socketWait = onSocket.matchmaking.waitForParty(queue)
    const httpWait = overHttp.matchmaking.waitForParty(queue, { transport: 'http' })
    const socketQueued = socketWait.once('queued')
    const httpQueued = httpWait.once('queued')
    const lead = await leader.matchmaking.joinWithParty(queue, { transport: 'http' })
    const queued = await within(lead.once('queued'), 'the party ticket')
    expect(lead.transport).toBe('http')
    const [viaSocket, viaHttp] = await Promise.all([
      within(socketQueued, "the socket member's queued"),
      within(httpQueued, "the HTTP member's queued"),
    ])
    expect(viaSocket.ticketId).toBe(queued.ticketId)
    expect(viaHttp.ticketId).toBe(queued.ticketId)
    expect(socketWait.transport).toBe('websocket')
    expect((await overHttp.parties.mine())!.ticketId).toBe(queued.ticketId)
    expect((await leader.matchmaking.stats(queue, { fresh: true })).waitingPlayers).toBe(3)

    const opponents = await Promise.all(Array.from({ length: 3 }, () => guestClient()))
    const theirs = opponents.map((o) => o.matchmaking.join(queue).matched)
    const [ml, ms, mh, ...mo] = await within(
      Promise.all([lead.matched, socketWait.matched, httpWait.matched, ...theirs]),
      'the match',
      20_000,
    )
    const sessions = new Set([ml, ms, mh, ...mo].map((m) => m.sessionId))
    expect(sessions.size).toBe(1)
    expect(new Set([ml, ms, mh].map((m) => m.ticketId))).toEqual(new Set([queued.ticketId]))
    const team = new Map(ml.players.map((p) => [p.playerId, p.team]))
    expect(ml.players).toHaveLength(6)
    expect(new Set(ids.map((id) => team.get(id))).size).toBe(1)
    expect(new Set(opponents.map((o) => team.get(o.auth.playerId!)))).toEqual(
      new Set([1 - team.get(ids[0]!)!]),
    )
    // Each member holds its own token for the session.
    expect(new Set([ml.token, ms.token, mh.token]).size).toBe(3)
  })

  it('a party larger than maxPartySize: the socket join rejects with the same problem as the HTTP join', async () => {
    const queue = uid('squad')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 2,
      maxPartySize: 2,
      rules: 'dice-race',
      maxRatingGap: 1000,
      widenPerSecond: 100,
      regions: ['eu'],
    })
    const [leader, m1, m2] = await Promise.all([guestClient(), guestClient(), guestClient()])
    const party = await leader.parties.create()
    for (const m of [m1, m2]) {
      await leader.parties.invite(party.id, m.auth.playerId!)
      await m.parties.accept(party.id)
    }
    const overHttp = await refusal(
      (await leader.matchmaking.joinWithParty(queue, { transport: 'http' })).matched,
    )
    const overSocket = await refusal(
      (await leader.matchmaking.joinWithParty(queue, { transport: 'websocket' })).matched,
    )
    expect({ problem: overSocket.problem, status: overSocket.status }).toEqual({
      problem: overHttp.problem,
      status: overHttp.status,
    })
  })

  it('a member whose first socket opens just after the leader’s ticket matched still gets the match', async () => {
    const queue = uid('squad')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 2,
      rules: 'dice-race',
      maxRatingGap: 1000,
      widenPerSecond: 100,
      regions: ['eu'],
    })
    const leader = await guestClient()
    // The member's first socket opens once the leader's ticket has matched.
    let leaderMatched!: () => void
    const afterMatch = new Promise<void>((resolve) => (leaderMatched = resolve))
    const member = await guestClient({ WebSocket: slowSockets(afterMatch) })
    const party = await leader.parties.create()
    await leader.parties.invite(party.id, member.auth.playerId!)
    await member.parties.accept(party.id)
    // Two solo opponents wait already, so the party matches as soon as it queues.
    const opponents = await Promise.all([guestClient(), guestClient()])
    const theirs = opponents.map((o) => o.matchmaking.join(queue))
    await Promise.all(theirs.map((t) => within(t.once('queued'), 'opponent queued')))
    // As the README: the member starts waiting, then the leader queues the party.
    const mine = member.matchmaking.waitForParty(queue)
    const lead = await leader.matchmaking.joinWithParty(queue)
    const leaderMatch = await within(lead.matched, "the leader's match", 15_000)
    leaderMatched()
    const memberMatch = await within(mine.matched, "the member's match", 20_000).catch(
      (e: unknown) => e,
    )
    await mine.cancel().catch(() => {})
    expect(memberMatch).toMatchObject({ sessionId: leaderMatch.sessionId })
  }, 60_000)

  it("a member leaving ends the party's ticket for every member, with reason party_changed", async () => {
    const queue = uid('squad')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      teams: 2,
      teamSize: 3,
      maxPartySize: 3,
      rules: 'dice-race',
      maxRatingGap: 1000,
      widenPerSecond: 100,
      regions: ['eu'],
    })
    const [leader, member, leaving] = await Promise.all([
      guestClient(),
      guestClient(),
      guestClient(),
    ])
    const party = await leader.parties.create()
    for (const m of [member, leaving]) {
      await leader.parties.invite(party.id, m.auth.playerId!)
      await m.parties.accept(party.id)
    }
    const waiting = member.matchmaking.waitForParty(queue)
    const memberQueued = waiting.once('queued')
    const lead = await leader.matchmaking.joinWithParty(queue)
    const queued = await within(lead.once('queued'), 'the party ticket')
    expect((await within(memberQueued, "the member's queued")).ticketId).toBe(queued.ticketId)

    await leaving.parties.leave(party.id)
    for (const ticket of [lead, waiting]) {
      const ended = await within(
        ticket.matched.then(
          () => null,
          (e: unknown) => e,
        ),
        'the end of the ticket',
      )
      expect(ended).toBeInstanceOf(MatchmakingEnded)
      expect(ended).toMatchObject({ outcome: 'cancelled', reason: 'party_changed' })
    }
    expect((await leader.parties.mine())!.ticketId).toBeNull()
  })
})

/** Plays dice-race to the end: each player rolls whenever the last event says it is their turn. */
function autoRoll(game: GameConnection, me: string, first: string): void {
  let mine = first === me
  const roll = () => {
    if (mine && game.connected) {
      mine = false
      game.send({ action: 'roll' })
    }
  }
  game.on('welcome', () => roll())
  game.on('resumed', () => setTimeout(roll, 50))
  game.on('event', ({ event }) => {
    const next = (event as { next?: string | null }).next
    if (next !== undefined) mine = next === me
    roll()
  })
}

describe('sessions', () => {
  async function matchPair(): Promise<[NexusClient, Match, NexusClient, Match]> {
    const queue = await duelQueue(12)
    const [a, b] = await Promise.all([guestClient(), guestClient()])
    const ta = a.matchmaking.join(queue)
    await within(ta.once('queued'), 'queued')
    const [ma, mb] = await Promise.all([ta.matched, b.matchmaking.join(queue).matched])
    return [a, ma, b, mb]
  }

  it('plays a game to the end; a dropped player resumes without gaps or repeats', async () => {
    const [a, ma, b, mb] = await matchPair()
    const sockets = recordingSockets()
    const aSdk = createClient({
      baseUrl: stack().url,
      WebSocket: sockets.factory,
      retry: { baseDelayMs: 20 },
    })
    const ga = aSdk.sessions.connect(ma.sessionId, ma.token)
    const gb = b.sessions.connect(mb.sessionId, mb.token)
    const seen: Record<string, number[]> = { a: [], b: [] }
    ga.on('event', ({ seq }) => seen.a!.push(seq))
    gb.on('event', ({ seq }) => seen.b!.push(seq))
    const first = ma.players[0]!.playerId
    autoRoll(ga, a.auth.playerId!, first)
    autoRoll(gb, b.auth.playerId!, first)
    let cut = false
    ga.on('event', ({ seq }) => {
      // Mid-game, the network drops under player A.
      if (seq === 3 && !cut) {
        cut = true
        sockets.opened[0]!.close(4002, 'wifi lost')
      }
    })
    const resumed = within(ga.once('resumed'), 'the resume', 20_000)
    const [ra, rb] = await Promise.all([ga.ended, gb.ended])
    expect((await resumed).since).toBeGreaterThanOrEqual(3)
    expect(sockets.opened.length).toBeGreaterThanOrEqual(2)
    expect(ra).toEqual(rb)
    expect(ra.reason).toBe('finished')
    expect([a.auth.playerId, b.auth.playerId]).toContain(ra.winner)
    // Both saw every event exactly once, in order: 1, 2, … n.
    const log = await b.sessions.events(mb.sessionId, mb.token, { limit: 500 })
    const seqs = log.events.map((e) => e.seq)
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1))
    expect(seen.a).toEqual(seqs.slice(seqs.indexOf(seen.a![0]!)))
    expect(seen.b).toEqual(seqs.slice(seqs.indexOf(seen.b![0]!)))
    const view = await a.sessions.get(ma.sessionId, ma.token)
    expect(view.status).toBe('finished')
    // The match is in the player's history once Neon has its result, with how it went for them.
    const played = await eventually('the match in the history', async () => {
      const page = await b.sessions.history({ status: 'finished' })
      return page.sessions.find((s) => s.sessionId === mb.sessionId)
    })
    expect(played.winner).toBe(ra.winner)
    expect(played.place).toBe(ra.placements.find((p) => p.playerId === b.auth.playerId)!.place)
    expect(played.ratingChange).not.toBeNull()
  })

  it('a refused action is reported to its sender; a wrong token is a typed problem', async () => {
    const [a, ma, , mb] = await matchPair()
    const { roster } = await a.sessions.get(ma.sessionId, ma.token)
    // The player who does not move first tries to roll.
    const waiting = roster[1]!.playerId === a.auth.playerId ? ma : mb
    const nexus = createClient({ baseUrl: stack().url })
    const g = nexus.sessions.connect(waiting.sessionId, waiting.token)
    await g.ready
    const refused = within(g.once('refused'), 'the refusal')
    g.send({ action: 'roll' })
    expect((await refused).code).toBe('not_your_turn')
    g.close()

    const bad = nexus.sessions.connect(ma.sessionId, 'not-a-token')
    const err = await bad.ended.catch((e: unknown) => e)
    expect(err).toBeInstanceOf(NexusProblem)
    expect((err as NexusProblem).status).toBe(401)
  })

  it('a signed-in player whose session token is refused (past its 6 h) gets in with their own token', async () => {
    const [a, ma] = await matchPair()
    const game = a.sessions.connect(ma.sessionId, 'an-expired-session-token')
    await within(game.ready, 'the welcome')
    expect(game.connected).toBe(true)
    game.close()
  })

  it('a resume with a `since` past the session’s seq rejects with the server’s 422, not a network error', async () => {
    const res = (await admin('POST', '/v1/admin/sessions', {
      rules: 'relay',
      roster: [{ playerId: 'since-p1' }],
    })) as { sessionId: string; tokens: Record<string, string> }
    const nexus = await guestClient({ maxReconnects: 1, retry: { baseDelayMs: 10 } })
    const game = nexus.sessions.connect(res.sessionId, res.tokens['since-p1']!, { since: 999 })
    const err = await refusalOf(game.ended)
    game.close()
    expect(err).not.toBeInstanceOf(NexusNetworkError)
    expect(err).toMatchObject({ problem: 'validation', status: 422 })
  })
})

/**
 * Node's WebSocket, except that the first action frame carrying a `ref` is lost with its
 * connection: `arrives` says whether the frame went out before the connection dropped (the
 * server applied it, and the client never heard) or was lost with it (the server never had it).
 */
function firstActLost(arrives: boolean): { factory: SocketFactory; lost: string[] } {
  const lost: string[] = []
  return {
    lost,
    factory: (url, protocols) => {
      const real = new WebSocket(url, protocols)
      return {
        get readyState() {
          return real.readyState
        },
        send: (d) => {
          if (lost.length === 0 && String(d).includes('"ref"')) {
            lost.push(String(d))
            if (arrives) real.send(d)
            real.close(4002, 'network went away')
            return
          }
          real.send(d)
        },
        close: (code, reason) => real.close(code, reason),
        addEventListener: (type, l) => real.addEventListener(type, l as never),
      }
    },
  }
}

describe('sessions: act()', () => {
  async function relayFor(n: number): Promise<{ sessionId: string; tokens: string[] }> {
    const players = Array.from({ length: n }, (_, i) => `${uid('act')}-${i}`)
    const res = (await admin('POST', '/v1/admin/sessions', {
      rules: 'relay',
      roster: players.map((playerId) => ({ playerId })),
    })) as { sessionId: string; tokens: Record<string, string> }
    return { sessionId: res.sessionId, tokens: players.map((p) => res.tokens[p]!) }
  }

  /** The actions in a session's whole log (its admin's read). */
  async function actionsLogged(sessionId: string): Promise<{ ref?: unknown; action: unknown }[]> {
    const log = (await admin('GET', `/v1/sessions/${sessionId}/events?limit=500`)) as {
      events: { input: { kind: string; ref?: unknown; action: unknown } }[]
    }
    return log.events.filter((e) => e.input.kind === 'action').map((e) => e.input)
  }

  it('resolves with the event its action made, and rejects a refused one with ActionRefused and its code', async () => {
    const players = [`${uid('act')}-0`, `${uid('act')}-1`]
    const res = (await admin('POST', '/v1/admin/sessions', {
      rules: 'dice-race',
      roster: players.map((playerId) => ({ playerId })),
      options: { target: 1000 },
    })) as { sessionId: string; tokens: Record<string, string> }
    const nexus = createClient({ baseUrl: stack().url })
    const first = nexus.sessions.connect(res.sessionId, res.tokens[players[0]!]!)
    const second = nexus.sessions.connect(res.sessionId, res.tokens[players[1]!]!)
    await Promise.all([first.ready, second.ready])
    const refused = await second.act({ action: 'roll' }).catch((e: unknown) => e)
    expect(refused).toBeInstanceOf(ActionRefused)
    expect(refused).toMatchObject({ code: 'not_your_turn' })
    const seen = within(second.once('event'), 'the event')
    const rolled = await within(first.act({ action: 'roll' }), 'the roll')
    expect(rolled.event).toMatchObject({ kind: 'roll', player: players[0] })
    // The event every player got.
    expect(await seen).toEqual(rolled)
    first.close()
    second.close()
  })

  for (const arrives of [false, true]) {
    it(`an action whose connection drops as it is sent (${arrives ? 'after it reached the session' : 'before it reached the session'}) is applied once: the act resolves after the reconnect with its one event`, async () => {
      const { sessionId, tokens } = await relayFor(1)
      const sockets = firstActLost(arrives)
      const nexus = createClient({
        baseUrl: stack().url,
        WebSocket: sockets.factory,
        retry: { baseDelayMs: 20 },
      })
      const game = nexus.sessions.connect(sessionId, tokens[0]!)
      await within(game.ready, 'the welcome')
      const resumed = within(game.once('resumed'), 'the resume')
      const outcome = await within(game.act({ action: 'message', data: { n: 1 } }), 'the act')
      await resumed
      expect(sockets.lost).toHaveLength(1)
      expect(outcome.event).toMatchObject({ data: { n: 1 } })
      // Made while the connection is back: it goes as any other.
      const next = await within(game.act({ action: 'message', data: { n: 2 } }), 'the next act')
      expect(next.seq).toBeGreaterThan(outcome.seq)
      const logged = await actionsLogged(sessionId)
      expect(logged.map((a) => a.action)).toEqual([
        { action: 'message', data: { n: 1 } },
        { action: 'message', data: { n: 2 } },
      ])
      expect(new Set(logged.map((a) => a.ref)).size).toBe(2)
      game.close()
    })
  }

  it('an action made while the connection is away goes once it is back; the game ending first rejects it game_over', async () => {
    const { sessionId, tokens } = await relayFor(1)
    const sockets = recordingSockets()
    const nexus = createClient({
      baseUrl: stack().url,
      WebSocket: sockets.factory,
      retry: { baseDelayMs: 20 },
    })
    const game = nexus.sessions.connect(sessionId, tokens[0]!)
    await within(game.ready, 'the welcome')
    sockets.opened[0]!.close(4002, 'network went away')
    await within(game.once('reconnecting'), 'the reconnect')
    expect(game.connected).toBe(false)
    const outcome = await within(game.act({ action: 'message', data: 'later' }), 'the act')
    expect(outcome.event).toMatchObject({ data: 'later' })
    expect(sockets.opened.length).toBeGreaterThanOrEqual(2)

    await admin('POST', `/v1/admin/sessions/${sessionId}/end`)
    await within(game.ended, 'the end')
    const late = await game.act({ action: 'message', data: 'too late' }).catch((e: unknown) => e)
    expect(late).toMatchObject({ name: 'ActionRefused', code: 'game_over' })
    expect((await actionsLogged(sessionId)).map((a) => a.action)).toEqual([
      { action: 'message', data: 'later' },
    ])
  })
})

describe('examples/dice-duel.ts', () => {
  it('two players queue and play to the end; the session puts the win on the board, which takes none from players', async () => {
    const board = uid('wins')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, {
      operator: 'incr',
      serverScoresOnly: true,
    })
    const queue = await duelQueue(20, board)
    const [a, b] = await Promise.all([guestClient(), guestClient()])
    const results = await Promise.all([a, b].map((n) => playDuel(n, { queue, board })))
    const winners = results.filter((r) => r.won)
    expect(winners).toHaveLength(1)
    expect(winners[0]!.rank).toBe(1)
    expect(results.find((r) => !r.won)!.rank).toBeNull()
    expect(results.reduce((n, r) => n + r.rolls, 0)).toBeGreaterThanOrEqual(20 / 6)
    // Again, the same two: each game's winner is answered once that game's win is on the board,
    // not on seeing the entry an earlier win left.
    const again = await Promise.all([a, b].map((n) => playDuel(n, { queue, board })))
    for (const [i, n] of [a, b].entries()) {
      const wins = [results[i]!, again[i]!].filter((r) => r.won).length
      const standing = await n.leaderboards.rank(board, 'me', { fresh: true })
      expect(standing.entry?.score ?? 0).toBe(wins)
    }
  })

  it('a roll sent into a dropping socket goes again after the reconnect, and the game plays to its end', async () => {
    const board = uid('wins')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, { operator: 'incr' })
    const queue = await duelQueue(20, board)
    // Player a's first roll never reaches the game: its connection drops as it is sent.
    const sockets = firstActLost(false)
    const [a, b] = await Promise.all([
      guestClient({ WebSocket: sockets.factory, retry: { baseDelayMs: 20 } }),
      guestClient(),
    ])
    const results = await Promise.all([a, b].map((n) => playDuel(n, { queue, board })))
    expect(sockets.lost).toHaveLength(1)
    expect(sockets.lost[0]).toContain('"roll"')
    expect(results.filter((r) => r.won)).toHaveLength(1)
    // a rolled after all: the roll it lost was sent again on the resumed socket.
    expect(results[0]!.rolls).toBeGreaterThan(0)
  })
})

describe('examples/rps-duel.ts', () => {
  /** A queue whose results go to a new board that takes no scores from players; both named. */
  async function rpsQueue(): Promise<{ queue: string; board: string }> {
    const board = uid('rps-wins')
    await admin('PUT', `/v1/admin/leaderboards/${board}`, {
      operator: 'incr',
      serverScoresOnly: true,
    })
    const queue = uid('rps')
    await admin('PUT', `/v1/admin/queues/${queue}`, {
      leaderboardId: board,
      teams: 2,
      teamSize: 1,
      rules: 'rock-paper-scissors',
      rulesOptions: { rounds: 3, roundSeconds: 30 },
      maxRatingGap: 1000,
      widenPerSecond: 100,
      regions: ['eu'],
    })
    return { queue, board }
  }

  it('a move lost with its connection goes again after the reconnect: every round has both moves', async () => {
    const { queue, board } = await rpsQueue()
    const sockets = firstActLost(false)
    const [a, b] = await Promise.all([
      guestClient({ WebSocket: sockets.factory, retry: { baseDelayMs: 20 } }),
      guestClient(),
    ])
    const results = await Promise.all(
      [a, b].map((n, i) => playRps(n, { queue, board, seed: i + 1 })),
    )
    expect(sockets.lost).toHaveLength(1)
    expect(sockets.lost[0]).toContain('"round":1')
    const ids = results.map((r) => r.playerId)
    expect(results[0]!.rounds).toEqual(results[1]!.rounds)
    for (const r of results[0]!.rounds) {
      for (const id of ids) expect(['rock', 'paper', 'scissors']).toContain(r.moves[id])
    }
  })

  it('two players play hidden moves to the end: the opponent’s pending move never reaches the client', async () => {
    const { queue, board } = await rpsQueue()
    const [a, b] = await Promise.all([guestClient(), guestClient()])
    // Seeds 1 and 2 draw round 1 (paper, paper), then play three more rounds.
    const results = await Promise.all(
      [a, b].map((n, i) => playRps(n, { queue, board, seed: i + 1 })),
    )
    const ids = results.map((r) => r.playerId)
    const winners = results.filter((r) => r.won)
    expect(winners).toHaveLength(1)
    expect(winners[0]!.rank).toBe(1)
    expect(results.find((r) => !r.won)!.rank).toBeNull()

    // Both saw the same rounds, each revealing both moves; the winner took 2 of them.
    expect(results[0]!.rounds).toEqual(results[1]!.rounds)
    const rounds = results[0]!.rounds
    expect(rounds.map((r) => r.round)).toEqual([1, 2, 3, 4])
    expect(rounds[0]!.winner).toBeNull()
    for (const r of rounds) {
      expect(Object.keys(r.moves).sort()).toEqual([...ids].sort())
      for (const id of ids) expect(['rock', 'paper', 'scissors']).toContain(r.moves[id])
    }
    expect(rounds.filter((r) => r.winner === winners[0]!.playerId)).toHaveLength(2)

    // Each round's first move is a `chosen` event: its mover gets it whole, the other player
    // without `move`, until the `round` event reveals both.
    for (const [i, r] of results.entries()) {
      const opponent = ids[1 - i]!
      for (const e of r.sawOpponent.chosen) {
        expect(e).toEqual({ kind: 'chosen', round: expect.any(Number), player: opponent })
        expect(e).not.toHaveProperty('move')
        expect(rounds.find((x) => x.round === e.round)!.moves[opponent]).not.toBeNull()
      }
      for (const p of r.sawOpponent.welcome) expect(p.move).toBeNull()
      for (const e of r.ownChosen) {
        expect(e).toMatchObject({ kind: 'chosen', player: r.playerId })
        expect(e.move).toBe(rounds.find((x) => x.round === e.round)!.moves[r.playerId])
      }
    }
    // Every round had a first mover, who is connected by then and gets their own copy. The other
    // player gets the hidden one in every round but perhaps the first (a welcome after that move
    // shows it as `chosen: true` instead): the game has four rounds, so this is never vacuous.
    const own = results
      .flatMap((r) => r.ownChosen.map((e) => Number(e.round)))
      .sort((x, y) => x - y)
    const hidden = results
      .flatMap((r) => r.sawOpponent.chosen.map((e) => Number(e.round)))
      .sort((x, y) => x - y)
    expect(own).toEqual([1, 2, 3, 4])
    expect(hidden).toEqual(hidden.length === 4 ? [1, 2, 3, 4] : [2, 3, 4])
  })
})
