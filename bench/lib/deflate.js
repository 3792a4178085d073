'use strict'
// permessage-deflate (RFC 7692) on the benchmark's side, with node:zlib only:
//   - encodeJsonFrames: the server frames of `recv1kz`, compressed as a server with context takeover
//     does it (one raw deflate stream for the whole sequence, Z_SYNC_FLUSH after each message, the
//     trailing 00 00 ff ff stripped, RSV1 set), ready to be written as they are;
//   - verifyJsonFrames: what the `send1kz` sink received, re-parsed and inflated in order after the
//     clock stopped (one inflate stream, as a server with context takeover keeps).

const zlib = require('node:zlib')
const { OP_TEXT, frameHeader, FrameParser } = require('./wsraw')
const { jsonMessage } = require('./jsonmsg')

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])

/**
 * Frames of messages jsonMessage(0 .. count-1), `size` bytes each, compressed in order with one
 * stream (zlib's defaults: level 6, 15-bit window, memLevel 8). Resolves with one Buffer.
 * (Takes ~0.1 ms per message: zlib ends a block at every flush.)
 */
async function encodeJsonFrames(count, size) {
  // Every write is flushed with Z_SYNC_FLUSH: one message in, its compressed bytes out.
  const deflate = zlib.createDeflateRaw({ flush: zlib.constants.Z_SYNC_FLUSH })
  let parts = []
  deflate.on('data', (c) => parts.push(c))
  const frames = []
  let total = 0
  let raw = 0
  for (let i = 0; i < count; i++) {
    const msg = Buffer.from(jsonMessage(i, size))
    raw += msg.length
    await new Promise((resolve, reject) => deflate.write(msg, (e) => (e ? reject(e) : resolve())))
    const out = parts.length === 1 ? parts[0] : Buffer.concat(parts)
    parts = []
    if (out.length < 4 || !out.subarray(out.length - 4).equals(TAIL)) throw new Error(`message ${i}: no sync-flush tail`)
    const payload = out.subarray(0, out.length - 4)
    const header = frameHeader(OP_TEXT, payload.length, true)
    frames.push(header, payload)
    total += header.length + payload.length
  }
  deflate.close()
  return { frames: Buffer.concat(frames, total), wireBytes: total, rawBytes: raw }
}

/**
 * Checks the client's stream (`chunks`: every byte it sent after the handshake) against the
 * messages it should have sent: message k = pool[k % pool.length]. Every data message must have
 * RSV1 set (compressed) and inflate, in order through one inflate stream, to exactly its text.
 * Resolves with { ok, reason, messages, compressed, payloadBytes, rawBytes }.
 */
async function verifyJsonFrames(chunks, { count, pool }) {
  const messages = [] // { rsv1, payload }
  let current = null
  const parser = new FrameParser(
    (opcode, payload, fin, rsv1) => {
      if (opcode >= 0x8) return
      if (opcode !== 0) current = { opcode, rsv1, parts: [] }
      if (!current) return
      current.parts.push(payload)
      if (!fin) return
      messages.push({ opcode: current.opcode, rsv1: current.rsv1, payload: Buffer.concat(current.parts) })
      current = null
    },
    { wantData: true },
  )
  for (const c of chunks) parser.push(c)
  const expected = (k) => pool[k % pool.length]
  const res = { ok: false, reason: '', messages: messages.length, compressed: 0, payloadBytes: 0, rawBytes: 0 }
  for (const m of messages) {
    res.payloadBytes += m.payload.length
    if (m.rsv1) res.compressed++
  }
  for (let k = 0; k < count; k++) res.rawBytes += expected(k).length
  if (messages.length < count) {
    res.reason = `${messages.length} of ${count} messages received`
    return res
  }
  const bad = messages.findIndex((m) => m.opcode !== OP_TEXT)
  if (bad !== -1) {
    res.reason = `message ${bad + 1} is not text (opcode ${messages[bad].opcode})`
    return res
  }
  if (res.compressed < count) {
    const first = messages.findIndex((m) => !m.rsv1)
    // Uncompressed: still check that the text is right, to say exactly what was wrong.
    const sameText = messages.slice(0, count).every((m, k) => m.rsv1 || m.payload.equals(expected(k)))
    res.reason =
      `NOT COMPRESSED: ${count - res.compressed} of ${count} messages without RSV1 (first: message ${first + 1})` +
      (sameText ? '' : '; some texts differ from what was sent')
    return res
  }
  // One inflate stream over the whole sequence (each message + 00 00 ff ff), fed in large chunks;
  // its output is compared, byte for byte, with the concatenation of the expected messages.
  // (finishFlush: the stream has no final block, so end() must not ask for one.)
  const inflate = zlib.createInflateRaw({ finishFlush: zlib.constants.Z_SYNC_FLUSH })
  let k = 0 // message being compared
  let off = 0 // offset in it
  let mismatch = null
  let produced = 0
  inflate.on('data', (c) => {
    produced += c.length
    let i = 0
    while (i < c.length && mismatch === null) {
      if (k >= count) {
        mismatch = `${c.length - i} bytes more than the ${count} messages`
        break
      }
      const e = expected(k)
      const n = Math.min(e.length - off, c.length - i)
      if (!c.subarray(i, i + n).equals(e.subarray(off, off + n))) {
        mismatch = `message ${k + 1} inflates to different text (at byte ${off})`
        break
      }
      i += n
      off += n
      if (off === e.length) {
        k++
        off = 0
      }
    }
  })
  const done = new Promise((resolve) => {
    inflate.on('error', (e) => resolve(`inflate error at message ${k + 1}: ${e.message}`))
    inflate.on('end', () => resolve(null))
  })
  const BATCH = 1 << 20
  let batch = []
  let size = 0
  const flush = () => {
    if (batch.length) inflate.write(Buffer.concat(batch, size))
    batch = []
    size = 0
  }
  for (let j = 0; j < count; j++) {
    batch.push(messages[j].payload, TAIL)
    size += messages[j].payload.length + 4
    if (size >= BATCH) flush()
  }
  flush()
  inflate.end()
  const err = await done
  if (err) res.reason = err
  else if (mismatch) res.reason = mismatch
  else if (k !== count) res.reason = `inflated ${produced} bytes: ${k} of ${count} messages`
  else res.ok = true
  return res
}

module.exports = { encodeJsonFrames, verifyJsonFrames }
