// How the connection is made: net.connect's family, localAddress and localPort, which ws passes through, and
// ws's ws+unix: URLs (a Unix domain socket).
import { spawn } from 'node:child_process'
import dns from 'node:dns'
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { WebSocket, WebSocketServer } from 'ws'

import { type LookupFunction, ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { Recorder, refusedPort, wsServer } from './helpers.js'

/** Everything a client held is released by the time its disconnect() resolves. */
function released(t: ExecutionContext) {
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, pendingReconnects: 0, runningTasks: 0, ioBuffers: 0 })
}

const native = createRequire(import.meta.url)('../lib/native.js') as {
  testingLookups(): number
  testingSlowLookups(ms: number): void
  testingRefuseLookupThreads(count: number): void
  testingJsQuestionsWaiting(): number
}

test.serial('localAddress: every connection comes from that address', async (t) => {
  const from: string[] = []
  const peer = await wsServer()
  peer.wss.on('connection', (_socket, req) => from.push(req.socket.remoteAddress ?? ''))
  t.teardown(() => peer.close())
  // All of 127.0.0.0/8 is this host's on Linux: the client can connect from 127.0.0.2.
  const client = new ReconnectingWebSocket(peer.url, { localAddress: '127.0.0.2', minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  for (const s of peer.sockets) s.terminate()
  await rec.next('open')
  t.deepEqual(from, ['127.0.0.2', '127.0.0.2'])
  await client.disconnect()
  released(t)
})

/** A TCP port nothing on 127.0.0.1 listens on or connects from right now (the system's choice). */
async function freePort(): Promise<number> {
  const probe = net.createServer().listen(0, '127.0.0.1')
  await once(probe, 'listening')
  const { port } = probe.address() as net.AddressInfo
  probe.close()
  await once(probe, 'close')
  return port
}

test.serial('localPort: every connection comes from that port, a reconnect too; with localAddress, from both', async (t) => {
  const from: string[] = []
  const peer = await wsServer()
  peer.wss.on('connection', (_socket, req) => from.push(`${req.socket.remoteAddress}:${req.socket.remotePort}`))
  t.teardown(() => peer.close())
  const port = await freePort()
  const client = new ReconnectingWebSocket(peer.url, { localPort: port, minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  // The server closes first, so the TIME_WAIT is its own and the client's port is free again.
  for (const s of peer.sockets) s.terminate()
  await rec.next('open')
  await client.disconnect()
  released(t)
  const other = await freePort()
  const both = new ReconnectingWebSocket(peer.url, { localAddress: '127.0.0.2', localPort: other })
  await new Recorder(both).next('open')
  await both.disconnect()
  released(t)
  t.deepEqual(from, [`127.0.0.1:${port}`, `127.0.0.1:${port}`, `127.0.0.2:${other}`])
})

test.serial('localPort: a port another socket holds fails the attempt with ERR_CONNECT, which is retried', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const holder = net.createServer().listen(0, '127.0.0.1')
  await once(holder, 'listening')
  t.teardown(() => holder.close())
  const { port } = holder.address() as net.AddressInfo
  const client = new ReconnectingWebSocket(peer.url, { localPort: port, maxRetries: 1, minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  const first: RedialError = await rec.next('error')
  const second: RedialError = await rec.next('error')
  await rec.next('giveup')
  await client.disconnect()
  released(t)
  t.is(first.code, 'ERR_CONNECT')
  t.regex(first.message, /in use/i)
  t.is(second.code, 'ERR_CONNECT')
  t.is(peer.accepted, 0)
})

test.serial('family: a host name connects only to its addresses of that IP version', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const url = `ws://localhost:${peer.port}/`
  const v4 = new ReconnectingWebSocket(url, { family: 4 })
  await new Recorder(v4).next('open')
  await v4.disconnect()
  released(t)
  t.is(peer.accepted, 1)
  // The server listens on 127.0.0.1 only: whether localhost has an IPv6 address (::1, refused)
  // or none, an IPv6-only client must not reach it.
  const v6 = new ReconnectingWebSocket(url, { family: 6, maxRetries: 0 })
  const rec = new Recorder(v6)
  const err: RedialError = await rec.next('error')
  await rec.next('giveup')
  await v6.disconnect()
  released(t)
  t.is(err.code, 'ERR_CONNECT')
  t.regex(err.message, /localhost \(it has no IPv6 address\)|refused/i)
  // As ws's: getaddrinfo finds no address of that family.
  t.like(err.cause, /no IPv6/.test(err.message) ? { code: 'ENOTFOUND', syscall: 'getaddrinfo', hostname: 'localhost' } : { code: 'ECONNREFUSED' })
  t.is(peer.accepted, 1, 'no IPv6-only connection reached the IPv4 server')
})

test('family, localAddress and localPort are checked like net.connect checks them', (t) => {
  const make = (options: object) => () => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, ...options })
  t.like(t.throws(make({ family: 5 })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ family: '4' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 'localhost' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 1 })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(t.throws(make({ localPort: '8080' })), { code: 'ERR_INVALID_ARG_TYPE' })
  for (const bad of [-1, 65536, 1.5, Number.NaN]) t.like(t.throws(make({ localPort: bad })), { code: 'ERR_OUT_OF_RANGE' })
  for (const ok of [{ family: 0 }, { family: 4 }, { family: 6 }, { localAddress: '::1' }, { localAddress: '10.0.0.1' }, { localPort: 0 }, { localPort: 65535 }]) {
    t.notThrows(make(ok))
  }
})

const python = process.env.PYTHON ?? 'python3'

/**
 * An address on loopback that does not answer (127.0.0.2 at `port`: a listener whose full accept
 * queue makes Linux drop further SYNs, as a firewall that drops them), for as long as the test runs.
 */
async function unanswering(t: ExecutionContext, port: number): Promise<void> {
  const script = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'py_unanswering.py')
  const child = spawn(python, [script, '127.0.0.2', String(port)], { stdio: ['pipe', 'pipe', 'inherit'] })
  t.teardown(() => child.kill())
  const [printed] = await Promise.race([once(child.stdout!, 'data'), once(child, 'exit').then(() => ['exited'])])
  t.is(Number(String(printed).trim()), port, 'the unanswering listener is up')
}

test.serial("autoSelectFamily: when an address does not answer, the next one is tried after autoSelectFamilyAttemptTimeout, as net.connect's Happy Eyeballs", async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  await unanswering(t, peer.port)
  // The first address never answers; the second is the server's.
  const lookup: LookupFunction = (_host, _options, callback) => callback(null, [{ address: '127.0.0.2', family: 4 }, { address: '127.0.0.1', family: 4 }])
  const url = `ws://two-addresses.test:${peer.port}/`
  const outcome = async (options: object) => {
    const client = new ReconnectingWebSocket(url, { lookup, connectTimeout: 1_500, maxRetries: 0, ...options })
    const rec = new Recorder(client)
    const first = await Promise.race([rec.next('open').then(() => 'open'), rec.next('error').then((e: RedialError) => e.code)])
    await client.disconnect()
    released(t)
    return first
  }
  t.is(await outcome({}), 'open', 'by default (Node\'s default, autoSelectFamily on)')
  t.is(peer.accepted, 1)
  t.is(await outcome({ autoSelectFamily: false }), 'ERR_CONNECT_TIMEOUT', 'off: the first address holds the attempt')
  t.is(await outcome({ autoSelectFamilyAttemptTimeout: 5_000 }), 'ERR_CONNECT_TIMEOUT', 'the next address waits that long')
  t.is(await outcome({ autoSelectFamilyAttemptTimeout: 100 }), 'open')
  // Node's process-wide default is the client's when the option is left out.
  net.setDefaultAutoSelectFamily(false)
  try {
    t.is(await outcome({}), 'ERR_CONNECT_TIMEOUT')
  } finally {
    net.setDefaultAutoSelectFamily(true)
  }
  t.is(peer.accepted, 2)
})

