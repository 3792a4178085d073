// send(blob), as ws (8.18+) and the browser's WebSocket send one: as a binary message once its
// bytes are read, with everything sent or called after it waiting its turn.
import { openAsBlob } from 'node:fs'
import * as net from 'node:net'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import test, { type ExecutionContext } from 'ava'

import { ReconnectingWebSocket, clientStats, createWebSocketStream, type DropEventInfo, type NotSentError, type ReconnectingWebSocketOptions } from '../index.js'
import { Recorder, refusedPort, sendsOnOpen, until, upgradeServer, wsServer } from './helpers.js'

/** Everything a client held is released by the time its disconnect() resolves. */
function released(t: ExecutionContext) {
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, pendingReconnects: 0, runningTasks: 0, ioBuffers: 0 })
}

/** A Blob whose bytes come when the test says (`release()`). */
class GatedBlob extends Blob {
  reads = 0
  /** The last read, as the client was given it. */
  read: Promise<ArrayBuffer> | null = null
  #open = () => {}
  #gate = new Promise<void>((resolve) => (this.#open = resolve))
  release() {
    this.#open()
  }
  override arrayBuffer(): Promise<ArrayBuffer> {
    this.reads++
    this.read = this.#gate.then(() => super.arrayBuffer())
    return this.read
  }
}

/** A server that records each message as `t:text` or `b:text`, per connection. */
async function recordingServer(t: ExecutionContext) {
  const got: string[][] = []
  const peer = await wsServer((socket) => {
    const mine: string[] = []
    got.push(mine)
    socket.on('message', (data, isBinary) => mine.push(`${isBinary ? 'b' : 't'}:${String(data)}`))
  })
  t.teardown(() => peer.close())
  return { peer, got }
}

/** A client open to a recording server; `log` records its events (`drop` too) from the start. */
async function openClient(t: ExecutionContext, options: ReconnectingWebSocketOptions = {}) {
  const { peer, got } = await recordingServer(t)
  const client = new ReconnectingWebSocket(peer.url, options)
  const log = new Recorder(client, ['open', 'close', 'reconnecting', 'error', 'giveup', 'drop'])
  await log.next('open')
  return { peer, got, client, log }
}

/**
 * A client of a refused port that gives up after one retry, with a message queued, a Blob held
 * behind it and a message behind that, each with a callback.
 */
/**
 * A client that gives up (two failed attempts) with a message queued, a Blob being read and a
 * message behind it. Its first attempt is held connected by a server on `port` until all three
 * are sent, then dropped with that server, so that the second finds the port refused: with the
 * port refused from the start, a machine that ran this thread late let the client give up before
 * the first send(), which is then not queued but handed back (README, Offline queue).
 */
async function givingUpWithBlob(port: number) {
  const held: net.Socket[] = []
  const holding = net.createServer((socket) => held.push(socket))
  await new Promise<void>((resolve) => holding.listen(port, '127.0.0.1', resolve))
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 1, minDelay: 10, maxDelay: 10 })
  const log = new Recorder(client, ['open', 'giveup', 'drop'])
  const { calls, callback } = recorder()
  client.send('queued', callback('queued'))
  const blob = new GatedBlob(['held'])
  client.send(blob, callback('blob'))
  client.send('behind it', callback('behind'))
  await until(() => held.length === 1, 'the first attempt connected')
  // Both close their descriptors at once: the attempt fails without this thread's help.
  holding.close()
  held[0].destroy()
  return { client, log, calls, blob }
}

/** The server a refused port gets once it is back: each message as `t:text` or `b:text`, all connections together. */
async function serverBackOn(port: number) {
  const got: string[] = []
  const peer = await wsServer((socket) => socket.on('message', (data, isBinary) => got.push(`${isBinary ? 'b' : 't'}:${String(data)}`)), port)
  return { peer, got }
}

/** A send() callback that records its outcome under `name`. */
function recorder() {
  const calls: Array<[string, string | null]> = []
  const callback = (name: string) => (err: NotSentError | null) => calls.push([name, err === null ? null : `${err.code}:${err.reason}`])
  return { calls, callback }
}

test.serial('a Blob is sent as a binary message in its place: what is sent after it waits for its bytes', async (t) => {
  const { peer, got } = await recordingServer(t)
  const client = new ReconnectingWebSocket(peer.url)
  const { calls, callback } = recorder()
  // Queued while connecting, as any message.
  client.send(new Blob(['queued blob']))
  client.send('queued text')
  await new Recorder(client).next('open')
  const blob = new GatedBlob(['gated'])
  client.send('before')
  client.send(blob, callback('gated'))
  client.send('after', callback('after'))
  client.send(Buffer.from('bytes'), { binary: false })
  client.send(new Uint8Array([0x62, 0x69, 0x6e]))
  client.send(new Blob(['second blob']), { compress: false }, callback('second'))
  // The Blob's size and what waits behind it are accepted, not yet written.
  t.is(client.bufferedAmount, blob.size + 'after'.length + 'bytes'.length + 3 + 'second blob'.length)
  await until(() => got[0]?.length === 3, 'the messages before the Blob')
  t.deepEqual(got[0], ['b:queued blob', 't:queued text', 't:before'])
  t.is(blob.reads, 1)
  t.deepEqual(calls, [], 'nothing written past the Blob')
  blob.release()
  await until(() => got[0].length === 8 && calls.length === 3, 'the rest')
  t.deepEqual(got[0].slice(3), ['b:gated', 't:after', 't:bytes', 'b:bin', 'b:second blob'])
  t.deepEqual(calls, [
    ['gated', null],
    ['after', null],
    ['second', null],
  ])
  await until(() => client.bufferedAmount === 0, 'bufferedAmount back to 0')
  // Nothing is held any more: a send() goes at once again.
  client.send('last')
  await until(() => got[0].length === 9, 'the last message')
  t.is(got[0][8], 't:last')
  t.deepEqual(await client.disconnect(), { discarded: 0 })
  released(t)
})

