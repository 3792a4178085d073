// WebSocket: one connection, as ws's and the DOM's, for the libraries that take a WebSocket class
// and reconnect on their own (graphql-ws, stompjs, phoenix, partysocket...): they drop a socket
// once it has closed and make a new one, and read a failed connection from its events.
import { once } from 'node:events'
import { createRequire } from 'node:module'
import type net from 'node:net'
import zlib from 'node:zlib'
import test from 'ava'
import { WebSocket as WsWebSocket } from 'ws'

import { ReconnectingWebSocket, WebSocket, clientStats, createWebSocketStream } from '../index.js'
import { APPLICATION_DATA, tls13Server } from '../bench/lib/tls13.js'
import { makeCerts } from './certs.js'
import { Recorder, acceptUpgrade, clientFrames, rawServer, refusedPort, until, wsServer } from './helpers.js'

const native = createRequire(import.meta.url)('../lib/native.js') as { testingFailedWrites(): number }

type Any = any

/** What a WHATWG consumer sees of a socket that cannot connect: the events, readyState in each. */
async function failedConnection(make: (url: string) => { readyState: number; addEventListener: Function }) {
  const port = await refusedPort()
  const socket = make(`ws://127.0.0.1:${port}/`)
  const seen: string[] = []
  socket.addEventListener('open', () => seen.push('open'))
  socket.addEventListener('error', () => seen.push(`error ${socket.readyState}`))
  await new Promise<void>((resolve) =>
    socket.addEventListener('close', (e: { code: number; wasClean: boolean }) => {
      seen.push(`close ${e.code} ${e.wasClean} ${socket.readyState}`)
      resolve()
    }),
  )
  return seen
}

test.serial('a connection that fails: error, then close 1006 not clean, as ws reports it, with subprotocols second; one attempt, nothing left running', async (t) => {
  const base = clientStats()
  const theirs = await failedConnection((url) => new WsWebSocket(url, 'graphql-transport-ws'))
  for (const protocols of ['graphql-transport-ws', ['v12.stomp', 'v11.stomp'], undefined]) {
    let socket: WebSocket | undefined
    const ours = await failedConnection((url) => (socket = new WebSocket(url, protocols)))
    t.deepEqual(ours, theirs, JSON.stringify(protocols))
    t.is(socket!.state, 'closed')
    t.is(socket!.metrics.connectAttempts, 1)
  }
  t.deepEqual(theirs, ['error 2', 'close 1006 false 3'])
  // A ReconnectingWebSocket with subprotocols second takes reconnecting-websocket's order, which
  // a library reads as a clean close (and reconnects at once): the reason for this class.
  const rws = await failedConnection((url) => new ReconnectingWebSocket(url, 'p', { maxRetries: 0 }))
  t.deepEqual(rws, ['close 1000 true 2', 'error 2'])
  await until(() => clientStats().runningTasks === base.runningTasks && clientStats().pendingReconnects === base.pendingReconnects, 'nothing running')
})

test.serial('a close is final: the server closing, or dropping, the connection ends the socket; the subprotocol is negotiated', async (t) => {
  const peer = await wsServer()
  peer.wss.options.handleProtocols = (protocols: Set<string>) => (protocols.has('b') ? 'b' : false)
  t.teardown(() => peer.close())
  for (const [end, code, reason] of [
    [(s: WsWebSocket) => s.close(1012, 'restart'), 1012, 'restart'],
    [(s: WsWebSocket) => s.terminate(), 1006, ''],
  ] as const) {
    const accepted = peer.accepted
    const socket = new WebSocket(peer.url, ['a', 'b'])
    const rec = new Recorder(socket)
    const [server] = await Promise.all([peer.nextConnection(), rec.next('open')])
    t.is(socket.protocol, 'b')
    end(server)
    // ws's close event: the code and the reason's bytes.
    t.deepEqual(await rec.nextArgs('close'), [code, Buffer.from(reason)])
    // The giveup comes once the client has stopped: no second attempt can follow it.
    await rec.next('giveup')
    t.is(socket.readyState, WebSocket.CLOSED)
    t.is(socket.state, 'closed')
    t.is(peer.accepted, accepted + 1)
  }
})

test.serial("an open connection that ends without a close frame is reported by its close alone, as ws and the DOM report it; a broken protocol by error then close", async (t) => {
  // partysocket, for one, reads an `error` as the cause of a clean close and stops reconnecting.
  const endings = {
    dropped: (s: net.Socket) => s.destroy(),
    'broken protocol': (s: net.Socket) => s.write(Buffer.from([0x81 | 0x40, 0x00])),
  }
  for (const [how, end] of Object.entries(endings)) {
    let server: net.Socket | undefined
    const peer = await rawServer((socket) => acceptUpgrade(socket, (s) => (server = s)))
    t.teardown(() => peer.close())
    const seen: Record<string, string[]> = {}
    for (const [name, make] of [
      ['ws', (url: string) => new WsWebSocket(url)],
      ['redial-ws', (url: string) => new WebSocket(url)],
    ] as const) {
      const socket = make(peer.url) as unknown as { addEventListener: Function; readyState: number }
      const events: string[] = (seen[name] = [])
      socket.addEventListener('error', () => events.push('error'))
      const closed = new Promise<void>((resolve) =>
        socket.addEventListener('close', (e: { code: number; wasClean: boolean }) => {
          events.push(`close ${e.code} ${e.wasClean}`)
          resolve()
        }),
      )
      await new Promise((resolve) => socket.addEventListener('open', resolve))
      await until(() => server !== undefined, 'the server has the connection')
      end(server!)
      server = undefined
      await closed
    }
    if (how === 'dropped') {
      t.deepEqual(seen['redial-ws'], seen.ws)
      t.deepEqual(seen.ws, ['close 1006 false'])
    } else {
      // A connection the client failed, whose close frame the server did not answer: 1006, as in
      // ws (a ReconnectingWebSocket reports the code it sent, docs/migrating.md).
      t.deepEqual(seen['redial-ws'], seen.ws)
      t.deepEqual(seen.ws, ['error', 'close 1006 false'])
    }
  }
})

