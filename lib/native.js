'use strict'
// Loads the native addon, in the napi-rs way: a binary built in this checkout (or from source
// by scripts/build-from-source.js) first, then the platform package that npm installed as an
// optional dependency (`redial-ws-linux-x64-gnu`, ...). When neither loads, the error names the
// platform, the package that was expected, the real cause, and the one command that fixes it.
// (Sources here are ASCII on purpose: one non-ASCII character makes V8 keep a file's whole
// source as UTF-16, twice the memory. A test checks it.)

const fs = require('node:fs')
const path = require('node:path')
const { denied, variable } = require('./environment')

const root = path.join(__dirname, '..')

/** Which C library this Linux uses: the binaries differ ('gnu' is glibc). */
function linuxLibc() {
  // Deno is built for glibc only; asking would need --allow-read or --allow-sys.
  if (process.versions.deno) return 'gnu'
  // ldd is a script that names its C library.
  try {
    const ldd = fs.readFileSync('/usr/bin/ldd', 'latin1')
    if (ldd.includes('musl')) return 'musl'
    if (/GNU C Library|GLIBC|glibc/.test(ldd)) return 'gnu'
  } catch {
    // No ldd: ask the runtime which glibc it runs on (none means musl).
  }
  const header = process.report?.getReport?.()?.header
  return header?.glibcVersionRuntime ? 'gnu' : 'musl'
}

/** The napi-rs platform name: linux-x64-gnu, darwin-arm64, win32-x64-msvc, ... */
function platformName() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${linuxLibc()}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** The platforms a package is published for (package.json `napi.targets`, as npm/<name>/). */
const PUBLISHED = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
  'win32-x64-msvc',
  'win32-arm64-msvc',
]

const DENO_FIX = 'run Deno with --allow-ffi --allow-read --allow-env (or -A)'

/** Why a binary that exists did not load, in words, from the runtime's error (quoted after them). */
function explain(err) {
  const text = `${err?.name ?? ''} ${err?.message ?? err}`
  const said = String(err?.message ?? err).split('\n')[0]
  if (/allow-ffi|NotCapable|PermissionDenied/i.test(text)) return { why: `the runtime does not allow loading native code (${said})`, fix: DENO_FIX }
  const glibc = /GLIBC_(\d+\.\d+)['`]? not found/.exec(text)
  if (glibc) return { why: `the binary needs glibc ${glibc[1]}, newer than this system's (${said})`, fix: null }
  if (/invalid ELF header|wrong ELF class|file too short|not a valid Win32 application|incompatible architecture|mach-o/i.test(text))
    return { why: `not a binary for this platform: damaged, or built for another one (${said})`, fix: 'reinstall the package on this machine' }
  return { why: said, fix: null }
}

function load() {
  const name = platformName()
  const pkg = `redial-ws-${name}`
  const tried = []

  // Deno without --allow-env: an override this process may not read is none.
  const override = variable('NAPI_RS_NATIVE_LIBRARY_PATH')
  const files = override ? [override] : [path.join(root, `redial-ws.${name}.node`)]
  for (const file of files) {
    if (!override && !fs.existsSync(file)) continue
    try {
      return require(file)
    } catch (err) {
      tried.push({ what: file, err })
    }
  }
  if (!override) {
    try {
      return require(pkg)
    } catch (err) {
      const missing = /MODULE_NOT_FOUND/.test(err?.code) && String(err.message).includes(pkg)
      tried.push({ what: pkg, err, missing })
    }
  }
  throw loadError(name, pkg, tried)
}

function runtimeName() {
  if (process.versions.bun) return `Bun ${process.versions.bun}`
  return process.versions.deno ? `Deno ${process.versions.deno}` : `Node ${process.version}`
}

/** lib/ is not in its package (a bundler copied it into a bundle): no package.json of redial-ws beside it. */
function bundled() {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).name !== 'redial-ws'
  } catch (err) {
    return err?.code === 'ENOENT' || err instanceof SyntaxError
  }
}

function loadError(name, pkg, tried) {
  const runtime = runtimeName()
  // Quoted as a shell takes it (JSON would double a Windows path's backslashes).
  const fromSource = `node "${path.join(root, 'scripts', 'build-from-source.js')}"  (needs Rust: https://rustup.rs)`
  const lines = [`redial-ws: cannot load the native binary for ${name} (${runtime}).`]
  const failed = tried.filter((t) => !t.missing)
  const cause = (failed[0] ?? tried[0])?.err
  // A binary that is there and does not load says more than a package that is not there.
  for (const t of failed.length ? failed : tried) {
    if (t.missing)
      lines.push(
        PUBLISHED.includes(name)
          ? `- ${pkg} is not installed: npm skips optional dependencies with --omit=optional, or when the` +
              ` lockfile was written on another platform (npm/cli#4828).`
          : `- no prebuilt binary is published for ${name}.`,
      )
    else lines.push(`- ${t.what}: ${explain(t.err).why}`)
  }
  const fix = failed.map((t) => explain(t.err).fix).find(Boolean)
  // An install would not help a bundle's copy of lib/, which looks for the binary beside itself.
  const inBundle = !failed.length && bundled()
  if (inBundle) lines.push(`- redial-ws seems to be bundled (no package.json of it in ${root}): a bundler does not carry its native binary.`)
  lines.push('Fix:')
  if (inBundle) {
    lines.push("  keep redial-ws out of the bundle (esbuild: --external:redial-ws; webpack: externals: { 'redial-ws': 'commonjs redial-ws' })")
    lines.push('  and install it where the bundle runs')
  } else if (fix) lines.push(`  ${fix}`)
  else {
    const install = !failed.length && PUBLISHED.includes(name)
    if (install) {
      // Saved as an optional dependency: a plain install would make it a dependency, which npm
      // refuses (EBADPLATFORM) on every other platform the project is installed on.
      lines.push(`  npm install --save-optional ${pkg}@${require('../package.json').version}`)
      lines.push('  or, for a lockfile written on another platform: delete node_modules and package-lock.json, then npm install')
    }
    lines.push(`  ${install ? 'or ' : ''}build it from source: ${fromSource}`)
  }
  const err = new Error(lines.join('\n'), cause ? { cause } : undefined)
  err.code = 'ERR_NATIVE_BINDING'
  err.platform = name
  err.package = pkg
  return err
}

/** Deno refused a file or a variable the loader needs: the error says which flags it takes. */
function permissionError(err) {
  const said = String(err?.message ?? err).split('\n')[0]
  const lines = [`redial-ws: cannot load the native binary (${runtimeName()}): the runtime refused it (${said}).`, 'Fix:', `  ${DENO_FIX}`]
  const error = new Error(lines.join('\n'), { cause: err })
  error.code = 'ERR_NATIVE_BINDING'
  return error
}

/**
 * The binary loaded but could not start its I/O thread: the system refused it a thread or the
 * descriptors of its event loop (a process at its limit as it loaded redial-ws).
 */
function runtimeError(failure) {
  const lines = [
    `redial-ws: the native binary loaded, but could not start its I/O thread (${runtimeName()}): ${failure}.`,
    'Fix:',
    "  raise the process's limit on threads or open files (ulimit -u, ulimit -n; a container's pids limit), or load redial-ws before the process is near it",
  ]
  const error = new Error(lines.join('\n'))
  error.code = 'ERR_NATIVE_BINDING'
  return error
}

let binding
try {
  binding = load()
} catch (err) {
  throw err?.code !== 'ERR_NATIVE_BINDING' && denied(err) ? permissionError(err) : err
}
const failure = binding.runtimeFailure()
if (failure != null) throw runtimeError(failure)
module.exports = binding
