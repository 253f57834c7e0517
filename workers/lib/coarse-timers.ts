/**
 * Many waits that end at about the same time, on few timers. workerd refuses more than 10,000
 * active timeouts in one I/O context, and a Durable Object's context lasts its whole life: a pool
 * holding a long-poll per HTTP ticket can hold more than that, and a timer each then failed every
 * other timer the object set (a session's creation, a Neon call's deadline) until polls ended.
 * Waits end on a whole step of `stepMs`, up to one step late: one timer per step that holds any.
 */
export class CoarseTimers {
  private readonly steps = new Map<
    number,
    { timer: ReturnType<typeof setTimeout>; calls: Set<() => void> }
  >()

  private readonly stepMs: number

  constructor(stepMs: number) {
    this.stepMs = stepMs
  }

  /** Calls `fn` once about `ms` have passed; the function returned stops it first. */
  after(ms: number, fn: () => void): () => void {
    const at = Math.ceil((Date.now() + Math.max(0, ms)) / this.stepMs) * this.stepMs
    let step = this.steps.get(at)
    if (!step) {
      const calls = new Set<() => void>()
      const timer = setTimeout(
        () => {
          if (this.steps.get(at)?.calls === calls) this.steps.delete(at)
          for (const call of [...calls]) call()
        },
        Math.max(0, at - Date.now()),
      )
      step = { timer, calls }
      this.steps.set(at, step)
    }
    // Its own identity, so the same `fn` registered twice is stopped once per registration.
    const call = () => fn()
    const held = step
    held.calls.add(call)
    return () => {
      if (!held.calls.delete(call) || held.calls.size > 0) return
      clearTimeout(held.timer)
      if (this.steps.get(at) === held) this.steps.delete(at)
    }
  }
}
