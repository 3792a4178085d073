'use strict'
// Reconnect-storm server, run in its own child process by bench/storm.js so that
// its CPU time and memory never mix with the measured client's. Raw `net` servers
// on 127.0.0.1 only, with the WebSocket upgrade done by hand (lib/wsraw.js): it
// costs next to nothing per connection, so the server is not what shapes the storm.
//
//   node bench/lib/storm-server.js '{"ports":1,"backlog":4096}'
//
// IPC protocol (parent -> server):
//   { cmd: 'restart', downMs }  stop listening, destroy every connection (the clients see 1006: TCP
//                               closed without a close frame), stay down `downMs` (counted from the
//                               moment it stopped listening), listen again on the same port(s), and
//                               from then on record the time of every accepted connection and of
//                               every completed upgrade.
//   { cmd: 'report' }           send everything recorded.
// Server -> parent: { type: 'listening', ports }, { type: 'down', ... }, { type: 'back', ... },
// { type: 'report', ... }. Times are ms on the monotonic clock (process.hrtime), which every
// process on the machine shares.

const net = require('node:net')
const { acceptUpgrade, encodeFrame, OP_TEXT } = require('./wsraw')

const config = JSON.parse(process.argv[2] || '{}')
const PORTS = Math.max(1, config.ports | 0 || 1)
const BACKLOG = config.backlog ?? 4096

const GREETING = encodeFrame(OP_TEXT, Buffer.from('hello'))
const nowMs = () => Number(process.hrtime.bigint() / 1000n) / 1000
const noop = () => {}

function send(msg) {
  if (process.send) process.send(msg)
  else console.log(JSON.stringify(msg))
}

process.on('disconnect', () => process.exit(0))

const sockets = new Set()
let recording = false // true once back after the restart
const accepts = [] // ms, every accepted TCP connection after the restart
const upgrades = [] // ms, every completed upgrade (101 written) after the restart
let acceptsBefore = 0
let upgradesBefore = 0
let closedByPeerBefore = 0 // connections the clients closed before the restart (should be 0)
let restarting = false
let cpuAtRestart = null

function onConnection(socket) {
  const t = nowMs()
  if (recording) accepts.push(t)
  else acceptsBefore++
  sockets.add(socket)
  socket.on('error', noop)
  socket.on('close', () => {
    sockets.delete(socket)
    if (!restarting && !recording) closedByPeerBefore++
  })
  acceptUpgrade(socket, () => {
    if (recording) upgrades.push(nowMs())
    else upgradesBefore++
    // Nothing is expected from the clients (no pings: pingInterval 0 / none); discard whatever comes.
    socket.on('data', noop)
    // A greeting, as many servers send: the connections have carried a message when they are
    // dropped (redial-ws reads such a socket on the JS thread; one that never carried any, on its
    // I/O thread).
    socket.write(GREETING)
  })
}

const servers = []
const ports = []
function listenAll(portList, cb) {
  let pending = portList.length
  portList.forEach((port, i) => {
    const server = net.createServer({ noDelay: true }, onConnection)
    server.on('error', (e) => {
      console.error(`[storm-server] ${e.code || ''} ${e.message}`)
      if (e.syscall === 'listen') process.exit(1)
    })
    servers[i] = server
    server.listen({ host: '127.0.0.1', port, backlog: BACKLOG }, () => {
      ports[i] = server.address().port
      if (--pending === 0) cb()
    })
  })
}

listenAll(new Array(PORTS).fill(0), () => send({ type: 'listening', ports }))

process.on('message', (m) => {
  if (!m) return
  if (m.cmd === 'restart') {
    restarting = true
    cpuAtRestart = process.cpuUsage()
    const held = sockets.size
    const tDown = nowMs()
    for (const s of servers) s.close() // the listening sockets are closed at once: attempts are refused
    for (const s of sockets) s.destroy()
    const tDestroyed = nowMs()
    send({ type: 'down', tDown, tDestroyed, held, acceptsBefore, upgradesBefore, closedByPeerBefore })
    setTimeout(() => {
      const tListenCall = nowMs()
      recording = true
      listenAll(ports, () => send({ type: 'back', tListenCall, tBack: nowMs() }))
    }, Math.max(0, m.downMs - (nowMs() - tDown)))
  } else if (m.cmd === 'report') {
    const cpu = cpuAtRestart ? process.cpuUsage(cpuAtRestart) : null
    send({ type: 'report', accepts, upgrades, held: sockets.size, cpuSinceRestartMs: cpu ? (cpu.user + cpu.system) / 1000 : null })
  }
})
