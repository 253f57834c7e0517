/** The longest an object's alarm waits after failed runs. */
export const MAX_ALARM_BACKOFF_MS = 60_000

/**
 * After an alarm run that failed (its `failures`-th in a row), keeps the next run at least a
 * backoff away (1 s doubling to MAX_ALARM_BACKOFF_MS): the objects catch a run's error and set the
 * alarm again for what is due, which after a fault that repeats is "now", again and again,
 * burning the object's CPU and the logs. A later alarm is left as it is.
 */
export async function backOffAlarm(
  storage: DurableObjectStorage,
  failures: number,
  now: number,
): Promise<void> {
  if (failures === 0) return
  const notBefore = now + Math.min(MAX_ALARM_BACKOFF_MS, 1000 * 2 ** Math.min(failures - 1, 16))
  const at = await storage.getAlarm()
  if (at !== null && at < notBefore) await storage.setAlarm(notBefore)
}
