#!/usr/bin/env node
'use strict'
// Reconnect-storm benchmark: one client process holds N connections of one
// reconnecting library to a server process; the server "restarts" (drops them
// all, stays down, listens again) and we look at how the N clients come back.
// redial-ws, reconnecting-websocket (over ws) and partysocket side by side. See
// bench/README.md ("Reconnect storm").
//
//   node bench/storm.js [--clients N] [--quick] [--peers a,b] [--outage MS] [--timeout S]
//
// Every library runs in a fresh client process (bench/peers/storm-client.js)
// against a fresh server process (bench/lib/storm-server.js), both on 127.0.0.1;
// this process only orchestrates, computes and reports.

const { fork } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseOptions } = require('./lib/args')
const { describeMachine } = require('./lib/machine')
const { live, killAll, killChildrenOnExit, tail } = require('./lib/children')
const { renderText, renderMarkdown, renderSvg } = require('./lib/storm-report')

// ---------------------------------------------------------------- options

const PEER_NAMES = ['redial-ws', 'reconnecting-websocket', 'partysocket']
// Extra variants, only when asked for with --peers: redial-ws with its other jitter modes (its
// default is 'spread').
const VARIANTS = ['redial-ws:equal', 'redial-ws:full', 'redial-ws:none']

function parseArgs(argv) {
  const spec = {
    quick: 'flag',
    clients: 'number',
    outage: 'number',
    timeout: 'number',
    concurrency: 'number',
    'min-delay': 'number',
    'max-delay': 'number',
    factor: 'number',
    peers: 'list',
    'no-write': 'flag',
  }
  const help = () =>
    console.log(
      'node bench/storm.js [--clients N] [--quick] [--peers a,b] [--outage MS] [--timeout S]\n' +
        '  [--concurrency C] [--min-delay MS] [--max-delay MS] [--factor F] [--no-write]\n' +
        `peers: ${[...PEER_NAMES, ...VARIANTS].join(', ')}. See bench/README.md ("Reconnect storm").`,
    )
  const out = parseOptions(argv, spec, { help, hint: 'see bench/README.md, "Reconnect storm"', atLeast: { factor: 1 } })
  for (const p of out.peers || []) {
    if (![...PEER_NAMES, ...VARIANTS].includes(p)) {
      console.error(`unknown peer ${p} (${[...PEER_NAMES, ...VARIANTS].join(', ')})`)
      process.exit(2)
    }
  }
  return out
}

const args = parseArgs(process.argv.slice(2))
const QUICK = args.quick
const REQUESTED = Math.round(args.clients ?? (QUICK ? 1_000 : 10_000))

// The same backoff for every library (each under its own option names; see settingsNotes()).
const BACKOFF = {
  minDelay: args.minDelay ?? 1000, // first reconnect delay (redial-ws: its upper bound; 'spread': 0..1000, then on a grid)
  maxDelay: args.maxDelay ?? 5000, // cap
  factor: args.factor ?? 1.3, // reconnecting-websocket's and partysocket's default growth
  minUptime: 1000, // an open this long resets the attempt count (all three); the hold below exceeds it
  connectTimeout: 10_000, // redial-ws's default; rws/partysocket default to 4,000
}
const OUTAGE_MS = args.outage ?? 2000
const HOLD_MS = BACKOFF.minUptime + 500 // all N open this long before the restart
const BUCKET_MS = 100
const CONCURRENCY = args.concurrency ?? 256 // handshakes in flight while the N clients first connect
const TIMEOUT_MS = (args.timeout ?? (QUICK ? 30 : 240)) * 1000 // per run, hard: children killed
// After the server is back: the last client should be open within maxDelay (+ connect time); past
// this the run is cut short and reported as incomplete.
const RECONNECT_LIMIT_MS = BACKOFF.maxDelay + BACKOFF.connectTimeout + 5000
const TARGET_ALL_MS = BACKOFF.maxDelay + 1000
const TARGET_RATIO = 2

// ---------------------------------------------------------------- environment checks

function readLimits() {
  // Node has already raised its soft limit of open files to the hard limit; children inherit it.
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(fs.readFileSync('/proc/self/limits', 'latin1'))
  const num = (s) => (s === 'unlimited' ? Infinity : Number(s))
  return m ? { soft: num(m[1]), hard: num(m[2]) } : { soft: Infinity, hard: Infinity }
}

