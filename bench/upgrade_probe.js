// Port probe for the in-place update benchmark (bench/upgrade.sh).
//
//   node bench/upgrade_probe.js <port> <path> <stop-file> [intervalMs=2]
//
// Sends one HTTP GET (new connection each, `agent: false`) every intervalMs until <stop-file>
// exists (bounded: 120 s), waits for the ones in flight (each bounded by 10 s) and prints ONE line:
//   {"probes","failed","failures":[{at,code}],"p50Ms","maxMs","downtimeMs","window":{from,to}}
// A probe is "bad" when it fails or takes longer than max(10 ms, 5 x the median). The downtime is the
// longest span from the send time of a bad probe to the completion of the first good probe sent after
// it (overlapping spans merged): the time the port did not serve, refused or delayed.
"use strict";
const http = require("http");
const fs = require("fs");

const [portArg, path, stopFile, ivArg] = process.argv.slice(2);
const PORT = Number(portArg);
const IV = Number(ivArg || 2);
const probes = [];
let inflight = 0;
const t0 = Date.now();

function probe() {
  const p = { at: Date.now(), start: process.hrtime.bigint(), ms: null, ok: false, code: null };
  probes.push(p);
  inflight++;
  const done = (ok, code) => {
    if (p.ms !== null) return;
    p.ms = Number(process.hrtime.bigint() - p.start) / 1e6;
    p.ok = ok;
    p.code = code;
    inflight--;
  };
  const req = http.get({ host: "127.0.0.1", port: PORT, path, agent: false, timeout: 10000 }, (res) => {
    res.resume();
    res.on("end", () => done(res.statusCode === 200, res.statusCode));
    res.on("error", (e) => done(false, e.code || "error"));
  });
  req.on("timeout", () => req.destroy(new Error("timeout")));
  req.on("error", (e) => done(false, e.code || e.message));
}

const timer = setInterval(() => {
  if (fs.existsSync(stopFile) || Date.now() - t0 > 120000) {
    clearInterval(timer);
    const wait = setInterval(() => {
      if (inflight > 0 && Date.now() - t0 < 135000) return;
      clearInterval(wait);
      report();
    }, 10);
    return;
  }
  probe();
}, IV);

function report() {
  const done = probes.filter((p) => p.ms !== null);
  const lat = done.filter((p) => p.ok).map((p) => p.ms).sort((a, b) => a - b);
  const p50 = lat.length ? lat[Math.floor(lat.length / 2)] : 0;
  const limit = Math.max(10, 5 * p50);
  const bad = (p) => !p.ok || p.ms > limit;
  let best = null;
  let cur = null;
  for (let i = 0; i < done.length; i++) {
    const p = done[i];
    if (!bad(p)) continue;
    // The first good probe sent after this one ends the span.
    let end = null;
    for (let j = i + 1; j < done.length; j++) {
      if (!bad(done[j])) {
        end = done[j].at + done[j].ms;
        break;
      }
    }
    if (end === null) end = p.at + p.ms;
    if (cur && p.at <= cur.to) cur.to = Math.max(cur.to, end);
    else cur = { from: p.at, to: end };
    if (!best || cur.to - cur.from > best.to - best.from) best = { ...cur };
  }
  const failures = done.filter((p) => !p.ok).slice(0, 50).map((p) => ({ at: p.at, code: p.code }));
  const out = {
    probes: done.length,
    failed: done.filter((p) => !p.ok).length,
    failures,
    p50Ms: Math.round(p50 * 100) / 100,
    maxMs: Math.round(Math.max(0, ...done.map((p) => p.ms)) * 100) / 100,
    downtimeMs: best ? Math.round(best.to - best.from) : 0,
    window: best,
  };
  process.stdout.write(JSON.stringify(out) + "\n");
}
