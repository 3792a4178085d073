// The WHATWG API, and drop-in compatibility with reconnecting-websocket 4.4 / partysocket 1.3:
// code written for them (constructor shape, option names, event order, readyState, retryCount,
// queue) behaves the same on redial-ws, checked side by side with the real library where it runs.
import test from 'ava'
import { WebSocketServer } from 'ws'
import { getEventListeners, once } from 'node:events'
import fs from 'node:fs'
import type net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import { CloseEvent, ErrorEvent, Event, MessageEvent, ReconnectingWebSocket } from '../index.js'
import { Recorder, quiescent, refusedPort, serverChild, until, wsServer } from './helpers.js'

type Any = any

/** Records WHATWG-style deliveries: on* handlers and listeners, with readyState/retryCount at the time. */
function track(ws: Any, types = ['open', 'message', 'close', 'error']) {
  const seen: Array<{ via: string; type: string; readyState: number; retryCount: number; event: Any }> = []
  for (const type of types) {
    ws[`on${type}`] = (event: Any) => seen.push({ via: 'on', type, readyState: ws.readyState, retryCount: ws.retryCount, event })
    ws.addEventListener(type, (event: Any) =>
      seen.push({ via: 'listener', type, readyState: ws.readyState, retryCount: ws.retryCount, event }),
    )
  }
  return seen
}

test('readyState constants on the class and on instances; getters before the first socket', async (t) => {
  t.deepEqual([ReconnectingWebSocket.CONNECTING, ReconnectingWebSocket.OPEN, ReconnectingWebSocket.CLOSING, ReconnectingWebSocket.CLOSED], [0, 1, 2, 3])
  const port = await refusedPort()
  const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, { maxRetries: 0 })
  t.deepEqual([ws.CONNECTING, ws.OPEN, ws.CLOSING, ws.CLOSED], [0, 1, 2, 3])
  // As ws defines them: read-only and enumerable, on the class and its prototype.
  for (const target of [ReconnectingWebSocket, ReconnectingWebSocket.prototype]) {
    t.deepEqual(Object.getOwnPropertyDescriptor(target, 'OPEN'), { value: 1, writable: false, enumerable: true, configurable: false })
  }
  t.throws(() => {
    ws.OPEN = 5
  })
  t.is(ws.OPEN, 1)
  t.true(Object.getOwnPropertyDescriptor(ReconnectingWebSocket.prototype, 'readyState')?.enumerable)
  t.is(ws.readyState, ws.CONNECTING)
  t.is(ws.url, '', 'reconnecting-websocket has no url before its first socket')
  t.is(ws.protocol, '')
  t.is(ws.extensions, '')
  t.is(ws.bufferedAmount, 0)
  t.is(ws.retryCount, 0)
  const closed: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, [], { startClosed: true })
  t.is(closed.readyState, closed.CLOSED)
  await new Recorder(ws).next('giveup')
  t.is(ws.url, `ws://127.0.0.1:${port}/`)
})

test.serial('protocols as the second argument; on* and listeners receive browser-shaped events', async (t) => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  await once(wss, 'listening')
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate()
        wss.close(() => r())
      }),
  )
  wss.on('connection', (s) => {
    s.send('hi')
    s.on('message', () => s.close(4001, 'bye'))
  })
  const url = `ws://127.0.0.1:${(wss.address() as net.AddressInfo).port}/`
  const ws: Any = new ReconnectingWebSocket(url, 'foobar', { maxRetries: 0 })
  const seen = track(ws)
  await until(() => seen.some((e) => e.type === 'message'), 'message')
  t.is(ws.protocol, 'foobar')
  t.is(ws.url, url)
  const open = seen.filter((e) => e.type === 'open')
  t.deepEqual(open.map((e) => e.via), ['on', 'listener'], 'on<type> runs before the listeners')
  t.is(open[0].event.type, 'open')
  t.is(open[0].event.target, ws)
  t.is(open[0].readyState, ws.OPEN)
  const msg = seen.find((e) => e.type === 'message')!
  t.is(msg.event.data, 'hi')
  ws.send('close please')
  await until(() => seen.some((e) => e.type === 'close'), 'close')
  const close = seen.find((e) => e.type === 'close')!
  t.true(close.event instanceof CloseEvent)
  t.like(close.event, { type: 'close', code: 4001, reason: 'bye', wasClean: true })
  t.is(close.readyState, ws.CLOSED)
  await quiescent()
})