test.serial('disconnect() after a Blob closes once it and what was sent before the call are written', async (t) => {
  const { got, client, log } = await openClient(t)
  const blob = new GatedBlob(['last words'])
  client.send(blob)
  client.send('and these')
  const done = client.disconnect(4000, 'bye')
  // Called all the same: the client reads closing and takes nothing more (reported, not thrown:
  // as while any disconnect() closes the client).
  t.is(client.state, 'closing')
  t.is(client.readyState, client.CLOSING)
  t.false(client.shouldReconnect)
  const late = new Blob(['too late'])
  client.send('too late')
  client.send(late)
  t.deepEqual(
    log.log.filter((e) => e.name === 'drop').map((e) => e.args[0]),
    [
      { reason: 'closed', messages: ['too late'] },
      { reason: 'closed', messages: [late] },
    ],
  )
  blob.release()
  t.deepEqual(await done, { discarded: 0 })
  const close = await log.next('close')
  t.like(close, { code: 4000, reason: 'bye', willReconnect: false })
  t.deepEqual(got, [['b:last words', 't:and these']])
  t.is(client.state, 'closed')
  released(t)
})

test.serial('disconnect() then connect() behind a Blob: the close, then the next connection takes what was sent after', async (t) => {
  const { got, client, log } = await openClient(t)
  const blob = new GatedBlob(['first connection'])
  client.send(blob)
  const done = client.disconnect()
  client.connect()
  client.send('second connection')
  blob.release()
  t.deepEqual(await done, { discarded: 0 })
  t.like(await log.next('close'), { code: 1000, willReconnect: true })
  await log.next('open')
  await until(() => got[1]?.length === 1, 'the message on the second connection')
  t.deepEqual(got, [['b:first connection'], ['t:second connection']])
  await client.disconnect()
  released(t)
})

test.serial('reconnect() behind a Blob closes the connection after it; what was sent after goes as it would without one', async (t) => {
  const { got, client, log } = await openClient(t)
  const blob = new GatedBlob(['before reconnect'])
  client.send(blob)
  client.reconnect(4001, 'again')
  client.send('after reconnect')
  blob.release()
  t.like(await log.next('close'), { code: 4001, willReconnect: true })
  await log.next('open')
  // (A send() made just after reconnect() can still be written before the close frame, or be
  // queued for the next connection: the Blob's is on the connection reconnect() closed.)
  await until(() => got.flat().length === 2, 'both messages')
  t.deepEqual(got[0][0], 'b:before reconnect')
  t.deepEqual(got.flat(), ['b:before reconnect', 't:after reconnect'])
  await client.disconnect()
  released(t)
})

test.serial('terminate() discards what waits for a Blob: callbacks get ERR_NOT_SENT, the count includes them', async (t) => {
  const { got, client } = await openClient(t)
  const { calls, callback } = recorder()
  let drops = 0
  client.on('drop', () => drops++)
  client.send('written')
  const blob = new GatedBlob(['never'])
  client.send(blob, callback('blob'))
  client.send('never either', callback('text'))
  client.send('nor this')
  // A disconnect() waiting behind the Blob settles as the terminate() does.
  const waiting = client.disconnect()
  const result = await client.terminate()
  t.deepEqual(result, { discarded: 3 })
  t.deepEqual(await waiting, result)
  t.deepEqual(calls, [
    ['blob', 'ERR_NOT_SENT:discarded'],
    ['text', 'ERR_NOT_SENT:discarded'],
  ])
  t.is(client.bufferedAmount, 0)
  t.is(client.state, 'closed')
  released(t)
  // The read that ends after does nothing (what it would do, it does in the turn its bytes come).
  blob.release()
  await blob.read
  await new Promise(setImmediate)
  t.is(calls.length, 2)
  t.is(drops, 0)
  // (The message written before the Blob may be lost with the dropped connection, as any.)
  t.deepEqual(got.flat().filter((m) => m !== 't:written'), [])
})

