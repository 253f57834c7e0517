import { localFamilies } from '../../../workers/lib/metrics.ts'

/**
 * This isolate's total of a counter, or of a histogram's observations, over the series whose
 * labels include `labels` (the Worker and every Durable Object share the isolate in tests).
 */
export function metricTotal(name: string, labels: Record<string, string> = {}): number {
  const family = localFamilies().find((f) => f.name === name)
  if (!family) return 0
  const series = family.series as unknown as {
    labels: Record<string, string>
    value?: number
    count?: number
  }[]
  return series
    .filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((n, s) => n + (s.count ?? s.value ?? 0), 0)
}
