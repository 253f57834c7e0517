import { ApiError } from '../lib/problem.ts'

/**
 * Opaque cursors of newest-first listings: base64url of a JSON array whose first item is the last
 * row's time as `isoMicros` gives it, then whatever else orders the rows.
 */
export function encodeTimeCursor(time: string, ...rest: (string | number)[]): string {
  return btoa(JSON.stringify([time, ...rest]))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
    .replace(/=+$/, '')
}

/**
 * The items of a cursor `encodeTimeCursor` made, after its time, checked by `rest` (which answers
 * them, or null when they are not what the listing issues); a forged or damaged cursor is 422
 * `validation`, never a database error.
 */
export function decodeTimeCursor<T>(
  cursor: string,
  rest: (items: unknown[]) => T | null,
): { time: string; rest: T } {
  try {
    const v = JSON.parse(atob(cursor.replace(/-/g, '+').replace(/_/g, '/'))) as unknown
    if (Array.isArray(v) && typeof v[0] === 'string' && isCursorTime(v[0])) {
      const tail = rest(v.slice(1))
      if (tail !== null) return { time: v[0], rest: tail }
    }
  } catch {
    // falls through to the error below
  }
  throw new ApiError('validation', 'cursor is not valid', {
    errors: [{ path: 'cursor', message: 'not a cursor this endpoint issued' }],
  })
}

/** A time as a cursor carries it: UTC to the microsecond, a real date after 1970. */
function isCursorTime(text: string): boolean {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/.test(text)) return false
  const t = Date.parse(text)
  // Date.parse rolls 30 February over into March; PostgreSQL refuses it.
  return t >= 0 && new Date(t).toISOString().slice(0, 19) === text.slice(0, 19)
}