test.serial('a Blob whose bytes cannot be read is reported (drop, callback); the connection and what follows go on', async (t) => {
  const { got, client, log } = await openClient(t)
  const { calls, callback } = recorder()
  // A file-backed Blob whose file changed since: Node refuses to read it.
  const dir = await mkdtemp(join(tmpdir(), 'redial-blob-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'data.bin')
  await writeFile(file, 'original')
  const stale = await openAsBlob(file)
  await writeFile(file, 'changed, and longer')
  client.send(stale, callback('stale'))
  client.send('still sent', callback('text'))
  const drop = await log.next<DropEventInfo>('drop')
  t.is(drop.reason, 'unreadable')
  t.is(drop.messages[0], stale)
  t.truthy(drop.error)
  await until(() => calls.length === 2, 'both callbacks')
  t.deepEqual(calls, [
    ['stale', 'ERR_NOT_SENT:unreadable'],
    ['text', null],
  ])
  await until(() => got[0]?.length === 1, 'the message after the Blob')
  t.deepEqual(got, [['t:still sent']])
  t.is(log.count('close') + log.count('error'), 0)
  await client.disconnect()
  released(t)
})

test.serial('the connection drops while a Blob is read: it waits in the queue for the next connection', async (t) => {
  const { peer, got, client, log } = await openClient(t, { minDelay: 10, maxDelay: 10 })
  const blob = new GatedBlob(['survives'])
  client.send(blob)
  for (const socket of peer.sockets) socket.terminate()
  await log.next('close')
  blob.release()
  await log.next('open')
  await until(() => got[1]?.length === 1, 'the Blob on the next connection')
  t.deepEqual(got, [[], ['b:survives']])
  await client.disconnect()
  released(t)
})

test.serial('without a queue, a Blob whose connection ended while it was read is reported as closed', async (t) => {
  const { peer, client, log } = await openClient(t, { queue: false, minDelay: 60_000, maxDelay: 60_000 })
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['lost'])
  client.send(blob, callback('blob'))
  for (const socket of peer.sockets) socket.terminate()
  await log.next('close')
  blob.release()
  const drop = await log.next<DropEventInfo>('drop')
  t.is(drop.reason, 'closed')
  t.is(drop.messages[0], blob)
  await until(() => calls.length === 1, 'the callback')
  t.deepEqual(calls, [['blob', 'ERR_NOT_SENT:closed']])
  await client.disconnect()
  released(t)
})

test.serial('what cannot be sent as a Blob throws at once', async (t) => {
  const closed = new ReconnectingWebSocket('ws://127.0.0.1:9/', { startClosed: true })
  t.throws(() => closed.send(new Blob(['x'])), { code: 'ERR_NOT_OPEN' })
  t.throws(() => closed.send(new Blob(['x']), () => {}), { code: 'ERR_NOT_OPEN' })
  t.throws(() => closed.ping(new Blob(['x'])), { code: 'ERR_NOT_OPEN' })
  t.throws(() => closed.pong(new Blob(['x']), undefined, () => {}), { code: 'ERR_NOT_OPEN' })
  const { got, client } = await openClient(t)
  t.throws(() => client.ping(new Blob([new Uint8Array(126)])), { code: 'ERR_OUT_OF_RANGE', instanceOf: RangeError })
  // Only a Blob can be a piece: the message is a Blob of its pieces.
  const blobLike = { size: 1, type: '', arrayBuffer: async () => new ArrayBuffer(1), stream: () => new ReadableStream(), [Symbol.toStringTag]: 'Blob' }
  t.throws(() => client.send(blobLike as unknown as Blob, { fin: false }), { code: 'ERR_INVALID_ARG_TYPE', message: /piece/ })
  client.send('a piece', { fin: false })
  t.throws(() => client.send(blobLike as unknown as Blob), { code: 'ERR_INVALID_ARG_TYPE', message: /piece/ })
  client.send(' and the last')
  t.throws(() => client.send(new Blob(['x']), 'no' as never), { code: 'ERR_INVALID_ARG_TYPE' })
  // Behind a Blob, other data is checked as at once.
  const blob = new GatedBlob(['held'])
  client.send(blob)
  t.throws(() => client.send(42 as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => client.send('x', { mask: false } as never), { code: 'ERR_INVALID_ARG_VALUE' })
  blob.release()
  await until(() => got[0]?.length === 2, 'the Blob')
  t.deepEqual(got, [['t:a piece and the last', 'b:held']], 'nothing that threw was sent')
  await client.disconnect()
  released(t)
})

test.serial("a Blob-like whose arrayBuffer() throws, rejects with nothing or gives no bytes is reported unreadable; the queue goes on", async (t) => {
  const { peer, got } = await recordingServer(t)
  const client = new ReconnectingWebSocket(peer.url)
  const drops: DropEventInfo[] = []
  client.on('drop', (info) => drops.push(info))
  await new Recorder(client).next('open')
  const { calls, callback } = recorder()
  class Throws extends Blob {
    override arrayBuffer(): Promise<ArrayBuffer> {
      throw new Error('thrown')
    }
  }
  class RejectsWithNothing extends Blob {
    override arrayBuffer(): Promise<ArrayBuffer> {
      return Promise.reject(undefined)
    }
  }
  class GivesNoBytes extends Blob {
    override arrayBuffer(): Promise<ArrayBuffer> {
      return Promise.resolve(undefined as never)
    }
  }
  client.send(new Throws(['x']), callback('throws'))
  client.send(new RejectsWithNothing(['x']), callback('rejects'))
  client.send(new GivesNoBytes(['x']), callback('no bytes'))
  client.send('after them')
  await until(() => got[0]?.length === 1 && calls.length === 3, 'the reports and the message after')
  t.deepEqual(calls, [
    ['throws', 'ERR_NOT_SENT:unreadable'],
    ['rejects', 'ERR_NOT_SENT:unreadable'],
    ['no bytes', 'ERR_NOT_SENT:unreadable'],
  ])
  t.deepEqual(
    drops.map((d) => d.reason),
    ['unreadable', 'unreadable', 'unreadable'],
  )
  t.deepEqual(got, [['t:after them']])
  t.is(client.bufferedAmount, 0)
  await client.disconnect()
  released(t)
})

test.serial('a Blob of the same shape from another library (fetch-blob, formdata-node) is sent, as ws sends it', async (t) => {
  const { got, client } = await openClient(t)
  const bytes = Buffer.from('shaped like a Blob')
  const blobLike = {
    size: bytes.length,
    type: '',
    arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length),
    stream: () => new ReadableStream(),
    [Symbol.toStringTag]: 'Blob',
  }
  client.send(blobLike as unknown as Blob)
  await until(() => got[0]?.length === 1, 'the message')
  t.deepEqual(got, [['b:shaped like a Blob']])
  await client.disconnect()
  released(t)
})

test.serial('drainQueue() hands back what waits for a Blob after what the queue holds; nothing of it is sent after', async (t) => {
  const { peer, got, client, log } = await openClient(t, { minDelay: 60_000, maxDelay: 60_000 })
  for (const socket of peer.sockets) socket.terminate()
  await log.next('reconnecting')
  const { calls, callback } = recorder()
  client.send('queued', callback('queued'))
  const blob = new GatedBlob(['held'])
  client.send(blob, callback('blob'))
  client.send('held too')
  const drained = client.drainQueue()
  t.deepEqual(drained, ['queued', blob, 'held too'])
  t.is(client.bufferedAmount, 0)
  blob.release()
  await blob.read
  await until(() => calls.length === 2, 'the callbacks')
  t.deepEqual(calls, [
    ['queued', 'ERR_NOT_SENT:drained'],
    ['blob', 'ERR_NOT_SENT:drained'],
  ])
  // The connection that comes next gets nothing of them.
  client.reconnect()
  await log.next('open')
  client.send('after')
  await until(() => got[1]?.length === 1, 'the message after')
  t.deepEqual(got, [[], ['t:after']])
  await client.disconnect()
  released(t)
})

test.serial('while a disconnect() waits behind a Blob: opened() rejects, a piece is dropped, a ping not sent; terminate() reports in the order sent', async (t) => {
  const { client } = await openClient(t)
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['held'])
  client.send(blob, callback('blob'))
  const waiting = client.disconnect()
  await t.throwsAsync(client.opened(), { code: 'ERR_NOT_OPEN' })
  // Closing: a piece is dropped (reported), a ping or pong not sent (as ws's after close()), whether
  // or not they wait for a Blob.
  client.send('piece', { fin: false }, callback('refused piece'))
  client.ping(callback('ping'))
  client.pong(new Blob(['x']), undefined, callback('pong'))
  await Promise.resolve()
  t.deepEqual(calls, [
    ['refused piece', 'ERR_NOT_SENT:closed'],
    ['ping', 'ERR_NOT_SENT:closed'],
    ['pong', 'ERR_NOT_SENT:closed'],
  ])
  calls.length = 0
  // A connect() after it takes messages again, pieces too.
  client.connect()
  client.send('piece 1', { fin: false }, callback('piece 1'))
  client.send('piece 2', { fin: false }, callback('piece 2'))
  t.is(client.state, 'closing')
  const result = await client.terminate()
  t.deepEqual(await waiting, result)
  t.deepEqual(result, { discarded: 2 })
  t.deepEqual(calls, [
    ['blob', 'ERR_NOT_SENT:discarded'],
    ['piece 1', 'ERR_NOT_SENT:discarded'],
    ['piece 2', 'ERR_NOT_SENT:discarded'],
  ])
  released(t)
})

