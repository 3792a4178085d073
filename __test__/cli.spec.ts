// The redial-ws command line (bin/redial-ws.js), driven as a child process
// against local servers on 127.0.0.1. Every wait is for an output line or a
// server event, never for a fixed time.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
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

import { makeCerts } from './certs.js'
import { wsServer } from './helpers.js'

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
  next(pred: (item: T) => boolean, what: string, ms = 10_000): Promise<T> {
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
  find(pred: (item: T) => boolean, what: string, ms = 10_000): Promise<T> {
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

function cli(t: ExecutionContext, args: string[]): Cli {
  const proc = spawn(process.execPath, [cliPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  const out = new Lines(proc.stdout)
  const err = new Lines(proc.stderr)
  proc.stdin.on('error', () => {}) // the process may be gone before we write
  // 'close': the process exited and its output was read to the end.
  const exited = new Promise<number | null>((resolve) => proc.on('close', (code) => resolve(code)))
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const exit = async (ms = 10_000) => {
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
  const c = cli(t, [peer.url, '-H', 'X-Token: abc', '--header', 'X-Multi: one', '--header', 'X-Multi: two', '-p', 'chat.v1', '--protocol', 'chat.v2'])
  const req = await request
  await c.err.line(/^open \(protocol chat\.v1\)$/)
  t.is(req.headers['x-token'], 'abc')
  t.is(req.headers['x-multi'], 'one, two')
  t.is(req.headers['sec-websocket-protocol'], 'chat.v1, chat.v2')
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
  await c.err.line(/^gave up: maxRetries after 1 attempt: ERR_SOCKET/)
  t.is(await c.exit(), 1, c.err.text)
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

test('--ca trusts a private CA for wss:, --insecure accepts any certificate, neither gives up', async (t) => {
  const certs = makeCerts()
  const dir = mkdtempSync(join(tmpdir(), 'redial-cli-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const caFile = join(dir, 'ca.pem')
  writeFileSync(caFile, certs.ca)
  const server = https.createServer({ key: certs.key, cert: certs.cert })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (s) => s.send('secure hello'))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const s of wss.clients) s.terminate()
    wss.close()
    server.close()
  })
  const url = `wss://127.0.0.1:${(server.address() as net.AddressInfo).port}/`

  for (const args of [['--ca', caFile], ['--insecure']]) {
    const c = cli(t, [url, ...args])
    await c.out.line(/^secure hello$/)
    c.proc.stdin.end()
    t.is(await c.exit(), 0, c.err.text)
  }
  const untrusted = cli(t, [url])
  await untrusted.err.line(/^gave up: .*ERR_TLS_CERT/)
  t.is(await untrusted.exit(), 1, untrusted.err.text)
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
    [['not a url'], /ERR_INVALID_URL/],
    [['ftp://127.0.0.1/'], /ERR_INVALID_URL_SCHEME/],
    [[peer.url, '--max-delay', 'soon'], /--max-delay must be a whole number/],
    [[peer.url, '--ping-interval', '-5'], /ping-interval/],
    [[peer.url, '--header', 'NoColon'], /--header must look like "Name: value"/],
    [[peer.url, '--header', 'Bad Name: x'], /ERR_INVALID_HTTP_TOKEN/],
    [[peer.url, '--proxy', 'nope'], /ERR_INVALID_PROXY/],
    [[peer.url, '--ca', '/nonexistent/ca.pem'], /cannot read --ca file/],
  ]
  await Promise.all(
    cases.map(async ([args, message]) => {
      const c = cli(t, args)
      const code = await c.exit()
      t.is(code, 2, `${JSON.stringify(args)}: ${c.err.text}`)
      t.regex(c.err.text, message, JSON.stringify(args))
      t.regex(c.err.text, /Usage: redial-ws <url>/)
      t.deepEqual(c.out.items, [])
    }),
  )
  t.is(peer.accepted, 0)
})

test('--help and --version', async (t) => {
  const help = cli(t, ['--help'])
  t.is(await help.exit(), 0)
  t.regex(help.out.text, /^Usage: redial-ws <url> \[options\]/)
  for (const option of ['--header', '--protocol', '--max-delay', '--ping-interval', '--no-reconnect', '--ca', '--insecure', '--proxy', '--json']) {
    t.true(help.out.text.includes(option), option)
  }
  const ver = cli(t, ['--version'])
  t.is(await ver.exit(), 0)
  t.is(await ver.out.line(/./), version)
})
