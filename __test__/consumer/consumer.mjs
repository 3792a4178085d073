import { once } from 'node:events'
import { ReconnectingWebSocket, clientStats } from 'redial-ws'
const client = new ReconnectingWebSocket(process.argv[2])
client.send('hello from esm')
const [data] = await once(client, 'message')
await client.disconnect()
console.log(JSON.stringify({ reply: String(data), open: clientStats().openConnections }))
