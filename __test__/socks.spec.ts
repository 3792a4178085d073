// SOCKS5 proxies (RFC 1928, with RFC 1929's user name and password): `socks5h://` lets the proxy
// resolve the host name, `socks5://` resolves it here (lookup and family apply). The proxy below
// is written byte by byte, so that the tests see exactly what the client sends it.
import { once } from 'node:events'
import https from 'node:https'
import net from 'node:net'
import test from 'ava'
import { WebSocketServer } from 'ws'

import { type LookupFunction, ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { makeCerts } from './certs.js'
import { Recorder, wsServer } from './helpers.js'

interface Request {
  /** RFC 1929's user name and password, if the client sent them. */
  auth?: [string, string]
  /** 1: IPv4, 3: a host name, 4: IPv6. */
  type: number
  host: string
  port: number
}

/**
 * A SOCKS5 proxy on 127.0.0.1 that tunnels to 127.0.0.1 whatever host it is asked for.
 * `credentials`: required; `refuse`: answer every request with this reply code.
 */
async function socksProxy({ credentials, refuse }: { credentials?: [string, string]; refuse?: number } = {}) {
  const requests: Request[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    sockets.add(client)
    client.on('error', () => {})
    client.on('close', () => sockets.delete(client))
    let buf = Buffer.alloc(0)
    let stage: 'greeting' | 'auth' | 'request' | 'tunnel' = 'greeting'
    let auth: [string, string] | undefined
    const take = (n: number) => {
      const out = buf.subarray(0, n)
      buf = buf.subarray(n)
      return out
    }
    const step = (): boolean => {
      if (stage === 'greeting') {
        if (buf.length < 2 || buf.length < 2 + buf[1]) return false
        const methods = [...take(2 + buf[1]).subarray(2)]
        const method = credentials ? (methods.includes(2) ? 2 : 0xff) : methods.includes(0) ? 0 : 0xff
        client.write(Buffer.from([5, method]))
        if (method === 0xff) return client.end(), false
        stage = method === 2 ? 'auth' : 'request'
        return true
      }
      if (stage === 'auth') {
        if (buf.length < 2 || buf.length < 3 + buf[1] || buf.length < 3 + buf[1] + buf[2 + buf[1]]) return false
        const ulen = buf[1]
        const user = take(2 + ulen).subarray(2).toString()
        const pass = take(1 + buf[0]).subarray(1).toString()
        auth = [user, pass]
        const ok = user === credentials![0] && pass === credentials![1]
        client.write(Buffer.from([1, ok ? 0 : 1]))
        if (!ok) return client.end(), false
        stage = 'request'
        return true
      }
      if (stage === 'request') {
        if (buf.length < 5) return false
        const type = buf[3]
        const length = type === 1 ? 4 : type === 4 ? 16 : 1 + buf[4]
        if (buf.length < 4 + length + 2) return false
        const request = take(4 + length + 2)
        const address = request.subarray(4, 4 + length)
        const host = type === 1 ? [...address].join('.') : type === 4 ? address.toString('hex').match(/.{4}/g)!.join(':') : address.subarray(1).toString()
        const port = request.readUInt16BE(4 + length)
        requests.push({ auth, type, host, port })
        if (refuse !== undefined) {
          client.end(Buffer.from([5, refuse, 0, 1, 0, 0, 0, 0, 0, 0]))
          return false
        }
        const upstream = net.connect(port, '127.0.0.1', () => {
          client.write(Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff]))
          if (buf.length) upstream.write(buf)
          client.removeAllListeners('data')
          client.pipe(upstream)
          upstream.pipe(client)
        })
        upstream.on('error', () => client.destroy())
        sockets.add(upstream)
        stage = 'tunnel'
        return false
      }
      return false
    }
    client.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk])
      while (step()) {}
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  return {
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy()
        server.close(() => resolve())
      }),
  }
}

function released(t: import('ava').ExecutionContext) {
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, runningTasks: 0, pendingReconnects: 0 })
}

