// Type tests, checked by `npm run typecheck` (tsc): each @ts-expect-error must be an error,
// so a typing that became too loose fails the build. Never executed.
import { lookup as dnsLookup } from 'node:dns'

import { type BinaryType, CloseEvent, ErrorEvent, Event, MessageEvent, ReconnectingWebSocket, WebSocket } from '../../index.js'

declare const client: ReconnectingWebSocket

// Event names and listener signatures are typed.
client.on('message', (data: string | Buffer | ArrayBuffer | Uint8Array, isBinary: boolean) => void [data, isBinary])
client.on('close', (ev) => void ev.willReconnect)
client.on('reconnecting', (ev) => void (ev.attempt + ev.delay))
// Binary data is typed by the constructor's `binaryType`: a Buffer unless asked otherwise.
client.on('message', (data: string | Buffer, isBinary: boolean) => void [data, isBinary])
new ReconnectingWebSocket('ws://127.0.0.1:1', { binaryType: 'arraybuffer' }).on('message', (data: string | ArrayBuffer) => void data)
new ReconnectingWebSocket('ws://127.0.0.1:1', null, { binaryType: 'uint8array' }).on('message', (data: string | Uint8Array) => void data)
// @ts-expect-error an 'arraybuffer' client does not deliver Buffers
new ReconnectingWebSocket('ws://127.0.0.1:1', { binaryType: 'arraybuffer' }).on('message', (data: string | Buffer) => void data)
declare const anyBinary: { binaryType?: BinaryType }
// @ts-expect-error a binaryType not known statically: any of the four
new ReconnectingWebSocket('ws://127.0.0.1:1', anyBinary).on('message', (data: string | Buffer) => void data)
client.on('upgrade', (res) => void [res.statusCode, res.headers['x-session'], res.headers['set-cookie']?.[0], res.rawHeaders[0]])
// @ts-expect-error set-cookie is an array, as in Node
client.on('upgrade', (res) => void res.headers['set-cookie']?.toLowerCase())
client.pause()
client.resume()
const paused: boolean = client.isPaused
void paused
// @ts-expect-error misspelt event name
client.on('mesage', () => {})
// @ts-expect-error wrong listener signature: 'open' carries no argument
client.on('open', (x: number) => void x)
// @ts-expect-error wrong payload type for 'message'
client.on('message', (data: number) => void data)
// @ts-expect-error the close event has no 'willReconect'
client.on('close', (ev) => void ev.willReconect)

// Options are checked.
new ReconnectingWebSocket('ws://127.0.0.1:1', { minDelay: 1, jitter: 'equal', queue: { overflow: 'drop-oldest' } })
// @ts-expect-error unknown jitter
new ReconnectingWebSocket('ws://127.0.0.1:1', { jitter: 'some' })
// @ts-expect-error misspelt option
new ReconnectingWebSocket('ws://127.0.0.1:1', { minDelai: 1 })
// @ts-expect-error queue overflow policy
new ReconnectingWebSocket('ws://127.0.0.1:1', { queue: { overflow: 'drop-newest' } })
// @ts-expect-error a number is not a URL
new ReconnectingWebSocket(42)

