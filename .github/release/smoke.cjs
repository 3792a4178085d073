#!/usr/bin/env node
'use strict'
// The release smoke test of one platform package, as a user meets it (.github/workflows/release.yml,
// job `test`, on a machine of that platform):
//
//   node .github/release/smoke.cjs pack <platform> <dir>
//     in a checkout whose npm/<platform>/ holds the built binary: stages the main package
//     (scripts/stage-package.js), packs it and npm/<platform>/ into <dir>, and copies this script
//     there, so that `run` needs nothing but <dir> (the musl runs are in a node:*-alpine container).
//
//   node <dir>/smoke.cjs run <dir> <platform>
//     installs the two tarballs into a brand-new project with npm's defaults (plus `ws` for an echo
//     server), checks that npm took the platform package and that neither package has an install
//     script, then runs a client in a child process: it loads the addon from the platform package,
//     connects to the echo server, gets its echo, disconnects, and the process exits by itself.
//
// Plain CommonJS and node: builtins only; one JSON line of results, exit code 1 on any failure.

const { spawn, spawnSync } = require('node:child_process')
const { once } = require('node:events')
const fs = require('node:fs')
const { createRequire } = require('node:module')
const os = require('node:os')
const path = require('node:path')

const NAME = 'redial-ws'
const CLIENT_TIMEOUT = 30_000 // ms, from spawning the client to its exit
const LIFECYCLE = ['preinstall', 'install', 'postinstall', 'prepare']

function fail(message) {
  console.error(`smoke: ${message}`)
  process.exit(1)
}

