// Calls that race the driver: the driver runs on the I/O thread and may be ahead of what JS has
// seen (an attempt that failed, a driver that gave up and exited, a reconnect already made). Tests
// block the JS thread until the driver is ahead (a server in another process answers meanwhile),
// then call, then check what the client reports.
import { createRequire } from 'node:module'

import test, { type ExecutionContext } from 'ava'

import { ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { Recorder, collectUntil, quiescent, rawServer, refusedPort, sendsOnOpen, serverChild, until, wsServer } from './helpers.js'

const native = createRequire(import.meta.url)('../lib/native.js') as { testingStallDriverExit(ms: number): void }

/** Blocks this thread until `cond()` holds (what the driver does meanwhile, JS sees later). */
function blockUntil(cond: () => boolean, what: string, ms = 5_000): void {
  const deadline = Date.now() + ms
  while (!cond()) if (Date.now() > deadline) throw new Error(`blocked ${ms} ms: ${what}`)
}

test.serial('connect() in the close listener before a giveup: the giveup, which ended the run before and not the client, is not reported', async (t) => {
  const url = await serverChild(t, 'reject-first')
  const controller = new AbortController()
  // 401: the default policy gives up.
  const client = new ReconnectingWebSocket(url, { signal: controller.signal })
  t.teardown(() => client.terminate())
  const r = new Recorder(client, ['close', 'giveup', 'open'])
  client.once('close', () => client.connect())
  t.like(await r.next('close'), { code: 1006, willReconnect: false })
  t.is(client.state, 'connecting')
  t.deepEqual(await client.opened(), { protocol: '', extensions: '' })
  t.is(r.count('giveup'), 0, 'a giveup listener that disconnect()s would have ended the run the application asked for')
  // Still listening to its signal.
  controller.abort()
  t.like(await r.next('close'), { code: 1000, willReconnect: false })
  await quiescent()
})

test.serial('reconnect() in an error listener when the driver gives up (maxRetries: 0): no giveup, and a giveup listener that disconnect()s cannot end the run the call started', async (t) => {
  let connections = 0
  const peer = await wsServer((socket) => {
    if (++connections === 1) socket.terminate()
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0 })
  t.teardown(() => client.terminate())
  const r = new Recorder(client, ['open', 'close', 'giveup'])
  client.once('error', () => client.reconnect())
  // As the README suggests for a listener that will not reconnect.
  client.on('giveup', () => void client.disconnect())
  await r.next('open')
  t.like(await r.next('close'), { code: 1006, willReconnect: true })
  await r.next('open')
  t.is(connections, 2)
  t.is(r.count('giveup'), 0)
  await client.disconnect()
  await quiescent()
})

for (const call of ['reconnect', 'disconnect-connect'] as const) {
  test.serial(`${call === 'reconnect' ? 'reconnect()' : 'disconnect(); connect()'} after the driver gave up and exited, before JS saw it: the client connects; the old driver's close changes nothing, its giveup is not reported${call === 'reconnect' ? '' : '; the disconnect() settles'}`, async (t) => {
    const url = await serverChild(t, 'reject-first')
    const client = new ReconnectingWebSocket(url)
    t.teardown(() => client.terminate())
    const r = new Recorder(client, ['close', 'giveup', 'open'])
    // The driver is refused (401), gives up and exits while JS is blocked.
    blockUntil(() => client.metrics.connectAttempts === 1 && clientStats().runningTasks === 0, 'the driver exits')
    t.is(client.state, 'connecting', 'JS has seen none of it')
    let disconnected: Promise<unknown> | undefined
    if (call === 'reconnect') client.reconnect()
    else {
      disconnected = client.disconnect()
      client.connect()
    }
    const opened = client.opened().then(
      () => 'opened',
      (err) => err.code,
    )
    t.like(await r.next('close'), { code: 1006 })
    t.not(client.state, 'closed')
    if (disconnected) t.deepEqual(await disconnected, { discarded: 0 })
    t.is(await opened, 'opened')
    t.is(client.state, 'open')
    t.is(r.count('giveup'), 0)
    await client.disconnect()
    await quiescent()
  })
}

test.serial('disconnect() while JS shows a reconnect wait the driver has already ended: nothing of its new connection is reported', async (t) => {
  const url = await serverChild(t, 'close-first')
  const client = new ReconnectingWebSocket(url, { minDelay: 5, maxDelay: 5 })
  t.teardown(() => client.terminate())
  const after: string[] = []
  const on = client.on.bind(client) as (name: string, listener: () => void) => void
  let state = ''
  // In the listener: JS sees nothing after the reconnecting until it returns. Listened for from the
  // start: the server's close, and the reconnecting, can come in the open's batch, before an
  // `await client.opened()` returns (the test then waited for good).
  const disconnected = new Promise((resolve) =>
    client.once('reconnecting', () => {
      // The driver reconnects while JS is blocked.
      blockUntil(() => clientStats().openConnections === 1, 'the next connection opens')
      state = client.state
      for (const name of ['upgrade', 'open', 'close', 'reconnecting', 'error', 'message']) on(name, () => after.push(name))
      client.onopen = () => after.push('onopen')
      client.onclose = () => after.push('onclose')
      resolve(client.disconnect())
    }),
  )
  t.deepEqual(await disconnected, { discarded: 0 })
  t.is(state, 'reconnecting')
  t.is(client.state, 'closed')
  t.deepEqual(after, [], 'the user saw the last close, before the wait')
  await quiescent()
})

test.serial('disconnect() as the server closes: one close event, willReconnect false; nothing of a reconnect the driver made before it took the call', async (t) => {
  const peer = await wsServer((socket) => socket.close(1001))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 0, maxDelay: 0 })
  t.teardown(() => client.terminate())
  const events: string[] = []
  const on = client.on.bind(client) as (name: string, listener: (e: { code: number; willReconnect: boolean }) => void) => void
  for (const name of ['open', 'close', 'reconnecting']) on(name, (e) => events.push(name === 'close' ? `close ${e.code} ${e.willReconnect}` : name))
  // In the open listener: the server's close is on its way, or read already, and JS is blocked
  // until the driver reconnected.
  const done = new Promise((resolve) =>
    client.once('open', () => {
      blockUntil(() => client.metrics.connectAttempts >= 2, 'the driver reconnects')
      resolve(client.disconnect())
    }),
  )
  t.deepEqual(await done, { discarded: 0 })
  t.deepEqual(events, ['open', 'close 1001 false'])
  await quiescent()
})

