'use strict'
// Everything reconnecting-websocket 4.4 and partysocket 1.3: their constructor
// shape `(url, protocols?, options?)` and option names, and the behaviour of a
// client built that way ("rws mode", see docs/migrating.md): their defaults,
// their event order, their url and readyState quirks.

const { makeError, optionTypeError } = require('./errors')
const { CloseEvent, ErrorEvent } = require('./whatwg')
const { rethrowLater } = require('./later')

const CLOSING = 2

/**
 * The errors of an open connection that ws reports as an `error` event (the peer broke the protocol
 * or a limit), which reconnecting-websocket turns into a close of its own, then the error. ws reports
 * an open connection that ends without a close frame (reset, end, or a heartbeat's timeout here) as
 * its close alone: 1006, not clean.
 */
const PEER_ERRORS = new Set(['ERR_PROTOCOL', 'ERR_INVALID_UTF8', 'ERR_MESSAGE_TOO_BIG', 'ERR_TOO_MANY_FRAGMENTS'])

/** reconnecting-websocket's option names -> ours. */
const ALIASES = {
  minReconnectionDelay: 'minDelay',
  maxReconnectionDelay: 'maxDelay',
  reconnectionDelayGrowFactor: 'factor',
  connectionTimeout: 'connectTimeout',
}

/** Their options without a redial-ws counterpart of the same name. */
const THEIRS = ['maxEnqueuedMessages', 'debug', 'debugLogger', 'WebSocket', 'shouldReconnectOnClose']

// Like reconnecting-websocket, the default minimum delay is drawn once per process.
const RWS_MIN_DELAY = 1000 + Math.random() * 4000

const RWS_DEFAULTS = {
  minDelay: RWS_MIN_DELAY,
  maxDelay: 10_000,
  factor: 1.3,
  jitter: 'none',
  minUptime: 5_000,
  connectTimeout: 4_000,
}

const ALIAS_PAIRS = Object.entries(ALIASES)
const RWS_DEFAULT_PAIRS = Object.entries(RWS_DEFAULTS)
const NO_OPTIONS = Object.freeze({})

/** Whether the options hold a reconnecting-websocket name (then they are copied and rewritten). */
function hasTheirs(options) {
  if (options === undefined || options === null) return false
  for (const name in ALIASES) if (name in options) return true
  for (const name of THEIRS) if (name in options) return true
  return false
}

function isRwsShape(second, argc) {
  return argc >= 3 || typeof second === 'string' || Array.isArray(second) || typeof second === 'function' || second === null
}

/**
 * Normalises `(url, protocols?, options?)` or `(url, options?)` into our
 * options plus the rws mode of the client (`null` for the native redial-ws shape).
 * `client` is the target of the close events partysocket's `shouldReconnectOnClose` receives.
 */