test('autoSelectFamily and autoSelectFamilyAttemptTimeout are checked like net.connect checks them', (t) => {
  const make = (options: object) => () => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, ...options })
  t.like(t.throws(make({ autoSelectFamily: 1 })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(t.throws(make({ autoSelectFamilyAttemptTimeout: '250' })), { code: 'ERR_INVALID_ARG_TYPE' })
  for (const bad of [0, -1, 2.5, 2 ** 31]) t.like(t.throws(make({ autoSelectFamilyAttemptTimeout: bad })), { code: 'ERR_OUT_OF_RANGE' })
  for (const ok of [{ autoSelectFamily: false }, { autoSelectFamily: true, autoSelectFamilyAttemptTimeout: 1 }]) t.notThrows(make(ok))
})

test.serial("ws+unix: URLs reach a server on a Unix domain socket, in ws's form (socket path, then ':' and the request path)", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'redial-unix-'))
  const socketPath = join(dir, 'ws.sock')
  const server = http.createServer()
  const wss = new WebSocketServer({ server })
  const requests: Array<[string | undefined, string | undefined]> = []
  wss.on('connection', (ws, req) => {
    requests.push([req.url, req.headers.host])
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
  })
  server.listen(socketPath)
  await once(server, 'listening')
  t.teardown(() => {
    for (const c of wss.clients) c.terminate()
    server.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const client = new ReconnectingWebSocket(`ws+unix:${socketPath}:/chat?room=1`, { minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  client.send('over a Unix socket')
  client.send(Buffer.from([1, 2, 3]))
  t.is(await rec.next('message'), 'over a Unix socket')
  t.deepEqual([...(await rec.next('message'))], [1, 2, 3])
  for (const c of wss.clients) c.terminate()
  await rec.next('open')
  t.deepEqual(requests, [
    ['/chat?room=1', 'localhost'],
    ['/chat?room=1', 'localhost'],
  ])
  await client.disconnect()
  released(t)
  t.is(clientStats().jsReaders, 0)
  const missing = new ReconnectingWebSocket(`ws+unix:${join(dir, 'none.sock')}`, { maxRetries: 0 })
  const failed = new Recorder(missing)
  const err: RedialError = await failed.next('error')
  await failed.next('giveup')
  await missing.disconnect()
  released(t)
  t.is(err.code, 'ERR_CONNECT')
  t.throws(() => new ReconnectingWebSocket('ws+unix::/path'), { code: 'ERR_INVALID_URL' } as object)
  t.throws(() => new ReconnectingWebSocket(`ws+unix:${socketPath}`, { proxy: 'http://127.0.0.1:1' }), { code: 'ERR_INVALID_ARG_VALUE' } as object)
})

test.serial('a fleet connecting to a host name at once shares its lookups: one per wave, not one per client', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const count = 300
  // A resolver slow enough (1 s) for every attempt to start while the first lookup runs, even where
  // constructing the 300 clients is slow.
  native.testingSlowLookups(1_000)
  t.teardown(() => native.testingSlowLookups(0))
  const before = native.testingLookups()
  const clients = Array.from({ length: count }, () => new ReconnectingWebSocket(`ws://localhost:${peer.port}/`, { pingInterval: 0 }))
  await Promise.all(clients.map((c) => c.opened()))
  const lookups = native.testingLookups() - before
  t.true(lookups >= 1 && lookups <= 3, `${lookups} lookups for ${count} clients`)
  await Promise.all(clients.map((c) => c.disconnect()))
  released(t)
  t.is(peer.accepted, count)
})

test.serial('attempts cut short while a lookup hangs wait for that lookup: one thread for the host, not one per attempt', async (t) => {
  // A resolver that takes 5 s: each attempt ends at its 100 ms connectTimeout, and the next one
  // joins the lookup still running (one that started its own would leave a thread per attempt
  // behind, and a few hosts that hang could take every lookup thread of the process).
  const peer = await wsServer()
  t.teardown(() => peer.close())
  native.testingSlowLookups(5_000)
  t.teardown(() => native.testingSlowLookups(0))
  const before = native.testingLookups()
  const client = new ReconnectingWebSocket(`ws://localhost:${peer.port}/`, { connectTimeout: 100, minDelay: 10, maxDelay: 10, jitter: 'none' })
  t.teardown(() => client.disconnect())
  const rec = new Recorder(client)
  for (let i = 0; i < 4; i++) t.is((await rec.next('error')).code, 'ERR_CONNECT_TIMEOUT')
  t.is(native.testingLookups() - before, 1)
  await client.disconnect()
  released(t)
})

test.serial('a lookup the system refuses a thread for (a process at its thread limit) is a failed attempt, retried', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  native.testingRefuseLookupThreads(2)
  t.teardown(() => native.testingRefuseLookupThreads(0))
  const client = new ReconnectingWebSocket(`ws://localhost:${peer.port}/`, { minDelay: 10, maxDelay: 10, jitter: 'none' })
  const rec = new Recorder(client)
  for (let i = 0; i < 2; i++) {
    const err: RedialError = await rec.next('error')
    t.is(err.code, 'ERR_CONNECT')
    t.regex(err.message, /^lookup failed: no thread could be started for it: .*\(os error \d+\)/)
    t.is(typeof (err.cause as { code?: unknown } | undefined)?.code, 'string')
  }
  await rec.next('open')
  t.is(client.metrics.connectAttempts, 3)
  await client.disconnect()
  released(t)
})

