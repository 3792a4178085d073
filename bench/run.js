#!/usr/bin/env node
'use strict'
// Benchmark runner: redial-ws against ws, undici's WebSocket and
// reconnecting-websocket. See bench/README.md.
//
//   node bench/run.js [--quick] [--runs N] [--scale F] [--peers a,b] [--only w1,w2] [--timeout S] [--no-ceiling]
//
// Every (workload, peer, run) is measured in a fresh child process against a
// fresh server child process; this process only orchestrates and reports.
// The ceiling rows (the same workload without JavaScript) run benches/ceiling.rs,
// built here with cargo.

const { fork, spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { formatValue, formatRatio, ratioOf, renderText, renderMarkdown, renderSvg } = require('./lib/report')
const { encodeJsonFrames } = require('./lib/deflate')
const { makeCerts } = require('./lib/certs')
const { parseOptions } = require('./lib/args')
const { describeMachine } = require('./lib/machine')
const { live, killAll, killChildrenOnExit, tail } = require('./lib/children')

// ---------------------------------------------------------------- options

const args = parseOptions(
  process.argv.slice(2),
  { quick: 'flag', runs: 'number', scale: 'number', timeout: 'number', peers: 'list', only: 'list', 'no-ceiling': 'flag' },
  { help: () => console.log(fs.readFileSync(path.join(__dirname, 'README.md'), 'utf8')), hint: 'see bench/README.md' },
)
const QUICK = args.quick
const SCALE = args.scale ?? 1
const RUNS = Math.round(args.runs ?? (QUICK ? 1 : 3))
// Quick mode is CI's smoke run: a machine there can run at an eighth of its usual speed (reconnecting-websocket's
// 2,000 churn cycles then take 20 s), and a deadline is for hangs, not slowness.
const TIMEOUT_MS = (args.timeout ?? (QUICK ? 60 : 300)) * 1000
/** A workload's per-run deadline: --timeout if given, else the default or the workload's own minimum. */
const timeoutFor = (wl) => (args.timeout ? TIMEOUT_MS : Math.max(TIMEOUT_MS, wl.minTimeoutMs ?? 0))
const count = (full, quick) => Math.max(1, Math.round((QUICK ? quick : full) * SCALE))
const CEILING = !args.noCeiling

// ---------------------------------------------------------------- peers

const websocketFlag = process.allowedNodeEnvironmentFlags.has('--experimental-websocket') && typeof globalThis.WebSocket !== 'function'

const PEERS = [
  { name: 'redial-ws', file: 'peers/redial-ws.js', reconnects: true, execArgv: [] },
  { name: 'ws', file: 'peers/ws.js', reconnects: false, execArgv: [] },
  // Node 20 ships undici's WebSocket behind a flag.
  // Its WebSocket takes no TLS options: for wss it trusts the bench's CA through NODE_EXTRA_CA_CERTS.
  {
    name: 'undici',
    file: 'peers/undici.js',
    reconnects: false,
    execArgv: websocketFlag ? ['--experimental-websocket'] : [],
    caFromEnv: true,
  },
  { name: 'reconnecting-websocket', file: 'peers/reconnecting-websocket.js', reconnects: true, execArgv: [] },
].filter((p) => !args.peers || args.peers.includes(p.name))

if (PEERS.length === 0) {
  console.error('no peer selected (redial-ws, ws, undici, reconnecting-websocket)')
  process.exit(2)
}

// ---------------------------------------------------------------- workloads

const N = {
  recv64: count(2_000_000, 200_000),
  recv1k: count(500_000, 50_000),
  recv64b: count(2_000_000, 200_000),
  recv64k: count(20_000, 2_000),
  recv64ks: count(20_000, 1_000),
  recv64kh: count(20_000, 2_000),
  send64: count(1_000_000, 100_000),
  send64k: count(20_000, 1_000),
  echo: count(20_000, 2_000),
  echos: count(20_000, 2_000),
  memory: count(10_000, 500),
  memorys: count(2_000, 100),
  churn: count(20_000, 2_000),
  // Full mode only: in --quick it runs only when asked for (--only churnlong), with 2,000 cycles.
  churnlong: count(80_000, 2_000),
  reconnect: QUICK ? 3 : 5,
  recv1kz: count(100_000, 5_000),
  send1kz: count(100_000, 3_000),
  memoryz: count(10_000, 500),
  churnz: count(20_000, 400),
}
// An application's own objects: a client whose messages need mark-compacts pays for all of them.
const LIVE_HEAP_MB = 256
const churnCheckpoints = [Math.max(1, Math.round(N.churn / 4)), N.churn]
const churnzCheckpoints = [Math.max(1, Math.round(N.churnz / 4)), N.churnz]
// Growth from the first to the last; the ones between show the trend (in the notes).
const churnlongCheckpoints = [...new Set([1, 2, 3, 4].map((k) => Math.max(1, Math.round((N.churnlong * k) / 4))))]

// Files the servers read (the compressed frames of recv1kz, the wss key and certificates), removed on exit.
let tmpDir = null
function tmpFile(name) {
  if (!tmpDir) tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'redial-ws-bench-'))
  return path.join(tmpDir, name)
}

