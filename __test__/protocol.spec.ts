// Transport and protocol: TLS, CONNECT proxies, subprotocols, limits, close codes.
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import http from 'node:http'
import https from 'node:https'
import { X509Certificate, createHash } from 'node:crypto'
import { createRequire } from 'node:module'
import net from 'node:net'
import tls, { type DetailedPeerCertificate } from 'node:tls'
import zlib from 'node:zlib'
import test, { type ExecutionContext } from 'ava'
import { WebSocket, WebSocketServer } from 'ws'

import { type LookupFunction, ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { CLIENT_PASSPHRASE, makeCerts } from './certs.js'
import { APPLICATION_DATA, tls13Server } from '../bench/lib/tls13.js'
import { HOLD_EVERY_DESCRIPTOR, PACKAGE_ENTRY, Recorder, acceptUpgrade, connectProxy, peakRssOf, quiescent, rawServer, runNodeScript, runNodeScriptLimited, until, wsServer } from './helpers.js'

const certs = makeCerts({ clients: true, intermediate: true })
const clients = certs.clients!

/** `requireClientCert`: the server asks for a client certificate from our CA and refuses a client without one. */
async function wssServer({ requireClientCert = false } = {}) {
  const clientAuth = requireClientCert ? { ca: certs.ca, requestCert: true, rejectUnauthorized: true } : {}
  const server = https.createServer({ key: certs.key, cert: certs.cert, ...clientAuth })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (s) => s.on('message', (d, bin) => s.send(d, { binary: bin })))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    wss,
    close: () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate()
        wss.close()
        server.close(() => r())
      }),
  }
}

test.serial('wss:// with a CA made at test time: connects and echoes', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { ca: Buffer.from(certs.ca) } })
  const r = new Recorder(client)
  await r.next('open')
  client.send('over tls')
  t.is(await r.next('message'), 'over tls')
  await client.disconnect()
  // The IP SAN works too.
  const byIp = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, { tls: { ca: certs.ca } })
  await new Recorder(byIp).next('open')
  await byIp.disconnect()
  await quiescent()
})

