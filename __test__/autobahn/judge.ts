// The judging of the Autobahn testsuite (`autobahntestsuite/case/case.py`), in TypeScript.
//
// A case records what the server got from the client in `received` (messages with their type,
// pongs, and the case's own "timeout" markers) and lists the acceptable outcomes in `expected`
// (behaviour -> list of events). When the TCP connection is gone:
//   behavior      = the first expected outcome equal to `received` (else FAILED);
//   behaviorClose = from `expectedClose` and the connection's close facts, checked in order:
//                   closedByMe must match                -> else FAILED ("failed by the wrong endpoint")
//                   requireClean => wasClean             -> else UNCLEAN
//                   the client's close code (if it sent one) must be in closeCode -> else WRONG CODE
//                   otherwise OK; a connection never opened: FAILED.
//   closedByWrongEndpointIsFatal (UTF-8 cases): a wrong closer also makes `behavior` FAILED.
// Per-case hooks then adjust (e.g. group 7 turns WRONG CODE into a FAILED behaviour; 7.1.6 and
// 7.13.x are INFORMATIONAL by definition; 10.1.1 also checks the frames the server sent).
import type { DeflateAccept, DeflateOffer } from './deflate.js'
import type { CaseHooks, FuzzingProtocol } from './protocol.js'
import { preview } from './protocol.js'

export type Behavior = 'OK' | 'NON-STRICT' | 'WRONG CODE' | 'UNCLEAN' | 'FAILED BY CLIENT' | 'INFORMATIONAL' | 'UNIMPLEMENTED' | 'FAILED'

export type CaseEvent = ['message', Buffer, boolean] | ['pong', Buffer] | ['ping', Buffer] | ['timeout', string]

export interface ExpectedClose {
  closedByMe: boolean
  closeCode: number[]
  requireClean: boolean
  closedByWrongEndpointIsFatal?: boolean
}

export interface CaseSpec {
  id: string
  description: string
  expectation: string
  /** Autobahn's `init()`: runs when the case object is made. */
  init?(c: CaseRun): void
  onOpen(c: CaseRun, p: FuzzingProtocol): void
  /** Replaces the default onMessage (record + finishWhenDone), as the 9.x cases do. */
  onMessage?(c: CaseRun, p: FuzzingProtocol, payload: Buffer, isBinary: boolean): void
  /** Runs after the standard judging (a case's own onConnectionLost). */
  onConnectionLost?(c: CaseRun, p: FuzzingProtocol): void
  /** The longest timer the case itself sets, in seconds (for the note when the hard cap is lower). */
  waitSecs?: number
  /**
   * The case's permessage-deflate acceptor (Autobahn's perMessageCompressionAccept, which the
   * 12.x/13.x cases set in init()): picks one of the client's offers, or none. Without it no
   * offer is accepted (Autobahn's default acceptor), as for groups 1-10.
   */
  deflateAccept?(offers: DeflateOffer[]): DeflateAccept | null
}

export function eventsEqual(a: CaseEvent[], b: CaseEvent[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) {
    const x = a[i]
    const y = b[i]
    if (x[0] !== y[0]) return false
    if (x[0] === 'timeout') {
      if (x[1] !== y[1]) return false
      continue
    }
    if (!(x[1] as Buffer).equals(y[1] as Buffer)) return false
    if (x[0] === 'message' && x[2] !== (y as ['message', Buffer, boolean])[2]) return false
  }
  return true
}

/** One run of a case against one connection: Autobahn's `Case` instance. */
export class CaseRun implements CaseHooks {
  received: CaseEvent[] = []
  expected = new Map<Behavior, CaseEvent[]>()
  expectedClose: ExpectedClose | null = null
  behavior: Behavior = 'FAILED'
  behaviorClose: Behavior = 'FAILED'
  result = 'Actual events differ from any expected.'
  resultClose = 'TCP connection was dropped without close handshake'
  passed = false
  suppressClose = false
  reportTime = false
  /** Scratch space of cases that count or remember (9.7/9.8, 9.x payloads). */
  count = 0
  sent: Buffer | null = null
  /** Checks beyond Autobahn's (e.g. 9.x echo content, which Autobahn leaves as a FIXME). */
  extraFailures: string[] = []
  notes: string[] = []

