import { onTestFinished, vi } from 'vitest'
import { logFloor, type LogLevel } from '../../../workers/lib/log.ts'

/**
 * The lines logged at `error` from now until the test ends, parsed, whatever LOG_LEVEL says: it
 * is silent in tests, and an object's start reads it before a test could change it.
 */
export function errorLines(): Record<string, unknown>[] {
  return logLines('error')
}

/** The lines logged at `level` and above from now until the test ends, parsed (see errorLines). */
export function logLines(level: LogLevel): Record<string, unknown>[] {
  const lines: Record<string, unknown>[] = []
  const keep = (line: unknown) => {
    // Anything not ours (the runtime's own) is kept as its text: the logger must never throw.
    try {
      lines.push(JSON.parse(String(line)) as Record<string, unknown>)
    } catch {
      lines.push({ text: String(line) })
    }
  }
  const spies = (['error', 'warn', 'log'] as const).map((method) =>
    vi.spyOn(console, method).mockImplementation(keep),
  )
  logFloor.level = level
  onTestFinished(() => {
    logFloor.level = null
    for (const spy of spies) spy.mockRestore()
  })
  return lines
}