test.serial("over wss: a server that closes and drops the socket at once closes cleanly, as ws's client sees it: our close frame went, the close_notify after it need not", async (t) => {
  const server = https.createServer({ key: certs.key, cert: certs.cert })
  new WebSocketServer({ server }).on('connection', (socket) => {
    socket.send('hello')
    socket.close(1000)
    setImmediate(() => socket.terminate())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const url = `wss://localhost:${(server.address() as net.AddressInfo).port}/`
  for (let i = 0; i < 5; i++) {
    const client = new ReconnectingWebSocket(url, { tls: { ca: certs.ca }, maxRetries: 0 })
    const got: string[] = []
    for await (const message of client.messages()) got.push(String(message))
    t.deepEqual(got, ['hello'], 'the iterator ends without ERR_GAVE_UP: a clean close')
    t.like(client.metrics, { connects: 1 })
    await client.disconnect()
  }
  await quiescent()
})

test.serial('over wss: a TCP close without close_notify on an open connection is ERR_SOCKET in plain words (no link to a manual), and ERR_HANDSHAKE so during the upgrade', async (t) => {
  const server = net.createServer((raw) => {
    raw.on('error', () => {})
    const socket = new tls.TLSSocket(raw, { isServer: true, key: certs.key, cert: certs.cert })
    socket.on('error', () => {})
    // Once open, the TCP connection ends under the TLS session: no close_notify.
    acceptUpgrade(socket, () => setImmediate(() => raw.destroy()))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(`wss://localhost:${(server.address() as net.AddressInfo).port}/`, { tls: { ca: certs.ca }, maxRetries: 0 })
  const r = new Recorder(client, ['open', 'error', 'close'])
  await r.next('open')
  const err = await r.next<RedialError>('error')
  t.is(err.code, 'ERR_SOCKET')
  t.is(err.message, 'connection closed without a closing handshake (nor a TLS close_notify)')
  t.like(await r.next('close'), { code: 1006, wasClean: false })
  await client.disconnect()
  // The same before the 101 answer: rustls's words (a link to its manual) were the message.
  const early = net.createServer((raw) => {
    raw.on('error', () => {})
    const socket = new tls.TLSSocket(raw, { isServer: true, key: certs.key, cert: certs.cert })
    socket.on('error', () => {})
    socket.once('data', () => raw.destroy())
  })
  early.listen(0, '127.0.0.1')
  await once(early, 'listening')
  t.teardown(() => early.close())
  const upgrading = new ReconnectingWebSocket(`wss://localhost:${(early.address() as net.AddressInfo).port}/`, { tls: { ca: certs.ca }, maxRetries: 0 })
  const e2 = await new Recorder(upgrading).next<RedialError>('error')
  t.is(e2.code, 'ERR_HANDSHAKE')
  t.is(e2.message, 'the server closed the connection during the upgrade (without a TLS close_notify)')
  await upgrading.disconnect()
})

test.serial('over wss: send() seals and writes on the JS thread; a peer that stops reading leaves the rest to the driver, in order', async (t) => {
  const native = createRequire(import.meta.url)('../lib/native.js') as { testingFastPathWrites(): number[] }
  const writes = () => {
    const [atOnce, corked] = native.testingFastPathWrites()
    return { atOnce, corked }
  }
  // The server echoes texts; binaries carry a sequence number, and the first one pauses its socket.
  let socket: tls.TLSSocket | undefined
  const seqs: number[] = []
  const server = https.createServer({ key: certs.key, cert: certs.cert })
  new WebSocketServer({ server }).on('connection', (s, req) => {
    s.on('message', (d: Buffer, binary) => {
      if (!binary) return s.send(String(d))
      seqs.push(d.readUInt32BE(0))
      if (!socket) {
        socket = req.socket as tls.TLSSocket
        socket.pause()
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(`wss://localhost:${(server.address() as net.AddressInfo).port}/`, {
    tls: { ca: certs.ca },
  })
  // On failure, the paused socket must not hold the file's later tests up.
  t.teardown(() => {
    socket?.destroy()
    return client.disconnect()
  })
  const r = new Recorder(client)
  await r.next('open')
  // Requests and responses: each reply's request was written at once, from the JS thread.
  let before = writes()
  for (let i = 0; i < 50; i++) {
    client.send(`m${i}`)
    t.is(await r.next('message'), `m${i}`)
  }
  t.deepEqual(writes(), { atOnce: before.atOnce + 50, corked: before.corked }, 'one write per request, at once')
  // A burst in one turn: the first at once, the rest sealed together after the turn.
  before = writes()
  for (let i = 0; i < 100; i++) client.send(`b${i}`)
  await Promise.resolve()
  t.deepEqual(writes(), { atOnce: before.atOnce + 1, corked: before.corked + 1 }, 'the first at once, the other 99 in one write')
  for (let i = 0; i < 100; i++) t.is(await r.next('message'), `b${i}`)
  // A peer that stops reading: 16 KiB messages, one per turn, until the socket is full and sealed
  // records wait for the driver (counted in ioBuffers); then messages go to the driver's queue.
  // A socket that refused bytes once may take more soon after (seen beside CPU hogs), and the
  // driver then writes what waited: the socket counts as full once eight messages wait.
  const message = (seq: number) => {
    const b = Buffer.alloc(16 * 1024, seq & 0xff)
    b.writeUInt32BE(seq, 0)
    return b
  }
  let sent = 0
  while (clientStats().ioBuffers === 0 || client.bufferedAmount < 8 * 16 * 1024) {
    if (sent === 4_000) t.fail('64 MiB sent and the socket never backed up')
    client.send(message(sent++))
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.truthy(socket, 'the server paused its socket')
  const backedUp = writes()
  for (let i = 0; i < 20; i++) {
    client.send(message(sent++))
    await new Promise((resolve) => setImmediate(resolve))
  }
  t.is(writes().atOnce, backedUp.atOnce, 'nothing goes ahead of the records waiting to be written')
  t.true(client.bufferedAmount >= 20 * 16 * 1024, `${client.bufferedAmount} bytes buffered`)
  socket!.resume()
  await until(() => seqs.length === sent, () => `all ${sent} messages received (${seqs.length} so far)`, 20_000)
  t.deepEqual(seqs, Array.from({ length: sent }, (_, i) => i), 'every message once, in order')
  await until(() => clientStats().ioBuffers === 0 && client.bufferedAmount === 0, 'the write buffers released once written')
  // And the connection still carries messages both ways.
  client.send('after')
  t.is(await r.next('message'), 'after')
  await client.disconnect()
  t.is(clientStats().ioBuffers, 0)
  await quiescent()
})

test.serial('over wss: bytes that are not TLS records, arriving while the JS thread reads, end the connection with a coded error; it reconnects', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  // A TCP relay in front of the server, which can put bytes of its own in the stream to the client.
  const toClient: net.Socket[] = []
  const relay = net.createServer((client) => {
    const upstream = net.connect(server.port, '127.0.0.1')
    for (const s of [client, upstream]) s.on('error', () => {})
    client.pipe(upstream)
    upstream.pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    toClient.push(client)
  })
  relay.listen(0, '127.0.0.1')
  await once(relay, 'listening')
  t.teardown(() => relay.close())
  const url = `wss://localhost:${(relay.address() as net.AddressInfo).port}/`
  const client = new ReconnectingWebSocket(url, { tls: { ca: certs.ca }, minDelay: 10, maxDelay: 10 })
  const r = new Recorder(client)
  await r.next('open')
  client.send('one')
  t.is(await r.next('message'), 'one')
  await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
  // 0x42 is no TLS content type: the session fails on the first byte.
  toClient[0].write(Buffer.alloc(64, 0x42))
  const close = await r.next('close')
  const error = await r.next('error')
  t.is(close.code, 1006)
  // As for any open connection that fails (reset, I/O error); the message says what rustls found.
  t.is(error.code, 'ERR_SOCKET')
  t.regex(error.message, /^the TLS session failed: received corrupt message/)
  t.is(clientStats().jsReaders, 0, 'the watch went with the connection')
  await r.next('open')
  client.send('two')
  t.is(await r.next('message'), 'two')
  await client.disconnect()
  t.is(clientStats().ioBuffers, 0)
  await quiescent()
})

test.serial("over wss: a TLS record that fails after one that opened (a bad MAC, a fatal alert) loses nothing of the first: its message and the server's close come first, as OpenSSL gives them", async (t) => {
  // rustls had opened the good record when the next one failed, and the read returned the error at
  // once: the message and the close code (4000 here; a 1008 was retried) were lost to ERR_SOCKET
  // 1006 (found by a hostile TLS peer review). Both records go in one TCP write.
  const text = (s: string) => Buffer.from([0x81, s.length, ...Buffer.from(s)])
  const close4000 = Buffer.from([0x88, 2 + 15, 0x0f, 0xa0, ...Buffer.from('session expired')])
  for (const failing of ['bad MAC', 'fatal alert'] as const) {
    const peer = await rawServer((raw) => {
      raw.on('error', () => {})
      const { socket, takeOver } = tls13Server(raw, certs)
      acceptUpgrade(socket as unknown as net.Socket, (ws) => {
        ws.once('data', () => {
          const seal = takeOver()
          const good = seal(APPLICATION_DATA, Buffer.concat([text('last words'), close4000]))
          let bad: Buffer
          if (failing === 'bad MAC') {
            bad = seal(APPLICATION_DATA, text('x'))
            bad[8] ^= 1
          } else {
            bad = seal(21, Buffer.from([2, 80])) // an alert record: fatal, internal_error
          }
          raw.write(Buffer.concat([good, bad]))
        })
      })
    })
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(`wss://localhost:${peer.port}/`, { tls: { ca: certs.ca }, minDelay: 1 })
    const r = new Recorder(client)
    await r.next('open')
    client.send('go')
    t.is(await r.next('message'), 'last words', failing)
    t.like(await r.next('close'), { code: 4000, reason: 'session expired', willReconnect: true }, failing)
    t.false(r.log.some((e) => e.name === 'error'), failing)
    await client.disconnect()
    await peer.close()
  }
  await quiescent()
})

test.serial('over wss: a TLS 1.2 server that asks to renegotiate ends the connection with an error that says so (rustls refuses renegotiation)', async (t) => {
  const peer = await wsServer(
    (_s, _peer, req) => (req.socket as tls.TLSSocket).renegotiate({ rejectUnauthorized: false }, () => {}),
    0,
    { key: certs.key, cert: certs.cert, maxVersion: 'TLSv1.2' },
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { tls: { ca: certs.ca }, maxRetries: 0 })
  const r = new Recorder(client)
  await r.next('open')
  const err: RedialError = await r.next('error')
  t.is(err.code, 'ERR_SOCKET')
  t.regex(err.message, /^the TLS session failed: received fatal alert: HandshakeFailure \(after the handshake, a TLS 1\.2 server that asked to renegotiate, which rustls refuses, ends so\)$/)
  t.like(await r.next('close'), { code: 1006 })
  await client.disconnect()
  await quiescent()
})

test.serial('clients with the same trust settings share one TLS config, released with its last client', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  const gcUntil = async (ok: () => boolean, what: string) => {
    await until(() => {
      global.gc!()
      return ok()
    }, what)
  }
  // Configs of earlier tests' clients may still await collection.
  await gcUntil(() => clientStats().tlsConfigs === 0, 'no TLS config alive at the start')
  const open = async (tls: object) => {
    const c = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls })
    await new Recorder(c).next('open')
    return c
  }
  let clients = [await open({ ca: certs.ca }), await open({ ca: certs.ca }), await open({ ca: certs.ca })]
  t.is(clientStats().tlsConfigs, 1, 'three clients, one config')
  clients.push(await open({ rejectUnauthorized: false }))
  t.is(clientStats().tlsConfigs, 2, 'other trust settings, another config')
  await Promise.all(clients.map((c) => c.disconnect()))
  await quiescent()
  t.is(clientStats().tlsConfigs, 2, 'disconnected clients keep their config for the next connect()')
  clients = []
  await gcUntil(() => clientStats().tlsConfigs === 0, 'configs released with their clients')
})

/** A directory with `files` (name: text), removed at the test's end. */
function tempFiles(t: ExecutionContext, files: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), 'redial-files-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return dir
}

/** For a child's script: `opensOrFails(url, tls)`, 'open' or the first error's code (no retry). */
const OPENS_OR_FAILS = `
  const opensOrFails = async (url, tls) => {
    const c = new ReconnectingWebSocket(url, { tls, maxRetries: 0 })
    const got = await new Promise((resolve) => {
      c.once('open', () => resolve('open'))
      c.once('error', (e) => resolve(e.code))
    })
    await c.disconnect()
    return got
  }
`

test.serial("tls.ca replaces the default roots, as Node's ca does: a server whose CA only the system store trusts is refused", async (t) => {
  // A child process whose system store (SSL_CERT_FILE) trusts the test CA: without `ca` it opens;
  // with `ca` naming another CA only, the certificate is refused (it was accepted: `ca` was added
  // to the default roots, and a pinned private CA did not narrow what is trusted).
  const server = await wssServer()
  t.teardown(() => server.close())
  const dir = tempFiles(t, { 'system.pem': certs.ca })
  const script = `
    const [, lib, url, otherCa, ca] = process.argv
    const { ReconnectingWebSocket } = require(lib)
    ${OPENS_OR_FAILS}
    const trials = [['none', undefined], ['other', { ca: otherCa }], ['both', { ca: [otherCa, ca] }]]
    ;(async () => {
      const out = {}
      for (const [name, tls] of trials) out[name] = await opensOrFails(url, tls)
      console.log(JSON.stringify(out))
    })()
    setTimeout(() => process.exit(3), 10000).unref()
  `
  const env = { ...process.env, SSL_CERT_FILE: join(dir, 'system.pem') }
  const { code, out, err } = await runNodeScript(script, [PACKAGE_ENTRY, `wss://localhost:${server.port}/`, certs.otherCa, certs.ca], env)
  t.is(code, 0, err)
  t.deepEqual(JSON.parse(out), { none: 'open', other: 'ERR_TLS_CERT', both: 'open' })
})

test.serial('NODE_EXTRA_CA_CERTS is trusted beside the default roots, as in Node, unless tls.ca is given; a null tls.ca is not given', async (t) => {
  // A child process with NODE_EXTRA_CA_CERTS naming the test CA (and a system store that does not
  // hold it): Node's own tls.connect and our client open without `ca` (we refused it: ERR_TLS_CERT),
  // and the chain checkServerIdentity gets ends at that CA, as Node's does.
  const server = await wssServer()
  t.teardown(() => server.close())
  const dir = tempFiles(t, { 'extra.pem': certs.ca, 'system.pem': certs.otherCa })
  const script = `
    const [, lib, port, otherCa] = process.argv
    const tls = require('node:tls')
    const { ReconnectingWebSocket } = require(lib)
    ${OPENS_OR_FAILS}
    const names = (cert) => {
      const out = []
      for (let c = cert; out.length < 5; c = c.issuerCertificate) {
        out.push(c.subject.CN)
        if (c.issuerCertificate === undefined || c.issuerCertificate === c) break
      }
      return out
    }
    const trials = [['none', undefined], ['null', { ca: null }], ['other', { ca: otherCa }]]
    ;(async () => {
      const out = {}
      const socket = tls.connect({ port: Number(port), host: '127.0.0.1', servername: 'localhost' })
      out.node = await new Promise((resolve) => {
        socket.once('secureConnect', () => resolve(names(socket.getPeerCertificate(true))))
        socket.once('error', (e) => resolve(e.code))
      })
      socket.destroy()
      for (const [name, tls] of trials) out[name] = await opensOrFails('wss://localhost:' + port + '/', tls)
      let chain
      const c = new ReconnectingWebSocket('wss://localhost:' + port + '/', { tls: { checkServerIdentity: (_h, cert) => void (chain = names(cert)) }, maxRetries: 0 })
      await new Promise((resolve) => (c.once('open', resolve), c.once('error', resolve)))
      await c.disconnect()
      out.chain = chain
      console.log(JSON.stringify(out))
    })()
    setTimeout(() => process.exit(3), 10000).unref()
  `
  const args = [PACKAGE_ENTRY, String(server.port), certs.otherCa]
  const withExtra = { ...process.env, SSL_CERT_FILE: join(dir, 'system.pem'), NODE_EXTRA_CA_CERTS: join(dir, 'extra.pem') }
  const extra = await runNodeScript(script, args, withExtra)
  t.is(extra.code, 0, extra.err)
  const chain = ['localhost', 'redial-ws test ca']
  t.deepEqual(JSON.parse(extra.out), { node: chain, none: 'open', null: 'open', other: 'ERR_TLS_CERT', chain })
  // The same child without the variable: nothing trusts the test CA.
  const { NODE_EXTRA_CA_CERTS: _, ...without } = withExtra
  const plain = await runNodeScript(script, args, without)
  t.is(plain.code, 0, plain.err)
  t.like(JSON.parse(plain.out), { node: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', none: 'ERR_TLS_CERT', null: 'ERR_TLS_CERT' })
})

test.serial('a wss: attempt that finds no file descriptor left to read the CA certificates is retried, and the next one trusts NODE_EXTRA_CA_CERTS', async (t) => {
  // A child process under a low descriptor limit takes every descriptor but one: the first
  // attempt's socket gets that one, and reading the CA certificates fails with EMFILE. That
  // failure was kept for the process (every later wss: attempt refused the server as untrusted).
  const server = await wssServer()
  t.teardown(() => server.close())
  const dir = tempFiles(t, { 'extra.pem': certs.ca, 'system.pem': certs.otherCa })
  const script = `
    const [, lib, port] = process.argv
    const fs = require('node:fs')
    const { ReconnectingWebSocket } = require(lib)
    ${HOLD_EVERY_DESCRIPTOR}
    fs.closeSync(held.pop())
    const out = { errors: [] }
    const c = new ReconnectingWebSocket('wss://127.0.0.1:' + port + '/', { minDelay: 20, maxDelay: 20, jitter: 'none', maxRetries: 3 })
    c.on('error', (e) => {
      out.errors.push({ code: e.code, cause: e.cause?.code, message: e.message })
      for (const fd of held.splice(0)) fs.closeSync(fd)
    })
    c.on('giveup', (g) => (out.giveup = g.reason))
    c.on('open', async () => {
      out.open = true
      await c.disconnect()
      console.log(JSON.stringify(out))
    })
    setTimeout(() => (console.log(JSON.stringify(out)), process.exit(3)), 10000).unref()
  `
  const env = { ...process.env, SSL_CERT_FILE: join(dir, 'system.pem'), NODE_EXTRA_CA_CERTS: join(dir, 'extra.pem') }
  const { code, out, err } = await runNodeScriptLimited('-n 256', script, [PACKAGE_ENTRY, String(server.port)], env)
  t.is(code, 0, out + err)
  const result = JSON.parse(out)
  t.true(result.open)
  t.is(result.giveup, undefined)
  t.is(result.errors.length, 1)
  t.like(result.errors[0], { code: 'ERR_TLS', cause: 'EMFILE' })
  t.regex(result.errors[0].message, /^TLS could not be set up: cannot read the CA certificates in .*system\.pem: .*\(os error \d+\)/)
})

test.serial('a bad certificate is ERR_TLS_CERT and no reconnect storm', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  let handshakes = 0
  server.wss.on('connection', () => handshakes++)
  for (const tls of [undefined, { ca: certs.otherCa }, { ca: certs.ca, servername: 'wrong.example' }]) {
    const client = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, { tls, minDelay: 1 })
    const r = new Recorder(client)
    const err: RedialError = await r.next('error')
    t.is(err.code, 'ERR_TLS_CERT', JSON.stringify(tls))
    if (tls?.ca === certs.otherCa) t.regex(err.message, /UnknownIssuer \(no trusted CA issued the server's certificate: .* tls\.ca or NODE_EXTRA_CA_CERTS\)$/)
    const giveup = await r.next('giveup')
    t.is(giveup.reason, 'policy')
    t.is(client.metrics.connectAttempts, 1)
  }
  t.is(handshakes, 0)
  // shouldReconnect can still decide otherwise.
  const stubborn = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, { minDelay: 1, maxRetries: 2, shouldReconnect: () => true })
  t.is((await new Recorder(stubborn).next('giveup')).reason, 'maxRetries')
  t.is(stubborn.metrics.connectAttempts, 3)
  await quiescent()
})

test.serial('mutual TLS: tls.cert and tls.key (EC, RSA, an encrypted key, a chain, an X.509 v1 certificate) present a client certificate; without one, ERR_TLS_CERT and no retries', async (t) => {
  const server = await wssServer({ requireClientCert: true })
  t.teardown(() => server.close())
  const seen: string[] = []
  server.wss.on('connection', (s, req) => seen.push(String((req.socket as import('node:tls').TLSSocket).getPeerCertificate().subject.CN)))
  const url = `wss://localhost:${server.port}/`
  const presented: Array<[string, object]> = [
    ['client-ec', { cert: clients.ec.cert, key: clients.ec.key }],
    ['client-rsa', { cert: Buffer.from(clients.rsa.cert), key: Buffer.from(clients.rsa.key) }],
    ['client-ec', { cert: clients.ec.cert, key: certs.encryptedKey, passphrase: CLIENT_PASSPHRASE }],
    ['client-ec', { cert: [clients.ec.cert, certs.ca], key: clients.ec.key }],
    ['client-ec', { cert: clients.ec.cert, key: clients.ec.key, rejectUnauthorized: false }],
    // As Node presents it: webpki, which cannot parse it, is for the server's certificates.
    ['client-v1', { cert: clients.v1.cert, key: clients.v1.key }],
  ]
  for (const [cn, tls] of presented) {
    const client = new ReconnectingWebSocket(url, { tls: { ca: certs.ca, ...tls } })
    const r = new Recorder(client)
    await r.next('open')
    client.send('mutual')
    t.is(await r.next('message'), 'mutual')
    t.is(seen.at(-1), cn)
    await client.disconnect()
  }
  t.is(seen.length, presented.length)
  // No client certificate: the server ends the handshake; the error says why, and a certificate
  // that is not there will not appear on a retry.
  await refusedWithoutCertificate(t, url)
  t.is(seen.length, presented.length)
  await quiescent()
})

/** A client with no certificate, to `url`'s server that requires one: ERR_TLS_CERT saying so, no retry. */
async function refusedWithoutCertificate(t: ExecutionContext, url: string) {
  const without = new ReconnectingWebSocket(url, { tls: { ca: certs.ca }, minDelay: 1 })
  const r = new Recorder(without)
  const err: RedialError = await r.next('error')
  t.is(err.code, 'ERR_TLS_CERT')
  t.regex(err.message, /requires a client certificate/)
  t.is((await r.next('giveup')).reason, 'policy')
  t.is(without.metrics.connectAttempts, 1)
}

test.serial('mutual TLS over TLS 1.2: a server that refuses our lack of a client certificate with a bare handshake_failure is ERR_TLS_CERT too, not retried', async (t) => {
  // TLS 1.3 has an alert for it (certificate_required); TLS 1.2 has only handshake_failure, which
  // was ERR_TLS, retried forever. The server asked for the certificate: that is what it means.
  const { clients } = certs as Required<typeof certs>
  const server = https.createServer({ key: certs.key, cert: certs.cert, ca: certs.ca, requestCert: true, rejectUnauthorized: true, maxVersion: 'TLSv1.2' })
  const wss = new WebSocketServer({ server })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((r) => (wss.close(), server.close(() => r()))))
  const url = `wss://localhost:${(server.address() as net.AddressInfo).port}/`
  const presenting = new ReconnectingWebSocket(url, { tls: { ca: certs.ca, cert: clients.ec.cert, key: clients.ec.key } })
  await new Recorder(presenting).next('open')
  await presenting.disconnect()
  await refusedWithoutCertificate(t, url)
  // A TLS 1.2 server that fails the handshake without having asked for a certificate stays ERR_TLS.
  const plain = https.createServer({ key: certs.key, cert: certs.cert, maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256' })
  plain.listen(0, '127.0.0.1')
  await once(plain, 'listening')
  t.teardown(() => new Promise<void>((r) => plain.close(() => r())))
  const mismatch = new ReconnectingWebSocket(`wss://localhost:${(plain.address() as net.AddressInfo).port}/`, {
    tls: { ca: certs.ca, ciphers: 'ECDHE-ECDSA-CHACHA20-POLY1305', maxVersion: 'TLSv1.2' },
    maxRetries: 0,
  })
  const m = new Recorder(mismatch)
  t.is((await m.next('error')).code, 'ERR_TLS')
  await m.next('giveup')
  await quiescent()
})

test.serial('mutual TLS with tls.pfx: a PKCS#12 file (OpenSSL 3, 3DES, unprotected) presents its certificate; its CA is trusted, as Node trusts it', async (t) => {
  const server = await wssServer({ requireClientCert: true })
  t.teardown(() => server.close())
  const seen: string[] = []
  server.wss.on('connection', (_s, req) => seen.push(String((req.socket as tls.TLSSocket).getPeerCertificate().subject.CN)))
  const url = `wss://localhost:${server.port}/`
  const pfx = certs.pfx!
  const presented = [
    // The file holds the CA that signed the server's certificate too: no tls.ca needed.
    { pfx: pfx.modern, passphrase: CLIENT_PASSPHRASE },
    { pfx: new Uint8Array(pfx.tripleDes), passphrase: Buffer.from(CLIENT_PASSPHRASE) },
    { pfx: pfx.unprotected, ca: certs.ca },
  ]
  for (const tlsOptions of presented) {
    const client = new ReconnectingWebSocket(url, { tls: tlsOptions })
    const r = new Recorder(client)
    await r.next('open')
    client.send('pkcs12')
    t.is(await r.next('message'), 'pkcs12')
    await client.disconnect()
  }
  t.deepEqual(seen, ['client-ec', 'client-ec', 'client-ec'])
  // What cannot work fails at once, naming neither the password nor the key.
  const make = (tlsOptions: object) => () => new ReconnectingWebSocket(url, { startClosed: true, tls: tlsOptions })
  const refused: Array<[object, RegExp]> = [
    [{ pfx: pfx.modern }, /protected by a password/],
    [{ pfx: pfx.modern, passphrase: 'not it' }, /password is not "tls.passphrase"/],
    [{ pfx: pfx.legacy, passphrase: CLIENT_PASSPHRASE }, /RC2.*openssl pkcs12/],
    [{ pfx: Buffer.from('not a PKCS#12 file') }, /cannot be used/],
    [{ pfx: pfx.modern.subarray(0, 200), passphrase: CLIENT_PASSPHRASE }, /cannot be used/],
    [{ pfx: pfx.modern, passphrase: CLIENT_PASSPHRASE, cert: clients.ec.cert, key: clients.ec.key }, /not both/],
    // No MAC: a password cannot be checked, and Node refuses one ("mac absent").
    [{ pfx: pfx.unprotected, passphrase: 'not it' }, /no integrity MAC/],
    // A bound on the key derivations (written in JS, slower than OpenSSL's): refused before it runs.
    [{ pfx: pfx.manyRounds, passphrase: CLIENT_PASSPHRASE }, /more than 2000000 hash rounds/],
  ]
  for (const [tlsOptions, message] of refused) {
    const err = t.throws(make(tlsOptions)) as RedialError
    t.is(err.code, 'ERR_INVALID_ARG_VALUE')
    t.regex(err.message, message)
    t.false(err.message.includes(CLIENT_PASSPHRASE) || err.message.includes('not it'))
  }
  t.like(t.throws(make({ pfx: 'a string' })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
})

/** A wss server with a self-signed certificate (`pair`) that greets each connection with 'self-signed': its port. */
async function selfSignedServer(t: ExecutionContext, pair: { key: string; cert: string }): Promise<number> {
  const server = https.createServer(pair)
  const wss = new WebSocketServer({ server })
  wss.on('connection', (s) => s.send('self-signed'))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((r) => (wss.close(), server.close(() => r()))))
  return (server.address() as net.AddressInfo).port
}

test.serial("a self-signed server certificate listed in tls.ca is trusted as Node trusts it: a CA's too (openssl req -x509's default), one with a common name and no subjectAltName too; for its names only", async (t) => {
  for (const [kind, pair] of [['with subjectAltName', certs.selfSigned], ['common name alone', certs.selfSignedCn]] as const) {
    const port = await selfSignedServer(t, pair)
    // ws (Node's OpenSSL) opens with it.
    const reference = new WebSocket(`wss://localhost:${port}/`, { ca: pair.cert })
    t.is(String((await once(reference, 'message'))[0]), 'self-signed', kind)
    reference.terminate()
    const client = new ReconnectingWebSocket(`wss://localhost:${port}/`, { tls: { ca: pair.cert } })
    t.is(await new Recorder(client).next('message'), 'self-signed', kind)
    await client.disconnect()
    // Another name than the certificate's: refused, not retried.
    const named = new ReconnectingWebSocket(`wss://localhost:${port}/`, { tls: { ca: pair.cert, servername: 'wrong.example' } })
    const r = new Recorder(named, ['error', 'giveup'])
    t.is(((await r.next('error')) as RedialError).code, 'ERR_TLS_CERT', kind)
    await r.next('giveup')
    await named.disconnect()
    // Not listed (another CA is): the error says what to do.
    const unlisted = new ReconnectingWebSocket(`wss://localhost:${port}/`, { tls: { ca: certs.otherCa } })
    const refused: RedialError = await new Recorder(unlisted).next('error')
    await unlisted.disconnect()
    t.is(refused.code, 'ERR_TLS_CERT', kind)
    t.regex(refused.message, /: give it in tls\.ca to trust it\)$/, kind)
  }
  await quiescent()
})

test.serial("a self-signed CA's certificate named by NODE_EXTRA_CA_CERTS is the server's, as one listed in tls.ca is (it was refused as a CA used as an end entity)", async (t) => {
  const pair = certs.selfSigned
  const port = await selfSignedServer(t, pair)
  const dir = tempFiles(t, { 'extra.pem': pair.cert, 'system.pem': certs.otherCa })
  const script = `
    const [, lib, url] = process.argv
    const { ReconnectingWebSocket } = require(lib)
    ${OPENS_OR_FAILS}
    ;(async () => console.log(JSON.stringify({ none: await opensOrFails(url, undefined), wrongName: await opensOrFails(url, { servername: 'wrong.example' }) })))()
    setTimeout(() => process.exit(3), 10000).unref()
  `
  const env = { ...process.env, SSL_CERT_FILE: join(dir, 'system.pem'), NODE_EXTRA_CA_CERTS: join(dir, 'extra.pem') }
  const { code, out, err } = await runNodeScript(script, [PACKAGE_ENTRY, `wss://localhost:${port}/`], env)
  t.is(code, 0, err)
  // For its names only, as when listed in tls.ca.
  t.deepEqual(JSON.parse(out), { none: 'open', wrongName: 'ERR_TLS_CERT' })
})

test.serial('rejectUnauthorized: false accepts an unknown certificate', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, { tls: { rejectUnauthorized: false } })
  await new Recorder(client).next('open')
  t.is(client.state, 'open')
  await client.disconnect()
  await quiescent()
})

test.serial('certificates webpki cannot parse (X.509 v1, an unknown critical extension): taken with rejectUnauthorized: false (TLS 1.3 and 1.2) as Node takes them; a v1 one verified is ERR_TLS_CERT that says why', async (t) => {
  // The handshake's signature is checked through webpki, which parses v3 certificates it fully
  // understands only: the connection failed even with verification off (found by running ws's
  // tests, whose fixtures are v1).
  t.regex(execFileSync('openssl', ['x509', '-noout', '-text'], { input: clients.v1.cert }).toString(), /Version: 1 \(0x0\)/)
  const dir = mkdtempSync(join(tmpdir(), 'redial-odd-cert-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const f = (name: string) => join(dir, name)
  writeFileSync(f('ext.cnf'), 'subjectAltName=IP:127.0.0.1\n1.3.6.1.4.1.55555.1=critical,ASN1:UTF8String:unknown to webpki\n')
  execFileSync('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('key.pem'), '-out', f('csr.pem'), '-subj', '/CN=odd'], { stdio: 'pipe' })
  execFileSync('openssl', ['x509', '-req', '-in', f('csr.pem'), '-signkey', f('key.pem'), '-days', '2', '-out', f('cert.pem'), '-extfile', f('ext.cnf')], { stdio: 'pipe' })
  const critical = { key: readFileSync(f('key.pem'), 'utf8'), cert: readFileSync(f('cert.pem'), 'utf8') }
  for (const [what, pair] of [['v1', clients.v1], ['critical extension', critical]] as const) {
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const server = https.createServer({ key: pair.key, cert: pair.cert, maxVersion })
      const wss = new WebSocketServer({ server })
      wss.on('connection', (s) => s.on('message', (d) => s.send(`echo: ${d}`)))
      server.listen(0, '127.0.0.1')
      await once(server, 'listening')
      const url = `wss://127.0.0.1:${(server.address() as net.AddressInfo).port}/`
      const client = new ReconnectingWebSocket(url, { tls: { rejectUnauthorized: false } })
      const r = new Recorder(client)
      await r.next('open')
      client.send(maxVersion)
      t.is(await r.next('message'), `echo: ${maxVersion}`, `${what} ${maxVersion}`)
      await client.disconnect()
      if (what === 'v1') {
        const verified = new ReconnectingWebSocket(url, { tls: { ca: certs.ca, checkServerIdentity: () => undefined } })
        const err: RedialError = await new Recorder(verified).next('error')
        t.is(err.code, 'ERR_TLS_CERT')
        t.regex(err.message, /UnsupportedCertVersion.*\(the server's certificate is X\.509 v1, and only v3 certificates can be verified: reissue it/)
        await verified.disconnect()
      }
      for (const c of wss.clients) c.terminate()
      wss.close()
      await new Promise((resolve) => server.close(resolve))
    }
  }
  await quiescent()
})

test.serial("NODE_TLS_REJECT_UNAUTHORIZED=0 is the default of rejectUnauthorized, as in Node, with Node's warning once for a client that can make a wss: connection; tls.rejectUnauthorized still decides", async (t) => {
  // The server's certificate is the test CA's, which the child does not trust.
  const server = await wssServer()
  t.teardown(() => server.close())
  const script = `
    const [, lib, url] = process.argv
    const { ReconnectingWebSocket } = require(lib)
    ${OPENS_OR_FAILS}
    let warnings = 0
    process.on('warning', (w) => /NODE_TLS_REJECT_UNAUTHORIZED/.test(w.message) && warnings++)
    ;(async () => {
      // A client that cannot make a TLS connection does not warn.
      new ReconnectingWebSocket('ws://127.0.0.1:9/', { startClosed: true })
      await new Promise((resolve) => setImmediate(resolve))
      const plain = warnings
      const out = { plain, none: await opensOrFails(url, undefined), empty: await opensOrFails(url, {}), explicit: await opensOrFails(url, { rejectUnauthorized: true }) }
      await new Promise((resolve) => setImmediate(resolve))
      console.log(JSON.stringify({ ...out, warnings }))
    })()
    setTimeout(() => process.exit(3), 10000).unref()
  `
  const url = `wss://localhost:${server.port}/`
  const unverified = await runNodeScript(script, [PACKAGE_ENTRY, url], { ...process.env, NODE_TLS_REJECT_UNAUTHORIZED: '0' })
  t.is(unverified.code, 0, unverified.err)
  t.deepEqual(JSON.parse(unverified.out), { plain: 0, none: 'open', empty: 'open', explicit: 'ERR_TLS_CERT', warnings: 1 })
  const env = { ...process.env }
  delete env.NODE_TLS_REJECT_UNAUTHORIZED
  const verified = await runNodeScript(script, [PACKAGE_ENTRY, url], env)
  t.is(verified.code, 0, verified.err)
  t.deepEqual(JSON.parse(verified.out), { plain: 0, none: 'ERR_TLS_CERT', empty: 'ERR_TLS_CERT', explicit: 'ERR_TLS_CERT', warnings: 0 })
})

test.serial('a CONNECT proxy with credentials, for ws:// and wss://', async (t) => {
  const peer = await wsServer((s) => s.send('via proxy'))
  t.teardown(() => peer.close())
  const proxy = await connectProxy('user:p@ss')
  t.teardown(() => proxy.close())
  const proxyUrl = proxy.url.replace('http://', 'http://user:p%40ss@')
  const client = new ReconnectingWebSocket(peer.url, { proxy: proxyUrl })
  t.is(await new Recorder(client).next('message'), 'via proxy')
  t.deepEqual(proxy.seen[0], { target: `127.0.0.1:${peer.port}`, auth: `Basic ${Buffer.from('user:p@ss').toString('base64')}` })
  await client.disconnect()
  const server = await wssServer()
  t.teardown(() => server.close())
  const secure = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { proxy: proxyUrl, tls: { ca: certs.ca } })
  const r = new Recorder(secure)
  await r.next('open')
  secure.send('tunnelled tls')
  t.is(await r.next('message'), 'tunnelled tls')
  t.is(proxy.seen[1].target, `localhost:${server.port}`)
  await secure.disconnect()
  await quiescent()
})

test.serial('a proxy answering 407 is ERR_PROXY_AUTH and the client gives up', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const proxy = await connectProxy('user:secret')
  t.teardown(() => proxy.close())
  const client = new ReconnectingWebSocket(peer.url, { proxy: proxy.url, minDelay: 1 })
  const r = new Recorder(client)
  const err: RedialError = await r.next('error')
  t.is(err.code, 'ERR_PROXY_AUTH')
  t.is((await r.next('giveup')).reason, 'policy')
  t.is(proxy.seen.length, 1)
  t.is(peer.accepted, 0)
  await quiescent()
})

test.serial('HTTP_PROXY / NO_PROXY from the environment when the option is absent', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const proxy = await connectProxy()
  t.teardown(() => proxy.close())
  const saved = { ...process.env }
  try {
    // Without a scheme, as curl takes it: an HTTP proxy.
    process.env.HTTP_PROXY = proxy.url.replace(/^http:\/\//, '')
    delete process.env.NO_PROXY
    const viaEnv = new ReconnectingWebSocket(peer.url)
    await new Recorder(viaEnv).next('open')
    t.is(proxy.seen.length, 1)
    await viaEnv.disconnect()
    process.env.NO_PROXY = 'example.com, 127.0.0.1'
    const direct = new ReconnectingWebSocket(peer.url)
    await new Recorder(direct).next('open')
    await direct.disconnect()
    delete process.env.NO_PROXY
    const optedOut = new ReconnectingWebSocket(peer.url, { proxy: false })
    await new Recorder(optedOut).next('open')
    await optedOut.disconnect()
    t.is(proxy.seen.length, 1, 'NO_PROXY and proxy: false bypass the proxy')
    t.is(peer.accepted, 3)
  } finally {
    process.env = saved
  }
  await quiescent()
})

test('NO_PROXY entries name hosts as curl reads them: IPv6 in brackets (with a port or not), bare, host:port, .domain and *.domain', (t) => {
  const { proxyFor } = createRequire(import.meta.url)('../lib/proxy.js') as {
    proxyFor(url: string, option: undefined, env: Record<string, string>): string | undefined
  }
  const via = (url: string, noProxy: string) => proxyFor(url, undefined, { HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: noProxy }) ?? 'direct'
  t.is(via('ws://[::1]:8080/', '[::1]'), 'direct')
  t.is(via('ws://[::1]:8080/', '[::1]:8080'), 'direct')
  t.is(via('ws://[::1]:8080/', '::1'), 'direct')
  t.is(via('ws://[::1]:8080/', '[::1]:9'), 'http://127.0.0.1:9')
  t.is(via('ws://a.example:8080/', 'a.example:8080'), 'direct')
  t.is(via('ws://a.example:8080/', 'a.example:80'), 'http://127.0.0.1:9')
  t.is(via('ws://b.a.example/', '.a.example'), 'direct')
  t.is(via('ws://b.a.example/', '*.a.example'), 'direct')
  t.is(via('ws://x.example/', 'a.example'), 'http://127.0.0.1:9')
})

test.serial('protocol and extensions are the next connection\'s once it is being made: \'\' until it opens, as a new ws socket\'s', async (t) => {
  // The first connection opens with a subprotocol and drops; every attempt after it fails.
  let connections = 0
  const peer = await rawServer((s) => {
    if (++connections > 1) return void s.destroy()
    acceptUpgrade(s, (socket) => setImmediate(() => socket.destroy()), 'Sec-WebSocket-Protocol: chat.v1\r\nSec-WebSocket-Extensions: permessage-deflate\r\n')
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { protocols: 'chat.v1', minDelay: 10, maxDelay: 10, jitter: 'none', pingInterval: 0 })
  const seen: string[] = []
  client.on('open', () => seen.push(`open ${client.protocol} ${client.extensions}`))
  const retried = new Promise<void>((resolve) =>
    client.on('reconnecting', ({ attempt }) => {
      seen.push(`reconnecting ${attempt} '${client.protocol}' '${client.extensions}'`)
      if (attempt === 2) resolve()
    }),
  )
  await retried
  // Until an attempt starts, the last connection's (as reconnecting-websocket's old socket's); then ''.
  t.deepEqual(seen, ['open chat.v1 permessage-deflate', "reconnecting 1 'chat.v1' 'permessage-deflate'", "reconnecting 2 '' ''"])
  await client.disconnect()
})

test.serial("headers as a fetch Headers or a Map are sent (they were read as an object with no properties: none went); a Cookie array goes as one line, as Node's http sends it", async (t) => {
  const heads: string[] = []
  const peer = await rawServer((s) => {
    let head = ''
    s.on('data', (chunk) => {
      head += chunk.toString('latin1')
      if (head.includes('\r\n\r\n')) {
        heads.push(head)
        s.destroy()
      }
    })
  })
  t.teardown(() => peer.close())
  const lines = (head: string, name: string) =>
    head
      .split('\r\n')
      .map((l) => l.replace(/^[^:]+/, (n) => n.toLowerCase()))
      .filter((l) => l.startsWith(`${name}:`))
  const cases = [
    new Headers({ Authorization: 'Bearer from-headers', 'X-Trace': 'h' }),
    new Map<string, string | string[]>([
      ['Authorization', 'Bearer from-map'],
      ['Cookie', ['a=1', 'b=2']],
    ]),
    { Cookie: ['c=3', 'd=4'], 'X-Multi': ['1', '2'] },
  ]
  for (const headers of cases) {
    const client = new ReconnectingWebSocket(peer.url, { headers, maxRetries: 0 })
    client.on('error', () => {})
    await new Promise((resolve) => client.once('giveup', resolve))
    await client.disconnect()
  }
  // And from a provider.
  const provided = new ReconnectingWebSocket(peer.url, { headers: () => new Headers({ Authorization: 'Bearer provided' }), maxRetries: 0 })
  provided.on('error', () => {})
  await new Promise((resolve) => provided.once('giveup', resolve))
  await provided.disconnect()
  t.is(heads.length, 4)
  t.deepEqual(lines(heads[0], 'authorization'), ['authorization: Bearer from-headers'])
  t.deepEqual(lines(heads[0], 'x-trace'), ['x-trace: h'])
  t.deepEqual(lines(heads[1], 'authorization'), ['authorization: Bearer from-map'])
  t.deepEqual(lines(heads[1], 'cookie'), ['cookie: a=1; b=2'])
  t.deepEqual(lines(heads[2], 'cookie'), ['cookie: c=3; d=4'])
  t.deepEqual(lines(heads[2], 'x-multi'), ['x-multi: 1', 'x-multi: 2'])
  t.deepEqual(lines(heads[3], 'authorization'), ['authorization: Bearer provided'])
  // What cannot be headers is refused at once, as before.
  t.throws(() => new ReconnectingWebSocket(peer.url, { headers: new Map([[1, 'x']]) as never, startClosed: true }), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => new ReconnectingWebSocket(peer.url, { headers: new Map([['bad name', 'x']]), startClosed: true }), { code: 'ERR_INVALID_HTTP_TOKEN' })
  // Telling a Headers apart must not load Node's fetch (undici: about 8 MiB, and a WebAssembly
  // instance that fails under `ulimit -v`) for every client given an object, as reading the global did.
  const script = `const { ReconnectingWebSocket } = require(process.argv[1])
    new ReconnectingWebSocket('ws://127.0.0.1:9/', { headers: { a: 'b' }, startClosed: true })
    new ReconnectingWebSocket('ws://127.0.0.1:9/', { headers: new Map([['a', 'b']]), startClosed: true })
    console.log(process.moduleLoadList.filter((m) => m.includes('undici')).length)`
  const child = await runNodeScript(script, [PACKAGE_ENTRY])
  t.is(child.code, 0, child.err)
  t.is(child.out.trim(), '0')
  await quiescent()
})

test.serial('subprotocols, origin and custom headers; a server choosing an unoffered protocol fails the handshake', async (t) => {
  let request: http.IncomingMessage | undefined
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, handleProtocols: (protocols) => (protocols.has('chat.v2') ? 'chat.v2' : false) })
  await once(wss, 'listening')
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate()
        wss.close(() => r())
      }),
  )
  wss.on('connection', (_s, req) => (request = req))
  const url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`
  const client = new ReconnectingWebSocket(url, { protocols: ['chat.v1', 'chat.v2'], origin: 'https://app.example', headers: { 'x-trace': 'abc' } })
  t.is(client.protocol, '')
  await new Recorder(client).next('open')
  t.is(client.protocol, 'chat.v2')
  t.is(client.extensions, '')
  t.is(request?.headers.origin, 'https://app.example')
  t.is(request?.headers['x-trace'], 'abc')
  await client.disconnect()

  const liar = await rawServer((s) =>
    acceptUpgrade(s, () => {}, 'Sec-WebSocket-Protocol: not-offered\r\n'),
  )
  t.teardown(() => liar.close())
  const strict = new ReconnectingWebSocket(liar.url, { protocols: 'chat.v1', minDelay: 60_000 })
  t.is(((await new Recorder(strict).next('error')) as RedialError).code, 'ERR_HANDSHAKE')
  await strict.disconnect()
  await quiescent()
})

/** A raw server that upgrades, sends `frame`, and records the close code the client answers with. */
async function misbehaving(frame: Buffer) {
  const codes: number[] = []
  const peer = await rawServer((s) =>
    acceptUpgrade(s, (sock) => {
      sock.on('data', (d) => {
        // Client frames are masked: opcode 8 = close; the code is the first 2 unmasked payload bytes.
        if ((d[0] & 0x0f) === 8 && (d[1] & 0x7f) >= 2) codes.push(((d[6] ^ d[2]) << 8) | (d[7] ^ d[3]))
      })
      sock.write(frame)
    }),
  )
  return { peer, codes }
}

test.serial("a Host header of the application's replaces the URL's, as in ws", async (t) => {
  const hosts: Array<string | undefined> = []
  const server = http.createServer()
  server.on('upgrade', (req, socket: net.Socket) => {
    hosts.push(req.headers.host)
    socket.on('error', () => {})
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const port = (server.address() as net.AddressInfo).port
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { headers: { Host: 'virtual.example' } })
  await new Recorder(client).next('giveup')
  t.deepEqual(hosts, ['virtual.example'])
  await client.disconnect()
})

test.serial('invalid UTF-8 closes with 1007, a protocol violation with 1002, an oversized message with 1009; the client retries (the code is its own, not the server verdict that 1002/1007 closes are)', async (t) => {
  const cases: Array<[Buffer, number, string, object]> = [
    [Buffer.from([0x81, 0x02, 0xc3, 0x28]), 1007, 'ERR_INVALID_UTF8', {}],
    [Buffer.from([0x83, 0x00]), 1002, 'ERR_PROTOCOL', {}], // reserved opcode
    // Judged on two bytes, as ws judges them, though the extended length never comes (the server
    // stalls): a continuation of nothing, and a ping with a 16-bit length.
    [Buffer.from([0x80, 0x7f]), 1002, 'ERR_PROTOCOL', {}],
    [Buffer.from([0x89, 0x7e]), 1002, 'ERR_PROTOCOL', {}],
    [Buffer.concat([Buffer.from([0x82, 0x7e, 0x04, 0x00]), Buffer.alloc(1024)]), 1009, 'ERR_MESSAGE_TOO_BIG', { maxPayload: 1000 }],
  ]
  for (const [frame, code, errCode, options] of cases) {
    const { peer, codes } = await misbehaving(frame)
    t.teardown(() => peer.close())
    const infos: unknown[] = []
    const shouldReconnect = (info: unknown) => void infos.push(info)
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, closeTimeout: 300, shouldReconnect, ...options })
    const r = new Recorder(client)
    const err: RedialError = await r.next('error')
    t.is(err.code as string, errCode)
    const close = await r.next('close')
    t.is(close.code, code)
    t.false(close.wasClean)
    t.true(close.willReconnect, `${errCode}: retried`)
    // The policy is told the close was the client's, for this error.
    t.like(infos, [{ kind: 'close', code, error: errCode }])
    t.is((await r.next('reconnecting')).attempt, 1)
    t.is(r.count('giveup'), 0)
    await until(() => codes.length > 0, `the server received a close frame (${code})`)
    t.deepEqual(codes, [code])
    await client.disconnect()
    await peer.close()
  }
  await quiescent()
})

test.serial("a broken frame while our close is under way is reported before the close, as ws reports it", async (t) => {
  // Invalid UTF-8 answers our close frame instead of the server's own: it was left out (the
  // close's 1007 was the only trace).
  const peer = await rawServer((s) =>
    acceptUpgrade(s, (sock) => {
      sock.on('data', (d) => {
        if ((d[0] & 0x0f) === 8) sock.write(Buffer.from([0x81, 0x02, 0xc3, 0x28]))
      })
    }),
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
  const r = new Recorder(client)
  await r.next('open')
  await client.disconnect()
  t.deepEqual(
    r.log.filter((e) => e.name !== 'open').map((e) => e.name),
    ['error', 'close'],
  )
  t.is((r.log.find((e) => e.name === 'error')!.args[0] as RedialError).code, 'ERR_INVALID_UTF8')
  // 1006, as ws reports it: our close frame had said 1000, and no frame of ours carried 1007.
  t.like(r.log.find((e) => e.name === 'close')!.args[0], { code: 1006, wasClean: false, willReconnect: false })
  await quiescent()
})

test.serial('maxFragments: a message in more frames closes with 1008 and ERR_TOO_MANY_FRAGMENTS, as ws closes; up to it, it arrives; no limit by default', async (t) => {
  /** A text message of `n` times "x", one "x" per frame. */
  const fragmented = (n: number) =>
    Buffer.concat(Array.from({ length: n }, (_, i) => Buffer.from([(i === n - 1 ? 0x80 : 0) | (i === 0 ? 0x01 : 0x00), 1, 0x78])))
  const cases: Array<[string, object, number]> = [
    ['maxFragments: 4', { maxFragments: 4 }, 4],
    ["ws's default, 16384", { maxFragments: 16_384 }, 16_384],
  ]
  for (const [what, options, max] of cases) {
    // The longest message allowed, then one frame more.
    const { peer, codes } = await misbehaving(Buffer.concat([fragmented(max), fragmented(max + 1)]))
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, closeTimeout: 300, ...options })
    const r = new Recorder(client)
    t.is(((await r.next('message')) as string).length, max, what)
    const err: RedialError = await r.next('error')
    t.is(err.code as string, 'ERR_TOO_MANY_FRAGMENTS', what)
    const close = await r.next('close')
    t.is(close.code, 1008, what)
    t.is(r.count('message'), 1, `${what}: the message over the limit is not delivered`)
    await until(() => codes.length > 0, 'the server received a close frame')
    t.deepEqual(codes, [1008], what)
    await client.disconnect()
    await peer.close()
  }
  // No limit by default (Autobahn's cases 9.3 and 9.4 send up to 65,536 fragments), nor with 0.
  const { peer } = await misbehaving(Buffer.concat([fragmented(20_000), fragmented(20_000)]))
  t.teardown(() => peer.close())
  for (const options of [{}, { maxFragments: 0 }]) {
    const unlimited = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, ...options })
    const r = new Recorder(unlimited)
    t.is(((await r.next('message')) as string).length, 20_000)
    t.is(((await r.next('message')) as string).length, 20_000)
    await unlimited.disconnect()
  }
  for (const [value, code] of [
    [-1, 'ERR_OUT_OF_RANGE'],
    [1.5, 'ERR_OUT_OF_RANGE'],
    [2 ** 32, 'ERR_OUT_OF_RANGE'],
    ['4', 'ERR_INVALID_ARG_TYPE'],
  ] as const) {
    t.like(t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, maxFragments: value as never })), { code }, String(value))
  }
  await quiescent()
})

test.serial('a connection failed for a violation reads and drops what follows until the peer closes: the echo before it and our close reach a peer that reads late', async (t) => {
  // The server sends a text, a reserved opcode and more bytes in one write, and reads nothing
  // until the client's connection is gone; then it writes once more and reads. A client that
  // dropped its socket with those bytes unread reset the connection: the server's write then
  // fails, and Node destroys the socket with the echo and the close frame in it, unread (as
  // Autobahn's server did in case 4.2.5, which writes a byte at a time).
  const VIOLATION = Buffer.concat([Buffer.from([0x81, 0x05]), Buffer.from('hello'), Buffer.from([0x83, 0x00]), Buffer.alloc(16 * 1024, 0xee)])
  let server!: net.Socket
  const peer = await rawServer((s) =>
    acceptUpgrade(s, (sock) => {
      server = sock
      sock.pause()
      sock.write(VIOLATION)
    }),
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, closeTimeout: 300 })
  client.on('message', (data) => client.send(data))
  const r = new Recorder(client)
  await until(() => server !== undefined && clientStats().openConnections === 0, "the client's connection is gone")
  const chunks: Buffer[] = []
  server.on('data', (d) => chunks.push(d))
  server.write(Buffer.from([0x89, 0x00]))
  server.resume()
  // Whatever the end (the client's socket answers that last write with a reset), what was read counts.
  await new Promise((resolve) => server.on('close', resolve))
  t.deepEqual(
    clientFrames(Buffer.concat(chunks)).map(([opcode, payload]) => [opcode, opcode === 8 ? payload.readUInt16BE(0) : payload.toString()]),
    [
      [1, 'hello'],
      [8, 1002],
    ],
  )
  t.is(((await r.next('error')) as RedialError).code, 'ERR_PROTOCOL')
  const close = await r.next('close')
  t.is(close.code, 1002)
  t.false(close.wasClean)
  await client.disconnect()
  await quiescent()
})

test.serial("a connection failed for a violation ends at the peer's TCP close, not at closeTimeout; one that goes on sending is dropped after a bounded read", async (t) => {
  // A peer that answers our close at once, as `ws` does; over TLS too (what follows is read through
  // the session), and with permessage-deflate (read by the driver alone).
  const answer = (extensions: string) => (s: net.Socket) =>
    acceptUpgrade(
      s,
      (sock) => {
        sock.on('data', (d) => {
          if ((d[0] & 0x0f) === 8) sock.end(Buffer.from([0x88, 0x02, 0x03, 0xea]))
        })
        sock.write(Buffer.from([0x83, 0x00]))
      },
      extensions,
    )
  const answering = await rawServer(answer(''))
  t.teardown(() => answering.close())
  const compressing = await rawServer(answer('Sec-WebSocket-Extensions: permessage-deflate\r\n'))
  t.teardown(() => compressing.close())
  const secure = tls.createServer({ key: certs.key, cert: certs.cert }, answer('')).listen(0, '127.0.0.1')
  await once(secure, 'listening')
  t.teardown(() => new Promise<void>((resolve) => secure.close(() => resolve())))
  for (const url of [answering.url, compressing.url, `wss://localhost:${(secure.address() as net.AddressInfo).port}/`]) {
    // closeTimeout longer than Recorder's wait: the close must come from the peer's TCP close.
    const a = new ReconnectingWebSocket(url, { minDelay: 60_000, closeTimeout: 60_000, tls: { ca: certs.ca } })
    const ra = new Recorder(a)
    let extensions: string | undefined
    a.once('open', () => (extensions = a.extensions))
    t.is(((await ra.next('error')) as RedialError).code, 'ERR_PROTOCOL', url)
    t.is(extensions, url === compressing.url ? 'permessage-deflate' : '', url)
    t.is((await ra.next('close')).code, 1002, url)
    await a.disconnect()
  }

  // A peer that floods after its violation and never reads: bounded in bytes, not only in time.
  let pumped: { bytes: number; completed: boolean } | undefined
  const flooding = await rawServer((s) =>
    acceptUpgrade(s, (sock) => {
      sock.write(Buffer.from([0x83, 0x00]))
      const chunk = Buffer.alloc(256 * 1024, 0xee)
      const out = { bytes: 0, completed: false }
      const go = () => {
        while (!sock.destroyed && out.bytes < 64 * 2 ** 20) {
          out.bytes += chunk.length
          if (!sock.write(chunk)) return void sock.once('drain', go)
        }
        out.completed = !sock.destroyed
        pumped = out
      }
      sock.on('close', () => (pumped ??= out))
      go()
    }),
  )
  t.teardown(() => flooding.close())
  const f = new ReconnectingWebSocket(flooding.url, { minDelay: 60_000, closeTimeout: 60_000 })
  const rf = new Recorder(f)
  t.is(((await rf.next('error')) as RedialError).code, 'ERR_PROTOCOL')
  t.is((await rf.next('close')).code, 1002)
  await until(() => pumped !== undefined, 'the flood stopped')
  t.false(pumped!.completed, `the server wrote all of its ${pumped!.bytes} bytes`)
  await f.disconnect()
  await quiescent()
  t.is(clientStats().ioBuffers, 0)
})

test.serial("after the peer's close, what it sends is dropped unparsed and bounded: a peer that floods after its close frame is not waited for", async (t) => {
  // Nothing may follow a close frame (RFC 6455 §5.5.1). A peer that sends its close and then 64 MiB
  // of pings, never reading: the client answers the close, reads and drops a bounded amount, and
  // ends the connection with the peer's code long before the flood is written (closeTimeout is a
  // minute). Read on the driver: plain, with permessage-deflate, and through the TLS session.
  const pings = Buffer.alloc(256 * 1024)
  for (let i = 0; i < pings.length; i += 2) pings[i] = 0x89
  const pumped = new Map<string, { bytes: number; completed: boolean }>()
  const flooder = (name: string, extensions: string) => (s: net.Socket) =>
    acceptUpgrade(
      s,
      (sock) => {
        sock.pause()
        sock.write(Buffer.from([0x88, 0x02, 0x03, 0xe8]))
        const out = { bytes: 0, completed: false }
        const go = () => {
          while (!sock.destroyed && out.bytes < 64 * 2 ** 20) {
            out.bytes += pings.length
            if (!sock.write(pings)) return void sock.once('drain', go)
          }
          out.completed = !sock.destroyed
          if (!pumped.has(name)) pumped.set(name, out)
        }
        sock.on('close', () => {
          if (!pumped.has(name)) pumped.set(name, out)
        })
        go()
      },
      extensions,
    )
  const plain = await rawServer(flooder('plain', ''))
  t.teardown(() => plain.close())
  const compressing = await rawServer(flooder('deflate', 'Sec-WebSocket-Extensions: permessage-deflate\r\n'))
  t.teardown(() => compressing.close())
  const secure = tls.createServer({ key: certs.key, cert: certs.cert }, flooder('wss', '')).listen(0, '127.0.0.1')
  await once(secure, 'listening')
  t.teardown(() => new Promise<void>((resolve) => secure.close(() => resolve())))
  const servers = [
    ['plain', plain.url],
    ['deflate', compressing.url],
    ['wss', `wss://localhost:${(secure.address() as net.AddressInfo).port}/`],
  ]
  for (const [name, url] of servers) {
    const c = new ReconnectingWebSocket(url, { minDelay: 60_000, closeTimeout: 60_000, tls: { ca: certs.ca } })
    const r = new Recorder(c)
    const close = await r.next('close')
    t.like(close, { code: 1000, wasClean: true }, name)
    await until(() => pumped.has(name), () => `${name}: the flood stopped`)
    t.false(pumped.get(name)!.completed, `${name}: the server wrote all of its ${pumped.get(name)!.bytes} bytes`)
    t.is(r.count('error'), 0, name)
    await c.disconnect()
  }
  await quiescent()
  t.is(clientStats().ioBuffers, 0)
})

test.serial('skipUTF8Validation: invalid UTF-8 in text and close reasons is decoded as Buffer#toString decodes it (U+FFFD), compressed or not', async (t) => {
  const invalid = [Buffer.from([0x68, 0x69, 0xff]), Buffer.from([0x61, 0xed, 0xa0, 0x80, 0xe2]), Buffer.from([0x82, 0xac, 0x7a, 0xe2, 0x82])]
  const reason = Buffer.from([0x62, 0xff])
  for (const perMessageDeflate of [false, { threshold: 0 }]) {
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate })
    await once(wss, 'listening')
    t.teardown(() => wss.close())
    wss.on('connection', (s) => {
      // ws sends what it is given: text frames that are not UTF-8, one message in two fragments.
      s.send(invalid[0], { binary: false })
      s.send(invalid[1], { binary: false, fin: false })
      s.send(invalid[2], { binary: false, fin: true })
      // A large one (read into its own allocation), then valid text.
      s.send(Buffer.concat([Buffer.alloc(100_000, 0x61), invalid[0]]), { binary: false })
      s.send('caf\u00e9')
      s.close(4000, reason)
    })
    const url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`
    const client = new ReconnectingWebSocket(url, { skipUTF8Validation: true, minDelay: 60_000 })
    const r = new Recorder(client)
    const messages = [await r.next('message'), await r.next('message'), await r.next('message'), await r.next('message')]
    t.is(client.extensions.startsWith('permessage-deflate'), perMessageDeflate !== false)
    const close = await r.next('close')
    await client.disconnect()
    t.deepEqual(messages, [
      invalid[0].toString(),
      Buffer.concat(invalid.slice(1)).toString(),
      'a'.repeat(100_000) + invalid[0].toString(),
      'caf\u00e9',
    ])
    t.true(messages[1].includes('\ufffd'), 'the invalid sequences became U+FFFD')
    t.like(close, { code: 4000, reason: reason.toString() })
    t.is(r.count('error'), 0)
  }
  await quiescent()
  t.like(clientStats(), { openConnections: 0, runningTasks: 0 })
})

test('skipUTF8Validation is a boolean', (t) => {
  t.like(t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, skipUTF8Validation: 1 as never })), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
})

test.serial('clients of one URL share native configuration only when their options match', async (t) => {
  const peer = await wsServer((s) => s.send(Buffer.alloc(100)))
  t.teardown(() => peer.close())
  const plain = [new ReconnectingWebSocket(peer.url), new ReconnectingWebSocket(peer.url)]
  const strict = new ReconnectingWebSocket(peer.url, { maxPayload: 50, minDelay: 60_000 })
  // Recorders from the start: events of all three may arrive while the first is awaited.
  const recorders = plain.map((c) => new Recorder(c))
  const r = new Recorder(strict)
  for (const rec of recorders) t.is((await rec.next<Buffer>('message')).length, 100)
  t.is(((await r.next('error')) as RedialError).code, 'ERR_MESSAGE_TOO_BIG')
  t.is((await r.next('close')).code, 1009)
  t.is(r.count('message'), 0)
  await Promise.all([...plain, strict].map((c) => c.disconnect()))
  await quiescent()
})

test('the configuration key stands for every native option: changing any one of them changes it', (t) => {
  const { parseOptions, configKey } = createRequire(import.meta.url)('../lib/options.js') as {
    parseOptions(o: object): { native: Record<string, unknown> }
    configKey(url: string, native: object): string
  }
  // Another value of the same kind; an absent option becomes present.
  const other = (v: unknown): unknown => {
    if (v === undefined) return 'x'
    if (v === Infinity) return 2 ** 53
    if (typeof v === 'number') return v + 1
    if (typeof v === 'boolean') return !v
    if (typeof v === 'string') return `${v}x`
    if (Array.isArray(v)) return [...v, typeof v[0] === 'number' ? 1 : 'x']
    const o = v as Record<string, unknown>
    const first = Object.keys(o)[0]
    return { ...o, [first]: other(o[first]) }
  }
  const url = 'ws://127.0.0.1:1/'
  const { native } = parseOptions({ perMessageDeflate: true, maxRetries: Infinity })
  const fields = Object.keys(native)
  t.true(fields.length > 40, 'parseOptions made the native options')
  const key = configKey(url, native)
  t.is(configKey(url, { ...native }), key, 'equal options, equal keys')
  for (const field of fields) {
    t.not(configKey(url, { ...native, [field]: other(native[field]) }), key, field)
  }
  t.not(configKey('ws://127.0.0.1:2/', native), key, 'the URL')
})

test.serial('binaryType: nodebuffer, arraybuffer, uint8array, fragments, blob', async (t) => {
  const peer = await wsServer((s) =>
    s.on('message', (data) => {
      if (String(data) !== 'fragmented') return s.send(Buffer.from([1, 2, 3]))
      s.send(Buffer.from([4, 5]), { fin: false })
      s.send(Buffer.from([6]), { fin: true })
    }),
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { binaryType: 'arraybuffer' })
  const r = new Recorder(client)
  await r.next('open')
  client.send('x')
  const ab = await r.next('message')
  t.true(ab instanceof ArrayBuffer)
  t.deepEqual([...new Uint8Array(ab)], [1, 2, 3])
  client.binaryType = 'uint8array'
  client.send('x')
  const u8 = await r.next('message')
  t.true(u8 instanceof Uint8Array && !Buffer.isBuffer(u8))
  client.binaryType = 'nodebuffer'
  client.send('x')
  t.true(Buffer.isBuffer(await r.next('message')))
  // ws's 'fragments' is an array of Buffers; the message arrives reassembled, as one.
  client.binaryType = 'fragments'
  client.send('fragmented')
  const fragments = await r.next('message')
  t.true(Array.isArray(fragments) && fragments.length === 1 && Buffer.isBuffer(fragments[0]))
  t.deepEqual([...Buffer.concat(fragments)], [4, 5, 6])
  // ws 8.18's and the WHATWG WebSocket's 'blob'.
  client.binaryType = 'blob'
  client.send('again')
  const blob = await r.next('message')
  t.true(blob instanceof Blob)
  t.deepEqual([...new Uint8Array(await blob.arrayBuffer())], [1, 2, 3])
  t.throws(() => (client.binaryType = 'text' as never), { code: 'ERR_OUT_OF_RANGE' } as never)
  await client.disconnect()
  await quiescent()
})

test.serial('credentials in the URL become Basic authorization; IPv6 literals work', async (t) => {
  let request: http.IncomingMessage | undefined
  const peer = await wsServer()
  t.teardown(() => peer.close())
  peer.wss.on('connection', (_s, req) => (request = req))
  const url = peer.url.replace('ws://', 'ws://al%40ice:s3cr%3At@')
  const client = new ReconnectingWebSocket(url)
  await new Recorder(client).next('open')
  t.is(request?.headers.authorization, `Basic ${Buffer.from('al@ice:s3cr:t').toString('base64')}`)
  t.is(request?.headers.host, `127.0.0.1:${peer.port}`, 'no credentials in the Host header')
  // Shown without the password (README: client.url).
  t.is(client.url, peer.url.replace('ws://', 'ws://al%40ice:***@'))
  await client.disconnect()
  // A second client of the same URL (credentials are never cached): same result.
  request = undefined
  const again = new ReconnectingWebSocket(url)
  await new Recorder(again).next('open')
  const second = request as http.IncomingMessage | undefined
  t.is(second?.headers.authorization, `Basic ${Buffer.from('al@ice:s3cr:t').toString('base64')}`)
  t.is(second?.headers.host, `127.0.0.1:${peer.port}`)
  await again.disconnect()

  const wss = new WebSocketServer({ host: '::1', port: 0 })
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate()
        wss.close(() => r())
      }),
  )
  const ready = await Promise.race([once(wss, 'listening').then(() => true), once(wss, 'error').then(() => false)])
  if (!ready) return t.log('no IPv6 loopback here: skipped the [::1] part')
  const v6 = new ReconnectingWebSocket(`ws://[::1]:${(wss.address() as net.AddressInfo).port}/`)
  await new Recorder(v6).next('open')
  t.is(v6.state, 'open')
  await v6.disconnect()
  await quiescent()
})

/** An unmasked server frame. */
function serverFrame(fin: boolean, opcode: number, payload: Buffer): Buffer {
  const head =
    payload.length < 126
      ? Buffer.from([(fin ? 0x80 : 0) | opcode, payload.length])
      : payload.length < 65536
        ? Buffer.from([(fin ? 0x80 : 0) | opcode, 126, payload.length >> 8, payload.length & 0xff])
        : Buffer.concat([Buffer.from([(fin ? 0x80 : 0) | opcode, 127]), Buffer.alloc(8)])
  if (payload.length >= 65536) head.writeUInt32BE(payload.length, 6)
  return Buffer.concat([head, payload])
}

/** The client's frames, unmasked: `[opcode, payload]` each. */
function clientFrames(data: Buffer): Array<[number, Buffer]> {
  const out: Array<[number, Buffer]> = []
  let at = 0
  while (at + 2 <= data.length) {
    let len = data[at + 1] & 0x7f
    let p = at + 2
    if (len === 126) [len, p] = [data.readUInt16BE(p), p + 2]
    else if (len === 127) [len, p] = [Number(data.readBigUInt64BE(p)), p + 8]
    if (p + 4 + len > data.length) break
    const mask = data.subarray(p, p + 4)
    const payload = Buffer.from(data.subarray(p + 4, p + 4 + len))
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3]
    out.push([data[at] & 0x0f, payload])
    at = p + 4 + len
  }
  return out
}