test.serial('with queue: false, a Blob sent while not open throws as any send()', async (t) => {
  const { peer } = await recordingServer(t)
  const client = new ReconnectingWebSocket(peer.url, { queue: false })
  t.is(client.state, 'connecting')
  t.throws(() => client.send(new Blob(['x'])), { code: 'ERR_NOT_OPEN' })
  await new Recorder(client).next('open')
  const blob = new GatedBlob(['held'])
  client.send(blob)
  t.is(client.bufferedAmount, 4)
  blob.release()
  await client.disconnect()
  released(t)
})

test.serial("a disconnect() behind a Blob whose read does not end closes at closeTimeout, as ws's close() does; the Blob is discarded", async (t) => {
  const { got, client, log } = await openClient(t, { closeTimeout: 200 })
  const { calls, callback } = recorder()
  const never = new GatedBlob(['never read'])
  client.send('before', callback('before'))
  client.send(never, callback('never'))
  client.send('behind it', callback('behind'))
  const started = performance.now()
  t.deepEqual(await client.disconnect(), { discarded: 2 })
  t.true(performance.now() - started >= 150, 'not before the deadline')
  t.like(await log.next('close'), { code: 1000, willReconnect: false })
  t.deepEqual(calls, [
    ['before', null],
    ['never', 'ERR_NOT_SENT:discarded'],
    ['behind', 'ERR_NOT_SENT:discarded'],
  ])
  t.deepEqual(got, [['t:before']])
  t.is(client.bufferedAmount, 0)
  released(t)
})

test.serial('opened() after disconnect() and connect() behind a Blob waits for the next connection', async (t) => {
  const { client, log } = await openClient(t)
  const blob = new GatedBlob(['held'])
  client.send(blob)
  const done = client.disconnect()
  client.connect()
  const opened = client.opened()
  blob.release()
  await done
  await log.next('open')
  t.like(await opened, { protocol: '' })
  await client.disconnect()
  released(t)
})

test.serial("a stream write behind a Blob that the full queue refuses when its turn comes waits for the next open, as it does without a Blob", async (t) => {
  const { peer, got, client, log } = await openClient(t, { minDelay: 200, maxDelay: 200, queue: { maxMessages: 2 } })
  const stream = createWebSocketStream(client)
  let failed: Error | null = null
  stream.on('error', (err) => (failed = err))
  for (const socket of peer.sockets) socket.terminate()
  await log.next('close')
  client.send('queued')
  const blob = new GatedBlob(['held'])
  client.send(blob)
  const written = new Promise<Error | null | undefined>((resolve) => stream.write('chunk', resolve))
  blob.release()
  await log.next('open')
  t.is(await written, null)
  await until(() => got[1]?.length === 3, 'all three on the next connection')
  t.deepEqual(got[1], ['t:queued', 'b:held', 'b:chunk'])
  t.is(failed, null)
  stream.destroy()
  await client.disconnect()
  released(t)
})

