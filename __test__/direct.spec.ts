// Reading on the JS thread (src/reader.rs): a quiet connection's socket (ws: or wss:) is watched by the
// JS event loop and its messages are dispatched as soon as they are read, without the tokio
// side's wake-up of the JS thread. What must hold: the path is taken, messages keep their order
// across every hand-over (control frames, a stream of large messages, a close), the heartbeat
// still tells a live peer from a dead one, and the watch goes with the connection.
import { once } from 'node:events'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import test from 'ava'

import { ReconnectingWebSocket, clientStats } from '../index.js'
import { makeCerts } from './certs.js'
import { Recorder, acceptUpgrade, quiescent, rawServer, serverChild, until, wsServer } from './helpers.js'

/** Times the tokio worker (thread "redial-ws") has gone to sleep and been woken, on Linux. */
function workerWakeups(): number | null {
  if (!fs.existsSync('/proc/self/task')) return null
  let n = 0
  for (const task of fs.readdirSync('/proc/self/task')) {
    const status = fs.readFileSync(`/proc/self/task/${task}/status`, 'latin1')
    if (/^Name:\s*redial-ws$/m.test(status)) n += Number(/^voluntary_ctxt_switches:\s*(\d+)/m.exec(status)?.[1])
  }
  return n
}

const certs = makeCerts()
/** The server's key and certificate for a `wss:` peer, and a client's options that trust it. */
const serverTls = (secure: boolean) => (secure ? { key: certs.key, cert: certs.cert } : undefined)
const clientOptions = (secure: boolean, options: object = {}) => (secure ? { ...options, tls: { ca: certs.ca } } : options)
const over = (secure: boolean) => (secure ? ' (wss:)' : '')

const native = createRequire(import.meta.url)('../lib/native.js') as {
  testingDirectReads(): number
  testingDirectWaits(): number
  testingClosesFromJs(): number
  testingFastPathWrites(): [number, number]
  testingPanicRead(client: object): void
}

type Frame = { op: number; payload: Buffer }

/** Reads the frames a client writes (masked, RFC 6455 §5.2): opcode and unmasked payload, in order. */
class ClientFrames {
  readonly frames: Frame[] = []
  #rest = Buffer.alloc(0)

  push(chunk: Buffer): void {
    const data = this.#rest.length ? Buffer.concat([this.#rest, chunk]) : chunk
    let i = 0
    while (i + 2 <= data.length) {
      let len = data[i + 1] & 0x7f
      let at = i + 2
      if (len === 126) {
        if (at + 2 > data.length) break
        len = data.readUInt16BE(at)
        at += 2
      } else if (len === 127) {
        if (at + 8 > data.length) break
        len = Number(data.readBigUInt64BE(at))
        at += 8
      }
      if (at + 4 + len > data.length) break
      const mask = data.subarray(at, at + 4)
      const payload = Buffer.from(data.subarray(at + 4, at + 4 + len))
      for (let k = 0; k < payload.length; k++) payload[k] ^= mask[k & 3]
      this.frames.push({ op: data[i] & 0x0f, payload })
      i = at + 4 + len
    }
    this.#rest = Buffer.from(data.subarray(i))
  }
}

/**
 * A raw server that reads every frame a client writes after the upgrade. On the client's close it
 * sends `pingsAfterClose` pings (which must not be answered: nothing may follow a close), then
 * answers the close and ends. `hold(socket)` may pause the socket first.
 */
async function closeRecorder(pingsAfterClose: number, hold?: (socket: import('node:net').Socket) => void) {
  const got = new ClientFrames()
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      hold?.(s)
      let answered = false
      s.on('data', (d: Buffer) => {
        got.push(d)
        if (answered || got.frames.at(-1)?.op !== 8) return
        answered = true
        for (let i = 0; i < pingsAfterClose; i++) s.write(Buffer.from([0x89, 0x00]))
        s.end(Buffer.from([0x88, 0x02, 0x03, 0xe8]))
      })
    }),
  )
  return { peer, frames: () => got.frames }
}

