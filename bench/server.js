'use strict'
// Benchmark server, run in its own child process (forked by run.js) so that its
// CPU time and memory never mix with the measured client's. Listens on
// 127.0.0.1 only, reports { type: 'listening', port } over IPC and runs until
// killed (or the parent goes away).
//
//   node bench/server.js '<json config>'
//
// modes:
//   recv  { count, size, binary }  raw: after the client's first message, writes exactly `count`
//                                  pre-encoded frames, in large chunks, honouring backpressure.
//   recv  { count, framesFile }    the same with the frames read from a file (run.js writes it with
//                                  lib/deflate.js: compressed JSON-like text); negotiates
//                                  permessage-deflate, and without it sends one text frame saying so.
//   sink  { count }                raw: discards what it reads, counting whole client frames; after
//                                  `count` data frames it sends one text frame "done".
//   sink  { count, deflate: { size, pool } }
//                                  the same, negotiating permessage-deflate and keeping every byte
//                                  read; after "done" it checks them (lib/deflate.js: RSV1 on every
//                                  message, inflating in order to the expected JSON-like texts) and
//                                  sends "verify:ok …" or "verify:FAIL …".
//   echo  {}                       raw: echoes every data message.
//   wss   { deflate }              a `ws` WebSocketServer that accepts and holds connections
//                                  (perMessageDeflate: `deflate`, default false).
//   accept { deflate }             raw: completes handshakes (negotiating permessage-deflate with
//                                  `deflate`), sends nothing, answers a close and ends the socket.
//                                  The churn workloads' server: a `ws` server spends about 450 µs
//                                  of CPU per cycle, most of a cycle, which would time the server.
//   tcpecho {}                     plain TCP (no WebSocket): echoes every byte (the floor of the echo rows).
//
// `tls: { keyFile, certFile }` (recv, wss): the same over TLS (`wss:`), terminated here with
// node:tls (raw servers) or node:https (wss); the key and certificate are run.js's throwaway ones.
//   flap  { downMs }               raw: on a text "drop" it drops every connection, stops listening,
//                                  listens again on the same port `downMs` later, and tells the next
//                                  client "listen:<hrtime ns>" (the moment it listened again).

const net = require('node:net')
const tls = require('node:tls')
const {
  OP_TEXT,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  encodeFrame,
  repeatFrames,
  acceptUpgrade,
  FrameParser,
} = require('./lib/wsraw')

const fs = require('node:fs')

const config = JSON.parse(process.argv[2] || '{}')
// TLS (wss:) with run.js's throwaway certificate, or null.
const tlsOptions = config.tls ? { key: fs.readFileSync(config.tls.keyFile), cert: fs.readFileSync(config.tls.certFile) } : null
const CHUNK = 2 * 1024 * 1024

function report(msg) {
  if (process.send) process.send(msg)
  else console.log(JSON.stringify(msg))
}

process.on('disconnect', () => process.exit(0))

const noop = () => {}

/**
 * Raw server: `makeHandler(socket, { offer, extensions })` runs per upgraded connection.
 * `upgrade`: acceptUpgrade's options (`deflate`).
 */
function rawServer(makeHandler, upgrade = {}) {
  const sockets = new Set()
  const onConnection = (socket) => {
    if (tlsOptions) socket.setNoDelay(true)
    sockets.add(socket)
    socket.on('error', noop)
    socket.on('close', () => sockets.delete(socket))
    const onUpgraded = (rest, info) => {
      const h = makeHandler(socket, info)
      const parser = new FrameParser(
        (opcode, payload, fin) => {
          if (opcode === OP_CLOSE) {
            // Echo the status code back, then close our side.
            const code = payload && payload.length >= 2 ? payload.subarray(0, 2) : Buffer.alloc(0)
            if (!socket.destroyed) socket.end(encodeFrame(OP_CLOSE, code))
            return
          }
          if (opcode === OP_PING) {
            if (!socket.destroyed) socket.write(encodeFrame(OP_PONG, payload))
            return
          }
          if (opcode === OP_PONG) return
          h.onData(opcode, payload, fin)
        },
        { wantData: h.wantData },
      )
      socket.on('data', (chunk) => {
        if (h.onChunk) h.onChunk(chunk)
        parser.push(chunk)
      })
      if (h.onOpen) h.onOpen()
      if (rest.length) {
        if (h.onChunk) h.onChunk(rest)
        parser.push(rest)
      }
    }
    acceptUpgrade(socket, onUpgraded, upgrade)
  }
  // Over TLS the handler gets the TLSSocket once its handshake is done ('secureConnection').
  const server = tlsOptions ? tls.createServer(tlsOptions, onConnection) : net.createServer({ noDelay: true }, onConnection)
  if (tlsOptions) server.on('tlsClientError', (e) => console.error(`[server] TLS: ${e.code || ''} ${e.message}`))
  server.sockets = sockets
  server.on('error', (e) => {
    console.error(`[server] ${e.code || ''} ${e.message}`)
    if (e.syscall === 'listen') process.exit(1)
  })
  return server
}

