import { z } from '@hono/zod-openapi'
import { numberArrayLiteral } from '../db/array-literal.ts'
import { ApiError } from './problem.ts'

/**
 * A configuration's entity tag: its version. Versions only grow, a deletion's and a making
 * again's included, so a tag never names two configurations of one id.
 */
export function versionTag(version: number): string {
  return `"${version}"`
}

/**
 * `*`, or one to 20 tags as `versionTag` writes them, comma-separated; each may come weak
 * (`W/"7"`): Cloudflare weakens a strong ETag when it compresses an answer (a browser's), and the
 * tag names a version, not bytes, so the weak one names the same configuration.
 */
const TAG = '(?:W/)?"\\d{1,15}"'
const IF_MATCH = new RegExp(`^(?:\\*|${TAG}(?:[ \\t]*,[ \\t]*${TAG}){0,19})$`)

export const IfMatchHeader = z
  .string()
  .max(512)
  .regex(IF_MATCH, 'must be * or up to 20 ETags as given, comma-separated ("7", W/"7")')
  .optional()
  .openapi({
    description:
      'Change the configuration only if its version is one of these (the `ETag` of a read or a ' +
      'PUT), or `*`: only if it exists. Otherwise 412 `precondition-failed`, with `version`, the ' +
      'one in force; a retry whose first try landed (the configuration in force is this body) ' +
      'answers as that try did',
    example: '"7"',
  })

/** What an `If-Match` asks of a configuration's version: any (`*`), or one of these. */
export type IfMatch = { anyVersion: true } | { versions: number[] }

/**
 * The header as `IfMatchHeader` let it through; undefined when there is none. `raw` is the
 * header as sent: an empty one (a tool's unset variable) is refused, not taken for none, which
 * would overwrite whatever is in force (when it arrives: workerd drops an empty header over HTTP).
 */
export function readIfMatch(
  header: string | undefined,
  raw: string | undefined,
): IfMatch | undefined {
  if (raw === '') {
    throw new ApiError('validation', 'If-Match is empty', {
      errors: [{ path: 'if-match', message: 'must be * or up to 20 ETags as given ("7")' }],
    })
  }
  if (header === undefined) return undefined
  if (header === '*') return { anyVersion: true }
  return {
    versions: header.split(',').map((tag) => Number(tag.trim().replace(/^W\//, '').slice(1, -1))),
  }
}

/**
 * The precondition as one SQL parameter, for `versionWanted`: null for none, `{}` for any
 * version, else the versions.
 */
export function ifMatchParam(ifMatch: IfMatch | undefined): string | null {
  if (ifMatch === undefined) return null
  return numberArrayLiteral('anyVersion' in ifMatch ? [] : ifMatch.versions)
}

/** SQL: whether `version` (a column) satisfies the precondition `param` (from ifMatchParam). */
export function versionWanted(version: string, param: string): string {
  return `(${param}::bigint[] is null or cardinality(${param}::bigint[]) = 0
    or ${version} = any(${param}::bigint[]))`
}

/** Whether a configuration in force at `version` satisfies the precondition. */
export function ifMatchHolds(ifMatch: IfMatch | undefined, version: number): boolean {
  return ifMatch === undefined || 'anyVersion' in ifMatch || ifMatch.versions.includes(version)
}

/** The 412 of a write whose `If-Match` does not hold; `version` is the one in force, if any. */
export function preconditionFailed(what: string, version: number | null): ApiError {
  return new ApiError(
    'precondition-failed',
    version === null
      ? `There is no ${what} to change (If-Match needs one)`
      : `The ${what} is at version ${version} now, not one If-Match names: read it again`,
    { version },
    version === null ? {} : { etag: versionTag(version) },
  )
}