test.serial('a read on the JS thread that panics ends the connection with ERR_INTERNAL (not a watch nobody reads); the client reconnects', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, maxDelay: 10 })
  const r = new Recorder(client)
  await r.next('open')
  const first = once(client, 'message')
  client.send('first')
  await first
  await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
  native.testingPanicRead(client)
  client.send('lost')
  const err = await r.next('error')
  t.is(err.code, 'ERR_INTERNAL')
  t.like(await r.next('close'), { code: 1011, willReconnect: true })
  await r.next('open')
  const echoed = once(client, 'message')
  client.send('after')
  t.is(String((await echoed)[0]), 'after')
  t.is(client.metrics.connects, 2)
  await client.disconnect()
  const s = clientStats()
  t.is(s.jsReaders, 0)
  t.is(s.openConnections, 0)
  await quiescent()
})

for (const secure of [false, true]) {
  const title = secure
    ? 'a quiet wss: connection is read on the JS thread through its TLS session, and the watch goes with it'
    : 'a quiet plain connection is read on the JS thread, and the watch goes with it'
  test.serial(title, async (t) => {
    const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })), 0, serverTls(secure))
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure))
    await client.opened()
    // Not watched before the connection has carried a message: the driver reads the first one.
    t.is(clientStats().jsReaders, 0, 'no watch at open')
    const readsAtOpen = native.testingDirectReads()
    const first = once(client, 'message')
    client.send('first')
    await first
    t.is(native.testingDirectReads(), readsAtOpen, 'the first message was read by the driver')
    await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
    const before = native.testingDirectReads()
    const wakeups = workerWakeups()
    for (let i = 0; i < 200; i++) {
      const echoed = once(client, 'message')
      client.send(`m${i}`)
      t.is(String((await echoed)[0]), `m${i}`)
    }
    const direct = native.testingDirectReads() - before
    t.true(direct >= 190, `${direct} of 200 echoes were read on the JS thread`)
    if (wakeups !== null) {
      // The socket is registered with tokio for room to write only while the JS thread reads it:
      // arriving messages do not wake the worker (it woke once per message when it was not).
      const woke = workerWakeups()! - wakeups
      t.true(woke < 50, `the tokio worker woke ${woke} times during 200 echoes`)
    }
    t.is(client.metrics.messagesReceived, 201, 'counted like any other message')
    await client.disconnect()
    const s = clientStats()
    t.is(s.jsReaders, 0, 'no watch once disconnect() resolves')
    t.is(s.openConnections, 0)
    t.is(s.ioBuffers, 0)
    await quiescent()
    await peer.close()
  })
}

test.serial('a reset that follows data is seen while the JS thread reads: the data is delivered, then the connection ends', async (t) => {
  // The server writes a message and resets the connection in one step, so the JS thread's watch
  // finds both at once: libuv reports the reset as an error and stops the watch, and the read of
  // the data alone ends short of the error. No heartbeat or send() is left to find it later.
  const peer = await wsServer((socket) =>
    socket.on('message', (d) => {
      if (String(d) !== 'go') return void socket.send(d)
      socket.send('bye')
      ;(socket as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy()
    }),
  )
  t.teardown(() => peer.close())
  for (let round = 0; round < 5; round++) {
    const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0, maxRetries: 0 })
    await client.opened()
    const first = once(client, 'message')
    client.send('first')
    await first
    await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
    const got: string[] = []
    client.on('message', (m) => got.push(String(m)))
    const errors: string[] = []
    client.on('error', (err: Error & { code?: string }) => errors.push(err.code ?? '?'))
    const closed = new Promise<{ code: number }>((resolve) => client.once('close', resolve))
    client.send('go')
    const outcome = await Promise.race([closed, new Promise<null>((r) => setTimeout(r, 3_000, null))])
    t.is(outcome?.code, 1006, `round ${round}: the reset ended the connection`)
    t.deepEqual(got, ['bye'], 'what came before the reset was delivered')
    t.deepEqual(errors, ['ERR_SOCKET'], 'and the reset reported')
    await client.disconnect()
    t.like(clientStats(), { jsReaders: 0, openConnections: 0, ioBuffers: 0 })
  }
})

