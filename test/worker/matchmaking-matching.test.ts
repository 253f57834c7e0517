import { describe, expect, it } from 'vitest'
import { call, json, newGuest, problem } from './helpers/http.ts'
import {
  alarmAt,
  checkAt,
  createQueue,
  fireAlarm,
  joinFor,
  newClock,
  rig,
  sessionCalls,
  setRating,
  ticketOf,
  type Ticket,
} from './helpers/matchmaking.ts'

/** Joins everyone (in order) as a game server and returns the final state of every ticket. */
async function joinAll(queue: string, players: string[]): Promise<Ticket[]> {
  const ids: string[] = []
  for (const p of players) ids.push((await joinFor(queue, p)).ticketId)
  return Promise.all(ids.map((id) => ticketOf(id)))
}

describe('pairing quality', () => {
  it('every pair lies inside both windows, and no two players left waiting would accept each other', async () => {
    const q = await createQueue({ maxRatingGap: 100, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const rating = new Map<string, number>()
    const players = Array.from({ length: 40 }, (_, i) => `${q}-p${i}`)
    players.forEach((p, i) => rating.set(p, 1000 + ((i * 389) % 1000)))
    await Promise.all(players.map((p) => setRating(p, rating.get(p)!)))

    const tickets = await joinAll(q, players)
    const matched = tickets.filter((t) => t.status === 'matched')
    const waiting = tickets.filter((t) => t.status === 'waiting')
    expect(matched.length + waiting.length).toBe(players.length)
    expect(matched.length).toBeGreaterThan(0)

    const bySession = new Map<string, string[]>()
    for (const t of matched) {
      const roster = t.match!.players.map((p) => p.playerId)
      expect(roster).toContain(t.players[0])
      bySession.set(t.match!.sessionId, roster)
    }
    const seen = new Set<string>()
    for (const roster of bySession.values()) {
      expect(roster).toHaveLength(2)
      const [a, b] = roster as [string, string]
      expect(Math.abs(rating.get(a)! - rating.get(b)!)).toBeLessThanOrEqual(100)
      for (const p of roster) {
        expect(seen.has(p)).toBe(false)
        seen.add(p)
      }
    }
    expect(seen.size).toBe(matched.length)
    // Brute force: the matcher is exact for 1v1, so no waiting pair is within the window.
    const left = waiting.map((t) => rating.get(t.players[0]!)!)
    for (let i = 0; i < left.length; i++)
      for (let j = i + 1; j < left.length; j++)
        expect(Math.abs(left[i]! - left[j]!)).toBeGreaterThan(100)
    expect(sessionCalls.size).toBeGreaterThanOrEqual(bySession.size)
    for (const id of bySession.keys()) expect(sessionCalls.get(id)).toHaveLength(1)
  })
})

describe('widening', () => {
  it('two far-apart players match exactly when both windows have grown enough', async () => {
    const base = 100
    const widen = 10
    const q = await createQueue({ maxRatingGap: base, widenPerSecond: widen })
    const clock = newClock()
    await rig(q, clock)
    const [a, b] = [`${q}-low`, `${q}-high`]
    await setRating(a, 1500)
    await setRating(b, 1800)
    const t0 = clock.t
    const ta = await joinFor(q, a)
    clock.t = t0 + 5000
    const tb = await joinFor(q, b)
    // Each window must reach the distance: gap(t) = base + widen * waited.
    const needMs = ((300 - base) / widen) * 1000
    const due = Math.max(t0 + needMs, t0 + 5000 + needMs)
    expect(due).toBe(t0 + 25_000)
    expect(await alarmAt(q)).toBe(checkAt(due))

    clock.t = due - 1
    await fireAlarm(q)
    expect((await ticketOf(ta.ticketId)).status).toBe('waiting')
    expect((await ticketOf(tb.ticketId)).status).toBe('waiting')

    clock.t = due
    await fireAlarm(q)
    const [ma, mb] = [await ticketOf(ta.ticketId), await ticketOf(tb.ticketId)]
    expect(ma.status).toBe('matched')
    expect(mb.match!.sessionId).toBe(ma.match!.sessionId)
  })
})

describe('parties and balance', () => {
  it('2v2: a party of two stays on one team, the two solos form the other', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2, maxRatingGap: 100 })
    const clock = newClock()
    await rig(q, clock)
    const [lead, mate, s1, s2] = ['lead', 'mate', 's1', 's2'].map((n) => `${q}-${n}`) as [
      string,
      string,
      string,
      string,
    ]
    await Promise.all([
      setRating(lead, 1500),
      setRating(mate, 1500),
      setRating(s1, 1490),
      setRating(s2, 1510),
    ])
    const party = await joinFor(q, lead, { party: [mate, lead] })
    expect(party.players).toEqual([lead, mate])
    await joinFor(q, s1)
    const last = await joinFor(q, s2)
    expect(last.status).toBe('matched')
    const roster = last.match!.players
    const teamOf = new Map(roster.map((p) => [p.playerId, p.team]))
    expect(teamOf.get(lead)).toBe(teamOf.get(mate))
    expect(teamOf.get(s1)).toBe(teamOf.get(s2))
    expect(teamOf.get(s1)).not.toBe(teamOf.get(lead))
    const partyTicket = await ticketOf(party.ticketId)
    expect(partyTicket.status).toBe('matched')
    expect(partyTicket.match!.sessionId).toBe(last.match!.sessionId)
    // The admin key gets a session token for every member.
    expect(Object.keys(partyTicket.match!.tokens!).sort()).toEqual([lead, mate].sort())
  })

  it('3v3: teams are as even as any split that keeps the party together', async () => {
    const q = await createQueue({ teamSize: 3, maxPartySize: 2, maxRatingGap: 250 })
    const clock = newClock()
    await rig(q, clock)
    const party: [string, number][] = [
      [`${q}-pa`, 1540],
      [`${q}-pb`, 1460],
    ]
    const solos: [string, number][] = [1400, 1450, 1550, 1600].map((r, i) => [`${q}-s${i}`, r])
    const rating = new Map([...party, ...solos])
    await Promise.all([...rating].map(([p, r]) => setRating(p, r)))
    await joinFor(q, party[0]![0], { party: party.map(([p]) => p) })
    let last: Ticket | undefined
    for (const [p] of solos) last = await joinFor(q, p)
    expect(last!.status).toBe('matched')
    const roster = last!.match!.players
    expect(roster).toHaveLength(6)
    const teamOf = new Map(roster.map((p) => [p.playerId, p.team]))
    expect(teamOf.get(party[0]![0])).toBe(teamOf.get(party[1]![0]))
    const totals = [0, 0]
    for (const p of roster) totals[p.team]! += rating.get(p.playerId)!
    // Brute force over which solo joins the party.
    const all = [...rating.values()].reduce((s, r) => s + r, 0)
    const partySum = party.reduce((s, [, r]) => s + r, 0)
    const best = Math.min(...solos.map(([, r]) => Math.abs(all - 2 * (partySum + r))))
    expect(Math.abs(totals[0]! - totals[1]!)).toBe(best)
  })

  it('players cannot name a party; a party with a waiting member is refused; the leader must be in it', async () => {
    const q = await createQueue({ teamSize: 2, maxPartySize: 2 })
    const g = await newGuest()
    const res = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { party: [g.playerId, 'friend'] }, g.token),
    )
    expect(res.status).toBe(403)
    const self = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { party: [g.playerId] }, g.token),
    )
    expect(self.status).toBe(201)
    const other = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: 'someone' }, g.token),
    )
    expect(other.status).toBe(403)

    const clash = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: 'leader-x', party: ['leader-x', g.playerId] }, 'test-admin-key'),
    )
    const p = await problem(clash)
    expect(p.status).toBe(409)
    expect(p.body.players).toEqual([g.playerId])
    const noLeader = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: 'leader-y', party: ['a1', 'a2'] }, 'test-admin-key'),
    )
    expect(noLeader.status).toBe(422)
    const tooBig = await call(
      `/v1/matchmaking/${q}/tickets`,
      json('POST', { playerId: 'b1', party: ['b1', 'b2', 'b3'] }, 'test-admin-key'),
    )
    expect((await problem(tooBig)).body.errors).toEqual([
      { path: 'party', message: 'at most 2 players' },
    ])
  })
})