test.serial('addEventListener: handleEvent objects, { once: true }, removal; duplicates follow each mode', async (t) => {
  const peer = await wsServer((s) => {
    s.send('1')
    s.send('2')
  })
  t.teardown(() => peer.close())
  const native: Any = new ReconnectingWebSocket(peer.url)
  const rws: Any = new ReconnectingWebSocket(peer.url, undefined, {})
  const counts = { nativeDup: 0, rwsDup: 0, once: 0, handle: 0, removed: 0 }
  const dupN = () => counts.nativeDup++
  const dupR = () => counts.rwsDup++
  const removed = () => counts.removed++
  for (const ws of [native, rws]) ws.addEventListener('message', removed)
  native.addEventListener('message', dupN)
  native.addEventListener('message', dupN)
  rws.addEventListener('message', dupR)
  rws.addEventListener('message', dupR)
  native.addEventListener('message', () => counts.once++, { once: true })
  native.addEventListener('message', { handleEvent: (e: Any) => e.data && counts.handle++ })
  for (const ws of [native, rws]) ws.removeEventListener('message', removed)
  const got: string[] = []
  rws.addEventListener('message', (e: Any) => got.push(e.data))
  await until(() => got.length === 2 && counts.handle === 2, 'two messages each')
  t.deepEqual(counts, { nativeDup: 2, rwsDup: 4, once: 1, handle: 2, removed: 0 })
  native.close()
  rws.close()
  await quiescent()
})

test("addEventListener's signal: aborting removes the listener, an aborted one adds nothing; { once } takes any truthy value", (t) => {
  for (const ws of [
    new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true }),
    new ReconnectingWebSocket('ws://127.0.0.1:1/', undefined, { startClosed: true }),
  ] as Any[]) {
    const calls: string[] = []
    const ac = new AbortController()
    ws.addEventListener('message', () => calls.push('signal'), { signal: ac.signal })
    ws.addEventListener('message', () => calls.push('aborted'), { signal: AbortSignal.abort() })
    ws.addEventListener('message', () => calls.push('once'), { once: 1 })
    const kept = () => calls.push('kept')
    ws.addEventListener('message', kept, { signal: new AbortController().signal })
    const signal = new AbortController().signal
    const removed = () => calls.push('removed')
    ws.addEventListener('message', removed, { signal })
    ws.removeEventListener('message', removed)
    t.is(getEventListeners(signal, 'abort').length, 0, 'a listener removed leaves nothing on its signal')
    ws.dispatchEvent(new MessageEvent('x'))
    ac.abort()
    ws.dispatchEvent(new MessageEvent('y'))
    t.deepEqual(calls, ['signal', 'once', 'kept', 'kept'])
    t.throws(() => ws.addEventListener('message', kept, { signal: {} }), { code: 'ERR_INVALID_ARG_TYPE' } as Any)
  }
})

test('a listener removed by an earlier one during a dispatch is not called (DOM); in rws mode it is, as in reconnecting-websocket', (t) => {
  const got: Record<string, string[]> = {}
  for (const [mode, ws] of [
    ['native', new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true })],
    ['rws', new ReconnectingWebSocket('ws://127.0.0.1:1/', undefined, { startClosed: true })],
  ] as Array<[string, Any]>) {
    const calls: string[] = (got[mode] = [])
    const b = () => calls.push('b')
    ws.addEventListener('message', () => {
      calls.push('a')
      ws.removeEventListener('message', b)
      ws.addEventListener('message', () => calls.push('added'))
    })
    ws.addEventListener('message', b)
    ws.dispatchEvent(new MessageEvent('x'))
  }
  t.deepEqual(got, { native: ['a'], rws: ['a', 'b'] }, 'a listener added during the dispatch is not called by it either')
})

