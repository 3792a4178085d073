// How the TCP connection is made: net.connect's family and localAddress, which ws passes through.
import test from 'ava'

import { ReconnectingWebSocket, type RedialError } from '../index.js'
import { Recorder, wsServer } from './helpers.js'

test.serial('localAddress: every connection comes from that address', async (t) => {
  const from: string[] = []
  const peer = await wsServer()
  peer.wss.on('connection', (_socket, req) => from.push(req.socket.remoteAddress ?? ''))
  t.teardown(() => peer.close())
  // All of 127.0.0.0/8 is this host's on Linux: the client can connect from 127.0.0.2.
  const client = new ReconnectingWebSocket(peer.url, { localAddress: '127.0.0.2', minDelay: 10, maxDelay: 10 })
  t.teardown(() => client.disconnect())
  const rec = new Recorder(client)
  await rec.next('open')
  for (const s of peer.sockets) s.terminate()
  await rec.next('open')
  t.deepEqual(from, ['127.0.0.2', '127.0.0.2'])
})

test.serial('family: a host name connects only to its addresses of that IP version', async (t) => {
  const peer = await wsServer()
  t.teardown(() => peer.close())
  const url = `ws://localhost:${peer.port}/`
  const v4 = new ReconnectingWebSocket(url, { family: 4 })
  await new Recorder(v4).next('open')
  await v4.disconnect()
  t.is(peer.accepted, 1)
  // The server listens on 127.0.0.1 only: whether localhost has an IPv6 address (::1, refused)
  // or none, an IPv6-only client must not reach it.
  const v6 = new ReconnectingWebSocket(url, { family: 6, maxRetries: 0 })
  const rec = new Recorder(v6)
  const err: RedialError = await rec.next('error')
  await rec.next('giveup')
  await v6.disconnect()
  t.is(err.code, 'ERR_CONNECT')
  t.regex(err.message, /localhost has no IPv6 address|refused/i)
  t.is(peer.accepted, 1, 'no IPv6-only connection reached the IPv4 server')
})

test('family and localAddress are checked like net.connect checks them', (t) => {
  const make = (options: object) => () => new ReconnectingWebSocket('ws://127.0.0.1:1/', { startClosed: true, ...options })
  t.like(t.throws(make({ family: 5 })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ family: '4' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 'localhost' })), { code: 'ERR_INVALID_ARG_VALUE' })
  t.like(t.throws(make({ localAddress: 1 })), { code: 'ERR_INVALID_ARG_TYPE' })
  for (const ok of [{ family: 0 }, { family: 4 }, { family: 6 }, { localAddress: '::1' }, { localAddress: '10.0.0.1' }]) t.notThrows(make(ok))
})
