// The client cases of groups 1-10 of the Autobahn testsuite (crossbario/autobahn-testsuite,
// autobahntestsuite/autobahntestsuite/case/case*.py), translated case by case: the same frames,
// chops, delays, timers, expected events and expected close. Payloads are Python 2 byte
// strings: `B('...')` takes one octet per char code, `H('...')` is hex.
// (9.9.1 exists as a file but is not in Autobahn's case list, so it is not here either.)
import type { CaseRun, CaseSpec, CaseEvent, ExpectedClose } from './judge.js'
import { wrongCodeFails } from './judge.js'
import type { FuzzingProtocol } from './protocol.js'
import { CLOSE_INVALID_PAYLOAD, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR } from './protocol.js'
import { isValidUtf8 } from './utf8.js'

const B = (s: string): Buffer => Buffer.from(s, 'latin1')
const H = (hex: string): Buffer => Buffer.from(hex, 'hex')
const U = (s: string): Buffer => Buffer.from(s, 'utf8')
const rep = (s: string, n: number): Buffer => B(s.repeat(n))

const msg = (payload: Buffer | string, isBinary = false): CaseEvent => ['message', typeof payload === 'string' ? B(payload) : payload, isBinary]
const pong = (payload: Buffer | string): CaseEvent => ['pong', typeof payload === 'string' ? B(payload) : payload]

/** The usual close expectations. */
const cleanNormal = (): ExpectedClose => ({ closedByMe: true, closeCode: [CLOSE_NORMAL], requireClean: true })
const failedByPeer = (code = CLOSE_PROTOCOL_ERROR): ExpectedClose => ({ closedByMe: false, closeCode: [code], requireClean: false })
const utf8Fail = (): ExpectedClose => ({ closedByMe: false, closeCode: [CLOSE_INVALID_PAYLOAD], requireClean: false, closedByWrongEndpointIsFatal: true })

const CASES: CaseSpec[] = []

function add(id: string, description: string, expectation: string, rest: Omit<CaseSpec, 'id' | 'description' | 'expectation'>): void {
  CASES.push({ id, description, expectation, ...rest })
}

// ---------------------------------------------------------------- 1 Framing

for (const [binary, sub] of [
  [false, '1.1'],
  [true, '1.2'],
] as const) {
  const sizes: Array<[number, number | undefined]> = [
    [0, undefined],
    [125, undefined],
    [126, undefined],
    [127, undefined],
    [128, undefined],
    [65535, undefined],
    [65536, undefined],
    [65536, 997],
  ]
  sizes.forEach(([len, chopsize], i) => {
    const payload = binary ? rep('\xfe', len) : rep('*', len)
    const kind = binary ? 'binary' : 'text'
    add(`${sub}.${i + 1}`, `Send ${kind} message with payload of length ${len}${chopsize ? `. Sent out data in chops of ${chopsize} octets.` : '.'}`, `Receive echo'ed ${kind} message (with payload as sent). Clean close with normal code.`, {
      onOpen(c, p) {
        c.expected.set('OK', [msg(payload, binary)])
        c.expectedClose = cleanNormal()
        p.sendFrame({ opcode: binary ? 2 : 1, payload, chopsize })
        p.killAfter(len > 128 ? 10 : 1)
      },
    })
  })
}

// ---------------------------------------------------------------- 2 Pings/Pongs

function pingCase(id: string, description: string, payload: Buffer, chopsize: number | undefined, closeAfter: number): void {
  add(id, description, "Pong (with payload echo'ed) is sent in reply to Ping. Clean close with normal code.", {
    onOpen(c, p) {
      c.expected.set('OK', [pong(payload)])
      c.expectedClose = cleanNormal()
      p.sendFrame({ opcode: 9, payload, chopsize })
      p.closeAfter(closeAfter)
    },
  })
}
pingCase('2.1', 'Send ping without payload.', B(''), undefined, 1)
pingCase('2.2', 'Send ping with small text payload.', B('Hello, world!'), undefined, 1)
pingCase('2.3', 'Send ping with small binary (non UTF-8) payload.', H('00fffefdfcfb00ff'), undefined, 1)
pingCase('2.4', 'Send ping with binary payload of 125 octets.', rep('\xfe', 125), undefined, 1)
add('2.5', 'Send ping with binary payload of 126 octets.', 'Connection is failed immediately (1002/Protocol Error), since control frames are only allowed to have payload up to and including 125 octets.', {
  onOpen(c, p) {
    c.expected.set('OK', [])
    c.expectedClose = failedByPeer()
    p.sendFrame({ opcode: 9, payload: rep('\xfe', 126) })
    p.killAfter(1)
  },
})
pingCase('2.6', 'Send ping with binary payload of 125 octets, send in octet-wise chops.', rep('\xfe', 125), 1, 2)
for (const [id, payload] of [
  ['2.7', ''],
  ['2.8', 'unsolicited pong payload'],
] as const) {
  add(id, `Send unsolicited pong ${payload ? 'with' : 'without'} payload. Verify nothing is received. Clean close with normal code.`, 'Nothing.', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = cleanNormal()
      p.sendFrame({ opcode: 10, payload })
      p.sendClose(CLOSE_NORMAL)
      p.closeAfter(1)
    },
  })
}
add('2.9', 'Send unsolicited pong with payload. Send ping with payload. Verify pong for ping is received.', "Nothing in reply to own Pong, but Pong with payload echo'ed in reply to Ping. Clean close with normal code.", {
  onOpen(c, p) {
    c.expected.set('OK', [pong('ping payload')])
    c.expectedClose = cleanNormal()
    p.sendFrame({ opcode: 10, payload: 'unsolicited pong payload' })
    p.sendFrame({ opcode: 9, payload: 'ping payload' })
    p.closeAfter(1)
  },
})
for (const [id, chopsize] of [
  ['2.10', undefined],
  ['2.11', 1],
] as const) {
  add(id, `Send 10 Pings with payload.${chopsize ? ' Send out octets in octet-wise chops.' : ''}`, 'Pongs for our Pings with all the payloads. Note: This is not required by the Spec .. but we check for this behaviour anyway. Clean close with normal code.', {
    onOpen(c, p) {
      const events: CaseEvent[] = []
      c.expected.set('OK', events)
      for (let i = 0; i < 10; i++) {
        events.push(pong(`payload-${i}`))
        p.sendFrame({ opcode: 9, payload: `payload-${i}`, chopsize })
      }
      c.expectedClose = cleanNormal()
      p.closeAfter(3)
    },
  })
}

