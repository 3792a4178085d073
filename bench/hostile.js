#!/usr/bin/env node
'use strict'
// Hostile-peer measurements: what a flooding server costs the client, redial-ws
// side by side with the `ws` client. See bench/README.md ("Hostile peers").
//
//   node bench/hostile.js [--only s1,s2] [--peers redial-ws,ws] [--timeout S] [--max-rss MiB] [--scale F]
//
// Every (scenario, client) runs a fresh server process and a fresh client
// process (this same file, with --role server / --role client), so that the
// RSS measured is the client's alone and the server's CPU never counts as the
// client's. Everything listens on 127.0.0.1 only. Prints a markdown table.
//
// Figures, per client process:
//   RSS growth     peak RSS during the scenario minus RSS just before connecting. The peak is
//                  the kernel's high-water mark (VmHWM, reset at the baseline), so a spike during
//                  a blocked event loop is not missed.
//   longest stall  longest gap between two ticks of a 10 ms setInterval, minus 10 ms: the longest
//                  time the client kept the event loop from running anything else.
//   handled        pings ('ping' events) or messages ('message' events) the client's listeners
//                  saw, out of what the server sent.
// A client that runs past --timeout or past --max-rss is killed; its row says so, with the peak
// RSS this process saw and, as the stall, the time since the client last got a turn (a lower bound).

const { fork } = require('node:child_process')
const fs = require('node:fs')
const net = require('node:net')
const path = require('node:path')
const os = require('node:os')
const { makeCerts } = require('./lib/certs')
const { tls13Server, sessionTickets, HANDSHAKE, APPLICATION_DATA } = require('./lib/tls13')
const { OP_TEXT, OP_BINARY, OP_PING, encodeFrame, repeatFrames, acceptUpgrade } = require('./lib/wsraw')

const MiB = 1024 * 1024
const TICK_MS = 10

// ---------------------------------------------------------------- scenarios

// `server` is what the server does after the upgrade; `client` what the client's listener does.
// Every flood ends with the text message "end" (where the server reads: otherwise the client may
// rightly stop reading, and the flood ends when nothing has arrived for `quietMs`).
function scenarios(scale) {
  const n = (x) => Math.max(1, Math.round(x * scale))
  return [
    {
      id: 'ping-noread',
      title: `ping flood, server never reads (${n(1_000_000).toLocaleString('en-US')} pings)`,
      server: { kind: 'pings-noread', count: n(1_000_000) },
      client: { quietMs: 1000 },
      unit: 'pings',
    },
    {
      id: 'ping-read',
      title: `ping flood, server reads (${n(200)} MB or ${n(10)} s)`,
      server: { kind: 'pump', frame: 'ping', maxBytes: n(200e6), maxMs: n(10_000) },
      client: {},
      unit: 'pings',
    },
    {
      id: 'bin64k-slow',
      title: `64 KiB binary at line rate, 0.5 ms per message (${n(1)} GB or ${n(10)} s)`,
      server: { kind: 'pump', frame: 'bin64k', maxBytes: n(1e9), maxMs: n(10_000) },
      client: { busyMs: 0.5 },
      unit: 'messages',
    },
    {
      id: 'text64',
      title: `64 B text at line rate, counting listener (${n(700)} MB or ${n(10)} s)`,
      server: { kind: 'pump', frame: 'text64', maxBytes: n(700e6), maxMs: n(10_000) },
      client: {},
      unit: 'messages',
    },
    {
      // Empty fragments add nothing to the message's size: maxPayload does not end them.
      id: 'fragments',
      title: `one text message in empty fragments at line rate (${n(700)} MB or ${n(10)} s)`,
      server: { kind: 'pump', frame: 'fragment', maxBytes: n(700e6), maxMs: n(10_000) },
      client: {},
      unit: 'messages',
    },
    {
      // TLS records that bring no data: nothing reaches the listener, and rustls limits their number nowhere.
      id: 'tickets',
      title: `TLS 1.3 session tickets at line rate, \`wss:\` (${n(700)} MB or ${n(10)} s)`,
      server: { kind: 'tickets', maxBytes: n(700e6), maxMs: n(10_000) },
      client: { tls: true },
      unit: 'messages',
      sentUnit: 'tickets',
    },
  ]
}