// The wss workloads' throwaway CA and server certificate (127.0.0.1), made once, on first use.
let certs = null
function ensureCerts() {
  if (!certs) {
    const dir = tmpFile('tls')
    fs.mkdirSync(dir)
    try {
      certs = { ok: true, ...makeCerts(dir) }
    } catch (e) {
      certs = { ok: false, error: e.message }
    }
  }
  if (!certs.ok) throw new Error(certs.error)
  return certs
}

const ALL_WORKLOADS = [
  {
    id: 'recv64',
    title: `receive 64 B text ×${N.recv64}`,
    server: { mode: 'recv', count: N.recv64, size: 64, binary: false },
    peer: { workload: 'recv', count: N.recv64, size: 64 },
    ceiling: { kind: 'recv' },
    rows: [{ key: 'msgsPerSec', label: 'receive 64 B text', unit: 'msg/s', better: 'higher' }],
  },
  {
    id: 'recv1k',
    title: `receive 1 KiB text ×${N.recv1k}`,
    server: { mode: 'recv', count: N.recv1k, size: 1024, binary: false },
    peer: { workload: 'recv', count: N.recv1k, size: 1024 },
    ceiling: { kind: 'recv' },
    rows: [
      { key: 'msgsPerSec', label: 'receive 1 KiB text', unit: 'msg/s', better: 'higher' },
      { key: 'mbPerSec', label: 'receive 1 KiB text', unit: 'MB/s', better: 'higher' },
    ],
  },
  {
    id: 'recv64b',
    title: `receive 64 B binary ×${N.recv64b}`,
    server: { mode: 'recv', count: N.recv64b, size: 64, binary: true },
    peer: { workload: 'recv', count: N.recv64b, size: 64 },
    ceiling: { kind: 'recv' },
    rows: [{ key: 'msgsPerSec', label: 'receive 64 B binary', unit: 'msg/s', better: 'higher' }],
  },
  {
    id: 'recv64k',
    title: `receive 64 KiB binary ×${N.recv64k}`,
    server: { mode: 'recv', count: N.recv64k, size: 65536, binary: true },
    peer: { workload: 'recv', count: N.recv64k, size: 65536 },
    ceiling: { kind: 'recv' },
    rows: [{ key: 'mbPerSec', label: 'receive 64 KiB binary', unit: 'MB/s', better: 'higher' }],
  },
  {
    id: 'recv64ks',
    title: `receive 64 KiB binary over wss (TLS) ×${N.recv64ks}`,
    tls: true,
    server: { mode: 'recv', count: N.recv64ks, size: 65536, binary: true },
    peer: { workload: 'recv', count: N.recv64ks, size: 65536 },
    ceiling: { kind: 'recv' },
    rows: [{ key: 'mbPerSec', label: 'receive 64 KiB binary, wss', unit: 'MB/s', better: 'higher' }],
  },
  {
    id: 'recv64kh',
    title: `receive 64 KiB binary ×${N.recv64kh} with ${LIVE_HEAP_MB} MB of live objects in the JS heap`,
    server: { mode: 'recv', count: N.recv64kh, size: 65536, binary: true },
    peer: { workload: 'recv', count: N.recv64kh, size: 65536, liveHeapMB: LIVE_HEAP_MB },
    rows: [{ key: 'mbPerSec', label: `receive 64 KiB binary, ${LIVE_HEAP_MB} MB live heap`, unit: 'MB/s', better: 'higher' }],
  },
  {
    id: 'send64',
    title: `send 64 B text ×${N.send64}`,
    server: { mode: 'sink', count: N.send64 },
    peer: { workload: 'send', count: N.send64, size: 64, binary: false },
    rows: [{ key: 'msgsPerSec', label: 'send 64 B text', unit: 'msg/s', better: 'higher' }],
  },
  {
    id: 'send64k',
    title: `send 64 KiB binary ×${N.send64k}`,
    server: { mode: 'sink', count: N.send64k },
    peer: { workload: 'send', count: N.send64k, size: 65536, binary: true },
    rows: [{ key: 'mbPerSec', label: 'send 64 KiB binary', unit: 'MB/s', better: 'higher' }],
  },
  {
    id: 'echo',
    title: `echo RTT, 64 B ×${N.echo} sequential`,
    server: { mode: 'echo' },
    peer: { workload: 'echo', count: N.echo, size: 64, warmup: QUICK ? 200 : 1000 },
    // The floor: plain TCP round trips of 64 B against a byte echo server (Rust and Node clients).
    ceiling: { kind: 'echo' },
    rows: [
      { key: 'p50us', label: 'echo RTT p50', unit: 'µs', better: 'lower' },
      { key: 'p99us', label: 'echo RTT p99', unit: 'µs', better: 'lower' },
    ],
  },
  {
    id: 'echos',
    title: `echo RTT over wss (TLS), 64 B ×${N.echos} sequential`,
    tls: true,
    server: { mode: 'echo' },
    peer: { workload: 'echo', count: N.echos, size: 64, warmup: QUICK ? 200 : 1000 },
    rows: [
      { key: 'p50us', label: 'echo RTT p50, wss', unit: 'µs', better: 'lower' },
      { key: 'p99us', label: 'echo RTT p99, wss', unit: 'µs', better: 'lower' },
    ],
  },
  {
    id: 'memory',
    // RSS settled waits up to 30 s for V8's memory reducer (peers/harness.js).
    minTimeoutMs: 90_000,
    title: `idle memory, ${N.memory} open connections`,
    server: { mode: 'wss' },
    peer: { workload: 'memory', count: N.memory, concurrency: 100 },
    rows: [
      { key: 'rssKiBPerConn', label: `idle memory (${N.memory} conns), RSS`, unit: 'KiB/conn', better: 'lower' },
      { key: 'settledRssKiBPerConn', label: `idle memory (${N.memory} conns), RSS settled`, unit: 'KiB/conn', better: 'lower' },
      { key: 'heapKiBPerConn', label: `idle memory (${N.memory} conns), JS heap`, unit: 'KiB/conn', better: 'lower' },
    ],
  },
  {
    id: 'memorys',
    // RSS settled waits up to 30 s for V8's memory reducer (peers/harness.js).
    minTimeoutMs: 90_000,
    title: `idle memory, ${N.memorys} open wss (TLS) connections`,
    tls: true,
    server: { mode: 'wss' },
    peer: { workload: 'memory', count: N.memorys, concurrency: 100 },
    rows: [
      { key: 'rssKiBPerConn', label: `idle memory, wss (${N.memorys} conns), RSS`, unit: 'KiB/conn', better: 'lower' },
      { key: 'settledRssKiBPerConn', label: `idle memory, wss (${N.memorys} conns), RSS settled`, unit: 'KiB/conn', better: 'lower' },
      { key: 'heapKiBPerConn', label: `idle memory, wss (${N.memorys} conns), JS heap`, unit: 'KiB/conn', better: 'lower' },
    ],
  },
  {
    id: 'churn',
    title: `connect+close churn ×${N.churn}`,
    server: { mode: 'accept' },
    peer: { workload: 'churn', cycles: N.churn, checkpoints: churnCheckpoints },
    rows: [
      { key: 'cyclesPerSec', label: 'connect+close churn', unit: 'cycles/s', better: 'higher' },
      { key: 'cpuUsPerCycle', label: 'churn: CPU per cycle, all threads', unit: 'µs', better: 'lower' },
      { key: 'switchesPerCycle', label: 'churn: context switches per cycle', unit: 'per cycle', better: 'lower' },
      {
        key: 'rssGrowthMiB',
        label: `churn RSS growth, cycle ${churnCheckpoints[0]}→${churnCheckpoints[1]}`,
        unit: 'MiB',
        better: 'lower',
        signed: true,
      },
    ],
  },
  {
    id: 'churnlong',
    title: `long connect+close churn ×${N.churnlong} (RSS after gc at cycles ${churnlongCheckpoints.join(', ')})`,
    fullOnly: true,
    // 80,000 cycles take a few minutes per run on 2 cores: a longer deadline unless --timeout says otherwise.
    minTimeoutMs: 900_000,
    server: { mode: 'accept' },
    peer: { workload: 'churn', cycles: N.churnlong, checkpoints: churnlongCheckpoints },
    rows: [
      { key: 'cyclesPerSec', label: `long churn (${N.churnlong} cycles)`, unit: 'cycles/s', better: 'higher' },
      {
        key: 'rssGrowthKiB',
        label: `long churn: RSS growth, cycle ${churnlongCheckpoints[0]}→${N.churnlong}`,
        unit: 'KiB',
        better: 'lower',
        signed: true,
      },
    ],
  },
  {
    id: 'recv1kz',
    title: `receive 1 KiB JSON-like text, permessage-deflate (context takeover) ×${N.recv1kz}`,
    // The frames are compressed once, here, before the runs (see prepare): every peer gets the same bytes.
    server: { mode: 'recv', count: N.recv1kz },
    async prepare() {
      const t0 = Date.now()
      const { frames, wireBytes, rawBytes } = await encodeJsonFrames(N.recv1kz, 1024)
      const framesFile = tmpFile(`recv1kz-${N.recv1kz}.bin`)
      fs.writeFileSync(framesFile, frames)
      return {
        server: { framesFile },
        note:
          `recv1kz: ${N.recv1kz} messages, ${rawBytes} B of text sent as ${wireBytes} B of frames ` +
          `(${(rawBytes / wireBytes).toFixed(2)}:1; compressed in ${((Date.now() - t0) / 1000).toFixed(1)} s before the runs)`,
      }
    },
    peer: { workload: 'recv', count: N.recv1kz, size: 1024, json: true, deflate: true },
    rows: [{ key: 'msgsPerSec', label: 'receive 1 KiB JSON, deflate', unit: 'msg/s', better: 'higher' }],
  },
  {
    id: 'send1kz',
    title: `send 1 KiB JSON-like text, permessage-deflate (context takeover) ×${N.send1kz}`,
    server: { mode: 'sink', count: N.send1kz, deflate: { size: 1024, pool: 1024 } },
    peer: { workload: 'send', count: N.send1kz, size: 1024, json: true, pool: 1024, deflate: true, verify: true },
    rows: [{ key: 'msgsPerSec', label: 'send 1 KiB JSON, deflate', unit: 'msg/s', better: 'higher' }],
  },
  {
    id: 'memoryz',
    // RSS settled waits up to 30 s for V8's memory reducer (peers/harness.js).
    minTimeoutMs: 90_000,
    title: `idle memory, ${N.memoryz} open connections, permessage-deflate negotiated`,
    server: { mode: 'wss', deflate: true },
    peer: { workload: 'memory', count: N.memoryz, concurrency: 100, deflate: true },
    rows: [
      { key: 'rssKiBPerConn', label: `idle memory, deflate (${N.memoryz} conns), RSS`, unit: 'KiB/conn', better: 'lower' },
      { key: 'settledRssKiBPerConn', label: `idle memory, deflate (${N.memoryz} conns), RSS settled`, unit: 'KiB/conn', better: 'lower' },
      { key: 'heapKiBPerConn', label: `idle memory, deflate (${N.memoryz} conns), JS heap`, unit: 'KiB/conn', better: 'lower' },
    ],
  },
  {
    id: 'churnz',
    title: `connect+close churn, permessage-deflate negotiated ×${N.churnz}`,
    server: { mode: 'accept', deflate: true },
    peer: { workload: 'churn', cycles: N.churnz, checkpoints: churnzCheckpoints, deflate: true },
    rows: [
      { key: 'cyclesPerSec', label: 'connect+close churn, deflate', unit: 'cycles/s', better: 'higher' },
      {
        key: 'rssGrowthMiB',
        label: `churn, deflate: RSS growth, cycle ${churnzCheckpoints[0]}→${churnzCheckpoints[1]}`,
        unit: 'MiB',
        better: 'lower',
        signed: true,
      },
    ],
  },
  {
    id: 'reconnect',
    title: `reconnect after a 200 ms outage, median of ${N.reconnect}`,
    server: { mode: 'flap', downMs: 200 },
    peer: { workload: 'reconnect', repeats: N.reconnect },
    reconnectOnly: true,
    rows: [
      { key: 'overheadMs', label: 'reconnect: attempt start → open', unit: 'ms', better: 'lower' },
      { key: 'listenToOpenMs', label: 'reconnect: server back → open', unit: 'ms', better: 'lower' },
    ],
  },
]
// Full-mode-only workloads are left out of --quick unless named with --only.
const SKIPPED = ALL_WORKLOADS.filter((w) => !args.only && QUICK && w.fullOnly).map((w) => w.id)
const WORKLOADS = ALL_WORKLOADS.filter((w) => (args.only ? args.only.includes(w.id) : !SKIPPED.includes(w.id)))