test.serial('event objects: currentTarget while the listeners run, stopImmediatePropagation() stops the later ones, DOM members', async (t) => {
  const peer = await wsServer((s) => {
    s.send('message')
    s.send('second', () => s.close(4000, 'bye'))
  })
  t.teardown(() => peer.close())
  for (const make of [
    () => new ReconnectingWebSocket(peer.url, { maxRetries: 0 }),
    () => new ReconnectingWebSocket(peer.url, [], { maxRetries: 0 }),
  ]) {
    const ws: Any = make()
    const seen: Any[] = []
    const events: Any[] = []
    ws.addEventListener('message', (e: Any) => {
      events.push(e)
      seen.push({ data: e.data, current: e.currentTarget === ws, target: e.target === ws, path: e.composedPath().length })
      t.is(typeof e.timeStamp, 'number')
      t.like(e, { bubbles: false, cancelable: false, composed: false })
      e.preventDefault()
      t.false(e.defaultPrevented, 'not cancelable')
      e.stopPropagation()
      if (e.data === 'second') e.stopImmediatePropagation()
    })
    ws.addEventListener('message', (e: Any) => seen.push({ later: e.data }))
    // on<type> runs first: stopping there keeps the listeners from running.
    ws.onclose = (e: Any) => e.stopImmediatePropagation()
    ws.addEventListener('close', () => seen.push('close listener'))
    await new Recorder(ws).next('giveup')
    t.deepEqual(seen, [
      { data: 'message', current: true, target: true, path: 1 },
      { later: 'message' },
      { data: 'second', current: true, target: true, path: 1 },
    ])
    t.true(events.every((e) => e.currentTarget === null), 'currentTarget is null once the dispatch is over')
  }
  await quiescent()
})

test("the event classes take the DOM's (type, init) form too; dispatchEvent sets a redial-ws event's target", (t) => {
  const ws: Any = new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true })
  t.like(new MessageEvent('message', { data: 'x' }), { type: 'message', data: 'x', target: null })
  t.like(new MessageEvent('hi', ws), { type: 'message', data: 'hi', target: ws }, "redial-ws' form")
  t.like(new CloseEvent('close', { code: 4000, reason: 'bye' }), { type: 'close', code: 4000, reason: 'bye', wasClean: false })
  t.like(new CloseEvent(), { type: 'close', code: 1000, reason: '', wasClean: true })
  t.like(new CloseEvent(4001, 'r', false, ws), { code: 4001, reason: 'r', wasClean: false, target: ws })
  const error = new Error('boom')
  t.like(new ErrorEvent('error', { message: 'm', error } as Any), { type: 'error', message: 'm', error })
  t.like(new ErrorEvent(error, ws), { type: 'error', message: 'boom', error, target: ws })
  const cancelable = new Event('open', { cancelable: true })
  let target
  ws.addEventListener('open', (e: Any) => {
    target = e.target
    e.preventDefault()
  })
  t.false(ws.dispatchEvent(cancelable), 'false once a listener prevented a cancelable event')
  t.true(cancelable.defaultPrevented)
  t.is(target, ws)
  t.true(ws.dispatchEvent(new Event('open')))
})

test.serial('rws mode: a failed attempt fires close (1000, clean) then error; retryCount as reconnecting-websocket counts', async (t) => {
  const port = await refusedPort()
  const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, {
    minReconnectionDelay: 10,
    maxReconnectionDelay: 100,
    reconnectionDelayGrowFactor: 2,
    maxRetries: 2,
  })
  const seen = track(ws, ['close', 'error'])
  const r = new Recorder(ws)
  await r.next('giveup')
  const listeners = seen.filter((e) => e.via === 'listener')
  t.deepEqual(listeners.map((e) => e.type), ['close', 'error', 'close', 'error', 'close', 'error'])
  t.deepEqual(listeners.map((e) => e.retryCount), [1, 1, 2, 2, 2, 2])
  t.true(listeners.every((e) => e.readyState === ws.CLOSING))
  t.like(listeners[0].event, { code: 1000, reason: '', wasClean: true })
  t.is(listeners[1].event.type, 'error')
  t.regex(listeners[1].event.message, /refused|ECONNREFUSED/i)
  // The client's error, with the system's as its cause (as ws's own code, which rws passes on).
  t.like(listeners[1].event.error, { code: 'ERR_CONNECT', cause: { code: 'ECONNREFUSED' } })
  t.deepEqual(
    r.log.filter((e) => e.name === 'reconnecting').map((e) => (e.args[0] as Any).delay),
    [10, 20],
    'immediate first attempt, then min × factor^(n−1), no jitter',
  )
  await quiescent()
})

