'use strict'
// The WHATWG surface of a client, beside its EventEmitter API: event objects
// shaped like the browser's (and like reconnecting-websocket's: `MessageEvent.data`,
// `CloseEvent.code/reason/wasClean`), `addEventListener`/`removeEventListener`
// and the `on<type>` handler properties.

const { makeError } = require('./errors')

/**
 * Whether the second argument of an event constructor is the DOM's init dictionary (an object
 * literal, or nothing) rather than redial-ws' target argument (the client).
 */
function isInit(x) {
  if (x === undefined || x === null) return true
  if (typeof x !== 'object') return false
  const proto = Object.getPrototypeOf(x)
  return proto === Object.prototype || proto === null
}

/** The DOM's EventInit members. */
function applyInit(event, init) {
  if (init === undefined || init === null) return
  event.bubbles = !!init.bubbles
  event.cancelable = !!init.cancelable
  event.composed = !!init.composed
}

/** Dispatch's access to an event's flags (set in Event's static block); false for another library's events. */
let isOwn = null
let stoppedImmediately = null
let clearStop = null

/**
 * `new Event(type, target?)`, or the DOM's `new Event(type, init?)`. As in the DOM, `currentTarget`
 * is the client while its listeners run (null otherwise), `stopImmediatePropagation()` keeps the
 * listeners after the current one from being called, and `preventDefault()` only marks a
 * cancelable event (those the client fires are not).
 */
class Event {
  /** 0, or 1 after stopPropagation(), 2 after stopImmediatePropagation(); cleared once a dispatch ends. */
  #stop = 0

  constructor(type, targetOrInit) {
    this.type = type
    this.target = null
    this.currentTarget = null
    this.bubbles = false
    this.cancelable = false
    this.composed = false
    this.defaultPrevented = false
    this.timeStamp = performance.now()
    if (isInit(targetOrInit)) applyInit(this, targetOrInit)
    else this.target = targetOrInit
  }

  /** No effect on the client's other listeners (the client is the only target: nothing to propagate to). */
  stopPropagation() {
    if (this.#stop === 0) this.#stop = 1
  }

  /** The listeners after the current one are not called. */
  stopImmediatePropagation() {
    this.#stop = 2
  }

  preventDefault() {
    if (this.cancelable) this.defaultPrevented = true
  }

  composedPath() {
    return this.currentTarget === null ? [] : [this.currentTarget]
  }

  static {
    isOwn = (event) => typeof event === 'object' && event !== null && #stop in event
    stoppedImmediately = (event) => event.#stop === 2
    clearStop = (event) => {
      event.#stop = 0
    }
  }
}

/**
 * `new MessageEvent(data, target?)`, or the DOM's `new MessageEvent('message', { data })`: a first
 * argument `'message'` with an init dictionary (or nothing) is the type.
 */
class MessageEvent extends Event {
  constructor(data, target) {
    if (data === 'message' && isInit(target)) {
      super('message', target)
      this.data = target?.data ?? null
    } else {
      super('message')
      this.target = target ?? null
      this.data = data
    }
  }
}

/**
 * `new CloseEvent(code = 1000, reason = '', wasClean = true, target?)`, or the DOM's
 * `new CloseEvent(type, { code, reason, wasClean })` (a string first: its defaults are the DOM's,
 * 0, '' and false).
 */
class CloseEvent extends Event {
  constructor(code, reason, wasClean, target) {
    if (typeof code === 'string') {
      const init = reason
      super(code)
      applyInit(this, init)
      this.code = init?.code ?? 0
      this.reason = init?.reason ?? ''
      this.wasClean = !!init?.wasClean
    } else {
      super('close')
      this.target = target ?? null
      this.code = code === undefined ? 1000 : code
      this.reason = reason === undefined ? '' : reason
      this.wasClean = wasClean === undefined ? true : wasClean
    }
  }
}

/** `new ErrorEvent(error, target?)`, or the DOM's `new ErrorEvent(type, { message, error })` (a string first). */
class ErrorEvent extends Event {
  constructor(error, target) {
    if (typeof error === 'string') {
      const init = target
      super(error)
      applyInit(this, init)
      this.message = init?.message ?? ''
      this.error = init?.error ?? null
    } else {
      super('error')
      this.target = target ?? null
      this.message = error.message
      this.error = error
    }
  }
}

/** The third argument of addEventListener: `{ once, signal, capture, passive }` or a boolean (capture). */
function listenerOptions(options) {
  if (typeof options !== 'object' || options === null) return { once: false, signal: undefined }
  const signal = options.signal
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw makeError('ERR_INVALID_ARG_TYPE', 'The "options.signal" property must be an AbortSignal', TypeError)
  }
  // As the DOM converts it: any truthy value.
  return { once: !!options.once, signal }
}

/** The 'abort' listeners a collected client's listeners left on their signals, removed. */
const abortListenersOfCollected = new FinalizationRegistry(({ signal, onAbort }) => signal.removeEventListener('abort', onAbort))

/**
 * The 'abort' listener that removes a listener's entry. Made here, not where it is registered:
 * closures made in one scope share one context, so one there that holds the entry (as `unlisten`
 * must) would make the signal hold the entry, its listener and what that holds (often the client).
 */
function abortHandler(listenersRef, type, entryRef) {
  return () => {
    const entry = entryRef.deref()
    if (entry !== undefined) listenersRef.deref()?.drop(type, entry)
  }
}

