// A connection keeps its client alive (like a socket); an abandoned client
// without a connection is collected and its reconnect cancelled; no growth.
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import test from 'ava'

import { ReconnectingWebSocket, clientStats } from '../index.js'
import { collectUntil, forceGc, quiescent, refusedPort, until, wsServer } from './helpers.js'

test.serial('abandoned connected clients keep working across GCs, then are collected in backoff', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const baseline = clientStats()
  const received = { count: 0 }
  const warnings: Error[] = []
  const onWarning = (w: Error) => warnings.push(w)
  process.on('warning', onWarning)

  // The clients are created in a function and nothing but their connections refers to them.
  ;(() => {
    for (let i = 0; i < 100; i++) {
      new ReconnectingWebSocket(peer.url, { minDelay: 5_000, maxDelay: 5_000, jitter: 'none' }).on(
        'message',
        () => received.count++,
      )
    }
  })()
  await until(() => peer.concurrent === 100 && clientStats().openConnections === baseline.openConnections + 100, '100 open')

  for (let round = 1; round <= 3; round++) {
    for (let i = 0; i < 5; i++) {
      forceGc()
      await new Promise((r) => setImmediate(r))
    }
    for (const socket of peer.sockets) socket.send(`round ${round}`)
    await until(() => received.count === 100 * round, () => `round ${round}: ${received.count} messages`)
  }
  t.is(clientStats().liveClients, baseline.liveClients + 100, 'connected clients were not collected')

  // The server drops them: they enter a 5 s backoff wait, where nothing but the app could keep them
  // (and within which a slow machine collects them).
  const acceptedBefore = peer.accepted
  for (const socket of peer.sockets) socket.close(1012, 'restart')
  await until(() => clientStats().pendingReconnects === baseline.pendingReconnects + 100, 'all 100 in backoff')
  const allWaiting = performance.now()
  await collectUntil(() => clientStats().liveClients === baseline.liveClients, 'the 100 abandoned clients')
  const after = clientStats()
  t.is(after.collectedWithoutDisconnect, baseline.collectedWithoutDisconnect + 100)
  // Their drivers were aborted as they were collected; tokio drops an aborted task (and its
  // timer) on its worker thread, so the count is awaited rather than read in the same instant.
  await quiescent()
  t.is(clientStats().pendingReconnects, baseline.pendingReconnects)
  // Past the 5 s wait (each began before allWaiting): none of them reconnected (a timer that
  // survived would have fired).
  await delay(Math.max(0, allWaiting + 5_500 - performance.now()))
  t.is(peer.accepted, acceptedBefore, 'no reconnect attempt from a collected client')
  process.off('warning', onWarning)
  const ours = warnings.filter((w) => (w as Error & { code?: string }).code === 'REDIAL_WS_NOT_DISCONNECTED')
  t.is(ours.length, 1, 'one warning names the URL (duplicates are not repeated)')
  t.regex(ours[0].message, new RegExp(peer.url.replace(/[/.]/g, '\\$&')))
  // Which of them: each had opened one connection, in one attempt.
  t.regex((ours[0] as Error & { detail?: string }).detail ?? '', /^It had opened 1 connection\(s\) in 1 attempt\(s\)\. One warning is shown per URL/)
  t.regex((ours[0] as Error & { detail?: string }).detail ?? '', /Run with --trace-warnings to see where it was created\.$/)
})

test.serial('under --trace-warnings the warning of a client collected without disconnect() names where it was made', async (t) => {
  const port = await refusedPort()
  const warnings: Array<Error & { detail?: string }> = []
  const onWarning = (w: Error) => warnings.push(w)
  process.on('warning', onWarning)
  // What --trace-warnings sets (Node lets a program set it too; @types/node does not declare it).
  const proc = process as NodeJS.Process & { traceProcessWarnings: boolean }
  const tracing = proc.traceProcessWarnings
  proc.traceProcessWarnings = true
  t.teardown(() => {
    proc.traceProcessWarnings = tracing
    process.off('warning', onWarning)
  })
  const baseline = clientStats()
  // Made in a named function and dropped: its first attempt is refused, and it waits a minute to retry.
  function makeTheForgottenClient() {
    new ReconnectingWebSocket(`ws://127.0.0.1:${port}/forgotten`, { minDelay: 60_000, maxDelay: 60_000 })
  }
  makeTheForgottenClient()
  await until(() => clientStats().pendingReconnects === baseline.pendingReconnects + 1, 'the client waits to retry')
  await collectUntil(() => clientStats().liveClients === baseline.liveClients, 'the forgotten client')
  await until(() => warnings.some((w) => w.message.includes('/forgotten')), 'its warning')
  const detail = warnings.find((w) => w.message.includes('/forgotten'))?.detail ?? ''
  t.regex(detail, /^It had opened 0 connection\(s\) in 1 attempt\(s\)\./)
  // The stack starts at the application's call: the constructor's own frames are left out.
  t.regex(detail, /\nIt was created here:\n {4}at makeTheForgottenClient \(.*lifetime\.spec\.ts:\d+:\d+\)\n/)
  t.notRegex(detail, /lib[\\/]client\.js/)
  // A diagnostic never fails the constructor: not with an Error.prepareStackTrace that makes no
  // string, nor with one that throws.
  const prepare = Error.prepareStackTrace
  t.teardown(() => void (Error.prepareStackTrace = prepare))
  for (const made of [() => ({}), () => { throw new Error('no stacks here') }]) {
    Error.prepareStackTrace = made
    t.notThrows(() => new ReconnectingWebSocket(`ws://127.0.0.1:${port}/`, { startClosed: true }))
  }
})

