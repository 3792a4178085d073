'use strict'
// Not a WebSocket peer: the Node half of the echo rows' floor. Plain TCP round trips on loopback
// (node:net, TCP_NODELAY) against bench/server.js's `tcpecho` mode: one message of `size` bytes in
// flight at a time, each timed as the harness times an echo (process.hrtime.bigint()). run.js
// also runs the Rust client (benches/ceiling.rs `tcp-echo`) and keeps the lower figures.
//
//   node bench/peers/net-echo.js '{"port":1234,"count":2000,"size":64,"warmup":200}'
//
// Reports { type: 'result', ok, result | error } over IPC (or on stdout), as the peers do.

const net = require('node:net')
const { latencySummary } = require('./harness')

const now = process.hrtime.bigint

function run({ port, count, size, warmup = 0 }) {
  return new Promise((resolve, reject) => {
    const msg = Buffer.alloc(size, 0x78)
    const total = warmup + count
    const lat = new Float64Array(count)
    let i = 0
    let got = 0
    let t = 0n
    const socket = net.connect({ host: '127.0.0.1', port, noDelay: true }, () => {
      t = now()
      socket.write(msg)
    })
    socket.on('data', (chunk) => {
      got += chunk.length
      if (got < size) return
      if (got > size) return reject(new Error(`${got} bytes came back for ${size} sent`))
      const t1 = now()
      got = 0
      if (i >= warmup) lat[i - warmup] = Number(t1 - t) / 1e3
      if (++i === total) {
        socket.destroy()
        return resolve(latencySummary(lat))
      }
      t = now()
      socket.write(msg)
    })
    socket.on('error', (e) => reject(e))
    socket.on('close', () => {
      if (i < total) reject(new Error(`closed after ${i} round trips`))
    })
  })
}

function report(msg) {
  return new Promise((resolve) => {
    if (process.send) process.send(msg, () => resolve())
    else process.stdout.write(JSON.stringify(msg) + '\n', () => resolve())
  })
}

async function main() {
  process.on('disconnect', () => process.exit(1))
  let msg
  try {
    msg = { type: 'result', ok: true, result: await run(JSON.parse(process.argv[2] || '{}')) }
  } catch (e) {
    msg = { type: 'result', ok: false, error: `${e.code ? e.code + ': ' : ''}${e.message}` }
  }
  await report(msg)
  process.exit(msg.ok ? 0 : 1)
}

main()
