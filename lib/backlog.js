'use strict'
// What a paused client holds back (lib/client.js `pause()`): the messages, pings and pongs that
// were on their way to JS when pause() was called, or came after it. `ws` stops its message events
// at once (at most what it was parsing comes in the same turn); here up to the read gate's 4 MiB
// had been read ahead and would go on arriving for several turns.

/** What one turn of a replay delivers at most: the event loop gets a turn between them. */
const TURN_EVENTS = 1024
const TURN_BYTES = 1 << 20

/** About what an event holds: its bytes (a string, its length; a Blob, its size; 'fragments', their sum). */
function sizeOf(data) {
  if (typeof data === 'string') return data.length
  if (Array.isArray(data)) return data.reduce((n, piece) => n + piece.byteLength, 0) // 'fragments'
  return data.byteLength ?? data.size ?? 0
}

/** Events in order, `(kind, data, extra)` each, kept flat with a read index: taken in linear time. */
class Backlog {
  #items = []
  #at = 0

  get empty() {
    return this.#at === this.#items.length
  }

  push(kind, data, extra) {
    this.#items.push(kind, data, extra)
  }

  /**
   * Hands the events to `each` in order while `going()` holds; `bounded`: at most one turn's share.
   * Events pushed meanwhile (by a listener, say) are taken after the others.
   */
  take(each, going, bounded) {
    const items = this.#items
    let events = 0
    let bytes = 0
    while (this.#at < items.length && going()) {
      if (bounded && (events >= TURN_EVENTS || bytes >= TURN_BYTES)) break
      const at = this.#at
      const kind = items[at]
      const data = items[at + 1]
      const extra = items[at + 2]
      items[at + 1] = undefined
      this.#at = at + 3
      events++
      bytes += sizeOf(data)
      each(kind, data, extra)
    }
    if (this.#at === items.length) {
      this.#items = []
      this.#at = 0
    }
  }
}

module.exports = { Backlog, sizeOf }
