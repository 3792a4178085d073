'use strict'
// A scripted hot-reload session, start to finish:
//   1. start the dev server (a child process) on a free 127.0.0.1 port;
//   2. start the runtime client (another child process) and push a patch;
//   3. restart the dev server on the same port; the client reconnects by itself;
//   4. push a second patch, which the reconnected client applies;
//   5. stop the client (it disconnects), stop the server; everything exits by itself.
//
//   node examples/hot-reload/run.js
const { spawn } = require('node:child_process')
const { once } = require('node:events')
const path = require('node:path')
const readline = require('node:readline')

const say = (line) => console.log(`[run] ${line}`)
const children = new Set()

/** A child node process whose stdout lines are echoed with a prefix and can be awaited. */
function start(name, script, args) {
  const proc = spawn(process.execPath, [path.join(__dirname, script), ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = []
  const waiters = new Set()
  readline.createInterface({ input: proc.stdout }).on('line', (line) => {
    console.log(`[${name}] ${line}`)
    lines.push(line)
    for (const waiter of waiters) waiter()
  })
  let read = 0
  /** Resolves with the match of the next line (after the previous wait) that matches `re`. */
  const waitFor = (re) =>
    new Promise((resolve) => {
      const check = () => {
        for (; read < lines.length; read++) {
          const match = re.exec(lines[read])
          if (match) {
            read++
            waiters.delete(check)
            resolve(match)
            return
          }
        }
      }
      waiters.add(check)
      check()
    })
  children.add(proc)
  const exited = once(proc, 'exit').then(([code, signal]) => {
    children.delete(proc)
    return code ?? signal
  })
  return { proc, waitFor, exited }
}

async function main() {
  say('starting the dev server on a free port')
  let server = start('server', 'server.js', ['--port', '0'])
  const [, port] = await server.waitFor(/^listening on ws:\/\/127\.0\.0\.1:(\d+)/)
  const url = `ws://127.0.0.1:${port}`

  say('starting the client')
  const client = start('client', 'client.js', [url])
  await client.waitFor(/^connected to /)

  say('pushing patch 1')
  server.proc.stdin.write('app.css body { color: rebeccapurple }\n')
  await client.waitFor(/^applied patch #1 to app\.css/)

  say(`restarting the dev server on port ${port}`)
  server.proc.kill('SIGTERM')
  await client.waitFor(/^connection lost \(1012/)
  const stopped = await server.exited
  if (stopped !== 0) throw new Error(`the dev server exited with ${stopped}`)
  server = start('server', 'server.js', ['--port', port])
  await server.waitFor(/^listening on /)
  await client.waitFor(/^reconnected/)

  say('pushing patch 2')
  server.proc.stdin.write('app.js export const answer = 42\n')
  await client.waitFor(/^applied patch #1 to app\.js/)

  say('stopping the client and the dev server')
  client.proc.stdin.end()
  const [, modules] = await client.waitFor(/^disconnected; modules: (.*)$/)
  const clientExit = await client.exited
  server.proc.kill('SIGTERM')
  const serverExit = await server.exited
  if (clientExit !== 0 || serverExit !== 0) throw new Error(`exit codes: client ${clientExit}, server ${serverExit}`)
  const applied = JSON.parse(modules)
  if (applied['app.css'] !== 'body { color: rebeccapurple }' || applied['app.js'] !== 'export const answer = 42') {
    throw new Error(`the client missed a patch: ${modules}`)
  }
  say('ok: the client applied both patches, across a dev server restart')
}

function fail(message) {
  say(`FAILED: ${message}`)
  for (const child of children) child.kill('SIGKILL')
  process.exit(1)
}

// A watchdog, so that a broken demo fails instead of hanging.
const watchdog = setTimeout(() => fail('timed out'), 30_000)
main().then(
  () => clearTimeout(watchdog),
  (err) => fail(err.message),
)