// reconnecting-websocket's shape.
new ReconnectingWebSocket('ws://127.0.0.1:1', ['chat'], { maxReconnectionDelay: 10, maxEnqueuedMessages: 5 })
// Their option names with the options second (their mode too), queue: true, numeric header values.
new ReconnectingWebSocket('ws://127.0.0.1:1', { maxReconnectionDelay: 10, minDelay: 5 })
new ReconnectingWebSocket('ws://127.0.0.1:1', { queue: true, headers: { 'x-n': 1, 'x-list': ['a', 2] } })
client.addEventListener('message', (e) => void e.data)
// A WHATWG message event's data: a string or any binaryType's value (a Blob, Buffer[] too).
client.addEventListener('message', (e) => void (e.data instanceof Blob ? e.data.size : Array.isArray(e.data) ? e.data[0].length : e.data))
// @ts-expect-error not narrowed: it may be a Blob
client.addEventListener('message', (e) => void (typeof e.data === 'string' ? e.data : e.data.byteLength))
// send() callbacks get null once the message is written, an error once it never will be; one typed for ws fits.
client.send('x', (err) => void (err === null ? 0 : err.reason))
client.send('x', (err?: Error) => void err)
// @ts-expect-error err is null once the message is written
client.send('x', (err) => void err.reason)
// ws's close codes and Buffer reasons.
void client.disconnect(1001, Buffer.from('going away'))
// @ts-expect-error WHATWG close events have a code, not a status
client.addEventListener('close', (e) => void e.status)
// The DOM's listener options: a signal removes the listener; a boolean third argument is `capture`.
const onMessage = (e: MessageEvent) => void e.data
client.addEventListener('message', onMessage, { signal: AbortSignal.abort(), once: true })
client.addEventListener('message', onMessage, true)
client.removeEventListener('message', onMessage, false)
client.removeEventListener('message', onMessage, { capture: true })
// @ts-expect-error a signal is an AbortSignal
client.addEventListener('message', onMessage, { signal: new AbortController() })
// Event objects as the DOM's: currentTarget, timeStamp, stopImmediatePropagation() ...
client.addEventListener('close', (e) => {
  e.stopImmediatePropagation()
  e.preventDefault()
  void [e.currentTarget, e.timeStamp.toFixed(), e.defaultPrevented === e.cancelable, e.composedPath()]
})
// ... and their constructors' DOM forms besides redial-ws' own; Node's own events dispatch too.
const made: Event[] = [
  new MessageEvent('message', { data: 'text' }),
  new MessageEvent(Buffer.from('bytes'), client),
  new CloseEvent('close', { code: 4000, reason: 'bye', wasClean: true }),
  new CloseEvent(4000, 'bye', true, client),
  new ErrorEvent('error', { message: 'failed', error: Object.assign(new Error('failed'), { code: 'ERR_SOCKET' as const }) }),
  // As the DOM's: every field of the init may be left out.
  new ErrorEvent('error', { message: 'failed' }),
  new MessageEvent('message', {}),
  new Event('open', { cancelable: true }),
  new Event('open', client),
]
void made.map((e) => client.dispatchEvent(e))
void client.dispatchEvent(new globalThis.Event('open'))
// @ts-expect-error a close code is a number
new CloseEvent('close', { code: '4000' })