/** npm, also on Windows (npm.cmd needs a shell since Node 20.12's fix for CVE-2024-27980). */
function npm(cwd, args) {
  const win = process.platform === 'win32'
  const run = spawnSync(win ? 'npm.cmd' : 'npm', win ? args.map((a) => `"${a}"`) : args, {
    cwd,
    encoding: 'utf8',
    shell: win,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  if (run.status !== 0) fail(`npm ${args.join(' ')} (in ${cwd}) failed:\n${run.stdout}${run.stderr}${run.error ?? ''}`)
  return run.stdout
}

/** The napi-rs platform name of this machine, as lib/native.js computes it. */
function hostPlatform() {
  const { platform, arch } = process
  if (platform === 'linux') return `linux-${arch}-${process.report.getReport().header.glibcVersionRuntime ? 'gnu' : 'musl'}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function pack(platform, dir) {
  const root = path.resolve(__dirname, '..', '..')
  const binary = path.join(root, 'npm', platform, `${NAME}.${platform}.node`)
  if (!fs.existsSync(binary)) fail(`${path.relative(root, binary)} is missing: download the build artifact first`)
  const staged = spawnSync(process.execPath, [path.join(root, 'scripts', 'stage-package.js')], { cwd: root, encoding: 'utf8' })
  if (staged.status !== 0) fail(`scripts/stage-package.js failed:\n${staged.stdout}${staged.stderr}`)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(dir, { recursive: true })
  npm(staged.stdout.trim().split('\n').pop(), ['pack', '--pack-destination', dir])
  npm(path.join(root, 'npm', platform), ['pack', '--pack-destination', dir])
  fs.copyFileSync(__filename, path.join(dir, 'smoke.cjs'))
  console.log(`smoke: packed into ${dir}: ${fs.readdirSync(dir).join(', ')}`)
}

async function run(dir, platform) {
  const host = hostPlatform()
  if (host !== platform) fail(`this machine is ${host} (Node ${process.version}), the package under test is for ${platform}`)
  const tarballs = fs.readdirSync(dir).filter((f) => f.endsWith('.tgz'))
  const platformTarball = tarballs.find((f) => f.startsWith(`${NAME}-${platform}-`))
  const mainTarball = tarballs.find((f) => new RegExp(`^${NAME}-\\d`).test(f))
  if (!platformTarball || !mainTarball || tarballs.length !== 2) fail(`expected the main and the ${platform} tarball in ${dir}, found: ${tarballs.join(', ')}`)

  // A brand-new project, outside any checkout, with npm's defaults.
  const project = fs.mkdtempSync(path.join(os.tmpdir(), `${NAME}-smoke-`))
  fs.writeFileSync(path.join(project, 'package.json'), `${JSON.stringify({ name: 'smoke', version: '1.0.0', private: true }, null, 2)}\n`)
  npm(project, ['install', '--no-audit', '--no-fund', path.join(dir, platformTarball), path.join(dir, mainTarball), 'ws@8'])

  const modules = path.join(project, 'node_modules')
  const manifest = (name) => JSON.parse(fs.readFileSync(path.join(modules, name, 'package.json'), 'utf8'))
  const main = manifest(NAME)
  const native = manifest(`${NAME}-${platform}`)
  for (const pkg of [main, native]) {
    const scripts = LIFECYCLE.filter((s) => pkg.scripts?.[s])
    if (scripts.length) fail(`${pkg.name} has install scripts (${scripts.join(', ')}): npm may block them, the package must not need them`)
  }
  if (main.optionalDependencies?.[native.name] !== main.version || native.version !== main.version)
    fail(`${NAME}@${main.version} does not list ${native.name}@${native.version} as an optional dependency at its own version`)
  const platformPackages = fs.readdirSync(modules).filter((d) => d.startsWith(`${NAME}-`))
  if (platformPackages.join() !== native.name) fail(`npm installed ${platformPackages.join(', ')}; only ${native.name} fits this machine`)

  // The echo server, from the project's own `ws`.
  const { WebSocketServer } = createRequire(path.join(project, 'package.json'))('ws')
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 })
  server.on('connection', (socket) => socket.on('message', (data) => socket.send(`echo: ${data}`)))
  await once(server, 'listening')
  const url = `ws://127.0.0.1:${server.address().port}`

  fs.writeFileSync(
    path.join(project, 'client.cjs'),
    `'use strict'
const { ReconnectingWebSocket, clientStats } = require('${NAME}')
const addons = Object.keys(require.cache).filter((file) => file.endsWith('.node'))
const client = new ReconnectingWebSocket(process.argv[2])
let replied = false
client.on('message', async (data) => {
  if (replied) return
  replied = true
  const { discarded } = await client.disconnect()
  const esm = await import('${NAME}')
  console.log(JSON.stringify({ reply: String(data), discarded, open: clientStats().openConnections, addons, esm: esm.ReconnectingWebSocket === ReconnectingWebSocket }))
})
client.send('hello')
`,
  )
  const childEnv = { ...process.env }
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY']) {
    delete childEnv[name]
    delete childEnv[name.toLowerCase()]
  }
  const child = spawn(process.execPath, [path.join(project, 'client.cjs'), url], { cwd: project, env: childEnv, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (d) => (out += d))
  child.stderr.on('data', (d) => (err += d))
  const killer = setTimeout(() => child.kill('SIGKILL'), CLIENT_TIMEOUT)
  const [code, signal] = await once(child, 'exit')
  clearTimeout(killer)
  server.close()
  if (code !== 0) fail(`the client ${signal ? `was killed after ${CLIENT_TIMEOUT} ms (it did not exit by itself)` : `exited with ${code}`}:\n${out}${err}`)

  const result = JSON.parse(out.trim().split('\n').pop())
  const expectedAddon = fs.realpathSync(path.join(modules, native.name, `${NAME}.${platform}.node`))
  const problems = []
  if (result.reply !== 'echo: hello') problems.push(`reply ${JSON.stringify(result.reply)}`)
  if (result.discarded !== 0) problems.push(`${result.discarded} messages discarded`)
  if (result.open !== 0) problems.push(`${result.open} connections open after disconnect()`)
  if (result.addons.length !== 1 || fs.realpathSync(result.addons[0]) !== expectedAddon)
    problems.push(`addon loaded from ${result.addons.join(', ') || 'nowhere'}, not ${expectedAddon}`)
  if (!result.esm) problems.push('import() gives another ReconnectingWebSocket than require()')
  if (problems.length) fail(`${problems.join('; ')}\n${out}${err}`)

  fs.rmSync(project, { recursive: true, force: true })
  const npmVersion = npm(dir, ['--version']).trim()
  console.log(JSON.stringify({ ok: true, platform, node: process.version, npm: npmVersion, version: main.version, ...result }))
}

const [mode, a, b] = process.argv.slice(2)
if (mode === 'pack' && a && b) pack(a, path.resolve(b))
else if (mode === 'run' && a && b) run(path.resolve(a), b).catch((e) => fail(e?.stack ?? String(e)))
else fail('usage: smoke.cjs pack <platform> <dir> | smoke.cjs run <dir> <platform>')