// ---------------------------------------------------------------- server role

const END = encodeFrame(OP_TEXT, Buffer.from('end'))

/** A ~2 MiB chunk of identical frames, and one frame. */
function chunkOf(kind) {
  if (kind === 'fragment') {
    // 0x00 0x00: a continuation frame, not the last, empty.
    return { chunk: Buffer.alloc(2 * MiB), one: Buffer.alloc(2) }
  }
  const [opcode, payload] =
    kind === 'ping'
      ? [OP_PING, Buffer.alloc(0)]
      : kind === 'bin64k'
        ? [OP_BINARY, Buffer.alloc(64 * 1024, 0xab)]
        : [OP_TEXT, Buffer.alloc(64, 0x78)]
  const one = encodeFrame(opcode, payload)
  return { chunk: repeatFrames(opcode, payload, Math.max(1, Math.floor((2 * MiB) / one.length))), one }
}

/**
 * Writes `next()` to `socket` as fast as the client takes it, for `cfg.maxBytes` or `cfg.maxMs`,
 * then `last()`; reports what was sent (`frames(bytes, chunks)` of it) once it stops, or once the
 * client goes first (ws does, when it has too many pongs pending).
 */
function flood(socket, cfg, send, next, last, frames) {
  const t0 = performance.now()
  let bytes = 0
  let chunks = 0
  let reported = false
  const report = () => {
    if (reported) return
    reported = true
    send({ type: 'sent', frames: frames(bytes, chunks), bytes, ms: performance.now() - t0 })
  }
  socket.on('close', report)
  const pump = () => {
    for (;;) {
      if (socket.destroyed) return report()
      if (bytes >= cfg.maxBytes || performance.now() - t0 >= cfg.maxMs) {
        report()
        socket.write(last())
        return
      }
      const chunk = next()
      bytes += chunk.length
      chunks++
      if (!socket.write(chunk)) return void socket.once('drain', pump)
    }
  }
  pump()
}

/**
 * A `wss:` server that upgrades, sends "hi" and, once the client echoes it (by then OpenSSL has
 * written all it will), sends TLS 1.3 session tickets it seals itself (bench/lib/tls13.js), 900 to
 * a record, for `maxBytes` or `maxMs`, then "end".
 */
function serveTickets(cfg, send) {
  const pem = { key: fs.readFileSync(cfg.keyFile), cert: fs.readFileSync(cfg.certFile) }
  const TICKETS = 900
  const tickets = sessionTickets(TICKETS)
  return net.createServer({ noDelay: true }, (raw) => {
    raw.on('error', () => {})
    const { socket, takeOver } = tls13Server(raw, pem)
    acceptUpgrade(socket, () => {
      socket.write(encodeFrame(OP_TEXT, Buffer.from('hi')))
      socket.once('data', () => {
        const seal = takeOver()
        flood(raw, cfg, send, () => seal(HANDSHAKE, tickets), () => seal(APPLICATION_DATA, END), (_, records) => records * TICKETS)
      })
    })
  })
}

function serve(cfg) {
  const send = (m) => process.send && process.send(m)
  process.on('disconnect', () => process.exit(0))
  const server = cfg.kind === 'tickets' ? serveTickets(cfg, send) : net.createServer({ noDelay: true }, (socket) => {
    socket.on('error', () => {})
    acceptUpgrade(socket, () => {
      if (cfg.kind === 'pings-noread') {
        // Never read: the pongs the client owes can only pile up on the client's side.
        socket.pause()
        const one = encodeFrame(OP_PING, Buffer.alloc(0))
        socket.write(repeatFrames(OP_PING, Buffer.alloc(0), cfg.count))
        socket.write(END)
        send({ type: 'sent', frames: cfg.count, bytes: cfg.count * one.length })
        return
      }
      // Read and discard whatever the client sends (pongs, its close frame).
      socket.resume()
      const { chunk, one } = chunkOf(cfg.frame)
      // The message the fragments belong to begins (text, not the last frame, empty); it ends before "end".
      const [begin, finish] = cfg.frame === 'fragment' ? [Buffer.from([0x01, 0x00]), Buffer.from([0x80, 0x00])] : []
      if (begin) socket.write(begin)
      const finished = finish ? Buffer.concat([finish, END]) : END
      flood(socket, cfg, send, () => chunk, () => finished, (bytes) => Math.floor(bytes / one.length))
    })
  })
  server.listen({ host: '127.0.0.1', port: 0 }, () => send({ type: 'listening', port: server.address().port }))
}

