import { log } from './log.ts'
import { ApiError } from './problem.ts'

/** Settings already reported missing or wrong in this isolate (tests clear it). */
export const reportedSettings = new Set<string>()

/**
 * The 503 for a setting the deployment lacks (or has wrong): logged at `error` once per isolate
 * and setting, since the request lines of 503s are `warn` (an object restarting, a service out of
 * reach) and every request would meet it.
 *
 * @example
 * if (!env.ADMIN_KEY) throw misconfigured('ADMIN_KEY', 'ADMIN_KEY is not configured')
 */
export function misconfigured(setting: string, detail: string): ApiError {
  if (!reportedSettings.has(setting)) {
    reportedSettings.add(setting)
    log('error', 'a setting is missing or wrong', { setting, detail })
  }
  return new ApiError('unavailable', detail)
}
