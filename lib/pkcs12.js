'use strict'
// `tls.pfx`: a PKCS#12 file (RFC 7292) opened into its private key and certificates, with
// node:crypto's primitives. Written here because neither Node (whose TLS reads PKCS#12 but gives
// nothing back) nor rustls opens one, and the libraries that do are far larger than this job.
// What is read: DER (as OpenSSL and Java's keytool write it; BER is refused), password integrity (the
// HMAC of RFC 7292 appendix B), certificates and keys in plain or password-encrypted form (PBES2
// with PBKDF2 and AES-CBC, OpenSSL 3's default; or PKCS#12's own 3DES). RC2, the cipher of older
// files, is in no OpenSSL 3 default build: such a file is refused with the command that converts it. Messages never show the
// password or key material.

const { createDecipheriv, createHash, createHmac, createPrivateKey, pbkdf2Sync, timingSafeEqual } = require('node:crypto')

// Object identifiers, as the DER bytes of their value.
const oid = (text) => {
  const parts = text.split('.').map(Number)
  const out = [parts[0] * 40 + parts[1]]
  for (const n of parts.slice(2)) {
    const bytes = [n & 0x7f]
    for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) bytes.unshift((v & 0x7f) | 0x80)
    out.push(...bytes)
  }
  return Buffer.from(out).toString('hex')
}
const OID = {
  data: oid('1.2.840.113549.1.7.1'),
  encryptedData: oid('1.2.840.113549.1.7.6'),
  keyBag: oid('1.2.840.113549.1.12.10.1.1'),
  shroudedKeyBag: oid('1.2.840.113549.1.12.10.1.2'),
  certBag: oid('1.2.840.113549.1.12.10.1.3'),
  x509Certificate: oid('1.2.840.113549.1.9.22.1'),
  pbes2: oid('1.2.840.113549.1.5.13'),
  pbkdf2: oid('1.2.840.113549.1.5.12'),
  pbeSha1TripleDes: oid('1.2.840.113549.1.12.1.3'),
  pbeSha1TwoKeyDes: oid('1.2.840.113549.1.12.1.4'),
  pbeSha1Rc2128: oid('1.2.840.113549.1.12.1.5'),
  pbeSha1Rc240: oid('1.2.840.113549.1.12.1.6'),
}
// Digests by OID: for the MAC (the digest itself) and for PBKDF2 (its HMAC), with block sizes.
const DIGESTS = new Map([
  [oid('1.3.14.3.2.26'), { name: 'sha1', block: 64 }],
  [oid('2.16.840.1.101.3.4.2.4'), { name: 'sha224', block: 64 }],
  [oid('2.16.840.1.101.3.4.2.1'), { name: 'sha256', block: 64 }],
  [oid('2.16.840.1.101.3.4.2.2'), { name: 'sha384', block: 128 }],
  [oid('2.16.840.1.101.3.4.2.3'), { name: 'sha512', block: 128 }],
])
const HMACS = new Map([
  [oid('1.2.840.113549.2.7'), 'sha1'],
  [oid('1.2.840.113549.2.8'), 'sha224'],
  [oid('1.2.840.113549.2.9'), 'sha256'],
  [oid('1.2.840.113549.2.10'), 'sha384'],
  [oid('1.2.840.113549.2.11'), 'sha512'],
])
const CIPHERS = new Map([
  [oid('2.16.840.1.101.3.4.1.2'), { name: 'aes-128-cbc', key: 16 }],
  [oid('2.16.840.1.101.3.4.1.22'), { name: 'aes-192-cbc', key: 24 }],
  [oid('2.16.840.1.101.3.4.1.42'), { name: 'aes-256-cbc', key: 32 }],
  [oid('1.2.840.113549.3.7'), { name: 'des-ede3-cbc', key: 24 }],
])

const CONVERT = 'convert it with `openssl pkcs12 -in old.p12 -nodes` (add `-legacy` for an old file) and pass `cert` and `key`'

class Pkcs12Error extends Error {}

// --- DER ------------------------------------------------------------------------------------

/** The element at `at`: its tag and where its content starts and ends. */
function element(buf, at, end = buf.length) {
  if (at + 2 > end) throw new Pkcs12Error('it is truncated')
  const tag = buf[at]
  let length = buf[at + 1]
  let start = at + 2
  if (length === 0x80) throw new Pkcs12Error(`it is BER with indefinite lengths, not DER: ${CONVERT}`)
  if (length > 0x80) {
    const n = length & 0x7f
    if (n > 4 || start + n > end) throw new Pkcs12Error('it has an invalid length')
    length = 0
    for (let i = 0; i < n; i++) length = length * 256 + buf[start + i]
    start += n
  }
  if (start + length > end) throw new Pkcs12Error('it is truncated')
  return { tag, at, start, end: start + length, content: buf.subarray(start, start + length) }
}

