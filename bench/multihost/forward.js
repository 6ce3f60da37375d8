// Forwarded-request cost: polling requests of one Engine.IO session owned by node A, sent to
// A itself (local hand-off) and to B (B forwards them to A), or through a proxy in front.
//
//   node forward.js <owner host:port> <other host:port> [count=1000] [label=pid ...]
//
// Each request is a POST of a Socket.IO event on a new connection (as the balancer routes per
// connection). Prints one JSON line: per target ("local": the owner itself, "forwarded": the
// other address), p50/p99 latency (ms) and, for each labelled pid, its cpu-s (every thread, from
// /proc/<pid>/task/*/schedstat) per 1000 requests, plus "sum" (all the labelled pids together). Label the pids by
// role, e.g. owner=<pid of the daemon whose worker has the session> forwarder=<pid of the
// daemon or proxy the "other" address belongs to>: the same pids are measured in both phases.
// "ctxPerRequest": each labelled pid's context switches (all threads) per request.
"use strict";
const http = require("http");
const fs = require("fs");

const [ownerArg, otherArg, countArg, ...labelled] = process.argv.slice(2);
const roles = labelled.map((a) => {
  const i = a.indexOf("=");
  if (i < 1 || !/^\d+$/.test(a.slice(i + 1))) throw new Error(`expected label=pid, got ${a}`);
  return { label: a.slice(0, i), pid: a.slice(i + 1) };
});
const pids = roles.map((r) => r.pid);
const COUNT = parseInt(countArg || "1000", 10);
const hp = (s) => ({ host: s.slice(0, s.lastIndexOf(":")), port: parseInt(s.slice(s.lastIndexOf(":") + 1), 10) });
const owner = hp(ownerArg);
const other = hp(otherArg);

// cpu-s of every thread of pid: /proc/<pid>/task/*/schedstat (nanoseconds), not the 10 ms
// ticks of /proc/<pid>/stat.
function cpu(pid) {
  let ns = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    ns += parseInt(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0], 10);
  }
  return ns / 1e9;
}

// Context switches (voluntary + involuntary) of every thread of pid: each one is a wake-up
// of a thread that had blocked, or a preemption.
function ctx(pid) {
  let n = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    for (const line of fs.readFileSync(`/proc/${pid}/task/${t}/status`, "utf8").split("\n")) {
      if (line.includes("ctxt_switches:")) n += parseInt(line.split(/\s+/)[1], 10);
    }
  }
  return n;
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
  const x0 = pids.map(ctx);
  const lat = [];
  let errors = 0;
  for (let i = 0; i < COUNT; i++) {
    const t0 = process.hrtime.bigint();
    const r = await request(target, "POST", path, `42["echo","m${i}"]`);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (r.status !== 200) errors++;
  }
  const c1 = pids.map(cpu);
  const x1 = pids.map(ctx);
  const ctxPerRequest = {};
  roles.forEach((r, i) => (ctxPerRequest[r.label] = +((x1[i] - x0[i]) / COUNT).toFixed(2)));
  const cpuPer1000 = {};
  let sum = 0;
  roles.forEach((r, i) => {
    const v = ((c1[i] - c0[i]) * 1000) / COUNT;
    sum += v;
    cpuPer1000[r.label] = +v.toFixed(4);
  });
  cpuPer1000.sum = +sum.toFixed(4);
  return { n: COUNT, errors, p50: pct(lat, 50), p99: pct(lat, 99), cpuPer1000, ctxPerRequest };
}

(async () => {
  const out = { count: COUNT, local: await phase(owner), forwarded: await phase(other) };
  console.log(JSON.stringify(out));
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
