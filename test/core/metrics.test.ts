import { describe, expect, it } from 'vitest'
import { counter, renderMetrics } from '../../workers/lib/metrics.ts'

describe('metrics registry', () => {
  it('counts the same labels written in any order as one series', () => {
    const c = counter('nexus_test_label_order_total', 'test')
    c.inc({ route: '/a', method: 'GET', status: 200 })
    c.inc({ status: 200, method: 'GET', route: '/a' })
    c.inc({ method: 'GET', route: '/a', status: 200 })
    expect(c.get({ route: '/a', status: 200, method: 'GET' })).toBe(3)
    const lines = renderMetrics()
      .split('\n')
      .filter((l) => l.startsWith('nexus_test_label_order_total{'))
    expect(lines).toEqual(['nexus_test_label_order_total{method="GET",route="/a",status="200"} 3'])
  })
})
