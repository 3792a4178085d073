'use strict'
// The workloads, written once against a tiny adapter that each peer file
// (bench/peers/<name>.js) provides. A peer runs in its own process, started by
// bench/run.js as
//
//   node --expose-gc bench/peers/<name>.js '<json config>'
//
// and reports one JSON object, { type: 'result', ok, result | error }, over IPC
// (or on stdout when run by hand without IPC), then exits.
//
// Adapter:
//   name                      the peer's name
//   version()                 its version string
//   unavailable()             null, or why the peer cannot run here (reported as n/a)
//   reconnects                whether it reconnects by itself (workload `reconnect`)
//   connect(url, h, opts)     opens a connection; h: { onOpen(), onMessage(data, isBinary),
//                             onError(err), onClose(info), onAttempt(tNs) }; opts.reconnect asks for a
//                             fixed 100 ms reconnect delay. Text arrives as a string, binary as
//                             bytes. onAttempt(t) reports when a reconnect attempt starts (hrtime ns).
//   send(conn, data)          string or Buffer
//   buffered(conn)            bytes accepted by send() not yet written
//   close(conn)               closes; the promise resolves once it is fully closed
//   extensions(conn)          the extensions the server accepted (its Sec-WebSocket-Extensions answer,
//                             or the names only); without it the permessage-deflate workloads are n/a
//   compresses                false for a peer that negotiates permessage-deflate but never compresses
//                             what it sends (send1kz is n/a for it)
//   stats()                   optional: the library's own counters, reported with idle memory
//
// Workloads with `deflate: true` check, at every `open`, that permessage-deflate was negotiated.
// `wss:` workloads give `caFile` (run.js's throwaway CA, PEM): every connect() then gets
// opts.ca (the PEM text) for the peer to trust.

const { jsonMessage } = require('../lib/jsonmsg')

const now = process.hrtime.bigint
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))
const noop = () => {}

function sizeOf(d) {
  return typeof d === 'string' ? Buffer.byteLength(d) : d.byteLength
}

function seconds(t0, t1) {
  return Number(t1 - t0) / 1e9
}

function errMsg(e) {
  if (e instanceof Error) return `${e.code ? e.code + ': ' : ''}${e.message}`
  if (e && typeof e === 'object' && 'message' in e) return String(e.message)
  return String(e)
}

async function settleGc() {
  if (typeof global.gc !== 'function') throw new Error('run the peer with --expose-gc')
  for (let i = 0; i < 4; i++) {
    global.gc()
    await sleep(50)
  }
}

