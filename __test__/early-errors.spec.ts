// Input that can never work is refused by the constructor, synchronously, with a
// stable code, before anything is sent: not found out per attempt and retried forever.
import { X509Certificate } from 'node:crypto'
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import type net from 'node:net'
import test, { type ExecutionContext } from 'ava'
import WebSocket, { WebSocketServer } from 'ws'

import { ReconnectingWebSocket, type ReconnectingWebSocketOptions, type RedialError, type TlsOptions } from '../index.js'
import { CLIENT_PASSPHRASE, makeCerts } from './certs.js'
import { Recorder, acceptUpgrade, quiescent, rawServer } from './helpers.js'

const certs = makeCerts({ clients: true })

// Every control character Node's http refuses in a header value (all but tab).
const CONTROLS = [...Array(32).keys(), 0x7f].filter((c) => c !== 0x09).map((c) => String.fromCharCode(c))

/** A raw WebSocket server that counts TCP connections and keeps each request head. */
async function countingServer() {
  const heads: string[] = []
  const peer = await rawServer((socket: net.Socket) => {
    let head = ''
    socket.on('data', (d) => (head += d.toString('latin1')))
    acceptUpgrade(socket, () => heads.push(head))
  })
  return Object.assign(peer, { heads })
}

/** Node's own error for this header value (code, class and message are matched). */
function nodeError(name: string, value: string): Error & { code?: string } {
  try {
    http.validateHeaderValue(name, value)
  } catch (err) {
    return err as Error
  }
  throw new Error(`node accepts ${JSON.stringify(value)}`)
}

function throwsLikeNode(t: ExecutionContext, make: () => unknown, name: string, value: string, what: string) {
  const expected = nodeError(name, value)
  const err = t.throws(make, undefined, what) as RedialError
  t.is(err?.code as string, 'ERR_INVALID_CHAR', what)
  t.is(err?.code as string, expected.code as string, what)
  t.is(err?.constructor, expected.constructor, what)
  t.is(err?.message, expected.message, what)
}

/** A good client to the same server opens, and it is the server's only connection so far. */
async function onlyTheControlConnected(t: ExecutionContext, peer: { accepted: number }, url: string, options: ReconnectingWebSocketOptions = {}) {
  // A short closeTimeout: the raw servers do not answer the close frame.
  const good = new ReconnectingWebSocket(url, { closeTimeout: 50, ...options })
  await new Recorder(good).next('open')
  t.is(peer.accepted, 1, 'the refused clients opened no connection')
  await good.disconnect()
}

test.serial('an origin or header value with a control character throws ERR_INVALID_CHAR, as Node does, and sends nothing', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  for (const c of CONTROLS) {
    const value = `https://app.example${c}x`
    const what = `0x${c.charCodeAt(0).toString(16)}`
    // maxRetries: 0 so that a client that is (wrongly) built does not retry forever.
    throwsLikeNode(t, () => new ReconnectingWebSocket(peer.url, { maxRetries: 0, origin: value }), 'origin', value, `origin ${what}`)
    throwsLikeNode(t, () => new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: { 'x-trace': value } }), 'x-trace', value, `header ${what}`)
    throwsLikeNode(t, () => new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: { 'x-list': ['fine', value] } }), 'x-list', value, `list ${what}`)
  }
  // The secret is not echoed: a bad Authorization value is named, never shown.
  const err = t.throws(() => new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: { authorization: 'Bearer s3cr3t\x01' } }))
  t.false(err?.message.includes('s3cr3t'))
  // Beyond Latin-1 too: Node writes a header value one byte per character.
  for (const value of ['\u20ac', 'x\u0100', '\u{1f600}']) {
    throwsLikeNode(t, () => new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: { 'x-text': value } }), 'x-text', value, `header ${JSON.stringify(value)}`)
    throwsLikeNode(t, () => new ReconnectingWebSocket(peer.url, { maxRetries: 0, origin: value }), 'origin', value, `origin ${JSON.stringify(value)}`)
  }
  // Tab and Latin-1 text are fine, and go out as Node sends them: a byte per character.
  await onlyTheControlConnected(t, peer, peer.url, { origin: 'https://app.example', headers: { 'x-tab': 'a\tb', 'x-text': 'caf\u00e9 \u00ff' } })
  t.regex(peer.heads[0], /\r\norigin: https:\/\/app\.example\r\n/i)
  t.true(peer.heads[0].includes('\r\nx-tab: a\tb\r\n'), peer.heads[0])
  t.true(peer.heads[0].includes('\r\nx-text: caf\u00e9 \u00ff\r\n'), peer.heads[0])
  await quiescent()
})

