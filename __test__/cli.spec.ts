// The redial-ws command line (bin/redial-ws.js), driven as a child process
// against local servers on 127.0.0.1. Every wait is for an output line or a
// server event, never for a fixed time.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { WebSocketServer, type WebSocket } from 'ws'

import { CLIENT_PASSPHRASE, makeCerts } from './certs.js'
import { acceptUpgrade, peakRssOf, rawServer, refusedPort, steady, until, upgradeServer, wsServer } from './helpers.js'

const cliPath = fileURLToPath(new URL('../bin/redial-ws.js', import.meta.url))
const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }

/** An append-only log that can be waited on. */
class Log<T> {
  readonly items: T[] = []
  #cursor = 0
  #wakers = new Set<() => void>()
  #ended = false

  push(item: T): void {
    this.items.push(item)
    this.#wake()
  }

  end(): void {
    this.#ended = true
    this.#wake()
  }

  #wake(): void {
    for (const wake of this.#wakers) wake()
  }

  async #wait(probe: () => T | undefined, what: string, ms: number): Promise<T> {
    const deadline = Date.now() + ms
    for (;;) {
      const found = probe()
      if (found !== undefined) return found
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out after ${ms} ms waiting for ${what}; got:\n${this.items.map((i) => JSON.stringify(i)).join('\n')}`)
      if (this.#ended) throw new Error(`ended without ${what}; got:\n${this.items.map((i) => JSON.stringify(i)).join('\n')}`)
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer)
          this.#wakers.delete(wake)
          resolve()
        }
        const timer = setTimeout(wake, left)
        this.#wakers.add(wake)
      })
    }
  }

  /** The next item after the previous `next()` match that satisfies `pred` (in order, skipping others). */
  next(pred: (item: T) => boolean, what: string, ms = 60_000): Promise<T> {
    return this.#wait(
      () => {
        for (let i = this.#cursor; i < this.items.length; i++) {
          if (pred(this.items[i])) {
            this.#cursor = i + 1
            return this.items[i]
          }
        }
        return undefined
      },
      what,
      ms,
    )
  }

  /** Any item, past or future, that satisfies `pred`. */
  find(pred: (item: T) => boolean, what: string, ms = 60_000): Promise<T> {
    return this.#wait(() => this.items.find(pred), what, ms)
  }
}

class Lines extends Log<string> {
  constructor(stream: Readable) {
    super()
    let buf = ''
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      buf += chunk
      let nl
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.push(buf.slice(0, nl))
        buf = buf.slice(nl + 1)
      }
    })
    stream.on('end', () => {
      if (buf) this.push(buf)
      this.end()
    })
  }

  /** The next line matching `re`, after the previous match. */
  line(re: RegExp, ms?: number): Promise<string> {
    return this.next((l) => re.test(l), String(re), ms)
  }

  get text(): string {
    return this.items.join('\n')
  }
}

interface Cli {
  proc: ChildProcessWithoutNullStreams
  out: Lines
  err: Lines
  /** Resolves with the exit code; fails (and kills the process) after `ms`. */
  exit(ms?: number): Promise<number | null>
}

/** Runs the CLI with piped stdio; `env` is added to this process's (REDIAL_WS_CLI_TTY is not inherited). */
function cli(t: ExecutionContext, args: string[], env: Record<string, string> = {}): Cli {
  const proc = spawn(process.execPath, [cliPath, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, REDIAL_WS_CLI_TTY: undefined, ...env },
  })
  const out = new Lines(proc.stdout)
  const err = new Lines(proc.stderr)
  proc.stdin.on('error', () => {}) // the process may be gone before we write
  // 'close': the process exited and its output was read to the end.
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)))
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const exit = async (ms = 60_000) => {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        proc.kill('SIGKILL')
        reject(new Error(`the CLI did not exit within ${ms} ms; stderr:\n${err.text}`))
      }, ms)
    })
    try {
      return await Promise.race([exited, timeout])
    } finally {
      clearTimeout(timer)
    }
  }
  return { proc, out, err, exit }
}

/** A `ws` peer that records what every connection receives and how it closes. */
function recording(onOpen?: (socket: WebSocket, n: number) => void) {
  const inbox = new Log<{ conn: number; data: string; binary: boolean }>()
  const closes = new Log<{ conn: number; code: number }>()
  let connections = 0
  const onConnection = (socket: WebSocket) => {
    const n = ++connections
    socket.on('message', (data, binary) => inbox.push({ conn: n, data: String(data), binary }))
    socket.on('close', (code) => closes.push({ conn: n, code }))
    onOpen?.(socket, n)
  }
  return { inbox, closes, onConnection, connections: () => connections }
}

test('sends stdin lines, prints messages, reconnects after a drop, and exits 0 with a clean close at end of input', async (t) => {
  const server = recording((socket, n) => {
    socket.send(`welcome #${n}`)
    socket.send(Buffer.from([1, 2, 3]))
  })
  const first = await wsServer(server.onConnection)
  t.teardown(() => first.close())
  const c = cli(t, [first.url, '--max-delay', '200'])

  await c.err.line(/^connecting ws:\/\/127\.0\.0\.1:\d+\/$/)
  await c.err.line(/^open$/)
  await c.out.line(/^welcome #1$/)
  await c.out.line(/^<binary 3 bytes>$/)
  c.proc.stdin.write('first line\n')
  await server.inbox.find((m) => m.conn === 1 && m.data === 'first line', 'first line on connection 1')

  // The server goes away: the connection drops and the next attempts are refused.
  await first.close()
  await c.err.line(/^closed 1006$/)
  await c.err.line(/^reconnecting in \d+\.\d s \(attempt 1\)$/)
  c.proc.stdin.write('typed while down\n')
  // More attempts fail after the write: the line was read while there was no connection.
  await c.err.line(/^error ERR_CONNECT: /)
  await c.err.line(/^reconnecting in \d+\.\d s \(attempt 3\)$/)

  // Back on the same port: the client reconnects and writes the queued line first.
  const second = await wsServer(server.onConnection, first.port)
  t.teardown(() => second.close())
  await c.err.line(/^open$/)
  await c.out.line(/^welcome #2$/)
  await server.inbox.find((m) => m.conn === 2 && m.data === 'typed while down', 'the queued line on connection 2')
  c.proc.stdin.write('after reconnect\n')
  await server.inbox.find((m) => m.conn === 2 && m.data === 'after reconnect', 'a line after the reconnect')

  // End of input: a clean close and exit code 0.
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
  t.deepEqual(await server.closes.find((e) => e.conn === 2, 'the close of connection 2'), { conn: 2, code: 1000 })
  t.is(server.connections(), 2)
  t.deepEqual(
    server.inbox.items.map((m) => [m.conn, m.data, m.binary]),
    [
      [1, 'first line', false],
      [2, 'typed while down', false],
      [2, 'after reconnect', false],
    ],
  )
  t.deepEqual(c.out.items, ['welcome #1', '<binary 3 bytes>', 'welcome #2', '<binary 3 bytes>'])
})

