// A client holds the event loop only while it is active (connecting, open, closing or waiting to
// reconnect) and ref'd, or while a disconnect() of it settles: an idle, unref'd or disconnected
// client never keeps a process alive. Each
// scenario runs in a child process with nothing else to do, so its exit time
// is the proof. Each server closes in a teardown: an assertion that fails throws, and a server
// left listening would keep this test process alive after its last test.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import test from 'ava'
import { WebSocket, WebSocketServer } from 'ws'

import { acceptUpgrade, rawServer, refusedPort, until, wsServer } from './helpers.js'

const child = fileURLToPath(new URL('./fixtures/child.cjs', import.meta.url))

interface Run {
  reports: any[]
  code: number | null
  /** ms from the last report to the exit. */
  exitAfterReport: number
  stderr: string
}

async function run(scenario: string, url: string, env: NodeJS.ProcessEnv = process.env): Promise<Run> {
  const proc = spawn(process.execPath, [child, scenario, url], { stdio: ['ignore', 'pipe', 'pipe'], env })
  const reports: any[] = []
  let lastReport = 0
  let stderr = ''
  let buf = ''
  proc.stdout.on('data', (d) => {
    buf += d
    let nl
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl)
      buf = buf.slice(nl + 1)
      lastReport = performance.now()
      // A line that is not a report fails the test through `reports`, never this process.
      try {
        reports.push(JSON.parse(line))
      } catch {
        reports.push({ notAReport: line })
      }
    }
  })
  proc.stderr.on('data', (d) => (stderr += d))
  const killer = setTimeout(() => proc.kill('SIGKILL'), 20_000)
  // 'close', not 'exit': at 'exit' the child's stdout may not all have been read yet (under load the
  // report could be missed).
  const [code, signal] = await once(proc, 'close')
  clearTimeout(killer)
  // A signal (a crash, or the killer) says so where the assertions print `stderr`.
  if (signal) stderr += `\n[killed by ${signal}]`
  return { reports, code, exitAfterReport: performance.now() - lastReport, stderr }
}

test('a call from JS that panics throws ERR_INTERNAL and ends the client as a panic of its task does; the process lives on', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const r = await run('panic-in-a-call', peer.url)
  t.is(r.code, 0, r.stderr)
  const [report] = r.reports
  t.like(report, { thrown: { code: 'ERR_INTERNAL' }, giveup: { reason: 'internal', lastError: 'ERR_INTERNAL' }, state: 'closed', idleThrown: 'ERR_INTERNAL' }, r.stderr)
  t.regex(report.thrown.message, /^internal error \(panic requested by a test\): the client was closed$/)
  t.deepEqual(report.events, ['error ERR_INTERNAL', 'close false'])
  t.like(report.stats, { openConnections: 0, runningTasks: 0, pendingReconnects: 0, pendingAttempts: 0, ioBuffers: 0 })
})

test('exits by itself right after disconnect() of an open client', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const r = await run('disconnect-after-open', peer.url)
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.is(r.reports[0].stats.runningTasks, 0)
  t.is(r.reports[0].stats.openConnections, 0)
  t.true(r.exitAfterReport < 5_000, `exited ${r.exitAfterReport.toFixed(0)} ms after disconnect()`)
})

test('exits by itself right after disconnect() during a 30 s backoff wait', async (t) => {
  // A server of our own that drops every connection: a port merely left closed could be taken by
  // another test file's server meanwhile (ava runs files concurrently), and the child would never back off.
  const peer = await rawServer((socket) => socket.destroy())
  t.teardown(() => peer.close())
  const r = await run('disconnect-during-backoff', peer.url)
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.is(r.reports[0].stats.pendingReconnects, 0)
  t.true(r.exitAfterReport < 5_000, `exited ${r.exitAfterReport.toFixed(0)} ms after disconnect()`)
})

test('an unref()ed client does not hold the process, even while open', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const r = await run('unref-while-open', peer.url)
  t.is(r.code, 0, r.stderr)
  t.true(r.reports[0]?.done)
  t.true(r.exitAfterReport < 5_000, `exited ${r.exitAfterReport.toFixed(0)} ms after unref()`)
})

