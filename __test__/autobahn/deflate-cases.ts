// The client cases of groups 12 and 13 of the Autobahn testsuite (permessage-deflate), from
// autobahntestsuite/case/case12_x_x.py (testsuite v25.9.1: Case12_X_X and Case13_X_X).
//
// Every case: the server accepts the client's permessage-deflate offer with the case's acceptor
// (no extension negotiated: UNIMPLEMENTED, and the server closes at once), then sends COUNT
// messages one at a time, each the next LEN octets of a test data file (wrapping around), as text
// or binary after the file, compressed and auto-fragmented to AUTOFRAGSIZE octets of compressed
// payload; each echo must come back with the same type, length and SHA-1 before the next goes
// out. All echoed in time: OK, and the server closes (1000, clean close expected). A wrong echo:
// FAILED, and the server closes. Not done within WAITSECS: the server closes, FAILED.
//   12.j.i: test data j (TESTDATA_KEYS order), sizes i (MSG_SIZES), the acceptor takes the first offer as it is.
//   13.j.i: parameters j (DEFLATE_PARAMS), the JSON file, sizes i.
// In client testing the client makes its own offer: CLIENT_OFFERS of the definitions only name
// the subcategory (they are what Autobahn offers when it tests a server), the acceptor decides.
// Autobahn's acceptors, as it parses an offer: acceptNoContextTakeover is always true (the client
// cannot forbid client_no_context_takeover), acceptMaxWindowBits only if the offer carries
// client_max_window_bits. The window the 13.x acceptors ask of the client is 9 (it was 8 before
// testsuite 0.8.2, which zlib cannot honour when compressing).
//
// Beyond Autobahn (as extraFailures): a compressed client message that breaks the negotiated
// client window or client_no_context_takeover (see deflate.ts).
import { createHash } from 'node:crypto'

import { acceptOffer, offerTuple, type DeflateAccept, type DeflateOffer } from './deflate.js'
import type { CaseRun, CaseSpec } from './judge.js'
import type { FuzzingProtocol } from './protocol.js'
import { CLOSE_NORMAL } from './protocol.js'
import { TESTDATA, TESTDATA_KEYS, testData } from './testdata.js'

/** (payload length, message count, case timeout in seconds, auto-fragment size): MSG_SIZES. */
export const MSG_SIZES: ReadonlyArray<readonly [number, number, number, number]> = [
  [16, 1000, 60, 0],
  [64, 1000, 60, 0],
  [256, 1000, 120, 0],
  [1024, 1000, 240, 0],
  [4096, 1000, 480, 0],
  [8192, 1000, 480, 0],
  [16384, 1000, 480, 0],
  [32768, 1000, 480, 0],
  [65536, 1000, 480, 0],
  [131072, 1000, 480, 0],
  [8192, 1000, 480, 256],
  [16384, 1000, 480, 256],
  [32768, 1000, 480, 256],
  [65536, 1000, 480, 256],
  [131072, 1000, 480, 256],
  [131072, 1000, 480, 1024],
  [131072, 1000, 480, 4096],
  [131072, 1000, 480, 32768],
]

type Acceptor = (offers: DeflateOffer[]) => DeflateAccept | null

/** accept1: the first offer, as it is. */
const accept1: Acceptor = (offers) => (offers.length > 0 ? acceptOffer(offers[0]) : null)
/** accept2: client_no_context_takeover. */
const accept2: Acceptor = (offers) => {
  for (const o of offers) if (o.acceptNoContextTakeover) return acceptOffer(o, true)
  return null
}
/** accept3: client_max_window_bits=9. */
const accept3: Acceptor = (offers) => {
  for (const o of offers) if (o.acceptMaxWindowBits) return acceptOffer(o, false, 9)
  return null
}
/** accept4: client_max_window_bits=15. */
const accept4: Acceptor = (offers) => {
  for (const o of offers) if (o.acceptMaxWindowBits) return acceptOffer(o, false, 15)
  return null
}
/** accept5: client_no_context_takeover and client_max_window_bits=9. */
const accept5: Acceptor = (offers) => {
  for (const o of offers) if (o.acceptNoContextTakeover && o.acceptMaxWindowBits) return acceptOffer(o, true, 9)
  return null
}
/** accept6: client_no_context_takeover and client_max_window_bits=15. */
const accept6: Acceptor = (offers) => {
  for (const o of offers) if (o.acceptNoContextTakeover && o.acceptMaxWindowBits) return acceptOffer(o, true, 15)
  return null
}
/** accept7: accept5, else accept2, else accept1. */
const accept7: Acceptor = (offers) => accept5(offers) ?? accept2(offers) ?? accept1(offers)