function normalizeArgs(second, third, argc, client) {
  const rwsShape = isRwsShape(second, argc)
  const given = rwsShape ? third : second
  if (given !== undefined && given !== null && (typeof given !== 'object' || Array.isArray(given))) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be an object', TypeError)
  }
  if (!rwsShape && !hasTheirs(given)) return { options: given ?? NO_OPTIONS, rws: null }
  const options = { ...(given ?? {}) }
  // Ours -> theirs, for the errors of the options renamed (they name what the caller wrote).
  let renamed = null
  let compat = rwsShape
  // A name whose value is undefined is not given (as for every other option): it is taken out,
  // and neither switches the client to their defaults nor conflicts with ours.
  for (const [theirs, ours] of ALIAS_PAIRS) {
    if (!(theirs in options)) continue
    const value = options[theirs]
    delete options[theirs]
    if (value === undefined) continue
    compat = true
    if (options[ours] !== undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', `Options "${theirs}" and "${ours}" are the same setting: pass one`, TypeError)
    }
    options[ours] = value
    ;(renamed ??= new Map()).set(ours, theirs)
  }
  const extra = {}
  for (const name of THEIRS) {
    if (!(name in options)) continue
    const value = options[name]
    delete options[name]
    if (value === undefined) continue
    compat = true
    extra[name] = value
  }
  if (rwsShape && second !== undefined && second !== null) {
    if (options.protocols !== undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', 'Subprotocols were given both as an argument and as an option', TypeError)
    }
    options.protocols = second
  }
  if (!compat) return { options, rws: null }

  for (const [key, value] of RWS_DEFAULT_PAIRS) if (options[key] === undefined) options[key] = value
  const max = extra.maxEnqueuedMessages
  if (max !== undefined && typeof max !== 'number') {
    throw optionTypeError('maxEnqueuedMessages', 'a number', max)
  }
  if (max !== undefined && !(max >= 0)) {
    throw makeError('ERR_OUT_OF_RANGE', `The "maxEnqueuedMessages" option must be a number >= 0. Received ${String(max)}`, RangeError)
  }
  const ownQueue = options.queue === undefined
  if (ownQueue) {
    // Their queue keeps the oldest messages and drops new ones past the limit (we also report them).
    options.queue = { maxMessages: max === undefined ? Infinity : Math.floor(max), maxBytes: Infinity, overflow: 'reject' }
  }
  // As every boolean option here: a truthy non-boolean is a mistake, not "on".
  if (extra.debug !== undefined && typeof extra.debug !== 'boolean') {
    throw optionTypeError('debug', 'a boolean', extra.debug)
  }
  for (const fn of ['debugLogger', 'shouldReconnectOnClose']) {
    if (extra[fn] !== undefined && typeof extra[fn] !== 'function') {
      throw makeError('ERR_INVALID_ARG_TYPE', `The "${fn}" option must be a function`, TypeError)
    }
  }
  const decide = extra.shouldReconnectOnClose
  if (decide !== undefined && options.shouldReconnect === undefined) {
    options.shouldReconnect = (info) =>
      info.kind === 'close' ? decide(new CloseEvent(info.code, info.reason, info.wasClean, client)) : undefined
  }
  return { options, rws: new RwsMode(extra.debug, extra.debugLogger ?? console.log, ownQueue), renamed }
}

/**
 * An error of the options, naming the reconnecting-websocket option the caller wrote (`renamed`:
 * ours -> theirs, from normalizeArgs) rather than ours it became.
 */
function inTheirNames(err, renamed) {
  if (renamed === null || typeof err?.message !== 'string') return err
  for (const [ours, theirs] of renamed) {
    const named = `"${ours}"`
    if (!err.message.includes(named)) continue
    const message = err.message.replace(named, `"${theirs}"`)
    // (A function: the message is not a replacement pattern, whatever `$` it holds.)
    if (typeof err.stack === 'string') err.stack = err.stack.replace(err.message, () => message)
    err.message = message
  }
  return err
}

/**
 * The state and behaviour of a client in rws mode. The client calls these at
 * the points where reconnecting-websocket behaves differently from redial-ws.
 * `surface` is the client's WHATWG surface (lib/whatwg.js), or null when
 * nothing listens that way.
 */
class RwsMode {
  /** Whether `debug` logging is on, and where it goes (`debugLogger`). */
  debug
  log
  /** Past `maxEnqueuedMessages`, the new message is dropped (we also report it in a `drop` event). */
  dropNewest
  /** No socket yet: `url` is '' and `reconnect()` does nothing. */
  socketSeen = false
  /** An error waits for the close event that follows it (their order: close, then error). */
  pendingError = null
  /** The connection whose close comes next opened (its end is no failed attempt). */
  connected = false
  /** `reconnect()` fired the close event of the connection that closes next (the server may have closed it first). */
  suppressClose = false
  /** An open was reported that no close has answered yet: the next close is that connection's, whatever caused it. */
  openShown = false
  /** The readyState their listeners see while a synthetic event is fired. */
  readyStateOverride = undefined
  /** The retryCount their listeners see while `failed()` fires its events (the native count comes with the close). */
  retryCountOverride = undefined

  constructor(debug, log, dropNewest) {
    this.debug = debug === true
    this.log = log
    this.dropNewest = dropNewest
  }

  url(url) {
    return this.socketSeen ? url : ''
  }

