'use strict'
// Load test of redial-ws against the chat server: in each round, hundreds of
// clients connect, the server drops them all (an outage), they reconnect, each
// sends a message to its room and waits for the room's traffic, and then they
// all disconnect. After the rounds, the figures must be back at their baseline:
// the server's open connections, the clients' native resources (clientStats():
// open connections, pending reconnects, running tasks, attempts, heartbeats,
// live clients once collected) and, roughly, the heap. The last line printed is
// a JSON summary; the exit code is 1 if anything did not return to baseline.
//
//   node --expose-gc examples/chat/load.js [--clients 300] [--rounds 3] [--rooms 10]
//
// In your project: require('redial-ws'). Inside this repository the package is
// its root, two directories up.
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const http = require('node:http')
const path = require('node:path')
const readline = require('node:readline')
const { setTimeout: delay, setImmediate: tick } = require('node:timers/promises')
const { parseArgs } = require('node:util')
const v8 = require('node:v8')
const vm = require('node:vm')

const { ReconnectingWebSocket, clientStats } = require('../..')

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '300' },
    rounds: { type: 'string', default: '3' },
    rooms: { type: 'string', default: '10' },
  },
})
/** A whole number of at least 1, or a usage error. */
function count(name) {
  const n = Number(values[name])
  if (!Number.isInteger(n) || n < 1) {
    console.error(`--${name} must be a whole number of at least 1, got "${values[name]}"`)
    process.exit(2)
  }
  return n
}
const CLIENTS = count('clients')
const ROUNDS = count('rounds')
const ROOMS = count('rooms')
// Heap growth from the end of the first round (code warmed up) to the end of the
// last one that still counts as "back to baseline": GC noise, not 900 clients.
const HEAP_SLACK = 4 * 1024 * 1024

// --expose-gc if given; otherwise the flag is switched on now.
const gc =
  globalThis.gc ??
  (() => {
    v8.setFlagsFromString('--expose-gc')
    return vm.runInNewContext('gc')
  })()

const log = (line) => console.log(line)
const mb = (bytes) => Math.round((bytes / 1024 / 1024) * 10) / 10

function startServer() {
  const proc = spawn(process.execPath, [path.join(__dirname, 'server.js'), '--port', '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  return new Promise((resolve, reject) => {
    proc.once('exit', (code) => reject(new Error(`the chat server exited with ${code}`)))
    readline.createInterface({ input: proc.stdout }).once('line', (line) => {
      const port = /^listening on ws:\/\/127\.0\.0\.1:(\d+)/.exec(line)?.[1]
      if (port) resolve({ proc, port: Number(port) })
      else reject(new Error(`unexpected server output: ${line}`))
    })
  })
}

function request(port, method, urlPath) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: urlPath }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk) => (body += chunk))
      res.on('end', () => resolve(JSON.parse(body)))
    })
    req.on('error', reject)
    req.end()
  })
}

/** Polls `probe()` until `done(value)`, for figures that have no event; gives up after `ms`. */
async function poll(probe, done, ms = 10_000) {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await probe()
    if (done(value) || Date.now() > deadline) return value
    await delay(10)
  }
}

/** Full collections until the clients the program dropped are finalized. */
async function collect(done, rounds = 100) {
  for (let i = 0; i < rounds && !done(); i++) {
    gc()
    await tick()
    await delay(5)
  }
}

function figures() {
  const { openConnections, pendingReconnects, runningTasks, pendingAttempts, heartbeats, liveClients, collectedWithoutDisconnect } =
    clientStats()
  return {
    openConnections,
    pendingReconnects,
    runningTasks,
    pendingAttempts,
    heartbeats,
    liveClients,
    collectedWithoutDisconnect,
    heapUsed: process.memoryUsage().heapUsed,
  }
}

/** One client of the round: resolves `reopened` on its second open, `heard` once it got `expected` messages. */
function chatter(url, expected) {
  const client = new ReconnectingWebSocket(url, { minDelay: 50, maxDelay: 500, proxy: false })
  let opens = 0
  let received = 0
  const reopened = new Promise((resolve) => client.on('open', () => ++opens === 2 && resolve()))
  const heard = new Promise((resolve) => client.on('message', () => ++received === expected && resolve()))
  const firstOpen = once(client, 'open')
  return { client, firstOpen, reopened, heard }
}

/**
 * The clients of the round in progress. A program keeps the clients it waits on: between
 * connections (the outage below) only its references keep a client, and a suspended async
 * function is not one (the promise it awaits is reachable only from the clients themselves).
 */