if (WORKLOADS.length === 0) {
  console.error(`no workload selected (${ALL_WORKLOADS.map((w) => w.id).join(', ')})`)
  process.exit(2)
}

// ---------------------------------------------------------------- child processes

killChildrenOnExit(() => {
  if (tmpDir) fs.rmSync(tmpDir, { recursive: true, force: true })
})

// (Node raises its soft limit of open files to the hard limit by itself at startup; when even
// the hard limit is too low, the memory workload reports EMFILE and how many connections it got.)
const STDIO = ['ignore', 'pipe', 'pipe', 'ipc']

/** Forks `file`; resolves with the first { type: 'result' } message and how the process ended. */
function runChild(file, argv, execArgv, timeoutMs, env = null) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint()
    const child = fork(path.join(__dirname, file), argv, { execArgv, stdio: STDIO, ...(env && { env: { ...process.env, ...env } }) })
    live.add(child)
    let out = ''
    let err = ''
    let msg = null
    let timedOut = false
    child.stdout.on('data', (d) => (out = (out + d).slice(-8192)))
    child.stderr.on('data', (d) => (err = (err + d).slice(-8192)))
    child.on('message', (m) => {
      if (m && m.type === 'result' && msg === null) msg = m
    })
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (e) => (err += `\n[spawn error] ${e.message}`))
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      live.delete(child)
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      const base = { ms, code, signal, stderr: tail(err), stdout: tail(out) }
      if (timedOut) return resolve({ ...base, ok: false, error: `timed out after ${timeoutMs / 1000} s (killed)`, crashed: true })
      if (msg === null) {
        return resolve({ ...base, ok: false, error: `exited (code ${code}, signal ${signal}) without a result`, crashed: true })
      }
      if (!msg.ok) return resolve({ ...base, ok: false, error: msg.error, crashed: false })
      resolve({ ...base, ok: true, result: msg.result })
    })
  })
}

