#!/usr/bin/env node
'use strict'
// Writes the main package as it is published into dist/redial-ws/: the files `npm pack` would
// take from this checkout, without any binary, and a package.json with no lifecycle scripts
// (npm 11 does not run dependencies' install scripts without being allowed to; this package needs none) whose
// optionalDependencies are the platform packages of npm/<platform>/ at the same version, so
// npm installs exactly the one whose os/cpu/libc match. `napi pre-publish` does the same edit
// in place; staging leaves the checkout's package.json (and its lockfile) alone.
//
//   node scripts/stage-package.js   -> prints the staged directory

const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
const out = path.join(root, 'dist', manifest.name)

const optionalDependencies = {}
for (const dir of fs.readdirSync(path.join(root, 'npm')).sort()) {
  const platform = JSON.parse(fs.readFileSync(path.join(root, 'npm', dir, 'package.json'), 'utf8'))
  if (platform.version !== manifest.version)
    throw new Error(`npm/${dir} is at ${platform.version}, the main package at ${manifest.version}: run \`npx napi version\``)
  optionalDependencies[platform.name] = manifest.version
}

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const [{ files }] = JSON.parse(
  execFileSync(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8', shell: process.platform === 'win32' }),
)
fs.rmSync(out, { recursive: true, force: true })
for (const { path: file } of files) {
  if (file.endsWith('.node') || file === 'package.json') continue
  fs.mkdirSync(path.dirname(path.join(out, file)), { recursive: true })
  fs.copyFileSync(path.join(root, file), path.join(out, file))
}

const { scripts, devDependencies, napi, ava, ...published } = manifest
published.optionalDependencies = optionalDependencies
fs.writeFileSync(path.join(out, 'package.json'), `${JSON.stringify(published, null, 2)}\n`)
console.log(out)
