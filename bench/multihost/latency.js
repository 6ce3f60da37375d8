// Cross-node vs same-node adapter relay latency, measured by one client process (one clock).
//
//   node latency.js <portA> <portB> [count=2000] [paceMs=5]
//
// paceMs 0 sends a burst: perSecond (messages received per second, first emit to last
// receipt) is then the relay's throughput.
//
// A sender connected to node B triggers io.emit on its worker; the time until a client on
// the OTHER worker of node B receives it is the same-node relay latency (worker -> daemon ->
// worker), and until a client on node A receives it the cross-node latency (worker -> daemon
// B -> Redis -> daemon A -> worker). Prints one JSON line with p50/p90/p99/max in ms.
"use strict";
const path = require("path");
const { io } = require(path.join(__dirname, "../../tests/node/node_modules/socket.io-client"));

const [A, B] = process.argv.slice(2, 4).map((x) => parseInt(x, 10));
const COUNT = parseInt(process.argv[4] || "2000", 10);
const PACE = parseInt(process.argv[5] || "5", 10);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connect(port) {
  return new Promise((resolve, reject) => {
    const s = io(`http://127.0.0.1:${port}`, { forceNew: true, reconnection: false, transports: ["websocket"] });
    const t = setTimeout(() => reject(new Error("connect timeout")), 8000);
    s.on("hello", (me) => {
      clearTimeout(t);
      resolve({ s, pid: me.pid });
    });
    s.on("connect_error", reject);
  });
}

function pct(a, p) {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(3) : null;
}

(async () => {
  const tx = await connect(B);
  let same = null;
  for (let i = 0; i < 40 && !same; i++) {
    const c = await connect(B);
    if (c.pid !== tx.pid) same = c;
    else c.s.close();
  }
  if (!same) throw new Error("could not reach the other worker of node B");
  const cross = await connect(A);
  const lat = { same: [], cross: [] };
  const sent = new Map();
  const tag = `l${Date.now()}-`;
  const last = { same: 0n, cross: 0n };
  let firstSend = 0n;
  const on = (which) => (m) => {
    if (typeof m.text !== "string" || !m.text.startsWith(tag)) return;
    const t0 = sent.get(m.text);
    if (t0 === undefined) return;
    last[which] = process.hrtime.bigint();
    lat[which].push(Number(last[which] - t0) / 1e6);
  };
  same.s.on("bcast", on("same"));
  cross.s.on("bcast", on("cross"));
  // Warm-up: wait until a broadcast crosses.
  const probe = `${tag}probe`;
  for (let i = 0; i < 100 && lat.cross.length === 0; i++) {
    sent.set(probe, process.hrtime.bigint());
    tx.s.emit("broadcast", probe);
    await sleep(100);
  }
  lat.same.length = 0;
  lat.cross.length = 0;
  firstSend = process.hrtime.bigint();
  for (let i = 0; i < COUNT; i++) {
    const text = tag + i;
    sent.set(text, process.hrtime.bigint());
    tx.s.emit("broadcast", text);
    // Pace 0: a burst (throughput), yielding every 100 emits so receipts are timestamped.
    if (PACE > 0) await sleep(PACE);
    else if (i % 100 === 99) await new Promise((r) => setImmediate(r));
  }
  const deadline = Date.now() + 10000;
  while ((lat.same.length < COUNT || lat.cross.length < COUNT) && Date.now() < deadline) await sleep(20);
  const out = { count: COUNT, paceMs: PACE };
  for (const k of ["same", "cross"]) {
    const secs = Number(last[k] - firstSend) / 1e9;
    out[k] = {
      n: lat[k].length,
      p50: pct(lat[k], 50),
      p90: pct(lat[k], 90),
      p99: pct(lat[k], 99),
      max: pct(lat[k], 100),
      perSecond: secs > 0 ? Math.round(lat[k].length / secs) : null,
    };
  }
  console.log(JSON.stringify(out));
  for (const c of [tx, same, cross]) c.s.close();
  setTimeout(() => process.exit(0), 200);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
