'use strict'
// A message sent in the turn the process ends in reaches the server, as ws's does (it writes at
// once; redial-ws may cork it until the end of the turn). Run by scripts/test-runtimes.js on every
// runtime, one process per way of ending:
//
//   <runtime> last-words.cjs <url> <how>     how: process.exit | throw | Deno.exit
//
// It sends `last:<how>` in its `open` listener and ends there; the parent's echo server records it.

const path = require('node:path')

for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'http_proxy', 'https_proxy', 'NO_PROXY', 'no_proxy', 'ALL_PROXY', 'all_proxy'])
  delete process.env[name]

const { ReconnectingWebSocket } = require(path.join(__dirname, '..', '..', 'index.js'))

const [url, how] = process.argv.slice(2)
const client = new ReconnectingWebSocket(url)
client.on('open', () => {
  // Two messages: the first of a turn may go at once, the second is corked on every runtime.
  client.send(`first:${how}`)
  client.send(`last:${how}`)
  if (how === 'throw') throw new Error('the process ends here')
  if (how === 'Deno.exit') globalThis.Deno.exit(0)
  process.exit(0)
})
// Bounded: a client that never opens ends the run (the parent reports the missing message).
setTimeout(() => process.exit(3), 10_000).unref()
