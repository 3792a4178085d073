'use strict'
// send(blob): a Blob's bytes come only asynchronously (`blob.arrayBuffer()`), and what is sent
// after it must not overtake it. The Blob, every send() after it, and a disconnect() or
// reconnect() (or a connect() after a disconnect()) made meanwhile wait here in the order they
// were made, as in ws's sender and the browser's WebSocket; each goes on, as the same call made
// at that moment, once all before it have. Blobs are read one at a time, as they reach the front: file-backed Blobs are
// not all in memory at once.

const { makeError } = require('./errors')
const { utf8 } = require('./utf8')

/** A held message's `state`: a Blob not read yet, being read, bytes there, or not readable. */
const WAITING = 0
const READING = 1
const READY = 2
const UNREADABLE = 3

/**
 * A message waiting: `state`, `data` (a string or bytes; null until its Blob is read), `blob`
 * (undefined for another message), `text` (a Blob sent as text: its bytes must be UTF-8),
 * `error` (why its Blob could not be read, or was not text), `original` (what send() was given,
 * for a `drop` event), `compress`, `callback` (a function, an array of them for a message sent in
 * pieces, or undefined), `size` (its bytes, for bufferedAmount) and `chunk` (a
 * createWebSocketStream() write's, whose stream decides what a refusal makes of it). `control`:
 * for ping(blob) or pong(blob), `{ what, connection }`, a frame of that connection's, not a message
 * of the queue (nothing hands it back, and it never waits for the client to connect again).
 * @typedef {{ state: number, data: string | Buffer | null, blob: Blob | undefined, text: boolean, error: unknown, original: unknown, compress: boolean, callback: Function | Function[] | undefined, size: number, chunk: boolean, control: { what: string, connection: string } | undefined }} HeldMessage
 */

/**
 * A call waiting: `run(dropped)` makes it (`dropped`: the messages given up for it, or null);
 * for a disconnect(), `settle(value)` resolves its promise should it never be made (terminate()
 * came first), `timer` is its deadline's, and `discards` says whether it discards what is queued.
 * @typedef {{ run(dropped: HeldMessage[] | null): void, settle?: (value: unknown) => void, timer?: unknown, discards?: boolean, dropped?: HeldMessage[] }} HeldCall
 */

/**
 * What the client does with what comes out: `send(message)` (as send() would now, reporting
 * what it cannot send: it never throws; false when the addon did not take it because the client
 * closed before JS saw it: it waits at the front, as if `keeps()` had said so),
 * `unreadable(message)`, `controlGone(message)` for a ping or pong whose connection has gone
 * before its turn, `threw(err)` for a call that threw (the queue goes on), and `drained()`
 * once nothing is held (the client sends directly again). `keeps()`: the client is closed (it
 * gave up, or rws mode's close() kept its queue) and has a queue: messages wait, as its queue
 * does, for a connect() (`resume()`), a disconnect() or a drain.
 * @typedef {{ send(m: HeldMessage): boolean, unreadable(m: HeldMessage): void, controlGone(m: HeldMessage): void, threw(err: unknown): void, drained(): void, keeps(): boolean }} HeldOwner
 */

class HeldSends {
  /** Messages and calls, oldest first from `#head` (`{ run }` for a call). */
  #items = []
  #head = 0
  /** Bytes of the messages held (a Blob's size), for bufferedAmount. */
  bytes = 0
  /** Calls (disconnect(), and connect() or reconnect() after one) among the items. */
  calls = 0
  /** disconnect() calls waiting here: while there are any, the client reads 'closing'. */
  closing = 0
  /** A disconnect() waits here, and no connect() or reconnect() since: send() refuses. */
  refusing = false
  /** Messages wait for the closed client to connect again (`HeldOwner.keeps()`). */
  stalled = false
  #pumping = false
  /** Drained, or discarded: nothing more comes out. */
  #over = false
  /** @type {HeldOwner} */
  #owner

  constructor(owner) {
    this.#owner = owner
  }

