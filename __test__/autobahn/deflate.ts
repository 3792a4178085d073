// permessage-deflate (RFC 7692) on the fuzzing server's side, as the Autobahn testsuite's fuzzing
// server does it (autobahn-python 0.10.9: `_parseExtensionsHeader` of websocket/protocol.py and
// websocket/compress_deflate.py), re-implemented on node:zlib:
//   - the client's Sec-WebSocket-Extensions offers are parsed with Autobahn's rules (an illegal
//     permessage-deflate offer fails the opening handshake), the case's acceptor picks one;
//   - the server compresses every message it sends (no threshold) with zlib's default level and
//     memLevel 8, with its negotiated window (server_max_window_bits, else 15), a sync flush, and
//     strips the trailing 00 00 ff ff; with context takeover the next message may refer back to
//     the earlier ones, with server_no_context_takeover it starts afresh each message;
//   - it inflates what the client sends compressed (RSV1) with the client's negotiated window
//     (client_max_window_bits if the server asked for it, else 15), after appending 00 00 ff ff,
//     keeping the history unless it asked for client_no_context_takeover.
// node:zlib has no synchronous streaming API, so a kept context is given to each one-shot zlib
// call as its preset dictionary: the last 2^windowBits octets of what went through that direction
// before. For inflating this is exactly a kept decompressor (its window holds the same octets);
// for deflating it lets a message refer back to the earlier ones as a kept compressor does.
//
// Beyond Autobahn: zlib's inflate does not reliably reject a distance beyond the negotiated
// window (it checks against its window plus what the same inflate() call already produced), so
// `checkDeflate` walks each compressed client message on its own and reports any distance larger
// than 2^client_max_window_bits, or reaching before the message when the client may not keep its
// context (client_no_context_takeover), or before all it has sent.
import { createHash } from 'node:crypto'
import zlib from 'node:zlib'

export const EXTENSION_NAME = 'permessage-deflate'
const WINDOW_BITS = [8, 9, 10, 11, 12, 13, 14, 15]
const DEFAULT_WINDOW_BITS = 15
const MEM_LEVEL = 8
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff])

/** One extension of a Sec-WebSocket-Extensions header: its name and its parameters (each may repeat). */
export type ExtensionParams = Map<string, Array<string | true>>

/** `_parseExtensionsHeader`: comma-separated extensions, `;`-separated parameters, quotes removed, names lowercased. */
export function parseExtensionsHeader(header: string): Array<[string, ExtensionParams]> {
  const out: Array<[string, ExtensionParams]> = []
  for (const e of header.split(',').map((x) => x.trim())) {
    if (e === '') continue
    const parts = e.split(';').map((x) => x.trim())
    const params: ExtensionParams = new Map()
    for (const p of parts.slice(1)) {
      const kv = p.split('=').map((x) => x.trim())
      const key = kv[0].toLowerCase()
      let value: string | true = true
      if (kv.length > 1) {
        value = kv.slice(1).join('=')
        if (value.startsWith('"')) value = value.slice(1)
        if (value.endsWith('"')) value = value.slice(0, -1)
      }
      const list = params.get(key) ?? []
      list.push(value)
      params.set(key, list)
    }
    out.push([parts[0].toLowerCase(), params])
  }
  return out
}

/** A client's permessage-deflate offer, in Autobahn's terms (PerMessageDeflateOffer). */
export interface DeflateOffer {
  /** The client lets the server ask for client_no_context_takeover (Autobahn: always true). */
  acceptNoContextTakeover: boolean
  /** The offer carries client_max_window_bits: the server may set the client's window. */
  acceptMaxWindowBits: boolean
  /** server_no_context_takeover. */
  requestNoContextTakeover: boolean
  /** server_max_window_bits (0: not offered). */
  requestMaxWindowBits: number
}

/** Python's int() of a parameter value (a parameter without a value is Python's True, i.e. 1). */
function pyInt(v: string | true): number | null {
  if (v === true) return 1
  const s = v.trim()
  return /^[+-]?\d+$/.test(s) ? Number.parseInt(s, 10) : null
}