// ---------------------------------------------------------------- 3 Reserved bits

add('3.1', 'Send small text message with RSV = 1.', 'The connection is failed immediately (1002/protocol error), since RSV must be 0, when no extension defining RSV meaning has been negotiated.', {
  onOpen(c, p) {
    c.expected.set('OK', [])
    c.expectedClose = failedByPeer()
    p.sendFrame({ opcode: 1, payload: 'Hello, world!', rsv: 1 })
    p.killAfter(1)
  },
})
for (const [id, rsv, how] of [
  ['3.2', 2, {}],
  ['3.3', 3, { sync: true }],
  ['3.4', 4, { chopsize: 1 }],
] as const) {
  add(id, `Send small text message, then send again with RSV = ${rsv}, then send Ping.`, 'Echo for first message is received, but then connection is failed immediately, since RSV must be 0, when no extension defining RSV meaning has been negotiated. The Pong is not received.', {
    onOpen(c, p) {
      c.expected.set('OK', [msg('Hello, world!')])
      c.expected.set('NON-STRICT', [])
      c.expectedClose = failedByPeer()
      p.sendFrame({ opcode: 1, payload: 'Hello, world!', ...how })
      p.sendFrame({ opcode: 1, payload: 'Hello, world!', rsv, ...how })
      p.sendFrame({ opcode: 9, ...how })
      p.killAfter(1)
    },
  })
}
add('3.5', 'Send small binary message with RSV = 5.', 'The connection is failed immediately, since RSV must be 0.', {
  onOpen(c, p) {
    c.expected.set('OK', [])
    c.expectedClose = failedByPeer()
    p.sendFrame({ opcode: 2, payload: H('00fffefdfcfb00ff'), rsv: 5 })
    p.killAfter(1)
  },
})
add('3.6', 'Send Ping with RSV = 6.', 'The connection is failed immediately, since RSV must be 0.', {
  onOpen(c, p) {
    c.expected.set('OK', [])
    c.expectedClose = failedByPeer()
    // As in case3_6.py: the frame sent is a binary frame (opcode 2), not a ping.
    p.sendFrame({ opcode: 2, payload: 'Hello, world!', rsv: 6 })
    p.killAfter(1)
  },
})
add('3.7', 'Send Close with RSV = 7.', 'The connection is failed immediately, since RSV must be 0.', {
  onOpen(c, p) {
    c.expected.set('OK', [])
    c.expectedClose = failedByPeer()
    p.sendFrame({ opcode: 8, rsv: 7 })
    p.killAfter(1)
  },
})

// ---------------------------------------------------------------- 4 Opcodes

for (const [sub, first] of [
  ['4.1', 3],
  ['4.2', 11],
] as const) {
  const kind = sub === '4.1' ? 'non-control' : 'control'
  add(`${sub}.1`, `Send frame with reserved ${kind} Opcode = ${first}.`, 'The connection is failed immediately.', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = failedByPeer()
      p.sendFrame({ opcode: first })
      p.killAfter(1)
    },
  })
  add(`${sub}.2`, `Send frame with reserved ${kind} Opcode = ${first + 1} and non-empty payload.`, 'The connection is failed immediately.', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = failedByPeer()
      p.sendFrame({ opcode: first + 1, payload: 'reserved opcode payload' })
      p.killAfter(1)
    },
  })
  for (const [n, opcode, withPayload, chopsize] of [
    [3, first + 2, false, undefined],
    [4, first + 3, true, undefined],
    [5, first + 4, true, 1],
  ] as const) {
    add(`${sub}.${n}`, `Send small text message, then send frame with reserved ${kind} Opcode = ${opcode}${withPayload ? ' and non-empty payload' : ''}, then send Ping.`, 'Echo for first message is received, but then connection is failed immediately, since reserved opcode frame is used. A Pong is not received.', {
      onOpen(c, p) {
        const payload = 'Hello, world!'
        c.expected.set('OK', [msg(payload)])
        c.expected.set('NON-STRICT', [])
        c.expectedClose = failedByPeer()
        p.sendFrame({ opcode: 1, payload, chopsize })
        p.sendFrame({ opcode, payload: withPayload ? payload : '', chopsize })
        p.sendFrame({ opcode: 9, chopsize })
        p.killAfter(1)
      },
    })
  }
}

// ---------------------------------------------------------------- 5 Fragmentation