test.serial('a header name is sent once whatever its case, as its last spelling (not lower-cased), and a non-empty origin over an Origin header, as ws sends them', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  const headers = { Origin: 'https://b.example', Authorization: 'Bearer one', 'x-Multi': ['1', '2'], authorization: 'Bearer two', 'X-MULTI': ['3', '4'] }
  const sent = (head: string) =>
    head
      .split('\r\n')
      .map((line) => line.split(': '))
      .filter(([name]) => ['origin', 'authorization', 'x-multi'].includes(name.toLowerCase()))
      .map(([name, value]) => `${name}: ${value}`)
  const lower = (lines: string[]) => lines.map((line) => line.replace(/^[^:]+/, (name) => name.toLowerCase()))
  // An empty origin is none, as in ws: the header's stays.
  for (const [origin, expected] of [
    ['https://a.example', 'origin: https://a.example'],
    ['', 'origin: https://b.example'],
  ]) {
    peer.heads.length = 0
    const ws = new WebSocket(peer.url, { origin, headers })
    await once(ws, 'open')
    ws.terminate()
    const ours = new ReconnectingWebSocket(peer.url, { origin, headers })
    await new Recorder(ours).next('open')
    await ours.terminate()
    t.deepEqual(lower(sent(peer.heads[0])).sort(), ['authorization: Bearer two', expected, 'x-multi: 3', 'x-multi: 4'])
    t.deepEqual(sent(peer.heads[1]).sort(), sent(peer.heads[0]).sort(), 'the same names, spelled the same')
  }
  await quiescent()
})

test('an invalid URL is named in its error, not carried: a 10 MB one makes a short message', (t) => {
  const huge = `ws://bad host/${'a'.repeat(10 * 1024 * 1024)}`
  const err = t.throws(() => new ReconnectingWebSocket(huge), { code: 'ERR_INVALID_URL' } as object) as RedialError
  t.true(err.message.length < 300, `${err.message.length} characters`)
  t.regex(err.message, /^Invalid URL: ws:\/\/bad host\/a+\.\.\. \(10485774 characters\)$/)
})

test('a URL longer than the handshake can carry throws ERR_INVALID_URL; one at the limit connects', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  const at = (length: number) => peer.url + 'a'.repeat(length - peer.url.length)
  const err = t.throws(() => new ReconnectingWebSocket(at(65535), { maxRetries: 0 }), { instanceOf: SyntaxError }) as RedialError
  t.is(err.code as string, 'ERR_INVALID_URL')
  t.regex(err.message, /65535 bytes long: at most 65534/)
  t.false(err.message.includes('aaaa'), 'the URL is not echoed')
  await onlyTheControlConnected(t, peer, at(65534))
  t.true(peer.heads[0].startsWith(`GET /${'a'.repeat(65534 - peer.url.length)} HTTP/1.1\r\n`))
  await quiescent()
})

test.serial('header names must be HTTP tokens: ERR_INVALID_HTTP_TOKEN, nothing sent', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  for (const name of ['bad name', '', 'x:y', 'x\r\ny', 'caf\u00e9', '(x)', 'x/y']) {
    const err = t.throws(() => new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: { [name]: 'v' } }), undefined, JSON.stringify(name)) as RedialError
    t.is(err?.code as string, 'ERR_INVALID_HTTP_TOKEN', JSON.stringify(name))
    t.true(err instanceof TypeError)
  }
  await onlyTheControlConnected(t, peer, peer.url, { headers: { "x-ok_1.2~!#$%&'*+^`|": 'v' } })
  await quiescent()
})

