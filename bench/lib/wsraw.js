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

/** Header of an unmasked (server) frame with FIN set. */
function frameHeader(opcode, length) {
  if (length < 126) return Buffer.from([0x80 | opcode, length])
  if (length < 65536) {
    const h = Buffer.alloc(4)
    h[0] = 0x80 | opcode
    h[1] = 126
    h.writeUInt16BE(length, 2)
    return h
  }
  const h = Buffer.alloc(10)
  h[0] = 0x80 | opcode
  h[1] = 127
  h.writeBigUInt64BE(BigInt(length), 2)
  return h
}

/** One unmasked server frame. */
function encodeFrame(opcode, payload) {
  return Buffer.concat([frameHeader(opcode, payload.length), payload])
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

/**
 * Completes the RFC 6455 opening handshake on a raw socket. Calls
 * `onUpgraded(rest)` with whatever bytes followed the request head.
 * Extensions are never accepted, so no peer compresses.
 */
function acceptUpgrade(socket, onUpgraded) {
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
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\n' +
        'Upgrade: websocket\r\n' +
        'Connection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
    )
    onUpgraded(head.subarray(end + 4))
  }
  socket.on('data', onData)
}

/**
 * Incremental parser of client (masked) frames.
 * `onFrame(opcode, payload|null, fin)` is called per complete frame; the
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
    this.onFrame(this.opcode, payload, this.fin)
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
  FrameParser,
}
