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