test.serial('a tls.ca that is not PEM certificate(s) throws ERR_INVALID_ARG_VALUE; nothing is sent', async (t) => {
  const server = https.createServer({ key: certs.key, cert: certs.cert })
  const wss = new WebSocketServer({ server })
  const peer = { accepted: 0 }
  server.on('connection', () => peer.accepted++)
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(
    () =>
      new Promise<void>((r) => {
        for (const c of wss.clients) c.terminate()
        wss.close()
        server.close(() => r())
      }),
  )
  const url = `wss://localhost:${(server.address() as net.AddressInfo).port}/`
  const lines = certs.ca.trim().split('\n')
  const cut = [...lines.slice(0, 2), ...lines.slice(4)].join('\n') + '\n'
  const bad: Array<[unknown, RegExp]> = [
    ['not a certificate', /"tls\.ca".*no "-----BEGIN CERTIFICATE-----" block/],
    ['', /"tls\.ca".*no "-----BEGIN CERTIFICATE-----" block/],
    [Buffer.from(new X509Certificate(certs.ca).raw), /"tls\.ca".*no "-----BEGIN CERTIFICATE-----" block/],
    ['-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', /"tls\.ca".*certificate 1 does not parse/],
    [cut, /"tls\.ca".*certificate 1 does not parse/],
    [certs.ca + cut, /"tls\.ca".*certificate 2 does not parse/],
    [certs.key, /"tls\.ca".*"PRIVATE KEY" block/],
    [certs.ca.slice(0, certs.ca.indexOf('-----END')), /"tls\.ca".*no END line|no "-----BEGIN CERTIFICATE-----" block/],
    [certs.ca + '-----BEGIN CERTIFICATE-----\nAAAA\n', /"tls\.ca".*no END line/],
    [[certs.ca, 'junk'], /"tls\.ca\[1\]"/],
    [[Buffer.from(certs.ca), Buffer.from('junk')], /"tls\.ca\[1\]"/],
  ]
  for (const [ca, message] of bad) {
    for (const rejectUnauthorized of [true, false]) {
      const what = `${JSON.stringify(String(ca)).slice(0, 40)} rejectUnauthorized: ${rejectUnauthorized}`
      const make = () => new ReconnectingWebSocket(url, { maxRetries: 0, tls: { ca: ca as string, rejectUnauthorized } })
      const err = t.throws(make, undefined, what) as RedialError
      t.is(err?.code, 'ERR_INVALID_ARG_VALUE', what)
      t.true(err instanceof TypeError, what)
      t.regex(err?.message ?? '', message, what)
    }
  }
  // Good CAs in every accepted shape; the bundle has text between its blocks, as openssl writes them.
  const bundle = `subject=CN = other\n${certs.otherCa}\nsubject=CN = ca\n${certs.ca}`
  for (const ca of [certs.ca, Buffer.from(certs.ca), new Uint8Array(Buffer.from(certs.ca)), [certs.otherCa, Buffer.from(certs.ca)], []]) {
    t.notThrows(() => new ReconnectingWebSocket(url, { startClosed: true, tls: { ca: ca as string } }))
  }
  // As Node's tls.connect takes them: an option that is null is not given.
  const unset = { ca: null, cert: null, key: null, pfx: null, passphrase: null, servername: null, rejectUnauthorized: null, checkServerIdentity: null }
  t.notThrows(() => new ReconnectingWebSocket(url, { startClosed: true, tls: unset as never }))
  await onlyTheControlConnected(t, peer, url, { tls: { ca: bundle } })
  await quiescent()
})

