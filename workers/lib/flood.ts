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
 * A frame past this many characters (or bytes, for a binary one) closes its socket. A frame
 * somewhat over an object's limit (4 KiB in a pool, 8 KiB in a game) is a client's mistake,
 * refused with an `error` frame; one many times over it is not, and the platform takes frames of
 * up to 32 MiB, each read whole into the isolate's memory (128 MB, shared by every object in
 * it) before any check runs: refusing such frames one by one would let a socket go on sending
 * them. Closed, a socket's next giant frame costs a new connect, which is counted.
 */
export const FRAME_CLOSE_SIZE = 64 * 1024

/** The close code (1009, message too big) and reason a socket sending such a frame gets. */
export const OVERSIZED_CLOSE = { code: 1009, reason: 'frame far over the size limit' } as const

/** Whether `message` is past FRAME_CLOSE_SIZE (text by its length: no encoding pass over it). */
export function farTooLarge(message: string | ArrayBuffer): boolean {
  return (typeof message === 'string' ? message.length : message.byteLength) > FRAME_CLOSE_SIZE
}

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
