import { execFile } from 'node:child_process'
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { startNeonRelay, type NeonRelay } from '../../local/neon-relay/index.ts'
import { startPostgres, type LocalPostgres } from '../../local/postgres.ts'
import { directConnectionString, runMigrations } from '../../scripts/migrate.ts'

/** A copy of the project's migrations in a folder removed when the test ends, with its journal. */
async function migrationsCopy() {
  const folder = await mkdtemp(join(tmpdir(), 'nexus-migrations-'))
  onTestFinished(() => rm(folder, { recursive: true, force: true }))
  await cp(fileURLToPath(new URL('../../migrations', import.meta.url)), folder, {
    recursive: true,
  })
  const journalPath = join(folder, 'meta', '_journal.json')
  const journal = JSON.parse(await readFile(journalPath, 'utf8')) as {
    entries: { idx: number; version: string; when: number; tag: string; breakpoints: boolean }[]
  }
  return { folder, journalPath, journal }
}

/**
 * A copy of the project's migrations with `added` ([tag, SQL]) after them, in a folder removed
 * when the test ends; `count`, how many migrations it holds.
 */
async function migrationsWith(
  added: readonly (readonly [string, string])[],
): Promise<{ folder: string; count: number }> {
  const { folder, journalPath, journal } = await migrationsCopy()
  const last = journal.entries[journal.entries.length - 1]!
  for (const [i, [tag, statement]] of added.entries()) {
    journal.entries.push({ ...last, idx: last.idx + 1 + i, when: last.when + 1 + i, tag })
    await writeFile(join(folder, `${tag}.sql`), statement)
  }
  await writeFile(journalPath, JSON.stringify(journal))
  return { folder, count: journal.entries.length }
}

/**
 * A new database on `server` holding the project's migrations up to `tag` (a deployment that
 * has not upgraded past it), with its URL and how many migrations the project has in all.
 */
async function databaseAt(
  server: LocalPostgres,
  relay: NeonRelay,
  name: string,
  tag: string,
): Promise<{ url: string; total: number }> {
  const admin = new pg.Client(server.url)
  await admin.connect()
  try {
    await admin.query(`create database ${name}`)
  } finally {
    await admin.end()
  }
  const url = new URL(server.url)
  url.pathname = `/${name}`
  const { folder, journalPath, journal } = await migrationsCopy()
  const upTo = journal.entries.findIndex((e) => e.tag === tag)
  if (upTo < 0) throw new Error(`no migration ${tag}`)
  const entries = journal.entries.slice(0, upTo + 1)
  await writeFile(journalPath, JSON.stringify({ ...journal, entries }))
  await runMigrations({ databaseUrl: url.href, relay: relay.address, migrationsFolder: folder })
  return { url: url.href, total: journal.entries.length }
}

describe('migrations connect directly, never through the pooler', () => {
  it('turns a Neon pooled connection string into the direct one, and leaves others as they are', () => {
    // The pooler runs in transaction mode: the migrator's session lock would not hold across it.
    expect(
      directConnectionString(
        'postgresql://app:pw@ep-cool-river-123456-pooler.eu-central-1.aws.neon.tech/nexus?sslmode=require',
      ),
    ).toBe(
      'postgresql://app:pw@ep-cool-river-123456.eu-central-1.aws.neon.tech/nexus?sslmode=require',
    )
    for (const same of [
      'postgresql://app:pw@ep-cool-river-123456.eu-central-1.aws.neon.tech/nexus?sslmode=require',
      'postgres://nexus:nexus@127.0.0.1:5432/nexus',
      'postgres://u:p@db-pooler.example.com/nexus',
    ]) {
      expect(directConnectionString(same)).toBe(same)
    }
  })
})

describe('a DATABASE_URL that is no URL', () => {
  it('`npm run db:migrate` says so without printing it: the password is in no line of its output (a CI log keeps them)', async () => {
    const secret = `pw#${crypto.randomUUID()}`
    const script = fileURLToPath(new URL('../../scripts/migrate.ts', import.meta.url))
    const run = await new Promise<{ code: number | null; output: string }>((resolve) => {
      execFile(
        process.execPath,
        [script],
        { env: { ...process.env, DATABASE_URL: `postgres://app:${secret}@ep-x.neon.tech/db` } },
        (err, stdout, stderr) =>
          resolve({
            code: err ? ((err as { code?: number }).code ?? 1) : 0,
            output: stdout + stderr,
          }),
      )
    })
    expect(run.code).toBe(1)
    expect(run.output).toContain('DATABASE_URL is not a URL')
    expect(run.output).not.toContain(secret.slice(3))
  })
})

