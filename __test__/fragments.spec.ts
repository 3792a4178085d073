// send(data, { fin: false }), as ws's: a message sent in pieces. The pieces are held until the last
// one and the message goes out whole, on one connection, however many connections come and go
// between the pieces.
import test from 'ava'
import type { WebSocket } from 'ws'

import { ReconnectingWebSocket, clientStats } from '../index.js'
import { quiescent, refusedPort, until, wsServer } from './helpers.js'

type Received = { binary: boolean; data: Buffer; conn: number }

/** A ws server that records every message with the connection it came on, and every ping. */
async function recordingServer() {
  const got: Received[] = []
  let pings = 0
  let conns = 0
  const peer = await wsServer((s: WebSocket) => {
    const conn = ++conns
    s.on('message', (data, binary) => got.push({ binary, data: data as Buffer, conn }))
    s.on('ping', () => pings++)
  })
  return { peer, got, pings: () => pings }
}

function callbacks() {
  const calls: string[] = []
  const cb = (name: string) => (err?: Error & { reason?: string }) => calls.push(err ? `${name}: ${err.reason}` : name)
  return { calls, cb }
}

test.serial('the pieces are held until the last one, then arrive as one message; each piece is called back once it is written', async (t) => {
  const { peer, got, pings } = await recordingServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  t.teardown(() => client.terminate())
  await client.opened()
  const { calls, cb } = callbacks()
  const euro = Buffer.from('€') // three bytes, split over two pieces
  client.send('price: ', { fin: false }, cb('first'))
  client.send(euro.subarray(0, 2), { fin: false, binary: true }) // binary counts on the first piece only
  client.send(euro.subarray(2), { fin: false }, cb('middle'))
  t.is(client.bufferedAmount, 7 + 3, 'held bytes count as not yet written')
  // A ping goes out at once: once the server has it, it would have had any piece sent before it.
  client.ping()
  await until(() => pings() === 1, 'the ping at the server')
  t.is(got.length, 0, 'no piece went out before the last one')
  t.deepEqual(calls, [])
  client.send('5', cb('last'))
  client.send(Buffer.from([1, 2]), { fin: false, binary: true })
  client.send('AB', { fin: false }) // a string in a binary message: its UTF-8 bytes
  const reused = Buffer.from([3, 4])
  client.send(reused, { fin: false })
  reused.fill(0) // the piece was taken as it was when sent
  client.send(Buffer.from([5]), { fin: true })
  client.send('after', cb('whole'))
  await until(() => got.length === 3, 'three messages at the server')
  t.deepEqual(
    got.map((m) => (m.binary ? [...m.data] : String(m.data))),
    ['price: €5', [1, 2, 65, 66, 3, 4, 5], 'after'],
  )
  t.deepEqual(
    got.map((m) => m.binary),
    [false, true, false],
  )
  await until(() => calls.length === 4, 'every callback')
  t.deepEqual(calls, ['first', 'middle', 'last', 'whole'], 'in order, once each')
  t.is(client.metrics.messagesSent, 3)
  await client.disconnect()
})

test.serial('pieces that stop being UTF-8 text are refused when sent, and the message stays open', async (t) => {
  const { peer, got } = await recordingServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  t.teardown(() => client.terminate())
  await client.opened()
  client.send('caf', { fin: false })
  t.throws(() => client.send(Buffer.from([0xff]), { fin: false }), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => client.send(Buffer.from([0xc3, 0x28]), { fin: false }), { code: 'ERR_INVALID_ARG_VALUE' }, 'a lead byte with a bad second byte')
  t.throws(() => client.send(Buffer.from([0xed, 0xa0]), { fin: false }), { code: 'ERR_INVALID_ARG_VALUE' }, 'the start of a surrogate')
  client.send(Buffer.from([0xc3]), { fin: false }) // the first byte of 'é': may still become text
  t.throws(() => client.send('!', { fin: false }), { code: 'ERR_INVALID_ARG_VALUE' }, 'text cannot follow a cut-off sequence')
  t.throws(() => client.send(Buffer.alloc(0)), { code: 'ERR_INVALID_ARG_VALUE' }, 'the message cannot end inside a sequence')
  t.is(client.bufferedAmount, 4, 'the refused pieces are not held')
  client.send(Buffer.from([0xa9]))
  t.throws(() => client.send(Buffer.from([1]), { fin: false, mask: false } as never), { code: 'ERR_INVALID_ARG_VALUE' })
  t.throws(() => client.send('x', { fin: 0 } as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.throws(() => client.send('x', { fin: false }, 'no' as never), { code: 'ERR_INVALID_ARG_TYPE' })
  t.is(client.bufferedAmount, 0, 'nothing held after the throws')
  await until(() => got.length === 1, 'the message at the server')
  t.is(String(got[0].data), 'café')
  // The first piece may end mid-character too, as in ws (it was decoded whole, and refused).
  const euro = Buffer.from('€')
  client.send(euro.subarray(0, 1), { binary: false, fin: false })
  client.send(euro.subarray(1))
  // And `binary: true` makes a text first piece the start of a binary message.
  client.send('ab', { binary: true, fin: false })
  client.send('c')
  await until(() => got.length === 3, 'the two messages at the server')
  t.deepEqual(got.slice(1).map((m) => [m.binary, String(m.data)]), [[false, '€'], [true, 'abc']])
  await client.disconnect()
})

test.serial('a message begun on one connection and finished while reconnecting arrives whole on the next one', async (t) => {
  const { peer, got } = await recordingServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 20, maxDelay: 20 })
  t.teardown(() => client.terminate())
  await client.opened()
  const { calls, cb } = callbacks()
  client.send('begun on the first, ', { fin: false }, cb('first'))
  const dropped = new Promise((resolve) => client.once('close', resolve))
  for (const s of peer.sockets) s.terminate()
  await dropped
  t.not(client.state, 'open')
  client.send('finished ', { fin: false })
  client.send('between connections', cb('last'))
  await until(() => got.length === 1, 'the message at the server')
  t.deepEqual(got.map((m) => [m.conn, String(m.data)]), [[2, 'begun on the first, finished between connections']])
  await until(() => calls.length === 2, 'both callbacks')
  t.deepEqual(calls, ['first', 'last'])
  await client.disconnect()
})