/** Total and idle jiffies of all CPUs (/proc/stat), to tell how busy the whole machine was. */
function cpuTimes() {
  const f = readSys('/proc/stat')
  const m = f && /^cpu\s+(.*)$/m.exec(f)
  if (!m) return null
  const v = m[1].trim().split(/\s+/).map(Number)
  const total = v.reduce((a, b) => a + b, 0)
  return { total, idle: v[3] + (v[4] || 0) }
}

function busy(a, b) {
  if (!a || !b || b.total <= a.total) return null
  return 1 - (b.idle - a.idle) / (b.total - a.total)
}

function readSys(file) {
  try {
    return fs.readFileSync(file, 'latin1').trim()
  } catch {
    return null
  }
}

const FD_MARGIN = 256 // stdio, IPC, epoll, redial-ws's runtime, ws's timers … per process
const notes = []
let N = REQUESTED
const limits = readLimits()
if (limits.soft < N + FD_MARGIN) {
  N = Math.max(100, limits.soft - FD_MARGIN)
  notes.push(
    `open-files limit ${limits.soft} (hard ${limits.hard}) is too low for ${REQUESTED.toLocaleString('en-US')} clients ` +
      `(${REQUESTED + FD_MARGIN} descriptors per process): SCALED DOWN to ${N.toLocaleString('en-US')} clients. ` +
      'Raise it (ulimit -Hn / LimitNOFILE) for the full run.',
  )
}
const portRange = (readSys('/proc/sys/net/ipv4/ip_local_port_range') || '32768 60999').split(/\s+/).map(Number)
const EPHEMERAL = portRange[1] - portRange[0] + 1
// Per server port the client needs ≤ N live ports, plus the ports of attempts in flight; ask for 2N
// + 2,000 to be safe. Linux reuses a local port towards a different remote port, so more server
// ports multiply what is available.
const SERVER_PORTS = Math.max(1, Math.ceil((2 * N + 2000) / EPHEMERAL))
if (SERVER_PORTS > 1) {
  notes.push(
    `ephemeral port range ${portRange.join('–')} (${EPHEMERAL} ports) is short for ${N} clients: the server listens on ` +
      `${SERVER_PORTS} ports and client i uses port i mod ${SERVER_PORTS}.`,
  )
}

// ---------------------------------------------------------------- child processes

killChildrenOnExit()

const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** Forks `file` and gives a way to wait for its messages by type. */
function spawn(name, file, argv, execArgv = []) {
  const child = fork(path.join(__dirname, file), argv, { execArgv, stdio: ['ignore', 'pipe', 'pipe', 'ipc'] })
  live.add(child)
  let err = ''
  child.stdout.resume()
  child.stderr.on('data', (d) => (err = (err + d).slice(-8192)))
  const queue = []
  const waiters = []
  let ended = null
  const failAll = (why) => {
    for (const w of waiters.splice(0)) {
      clearTimeout(w.timer)
      w.reject(new Error(why))
    }
  }
  child.on('message', (m) => {
    if (!m) return
    if (m.type === 'error') {
      ended = `${name} failed: ${m.error}`
      return failAll(ended)
    }
    const i = waiters.findIndex((w) => w.types.includes(m.type))
    if (i >= 0) {
      const [w] = waiters.splice(i, 1)
      clearTimeout(w.timer)
      w.resolve(m)
    } else queue.push(m)
  })
  child.on('error', (e) => (err += `\n[spawn error] ${e.message}`))
  child.on('exit', (code, signal) => {
    live.delete(child)
    ended = ended || `${name} exited (code ${code}, signal ${signal})${err.trim() ? `: ${tail(err, 600)}` : ''}`
    failAll(ended)
  })
  return {
    child,
    stderr: () => tail(err),
    send: (m) => {
      try {
        child.send(m)
      } catch {}
    },
    /** The next message of one of `types`; rejects after `ms`, or when the child ends first. */
    next(types, ms, what) {
      types = [].concat(types)
      const i = queue.findIndex((m) => types.includes(m.type))
      if (i >= 0) return Promise.resolve(queue.splice(i, 1)[0])
      if (ended) return Promise.reject(new Error(ended))
      return new Promise((resolve, reject) => {
        const w = { types, resolve, reject }
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1)
          reject(new Error(`${name}: no ${what || types.join('/')} within ${(ms / 1000).toFixed(1)} s`))
        }, ms)
        waiters.push(w)
      })
    },
    kill() {
      return new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve()
        child.once('exit', () => resolve())
        child.kill('SIGKILL')
      })
    },
  }
}

