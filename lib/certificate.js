'use strict'
// The certificate `tls.checkServerIdentity(host, cert)` gets, in the shape of Node's
// `tlsSocket.getPeerCertificate(true)`: the legacy object of each certificate the server sent,
// from the leaf, each linked to its issuer by `issuerCertificate`. As Node does, the chain is
// completed with the trusted root that issued its last certificate when that root is known here
// (`tls.ca`, or Node's bundled roots: `tls.rootCertificates`), and a self-signed certificate is its
// own issuer, so that the chain walk of Node's pinning example ends.

const { X509Certificate } = require('node:crypto')
const { rootCertificates } = require('node:tls')

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g

/** Node's bundled roots by subject, parsed on first need (once per process). */
let bundledRoots = null

/**
 * `chain`: DER Buffers as the server sent them, verified up to a trusted root. `ca`: the client's
 * `tls.ca` PEM texts.
 */
function peerCertificate(chain, ca) {
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
  const top = certs[certs.length - 1]
  if (top !== undefined && !top.checkIssued(top)) {
    const root = issuerAmong(top, ca)
    if (root !== null) certs.push(root)
  }
  const objects = certs.map(legacyObject)
  for (let i = 0; i < objects.length; i++) {
    const next = objects[i + 1]
    if (next !== undefined) objects[i].issuerCertificate = next
    else if (certs[i].checkIssued(certs[i])) objects[i].issuerCertificate = objects[i]
  }
  return objects[0]
}

/** The trusted root that issued `cert`, from `ca` or Node's bundled roots, or null. */
function issuerAmong(cert, ca) {
  const issued = (root) => cert.checkIssued(root) && cert.verify(root.publicKey)
  for (const pem of ca) {
    for (const text of pem.match(PEM_CERTIFICATE) ?? []) {
      const root = new X509Certificate(text)
      if (issued(root)) return root
    }
  }
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
