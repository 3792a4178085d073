'use strict'
// Validation of everything the user passes, with defaults. Errors are thrown
// synchronously, with Node-style codes: TypeError/ERR_INVALID_ARG_TYPE for a
// wrong type, RangeError/ERR_OUT_OF_RANGE for a bad value,
// ERR_UNKNOWN_OPTION for a name we do not know (typos are not ignored).

const dns = require('node:dns')
const net = require('node:net')
const { isIP } = net
const { makeError, optionTypeError: typeError } = require('./errors')
const { TLS_KEYS, parseTls } = require('./tls')
const { checkProxy, proxyEnv } = require('./proxy')

const DEFAULTS = Object.freeze({
  minDelay: 250,
  maxDelay: 30_000,
  factor: 2,
  jitter: 'spread',
  maxRetries: Infinity,
  minUptime: 5_000,
  connectTimeout: 10_000,
  followRedirects: false,
  maxRedirects: 10,
  family: 0,
  localAddress: undefined,
  localPort: 0,
  // Node's process-wide defaults (net.getDefaultAutoSelectFamily...) when left out.
  autoSelectFamily: undefined,
  autoSelectFamilyAttemptTimeout: undefined,
  lookup: undefined,
  hints: 0,
  closeTimeout: 2_000,
  maxPayload: 64 * 1024 * 1024,
  maxFragments: 0,
  skipUTF8Validation: false,
  autoPong: true,
  startClosed: false,
  pingInterval: 30_000,
  pongTimeout: 10_000,
  honorRetryAfter: 'capped',
  shouldReconnect: undefined,
  queue: undefined,
  headers: undefined,
  protocols: undefined,
  tls: undefined,
  proxy: undefined,
  origin: undefined,
  binaryType: 'nodebuffer',
  signal: undefined,
  perMessageDeflate: true,
})

const BINARY_TYPES = ['nodebuffer', 'arraybuffer', 'uint8array', 'fragments', 'blob']

const QUEUE_DEFAULTS = Object.freeze({ maxMessages: 1_000, maxBytes: 4 * 1024 * 1024, overflow: 'reject' })

/** Shared and frozen: read, never modified. */
const NONE = Object.freeze([])

const JITTERS = ['spread', 'full', 'equal', 'none']

function rangeError(name, expected, value) {
  return makeError('ERR_OUT_OF_RANGE', `The "${name}" option must be ${expected}. Received ${String(value)}`, RangeError)
}

/** The largest timer delay JavaScript accepts (2^31 - 1 ms); durations above it are refused. */
const MAX_TIMER = 2 ** 31 - 1

// Rules of the numeric options (positional, and the message built only on error: a fleet of
// clients is constructed in a loop, and each construction should leave little garbage).
const ANY = 0
const INTEGER = 1
const OR_INFINITY = 2
const ABOVE_MIN = 4

/** The longest message that can reach JS: a Buffer's length limit, and V8's for strings. */
const MAX_BUFFER_LENGTH = require('node:buffer').constants.MAX_LENGTH
const MAX_STRING_LENGTH = require('node:buffer').constants.MAX_STRING_LENGTH

function number(opts, name, flags = ANY, min = 0, max = Infinity) {
  const v = opts[name]
  if (v === undefined) return DEFAULTS[name]
  if (typeof v !== 'number') throw typeError(name, 'a number', v)
  const integer = (flags & INTEGER) !== 0
  const allowInfinity = (flags & OR_INFINITY) !== 0
  const minExclusive = (flags & ABOVE_MIN) !== 0
  if (
    Number.isNaN(v) ||
    (v === Infinity ? !allowInfinity : !Number.isFinite(v)) ||
    (minExclusive ? v <= min : v < min) ||
    (v > max && v !== Infinity) ||
    (integer && v !== Infinity && !Number.isInteger(v))
  ) {
    const bound = max === Infinity ? '' : ` and <= ${max}`
    const what = `${integer ? 'an integer' : 'a number'} ${minExclusive ? '>' : '>='} ${min}${bound}${allowInfinity ? ' or Infinity' : ''}`
    throw rangeError(name, what, v)
  }
  return v
}

/**
 * What becomes of `ws`'s client options that are not options here: passing one throws, saying
 * this, rather than being ignored.
 */
