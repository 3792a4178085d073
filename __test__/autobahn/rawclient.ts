// A minimal raw WebSocket echo client with permessage-deflate (node:net + node:zlib), for the
// judge's self-tests only: it can break the extension in ways redial-ws cannot be made to, so the
// tests can check that the fuzzing server and the judging catch them.
//   'conform'            honours the negotiation (the control: it must pass)
//   'ignore-negotiation' compresses its echoes with a 15-bit window and keeps its context whatever
//                        the server asked (client_max_window_bits, client_no_context_takeover)
//   'rsv1-continuation'  sends each echo compressed in two frames, RSV1 on both
// It offers `permessage-deflate; client_max_window_bits`, inflates what the server sends with the
// negotiated server window and context, compresses every echo, answers a close and then waits for
// the server to close the TCP connection.
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import zlib from 'node:zlib'

import { parseExtensionsHeader } from './deflate.js'
import type { CaseResult, CaseSpec } from './judge.js'
import type { FuzzingServer } from './server.js'

export type RawMode = 'conform' | 'ignore-negotiation' | 'rsv1-continuation'

const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])
const SYNC = zlib.constants.Z_SYNC_FLUSH

function keepLast(history: Buffer, more: Buffer, n: number): Buffer {
  const all = Buffer.concat([history, more])
  return all.length > n ? Buffer.from(all.subarray(all.length - n)) : all
}

function frame(opcode: number, payload: Buffer, fin: boolean, rsv: number): Buffer {
  const mask = randomBytes(4)
  const n = payload.length
  const head = n <= 125 ? Buffer.from([0, 0x80 | n]) : n <= 0xffff ? Buffer.from([0, 0x80 | 126, n >> 8, n & 0xff]) : Buffer.concat([Buffer.from([0, 0x80 | 127]), Buffer.alloc(8)])
  if (n > 0xffff) head.writeBigUInt64BE(BigInt(n), 2)
  head[0] = (fin ? 0x80 : 0) | (rsv << 4) | opcode
  const body = Buffer.alloc(n)
  for (let i = 0; i < n; i++) body[i] = payload[i] ^ mask[i & 3]
  return Buffer.concat([head, mask, body])
}

export async function runRawCase(server: FuzzingServer, spec: CaseSpec, mode: RawMode): Promise<CaseResult> {
  const judged = server.expect(spec.id)
  const socket = net.connect(server.port, '127.0.0.1')
  socket.on('error', () => {})
  const url = new URL(server.url(spec.id, `raw-${mode}`))
  socket.write(
    `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n` +
      'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n',
  )
  let buf: Buffer = Buffer.alloc(0)
  let open = false
  let deflate: { serverNoContext: boolean; serverBits: number; clientNoContext: boolean; clientBits: number } | null = null
  let rxHistory: Buffer = Buffer.alloc(0)
  let txHistory: Buffer = Buffer.alloc(0)
  let parts: Buffer[] = []
  let msgOpcode = 0
  let msgCompressed = false

  const echo = (payload: Buffer, opcode: number): void => {
    if (!deflate) {
      socket.write(frame(opcode, payload, true, 0))
      return
    }
    const ignore = mode === 'ignore-negotiation'
    const bits = ignore ? 15 : deflate.clientBits
    const context = ignore || !deflate.clientNoContext
    const dictionary = context && txHistory.length > 0 ? txHistory : undefined
    const z = zlib.deflateRawSync(payload, { windowBits: bits, finishFlush: SYNC, dictionary })
    const data = z.subarray(0, z.length - 4)
    if (context) txHistory = keepLast(txHistory, payload, 2 ** bits)
    if (mode === 'rsv1-continuation' && data.length >= 2) {
      const half = data.length >> 1
      socket.write(Buffer.concat([frame(opcode, data.subarray(0, half), false, 4), frame(0, data.subarray(half), true, 4)]))
    } else {
      socket.write(frame(opcode, data, true, 4))
    }
  }

  const onFrame = (fin: boolean, rsv: number, opcode: number, payload: Buffer): void => {
    if (opcode === 8) {
      socket.write(frame(8, payload.subarray(0, 2), true, 0))
      return
    }
    if (opcode === 9) {
      socket.write(frame(10, payload, true, 0))
      return
    }
    if (opcode === 10) return
    if (opcode !== 0) {
      msgOpcode = opcode
      msgCompressed = (rsv & 4) !== 0
      parts = []
    }
    parts.push(payload)
    if (!fin) return
    let message = Buffer.concat(parts)
    if (msgCompressed && deflate) {
      const context = !deflate.serverNoContext
      const dictionary = context && rxHistory.length > 0 ? rxHistory : undefined
      message = zlib.inflateRawSync(Buffer.concat([message, TAIL]), { windowBits: deflate.serverBits, finishFlush: SYNC, dictionary })
      if (context) rxHistory = keepLast(rxHistory, message, 2 ** deflate.serverBits)
    }
    echo(message, msgOpcode)
  }

  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    if (!open) {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) return
      const head = buf.subarray(0, end).toString('latin1')
      buf = buf.subarray(end + 4)
      if (!head.startsWith('HTTP/1.1 101')) {
        socket.destroy()
        return
      }
      open = true
      const ext = /^sec-websocket-extensions:(.*)$/im.exec(head)?.[1] ?? ''
      const pmd = parseExtensionsHeader(ext).find(([name]) => name === 'permessage-deflate')
      if (pmd) {
        const p = pmd[1]
        deflate = {
          serverNoContext: p.has('server_no_context_takeover'),
          serverBits: Number(p.get('server_max_window_bits')?.[0] ?? 15),
          clientNoContext: p.has('client_no_context_takeover'),
          clientBits: Number(p.get('client_max_window_bits')?.[0] ?? 15),
        }
      }
    }
    for (;;) {
      if (buf.length < 2) return
      const len1 = buf[1] & 0x7f
      const hl = len1 < 126 ? 2 : len1 === 126 ? 4 : 10
      if (buf.length < hl) return
      const len = len1 < 126 ? len1 : len1 === 126 ? buf.readUInt16BE(2) : Number(buf.readBigUInt64BE(2))
      if (buf.length < hl + len) return
      const b0 = buf[0]
      const payload = Buffer.from(buf.subarray(hl, hl + len))
      buf = buf.subarray(hl + len)
      onFrame((b0 & 0x80) !== 0, (b0 >> 4) & 7, b0 & 0x0f, payload)
    }
  })
  socket.on('close', () => {})
  const result = await judged
  socket.destroy()
  return result
}