test.serial("a drop event gives back the Blob that was sent, also for one sent with a callback or uncompressed (rws mode's full queue)", async (t) => {
  const { peer } = await recordingServer(t)
  // reconnecting-websocket's maxEnqueuedMessages: a new message past it is dropped, and reported.
  const client = new ReconnectingWebSocket(peer.url, undefined, { maxEnqueuedMessages: 1, minReconnectionDelay: 60_000, maxReconnectionDelay: 60_000 })
  const log = new Recorder(client, ['open', 'close', 'drop'])
  await log.next('open')
  for (const socket of peer.sockets) socket.terminate()
  await log.next('close')
  client.send('fills the queue')
  const { calls, callback } = recorder()
  const withCallback = new Blob(['with a callback'])
  const uncompressed = new Blob(['uncompressed'])
  client.send(withCallback, callback('blob'))
  client.send(uncompressed, { compress: false })
  t.is((await log.next<DropEventInfo>('drop')).messages[0], withCallback)
  t.is((await log.next<DropEventInfo>('drop')).messages[0], uncompressed)
  await until(() => calls.length === 1, 'the callback')
  t.deepEqual(calls, [['blob', 'ERR_NOT_SENT:overflow']])
  await client.disconnect()
  released(t)
})

test.serial('a giveup while a Blob is read keeps it and what follows, as the queue is kept: a connect() sends them in order, a disconnect() discards them', async (t) => {
  const port = await refusedPort()
  for (const ending of ['connect', 'disconnect'] as const) {
    const { client, log, calls, blob } = await givingUpWithBlob(port)
    await log.next('giveup')
    blob.release()
    await blob.read
    await new Promise(setImmediate)
    t.is(log.count('drop'), 0, 'nothing dropped')
    t.is(client.bufferedAmount, 'queued'.length + 4 + 'behind it'.length)
    t.deepEqual(calls, [])
    if (ending === 'disconnect') {
      t.deepEqual(await client.disconnect(), { discarded: 3 })
      t.deepEqual(calls, [
        ['queued', 'ERR_NOT_SENT:discarded'],
        ['blob', 'ERR_NOT_SENT:discarded'],
        ['behind', 'ERR_NOT_SENT:discarded'],
      ])
      t.is(client.bufferedAmount, 0)
      released(t)
      continue
    }
    const { peer, got } = await serverBackOn(port)
    client.connect()
    await log.next('open')
    await until(() => got.length === 3 && calls.length === 3, 'the three messages')
    t.deepEqual(got, ['t:queued', 'b:held', 't:behind it'])
    t.deepEqual(calls, [
      ['queued', null],
      ['blob', null],
      ['behind', null],
    ])
    await client.disconnect()
    await peer.close()
    released(t)
  }
})

test.serial("a giveup JS has yet to see when a Blob's bytes come: what waits is kept as the queue is", async (t) => {
  const port = await refusedPort()
  const { client, log, calls, blob } = await givingUpWithBlob(port)
  t.is(blob.reads, 1, 'the Blob is being read')
  // The JS thread stays busy while the driver gives up (its event waits for the thread); the
  // Blob's bytes then come in microtasks, before that event. The driver waits for nothing from
  // this thread: the deadline is only for a machine whose other processes starve its threads
  // (5 s was once too short on CI).
  const deadline = Date.now() + 20_000
  while (clientStats().runningTasks > 0 && Date.now() < deadline);
  t.is(clientStats().runningTasks, 0, `the driver gave up: ${JSON.stringify({ ...clientStats(), ...client.metrics })}`)
  t.not(client.state, 'closed', 'JS has not seen it')
  blob.release()
  await log.next('giveup')
  t.is(log.count('drop'), 0, 'nothing dropped')
  t.deepEqual(calls, [])
  const { peer, got } = await serverBackOn(port)
  client.reconnect()
  await log.next('open')
  await until(() => got.length === 3 && calls.length === 3, 'the three messages')
  t.deepEqual(got, ['t:queued', 'b:held', 't:behind it'])
  await client.disconnect()
  await peer.close()
  released(t)
})

test.serial('after a giveup, reconnect() is made at once though a Blob is still being read; without a queue, what waited is reported', async (t) => {
  const port = await refusedPort()
  const { client, log, blob } = await givingUpWithBlob(port)
  await log.next('giveup')
  const { peer, got } = await serverBackOn(port)
  client.reconnect()
  t.is(client.state, 'connecting')
  await log.next('open')
  // The queue goes first; the Blob, still being read, and the message behind it wait.
  await until(() => got.length === 1, 'the queued message')
  t.deepEqual(got, ['t:queued'])
  blob.release()
  await until(() => got.length === 3, 'the Blob and the message behind it')
  t.deepEqual(got, ['t:queued', 'b:held', 't:behind it'])
  await client.disconnect()

  // queue: false: nothing is kept for a later connection.
  const unqueued = new ReconnectingWebSocket(peer.url, { queue: false, maxRetries: 0 })
  const events = new Recorder(unqueued, ['open', 'giveup', 'drop'])
  await events.next('open')
  const { calls, callback } = recorder()
  const late = new GatedBlob(['late'])
  unqueued.send(late, callback('late'))
  for (const socket of peer.sockets) socket.terminate()
  await events.next('giveup')
  late.release()
  t.like(await events.next<DropEventInfo>('drop'), { reason: 'closed', messages: [late] })
  await until(() => calls.length === 1, 'the callback')
  t.deepEqual(calls, [['late', 'ERR_NOT_SENT:closed']])
  t.is(unqueued.bufferedAmount, 0)
  await unqueued.disconnect()
  await peer.close()
  released(t)
})

