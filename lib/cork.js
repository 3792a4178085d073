'use strict'
// What the send fast path corked in a turn (src/writer.rs) is written by one microtask at the
// turn's end, or by the process's end when it ends in that turn.

const N = require('./native')
const { onProcessEnd } = require('./environment')
const { microtask } = require('./later')

/**
 * One microtask per turn writes what the fast path corked (src/writer.rs). The clients waiting for
 * theirs are kept: a process that ends in the same turn (process.exit(), an uncaught exception,
 * Deno.exit()) runs no microtask, and its end writes them (as ws's socket.write() would have
 * written them at once).
 */
const corked = new Set()
let exitHooked = false

function corkUntilTurnEnd(client) {
  corked.add(client)
  if (!exitHooked) {
    exitHooked = true
    onProcessEnd(uncorkAll)
  }
  microtask(() => uncork(client))
}

function uncork(client) {
  corked.delete(client)
  N.clientUncork(client)
}

function uncorkAll() {
  for (const client of corked) {
    try {
      uncork(client)
    } catch {
      // The process is ending: another client's frames still go.
    }
  }
}

module.exports = { corkUntilTurnEnd }
