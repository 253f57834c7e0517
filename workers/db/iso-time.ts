/**
 * A SQL expression for a timestamp column as the API gives times: ISO 8601 in UTC, to the
 * millisecond (`2026-12-05T08:00:00.000Z`), formatted by PostgreSQL so no row is parsed twice.
 * @example isoUtc('updated_at') // to_char(updated_at at time zone 'UTC', …)
 */
export const isoUtc = (column: string): string =>
  `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`