test.serial("a server's close frame, or a frame breaking the protocol, read before the server reset the connection is how it ended, as ws reports it: the socket's failure to write a pong or a reply after it is not", async (t) => {
  // The close (or violation) waits for JS to take what came before it; a write that failed
  // meanwhile ended the connection as ERR_SOCKET 1006, its code lost, and a ReconnectingWebSocket
  // retried a 1008 its default policy stops on (found by fuzzing against ws).
  const frames = {
    close: Buffer.concat([Buffer.from([0x89, 0x00, 0x81, 0x02]), Buffer.from('m0'), Buffer.from([0x88, 0x08, 0x03, 0xf0]), Buffer.from('policy')]),
    violation: Buffer.from([0x89, 0x00, 0x81, 0x02, 0x6d, 0x30, 0x83, 0x00]), // a ping, "m0", reserved opcode 3
  }
  for (const [what, bytes] of Object.entries(frames)) {
    // One write, then an RST: every byte reached the client first.
    const peer = await rawServer((socket) => acceptUpgrade(socket, (s) => {
      s.on('error', () => {})
      s.write(bytes, () => s.resetAndDestroy())
    }))
    t.teardown(() => peer.close())
    const seen: Record<string, string[]> = {}
    for (let run = 0; run < 3; run++) {
      for (const [name, make] of [
        ['ws', (url: string) => new WsWebSocket(url)],
        ['redial-ws', (url: string) => new WebSocket(url)],
      ] as const) {
        const socket = make(peer.url) as unknown as { on: Function; send: Function }
        const events: string[] = []
        socket.on('message', (data: unknown) => {
          events.push(`message ${data}`)
          socket.send('ack', () => {}) // a reply, as applications answer
        })
        socket.on('error', (e: { code: string }) => events.push(`error ${name === 'ws' ? 'any' : e.code}`))
        await new Promise<void>((resolve) =>
          socket.on('close', (code: number, reason: Buffer) => {
            events.push(`close ${code} ${reason}`)
            resolve()
          }),
        )
        ;(seen[name] ??= []).push(events.join(', '))
      }
    }
    const expected = what === 'close' ? 'message m0, close 1008 policy' : 'message m0, error ERR_PROTOCOL, close 1006 '
    t.deepEqual(seen['redial-ws'], [expected, expected, expected], what)
    t.deepEqual(seen.ws, seen['redial-ws'].map((e) => e.replace('ERR_PROTOCOL', 'any')), what)
    if (what === 'violation') {
      // No reply, a listener that holds the thread while the reset comes in: our close frame
      // (1002) is framed, and never goes. Its code was reported all the same.
      const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0 })
      client.on('message', () => {
        const until = Date.now() + 60
        while (Date.now() < until);
      })
      const r = new Recorder(client)
      t.is((await r.next('error')).code, 'ERR_PROTOCOL')
      t.like(await r.next('close'), { code: 1006, wasClean: false })
      await client.disconnect()
    }
    if (what === 'close') {
      // The default policy stops on 1008: one connection, no retry.
      const client = new ReconnectingWebSocket(peer.url, { minDelay: 1 })
      client.on('message', () => client.send('ack'))
      const r = new Recorder(client)
      t.like(await r.next('close'), { code: 1008, reason: 'policy', willReconnect: false })
      t.is((await r.next('giveup')).reason, 'policy')
      t.is(client.metrics.connectAttempts, 1)
    }
  }
  await until(() => clientStats().openConnections === 0 && clientStats().runningTasks === 0, 'nothing left running')
})

/** A frame as a server sends it (unmasked), of any length. */
function serverFrame(first: number, payload: Buffer): Buffer {
  const n = payload.length
  const head = n < 126 ? Buffer.from([first, n]) : n < 65536 ? Buffer.from([first, 126, n >> 8, n & 255]) : Buffer.alloc(10)
  if (n >= 65536) {
    head[0] = first
    head[1] = 127
    head.writeBigUInt64BE(BigInt(n), 2)
  }
  return Buffer.concat([head, payload])
}

/**
 * A server that answers the upgrade (with permessage-deflate if `deflate`; over TLS 1.3 if `certs`);
 * `reset()`, once the client is open, writes `bytes` and resets the connection, and resolves then.
 * Over TLS the records are sealed here (`tls13Server`), once the client has sent something, and
 * written as they are: the socket has them when the reset goes (a TLSSocket's write callback
 * comes before its records reach the socket).
 */
