// The seed app deployed the way the Socket.IO documentation does it without pm2: each worker
// is a plain Node process listening on its own port (BENCH_WORKER_PORT, 127.0.0.1), nginx with
// `ip_hash` in front of them, and @socket.io/redis-adapter (one redis-server) carrying broadcasts
// between the workers instead of a cluster primary. Same handlers as worker.js (a log line per
// connection) plus the same benchmark probes.
//
// run.sh copies this file next to the packages of bench/multihost/redis-adapter's lockfile
// (installed into bench/.work/peer) and starts it from there, so `require` resolves those pinned
// packages; BENCH_PROBES names app/probes.js.
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const { createClient } = require("redis");

const port = Number(process.env.BENCH_WORKER_PORT || 0);
if (!port) {
  console.error("BENCH_WORKER_PORT is not set");
  process.exit(1);
}
const url = process.env.BENCH_REDIS_URL || "redis://127.0.0.1:6379";
const pub = createClient({ url });
const sub = pub.duplicate();
const httpServer = createServer();
const io = new Server(httpServer);

Promise.all([pub.connect(), sub.connect()]).then(
  () => {
    io.adapter(createAdapter(pub, sub));
    io.on("connection", (socket) => {
      console.log(`conectado ${socket.id}`);
    });
    // ---- benchmark only: listeners that observe, never change the wiring above ----
    require(process.env.BENCH_PROBES)(io, httpServer);
    httpServer.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
  },
  (e) => {
    console.error("cannot connect to redis:", e);
    process.exit(1);
  },
);
