'use strict'
// send() callbacks: called later, in the order their messages were settled.

const { rethrowLater, microtask } = require('./later')

/** What became of a message sent with a callback, by the addon's number (src/outbox.rs `Fate`). */
const FATES = ['written', 'overflow', 'drained', 'discarded']

/**
 * send() callbacks run later, never inside the call that settled them: as microtasks, so that
 * they run in the order they were settled and before whatever awaits a disconnect() made after
 * (its continuation is queued behind them, even when that promise is already resolved). As in
 * ws, a message written gets `callback(null)`, one never written `callback(err)`. A close reported
 * in the same batch as a message's settling runs the callbacks due first (`runDueCallbacks`).
 */
function callLater(callback, err = null) {
  // The callbacks of a message sent in pieces, one per piece, in order.
  if (Array.isArray(callback)) for (const each of callback) callLater(each, err)
  else {
    const entry = { callback, err }
    dueCallbacks.add(entry)
    microtask(() => dueCallbacks.delete(entry) && callback(err))
  }
}

/** Callbacks settled whose microtask has not run yet, in the order they were settled. */
const dueCallbacks = new Set()

/**
 * Runs now the callbacks already settled, in order: a `close` is about to be reported, and ws calls
 * a written message's callback before its close (the socket took the message, then the close).
 * Only from an event's delivery, never inside a call.
 */
function runDueCallbacks() {
  for (const entry of dueCallbacks) {
    dueCallbacks.delete(entry)
    try {
      entry.callback(entry.err)
    } catch (err) {
      rethrowLater(err)
    }
  }
}

module.exports = { FATES, callLater, runDueCallbacks }
