'use strict'
// Reconnect-storm client: ONE process holding N reconnecting clients of one library,
// forked by bench/storm.js (a fresh process per library and run).
//
//   node bench/peers/storm-client.js '<json config>'
//
// config: { lib, n, urls: [ws://127.0.0.1:port/, ...], concurrency, backoff: { minDelay, maxDelay,
//           factor, minUptime, connectTimeout }, jitter }
//
// It opens N clients (at most `concurrency` handshakes in flight), reports { type: 'ready' } once
// all are open, then records every close, attempt, error and open until all N are open again
// ({ type: 'done', ... }), or until the parent asks ({ cmd: 'report' }: a partial result). Times are
// ms on the monotonic clock (process.hrtime), the same clock as the server's. Client i connects to
// `${urls[i % urls.length]}${i}`: the path carries its index, so that an attempt seen in a wrapped
// WebSocket constructor can be attributed to its client (the server ignores the path).

const fs = require('node:fs')
const path = require('node:path')
const { monitorEventLoopDelay } = require('node:perf_hooks')

const nowMs = () => Number(process.hrtime.bigint() / 1000n) / 1000
const cfg = JSON.parse(process.argv[2] || '{"lib":"probe"}')

function send(msg) {
  return new Promise((resolve) => {
    if (process.send) process.send(msg, () => resolve())
    else process.stdout.write(JSON.stringify(msg) + '\n', () => resolve())
  })
}

process.on('disconnect', () => process.exit(1))

// An exception nobody caught would end a real program; here it is counted and reported, so that the
// figures of the other clients survive it (reconnecting-websocket over ws is known to throw
// "WebSocket was closed before the connection was established" when its connectionTimeout fires).
const uncaught = { count: 0, first: null }
process.on('uncaughtException', (e) => {
  uncaught.count++
  if (uncaught.first === null) uncaught.first = String((e && e.stack) || e).split('\n').slice(0, 4).join(' | ')
})

/** [label, refused]: redial-ws's err.code, or the code of ws's error under reconnecting-websocket/partysocket. */
function errorKind(e) {
  if (!e) return ['unknown', false]
  const inner = e.error && typeof e.error === 'object' ? e.error : null
  const code = typeof e.code === 'string' ? e.code : inner && typeof inner.code === 'string' ? inner.code : null
  const message = String((e && e.message) || (inner && inner.message) || '')
  const refused = code === 'ECONNREFUSED' || /connection refused|os error 111/i.test(message)
  if (code) return [refused && code !== 'ECONNREFUSED' ? `${code} refused` : code, refused]
  return [message.length > 60 ? message.slice(0, 60) + '...' : message || 'unknown', refused]
}

function idOf(url) {
  const s = String(url)
  return Number(s.slice(s.lastIndexOf('/') + 1))
}

// ---------------------------------------------------------------- adapters
// create(url, id, h) -> client; h: { onOpen(), onClose(code), onError(), onAttempt(id), onSchedule(attempt, delayMs) }.
// onAttempt: an attempt starts now (its socket is being created); onSchedule: one is scheduled in
// delayMs (redial-ws says so in its 'reconnecting' event; its attempts start inside Rust).

function redialAdapter(jitter) {
  const root = path.resolve(__dirname, '..', '..')
  const lib = require(root)
  const b = cfg.backoff
  const options = {
    minDelay: b.minDelay,
    maxDelay: b.maxDelay,
    factor: b.factor,
    jitter,
    maxRetries: Infinity,
    minUptime: b.minUptime,
    connectTimeout: b.connectTimeout,
    pingInterval: 0, // no heartbeats: the other two send none
  }
  return {
    version: require(path.join(root, 'package.json')).version,
    options,
    create(url, id, h) {
      const c = new lib.ReconnectingWebSocket(url, options)
      c.on('open', h.onOpen)
      c.on('close', (ev) => h.onClose(ev.code))
      c.on('error', h.onError)
      c.on('reconnecting', (ev) => h.onSchedule(ev.attempt, ev.delay))
      return c
    },
    metrics: (c) => c.metrics,
    stats: () => lib.clientStats(),
  }
}

