import type { Env as NexusEnv } from '../workers/env.ts'

declare global {
  namespace Cloudflare {
    // The bindings the tests see are the Worker's own, plus the services the global setup provides.
    interface Env extends NexusEnv {
      TEST_IDP_PRIVATE_JWK?: string
      TEST_IDP_NEXT_PRIVATE_JWK?: string
      TEST_UNREACHABLE_DATABASE_URL?: string
      TEST_UNREACHABLE_NEON_RELAY?: string
      /** A Neon relay that takes requests and never answers. */
      TEST_SILENT_NEON_RELAY?: string
      TEST_SILENT_DATABASE_URL?: string
      /** A token of the test Redis that runs reads only (writes refused, NOPERM). */
      TEST_READ_ONLY_UPSTASH_TOKEN?: string
    }
  }
}
