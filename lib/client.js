'use strict'
// The idiomatic layer over the native binding (loaded by lib/native.js).
// It owns no timer, socket or buffer: those live in Rust. It turns coalesced
// event batches into events (EventEmitter and WHATWG style) and tracks the
// state users observe.

const { EventEmitter } = require('node:events')
const diagnostics = require('node:diagnostics_channel')
const { debuglog } = require('node:util')
// `N.client*(client, ...)`: the native state is wrapped onto the client object itself (src/client.rs).
const N = require('./native')
const { makeError, fromNative, redactUrl, redactText } = require('./errors')
const {
  parseOptions,
  parseUrl,
  checkClose,
  checkHeaders,
  flattenHeaders,
  checkProtocols,
  toProtocols,
  checkBinaryType,
  proxyFor,
  splitCredentials,
} = require('./options')
const { Event, MessageEvent, CloseEvent, ErrorEvent, Listeners } = require('./events')
const { normalizeArgs } = require('./compat')

// Batch tags: mirrored in src/delivery.rs.
const T_OPEN = 0
const T_BINARY = 2
const T_ERROR = 3
const T_CLOSE = 4
const T_RECONNECTING = 5
const T_GIVEUP = 6
const T_IDLE = 7
const T_CONNECTING = 8
const T_DISCONNECTED = 9
const T_WARNING = 10
const T_PING = 11
const T_PONG = 12
const T_PROVIDE = 13
const T_DECIDE = 14
const T_TEXT_BATCH = 15

// send() outcomes, from src/client.rs.
const SENT_NOT_OPEN = 2
const SENT_QUEUE_FULL = 3
const SENT_DROPPING = 4
const SENT_CORKED = 5
const SENT_NOT_CONNECTED = 6

/** One microtask per turn writes what the fast path corked (src/transport.rs). */
function uncork(client) {
  N.clientUncork(client)
}

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3
const READY_STATES = { connecting: CONNECTING, open: OPEN, closing: CLOSING, reconnecting: CLOSED, closed: CLOSED }

// For APM tools: subscribers get `{ client, ...event }`. Nothing is built when nobody listens.
const channels = {
  open: diagnostics.channel('redial-ws:open'),
  close: diagnostics.channel('redial-ws:close'),
  reconnecting: diagnostics.channel('redial-ws:reconnecting'),
  error: diagnostics.channel('redial-ws:error'),
  giveup: diagnostics.channel('redial-ws:giveup'),
}

// NODE_DEBUG=redial-ws
const debug = debuglog('redial-ws')

const kOnEvent = Symbol('redial-ws.onEvent')

const EMPTY = Buffer.alloc(0)

// EventEmitter starts `_events` as a null-prototype literal, which V8 keeps in dictionary
// mode (~280 B per client). EventEmitter only reads own keys and `events[type]`, so an
// object over an empty, frozen, null-prototype prototype behaves the same, stays in fast
// mode and shares its shape with every other client's: one client then costs ~60 B here.
const NO_EVENTS = Object.freeze(Object.create(null))

function rethrow(err) {
  throw err
}

function rethrowLater(err) {
  process.nextTick(rethrow, err)
}

const warned = new Set()
function warn(p) {
  // One warning per distinct message (it names the URL): enough to find the leak without flooding stderr.
  if (warned.has(p.message) || warned.size >= 100) return
  warned.add(p.message)
  process.emitWarning(p.message, { type: 'RedialWsWarning', code: p.code })
}

/**
 * Receives `[client, tag, payload, ...]` from the native side. It closes over
 * no client, so the native side holding it never keeps a client alive. It
 * must never throw (that would be a fatal exception): a listener's error is
 * rethrown on the next tick, where it surfaces as an ordinary uncaught
 * exception and the remaining events are still delivered.
 *
 * A batch is bounded (src/delivery.rs); the next one is taken from a
 * `setImmediate`, so timers and I/O get a turn between batches, and that
 * acknowledgement is what frees the batch's messages from each client's read
 * bound: a client holds a bounded amount for a JS thread that is behind.
 */
