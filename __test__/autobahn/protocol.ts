// The server side of one fuzzing connection: the RFC 6455 state machine of the Autobahn
// testsuite's fuzzing server (autobahn-python 0.10.9 `WebSocketProtocol`, server role, with the
// options `wstest -m fuzzingserver` sets: failByDrop = False, closeHandshakeTimeout = 1 s,
// UTF-8 validation of incoming text, masked client frames required, server frames unmasked).
//
// What the judging reads from here is what Autobahn's `case.py` reads from its protocol:
// connectionWasOpen, closedByMe, failedByMe, droppedByMe, wasClean, remoteCloseCode.
//   closedByMe  - the server sent the first close frame (not as a reply).
//   failedByMe  - the server failed the connection (protocol violation, killAfter timer, ...).
//   droppedByMe - the server closed the TCP connection.
//   wasClean    - a close frame was received while open or closing, and no close handshake
//                 timeout (nor the hard case timeout) fired afterwards.
// Like Autobahn with failByDrop = False, a protocol violation does not stop processing: the
// server sends a close frame (or drops the TCP when already closing) and goes on parsing.
//
// permessage-deflate (groups 12, 13; see deflate.ts): once negotiated, RSV1 marks the first frame
// of a compressed message; RSV1 on a control or continuation frame is a protocol violation, as
// Autobahn checks. A compressed message is inflated when it is complete and then UTF-8 validated
// (Autobahn inflates frame by frame; the verdicts of groups 12 and 13 do not depend on that). Data
// zlib cannot inflate makes Autobahn's dataReceived raise, which Twisted answers by dropping the
// TCP connection: so does the server here (the case is FAILED, the connection not clean).
import { isUtf8 } from 'node:buffer'
import type net from 'node:net'

import type { PerMessageDeflate } from './deflate.js'
import { Utf8Validator } from './utf8.js'

export const CLOSE_NORMAL = 1000
export const CLOSE_GOING_AWAY = 1001
export const CLOSE_PROTOCOL_ERROR = 1002
export const CLOSE_INVALID_PAYLOAD = 1007
/** Codes 1000-2999 a peer may send (Autobahn's CLOSE_STATUS_CODES_ALLOWED). */
const CLOSE_CODES_ALLOWED = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]

export type State = 'connecting' | 'open' | 'closing' | 'closed'

/** What the protocol calls on the case (Autobahn's FuzzingProtocol forwards exactly these). */
export interface CaseHooks {
  onOpen(): void
  onMessage(payload: Buffer, isBinary: boolean): void
  onPong(payload: Buffer): void
  onConnectionLost(failedByMe: boolean): void
}

export interface FrameOptions {
  opcode: number
  payload?: Buffer | string
  fin?: boolean
  rsv?: number
  /** Repeat `payload` until the frame carries this many octets. */
  payloadLen?: number
  /** Write the frame's octets in chops of this size, re-entering the event loop after each. */
  chopsize?: number
  /** Write the frame's octets on their own, re-entering the event loop after them. */
  sync?: boolean
}

export interface RxFrame {
  opcode: number
  fin: boolean
  rsv: number
  masked: boolean
  length: number
  /** First octets of the (unmasked) payload, hex. */
  head: string
}

const WIRELOG_MAX = 400
const RXFRAMES_MAX = 400
const PREVIEW = 48

/** Python 2 byte-string literal semantics: one octet per char code (the cases are written so). */
export function bytes(s: Buffer | string): Buffer {
  return typeof s === 'string' ? Buffer.from(s, 'latin1') : s
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** A copy of `data` XORed with the mask, `offset` octets into the frame's payload (word-wise when long). */
function unmask(data: Buffer, mask: Buffer, offset: number): Buffer {
  const n = data.length
  const m = [mask[offset & 3], mask[(offset + 1) & 3], mask[(offset + 2) & 3], mask[(offset + 3) & 3]]
  let i = 0
  let out: Buffer
  if (n >= 256) {
    out = Buffer.allocUnsafeSlow(n) // its own ArrayBuffer: 4-octet aligned
    data.copy(out)
    const words = n >>> 2
    const w = new Int32Array(out.buffer, out.byteOffset, words)
    const mw = LITTLE_ENDIAN ? m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24) : (m[0] << 24) | (m[1] << 16) | (m[2] << 8) | m[3]
    for (let k = 0; k < words; k++) w[k] ^= mw
    i = words << 2
  } else {
    out = Buffer.allocUnsafe(n)
    data.copy(out)
  }
  for (; i < n; i++) out[i] ^= m[i & 3]
  return out
}