test.serial('rws mode: delays grow by the factor and cap at the maximum', async (t) => {
  const port = await refusedPort()
  const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, [], {
    minReconnectionDelay: 5,
    maxReconnectionDelay: 40,
    reconnectionDelayGrowFactor: 2,
    maxRetries: 6,
  })
  const r = new Recorder(ws)
  await r.next('giveup')
  t.deepEqual(r.log.filter((e) => e.name === 'reconnecting').map((e) => (e.args[0] as Any).delay), [5, 10, 20, 40, 40, 40])
  await quiescent()
})

test.serial('rws mode: reconnect(code, reason) fires its close event at once and connects afresh', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const ws: Any = new ReconnectingWebSocket(peer.url, undefined, { minReconnectionDelay: 10 })
  const seen = track(ws, ['open', 'close'])
  // The native side's report of each close (the EventEmitter's event, which reconnecting-websocket lacks).
  const reported: number[] = []
  ws.on('close', (info: Any) => reported.push(info.code))
  await until(() => seen.some((e) => e.type === 'open'), 'open')
  ws.reconnect(4000, 'reconnect')
  const close = seen.find((e) => e.type === 'close' && e.via === 'listener')!
  t.truthy(close, 'fired synchronously inside reconnect()')
  t.like(close.event, { code: 4000, reason: 'reconnect', wasClean: true })
  t.is(close.readyState, ws.CLOSING)
  t.is(close.retryCount, 0)
  t.is(ws.readyState, ws.CLOSING)
  await until(() => seen.filter((e) => e.type === 'open').length === 4, 'second open (on + listener)')
  await until(() => reported.length === 1, "the native side's report of the old socket's close")
  t.is(seen.filter((e) => e.type === 'close').length, 2, 'the real close of the old socket is not fired again')
  t.is(peer.accepted, 2)
  t.is(peer.maxConcurrent, 1)
  ws.close(1000, 'close')
  t.is(ws.readyState, ws.CLOSING)
  await until(() => seen.filter((e) => e.type === 'close').length === 4, 'final close')
  const last = seen[seen.length - 1]
  t.like(last.event, { code: 1000, reason: 'close' })
  t.is(last.readyState, ws.CLOSED)
  await quiescent()
})

test.serial('rws mode: close() then reconnect() in the same turn fires the close inside reconnect(), as for an open socket; the real close is not fired again', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const ws: Any = new ReconnectingWebSocket(peer.url, undefined, { minReconnectionDelay: 10 })
  const seen = track(ws, ['open', 'close'])
  await until(() => seen.some((e) => e.type === 'open'), 'open')
  ws.close(4001, 'c')
  t.is(seen.filter((e) => e.type === 'close').length, 0, 'close() fires nothing by itself')
  ws.reconnect()
  const fired = seen.filter((e) => e.type === 'close' && e.via === 'listener')
  t.is(fired.length, 1, 'fired inside reconnect()')
  t.like(fired[0].event, { code: 1000, reason: '' })
  t.is(fired[0].readyState, ws.CLOSING)
  await until(() => seen.filter((e) => e.type === 'open').length === 4, 'the next open (on + listener)')
  await until(() => peer.accepted === 2 && peer.concurrent === 1, 'the first connection gone')
  t.deepEqual(
    seen.filter((e) => e.via === 'listener').map((e) => e.type),
    ['open', 'close', 'open'],
  )
  ws.close()
  await quiescent()
})

test.serial("partysocket's protocols provider may answer null or undefined: no subprotocol is offered", async (t) => {
  const offered: Array<string | undefined> = []
  const peer = await wsServer()
  t.teardown(() => peer.close())
  peer.wss.on('connection', (_s, req) => offered.push(req.headers['sec-websocket-protocol']))
  for (const provider of [() => null, async () => null, () => undefined]) {
    const ws: Any = new ReconnectingWebSocket(peer.url, provider, { maxRetries: 0 })
    t.deepEqual(await ws.opened(), { protocol: '', extensions: '' })
    await ws.disconnect()
  }
  t.deepEqual(offered, [undefined, undefined, undefined])
  await quiescent()
})

