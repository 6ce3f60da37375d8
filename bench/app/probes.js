// Benchmark probes for the seed worker. Installed after the seed's own setup; they only add listeners
// and headers, the sticky / cluster-adapter wiring is untouched.
//
//   HTTP   every response carries `x-worker-pid`; the Engine.IO handshake response also carries `x-sid`
//          (the new session id), so the load generator can check stickiness response by response.
//          GET /bench/ping -> "pong <pid>" (plain routing, row 5).
//   events whoami(ack)            -> ack({ pid })
//          echo(payload, ack)     -> ack(payload)
//          bcast(opts, ack)       -> io.emit("b", { i, t, pid[, buf] }) opts.n times, as a burst (rate 0)
//                                    or paced at opts.rate msg/s; t is the wall clock in ms (sub-ms)
//   file   counters in $BENCH_STATE_DIR/w-<pid>.json, rewritten every 500 ms and at exit
"use strict";
const fs = require("fs");
const path = require("path");
const { performance } = require("perf_hooks");

const clock = () => performance.timeOrigin + performance.now();

module.exports = function installProbes(io, httpServer) {
  const pid = process.pid;
  const pidHeader = String(pid);
  const c = { pid, started: Date.now(), http: 0, pings: 0, engine_conn: 0, sio_conn: 0, upgrades: 0, emitted: 0, echoes: 0, conn_errors: {} };

  httpServer.prependListener("request", (_req, res) => {
    c.http++;
    res.setHeader("x-worker-pid", pidHeader);
  });
  httpServer.on("request", (req, res) => {
    if (!req.url.startsWith("/bench/ping")) return; // engine.io handles /socket.io/
    c.pings++;
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("pong " + pidHeader);
  });

  const engine = io.engine;
  const generateId = engine.generateId.bind(engine);
  engine.generateId = (req) => {
    const id = generateId(req);
    if (typeof id === "string") req.benchSid = id;
    return id;
  };
  engine.on("headers", (headers, req) => {
    headers["x-worker-pid"] = pidHeader;
    if (req.benchSid) headers["x-sid"] = req.benchSid;
  });
  engine.on("connection", (s) => {
    c.engine_conn++;
    s.once("upgrade", () => c.upgrades++);
  });
  // code 1 = "Session ID unknown": a request of a session that lives on another worker (misrouted)
  engine.on("connection_error", (e) => {
    c.conn_errors[e.code] = (c.conn_errors[e.code] || 0) + 1;
  });

  const buffers = new Map();
  const filler = (n) => {
    if (!buffers.has(n)) buffers.set(n, Buffer.alloc(n, 0x62));
    return buffers.get(n);
  };

  io.on("connection", (socket) => {
    c.sio_conn++;
    socket.on("whoami", (ack) => typeof ack === "function" && ack({ pid }));
    socket.on("echo", (payload, ack) => {
      c.echoes++;
      if (typeof ack === "function") ack(payload);
    });
    socket.on("bcast", (opts, ack) => {
      const n = Math.min(Math.max(opts.n | 0, 0), 200000);
      const size = Math.min(Math.max(opts.size | 0, 0), 1 << 20);
      const binary = opts.kind === "binary";
      const rate = Number(opts.rate) || 0;
      const t0 = clock();
      let i = 0;
      const emitOne = () => {
        const m = { i, t: clock(), pid };
        if (binary) m.buf = filler(size);
        io.emit("b", m);
        c.emitted++;
        i++;
      };
      const finish = () => typeof ack === "function" && ack({ pid, sent: n, ms: clock() - t0 });
      if (rate <= 0) {
        // burst: 200 emits per tick so IPC and socket writes get flushed in between
        const step = () => {
          for (let k = 0; k < 200 && i < n; k++) emitOne();
          if (i < n) setImmediate(step);
          else finish();
        };
        step();
      } else {
        const period = 1000 / rate;
        const step = () => {
          const due = Math.min(n, Math.floor((clock() - t0) / period) + 1);
          for (let k = 0; k < 50 && i < due; k++) emitOne();
          if (i < n) setTimeout(step, Math.max(0, t0 + i * period - clock()));
          else finish();
        };
        step();
      }
    });
  });

  const dir = process.env.BENCH_STATE_DIR;
  if (!dir) return;
  const file = path.join(dir, `w-${pid}.json`);
  const write = () => {
    try {
      fs.writeFileSync(file + ".tmp", JSON.stringify(c));
      fs.renameSync(file + ".tmp", file);
    } catch (_) {}
  };
  write();
  setInterval(write, 500).unref();
  process.on("exit", write);
};