async function resettingServer(bytes: Buffer, { deflate = false, certs }: { deflate?: boolean; certs?: { key: string; cert: string } } = {}) {
  const accepted: Array<(reset: () => Promise<void>) => void> = []
  const peer = await rawServer((raw) => {
    raw.on('error', () => {})
    const secure = certs ? tls13Server(raw, certs) : null
    const socket = (secure?.socket ?? raw) as net.Socket
    socket.on('error', () => {})
    const write = (out: Buffer) => new Promise<void>((resolve) => raw.write(out, () => {
      raw.resetAndDestroy()
      raw.once('close', resolve)
    }))
    const reset = async () => {
      if (secure === null) return write(bytes)
      await once(socket, 'data')
      const seal = secure.takeOver()
      const records = []
      for (let at = 0; at < bytes.length; at += 16_000) records.push(seal(APPLICATION_DATA, bytes.subarray(at, at + 16_000)))
      return write(Buffer.concat(records))
    }
    acceptUpgrade(socket, () => accepted.shift()?.(reset), deflate ? 'Sec-WebSocket-Extensions: permessage-deflate\r\n' : '')
  })
  const url = certs ? `wss://localhost:${peer.port}/` : peer.url
  return { peer, url, accepted: () => new Promise<() => Promise<void>>((resolve) => accepted.push(resolve)) }
}

test.serial("what the server sent before it reset the connection is all read when a write fails first, as ws parses what it had read: more than one poll's batch, a compressed message still inflating, over TLS too; its close frame is how the connection ended", async (t) => {
  // A write (the ping's pong) failed once the reset was in: the connection ended there as
  // ERR_SOCKET 1006, with what the socket still held unread (the rest of the batch, the message
  // being inflated, the close frame) lost, and a 1008 retried.
  const ping = Buffer.from([0x89, 0x00])
  const close = serverFrame(0x88, Buffer.concat([Buffer.from([0x03, 0xf0]), Buffer.from('policy')]))
  const texts = Array.from({ length: 600 }, (_, i) => Buffer.from(`m${i}`))
  const small = texts.map((text) => serverFrame(0x81, text))
  const smallBytes = Buffer.concat(texts).length
  const compressed = zlib.deflateRawSync(Buffer.alloc(4 << 20, 'a'), { finishFlush: zlib.constants.Z_SYNC_FLUSH }).subarray(0, -4)
  const certs = makeCerts()
  const cases = [
    { name: '600 messages', bytes: Buffer.concat([ping, ...small, close]), expected: `messages 600 (${smallBytes} bytes), close 1008 policy` },
    { name: 'over TLS', bytes: Buffer.concat([ping, ...small, close]), certs, expected: `messages 600 (${smallBytes} bytes), close 1008 policy` },
    { name: 'a compressed 4 MiB message', bytes: Buffer.concat([ping, serverFrame(0xc2, compressed), close]), deflate: true, expected: 'messages 1 (4194304 bytes), close 1008 policy' },
    { name: 'no close frame', bytes: Buffer.concat([ping, ...small]), expected: `messages 600 (${smallBytes} bytes), error, close 1006` },
  ]
  for (const c of cases) {
    const server = await resettingServer(c.bytes, c)
    t.teardown(() => server.peer.close())
    for (const name of ['ws', 'redial-ws']) {
      const accepted = server.accepted()
      const socket: Any = name === 'ws'
        ? new WsWebSocket(server.url, { ca: certs.ca })
        : new WebSocket(server.url, { tls: { ca: certs.ca } })
      // Ours reads nothing until the reset is in: the pong is written after it, and fails.
      if (name === 'redial-ws') socket.pause()
      let [messages, bytes] = [0, 0]
      const events: string[] = []
      socket.on('message', (data: Buffer) => {
        messages++
        bytes += data.length
      })
      socket.on('error', (e: { code: string }) => events.push(name === 'ws' || e.code === 'ERR_SOCKET' ? 'error' : e.code))
      const closed = new Promise<void>((resolve) =>
        socket.on('close', (code: number, reason: Buffer) => {
          events.push(`close ${code} ${reason}`)
          resolve()
        }),
      )
      await once(socket, 'open')
      // Over TLS the server seals its records once it has heard from the client.
      if (c.certs) socket.send('go')
      await (await accepted)()
      if (name === 'redial-ws') socket.resume()
      await closed
      const seen = [`messages ${messages} (${bytes} bytes)`, ...events].join(', ').trim()
      // ws reports a reset without an error event (docs/migrating.md: ours is ERR_SOCKET).
      t.is(seen, name === 'ws' ? c.expected.replace('error, ', '') : c.expected, `${c.name}: ${name}`)
    }
  }
  await until(() => clientStats().openConnections === 0 && clientStats().runningTasks === 0 && clientStats().ioBuffers === 0, 'nothing left')
})