test.serial('a client that only a pending opened() reaches, during an outage, is not collected: it opens once the server is back', async (t) => {
  const port = await refusedPort()
  let opened = false
  let collected = false
  const finalizers = new FinalizationRegistry(() => (collected = true))
  // Nothing but the client reaches the async function's frame, suspended in opened().
  ;(async () => {
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}`, { minDelay: 200, maxDelay: 200 })
    finalizers.register(client, 0)
    const ref = new WeakRef(client)
    t.teardown(() => ref.deref()?.terminate())
    await client.opened()
    opened = true
    await client.disconnect()
  })()
  let rounds = 0
  await collectUntil(() => ++rounds > 30, 'thirty GC rounds')
  t.false(collected, 'not collected')
  const peer = await wsServer(undefined, port)
  t.teardown(() => peer.close())
  await until(() => opened, 'opened() resolved once the server was back', 10_000)
  await quiescent()
})

test.serial('disconnect(); connect() in the step that answers a stop verdict, a hundred times: the client goes on attempting every time', async (t) => {
  // A refused port: each attempt fails and asks shouldReconnect, whose answer (a thenable) says
  // stop, and the same step disconnects and connects again. The commands can reach the driver as
  // it finishes: it must go on with the connect() (it exited with its new attempt: found in review,
  // within a few dozen rounds).
  const port = await refusedPort()
  let rounds = 0
  const client: ReconnectingWebSocket = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, {
    minDelay: 10,
    shouldReconnect: (() =>
      rounds >= 100
        ? true
        : {
            then(answer: (retry: boolean) => void) {
              rounds++
              answer(false)
              client.disconnect()
              client.connect()
            },
          }) as never,
  })
  t.teardown(() => client.terminate())
  client.on('error', () => {})
  await until(() => rounds >= 100, () => `${rounds} rounds; state ${client.state}, ${clientStats().runningTasks} tasks`, 20_000)
  const attempts = client.metrics.connectAttempts
  await until(() => client.metrics.connectAttempts >= attempts + 3, () => `still attempting (state ${client.state}, ${clientStats().runningTasks} tasks)`)
  t.true(client.metrics.connectAttempts >= attempts + 3)
  await client.disconnect()
  await quiescent()
})

test.serial('connect(); disconnect() after the driver gave up and exited, before JS saw it: no close that promises a reconnect, no giveup, after the calls', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 50, maxDelay: 50, maxRetries: 1 })
  t.teardown(() => client.terminate())
  client.on('error', () => {})
  // (events.once would reject on the refused attempt's error.)
  await new Promise((resolve) => client.once('reconnecting', resolve))
  // The second attempt is refused, and the driver gives up and exits, while JS is blocked.
  blockUntil(() => client.metrics.connectAttempts === 2 && clientStats().runningTasks === 0, 'the driver gives up and exits')
  const after: string[] = []
  client.on('close', (e) => after.push(`close ${e.willReconnect}`))
  client.on('giveup', () => after.push('giveup'))
  client.connect()
  t.deepEqual(await client.disconnect(), { discarded: 0 })
  t.true(after.length <= 1 && after.every((e) => e === 'close false'), after.join(', '))
  t.is(client.state, 'closed')
  await quiescent()
})

test.serial('disconnect() in a close listener when the driver has since retried, given up and exited unseen: nothing after the call is reported', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: 1, maxDelay: 1, maxRetries: 2 })
  t.teardown(() => client.terminate())
  const seen: string[] = []
  let disconnected: Promise<unknown> | null = null
  for (const name of ['error', 'close', 'reconnecting', 'giveup', 'open']) {
    ;(client as NodeJS.EventEmitter).on(name, (e?: { willReconnect?: boolean }) => {
      seen.push(`${name}${e?.willReconnect === undefined ? '' : ' ' + e.willReconnect}`)
      // Its first close: the events of the attempts after it are in the batch being delivered.
      if (name === 'close' && disconnected === null) disconnected = client.disconnect()
    })
  }
  // All three attempts are refused, and the driver gives up and exits, while JS is blocked.
  blockUntil(() => client.metrics.connectAttempts === 3 && clientStats().runningTasks === 0, 'the driver gives up and exits')
  await until(() => disconnected !== null, 'the first close')
  t.deepEqual(await disconnected, { discarded: 0 })
  await new Promise(setImmediate)
  t.deepEqual(seen, ['error', 'close true'])
  t.is(client.state, 'closed')
  await quiescent()
})

test.serial('disconnect() or terminate() in an error listener when the driver gave up with that failure: its close is reported, the last event', async (t) => {
  // maxRetries: 0 (every WebSocket): the failure, its close and the giveup come in one batch, the
  // driver gone by the time the listener runs. The close of what the call ends is still reported.
  const port = await refusedPort()
  for (const end of ['disconnect', 'terminate'] as const) {
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 0 })
    t.teardown(() => client.terminate())
    const seen: string[] = []
    let ended: Promise<unknown> | null = null
    for (const name of ['close', 'reconnecting', 'giveup', 'open']) {
      ;(client as NodeJS.EventEmitter).on(name, (e?: { willReconnect?: boolean }) => seen.push(`${name}${e?.willReconnect === undefined ? '' : ' ' + e.willReconnect}`))
    }
    client.on('error', () => {
      seen.push('error')
      ended ??= client[end]()
    })
    await until(() => ended !== null, 'the error')
    await ended
    await new Promise(setImmediate)
    t.deepEqual(seen, ['error', 'close false'], end)
  }
  await quiescent()
})

test.serial('disconnect() in an open listener when the driver has since read, closed and exited unseen: the messages and the close come before the promise settles; readers get the messages', async (t) => {
  // The server sends two messages and closes (4001); the client gives up (maxRetries: 0), all
  // while JS is blocked. A second call (terminate()) must not lose the close either.
  const url = await serverChild(t, 'two-then-close')
  for (const twice of [false, true]) {
    const client = new ReconnectingWebSocket(url, { maxRetries: 0 })
    t.teardown(() => client.terminate())
    const seen: string[] = []
    const read: string[] = []
    const reading = (async () => {
      for await (const m of client.messages()) read.push(String(m))
    })()
    client.on('message', (m) => seen.push(`message ${m}`))
    client.on('close', (e) => seen.push(`close ${e.code} ${e.willReconnect}`))
    client.on('giveup', () => seen.push('giveup'))
    client.on('open', () => {
      seen.push('open')
      void client.disconnect().then(() => seen.push('resolved'))
      if (twice) void client.terminate()
    })
    blockUntil(() => client.metrics.connectAttempts === 1 && clientStats().runningTasks === 0, 'the driver reads, closes and exits')
    await until(() => seen.includes('resolved'), () => `disconnect() resolved: ${seen.join(', ')}`)
    await reading
    t.deepEqual(seen, ['open', 'message a', 'message b', 'close 4001 false', 'resolved'], `twice: ${twice}`)
    t.deepEqual(read, ['a', 'b'], `twice: ${twice}`)
  }
  await quiescent()
})

test.serial('connect() right after disconnect() or terminate(), open or connecting: the close that follows says willReconnect: true, and the client opens', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const cases: Array<[string, (c: ReconnectingWebSocket) => unknown, boolean]> = [
    ['open, disconnect()', (c) => c.disconnect(), true],
    ['open, terminate()', (c) => c.terminate(), true],
    ['connecting, disconnect()', (c) => c.disconnect(), false],
  ]
  for (const [how, stop, opened] of cases) {
    // Whether the driver takes both calls in one step or exits between them is the threads' race:
    // rounds enough for both.
    for (let i = 0; i < 25; i++) {
      const client = new ReconnectingWebSocket(peer.url)
      if (opened) await client.opened()
      const closed = new Promise<boolean>((resolve) => client.once('close', (e) => resolve(e.willReconnect)))
      void stop(client)
      client.connect()
      t.true(await closed, `${how}; connect(), round ${i}`)
      await client.opened()
      await client.disconnect()
    }
  }
  await quiescent()
})

test.serial("reconnect() or connect() in a close listener (after a disconnect() or terminate() too): the wait the close announced is not reported afterwards, and the client stays connecting", async (t) => {
  // Every attempt is dropped at once, and the waits are long.
  const peer = await rawServer((socket) => socket.destroy())
  t.teardown(() => peer.close())
  const calls: Array<[string, (c: ReconnectingWebSocket) => unknown, number]> = [
    // reconnect() starts the count again, connect() does not.
    ['reconnect()', (c) => c.reconnect(), 1],
    ['connect()', (c) => c.connect(), 2],
    ['disconnect(); connect()', (c) => (c.disconnect(), c.connect()), 1],
    ['terminate(); connect()', (c) => (c.terminate(), c.connect()), 1],
    ['disconnect(); reconnect()', (c) => (c.disconnect(), c.reconnect()), 1],
  ]
  for (const [call, again, attempt] of calls) {
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, jitter: 'none' })
    const seen: string[] = []
    client.on('error', () => {})
    let first = true
    client.on('close', (e) => {
      seen.push(`close ${e.willReconnect}`)
      if (!first) return
      first = false
      again(client)
      seen.push(`${call} ${client.state}`)
    })
    client.on('reconnecting', (p) => seen.push(`reconnecting ${p.attempt} ${client.state}`))
    const accepted = peer.accepted
    await until(() => seen.length === 4, () => `${call}: ${seen.join(', ')}`)
    // The second attempt's own wait is reported; the first one's, cancelled, is not.
    t.deepEqual(seen, ['close true', `${call} connecting`, 'close true', `reconnecting ${attempt} reconnecting`], call)
    t.true(peer.accepted - accepted <= 2)
    await client.disconnect()
  }
  await quiescent()
})

test.serial('disconnect() or terminate() after the driver announced a wait JS has not seen, then connect() in the close listener: that wait is not reported', async (t) => {
  // The first connection to each path is dropped; the next one stays. (No message: one would have
  // the JS thread read the socket, and it is blocked while the drop must be seen.)
  const paths = new Set<string>()
  const peer = await wsServer()
  peer.wss.on('connection', (socket, req) => {
    if (paths.has(req.url!)) return
    paths.add(req.url!)
    socket.terminate()
  })
  t.teardown(() => peer.close())
  for (const how of ['disconnect', 'terminate'] as const) {
    const client = new ReconnectingWebSocket(`${peer.url}${how}`, { minDelay: 60_000, jitter: 'none' })
    const seen: string[] = []
    client.once('open', () => {
      // Until the driver has lost the connection and started its wait (JS has not seen it).
      blockUntil(() => client.metrics.pendingReconnects === 1, 'the driver in its backoff wait')
      void client[how]()
    })
    client.once('close', (e) => {
      seen.push(`close ${e.willReconnect}`)
      client.connect()
      seen.push(`connect() ${client.state}`)
    })
    client.on('reconnecting', (p) => seen.push(`reconnecting ${p.delay}`))
    const opened = () => new Promise((resolve) => client.once('open', resolve))
    await opened()
    await opened()
    t.deepEqual(seen, ['close false', 'connect() connecting'], how)
    await client.disconnect()
  }
  await quiescent()
})

test.serial('reconnect() before JS has seen the close of a connection the driver already lost (in an error listener, or as the connection drops): the close leaves the client connecting, the wait the driver announced is not reported', async (t) => {
  // In an error listener: every attempt is dropped at once, and the waits are long.
  const dropper = await rawServer((socket) => socket.destroy())
  t.teardown(() => dropper.close())
  {
    const client = new ReconnectingWebSocket(dropper.url, { minDelay: 60_000, jitter: 'none' })
    const seen: string[] = []
    let first = true
    client.on('error', () => {
      seen.push('error')
      if (!first) return
      first = false
      client.reconnect()
      seen.push(`reconnect() ${client.state}`)
    })
    client.on('close', (e) => {
      seen.push(`close ${e.willReconnect} ${client.state}`)
      // After the listeners, before the next batch: what a timer would read.
      setImmediate(() => seen.push(`then ${client.state}`))
    })
    client.on('reconnecting', (p) => seen.push(`reconnecting ${p.attempt} ${p.delay}`))
    await until(() => seen.includes('reconnecting 1 60000'), () => seen.join(', '))
    // The first wait (attempt 1 too: reconnect() starts the count again) is cancelled unseen.
    t.deepEqual(seen.filter((s) => !s.startsWith('then')), ['error', 'reconnect() connecting', 'close true connecting', 'error', 'close true reconnecting', 'reconnecting 1 60000'])
    t.is(seen.find((s) => s.startsWith('then')), 'then connecting')
    await client.disconnect()
  }
  // As the connection drops (from a timer, say): the first connection is dropped as it opens; the
  // next one stays. (No message: one would have the JS thread read the socket, and it is blocked
  // while the drop must be seen.)
  const peer = await wsServer()
  let connections = 0
  peer.wss.on('connection', (socket) => {
    if (++connections === 1) socket.terminate()
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, jitter: 'none' })
  const seen: string[] = []
  client.on('error', () => {})
  client.on('close', (e) => seen.push(`close ${e.willReconnect} ${client.state}`))
  client.on('reconnecting', (p) => seen.push(`reconnecting ${p.delay}`))
  client.once('open', () => {
    // Until the driver has lost the connection and started its wait (JS has not seen it).
    blockUntil(() => client.metrics.pendingReconnects === 1, 'the driver in its backoff wait')
    client.reconnect()
    seen.push(`reconnect() ${client.state}`)
  })
  await new Promise((resolve) => client.once('open', () => client.once('open', resolve)))
  t.deepEqual(seen, ['reconnect() closing', 'close true connecting'])
  t.is(client.state, 'open')
  t.is(connections, 2)
  await client.disconnect()
  await quiescent()
})

test.serial('a lost connection whose shouldReconnect verdict is pending reads reconnecting; a connect() or reconnect() meanwhile leaves its close connecting', async (t) => {
  // Every connection is dropped 30 ms after it opens; the verdicts are answered by the test.
  const peer = await wsServer((socket) => void setTimeout(() => socket.terminate(), 30))
  const received: string[] = []
  peer.wss.on('connection', (socket) => socket.on('message', (m) => received.push(String(m))))
  t.teardown(() => peer.close())
  for (const call of ['none', 'connect', 'reconnect', 'reconnect in the error listener', 'disconnect'] as const) {
    const verdicts: Array<(retry: boolean) => void> = []
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000, jitter: 'none', shouldReconnect: () => new Promise<boolean>((resolve) => verdicts.push(resolve)) })
    const seen: string[] = []
    // (events.once would reject on the error of each drop.)
    const opening = (c: ReconnectingWebSocket) => new Promise((resolve) => c.once('open', resolve))
    client.on('error', () => {
      if (call === 'reconnect in the error listener') client.reconnect()
    })
    client.on('close', (e) => {
      seen.push(`close ${e.willReconnect} ${client.state}`)
      setImmediate(() => seen.push(`then ${client.state}`))
    })
    client.on('reconnecting', (p) => seen.push(`reconnecting ${p.delay}`))
    await opening(client)
    if (call === 'reconnect in the error listener') {
      // The verdict the driver may have asked before it took the call is not waited for.
      await opening(client)
      t.deepEqual(seen, ['close true connecting', 'then connecting'], call)
      await client.disconnect()
      for (const verdict of verdicts) verdict(true)
      continue
    }
    await until(() => verdicts.length === 1, () => `no verdict asked (${call})`)
    // The connection is gone, its close waits for the verdict: the client is not open.
    t.is(client.state, 'reconnecting', call)
    t.is(client.readyState, ReconnectingWebSocket.CLOSED, call)
    t.like(t.throws(() => client.ping()), { code: 'ERR_NOT_OPEN' }, call)
    let opened = false
    const openedCall = client.opened().then(() => void (opened = true), () => {})
    await new Promise((resolve) => setImmediate(resolve))
    t.false(opened, `opened() waits (${call})`)
    client.send(`queued ${call}`)
    if (call === 'none') {
      verdicts[0](true)
      await until(() => seen.includes('reconnecting 60000'), () => seen.join(', '))
      t.deepEqual(seen.slice(0, 2), ['close true reconnecting', 'reconnecting 60000'], call)
      await client.disconnect()
      continue
    }
    if (call === 'disconnect') {
      const { discarded } = await client.disconnect()
      t.is(discarded, 1)
      verdicts[0](true)
      t.deepEqual(seen.filter((s) => !s.startsWith('then')), ['close false closed'], call)
      await openedCall
      t.false(opened)
      continue
    }
    if (call === 'connect') client.connect()
    else client.reconnect()
    t.is(client.state, 'connecting', call)
    // The next attempt starts at once: no 60 s wait, no reconnecting event.
    await opening(client)
    await openedCall
    t.true(opened, call)
    t.deepEqual(seen, ['close true connecting', 'then connecting'], call)
    await until(() => received.includes(`queued ${call}`), () => received.join(', '))
    verdicts[0](true)
    await client.disconnect()
  }
  await quiescent()
})

test.serial('send() while a lost connection waits for its verdict is refused as in a reconnect wait: ERR_QUEUE_FULL past a rejecting queue, ERR_NOT_OPEN without a queue', async (t) => {
  const peer = await wsServer((socket) => void setTimeout(() => socket.terminate(), 30))
  t.teardown(() => peer.close())
  for (const queue of [{ maxMessages: 1, overflow: 'reject' as const }, false as const]) {
    const verdicts: Array<(retry: boolean) => void> = []
    const client = new ReconnectingWebSocket(peer.url, { queue, minDelay: 60_000, shouldReconnect: () => new Promise<boolean>((resolve) => verdicts.push(resolve)) })
    client.on('error', () => {})
    const drops: string[] = []
    client.on('drop', (d) => drops.push(d.reason))
    await client.opened()
    await until(() => verdicts.length === 1, () => 'no verdict asked')
    if (queue) {
      client.send('kept')
      t.like(t.throws(() => client.send('refused')), { code: 'ERR_QUEUE_FULL' })
    } else {
      t.like(t.throws(() => client.send('refused')), { code: 'ERR_NOT_OPEN' })
    }
    t.deepEqual(drops, [])
    await client.disconnect()
    verdicts[0](true)
  }
  await quiescent()
})

test.serial('reconnect() on an open connection: its close leaves the client connecting, and no wait follows', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
  const opening = (c: ReconnectingWebSocket) => new Promise((resolve) => c.once('open', resolve))
  const seen: string[] = []
  client.on('close', (e) => seen.push(`close ${e.willReconnect} ${client.state}`))
  client.on('reconnecting', () => seen.push('reconnecting'))
  await opening(client)
  client.reconnect()
  t.is(client.state, 'closing')
  await opening(client)
  t.deepEqual(seen, ['close true connecting'])
  await client.disconnect()
  await quiescent()
})

test.serial('send() and ping() right after reconnect() are for the next connection, whenever the driver takes the call', async (t) => {
  // Each connection's messages, pings and close, in the order the server got them.
  const got: string[][] = []
  const peer = await wsServer((socket) => {
    const mine: string[] = []
    got.push(mine)
    socket.on('message', (data) => mine.push(String(data)))
    socket.on('ping', () => mine.push('ping'))
    socket.on('close', (code) => mine.push(`close ${code}`))
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
  const r = new Recorder(client)
  await r.next('open')
  const refused = await refusedPort()
  // The driver takes the call on the I/O thread. Every other round that thread is held up (another
  // client's driver stalls on its way out) until long after the calls that follow reconnect().
  const rounds = 20
  const pings: string[] = []
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 1) {
      const other = new ReconnectingWebSocket(`ws://127.0.0.1:${refused}/`, { minDelay: 60_000, jitter: 'none' })
      await until(() => other.metrics.pendingReconnects === 1, 'the other client waits to retry')
      native.testingStallDriverExit(200)
      void other.disconnect()
      blockUntil(() => other.metrics.pendingReconnects === 0, "the other client's driver on its way out")
    }
    client.send(`before ${i}`)
    client.reconnect(4000 + i)
    // The connection is closing and the next is not open: not sent on either (its callback says
    // so; as in ws, a ping while closing does not throw).
    client.ping((err) => pings.push(`${(err as RedialError | null)?.code}:${(err as (RedialError & { reason?: string }) | null)?.reason}`))
    client.send(`after ${i}`)
    await r.next('open')
  }
  await client.disconnect()
  await until(() => got.length === rounds + 1 && got[rounds].includes('close 1000'), 'the last connection closed')
  await until(() => got.every((c) => c.some((e) => e.startsWith('close'))), 'every connection closed')
  t.deepEqual(got[0], ['before 0', 'close 4000'])
  for (let i = 1; i < rounds; i++) t.deepEqual(got[i], [`after ${i - 1}`, `before ${i}`, `close ${4000 + i}`], `connection ${i}`)
  t.deepEqual(got[rounds], [`after ${rounds - 1}`, 'close 1000'])
  t.deepEqual(pings, Array(rounds).fill('ERR_NOT_SENT:closed'))
  await quiescent()
})

