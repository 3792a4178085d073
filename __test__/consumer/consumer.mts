// A TypeScript consumer (module nodenext, strict) that touches every exported type.
import {
  ReconnectingWebSocket,
  clientStats,
  Event,
  MessageEvent,
  CloseEvent,
  ErrorEvent,
  type BinaryType,
  type ClientMetrics,
  type ClientStats,
  type CloseEventInfo,
  type DisconnectOptions,
  type DisconnectResult,
  type DropEventInfo,
  type GiveUpEventInfo,
  type Provider,
  type QueueOptions,
  type ReconnectInfo,
  type ReconnectingEventInfo,
  type ReconnectingWebSocketEvents,
  type ReconnectingWebSocketOptions,
  type ReconnectingWebSocketState,
  type RedialError,
  type RedialErrorCode,
  type RwsCompatOptions,
  type TlsOptions,
  type WhatwgEventMap,
  type WhatwgListenerOptions,
  type EventInit,
  type MessageEventInit,
  type CloseEventInit,
  type ErrorEventInit,
} from 'redial-ws'

const url = process.argv[2]
const headers: Provider<Record<string, string>> = ({ attempt }) => ({ 'x-attempt': String(attempt) })
const queue: QueueOptions = { maxMessages: 10, overflow: 'reject' }
const tls: TlsOptions = { rejectUnauthorized: true }
const binaryType: BinaryType = 'nodebuffer'
const options: ReconnectingWebSocketOptions = {
  minDelay: 10,
  queue,
  tls,
  headers,
  binaryType,
  shouldReconnect: (info: ReconnectInfo) => info.kind !== 'handshake',
}
const compat: RwsCompatOptions = { maxEnqueuedMessages: 5 }
const client = new ReconnectingWebSocket(url, options)
const state: ReconnectingWebSocketState = client.state
const events: Array<keyof ReconnectingWebSocketEvents> = ['open', 'message']
client.on('close', (ev: CloseEventInfo) => void ev.willReconnect)
client.on('reconnecting', (ev: ReconnectingEventInfo) => void ev.delay)
client.on('giveup', (ev: GiveUpEventInfo) => void ev.attempts)
client.on('drop', (ev: DropEventInfo) => void ev.messages)
client.on('error', (err: RedialError) => {
  const code: RedialErrorCode = err.code
  void code
})
client.addEventListener('close', (e: WhatwgEventMap['close']) => void (e instanceof CloseEvent))
client.onerror = (e: ErrorEvent) => void e.message
client.onopen = (e: Event) => void e.type
const listening: WhatwgListenerOptions = { once: true, signal: new AbortController().signal }
client.addEventListener('open', (e) => void e.timeStamp, listening)
const eventInit: EventInit = { cancelable: false }
const messageInit: MessageEventInit = { data: 'made' }
const closeInit: CloseEventInit = { code: 4000, reason: 'made' }
const errorInit: ErrorEventInit = { message: 'made', error: Object.assign(new Error('made'), { code: 'ERR_SOCKET' as const }) }
void [new Event('open', eventInit), new MessageEvent('message', messageInit), new CloseEvent('close', closeInit), new ErrorEvent('error', errorInit)]
const echoed = new Promise<string>((resolve) => {
  client.onmessage = (e: MessageEvent) => resolve(String(e.data))
})
client.send('hello from ts')
const reply = await echoed
const metrics: ClientMetrics = client.metrics
const flush: DisconnectOptions = { flush: false }
const result: DisconnectResult = await client.disconnect(1000, 'done', flush)
const stats: ClientStats = clientStats()
console.log(JSON.stringify({ reply, state, events, compat, sent: metrics.messagesSent, result, open: stats.openConnections }))
