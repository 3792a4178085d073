const { ReconnectingWebSocket, clientStats } = require('redial-ws')
const client = new ReconnectingWebSocket(process.argv[2])
client.on('message', async (data) => {
  await client.disconnect()
  console.log(JSON.stringify({ reply: String(data), open: clientStats().openConnections }))
})
client.send('hello from cjs')