const WS_OPTIONS = Object.freeze({
  __proto__: null,
  handshakeTimeout: 'use connectTimeout, which covers TCP, proxy, TLS and the upgrade',
  ...Object.fromEntries(TLS_KEYS.map((k) => [k, `use tls.${k}`])),
  agent: "use proxy (a proxy URL: http://, socks5:// or socks5h://); an https.Agent's TLS options go under tls",
  timeout: 'use connectTimeout (ws overrides timeout with its handshakeTimeout)',
  secureContext: 'give its ca, cert and key under tls',
  keepAlive: 'leave it out: pingInterval and pongTimeout keep the connection alive and find a dead one',
  keepAliveInitialDelay: 'leave it out: pingInterval and pongTimeout keep the connection alive and find a dead one',
  noDelay: "leave it out: Nagle's algorithm is always off (TCP_NODELAY), as in ws",
  socketPath: 'use a ws+unix: URL (ws+unix:/path/to/socket:/request/path)',
  maxHeaderSize: "leave it out: an upgrade answer's head may be up to 64 KiB",
  ALPNProtocols: 'leave it out: no ALPN is offered (the upgrade is HTTP/1.1)',
  auth: 'put the credentials in the URL or an Authorization header',
  finishRequest: 'give headers, url or protocols as a function, called for each attempt',
  createConnection: 'there is none: the addon makes the socket',
  generateMask: 'there is none: every frame is masked with random bytes from the operating system',
  protocolVersion: 'leave it out: the version is always 13 (RFC 6455)',
  allowSynchronousEvents: 'leave it out: the messages of one read are always emitted in the same turn',
  maxPendingAutoPongs: 'leave it out: a peer that does not read gets only the latest pong',
  maxBufferedChunks: 'leave it out: maxPayload and maxFragments bound what a message holds',
})

/** The options of a client that reconnects, which a WebSocket (one connection) does not take. */
const RECONNECTING = ['minDelay', 'maxDelay', 'factor', 'jitter', 'maxRetries', 'minUptime', 'honorRetryAfter', 'shouldReconnect', 'startClosed']
const KNOWN = Object.keys(DEFAULTS).join(', ')
const KNOWN_TO_ONE_CONNECTION = Object.keys(DEFAULTS)
  .filter((k) => !RECONNECTING.includes(k))
  .join(', ')

/**
 * Validates `options`; returns the native options and the JS-only ones. In rws mode
 * (`rws` true) a `maxDelay` below `minDelay` caps every delay, as in reconnecting-websocket.
 * `oneConnection`: for a WebSocket, whose unknown option's error lists only what it takes.
 */
