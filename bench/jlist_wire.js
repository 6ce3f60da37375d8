#!/usr/bin/env node
// jlist_wire.js - the daemon's cost of one `jlist`, without the CLI around it.
//
//   PM2_HOME=... node bench/jlist_wire.js <daemon pid> [count=50] [pause_ms=0]
//
// Speaks Corral's control protocol on $PM2_HOME/corral.sock (u32 big-endian length, top bit = more
// fragments; JSON payloads): one hello, then `count` requests of each kind on the same connection,
// `pause_ms` apart: `jlist` (the list inside a JSON string, escaped by the daemon) and `jlist_raw`
// (a `raw` reply, then the list itself as the next message), when the daemon offers it. For each kind:
// the daemon's on-CPU time per request (schedstat ns of all its threads), the round trip (p50) and the
// reply's size. A pause of more than 500 ms makes the daemon read /proc for every process each time
// (its samples are reused while younger than that). Bounded: at most 500 requests per kind, 60 s.
"use strict";
const net = require("net");
const fs = require("fs");
const path = require("path");

const [pid, countArg, pauseArg] = process.argv.slice(2);
const count = Math.min(Number(countArg || 50), 500);
const pause = Number(pauseArg || 0);
const home = process.env.PM2_HOME;
if (!pid || !home) {
  console.error("usage: PM2_HOME=... node jlist_wire.js <daemon pid> [count] [pause_ms]");
  process.exit(2);
}
setTimeout(() => { console.error("jlist_wire: time cap (60 s)"); process.exit(3); }, 60000).unref();

const cpuNs = () => fs.readdirSync(`/proc/${pid}/task`)
  .reduce((s, t) => s + Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]), 0);
const frame = (obj) => {
  const body = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length);
  return Buffer.concat([head, body]);
};

const sock = net.connect(path.join(home, "corral.sock"));
let buf = Buffer.alloc(0);
let waiting = null;
sock.on("data", (d) => { buf = Buffer.concat([buf, d]); pump(); });
sock.on("error", (e) => { console.error("jlist_wire:", e.message); process.exit(1); });
// one whole message (all its fragments), or null while incomplete
function take() {
  let off = 0;
  const parts = [];
  for (;;) {
    if (buf.length < off + 4) return null;
    const h = buf.readUInt32BE(off);
    const len = h & 0x7fffffff;
    if (buf.length < off + 4 + len) return null;
    parts.push(buf.subarray(off + 4, off + 4 + len));
    off += 4 + len;
    if (!(h & 0x80000000)) break;
  }
  buf = buf.subarray(off);
  return Buffer.concat(parts);
}
function pump() {
  while (waiting) {
    const m = take();
    if (!m) return;
    const w = waiting;
    waiting = null;
    w(m);
  }
}
const next = () => new Promise((r) => { waiting = r; pump(); });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

(async () => {
  sock.write(frame({ protocol: 1, client_version: "bench" }));
  const welcome = JSON.parse(await next());
  const kinds = ["jlist"];
  if ((welcome.capabilities || []).includes("raw-jlist")) kinds.push("jlist_raw");
  const out = { count, pause_ms: pause };
  for (const req of kinds) {
    const rtt = [];
    let bytes = 0, cpu = 0;
    for (let i = 0; i < count; i++) {
      if (pause) await sleep(pause);
      const c0 = cpuNs();
      const t0 = process.hrtime.bigint();
      sock.write(frame({ req }));
      const m = await next();
      let text = m;
      if (req === "jlist_raw") text = await next(); // after {"reply":"raw"}
      else text = JSON.parse(m).text;
      rtt.push(Number(process.hrtime.bigint() - t0) / 1e6);
      cpu += cpuNs() - c0;
      bytes = text.length;
    }
    rtt.sort((a, b) => a - b);
    out[req] = { daemon_cpu_us: Math.round(cpu / count / 1000), rtt_p50_ms: Math.round(rtt[rtt.length >> 1] * 100) / 100, bytes };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
  process.exit(0);
})();
