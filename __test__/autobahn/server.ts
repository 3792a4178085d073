// The fuzzing server: a raw `net` server on 127.0.0.1 that does the HTTP upgrade itself and then
// plays the case named in the request path (`/runCase?case=<id>&agent=<name>`, as Autobahn's
// fuzzing server does with its case index) octet for octet through FuzzingProtocol.
//
// Timeouts: Autobahn's own (openHandshakeTimeout 5 s, closeHandshakeTimeout 1 s, and each case's
// killAfter / closeAfter / continueLater timers) plus a hard per-case limit of this harness
// (`caseTimeoutMs`): when it fires the server drops the TCP connection (not clean) and the case
// is judged as it stands, the way Autobahn judges a connection it had to drop.
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'

import { EXTENSION_NAME, PerMessageDeflate, acceptExtensionString, parseDeflateOffer, parseExtensionsHeader, type DeflateOffer } from './deflate.js'
import { CaseRun, caseResult, missingResult, type CaseResult, type CaseSpec } from './judge.js'
import { FuzzingProtocol } from './protocol.js'

const OPEN_HANDSHAKE_TIMEOUT_MS = 5_000
const MAX_REQUEST = 16 * 1024
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

interface Waiter {
  resolve(r: CaseResult): void
  started: boolean
}

export class FuzzingServer {
  readonly #server: net.Server
  readonly #cases: Map<string, CaseSpec>
  readonly #waiters = new Map<string, Waiter>()
  readonly #sockets = new Set<net.Socket>()
  readonly caseTimeoutMs: number
  port = 0
  /** Connections accepted; requests refused (bad path or handshake); connections no case waited for. */
  accepted = 0
  refused: string[] = []
  unexpected: string[] = []

  private constructor(cases: CaseSpec[], caseTimeoutMs: number) {
    this.#cases = new Map(cases.map((c) => [c.id, c]))
    this.caseTimeoutMs = caseTimeoutMs
    this.#server = net.createServer((socket) => this.#onConnection(socket))
  }