test.serial('after a write failed, what the socket still holds waits closeTimeout at most for a paused client to read it', async (t) => {
  const close = serverFrame(0x88, Buffer.concat([Buffer.from([0x03, 0xf0]), Buffer.from('policy')]))
  const server = await resettingServer(Buffer.concat([...Array.from({ length: 600 }, () => serverFrame(0x81, Buffer.from('m'))), close]))
  t.teardown(() => server.peer.close())
  for (const resumed of [true, false]) {
    const accepted = server.accepted()
    const socket = new WebSocket(server.url, { closeTimeout: 400 })
    const rec = new Recorder(socket)
    socket.pause()
    let messages = 0
    socket.on('message', () => messages++)
    await rec.next('open')
    await (await accepted)()
    // A send after the reset: its write fails before anything is read.
    const failed = native.testingFailedWrites()
    socket.send('late')
    await until(() => native.testingFailedWrites() > failed, 'the write failed')
    const started = Date.now()
    if (resumed) {
      socket.resume()
      t.deepEqual(await rec.nextArgs('close'), [1008, Buffer.from('policy')])
      t.is(messages, 600)
    } else {
      // Nothing is read: the write's failure ends the connection once closeTimeout has passed.
      t.is((await rec.next('error')).code, 'ERR_SOCKET')
      t.is(await rec.next('close'), 1006)
      t.true(Date.now() - started >= 300, 'waited for the client to read')
      t.is(messages, 0)
      t.is(socket.isPaused, true)
    }
  }
  await until(() => clientStats().openConnections === 0 && clientStats().runningTasks === 0 && clientStats().ioBuffers === 0, 'nothing left')
})

test.serial("what the open listeners send goes before the answer to a close frame read with the 101, as ws sends it: the server gets it all", async (t) => {
  // The close was answered as soon as it was read, before JS had run its open listeners: what they
  // sent was refused (ERR_NOT_SENT 'closed'), where ws writes it and a ws server delivers it.
  const close1000 = Buffer.from([0x88, 0x02, 0x03, 0xe8])
  const seen: Record<string, string[]> = {}
  for (const [name, make] of [
    ['ws', (url: string) => new WsWebSocket(url)],
    ['redial-ws', (url: string) => new WebSocket(url)],
    ['ReconnectingWebSocket', (url: string) => new ReconnectingWebSocket(url, { maxRetries: 0 })],
  ] as const) {
    // The server's close in the same write as its 101; then it reads what comes until our close.
    const got = new Promise<string[]>((resolve) => {
      const frames: string[] = []
      void rawServer((socket) => acceptUpgrade(socket, (s) => {
        clientFrames(s, (opcode, payload) => {
          frames.push(opcode === 8 ? `close ${payload.readUInt16BE(0)}` : `text ${payload.toString()}`)
          if (opcode === 8) {
            s.end()
            resolve(frames)
          }
        })
      }, '', close1000)).then((peer) => {
        t.teardown(() => peer.close())
        const socket = make(peer.url) as unknown as { on: Function; send: Function }
        const errors: string[] = (seen[name] = [])
        socket.on('error', (e: Error) => errors.push(e.message))
        socket.on('open', () => {
          for (const m of ['foo', 'bar', 'baz']) socket.send(m, (err?: Error) => err && errors.push(`${m}: ${err.message}`))
        })
      })
    })
    seen[`${name} server`] = await got
  }
  t.deepEqual(seen['ws server'], ['text foo', 'text bar', 'text baz', 'close 1000'])
  for (const name of ['redial-ws', 'ReconnectingWebSocket']) {
    t.deepEqual(seen[`${name} server`], seen['ws server'], name)
    t.deepEqual(seen[name], [], name)
  }
})

test.serial("a frame breaking the protocol in answer to the client's own close ends the connection as 1006, as ws reports it, not with a code no close frame carried", async (t) => {
  // Our close frame (1000) had gone: the client's failure code (1002) was never sent, yet was
  // reported, by a WebSocket too (docs/migrating.md: 1006 for a connection the client fails).
  const peer = await rawServer((socket) => acceptUpgrade(socket, (s) => {
    s.on('error', () => {})
    s.on('data', (d: Buffer) => {
      if ((d[0] & 0x0f) === 8) s.write(Buffer.from([0xa1, 0x01, 0x41])) // RSV2 set
    })
  }))
  t.teardown(() => peer.close())
  const seen: Record<string, string[]> = {}
  for (const [name, make] of [
    ['ws', (url: string) => new WsWebSocket(url)],
    ['redial-ws', (url: string) => new WebSocket(url)],
    ['ReconnectingWebSocket', (url: string) => new ReconnectingWebSocket(url)],
  ] as const) {
    const socket = make(peer.url) as unknown as { on: Function; close: Function }
    const events: string[] = (seen[name] = [])
    socket.on('open', () => socket.close(1000))
    socket.on('error', () => events.push('error'))
    await new Promise<void>((resolve) =>
      socket.on('close', (code: number | { code: number }) => {
        // A ReconnectingWebSocket's close is an object; a WebSocket's is ws's (code, reason).
        events.push(`close ${typeof code === 'number' ? code : code.code}`)
        resolve()
      }),
    )
  }
  t.deepEqual(seen.ws, ['error', 'close 1006'])
  t.deepEqual(seen['redial-ws'], seen.ws)
  t.deepEqual(seen.ReconnectingWebSocket, seen.ws)
})

