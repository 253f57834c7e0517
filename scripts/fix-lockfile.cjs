#!/usr/bin/env node
// Run after `npm install` when dependencies change: see docs/decisions.md (Toolchain).
// The npm mirror here lacks workerd's macOS/Windows builds; npm leaves them out of the lock and
// `npm ci` then calls the lock out of sync. Record them as optional, platform-gated entries.
const fs = require('fs')
const l = JSON.parse(fs.readFileSync('package-lock.json'))
const p = l.packages
const plat = {
  'darwin-64': ['darwin', 'x64'],
  'darwin-arm64': ['darwin', 'arm64'],
  'windows-64': ['win32', 'x64'],
  'linux-64': ['linux', 'x64'],
  'linux-arm64': ['linux', 'arm64'],
}
for (const [k, v] of Object.entries(p))
  for (const [d, ver] of Object.entries(v.optionalDependencies || {})) {
    const top = 'node_modules/' + d
    if (p[top]) continue
    const m = d.match(/workerd-(.*)$/)
    if (!m) {
      console.log('unknown', d)
      continue
    }
    p[top] = {
      version: ver,
      cpu: [plat[m[1]][1]],
      dev: true,
      license: 'Apache-2.0',
      optional: true,
      os: [plat[m[1]][0]],
      engines: { node: '>=16' },
    }
    console.log('added', top, ver)
  }
const sorted = {}
for (const k of Object.keys(p).sort((a, b) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)))
  sorted[k] = p[k]
l.packages = sorted
fs.writeFileSync('package-lock.json', JSON.stringify(l, null, 2) + '\n')
