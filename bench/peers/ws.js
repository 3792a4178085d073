'use strict'
// Peer: ws (the plain client, no reconnection). Its EventEmitter API hands text
// frames over as Buffers; like every other peer we deliver text as a string.
const { main } = require('./harness')

let WebSocket = null
let loadError = null
try {
  WebSocket = require('ws')
} catch (e) {
  loadError = e
}

main({
  name: 'ws',
  reconnects: false,
  unavailable: () => (WebSocket ? null : `ws not installed: ${loadError && loadError.message}`),
  version: () => require('ws/package.json').version,
  connect(url, h, opts = {}) {
    // Its default, spelled out: permessage-deflate offered (servers other than the deflate ones decline).
    // wss: `ca`, passed on to tls.connect(), trusts the bench's throwaway CA.
    const ws = new WebSocket(url, opts.ca ? { perMessageDeflate: true, ca: opts.ca } : { perMessageDeflate: true })
    ws.on('open', h.onOpen)
    ws.on('message', (data, isBinary) => h.onMessage(isBinary ? data : data.toString(), isBinary))
    ws.on('error', h.onError)
    ws.on('close', (code) => h.onClose({ code }))
    return ws
  },
  send: (ws, data) => ws.send(data),
  buffered: (ws) => ws.bufferedAmount,
  close: (ws) =>
    new Promise((resolve) => {
      if (ws.readyState === WebSocket.CLOSED) return resolve()
      ws.once('close', () => resolve())
      ws.close()
    }),
  extensions: (ws) => ws.extensions,
})
