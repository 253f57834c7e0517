/**
 * A random (v4) UUID: `crypto.randomUUID` where the platform has it, else built from
 * `crypto.getRandomValues` (plain-http pages and Safari 15.0–15.3 have no `randomUUID`).
 */
export function randomUUID(): string {
  // React Native's engine has no `crypto` without a polyfill: say so, rather than a
  // ReferenceError, and never fall back to Math.random (a guest's device id is its credential).
  if (typeof crypto === 'undefined' || typeof crypto.getRandomValues !== 'function') {
    throw new Error(
      'No crypto.getRandomValues on this platform: on React Native, import ' +
        "'react-native-get-random-values' before the Nexus client",
    )
  }
  if (typeof crypto.randomUUID === 'function') return crypto.randomUUID()
  const b = crypto.getRandomValues(new Uint8Array(16))
  b[6] = (b[6]! & 0x0f) | 0x40 // version 4
  b[8] = (b[8]! & 0x3f) | 0x80 // RFC 4122 variant
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/**
 * The error a timed-out request is aborted with: a `DOMException` named `TimeoutError`, or an
 * Error of that name where there is no `DOMException` (React Native's Hermes).
 */
export function timeoutError(): Error {
  const message = 'The operation timed out.'
  if (typeof DOMException === 'function') return new DOMException(message, 'TimeoutError')
  const err = new Error(message)
  err.name = 'TimeoutError'
  return err
}