function dispatch(batch) {
  if (batch.length === 0) return
  for (let i = 0; i < batch.length; i += 3) {
    try {
      const client = batch[i]
      if (client === undefined) {
        if (batch[i + 1] === T_WARNING) warn(batch[i + 2])
      } else {
        client[kOnEvent](batch[i + 1], batch[i + 2])
      }
    } catch (err) {
      rethrowLater(err)
    }
  }
  setImmediate(acknowledge)
}

function acknowledge() {
  dispatch(N.deliveryAck())
}

N.init(dispatch)

function convertBinary(buf, type) {
  if (type === 'nodebuffer') return buf
  if (type === 'uint8array') return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
  // A Buffer may share a pooled ArrayBuffer: hand out exactly its bytes.
  return buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength
    ? buf.buffer
    : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)
}

class ReconnectingWebSocket extends EventEmitter {
  static CONNECTING = CONNECTING
  static OPEN = OPEN
  static CLOSING = CLOSING
  static CLOSED = CLOSED

  // Few fields on purpose: a fleet has one of these per connection. What only some clients
  // need lives in objects that only they have (`#providers`, `#compat`).
  #url
  /** With per-attempt providers: `{ url, headers, protocols, proxy, origin }` as given. */
  #providers = null
  #shouldReconnect
  #binaryType
  #maxRetries
  #minUptime
  #state = 'closed'
  #protocol = ''
  /** A disconnect() is in progress: driver events do not move the state away from 'closing'. */
  #closing = false
  /** The resolver of a pending disconnect() call, an array of them for several, or null. */
  #waiters = null
  /** reconnecting-websocket's retry counter (see `retryCount`). */
  #retries = -1
  #openedAt = 0
  /**
   * reconnecting-websocket compatibility settings and state, or null (see lib/compat.js):
   * `socketSeen`, `pendingError`, `suppressClose` and `readyStateOverride` are kept there.
   */
  #compat
  #listeners = null
  #on = null
  #unlistenSignal = null
  /** Number of messages() iterators over their high-water mark: reading is paused while > 0. */
  #pausers = 0

