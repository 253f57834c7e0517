/**
 * Runs before `npm test`: the tests need a real redis-server and a Chromium for the dashboard's
 * browser tests, and prefer Debian's PostgreSQL (they fall back to the embedded one). On a Debian
 * machine where we are root, missing packages are installed with apt-get; elsewhere we say what
 * to install and stop.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readdirSync } from 'node:fs'

function onPath(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

function hasDebianPostgres(): boolean {
  try {
    return readdirSync('/usr/lib/postgresql').some((v) =>
      existsSync(`/usr/lib/postgresql/${v}/bin/postgres`),
    )
  } catch {
    return false
  }
}

const missing: string[] = []
if (!onPath('redis-server')) missing.push('redis-server')
if (!hasDebianPostgres()) missing.push('postgresql')
const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
if (!existsSync(chromium)) missing.push('chromium')

if (missing.length > 0) {
  const canApt = process.getuid?.() === 0 && onPath('apt-get')
  if (canApt) {
    console.log(`[nexus] installing ${missing.join(', ')} with apt-get for the tests`)
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    try {
      execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
      execFileSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], {
        stdio: 'inherit',
        env,
      })
    } catch (err) {
      // PostgreSQL alone has a fallback (the embedded one); the others do not.
      if (missing.some((m) => m !== 'postgresql')) throw err
      console.warn('[nexus] apt-get failed: the tests run on the embedded PostgreSQL instead')
    }
  } else if (missing.includes('redis-server') || missing.includes('chromium')) {
    console.error(
      '[nexus] the tests need redis-server on PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) ' +
        'and Chromium for the browser tests (apt-get install chromium, or set CHROMIUM_PATH to a Chrome or ' +
        'Chromium binary; macOS: CHROMIUM_PATH="/Applications/Google Chrome.app/Contents/MacOS/Google Chrome").',
    )
    process.exit(1)
  } else {
    console.log(
      '[nexus] Debian PostgreSQL not found: the tests use the embedded PostgreSQL instead.',
    )
  }
}
