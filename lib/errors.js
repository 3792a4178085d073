'use strict'
// Errors with a stable `code`, shaped like Node's own (`err.code === 'ERR_...'`).

function makeError(code, message, Ctor = Error, extra) {
  const err = new Ctor(message)
  err.code = code
  if (extra) Object.assign(err, extra)
  return err
}

/** Turns the `{ code, message, status? }` the native side reports into an Error. */
function fromNative(p) {
  const extra = p.status === undefined ? undefined : { status: p.status }
  return makeError(p.code, p.message, Error, extra)
}

module.exports = { makeError, fromNative }
