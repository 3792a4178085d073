'use strict'
// Minimal server-side WebSocket plumbing for the benchmark servers: the HTTP
// upgrade done by hand, pre-encoded unmasked server frames, and an incremental
// parser of masked client frames that can skip payloads without copying them.

const crypto = require('node:crypto')

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

const OP_TEXT = 0x1
const OP_BINARY = 0x2
const OP_CLOSE = 0x8
const OP_PING = 0x9
const OP_PONG = 0xa

const RSV1 = 0x40

/** Header of an unmasked (server) frame with FIN set (and RSV1, `rsv1`: a compressed message). */
function frameHeader(opcode, length, rsv1 = false) {
  const b0 = 0x80 | (rsv1 ? RSV1 : 0) | opcode
  if (length < 126) return Buffer.from([b0, length])
  if (length < 65536) {
    const h = Buffer.alloc(4)
    h[0] = b0
    h[1] = 126
    h.writeUInt16BE(length, 2)
    return h
  }
  const h = Buffer.alloc(10)
  h[0] = b0
  h[1] = 127
  h.writeBigUInt64BE(BigInt(length), 2)
  return h
}

/** One unmasked server frame. */
function encodeFrame(opcode, payload, rsv1 = false) {
  return Buffer.concat([frameHeader(opcode, payload.length, rsv1), payload])
}

/** Size on the wire of a masked client frame carrying `length` payload bytes. */
function clientFrameSize(length) {
  return length + 2 + 4 + (length < 126 ? 0 : length < 65536 ? 2 : 8)
}

/**
 * Builds a Buffer holding `frames` identical frames (opcode, payload) back to back.
 */
function repeatFrames(opcode, payload, frames) {
  const one = encodeFrame(opcode, payload)
  const out = Buffer.allocUnsafe(one.length * frames)
  for (let i = 0; i < frames; i++) one.copy(out, i * one.length)
  return out
}

/** Parses a Sec-WebSocket-Extensions value: [{ name, params: Map(name -> value|true) }] (no quoted strings). */
function parseExtensions(value) {
  const offers = []
  for (const item of value.split(',')) {
    const [name, ...rest] = item.split(';').map((x) => x.trim())
    if (!name) continue
    const params = new Map()
    for (const p of rest) {
      if (!p) continue
      const eq = p.indexOf('=')
      if (eq === -1) params.set(p.toLowerCase(), true)
      else params.set(p.slice(0, eq).trim().toLowerCase(), p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1'))
    }
    offers.push({ name: name.toLowerCase(), params })
  }
  return offers
}

/**
 * The answer to the client's permessage-deflate offers (RFC 7692), or null to decline them all.
 * The first offer we can honour wins. `serverCompresses`: our frames are compressed with a 15-bit
 * window and context takeover, so an offer asking for server_no_context_takeover or a smaller server
 * window is declined; a server that never compresses (the sink) accepts and echoes them. The
 * client's window: `client_max_window_bits=15` only if the client offered the parameter (its value,
 * if it gave one); we inflate with a 15-bit window, which reads any smaller one.
 */
function negotiateDeflate(header, { serverCompresses }) {
  for (const offer of parseExtensions(header)) {
    if (offer.name !== 'permessage-deflate') continue
    const answer = ['permessage-deflate']
    let ok = true
    for (const [k, v] of offer.params) {
      if (k === 'client_max_window_bits') {
        if (v === true) answer.push('client_max_window_bits=15')
        else if (/^(8|9|1[0-5])$/.test(v)) answer.push(`client_max_window_bits=${v}`)
        else ok = false
      } else if (k === 'client_no_context_takeover') {
        if (v !== true) ok = false
      } else if (k === 'server_no_context_takeover') {
        if (v !== true || serverCompresses) ok = false
        else answer.push('server_no_context_takeover')
      } else if (k === 'server_max_window_bits') {
        if (!/^(8|9|1[0-5])$/.test(v)) ok = false
        else if (serverCompresses && v !== '15') ok = false
        else answer.push(`server_max_window_bits=${v}`)
      } else ok = false
    }
    if (ok) return answer.join('; ')
  }
  return null
}

/**
 * Completes the RFC 6455 opening handshake on a raw socket. Calls
 * `onUpgraded(rest, info)` with whatever bytes followed the request head and
 * `info = { offer, extensions }`: the client's Sec-WebSocket-Extensions and our answer ('' when
 * none). Extensions are accepted only with `opts.deflate` ('compress': we send compressed frames,
 * 'inflate': we only read them), and then only permessage-deflate.
 */
function acceptUpgrade(socket, onUpgraded, opts = {}) {
  let head = Buffer.alloc(0)
  const onData = (chunk) => {
    head = head.length === 0 ? chunk : Buffer.concat([head, chunk])
    const end = head.indexOf('\r\n\r\n')
    if (end === -1) {
      if (head.length > 16384) socket.destroy()
      return
    }
    socket.removeListener('data', onData)
    const text = head.subarray(0, end).toString('latin1')
    const m = /^sec-websocket-key:\s*(\S+)\s*$/im.exec(text)
    if (!m) {
      socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n')
      return
    }
    const accept = crypto.createHash('sha1').update(m[1] + GUID).digest('base64')
    // The header may be repeated: its values form one list.
    const offer = [...text.matchAll(/^sec-websocket-extensions:[ \t]*(.*?)[ \t]*$/gim)].map((x) => x[1]).join(', ')
    const extensions = opts.deflate && offer ? negotiateDeflate(offer, { serverCompresses: opts.deflate === 'compress' }) || '' : ''
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\n' +
        'Upgrade: websocket\r\n' +
        'Connection: Upgrade\r\n' +
        (extensions ? `Sec-WebSocket-Extensions: ${extensions}\r\n` : '') +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    )
    onUpgraded(head.subarray(end + 4), { offer, extensions })
  }
  socket.on('data', onData)
}

