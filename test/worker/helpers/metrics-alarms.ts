import { onTestFinished } from 'vitest'
import { setMetricsAlarms } from '../../../workers/lib/metrics-flush.ts'

/**
 * For a test of metrics bringing an object's alarm forward, as they do deployed: the worker
 * tests run with it off (test/worker/setup.ts), since most pin objects' alarms to their own
 * deadlines on clocks of their own.
 */
export function withMetricsAlarms(): void {
  setMetricsAlarms(true)
  onTestFinished(() => setMetricsAlarms(false))
}
