import { getSql, type DbEnv } from '../db/client.ts'
import { sessionTimings } from '../../durable-objects/game-session.ts'
import { boundedInt } from '../lib/config.ts'
import { log } from '../lib/log.ts'

/**
 * Days an ended game's archived log (`session_logs`, every input of every game: the largest
 * table by far, about 30 KB a two-player dice game) is kept, from the session's creation; unset
 * or 0, for good. Results, ratings, the session's row and players' histories are kept either way:
 * a pruned session still lists and reads, with an empty log.
 */
export function sessionLogRetentionDays(env: { SESSION_LOG_RETENTION_DAYS?: string }): number {
  return boundedInt(env.SESSION_LOG_RETENTION_DAYS, 0, 0, 36_500)
}

const JOB = 'session-logs'
/** Sessions one statement looks at. */
const PRUNE_SESSIONS = 500
/**
 * Log rows one statement deletes at most: a relay game's log can hold 500,000 (docs/sessions.md),
 * and one statement must end well inside Neon's 8 s deadline whatever the games were.
 */
const PRUNE_ROWS = 20_000
/** A cron run deletes batches for at most this long (well inside its own time). */
const PRUNE_BUDGET_MS = 20_000
const DAY_MS = 86_400_000
/**
 * How long after a session's creation the walk reaches it, beyond the time its object keeps it
 * (SESSION_RETENTION_HOURS): a game's own length and its archive's, so that the walk finds the
 * games it passes cleared. One still uncleared there (a game lasting days, an archive held up by
 * an outage) keeps its log.
 */
const CLEARED_BY_MS = 2 * DAY_MS

/** What a run of the prune did. */
export interface LogPrune {
  /** Sessions the walk went over (their logs deleted, or passed over). */
  sessions: number
  rows: number
  /** Sessions passed over uncleared: they keep their logs for good. */
  passedOver: number
}

/**
 * For the cron: deletes the archived logs of sessions created more than
 * SESSION_LOG_RETENTION_DAYS ago, oldest first, within a time budget. The walk goes in
 * `game_sessions_created_idx` order from where the last statement stopped
 * (`maintenance_cursors`): the sessions behind it keep their rows, so finding the next ones reads
 * none of them again. Each statement deletes at most PRUNE_ROWS rows, the oldest sessions' logs
 * first, from each log's first event on, and moves the cursor past the sessions whose logs are
 * gone, in the same statement: a run cut off anywhere starts where the last statement ended, a
 * log too long for one statement is taken over several.
 *
 * Only a session whose object has been cleared (`setup_hash`: its whole log is in Neon) loses its
 * log: one still live or archiving is passed over and keeps it, rather than a part of it going (a
 * client reading it would find a gap). So the walk reaches a session only once its object has
 * had the time to clear it (SESSION_RETENTION_HOURS after the game, CLEARED_BY_MS more for the
 * game and its archive): with a retention no longer than that, the walk would pass every session
 * before it was cleared, and delete nothing ever.
 */
export async function pruneSessionLogs(
  env: DbEnv & { SESSION_LOG_RETENTION_DAYS?: string; SESSION_RETENTION_HOURS?: string },
  limits: { rowsPerStatement?: number; budgetMs?: number } = {},
): Promise<LogPrune> {
  const done: LogPrune = { sessions: 0, rows: 0, passedOver: 0 }
  const days = sessionLogRetentionDays(env)
  if (days === 0) return done
  const afterMs = Math.max(days * DAY_MS, sessionTimings(env).retentionMs + CLEARED_BY_MS)
  const rowsPerStatement = limits.rowsPerStatement ?? PRUNE_ROWS
  const deadline = Date.now() + (limits.budgetMs ?? PRUNE_BUDGET_MS)
  for (;;) {
    const [step] = (await getSql(env).query(
      `with cursor as (
         select coalesce((select at from maintenance_cursors where job = $1), '-infinity') as at,
                coalesce((select id from maintenance_cursors where job = $1), '') as id),
       batch as (
         select g.id, g.created_at,
                (g.status = 'finished' and g.setup_hash is not null) as cleared,
                (select min(l.seq) from session_logs l where l.session_id = g.id) as first_seq,
                (select max(l.seq) from session_logs l where l.session_id = g.id) as last_seq
           from game_sessions g, cursor
          where (g.created_at, g.id) > (cursor.at, cursor.id)
            and g.created_at < now() - make_interval(secs => $2)
          order by g.created_at, g.id limit $3),
       -- The seq range each cleared log still spans: what deleting it whole takes at most.
       spans as (
         select b.*, case when b.cleared and b.first_seq is not null
                          then b.last_seq - b.first_seq + 1 else 0 end as span
           from batch b),
       -- The statement's rows handed out oldest session first: whole logs, then a first part.
       shares as (
         select s.*, least(s.span, greatest($4 - (sum(s.span) over (order by s.created_at, s.id)
                                                  - s.span), 0)) as take
           from spans s),
       gone as (
         delete from session_logs l using shares s
          where s.take > 0 and l.session_id = s.id
            and l.seq >= s.first_seq and l.seq < s.first_seq + s.take
         returning 1),
       -- The first session whose log is not all gone: the cursor stops before it.
       held as (select created_at, id from shares where take < span
                 order by created_at, id limit 1),
       passed as (
         select s.created_at, s.id, s.cleared from shares s
          where not exists (select 1 from held h where (s.created_at, s.id) >= (h.created_at, h.id))),
       moved as (
         insert into maintenance_cursors (job, at, id)
         select $1, created_at, id from passed order by created_at desc, id desc limit 1
         on conflict (job) do update set at = excluded.at, id = excluded.id
         returning 1)
       select (select count(*) from passed)::int as sessions,
              (select count(*) from passed where not cleared)::int as passed_over,
              (select count(*) from gone)::int as rows,
              (select count(*) from batch)::int as looked_at,
              exists (select 1 from held) as held,
              (select count(*) from moved)::int as moved`,
      [JOB, afterMs / 1000, PRUNE_SESSIONS, rowsPerStatement],
    )) as {
      sessions: number
      passed_over: number
      rows: number
      looked_at: number
      held: boolean
      moved: number
    }[]
    done.sessions += step!.sessions
    done.rows += step!.rows
    done.passedOver += step!.passed_over
    if (Date.now() >= deadline) break
    // Held by a long log: its next part. Else on while the batches come back full.
    if (!step!.held && step!.looked_at < PRUNE_SESSIONS) break
  }
  if (done.passedOver > 0) {
    // Kept for good: the walk does not come back. Worth a look if it keeps happening.
    log('warn', 'session logs kept: sessions not cleared when the prune reached them', {
      sessions: done.passedOver,
    })
  }
  return done
}
