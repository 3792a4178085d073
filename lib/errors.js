'use strict'
// Errors with a stable `code`, shaped like Node's own (`err.code === 'ERR_...'`).

const { getSystemErrorMap, getSystemErrorName } = require('node:util')
const { headersFrom } = require('./response')

function makeError(code, message, Ctor = Error, extra) {
  const err = new Ctor(message)
  err.code = code
  if (extra) Object.assign(err, extra)
  return err
}

// Credentials in a URL: `scheme://user:pass@host` (also what the WHATWG parser accepts
// around it: leading spaces, no or back slashes). The userinfo is everything up to the last
// '@' before the authority ends.
const URL_USERINFO = /^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?[\\/]*)([^\\/?#]*)@/
// Input refused as a URL: everything up to its last '@' is taken for the userinfo. A password
// typed with a raw '/', '?' or '#' ends the authority early for the parser, and its rest would
// show; a path with an '@' is masked too, which is the safe side.
const INPUT_USERINFO = /^(\s*(?:[A-Za-z][A-Za-z0-9+.-]*:)?[\\/]*)(.*)@/s
// In free text (an error message), only the `scheme://` form is looked for, up to the last '@'
// before a space.
const TEXT_USERINFO = /\b([A-Za-z][A-Za-z0-9+.-]*:\/\/)(\S*)@/g

/** `user:pass` -> `user:***`; a lone user name (often a token) -> `***`. */
function maskUserinfo(_, prefix, userinfo) {
  const colon = userinfo.indexOf(':')
  return `${prefix}${colon < 0 ? '***' : `${userinfo.slice(0, colon)}:***`}@`
}

/** `url` (parsed or not) as it may appear in a message or a log line: no password. */
function redactUrl(url) {
  return String(url).replace(URL_USERINFO, maskUserinfo)
}

/**
 * Input refused as a URL (it did not parse, or a check refused it), for its error: no password,
 * and its query or fragment cut to `?` or `#` and an ellipsis (`?token=`, `?apikey=`: a credential as
 * often as not).
 */
function redactInput(input) {
  const text = String(input).replace(INPUT_USERINFO, maskUserinfo).replace(QUERY_OR_FRAGMENT, (rest) => `${rest[0]}\u2026`)
  // A message names the input, it does not carry it (a 10 MB URL made a 10 MB message, once per attempt).
  return text.length > INPUT_SHOWN ? `${text.slice(0, INPUT_SHOWN)}... (${text.length} characters)` : text
}

const INPUT_SHOWN = 200

// From the first `?` or `#` of a URL to its end.
const QUERY_OR_FRAGMENT = /[?#][\s\S]*$/

/** `text` with the credentials of every `scheme://user:pass@` in it masked. */
function redactText(text) {
  return text.includes('@') ? text.replace(TEXT_USERINFO, maskUserinfo) : text
}

// The native side reports a proxy's refusal as ERR_PROXY / ERR_PROXY_AUTH whose message
// ends with `(HTTP <status>)` (src/proxy.rs `http_connect`), without `status`: that
// field (and `shouldReconnect`'s `kind: 'handshake'`) is the target server's upgrade answer.
const PROXY_STATUS = / \(HTTP (\d{3})\)$/

// An operating system's error in a native message, as Rust's io::Error writes it.
const OS_ERROR = / \(os error (\d+)\)/
// Winsock's numbers (what Windows reports) for the errors a connection meets, by Node's names.
const WINSOCK = new Map([
  [10048, 'EADDRINUSE'],
  [10049, 'EADDRNOTAVAIL'],
  [10050, 'ENETDOWN'],
  [10051, 'ENETUNREACH'],
  [10053, 'ECONNABORTED'],
  [10054, 'ECONNRESET'],
  [10060, 'ETIMEDOUT'],
  [10061, 'ECONNREFUSED'],
  [10065, 'EHOSTUNREACH'],
])

/**
 * The system error a native message names (`ECONNREFUSED`, `ECONNRESET`...), as the `cause` of
 * ours: what ws reports as its error's own `code`. undefined when there is none.
 */
function systemCause(code, message) {
  // Only where the message is the system's words: others carry text a server chose (a close
  // reason, a refusal's status line) that could read like a system error.
  if (code === 'ERR_HANDSHAKE') {
    // Only a socket's failure during the upgrade (src/upgrade.rs): other handshake errors quote the server.
    if (!message.startsWith(UPGRADE_IO_FAILED)) return undefined
  } else if (code === 'ERR_PROXY') {
    // Only where the proxy's connection failed, not where it answered (src/transport.rs, src/proxy.rs, src/socks.rs).
    const words = proxySystemWords(message)
    if (words === undefined) return undefined
    message = words
  } else if (!SYSTEM_ERROR_CODES.has(code)) return undefined
  const lookup = LOOKUP_ERROR.exec(message)
  if (lookup !== null) return lookupCause(lookup[1], lookup[2])
  const m = OS_ERROR.exec(message)
  if (m === null) return undefined
  const n = Number(m[1])
  let name
  if (process.platform === 'win32') name = WINSOCK.get(n)
  else {
    try {
      name = getSystemErrorName(-n)
    } catch {}
  }
  if (name === undefined || name.startsWith('Unknown')) return undefined
  return makeError(name, name, Error, { errno: process.platform === 'win32' ? errnoOf(name) : -n })
}

// How src/upgrade.rs words a socket's failure during the upgrade (ERR_HANDSHAKE).
const UPGRADE_IO_FAILED = 'the connection failed during the upgrade: '

// How the native side words a proxy whose connection failed: the system's words follow.
const PROXY_UNREACHABLE = /^cannot reach the proxy \S+: /
const PROXY_IO_FAILED = /^(?:proxy tunnel failed|SOCKS proxy): /

/** The system's words in an ERR_PROXY message whose proxy connection failed (undefined: the proxy answered). */
function proxySystemWords(message) {
  const unreachable = PROXY_UNREACHABLE.exec(message)
  if (unreachable !== null) return message.slice(unreachable[0].length)
  return PROXY_IO_FAILED.test(message) ? message : undefined
}

// The errors whose message may name a system error (an OS error, a failed lookup); a proxy's,
// only when its connection failed (src/proxy.rs), not when it answered.
const SYSTEM_ERROR_CODES = new Set(['ERR_CONNECT', 'ERR_SOCKET', 'ERR_PROXY', 'ERR_TLS'])

// A failed host name lookup, as Node words it (src/resolve.rs words the resolver's so, and a
// `lookup` option's error is dns.lookup's), at the start of the message, where the native side
// puts it.
const LOOKUP_ERROR = /^lookup failed: getaddrinfo (ENOTFOUND|EAI_[A-Z]+) (\S+)/

/** libuv's error number of `name` (Node's `errno`), as Node reports it on every platform. */
function errnoOf(name) {
  for (const [errno, [known]] of getSystemErrorMap()) if (known === name) return errno
  return undefined
}

/** The error dns.lookup gives for `hostname` (`code`: ENOTFOUND, EAI_AGAIN...), as net.connect reports it. */
function lookupCause(code, hostname) {
  // ENOTFOUND is Node's name for libuv's EAI_NONAME (and EAI_NODATA); its errno is EAI_NONAME's.
  const uvName = code === 'ENOTFOUND' ? 'EAI_NONAME' : code
  return makeError(code, `getaddrinfo ${code} ${hostname}`, Error, { errno: errnoOf(uvName), syscall: 'getaddrinfo', hostname })
}

/** Turns the `{ code, message, status? }` the native side reports into an Error. */
function fromNative(p) {
  let extra = p.status === undefined ? undefined : { status: p.status }
  if (p.code === 'ERR_PROXY' || p.code === 'ERR_PROXY_AUTH') {
    const m = PROXY_STATUS.exec(p.message)
    if (m) extra = { proxyStatus: Number(m[1]) }
  }
  const err = makeError(p.code, redactText(p.message), Error, extra)
  const cause = systemCause(p.code, p.message)
  if (cause !== undefined) withCause(err, cause)
  // Not enumerable: a logged error does not print the server's cookies.
  if (p.headers !== undefined) Object.defineProperty(err, 'headers', { value: headersFrom(p.headers), writable: true, configurable: true })
  // The start of a refusal's body (at most 64 KiB), not enumerable either.
  if (p.body !== undefined) Object.defineProperty(err, 'body', { value: p.body, writable: true, configurable: true })
  return err
}

/**
 * The client gave up (`p`: the giveup event's payload): `opened()`'s rejection, and the error of a
 * stream the giveup cut short. The last error is its `cause`.
 */
function gaveUpError(p) {
  const why = `the client gave up after ${p.attempts} attempt${p.attempts === 1 ? '' : 's'} (${p.reason})`
  const err = makeError('ERR_GAVE_UP', why)
  if (p.lastError) withCause(err, p.lastError)
  return err
}

/** `err` with `cause`, as `new Error(message, { cause })` makes it: not enumerable. */
function withCause(err, cause) {
  return Object.defineProperty(err, 'cause', { value: cause, writable: true, configurable: true })
}

/** An option of the wrong type, as Node words it: `The "name" option must be <expected>. Received type string`. */
function optionTypeError(name, expected, value) {
  const got = value === null ? 'null' : Array.isArray(value) ? 'an array' : `type ${typeof value}`
  return makeError('ERR_INVALID_ARG_TYPE', `The "${name}" option must be ${expected}. Received ${got}`, TypeError)
}

/** A send() callback's error: the message will never be sent (`reason` says why). */
function notSent(reason, cause, what = 'message') {
  const why = {
    overflow: 'the offline queue was full and dropped it',
    drained: 'drainQueue() handed it back',
    discarded: 'disconnect() discarded it',
    closed: what === 'message' ? 'the client closed before it could be sent' : 'its connection closed before it could be sent',
    unreadable: 'its Blob could not be read as what it was to be sent as',
  }[reason]
  return makeError('ERR_NOT_SENT', `The ${what} was not sent: ${why}`, Error, cause === undefined ? { reason } : { reason, cause })
}

/**
 * What an application's function threw, rejected with or returned as a refusal, as text (no
 * password): an Error's message, or the value; `fallback` for what is empty or cannot be made
 * text (an object without a prototype).
 */
function textOf(value, fallback) {
  try {
    const text = value instanceof Error ? String(value.message) : String(value)
    if (text !== '') return redactText(text)
  } catch {}
  return fallback
}

module.exports = { notSent, proxySystemWords, makeError, fromNative, redactUrl, redactInput, textOf, gaveUpError, optionTypeError, withCause }