test.serial('socks5h: the proxy gets the host name and tunnels the connection, reconnects included', async (t) => {
  const peer = await wsServer((s) => s.on('message', (m) => s.send(String(m))))
  const proxy = await socksProxy()
  t.teardown(() => Promise.all([peer.close(), proxy.close()]))
  const client = new ReconnectingWebSocket(`ws://localhost:${peer.port}/`, { proxy: `socks5h://127.0.0.1:${proxy.port}`, minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client)
  await rec.next('open')
  client.send('through socks')
  t.is(await rec.next('message'), 'through socks')
  for (const s of peer.sockets) s.terminate()
  await rec.next('open')
  await client.disconnect()
  released(t)
  t.deepEqual(proxy.requests, [
    { auth: undefined, type: 3, host: 'localhost', port: peer.port },
    { auth: undefined, type: 3, host: 'localhost', port: peer.port },
  ])
})

test.serial('socks5: the host name is resolved here, by the lookup option too, and the proxy gets the address', async (t) => {
  const peer = await wsServer()
  const proxy = await socksProxy()
  t.teardown(() => Promise.all([peer.close(), proxy.close()]))
  const asked: string[] = []
  const lookup: LookupFunction = (host, _options, callback) => {
    asked.push(host)
    callback(null, [{ address: '127.0.0.1', family: 4 }])
  }
  const client = new ReconnectingWebSocket(`ws://service.invalid:${peer.port}/`, { proxy: `socks5://127.0.0.1:${proxy.port}`, lookup })
  await new Recorder(client).next('open')
  await client.disconnect()
  const direct = new ReconnectingWebSocket(`ws://127.0.0.1:${peer.port}/`, { proxy: `socks5://127.0.0.1:${proxy.port}` })
  await new Recorder(direct).next('open')
  await direct.disconnect()
  released(t)
  // The proxy's own address is an IP literal: only the target's name was looked up.
  t.deepEqual(asked, ['service.invalid'])
  t.deepEqual(proxy.requests, [
    { auth: undefined, type: 1, host: '127.0.0.1', port: peer.port },
    { auth: undefined, type: 1, host: '127.0.0.1', port: peer.port },
  ])
})

test.serial('socks5 with a user name and password; refused credentials are ERR_PROXY_AUTH and not retried; the password is in no error', async (t) => {
  const peer = await wsServer()
  const proxy = await socksProxy({ credentials: ['alice', 'p@ss:word'] })
  t.teardown(() => Promise.all([peer.close(), proxy.close()]))
  const url = `ws://127.0.0.1:${peer.port}/`
  const good = new ReconnectingWebSocket(url, { proxy: `socks5h://alice:p%40ss%3Aword@127.0.0.1:${proxy.port}` })
  await new Recorder(good).next('open')
  await good.disconnect()
  t.deepEqual(proxy.requests[0].auth, ['alice', 'p@ss:word'])
  for (const proxyUrl of [`socks5h://alice:wrong-secret@127.0.0.1:${proxy.port}`, `socks5h://127.0.0.1:${proxy.port}`]) {
    const client = new ReconnectingWebSocket(url, { proxy: proxyUrl, minDelay: 10 })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    await rec.next('giveup')
    await client.disconnect()
    t.is(err.code, 'ERR_PROXY_AUTH')
    t.false(err.message.includes('wrong-secret'), err.message)
    t.is(rec.count('reconnecting'), 0)
  }
  released(t)
  t.is(peer.accepted, 1)
})

test.serial("a SOCKS proxy's refusal is ERR_PROXY, and retried", async (t) => {
  const proxy = await socksProxy({ refuse: 5 })
  t.teardown(() => proxy.close())
  const client = new ReconnectingWebSocket('ws://127.0.0.1:9/', { proxy: `socks5://127.0.0.1:${proxy.port}`, minDelay: 10, maxDelay: 10, maxRetries: 1 })
  const rec = new Recorder(client)
  const first: RedialError = await rec.next('error')
  await rec.next('reconnecting')
  await rec.next('error')
  await rec.next('giveup')
  await client.disconnect()
  t.is(first.code, 'ERR_PROXY')
  t.regex(first.message, /connection refused/)
  t.is(proxy.requests.length, 2)
  t.like(t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:9/', { proxy: 'socks4://127.0.0.1:1080' })), { code: 'ERR_INVALID_PROXY' })
  released(t)
})

test.serial("wss: through socks5h: TLS inside the tunnel, the certificate checked against the URL's host name", async (t) => {
  const certs = makeCerts()
  const server = https.createServer({ key: certs.key, cert: certs.cert })
  new WebSocketServer({ server }).on('connection', (s) => s.on('message', (m) => s.send(String(m))))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as net.AddressInfo).port
  const proxy = await socksProxy()
  t.teardown(() => Promise.all([proxy.close(), new Promise((r) => server.close(r))]))
  const via = `socks5h://127.0.0.1:${proxy.port}`
  const client = new ReconnectingWebSocket(`wss://localhost:${port}/`, { proxy: via, tls: { ca: certs.ca } })
  const rec = new Recorder(client)
  await rec.next('open')
  client.send('tls in socks')
  t.is(await rec.next('message'), 'tls in socks')
  await client.disconnect()
  // The proxy reaches the same server for another name, which the certificate does not have.
  const other = new ReconnectingWebSocket(`wss://elsewhere.invalid:${port}/`, { proxy: via, tls: { ca: certs.ca }, maxRetries: 0 })
  const failed = new Recorder(other)
  t.is(((await failed.next('error')) as RedialError).code, 'ERR_TLS_CERT')
  await failed.next('giveup')
  await other.disconnect()
  t.deepEqual(proxy.requests.map((r) => r.host), ['localhost', 'elsewhere.invalid'])
  released(t)
})
