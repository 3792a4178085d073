'use strict'
// The process's environment as this runtime lets the library read it: Deno refuses to read a
// variable without --allow-env (or one not named in it), where Node and Bun read them all.

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

module.exports = { denied, variable }
