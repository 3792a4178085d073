'use strict'
// The process's environment as this runtime lets the library read it: Deno refuses to read a
// variable without --allow-env (or one not named in it), where Node and Bun read them all; and how
// it tells that the process ends.

/** Whether `err` is Deno refusing something its permissions do not grant. */
function denied(err) {
  return /^(NotCapable|PermissionDenied)$/.test(err?.name) || /run again with the --allow-/.test(String(err?.message))
}

/** The variable `name` of `env`, or undefined where the runtime does not let this process read it. */
function variable(name, env = process.env) {
  try {
    return env[name]
  } catch (err) {
    if (denied(err)) return undefined
    throw err
  }
}

/**
 * Calls `fn` when the process ends in the turn it is in: Node's and Bun's 'exit' (process.exit(),
 * an uncaught exception). Deno emits 'exit' for process.exit() only: for Deno.exit() its global
 * 'unload' event comes, and for an uncaught exception its global 'error' event, before it ends.
 */
function onProcessEnd(fn) {
  process.on('exit', fn)
  if (typeof globalThis.Deno === 'object' && typeof globalThis.addEventListener === 'function') {
    globalThis.addEventListener('unload', fn)
    globalThis.addEventListener('error', fn)
  }
}

module.exports = { denied, variable, onProcessEnd }