test.serial('a library that makes a new socket after each close holds one connection at a time, and none once it stops', async (t) => {
  // As stompjs and graphql-ws do: onclose makes the next socket. The server drops each of the
  // first three connections; a ReconnectingWebSocket dropped by the library would reconnect
  // behind it and keep its connection (and its old handlers) alive.
  const peer = await wsServer((s, p) => {
    if (p.accepted <= 3) setImmediate(() => s.close(1012, 'restart'))
  })
  t.teardown(() => peer.close())
  const base = clientStats()
  let opens = 0
  let current: WebSocket | null = null
  let stopped = false
  const connect = () => {
    const socket = new WebSocket(peer.url, 'v12.stomp')
    current = socket
    socket.onopen = () => opens++
    socket.onclose = () => {
      if (!stopped) connect()
    }
  }
  connect()
  await until(() => opens === 4 && peer.concurrent === 1, () => `${opens} opens, ${peer.concurrent} connections`)
  t.is(peer.maxConcurrent, 1)
  t.is(peer.accepted, 4)
  stopped = true
  await current!.disconnect()
  await until(() => peer.concurrent === 0, 'the server sees the last connection closed')
  t.like(clientStats(), { openConnections: base.openConnections, pendingReconnects: base.pendingReconnects, runningTasks: base.runningTasks, pendingAttempts: base.pendingAttempts })
  t.is(peer.accepted, 4)
})

test('the options of reconnecting are refused, with their name; (url, options) is taken as ws takes it', (t) => {
  for (const name of ['minDelay', 'maxDelay', 'maxRetries', 'jitter', 'shouldReconnect', 'startClosed', 'minUptime', 'minReconnectionDelay', 'maxEnqueuedMessages']) {
    const err = t.throws(() => new WebSocket('ws://127.0.0.1:9/', [], { [name]: name === 'shouldReconnect' ? () => true : 1 } as never), { code: 'ERR_INVALID_ARG_VALUE' })
    t.true(err?.message.includes(`A WebSocket makes one connection and does not reconnect: "${name}" is an option of `), err?.message)
  }
  t.throws(() => new WebSocket('ws://127.0.0.1:9/', { connectionTimeout: 5 } as never), { code: 'ERR_INVALID_ARG_VALUE', message: `"connectionTimeout" is reconnecting-websocket's name: use "connectTimeout"` })
  // An empty list offers no subprotocol, as ws takes it: the option's list is used.
  t.is(new WebSocket('ws://127.0.0.1:9/', [], { protocols: ['x'], signal: AbortSignal.abort() } as never).state, 'closed')
  t.throws(() => new WebSocket('ws://127.0.0.1:9/', 'a', { protocols: ['b'] } as never), { code: 'ERR_INVALID_ARG_VALUE', message: /both as an argument and as an option/ })
  t.throws(() => new WebSocket('ws://127.0.0.1:9/', 'a', 5 as never), { code: 'ERR_INVALID_ARG_TYPE' })
  // An unknown option is refused as a ReconnectingWebSocket refuses it.
  t.throws(() => new WebSocket('ws://127.0.0.1:9/', { handshakeTimeout: 5 } as never), { code: 'ERR_UNKNOWN_OPTION', message: /connectTimeout/ })
  // An unknown one's error lists the options a WebSocket takes, not those of reconnecting.
  const unknown = t.throws(() => new WebSocket('ws://127.0.0.1:9/', { bogus: 1 } as never), { code: 'ERR_UNKNOWN_OPTION' })
  t.regex(unknown?.message ?? '', /known options: connectTimeout, /)
  t.notRegex(unknown?.message ?? '', /minDelay|maxRetries|startClosed/)
  const socket = new WebSocket('ws://127.0.0.1:9/', { protocols: ['x'], signal: AbortSignal.abort() })
  t.true(socket instanceof ReconnectingWebSocket)
  t.is(socket.state, 'closed')
})

test.serial('a signal already aborted: the socket never connects and reports its close (1006), as ws reports it; a ReconnectingWebSocket stays silent', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const socket = new WebSocket(peer.url, { signal: AbortSignal.abort() })
  t.is(socket.readyState, WebSocket.CLOSED)
  const rec = new Recorder(socket)
  const closes: Array<{ code: number; wasClean: boolean }> = []
  socket.onclose = (ev) => closes.push({ code: ev.code, wasClean: ev.wasClean })
  t.deepEqual(await rec.nextArgs('close'), [1006, Buffer.alloc(0)])
  t.deepEqual(closes, [{ code: 1006, wasClean: false }])
  const reconnecting = new ReconnectingWebSocket(peer.url, { signal: AbortSignal.abort() })
  const quiet = new Recorder(reconnecting)
  await new Promise((resolve) => setImmediate(resolve))
  t.deepEqual(rec.log.map((e) => e.name), ['close'])
  t.deepEqual(quiet.log, [])
  t.is(peer.accepted, 0)
  await Promise.all([socket.disconnect(), reconnecting.disconnect()])
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, runningTasks: 0 })
})

