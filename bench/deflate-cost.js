'use strict'
// What a connection with permessage-deflate costs, RSS per connection, redial-ws beside ws:
// idle and never used, after one compressed message each way, and after one heartbeat interval
// without sending (redial-ws lets go of its compressor then; ws keeps both zlib streams).
//
//   node bench/deflate-cost.js [--clients N] [--runs R]     (defaults 1,000 and 2)
//
// A `ws` server with perMessageDeflate echoes each message; every client runs in a fresh process.
const path = require('node:path')
const { fork } = require('node:child_process')
const { pageInOptimizingCompiler, settleGc } = require('./peers/harness')

const root = path.resolve(__dirname, '..')
const HEARTBEAT_MS = 1000
const MESSAGE = JSON.stringify(Array.from({ length: 100 }, (_, i) => ({ id: i, name: `item ${i}`, tags: ['a', 'b'] }))).slice(0, 4096)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

function serve() {
  const { WebSocketServer } = require(path.join(root, 'node_modules', 'ws'))
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true }, () => process.send(wss.address().port))
  wss.on('connection', (socket) => socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary })))
  process.on('disconnect', () => process.exit(0))
}

async function measure(peer, port, count) {
  const url = `ws://127.0.0.1:${port}`
  const lib = peer === 'redial-ws' ? require(root) : null
  const WebSocket = require(path.join(root, 'node_modules', 'ws'))
  const open = () =>
    new Promise((resolve, reject) => {
      const c = lib ? new lib.ReconnectingWebSocket(url, { pingInterval: HEARTBEAT_MS }) : new WebSocket(url)
      c.once('open', () => (c.extensions.startsWith('permessage-deflate') ? resolve(c) : reject(new Error('deflate not negotiated'))))
      c.once('error', reject)
    })
  const first = await open()
  await (lib ? first.disconnect() : new Promise((resolve) => first.once('close', resolve).close()))
  await pageInOptimizingCompiler()
  await settleGc()
  const base = process.memoryUsage().rss
  const perConn = () => (process.memoryUsage().rss - base) / 1024 / count
  const conns = []
  while (conns.length < count) conns.push(...(await Promise.all(Array.from({ length: Math.min(100, count - conns.length) }, open))))
  await settleGc()
  const idle = perConn()
  await Promise.all(conns.map((c) => new Promise((resolve) => c.once('message', resolve).send(MESSAGE))))
  await settleGc()
  const afterMessage = perConn()
  await sleep(3 * HEARTBEAT_MS)
  await settleGc()
  const afterHeartbeat = perConn()
  return { idle, afterMessage, afterHeartbeat, deflateContexts: lib ? lib.clientStats().deflateContexts : null }
}

function runPeer(peer, port, count) {
  return new Promise((resolve, reject) => {
    const child = fork(__filename, ['client', peer, String(port), String(count)], { execArgv: ['--expose-gc'] })
    const timer = setTimeout(() => child.kill(), 120_000)
    let result = null
    child.on('message', (m) => (result = m))
    child.on('exit', (code) => {
      clearTimeout(timer)
      if (result && !result.error) resolve(result)
      else reject(new Error(`${peer}: ${result?.error ?? `exit ${code}`}`))
    })
  })
}

async function main() {
  const arg = (name, fallback) => {
    const i = process.argv.indexOf(name)
    return i > 0 ? Number(process.argv[i + 1]) : fallback
  }
  const count = arg('--clients', 1000)
  const runs = arg('--runs', 2)
  if (!(Number.isInteger(count) && count > 0 && Number.isInteger(runs) && runs > 0)) {
    console.error('usage: node bench/deflate-cost.js [--clients N] [--runs R] (positive integers)')
    process.exitCode = 2
    return
  }
  const server = fork(__filename, ['server'])
  const port = await new Promise((resolve) => server.once('message', resolve))
  try {
    console.log(`permessage-deflate, ${count} connections, RSS KiB per connection (heartbeat ${HEARTBEAT_MS} ms)`)
    console.log('peer        idle   after a message each way   after a heartbeat interval')
    for (let r = 0; r < runs; r++) {
      for (const peer of ['redial-ws', 'ws']) {
        const m = await runPeer(peer, port, count)
        const f = (x) => x.toFixed(1).padStart(6)
        console.log(`${peer.padEnd(10)} ${f(m.idle)}   ${f(m.afterMessage)}                   ${f(m.afterHeartbeat)}${m.deflateContexts === null ? '' : `   (deflateContexts ${m.deflateContexts})`}`)
      }
    }
  } finally {
    server.kill()
  }
}

if (process.argv[2] === 'server') serve()
else if (process.argv[2] === 'client') {
  const [, , , peer, port, count] = process.argv
  measure(peer, Number(port), Number(count)).then(
    (m) => process.send(m, () => process.exit(0)),
    (e) => process.send({ error: String(e && e.message) }, () => process.exit(1)),
  )
} else {
  main().catch((e) => {
    console.error(e.message)
    process.exitCode = 1
  })
}