/** The elements inside a constructed element. */
function children(buf, parent) {
  const out = []
  for (let at = parent.start; at < parent.end; ) {
    const child = element(buf, at, parent.end)
    out.push(child)
    at = child.end
  }
  return out
}

function expect(node, tag, what) {
  if (node === undefined || node.tag !== tag) throw new Pkcs12Error(`it is not PKCS#12 (${what})`)
  return node
}

const SEQUENCE = 0x30
const OCTETS = 0x04
const INTEGER = 0x02
const OBJECT = 0x06
const EXPLICIT_0 = 0xa0
const IMPLICIT_0 = 0x80

function integer(node) {
  if (node.content.length > 6) throw new Pkcs12Error('it has an integer out of range')
  return node.content.reduce((n, b) => n * 256 + b, 0)
}

/** An iteration count: files use thousands; a corrupt one must not run for hours. */
function iterations(node) {
  const n = integer(expect(node, INTEGER, 'iterations'))
  if (n < 1 || n > 10_000_000) throw new Pkcs12Error('it has an iteration count out of range')
  return n
}

/** The children of a DER SEQUENCE held in `bytes`. */
function sequenceIn(bytes, what) {
  const top = expect(element(bytes, 0), SEQUENCE, what)
  if (top.end !== bytes.length) throw new Pkcs12Error(`it is not PKCS#12 (${what})`)
  return children(bytes, top).map((c) => ({ ...c, buf: bytes }))
}

function kids(node) {
  return children(node.buf, node).map((c) => ({ ...c, buf: node.buf }))
}

// --- PKCS#12 key derivation (RFC 7292 appendix B) -------------------------------------------

/** The password as PKCS#12 derivation takes it: UTF-16BE with a terminating zero. */
function bmpPassword(password) {
  if (password === null) return Buffer.alloc(0)
  const units = Buffer.from(`${password}\0`, 'utf16le')
  for (let i = 0; i < units.length; i += 2) [units[i], units[i + 1]] = [units[i + 1], units[i]]
  return units
}

/**
 * What key derivation may still cost for the file being opened, in rounds of PKCS#12's own
 * derivation (a createHash() call here, ~3.5 microseconds, about 17 times OpenSSL's). Writers use thousands
 * of iterations a derivation (OpenSSL 2,048, Java 10,000; 600,000 for the most cautious) and a
 * file needs a handful of derivations; a corrupt or hostile count must not block the event loop
 * for minutes. PBKDF2 (PBES2) runs natively: an iteration counts for an eighth of a round.
 */
const FILE_KDF_ROUNDS = 2_000_000
let kdfRoundsLeft = FILE_KDF_ROUNDS

/** Takes `rounds` from the file's budget, before they run. */
function spend(rounds) {
  if (rounds > kdfRoundsLeft) {
    throw new Pkcs12Error(`its key derivations add up to more than ${FILE_KDF_ROUNDS} hash rounds, more than any PKCS#12 writer uses`)
  }
  kdfRoundsLeft -= rounds
}

function deriveKey(digest, password, salt, id, iterations, size) {
  const { name, block } = digest
  spend(iterations * Math.ceil(size / createHash(name).digest().length))
  const fill = (bytes) => {
    if (bytes.length === 0) return Buffer.alloc(0)
    const out = Buffer.alloc(block * Math.ceil(bytes.length / block))
    for (let i = 0; i < out.length; i++) out[i] = bytes[i % bytes.length]
    return out
  }
  const input = Buffer.concat([fill(salt), fill(password)])
  const diversifier = Buffer.alloc(block, id)
  const out = []
  let produced = 0
  while (produced < size) {
    let a = createHash(name).update(diversifier).update(input).digest()
    for (let i = 1; i < iterations; i++) a = createHash(name).update(a).digest()
    out.push(a)
    produced += a.length
    // Each block of the input becomes (block + B + 1) mod 2^(8 * block), B being `a` repeated.
    const b = fill(a).subarray(0, block)
    for (let j = 0; j < input.length; j += block) {
      let carry = 1
      for (let k = block - 1; k >= 0; k--) {
        const sum = input[j + k] + b[k] + carry
        input[j + k] = sum & 0xff
        carry = sum >> 8
      }
    }
  }
  return Buffer.concat(out).subarray(0, size)
}

// --- Opening the file ---------------------------------------------------------------------