function clientConfig(peer, extra) {
  const [lib, jitter] = peer.split(':')
  return { lib, jitter: jitter || 'spread', backoff: BACKOFF, ...extra }
}

async function probe(peer) {
  const c = spawn(peer, 'peers/storm-client.js', [JSON.stringify({ probe: peer.split(':')[0], ...clientConfig(peer) })])
  try {
    const m = await c.next('probe', 30_000)
    if (!m.ok) return { name: peer, available: false, reason: m.error }
    const options = { ...m.options }
    if (options.jitter) options.jitter = clientConfig(peer).jitter
    return { name: peer, available: true, version: m.version, options }
  } catch (e) {
    return { name: peer, available: false, reason: e.message }
  } finally {
    await c.kill()
  }
}

/** One storm: returns { ok, stage, error?, server, client, … } (raw data; figures are computed later). */
async function runStorm(peer, log) {
  const out = { peer, ok: false, stage: 'start' }
  const t0 = Date.now()
  const server = spawn('server', 'lib/storm-server.js', [JSON.stringify({ ports: SERVER_PORTS, backlog: 4096 })])
  let client = null
  let deadlineTimer
  const deadlineAt = Date.now() + TIMEOUT_MS
  const deadline = new Promise((_, reject) => {
    deadlineTimer = setTimeout(() => {
      reject(new Error(`deadline of ${TIMEOUT_MS / 1000} s reached during "${out.stage}" (children killed)`))
    }, TIMEOUT_MS)
  })
  const body = async () => {
    out.stage = 'server start'
    const { ports } = await server.next('listening', 10_000)
    out.ports = ports
    out.stage = `opening ${N} connections`
    const urls = ports.map((p) => `ws://127.0.0.1:${p}/`)
    client = spawn(peer, 'peers/storm-client.js', [JSON.stringify(clientConfig(peer, { n: N, urls, concurrency: CONCURRENCY }))], [
      '--expose-gc',
    ])
    out.ready = await client.next('ready', TIMEOUT_MS, `open of all ${N} connections`)
    log(`all ${N} open in ${(out.ready.openMs / 1000).toFixed(1)} s, RSS ${out.ready.rssReadyMiB.toFixed(0)} MiB; holding ${HOLD_MS} ms`)
    out.stage = 'hold'
    await sleep(HOLD_MS)
    out.stage = 'restart'
    const cpuDown = cpuTimes()
    server.send({ cmd: 'restart', downMs: OUTAGE_MS })
    out.down = await server.next('down', 10_000)
    log(`server down: ${out.down.held} connections destroyed in ${(out.down.tDestroyed - out.down.tDown).toFixed(0)} ms`)
    out.stage = 'outage'
    out.back = await server.next('back', OUTAGE_MS + 10_000)
    const cpuBack = cpuTimes()
    log(`server back after ${(out.back.tBack - out.down.tDown).toFixed(0)} ms`)
    out.stage = 'reconnect'
    // Leave time for a partial report before the run's hard deadline.
    const waitMs = Math.max(1000, Math.min(RECONNECT_LIMIT_MS, deadlineAt - Date.now() - 4000))
    try {
      out.client = await client.next('done', waitMs, `reopen of all ${N} clients`)
    } catch (e) {
      out.incomplete = e.message
      client.send({ cmd: 'report' })
      out.client = await client.next(['done', 'partial'], 5000, 'partial report')
    }
    const cpuDone = cpuTimes()
    out.machine = { outage: busy(cpuDown, cpuBack), reconnect: busy(cpuBack, cpuDone) }
    out.stage = 'server report'
    server.send({ cmd: 'report' })
    out.server = await server.next('report', 10_000)
    out.ok = !out.incomplete
    if (out.incomplete) out.error = out.incomplete
  }
  try {
    await Promise.race([body(), deadline])
  } catch (e) {
    out.ok = false
    out.error = e.message
    out.clientStderr = client ? client.stderr() : ''
    out.serverStderr = server.stderr()
  } finally {
    clearTimeout(deadlineTimer)
    await Promise.all([server.kill(), client && client.kill()])
  }
  out.wallMs = Date.now() - t0
  return out
}

// ---------------------------------------------------------------- figures

function sortNum(xs) {
  return Float64Array.from(xs).sort()
}