interface F {
  opcode: number
  fin: boolean
  payload: string
}
/** A case that sends `frames` (with `how`) and expects the client to fail the connection (1002). */
function fragFail(id: string, description: string, expectation: string, frames: F[], how: { sync?: boolean; chopsize?: number } = {}): void {
  add(id, description, expectation, {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = failedByPeer()
      for (const f of frames) p.sendFrame({ ...f, ...how })
      p.killAfter(1)
    },
  })
}
const NOT_FRAGMENTED = 'Connection is failed immediately, since control message MUST NOT be fragmented.'
const NOTHING_TO_CONTINUE = 'The connection is failed immediately, since there is no message to continue.'
fragFail('5.1', 'Send Ping fragmented into 2 fragments.', NOT_FRAGMENTED, [
  { opcode: 9, fin: false, payload: 'fragment1' },
  { opcode: 0, fin: true, payload: 'fragment2' },
])
fragFail('5.2', 'Send Pong fragmented into 2 fragments.', NOT_FRAGMENTED, [
  { opcode: 10, fin: false, payload: 'fragment1' },
  { opcode: 0, fin: true, payload: 'fragment2' },
])
for (const [id, how, desc] of [
  ['5.3', {}, ''],
  ['5.4', { sync: true }, ', octets are sent in frame-wise chops'],
  ['5.5', { chopsize: 1 }, ', octets are sent in octet-wise chops'],
] as const) {
  add(id, `Send text Message fragmented into 2 fragments${desc}.`, "Message is processed and echo'ed back to us.", {
    onOpen(c, p) {
      c.expected.set('OK', [msg('fragment1fragment2')])
      c.expectedClose = cleanNormal()
      p.sendFrame({ opcode: 1, fin: false, payload: 'fragment1', ...how })
      p.sendFrame({ opcode: 0, fin: true, payload: 'fragment2', ...how })
      p.closeAfter(1)
    },
  })
}
for (const [id, how, desc] of [
  ['5.6', {}, ''],
  ['5.7', { sync: true }, ' Octets are sent in frame-wise chops.'],
  ['5.8', { chopsize: 1 }, ' Octets are sent in octet-wise chops.'],
] as const) {
  add(id, `Send text Message fragmented into 2 fragments, one ping with payload in-between.${desc}`, "A pong is received, then the message is echo'ed back to us.", {
    onOpen(c, p) {
      c.expected.set('OK', [pong('ping payload'), msg('fragment1fragment2')])
      c.expectedClose = cleanNormal()
      p.sendFrame({ opcode: 1, fin: false, payload: 'fragment1', ...how })
      p.sendFrame({ opcode: 9, fin: true, payload: 'ping payload', ...how })
      p.sendFrame({ opcode: 0, fin: true, payload: 'fragment2', ...how })
      p.closeAfter(1)
    },
  })
}
for (const [id, fin, how, desc] of [
  ['5.9', true, {}, 'sent in one chop'],
  ['5.10', true, { sync: true }, 'sent in per-frame chops'],
  ['5.11', true, { chopsize: 1 }, 'sent in octet-wise chops'],
  ['5.12', false, {}, 'sent in one chop'],
  ['5.13', false, { sync: true }, 'sent in per-frame chops'],
  ['5.14', false, { chopsize: 1 }, 'sent in octet-wise chops'],
] as const) {
  fragFail(
    id,
    `Send unfragmented Text Message after Continuation Frame with FIN = ${fin}, where there is nothing to continue, ${desc}.`,
    NOTHING_TO_CONTINUE,
    [
      { opcode: 0, fin, payload: 'non-continuation payload' },
      { opcode: 1, fin: true, payload: 'Hello, world!' },
    ],
    how,
  )
}
add('5.15', 'Send text Message fragmented into 2 fragments, then Continuation Frame with FIN = false where there is nothing to continue, then unfragmented Text Message, all sent in one chop.', NOTHING_TO_CONTINUE, {
  onOpen(c, p) {
    c.expected.set('OK', [msg('fragment1fragment2')])
    c.expected.set('NON-STRICT', [])
    c.expectedClose = failedByPeer()
    p.sendFrame({ opcode: 1, fin: false, payload: 'fragment1' })
    p.sendFrame({ opcode: 0, fin: true, payload: 'fragment2' })
    p.sendFrame({ opcode: 0, fin: false, payload: 'fragment3' })
    p.sendFrame({ opcode: 1, fin: true, payload: 'fragment4' })
    p.killAfter(1)
  },
})
for (const [id, fin] of [
  ['5.16', false],
  ['5.17', true],
] as const) {
  const once: F[] = [
    { opcode: 0, fin, payload: 'fragment1' },
    { opcode: 1, fin: false, payload: 'fragment2' },
    { opcode: 0, fin: true, payload: 'fragment3' },
  ]
  fragFail(id, `Repeated 2x: Continuation Frame with FIN = ${fin} (where there is nothing to continue), then text Message fragmented into 2 fragments.`, NOTHING_TO_CONTINUE, [...once, ...once])
}
fragFail('5.18', 'Send text Message fragmented into 2 fragments, with both frame opcodes set to text, sent in one chop.', 'The connection is failed immediately, since all data frames after the initial data frame must have opcode 0.', [
  { opcode: 1, fin: false, payload: 'fragment1' },
  { opcode: 1, fin: true, payload: 'fragment2' },
])
for (const [id, sync] of [
  ['5.19', false],
  ['5.20', true],
] as const) {
  add(id, `A fragmented text message is sent in multiple frames. After sending the first 2 frames of the text message, a Ping is sent. Then we wait 1s, then we send 2 more text fragments, another Ping and then the final text fragment. Everything is legal.${sync ? ' (All frames with SYNC = True.)' : ''}`, "The peer immediately answers the first Ping before it has received the last text message fragment. The peer pong's back the Ping's payload exactly, and echo's the payload of the fragmented message back to us.", {
    onOpen(c, p) {
      c.expected.set('OK', [pong('pongme 1!'), pong('pongme 2!'), msg('fragment1fragment2fragment3fragment4fragment5')])
      c.expectedClose = cleanNormal()
      p.sendFrame({ opcode: 1, fin: false, payload: 'fragment1', sync })
      p.sendFrame({ opcode: 0, fin: false, payload: 'fragment2', sync })
      p.sendFrame({ opcode: 9, fin: true, payload: 'pongme 1!', sync })
      p.continueLater(1, () => {
        p.sendFrame({ opcode: 0, fin: false, payload: 'fragment3', sync })
        p.sendFrame({ opcode: 0, fin: false, payload: 'fragment4', sync })
        p.sendFrame({ opcode: 9, fin: true, payload: 'pongme 2!', sync })
        p.sendFrame({ opcode: 0, fin: true, payload: 'fragment5', sync })
        p.closeAfter(1)
      })
    },
  })
}