function acceptKey(head: string): string {
  const key = /sec-websocket-key: *(.*)\r\n/i.exec(head)?.[1] ?? ''
  return createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64')
}

test.serial('frames in the upgrade response packet, trickled byte by byte, fragmented around a ping; pong and close echo', async (t) => {
  const big = Buffer.alloc(100_000, 7)
  big.writeUInt32BE(0xdeadbeef, 50_000)
  let received = Buffer.alloc(0)
  const peer = await rawServer((sock) => {
    let head = ''
    const onHead = async (chunk: Buffer) => {
      head += chunk.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      sock.off('data', onHead)
      sock.on('data', (d) => (received = Buffer.concat([received, d])))
      // The response and the first frame in one write: the client must not lose what follows the head.
      const response = `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey(head)}\r\n\r\n`
      sock.write(Buffer.concat([Buffer.from(response, 'latin1'), serverFrame(true, 1, Buffer.from('first'))]))
      const rest = Buffer.concat([
        serverFrame(false, 1, Buffer.from('h\u00e9', 'utf8').subarray(0, 2)), // splits é across fragments
        serverFrame(true, 9, Buffer.from('are you there')),
        serverFrame(true, 0, Buffer.concat([Buffer.from('h\u00e9', 'utf8').subarray(2), Buffer.from('llo')])),
        serverFrame(true, 2, big),
      ])
      // Byte by byte for the small frames, then 997-byte pieces: every read boundary is exercised.
      for (let i = 0; i < rest.length; ) {
        const n = i < 64 ? 1 : 997
        sock.write(rest.subarray(i, i + n))
        i += n
        await new Promise((r) => setImmediate(r))
      }
      sock.write(serverFrame(true, 8, Buffer.concat([Buffer.from([0x0f, 0xa1]), Buffer.from('bye')]))) // 4001
    }
    sock.on('data', onHead)
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
  const r = new Recorder(client, ['open', 'message', 'close', 'error', 'ping'])
  await r.next('open')
  t.is(await r.next('message'), 'first')
  t.is(await r.next('message'), 'h\u00e9llo')
  const bin: Buffer = await r.next('message')
  t.true(Buffer.isBuffer(bin))
  t.true(bin.equals(big))
  t.is(r.count('ping'), 1)
  await until(() => clientFrames(received).some(([op]) => op === 8), 'the client echoed the close')
  const frames = clientFrames(received)
  t.deepEqual(
    frames.map(([op, p]) => [op, p.toString('latin1')]),
    [
      [10, 'are you there'],
      [8, '\x0f\xa1bye'],
    ],
    'a pong with the ping payload, then the close with the server code and reason',
  )
  peer.sockets.forEach((s) => s.end())
  const close = await r.next('close')
  t.deepEqual([close.code, close.reason, close.wasClean], [4001, 'bye', true])
  t.is(r.count('error'), 0)
  await client.disconnect()
  await quiescent()
})

test.serial("the server's close is echoed with its code and reason, as ws echoes it", async (t) => {
  const peer = await wsServer((socket) => socket.close(4001, 'bye now \u00e9'))
  t.teardown(() => peer.close())
  const echoed = new Promise<[number, string]>((resolve) =>
    peer.wss.once('connection', (socket) => socket.once('close', (code, reason) => resolve([code, reason.toString()]))),
  )
  const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0 })
  const r = new Recorder(client)
  t.like(await r.next('close'), { code: 4001, reason: 'bye now \u00e9', wasClean: true })
  t.deepEqual(await echoed, [4001, 'bye now \u00e9'])
  await client.disconnect()
})