test.serial("the first message of a turn is written at once, the turn's others together after it", async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  const client = new ReconnectingWebSocket(peer.url)
  await client.opened()
  const writes = () => {
    const [atOnce, corked] = native.testingFastPathWrites()
    return { atOnce, corked }
  }
  // Requests and responses: each send is the first of its turn, written before the listener returns.
  let before = writes()
  for (let i = 0; i < 50; i++) {
    const echoed = once(client, 'message')
    client.send(`m${i}`)
    t.is(String((await echoed)[0]), `m${i}`)
  }
  t.deepEqual(writes(), { atOnce: before.atOnce + 50, corked: before.corked }, 'one write per request, at once')
  // A burst in one turn: the first at once, the other 99 corked until the turn's microtasks.
  const got: string[] = []
  client.on('message', (d: string | Buffer) => got.push(String(d)))
  before = writes()
  for (let i = 0; i < 100; i++) client.send(`b${i}`)
  t.deepEqual(writes(), { atOnce: before.atOnce + 1, corked: before.corked }, 'the first at once, the rest corked')
  await Promise.resolve()
  t.deepEqual(writes(), { atOnce: before.atOnce + 1, corked: before.corked + 1 }, 'the other 99 in one write')
  await until(() => got.length === 100, 'the burst echoed')
  t.deepEqual(got, Array.from({ length: 100 }, (_, i) => `b${i}`))
  await client.disconnect()
  await quiescent()
  await peer.close()
})

for (const secure of [false, true]) {
  test.serial(`messages keep their order across hand-overs: pings, streams of large messages, bursts${over(secure)}`, async (t) => {
    const big = Buffer.alloc(100 * 1024, 7)
    let pongs = 0
    let pings = 0
    const total = 600
    const peer = await wsServer(async (socket) => {
      socket.on('pong', () => pongs++)
      for (let i = 0; i < total; i++) {
        if (i % 50 === 10) {
          // A stream of large messages: read on the tokio side.
          for (let k = 0; k < 8; k++) socket.send(big)
        }
        if (i % 7 === 0) {
          socket.ping()
          pings++
        }
        socket.send(`m${i}`)
        // Quiet spells between small bursts: read on the JS thread again.
        if (i % 25 === 0) await new Promise((r) => setTimeout(r, 2))
      }
    }, 0, serverTls(secure))
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure))
    const texts: string[] = []
    let large = 0
    client.on('message', (d: string | Buffer, binary: boolean) => {
      if (binary) {
        t.is((d as Buffer).length, big.length)
        large++
      } else texts.push(String(d))
    })
    const before = native.testingDirectReads()
    await until(() => texts.length === total, () => `${total} messages (have ${texts.length})`, 20_000)
    t.deepEqual(texts, Array.from({ length: total }, (_, i) => `m${i}`))
    t.is(large, 8 * Math.ceil(total / 50))
    await until(() => pongs === pings, () => `a pong for each of ${pings} pings (have ${pongs})`)
    const direct = native.testingDirectReads() - before
    // Some on the JS thread; how many depends on how the bursts meet the socket (the pongs above prove
    // the hand-back: only the tokio side answers pings).
    t.true(direct > 0, `${direct} of ${client.metrics.messagesReceived} read on the JS thread`)
    await client.disconnect()
    t.is(clientStats().jsReaders, 0)
    await peer.close()
  })
}

test.serial('a burst on one connection reaches JS at most one bounded batch per turn of the event loop, whoever reads it', async (t) => {
  // 20,000 small text frames in one write. The JS thread reads the first of them, hands the rest
  // back; the I/O thread's batches follow. Turns are counted in the timers phase (a timer that
  // re-arms itself: once per iteration of the loop, as the listeners make every turn last over
  // its millisecond): an acknowledged batch used to run in the check phase of the turn whose poll
  // phase had delivered one, or after the JS thread's own reads (up to 12,404 in one turn).
  const COUNT = 20_000
  const frame = Buffer.from([0x81, 60, ...Buffer.from('x'.repeat(60))])
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      s.on('data', (d) => {
        // Our first message says the client listens.
        if (d.length > 0) s.write(Buffer.concat(Array.from({ length: COUNT }, () => frame)))
      })
      s.write(Buffer.from([0x81, 4, ...Buffer.from('warm')]))
    }),
  )
  t.teardown(() => peer.close())
  for (let round = 0; round < 2; round++) {
    const client = new ReconnectingWebSocket(peer.url, { pingInterval: 0 })
    await new Recorder(client, ['message']).next('message')
    const perTurn: number[] = [0]
    let timer: NodeJS.Timeout | undefined
    const tick = () => {
      perTurn.push(0)
      timer = setTimeout(tick, 0)
    }
    tick()
    let got = 0
    client.on('message', () => {
      got++
      perTurn[perTurn.length - 1]++
      const until = performance.now() + 0.01
      while (performance.now() < until);
    })
    client.send('go')
    await until(() => got === COUNT, () => `every message (${got})`, 20_000)
    clearTimeout(timer)
    const busiest = Math.max(...perTurn)
    t.true(busiest <= 4_607, `at most ${busiest} messages in one turn`)
    t.true(perTurn.filter((n) => n > 0).length >= 5, 'spread over turns')
    // (The raw server does not answer a close.)
    await client.terminate()
  }
  await quiescent()
})