  constructor(
    readonly spec: CaseSpec,
    readonly p: FuzzingProtocol,
  ) {
    spec.init?.(this)
  }

  onOpen(): void {
    this.spec.onOpen(this, this.p)
  }

  onMessage(payload: Buffer, isBinary: boolean): void {
    if (this.spec.onMessage) {
      this.spec.onMessage(this, this.p, payload, isBinary)
      return
    }
    this.received.push(['message', payload, isBinary])
    this.finishWhenDone()
  }

  onPong(payload: Buffer): void {
    this.received.push(['pong', payload])
    this.finishWhenDone()
  }

  /** When `received` equals every expected outcome, start the closing handshake if the case closes. */
  finishWhenDone(): void {
    for (const events of this.expected.values()) if (!eventsEqual(this.received, events)) return
    if (this.expectedClose?.closedByMe && !this.suppressClose) this.p.sendClose(this.expectedClose.closeCode[0])
  }

  onConnectionLost(_failedByMe: boolean): void {
    judgeConnectionLost(this, this.p)
    this.spec.onConnectionLost?.(this, this.p)
  }
}

/** `Case.onConnectionLost` of case.py. */
export function judgeConnectionLost(c: CaseRun, p: FuzzingProtocol): void {
  for (const [behavior, events] of c.expected) {
    if (eventsEqual(c.received, events)) {
      c.behavior = behavior
      c.passed = true
      c.result = 'Actual events match at least one expected.'
      break
    }
  }
  const ec = c.expectedClose
  if (p.connectionWasOpen && ec) {
    if (ec.closedByMe !== p.closedByMe) {
      c.behaviorClose = 'FAILED'
      c.resultClose = 'The connection was failed by the wrong endpoint'
    } else if (ec.requireClean && !p.wasClean) {
      c.behaviorClose = 'UNCLEAN'
      c.resultClose = 'The spec requires the connection to be failed cleanly here'
    } else if (p.remoteCloseCode !== null && !ec.closeCode.includes(p.remoteCloseCode)) {
      c.behaviorClose = 'WRONG CODE'
      c.resultClose = `The close code should have been ${ec.closeCode.join(',')} or empty`
    } else if (!p.isServer && p.droppedByMe) {
      // Only when the fuzzer is the client (testing a server); never here.
      c.behaviorClose = 'FAILED BY CLIENT'
      c.resultClose = 'It is preferred that the server close the TCP connection'
    } else {
      c.behaviorClose = 'OK'
      c.resultClose = 'Connection was properly closed'
    }
    if (ec.closedByWrongEndpointIsFatal && ec.closedByMe !== p.closedByMe) c.behavior = 'FAILED'
  } else {
    c.behaviorClose = 'FAILED'
    c.resultClose = 'The WebSocket opening handshake was never completed!'
  }
}

/** Group 7's onConnectionLost: a wrong close code fails the case itself. */
export function wrongCodeFails(c: CaseRun): void {
  if (c.behaviorClose === 'WRONG CODE') {
    c.behavior = 'FAILED'
    c.passed = false
    c.result = c.resultClose
  }
}

// ---------------------------------------------------------------- results

export interface ClientObservation {
  opened: boolean
  messages: number
  echoed: number
  sendErrors: string[]
  errors: string[]
  close: { code: number; reason: string; wasClean: boolean } | null
}

export interface CaseResult {
  id: string
  description: string
  expectation: string
  behavior: Behavior
  behaviorClose: Behavior
  result: string
  resultClose: string
  expected: Record<string, unknown[]>
  expectedClose: ExpectedClose | null
  received: unknown[]
  connectionWasOpen: boolean
  closedByMe: boolean
  failedByMe: boolean
  droppedByMe: boolean
  wasClean: boolean
  wasNotCleanReason: string | null
  wasCloseHandshakeTimeout: boolean
  hardTimeout: boolean
  localCloseCode: number | null
  localCloseReason: string | null
  remoteCloseCode: number | null
  remoteCloseReason: string | null
  /** Who ended the TCP connection, as the server saw it. */
  tcpClose: string | null
  tcpError: string | null
  /** The permessage-deflate parameters in use (none: not negotiated). */
  perMessageDeflate: string | null
  /** Messages each way; the client's compressed ones; payload octets as given and on the wire. */
  traffic: { rxMessages: number; rxCompressedMessages: number; rxPayloadApp: number; rxPayloadWire: number; txMessages: number; txPayloadApp: number; txPayloadWire: number } | null
  durationMs: number
  rxOctets: number
  txOctets: number
  rxFrameStats: Record<number, number>
  txFrameStats: Record<number, number>
  rxFrames: unknown[]
  wirelog: unknown[]
  extraFailures: string[]
  notes: string[]
  client?: ClientObservation
}

