// Side by side with the real reconnecting-websocket 4.4 (its dist, run over `ws`): three behaviours
// of its retry counter and delays that rws mode must reproduce. Each test runs both libraries, each
// against its own local server, and compares what redial-ws does with what reconnecting-websocket did.
import { once } from 'node:events'
import http from 'node:http'
import { createRequire } from 'node:module'
import type net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'
import test, { type ExecutionContext } from 'ava'
import { WebSocket as WS, WebSocketServer } from 'ws'

import { ReconnectingWebSocket } from '../index.js'
import { rawServer, until, upgradeServer, wsServer } from './helpers.js'

type Any = any
type Make = (url: string, options: Record<string, unknown>) => Any

// reconnecting-websocket is CommonJS (`module.exports = ReconnectingWebSocket`); Node has no global
// WebSocket before 22, so it is handed `ws`'s class, as its README says to do in Node.
const RealRWS: Any = createRequire(import.meta.url)('reconnecting-websocket')

const makeRws: Make = (url, options) => new RealRWS(url, undefined, { ...options, WebSocket: WS })
const makeRedial: Make = (url, options) => new ReconnectingWebSocket(url, undefined, options as Any)

/** Closes a client of either library at the end of the test (redial-ws: awaits its disconnect, bounded). */
function closeAtEnd(t: ExecutionContext, ws: Any) {
  t.teardown(async () => {
    if (ws instanceof ReconnectingWebSocket) await Promise.race([ws.disconnect(), delay(3_000)])
    else ws.close()
  })
}

/** `until()` that reports a timeout instead of throwing: the caller asserts on what was seen. */
async function waitFor(cond: () => boolean, what: string, ms: number): Promise<boolean> {
  try {
    await until(cond, what, ms)
    return true
  } catch {
    return false
  }
}

const round = (xs: number[]) => xs.map((x) => Math.round(x))

// ---------------------------------------------------------------------------------------------
// 1. maxReconnectionDelay below minReconnectionDelay caps the delay: min(min × factor^(n−1), max).

const CAP = 200
const MAX_RETRIES = 5

async function capScenario(t: ExecutionContext, make: Make, options: Record<string, unknown>) {
  // Every connection is accepted, counted and destroyed at once: a failed attempt for both libraries.
  const arrivals: number[] = []
  const server = await rawServer((s) => {
    arrivals.push(performance.now())
    s.destroy()
  })
  t.teardown(() => server.close())
  const ws = make(server.url, { ...options, maxRetries: MAX_RETRIES, maxReconnectionDelay: CAP })
  closeAtEnd(t, ws)
  const closes: number[] = []
  ws.addEventListener('close', () => closes.push(ws.retryCount))
  // 6 attempts ~200 ms apart take ~1 s; raised to the minimum (>= 1 s each) they would take >= 5 s.
  await waitFor(() => closes.length >= MAX_RETRIES + 1, `${MAX_RETRIES + 1} failed attempts`, 5_000)
  // No event says reconnecting-websocket gave up: a 7th attempt would come one cap later.
  await delay(3 * CAP)
  const gaps = arrivals.slice(1).map((at, i) => at - arrivals[i])
  return {
    attempts: arrivals.length,
    gaps: round(gaps),
    total: arrivals.length ? Math.round(arrivals[arrivals.length - 1] - arrivals[0]) : NaN,
    closeRetryCounts: closes,
  }
}

const capMacro = test.macro({
  async exec(t, options: Record<string, unknown>) {
    const [rws, redial] = await Promise.all([capScenario(t, makeRws, options), capScenario(t, makeRedial, options)])
    t.log('reconnecting-websocket', JSON.stringify(rws))
    t.log('redial-ws             ', JSON.stringify(redial))
    // reconnecting-websocket itself: the server was up, 6 attempts, about the cap apart.
    t.is(rws.attempts, MAX_RETRIES + 1, 'reconnecting-websocket: maxRetries 5 = 6 attempts')
    // The bounds leave room for a slow machine; a delay raised to the minimum is >= 1000 ms (>= 5000 for all five).
    t.true(rws.gaps.every((g) => g < 900), `reconnecting-websocket gaps ${rws.gaps}`)
    t.true(rws.total < 4_500, `reconnecting-websocket total ${rws.total} ms`)
    // redial-ws does the same.
    t.is(redial.attempts, rws.attempts, 'as many attempts as reconnecting-websocket')
    t.true(redial.gaps.every((g) => g < 900), `redial-ws gaps ${redial.gaps} (reconnecting-websocket: ${rws.gaps})`)
    t.true(redial.total < 4_500, `redial-ws total ${redial.total} ms (reconnecting-websocket: ${rws.total} ms)`)
    t.deepEqual(redial.closeRetryCounts, rws.closeRetryCounts, 'retryCount in the close handlers')
  },
  title: (_provided, options: Record<string, unknown>) =>
    `rws: maxReconnectionDelay below minReconnectionDelay caps the delay (minReconnectionDelay ${
      'minReconnectionDelay' in options ? options.minReconnectionDelay : 'default'
    })`,
})

