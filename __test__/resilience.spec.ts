// Resilience: the retry policy, heartbeats, the bounded offline queue, per-attempt credentials.
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import { createRequire } from 'node:module'
import net from 'node:net'
import test, { type ExecutionContext } from 'ava'
import { WebSocketServer } from 'ws'

import { ReconnectingWebSocket, clientStats, type CloseEventInfo, type RedialError } from '../index.js'
import { Recorder, acceptUpgrade, quiescent, rawServer, refusedPort, until, wsServer } from './helpers.js'

/** An HTTP server that refuses every upgrade with `status` (and headers). */
async function refusingServer(status: number, headers: Record<string, string> = {}) {
  let attempts = 0
  const times: number[] = []
  const server = http.createServer()
  server.on('upgrade', (_req, socket: net.Socket) => {
    attempts++
    times.push(performance.now())
    // A client that disconnects before it has read this answer resets the connection; the http
    // server no longer listens for errors on an upgrade socket, so an ECONNRESET would be uncaught.
    socket.on('error', () => {})
    const extra = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\n${extra}Content-Length: 0\r\n\r\n`)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `ws://127.0.0.1:${port}/`,
    get attempts() {
      return attempts
    },
    times,
    close: () => new Promise<void>((r) => server.close(() => r())),
  }
}

test.serial('a 401 stops at once: one attempt, a giveup, no timer', async (t) => {
  const server = await refusingServer(401)
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(server.url, { minDelay: 1 })
  const r = new Recorder(client)
  const giveup = await r.next('giveup')
  t.is(giveup.reason, 'policy')
  t.is(giveup.attempts, 1)
  t.is(giveup.lastError.code, 'ERR_HANDSHAKE')
  t.is(giveup.lastError.status, 401)
  const close = await r.next('close')
  t.false(close.willReconnect)
  t.is(client.state, 'closed')
  await quiescent()
  t.is(server.attempts, 1)
  t.is(client.metrics.connectAttempts, 1)
  t.is(r.count('reconnecting'), 0)
})

test.serial('a 426 is retried, as ws answers an upgrade that reaches its server as it closes; one naming the versions the server speaks stops', async (t) => {
  // ws's server with `port`, closed as a connection arrives: its upgrade listener is gone when the
  // request is read, and its HTTP server answers 426. A restart must not end the clients it caught.
  const port = await refusedPort()
  const closing = new WebSocketServer({ port, host: '127.0.0.1' })
  await once(closing, 'listening')
  ;(closing as unknown as { _server: http.Server })._server.once('connection', () => closing.close())
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 50, maxDelay: 50 })
  const r = new Recorder(client)
  const err = await r.next<RedialError>('error')
  t.is(err.status, 426)
  t.like(await r.next<{ willReconnect: boolean }>('close'), { willReconnect: true })
  await r.next('reconnecting')
  const peer = await wsServer(undefined, port)
  t.teardown(() => peer.close())
  await r.next('open')
  t.is(r.count('giveup'), 0)
  await client.disconnect()

  // RFC 6455 4.4: a version the server does not speak, with the versions it does.
  const versions = await refusingServer(426, { 'Sec-WebSocket-Version': '8' })
  t.teardown(() => versions.close())
  const old = new ReconnectingWebSocket(versions.url, { minDelay: 1 })
  const giveup = await new Recorder(old).next('giveup')
  t.is(giveup.reason, 'policy')
  t.is(versions.attempts, 1)
  await old.disconnect()
})

test.serial('a refusal whose body is still coming at connectTimeout is the refusal, not a timeout', async (t) => {
  // No Content-Length: the body runs to the end of the connection, which the server keeps open.
  // Its reading was cut by the attempt's deadline, which threw the 401 away (found in review): a
  // timeout is retried, so the client retried a refusal forever.
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('data', () => socket.write('HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n\r\nbad token'))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  const port = (server.address() as net.AddressInfo).port
  // The 401 comes from this thread: a connectTimeout with room for it on a slow machine, yet under
  // the body's own 1 s wait (BODY_WAIT in src/body.rs), so that the attempt's deadline is what cuts
  // the read (at 2 s the read ends on its own first, and reverting the fix passes).
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { connectTimeout: 900, minDelay: 10 })
  // A failed assertion must not leave the client retrying and holding the worker open.
  t.teardown(() => client.terminate())
  const r = new Recorder(client)
  const giveup = await r.next('giveup', 10_000)
  t.is(giveup.reason, 'policy')
  t.like(giveup.lastError, { code: 'ERR_HANDSHAKE', status: 401 })
  t.is(String(giveup.lastError.body), 'bad token')
  t.is(client.metrics.connectAttempts, 1)
  await client.disconnect()
  await quiescent()
})

