#!/usr/bin/env node
'use strict'
// Runs at `npm install redial-ws`. The tarball carries the addon built for the
// platform it was packed on; anywhere else, build it from the bundled Rust
// sources with cargo, in a temporary target directory that is removed
// afterwards (no `target/` is ever left inside node_modules).

const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.resolve(__dirname, '..')

// In a git checkout `npm run build` (the `prepare` script) builds the addon.
if (fs.existsSync(path.join(root, '__test__'))) process.exit(0)

function loads() {
  try {
    require(path.join(root, 'binding.js'))
    return true
  } catch {
    return false
  }
}

if (!process.env.REDIAL_WS_BUILD_FROM_SOURCE && loads()) process.exit(0)

/** The file name the generated loader looks for on this platform (e.g. redial-ws.linux-x64-gnu.node). */
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
      '',
      `redial-ws: no prebuilt binary for ${process.platform}-${process.arch} (Node ${process.version}),`,
      'and cargo (the Rust toolchain) is not installed, so it cannot be built from source.',
      'Install Rust from https://rustup.rs and run `npm install` again, or use a platform with a prebuilt binary.',
      '',
    ].join('\n'),
  )
  process.exit(1)
}

const ownTarget = !process.env.CARGO_TARGET_DIR
const targetDir = process.env.CARGO_TARGET_DIR || fs.mkdtempSync(path.join(os.tmpdir(), 'redial-ws-build-'))
console.error(`redial-ws: building the native addon from source with ${cargo.stdout.trim()} (this takes a minute or two)`)
try {
  execFileSync('cargo', ['build', '--release', '--lib', '--manifest-path', path.join(root, 'Cargo.toml')], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, CARGO_TARGET_DIR: targetDir },
  })
  const libName = process.platform === 'win32' ? 'redial_ws.dll' : process.platform === 'darwin' ? 'libredial_ws.dylib' : 'libredial_ws.so'
  fs.copyFileSync(path.join(targetDir, 'release', libName), path.join(root, addonName()))
} finally {
  if (ownTarget) fs.rmSync(targetDir, { recursive: true, force: true })
}
if (!loads()) {
  console.error('redial-ws: the addon was built but does not load')
  process.exit(1)
}
console.error(`redial-ws: built ${addonName()}`)