/** reconnecting-websocket and partysocket share one design (partysocket is a fork of the former). */
function rwsLikeAdapter(Ctor, version, onAttempt) {
  const WebSocket = require('ws')
  // Their timer constructs the socket: that is the start of an attempt. The path names the client.
  const Counted = class extends WebSocket {
    constructor(url, ...rest) {
      onAttempt(idOf(url))
      super(url, ...rest)
    }
  }
  const b = cfg.backoff
  const options = {
    minReconnectionDelay: b.minDelay,
    maxReconnectionDelay: b.maxDelay,
    reconnectionDelayGrowFactor: b.factor,
    minUptime: b.minUptime,
    connectionTimeout: b.connectTimeout,
    maxRetries: Infinity,
  }
  return {
    version,
    options,
    create(url, id, h) {
      const r = new Ctor(url, undefined, { ...options, WebSocket: Counted })
      r.binaryType = 'nodebuffer' // the 'blob' default would make ws build Blobs
      r.onopen = h.onOpen
      r.onclose = (ev) => h.onClose(ev.code)
      r.onerror = h.onError
      return r
    },
  }
}

function loadAdapter(name, onAttempt) {
  if (name === 'redial-ws') return redialAdapter(cfg.jitter || 'equal')
  if (name === 'reconnecting-websocket') {
    let RWS = require('reconnecting-websocket')
    RWS = RWS.default || RWS
    return rwsLikeAdapter(RWS, require('reconnecting-websocket/package.json').version, onAttempt)
  }
  if (name === 'partysocket') {
    const mod = require('partysocket/ws')
    const pkg = path.join(path.dirname(require.resolve('partysocket')), '..', 'package.json')
    return rwsLikeAdapter(mod.default || mod.ReconnectingWebSocket, require(pkg).version, onAttempt)
  }
  throw new Error(`unknown library ${name}`)
}

// ---------------------------------------------------------------- measurement

