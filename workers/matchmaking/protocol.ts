import { z } from '@hono/zod-openapi'
import { IdempotencyKey, NewPlayerId, objectRecord } from '../lib/fields.ts'

/**
 * The matchmaking wire protocol, defined once: what clients send over the socket (validated at
 * the pool's edge) and what the pool sends back. HTTP tickets reuse the same `join` fields.
 */

/** Largest client frame the pool reads; anything longer is refused unparsed. */
export const MAX_CLIENT_FRAME_BYTES = 4096

/** Free-form ticket attributes: small, flat, stored with the ticket and echoed back. */
export const TicketAttributes = objectRecord(
  z
    .record(
      z.string().min(1).max(32),
      z.union([z.string().max(128), z.number().finite(), z.boolean()]),
    )
    .refine((a) => Object.keys(a).length <= 16, 'at most 16 attributes'),
  {
    type: 'object',
    propertyNames: { minLength: 1, maxLength: 32 },
    additionalProperties: {
      oneOf: [{ type: 'string', maxLength: 128 }, { type: 'number' }, { type: 'boolean' }],
    },
    maxProperties: 16,
    example: { mode: 'ranked' },
  },
)

export type TicketAttributesValue = z.infer<typeof TicketAttributes>

/** Everyone on a ticket, the joining player included; they play on one team. */
export const Party = z
  // Ids a player could bear (a game server's join brings its members into being): never `me`,
  // `.` or `..`, which no route could name again to ban, erase or remove them.
  .array(NewPlayerId)
  .min(1)
  .max(16)
  .refine((p) => new Set(p).size === p.length, 'party members must be distinct')

const Join = z
  .object({
    type: z.literal('join'),
    // Accepted for compatibility and ignored: the pool uses the rating Nexus stores.
    rating: z.unknown().optional(),
    party: Party.optional(),
    attributes: TicketAttributes.optional(),
    // Names this join: sent again, it gets the ticket the first one made (see the pool).
    joinKey: IdempotencyKey.optional(),
  })
  .strict()

/**
 * Takes the socket onto a ticket the player is already on (a party member onto the leader's) and
 * never makes one: a ticket no longer waiting is answered as it stands (`match_found`,
 * `cancelled`, `expired`). A bare `join` would queue the member alone once the party's ticket had
 * ended, matchable before any cancel could follow.
 */
const Attach = z
  .object({ type: z.literal('attach'), ticketId: z.string().min(1).max(160) })
  .strict()

const Cancel = z.object({ type: z.literal('cancel') }).strict()
const Ping = z.object({ type: z.literal('ping') }).strict()

/** Every message a client may send on a matchmaking socket. */
export const ClientMessage = z.discriminatedUnion('type', [Join, Attach, Cancel, Ping])
export type ClientMessage = z.infer<typeof ClientMessage>

/** Client message types, to tell an unknown type from a malformed known one. */
export const CLIENT_MESSAGE_TYPES: readonly string[] = ['join', 'attach', 'cancel', 'ping']

/** A player of a found match and the team it plays on (0-based). */
export interface MatchPlayer {
  playerId: string
  team: number
}

/** Every message the pool sends on a matchmaking socket. */
export type ServerMessage =
  | {
      type: 'queued'
      ticketId: string
      existing: boolean
      expiresAt: number
      expiresIn: number
      /** The pool's region: a socket reconnecting there needs no read of the queue (Neon down). */
      region: string
      /**
       * How long the ticket outlives its last socket (the queue's `disconnectGraceSeconds`): a
       * client cut off rides out the network that long before it gives the ticket up.
       */
      disconnectGraceSeconds: number
    }
  | {
      type: 'match_found'
      ticketId: string
      sessionId: string
      /**
       * The player's session token; absent when the server could not sign one (misconfigured):
       * read the ticket over HTTP (GET /v1/matchmaking/tickets/{ticketId}), which carries it.
       */
      token?: string
      players: MatchPlayer[]
    }
  | { type: 'cancelled'; ticketId: string; reason: string }
  | { type: 'expired'; ticketId: string }
  | { type: 'pong' }
  | {
      type: 'error'
      code: ErrorCode
      message: string
      /** Seconds until the refused frame would be taken (`rate_limited`), as HTTP's Retry-After. */
      retryAfter?: number
    }

/**
 * Error frame codes: `too_large` and `malformed` (not JSON), `unknown_type`, `invalid` (a known
 * type with bad fields), `key_reused` (a `joinKey` a join of other fields used, as HTTP's 422
 * `idempotency-key-reused`), `party_forbidden`, `not_queued` (cancel without a waiting ticket, or
 * attach to a ticket this pool does not hold for the player),
 * `conflict` (a party member already waits), `unavailable` (the queue changed under the socket,
 * or the party could not be read: try again), `rate_limited` (too many frames, or too many waiting
 * for an answer: the frame was dropped), `banned` (the player, or a member of their party, is
 * under an account ban), `signed_out` (the socket's token was issued before its player's erasure:
 * sign in again).
 */
export type ErrorCode =
  | 'too_large'
  | 'malformed'
  | 'unknown_type'
  | 'invalid'
  | 'key_reused'
  | 'party_forbidden'
  | 'not_queued'
  | 'conflict'
  | 'unavailable'
  | 'rate_limited'
  | 'banned'
  | 'signed_out'
