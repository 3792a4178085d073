'use strict'
// The peers of the everyday scenarios (__test__/runtimes/everyday.cjs). They run in the parent
// process, scripts/test-runtimes.js, on the Node that runs npm test, so that only the client side
// runs on the runtime under test (Bun and Deno need not run the `ws` server). Everything listens
// on 127.0.0.1.
//
// - echo: a `ws` server that echoes every message as it came (text as text, binary as binary);
//   the text message "__conn__" is answered with "conn:<n>", n being the server's serial number of
//   the connection, so that a client can tell a fresh connection from the old one. Text messages
//   that begin with "last:" are kept in `lastWords` (__test__/runtimes/last-words.cjs).
// - control: an HTTP server. POST /down closes every echo connection (1012, "restart"), waits for
//   them to end, stops listening and answers when the port is closed; POST /up listens again on the
//   same port and answers once it listens. The scenario script decides when, so nothing is timed.
// - drop: a TCP server that accepts and at once destroys every connection: a peer where a client
//   fails every attempt and backs off, and that no other process can take over (unlike a port left
//   closed).
// - tls: a `ws` server over HTTPS that echoes, with a throwaway CA and a certificate for localhost
//   made here with the openssl CLI (valid 2 days); the scenario gets the CA and the certificate's
//   SHA-256 fingerprint.

const { execFileSync } = require('node:child_process')
const { X509Certificate } = require('node:crypto')
const fs = require('node:fs')
const http = require('node:http')
const https = require('node:https')
const net = require('node:net')
const os = require('node:os')
const path = require('node:path')
const { WebSocketServer } = require('ws')

const HOST = '127.0.0.1'

function listen(server, port) {
  return new Promise((resolve, reject) => {
    const onError = (err) => {
      server.off('listening', onListening)
      reject(err)
    }
    const onListening = () => {
      server.off('error', onError)
      resolve(server.address().port)
    }
    server.once('error', onError)
    server.once('listening', onListening)
    server.listen(port, HOST)
  })
}

function closeServer(server) {
  return new Promise((resolve) => server.close(() => resolve()))
}

async function startPeers() {
  let serial = 0
  let port = 0
  let echo = null // { server, wss, sockets } while up
  const log = [] // what happened, for the report when a scenario fails
  const lastWords = [] // the `last:` messages of last-words.cjs

  async function up() {
    if (echo) return
    const server = http.createServer((req, res) => res.writeHead(426).end())
    const wss = new WebSocketServer({ server })
    const sockets = new Set()
    wss.on('connection', (socket) => {
      const n = ++serial
      sockets.add(socket)
      log.push(`echo: connection ${n}`)
      socket.on('close', () => sockets.delete(socket))
      socket.on('error', () => {})
      socket.on('message', (data, isBinary) => {
        if (!isBinary && data.toString().startsWith('last:')) lastWords.push(data.toString())
        if (!isBinary && data.toString() === '__conn__') socket.send(`conn:${n}`)
        else socket.send(data, { binary: isBinary })
      })
    })
    port = await listen(server, port)
    echo = { server, wss, sockets }
    log.push(`echo: listening on ${port}`)
  }

  async function down() {
    if (!echo) return
    const { server, wss, sockets } = echo
    echo = null
    // Stop listening first, so that a client reconnecting at once finds the port closed rather than
    // a last connection that would keep the server up; the callback comes once every connection ended.
    const closed = closeServer(server)
    server.closeAllConnections?.() // HTTP connections that have not upgraded
    // Then a clean close of every WebSocket; one that does not answer within 2 s is cut off.
    await Promise.all(
      [...sockets].map(
        (socket) =>
          new Promise((resolve) => {
            const timer = setTimeout(() => socket.terminate(), 2_000)
            socket.once('close', () => {
              clearTimeout(timer)
              resolve()
            })
            socket.close(1012, 'restart')
          }),
      ),
    )
    wss.close()
    await closed
    log.push('echo: down')
  }

  await up()

  const control = http.createServer((req, res) => {
    const action = req.method === 'POST' && req.url === '/down' ? down : req.method === 'POST' && req.url === '/up' ? up : null
    if (!action) return res.writeHead(404, { connection: 'close' }).end()
    action().then(
      () => res.writeHead(200, { connection: 'close' }).end(req.url.slice(1)),
      (err) => res.writeHead(500, { connection: 'close' }).end(String(err?.stack ?? err)),
    )
  })
  const controlPort = await listen(control, 0)

  const drop = net.createServer((socket) => {
    socket.on('error', () => {})
    socket.destroy()
  })
  const dropPort = await listen(drop, 0)

  const certs = makeCerts()
  const secure = https.createServer({ key: certs.key, cert: certs.cert })
  new WebSocketServer({ server: secure }).on('connection', (socket) => {
    socket.on('error', () => {})
    socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }))
  })
  const securePort = await listen(secure, 0)

  return {
    url: `ws://${HOST}:${port}/echo`,
    controlUrl: `http://${HOST}:${controlPort}`,
    dropUrl: `ws://${HOST}:${dropPort}/`,
    tls: { url: `wss://localhost:${securePort}/`, ca: certs.ca, fingerprint256: new X509Certificate(certs.cert).fingerprint256 },
    log,
    lastWords,
    async close() {
      await down()
      control.closeAllConnections?.()
      secure.closeAllConnections?.()
      await Promise.all([closeServer(control), closeServer(drop), closeServer(secure)])
    },
  }
}

/** A CA (EC P-256) and a server certificate it signed for localhost and 127.0.0.1, as PEM. */
function makeCerts() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redial-runtimes-certs-'))
  const f = (name) => path.join(dir, name)
  const run = (...args) => execFileSync('openssl', args, { stdio: 'pipe' })
  try {
    run('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-keyout', f('ca.key'), '-out', f('ca.pem'), '-subj', '/CN=redial-ws runtimes CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign')
    run('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', f('server.key'), '-out', f('server.csr'), '-subj', '/CN=localhost')
    fs.writeFileSync(f('ext.cnf'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n')
    run('x509', '-req', '-in', f('server.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-days', '2', '-out', f('server.pem'), '-extfile', f('ext.cnf'))
    return { ca: fs.readFileSync(f('ca.pem'), 'utf8'), key: fs.readFileSync(f('server.key'), 'utf8'), cert: fs.readFileSync(f('server.pem'), 'utf8') }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

module.exports = { startPeers }