function parseOptions(options, rws = false, oneConnection = false) {
  if (options === undefined || options === null) options = {}
  if (typeof options !== 'object' || Array.isArray(options)) throw typeError('options', 'an object', options)
  for (const key in options) {
    if (Object.hasOwn(options, key) && !(key in DEFAULTS)) {
      const hint = key in WS_OPTIONS ? `ws's option: ${WS_OPTIONS[key]}; see docs/migrating.md` : `known options: ${oneConnection ? KNOWN_TO_ONE_CONNECTION : KNOWN}`
      throw makeError('ERR_UNKNOWN_OPTION', `Unknown option "${key}" (${hint})`, TypeError)
    }
  }
  const minDelay = number(options, 'minDelay')
  // An explicit minDelay above the default cap raises the cap rather than failing.
  const maxDelay = options.maxDelay === undefined ? Math.max(DEFAULTS.maxDelay, minDelay) : number(options, 'maxDelay', OR_INFINITY)
  if (maxDelay < minDelay && !rws) throw rangeError('maxDelay', `>= minDelay (${minDelay})`, maxDelay)
  const factor = number(options, 'factor', ANY, 1)
  const jitter = options.jitter === undefined ? DEFAULTS.jitter : options.jitter
  if (typeof jitter !== 'string') throw typeError('jitter', "one of 'spread', 'full', 'equal', 'none'", jitter)
  if (!JITTERS.includes(jitter)) throw rangeError('jitter', "one of 'spread', 'full', 'equal', 'none'", jitter)
  const startClosed = options.startClosed === undefined ? false : options.startClosed
  if (typeof startClosed !== 'boolean') throw typeError('startClosed', 'a boolean', startClosed)
  const followRedirects = options.followRedirects === undefined ? false : options.followRedirects
  if (typeof followRedirects !== 'boolean') throw typeError('followRedirects', 'a boolean', followRedirects)
  const maxRedirects = number(options, 'maxRedirects', INTEGER, 0, 2 ** 32 - 1)
  const family = options.family === undefined ? 0 : options.family
  if (family !== 0 && family !== 4 && family !== 6) {
    throw makeError('ERR_INVALID_ARG_VALUE', `The "family" option must be one of 0, 4, 6. Received ${String(family)}`, TypeError)
  }
  const localAddress = options.localAddress
  if (localAddress !== undefined) {
    if (typeof localAddress !== 'string') throw typeError('localAddress', 'a string', localAddress)
    // A zone (fe80::1%eth0) is not taken: the addon binds a plain address.
    if (isIP(localAddress) === 0 || localAddress.includes('%')) {
      throw makeError('ERR_INVALID_ARG_VALUE', `The "localAddress" option must be an IP address, without a zone. Received '${localAddress}'`, TypeError)
    }
  }
  const autoSelectFamily = options.autoSelectFamily === undefined ? (net.getDefaultAutoSelectFamily?.() ?? true) : options.autoSelectFamily
  if (typeof autoSelectFamily !== 'boolean') throw typeError('autoSelectFamily', 'a boolean', autoSelectFamily)
  const attemptTimeout =
    options.autoSelectFamilyAttemptTimeout === undefined
      ? (net.getDefaultAutoSelectFamilyAttemptTimeout?.() ?? 250)
      : number(options, 'autoSelectFamilyAttemptTimeout', INTEGER, 1, MAX_TIMER)
  const skipUTF8Validation = options.skipUTF8Validation === undefined ? false : options.skipUTF8Validation
  if (typeof skipUTF8Validation !== 'boolean') throw typeError('skipUTF8Validation', 'a boolean', skipUTF8Validation)
  const autoPong = options.autoPong === undefined ? true : options.autoPong
  if (typeof autoPong !== 'boolean') throw typeError('autoPong', 'a boolean', autoPong)
  if (options.lookup !== undefined && typeof options.lookup !== 'function') throw typeError('lookup', 'a function', options.lookup)
  const hints = parseHints(options.hints)
  // As net.connect does with hints: host names are looked up by dns.lookup (or the user's lookup), with them.
  const lookup = options.lookup ?? (hints !== 0 ? dns.lookup : undefined)
  const honorRetryAfter = options.honorRetryAfter === undefined ? 'capped' : options.honorRetryAfter
  if (honorRetryAfter !== 'capped' && honorRetryAfter !== 'always' && honorRetryAfter !== 'never') {
    throw rangeError('honorRetryAfter', "one of 'capped', 'always', 'never'", honorRetryAfter)
  }
  const shouldReconnect = options.shouldReconnect
  if (shouldReconnect !== undefined && typeof shouldReconnect !== 'function') {
    throw typeError('shouldReconnect', 'a function', shouldReconnect)
  }
  const queue = parseQueue(options.queue)
  const tls = parseTls(options.tls)
  const proxy = options.proxy
  if (proxy !== undefined && proxy !== null && proxy !== false) checkProxy(proxy)
  if (options.origin !== undefined) {
    if (typeof options.origin !== 'string') throw typeError('origin', 'a string', options.origin)
    checkHeaderValue('origin', options.origin)
  }
  const binaryType = options.binaryType === undefined ? 'nodebuffer' : checkBinaryType(options.binaryType)
  const headers = options.headers
  if (headers !== undefined && typeof headers !== 'function') checkHeaders(headers)
  const protocols = options.protocols
  if (protocols !== undefined && typeof protocols !== 'function') checkProtocols(protocols)
  const signal = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'The "signal" option must be an AbortSignal', TypeError)
  }
  const native = {
    minDelay,
    maxDelay,
    factor,
    jitter,
    maxRetries: number(options, 'maxRetries', INTEGER | OR_INFINITY),
    minUptime: number(options, 'minUptime', ANY, 0, MAX_TIMER),
    connectTimeout: number(options, 'connectTimeout', ABOVE_MIN, 0, MAX_TIMER),
    maxRedirects: followRedirects ? maxRedirects : undefined,
    family,
    localAddress,
    localPort: number(options, 'localPort', INTEGER, 0, 65535),
    // As net.connect: at least 10 ms between two addresses' attempts.
    nextAddressAfter: autoSelectFamily ? Math.max(attemptTimeout, 10) : 0,
    lookup: lookup !== undefined,
    closeTimeout: number(options, 'closeTimeout', ABOVE_MIN, 0, MAX_TIMER),
    // Capped at what can be delivered: a Buffer's maximum length (text: see maxTextPayload).
    maxPayload: number(options, 'maxPayload', INTEGER, 1, MAX_BUFFER_LENGTH),
    maxTextPayload: 0,
    // As ws's option: the most frames a message may come in; 0, no limit (ws's client defaults to
    // 16384, which fails Autobahn's cases 9.3 and 9.4: their messages come in up to 65,536 frames).
    maxFragments: number(options, 'maxFragments', INTEGER, 0, 2 ** 32 - 1),
    skipUtf8Validation: skipUTF8Validation,
    autoPong,
    pingInterval: number(options, 'pingInterval', ANY, 0, MAX_TIMER),
    pongTimeout: number(options, 'pongTimeout', ABOVE_MIN, 0, MAX_TIMER),
    honorRetryAfter,
    askPolicy: shouldReconnect !== undefined,
    providers: typeof headers === 'function' || typeof protocols === 'function',
    queueEnabled: queue !== false,
    queueMaxMessages: queue ? queue.maxMessages : 0,
    queueMaxBytes: queue ? queue.maxBytes : 0,
    queueDropOldest: queue ? queue.overflow === 'drop-oldest' : false,
    headers: typeof headers === 'function' ? [] : flattenHeaders(headers, options.origin),
    protocols: typeof protocols === 'function' ? [] : toProtocols(protocols),
    tlsCa: tls.ca,
    tlsCaOnly: tls.caOnly,
    tlsRejectUnauthorized: tls.rejectUnauthorized,
    tlsServername: tls.servername,
    tlsCert: tls.cert,
    tlsKey: tls.key,
    tlsCheckIdentity: tls.checkServerIdentity !== undefined,
    tlsMinVersion: tls.minVersion,
    tlsMaxVersion: tls.maxVersion,
    tlsCipherSuites: tls.cipherSuites,
    tlsKxGroups: tls.kxGroups,
    tlsSigSchemes: tls.sigSchemes,
    proxy: undefined,
    // A redirect to another host or scheme decides its own proxy from the environment, as the
    // client's URL did (proxyFor): the addon follows redirects.
    proxyEnv: followRedirects && proxy === undefined ? proxyEnv() : undefined,
    perMessageDeflate: parseDeflate(options.perMessageDeflate),
  }
  // A longer text message cannot become a string: it ends the connection with 1009 (as any over maxPayload).
  native.maxTextPayload = Math.min(native.maxPayload, MAX_STRING_LENGTH)
  return { native, startClosed, shouldReconnect, lookup, hints, tls, headers, protocols, proxy, origin: options.origin, binaryType, signal }
}

