/**
 * Starts the real services the workerd tests talk to, once per run: a PostgreSQL server
 * (Debian's if installed, else the embedded one) behind the local Neon relay, and a
 * redis-server behind the local Upstash REST endpoint. Everything listens on 127.0.0.1 on free
 * ports with temporary data, and is stopped when the run ends.
 */
import { existsSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { TestProject } from 'vitest/node'
import { startNeonRelay, startPostgres, startRedis, startUpstashRest } from '../local/index.ts'
import { runMigrations } from '../scripts/migrate.ts'
import { startJwksServer } from './jwks-server.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    services: Record<string, string>
  }
}

export default async function setup(project: TestProject) {
  // Only the workerd tests use them: a run of other projects alone (`--project core`) starts none.
  if (!project.vitest.projects.some((p) => p.name === 'worker')) return
  // wrangler reads these into every Worker it configures, the tests' too: a setting made there
  // for `npm run dev` (CORS_ORIGINS, GUEST_AUTH=off, a lower limit) changes what tests see.
  const local = ['.dev.vars', '.env', '.env.local'].filter((f) => existsSync(f))
  if (local.length > 0) {
    console.warn(
      `[nexus] ${local.join(', ')} found: wrangler applies its settings to the tests' Worker too, ` +
        'where any the tests do not set themselves may fail them; move it aside if tests fail.',
    )
  }
  const stops: (() => Promise<void>)[] = []
  const stopAll = async () => {
    for (const stop of stops.reverse()) await stop().catch((err: unknown) => console.error(err))
  }
  try {
    const pg = await startPostgres()
    stops.push(() => pg.stop())
    const relay = await startNeonRelay({ postgresPort: pg.port })
    stops.push(() => relay.close())
    const redis = await startRedis()
    stops.push(() => redis.stop())
    const token = 'test-upstash-token'
    // And a read-only token, as a database's read-only token pasted in place of its own: every
    // write refused (NOPERM), every read answered.
    const readOnlyToken = 'test-upstash-read-only-token'
    const upstash = await startUpstashRest({ redisPort: redis.port, token, readOnlyToken })
    stops.push(() => upstash.close())
    const relayAddress = `127.0.0.1:${relay.port}`
    await runMigrations({ databaseUrl: pg.url, relay: relayAddress })
    // Degradation tests point Nexus at a Postgres that is not there: a relay to a closed port.
    // Port 1 (nothing listens there), not a free port asked of the system: that one goes back to
    // the ephemeral range, where a server started later in the run may be handed it.
    const deadPort = 1
    const deadRelay = await startNeonRelay({ postgresPort: deadPort })
    stops.push(() => deadRelay.close())
    // And at one that takes requests and never answers (a hung connection).
    const silent = createServer(() => {})
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    stops.push(
      () =>
        new Promise<void>((resolve) => {
          silent.closeAllConnections()
          silent.close(() => resolve())
        }),
    )
    const idp = await startJwksServer()
    stops.push(() => idp.close())
    project.provide('services', {
      JWKS_URL: idp.url,
      JWT_ISSUER: 'https://idp.test',
      JWT_AUDIENCE: 'nexus-game',
      TEST_IDP_PRIVATE_JWK: idp.privateJwk,
      TEST_IDP_NEXT_PRIVATE_JWK: idp.nextPrivateJwk,
      TEST_UNREACHABLE_DATABASE_URL: `postgresql://nexus:nexus@127.0.0.1:${deadPort}/nexus`,
      TEST_UNREACHABLE_NEON_RELAY: `127.0.0.1:${deadRelay.port}`,
      TEST_SILENT_NEON_RELAY: `127.0.0.1:${(silent.address() as AddressInfo).port}`,
      // A database of its own behind the silent relay (relays are chosen by the database's
      // host:port), so a test of it changes where no other connection goes.
      TEST_SILENT_DATABASE_URL: `postgresql://nexus:nexus@127.0.0.1:${(silent.address() as AddressInfo).port}/nexus`,
      DATABASE_URL: pg.url,
      NEON_LOCAL_RELAY: relayAddress,
      UPSTASH_REDIS_REST_URL: upstash.url,
      UPSTASH_REDIS_REST_TOKEN: token,
      TEST_READ_ONLY_UPSTASH_TOKEN: readOnlyToken,
    })
  } catch (err) {
    await stopAll()
    throw err
  }
  return stopAll
}
