'use strict'
// WebSocket: one connection, as `ws`'s and the DOM's WebSocket make, for the libraries that take a
// WebSocket class and reconnect on their own (graphql-ws's `webSocketImpl`, stompjs's
// `webSocketFactory`, phoenix's `transport`, partysocket's `WebSocket` ...). Such a library drops a
// socket once it has closed and makes a new one: a ReconnectingWebSocket it dropped would
// reconnect behind it (a connection keeps its client alive), and one called with subprotocols
// second takes reconnecting-websocket's shape and event order. A WebSocket is a client that never
// reconnects (`maxRetries: 0`), in redial-ws's own event order (`error`, then `close` with 1006 for
// a connection that failed, as `ws` reports it), whatever the arguments' shape. Its close is final
// unless the application calls `connect()` or `reconnect()`, which it inherits.

const { ReconnectingWebSocket, ONE_CONNECTION, createWebSocketStream } = require('./client')
const { checkClose } = require('./arguments')
const { makeError } = require('./errors')
const { RECONNECTING } = require('./options')
const { ALIASES, THEIRS } = require('./rws')

/** Why a WebSocket refuses `name`: an option of reconnecting, or reconnecting-websocket's name for one. */
function refusal(name) {
  const ours = ALIASES[name]
  if (ours !== undefined && !RECONNECTING.includes(ours)) return `"${name}" is reconnecting-websocket's name: use "${ours}"`
  if (ours !== undefined || THEIRS.includes(name)) return `A WebSocket makes one connection and does not reconnect: "${name}" is an option of reconnecting-websocket`
  return `A WebSocket makes one connection and does not reconnect: "${name}" is an option of ReconnectingWebSocket`
}

const NOT_TAKEN = [...RECONNECTING, ...Object.keys(ALIASES), ...THEIRS]

/** No subprotocols: none given, or an empty list (`ws` takes one as none). */
const noProtocols = (protocols) => protocols === undefined || protocols === null || (Array.isArray(protocols) && protocols.length === 0)

const isOptions = (value) => typeof value === 'object' && value !== null && !Array.isArray(value)

class WebSocket extends ReconnectingWebSocket {
  /**
   * `new WebSocket(url, protocols?, options?)`, as `ws` and the DOM take it, or `(url, options?)`:
   * a ReconnectingWebSocket's options, without those of reconnecting.
   */
  constructor(url, protocols, options) {
    if (options === undefined && isOptions(protocols)) {
      options = protocols
      protocols = undefined
    }
    if (options !== undefined && options !== null && !isOptions(options)) {
      throw makeError('ERR_INVALID_ARG_TYPE', 'The "options" argument must be an object', TypeError)
    }
    const given = options ?? {}
    for (const name of NOT_TAKEN) {
      if (given[name] !== undefined) throw makeError('ERR_INVALID_ARG_VALUE', refusal(name), TypeError)
    }
    if (!noProtocols(protocols) && given.protocols !== undefined) {
      throw makeError('ERR_INVALID_ARG_VALUE', 'Subprotocols were given both as an argument and as an option', TypeError)
    }
    super(url, { ...given, protocols: noProtocols(protocols) ? given.protocols : protocols, maxRetries: 0 })
  }

  /**
   * As ws's close(): a socket that is not open closes without its arguments checked (with the
   * defaults, if they are not sendable). A bridge that passes one side's close on
   * (`a.onclose = (e) => b.close(e.code, e.reason)`, where the code can be 1005 or 1006) does not
   * throw when the other side is already closing or closed.
   */
  close(code, reason) {
    if (this.readyState !== this.OPEN && !sendableClose(code, reason)) return void super.close()
    super.close(code, reason)
  }
}

/** Whether close() would take `code` and `reason` (left out: the defaults). */
function sendableClose(code = 1000, reason = '') {
  try {
    checkClose(code, reason)
    return true
  } catch {
    return false
  }
}

// Its WHATWG `error` events are ws's (partysocket, for one, reads an error as a clean close's
// cause), and what its queue holds when it closes for good is handed back (lib/client.js).
WebSocket.prototype[ONE_CONNECTION] = true
// Where `ws` users find it: `WebSocket.createWebSocketStream(ws)`.
WebSocket.createWebSocketStream = createWebSocketStream

module.exports = { WebSocket }