function pct(sorted, p) {
  if (!sorted.length) return null
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]
}

/** Counts per BUCKET_MS from t = 0 (times relative to the server's return), up to the last one. */
function buckets(rel) {
  if (!rel.length) return []
  let last = -Infinity
  for (const t of rel) if (t > last) last = t
  const b = new Array(Math.floor(Math.max(0, last) / BUCKET_MS) + 1).fill(0)
  for (const t of rel) b[Math.max(0, Math.floor(t / BUCKET_MS))]++
  return b
}

function spread(b, total) {
  if (!b.length) return { peak: null, mean: null, ratio: null, buckets: 0 }
  const peak = b.reduce((a, v) => (v > a ? v : a), 0)
  const mean = total / b.length
  return { peak, mean, ratio: peak / mean, buckets: b.length }
}

function summarize(xs) {
  const s = sortNum(xs)
  if (!s.length) return null
  let sum = 0
  for (const x of s) sum += x
  return { n: s.length, min: s[0], p10: pct(s, 0.1), p50: pct(s, 0.5), p90: pct(s, 0.9), p99: pct(s, 0.99), max: s[s.length - 1], mean: sum / s.length }
}

function figures(run) {
  const { back, down, client: c, server: s } = run
  if (!back || !c) return null
  const tBack = back.tBack
  const rel = (t) => t - tBack
  const n = c.n
  const reopen = sortNum(c.reopenAt.map(rel))
  const timeTo = (p) => (reopen.length >= Math.ceil(p * n) ? reopen[Math.ceil(p * n) - 1] : null)
  const accepts = s ? sortNum(s.accepts.map(rel)) : new Float64Array(0)
  const upgrades = s ? sortNum(s.upgrades.map(rel)) : new Float64Array(0)
  const acc = buckets(accepts)
  const whole = spread(acc, accepts.length)
  // The same, with the window ending at the 99th-percentile accept (the tail of a few late clients
  // dilutes the mean of the whole window).
  const t99 = pct(accepts, 0.99)
  const acc99 = t99 === null ? [] : acc.slice(0, Math.floor(Math.max(0, t99) / BUCKET_MS) + 1)
  const w99 = spread(acc99, acc99.reduce((a, b) => a + b, 0))
  const refusedRel = c.refusedTimes.map(rel)
  const otherRel = c.otherErrorTimes.map(rel)
  const attRel = c.attemptTimes.map(rel)
  const tDownRel = down.tDown - tBack
  // Failed attempts during the outage, per bucket (negative times), for the chart.
  const outageBuckets = new Array(Math.ceil(-tDownRel / BUCKET_MS)).fill(0)
  for (const t of refusedRel) {
    if (t >= 0 || t < tDownRel) continue
    const i = Math.floor(-t / BUCKET_MS)
    if (i < outageBuckets.length) outageBuckets[i]++
  }
  const closeLag = summarize(c.closeAt.map((t) => t - down.tDown))
  return {
    n,
    held: down.held,
    destroyMs: down.tDestroyed - down.tDown,
    closed: c.closed,
    reopened: c.reopened,
    closeCodes: c.closeCodes,
    errorCodes: c.errorCodes,
    dropErrors: c.dropErrors,
    t50: timeTo(0.5),
    t99: timeTo(0.99),
    t100: timeTo(1),
    firstOpenMs: reopen.length ? reopen[0] : null,
    accepts: accepts.length,
    upgrades: upgrades.length,
    lastAcceptMs: accepts.length ? accepts[accepts.length - 1] : null,
    lastUpgradeMs: upgrades.length ? upgrades[upgrades.length - 1] : null,
    peak: whole.peak,
    mean: whole.mean,
    ratio: whole.ratio,
    windowBuckets: whole.buckets,
    peakShare: whole.peak !== null ? whole.peak / n : null,
    peak99: w99.peak,
    mean99: w99.mean,
    ratio99: w99.ratio,
    acceptBuckets: acc,
    outageBuckets,
    outageMs: -tDownRel,
    refused: refusedRel.length,
    // Refusals can only happen while nothing listens; those JS saw after the return are late events.
    refusedSeenAfterReturn: refusedRel.filter((t) => t >= 0).length,
    otherFailures: otherRel.length,
    // start of a refused attempt → its error event (redial-ws: from the scheduled start)
    refusedLatency: summarize(c.refusedTimes.map((t, i) => t - c.refusedStarts[i]).filter((x) => Number.isFinite(x))),
    attemptsDuringOutage: attRel.filter((t) => t < 0).length,
    attemptsAfterReturn: attRel.filter((t) => t >= 0).length,
    firstDelay: summarize(c.firstDelays),
    closeLag,
    cpuStormMs: c.cpuStormMs,
    serverCpuMs: s ? s.cpuSinceRestartMs : null,
    machineBusyOutage: run.machine ? run.machine.outage : null,
    machineBusyReconnect: run.machine ? run.machine.reconnect : null,
    cpuTotalMs: c.cpuTotalMs,
    openMs: run.ready.openMs,
    rssReadyMiB: c.rssReadyMiB,
    rssPeakStormMiB: c.rssPeakStormMiB,
    rssEndMiB: c.rssEndMiB,
    eventLoopMaxMs: c.eventLoopMaxMs,
    uncaught: c.uncaught,
    metrics: c.metrics,
    // redial-ws's own counters (every client's metrics, summed) since all N were open: a check of the
    // event-based counts above.
    countersSinceReady: c.metrics
      ? {
          connectAttempts: c.metrics.connectAttempts - n - c.retriesBeforeReady,
          connectionErrors: c.metrics.connectionErrors - c.errorsBeforeReady,
        }
      : null,
    retriesBeforeReady: c.retriesBeforeReady,
    errorsBeforeReady: c.errorsBeforeReady,
    meetsAllTarget: timeTo(1) !== null && timeTo(1) <= TARGET_ALL_MS,
    meetsRatioTarget: whole.ratio !== null && whole.ratio <= TARGET_RATIO,
  }
}

