/**
 * Local stand-ins for Nexus's managed services: real PostgreSQL and redis-server processes, and
 * the two adapters that let the production Neon and Upstash clients reach them unchanged.
 * Importing this module starts nothing.
 */
export { startPostgres, hasDebianPostgres, serverCanReach } from './postgres.ts'
export type { LocalPostgres, PostgresKind, StartPostgresOptions } from './postgres.ts'
export { startRedis } from './redis.ts'
export type { LocalRedis, StartRedisOptions } from './redis.ts'
export { startNeonRelay, neonLocalSettings, checkAddress } from './neon-relay/index.ts'
export type { NeonLocalSettings, NeonRelay, StartNeonRelayOptions } from './neon-relay/index.ts'
export { startUpstashRest, rewriteScript } from './upstash-rest/index.ts'
export type { StartUpstashRestOptions, UpstashRest } from './upstash-rest/index.ts'
export { freePort, pidAlive, childPids } from './process.ts'
