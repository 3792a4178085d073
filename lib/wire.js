'use strict'
// The wire between the addon and JS: the protocol's numbers, the loop that takes
// event batches from the native side, and the decoding of their payloads.
//
// The numbers (event tags, send() outcomes) are defined once, in src/protocol.rs,
// and read from the addon here. The client registers one handler per event name
// (`listen`); an event the addon can report without a handler here, or a handler
// for an event it does not know, fails at load, so the two sides cannot drift.

const N = require('./native')
const { rethrowLater, microtask, setImmediate } = require('./later')

const { events: EVENTS, send: SEND, externalFrom: EXTERNAL_FROM } = N.wireProtocol()

/** The send() outcomes lib/client.js tells apart: the addon must report exactly these. */
const SEND_OUTCOMES = ['sent', 'queued', 'notOpen', 'queueFull', 'dropping', 'corked', 'notConnected', 'handed']

function checkSendOutcomes(send) {
  const names = Object.keys(send)
  if (names.length !== SEND_OUTCOMES.length || !SEND_OUTCOMES.every((n) => Number.isInteger(send[n]))) {
    throw new Error(`redial-ws: the addon's send() outcomes (${names.join(', ')}) are not the ones lib/ knows (the addon and lib/ are out of step)`)
  }
}
checkSendOutcomes(SEND)

/** Microtask turns the events after an open wait (see `afterOpen`): enough for a few awaits in a chain. */
const OPEN_TURNS = 8

const warned = new Set()
function warn(p) {
  // One warning per distinct message (it names the URL): enough to find the leak without flooding stderr.
  if (warned.has(p.message) || warned.size >= 100) return
  warned.add(p.message)
  process.emitWarning(p.message, { type: 'RedialWsWarning', code: p.code, detail: p.detail })
}

/**
 * The dispatch state of a JS thread: what the addon calls with events, and whether events are being
 * dispatched. Each copy of lib/ makes one, and the addon keeps the first (`N.init` returns it): a
 * second copy (a cleared module cache, a test runner's module registry per file) shares it, so
 * that the clients of both are dispatched. A client's handlers are its class's (`kHandlers` on its
 * prototype, set by `listen`): each copy's class reaches its own private methods.
 */
