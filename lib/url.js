'use strict'
// The client's URL: checked and normalised as `ws` does (http(s): becomes ws(s):), and its
// credentials moved into an Authorization header.

const { unescape } = require('node:querystring')
const { makeError, redactInput } = require('./errors')

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
  const headers = has ? flatHeaders : ['Authorization', `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`, ...flatHeaders]
  return { url: u.bare, headers }
}

module.exports = { describeUrl, parseUrl, splitCredentials }