test('--json prints one JSON object per message, binary data as base64', async (t) => {
  const server = recording((socket) => {
    socket.send('say "hi"\nsecond line')
    socket.send(Buffer.from([0, 1, 254, 255]))
  })
  const peer = await wsServer(server.onConnection)
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url, '--json'])

  const text = JSON.parse(await c.out.line(/./))
  t.deepEqual(text, { type: 'message', data: 'say "hi"\nsecond line', binary: false })
  const binary = JSON.parse(await c.out.line(/./))
  t.like(binary, { type: 'message', binary: true, encoding: 'base64' })
  t.deepEqual([...Buffer.from(binary.data, 'base64')], [0, 1, 254, 255])

  c.proc.stdin.end('{"also":"sent"}\n')
  t.is(await c.exit(), 0, c.err.text)
  t.is(c.out.items.length, 2)
  t.deepEqual(await server.inbox.find(() => true, 'the line'), { conn: 1, data: '{"also":"sent"}', binary: false })
  t.deepEqual(await server.closes.find(() => true, 'the close'), { conn: 1, code: 1000 })
})

test('--header and --protocol reach the handshake', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const request = once(peer.wss, 'connection').then(([, req]) => req as http.IncomingMessage)
  const c = cli(t, [peer.url, '-H', 'X-Token: abc', '--header', 'X-Multi: one', '--header', 'x-multi: two', '-H', 'X-MULTI: three', '-H', '__proto__: p', '-H', 'toString: s', '-p', 'chat.v1', '--protocol', 'chat.v2'])
  const req = await request
  await c.err.line(/^open \(protocol chat\.v1\)$/)
  t.is(req.headers['x-token'], 'abc')
  // Names are case-insensitive: repeats in another case are values of the same header.
  t.is(req.headers['x-multi'], 'one, two, three')
  // Names that are properties of Object.prototype are headers too.
  t.is(req.rawHeaders[req.rawHeaders.findIndex((h) => h.toLowerCase() === '__proto__') + 1], 'p')
  t.is(req.headers.tostring, 's')
  t.is(req.headers['sec-websocket-protocol'], 'chat.v1,chat.v2', 'joined as ws joins them')
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
})

test('--no-reconnect: a dropped connection ends the process with code 1, a normal close with 0', async (t) => {
  const dropping = recording((socket) => socket.on('message', () => socket.terminate()))
  const peer = await wsServer(dropping.onConnection)
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url, '--no-reconnect'])
  await c.err.line(/^open$/)
  c.proc.stdin.write('drop me\n')
  await c.err.line(/^error ERR_SOCKET: /)
  t.is(await c.exit(), 1, c.err.text)
  // The last line says, in words, what ended it and why nothing more is tried.
  t.regex(c.err.items.at(-1) ?? '', /^the connection to ws:\/\/127\.0\.0\.1:\d+\/ ended \([a-z][^()]*\); not reconnecting \(--no-reconnect\)$/, c.err.text)
  t.is(peer.accepted, 1)
  t.false(c.err.items.some((l) => l.startsWith('reconnecting')), c.err.text)

  const closing = await wsServer((socket) => socket.on('message', () => socket.close(1000, 'done')))
  t.teardown(() => closing.close())
  const d = cli(t, [closing.url, '--no-reconnect'])
  await d.err.line(/^open$/)
  d.proc.stdin.write('bye\n')
  await d.err.line(/^closed 1000 done$/)
  t.is(await d.exit(), 0, d.err.text)
  t.is(closing.accepted, 1)

  // A clean close with no code (1005) is a normal one too.
  const bare = await wsServer((socket) => socket.on('message', () => socket.close()))
  t.teardown(() => bare.close())
  const e = cli(t, [bare.url, '--no-reconnect'])
  await e.err.line(/^open$/)
  e.proc.stdin.write('bye\n')
  await e.err.line(/^closed 1005$/)
  t.is(await e.exit(), 0, e.err.text)
})

