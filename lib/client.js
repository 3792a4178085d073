'use strict'
// The public client. It owns no timer, socket or buffer: those live in Rust
// (src/). It forwards calls to the addon and turns the addon's events
// (lib/wire.js) into EventEmitter and WHATWG events; what it shows (`state`,
// `readyState`, `retryCount`) follows those events.

const { EventEmitter } = require('node:events')
// `N.client*(client, ...)`: the native state is wrapped onto the client object itself (src/client.rs).
const N = require('./native')
const { makeError, fromNative, redactUrl, gaveUpError, notSent, textOf } = require('./errors')
const { Asked } = require('./asked')
const {
  parseOptions,
  checkHeaders,
  flattenHeaders,
  checkProtocols,
  toProtocols,
  checkBinaryType,
  configKey,
  DEFAULTS,
} = require('./options')
const { parseUrl, splitCredentials } = require('./url')
const { proxyFor } = require('./proxy')
const { warnUnverified } = require('./tls')
const { checkClose, withSendOptions, checkSendOptions, bytesOf } = require('./arguments')
const { FragmentedMessage } = require('./fragments')
const { HeldSends, WAITING, READY, isBlob } = require('./held')
const { Backlog } = require('./backlog')
const { Event, MessageEvent, CloseEvent, ErrorEvent, Surface } = require('./whatwg')
const wire = require('./wire')
const { normalizeArgs, inTheirNames, PEER_ERRORS } = require('./rws')
const { messageIterator } = require('./messages')
const { webSocketStream } = require('./stream')
const { channels, trace, tracing } = require('./diagnostics')
const { parseResponseHead, headersFrom } = require('./response')
const { onAbortDisconnect } = require('./abort')

const { convertBinary } = wire
// Not the global that test fake timers replace: a replay must not wait for a fake clock.
const { rethrowLater, setImmediate } = require('./later')
const { corkUntilTurnEnd } = require('./cork')
const { FATES, callLater, runDueCallbacks } = require('./callbacks')
const {
  notOpen: SENT_NOT_OPEN,
  queueFull: SENT_QUEUE_FULL,
  dropping: SENT_DROPPING,
  corked: SENT_CORKED,
  notConnected: SENT_NOT_CONNECTED,
  sent: SENT,
  handed: SENT_HANDED,
} = wire.SEND

/**
 * A disconnect() call is done: the callbacks of the messages it discarded on the JS side (see
 * `discardedInJs`) run after the queue's, then it resolves. `waiter.already`: what its call
 * discarded when it was made (the driver had exited).
 */
function settleWaiter(waiter, discarded) {
  const left = waiter.left
  if (left !== null) callLater(left.callbacks, notSent('discarded'))
  waiter.resolve({ discarded: (waiter.already ?? discarded) + (left === null ? 0 : left.count) })
}

/**
 * What a disconnect() discards that never reached the addon, sent after everything the addon
 * holds: the messages waiting for a Blob's bytes (terminate()), then a message whose last piece has
 * not come. `{ callbacks, count }`, or null for none.
 */
function discardedInJs(held, pieces) {
  if (held === null && pieces === null) return null
  const callbacks = []
  let count = 0
  for (const message of held ?? []) {
    const control = message.control
    if (control === undefined) {
      count++
      if (message.callback !== undefined) callbacks.push(message.callback)
    } else if (message.callback !== undefined) {
      // A ping or pong held: not a message of the queue, and its connection is going.
      const callback = message.callback
      callbacks.push(() => callback(notSent('closed', undefined, control.what)))
    }
  }
  if (pieces !== null) {
    count++
    callbacks.push(pieces)
  }
  return { callbacks, count }
}

/**
 * What a client keeps of its options only when they are not the defaults (a field on every client
 * would cost a fleet): `{ unqueued, closeTimeout }`, for sends held behind a Blob.
 */
const UNUSUAL = new WeakMap()

/**
 * On a class's prototype (lib/websocket.js): a client of one connection, as `ws`'s WebSocket. Its
 * WHATWG `error` events are `ws`'s, so an open connection that ends without a close frame (a reset,
 * the server gone, the heartbeat's timeout) is reported by its close alone (1006), as `ws` and the
 * DOM report it; only a broken protocol or limit fires `error` too (the EventEmitter `error` event
 * still carries every error). Its close is final: what its queue still holds when it gives up will
 * never be sent, and is handed back at once (`drop`, callbacks told 'closed'), as `ws` fails the
 * sends of a socket that closed.
 */
const ONE_CONNECTION = Symbol('redial-ws: one connection')

/**
 * Where the application made a client (the stack below its constructor), named by the warning of a
 * client collected without disconnect(): taken only under --trace-warnings, since a stack costs.
 * '' when it cannot be taken (an Error.prepareStackTrace that throws or makes no string, or
 * Error.stackTraceLimit 0): a diagnostic never fails the constructor.
 */
function creationSite(constructor) {
  let stack
  try {
    const site = {}
    Error.captureStackTrace(site, constructor)
    stack = site.stack
  } catch {
    return ''
  }
  if (typeof stack !== 'string' || !stack.includes('\n')) return ''
  return stack.slice(stack.indexOf('\n') + 1)
}

function checkCallback(callback) {
  if (typeof callback !== 'function') {
    throw makeError('ERR_INVALID_ARG_TYPE', `send()'s callback must be a function. Received ${callback === null ? 'null' : typeof callback}`, TypeError)
  }
}

/** The data send() takes, as the addon takes it (a string or a Buffer over the same bytes). */
function sendable(data) {
  if (typeof data === 'string') return data
  const bytes = bytesOf(data, 'send()')
  if (bytes === null) throw sendTypeError(data)
  return bytes
}

/** A piece of a message (send() with fin: false), as FragmentedMessage takes it: a Blob is one. */
function pieceOf(data) {
  return data instanceof Blob ? data : sendable(data)
}

function sendTypeError(data) {
  if (isBlob(data)) return makeError('ERR_INVALID_ARG_TYPE', 'Only a Blob, not an object of its shape, can be a piece of a message (fin: false): send it whole, or new Blob([await data.arrayBuffer()])', TypeError)
  const got = data === null ? 'null' : typeof data
  return makeError('ERR_INVALID_ARG_TYPE', `send() takes a string, Buffer, ArrayBufferView, ArrayBuffer, SharedArrayBuffer or Blob. Received ${got}`, TypeError)
}

const NO_COMPRESSION = Object.freeze({ compress: false })
/** `#sent()`'s answer for a held message the addon did not take: it waits (lib/held.js). */
const KEPT = 'kept'

const CONNECTING = 0
const OPEN = 1
const CLOSING = 2
const CLOSED = 3
/**
 * The client whose connection's `error` is being delivered, or null: its readyState reads CLOSING
 * meanwhile, as ws's does (a module variable, not a field: a fleet pays nothing for it).
 */
let failing = null

/** `#closing` when disconnect() was called while connecting. */
const BEFORE_OPEN = 'before-open'
/** `#closing` once nothing more of the connections being closed is reported. */
const QUIET = 'quiet'
/** `#silentUntilIdle`: one close is still to be reported. */
const AFTER_CLOSE = 'after-close'

/** Whether events of the connection under way are not reported (`#closing`: see there). */
function silenced(closing) {
  return closing === BEFORE_OPEN || closing === QUIET
}
const NO_VERDICT = 0
const VERDICT_PENDING = 1
const CALLED_DURING_VERDICT = 2
const READY_STATES = { connecting: CONNECTING, open: OPEN, closing: CLOSING, reconnecting: CLOSED, closed: CLOSED }

const EMPTY = Buffer.alloc(0)

/** As Node's own APIs reject on an abort: an `AbortError` (code `ABORT_ERR`) caused by the signal's reason. */
function abortError(signal) {
  return makeError('ABORT_ERR', 'The operation was aborted', Error, { name: 'AbortError', cause: signal.reason })
}

/** The client's read controls, for `createWebSocketStream` (null for anything that is not a client; set by the class). */
let readControlOf = null

/** The client's sends waiting for a Blob's bytes (lib/held.js), or null (also for anything that is not a client; set by the class). */
let heldOf = null

/** Emitted by `disconnect()` for pending `opened()` calls (a symbol: no user sees it). */
const kDisconnecting = Symbol('redial-ws.disconnecting')
/** A disconnect() settled and left the client closed (no close event marks it when it came during a backoff wait). */
const kClosed = Symbol('redial-ws.closed')
/** `open` and `giveup` for `opened()`, streams and `messages()`, after the users' listeners: one of theirs that throws skips later ones. */
const kOpened = Symbol('redial-ws.opened')
// Each message and close, for messages() and createWebSocketStream(): on the private emitter too,
// so that removeAllListeners() strands none of them and any number raises no leak warning.
const kMessage = Symbol('redial-ws.message')
const kClose = Symbol('redial-ws.close')
const kGaveUp = Symbol('redial-ws.gaveUp')

// EventEmitter starts `_events` as a null-prototype literal, which V8 keeps in dictionary
// mode. EventEmitter only reads own keys and `events[type]`, so an object over an empty,
// frozen, null-prototype prototype behaves the same, stays in fast mode and shares its
// shape with every other client's (a fleet has one client per connection).
const NO_EVENTS = Object.freeze(Object.create(null))

/**
 * A ping's or pong's payload as bytes: at most 125 (RFC 6455 section 5.5). As in ws, a number is
 * sent as its decimal text, and null or undefined as no payload.
 */
function controlPayload(what, data) {
  if (data === undefined || data === null) return EMPTY
  // A Blob's bytes come later (ping() sends it then); its size is checked now, as ws checks it.
  if (isBlob(data)) {
    if (data.size > 125) throw makeError('ERR_OUT_OF_RANGE', `A ${what} payload must be at most 125 bytes`, RangeError)
    return data
  }
  if (typeof data === 'number') data = String(data)
  let buf
  if (typeof data === 'string') buf = Buffer.from(data)
  // A typed array's bytes, not its elements.
  else if ((buf = bytesOf(data, `${what}()`)) === null) {
    const got = typeof data === 'object' ? (data.constructor?.name ?? 'object') : typeof data
    throw makeError('ERR_INVALID_ARG_TYPE', `${what}() takes a string, number, Buffer, ArrayBufferView, ArrayBuffer, SharedArrayBuffer or Blob. Received ${got}`, TypeError)
  }
  if (buf.length > 125) throw makeError('ERR_OUT_OF_RANGE', `A ${what} payload must be at most 125 bytes`, RangeError)
  return buf
}

/**
 * Which connection of which driver the client has (or last had): a ping(blob) goes on that one only.
 * (The addon refuses what is not a client, as for any ping.)
 */
function connectionOf(client) {
  return `${N.clientGeneration(client)}:${N.clientMetrics(client).connects}`
}

/** Hands a ping or pong (`what`) to the client's connection: false when it has none open. */
function sendControl(client, what, payload) {
  return what === 'ping' ? N.clientPing(client, payload) : N.clientPong(client, payload)
}

