// The CONNECT answer must be a real HTTP/1.x status line. A peer that is not an HTTP
// proxy gets no upgrade request (nor its credentials); a proxy's refusal is ERR_PROXY, told
// apart from the target server's own answer to the upgrade.
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import net from 'node:net'
import test from 'ava'

import { ReconnectingWebSocket, type ReconnectInfo, type RedialError } from '../index.js'
import { Recorder, acceptUpgrade, quiescent, rawServer, wsServer } from './helpers.js'

type ProxyError = RedialError & { proxyStatus?: number }

interface Exchange {
  /** The CONNECT request head, as received. */
  head: string
  /** Every byte the client sent after that head. */
  after: Buffer
  /** Settles when the client's connection to the proxy is closed. */
  closed: Promise<unknown>
}

/**
 * A raw "proxy" on 127.0.0.1: `answer(head)` is written back after the CONNECT head, or, for
 * 'tunnel', a `HTTP/1.0 200` (no reason phrase) and then the bytes flow to the target.
 */
async function rawProxy(answer: (head: string) => string) {
  const exchanges: Exchange[] = []
  const peer = await rawServer((socket) => {
    // Not `once()`: the client may reset the connection (unread bytes), and 'error' would reject it.
    const ex: Exchange = { head: '', after: Buffer.alloc(0), closed: new Promise((r) => socket.on('close', r)) }
    exchanges.push(ex)
    let buf = Buffer.alloc(0)
    let upstream: net.Socket | undefined
    socket.on('data', (chunk) => {
      if (ex.head) {
        ex.after = Buffer.concat([ex.after, chunk])
        upstream?.write(chunk)
        return
      }
      buf = Buffer.concat([buf, chunk])
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      ex.head = buf.subarray(0, end + 4).toString('latin1')
      ex.after = buf.subarray(end + 4)
      const reply = answer(ex.head)
      if (reply !== 'tunnel') return void socket.write(reply)
      const [, port] = /^CONNECT 127\.0\.0\.1:(\d+) /.exec(ex.head)!
      upstream = net.connect(Number(port), '127.0.0.1', () => {
        socket.write('HTTP/1.0 200\r\n\r\n')
        upstream!.write(ex.after)
        upstream!.pipe(socket)
      })
      upstream.on('error', () => socket.destroy())
      socket.on('close', () => upstream!.destroy())
    })
  })
  return Object.assign(peer, { exchanges, proxyUrl: `http://127.0.0.1:${peer.port}` })
}

test.serial('a peer answering "SSH-2.0 200 ok" is not a proxy: ERR_PROXY, and no upgrade request is written to it', async (t) => {
  const target = await wsServer()
  t.teardown(() => target.close())
  const proxy = await rawProxy(() => 'SSH-2.0 200 ok\r\n\r\n')
  t.teardown(() => proxy.close())
  const password = 'hunter2-xyzzy'
  const client = new ReconnectingWebSocket(target.url.replace('ws://', `ws://alice:${password}@`), {
    proxy: proxy.proxyUrl,
    maxRetries: 0,
    // Today's parser takes it for a tunnel and waits for the upgrade answer: bounded, so the test ends.
    connectTimeout: 2_000,
  })
  const r = new Recorder(client)
  const err: ProxyError = await r.next('error')
  t.is(err.code, 'ERR_PROXY')
  t.regex(err.message, /HTTP\/1\.x status line/)
  t.is(err.status, undefined)
  t.is(err.proxyStatus, undefined)
  await r.next('giveup')
  const [ex] = proxy.exchanges
  await ex.closed
  t.true(ex.head.startsWith(`CONNECT 127.0.0.1:${target.port} HTTP/1.1\r\n`), ex.head)
  t.is(ex.after.toString('latin1'), '', 'nothing after the CONNECT head: no upgrade request, no Authorization')
  t.is(proxy.exchanges.length, 1)
  t.is(target.accepted, 0)
  await quiescent()
})