/** Runs an executable that prints one JSON result on stdout (the ceiling); resolves like runChild. */
function runExec(file, argv, timeoutMs) {
  return new Promise((resolve) => {
    const t0 = process.hrtime.bigint()
    const child = spawn(file, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    let out = ''
    let err = ''
    let timedOut = false
    child.stdout.on('data', (d) => (out = (out + d).slice(-8192)))
    child.stderr.on('data', (d) => (err = (err + d).slice(-8192)))
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.on('error', (e) => (err += `\n[spawn error] ${e.message}`))
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      live.delete(child)
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      const base = { ms, code, signal, stderr: tail(err), stdout: tail(out) }
      if (timedOut) return resolve({ ...base, ok: false, error: `timed out after ${timeoutMs / 1000} s (killed)`, crashed: true })
      if (code !== 0) return resolve({ ...base, ok: false, error: tail(err, 300) || `exited (code ${code}, signal ${signal})` })
      try {
        resolve({ ...base, ok: true, result: JSON.parse(out.trim().split('\n').pop()) })
      } catch {
        resolve({ ...base, ok: false, error: `no JSON result on stdout: ${tail(out, 300)}` })
      }
    })
  })
}

// ---------------------------------------------------------------- ceiling (Rust, no JS)

/**
 * Builds benches/ceiling.rs with cargo (release profile: the addon's optimisation settings) for
 * the host triple, as `napi build` does, so that the two share compiled dependencies in
 * target/<triple>/release. Cargo does nothing when it is up to date. Resolves with
 * { file } or { na: reason } (no cargo) or { error } (the build failed).
 */
