// Real peers on 127.0.0.1 for the tests: the `ws` server and raw `net` servers.
import { fork, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { setImmediate as tick, setTimeout as delay } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import test from 'ava'
import { WebSocketServer, type WebSocket } from 'ws'

import { clientStats, type ReconnectingWebSocket } from '../index.js'

// A test file whose process is still running 30 s after its last test says what keeps it (the
// suite's time bound would end it with no clue): the resources Node counts, and the clients' counters.
test.after.always(() => {
  setTimeout(() => {
    const alive = JSON.stringify(process.getActiveResourcesInfo())
    process.stderr.write(`${test.meta.file}: still running 30 s after its last test: ${alive} ${JSON.stringify(clientStats())}\n`)
  }, 30_000).unref()
})

// Tests talk to 127.0.0.1 only: a proxy configured in the environment must not capture them.
for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy']) delete process.env[name]

/**
 * What most `open` listeners do: `send()` at once (and `ping()`, with `ping`), as where a client that
 * is closing would throw. Records `open <state>` in `seen`; returns what the calls threw.
 */
export function sendsOnOpen(client: ReconnectingWebSocket, seen: string[], ping = false): unknown[] {
  const thrown: unknown[] = []
  client.on('open', () => {
    seen.push(`open ${client.state}`)
    try {
      client.send('from an open listener')
      if (ping) client.ping()
    } catch (err) {
      thrown.push(err)
    }
  })
  return thrown
}

export interface Peer {
  port: number
  url: string
  close(): Promise<void>
}

export interface WsPeer extends Peer {
  wss: WebSocketServer
  /** Connections accepted so far. */
  accepted: number
  /** Connections open right now, and the most that were ever open at once. */
  concurrent: number
  maxConcurrent: number
  sockets: Set<WebSocket>
  nextConnection(): Promise<WebSocket>
}

/**
 * A `ws` server in a process of its own (`fixtures/server-child.cjs`, in `mode`), which goes on
 * answering while a test blocks its thread; over TLS at `wss://localhost` with `tls`. Its URL;
 * `onMessage` hears what it tells over IPC. Gone with the test.
 */
export async function serverChild(
  t: { teardown(fn: () => void): void },
  mode: string,
  { tls, onMessage, env: extra }: { tls?: { key: string; cert: string }; onMessage?: (m: any) => void; env?: Record<string, string> } = {},
): Promise<string> {
  const env = { ...process.env, ...extra, ...(tls && { SERVER_KEY: tls.key, SERVER_CERT: tls.cert }) }
  const child = fork(fileURLToPath(new URL('./fixtures/server-child.cjs', import.meta.url)), [mode], { env, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] })
  t.teardown(() => child.kill())
  if (onMessage) child.on('message', onMessage)
  const [port] = await once(child.stdout!, 'data')
  return `${tls ? 'wss://localhost' : 'ws://127.0.0.1'}:${Number(String(port).trim())}`
}

/**
 * A `ws` server on 127.0.0.1; with `tls` (its key and certificate, and any other `https` server
 * option), over TLS at `wss://localhost:<port>/`.
 */
export async function wsServer(
  onConnection?: (socket: WebSocket, peer: WsPeer, req: http.IncomingMessage) => void,
  port = 0,
  tls?: https.ServerOptions,
): Promise<WsPeer> {
  const server = tls && https.createServer(tls)
  const wss = server ? new WebSocketServer({ server }) : new WebSocketServer({ host: '127.0.0.1', port })
  await once(server ? server.listen(port, '127.0.0.1') : wss, 'listening')
  const address = (server ?? wss).address() as net.AddressInfo
  const peer: WsPeer = {
    wss,
    port: address.port,
    url: server ? `wss://localhost:${address.port}/` : `ws://127.0.0.1:${address.port}/`,
    accepted: 0,
    concurrent: 0,
    maxConcurrent: 0,
    sockets: new Set(),
    nextConnection: () => once(wss, 'connection').then(([s]) => s as WebSocket),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of peer.sockets) s.terminate()
        wss.close(() => (server ? server.close(() => resolve()) : resolve()))
      }),
  }
  wss.on('connection', (socket, req) => {
    peer.accepted++
    peer.concurrent++
    peer.maxConcurrent = Math.max(peer.maxConcurrent, peer.concurrent)
    peer.sockets.add(socket)
    socket.on('close', () => {
      peer.concurrent--
      peer.sockets.delete(socket)
    })
    onConnection?.(socket, peer, req)
  })
  return peer
}