/** ws's `ping(data?, mask?, callback?)` and `ping(callback)`, checked: `{ payload, callback }`. */
function controlArgs(what, data, mask, callback) {
  if (typeof data === 'function') [data, mask, callback] = [undefined, undefined, data]
  else if (typeof mask === 'function') [mask, callback] = [undefined, mask]
  if (callback === null) callback = undefined
  if (callback !== undefined && typeof callback !== 'function') {
    throw makeError('ERR_INVALID_ARG_TYPE', `The ${what}() callback must be a function`, TypeError)
  }
  if (mask === false) throw makeError('ERR_INVALID_ARG_VALUE', `${what}() with mask false is not allowed: a client masks every frame (RFC 6455)`, TypeError)
  return { payload: controlPayload(what, data), callback }
}

class ReconnectingWebSocket extends EventEmitter {
  // Few fields on purpose: a fleet has one of these per connection. What only some clients
  // need lives in objects that only they have (`#providers`, `#rws`, `#whatwg`).
  #url
  /** With per-attempt providers: `{ url, headers, protocols, proxy, origin }` as given. */
  #providers = null
  #shouldReconnect
  /** Functions the addon asks during attempts, `{ lookup, hints, checkServerIdentity, ca }`, or null without either. */
  #asked = null
  #binaryType
  #maxRetries
  #minUptime
  /** 'connecting' | 'open' | 'closing' | 'reconnecting' | 'closed', as of the last event (or call) JS has seen. */
  #state = 'closed'
  /**
   * The open connection is gone and `shouldReconnect` is deciding what follows (its close waits
   * for the verdict): `NO_VERDICT`, `VERDICT_PENDING`, or `CALLED_DURING_VERDICT` once a connect()
   * or reconnect() came meanwhile, which starts the next attempt at once. `#state` stays 'open'
   * until that close; the client reads 'reconnecting' meanwhile, as it does without a policy.
   */
  #verdict = NO_VERDICT
  /** connect() was called once (by the constructor, unless `startClosed`). */
  #started = false
  /** What the last handshake chose: the subprotocol, or `{ protocol, extensions }` with an extension. */
  #chosen = ''
  /**
   * A disconnect() is in progress: events it overtook do not move the state away from 'closing',
   * and no connection is reported open (`#onOpen`).
   * `BEFORE_OPEN` when it came while connecting: as for ws, that attempt never opens (its `open`,
   * should the server's answer have come meanwhile, is not reported); its close is reported as it
   * went (1006 for an attempt cut short; a close handshake, or the server's close, if it had opened).
   * `QUIET` when it came between connections (the user saw the last close), and once the close it
   * caused was reported: the driver, which may be behind JS, can have started an attempt before it
   * took the call, or makes one to write the queue with `flush`; nothing of that attempt is
   * reported (no upgrade, open, message, error or close), nor a `reconnecting` while any
   * disconnect() is in progress.
   */
  #closing = false
  /** connect() was called while closing: the client connects again once the close is done. */
  #connectAfterClose = false
  /** The connection under way opened while a disconnect() was unsettled: until its close, nothing it reads is reported, as its open was not. */
  #unannounced = false
  /** Why a closed client stopped, for opened(): `{ giveup }` (its event's payload), `'disconnected'`, or null. */
  #ended = null
  /** A WebSocket failed its connection (the peer broke the protocol or a limit): its close, if not clean, reads 1006. */
  #failedIt = false
  /** The open connection began its close handshake (the peer's close answered, or the client failed it): readyState reads CLOSING until its close, as ws's does. */
  #handshakeClosing = false
  /** The last driver started has reported its exit to JS (or none was started): no event of it is to come. */
  #driverDone = true
  /**
   * A disconnect() found the driver gone before JS saw all it reported (a batch being delivered
   * holds its close, a giveup): until its exit report, nothing more of it is reported, as after a
   * disconnect() the driver took (`true`), but for the close of the attempt or connection under way
   * at the call (`AFTER_CLOSE` until then), the last event.
   */
  #silentUntilIdle = false
  /** Such a disconnect() ended the client: its readers end at the exit report (unless a connect() came). */
  #endReadersAtIdle = false
  /** A pending disconnect() call (`{ seq, resolve }`), an array of them for several, or null. */
  #waiters = null
  /** The native machine's count of consecutive failures, as its last event reported it. */
  #retries = 0
  /**
   * The native count of connect() and reconnect() calls, as the latest returned it: a `close` and
   * a `reconnecting` carry the count their driver had taken, and the wait they announce is over if
   * it is not the latest (that call ended it, though its events reached JS after the call).
   */
  #restarts = 0
  /** The giveup whose application listeners are running (for a disconnect() they call: `#disconnect`). */
  #givingUp = null
  #openedAt = 0
  /** reconnecting-websocket mode (lib/rws.js), or null. */
  #rws
  /** addEventListener listeners and on<type> handlers (lib/whatwg.js), or null. */
  #whatwg = null
  #unlistenSignal = null
  /** The `signal` option: listened to while the client is connecting or connected. */
  #signal = null
  /** Number of messages() iterators over their high-water mark, and pause(): reading is paused while > 0. */
  #pausers = 0
  #paused = false
  /** What pause() holds back (lib/backlog.js), until resume() has delivered it; null when nothing is held. */
  #backlog = null
  /** send() callbacks: `{ byTicket, last }`, for messages whose fate the addon reports; null until the first. */
  #callbacks = null
  /** A message sent in pieces (`fin: false`) whose last piece is still to come. */
  #fragments = null
  /** Sends waiting for a Blob's bytes, and what was sent and called after it (lib/held.js), or null. */
  #held = null
  /**
   * The events of `opened()`, `messages()` and streams (an EventEmitter made on first use, null
   * until then): not the client's own, so that `removeAllListeners()` cannot strand them, and
   * any number of waits raises no leak warning.
   */
  #internal = null