test.serial('a 503 with Retry-After: 1 waits about a second', async (t) => {
  const server = await refusingServer(503, { 'Retry-After': '1' })
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(server.url, { minDelay: 10, maxDelay: 5_000 })
  const r = new Recorder(client)
  const rec = await r.next('reconnecting')
  t.is(rec.delay, 1_000, 'the server-given delay, without jitter')
  await until(() => server.attempts === 2, 'the second attempt', 5_000)
  const waited = server.times[1] - server.times[0]
  t.true(waited >= 950, `waited ${waited.toFixed(0)} ms`)
  await client.disconnect()
  await quiescent()
})

test.serial('Retry-After: 0 or a date past does not shorten the backoff (no tight loop)', async (t) => {
  for (const after of ['0', 'Thu, 01 Jan 1970 00:00:00 GMT']) {
    const server = await refusingServer(503, { 'Retry-After': after })
    for (const honorRetryAfter of ['capped', 'always'] as const) {
      const client = new ReconnectingWebSocket(server.url, { minDelay: 200, maxDelay: 200, jitter: 'none', honorRetryAfter })
      const r = new Recorder(client)
      t.is((await r.next('reconnecting')).delay, 200, `${after}, ${honorRetryAfter}`)
      t.is((await r.next('reconnecting', 2_000)).delay, 200, `${after}, ${honorRetryAfter}`)
      await client.disconnect()
    }
    await server.close()
  }
  await quiescent()
})

test.serial('Retry-After is capped by maxDelay unless honorRetryAfter is "always"', async (t) => {
  const server = await refusingServer(429, { 'Retry-After': '120' })
  t.teardown(() => server.close())
  const capped = new ReconnectingWebSocket(server.url, { minDelay: 10, maxDelay: 2_000 })
  t.is((await new Recorder(capped).next('reconnecting')).delay, 2_000)
  await capped.disconnect()
  const always = new ReconnectingWebSocket(server.url, { minDelay: 10, maxDelay: 2_000, honorRetryAfter: 'always' })
  t.is((await new Recorder(always).next('reconnecting')).delay, 120_000)
  await always.disconnect()
  await quiescent()
})

test.serial('server close codes 1002/1003/1007/1008 stop; others reconnect', async (t) => {
  let next = 1008
  const peer = await wsServer((socket) => socket.close(next))
  t.teardown(() => peer.close())
  const policy = new ReconnectingWebSocket(peer.url, { minDelay: 1 })
  const r = new Recorder(policy)
  const giveup = await r.next('giveup')
  t.is(giveup.reason, 'policy')
  t.is(giveup.lastError.code, 'ERR_CLOSED')
  t.is((await r.next('close')).code, 1008)
  await quiescent()
  t.is(peer.accepted, 1)
  next = 1001
  const retried = new ReconnectingWebSocket(peer.url, { minDelay: 1, maxDelay: 1 })
  const r2 = new Recorder(retried)
  await r2.next('reconnecting')
  await r2.next('open')
  await r2.next('open')
  await retried.disconnect()
  await quiescent()
})

test.serial('shouldReconnect sees what failed and decides, synchronously or not', async (t) => {
  const peer = await wsServer((socket) => socket.close(4000, 'maintenance'))
  t.teardown(() => peer.close())
  const seen: unknown[] = []
  const client = new ReconnectingWebSocket(peer.url, {
    minDelay: 1,
    shouldReconnect: async (info) => {
      seen.push(info)
      return seen.length < 3
    },
  })
  const r = new Recorder(client)
  const giveup = await r.next('giveup')
  t.is(giveup.reason, 'policy')
  t.deepEqual(seen[0], { kind: 'close', code: 4000, reason: 'maintenance', wasClean: true, attempt: 1 })
  t.is(seen.length, 3)
  t.is(peer.accepted, 3)
  const closes = r.log.filter((e) => e.name === 'close').map((e) => (e.args[0] as { willReconnect: boolean }).willReconnect)
  t.deepEqual(closes, [true, true, false], 'close events carry the verdict')
  await quiescent()

  const refusing = await refusingServer(401, { 'X-Reason': 'expired' })
  t.teardown(() => refusing.close())
  let info: any
  const overridden = new ReconnectingWebSocket(refusing.url, {
    minDelay: 1,
    maxRetries: 2,
    shouldReconnect: (i) => {
      info = i
      return true
    },
  })
  const r2 = new Recorder(overridden)
  t.is((await r2.next('giveup')).reason, 'maxRetries', 'the user policy overrides the default 4xx stop')
  t.is(info.kind, 'handshake')
  t.is(info.status, 401)
  t.is(info.headers['x-reason'], 'expired')
  t.is(refusing.attempts, 3)
  await quiescent()

  const port = await refusedPort()
  let errInfo: any
  const net = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { shouldReconnect: (i) => ((errInfo = i), false) })
  await new Recorder(net).next('giveup')
  t.deepEqual(errInfo, { kind: 'error', code: 'ERR_CONNECT', attempt: 1 })
  await quiescent()
})