test.serial('a client certificate that cannot work throws ERR_INVALID_ARG_VALUE, showing neither key nor passphrase', (t) => {
  const { ec, rsa, p521 } = certs.clients!
  const url = 'wss://localhost:1/'
  const secretKey = '-----BEGIN PRIVATE KEY-----\nSECRETSECRETSECRET\n-----END PRIVATE KEY-----\n'
  const bad: Array<[object, RedialError['code'], RegExp]> = [
    [{ cert: ec.cert }, 'ERR_INVALID_ARG_VALUE', /"tls\.cert" option needs "tls\.key"/],
    [{ key: ec.key }, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option needs "tls\.cert"/],
    [{ passphrase: CLIENT_PASSPHRASE }, 'ERR_INVALID_ARG_VALUE', /"tls\.passphrase".*"tls\.key" or "tls\.pfx", neither of which is given/],
    [{ cert: ec.cert, key: certs.encryptedKey }, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option is encrypted: "tls\.passphrase" is needed/],
    [{ cert: ec.cert, key: certs.encryptedKey, passphrase: 'not it' }, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option is not a PEM private key that opens with "tls\.passphrase"/],
    [{ cert: ec.cert, key: rsa.key }, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option is not the key of the first certificate in "tls\.cert"/],
    [{ cert: [certs.ca, ec.cert], key: ec.key }, 'ERR_INVALID_ARG_VALUE', /not the key of the first certificate/],
    [p521, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option is a key of type ec:secp521r1, which rustls cannot sign with/],
    [{ cert: ec.cert, key: secretKey }, 'ERR_INVALID_ARG_VALUE', /"tls\.key" option is not a PEM private key that opens/],
    [{ cert: ec.key, key: ec.key }, 'ERR_INVALID_ARG_VALUE', /"tls\.cert" option must be PEM certificate\(s\): it holds a "PRIVATE KEY" block/],
    [{ cert: [ec.cert, 'junk'], key: ec.key }, 'ERR_INVALID_ARG_VALUE', /"tls\.cert\[1\]"/],
    [{ cert: [], key: ec.key }, 'ERR_INVALID_ARG_VALUE', /"tls\.cert" option holds no certificate/],
    [{ cert: ec.cert, key: 42 }, 'ERR_INVALID_ARG_TYPE', /"tls\.key" option must be a string or a Buffer/],
    [{ cert: ec.cert, key: [ec.key] }, 'ERR_INVALID_ARG_TYPE', /"tls\.key" option must be a string or a Buffer/],
    [{ cert: ec.cert, key: certs.encryptedKey, passphrase: 7 }, 'ERR_INVALID_ARG_TYPE', /"tls\.passphrase" option must be a string or a Buffer/],
  ]
  for (const [tls, code, message] of bad) {
    const what = JSON.stringify(Object.keys(tls))
    const err = t.throws(() => new ReconnectingWebSocket(url, { startClosed: true, tls }), undefined, what) as RedialError
    t.is(err?.code, code, what)
    t.regex(err?.message ?? '', message, what)
    for (const secret of ['SECRETSECRET', CLIENT_PASSPHRASE, 'not it', ec.key.split('\n')[1], rsa.key.split('\n')[1], p521.key.split('\n')[1]]) {
      t.false(`${err?.message} ${err?.stack}`.includes(secret), `${what}: the error shows no secret`)
    }
  }
  // Every accepted shape.
  for (const tls of [
    ec,
    { cert: Buffer.from(rsa.cert), key: Buffer.from(rsa.key) },
    { cert: new Uint8Array(Buffer.from(ec.cert)), key: new Uint8Array(Buffer.from(ec.key)) },
    { cert: [ec.cert, certs.ca], key: ec.key },
    { cert: ec.cert, key: certs.encryptedKey, passphrase: CLIENT_PASSPHRASE },
    { cert: ec.cert, key: Buffer.from(certs.encryptedKey!), passphrase: Buffer.from(CLIENT_PASSPHRASE) },
  ]) {
    t.notThrows(() => new ReconnectingWebSocket(url, { startClosed: true, tls: tls as TlsOptions }))
  }
})

test.serial('a headers provider returning a bad value is an ERR_PROVIDER attempt failure, and nothing is sent', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  const results: Array<Record<string, string>> = [{ 'x-token': 'abc\x01' }, { 'x-token': 'abc\r\nx-injected: 1' }, { 'bad name': 'v' }]
  for (const result of results) {
    const client = new ReconnectingWebSocket(peer.url, { maxRetries: 0, headers: () => result })
    const r = new Recorder(client)
    const err: RedialError = await r.next('error')
    t.is(err.code, 'ERR_PROVIDER', JSON.stringify(result))
    t.regex(err.message, /Invalid character in header content \["x-token"\]|must be a valid HTTP token/)
    t.false(err.message.includes('abc'), 'the value is not echoed')
    await r.next('giveup')
  }
  await onlyTheControlConnected(t, peer, peer.url, { headers: () => ({ 'x-token': 'abc' }) })
  t.true(peer.heads[0].includes('\r\nx-token: abc\r\n'), peer.heads[0])
  await quiescent()
})