test('--no-reconnect: a refused connection is explained in plain words, without the password', async (t) => {
  const port = await refusedPort()
  const c = cli(t, [`ws://user:secret@127.0.0.1:${port}/`, '--no-reconnect'])
  t.is(await c.exit(), 1, c.err.text)
  t.is(c.err.items[0], `connecting ws://user:***@127.0.0.1:${port}/`)
  t.is(c.err.items.at(-1), `could not connect to ws://user:***@127.0.0.1:${port}/ (connection refused); not retrying (--no-reconnect)`)
  t.false(c.err.text.includes('secret'), c.err.text)
  t.false(/gave up|maxRetries/.test(c.err.text), c.err.text)
  t.deepEqual(c.out.items, [])
  // Input that ends at once (</dev/null): the attempt's failure is the stop, said the same way,
  // whether the end of input or the giveup comes first; nothing was being retried.
  for (let i = 0; i < 3; i++) {
    const quick = spawnSync(process.execPath, [cliPath, `ws://127.0.0.1:${port}/`, '--no-reconnect'], { stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 30_000 })
    t.is(quick.status, 1, quick.stderr)
    t.is(quick.stderr.trim().split('\n').at(-1), `could not connect to ws://127.0.0.1:${port}/ (connection refused); not retrying (--no-reconnect)`, quick.stderr)
  }
})

test('input that ends while the client waits to retry exits 1 and says why: the connection failed', async (t) => {
  // No close event comes from a disconnect() during a retry wait: it exited 0, as after a clean close.
  const port = await refusedPort()
  const c = cli(t, [`127.0.0.1:${port}`])
  await c.err.line(/^reconnecting in /)
  c.proc.stdin.end()
  t.is(await c.exit(), 1, c.err.text)
  t.regex(c.err.items.at(-1) ?? '', /^input ended while retrying: connection refused/, c.err.text)

  // The same after a server's clean close with a code other than 1000 (--no-reconnect exits 1 then).
  const going = await wsServer((socket) => socket.close(4000, 'bye'))
  const d = cli(t, [going.url])
  await d.err.line(/^closed 4000 bye$/)
  await going.close()
  // A wait announced once the server is gone (the first reconnect may have come in time to be closed
  // with 4000 again while the server was closing, and the input must not end on that connection).
  const seen = d.err.items.length
  await d.err.find((l) => d.err.items.indexOf(l, seen) >= seen && /^reconnecting in /.test(l), 'a retry wait after the server closed')
  d.proc.stdin.end()
  t.is(await d.exit(), 1, d.err.text)

  // Or while it waits after a server that is still up closed the connection with 4000: said so.
  const closing = await wsServer((socket) => socket.close(4000, 'bye'))
  t.teardown(() => closing.close())
  const e = cli(t, [closing.url])
  // A wait long enough (0.5 s or more) for the end of input to come within it.
  await e.err.line(/^reconnecting in (?:[1-9]\d*|0\.[5-9]) s/)
  e.proc.stdin.end()
  t.is(await e.exit(), 1, e.err.text)
  t.is(e.err.items.at(-1), 'input ended while reconnecting: the server had closed the connection with code 4000: bye', e.err.text)
})

test('input that ends while the first attempt is still connecting exits 0: nothing failed', async (t) => {
  // The server answers the upgrade only after a while: the input (none) ends first.
  const server = await upgradeServer((req, socket, head, wss) => setTimeout(() => wss.handleUpgrade(req, socket, head, () => {}), 300))
  t.teardown(() => server.close())
  const c = cli(t, [`127.0.0.1:${server.port}`])
  await c.err.line(/^connecting /)
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)

  // A reconnect's attempt (after the server's 1001) is still connecting: exit 1, as in the wait before it.
  let upgrades = 0
  const going = await upgradeServer((req, socket, head, wss) => {
    // Later upgrades are never answered: the reconnect's attempt stays connecting.
    if (++upgrades === 1) wss.handleUpgrade(req, socket, head, (s) => s.close(1001, 'bye'))
  })
  t.teardown(() => going.close())
  const d = cli(t, [`127.0.0.1:${going.port}`])
  await d.err.line(/^closed 1001 bye$/)
  await until(() => upgrades === 2, 'the reconnect attempt reached the server')
  d.proc.stdin.end()
  t.is(await d.exit(), 1, d.err.text)
  t.is(d.err.items.at(-1), 'input ended while reconnecting: the server had closed the connection with code 1001: bye', d.err.text)
})