/** PerMessageDeflateOffer.parse: throws on what Autobahn refuses (the handshake then fails). */
export function parseDeflateOffer(params: ExtensionParams): DeflateOffer {
  const offer: DeflateOffer = { acceptNoContextTakeover: true, acceptMaxWindowBits: false, requestNoContextTakeover: false, requestMaxWindowBits: 0 }
  const illegalValue = (v: string | true, p: string) => new Error(`illegal extension parameter value '${v === true ? 'True' : v}' for parameter '${p}' of extension '${EXTENSION_NAME}'`)
  for (const [p, values] of params) {
    if (values.length > 1) throw new Error(`multiple occurrence of extension parameter '${p}' for extension '${EXTENSION_NAME}'`)
    const val = values[0]
    if (p === 'client_max_window_bits') {
      if (val !== true) {
        const n = pyInt(val)
        if (n === null || !WINDOW_BITS.includes(n)) throw illegalValue(val, p)
      }
      offer.acceptMaxWindowBits = true
    } else if (p === 'client_no_context_takeover') {
      if (val !== true) throw illegalValue(val, p)
      offer.acceptNoContextTakeover = true
    } else if (p === 'server_max_window_bits') {
      const n = pyInt(val)
      if (n === null || !WINDOW_BITS.includes(n)) throw illegalValue(val, p)
      offer.requestMaxWindowBits = n
    } else if (p === 'server_no_context_takeover') {
      if (val !== true) throw illegalValue(val, p)
      offer.requestNoContextTakeover = true
    } else {
      throw new Error(`illegal extension parameter '${p}' for extension '${EXTENSION_NAME}'`)
    }
  }
  return offer
}

/** How the server accepts an offer (PerMessageDeflateOfferAccept). */
export interface DeflateAccept {
  offer: DeflateOffer
  /** Ask for client_no_context_takeover. */
  requestNoContextTakeover: boolean
  /** Ask for client_max_window_bits=N (0: do not). */
  requestMaxWindowBits: number
}

export function acceptOffer(offer: DeflateOffer, requestNoContextTakeover = false, requestMaxWindowBits = 0): DeflateAccept {
  if (requestNoContextTakeover && !offer.acceptNoContextTakeover) throw new Error('requestNoContextTakeover: feature unsupported by client')
  if (requestMaxWindowBits !== 0 && !WINDOW_BITS.includes(requestMaxWindowBits)) throw new Error(`invalid requestMaxWindowBits ${requestMaxWindowBits}`)
  if (requestMaxWindowBits !== 0 && !offer.acceptMaxWindowBits) throw new Error('requestMaxWindowBits: feature unsupported by client')
  return { offer, requestNoContextTakeover, requestMaxWindowBits }
}

/** The server's Sec-WebSocket-Extensions answer for an accept. */
export function acceptExtensionString(a: DeflateAccept): string {
  let s = EXTENSION_NAME
  if (a.offer.requestNoContextTakeover) s += '; server_no_context_takeover'
  if (a.offer.requestMaxWindowBits !== 0) s += `; server_max_window_bits=${a.offer.requestMaxWindowBits}`
  if (a.requestNoContextTakeover) s += '; client_no_context_takeover'
  if (a.requestMaxWindowBits !== 0) s += `; client_max_window_bits=${a.requestMaxWindowBits}`
  return s
}

/** Python-style text of an offer as the 13.x descriptions print it: (requestNoContextTakeover, requestMaxWindowBits). */
export function offerTuple(o: { requestNoContextTakeover: boolean; requestMaxWindowBits: number }): string {
  return `(${o.requestNoContextTakeover ? 'True' : 'False'}, ${o.requestMaxWindowBits})`
}

// zlib is deterministic: what the server compressed once with the same parameters, preset history
// and payload it can send again (the 13.x cases send the JSON file's slices of 12.1.x again, and the
// server's parameters are the same whenever the client offers the same). A small LRU memo.
const MEMO_MAX_OCTETS = 64 * 2 ** 20
const memo = new Map<string, Buffer>()
let memoOctets = 0

