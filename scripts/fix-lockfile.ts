/**
 * Run after `npm install` changes dependencies (`npx node scripts/fix-lockfile.ts`: the pinned Node 22, which runs TypeScript).
 *
 * The npm mirror this project is built against lacks workerd's macOS and Windows builds, so npm
 * leaves them out of package-lock.json and `npm ci` then calls the lock out of sync. This records
 * them as optional, platform-gated entries; on a machine of that platform npm fetches them from
 * the public registry as usual. See docs/decisions.md (Toolchain).
 */
import { readFileSync, writeFileSync } from 'node:fs'

interface LockPackage {
  version?: string
  optionalDependencies?: Record<string, string>
  [key: string]: unknown
}

const platforms: Record<string, [os: string, cpu: string]> = {
  'darwin-64': ['darwin', 'x64'],
  'darwin-arm64': ['darwin', 'arm64'],
  'windows-64': ['win32', 'x64'],
  'linux-64': ['linux', 'x64'],
  'linux-arm64': ['linux', 'arm64'],
}

const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as {
  packages: Record<string, LockPackage>
}
const packages = lock.packages
for (const pkg of Object.values(packages)) {
  for (const [dep, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const path = `node_modules/${dep}`
    if (packages[path]) continue
    const platform = /workerd-(.*)$/.exec(dep)?.[1]
    const target = platform ? platforms[platform] : undefined
    if (!target) {
      console.log(`left alone: ${dep}`)
      continue
    }
    packages[path] = {
      version,
      cpu: [target[1]],
      dev: true,
      license: 'Apache-2.0',
      optional: true,
      os: [target[0]],
      engines: { node: '>=16' },
    }
    console.log(`added ${path} ${version}`)
  }
}
const sorted: Record<string, LockPackage> = {}
for (const key of Object.keys(packages).sort((a, b) =>
  a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1,
)) {
  sorted[key] = packages[key]!
}
lock.packages = sorted
writeFileSync('package-lock.json', JSON.stringify(lock, null, 2) + '\n')