test('close reasons and error messages on stderr cannot control the terminal, piped or not', async (t) => {
  const reason = '\x1b]0;title\x07\x1b[31mred\u009b2J\nforged'
  const peer = await wsServer((socket) => socket.on('message', () => socket.close(4000, reason)))
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url, '--no-reconnect'])
  await c.err.line(/^open$/)
  c.proc.stdin.write('close\n')
  t.is(await c.exit(), 1, c.err.text)
  t.true(c.err.items.includes('closed 4000 \\x1b]0;title\\x07\\x1b[31mred\\x9b2J\\x0aforged'), c.err.text)
  // A reason cannot add a line of its own either.
  t.false(c.err.items.includes('forged'), c.err.text)
  t.false(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/.test(c.err.text), JSON.stringify(c.err.text))

  // Nor in the giveup's words (a 1008 is not retried: its error is the stop's reason).
  const policy = await wsServer((socket) => socket.on('message', () => socket.close(1008, 'x\nopen\nclosed 1000')))
  t.teardown(() => policy.close())
  const d = cli(t, [policy.url])
  await d.err.line(/^open$/)
  d.proc.stdin.write('close\n')
  t.is(await d.exit(), 1, d.err.text)
  t.deepEqual(d.err.items.filter((l) => l === 'open'), ['open'], d.err.text)
  t.false(d.err.items.includes('closed 1000'), d.err.text)
  t.regex(d.err.items.at(-1) ?? '', /x\\x0aopen\\x0aclosed 1000\); giving up/, d.err.text)
})

test('a URL without a scheme gets ws:// (as in wscat); http:// means ws://', async (t) => {
  const peer = await wsServer((socket) => socket.send('hi'))
  t.teardown(() => peer.close())
  const { port } = peer
  const cases: Array<[input: string, path: string, shown: string]> = [
    [`127.0.0.1:${port}`, '/', `ws://127.0.0.1:${port}/`],
    [`127.0.0.1:${port}/path?q=1`, '/path?q=1', `ws://127.0.0.1:${port}/path?q=1`],
    [`localhost:${port}/local`, '/local', `ws://localhost:${port}/local`],
    [`http://127.0.0.1:${port}/h`, '/h', `ws://127.0.0.1:${port}/h`],
  ]
  for (const [input, path, shown] of cases) {
    const request = once(peer.wss, 'connection').then(([, req]) => req as http.IncomingMessage)
    const c = cli(t, [input])
    await c.out.line(/^hi$/) // fails at once if the CLI exits instead
    t.is((await request).url, path, input)
    c.proc.stdin.end()
    t.is(await c.exit(), 0, c.err.text)
    t.is(c.err.items[0], `connecting ${shown}`, input)
  }
  t.is(peer.accepted, cases.length)

  // A bare host name: ws://, port 80. localhost, so that the name comes from /etc/hosts and no query
  // leaves the machine; no WebSocket server listens on its port 80 (any failure will do).
  const bare = cli(t, ['localhost', '--no-reconnect'])
  t.is(await bare.exit(), 1, bare.err.text)
  t.is(bare.err.items[0], 'connecting ws://localhost/')
  t.regex(bare.err.items.at(-1) ?? '', /^could not connect to ws:\/\/localhost\/ \(.+\); not retrying \(--no-reconnect\)$/)
})