test.serial(capMacro, {}) // the default minimum: 1000–5000 ms, drawn once per process
test.serial(capMacro, { minReconnectionDelay: 1_000 })

// ---------------------------------------------------------------------------------------------
// 2. reconnect() right after the constructor, before the first socket exists, does nothing.

async function earlyReconnectScenario(t: ExecutionContext, make: Make) {
  const peer = await wsServer((s) => s.on('message', (d, binary) => s.send(d, { binary })))
  t.teardown(() => peer.close())
  const ws = make(peer.url, { minReconnectionDelay: 50, maxReconnectionDelay: 100 })
  closeAtEnd(t, ws)
  const events: string[] = []
  for (const type of ['open', 'close', 'error']) {
    ws.addEventListener(type, (e: Any) => events.push(`${type} ${ws.retryCount}${e.message ? ` ${e.message}` : ''}`))
  }
  const echoed: string[] = []
  ws.addEventListener('message', (e: Any) => echoed.push(String(e.data)))
  ws.reconnect()
  ws.reconnect()
  const afterReconnect = ws.retryCount
  const opened = await waitFor(() => events.some((e) => e.startsWith('open')), 'open', 5_000)
  // An extra round trip on the connection, then a short settle: nothing more may happen.
  if (opened) {
    ws.send('probe')
    await waitFor(() => echoed.includes('probe'), 'echo', 2_000)
  }
  await delay(300)
  return { accepted: peer.accepted, maxConcurrent: peer.maxConcurrent, events, echoed, afterReconnect, atEnd: ws.retryCount }
}

test.serial('rws: reconnect() right after the constructor does nothing (one connection, no close event)', async (t) => {
  const [rws, redial] = await Promise.all([earlyReconnectScenario(t, makeRws), earlyReconnectScenario(t, makeRedial)])
  t.log('reconnecting-websocket', JSON.stringify(rws))
  t.log('redial-ws             ', JSON.stringify(redial))
  // reconnecting-websocket: the server was up, one connection, opened, echoed, no close/error.
  t.is(rws.accepted, 1, 'reconnecting-websocket: one connection')
  t.deepEqual(rws.events, ['open 0'], 'reconnecting-websocket: open only')
  t.deepEqual(rws.echoed, ['probe'])
  // redial-ws does the same.
  t.is(redial.accepted, rws.accepted, 'connections that reached the server')
  t.is(redial.maxConcurrent, rws.maxConcurrent)
  t.deepEqual(redial.events, rws.events, 'open/close/error events (with retryCount)')
  t.deepEqual(redial.echoed, rws.echoed)
  t.is(redial.afterReconnect, rws.afterReconnect, 'retryCount right after reconnect()')
  t.is(redial.atEnd, rws.atEnd, 'retryCount at the end')
})

// ---------------------------------------------------------------------------------------------
// 3. retryCount goes back to 0 once a connection has stayed open minUptime.

const MIN = 50
const FACTOR = 8
const MIN_UPTIME = 100
const HOLD = 400

/**
 * Attempts 1 and 2 are destroyed; attempt 3 is accepted and closed by the server (4000) HOLD ms
 * later, well past minUptime; attempt 4 is accepted and kept. Delays: 0, 50, 400, then 50 again
 * if the counter was reset (3200 if not).
 */