function listen(server, port = 0) {
  server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
    report({ type: 'listening', port: server.address().port })
  })
}

/** Writes `chunks` in order, then `last` if any, waiting for 'drain' whenever write() says so. */
function pumpChunks(socket, chunks, last) {
  let i = 0
  const pump = () => {
    while (i < chunks.length) {
      if (socket.destroyed) return
      if (!socket.write(chunks[i++])) {
        socket.once('drain', pump)
        return
      }
    }
    if (last && !socket.destroyed) socket.write(last)
  }
  pump()
}

switch (config.mode) {
  case 'recv': {
    if (config.framesFile) {
      // Compressed frames (RSV1), written by run.js; sent only where permessage-deflate was negotiated.
      const all = fs.readFileSync(config.framesFile)
      const chunks = []
      for (let off = 0; off < all.length; off += CHUNK) chunks.push(all.subarray(off, off + CHUNK))
      listen(
        rawServer(
          (socket, { offer, extensions }) => {
            let started = false
            return {
              wantData: false,
              onData() {
                if (started) return
                started = true
                if (!extensions) {
                  const why = `server: permessage-deflate not negotiated (client offered: ${offer ? `"${offer}"` : 'nothing'})`
                  socket.write(encodeFrame(OP_TEXT, Buffer.from(why)))
                  return
                }
                pumpChunks(socket, chunks)
              },
            }
          },
          { deflate: 'compress' },
        ),
      )
      break
    }
    const opcode = config.binary ? OP_BINARY : OP_TEXT
    const payload = Buffer.alloc(config.size, config.binary ? 0xab : 0x78) // 'x'
    const frameLen = encodeFrame(opcode, payload).length
    const perChunk = Math.max(1, Math.floor(CHUNK / frameLen))
    const chunk = repeatFrames(opcode, payload, perChunk)
    const fullChunks = Math.floor(config.count / perChunk)
    const rest = config.count % perChunk
    const restChunk = rest ? repeatFrames(opcode, payload, rest) : null
    listen(
      rawServer((socket) => {
        let started = false
        return {
          wantData: false,
          onData() {
            if (started) return
            started = true
            let left = fullChunks
            const pump = () => {
              while (left > 0) {
                if (socket.destroyed) return
                left--
                if (!socket.write(chunk)) {
                  socket.once('drain', pump)
                  return
                }
              }
              if (restChunk && !socket.destroyed) socket.write(restChunk)
            }
            pump()
          },
        }
      }),
    )
    break
  }
  case 'sink': {
    if (config.deflate) {
      const { jsonMessage } = require('./lib/jsonmsg')
      const { verifyJsonFrames } = require('./lib/deflate')
      const pool = Array.from({ length: config.deflate.pool }, (_, i) => Buffer.from(jsonMessage(i, config.deflate.size)))
      listen(
        rawServer(
          (socket, { offer, extensions }) => {
            let frames = 0
            const raw = [] // every byte after the handshake, checked once the clock has stopped
            return {
              wantData: false,
              onChunk(chunk) {
                if (frames < config.count) raw.push(chunk)
              },
              onData(opcode, payload, fin) {
                if (!fin) return
                if (++frames !== config.count) return
                socket.write(encodeFrame(OP_TEXT, Buffer.from('done')))
                const say = (text) => !socket.destroyed && socket.write(encodeFrame(OP_TEXT, Buffer.from(text)))
                if (!extensions) {
                  say(`verify:FAIL permessage-deflate not negotiated (client offered: ${offer ? `"${offer}"` : 'nothing'})`)
                  return
                }
                verifyJsonFrames(raw, { count: config.count, pool }).then(
                  (r) => {
                    raw.length = 0
                    const stats = `${r.compressed}/${config.count} compressed, ${r.payloadBytes} payload bytes for ${r.rawBytes} of text`
                    say(`verify:${r.ok ? 'ok' : 'FAIL'} ${JSON.stringify({ ...r, extensions, stats })}`)
                  },
                  (e) => say(`verify:FAIL ${JSON.stringify({ reason: `verification crashed: ${e.message}` })}`),
                )
              },
            }
          },
          { deflate: 'inflate' },
        ),
      )
      break
    }
    listen(
      rawServer((socket) => {
        let frames = 0
        return {
          wantData: false,
          onData(opcode, payload, fin) {
            if (!fin) return
            if (++frames === config.count) socket.write(encodeFrame(OP_TEXT, Buffer.from('done')))
          },
        }
      }),
    )
    break
  }
  case 'echo': {
    listen(
      rawServer((socket) => {
        let parts = []
        let msgOpcode = OP_TEXT
        return {
          wantData: true,
          onData(opcode, payload, fin) {
            if (opcode !== 0) msgOpcode = opcode
            if (!fin) {
              parts.push(payload)
              return
            }
            if (parts.length) {
              parts.push(payload)
              payload = Buffer.concat(parts)
              parts = []
            }
            socket.write(encodeFrame(msgOpcode, payload))
          },
        }
      }),
    )
    break
  }
  case 'accept': {
    listen(rawServer(() => ({ onData: noop }), { deflate: config.deflate ? 'inflate' : undefined }))
    break
  }
  case 'flap': {
    let port = 0
    let relistenedAt = null
    const server = rawServer((socket) => ({
      wantData: true,
      onOpen() {
        if (relistenedAt !== null) {
          socket.write(encodeFrame(OP_TEXT, Buffer.from(`listen:${relistenedAt}`)))
          relistenedAt = null
        }
      },
      onData(opcode, payload) {
        if (opcode !== OP_TEXT || payload.toString() !== 'drop') return
        server.close()
        for (const s of server.sockets) s.destroy()
        setTimeout(() => {
          // Set before listening (a client can't connect earlier), refined once listening is reported.
          relistenedAt = process.hrtime.bigint().toString()
          server.listen({ host: '127.0.0.1', port, backlog: 4096 }, () => {
            if (relistenedAt !== null) relistenedAt = process.hrtime.bigint().toString()
          })
        }, config.downMs ?? 200)
      },
    }))
    server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => {
      port = server.address().port
      report({ type: 'listening', port })
    })
    break
  }
  case 'wss': {
    const { WebSocketServer } = require('ws')
    const common = { perMessageDeflate: config.deflate ?? false, clientTracking: false }
    let wss
    if (tlsOptions) {
      // wss: node:https terminates TLS, ws takes the upgrades.
      const https = require('node:https')
      const server = https.createServer(tlsOptions)
      server.on('tlsClientError', (e) => console.error(`[server] TLS: ${e.code || ''} ${e.message}`))
      server.on('error', (e) => {
        console.error(`[server] ${e.code || ''} ${e.message}`)
        if (e.syscall === 'listen') process.exit(1)
      })
      wss = new WebSocketServer({ server, ...common })
      server.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => report({ type: 'listening', port: server.address().port }))
    } else {
      wss = new WebSocketServer({ host: '127.0.0.1', port: 0, backlog: 4096, ...common })
      wss.on('listening', () => report({ type: 'listening', port: wss.address().port }))
    }
    wss.on('connection', (ws) => ws.on('error', noop))
    // e.g. EMFILE on accept: keep serving the connections we have; the client sees the failure.
    wss.on('error', (e) => console.error(`[server] ${e.code || ''} ${e.message}`))
    break
  }
  case 'tcpecho': {
    const server = net.createServer({ noDelay: true }, (socket) => {
      socket.on('error', noop)
      socket.pipe(socket)
    })
    server.on('error', (e) => {
      console.error(`[server] ${e.code || ''} ${e.message}`)
      if (e.syscall === 'listen') process.exit(1)
    })
    listen(server)
    break
  }
  default:
    console.error(`unknown server mode ${config.mode}`)
    process.exit(2)
}