test('-L follows a redirect (without it the 3xx is the reason it stops); a ws+unix: URL reaches a Unix socket', async (t) => {
  const peer = await wsServer((socket) => socket.send('hi'))
  t.teardown(() => peer.close())
  const mover = await new Promise<http.Server>((resolve) => {
    const s = http.createServer((_req, res) => res.writeHead(426).end())
    s.on('upgrade', (_req, socket) => socket.end(`HTTP/1.1 302 Found\r\nLocation: ${peer.url}moved\r\nContent-Length: 0\r\n\r\n`))
    s.listen(0, '127.0.0.1', () => resolve(s))
  })
  t.teardown(() => mover.close())
  const from = `ws://127.0.0.1:${(mover.address() as net.AddressInfo).port}/`
  const request = once(peer.wss, 'connection').then(([, req]) => req as http.IncomingMessage)
  const c = cli(t, [from, '-L'])
  await c.out.line(/^hi$/)
  t.is((await request).url, '/moved')
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
  const d = cli(t, [from, '--no-reconnect'])
  t.is(await d.exit(), 1, d.err.text)
  t.regex(d.err.text, /ERR_HANDSHAKE/)
  t.is(peer.accepted, 1)

  const dir = mkdtempSync(join(tmpdir(), 'redial-cli-unix-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const socketPath = join(dir, 'ws.sock')
  const unixServer = http.createServer()
  const unixWss = new WebSocketServer({ server: unixServer })
  unixWss.on('connection', (socket, req) => socket.send(`path ${req.url}`))
  await new Promise<void>((resolve) => unixServer.listen(socketPath, resolve))
  t.teardown(() => {
    for (const s of unixWss.clients) s.terminate()
    unixServer.close()
  })
  const u = cli(t, [`ws+unix:${socketPath}:/over/unix`])
  await u.out.line(/^path \/over\/unix$/)
  u.proc.stdin.end()
  t.is(await u.exit(), 0, u.err.text)
})

/** Sends a welcome, a binary message and a two-line text with an escape sequence; echoes what it gets. */
function chatty(socket: WebSocket) {
  socket.send('welcome')
  socket.send(Buffer.from([1, 2, 3]))
  socket.send('two\nlines\x1b[31m')
  socket.on('message', (data) => socket.send(`echo: ${data}`))
}

test('piped stdout: messages exactly as received, one per line, no "> " or "< " markers', async (t) => {
  const peer = await wsServer(chatty)
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url])
  await c.out.line(/^lines\x1b\[31m$/)
  c.proc.stdin.write('hi\n')
  await c.out.line(/^echo: hi$/)
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
  t.deepEqual(c.out.items, ['welcome', '<binary 3 bytes>', 'two', 'lines\x1b[31m', 'echo: hi'])
  t.deepEqual(c.err.items, [`connecting ${peer.url}`, 'open', 'closed 1000'])
})

test('piped stdout: a slow reader gets every message before the exit, and the client reads no faster than stdout takes them', async (t) => {
  const count = 20_000
  const line = (i: number) => `${String(i).padStart(5, '0')} ${'x'.repeat(1018)}`
  let socket: WebSocket | undefined
  const peer = await wsServer((s) => {
    socket = s
    for (let i = 0; i < count; i++) s.send(line(i))
    s.close(1000)
  })
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url, '--no-reconnect'])
  // Nobody reads stdout for now: the CLI stops reading the socket, and the server's sends wait.
  c.proc.stdout.pause()
  await until(() => socket !== undefined, 'the connection')
  const waiting = await steady(() => socket!.bufferedAmount, "the server's unsent bytes")
  t.true(waiting > 4 * 1024 * 1024, `${waiting} bytes waited in the server`)
  c.proc.stdout.resume()
  t.is(await c.exit(), 0, c.err.text)
  t.is(c.out.items.length, count)
  t.true(c.out.items.every((l, i) => l === line(i)), 'every line, in order')

  // The input ends while the client holds back for stdout: it still reads to the server's close
  // (a clean one), and every message sent before it is printed (6 MiB: less than what the end of a
  // session holds for stdout).
  const before = 6_000
  const sender = await wsServer((s) => {
    socket = s
    for (let i = 0; i < before; i++) s.send(line(i))
  })
  t.teardown(() => sender.close())
  socket = undefined
  const d = cli(t, [sender.url])
  d.proc.stdout.pause()
  await until(() => socket !== undefined, 'the connection')
  await steady(() => socket!.bufferedAmount, "the server's unsent bytes")
  d.proc.stdin.end()
  await once(socket!, 'close')
  d.proc.stdout.resume()
  t.is(await d.exit(), 0, d.err.text)
  t.deepEqual(d.err.items.slice(1), ['open', 'closed 1000'])
  t.is(d.out.items.length, before)
  t.true(d.out.items.every((l, i) => l === line(i)), 'every line, in order')

  // SIGTERM while nobody reads stdout: it exits (143) within a second of its disconnect, not
  // when the reader comes back.
  const e = cli(t, [sender.url])
  e.proc.stdout.pause()
  socket = undefined
  await until(() => socket !== undefined, 'the connection')
  await steady(() => socket!.bufferedAmount, "the server's unsent bytes")
  e.proc.kill('SIGTERM')
  const [code] = await once(e.proc, 'exit')
  t.is(code, 143)
  e.proc.stdout.resume()
})

test('a session that ends reads on to the close, but holds at most 8 MiB for a stdout nobody reads: the rest is counted, and memory stays bounded', async (t) => {
  // A server that streams 4 KiB messages (256 MiB at most) and never answers the close.
  const frame = Buffer.concat([Buffer.from([0x81, 126, 0x10, 0x00]), Buffer.alloc(4096, 0x61)])
  let sent = 0
  let streaming: net.Socket | undefined
  const server = await rawServer((socket) =>
    acceptUpgrade(socket, (s) => {
      streaming = s
      s.on('error', () => {})
      const pump = () => {
        while (sent < 256 * 1024 * 1024) {
          sent += frame.length
          if (!s.write(frame)) return void s.once('drain', pump)
        }
      }
      pump()
    }),
  )
  t.teardown(() => server.close())
  const c = cli(t, [`127.0.0.1:${server.port}`])
  c.proc.stdout.pause()
  await until(() => streaming !== undefined, 'the connection')
  await steady(() => sent, 'what the server could send while the client holds back')
  c.proc.kill('SIGINT')
  const line = await c.err.line(/^\d+ messages received while closing not printed: stdout was not taking them$/)
  const peak = peakRssOf(c.proc.pid!)
  c.proc.stdout.resume()
  t.is(await c.exit(), 130, c.err.text)
  t.true(peak < 200, `peak RSS ${peak.toFixed(0)} MiB (${line}; the server sent ${sent >> 20} MiB)`)
  t.true(sent > 64 * 1024 * 1024, `the server sent ${sent >> 20} MiB`)
})

test('input that ends before the first open: the lines are sent once it opens, and what the server answers is shown', async (t) => {
  // The server answers the upgrade after the input has ended.
  const server = await upgradeServer((req, socket, head, wss) =>
    setTimeout(() => wss.handleUpgrade(req, socket, head, (s) => s.on('message', (m) => s.send(`echo: ${m}`))), 200),
  )
  t.teardown(() => server.close())
  const c = cli(t, [`127.0.0.1:${server.port}`])
  c.proc.stdin.end('hello\nworld\n')
  t.is(await c.exit(), 0, c.err.text)
  t.deepEqual(c.out.items, ['echo: hello', 'echo: world'])
  t.deepEqual(c.err.items.slice(1), ['open', 'closed 1000'])
})

test('a closed stderr (2>&1 | head) does not end the session', async (t) => {
  const peer = await wsServer((socket) => socket.on('message', (m) => socket.send(`echo: ${m}`)))
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url])
  await c.err.line(/^connecting /)
  c.proc.stderr.destroy()
  c.proc.stdin.write('still here\n')
  await c.out.line(/^echo: still here$/)
  c.proc.stdin.end()
  t.is(await c.exit(), 0)
})

