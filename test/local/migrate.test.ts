import { describe, expect, it } from 'vitest'
import { directConnectionString } from '../../scripts/migrate.ts'

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
