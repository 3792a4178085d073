'use strict'
// Peer: undici's WebSocket, i.e. Node's built-in global WebSocket (Node 20 needs
// --experimental-websocket, which run.js passes), else the `undici` package.
const { main } = require('./harness')

let WS = typeof globalThis.WebSocket === 'function' ? globalThis.WebSocket : null
let source = WS ? 'node' : null
if (!WS) {
  try {
    WS = require('undici').WebSocket
    source = 'undici'
  } catch {}
}

main({
  name: 'undici',
  reconnects: false,
  unavailable: () => (WS ? null : 'no global WebSocket and undici is not installed'),
  version: () => (source === 'node' ? `${process.versions.undici} (node ${process.version})` : require('undici/package.json').version),
  // wss: its constructor takes no TLS options; run.js starts this process with
  // NODE_EXTRA_CA_CERTS=<the bench's throwaway CA>, which Node's TLS (and so undici) trusts.
  connect(url, h) {
    const ws = new WS(url)
    ws.binaryType = 'arraybuffer'
    ws.onopen = () => h.onOpen()
    ws.onmessage = (ev) => h.onMessage(ev.data, typeof ev.data !== 'string')
    ws.onerror = (ev) => h.onError(ev.error || new Error(ev.message || 'WebSocket error'))
    ws.onclose = (ev) => h.onClose({ code: ev.code })
    return ws
  },
  send: (ws, data) => ws.send(data),
  buffered: (ws) => ws.bufferedAmount,
  close: (ws) =>
    new Promise((resolve) => {
      if (ws.readyState === 3) return resolve()
      ws.addEventListener('close', () => resolve(), { once: true })
      ws.close()
    }),
  extensions: (ws) => ws.extensions,
  // It offers permessage-deflate and inflates, but sends every message uncompressed.
  compresses: false,
})
