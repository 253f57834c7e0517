/**
 * @nexus/client: the TypeScript client for Nexus. HTTP types are generated from the server's
 * OpenAPI document (`api.gen.ts`); socket messages are the server's own protocol types.
 */
export { createClient, type ClientOptions, type NexusClient } from './client.ts'
export { Auth, memoryStorage, type KeyValueStorage, type TokenSource } from './auth.ts'
export {
  DEFAULT_RETRY,
  Transport,
  type BodyOf,
  type Credential,
  type Ok,
  type QueryOf,
  type RetryPolicy,
  PlayerChanged,
} from './http.ts'
export { isTransient, NexusNetworkError, NexusProblem, type ProblemType } from './problem.ts'
export * from './leaderboards.ts'
export {
  Matchmaking,
  MatchmakingEnded,
  MatchTicket,
  type JoinOptions,
  type Match,
  type MatchPlayer,
  type MatchServerMessage,
  type QueueInfo,
  type QueueStats,
  type Ticket,
  type TicketEvents,
} from './matchmaking.ts'
export {
  Parties,
  type Party,
  type PartyInvite,
  type PartyMember,
  type ReceivedPartyInvite,
  type ReceivedPartyInvites,
} from './parties.ts'
export {
  ActionOutcomeUnknown,
  ActionRefused,
  GameConnection,
  SessionConnectionReplaced,
  SessionPlayerErased,
  type ActOutcome,
  Sessions,
  type EventsPage,
  type MatchHistoryPage,
  type GameEvents,
  type GameResult,
  type SessionServerMessage,
  type SessionStatus,
  type SessionView,
} from './sessions.ts'
export type { SocketEvent, SocketFactory, SocketLike } from './socket.ts'
export { socketProtocols } from './socket.ts'
export type { Paths, Schemas } from './api.gen.ts'