test('terminal format (REDIAL_WS_CLI_TTY=1): "< " before messages, "> " before sent lines, controls escaped', async (t) => {
  const peer = await wsServer(chatty)
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url], { REDIAL_WS_CLI_TTY: '1' })
  await c.out.line(/^ {2}lines/)
  c.proc.stdin.write('hi\n')
  await c.out.line(/^< echo: hi$/)
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
  t.deepEqual(c.out.items, ['< welcome', '< <binary 3 bytes>', '< two', '  lines\\x1b[31m', '> hi', '< echo: hi'])
  // Status lines stay plain words on stderr.
  t.deepEqual(c.err.items, [`connecting ${peer.url}`, 'open', 'closed 1000'])

  // --json stays one JSON object per line, whatever the terminal.
  const j = cli(t, [peer.url, '--json'], { REDIAL_WS_CLI_TTY: '1' })
  t.deepEqual(JSON.parse(await j.out.line(/./)), { type: 'message', data: 'welcome', binary: false })
  j.proc.stdin.end()
  t.is(await j.exit(), 0, j.err.text)
})

const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0

/** The rows a terminal shows after `output`, for the controls readline and the CLI write. */
function screen(output: string): string[] {
  const rows: string[][] = [[]]
  let row = 0
  let col = 0
  for (const m of output.matchAll(/\x1b\[\??([\d;]*)([A-Za-z])|[^]/g)) {
    if (m[2] === undefined) {
      const ch = m[0]
      if (ch === '\r') col = 0
      else if (ch === '\n') rows[++row] ??= []
      else if (ch >= ' ') rows[row][col++] = ch
      continue
    }
    const n = Number(m[1] || 0)
    switch (m[2]) {
      case 'G': // cursor to column n
        col = Math.max(n, 1) - 1
        break
      case 'K': // erase in line: 0 to the end, 1 to the start, 2 all
        if (n === 2) rows[row] = []
        else if (n === 1) for (let i = 0; i <= col; i++) rows[row][i] = ' '
        else rows[row].length = Math.min(rows[row].length, col)
        break
      case 'J': // erase below
        rows[row].length = Math.min(rows[row].length, col)
        rows.length = row + 1
        break
      case 'A':
        row = Math.max(0, row - Math.max(n, 1))
        break
      case 'B':
        row += Math.max(n, 1)
        rows[row] ??= []
        break
      case 'C':
        col += Math.max(n, 1)
        break
      case 'D':
        col = Math.max(0, col - Math.max(n, 1))
        break
      default: // colours and modes
    }
  }
  return rows.map((r) => Array.from(r, (ch) => ch ?? ' ').join('').trimEnd())
}

/** The CLI in a real pseudo-terminal (util-linux `script`): stdin, stdout and stderr are TTYs. */
function cliInTerminal(t: ExecutionContext, args: string[]) {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`
  const command = [process.execPath, cliPath, ...args].map(quote).join(' ')
  const proc = spawn('script', ['-qec', command, '/dev/null'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: { ...process.env, REDIAL_WS_CLI_TTY: undefined, TERM: 'xterm' },
  })
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const chunks = new Log<string>()
  proc.stdout.setEncoding('utf8').on('data', (chunk: string) => chunks.push(chunk))
  proc.stdout.on('end', () => chunks.end())
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)))
  const rows = () => screen(chunks.items.join(''))
  /** Waits until the screen satisfies `pred`. */
  const until = (pred: (rows: string[]) => boolean, what: string) =>
    chunks.find(() => pred(rows()), `${what} on screen`).catch((err: Error) => {
      throw new Error(`${err.message}\nscreen:\n${rows().join('\n')}`)
    })
  return { proc, rows, until, exited, type: (keys: string) => proc.stdin.write(keys) }
}

;(hasScript ? test : test.skip)('on a terminal: a "> " prompt, "< " before messages, and output arriving mid-line does not garble the typing', async (t) => {
  let serverSide: WebSocket | undefined
  const server = recording((socket) => {
    serverSide = socket
    socket.send('welcome')
    socket.on('message', (data) => socket.send(`echo: ${data}`))
  })
  const peer = await wsServer(server.onConnection)
  t.teardown(() => peer.close())
  const term = cliInTerminal(t, [`127.0.0.1:${peer.port}`])
  const last = (rows: string[]) => rows.at(-1)
  // Rows are compared without trailing spaces: an empty prompt is '>'.

  await term.until((rows) => rows.includes('< welcome') && last(rows) === '>', 'the welcome and the prompt')
  term.type('hello\r')
  await term.until((rows) => rows.includes('< echo: hello') && last(rows) === '>', 'the echo of hello')

  // Half a line typed, then a message arrives: it goes above, the typing stays on the prompt line.
  term.type('hal')
  await term.until((rows) => last(rows) === '> hal', 'the typing')
  serverSide!.send('tick')
  await term.until((rows) => rows.includes('< tick') && last(rows) === '> hal', 'the tick above the typing')
  t.deepEqual(term.rows(), [`connecting ws://127.0.0.1:${peer.port}/`, 'open', '< welcome', '> hello', '< echo: hello', '< tick', '> hal'])
  term.type('f\r')
  await term.until((rows) => rows.includes('< echo: half'), 'the echo of half')

  // Ctrl-D on the empty prompt: a clean close, exit 0, and no prompt left behind.
  term.type('\x04')
  t.is(await term.exited, 0, term.rows().join('\n'))
  t.deepEqual(
    server.inbox.items.map((m) => m.data),
    ['hello', 'half'],
  )
  t.deepEqual(await server.closes.find(() => true, 'the close'), { conn: 1, code: 1000 })
  t.deepEqual(term.rows().slice(-4), ['> half', '< echo: half', 'closed 1000', ''])

  // Ctrl-C in the terminal (readline's raw mode) disconnects cleanly and exits 130.
  const again = cliInTerminal(t, [peer.url])
  await again.until((rows) => rows.includes('open') && rows.at(-1) === '>', 'the prompt')
  again.type('\x03')
  t.is(await again.exited, 130, again.rows().join('\n'))
  t.deepEqual(await server.closes.find((e) => e.conn === 2, 'the second close'), { conn: 2, code: 1000 })
  const rows = again.rows()
  t.true(rows.includes('SIGINT: disconnecting'), rows.join('\n'))
  t.is(rows.at(-1), '', 'the prompt is cleared on exit')
})

