/** Close codes a peer may report but no endpoint may send (RFC 6455 §7.4.1). */
const RESERVED_CLOSE_CODES = new Set([1005, 1006, 1015])

/**
 * Answers a peer's close, echoing its code. A reserved code (1005: the client called `close()`
 * without one) cannot be sent back, but the close still needs its answer, or the client waits
 * for it until its own timeout; it gets a close without a code.
 */
export function answerClose(ws: WebSocket, code: number, reason: string): void {
  try {
    if (RESERVED_CLOSE_CODES.has(code)) ws.close()
    else ws.close(code, reason)
  } catch {
    // Already closing or closed: nothing to answer.
  }
}

/**
 * A socket whose client has pinged (`{"type":"ping"}`, which the runtime answers without waking
 * the object) and then went this long without a ping or another frame is taken as gone. A
 * connection that dies without a close (a phone switching networks, an app killed) is otherwise
 * reported only when the runtime's TCP timers give up, minutes later: until then its player would
 * neither forfeit nor lose a waiting ticket. The SDK pings every 20 s; a client that never pings
 * is never judged by this.
 */
export const SILENT_SOCKET_MS = 90_000

/**
 * Whether `ws` fell silent (SILENT_SOCKET_MS) by `now`: it pinged at least once, and neither its
 * last ping nor `lastFrameAt` (its last other frame the object saw, if it keeps that) is recent.
 */
export function fellSilent(
  ctx: DurableObjectState,
  ws: WebSocket,
  now: number,
  lastFrameAt = 0,
): boolean {
  const pinged = ctx.getWebSocketAutoResponseTimestamp(ws)
  if (pinged === null) return false
  return now - Math.max(pinged.getTime(), lastFrameAt) > SILENT_SOCKET_MS
}

/** Closes a socket the object has taken as gone; it may already be closing. */
export function closeSilent(ws: WebSocket): void {
  try {
    ws.close(1001, `no ping for ${SILENT_SOCKET_MS / 1000} s`)
  } catch {
    // Already closing or closed.
  }
}
