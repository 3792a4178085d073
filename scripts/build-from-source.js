#!/usr/bin/env node
'use strict'
// Builds the native addon from the Rust sources that ship in the package, for a platform with
// no prebuilt binary (or to use your own toolchain). Needs cargo (https://rustup.rs). The
// addon lands next to package.json as redial-ws.<platform>.node, where lib/native.js looks
// first; the build runs in a temporary target directory that is removed afterwards, so no
// `target/` is ever left inside node_modules. Nothing runs this at install time: the package
// has no install script.

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

/** The file name lib/native.js looks for on this platform (e.g. redial-ws.linux-x64-gnu.node). */
function addonName() {
  const { platform, arch } = process
  let abi = ''
  if (platform === 'linux') {
    const glibc = process.report?.getReport?.().header?.glibcVersionRuntime
    abi = glibc ? '-gnu' : '-musl'
  } else if (platform === 'win32') abi = '-msvc'
  return `redial-ws.${platform}-${arch}${abi}.node`
}

const cargo = spawnSync('cargo', ['--version'], { encoding: 'utf8' })
if (cargo.error || cargo.status !== 0) {
  console.error(
    [
      `redial-ws: cannot build from source for ${process.platform}-${process.arch}:`,
      'cargo (the Rust toolchain) is not installed. Install Rust from https://rustup.rs and run this again.',
    ].join('\n'),
  )
  process.exit(1)
}

const ownTarget = !process.env.CARGO_TARGET_DIR
const targetDir = process.env.CARGO_TARGET_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'redial-ws-build-'))
console.error(`redial-ws: building the native addon from source with ${cargo.stdout.trim()} (this takes a minute or two)`)
const env = { ...process.env, CARGO_TARGET_DIR: targetDir }
// musl (Alpine): its Rust targets link the C library statically by default, and so cannot make
// a shared library (cargo drops the addon with a warning and succeeds): link it dynamically, as
// Node does (scripts/build-dist.js builds the published musl addons so too).
if (addonName().endsWith('-musl.node')) env.RUSTFLAGS = `${env.RUSTFLAGS ?? ''} -C target-feature=-crt-static`.trim()
let build
let missing = null
try {
  build = spawnSync('cargo', ['build', '--release', '--lib', '--manifest-path', path.join(root, 'Cargo.toml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env,
  })
  if (build.status === 0) {
    const libName = process.platform === 'win32' ? 'redial_ws.dll' : process.platform === 'darwin' ? 'libredial_ws.dylib' : 'libredial_ws.so'
    // A CARGO_BUILD_TARGET of the user's puts the output under the target's own directory.
    const built = path.join(targetDir, process.env.CARGO_BUILD_TARGET || '', 'release', libName)
    if (fs.existsSync(built)) fs.copyFileSync(built, path.join(root, addonName()))
    else missing = built
  }
} finally {
  if (ownTarget) fs.rmSync(targetDir, { recursive: true, force: true })
}
if (build.status !== 0) {
  // cargo has said why above; a stack trace of this script would add nothing.
  const how = build.error ? build.error.message : build.signal ? `signal ${build.signal}` : `exit status ${build.status}`
  console.error(`redial-ws: cargo build failed (${how}): see its messages above.`)
  process.exit(1)
}
if (missing !== null) {
  console.error(`redial-ws: cargo built no addon (${missing} is missing): see its warnings above (a target that cannot make shared libraries?).`)
  process.exit(1)
}
const check = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(path.join(root, 'lib', 'native.js'))})`], {
  encoding: 'utf8',
})
if (check.status !== 0) {
  console.error(`redial-ws: the addon was built but does not load:\n${check.stderr}`)
  process.exit(1)
}
console.error(`redial-ws: built ${addonName()}`)
