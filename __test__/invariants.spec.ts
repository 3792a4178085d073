// The core's invariants: a client never has more than one reconnect timer nor more than one
// connection, however close events, connect() and reconnect() race; and disconnect() in every
// state leaves no timer, task, connection or buffer behind by the time it resolves.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'
import { setImmediate as tick, setTimeout as delay } from 'node:timers/promises'
import test from 'ava'

import { ReconnectingWebSocket, clientStats } from '../index.js'
import { Recorder, acceptUpgrade, clientFrames, collectUntil, forceGc, quiescent, rawServer, refusedPort, until, wsServer } from './helpers.js'

const native = createRequire(import.meta.url)('../lib/native.js') as { testingStallDriverExit(ms: number): void }

test.serial('a server that accepts and closes 200 times: never two timers, never two connections', async (t) => {
  const peer = await wsServer((socket) => socket.close(1001, 'restarting'))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 1, maxDelay: 4, minUptime: 0 })
  let maxPending = 0
  let samples = 0
  const sample = () => {
    samples++
    maxPending = Math.max(maxPending, client.metrics.pendingReconnects, clientStats().pendingReconnects)
  }
  for (const name of ['open', 'close', 'reconnecting', 'error'] as const) client.on(name, sample)
  // Also sample between events, on every turn of the event loop.
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      sample()
      await new Promise((r) => setImmediate(r))
    }
  })()
  await until(() => peer.accepted >= 200, () => `200 connections (have ${peer.accepted})`, 30_000)
  await client.disconnect()
  sampling = false
  await sampler
  const attempts = client.metrics.connectAttempts
  t.true(samples > 400, `sampled ${samples} times`)
  t.is(maxPending, 1, 'pendingReconnects never above 1')
  t.is(peer.maxConcurrent, 1, 'the server never saw two concurrent connections from the client')
  t.is(client.metrics.pendingReconnects, 0)
  await quiescent()
  // Nothing reconnects after disconnect(). (An attempt aborted by disconnect() may still reach the
  // server's upgrade handler late, so the server's count is bounded by the client's attempts.)
  await delay(50)
  t.is(client.metrics.connectAttempts, attempts)
  t.true(peer.accepted <= attempts)
})

test.serial('connect() during a pending reconnect cancels the timer and connects once', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 60_000, jitter: 'none' })
  const r = new Recorder(client)
  await r.next('reconnecting')
  t.is(client.state, 'reconnecting')
  t.is(client.metrics.pendingReconnects, 1)
  const peer = await wsServer(undefined, port)
  t.teardown(() => peer.close())
  client.connect()
  client.connect()
  t.is(client.state, 'connecting')
  await r.next('open')
  t.is(client.metrics.pendingReconnects, 0)
  t.is(client.metrics.connectAttempts, 2)
  t.is(peer.accepted, 1)
  // connect() while open does nothing.
  client.connect()
  await delay(30)
  t.is(peer.accepted, 1)
  t.is(client.metrics.connectAttempts, 2)
  await client.disconnect()
  await quiescent()
})

test.serial('connect() while connecting does nothing', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  client.connect()
  client.connect()
  const r = new Recorder(client)
  await r.next('open')
  t.is(client.metrics.connectAttempts, 1)
  t.is(peer.accepted, 1)
  await client.disconnect()
  await quiescent()
})

test.serial('disconnect() while connecting drops the attempt', async (t) => {
  // Accepts TCP but never answers the upgrade: the client stays in "connecting".
  const silent = await rawServer((s) => s.resume())
  t.teardown(() => silent.close())
  const client = new ReconnectingWebSocket(silent.url, { minDelay: 1 })
  await until(() => silent.accepted === 1 && clientStats().pendingAttempts === 1, 'attempt in flight')
  t.is(client.state, 'connecting')
  const r = new Recorder(client)
  await client.disconnect()
  t.is(client.state, 'closed')
  t.deepEqual(await r.next('close'), { code: 1006, reason: '', wasClean: false, willReconnect: false })
  await quiescent()
  await until(() => silent.sockets.size === 0, 'the server sees the half-open attempt dropped')
  await delay(50)
  t.is(silent.accepted, 1, 'no reconnect after disconnect()')
})

