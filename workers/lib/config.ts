/**
 * An integer setting from the environment within bounds, or its default when missing or out
 * of bounds (a typo in a variable must not turn a limit off).
 *
 * @example
 * boundedInt(env.GUEST_AUTH_PER_MINUTE, 30, 1, 10_000)
 */
export function boundedInt(
  raw: string | undefined,
  fallback: number,
  min: number,
  max: number,
): number {
  const n = Number(raw)
  return raw !== undefined && raw !== '' && Number.isInteger(n) && n >= min && n <= max
    ? n
    : fallback
}
