'use strict'
// Drop-in compatibility with reconnecting-websocket 4.4 and partysocket 1.3:
// their constructor shape `(url, protocols?, options?)` and option names.
// A client built this way runs in "rws" mode (see docs/migrating.md): their
// defaults, their retryCount, their event order.

const { makeError } = require('./errors')

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

/** Whether the options use a reconnecting-websocket name (then they are copied and rewritten). */
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
 * options plus the compat settings (`null` for the native redial-ws shape).
 */
function normalizeArgs(second, third, argc) {
  const rwsShape = isRwsShape(second, argc)
  const given = rwsShape ? third : second
  if (given !== undefined && given !== null && (typeof given !== 'object' || Array.isArray(given))) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be an object', TypeError)
  }
  if (!rwsShape && !hasTheirs(given)) return { options: given ?? NO_OPTIONS, compat: null }
  const options = { ...(given ?? {}) }
  let compat = rwsShape
  for (const [theirs, ours] of ALIAS_PAIRS) {
    if (!(theirs in options)) continue
    compat = true
    if (ours in options) {
      throw makeError('ERR_INVALID_ARG_VALUE', `Options "${theirs}" and "${ours}" are the same setting: pass one`, TypeError)
    }
    if (options[theirs] !== undefined) options[ours] = options[theirs]
    delete options[theirs]
  }
  const extra = {}
  for (const name of THEIRS) {
    if (!(name in options)) continue
    compat = true
    extra[name] = options[name]
    delete options[name]
  }
  if (rwsShape && second !== undefined && second !== null) {
    if (options.protocols !== undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', 'Subprotocols were given both as an argument and as an option', TypeError)
    }
    options.protocols = second
  }
  if (!compat) return { options, compat: null }

  for (const [key, value] of RWS_DEFAULT_PAIRS) if (options[key] === undefined) options[key] = value
  if (options.maxDelay < options.minDelay) options.maxDelay = options.minDelay
  const max = extra.maxEnqueuedMessages
  if (max !== undefined && (typeof max !== 'number' || !(max >= 0))) {
    throw makeError('ERR_OUT_OF_RANGE', `The "maxEnqueuedMessages" option must be a number >= 0. Received ${String(max)}`, RangeError)
  }
  const ownQueue = options.queue === undefined
  if (ownQueue) {
    // Their queue keeps the oldest messages and drops new ones past the limit (we also report them).
    options.queue = { maxMessages: max === undefined ? Infinity : Math.floor(max), maxBytes: Infinity, overflow: 'reject' }
  }
  for (const fn of ['debugLogger', 'shouldReconnectOnClose']) {
    if (extra[fn] !== undefined && typeof extra[fn] !== 'function') {
      throw makeError('ERR_INVALID_ARG_TYPE', `The "${fn}" option must be a function`, TypeError)
    }
  }
  return {
    options,
    compat: {
      debug: extra.debug === true,
      log: extra.debugLogger ?? console.log,
      dropNewest: ownQueue,
      shouldReconnectOnClose: extra.shouldReconnectOnClose,
      // State of this mode (see lib/client.js).
      socketSeen: false,
      pendingError: null,
      suppressClose: false,
      readyStateOverride: undefined,
    },
  }
}

module.exports = { normalizeArgs, RWS_MIN_DELAY }