function vm(key) {
  const m = new RegExp(`^${key}:\\s*(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'latin1'))
  return m ? Number(m[1]) / 1024 : null
}

function cpuMs(u) {
  return (u.user + u.system) / 1000
}

async function main() {
  if (cfg.lib === 'probe' || cfg.probe) {
    try {
      const a = loadAdapter(cfg.lib === 'probe' ? cfg.probe : cfg.lib, () => {})
      await send({ type: 'probe', ok: true, version: a.version, options: a.options })
    } catch (e) {
      await send({ type: 'probe', ok: false, error: e.message })
    }
    process.exit(0)
  }

  const N = cfg.n
  const clients = new Array(N) // every client stays referenced (redial-ws collects abandoned ones)
  // per client: 0 connecting (first time), 1 open, 2 closed by the storm, 3 open again
  const state = new Uint8Array(N)
  const closeAt = new Float64Array(N).fill(NaN)
  const reopenAt = new Float64Array(N).fill(NaN)
  const firstDelay = new Float64Array(N).fill(NaN) // first reconnect delay after the storm's close, ms
  const attemptsAfter = new Uint32Array(N) // attempts after the storm's close (rws, partysocket: counted)
  const closeCodes = {}
  const errorCodes = {} // failed attempts after the drop, by code
  const dropErrors = {} // errors reported by an open connection when it was dropped, by code
  const refusedTimes = [] // failed attempts after the drop, refused (ECONNREFUSED), as JS saw them
  // When the attempt that failed started (rws, partysocket: its socket's construction; redial-ws: the
  // time its 'reconnecting' event scheduled), so that late error events can be told from late attempts.
  const attemptStart = new Float64Array(N).fill(NaN)
  const refusedStarts = []
  const otherErrorTimes = [] // failed attempts after the drop, any other error (timeout, reset, ...)
  const attemptTimes = [] // start of every attempt after ready (redial-ws: scheduled time)
  let ready = false
  let opened = 0
  let reopened = 0
  let closed = 0
  let errorsBeforeReady = 0
  let retriesBeforeReady = 0 // attempts beyond each client's first, before all N were open
  const started = new Uint8Array(N)

  const onAttempt = (id) => {
    if (!ready) {
      if (started[id]) retriesBeforeReady++
      started[id] = 1
      return
    }
    const t = nowMs()
    attemptTimes.push(t)
    attemptStart[id] = t
    if (state[id] === 2) {
      if (attemptsAfter[id] === 0) firstDelay[id] = t - closeAt[id]
      attemptsAfter[id]++
    }
  }
  const A = loadAdapter(cfg.lib, onAttempt)

  let cpu0 = null
  let cpuReady = null
  let elDelay = null
  let tReady = 0
  let rssReady = 0
  let heapReady = 0
  const t0 = nowMs()
  const cpuStart = process.cpuUsage()

  const snapshot = (complete) => {
    const cpuStorm = cpuReady ? cpuMs(process.cpuUsage(cpuReady)) : null
    if (elDelay) elDelay.disable()
    const out = {
      type: complete ? 'done' : 'partial',
      n: N,
      opened,
      closed,
      reopened,
      tReady,
      closeCodes,
      errorCodes,
      dropErrors,
      closeAt: Array.from(closeAt).filter((x) => !Number.isNaN(x)),
      reopenAt: Array.from(reopenAt).filter((x) => !Number.isNaN(x)),
      firstDelays: Array.from(firstDelay).filter((x) => !Number.isNaN(x)),
      attemptTimes,
      refusedTimes,
      refusedStarts,
      otherErrorTimes,
      errorsBeforeReady,
      retriesBeforeReady,
      cpuStormMs: cpuStorm,
      cpuTotalMs: cpuMs(process.cpuUsage(cpuStart)),
      cpuToReadyMs: cpuReady ? cpuMs(cpuReady) - cpuMs(cpu0) : null,
      rssReadyMiB: rssReady,
      heapReadyMiB: heapReady,
      rssPeakStormMiB: vm('VmHWM'), // reset at ready
      rssEndMiB: process.memoryUsage().rss / 1048576,
      eventLoopMaxMs: elDelay ? elDelay.max / 1e6 : null,
      eventLoopP99Ms: elDelay ? elDelay.percentile(99) / 1e6 : null,
      uncaught,
    }
    if (A.metrics) {
      let attempts = 0
      let errors = 0
      let connects = 0
      for (const c of clients) {
        if (!c) continue
        const m = A.metrics(c)
        attempts += m.connectAttempts
        errors += m.connectionErrors
        connects += m.connects
      }
      out.metrics = { connectAttempts: attempts, connectionErrors: errors, connects }
      out.stats = A.stats()
    }
    return out
  }

  let launched = 0
  let inflight = 0
  const launch = () => {
    while (launched < N && inflight < cfg.concurrency) {
      const id = launched++
      inflight++
      const url = `${cfg.urls[id % cfg.urls.length]}${id}`
      clients[id] = A.create(url, id, {
        onOpen() {
          const s = state[id]
          if (s === 0) {
            state[id] = 1
            inflight--
            if (++opened === N) onReady()
            else launch()
          } else if (s === 2) {
            state[id] = 3
            reopenAt[id] = nowMs()
            if (++reopened === N) finish()
          }
        },
        onClose(code) {
          if (state[id] !== 1 || !ready) return
          state[id] = 2
          closeAt[id] = nowMs()
          closeCodes[code] = (closeCodes[code] || 0) + 1
          closed++
        },
        onError(e) {
          if (!ready) return void errorsBeforeReady++
          const [code, refused] = errorKind(e)
          // An error while open is the dropped connection's own (redial-ws reports one, before its
          // close); after the close, errors are failed attempts: refused (nothing listening), or other.
          if (state[id] === 1) {
            dropErrors[code] = (dropErrors[code] || 0) + 1
            return
          }
          ;(refused ? refusedTimes : otherErrorTimes).push(nowMs())
          if (refused) refusedStarts.push(attemptStart[id])
          errorCodes[code] = (errorCodes[code] || 0) + 1
        },
        onSchedule(attempt, delay) {
          if (!ready) return void retriesBeforeReady++
          const t = nowMs() + delay
          attemptTimes.push(t)
          attemptStart[id] = t
          if (state[id] === 2) {
            if (attemptsAfter[id] === 0) firstDelay[id] = delay
            attemptsAfter[id]++
          }
        },
      })
    }
  }

  async function onReady() {
    tReady = nowMs()
    cpu0 = cpuStart
    cpuReady = process.cpuUsage()
    global.gc?.()
    const m = process.memoryUsage()
    rssReady = m.rss / 1048576
    heapReady = m.heapUsed / 1048576
    try {
      fs.writeFileSync('/proc/self/clear_refs', '5') // resets VmHWM: the peak is the storm's
    } catch {}
    elDelay = monitorEventLoopDelay({ resolution: 10 })
    elDelay.enable()
    ready = true
    await send({
      type: 'ready',
      openMs: tReady - t0,
      rssReadyMiB: rssReady,
      heapReadyMiB: heapReady,
      errorsBeforeReady,
      retriesBeforeReady,
    })
  }

  let finished = false
  async function finish() {
    if (finished) return
    finished = true
    await send(snapshot(true))
  }

  process.on('message', async (m) => {
    if (m && m.cmd === 'report' && !finished) {
      finished = true
      await send(snapshot(false))
    }
  })

  launch()
}

main().catch(async (e) => {
  await send({ type: 'error', error: String((e && e.stack) || e) })
  process.exit(1)
})
