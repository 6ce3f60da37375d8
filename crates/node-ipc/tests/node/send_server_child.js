'use strict';
// Sends a listening server to the parent, then a plain message that Node
// queues until the parent ACKs the handle.
const net = require('net');
const srv = net.createServer();
srv.listen(0, '127.0.0.1', () => {
  process.send({ port: srv.address().port }, srv);
  process.send('after');
});
process.on('message', (m) => {
  if (m === 'exit') process.exit(0);
});