function memoKey(windowBits: number, dictionary: Buffer | undefined, payload: Buffer): string {
  const h = createHash('sha1').update(`${windowBits}|${dictionary?.length ?? -1}|`)
  if (dictionary) h.update(dictionary)
  return h.update(payload).digest('base64')
}

function memoGet(key: string): Buffer | undefined {
  const v = memo.get(key)
  if (v) {
    memo.delete(key)
    memo.set(key, v)
  }
  return v
}

function memoSet(key: string, v: Buffer): void {
  memo.set(key, v)
  memoOctets += v.length + 64
  for (const [k, b] of memo) {
    if (memoOctets <= MEMO_MAX_OCTETS) break
    memo.delete(k)
    memoOctets -= b.length + 64
  }
}

/** The last `n` octets of `history` followed by `more`. */
function keepLast(history: Buffer, more: Buffer, n: number): Buffer {
  if (more.length >= n) return Buffer.from(more.subarray(more.length - n))
  const keep = Math.min(history.length, n - more.length)
  return Buffer.concat([history.subarray(history.length - keep), more])
}

/** The negotiated extension on the server's side of one connection (PerMessageDeflate, isServer = True). */
export class PerMessageDeflate {
  readonly serverNoContextTakeover: boolean
  readonly clientNoContextTakeover: boolean
  readonly serverMaxWindowBits: number
  readonly clientMaxWindowBits: number
  /** What the server compressed before (its kept context), at most 2^serverMaxWindowBits octets. */
  #txHistory: Buffer = Buffer.alloc(0)
  /** What the server inflated before (its kept context), at most 2^clientMaxWindowBits octets. */
  #rxHistory: Buffer = Buffer.alloc(0)
  /** Octets the client has sent in compressed messages so far (what it may refer back to with context takeover). */
  rxTotal = 0

  constructor(a: DeflateAccept) {
    // createFromOfferAccept: the client's requests for the server direction, the server's requests for the client's.
    this.serverNoContextTakeover = a.offer.requestNoContextTakeover
    this.clientNoContextTakeover = a.requestNoContextTakeover
    this.serverMaxWindowBits = a.offer.requestMaxWindowBits || DEFAULT_WINDOW_BITS
    this.clientMaxWindowBits = a.requestMaxWindowBits || DEFAULT_WINDOW_BITS
  }

  describe(): string {
    return `server_no_context_takeover=${this.serverNoContextTakeover} client_no_context_takeover=${this.clientNoContextTakeover} server_max_window_bits=${this.serverMaxWindowBits} client_max_window_bits=${this.clientMaxWindowBits}`
  }

  /** One message's payload, compressed (sync flush, 00 00 ff ff stripped). */
  compress(payload: Buffer): Buffer {
    const dictionary = this.serverNoContextTakeover || this.#txHistory.length === 0 ? undefined : this.#txHistory
    const key = memoKey(this.serverMaxWindowBits, dictionary, payload)
    let out = memoGet(key)
    if (!out) {
      // zlib cannot deflate with a 256-octet window: for 8 it (and Node) uses 9. No acceptor asks
      // for 8; a client that offers server_max_window_bits=8 gets a 9-bit window here, where
      // Autobahn's compressobj(-8) fails in any zlib since 1.2.9 (the real suite breaks there).
      const z = zlib.deflateRawSync(payload, { level: zlib.constants.Z_DEFAULT_COMPRESSION, memLevel: MEM_LEVEL, windowBits: this.serverMaxWindowBits, finishFlush: zlib.constants.Z_SYNC_FLUSH, dictionary })
      if (z.length < 4 || !z.subarray(z.length - 4).equals(TAIL)) throw new Error('deflate output does not end with a sync flush')
      out = z.subarray(0, z.length - 4)
      memoSet(key, out)
    }
    if (!this.serverNoContextTakeover) this.#txHistory = keepLast(this.#txHistory, payload, 2 ** this.serverMaxWindowBits)
    return out
  }