test.serial("lookup: a host name is looked up by the client's function on every attempt, as net.connect calls it", async (t) => {
  const hosts: Array<string | undefined> = []
  const peer = await wsServer()
  peer.wss.on('connection', (_socket, req) => hosts.push(req.headers.host))
  t.teardown(() => peer.close())
  const asked: unknown[] = []
  const before = native.testingLookups()
  // A name no resolver knows: only the function can make it reach the server.
  const client = new ReconnectingWebSocket(`ws://my-service.invalid:${peer.port}/`, {
    minDelay: 10,
    maxDelay: 10,
    family: 4,
    lookup: (hostname, options, callback) => {
      asked.push([hostname, options])
      // First answer: all addresses (net.connect asks with all: true); the second, an older lookup's one address.
      if (asked.length === 1) setImmediate(() => callback(null, [{ address: '127.0.0.1', family: 4 }]))
      else callback(null, '127.0.0.1', 4)
    },
  })
  const rec = new Recorder(client)
  await rec.next('open')
  for (const s of peer.sockets) s.terminate()
  await rec.next('open')
  t.deepEqual(asked, [
    ['my-service.invalid', { family: 4, all: true }],
    ['my-service.invalid', { family: 4, all: true }],
  ])
  t.deepEqual(hosts, [`my-service.invalid:${peer.port}`, `my-service.invalid:${peer.port}`], 'the Host header keeps the name')
  t.is(native.testingLookups(), before, 'the system resolver was not asked')
  await client.disconnect()
  released(t)
  // An IP address is not looked up, as in net.connect.
  let calls = 0
  const literal = new ReconnectingWebSocket(peer.url, { lookup: () => calls++ })
  await new Recorder(literal).next('open')
  await literal.disconnect()
  t.is(calls, 0)
})

