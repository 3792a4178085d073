'use strict'
// `tls.ciphers`, `tls.ecdhCurve` and `tls.sigalgs`, Node's options, read as Node reads them and turned
// into what rustls has: cipher suites, key exchange groups and signature schemes by their IANA
// numbers (src/tls.rs).

const { makeError, optionTypeError: typeErr } = require('./errors')

// TLS 1.3 suites keep their IANA names in OpenSSL; TLS 1.2 suites go by OpenSSL's names.
const TLS13_SUITES = { TLS_AES_256_GCM_SHA384: 0x1302, TLS_AES_128_GCM_SHA256: 0x1301, TLS_CHACHA20_POLY1305_SHA256: 0x1303 }
const TLS12_SUITES = {
  'ECDHE-ECDSA-AES256-GCM-SHA384': 0xc02c,
  'ECDHE-ECDSA-AES128-GCM-SHA256': 0xc02b,
  'ECDHE-ECDSA-CHACHA20-POLY1305': 0xcca9,
  'ECDHE-RSA-AES256-GCM-SHA384': 0xc030,
  'ECDHE-RSA-AES128-GCM-SHA256': 0xc02f,
  'ECDHE-RSA-CHACHA20-POLY1305': 0xcca8,
}
// rustls's order of preference, used for TLS 1.3 when the list names no TLS 1.3 suite (as Node
// keeps OpenSSL's default TLS 1.3 suites then).
const DEFAULT_TLS13 = [0x1302, 0x1301, 0x1303]

// OpenSSL's keywords that select none of the suites rustls has (its six TLS 1.2 suites are
// ECDHE, ECDSA or RSA signed, AES-GCM or ChaCha20-Poly1305): excluding or moving them changes nothing.
const MATCH_NONE = Object.fromEntries(
  ['aNULL', 'eNULL', 'NULL', 'COMPLEMENTOFALL', 'EXPORT', 'EXP', 'LOW', 'MEDIUM', 'DES', '3DES', 'RC4', 'RC2', 'IDEA', 'SEED', 'MD5', 'SHA1', 'SHA',
    'CAMELLIA', 'CAMELLIA128', 'CAMELLIA256', 'ARIA', 'ARIA128', 'ARIA256', 'ARIAGCM', 'CCM', 'CCM8', 'AESCCM', 'AESCCM8', 'PSK', 'kPSK', 'aPSK',
    'ECDHEPSK', 'kECDHEPSK', 'DHEPSK', 'kDHEPSK', 'RSAPSK', 'kRSAPSK', 'SRP', 'kSRP', 'aSRP', 'DSS', 'aDSS', 'DH', 'kDH', 'kDHE', 'kEDH', 'DHE', 'EDH', 'ADH', 'AECDH',
    'kRSA', 'RSA', 'aGOST', 'aGOST01', 'kGOST', 'GOST94', 'GOST89MAC', 'kECDHr', 'kECDHe', 'kECDH', 'aECDH', 'SSLv3', 'TLSv1', 'TLSv1.0', 'SUITEB128', 'SUITEB128ONLY', 'SUITEB192'].map((k) => [k, true]),
)

const KX_GROUPS = { x25519: 0x001d, 'p-256': 0x0017, prime256v1: 0x0017, secp256r1: 0x0017, 'p-384': 0x0018, secp384r1: 0x0018 }

/**
 * `tls.ciphers`: an OpenSSL cipher list, as Node takes it ('' is Node's default, as undefined).
 * As Node splits it, the entries named `TLS_...` are the TLS 1.3 suites offered (all of rustls's
 * when none is named; an exclusion of one does nothing, as in Node); the rest is the TLS 1.2 list,
 * read as OpenSSL reads it: `NAME` adds a suite, `-NAME` takes it out, `!NAME` takes it out for
 * good, `+NAME` moves it to the end (none when none is named, so TLS 1.2 is then not offered, as
 * in Node). Names of suites rustls does not have (DHE, CBC, ...) are skipped, as OpenSSL skips
 * names it does not know (a name has a `-` or starts with `TLS_`). OpenSSL's keywords (`HIGH`,
 * `ECDHE`, `DEFAULT`, ...) select by properties rustls does not model: a keyword (any other word)
 * is refused, and so is its exclusion or move unless it selects none of rustls's suites (`!aNULL`,
 * `!MD5`, `!RC4`: ignored). Returns the IANA numbers in order, or [] for rustls's default.
 */