// ---------------------------------------------------------------- 6 UTF-8 handling

function echoText(id: string, description: string, expected: Buffer, send: (p: FuzzingProtocol) => void): void {
  add(id, description, "A message is echo'ed back to us.", {
    onOpen(c, p) {
      c.expected.set('OK', [msg(expected)])
      c.expectedClose = cleanNormal()
      send(p)
      p.closeAfter(1)
    },
  })
}
echoText('6.1.1', 'Send text message of length 0.', B(''), (p) => p.sendFrame({ opcode: 1, payload: '' }))
echoText('6.1.2', 'Send fragmented text message, 3 fragments each of length 0.', B(''), (p) => {
  p.sendFrame({ opcode: 1, fin: false, payload: '' })
  p.sendFrame({ opcode: 0, fin: false, payload: '' })
  p.sendFrame({ opcode: 0, fin: true, payload: '' })
})
echoText('6.1.3', 'Send fragmented text message, 3 fragments, first and last of length 0, middle non-empty.', B('middle frame payload'), (p) => {
  p.sendFrame({ opcode: 1, fin: false, payload: '' })
  p.sendFrame({ opcode: 0, fin: false, payload: 'middle frame payload' })
  p.sendFrame({ opcode: 0, fin: true, payload: '' })
})
// "Hello-\u00b5@\u00df\u00f6\u00e4\u00fc\u00e0\u00e1-UTF-8!!" (the Python source is UTF-8), split after U+00E4 for 6.2.2.
const HELLO1 = U('Hello-\u00b5@\u00df\u00f6\u00e4')
const HELLO2 = U('\u00fc\u00e0\u00e1-UTF-8!!')
const HELLO = Buffer.concat([HELLO1, HELLO2])
const KOSME = H('cebae1bdb9cf83cebcceb5')
echoText('6.2.1', 'Send a valid UTF-8 text message in one fragment.', HELLO, (p) => p.sendMessage(HELLO, false))
echoText('6.2.2', 'Send a valid UTF-8 text message in two fragments, fragmented on UTF-8 code point boundary.', HELLO, (p) => {
  p.sendFrame({ opcode: 1, fin: false, payload: HELLO1 })
  p.sendFrame({ opcode: 0, fin: true, payload: HELLO2 })
})
echoText('6.2.3', 'Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.', HELLO, (p) => p.sendMessage(HELLO, false, 1))
echoText('6.2.4', 'Send a valid UTF-8 text message in fragments of 1 octet, resulting in frames ending on positions which are not code point ends.', KOSME, (p) => p.sendMessage(KOSME, false, 1))

const INVALID_6_3 = Buffer.concat([KOSME, H('eda080'), H('656469746564')])
for (const [id, fragmentSize, desc] of [
  ['6.3.1', undefined, 'unfragmented'],
  ['6.3.2', 1, 'in fragments of 1 octet, resulting in frames ending on positions which are not code point ends'],
] as const) {
  add(id, `Send invalid UTF-8 text message ${desc}.`, 'The connection is failed immediately, since the payload is not valid UTF-8.', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = utf8Fail()
      p.sendMessage(INVALID_6_3, false, fragmentSize)
      p.killAfter(1)
    },
  })
}