test('SIGINT closes cleanly and exits with 130', async (t) => {
  const server = recording()
  const peer = await wsServer(server.onConnection)
  t.teardown(() => peer.close())
  const c = cli(t, [peer.url])
  await c.err.line(/^open$/)
  c.proc.kill('SIGINT')
  t.is(await c.exit(), 130, c.err.text)
  t.deepEqual(await server.closes.find(() => true, 'the close'), { conn: 1, code: 1000 })
})

/** A `ws` server over HTTPS with `tls` options on 127.0.0.1, closed at the end of the test; its URL. */
async function wssPeer(
  t: ExecutionContext,
  tls: https.ServerOptions,
  onConnection: (socket: WebSocket, req: http.IncomingMessage) => void,
): Promise<string> {
  const server = https.createServer(tls)
  const wss = new WebSocketServer({ server })
  wss.on('connection', onConnection)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const s of wss.clients) s.terminate()
    wss.close()
    server.close()
  })
  return `wss://127.0.0.1:${(server.address() as net.AddressInfo).port}/`
}

test('--ca trusts a private CA for wss:, --insecure accepts any certificate, neither gives up', async (t) => {
  const certs = makeCerts()
  const dir = mkdtempSync(join(tmpdir(), 'redial-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, certs.ca)
  const url = await wssPeer(t, { key: certs.key, cert: certs.cert }, (s) => s.send('secure hello'))

  for (const args of [['--ca', caFile], ['--insecure']]) {
    const c = cli(t, [url, ...args])
    await c.out.line(/^secure hello$/)
    c.proc.stdin.end()
    t.is(await c.exit(), 0, c.err.text)
  }
  const untrusted = cli(t, [url])
  await untrusted.err.line(/^error ERR_TLS_CERT: /)
  t.is(await untrusted.exit(), 1, untrusted.err.text)
  t.regex(
    untrusted.err.items.at(-1) ?? '',
    /^could not connect to wss:\/\/127\.0\.0\.1:\d+\/ \(certificate rejected: \w+\); giving up, retrying would not help \(--ca <file> trusts a private CA; --insecure skips the check\)$/,
    untrusted.err.text,
  )
})

test('--cert and --key present a client certificate (REDIAL_WS_KEY_PASSPHRASE opens an encrypted key); without them, a plain reason and a hint', async (t) => {
  const certs = makeCerts({ clients: true })
  const dir = mkdtempSync(join(tmpdir(), 'redial-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = (name: string, text: string) => {
    writeFileSync(join(dir, name), text)
    return join(dir, name)
  }
  const caFile = file('ca.pem', certs.ca)
  const certFile = file('client.pem', certs.clients!.ec.cert)
  const keyFile = file('client.key', certs.clients!.ec.key)
  const encryptedFile = file('client-encrypted.key', certs.encryptedKey!)
  const url = await wssPeer(t, { key: certs.key, cert: certs.cert, ca: certs.ca, requestCert: true, rejectUnauthorized: true }, (s, req) =>
    s.send(`hello ${(req.socket as import('node:tls').TLSSocket).getPeerCertificate().subject.CN}`),
  )
  for (const [key, env] of [[keyFile, {}], [encryptedFile, { REDIAL_WS_KEY_PASSPHRASE: CLIENT_PASSPHRASE }]] as const) {
    const c = cli(t, [url, '--ca', caFile, '--cert', certFile, '--key', key], env)
    await c.out.line(/^hello client-ec$/)
    c.proc.stdin.end()
    t.is(await c.exit(), 0, c.err.text)
  }
  const locked = cli(t, [url, '--ca', caFile, '--cert', certFile, '--key', encryptedFile])
  t.is(await locked.exit(), 2, locked.err.text)
  t.regex(locked.err.text, /ERR_INVALID_ARG_VALUE: The "tls\.key" option is encrypted/)
  const without = cli(t, [url, '--ca', caFile])
  t.is(await without.exit(), 1, without.err.text)
  t.regex(
    without.err.items.at(-1) ?? '',
    /^could not connect to wss:\/\/127\.0\.0\.1:\d+\/ \(the server requires a client certificate\); giving up, retrying would not help \(--cert <file> --key <file> present one\)$/,
    without.err.text,
  )
})

test('--proxy tunnels through an HTTP CONNECT proxy', async (t) => {
  const targets: string[] = []
  const proxy = http.createServer((_req, res) => res.writeHead(405).end())
  const sockets = new Set<net.Socket>()
  proxy.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    targets.push(req.url!)
    client.on('error', () => {})
    const upstream = net.connect(Number(req.url!.split(':')[1]), '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length) upstream.write(head)
      upstream.pipe(client).pipe(upstream)
    })
    upstream.on('error', () => client.destroy())
    sockets.add(client).add(upstream)
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    proxy.close()
  })
  const peer = await wsServer((socket) => socket.send('via proxy'))
  t.teardown(() => peer.close())

  const c = cli(t, [peer.url, '--proxy', `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`])
  await c.out.line(/^via proxy$/)
  c.proc.stdin.end()
  t.is(await c.exit(), 0, c.err.text)
  t.deepEqual(targets, [`127.0.0.1:${peer.port}`])
})

