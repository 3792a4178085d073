// followRedirects and maxRedirects, as ws has them: a 3xx answer's Location is followed within the
// attempt, credentials stay with the host they were given for, a loop ends the attempt with a
// coded error, and every attempt starts at the client's own URL again.
import http from 'node:http'
import { once } from 'node:events'
import type net from 'node:net'
import test, { type ExecutionContext } from 'ava'
import { WebSocketServer } from 'ws'

import { ReconnectingWebSocket, clientStats, type RedialError } from '../index.js'
import { Recorder, connectProxy, serverChild } from './helpers.js'

/** Everything a client held is released by the time its disconnect() resolves. */
function released(t: ExecutionContext) {
  t.like(clientStats(), { openConnections: 0, pendingAttempts: 0, pendingReconnects: 0, runningTasks: 0, ioBuffers: 0 })
}

interface Hit {
  port: number
  path: string
  headers: http.IncomingHttpHeaders
}

/**
 * An HTTP server whose upgrades answer `route(path)`: a redirect (`{ status, location }`) or, for
 * `null`, a WebSocket connection. Every upgrade request is recorded in `hits`.
 */
async function server(route: (path: string) => { status: number; location?: string } | null, hits: Hit[]) {
  const wss = new WebSocketServer({ noServer: true })
  const sockets = new Set<net.Socket>()
  const s = http.createServer((_req, res) => res.writeHead(426).end())
  s.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  s.on('upgrade', (req, socket, head) => {
    const port = (s.address() as net.AddressInfo).port
    hits.push({ port, path: req.url ?? '', headers: req.headers })
    const answer = route(req.url ?? '')
    if (answer === null) return wss.handleUpgrade(req, socket, head, (ws) => ws.on('error', () => {}))
    const location = answer.location === undefined ? '' : `Location: ${answer.location}\r\n`
    socket.end(`HTTP/1.1 ${answer.status} Moved\r\n${location}Content-Length: 0\r\nConnection: close\r\n\r\n`)
  })
  s.listen(0, '127.0.0.1')
  await once(s, 'listening')
  const port = (s.address() as net.AddressInfo).port
  return {
    port,
    url: (path: string) => `ws://127.0.0.1:${port}${path}`,
    terminateAll: () => {
      for (const c of wss.clients) c.terminate()
    },
    close: () => {
      for (const c of wss.clients) c.terminate()
      for (const socket of sockets) socket.destroy()
      return new Promise<void>((resolve) => s.close(() => resolve()))
    },
  }
}

const credentials = { authorization: 'Bearer s3cret', cookie: 'session=s3cret', 'x-kept': 'yes' }

test.serial('a redirect on the same host keeps every header; each reconnect starts at the client URL again', async (t) => {
  const hits: Hit[] = []
  const a = await server((path) => (path === '/start' ? { status: 302, location: 'moved?x=1' } : null), hits)
  t.teardown(() => a.close())
  const client = new ReconnectingWebSocket(a.url('/start'), { followRedirects: true, headers: credentials, minDelay: 10, maxDelay: 10 })
  const rec = new Recorder(client, ['upgrade', 'open', 'error'])
  await rec.next('open')
  t.deepEqual(hits.map((h) => h.path), ['/start', '/moved?x=1'])
  t.like(hits[1].headers, credentials)
  t.is(client.url, a.url('/start'), 'the client keeps its own URL, from which every attempt starts')
  t.is((await rec.next('upgrade')).statusCode, 101)
  a.terminateAll()
  await rec.next('open')
  t.deepEqual(hits.map((h) => h.path), ['/start', '/moved?x=1', '/start', '/moved?x=1'])
  const errors = rec.log.filter((e) => e.name === 'error').map((e) => (e.args[0] as RedialError).code)
  t.false(errors.includes('ERR_HANDSHAKE'), `only the terminated connection's error: ${errors}`)
  await client.disconnect()
  released(t)
})

test.serial('a redirect to another host or port, or from wss: to ws:, goes without Authorization and Cookie', async (t) => {
  const hits: Hit[] = []
  const target = await server(() => null, hits)
  const a = await server((path) => (path === '/start' ? { status: 307, location: target.url('/there') } : null), hits)
  t.teardown(() => Promise.all([a.close(), target.close()]))
  const client = new ReconnectingWebSocket(a.url('/start'), { followRedirects: true, headers: credentials })
  await new Recorder(client).next('open')
  t.deepEqual(
    hits.map((h) => [h.port, h.path]),
    [
      [a.port, '/start'],
      [target.port, '/there'],
    ],
  )
  t.like(hits[0].headers, credentials)
  t.is(hits[1].headers.authorization, undefined)
  t.is(hits[1].headers.cookie, undefined)
  t.is(hits[1].headers['x-kept'], 'yes')
  t.is(hits[1].headers.host, `127.0.0.1:${target.port}`)
  await client.disconnect()
  released(t)
})

