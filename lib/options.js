'use strict'
// Validation of everything the user passes, with defaults. Errors are thrown
// synchronously, with Node-style codes: TypeError/ERR_INVALID_ARG_TYPE for a
// wrong type, RangeError/ERR_OUT_OF_RANGE for a bad value,
// ERR_UNKNOWN_OPTION for a name we do not know (typos are not ignored).

const { X509Certificate, createPrivateKey } = require('node:crypto')
const dns = require('node:dns')
const { isIP } = require('node:net')
const { isAnyArrayBuffer } = require('node:util').types
const { unescape } = require('node:querystring')
const { makeError, redactInput, optionTypeError: typeError } = require('./errors')
const { parseCiphers, parseEcdhCurve, parseSigalgs, offersTls12 } = require('./ciphers')
const { variable } = require('./environment')

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

const TLS_KEYS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername', 'checkServerIdentity', 'minVersion', 'maxVersion', 'ciphers', 'ecdhCurve', 'sigalgs']

/**
 * What becomes of `ws`'s client options that are not options here: passing one throws, saying
 * this, rather than being ignored.
 */
const WS_OPTIONS = Object.freeze({
  __proto__: null,
  handshakeTimeout: 'use connectTimeout, which covers TCP, proxy, TLS and the upgrade',
  ...Object.fromEntries(TLS_KEYS.map((k) => [k, `use tls.${k}`])),
  agent: 'use proxy (a proxy URL: http://, socks5:// or socks5h://)',
  auth: 'put the credentials in the URL or an Authorization header',
  finishRequest: 'give headers, url or protocols as a function, called for each attempt',
  createConnection: 'there is none: the addon makes the socket',
  generateMask: 'there is none: every frame is masked with random bytes from the operating system',
  protocolVersion: 'leave it out: the version is always 13 (RFC 6455)',
  allowSynchronousEvents: 'leave it out: the messages of one read are always emitted in the same turn',
  maxPendingAutoPongs: 'leave it out: a peer that does not read gets only the latest pong',
  maxBufferedChunks: 'leave it out: maxPayload and maxFragments bound what a message holds',
})

/**
 * Validates `options`; returns the native options and the JS-only ones. In rws mode
 * (`rws` true) a `maxDelay` below `minDelay` caps every delay, as in reconnecting-websocket.
 */