/**
 * What the backoff formula alone predicts (no CPU, no kernel): every client closes at t = 0, retries
 * on the library's schedule, is refused until OUTAGE_MS and connects at once after it. With `starts`
 * (each client's close, ms after the drop, as measured) and the measured outage, every client's
 * schedule starts when that client saw the drop instead: the spread the server's teardown adds.
 */
function model(jitter, n, starts = null, outageMs = OUTAGE_MS) {
  const { minDelay, maxDelay, factor } = BACKOFF
  const rel = []
  for (let i = 0; i < n; i++) {
    let t = starts ? starts[i % starts.length] : 0
    const phase = Math.random() // 'spread': once per outage
    for (let k = 1; ; k++) {
      const d = Math.min(maxDelay, minDelay * factor ** (k - 1))
      t +=
        jitter === 'spread'
          ? spreadWait(k, phase)
          : jitter === 'full'
            ? Math.random() * d
            : jitter === 'equal'
              ? d / 2 + (Math.random() * d) / 2
              : d
      if (t >= outageMs) {
        rel.push(t - outageMs)
        break
      }
    }
  }
  const s = sortNum(rel)
  const w = spread(buckets(rel), n)
  return { t50: pct(s, 0.5), t99: pct(s, 0.99), t100: s[s.length - 1], peak: w.peak, mean: w.mean, ratio: w.ratio }
}

/**
 * 'spread''s wait before retry k of an outage whose offset on the grid is `phase` (src/backoff.rs,
 * Backoff::spread, written again here for the model): retry k sits at grid position phase + k - 1,
 * and the grid's steps grow by the factor from minDelay until they reach the cap.
 */
function spreadWait(k, phase) {
  const { minDelay: d1, maxDelay: cap, factor: f } = BACKOFF
  if (!(f > 1) || d1 >= cap) return k === 1 ? phase * Math.min(d1, cap) : Math.min(d1, cap)
  const xc = Math.log(cap / d1) / Math.log(f)
  if (k === 1) return phase <= xc ? (d1 * (f ** phase - 1)) / (f - 1) : (cap - d1) / (f - 1) + (phase - xc) * cap
  const x = phase + k - 2
  if (x >= xc) return cap
  if (x + 1 <= xc) return d1 * f ** x
  return (cap - d1 * f ** x) / (f - 1) + (x + 1 - xc) * cap
}

function jitterOf(peer) {
  return peer.startsWith('redial-ws') ? clientConfig(peer).jitter : 'none'
}

