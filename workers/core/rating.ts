/**
 * Player ratings: Glicko-2 (Mark Glickman, "Example of the Glicko-2 system", 2013), on the usual
 * Glicko scale (1500 / 350 / 0.06 for a new player).
 *
 * One match is one rating period, and each day without one an idle period (idleRating). Every
 * match shape reduces to pairwise results:
 * - 1v1: one result against the opponent.
 * - Free-for-all: one result against every other player (win against those placed below, loss
 *   against those placed above, draw on equal placement), all in the same period, each weighing
 *   1/(K−1) of a game among K: one placement decides them all, so they are one game's evidence,
 *   not K−1 games'. Counted whole, a 16-player table moved a newcomer from 1500 to 1953 with RD
 *   125 in one game, and the volatility of players in such queues grew game after game until
 *   ratings diverged (±1e9 after some 300 games each in a simulation of 16-player tables).
 * - Teams: each player gets one result against every other team, whose strength is a composite
 *   opponent: the mean of its players' ratings, and the root mean square of their RDs (so its
 *   uncertainty is that of a typical member). The result is expected as the player's team is
 *   expected to do: the opponent stands as far from the player as that team's mean stands from
 *   their own team's. Against the opponent's mean alone, a strong player with a weak teammate
 *   lost points for every even match their team played as well as expected (and the weak one
 *   gained them), so a party's ratings drifted together game after game. Each player's own RD and
 *   volatility drive their own update, so a newcomer moves more than a veteran on the same team.
 *   Team size is not weighed: teams of different sizes (an admin's session) count as even.
 *
 * RD is kept within [minRd, maxRd] (default [30, 350]): the lower bound keeps veterans' ratings
 * responsive, the upper bound is a new player's uncertainty; the rating moves by the RD it keeps.
 * Volatility is kept at most MAX_VOLATILITY, a safety net: with it unbounded, results no rating
 * can explain (a player beating a far stronger one and losing to a far weaker one, in turn) fed
 * it until one game moved a rating by hundreds of points.
 */

/** A player's Glicko rating. */
export interface Rating {
  rating: number
  /** Rating deviation: the uncertainty of `rating`. */
  rd: number
  /** How erratic the player's results are. */
  volatility: number
}

/** A rated player in a match. */
export interface RatedPlayer extends Rating {
  id: string
}

/** One game result from a player's point of view: 1 win, 0.5 draw, 0 loss. */
export interface GameResult {
  opponent: { rating: number; rd: number }
  score: number
  /** How much of a game this result is (default 1): 1/(K−1) each of a K-way match's results. */
  weight?: number
}

export interface Glicko2Options {
  /** System constant τ: how much volatility may change in one period. */
  tau?: number
  minRd?: number
  maxRd?: number
}

/** Converts between the Glicko scale and Glicko-2's internal scale. */
const SCALE = 173.7178
/** The most volatility a player keeps (0.06 is a new player's; Glickman's examples stay near it). */
export const MAX_VOLATILITY = 0.15
const CONVERGENCE = 1e-6

/** A new player's rating: 1500, RD 350, volatility 0.06. */
export function defaultRating(): Rating {
  return { rating: 1500, rd: 350, volatility: 0.06 }
}

function g(phi: number): number {
  return 1 / Math.sqrt(1 + (3 * phi * phi) / (Math.PI * Math.PI))
}

function clampRd(rd: number, options: Glicko2Options): number {
  const min = options.minRd ?? 30
  const max = options.maxRd ?? 350
  return Math.min(max, Math.max(min, rd))
}

/** Glicko-2's idle rating period: each day without a rated match is one. */
export const IDLE_PERIOD_MS = 86_400_000

/**
 * A rating as it stands `idleMs` after the player's last rated match: one idle period a day, each
 * growing the RD by the volatility as Glickman's paper prescribes for a period without games (so a
 * veteran back after a year, RD 30, plays at RD about 200), up to `maxRd`; the rating stays.
 * @example idleRating({ rating: 1700, rd: 30, volatility: 0.06 }, 365 * 86_400_000).rd // ≈ 201
 */
export function idleRating(r: Rating, idleMs: number, options: Glicko2Options = {}): Rating {
  const periods = Math.floor(Math.max(0, idleMs) / IDLE_PERIOD_MS)
  if (!(periods > 0)) return r
  const phi = r.rd / SCALE
  // Capped as a match caps it: a volatility stored before the cap (or by hand) would otherwise
  // undo, in a few idle days, the deviation an admin set.
  const volatility = Math.min(r.volatility, MAX_VOLATILITY)
  const rd = Math.sqrt(phi * phi + periods * volatility * volatility) * SCALE
  return { ...r, rd: Math.max(r.rd, clampRd(rd, options)) }
}