// 6.4.x: fail fast. PAYLOAD = KOSME + f4908080 (U+110000: invalid from its 2nd octet, index 12) + "edited".
const P641 = KOSME
const P642 = H('f4908080')
const P643 = B('edited')
const P64 = Buffer.concat([P641, P642, P643])
const FAIL_FAST = 'The first part is accepted, we expect to timeout on the first wait. The 2nd part should be rejected immediately (fail fast on UTF-8). If we timeout, we expect the connection is failed at least then, since the complete message payload is not valid UTF-8.'
function failFast(id: string, description: string, parts: [Buffer, Buffer, Buffer], asChops: boolean): void {
  add(id, description, FAIL_FAST, {
    onOpen(c, p) {
      c.expected.set('OK', [['timeout', 'A']])
      c.expected.set('NON-STRICT', [
        ['timeout', 'A'],
        ['timeout', 'B'],
      ])
      c.expectedClose = utf8Fail()
      if (asChops) {
        // One frame (FIN = 0) whose payload goes out in three chops; endMessage adds the final empty frame.
        p.beginMessage()
        p.beginMessageFrame(P64.length)
        p.sendMessageFrameData(parts[0])
      } else {
        p.sendFrame({ opcode: 1, fin: false, payload: parts[0] })
      }
      p.continueLater(
        1,
        () => {
          if (p.state !== 'open') return
          c.received.push(['timeout', 'A'])
          if (asChops) p.sendMessageFrameData(parts[1])
          else p.sendFrame({ opcode: 0, fin: false, payload: parts[1] })
          p.continueLater(
            1,
            () => {
              if (p.state !== 'open') return
              c.received.push(['timeout', 'B'])
              if (asChops) {
                p.sendMessageFrameData(parts[2])
                p.endMessage()
              } else {
                p.sendFrame({ opcode: 0, fin: true, payload: parts[2] })
              }
              p.killAfter(1)
            },
            'B',
          )
        },
        'A',
      )
    },
  })
}
failFast('6.4.1', 'Send invalid UTF-8 text message in 3 fragments (frames). First frame payload is valid, then wait, then 2nd frame which contains the payload making the sequence invalid, then wait, then 3rd frame with rest.', [P641, P642, P643], false)
failFast('6.4.2', 'Same as Case 6.4.1, but in 2nd frame, we send only up to and including the octet making the complete payload invalid.', [P64.subarray(0, 12), P64.subarray(12, 13), P64.subarray(13)], false)
failFast('6.4.3', 'Same as Case 6.4.1, but we send message not in 3 frames, but in 3 chops of the same message frame.', [P641, P642, P643], true)
failFast('6.4.4', 'Same as Case 6.4.2, but we send message not in 3 frames, but in 3 chops of the same message frame.', [P64.subarray(0, 12), P64.subarray(12, 13), P64.subarray(13)], true)

/** createUtf8TestSequences() of case6_x_x.py (after Markus Kuhn's UTF-8-test.txt): [title, [valid, octets][]]. */
function utf8TestSequences(): Array<[string, Array<[boolean, Buffer]>]> {
  const seqs: Array<[string, Array<[boolean, Buffer]>]> = []
  const valid = (...hex: string[]): Array<[boolean, Buffer]> => hex.map((h) => [true, H(h)])
  const invalid = (...hex: string[]): Array<[boolean, Buffer]> => hex.map((h) => [false, H(h)])
  seqs.push(['Some valid UTF-8 sequences', [[true, B('hello\x24world')], [true, B('hello\xc2\xa2world')], [true, B('hello\xe2\x82\xacworld')], [true, B('hello\xf0\xa4\xad\xa2world')], [true, KOSME]]])
  const prefixes: Array<[boolean, Buffer]> = []
  for (let i = 1; i <= KOSME.length; i++) prefixes.push([isValidUtf8(KOSME.subarray(0, i)), KOSME.subarray(0, i)])
  seqs.push(['All prefixes of a valid UTF-8 string that contains multi-byte code points', prefixes])
  seqs.push(['First possible sequence of a certain length', valid('00', 'c280', 'e0a080', 'f0908080')])
  seqs.push(['First possible sequence length 5/6 (invalid codepoints)', invalid('f888808080', 'fc8480808080')])
  seqs.push(['Last possible sequence of a certain length', valid('7f', 'dfbf', 'efbfbf', 'f48fbfbf')])
  seqs.push(['Last possible sequence length 4/5/6 (invalid codepoints)', invalid('f7bfbfbf', 'fbbfbfbfbf', 'fdbfbfbfbfbf')])
  seqs.push(['Other boundary conditions', [...valid('ed9fbf', 'ee8080', 'efbfbd', 'f48fbfbf'), ...invalid('f4908080')]])
  const allContinuations: number[] = []
  for (let b = 0x80; b < 0xbf; b++) allContinuations.push(b)
  seqs.push(['Unexpected continuation bytes', [...invalid('80', 'bf', '80bf', '80bf80', '80bf80bf', '80bf80bf80', '80bf80bf80bf'), [false, Buffer.from(allContinuations)]]])
  const lonely: Array<[boolean, Buffer]> = []
  for (const [lo, hi] of [
    [0xc0, 0xdf],
    [0xe0, 0xef],
    [0xf0, 0xf7],
    [0xf8, 0xfb],
    [0xfc, 0xfd],
  ]) {
    const s: number[] = []
    for (let b = lo; b < hi; b++) s.push(b, 0x20)
    lonely.push([false, Buffer.from(s)])
  }
  seqs.push(['Lonely start characters', lonely])
  const missing = ['c0', 'e080', 'f08080', 'f8808080', 'fc80808080', 'df', 'efbf', 'f7bfbf', 'fbbfbfbf', 'fdbfbfbfbf']
  seqs.push(['Sequences with last continuation byte missing', invalid(...missing)])
  seqs.push(['Concatenation of incomplete sequences', invalid(missing.join(''))])
  seqs.push(['Impossible bytes', invalid('fe', 'ff', 'fefeffff')])
  seqs.push(['Examples of an overlong ASCII character', invalid('c0af', 'e080af', 'f08080af', 'f8808080af', 'fc80808080af')])
  seqs.push(['Maximum overlong sequences', invalid('c1bf', 'e09fbf', 'f08fbfbf', 'f887bfbfbf', 'fc83bfbfbfbf')])
  seqs.push(['Overlong representation of the NUL character', invalid('c080', 'e08080', 'f0808080', 'f880808080', 'fc8080808080')])
  seqs.push(['Single UTF-16 surrogates', invalid('eda080', 'edadbf', 'edae80', 'edafbf', 'edb080', 'edbe80', 'edbfbf')])
  seqs.push(['Paired UTF-16 surrogates', invalid('eda080edb080', 'eda080edbfbf', 'edadbfedb080', 'edadbfedbfbf', 'edae80edb080', 'edae80edbfbf', 'edafbfedb080', 'edafbfedbfbf')])
  const nonChars: Array<[boolean, Buffer]> = valid('efbfbe', 'efbfbf')
  for (const z1 of ['f0', 'f1', 'f2', 'f3', 'f4']) {
    for (const z2 of ['8f', '9f', 'af', 'bf']) {
      if (z1 === 'f4' && z2 !== '8f') continue // those encode code points > U+10FFFF
      for (const z3 of ['be', 'bf']) {
        const zz = z1 + z2 + 'bf' + z3
        if (zz !== 'f08fbfbe' && zz !== 'f08fbfbf') nonChars.push([true, H(zz)]) // filter overlong sequences
      }
    }
  }
  seqs.push(['Non-character code points (valid UTF-8)', nonChars])
  seqs.push(['Unicode specials (i.e. replacement char)', valid('efbfb9', 'efbfba', 'efbfbb', 'efbfbc', 'efbfbd', 'efbfbe', 'efbfbf')])
  return seqs
}
utf8TestSequences().forEach(([title, list], k) => {
  list.forEach(([isValid, payload], j) => {
    add(`6.${k + 5}.${j + 1}`, `${title}: send a text message with payload which is ${isValid ? '' : 'not '}valid UTF-8 in one fragment. Payload: 0x${payload.toString('hex')}`, isValid ? "The message is echo'ed back to us." : 'The connection is failed immediately, since the payload is not valid UTF-8.', {
      onOpen(c, p) {
        if (isValid) {
          c.expected.set('OK', [msg(payload)])
          c.expectedClose = cleanNormal()
        } else {
          c.expected.set('OK', [])
          c.expectedClose = utf8Fail()
        }
        p.sendMessage(payload, false)
        p.killAfter(0.5)
      },
    })
  })
})

