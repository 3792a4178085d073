// A password in a URL goes into its Authorization / Proxy-Authorization header and
// nowhere else: not in a NODE_DEBUG line, a synchronous error, an error event, a giveup.
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import type net from 'node:net'
import { fileURLToPath } from 'node:url'
import { inspect } from 'node:util'
import test from 'ava'

import { ReconnectingWebSocket, type RedialError } from '../index.js'
import { Recorder, quiescent, rawServer, refusedPort, wsServer } from './helpers.js'

const PASSWORD = 'hunter2-xyzzy'
const TOKEN = 'tok3n-plugh'

/** Every form the secret could leak in: as typed, percent-encoded, and base64 in a header. */
function leaks(text: string, user = 'alice', password = PASSWORD): string[] {
  const forms = [password, encodeURIComponent(password), Buffer.from(`${user}:${password}`).toString('base64')]
  return forms.filter((f) => text.includes(f))
}

function assertClean(t: import('ava').ExecutionContext, err: unknown, what: string) {
  const e = err as Error
  for (const text of [e.message, String(e), e.stack ?? '']) {
    t.deepEqual(leaks(text), [], `${what}: ${text}`)
    t.false(text.includes(TOKEN), `${what}: ${text}`)
  }
}

test.serial('NODE_DEBUG=redial-ws never logs the password, through opens, closes, reconnects, errors and a giveup', async (t) => {
  const auth: Array<string | undefined> = []
  const peer = await wsServer((socket, p) => {
    // The first connection is dropped: close, reconnecting, connect, open again.
    if (p.accepted === 1) socket.close(1012)
  })
  t.teardown(() => peer.close())
  peer.wss.on('connection', (_s, req) => auth.push(req.headers.authorization))
  const refused = await refusedPort()
  const index = fileURLToPath(new URL('../index.js', import.meta.url))
  const script = `const { ReconnectingWebSocket } = require(${JSON.stringify(index)})
    const [, url, refusedUrl] = process.argv
    const c = new ReconnectingWebSocket(url, { minDelay: 1, maxDelay: 1 })
    let opens = 0
    c.on('error', (e) => console.log('error event', e.message))
    c.on('open', () => {
      if (++opens < 2) return
      c.disconnect().then(() => {
        const d = new ReconnectingWebSocket(refusedUrl, { maxRetries: 0 })
        d.on('error', (e) => console.log('error event', e.message, String(e)))
        d.on('giveup', (g) => console.log('giveup', g.lastError.message))
      })
    })`
  // A query is cut, as in error messages: it carries a token as often as not.
  const url = `${peer.url.replace('ws://', `ws://alice:${PASSWORD}@`)}?token=${TOKEN}`
  const refusedUrl = `ws://alice:${PASSWORD}@127.0.0.1:${refused}/`
  const child = spawn(process.execPath, ['-e', script, url, refusedUrl], {
    env: { ...process.env, NODE_DEBUG: 'redial-ws' },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const [code] = await once(child, 'close')
  t.is(code, 0, stderr)
  // The log happened, URL and all, for every kind of line ...
  const masked = `ws://alice:***@127.0.0.1:${peer.port}/?\u2026`
  for (const line of ['connect', 'open', 'close 1012', 'reconnecting']) {
    t.true(stderr.includes(`${masked} ${line}`), `"${masked} ${line}" in:\n${stderr}`)
  }
  t.regex(stderr, new RegExp(`ws://alice:\\*\\*\\*@127\\.0\\.0\\.1:${refused}/ error `))
  t.regex(stderr, /giveup maxRetries/)
  t.regex(stdout, /^giveup /m)
  // ... the password only in the header it is meant for ...
  t.deepEqual(auth, [1, 2].map(() => `Basic ${Buffer.from(`alice:${PASSWORD}`).toString('base64')}`))
  // ... and nowhere in the output.
  t.deepEqual(leaks(stderr + stdout), [], stderr + stdout)
  t.false(stderr.includes(TOKEN), stderr)
  await quiescent()
})

test.serial("client.url masks the credentials (an event's target, a diagnostics subscriber's client hand it to anyone); they still go in the header", async (t) => {
  const auth: Array<string | undefined> = []
  const peer = await wsServer()
  t.teardown(() => peer.close())
  peer.wss.on('connection', (_s, req) => auth.push(req.headers.authorization))
  const host = `127.0.0.1:${peer.port}`
  const cases: Array<[string | (() => string), string]> = [
    [`ws://alice:${PASSWORD}@${host}/`, `ws://alice:***@${host}/`],
    [`ws://alice:${encodeURIComponent('p@ss ' + PASSWORD)}@${host}/a@b`, `ws://alice:***@${host}/a@b`],
    // A lone user name is often a token.
    [`ws://${TOKEN}@${host}/`, `ws://***@${host}/`],
    // From a provider, once it has answered.
    [() => `ws://alice:${PASSWORD}@${host}/`, `ws://alice:***@${host}/`],
  ]
  for (const [url, shown] of cases) {
    const client = new ReconnectingWebSocket(url, { pingInterval: 0 })
    const targets: string[] = []
    client.addEventListener('open', (e) => targets.push((e.target as ReconnectingWebSocket).url))
    await client.opened()
    t.is(client.url, shown)
    t.deepEqual(targets, [shown])
    const seen = inspect(client, { showHidden: true, getters: true, depth: 4 })
    t.deepEqual(leaks(seen), [], seen)
    t.false(seen.includes(TOKEN))
    await client.disconnect()
  }
  t.is(auth.length, cases.length)
  t.true(auth.every((a) => a !== undefined && a.startsWith('Basic ')))
  t.is(auth[0], `Basic ${Buffer.from(`alice:${PASSWORD}`).toString('base64')}`)
  await quiescent()
})

test.serial("a connection's error leaves the URL's query out (a token, an apikey), as the giveup's does", async (t) => {
  const port = await refusedPort()
  const client = new ReconnectingWebSocket(`ws://127.0.0.1:${port}/socket/websocket?token=SECRET123&vsn=2.0.0`, { maxRetries: 0 })
  const rec = new Recorder(client)
  const err: RedialError = await rec.next('error')
  t.is(err.code, 'ERR_CONNECT')
  t.true(err.message.endsWith(`(ws://127.0.0.1:${port}/socket/websocket?…)`), err.message)
  const giveup = await rec.next('giveup')
  t.false(inspect(giveup).includes('SECRET123'))
  t.false(inspect(err).includes('SECRET123'))
  // The URL a check refuses, from the constructor or a provider, neither.
  const refused = t.throws(() => new ReconnectingWebSocket(`ws://127.0.0.1:99999/socket?token=SECRET123`), { code: 'ERR_INVALID_URL' })
  t.is(refused?.message, 'Invalid URL: ws://127.0.0.1:99999/socket?\u2026')
  const provided = new ReconnectingWebSocket(() => `ws://127.0.0.1:${port}/socket?token=SECRET123#x`, { maxRetries: 0 })
  const failed: RedialError = await new Recorder(provided).next('error')
  t.is(failed.code, 'ERR_PROVIDER')
  t.false(inspect(failed).includes('SECRET123'), failed.message)
})

test('synchronous errors name the URL without its password', (t) => {
  const cases: Array<[string, object, string]> = [
    [`ws://alice:${PASSWORD}@127.0.0.1:99999/`, {}, 'ERR_INVALID_URL'],
    [`ws://alice:${PASSWORD}@[::1/`, {}, 'ERR_INVALID_URL'],
    [`ws://alice:${PASSWORD}@127.0.0.1:1/#fragment`, {}, 'ERR_INVALID_URL'],
    [`https://alice:${encodeURIComponent(PASSWORD)}@127.0.0.1:1/#x`, {}, 'ERR_INVALID_URL'],
    [`ws://${TOKEN}@127.0.0.1:1/#fragment`, {}, 'ERR_INVALID_URL'],
    ['ws://127.0.0.1:1/', { proxy: `http://alice:${PASSWORD}@127.0.0.1:99999` }, 'ERR_INVALID_PROXY'],
    ['ws://127.0.0.1:1/', { proxy: `http://alice:${PASSWORD}@[::1` }, 'ERR_INVALID_PROXY'],
    // A password typed with a raw '/', '?' or '#' ends the URL parser's authority early: it showed.
    [`ws://alice:pa/${PASSWORD}@127.0.0.1:1/`, {}, 'ERR_INVALID_URL'],
    [`ws://alice:12#${PASSWORD}@127.0.0.1:1/`, {}, 'ERR_INVALID_URL'],
    ['ws://127.0.0.1:1/', { proxy: `http://alice:pa/${PASSWORD}@127.0.0.1:3128` }, 'ERR_INVALID_PROXY'],
    ['ws://127.0.0.1:1/', { proxy: `socks5://alice:pa?${PASSWORD}@127.0.0.1:1080` }, 'ERR_INVALID_PROXY'],
  ]
  for (const [url, options, code] of cases) {
    const err = t.throws(() => new ReconnectingWebSocket(url, { startClosed: true, ...options })) as RedialError
    t.is(err.code as string, code, url)
    assertClean(t, err, url)
    // Still useful: the user name and host are there.
    if (!url.includes(TOKEN)) t.regex(err.message, /alice:\*\*\*@/)
  }
  // Without "//" a SOCKS URL parses with no host, its credentials as its path: refused, not echoed.
  for (const proxy of [`socks5:alice:${PASSWORD}@127.0.0.1:1080`, `socks5h:/alice:${PASSWORD}@127.0.0.1`]) {
    const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, proxy })) as RedialError
    t.is(err.code as string, 'ERR_INVALID_PROXY', proxy)
    assertClean(t, err, proxy)
    t.regex(err.message, /no host/)
  }
  // A proxy from the environment is checked the same way.
  const saved = process.env.HTTP_PROXY
  try {
    for (const proxy of [`http://alice:${PASSWORD}@127.0.0.1:99999`, `http://alice:pa#${PASSWORD}@127.0.0.1:3128`, `socks5:alice:${PASSWORD}@127.0.0.1:1080`]) {
      process.env.HTTP_PROXY = proxy
      const err = t.throws(() => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true })) as RedialError
      t.is(err.code as string, 'ERR_INVALID_PROXY')
      assertClean(t, err, `HTTP_PROXY=${proxy}`)
    }
  } finally {
    if (saved === undefined) delete process.env.HTTP_PROXY
    else process.env.HTTP_PROXY = saved
  }
})

