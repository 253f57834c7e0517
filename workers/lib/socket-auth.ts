import { ApiError } from './problem.ts'

/** The subprotocol Nexus's sockets speak: a client that names it is answered with it. */
export const SOCKET_PROTOCOL = 'nexus.v1'

/**
 * The subprotocol that carries a client's token, `nexus.token.<token>`: a browser cannot give a
 * socket a header, and a token in the URL (`?token=`) ends up in logs, the platform's and any
 * proxy's, where this header does not. A JWT's characters are all allowed in a subprotocol.
 */
export const TOKEN_PROTOCOL_PREFIX = 'nexus.token.'

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
 * Reads a socket upgrade's `Sec-WebSocket-Protocol` (a comma-separated list); a token past
 * 4 KiB is 422, as it is in the query.
 *
 * @example socketOffer('nexus.v1, nexus.token.eyJ…') // { speaksNexus: true, token: 'eyJ…' }
 */
export function socketOffer(header: string | undefined): SocketOffer {
  const offered = (header ?? '').split(',').map((p) => p.trim())
  const carried = offered.find((p) => p.startsWith(TOKEN_PROTOCOL_PREFIX))
  const token = carried?.slice(TOKEN_PROTOCOL_PREFIX.length)
  if (token !== undefined && token.length > MAX_TOKEN_LENGTH) {
    throw new ApiError('validation', 'The token in Sec-WebSocket-Protocol is too long', {
      errors: [
        {
          path: 'sec-websocket-protocol',
          message: `a token of at most ${MAX_TOKEN_LENGTH} characters`,
        },
      ],
    })
  }
  return { speaksNexus: offered.includes(SOCKET_PROTOCOL), token: token || undefined }
}

/**
 * An accepted upgrade as the client must see it: naming SOCKET_PROTOCOL back when the client
 * offered it (a browser closes a socket whose answer names none of those it offered). Never the
 * token's own subprotocol, which would echo the credential.
 */
export function acceptedSocket(res: Response, offer: SocketOffer): Response {
  if (res.status !== 101 || !offer.speaksNexus) return res
  const headers = new Headers(res.headers)
  headers.set('sec-websocket-protocol', SOCKET_PROTOCOL)
  return new Response(null, { status: 101, webSocket: res.webSocket, headers })
}
