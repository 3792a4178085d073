'use strict'
// A worker of everyday.cjs's "worker terminated" scenario: an open client and one waiting to
// reconnect, never disconnected; it says 'ready' once the first is open. The worker is then
// terminated, and the scenario checks that nothing of them is left running.
const path = require('node:path')
const { parentPort, workerData } = require('node:worker_threads')
const { ReconnectingWebSocket } = require(path.join(__dirname, '..', '..', 'index.js'))

const open = new ReconnectingWebSocket(workerData.url)
const retrying = new ReconnectingWebSocket(workerData.dropUrl, { minDelay: 50, maxDelay: 50, jitter: 'none' })
globalThis.clients = [open, retrying]
retrying.once('reconnecting', () => open.opened().then(() => parentPort.postMessage('ready')))