/** A client open to a server in another process; `seen`: its opens and closes with the state then. */
async function openWithEvents(t: ExecutionContext) {
  const url = await serverChild(t, 'echo')
  const client = new ReconnectingWebSocket(url, { pingInterval: 0 })
  await new Recorder(client).next('open')
  const seen: string[] = []
  client.on('open', () => seen.push(`open ${client.state}`))
  client.on('close', (info) => seen.push(`close ${info.code} ${info.willReconnect} ${client.state}`))
  return { client, seen }
}

test.serial('disconnect(); connect(); send(); disconnect({ flush: true }) after the driver ended the first connection unseen: its close is reported, then the close of the flush, not its open', async (t) => {
  // This thread is blocked while the driver ends the connection (the server answers the close) and exits.
  const { client, seen } = await openWithEvents(t)
  const first = client.disconnect(4100)
  blockUntil(() => clientStats().runningTasks === 0, 'the driver has exited')
  client.connect()
  const fates: string[] = []
  client.send('x', (err) => fates.push(err?.reason ?? 'written'))
  const done = client.disconnect(1000, 'done', { flush: true })
  t.deepEqual(await Promise.all([first, done]), [{ discarded: 0 }, { discarded: 0 }])
  t.deepEqual(fates, ['written'])
  // Every open reported is answered by one close: the first connection's too. The connection that
  // writes the queue opens while the client is closing (where send() throws): it is not reported open.
  t.deepEqual(seen, ['close 4100 true closing', 'close 1000 false closed'])
  await quiescent()
})

