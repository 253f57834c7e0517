/**
 * A closed-loop HTTP load generator: `concurrency` workers each send a request, wait for the
 * answer, and send the next, for `durationMs`. Latencies are recorded per request.
 */
export interface LoadResult {
  requests: number
  errors: number
  durationMs: number
  throughput: number
  latenciesMs: number[]
}

export async function runLoad(opts: {
  concurrency: number
  durationMs: number
  /** Sends request number `i`; resolves to whether it succeeded. */
  send: (i: number) => Promise<boolean>
}): Promise<LoadResult> {
  const latencies: number[] = []
  let next = 0
  let errors = 0
  const started = performance.now()
  const deadline = started + opts.durationMs
  await Promise.all(
    Array.from({ length: opts.concurrency }, async () => {
      while (performance.now() < deadline) {
        const i = next++
        const t0 = performance.now()
        let ok = false
        try {
          ok = await opts.send(i)
        } catch {
          ok = false
        }
        latencies.push(performance.now() - t0)
        if (!ok) errors++
      }
    }),
  )
  const durationMs = performance.now() - started
  return {
    requests: latencies.length,
    errors,
    durationMs,
    throughput: (latencies.length / durationMs) * 1000,
    latenciesMs: latencies,
  }
}

/** The q-quantile (0..1) of numbers, by nearest rank. */
export function quantile(values: readonly number[], q: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

export function median(values: readonly number[]): number {
  return quantile(values, 0.5)
}

export function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : 'n/a'
}

/** A numeric command-line option `--name value`, or its default when absent or not a number. */
export function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`)
  const v = i > 0 ? Number(process.argv[i + 1]) : NaN
  return Number.isFinite(v) ? v : fallback
}
