'use strict'
// send(blob): a Blob's bytes come only asynchronously (`blob.arrayBuffer()`), and what is sent
// after it must not overtake it. The Blob, every send() after it, and a disconnect() (or the
// connect() after one) made meanwhile wait here in the order they were made, as in ws's sender
// and the browser's WebSocket; each goes on, as the same call made at that moment, once all
// before it have. Blobs are read one at a time, as they reach the front: file-backed Blobs are
// not all in memory at once.

/**
 * A message waiting: `data` (a string or bytes; null until its Blob is read), `blob` (undefined
 * for another message), `error` (why its Blob could not be read), `original` (what send() was
 * given, for a `drop` event), `compress`, `callback` (a function, an array of them for a message
 * sent in pieces, or undefined) and `size` (its bytes, for bufferedAmount).
 * @typedef {{ data: string | Buffer | null, blob: Blob | undefined, error: unknown, original: unknown, compress: boolean, callback: Function | Function[] | undefined, size: number }} HeldMessage
 */

/**
 * A call waiting: `run()` makes it; `settle(value)`, for a disconnect(), resolves its promise
 * should it never be made (terminate() came first).
 * @typedef {{ run(): void, settle?: (value: unknown) => void }} HeldCall
 */

/**
 * What the client does with what comes out: `send(message)` (as send() would now, reporting
 * what it cannot send: it never throws), `unreadable(message)`, `threw(err)` for a call that
 * threw (the queue goes on), and `drained()` once nothing is held (the client sends directly
 * again).
 * @typedef {{ send(m: HeldMessage): void, unreadable(m: HeldMessage): void, threw(err: unknown): void, drained(): void }} HeldOwner
 */

class HeldSends {
  /** Messages and calls, oldest first from `#head` (`{ run }` for a call). */
  #items = []
  #head = 0
  /** Bytes of the messages held (a Blob's size), for bufferedAmount. */
  bytes = 0
  /** Calls (disconnect(), and connect() or reconnect() after one) among the items. */
  calls = 0
  /** A disconnect() waits here: the client reads 'closing'. */
  closing = false
  /** A disconnect() waits here, and no connect() or reconnect() since: send() refuses. */
  refusing = false
  #reading = false
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

  #end() {
    this.#over = true
    this.#items = []
    this.#head = 0
    this.bytes = 0
    this.calls = 0
    this.closing = false
    this.refusing = false
  }

  /** Sends what can go, up to a Blob still to be read (which it starts reading). */
  #pump() {
    if (this.#pumping || this.#over) return
    this.#pumping = true
    try {
      // What the owner does can hold more (a `drop` listener that sends) or discard (one that
      // terminates): both are seen here, as the loop reads the queue again each time.
      while (!this.#over && this.#head < this.#items.length) {
        const item = this.#items[this.#head]
        if (item.blob !== undefined && item.data === null && item.error === undefined) {
          this.#read(item)
          return
        }
        this.#items[this.#head++] = undefined
        if (item.run !== undefined) {
          this.calls--
          try {
            item.run()
          } catch (err) {
            this.#owner.threw(err)
          }
        } else {
          this.bytes -= item.size
          if (item.error === undefined) this.#owner.send(item)
          else this.#owner.unreadable(item)
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

  #read(message) {
    if (this.#reading) return
    this.#reading = true
    const done = () => {
      this.#reading = false
      this.#pump()
    }
    message.blob.arrayBuffer().then(
      (bytes) => {
        message.data = Buffer.from(bytes)
        done()
      },
      (err) => {
        message.error = err
        done()
      },
    )
  }
}

module.exports = { HeldSends }
