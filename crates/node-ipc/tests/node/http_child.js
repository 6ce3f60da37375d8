'use strict';
// Serves HTTP on sockets handed over as NODE_HANDLE{type:'net.Socket'}.
const http = require('http');
let tag = '';
const server = http.createServer((req, res) => res.end('hello ' + tag + ' ' + req.url));
process.on('message', (m, sock) => {
  if (!sock) return;
  tag = m.tag;
  process.send({ got: m.tag, handle: sock.constructor.name });
  server.emit('connection', sock);
});