test("an unref()ed client's disconnect() holds the process until it settles: code that awaits it runs (in a backoff wait, and open to a server that does not answer the close), then the process exits", async (t) => {
  // The process exited with the promise pending: nothing ran after the await.
  const silent = await rawServer((socket) => {
    socket.on('error', () => {})
    // Reads the close frame, never answers it.
    acceptUpgrade(socket, (s) => s.resume())
  })
  t.teardown(() => silent.close())
  for (const [when, url] of [['backoff', `ws://127.0.0.1:${await refusedPort()}/`], ['open', silent.url]]) {
    const r = await run('unref-then-disconnect', url, { ...process.env, SCENARIO_ARG: when })
    t.is(r.code, 0, r.stderr)
    t.like(r.reports[0], { done: true, state: 'closed', stats: { runningTasks: 0, openConnections: 0, pendingReconnects: 0 } }, when)
    t.true(r.exitAfterReport < 5_000, `exited ${r.exitAfterReport.toFixed(0)} ms after disconnect() settled`)
  }
})

test('an unref()ed client whose socket is read on the JS thread does not hold the process', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const r = await run('unref-while-read-on-js-thread', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, jsReaders: 1 })
  t.true(r.exitAfterReport < 5_000, `exited ${r.exitAfterReport.toFixed(0)} ms after unref()`)
})

test('messages sent in the turn of a process.exit() are written, as ws writes them at once (they waited for the turn to end)', async (t) => {
  const got: string[] = []
  const peer = await wsServer((socket) => socket.on('message', (d) => got.push(String(d))))
  t.teardown(() => peer.close())
  for (let round = 0; round < 3; round++) {
    got.length = 0
    const r = await run('send-then-exit', peer.url)
    t.is(r.code, 0, r.stderr)
    t.deepEqual(r.reports, [{ sent: 3 }])
    await until(() => peer.concurrent === 0, 'the server saw the connection end')
    t.deepEqual(got, ['last words 1', 'last words 2', 'last words 3'], `round ${round}`)
  }
})

test('process.exit() while a socket is read on the JS thread exits cleanly', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const r = await run('exit-while-read-on-js-thread', peer.url)
  t.is(r.code, 0, r.stderr)
  t.is(r.stderr, '')
  t.deepEqual(r.reports[0], { done: true, jsReaders: 1 })
})

test('worker threads read on their own event loop; terminating one mid-connection is clean', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const r = await run('workers-read-on-their-js-thread', peer.url)
  t.is(r.code, 0, r.stderr)
  t.is(r.stderr, '')
  t.deepEqual(r.reports[0], {
    done: true,
    terminated: [{ jsReaders: 1 }],
    echoed: ['ping', { jsReaders: 1 }],
    code: 0,
    jsReaders: 0,
  })
})

test('worker threads terminated while a server floods their clients, plain and compressed: every connection closes, every counter returns to zero', async (t) => {
  // The flood is bounded in count (100,000 messages a connection) and stops when the connection does.
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: true })
  await once(wss, 'listening')
  let opened = 0
  let open = 0
  const text = 'x'.repeat(100)
  const binary = Buffer.alloc(2000, 7) // past ws's 1 KiB threshold: compressed where negotiated
  wss.on('connection', (socket) => {
    opened++
    open++
    socket.on('close', () => open--)
    let sent = 0
    const pump = () => {
      for (let k = 0; k < 256 && socket.readyState === WebSocket.OPEN && socket.bufferedAmount < 1 << 20 && sent < 100_000; k++) {
        socket.send(sent++ % 2 ? text : binary)
      }
      if (socket.readyState === WebSocket.OPEN && sent < 100_000) setTimeout(pump, socket.bufferedAmount >= 1 << 20 ? 5 : 0)
    }
    pump()
  })
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())))
  const port = (wss.address() as AddressInfo).port
  const r = await run('workers-terminated-while-flooded', `ws://127.0.0.1:${port}/`)
  t.is(r.code, 0, r.stderr)
  t.is(r.stderr, '')
  t.is(opened, 6, 'two clients in each of three workers connected')
  t.like(r.reports[0], { done: true, codes: [1, 1, 1] })
  t.like(r.reports[0].before, { liveClients: 6, openConnections: 6 }, 'all six open while the floods ran')
  t.true(r.reports[0].before.deflateContexts > 0, 'permessage-deflate negotiated')
  t.like(r.reports[0].stats, {
    liveClients: 0,
    runningTasks: 0,
    openConnections: 0,
    ioBuffers: 0,
    deflateContexts: 0,
    jsReaders: 0,
    heartbeats: 0,
    recycledBytes: 0,
  })
  await until(() => open === 0, 'the server saw every connection close')
})

