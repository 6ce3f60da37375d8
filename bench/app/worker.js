// The seed Socket.IO worker of examples/socketio (sticky + cluster adapter setup unchanged),
// plus one line at the end that installs the benchmark probes (see probes.js).
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/cluster-adapter");
const { setupWorker } = require("@socket.io/sticky");

const httpServer = createServer();
const io = new Server(httpServer);

io.adapter(createAdapter());

setupWorker(io);

io.on("connection", (socket) => {
  console.log(`conectado ${socket.id}`);
});

// ---- benchmark only: listeners that observe, never change the wiring above ----
require("./probes")(io, httpServer);
