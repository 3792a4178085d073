#!/usr/bin/env node
'use strict'
// Runs ava (arguments passed on) on the Node that runs this script, within a bound on its wall time.
//
// ava's own inactivity timeout cannot be relied on for a test that never settles: while any test's
// t.timeout() period runs (the packing and Autobahn tests set one), its trigger does nothing and is not
// set again (ava 7, lib/api.js, TimeoutTrigger), so one such test kept a CI run waiting for its hard
// limit. Past the bound ava gets a SIGINT, on which it exits naming the tests still pending, and its
// process group a SIGKILL if it has not gone 20 s later.
//
// AVA_LIMIT_MINUTES sets the bound (default 15; 120 with AUTOBAHN_DEFLATE=full, Autobahn's own counts).

const { spawn } = require('node:child_process')
const path = require('node:path')

const avaCli = path.join(__dirname, '..', 'node_modules', 'ava', 'entrypoints', 'cli.mjs')
const GRACE_MS = 20_000

function limitMinutes() {
  const given = process.env.AVA_LIMIT_MINUTES
  if (given === undefined || given === '') return process.env.AUTOBAHN_DEFLATE === 'full' ? 120 : 15
  const minutes = Number(given)
  if (!(minutes > 0)) {
    console.error(`run-ava: AVA_LIMIT_MINUTES must be a positive number of minutes (got ${JSON.stringify(given)})`)
    process.exit(2)
  }
  return minutes
}

const minutes = limitMinutes()
// Its own process group, so that the workers ava forks can be ended with it; the terminal's Ctrl-C
// reaches this script's group only, and is passed on. (Windows has no groups, and a detached child
// there gets a console of its own.)
const groups = process.platform !== 'win32'
const ava = spawn(process.execPath, [avaCli, ...process.argv.slice(2)], { stdio: 'inherit', detached: groups })
let overrun = false
let killer = null

function stopGroup(signal) {
  if (!groups) return
  try {
    process.kill(-ava.pid, signal)
  } catch {
    // The group is gone already.
  }
}

const bound = setTimeout(() => {
  overrun = true
  console.error(`\nrun-ava: the suite ran past ${minutes} min: stopping it (the tests still pending are listed below)`)
  ava.kill('SIGINT')
  killer = setTimeout(() => stopGroup('SIGKILL'), GRACE_MS)
}, minutes * 60_000)

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => ava.kill(signal))
}

ava.on('error', (err) => {
  console.error(`run-ava: could not start ava: ${err.message}`)
  process.exit(2)
})

ava.on('exit', (code, signal) => {
  clearTimeout(bound)
  // ava waits for its workers, but a worker it could not end must not outlive it.
  stopGroup('SIGKILL')
  clearTimeout(killer)
  if (overrun) {
    console.error(`run-ava: stopped after ${minutes} min`)
    process.exit(1)
  }
  process.exit(code ?? 1)
})