function makeWire() {
  const kHandlers = Symbol('redial-ws.handlers')
  /** Events are being dispatched (nested: a listener's call may dispatch what it read). */
  let dispatching = 0
  /** A batch waits for the `setImmediate` that takes it. */
  let batchWaits = false
  /**
   * The rest of a batch after an `open` (`{ events, from, turns, native }`: the events from index
   * `from` of `events`), or null: it waits for the
   * promise reactions the open's listeners started, so that code awaiting the open (`await
   * client.opened()`, `await once(client, 'open')`, a WHATWG `open` promise) adds its message
   * listener before the server's first message, as where each event is a task of its own (browsers,
   * undici). Events dispatched meanwhile go after it.
   */
  let afterOpen = null

  /**
   * Receives `[client, tag, payload, ...]` from the native side, or a lone event
   * as the three arguments `(client, tag, payload)`. It closes over no client,
   * so the native side holding it never keeps a client alive. It must never
   * throw (that would be a fatal exception).
   *
   * A batch is bounded (src/delivery.rs). Once it is dispatched, `deliveryDone`
   * frees its messages from each client's read bound (a client holds a bounded
   * amount for a JS thread that is behind) and says whether another batch waits;
   * if one does, it is taken from a `setImmediate`, and the addon hands it over
   * only in a later turn of the event loop than the last batch (or the JS thread's
   * reads, src/direct.rs), so timers and I/O run between batches. Usually none
   * waits, and no turn is asked for.
   */
  function dispatch(batch, tag, payload) {
    dispatching++
    if (tag !== undefined) {
      deliver(batch, tag, payload)
    } else if (batch.length === 0) {
      // None, or not in this turn, which has had its batch: `deliveryDone` says whether events wait.
    } else if (holdAfterOpen(batch, 0, true)) {
      return
    }
    dispatched(true)
  }

  /** The end of a dispatch (`native`: of a batch from `dispatch`, which is acknowledged). */
  function dispatched(native) {
    dispatching--
    if (native && !N.deliveryDone()) {
      batchWaits = true
      setImmediate(acknowledge)
    }
  }

  function acknowledge() {
    batchWaits = false
    dispatch(N.deliveryAck())
  }

  /**
   * Receives the messages the addon read on the JS thread (from a socket watch in the event loop,
   * src/reader.rs), in the same forms, dispatched at once; nothing to acknowledge, since they never
   * waited in the read bound. A quiet connection's message comes alone (the round trip of an echo).
   */
  function dispatchNow(batch, tag, payload) {
    if (afterOpen !== null) {
      // Behind the events waiting after an open, to keep their order (the array is this side's).
      const events = afterOpen.events
      if (tag !== undefined) events.push(batch, tag, payload)
      else for (const value of batch) events.push(value)
      return
    }
    dispatching++
    if (tag !== undefined) deliver(batch, tag, payload)
    else if (holdAfterOpen(batch, 0, false)) return
    dispatched(false)
  }

  /**
   * Delivers `events` from `from`; true when it stopped after an open, the rest waiting in
   * `afterOpen` (the dispatch goes on, and ends, from `resume`).
   */
  function holdAfterOpen(events, from, native) {
    for (let i = from; i < events.length; i += 3) {
      deliver(events[i], events[i + 1], events[i + 2])
      if (events[i + 1] === EVENTS.open && i + 3 < events.length) {
        afterOpen = { events, from: i + 3, turns: OPEN_TURNS, native }
        microtask(resume)
        return true
      }
    }
    return false
  }

  function resume() {
    // Queued again, it runs after the reactions queued before it, each turn: a chain of awaits
    // (an async function awaiting the open, awaited in turn) takes a turn per step.
    if (--afterOpen.turns > 0) {
      microtask(resume)
      return
    }
    const { events, from, native } = afterOpen
    afterOpen = null
    if (!holdAfterOpen(events, from, native)) dispatched(native)
  }

  /** Runs one event's handler; a throwing listener does not lose the rest of the batch. */
  function deliver(client, tag, payload) {
    try {
      if (client !== undefined) client[kHandlers][tag](client, payload)
      else if (tag === EVENTS.warning) warn(payload)
    } catch (err) {
      rethrowLater(err)
    }
  }

  return {
    kHandlers,
    dispatch,
    dispatchNow,
    /**
     * Whether events may be on their way to a client's listeners beyond the ones that ran: the rest
     * of a batch being dispatched, or a batch waiting. A `connect()` made then must not count on
     * what it sets in JS staying so until its attempt's next event (lib/client.js).
     */
    delivering: () => dispatching > 0 || batchWaits,
  }
}

/** This thread's dispatch state (this copy's, or the first copy's), once a class listens. */
let wire = null

/** See `makeWire`'s `delivering`. */
function delivering() {
  return wire !== null && wire.delivering()
}

/**
 * Whether the event loop is Node's own libuv, which an addon may watch sockets in (uv_poll) and count
 * the turns of; Bun and Deno emulate only part of libuv for addons.
 */
function nodeLoop() {
  return !(process.versions.bun || process.versions.deno || typeof Bun !== 'undefined' || typeof Deno !== 'undefined')
}

/**
 * Whether quiet uncompressed connections may be read on the JS thread (Node's loop); elsewhere the
 * tokio side reads everything. REDIAL_WS_DIRECT_READ=0 turns it off.
 */
function directRead() {
  return nodeLoop() && process.env.REDIAL_WS_DIRECT_READ !== '0'
}

/**
 * The handlers by tag, from handlers by event name: throws if the addon reports an event
 * with no handler or a handler names an event the addon does not report.
 */
