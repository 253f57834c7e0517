import { ApiError } from './problem.ts'

/**
 * What a configuration PUT does when an object it pushed to runs another configuration at the
 * PUT's version or a later one (`held`, the highest such): either another PUT saved one since,
 * which is in force (409 `conflict`), or Neon's version count went back (restored from a backup,
 * a new database), and the PUT takes a version past the object's. `advance` moves Neon's version
 * from `from` to `to`, or answers null when it is no longer `from` (another PUT saved one since).
 * Returns the version to push again.
 */
export async function versionPastOverrule(
  id: string,
  version: number,
  held: number,
  advance: (from: number, to: number) => Promise<number | null>,
): Promise<number> {
  const advanced = await advance(version, Math.max(held, version) + 1)
  if (advanced === null) throw overruled(id)
  return advanced
}

/** The 409 of a PUT whose configuration another one, saved meanwhile, replaced where it runs. */
export function overruled(id: string): ApiError {
  return new ApiError(
    'conflict',
    `Another configuration of '${id}' was saved while this one was pushed, and is in force: ` +
      'read it and send yours again',
  )
}