test.serial('a client awaited inside a function survives GCs while connecting and open', async (t) => {
  const peer = await wsServer((socket) => setTimeout(() => socket.send('late hello'), 100))
  t.teardown(() => peer.close())
  const gcs = setInterval(forceGc, 5)
  const message = await (async () => {
    const client = new ReconnectingWebSocket(peer.url)
    const [data] = await once(client, 'message')
    await client.disconnect()
    return data
  })()
  clearInterval(gcs)
  t.is(message, 'late hello')
  await quiescent()
})

for (const [how, again] of [
  ['reconnect()', (c: ReconnectingWebSocket) => c.reconnect()],
  ['disconnect() then connect()', (c: ReconnectingWebSocket) => (c.disconnect(), c.connect())],
  ['disconnect({ flush: true }) then connect()', (c: ReconnectingWebSocket) => (c.disconnect({ flush: true }), c.connect())],
] as const) {
  test.serial(`a connection started by ${how} keeps its abandoned client alive across GCs`, async (t) => {
    const peer = await wsServer()
    t.teardown(() => peer.close())
    const baseline = clientStats()
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    t.teardown(() => process.off('warning', onWarning))
    const seen = { opens: 0, messages: 0 }
    // Nothing but its connection refers to the client (the WeakRef does not keep it).
    const ref = (() => {
      const client = new ReconnectingWebSocket(peer.url, { minDelay: 60_000 })
      client.on('open', () => {
        if (++seen.opens === 1) again(client)
      })
      client.on('message', () => seen.messages++)
      return new WeakRef(client)
    })()
    await until(() => seen.opens === 2 && peer.concurrent === 1, () => `${seen.opens} opens, ${peer.concurrent} connections`)
    for (let i = 0; i < 5; i++) {
      forceGc()
      await new Promise((r) => setImmediate(r))
    }
    // Still there, and still working on its second connection.
    for (const socket of peer.sockets) socket.send('after the GCs')
    await until(() => seen.messages === 1 || ref.deref() === undefined, () => `${seen.messages} messages`)
    t.is(seen.messages, 1)
    t.not(ref.deref(), undefined, 'not collected')
    t.is(clientStats().collectedWithoutDisconnect, baseline.collectedWithoutDisconnect)
    t.deepEqual(warnings.map((w) => (w as Error & { code?: string }).code), [])
    await ref.deref()?.disconnect()
    await quiescent()
  })
}

test.serial('thousands of connect/disconnect cycles stay within a fixed heap and RSS bound', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const baseline = clientStats()
  const client = new ReconnectingWebSocket(peer.url, { startClosed: true })
  const cycle = async () => {
    const opened = once(client, 'open')
    client.connect()
    await opened
    await client.disconnect()
  }
  const fresh = async () => {
    const c = new ReconnectingWebSocket(peer.url)
    await once(c, 'open')
    await c.disconnect()
  }
  const measure = async () => {
    await collectUntil(() => clientStats().liveClients <= baseline.liveClients + 1, 'disconnected clients')
    forceGc()
    return { heap: process.memoryUsage().heapUsed, rss: process.memoryUsage().rss }
  }
  for (let i = 0; i < 500; i++) await (i % 2 ? cycle() : fresh())
  const warm = await measure()
  for (let i = 0; i < 2_500; i++) await (i % 2 ? cycle() : fresh())
  const end = await measure()
  const heapGrowth = end.heap - warm.heap
  const rssGrowth = end.rss - warm.rss
  t.log(`heap growth ${(heapGrowth / 1024).toFixed(0)} KiB, RSS growth ${(rssGrowth / 1024).toFixed(0)} KiB over 2,500 cycles`)
  t.true(heapGrowth < 1024 * 1024, `heap grew ${heapGrowth} bytes`)
  t.true(rssGrowth < 16 * 1024 * 1024, `RSS grew ${rssGrowth} bytes`)
  t.is(clientStats().collectedWithoutDisconnect, baseline.collectedWithoutDisconnect, 'every client was disconnected')
  t.is(client.metrics.connects, 1_500)
  await quiescent()
})