test.serial('disconnect() while open does the close handshake with code and reason', async (t) => {
  let serverClose: [number, string] | undefined
  const peer = await wsServer((socket) => socket.on('close', (code, reason) => (serverClose = [code, reason.toString()])))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 1 })
  const r = new Recorder(client)
  await r.next('open')
  const done = client.disconnect(4321, 'see you')
  t.is(client.state, 'closing')
  // Closing: not sent, and reported rather than thrown (a listener may still answer what comes).
  const drops: unknown[] = []
  client.on('drop', (ev) => drops.push(ev))
  client.send('late')
  t.deepEqual(drops, [{ reason: 'closed', messages: ['late'] }])
  await done
  t.throws(() => client.send('later'), { code: 'ERR_NOT_OPEN', message: /closed/ })
  t.is(client.state, 'closed')
  t.deepEqual(await r.next('close'), { code: 4321, reason: 'see you', wasClean: true, willReconnect: false })
  await until(() => serverClose !== undefined, 'server close event')
  t.deepEqual(serverClose, [4321, 'see you'])
  await quiescent()
  t.is(peer.accepted, 1)
})

test.serial("disconnect()'s close comes with everything released, in the dispatch that settles it", async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  await quiescent()
  for (let i = 0; i < 6; i++) {
    const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
    await new Recorder(client).next('open')
    // Half the time the worker waits before reporting its exit, as when the JS thread it woke takes its CPU.
    native.testingStallDriverExit(i % 2 === 0 ? 0 : 50)
    const seen: string[] = []
    let atClose: ReturnType<typeof clientStats> | undefined
    client.on('close', () => {
      atClose = clientStats()
      seen.push('close')
      setImmediate(() => seen.push('next turn'))
    })
    await client.disconnect()
    seen.push('settled')
    // One batch: the promise settles before the event loop turns (a later batch comes in a later turn).
    t.deepEqual(seen, ['close', 'settled'], `cycle ${i}`)
    t.like(atClose, { runningTasks: 0, openConnections: 0, ioBuffers: 0 }, `cycle ${i}`)
  }
})

test.serial('with two tokio workers, a driver started while the last one exits waits for it: its close reaches JS before the new open', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const child = fileURLToPath(new URL('./fixtures/workers-child.cjs', import.meta.url))
  const proc = spawn(process.execPath, [child, peer.url], { env: { ...process.env, REDIAL_WS_WORKERS: '2' }, stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (d) => (out += d))
  const [code] = await once(proc, 'close')
  t.is(code, 0, out)
  const report = JSON.parse(out.split('\n')[0])
  // Before: the new driver's open came first, then the old one's close, which JS took for the end
  // of the new connection (state 'connecting' for good while it was open).
  t.deepEqual(report.events, ['open', 'close', 'open'])
  t.is(report.state, 'open')
  t.true(report.settled)
})

test.serial('messages sent before disconnect() are written before the close frame', async (t) => {
  const got: string[] = []
  const peer = await wsServer((socket) => socket.on('message', (d) => got.push(d.toString())))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  await new Recorder(client).next('open')
  for (let i = 0; i < 100; i++) client.send(`m${i}`)
  await client.disconnect()
  await until(() => peer.concurrent === 0, 'server saw the close')
  t.deepEqual(got, Array.from({ length: 100 }, (_, i) => `m${i}`))
})

