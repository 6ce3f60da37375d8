// pm2's programmatic API against a running daemon: latency of pm2.list()
// (getMonitorData over rpc.sock) as a dashboard or exporter sees it, with a
// bus client (launchBus on pub.sock) attached for the whole run.
// Usage: PM2_HOME=<home> node bench/pm2api.js [calls]   (prints one JSON line)
// Needs the `pm2` package: tests/pm2api's node_modules (npm ci there).
'use strict';
const path = require('path');
const pm2 = require(path.join(__dirname, '..', 'tests', 'pm2api', 'node_modules', 'pm2'));

const N = Math.min(Number(process.argv[2] || 200), 5000);
setTimeout(() => { console.error('deadline'); process.exit(1); }, 120000).unref();
const p = (fn) => new Promise((res, rej) => fn((e, r) => (e ? rej(e) : res(r))));

(async () => {
  const t0 = process.hrtime.bigint();
  await p((cb) => pm2.connect(cb));
  const connectMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const bus = await p((cb) => pm2.launchBus(cb));
  let events = 0;
  bus.on('*', () => events++);
  const ms = [];
  let procs = 0;
  for (let i = 0; i < N; i++) {
    const s = process.hrtime.bigint();
    procs = (await p((cb) => pm2.list(cb))).length;
    ms.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const q = (f) => ms[Math.min(ms.length - 1, Math.floor(f * ms.length))];
  console.log(JSON.stringify({
    connect_ms: +connectMs.toFixed(2), calls: N, procs,
    list_ms: { p50: +q(0.5).toFixed(3), p90: +q(0.9).toFixed(3), p99: +q(0.99).toFixed(3), max: +ms[ms.length - 1].toFixed(3) },
    bus_events: events,
  }));
  if (process.env.HOLD_MS) await new Promise((r) => setTimeout(r, Number(process.env.HOLD_MS)));
  await p((cb) => pm2.disconnect(cb));
})().catch((e) => { console.error(e); process.exit(1); });