function buildCeiling() {
  const root = path.join(__dirname, '..')
  let host
  try {
    host = /^host: (\S+)/m.exec(execFileSync('rustc', ['-vV'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString())[1]
  } catch {
    return Promise.resolve({ na: 'no Rust toolchain (rustc) to build benches/ceiling.rs' })
  }
  const argv = ['build', '--release', '--target', host, '--bench', 'ceiling', '--message-format=json-render-diagnostics']
  return new Promise((resolve) => {
    const t0 = Date.now()
    const child = spawn('cargo', argv, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] })
    live.add(child)
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err = (err + d).slice(-16384)))
    child.on('error', (e) => {
      if (e.code === 'ENOENT') err = 'cargo not found'
    })
    child.on('close', (code) => {
      live.delete(child)
      const seconds = (Date.now() - t0) / 1000
      if (err === 'cargo not found') return resolve({ na: 'cargo not found (it builds benches/ceiling.rs)' })
      let file = null
      let fresh = false
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue
        try {
          const m = JSON.parse(line)
          if (m.reason === 'compiler-artifact' && m.target && m.target.name === 'ceiling' && m.executable) {
            file = m.executable
            fresh = m.fresh
          }
        } catch {}
      }
      if (code !== 0 || !file) return resolve({ error: `cargo ${argv.join(' ')} failed (code ${code})`, stderr: tail(err) })
      resolve({ file, fresh, seconds, command: `cargo ${argv.slice(0, -1).join(' ')}` })
    })
  })
}

/**
 * One run of a workload's ceiling, each client against a fresh server. recv: the Rust frame reader
 * reads the same frames from the same server; echo: plain TCP round trips (Rust and Node clients,
 * the lower figure of each kept).
 */
async function runCeiling(wl, bin) {
  const one = async (server, start) => {
    let srv
    try {
      srv = await startServer(server)
    } catch (e) {
      return { ok: false, error: `server: ${e.message}` }
    }
    const r = await start(srv.port)
    const s = await stopServer(srv)
    if (r.ok && !s.alive) return { ...r, ok: false, error: `server died during the run: ${tail(srv.stderr())}` }
    return r
  }
  if (wl.ceiling.kind === 'recv') {
    const { count, size } = wl.peer
    return one(wl.server, (port) => {
      const url = `${wl.tls ? 'wss' : 'ws'}://127.0.0.1:${port}/`
      return runExec(bin.file, ['recv', url, String(count), String(size), ...(wl.tls ? [wl.peer.caFile] : [])], TIMEOUT_MS)
    })
  }
  // echo
  const { count, size, warmup } = wl.peer
  const rust = await one({ mode: 'tcpecho' }, (port) =>
    runExec(bin.file, ['tcp-echo', String(port), String(count), String(size), String(warmup)], TIMEOUT_MS),
  )
  const node = await one({ mode: 'tcpecho' }, (port) =>
    runChild('peers/net-echo.js', [JSON.stringify({ port, count, size, warmup })], [], TIMEOUT_MS),
  )
  if (!rust.ok && !node.ok) return { ...rust, error: `rust: ${rust.error}; node: ${node.error}` }
  const clients = { rust: rust.ok ? rust.result : null, node: node.ok ? node.result : null }
  const lower = (k) => Math.min(...Object.values(clients).filter(Boolean).map((c) => c[k]))
  return {
    ok: true,
    ms: (rust.ms ?? 0) + (node.ms ?? 0),
    result: { p50us: lower('p50us'), p99us: lower('p99us'), clients },
    partialError: rust.ok ? (node.ok ? null : `node: ${node.error}`) : `rust: ${rust.error}`,
  }
}

function startServer(config) {
  return new Promise((resolve, reject) => {
    const child = fork(path.join(__dirname, 'server.js'), [JSON.stringify(config)], { execArgv: [], stdio: STDIO })
    live.add(child)
    let err = ''
    child.stderr.on('data', (d) => (err = (err + d).slice(-4096)))
    child.stdout.resume()
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`server ${config.mode} did not start in 10 s`))
    }, 10000)
    child.once('message', (m) => {
      clearTimeout(timer)
      if (m && m.type === 'listening') resolve({ child, port: m.port, stderr: () => err })
      else reject(new Error(`server ${config.mode}: unexpected message ${JSON.stringify(m)}`))
    })
    child.once('exit', (code, signal) => {
      live.delete(child)
      clearTimeout(timer)
      reject(new Error(`server ${config.mode} exited (code ${code}, signal ${signal}): ${tail(err)}`))
    })
  })
}