test.serial('without followRedirects a 3xx is a failed attempt; a loop, a missing or empty Location or a bad one fail with ERR_HANDSHAKE', async (t) => {
  const hits: Hit[] = []
  const routes: Record<string, { status: number; location?: string }> = {
    '/loop': { status: 302, location: '/loop' },
    '/nowhere': { status: 301 },
    // Empty: no redirect, as ws reads it (it was followed to the same address until maxRedirects).
    '/empty': { status: 302, location: ' ' },
    '/ftp': { status: 308, location: 'ftp://127.0.0.1/file' },
  }
  const a = await server((path) => routes[path] ?? null, hits)
  t.teardown(() => a.close())
  const failure = async (path: string, options: object) => {
    hits.length = 0
    const client = new ReconnectingWebSocket(a.url(path), { maxRetries: 0, ...options })
    const rec = new Recorder(client)
    const err: RedialError = await rec.next('error')
    await rec.next('giveup')
    await client.disconnect()
    released(t)
    t.is(rec.count('open'), 0)
    return { err, paths: hits.map((h) => h.path) }
  }
  const off = await failure('/loop', {})
  t.like(off.err, { code: 'ERR_HANDSHAKE', status: 302 })
  t.deepEqual(off.paths, ['/loop'])
  const loop = await failure('/loop', { followRedirects: true, maxRedirects: 2 })
  t.like(loop.err, { code: 'ERR_HANDSHAKE', status: 302 })
  t.regex(loop.err.message, /redirected more than 2 times \(maxRedirects\).*HTTP 302 to ws:\/\/127\.0\.0\.1:\d+\/loop/)
  t.deepEqual(loop.paths, ['/loop', '/loop', '/loop'], 'the first request and two redirects')
  const none = await failure('/loop', { followRedirects: true, maxRedirects: 0 })
  t.regex(none.err.message, /more than 0 times/)
  t.deepEqual(none.paths, ['/loop'])
  const nowhere = await failure('/nowhere', { followRedirects: true })
  t.like(nowhere.err, { code: 'ERR_HANDSHAKE', status: 301 })
  t.deepEqual(nowhere.paths, ['/nowhere'])
  const empty = await failure('/empty', { followRedirects: true })
  t.like(empty.err, { code: 'ERR_HANDSHAKE', status: 302, message: 'server answered the upgrade with HTTP 302' })
  t.deepEqual(empty.paths, ['/empty'])
  const ftp = await failure('/ftp', { followRedirects: true })
  t.like(ftp.err, { code: 'ERR_HANDSHAKE', status: 308 })
  t.regex(ftp.err.message, /redirected \(HTTP 308\) to a ftp: URL/)
})

test('followRedirects and maxRedirects are checked like every option', (t) => {
  const make = (options: object) => () => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, ...options })
  t.like(t.throws(make({ followRedirects: 'yes' })), { code: 'ERR_INVALID_ARG_TYPE' })
  t.like(t.throws(make({ maxRedirects: -1 })), { code: 'ERR_OUT_OF_RANGE' })
  t.like(t.throws(make({ maxRedirects: 2.5 })), { code: 'ERR_OUT_OF_RANGE' })
  t.notThrows(make({ followRedirects: true, maxRedirects: 0 }))
})

test.serial("the redirect event, as ws's: each address followed, before the attempt's open or error; no user name or password", async (t) => {
  const hits: Hit[] = []
  const b = await server((path) => (path === '/loop' ? { status: 307, location: '/loop' } : null), hits)
  t.teardown(() => b.close())
  const a = await server((path) => (path === '/start' ? { status: 301, location: `http://user:pw@127.0.0.1:${b.port}/end` } : null), hits)
  t.teardown(() => a.close())
  const client = new ReconnectingWebSocket(a.url('/start'), { followRedirects: true, maxRetries: 0 })
  const rec = new Recorder(client, ['redirect', 'open', 'error'])
  await rec.next('open')
  t.deepEqual(
    rec.log.map((e) => [e.name, e.args[0]]),
    [
      ['redirect', `ws://127.0.0.1:${b.port}/end`],
      ['open', { protocol: '', extensions: '' }],
    ],
  )
  await client.disconnect()
  released(t)
  // A loop: every hop is reported, then the error.
  const looping = new ReconnectingWebSocket(b.url('/loop'), { followRedirects: true, maxRedirects: 2, maxRetries: 0 })
  const r = new Recorder(looping, ['redirect', 'error'])
  t.is((await r.next('error')).code, 'ERR_HANDSHAKE')
  t.deepEqual(
    r.log.map((e) => e.name),
    ['redirect', 'redirect', 'error'],
  )
  await looping.disconnect()
  released(t)
  // The connection a disconnect({ flush: true }) makes from a reconnect wait, to write the queue,
  // is not reported: neither its open nor its redirect (which was).
  const flushed = new ReconnectingWebSocket(a.url('/start'), { followRedirects: true, minDelay: 60_000, maxDelay: 60_000 })
  const f = new Recorder(flushed, ['redirect', 'open', 'reconnecting'])
  await f.next('open')
  b.terminateAll()
  await f.next('reconnecting')
  const before = hits.length
  flushed.send('queued')
  await flushed.disconnect({ flush: true })
  t.is(hits.length, before + 2, 'the flush connection followed the redirect')
  t.deepEqual(
    f.log.map((e) => e.name),
    ['redirect', 'open', 'reconnecting'],
  )
  released(t)
  // Without followRedirects there is none.
  const plain = new ReconnectingWebSocket(a.url('/start'), { maxRetries: 0 })
  const p = new Recorder(plain, ['redirect', 'error'])
  await p.next('error')
  t.is(p.count('redirect'), 0)
  await plain.disconnect()
  released(t)
})