export interface RawPeer extends Peer {
  server: net.Server
  accepted: number
  sockets: Set<net.Socket>
}

/** A raw TCP server: `onSocket` decides how to misbehave. */
export async function rawServer(onSocket: (socket: net.Socket) => void, port = 0): Promise<RawPeer> {
  const server = net.createServer()
  const peer: RawPeer = {
    server,
    port: 0,
    url: '',
    accepted: 0,
    sockets: new Set(),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of peer.sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
  server.on('connection', (socket) => {
    peer.accepted++
    peer.sockets.add(socket)
    socket.on('close', () => peer.sockets.delete(socket))
    socket.on('error', () => {})
    onSocket(socket)
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  peer.port = (server.address() as net.AddressInfo).port
  peer.url = `ws://127.0.0.1:${peer.port}/`
  return peer
}

/** Completes a WebSocket upgrade on a raw socket, then hands it over. */
/** `after`: bytes written with the answer, in the same write (frames the client reads with its open). */
export function acceptUpgrade(socket: net.Socket, then: (socket: net.Socket) => void, extraHeaders = '', after?: Buffer): void {
  let head = ''
  const onData = (chunk: Buffer) => {
    head += chunk.toString('latin1')
    if (!head.includes('\r\n\r\n')) return
    socket.off('data', onData)
    const key = /sec-websocket-key: *(.*)\r\n/i.exec(head)?.[1] ?? ''
    const accept = createHash('sha1')
      .update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11')
      .digest('base64')
    // Latin-1, as HTTP header bytes are to Node: one byte a character.
    const answer = Buffer.from(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n${extraHeaders}\r\n`,
      'latin1',
    )
    socket.write(after === undefined ? answer : Buffer.concat([answer, after]))
    then(socket)
  }
  socket.on('data', onData)
}

/**
 * Calls `onFrame` with each frame the client sends (opcode, unmasked payload), from the bytes after
 * its upgrade request.
 */
export function clientFrames(socket: net.Socket, onFrame: (opcode: number, payload: Buffer) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  socket.on('data', (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d
    for (;;) {
      if (buf.length < 2) return
      let len = buf[1] & 0x7f
      let off = 2
      if (len === 126) {
        if (buf.length < 4) return
        len = buf.readUInt16BE(2)
        off = 4
      } else if (len === 127) {
        if (buf.length < 10) return
        len = Number(buf.readBigUInt64BE(2))
        off = 10
      }
      const masked = (buf[1] & 0x80) !== 0
      const start = off + (masked ? 4 : 0)
      if (buf.length < start + len) return
      const payload = Buffer.from(buf.subarray(start, start + len))
      if (masked) for (let i = 0; i < len; i++) payload[i] ^= buf[off + (i & 3)]
      onFrame(buf[0] & 0x0f, payload)
      buf = buf.subarray(start + len)
    }
  })
}

/** The first port the system hands out for `listen(0)` (Linux's ip_local_port_range; its default elsewhere). */
function firstEphemeralPort(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'latin1').trim().split(/\s+/)[0]) || 32_768
  } catch {
    return 32_768
  }
}

/**
 * A port that refuses connections, and keeps refusing them: one below the range `listen(0)` takes
 * ports from, which no server of the tests (they all listen on port 0) can be given meanwhile (a
 * port bound and closed could be, by a test running beside: a "refused" client then opened).
 * Found free by binding it, then closed.
 */
export async function refusedPort(): Promise<number> {
  const first = firstEphemeralPort()
  const low = Math.min(10_000, first - 1_000)
  for (let tries = 0; tries < 50; tries++) {
    const port = low + Math.floor(Math.random() * (first - low))
    const server = net.createServer()
    const bound = await new Promise<boolean>((resolve) => {
      server.once('error', () => resolve(false))
      server.listen(port, '127.0.0.1', () => resolve(true))
    })
    if (!bound) continue
    await new Promise((r) => server.close(r))
    return port
  }
  throw new Error('no free port below the ephemeral range')
}

/**
 * Waits until `cond()` holds, polling; fails with `what` after `ms`. For counters that have no event.
 * A function for `what` describes the state at the time of failure.
 */
export async function until(cond: () => boolean, what: string | (() => string), ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for: ${typeof what === 'function' ? what() : what}`)
    }
    await delay(5)
  }
}

/**
 * The value of `read()` once it has stayed the same for `polls` polls 20 ms apart (at most `ms`):
 * for a count that stops growing when a bound holds (nothing announces that it stopped).
 */
export async function steady(read: () => number, what: string, polls = 10, ms = 10_000): Promise<number> {
  const deadline = Date.now() + ms
  let value = read()
  for (let same = 0; same < polls; ) {
    if (Date.now() > deadline) throw new Error(`${what} still changing after ${ms} ms (${value})`)
    await delay(20)
    const now = read()
    same = now === value ? same + 1 : 0
    value = now
  }
  return value
}

/** Forces full collections until `cond()` holds (finalizers run a tick after the GC). */
export async function collectUntil(cond: () => boolean, what: string, rounds = 200): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (!gc) throw new Error('run with --expose-gc')
  for (let i = 0; i < rounds; i++) {
    if (cond()) return
    gc()
    await tick()
    await delay(5)
  }
  if (!cond()) throw new Error(`not collected after ${rounds} GC rounds: ${what}`)
}

export function forceGc(): void {
  ;(globalThis as { gc?: () => void }).gc?.()
}

/** Everything process-wide that must return to zero once clients are disconnected. */
export async function quiescent(): Promise<void> {
  await until(() => {
    const s = clientStats()
    return (
      s.openConnections === 0 &&
      s.pendingReconnects === 0 &&
      s.runningTasks === 0 &&
      s.pendingAttempts === 0 &&
      s.recycledBytes === 0
    )
  }, `stats back to zero: ${JSON.stringify(clientStats())}`)
}

/** Lets awaiting consumers sleep until a producer calls `wake()`, or at most `ms`. */
export class Wakeup {
  // Every waiter: two `Recorder.next()` calls can wait at once (the first of two events).
  #waiters = new Set<() => void>()

  wake(): void {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const wake of waiters) wake()
  }

  async wait(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const wake = () => {
        clearTimeout(timer)
        this.#waiters.delete(wake)
        resolve()
      }
      const timer = setTimeout(wake, ms)
      this.#waiters.add(wake)
    })
  }
}

