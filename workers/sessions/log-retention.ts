import { getSql, type DbEnv } from '../db/client.ts'
import { boundedInt } from '../lib/config.ts'

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
/** Sessions whose logs one statement deletes (some 55 rows each for a dice game). */
const PRUNE_SESSIONS = 500
/** A cron run deletes batches for at most this long (well inside its own time). */
const PRUNE_BUDGET_MS = 20_000

/**
 * For the cron: deletes the archived logs of sessions created more than
 * SESSION_LOG_RETENTION_DAYS ago, oldest first, a batch of sessions at a time while batches come
 * back full, within a time budget. The walk goes in `game_sessions_created_idx` order from where
 * the last batch stopped (`maintenance_cursors`): the sessions behind it keep their rows, so
 * finding the next batch reads none of them again. A batch's delete and the cursor's move are one
 * statement; a run cut off between batches starts where the last one ended. Only a session whose
 * object has been cleared (`setup_hash`: its whole log is in Neon) loses its log: one still live
 * or archiving past the retention (a long relay, an outage) is passed over and keeps its log,
 * rather than a part of it going (a client reading it would find a gap).
 */
export async function pruneSessionLogs(env: DbEnv & { SESSION_LOG_RETENTION_DAYS?: string }) {
  const days = sessionLogRetentionDays(env)
  if (days === 0) return { sessions: 0, rows: 0 }
  const deadline = Date.now() + PRUNE_BUDGET_MS
  const done = { sessions: 0, rows: 0 }
  for (;;) {
    const [batch] = (await getSql(env).query(
      `with cursor as (
         select coalesce((select at from maintenance_cursors where job = $1), '-infinity') as at,
                coalesce((select id from maintenance_cursors where job = $1), '') as id),
       batch as (
         select g.id, g.created_at,
                (g.status = 'finished' and g.setup_hash is not null) as cleared
           from game_sessions g, cursor
          where (g.created_at, g.id) > (cursor.at, cursor.id)
            and g.created_at < now() - make_interval(days => $2)
          order by g.created_at, g.id limit $3),
       gone as (
         delete from session_logs l using batch
          where l.session_id = batch.id and batch.cleared returning 1),
       moved as (
         insert into maintenance_cursors (job, at, id)
         select $1, created_at, id from batch order by created_at desc, id desc limit 1
         on conflict (job) do update set at = excluded.at, id = excluded.id
         returning 1)
       select (select count(*) from batch)::int as sessions,
              (select count(*) from gone)::int as rows,
              (select count(*) from moved)::int as moved`,
      [JOB, days, PRUNE_SESSIONS],
    )) as { sessions: number; rows: number }[]
    done.sessions += batch!.sessions
    done.rows += batch!.rows
    if (batch!.sessions < PRUNE_SESSIONS || Date.now() >= deadline) return done
  }
}