test.serial('a half-open peer (stops reading and answering) is detected within pingInterval + pongTimeout', async (t) => {
  // Timed from the server's upgrade answer, which comes before the client's heartbeat starts: the
  // JS open event can come late on a busy thread, which would make the detection look early.
  let upgraded = 0
  const deaf = await rawServer((s) =>
    acceptUpgrade(s, (sock) => {
      upgraded = performance.now()
      sock.pause()
    }),
  )
  t.teardown(() => deaf.close())
  const client = new ReconnectingWebSocket(deaf.url, { pingInterval: 200, pongTimeout: 200, minDelay: 60_000 })
  const r = new Recorder(client)
  await r.next('open')
  t.is(clientStats().heartbeats, 1)
  const err: RedialError = await r.next('error')
  const detected = performance.now() - upgraded
  t.is(err.code, 'ERR_PONG_TIMEOUT')
  const close = await r.next('close')
  t.is(close.code, 1006)
  t.true(close.willReconnect)
  t.true(detected >= 350 && detected < 1_400, `detected after ${detected.toFixed(0)} ms (bound 400 ms)`)
  t.is(clientStats().heartbeats, 0, 'the heartbeat died with its connection')
  await client.disconnect()
  await quiescent()
})

test.serial('a live peer that answers pings is never declared dead; ping()/pong(), and server pings', async (t) => {
  let heartbeats = 0
  const peer = await wsServer((socket) => socket.on('ping', (data) => String(data) === 'redial-ws' && heartbeats++))
  t.teardown(() => peer.close())
  // The server answers on this thread: a timeout of a few scheduler slices, not one. The pings are
  // counted for longer than pingInterval + pongTimeout, so a pong that did not count would fail it.
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 30, pongTimeout: 1_000 })
  const r = new Recorder(client, ['open', 'close', 'error', 'ping', 'pong'])
  await r.next('open')
  const opened = performance.now()
  await until(() => heartbeats >= 12 && performance.now() - opened >= 2_000, 'heartbeats answered for 2 s', 10_000)
  t.is(r.count('close'), 0)
  t.is(r.count('error'), 0)
  // The heartbeat's pongs are the connection's: as with ws, 'pong' reports answers to the application's pings.
  t.is(r.count('pong'), 0)
  client.ping('marco')
  await until(() => r.log.some((e) => e.name === 'pong' && String(e.args[0]) === 'marco'), 'pong with our payload')
  const socket = [...peer.sockets][0]
  const pong = once(socket, 'pong')
  socket.ping('polo')
  t.is(String((await r.next('ping', 5_000)) ?? ''), 'polo')
  t.is(String((await pong)[0]), 'polo', 'pings are answered automatically')
  const unsolicited = once(socket, 'pong')
  client.pong('beat')
  t.is(String((await unsolicited)[0]), 'beat', "ws's pong(): an unsolicited pong")
  t.throws(() => client.pong('x'.repeat(126)), { code: 'ERR_OUT_OF_RANGE' } as object)
  // ws's shapes: ping(callback), ping(data, mask, callback); the callback runs later, not inside the call.
  const called: string[] = []
  // (The heartbeat pings too: wait for ours, the last.)
  const ours = new Promise<void>((resolve) => socket.on('ping', (data) => String(data) === 'm' && resolve()))
  client.ping(() => called.push('noop'))
  client.ping('m', true, () => called.push('m'))
  t.deepEqual(called, [])
  await ours
  t.deepEqual(called, ['noop', 'm'])
  t.throws(() => client.ping('m', false), { code: 'ERR_INVALID_ARG_VALUE' } as object)
  t.throws(() => client.ping('m', true, 'cb' as never), { code: 'ERR_INVALID_ARG_TYPE' } as object)
  await client.disconnect()
  t.is(clientStats().heartbeats, 0)
  t.throws(() => client.ping(), { message: /Cannot ping/ })
  t.throws(() => client.pong(), { message: /Cannot pong/ })
  await quiescent()
})

