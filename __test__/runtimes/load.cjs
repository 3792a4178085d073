'use strict'
// Loads the package and prints what happened as one JSON line: scripts/test-runtimes.js runs it
// under Deno without --allow-ffi, where the error must name the permission that fixes it.
try {
  require('../..')
  console.log(JSON.stringify({ loaded: true }))
} catch (err) {
  console.log(JSON.stringify({ loaded: false, code: err.code, message: err.message }))
}