// ---------------------------------------------------------------- client role

function highWaterMark() {
  try {
    const m = /^VmHWM:\s*(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'latin1'))
    return m ? Number(m[1]) * 1024 : 0
  } catch {
    return 0
  }
}

function connectPeer(peer, url, h, ca) {
  if (peer === 'redial-ws') {
    const { ReconnectingWebSocket } = require('..')
    const c = new ReconnectingWebSocket(url, { maxRetries: 0, pingInterval: 0, ...(ca && { tls: { ca } }) })
    c.on('open', h.onOpen)
    c.on('ping', h.onPing)
    c.on('message', h.onMessage)
    c.on('error', () => {})
    c.on('close', h.onClose)
    return c
  }
  const WebSocket = require('ws')
  const ws = new WebSocket(url, { perMessageDeflate: false, ...(ca && { ca }) })
  ws.on('open', h.onOpen)
  ws.on('ping', h.onPing)
  // Like bench/peers/ws.js: text is handed to the listener as a string, as redial-ws does.
  ws.on('message', (data, isBinary) => h.onMessage(isBinary ? data : data.toString(), isBinary))
  ws.on('error', () => {})
  ws.on('close', h.onClose)
  return ws
}

function client(cfg) {
  const send = (m) => process.send && process.send(m)
  if (typeof global.gc === 'function') global.gc()
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5') // resets VmHWM
  } catch {}
  const base = process.memoryUsage.rss()
  send({ type: 'baseline', rss: base })
  let peak = base
  let maxGap = 0
  let last = performance.now()
  let lastAlive = 0
  const timer = setInterval(() => {
    const now = performance.now()
    maxGap = Math.max(maxGap, now - last)
    last = now
    peak = Math.max(peak, process.memoryUsage.rss())
    if (now - lastAlive >= 100) {
      lastAlive = now
      send({ type: 'alive' })
    }
  }, TICK_MS)
  const t0 = performance.now()
  let pings = 0
  let messages = 0
  let lastEventAt = performance.now()
  let opened = false
  let closeCode = null
  let done = false
  const busyMs = cfg.busyMs || 0
  const finish = (how) => {
    if (done) return
    done = true
    clearInterval(timer)
    maxGap = Math.max(maxGap, performance.now() - last)
    peak = Math.max(peak, process.memoryUsage.rss(), highWaterMark())
    const result = {
      type: 'result',
      how,
      closeCode,
      opened,
      pings,
      messages,
      seconds: (performance.now() - t0) / 1000,
      growthMiB: (peak - base) / MiB,
      stallMs: Math.max(0, maxGap - TICK_MS),
    }
    // The measurement is over; how either client closes is not part of it.
    if (process.send) process.send(result, () => process.exit(0))
    else {
      console.log(JSON.stringify(result))
      process.exit(0)
    }
  }
  const ca = cfg.caFile && fs.readFileSync(cfg.caFile)
  const url = ca ? `wss://localhost:${cfg.port}/` : `ws://127.0.0.1:${cfg.port}/`
  const peer = connectPeer(cfg.peer, url, {
    onOpen: () => (opened = true),
    onPing: () => {
      pings++
      lastEventAt = performance.now()
    },
    onMessage: (data, isBinary) => {
      lastEventAt = performance.now()
      if (!isBinary && data === 'end') return finish('end')
      // The `wss:` server's cue (bench/lib/tls13.js): echoed, not counted.
      if (ca && !isBinary && data === 'hi') return peer.send('hi')
      messages++
      if (busyMs > 0) {
        const until = performance.now() + busyMs
        while (performance.now() < until);
      }
    },
    onClose: (info) => {
      closeCode = typeof info === 'number' ? info : info && info.code
      finish('closed')
    },
  }, ca)
  if (cfg.quietMs) {
    setInterval(() => {
      if (opened && performance.now() - lastEventAt > cfg.quietMs) finish('quiet')
    }, 50).unref()
  }
}