function parseOptions(options, rws = false) {
  if (options === undefined || options === null) options = {}
  if (typeof options !== 'object' || Array.isArray(options)) throw typeError('options', 'an object', options)
  for (const key in options) {
    if (Object.hasOwn(options, key) && !(key in DEFAULTS)) {
      const hint = key in WS_OPTIONS ? `ws's option: ${WS_OPTIONS[key]}; see docs/migrating.md` : `known options: ${Object.keys(DEFAULTS).join(', ')}`
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

/** Shared and frozen: read, never modified. */
const NONE = Object.freeze([])
const TLS_DEFAULTS = Object.freeze({ ca: NONE, caOnly: false, rejectUnauthorized: true, servername: undefined, cert: undefined, key: undefined, checkServerIdentity: undefined, minVersion: 0, maxVersion: 0, cipherSuites: NONE, kxGroups: NONE, sigSchemes: NONE })

/** A DNS name as rustls takes one: labels of letters, digits, '-' and '_', not starting or ending with '-'. */
function isDnsName(name) {
  const labels = (name.endsWith('.') ? name.slice(0, -1) : name).split('.')
  return (
    name.length <= 253 &&
    labels.every((l) => /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/.test(l)) &&
    // Nor may its last label be a number, decimal or hex (it would read as an IPv4 address).
    !/^(?:[0-9]+|0[xX][0-9A-Fa-f]*)$/.test(labels[labels.length - 1])
  )
}

/**
 * `tls` without the options that are `null`: Node's `tls.connect` takes them as not given (so
 * `ca: pem ?? null`, written for `ws`, works here). An empty `ca`, `cert` or `key`, which Node
 * also passes over, still throws: it is more likely a file that was read empty.
 */
function notSetLeftOut(tls) {
  const given = {}
  for (const key of TLS_KEYS) {
    const value = tls[key]
    if (value !== undefined && value !== null) given[key] = value
  }
  return given
}

function parseTls(tls) {
  if (tls === undefined) return TLS_DEFAULTS
  if (typeof tls !== 'object' || tls === null || Array.isArray(tls)) throw typeError('tls', 'an object', tls)
  for (const key of Object.keys(tls)) {
    if (!TLS_KEYS.includes(key)) throw makeError('ERR_UNKNOWN_OPTION', `Unknown option "tls.${key}" (known: ${TLS_KEYS.join(', ')})`, TypeError)
  }
  tls = notSetLeftOut(tls)
  const ca = pemList(tls.ca, 'tls.ca')
  const rejectUnauthorized = tls.rejectUnauthorized === undefined ? true : tls.rejectUnauthorized
  if (typeof rejectUnauthorized !== 'boolean') throw typeError('tls.rejectUnauthorized', 'a boolean', rejectUnauthorized)
  if (tls.servername !== undefined && typeof tls.servername !== 'string') throw typeError('tls.servername', 'a string', tls.servername)
  // '' is Node's "send no SNI": here the URL's host is the name, as without the option.
  const servername = tls.servername === '' ? undefined : tls.servername
  if (servername !== undefined && isIP(servername) === 0 && !isDnsName(servername)) {
    throw makeError('ERR_INVALID_ARG_VALUE', `tls.servername must be a host name or an IP address. Received '${servername}'`, TypeError)
  }
  // As in Node, `ca` replaces the default roots (a private CA pinned is the only one trusted).
  const caOnly = tls.ca !== undefined
  const { cert, key, trusted } = clientAuth(tls)
  // As Node does with a PKCS#12 file's other certificates: they are trusted too.
  if (trusted.length > 0) ca.push(...trusted)
  const checkServerIdentity = tls.checkServerIdentity
  if (checkServerIdentity !== undefined && typeof checkServerIdentity !== 'function') {
    throw typeError('tls.checkServerIdentity', 'a function', checkServerIdentity)
  }
  const { minVersion, maxVersion } = tlsVersions(tls)
  const cipherSuites = parseCiphers(tls.ciphers)
  if (maxVersion === 2 && !offersTls12(cipherSuites)) {
    throw makeError('ERR_SSL_NO_CIPHER_MATCH', 'The "tls.ciphers" option names no TLS 1.2 cipher suite, and "tls.maxVersion" is TLSv1.2', Error)
  }
  const kxGroups = parseEcdhCurve(tls.ecdhCurve)
  const sigSchemes = parseSigalgs(tls.sigalgs)
  return { ca, caOnly, rejectUnauthorized, servername, cert, key, checkServerIdentity, minVersion, maxVersion, cipherSuites, kxGroups, sigSchemes }
}

// Node's names of TLS versions, as the minor number of TLS 1.x.
const TLS_VERSIONS = { TLSv1: 0, 'TLSv1.1': 1, 'TLSv1.2': 2, 'TLSv1.3': 3 }

/**
 * `tls.minVersion` and `tls.maxVersion`, Node's names, as TLS 1.x minor numbers (0, 0 when neither
 * is given: rustls's default, 1.2 and 1.3). rustls has no version below 1.2: a minimum below it
 * means 1.2, a maximum below it cannot connect and throws.
 */
function tlsVersions(tls) {
  if (tls.minVersion === undefined && tls.maxVersion === undefined) return { minVersion: 0, maxVersion: 0 }
  const version = (name, fallback) => {
    const v = tls[name]
    if (v === undefined) return fallback
    if (typeof v !== 'string' || !Object.hasOwn(TLS_VERSIONS, v)) {
      throw makeError('ERR_TLS_INVALID_PROTOCOL_VERSION', `The "tls.${name}" option must be one of 'TLSv1.3', 'TLSv1.2', 'TLSv1.1', 'TLSv1'. Received ${String(v)}`, TypeError)
    }
    return TLS_VERSIONS[v]
  }
  const minVersion = version('minVersion', 2)
  const maxVersion = version('maxVersion', 3)
  if (minVersion > maxVersion) {
    throw makeError('ERR_TLS_PROTOCOL_VERSION_CONFLICT', `The "tls.minVersion" option (${tls.minVersion ?? "'TLSv1.2' by default, as Node's"}) is above "tls.maxVersion" (${tls.maxVersion})`, TypeError)
  }
  if (maxVersion < 2) {
    throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.maxVersion" option must be 'TLSv1.2' or 'TLSv1.3': rustls has no older version. Received ${tls.maxVersion}`, TypeError)
  }
  return { minVersion, maxVersion }
}

/** `tls.ca` or `tls.cert`: PEM certificate text(s), each checked, as a list of texts. */
function pemList(value, name) {
  const list = value === undefined ? [] : Array.isArray(value) ? value : [value]
  return list.map((c, i) => {
    let pem
    if (typeof c === 'string') pem = c
    else if (Buffer.isBuffer(c) || c instanceof Uint8Array) pem = Buffer.from(c).toString('utf8')
    else throw typeError(name, 'a string, a Buffer or an array of them', c)
    checkCertificates(pem, Array.isArray(value) ? `${name}[${i}]` : name)
    return pem
  })
}

// Key types rustls can sign with (its ring provider).
const SIGNING_KEYS = ['rsa', 'ec:prime256v1', 'ec:secp384r1', 'ed25519']

/**
 * `tls.cert` (our chain, leaf first) with `tls.key` (its private key, `tls.passphrase` if it is
 * encrypted), or both in `tls.pfx` (PKCS#12, lib/pkcs12.js), for servers that ask for a client
 * certificate. Checked here, so that a bad pair is a synchronous error rather than every attempt
 * failing: both or neither, each parses, the key is one rustls signs with and belongs to the leaf.
 * The key goes to the native side as unencrypted PKCS#8 PEM. No error shows the key or the
 * passphrase. `trusted`: a PKCS#12 file's certificates other than the leaf, which Node trusts.
 */
function clientAuth(tls) {
  const { cert, key, passphrase, pfx } = tls
  const bytes = (v) => typeof v === 'string' || Buffer.isBuffer(v) || v instanceof Uint8Array
  if (passphrase !== undefined && !bytes(passphrase)) throw typeError('tls.passphrase', 'a string or a Buffer', passphrase)
  if (pfx !== undefined) {
    if (cert !== undefined || key !== undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', 'The "tls.pfx" option holds the certificate and its key: give it, or "tls.cert" and "tls.key", not both', TypeError)
    }
    return fromPkcs12(pfx, passphrase)
  }
  if (cert === undefined && key === undefined) {
    if (passphrase !== undefined) throw makeError('ERR_INVALID_ARG_VALUE', 'The "tls.passphrase" option is for "tls.key" or "tls.pfx", neither of which is given', TypeError)
    return { cert: undefined, key: undefined, trusted: NONE }
  }
  if (cert === undefined || key === undefined) {
    throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.${cert === undefined ? 'key' : 'cert'}" option needs "tls.${cert === undefined ? 'cert' : 'key'}": a client certificate goes with its private key`, TypeError)
  }
  const certificates = pemList(cert, 'tls.cert')
  if (certificates.length === 0) throw makeError('ERR_INVALID_ARG_VALUE', 'The "tls.cert" option holds no certificate', TypeError)
  const chain = certificates.join('\n')
  if (!bytes(key)) throw typeError('tls.key', 'a string or a Buffer', key)
  const invalid = (why) => makeError('ERR_INVALID_ARG_VALUE', `The "tls.key" option ${why}`, TypeError)
  const text = typeof key === 'string' ? key : Buffer.from(key).toString('latin1')
  // PKCS#8 ("ENCRYPTED PRIVATE KEY") or OpenSSL's traditional form ("Proc-Type: 4,ENCRYPTED").
  if (passphrase === undefined && /-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED/.test(text)) {
    throw invalid('is encrypted: "tls.passphrase" is needed')
  }
  let keyObject
  try {
    keyObject = createPrivateKey(passphrase === undefined ? { key, format: 'pem' } : { key, format: 'pem', passphrase })
  } catch (err) {
    if (err.code === 'ERR_MISSING_PASSPHRASE') throw invalid('is encrypted: "tls.passphrase" is needed')
    // OpenSSL's reason (a bad decrypt, an unknown format) names no secret.
    throw invalid(`is not a PEM private key that opens${passphrase === undefined ? '' : ' with "tls.passphrase"'} (${err.message})`)
  }
  checkSigningKey(keyObject, invalid)
  const leaf = new X509Certificate(chain)
  // (Not every runtime's node:crypto has checkPrivateKey; rustls then finds a mismatch per attempt.)
  if (typeof leaf.checkPrivateKey === 'function' && !leaf.checkPrivateKey(keyObject)) {
    throw invalid('is not the key of the first certificate in "tls.cert"')
  }
  return { cert: chain, key: keyObject.export({ type: 'pkcs8', format: 'pem' }), trusted: NONE }
}

// Opened PKCS#12 files by the Buffer given: opening one takes milliseconds (its key derivations),
// and a fleet of clients passes the same file. The entry goes with the Buffer.
const openedPkcs12 = new WeakMap()

/** `tls.pfx`: its key, the certificate of that key first in the chain, the others trusted too. */
function fromPkcs12(pfx, passphrase) {
  if (!Buffer.isBuffer(pfx) && !(pfx instanceof Uint8Array)) throw typeError('tls.pfx', 'a Buffer (the bytes of a PKCS#12 file)', pfx)
  const same = (a, b) => a === b || (typeof a === 'object' && typeof b === 'object' && Buffer.compare(a, b) === 0)
  const known = openedPkcs12.get(pfx)
  if (known !== undefined && same(known.passphrase, passphrase)) return known.result
  const result = openPkcs12File(pfx, passphrase)
  openedPkcs12.set(pfx, { passphrase, result })
  return result
}

function openPkcs12File(pfx, passphrase) {
  const invalid = (why) => makeError('ERR_INVALID_ARG_VALUE', `The "tls.pfx" option ${why}`, TypeError)
  // Loaded on first use: few clients have a PKCS#12 file.
  const { openPkcs12, Pkcs12Error } = require('./pkcs12')
  let opened
  try {
    opened = openPkcs12(Buffer.from(pfx.buffer, pfx.byteOffset, pfx.byteLength), passphrase)
  } catch (err) {
    if (err instanceof Pkcs12Error) throw invalid(`cannot be used: ${err.message}`)
    throw invalid('is not a PKCS#12 file that opens')
  }
  checkSigningKey(opened.key, invalid)
  let certificates
  try {
    certificates = opened.certificates.map((der) => new X509Certificate(der))
  } catch {
    throw invalid('holds a certificate that does not parse')
  }
  const leaf = typeof certificates[0].checkPrivateKey === 'function' ? certificates.find((c) => c.checkPrivateKey(opened.key)) : certificates[0]
  if (leaf === undefined) throw invalid('holds no certificate of its private key')
  const others = certificates.filter((c) => c !== leaf).map((c) => c.toString())
  const chain = [leaf.toString(), ...others].join('\n')
  return { cert: chain, key: opened.key.export({ type: 'pkcs8', format: 'pem' }), trusted: others }
}

function checkSigningKey(keyObject, invalid) {
  const type = keyObject.asymmetricKeyType === 'ec' ? `ec:${keyObject.asymmetricKeyDetails?.namedCurve}` : keyObject.asymmetricKeyType
  if (!SIGNING_KEYS.includes(type)) {
    throw invalid(`is a key of type ${type}, which rustls cannot sign with (RSA, ECDSA P-256 or P-384, and Ed25519 keys it can)`)
  }
}

// PEM blocks: `-----BEGIN <label>-----`, base64, `-----END <label>-----` (text around them is allowed).
const PEM_BLOCK = /-----BEGIN ([^\r\n-]*)-----([\s\S]*?)-----END ([^\r\n-]*)-----/g
const PEM_BEGIN = /-----BEGIN /g
// Certificate texts already validated (a fleet shares them): bounded, cleared when full. A
// certificate is not a secret (a key is, and is not kept).
const CERTIFICATES_CACHE_MAX = 16
const validCertificates = new Set()

/**
 * A `tls.ca` or `tls.cert` entry must be PEM certificate(s), each of which parses: a bad one
 * would otherwise fail every attempt with ERR_TLS, retried forever. The PEM is not echoed.
 */
function checkCertificates(pem, name) {
  if (validCertificates.has(pem)) return
  const invalid = (why) => makeError('ERR_INVALID_ARG_VALUE', `The "${name}" option must be PEM certificate(s): ${why}`, TypeError)
  let count = 0
  for (const m of pem.matchAll(PEM_BLOCK)) {
    if (m[1] !== m[3]) throw invalid(`a "BEGIN ${m[1]}" block ends with "END ${m[3]}"`)
    if (m[1] !== 'CERTIFICATE') throw invalid(`it holds a "${m[1]}" block (only CERTIFICATE blocks belong here)`)
    try {
      new X509Certificate(m[0])
    } catch (err) {
      throw invalid(`certificate ${count + 1} does not parse (${err.message})`)
    }
    count++
  }
  if (count === 0) throw invalid('it holds no "-----BEGIN CERTIFICATE-----" block')
  if ((pem.match(PEM_BEGIN)?.length ?? 0) !== count) throw invalid('a PEM block has no END line')
  if (validCertificates.size >= CERTIFICATES_CACHE_MAX) validCertificates.clear()
  validCertificates.add(pem)
}

// HTTP CONNECT; SOCKS5 with names resolved here (socks5) or by the proxy (socks5h), as curl names them.
const PROXY_SCHEMES = ['http:', 'socks5:', 'socks5h:']

/** Text of a URL's user name or password as percent-decoded bytes; undefined when they are not UTF-8. */
function decodeCredential(s) {
  const bytes = Buffer.from(s.replace(/%([0-9a-fA-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16))), 'latin1')
  try {
    return utf8.decode(bytes)
  } catch {
    return undefined
  }
}

/** `from` names the variable the URL came from, for the messages (the URL is not echoed: it may hold a password). */
function checkProxy(proxy, from = 'proxy') {
  if (typeof proxy !== 'string') throw typeError('proxy', 'a string, false or null', proxy)
  const invalid = (why) => makeError('ERR_INVALID_PROXY', from === 'proxy' ? why : `${from}: ${why}`, SyntaxError)
  let u
  try {
    u = new URL(proxy)
  } catch {
    throw invalid(`Invalid proxy URL: ${redactInput(proxy)}`)
  }
  if (!PROXY_SCHEMES.includes(u.protocol)) {
    // Without "//", what reads as a scheme may be a user name ('bob:secret@proxy:3128'): not echoed.
    const received = proxy.includes('//') ? ` Received ${u.protocol}` : ' Write it as http://[user:password@]host:port'
    throw invalid(`Only http:// (CONNECT), socks5:// and socks5h:// proxies are supported.${received}`)
  }
  // `socks5:user:pass@host` (no "//") parses, as a path: the URL is not echoed, it may hold a password.
  if (!u.hostname) {
    throw invalid(`Invalid proxy URL: it has no host (write it as ${u.protocol}//[user:password@]host:port)`)
  }
  const user = decodeCredential(u.username)
  const password = decodeCredential(u.password)
  // The addon decodes them as UTF-8 too; a lossy decoding would send other credentials than given.
  if (user === undefined || password === undefined) {
    throw invalid('Invalid proxy URL: its user name or password has percent-escapes that are not UTF-8')
  }
  if (u.protocol !== 'http:' && (u.username || u.password)) {
    // RFC 1929: a user name of 1 to 255 bytes, a password of at most 255.
    if (!u.username) throw invalid('A SOCKS5 proxy\'s credentials need a user name (RFC 1929): write it as user:password@')
    if (Buffer.byteLength(user) > 255 || Buffer.byteLength(password) > 255) {
      throw invalid('A SOCKS5 proxy\'s user name and password are at most 255 bytes each (RFC 1929)')
    }
  }
}

/**
 * A proxy variable's value (`http_proxy` before `HTTP_PROXY`, an empty one as unset, as curl and
 * proxy-from-env read them); one this process may not read (Deno without --allow-env) is unset:
 * no proxy rather than an error.
 */
function proxyVariable(env, name) {
  return variable(name.toLowerCase(), env) || variable(name, env) || undefined
}

// A proxy scheme without "//" (`socks5:user:pass@host`) is a broken URL, not a user name.
const SCHEME_WITHOUT_SLASHES = /^(?:https?|socks[45][ah]?):/i

/**
 * The proxy URL the environment gives for a scheme: HTTPS_PROXY (wss) or HTTP_PROXY (ws), else
 * ALL_PROXY; a value without a scheme is an HTTP proxy (`proxy.corp:3128`), as curl reads it.
 * Returns [url, the variable's name] or [] when none is set.
 */
function proxyFromEnv(env, secure) {
  for (const upper of [secure ? 'HTTPS_PROXY' : 'HTTP_PROXY', 'ALL_PROXY']) {
    for (const name of [upper.toLowerCase(), upper]) {
      const value = variable(name, env)?.trim()
      if (value) return [value.includes('://') || SCHEME_WITHOUT_SLASHES.test(value) ? value : `http://${value}`, name]
    }
  }
  return []
}

/** The proxies for ws: and wss: and NO_PROXY as proxyFor reads them ('' where unset), for the addon's redirects. */
function proxyEnv(env = process.env) {
  // Checked now, both, as proxyFor checks the one it uses: a redirect may take either scheme, and
  // a variable the addon cannot use would fail every attempt that hops there, retried without end.
  // (Not when NO_PROXY is '*': no hop uses them.)
  const noProxy = proxyVariable(env, 'NO_PROXY') ?? ''
  const checked = ([value, name]) => {
    if (value === undefined) return ''
    if (noProxy.trim() !== '*') checkProxy(value, name)
    return value
  }
  return [checked(proxyFromEnv(env, false)), checked(proxyFromEnv(env, true)), noProxy]
}

/**
 * The proxy for `url`: the option when given (false/null: none), else the environment's
 * (proxyFromEnv) unless NO_PROXY matches the host.
 */
function proxyFor(url, option, env = process.env) {
  if (option === false || option === null) return undefined
  const u = describeUrl(url)
  if (u.protocol === 'ws+unix:') {
    if (typeof option === 'string') throw makeError('ERR_INVALID_ARG_VALUE', 'The "proxy" option cannot reach a ws+unix: URL (a Unix domain socket)', TypeError)
    return undefined
  }
  if (typeof option === 'string') return option
  const [fromEnv, name] = proxyFromEnv(env, u.protocol === 'wss:')
  if (!fromEnv) return undefined
  const noProxy = (proxyVariable(env, 'NO_PROXY') ?? '').toLowerCase()
  const host = u.hostname.replace(/^\[|\]$/g, '').toLowerCase()
  const port = u.port || (u.protocol === 'wss:' ? '443' : '80')
  for (let entry of noProxy.split(/[\s,]+/)) {
    if (!entry) continue
    if (entry === '*') return undefined
    // '[::1]:8080', '[::1]', 'host:8080', 'host', or a bare IPv6 address ('::1': several colons);
    // 'host:' names a port that never matches.
    let entryPort
    const bracketed = /^\[([^\]]*)\](?::(\d+))?$/.exec(entry)
    if (bracketed) [, entry, entryPort] = bracketed
    else if (entry.indexOf(':') === entry.lastIndexOf(':') && entry.includes(':')) [entry, entryPort] = entry.split(':')
    if (entryPort !== undefined && entryPort !== port) continue
    // As curl: 'address/bits' is a range of IP addresses (a host name is not resolved for it);
    // a name matches itself and its subdomains, with or without a leading '.' or '*.'.
    const range = /^([^/]+)\/(\d{1,3})$/.exec(entry)
    if (range) {
      if (inRange(host, range[1], Number(range[2]))) return undefined
      continue
    }
    const domain = entry.replace(/^\*?\./, '')
    if (host === domain || host.endsWith(`.${domain}`)) return undefined
  }
  checkProxy(fromEnv, name)
  return fromEnv
}

/** The bytes of IP address `text` (4 or 16), or null for anything else. */
function ipBytes(text) {
  const family = isIP(text)
  if (family === 4) return text.split('.').map(Number)
  if (family !== 6) return null
  // An IPv4 address at the end ('::ffff:10.0.0.1') is its last two groups.
  const v4 = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text)
  const groups = v4 ? `${v4[1]}${((v4[2] << 8) | v4[3]).toString(16)}:${((v4[4] << 8) | v4[5]).toString(16)}` : text
  const words = (part) => (part ? part.split(':').map((w) => parseInt(w, 16)) : [])
  const [head, tail] = groups.split('::')
  const before = words(head)
  const after = words(tail)
  const all = tail === undefined ? before : [...before, ...new Array(8 - before.length - after.length).fill(0), ...after]
  return all.flatMap((w) => [w >> 8, w & 0xff])
}

/** Whether IP address `host` is within `base/bits` (a curl NO_PROXY range), both of one IP version. */
function inRange(host, base, bits) {
  const a = ipBytes(host)
  const b = ipBytes(base)
  if (a === null || b === null || a.length !== b.length || bits > a.length * 8) return false
  for (let bit = 0; bit < bits; bit++) {
    const mask = 0x80 >> (bit % 8)
    if ((a[bit >> 3] & mask) !== (b[bit >> 3] & mask)) return false
  }
  return true
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
  if (origin) byName.set('origin', ['origin', origin])
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

// Parsed URLs by their text. A fleet of clients usually shares one URL; parsing it for each
// client (three times: normalising, the proxy decision, credentials) would be the largest
// garbage of a construction. Bounded: cleared when full. A URL with credentials is never
// kept: a password must not outlive the clients that use it.
const URL_CACHE_MAX = 256
const normalized = new Map()
const described = new Map()

function remember(cache, key, value) {
  if (cache.size >= URL_CACHE_MAX) cache.clear()
  cache.set(key, value)
  return value
}

/** The parts of a normalised URL the client needs, parsed once per distinct URL. */
function describeUrl(href) {
  const known = described.get(href)
  if (known !== undefined) return known
  const u = new URL(href)
  const info = {
    protocol: u.protocol,
    hostname: u.hostname,
    port: u.port,
    username: u.username,
    password: u.password,
    bare: href,
  }
  if (u.username || u.password) {
    u.username = ''
    u.password = ''
    info.bare = u.href
    return Object.freeze(info)
  }
  return remember(described, href, Object.freeze(info))
}

/** Parses and normalises the URL like `ws` does (http(s) -> ws(s)); returns its string form. */
function parseUrl(url) {
  if (url instanceof URL) url = url.href
  if (typeof url === 'function') return url
  if (typeof url !== 'string') {
    throw makeError('ERR_INVALID_ARG_TYPE', `The "url" argument must be a string or a URL. Received ${typeof url}`, TypeError)
  }
  const known = normalized.get(url)
  if (known !== undefined) return known
  const href = normalizeUrl(url)
  return url.includes('@') ? href : remember(normalized, url, href)
}

function normalizeUrl(url) {
  let parsed
  try {
    parsed = new URL(url)
  } catch {
    throw makeError('ERR_INVALID_URL', `Invalid URL: ${redactInput(url)}`, SyntaxError)
  }
  if (parsed.protocol === 'http:') parsed.protocol = 'ws:'
  else if (parsed.protocol === 'https:') parsed.protocol = 'wss:'
  if (parsed.protocol === 'ws+unix:') {
    if (process.platform === 'win32') {
      throw makeError('ERR_INVALID_URL_SCHEME', 'ws+unix: URLs (Unix domain sockets) need a Unix system', SyntaxError)
    }
    // ws's form: ws+unix:/path/to/socket:/request/path
    if (parsed.pathname === '' || parsed.pathname.startsWith(':')) {
      throw makeError('ERR_INVALID_URL', `The ws+unix: URL has no socket path: ${redactInput(url)}`, SyntaxError)
    }
  } else if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') {
    throw makeError('ERR_INVALID_URL_SCHEME', `The URL's scheme must be ws:, wss: or ws+unix: (or http:/https:). Received ${parsed.protocol}`, SyntaxError)
  }
  if (parsed.hash) throw makeError('ERR_INVALID_URL', `The URL must not contain a fragment: ${redactInput(url)}`, SyntaxError)
  // The handshake's request target is parsed by the http crate, which takes at most this much
  // (every attempt would fail after connecting). The URL is ASCII once parsed.
  if (parsed.href.length > MAX_URL_LENGTH) {
    throw makeError('ERR_INVALID_URL', `The URL is ${parsed.href.length} bytes long: at most ${MAX_URL_LENGTH} are supported`, SyntaxError)
  }
  return parsed.href
}

const MAX_URL_LENGTH = 65534

/**
 * Credentials in the URL become an `Authorization: Basic` header (as `ws`
 * does) and are removed from the URL the handshake is sent to.
 */
function splitCredentials(url, flatHeaders) {
  const u = describeUrl(url)
  if (!u.username && !u.password) return { url, headers: flatHeaders }
  // As ws decodes them: a stray '%' stays as it is (decodeURIComponent would throw).
  const user = unescape(u.username)
  const pass = unescape(u.password)
  const has = flatHeaders.some((v, i) => i % 2 === 0 && v.toLowerCase() === 'authorization')
  const headers = has ? flatHeaders : ['authorization', `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`, ...flatHeaders]
  return { url: u.bare, headers }
}

// ignoreBOM: a leading U+FEFF is part of the text sent, not a mark to drop.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true })

/**
 * The close codes an endpoint may send, as `ws` allows them: 1000-1014 but 1004, 1005 and 1006
 * (RFC 6455, section 7.4.1: reserved, or never sent), and 3000-4999 (registered and private).
 */
function sendableCloseCode(code) {
  return (code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999)
}

/**
 * A Buffer over the bytes of a Buffer, any ArrayBufferView, an ArrayBuffer or a SharedArrayBuffer,
 * as ws takes them (not copied), or null for anything else. `what` (e.g. 'send()') names the caller
 * in the error for a detached buffer, whose bytes are gone.
 */
function bytesOf(data, what) {
  if (Buffer.isBuffer(data)) return data
  const view = ArrayBuffer.isView(data)
  if (!view && !isAnyArrayBuffer(data)) return null
  try {
    return view ? Buffer.from(data.buffer, data.byteOffset, data.byteLength) : Buffer.from(data)
  } catch (cause) {
    throw makeError('ERR_INVALID_ARG_TYPE', `${what} cannot read a detached ArrayBuffer`, TypeError, { cause })
  }
}

/**
 * Checks `disconnect()`'s code and reason (a string, or UTF-8 bytes as `ws` takes them); returns
 * the reason as a string.
 */
function checkClose(code, reason) {
  if (typeof code !== 'number' || !Number.isInteger(code) || !sendableCloseCode(code)) {
    throw makeError('ERR_INVALID_CLOSE_CODE', `The close code must be 1000-1014 (but 1004-1006) or in 3000-4999. Received ${String(code)}`, RangeError)
  }
  if (typeof reason !== 'string') {
    if (!ArrayBuffer.isView(reason)) throw makeError('ERR_INVALID_ARG_TYPE', 'The close reason must be a string or a Buffer', TypeError)
    try {
      reason = utf8.decode(reason)
    } catch {
      throw makeError('ERR_INVALID_CLOSE_REASON', 'The close reason must be valid UTF-8', SyntaxError)
    }
  }
  if (Buffer.byteLength(reason) > 123) {
    throw makeError('ERR_INVALID_CLOSE_REASON', 'The close reason must be at most 123 bytes of UTF-8', SyntaxError)
  }
  return reason
}

const SEND_OPTIONS = ['binary', 'compress', 'fin', 'mask']

/** Checks `send()`'s options object (undefined and null pass); returns it. */
function checkSendOptions(options) {
  if (options === undefined || options === null) return {}
  if (typeof options !== 'object' || Array.isArray(options)) throw typeError('send() options', 'an object', options)
  for (const key of Object.keys(options)) {
    if (!SEND_OPTIONS.includes(key)) throw makeError('ERR_UNKNOWN_OPTION', `Unknown send() option "${key}" (known: ${SEND_OPTIONS.join(', ')})`, TypeError)
  }
  const { binary, compress, fin, mask } = options
  for (const [name, value] of [['binary', binary], ['compress', compress], ['fin', fin], ['mask', mask]]) {
    if (value !== undefined && typeof value !== 'boolean') throw typeError(`send() option ${name}`, 'a boolean', value)
  }
  if (mask === false) throw makeError('ERR_INVALID_ARG_VALUE', 'send() option mask: false is not allowed: a client masks every frame (RFC 6455)', TypeError)
  return options
}

/**
 * `send(data, options)` in `ws`'s shape: `binary` picks the frame type (a string as binary; bytes
 * as text if they are UTF-8), `mask: true` is accepted (a client masks every frame). `compress`
 * and `fin: false` are the client's to handle (lib/client.js, lib/fragments.js). What cannot be honoured is refused, not ignored: `mask: false`. Returns the
 * data to send (the callback is the client's: lib/client.js).
 */
function withSendOptions(data, options) {
  // A wrapper that forwards optional options passes undefined (or null, which ws takes too).
  if (options === undefined || options === null) return data
  const { binary } = checkSendOptions(options)
  if (binary === true && typeof data === 'string') return Buffer.from(data)
  if (binary === false && typeof data !== 'string') {
    const bytes = bytesOf(data, 'send()')
    if (bytes === null) return data // send() reports the type
    try {
      return utf8.decode(bytes)
    } catch {
      throw makeError('ERR_INVALID_ARG_VALUE', 'send() option binary: false needs data that is valid UTF-8 text', TypeError)
    }
  }
  return data
}

module.exports = {
  DEFAULTS,
  parseOptions,
  withSendOptions,
  bytesOf,
  checkSendOptions,
  parseUrl,
  checkClose,
  checkHeaders,
  flattenHeaders,
  TOKEN,
  checkProtocols,
  toProtocols,
  checkBinaryType,
  proxyEnv,
  proxyFor,
  splitCredentials,
  configKey,
}