test.serial('many sockets readable at once are read over several turns, each socket in order', async (t) => {
  // 40 watched sockets receive 250 messages each, all written before the client's loop polls
  // (the server is in this process: its writes go to the kernel synchronously). Reading all
  // 10,000 at once would hold the loop; the JS thread reads at most 4,096 per turn (plus the
  // last read's own batch), and the sockets it leaves wait, unwatched, for a later turn.
  const clients = 40
  const each = 250
  const servers: import('ws').WebSocket[] = []
  const peer = await wsServer((socket) => servers.push(socket))
  const list = Array.from({ length: clients }, () => new ReconnectingWebSocket(peer.url))
  await Promise.all(list.map((c) => c.opened()))
  // A connection is watched once it has carried a message.
  const firsts = list.map((c) => once(c, 'message'))
  await until(() => servers.length === clients, 'every connection accepted')
  for (const s of servers) s.send('first')
  await Promise.all(firsts)
  await until(() => clientStats().jsReaders === clients, `all ${clients} sockets watched by the JS thread`)
  // Turns counted by a setImmediate chain: one per iteration of the loop.
  let turn = 0
  let counting = true
  const tick = () => {
    turn++
    if (counting) setImmediate(tick)
  }
  setImmediate(tick)
  const perTurn = new Map<number, number>()
  const got = list.map(() => [] as string[])
  list.forEach((c, i) =>
    c.on('message', (d: string | Buffer) => {
      got[i].push(String(d))
      perTurn.set(turn, (perTurn.get(turn) ?? 0) + 1)
    }),
  )
  const [reads, waits] = [native.testingDirectReads(), native.testingDirectWaits()]
  for (const s of servers) for (let k = 0; k < each; k++) s.send(`${k}`)
  await until(() => got.every((g) => g.length === each), 'every message', 20_000)
  counting = false
  for (const g of got) t.deepEqual(g, Array.from({ length: each }, (_, k) => `${k}`))
  t.is(native.testingDirectReads() - reads, clients * each, 'all read on the JS thread')
  t.true(native.testingDirectWaits() > waits, 'some sockets waited for a later turn')
  const busiest = Math.max(...perTurn.values())
  t.true(busiest <= 4096 + each, `at most ${busiest} messages in one turn`)
  t.true(perTurn.size >= 3, `spread over ${perTurn.size} turns`)
  await Promise.all(list.map((c) => c.disconnect()))
  t.is(clientStats().jsReaders, 0)
  await quiescent()
  await peer.close()
})

test.serial('text keeps every character, in runs all ASCII and mixed, and alone', async (t) => {
  const ascii = Array.from({ length: 100 }, (_, i) => `{"n":${i},"s":"plain"}`)
  const mixed = Array.from({ length: 100 }, (_, i) => (i % 3 === 0 ? `é ${i} – ✓ 😀` : `ascii ${i}`))
  const lone = ['ÿ', 'x', '\u0000\u007f', 'ü']
  let server: import('ws').WebSocket | undefined
  const peer = await wsServer((socket) => (server = socket))
  const client = new ReconnectingWebSocket(peer.url)
  const got: string[] = []
  client.on('message', (d: string | Buffer) => got.push(d as string))
  await client.opened()
  for (const m of ascii) server!.send(m)
  for (const m of mixed) server!.send(m)
  await until(() => got.length === 200, 'the runs')
  for (const m of lone) {
    server!.send(m)
    await until(() => got[got.length - 1] === m, `lone ${JSON.stringify(m)}`)
  }
  t.deepEqual(got, [...ascii, ...mixed, ...lone])
  await client.disconnect()
  await peer.close()
})