test.serial("autoPong: false leaves the server's pings to the application, as ws's does", async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { autoPong: false, pingInterval: 0 })
  const r = new Recorder(client, ['open', 'ping'])
  await r.next('open')
  const socket = [...peer.sockets][0]
  const seen: string[] = []
  socket.on('pong', (data) => seen.push(`pong ${data}`))
  socket.on('message', (data) => seen.push(`message ${data}`))
  // Not answered: the next thing the server reads is the client's message (an automatic pong
  // would be written as the ping is read, before it).
  socket.ping('first')
  t.is(String(await r.next('ping')), 'first')
  client.send('after first')
  // Answered by the application's listener.
  client.once('ping', (data: Buffer) => client.pong(data))
  socket.ping('second')
  t.is(String(await r.next('ping')), 'second')
  client.send('after second')
  await until(() => seen.length === 3, 'the messages and the one pong')
  t.deepEqual(seen, ['message after first', 'pong second', 'message after second'])
  await client.disconnect()
  t.throws(() => new ReconnectingWebSocket(peer.url, { autoPong: 'no' as never, startClosed: true }), { code: 'ERR_INVALID_ARG_TYPE' } as object)
  await quiescent()
})

test.serial('a server killed and restarted is reconnected; messages sent meanwhile arrive once, in order', async (t) => {
  let peer = await wsServer()
  t.teardown(() => peer.close())
  const port = peer.port
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 20, maxDelay: 50 })
  const r = new Recorder(client)
  await r.next('open')
  // Read in the listener: the next attempt (20-50 ms later, refused) may have begun by the time
  // an await resumes on a loaded machine.
  const stateWhenReconnecting = new Promise((resolve) => client.once('reconnecting', () => resolve(client.state)))
  await peer.close()
  await r.next('reconnecting')
  t.is(await stateWhenReconnecting, 'reconnecting')
  for (let i = 0; i < 100; i++) client.send(`m${i}`)
  t.is(client.metrics.queuedMessages, 100)
  t.is(client.bufferedAmount, 290)
  const got: string[] = []
  peer = await wsServer((socket) => {
    socket.on('message', (d) => got.push(d.toString()))
  }, port)
  await r.next('open')
  client.send('after')
  await until(() => got.length === 101, () => `101 messages (have ${got.length})`)
  t.deepEqual(got, [...Array.from({ length: 100 }, (_, i) => `m${i}`), 'after'])
  await until(() => client.bufferedAmount === 0, 'everything written')
  t.is(client.metrics.queuedMessages, 0)
  await client.disconnect()
  await quiescent()
})

test.serial('queue overflow: "reject" throws ERR_QUEUE_FULL and keeps what it had', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 60_000, queue: { maxMessages: 3, maxBytes: 10 } })
  for (const m of ['a', 'b', 'c']) client.send(m)
  const e = t.throws(() => client.send('d')) as RedialError
  t.is(e.code, 'ERR_QUEUE_FULL')
  t.deepEqual(client.drainQueue(), ['a', 'b', 'c'])
  client.send('0123456789')
  t.is((t.throws(() => client.send('x')) as RedialError).code, 'ERR_QUEUE_FULL', 'maxBytes bounds too')
  t.is((t.throws(() => client.send('x'.repeat(11))) as RedialError).code, 'ERR_QUEUE_FULL')
  t.is(client.bufferedAmount, 10)
  t.deepEqual(await client.disconnect(), { discarded: 1 }, 'disconnect() reports what it discarded')
  t.is(client.bufferedAmount, 0)
  t.is(client.metrics.queuedMessages, 0)
  await quiescent()
})

test.serial('queue overflow: "drop-oldest" hands the dropped messages to a drop event', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, {
    minDelay: 60_000,
    queue: { maxMessages: 2, overflow: 'drop-oldest' },
  })
  const drops: any[] = []
  client.on('drop', (ev) => drops.push(ev))
  client.send('one')
  client.send(Buffer.from('two'))
  client.send('three')
  t.is(drops.length, 1)
  t.deepEqual(drops[0], { reason: 'overflow', messages: ['one'] })
  const drained = client.drainQueue()
  t.true(Buffer.isBuffer(drained[0]))
  t.deepEqual(drained.map(String), ['two', 'three'])
  await client.disconnect()
  await quiescent()
})

test.serial('queue: false restores ERR_NOT_OPEN while connecting', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 60_000, queue: false })
  t.is((t.throws(() => client.send('x')) as RedialError).code, 'ERR_NOT_OPEN')
  await client.disconnect()
})