test('REDIAL_WS_DIRECT_READ=0: everything is read on the tokio side', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const on = await run('echo-count', peer.url)
  t.is(on.code, 0, on.stderr)
  t.true(on.reports[0].directReads >= 45, `${on.reports[0].directReads} of 50 echoes read on the JS thread`)
  const off = await run('echo-count', peer.url, { ...process.env, REDIAL_WS_DIRECT_READ: '0' })
  t.is(off.code, 0, off.stderr)
  t.is(off.reports[0].directReads, 0)
  t.is(off.reports[0].stats.jsReaders, 0)
})

test('REDIAL_WS_DIRECT_READ is per thread: a worker that sets it the other way changes nothing for the main thread, and the reverse', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d, binary) => socket.send(d, { binary })))
  t.teardown(() => peer.close())
  const off = await run('echo-count-beside-worker', peer.url, { ...process.env, REDIAL_WS_DIRECT_READ: '0' })
  t.is(off.code, 0, off.stderr)
  // A thread that does not read its sockets does not watch them either (it did, and gave each back).
  t.like(off.reports[0], { directReads: 0, takeOvers: 0 }, `the main thread, REDIAL_WS_DIRECT_READ=0, read and watched nothing itself: ${JSON.stringify(off.reports)}`)
  t.true(off.reports[0].workerDirectReads >= 45, `${off.reports[0].workerDirectReads} of 50 echoes read on the worker's thread`)
  const on = await run('echo-count-beside-worker', peer.url)
  t.is(on.code, 0, on.stderr)
  t.like(on.reports[0], { workerDirectReads: 0, workerTakeOvers: 0 }, `the worker, REDIAL_WS_DIRECT_READ=0, read and watched nothing itself: ${JSON.stringify(on.reports)}`)
  t.true(on.reports[0].directReads >= 45, `${on.reports[0].directReads} of 50 echoes read on the main thread`)
})

test('a throwing listener on messages read on the JS thread, alone and in a run, surfaces as an uncaught exception and delivery goes on', async (t) => {
  // Lines sent as one message come back as that many messages, written at once (corked around
  // ws's own cork of each frame), so that the client reads them as a run.
  const peer = await wsServer((socket) =>
    socket.on('message', (d) => {
      const tcp = (socket as any)._socket as import('node:net').Socket
      tcp.cork()
      for (const m of String(d).split('\n')) socket.send(m)
      tcp.uncork()
    }),
  )
  t.teardown(() => peer.close())
  const r = await run('throwing-listener-on-js-thread', peer.url)
  t.is(r.code, 0, r.stderr)
  const { onJsThread, ...report } = r.reports[0]
  t.deepEqual(report, {
    done: true,
    messages: ['lone', 'run 1', 'run 2', 'run 3', 'after'],
    thrown: ['bug at lone', 'bug at run 1'],
  })
  t.true(onJsThread >= 3, `${onJsThread} reads on the JS thread`)
})

test('an EventEmitter listener that throws does not keep the WHATWG handlers and listeners from the same event', async (t) => {
  const peer = await wsServer((socket) => {
    socket.send('m1')
    socket.send('m2', () => socket.terminate())
  })
  t.teardown(() => peer.close())
  const r = await run('throwing-emitter-listeners', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], {
    done: true,
    whatwg: [
      'onopen',
      'open listener',
      'onmessage m1',
      'message listener',
      'onmessage m2',
      'message listener',
      'onerror',
      'error listener',
      'onclose',
      'close listener 1006',
    ],
    thrown: ['open bug', 'message bug at m1', 'message bug at m2', 'error bug', 'close bug'],
  })
})