for (const secure of [false, true]) {
  test.serial(`a JS thread too busy to read the pongs in its socket is not a dead peer: the connection and its messages stay${over(secure)}`, async (t) => {
    const pings: number[] = []
    const url = await serverChild(t, 'echo', { tls: secure ? { key: certs.key, cert: certs.cert } : undefined, onMessage: (m) => pings.push(m.ping) })
    const client = new ReconnectingWebSocket(url, clientOptions(secure, { pingInterval: 50, pongTimeout: 50 }))
    t.teardown(() => client.terminate())
    const r = new Recorder(client)
    await r.next('open')
    client.send('first')
    t.is(String(await r.next('message')), 'first')
    await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
    // Busy for many times pingInterval + pongTimeout: the pongs wait in the socket, unread.
    const from = Date.now()
    while (Date.now() - from < 1_000);
    const to = Date.now()
    client.send('after')
    t.is(String(await r.next('message')), 'after')
    t.true(pings.filter((p) => p > from && p < to).length >= 3, `pings answered while busy: ${pings.map((p) => p - from)}`)
    t.is(r.count('error'), 0, 'no pong timeout')
    t.is(r.count('close'), 0)
    t.is(client.metrics.connectionErrors, 0)
    // A peer that stops answering is still found out: ERR_PONG_TIMEOUT is the silent peer's test below.
    await client.disconnect()
    await quiescent()
  })

  test.serial(`the heartbeat counts what the JS thread read; a silent peer still times out and is closed${over(secure)}`, async (t) => {
    let serverSocket: import('ws').WebSocket | undefined
    const peer = await wsServer(
      (socket) => {
        serverSocket = socket
      },
      0,
      serverTls(secure),
    )
    // A server that never answers pings, but talks: its messages prove it alive.
    peer.wss.options.autoPong = false
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure, { pingInterval: 100, pongTimeout: 1_000, maxRetries: 0 }))
    // A failed assertion must not leave the client holding the worker open.
    t.teardown(() => client.terminate())
    const r = new Recorder(client)
    await r.next('open')
    serverSocket!.send('first')
    await r.next('message')
    await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
    const before = native.testingDirectReads()
    const closed = once(serverSocket!, 'close')
    // The ticks go on for longer than pingInterval + pongTimeout (1.1 s): were what the JS thread
    // read not counted, the pong timeout would come while they do. (The server is on this thread: a
    // pong timeout of a few scheduler slices, not one.)
    const ticking = performance.now()
    for (let i = 0; i < 40 || performance.now() - ticking < 1_500; i++) {
      serverSocket!.send(`tick ${i}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    t.is(r.count('close'), 0, 'no pong timeout while the peer talks')
    t.true(native.testingDirectReads() - before >= 30, 'the ticks were read on the JS thread')
    // Now silence: no frame answers the next ping.
    const close = await r.next('close', 5_000)
    const error = await r.next('error', 1_000)
    t.is(error.code, 'ERR_PONG_TIMEOUT')
    t.is(close.code, 1006)
    await closed
    t.is(clientStats().jsReaders, 0, 'the watch went with the connection')
    t.is(clientStats().openConnections, 0)
    await client.disconnect()
    await peer.close()
  })
}

test.serial('disconnect() leaves reading the close handshake to the driver: the watch goes at once, and nothing sent before the close is lost', async (t) => {
  // The peer answers "bye" and then the close: the answer arrives after disconnect() was called.
  const peer = await wsServer((socket) => socket.on('message', (d) => socket.send(`${d}-ack`)))
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  const r = new Recorder(client)
  await r.next('open')
  client.send('hello')
  await r.next('message')
  await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
  client.send('bye')
  const done = client.disconnect()
  t.is(clientStats().jsReaders, 0, 'the watch went with the call, not with the close handshake')
  await done
  t.deepEqual(
    r.log.filter((e) => e.name === 'message').map((e) => String(e.args[0])),
    ['hello-ack', 'bye-ack'],
  )
  t.is((await r.next('close')).code, 1000)

  // disconnect() from the open listener, whether or not the JS thread has taken the socket yet:
  // it does not watch it from then on (it would hand the peer's close over to the driver, one
  // more wake-up of the driver's thread before the close completes).
  const second = new ReconnectingWebSocket(peer.url)
  let watched = 0
  const closing = new Promise<void>((resolve) => {
    second.on('open', () => {
      let settled = false
      void second.disconnect().then(() => {
        settled = true
        resolve()
      })
      const look = () => {
        watched = Math.max(watched, clientStats().jsReaders)
        if (!settled) setImmediate(look)
      }
      look()
    })
  })
  await closing
  t.is(watched, 0, 'no JS-thread watch of a disconnecting client')
  t.is(clientStats().openConnections, 0)
  await quiescent()
})

test.serial('disconnect() writes the close on the JS thread, behind what was sent; nothing follows it', async (t) => {
  const { peer, frames } = await closeRecorder(20)
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  const r = new Recorder(client)
  await r.next('open')
  const before = native.testingClosesFromJs()
  client.send('one')
  client.send(Buffer.from('two'))
  const done = client.disconnect(4001, 'done')
  t.is(native.testingClosesFromJs() - before, 1, 'written by the call itself')
  await done
  t.is((await r.next('close')).code, 1000, "the server's answer")
  const wrote = frames().map((f) => `${f.op}:${f.op === 8 ? `${f.payload.readUInt16BE(0)} ${f.payload.subarray(2)}` : f.payload}`)
  t.deepEqual(wrote, ['1:one', '2:two', '8:4001 done'], 'the messages, the close, then nothing (no pong)')
  await quiescent()
})

test.serial("after the peer's close was answered, send() writes no message and disconnect() no second close", async (t) => {
  // The server closes first and holds the TCP connection; the client answers at once, and
  // disconnect() comes while it waits for the server to end it.
  const got = new ClientFrames()
  let answered: () => void
  const answer = new Promise<void>((resolve) => (answered = resolve))
  let server: import('node:net').Socket | undefined
  const peer = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      server = s
      s.on('data', (d: Buffer) => {
        got.push(d)
        if (got.frames.some((f) => f.op === 8)) answered()
      })
      s.write(Buffer.from([0x88, 0x02, 0x0f, 0xa0])) // close 4000
    }),
  )
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url, { closeTimeout: 5_000 })
  const r = new Recorder(client)
  // Open for JS too: a disconnect() while JS still sees the attempt connecting ends an attempt
  // that never opened for the user (close 1006), as ws's close() while connecting.
  await r.next('open')
  await answer
  // A message sent now must not follow the close either: it waits for the next connection.
  client.send('during')
  const before = native.testingClosesFromJs()
  const done = client.disconnect(4003, 'late')
  t.is(native.testingClosesFromJs(), before, 'the close already went')
  // A second close would be written by now (the JS thread writes at once, the driver before it
  // ends the connection): the server reads to the client's end of the stream.
  const read = once(server!, 'end')
  server!.end()
  t.deepEqual(await done, { discarded: 1 }, 'the message was queued, then discarded by disconnect()')
  await read
  t.is((await r.next('close')).code, 4000)
  t.deepEqual(
    got.frames.map((f) => `${f.op}:${f.op === 8 ? f.payload.readUInt16BE(0) : f.payload}`),
    ['8:4000'],
    'one close, the answer, and nothing after it',
  )
  await quiescent()
})

test.serial('a backed-up socket leaves the close to the driver: every message is written before it', async (t) => {
  let server: import('node:net').Socket | undefined
  const { peer, frames } = await closeRecorder(0, (s) => {
    server = s
    s.pause()
  })
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(peer.url)
  const r = new Recorder(client)
  await r.next('open')
  await until(() => server !== undefined, 'the server holds the socket')
  const pad = 'x'.repeat(1016)
  const total = 8_000
  // ~8 MiB: more than the socket buffers hold while the peer does not read.
  for (let i = 0; i < total; i++) client.send(String(i).padStart(8, '0') + pad)
  await until(() => client.bufferedAmount > 0, 'writes wait for room')
  const before = native.testingClosesFromJs()
  const done = client.disconnect({ code: 4002, reason: 'later', flush: true })
  t.is(native.testingClosesFromJs(), before, 'not from the JS thread: messages are still waiting')
  server!.resume()
  t.deepEqual(await done, { discarded: 0 })
  t.is((await r.next('close')).code, 1000, "the server's answer: a clean close")
  const wrote = frames()
  t.is(wrote.length, total + 1)
  t.true(
    wrote.slice(0, total).every((f, i) => f.op === 1 && Number(f.payload.subarray(0, 8).toString()) === i),
    'every message, in order',
  )
  t.is(wrote[total].op, 8)
  t.is(wrote[total].payload.readUInt16BE(0), 4002)
  await quiescent()
})

for (const secure of [false, true]) {
  test.serial(`frames corked in a turn count in bufferedAmount until the socket takes them${over(secure)}`, async (t) => {
    const got: string[] = []
    const peer = await wsServer((socket) => socket.on('message', (d) => got.push(d.toString())), 0, serverTls(secure))
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure))
    const r = new Recorder(client)
    await r.next('open')
    const payload = 'y'.repeat(100)
    client.send(payload)
    t.is(client.bufferedAmount, 0, 'the first of the turn is written at once')
    client.send(payload)
    client.send(payload)
    // Framed on the JS thread and held until the end of the turn: 100 bytes, 2 of header, 4 of mask.
    t.is(client.bufferedAmount, 2 * 106, 'the corked frames are not written yet')
    await until(() => client.bufferedAmount === 0, 'written once the turn ends')
    await until(() => got.length === 3, () => `the server has ${got.length} of 3`)
    await client.disconnect()
    await quiescent()
  })

  test.serial(`the part of a frame the socket did not take counts in bufferedAmount${over(secure)}`, async (t) => {
    let received = 0
    let server: import('node:net').Socket | undefined
    const peer = await wsServer((socket) => {
      socket.on('message', () => received++)
      server = (socket as unknown as { _socket: import('node:net').Socket })._socket
      server.pause()
    }, 0, serverTls(secure))
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure))
    const r = new Recorder(client)
    await r.next('open')
    await until(() => server !== undefined, 'the server holds the socket')
    // One 16 KiB message a turn, each written at once by the fast path, until the socket is full
    // and the writer holds the rest of one (`ioBuffers`): nothing was handed to the driver.
    const payload = Buffer.alloc(16 * 1024, 7)
    let sent = 0
    while (clientStats().ioBuffers === 0) {
      if (sent === 4_000) return t.fail('64 MiB sent and the socket never filled up')
      client.send(payload)
      sent++
      await new Promise((resolve) => setImmediate(resolve))
    }
    const frame = payload.length + 4 + 4
    const held = client.bufferedAmount
    t.true(held > 0 && held <= frame, `${held} bytes of the last frame wait (at most ${frame})`)
    server!.resume()
    await until(() => received === sent, () => `the server has ${received} of ${sent}`, 20_000)
    await until(() => client.bufferedAmount === 0 && clientStats().ioBuffers === 0, 'written, and the write buffer released')
    await client.disconnect()
    await quiescent()
  })
}

for (const secure of [false, true]) {
  test.serial(`a socket read on the JS thread that fills up is written to the end once the peer reads again${over(secure)}`, async (t) => {
    // While the JS thread reads, the socket has no registration with the tokio reactor; a write of
    // the driver's that finds it full must register it for room to write, or it would never finish.
    const got: number[] = []
    let server: import('node:net').Socket | undefined
    let serverWs: import('ws').WebSocket | undefined
    const peer = await wsServer((socket) => {
      serverWs = socket
      socket.on('message', (d) => got.push(Number(d.toString().slice(0, 8))))
      server = (socket as unknown as { _socket: import('node:net').Socket })._socket
    }, 0, serverTls(secure))
    t.teardown(() => peer.close())
    const client = new ReconnectingWebSocket(peer.url, clientOptions(secure))
    const r = new Recorder(client)
    await r.next('open')
    await until(() => serverWs !== undefined, 'accepted')
    serverWs!.send('first')
    t.is(await r.next('message'), 'first')
    await until(() => clientStats().jsReaders === 1, 'the socket is watched by the JS thread')
    server!.pause()
    const pad = 'x'.repeat(1016)
    const total = 20_000
    // ~20 MiB: far more than the socket buffers hold while the peer does not read.
    for (let i = 0; i < total; i++) client.send(String(i).padStart(8, '0') + pad)
    await until(() => client.bufferedAmount > 0, 'writes wait for room')
    // The JS thread still reads while the driver waits to write.
    serverWs!.send('still here')
    t.is(await r.next('message'), 'still here')
    server!.resume()
    await until(() => got.length === total, () => `all ${total} messages (have ${got.length})`, 20_000)
    t.true(got.every((n, i) => n === i), 'in order, none lost or doubled')
    await until(() => client.bufferedAmount === 0, 'nothing left to write')
    t.is(client.metrics.messagesSent, total)
    await client.disconnect()
    await quiescent()
  })
}