test.serial('disconnect() during the backoff wait cancels the timer', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 100, maxDelay: 100, jitter: 'none' })
  const r = new Recorder(client)
  await r.next('reconnecting')
  t.is(clientStats().pendingReconnects, 1)
  t.is(client.readyState, client.CLOSED)
  const closes = r.count('close')
  const disconnected = client.disconnect()
  // There is no connection to close: closed at once (readyState never goes back to CLOSING).
  t.is(client.state, 'closed')
  t.is(client.readyState, client.CLOSED)
  t.false(client.shouldReconnect)
  await disconnected
  t.is(client.state, 'closed')
  t.is(client.metrics.pendingReconnects, 0)
  t.is(r.count('close'), closes, 'no close event: the failed attempt reported its end already')
  await quiescent()
  const attempts = client.metrics.connectAttempts
  await delay(250)
  t.is(client.metrics.connectAttempts, attempts, 'the cancelled timer never fired')
})

test.serial('disconnect() while closing, twice, and when closed all resolve', async (t) => {
  // The server completes the upgrade and then ignores everything: our close is never answered.
  const deaf = await rawServer((s) => acceptUpgrade(s, () => {}))
  t.teardown(() => deaf.close())
  const client = new ReconnectingWebSocket(deaf.url, { closeTimeout: 150 })
  const r = new Recorder(client)
  await r.next('open')
  const first = client.disconnect()
  const second = client.disconnect(3001)
  t.is(client.state, 'closing')
  await Promise.all([first, second])
  t.is(client.state, 'closed')
  const close = await r.next('close')
  t.is(close.code, 1006, 'the close deadline expired and the socket was dropped')
  t.false(close.wasClean)
  await quiescent()
  await client.disconnect()
  const never = new ReconnectingWebSocket(deaf.url, { startClosed: true })
  await never.disconnect()
  t.is(never.metrics.connectAttempts, 0)
  t.is(deaf.accepted, 1)
})

test.serial('connect() while closing reconnects once the close completes; what is sent after connect() goes on the new connection', async (t) => {
  const received: string[][] = []
  const peer = await wsServer((socket) => {
    const mine: string[] = []
    received.push(mine)
    socket.on('message', (d) => mine.push(String(d)))
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  const r = new Recorder(client)
  await r.next('open')
  const closed = client.disconnect()
  client.connect()
  t.is(client.state, 'closing', 'the close goes on first')
  // Queued for the next connection: the disconnect's discard once took it along (found in review).
  const written = new Promise<unknown>((resolve) => client.send('after connect()', resolve))
  t.deepEqual(await closed, { discarded: 0 })
  // The close is done and the next connection under way: connecting, not closed.
  t.true(client.state === 'connecting' || client.state === 'open', client.state)
  t.true(client.shouldReconnect)
  await r.next('open')
  t.is(client.state, 'open')
  t.is(await written, null)
  await until(() => received[1]?.length === 1, () => `the message on the second connection (have ${JSON.stringify(received)})`)
  t.deepEqual(received, [[], ['after connect()']])
  t.is(peer.accepted, 2)
  t.is(peer.maxConcurrent, 1)
  await client.disconnect()
  await quiescent()
})

test.serial('terminate() or disconnect() then connect(): the client is connecting, then open; opened() waits for it', async (t) => {
  // The driver may finish the close before connect() reaches it; connect() then starts a new one.
  // The old driver's end once left the client 'closed' while the new connection opened (found in
  // review), and opened() rejected.
  const peer = await wsServer()
  t.teardown(() => peer.close())
  for (const end of ['terminate', 'disconnect'] as const) {
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 10 })
    const r = new Recorder(client)
    await r.next('open')
    const ended = end === 'terminate' ? client.terminate() : client.disconnect()
    client.connect()
    const opened = client.opened()
    await ended
    t.true(client.state === 'connecting' || client.state === 'open', `${end}: ${client.state}`)
    t.true(client.shouldReconnect, end)
    await opened
    await r.next('open')
    t.is(client.state, 'open', end)
    t.is(client.readyState, client.OPEN, end)
    await client.disconnect()
  }
  await quiescent()
})