  /** As ws reports them under reconnecting-websocket: the extensions' names only. */
  extensions(answer) {
    return answer === '' ? '' : answer.split(',').map((e) => e.split(';')[0].trim()).join()
  }

  /** `reconnect()` right after the constructor: their first connection is still being set up, so nothing happens. */
  ignoresReconnect(state) {
    return !this.socketSeen && state === 'connecting'
  }

  /** An open from the native side (its WHATWG event follows). */
  opened() {
    this.connected = true
    this.openShown = true
    // A close reconnect() fired before this open was for the attempt that has now opened: this
    // connection's own close is reported when it comes.
    this.suppressClose = false
  }

  /** `reconnect()` closing a connection: their close event fires at once, with this code and reason. */
  reconnected(code, reason, client, surface) {
    this.suppressClose = true
    this.openShown = false
    if (surface?.wants('close')) this.#fireAs(CLOSING, new CloseEvent(code, reason, true, client), client, surface)
  }

  /**
   * The client failed an open connection (a frame that broke the protocol, a message too big) and
   * reported the error (`pendingError`): reconnecting-websocket closes the socket on ws's error at
   * once, firing a clean 1000 close, then the error; the connection's own close is not fired again.
   * `retryCount`: the count their listeners read then, as their reconnect has counted this failure.
   */
  failed(client, surface, retryCount) {
    const error = this.pendingError
    if (error === null || !this.connected || !PEER_ERRORS.has(error.code)) return
    this.pendingError = null
    this.suppressClose = true
    this.openShown = false
    this.retryCountOverride = retryCount
    try {
      this.#closeWithError(error, client, surface)
    } finally {
      this.retryCountOverride = undefined
    }
  }

  /**
   * A close from the native side, after the EventEmitter listeners ran: their WHATWG events.
   * `byReconnect`: a `reconnect()` ended it, which fired its close then, or had no socket of theirs to close.
   */
  closed(p, byReconnect, client, surface) {
    const pending = this.pendingError
    // A connection that opened and then dropped is reported by its close alone, as ws reports it.
    const error = pending !== null && (!this.connected || PEER_ERRORS.has(pending.code)) ? pending : null
    this.pendingError = null
    this.connected = false
    // Every open reported is answered by one close: only closes of connections whose open was
    // not reported (or whose close reconnect() fired) are theirs to leave out.
    const suppress = (this.suppressClose || byReconnect) && !this.openShown
    this.suppressClose = false
    this.openShown = false
    // (Nor its error: their listeners are off the old socket.)
    if (suppress) return
    if (!surface) return
    if (error) return this.#closeWithError(error, client, surface)
    if (surface.wants('close')) surface.fire(new CloseEvent(p.code, p.reason, p.wasClean, client), client, rethrowLater)
  }

  /** reconnecting-websocket closes a failed socket (or one ws reported an error on) itself: a clean 1000 close, then the error. */
  #closeWithError(error, client, surface) {
    if (!surface) return
    const timeout = error.code === 'ERR_CONNECT_TIMEOUT'
    if (surface.wants('close')) this.#fireAs(CLOSING, new CloseEvent(1000, timeout ? 'timeout' : '', true, client), client, surface)
    if (surface.wants('error')) {
      // The client's error itself (its `cause`, `status`, `headers` with it), but for their
      // message on a timeout.
      const err = timeout ? makeError(error.code, 'TIMEOUT', Error, error.cause === undefined ? undefined : { cause: error.cause }) : error
      this.#fireAs(CLOSING, new ErrorEvent(err, client), client, surface)
    }
  }

  // Fixed arguments rather than a rest array: called on every event.
  trace(what, a, b) {
    if (!this.debug) return
    const args = ['RWS>', what]
    if (a !== undefined) args.push(a)
    if (b !== undefined) args.push(b)
    this.log(...args)
  }

  #fireAs(readyState, event, client, surface) {
    this.readyStateOverride = readyState
    try {
      surface.fire(event, client, rethrowLater)
    } finally {
      this.readyStateOverride = undefined
    }
  }
}

module.exports = { normalizeArgs, inTheirNames, ALIASES, THEIRS, PEER_ERRORS }