test.serial("the server's close in the middle of a large message we send: the rest follows a piece at a time, then our answer; one copy held", async (t) => {
  const MiB = 1024 * 1024
  const large = Buffer.alloc(48 * MiB)
  for (let i = 0; i < large.length; i += 4096) large.writeUInt32BE(i, i)
  // The client's frame: 14 bytes of header, the payload; then its close echoing 1000: 8 bytes.
  const expected = 14 + large.length + 8
  let connections = 0
  const chunks: Buffer[] = []
  let gotAll!: () => void
  const allReceived = new Promise<void>((resolve) => (gotAll = resolve))
  const peer = await rawServer((sock) => {
    const n = ++connections
    acceptUpgrade(sock, () => {
      let seen = 0
      sock.on('data', (d: Buffer) => {
        if (n === 2) chunks.push(d)
        const before = seen
        seen += d.length
        if (before < MiB && seen >= MiB) {
          // The close goes out while the client is still writing the message. The first server
          // then reads no more, and the client's closeTimeout ends that connection.
          sock.write(serverFrame(true, 8, Buffer.from([0x03, 0xe8])))
          if (n === 1) sock.pause()
        }
        if (n === 2 && seen >= expected) {
          sock.end()
          gotAll()
        }
      })
    })
  })
  t.teardown(() => peer.close())
  // closeTimeout ends the first connection, and bounds the second one's writing of the rest of the
  // message (~47 MiB, to a reader on this thread) and of our close: room for a slow machine.
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, maxDelay: 10, pingInterval: 0, closeTimeout: 5_000 })
  t.teardown(() => client.disconnect().then(() => {}))
  const r = new Recorder(client, ['open', 'close', 'error'])
  await r.next('open')
  globalThis.gc?.()
  try {
    writeFileSync('/proc/self/clear_refs', '5') // Linux: VmHWM from here, a peak between two samples included
  } catch {}
  const before = process.memoryUsage.rss()
  let peak = before
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 5)
  const calls: unknown[][] = []
  client.send(large, (...args: unknown[]) => calls.push(args))
  // The first connection ends by closeTimeout, with the rest of the message unwritten: the client
  // held the message (copied from the Buffer by send()) and its pieces, not the rest framed at once.
  const first = await r.next('close', 30_000)
  clearInterval(sampler)
  t.deepEqual([first.code, first.wasClean], [1000, false], 'our close never went')
  const grew = (Math.max(peak, peakRssOf(process.pid) * MiB) - before) / MiB
  t.log(`peak RSS +${grew.toFixed(1)} MiB with a 48 MiB message cut off by the server's close`)
  t.true(grew < 72, `peak RSS grew by ${grew.toFixed(1)} MiB for one 48 MiB message`)
  t.deepEqual(calls, [], 'not sent yet')
  // The next connection takes the message whole, then our answer to the close sent during it.
  let deadline: NodeJS.Timeout | undefined
  await Promise.race([
    allReceived,
    new Promise<never>((_, reject) => {
      deadline = setTimeout(() => reject(new Error(`the second server received ${chunks.reduce((n, c) => n + c.length, 0)} of ${expected} bytes within 60 s`)), 60_000)
    }),
  ]).finally(() => clearTimeout(deadline))
  const frames = clientFrames(Buffer.concat(chunks))
  t.deepEqual(
    frames.map(([op, p]) => [op, p.length]),
    [
      [2, large.length],
      [8, 2],
    ],
  )
  t.true(frames[0][1].equals(large), 'the message arrives byte-exact')
  t.is(frames[1][1].readUInt16BE(0), 1000, 'the close echoes the server code')
  const second = await r.next('close')
  t.deepEqual([second.code, second.wasClean], [1000, true])
  t.deepEqual(calls, [[null]], 'the callback is called once, with null')
  t.is(r.count('error'), 0)
  await client.disconnect()
  await quiescent()
  await until(() => clientStats().ioBuffers === 0, 'buffers released')
})