function settingsNotes(peers) {
  const b = BACKOFF
  const out = [
    `Backoff for every library: first delay ${b.minDelay} ms, ×${b.factor} per attempt, cap ${b.maxDelay} ms, ` +
      `minUptime ${b.minUptime} ms, connect timeout ${b.connectTimeout} ms, unlimited retries. Outage ${OUTAGE_MS} ms; ` +
      `the N connections are held ${HOLD_MS} ms (> minUptime) before the restart.`,
  ]
  for (const p of peers) {
    if (!p.available) continue
    const o = JSON.stringify(p.options).replace(/"/g, '').replace(/,/g, ', ')
    if (p.name.startsWith('redial-ws')) {
      out.push(
        `${p.name} ${p.version}: ${o}. Jitter '${p.options.jitter}' ` +
          (p.options.jitter === 'spread'
            ? `(retry n waits ${b.minDelay} × ${b.factor}^(n − 2 + phase) ms up to the cap, the phase uniform 0..1 drawn once per outage; ` +
              `the first reconnect waits 0..${b.minDelay} ms). `
            : p.options.jitter === 'full'
              ? `applied after the cap (the first reconnect waits uniform 0..${b.minDelay} ms). `
              : p.options.jitter === 'equal'
                ? `applied after the cap (the first reconnect waits ${b.minDelay / 2} + uniform 0..${b.minDelay / 2} ms). `
                : '(none). ') +
          'Its defaults: minDelay 250, maxDelay 30000, factor 2, minUptime 5000, connectTimeout 10000, pingInterval 30000 (0 here: the others send no pings).',
      )
    } else if (p.name === 'reconnecting-websocket') {
      out.push(
        `${p.name} ${p.version} over ws: ${o}. NO jitter: attempt k waits exactly min × factor^(k−1), so clients dropped together retry together. ` +
          'Its defaults differ: minReconnectionDelay = 1000 + random·4000, drawn ONCE per process (every client of a process shares it), ' +
          'maxReconnectionDelay 10000, minUptime 5000, connectionTimeout 4000.',
      )
    } else if (p.name === 'partysocket') {
      out.push(
        `${p.name} ${p.version} (its ReconnectingWebSocket, partysocket/ws, over ws): ${o}. NO jitter (same schedule as reconnecting-websocket, which it forks). ` +
          'Its defaults differ: minReconnectionDelay 3000 (fixed), maxReconnectionDelay 10000, minUptime 5000, connectionTimeout 4000.',
      )
    }
  }
  out.push(
    'Every client offers permessage-deflate (redial-ws and ws do by default); the server declines it. The server closes with ' +
      'socket.destroy() (no close frame: the clients see 1006).',
  )
  return out
}

// ---------------------------------------------------------------- main

async function main() {
  const started = Date.now()
  const load = os.loadavg()
  const env = {
    ...describeMachine(),
    quick: QUICK,
    requested: REQUESTED,
    clients: N,
    nofile: limits,
    portRange: portRange.join('–'),
    serverPorts: SERVER_PORTS,
    somaxconn: readSys('/proc/sys/net/core/somaxconn'),
    synBacklog: readSys('/proc/sys/net/ipv4/tcp_max_syn_backlog'),
    loadavg: load.map((x) => x.toFixed(2)).join(' '),
    backoff: BACKOFF,
    outageMs: OUTAGE_MS,
    holdMs: HOLD_MS,
    bucketMs: BUCKET_MS,
    targetAllMs: TARGET_ALL_MS,
    targetRatio: TARGET_RATIO,
  }
  console.log(
    `redial-ws reconnect storm — ${N.toLocaleString('en-US')} clients${N !== REQUESTED ? ` (of ${REQUESTED.toLocaleString('en-US')} asked)` : ''}, ` +
      `outage ${OUTAGE_MS} ms; ${env.cpu} × ${env.cores}, Node ${env.node}; open files ${limits.soft}, ` +
      `ports ${env.portRange}, somaxconn ${env.somaxconn}, load ${env.loadavg}`,
  )
  for (const n of notes) console.log(`  NOTE: ${n}`)

  const names = args.peers || PEER_NAMES
  const peers = await Promise.all(names.map(probe))
  for (const p of peers) console.log(`  ${p.name.padEnd(24)} ${p.available ? p.version : `n/a (${p.reason})`}`)

  const runs = {}
  const failures = []
  for (const p of peers) {
    if (!p.available) continue
    const log = (s) => console.log(`  ${p.name.padEnd(24)} ${s}`)
    const run = await runStorm(p.name, log)
    run.figures = figures(run)
    run.model = model(jitterOf(p.name), N)
    if (run.down && run.back && run.client && run.client.closeAt.length) {
      const starts = run.client.closeAt.map((t) => t - run.down.tDown)
      run.modelFromDrop = model(jitterOf(p.name), N, starts, run.back.tBack - run.down.tDown)
    }
    runs[p.name] = run
    const f = run.figures
    if (f) {
      log(
        `${f.reopened}/${f.n} open again; 50% ${fmtMs(f.t50)}, 99% ${fmtMs(f.t99)}, 100% ${fmtMs(f.t100)} after the return; ` +
          `accepts/100 ms peak ${f.peak} mean ${f.mean === null ? '—' : f.mean.toFixed(0)} (×${f.ratio === null ? '—' : f.ratio.toFixed(2)}); ` +
          `CPU ${f.cpuStormMs === null ? '—' : f.cpuStormMs.toFixed(0)} ms (${(run.wallMs / 1000).toFixed(1)} s)`,
      )
    }
    if (!run.ok) {
      log(`FAILED: ${run.error}`)
      failures.push({ peer: p.name, error: run.error, stderr: [run.clientStderr, run.serverStderr].filter(Boolean).join('\n') })
    }
    if (f && f.uncaught && f.uncaught.count) log(`${f.uncaught.count} uncaught exception(s): ${f.uncaught.first}`)
  }

  const report = {
    env,
    peers,
    runs,
    notes: [...notes, ...settingsNotes(peers)],
    failures,
    wallSeconds: (Date.now() - started) / 1000,
  }
  console.log('')
  console.log(renderText(report))
  if (!args.noWrite) {
    const dir = path.join(__dirname, 'results')
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'storm.md'), renderMarkdown(report))
    fs.writeFileSync(path.join(dir, 'storm.svg'), renderSvg(report))
    fs.writeFileSync(path.join(dir, 'storm.json'), JSON.stringify(forJson(report)) + '\n')
    console.log(`\nwrote bench/results/storm.md, storm.svg, storm.json  (${report.wallSeconds.toFixed(1)} s)`)
  }
  if (failures.length) {
    console.log(`\n${failures.length} failure(s):`)
    for (const f of failures) {
      console.log(`  ${f.peer}: ${f.error}`)
      if (f.stderr) console.log('    ' + f.stderr.split('\n').join('\n    '))
    }
    process.exitCode = 1
  }
}