// ---------------------------------------------------------------- 7 Close handling

/** Most of group 7: the server closes first (its close handler suppressed), a wrong close code fails the case. */
function closeCase(id: string, description: string, expectation: string, expectedClose: ExpectedClose, send: (p: FuzzingProtocol) => void, expected: CaseEvent[] = []): void {
  add(id, description, expectation, {
    init(c) {
      c.suppressClose = true
    },
    onOpen(c, p) {
      c.expected.set('OK', expected)
      c.expectedClose = expectedClose
      send(p)
      p.killAfter(1)
    },
    onConnectionLost: wrongCodeFails,
  })
}
add('7.1.1', 'Send a message followed by a close frame', 'Echoed message followed by clean close with normal code.', {
  onOpen(c, p) {
    c.expected.set('OK', [msg('Hello World!')])
    c.expectedClose = cleanNormal()
    p.sendFrame({ opcode: 1, payload: 'Hello World!' })
    p.killAfter(1)
  },
  onConnectionLost: wrongCodeFails,
})
closeCase('7.1.2', 'Send two close frames', 'Clean close with normal code. Second close frame ignored.', cleanNormal(), (p) => {
  p.sendClose(CLOSE_NORMAL)
  p.sendFrame({ opcode: 8 })
})
closeCase('7.1.3', 'Send a ping after close message', 'Clean close with normal code, no pong.', cleanNormal(), (p) => {
  p.sendClose(CLOSE_NORMAL)
  p.sendFrame({ opcode: 9 })
})
closeCase('7.1.4', 'Send text message after sending a close frame.', 'Clean close with normal code. Text message ignored.', cleanNormal(), (p) => {
  p.sendClose(CLOSE_NORMAL)
  p.sendFrame({ opcode: 1, payload: 'Hello World!' })
})
closeCase('7.1.5', 'Send message fragment1 followed by close then fragment', 'Clean close with normal code.', cleanNormal(), (p) => {
  p.sendFrame({ opcode: 1, fin: false, payload: 'fragment1' })
  p.sendClose(CLOSE_NORMAL)
  p.sendFrame({ opcode: 0, fin: true, payload: 'fragment2' })
})
add('7.1.6', 'Send 256K message followed by close then a ping', 'Case outcome depends on implementation defined close behavior. Message and close frame are sent back to back. If the close frame is processed before the text message write is complete (as can happen in asynchronous processing models) the close frame is processed first and the text message may not be received or may only be partially received.', {
  init(c) {
    c.suppressClose = true
  },
  onOpen(c, p) {
    c.expected.set('OK', [msg('Hello World!')])
    c.expected.set('NON-STRICT', [])
    c.expectedClose = cleanNormal()
    p.sendFrame({ opcode: 1, payload: 'BAsd7&jh23', payloadLen: 256 * 2 ** 10 })
    p.sendFrame({ opcode: 1, payload: 'Hello World!' })
    p.sendClose(CLOSE_NORMAL)
    p.sendFrame({ opcode: 9 })
    p.killAfter(1)
  },
  onConnectionLost(c) {
    c.passed = true
    if (c.behavior === 'OK') c.result = 'Text message was processed before close.'
    else if (c.behavior === 'NON-STRICT') c.result = 'Close was processed before text message could be returned.'
    c.notes.push(`before INFORMATIONAL: behavior ${c.behavior}, behaviorClose ${c.behaviorClose}`)
    c.behavior = 'INFORMATIONAL'
    c.behaviorClose = 'INFORMATIONAL'
  },
})
closeCase('7.3.1', 'Send a close frame with payload length 0 (no close code, no close reason)', 'Clean close with normal code.', cleanNormal(), (p) => p.sendCloseFrame())
closeCase('7.3.2', 'Send a close frame with payload length 1', 'Clean close with protocol error or drop TCP.', { closedByMe: true, closeCode: [CLOSE_PROTOCOL_ERROR], requireClean: false }, (p) => p.sendCloseFrame(null, B('a')))
closeCase('7.3.3', 'Send a close frame with payload length 2 (regular close with a code)', 'Clean close with normal code.', cleanNormal(), (p) => p.sendClose(CLOSE_NORMAL))
closeCase('7.3.4', 'Send a close frame with close code and close reason', 'Clean close with normal code.', cleanNormal(), (p) => p.sendClose(CLOSE_NORMAL, 'Hello World!'))
closeCase('7.3.5', 'Send a close frame with close code and close reason of maximum length (123)', 'Clean close with normal code.', cleanNormal(), (p) => p.sendClose(CLOSE_NORMAL, '*'.repeat(123)))
closeCase('7.3.6', 'Send a close frame with close code and close reason which is too long (124) - total frame payload 126 octets', 'Clean close with protocol error code or dropped TCP connection.', { closedByMe: true, closeCode: [CLOSE_PROTOCOL_ERROR], requireClean: false }, (p) =>
  p.sendCloseFrame(CLOSE_NORMAL, rep('*', 124)),
)
closeCase('7.5.1', 'Send a close frame with invalid UTF8 payload', 'Clean close with protocol error or invalid utf8 code or dropped TCP.', { closedByMe: true, closeCode: [CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_PAYLOAD], requireClean: false }, (p) =>
  p.sendCloseFrame(CLOSE_NORMAL, H('cebae1bdb9cf83cebcceb5eda080656469746564')),
)
;[1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999].forEach((code, i) => {
  add(`7.7.${i + 1}`, `Send close with valid close code ${code}`, 'Clean close with normal or echoed code', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = { closedByMe: true, closeCode: [CLOSE_NORMAL, code], requireClean: true }
      p.sendCloseFrame(code)
      p.killAfter(1)
    },
    onConnectionLost: wrongCodeFails,
  })
})
;[0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999].forEach((code, i) => {
  add(`7.9.${i + 1}`, `Send close with invalid close code ${code}`, 'Clean close with protocol error code or drop TCP', {
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = { closedByMe: true, closeCode: [CLOSE_PROTOCOL_ERROR], requireClean: false }
      p.sendCloseFrame(code)
      p.killAfter(1)
    },
    onConnectionLost: wrongCodeFails,
  })
})
;[5000, 65535].forEach((code, i) => {
  add(`7.13.${i + 1}`, `Send close with close code ${code}`, 'Actual events are undefined by the spec.', {
    init(c) {
      c.suppressClose = true
    },
    onOpen(c, p) {
      c.expected.set('OK', [])
      c.expectedClose = { closedByMe: true, closeCode: [CLOSE_NORMAL, code, CLOSE_PROTOCOL_ERROR], requireClean: false }
      p.sendCloseFrame(code)
      p.killAfter(1)
    },
    onConnectionLost(c) {
      c.passed = true
      c.notes.push(`before INFORMATIONAL: behavior ${c.behavior}, behaviorClose ${c.behaviorClose}`)
      c.behavior = 'INFORMATIONAL'
      c.behaviorClose = 'INFORMATIONAL'
      c.result = 'Actual events are undefined by the spec.'
    },
  })
})