// ---------------------------------------------------------------- orchestrator

function parseArgs(argv) {
  const out = { timeout: 90, maxRss: 3072, scale: 1 }
  for (let i = 0; i < argv.length; i++) {
    const [k, inline] = argv[i].startsWith('--') ? argv[i].slice(2).split(/=(.*)/s) : [argv[i], undefined]
    const val = () => (inline !== undefined ? inline : argv[++i])
    switch (k) {
      case 'role':
        out.role = val()
        out.config = JSON.parse(val())
        break
      case 'only':
        out.only = val().split(',').filter(Boolean)
        break
      case 'peers':
        out.peers = val().split(',').filter(Boolean)
        break
      case 'timeout':
        out.timeout = Number(val())
        break
      case 'max-rss':
        out.maxRss = Number(val())
        break
      case 'scale':
        out.scale = Number(val())
        break
      default:
        console.error(`unknown argument: ${argv[i]} (see bench/README.md, "Hostile peers")`)
        process.exit(2)
    }
  }
  for (const [k, flag] of [['timeout', 'timeout'], ['maxRss', 'max-rss'], ['scale', 'scale']]) {
    if (!(out[k] > 0)) {
      console.error(`--${flag} needs a positive number`)
      process.exit(2)
    }
  }
  return out
}

const STDIO = ['ignore', 'pipe', 'pipe', 'ipc']
const live = new Set()
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL')
})

function spawnRole(role, config, execArgv = []) {
  const c = fork(__filename, ['--role', role, JSON.stringify(config)], { execArgv, stdio: STDIO })
  live.add(c)
  c.on('exit', () => live.delete(c))
  let err = ''
  c.stdout.resume()
  c.stderr.on('data', (d) => (err = (err + d).slice(-4096)))
  c.stderrText = () => err.trim()
  return c
}

function startServer(config) {
  return new Promise((resolve, reject) => {
    const s = spawnRole('server', config)
    s.sent = null
    s.on('message', (m) => {
      if (m.type === 'listening') resolve({ child: s, port: m.port })
      if (m.type === 'sent') {
        s.sent = m
        s.emit('sent')
      }
    })
    s.once('exit', (code, signal) => reject(new Error(`server exited (${code ?? signal}): ${s.stderrText()}`)))
  })
}

function statusOf(pid) {
  try {
    const t = fs.readFileSync(`/proc/${pid}/status`, 'latin1')
    const kb = (k) => Number((new RegExp(`^${k}:\\s*(\\d+) kB`, 'm').exec(t) || [0, 0])[1]) * 1024
    return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
  } catch {
    return { rss: 0, hwm: 0 }
  }
}

function runClient(config, opts) {
  return new Promise((resolve) => {
    const c = spawnRole('client', config, ['--expose-gc'])
    let result = null
    let base = 0
    let peak = 0
    let lastAlive = performance.now()
    let killed = null
    const t0 = performance.now()
    const sampler = setInterval(() => {
      const s = statusOf(c.pid)
      peak = Math.max(peak, s.hwm, s.rss)
      if (s.rss > opts.maxRss * MiB && !killed) {
        killed = `RSS over ${opts.maxRss} MiB`
        c.kill('SIGKILL')
      }
    }, 50)
    const timer = setTimeout(() => {
      killed = `still running after ${opts.timeout} s`
      peak = Math.max(peak, statusOf(c.pid).hwm)
      c.kill('SIGKILL')
    }, opts.timeout * 1000)
    c.on('message', (m) => {
      if (m.type === 'baseline') base = m.rss
      else if (m.type === 'alive') lastAlive = performance.now()
      else if (m.type === 'result' && !result) result = m
    })
    c.on('exit', (code, signal) => {
      clearInterval(sampler)
      clearTimeout(timer)
      const silentMs = performance.now() - lastAlive
      resolve({ result, code, signal, killed, stderr: c.stderrText(), peakGrowthMiB: base ? (peak - base) / MiB : null, silentMs, ms: performance.now() - t0 })
    })
  })
}