test.serial('answers that are not an HTTP/1.x status line are ERR_PROXY with nothing written after the head', async (t) => {
  const answers = [
    'HTTP/2 200 OK\r\n\r\n',
    'HTTP/1.1 2000 OK\r\n\r\n',
    'HTTP/1.1  200 OK\r\n\r\n',
    'HTTP/1.1 200OK\r\n\r\n',
    'http/1.1 200 OK\r\n\r\n',
    ' HTTP/1.1 200 OK\r\n\r\n',
    '200 OK\r\n\r\n',
  ]
  let answer = ''
  const proxy = await rawProxy(() => answer)
  t.teardown(() => proxy.close())
  const target = await wsServer()
  t.teardown(() => target.close())
  for (answer of answers) {
    const client = new ReconnectingWebSocket(target.url, { proxy: proxy.proxyUrl, maxRetries: 0, connectTimeout: 2_000 })
    const r = new Recorder(client)
    const err: ProxyError = await r.next('error')
    t.is(err.code, 'ERR_PROXY', JSON.stringify(answer))
    await r.next('giveup')
    const ex = proxy.exchanges.at(-1)!
    await ex.closed
    t.is(ex.after.length, 0, JSON.stringify(answer))
  }
  t.is(target.accepted, 0)
  await quiescent()
})

