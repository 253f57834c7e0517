import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  defaultRating,
  glicko2,
  IDLE_PERIOD_MS,
  idleRating,
  updateRatings,
  type RatedPlayer,
} from '../../workers/core/rating.ts'

function player(id: string, rating = 1500, rd = 350, volatility = 0.06): RatedPlayer {
  return { id, rating, rd, volatility }
}

describe('glicko2', () => {
  it("reproduces the worked example of Glickman's Glicko-2 paper", () => {
    const next = glicko2({ rating: 1500, rd: 200, volatility: 0.06 }, [
      { opponent: { rating: 1400, rd: 30 }, score: 1 },
      { opponent: { rating: 1550, rd: 100 }, score: 0 },
      { opponent: { rating: 1700, rd: 300 }, score: 0 },
    ])
    // The paper: μ' = −0.2069, φ' = 0.8722, σ' = 0.05999, i.e. r' = 1464.06, RD' = 151.52. The
    // paper rounds μ' before converting; unrounded, r' is 1464.05.
    expect((next.rating - 1500) / 173.7178).toBeCloseTo(-0.2069, 4)
    expect(next.rd / 173.7178).toBeCloseTo(0.8722, 4)
    expect(Math.abs(next.rating - 1464.06)).toBeLessThan(0.01)
    expect(next.rd).toBeCloseTo(151.52, 2)
    // The paper prints σ' truncated to 0.05999.
    expect(next.volatility).toBeGreaterThanOrEqual(0.05999)
    expect(next.volatility).toBeLessThan(0.06)
  })

  it('lets RD grow by the volatility over an idle period', () => {
    const next = glicko2({ rating: 1700, rd: 50, volatility: 0.06 }, [])
    expect(next.rating).toBe(1700)
    // √(φ² + σ²) on the Glicko-2 scale, back to Glicko: √(50² + (0.06·173.7178)²).
    expect(next.rd).toBeCloseTo(Math.sqrt(50 ** 2 + (0.06 * 173.7178) ** 2), 9)
  })

  it('rejects impossible inputs', () => {
    expect(() => glicko2({ rating: NaN, rd: 100, volatility: 0.06 }, [])).toThrow(RangeError)
    expect(() => glicko2({ rating: 1500, rd: 0, volatility: 0.06 }, [])).toThrow(RangeError)
    expect(() => glicko2({ rating: 1500, rd: 100, volatility: 0 }, [])).toThrow(RangeError)
  })
})

describe('idleRating', () => {
  const veteran = { rating: 1700, rd: 30, volatility: 0.06 }

  it('keeps a rating as it is within the first day', () => {
    expect(idleRating(veteran, 0)).toEqual(veteran)
    expect(idleRating(veteran, IDLE_PERIOD_MS - 1)).toEqual(veteran)
    expect(idleRating(veteran, -5 * IDLE_PERIOD_MS)).toEqual(veteran)
  })

  it("grows the RD as a year of the paper's idle periods, one a day, would; the rating stays", () => {
    let byPeriods = veteran
    for (let day = 0; day < 365; day++) byPeriods = glicko2(byPeriods, [])
    const aged = idleRating(veteran, 365 * IDLE_PERIOD_MS + 1000)
    expect(aged.rd).toBeCloseTo(byPeriods.rd, 9)
    // sqrt((30 / 173.7178)² + 365 × 0.06²) × 173.7178
    expect(aged.rd).toBeCloseTo(201.37, 1)
    expect(aged.rating).toBe(1700)
    expect(aged.volatility).toBe(0.06)
  })

  it("never past a new player's uncertainty", () => {
    expect(idleRating(veteran, 3650 * IDLE_PERIOD_MS).rd).toBe(350)
    expect(idleRating(veteran, Infinity).rd).toBe(350)
  })

  it('grows by the capped volatility: a runaway one stored before the cap does not undo an RD set by hand', () => {
    // Set by an admin to RD 100, volatility 0.9 left from before the cap; 3 days idle.
    const runaway = { rating: 1500, rd: 100, volatility: 0.9 }
    const phi = 100 / 173.7178
    const expected = Math.sqrt(phi * phi + 3 * 0.15 * 0.15) * 173.7178 // ≈ 109.7, not 288.7
    expect(idleRating(runaway, 3 * IDLE_PERIOD_MS).rd).toBeCloseTo(expected, 9)
    expect(idleRating(runaway, 3 * IDLE_PERIOD_MS).rd).toBeLessThan(110)
  })
})

