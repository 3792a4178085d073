'use strict'
// Loads the package, makes a client (which reads the proxy variables), and prints what happened as
// one JSON line: scripts/test-runtimes.js runs it under Deno without --allow-ffi, where the error must
// name the permission that fixes it, and without --allow-env, where a variable it may not read is unset.
let ReconnectingWebSocket
try {
  ;({ ReconnectingWebSocket } = require('../..'))
} catch (err) {
  console.log(JSON.stringify({ loaded: false, code: err.code, message: err.message }))
  process.exit(0)
}
try {
  new ReconnectingWebSocket('ws://127.0.0.1:9/', { startClosed: true, followRedirects: true }).disconnect()
  console.log(JSON.stringify({ loaded: true, constructed: true }))
} catch (err) {
  console.log(JSON.stringify({ loaded: true, constructed: false, name: err.name, code: err.code, message: err.message }))
}
