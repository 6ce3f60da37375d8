// The seed app switched to the standard multi-host setup: @socket.io/redis-adapter (one
// Redis shared by every worker of every host) instead of @socket.io/cluster-adapter.
// Run in cluster mode under a process manager that does the sticky part (Corral without
// PM2_CLUSTER_REDIS here), with nginx ip_hash in front of the hosts. Only what the bench uses:
// hello, echo, broadcast.
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");
const { setupWorker } = require("@socket.io/sticky");

const url = process.env.BENCH_REDIS_URL || "redis://127.0.0.1:6379";
const pub = createClient({ url });
const sub = pub.duplicate();
const httpServer = createServer();
const io = new Server(httpServer);
const me = { pid: process.pid };

Promise.all([pub.connect(), sub.connect()]).then(() => {
  io.adapter(createAdapter(pub, sub));
  setupWorker(io);
  io.on("connection", (socket) => {
    socket.emit("hello", me);
    socket.on("echo", (data, cb) => typeof cb === "function" && cb(data));
    socket.on("broadcast", (text, cb) => {
      io.emit("bcast", { from: me, text, bin: Buffer.from([0, 1, 2, 127, 128, 255]) });
      if (typeof cb === "function") cb("ok");
    });
  });
  // No cluster-adapter traffic tells Corral's balancer this worker is set up, and a plain
  // "ready" does not mark it ready for sticky traffic: any sticky:* message does.
  if (typeof process.send === "function") process.send({ type: "sticky:ready" });
});