test.serial('a stream write that failed with the giveup is not sent by a later connect(), though it waited behind a Blob', async (t) => {
  const { peer, got, client, log } = await openClient(t, { maxRetries: 0 })
  const stream = createWebSocketStream(client)
  stream.on('error', () => {})
  const blob = new GatedBlob(['kept'])
  client.send(blob)
  const written = new Promise<Error | null | undefined>((resolve) => stream.write('failed write', resolve))
  for (const socket of peer.sockets) socket.terminate()
  await log.next('giveup')
  t.is(((await written) as { code?: string } | null)?.code, 'ERR_GAVE_UP')
  blob.release()
  await blob.read
  client.connect()
  await log.next('open')
  await until(() => got[1]?.length === 1, 'the Blob on the next connection')
  client.send('last')
  await until(() => got[1].length === 2, 'the last message')
  t.deepEqual(got[1], ['b:kept', 't:last'])
  await client.disconnect()
  released(t)
})

test.serial('after a giveup, disconnect() discards what waits at once, though a Blob is still being read', async (t) => {
  const port = await refusedPort()
  // A long closeTimeout: the call must not wait for it.
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 1, minDelay: 10, maxDelay: 10, closeTimeout: 60_000 })
  const log = new Recorder(client, ['giveup'])
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['held'])
  client.send(blob, callback('blob'))
  client.send('behind it', callback('behind'))
  await log.next('giveup')
  t.deepEqual(await client.disconnect(), { discarded: 2 })
  t.deepEqual(calls, [
    ['blob', 'ERR_NOT_SENT:discarded'],
    ['behind', 'ERR_NOT_SENT:discarded'],
  ])
  t.is(client.bufferedAmount, 0)
  released(t)
})

test.serial('send(blob, { binary: false }) sends its bytes as a text message in its place; bytes that are not UTF-8 are reported, not sent', async (t) => {
  const { got, client, log } = await openClient(t)
  const drops: DropEventInfo[] = []
  client.on('drop', (info) => drops.push(info))
  const { calls, callback } = recorder()
  const text = new GatedBlob(['\ufeffhé', Buffer.from('llo 😀')])
  client.send(text, { binary: false }, callback('text'))
  const broken = new Blob([Buffer.from([0x61, 0xc3])])
  client.send(broken, { binary: false }, callback('broken'))
  client.send(new Blob(['bytes']), { binary: true })
  client.send('after')
  t.is(client.bufferedAmount, text.size + broken.size + 5 + 5)
  t.deepEqual(got, [[]], 'nothing overtakes the Blob')
  text.release()
  await until(() => got[0].length === 3 && calls.length === 2, 'the messages and the callbacks')
  t.deepEqual(got, [['t:\ufeffhéllo 😀', 'b:bytes', 't:after']])
  // (Each in its own time: the report when the read ends, the other once the socket took it.)
  t.deepEqual(
    calls.sort(),
    [
      ['broken', 'ERR_NOT_SENT:unreadable'],
      ['text', null],
    ].sort(),
  )
  t.is(drops.length, 1)
  t.is(drops[0].reason, 'unreadable')
  t.is(drops[0].messages[0], broken)
  t.like(drops[0].error, { code: 'ERR_INVALID_ARG_VALUE' })
  t.is(log.count('close'), 0, 'the connection goes on')
  t.is(client.bufferedAmount, 0)
  await client.disconnect()
  released(t)
})

test.serial('a Blob can be a piece of a message: the message goes whole, in its place, once its pieces are read', async (t) => {
  const { got, client } = await openClient(t)
  const drops: DropEventInfo[] = []
  client.on('drop', (info) => drops.push(info))
  const { calls, callback } = recorder()
  // Binary: a Blob first, bytes and a Blob after (read when the message's turn comes).
  const gated = new GatedBlob(['two'])
  client.send(new Blob(['one ']), { fin: false }, callback('b1'))
  client.send(Buffer.from('and '), { fin: false }, callback('b2'))
  client.send(gated, { fin: false })
  client.send(Buffer.from('!'), callback('b4'))
  t.is(client.bufferedAmount, 4 + 4 + 3 + 1)
  client.send('after the binary one')
  // Text: a character's bytes split across a Blob, and a surrogate pair split between two strings after one.
  const e = Buffer.from('é')
  client.send('caf', { fin: false })
  client.send(e.subarray(0, 1), { fin: false })
  client.send(new Blob([e.subarray(1), ' ']), { fin: false })
  client.send('\ud83d', { fin: false })
  client.send('\ude00', callback('t5'))
  // A text message whose pieces are not UTF-8 together: reported when read, the message as a Blob of its pieces.
  client.send(new Blob([Buffer.from([0xe2, 0x82])]), { fin: false, binary: false })
  client.send('x', callback('bad'))
  client.send('last')
  t.deepEqual(got, [[]], 'nothing overtakes the message that waits for a Blob')
  gated.release()
  await until(() => got[0].length === 4 && calls.length === 5, 'the messages and the callbacks')
  t.deepEqual(got, [['b:one and two!', 't:after the binary one', 't:café 😀', 't:last']])
  t.deepEqual(
    calls.sort(),
    [
      ['b1', null],
      ['b2', null],
      ['b4', null],
      ['bad', 'ERR_NOT_SENT:unreadable'],
      ['t5', null],
    ].sort(),
  )
  t.is(drops.length, 1)
  t.is(drops[0].reason, 'unreadable')
  t.true(drops[0].messages[0] instanceof Blob)
  t.deepEqual(Buffer.from(await (drops[0].messages[0] as Blob).arrayBuffer()), Buffer.from([0xe2, 0x82, 0x78]))
  t.is(client.bufferedAmount, 0)
  await client.disconnect()
  released(t)
})