test.serial("hints: host names are looked up by dns.lookup with them, as net.connect does; a lookup function gets them", async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const before = native.testingLookups()
  const client = new ReconnectingWebSocket(`ws://localhost:${peer.port}/`, { family: 4, hints: dns.ADDRCONFIG | dns.V4MAPPED })
  await client.opened()
  await client.disconnect()
  t.is(native.testingLookups(), before, "dns.lookup answered, not the addon's resolver")
  const asked: unknown[] = []
  const custom = new ReconnectingWebSocket(`ws://my-service.invalid:${peer.port}/`, {
    hints: dns.ADDRCONFIG,
    lookup: (_host, options, callback) => (asked.push(options), callback(null, '127.0.0.1', 4)),
  })
  await custom.opened()
  await custom.disconnect()
  t.deepEqual(asked, [{ family: 0, hints: dns.ADDRCONFIG, all: true }])
  released(t)
  t.is(peer.accepted, 2)
  for (const hints of [1234, -1, 1.5, dns.ALL | 1]) {
    t.like(t.throws(() => new ReconnectingWebSocket(peer.url, { hints, startClosed: true })), { code: 'ERR_INVALID_ARG_VALUE' }, String(hints))
  }
  t.like(t.throws(() => new ReconnectingWebSocket(peer.url, { hints: '32' as never, startClosed: true })), { code: 'ERR_INVALID_ARG_TYPE' })
})