  /** Holds a message behind what is held. */
  hold(message) {
    this.bytes += message.size
    this.#items.push(message)
    this.#pump()
  }

  /** Holds a call, to be made once everything before it has gone on. */
  holdCall(call) {
    this.calls++
    this.#items.push(call)
    this.#pump()
  }

  /**
   * Ends this queue at once (terminate()): the messages and calls still held, oldest first, for
   * the caller to report. A Blob being read is forgotten when its bytes come.
   */
  discard() {
    const left = this.#items.slice(this.#head)
    this.#end()
    return left
  }

  /**
   * A held call's deadline has passed (a disconnect()'s closeTimeout): the messages before it are
   * given up (a Blob still being read with them) and handed to it; the calls before it are made
   * first, in order.
   */
  expire(call) {
    this.#dropBefore(call)
    this.#pump()
  }

  /** The client connects again: what waited for it goes on. */
  resume() {
    this.#pump()
  }

  /**
   * The connection or attempt the messages waited for has ended (the I/O thread reports its close):
   * the calls held behind them are made now, in order, as made just before that close. A
   * disconnect() discards the messages before it (given up with the connection, as its queue's
   * are); a connect(), reconnect() or rws close() goes ahead of them (they go on the next
   * connection, in their order). Otherwise the events of what the call ends would be reported as
   * if it had not been made (a giveup after a reconnect(), a retry after a disconnect()).
   */
  callsNow() {
    if (this.#pumping) return
    for (let call = this.#firstCall(); call !== null && !this.#over; call = this.#firstCall()) {
      this.#hoist(call)
      this.#pump()
    }
  }

  /** Puts `call` at the front: a discarding one with the messages before it given up. */
  #hoist(call) {
    if (call.discards) {
      this.#dropBefore(call)
    } else {
      this.#items.splice(this.#items.indexOf(call, this.#head), 1)
      this.#items.splice(this.#head, 0, call)
    }
  }

