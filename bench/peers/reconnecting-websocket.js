'use strict'
// Peer: reconnecting-websocket 4.x over ws. Not a dependency of redial-ws:
// install it (npm install --no-save reconnecting-websocket@4.4.0) or the row is n/a.
const { main, now } = require('./harness')

let RWS = null
let WebSocket = null
let loadError = null
try {
  RWS = require('reconnecting-websocket')
  RWS = RWS.default || RWS
  WebSocket = require('ws')
} catch (e) {
  loadError = e
}

// wss: it constructs `new WebSocket(url, protocols)`; this subclass adds ws's `ca` option (one
// class per CA, not per connection).
const caCtors = new Map()
function withCa(ca) {
  let Ctor = caCtors.get(ca)
  if (!Ctor) {
    Ctor = class extends WebSocket {
      constructor(url, protocols) {
        super(url, protocols, { ca })
      }
    }
    caCtors.set(ca, Ctor)
  }
  return Ctor
}

main({
  name: 'reconnecting-websocket',
  reconnects: true,
  unavailable: () => (RWS && WebSocket ? null : `not installed: ${loadError && loadError.message}`),
  version: () => require('reconnecting-websocket/package.json').version,
  connect(url, h, opts = {}) {
    let Ctor = opts.ca ? withCa(opts.ca) : WebSocket
    if (opts.reconnect) {
      const Base = Ctor
      // The constructor runs when the reconnect timer fires: the start of an attempt.
      Ctor = class extends Base {
        constructor(...args) {
          h.onAttempt(now())
          super(...args)
        }
      }
    }
    const r = new RWS(url, undefined, { WebSocket: Ctor, minReconnectionDelay: 100, maxReconnectionDelay: 100 })
    r.binaryType = 'nodebuffer' // its default, 'blob', would make ws build Blobs
    r.onopen = () => h.onOpen()
    r.onmessage = (ev) => h.onMessage(ev.data, typeof ev.data !== 'string')
    r.onerror = (ev) => h.onError(ev.error || new Error(ev.message || 'WebSocket error'))
    r.onclose = (ev) => h.onClose({ code: ev.code })
    return r
  },
  send: (r, data) => r.send(data),
  buffered: (r) => r.bufferedAmount,
  close: (r) =>
    new Promise((resolve) => {
      // close() fires no event while no socket exists (e.g. between attempts): don't wait forever then.
      const t = setTimeout(resolve, 2000)
      r.addEventListener('close', () => {
        clearTimeout(t)
        resolve()
      })
      if (r.readyState === 3) {
        clearTimeout(t)
        r.close()
        return resolve()
      }
      r.close()
    }),
  extensions: (r) => r.extensions,
})
