/**
 * Where a queue region's matchmaking pool, and the game sessions it makes, should live.
 *
 * Cloudflare creates a Durable Object near whoever first calls it, and it never moves. A pool's
 * first call is the configuration push of the operator's `PUT /v1/admin/queues/:queue`, and a
 * session's first call comes from its pool: without a hint, a queue configured from one continent
 * would host every region's pool and game there, and each of its players' actions would cross an
 * ocean. A region named for a Cloudflare location hint (`weur`, `enam`, …), or with one of the
 * common names below, asks for that location when its objects are created. Any other name gets
 * no hint (placed near the first caller, as before). A hint is a preference, not a guarantee, and
 * an object that already exists stays where it is.
 */

/** Cloudflare's Durable Object location hints. */
export const LOCATION_HINTS = [
  'wnam',
  'enam',
  'sam',
  'weur',
  'eeur',
  'apac',
  'apac-ne',
  'apac-se',
  'oc',
  'afr',
  'me',
] as const

export type LocationHint = (typeof LOCATION_HINTS)[number]

/** Region names studios use, and the hint each stands for. */
export const REGION_ALIASES: Readonly<Record<string, LocationHint>> = {
  eu: 'weur',
  europe: 'weur',
  'eu-west': 'weur',
  'eu-central': 'weur',
  'eu-north': 'weur',
  'eu-east': 'eeur',
  us: 'enam',
  na: 'enam',
  'us-east': 'enam',
  'na-east': 'enam',
  'us-central': 'enam',
  'us-west': 'wnam',
  'na-west': 'wnam',
  sa: 'sam',
  latam: 'sam',
  'south-america': 'sam',
  asia: 'apac',
  ap: 'apac',
  'asia-east': 'apac-ne',
  'asia-northeast': 'apac-ne',
  'asia-southeast': 'apac-se',
  au: 'oc',
  oce: 'oc',
  oceania: 'oc',
  af: 'afr',
  africa: 'afr',
  'middle-east': 'me',
  mena: 'me',
}

const HINTS: ReadonlySet<string> = new Set(LOCATION_HINTS)

/**
 * The location hint a region's name asks for, or null for a name that is none.
 *
 * @example
 * locationHintFor('eu') // 'weur'
 * locationHintFor('enam') // 'enam'
 * locationHintFor('shard-7') // null
 */
export function locationHintFor(region: string): LocationHint | null {
  if (HINTS.has(region)) return region as LocationHint
  return Object.hasOwn(REGION_ALIASES, region) ? REGION_ALIASES[region]! : null
}
