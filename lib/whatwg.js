'use strict'
// The WHATWG surface of a client, beside its EventEmitter API: event objects
// shaped like the browser's (and like reconnecting-websocket's: `MessageEvent.data`,
// `CloseEvent.code/reason/wasClean`), `addEventListener`/`removeEventListener`
// and the `on<type>` handler properties.

class Event {
  constructor(type, target) {
    this.type = type
    this.target = target
  }
}

class MessageEvent extends Event {
  constructor(data, target) {
    super('message', target)
    this.data = data
  }
}

class CloseEvent extends Event {
  constructor(code = 1000, reason = '', wasClean = true, target) {
    super('close', target)
    this.code = code
    this.reason = reason
    this.wasClean = wasClean
  }
}

class ErrorEvent extends Event {
  constructor(error, target) {
    super('error', target)
    this.message = error.message
    this.error = error
  }
}

/**
 * Listeners per type. `dedupe` follows the DOM (adding the same listener twice
 * keeps one); without it, as in reconnecting-websocket, duplicates are kept
 * and `remove` drops every copy.
 */
class Listeners {
  #byType = new Map()
  #dedupe

  constructor(dedupe) {
    this.#dedupe = dedupe
  }

  add(type, listener, options) {
    if (listener === null || listener === undefined) return
    if (typeof listener !== 'function' && typeof listener?.handleEvent !== 'function') {
      throw Object.assign(new TypeError('The listener must be a function or an object with handleEvent()'), {
        code: 'ERR_INVALID_ARG_TYPE',
      })
    }
    const once = typeof options === 'object' && options !== null && options.once === true
    let list = this.#byType.get(type)
    if (!list) this.#byType.set(type, (list = []))
    if (this.#dedupe && list.some((e) => e.listener === listener)) return
    list.push({ listener, once })
  }

  remove(type, listener) {
    const list = this.#byType.get(type)
    if (!list) return
    const kept = list.filter((e) => e.listener !== listener)
    if (kept.length) this.#byType.set(type, kept)
    else this.#byType.delete(type)
  }

  has(type) {
    return this.#byType.has(type)
  }

  /** Calls the listeners registered when dispatch starts; a throw does not stop the others. */
  dispatch(event, target, onError) {
    const list = this.#byType.get(event.type)
    if (!list) return
    for (const entry of [...list]) {
      if (entry.once) this.remove(event.type, entry.listener)
      try {
        if (typeof entry.listener === 'function') entry.listener.call(target, event)
        else entry.listener.handleEvent(event)
      } catch (err) {
        onError(err)
      }
    }
  }
}

/**
 * The listeners and `on<type>` handlers of one client, created when the first is
 * set (most clients of a fleet only use EventEmitter listeners).
 */
class Surface {
  #listeners
  /** `{ open, message, close, error }`, created when a handler is first set. */
  #on = null

  constructor(dedupe) {
    this.#listeners = new Listeners(dedupe)
  }

  add(type, listener, options) {
    this.#listeners.add(type, listener, options)
  }

  remove(type, listener) {
    this.#listeners.remove(type, listener)
  }

  handler(type) {
    return this.#on?.[type] ?? null
  }

  setHandler(type, fn) {
    this.#on ??= { open: null, message: null, close: null, error: null }
    this.#on[type] = typeof fn === 'function' ? fn : null
  }

  /** Whether anything listens for `type` (so that no event object is built for nobody). */
  wants(type) {
    return (this.#on !== null && this.#on[type] !== null) || this.#listeners.has(type)
  }

  /** `on<type>` first, then the listeners (reconnecting-websocket's order). */
  fire(event, target, onError) {
    const handler = this.#on?.[event.type]
    if (handler) {
      try {
        handler.call(target, event)
      } catch (err) {
        onError(err)
      }
    }
    this.#listeners.dispatch(event, target, onError)
  }

  /** Only the listeners (`dispatchEvent`). */
  dispatch(event, target, onError) {
    this.#listeners.dispatch(event, target, onError)
  }
}

module.exports = { Event, MessageEvent, CloseEvent, ErrorEvent, Surface }