// send() takes data, not numbers; disconnect() resolves with what it discarded.
client.send(new Uint8Array(2))
client.send(new Blob(['bytes']), (err) => void (err?.reason === 'unreadable'))
client.on('drop', ({ reason, messages, error }) => void (reason === 'unreadable' && messages[0] instanceof Blob && error))
client.send(new Blob(['text']), { binary: false, fin: false })
// A Blob's ping or pong may fail after the call: its callback hears why.
client.ping(new Blob(['p']), (err) => void (err?.reason === 'closed'))
client.pong(new Blob(['p']), undefined, (err) => void err?.code)
declare const either: Blob | Buffer
client.ping(either, () => {})
// @ts-expect-error the callback may get an error
client.ping('p', undefined, (err: null) => void err)
// @ts-expect-error
client.send(42)
// net.connect's lookup: dns.lookup itself fits.
new ReconnectingWebSocket('ws://127.0.0.1:1', { lookup: dnsLookup })
// @ts-expect-error a lookup is a function
new ReconnectingWebSocket('ws://127.0.0.1:1', { lookup: '8.8.8.8' })
// ws's callback, after the data or after options; its error says why the message was not sent.
client.send('x', (err) => void err?.reason.toUpperCase())
client.send('a piece', { fin: false })
client.send('x', { binary: true }, (err) => {
  if (err) void (err.code === 'ERR_NOT_SENT')
})
// @ts-expect-error the callback is a function
client.send('x', {}, 'done')
void client.disconnect().then((r) => r.discarded.toFixed())
// @ts-expect-error readyState is read-only
client.readyState = 1
// ws's idioms: the client is `this` in a listener; callbacks and options typed as @types/ws types them.
client.on('message', function (data, isBinary) {
  this.send(data, { binary: isBinary })
})
client.once('pong', function () {
  void this.terminate()
})
client.ping(undefined, undefined, (err: Error) => void err)
client.pong('x', true, (err: Error) => void err)
const sendOptions = { binary: true, mask: true }
client.send('x', sendOptions)
client.on('open', function () {
  // @ts-expect-error a listener's `this` is the client
  this.nope()
})
// An options object typed with the exported interface: its binaryType says what messages are.
const bufferOptions: import('../../index.js').ReconnectingWebSocketOptions<'nodebuffer'> = { maxRetries: 5 }
const buffered: ReconnectingWebSocket = new ReconnectingWebSocket('ws://127.0.0.1:1', bufferOptions)
void buffered
// As in Node and ws: a TLS member that is null is not given; bytes in any Uint8Array.
declare const maybePem: string | undefined
new ReconnectingWebSocket('wss://127.0.0.1:1', { tls: { ca: maybePem ?? null, cert: new Uint8Array(0), key: null, passphrase: null } })
// ws's README perMessageDeflate, zlib's options and all.
new ReconnectingWebSocket('ws://127.0.0.1:1', {
  perMessageDeflate: { zlibDeflateOptions: { chunkSize: 1024, memLevel: 7, level: 3 }, zlibInflateOptions: { chunkSize: 10 * 1024 }, concurrencyLimit: 10, threshold: 1024 },
})
// partysocket's protocols provider may answer null (no subprotocol).
new ReconnectingWebSocket('ws://127.0.0.1:1', () => null)
new ReconnectingWebSocket('ws://127.0.0.1:1', { protocols: async () => null })
// Every code the client throws narrows.
void client.opened({ signal: AbortSignal.timeout(1) }).catch((err: import('../../index.js').RedialError) => void (err.code === 'ABORT_ERR'))
// The DOM's forms of the event classes.
void new ErrorEvent('error').message
void new ErrorEvent('error', { message: 'm', error: new Error('any value') })
// The (event: never) overloads take no call: an unknown event is still refused.
// @ts-expect-error unknown event name
client.once('nope', () => {})
// @ts-expect-error unknown event name
client.off('nope', () => {})

// WebSocket: the shapes of ws and the DOM, a ReconnectingWebSocket's options but those of reconnecting.
new WebSocket('ws://127.0.0.1:1', 'graphql-transport-ws').onclose = (ev) => void [ev.code, ev.wasClean]
new WebSocket('ws://127.0.0.1:1', ['a', 'b'], { headers: { authorization: 'x' }, binaryType: 'arraybuffer' }).on('message', (data: string | ArrayBuffer) => void data)
new WebSocket('ws://127.0.0.1:1', { protocols: 'a', connectTimeout: 5_000 })
// @ts-expect-error a WebSocket does not reconnect
new WebSocket('ws://127.0.0.1:1', { maxRetries: 3 })
// @ts-expect-error nor with the subprotocols second
new WebSocket('ws://127.0.0.1:1', 'a', { minDelay: 10 })
// @ts-expect-error subprotocols given twice
new WebSocket('ws://127.0.0.1:1', 'a', { protocols: ['b'] })
new WebSocket('ws://127.0.0.1:1', () => ['a'])
// Its EventEmitter close is ws's: (code, reason as a Buffer).
new WebSocket('ws://127.0.0.1:1').on('close', (code, reason) => void [code.toFixed(), reason.toString('utf8')])
new WebSocket('ws://127.0.0.1:1').once('message', (data, isBinary) => void [data, isBinary])
// @ts-expect-error a WebSocket's close is not a ReconnectingWebSocket's object
new WebSocket('ws://127.0.0.1:1').on('close', (ev) => void ev.willReconnect)
void new WebSocket('ws://127.0.0.1:1').emit('close', 1000, Buffer.alloc(0))
void new WebSocket('ws://127.0.0.1:1').listeners('close').map((l) => l(1000, Buffer.alloc(0)))
// @ts-expect-error emitted as ws emits it
void new WebSocket('ws://127.0.0.1:1').emit('close', { code: 1000, reason: '', wasClean: true, willReconnect: false })
// @ts-expect-error unknown event name
new WebSocket('ws://127.0.0.1:1').on('nope', () => {})
const oneShot: ReconnectingWebSocket = new WebSocket('ws://127.0.0.1:1')
void oneShot