describe('a migration waiting for a table in use', () => {
  let server: LocalPostgres
  let relay: NeonRelay
  let direct: pg.Client

  beforeAll(async () => {
    server = await startPostgres()
    relay = await startNeonRelay({ postgresPort: server.port })
    direct = new pg.Client(server.url)
    await direct.connect()
  })

  afterAll(async () => {
    await direct?.end()
    await relay?.close()
    await server?.stop()
  })

  /** A new database holding every migration of the project; its URL. */
  async function migratedDatabase(name: string): Promise<string> {
    await direct.query(`create database ${name}`)
    const url = new URL(server.url)
    url.pathname = `/${name}`
    await runMigrations({ databaseUrl: url.href, relay: relay.address })
    return url.href
  }

  it('fails within seconds, changing nothing, rather than queue every query of the table behind it for minutes; run again, it is applied', async () => {
    await runMigrations({ databaseUrl: server.url, relay: relay.address })
    // The project's migrations, and one more that indexes a table.
    const { folder } = await migrationsWith([
      [
        '9999_lock_wait_test',
        'CREATE INDEX "lock_wait_test_idx" ON "party_tickets" ("ticket_id");',
      ],
    ])
    const migrate = () =>
      runMigrations({ databaseUrl: server.url, relay: relay.address, migrationsFolder: folder })
    // A long transaction holds the table the migration indexes.
    const holder = new pg.Client(server.url)
    await holder.connect()
    try {
      await holder.query('begin')
      await holder.query('lock table party_tickets in access exclusive mode')
      const started = Date.now()
      // 55P03: lock_not_available, the lock timeout.
      await expect(migrate()).rejects.toMatchObject({ code: '55P03' })
      expect(Date.now() - started).toBeLessThan(20_000)
    } finally {
      await holder.query('rollback')
      await holder.end()
    }
    const built = async () =>
      (await direct.query(`select 1 from pg_indexes where indexname = 'lock_wait_test_idx'`))
        .rowCount
    expect(await built()).toBe(0)
    await migrate()
    expect(await built()).toBe(1)
  })

  it('a lock held past one lock wait, then let go, is waited out: the migration is tried again and applied', async () => {
    const url = new URL(await migratedDatabase('retried'))
    const { folder } = await migrationsWith([
      ['9999_retried', 'CREATE INDEX "9999_retried_idx" ON "party_tickets" ("ticket_id");'],
    ])
    const holder = new pg.Client(url.href)
    await holder.connect()
    const watcher = new pg.Client(url.href)
    await watcher.connect()
    try {
      await holder.query('begin')
      await holder.query('lock table party_tickets in access exclusive mode')
      const run = runMigrations({
        databaseUrl: url.href,
        relay: relay.address,
        migrationsFolder: folder,
      })
      run.catch(() => undefined)
      // Held until the migration has waited on it, then longer than one lock wait (2 s).
      const waiting = async () =>
        (
          await watcher.query(
            `select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid))`,
            [(await holder.query('select pg_backend_pid() as pid')).rows[0].pid],
          )
        ).rowCount! > 0
      for (let i = 0; i < 400 && !(await waiting()); i++) {
        await new Promise((r) => setTimeout(r, 25))
      }
      expect(await waiting()).toBe(true)
      // Past one lock wait: the first attempt has failed by then.
      await new Promise((r) => setTimeout(r, 2_500))
      await holder.query('rollback')
      await run
    } finally {
      await holder.query('rollback').catch(() => undefined)
      await holder.end()
    }
    expect(
      (await watcher.query(`select 1 from pg_indexes where indexname = '9999_retried_idx'`))
        .rowCount,
    ).toBe(1)
    await watcher.end()
  }, 40_000)

  it('a migration PostgreSQL makes give way in a deadlock with a live transaction (the same tables taken in the other order) is tried again and applied', async () => {
    const url = new URL(await migratedDatabase('deadlocked'))
    // The migration takes party_tickets, then queue_claims; the live transaction the other way.
    const { folder } = await migrationsWith([
      [
        '9999_deadlocked',
        'LOCK TABLE "party_tickets" IN SHARE MODE;--> statement-breakpoint\n' +
          'CREATE INDEX "9999_deadlocked_idx" ON "queue_claims" ("player_id");',
      ],
    ])
    const live = new pg.Client(url.href)
    await live.connect()
    const watcher = new pg.Client(url.href)
    await watcher.connect()
    try {
      await live.query('begin')
      // Writing queue_claims, as a join's claim does.
      await live.query('lock table queue_claims in row exclusive mode')
      const run = runMigrations({
        databaseUrl: url.href,
        relay: relay.address,
        migrationsFolder: folder,
      })
      run.catch(() => undefined)
      const livePid = (await live.query('select pg_backend_pid() as pid')).rows[0].pid
      const waiting = async () =>
        (
          await watcher.query(
            `select 1 from pg_stat_activity where $1 = any(pg_blocking_pids(pid))`,
            [livePid],
          )
        ).rowCount! > 0
      for (let i = 0; i < 400 && !(await waiting()); i++) {
        await new Promise((r) => setTimeout(r, 25))
      }
      expect(await waiting()).toBe(true)
      // The live transaction now writes party_tickets, which the migration holds: a deadlock,
      // found by the migration's backend (it has waited longer), which gives way.
      await live.query('lock table party_tickets in row exclusive mode')
      await live.query('commit')
      await run
    } finally {
      await live.query('rollback').catch(() => undefined)
      await live.end()
    }
    expect(
      (await watcher.query(`select 1 from pg_indexes where indexname = '9999_deadlocked_idx'`))
        .rowCount,
    ).toBe(1)
    await watcher.end()
  }, 40_000)

  it('applies each migration in a transaction of its own: one waiting for its table holds no lock of the ones before it, which stay applied if it fails', async () => {
    const url = new URL(await migratedDatabase('one_by_one'))
    // Two new ones: the first indexes queue_claims, the second party_tickets (held below).
    const { folder, count } = await migrationsWith([
      ['9998_first', 'CREATE INDEX "9998_first_idx" ON "queue_claims" ("player_id", "queue");'],
      ['9999_second', 'CREATE INDEX "9999_second_idx" ON "party_tickets" ("ticket_id");'],
    ])
    const db = new pg.Client(url.href)
    await db.connect()
    const holder = new pg.Client(url.href)
    await holder.connect()
    try {
      await holder.query('begin')
      await holder.query('lock table party_tickets in access exclusive mode')
      const run = runMigrations({
        databaseUrl: url.href,
        relay: relay.address,
        migrationsFolder: folder,
      }).then(
        () => 'applied',
        (err: unknown) => err,
      )
      const has = async (index: string) =>
        (await db.query(`select 1 from pg_indexes where indexname = $1`, [index])).rowCount === 1
      // The first is committed while the second still waits for its table ...
      for (let i = 0; i < 200 && !(await has('9998_first_idx')); i++) {
        await new Promise((r) => setTimeout(r, 25))
      }
      expect(await has('9998_first_idx')).toBe(true)
      expect(await has('9999_second_idx')).toBe(false)
      // ... and its table takes writes meanwhile (its index build's lock went with its commit).
      await db.query('begin')
      await db.query(`set local lock_timeout = '1s'`)
      await db.query('lock table queue_claims in row exclusive mode')
      await db.query('rollback')
      // The second fails on its lock wait; the first stays applied, and a run again brings the second.
      expect(await run).toMatchObject({ code: '55P03' })
      expect(await has('9998_first_idx')).toBe(true)
    } finally {
      await holder.query('rollback')
      await holder.end()
    }
    await runMigrations({ databaseUrl: url.href, relay: relay.address, migrationsFolder: folder })
    expect(
      (await db.query(`select 1 from pg_indexes where indexname = '9999_second_idx'`)).rowCount,
    ).toBe(1)
    const applied = await db.query(`select count(*)::int as n from drizzle.__drizzle_migrations`)
    expect(applied.rows[0].n).toBe(count)
    await db.end()
  }, 40_000)

  it('an index on a large table built by hand beforehand (create index concurrently) does not fail the run that brings it', async () => {
    // A deployment still at 0017, with many rewards: its operator builds 0018's index first.
    const { url, total } = await databaseAt(
      server,
      relay,
      'upgrade_by_hand',
      '0017_player_bans_device',
    )
    const db = new pg.Client(url)
    await db.connect()
    try {
      await db.query(
        `create index concurrently rewards_cycle_rank_idx on rewards (leaderboard_id, cycle, rank)`,
      )
      await runMigrations({ databaseUrl: url, relay: relay.address })
      const applied = await db.query(`select count(*)::int as n from drizzle.__drizzle_migrations`)
      expect(applied.rows[0].n).toBe(total)
    } finally {
      await db.end()
    }
  })
  it("0009's index built by hand beforehand (create index concurrently) does not fail the run that brings it either", async () => {
    const { url, total } = await databaseAt(
      server,
      relay,
      'upgrade_0009_by_hand',
      '0008_leaderboard_pushed_version',
    )
    const db = new pg.Client(url)
    await db.connect()
    try {
      await db.query(
        `create index concurrently rewards_board_recent_idx on rewards (leaderboard_id, created_at)`,
      )
      await runMigrations({ databaseUrl: url, relay: relay.address })
      const applied = await db.query(`select count(*)::int as n from drizzle.__drizzle_migrations`)
      expect(applied.rows[0].n).toBe(total)
    } finally {
      await db.end()
    }
  })

  it('a migration older than the newest applied that was never applied (one merged in behind a newer) fails the run naming it, applying nothing; 0026 recorded as first written counts as applied', async () => {
    const { url } = await databaseAt(
      server,
      relay,
      'upgrade_skipped',
      '0035_erasure_archive_cursor',
    )
    const db = new pg.Client(url)
    await db.connect()
    try {
      // A database that ran 0026 as first written: recorded under its first journal time.
      await db.query(
        `update drizzle.__drizzle_migrations set created_at = 1796460009877 where created_at = 1796461127098`,
      )
      const { folder, journalPath, journal } = await migrationsCopy()
      const at = journal.entries.findIndex((e) => e.tag === '0035_erasure_archive_cursor')
      const before = journal.entries[at]!
      // Generated before 0036 (an earlier time), merged in after it.
      journal.entries.splice(at + 1, 0, {
        ...before,
        idx: before.idx + 1,
        when: before.when - 1,
        tag: '0035a_studio_table',
      })
      await writeFile(join(folder, '0035a_studio_table.sql'), 'create table studio_table (id int)')
      await writeFile(journalPath, JSON.stringify(journal))
      await expect(
        runMigrations({ databaseUrl: url, relay: relay.address, migrationsFolder: folder }),
      ).rejects.toThrow(/never applied: 0035a_studio_table\./)
      const made = await db.query(
        `select 1 from pg_tables where tablename = 'studio_table' union all
         select 1 from drizzle.__drizzle_migrations where created_at > ${before.when}`,
      )
      expect(made.rowCount).toBe(0)
      // Without it, the same database takes the newer migrations: 0026 is not taken for skipped.
      await runMigrations({ databaseUrl: url, relay: relay.address })
      const newest = await db.query<{ n: string }>(
        'select max(created_at)::text as n from drizzle.__drizzle_migrations',
      )
      expect(Number(newest.rows[0]!.n)).toBe(journal.entries[journal.entries.length - 1]!.when)
    } finally {
      await db.end()
    }
  })

  it('a deployment that ran 0026 as first written loses the GIN index on rosters it built, which nothing reads', async () => {
    const { url } = await databaseAt(server, relay, 'upgrade_roster_gin', '0030_session_setup')
    const db = new pg.Client(url)
    await db.connect()
    try {
      await db.query(
        `create index game_sessions_roster_idx on game_sessions using gin (roster jsonb_path_ops)`,
      )
      await runMigrations({ databaseUrl: url, relay: relay.address })
      const left = await db.query(
        `select 1 from pg_indexes where indexname = 'game_sessions_roster_idx'`,
      )
      expect(left.rowCount).toBe(0)
    } finally {
      await db.end()
    }
  })

  it("0026 lists every player's sessions from before it, and PostgreSQL lists those of a Worker still on the version before", async () => {
    const { url } = await databaseAt(
      server,
      relay,
      'sessions_before_0026',
      '0025_erased_players_completed_at',
    )
    const db = new pg.Client(url)
    await db.connect()
    // As the Worker before 0026 lists a session.
    const list = (id: string, players: string[]) =>
      db.query(
        `insert into game_sessions (id, rules, roster, status, created_at)
         values ($1, 'relay', $2::jsonb, 'live', $3)`,
        [
          id,
          JSON.stringify(players.map((playerId, team) => ({ playerId, team }))),
          `2026-12-0${players.length}T10:00:00.123456Z`,
        ],
      )
    try {
      await list('before-a', ['ann', 'bo'])
      await list('before-b', ['ann', 'bo', 'cy'])
      await runMigrations({ databaseUrl: url, relay: relay.address })
      await list('after', ['cy'])
      const rows = await db.query(
        `select player_id, session_id, to_char(created_at at time zone 'UTC', 'DD') as day
           from session_players order by player_id, session_id`,
      )
      expect(rows.rows).toEqual([
        { player_id: 'ann', session_id: 'before-a', day: '02' },
        { player_id: 'ann', session_id: 'before-b', day: '03' },
        { player_id: 'bo', session_id: 'before-a', day: '02' },
        { player_id: 'bo', session_id: 'before-b', day: '03' },
        { player_id: 'cy', session_id: 'after', day: '01' },
        { player_id: 'cy', session_id: 'before-b', day: '03' },
      ])
    } finally {
      await db.end()
    }
  })

  it("0035 and 0036, the index waiting for leaderboard_cycles (a cycle's archive page being written), hold no lock on erased_players meanwhile, which every sign-in, join and result reads", async () => {
    const { url } = await databaseAt(
      server,
      relay,
      'erasure_reads_0035',
      '0034_party_tickets_ticket_index',
    )
    const holder = new pg.Client(url)
    const reader = new pg.Client(url)
    await holder.connect()
    await reader.connect()
    try {
      // A writer of leaderboard_cycles, mid-transaction: the index's build waits for it.
      await holder.query('begin')
      await holder.query('lock table leaderboard_cycles in row exclusive mode')
      const migrating = runMigrations({ databaseUrl: url, relay: relay.address })
      migrating.catch(() => {})
      const waiting = async () =>
        (
          await reader.query(
            `select 1 from pg_locks l join pg_class c on c.oid = l.relation
              where c.relname = 'leaderboard_cycles' and not l.granted`,
          )
        ).rowCount! > 0
      while (!(await waiting())) await new Promise((r) => setTimeout(r, 20))
      // Read as a sign-in does, with a wait far shorter than the migration's for its lock.
      await reader.query(`set lock_timeout = '500ms'`)
      const read = await reader.query('select count(*)::int as n from erased_players')
      expect(read.rows[0].n).toBe(0)
      await holder.query('rollback')
      await migrating
      const columns = await reader.query(
        `select column_name from information_schema.columns
          where table_name = 'erased_players' and column_name like 'archive_%' order by 1`,
      )
      expect(columns.rows.map((r: { column_name: string }) => r.column_name)).toEqual([
        'archive_board',
        'archive_cleared',
        'archive_cycle',
      ])
    } finally {
      await holder.end()
      await reader.end()
    }
  })

  it('0033 notes the players of the sessions live before it, and PostgreSQL keeps the note as sessions are listed, end and are deleted', async () => {
    const { url } = await databaseAt(server, relay, 'live_before_0033', '0032_maintenance_cursors')
    const db = new pg.Client(url)
    await db.connect()
    const list = (id: string, players: string[], status = 'live') =>
      db.query(
        `insert into game_sessions (id, rules, roster, status, created_at)
         values ($1, 'relay', $2::jsonb, $3, now())`,
        [id, JSON.stringify(players.map((playerId, team) => ({ playerId, team }))), status],
      )
    // As a result is recorded (workers/sessions/store.ts): the row listed, or made finished.
    const finish = (id: string, players: string[]) =>
      db.query(
        `insert into game_sessions (id, rules, roster, status, created_at, ended_at)
         values ($1, 'relay', $2::jsonb, 'finished', now(), now())
         on conflict (id) do update set status = 'finished',
           ended_at = coalesce(game_sessions.ended_at, excluded.ended_at)`,
        [id, JSON.stringify(players.map((playerId, team) => ({ playerId, team })))],
      )
    const live = async () =>
      (
        await db.query(
          `select player_id, session_id from live_session_players order by player_id, session_id`,
        )
      ).rows
    try {
      await list('live-before', ['ann', 'bo'])
      await list('ended-before', ['ann', 'cy'], 'finished')
      await runMigrations({ databaseUrl: url, relay: relay.address })
      expect(await live()).toEqual([
        { player_id: 'ann', session_id: 'live-before' },
        { player_id: 'bo', session_id: 'live-before' },
      ])
      await list('live-after', ['cy'])
      await finish('live-before', ['ann', 'bo'])
      // Recorded before it was ever listed: never live here.
      await finish('never-listed', ['dee'])
      expect(await live()).toEqual([{ player_id: 'cy', session_id: 'live-after' }])
      await db.query(`delete from game_sessions where id = 'live-after'`)
      expect(await live()).toEqual([])
    } finally {
      await db.end()
    }
  })
})
