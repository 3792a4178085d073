'use strict'
// ws's `send(data, { fin: false })`: a message sent in pieces. The pieces are held here until the
// last one (`fin` true, the default) and the message then goes out as one: a message must not
// begin on one connection and end on the next, and a reconnecting client can lose its connection
// between any two pieces. RFC 6455 section 5.4 lets any hop change a message's fragmentation, so
// the peer receives the same message ws would have sent in as many frames.
//
// A piece may be a Blob, whose bytes come only asynchronously: from it on, the pieces are kept as
// given, and the message is a Blob of them (its text checked as UTF-8 once it is read, by the
// sends that wait for it: lib/held.js).

const { makeError } = require('./errors')
const { utf8 } = require('./utf8')

/** A message whose last piece has not been sent yet: its bytes so far and its pieces' callbacks. */
class FragmentedMessage {
  /**
   * `first` is what send() takes (a string, or a Buffer over the caller's bytes); `text`: a text
   * message (the first piece's type, or its `binary` option: bytes of text may end mid-character,
   * as any piece's may); `compress`, the first piece's option, counts for the message (as in ws).
   */
  constructor(first, text, compress) {
    this.text = text
    this.compress = compress
    /**
     * Text: the decoded pieces; binary: copies of the pieces (the caller may reuse its buffers).
     * From a Blob piece on, the pieces as given (strings, copies of bytes, Blobs).
     */
    this.parts = []
    /** A piece was a Blob: the message will be a Blob of the parts. */
    this.blobs = false
    /** The bytes held, for bufferedAmount. */
    this.bytes = 0
    /** Text: the last piece's trailing bytes that do not end a UTF-8 sequence yet (at most 3). */
    this.partial = null
    /** The pieces' callbacks, in order (a piece sent without one has none). */
    this.callbacks = []
    this.add(first)
  }

  /**
   * Adds a piece; throws ERR_INVALID_ARG_VALUE, holding nothing of it, when the pieces of a text
   * message stop being UTF-8 (found as soon as the bytes so far cannot begin valid text).
   */
  add(piece) {
    if (piece instanceof Blob) {
      // Bytes of text cut off before it are its first bytes now, checked with the rest once read.
      if (this.partial !== null) this.parts.push(this.partial)
      this.partial = null
      this.blobs = true
      this.parts.push(piece)
      this.bytes += piece.size
      return
    }
    if (this.blobs) {
      // As before a Blob: a binary message's strings are their bytes each, a text message's joined.
      const copy = typeof piece === 'string' && this.text ? piece : Buffer.from(piece)
      this.parts.push(copy)
      this.bytes += typeof copy === 'string' ? Buffer.byteLength(copy) : copy.length
      return
    }
    if (!this.text) {
      const copy = Buffer.from(piece) // a string's bytes, or a copy of the caller's
      this.parts.push(copy)
      this.bytes += copy.length
      return
    }
    if (typeof piece === 'string') {
      if (this.partial !== null) throw notText()
      this.parts.push(piece)
      this.bytes += Buffer.byteLength(piece)
      return
    }
    const bytes = this.partial === null ? piece : Buffer.concat([this.partial, piece])
    const end = completeUpTo(bytes)
    let decoded
    try {
      decoded = utf8.decode(bytes.subarray(0, end))
    } catch {
      throw notText()
    }
    if (!mayBeginSequence(bytes.subarray(end))) throw notText()
    this.parts.push(decoded)
    this.partial = end === bytes.length ? null : Buffer.from(bytes.subarray(end))
    this.bytes += piece.length
  }

  /** Where the message is now, to go back to with `restore()`. */
  mark() {
    return { parts: this.parts.length, bytes: this.bytes, partial: this.partial, blobs: this.blobs, callbacks: this.callbacks.length }
  }

  restore(mark) {
    this.parts.length = mark.parts
    this.bytes = mark.bytes
    this.partial = mark.partial
    this.blobs = mark.blobs
    this.callbacks.length = mark.callbacks
  }

  /**
   * The whole message, to send as one; throws (holding on) when text ends inside a UTF-8 sequence.
   * With a Blob piece, a Blob of the pieces (strings next to each other joined first, so that a
   * surrogate pair split between two stays one character).
   */
  data() {
    if (this.blobs) return new Blob(joinStrings(this.parts))
    if (!this.text) return this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.bytes)
    if (this.partial !== null) throw notText()
    return this.parts.join('')
  }
}

function joinStrings(parts) {
  const joined = []
  for (const part of parts) {
    const last = joined.length - 1
    if (typeof part === 'string' && typeof joined[last] === 'string') joined[last] += part
    else joined.push(part)
  }
  return joined
}

function notText() {
  return makeError('ERR_INVALID_ARG_VALUE', 'The pieces of a text message (send() with fin: false) must together be valid UTF-8', TypeError)
}

/** Where the last complete UTF-8 sequence of `bytes` ends (a sequence cut off at the end stays out). */
function completeUpTo(bytes) {
  const n = bytes.length
  for (let i = n - 1; i >= 0 && i >= n - 3; i--) {
    const b = bytes[i]
    if ((b & 0xc0) === 0x80) continue // a continuation byte: look further back for its lead
    const len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1
    return i + len > n ? i : n
  }
  return n
}

/** Whether a cut-off tail could still become a valid sequence (its lead byte and what follows). */
function mayBeginSequence(tail) {
  if (tail.length === 0) return true
  const lead = tail[0]
  if (lead < 0xc2 || lead > 0xf4) return false
  // The second byte's range for the leads that restrict it (RFC 3629: no overlongs, surrogates or > U+10FFFF).
  if (tail.length > 1) {
    const second = tail[1]
    const [lo, hi] = lead === 0xe0 ? [0xa0, 0xbf] : lead === 0xed ? [0x80, 0x9f] : lead === 0xf0 ? [0x90, 0xbf] : lead === 0xf4 ? [0x80, 0x8f] : [0x80, 0xbf]
    if (second < lo || second > hi) return false
  }
  for (let k = 2; k < tail.length; k++) if ((tail[k] & 0xc0) !== 0x80) return false
  return true
}

module.exports = { FragmentedMessage }
