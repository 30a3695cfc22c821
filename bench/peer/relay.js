// The reference peer: what people run today. Every text message a client sends goes to every
// other connected client, as the PHP Ratchet server did. Written in the usual `ws` style:
// loop over the server's clients and send to each. Loopback only.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

const port = Number(process.env.PORT || 8091);
// The same accept backlog as the relay, so a connect storm measures the servers, not the kernel's
// dropped handshakes.
const server = new WebSocketServer({ host: '127.0.0.1', port, backlog: 4096, perMessageDeflate: false });

server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => {
    for (const client of server.clients) {
      if (client !== socket && client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    }
  });
});

server.on('listening', () => console.log(`peer listening on ws://127.0.0.1:${port}/`));