  #dropBefore(call) {
    const at = this.#over ? -1 : this.#items.indexOf(call, this.#head)
    if (at < 0) return
    const dropped = []
    const calls = []
    for (let i = this.#head; i < at; i++) {
      const item = this.#items[i]
      if (item.run === undefined) {
        dropped.push(item)
        this.bytes -= item.size
      } else {
        calls.push(item)
      }
    }
    call.dropped = dropped
    this.#items = calls.concat(this.#items.slice(at))
    this.#head = 0
  }

  /** The first call held, or null. */
  #firstCall() {
    for (let i = this.#head; i < this.#items.length; i++) if (this.#items[i].run !== undefined) return this.#items[i]
    return null
  }

  /**
   * Takes the messages `which` picks out (all: drainQueue()), oldest first; the others and the
   * calls stay, and go on now if nothing is before them any more.
   */
  takeMessages(which = undefined) {
    const taken = []
    const left = []
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]
      if (item.run === undefined && item.control === undefined && (which === undefined || which(item))) {
        taken.push(item)
        this.bytes -= item.size
      } else {
        left.push(item)
      }
    }
    this.#items = left
    this.#head = 0
    this.#pump()
    return taken
  }

  #end() {
    this.#over = true
    this.#items = []
    this.#head = 0
    this.bytes = 0
    this.calls = 0
    this.closing = 0
    this.refusing = false
  }

  /** Sends what can go, up to a Blob still to be read (which it starts reading). */
  #pump() {
    if (this.#pumping || this.#over) return
    this.#pumping = true
    this.stalled = false
    try {
      // What the owner does can hold more (a `drop` listener that sends) or discard (one that
      // terminates): both are seen here, as the loop reads the queue again each time.
      while (!this.#over && this.#head < this.#items.length) {
        // A producer that always keeps a Blob being read never drains the queue: what has gone
        // on is dropped from the array now and then.
        if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
          this.#items = this.#items.slice(this.#head)
          this.#head = 0
        }
        const item = this.#items[this.#head]
        if (item.state === WAITING) this.#read(item)
        if (item.state === READING) return
        // (A ping or pong goes on: it is for a connection the client no longer has.)
        if (item.state === READY && item.control === undefined && this.#owner.keeps()) {
          // The client is closed: the messages wait for it to connect again. A call held behind
          // them goes first: a disconnect() that discards the queue discards them with it; a
          // connect(), reconnect() or rws close() is made, and the loop looks again.
          const call = this.#firstCall()
          if (call === null) {
            this.#stall()
            return
          }
          this.#hoist(call)
          continue
        }
        this.#items[this.#head++] = undefined
        if (item.run !== undefined) {
          this.calls--
          try {
            item.run(item.dropped ?? null)
          } catch (err) {
            this.#owner.threw(err)
          }
        } else {
          this.bytes -= item.size
          if (item.state !== READY) {
            this.#owner.unreadable(item)
          } else if (!this.#owner.send(item)) {
            // Not taken (nothing ran meanwhile): back at the front, to wait with what follows.
            this.#items[--this.#head] = item
            this.bytes += item.size
            this.#stall()
            return
          }
        }
      }
      if (!this.#over) {
        this.#end()
        this.#owner.drained()
      }
    } finally {
      this.#pumping = false
    }
  }

  /**
   * The messages wait for the client to connect again. The pings and pongs among them are for the
   * connection that has gone: they end now, rather than when the client acts.
   */
  #stall() {
    this.stalled = true
    const gone = []
    const left = []
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]
      if (item.control !== undefined) gone.push(item)
      else left.push(item)
    }
    if (gone.length === 0) return
    this.#items = left
    this.#head = 0
    for (const item of gone) this.#owner.controlGone(item)
  }

  #read(message) {
    message.state = READING
    // A read that fails (or gives bytes that are not the text asked for): the message is
    // reported, the queue goes on.
    readBlob(message.blob)
      .then((bytes) => (message.text ? blobText(bytes) : bytes))
      .then(
        (bytes) => {
          message.data = bytes
          message.state = READY
          this.#pump()
        },
        (err) => {
          message.error = err
          message.state = UNREADABLE
          this.#pump()
        },
      )
  }
}

/**
 * A Blob's bytes, as a Buffer. Called from a promise: a Blob-like object whose arrayBuffer() throws,
 * or gives something that is not bytes, fails as a read that fails.
 */
function readBlob(blob) {
  return Promise.resolve()
    .then(() => blob.arrayBuffer())
    .then(bytesOfRead)
}

/** What a Blob's arrayBuffer() resolved with, as a Buffer. */
function bytesOfRead(bytes) {
  if (bytes instanceof ArrayBuffer) return Buffer.from(bytes)
  if (ArrayBuffer.isView(bytes)) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  throw new TypeError(`The Blob's arrayBuffer() did not resolve with an ArrayBuffer. Received ${bytes === null ? 'null' : typeof bytes}`)
}

/** A Blob's bytes as the text of a text message (`send(blob, { binary: false })`). */
function blobText(bytes) {
  try {
    return utf8.decode(bytes)
  } catch (err) {
    // (Not UTF-8 is the decoder's TypeError; anything else, text too long for a string, is what it is.)
    if (!(err instanceof TypeError)) throw err
    throw makeError('ERR_INVALID_ARG_VALUE', "The Blob's bytes are not valid UTF-8: a text message (binary: false) must be", TypeError)
  }
}

/**
 * Whether `value` is a Blob: the platform's, or one of the same shape (fetch-blob's, formdata-node's
 * File), as ws takes them.
 */
function isBlob(value) {
  if (value instanceof Blob) return true
  if (typeof value !== 'object' || value === null) return false
  const tag = value[Symbol.toStringTag]
  return (
    (tag === 'Blob' || tag === 'File') &&
    typeof value.arrayBuffer === 'function' &&
    typeof value.stream === 'function' &&
    typeof value.type === 'string' &&
    typeof value.size === 'number'
  )
}

module.exports = { HeldSends, WAITING, READY, isBlob }
