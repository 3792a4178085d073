'use strict'
// Everyday scenarios of redial-ws, run by scripts/test-runtimes.js on Node 20, 22 and 24, Bun and
// Deno. Plain CommonJS that needs nothing but the package and node: builtins, so that every runtime
// runs the same file as it is (ava does not pick it up: it runs __test__/**/*.spec.ts).
//
//   <runtime> everyday.cjs '{"url":"ws://...","controlUrl":"http://...","dropUrl":"ws://..."}'
//
// The peers (an echo server, its control endpoint, a server that drops every connection) run in the
// parent: see server.cjs. Every wait is on an event (or, for counters that have no event, a bounded
// poll), and every wait has a deadline that fails the run. The result is one JSON line on stdout.
// On success the script ends by itself: its last scenario is that the process exits once every
// client is disconnected, which the parent checks (exit code 0, within a time limit). On failure it
// exits with code 1 (clients of a failed scenario may still be running).
//
// Forcing GC: `--expose-gc` on Node, `--v8-flags=--expose-gc` on Deno (both give `globalThis.gc`),
// `Bun.gc(true)` on Bun.

const assert = require('node:assert/strict')
const http = require('node:http')
const path = require('node:path')

// The peers are on 127.0.0.1: a proxy in the environment must not capture the client (the parent
// removes these too; the runtime's own `process.env` is what the client reads).
for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'])
  delete process.env[name]

const { ReconnectingWebSocket, clientStats, createWebSocketStream } = require(path.join(__dirname, '..', '..', 'index.js'))

const config = JSON.parse(process.argv[2] ?? 'null')
if (!config?.url) {
  console.error('usage: <runtime> everyday.cjs \'{"url":...,"controlUrl":...,"dropUrl":...}\' (see scripts/test-runtimes.js)')
  process.exit(2)
}

const runtime = process.versions.bun
  ? { name: 'bun', version: process.versions.bun }
  : process.versions.deno
    ? { name: 'deno', version: process.versions.deno }
    : { name: 'node', version: process.versions.node }

const WAIT = 5_000 // the deadline of one wait, ms

/** A full, synchronous collection, however this runtime offers one; null if it offers none. */
const gc =
  typeof globalThis.gc === 'function'
    ? () => globalThis.gc()
    : typeof globalThis.Bun?.gc === 'function'
      ? () => globalThis.Bun.gc(true)
      : null

// ---------------------------------------------------------------------------------------------
// Helpers

/** `promise`, or a rejection naming `what` after `ms`; the timer is cleared either way. */
function within(promise, what, ms = WAIT) {
  let timer
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** One turn of the event loop (lets finalizers and native batches run). */
const turn = () => new Promise((resolve) => setImmediate(resolve))

/** For counters that have no event: polls `cond` every turn until it holds, at most `ms`. */
async function until(cond, what, ms = WAIT) {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await turn()
  }
}

/**
 * Records a client's events from its creation: several events can come in one native batch, so
 * awaiting them one `once()` after another could miss some. `next(name)` consumes them in order.
 */
class Recorder {
  constructor(emitter, names = ['open', 'message', 'close', 'reconnecting', 'error', 'giveup']) {
    this.log = []
    this.read = new Map()
    this.wake = null
    for (const name of names) {
      emitter.on(name, (...args) => {
        this.log.push({ name, args })
        this.wake?.()
      })
    }
  }

  count(name) {
    return this.log.filter((e) => e.name === name).length
  }

  names() {
    return this.log.map((e) => e.name).join(',')
  }