type Offer = { requestNoContextTakeover: boolean; requestMaxWindowBits: number }
const offer = (requestNoContextTakeover = false, requestMaxWindowBits = 0): Offer => ({ requestNoContextTakeover, requestMaxWindowBits })

/** DEFLATE_PARAMS: the server's acceptor (with what it asks, as Autobahn documents it) and the offers that name the subcategory. */
export const DEFLATE_PARAMS: ReadonlyArray<{ accept: Acceptor; serverAccept: string; clientOffers: Offer[] }> = [
  { accept: accept1, serverAccept: '[(False, 0)]', clientOffers: [offer()] },
  { accept: accept2, serverAccept: '[(True, 0)]', clientOffers: [offer(true, 0)] },
  { accept: accept3, serverAccept: '[(False, 9)]', clientOffers: [offer(false, 9)] },
  { accept: accept4, serverAccept: '[(False, 15)]', clientOffers: [offer(false, 15)] },
  { accept: accept5, serverAccept: '[(True, 9)]', clientOffers: [offer(true, 9)] },
  { accept: accept6, serverAccept: '[(True, 15)]', clientOffers: [offer(true, 15)] },
  { accept: accept7, serverAccept: '[(True, 9), (True, 0), (False, 0)]', clientOffers: [offer(true, 9), offer(true), offer()] },
]

const sha1 = (b: Buffer): Buffer => createHash('sha1').update(b).digest()
const py = (b: boolean): string => (b ? 'True' : 'False')

interface RunState {
  data: Buffer
  ptr: number
  expectedHash: Buffer | null
}
const runs = new WeakMap<CaseRun, RunState>()

interface Def {
  id: string
  description: string
  len: number
  count: number
  autobahnCount: number
  waitSecs: number
  autoFragSize: number
  dataKey: string
  accept: Acceptor
}

function sendOne(c: CaseRun, p: FuzzingProtocol, d: Def): void {
  const st = runs.get(c)!
  let msg: Buffer
  if (d.len > 0) {
    const from = st.ptr
    const to = (st.ptr + d.len) % st.data.length
    msg = to > from ? st.data.subarray(from, to) : Buffer.concat([st.data.subarray(from), st.data.subarray(0, to)])
    st.ptr = to
  } else {
    msg = Buffer.alloc(0)
  }
  st.expectedHash = sha1(msg)
  p.sendMessage(msg, TESTDATA[d.dataKey].binary)
  c.count++
}

function ratio(wire: number, app: number): string {
  return app > 0 ? `${((100 * wire) / app).toFixed(1)}%` : '-'
}

function deflateCase(d: Def): CaseSpec {
  const binary = TESTDATA[d.dataKey].binary
  return {
    id: d.id,
    description: d.description,
    expectation: `Receive echo'ed messages (with payload as sent). Timeout case after ${d.waitSecs} secs.`,
    waitSecs: d.waitSecs,
    deflateAccept: d.accept,
    init(c) {
      c.reportTime = true
      c.expectedClose = { closedByMe: true, closeCode: [CLOSE_NORMAL], requireClean: true }
      runs.set(c, { data: testData(d.dataKey), ptr: 0, expectedHash: null })
    },
    onOpen(c, p) {
      p.createWirelog = false
      p.autoFragmentSize = d.autoFragSize
      if (p.perMessageCompress === null) {
        c.behavior = 'UNIMPLEMENTED'
        p.sendClose(CLOSE_NORMAL)
      } else {
        c.behavior = 'FAILED'
        c.result = `Case did not finish within ${d.waitSecs} seconds.`
        p.closeAfter(d.waitSecs)
        c.count = 0
        sendOne(c, p, d)
      }
    },
    onMessage(c, p, payload, isBinary) {
      const st = runs.get(c)!
      const hash = sha1(payload)
      if (isBinary !== binary || payload.length !== d.len || !hash.equals(st.expectedHash!)) {
        c.behavior = 'FAILED'
        p.createWirelog = true
        p.sendClose(CLOSE_NORMAL)
        if (isBinary !== binary) c.result = `Echo'ed message type differs from what I sent (got binary ${py(isBinary)}, expected binary ${py(binary)}).`
        else if (payload.length !== d.len) c.result = `Echo'ed message length differs from what I sent (got length ${payload.length}, expected length ${d.len}).`
        else c.result = `Echo'ed message contents differs from what I sent (got SHA1 ${hash.toString('hex')}, expected SHA1 ${st.expectedHash!.toString('hex')}).`
        c.notes.push(`the wrong echo answered message ${c.count}`)
      } else if (c.count < d.count) {
        sendOne(c, p, d)
      } else {
        c.behavior = 'OK'
        c.result = "Ok, received all echo'ed messages in time."
        p.createWirelog = true
        p.sendClose(CLOSE_NORMAL)
      }
    },
    onConnectionLost(c, p) {
      if (p.perMessageCompress) c.notes.push(`in use: ${p.perMessageCompress.describe()}`)
      c.notes.push(
        `server sent ${p.txMessages} messages (compressed to ${ratio(p.txPayloadWire, p.txPayloadApp)}); client sent ${p.rxMessages}, ${p.rxCompressedMessages} of them compressed (to ${ratio(p.rxPayloadWire, p.rxPayloadApp)})`,
      )
      if (d.count !== d.autobahnCount) c.notes.push(`${d.count} messages instead of Autobahn's ${d.autobahnCount}`)
      if (p.inflateError) c.notes.push(`the server could not inflate ${p.inflateError}, and dropped the connection (as Autobahn's does when zlib raises)`)
      if (p.deflateProblemCount > 0) {
        c.extraFailures.push(`${p.deflateProblemCount} compressed client message(s) break the negotiated parameters: ${p.deflateProblems.join('; ')}`)
      }
    },
  }
}