test.serial('a url provider returning a bad URL with a password: ERR_PROVIDER without the password', async (t) => {
  for (const bad of [`ws://alice:${PASSWORD}@127.0.0.1:99999/`, `ws://alice:${PASSWORD}@127.0.0.1:1/#fragment`]) {
    const client = new ReconnectingWebSocket(() => bad, { maxRetries: 0 })
    const r = new Recorder(client)
    const err: RedialError = await r.next('error')
    t.is(err.code, 'ERR_PROVIDER')
    t.regex(err.message, /alice:\*\*\*@/)
    assertClean(t, err, bad)
    const giveup = await r.next('giveup')
    assertClean(t, giveup.lastError, `${bad} (giveup)`)
  }
  // A provider's own error that names a URL with credentials is masked too.
  const thrower = new ReconnectingWebSocket(
    () => {
      throw new Error(`cannot fetch ws://alice:${PASSWORD}@config.example/ (offline)`)
    },
    { maxRetries: 0 },
  )
  const err: RedialError = await new Recorder(thrower).next('error')
  t.is(err.code, 'ERR_PROVIDER')
  t.regex(err.message, /ws:\/\/alice:\*\*\*@config\.example\/ \(offline\)/)
  assertClean(t, err, 'thrown by the provider')
  await quiescent()
})

