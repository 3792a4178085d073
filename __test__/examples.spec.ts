// The runnable examples, run as child processes the way a reader runs them:
// they must finish by themselves, with exit code 0 and the expected outcome.
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import test from 'ava'

const root = fileURLToPath(new URL('..', import.meta.url))

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  lines: string[]
  stderr: string
}

/** Runs `node ...args` from the repository root until it exits by itself (killed after `ms`). */
function run(args: string[], ms = 60_000): Promise<Run> {
  const env = { ...process.env }
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy']) delete env[name]
  const proc = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  proc.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  proc.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const killer = setTimeout(() => proc.kill('SIGKILL'), ms)
  return new Promise((resolve) => {
    proc.on('close', (code, signal) => {
      clearTimeout(killer)
      resolve({ code, signal, lines: stdout.split('\n').filter(Boolean), stderr })
    })
  })
}

/** Asserts that `patterns` match lines of `lines` in this order (other lines may come between). */
function inOrder(lines: string[], patterns: RegExp[]): string | null {
  let i = 0
  for (const pattern of patterns) {
    while (i < lines.length && !pattern.test(lines[i])) i++
    if (i === lines.length) return `no line matching ${pattern} (in order) in:\n${lines.join('\n')}`
    i++
  }
  return null
}

test('hot-reload: the client applies patches across a dev server restart, and everything exits', async (t) => {
  const r = await run(['examples/hot-reload/run.js'])
  const output = `${r.lines.join('\n')}\n${r.stderr}`
  t.is(r.code, 0, output)

  const client = r.lines.filter((l) => l.startsWith('[client] '))
  t.is(
    inOrder(client, [
      /^\[client\] connected to ws:\/\/127\.0\.0\.1:\d+$/,
      /^\[client\] applied patch #1 to app\.css: body \{ color: rebeccapurple \}$/,
      /^\[client\] connection lost \(1012 dev server restarting\), reconnecting$/,
      /^\[client\] reconnected \(reconnect #1\)$/,
      /^\[client\] dev server restarted \(build [0-9a-f]+ -> [0-9a-f]+\)$/,
      /^\[client\] applied patch #1 to app\.js: export const answer = 42$/,
      /^\[client\] disconnected; modules: \{"app\.css":"body \{ color: rebeccapurple \}","app\.js":"export const answer = 42"\}$/,
    ]),
    null,
  )
  // Two server processes, on the same port.
  const ports = r.lines.map((l) => /^\[server\] listening on ws:\/\/127\.0\.0\.1:(\d+) /.exec(l)?.[1]).filter(Boolean)
  t.is(ports.length, 2, output)
  t.is(ports[0], ports[1])
  t.is(r.lines.filter((l) => l.startsWith('[client] reconnected')).length, 1, output)
  t.is(r.lines.at(-1), '[run] ok: the client applied both patches, across a dev server restart')
})

test('chat load: hundreds of clients connect, reconnect and disconnect; every figure returns to baseline', async (t) => {
  const r = await run(['--expose-gc', 'examples/chat/load.js', '--clients', '300', '--rounds', '3'])
  const output = `${r.lines.join('\n')}\n${r.stderr}`
  t.is(r.code, 0, output)

  const rounds = r.lines.filter((l) => /^round \d+: /.test(l))
  t.is(rounds.length, 3, output)
  for (const line of rounds) {
    t.regex(line, /300 clients opened \(native: 300 open, 300 tasks, 300 heartbeats\), 300 dropped by the server, 300 reconnects, 9000 messages delivered/)
    t.regex(line, /after: server 0 open, clients 0 open, 0 pending reconnects, 0 tasks/)
  }

  const summary = JSON.parse(r.lines.at(-1) ?? 'null')
  t.true(summary.ok, output)
  t.deepEqual(summary.failures, [])
  t.is(summary.messages, 3 * 9000)
  t.deepEqual(summary.server, { openConnections: 0, totalConnections: 3 * 600 })
  const figures = ['openConnections', 'pendingReconnects', 'runningTasks', 'pendingAttempts', 'heartbeats', 'liveClients', 'collectedWithoutDisconnect']
  for (const key of figures) {
    t.is(summary.baseline[key], 0, key)
    t.is(summary.final[key], 0, key)
  }
  t.true(summary.heapGrowthSinceFirstRound < 4 * 1024 * 1024, `heap grew by ${summary.heapGrowthSinceFirstRound} bytes`)
})