test.serial("the server's close and TCP close in the middle of a large message we send: the half-closed socket takes the rest and our answer, a clean close; a reset there is not clean", async (t) => {
  const MiB = 1024 * 1024
  const large = Buffer.alloc(8 * MiB, 7)
  let connections = 0
  const received: Buffer[] = []
  let ended!: () => void
  const clientEnded = new Promise<void>((resolve) => (ended = resolve))
  const peer = await rawServer((sock) => {
    const n = ++connections
    acceptUpgrade(sock, () => {
      let seen = 0
      sock.on('data', (d: Buffer) => {
        if (n === 1) received.push(d)
        const before = seen
        seen += d.length
        if (before < MiB && seen >= MiB) {
          // Our close, then our TCP close (the first server reads on), or a reset (the second).
          sock.write(serverFrame(true, 8, Buffer.from([0x0f, 0xa1])))
          if (n === 1) sock.end()
          else sock.resetAndDestroy()
        }
      })
      sock.on('end', () => ended())
    })
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, maxDelay: 10, pingInterval: 0, closeTimeout: 10_000 })
  t.teardown(() => client.disconnect().then(() => {}))
  const r = new Recorder(client, ['open', 'close', 'error'])
  await r.next('open')
  const calls: unknown[][] = []
  client.send(large, (...args: unknown[]) => calls.push(args))
  t.like(await r.next('close', 30_000), { code: 4001, wasClean: true })
  await clientEnded
  const frames = clientFrames(Buffer.concat(received))
  t.deepEqual(
    frames.map(([op, p]) => [op, p.length]),
    [
      [2, large.length],
      [8, 2],
    ],
    'the whole message, then our close: the stream does not end inside a frame',
  )
  t.is(frames[1][1].readUInt16BE(0), 4001)
  t.deepEqual(calls, [[null]])

  // Reset before our close went: the server's close frame came, ours did not go.
  await r.next('open')
  client.send(large)
  // (Its code is the server's, or 1006 where the reset discarded that frame unread.)
  t.false((await r.next('close', 30_000)).wasClean)
  await client.disconnect()
  await quiescent()
})