test('the functions an attempt asks may fail in any way: a coded error each time, no crash and no hang', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const r = await run('hostile-asked-functions', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], {
    done: true,
    results: {
      'provider rejects an object without prototype': 'ERR_PROVIDER fast',
      'provider rejects an Error whose message is an object': 'ERR_PROVIDER fast',
      'lookup answers at once with an object without prototype': 'ERR_CONNECT fast',
      'lookup answers later with an Error whose message is undefined': 'ERR_CONNECT fast',
      'a thenable policy that throws': 'maxRetries',
      'policy asked after disconnect()': 0,
      'client.url after a late answer': '/region-2',
      'scoped IPv6 then 127.0.0.1': 'open',
    },
    // Asked after the first two failures (the third is past maxRetries): each throw reported.
    thrown: ['then threw', 'then threw'],
    running: 0,
  })
})

test('opened() settles whatever open and giveup listeners registered before it throw', async (t) => {
  // The server closes the first connection: with maxRetries: 0 the client then gives up.
  const peer = await wsServer((socket) => setImmediate(() => socket.close(4000)))
  t.teardown(() => peer.close())
  const r = await run('throwing-open-and-giveup-listeners', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, opened: '', gaveUp: 'ERR_GAVE_UP', thrown: ['open bug', 'giveup bug'] })
})

test("a stream's waiting write and the ends of a stream and of messages() come whatever open, close and giveup listeners registered before them throw", async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (d) => socket.send(d.toString(), () => socket.close(4000))))
  t.teardown(() => peer.close())
  const r = await run('readers-after-throwing-listeners', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, writeError: null, iterated: ['w1'], streamEnded: true, read: ['w1'], refusedIterated: [], refusedError: 'ERR_GAVE_UP (ERR_HANDSHAKE)', thrown: ['close bug', 'giveup bug', 'giveup bug', 'open bug'] })
})

test('rws mode: an EventEmitter close listener that throws does not leave reconnect() suppressing the next close', async (t) => {
  const peer = await wsServer((socket, p) => {
    if (p.accepted === 2) socket.close(4002, 'second')
  })
  t.teardown(() => peer.close())
  const r = await run('rws-throwing-close-listener', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, whatwg: ['close 4000', 'close 4002'], thrown: ['close listener bug'] })
})

test('an active client holds the process through its backoff waits', async (t) => {
  // The first two connections are closed at once, so two backoff waits must hold the process; the
  // third stays open until the child's disconnect() (closed too, a 4th attempt could start before the
  // child's JS had handled its open).
  const peer = await wsServer((socket, p) => {
    if (p.accepted < 3) socket.close(1001)
  })
  t.teardown(() => peer.close())
  const r = await run('backoff-holds-the-loop', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, opens: 3 })
  t.is(peer.accepted, 3)
})

test('a client collected in its backoff wait warns before the process, left with nothing to do, exits', async (t) => {
  const peer = await wsServer((socket) => socket.close(1012))
  t.teardown(() => peer.close())
  const r = await run('collected-in-backoff-warns', peer.url)
  t.is(r.code, 0, r.stderr)
  t.like(r.reports[0], { warning: 'REDIAL_WS_NOT_DISCONNECTED', stats: { liveClients: 0, collectedWithoutDisconnect: 1 } })
  t.is(r.reports.length, 1)
  t.is(peer.accepted, 1)
})

test('a drop listener that throws does not make send() throw: the message was queued; the error surfaces as an uncaught exception', async (t) => {
  const r = await run('throwing-drop-listener', `ws://127.0.0.1:${await refusedPort()}`)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, sends: ['ok', 'ok'], queued: ['two'], thrown: ['drop bug: one'] })
})

test('a throwing listener surfaces as an uncaught exception and delivery goes on', async (t) => {
  const peer = await wsServer((socket) => {
    socket.send('one')
    socket.send('two')
  })
  t.teardown(() => peer.close())
  const r = await run('throwing-listener', peer.url)
  t.is(r.code, 0, r.stderr)
  t.deepEqual(r.reports[0], { done: true, messages: ['one', 'two'], thrown: ['listener bug'] })
})