test('a tls.servername that cannot be a name, or a localAddress with a zone, throws ERR_INVALID_ARG_VALUE; an empty servername is no servername', (t) => {
  // A name whose last label is a number (decimal or hex) would read as an IPv4 address: rustls
  // refuses it, so every attempt would fail.
  const numeric = ['123', '1.2.3', '0x7f.0.0.1', 'a.0x', 'a.08', 'example.0'].map((servername) => ({ tls: { servername } }))
  for (const options of [{ tls: { servername: 'a b' } }, { tls: { servername: '-x.example' } }, ...numeric, { localAddress: 'fe80::1%lo' }] as ReconnectingWebSocketOptions[]) {
    const err = t.throws(() => new ReconnectingWebSocket('wss://127.0.0.1:1/', { ...options, startClosed: true }), { instanceOf: TypeError }) as RedialError
    t.is(err.code as string, 'ERR_INVALID_ARG_VALUE', JSON.stringify(options))
  }
  for (const servername of ['', 'ws.example', 'under_score.example', '127.0.0.1', '::1', '1.example', '0x7f.example', 'a.0xg']) {
    t.notThrows(() => new ReconnectingWebSocket('wss://127.0.0.1:1/', { tls: { servername }, startClosed: true }), servername)
  }
})

test.serial('credentials with a stray % in the URL are taken as ws takes them, not thrown as a URIError', async (t) => {
  const peer = await countingServer()
  t.teardown(() => peer.close())
  const client = new ReconnectingWebSocket(`ws://u%zz:p%41ss@127.0.0.1:${peer.port}/`)
  await new Recorder(client).next('open')
  const auth = /authorization: Basic (\S+)/i.exec(peer.heads[0])?.[1]
  t.is(Buffer.from(auth ?? '', 'base64').toString(), 'u%zz:pAss')
  await client.disconnect()
  await quiescent()
})

test.serial('send() and ping() on a closed client throw ERR_NOT_OPEN saying why it is closed and that connect() starts it', async (t) => {
  const never = new ReconnectingWebSocket('ws://127.0.0.1:9/', { startClosed: true })
  t.like(t.throws(() => never.send('x')), { code: 'ERR_NOT_OPEN', message: 'Cannot send: the client is closed: connect() starts it (startClosed)' })
  t.like(t.throws(() => never.ping()), { code: 'ERR_NOT_OPEN', message: 'Cannot ping: the client is closed: connect() starts it (startClosed)' })
  const refusing = await rawServer((socket) => socket.destroy())
  t.teardown(() => refusing.close())
  const gaveUp = new ReconnectingWebSocket(refusing.url, { maxRetries: 0 })
  // The close before the giveup: closed, not yet given up.
  const beforeGiveup = new Promise((resolve) => gaveUp.once('close', () => resolve(t.throws(() => gaveUp.send('x')))))
  await new Recorder(gaveUp).next('giveup')
  t.like(await beforeGiveup, { message: 'Cannot send: the client is closed (connect() starts it again)' })
  t.like(t.throws(() => gaveUp.send('x')), { message: 'Cannot send: the client is closed: it gave up (maxRetries; connect() starts it again)' })
  await gaveUp.disconnect()
  t.like(t.throws(() => gaveUp.pong()), { code: 'ERR_NOT_OPEN', message: 'Cannot pong: the client is closed: disconnect() was called (connect() starts it again)' })
  // disconnect() not awaited, from a reconnect wait: closed at once, by that call.
  const waiting = new ReconnectingWebSocket(refusing.url, { minDelay: 60_000 })
  await new Recorder(waiting).next('reconnecting')
  const done = waiting.disconnect()
  t.like(t.throws(() => waiting.send('x')), { message: 'Cannot send: the client is closed: disconnect() was called (connect() starts it again)' })
  await done
  await quiescent()
})