  /**
   * `new ReconnectingWebSocket(url, options?)`, or reconnecting-websocket's
   * `new ReconnectingWebSocket(url, protocols?, options?)`.
   */
  constructor(url, protocolsOrOptions, options) {
    super()
    this._events = Object.create(NO_EVENTS)
    const parsed = parseUrl(url)
    const { options: normalized, compat } = normalizeArgs(protocolsOrOptions, options, arguments.length)
    if (compat?.shouldReconnectOnClose && normalized.shouldReconnect === undefined) {
      const decide = compat.shouldReconnectOnClose
      normalized.shouldReconnect = (info) =>
        info.kind === 'close' ? decide(new CloseEvent(info.code, info.reason, true, this)) : undefined
    }
    const opts = parseOptions(normalized)
    const signal = opts.signal
    this.#compat = compat
    if (typeof parsed === 'function' || opts.native.providers) {
      this.#providers = { url: parsed, headers: opts.headers, protocols: opts.protocols, proxy: opts.proxy, origin: opts.origin }
    }
    this.#shouldReconnect = opts.shouldReconnect
    this.#binaryType = opts.binaryType
    this.#maxRetries = opts.native.maxRetries
    this.#minUptime = opts.native.minUptime
    const native = opts.native
    if (typeof parsed === 'function') native.providers = true
    else native.proxy = proxyFor(parsed, opts.proxy)
    this.#url = typeof parsed === 'function' ? '' : parsed
    let nativeUrl = this.#url || '(url provider)'
    if (this.#url) ({ url: nativeUrl, headers: native.headers } = splitCredentials(this.#url, native.headers))
    N.clientAttach(this, nativeUrl, native)
    if (signal) {
      if (signal.aborted) return
      // The signal must not keep an abandoned client alive: it holds a weak reference only.
      const ref = new WeakRef(this)
      const onAbort = () => ref.deref()?.disconnect()
      signal.addEventListener('abort', onAbort, { once: true })
      this.#unlistenSignal = () => signal.removeEventListener('abort', onAbort)
    }
    if (!opts.startClosed) this.connect()
  }

  get CONNECTING() {
    return CONNECTING
  }
  get OPEN() {
    return OPEN
  }
  get CLOSING() {
    return CLOSING
  }
  get CLOSED() {
    return CLOSED
  }

  /** The normalised URL ('' before the first attempt in reconnecting-websocket mode, or with a URL provider). */
  get url() {
    return this.#compat && !this.#compat.socketSeen ? '' : this.#url
  }

  get state() {
    return this.#state
  }

  /** WHATWG `readyState`: CONNECTING 0, OPEN 1, CLOSING 2, CLOSED 3 (also while waiting to reconnect). */
  get readyState() {
    return this.#compat?.readyStateOverride ?? READY_STATES[this.#state]
  }

  /** The subprotocol the server selected ('' if none). */
  get protocol() {
    return this.#protocol
  }

  /** Negotiated extensions: always '' (permessage-deflate is not offered). */
  get extensions() {
    return ''
  }

  get metrics() {
    return N.clientMetrics(this)
  }

  /**
   * reconnecting-websocket's counter: the attempts since the last connection
   * that stayed up `minUptime` (or since `reconnect()`), capped at `maxRetries`.
   */
  get retryCount() {
    if (this.#state === 'open' && this.#openedAt && performance.now() - this.#openedAt >= this.#minUptime) {
      this.#retries = 0
    }
    return Math.max(this.#retries, 0)
  }

  /** Whether the client will keep (re)connecting: false once closed by `close()`/`disconnect()` or after giving up. */
  get shouldReconnect() {
    return !this.#closing && this.#state !== 'closed'
  }

  /** How binary messages are delivered: 'nodebuffer' (default), 'arraybuffer' or 'uint8array'. */
  get binaryType() {
    return this.#binaryType
  }

  set binaryType(type) {
    this.#binaryType = checkBinaryType(type)
  }

  /** Bytes accepted by send() and not yet written to the socket (queued or in flight). */
  get bufferedAmount() {
    return N.clientBufferedAmount(this)
  }

  connect() {
    const state = this.#state
    if (state === 'connecting' || state === 'open') return this
    N.clientConnect(this)
    if (state === 'closed') {
      this.#retries = 0
      // A disconnect whose close event was already delivered is over for the user; its promise still settles.
      this.#closing = false
    }
    if (state !== 'closing') this.#state = 'connecting'
    return this
  }

  /**
   * Closes the connection (close handshake with a deadline), cancels any
   * pending reconnect and resolves when nothing of the client is running,
   * with the number of queued messages it discarded (`{ flush: true }` writes
   * them first, within the close deadline, connecting if needed).
   */
  disconnect(code = 1000, reason = '', options = undefined) {
    if (typeof code === 'object' && code !== null) return this.disconnect(code.code, code.reason, code)
    checkClose(code, reason)
    const flush = options?.flush === true
    this.#unlistenSignal?.()
    this.#unlistenSignal = null
    if (!N.clientDisconnect(this, code, reason, flush)) {
      this.#state = 'closed'
      return Promise.resolve({ discarded: N.clientDiscardQueue(this) })
    }
    this.#closing = true
    this.#state = 'closing'
    return new Promise((resolve) => {
      // One waiter (the usual case) is kept as is; an array only for several.
      const w = this.#waiters
      this.#waiters = w === null ? resolve : typeof w === 'function' ? [w, resolve] : (w.push(resolve), w)
    })
  }

  /** The WHATWG name of `disconnect()` (it returns nothing; use `disconnect()` to await). */
  close(code = 1000, reason = '') {
    this.disconnect(code, reason)
  }

  /** Forces a fresh connection now: closes the open one with `code` or cancels the reconnect wait. */
  reconnect(code = 1000, reason = '') {
    checkClose(code, reason)
    const state = this.#state
    const hadConnection = state === 'open' || state === 'connecting' || state === 'closing'
    this.#retries = 0
    if (!N.clientReconnect(this, code, reason)) {
      this.#closing = false
      this.#state = 'closed'
      return this.connect()
    }
    this.#closing = false
    this.#state = state === 'open' ? 'closing' : 'connecting'
    if (this.#compat && hadConnection) {
      // reconnecting-websocket fires its close event right away, with this code and reason.
      this.#compat.suppressClose = true
      this.#fireWithReadyState(CLOSING, new CloseEvent(code, reason, true, this))
    }
    return this
  }

  /**
   * Sends now when open; while connecting or waiting to reconnect, queues
   * (bounded; see the `queue` option). Throws ERR_NOT_OPEN when closed and
   * ERR_QUEUE_FULL when the queue refuses the message.
   */
  send(data) {
    let outcome
    if (typeof data === 'string') outcome = N.clientSendText(this, data)
    else if (Buffer.isBuffer(data)) outcome = N.clientSendBinary(this, data)
    else if (ArrayBuffer.isView(data)) outcome = N.clientSendBinary(this, Buffer.from(data.buffer, data.byteOffset, data.byteLength))
    else if (data instanceof ArrayBuffer) outcome = N.clientSendBinary(this, Buffer.from(data))
    else {
      const got = data === null ? 'null' : typeof data
      throw makeError('ERR_INVALID_ARG_TYPE', `send() takes a string, Buffer, ArrayBufferView or ArrayBuffer. Received ${got}`, TypeError)
    }
    if (outcome === SENT_CORKED) return void queueMicrotask(() => uncork(this))
    if (outcome === SENT_NOT_OPEN || outcome === SENT_NOT_CONNECTED) {
      // The native side ended the connection (or gave up) before JS has seen that event: a
      // send() made while the client still looked open (or, with the queue on, connecting) must
      // not throw. Nothing wrote the message and nothing will: it is reported like any message
      // a closed client drops.
      const looksUsable = outcome === SENT_NOT_OPEN ? this.#state !== 'closed' : this.#state === 'open'
      if (looksUsable && !this.#closing) return void this.emit('drop', { reason: 'closed', messages: [data] })
      throw makeError('ERR_NOT_OPEN', `Cannot send: the connection is ${this.#state}`)
    }
    if (outcome === SENT_QUEUE_FULL) {
      // reconnecting-websocket drops the new message silently past maxEnqueuedMessages: we drop it loudly.
      if (this.#compat?.dropNewest) return void this.emit('drop', { reason: 'overflow', messages: [data] })
      throw makeError('ERR_QUEUE_FULL', 'Cannot send: the offline queue is full')
    }
    if (outcome === SENT_DROPPING) this.emit('drop', { reason: 'overflow', messages: N.clientTakeDropped(this) })
  }

  /** Sends a ping frame (payload up to 125 bytes). Throws ERR_NOT_OPEN when not open. */
  ping(data = EMPTY) {
    const buf = typeof data === 'string' ? Buffer.from(data) : Buffer.isBuffer(data) ? data : Buffer.from(data)
    if (buf.length > 125) throw makeError('ERR_OUT_OF_RANGE', 'A ping payload must be at most 125 bytes', RangeError)
    if (!N.clientPing(this, buf)) throw makeError('ERR_NOT_OPEN', `Cannot ping: the connection is ${this.#state}`)
  }

  /** Hands back the queued, unsent messages (oldest first) and empties the queue. */
  drainQueue() {
    return N.clientDrainQueue(this)
  }

  /** partysocket's name for `drainQueue()`. */
  drainQueuedMessages() {
    return this.drainQueue()
  }

  /** Lets this client keep the process alive while it is active (the default). */
  ref() {
    N.clientSetRef(this, true)
    return this
  }

  /** Lets the process exit even while this client is connected or waiting to reconnect. */
  unref() {
    N.clientSetRef(this, false)
    return this
  }

  /**
   * `for await (const data of client.messages())`: messages as they arrive, with
   * backpressure: past `highWaterMark` buffered messages the socket stops being
   * read until the consumer catches up. The loop ends when the client closes
   * for good (disconnect() or giving up). A pending read keeps the client alive,
   * also between connections.
   */
  messages({ highWaterMark = 1024 } = {}) {
    if (!Number.isInteger(highWaterMark) || highWaterMark < 1) {
      throw makeError('ERR_OUT_OF_RANGE', `highWaterMark must be an integer >= 1. Received ${String(highWaterMark)}`, RangeError)
    }
    const buffer = []
    let waiter = null
    let ended = false
    let paused = false
    const pause = (on) => {
      if (paused === on) return
      paused = on
      this.#pausers += on ? 1 : -1
      N.clientPauseReading(this, this.#pausers > 0)
    }
    const settle = (result) => {
      const resolve = waiter
      waiter = null
      N.clientHold(this, false)
      resolve(result)
    }
    const onMessage = (data) => {
      if (waiter) return settle({ value: data, done: false })
      buffer.push(data)
      if (buffer.length >= highWaterMark) pause(true)
    }
    const onClose = (ev) => {
      if (!ev.willReconnect && this.#state === 'closed') finish()
    }
    const onIdle = () => {
      if (this.#state === 'closed') finish()
    }
    const finish = () => {
      if (ended) return
      ended = true
      this.off('message', onMessage)
      this.off('close', onClose)
      this.off('giveup', onIdle)
      pause(false)
      if (waiter) settle({ value: undefined, done: true })
    }
    this.on('message', onMessage)
    this.on('close', onClose)
    this.on('giveup', onIdle)
    if (this.#state === 'closed' && !N.clientActive(this)) finish()
    return {
      next: () => {
        if (buffer.length) {
          const value = buffer.shift()
          if (paused && buffer.length <= highWaterMark >> 1) pause(false)
          return Promise.resolve({ value, done: false })
        }
        if (ended) return Promise.resolve({ value: undefined, done: true })
        if (waiter) return Promise.reject(makeError('ERR_INVALID_STATE', 'messages(): next() called while a read is pending'))
        N.clientHold(this, true)
        return new Promise((resolve) => (waiter = resolve))
      },
      return: () => {
        finish()
        buffer.length = 0
        return Promise.resolve({ value: undefined, done: true })
      },
      [Symbol.asyncIterator]() {
        return this
      },
    }
  }

  // WHATWG listeners, beside the EventEmitter ones.

  addEventListener(type, listener, options) {
    ;(this.#listeners ??= new Listeners(!this.#compat)).add(type, listener, options)
  }

  removeEventListener(type, listener) {
    this.#listeners?.remove(type, listener)
  }

  /** Delivers `event` to the addEventListener listeners of its type. */
  dispatchEvent(event) {
    this.#listeners?.dispatch(event, this, rethrowLater)
    return true
  }

  get onopen() {
    return this.#on?.open ?? null
  }
  set onopen(fn) {
    this.#handlers().open = typeof fn === 'function' ? fn : null
  }
  get onmessage() {
    return this.#on?.message ?? null
  }
  set onmessage(fn) {
    this.#handlers().message = typeof fn === 'function' ? fn : null
  }
  get onclose() {
    return this.#on?.close ?? null
  }
  set onclose(fn) {
    this.#handlers().close = typeof fn === 'function' ? fn : null
  }
  get onerror() {
    return this.#on?.error ?? null
  }
  set onerror(fn) {
    this.#handlers().error = typeof fn === 'function' ? fn : null
  }

  /** The on<type> handlers, created when one is first set. */
  #handlers() {
    return (this.#on ??= { open: null, message: null, close: null, error: null })
  }

  #wants(type) {
    return (this.#on !== null && this.#on[type] !== null) || this.#listeners?.has(type) === true
  }

  /** `on<type>` first, then the listeners (reconnecting-websocket's order). */
  #fire(event) {
    const handler = this.#on?.[event.type]
    if (handler) {
      try {
        handler.call(this, event)
      } catch (err) {
        rethrowLater(err)
      }
    }
    this.#listeners?.dispatch(event, this, rethrowLater)
  }

  /** reconnecting-websocket mode only. */
  #fireWithReadyState(readyState, event) {
    this.#compat.readyStateOverride = readyState
    try {
      this.#fire(event)
    } finally {
      this.#compat.readyStateOverride = undefined
    }
  }

  // Fixed arguments rather than a rest array: called on every event, and usually disabled.
  #debug(what, a, b) {
    if (this.#compat?.debug) {
      const args = ['RWS>', what]
      if (a !== undefined) args.push(a)
      if (b !== undefined) args.push(b)
      this.#compat.log(...args)
    }
    if (debug.enabled) {
      // Never the password: the URL is logged with its credentials masked.
      const url = redactUrl(this.#url)
      debug('%s %s', url, [what, a, b].filter((v) => v !== undefined).join(' '))
    }
  }

  [kOnEvent](tag, p) {
    switch (tag) {
      case T_TEXT_BATCH:
        this.#textBatch(p)
        return
      case T_BINARY: {
        const data = convertBinary(p, this.#binaryType)
        this.emit('message', data, true)
        if (this.#wants('message')) this.#fire(new MessageEvent(data, this))
        return
      }
      case T_CONNECTING:
        if (this.#compat) this.#compat.socketSeen = true
        if (!this.#closing) this.#state = 'connecting'
        this.#debug('connect', this.retryCount)
        return
      case T_OPEN:
        this.#protocol = p
        this.#openedAt = performance.now()
        if (!this.#closing) this.#state = 'open'
        this.#debug('open')
        if (channels.open.hasSubscribers) channels.open.publish({ client: this, protocol: p })
        this.emit('open')
        if (this.#wants('open')) this.#fire(new Event('open', this))
        return
      case T_ERROR: {
        // A failure that is retried must not crash a program that did not listen for errors.
        const err = fromNative(p)
        this.#debug('error', err.message)
        if (channels.error.hasSubscribers) channels.error.publish({ client: this, error: err })
        if (this.listenerCount('error') > 0) this.emit('error', err)
        if (this.#compat) this.#compat.pendingError = err
        else if (this.#wants('error')) this.#fire(new ErrorEvent(err, this))
        return
      }
      case T_CLOSE:
        this.#onClose(p)
        return
      case T_RECONNECTING:
        if (!this.#closing) this.#state = 'reconnecting'
        this.#debug('reconnecting', p.attempt, p.delay)
        if (channels.reconnecting.hasSubscribers) channels.reconnecting.publish({ client: this, ...p })
        this.emit('reconnecting', p)
        return
      case T_GIVEUP:
        if (!this.#closing) this.#state = 'closed'
        if (p.lastError) p.lastError = fromNative(p.lastError)
        this.#debug('giveup', p.reason)
        if (channels.giveup.hasSubscribers) channels.giveup.publish({ client: this, ...p })
        this.emit('giveup', p)
        return
      case T_PING:
        this.emit('ping', p)
        return
      case T_PONG:
        this.emit('pong', p)
        return
      case T_PROVIDE:
        this.#provide(p.id, p.attempt)
        return
      case T_DECIDE:
        this.#decide(p)
        return
      case T_DISCONNECTED:
        this.#settleDisconnect(p)
        return
      case T_IDLE: {
        // `gen` alone, or `{ gen, discarded }` when a disconnect discarded queued messages. The exit
        // report of a driver that connect() has since replaced only settles a pending disconnect.
        const gen = typeof p === 'number' ? p : p.gen
        const discarded = typeof p === 'number' ? 0 : p.discarded
        if (gen !== N.clientGeneration(this)) this.#resolveWaiters(discarded)
        else this.#settleDisconnect(discarded)
        return
      }
    }
  }

  /** `[count: u32][end: u32 x count][utf-8 bytes]` (src/delivery.rs): one string per message, made here. */
  #textBatch(buf) {
    const count = buf.readUInt32LE(0)
    let start = 4 * (count + 1)
    for (let i = 1; i <= count; i++) {
      const end = buf.readUInt32LE(4 * i)
      const text = buf.utf8Slice(start, end)
      start = end
      // Each message on its own: a throwing listener must not lose the rest of the batch.
      try {
        this.emit('message', text, false)
        if (this.#wants('message')) this.#fire(new MessageEvent(text, this))
      } catch (err) {
        rethrowLater(err)
      }
    }
  }

  #onClose(p) {
    const byUser = this.#closing
    if (byUser) {
      // The connection is gone; what is left (settling the disconnect) is not observable as "closing".
      if (!p.willReconnect) this.#state = 'closed'
    } else {
      this.#state = p.willReconnect ? 'reconnecting' : 'closed'
      // reconnecting-websocket counts the next attempt before its close handlers run.
      this.#retries = Math.min(this.#retries + 1, this.#maxRetries)
    }
    this.#openedAt = 0
    this.#debug('close', p.code, p.reason)
    if (channels.close.hasSubscribers) channels.close.publish({ client: this, ...p })
    this.emit('close', p)
    if (!this.#compat) {
      if (this.#wants('close')) this.#fire(new CloseEvent(p.code, p.reason, p.wasClean, this))
      return
    }
    const compat = this.#compat
    const error = compat.pendingError
    compat.pendingError = null
    if (compat.suppressClose) {
      // reconnect() already fired this close.
      compat.suppressClose = false
      if (error && this.#wants('error')) this.#fireWithReadyState(CLOSING, new ErrorEvent(error, this))
      return
    }
    if (error) {
      // reconnecting-websocket closes a failed socket itself: a clean 1000 close, then the error.
      const reason = error.code === 'ERR_CONNECT_TIMEOUT' ? 'timeout' : ''
      if (this.#wants('close')) this.#fireWithReadyState(CLOSING, new CloseEvent(1000, reason, true, this))
      if (this.#wants('error')) {
        const message = error.code === 'ERR_CONNECT_TIMEOUT' ? 'TIMEOUT' : error.message
        this.#fireWithReadyState(CLOSING, new ErrorEvent(Object.assign(new Error(message), { code: error.code }), this))
      }
      return
    }
    if (this.#wants('close')) this.#fire(new CloseEvent(p.code, p.reason, p.wasClean, this))
  }

  #settleDisconnect(discarded) {
    if (this.#closing) {
      this.#closing = false
      this.#state = 'closed'
    }
    this.#resolveWaiters(discarded)
  }

  #resolveWaiters(discarded) {
    const waiters = this.#waiters
    this.#waiters = null
    if (typeof waiters === 'function') waiters({ discarded })
    else if (waiters) for (const resolve of waiters) resolve({ discarded })
  }

  /** Runs the url/headers/protocols providers for one attempt; the native side bounds the wait. */
  async #provide(id, attempt) {
    const ctx = { attempt }
    try {
      const { url: u, headers: h, protocols: pr, proxy, origin } = this.#providers
      const url = typeof u === 'function' ? parseUrl(await u(ctx)) : u
      if (typeof url !== 'string') throw makeError('ERR_INVALID_URL', 'The url provider must return a string or a URL', TypeError)
      const headers = typeof h === 'function' ? await h(ctx) : h
      if (headers !== undefined) checkHeaders(headers, 'headers (from the provider)')
      const protocols = typeof pr === 'function' ? await pr(ctx) : pr
      if (protocols !== undefined && protocols !== null) checkProtocols(protocols, 'protocols (from the provider)')
      this.#url = url
      const bare = splitCredentials(url, flattenHeaders(headers, origin))
      N.clientProvide(this, id, bare.url, bare.headers, toProtocols(protocols ?? undefined), proxyFor(url, proxy))
    } catch (err) {
      const why = redactText(err instanceof Error ? err.message : String(err))
      N.clientProvideError(this, id, `a provider failed: ${why}`)
    }
  }

  /** Asks the user's shouldReconnect; `undefined`, a throw or a rejection keep the default verdict. */
  #decide({ id, info, default: fallback }) {
    const answer = (v) => N.clientDecide(this, id, v === undefined ? fallback : !!v)
    const fail = (err) => {
      N.clientDecide(this, id, fallback)
      rethrowLater(err)
    }
    let verdict
    try {
      verdict = this.#shouldReconnect(info)
    } catch (err) {
      return fail(err)
    }
    if (verdict && typeof verdict.then === 'function') verdict.then(answer, fail)
    else answer(verdict)
  }
}

module.exports = { ReconnectingWebSocket, Event, MessageEvent, CloseEvent, ErrorEvent }
