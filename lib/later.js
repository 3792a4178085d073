'use strict'
// Code run later: a listener's error surfaced as an uncaught exception on the next tick, and
// microtasks and immediates that test fake timers cannot hold back.

const timers = require('node:timers')

/**
 * Node's `setImmediate`, as it was before test fake timers replaced it: the module's, not the
 * global (Jest's fakes replace the global), and not a fake that @sinonjs/fake-timers (Vitest's,
 * sinon's) installed before this library loaded put in the module too: it marks its fakes with
 * their clock, which keeps the function it replaced. The next batch of events must not wait for
 * a fake clock, nor stop for good once the fake is uninstalled.
 */
const setImmediate = unfaked(timers.setImmediate, '_setImmediate')

function unfaked(fn, saved) {
  const original = fn?.clock?.[saved]
  return typeof original === 'function' ? original : fn
}

function rethrow(err) {
  throw err
}

// Bun shows an error thrown again here at this frame, not where the listener threw it; its
// reportError keeps the error's own stack, and is an uncaught exception all the same.
const surface = typeof Bun !== 'undefined' && typeof reportError === 'function' ? reportError : rethrow

/** A listener's error surfaces on the next tick as an ordinary uncaught exception; the batch goes on. */
function rethrowLater(err) {
  process.nextTick(surface, err)
}

const RESOLVED = Promise.resolve()

/**
 * Runs `fn` as a microtask: through a promise, not `queueMicrotask`, which test fake timers replace
 * (Jest's by default), and delivery must not wait for a fake clock. What `fn` throws surfaces as a
 * listener's error does.
 */
function microtask(fn) {
  RESOLVED.then(() => {
    try {
      fn()
    } catch (err) {
      rethrowLater(err)
    }
  })
}

module.exports = { rethrowLater, microtask, setImmediate }