  static async start(cases: CaseSpec[], caseTimeoutMs: number): Promise<FuzzingServer> {
    const s = new FuzzingServer(cases, caseTimeoutMs)
    s.#server.listen(0, '127.0.0.1')
    await once(s.#server, 'listening')
    s.port = (s.#server.address() as net.AddressInfo).port
    return s
  }

  url(caseId: string, agent = 'redial-ws'): string {
    return `ws://127.0.0.1:${this.port}/runCase?case=${encodeURIComponent(caseId)}&agent=${encodeURIComponent(agent)}`
  }

  /**
   * The result of the next connection for `caseId`, judged when its TCP connection is gone. If no
   * connection asks for the case within `connectMs`, a FAILED result says so.
   */
  expect(caseId: string, connectMs = OPEN_HANDSHAKE_TIMEOUT_MS + 1_000): Promise<CaseResult> {
    const spec = this.#cases.get(caseId)
    if (!spec) throw new Error(`unknown case ${caseId}`)
    return new Promise<CaseResult>((resolve) => {
      const waiter: Waiter = {
        started: false,
        resolve: (r) => {
          clearTimeout(timer)
          if (this.#waiters.get(caseId) === waiter) this.#waiters.delete(caseId)
          resolve(r)
        },
      }
      const timer = setTimeout(() => {
        if (!waiter.started) waiter.resolve(missingResult(spec, `No connection from the client asked for the case within ${connectMs} ms.`))
      }, connectMs)
      timer.unref() // a run that already has its verdict (see runner.ts) must not wait for it
      this.#waiters.set(caseId, waiter)
    })
  }

  async close(): Promise<void> {
    for (const [id, w] of this.#waiters) w.resolve(missingResult(this.#cases.get(id)!, 'The server was closed before the case ran.'))
    for (const s of this.#sockets) s.destroy()
    await new Promise<void>((r) => this.#server.close(() => r()))
  }

  #onConnection(socket: net.Socket): void {
    this.accepted++
    this.#sockets.add(socket)
    socket.setNoDelay(true) // Autobahn's tcpNoDelay
    socket.on('close', () => this.#sockets.delete(socket))
    socket.on('error', () => {})
    let head = Buffer.alloc(0)
    const handshakeTimer = setTimeout(() => {
      this.refused.push('opening handshake timeout')
      socket.destroy()
    }, OPEN_HANDSHAKE_TIMEOUT_MS)
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) {
        if (head.length > MAX_REQUEST) {
          clearTimeout(handshakeTimer)
          socket.off('data', onData)
          this.refused.push('request too large')
          socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')
        }
        return
      }
      clearTimeout(handshakeTimer)
      socket.off('data', onData)
      this.#onRequest(socket, head.subarray(0, end).toString('latin1'), head.subarray(end + 4))
    }
    socket.on('data', onData)
    socket.on('close', () => clearTimeout(handshakeTimer))
  }

  #onRequest(socket: net.Socket, request: string, rest: Buffer): void {
    const [requestLine, ...headerLines] = request.split('\r\n')
    const headers = new Map<string, string>()
    for (const line of headerLines) {
      const i = line.indexOf(':')
      if (i <= 0) continue
      // As Autobahn's parseHttpHeader: a repeated header's values are joined with ", ".
      const name = line.slice(0, i).trim().toLowerCase()
      const value = line.slice(i + 1).trim()
      const prev = headers.get(name)
      headers.set(name, prev === undefined ? value : `${prev}, ${value}`)
    }
    const m = /^GET (\S+) HTTP\/1\.1$/.exec(requestLine)
    const path = m ? new URL(m[1], 'http://127.0.0.1') : null
    const caseId = path?.pathname === '/runCase' ? path.searchParams.get('case') : null
    const spec = caseId ? this.#cases.get(caseId) : undefined
    if (!spec || !caseId) {
      this.refused.push(`no such case: ${requestLine}`)
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n')
      return
    }
    const waiter = this.#waiters.get(caseId)
    const mine = waiter !== undefined && !waiter.started
    if (mine) waiter.started = true
    else this.unexpected.push(`${caseId}: a connection no case run was waiting for`)
    const p = new FuzzingProtocol(socket, () => {
      const r = caseResult(run, p)
      if (p.wasCaseTimeout) {
        r.notes.push(`hard per-case limit of ${this.caseTimeoutMs} ms reached${spec.waitSecs && spec.waitSecs * 1000 > this.caseTimeoutMs ? ` (the case itself allows ${spec.waitSecs} s)` : ''}`)
      }
      if (mine) waiter.resolve(r)
    })
    const run = new CaseRun(spec, p)
    p.attach(run)

    // Validate the opening handshake as RFC 6455 section 4.2.1 asks of a server.
    const key = headers.get('sec-websocket-key') ?? ''
    const problems: string[] = []
    if (!m) problems.push(`bad request line: ${requestLine}`)
    if (!headers.has('host')) problems.push('no Host')
    if ((headers.get('upgrade') ?? '').toLowerCase() !== 'websocket') problems.push('Upgrade is not websocket')
    if (!(headers.get('connection') ?? '').toLowerCase().split(/ *, */).includes('upgrade')) problems.push('Connection lacks upgrade')
    if (headers.get('sec-websocket-version') !== '13') problems.push('Sec-WebSocket-Version is not 13')
    if (Buffer.from(key, 'base64').length !== 16 || Buffer.from(key, 'base64').toString('base64') !== key) problems.push('bad Sec-WebSocket-Key')
    if (problems.length > 0) {
      this.refused.push(`${caseId}: ${problems.join('; ')}`)
      run.notes.push(`opening handshake refused: ${problems.join('; ')}`)
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
      return
    }
    // Extensions (Autobahn's succeedHandshake): every permessage-deflate offer is parsed (an illegal
    // one fails the handshake, whatever the case), then the case's acceptor may take one.
    const offers: DeflateOffer[] = []
    for (const [name, params] of parseExtensionsHeader(headers.get('sec-websocket-extensions') ?? '')) {
      if (name !== EXTENSION_NAME) continue
      try {
        offers.push(parseDeflateOffer(params))
      } catch (err) {
        problems.push((err as Error).message)
      }
    }
    if (problems.length > 0) {
      this.refused.push(`${caseId}: ${problems.join('; ')}`)
      run.notes.push(`opening handshake refused: ${problems.join('; ')}`)
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n')
      return
    }
    let extensions = ''
    const deflate = offers.length > 0 ? (spec.deflateAccept?.(offers) ?? null) : null
    if (deflate) {
      p.perMessageCompress = new PerMessageDeflate(deflate)
      extensions = `Sec-WebSocket-Extensions: ${acceptExtensionString(deflate)}\r\n`
    }
    if (spec.deflateAccept) run.notes.push(`client offered: ${headers.get('sec-websocket-extensions') ?? '(no extensions)'}; server answered: ${deflate ? acceptExtensionString(deflate) : '(none)'}`)
    const accept = createHash('sha1')
      .update(key + GUID)
      .digest('base64')
    p.sendData(Buffer.from(`HTTP/1.1 101 Switching Protocols\r\nServer: AutobahnTestSuite-ts\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n${extensions}Sec-WebSocket-Accept: ${accept}\r\n\r\n`, 'latin1'))
    p.open(rest, this.caseTimeoutMs)
  }
}