/**
 * The report without the raw event arrays (millions of characters at 10,000 clients): per run the
 * figures, and as samples the server's accept times (ms after the return, 0.1 ms), plus per-100-ms
 * counts of upgrades, reopens, attempts, refusals and closes.
 */
function forJson(report) {
  const runs = {}
  for (const [name, run] of Object.entries(report.runs)) {
    const { client: c, server: s, back, down, ...rest } = run
    const out = { ...rest, down, back }
    if (back && c) {
      const rel = (xs) => Array.from(sortNum(xs.map((t) => Math.round((t - back.tBack) * 10) / 10)))
      const hist = (xs) => {
        const h = {}
        for (const t of xs) {
          const k = Math.floor((t - back.tBack) / BUCKET_MS) * BUCKET_MS
          h[k] = (h[k] || 0) + 1
        }
        return h
      }
      out.samples = {
        note: 'ms after the server listened again; *Per100ms: count per 100 ms bucket starting at the key',
        acceptsMs: s ? rel(s.accepts) : null,
        upgradesPer100ms: s ? hist(s.upgrades) : null,
        reopensPer100ms: hist(c.reopenAt),
        closesPer100ms: hist(c.closeAt),
        attemptsPer100ms: hist(c.attemptTimes),
        refusedPer100ms: hist(c.refusedTimes),
        otherFailuresPer100ms: hist(c.otherErrorTimes),
      }
      out.clientSummary = {
        n: c.n,
        opened: c.opened,
        closed: c.closed,
        reopened: c.reopened,
        closeCodes: c.closeCodes,
        errorCodes: c.errorCodes,
        dropErrors: c.dropErrors,
        metrics: c.metrics,
        stats: c.stats,
        uncaught: c.uncaught,
      }
      out.serverCpuMs = s ? s.cpuSinceRestartMs : null
    }
    runs[name] = out
  }
  return { ...report, runs }
}

function fmtMs(v) {
  return v === null || v === undefined ? '—' : `${Math.round(v)} ms`
}

main().catch((e) => {
  console.error(e)
  killAll()
  process.exit(1)
})
