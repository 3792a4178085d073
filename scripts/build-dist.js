#!/usr/bin/env node
'use strict'
// Builds the distributable binary of one target into its platform package, npm/<platform>/
// (the napi-rs layout: the main package lists these packages as optional dependencies).
//
//   node scripts/build-dist.js                        the host's target
//   node scripts/build-dist.js --target <rust triple>  one of package.json's napi.targets
//
// Linux targets link with cargo-zigbuild and zig (`pip install cargo-zigbuild ziglang`), the
// glibc ones against glibc 2.17 as napi-rs's own packages are, so that one binary loads on every
// Linux that Node supports; the musl ones dynamically (`-crt-static`: Node is the process that
// links the C library). macOS and Windows targets build with plain cargo on their own runners
// (Windows with a static C runtime).
// Only the host's Rust standard library is needed for the host's target; any other target needs
// `rustup target add` (the release workflow does that, see docs/releasing.md).

const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const { napi } = require('../package.json')
const { thirdPartyLicenses } = require('./third-party-licenses')

/** Rust target triple -> napi-rs platform name (npm/<name>/, redial-ws.<name>.node). */
const PLATFORMS = {
  'x86_64-unknown-linux-gnu': 'linux-x64-gnu',
  'aarch64-unknown-linux-gnu': 'linux-arm64-gnu',
  'x86_64-unknown-linux-musl': 'linux-x64-musl',
  'aarch64-unknown-linux-musl': 'linux-arm64-musl',
  'x86_64-apple-darwin': 'darwin-x64',
  'aarch64-apple-darwin': 'darwin-arm64',
  'x86_64-pc-windows-msvc': 'win32-x64-msvc',
  'aarch64-pc-windows-msvc': 'win32-arm64-msvc',
}
const GLIBC_FLOOR = '2.17'

function hostTarget() {
  const arch = { x64: 'x86_64', arm64: 'aarch64' }[process.arch]
  if (process.platform === 'darwin') return `${arch}-apple-darwin`
  if (process.platform === 'win32') return `${arch}-pc-windows-msvc`
  const musl = !process.report?.getReport?.()?.header?.glibcVersionRuntime
  return `${arch}-unknown-linux-${musl ? 'musl' : 'gnu'}`
}

function fail(message) {
  console.error(`build-dist: ${message}`)
  process.exit(1)
}

const at = process.argv.indexOf('--target')
const target = at > 0 ? process.argv[at + 1] : hostTarget()
const platform = PLATFORMS[target]
if (!platform || !napi.targets.includes(target))
  fail(`unknown target ${target}; one of: ${napi.targets.join(', ')} (package.json napi.targets)`)

const linux = target.includes('-linux-')
const args = linux
  ? ['zigbuild', '--release', '--lib', '--target', target.endsWith('-gnu') ? `${target}.${GLIBC_FLOOR}` : target]
  : ['build', '--release', '--lib', '--target', target]
const env = { ...process.env }
// musl: link the C library dynamically (Node is the process that brings it). Windows: link the C
// runtime statically, as napi-rs's template does, so that the addon does not need the Visual C++
// Redistributable, which a fresh Windows does not have.
const crt = target.endsWith('-musl') ? '-crt-static' : target.includes('-windows-') ? '+crt-static' : null
if (crt) env.RUSTFLAGS = `${env.RUSTFLAGS ?? ''} -C target-feature=${crt}`.trim()

if (linux) {
  const zigbuild = spawnSync('cargo-zigbuild', ['--version'], { encoding: 'utf8' })
  if (zigbuild.status !== 0)
    fail('cargo-zigbuild is not installed: `python3 -m pip install cargo-zigbuild ziglang` (see CONTRIBUTING.md)')
}
console.error(`build-dist: cargo ${args.join(' ')}`)
const build = spawnSync('cargo', args, { cwd: root, env, stdio: 'inherit' })
if (build.status !== 0) fail(`cargo exited with ${build.status ?? build.signal}`)

const lib = target.includes('-windows-') ? 'redial_ws.dll' : target.includes('-apple-') ? 'libredial_ws.dylib' : 'libredial_ws.so'
const targetDir = process.env.CARGO_TARGET_DIR ? path.resolve(process.env.CARGO_TARGET_DIR) : path.join(root, 'target')
const from = path.join(targetDir, target, 'release', lib)
const to = path.join(root, 'npm', platform, `redial-ws.${platform}.node`)
fs.copyFileSync(from, to)
console.error(`build-dist: ${path.relative(root, to)} (${(fs.statSync(to).size / 1048576).toFixed(1)} MiB)`)
// The binary is a copy of the crates linked into it: their licences go with it, and ours.
fs.copyFileSync(path.join(root, 'LICENSE'), path.join(root, 'npm', platform, 'LICENSE'))
fs.writeFileSync(path.join(root, 'npm', platform, 'THIRD_PARTY_LICENSES.txt'), thirdPartyLicenses(target))