test.serial("a close for good hands back what the queue holds: a drop event, the callbacks told 'closed', bufferedAmount 0", async (t) => {
  // A send() before the open is queued for it (where ws throws); the connection fails: nothing
  // will send the message (no reconnect), so it is not kept for a connect() nobody makes.
  // The server takes the connection and answers the upgrade with a refusal once both are queued.
  const held: net.Socket[] = []
  const peer = await rawServer((s) => held.push(s))
  t.teardown(() => peer.close())
  const socket = new WebSocket(peer.url)
  const log = new Recorder(socket, ['error', 'close', 'drop'])
  const told: string[] = []
  socket.send('queued', (err) => told.push(err === null || err === undefined ? 'sent' : `${err.code}:${(err as { reason?: string }).reason}`))
  socket.send(Buffer.from('bytes'))
  t.is(socket.bufferedAmount, 11)
  await until(() => held.length === 1, 'the connection')
  held[0].end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n')
  const drop = await log.next('drop')
  t.is(drop.reason, 'closed')
  t.deepEqual(drop.messages.map(String), ['queued', 'bytes'])
  t.is(log.count('close'), 1)
  await until(() => told.length === 1, 'the callback')
  t.deepEqual(told, ['ERR_NOT_SENT:closed'])
  t.is(socket.bufferedAmount, 0)
  // A ReconnectingWebSocket that gives up keeps its queue for a connect(), as the README says.
  const kept = new ReconnectingWebSocket(peer.url, { maxRetries: 0 })
  const keptLog = new Recorder(kept, ['error', 'giveup', 'drop'])
  kept.send('kept')
  await until(() => held.length === 2, 'the connection')
  held[1].end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n')
  await keptLog.next('giveup')
  t.is(keptLog.count('drop'), 0)
  t.is(kept.bufferedAmount, 4)
  t.deepEqual(await kept.disconnect(), { discarded: 1 })
  t.like(clientStats(), { runningTasks: 0, openConnections: 0 })
})

test.serial("close() of a socket that is not open checks no arguments, as ws's: a bridge passing on 1005 or 1006 does not throw", async (t) => {
  const port = await refusedPort()
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`)
  socket.on('error', () => {})
  // Connecting: an invalid code closes it as close() would.
  t.notThrows(() => socket.close(999))
  t.is(socket.readyState, socket.CLOSING)
  const closed = new Promise<void>((resolve) => socket.addEventListener('close', () => resolve()))
  await closed
  t.notThrows(() => socket.close(1006, 'passed on'))
  t.notThrows(() => socket.close(5))
  // A ReconnectingWebSocket checks them in every state, as before.
  const rws = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { startClosed: true })
  t.throws(() => rws.close(1006), { code: 'ERR_INVALID_CLOSE_CODE' })
  // An open socket still refuses a code it cannot send.
  const peer = await wsServer(() => {})
  t.teardown(() => peer.close())
  const open = new WebSocket(peer.url)
  await new Promise((resolve) => open.addEventListener('open', resolve))
  t.throws(() => open.close(1006), { code: 'ERR_INVALID_CLOSE_CODE' })
  open.close(4000)
  await new Promise((resolve) => open.addEventListener('close', resolve))
})

test.serial('ping() and pong() in the error listener of a connection that fails do not throw (it reads CLOSING): their callbacks hear it', async (t) => {
  const port = await refusedPort()
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`)
  const told: string[] = []
  const thrown: unknown[] = []
  socket.addEventListener('error', () => {
    t.is(socket.readyState, socket.CLOSING)
    try {
      socket.ping(undefined, undefined, (err?: Error | null) => told.push(`ping ${(err as { reason?: string } | null)?.reason}`))
      socket.pong(undefined, undefined, (err?: Error | null) => told.push(`pong ${(err as { reason?: string } | null)?.reason}`))
    } catch (err) {
      thrown.push(err)
    }
  })
  await new Promise((resolve) => socket.addEventListener('close', resolve))
  await until(() => told.length === 2, 'the callbacks')
  t.deepEqual(thrown, [])
  t.deepEqual(told, ['ping closed', 'pong closed'])
})

test.serial("removeAllListeners() removes the on<type> handlers and addEventListener() listeners too, as ws's does", async (t) => {
  const peer = await wsServer((socket) => {
    socket.on('message', (data) => socket.send(data))
  })
  t.teardown(() => peer.close())
  const socket = new WebSocket(peer.url)
  const seen: string[] = []
  socket.onmessage = () => seen.push('onmessage')
  socket.addEventListener('message', () => seen.push('listener'))
  socket.onclose = () => seen.push('onclose')
  socket.on('message', () => seen.push('emitter'))
  await new Promise((resolve) => socket.addEventListener('open', resolve))
  socket.send('one')
  await until(() => seen.length === 3, 'the first echo')
  t.deepEqual(seen, ['emitter', 'onmessage', 'listener'])
  socket.removeAllListeners('message')
  t.is(socket.onmessage as unknown, null)
  t.not(socket.onclose, null)
  const echoed = new Promise((resolve) => socket.once('message', resolve))
  socket.send('two')
  await echoed
  t.deepEqual(seen, ['emitter', 'onmessage', 'listener'])
  socket.removeAllListeners()
  t.is(socket.onclose as unknown, null)
  await socket.disconnect()
  t.deepEqual(seen, ['emitter', 'onmessage', 'listener'])
})

test.serial("terminate() in the error listener (a ws habit) still gets the close; close() after reconnect() closes for good", async (t) => {
  const port = await refusedPort()
  const socket = new WebSocket(`ws://127.0.0.1:${port}/`)
  const seen: string[] = []
  socket.on('error', () => {
    seen.push('error')
    void socket.terminate()
  })
  socket.onclose = (e) => seen.push(`onclose ${e.code}`)
  await until(() => seen.length === 2, 'the close')
  t.deepEqual(seen, ['error', 'onclose 1006'])
  // close() while CLOSING (a reconnect() under way) is not ignored: the socket stays closed.
  const peer = await wsServer(() => {})
  t.teardown(() => peer.close())
  const open = new WebSocket(peer.url)
  const log = new Recorder(open, ['open', 'close'])
  await log.next('open')
  open.reconnect()
  t.is(open.readyState, open.CLOSING)
  open.close()
  t.is(await log.next('close'), 1000)
  t.is(open.state, 'closed')
  await new Promise(setImmediate)
  t.is(log.count('open'), 1)
})

