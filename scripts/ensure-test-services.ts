/**
 * Runs before `npm test`: the tests need a real redis-server and a Chromium for the dashboard's
 * browser tests, and prefer Debian's PostgreSQL (they fall back to the embedded one). On a Debian
 * machine where we are root, missing packages are installed with apt-get; elsewhere we say what
 * to install and stop.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, readdirSync } from 'node:fs'

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

/** Ubuntu's `chromium` package is a snap wrapper, which does not run without snapd (containers). */
function isUbuntu(): boolean {
  try {
    return /^ID=ubuntu$/m.test(readFileSync('/etc/os-release', 'utf8'))
  } catch {
    return false
  }
}

const CHROMIUM_HINT =
  'Chromium for the browser tests (Debian: apt-get install chromium; elsewhere set CHROMIUM_PATH to a ' +
  'Chrome or Chromium binary; macOS: CHROMIUM_PATH="/Applications/Google Chrome.app/Contents/MacOS/Google Chrome")'

const missing: string[] = []
if (!onPath('redis-server')) missing.push('redis-server')
if (!hasDebianPostgres()) missing.push('postgresql')
const chromium = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
if (!existsSync(chromium)) missing.push('chromium')

if (missing.length > 0) {
  const canApt = process.getuid?.() === 0 && onPath('apt-get')
  if (canApt) {
    const viaApt = isUbuntu() ? missing.filter((m) => m !== 'chromium') : missing
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
    if (viaApt.length > 0) {
      console.log(`[nexus] installing ${viaApt.join(', ')} with apt-get for the tests`)
      try {
        // A fresh machine's unattended upgrades may hold dpkg's lock for minutes: waited for.
        const lockWait = ['-o', 'DPkg::Lock::Timeout=300']
        // The lists' lock `update` takes has no timeout of its own: tried again for 5 minutes.
        for (let attempt = 1; ; attempt++) {
          try {
            execFileSync('apt-get', [...lockWait, 'update', '-qq'], { stdio: 'inherit', env })
            break
          } catch (err) {
            if (attempt >= 30) throw err
            console.warn('[nexus] apt-get update failed (its lock held?): again in 10 s')
            execFileSync('sleep', ['10'])
          }
        }
        execFileSync(
          'apt-get',
          [...lockWait, 'install', '-y', '-qq', '--no-install-recommends', ...viaApt],
          { stdio: 'inherit', env },
        )
      } catch (err) {
        // PostgreSQL alone has a fallback (the embedded one); the others do not.
        if (viaApt.some((m) => m !== 'postgresql')) throw err
        console.warn('[nexus] apt-get failed: the tests run on the embedded PostgreSQL instead')
      }
    }
    if (viaApt.length < missing.length) {
      console.error(`[nexus] the tests need ${CHROMIUM_HINT}.`)
      process.exit(1)
    }
  } else if (missing.includes('redis-server') || missing.includes('chromium')) {
    console.error(
      '[nexus] the tests need redis-server on PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) ' +
        `and ${CHROMIUM_HINT}.`,
    )
    process.exit(1)
  } else {
    console.log(
      '[nexus] Debian PostgreSQL not found: the tests use the embedded PostgreSQL instead.',
    )
  }
}
