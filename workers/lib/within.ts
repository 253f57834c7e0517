/** What `within` rejects with once its time is up: no answer yet, not a failure of the call. */
export class NoAnswerInTime extends Error {}

/** `promise`, or a rejection once `ms` have passed without its answer (`what` names it). */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new NoAnswerInTime(`${what} took over ${ms} ms`)), ms)
      }),
    ])
  } finally {
    clearTimeout(timer)
  }
}