test.serial('ping(blob) and pong(blob) send its bytes once read, in their place among what waits for a Blob', async (t) => {
  const got: string[] = []
  const peer = await wsServer((socket) => {
    socket.on('message', (data) => got.push(`message ${String(data)}`))
    socket.on('ping', (data) => got.push(`ping ${String(data)}`))
    socket.on('pong', (data) => got.push(`pong ${String(data)}`))
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
  await client.opened()
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['first'])
  client.send(blob)
  // A ping of bytes waits too, as ws's sender queues it: pings keep the order they were made in.
  const reused = Buffer.from('plain before')
  client.ping(reused)
  reused.fill(0)
  client.ping(new Blob(['ping payload']), undefined, callback('ping'))
  client.pong(new Blob(['pong payload']), callback('pong'))
  client.pong('plain after', undefined, callback('plain pong'))
  client.send('after them')
  t.is(client.bufferedAmount, 5 + 10, 'a control frame is not counted as a message')
  blob.release()
  await until(() => got.length === 6 && calls.length === 3, 'the frames and the callbacks')
  t.deepEqual(got, ['message first', 'ping plain before', 'ping ping payload', 'pong pong payload', 'pong plain after', 'message after them'])
  t.deepEqual(calls, [
    ['ping', null],
    ['pong', null],
    ['plain pong', null],
  ])
  await client.disconnect()
  released(t)
})

test.serial('a ping(blob) that cannot be read is reported (callback, error event, warning); one whose connection went is not sent on the next', async (t) => {
  const pings: string[] = []
  const peer = await wsServer((socket) => socket.on('ping', (data) => pings.push(String(data))))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0, minDelay: 10, maxDelay: 10 })
  const log = new Recorder(client, ['open', 'close', 'drop'])
  await log.next('open')
  const { calls, callback } = recorder()
  const causes: unknown[] = []
  class Throws extends Blob {
    override arrayBuffer(): Promise<ArrayBuffer> {
      throw new Error('thrown')
    }
  }
  client.ping(new Throws(['x']), (err: NotSentError | null) => {
    causes.push(err?.cause)
    callback('callback')(err)
  })
  // A Blob-like whose bytes are more than its size said.
  const tooLong = { size: 1, type: '', arrayBuffer: async () => new ArrayBuffer(126), stream: () => new ReadableStream(), [Symbol.toStringTag]: 'Blob' }
  client.ping(tooLong as unknown as Blob, callback('too long'))
  await until(() => calls.length === 2, 'the callbacks')
  t.deepEqual(calls, [
    ['callback', 'ERR_NOT_SENT:unreadable'],
    ['too long', 'ERR_NOT_SENT:unreadable'],
  ])
  t.like(causes[0], { message: 'thrown' })
  // Without a callback: an error event, or a warning when nothing listens for errors.
  const errors: unknown[] = []
  const onError = (err: unknown) => void errors.push(err)
  client.on('error', onError)
  client.pong(new Throws(['x']))
  await until(() => errors.length === 1, 'the error event')
  t.like(errors[0], { code: 'ERR_NOT_SENT', reason: 'unreadable' })
  // The WHATWG way of listening hears it too, with or without an EventEmitter listener.
  const events: Array<{ error: unknown }> = []
  client.onerror = (event) => void events.push(event as unknown as { error: unknown })
  client.ping(new Throws(['x']))
  await until(() => events.length === 1 && errors.length === 2, 'the onerror call and the error event')
  client.off('error', onError)
  client.ping(new Throws(['x']))
  await until(() => events.length === 2, 'the onerror call')
  t.like(events[1].error, { code: 'ERR_NOT_SENT', reason: 'unreadable' })
  client.onerror = null
  const warned = new Promise<Error>((resolve) => process.once('warning', resolve))
  client.ping(new Throws(['x']))
  t.like(await warned, { code: 'ERR_NOT_SENT', reason: 'unreadable' })
  // The connection goes while its ping's Blob is read: not sent on the next one, nor handed back.
  const gated = new GatedBlob(['for the first connection'])
  client.ping(gated, callback('gone'))
  for (const socket of peer.sockets) socket.terminate()
  await log.next('close')
  t.deepEqual(client.drainQueue(), [])
  await log.next('open')
  gated.release()
  await until(() => calls.length === 3, 'its callback')
  t.deepEqual(calls[2], ['gone', 'ERR_NOT_SENT:closed'])
  client.ping('marker')
  await until(() => pings.includes('marker'), 'the marker ping')
  t.deepEqual(pings, ['marker'])
  t.is(log.count('drop'), 0, 'a ping is not a message of the queue')
  // terminate() with a ping held: its callback says closed, and it is not counted as a discarded message.
  const held = new GatedBlob(['held'])
  client.send(held)
  client.ping(new Blob(['behind it']), callback('terminated'))
  const { discarded } = await client.terminate()
  t.is(discarded, 1)
  await until(() => calls.length === 4, 'its callback')
  t.deepEqual(calls[3], ['terminated', 'ERR_NOT_SENT:closed'])
  held.release()
  released(t)
})

test.serial('a ping held behind a Blob when the client gives up is told at once that its connection has gone', async (t) => {
  const port = await refusedPort()
  const peer = await wsServer(undefined, port)
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 1, minDelay: 10, maxDelay: 10, pingInterval: 0 })
  const log = new Recorder(client, ['open', 'giveup'])
  await log.next('open')
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['kept'])
  client.send(blob, callback('blob'))
  client.ping(new Blob(['behind it']), callback('ping'))
  client.ping('plain', undefined, callback('plain ping'))
  await peer.close()
  await log.next('giveup')
  blob.release()
  // Nothing more from the application: the message waits for a connect(), the pings do not.
  await until(() => calls.length === 2, 'the pings\' callbacks')
  t.deepEqual(calls, [
    ['ping', 'ERR_NOT_SENT:closed'],
    ['plain ping', 'ERR_NOT_SENT:closed'],
  ])
  t.is(client.bufferedAmount, 4, 'the Blob is kept, as the queue is')
  t.deepEqual(await client.disconnect(), { discarded: 1 })
  t.deepEqual(calls[2], ['blob', 'ERR_NOT_SENT:discarded'])
  released(t)
})