test.serial('while JS is behind on an attempt\'s redirect events, its next hop waits, as a reconnect does: a server redirecting without end piles up no addresses behind a busy JS thread', async (t) => {
  // The server (another process) answers 1,500 upgrades with a redirect naming its time, then 404.
  const url = await serverChild(t, 'redirect-loop')
  const client = new ReconnectingWebSocket(`${url}/`, { followRedirects: true, maxRedirects: 1_000_000, connectTimeout: 30_000, maxRetries: 0 })
  const hops: number[] = []
  client.on('redirect', (to: string) => hops.push(Number(new URL(to).searchParams.get('t'))))
  client.on('error', () => {})
  const giveup = new Promise((resolve) => client.once('giveup', (ev) => resolve([ev])))
  // The JS thread is busy for a second: no event is dispatched meanwhile.
  const start = Date.now()
  while (Date.now() - start < 1_000);
  const end = Date.now()
  const [ev] = (await giveup) as [{ lastError: RedialError }]
  t.is(ev.lastError.status, 404)
  t.is(hops.length, 1_500, 'every hop reported')
  const whileBusy = hops.filter((at) => at >= start && at <= end).length
  // Without the wait: a hop every millisecond or so (about 1,000 in that second).
  t.true(whileBusy <= 70, `${whileBusy} hops while JS was busy`)
  await client.disconnect()
  released(t)
})

test.serial('a proxy from the environment is decided again for every redirect: NO_PROXY names the host it leads to, not the first', async (t) => {
  // A redirect from a host NO_PROXY names to one it does not went direct, and the other way
  // round through the proxy: each hop kept the first URL's decision (found in review).
  const hits: Hit[] = []
  const s = await server((path) => (path === '/a' ? { status: 302, location: `ws://localhost:${s.port}/b` } : null), hits)
  t.teardown(() => s.close())
  const proxy = await connectProxy()
  t.teardown(() => proxy.close())
  const saved = { ...process.env }
  try {
    process.env.HTTP_PROXY = proxy.url
    for (const [noProxy, through] of [
      ['127.0.0.1', [`localhost:${s.port}`]],
      ['localhost', [`127.0.0.1:${s.port}`]],
    ] as const) {
      process.env.NO_PROXY = noProxy
      proxy.seen.length = 0
      const client = new ReconnectingWebSocket(s.url('/a'), { followRedirects: true, minDelay: 60_000 })
      await new Recorder(client).next('open')
      t.deepEqual(
        proxy.seen.map((c) => c.target),
        through,
        `NO_PROXY=${noProxy}`,
      )
      await client.disconnect()
    }
  } finally {
    process.env = saved
  }
  released(t)
})

test.serial("a redirect's long Location is named, not copied, in error messages: cut after 200 characters", async (t) => {
  const server = http.createServer()
  server.on('upgrade', (req, socket) => {
    socket.on('error', () => {})
    const port = (server.address() as net.AddressInfo).port
    socket.end(`HTTP/1.1 307 Temporary Redirect\r\nLocation: ws://127.0.0.1:${port}/${'a'.repeat(6_000)}?token=SECRET\r\nContent-Length: 0\r\n\r\n`)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => server.close())
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/`, { followRedirects: true, maxRedirects: 2, maxRetries: 0 })
  const { lastError } = await new Recorder(client).next('giveup')
  await client.disconnect()
  t.regex(lastError.message, /maxRedirects/)
  t.true(lastError.message.length < 400, `${lastError.message.length} characters`)
  t.true(lastError.message.includes(`/${'a'.repeat(100)}`) && lastError.message.includes('…'))
  // Nor is its query shown: it may carry a token.
  t.false(lastError.message.includes('SECRET'))
})