function stopServer(server) {
  return new Promise((resolve) => {
    const { child } = server
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ alive: false })
    child.removeAllListeners('exit')
    child.once('exit', () => {
      live.delete(child)
      resolve({ alive: true })
    })
    child.kill('SIGKILL')
  })
}

// ---------------------------------------------------------------- run

function median(xs) {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b)
  if (!s.length) return null
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

async function main() {
  const started = Date.now()
  const env = {
    ...describeMachine(),
    quick: QUICK,
    runs: RUNS,
    scale: SCALE,
  }
  console.log(
    `redial-ws bench — ${QUICK ? 'quick' : 'full'} mode, ${RUNS} run(s)${SCALE !== 1 ? `, counts ×${SCALE}` : ''}; ` +
      `${env.cpu} × ${env.cores}, Node ${env.node}`,
  )

  // Which peers can run here.
  const failures = []
  const peers = []
  for (const p of PEERS) {
    const r = await runChild(p.file, [JSON.stringify({ workload: 'probe' })], ['--expose-gc', ...p.execArgv], 30000)
    if (!r.ok) {
      failures.push({ peer: p.name, workload: 'load', error: r.error, stderr: r.stderr })
      peers.push({ ...p, available: false, reason: `failed to load: ${r.error}`, failed: true })
    } else {
      peers.push({ ...p, available: r.result.available, reason: r.result.reason, version: r.result.version })
    }
    const q = peers[peers.length - 1]
    console.log(`  ${q.name.padEnd(24)} ${q.available ? q.version : `n/a (${q.reason})`}`)
  }
  if (!peers.some((p) => p.name === 'ws' && p.available)) console.log('  (ws is not available: no ratios)')
  const notesBefore = []
  for (const id of SKIPPED) {
    const note = `${id}: full mode only, skipped in --quick (\`--quick --only ${id}\` runs it with ${N[id]} cycles)`
    notesBefore.push(note)
    console.log(`  ${note}`)
  }

  // The ceiling (Rust, no JS): built once, before the runs.
  const withCeiling = WORKLOADS.filter((w) => w.ceiling)
  let ceiling = null // { file } | { na } | { error }
  if (withCeiling.length && !CEILING) {
    ceiling = { na: 'skipped (--no-ceiling)' }
  } else if (withCeiling.length) {
    process.stdout.write('  ceiling (Rust, no JS): cargo build --release --bench ceiling … ')
    ceiling = await buildCeiling()
    if (ceiling.file) {
      console.log(`${ceiling.fresh ? 'up to date' : 'built'} (${ceiling.seconds.toFixed(1)} s)`)
      if (!ceiling.fresh) notesBefore.push(`ceiling: benches/ceiling.rs built before the runs in ${ceiling.seconds.toFixed(0)} s (${ceiling.command})`)
    } else if (ceiling.na) {
      console.log(`n/a (${ceiling.na})`)
    } else {
      console.log(`FAILED: ${ceiling.error}`)
      failures.push({ peer: 'ceiling', workload: 'build', error: ceiling.error, stderr: ceiling.stderr })
    }
  }
  if (ceiling && !ceiling.file && CEILING) notesBefore.push(`ceiling (Rust, no JS): ${ceiling.na ? `n/a: ${ceiling.na}` : `FAIL: ${ceiling.error}`}`)
  console.log('')

  // results[workload][peer] = { runs: [result|null], errors: [], na }; ceilings[workload] likewise.
  const results = {}
  const ceilings = {}
  const prepNotes = []
  for (const wl of WORKLOADS) {
    results[wl.id] = {}
    if (wl.ceiling) ceilings[wl.id] = { runs: [], errors: [], na: ceiling.file ? null : ceiling.na ? 'n/a' : 'FAIL' }
    if ((wl.prepare || wl.tls) && (peers.some((p) => p.available) || (wl.ceiling && ceiling.file))) {
      try {
        if (wl.tls) {
          // wss: the server gets the key and certificate, the peers (and the ceiling) the CA.
          const { keyFile, certFile, caFile } = ensureCerts()
          wl.server = { ...wl.server, tls: { keyFile, certFile } }
          wl.peer = { ...wl.peer, caFile }
        }
        const prep = wl.prepare ? await wl.prepare() : {}
        wl.server = { ...wl.server, ...prep.server }
        if (prep.note) {
          prepNotes.push(prep.note)
          console.log(`  ${prep.note}`)
        }
      } catch (e) {
        failures.push({ peer: 'server', workload: wl.id, error: `prepare: ${e.message}` })
        console.log(`  ${wl.id.padEnd(10)} PREPARE FAILED: ${e.message}`)
        for (const p of peers) results[wl.id][p.name] = { runs: [], errors: [`prepare: ${e.message}`], na: 'FAIL' }
        if (wl.ceiling && !ceilings[wl.id].na) ceilings[wl.id].na = 'FAIL'
        continue
      }
    }
    for (const p of peers) {
      const cell = { runs: [], errors: [], na: null }
      if (!p.available) cell.na = p.failed ? 'FAIL' : 'n/a'
      else if (wl.reconnectOnly && !p.reconnects) cell.na = 'n/a'
      results[wl.id][p.name] = cell
    }
    for (let run = 1; run <= RUNS; run++) {
      for (const p of peers) {
        const cell = results[wl.id][p.name]
        if (cell.na) continue
        let server
        try {
          server = await startServer(wl.server)
        } catch (e) {
          failures.push({ peer: 'server', workload: wl.id, error: e.message })
          cell.errors.push(`server: ${e.message}`)
          console.log(`  ${wl.id.padEnd(10)} run ${run}/${RUNS}  ${p.name.padEnd(24)} SERVER FAILED: ${e.message}`)
          continue
        }
        const cfg = { ...wl.peer, url: `${wl.tls ? 'wss' : 'ws'}://127.0.0.1:${server.port}/` }
        const env = wl.tls && p.caFromEnv ? { NODE_EXTRA_CA_CERTS: wl.peer.caFile } : null
        const r = await runChild(p.file, [JSON.stringify(cfg)], ['--expose-gc', ...p.execArgv], timeoutFor(wl), env)
        const s = await stopServer(server)
        if (!s.alive) {
          const msg = `server died during the run: ${tail(server.stderr())}`
          failures.push({ peer: 'server', workload: wl.id, error: msg })
          cell.errors.push(msg)
        }
        let line = `  ${wl.id.padEnd(10)} run ${run}/${RUNS}  ${p.name.padEnd(24)}`
        if (r.ok && r.result && r.result.na) {
          cell.na = 'n/a'
          line += ` n/a (${r.result.na})`
        } else if (r.ok) {
          cell.runs.push(r.result)
          line += ' ' + wl.rows.map((row) => `${formatValue(r.result[row.key], row)} ${row.unit}`).join(', ')
          if (r.result.emfile || (r.result.failed && r.result.firstError)) {
            line += `  [opened ${r.result.opened}/${r.result.requested}: ${r.result.firstError}]`
          }
          if (r.result.verified === false) line += `  [SERVER CHECK FAILED: ${r.result.verifyNote}]`
        } else {
          cell.errors.push(r.error)
          failures.push({ peer: p.name, workload: wl.id, run, error: r.error, stderr: r.stderr, crashed: r.crashed })
          line += ` FAILED: ${r.error}`
        }
        console.log(`${line}  (${(r.ms / 1000).toFixed(1)} s)`)
      }
      const cc = ceilings[wl.id]
      if (cc && !cc.na) {
        const r = await runCeiling(wl, ceiling)
        let line = `  ${wl.id.padEnd(10)} run ${run}/${RUNS}  ${'ceiling (Rust, no JS)'.padEnd(24)}`
        if (r.ok) {
          cc.runs.push(r.result)
          line += ' ' + wl.rows.map((row) => `${formatValue(r.result[row.key], row)} ${row.unit}`).join(', ')
          if (r.result.clients) {
            const c = r.result.clients
            const show = (x) => (x ? `p50 ${formatValue(x.p50us, { unit: 'µs' })}, p99 ${formatValue(x.p99us, { unit: 'µs' })}` : 'failed')
            line += `  [TCP echo, Rust std: ${show(c.rust)}; Node net: ${show(c.node)}]`
          }
          if (r.partialError) {
            cc.errors.push(r.partialError)
            failures.push({ peer: 'ceiling', workload: wl.id, run, error: r.partialError })
          }
        } else {
          cc.errors.push(r.error)
          failures.push({ peer: 'ceiling', workload: wl.id, run, error: r.error, stderr: r.stderr, crashed: r.crashed })
          line += ` FAILED: ${r.error}`
        }
        console.log(`${line}  (${(r.ms / 1000).toFixed(1)} s)`)
      }
    }
  }

  // Medians per row and peer.
  const rows = []
  for (const wl of WORKLOADS) {
    for (const row of wl.rows) {
      const values = {}
      for (const p of peers) {
        const cell = results[wl.id][p.name]
        if (cell.na) values[p.name] = { na: cell.na }
        else if (cell.runs.length === 0) values[p.name] = { na: 'FAIL' }
        else {
          values[p.name] = {
            value: median(cell.runs.map((r) => r[row.key])),
            partial: cell.errors.length > 0,
            // The server found what the peer sent wrong (e.g. not compressed): the figure is shown, marked.
            flagged: cell.runs.some((r) => r.verified === false),
          }
        }
      }
      const cc = ceilings[wl.id]
      let ceil = null
      if (cc) {
        if (cc.na) ceil = { na: cc.na }
        else if (cc.runs.length === 0) ceil = { na: 'FAIL' }
        else ceil = { value: median(cc.runs.map((r) => r[row.key])), partial: cc.errors.length > 0 }
      }
      rows.push({ workload: wl.id, ...row, values, ceiling: ceil })
    }
  }
  for (const row of rows) {
    const base = row.values.ws && row.values.ws.value
    for (const p of peers) {
      const v = row.values[p.name]
      v.ratio = v.value != null && base != null ? ratioOf(v.value, base, row) : null
    }
    // redial-ws's share of the limit: ↑ rows redial-ws ÷ ceiling, ↓ rows floor ÷ redial-ws (1 = at the limit).
    const r = row.values['redial-ws']
    const c = row.ceiling && row.ceiling.value
    if (r && r.value > 0 && c > 0) r.ofCeiling = row.better === 'higher' ? r.value / c : c / r.value
  }

  const notes = [...notesBefore, ...prepNotes, ...collectNotes(peers, results), ...ceilingNotes(ceilings)]
  const wallSeconds = (Date.now() - started) / 1000
  const report = {
    env,
    peers,
    workloads: WORKLOADS,
    rows,
    notes,
    failures,
    wallSeconds,
    // Whether the table has the ceiling columns (some selected workload has one, and no --no-ceiling).
    ceiling: withCeiling.length > 0 && CEILING,
  }

  console.log('')
  console.log(renderText(report))
  const dir = path.join(__dirname, 'results')
  fs.mkdirSync(dir, { recursive: true })
  // A quick run is a smoke test: it never replaces the run of record (quick.* is not committed).
  const name = QUICK ? 'quick' : 'latest'
  fs.writeFileSync(path.join(dir, `${name}.md`), renderMarkdown(report))
  fs.writeFileSync(path.join(dir, `${name}.svg`), renderSvg(report))
  fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify({ ...report, results, ceilings }, null, 2) + '\n')
  console.log(`\nwrote bench/results/${name}.md, ${name}.svg, ${name}.json  (${wallSeconds.toFixed(1)} s)`)
  if (failures.length) {
    console.log(`\n${failures.length} failure(s):`)
    for (const f of failures) {
      console.log(`  ${f.workload} / ${f.peer}${f.run ? ` run ${f.run}` : ''}: ${f.error}`)
      if (f.stderr) console.log('    ' + f.stderr.split('\n').join('\n    '))
    }
    process.exitCode = 1
  }
}