/**
 * Incremental parser of client (masked) frames.
 * `onFrame(opcode, payload|null, fin, rsv1)` is called per complete frame; the
 * payload of data frames (opcode 0/1/2) is unmasked and collected only when
 * `wantData` is true, otherwise skipped (payload === null). Control frames are
 * always collected.
 */
class FrameParser {
  constructor(onFrame, { wantData = false } = {}) {
    this.onFrame = onFrame
    this.wantData = wantData
    this.buf = null // pending header bytes
    this.state = 0 // 0: header, 1: payload
    this.opcode = 0
    this.fin = true
    this.rsv1 = false
    this.remaining = 0
    this.mask = null
    this.collect = false
    this.parts = []
    this.offsetInPayload = 0
  }

  push(chunk) {
    if (this.buf !== null && this.buf.length > 0) {
      chunk = Buffer.concat([this.buf, chunk])
      this.buf = null
    }
    let i = 0
    const n = chunk.length
    while (i < n) {
      if (this.state === 0) {
        if (n - i < 2) break
        const b0 = chunk[i]
        const b1 = chunk[i + 1]
        let len = b1 & 0x7f
        const masked = (b1 & 0x80) !== 0
        let hl = 2
        if (len === 126) hl += 2
        else if (len === 127) hl += 8
        if (masked) hl += 4
        if (n - i < hl) break
        if (len === 126) len = chunk.readUInt16BE(i + 2)
        else if (len === 127) len = Number(chunk.readBigUInt64BE(i + 2))
        this.fin = (b0 & 0x80) !== 0
        this.rsv1 = (b0 & RSV1) !== 0
        this.opcode = b0 & 0x0f
        this.mask = masked ? chunk.subarray(i + hl - 4, i + hl) : null
        if (this.mask) this.mask = Buffer.from(this.mask)
        this.remaining = len
        this.offsetInPayload = 0
        this.collect = this.opcode >= 0x8 || this.wantData
        this.parts = []
        i += hl
        this.state = 1
        if (len === 0) this.#emit()
        continue
      }
      // payload
      const take = Math.min(this.remaining, n - i)
      if (this.collect) this.parts.push(chunk.subarray(i, i + take))
      this.remaining -= take
      i += take
      if (this.remaining === 0) this.#emit()
    }
    if (i < n) this.buf = Buffer.from(chunk.subarray(i))
  }

  #emit() {
    this.state = 0
    let payload = null
    if (this.collect) {
      payload = this.parts.length === 1 ? Buffer.from(this.parts[0]) : Buffer.concat(this.parts)
      this.parts = []
      if (this.mask) {
        const m = this.mask
        for (let j = 0; j < payload.length; j++) payload[j] ^= m[j & 3]
      }
    }
    this.onFrame(this.opcode, payload, this.fin, this.rsv1)
  }
}

module.exports = {
  OP_TEXT,
  OP_BINARY,
  OP_CLOSE,
  OP_PING,
  OP_PONG,
  frameHeader,
  encodeFrame,
  repeatFrames,
  clientFrameSize,
  acceptUpgrade,
  negotiateDeflate,
  FrameParser,
}
