import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startNeonRelay, type NeonRelay } from '../../local/neon-relay/index.ts'
import { startPostgres, type LocalPostgres } from '../../local/postgres.ts'
import { directConnectionString, runMigrations } from '../../scripts/migrate.ts'

describe('migrations connect directly, never through the pooler', () => {
  it('turns a Neon pooled connection string into the direct one, and leaves others as they are', () => {
    // The pooler runs in transaction mode: the migrator's session lock would not hold across it.
    expect(
      directConnectionString(
        'postgresql://app:pw@ep-cool-river-123456-pooler.eu-central-1.aws.neon.tech/nexus?sslmode=require',
      ),
    ).toBe(
      'postgresql://app:pw@ep-cool-river-123456.eu-central-1.aws.neon.tech/nexus?sslmode=require',
    )
    for (const same of [
      'postgresql://app:pw@ep-cool-river-123456.eu-central-1.aws.neon.tech/nexus?sslmode=require',
      'postgres://nexus:nexus@127.0.0.1:5432/nexus',
      'postgres://u:p@db-pooler.example.com/nexus',
    ]) {
      expect(directConnectionString(same)).toBe(same)
    }
  })
})

describe('a migration waiting for a table in use', () => {
  let server: LocalPostgres
  let relay: NeonRelay
  let direct: pg.Client

  beforeAll(async () => {
    server = await startPostgres()
    relay = await startNeonRelay({ postgresPort: server.port })
    direct = new pg.Client(server.url)
    await direct.connect()
  })

  afterAll(async () => {
    await direct?.end()
    await relay?.close()
    await server?.stop()
  })

  it('fails within seconds, changing nothing, rather than queue every query of the table behind it for minutes; run again, it is applied', async () => {
    const migrate = () => runMigrations({ databaseUrl: server.url, relay: relay.address })
    await migrate()
    // The last migration (indexes on party_tickets and queue_claims) made pending again.
    await direct.query(`drop index party_tickets_byte_order_idx, party_tickets_noted_at_idx,
                          queue_claims_player_idx`)
    await direct.query(`delete from drizzle.__drizzle_migrations
                         where created_at = (select max(created_at) from drizzle.__drizzle_migrations)`)
    // A long transaction holds the table the migration indexes.
    const holder = new pg.Client(server.url)
    await holder.connect()
    try {
      await holder.query('begin')
      await holder.query('lock table party_tickets in access exclusive mode')
      const started = Date.now()
      // 55P03: lock_not_available, the lock timeout.
      await expect(migrate()).rejects.toMatchObject({ cause: { code: '55P03' } })
      expect(Date.now() - started).toBeLessThan(20_000)
    } finally {
      await holder.query('rollback')
      await holder.end()
    }
    const indexes = async () =>
      (
        await direct.query<{ indexname: string }>(
          `select indexname from pg_indexes where indexname in
             ('party_tickets_byte_order_idx', 'party_tickets_noted_at_idx', 'queue_claims_player_idx')
           order by indexname`,
        )
      ).rows.map((r) => r.indexname)
    expect(await indexes()).toEqual([])
    await migrate()
    expect(await indexes()).toEqual([
      'party_tickets_byte_order_idx',
      'party_tickets_noted_at_idx',
      'queue_claims_player_idx',
    ])
  })
})