test.serial("a proxy's 403 is ERR_PROXY with proxyStatus; shouldReconnect tells it apart from the target's own 403", async (t) => {
  // The target refuses the upgrade itself with 403.
  const target = await rawServer((socket) =>
    socket.once('data', () => socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')),
  )
  t.teardown(() => target.close())
  let refuse = true
  const proxy = await rawProxy(() => (refuse ? 'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n' : 'tunnel'))
  t.teardown(() => proxy.close())
  const attempt = async () => {
    const infos: ReconnectInfo[] = []
    const client = new ReconnectingWebSocket(target.url, {
      proxy: proxy.proxyUrl,
      shouldReconnect: (info) => (infos.push(info), false),
    })
    const r = new Recorder(client)
    const err: ProxyError = await r.next('error')
    const giveup = await r.next('giveup')
    t.is(giveup.reason, 'policy')
    return { err, infos, lastError: giveup.lastError as ProxyError }
  }

  const byProxy = await attempt()
  t.is(byProxy.err.code, 'ERR_PROXY')
  t.is(byProxy.err.proxyStatus, 403)
  t.is(byProxy.err.status, undefined)
  t.regex(byProxy.err.message, /proxy refused the tunnel \(HTTP 403\)/)
  t.deepEqual(byProxy.infos, [{ kind: 'error', code: 'ERR_PROXY', attempt: 1 }])
  t.is(byProxy.lastError.proxyStatus, 403)
  t.is(target.accepted, 0, 'the proxy refused: the target saw nothing')

  refuse = false
  const byTarget = await attempt()
  t.is(byTarget.err.code, 'ERR_HANDSHAKE')
  t.is(byTarget.err.status, 403)
  t.is(byTarget.err.proxyStatus, undefined)
  t.deepEqual(byTarget.infos, [{ kind: 'handshake', status: 403, headers: { 'content-length': '0' }, attempt: 1 }])
  t.is(target.accepted, 1, 'through the tunnel')
  await quiescent()
})

test.serial('other refusals: 5xx is ERR_PROXY and retried by default, 407 stays ERR_PROXY_AUTH; both carry proxyStatus', async (t) => {
  const target = await wsServer()
  t.teardown(() => target.close())
  let status = 502
  const proxy = await rawProxy(() => `HTTP/1.1 ${status} Whatever\r\n\r\n`)
  t.teardown(() => proxy.close())
  const infos: ReconnectInfo[] = []
  const retried = new ReconnectingWebSocket(target.url, { proxy: proxy.proxyUrl, minDelay: 1, maxRetries: 1 })
  const r = new Recorder(retried)
  for (let i = 0; i < 2; i++) {
    const err: ProxyError = await r.next('error')
    t.is(err.code, 'ERR_PROXY')
    t.is(err.proxyStatus, 502)
  }
  t.is((await r.next('giveup')).reason, 'maxRetries', '502 is retried')

  status = 407
  const auth = new ReconnectingWebSocket(target.url, { proxy: proxy.proxyUrl, minDelay: 1, shouldReconnect: (i) => void infos.push(i) })
  const r2 = new Recorder(auth)
  const err: ProxyError = await r2.next('error')
  t.is(err.code, 'ERR_PROXY_AUTH')
  t.is(err.proxyStatus, 407)
  t.is(err.status, undefined)
  t.is((await r2.next('giveup')).reason, 'policy', 'the default still gives up on 407')
  t.deepEqual(infos, [{ kind: 'error', code: 'ERR_PROXY_AUTH', attempt: 1 }])
  t.is(proxy.exchanges.length, 3)
  t.is(target.accepted, 0)
  await quiescent()
})

test.serial('an HTTP/1.0 200 without a reason phrase is a tunnel', async (t) => {
  const target = await rawServer((socket) => acceptUpgrade(socket, (s) => s.write(Buffer.from([0x81, 0x02, 0x68, 0x69]))))
  t.teardown(() => target.close())
  const proxy = await rawProxy(() => 'tunnel')
  t.teardown(() => proxy.close())
  // A short closeTimeout: the raw target does not answer the close frame.
  const client = new ReconnectingWebSocket(target.url, { proxy: proxy.proxyUrl, closeTimeout: 50 })
  const r = new Recorder(client)
  t.is(await r.next('message'), 'hi')
  t.regex(proxy.exchanges[0].after.toString('latin1'), /^GET \/ HTTP\/1\.1\r\n/)
  await client.disconnect()
  await quiescent()
})

test('proxy variables are read as curl and proxy-from-env read them: lower case first, empty as unset, ALL_PROXY after, no scheme is http://', (t) => {
  const { proxyFor, proxyEnv } = createRequire(import.meta.url)('../lib/proxy.js')
  const ws = (env: Record<string, string>) => proxyFor('ws://a.test/', undefined, env)
  const wss = (env: Record<string, string>) => proxyFor('wss://a.test/', undefined, env)
  t.is(ws({ http_proxy: 'http://lower:1', HTTP_PROXY: 'http://upper:1' }), 'http://lower:1')
  t.is(ws({ http_proxy: '', HTTP_PROXY: 'http://upper:1' }), 'http://upper:1')
  // httpoxy: under CGI, HTTP_PROXY is a request's Proxy: header; HTTPS_PROXY and ALL_PROXY are still read.
  t.is(ws({ HTTP_PROXY: 'http://attacker:1', REQUEST_METHOD: 'GET' }), undefined)
  t.is(ws({ HTTP_PROXY: 'http://attacker:1', ALL_PROXY: 'http://all:1', REQUEST_METHOD: 'GET' }), 'http://all:1')
  // (On Windows, whose names ignore case, the header is http_proxy too: neither is read there.)
  t.is(ws({ http_proxy: 'http://attacker:1', REQUEST_METHOD: 'GET' }), undefined)
  t.is(wss({ HTTPS_PROXY: 'http://secure:1', REQUEST_METHOD: 'GET' }), 'http://secure:1')
  t.is(ws({ HTTP_PROXY: 'http://upper:1', no_proxy: 'a.test', NO_PROXY: '' }), undefined)
  t.is(ws({ HTTP_PROXY: 'http://upper:1', no_proxy: '', NO_PROXY: 'a.test' }), undefined)
  t.is(ws({ ALL_PROXY: 'socks5h://all:1' }), 'socks5h://all:1')
  t.is(wss({ all_proxy: 'socks5://all:1', HTTP_PROXY: 'http://plain:1' }), 'socks5://all:1')
  t.is(wss({ HTTPS_PROXY: 'https-first:3128', ALL_PROXY: 'socks5://all:1' }), 'http://https-first:3128')
  t.is(ws({ HTTP_PROXY: '127.0.0.1:3128' }), 'http://127.0.0.1:3128')
  t.is(ws({ HTTP_PROXY: ' proxy.corp:3128 ' }), 'http://proxy.corp:3128')
  t.deepEqual(proxyEnv({ http_proxy: 'p:1', ALL_PROXY: 'socks5h://all:1', NO_PROXY: 'x' }), ['http://p:1', 'socks5h://all:1', 'x'])
  // The error names the variable, never its value (it may hold a password).
  const refused = (env: Record<string, string>) => t.throws(() => wss(env), { code: 'ERR_INVALID_PROXY' })!.message
  t.regex(refused({ https_proxy: 'https://bob:hunter2@p:443' }), /^https_proxy: Only http:\/\/ .*Received https:$/)
  t.regex(refused({ HTTPS_PROXY: 'http://bob:hunter2%E9@p:1' }), /^HTTPS_PROXY: .*percent-escapes that are not UTF-8$/)
  t.regex(refused({ ALL_PROXY: 'socks5://:hunter2@p:1' }), /^ALL_PROXY: .*need a user name/)
  t.is(ws({ HTTP_PROXY: 'http://u:p%zz@p:1' }), 'http://u:p%zz@p:1', 'a % without two hex digits is kept, as the addon keeps it')
  // With followRedirects, both schemes' variables go to the addon (a hop may change scheme): both
  // are checked, as the one for the client's own URL is (one for wss: failed each hop there, retried).
  t.regex(t.throws(() => proxyEnv({ HTTP_PROXY: 'http://ok:1', HTTPS_PROXY: 'https://bob:hunter2@p:443' }), { code: 'ERR_INVALID_PROXY' })!.message, /^HTTPS_PROXY: Only http:\/\/ .*Received https:$/)
  // Unless no hop can use them.
  for (const noProxy of ['*', 'localhost,*', ' localhost * ', '*,']) {
    t.notThrows(() => proxyEnv({ HTTPS_PROXY: 'https://bob:hunter2@p:443', NO_PROXY: noProxy }), noProxy)
  }
  const saved = process.env.HTTPS_PROXY
  process.env.HTTPS_PROXY = 'https://bob:hunter2@p:443'
  try {
    const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { followRedirects: true, startClosed: true }), { code: 'ERR_INVALID_PROXY' })
    t.false(err!.message.includes('hunter2'))
    t.notThrows(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { startClosed: true }), 'without redirects, only the variable for ws: counts')
  } finally {
    if (saved === undefined) delete process.env.HTTPS_PROXY
    else process.env.HTTPS_PROXY = saved
  }
})