test.serial('terminate() then connect(), 150 times: what is sent after connect() is accepted and written', async (t) => {
  // The driver refused send() once it finished, even when a connect() had come meanwhile: about
  // one time in twenty, send() threw ERR_NOT_OPEN, and the next connection opened with every
  // message refused (found in review). send() is now accepted in the same step as connect()'s command.
  const received = new Set<string>()
  const peer = await wsServer((socket) => socket.on('message', (d) => received.add(String(d))))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10 })
  await client.opened()
  const rounds = 150
  for (let i = 0; i < rounds; i++) {
    const ended = client.terminate()
    client.connect()
    const written = new Promise<unknown>((resolve) => client.send(`m${i}`, resolve))
    await ended
    await client.opened()
    t.is(await written, null, `round ${i}`)
  }
  await until(() => received.size === rounds, () => `${rounds} messages (have ${received.size})`)
  t.is(peer.accepted, rounds + 1)
  await client.disconnect()
  await quiescent()
})

test.serial('reconnect() keeps the queue: a message sent during its close handshake goes on the next connection, its callback with null', async (t) => {
  // A raw server that holds its answer to our close until told: a message sent meanwhile is
  // queued (the connection is closing). The close of a reconnect() once discarded the queue as a
  // disconnect() does (found in review: the callback got ERR_NOT_SENT 'discarded').
  const texts: string[][] = []
  const closes: Array<() => void> = []
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (sock) => {
      const mine: string[] = []
      texts.push(mine)
      clientFrames(sock, (opcode, payload) => {
        if (opcode === 1) mine.push(payload.toString())
        if (opcode === 8) closes.push(() => sock.end(Buffer.from([0x88, 0x02, 0x03, 0xe8])))
      })
    }),
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, pingInterval: 0 })
  const r = new Recorder(client)
  await r.next('open')
  client.reconnect()
  await until(() => closes.length === 1, 'our close reached the server')
  const called: unknown[] = []
  client.send('during the close', (err) => called.push(err))
  t.is(client.metrics.queuedMessages, 1, 'queued: the connection is closing')
  closes[0]()
  await r.next('open')
  await until(() => called.length === 1 && texts[1]?.length === 1, () => `callbacks ${JSON.stringify(called)}; the server got ${JSON.stringify(texts)}`)
  t.deepEqual(texts, [[], ['during the close']])
  t.deepEqual(called, [null])
  const disconnected = client.disconnect()
  await until(() => closes.length === 2, 'our second close reached the server')
  closes[1]()
  await disconnected
  await quiescent()
})

test.serial('reconnect() during a reconnect wait starts the count of maxRetries afresh', async (t) => {
  const port = await refusedPort()
  // A short first wait; the second, where reconnect() is called, lasts 5 s (50 ms * 100): room for
  // this thread to call it before the third failure would give up.
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 50, factor: 100, maxDelay: 5_000, jitter: 'none', maxRetries: 2 })
  const r = new Recorder(client)
  await r.next('reconnecting')
  t.like(await r.next('reconnecting'), { attempt: 2, delay: 5_000 })
  t.is(client.retryCount, 2)
  client.reconnect()
  // Two more failures may be retried before it gives up: the first of them is retried.
  t.like(await r.next('reconnecting'), { attempt: 1 })
  t.is(r.count('giveup'), 0)
  await client.disconnect()
  await quiescent()
})

test.serial('maxRetries: gives up after the allowed attempts, with no timer left', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 1, maxDelay: 2, maxRetries: 3 })
  const r = new Recorder(client)
  const giveup = await r.next('giveup')
  t.is(giveup.attempts, 4)
  t.is(giveup.reason, 'maxRetries')
  t.is(giveup.lastError.code, 'ERR_CONNECT')
  t.is(client.metrics.connectAttempts, 4)
  t.is(r.count('reconnecting'), 3)
  t.is(client.state, 'closed')
  await quiescent()
  t.is(client.metrics.pendingReconnects, 0)
})

