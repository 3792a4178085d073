'use strict'
// The `tls` option, checked when a client is made (a bad certificate, key or version would
// otherwise fail every attempt, retried forever) and turned into what the addon's rustls config
// takes (src/tls.rs): PEM roots, the client certificate and its key as PKCS#8, versions, suites.

const { X509Certificate, createPrivateKey } = require('node:crypto')
const { isIP } = require('node:net')
const { makeError, optionTypeError: typeError } = require('./errors')
const { variable } = require('./environment')
const { parseCiphers, parseEcdhCurve, parseSigalgs, offersTls12 } = require('./ciphers')

const TLS_KEYS = ['ca', 'cert', 'key', 'pfx', 'passphrase', 'rejectUnauthorized', 'servername', 'checkServerIdentity', 'minVersion', 'maxVersion', 'ciphers', 'ecdhCurve', 'sigalgs']

/** Shared and frozen: read, never modified. */
const NONE = Object.freeze([])
const TLS_DEFAULTS = Object.freeze({ ca: NONE, caOnly: false, rejectUnauthorized: true, unverifiedByEnvironment: false, servername: undefined, cert: undefined, key: undefined, checkServerIdentity: undefined, minVersion: 0, maxVersion: 0, cipherSuites: NONE, kxGroups: NONE, sigSchemes: NONE })

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

/** The process's default `rejectUnauthorized`: Node's, false only with NODE_TLS_REJECT_UNAUTHORIZED=0. */
const verifiesByDefault = () => variable('NODE_TLS_REJECT_UNAUTHORIZED') !== '0'

let warnedUnverified = false
/**
 * Node's warning, in its words, once per process, for a client that may make a TLS connection
 * unverified because of NODE_TLS_REJECT_UNAUTHORIZED (Node warns at its first tls.connect).
 */
function warnUnverified() {
  if (warnedUnverified) return
  warnedUnverified = true
  process.emitWarning(
    "Setting the NODE_TLS_REJECT_UNAUTHORIZED environment variable to '0' makes TLS connections and HTTPS requests insecure by disabling certificate verification.",
  )
}

const UNVERIFIED_DEFAULTS = Object.freeze({ ...TLS_DEFAULTS, rejectUnauthorized: false, unverifiedByEnvironment: true })

function parseTls(tls) {
  if (tls === undefined) return verifiesByDefault() ? TLS_DEFAULTS : UNVERIFIED_DEFAULTS
  if (typeof tls !== 'object' || tls === null || Array.isArray(tls)) throw typeError('tls', 'an object', tls)
  for (const key of Object.keys(tls)) {
    if (!TLS_KEYS.includes(key)) throw makeError('ERR_UNKNOWN_OPTION', `Unknown option "tls.${key}" (known: ${TLS_KEYS.join(', ')})`, TypeError)
  }
  tls = notSetLeftOut(tls)
  const ca = pemList(tls.ca, 'tls.ca')
  const unverifiedByEnvironment = tls.rejectUnauthorized === undefined && !verifiesByDefault()
  const rejectUnauthorized = tls.rejectUnauthorized === undefined ? !unverifiedByEnvironment : tls.rejectUnauthorized
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
  return { ca, caOnly, rejectUnauthorized, unverifiedByEnvironment, servername, cert, key, checkServerIdentity, minVersion, maxVersion, cipherSuites, kxGroups, sigSchemes }
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

module.exports = { TLS_KEYS, parseTls, warnUnverified }