const newSpaceBytes = () => require('node:v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size

/**
 * V8 keeps the young generation it grew while the connections opened until its memory reducer runs,
 * once allocation has been low for several seconds (8 s or more in Node 20): an application that
 * holds idle connections has the RSS of after that. Waits for it without allocating; if it has not run
 * after `reducerMs`, forces a GC a second (one also shrinks the young generation when allocation has
 * been low, but compacts less than the reducer), at most `maxMs` in all.
 */
async function settleYoungGeneration(baseNewSpace, reducerMs = 20_000, maxMs = 30_000) {
  const t0 = Date.now()
  let by = 'reducer'
  while (newSpaceBytes() > baseNewSpace && Date.now() - t0 < maxMs) {
    if (Date.now() - t0 < reducerMs) {
      await sleep(250)
    } else {
      by = 'gc'
      await sleep(1000)
      global.gc()
    }
  }
  const waitedMs = Date.now() - t0
  await settleGc()
  return { by: newSpaceBytes() <= baseNewSpace ? by : null, waitedMs }
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[i]
}

/** The echo workload's figures from its round-trip times in µs (sorted here). */
function latencySummary(lat) {
  lat.sort()
  return {
    roundTrips: lat.length,
    p50us: percentile(lat, 50),
    p99us: percentile(lat, 99),
    meanUs: lat.reduce((a, b) => a + b, 0) / lat.length,
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN
}

/** Why permessage-deflate is not in use on `conn`, or null when it is. */
function deflateMissing(A, conn) {
  const ext = String(A.extensions(conn) ?? '')
  return /permessage-deflate/i.test(ext) ? null : `permessage-deflate not negotiated (extensions: "${ext}")`
}

/**
 * Receive: the server writes `count` pre-encoded frames after our "go". `json`: the messages are
 * jsonMessage(0 .. count-1), and the first and the last are compared with them.
 */
function recv(A, { url, count, size, json, deflate }) {
  return new Promise((resolve, reject) => {
    let n = 0
    let t0 = 0n
    let done = false
    let firstBad = null
    const conn = A.connect(url, {
      onOpen() {
        const why = deflate && deflateMissing(A, conn)
        if (why) {
          done = true
          A.close(conn).catch(noop)
          return reject(new Error(why))
        }
        t0 = now()
        A.send(conn, 'go')
      },
      onMessage(data) {
        if (json && n === 0 && data !== jsonMessage(0, size)) firstBad = data
        if (++n !== count) return
        const t1 = now()
        done = true
        const got = sizeOf(data)
        const show = (d) => JSON.stringify(typeof d === 'string' ? d.slice(0, 200) : `<${sizeOf(d)} bytes of binary>`)
        if (firstBad !== null) return reject(new Error(`first message differs from what the server sent: ${show(firstBad)}`))
        if (got !== size) return reject(new Error(`last message has ${got} bytes, expected ${size}: ${show(data)}`))
        if (json && data !== jsonMessage(count - 1, size)) {
          return reject(new Error(`last message differs from what the server sent: ${show(data)}`))
        }
        const s = seconds(t0, t1)
        resolve({ messages: n, seconds: s, msgsPerSec: n / s, mbPerSec: (n * size) / s / 1e6 })
      },
      onError(e) {
        if (!done) reject(new Error(`error after ${n} messages: ${errMsg(e)}`))
      },
      onClose(info) {
        if (!done) reject(new Error(`closed (${info && info.code}) after ${n} messages`))
      },
    })
  })
}

/**
 * Send: `count` messages as fast as the peer takes them, bounded by bufferedAmount; the server says
 * "done". `json`: message k is jsonMessage(k % pool) (built before the clock starts). `verify`: the
 * server then checks what it received and says "verify:ok …" or "verify:FAIL …" (the figure is
 * reported either way, with `verified` and `verifyNote`).
 */
function send(A, { url, count, size, binary, json, pool = 1024, deflate, verify, highWater = 4 * 1024 * 1024 }) {
  if (deflate && A.compresses === false) return Promise.resolve({ na: 'never compresses what it sends' })
  return new Promise((resolve, reject) => {
    const payload = binary ? Buffer.alloc(size, 0xab) : 'x'.repeat(size)
    const texts = json ? Array.from({ length: pool }, (_, i) => jsonMessage(i, size)) : null
    const batch = Math.max(1, Math.floor(65536 / size))
    let sent = 0
    let t0 = 0n
    let done = false
    let result = null
    let maxBuffered = 0
    const pump = () => {
      try {
        while (sent < count) {
          const b = A.buffered(conn)
          if (b > maxBuffered) maxBuffered = b
          if (b >= highWater) {
            setTimeout(pump, 0)
            return
          }
          const end = Math.min(count, sent + batch)
          if (texts) for (; sent < end; sent++) A.send(conn, texts[sent % pool])
          else for (; sent < end; sent++) A.send(conn, payload)
        }
      } catch (e) {
        done = true
        reject(e)
      }
    }
    const conn = A.connect(url, {
      onOpen() {
        const why = deflate && deflateMissing(A, conn)
        if (why) {
          done = true
          A.close(conn).catch(noop)
          return reject(new Error(why))
        }
        t0 = now()
        pump()
      },
      onMessage(data) {
        if (typeof data !== 'string') return
        if (result && data.startsWith('verify:')) {
          // After the clock: what the server found in the frames it counted.
          const ok = data.startsWith('verify:ok')
          let info = {}
          try {
            info = JSON.parse(data.slice(data.indexOf(' ') + 1))
          } catch {
            info = { reason: data.slice(7) }
          }
          result.verified = ok
          result.verifyNote = ok ? info.stats : info.reason || data
          if (info.payloadBytes) result.wireBytesPerMsg = info.payloadBytes / count
          done = true
          return resolve(result)
        }
        if (data !== 'done' || result) return
        const t1 = now()
        const s = seconds(t0, t1)
        result = { messages: count, seconds: s, msgsPerSec: count / s, mbPerSec: (count * size) / s / 1e6, maxBuffered }
        if (!verify) {
          done = true
          resolve(result)
        }
      },
      onError(e) {
        if (!done) reject(new Error(`error after ${sent} sends: ${errMsg(e)}`))
      },
      onClose(info) {
        if (!done) reject(new Error(`closed (${info && info.code}) after ${sent} sends`))
      },
    })
  })
}

/** Echo RTT: one message in flight at a time. */
function echo(A, { url, count, size, warmup }) {
  return new Promise((resolve, reject) => {
    const msg = 'x'.repeat(size)
    const total = warmup + count
    const lat = new Float64Array(count)
    let i = 0
    let t = 0n
    let done = false
    const conn = A.connect(url, {
      onOpen() {
        t = now()
        A.send(conn, msg)
      },
      onMessage() {
        const t1 = now()
        if (i >= warmup) lat[i - warmup] = Number(t1 - t) / 1e3
        if (++i === total) {
          done = true
          return resolve(latencySummary(lat))
        }
        t = now()
        A.send(conn, msg)
      },
      onError(e) {
        if (!done) reject(new Error(`error after ${i} round trips: ${errMsg(e)}`))
      },
      onClose(info) {
        if (!done) reject(new Error(`closed (${info && info.code}) after ${i} round trips`))
      },
    })
  })
}

/**
 * Runs V8's optimizing compiler once, before a memory baseline. The first time it runs, its code is
 * paged in (3.5 MiB of node's binary on Node 20) and it takes memory for itself (5.4 MiB of RSS in
 * all); a process that has run for a while has paid that. A peer whose module load and warm-up
 * connection run little JS would otherwise count it as memory of its connections (redial-ws: 0.57 KiB
 * per connection of 10,000; `ws`: nothing, its own load had run it). The same for every peer; no
 * library code runs here.
 */
async function pageInOptimizingCompiler() {
  const step = (x) => (x * 31) ^ (x >>> 3)
  let acc = 0
  for (let i = 0; i < 5e6; i++) acc = step(acc + i)
  globalThis.__benchWarmUp = acc
  // The compile runs on a background thread.
  await sleep(500)
}

/** Opens one connection and closes it (warms the library up before a baseline). */
function openClose(A, url, deflate = false) {
  return new Promise((resolve, reject) => {
    let settled = false
    const conn = A.connect(url, {
      onOpen() {
        const why = deflate && deflateMissing(A, conn)
        A.close(conn).then(() => {
          if (why) return reject(new Error(why))
          settled = true
          resolve()
        }, reject)
      },
      onMessage: noop,
      onError(e) {
        if (!settled) {
          settled = true
          A.close(conn).catch(noop)
          reject(new Error(errMsg(e)))
        }
      },
      onClose: noop,
    })
  })
}

/** Idle memory: `count` open connections held at once (`concurrency` handshakes in flight). */
async function memory(A, { url, count, concurrency = 100, deflate }) {
  await openClose(A, url, deflate)
  await pageInOptimizingCompiler()
  let notNegotiated = null
  await settleGc()
  const base = process.memoryUsage()
  const baseNewSpace = newSpaceBytes()
  const conns = []
  const closing = []
  let firstError = null
  let opened = 0
  let failed = 0
  const t0 = now()
  await new Promise((resolve) => {
    let next = 0
    let inflight = 0
    let stop = false
    const maybeDone = () => {
      if (inflight === 0 && (stop || next === count)) resolve()
    }
    const launch = () => {
      while (!stop && next < count && inflight < concurrency) {
        next++
        inflight++
        let state = 0 // 0 connecting, 1 open, 2 failed
        let conn
        const fail = (e) => {
          if (state === 2) return
          const wasConnecting = state === 0
          state = 2
          failed++
          if (firstError === null) firstError = errMsg(e)
          stop = true
          closing.push(A.close(conn).catch(noop))
          if (wasConnecting) inflight--
          else opened--
          maybeDone()
        }
        conn = A.connect(url, {
          onOpen() {
            if (state !== 0) return
            if (deflate && notNegotiated === null) notNegotiated = deflateMissing(A, conn)
            state = 1
            inflight--
            opened++
            conns.push(conn)
            launch()
            maybeDone()
          },
          onMessage: noop,
          onError: fail,
          onClose(info) {
            // Some peers report the close before the error that caused it: let the error win.
            setImmediate(() => {
              if (state !== 2) fail(new Error(`closed (${info && info.code})`))
            })
          },
        })
      }
      maybeDone()
    }
    launch()
  })
  const openSeconds = seconds(t0, now())
  if (notNegotiated) throw new Error(notNegotiated)
  if (failed > 0) {
    // Out of file descriptors, most likely: give a few back so that measuring (which reads
    // /proc) works, and measure the connections that remain.
    for (const c of conns.splice(-16)) closing.push(A.close(c).catch(noop))
  }
  await Promise.race([Promise.all(closing), sleep(5000)])
  await settleGc()
  await sleep(200)
  await settleGc()
  const after = process.memoryUsage()
  const live = conns.length
  if (live === 0) throw new Error(`no connection opened: ${firstError}`)
  const settle = await settleYoungGeneration(baseNewSpace)
  const settled = process.memoryUsage()
  const stats = A.stats ? A.stats() : undefined
  return {
    stats,
    requested: count,
    opened: live,
    failed,
    firstError,
    emfile: firstError !== null && /EMFILE|too many open files|os error 24/i.test(firstError),
    openSeconds,
    rssKiBPerConn: (after.rss - base.rss) / 1024 / live,
    heapKiBPerConn: (after.heapUsed - base.heapUsed) / 1024 / live,
    settledRssKiBPerConn: (settled.rss - base.rss) / 1024 / live,
    settledBy: settle.by,
    settleMs: settle.waitedMs,
    baseRssMiB: base.rss / 1048576,
    rssMiB: after.rss / 1048576,
  }
}

/** Churn: sequential connect, wait open, close, wait closed; RSS after gc at the checkpoints. */
async function churn(A, { url, cycles, checkpoints, deflate }) {
  const cycle = () => openClose(A, url, deflate)
  const rss = {}
  const heap = {}
  let busy = 0n
  // The process's CPU time (every thread) and context switches over the cycles, checkpoints excluded:
  // what a cycle costs the machine, which the rate (set by hand-offs and the server) does not show.
  let cpuUs = 0
  let switches = 0
  const usage = () => {
    const u = process.resourceUsage()
    return { cpu: u.userCPUTime + u.systemCPUTime, switches: u.voluntaryContextSwitches + u.involuntaryContextSwitches }
  }
  let since = usage()
  const account = () => {
    const u = usage()
    cpuUs += u.cpu - since.cpu
    switches += u.switches - since.switches
    since = u
  }
  for (let i = 1; i <= cycles; i++) {
    const t0 = now()
    try {
      await cycle()
    } catch (e) {
      throw new Error(`cycle ${i}: ${errMsg(e)}`)
    }
    busy += now() - t0
    if (checkpoints.includes(i)) {
      account()
      await settleGc()
      const m = process.memoryUsage()
      rss[i] = m.rss / 1048576
      heap[i] = m.heapUsed / 1048576
      since = usage()
    }
  }
  account()
  // Growth from the first checkpoint to the last (the others only show the trend).
  const a = checkpoints[0]
  const b = checkpoints[checkpoints.length - 1]
  return {
    cycles,
    seconds: Number(busy) / 1e9,
    cyclesPerSec: cycles / (Number(busy) / 1e9),
    cpuUsPerCycle: cpuUs / cycles,
    switchesPerCycle: switches / cycles,
    rssMiB: rss,
    heapMiB: heap,
    rssGrowthMiB: rss[b] - rss[a],
    rssGrowthKiB: (rss[b] - rss[a]) * 1024,
    heapGrowthMiB: heap[b] - heap[a],
  }
}

/**
 * Reconnect latency: we ask the server to drop us; it stays down `downMs` and
 * listens again, then tells us when ("listen:<ns>"). Overhead = open − the start
 * of the attempt that succeeded (never before the server listened again), i.e.
 * the latency beyond the scheduled 100 ms delay.
 */
function reconnect(A, { url, repeats, settleMs = 50 }) {
  if (!A.reconnects) return Promise.resolve({ na: 'does not reconnect' })
  return new Promise((resolve, reject) => {
    const overheads = []
    const listenToOpen = []
    const opens = []
    let attemptAt = null
    let tOpen = 0n
    let attempts = 0
    let finished = false
    const drop = () => {
      attemptAt = null
      attempts = 0
      A.send(conn, 'drop')
    }
    const conn = A.connect(
      url,
      {
        onOpen() {
          tOpen = now()
          opens.push(tOpen)
          if (opens.length === 1) setTimeout(drop, settleMs)
        },
        onMessage(data) {
          if (typeof data !== 'string' || !data.startsWith('listen:')) return
          const tListen = BigInt(data.slice(7))
          const start = attemptAt !== null && attemptAt > tListen ? attemptAt : tListen
          overheads.push(Number(tOpen - start) / 1e6)
          listenToOpen.push(Number(tOpen - tListen) / 1e6)
          if (overheads.length < repeats) return void setTimeout(drop, settleMs)
          finished = true
          A.close(conn).then(
            () =>
              resolve({
                repeats,
                overheadMs: median(overheads),
                listenToOpenMs: median(listenToOpen),
                overheadsMs: overheads,
                listenToOpenAllMs: listenToOpen,
              }),
            reject,
          )
        },
        onAttempt(t) {
          attempts++
          attemptAt = t
        },
        onError: noop, // refused attempts while the server is down are expected
        onClose: noop,
      },
      { reconnect: true },
    )
    setTimeout(() => {
      if (!finished) reject(new Error(`only ${overheads.length}/${repeats} reconnects (${attempts} attempts in the last)`))
    }, 2000 + repeats * 2000).unref()
  })
}

const WORKLOADS = { recv, send, echo, memory, churn, reconnect }

function report(msg) {
  return new Promise((resolve) => {
    if (process.send) process.send(msg, () => resolve())
    else {
      process.stdout.write(JSON.stringify(msg) + '\n', () => resolve())
    }
  })
}

/** About `mb` MB of small objects in the old generation, as an application's data would be. */
function liveObjects(mb) {
  // About 50 bytes each, the array's slot included (measured on Node 20).
  const objects = new Array(Math.round((mb * 1024 * 1024) / 50))
  for (let i = 0; i < objects.length; i++) objects[i] = { id: i, next: null }
  return objects
}

/** Entry point of a peer process. */
async function main(adapter) {
  process.on('disconnect', () => process.exit(1))
  const cfg = JSON.parse(process.argv[2] || '{"workload":"probe"}')
  if (cfg.workload === 'probe') {
    const why = adapter.unavailable()
    await report({ type: 'result', ok: true, result: { available: !why, reason: why, version: why ? null : adapter.version() } })
    process.exit(0)
  }
  const why = adapter.unavailable() || (cfg.deflate && !adapter.extensions ? 'cannot tell which extensions were negotiated' : null)
  if (why) {
    await report({ type: 'result', ok: true, result: { na: why } })
    process.exit(0)
  }
  if (cfg.caFile) {
    // wss: every connection trusts run.js's throwaway CA.
    const ca = require('node:fs').readFileSync(cfg.caFile, 'utf8')
    const connect = adapter.connect
    adapter.connect = (url, h, opts = {}) => connect(url, h, { ...opts, ca })
  }
  // The application's own objects, alive for the whole run (`liveHeapMB`): what a mark-compact marks.
  const live = cfg.liveHeapMB ? liveObjects(cfg.liveHeapMB) : null
  const fn = WORKLOADS[cfg.workload]
  if (!fn) {
    await report({ type: 'result', ok: false, error: `unknown workload ${cfg.workload}` })
    process.exit(2)
  }
  let msg
  try {
    msg = { type: 'result', ok: true, result: await fn(adapter, cfg) }
  } catch (e) {
    msg = { type: 'result', ok: false, error: errMsg(e) }
  }
  await report({ ...msg, ...(live && msg.ok && { result: { ...msg.result, liveObjects: live.length } }) })
  // Connections may still be open (throughput runs keep theirs): the parent kills the server anyway.
  process.exit(msg.ok ? 0 : 1)
}

module.exports = { main, now, latencySummary, pageInOptimizingCompiler, settleGc }
