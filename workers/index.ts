import { createApp } from './app.ts'
import type { Env } from './env.ts'
import { errorFields, log } from './lib/log.ts'
import { sendMetrics } from './lib/metrics-flush.ts'
import { runScheduled } from './scheduled.ts'

export { GameSession } from '../durable-objects/game-session.ts'
export { Leaderboard } from '../durable-objects/leaderboard.ts'
export { MatchPool } from '../durable-objects/match-pool.ts'
export { MetricsHub } from '../durable-objects/metrics-hub.ts'

const app = createApp()

export default {
  fetch: app.fetch,
  // Awaited, not handed to waitUntil: a cron invocation runs for as long as its handler's own
  // promise (up to 15 minutes), where work left to waitUntil may be cut off 30 s after it returns.
  async scheduled(controller, env, _ctx) {
    try {
      await runScheduled(env, controller.scheduledTime, controller.cron)
    } finally {
      // Now, not when due: a run's counts (a board whose alarm was lost) would otherwise wait
      // for this isolate's next request, and go with it if the isolate is evicted first.
      await sendMetrics(env).catch((err: unknown) => {
        log('warn', 'metrics not sent after the cron run', errorFields(err))
      })
    }
  },
} satisfies ExportedHandler<Env>