function handlerTable(byName, events = EVENTS) {
  const table = []
  for (const [name, tag] of Object.entries(events)) {
    if (name === 'warning') continue
    if (typeof byName[name] !== 'function') {
      throw new Error(`redial-ws: the addon reports "${name}" events and lib/ has no handler for them (the addon and lib/ are out of step)`)
    }
    table[tag] = byName[name]
  }
  for (const name of Object.keys(byName)) {
    if (!(name in events) || name === 'warning') throw new Error(`redial-ws: lib/ handles "${name}" events, which the addon does not report to a client`)
  }
  return table
}

/**
 * Installs the event handlers of the clients of a class (on `prototype`), by event name
 * (`{ open(client, payload) {...}, ... }`), and starts delivery on this thread if no copy of lib/
 * has. Warnings are not addressed to a client and are handled by the dispatcher.
 */
function listen(prototype, byName) {
  if (wire === null) {
    const mine = makeWire()
    // (Large messages are external Buffers on the main thread only: the addon tells, src/napi_raw.rs.)
    wire = N.init(mine.dispatch, mine.dispatchNow, directRead(), nodeLoop(), mine)
  }
  Object.defineProperty(prototype, wire.kHandlers, { value: handlerTable(byName) })
}

/**
 * Calls `fn.call(target, text)` for each string of a text run (an array the addon made, see
 * src/protocol.rs). A throwing listener does not lose the rest.
 */
function forEachText(texts, fn, target) {
  for (let i = 0; i < texts.length; i++) {
    try {
      fn.call(target, texts[i])
    } catch (err) {
      rethrowLater(err)
    }
  }
}

/**
 * Calls `fn.call(target, message)` for each message of a run of small binary messages: one Buffer
 * with the messages end to end, then where each ends and their count, as little-endian u32s
 * (src/protocol.rs). Each message is a view of it (as `ws` hands out views of the socket's
 * chunks). A throwing listener does not lose the rest.
 */
function forEachBinary(run, fn, target) {
  const count = run.readUInt32LE(run.length - 4)
  const ends = run.length - 4 - 4 * count
  let start = 0
  for (let i = 0; i < count; i++) {
    if (run.length === 0) {
      // A listener transferred a message's ArrayBuffer (postMessage, structuredClone): it is
      // the batch's, and the messages after that one went with it.
      const err = new Error(
        `a received message's ArrayBuffer was transferred: it held ${count - i} more message(s) received with it, now lost (copy a small message before transferring it)`,
      )
      err.code = 'ERR_INVALID_STATE'
      return rethrowLater(err)
    }
    const end = run.readUInt32LE(ends + 4 * i)
    try {
      fn.call(target, run.subarray(start, end))
    } catch (err) {
      rethrowLater(err)
    }
    start = end
  }
}

/** A binary message as `binaryType` asks: 'nodebuffer', 'arraybuffer', 'uint8array' or 'fragments'. */
function convertBinary(buf, type) {
  if (type === 'nodebuffer') return buf
  // ws's fragments as received; the message is reassembled already, so it is one.
  if (type === 'fragments') return [buf]
  if (type === 'uint8array') return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
  // ws's (8.18+) and the WHATWG WebSocket's: a Blob holds its own copy.
  if (type === 'blob') return new Blob([buf])
  // A Buffer may share a pooled ArrayBuffer: hand out exactly its bytes. A large message's is
  // external on the main thread (zero-copy, src/event_values.rs), which Node refuses to transfer
  // (postMessage(ab, [ab]): Node 22 throws, Node 20 copies): the WHATWG way of handing one to a
  // worker. Copied.
  return buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength && buf.byteLength < EXTERNAL_FROM
    ? buf.buffer
    : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)
}

module.exports = { EVENTS, SEND, checkSendOutcomes, listen, handlerTable, forEachText, forEachBinary, convertBinary, delivering }