const fmt = (x, d = 0) => (x === null || x === undefined || !Number.isFinite(x) ? 'n/a' : x.toFixed(d))

function row(s, peer, r, sent) {
  const out = sent ? ` / ${Math.round(sent.frames).toLocaleString('en-US')} ${s.sentUnit ? `${s.sentUnit} ` : ''}sent` : ''
  if (r.result) {
    const handled = s.unit === 'pings' ? r.result.pings : r.result.messages
    const how = r.result.how
    const note = how === 'end' ? '' : how === 'closed' ? ` (connection closed, ${r.result.closeCode})` : ` (${how})`
    return `| ${s.title} | ${peer} | ${fmt(r.result.growthMiB, 1)} | ${fmt(r.result.stallMs)} | ${handled.toLocaleString('en-US')} ${s.unit}${out}${note} |`
  }
  const why = r.killed ? `killed: ${r.killed}` : `crashed: ${r.signal ? `signal ${r.signal}` : `exit code ${r.code}`}`
  return `| ${s.title} | ${peer} | >= ${fmt(r.peakGrowthMiB, 1)} | >= ${fmt(r.silentMs)} | ${why}${out} |`
}

async function main() {
  const args = parseArgs(process.argv.slice(2))
  if (args.role === 'server') return serve(args.config)
  if (args.role === 'client') return client(args.config)
  const peers = ['redial-ws', 'ws'].filter((p) => !args.peers || args.peers.includes(p))
  const list = scenarios(args.scale).filter((s) => !args.only || args.only.includes(s.id))
  if (!peers.length || !list.length) {
    console.error(`nothing selected: --only ${scenarios(1).map((x) => x.id).join(',')} --peers redial-ws,ws`)
    process.exit(2)
  }
  const versions = {
    'redial-ws': require('../package.json').version,
    ws: require('ws/package.json').version,
  }
  console.error(`node ${process.version}, ${peers.map((p) => `${p} ${versions[p]}`).join(', ')}`)
  const lines = [
    '| scenario | client | RSS growth (MiB) | longest event-loop stall (ms) | messages/pings handled |',
    '| --- | --- | ---: | ---: | --- |',
  ]
  let certs = null
  if (list.some((s) => s.client.tls)) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redial-hostile-'))
    process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }))
    certs = makeCerts(dir)
  }
  let failures = 0
  for (const s of list) {
    for (const peer of peers) {
      const tlsFiles = s.client.tls ? { server: { keyFile: certs.keyFile, certFile: certs.certFile }, client: { caFile: certs.caFile } } : { server: {}, client: {} }
      const server = await startServer({ ...s.server, ...tlsFiles.server })
      const r = await runClient({ ...s.client, ...tlsFiles.client, peer, port: server.port }, args)
      // A server whose client went away reports what it sent as it sees the connection close.
      if (!server.child.sent) {
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, 1000)
          server.child.once('sent', () => {
            clearTimeout(timer)
            resolve()
          })
        })
      }
      const sent = server.child.sent
      server.child.kill('SIGKILL')
      if (!r.result) {
        failures++
        if (r.stderr) console.error(`[${s.id} ${peer}] ${r.stderr.split('\n').slice(-6).join('\n')}`)
      }
      const line = row(s, peer, r, sent)
      console.error(line)
      lines.push(line)
    }
  }
  console.log(lines.join('\n'))
  process.exitCode = failures ? 1 : 0
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