function parseCiphers(ciphers) {
  if (ciphers === undefined || ciphers === '') return []
  if (typeof ciphers !== 'string') throw typeErr('tls.ciphers', 'a string', ciphers)
  const tls13 = []
  const tls12 = []
  const banned = new Set()
  let namedTls13 = false
  for (const raw of ciphers.split(/[:, ]+/)) {
    const entry = raw.trim()
    if (entry === '' || entry.startsWith('@')) continue // @STRENGTH, @SECLEVEL=n: orderings and levels, nothing to offer
    const op = '!-+'.includes(entry[0]) ? entry[0] : ''
    const name = op === '' ? entry : entry.slice(1)
    const tls13Code = own(TLS13_SUITES, name)
    if (tls13Code !== undefined) {
      if (op === '' && !tls13.includes(tls13Code)) tls13.push(tls13Code)
      namedTls13 ||= op === ''
      continue
    }
    const code = own(TLS12_SUITES, name)
    if (op !== '' && code === undefined && !name.includes('-') && !name.startsWith('TLS_') && !own(MATCH_NONE, name)) {
      // A keyword that may select suites rustls has (CHACHA20, ECDSA, AES256, HIGH...): taking
      // out or moving what it selects needs the properties rustls does not model here.
      throw makeError(
        'ERR_INVALID_ARG_VALUE',
        `The "tls.ciphers" option has "${entry}", an OpenSSL keyword that may select cipher suites rustls has: name the suites to offer (${supportedSuites()})`,
        TypeError,
      )
    }
    if (op === '!' || op === '-') {
      if (code !== undefined && tls12.includes(code)) tls12.splice(tls12.indexOf(code), 1)
      if (op === '!' && code !== undefined) banned.add(code)
      continue
    }
    if (op === '+') {
      if (code !== undefined && tls12.includes(code)) tls12.push(...tls12.splice(tls12.indexOf(code), 1))
      continue
    }
    if (code !== undefined) {
      if (!tls12.includes(code) && !banned.has(code)) tls12.push(code)
      continue
    }
    if (!name.includes('-') && !name.startsWith('TLS_')) {
      throw makeError(
        'ERR_INVALID_ARG_VALUE',
        `The "tls.ciphers" option names "${name}", not a cipher suite (OpenSSL's keywords, HIGH, ECDHE and the like, select by properties rustls does not model): name the cipher suites (${supportedSuites()})`,
        TypeError,
      )
    }
  }
  if (tls12.length === 0 && !namedTls13) {
    throw makeError('ERR_SSL_NO_CIPHER_MATCH', `The "tls.ciphers" option names no cipher suite that rustls has (${supportedSuites()})`, Error)
  }
  return [...(tls13.length > 0 ? tls13 : DEFAULT_TLS13), ...tls12]
}

/** `table[key]`, its own entries only (`constructor` is no cipher). */
function own(table, key) {
  return Object.hasOwn(table, key) ? table[key] : undefined
}

function supportedSuites() {
  return [...Object.keys(TLS13_SUITES), ...Object.keys(TLS12_SUITES)].join(', ')
}

/**
 * `tls.ecdhCurve`: `'auto'` or a colon-separated list of curve names, in order of preference (Node
 * and OpenSSL spellings; case does not matter). A name rustls has no group for is an error, as an
 * unknown one is in Node. Returns the IANA numbers, or [] for rustls's default.
 */
function parseEcdhCurve(curve) {
  if (curve === undefined || curve === 'auto') return []
  if (typeof curve !== 'string') throw typeErr('tls.ecdhCurve', 'a string', curve)
  const groups = []
  for (const name of curve.split(':')) {
    const code = own(KX_GROUPS, name.trim().toLowerCase())
    if (code === undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.ecdhCurve" option names "${name}", which rustls has no key exchange for (it has X25519, P-256, P-384; or 'auto')`, TypeError)
    }
    // As Node (OpenSSL) refuses a list that names a group twice.
    if (groups.includes(code)) throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.ecdhCurve" option names "${name}" twice`, TypeError)
    groups.push(code)
  }
  return groups
}