  /**
   * `new ReconnectingWebSocket(url, options?)`, or reconnecting-websocket's
   * `new ReconnectingWebSocket(url, protocols?, options?)`.
   */
  constructor(url, protocolsOrOptions, options) {
    super()
    this._events = Object.create(NO_EVENTS)
    const parsed = parseUrl(url)
    const { options: normalized, rws, renamed } = normalizeArgs(protocolsOrOptions, options, arguments.length, this)
    let opts
    try {
      opts = parseOptions(normalized, rws !== null, this[ONE_CONNECTION] === true)
    } catch (err) {
      throw inTheirNames(err, renamed ?? null)
    }
    const signal = opts.signal
    this.#rws = rws
    if (typeof parsed === 'function' || opts.native.providers) {
      this.#providers = { url: parsed, headers: opts.headers, protocols: opts.protocols, proxy: opts.proxy, origin: opts.origin }
    }
    this.#shouldReconnect = opts.shouldReconnect
    if (opts.lookup !== undefined || opts.tls.checkServerIdentity !== undefined) {
      this.#asked = new Asked({ lookup: opts.lookup, hints: opts.hints, checkServerIdentity: opts.tls.checkServerIdentity, ca: opts.tls.ca, caOnly: opts.tls.caOnly })
    }
    this.#binaryType = opts.binaryType
    this.#maxRetries = opts.native.maxRetries
    this.#minUptime = opts.native.minUptime
    const native = opts.native
    if (typeof parsed === 'function') native.providers = true
    else native.proxy = proxyFor(parsed, opts.proxy)
    this.#url = typeof parsed === 'function' ? '' : parsed
    let nativeUrl = this.#url || '(url provider)'
    if (this.#url) ({ url: nativeUrl, headers: native.headers } = splitCredentials(this.#url, native.headers))
    N.clientAttach(this, nativeUrl, configKey(nativeUrl, native), native, process.traceProcessWarnings === true ? creationSite(new.target) : undefined)
    // As Node warns at its first tls.connect: for a client that may make a TLS connection.
    if (opts.tls.unverifiedByEnvironment && (typeof parsed === 'function' || parsed.startsWith('wss:') || native.maxRedirects !== undefined)) warnUnverified()
    if (!native.queueEnabled || native.closeTimeout !== DEFAULTS.closeTimeout) {
      UNUSUAL.set(this, { unqueued: !native.queueEnabled, closeTimeout: native.closeTimeout })
    }
    if (signal) {
      // As disconnect() before a connect(): opened() rejects, messages() ends.
      if (signal.aborted) {
        this.#ended = 'disconnected'
        // A WebSocket reports that it never opened, as ws's does (close 1006), to those waiting
        // for its end (unless connect() came first).
        if (this[ONE_CONNECTION]) process.nextTick(() => this.#ended === 'disconnected' && this.#reportClose({ code: 1006, reason: '', wasClean: false, willReconnect: false }, false))
        return
      }
      this.#signal = signal
      this.#listenToSignal()
    }
    if (!opts.startClosed) this.connect()
  }

  /**
   * The normalised URL ('' before the first attempt in reconnecting-websocket mode, or with a URL
   * provider), its credentials masked (`user:***@`, a lone user name as `***`): a URL is shown in
   * logs, and an event's `target` or a diagnostics subscriber's `client` hands it to anyone.
   */
  get url() {
    const url = this.#url.includes('@') ? redactUrl(this.#url) : this.#url
    return this.#rws ? this.#rws.url(url) : url
  }

  get state() {
    // A disconnect() waiting behind a Blob's bytes has been called all the same.
    if (this.#held?.closing > 0) return 'closing'
    return this.#verdict !== NO_VERDICT && this.#state === 'open' ? 'reconnecting' : this.#state
  }

  /** WHATWG `readyState`: CONNECTING 0, OPEN 1, CLOSING 2, CLOSED 3 (also while waiting to reconnect). */
  get readyState() {
    if (failing === this || this.#held?.closing > 0) return CLOSING
    return this.#rws?.readyStateOverride ?? (this.#handshakeClosing ? CLOSING : READY_STATES[this.state])
  }

  /** The subprotocol the server selected ('' if none, and while the next connection is being made). */
  get protocol() {
    const chosen = this.#chosen
    return typeof chosen === 'string' ? chosen : chosen.protocol
  }

  /**
   * The extensions the server accepted, as its `Sec-WebSocket-Extensions` answer says
   * (e.g. `'permessage-deflate; client_max_window_bits=15'`), or ''.
   */
  get extensions() {
    const chosen = this.#chosen
    const extensions = typeof chosen === 'string' ? '' : chosen.extensions
    return this.#rws ? this.#rws.extensions(extensions) : extensions
  }

  get metrics() {
    return N.clientMetrics(this)
  }

  /**
   * reconnecting-websocket's counter: the failed attempts since the last connection
   * that stayed up `minUptime` (or since `connect()`/`reconnect()`), capped at `maxRetries`.
   */
  get retryCount() {
    // Their timer resets the count once the connection has lasted minUptime; the native
    // machine counts the same way but can only say so when the connection ends.
    const shown = this.#rws?.retryCountOverride
    if (shown !== undefined) return shown
    if (this.#upMinUptime()) return 0
    return Math.min(this.#retries, this.#maxRetries)
  }

  /** The connection that opened last is still up (or closing) and has lasted `minUptime`. */
  #upMinUptime() {
    return this.#openedAt !== 0 && performance.now() - this.#openedAt >= this.#minUptime
  }

  /** Whether the client will keep (re)connecting: false once closed by `close()`/`disconnect()` or after giving up. */
  get shouldReconnect() {
    return !this.#closing && this.#state !== 'closed' && !(this.#held?.closing > 0)
  }

  /** How binary messages are delivered: 'nodebuffer' (default), 'arraybuffer', 'uint8array' or 'fragments'. */
  get binaryType() {
    return this.#binaryType
  }

  set binaryType(type) {
    this.#binaryType = checkBinaryType(type)
  }

  /** Bytes accepted by send() and not yet written to the socket (queued or in flight). */
  get bufferedAmount() {
    return N.clientBufferedAmount(this) + (this.#fragments?.bytes ?? 0) + (this.#held?.bytes ?? 0)
  }

  /** The emitter of the internal events (`#internal`), made on first use. */
  #internalEvents() {
    if (this.#internal === null) {
      this.#internal = new EventEmitter()
      this.#internal.setMaxListeners(0)
    }
    return this.#internal
  }

  /** Listens to the `signal` option, unless it does already or the signal has aborted. */
  #listenToSignal() {
    const signal = this.#signal
    if (signal === null || this.#unlistenSignal !== null || signal.aborted) return
    // Weakly: the signal must not keep an abandoned client alive (lib/abort.js).
    this.#unlistenSignal = onAbortDisconnect(signal, this)
  }

  connect() {
    const held = this.#held
    if (held !== null && held.calls > 0 && !held.stalled) {
      // After a disconnect() that waits behind a Blob's bytes: made in its turn.
      held.refusing = false
      held.holdCall({ run: () => this.#connectNow() })
      return this
    }
    this.#connectNow()
    if (held !== null) {
      // Messages that waited for a closed client to connect again go on (queued as the others).
      held.refusing = false
      held.resume()
    }
    return this
  }

  #connectNow() {
    const state = this.#state
    if (state === 'connecting' || this.#readsOpen()) return this
    this.#started = true
    if (this.#verdict !== NO_VERDICT) this.#verdict = CALLED_DURING_VERDICT
    // A disconnect() stopped listening (a long-lived signal keeps no listener of a closed client).
    this.#listenToSignal()
    this.#ended = null
    this.#chosen = ''
    // The attempt's `connecting` event changes nothing JS has not set here, unless it is traced,
    // rws mode reads it (`socketSeen`), or events still to be dispatched may undo what this sets
    // (a batch's `close` after this listener): otherwise it need not wake the JS thread by itself.
    this.#restarts = N.clientConnect(this, !this.#rws && !tracing() && !wire.delivering())
    this.#driverDone = false
    this.#silentUntilIdle = false
    this.#endReadersAtIdle = false
    if (state === 'closed') {
      this.#retries = 0
      // A disconnect whose close event was already delivered is over for the user; its promise still settles.
      this.#closing = false
    }
    if (state !== 'closing') this.#state = 'connecting'
    else {
      // The close under way goes on; once it is done, the client connects again. Its events are
      // reported again (the connection that opens meanwhile is the one the call closes: #onOpen).
      this.#connectAfterClose = true
      if (silenced(this.#closing)) this.#closing = true
    }
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
    return this.#disconnect(code, checkClose(code, reason), options?.flush === true, false)
  }

  /**
   * ws's terminate(): as `disconnect()`, without the close handshake: the connection is dropped
   * at once (its close event has code 1006), queued messages are discarded.
   */
  terminate() {
    return this.#disconnect(1000, '', false, true)
  }

  /** `keepQueue`: the queue stays for a later `connect()` (rws mode's `close()`). */
  #disconnect(code, reason, flush, terminate, keepQueue = false) {
    const held = this.#held
    if (held === null) return this.#disconnectNow(code, reason, flush, terminate, keepQueue)
    if (terminate) return this.#terminateHeld(held)
    // As ws closes after what was sent before: the close waits for the Blob's bytes, and what
    // was sent after it goes first too. The client reads 'closing', and refuses send(), meanwhile.
    // The call is made now for what waits on it (opened(), the signal), and its close has
    // closeTimeout from now, as ws's: a read that has not ended by then is given up.
    this.#announceDisconnect()
    held.closing++
    held.refusing = true
    return new Promise((resolve) => {
      const call = {
        run: (dropped) => {
          clearTimeout(call.timer)
          held.closing--
          resolve(this.#disconnectNow(code, reason, flush, false, keepQueue, dropped, true))
        },
        settle: resolve,
        timer: setTimeout(() => held.expire(call), UNUSUAL.get(this)?.closeTimeout ?? DEFAULTS.closeTimeout),
        discards: !keepQueue,
      }
      held.holdCall(call)
      // A closed client (it gave up), or one waiting to reconnect without `flush`, has nothing to
      // write them on: they are discarded with the queue now, not once a Blob still being read is.
      if ((this.#state === 'closed' || (this.#state === 'reconnecting' && !flush)) && !keepQueue) held.expire(call)
    })
  }

  /** What a disconnect() call does at once, for the waits it ends. */
  #announceDisconnect() {
    this.#internal?.emit(kDisconnecting)
    this.#unlistenSignal?.()
    this.#unlistenSignal = null
  }

  /**
   * terminate() while sends wait for a Blob's bytes: they are discarded (ws's fail with the
   * socket), and a disconnect() waiting among them settles as this call does.
   */
  #terminateHeld(held) {
    this.#held = null
    const messages = []
    const settles = []
    for (const item of held.discard()) {
      if (item.run === undefined) messages.push(item)
      else {
        clearTimeout(item.timer)
        if (item.settle !== undefined) settles.push(item.settle)
      }
    }
    const done = this.#disconnectNow(1000, '', false, true, false, messages)
    for (const settle of settles) settle(done)
    return done
  }

  /**
   * `held`: messages that waited for a Blob's bytes, discarded by terminate() or by the deadline of
   * a disconnect() that waited for them; `announced`: the call was announced when it was made.
   */
  #disconnectNow(code, reason, flush, terminate, keepQueue, held = null, announced = false) {
    if (!announced) this.#announceDisconnect()
    const seq = N.clientDisconnect(this, code, reason, flush, terminate, keepQueue)
    // A message whose last piece has not come cannot be sent, flush or not. Its callbacks run
    // after those of the messages sent before it, as the disconnect settles.
    const left = discardedInJs(held, this.#takePieces())
    if (seq === 0) {
      const was = this.#state
      this.#state = 'closed'
      this.#ended = 'disconnected'
      // The driver has exited, but JS has yet to see what it reported last: the close of what was
      // under way (connecting, open, or closing for an earlier call) is still reported, once.
      const pending = !this.#driverDone
      if (pending && this.#silentUntilIdle !== AFTER_CLOSE) {
        this.#silentUntilIdle = was === 'connecting' || was === 'open' || was === 'closing' ? AFTER_CLOSE : true
      }
      const discarded = (keepQueue ? 0 : N.clientDiscardQueue(this)) + (left === null ? 0 : left.count)
      // Their callbacks are queued before anything can await this promise.
      this.#settleCallbacks()
      if (left !== null) callLater(left.callbacks, notSent('discarded'))
      if (pending && this.#givingUp === null) {
        // Settled, and readers ended (they take what the batch still delivers), by the exit
        // report, after the events JS has yet to see: nothing of the client then follows.
        this.#endReadersAtIdle = true
        return new Promise((resolve) => {
          const waiter = { seq: 0, resolve, left: null, keepQueue, already: discarded }
          this.#addWaiter(waiter)
        })
      }
      // A reader waiting for a client that never connected (or one that gave up) ends now; one
      // called by a giveup listener passes that giveup on, which readers are told of only after
      // the application's listeners (so that it can fail them).
      this.#internal?.emit(kClosed, this.#givingUp)
      return Promise.resolve({ discarded })
    }
    const state = this.#state
    // With `flush`, the attempt under way (or one made to write the queue) opens, writes the queue
    // and closes; it is not reported open all the same: the client is closing, where a send() in
    // an `open` listener would throw.
    const between = state === 'reconnecting' || state === 'closed'
    this.#closing =
      this.#closing === QUIET || between
        ? QUIET
        : this.#closing === BEFORE_OPEN || state === 'connecting'
          ? BEFORE_OPEN
          : true
    this.#connectAfterClose = false
    // Between connections (a reconnect wait, or a giveup the driver has not yet reported done)
    // there is nothing to close: the client is closed for the user at once, as its readyState
    // already says, and no close event is to come. With `flush` it connects to write its queue,
    // and closes that connection: closing until then.
    this.#state = between && !flush ? 'closed' : 'closing'
    return new Promise((resolve) => {
      // Settled by the event that reports call `seq` done: after a connect(), an earlier call's
      // completion must not settle a later one.
      const waiter = { seq, resolve, left, keepQueue }
      this.#addWaiter(waiter)
    })
  }

  /**
   * The WHATWG name of `disconnect()` (it returns nothing; use `disconnect()` to await). In rws
   * mode the queued messages stay for a later `reconnect()` or `drainQueuedMessages()`, as
   * reconnecting-websocket and partysocket keep theirs.
   */
  close(code = 1000, reason = '') {
    if (this.#rws) void this.#disconnect(code, checkClose(code, reason), false, false, true)
    else this.disconnect(code, reason)
  }

  /** Forces a fresh connection now: closes the open one with `code` or cancels the reconnect wait. */
  reconnect(code = 1000, reason = '') {
    reason = checkClose(code, reason)
    const held = this.#held
    if (held !== null && !held.stalled && (held.calls > 0 || this.#state !== 'closed')) {
      // What was sent before goes on the connection this call closes, as it would without a Blob.
      held.refusing = false
      held.holdCall({ run: () => this.#reconnectNow(code, reason) })
      return this
    }
    this.#reconnectNow(code, reason)
    if (held !== null) {
      held.refusing = false
      held.resume()
    }
    return this
  }

  #reconnectNow(code, reason) {
    const state = this.#state
    if (this.#rws?.ignoresReconnect(state)) return this
    // After disconnect() or terminate(), the connection is going anyway: as connect(), the close
    // under way ends, then the client connects again. (reconnecting-websocket fires the close of
    // a socket not yet closed in the call, as for any: its real close is then not fired again.)
    if (this.#closing) {
      const closing = state === 'closing'
      this.#connectNow()
      if (this.#rws && closing) this.#rws.reconnected(code, reason, this, this.#whatwg)
      return this
    }
    const hadConnection = state === 'open' || state === 'connecting' || state === 'closing'
    this.#retries = 0
    const restarts = N.clientReconnect(this, code, reason)
    if (restarts === 0) {
      this.#closing = false
      this.#state = 'closed'
      return this.#connectNow()
    }
    this.#restarts = restarts
    this.#closing = false
    // A connection lost while its verdict is pending is not closed again: the next attempt starts.
    this.#state = this.#readsOpen() ? 'closing' : 'connecting'
    if (this.#rws && hadConnection) this.#rws.reconnected(code, reason, this, this.#whatwg)
    return this
  }

  /**
   * Sends now when open; while connecting or waiting to reconnect, queues
   * (bounded; see the `queue` option). Throws ERR_NOT_OPEN when closed and
   * ERR_QUEUE_FULL when the queue refuses the message. While the client is closing and does not
   * queue it (after a disconnect(), or with `queue: false`), the message is dropped and reported
   * (`drop`, reason 'closed').
   */
  send(data) {
    // ws's `send(data, options, callback)`, the pieces of a message and sends behind a Blob: rare,
    // and kept off the common path. (`#fragments in this` first: for anything but a client, the
    // addon's check says what is wrong.)
    if (arguments.length > 1 || (#fragments in this && (this.#fragments !== null || this.#held !== null || this.#handshakeClosing))) {
      let [, options, callback] = arguments
      if (typeof options === 'function') [options, callback] = [undefined, options]
      // As in ws, a null callback is none.
      if (callback === null) callback = undefined
      if (this.#handshakeClosing && this[ONE_CONNECTION]) {
        // Its one connection is closing: the message (or piece) will never be sent, and is
        // reported now, as ws reports it (a queue would hand it back only at the close).
        if (callback !== undefined) checkCallback(callback)
        if (this.#fragments !== null || options?.fin === false) {
          checkSendOptions(options)
          pieceOf(data)
        } else if (!isBlob(data)) sendable(withSendOptions(data, options))
        else checkSendOptions(options)
        return this.#droppedWhileClosing(data, callback)
      }
      if (this.#fragments !== null || options?.fin === false) return this.#sendPiece(data, options, callback)
      if (this.#held !== null || isBlob(data)) {
        if (callback !== undefined) checkCallback(callback)
        return this.#hold(data, options, callback)
      }
      if (callback !== undefined) return this.#sendWithCallback(data, options, callback)
      data = withSendOptions(data, options)
      if (options?.compress === false) return void this.#sendUncompressed(data)
    }
    let outcome
    if (typeof data === 'string') outcome = N.clientSendText(this, data)
    else if (Buffer.isBuffer(data)) outcome = N.clientSendBinary(this, data)
    else if (isBlob(data)) {
      // (What is not a client: the addon says so.)
      if (!(#held in this)) N.clientGeneration(this)
      return this.#hold(data, undefined, undefined)
    } else outcome = N.clientSendBinary(this, sendable(data))
    if (outcome === SENT_CORKED) return void corkUntilTurnEnd(this)
    this.#sent(outcome, data)
  }

  /**
   * send() of a Blob, or while sends wait for one's bytes (lib/held.js): checked now as send()
   * checks (the data, the options, whether the client takes messages), sent in its turn. A Blob
   * goes as a binary message, other data as send() would send it now (bytes are copied: the
   * caller may reuse its buffer).
   */
  #hold(data, options, callback, chunk = false) {
    let message
    if (isBlob(data)) {
      // As in ws, a Blob is a binary message unless `binary: false` says text.
      const text = checkSendOptions(options).binary === false
      const size = data.size
      message = { state: WAITING, data: null, blob: data, text, error: undefined, original: data, compress: options?.compress !== false, callback, size, chunk, control: undefined }
    } else {
      const bytes = sendable(withSendOptions(data, options))
      const copy = typeof bytes === 'string' ? bytes : Buffer.from(bytes)
      const size = typeof copy === 'string' ? Buffer.byteLength(copy) : copy.length
      message = { state: READY, data: copy, blob: undefined, text: false, error: undefined, original: data, compress: options?.compress !== false, callback, size, chunk, control: undefined }
    }
    if (this.#refusesMessages() || (UNUSUAL.get(this)?.unqueued && !this.#readsOpen())) {
      if (!chunk && this.#closingNow()) return this.#droppedWhileClosing(data, callback)
      throw this.#notOpen('send')
    }
    this.#holdMessage(message)
  }

  #holdMessage(message) {
    let held = this.#held
    if (held === null) {
      held = new HeldSends({
        send: (m) => this.#sendHeld(m),
        unreadable: (m) => this.#unreadable(m),
        controlGone: (m) => this.#controlGone(m),
        threw: rethrowLater,
        keeps: () => this.#state === 'closed' && !UNUSUAL.get(this)?.unqueued,
        drained: () => {
          if (this.#held === held) this.#held = null
        },
      })
      this.#held = held
    }
    held.hold(message)
  }

  /** Closed, or closing for good (a connect() since accepts messages again): send() does not take the message. */
  #refusesMessages() {
    return this.#state === 'closed' || (this.#closing && !this.#connectAfterClose) || this.#held?.refusing === true
  }

  /**
   * The client reads 'closing' (a disconnect() or a reconnect() closes its connection): the
   * connection still delivers what it reads until the close is done, and a listener that answers
   * must not crash the process. What send() is given then and not queued (after a disconnect(), or
   * with `queue: false`) is dropped and reported ('closed'), as ws drops it; once the client is
   * closed, send() throws ERR_NOT_OPEN.
   */
  #closingNow() {
    return this.state === 'closing'
  }

  /** A send() refused while closing: its data in a `drop` event, its callbacks told 'closed'. */
  #droppedWhileClosing(data, callback) {
    this.#dropped('closed', data)
    if (callback !== undefined) callLater(callback, notSent('closed'))
  }

  /**
   * A held message's turn: sent as send() would send it now; what send() would throw is reported.
   * False when the addon did not take it because the client gave up before JS saw it: it waits.
   */
  #sendHeld(message) {
    if (message.control !== undefined) {
      this.#sendHeldControl(message)
      return true
    }
    const { data, callback } = message
    if (this.#handshakeClosing && this[ONE_CONNECTION] && !message.chunk) {
      // Read once its one connection had begun closing: never sent, reported now.
      this.#droppedWhileClosing(message.original, callback)
      return true
    }
    try {
      let result
      if (callback !== undefined) result = this.#sendTicketed(data, callback, message.compress, message.original, true, message.chunk)
      else if (!message.compress) result = this.#sendUncompressed(data, message.original, true)
      else {
        const outcome = typeof data === 'string' ? N.clientSendText(this, data) : N.clientSendBinary(this, data)
        if (outcome === SENT_CORKED) corkUntilTurnEnd(this)
        else result = this.#sent(outcome, message.original, true)
      }
      return result !== KEPT
    } catch (err) {
      // A stream's chunk: the stream decides, as when send() throws (it may wait for the next open).
      if (message.chunk) {
        callLater(callback, err)
        return true
      }
      // The client closed, or the queue is full, since send() took it.
      const reason = err?.code === 'ERR_QUEUE_FULL' ? 'overflow' : 'closed'
      this.#dropped(reason, message.original)
      if (callback !== undefined) callLater(callback, notSent(reason))
      return true
    }
  }

  /** A Blob that could not be read: reported as a message that will never be sent. */
  #unreadable(message) {
    const control = message.control
    if (control === undefined) {
      this.#emit('drop', { reason: 'unreadable', messages: [message.original], error: message.error })
      if (message.callback !== undefined) callLater(message.callback, notSent('unreadable', message.error))
      return
    }
    const err = notSent('unreadable', message.error, control.what)
    if (message.callback !== undefined) return callLater(message.callback, err)
    // Both ways of listening hear it, as a connection's error; a program that listens neither way
    // gets a warning (not a connection's error, it is not retried past).
    const listening = this.listenerCount('error') > 0
    const wants = this.#wants('error')
    if (listening) this.#emit('error', err)
    if (wants) this.#fire(new ErrorEvent(err, this))
    if (!listening && !wants) process.emitWarning(err)
  }

  /**
   * What send() does past the fast path's outcomes: throw, or report what it dropped. Returns
   * the `drop` event's reason when that reported `data` itself. `chunk`: a stream's write, which
   * waits for the next open where the queue refuses it (lib/stream.js): a full queue throws.
   */
  #sent(outcome, data, held = false, chunk = false) {
    if (outcome === SENT_NOT_OPEN || outcome === SENT_NOT_CONNECTED) {
      // The native side ended the connection (or gave up) before JS has seen that event: a
      // send() made while the client still looked open (or, with the queue on, connecting) must
      // not throw. Nothing wrote the message and nothing will: it is reported like any message
      // a closed client drops.
      const looksUsable = outcome === SENT_NOT_OPEN ? this.#state !== 'closed' : this.#readsOpen()
      // But one held behind a Blob, with the queue on, waits as the queue does for a giveup JS has
      // yet to see (the client is closed, and not by a disconnect(): JS would have called it).
      if (held && outcome === SENT_NOT_OPEN && looksUsable && !this.#closing && !UNUSUAL.get(this)?.unqueued) return KEPT
      // (A stream's chunk is not reported: the stream sends it again on the next connection, or fails.)
      if (looksUsable && !this.#closing) return chunk ? 'closed' : this.#dropped('closed', data)
      if (!chunk && this.#closingNow()) return this.#dropped('closed', data)
      throw this.#notOpen('send')
    }
    if (outcome === SENT_QUEUE_FULL) {
      // A client that still reads 'open' has lost its connection unseen, and what was sent since
      // filled the queue: as for NOT_OPEN above, nothing could be checked before the call, so it
      // must not throw (an `if (readyState === OPEN) send()` would crash the process).
      // (A stream's chunk waits for the next open instead, whatever the mode: lib/stream.js.)
      if (!chunk && (this.#rws?.dropNewest || (this.#readsOpen() && !this.#closing))) return this.#dropped('overflow', data)
      throw makeError('ERR_QUEUE_FULL', 'Cannot send: the offline queue is full (a message larger than its maxBytes never fits)')
    }
    if (outcome === SENT_DROPPING) {
      // A listener that throws must not make send() throw: the message was accepted.
      this.#emit('drop', { reason: 'overflow', messages: N.clientTakeDropped(this) })
      // Messages it pushed out may have callbacks, whatever this one has.
      this.#settleCallbacks()
    }
  }

  /** The client reads 'open' (a connection lost whose verdict is pending reads 'reconnecting'). */
  #readsOpen() {
    return this.#state === 'open' && this.#verdict === NO_VERDICT
  }

  #dropped(reason, data) {
    this.#emit('drop', { reason, messages: [data] })
    return reason
  }

  /**
   * ws's `send(data, callback)`: `callback(null)` once the message is written to the socket (on this
   * connection or, from the queue, a later one), `callback(err)` (`ERR_NOT_SENT`) once it never
   * will be. A send() that throws calls nothing. The message carries a ticket, and the addon
   * reports its fate (the `sent` event, or the call that dropped them).
   */
  #sendWithCallback(data, options, callback) {
    checkCallback(callback)
    this.#sendTicketed(sendable(withSendOptions(data, options)), callback, options?.compress !== false)
  }

  /**
   * `send(data, { compress: false })`: framed uncompressed even where permessage-deflate was negotiated.
   * `original`: what send() was given, for a `drop` event (a held Blob's, the Blob); `held`: see `#sent()`.
   */
  #sendUncompressed(data, original = data, held = false) {
    const outcome = N.clientSendTicketed(this, sendable(data), 0, false)
    if (outcome === SENT_CORKED) return void corkUntilTurnEnd(this)
    return this.#sent(outcome, original, held)
  }

  /**
   * ws's `send(data, { fin: false })` and what follows it: a piece of a message. The pieces are
   * held until the last one (`fin` true, the default), then sent as one message (lib/fragments.js),
   * and each piece's callback runs with the message's fate. `binary` counts on the first piece
   * only, as in ws. A piece that throws is not held and calls nothing; the message stays open.
   */
  #sendPiece(data, options, callback) {
    if (callback !== undefined) checkCallback(callback)
    const fin = checkSendOptions(options).fin !== false
    // As send(): refused once closed, or closing for good (a connect() since accepts them again).
    if (this.#refusesMessages()) {
      // (What could not be sent at all throws, closing or not.)
      if (this.#closingNow()) {
        pieceOf(data)
        return this.#droppedWhileClosing(data, callback)
      }
      throw this.#notOpen('send')
    }
    const message = this.#fragments
    if (message === null) {
      // The first piece: send() comes here for it only with fin: false.
      const piece = pieceOf(data)
      const binary = checkSendOptions(options).binary
      const first = new FragmentedMessage(piece, binary === undefined ? typeof piece === 'string' : !binary, options?.compress !== false)
      if (callback !== undefined) first.callbacks.push(callback)
      this.#fragments = first
      return
    }
    const before = message.mark()
    message.add(pieceOf(data))
    if (callback !== undefined) message.callbacks.push(callback)
    if (!fin) return
    try {
      const whole = message.data()
      this.#fragments = null
      // With a Blob piece, the message is a Blob, held until its bytes are read.
      if (whole instanceof Blob) {
        const callbacks = message.callbacks.length > 0 ? message.callbacks : undefined
        return this.#hold(whole, { binary: !message.text, compress: message.compress }, callbacks)
      }
      if (this.#held !== null) {
        const callbacks = message.callbacks.length > 0 ? message.callbacks : undefined
        return this.#hold(whole, message.compress ? undefined : NO_COMPRESSION, callbacks)
      }
      if (message.callbacks.length > 0) this.#sendTicketed(whole, message.callbacks, message.compress)
      else if (message.compress) this.send(whole)
      else this.#sendUncompressed(whole)
    } catch (err) {
      // Not sent (not UTF-8, ERR_NOT_OPEN, ERR_QUEUE_FULL): the last piece is not held, the message stays open.
      message.restore(before)
      this.#fragments = message
      throw err
    }
  }

  /** Drops a message whose last piece has not come: its callbacks (null when there was none), for the caller to call. */
  #takePieces() {
    const message = this.#fragments
    if (message === null) return null
    this.#fragments = null
    return message.callbacks
  }

  #sendTicketed(data, callback, compress, original = data, held = false, chunk = false) {
    const callbacks = (this.#callbacks ??= { byTicket: new Map(), last: 0 })
    const ticket = ++callbacks.last
    // A message with a callback never takes the fast path: the addon hands it to the driver, which
    // reports it once the socket has taken all of it, or queues it.
    const outcome = N.clientSendTicketed(this, data, ticket, compress)
    const waits = outcome !== SENT_NOT_OPEN && outcome !== SENT_NOT_CONNECTED && outcome !== SENT_QUEUE_FULL
    if (waits) callbacks.byTicket.set(ticket, callback)
    const dropped = this.#sent(outcome, original, held, chunk)
    if (dropped === KEPT) return KEPT
    if (dropped !== undefined) callLater(callback, notSent(dropped))
    // Older messages this one pushed out of the queue.
    this.#settleCallbacks()
    return outcome
  }

  /**
   * Runs (as microtasks) the callbacks of messages the addon reports written or dropped.
   * `drainedAs`: what a callback of a message the queue handed back is told.
   */
  #settleCallbacks(drainedAs = 'drained') {
    const callbacks = this.#callbacks?.byTicket
    if (callbacks === undefined || callbacks.size === 0) return
    const settled = N.clientTakeSettled(this)
    for (let i = 0; i < settled.length; i += 2) {
      const callback = callbacks.get(settled[i])
      if (callback === undefined) continue
      callbacks.delete(settled[i])
      const fate = FATES[settled[i + 1]]
      callLater(callback, fate === 'written' ? undefined : notSent(fate === 'drained' ? drainedAs : fate))
    }
  }

  /**
   * Sends a ping frame (payload up to 125 bytes), in ws's shape: `ping(data?, mask?, callback?)`,
   * `ping(callback)`. Throws ERR_NOT_OPEN when neither open nor closing (while closing, the frame
   * is not sent and its callback hears ERR_NOT_SENT, as in ws). The callback runs (a microtask) once the
   * frame is handed to the connection, which writes it after what it is writing.
   */
  ping(data, mask, callback) {
    const control = controlArgs('ping', data, mask, callback)
    // Behind what waits for a Blob's bytes (as in ws, whose sender queues a ping then), or a Blob's own.
    if (!Buffer.isBuffer(control.payload) || heldOf(this) !== null) {
      // The addon checks `this` first (before a private member would): a foreign object is refused as such.
      const connection = connectionOf(this)
      return this.#holdControl('ping', control, connection)
    }
    if (!N.clientPing(this, control.payload)) return this.#controlRefused('ping', control)
    if (control.callback !== undefined) callLater(control.callback)
  }

  /** Sends a pong frame, ws's pong(): a one-way heartbeat, or the answer to a ping with `autoPong: false`. */
  pong(data, mask, callback) {
    const control = controlArgs('pong', data, mask, callback)
    if (!Buffer.isBuffer(control.payload) || heldOf(this) !== null) {
      const connection = connectionOf(this)
      return this.#holdControl('pong', control, connection)
    }
    if (!N.clientPong(this, control.payload)) return this.#controlRefused('pong', control)
    if (control.callback !== undefined) callLater(control.callback)
  }

  /** ERR_NOT_OPEN for `what` ('send', 'ping'...), saying why a closed client is closed and what starts it. */
  #notOpen(what) {
    const state = this.state
    let why = `the connection is ${state}`
    if (state === 'closed') {
      const ended = this.#ended
      if (!this.#started) why = 'the client is closed: connect() starts it (startClosed)'
      else if (ended === 'disconnected' || this.#closing) why = 'the client is closed: disconnect() was called (connect() starts it again)'
      else if (ended !== null) why = `the client is closed: it gave up (${ended.giveup.reason}; connect() starts it again)`
      else why = 'the client is closed (connect() starts it again)'
    }
    return makeError('ERR_NOT_OPEN', `Cannot ${what}: ${why}`)
  }

  /**
   * A ping or pong the addon had no connection for. While the client still reads 'open', its
   * connection has ended and JS has yet to see it (a reset): as send() then, the call must not
   * throw (an `if (readyState === OPEN) ping()` would crash the process); its callback hears 'closed'.
   * The same while closing, as in ws: a connection delivers what it reads until its close is done,
   * and a listener may answer it (a pong with `autoPong: false`).
   */
  #controlRefused(what, { callback }) {
    const state = this.state
    // (In the `error` of a connection that fails, the client reads CLOSING, as ws's does then.)
    if (state !== 'open' && state !== 'closing' && failing !== this) throw this.#notOpen(what)
    if (callback !== undefined) callLater(callback, notSent('closed', undefined, what))
  }

  /**
   * A ping or pong of a Blob, or made while sends wait for a Blob's bytes: checked now (open, at
   * most 125 bytes), held in line with them (as in ws), then sent on the connection it was called
   * on. Its callback hears ERR_NOT_SENT when the Blob cannot be read (without one, an `error`, or
   * a process warning when nothing listens) or when that connection has gone meanwhile ('closed'):
   * a ping is that connection's, and nothing to report once it has gone.
   */
  #holdControl(what, { payload, callback }, connection) {
    // (Closing too when a disconnect() waits behind a Blob: the ping would come after its close.)
    if (this.state !== 'open') return this.#controlRefused(what, { callback })
    const control = { what, connection }
    const blob = Buffer.isBuffer(payload) ? undefined : payload
    // Bytes are copied, as a held message's are: the caller may reuse its buffer.
    const data = blob === undefined ? Buffer.from(payload) : null
    this.#holdMessage({ state: blob === undefined ? READY : WAITING, data, blob, text: false, error: undefined, original: payload, compress: false, callback, size: 0, chunk: false, control })
  }

  /** A held ping's or pong's turn: sent if its connection is still open, its callback told. */
  #sendHeldControl(message) {
    const { data, callback } = message
    const { what, connection } = message.control
    if (data.length > 125) {
      message.error = makeError('ERR_OUT_OF_RANGE', `A ${what} payload must be at most 125 bytes`, RangeError)
      return this.#unreadable(message)
    }
    const sent = connectionOf(this) === connection && sendControl(this, what, data)
    if (!sent) this.#controlGone(message)
    else if (callback !== undefined) callLater(callback)
  }

  /** A held ping or pong whose connection has gone: its callback hears 'closed'. */
  #controlGone(message) {
    if (message.callback !== undefined) callLater(message.callback, notSent('closed', undefined, message.control.what))
  }

  /** Hands back the queued, unsent messages (oldest first) and empties the queue. */
  drainQueue() {
    // (The addon first: it refuses what is not a client as such.)
    const messages = N.clientDrainQueue(this)
    return this.#takeQueue('drained', messages)
  }

  /**
   * The queue's messages (`messages`, as the addon handed them back), then those waiting for a
   * Blob's bytes (sent after), their callbacks told `reason`.
   */
  #takeQueue(reason, messages = N.clientDrainQueue(this)) {
    this.#settleCallbacks(reason)
    // A Blob as itself, other data as held.
    const held = this.#held?.takeMessages()
    if (held !== undefined) {
      for (const message of held) {
        messages.push(message.blob ?? message.data)
        if (message.callback !== undefined) callLater(message.callback, notSent(reason))
      }
    }
    return messages
  }

  /** partysocket's name for `drainQueue()`. */
  drainQueuedMessages() {
    return this.drainQueue()
  }

  /**
   * ws's pause(): the socket is no longer read, for this connection and the next ones, until
   * resume(), and the messages, pings and pongs already read wait too (delivered from the turn
   * after resume(), or before the connection's end). The server's pongs go unread: a paused
   * connection is never taken for dead by the heartbeat.
   */
  pause() {
    if (this.#paused) return
    this.#paused = true
    // What is already on its way to JS waits too. (A backlog still being replayed still counts
    // among the pausers.)
    if (this.#backlog !== null) return
    this.#backlog = new Backlog()
    this.#setPausers(1)
  }

  resume() {
    if (!this.#paused) return
    this.#paused = false
    // What was held goes first, from the next turn on (as ws's socket flows again once resumed);
    // the socket is read again once it is delivered.
    if (this.#backlog.empty) this.#endBacklog()
    else setImmediate(() => this.#replay())
  }

  /** Whether pause() is in effect. */
  get isPaused() {
    return this.#paused
  }

  #setPausers(delta) {
    this.#pausers += delta
    N.clientPauseReading(this, this.#pausers > 0)
  }

  /** Lets this client keep the process alive while it is active (the default). */
  ref() {
    N.clientSetRef(this, true)
    return this
  }

  /** Lets the process exit even while this client is connected or waiting to reconnect (a disconnect() under way holds it until it settles). */
  unref() {
    N.clientSetRef(this, false)
    return this
  }

  /**
   * `for await (const data of client.messages())`: messages as they arrive, with
   * backpressure: past `highWaterMark` buffered messages, or `highWaterMarkBytes`
   * buffered bytes, the socket stops being read until the consumer catches up.
   * The loop ends when the client is disconnected or gives up after a clean close; any
   * other giveup throws ERR_GAVE_UP from it, after the messages received before.
   * A pending read keeps the client alive, also between connections.
   */
  messages({ highWaterMark, highWaterMarkBytes } = {}) {
    return messageIterator(this, this.#readControl(), highWaterMark, highWaterMarkBytes)
  }

  /** Listening to one of the private emitter's events: `(listener) => stop`. */
  #onInternal(key) {
    return (listener) => {
      const events = this.#internalEvents()
      events.on(key, listener)
      return () => events.off(key, listener)
    }
  }

  /**
   * What a reader of the client's messages (`messages()`, `createWebSocketStream()`) may do.
   * `pause` and `hold` are this reader's switches: setting one as it already is does nothing, so
   * each reader counts once among the client's pausers and holds.
   */
  #readControl() {
    let paused = false
    let holding = false
    let keeping = false
    return {
      pause: (on) => {
        if (paused === on) return
        paused = on
        this.#setPausers(on ? 1 : -1)
      },
      hold: (on) => {
        if (holding === on) return
        holding = on
        N.clientHold(this, on)
      },
      /** As `hold`, for a write waiting for the next open (a stream's writable side). */
      keep: (on) => {
        if (keeping === on) return
        keeping = on
        N.clientHold(this, on)
      },
      closedForGood: () => this.#state === 'closed',
      /**
       * send(data, callback), as the stream's chunk: whether the message went to an open
       * connection (false: it waits in the queue for a later one, or was dropped because the
       * connection had ended, whatever JS has seen yet). Throws as send() does.
       */
      sendChunk: (data, callback) => {
        if (this.#held !== null) {
          this.#hold(data, undefined, callback, true)
          return false
        }
        const bytes = sendable(data)
        const outcome = this.#sendTicketed(bytes, callback, true, bytes, false, true)
        return outcome === SENT_HANDED || outcome === SENT || outcome === SENT_CORKED
      },
      /** Discards the queued messages sent with these callbacks (which then get ERR_NOT_SENT). */
      discardSent: (callbacks) => {
        if (callbacks.size === 0) return
        const byTicket = this.#callbacks?.byTicket
        if (byTicket !== undefined) {
          const tickets = []
          for (const [ticket, callback] of byTicket) if (callbacks.has(callback)) tickets.push(ticket)
          if (tickets.length > 0 && N.clientDiscardTickets(this, tickets) > 0) this.#settleCallbacks()
        }
        // Those still waiting behind a Blob (sent after the others).
        for (const message of this.#held?.takeMessages((m) => callbacks.has(m.callback)) ?? []) {
          callLater(message.callback, notSent('discarded'))
        }
      },
      /** How the client ended (`#ended`: the same value until connect()), or null when it has not (or never started). */
      ended: () => (this.#state === 'closed' ? this.#ended : null),
      /** disconnect() (or terminate()) was called and has not completed. */
      disconnecting: () => this.#closing !== false || this.#held?.closing > 0,
      active: () => N.clientActive(this),
      /** A disconnect() that left the client closed (each of these returns how to stop listening). */
      onClosed: this.#onInternal(kClosed),
      /** The open event, after the application's listeners (one of theirs that throws cannot skip it). */
      onOpened: this.#onInternal(kOpened),
      /** Each message `(data, isBinary)`, the same way. */
      onMessage: this.#onInternal(kMessage),
      /** Each close event's `{ code, reason, wasClean, willReconnect }`, the same way. */
      onClose: this.#onInternal(kClose),
      /** The giveup event, the same way. */
      onGaveUp: this.#onInternal(kGaveUp),
    }
  }

  /**
   * Resolves with `{ protocol, extensions }` when the client is open (at once if it is), however
   * many attempts that takes. Rejects only when it will not open: it gave up (`ERR_GAVE_UP`, the
   * last error as `cause`), `disconnect()` was called (`ERR_NOT_OPEN`), or `signal` aborted; at
   * once when the client already gave up or was disconnected (and no connect() came since).
   * Unlike `events.once(client, 'open')`, a failed attempt that will be retried does not reject.
   */
  opened({ signal } = {}) {
    if (this.state === 'open' && !this.#closing) {
      const chosen = this.#chosen
      return Promise.resolve(typeof chosen === 'string' ? { protocol: chosen, extensions: '' } : chosen)
    }
    if (signal?.aborted) return Promise.reject(abortError(signal))
    if ((this.#closing && !this.#connectAfterClose) || this.#held?.refusing) {
      return Promise.reject(makeError('ERR_NOT_OPEN', 'disconnect() was called before the connection opened'))
    }
    // Stopped for good (until connect()): nothing would settle the wait.
    const ended = this.#state === 'closed' ? this.#ended : null
    if (ended === 'disconnected') return Promise.reject(makeError('ERR_NOT_OPEN', 'the client is closed: disconnect() was called'))
    if (ended !== null) return Promise.reject(gaveUpError(ended.giveup))
    return new Promise((resolve, reject) => {
      const events = this.#internalEvents()
      // Between connections only the application's references keep a client; a pending wait is
      // one (`await client.opened()` in a function only the client reaches, during an outage).
      N.clientHold(this, true)
      const done = () => {
        N.clientHold(this, false)
        events.off(kOpened, onOpen)
        events.off(kGaveUp, onGiveUp)
        events.off(kDisconnecting, onDisconnect)
        signal?.removeEventListener('abort', onAbort)
      }
      const onOpen = (info) => {
        done()
        resolve(info)
      }
      const onGiveUp = (p) => {
        done()
        reject(gaveUpError(p))
      }
      const onDisconnect = () => {
        done()
        // By a giveup listener: the giveup is why it will not open.
        const givingUp = this.#givingUp
        reject(givingUp !== null ? gaveUpError(givingUp) : makeError('ERR_NOT_OPEN', 'disconnect() was called before the connection opened'))
      }
      const onAbort = () => {
        done()
        reject(abortError(signal))
      }
      events.on(kOpened, onOpen)
      events.on(kGaveUp, onGiveUp)
      events.on(kDisconnecting, onDisconnect)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  // WHATWG listeners, beside the EventEmitter ones (lib/whatwg.js).

  addEventListener(type, listener, options) {
    this.#surface().add(type, listener, options)
  }

  removeEventListener(type, listener) {
    this.#whatwg?.remove(type, listener)
  }

  /**
   * As ws's: the `on<type>` handlers and `addEventListener()` listeners are the emitter's too, so
   * that code that detaches a socket this way hears nothing more from it.
   */
  removeAllListeners(type) {
    const all = arguments.length === 0
    super.removeAllListeners(...arguments)
    this.#whatwg?.clear(all ? () => true : (t) => t === type)
    return this
  }

  /**
   * Delivers `event` to the addEventListener listeners of its type; false if a listener called
   * `preventDefault()` on a cancelable event, as in the DOM.
   */
  dispatchEvent(event) {
    this.#surface().dispatch(event, this, rethrowLater)
    return event?.defaultPrevented !== true
  }

  get onopen() {
    return this.#whatwg?.handler('open') ?? null
  }
  set onopen(fn) {
    this.#surface().setHandler('open', fn)
  }
  get onmessage() {
    return this.#whatwg?.handler('message') ?? null
  }
  set onmessage(fn) {
    this.#surface().setHandler('message', fn)
  }
  get onclose() {
    return this.#whatwg?.handler('close') ?? null
  }
  set onclose(fn) {
    this.#surface().setHandler('close', fn)
  }
  get onerror() {
    return this.#whatwg?.handler('error') ?? null
  }
  set onerror(fn) {
    this.#surface().setHandler('error', fn)
  }

  // What follows turns the addon's events into this client's events.

  /** The WHATWG surface, created when first used; reconnecting-websocket keeps duplicate listeners. */
  #surface() {
    return (this.#whatwg ??= new Surface(!this.#rws))
  }

  #wants(type) {
    return this.#whatwg?.wants(type) === true
  }

  #fire(event) {
    this.#whatwg.fire(event, this, rethrowLater)
  }

  #trace(what, a, b) {
    this.#rws?.trace(what, a, b)
    trace(this.#url, what, a, b)
  }

  /**
   * Emits an EventEmitter event. A listener that throws surfaces as an uncaught exception on the
   * next tick (as the WHATWG listeners' do), so that what follows the emit (the WHATWG delivery of
   * the same event, rws mode's bookkeeping) happens whatever a listener throws.
   */
  #emit(name, ...args) {
    try {
      this.emit(name, ...args)
    } catch (err) {
      rethrowLater(err)
    }
  }

  #onMessage(data, isBinary) {
    // An attempt disconnect() closed before JS saw it open reports nothing (its open is dropped too).
    if (silenced(this.#closing) || this.#unannounced) return
    if (this.#backlog !== null) this.#backlog.push('message', data, isBinary)
    else this.#deliverMessage(data, isBinary)
  }

  #deliverMessage(data, isBinary) {
    try {
      this.emit('message', data, isBinary)
    } catch (err) {
      rethrowLater(err)
    }
    try {
      this.#internal?.emit(kMessage, data, isBinary)
    } catch (err) {
      rethrowLater(err)
    }
    // In rws mode, once reconnect() has fired a connection's close, nothing more of it reaches
    // their listeners (reconnecting-websocket removes its listeners from the old socket).
    if (this.#wants('message') && !this.#rws?.suppressClose) this.#fire(new MessageEvent(data, this))
  }

  #onControl(type, data) {
    if (silenced(this.#closing) || this.#unannounced) return
    if (this.#backlog !== null) this.#backlog.push(type, data)
    else this.emit(type, data)
  }

  /** Delivers the backlog's events, each as it would have been when it came (`Backlog.take`). */
  #takeBacklog(backlog, going, bounded) {
    backlog.take(
      (kind, data, isBinary) => {
        if (kind === 'message') this.#deliverMessage(data, isBinary)
        else this.#emit(kind, data)
      },
      going,
      bounded,
    )
  }

  /**
   * Before the end of a connection (its error, its close), what the backlog holds of it is delivered,
   * paused or not: nothing of a connection comes after its close.
   */
  #deliverBacklog() {
    const backlog = this.#backlog
    if (backlog !== null && !backlog.empty) this.#takeBacklog(backlog, () => true, false)
    if (!this.#paused && backlog?.empty) this.#endBacklog()
  }

  /** After resume(): the backlog in order, a bounded part per turn, until it is empty or pause() comes again. */
  #replay() {
    const backlog = this.#backlog
    if (this.#paused || backlog === null) return
    this.#takeBacklog(backlog, () => !this.#paused, true)
    if (this.#paused) return
    if (backlog.empty) this.#endBacklog()
    else setImmediate(() => this.#replay())
  }

  /** Nothing is held any more: the socket is read again (pause() counted among the pausers until now). */
  #endBacklog() {
    this.#backlog = null
    this.#setPausers(-1)
  }

  #onText(text) {
    this.#onMessage(text, false)
  }

  #onBinary(buf) {
    this.#onMessage(convertBinary(buf, this.#binaryType), true)
  }

  /** `attempt`: the machine's count of consecutive failures (0 for the first attempt after connect()). */
  #onConnecting(attempt) {
    if (this.#rws) this.#rws.socketSeen = true
    // `protocol` and `extensions` are the next connection's, '' until it opens (as a new ws socket's).
    this.#chosen = ''
    if (!this.#closing && !this.#silentUntilIdle) this.#state = 'connecting'
    this.#retries = attempt
    this.#trace('connect', this.retryCount)
  }

  /** `head`: the server's 101 answer (status line and headers), just before its `open`. */
  #onUpgrade(head) {
    if (this.#closing || this.#silentUntilIdle) return
    // Parsed only for a listener: a fleet connecting makes no header objects nobody reads.
    if (this.listenerCount('upgrade') > 0) this.emit('upgrade', parseResponseHead(head))
  }

  /** A hop of the attempt under way; one a disconnect() closes reports nothing, as its upgrade and open. */
  #onRedirect(url) {
    if (this.#closing || this.#silentUntilIdle) return
    this.#emit('redirect', url)
  }

  /** `chosen`: the subprotocol, or `{ protocol, extensions }` when an extension was accepted. */
  #onOpen(chosen) {
    // While a disconnect() is unsettled, a connection that opens is one it closes: the driver opened
    // it before it took the call, or to write the queue with `flush` (a connect() since connects
    // once the close is done, after that call is settled), or the call waits behind a Blob's
    // bytes. Not reported: the client is closing, where a send() or ping() in an `open` listener
    // would throw.
    if (this.#closing || this.#held?.closing > 0 || this.#silentUntilIdle) {
      this.#unannounced = true
      return void this.#trace('open', 'closing')
    }
    this.#chosen = chosen
    this.#openedAt = performance.now()
    if (this.#rws) this.#rws.opened()
    this.#state = 'open'
    this.#trace('open')
    const info = typeof chosen === 'string' ? { protocol: chosen, extensions: '' } : chosen
    if (channels.open.hasSubscribers) channels.open.publish({ client: this, ...info })
    this.#emit('open', info)
    try {
      this.#internal?.emit(kOpened, info)
    } catch (err) {
      rethrowLater(err)
    }
    if (this.#wants('open')) this.#fire(new Event('open', this))
  }

  /** `p`: the error the client failed the connection with, or undefined (the peer's close was answered). */
  #onClosing(p) {
    this.#deliverBacklog()
    if (this.#state !== 'open' || this.#closing) {
      if (p !== undefined) this.#onError(p)
      return
    }
    this.#handshakeClosing = true
    // A WebSocket's message whose last piece has not come will never be sent: its callbacks hear
    // it now (and its later pieces are refused as they come).
    if (this[ONE_CONNECTION]) {
      const pieces = this.#takePieces()
      if (pieces !== null && pieces.length > 0) callLater(pieces, notSent('closed'))
    }
    if (p === undefined) return
    // Reported now, as ws reports it: the close comes when the TCP connection ends (at most
    // closeTimeout later).
    this.#onError(p)
    // reconnecting-websocket closes the socket ws reported an error on itself, at once: its close
    // (1000) and the error fire now, and the connection's own close is not fired again.
    if (this.#rws) this.#rws.failed(this, this.#whatwg, Math.min((this.#upMinUptime() ? 0 : this.#retries) + 1, this.#maxRetries))
  }

  #onError(p) {
    this.#deliverBacklog()
    // A failure that is retried must not crash a program that did not listen for errors.
    const err = this.#withLookupCause(fromNative(p), p)
    this.#trace('error', err.message)
    if (this.#closing === QUIET || this.#silentUntilIdle === true) return
    // The attempt or connection this error ends is going: CLOSING, as ws says in its `error`
    // (reconnecting-websocket's mode says what theirs does, lib/rws.js).
    const outer = failing
    const state = this.#state
    if (!this.#rws && (state === 'connecting' || state === 'open')) failing = this
    if (this[ONE_CONNECTION] && state === 'open' && PEER_ERRORS.has(err.code)) this.#failedIt = true
    try {
      if (channels.error.hasSubscribers) channels.error.publish({ client: this, error: err })
      if (this.listenerCount('error') > 0) this.#emit('error', err)
      if (this.#rws) this.#rws.pendingError = err
      else if (this.#wants('error') && (state !== 'open' || !this[ONE_CONNECTION] || PEER_ERRORS.has(err.code))) this.#fire(new ErrorEvent(err, this))
    } finally {
      failing = outer
    }
  }

  /**
   * `retries`: the machine's failure count once this close is accounted for (what the next attempt reports).
   * `gen`: the generation of the driver that reports it; `restarts`: as `#onReconnecting`'s (0: final).
   */
  #onClose({ code, reason, wasClean, willReconnect, byReconnect, retries, gen, restarts }) {
    runDueCallbacks()
    this.#deliverBacklog()
    this.#handshakeClosing = false
    const silent = this.#silentUntilIdle
    // A disconnect(), connect() or reconnect() waiting behind a Blob's bytes was made before this
    // close: it is made now, and the close is reported as one that follows it.
    if (this.#held?.calls > 0 && gen === N.clientGeneration(this)) this.#held.callsNow()
    const closing = this.#closing
    const calledDuringVerdict = this.#verdict === CALLED_DURING_VERDICT
    this.#verdict = NO_VERDICT
    this.#unannounced = false
    if (gen !== N.clientGeneration(this)) {
      // The last close of a driver that a connect() (or reconnect()) replaced as it exited: the
      // client is connecting again, and this close changes nothing (nor is it reported once a
      // disconnect() came since, unless a connect() followed it: the close that call causes is
      // the last event).
      // (One whose open was reported is: every open reported is answered by one close.)
      if (closing && !this.#connectAfterClose && this.#openedAt === 0) return void this.#trace('close', code, reason)
      willReconnect = true
    } else if (this.#silentUntilIdle) {
      // A disconnect() ended the client as the driver exited: this close is the last reported
      // (of what was under way at the call, or one the call was made before, as a disconnect()
      // behind a Blob's bytes is), if any is.
      willReconnect = false
      this.#state = 'closed'
      this.#silentUntilIdle = true
    } else if (closing) {
      if (!this.#connectAfterClose) {
        // The driver may not have taken the disconnect() yet (a server's close that came first, or
        // a connection it made for a reconnect() or connect() before it took the call, or to write
        // the queue with `flush`): this close is the one the call asked for, and nothing after it
        // is reported (`QUIET`: an open would come while closing, where send() throws).
        willReconnect = false
        this.#closing = QUIET
      } else {
        // connect() came after the disconnect(): the client connects once the close is done,
        // whatever the driver planned when it reported it.
        willReconnect = true
      }
      // The connection is gone; what is left (settling the disconnect) is not observable as
      // "closing", unless connect() was called meanwhile: the client then connects once it is done.
      if (!willReconnect && !this.#connectAfterClose) this.#state = 'closed'
      // A connection that lasted minUptime reset the count (the machine's count does so once it
      // retries, which a close of ours does not).
      if (this.#upMinUptime()) this.#retries = 0
    } else if (restarts !== 0 && restarts !== this.#restarts) {
      // A connect() or reconnect() made before JS saw this close (in an error listener, say) reached
      // the driver after it decided what follows: that call started the next attempt.
      willReconnect = true
      this.#state = 'connecting'
    } else {
      // The close of a connection that a reconnect() ended, or whose verdict a connect() or
      // reconnect() cut short: the next attempt starts at once, with no wait.
      const next = byReconnect || calledDuringVerdict ? 'connecting' : 'reconnecting'
      this.#state = willReconnect ? next : 'closed'
      this.#retries = retries
    }
    this.#openedAt = 0
    this.#trace('close', code, reason)
    if (this.#failedIt) {
      this.#failedIt = false
      // As ws and the DOM report a connection the client failed (a close frame sent, none
      // received): 1006, not the code it sent (graphql-ws, for one, retries after 1006 and stops
      // after 1002 or 1007).
      if (!wasClean) {
        code = 1006
        reason = ''
      }
    }
    if (closing === QUIET || silent === true) return
    this.#reportClose({ code, reason, wasClean, willReconnect }, byReconnect)
  }

  #reportClose(info, byReconnect) {
    const { code, reason, wasClean } = info
    if (channels.close.hasSubscribers) channels.close.publish({ client: this, ...info })
    // A WebSocket's close is ws's, `(code, reason)` with the reason's UTF-8 bytes: a ws listener
    // that reads `reason.toString()` works unchanged (onclose has wasClean).
    if (this[ONE_CONNECTION]) this.#emit('close', code, Buffer.from(reason))
    else this.#emit('close', info)
    try {
      this.#internal?.emit(kClose, info)
    } catch (err) {
      rethrowLater(err)
    }
    if (this.#rws) this.#rws.closed(info, byReconnect, this, this.#whatwg)
    else if (this.#wants('close')) this.#fire(new CloseEvent(code, reason, wasClean, this))
  }

  #onReconnecting({ attempt, delay, restarts }) {
    this.#trace('reconnecting', attempt, delay)
    // A reconnect the driver planned before it took the disconnect(), or before a connect() or
    // reconnect() that started the next attempt: it will not happen.
    if (this.#closing || this.#silentUntilIdle || this.#held?.closing > 0 || restarts !== this.#restarts) return
    const p = { attempt, delay }
    this.#state = 'reconnecting'
    if (channels.reconnecting.hasSubscribers) channels.reconnecting.publish({ client: this, ...p })
    this.emit('reconnecting', p)
  }

  #onGiveUp({ reason, attempts, lastError, gen }) {
    this.#verdict = NO_VERDICT
    const p = { reason, attempts, lastError: lastError && this.#withLookupCause(fromNative(lastError), lastError) }
    const replaced = gen !== N.clientGeneration(this)
    this.#trace('giveup', p.reason)
    // After disconnect() and the close it caused, nothing more is reported.
    if (this.#closing === QUIET || this.#silentUntilIdle || (replaced && this.#closing && !this.#connectAfterClose)) return
    // The close before a giveup left the client closed: a connect() or reconnect() since (in an
    // error or close listener, or before JS saw this giveup, which may have started another
    // driver; or after a disconnect(), to connect once it is done) started it again. This giveup
    // ended the run before it, not the client: as a wait the driver planned before such a call
    // (#onReconnecting), it is not reported (a listener that disconnect()s on a giveup, as the
    // README suggests, would end the run the application asked for).
    if (replaced || (this.#closing ? this.#connectAfterClose : this.#state !== 'closed')) return
    const stops = !this.#closing
    if (stops) {
      this.#state = 'closed'
      const ended = { giveup: p }
      this.#ended = ended
      // Closed: a long-lived signal keeps no listener of it (a connect() listens again).
      this.#unlistenSignal?.()
      this.#unlistenSignal = null
      // Sends held behind a Blob that the addon refused before JS saw this: a call held behind
      // them can go now. If it did (a disconnect(), a connect()), it came before this giveup was
      // reported: as for one made at once, the giveup is not.
      if (this.#held?.stalled) {
        this.#held.resume()
        if (this.#ended !== ended || this.#state !== 'closed') return
      }
    }
    if (channels.giveup.hasSubscribers) channels.giveup.publish({ client: this, ...p })
    if (stops) this.#givingUp = p
    try {
      this.#emit('giveup', p)
    } finally {
      this.#givingUp = null
    }
    // A listener that called connect() started the client again: for opened(), messages() and
    // streams it has not ended.
    if (stops && this.#state !== 'closed') return
    this.#internal?.emit(kGaveUp, p)
    // (After the readers: a stream's writes it failed with the giveup are its own to report.)
    if (stops && this[ONE_CONNECTION] && this.#state === 'closed') {
      const messages = this.#takeQueue('closed')
      if (messages.length > 0) this.#emit('drop', { reason: 'closed', messages })
    }
  }

  /** `{ gen, discarded, upto }`: the driver of generation `gen` exited, having received the disconnect() calls up to `upto`. */
  #onIdle({ gen, discarded, upto }) {
    // The exit report of a driver that connect() has since replaced only settles the calls it received.
    if (gen !== N.clientGeneration(this)) {
      this.#settleCallbacks()
      this.#resolveWaiters(discarded, upto)
      // A connect() after the disconnect() started the new driver: the close is over.
      if (this.#closing && this.#waiters === null) this.#closeDone()
      return
    }
    this.#driverDone = true
    this.#silentUntilIdle = false
    if (this.#endReadersAtIdle) {
      this.#endReadersAtIdle = false
      // (While an earlier disconnect() is unsettled, its completion ends them: #closeDone.)
      if (this.#state === 'closed' && !this.#closing) this.#internal?.emit(kClosed)
    }
    // This client's driver is gone: nothing is left running, every call is settled. A disconnect()
    // that reached the driver only as it exited was not run by it: what is queued is discarded here
    // (after a giveup without one, or disconnects that all keep it, the queue stays for a later connect()).
    const w = this.#waiters
    if (w !== null && !(Array.isArray(w) ? w.every((one) => one.keepQueue) : w.keepQueue)) discarded += N.clientDiscardQueue(this)
    this.#settleDisconnect(discarded, Infinity)
  }

  /** The disconnect() calls up to `upto` completed (and every one when the client is idle). */
  #settleDisconnect(discarded, upto) {
    // Callbacks first: their microtasks run before anything awaiting disconnect() resumes.
    this.#settleCallbacks()
    this.#resolveWaiters(discarded, upto)
    if (this.#closing && this.#waiters === null) this.#closeDone()
  }

  /** Every disconnect() call is settled: the client is closed, or connecting if connect() came meanwhile. */
  #closeDone() {
    this.#closing = false
    const again = this.#connectAfterClose
    this.#connectAfterClose = false
    this.#state = again ? 'connecting' : 'closed'
    if (again) return
    this.#ended = 'disconnected'
    this.#internal?.emit(kClosed)
  }

  /** One more disconnect() to settle (one waiter held alone: most calls have no other beside them). */
  #addWaiter(waiter) {
    const w = this.#waiters
    this.#waiters = w === null ? waiter : Array.isArray(w) ? (w.push(waiter), w) : [w, waiter]
  }

  #resolveWaiters(discarded, upto) {
    const waiters = this.#waiters
    if (waiters === null) return
    if (!Array.isArray(waiters)) {
      if (waiters.seq > upto) return
      this.#waiters = null
      return settleWaiter(waiters, discarded)
    }
    const later = waiters.filter((w) => w.seq > upto)
    this.#waiters = later.length === 0 ? null : later.length === 1 ? later[0] : later
    for (const w of waiters) if (w.seq <= upto) settleWaiter(w, discarded)
  }

  /** Runs the url/headers/protocols providers for one attempt; the native side bounds the wait. */
  async #provide({ id, attempt }) {
    const ctx = { attempt }
    try {
      const { url: u, headers: h, protocols: pr, proxy, origin } = this.#providers
      const url = typeof u === 'function' ? parseUrl(await u(ctx)) : u
      if (typeof url !== 'string') throw makeError('ERR_INVALID_URL', 'The url provider must return a string or a URL', TypeError)
      const headers = typeof h === 'function' ? await h(ctx) : h
      if (headers !== undefined) checkHeaders(headers, 'headers (from the provider)')
      const protocols = typeof pr === 'function' ? await pr(ctx) : pr
      if (protocols !== undefined && protocols !== null) checkProtocols(protocols, 'protocols (from the provider)')
      const bare = splitCredentials(url, flattenHeaders(headers, origin))
      // The attempt that asked may have been cancelled since (its answer is then ignored).
      if (N.clientProvide(this, id, bare.url, bare.headers, toProtocols(protocols ?? undefined), proxyFor(url, proxy))) this.#url = url
    } catch (err) {
      N.clientProvideError(this, id, `a provider failed: ${textOf(err, 'no reason given')}`)
    }
  }

  /** `err` (made from the addon's `p`), with the `lookup` function's own error as its cause if that failure made it. */
  #withLookupCause(err, p) {
    return this.#asked === null ? err : this.#asked.withLookupCause(err, p)
  }

  /**
   * Asks the user's shouldReconnect; `undefined`, a throw or a rejection keep the default verdict.
   * Not once disconnect() has been called (the verdict would be ignored, and a policy that acts,
   * reconnect() say, would undo the disconnect()).
   */
  #decide({ id, info, default: fallback }) {
    if (this.#closing && !this.#connectAfterClose) return void N.clientDecide(this, id, fallback)
    if (this.#state === 'open' && !this.#closing) this.#verdict = VERDICT_PENDING
    const answer = (v) => N.clientDecide(this, id, v === undefined ? fallback : !!v)
    const fail = (err) => {
      N.clientDecide(this, id, fallback)
      rethrowLater(err)
    }
    // The refusal's headers as Node builds them (the addon sends them as Node's rawHeaders).
    if (info.kind === 'handshake') info.headers = headersFrom(info.headers)
    let verdict
    let thenable
    try {
      verdict = this.#shouldReconnect(info)
      thenable = verdict !== null && (typeof verdict === 'object' || typeof verdict === 'function') && typeof verdict.then === 'function'
    } catch (err) {
      return fail(err)
    }
    // As a Promise takes it: a `then` that throws is a rejection, and only its first settling counts.
    if (thenable) Promise.resolve(verdict).then(answer, fail)
    else answer(verdict)
  }

  static {
    readControlOf = (client) => (#paused in client ? client.#readControl() : null)
    heldOf = (client) => (#held in client ? client.#held : null)
  }

  // As ws defines them: the readyState constants read-only and enumerable on the class and its
  // instances, the attributes enumerable.
  static {
    for (const [name, value] of Object.entries({ CONNECTING, OPEN, CLOSING, CLOSED })) {
      Object.defineProperty(this, name, { enumerable: true, value })
      Object.defineProperty(this.prototype, name, { enumerable: true, value })
    }
    for (const name of ['binaryType', 'bufferedAmount', 'extensions', 'isPaused', 'protocol', 'readyState', 'url', 'onopen', 'onmessage', 'onclose', 'onerror']) {
      if (Object.getOwnPropertyDescriptor(this.prototype, name) !== undefined) Object.defineProperty(this.prototype, name, { enumerable: true })
    }
  }

  // One handler per event the addon reports (src/protocol.rs); lib/wire.js checks that none is missing.
  static {
    wire.listen(this.prototype, {
      textBatch: (c, buf) => wire.forEachText(buf, c.#onText, c),
      text: (c, text) => c.#onText(text),
      binary: (c, buf) => c.#onBinary(buf),
      binaryBatch: (c, run) => wire.forEachBinary(run, c.#onBinary, c),
      connecting: (c, attempt) => c.#onConnecting(attempt),
      upgrade: (c, head) => c.#onUpgrade(head),
      open: (c, chosen) => c.#onOpen(chosen),
      error: (c, p) => c.#onError(p),
      closing: (c, p) => c.#onClosing(p),
      close: (c, p) => c.#onClose(p),
      reconnecting: (c, p) => c.#onReconnecting(p),
      giveup: (c, p) => c.#onGiveUp(p),
      ping: (c, data) => c.#onControl('ping', data),
      pong: (c, data) => c.#onControl('pong', data),
      provide: (c, p) => c.#provide(p),
      decide: (c, p) => c.#decide(p),
      disconnected: (c, { discarded, upto }) => c.#settleDisconnect(discarded, upto),
      idle: (c, p) => c.#onIdle(p),
      sent: (c) => c.#settleCallbacks(),
      lookup: (c, p) => c.#asked.lookupHost(p),
      identity: (c, p) => c.#asked.checkIdentity(p),
      redirect: (c, url) => c.#onRedirect(url),
    })
  }
}

/**
 * ws's `createWebSocketStream(ws, options)`: a Duplex over the client's messages (lib/stream.js),
 * for as long as the client lasts, across reconnects.
 */
function createWebSocketStream(client, options) {
  const control = readControlOf(client)
  if (control === null) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'createWebSocketStream() takes a ReconnectingWebSocket', TypeError)
  }
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'createWebSocketStream() options must be an object', TypeError)
  }
  return webSocketStream(client, control, options)
}

module.exports = { ReconnectingWebSocket, createWebSocketStream, Event, MessageEvent, CloseEvent, ErrorEvent, ONE_CONNECTION }
