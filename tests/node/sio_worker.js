// Socket.IO worker for Corral's integration tests: the seed app (http server that never
// listens, cluster adapter, setupWorker) plus handlers the tests drive through sio_client.js.
//
// Env:
//   STICKY_VERSION=1   use @socket.io/sticky 1.0.4 (npm alias "sticky1") instead of 2.0.1
//   SEND_READY=1       process.send("ready") once set up (for wait_ready tests)
//   NO_ADAPTER=1       no cluster adapter (as an app on another adapter): the worker then
//                      sends nothing to the daemon until its first session
const { createServer } = require("http");
const crypto = require("crypto");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/cluster-adapter");
const { setupWorker } = require(process.env.STICKY_VERSION === "1" ? "sticky1" : "@socket.io/sticky");

const httpServer = createServer();
const io = new Server(httpServer);
// SIO_HEARTBEAT_TIMEOUT_MS: how long the adapter keeps counting a silent
// peer (10 s by default); a test sets it long to prove a drop came from the
// daemon's close message, not from the heartbeat.
const hb = Number(process.env.SIO_HEARTBEAT_TIMEOUT_MS);
if (process.env.NO_ADAPTER !== "1") {
  io.adapter(createAdapter(hb > 0 ? { heartbeatTimeout: hb } : {}));
}
setupWorker(io);

const me = {
  instance: process.env.NODE_APP_INSTANCE === undefined ? null : process.env.NODE_APP_INSTANCE,
  pid: process.pid,
  sticky: process.env.STICKY_VERSION === "1" ? "1.0.4" : "2.0.1",
};

// Engine.IO sid -> HTTP requests this worker saw for it. Lets the client check that every
// request of a polling session reached the session's owner, and nobody else.
const sidHits = new Map();
const MAX_TRACKED_SIDS = 10000;

// Engine.IO sid -> X-Forwarded-For values of its requests (and websocket upgrade) that
// another node forwarded here: the client's address must survive the forward.
const sidForwardedFor = new Map();
function noteForwarded(req) {
  const m = /[?&]sid=([^&#]+)/.exec(req.url || "");
  const xff = req.headers["x-forwarded-for"];
  if (m && xff && (sidForwardedFor.has(m[1]) || sidForwardedFor.size < MAX_TRACKED_SIDS)) {
    const seen = sidForwardedFor.get(m[1]) || [];
    if (!seen.includes(xff)) seen.push(xff);
    sidForwardedFor.set(m[1], seen);
  }
}
httpServer.prependListener("upgrade", (req) => noteForwarded(req));

httpServer.prependListener("request", (req, res) => {
  const url = req.url || "";
  const m = /[?&]sid=([^&#]+)/.exec(url);
  if (m && (sidHits.has(m[1]) || sidHits.size < MAX_TRACKED_SIDS)) {
    sidHits.set(m[1], (sidHits.get(m[1]) || 0) + 1);
  }
  noteForwarded(req);
  // Plain HTTP through the sticky port: echoes who answered and a digest of the body.
  if (url.startsWith("/whoami")) {
    const hash = crypto.createHash("sha1");
    let len = 0;
    req.on("data", (chunk) => {
      hash.update(chunk);
      len += chunk.length;
    });
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ ...me, method: req.method, bodyLen: len, bodySha1: hash.digest("hex") }));
    });
  }
});

// serverSideEmit target: every other worker answers with its identity.
io.on("who-is-there", (cb) => cb(me));

io.on("connection", (socket) => {
  console.log(`connected ${socket.id} instance=${me.instance} pid=${me.pid}`);
  socket.emit("hello", me);

  socket.on("whoami", (cb) =>
    typeof cb === "function" &&
    cb({ ...me, engineId: socket.conn.id, transport: socket.conn.transport.name }));
  socket.on("echo", (data, cb) => typeof cb === "function" && cb(data));
  socket.on("stats", (cb) => typeof cb === "function" && cb({ ...me, sidHits: Object.fromEntries(sidHits), forwardedFor: Object.fromEntries(sidForwardedFor) }));

  socket.on("join", (room, cb) => {
    socket.join(String(room));
    if (typeof cb === "function") cb(me);
  });
  socket.on("to-room", (room, payload, cb) => {
    io.to(String(room)).emit("room-msg", { room, payload, from: me });
    if (typeof cb === "function") cb("ok");
  });

  // Text and binary broadcast to every client on every worker.
  socket.on("broadcast", (text, cb) => {
    io.emit("bcast", { from: me, text, bin: Buffer.from([0, 1, 2, 127, 128, 255]) });
    if (typeof cb === "function") cb("ok");
  });

  // Broadcast expecting an ack from every client (adapter types 3 + 11/12).
  socket.on("bcast-ack", (cb) => {
    io.timeout(3000).emit("need-ack", (err, responses) => {
      if (typeof cb === "function") cb({ err: err ? err.message : null, n: responses ? responses.length : 0 });
    });
  });

  // fetchSockets across workers (adapter types 7/8). Guarded: an unguarded rejection would
  // crash the worker when a peer dies mid-request.
  socket.on("count", async (cb) => {
    const started = Date.now();
    let sockets;
    let serverCount;
    try {
      sockets = (await io.fetchSockets()).length;
    } catch (e) {
      sockets = `ERR ${e.message}`;
    }
    try {
      serverCount = await io.of("/").adapter.serverCount();
    } catch (e) {
      serverCount = `ERR ${e.message}`;
    }
    if (typeof cb === "function") cb({ ...me, sockets, serverCount, fetchMs: Date.now() - started });
  });

  // serverSideEmit with acks (adapter types 9/10).
  socket.on("sse", (cb) => {
    // The adapter bounds the wait itself (requestsTimeout, 5 s by default).
    io.serverSideEmit("who-is-there", (err, responses) => {
      if (typeof cb === "function") cb({ ...me, err: err ? err.message : null, responses: responses || [] });
    });
  });
});

if (process.env.SEND_READY === "1" && typeof process.send === "function") {
  process.send("ready");
}
