import { onTestFinished, vi } from 'vitest'
import { logFloor } from '../../../workers/lib/log.ts'

/**
 * The lines logged at `error` from now until the test ends, parsed, whatever LOG_LEVEL says: it
 * is silent in tests, and an object's start reads it before a test could change it.
 */
export function errorLines(): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = []
  const spy = vi.spyOn(console, 'error').mockImplementation((line: unknown) => {
    // Anything not ours (the runtime's own) is kept as its text: the logger must never throw.
    try {
      lines.push(JSON.parse(String(line)) as Record<string, unknown>)
    } catch {
      lines.push({ text: String(line) })
    }
  })
  logFloor.level = 'error'
  onTestFinished(() => {
    logFloor.level = null
    spy.mockRestore()
  })
  return lines
}