/** The fewest messages a case sends under a payload budget: enough to wrap around the largest file at 64 KiB. */
export const MIN_MESSAGES = 16

/**
 * Fewer messages than Autobahn's 1000 per case (the cases stay the same otherwise; unset: Autobahn's).
 * A case sends min(1000, maxMessages, max(MIN_MESSAGES, ceil(maxBytes / payload size))) messages.
 */
export interface DeflateCaseOptions {
  /** At most this many messages per case. */
  maxMessages?: number
  /** At most this many payload octets per case (one way), but at least MIN_MESSAGES messages. */
  maxBytes?: number
  /** Exactly this many messages per case (the judge's self-tests). */
  messages?: number
}

export function messageCount(autobahnCount: number, len: number, o: DeflateCaseOptions): number {
  if (o.messages !== undefined) return o.messages
  let n = autobahnCount
  if (o.maxMessages !== undefined) n = Math.min(n, o.maxMessages)
  if (o.maxBytes !== undefined) n = Math.min(n, Math.max(MIN_MESSAGES, Math.ceil(o.maxBytes / Math.max(1, len))))
  return n
}

/** The 90 cases of group 12 and the 126 of group 13. */
export function deflateCases(o: DeflateCaseOptions = {}): CaseSpec[] {
  const cases: CaseSpec[] = []
  const add = (id: string, what: string, s: readonly [number, number, number, number], dataKey: string, accept: Acceptor) => {
    const [len, autobahnCount, waitSecs, autoFragSize] = s
    const count = messageCount(autobahnCount, len, o)
    cases.push(
      deflateCase({
        id,
        description: `Send ${count} compressed messages each of payload size ${len}, auto-fragment to ${autoFragSize} octets. Use ${what}`,
        len,
        count,
        autobahnCount,
        waitSecs,
        autoFragSize,
        dataKey,
        accept,
      }),
    )
  }
  TESTDATA_KEYS.forEach((key, j) => {
    MSG_SIZES.forEach((s, i) => add(`12.${j + 1}.${i + 1}`, 'default permessage-deflate offer.', s, key, accept1))
  })
  DEFLATE_PARAMS.forEach((dp, j) => {
    const co = `permessage-deflate client offers (requestNoContextTakeover, requestMaxWindowBits): [${dp.clientOffers.map(offerTuple).join(', ')}]`
    MSG_SIZES.forEach((s, i) => add(`13.${j + 1}.${i + 1}`, co, s, 'json_data1', dp.accept))
  })
  return cases
}

/** The subcategories' titles, as Autobahn's report names them. */
export function deflateSubcategories(): Record<string, string> {
  const out: Record<string, string> = {}
  TESTDATA_KEYS.forEach((key, j) => {
    const t = TESTDATA[key]
    out[`12.${j + 1}`] = `${t.desc} (${t.binary ? 'binary' : 'utf8'}, ${t.length} bytes)`
  })
  const t = TESTDATA.json_data1
  DEFLATE_PARAMS.forEach((dp, j) => {
    out[`13.${j + 1}`] = `${t.desc} (utf8, ${t.length} bytes) - client offers (requestNoContextTakeover, requestMaxWindowBits): [${dp.clientOffers.map(offerTuple).join(', ')}] / server accept (requestNoContextTakeover, requestMaxWindowBits): ${dp.serverAccept}`
  })
  return out
}