test.serial("a stream's writes that failed with the close are the stream's to report: not handed back in a drop event too", async (t) => {
  const held: net.Socket[] = []
  const peer = await rawServer((s) => held.push(s))
  t.teardown(() => peer.close())
  const socket = new WebSocket(peer.url)
  socket.on('error', () => {})
  const drops: unknown[] = []
  socket.on('drop', (d) => drops.push(d))
  const duplex = createWebSocketStream(socket)
  const failed = new Promise<{ code?: string }>((resolve) => duplex.once('error', resolve))
  const written = new Promise<Error | null | undefined>((resolve) => duplex.write('by the stream', resolve))
  await until(() => held.length === 1, 'the connection')
  held[0].end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n')
  t.is((await failed).code, 'ERR_GAVE_UP')
  t.is(((await written) as { code?: string } | null | undefined)?.code, 'ERR_GAVE_UP')
  await new Promise(setImmediate)
  t.deepEqual(drops, [])
  t.is(socket.bufferedAmount, 0)
})

/**
 * A raw server that answers the upgrade, writes `trigger`, and keeps its side of the TCP
 * connection open until the test ends it (`allowHalfOpen`): the close handshake lasts until then.
 */
async function halfOpenPeer(trigger: Buffer, afterFirstFrame = false) {
  const { createServer } = await import('node:net')
  const sockets: net.Socket[] = []
  const ended: boolean[] = []
  const frames: number[] = []
  const texts: string[] = []
  const server = createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {})
    sockets.push(socket)
    const i = ended.push(false) - 1
    socket.once('end', () => (ended[i] = true))
    acceptUpgrade(socket, (s) => {
      s.on('data', (d: Buffer) => {
        frames.push(d[0] & 0x0f)
        // A short masked text frame alone in its read: its text, and the connection's number.
        if (d[0] === 0x81 && d.length === 6 + (d[1] & 0x7f)) texts.push(`${i}:${Buffer.from(d.subarray(6).map((b, j) => b ^ d[2 + (j % 4)])).toString()}`)
      })
      // Only the first connection is closed by the server: at once, or once the client has sent a frame.
      if (i === 0 && afterFirstFrame) s.once('data', () => s.write(trigger))
      else if (i === 0) s.write(trigger)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`
  return { url, sockets, ended, frames, texts, close: () => new Promise<void>((resolve) => server.close(() => resolve())) }
}

/** What a client shows while its close handshake waits for the server's TCP close. */
async function whileClosing(t: any, socket: any, peer: Awaited<ReturnType<typeof halfOpenPeer>>, failed: boolean) {
  const seen: string[] = []
  let closed = false
  socket.on('error', () => seen.push(`error ${socket.readyState}`))
  const close = new Promise<unknown[]>((resolve) => socket.on('close', (...args: unknown[]) => ((closed = true), resolve(args))))
  await new Promise((resolve) => socket.once('open', resolve))
  await until(() => socket.readyState !== 1, 'the client sees the close handshake begin')
  seen.push(`readyState ${socket.readyState}`)
  // Refused now, not at the close: the connection is closing.
  const sendErr = await new Promise<Error | null | undefined>((resolve) => socket.send('late', resolve))
  const pingErr = await new Promise<Error | null | undefined>((resolve) => socket.ping(undefined, undefined, resolve))
  seen.push(`send ${sendErr ? 'refused' : 'sent'}`, `ping ${pingErr ? 'refused' : 'sent'}`)
  // Our close frame went, then our side's end (ws's socket.end()), while the server holds its side.
  await until(() => peer.ended[0], 'the server reads the end of our side')
  seen.push(`server read ${peer.frames.filter((op) => op === 8).length} close frame, then the end`)
  t.false(closed, 'no close while the server keeps the TCP connection')
  if (failed) peer.sockets[0].destroy()
  else socket.terminate()
  const [code, reason] = await close
  seen.push(`close ${code} ${reason}`)
  peer.sockets[0].destroy()
  return seen
}

for (const [what, trigger, failed] of [
  ['the client fails the connection (a frame with RSV1)', Buffer.from([0xc1, 0x00]), true],
  ['the server sends its close frame and keeps the TCP connection', Buffer.from([0x88, 0x05, 0x0f, 0xa0, 0x62, 0x79, 0x65]), false],
] as const) {
  test.serial(`${what}: CLOSING at once, error reported then, send and ping refused then, our end sent; terminate() keeps the server's code; as ws`, async (t) => {
    const results: string[][] = []
    for (const make of [(url: string) => new WsWebSocket(url), (url: string) => new WebSocket(url, { closeTimeout: 30_000 })]) {
      const peer = await halfOpenPeer(trigger)
      const socket = make(peer.url)
      results.push(await whileClosing(t, socket, peer, failed))
      await peer.close()
    }
    t.deepEqual(results[1], results[0])
    t.deepEqual(
      results[0],
      failed
        ? ['error 2', 'readyState 2', 'send refused', 'ping refused', 'server read 1 close frame, then the end', 'close 1006 ']
        : ['readyState 2', 'send refused', 'ping refused', 'server read 1 close frame, then the end', 'close 4000 bye'],
    )
    t.is(clientStats().openConnections, 0)
  })
}