export function preview(b: Buffer): string {
  const hex = b.subarray(0, PREVIEW).toString('hex')
  return b.length > PREVIEW ? `${hex}...` : hex
}

interface IncomingFrame {
  opcode: number
  fin: boolean
  rsv: number
  length: number
  mask: Buffer | null
  pos: number
}

export class FuzzingProtocol {
  state: State = 'connecting'
  connectionWasOpen = false
  closedByMe = false
  failedByMe = false
  droppedByMe = false
  wasClean = false
  wasNotCleanReason: string | null = null
  wasCloseHandshakeTimeout = false
  /** The hard per-case limit of this harness fired (not an Autobahn notion; see server.ts). */
  wasCaseTimeout = false
  localCloseCode: number | null = null
  localCloseReason: Buffer | null = null
  remoteCloseCode: number | null = null
  remoteCloseReason: string | null = null
  /** Who ended the TCP connection, as seen by the server. */
  tcpClose: 'server' | 'client' | 'error' | null = null
  /** The socket error that ended the connection, if any (e.g. ECONNRESET). */
  tcpError: string | null = null
  /** Seconds, as Autobahn's option. */
  closeHandshakeTimeout = 1
  autoFragmentSize = 0
  readonly isServer = true
  readonly txFrameStats: Record<number, number> = {}
  readonly rxFrameStats: Record<number, number> = {}
  readonly rxFrames: RxFrame[] = []
  readonly wirelog: unknown[] = []
  wirelogDropped = 0
  createWirelog = true
  caseStart = 0
  caseEnd = 0
  rxOctets = 0
  txOctets = 0
  /** The negotiated permessage-deflate (set by the opening handshake), or null. */
  perMessageCompress: PerMessageDeflate | null = null
  /** Messages received; of them compressed (RSV1); octets of their payloads on the wire and inflated. */
  rxMessages = 0
  rxCompressedMessages = 0
  rxPayloadWire = 0
  rxPayloadApp = 0
  /** Messages sent, and their payload octets as given and as sent (compressed). */
  txMessages = 0
  txPayloadApp = 0
  txPayloadWire = 0
  /** zlib's error inflating a client message (the connection was then dropped). */
  inflateError: string | null = null
  /** Beyond Autobahn: compressed client messages that break the negotiated window or context takeover (first few). */
  deflateProblems: string[] = []
  deflateProblemCount = 0

  #socket: net.Socket
  #case: CaseHooks | null = null
  #data: Buffer = Buffer.alloc(0)
  #frame: IncomingFrame | null = null
  #insideMessage = false
  #utf8 = new Utf8Validator()
  #utf8Current = false
  #utf8Last = { valid: true, complete: true }
  #messageBinary = false
  #messageCompressed = false
  #messageData: Buffer[] = []
  #frameData: Buffer[] = []
  #controlData: Buffer[] = []
  #sendQueue: Array<{ data: Buffer; sync: boolean }> = []
  #triggered = false
  #corked = false
  #sendState: 'ground' | 'begin' | 'inside' | 'insideFrame' = 'ground'
  #sendOpcode = 1
  #sendFrameLength = 0
  #sendFramePointer = 0
  #timers = new Set<NodeJS.Timeout>()
  #immediate: NodeJS.Immediate | null = null
  #caseTimer: NodeJS.Timeout | null = null
  #closeHandshakeTimer: NodeJS.Timeout | null = null
  #lost = false
  #onLost: () => void