describe('ratings and duplicates', () => {
  it('uses the stored rating and ignores the one a client sends', async () => {
    const q = await createQueue({ maxRatingGap: 100, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const [strong, weak, peer] = await Promise.all([newGuest(), newGuest(), newGuest()])
    await Promise.all([
      setRating(strong.playerId, 2000),
      setRating(weak.playerId, 1500),
      setRating(peer.playerId, 1950),
    ])
    const join = (g: { token: string }, body: Record<string, unknown>) =>
      call(`/v1/matchmaking/${q}/tickets`, json('POST', body, g.token))
    const w = (await (await join(weak, {})).json()) as Ticket
    // Claims 1500 to get the weak player; its stored 2000 keeps them apart.
    const s = (await (await join(strong, { rating: 1500 })).json()) as Ticket
    expect(s.status).toBe('waiting')
    expect((await ticketOf(w.ticketId)).status).toBe('waiting')
    const p = (await (await join(peer, { rating: 1500 })).json()) as Ticket
    expect(p.status).toBe('matched')
    expect(p.match!.players.map((x) => x.playerId).sort()).toEqual(
      [strong.playerId, peer.playerId].sort(),
    )
    expect(typeof p.match!.token).toBe('string')
    expect((await ticketOf(w.ticketId)).status).toBe('waiting')
  })

  it('a second join returns the ticket the player already has, also when many race', async () => {
    const q = await createQueue({ maxRatingGap: 0, widenPerSecond: 0 })
    const clock = newClock()
    await rig(q, clock)
    const g = await newGuest()
    const join = () => call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, g.token))
    const first = await join()
    expect(first.status).toBe(201)
    const t1 = (await first.json()) as Ticket
    const again = await join()
    expect(again.status).toBe(200)
    expect(((await again.json()) as Ticket).ticketId).toBe(t1.ticketId)

    const g2 = await newGuest()
    // Far from g's rating, so the racing joins cannot match g and free g2 to join anew.
    await setRating(g2.playerId, 2500)
    const raced = await Promise.all(
      Array.from({ length: 8 }, () =>
        call(`/v1/matchmaking/${q}/tickets`, json('POST', {}, g2.token)),
      ),
    )
    const bodies = (await Promise.all(raced.map((r) => r.json()))) as Ticket[]
    expect(new Set(bodies.map((b) => b.ticketId)).size).toBe(1)
    expect(raced.filter((r) => r.status === 201)).toHaveLength(1)

    // Once cancelled, a join makes a new ticket.
    await call(`/v1/matchmaking/tickets/${t1.ticketId}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${g.token}` },
    })
    const fresh = (await (await join()).json()) as Ticket
    expect(fresh.ticketId).not.toBe(t1.ticketId)
    expect(fresh.status).toBe('waiting')
  })
})