// ---------------------------------------------------------------- 9 Limits/Performance

/** The 9.1-9.6 cases: one big message, judged on type and length (Autobahn's "FIXME: check actual content"). */
function bigMessage(id: string, description: string, isBinary: boolean, waitSecs: number, build: () => Buffer, send: (p: FuzzingProtocol, payload: Buffer) => void): void {
  const kind = isBinary ? 'binary' : 'text'
  add(id, description, `Receive echo'ed ${kind} message (with payload as sent).`, {
    waitSecs,
    onOpen(c, p) {
      p.createWirelog = false
      c.reportTime = true
      c.behavior = 'FAILED'
      c.expectedClose = cleanNormal()
      c.result = `Did not receive message within ${waitSecs} seconds.`
      c.sent = build()
      send(p, c.sent)
      p.closeAfter(waitSecs)
    },
    onMessage(c, p, payload, binary) {
      if (binary !== isBinary) {
        c.result = `Expected ${kind} message with payload, but got ${binary ? 'binary' : 'text'}.`
      } else if (payload.length !== c.sent!.length) {
        c.result = `Expected ${kind} message with payload of length ${c.sent!.length}, but got ${payload.length}.`
      } else {
        c.behavior = 'OK'
        c.result = `Received ${kind} message of length ${payload.length}.`
        if (!payload.equals(c.sent!)) c.extraFailures.push('echoed payload has the right length but different content')
      }
      p.createWirelog = true
      p.sendClose(CLOSE_NORMAL)
    },
  })
}
const repeatTo = (unit: Buffer, len: number): Buffer => {
  const b = Buffer.alloc(len)
  for (let i = 0; i < len; i += unit.length) unit.copy(b, i, 0, Math.min(unit.length, len - i))
  return b
}
const KiB = 2 ** 10
const MiB = 2 ** 20
const sizeName = (n: number): string => (n >= MiB ? `${n / MiB}M` : `${n / KiB}k`)
for (const [binary, sub, unit, waits] of [
  [false, '9.1', B('BAsd7&jh23'), [10, 10, 100, 100, 100, 100]],
  [true, '9.2', H('00fe23faf0'), [10, 10, 10, 10, 100, 100]],
] as const) {
  ;[64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB, 8 * MiB, 16 * MiB].forEach((len, i) => {
    bigMessage(`${sub}.${i + 1}`, `Send ${binary ? 'binary' : 'text'} message message with payload of length ${sizeName(len)}.`, binary, waits[i], () => repeatTo(unit, len), (p, payload) => p.sendFrame({ opcode: binary ? 2 : 1, payload: unit, payloadLen: payload.length }))
  })
}
for (const [binary, sub] of [
  [false, '9.3'],
  [true, '9.4'],
] as const) {
  ;[64, 256, 1 * KiB, 4 * KiB, 16 * KiB, 64 * KiB, 256 * KiB, 1 * MiB, 4 * MiB].forEach((frag, i) => {
    // 9.4.1 sends "\xfe" * 4M, the other 9.3/9.4 cases "*" * 4M.
    const unit = binary && i === 0 ? B('\xfe') : B('*')
    bigMessage(`${sub}.${i + 1}`, `Send fragmented ${binary ? 'binary' : 'text'} message message with message payload of length 4M. Sent out in fragments of ${frag}.`, binary, 100, () => repeatTo(unit, 4 * MiB), (p, payload) => p.sendMessage(payload, binary, frag))
  })
}
for (const [binary, sub, unit] of [
  [false, '9.5', B('BAsd7&jh23')],
  [true, '9.6', H('00fe23faf0')],
] as const) {
  ;[64, 128, 256, 512, 1024, 2048].forEach((chop, i) => {
    bigMessage(`${sub}.${i + 1}`, `Send ${binary ? 'binary' : 'text'} message message with payload of length 1M. Sent out data in chops of ${chop} octets.`, binary, 1000, () => repeatTo(unit, 1 * MiB), (p, payload) => p.sendFrame({ opcode: binary ? 2 : 1, payload: unit, payloadLen: payload.length, chopsize: chop }))
  })
}
for (const [binary, sub] of [
  [false, '9.7'],
  [true, '9.8'],
] as const) {
  ;[
    [0, 1000, 60],
    [16, 1000, 60],
    [64, 1000, 60],
    [256, 1000, 120],
    [1024, 1000, 240],
    [4096, 1000, 480],
  ].forEach(([len, count, waitSecs], i) => {
    const kind = binary ? 'binary' : 'text'
    const unit = binary ? B('\xfe') : B('*')
    const sendOne = (c: CaseRun, p: FuzzingProtocol): void => {
      p.sendFrame({ opcode: binary ? 2 : 1, payload: unit, payloadLen: len })
      c.count++
    }
    add(`${sub}.${i + 1}`, `Send ${count} ${kind} messages of payload size ${len} to measure implementation/network RTT (round trip time) / latency.`, `Receive echo'ed ${kind} messages (with payload as sent). Timeout case after ${waitSecs} secs.`, {
      waitSecs,
      onOpen(c, p) {
        c.reportTime = true
        p.createWirelog = false
        c.behavior = 'FAILED'
        c.expectedClose = cleanNormal()
        c.result = `Case did not finish within ${waitSecs} seconds.`
        c.sent = repeatTo(unit, len)
        p.closeAfter(waitSecs)
        c.count = 0
        sendOne(c, p)
      },
      onMessage(c, p, payload, isBinary) {
        if (isBinary !== binary || payload.length !== len) {
          c.behavior = 'FAILED'
          c.result = `Echo'ed message type or length differs from what I sent (got binary = ${isBinary}, payload length = ${payload.length}).`
          p.createWirelog = true
          p.sendClose(CLOSE_NORMAL)
          return
        }
        if (!payload.equals(c.sent!) && c.extraFailures.length === 0) c.extraFailures.push(`echo ${c.count} has the right length but different content`)
        if (c.count < count) {
          sendOne(c, p)
        } else {
          c.behavior = 'OK'
          c.result = 'Ok, received all echo\'ed messages in time.'
          p.createWirelog = true
          p.sendClose(CLOSE_NORMAL)
        }
      },
    })
  })
}

