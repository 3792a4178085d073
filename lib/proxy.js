'use strict'
// Which proxy a URL goes through: the `proxy` option, else the environment's variables as curl
// reads them (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY); and the check of a proxy URL, whose
// credentials no message echoes. The addon reads NO_PROXY the same way for redirects (src/proxy.rs).

const { makeError, redactInput, optionTypeError: typeError } = require('./errors')
const { variable } = require('./environment')
const { describeUrl } = require('./url')
const N = require('./native')
const { utf8 } = require('./utf8')

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
      // "httpoxy": under CGI, HTTP_PROXY is the request's own `Proxy:` header, a proxy the client
      // chose (and on Windows, whose names ignore case, so is http_proxy). As Go's net/http, no
      // HTTP_PROXY is read there, in either case; curl never reads the upper case one.
      if (upper === 'HTTP_PROXY' && variable('REQUEST_METHOD', env)) continue
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
  // (Not when NO_PROXY has a '*' entry, as the addon reads it: no hop uses them.)
  const noProxy = proxyVariable(env, 'NO_PROXY') ?? ''
  const everyHost = noProxy.split(/[\s,]+/).includes('*')
  const checked = ([value, name]) => {
    if (value === undefined) return ''
    if (!everyHost) checkProxy(value, name)
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
  // Read as curl reads it, by the addon, which reads it for redirects too (src/proxy.rs).
  const noProxy = proxyVariable(env, 'NO_PROXY')
  if (noProxy !== undefined && N.noProxyNames(u.bare, noProxy)) return undefined
  checkProxy(fromEnv, name)
  return fromEnv
}

module.exports = { checkProxy, proxyEnv, proxyFor }
