// Socket.IO without the sticky balancer, for runtimes whose cluster workers
// cannot receive connections from the daemon (Bun): every worker listens on
// PORT itself (Bun's node:cluster uses SO_REUSEPORT), clients use the
// websocket transport only (no session has to come back to one worker), and
// the cluster adapter's messages go through the daemon's relay (in JSON,
// Bun's IPC serialization towards a non-Bun parent).
const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/cluster-adapter");

const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"] });
io.adapter(createAdapter());

io.on("connection", (socket) => {
  socket.emit("hello", process.pid);
  socket.on("chat", (msg) => io.emit("chat", { msg, from: process.pid }));
});

httpServer.listen(Number(process.env.PORT), "127.0.0.1");
