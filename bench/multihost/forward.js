// Forwarded-request cost: polling requests of one Engine.IO session owned by node A, sent to
// A itself (local hand-off) and to B (B forwards them to A), or through a proxy in front.
//
//   node forward.js <owner host:port> <other host:port> [count=1000] [daemon pids to measure...]
//
// Each request is a POST of a Socket.IO event on a new connection (as the balancer routes per
// connection). Prints one JSON line: per target, p50/p99 latency (ms) and, for each pid
// given, its cpu-s (utime+stime from /proc) per 1000 requests.
"use strict";
const http = require("http");
const fs = require("fs");

const [ownerArg, otherArg, countArg, ...pids] = process.argv.slice(2);
const COUNT = parseInt(countArg || "1000", 10);
const hp = (s) => ({ host: s.slice(0, s.lastIndexOf(":")), port: parseInt(s.slice(s.lastIndexOf(":") + 1), 10) });
const owner = hp(ownerArg);
const other = hp(otherArg);
const HZ = 100;

function cpu(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
  const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
  return (parseInt(rest[11], 10) + parseInt(rest[12], 10)) / HZ;
}

function request(t, method, path, body) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: t.host, port: t.port, method, path, agent: false, timeout: 10000 }, (res) => {
      let data = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (data += c));
      res.on("end", () => resolve({ status: res.statusCode, body: data }));
    });
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

const pct = (a, p) => {
  const s = [...a].sort((x, y) => x - y);
  return +s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))].toFixed(3);
};

async function session() {
  const base = "/socket.io/?EIO=4&transport=polling";
  const hs = await request(owner, "GET", base);
  const sid = JSON.parse(hs.body.slice(1)).sid;
  const path = `${base}&sid=${encodeURIComponent(sid)}`;
  await request(owner, "POST", path, "40");
  await request(owner, "GET", path);
  return path;
}

async function phase(target) {
  // A fresh session per phase: Engine.IO closes one that was not polled for pingInterval +
  // pingTimeout.
  const path = await session();
  for (let i = 0; i < 20; i++) await request(target, "POST", path, '42["echo","warm"]');
  const c0 = pids.map(cpu);
  const lat = [];
  let errors = 0;
  for (let i = 0; i < COUNT; i++) {
    const t0 = process.hrtime.bigint();
    const r = await request(target, "POST", path, `42["echo","m${i}"]`);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== 200) errors++;
  }
  const c1 = pids.map(cpu);
  const cpuPer1000 = {};
  pids.forEach((p, i) => (cpuPer1000[p] = +(((c1[i] - c0[i]) * 1000) / COUNT).toFixed(3)));
  return { n: COUNT, errors, p50: pct(lat, 50), p99: pct(lat, 99), cpuPer1000 };
}

(async () => {
  const out = { count: COUNT, local: await phase(owner), forwarded: await phase(other) };
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
