/**
 * JSON with object keys sorted at every depth (keys holding `undefined` left out, as
 * JSON.stringify leaves them): equal values give equal text whatever their key order, so request
 * hashes and idempotency comparisons do not depend on how a client ordered its fields.
 */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null'
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`
  const o = v as Record<string, unknown>
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`
}