test.serial("rws mode: after reconnect() fired a connection's close, its listeners hear nothing more of it (its messages, its error)", async (t) => {
  // The first connection sends five messages at once; the listener reconnects on the first. The
  // other four come before the old socket's real close: reconnecting-websocket has removed its
  // listeners from that socket by then (they were delivered, readyState CLOSING, after the close).
  let connections = 0
  const peer = await wsServer((s) => {
    if (++connections === 1) for (let i = 1; i <= 5; i++) s.send(`old ${i}`)
    else s.send('new')
  })
  t.teardown(() => peer.close())
  const ws: Any = new ReconnectingWebSocket(peer.url, undefined, { minReconnectionDelay: 10 })
  const seen: string[] = []
  ws.onmessage = (e: Any) => {
    seen.push(`message ${e.data}`)
    if (e.data === 'old 1') ws.reconnect()
  }
  ws.onclose = (e: Any) => seen.push(`close ${e.code}`)
  ws.onerror = () => seen.push('error')
  ws.onopen = () => seen.push('open')
  await until(() => seen.includes('message new'), 'the next connection')
  await until(() => peer.accepted === 2 && peer.concurrent === 1, 'the old connection gone')
  t.deepEqual(seen, ['open', 'message old 1', 'close 1000', 'open', 'message new'])
  ws.close()
  await quiescent()
})

// reconnecting-websocket's reconnect() fires a close whenever it has a socket that is not CLOSED,
// and the socket it replaces is only made once the JS thread runs: two calls in a row, two closes.
test.serial('rws mode: two reconnect() calls fire two closes, also when the second cuts short an attempt JS has not seen', async (t) => {
  const mark = path.join(os.tmpdir(), `redial-hold-${process.pid}-${Date.now()}`)
  t.teardown(() => fs.rmSync(mark, { force: true }))
  // The server is in another process: this one blocks its JS thread while the native side closes
  // the first connection and starts the next attempt, which the server holds unanswered.
  const url = await serverChild(t, 'hold-second', { env: { MARK_FILE: mark } })
  const ws: Any = new ReconnectingWebSocket(url, undefined, { minReconnectionDelay: 10, maxReconnectionDelay: 20 })
  const seen = track(ws, ['open', 'close'])
  const reported: Array<[number, boolean]> = []
  ws.on('close', (info: Any) => reported.push([info.code, info.wasClean]))
  await until(() => seen.some((e) => e.type === 'open'), 'open')
  ws.reconnect()
  const blocked = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + 5_000
  while (!fs.existsSync(mark) && Date.now() < deadline) Atomics.wait(blocked, 0, 0, 2)
  t.true(fs.existsSync(mark), 'the second attempt reached the server while JS was blocked')
  ws.reconnect()
  await until(() => seen.filter((e) => e.type === 'open').length === 4, 'the third connection opens (on + listener)')
  await until(() => reported.length === 2, "the native side's reports of the first connection's and the second attempt's ends")
  const closes = seen.filter((e) => e.type === 'close' && e.via === 'listener')
  t.deepEqual(
    closes.map((e) => e.event.code),
    [1000, 1000],
    'one close per reconnect(): the second connection attempt ends without one of its own',
  )
  ws.close()
  await until(() => seen.filter((e) => e.type === 'close').length === 6, 'final close')
  await quiescent()
})

// A connection that opened before a second reconnect() closed it: its open was reported, so its
// close is too (reconnecting-websocket would not have made it; an open left unanswered is worse).
test.serial('rws mode: every open reported is answered by a close, when reconnect() ends a connection that opened after the last one', async (t) => {
  const url = await serverChild(t, 'echo')
  const ws: Any = new ReconnectingWebSocket(url, undefined, { minReconnectionDelay: 10, maxReconnectionDelay: 20 })
  const seen = track(ws, ['open', 'close'])
  const reported: number[] = []
  ws.on('close', (info: Any) => reported.push(info.code))
  await until(() => seen.some((e) => e.type === 'open'), 'open')
  ws.reconnect(4000)
  // JS blocked until the native side has the next connection open (its open event waits for JS).
  const blocked = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + 5_000
  while (ws.metrics.connects < 2 && Date.now() < deadline) Atomics.wait(blocked, 0, 0, 1)
  t.is(ws.metrics.connects, 2, 'the second connection opened while JS was blocked')
  ws.reconnect(4001)
  await until(() => seen.filter((e) => e.type === 'open' && e.via === 'listener').length === 3, 'the third connection opens')
  await until(() => reported.length === 2, "the native side's reports of the first two connections' closes")
  t.deepEqual(reported, [4000, 4001])
  const events = seen.filter((e) => e.via === 'listener').map((e) => (e.type === 'open' ? 'open' : `close ${e.event.code}`))
  t.deepEqual(events.slice(0, 3), ['open', 'close 4000', 'close 4001'], 'one close per reconnect(), at the call')
  for (let i = 1; i < events.length; i++) t.false(events[i] === 'open' && events[i - 1] === 'open', `two opens in a row: ${events.join(', ')}`)
  const listener = (type: string) => seen.filter((e) => e.type === type && e.via === 'listener').length
  ws.close()
  // Each of the three opens has its close, and the second reconnect() fired one more.
  await until(() => listener('close') === listener('open') + 1, 'the last connection closes')
  await quiescent()
})