  constructor(socket: net.Socket, onLost: () => void) {
    this.#socket = socket
    this.#onLost = onLost
    socket.on('end', () => {
      // Twisted reports a peer's FIN as a lost connection at once (no half-close).
      if (this.tcpClose === null) this.tcpClose = 'client'
      socket.destroy()
    })
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.log('ERR', err.code ?? err.message)
      if (this.tcpClose === null) this.tcpClose = 'error'
      this.tcpError = err.code ?? err.message
    })
    socket.on('close', () => this.#connectionLost())
  }

  /** The case this connection plays (set before the opening handshake completes). */
  attach(theCase: CaseHooks): void {
    this.#case = theCase
  }

  get socket(): net.Socket {
    return this.#socket
  }

  log(...entry: unknown[]): void {
    if (!this.createWirelog) return
    if (this.wirelog.length < WIRELOG_MAX) this.wirelog.push(entry)
    else this.wirelogDropped++
  }

  /** The opening handshake is done (`rest`: octets that came after the request): the case starts. */
  open(rest: Buffer, caseTimeoutMs: number): void {
    if (this.#socket.destroyed) return
    this.state = 'open'
    this.connectionWasOpen = true
    this.caseStart = performance.now()
    this.#caseTimer = setTimeout(() => this.#onCaseTimeout(), caseTimeoutMs)
    this.#socket.on('data', (chunk: Buffer) => this.#dataReceived(chunk))
    this.#case?.onOpen()
    if (rest.length > 0) this.#dataReceived(rest)
  }

  // ---------------------------------------------------------------- incoming

  #dataReceived(chunk: Buffer): void {
    this.rxOctets += chunk.length
    this.log('RO', chunk.length, preview(chunk))
    this.#data = this.#data.length === 0 ? chunk : Buffer.concat([this.#data, chunk])
    if (this.state === 'open' || this.state === 'closing') {
      while (this.#processData() && (this.state as State) !== 'closed') {
        // keep going while buffered data is left
      }
    }
    // Data received while connecting is handled by server.ts; while closed it is ignored.
  }

  /** One step of Autobahn's processDataHybi: returns whether to process again. */
  #processData(): boolean {
    const buffered = this.#data.length
    if (this.#frame === null) {
      if (buffered < 2) return false
      const b0 = this.#data[0]
      const b1 = this.#data[1]
      const fin = (b0 & 0x80) !== 0
      const rsv = (b0 & 0x70) >> 4
      const opcode = b0 & 0x0f
      const masked = (b1 & 0x80) !== 0
      const len1 = b1 & 0x7f

      const compressBit = this.perMessageCompress !== null && rsv === 4
      if (rsv !== 0 && !compressBit) this.protocolViolation(`RSV = ${rsv} and no extension negotiated`)
      if (!masked) this.protocolViolation('unmasked client-to-server frame')
      if (opcode > 7) {
        if (!fin) this.protocolViolation('fragmented control frame')
        if (len1 > 125) this.protocolViolation('control frame with payload length > 125 octets')
        if (opcode !== 8 && opcode !== 9 && opcode !== 10) this.protocolViolation(`control frame using reserved opcode ${opcode}`)
        if (opcode === 8 && len1 === 1) this.protocolViolation('received close control frame with payload len 1')
        if (compressBit) this.protocolViolation('received compressed control frame [permessage-deflate]')
      } else {
        if (opcode !== 0 && opcode !== 1 && opcode !== 2) this.protocolViolation(`data frame using reserved opcode ${opcode}`)
        if (!this.#insideMessage && opcode === 0) this.protocolViolation('received continuation data frame outside fragmented message')
        if (this.#insideMessage && opcode !== 0) this.protocolViolation('received non-continuation data frame while inside fragmented message')
        if (compressBit && this.#insideMessage) this.protocolViolation('received continuation data frame with compress bit set [permessage-deflate]')
      }

      const maskLen = masked ? 4 : 0
      const headerLen = len1 < 126 ? 2 + maskLen : len1 === 126 ? 4 + maskLen : 10 + maskLen
      if (buffered < headerLen) return false
      let i = 2
      let length = len1
      if (len1 === 126) {
        length = this.#data.readUInt16BE(2)
        if (length < 126) this.protocolViolation('invalid data frame length (not using minimal length encoding)')
        i += 2
      } else if (len1 === 127) {
        const big = this.#data.readBigUInt64BE(2)
        if (big > 0x7fffffffffffffffn) this.protocolViolation('invalid data frame length (>2^63)')
        if (big < 65536n) this.protocolViolation('invalid data frame length (not using minimal length encoding)')
        if (big > BigInt(Number.MAX_SAFE_INTEGER)) {
          // Not representable here; no client can send it anyway. Fail hard.
          this.dropConnection(true)
          return false
        }
        length = Number(big)
        i += 8
      }
      let mask: Buffer | null = null
      if (masked) {
        mask = Buffer.from(this.#data.subarray(i, i + 4))
        i += 4
      }
      this.#data = this.#data.subarray(i)
      this.#frame = { opcode, fin, rsv, length, mask, pos: 0 }
      this.#onFrameBegin()
      return length === 0 || this.#data.length > 0
    }

    const frame = this.#frame
    const rest = frame.length - frame.pos
    let data: Buffer
    if (buffered >= rest) {
      data = this.#data.subarray(0, rest)
      this.#data = this.#data.subarray(rest)
    } else {
      data = this.#data
      this.#data = Buffer.alloc(0)
    }
    let payload: Buffer
    if (data.length > 0) {
      payload = frame.mask ? unmask(data, frame.mask, frame.pos) : Buffer.from(data)
      frame.pos += data.length
    } else {
      payload = Buffer.alloc(0)
    }
    this.#onFrameData(payload)
    if (frame.pos === frame.length) this.#onFrameEnd()
    return this.#data.length > 0
  }

  #onFrameBegin(): void {
    const frame = this.#frame!
    if (frame.opcode > 7) {
      this.#controlData = []
      return
    }
    if (!this.#insideMessage) {
      this.#insideMessage = true
      this.#messageCompressed = this.perMessageCompress !== null && frame.rsv === 4
      if (frame.opcode === 1) {
        this.#utf8.reset()
        this.#utf8Current = true
        this.#utf8Last = { valid: true, complete: true }
      } else {
        this.#utf8Current = false
      }
      this.#messageBinary = frame.opcode === 2
      this.#messageData = []
    }
    this.#frameData = []
  }

  #onFrameData(payload: Buffer): void {
    const frame = this.#frame!
    if (frame.opcode > 7) {
      this.#controlData.push(payload)
      return
    }
    if (this.#utf8Current && !this.#messageCompressed) {
      this.#utf8Last = this.#utf8.validate(payload)
      if (!this.#utf8Last.valid) this.invalidPayload('encountered invalid UTF-8 while processing text message')
    }
    if (!this.failedByMe) this.#frameData.push(payload)
  }

  #onFrameEnd(): void {
    const frame = this.#frame!
    if (frame.opcode > 7) {
      const payload = Buffer.concat(this.#controlData)
      this.#controlData = []
      this.#logRxFrame(frame, payload)
      this.#processControlFrame(frame, payload)
    } else {
      const framePayload = Buffer.concat(this.#frameData)
      this.#logRxFrame(frame, framePayload)
      if (!this.failedByMe) this.#messageData.push(framePayload)
      this.#frameData = []
      if (frame.fin) {
        let payload: Buffer | null = this.failedByMe ? null : Buffer.concat(this.#messageData)
        this.#messageData = []
        this.#insideMessage = false
        if (payload && this.#messageCompressed) {
          payload = this.#inflate(payload)
          if (payload === null) {
            this.#frame = null
            return
          }
          if (this.#utf8Current) {
            // node:buffer's isUtf8 is the same strict check, natively; the validator tells why not.
            this.#utf8Last = isUtf8(payload) ? { valid: true, complete: true } : this.#utf8.validate(payload)
            if (!this.#utf8Last.valid) this.invalidPayload('encountered invalid UTF-8 while processing text message')
          }
        }
        if (this.#utf8Current && !this.#utf8Last.complete) {
          this.invalidPayload('UTF-8 text message payload ended within Unicode code point')
        }
        if (payload && !this.failedByMe) {
          this.rxMessages++
          this.#case?.onMessage(payload, this.#messageBinary)
        }
      }
    }
    this.#frame = null
  }

  /** Inflates a complete compressed message; on zlib's error drops the connection and returns null. */
  #inflate(data: Buffer): Buffer | null {
    const pmc = this.perMessageCompress!
    const problem = pmc.check(data)
    if (problem !== null) {
      this.deflateProblemCount++
      if (this.deflateProblems.length < 5) this.deflateProblems.push(`message ${this.rxMessages + 1}: ${problem}`)
    }
    try {
      const out = pmc.decompress(data)
      this.rxCompressedMessages++
      this.rxPayloadWire += data.length
      this.rxPayloadApp += out.length
      return out
    } catch (err) {
      this.inflateError = `message ${this.rxMessages + 1} (${data.length} octets compressed): ${(err as Error).message}`
      this.log('INFLATE-ERROR', this.inflateError)
      // As Twisted does when dataReceived raises: the transport is closed at once.
      this.wasClean = false
      this.wasNotCleanReason = `cannot inflate a compressed message: ${(err as Error).message}`
      this.state = 'closed'
      if (this.tcpClose === null) this.tcpClose = 'server'
      this.#socket.destroy()
      return null
    }
  }

  #logRxFrame(frame: IncomingFrame, payload: Buffer): void {
    this.rxFrameStats[frame.opcode] = (this.rxFrameStats[frame.opcode] ?? 0) + 1
    const entry: RxFrame = { opcode: frame.opcode, fin: frame.fin, rsv: frame.rsv, masked: frame.mask !== null, length: payload.length, head: preview(payload) }
    if (this.rxFrames.length < RXFRAMES_MAX) this.rxFrames.push(entry)
    this.log('RF', payload.length, entry.head, frame.opcode, frame.fin, frame.rsv, entry.masked)
  }

  #processControlFrame(frame: IncomingFrame, payload: Buffer): void {
    if (frame.opcode === 8) {
      let code: number | null = null
      let reason: Buffer | null = null
      if (payload.length > 1) {
        code = payload.readUInt16BE(0)
        if (payload.length > 2) reason = payload.subarray(2)
      }
      this.#onCloseFrame(code, reason)
    } else if (frame.opcode === 9) {
      // Autobahn's default onPing: answer while open. Pings are not recorded for the case.
      if (this.state === 'open') this.sendFrame({ opcode: 10, payload })
    } else if (frame.opcode === 10) {
      this.#case?.onPong(payload)
    }
  }

  #onCloseFrame(code: number | null, reason: Buffer | null): void {
    this.remoteCloseCode = code
    if (code !== null && (code < 1000 || (code <= 2999 && !CLOSE_CODES_ALLOWED.includes(code)) || code >= 5000)) {
      this.protocolViolation(`invalid close code ${code}`)
    }
    if (reason === null) {
      this.remoteCloseReason = null
    } else {
      const v = new Utf8Validator().validate(reason)
      if (!v.valid) {
        this.invalidPayload('invalid close reason (non-UTF-8 payload)')
        // Autobahn then decodes the reason, which raises: Twisted drops the connection.
        this.remoteCloseReason = `0x${reason.toString('hex')}`
        this.dropConnection(true)
        return
      }
      this.remoteCloseReason = reason.toString('utf8')
    }
    if (this.state === 'closing') {
      if (this.#closeHandshakeTimer) {
        clearTimeout(this.#closeHandshakeTimer)
        this.#closeHandshakeTimer = null
      }
      this.wasClean = true
      this.dropConnection(true)
    } else if (this.state === 'open') {
      this.wasClean = true
      this.sendCloseFrame(CLOSE_NORMAL, null, true)
      this.dropConnection(false)
    } else if (this.state === 'closed') {
      this.wasClean = false
    }
  }

  // ---------------------------------------------------------------- failing and closing

  protocolViolation(reason: string): void {
    this.log('PV', reason)
    this.failConnection(CLOSE_PROTOCOL_ERROR, reason)
  }

  invalidPayload(reason: string): void {
    this.log('IP', reason)
    this.failConnection(CLOSE_INVALID_PAYLOAD, reason)
  }

  failConnection(code = CLOSE_GOING_AWAY, reason = 'Going Away'): void {
    if (this.state === 'closed') return
    this.failedByMe = true
    if (this.state !== 'closing') this.sendCloseFrame(code, Buffer.from(reason, 'utf8').subarray(0, 123), false)
    else this.dropConnection(false)
  }

  dropConnection(abort: boolean): void {
    if (this.state === 'closed') return
    this.droppedByMe = true
    this.state = 'closed'
    if (this.tcpClose === null) this.tcpClose = 'server'
    this.log('DROP', abort)
    if (abort) this.#socket.destroy()
    else this.#socket.end(() => this.#socket.destroy())
  }

  sendCloseFrame(code: number | null = null, reason: Buffer | null = null, isReply = false): void {
    if (this.state !== 'open') return // closing or closed: ignored, as Autobahn does
    const parts: Buffer[] = []
    if (code !== null) {
      const c = Buffer.alloc(2)
      c.writeUInt16BE(code & 0xffff)
      parts.push(c)
    }
    if (reason !== null) parts.push(reason)
    this.sendFrame({ opcode: 8, payload: Buffer.concat(parts) })
    this.state = 'closing'
    this.closedByMe = !isReply
    this.localCloseCode = code
    this.localCloseReason = reason
    if (this.closedByMe && this.closeHandshakeTimeout > 0) {
      this.#closeHandshakeTimer = this.#later(this.closeHandshakeTimeout, () => this.#onCloseHandshakeTimeout())
    }
  }

  /** Autobahn's sendClose: a valid application close (code 1000 or 3000-4999), reason truncated to fit. */
  sendClose(code: number | null = null, reason: string | null = null): void {
    if (code !== null && code !== 1000 && !(code >= 3000 && code <= 4999)) throw new Error(`invalid close code ${code}`)
    let reasonUtf8: Buffer | null = null
    if (reason !== null) {
      if (code === null) throw new Error('close reason without close code')
      reasonUtf8 = Buffer.from(reason, 'utf8')
      if (reasonUtf8.length + 2 > 125) reasonUtf8 = Buffer.concat([reasonUtf8.subarray(0, 120), Buffer.from('...')])
    }
    this.sendCloseFrame(code, reasonUtf8, false)
  }

  #onCloseHandshakeTimeout(): void {
    this.#closeHandshakeTimer = null
    if (this.state === 'closed') return
    this.wasClean = false
    this.wasNotCleanReason = 'peer did not respond (in time) in closing handshake'
    this.wasCloseHandshakeTimeout = true
    this.dropConnection(true)
  }

  #onCaseTimeout(): void {
    this.#caseTimer = null
    if (this.state === 'closed') return
    this.log('HARD-TIMEOUT')
    this.wasCaseTimeout = true
    this.wasClean = false
    this.wasNotCleanReason = 'the case did not finish within the hard per-case limit'
    this.dropConnection(true)
  }

  #connectionLost(): void {
    if (this.#lost) return
    this.#lost = true
    this.caseEnd = performance.now()
    for (const t of this.#timers) clearTimeout(t)
    this.#timers.clear()
    if (this.#caseTimer) clearTimeout(this.#caseTimer)
    if (this.#immediate) clearImmediate(this.#immediate)
    this.#sendQueue = []
    if (this.state !== 'closed') this.state = 'closed'
    if (this.tcpClose === null) this.tcpClose = 'client'
    this.#case?.onConnectionLost(this.failedByMe)
    this.#onLost()
  }

  // ---------------------------------------------------------------- outgoing

  /** Writes octets: at once, or through the queue (sync / chopped writes re-enter the event loop after each piece). */
  sendData(data: Buffer, sync = false, chopsize?: number): void {
    if (chopsize !== undefined && chopsize > 0) {
      let i = 0
      for (;;) {
        const j = i + chopsize
        this.#sendQueue.push({ data: data.subarray(i, Math.min(j, data.length)), sync: true })
        if (j >= data.length) break
        i = j
      }
      this.#trigger()
    } else if (sync || this.#sendQueue.length > 0) {
      this.#sendQueue.push({ data, sync })
      this.#trigger()
    } else {
      this.#write(data, false)
    }
  }

  #write(data: Buffer, sync: boolean): void {
    // Twisted ignores writes after the transport was closed.
    if (this.#socket.destroyed || this.#socket.writableEnded) return
    this.txOctets += data.length
    this.log('TO', data.length, preview(data), sync)
    // Like Twisted's transport buffer, everything written in one turn of the event loop goes out
    // together (one writev). Sync and chopped writes stay separate: each is written in its own turn.
    if (!this.#corked) {
      this.#corked = true
      this.#socket.cork()
      process.nextTick(() => {
        this.#corked = false
        if (!this.#socket.destroyed) this.#socket.uncork()
      })
    }
    this.#socket.write(data)
  }

  #trigger(): void {
    if (this.#triggered) return
    this.#triggered = true
    this.#sendNext()
  }

  #sendNext(): void {
    this.#immediate = null
    const e = this.#sendQueue.shift()
    if (!e) {
      this.#triggered = false
      return
    }
    if (this.state !== 'closed') this.#write(e.data, e.sync)
    // Re-enter the event loop so that the piece goes out on its own (Autobahn: callLater(0.00001)).
    this.#immediate = setImmediate(() => this.#sendNext())
  }

  sendFrame(o: FrameOptions): void {
    const payload = bytes(o.payload ?? '')
    const fin = o.fin ?? true
    const rsv = o.rsv ?? 0
    let pl: Buffer
    if (o.payloadLen !== undefined) {
      if (payload.length < 1) throw new Error('cannot construct repeated payload from an empty payload')
      pl = Buffer.alloc(o.payloadLen)
      for (let i = 0; i < o.payloadLen; i += payload.length) payload.copy(pl, i, 0, Math.min(payload.length, o.payloadLen - i))
    } else {
      pl = payload
    }
    const l = pl.length
    const b0 = (fin ? 0x80 : 0) | ((rsv % 8) << 4) | (o.opcode % 128)
    let header: Buffer
    if (l <= 125) {
      header = Buffer.from([b0, l])
    } else if (l <= 0xffff) {
      header = Buffer.alloc(4)
      header[0] = b0
      header[1] = 126
      header.writeUInt16BE(l, 2)
    } else {
      header = Buffer.alloc(10)
      header[0] = b0
      header[1] = 127
      header.writeBigUInt64BE(BigInt(l), 2)
    }
    this.txFrameStats[o.opcode] = (this.txFrameStats[o.opcode] ?? 0) + 1
    this.log('TF', l, preview(pl), o.opcode, fin, rsv, o.payloadLen ?? null, o.chopsize ?? null, o.sync ?? false)
    this.sendData(Buffer.concat([header, pl]), o.sync ?? false, o.chopsize)
  }

  /**
   * Autobahn's sendMessageHybi: compressed when permessage-deflate is in use (RSV1 on the first
   * frame), then unfragmented, or in frames of `fragmentSize` (else autoFragmentSize).
   */
  sendMessage(payloadIn: Buffer | string, isBinary = false, fragmentSize?: number, sync = false): void {
    if (this.state !== 'open') return
    let payload = bytes(payloadIn)
    const opcode = isBinary ? 2 : 1
    this.txMessages++
    this.txPayloadApp += payload.length
    const rsv = this.perMessageCompress ? 4 : 0
    if (this.perMessageCompress) payload = this.perMessageCompress.compress(payload)
    this.txPayloadWire += payload.length
    const pfs = fragmentSize ?? (this.autoFragmentSize > 0 ? this.autoFragmentSize : undefined)
    if (pfs === undefined || payload.length <= pfs) {
      this.sendFrame({ opcode, payload, sync, rsv })
      return
    }
    if (pfs < 1) throw new Error(`payload fragment size must be at least 1 (was ${pfs})`)
    const n = payload.length
    let i = 0
    let done = false
    let first = true
    while (!done) {
      let j = i + pfs
      if (j > n) {
        done = true
        j = n
      }
      // As in Autobahn: when n is a multiple of pfs, the last frame is an empty one with FIN.
      this.sendFrame({ opcode: first ? opcode : 0, payload: payload.subarray(i, j), fin: done, sync, rsv: first ? rsv : 0 })
      first = false
      i += pfs
    }
  }

  beginMessage(isBinary = false): void {
    if (this.state !== 'open') return
    if (this.#sendState !== 'ground') throw new Error('beginMessage invalid in current sending state')
    this.#sendOpcode = isBinary ? 2 : 1
    this.#sendState = 'begin'
  }

  /** A frame header with FIN = 0 (streaming: the message is ended by endMessage's empty final frame). */
  beginMessageFrame(length: number): void {
    if (this.state !== 'open') return
    if (this.#sendState !== 'begin' && this.#sendState !== 'inside') throw new Error('beginMessageFrame invalid in current sending state')
    this.#sendFrameLength = length
    this.#sendFramePointer = 0
    const b0 = this.#sendState === 'begin' ? this.#sendOpcode : 0
    let header: Buffer
    if (length <= 125) header = Buffer.from([b0, length])
    else if (length <= 0xffff) {
      header = Buffer.from([b0, 126, 0, 0])
      header.writeUInt16BE(length, 2)
    } else {
      header = Buffer.alloc(10)
      header[0] = b0
      header[1] = 127
      header.writeBigUInt64BE(BigInt(length), 2)
    }
    // Not counted in txFrameStats: Autobahn counts frames in sendFrame only.
    this.log('TFH', length, b0)
    this.sendData(header)
    this.#sendState = 'insideFrame'
  }

  sendMessageFrameData(payloadIn: Buffer | string, sync = false): number | undefined {
    if (this.state !== 'open') return undefined
    if (this.#sendState !== 'insideFrame') throw new Error('sendMessageFrameData invalid in current sending state')
    const payload = bytes(payloadIn)
    const room = this.#sendFrameLength - this.#sendFramePointer
    const pl = payload.length > room ? payload.subarray(0, room) : payload
    this.#sendFramePointer += pl.length
    this.sendData(pl, sync)
    if (this.#sendFramePointer >= this.#sendFrameLength) this.#sendState = 'inside'
    return this.#sendFrameLength - this.#sendFramePointer - (payload.length - pl.length)
  }

  endMessage(): void {
    if (this.state !== 'open') return
    this.sendFrame({ opcode: 0, payload: Buffer.alloc(0), fin: true })
    this.#sendState = 'ground'
  }

  // ---------------------------------------------------------------- case timers (FuzzingProtocol)

  #later(seconds: number, fn: () => void): NodeJS.Timeout {
    const t = setTimeout(() => {
      this.#timers.delete(t)
      fn()
    }, seconds * 1000)
    this.#timers.add(t)
    return t
  }

  /** Runs `fn` after `delay` seconds unless the connection is closed by then. */
  continueLater(delay: number, fn: () => void, tag: string | null = null): void {
    this.log('CT', delay, tag)
    this.#later(delay, () => {
      if (this.state === 'closed') return
      this.log('CTE', tag)
      fn()
    })
  }

  /** Fails the connection (close 1001 "Going Away", or a drop when already closing) after `delay` seconds. */
  killAfter(delay: number): void {
    this.log('KL', delay)
    this.#later(delay, () => {
      if (this.state === 'closed') return
      this.log('KLE')
      this.failConnection()
    })
  }

  /** Starts a closing handshake (close frame without code) after `delay` seconds. */
  closeAfter(delay: number): void {
    this.log('TI', delay)
    this.#later(delay, () => {
      if (this.state === 'closed') return
      this.log('TIE')
      this.sendClose()
    })
  }
}