let current = null

async function round(n, url, port) {
  const t0 = Date.now()
  const perRoom = Array.from({ length: ROOMS }, (_, room) => Math.floor(CLIENTS / ROOMS) + (room < CLIENTS % ROOMS ? 1 : 0))
  let chatters = Array.from({ length: CLIENTS }, (_, i) => chatter(`${url}/room-${i % ROOMS}`, perRoom[i % ROOMS]))
  current = chatters
  await Promise.all(chatters.map((c) => c.firstOpen))
  const open = figures()

  // An outage: the server cuts every connection; every client reconnects by itself.
  const { dropped } = await request(port, 'POST', '/drop-all')
  await Promise.all(chatters.map((c) => c.reopened))

  chatters.forEach((c, i) => c.client.send(`round ${n}: hello from client ${i}`))
  await Promise.all(chatters.map((c) => c.heard))
  const delivered = chatters.reduce((sum, c) => sum + c.client.metrics.messagesReceived, 0)
  const reconnects = chatters.reduce((sum, c) => sum + c.client.metrics.reconnects, 0)

  await Promise.all(chatters.map((c) => c.client.disconnect()))
  chatters = current = null // the program keeps no reference to its clients
  const server = await poll(() => request(port, 'GET', '/stats'), (s) => s.openConnections === 0)
  gc()
  const after = figures()
  log(
    `round ${n}: ${CLIENTS} clients opened (native: ${open.openConnections} open, ${open.runningTasks} tasks, ` +
      `${open.heartbeats} heartbeats), ${dropped} dropped by the server, ${reconnects} reconnects, ` +
      `${delivered} messages delivered, all disconnected in ${Date.now() - t0} ms; ` +
      `after: server ${server.openConnections} open, clients ${after.openConnections} open, ` +
      `${after.pendingReconnects} pending reconnects, ${after.runningTasks} tasks, heap ${mb(after.heapUsed)} MB`,
  )
  return { delivered, server: server.openConnections, after }
}

async function main() {
  const { proc: serverProc, port } = await startServer()
  const url = `ws://127.0.0.1:${port}`
  log(`chat server on ${url}; ${CLIENTS} clients in ${ROOMS} rooms, ${ROUNDS} rounds`)

  gc()
  const baseline = figures()
  log(`baseline: ${JSON.stringify(baseline)}`)

  let firstRound = null
  let messages = 0
  for (let n = 1; n <= ROUNDS; n++) {
    const r = await round(n, url, port)
    messages += r.delivered
    firstRound ??= r.after
  }

  // Wait for the dropped clients to be collected (finalizers run after a GC).
  await collect(() => clientStats().liveClients === baseline.liveClients)
  gc()
  const final = figures()
  const server = await request(port, 'GET', '/stats')
  serverProc.kill('SIGTERM')
  await once(serverProc, 'exit')

  const failures = []
  for (const key of ['openConnections', 'pendingReconnects', 'runningTasks', 'pendingAttempts', 'heartbeats', 'liveClients', 'collectedWithoutDisconnect']) {
    if (final[key] !== baseline[key]) failures.push(`${key}: ${final[key]} (baseline ${baseline[key]})`)
  }
  if (server.openConnections !== 0) failures.push(`server openConnections: ${server.openConnections}`)
  const expected = ROUNDS * Array.from({ length: ROOMS }, (_, room) => Math.floor(CLIENTS / ROOMS) + (room < CLIENTS % ROOMS ? 1 : 0)).reduce((s, k) => s + k * k, 0)
  if (messages !== expected) failures.push(`messages delivered: ${messages}, expected ${expected}`)
  const heapGrowth = final.heapUsed - firstRound.heapUsed
  if (heapGrowth > HEAP_SLACK) failures.push(`heap grew by ${mb(heapGrowth)} MB after the first round`)

  log(failures.length === 0 ? 'ok: every figure is back at its baseline' : `FAILED:\n  ${failures.join('\n  ')}`)
  const summary = {
    ok: failures.length === 0,
    clients: CLIENTS,
    rounds: ROUNDS,
    messages,
    server: { openConnections: server.openConnections, totalConnections: server.totalConnections },
    baseline,
    final,
    heapGrowthSinceFirstRound: heapGrowth,
    failures,
  }
  log(JSON.stringify(summary))
  // On success nothing is left running and the process exits by itself; a leaked client would hold it.
  if (!summary.ok) process.exit(1)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
