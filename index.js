'use strict'
// redial-ws: the public entry point. The client lives in lib/client.js; the
// native addon is built by napi-rs and loaded by lib/native.js.

const { clientStats: nativeStats } = require('./lib/native')
const { ReconnectingWebSocket, createWebSocketStream, Event, MessageEvent, CloseEvent, ErrorEvent } = require('./lib/client')
const { WebSocket } = require('./lib/websocket')

/** Process-wide counters: live clients, open connections, pending reconnect timers, ... */
function clientStats() {
  return nativeStats()
}

module.exports = { ReconnectingWebSocket, WebSocket, createWebSocketStream, clientStats, Event, MessageEvent, CloseEvent, ErrorEvent }
