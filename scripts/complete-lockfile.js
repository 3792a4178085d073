#!/usr/bin/env node
'use strict'
// Run after regenerating package-lock.json on a machine whose npm registry lacks some
// platform packages of a dependency (the registry these development machines reach has only
// @oxc-node/core-linux-x64-gnu of @oxc-node/core 0.1.7's sixteen). npm leaves what it could not
// fetch out of the lockfile, and `npm ci` then refuses the lockfile as out of sync. This records
// each missing optional platform package as the entry it is: optional, with its os/cpu/libc, so
// that npm skips it on every other platform without fetching it.
//
//   node scripts/complete-lockfile.js   (then `npm ci` works, and `npm install` leaves it as is)

const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'package-lock.json')
const lock = JSON.parse(fs.readFileSync(file, 'utf8'))
const packages = lock.packages
const PLATFORM = /-(android|darwin|freebsd|linux|openharmony|win32)-([a-z0-9]+)(?:-(gnu|gnueabihf|musl|msvc|eabi))?$/

let added = 0
for (const [where, pkg] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(pkg.optionalDependencies ?? {})) {
    const key = `node_modules/${name}`
    const m = PLATFORM.exec(name)
    if (packages[key] || !m) continue
    const [, os, cpu, abi] = m
    const entry = { version, cpu: [cpu] }
    if (pkg.dev) entry.dev = true
    if (abi === 'gnu' || abi === 'gnueabihf') entry.libc = ['glibc']
    if (abi === 'musl') entry.libc = ['musl']
    Object.assign(entry, { license: pkg.license, optional: true, os: [os] })
    packages[key] = entry
    added++
    console.log(`complete-lockfile: ${key}@${version} (optional dependency of ${where || 'the project'})`)
  }
}
const sorted = Object.fromEntries(Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a.localeCompare(b, 'en'))))
lock.packages = sorted
fs.writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`)
console.log(`complete-lockfile: ${added} entries added`)
