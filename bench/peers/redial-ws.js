'use strict'
// Peer: redial-ws (this package), loaded from the repository root.
const path = require('node:path')
const { main, now } = require('./harness')

const root = path.resolve(__dirname, '..', '..')
let lib = null
let loadError = null
try {
  lib = require(root)
} catch (e) {
  loadError = e
}

main({
  name: 'redial-ws',
  reconnects: true,
  unavailable: () => (lib ? null : `cannot load redial-ws: ${loadError && loadError.message}`),
  version: () => require(path.join(root, 'package.json')).version,
  // Default options otherwise: permessage-deflate is offered (perMessageDeflate: true).
  connect(url, h, opts = {}) {
    const options = opts.reconnect
      ? { pingInterval: 0, minDelay: 100, maxDelay: 100, jitter: 'none' }
      : { pingInterval: 0 }
    if (opts.ca) options.tls = { ca: opts.ca } // wss: the bench's throwaway CA
    const c = new lib.ReconnectingWebSocket(url, options)
    c.on('open', h.onOpen)
    c.on('message', h.onMessage)
    c.on('error', h.onError)
    c.on('close', h.onClose)
    if (opts.reconnect) c.on('reconnecting', (ev) => h.onAttempt(now() + BigInt(Math.round(ev.delay * 1e6))))
    return c
  },
  send: (c, data) => c.send(data),
  buffered: (c) => c.bufferedAmount,
  close: (c) => c.disconnect(),
  extensions: (c) => c.extensions,
  stats: () => (typeof lib.clientStats === 'function' ? lib.clientStats() : undefined),
})
