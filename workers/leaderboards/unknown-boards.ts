/**
 * Board ids a board object said nobody created, remembered by this isolate for a moment, so that
 * reads and submissions naming made-up ids (a typo in a client, or a script trying ids) are
 * answered 404 here instead of each waking an object that asks Neon and then drops itself.
 * Remembered no longer than a live read may be stale (4 s): a board created meanwhile in another
 * isolate is seen as soon as a cached read of it would be; this isolate's own PUT forgets it.
 */
const REMEMBER_MS = 4_000
/** Ids remembered at most; the oldest go first (a Map keeps insertion order). */
const MAX_REMEMBERED = 1_000

const unknownUntil = new Map<string, number>()

/** Whether `id` was answered unknown by its board less than REMEMBER_MS ago. */
export function knownUnknown(id: string, now = Date.now()): boolean {
  const until = unknownUntil.get(id)
  if (until === undefined) return false
  if (now < until) return true
  unknownUntil.delete(id)
  return false
}

export function rememberUnknown(id: string, now = Date.now()): void {
  unknownUntil.delete(id)
  unknownUntil.set(id, now + REMEMBER_MS)
  if (unknownUntil.size > MAX_REMEMBERED) unknownUntil.delete(unknownUntil.keys().next().value!)
}

/** A board just created (or configured) here: no longer unknown. */
export function forgetUnknown(id: string): void {
  unknownUntil.delete(id)
}