test('a SOCKS5 password without a user name, credentials over 255 bytes and escapes that are not UTF-8 are refused early', (t) => {
  for (const proxy of ['socks5://:pw@127.0.0.1:1080', `socks5h://${'u'.repeat(256)}:pw@127.0.0.1:1080`, `socks5://u:${'%C3%A9'.repeat(128)}@127.0.0.1:1080`, 'http://u:p%E9ss@127.0.0.1:3128']) {
    const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { proxy, startClosed: true }), { code: 'ERR_INVALID_PROXY' })
    t.false(err!.message.includes('pw') || err!.message.includes('p%E9ss'), err!.message)
  }
  // A token alone stays Basic ":token" for a CONNECT proxy, as curl sends it.
  t.notThrows(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { proxy: 'http://:t0ken@127.0.0.1:3128', startClosed: true }))
})

test('NO_PROXY entries: the first URL (lib/proxy.js) and a redirect hop (src/proxy.rs) read them alike', (t) => {
  // The same table drives src/proxy.rs's unit test of the rules redirect hops use.
  const { proxyFor } = createRequire(import.meta.url)('../lib/proxy.js')
  const cases = readFileSync(new URL('./fixtures/no-proxy-cases.txt', import.meta.url), 'latin1')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
  t.true(cases.length > 20)
  for (const line of cases) {
    const [escaped, url, bypassed] = line.split('\t')
    const noProxy = escaped.replace(/\\u([0-9a-f]{4})/gi, (_, hex) => String.fromCharCode(parseInt(hex, 16)))
    const env = { HTTP_PROXY: 'http://proxy.test:3128', HTTPS_PROXY: 'http://proxy.test:3128', NO_PROXY: noProxy }
    t.is(proxyFor(url, undefined, env) === undefined, bypassed === 'true', line)
  }
})

test('a proxy option without a scheme is refused without echoing what may be its user name or password', (t) => {
  for (const proxy of ['bob:s3cret@proxy.test:3128', 'tok3n@proxy.test:3128']) {
    const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { proxy, startClosed: true }), { code: 'ERR_INVALID_PROXY' })
    t.false(/bob|s3cret|tok3n/.test(err!.message), err!.message)
  }
})

test.serial("a proxy that cannot be reached is ERR_PROXY with the cause ERR_CONNECT would have: the system's error, or the lookup function's own", async (t) => {
  // Refused: a port nothing listens on.
  const closed = net.createServer()
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
  const port = (closed.address() as net.AddressInfo).port
  await new Promise((resolve) => closed.close(resolve))
  const refused = new ReconnectingWebSocket('ws://target.test:9/', { proxy: `http://127.0.0.1:${port}`, maxRetries: 0 })
  const first = (await new Recorder(refused).next('giveup')).lastError as RedialError & { cause?: { code?: string } }
  await refused.disconnect()
  t.is(first.code, 'ERR_PROXY')
  t.is(first.cause?.code, 'ECONNREFUSED', first.message)

  // The proxy's name, looked up by the client's function, which fails in its own words.
  const failure = Object.assign(new Error('no such proxy here'), { code: 'EMYLOOKUP' })
  const lookup = (_host: string, _options: object, callback: (err: Error) => void) => callback(failure)
  const unnamed = new ReconnectingWebSocket('ws://target.test:9/', { proxy: 'http://proxy.test:3128', lookup, maxRetries: 0 })
  const second = (await new Recorder(unnamed).next('giveup')).lastError as RedialError & { cause?: unknown }
  await unnamed.disconnect()
  t.is(second.code, 'ERR_PROXY')
  t.is(second.cause, failure, second.message)
  await quiescent()
})
