/**
 * Whether an endpoint may send `code` (RFC 6455 §7.4): 1000–1003, 1007–1014 defined ones, and
 * 3000–4999 for libraries and applications. A peer may report others (1004, 1005, 1006, 1015, or
 * out of range), which the runtime refuses to send back.
 */
function sendableCloseCode(code: number): boolean {
  return (
    (code >= 1000 && code <= 1003) ||
    (code >= 1007 && code <= 1014) ||
    (code >= 3000 && code <= 4999)
  )
}

/** A close reason's limit: 123 bytes of UTF-8 (a control frame's 125, less the code). */
const MAX_CLOSE_REASON_BYTES = 123

/**
 * Answers a peer's close, echoing its code and reason where they may be sent back. A code that
 * cannot (1005: the client called `close()` without one; a reserved or unassigned one), or a
 * reason past 123 bytes (a malformed one arrives with each bad byte as a 3-byte U+FFFD), still
 * needs its answer, or the client waits for it until its own timeout: it gets a close without a
 * code then.
 */
export function answerClose(ws: WebSocket, code: number, reason: string): void {
  try {
    if (
      sendableCloseCode(code) &&
      new TextEncoder().encode(reason).length <= MAX_CLOSE_REASON_BYTES
    ) {
      ws.close(code, reason)
    } else {
      ws.close()
    }
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

/**
 * When a closing socket was first found so (its client not having answered the close), or
 * undefined the first time, which notes `now`: in its attachment, which outlives a hibernation
 * (the object's memory does not), and in `memory`, which holds it where the attachment cannot be
 * written in the socket's state.
 */
export function closingSince<A extends { closingSince?: number }>(
  ws: WebSocket,
  att: A | null,
  memory: WeakMap<WebSocket, number>,
  now: number,
): number | undefined {
  const since = att?.closingSince ?? memory.get(ws)
  if (since !== undefined) return since
  memory.set(ws, now)
  if (att) {
    try {
      att.closingSince = now
      ws.serializeAttachment(att)
    } catch {
      // Not writable in its state: `memory` holds it.
    }
  }
  return undefined
}