/**
 * Records every event of an emitter from the start. Several events can arrive
 * in one native batch, synchronously, so awaiting `once()` one after another
 * would miss the later ones; `next()` consumes them in order instead.
 */
export class Recorder {
  readonly log: Array<{ name: string; args: unknown[] }> = []
  #read = new Map<string, number>()
  #wakeup = new Wakeup()

  constructor(emitter: NodeJS.EventEmitter, names = ['open', 'message', 'close', 'reconnecting', 'error', 'giveup']) {
    for (const name of names) {
      emitter.on(name, (...args: unknown[]) => {
        this.log.push({ name, args })
        this.#wakeup.wake()
      })
    }
  }

  count(name: string): number {
    return this.log.filter((e) => e.name === name).length
  }

  /** The first argument of the next not-yet-consumed `name` event, waiting for it if needed. */
  async next<T = any>(name: string, ms = 10_000): Promise<T> {
    return (await this.nextArgs(name, ms))[0] as T
  }

  /** Every argument of the next not-yet-consumed `name` event, waiting for it if needed. */
  async nextArgs(name: string, ms = 10_000): Promise<unknown[]> {
    const deadline = Date.now() + ms
    for (;;) {
      const seen = this.#read.get(name) ?? 0
      const events = this.log.filter((e) => e.name === name)
      if (events.length > seen) {
        this.#read.set(name, seen + 1)
        return events[seen].args
      }
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no '${name}' event within ${ms} ms; log: ${this.log.map((e) => e.name).join(',')}`)
      await this.#wakeup.wait(left)
    }
  }
}

/** VmHWM (peak RSS) of process `pid` in MiB, as this process sees it in /proc; 0 where it cannot. */
export function peakRssOf(pid: number): number {
  try {
    const m = /^VmHWM:\s*(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'latin1'))
    return m ? Number(m[1]) / 1024 : 0
  } catch {
    return 0
  }
}

/** Sends `m0`..`m{count-1}`, then ends the TCP connection without a close frame (its data written first, where terminate() would discard what is not). */
export function sendThenEnd(socket: WebSocket, count: number) {
  for (let i = 0; i < count; i++) socket.send(`m${i}`)
  ;(socket as unknown as { _socket: net.Socket })._socket.end()
}

/**
 * An HTTP server on 127.0.0.1 whose upgrade requests `onUpgrade` answers itself (with `wss`, a `ws`
 * server without its own listener, to accept one): refuse, hold, or accept late. `close()` ends
 * every connection.
 */
export async function upgradeServer(onUpgrade: (req: http.IncomingMessage, socket: net.Socket, head: Buffer, wss: WebSocketServer) => void) {
  const server = http.createServer()
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket: net.Socket, head) => onUpgrade(req, socket, head, wss))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  return {
    wss,
    port,
    url: `ws://127.0.0.1:${port}/`,
    close: () => {
      for (const c of wss.clients) c.terminate()
      server.closeAllConnections()
      server.close()
    },
  }
}

/**
 * An HTTP CONNECT proxy on 127.0.0.1 that tunnels to 127.0.0.1 or localhost (anything else: 403),
 * asking for `requiredAuth` (`user:password`) if given; `seen`: every CONNECT, in order.
 */
export async function connectProxy(requiredAuth?: string) {
  const seen: Array<{ target: string; auth?: string }> = []
  const server = http.createServer((_req, res) => res.writeHead(405).end())
  const tunnels = new Set<net.Socket>()
  server.on('connect', (req, client: net.Socket, head) => {
    seen.push({ target: req.url!, auth: req.headers['proxy-authorization'] })
    client.on('error', () => {})
    if (requiredAuth && req.headers['proxy-authorization'] !== `Basic ${Buffer.from(requiredAuth).toString('base64')}`) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n')
      return
    }
    const [host, port] = req.url!.split(':')
    if (host !== '127.0.0.1' && host !== 'localhost') return client.end('HTTP/1.1 403 Forbidden\r\n\r\n')
    const upstream = net.connect(Number(port), '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      if (head.length) upstream.write(head)
      upstream.pipe(client)
      client.pipe(upstream)
    })
    upstream.on('error', () => client.destroy())
    tunnels.add(client).add(upstream)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        for (const t of tunnels) t.destroy()
        server.close(() => r())
      }),
  }
}