test.serial('lookup: its error, a throw, an answer that is not an IP address, and no answer at all fail the attempt', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const cases: Array<[string, LookupFunction, RegExp]> = [
    ['error', (_h, _o, cb) => cb(Object.assign(new Error('getaddrinfo ENOTFOUND x.invalid'), { code: 'ENOTFOUND' })), /lookup failed: getaddrinfo ENOTFOUND/],
    ['throw', () => {
      throw new Error('resolver exploded')
    }, /lookup failed: resolver exploded/],
    ['not an IP', (_h, _o, cb) => cb(null, [{ address: 'localhost', family: 4 }]), /not an IP address/],
    ['no address', (_h, _o, cb) => cb(null, []), /has no address/],
    ['answered twice', (_h, _o, cb) => (cb(new Error('first answer wins')), cb(null, '127.0.0.1', 4)), /first answer wins/],
  ]
  for (const [name, lookup, message] of cases) {
    const client = new ReconnectingWebSocket(`ws://x.invalid:${peer.port}/`, { maxRetries: 0, lookup })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    await rec.next('giveup')
    await client.disconnect()
    released(t)
    t.is(err.code, 'ERR_CONNECT', name)
    t.regex(err.message, message, name)
  }
  // One that never calls back: the attempt's connectTimeout ends it, and its request is forgotten.
  const silent = new ReconnectingWebSocket(`ws://x.invalid:${peer.port}/`, { maxRetries: 0, connectTimeout: 100, lookup: () => {} })
  const rec = new Recorder(silent)
  t.is((await rec.next('error')).code, 'ERR_CONNECT_TIMEOUT')
  await rec.next('giveup')
  await silent.disconnect()
  released(t)
  t.is(native.testingJsQuestionsWaiting(), 0)
  t.is(peer.accepted, 0)
  t.like(t.throws(() => new ReconnectingWebSocket(peer.url, { lookup: 'dns' as never })), { code: 'ERR_INVALID_ARG_TYPE' })
})

test.serial("a host name that does not resolve fails with ERR_CONNECT whose cause is ws's error: ENOTFOUND from getaddrinfo", async (t) => {
  // A label over 63 characters: the resolver refuses the name before any query leaves the machine.
  const host = `${'a'.repeat(70)}.example`
  const wsErr = await new Promise<NodeJS.ErrnoException>((resolve) => new WebSocket(`ws://${host}:9/`).on('error', resolve))
  t.is(wsErr.code, 'ENOTFOUND')
  for (const [how, lookup] of [['the system resolver', undefined], ['dns.lookup', dns.lookup]] as const) {
    const client = new ReconnectingWebSocket(`ws://${host}:9/`, { maxRetries: 0, lookup })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    await client.disconnect()
    t.is(err.code, 'ERR_CONNECT', how)
    t.regex(err.message, new RegExp(`^lookup failed: getaddrinfo ENOTFOUND ${host} `), how)
    const cause = err.cause as NodeJS.ErrnoException & { hostname?: string }
    t.like(cause, { code: wsErr.code, errno: wsErr.errno, syscall: 'getaddrinfo', hostname: host, message: wsErr.message }, how)
  }
})