test('bad usage exits with 2 without connecting', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const cases: Array<[string[], RegExp]> = [
    [[], /missing <url>/],
    [[peer.url, '--bogus'], /Unknown option '--bogus'/],
    [[peer.url, peer.url], /unexpected argument/],
    [['not a url'], /^redial-ws: invalid URL "not a url" \(ERR_INVALID_URL\)$/m],
    [['127.0.0.1:99999'], /^redial-ws: invalid URL "127\.0\.0\.1:99999" \(ERR_INVALID_URL\)$/m],
    [['ws://user:secret@127.0.0.1/#top'], /^redial-ws: invalid URL "ws:\/\/user:\*\*\*@127\.0\.0\.1\/#\u2026": the URL must not contain a fragment \(ERR_INVALID_URL\)$/m],
    [['ftp://127.0.0.1/'], /^redial-ws: unsupported URL scheme "ftp:" in "ftp:\/\/127\.0\.0\.1\/": use ws:\/\/, wss:\/\/ or ws\+unix: \(ERR_INVALID_URL_SCHEME\)$/m],
    [[peer.url, '--max-delay', 'soon'], /--max-delay must be a whole number/],
    [[peer.url, '--ping-interval', '-5'], /ping-interval/],
    // Without its value: a mistyped header may carry a token.
    [[peer.url, '--header', 'Authorization Bearer secret'], /--header must look like "Name: value"/],
    [[peer.url, '--header', 'Bad Name: x'], /--header must look like "Name: value"/],
    [[peer.url, '--header', 'Authorization Bearer id:secret'], /--header must look like "Name: value"/],
    [[peer.url, '--proxy', 'nope'], /ERR_INVALID_PROXY/],
    [[peer.url, '--ca', '/nonexistent/ca.pem'], /cannot read --ca file/],
  ]
  // Three children at a time, not all at once: the file's other tests run CLI children too,
  // and a slow machine would otherwise start them all together.
  const pending = [...cases]
  const runner = async () => {
    for (let next = pending.shift(); next; next = pending.shift()) {
      const [args, message] = next
      const c = cli(t, args)
      const code = await c.exit()
      t.is(code, 2, `${JSON.stringify(args)}: ${c.err.text}`)
      t.regex(c.err.text, message, JSON.stringify(args))
      t.regex(c.err.text, /Usage: redial-ws <url>/)
      t.false(c.err.text.includes('secret'), c.err.text)
      t.deepEqual(c.out.items, [])
    }
  }
  await Promise.all([runner(), runner(), runner()])
  t.is(peer.accepted, 0)
})

test('--help and --version', async (t) => {
  const help = cli(t, ['--help'])
  t.is(await help.exit(), 0)
  t.regex(help.out.text, /^Usage: redial-ws <url> \[options\]/)
  for (const option of ['--header', '--protocol', '--max-delay', '--ping-interval', '--no-reconnect', '--location', '--ca', '--insecure', '--cert', '--key', '--proxy', '--json']) {
    t.true(help.out.text.includes(option), option)
  }
  const ver = cli(t, ['--version'])
  t.is(await ver.exit(), 0)
  t.is(await ver.out.line(/./), version)
})

test('a SOCKS proxy that refuses the credentials: the hint names the socks5:// URL, not an HTTP proxy, and the password is not shown', async (t) => {
  // A SOCKS5 proxy that takes user name and password, then refuses them.
  const socks = net.createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => {
      socket.write(Buffer.from([0x05, 0x02]))
      socket.once('data', () => socket.end(Buffer.from([0x01, 0x01])))
    })
  })
  socks.listen(0, '127.0.0.1')
  await once(socks, 'listening')
  t.teardown(() => socks.close())
  const port = (socks.address() as net.AddressInfo).port
  const c = cli(t, ['ws://127.0.0.1:9/', '--no-reconnect'], { ALL_PROXY: `socks5://bob:hunter2@127.0.0.1:${port}` })
  t.is(await c.exit(), 1, c.err.text)
  const last = c.err.items.at(-1) ?? ''
  t.regex(last, /\(SOCKS proxy: the proxy refused our user name and password\); not retrying \(--no-reconnect\) \(check the user name and password in the socks5:\/\/ URL/, c.err.text)
  t.false(last.includes('HTTP_PROXY'), last)
  t.false(c.err.text.includes('hunter2'), c.err.text)
})