for (const when of ['reconnecting', 'connecting'] as const) {
  test.serial(`disconnect({ flush: true }) while ${when} connects, writes the queue, then closes; that connection is not reported open`, async (t) => {
    let accept = when === 'connecting'
    const got: string[] = []
    const peer = await wsServer((socket) => {
      if (!accept) return socket.close(1012)
      socket.send('hello')
      socket.on('message', (d) => got.push(d.toString()))
    })
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, jitter: 'none' })
    if (when === 'reconnecting') await new Recorder(client).next('reconnecting')
    // The client is closing: an open listener that sends (as most do) would throw there.
    const events: string[] = []
    const thrown: unknown[] = []
    client.on('open', () => {
      events.push('open')
      try {
        client.send('from an open listener')
      } catch (err) {
        thrown.push(err)
      }
    })
    client.onopen = () => events.push('onopen')
    client.on('message', () => events.push('message'))
    client.on('close', ({ code }) => events.push(`close ${code} ${client.state} ${client.readyState}`))
    const written: unknown[] = []
    client.send('q1', (err) => written.push(err))
    client.send('q2')
    accept = true
    const done = client.disconnect(1000, 'done', { flush: true })
    t.is(client.state, 'closing')
    t.is(client.readyState, 2)
    t.deepEqual(await done, { discarded: 0 })
    t.deepEqual(written, [null])
    await until(() => got.length === 2, 'flushed messages')
    t.deepEqual(got, ['q1', 'q2'])
    t.deepEqual(thrown, [])
    // Between connections nothing is reported, as without flush; an attempt under way reports its
    // close as it went (here the close handshake), as without flush.
    t.deepEqual(events, when === 'connecting' ? ['close 1000 closed 3'] : [])
    t.is(client.state, 'closed')
    await quiescent()
  })
}

test.serial('disconnect({ flush: true }) during the close of reconnect() (or of disconnect() then connect()): the next connection writes what was sent since, then closes', async (t) => {
  // Each connection's messages and close, in the order the server got them.
  const got: string[][] = []
  const peer = await wsServer((socket) => {
    const mine: string[] = []
    got.push(mine)
    socket.on('message', (data) => mine.push(String(data)))
    socket.on('close', (code) => mine.push(`close ${code}`))
  })
  t.teardown(() => peer.close())
  for (const how of ['reconnect()', 'disconnect(); connect()', 'reconnect(), two flushing calls']) {
    got.length = 0
    const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
    await new Recorder(client).next('open')
    const seen: string[] = []
    client.on('open', () => seen.push(`open ${client.state}`))
    client.on('close', (info: CloseEventInfo) => seen.push(`close ${info.code} ${info.willReconnect} ${client.state}`))
    const fates: string[] = []
    client.send('before', (err) => fates.push(`before ${err?.reason ?? 'written'}`))
    if (how.startsWith('reconnect()')) client.reconnect(4100)
    else {
      void client.disconnect(4100)
      client.connect()
    }
    client.send('since', (err) => fates.push(`since ${err?.reason ?? 'written'}`))
    const first = how.endsWith('two flushing calls') ? client.disconnect(1001, 'first', { flush: true }) : null
    const done = client.disconnect(1000, 'done', { flush: true })
    t.is(client.state, 'closing')
    t.deepEqual(await done, { discarded: 0 }, how)
    if (first !== null) t.deepEqual(await first, { discarded: 0 }, how)
    await until(() => got.length === 2 && got[1].includes('close 1000'), 'the second connection closed')
    t.deepEqual(got, [['before', 'close 4100'], ['since', 'close 1000']], how)
    t.deepEqual(fates, ['before written', 'since written'], how)
    // The close under way is the last event: the connection made to write the queue is not reported
    // (its open would come while closing, where send() throws), as any connection the driver makes
    // before it takes a disconnect().
    t.deepEqual(seen, ['close 4100 false closed'], how)
    await quiescent()
  }
})

test.serial('providers: a fresh token per attempt; two rejections are failed attempts, the third connects', async (t) => {
  const seen: Array<{ url: string; auth?: string; protocol?: string }> = []
  const peer = await wsServer()
  t.teardown(() => peer.close())
  peer.wss.on('connection', (_s, req) => seen.push({ url: req.url!, auth: req.headers.authorization, protocol: req.headers['sec-websocket-protocol'] }))
  let calls = 0
  const client = new ReconnectingWebSocket(async ({ attempt }) => `${peer.url}?attempt=${attempt}`, {
    minDelay: 1,
    maxDelay: 1,
    headers: async () => {
      if (++calls <= 2) throw new Error('token service down')
      return { authorization: `Bearer t${calls}` }
    },
    protocols: () => ['chat.v1'],
  })
  const r = new Recorder(client)
  const e1: RedialError = await r.next('error')
  t.is(e1.code, 'ERR_PROVIDER')
  t.regex(e1.message, /token service down/)
  t.is((await r.next('error')).code, 'ERR_PROVIDER')
  await r.next('open')
  t.deepEqual(seen, [{ url: '/?attempt=2', auth: 'Bearer t3', protocol: 'chat.v1' }])
  t.is(client.protocol, 'chat.v1')
  t.is(client.url, `${peer.url}?attempt=2`)
  await client.disconnect()
  await quiescent()
})

