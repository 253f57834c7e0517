/**
 * Starts one local Nexus (PostgreSQL behind the Neon relay, Redis behind the Upstash endpoint,
 * `wrangler dev` on 127.0.0.1) for the e2e project, and provides its address and admin key.
 */
import type { TestProject } from 'vitest/node'
import { startStack } from '../../bench/lib/stack.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    stack: { url: string; adminKey: string }
  }
}

export default async function setup(project: TestProject) {
  const stack = await startStack({
    // What `npm run dev` runs: wrangler dev, proxy included.
    runtime: 'wrangler',
    redis: true,
    // Every test signs in from 127.0.0.1: the per-address guest limit would throttle the suite.
    vars: {
      GUEST_AUTH_PER_MINUTE: '10000',
      EDGE_SUBMITS_PER_MINUTE: '100000',
      FRESH_READS_PER_MINUTE: '1000000',
    },
  })
  project.provide('stack', { url: stack.url, adminKey: stack.adminKey })
  return () => stack.stop()
}
