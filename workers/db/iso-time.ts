/**
 * A SQL expression for a timestamp column as the API gives times: ISO 8601 in UTC, to the
 * millisecond (`2026-12-05T08:00:00.000Z`), formatted by PostgreSQL so no row is parsed twice.
 * @example isoUtc('updated_at') // to_char(updated_at at time zone 'UTC', …)
 */
export const isoUtc = (column: string): string =>
  `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`

/**
 * A timestamp column to the microsecond, PostgreSQL's own precision, as newest-first cursors keep
 * it: a cursor rounded to the millisecond would skip or repeat rows created within one.
 * @example isoMicros('created_at') // 2026-12-05T08:00:00.123456Z
 */
export const isoMicros = (column: string): string =>
  `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`