test.serial('a provider that never settles is bounded by connectTimeout', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { connectTimeout: 100, minDelay: 60_000, headers: () => new Promise<Record<string, string>>(() => {}) })
  const err: RedialError = await new Recorder(client).next('error')
  t.is(err.code, 'ERR_CONNECT_TIMEOUT')
  t.is(peer.accepted, 0)
  await client.disconnect()
  await quiescent()
})

test.serial('reconnect() forces a fresh connection: one connection, one timer', async (t) => {
  let lastClose: number | undefined
  const peer = await wsServer((socket) => socket.on('close', (code) => (lastClose = code)))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
  const r = new Recorder(client)
  await r.next('open')
  client.reconnect()
  const close = await r.next('close')
  t.is(close.code, 1000)
  t.true(close.willReconnect)
  await r.next('open')
  await until(() => lastClose === 1000, 'server saw the 1000 close')
  t.is(peer.accepted, 2)
  t.is(peer.maxConcurrent, 1)
  // During a long backoff wait, reconnect() connects now.
  for (const s of peer.sockets) s.close(1012)
  await r.next('reconnecting')
  t.is(client.metrics.pendingReconnects, 1)
  client.reconnect()
  await r.next('open')
  t.is(client.metrics.pendingReconnects, 0)
  t.is(peer.accepted, 3)
  await client.disconnect()
  await quiescent()
})

test.serial('queue options left undefined take their defaults, as every other option does', async (t) => {
  const queue = { maxMessages: undefined, maxBytes: undefined, overflow: undefined }
  const client = new ReconnectingWebSocket('ws://127.0.0.1:1/', { minDelay: 60_000, queue })
  for (let i = 0; i < 1000; i++) client.send('x')
  t.throws(() => client.send('x'), { code: 'ERR_QUEUE_FULL' } as never)
  t.is(client.bufferedAmount, 1000)
  await client.disconnect()
})

test("the defaults are the documented ones: the README's option table, and docs/migrating.md's for rws mode", (t) => {
  const require = createRequire(import.meta.url)
  const { parseOptions } = require('../lib/options.js')
  const { normalizeArgs } = require('../lib/rws.js')
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const documented = (name: string) => {
    const row = new RegExp(`^\\| \`${name}\` \\| \`([^\`]+)\``, 'm').exec(readme)
    if (!row) throw new Error(`no README row for ${name}`)
    return row[1]
  }
  const native = parseOptions({}).native
  for (const name of ['minDelay', 'maxDelay', 'factor', 'minUptime', 'connectTimeout', 'closeTimeout', 'pingInterval', 'pongTimeout']) {
    t.is(native[name], Number(documented(name)), name)
  }
  t.is(documented('jitter'), `'${native.jitter}'`)
  t.is(documented('maxRetries'), 'Infinity')
  t.is(native.maxRetries, Infinity)
  t.is(documented('queue'), '{ maxMessages: 1000, maxBytes: 4 MiB, overflow: \'reject\' }')
  t.like(native, { queueEnabled: true, queueMaxMessages: 1000, queueMaxBytes: 4 * 1024 * 1024, queueDropOldest: false })

  const migrating = readFileSync(new URL('../docs/migrating.md', import.meta.url), 'utf8')
  const row = /^\| defaults \| (.*) \|$/m.exec(migrating)![1]
  const theirs = (name: string) => Number(new RegExp(`\`${name}\` (\\d+)`).exec(row)![1])
  const rws = normalizeArgs(undefined, undefined, 3, null).options
  t.is(rws.maxDelay, theirs('maxReconnectionDelay'))
  t.is(rws.factor, Number(/`reconnectionDelayGrowFactor` ([\d.]+)/.exec(row)![1]))
  t.is(rws.minUptime, theirs('minUptime'))
  t.is(rws.connectTimeout, theirs('connectionTimeout'))
  t.true(rws.minDelay >= 1000 && rws.minDelay <= 5000, `minReconnectionDelay ${rws.minDelay}: 1000 + random x 4000`)
  t.is(rws.jitter, 'none')
  t.like(rws.queue, { maxMessages: Infinity, maxBytes: Infinity })
})