/**
 * The private key (a KeyObject) and certificates (DER, in the file's order) of a PKCS#12 file;
 * `passphrase` as Node's `passphrase` (a string or bytes; none for a file without one).
 */
function openPkcs12(pfx, passphrase) {
  kdfRoundsLeft = FILE_KDF_ROUNDS
  const password = passphrase === undefined ? null : Buffer.isBuffer(passphrase) ? passphrase.toString('utf8') : String(passphrase)
  const [version, authSafe, macData] = sequenceIn(pfx, 'PFX')
  if (integer(expect(version, INTEGER, 'version')) !== 3) throw new Pkcs12Error('it is not a version 3 PKCS#12 file')
  const [type, wrapped] = kids(expect(authSafe, SEQUENCE, 'authSafe'))
  if (expect(type, OBJECT, 'authSafe type').content.toString('hex') !== OID.data) {
    throw new Pkcs12Error('its integrity is by public key, which is not supported: ' + CONVERT)
  }
  const safe = expect(kids(expect(wrapped, EXPLICIT_0, 'authSafe content'))[0], OCTETS, 'authSafe data').content
  // A file without a password may have no MAC; one with a password is checked against it. An
  // empty password is tried both ways PKCS#12 writers encode it.
  const candidates = password === null || password === '' ? ['', null] : [password]
  // No MAC: nothing can check a password, and OpenSSL (Node) refuses to take one for such a file.
  if (macData === undefined && candidates[0] !== '') {
    throw new Pkcs12Error('it has no integrity MAC, so no password can be checked: give no "tls.passphrase" (Node refuses one too: "mac absent")')
  }
  const accepted = macData === undefined ? candidates[0] : candidates.find((p) => macMatches(macData, safe, p))
  if (accepted === undefined) {
    throw new Pkcs12Error(password === null ? 'it is protected by a password: "tls.passphrase" is needed' : 'its password is not "tls.passphrase" (the integrity check failed)')
  }
  const certificates = []
  const keys = []
  for (const info of sequenceIn(safe, 'authenticated safe')) {
    const [contentType, content] = kids(expect(info, SEQUENCE, 'content info'))
    const kind = expect(contentType, OBJECT, 'content type').content.toString('hex')
    let bags
    if (kind === OID.data) {
      bags = expect(kids(expect(content, EXPLICIT_0, 'content'))[0], OCTETS, 'data').content
    } else if (kind === OID.encryptedData) {
      const [, encryptedContentInfo] = kids(expect(kids(expect(content, EXPLICIT_0, 'content'))[0], SEQUENCE, 'encrypted data'))
      const [, algorithm, encrypted] = kids(expect(encryptedContentInfo, SEQUENCE, 'encrypted content'))
      bags = decrypt(algorithm, expect(encrypted, IMPLICIT_0, 'encrypted content').content, accepted, 'its certificates do not')
    } else {
      throw new Pkcs12Error('it holds contents encrypted to a public key, which are not supported: ' + CONVERT)
    }
    for (const bag of sequenceIn(bags, 'safe contents')) {
      const [bagType, value] = kids(expect(bag, SEQUENCE, 'bag'))
      const bagKind = expect(bagType, OBJECT, 'bag type').content.toString('hex')
      const inner = kids(expect(value, EXPLICIT_0, 'bag value'))[0]
      if (bagKind === OID.certBag) {
        const [certType, certValue] = kids(expect(inner, SEQUENCE, 'certificate bag'))
        if (expect(certType, OBJECT, 'certificate type').content.toString('hex') !== OID.x509Certificate) continue
        certificates.push(Buffer.from(expect(kids(expect(certValue, EXPLICIT_0, 'certificate'))[0], OCTETS, 'certificate').content))
      } else if ((bagKind === OID.keyBag || bagKind === OID.shroudedKeyBag) && keys.length === 0) {
        // The first key, as OpenSSL's PKCS12_parse (Node) takes it; the others are not opened.
        keys.push(openKey(inner, bagKind === OID.shroudedKeyBag, accepted))
      }
    }
  }
  if (keys.length === 0) throw new Pkcs12Error('it holds no private key')
  if (certificates.length === 0) throw new Pkcs12Error('it holds no certificate')
  return { key: keys[0], certificates }
}