describe('updateRatings', () => {
  it('starts from 1500 / 350 / 0.06', () => {
    expect(defaultRating()).toEqual({ rating: 1500, rd: 350, volatility: 0.06 })
  })

  it('1v1 between equals: the winner gains exactly what the loser loses', () => {
    const [a, b] = updateRatings([[player('a', 1500, 120)], [player('b', 1500, 120)]], [1, 2])
    expect(a!.id).toBe('a')
    expect(a!.rating).toBeGreaterThan(1500)
    expect(b!.rating).toBeLessThan(1500)
    expect(a!.rating - 1500).toBeCloseTo(1500 - b!.rating, 9)
    expect(a!.rd).toBeLessThan(120)
    expect(a!.rd).toBeCloseTo(b!.rd, 9)
  })

  it('1v1: beating a stronger player is worth more than beating a weaker one', () => {
    const [up] = updateRatings([[player('a', 1500, 80)], [player('b', 1800, 80)]], [1, 2])
    const [down] = updateRatings([[player('a', 1500, 80)], [player('b', 1200, 80)]], [1, 2])
    expect(up!.rating - 1500).toBeGreaterThan(down!.rating - 1500)
    expect(down!.rating).toBeGreaterThan(1500)
  })

  it('a draw between equals leaves ratings unchanged and narrows RD', () => {
    const out = updateRatings([[player('a', 1620, 90)], [player('b', 1620, 90)]], [1, 1])
    for (const p of out) {
      expect(p.rating).toBe(1620)
      expect(p.rd).toBeLessThan(90)
    }
  })

  it('free-for-all: placements are pairwise results, better places gain more', () => {
    const players = ['a', 'b', 'c', 'd'].map((id) => [player(id, 1500, 200)])
    const out = updateRatings(players, [1, 2, 2, 4])
    const by = new Map(out.map((p) => [p.id, p.rating]))
    expect(by.get('a')!).toBeGreaterThan(by.get('b')!)
    expect(by.get('b')).toBe(by.get('c'))
    expect(by.get('c')!).toBeGreaterThan(by.get('d')!)
    // a: three wins, each a third of a game (one placement decided all three).
    const third = 1 / 3
    const direct = glicko2(player('a', 1500, 200), [
      { opponent: { rating: 1500, rd: 200 }, score: 1, weight: third },
      { opponent: { rating: 1500, rd: 200 }, score: 1, weight: third },
      { opponent: { rating: 1500, rd: 200 }, score: 1, weight: third },
    ])
    expect(by.get('a')).toBe(direct.rating)
    // Second of four with a tie: a loss to a, a draw with c, a win over d.
    const b = glicko2(player('b', 1500, 200), [
      { opponent: { rating: 1500, rd: 200 }, score: 0, weight: third },
      { opponent: { rating: 1500, rd: 200 }, score: 0.5, weight: third },
      { opponent: { rating: 1500, rd: 200 }, score: 1, weight: third },
    ])
    expect(by.get('b')).toBeCloseTo(b.rating, 9)
  })

  it('free-for-all: winning a table of equals is worth one win over an equal, however large the table', () => {
    const oneOnOne = updateRatings([[player('a')], [player('b')]], [1, 2])[0]!
    for (const k of [3, 8, 16, 32]) {
      const table = Array.from({ length: k }, (_, i) => [player(`p${i}`)])
      const winner = updateRatings(
        table,
        Array.from({ length: k }, (_, i) => i + 1),
      )[0]!
      expect(winner.rating, `${k} players`).toBeCloseTo(oneOnOne.rating, 6)
      expect(winner.rd, `${k} players`).toBeCloseTo(oneOnOne.rd, 6)
    }
  })

  it('free-for-all queues keep ratings in bounds over hundreds of games each (they diverged when every pairwise result counted whole)', () => {
    // 320 players of true skills spread over N(1500, 200), tables of 16 drawn from neighbours
    // in rating, each game's performance the skill plus noise N(0, 200); seeded.
    let seed = 0x2f6e2b1
    const random = () => {
      seed = (seed + 0x6d2b79f5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }
    const normal = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random())
    const n = 320
    const size = 16
    const skill = Array.from({ length: n }, () => 1500 + 200 * normal())
    let rated = Array.from({ length: n }, (_, i) => player(String(i)))
    for (let round = 0; round < 300; round++) {
      const order = rated.map((p, i) => ({ i, r: p.rating + 50 * normal() }))
      order.sort((x, y) => x.r - y.r)
      for (let t = 0; t < n; t += size) {
        const seats = order.slice(t, t + size).map((o) => o.i)
        const performance = seats.map((i) => skill[i]! + 200 * normal())
        const ranked = seats.map((_, k) => k).sort((x, y) => performance[y]! - performance[x]!)
        const places = seats.map((_, k) => ranked.indexOf(k) + 1)
        const out = updateRatings(
          seats.map((i) => [rated[i]!]),
          places,
        )
        seats.forEach((i, k) => (rated[i] = out[k]!))
      }
      rated = [...rated]
    }
    const ratings = rated.map((p) => p.rating)
    expect(Math.min(...ratings)).toBeGreaterThan(500)
    expect(Math.max(...ratings)).toBeLessThan(2500)
    const volatilities = rated.map((p) => p.volatility).sort((x, y) => x - y)
    expect(volatilities[n >> 1]!).toBeLessThan(0.08)
    // The ratings find the skills: their order agrees with the true one (rank correlation).
    const rankOf = (xs: number[]) => {
      const idx = xs.map((_, i) => i).sort((a, b) => xs[a]! - xs[b]!)
      const r = new Array<number>(xs.length)
      idx.forEach((i, k) => (r[i] = k))
      return r
    }
    const [rs, rk] = [rankOf(skill), rankOf(ratings)]
    const d2 = rs.reduce((s, r, i) => s + (r - rk[i]!) ** 2, 0)
    expect(1 - (6 * d2) / (n * (n * n - 1))).toBeGreaterThan(0.8)
  })

  it('teams: each player is rated against the opposing team as one composite opponent, at the gap between the teams', () => {
    const red = [player('r1', 1400, 100), player('r2', 1700, 300)]
    const blue = [player('b1', 1450, 50), player('b2', 1550, 50)]
    const out = updateRatings([red, blue], [1, 2])
    // Blue as one opponent: mean rating 1500, RD √((50² + 50²)/2) = 50; red's mean is 1550, so
    // each red player meets it 50 below themselves (r2: at 1650), as their team meets blue.
    const r2 = glicko2(red[1]!, [{ opponent: { rating: 1650, rd: 50 }, score: 1 }])
    expect(out.find((p) => p.id === 'r2')).toEqual({ id: 'r2', ...r2 })
    const r1 = out.find((p) => p.id === 'r1')!
    const moved = out.find((p) => p.id === 'r2')!
    // The uncertain newcomer moves more than the settled teammate.
    expect(moved.rating - 1700).toBeGreaterThan(r1.rating - 1400)
    for (const id of ['b1', 'b2'])
      expect(out.find((p) => p.id === id)!.rating).toBeLessThan(id === 'b1' ? 1450 : 1550)
  })

  it('teams: a party of a strong and a weak player that wins as often as its mean says keeps its ratings apart', () => {
    // 2000 and 1000 (mean 1500) against two players of 1500, winning every other game: as expected
    // of equal teams. Rated against the other team's mean alone, the 2000 lost about 14 points a
    // loss and gained under 1 a win, and the pair ended near 1500 each after 200 games.
    let party = [player('strong', 2000, 50), player('weak', 1000, 50)]
    const others = [player('x', 1500, 50), player('y', 1500, 50)]
    for (let game = 0; game < 200; game++) {
      const out = updateRatings([party, others], game % 2 === 0 ? [1, 2] : [2, 1])
      party = party.map((p) => ({ ...p, ...out.find((o) => o.id === p.id)! }))
    }
    expect(Math.abs(party[0]!.rating - 2000)).toBeLessThan(25)
    expect(Math.abs(party[1]!.rating - 1000)).toBeLessThan(25)
  })

  it('validates the shape of the result', () => {
    expect(() => updateRatings([[player('a')]], [1])).toThrow(RangeError)
    expect(() => updateRatings([[player('a')], [player('b')]], [1])).toThrow(RangeError)
    expect(() => updateRatings([[player('a')], []], [1, 2])).toThrow(RangeError)
  })

  it('is deterministic and keeps every value finite with RD within [30, 350]', () => {
    const playerArb = fc.record({
      rating: fc.double({ min: -1000, max: 5000, noNaN: true }),
      rd: fc.double({ min: 1, max: 600, noNaN: true }),
      volatility: fc.double({ min: 0.001, max: 0.5, noNaN: true }),
    })
    fc.assert(
      fc.property(
        fc.array(fc.array(playerArb, { minLength: 1, maxLength: 4 }), {
          minLength: 2,
          maxLength: 6,
        }),
        fc.array(fc.integer({ min: 1, max: 6 }), { minLength: 6, maxLength: 6 }),
        (teamsRaw, places) => {
          const teams = teamsRaw.map((t, i) => t.map((p, j) => ({ id: `${i}-${j}`, ...p })))
          const placements = places.slice(0, teams.length)
          const out = updateRatings(teams, placements)
          expect(out).toEqual(updateRatings(teams, placements))
          expect(out).toHaveLength(teams.flat().length)
          for (const p of out) {
            expect(Number.isFinite(p.rating)).toBe(true)
            expect(p.rd).toBeGreaterThanOrEqual(30)
            expect(p.rd).toBeLessThanOrEqual(350)
            expect(Number.isFinite(p.volatility) && p.volatility > 0).toBe(true)
          }
        },
      ),
      { numRuns: 500 },
    )
  })
})
