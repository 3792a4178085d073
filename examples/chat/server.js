'use strict'
// A small chat server: every message is broadcast to everyone in the same room
// (the URL path: ws://127.0.0.1:8080/lobby), the sender included.
//
//   node examples/chat/server.js [--port 8080]
//
// It prints `listening on ws://127.0.0.1:<port>` when ready (`--port 0` picks a
// free port). Plain HTTP on the same port:
//   GET  /stats     {"openConnections","totalConnections","messages","rooms"}
//   POST /drop-all  cuts every connection (an outage, for load.js)
// SIGTERM or SIGINT stops it.
const http = require('node:http')
const { parseArgs } = require('node:util')
const { WebSocketServer, WebSocket } = require('ws')

const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' } } })

const rooms = new Map() // room name -> Set of sockets
let totalConnections = 0
let messages = 0

const stats = () => ({ openConnections: wss.clients.size, totalConnections, messages, rooms: rooms.size })

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/stats') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(stats()))
  } else if (req.method === 'POST' && req.url === '/drop-all') {
    const dropped = wss.clients.size
    for (const socket of wss.clients) socket.terminate()
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ dropped }))
  } else {
    res.writeHead(404).end()
  }
})

const wss = new WebSocketServer({ server })
wss.on('connection', (socket, req) => {
  totalConnections++
  const room = new URL(req.url, 'http://localhost').pathname
  if (!rooms.has(room)) rooms.set(room, new Set())
  const members = rooms.get(room).add(socket)
  socket.on('message', (data, isBinary) => {
    messages++
    for (const member of members) {
      if (member.readyState === WebSocket.OPEN) member.send(data, { binary: isBinary })
    }
  })
  socket.on('close', () => {
    members.delete(socket)
    if (members.size === 0) rooms.delete(room)
  })
})

server.listen(Number(values.port), '127.0.0.1', () => {
  console.log(`listening on ws://127.0.0.1:${server.address().port}`)
})

function stop() {
  for (const socket of wss.clients) socket.close(1001, 'server shutting down')
  setTimeout(() => wss.clients.forEach((s) => s.terminate()), 2_000).unref()
  wss.close()
  server.close()
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