test.serial('sends outrunning a peer that stopped reading are all written, in order, once it reads again', async (t) => {
  const got: number[] = []
  let server: import('node:net').Socket | undefined
  const peer = await wsServer((socket) => {
    socket.on('message', (d) => got.push(Number(d.toString().slice(0, 8))))
    server = (socket as unknown as { _socket: import('node:net').Socket })._socket
    server.pause()
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  await new Recorder(client).next('open')
  await until(() => server !== undefined, 'server socket')
  const pad = 'x'.repeat(1016)
  const total = 20_000
  // ~20 MiB of small frames: far more than the socket buffers hold while the peer does not read.
  for (let i = 0; i < total; i++) client.send(String(i).padStart(8, '0') + pad)
  server!.resume()
  await until(() => got.length === total, () => `all ${total} messages (have ${got.length})`, 20_000)
  t.true(got.every((n, i) => n === i), 'in order, none lost or doubled')
  t.is(client.metrics.messagesSent, total)
  await client.disconnect()
  await quiescent()
})

test.serial('open connections hold no read or write buffer once traffic stops (ioBuffers back to 0)', async (t) => {
  const sockets: import('node:net').Socket[] = []
  const peer = await wsServer((socket) => {
    socket.on('message', (d, binary) => socket.send(d, { binary }))
    const raw = (socket as unknown as { _socket: import('node:net').Socket })._socket
    raw.pause()
    sockets.push(raw)
  })
  t.teardown(() => peer.close())
  await until(() => clientStats().ioBuffers === 0, 'no buffers from earlier tests')
  const clients = Array.from({ length: 4 }, () => new ReconnectingWebSocket(peer.url))
  await Promise.all(clients.map((c) => new Recorder(c).next('open')))
  await until(() => sockets.length === clients.length, 'server sockets')
  const big = Buffer.alloc(16 << 20, 7)
  const echoed = clients.map(() => 0)
  clients.forEach((c, i) =>
    c.on('message', (d) => {
      echoed[i] += (d as Buffer).length
    }),
  )
  // 16 MiB per client (the driver's write path: too big for the fast path) to a peer that does
  // not read: the socket buffers fill and the rest waits, framed, in the connection.
  for (const c of clients) c.send(big)
  await until(() => clientStats().ioBuffers >= clients.length, () => `write buffers held while the peer does not read (${clientStats().ioBuffers})`)
  // Cut short by a full socket: not sent yet, and still counted as buffered.
  for (const c of clients) {
    t.is(c.metrics.messagesSent, 0)
    t.is(c.bufferedAmount, big.length)
  }
  for (const s of sockets) s.resume()
  // The echo comes back as 4 MiB frames: read straight into their own allocation.
  await until(() => echoed.every((n) => n === big.length), () => `every echo (${echoed})`, 20_000)
  await until(() => clientStats().ioBuffers === 0, () => `buffers released (${clientStats().ioBuffers} held)`)
  t.is(clientStats().openConnections, clients.length, 'the connections are still open')
  t.is(clients.reduce((n, c) => n + c.metrics.messagesSent, 0), clients.length)
  await Promise.all(clients.map((c) => c.disconnect()))
  await quiescent()
})

test.serial('the buffers of large messages that JS frees are used again: at most 4 MiB kept, none once disconnect() resolves', async (t) => {
  const size = 64 * 1024
  const peer = await wsServer((socket) => {
    socket.on('message', (d) => {
      const payload = Buffer.alloc(size, 5)
      for (let i = 0; i < Number(String(d)); i++) socket.send(payload, { binary: true })
    })
  })
  t.teardown(() => peer.close())
  await quiescent()
  t.is(clientStats().recycledBytes, 0, 'nothing kept before a connection opens')
  const client = new ReconnectingWebSocket(peer.url)
  await new Recorder(client, ['open']).next('open') // not 'message': a Recorder keeps every message
  let received = 0
  let held: Buffer[] | null = null
  client.on('message', (d) => {
    received++
    if (held) held.push(d as Buffer)
  })
  const burst = async (n: number) => {
    const target = received + n
    client.send(String(n))
    await until(() => received === target, () => `${n} messages (have ${received})`, 20_000)
  }

  // 200 messages (12.8 MB), none kept by the listener: their Buffers' memory comes back as V8 frees them.
  await burst(200)
  await collectUntil(() => clientStats().recycledBytes > 0, 'freed payload buffers kept')
  for (let i = 0; i < 5; i++) {
    forceGc()
    await tick()
  }
  const kept = clientStats().recycledBytes
  t.log(`kept ${kept} bytes of 200 freed buffers of ${size} bytes`)
  t.true(kept > 2 * 1024 * 1024 && kept <= 4 * 1024 * 1024, `between 2 and 4 MiB kept (${kept})`)

  // 200 more, all kept alive by the listener: the messages take the pool's buffers, none comes back.
  held = []
  await burst(200)
  t.is(clientStats().recycledBytes, 0, 'the kept buffers were used by the next messages')
  t.true(held.every((b) => b.length === size && b[0] === 5 && b[size - 1] === 5), 'their contents are the new messages')

  // A burst freed while the connection is open fills the pool again; disconnect() empties it.
  held = null
  await burst(100)
  await collectUntil(() => clientStats().recycledBytes > 0, 'freed payload buffers kept again')
  const lastHeld: Buffer[] = []
  held = lastHeld
  await burst(10)
  held = null
  await client.disconnect()
  t.is(clientStats().recycledBytes, 0, 'emptied when the last connection ends')
  t.is(lastHeld.length, 10)
  lastHeld.length = 0
  for (let i = 0; i < 5; i++) {
    forceGc()
    await tick()
  }
  t.is(clientStats().recycledBytes, 0, 'a buffer freed after that is not kept')
  await quiescent()
})

test.serial('the buffers kept for large messages go once no large message has come for 2 s, at the next read or heartbeat (kept, they pinned the memory V8 freed beneath them)', async (t) => {
  const size = 64 * 1024
  const peer = await wsServer((socket) => {
    socket.on('message', (d) => {
      if (String(d) === 'small') return void socket.send('small')
      const payload = Buffer.alloc(size, 5)
      for (let i = 0; i < Number(String(d)); i++) socket.send(payload, { binary: true })
    })
  })
  t.teardown(() => peer.close())
  await quiescent()
  // One client without heartbeats (its reads free them), one with (its heartbeat does).
  for (const pingInterval of [0, 300]) {
    const client = new ReconnectingWebSocket(peer.url, { pingInterval, pongTimeout: 5_000 })
    await new Recorder(client, ['open']).next('open')
    let received = 0
    let small = 0
    client.on('message', (d) => (d === 'small' ? small++ : received++))
    client.send('100')
    await until(() => received === 100, () => `100 messages (have ${received})`, 20_000)
    await collectUntil(() => clientStats().recycledBytes > 0, 'freed payload buffers kept')
    // The condition under test is time without large messages.
    await new Promise((resolve) => setTimeout(resolve, 2_100))
    if (pingInterval === 0) {
      t.true(clientStats().recycledBytes > 0, 'nothing read since: still kept')
      client.send('small')
      await until(() => small === 1, () => 'the small message', 10_000)
    }
    await until(() => clientStats().recycledBytes === 0, () => `freed (${clientStats().recycledBytes} kept)`, 10_000)
    // And what V8 frees after that is not kept.
    forceGc()
    await new Promise((resolve) => setImmediate(resolve))
    t.is(clientStats().recycledBytes, 0)
    await client.disconnect()
  }
  await quiescent()
})
