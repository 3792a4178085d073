'use strict'
// A tiny dev server that pushes hot-reload patches to every connected runtime
// over a WebSocket.
//
//   node examples/hot-reload/server.js [--port 8080]
//
// Each line typed on stdin, "<module> <new content>", is pushed to the clients
// as a patch, e.g. `app.css body { color: red }`. A real dev server would watch
// files instead. It prints `listening on ws://127.0.0.1:<port>` when ready
// (`--port 0` picks a free port). On SIGTERM or SIGINT it closes every client
// with 1012 (service restart) and exits, so it can be restarted on the same port.
const { randomBytes } = require('node:crypto')
const readline = require('node:readline')
const { parseArgs } = require('node:util')
const { WebSocketServer } = require('ws')

const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' } } })
const build = randomBytes(3).toString('hex') // tells the clients that the server restarted
const log = (line) => console.log(line)

const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(values.port) })
let patches = 0

wss.on('listening', () => log(`listening on ws://127.0.0.1:${wss.address().port} (build ${build})`))
wss.on('connection', (socket) => {
  socket.send(JSON.stringify({ type: 'hello', build }))
  log(`client connected (${wss.clients.size} connected)`)
  socket.on('close', () => log(`client disconnected (${wss.clients.size} connected)`))
})

function push(module, content) {
  const patch = JSON.stringify({ type: 'patch', id: ++patches, module, content })
  for (const client of wss.clients) client.send(patch)
  log(`pushed patch #${patches} (${module}) to ${wss.clients.size} client(s)`)
}

const input = readline.createInterface({ input: process.stdin })
input.on('line', (line) => {
  const match = /^\s*(\S+)\s+(.*)$/.exec(line)
  if (match) push(match[1], match[2])
  else if (line.trim()) log('usage: <module> <new content>')
})

function shutdown(signal) {
  log(`${signal}: closing ${wss.clients.size} client(s) with 1012 (service restart)`)
  input.close()
  process.stdin.destroy()
  for (const client of wss.clients) client.close(1012, 'dev server restarting')
  // A client that does not answer the close handshake is cut off.
  setTimeout(() => wss.clients.forEach((c) => c.terminate()), 2_000).unref()
  // Once every connection is gone nothing is left and the process exits.
  wss.close()
}
process.on('exit', () => log('stopped'))
process.once('SIGTERM', () => shutdown('SIGTERM'))
process.once('SIGINT', () => shutdown('SIGINT'))
