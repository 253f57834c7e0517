import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  MatchIndex,
  type Match,
  type QueueRules,
  type Ticket,
} from '../../workers/core/matching.ts'

/**
 * Team balance of matches with more tickets than the exact search can finish (about 15): the
 * module's search is cut short there and a local search of group exchanges takes over. These
 * tests judge its teams against searches written here.
 */

function everyoneAccepts(teams: number, teamSize: number): QueueRules {
  return { teams, teamSize, maxRatingGap: 100_000, widenPerSecond: 0 }
}

function tickets(parties: number[][]): Ticket[] {
  return parties.map((ratings, i) => ({
    id: `t${i}`,
    players: ratings.map((rating, j) => ({ playerId: `p${i}-${j}`, rating })),
    enqueuedAt: i,
  }))
}

/** The one match of a pool that holds exactly one match's players, checked for shape. */
function matchOf(rules: QueueRules, pool: Ticket[]): Match {
  const index = new MatchIndex(rules)
  for (const t of pool) index.add(t)
  const matches = index.findMatches(1000)
  expect(matches).toHaveLength(1)
  const match = matches[0]!
  expect(match.teams).toHaveLength(rules.teams)
  const teamOf = new Map<string, number>()
  match.teams.forEach((team, k) => {
    // Never a team over or under size.
    expect(team.playerIds).toHaveLength(rules.teamSize)
    for (const id of team.playerIds) {
      expect(teamOf.has(id)).toBe(false)
      teamOf.set(id, k)
    }
  })
  for (const t of pool) {
    // Every ticket in the match, its party whole on one team, listed there.
    const k = teamOf.get(t.players[0]!.playerId)
    expect(k).toBeDefined()
    for (const p of t.players) expect(teamOf.get(p.playerId)).toBe(k)
    expect(match.teams[k!]!.ticketIds).toContain(t.id)
  }
  return match
}

/** Spread of team totals, from the players' ratings (not the module's totals). */
function spreadOf(match: Match, pool: Ticket[]): number {
  const rating = new Map(pool.flatMap((t) => t.players.map((p) => [p.playerId, p.rating])))
  const totals = match.teams.map((team) => team.playerIds.reduce((s, id) => s + rating.get(id)!, 0))
  return Math.max(...totals) - Math.min(...totals)
}

/** mulberry32 */
function rng(seed: number): (n: number) => number {
  let a = seed >>> 0
  return (n) => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n)
  }
}

/**
 * Independent of the module: random splits into full teams (largest parties first, each into a
 * random team with room, backtracking), each improved by moving one ticket against one to three
 * tickets of another team with as many players while the sum of squared totals drops (first
 * improvement); the least spread of `restarts` of them.
 */
function searchedSpread(pool: Ticket[], teams: number, teamSize: number, restarts: number): number {
  const random = rng(pool.length * 7919 + teams)
  const w = pool.map((t) => t.players.reduce((s, p) => s + p.rating, 0))
  const sz = pool.map((t) => t.players.length)
  let best = Infinity
  for (let r = 0; r < restarts; r++) {
    const order = pool.map((_, i) => i)
    for (let i = order.length - 1; i > 0; i--) {
      const j = random(i + 1)
      ;[order[i], order[j]] = [order[j]!, order[i]!]
    }
    order.sort((a, b) => sz[b]! - sz[a]!)
    const room = new Array<number>(teams).fill(teamSize)
    const split: number[][] = Array.from({ length: teams }, () => [])
    const place = (k: number): boolean => {
      if (k === order.length) return true
      const i = order[k]!
      const first = random(teams)
      for (let d = 0; d < teams; d++) {
        const t = (first + d) % teams
        if (room[t]! < sz[i]!) continue
        room[t]! -= sz[i]!
        split[t]!.push(i)
        if (place(k + 1)) return true
        split[t]!.pop()
        room[t]! += sz[i]!
      }
      return false
    }
    if (!place(0)) continue
    const sums = split.map((team) => team.reduce((s, i) => s + w[i]!, 0))
    const tryMove = (a: number, b: number): boolean => {
      const A = split[a]!
      const B = split[b]!
      for (let x = 0; x < A.length; x++) {
        const i = A[x]!
        const groups: number[][] = []
        for (let p = 0; p < B.length; p++) {
          groups.push([p])
          for (let q = p + 1; q < B.length; q++) {
            groups.push([p, q])
            for (let s = q + 1; s < B.length; s++) groups.push([p, q, s])
          }
        }
        for (const g of groups) {
          if (g.reduce((s, k) => s + sz[B[k]!]!, 0) !== sz[i]) continue
          // a gets the group, b gets i.
          const d = g.reduce((s, k) => s + w[B[k]!]!, 0) - w[i]!
          if (d * (d + sums[a]! - sums[b]!) >= -1e-9) continue
          sums[a]! += d
          sums[b]! -= d
          split[a] = A.filter((_, k) => k !== x).concat(g.map((k) => B[k]!))
          split[b] = B.filter((_, k) => !g.includes(k)).concat([i])
          return true
        }
      }
      return false
    }
    for (let moves = 0; moves < 1000; moves++) {
      let moved = false
      for (let a = 0; a < teams && !moved; a++) {
        for (let b = 0; b < teams && !moved; b++) if (a !== b) moved = tryMove(a, b)
      }
      if (!moved) break
    }
    best = Math.min(best, Math.max(...sums) - Math.min(...sums))
  }
  return best
}

