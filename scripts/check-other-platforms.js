'use strict'
// The code under `cfg(not(unix))` (Windows) is compiled only where that target is built: this host
// has no other target's standard library. It is type-checked here instead, on a copy of the crate
// with the two cfgs swapped (what is unix-only is left out, what is for the others is in). That
// catches the non-unix side falling behind the unix one (a type renamed on one side only); it does
// not check the use of Windows APIs, which the release workflow's Windows builds do.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.join(__dirname, '..')
const copy = fs.mkdtempSync(path.join(os.tmpdir(), 'redial-ws-other-'))
try {
  for (const file of ['Cargo.toml', 'Cargo.lock', 'build.rs']) fs.copyFileSync(path.join(root, file), path.join(copy, file))
  for (const dir of ['src', 'benches']) fs.cpSync(path.join(root, dir), path.join(copy, dir), { recursive: true })
  for (const file of fs.readdirSync(path.join(copy, 'src'))) {
    if (!file.endsWith('.rs')) continue
    const at = path.join(copy, 'src', file)
    const source = fs.readFileSync(at, 'utf8')
    fs.writeFileSync(at, source.replaceAll('cfg(not(unix))', 'cfg(all())').replaceAll('cfg(unix)', 'cfg(any())'))
  }
  const check = spawnSync('cargo', ['check', '--lib', '--offline', '--quiet'], {
    cwd: copy,
    stdio: 'inherit',
    // A target directory of its own, kept between runs: the dependencies are checked once.
    env: { ...process.env, CARGO_TARGET_DIR: path.join(root, 'target', 'other-platforms'), RUSTFLAGS: '-D warnings' },
  })
  if (check.status !== 0) {
    console.error('check-other-platforms: the non-unix code does not compile against the rest (cfgs swapped)')
    process.exitCode = 1
  }
} finally {
  fs.rmSync(copy, { recursive: true, force: true })
}