const HINT_FLAGS = dns.ADDRCONFIG | dns.V4MAPPED | dns.ALL

/** `hints`: getaddrinfo flags for dns.lookup, checked as Node checks them. */
function parseHints(hints) {
  if (hints === undefined) return 0
  if (typeof hints !== 'number') throw typeError('hints', 'a number', hints)
  if (!Number.isInteger(hints) || hints < 0 || (hints & ~HINT_FLAGS) !== 0) {
    throw makeError('ERR_INVALID_ARG_VALUE', `The "hints" option must be dns.ADDRCONFIG, dns.V4MAPPED, dns.ALL or a combination of them. Received ${hints}`, TypeError)
  }
  return hints
}

// permessage-deflate (RFC 7692) with ws's client option names. What the native side gets is
// shared and frozen for the default, so a fleet of clients makes no object per client for it.
const DEFLATE_KEYS = [
  'threshold',
  'clientNoContextTakeover',
  'serverNoContextTakeover',
  'clientMaxWindowBits',
  'serverMaxWindowBits',
  'level',
  'memLevel',
  'zlibDeflateOptions',
  'zlibInflateOptions',
  'concurrencyLimit',
]
const DEFLATE_DEFAULT = Object.freeze({
  threshold: 1024,
  clientNoContextTakeover: false,
  serverNoContextTakeover: false,
  offerClientMaxWindowBits: true,
  clientMaxWindowBits: undefined,
  serverMaxWindowBits: undefined,
  level: 6,
})