test.serial('a burst of small and large texts and binaries, pings and a fragmented text in one write reaches the listeners whole and in order', async (t) => {
  // Small messages read one after another travel as one run of their kind, copied from the read
  // buffer; anything else (a message over 1 KiB, the other kind, a fragmented text, a ping) ends
  // the run and goes on its own.
  const expected: Array<string | Buffer> = []
  const frames: Buffer[] = []
  const text = (s: string) => {
    expected.push(s)
    frames.push(serverFrame(true, 1, Buffer.from(s)))
  }
  for (let i = 0; i < 3000; i++) {
    if (i % 500 === 7) text('é'.repeat(600)) // 1,200 bytes: over the run's limit
    if (i % 700 === 3) {
      // A few binaries in a row: a run of its own kind.
      for (let k = 0; k < 1 + (i % 5); k++) {
        const b = Buffer.from([i & 0xff, k, 2, 3])
        expected.push(b)
        frames.push(serverFrame(true, 2, b))
      }
      const large = Buffer.alloc(1500, i & 0xff)
      expected.push(large)
      frames.push(serverFrame(true, 2, large))
    }
    if (i % 900 === 5) frames.push(serverFrame(true, 9, Buffer.from('ping')))
    if (i === 1234) {
      expected.push('frag' + 'ment')
      frames.push(serverFrame(false, 1, Buffer.from('frag')), serverFrame(true, 0, Buffer.from('ment')))
    }
    text(`${i}:` + 'ü'.repeat(i % 17) + 'x'.repeat(i % 1000))
  }
  text('')
  const burst = Buffer.concat(frames)
  const peer = await rawServer((sock) => acceptUpgrade(sock, (s) => s.write(burst)))
  t.teardown(() => peer.close())
  for (const binaryType of ['nodebuffer', 'arraybuffer'] as const) {
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
    client.binaryType = binaryType
    const got: Array<string | Buffer> = []
    client.on('message', (m: string | Buffer | ArrayBuffer) => got.push(m instanceof ArrayBuffer ? Buffer.from(m) : m))
    await until(() => got.length >= expected.length, 'every message of the burst', 10_000)
    t.is(got.length, expected.length)
    const mismatch = got.findIndex((m, i) => (Buffer.isBuffer(m) ? !m.equals(expected[i] as Buffer) : m !== expected[i]))
    t.is(mismatch, -1, `${binaryType}: message ${mismatch} differs`)
    t.is(client.metrics.messagesReceived, expected.length)
    const bytes = expected.reduce((n, m) => n + Buffer.byteLength(m), 0)
    t.is(client.metrics.bytesReceived, bytes)
    await client.disconnect()
  }
  await quiescent()
})

test.serial("after the close handshake the client half-closes its TCP side, as ws's socket.end() does: a server that waits for it closes", async (t) => {
  // The server answers the close frame and keeps its TCP side open until the client's FIN.
  let sawEnd: () => void
  const ended = new Promise<void>((resolve) => (sawEnd = resolve))
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      s.on('data', (d: Buffer) => {
        if ((d[0] & 0x0f) === 8) s.write(Buffer.from([0x88, 0x02, 0x03, 0xe8]))
      })
      s.on('end', () => {
        sawEnd()
        s.end()
      })
    }),
  )
  t.teardown(() => peer.close())
  // Without the FIN the client would wait its whole closeTimeout for the server's close.
  const client = new ReconnectingWebSocket(peer.url, { closeTimeout: 20_000 })
  await client.opened()
  const disconnected = client.disconnect()
  const first = await Promise.race([ended.then(() => 'fin'), new Promise((r) => setTimeout(r, 5_000, 'no fin within 5 s'))])
  t.is(first, 'fin')
  await disconnected
  t.like(clientStats(), { openConnections: 0, ioBuffers: 0 })
})

