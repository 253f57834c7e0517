import { ApiError } from './problem.ts'

/** The subprotocol Nexus's sockets speak: a client that names it is answered with it. */
const SOCKET_PROTOCOL = 'nexus.v1'

/**
 * The subprotocol that carries a client's token, `nexus.token.<token>`: a browser cannot give a
 * socket a header, and a token in the URL (`?token=`) ends up in logs, the platform's and any
 * proxy's, where this header does not. A JWT's characters are all allowed in a subprotocol.
 */
const TOKEN_PROTOCOL_PREFIX = 'nexus.token.'

/** The longest token a socket takes, as its `?token=` (4 KiB). */
const MAX_TOKEN_LENGTH = 4096

/** What a socket upgrade offered in `Sec-WebSocket-Protocol`. */
export interface SocketOffer {
  /** Whether it named SOCKET_PROTOCOL, which the answer must then name back. */
  speaksNexus: boolean
  /** The token it carried, if any. */
  token: string | undefined
}

/**
 * Reads a socket upgrade's `Sec-WebSocket-Protocol` (a comma-separated list). A token offered
 * must come beside SOCKET_PROTOCOL, once, non-empty and at most 4 KiB (as in the query): else
 * 422, before anything is opened (a socket answered without a protocol its client offered is
 * closed by the client at once, after the server had let it in).
 *
 * @example socketOffer('nexus.v1, nexus.token.eyJ…') // { speaksNexus: true, token: 'eyJ…' }
 */
export function socketOffer(header: string | undefined): SocketOffer {
  const offered = (header ?? '').split(',').map((p) => p.trim())
  const speaksNexus = offered.includes(SOCKET_PROTOCOL)
  const carried = offered.filter((p) => p.startsWith(TOKEN_PROTOCOL_PREFIX))
  if (carried.length === 0) return { speaksNexus, token: undefined }
  const token = carried[0]!.slice(TOKEN_PROTOCOL_PREFIX.length)
  const refusal =
    carried.length > 1
      ? 'one token'
      : token === ''
        ? 'a token after "nexus.token."'
        : token.length > MAX_TOKEN_LENGTH
          ? `a token of at most ${MAX_TOKEN_LENGTH} characters`
          : !speaksNexus
            ? `"${SOCKET_PROTOCOL}" beside the token`
            : null
  if (refusal) {
    throw new ApiError('validation', 'The token in Sec-WebSocket-Protocol cannot be taken', {
      errors: [{ path: 'sec-websocket-protocol', message: refusal }],
    })
  }
  return { speaksNexus, token }
}

/**
 * An accepted upgrade as the client must see it: naming SOCKET_PROTOCOL back when the client
 * offered it (a browser closes a socket whose answer names none of those it offered). Never the
 * token's own subprotocol, which would send the credential back.
 */
export function acceptedSocket(res: Response, offer: SocketOffer): Response {
  if (res.status !== 101 || !offer.speaksNexus) return res
  const headers = new Headers(res.headers)
  headers.set('sec-websocket-protocol', SOCKET_PROTOCOL)
  return new Response(null, { status: 101, webSocket: res.webSocket, headers })
}
