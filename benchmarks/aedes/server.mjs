// aedes with a WebSocket listener, as its documentation sets one up (docs/Examples.md, "MQTT
// server over WebSocket"): the other broker of benchmarks/run.py's WebSocket tables.
//     node server.mjs PORT
import { createServer } from 'node:http'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0) throw new Error('usage: node server.mjs PORT')
const aedes = await Aedes.createBroker()
const httpServer = createServer()
const wss = new WebSocketServer({ server: httpServer, path: '/mqtt' })
wss.on('connection', (websocket, request) => aedes.handle(createWebSocketStream(websocket), request))
httpServer.listen(port, '127.0.0.1')
process.on('SIGTERM', () => aedes.close(() => httpServer.close(() => process.exit(0))))
