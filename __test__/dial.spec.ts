// How the connection is made: net.connect's family and localAddress, which ws passes through, and
// ws's ws+unix: URLs (a Unix domain socket).
import { once } from 'node:events'
import { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'
import { WebSocketServer } from 'ws'

import { ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { Recorder, wsServer } from './helpers.js'

/** Everything a client held is released by the time its disconnect() resolves. */
function released(t: ExecutionContext) {
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, pendingReconnects: 0, runningTasks: 0, ioBuffers: 0 })
}

const native = createRequire(import.meta.url)('../lib/native.js') as { testingLookups(): number; testingSlowLookups(ms: number): void }

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
  t.regex(err.message, /localhost has no IPv6 address|refused/i)
  t.is(peer.accepted, 1, 'no IPv6-only connection reached the IPv4 server')
})

test('family and localAddress are checked like net.connect checks them', (t) => {
  const make = (options: object) => () => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, ...options })
  t.like(t.throws(make({ family: 5 })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ family: '4' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 'localhost' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 1 })), { code: 'ERR_INVALID_ARG_TYPE' })
  for (const ok of [{ family: 0 }, { family: 4 }, { family: 6 }, { localAddress: '::1' }, { localAddress: '10.0.0.1' }]) t.notThrows(make(ok))
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
  // A resolver slow enough (100 ms) for every attempt to start while the first lookup runs.
  native.testingSlowLookups(100)
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