test.serial('rws mode: queued messages go out before onopen, and maxEnqueuedMessages drops loudly', async (t) => {
  const got: string[] = []
  const peer = await wsServer((s) => s.on('message', (d) => got.push(d.toString())))
  t.teardown(() => peer.close())
  const ws: Any = new ReconnectingWebSocket(peer.url, undefined, { maxEnqueuedMessages: 3 })
  const drops: Any[] = []
  ws.on('drop', (e: Any) => drops.push(e))
  for (const m of ['message1', 'message2', 'message3', 'message4']) ws.send(m)
  t.deepEqual(drops, [{ reason: 'overflow', messages: ['message4'] }], 'the newest is dropped, as reconnecting-websocket does, but reported')
  ws.onopen = () => ws.send('ok')
  await until(() => got.length === 4, 'four messages')
  t.deepEqual(got, ['message1', 'message2', 'message3', 'ok'])
  ws.close()
  await quiescent()
})

test.serial('rws options: unknown names are errors, WebSocket is ignored, debug logs like RWS', async (t) => {
  t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', undefined, { minReconectionDelay: 5 } as Any), {
    code: 'ERR_UNKNOWN_OPTION',
  } as Any)
  t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', undefined, { minReconnectionDelay: 5, minDelay: 5 } as Any), {
    code: 'ERR_INVALID_ARG_VALUE',
  } as Any)
  const port = await refusedPort()
  const lines: unknown[][] = []
  const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, {
    WebSocket: class {},
    debug: true,
    debugLogger: (...a: unknown[]) => lines.push(a),
    maxRetries: 0,
  } as Any)
  await new Recorder(ws).next('giveup')
  t.deepEqual(lines[0], ['RWS>', 'connect', 0])
  await quiescent()
})

test.serial('an rws option whose value is undefined is not given: the client keeps redial-ws defaults, and it conflicts with nothing', async (t) => {
  const url = 'ws://127.0.0.1:1/'
  // In rws mode `url` is '' until the first socket, as reconnecting-websocket has it.
  t.is(new ReconnectingWebSocket(url, { startClosed: true, debug: false } as Any).url, '')
  for (const name of ['debug', 'debugLogger', 'maxEnqueuedMessages', 'connectionTimeout', 'minReconnectionDelay', 'WebSocket']) {
    t.is(new ReconnectingWebSocket(url, { startClosed: true, [name]: undefined } as Any).url, url, name)
    // The offline queue keeps its bound (their queue has none).
    const client = new ReconnectingWebSocket(url, { minDelay: 60_000, [name]: undefined } as Any)
    t.throws(() => {
      for (let i = 0; i <= 1000; i++) client.send('x')
    }, { code: 'ERR_QUEUE_FULL' } as Any, name)
    await client.disconnect()
  }
  const both = new ReconnectingWebSocket(url, { startClosed: true, maxReconnectionDelay: undefined, maxDelay: 10_000 } as Any)
  t.is(both.url, url)
  t.is(new ReconnectingWebSocket(url, { startClosed: true, maxReconnectionDelay: 10_000, maxDelay: undefined } as Any).url, '')
})

