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

  // Beyond the seed, so client.js can see the cluster work: greet the new client from this
  // worker, and re-broadcast whatever a client says to every client on every worker (through
  // the cluster adapter, relayed by the daemon).
  socket.emit("hello", process.pid);
  socket.on("chat", (msg) => {
    io.emit("chat", { msg, pid: process.pid });
  });
});