/**
 * Listeners per type; each change makes a new array, so that a dispatch goes on over the listeners
 * registered when it started (one added meanwhile is not called). With `dom`, as the DOM does: adding the same listener twice keeps one, and a
 * listener removed during a dispatch is not called by it. Without, as reconnecting-websocket does:
 * duplicates are kept, `remove` drops every copy, and a dispatch calls the listeners registered
 * when it started.
 */
class Listeners {
  #byType = new Map()
  #dom

  constructor(dom) {
    this.#dom = dom
  }

  add(type, listener, options) {
    if (listener === null || listener === undefined) return
    if (typeof listener !== 'function' && typeof listener?.handleEvent !== 'function') {
      throw Object.assign(new TypeError('The listener must be a function or an object with handleEvent()'), {
        code: 'ERR_INVALID_ARG_TYPE',
      })
    }
    const { once, signal } = listenerOptions(options)
    // As the DOM: a listener added with an aborted signal is not added.
    if (signal?.aborted) return
    const list = this.#byType.get(type)
    if (this.#dom && list !== undefined && list.some((e) => e.listener === listener)) return
    const entry = { listener, once, removed: false, unlisten: null }
    // A new array: a dispatch under way goes on over the one it started with.
    this.#byType.set(type, list === undefined ? [entry] : [...list, entry])
    if (signal !== undefined) this.#removeOnAbort(type, entry, signal)
  }

  /**
   * Removes `entry` when `signal` aborts. The signal (often long-lived) holds the listener and
   * these listeners weakly: it keeps no client alive, and a client collected leaves nothing on it.
   */
  #removeOnAbort(type, entry, signal) {
    const onAbort = abortHandler(new WeakRef(this), type, new WeakRef(entry))
    signal.addEventListener('abort', onAbort, { once: true })
    abortListenersOfCollected.register(this, { signal, onAbort }, entry)
    entry.unlisten = () => {
      abortListenersOfCollected.unregister(entry)
      signal.removeEventListener('abort', onAbort)
    }
  }

  /** Removes one entry (a `once` listener called, or its signal aborted). */
  drop(type, entry) {
    retire(entry)
    const list = this.#byType.get(type)
    const i = list === undefined ? -1 : list.indexOf(entry)
    if (i < 0) return
    if (list.length === 1) this.#byType.delete(type)
    else this.#byType.set(type, list.toSpliced(i, 1))
  }

  remove(type, listener) {
    const list = this.#byType.get(type)
    if (!list) return
    const kept = []
    for (const e of list) {
      if (e.listener === listener) retire(e)
      else kept.push(e)
    }
    if (kept.length) this.#byType.set(type, kept)
    else this.#byType.delete(type)
  }

  has(type) {
    return this.#byType.has(type)
  }

  /** Removes every listener of the types `which` picks out. */
  clear(which) {
    for (const [type, list] of this.#byType) {
      if (!which(type)) continue
      for (const e of list) retire(e)
      this.#byType.delete(type)
    }
  }

  /** Calls the listeners registered when dispatch starts; a throw does not stop the others, stopImmediatePropagation() does. */
  dispatch(event, target, onError, own) {
    const list = this.#byType.get(event.type)
    if (!list) return
    for (const entry of list) {
      // Removed by an earlier listener of this dispatch (reconnecting-websocket calls it all the same).
      if (entry.removed && this.#dom) continue
      if (entry.once) this.drop(event.type, entry)
      try {
        if (typeof entry.listener === 'function') entry.listener.call(target, event)
        else entry.listener.handleEvent(event)
      } catch (err) {
        onError(err)
      }
      if (own && stoppedImmediately(event)) break
    }
  }
}

/** An entry leaves its list: a dispatch under way skips it (DOM), its signal no longer holds it. */
function retire(entry) {
  entry.removed = true
  if (entry.unlisten !== null) {
    entry.unlisten()
    entry.unlisten = null
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

  constructor(dom) {
    this.#listeners = new Listeners(dom)
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

  /** Removes the handlers and listeners of the types `which` picks out. */
  clear(which) {
    this.#listeners.clear(which)
    if (this.#on !== null) for (const type of Object.keys(this.#on)) if (which(type)) this.#on[type] = null
  }

  /** Whether anything listens for `type` (so that no event object is built for nobody). */
  wants(type) {
    return (this.#on !== null && this.#on[type] !== null) || this.#listeners.has(type)
  }

  /** `on<type>` first, then the listeners (reconnecting-websocket's order). */
  fire(event, target, onError) {
    event.currentTarget = target
    const handler = this.#on?.[event.type]
    if (handler) {
      try {
        handler.call(target, event)
      } catch (err) {
        onError(err)
      }
    }
    if (!stoppedImmediately(event)) this.#listeners.dispatch(event, target, onError, true)
    event.currentTarget = null
    clearStop(event)
  }

  /**
   * Only the listeners (`dispatchEvent`). A redial-ws event gets the client as its target, as the
   * DOM does; another library's event (Node's own `Event`) is passed as it is.
   */
  dispatch(event, target, onError) {
    const own = isOwn(event)
    if (own) {
      event.target = target
      event.currentTarget = target
    }
    this.#listeners.dispatch(event, target, onError, own)
    if (own) {
      event.currentTarget = null
      clearStop(event)
    }
  }
}

module.exports = { Event, MessageEvent, CloseEvent, ErrorEvent, Surface }