test.serial('the upgrade is refused on a wrong Sec-WebSocket-Accept, an extension we did not offer, or a header that must come once coming twice; its upgrade event comes first, as in ws', async (t) => {
  const cases: Array<[string, RegExp, { perMessageDeflate?: boolean; protocols?: string[] }]> = [
    ['Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n', /Sec-WebSocket-Accept/, {}],
    ['Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n', /extension we did not offer/, {}],
    // Not offered when the option is off.
    ['Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n', /extension we did not offer/, { perMessageDeflate: false }],
    // The first value right, a second one anything (ws refuses both: Node joins them into one value).
    ['Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n', /more than one Sec-WebSocket-Accept/, {}],
    ['Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: evil\r\n', /more than one Sec-WebSocket-Protocol/, { protocols: ['chat'] }],
  ]
  for (const [headers, message, options] of cases) {
    const peer = await rawServer((sock) => {
      let head = ''
      sock.on('data', (chunk) => {
        head += chunk.toString('latin1')
        if (!head.includes('\r\n\r\n')) return
        sock.write(
          'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
            headers.replace('{accept}', acceptKey(head)) +
            '\r\n',
        )
      })
    })
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, ...options })
    const r = new Recorder(client, ['upgrade', 'open', 'error', 'close'])
    const err: RedialError = await r.next('error')
    t.is(err.code as string, 'ERR_HANDSHAKE')
    t.regex(err.message, message)
    t.is(r.count('open'), 0)
    const upgrade = await r.next<{ statusCode: number; headers: Record<string, unknown> }>('upgrade')
    t.is(upgrade.statusCode, 101)
    t.is(upgrade.headers.upgrade, 'websocket')
    // ws emits the 101 answer it refuses too, before its error.
    const theirs = new WebSocket(peer.url, options.protocols ?? [], { perMessageDeflate: options.perMessageDeflate ?? true })
    const seen: string[] = []
    for (const name of ['upgrade', 'open', 'error']) theirs.on(name, () => seen.push(name))
    await new Promise((resolve) => theirs.on('close', resolve))
    t.deepEqual(r.log.map((e) => e.name).filter((n) => n !== 'close'), seen, headers)
    await client.disconnect()
    await peer.close()
  }
  await quiescent()
})

test.serial('random frames after the upgrade (any opcode, flags and length, compressed or not, cut anywhere): coded errors only, and every counter back', async (t) => {
  // A fixed seed: the same frames, splits and limits on every run. The server's splits draw from a
  // generator of their own, seeded from this one at each round: drawn from this one, they came in
  // between its draws as the timing went, and changed the later rounds' frames.
  const generator = (seed: number) => () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31
    return seed / 2 ** 31
  }
  const random = generator(61)
  const int = (n: number) => Math.floor(random() * n)
  const pick = <T>(xs: T[]): T => xs[int(xs.length)]
  const header = (fin: boolean, rsv: number, opcode: number, length: number | bigint) => {
    const first = (fin ? 0x80 : 0) | (rsv << 4) | opcode
    if (typeof length === 'bigint' || length > 0xffff) {
      const b = Buffer.alloc(10)
      b[0] = first
      b[1] = 127
      b.writeBigUInt64BE(BigInt(length), 2)
      return b
    }
    return length < 126 ? Buffer.from([first, length]) : Buffer.from([first, 126, length >> 8, length & 255])
  }
  const frame = (fin: boolean, rsv: number, opcode: number, payload: Buffer) => Buffer.concat([header(fin, rsv, opcode, payload.length), payload])
  const compressed = (data: Buffer) => {
    const d = zlib.deflateRawSync(data, { finishFlush: zlib.constants.Z_SYNC_FLUSH })
    return d.subarray(0, d.length - 4)
  }
  const kinds: Array<() => Buffer> = [
    () => frame(true, 0, 1, Buffer.from('x'.repeat(int(2000)))),
    () => frame(true, 0, 2, Buffer.alloc(int(300), int(256))),
    () => frame(true, 0, 9, Buffer.alloc(int(130))),
    () => frame(true, 0, 10, Buffer.alloc(int(20))),
    () => frame(true, 0, 8, pick([Buffer.from([0x03, 0xe8]), Buffer.from([0x03]), Buffer.from([0x00, 0x05]), Buffer.from([0x0f, 0xa0, 0xc3])])),
    () => Buffer.concat([frame(false, 0, 1, Buffer.from('ab')), random() < 0.7 ? frame(true, 0, 0, Buffer.from('cd')) : Buffer.alloc(0)]),
    () => {
      const d = compressed(Buffer.from('z'.repeat(int(5000))))
      return frame(true, 4, pick([1, 2]), random() < 0.3 ? d.subarray(0, int(d.length)) : d)
    },
    () => Buffer.from(Array.from({ length: int(64) }, () => int(256))),
    () => frame(true, 0, 1, Buffer.from([0x61, 0xc3, 0x28])),
    () => Buffer.concat([header(true, 0, 2, 100 + int(200)), Buffer.alloc(int(100))]),
    () => header(true, 0, 2, 2n ** 40n + BigInt(int(1000))),
    () => frame(true, 1 + int(7), 1, Buffer.from('r')),
    () => frame(true, 0, pick([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), Buffer.alloc(10)),
  ]
  const before = clientStats()
  const codes = new Set<string>()
  for (let round = 0; round < 120; round++) {
    const deflate = random() < 0.5
    const bytes = Buffer.concat(Array.from({ length: int(12) }, () => pick(kinds)()))
    const ending = pick(['keep', 'end', 'destroy'])
    const split = generator(int(2 ** 31))
    let wroteAll!: () => void
    const allWritten = new Promise<void>((resolve) => (wroteAll = resolve))
    const peer = await rawServer((socket) =>
      acceptUpgrade(
        socket,
        (s) => {
          let at = 0
          const writeSome = () => {
            if (s.destroyed) return wroteAll()
            if (at >= bytes.length) {
              if (ending === 'end') s.end()
              if (ending === 'destroy') s.destroy()
              return wroteAll()
            }
            const n = 1 + Math.floor(split() * (bytes.length - at))
            s.write(bytes.subarray(at, at + n))
            at += n
            setTimeout(writeSome, Math.floor(split() * 3))
          }
          writeSome()
        },
        deflate ? 'Sec-WebSocket-Extensions: permessage-deflate\r\n' : '',
      ),
    )
    const client = new ReconnectingWebSocket(peer.url, {
      maxRetries: 0,
      maxPayload: pick([16, 100, 4096, 1 << 20]),
      pingInterval: 0,
      closeTimeout: 100,
      perMessageDeflate: deflate,
    })
    client.on('error', (err: RedialError) => codes.add(err.code))
    client.on('message', () => {})
    // Every other round cuts the connection only after the server's last write (or the client's
    // end before it): there the frames reach the checks, however slow the machine. The others cut
    // it at a random point from the start, the server perhaps still writing.
    if (round % 2 === 0) {
      client.on('close', () => wroteAll())
      let deadline: NodeJS.Timeout | undefined
      await Promise.race([
        allWritten,
        new Promise<never>((_, reject) => {
          deadline = setTimeout(() => reject(new Error(`round ${round}: the server did not write all and the client did not close within 10 s`)), 10_000)
        }),
      ]).finally(() => clearTimeout(deadline))
    }
    await new Promise((r) => setTimeout(r, 5 + int(40)))
    await client.disconnect()
    const s = clientStats()
    for (const key of ['openConnections', 'pendingReconnects', 'runningTasks', 'pendingAttempts', 'ioBuffers', 'jsReaders', 'deflateContexts'] as const) {
      t.is(s[key], before[key], `round ${round}: ${key} back when disconnect() resolves`)
    }
    await peer.close()
  }
  t.false(codes.has('ERR_INTERNAL'), [...codes].join(', '))
  // The frames reached the checks that report them.
  for (const code of ['ERR_PROTOCOL', 'ERR_MESSAGE_TOO_BIG', 'ERR_INVALID_UTF8']) t.true(codes.has(code), `${code} among ${[...codes].join(', ')}`)
  t.log(`error codes seen: ${[...codes].sort().join(', ')}`)
})

test.serial("lookup with wss: the certificate is checked against the URL's host name, not the address the lookup gave", async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  const toLoopback: LookupFunction = (_host, _options, callback) => callback(null, [{ address: '127.0.0.1', family: 4 }])
  // The certificate names localhost: a name the lookup sends to 127.0.0.1 passes...
  const named = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { ca: certs.ca }, lookup: toLoopback })
  const rec = new Recorder(named)
  await rec.next('open')
  named.send('over TLS')
  t.is(await rec.next('message'), 'over TLS')
  await named.disconnect()
  // ...another name at the same address does not.
  const other = new ReconnectingWebSocket(`wss://elsewhere.invalid:${server.port}/`, { tls: { ca: certs.ca }, lookup: toLoopback, maxRetries: 0 })
  const failed = new Recorder(other)
  t.is((await failed.next('error')).code, 'ERR_TLS_CERT')
  await failed.next('giveup')
  await other.disconnect()
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
})

const questions = createRequire(import.meta.url)('../lib/native.js') as { testingJsQuestionsWaiting(): number }

test.serial('tls.checkServerIdentity: called with the host and the verified chain as getPeerCertificate(true) gives it; it can pin, and it replaces the host name check', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  const seen: Array<[string, DetailedPeerCertificate]> = []
  const leaf = new X509Certificate(certs.cert)
  const root = new X509Certificate(certs.ca)
  const pinned = (host: string, cert: DetailedPeerCertificate) => {
    seen.push([host, cert])
    const err = tls.checkServerIdentity(host, cert)
    if (err) return err
    if (cert.fingerprint256 !== leaf.fingerprint256) return new Error('not the pinned certificate')
    return undefined
  }
  const resumed: boolean[] = []
  server.wss.on('connection', (_s, req) => resumed.push((req.socket as tls.TLSSocket).isSessionReused()))
  const client = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { ca: certs.ca, checkServerIdentity: pinned }, minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  client.send('pinned')
  t.is(await rec.next('message'), 'pinned')
  // A reconnect resumes the TLS session, and its certificate is checked again (Node skips the
  // check on a resumed session; rustls keeps the chain with the session).
  for (const s of server.wss.clients) s.terminate()
  await rec.next('open')
  await client.disconnect()
  t.deepEqual(resumed, [false, true])
  t.is(seen.length, 2)
  t.is(seen[1][1].fingerprint256, leaf.fingerprint256)
  const [host, cert] = seen[0]
  t.is(host, 'localhost')
  t.is(cert.subject.CN, 'localhost')
  t.regex(cert.subjectaltname ?? '', /DNS:localhost/)
  t.deepEqual(cert.raw, leaf.raw)
  // The chain ends at the root from tls.ca, a self-signed certificate that is its own issuer:
  // the chain walk of Node's pinning example ends.
  t.is(cert.issuerCertificate.fingerprint256, root.fingerprint256)
  t.is(cert.issuerCertificate.issuerCertificate, cert.issuerCertificate)

  // A host name the certificate does not name: refused by default, accepted by a function that
  // does not check names (Node calls it instead of its own check), and passed to it.
  const mismatch = { ca: certs.ca, servername: 'elsewhere.invalid' }
  const strict = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, { tls: mismatch, maxRetries: 0 })
  const strictRec = new Recorder(strict)
  t.is((await strictRec.next('error')).code, 'ERR_TLS_CERT')
  await strictRec.next('giveup')
  await strict.disconnect()
  const hosts: string[] = []
  const lenient = new ReconnectingWebSocket(`wss://127.0.0.1:${server.port}/`, {
    tls: { ...mismatch, checkServerIdentity: (h: string) => void hosts.push(h) },
  })
  await new Recorder(lenient).next('open')
  await lenient.disconnect()
  t.deepEqual(hosts, ['elsewhere.invalid'])
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
  t.is(questions.testingJsQuestionsWaiting(), 0)
})

test.serial("tls.checkServerIdentity: the chain is linked by issuer, as Node's getPeerCertificate(true) links it, whatever the order the server sent it in", async (t) => {
  // The server sends its certificate, then an unrelated self-signed one.
  const server = https.createServer({ key: certs.key, cert: certs.cert + certs.otherCa })
  const wss = new WebSocketServer({ server })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((r) => (wss.close(), server.close(() => r()))))
  const port = (server.address() as net.AddressInfo).port
  const names = (cert: DetailedPeerCertificate) => {
    const out: string[] = []
    for (let c = cert; c !== undefined && out.length < 5; c = c.issuerCertificate === c ? (undefined as never) : c.issuerCertificate) out.push(String(c.subject.CN ?? c.subject.O))
    return out
  }
  const socket = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca: certs.ca })
  await once(socket, 'secureConnect')
  const node = names(socket.getPeerCertificate(true))
  socket.destroy()
  let ours: string[] = []
  const client = new ReconnectingWebSocket(`wss://localhost:${port}/`, { tls: { ca: certs.ca, checkServerIdentity: (_h: string, cert: DetailedPeerCertificate) => void (ours = names(cert)) } })
  await new Recorder(client).next('open')
  await client.disconnect()
  t.is(node.length, 2, `Node's chain: ${node}`)
  t.deepEqual(ours, node)
})

test.serial("tls.checkServerIdentity: a server that sends its certificate alone gets its chain completed from tls.ca up to the root, as Node's, so Node's pinning walk ends", async (t) => {
  const inter = certs.intermediate as NonNullable<typeof certs.intermediate>
  const server = https.createServer({ key: inter.key, cert: inter.cert })
  const wss = new WebSocketServer({ server })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => new Promise<void>((r) => (wss.close(), server.close(() => r()))))
  const port = (server.address() as net.AddressInfo).port
  const ca = [inter.ca, certs.ca]
  // Node's documentation's pinning example walks the chain until a certificate is its own issuer.
  const walk = (cert: DetailedPeerCertificate) => {
    const names: string[] = []
    let last: string | undefined
    do {
      names.push(String(cert.subject.CN))
      last = cert.fingerprint256
      cert = cert.issuerCertificate
    } while (cert.fingerprint256 !== last && names.length < 5)
    return names
  }
  const socket = tls.connect({ port, host: '127.0.0.1', servername: 'localhost', ca })
  await once(socket, 'secureConnect')
  const node = walk(socket.getPeerCertificate(true))
  socket.destroy()
  let ours: string[] | Error = []
  const client = new ReconnectingWebSocket(`wss://localhost:${port}/`, {
    tls: {
      ca,
      checkServerIdentity: (_h: string, cert: DetailedPeerCertificate) => {
        try {
          ours = walk(cert)
        } catch (err) {
          ours = err as Error
        }
        return undefined
      },
    },
    maxRetries: 0,
  })
  await new Recorder(client).next('open')
  await client.disconnect()
  t.deepEqual(node, ['localhost', 'redial-ws test intermediate', 'redial-ws test ca'])
  t.deepEqual(ours, node)
})