test('bad resilience options get coded errors', (t) => {
  const bad: Array<[object, string]> = [
    [{ pingInterval: -1 }, 'ERR_OUT_OF_RANGE'],
    [{ pingInterval: 2 ** 31 }, 'ERR_OUT_OF_RANGE'],
    [{ connectTimeout: 1e12 }, 'ERR_OUT_OF_RANGE'],
    [{ pongTimeout: 0 }, 'ERR_OUT_OF_RANGE'],
    [{ honorRetryAfter: 'sometimes' }, 'ERR_OUT_OF_RANGE'],
    [{ shouldReconnect: true }, 'ERR_INVALID_ARG_TYPE'],
    [{ queue: { maxMessages: -1 } }, 'ERR_OUT_OF_RANGE'],
    [{ queue: { maxMessages: 1.5 } }, 'ERR_OUT_OF_RANGE'],
    [{ queue: { maxBytes: 0.5 } }, 'ERR_OUT_OF_RANGE'],
    [{ closeTimeout: 0 }, 'ERR_OUT_OF_RANGE'],
    [{ queue: { overflow: 'drop-newest' } }, 'ERR_OUT_OF_RANGE'],
    [{ queue: { max: 1 } }, 'ERR_UNKNOWN_OPTION'],
    [{ queue: 'big' }, 'ERR_INVALID_ARG_TYPE'],
    [{ headers: { 'bad name': 'x' } }, 'ERR_INVALID_HTTP_TOKEN'],
    [{ headers: { ok: 'line\r\nbreak' } }, 'ERR_INVALID_CHAR'],
    [{ protocols: ['a', 'a'] }, 'ERR_INVALID_PROTOCOL'],
  ]
  for (const [options, code] of bad) {
    const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', options as never)) as RedialError
    t.is(err.code as string, code, JSON.stringify(options))
  }
})

/** Counts a client's data messages and answers its pings, from the bytes the test hands it. */
function frameCounter(s: net.Socket) {
  const got: number[] = []
  let pings = 0
  // Masked client frames: a header (2, 4 or 10 bytes), the mask, then the payload, skipped.
  let head = Buffer.alloc(0)
  let skip = 0
  let opcode = 0
  let length = 0
  const done = () => {
    if (opcode === 0x9) {
      pings++
      s.write(Buffer.from([0x8a, 0]))
    } else if (opcode === 0x2) got.push(length)
  }
  const consume = (chunk: Buffer) => {
    while (chunk.length > 0) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length)
        skip -= n
        chunk = chunk.subarray(n)
        if (skip === 0) done()
        continue
      }
      head = Buffer.concat([head, chunk])
      if (head.length < 2) return
      const short = head[1] & 0x7f
      const at = short === 126 ? 4 : short === 127 ? 10 : 2
      if (head.length < at + 4) return
      opcode = head[0] & 0x0f
      length = short === 126 ? head.readUInt16BE(2) : short === 127 ? Number(head.readBigUInt64BE(2)) : short
      chunk = head.subarray(at + 4)
      head = Buffer.alloc(0)
      skip = length
      if (length === 0) done()
    }
  }
  return {
    consume,
    got,
    get pings() {
      return pings
    },
  }
}

/** A raw server whose upgraded sockets start paused, each with its frame counter: `reader` reads them. */
async function pausedPeer(reader: (s: net.Socket, frames: ReturnType<typeof frameCounter>) => void) {
  let first: ReturnType<typeof frameCounter> | undefined
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      s.pause()
      const frames = frameCounter(s)
      first ??= frames
      reader(s, frames)
    }),
  )
  return { peer, counter: () => first }
}

/** The upload reached the server whole, with a ping after it, on the first connection. */
async function deliveredWhole(
  t: ExecutionContext,
  client: ReconnectingWebSocket,
  r: Recorder,
  sent: Promise<Error | null | undefined>,
  counter: () => ReturnType<typeof frameCounter> | undefined,
  size: number,
) {
  await until(() => (counter()?.got.length ?? 0) > 0 && (counter()?.pings ?? 0) > 0, 'the server read the message and a ping after it', 30_000)
  t.is(await sent, null, 'the send callback reports success')
  t.deepEqual(counter()?.got, [size], 'one message, whole, on the first connection')
  const errors = r.log.filter((e) => e.name === 'error').map((e) => (e.args[0] as RedialError).code)
  t.deepEqual(errors, [], 'no error')
  t.is(r.count('close'), 0)
  t.is(client.metrics.connects, 1)
  await client.disconnect()
  await quiescent()
}

