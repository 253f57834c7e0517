/**
 * Calls a Worker invocation may have open at once (fetch, and so Neon's HTTP queries): more wait
 * in line for one to close, and a query's deadline (NEON_QUERY_TIMEOUT_MS) runs while it waits.
 */
export const OPEN_CONNECTIONS = 6

/**
 * `Promise.allSettled` over `items`, at most `limit` calls of `fn` under way at once: a page of
 * two hundred Neon writes started together would wait in the runtime's line of six, and the last
 * would reach their 8 s deadline before they were sent.
 *
 * @example
 * const results = await settleAtMost(queues, OPEN_CONNECTIONS, (q) => pushOwed(env, q))
 */
export async function settleAtMost<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const results = new Array<PromiseSettledResult<R>>(items.length)
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i]!, i) }
      } catch (reason) {
        results[i] = { status: 'rejected', reason }
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane))
  return results
}
