// Plain JavaScript, so that an older Node runs it and says why: the project's scripts are
// TypeScript, which Node runs as it is only from 22.18, and an older one fails on them with
// ERR_UNKNOWN_FILE_EXTENSION, which does not say what to do.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(
    `[nexus] this is Node ${process.versions.node}; Nexus needs Node 22.18 or later. npm ci ` +
      'installs it into the project (the `node` devDependency, by its install script): run ' +
      '`npm ci` again with install scripts allowed (not `--ignore-scripts`), or install Node 22.',
  )
  process.exit(1)
}