  /** One compressed message from the client, inflated (throws zlib's error on bad data). */
  decompress(data: Buffer): Buffer {
    const context = !this.clientNoContextTakeover
    const dictionary = context && this.#rxHistory.length > 0 ? this.#rxHistory : undefined
    const out = zlib.inflateRawSync(Buffer.concat([data, TAIL]), { windowBits: this.clientMaxWindowBits, finishFlush: zlib.constants.Z_SYNC_FLUSH, dictionary })
    if (context) this.#rxHistory = keepLast(this.#rxHistory, out, 2 ** this.clientMaxWindowBits)
    return out
  }

  /**
   * Beyond Autobahn: checks one compressed client message (before `decompress` takes it into the
   * history) against the negotiated client window and context takeover. Returns what is wrong, or null.
   */
  check(data: Buffer): string | null {
    const r = checkDeflate(Buffer.concat([data, TAIL]), 2 ** this.clientMaxWindowBits, this.clientNoContextTakeover ? 0 : this.rxTotal)
    this.rxTotal += r.length
    return r.problem
  }
}

// ---------------------------------------------------------------- strict walk of a DEFLATE stream

const LEN_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
const LEN_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
const DIST_BASE = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
const DIST_EXTRA = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

class Corrupt extends Error {}

/** A canonical Huffman code as a lookup table over the next `bits` input bits: entry = symbol << 4 | code length. */
interface Huffman {
  table: Int32Array
  bits: number
}

function buildHuffman(lengths: ArrayLike<number>, n: number): Huffman {
  let bits = 0
  const count = new Int32Array(16)
  for (let i = 0; i < n; i++) {
    count[lengths[i]]++
    if (lengths[i] > bits) bits = lengths[i]
  }
  count[0] = 0
  const table = new Int32Array(1 << Math.max(bits, 1)).fill(-1)
  if (bits === 0) return { table, bits: 1 }
  let left = 1
  for (let len = 1; len <= 15; len++) {
    left = (left << 1) - count[len]
    if (left < 0) throw new Corrupt('over-subscribed Huffman code')
  }
  const next = new Int32Array(16)
  let code = 0
  for (let len = 1; len <= 15; len++) {
    code = (code + count[len - 1]) << 1
    next[len] = code
  }
  for (let sym = 0; sym < n; sym++) {
    const len = lengths[sym]
    if (len === 0) continue
    let c = next[len]++
    let rev = 0
    for (let i = 0; i < len; i++) {
      rev = (rev << 1) | (c & 1)
      c >>= 1
    }
    for (let i = rev; i < table.length; i += 1 << len) table[i] = (sym << 4) | len
  }
  return { table, bits }
}

let FIXED: [Huffman, Huffman] | null = null
function fixedCodes(): [Huffman, Huffman] {
  if (!FIXED) {
    const l = new Uint8Array(288)
    l.fill(8, 0, 144)
    l.fill(9, 144, 256)
    l.fill(7, 256, 280)
    l.fill(8, 280, 288)
    FIXED = [buildHuffman(l, 288), buildHuffman(new Uint8Array(30).fill(5), 30)]
  }
  return FIXED
}

/**
 * Walks a raw DEFLATE stream (without producing output) and checks every back-reference: its
 * distance at most `window` and at most the octets before it (this message's plus `history`).
 * Stops at the end of the input once a block is complete, or after a final block.
 */