test.serial('tls.checkServerIdentity: an Error returned or thrown refuses the certificate (ERR_TLS_CERT, no retry, no upgrade sent); an unverified chain never reaches it', async (t) => {
  const server = await wssServer()
  t.teardown(() => server.close())
  let upgrades = 0
  server.wss.on('connection', () => upgrades++)
  const unprintable = Object.defineProperty(new Error(), 'message', {
    get() {
      throw new Error('no message')
    },
  })
  const refusals: Array<[() => unknown, string]> = [
    [() => new Error('pin mismatch'), 'pin mismatch'],
    [() => { throw new Error('pin mismatch') }, 'pin mismatch'],
    // What cannot be made a string still refuses (it threw from our code, and the attempt waited).
    [() => Object.create(null), 'refused'],
    [() => unprintable, 'refused'],
    [() => { throw Object.create(null) }, 'refused'],
    // A throw of null refuses too (it was taken for an answer of null: accepted).
    [() => { throw null }, 'null'],
  ]
  for (const [refuse, why] of refusals) {
    const client = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { ca: certs.ca, checkServerIdentity: refuse as never }, minDelay: 10 })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    await rec.next('giveup')
    await client.disconnect()
    t.is(err.code, 'ERR_TLS_CERT')
    t.is(err.message, `TLS handshake failed: checkServerIdentity refused the certificate of localhost: ${why}`)
    t.is(rec.count('reconnecting'), 0, 'not retried')
  }
  // Without the CA the chain fails first: the function is not asked.
  let asked = 0
  const untrusted = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { checkServerIdentity: () => void asked++ }, maxRetries: 0 })
  const rec = new Recorder(untrusted)
  t.is((await rec.next('error')).code, 'ERR_TLS_CERT')
  await rec.next('giveup')
  await untrusted.disconnect()
  // With rejectUnauthorized: false nothing is checked, as in Node: not asked either.
  const unchecked = new ReconnectingWebSocket(`wss://localhost:${server.port}/`, { tls: { rejectUnauthorized: false, checkServerIdentity: () => void asked++ } })
  await new Recorder(unchecked).next('open')
  await unchecked.disconnect()
  t.is(asked, 0)
  t.is(upgrades, 1, 'only the unchecked client sent its upgrade')
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
  t.is(questions.testingJsQuestionsWaiting(), 0)
  t.like(t.throws(() => new ReconnectingWebSocket('wss://localhost/', { startClosed: true, tls: { checkServerIdentity: 'yes' as never } })), {
    code: 'ERR_INVALID_ARG_TYPE',
  })
})

/** A wss: server with `options` (Node's TLS options) that reports each connection's TLS socket; closed at teardown. */
async function tlsServer(t: ExecutionContext, options: tls.TlsOptions, onSocket: (socket: tls.TLSSocket) => void): Promise<string> {
  const server = https.createServer({ key: certs.key, cert: certs.cert, ...options })
  new WebSocketServer({ server }).on('connection', (_s, req) => onSocket(req.socket as tls.TLSSocket))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  return `wss://localhost:${(server.address() as net.AddressInfo).port}/`
}

/** Whether a client with these `tls` options (and the test CA) opens, or the code of its first error. */
async function firstOutcome(url: string, options: object): Promise<string> {
  const client = new ReconnectingWebSocket(url, { tls: { ca: certs.ca, ...options }, maxRetries: 0 })
  const rec = new Recorder(client)
  const first = await Promise.race([rec.next('open').then(() => 'open'), rec.next('error').then((e: RedialError) => e.code)])
  await client.disconnect()
  return first
}

test.serial('tls.minVersion and tls.maxVersion pick the TLS versions offered, as Node names them', async (t) => {
  const protocols: string[] = []
  const serve = (maxVersion: tls.SecureVersion) => tlsServer(t, { maxVersion }, (socket) => protocols.push(String(socket.getProtocol())))
  const modern = await serve('TLSv1.3')
  const legacy = await serve('TLSv1.2')
  const opens = firstOutcome
  t.is(await opens(modern, {}), 'open')
  t.is(await opens(modern, { maxVersion: 'TLSv1.2' }), 'open')
  t.is(await opens(legacy, { minVersion: 'TLSv1' }), 'open')
  t.is(await opens(legacy, { minVersion: 'TLSv1.3' }), 'ERR_TLS')
  t.deepEqual(protocols, ['TLSv1.3', 'TLSv1.2', 'TLSv1.2'])
  const make = (versions: object) => () => new ReconnectingWebSocket('wss://localhost/', { startClosed: true, tls: versions })
  t.like(t.throws(make({ minVersion: 'TLSv1.4' })), { code: 'ERR_TLS_INVALID_PROTOCOL_VERSION' })
  t.like(t.throws(make({ maxVersion: 12 })), { code: 'ERR_TLS_INVALID_PROTOCOL_VERSION' })
  t.like(t.throws(make({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.2' })), { code: 'ERR_TLS_PROTOCOL_VERSION_CONFLICT' })
  // Node's default minimum is TLS 1.2 too: a maximum below it alone conflicts; with a lower minimum
  // it is a range that rustls does not have.
  t.like(t.throws(make({ maxVersion: 'TLSv1.1' })), { code: 'ERR_TLS_PROTOCOL_VERSION_CONFLICT' })
  t.like(t.throws(make({ minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
})

test.serial('tls.ciphers and tls.ecdhCurve pick the cipher suites and key exchanges offered, as Node reads them', async (t) => {
  const seen: string[] = []
  const serve = (options: tls.TlsOptions) => tlsServer(t, options, (socket) => seen.push(`${socket.getProtocol()} ${socket.getCipher().name}`))
  const modern = await serve({})
  const legacy = await serve({ maxVersion: 'TLSv1.2' })
  const onlyP384 = await serve({ ecdhCurve: 'P-384' })
  const opens = firstOutcome
  // The TLS 1.3 suites named are the ones offered.
  t.is(await opens(modern, { ciphers: 'TLS_CHACHA20_POLY1305_SHA256' }), 'open')
  t.is(await opens(modern, { ciphers: 'TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES256-GCM-SHA384' }), 'open')
  // TLS 1.2: names rustls has, in order; names it has not (DHE) skipped; exclusions applied.
  t.is(await opens(legacy, { ciphers: 'DHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:!aNULL' }), 'open')
  t.is(await opens(legacy, { ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:!ECDHE-ECDSA-AES128-GCM-SHA256' }), 'open')
  // A list with only TLS 1.3 suites does not offer TLS 1.2, as in Node.
  t.is(await opens(legacy, { ciphers: 'TLS_AES_256_GCM_SHA384' }), 'ERR_TLS')
  // As OpenSSL reads a list: '+' moves a suite already named and adds none, '!' takes one out for
  // good; as Node splits one, the TLS 1.3 suites are the TLS_ names (excluding one does nothing,
  // and does not bring back the others); '' is the default.
  const only256 = await serve({ maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES256-GCM-SHA384' })
  t.is(await opens(only256, { ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256:+ECDHE-ECDSA-AES256-GCM-SHA384' }), 'ERR_TLS')
  const only256v13 = await serve({ ciphers: 'TLS_AES_256_GCM_SHA384' })
  t.is(await opens(only256v13, { ciphers: 'TLS_AES_128_GCM_SHA256:!TLS_AES_128_GCM_SHA256' }), 'ERR_TLS')
  t.is(await opens(only256v13, { ciphers: '' }), 'open')
  t.deepEqual(seen, [
    'TLSv1.3 TLS_CHACHA20_POLY1305_SHA256',
    'TLSv1.3 TLS_AES_128_GCM_SHA256',
    'TLSv1.2 ECDHE-ECDSA-CHACHA20-POLY1305',
    'TLSv1.2 ECDHE-ECDSA-AES256-GCM-SHA384',
    'TLSv1.3 TLS_AES_256_GCM_SHA384',
  ])
  // A server that takes only P-384: offered, it opens; not offered, the handshake fails.
  t.is(await opens(onlyP384, { ecdhCurve: 'X25519:P-256' }), 'ERR_TLS')
  t.is(await opens(onlyP384, { ecdhCurve: 'X25519:secp384r1' }), 'open')
  t.is(await opens(onlyP384, { ecdhCurve: 'auto' }), 'open')
  const make = (options: object) => () => new ReconnectingWebSocket('wss://localhost/', { startClosed: true, tls: options })
  const keyword = t.throws(make({ ciphers: 'HIGH:!aNULL' })) as RedialError
  t.is(keyword.code, 'ERR_INVALID_ARG_VALUE')
  t.regex(keyword.message, /"HIGH", not a cipher suite.*ECDHE-RSA-AES128-GCM-SHA256/)
  t.like(t.throws(make({ ciphers: 'NOPE' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ ciphers: 'constructor' })), { code: 'ERR_INVALID_ARG_VALUE' }, 'not a key of a table')
  t.like(t.throws(make({ ecdhCurve: 'toString' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ ciphers: 'DHE-RSA-AES128-GCM-SHA256' })), { code: 'ERR_SSL_NO_CIPHER_MATCH' }, 'only suites rustls has not')
  t.like(t.throws(make({ ciphers: ['TLS_AES_256_GCM_SHA384'] })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(t.throws(make({ ciphers: 'TLS_AES_256_GCM_SHA384', maxVersion: 'TLSv1.2' })), { code: 'ERR_SSL_NO_CIPHER_MATCH' })
  const curve = t.throws(make({ ecdhCurve: 'brainpoolP256r1' })) as RedialError
  t.is(curve.code, 'ERR_INVALID_ARG_VALUE')
  t.regex(curve.message, /"brainpoolP256r1".*X25519, P-256, P-384/)
  t.like(t.throws(make({ ecdhCurve: 25519 })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(t.throws(make({ ecdhCurve: 'X25519:x25519' })), { code: 'ERR_INVALID_ARG_VALUE' }, 'a group named twice, as Node refuses it')
  const same = 'ECDHE-ECDSA-AES128-GCM-SHA256'
  t.like(t.throws(make({ ciphers: `${same}:!${same}:${same}` })), { code: 'ERR_SSL_NO_CIPHER_MATCH' }, "'!' is for good")
  // A keyword taken out or moved that may select suites rustls has: refused, not ignored.
  for (const ciphers of [`${same}:!CHACHA20`, `${same}:-ECDSA`, `${same}:+AES256`]) {
    t.like(t.throws(make({ ciphers })), { code: 'ERR_INVALID_ARG_VALUE' }, ciphers)
  }
  t.notThrows(make({ ciphers: `${same}:!aNULL:!eNULL:!EXPORT:!DES:!RC4:!MD5:!PSK:!SRP:!CAMELLIA` }))
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
})

test.serial('tls.sigalgs picks the signature algorithms offered and made, as Node reads them', async (t) => {
  const shared: string[][] = []
  const serve = (options: tls.TlsOptions) => tlsServer(t, options, (socket) => shared.push(socket.getSharedSigalgs().sort()))
  // The test server's certificate is ECDSA P-256.
  const modern = await serve({})
  const legacy = await serve({ maxVersion: 'TLSv1.2' })
  const mutual = await serve({ ca: certs.ca, requestCert: true, rejectUnauthorized: true })
  const opens = firstOutcome
  // The server sees what was named: as TLS 1.3 names or SIG+HASH, DSA (rustls has none) skipped.
  t.is(await opens(modern, { sigalgs: 'rsa_pss_rsae_sha256:ECDSA+SHA256' }), 'open')
  t.is(await opens(legacy, { sigalgs: ' ECDSA+SHA384 : DSA+SHA256:SHA256+RSA' }), 'open')
  t.deepEqual(shared, [['ECDSA+SHA256', 'RSA-PSS+SHA256'], ['ECDSA+SHA384', 'RSA+SHA256']])
  // Nothing the server can sign with: the handshake fails.
  t.is(await opens(modern, { sigalgs: 'RSA-PSS+SHA256:ed25519' }), 'ERR_TLS')
  // Our own signature too: TLS 1.3 signs with RSA-PSS only, so an RSA key without it named
  // presents no certificate, and the server refuses the client.
  const rsa = { cert: clients.rsa.cert, key: clients.rsa.key }
  t.is(await opens(mutual, { ...rsa, sigalgs: 'RSA+SHA256:ECDSA+SHA256' }), 'ERR_TLS_CERT')
  t.is(await opens(mutual, { ...rsa, sigalgs: 'RSA+SHA256:ECDSA+SHA256:RSA-PSS+SHA384' }), 'open')
  t.is(shared.length, 3)
  const make = (options: object) => () => new ReconnectingWebSocket('wss://localhost/', { startClosed: true, tls: options })
  for (const sigalgs of ['Ed25519', 'RSA+SHA-256', 'constructor', 'RSA+SHA256:', 'RSA+SHA256:rsa_pkcs1_sha256']) {
    t.like(t.throws(make({ sigalgs })), { code: 'ERR_INVALID_ARG_VALUE' }, sigalgs)
  }
  const none = t.throws(make({ sigalgs: 'DSA+SHA256:ed448:rsa_pss_pss_sha256' })) as RedialError
  t.is(none.code, 'ERR_INVALID_ARG_VALUE')
  t.regex(none.message, /no signature algorithm that rustls has.*rsa_pss_rsae_sha256/)
  t.like(t.throws(make({ sigalgs: ['ECDSA+SHA256'] })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(clientStats(), { openConnections: 0, runningTasks: 0, pendingAttempts: 0 })
})
