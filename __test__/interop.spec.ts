// Interop with an independent implementation: Python's `websockets` server, which checks
// masking, framing and UTF-8 strictly. `.ci/run` installs it (requirements-dev.txt).
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import test from 'ava'

import { ReconnectingWebSocket } from '../index.js'
import { makeCerts } from './certs.js'
import { Recorder, quiescent } from './helpers.js'

const here = path.dirname(fileURLToPath(import.meta.url))
const python = process.env.PYTHON ?? 'python3'

async function pythonPeer() {
  const probe = spawnSync(python, ['-c', 'import websockets'], { encoding: 'utf8' })
  if (probe.status !== 0) {
    throw new Error(`Python websockets is missing (pip install -r requirements-dev.txt): ${probe.stderr || probe.error}`)
  }
  const child = spawn(python, [path.join(here, 'fixtures', 'py_peer.py')], { stdio: ['pipe', 'pipe', 'inherit'] })
  const [line] = await once(child.stdout, 'data')
  const port = Number(String(line).trim())
  return {
    url: (p: string) => `ws://127.0.0.1:${port}${p}`,
    stop: async () => {
      child.stdin.end()
      if (child.exitCode === null) await once(child, 'exit')
    },
  }
}

test.serial('echo through Python websockets: small, fast-path, driver-path, large and framed-in-pieces messages, in order', async (t) => {
  const peer = await pythonPeer()
  const client = new ReconnectingWebSocket(peer.url('/echo'), { minDelay: 60_000 })
  const r = new Recorder(client)
  await r.next('open')
  const sent: Array<string | Buffer> = ['hi', '\u00e9\u{1f600}', Buffer.from([0, 1, 2])]
  sent.push('x'.repeat(20_000)) // over the 16 KiB fast path: framed by the driver
  sent.push(Buffer.alloc(70_000, 9)) // 64-bit length
  // From 256 KiB on, framed in pieces of 64 KiB as the socket takes them (the pieces cut characters).
  sent.push('\u00e9\u{1f600}'.repeat(100_000))
  sent.push(Buffer.from(Array.from({ length: 900_000 }, (_, i) => (i * 31) & 0xff)))
  for (let i = 0; i < 500; i++) sent.push(`m${i}`)
  for (const m of sent) client.send(m)
  for (const m of sent) {
    const got = await r.next('message')
    if (typeof m === 'string') t.is(got, m)
    else t.true(Buffer.isBuffer(got) && got.equals(m))
  }
  t.is(r.count('error'), 0)
  await client.disconnect()
  await quiescent()
  await peer.stop()
})

test.serial('from Python websockets: fragmented messages, a 200 KiB binary, a ping we answer, close 4002', async (t) => {
  const peer = await pythonPeer()
  const client = new ReconnectingWebSocket(peer.url('/fragments'), { minDelay: 60_000, maxRetries: 0 })
  const r = new Recorder(client)
  await r.next('open')
  t.is(await r.next('message'), 'h\u00e9llo world')
  t.deepEqual([...(await r.next<Buffer>('message'))], [1, 2, 3])
  const big = await r.next<Buffer>('message')
  t.is(big.length, 204_800)
  t.true(big.equals(Buffer.from(Array.from({ length: 204_800 }, (_, i) => i & 255))))
  t.is(await r.next('message'), 'pong ok', 'the server received our pong with its payload')
  const close = await r.next('close')
  t.deepEqual([close.code, close.reason, close.wasClean], [4002, 'done', true])
  t.is(r.count('error'), 0)
  await client.disconnect()
  await quiescent()
  await peer.stop()
})

test.serial('over wss:, a close handshake ends with a TLS close_notify, as ws sends one: an OpenSSL peer sees an end, not a truncation', async (t) => {
  const certs = makeCerts()
  const dir = mkdtempSync(path.join(tmpdir(), 'redial-tls-close-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  writeFileSync(path.join(dir, 'cert.pem'), certs.cert)
  writeFileSync(path.join(dir, 'key.pem'), certs.key)
  const child = spawn(python, [path.join(here, 'fixtures', 'py_tls_close.py'), path.join(dir, 'cert.pem'), path.join(dir, 'key.pem')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d) => (out += d))
  await once(child.stdout, 'data')
  const port = Number(out.trim())
  // The peer keeps its TCP connection open after the close frames: without a close_notify the
  // client ends it at closeTimeout, and the peer reads a truncation.
  const client = new ReconnectingWebSocket(`wss://localhost:${port}/`, { tls: { ca: certs.ca }, closeTimeout: 3_000 })
  await client.opened()
  await client.disconnect()
  const [code] = await once(child, 'exit')
  t.is(code, 0)
  t.is(out.split('\n')[1], 'close_notify')
  await quiescent()
})