async function uptimeScenario(t: ExecutionContext, make: Make) {
  const arrivals: number[] = []
  let closedAt = NaN
  const server = http.createServer()
  const wss = new WebSocketServer({ noServer: true })
  const sockets = new Set<net.Socket>()
  server.on('connection', (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  server.on('upgrade', (req, socket: net.Socket, head) => {
    const n = arrivals.push(performance.now())
    if (n <= 2) return void socket.destroy()
    wss.handleUpgrade(req, socket, head, (s) => {
      if (n === 3) {
        setTimeout(() => {
          closedAt = performance.now()
          s.close(4000, 'bye')
        }, HOLD)
      }
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        wss.close()
        server.close(() => resolve())
      }),
  )
  const url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`
  const ws = make(url, {
    minReconnectionDelay: MIN,
    reconnectionDelayGrowFactor: FACTOR,
    maxReconnectionDelay: 10_000,
    minUptime: MIN_UPTIME,
  })
  closeAtEnd(t, ws)
  // retryCount is read in the open and close handlers only, never while the connection is up.
  const seq: string[] = []
  ws.addEventListener('open', () => seq.push(`open ${ws.retryCount}`))
  ws.addEventListener('close', (e: Any) => seq.push(`close ${ws.retryCount}${e.code === 4000 ? ' (4000)' : ''}`))
  await waitFor(() => seq.filter((e) => e.startsWith('open')).length >= 2, 'the second open', 4_000)
  return {
    seq,
    attempts: arrivals.length,
    gaps: round(arrivals.slice(1).map((at, i) => at - arrivals[i])),
    gapAfterDrop: arrivals.length >= 4 ? Math.round(arrivals[3] - closedAt) : NaN,
  }
}

test.serial('rws: retryCount goes back to 0 once a connection stayed open minUptime; the next delay is the minimum', async (t) => {
  const [rws, redial] = await Promise.all([uptimeScenario(t, makeRws), uptimeScenario(t, makeRedial)])
  t.log('reconnecting-websocket', JSON.stringify(rws))
  t.log('redial-ws             ', JSON.stringify(redial))
  // reconnecting-websocket: two failures (1, 2), open at 2, reset after minUptime, so the drop counts 1.
  t.deepEqual(rws.seq, ['close 1', 'close 2', 'open 2', 'close 1 (4000)', 'open 1'], 'reconnecting-websocket')
  t.is(rws.attempts, 4)
  t.true(rws.gapAfterDrop < 1_000, `reconnecting-websocket reconnected ${rws.gapAfterDrop} ms after the drop`)
  // redial-ws does the same.
  t.deepEqual(redial.seq, rws.seq, 'retryCount in the open/close handlers')
  t.is(redial.attempts, rws.attempts, 'connection attempts at the server')
  t.true(
    redial.gapAfterDrop < 1_000,
    `redial-ws reconnected ${redial.gapAfterDrop} ms after the drop (reconnecting-websocket: ${rws.gapAfterDrop} ms; min ${MIN}, grown ${MIN * FACTOR ** 2})`,
  )
})

async function closedAfterUptime(t: ExecutionContext, make: Make) {
  let arrivals = 0
  const server = await upgradeServer((req, socket, head, wss) => {
    if (++arrivals <= 2) return void socket.destroy()
    wss.handleUpgrade(req, socket, head, () => {})
  })
  t.teardown(() => server.close())
  const ws = make(server.url, { minReconnectionDelay: MIN, reconnectionDelayGrowFactor: 1, minUptime: MIN_UPTIME })
  closeAtEnd(t, ws)
  ws.addEventListener('error', () => {})
  const seen: string[] = []
  await new Promise((resolve) => ws.addEventListener('open', resolve))
  seen.push(`open ${ws.retryCount}`)
  await delay(HOLD)
  seen.push(`up ${ws.retryCount}`)
  const closed = new Promise((resolve) => ws.addEventListener('close', resolve))
  ws.addEventListener('close', () => seen.push(`in close ${ws.retryCount}`))
  ws.close()
  seen.push(`after close() ${ws.retryCount}`)
  await closed
  await delay(20)
  seen.push(`later ${ws.retryCount}`)
  return seen
}

test.serial('rws: retryCount stays 0 once a connection that stayed open minUptime is closed by close()', async (t) => {
  const [rws, redial] = await Promise.all([closedAfterUptime(t, makeRws), closedAfterUptime(t, makeRedial)])
  t.deepEqual(rws, ['open 2', 'up 0', 'after close() 0', 'in close 0', 'later 0'], 'reconnecting-websocket')
  t.deepEqual(redial, rws)
})

// ---------------------------------------------------------------------------------------------
// 4. An open connection that ends without a close frame is reported by its close alone (1006,
//    not clean, readyState CLOSED); one the peer broke the protocol on is closed by the client
//    (1000, clean, readyState CLOSING), then its error.

async function endScenario(t: ExecutionContext, make: Make, end: (s: import('ws').WebSocket) => void) {
  const peer = await wsServer((s) => s.on('message', () => end(s)))
  t.teardown(() => peer.close())
  const ws = make(peer.url, { minReconnectionDelay: 60_000 })
  closeAtEnd(t, ws)
  const events: string[] = []
  ws.addEventListener('open', () => {
    events.push(`open ${ws.readyState}`)
    ws.send('end now')
  })
  ws.addEventListener('close', (e: Any) =>
    events.push(`close ${e.code} ${JSON.stringify(e.reason)} clean=${e.wasClean} readyState=${ws.readyState} retryCount=${ws.retryCount}`),
  )
  ws.addEventListener('error', () => events.push(`error readyState=${ws.readyState}`))
  await waitFor(() => events.some((e) => e.startsWith('close')), 'close', 5_000)
  // Whatever follows the close in the same turn (reconnecting-websocket's error comes after it).
  await new Promise((r) => setImmediate(r))
  return events
}

test.serial('rws: an open connection dropped without a close frame fires close 1006 alone; a protocol error, close 1000 then error', async (t) => {
  const drop = (s: import('ws').WebSocket) => s.terminate()
  // A frame with the reserved opcode 3.
  const badFrame = (s: import('ws').WebSocket) => ((s as Any)._socket as net.Socket).write(Buffer.from([0x83, 0x00]))
  for (const [what, end] of [
    ['dropped', drop],
    ['protocol error', badFrame],
  ] as const) {
    const [rws, redial] = await Promise.all([endScenario(t, makeRws, end), endScenario(t, makeRedial, end)])
    t.log(what, 'reconnecting-websocket', JSON.stringify(rws))
    t.log(what, 'redial-ws             ', JSON.stringify(redial))
    t.true(rws.length >= 2, `reconnecting-websocket saw the ${what} connection open and close`)
    t.deepEqual(redial, rws, what)
  }
})