export function checkDeflate(data: Buffer, window: number, history: number): { length: number; problem: string | null } {
  let pos = 0
  let bitbuf = 0
  let bitcnt = 0
  let out = 0
  let maxDistance = 0
  let problem: string | null = null
  const need = (n: number): void => {
    while (bitcnt < n) {
      if (pos >= data.length) throw new Corrupt('compressed data ends within a block')
      bitbuf |= data[pos++] << bitcnt
      bitcnt += 8
    }
  }
  const take = (n: number): number => {
    need(n)
    const v = bitbuf & ((1 << n) - 1)
    bitbuf >>>= n
    bitcnt -= n
    return v
  }
  const decode = (h: Huffman): number => {
    // Peek up to h.bits bits; near the end of the input fewer may be left (a short code still decodes).
    while (bitcnt < h.bits && pos < data.length) {
      bitbuf |= data[pos++] << bitcnt
      bitcnt += 8
    }
    const e = h.table[bitbuf & ((1 << h.bits) - 1)]
    if (e < 0 || (e & 15) > bitcnt) throw new Corrupt('invalid Huffman code')
    bitbuf >>>= e & 15
    bitcnt -= e & 15
    return e >> 4
  }
  try {
    for (;;) {
      const final = take(1)
      const type = take(2)
      if (type === 0) {
        // To the next byte boundary: drop the partial byte, give back whole bytes already read ahead.
        pos -= bitcnt >> 3
        bitbuf = 0
        bitcnt = 0
        if (pos + 4 > data.length) throw new Corrupt('stored block header cut short')
        const len = data[pos] | (data[pos + 1] << 8)
        const nlen = data[pos + 2] | (data[pos + 3] << 8)
        if ((len ^ 0xffff) !== nlen) throw new Corrupt('stored block length does not match its complement')
        pos += 4 + len
        if (pos > data.length) throw new Corrupt('stored block cut short')
        out += len
      } else if (type === 3) {
        throw new Corrupt('invalid block type')
      } else {
        let lit: Huffman
        let dist: Huffman
        if (type === 1) {
          ;[lit, dist] = fixedCodes()
        } else {
          const nlen = take(5) + 257
          const ndist = take(5) + 1
          const ncode = take(4) + 4
          const cl = new Uint8Array(19)
          for (let i = 0; i < ncode; i++) cl[CL_ORDER[i]] = take(3)
          const clh = buildHuffman(cl, 19)
          const lengths = new Uint8Array(nlen + ndist)
          for (let i = 0; i < nlen + ndist; ) {
            const sym = decode(clh)
            if (sym < 16) lengths[i++] = sym
            else {
              let rep: number
              let val = 0
              if (sym === 16) {
                if (i === 0) throw new Corrupt('repeat with no previous length')
                val = lengths[i - 1]
                rep = 3 + take(2)
              } else if (sym === 17) rep = 3 + take(3)
              else rep = 11 + take(7)
              if (i + rep > nlen + ndist) throw new Corrupt('too many code lengths')
              lengths.fill(val, i, i + rep)
              i += rep
            }
          }
          if (lengths[256] === 0) throw new Corrupt('no end-of-block code')
          lit = buildHuffman(lengths.subarray(0, nlen), nlen)
          dist = buildHuffman(lengths.subarray(nlen), ndist)
        }
        for (;;) {
          const sym = decode(lit)
          if (sym < 256) {
            out++
          } else if (sym === 256) {
            break
          } else {
            const li = sym - 257
            if (li >= 29) throw new Corrupt('invalid length symbol')
            const length = LEN_BASE[li] + (LEN_EXTRA[li] ? take(LEN_EXTRA[li]) : 0)
            const ds = decode(dist)
            if (ds >= 30) throw new Corrupt('invalid distance symbol')
            const d = DIST_BASE[ds] + (DIST_EXTRA[ds] ? take(DIST_EXTRA[ds]) : 0)
            if (d > maxDistance) maxDistance = d
            if (problem === null) {
              if (d > window) problem = `distance ${d} at offset ${out} exceeds the negotiated client window of ${window} octets`
              else if (d > out + history) problem = history === 0 && d > out ? `distance ${d} at offset ${out} reaches before the message (no context takeover)` : `distance ${d} at offset ${out} reaches before all the client sent`
            }
            out += length
          }
        }
      }
      if (final) break
      if (pos >= data.length && bitcnt < 8) break
    }
  } catch (e) {
    if (e instanceof Corrupt) return { length: out, problem: problem ?? `invalid DEFLATE data: ${e.message}` }
    throw e
  }
  return { length: out, problem }
}
