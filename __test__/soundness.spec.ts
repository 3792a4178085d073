// Soundness at the boundary and in the client's task: foreign objects are never taken for a
// client, a panic ends a client in a defined state, every counter is back when disconnect()
// resolves, a send() made before JS has seen the connection end never throws for it, and the
// answer to our close is never taken for the peer's own.
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import test from 'ava'

import { ReconnectingWebSocket, clientStats } from '../index.js'
import { Recorder, quiescent, refusedPort, until, wsServer } from './helpers.js'

const require = createRequire(import.meta.url)
const native = require('../lib/native.js') as {
  testingPanicDriver(client: object): void
  testingStallAfterClose(ms: number): void
}

test.serial("the public methods refuse another addon's wrapped object and plain objects", (t) => {
  // An instance of a napi-rs class from another addon: napi-wrapped, but not with our tag.
  const { Builder } = require('@napi-rs/tar') as { Builder: new () => object }
  const foreign = new Builder()
  const proto = ReconnectingWebSocket.prototype as unknown as Record<string, (this: unknown, ...a: unknown[]) => unknown>
  for (const target of [foreign, {}, Object.create(ReconnectingWebSocket.prototype)]) {
    for (const call of [
      () => proto.send.call(target, 'x'),
      () => proto.ping.call(target),
      () => proto.drainQueue.call(target),
      () => Object.getOwnPropertyDescriptor(ReconnectingWebSocket.prototype, 'bufferedAmount')!.get!.call(target),
    ]) {
      const e = t.throws(call) as Error & { code?: string }
      t.regex(e.message, /not a redial-ws client/)
    }
  }
})

test.serial('a panic in the client task ends the client with ERR_INTERNAL, and disconnect() resolves', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const before = clientStats()
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  native.testingPanicDriver(client)
  const err = await rec.next('error')
  t.is(err.code, 'ERR_INTERNAL')
  const close = await rec.next('close')
  t.false(close.willReconnect)
  t.is(client.state, 'closed')
  t.deepEqual(await client.disconnect(), { discarded: 0 })
  await until(() => peer.concurrent === 0, 'the server saw the connection end')
  const after = clientStats()
  t.is(after.runningTasks, before.runningTasks)
  t.is(after.openConnections, before.openConnections)
  t.is(rec.count('reconnecting'), 0)
})

/** A `ws` echo server on a worker thread: it answers while this thread is stalled. */
async function echoServerOnAnotherThread() {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads')
    const { WebSocketServer } = require('ws')
    const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
    let accepted = 0
    wss.on('listening', () => parentPort.postMessage(wss.address().port))
    wss.on('connection', (socket) => {
      accepted++
      socket.on('message', (data) => socket.send(data))
    })
    parentPort.on('message', () => parentPort.postMessage(accepted))`,
    { eval: true },
  )
  const [port] = (await once(worker, 'message')) as [number]
  return {
    url: `ws://127.0.0.1:${port}/`,
    accepted: async () => {
      worker.postMessage('accepted')
      return ((await once(worker, 'message')) as [number])[0]
    },
    close: () => worker.terminate(),
  }
}

test.serial("the peer's answer to disconnect()'s close never reads as the peer's own close, however late the JS thread is", async (t) => {
  // A `ws` server answers a close frame with its own and ends the TCP connection at once. The
  // JS thread stalls in disconnect() right after writing the close, as a preempted thread would,
  // long enough for both to arrive: the driver must still know that the close was ours.
  const peer = await echoServerOnAnotherThread()
  t.teardown(() => peer.close())
  const before = clientStats()
  for (const exchange of [false, true]) {
    const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, maxDelay: 10 })
    const rec = new Recorder(client)
    await rec.next('open')
    if (exchange) {
      // The idle socket is then read on the JS thread: disconnect() hands it back first.
      client.send('hi')
      t.is(String(await rec.next('message')), 'hi')
    }
    native.testingStallAfterClose(200)
    t.deepEqual(await client.disconnect(1000, 'bye'), { discarded: 0 })
    t.like(await rec.next('close'), { code: 1000, wasClean: true, willReconnect: false })
    t.is(rec.count('reconnecting'), 0)
    t.is(rec.count('open'), 1)
    t.is(client.state, 'closed')
    const s = clientStats()
    t.is(s.runningTasks, before.runningTasks)
    t.is(s.openConnections, before.openConnections)
    t.is(s.pendingReconnects, before.pendingReconnects)
  }
  t.is(await peer.accepted(), 2)
})

test.serial('every counter is back when disconnect() resolves right after a giveup', async (t) => {
  const port = await refusedPort()
  for (let i = 0; i < 40; i++) {
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 0 })
    const rec = new Recorder(client)
    await rec.next('giveup')
    await client.disconnect()
    const s = clientStats()
    // Read in the same turn as the resolution: nothing may still be winding down.
    t.is(s.runningTasks, 0, `round ${i}`)
    t.is(s.pendingAttempts, 0, `round ${i}`)
  }
  await quiescent()
})

test.serial('send() right after the constructor never throws while the first attempt is failing', async (t) => {
  const port = await refusedPort()
  let dropped = 0
  for (let i = 0; i < 30; i++) {
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 0, queue: { maxMessages: 10 } })
    const rec = new Recorder(client, ['giveup', 'drop'])
    // The native side may give up before this line runs; JS still shows 'connecting'.
    t.notThrows(() => client.send(`m${i}`))
    await rec.next('giveup')
    dropped += rec.count('drop')
    // Whatever was not dropped is still in the queue: nothing is lost silently.
    const left = client.drainQueue().length
    t.is(left + rec.count('drop'), 1)
    await client.disconnect()
  }
  t.log(`${dropped} of 30 sends raced the giveup`)
  await quiescent()
})

test.serial('an echo handler never throws when the server closes right after sending', async (t) => {
  for (const queue of [undefined, false] as const) {
    const received: string[] = []
    const peer = await wsServer((socket) => {
      socket.on('message', (m) => received.push(String(m)))
      for (let i = 0; i < 20; i++) socket.send(`m${i}`)
      socket.close(1000)
    })
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0, ...(queue === false ? { queue } : {}) })
    const rec = new Recorder(client, ['message', 'close', 'drop', 'giveup'])
    const thrown: unknown[] = []
    client.on('message', (data) => {
      try {
        client.send(data as string)
      } catch (err) {
        thrown.push(err)
      }
    })
    await rec.next('close')
    t.deepEqual(thrown, [])
    t.is(rec.count('message'), 20)
    const dropped = rec.log.filter((e) => e.name === 'drop').flatMap((e) => (e.args[0] as { messages: string[] }).messages)
    const queued = client.drainQueue().map(String)
    // Every echo was written (the server got it), reported dropped, or is still queued.
    await until(() => peer.concurrent === 0, 'the server saw the close')
    t.is(received.length + dropped.length + queued.length, 20, JSON.stringify({ received, dropped, queued }))
    await client.disconnect()
    await peer.close()
  }
  await quiescent()
})