test.serial('a ReconnectingWebSocket whose server began the close reads CLOSING, and what send() is given then goes on the next connection', async (t) => {
  const peer = await halfOpenPeer(Buffer.from([0x88, 0x05, 0x0f, 0xa0, 0x62, 0x79, 0x65]))
  const client = new ReconnectingWebSocket(peer.url, { minDelay: 10, closeTimeout: 30_000 })
  const r = new Recorder(client)
  await r.next('open')
  await until(() => client.readyState === client.CLOSING, 'CLOSING once the server began the close')
  t.is(client.state, 'open')
  const written = new Promise<Error | null | undefined>((resolve) => client.send('kept', resolve))
  t.is(r.count('close'), 0)
  // The server ends the first connection; the message goes on the second.
  await until(() => peer.ended[0], 'our end of the first connection')
  peer.sockets[0].destroy()
  const close = await r.next('close')
  t.deepEqual([close.code, close.reason, close.wasClean], [4000, 'bye', true])
  await r.next('open')
  t.is(await written, null)
  await until(() => peer.texts.includes('1:kept'), 'the message on the second connection')
  t.deepEqual(peer.texts, ['1:kept'])
  t.is(r.count('error'), 0)
  // (The server holds its side open: a close handshake would wait closeTimeout for it.)
  await client.terminate()
  for (const s of peer.sockets) s.destroy()
  await peer.close()
  t.is(clientStats().openConnections, 0)
})

test.serial("a WebSocket's message that cannot be finished once its connection began closing is refused then: a last piece, a Blob read meanwhile, the pieces before them", async (t) => {
  const peer = await halfOpenPeer(Buffer.from([0x88, 0x05, 0x0f, 0xa0, 0x62, 0x79, 0x65]), true)
  const socket = new WebSocket(peer.url, { closeTimeout: 30_000 })
  const seen: string[] = []
  let closed = false
  socket.on('close', () => (closed = true))
  socket.on('drop', (e: { reason: string }) => seen.push(`drop ${e.reason}${closed ? ' after the close' : ''}`))
  const heard = (what: string) => (err?: Error | null) => seen.push(`${what} ${err ? (err as Error & { reason: string }).reason : 'sent'}${closed ? ' after the close' : ''}`)
  let release!: () => void
  const bytesLater = new Promise<void>((resolve) => (release = resolve))
  class SlowBlob extends Blob {
    override async arrayBuffer() {
      await bytesLater
      return super.arrayBuffer()
    }
  }
  await new Promise((resolve) => socket.once('open', resolve))
  socket.send('hello')
  socket.send('first piece', { fin: false }, heard('first piece'))
  await until(() => socket.readyState === socket.CLOSING, 'CLOSING once the server closes')
  await until(() => seen.length === 1, 'the message in pieces refused')
  socket.send('last piece', { fin: true }, heard('last piece'))
  await until(() => seen.length === 3, 'the last piece refused')
  // What send() would refuse anyway still throws.
  t.throws(() => socket.send('x', { fin: false, binray: true } as never), { code: 'ERR_UNKNOWN_OPTION' })
  t.throws(() => socket.send(new SlowBlob(['x']), { binray: true } as never), { code: 'ERR_UNKNOWN_OPTION' })
  t.throws(() => socket.send(42 as never), { code: 'ERR_INVALID_ARG_TYPE' })
  socket.send(new SlowBlob(['x']), heard('blob'))
  release()
  await until(() => seen.length === 5, 'the Blob refused once read')
  t.deepEqual(seen, ['first piece closed', 'drop closed', 'last piece closed', 'drop closed', 'blob closed'])
  t.false(closed)
  t.deepEqual(peer.texts, ['0:hello'], 'nothing of the message in pieces was sent')
  await socket.terminate()
  for (const s of peer.sockets) s.destroy()
  await peer.close()
})

test.serial("rws mode: a connection the client fails fires reconnecting-websocket's close (1000) and error at once, and not its own close later", async (t) => {
  const peer = await halfOpenPeer(Buffer.from([0xc1, 0x00]))
  const client = new ReconnectingWebSocket(peer.url, [], { closeTimeout: 30_000, minReconnectionDelay: 10, maxReconnectionDelay: 10 })
  const seen: string[] = []
  let opens = 0
  client.addEventListener('open', () => opens++)
  client.addEventListener('close', (e: { code: number; wasClean: boolean }) => seen.push(`close ${e.code} ${e.wasClean} ${client.readyState}`))
  client.addEventListener('error', () => seen.push(`error ${client.readyState}`))
  await until(() => seen.length === 2, 'the close and the error')
  t.deepEqual(seen, ['close 1000 true 2', 'error 2'])
  // The connection's real close, when the server ends it, is not fired again; the client reconnects.
  await until(() => peer.ended[0], 'our end of the first connection')
  peer.sockets[0].destroy()
  await until(() => opens === 2, 'the next connection')
  t.deepEqual(seen, ['close 1000 true 2', 'error 2'])
  // (The server holds its side open: a close handshake would wait closeTimeout for it.)
  await client.terminate()
  for (const s of peer.sockets) s.destroy()
  await peer.close()
  t.is(clientStats().openConnections, 0)
})