/** `perMessageDeflate`: `true` (the default), `false`, or ws's object form. */
function parseDeflate(v) {
  if (v === undefined || v === true) return DEFLATE_DEFAULT
  if (v === false) return undefined
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw typeError('perMessageDeflate', 'a boolean or an object', v)
  for (const key of Object.keys(v)) {
    if (!DEFLATE_KEYS.includes(key)) {
      throw makeError('ERR_UNKNOWN_OPTION', `Unknown perMessageDeflate option "${key}" (known: ${DEFLATE_KEYS.join(', ')})`, TypeError)
    }
  }
  const name = (key) => `perMessageDeflate.${key}`
  const int = (obj, key, min, max, fallback, label = name(key)) => {
    const x = obj[key]
    if (x === undefined) return fallback
    if (typeof x !== 'number') throw typeError(label, 'a number', x)
    if (!Number.isInteger(x) || x < min || x > max) throw rangeError(label, `an integer >= ${min} and <= ${max}`, x)
    return x
  }
  const bool = (key) => {
    const x = v[key]
    if (x === undefined) return false
    if (typeof x !== 'boolean') throw typeError(name(key), 'a boolean', x)
    return x
  }
  const zlib = (key) => {
    const x = v[key]
    if (x === undefined) return {}
    if (typeof x !== 'object' || x === null || Array.isArray(x)) throw typeError(name(key), 'an object', x)
    return x
  }
  const deflateOptions = zlib('zlibDeflateOptions')
  zlib('zlibInflateOptions')
  // (ws accepts Infinity: no limit, which is what it means here too.)
  if (v.concurrencyLimit !== Infinity) int(v, 'concurrencyLimit', 1, Infinity, 10)
  // zlib's "default level" (-1) is 6.
  let level = int(deflateOptions, 'level', -1, 9, 6, 'perMessageDeflate.zlibDeflateOptions.level')
  level = int(v, 'level', -1, 9, level)
  int(deflateOptions, 'memLevel', 1, 9, 8, 'perMessageDeflate.zlibDeflateOptions.memLevel')
  int(v, 'memLevel', 1, 9, 8)
  const clientBits = v.clientMaxWindowBits
  if (clientBits !== undefined && typeof clientBits !== 'boolean') int(v, 'clientMaxWindowBits', 8, 15)
  const serverBits = v.serverMaxWindowBits
  if (serverBits !== undefined && serverBits !== false) int(v, 'serverMaxWindowBits', 8, 15)
  return {
    threshold: int(v, 'threshold', 0, Number.MAX_SAFE_INTEGER, 1024),
    clientNoContextTakeover: bool('clientNoContextTakeover'),
    serverNoContextTakeover: bool('serverNoContextTakeover'),
    offerClientMaxWindowBits: clientBits !== false,
    clientMaxWindowBits: typeof clientBits === 'number' ? clientBits : undefined,
    serverMaxWindowBits: typeof serverBits === 'number' ? serverBits : undefined,
    level: level === -1 ? 6 : level,
  }
}

function checkBinaryType(v) {
  if (!BINARY_TYPES.includes(v)) throw rangeError('binaryType', "'nodebuffer', 'arraybuffer', 'uint8array', 'fragments' or 'blob'", v)
  return v
}

/**
 * The addon's key for the configuration that `url` and `native` (parseOptions' `native`, as it
 * goes to the addon) make: clients with equal keys share one, and the addon converts `native`
 * only for a key it has not seen. JSON stands for every field; validation leaves no NaN nor
 * -Infinity, so the `null` it writes for a number is always Infinity.
 */
function configKey(url, native) {
  return JSON.stringify([url, native])
}