describe('MatchIndex: balance of large matches', () => {
  it('balances 16 tickets in 4 teams of 8, trading a trio for a duo and a solo', () => {
    // From a review: the exact search ran out of budget, and swaps of equal-size tickets left a
    // spread of 1496 where 107 was possible.
    const pool = tickets([
      [2384, 1591, 1629],
      [2168, 2355, 1674],
      [2424, 1059],
      [1143, 2287, 1323, 2085],
      [1263, 1518],
      [1702, 1219],
      [1305],
      [1728, 1990],
      [1331],
      [1734, 1261, 1229],
      [1353],
      [2467, 1070],
      [1171, 1471, 1531],
      [1885],
      [1452],
      [1891],
    ])
    const match = matchOf(everyoneAccepts(4, 8), pool)
    expect(spreadOf(match, pool)).toBeLessThanOrEqual(150)
  })

  it('property: whole parties, full teams, and a spread near the best a randomized search finds', () => {
    // Parties of 1 to 4, ratings 1000..2500 (uniform: fast-check's bias to the bounds makes
    // rarer, lumpier pools), each team of the generated split filled in turn, so the pool is
    // exactly one match. Measured with these seeds, against the best of 12 restarts here: 4 teams
    // of 8, at most 18 above it (mean 2 below); 8 teams of 8, at most 29 above (mean 13 below).
    // Equal swaps after the cut-short exact search, before: up to 573 and 971 above, 50 and 330
    // above on average.
    const partyArb = fc.record({
      size: fc.integer({ min: 1, max: 4 }),
      ratings: fc.array(fc.integer({ min: 1000, max: 2500 }), { minLength: 4, maxLength: 4 }),
    })
    const gaps: number[] = []
    for (const [teams, teamSize, runs] of [
      [4, 8, 40],
      [8, 8, 20],
    ] as const) {
      fc.assert(
        fc.property(
          fc.noBias(
            fc.array(partyArb, { minLength: teams * teamSize, maxLength: teams * teamSize }),
          ),
          (specs) => {
            const parties: number[][] = []
            let next = 0
            for (let t = 0; t < teams; t++) {
              for (let left = teamSize; left > 0;) {
                const { size, ratings } = specs[next++]!
                const n = Math.min(size, left)
                parties.push(ratings.slice(0, n))
                left -= n
              }
            }
            const pool = tickets(parties)
            const got = spreadOf(matchOf(everyoneAccepts(teams, teamSize), pool), pool)
            const searched = searchedSpread(pool, teams, teamSize, 12)
            expect(got).toBeLessThanOrEqual(searched + (teams === 4 ? 60 : 100))
            gaps.push(got - searched)
          },
        ),
        { seed: 4_242 + teams, numRuns: runs },
      )
    }
    const mean = gaps.reduce((s, g) => s + g, 0) / gaps.length
    expect(mean).toBeLessThanOrEqual(10)
  })
})
