import { z } from '@hono/zod-openapi'
import type { GameResult } from '../core/rules/index.ts'
import { MAX_ROSTER, RULES_OPTIONS_LIMITS, rulesNames } from '../core/rules/index.ts'
import { boundedJson, isPrototypeKey, PlayerId, ResourceId } from '../lib/fields.ts'
import { NOT_STORABLE_REASON, storableText } from '../core/rules/json.ts'

/**
 * The wire protocol of a game-session socket, defined once: what clients may send (validated
 * here, at the edge of the object) and what the server sends (built with `satisfies`).
 */

/** Session ids: what the matchmaker and the admin route mint; URL-safe and bounded. */
export const SessionId = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, "_", "." and "-"')
  .openapi({ example: 's_0b6f7c1e-2a34-4d1f-9a55-3f2e1d0c9b8a' })

/** Most players a session may have, whatever the rules allow (rules may allow no more). */
export { MAX_ROSTER }

export const RosterEntry = z.object({
  playerId: PlayerId.refine(
    (id) => !isPrototypeKey(id),
    'a name every JavaScript object has (such as "constructor") is not a player id',
  ),
  team: z.number().int().min(0).max(MAX_ROSTER),
})

/** What `GameSession.create` accepts (the matchmaker's `SessionSetup`), checked strictly. */
export const SessionSetupSchema = z
  .object({
    sessionId: SessionId,
    rules: z.string().refine((r) => rulesNames.includes(r), {
      message: `one of ${rulesNames.join(', ')}`,
    }),
    roster: z
      .array(RosterEntry)
      .min(1)
      .max(MAX_ROSTER)
      .refine((r) => new Set(r.map((p) => p.playerId)).size === r.length, {
        message: 'player ids must be unique',
      }),
    seed: z.string().min(16).max(256).refine(storableText, NOT_STORABLE_REASON),
    options: boundedJson(z.unknown(), RULES_OPTIONS_LIMITS).optional(),
    queue: ResourceId.nullable().optional(),
    region: z.string().max(64).nullable().optional(),
    leaderboardId: ResourceId.nullable().optional(),
  })
  .strict()

/**
 * A client's name for one of its actions: echoed in the `error` that refuses it, and in the
 * `event` it made as its own player's sockets get it (live, in a resume, in a log read), so a
 * client with several actions in flight knows which one each answer is for. Printable ASCII (no
 * space) or a whole number: it is stored in the log and archived in Neon's jsonb as it came.
 */
export const ActionRef = z.union([
  z.string().regex(/^[\x21-\x7e]{1,64}$/),
  z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
])
export type ActionRef = z.infer<typeof ActionRef>
export const ACTION_REF_RULE =
  'ref must be 1 to 64 printable ASCII characters (no space) or a whole number from 0 to 2^53 - 1'

/**
 * A client's name for one of its connections (`?conn=` on the upgrade): a socket opened with
 * the `conn` of one of its player's open sockets supersedes it (closed with SUPERSEDED_CLOSE
 * before the new one is answered), so nothing more the old one carries is applied. A client
 * reconnecting after a drop it could not see end sends the same `conn`: every action of the old
 * socket is then in the log, or never will be.
 */
/** A resume's `since` as a connect sends it: plain decimal digits, no sign, leading zero or exponent. */
export const SINCE_FORM = /^(0|[1-9][0-9]{0,14})$/

export const ConnectionId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/)
export const CONNECTION_ID_RULE = "conn must be 1 to 64 letters, digits, '_' or '-'"

/**
 * Frames a client may send, by `type`. An action's other fields are the rules' business, but for
 * `ref`, which is the client's (taken off before the rules see the action).
 */
export const ClientMessage = z.discriminatedUnion('type', [
  z.looseObject({ type: z.literal('action'), ref: ActionRef.optional() }),
  z.object({ type: z.literal('ping') }).strict(),
  /**
   * The client has read every event up to `seq`: from its first, the socket is closed
   * (BEHIND_CLOSE) once the events sent to it and not acknowledged pass MAX_UNACKED_CHARS.
   */
  z
    .object({ type: z.literal('ack'), seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER) })
    .strict(),
])
export type ClientMessage = z.infer<typeof ClientMessage>

/** Frames the server sends. */
export type ServerMessage =
  /**
   * A fresh join: the state as this player may see it, as of `seq`; the game's clock as the frame
   * left (`GameClock`), the anchor for counting down to a deadline the state names in ticks.
   */
  | ({
      type: 'welcome'
      seq: number
      state: unknown
      you: string
      status: SessionStatus
      /** The session takes `ack` frames (a server from before them says nothing). */
      acks: true
      /**
       * The session answers an action's `ref` (on its event, or its refusal); a server from
       * before refs (2026-12-06) says nothing, and one from before this field says `acks`.
       */
      refs: true
    } & GameClock)
  /**
   * A reconnect with `?since=`: the events `since+1 … seq` follow at once, then live ones; the
   * game's clock as in `welcome` (the missed events' own ticks are in the past).
   */
  | ({ type: 'resumed'; since: number; seq: number; acks: true; refs: true } & GameClock)
  /**
   * One accepted input, to everyone, in `seq` order with no gaps, with its input's `tick`; to
   * the sockets of the player whose action it was, with the action's `ref` if it had one.
   */
  | { type: 'event'; seq: number; tick: number; event: unknown; ref?: ActionRef }
  /** A refused frame, to its sender only, with the action's `ref` if it had one; nothing changed. */
  | { type: 'error'; code: string; message: string; ref?: ActionRef }
  /** The game is over; the socket closes after this. */
  | { type: 'ended'; seq: number; result: GameResult }
  | { type: 'pong' }

export type SessionStatus = 'live' | 'finished'

/**
 * A session's clock as a frame left it: `tick` (`tickRate` a second; milliseconds for rules
 * without one), `elapsedMs` since the session began (unrounded, to count on from), and whether it
 * is `running` (a game over stopped at its last input's tick).
 */
export interface GameClock {
  tick: number
  tickRate: number
  elapsedMs: number
  running: boolean
}
