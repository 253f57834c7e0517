import type { GameSession } from '../durable-objects/game-session.ts'
import type { Leaderboard } from '../durable-objects/leaderboard.ts'
import type { MatchPool } from '../durable-objects/match-pool.ts'
import type { MetricsHub } from '../durable-objects/metrics-hub.ts'

/**
 * Bindings, variables and secrets of the Worker. Every variable is optional at the type level so
 * that a missing one is handled where it is read (with its documented default), never crashes.
 */
export interface Env {
  LEADERBOARD: DurableObjectNamespace<Leaderboard>
  MATCH_POOL: DurableObjectNamespace<MatchPool>
  GAME_SESSION: DurableObjectNamespace<GameSession>
  METRICS_HUB: DurableObjectNamespace<MetricsHub>
  /**
   * The running version (wrangler.toml `[version_metadata]`): keys the read caches. Absent in a
   * deployment whose configuration leaves it out; the caches are then shared across versions.
   */
  CF_VERSION_METADATA?: WorkerVersionMetadata

  /** HS256 secret for player tokens Nexus issues (guest tokens) and accepts. */
  AUTH_SECRET?: string
  /**
   * The AUTH_SECRET a rotation replaced: tokens, session tokens and cursors it signed are still
   * accepted while it is set (nothing new is signed with it). Remove it once they have expired.
   */
  AUTH_SECRET_PREVIOUS?: string
  /** A studio's own identity provider: JWKS endpoint, expected issuer and audience. */
  JWKS_URL?: string
  JWT_ISSUER?: string
  JWT_AUDIENCE?: string
  /** Bearer key for /v1/admin routes and for game servers submitting on a player's behalf. */
  ADMIN_KEY?: string
  /** The ADMIN_KEY a rotation replaced, still taken while set (game servers move one by one). */
  ADMIN_KEY_PREVIOUS?: string
  /** Bearer token that may read /metrics only (a Prometheus scrape); the admin key may too. */
  METRICS_TOKEN?: string
  /** 'on' (default) or 'off': whether POST /v1/auth/guest issues tokens. */
  GUEST_AUTH?: string
  /** Lifetime of issued guest tokens, seconds (default 86400). */
  TOKEN_TTL_SECONDS?: string
  /** Guest token requests allowed per client IP per minute (default 30). */
  GUEST_AUTH_PER_MINUTE?: string

  /** Neon (or any Postgres reachable by the Neon driver) connection string. */
  DATABASE_URL?: string
  /** Local development only: `host:port` of the Neon relay (WebSocket + /sql) in front of a local Postgres. */
  NEON_LOCAL_RELAY?: string

  UPSTASH_REDIS_REST_URL?: string
  UPSTASH_REDIS_REST_TOKEN?: string

  /** Per-player submissions per minute across boards at the edge, when Redis is configured (default 120). */
  EDGE_SUBMITS_PER_MINUTE?: string
  /**
   * Reads with `Cache-Control: no-cache` a client address may send per minute (default 120,
   * 1–1,000,000); past it, reads are served from the caches (at most 4 s stale).
   */
  FRESH_READS_PER_MINUTE?: string

  /**
   * Pages of a session's log (GET /v1/sessions/:id/events) a player may read per minute (default
   * 120, 1–100,000); the admin key is not limited.
   */
  SESSION_EVENT_READS_PER_MINUTE?: string

  /**
   * Reads of sessions (GET /v1/sessions/:id, without an upgrade) a player may make per minute
   * (default 120, 1–100,000), counted before the session's object is asked; the admin key is
   * not limited.
   */
  SESSION_READS_PER_MINUTE?: string

  /**
   * Socket connects to sessions (upgrades of GET /v1/sessions/:id) a player may make per minute,
   * across sessions (default 120, 1–100,000).
   */
  SESSION_CONNECTS_PER_MINUTE?: string

  /**
   * A player's reads of their own party (GET /v1/parties/me) per minute (default 600, 1–100,000):
   * apart from PLAYER_READS_PER_MINUTE, as the SDK polls it every 2 s for each wait of a member.
   */
  OWN_PARTY_READS_PER_MINUTE?: string

  /**
   * A player's reads of their own account from Neon (profile, rewards, matches, party invites,
   * their history on a board) per minute, in all (default 120, 1–100,000).
   */
  PLAYER_READS_PER_MINUTE?: string

  /**
   * A player's reads and cancels of matchmaking tickets (GET and DELETE
   * /v1/matchmaking/tickets/:ticketId, held long-polls included) per minute, in all (default 120,
   * 1–100,000); the admin key is not limited.
   */
  TICKET_CALLS_PER_MINUTE?: string

  /**
   * A player's joins of a queue per minute (default 30, 1–10,000): HTTP joins at the edge (socket
   * connects apart, at four times it), each pool's socket `join` frames there.
   */
  JOINS_PER_MINUTE?: string

  /** Game sessions: how long a disconnected player may stay away, seconds (default 60, 5–3600). */
  SESSION_GRACE_SECONDS?: string
  /** How long a player may take to connect to a new session, seconds (default 120, 5–3600). */
  SESSION_JOIN_GRACE_SECONDS?: string
  /** How long a finished, archived session stays readable in its object, hours (default 24, 1–720). */
  SESSION_RETENTION_HOURS?: string
  /**
   * Days an ended game's archived log is kept in Neon (`session_logs`), from the session's
   * creation (default 0: for good; up to 36,500). Results, ratings and histories stay.
   */
  SESSION_LOG_RETENTION_DAYS?: string

  /**
   * Origins whose browser pages may call the API: `*` (default, any) or a comma-separated list
   * of origins such as `https://game.example.com`.
   */
  CORS_ORIGINS?: string

  /**
   * Origins of the studio's own browser tools that may send the admin key (comma-separated;
   * default none): the API's own origin (the dashboard) always may, any other page may not.
   */
  ADMIN_ORIGINS?: string

  /** 'debug' | 'info' (default) | 'warn' | 'error' | 'silent'. */
  LOG_LEVEL?: string
}
