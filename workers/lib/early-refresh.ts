/**
 * The most an answer's production time counts for in `refreshEarly`, as a share of its TTL. A
 * load slowed by something other than the board (a names lookup waiting out its 1 s deadline on a
 * Neon that does not answer) would otherwise send about a quarter of a busy key's readers of a
 * 4 s answer to the board, each waiting that second, while a valid answer was in hand.
 */
const MAX_COMPUTE_SHARE = 1 / 20

/**
 * Probabilistic early expiration ("XFetch", Vattani et al. 2015): each reader of a cached answer
 * refreshes it early with a probability that rises as expiry nears and with how long the answer
 * took to produce (at most a twentieth of its TTL). Under load one reader refreshes shortly before
 * expiry while the rest keep hitting, so an expiry does not send every reader to the Durable
 * Object at once. It needs no coordination between requests (a Worker may not share one
 * request's I/O with another). `random` is a uniform draw in [0, 1).
 * @example refreshEarly(0, 4000, 50, 3990) // most likely true: 10 ms left of an answer that took 50
 */
export function refreshEarly(
  storedAt: number,
  ttlMs: number,
  computeMs: number,
  now: number,
  random = Math.random(),
): boolean {
  const delta = Math.min(Math.max(1, computeMs), Math.max(1, ttlMs * MAX_COMPUTE_SHARE))
  return now - delta * Math.log(random) >= storedAt + ttlMs
}