test.serial('a proxy with credentials that refuses or answers garbage: no password in the errors', async (t) => {
  const answers = ['HTTP/1.1 403 Forbidden\r\n\r\n', 'SSH-2.0 200 ok\r\n\r\n', 'HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n', '']
  let answer = ''
  const received: string[] = []
  const proxy = await rawServer((socket: net.Socket) => {
    let head = ''
    const onData = (d: Buffer) => {
      head += d.toString('latin1')
      if (!head.includes('\r\n\r\n')) return
      socket.off('data', onData)
      received.push(head)
      if (answer) socket.write(answer)
      else socket.destroy()
    }
    socket.on('data', onData)
  })
  t.teardown(() => proxy.close())
  const target = await wsServer()
  t.teardown(() => target.close())
  const proxyUrl = `http://bob:${PASSWORD}@127.0.0.1:${proxy.port}`
  for (answer of answers) {
    const client = new ReconnectingWebSocket(target.url.replace('ws://', `ws://alice:${PASSWORD}@`), {
      proxy: proxyUrl,
      maxRetries: 0,
      connectTimeout: 2_000,
    })
    const r = new Recorder(client)
    const err: RedialError = await r.next('error')
    t.is(err.code, 'ERR_PROXY', JSON.stringify(answer))
    assertClean(t, err, JSON.stringify(answer))
    t.deepEqual(leaks(err.message, 'bob'), [], err.message)
    assertClean(t, (await r.next('giveup')).lastError, 'giveup')
  }
  // The proxy's credentials went where they belong, and only there.
  t.is(received.length, answers.length)
  for (const head of received) {
    t.true(head.includes(`\r\nProxy-Authorization: Basic ${Buffer.from(`bob:${PASSWORD}`).toString('base64')}\r\n`), head)
    t.deepEqual(leaks(head), [], 'the target credentials are not given to the proxy')
  }
  t.is(target.accepted, 0)
  await quiescent()
})