test.serial('a last piece the queue refuses throws and is not held; sent again, it completes the message', async (t) => {
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${await refusedPort()}/`, {
    minDelay: 60_000,
    maxDelay: 60_000,
    queue: { maxMessages: 1 },
  })
  t.teardown(() => client.terminate())
  client.on('error', () => {})
  client.send('queued')
  client.send('pie', { fin: false })
  t.throws(() => client.send('ce'), { code: 'ERR_QUEUE_FULL' })
  t.is(client.bufferedAmount, 6 + 3)
  t.deepEqual(client.drainQueue(), ['queued'])
  client.send('ce')
  t.deepEqual(client.drainQueue(), ['piece'])
  t.is(client.bufferedAmount, 0)
  await client.disconnect()
})

test.serial('disconnect() calls back in the order the messages were sent: a queued message before the unfinished one (waiting to reconnect, and after a giveup)', async (t) => {
  const port = await refusedPort()
  for (const gaveUp of [false, true]) {
    // Sent during a reconnect wait: the queue takes them whatever the driver does meanwhile (sent
    // at once, a first attempt refused before JS sees it would leave the client closed).
    const delay = gaveUp ? 100 : 60_000
    const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { minDelay: delay, maxDelay: delay, jitter: 'none', maxRetries: gaveUp ? 1 : Infinity })
    client.on('error', () => {})
    const { calls, cb } = callbacks()
    await new Promise((resolve) => client.once('reconnecting', resolve))
    client.send('queued', cb('queued'))
    client.send('unfin', { fin: false }, cb('piece'))
    if (gaveUp) await new Promise((resolve) => client.once('giveup', resolve))
    t.deepEqual(await client.disconnect(), { discarded: 2 })
    t.deepEqual(calls, ['queued: discarded', 'piece: discarded'], gaveUp ? 'after a giveup' : 'waiting to reconnect')
  }
  await quiescent()
})

test.serial('disconnect() discards an unfinished message: counted, its callbacks called before it resolves; no piece while closed', async (t) => {
  const { peer, got } = await recordingServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  await client.opened()
  const { calls, cb } = callbacks()
  client.send('never ', { fin: false }, cb('first'))
  client.send('finished', { fin: false }, cb('second'))
  const { discarded } = await client.disconnect({ flush: true })
  t.is(discarded, 1, 'the unfinished message, as one')
  t.deepEqual(calls, ['first: discarded', 'second: discarded'])
  t.is(client.bufferedAmount, 0)
  t.throws(() => client.send('x', { fin: false }), { code: 'ERR_NOT_OPEN' })
  t.is(got.length, 0)
  t.like(clientStats(), { openConnections: 0, pendingReconnects: 0, runningTasks: 0, ioBuffers: 0 })
  // A new message after connect() starts afresh.
  client.connect()
  await client.opened()
  client.send('new', { fin: false })
  client.send(' message')
  await until(() => got.length === 1, 'the new message')
  t.is(String(got[0].data), 'new message')
  // disconnect() then connect(): pieces are accepted again at once, as whole messages are (a
  // piece was refused with ERR_NOT_OPEN until the close was done).
  const closed = client.disconnect()
  client.connect()
  client.send('after ', { fin: false })
  client.send('connect()')
  t.deepEqual(await closed, { discarded: 0 })
  await until(() => got.length === 2, 'the message on the next connection')
  t.deepEqual([got[1].conn, String(got[1].data)], [3, 'after connect()'])
  await client.disconnect()
})