test.serial("a lookup function's own error is the cause of the attempt's ERR_CONNECT and of the giveup's lastError, whatever its wording", async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  // As cacheable-lookup or a resolver built on dns.resolve4 words it: not getaddrinfo's.
  const failures = [
    Object.assign(new Error('queryA ENOTFOUND x.internal'), { code: 'ENOTFOUND', syscall: 'queryA', hostname: 'x.internal' }),
    Object.assign(new Error('getaddrinfo ENOTFOUND x.internal'), { code: 'ENOTFOUND' }),
  ]
  for (const failure of failures) {
    const client = new ReconnectingWebSocket(`ws://x.internal:${peer.port}/`, { maxRetries: 0, lookup: (_h, _o, cb) => cb(failure) })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    const { lastError } = await rec.next('giveup')
    await client.disconnect()
    t.is(err.code, 'ERR_CONNECT')
    t.true(err.message.startsWith(`lookup failed: ${failure.message} `), err.message)
    t.is(err.cause, failure, failure.message)
    t.is(lastError.cause, failure, failure.message)
  }
  // A failure that was followed by an answer is not the cause of a later error.
  let calls = 0
  const flaky: LookupFunction = (_h, _o, cb) => (calls++ === 0 ? cb(failures[0]) : cb(null, '127.0.0.1', 4))
  const client = new ReconnectingWebSocket(`ws://x.internal:${await refusedPort()}/`, { maxRetries: 1, minDelay: 1, maxDelay: 1, lookup: flaky })
  const rec = new Recorder(client)
  t.is((await rec.next('error')).cause, failures[0])
  const second: RedialError = await rec.next('error')
  await client.disconnect()
  t.is(second.code, 'ERR_CONNECT')
  t.like(second.cause, { code: 'ECONNREFUSED' })
  t.is(peer.accepted, 0)
})

test.serial("a server's close reason or status line that reads like a system error is not taken for one: no cause", async (t) => {
  for (const reason of ['getaddrinfo ENOTFOUND db.internal', 'lookup failed: getaddrinfo ENOTFOUND db.internal', 'x (os error 111)']) {
    const peer = await wsServer((socket) => socket.close(1008, reason))
    const client = new ReconnectingWebSocket(peer.url)
    const { lastError } = await new Recorder(client).next('giveup')
    await client.disconnect()
    await peer.close()
    t.is(lastError.code, 'ERR_CLOSED', reason)
    t.true(lastError.message.endsWith(reason), reason)
    t.is(lastError.cause, undefined, reason)
  }
})

test.serial("a connection reset during the upgrade fails it with ERR_HANDSHAKE, its cause ECONNRESET; closed, with ERR_HANDSHAKE alone", async (t) => {
  for (const ending of ['reset', 'close'] as const) {
    const server = net.createServer((socket) => {
      socket.on('error', () => {})
      socket.once('data', () => {
        // Part of an answer, then the end.
        socket.write('HTTP/1.1 101 Switching', () => (ending === 'reset' ? socket.resetAndDestroy() : socket.end()))
      })
    })
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, { maxRetries: 0 })
    const { lastError } = await new Recorder(client).next('giveup')
    await client.disconnect()
    server.close()
    t.is(lastError.code, 'ERR_HANDSHAKE', ending)
    t.is(lastError.cause?.code, ending === 'reset' ? 'ECONNRESET' : undefined, lastError.message)
  }
})