/** The package's entry point, for a child process to require. */
export const PACKAGE_ENTRY = fileURLToPath(new URL('../index.js', import.meta.url))

/**
 * Runs `script` in a child Node process (`process.argv.slice(1)` is `args`); for a failure that
 * would end the process, or a process-wide setting read once. Resolves with its exit code and output.
 */
export async function runNodeScript(script: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<{ code: number | null; out: string; err: string }> {
  return runNodeScriptLimited('', script, args, env)
}

/**
 * `runNodeScript` under a shell's `ulimit` (`'-n 64'`: descriptors; `'-v 1048576'`: address space,
 * KiB), for the failures of a process at its limits. `signal`: what ended it, if a signal did.
 */
export async function runNodeScriptLimited(
  limit: string,
  script: string,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  const proc = limit
    ? spawn('sh', ['-c', `ulimit ${limit} && exec "$@"`, 'sh', process.execPath, '-e', script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(process.execPath, ['-e', script, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  proc.stdout.on('data', (d) => (out += d))
  proc.stderr.on('data', (d) => (err += d))
  const [code, signal] = (await once(proc, 'close')) as [number | null, NodeJS.Signals | null]
  return { code, signal, out, err }
}

/** Child-script source that opens /dev/null until EMFILE: `held` has every descriptor left (close some to free them). */
export const HOLD_EVERY_DESCRIPTOR = `
  const held = []
  for (;;) {
    try {
      held.push(require('node:fs').openSync('/dev/null', 'r'))
    } catch (e) {
      if (e.code !== 'EMFILE') throw e
      break
    }
  }
`
