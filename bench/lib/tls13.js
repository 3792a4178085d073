'use strict'
// A TLS 1.3 server that can send records OpenSSL never would: a flood of session tickets
// (NewSessionTicket, which a server may send at any time and any number of). Node's TLS (OpenSSL)
// makes the handshake and writes the first records over a stream watched here; `takeOver()` then
// seals records with the server's traffic keys (from its `keylog`), numbered after OpenSSL's.
// For the hostile-peer tests (__test__/hostile.spec.ts) and measurements (bench/hostile.js), on
// 127.0.0.1 only. One suite: TLS_AES_128_GCM_SHA256.

const { createCipheriv, createDecipheriv, createHmac } = require('node:crypto')
const { Duplex } = require('node:stream')
const tls = require('node:tls')

/** TLS record content types (RFC 8446 section 5.1). */
const HANDSHAKE = 0x16
const APPLICATION_DATA = 0x17

/** HKDF-Expand-Label (RFC 8446 section 7.1) with SHA-256, for a context-free label. */
function expandLabel(secret, label, length) {
  const l = Buffer.from(`tls13 ${label}`)
  const info = Buffer.concat([Buffer.from([length >> 8, length & 255, l.length]), l, Buffer.from([0, 1])])
  return createHmac('sha256', secret).update(info).digest().subarray(0, length)
}

/** The per-record nonce (RFC 8446 section 5.3). */
function nonce(iv, seq) {
  const n = Buffer.from(iv)
  const s = Buffer.alloc(8)
  s.writeBigUInt64BE(BigInt(seq))
  for (let i = 0; i < 8; i++) n[4 + i] ^= s[i]
  return n
}

function seal(key, iv, seq, type, content) {
  const inner = Buffer.concat([content, Buffer.from([type])])
  const header = Buffer.from([APPLICATION_DATA, 3, 3, (inner.length + 16) >> 8, (inner.length + 16) & 255])
  const c = createCipheriv('aes-128-gcm', key, nonce(iv, seq))
  c.setAAD(header)
  return Buffer.concat([header, c.update(inner), c.final(), c.getAuthTag()])
}

function opens(key, iv, seq, record) {
  try {
    const d = createDecipheriv('aes-128-gcm', key, nonce(iv, seq))
    d.setAAD(record.subarray(0, 5))
    d.setAuthTag(record.subarray(record.length - 16))
    d.update(record.subarray(5, record.length - 16))
    d.final()
    return true
  } catch {
    return false
  }
}

/**
 * `count` NewSessionTicket messages (RFC 8446 section 4.6.1): lifetime, age_add, an empty nonce,
 * a 1-byte ticket, no extensions. As small as they come, so that a record holds as many as it can:
 * each costs the client more than the server.
 */
function sessionTickets(count) {
  const one = (i) => {
    const body = Buffer.alloc(4 + 4 + 1 + 2 + 1 + 2)
    body.writeUInt32BE(7200, 0)
    body.writeUInt32BE(i, 4)
    body.writeUInt16BE(1, 9)
    body[11] = i & 255
    return Buffer.concat([Buffer.from([4, 0, 0, body.length]), body])
  }
  return Buffer.concat(Array.from({ length: count }, (_, i) => one(i)))
}

/**
 * The server side of a TLS 1.3 connection on `raw` (a `net.Socket`), with `key` and `cert` (PEM).
 * Returns `{ socket, takeOver }`: `socket`, a `TLSSocket` to speak through first; `takeOver()`,
 * once OpenSSL has written all it will (after the client has answered something sent through
 * `socket`), returns `seal(type, content)`, which makes the next record for the caller to write
 * to `raw`. OpenSSL's own writes are dropped from then on.
 */
function tls13Server(raw, { key, cert }) {
  const written = []
  let partial = Buffer.alloc(0)
  let ours = false
  // OpenSSL's side of the TCP connection: its records are kept (to number ours after them).
  const wire = new Duplex({
    read() {},
    write(chunk, _encoding, done) {
      if (ours) return done()
      partial = Buffer.concat([partial, chunk])
      while (partial.length >= 5 && partial.length >= 5 + partial.readUInt16BE(3)) {
        written.push(partial.subarray(0, 5 + partial.readUInt16BE(3)))
        partial = partial.subarray(5 + partial.readUInt16BE(3))
      }
      raw.write(chunk, () => done())
    },
  })
  raw.on('data', (d) => wire.push(d))
  raw.on('end', () => wire.push(null))
  const secureContext = tls.createSecureContext({ key, cert, minVersion: 'TLSv1.3', ciphers: 'TLS_AES_128_GCM_SHA256' })
  const socket = new tls.TLSSocket(wire, { isServer: true, secureContext })
  let secret
  socket.on('keylog', (line) => {
    const [label, , hex] = line.toString('latin1').trim().split(' ')
    if (label === 'SERVER_TRAFFIC_SECRET_0') secret = Buffer.from(hex, 'hex')
  })
  socket.on('error', () => {})
  const takeOver = () => {
    if (!secret) throw new Error('the handshake is not done')
    ours = true
    const k = expandLabel(secret, 'key', 16)
    const iv = expandLabel(secret, 'iv', 12)
    const sealed = written.filter((r) => r[0] === APPLICATION_DATA)
    // Records under the handshake keys do not open with these: ours follow the rest.
    let seq = sealed.length - sealed.findIndex((r) => opens(k, iv, 0, r))
    return (type, content) => seal(k, iv, seq++, type, content)
  }
  return { socket, takeOver }
}

module.exports = { tls13Server, sessionTickets, HANDSHAKE, APPLICATION_DATA }
