import { cloudflareTest } from '@cloudflare/vitest-plugin'
import { defineConfig } from 'vitest/config'

/**
 * Three projects:
 * - `core`: pure logic (rank index, cycles, matching, ratings, rules) in plain Node.
 * - `local`: the local Neon relay and Upstash REST endpoint, against real servers, in Node.
 * - `worker`: the Worker and its Durable Objects inside workerd, against real PostgreSQL and Redis
 *   started by `test/global-setup.ts` and reached through the real Neon and Upstash clients.
 */
export default defineConfig({
  test: {
    // At the root, not in the worker project: the project's workerd resolve conditions would
    // give Node-side setup code the browser builds of its packages.
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        test: {
          name: 'core',
          include: ['test/core/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        test: {
          name: 'local',
          include: ['test/local/**/*.test.ts'],
          environment: 'node',
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          environment: 'node',
          // One local stack (PostgreSQL, Redis, wrangler dev) for every e2e file.
          globalSetup: ['test/e2e/stack-setup.ts'],
          fileParallelism: false,
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
      {
        plugins: [
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: './wrangler.toml' },
            miniflare: {
              bindings: {
                ...inject('services'),
                AUTH_SECRET: 'test-auth-secret-0123456789abcdef0123456789',
                ADMIN_KEY: 'test-admin-key',
                METRICS_TOKEN: 'test-metrics-token',
                GUEST_AUTH: 'on',
                LOG_LEVEL: 'silent',
                // Tests read fresh (no-cache) far more often than a client may; the limit's own
                // test sets its value.
                FRESH_READS_PER_MINUTE: '1000000',
                // Not the defaults (60 s, 120 s, 24 h), so session-timings.test.ts can tell that
                // configured values take effect; tests that move clocks by the defaults still pass.
                SESSION_GRACE_SECONDS: '30',
                SESSION_JOIN_GRACE_SECONDS: '90',
                SESSION_RETENTION_HOURS: '12',
              },
            },
          })),
        ],
        test: {
          name: 'worker',
          include: ['test/worker/**/*.test.ts'],
          setupFiles: ['test/worker/setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
        },
      },
    ],
  },
})