function describeEvent(e: CaseEvent): unknown[] {
  if (e[0] === 'timeout') return e
  if (e[0] === 'message') return ['message', { length: e[1].length, head: preview(e[1]) }, e[2]]
  return [e[0], { length: e[1].length, head: preview(e[1]) }]
}

export function caseResult(c: CaseRun, p: FuzzingProtocol): CaseResult {
  const expected: Record<string, unknown[]> = {}
  for (const [k, v] of c.expected) expected[k] = v.map(describeEvent)
  return {
    id: c.spec.id,
    description: c.spec.description,
    expectation: c.spec.expectation,
    behavior: c.behavior,
    behaviorClose: c.behaviorClose,
    result: c.result,
    resultClose: c.resultClose,
    expected,
    expectedClose: c.expectedClose,
    received: c.received.map(describeEvent),
    connectionWasOpen: p.connectionWasOpen,
    closedByMe: p.closedByMe,
    failedByMe: p.failedByMe,
    droppedByMe: p.droppedByMe,
    wasClean: p.wasClean,
    wasNotCleanReason: p.wasNotCleanReason,
    wasCloseHandshakeTimeout: p.wasCloseHandshakeTimeout,
    hardTimeout: p.wasCaseTimeout,
    localCloseCode: p.localCloseCode,
    localCloseReason: p.localCloseReason ? preview(p.localCloseReason) : null,
    remoteCloseCode: p.remoteCloseCode,
    remoteCloseReason: p.remoteCloseReason,
    tcpClose: p.tcpClose,
    tcpError: p.tcpError,
    perMessageDeflate: p.perMessageCompress?.describe() ?? null,
    traffic: {
      rxMessages: p.rxMessages,
      rxCompressedMessages: p.rxCompressedMessages,
      rxPayloadApp: p.rxPayloadApp,
      rxPayloadWire: p.rxPayloadWire,
      txMessages: p.txMessages,
      txPayloadApp: p.txPayloadApp,
      txPayloadWire: p.txPayloadWire,
    },
    durationMs: p.connectionWasOpen ? Math.round(p.caseEnd - p.caseStart) : 0,
    rxOctets: p.rxOctets,
    txOctets: p.txOctets,
    rxFrameStats: p.rxFrameStats,
    txFrameStats: p.txFrameStats,
    rxFrames: p.rxFrames,
    wirelog: p.wirelogDropped ? [...p.wirelog, ['...', `${p.wirelogDropped} more entries`]] : p.wirelog,
    extraFailures: c.extraFailures,
    notes: c.notes,
  }
}

/** A case that never got a connection from the client (Autobahn would list it as missing). */
export function missingResult(spec: CaseSpec, why: string): CaseResult {
  return {
    id: spec.id,
    description: spec.description,
    expectation: spec.expectation,
    behavior: 'FAILED',
    behaviorClose: 'FAILED',
    result: why,
    resultClose: 'The WebSocket opening handshake was never completed!',
    expected: {},
    expectedClose: null,
    received: [],
    connectionWasOpen: false,
    closedByMe: false,
    failedByMe: false,
    droppedByMe: false,
    wasClean: false,
    wasNotCleanReason: null,
    wasCloseHandshakeTimeout: false,
    hardTimeout: false,
    localCloseCode: null,
    localCloseReason: null,
    remoteCloseCode: null,
    remoteCloseReason: null,
    tcpClose: null,
    tcpError: null,
    perMessageDeflate: null,
    traffic: null,
    durationMs: 0,
    rxOctets: 0,
    txOctets: 0,
    rxFrameStats: {},
    txFrameStats: {},
    rxFrames: [],
    wirelog: [],
    extraFailures: [],
    notes: [],
  }
}