function parseQueue(queue) {
  if (queue === false) return false
  if (queue === undefined || queue === true) return QUEUE_DEFAULTS
  if (typeof queue !== 'object' || queue === null || Array.isArray(queue)) throw typeError('queue', 'false or an object', queue)
  for (const key of Object.keys(queue)) {
    if (!(key in QUEUE_DEFAULTS)) throw makeError('ERR_UNKNOWN_OPTION', `Unknown option "queue.${key}"`, TypeError)
  }
  const q = { ...QUEUE_DEFAULTS }
  for (const key of Object.keys(queue)) if (queue[key] !== undefined) q[key] = queue[key]
  for (const key of ['maxMessages', 'maxBytes']) {
    const v = q[key]
    if (typeof v !== 'number') throw typeError(`queue.${key}`, 'a number', v)
    if (!(v >= 0) || (v !== Infinity && !Number.isInteger(v))) throw rangeError(`queue.${key}`, 'an integer >= 0 or Infinity', v)
  }
  if (!['reject', 'drop-oldest'].includes(q.overflow)) throw rangeError('queue.overflow', "'reject' or 'drop-oldest'", q.overflow)
  return q
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

// What Node's http refuses in a header value: control characters other than tab (CR/LF would
// split the request) and anything beyond Latin-1, which it writes one byte per character (so
// does the native side).
const INVALID_HEADER_CHAR = /[^\t\x20-\x7e\x80-\xff]/

/** Node's check and message (the value is not echoed: it may be a credential). */
function checkHeaderValue(name, value) {
  if (INVALID_HEADER_CHAR.test(value)) throw makeError('ERR_INVALID_CHAR', `Invalid character in header content ["${name}"]`, TypeError)
}

/**
 * A headers option's name, value pairs: a plain object's own properties, or a fetch `Headers`'
 * or a `Map`'s entries (which Object.entries would see as none, and send nothing).
 */
function headerEntries(headers) {
  return headers instanceof Map || isFetchHeaders(headers) ? [...headers] : Object.entries(headers)
}

/**
 * A fetch `Headers` (Node's, or a polyfill's), told by its tag: reading the global `Headers` would
 * load Node's undici (about 8 MiB, and a WebAssembly instance that fails under `ulimit -v`).
 */
function isFetchHeaders(headers) {
  return headers[Symbol.toStringTag] === 'Headers' && typeof headers[Symbol.iterator] === 'function'
}

/** Headers as an object of name -> string (or array of strings), a Headers or a Map; validated early. */
function checkHeaders(headers, name = 'headers') {
  if (typeof headers !== 'object' || headers === null || Array.isArray(headers)) throw typeError(name, 'an object, a Headers or a Map', headers)
  for (const [k, v] of headerEntries(headers)) {
    if (typeof k !== 'string') throw typeError(`${name} (a name)`, 'a string', k)
    if (!TOKEN.test(k)) throw makeError('ERR_INVALID_HTTP_TOKEN', `Header name must be a valid HTTP token ["${k}"]`, TypeError)
    for (const one of Array.isArray(v) ? v : [v]) {
      if (typeof one !== 'string' && typeof one !== 'number') throw typeError(`${name}.${k}`, 'a string', one)
      checkHeaderValue(k, String(one))
    }
  }
}

/**
 * Headers as the name, value pairs of the request. As Node's http sends what `ws` gives it, a name
 * is sent once whatever its case (the last spelling of it wins), and `origin` (unless empty) wins
 * over an Origin header; an array sends one line per value, but a Cookie array one line, its
 * values joined by '; ' (RFC 6265 section 5.4: a server may read only the first Cookie line).
 */
function flattenHeaders(headers, origin) {
  if (!origin && !headers) return NONE
  const byName = new Map()
  if (headers) for (const [k, v] of headerEntries(headers)) byName.set(k.toLowerCase(), [k, v])
  // As ws: an empty origin is none.
  if (origin) byName.set('origin', ['Origin', origin])
  const flat = []
  for (const [lower, [k, v]] of byName) {
    if (!Array.isArray(v)) flat.push(k, String(v))
    else if (lower === 'cookie') {
      if (v.length > 0) flat.push(k, v.join('; '))
    } else for (const one of v) flat.push(k, String(one))
  }
  return flat
}

function checkProtocols(protocols, name = 'protocols') {
  const list = typeof protocols === 'string' ? [protocols] : protocols
  if (!Array.isArray(list)) throw typeError(name, 'a string or an array of strings', protocols)
  const seen = new Set()
  for (const p of list) {
    if (typeof p !== 'string' || !TOKEN.test(p) || seen.has(p)) {
      throw makeError('ERR_INVALID_PROTOCOL', `Invalid or duplicated subprotocol: ${String(p)}`, SyntaxError)
    }
    seen.add(p)
  }
}

function toProtocols(protocols) {
  if (protocols === undefined) return NONE
  return typeof protocols === 'string' ? [protocols] : [...protocols]
}

module.exports = {
  DEFAULTS,
  RECONNECTING,
  parseOptions,
  checkHeaders,
  flattenHeaders,
  TOKEN,
  checkProtocols,
  toProtocols,
  checkBinaryType,
  configKey,
}
