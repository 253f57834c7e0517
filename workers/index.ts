import { createApp } from './app.ts'
import type { Env } from './env.ts'
import { sendMetricsIfDue } from './lib/metrics-flush.ts'
import { runScheduled } from './scheduled.ts'

export { GameSession } from '../durable-objects/game-session.ts'
export { Leaderboard } from '../durable-objects/leaderboard.ts'
export { MatchPool } from '../durable-objects/match-pool.ts'
export { MetricsHub } from '../durable-objects/metrics-hub.ts'

const app = createApp()

export default {
  fetch: app.fetch,
  scheduled(controller, env, ctx) {
    ctx.waitUntil(runScheduled(env, controller.scheduledTime).finally(() => sendMetricsIfDue(env)))
  },
} satisfies ExportedHandler<Env>
