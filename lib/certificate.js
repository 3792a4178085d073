'use strict'
// The certificate `tls.checkServerIdentity(host, cert)` gets, in the shape of Node's
// `tlsSocket.getPeerCertificate(true)`: the legacy object of each certificate the server sent,
// from the leaf, each linked to its issuer by `issuerCertificate`. As Node does, the chain is
// completed from the trusted certificates up to its root (`tls.ca`; without it, also those of
// NODE_EXTRA_CA_CERTS and Node's bundled roots, `tls.rootCertificates`), and a self-signed
// certificate is its own issuer, so that the chain walk of Node's pinning example ends.

const { X509Certificate } = require('node:crypto')
const { readFileSync } = require('node:fs')
const { rootCertificates } = require('node:tls')

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** Most certificates added from the trusted ones (real chains need one to three). */
const MAX_ADDED = 8

/** Node's bundled roots by subject, parsed on first need (once per process). */
let bundledRoots = null
/** The certificates of NODE_EXTRA_CA_CERTS, read on first need, as the addon reads it (src/tls.rs). */
let extraRoots = null
/** Each client's `tls.ca`, parsed once (the array is the client's own, kept for its life). */
const parsedCa = new WeakMap()

/**
 * `chain`: DER Buffers as the server sent them, verified up to a trusted root. `ca`: the client's
 * `tls.ca` PEM texts (and a PKCS#12 file's other certificates); `caOnly`: `tls.ca` was given, so
 * the default roots are not trusted.
 */
function peerCertificate(chain, ca, caOnly) {
  // As Node links them: from the leaf, each to the certificate among the others sent that issued
  // it, in whatever order they came (those that issued none of the chain are left out).
  const sent = chain.map((der) => new X509Certificate(der))
  const certs = sent.slice(0, 1)
  const others = sent.slice(1)
  for (let last = certs[0]; last !== undefined && !last.checkIssued(last); ) {
    const i = others.findIndex((c) => last.checkIssued(c))
    if (i < 0) break
    last = others.splice(i, 1)[0]
    certs.push(last)
  }
  for (let added = 0; added < MAX_ADDED; added++) {
    const top = certs[certs.length - 1]
    if (top === undefined || top.checkIssued(top)) break
    const issuer = issuerAmong(top, ca, caOnly)
    // Cross-signed roots can issue each other: a certificate already in the chain ends it.
    if (issuer === null || certs.some((c) => c.fingerprint256 === issuer.fingerprint256)) break
    certs.push(issuer)
  }
  const objects = certs.map(legacyObject)
  for (let i = 0; i < objects.length; i++) {
    const next = objects[i + 1]
    if (next !== undefined) objects[i].issuerCertificate = next
    else if (certs[i].checkIssued(certs[i])) objects[i].issuerCertificate = objects[i]
  }
  return objects[0]
}

/** The trusted certificate that issued `cert`, or null. */
function issuerAmong(cert, ca, caOnly) {
  const issued = (c) => cert.checkIssued(c) && cert.verify(c.publicKey)
  let listed = parsedCa.get(ca)
  if (listed === undefined) {
    listed = parsePems(ca.join('\n'))
    parsedCa.set(ca, listed)
  }
  const trusted = listed.find(issued)
  if (trusted !== undefined) return trusted
  if (caOnly) return null
  if (extraRoots === null) extraRoots = readExtraRoots()
  const extra = extraRoots.find(issued)
  if (extra !== undefined) return extra
  if (bundledRoots === null) {
    bundledRoots = new Map()
    for (const text of rootCertificates) {
      const root = new X509Certificate(text)
      const same = bundledRoots.get(root.subject)
      if (same === undefined) bundledRoots.set(root.subject, [root])
      else same.push(root)
    }
  }
  return (bundledRoots.get(cert.issuer) ?? []).find(issued) ?? null
}

/** NODE_EXTRA_CA_CERTS's certificates; none when it is unset or unreadable (Node warned at startup). */
function readExtraRoots() {
  try {
    const path = process.env.NODE_EXTRA_CA_CERTS
    if (!path) return []
    return parsePems(readFileSync(path, 'latin1'))
  } catch {
    return []
  }
}

/** The certificates of a PEM text; a block that does not parse is passed over, as the addon does. */
function parsePems(text) {
  const out = []
  for (const block of text.match(PEM_CERTIFICATE) ?? []) {
    try {
      out.push(new X509Certificate(block))
    } catch {}
  }
  return out
}

function legacyObject(x509) {
  if (typeof x509.toLegacyObject === 'function') return x509.toLegacyObject()
  // Runtimes without it (Bun, Deno): the fields Node's own checkServerIdentity and pinning code read.
  return {
    subject: distinguishedName(x509.subject),
    issuer: distinguishedName(x509.issuer),
    subjectaltname: x509.subjectAltName,
    ca: x509.ca,
    valid_from: x509.validFrom,
    valid_to: x509.validTo,
    serialNumber: x509.serialNumber,
    fingerprint: x509.fingerprint,
    fingerprint256: x509.fingerprint256,
    fingerprint512: x509.fingerprint512,
    pubkey: x509.publicKey.export({ type: 'spki', format: 'der' }),
    raw: x509.raw,
  }
}

/** `'C=US\nCN=example.com'` as Node's legacy object: `{ C: 'US', CN: 'example.com' }` (a repeated name: an array). */
function distinguishedName(text) {
  const out = Object.create(null)
  for (const line of (text ?? '').split('\n')) {
    const at = line.indexOf('=')
    if (at <= 0) continue
    const [name, value] = [line.slice(0, at), line.slice(at + 1)]
    const seen = out[name]
    out[name] = seen === undefined ? value : Array.isArray(seen) ? [...seen, value] : [seen, value]
  }
  return out
}

module.exports = { peerCertificate }