/**
 * One Glicko-2 rating period for one player (steps 2–8 of Glickman's paper). With no results the
 * rating stays and the RD grows by the volatility, as the paper prescribes for an idle period.
 * @example
 * glicko2({ rating: 1500, rd: 200, volatility: 0.06 }, [
 *   { opponent: { rating: 1400, rd: 30 }, score: 1 },
 *   { opponent: { rating: 1550, rd: 100 }, score: 0 },
 *   { opponent: { rating: 1700, rd: 300 }, score: 0 },
 * ]) // ≈ { rating: 1464.06, rd: 151.52, volatility: 0.05999 }
 */
export function glicko2(
  player: Rating,
  results: readonly GameResult[],
  options: Glicko2Options = {},
): Rating {
  const tau = options.tau ?? 0.5
  if (!Number.isFinite(player.rating) || !(player.rd > 0) || !(player.volatility > 0)) {
    throw new RangeError('a rating needs a finite rating, rd > 0 and volatility > 0')
  }
  const mu = (player.rating - 1500) / SCALE
  const phi = player.rd / SCALE
  const sigma = player.volatility
  if (results.length === 0) {
    const rd = Math.sqrt(phi * phi + sigma * sigma) * SCALE
    return { rating: player.rating, rd: clampRd(rd, options), volatility: sigma }
  }

  let vInv = 0
  let sum = 0
  for (const { opponent, score, weight = 1 } of results) {
    const gj = g(opponent.rd / SCALE)
    const e = 1 / (1 + Math.exp(-gj * (mu - (opponent.rating - 1500) / SCALE)))
    vInv += weight * gj * gj * e * (1 - e)
    sum += weight * gj * (score - e)
  }
  const v = 1 / vInv
  const delta = v * sum

  // Step 5: the new volatility is the root of f, found by the Illinois variant of regula falsi.
  const a = Math.log(sigma * sigma)
  const phi2 = phi * phi
  const f = (x: number): number => {
    const ex = Math.exp(x)
    const d = phi2 + v + ex
    return (ex * (delta * delta - phi2 - v - ex)) / (2 * d * d) - (x - a) / (tau * tau)
  }
  let A = a
  let B: number
  if (delta * delta > phi2 + v) B = Math.log(delta * delta - phi2 - v)
  else {
    let k = 1
    while (f(a - k * tau) < 0 && k < 1000) k++
    B = a - k * tau
  }
  let fA = f(A)
  let fB = f(B)
  for (let i = 0; i < 200 && Math.abs(B - A) > CONVERGENCE; i++) {
    const C = A + ((A - B) * fA) / (fB - fA)
    const fC = f(C)
    if (fC * fB <= 0) {
      A = B
      fA = fB
    } else fA /= 2
    B = C
    fB = fC
  }
  const volatility = Math.min(MAX_VOLATILITY, Math.exp(A / 2))

  const phiStar = Math.sqrt(phi2 + volatility * volatility)
  const rd = clampRd((1 / Math.sqrt(1 / (phiStar * phiStar) + 1 / v)) * SCALE, options)
  const phiNew = rd / SCALE
  const muNew = mu + phiNew * phiNew * sum
  return { rating: muNew * SCALE + 1500, rd, volatility }
}

/**
 * Rates one finished match. `teams[i]` are the players of team i (one player per team for 1v1
 * and free-for-all) and `placements[i]` its place: lower is better, equal places are draws.
 * Returns every player's new rating, in input order.
 *
 * @example
 * // 1v1, a beats b:
 * updateRatings([[a], [b]], [1, 2])
 * // free-for-all, c and d tie for second:
 * updateRatings([[a], [b], [c], [d]], [1, 2, 2, 4])
 * // 2v2 draw:
 * updateRatings([[a, b], [c, d]], [1, 1])
 */
export function updateRatings(
  teams: readonly (readonly RatedPlayer[])[],
  placements: readonly number[],
  options: Glicko2Options = {},
): RatedPlayer[] {
  if (teams.length !== placements.length) {
    throw new RangeError('one placement per team is required')
  }
  if (teams.length < 2) throw new RangeError('a rated match needs at least two teams')
  for (const team of teams) {
    if (team.length === 0) throw new RangeError('a team needs at least one player')
  }
  const composites = teams.map((team) => {
    let rating = 0
    let rd2 = 0
    for (const p of team) {
      rating += p.rating
      rd2 += p.rd * p.rd
    }
    return { rating: rating / team.length, rd: Math.sqrt(rd2 / team.length) }
  })
  const out: RatedPlayer[] = []
  // One match is one game's evidence however many sides it has (see above).
  const weight = 1 / (teams.length - 1)
  teams.forEach((team, i) => {
    const own = composites[i]!.rating
    for (const p of team) {
      const results: GameResult[] = []
      composites.forEach((composite, j) => {
        if (j === i) return
        const mine = placements[i]!
        const theirs = placements[j]!
        // The gap between the teams, seen from this player (a solo's own team is themselves).
        const opponent = { rating: p.rating - (own - composite.rating), rd: composite.rd }
        results.push({ opponent, score: mine < theirs ? 1 : mine > theirs ? 0 : 0.5, weight })
      })
      out.push({ id: p.id, ...glicko2(p, results, options) })
    }
  })
  return out
}