  /** The arguments of the next not yet consumed `name` event, waiting for it if needed. */
  async next(name, ms = WAIT) {
    const deadline = Date.now() + ms
    for (;;) {
      const seen = this.read.get(name) ?? 0
      const events = this.log.filter((e) => e.name === name)
      if (events.length > seen) {
        this.read.set(name, seen + 1)
        return events[seen].args
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no '${name}' event within ${ms} ms; events so far: ${this.names()}`)
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left)
        this.wake = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      this.wake = null
    }
  }

  /** The next message's data. */
  async message(ms = WAIT) {
    const [data, isBinary] = await this.next('message', ms)
    return { data, isBinary }
  }
}

/** POST /down or /up to the peers' control endpoint; resolves once done. */
function control(action) {
  const url = new URL(`/${action}`, config.controlUrl)
  const request = new Promise((resolve, reject) => {
    const req = http.request(
      { host: url.hostname, port: url.port, path: url.pathname, method: 'POST', agent: false, headers: { connection: 'close' } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => (body += chunk))
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`control ${action}: ${res.statusCode} ${body}`))))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end()
  })
  return within(request, `the server to go ${action}`, 10_000)
}

/** The clientStats() counters that must be 0 once every client is disconnected (all but two). */
function heldResources() {
  const stats = clientStats()
  const held = {}
  for (const [name, value] of Object.entries(stats)) {
    // liveClients: disconnected clients stay until GC, and so does the TLS configuration they
    // share (tlsConfigs); collectedWithoutDisconnect: a running total.
    if (name === 'liveClients' || name === 'collectedWithoutDisconnect' || name === 'tlsConfigs') continue
    if (value !== 0) held[name] = value
  }
  return held
}

// ---------------------------------------------------------------------------------------------
// The scenarios. Each gets what the earlier ones left in `ctx`.

const ctx = {}

const scenarios = [
  [
    'echo',
    async () => {
      const client = new ReconnectingWebSocket(config.url)
      const r = new Recorder(client)
      ctx.echoClient = client
      ctx.echoRecorder = r
      const [info] = await r.next('open')
      assert.equal(client.state, 'open')
      assert.equal(typeof info?.protocol, 'string', 'the open event carries { protocol, extensions }')
      client.send('hello')
      assert.deepEqual(await r.message(), { data: 'hello', isBinary: false })
      client.send(Buffer.from([1, 2, 3]))
      const binary = await r.message()
      assert.equal(binary.isBinary, true)
      assert.ok(Buffer.isBuffer(binary.data), 'binary data is a Buffer by default')
      assert.deepEqual([...binary.data], [1, 2, 3])
      // binaryType 'blob' (ws 8.18, WHATWG): this runtime's Blob.
      client.binaryType = 'blob'
      client.send(Buffer.from([4, 5]))
      const blob = await r.message()
      assert.ok(blob.data instanceof Blob, 'a Blob with binaryType blob')
      assert.deepEqual([...new Uint8Array(await blob.data.arrayBuffer())], [4, 5])
      client.binaryType = 'nodebuffer'
      client.send('__conn__')
      ctx.firstConnection = (await r.message()).data
      assert.match(ctx.firstConnection, /^conn:\d+$/)
      const m = client.metrics
      assert.equal(m.connects, 1)
      assert.equal(m.messagesSent, 4)
      assert.equal(m.messagesReceived, 4)
      assert.equal(clientStats().openConnections, 1)
    },
  ],
  [
    "a listener's throw",
    async () => {
      // An uncaught exception on the next tick, the very error the listener threw (on Bun through
      // reportError, which reports it with its own stack); the later events still come.
      const client = ctx.echoClient
      const r = ctx.echoRecorder
      assert.ok(client, 'needs the echo scenario')
      const thrown = new Error('the listener threw')
      const listener = (data) => {
        if (String(data) === 'throw') throw thrown
      }
      client.on('message', listener)
      const caught = new Promise((resolve) => process.once('uncaughtException', resolve))
      client.send('throw')
      assert.deepEqual(await r.message(), { data: 'throw', isBinary: false })
      assert.equal(await within(caught, 'the uncaught exception'), thrown)
      client.off('message', listener)
      client.send('after')
      assert.deepEqual(await r.message(), { data: 'after', isBinary: false })
    },
  ],
  [
    'reconnect',
    async () => {
      const client = ctx.echoClient
      const r = ctx.echoRecorder
      assert.ok(client, 'needs the echo scenario')
      const before = client.metrics.connects
      client.reconnect()
      await r.next('open')
      assert.equal(client.metrics.connects, before + 1, 'metrics.connects counts the fresh connection')
      client.send('__conn__')
      const now = (await r.message()).data
      assert.match(now, /^conn:\d+$/)
      assert.notEqual(now, ctx.firstConnection, 'the server sees a new connection')
      client.send('after reconnect')
      assert.deepEqual(await r.message(), { data: 'after reconnect', isBinary: false })
      assert.equal(clientStats().openConnections, 1, 'the old connection is gone')
      const result = await within(client.disconnect(), 'disconnect() of the echo client')
      assert.deepEqual(result, { discarded: 0 })
      assert.equal(client.state, 'closed')
      assert.equal(clientStats().openConnections, 0)
    },
  ],
  [
    'wss with a pinned certificate',
    async () => {
      // rustls verifies the chain against tls.ca; checkServerIdentity gets it as Node's
      // getPeerCertificate(true) does, on every runtime (lib/certificate.js).
      const seen = []
      const client = new ReconnectingWebSocket(config.tls.url, {
        tls: {
          ca: config.tls.ca,
          checkServerIdentity(host, cert) {
            seen.push({ host, cn: cert.subject?.CN, fingerprint256: cert.fingerprint256, root: cert.issuerCertificate?.issuerCertificate === cert.issuerCertificate })
            return cert.fingerprint256 === config.tls.fingerprint256 ? undefined : new Error('not the pinned certificate')
          },
        },
      })
      const r = new Recorder(client)
      // Kept: collected later, they would be counted by the abandoned-clients scenario's liveClients.
      ctx.tlsClients = [client]
      await r.next('open')
      client.send('over TLS')
      assert.deepEqual(await r.message(), { data: 'over TLS', isBinary: false })
      await within(client.disconnect(), 'disconnect() of the wss client')
      assert.deepEqual(seen, [{ host: 'localhost', cn: 'localhost', fingerprint256: config.tls.fingerprint256, root: true }])
      // A pin that does not match: the certificate is refused and the client gives up.
      const refused = new ReconnectingWebSocket(config.tls.url, { tls: { ca: config.tls.ca, checkServerIdentity: () => new Error('pin mismatch') } })
      ctx.tlsClients.push(refused)
      const rr = new Recorder(refused)
      const [err] = await rr.next('error')
      assert.equal(err.code, 'ERR_TLS_CERT')
      await rr.next('giveup')
      await within(refused.disconnect(), 'disconnect() of the refused client')
      assert.equal(clientStats().openConnections, 0)
    },
  ],
  [
    'send callbacks, a message in pieces and a stream',
    async () => {
      const client = new ReconnectingWebSocket(config.url)
      // Kept: collected later, it would be counted by the abandoned-clients scenario's liveClients.
      ctx.streamClient = client
      const written = []
      // Queued while connecting; then one the JS thread writes and one (1 MiB) the driver writes.
      client.send('queued', (err) => written.push(['queued', err?.code]))
      await within(client.opened(), 'open')
      client.send('small', (err) => written.push(['small', err?.code]))
      client.send(Buffer.alloc(1 << 20), {}, (err) => written.push(['large', err?.code]))
      // A message in pieces (fin: false), a character split between two of them.
      const echoed = []
      client.on('message', (data) => echoed.push(String(data)))
      const euro = Buffer.from('\u20ac')
      client.send('pieces: ', { fin: false }, (err) => written.push(['piece', err?.code]))
      client.send(euro.subarray(0, 1), { fin: false })
      assert.throws(() => client.send(Buffer.from([0x41]), { fin: false }), { code: 'ERR_INVALID_ARG_VALUE' })
      client.send(euro.subarray(1), (err) => written.push(['last piece', err?.code]))
      await until(() => written.length === 5, 'five send callbacks')
      assert.deepEqual(written, [
        ['queued', undefined],
        ['small', undefined],
        ['large', undefined],
        ['piece', undefined],
        ['last piece', undefined],
      ])
      await until(() => echoed.includes('pieces: \u20ac'), 'the echo of the message sent in pieces')
      // Blobs (this runtime's), as ws 8.18 sends them: a binary message, a text one, a piece of one;
      // what follows waits for their bytes.
      const sentBefore = echoed.length
      client.send(new Blob(['a blob']), (err) => written.push(['blob', err?.code]))
      client.send(new Blob(['a blob as text']), { binary: false })
      client.send(new Blob(['a blob ']), { fin: false })
      client.send('and a piece')
      client.send('after the blobs')
      await until(() => echoed.includes('after the blobs'), 'the echo of the message sent after the Blobs')
      assert.deepEqual(echoed.slice(sentBefore), ['a blob', 'a blob as text', 'a blob and a piece', 'after the blobs'])
      // (Its callback comes when the I/O thread reports it written: maybe after the echoes.)
      await until(() => written.length === 6, "the Blob's send callback")
      assert.deepEqual(written[5], ['blob', undefined])
      const duplex = createWebSocketStream(client, { readableObjectMode: true })
      const echoes = []
      // A chunk written is bytes (a binary message, as in ws); the echo comes back as a Buffer.
      duplex.on('data', (data) => echoes.push(String(data)))
      duplex.write('through the stream')
      await until(() => echoes.includes('through the stream'), 'the echo through the stream')
      duplex.end()
      await until(() => client.state === 'closed' && duplex.closed, 'the stream ended and the client closed')
      assert.equal(clientStats().openConnections, 0)
    },
  ],
  [
    'offline queue across a server drop',
    async () => {
      const client = new ReconnectingWebSocket(config.url, { minDelay: 20, maxDelay: 100, connectTimeout: 2_000 })
      const r = new Recorder(client)
      ctx.queueClient = client
      await r.next('open')
      client.send('before')
      assert.deepEqual(await r.message(), { data: 'before', isBinary: false })

      // The server closes the connection and stops listening.
      await control('down')
      const [close] = await r.next('close')
      assert.equal(close.code, 1012)
      assert.equal(close.willReconnect, true)
      // The client retries by itself, and its attempts fail: nothing listens.
      const [err] = await r.next('error')
      assert.equal(err.code, 'ERR_CONNECT')
      assert.notEqual(client.state, 'open')
      assert.equal(client.bufferedAmount, 0)
      client.send('queued while down')
      assert.equal(client.bufferedAmount, Buffer.byteLength('queued while down'), 'the message is queued')
      assert.equal(client.metrics.connects, 1)

      // The server comes back on the same port; the client reconnects by itself.
      await control('up')
      await r.next('open')
      const order = r.log.map((e) => e.name)
      const secondOpen = order.indexOf('open', order.indexOf('open') + 1)
      assert.ok(order.lastIndexOf('reconnecting', secondOpen) > order.indexOf('close'), `'reconnecting' before 'open': ${r.names()}`)
      assert.deepEqual(await r.message(), { data: 'queued while down', isBinary: false }, 'the queued message was delivered')
      assert.equal(client.bufferedAmount, 0)
      assert.equal(client.metrics.connects, 2)
      assert.equal(client.metrics.reconnects, 1)
    },
  ],
  [
    'abandoned clients are collected',
    async () => {
      if (!gc) throw new Error('this runtime offers no way to force a GC (run Node with --expose-gc, Deno with --v8-flags=--expose-gc)')
      const warnings = []
      const onWarning = (w) => warnings.push(w)
      process.on('warning', onWarning)
      const base = clientStats()

      // An idle client (never connected): nothing but the application refers to it. liveClients tells
      // that its native side was dropped; a WeakRef, that it was this very client that was collected.
      // (deref() is read once, at the end: it keeps its target alive until the end of the turn.)
      const idle = (() => new WeakRef(new ReconnectingWebSocket(config.dropUrl, { startClosed: true })))()
      assert.equal(clientStats().liveClients, base.liveClients + 1)
      const idleRounds = await collect(() => clientStats().liveClients === base.liveClients, 'the idle client')
      assert.equal(idle.deref(), undefined, 'the idle client itself was collected')
      assert.equal(clientStats().collectedWithoutDisconnect, base.collectedWithoutDisconnect, 'a closed client is not a forgotten disconnect()')

      // A client waiting to reconnect (every attempt is dropped), abandoned during a 60 s backoff.
      const url = config.dropUrl
      const abandoned = await (async () => {
        const client = new ReconnectingWebSocket(url, { minDelay: 60_000, maxDelay: 60_000, jitter: 'none' })
        await within(new Promise((resolve) => client.once('reconnecting', () => resolve())), "the abandoned client's backoff")
        return new WeakRef(client)
      })()
      await until(() => clientStats().pendingReconnects === base.pendingReconnects + 1, 'the backoff timer')
      const abandonedRounds = await collect(() => clientStats().liveClients === base.liveClients, 'the client abandoned in backoff')
      assert.equal(abandoned.deref(), undefined, 'the abandoned client itself was collected')
      assert.equal(clientStats().collectedWithoutDisconnect, base.collectedWithoutDisconnect + 1, 'counted as collected without disconnect()')
      // Its reconnect was cancelled (the task is dropped on a worker thread: awaited, not read at once).
      await until(() => clientStats().pendingReconnects === base.pendingReconnects, 'the collected client\'s reconnect timer to go')
      await until(() => clientStats().runningTasks === base.runningTasks, 'the collected client\'s task to go')
      await until(() => warnings.some((w) => w.code === 'REDIAL_WS_NOT_DISCONNECTED'), 'the REDIAL_WS_NOT_DISCONNECTED warning')
      const warning = warnings.find((w) => w.code === 'REDIAL_WS_NOT_DISCONNECTED')
      assert.ok(warning.message.includes(url.replace(/\/$/, '')), `the warning names the URL: ${warning.message}`)
      process.off('warning', onWarning)
      return `forced GCs needed: ${idleRounds} (idle client), ${abandonedRounds} (client in backoff)`
    },
  ],
  [
    'a worker terminated with clients still connected',
    async () => {
      // Its clients are never disconnected: the worker's teardown must stop them (their
      // connections closed, their tasks and timers gone), on every runtime, whether or not it runs
      // their finalizers (Deno does not, for a worker's objects).
      const { Worker } = require('node:worker_threads')
      const base = clientStats()
      const worker = new Worker(path.join(__dirname, 'worker.cjs'), { workerData: { url: config.url, dropUrl: config.dropUrl } })
      const failed = new Promise((_, reject) => worker.once('error', reject))
      await within(Promise.race([new Promise((resolve) => worker.once('message', resolve)), failed]), "the worker's clients")
      assert.equal(clientStats().openConnections, base.openConnections + 1)
      await within(worker.terminate(), "the worker's end")
      const back = () => {
        const s = clientStats()
        return ['openConnections', 'runningTasks', 'pendingReconnects', 'pendingAttempts', 'heartbeats'].every((k) => s[k] === base[k])
      }
      await until(back, "the worker's clients to stop (their connections, tasks and timers)")
    },
  ],
  [
    'disconnect releases everything',
    async () => {
      const open = ctx.queueClient
      assert.ok(open, 'needs the offline queue scenario')
      assert.equal(open.state, 'open')
      // And one in a 30 s backoff wait: it must not keep the process 30 s.
      const waiting = new ReconnectingWebSocket(config.dropUrl, { minDelay: 30_000, maxDelay: 30_000, jitter: 'none' })
      await within(new Promise((resolve) => waiting.once('reconnecting', () => resolve())), 'the backoff wait')
      await until(() => waiting.metrics.pendingReconnects === 1, 'the backoff timer')

      const results = await within(Promise.all([open.disconnect(1000, 'bye'), waiting.disconnect()]), 'disconnect()')
      assert.deepEqual(results, [{ discarded: 0 }, { discarded: 0 }])
      assert.equal(open.state, 'closed')
      assert.equal(waiting.state, 'closed')
      assert.equal(waiting.metrics.pendingReconnects, 0)
      // disconnect() resolves when everything is released: read at once, not awaited.
      assert.deepEqual(heldResources(), {}, `nothing held after disconnect(): ${JSON.stringify(clientStats())}`)
      ctx.echoClient = ctx.echoRecorder = ctx.queueClient = null
      // What remains of this scenario, that the process now exits by itself, the parent checks.
    },
  ],
]

/**
 * Forces full collections until `cond()` holds, at most `rounds` times; resolves how many it took.
 * Finalizers run after the GC, from the event loop: each round gives them a turn and a timer.
 */
async function collect(cond, what, rounds = 100) {
  for (let i = 0; i < rounds; i++) {
    if (cond()) return i
    gc()
    await turn()
    await new Promise((resolve) => setTimeout(resolve, 2))
  }
  if (cond()) return rounds
  throw new Error(`not collected after ${rounds} forced GCs: ${what}; ${JSON.stringify(clientStats())}`)
}

async function main() {
  const results = []
  for (const [name, run] of scenarios) {
    const started = Date.now()
    let result
    try {
      const note = await run()
      result = { name, ok: true, ms: Date.now() - started, ...(note ? { note } : {}) }
    } catch (err) {
      result = { name, ok: false, ms: Date.now() - started, error: String(err?.stack ?? err) }
    }
    results.push(result)
    // Progress on stderr: what the parent shows if this run never gets to its result line.
    process.stderr.write(`everyday: ${name}: ${result.ok ? 'ok' : 'FAIL'} (${result.ms} ms)\n`)
  }
  const ok = results.every((r) => r.ok)
  process.stdout.write(`${JSON.stringify({ everyday: true, runtime: runtime.name, version: runtime.version, ok, results })}\n`)
  // Success: nothing here ends the process; it must end by itself (the parent checks it does).
  if (!ok) process.exit(1)
}

main().catch((err) => {
  process.stdout.write(`${JSON.stringify({ everyday: true, runtime: runtime.name, version: runtime.version, ok: false, results: [], error: String(err?.stack ?? err) })}\n`)
  process.exit(1)
})