/** The ceiling's details: the echo floor's two clients. */
function ceilingNotes(ceilings) {
  const notes = []
  const echo = ceilings.echo
  if (echo && echo.runs.length) {
    const fmt = (c) => (c ? `${c.p50us.toFixed(1)}/${c.p99us.toFixed(1)}` : 'failed')
    const parts = echo.runs.map((r) => `Rust std ${fmt(r.clients.rust)}, Node net ${fmt(r.clients.node)}`)
    notes.push(`ceiling: echo floor = plain TCP round trip of 64 B, the lower of two clients, p50/p99 µs per run: ${parts.join('; ')}`)
  }
  return notes
}

/** Side facts worth printing: reduced connection counts, churn RSS checkpoints, server checks, reconnect samples. */
function collectNotes(peers, results) {
  const notes = []
  for (const p of peers) {
    for (const id of ['memory', 'memoryz', 'memorys']) {
      const mem = results[id] && results[id][p.name]
      if (!mem || !mem.runs.length) continue
      const short = mem.runs.filter((r) => r.opened < r.requested)
      if (short.length) {
        const r = short[0]
        notes.push(
          `${p.name}: ${id}: idle memory measured with ${r.opened} of ${r.requested} connections` +
            (r.emfile ? ' (EMFILE: raise `ulimit -n`)' : '') +
            ` — first error: ${r.firstError}`,
        )
      }
      const settled = mem.runs.filter((r) => 'settledBy' in r)
      if (settled.length) {
        const how = { reducer: "V8's memory reducer", gc: 'a forced GC', null: 'nothing (measured after 30 s)' }
        const parts = settled.map((r) => `${(r.settleMs / 1000).toFixed(1)} s, ${how[r.settledBy]}`)
        notes.push(`${p.name}: ${id}: RSS settled: the young generation shrank back after ${parts.join('; ')}`)
      }
      const ctx = mem.runs.map((r) => r.stats && r.stats.deflateContexts).filter((x) => typeof x === 'number')
      if (id === 'memoryz' && ctx.length) notes.push(`${p.name}: memoryz: clientStats().deflateContexts while idle: ${ctx.join(', ')}`)
    }
    for (const id of ['churn', 'churnz', 'churnlong']) {
      const ch = results[id] && results[id][p.name]
      if (!ch || !ch.runs.length) continue
      const parts = ch.runs.map((r) =>
        Object.entries(r.rssMiB)
          .map(([k, v]) => `${v.toFixed(1)} MiB @${k}`)
          .join(' → '),
      )
      notes.push(`${p.name}: ${id} RSS after gc: ${parts.join('; ')}`)
    }
    for (const [id, cell] of Object.entries(results)) {
      const checked = cell[p.name] ? cell[p.name].runs.filter((r) => r.verified !== undefined) : []
      if (!checked.length) continue
      const bad = checked.filter((r) => !r.verified)
      const r = bad[0] || checked[0]
      notes.push(
        `${p.name}: ${id}: server check ${bad.length ? `FAILED in ${bad.length} of ${checked.length} run(s)` : 'ok'}: ${r.verifyNote}` +
          (r.wireBytesPerMsg ? ` (${r.wireBytesPerMsg.toFixed(0)} B per message on the wire)` : ''),
      )
    }
    const rc = results.reconnect && results.reconnect[p.name]
    if (rc && rc.runs.length) {
      const all = rc.runs.flatMap((r) => r.overheadsMs.map((x) => x.toFixed(2)))
      notes.push(`${p.name}: reconnect attempt start → open samples (ms): ${all.join(', ')}`)
    }
  }
  return notes
}

main().catch((e) => {
  console.error(e)
  killAll()
  process.exit(1)
})