// ---------------------------------------------------------------- 10 Misc

add('10.1.1', 'Send text message with payload of length 65536 auto-fragmented with autoFragmentSize = 1300.', "Receive echo'ed text message (with payload as sent and transmitted frame counts as expected). Clean close with normal code.", {
  onOpen(c, p) {
    c.sent = rep('*', 65536)
    p.autoFragmentSize = 1300
    c.expected.set('OK', [msg(c.sent)])
    c.expectedClose = cleanNormal()
    p.sendMessage(c.sent)
    p.killAfter(10)
  },
  onConnectionLost(c, p) {
    if (p.connectionWasOpen) {
      const n = c.sent!.length
      const expected = { 0: Math.floor(n / p.autoFragmentSize), 1: n % p.autoFragmentSize > 0 ? 1 : 0 }
      const got = { 0: p.txFrameStats[0] ?? 0, 1: p.txFrameStats[1] ?? 0 }
      if (expected[0] !== got[0] || expected[1] !== got[1]) {
        c.behavior = 'FAILED'
        c.result = `Frames transmitted ${JSON.stringify(got)} does not match what we expected ${JSON.stringify(expected)}.`
      }
    } else {
      c.behavior = 'FAILED'
      c.result = 'WebSocket connection was never open'
    }
  },
})

export { CASES }

/** Cases whose behaviour is INFORMATIONAL by definition. */
export const INFORMATIONAL_CASES = new Set(['7.1.6', '7.13.1', '7.13.2'])

/** Sorts case ids as Autobahn does (numerically, part by part). */
export function compareIds(a: string, b: string): number {
  const x = a.split('.').map(Number)
  const y = b.split('.').map(Number)
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? -1) - (y[i] ?? -1)
    if (d !== 0) return d
  }
  return 0
}