// Signature schemes by OpenSSL's names (TLS 1.3's), and the `SIG+HASH` pairs OpenSSL also takes.
// rustls (ring) verifies and signs with the ones in SCHEMES_RUSTLS_HAS; the others are skipped.
const SCHEMES = {
  rsa_pkcs1_sha1: 0x0201, rsa_pkcs1_sha224: 0x0301, rsa_pkcs1_sha256: 0x0401, rsa_pkcs1_sha384: 0x0501, rsa_pkcs1_sha512: 0x0601,
  dsa_sha1: 0x0202, dsa_sha224: 0x0302, dsa_sha256: 0x0402, dsa_sha384: 0x0502, dsa_sha512: 0x0602,
  ecdsa_sha1: 0x0203, ecdsa_sha224: 0x0303, ecdsa_secp256r1_sha256: 0x0403, ecdsa_secp384r1_sha384: 0x0503, ecdsa_secp521r1_sha512: 0x0603,
  rsa_pss_rsae_sha256: 0x0804, rsa_pss_rsae_sha384: 0x0805, rsa_pss_rsae_sha512: 0x0806,
  rsa_pss_pss_sha256: 0x0809, rsa_pss_pss_sha384: 0x080a, rsa_pss_pss_sha512: 0x080b,
  ed25519: 0x0807, ed448: 0x0808,
  ecdsa_brainpoolP256r1tls13_sha256: 0x081a, ecdsa_brainpoolP384r1tls13_sha384: 0x081b, ecdsa_brainpoolP512r1tls13_sha512: 0x081c,
}
// SIG+HASH (either order): the signature's high byte is the hash (TLS 1.2's HashAlgorithm), its low
// byte the algorithm; RSA-PSS is rsa_pss_rsae_*, as OpenSSL reads it.
const SIG_WORDS = { RSA: 0x01, DSA: 0x02, ECDSA: 0x03, 'RSA-PSS': 'pss', PSS: 'pss' }
const HASH_WORDS = { SHA1: 0x02, sha1: 0x02, SHA224: 0x03, sha224: 0x03, SHA256: 0x04, sha256: 0x04, SHA384: 0x05, sha384: 0x05, SHA512: 0x06, sha512: 0x06 }
const PSS = { 0x04: 0x0804, 0x05: 0x0805, 0x06: 0x0806 }
const SCHEMES_RUSTLS_HAS = [0x0403, 0x0503, 0x0807, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601]

/**
 * `tls.sigalgs`: a colon-separated list of signature algorithms, as OpenSSL takes it (TLS 1.3 names
 * such as `rsa_pss_rsae_sha256`, or `SIG+HASH` such as `ECDSA+SHA256`), in order of preference:
 * the signatures the client accepts from the server and makes with its own key. An unknown or
 * repeated entry is an error, as in Node; algorithms rustls has not (SHA-1, DSA, Ed448, P-521,
 * RSA-PSS keys) are skipped, and a list left with none is an error. Returns the IANA numbers, or
 * [] for rustls's default.
 */
function parseSigalgs(sigalgs) {
  if (sigalgs === undefined) return []
  if (typeof sigalgs !== 'string') throw typeErr('tls.sigalgs', 'a string', sigalgs)
  const named = []
  for (const raw of sigalgs.split(':')) {
    const entry = raw.trim()
    const code = schemeOf(entry)
    if (code === undefined || named.includes(code)) {
      const what = entry === '' ? 'has an empty entry' : `names "${entry}", ${code === undefined ? 'not a signature algorithm OpenSSL names' : 'twice'}`
      throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.sigalgs" option ${what} (rustls has ${supportedSchemes()})`, TypeError)
    }
    named.push(code)
  }
  const schemes = named.filter((code) => SCHEMES_RUSTLS_HAS.includes(code))
  if (schemes.length === 0) {
    throw makeError('ERR_INVALID_ARG_VALUE', `The "tls.sigalgs" option names no signature algorithm that rustls has (${supportedSchemes()})`, TypeError)
  }
  return schemes
}

function schemeOf(entry) {
  const byName = own(SCHEMES, entry)
  if (byName !== undefined) return byName
  const words = entry.split('+')
  if (words.length !== 2) return undefined
  const [sig, hash] = own(SIG_WORDS, words[0]) !== undefined ? words : [words[1], words[0]]
  const algorithm = own(SIG_WORDS, sig)
  const digest = own(HASH_WORDS, hash)
  if (algorithm === undefined || digest === undefined) return undefined
  return algorithm === 'pss' ? PSS[digest] : (digest << 8) | algorithm
}

function supportedSchemes() {
  const names = Object.keys(SCHEMES).filter((name) => SCHEMES_RUSTLS_HAS.includes(SCHEMES[name]))
  return names.join(', ')
}

/** Whether a cipher list offers TLS 1.2 (a TLS 1.2 suite follows the TLS 1.3 ones). */
function offersTls12(codes) {
  return codes.length === 0 || codes.some((c) => c >= 0xc000)
}

module.exports = { parseCiphers, parseEcdhCurve, parseSigalgs, offersTls12 }
