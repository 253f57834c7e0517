import { describe, expect, it } from 'vitest'
import { answerClose } from '../../workers/lib/socket-close.ts'

/**
 * A socket that refuses what workerd refuses to send (seen on the runtime: codes a peer may
 * report but no endpoint may send, and reasons over 123 bytes of UTF-8 throw), recording the
 * closes it did send.
 */
function runtimeSocket() {
  const sent: { code?: number; reason?: string }[] = []
  const ws = {
    close(code?: number, reason?: string) {
      if (
        code !== undefined &&
        (code < 1000 || code > 4999 || [1004, 1005, 1006, 1015].includes(code))
      ) {
        throw new TypeError('Invalid WebSocket close code')
      }
      if (reason !== undefined && new TextEncoder().encode(reason).length > 123) {
        throw new SyntaxError('Close reason too long')
      }
      sent.push(code === undefined ? {} : { code, reason })
    },
  }
  return { ws: ws as unknown as WebSocket, sent }
}

describe('answering a peer close', () => {
  it.each([
    [1000, 'bye'],
    [1001, ''],
    [4000, 'game over'],
    [3001, 'x'.repeat(123)],
  ])('echoes a code and reason that may be sent back (%i)', (code, reason) => {
    const { ws, sent } = runtimeSocket()
    answerClose(ws, code, reason)
    expect(sent).toEqual([{ code, reason }])
  })

  it.each([
    [1005, ''],
    [1006, ''],
    [1004, ''],
    [1015, ''],
    [999, ''],
    [5000, 'out of range'],
    [2500, 'unassigned'],
    [4000, '\uFFFD'.repeat(123)],
    [1000, 'é'.repeat(62)],
  ])(
    'answers with a close without a code when %i or its reason cannot be sent back: the client is not left waiting for its own timeout',
    (code, reason) => {
      const { ws, sent } = runtimeSocket()
      answerClose(ws, code, reason)
      expect(sent).toEqual([{}])
    },
  )
})
