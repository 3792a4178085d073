// The JS<->Rust protocol is defined once (src/protocol.rs) and read from the addon: these tests
// fail if lib/ and the addon disagree on which events and send() outcomes exist, or on the shape
// of a text run. And the delivery loop asks for a turn of the event loop only when a batch waits.
import { createRequire } from 'node:module'
import test, { type ExecutionContext } from 'ava'

import { ReconnectingWebSocket } from '../index.js'
import { acceptUpgrade, rawServer } from './helpers.js'

const require = createRequire(import.meta.url)
const N = require('../lib/native.js')
const wire = require('../lib/wire.js')

test('event tags and send() outcomes are distinct integers, read from the addon', (t) => {
  const { events, send } = N.wireProtocol()
  for (const table of [events, send]) {
    const values = Object.values(table) as number[]
    t.true(values.every(Number.isInteger))
    t.is(new Set(values).size, values.length)
  }
  t.deepEqual(wire.EVENTS, events)
  t.deepEqual(wire.SEND, send)
})

test('the client handles every event the addon reports, and only those', (t) => {
  // Loading the client builds its handler table: it throws if one is missing.
  t.notThrows(() => require('../lib/client.js'))
  const all: Record<string, () => void> = {}
  for (const name of Object.keys(wire.EVENTS)) if (name !== 'warning') all[name] = () => {}
  t.notThrows(() => wire.handlerTable(all))
  const { open: _, ...missing } = all
  t.throws(() => wire.handlerTable(missing), { message: /"open" events and lib\/ has no handler/ })
  t.throws(() => wire.handlerTable({ ...all, surprise: () => {} }), { message: /"surprise" events, which the addon does not report/ })
  // A tag the addon adds is caught the same way.
  t.throws(() => wire.handlerTable(all, { ...wire.EVENTS, compressed: 99 }), { message: /"compressed"/ })
})

test('send() outcomes: lib/ refuses an addon with other ones', (t) => {
  t.notThrows(() => wire.checkSendOutcomes(wire.SEND))
  const { corked: _, ...fewer } = wire.SEND
  t.throws(() => wire.checkSendOutcomes(fewer))
  t.throws(() => wire.checkSendOutcomes({ ...wire.SEND, deferred: 7 }))
})

test('a text run is an array of strings, each passed in order with the client as `this`', (t) => {
  const texts = ['', 'a', 'héllo', '€'.repeat(100), '{"x":1}']
  const got: string[] = []
  const target = {}
  wire.forEachText(texts, function (this: object, s: string) {
    t.is(this, target)
    got.push(s)
  }, target)
  t.deepEqual(got, texts)
})

test('a lone batch of events asks for no turn of the event loop', async (t) => {
  // A batch that waits behind another is taken from a setImmediate (the floods of hostile.spec
  // check that the loop gets its turns); when none waits, nothing is scheduled.
  // The server ends the socket at the client's close frame, so that disconnect() needs no close timeout.
  const peer = await rawServer((socket) => acceptUpgrade(socket, (s) => s.once('data', () => s.end())))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
  const scheduled: string[] = []
  const original = globalThis.setImmediate
  // From the `open` listener to the end of its batch's dispatch (microtasks run after it), every
  // setImmediate call is recorded.
  await new Promise<void>((resolve) => {
    client.once('open', () => {
      globalThis.setImmediate = Object.assign((fn: (...args: unknown[]) => void, ...args: unknown[]) => {
        scheduled.push(fn.name || 'anonymous')
        return original(fn, ...args)
      }, original)
      queueMicrotask(() => {
        globalThis.setImmediate = original
        resolve()
      })
    })
  })
  await client.disconnect()
  t.deepEqual(scheduled, [], 'the dispatch asked for a turn with nothing waiting')
})

/**
 * A raw server that holds each connection's 101 answer until `answer()` (the connection then ends at
 * the client's close frame: disconnect() needs no close timeout). With `closeFirst`, every other
 * connection, the first one first, is upgraded and closed at once (1001) instead.
 */
async function holdingServer(t: ExecutionContext, closeFirst = false) {
  let requested = () => {}
  let answer = () => {}
  let n = 0
  const peer = await rawServer((socket) => {
    if (closeFirst && ++n % 2 === 1) {
      acceptUpgrade(socket, (s) => s.end(Buffer.from([0x88, 0x02, 0x03, 0xe9])))
      return
    }
    socket.once('data', (chunk) => {
      socket.pause()
      socket.unshift(chunk)
      new Promise<void>((resolve) => (answer = resolve)).then(() => {
        acceptUpgrade(socket, (s) => s.once('data', () => s.end()))
        socket.resume()
      })
      requested()
    })
  })
  t.teardown(() => peer.close())
  return {
    url: peer.url,
    /** Resolves once the next held connection's request has come; call it before the client connects. */
    nextRequest: () => new Promise<void>((resolve) => (requested = resolve)),
    answer: () => answer(),
  }
}

/** What a test waits for something that must not happen (there is no event for it). */
const window = () => new Promise((resolve) => setTimeout(resolve, 300))

test.serial("connect()'s attempt wakes the JS thread for its open, not before to say it is connecting (rws mode, which reads it, is woken)", async (t) => {
  // Meanwhile nothing is to wake the JS thread but a `connecting` event (a client made by
  // connect() is already connecting and reachable in JS). The window is 300 ms after the request
  // came, ample for a worker that pushes the event before it writes the request.
  const server = await holdingServer(t)
  for (const mode of ['plain', 'rws'] as const) {
    const request = server.nextRequest()
    const before = N.testingRings()
    const client =
      mode === 'plain'
        ? new ReconnectingWebSocket(server.url, { pingInterval: 0 })
        : new ReconnectingWebSocket(server.url, undefined, { minReconnectionDelay: 100 } as never)
    t.teardown(() => client.disconnect())
    await request
    await window()
    const whileHeld = N.testingRings() - before
    if (mode === 'plain') {
      t.is(whileHeld, 0, 'the JS thread was woken while the attempt waited for its answer')
      t.is(client.readyState, ReconnectingWebSocket.CONNECTING)
    } else {
      t.is(whileHeld, 1, 'rws mode: its connecting event is delivered at once')
      t.is(client.url, server.url, 'rws mode: the socket exists (url) while the answer is awaited')
    }
    const opened = new Promise((resolve) => client.once('open', resolve))
    server.answer()
    await opened
    t.true(N.testingRings() - before >= 1)
    t.is(client.retryCount, 0)
    await client.disconnect()
  }
})

test.serial("connect() in a close listener (a reconnect wait, or a giveup, after it in the batch): its attempt's connecting comes at once and puts the state right", async (t) => {
  // The first connection is closed by the server; the second is held before its 101. The close's
  // batch goes on after the listener (`reconnecting`, or `giveup`), which sets the state back:
  // only the new attempt's own event says it is connecting.
  const server = await holdingServer(t, true)
  for (const options of [{ minDelay: 60_000, maxDelay: 60_000 }, { maxRetries: 0 }]) {
    const request = server.nextRequest()
    const client = new ReconnectingWebSocket(server.url, { pingInterval: 0, ...options })
    t.teardown(() => client.disconnect())
    client.once('close', () => client.connect())
    await request
    await window()
    t.is(client.state, 'connecting', JSON.stringify(options))
    t.is(client.readyState, ReconnectingWebSocket.CONNECTING)
    const opened = client.opened()
    server.answer()
    await opened
    t.is(client.state, 'open')
    await client.disconnect()
  }
})
