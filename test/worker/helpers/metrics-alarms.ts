import { onTestFinished } from 'vitest'
import { setMetricsAlarms } from '../../../workers/lib/metrics-flush.ts'

/**
 * For a test that pins an object's alarm to the object's own deadlines: metrics waiting to be
 * sent do not bring it forward meanwhile (they would, by the real clock, within 10 s).
 */
export function withoutMetricsAlarms(): void {
  setMetricsAlarms(false)
  onTestFinished(() => setMetricsAlarms(true))
}