test("rws mode: a bad value of their option is reported under their name (it named ours), a wrong type as a type error", (t) => {
  const url = 'ws://127.0.0.1:1/'
  const cases: Array<[object, string, RegExp]> = [
    [{ minReconnectionDelay: 'x' }, 'ERR_INVALID_ARG_TYPE', /^The "minReconnectionDelay" option must be a number/],
    [{ maxReconnectionDelay: -1 }, 'ERR_OUT_OF_RANGE', /^The "maxReconnectionDelay" option/],
    [{ reconnectionDelayGrowFactor: '2' }, 'ERR_INVALID_ARG_TYPE', /^The "reconnectionDelayGrowFactor" option/],
    [{ connectionTimeout: 0 }, 'ERR_OUT_OF_RANGE', /^The "connectionTimeout" option/],
    [{ maxEnqueuedMessages: 'ten' }, 'ERR_INVALID_ARG_TYPE', /^The "maxEnqueuedMessages" option must be a number/],
    [{ maxEnqueuedMessages: -1 }, 'ERR_OUT_OF_RANGE', /maxEnqueuedMessages/],
    // Truthy but not a boolean: refused, as for every boolean option (it was taken for false).
    [{ debug: 'yes' }, 'ERR_INVALID_ARG_TYPE', /^The "debug" option must be a boolean/],
  ]
  for (const [options, code, message] of cases) {
    const err = t.throws(() => new ReconnectingWebSocket(url, [], { ...options, startClosed: true } as Any)) as Any
    t.is(err.code, code, JSON.stringify(options))
    t.regex(err.message, message, JSON.stringify(options))
    t.true(String(err.stack).startsWith(`${err.name}: ${err.message}`), err.stack)
  }
  // Our own names still name themselves.
  t.regex((t.throws(() => new ReconnectingWebSocket(url, [], { minDelay: 'x', startClosed: true } as Any)) as Any).message, /^The "minDelay" option/)
})

test.serial('partysocket options: shouldReconnectOnClose, drainQueuedMessages, the shouldReconnect getter', async (t) => {
  // The first connection drops (no close frame), the second is closed with 4000: the callback
  // gets the close event onclose gets (it was always told wasClean: true).
  let connections = 0
  const peer = await wsServer((s) => (++connections === 1 ? s.terminate() : s.close(4000, 'go')))
  t.teardown(() => peer.close())
  const decided: Array<[number, boolean]> = []
  const ws: Any = new ReconnectingWebSocket(peer.url, undefined, {
    minReconnectionDelay: 1,
    shouldReconnectOnClose: (e: Any) => {
      decided.push([e.code, e.wasClean])
      return !e.wasClean
    },
  } as Any)
  t.true(ws.shouldReconnect)
  const closes: Array<[number, boolean]> = []
  ws.addEventListener('close', (e: Any) => closes.push([e.code, e.wasClean]))
  const r = new Recorder(ws)
  t.is((await r.next('giveup')).reason, 'policy')
  t.false(ws.shouldReconnect)
  t.is(peer.accepted, 2)
  t.deepEqual(decided, [
    [1006, false],
    [4000, true],
  ])
  t.deepEqual(closes, decided)
  await quiescent()
  const port = await refusedPort()
  const queued: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, { minReconnectionDelay: 60_000 })
  queued.send('a')
  queued.send('b')
  t.deepEqual(queued.drainQueuedMessages(), ['a', 'b'])
  await queued.disconnect()
})

/** The first attempt failed: the client waits to retry (events.once would reject on its error). */
const waitingToRetry = (client: Any) => new Promise((resolve) => client.once('reconnecting', resolve))