test.serial('a connection that opens while a disconnect() waits behind a Blob is not reported open: it is the one that call closes', async (t) => {
  // The first attempt opens while the Blob's bytes have not come: the client reads 'closing'
  // (readyState CLOSING), where a send() in an `open` listener would throw. The Blob goes out on
  // that connection, then the call's close, reported as a close while connecting is.
  const { peer, got } = await recordingServer(t)
  const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
  const seen: string[] = []
  const thrown = sendsOnOpen(client, seen)
  client.on('close', ({ code, willReconnect }) => seen.push(`close ${code} ${willReconnect} ${client.state}`))
  const blob = new GatedBlob(['bytes'])
  client.send(blob)
  const done = client.disconnect(4000, 'bye')
  t.is(client.state, 'closing')
  await until(() => clientStats().openConnections === 1, 'the connection open')
  blob.release()
  t.deepEqual(await done, { discarded: 0 })
  t.deepEqual(thrown, [])
  t.deepEqual(seen, ['close 4000 false closed'])
  await until(() => got.length === 1 && got[0].length === 1, 'what the server got')
  t.deepEqual(got, [['b:bytes']])
  released(t)
})

test.serial("a disconnect() behind a Blob when the connection drops: that close is its close, the last event; what waited is discarded", async (t) => {
  // The connection the Blob was sent for has gone: as a disconnect() made at once, the call ends
  // the client there (no retry reported, no giveup), and discards what waited for the connection.
  const { peer, client, log } = await openClient(t, { minDelay: 10, maxDelay: 10 })
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['never read'])
  client.send(blob, callback('blob'))
  const done = client.disconnect(4000, 'bye')
  await peer.close()
  t.like(await log.next('close'), { code: 1006, willReconnect: false })
  t.deepEqual(await done, { discarded: 1 })
  t.is(client.state, 'closed')
  t.deepEqual(calls, [['blob', 'ERR_NOT_SENT:discarded']])
  blob.release()
  await new Promise(setImmediate)
  // (The error: the connection ended without a close frame, as it does without a Blob.)
  t.deepEqual(
    log.log.map((e) => e.name),
    ['open', 'error', 'close'],
  )
  released(t)
})

test.serial('a reconnect() behind a Blob, made before the attempt failed for good: no giveup, the client connects again and sends the Blob', async (t) => {
  // The first upgrade is refused (401) and the client retries no more: the reconnect() made while
  // it connected starts the next attempt, as one made before JS saw the failure does without a Blob.
  let upgrades = 0
  const got: string[] = []
  const peer = await upgradeServer((req, socket, head, wss) => {
    if (upgrades++ === 0) return void socket.end('HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n')
    wss.handleUpgrade(req, socket, head, (ws) => ws.on('message', (data, isBinary) => got.push(`${isBinary ? 'b' : 't'}:${String(data)}`)))
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0 })
  const log = new Recorder(client, ['open', 'close', 'reconnecting', 'error', 'giveup'])
  const blob = new GatedBlob(['after the refusal'])
  client.send(blob)
  client.reconnect()
  t.like(await log.next('close'), { code: 1006, willReconnect: true })
  await log.next('open')
  blob.release()
  await until(() => got.length === 1, 'the Blob on the second connection')
  t.deepEqual(got, ['b:after the refusal'])
  t.is(log.count('giveup'), 0)
  t.is(upgrades, 2)
  await client.disconnect()
  released(t)
})

test.serial('a disconnect() behind a Blob, made before the client gave up: the giveup is not reported and no giveup listener restarts it', async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { maxRetries: 1, minDelay: 10, maxDelay: 10 })
  t.teardown(() => client.terminate())
  const log = new Recorder(client, ['open', 'close', 'reconnecting', 'error', 'giveup'])
  // As the README suggests of a giveup listener, one that acts: it must not undo the disconnect().
  client.on('giveup', () => client.connect())
  const deadline = Date.now() + 20_000
  // The JS thread waits without taking a turn of the event loop for both attempts to be made and
  // the driver to end (its task may not have started when the constructor returns).
  while ((client.metrics.connectAttempts < 2 || clientStats().runningTasks > 0) && Date.now() < deadline);
  t.is(client.metrics.connectAttempts, 2)
  t.is(clientStats().runningTasks, 0, 'the driver gave up, JS has not seen it')
  const blob = new GatedBlob(['bytes'])
  client.send(blob)
  const done = client.disconnect()
  t.deepEqual(await done, { discarded: 1 })
  await new Promise(setImmediate)
  t.is(client.state, 'closed')
  t.deepEqual(
    log.log.map((e) => e.name),
    ['error', 'close'],
  )
  t.like(log.log[1].args[0], { willReconnect: false })
  blob.release()
  released(t)
})

test.serial('a disconnect() behind a Blob in a reconnect wait ends the client at once: no attempt after it, what waited is discarded', async (t) => {
  const { peer, client, log } = await openClient(t, { minDelay: 1_000, maxDelay: 1_000 })
  const { calls, callback } = recorder()
  const blob = new GatedBlob(['never sent'])
  client.send(blob, callback('blob'))
  const accepted = peer.accepted
  await peer.close()
  t.like(await log.next('close'), { willReconnect: true })
  const before = log.log.length
  t.deepEqual(await client.disconnect(), { discarded: 1 })
  t.is(client.state, 'closed')
  t.deepEqual(calls, [['blob', 'ERR_NOT_SENT:discarded']])
  await new Promise(setImmediate)
  t.deepEqual(log.log.slice(before), [])
  t.is(peer.accepted, accepted)
  blob.release()
  released(t)
})
