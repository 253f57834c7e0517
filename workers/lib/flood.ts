/**
 * Sockets that keep sending far past their frame allowance. Each frame over it is refused with an
 * `error` frame and changes nothing, but still wakes the object, which serves a whole pool or a
 * whole match on one thread: a client that floods without pause takes that thread from everyone
 * else. Past MAX_REFUSED_FRAMES refusals within FLOOD_WINDOW_MS (a hundred a second beyond the
 * allowance) the socket is closed (1008). The SDK does not pace what a game sends, so a game a
 * little over its allowance has frames refused but is not closed: closed, it would reconnect
 * and resume, which costs the object more than the refusals did.
 */
export const MAX_REFUSED_FRAMES = 1_000
export const FLOOD_WINDOW_MS = 10_000

/** The close code and reason a flooding socket gets. */
export const FLOOD_CLOSE = { code: 1008, reason: 'too many frames over the allowance' } as const

/**
 * Refusals in the current window, by socket or by player (kept in memory: a flood keeps the
 * object awake): a WeakMap by socket, or a Map by player id where a player may hold several
 * sockets, which would otherwise each get the whole limit, and a reconnect a fresh one.
 */
export interface RefusalCounts<K> {
  get(key: K): { since: number; refused: number } | undefined
  set(key: K, value: { since: number; refused: number }): unknown
}

/** Counts one refused frame of `socket` (or its player) at `now`; true once past the limit. */
export function refusedTooOften<K>(counts: RefusalCounts<K>, socket: K, now: number): boolean {
  let c = counts.get(socket)
  if (!c || now - c.since >= FLOOD_WINDOW_MS || now < c.since) {
    c = { since: now, refused: 0 }
    counts.set(socket, c)
  }
  c.refused++
  return c.refused > MAX_REFUSED_FRAMES
}
