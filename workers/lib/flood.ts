/**
 * Sockets that keep sending past their frame allowance. Each frame over it is refused with an
 * `error` frame and changes nothing, but still wakes the object, which serves a whole pool or a
 * whole match on one thread: a client that floods without pause takes that thread from everyone
 * else. Past MAX_REFUSED_FRAMES refusals within FLOOD_WINDOW_MS the socket is closed (1008).
 * A client that keeps to its allowance, as the SDK does, never comes near: the allowance is tens
 * of frames a second, and this counts only the frames beyond it.
 */
export const MAX_REFUSED_FRAMES = 200
export const FLOOD_WINDOW_MS = 10_000

/** The close code and reason a flooding socket gets. */
export const FLOOD_CLOSE = { code: 1008, reason: 'too many frames over the allowance' } as const

/** Each socket's refusals in its current window (kept in memory: a flood keeps the object awake). */
export type RefusalCounts<K extends object> = WeakMap<K, { since: number; refused: number }>

/** Counts one refused frame of `socket` at `now`; true once it is past the limit. */
export function refusedTooOften<K extends object>(
  counts: RefusalCounts<K>,
  socket: K,
  now: number,
): boolean {
  let c = counts.get(socket)
  if (!c || now - c.since >= FLOOD_WINDOW_MS || now < c.since) {
    c = { since: now, refused: 0 }
    counts.set(socket, c)
  }
  c.refused++
  return c.refused > MAX_REFUSED_FRAMES
}