function macMatches(macData, safe, password) {
  const [digestInfo, salt, count] = kids(expect(macData, SEQUENCE, 'MAC'))
  const [algorithm, digest] = kids(expect(digestInfo, SEQUENCE, 'MAC digest'))
  const algorithmOid = kids(expect(algorithm, SEQUENCE, 'MAC algorithm'))[0].content.toString('hex')
  const hash = DIGESTS.get(algorithmOid)
  if (hash === undefined) throw new Pkcs12Error('its integrity check uses an unsupported algorithm: ' + CONVERT)
  const rounds = count === undefined ? 1 : iterations(count)
  const expected = expect(digest, OCTETS, 'MAC value').content
  const size = createHash(hash.name).digest().length
  const key = deriveKey(hash, bmpPassword(password), expect(salt, OCTETS, 'MAC salt').content, 3, rounds, size)
  const actual = createHmac(hash.name, key).update(safe).digest()
  return actual.length === expected.length && timingSafeEqual(actual, expected)
}

/**
 * Decrypts certificates or a key: PBES2 (PBKDF2 and AES or 3DES in CBC mode) or PKCS#12's own
 * 3DES. `what`: the subject of the error message.
 */
function decrypt(algorithm, data, password, what) {
  const [algorithmType, params] = kids(expect(algorithm, SEQUENCE, 'encryption algorithm'))
  const kind = expect(algorithmType, OBJECT, 'encryption algorithm').content.toString('hex')
  let cipher, key, iv
  if (kind === OID.pbes2) {
    const [kdf, scheme] = kids(expect(params, SEQUENCE, 'PBES2 parameters'))
    const [kdfType, kdfParams] = kids(expect(kdf, SEQUENCE, 'key derivation'))
    if (kdfType.content.toString('hex') !== OID.pbkdf2) throw new Pkcs12Error('it is encrypted with an unsupported key derivation: ' + CONVERT)
    const [salt, count, ...rest] = kids(expect(kdfParams, SEQUENCE, 'PBKDF2 parameters'))
    const prf = rest.find((n) => n.tag === SEQUENCE)
    const hmac = prf === undefined ? 'sha1' : HMACS.get(kids(prf)[0].content.toString('hex'))
    const [schemeType, schemeIv] = kids(expect(scheme, SEQUENCE, 'encryption scheme'))
    const found = CIPHERS.get(schemeType.content.toString('hex'))
    if (hmac === undefined || found === undefined) throw new Pkcs12Error('it is encrypted with an unsupported algorithm: ' + CONVERT)
    cipher = found.name
    const rounds = iterations(count)
    spend(Math.ceil((rounds * Math.ceil(found.key / createHash(hmac).digest().length)) / 8))
    key = pbkdf2Sync(Buffer.from(password ?? '', 'utf8'), expect(salt, OCTETS, 'salt').content, rounds, found.key, hmac)
    iv = expect(schemeIv, OCTETS, 'IV').content
  } else if (kind === OID.pbeSha1TripleDes || kind === OID.pbeSha1TwoKeyDes) {
    const [salt, count] = kids(expect(params, SEQUENCE, 'PBE parameters'))
    const sha1 = { name: 'sha1', block: 64 }
    const rounds = iterations(count)
    const size = kind === OID.pbeSha1TripleDes ? 24 : 16
    cipher = kind === OID.pbeSha1TripleDes ? 'des-ede3-cbc' : 'des-ede-cbc'
    key = deriveKey(sha1, bmpPassword(password), expect(salt, OCTETS, 'salt').content, 1, rounds, size)
    iv = deriveKey(sha1, bmpPassword(password), salt.content, 2, rounds, 8)
  } else if (kind === OID.pbeSha1Rc2128 || kind === OID.pbeSha1Rc240) {
    throw new Pkcs12Error(`it is encrypted with RC2, which OpenSSL 3 no longer has by default: ${CONVERT}`)
  } else {
    throw new Pkcs12Error('it is encrypted with an unsupported algorithm: ' + CONVERT)
  }
  try {
    const decipher = createDecipheriv(cipher, key, iv)
    return Buffer.concat([decipher.update(data), decipher.final()])
  } catch {
    throw new Pkcs12Error(`${what} decrypt with "tls.passphrase"`)
  }
}

/**
 * A key bag's PrivateKeyInfo, or a shrouded one's EncryptedPrivateKeyInfo, decrypted here as the
 * certificates are (so that every runtime opens the same files, whatever its PKCS#8 decryption).
 */
function openKey(bagValue, shrouded, password) {
  let der = bagValue.buf.subarray(bagValue.at, bagValue.end)
  if (shrouded) {
    const [algorithm, encrypted] = kids(expect(bagValue, SEQUENCE, 'encrypted key'))
    der = decrypt(algorithm, expect(encrypted, OCTETS, 'encrypted key').content, password, 'its private key does not')
  }
  try {
    return createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })
  } catch (err) {
    // node:crypto's reason (an unknown key type) names no secret.
    throw new Pkcs12Error(`its private key does not open (${err.message})`)
  }
}

module.exports = { openPkcs12, Pkcs12Error }
