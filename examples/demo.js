'use strict'
// `npm run demo`: an embedded local server drops the client a few times; the
// client reconnects with backoff; after disconnect() every counter of what runs
// (connections, timers, tasks, buffers) is back to zero and the process exits by
// itself (no timer left behind). `liveClients` counts the client object itself,
// still referenced here, until it is garbage-collected.
const { WebSocketServer } = require('ws')
const { ReconnectingWebSocket, clientStats } = require('..')

const DROPS = 3
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 })

wss.on('listening', () => {
  const url = `ws://127.0.0.1:${wss.address().port}/demo`
  let connections = 0
  wss.on('connection', (socket) => {
    connections++
    socket.send(`hello #${connections}`)
    if (connections <= DROPS) setTimeout(() => socket.terminate(), 150)
  })

  const client = new ReconnectingWebSocket(url, { minDelay: 100, maxDelay: 1_000, jitter: 'equal' })
  const t0 = Date.now()
  const log = (...a) => console.log(`[${String(Date.now() - t0).padStart(5)} ms]`, ...a)
  client.on('open', () => log('open'))
  client.on('message', (data) => log('message:', data))
  client.on('close', (e) => log(`close ${e.code}${e.willReconnect ? ', will reconnect' : ''}`))
  client.on('reconnecting', (e) => log(`reconnecting: attempt ${e.attempt} in ${e.delay} ms`))
  client.on('error', (err) => log(`error ${err.code}: ${err.message}`))

  client.on('message', async (data) => {
    if (data !== `hello #${DROPS + 1}`) return
    log('stats while open:', JSON.stringify(clientStats()))
    log('metrics:', JSON.stringify(client.metrics))
    await client.disconnect(1000, 'demo over')
    log('after disconnect():', JSON.stringify(clientStats()))
    wss.close()
    log('nothing is left running: the process exits on its own now')
  })
})
