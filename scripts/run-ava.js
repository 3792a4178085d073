#!/usr/bin/env node
'use strict'
// Runs ava (arguments passed on) on the Node that runs this script, within a bound on its wall time.
//
// ava's own inactivity timeout cannot be relied on for a test that never settles: while any test's
// t.timeout() period runs (the packing and Autobahn tests set one), its trigger does nothing and is not
// set again (ava 7, lib/api.js, TimeoutTrigger), so one such test kept a CI run waiting for its hard
// limit. Past the bound ava gets a SIGINT, on which it exits naming the tests still pending (on
// Windows it is ended outright), and every process it had started is killed 20 s later if still there.
//
// ava stays in this script's process group, so whatever ends the group (a CI job's kill, Ctrl-C) ends it
// and its workers too. AVA_LIMIT_MINUTES sets the bound (default 15; 120 with AUTOBAHN_DEFLATE=full,
// Autobahn's own counts; none with --watch).

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const avaCli = path.join(__dirname, '..', 'node_modules', 'ava', 'entrypoints', 'cli.mjs')
const GRACE_MS = 20_000
const args = process.argv.slice(2)

function limitMinutes() {
  if (args.includes('--watch') || args.includes('-w')) return Infinity
  const given = process.env.AVA_LIMIT_MINUTES
  if (given === undefined || given === '') return process.env.AUTOBAHN_DEFLATE === 'full' ? 120 : 15
  const minutes = Number(given)
  if (!(minutes > 0)) {
    console.error(`run-ava: AVA_LIMIT_MINUTES must be a positive number of minutes (got ${JSON.stringify(given)})`)
    process.exit(2)
  }
  return minutes
}

/** [pid, parent pid] of every process, from /proc (Linux) or ps (other unixes). */
function processTable() {
  if (fs.existsSync('/proc/self/stat')) {
    const table = []
    for (const entry of fs.readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue
      try {
        // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8')
        table.push([Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])])
      } catch {
        // Gone meanwhile.
      }
    }
    return table
  }
  return execFileSync('ps', ['-A', '-o', 'pid=,ppid='], { encoding: 'utf8' })
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number))
}

/** Every process started by `root`, and theirs: taken while `root` runs (its orphans lose the link). */
function descendantsOf(root) {
  const children = new Map()
  for (const [pid, ppid] of processTable()) {
    if (!children.has(ppid)) children.set(ppid, [])
    children.get(ppid).push(pid)
  }
  const found = []
  const stack = [root]
  while (stack.length > 0) {
    for (const child of children.get(stack.pop()) ?? []) {
      found.push(child)
      stack.push(child)
    }
  }
  return found
}

const minutes = limitMinutes()
const ava = spawn(process.execPath, [avaCli, ...args], { stdio: 'inherit' })
let overrun = false
let killer = null
/** What ava had started when it overran. */
let started = []

function killStarted() {
  for (const pid of [ava.pid, ...started]) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // Gone already.
    }
  }
}

const bound = Number.isFinite(minutes)
  ? setTimeout(() => {
      overrun = true
      console.error(`\nrun-ava: the suite ran past ${minutes} min: stopping it (the tests still pending are listed below)`)
      if (process.platform === 'win32') {
        // No signals to interrupt with: the tree goes at once.
        try {
          execFileSync('taskkill', ['/pid', String(ava.pid), '/T', '/F'], { stdio: 'ignore' })
        } catch {
          // Gone already.
        }
        return
      }
      started = descendantsOf(ava.pid)
      ava.kill('SIGINT')
      killer = setTimeout(killStarted, GRACE_MS)
    }, minutes * 60_000)
  : null

// Passed on: a signal sent to this script alone reaches ava too (a terminal's Ctrl-C reaches both, and
// ava takes a second SIGINT as the first).
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => ava.kill(signal))
}

ava.on('error', (err) => {
  console.error(`run-ava: could not start ava: ${err.message}`)
  process.exit(2)
})

ava.on('exit', (code) => {
  clearTimeout(bound)
  clearTimeout(killer)
  if (overrun) {
    // ava exits on its interrupt before its workers have ended: a worker that hangs would stay.
    killStarted()
    console.error(`run-ava: stopped after ${minutes} min`)
    process.exit(1)
  }
  process.exit(code ?? 1)
})