test.serial('disconnect({ flush: true }) from a reconnect wait, connect() once the connection that writes the queue is open: that connection is not reported, the next one is', async (t) => {
  const got: string[] = []
  const url = await serverChild(t, 'close-first-tell', { onMessage: (m) => got.push(m.got) })
  const client = new ReconnectingWebSocket(url, { minDelay: 60_000, jitter: 'none', pingInterval: 0 })
  t.teardown(() => client.terminate())
  await new Recorder(client).next('reconnecting')
  const seen: string[] = []
  const thrown = sendsOnOpen(client, seen, true)
  client.on('message', (data) => seen.push(`message ${data} ${client.state}`))
  client.on('close', (info) => seen.push(`close ${info.code} ${info.willReconnect} ${client.state}`))
  client.send('queued')
  const done = client.disconnect(1000, 'done', { flush: true })
  // The driver connects to write the queue while JS is blocked; connect() comes before JS sees it open.
  blockUntil(() => client.metrics.connects === 2, 'the connection that writes the queue is open')
  client.connect()
  t.deepEqual(await done, { discarded: 0 })
  await until(() => seen.includes('message hello 3 open'), 'the next connection')
  t.deepEqual(thrown, [])
  t.deepEqual(seen, ['close 1000 true closing', 'open open', 'message hello 3 open'])
  await until(() => got.length === 2, 'what the server got')
  t.deepEqual(got, ['2: queued', '3: from an open listener'])
  await client.disconnect()
  await quiescent()
})

test.serial('disconnect(); connect(); send(); disconnect() after the driver made the next connection unseen: what was sent goes out on it, and the first close is the last event', async (t) => {
  const { client, seen } = await openWithEvents(t)
  const first = client.disconnect(4100)
  client.connect()
  const fates: string[] = []
  client.send('x', (err) => fates.push(err?.reason ?? 'written'))
  // The driver closes the first connection and opens the next, which takes the message, while JS is blocked.
  blockUntil(() => client.metrics.connects === 2, 'the next connection open')
  const done = client.disconnect(4200)
  t.deepEqual(await Promise.all([first, done]), [{ discarded: 0 }, { discarded: 0 }])
  t.deepEqual(fates, ['written'])
  // That connection's open would come while closing, where send() throws: it is not reported.
  t.deepEqual(seen, ['close 4100 false closed'])
  await quiescent()
})
