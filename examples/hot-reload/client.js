'use strict'
// The runtime side of hot reload: keeps a table of modules up to date with the
// patches pushed by the dev server, and reconnects by itself when the dev
// server restarts.
//
//   node examples/hot-reload/client.js ws://127.0.0.1:8080
//
// It stops (disconnecting cleanly) on Ctrl-C, SIGTERM or the end of its input.
// In your project: require('redial-ws'). Inside this repository the package is
// its root, two directories up.
const { ReconnectingWebSocket } = require('../..')

const url = process.argv[2] || 'ws://127.0.0.1:8080'
const log = (line) => console.log(line)
const modules = new Map()
let build = null

// A dev server restarts in a second or so: retry quickly, and never through an HTTP(S)_PROXY.
const client = new ReconnectingWebSocket(url, { minDelay: 100, maxDelay: 1_000, proxy: false })

let connected = false
client.on('open', () => {
  connected = true
  const { reconnects } = client.metrics
  log(reconnects === 0 ? `connected to ${url}` : `reconnected (reconnect #${reconnects})`)
})
client.on('close', ({ code, reason, willReconnect }) => {
  // A failed attempt ends with a close event too; report only lost connections.
  if (connected && willReconnect) log(`connection lost (${code}${reason ? ` ${reason}` : ''}), reconnecting`)
  connected = false
})
client.on('reconnecting', ({ attempt, delay }) => log(`retry #${attempt} in ${delay} ms`))
client.on('error', (err) => log(`error ${err.code}`))
client.on('giveup', ({ reason }) => {
  log(`gave up (${reason})`)
  process.exitCode = 1
  stop()
})

client.on('message', (data) => {
  const msg = JSON.parse(data)
  if (msg.type === 'hello') {
    if (build !== null && build !== msg.build) log(`dev server restarted (build ${build} -> ${msg.build})`)
    build = msg.build
  } else if (msg.type === 'patch') {
    modules.set(msg.module, msg.content) // a real runtime would swap the module here
    log(`applied patch #${msg.id} to ${msg.module}: ${msg.content}`)
  }
})

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  process.stdin.destroy()
  await client.disconnect()
  log(`disconnected; modules: ${JSON.stringify(Object.fromEntries(modules))}`)
  // Nothing is left running: the process exits by itself.
}
process.stdin.on('end', stop).resume()
process.once('SIGINT', stop)
process.once('SIGTERM', stop)
