'use strict'
// What a benchmark report says about where it ran: date, CPU, Node, OS, memory, commit.

const { execFileSync } = require('node:child_process')
const os = require('node:os')
const path = require('node:path')

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd: path.join(__dirname, '..', '..'),
      stdio: ['ignore', 'pipe', 'ignore'],
    })
      .toString()
      .trim()
  } catch {
    return null
  }
}

function describeMachine() {
  return {
    date: new Date().toISOString(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    node: process.version,
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    memory: `${Math.round(os.totalmem() / 1073741824)} GiB`,
    commit: gitCommit(),
  }
}

module.exports = { describeMachine }