test.serial('a large message to a server that reads it slowly is not cut short by the heartbeat: the socket taking our bytes proves the peer alive', async (t) => {
  // The client pings every 100 ms and waits 1 s for a pong, which cannot come before the server
  // has read the message: the server reads 128 KiB every 10 ms (about 12 MB/s) until what is
  // left could all be in the sockets' buffers (40 MiB: Linux's most for both), then at full speed.
  // The slow part takes about 2 s: the old rule ended the connection after 1.1 s.
  const SIZE = 64 << 20
  const FAST_FROM = 40 << 20
  const { peer, counter } = await pausedPeer((s, frames) => {
    let read = 0
    const timer = setInterval(() => {
      if (SIZE - read <= FAST_FROM) {
        clearInterval(timer)
        s.on('data', frames.consume)
        s.resume()
        return
      }
      const chunk: Buffer | null = s.read(Math.min(128 << 10, s.readableLength))
      if (chunk) {
        read += chunk.length
        frames.consume(chunk)
      }
    }, 10)
    s.on('close', () => clearInterval(timer))
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 100, pongTimeout: 1000, minDelay: 10, maxDelay: 10 })
  const r = new Recorder(client)
  await r.next('open')
  const sent = new Promise<Error | null | undefined>((resolve) => client.send(Buffer.alloc(SIZE, 7), {}, resolve))
  await deliveredWhole(t, client, r, sent, counter, SIZE)
})

test.serial('a large message from a server that sends it slowly is not cut short by the heartbeat: its bytes arriving prove the peer alive', async (t) => {
  // 768 KiB in one frame, 16 KiB every 20 ms: about a second, five pong timeouts. The server cannot
  // answer a ping inside the frame (its pong comes after it); the old rule ended the connection
  // 300 ms after the open, and every connection after it, and the message never arrived.
  const SIZE = 768 << 10
  const CHUNK = 16 << 10
  const timers = new Set<NodeJS.Timeout>()
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      const header = Buffer.alloc(10)
      header[0] = 0x82
      header[1] = 127
      header.writeBigUInt64BE(BigInt(SIZE), 2)
      s.write(header)
      let sent = 0
      const timer = setInterval(() => {
        s.write(Buffer.alloc(CHUNK, 7))
        sent += CHUNK
        if (sent === SIZE) clearInterval(timer)
      }, 20)
      timers.add(timer)
      s.on('close', () => clearInterval(timer))
      s.on('error', () => {})
    }),
  )
  t.teardown(() => {
    for (const timer of timers) clearInterval(timer)
    return peer.close()
  })
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 100, pongTimeout: 200, minDelay: 10, maxDelay: 10 })
  const r = new Recorder(client)
  await r.next('open')
  const data = (await r.next('message')) as Buffer
  t.is(data.length, SIZE)
  t.true(data.every((b) => b === 7))
  t.is(r.count('error'), 0)
  t.is(client.metrics.connects, 1)
  await client.terminate()
  await quiescent()
})

test.serial('the pong deadline of a ping that waited behind a large message runs from when the socket took the ping', async (t) => {
  // The ping falls due while the message fills the sockets' buffers and waits behind the rest of
  // it. The server reads nothing for 1.2 s, then reads fast until 1 MiB of the message is left in
  // the buffers (our writing has ended: the ping is out), holds that for 1.5 s, then reads on and
  // answers. The deadline armed when the ping fell due (0.2 s after the open) passed 2.2 s after
  // the open, while the server held its last megabyte: the old rule ended the connection there.
  const SIZE = 64 << 20
  const HOLD_AT = SIZE - (1 << 20)
  let start: () => void = () => {}
  const { peer, counter } = await pausedPeer((s, frames) => {
    let read = 0
    let held = false
    const pump = () => {
      while (read < HOLD_AT && s.readableLength > 0) {
        const chunk: Buffer = s.read(Math.min(s.readableLength, HOLD_AT - read))
        read += chunk.length
        frames.consume(chunk)
      }
      if (read >= HOLD_AT && !held) {
        held = true
        s.off('readable', pump)
        setTimeout(() => {
          s.on('data', frames.consume)
          s.resume()
        }, 1500)
      }
    }
    start = () => {
      s.on('readable', pump)
      pump()
    }
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 200, pongTimeout: 2000, minDelay: 10, maxDelay: 10 })
  const r = new Recorder(client)
  await r.next('open')
  const sent = new Promise<Error | null | undefined>((resolve) => client.send(Buffer.alloc(SIZE, 7), {}, resolve))
  setTimeout(() => start(), 1200)
  await deliveredWhole(t, client, r, sent, counter, SIZE)
})
