'use strict'
// What the addon asks of a client's own functions during an attempt (src/ask.rs): its `lookup`
// (or dns.lookup, for `hints`) and its `tls.checkServerIdentity`, asked as net.connect and Node's
// TLS ask them. The lookup's own error is kept to become the cause of the error its failure made.

const { isIP } = require('node:net')
const N = require('./native')
const { proxySystemWords, textOf, withCause } = require('./errors')

class Asked {
  #lookup
  #hints
  #checkServerIdentity
  #ca
  #caOnly
  /** The last lookup's failure: `{ message, err }` (the text the addon reports, the function's error), or null. */
  #lookupFailure = null

  constructor({ lookup, hints, checkServerIdentity, ca, caOnly }) {
    this.#lookup = lookup
    this.#hints = hints
    this.#checkServerIdentity = checkServerIdentity
    this.#ca = ca
    this.#caOnly = caOnly
  }

  /**
   * `err` (made from the addon's `p`) with the `lookup` function's own error as its cause when
   * that failure ended the attempt, as net.connect reports a lookup's error: the addon has only
   * its text (a cause read from the text exists only for getaddrinfo's words).
   */
  withLookupCause(err, p) {
    const failure = this.#lookupFailure
    if (failure === null) return err
    // The target's lookup (ERR_CONNECT), or the proxy's (ERR_PROXY, after the proxy's address).
    const words = p.code === 'ERR_CONNECT' ? p.message : p.code === 'ERR_PROXY' ? proxySystemWords(p.message) : undefined
    if (words?.startsWith(failure.message)) withCause(err, failure.err)
    return err
  }

  /**
   * Asks the user's `lookup` (or dns.lookup, for `hints`) for a host's addresses, as net.connect
   * asks it (`all: true`, and `hints` if any; the one-address answer of older lookups is taken
   * too). Its first answer counts; the attempt's connectTimeout bounds the wait.
   */
  lookupHost({ request, host, family }) {
    let answered = false
    const answer = (err, address) => {
      if (answered) return
      answered = true
      if (err) {
        const text = textOf(err, 'it failed')
        // The error it makes is reported with this one as its cause (`withLookupCause`).
        this.#lookupFailure = err instanceof Error ? { message: `lookup failed: ${text}`, err } : null
        return N.lookupAnswer(request, [], text)
      }
      this.#lookupFailure = null
      const all = Array.isArray(address) ? address.map((a) => (typeof a === 'string' ? a : a?.address)) : [address]
      if (!all.every((a) => typeof a === 'string' && isIP(a) !== 0)) {
        return N.lookupAnswer(request, [], 'it gave something that is not an IP address')
      }
      N.lookupAnswer(request, all, null)
    }
    try {
      const hints = this.#hints
      this.#lookup(host, hints === 0 ? { family, all: true } : { family, hints, all: true }, answer)
    } catch (err) {
      answer(err)
    }
  }

  /**
   * Asks the user's `tls.checkServerIdentity` whether a chain the addon verified is `host`'s, as
   * Node asks it: with the certificate as `getPeerCertificate(true)` gives it (lib/certificate.js);
   * an Error (or anything truthy) returned, or a throw, refuses it.
   */
  checkIdentity({ request, host, chain }) {
    let refused = false
    let refusal
    try {
      // Loaded on first use: few clients check identities themselves.
      const { peerCertificate } = require('./certificate')
      refusal = this.#checkServerIdentity(host, peerCertificate(chain, this.#ca, this.#caOnly))
      refused = !!refusal
    } catch (err) {
      // Whatever was thrown, `null` included.
      refused = true
      refusal = err
    }
    N.identityAnswer(request, refused ? textOf(refusal, 'refused') : null)
  }
}

module.exports = { Asked }