test.serial('rws mode: close() keeps the queued messages for reconnect() or drainQueuedMessages(), as reconnecting-websocket and partysocket keep theirs', async (t) => {
  const port = await refusedPort()
  const make = () => {
    const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, { minReconnectionDelay: 60_000 })
    ws.addEventListener('error', () => {})
    return ws
  }
  // Queued during the backoff wait, then close(): handed back by drainQueuedMessages().
  const drained = make()
  await waitingToRetry(drained)
  drained.send('q1')
  drained.send('q2')
  drained.close()
  t.is(drained.readyState, drained.CLOSED)
  await quiescent()
  t.is(drained.bufferedAmount, 4)
  t.is(drained.metrics.queuedMessages, 2)
  t.deepEqual(drained.drainQueuedMessages(), ['q1', 'q2'])
  // The same, then reconnect() to a server that is up now: they go out first.
  const resent = make()
  await waitingToRetry(resent)
  resent.send('q1')
  resent.send('q2')
  resent.close()
  await quiescent()
  const received: string[] = []
  const peer = await wsServer((s) => s.on('message', (d) => received.push(String(d))), port)
  t.teardown(() => peer.close())
  resent.reconnect()
  await until(() => received.length === 2, 'both queued messages arrived')
  t.deepEqual(received, ['q1', 'q2'])
  await resent.disconnect()
  // disconnect() then close() in the same turn (a signal's abort, then a cleanup's close()), or the
  // other way round: the disconnect() discards, whenever the I/O thread completes it, and its
  // promise settles the message's callback first.
  const refused = `ws://127.0.0.1:${await refusedPort()}/`
  for (let round = 0; round < 20; round++) {
    const both: Any = new ReconnectingWebSocket(refused, undefined, { minReconnectionDelay: 60_000 })
    both.addEventListener('error', () => {})
    await waitingToRetry(both)
    let called: unknown = 'not called'
    both.send('q', (err: Any) => (called = err?.code))
    const done = round % 2 === 0 ? (both.disconnect() as Promise<{ discarded: number }>) : (both.close(), both.disconnect() as Promise<{ discarded: number }>)
    if (round % 2 === 0) both.close()
    t.deepEqual(await done, { discarded: 1 }, `round ${round}`)
    t.is(called, 'ERR_NOT_SENT')
    t.is(both.metrics.queuedMessages, 0)
  }
  // disconnect(); connect(); send(); close() in one turn: the disconnect() discards what was queued
  // before it, the close() keeps what was sent since (the first version discarded it too).
  const since: Any = new ReconnectingWebSocket(refused, undefined, { minReconnectionDelay: 60_000 })
  since.addEventListener('error', () => {})
  await waitingToRetry(since)
  since.send('a')
  const first = since.disconnect()
  since.connect()
  since.send('b')
  since.close()
  t.deepEqual(await first, { discarded: 1 })
  await quiescent()
  t.deepEqual(since.drainQueuedMessages(), ['b'])
  await since.disconnect()
  // disconnect() (and close() outside rws mode) still discards them, and says how many.
  const plain = new ReconnectingWebSocket(`ws://127.0.0.1:${await refusedPort()}/`, { minDelay: 60_000 })
  plain.on('error', () => {})
  await waitingToRetry(plain)
  plain.send('x')
  t.deepEqual(await plain.disconnect(), { discarded: 1 })
  await quiescent()
})

test.serial('after giving up, reconnect() starts again (reconnecting-websocket 4.4 would stay wedged)', async (t) => {
  const port = await refusedPort()
  const ws: Any = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, undefined, { maxRetries: 0 })
  const r = new Recorder(ws)
  await r.next('giveup')
  const peer = await wsServer(undefined, port)
  t.teardown(() => peer.close())
  ws.reconnect()
  await r.next('open')
  t.is(ws.readyState, ws.OPEN)
  ws.close()
  await quiescent()
})

test.serial('rws mode: a connection timeout closes with reason "timeout" and errors with "TIMEOUT"', async (t) => {
  const { rawServer } = await import('./helpers.js')
  const silent = await rawServer((s) => s.resume())
  t.teardown(() => silent.close())
  const ws: Any = new ReconnectingWebSocket(silent.url, [], { connectionTimeout: 100, maxRetries: 0 })
  const seen = track(ws, ['close', 'error'])
  await new Recorder(ws).next('giveup')
  const listeners = seen.filter((e) => e.via === 'listener')
  t.deepEqual(listeners.map((e) => e.type), ['close', 'error'])
  t.like(listeners[0].event, { code: 1000, reason: 'timeout', wasClean: true })
  t.is(listeners[1].event.message, 'TIMEOUT')
  await quiescent()
})

test.serial('rws mode: an open connection that ends on a heartbeat timeout fires its close alone (1006, not clean, CLOSED)', async (t) => {
  const { rawServer, acceptUpgrade } = await import('./helpers.js')
  // Completes the upgrade, then reads and never answers: the pings go unanswered.
  const deaf = await rawServer((s) => acceptUpgrade(s, (sock) => sock.resume()))
  t.teardown(() => deaf.close())
  const ws: Any = new ReconnectingWebSocket(deaf.url, [], { pingInterval: 50, pongTimeout: 50, maxRetries: 0 })
  const seen = track(ws, ['open', 'close', 'error'])
  const r = new Recorder(ws)
  t.is((await r.next('error')).code, 'ERR_PONG_TIMEOUT', 'the EventEmitter error stays')
  await r.next('giveup')
  const listeners = seen.filter((e) => e.via === 'listener')
  t.deepEqual(listeners.map((e) => e.type), ['open', 'close'], 'no WHATWG error: ws reports such an end as its close alone')
  t.like(listeners[1].event, { code: 1006, wasClean: false })
  t.is(listeners[1].readyState, ws.CLOSED)
  await quiescent()
})
