#!/usr/bin/env node
// lg.js - Corral's load generator and probes (one per benchmark row).
//
//   node lg/lg.js <command> [--key value ...] [-- external command]
//
// Prints exactly one JSON object on stdout (the measurement) and a one-line summary on stderr.
// Traffic goes to 127.0.0.1 only. Every loop is bounded by a count and by time, and the whole
// process exits after --cap-secs (default 90).
//
// CPU accounting: on-CPU ns of /proc/<pid>/task/*/schedstat (see ticks()) for the daemon (--daemon), the workers
// (--workers a,b,...), auxiliary processes (--aux a,b,...: the redis-server of the nginx deployment) and this
// process, sampled at the edges of the measurement window; the rest of /proc/stat's busy time is "other" (other
// tenants of the machine), in % of one core.
//
// --sources N (N > 0): Socket.IO client number i connects from 127.0.<i mod N>.1 instead of 127.0.0.1, so a
// balancer that hashes the client address (nginx `ip_hash` keys on the first three octets) sees N clients, as
// it would on a real network, and spreads them.
"use strict";

const http = require("http");
const net = require("net");
const fs = require("fs");
const path = require("path");
const { spawn, spawnSync } = require("child_process");
const { performance } = require("perf_hooks");

const HOST = "127.0.0.1";
const clock = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------- options
const argv = process.argv.slice(2);
const opt = { _: [], rest: [] };
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === "--") { opt.rest = argv.slice(i + 1); break; }
  if (!a.startsWith("--")) { opt._.push(a); continue; }
  const next = argv[i + 1];
  if (next === undefined || next.startsWith("--")) opt[a.slice(2)] = "1";
  else { opt[a.slice(2)] = next; i++; }
}
const num = (k, d) => (opt[k] === undefined || opt[k] === "" ? d : Number(opt[k]));
const str = (k, d) => (opt[k] === undefined ? d : opt[k]);
const pids = (k) => String(opt[k] || "").split(",").map(Number).filter((p) => Number.isInteger(p) && p > 1);
const PORT = num("port", 8080);
const BASE = `http://${HOST}:${PORT}`;
const STATE = process.env.BENCH_STATE_DIR || str("state", "");
const say = (s) => process.stderr.write(`[lg] ${s}\n`);

// ------------------------------------------------------------------------------------------- stats
const round = (x, d = 3) => (x == null || !Number.isFinite(x) ? null : Math.round(x * 10 ** d) / 10 ** d);
function summary(values) {
  if (!values.length) return { n: 0 };
  const s = Float64Array.from(values).sort();
  const at = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  let sum = 0;
  for (const v of s) sum += v;
  return { n: s.length, p50: round(at(0.5)), p90: round(at(0.9)), p99: round(at(0.99)), max: round(s[s.length - 1]), mean: round(sum / s.length) };
}
const bump = (o, k, by = 1) => { o[k] = (o[k] || 0) + by; };
const per1k = (cpuS, units) => (units > 0 ? round((cpuS * 1000) / units, 4) : null);

// ------------------------------------------------------------------------------------------- /proc
const TCK = Number(spawnSync("getconf", ["CLK_TCK"]).stdout.toString().trim()) || 100;
// CPU time of a process in clock ticks, at nanosecond resolution: the sum of the first field of
// /proc/<pid>/task/*/schedstat (ns on CPU, per thread), converted to ticks so every caller keeps its
// units. utime+stime of /proc/<pid>/stat advance in whole 10 ms ticks, too coarse for a row whose
// daemon spends a few tens of ms in all. Threads that exit between two marks drop out of the sum, so
// the old coarse counter is kept as a floor for a process whose threads come and go.
function ticks(pid) {
  let coarse = null;
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    coarse = Number(f[11]) + Number(f[12]);
  } catch (_) { return null; }
  try {
    let ns = 0;
    for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
      ns += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, "utf8").split(" ")[0]);
    }
    if (Number.isFinite(ns) && ns > 0) return (ns / 1e9) * TCK;
  } catch (_) { /* no schedstat (kernel without CONFIG_SCHEDSTATS): coarse ticks */ }
  return coarse;
}
function rssKb(pid) {
  try { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]); } catch (_) { return null; }
}
function fdCount(pid) {
  try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch (_) { return null; }
}
function machineTicks() {
  const v = fs.readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
  const busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  return { busy, all: busy + v[3] + v[4] };
}
function groups(extra = {}) {
  const g = { daemon: pids("daemon"), workers: pids("workers"), lg: [process.pid], ...extra };
  if (pids("aux").length) g.aux = pids("aux");
  return g;
}
function mark(g) {
  const m = { t: clock(), sys: machineTicks(), g: {} };
  for (const [k, list] of Object.entries(g)) m.g[k] = new Map(list.map((p) => [p, ticks(p)]));
  return m;
}
// CPU seconds per group between two marks (a pid that vanished counts up to its last sample: 0)
function cpuBetween(a, b) {
  const wall = (b.t - a.t) / 1000;
  const out = { wall_s: round(wall), cpu_s: {}, pct: {} };
  let ours = 0;
  for (const k of Object.keys(a.g)) {
    let t = 0;
    for (const [p, t0] of a.g[k]) {
      const t1 = b.g[k] ? b.g[k].get(p) : null;
      if (t0 != null && t1 != null) t += t1 - t0;
    }
    ours += t;
    out.cpu_s[k] = round(t / TCK);
    out.pct[k] = round((t / TCK / wall) * 100, 1);
  }
  const busy = b.sys.busy - a.sys.busy;
  out.machine_pct = round((busy / Math.max(1, b.sys.all - a.sys.all)) * 100, 1); // of all cores
  out.other_pct = Math.max(0, round(((busy - ours) / TCK / wall) * 100, 1)); // other tenants, % of one core
  return out;
}

// ------------------------------------------------------------------------------------------- worker counters
function readCounters() {
  const out = {};
  if (!STATE || !fs.existsSync(STATE)) return out;
  for (const f of fs.readdirSync(STATE)) {
    const m = /^w-(\d+)\.json$/.exec(f);
    if (!m) continue;
    try { out[m[1]] = JSON.parse(fs.readFileSync(path.join(STATE, f), "utf8")); } catch (_) {}
  }
  return out;
}
function counterDelta(a, b) {
  const d = { http: 0, pings: 0, engine_conn: 0, sio_conn: 0, upgrades: 0, emitted: 0, echoes: 0, conn_errors: {}, http_by_pid: {} };
  for (const [p, y] of Object.entries(b)) {
    const x = a[p] || {};
    for (const k of ["http", "pings", "engine_conn", "sio_conn", "upgrades", "emitted", "echoes"]) d[k] += (y[k] || 0) - (x[k] || 0);
    const h = (y.http || 0) - (x.http || 0);
    if (h) d.http_by_pid[p] = h;
    for (const [code, n] of Object.entries(y.conn_errors || {})) bump(d.conn_errors, code, n - ((x.conn_errors || {})[code] || 0));
  }
  const counts = Object.values(d.http_by_pid);
  const total = counts.reduce((s, x) => s + x, 0);
  d.busiest_worker_share = total ? round(Math.max(...counts) / total, 3) : null;
  return d;
}

// ------------------------------------------------------------------------------------------- request tracing
// socket.io-client makes its polling requests (xmlhttprequest-ssl) and its websocket upgrade (ws) with
// http.request; wrapping it lets us time every request and compare each response's x-worker-pid with the
// worker that answered the session's handshake (x-sid).
const trace = {
  on: false,
  keepEvents: false,
  byKind: {},
  sessions: new Map(), // sid -> { pid, responses, wrong }
  open: new Map(), // req -> { t0, kind, sid }
  events: [],
  reset() { this.byKind = {}; this.sessions = new Map(); this.open = new Map(); this.events = []; },
  kind(k) { return this.byKind[k] || (this.byKind[k] = { n: 0, ok: 0, lat: [], status: {}, err: {} }); },
  stuck(ms) { const t = clock(); return [...this.open.values()].filter((r) => t - r.t0 > ms); },
};
const plainRequest = http.request;
http.request = function tracedRequest(...a) {
  const req = plainRequest.apply(this, a);
  if (!trace.on) return req;
  const t0 = clock();
  const p = req.path || "";
  const m = /[?&]sid=([^&]+)/.exec(p);
  let sid = m ? decodeURIComponent(m[1]) : null;
  const kind = p.includes("transport=websocket") ? "ws" : req.method === "POST" ? "post" : sid ? "get" : "handshake";
  const rec = { t0, kind, sid };
  trace.open.set(req, rec);
  let status = null, pid = null, closed = false;
  const done = (err) => {
    if (closed) return;
    closed = true;
    trace.open.delete(req);
    const t = clock();
    const k = trace.kind(kind);
    const ok = !err && (status === 200 || status === 101);
    k.n++;
    if (ok) { k.ok++; k.lat.push(t - t0); }
    if (status != null) bump(k.status, status);
    if (err) bump(k.err, err);
    let wrong = false;
    if (sid && pid) {
      const s = trace.sessions.get(sid);
      if (!s) trace.sessions.set(sid, { pid, responses: 1, wrong: 0 });
      else { s.responses++; if (s.pid !== pid) { s.wrong++; wrong = true; } }
    }
    if (trace.keepEvents) trace.events.push({ t, t0, kind, sid, status, pid, ok, err: err || null, wrong });
  };
  req.on("response", (res) => {
    status = res.statusCode;
    rec.status = status;
    pid = res.headers["x-worker-pid"] || null;
    if (!sid && res.headers["x-sid"]) sid = res.headers["x-sid"];
    res.on("end", () => done(null));
    res.on("aborted", () => done("aborted"));
    res.on("error", (e) => done(e.code || "response-error"));
  });
  req.on("upgrade", (res) => { status = res.statusCode; pid = res.headers["x-worker-pid"] || null; done(null); });
  req.on("error", (e) => done(e.code || e.message || "error"));
  req.on("close", () => setImmediate(() => done(status == null ? "closed-without-response" : null)));
  return req;
};
function traceReport() {
  const kinds = {};
  let n = 0, ok = 0;
  for (const [k, v] of Object.entries(trace.byKind)) {
    kinds[k] = { n: v.n, ok: v.ok, lat_ms: summary(v.lat), status: v.status, err: v.err };
    n += v.n; ok += v.ok;
  }
  let wrongResponses = 0, wrongSessions = 0;
  for (const s of trace.sessions.values()) if (s.wrong) { wrongSessions++; wrongResponses += s.wrong; }
  const stuck = {};
  for (const r of trace.stuck(3000)) bump(stuck, r.kind);
  return { requests: n, ok, failed: n - ok, stuck, kinds, sessions_seen: trace.sessions.size, sticky_violations: wrongResponses, sticky_violation_sessions: wrongSessions };
}

// ------------------------------------------------------------------------------------------- helpers
let ioFn = null;
const SOURCES = Math.min(Math.max(num("sources", 0) | 0, 0), 250);
const agents = new Map();
let clientSeq = 0;
function client(opts) {
  const from = {};
  if (SOURCES > 0) {
    // polling requests go through the agent, the websocket through localAddress
    const localAddress = `127.0.${clientSeq++ % SOURCES}.1`;
    if (!agents.has(localAddress)) agents.set(localAddress, new http.Agent({ localAddress }));
    from.localAddress = localAddress;
    from.agent = agents.get(localAddress);
  }
  return (ioFn || (ioFn = require("socket.io-client").io))(BASE, { forceNew: true, ...from, ...opts });
}
function connected(socket, ms) {
  return new Promise((resolve) => {
    const to = setTimeout(() => resolve("timeout"), ms);
    socket.once("connect", () => { clearTimeout(to); resolve(null); });
    socket.once("connect_error", (e) => { clearTimeout(to); resolve("connect_error:" + e.message); });
  });
}
function ask(socket, ev, payload, ms) {
  return new Promise((resolve) => {
    const cb = (err, res) => resolve(err ? { err: "ack-timeout" } : { res });
    if (payload === undefined) socket.timeout(ms).emit(ev, cb);
    else socket.timeout(ms).emit(ev, payload, cb);
  });
}
// one HTTP GET on a fresh TCP connection (agent: false), bypassing the tracer
function get(port, p, ms) {
  return new Promise((resolve) => {
    const t0 = clock();
    const req = plainRequest({ host: HOST, port, path: p, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve({ status: res.statusCode, pid: res.headers["x-worker-pid"], ms: clock() - t0 }));
      res.on("error", (e) => resolve({ err: e.code || "response-error", ms: clock() - t0 }));
    });
    req.setTimeout(ms, () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ err: e.code || e.message, ms: clock() - t0 }));
    req.end();
  });
}

// ------------------------------------------------------------------------------------------- commands
const cmds = {};

// idle footprint: RSS (max of 1 s samples) and CPU of the daemon and workers over --secs
cmds.idle = async () => {
  const secs = num("secs", 10);
  const g = groups();
  const a = mark(g);
  const rss = { daemon: [], workers: [] };
  const end = clock() + secs * 1000;
  for (let k = 0; k < 600 && clock() < end; k++) {
    rss.daemon.push(g.daemon.reduce((s, p) => s + (rssKb(p) || 0), 0));
    rss.workers.push(g.workers.reduce((s, p) => s + (rssKb(p) || 0), 0));
    await sleep(Math.max(0, Math.min(1000, end - clock())));
  }
  const cpu = cpuBetween(a, mark(g));
  const r = {
    secs, daemon_pid: g.daemon[0] || null, workers: g.workers.length,
    daemon_rss_mb: round(Math.max(...rss.daemon) / 1024, 1), daemon_cpu_pct: cpu.pct.daemon, daemon_fds: fdCount(g.daemon[0]),
    workers_rss_mb: round(Math.max(...rss.workers) / 1024, 1), workers_cpu_pct: cpu.pct.workers, cpu,
  };
  say(`idle ${secs}s: daemon ${r.daemon_rss_mb} MB RSS, ${r.daemon_cpu_pct}% CPU, ${r.daemon_fds} fds | ${r.workers} workers ${r.workers_rss_mb} MB, ${r.workers_cpu_pct}% | other ${cpu.other_pct}%`);
  return r;
};

// scale curve: hold --n idle Socket.IO sessions (raw Engine.IO v4 websockets: open, "40" connect,
// answer every ping) opened at --rate per second, then sample daemon RSS/CPU/fds for --secs. Source
// addresses rotate over 127.0.0.1-127.0.0.8 so 50 000 connections do not run out of ephemeral ports.
// A process holds at most --per-proc (15 000) of them: the rest are opened by helper processes
// (`hold-helper`, forked, same rate share), so the session count is not capped by one process's
// descriptor limit.
async function openSessions(n, rate, deadline, offset) {
  const WebSocket = require("ws");
  const socks = [];
  const st = { open: 0, failed: 0, errors: {} };
  const t0 = clock();
  for (let i = 0; i < n && clock() < deadline; i++) {
    const due = t0 + (i / rate) * 1000;
    if (due > clock()) await sleep(due - clock());
    const ws = new WebSocket(`ws://${HOST}:${PORT}/socket.io/?EIO=4&transport=websocket`, { localAddress: `127.0.0.${1 + ((i + offset) % 8)}`, perMessageDeflate: false });
    ws.on("message", (d) => {
      const m = d.toString();
      if (m[0] === "0") ws.send("40");
      else if (m.startsWith("40")) st.open++;
      else if (m === "2") ws.send("3");
    });
    ws.on("error", (e) => { st.failed++; bump(st.errors, e.code || e.message); });
    socks.push(ws);
  }
  while (st.open + st.failed < socks.length && clock() < deadline) await sleep(100);
  const late = socks.length - st.open - st.failed; // neither open nor failed by the deadline
  if (late > 0) { st.failed += late; bump(st.errors, "not-open-by-deadline", late); }
  return { socks, st };
}

cmds["hold-helper"] = async () => {
  const deadline = clock() + num("max-secs", 60) * 1000;
  const { socks, st } = await openSessions(num("n", 0), num("rate", 1000), deadline, num("offset", 0));
  process.send({ open: st.open, failed: st.failed, errors: st.errors });
  // hold until the parent says so (or goes away)
  await new Promise((r) => { process.on("message", r); process.on("disconnect", r); });
  for (const ws of socks) ws.terminate();
  return { open: st.open, failed: st.failed };
};

cmds.hold = async () => {
  const { fork } = require("child_process");
  const n = Math.min(num("n", 1000), 60000), rate = num("rate", 2000), secs = num("secs", 5);
  const per = Math.max(1000, num("per-proc", 15000));
  const g = groups();
  const base = mark(g);
  const rss0 = g.daemon.reduce((s, p) => s + (rssKb(p) || 0), 0);
  const maxSecs = num("max-secs", 60);
  const deadline = clock() + maxSecs * 1000;
  const t0 = clock();
  const mine = Math.min(n, per);
  const helpers = [];
  for (let off = mine; off < n; off += per) {
    const k = Math.min(per, n - off);
    const child = fork(__filename, ["hold-helper", "--port", String(PORT), "--n", String(k), "--rate", String((rate * k) / n),
      "--max-secs", String(maxSecs), "--offset", String(off), "--cap-secs", String(maxSecs + secs + 30)], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    helpers.push({ child, done: new Promise((r) => { child.once("message", r); child.once("exit", () => r({ open: 0, failed: k })); }) });
  }
  const { socks, st } = await openSessions(mine, (rate * mine) / n, deadline, 0);
  let open = st.open, failed = st.failed;
  const errors = { ...st.errors };
  for (const h of helpers) { const r = await h.done; open += r.open; failed += r.failed; for (const [k, v] of Object.entries(r.errors || {})) bump(errors, k, v); }
  const opened_s = (clock() - t0) / 1000;
  const a = mark(g);
  const rss = [];
  const end = clock() + secs * 1000;
  while (clock() < end) { rss.push(g.daemon.reduce((s, p) => s + (rssKb(p) || 0), 0)); await sleep(500); }
  const idle = cpuBetween(a, mark(g));
  const opening = cpuBetween(base, a);
  const r = {
    n, open, failed, errors, processes: 1 + helpers.length, opened_s: round(opened_s, 1), daemon_rss_mb_before: round(rss0 / 1024, 1),
    daemon_rss_mb: round(Math.max(...rss) / 1024, 1), daemon_rss_mb_end: round(rss[rss.length - 1] / 1024, 1), daemon_fds: fdCount(g.daemon[0]),
    daemon_cpu_s_per_1k_opened: per1k(opening.cpu_s.daemon, open), daemon_idle_cpu_pct: idle.pct.daemon, cpu: idle,
    workers_rss_mb: round(g.workers.reduce((s, p) => s + (rssKb(p) || 0), 0) / 1024, 1),
  };
  for (const ws of socks) ws.terminate();
  for (const h of helpers) { try { h.child.send("exit"); } catch (_) { h.child.kill(); } }
  say(`hold ${n}: ${open} open (${failed} failed) in ${r.opened_s}s over ${r.processes} processes ${JSON.stringify(errors)}; daemon RSS ${r.daemon_rss_mb_before} -> ${r.daemon_rss_mb} MB, ${r.daemon_fds} fds, idle CPU ${r.daemon_idle_cpu_pct}%, cpu-s/1k opened ${r.daemon_cpu_s_per_1k_opened}`);
  return r;
};

// timed runs of a command (fallback when hyperfine is not installed): --runs N --warmup W -- cmd args
cmds.timeit = async () => {
  const runs = Math.min(num("runs", 10), 50), warm = Math.min(num("warmup", 0), 10);
  const times = [];
  let failures = 0;
  for (let i = 0; i < warm + runs; i++) {
    const t0 = clock();
    const r = spawnSync(opt.rest[0], opt.rest.slice(1), { stdio: "ignore", timeout: 60000 });
    if (i >= warm) { times.push(clock() - t0); if (r.status !== 0) failures++; }
  }
  const s = summary(times);
  say(`timeit ${opt.rest.join(" ")}: median ${s.p50} ms (${runs} runs, ${failures} failed)`);
  return { command: opt.rest.join(" "), median_ms: s.p50, min_ms: round(Math.min(...times)), max_ms: s.max, times_ms: times.map((t) => round(t)), runs, failures };
};

// row 3: new sessions (default transports: polling handshake, then websocket upgrade), --concurrency in flight
cmds.sessions = async () => {
  const n = num("n", 1000), conc = num("concurrency", 20), maxMs = num("max-secs", 40) * 1000;
  trace.on = true; trace.reset();
  const g = groups();
  const c0 = readCounters();
  const connectMs = [], upgradeMs = [], errors = {}, byPid = {};
  let started = 0, finished = 0, ok = 0;
  const t0 = clock();
  const a = mark(g);
  await new Promise((allDone) => {
    const next = () => {
      if (started >= n || clock() - t0 > maxMs) { if (finished >= started) allDone(); return; }
      started++;
      const ts = clock();
      const s = client({ reconnection: false, timeout: 10000 });
      let over = false;
      const end = (err) => {
        if (over) return;
        over = true;
        clearTimeout(guard);
        if (err) bump(errors, err); else ok++;
        s.disconnect();
        finished++;
        setImmediate(next);
      };
      const guard = setTimeout(() => end("session-timeout"), 15000);
      s.on("connect_error", (e) => end("connect_error:" + e.message));
      s.on("disconnect", (why) => end("disconnect:" + why));
      s.on("connect", () => {
        connectMs.push(clock() - ts);
        const engine = s.io.engine;
        const whoami = async () => {
          const r = await ask(s, "whoami", undefined, 5000);
          if (r.err) return end("whoami:" + r.err);
          bump(byPid, r.res.pid);
          end(null);
        };
        if (engine.transport.name === "websocket") return whoami();
        const to = setTimeout(() => end("upgrade-timeout"), 5000);
        engine.once("upgrade", () => { clearTimeout(to); upgradeMs.push(clock() - ts); whoami(); });
        engine.once("upgradeError", (e) => { clearTimeout(to); end("upgrade-error:" + e.message); });
      });
    };
    for (let i = 0; i < Math.min(n, conc); i++) next();
  });
  const cpu = cpuBetween(a, mark(g));
  const wall = (clock() - t0) / 1000;
  await sleep(700); // worker counter files are rewritten every 500 ms
  const w = counterDelta(c0, readCounters());
  const t = traceReport();
  trace.on = false;
  const r = {
    n, concurrency: conc, started, ok, failed: started - ok, errors, wall_s: round(wall), sessions_per_s: round(ok / wall, 1),
    connect_ms: summary(connectMs), upgrade_ms: summary(upgradeMs), sessions_by_pid: byPid,
    sticky_violations: t.sticky_violations, session_id_unknown: w.conn_errors["1"] || 0, http: t, workers_seen: w, cpu,
    daemon_cpu_s_per_1k: per1k(cpu.cpu_s.daemon, ok), workers_cpu_s_per_1k: per1k(cpu.cpu_s.workers, ok), lg_cpu_s_per_1k: per1k(cpu.cpu_s.lg, ok),
    aux_cpu_s_per_1k: per1k(cpu.cpu_s.aux, ok),
  };
  say(`sessions: ${ok}/${started} in ${r.wall_s}s = ${r.sessions_per_s}/s, connect p50 ${r.connect_ms.p50} p99 ${r.connect_ms.p99} ms, failed ${r.failed} ${JSON.stringify(errors)}, ` +
    `sticky violations ${r.sticky_violations}, unknown sid ${r.session_id_unknown}; cpu-s/1k daemon ${r.daemon_cpu_s_per_1k} workers ${r.workers_cpu_s_per_1k} lg ${r.lg_cpu_s_per_1k}; other ${cpu.other_pct}%`);
  return r;
};

// row 4: polling-only clients looping an acked echo
cmds.polling = async () => {
  const nClients = num("clients", 20), secs = num("secs", 10), payload = "x".repeat(num("payload", 16));
  const g = groups();
  trace.on = true; trace.reset();
  const socks = [], connectErrors = {};
  await Promise.all(Array.from({ length: nClients }, async (_, i) => {
    await sleep(i * 5);
    const s = client({ reconnection: false, transports: ["polling"], timeout: 10000 });
    const e = await connected(s, 10000);
    if (e) { bump(connectErrors, e); s.disconnect(); } else socks.push(s);
  }));
  trace.reset();
  const c0 = readCounters();
  const rtt = [], echoErrors = {}, drops = {};
  let running = true;
  const a = mark(g);
  const loops = socks.map(async (s) => {
    s.on("disconnect", (why) => running && bump(drops, why));
    for (let k = 0; running && s.connected && k < 1e6; k++) {
      const ts = clock();
      const r = await ask(s, "echo", payload, 5000);
      if (r.err) bump(echoErrors, r.err);
      else if (r.res !== payload) bump(echoErrors, "corrupted");
      else if (running) rtt.push(clock() - ts);
    }
  });
  await sleep(secs * 1000);
  running = false;
  const cpu = cpuBetween(a, mark(g));
  const t = traceReport();
  await Promise.race([Promise.all(loops), sleep(6000)]);
  for (const s of socks) s.disconnect();
  await sleep(700);
  const w = counterDelta(c0, readCounters());
  trace.on = false;
  const wall = cpu.wall_s;
  const r = {
    clients: nClients, connected: socks.length, connect_errors: connectErrors, secs, requests: t.requests, req_per_s: round(t.requests / wall, 1),
    failed_requests: t.failed, echoes_per_s: round(rtt.length / wall, 1), echo_rtt_ms: summary(rtt), echo_errors: echoErrors, drops,
    post_ms: t.kinds.post ? t.kinds.post.lat_ms : null, get_ms: t.kinds.get ? t.kinds.get.lat_ms : null,
    sticky_violations: t.sticky_violations, session_id_unknown: w.conn_errors["1"] || 0, http: t, workers_seen: w, cpu,
    daemon_cpu_s_per_1k: per1k(cpu.cpu_s.daemon, t.requests), workers_cpu_s_per_1k: per1k(cpu.cpu_s.workers, t.requests),
    aux_cpu_s_per_1k: per1k(cpu.cpu_s.aux, t.requests),
  };
  say(`polling: ${r.req_per_s} req/s, echo p50 ${r.echo_rtt_ms.p50} p99 ${r.echo_rtt_ms.p99} ms, failed ${r.failed_requests}, sticky violations ${r.sticky_violations}; ` +
    `cpu-s/1k req daemon ${r.daemon_cpu_s_per_1k}; CPU% daemon ${cpu.pct.daemon} workers ${cpu.pct.workers} lg ${cpu.pct.lg} other ${cpu.other_pct}`);
  return r;
};

// rows 5 and 8 without wrk: --conns parallel loops, one new TCP connection per GET, for --secs
cmds.plain = async () => {
  const secs = num("secs", 8), conns = num("conns", 16), p = str("path", "/bench/ping");
  const g = groups();
  const c0 = readCounters();
  const lat = [], errs = {}, byPid = {};
  let running = true, okN = 0;
  const a = mark(g);
  const loops = Array.from({ length: conns }, async () => {
    for (let k = 0; running && k < 1e7; k++) {
      const r = await get(PORT, p, 3000);
      if (!running) break;
      if (r.status === 200) { okN++; lat.push(r.ms); if (r.pid) bump(byPid, r.pid); } else bump(errs, r.err || r.status);
    }
  });
  await sleep(secs * 1000);
  running = false;
  const cpu = cpuBetween(a, mark(g));
  await Promise.race([Promise.all(loops), sleep(4000)]);
  await sleep(700);
  const w = counterDelta(c0, readCounters());
  const counts = Object.values(byPid), total = counts.reduce((s, x) => s + x, 0);
  const r = {
    generator: "node", secs, conns, requests: okN, req_per_s: round(okN / cpu.wall_s, 1), latency_ms: summary(lat), errors: errs,
    busiest_worker_share: total ? round(Math.max(...counts) / total, 3) : null, by_pid: byPid, workers_seen: w, cpu,
    daemon_cpu_s_per_1k: per1k(cpu.cpu_s.daemon, okN), workers_cpu_s_per_1k: per1k(cpu.cpu_s.workers, okN),
  };
  say(`plain: ${r.req_per_s} req/s, p50 ${r.latency_ms.p50} p99 ${r.latency_ms.p99} ms, errors ${JSON.stringify(errs)}, busiest worker ${r.busiest_worker_share}; cpu-s/1k daemon ${r.daemon_cpu_s_per_1k}; other ${cpu.other_pct}%`);
  return r;
};

// rows 5 and 8 with wrk: CPU deltas around an external command (wrk's own CPU is read before it is reaped)
cmds.wrk = async () => {
  const g = groups();
  const c0 = readCounters();
  const a = mark(g);
  const child = spawn(opt.rest[0], opt.rest.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (out += d));
  let genTicks = 0;
  const iv = setInterval(() => { const t = ticks(child.pid); if (t != null) genTicks = t; }, 50);
  const code = await new Promise((r) => child.on("exit", r));
  clearInterval(iv);
  const cpu = cpuBetween(a, mark(g));
  cpu.cpu_s.wrk = round(genTicks / TCK);
  await sleep(700);
  const w = counterDelta(c0, readCounters());
  const n = Number((/(\d+) requests in/.exec(out) || [])[1] || 0);
  const ms = (re) => { const m = re.exec(out); if (!m) return null; const v = Number(m[1]); return round(m[2] === "us" ? v / 1000 : m[2] === "s" ? v * 1000 : v); };
  const socketErrors = /Socket errors: (.*)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const r = {
    generator: "wrk", code, requests: n, req_per_s: round(Number((/Requests\/sec:\s+([\d.]+)/.exec(out) || [])[1]) || 0, 1),
    latency_ms: { p50: ms(/\s50%\s+([\d.]+)(us|ms|s)/), p99: ms(/\s99%\s+([\d.]+)(us|ms|s)/) },
    errors: { socket: socketErrors ? socketErrors[1] : null, non_2xx: non2xx ? Number(non2xx[1]) : 0 },
    busiest_worker_share: w.busiest_worker_share, workers_seen: w, cpu,
    daemon_cpu_s_per_1k: per1k(cpu.cpu_s.daemon, n), workers_cpu_s_per_1k: per1k(cpu.cpu_s.workers, n), wrk_output: out,
  };
  say(`wrk: ${r.req_per_s} req/s, p50 ${r.latency_ms.p50} p99 ${r.latency_ms.p99} ms, errors ${JSON.stringify(r.errors)}, busiest worker ${r.busiest_worker_share}; cpu-s/1k daemon ${r.daemon_cpu_s_per_1k}; other ${cpu.other_pct}%`);
  return r;
};

// row 6: io.emit on one worker, relayed by the daemon to the other worker's clients
cmds.broadcast = async () => {
  const K = num("clients", 10), M = num("burst", 10000), rate = num("rate", 500), L = num("paced", 1500);
  const kind = str("kind", "json"), size = num("size", kind === "binary" ? 1024 : 0);
  const g = groups();
  const socks = [], connectFailures = {};
  for (let i = 0; i < K; i++) { // one at a time, so least-connection balancers can spread them
    // a connection that hangs or fails is retried (up to 3 times) and counted: row 6 measures the relay
    let s = null;
    for (let attempt = 0; attempt < 3 && !s; attempt++) {
      const c = client({ reconnection: false, transports: ["websocket"], timeout: 5000 });
      const e = await connected(c, 5000);
      const r = e ? null : await ask(c, "whoami", undefined, 5000);
      if (e || r.err) { bump(connectFailures, e || "whoami:" + r.err); c.disconnect(); continue; }
      c.wpid = r.res.pid;
      s = c;
    }
    if (!s) throw new Error("broadcast: client connect failed 3 times: " + JSON.stringify(connectFailures));
    socks.push(s);
  }
  const byPid = {};
  for (const s of socks) (byPid[s.wpid] = byPid[s.wpid] || []).push(s);
  const wp = Object.keys(byPid).map(Number);
  if (wp.length < 2) throw new Error("broadcast: all clients landed on one worker: " + wp.join(","));
  const emitter = wp[0];
  const trigger = byPid[emitter][0];
  let phase = null;
  for (const s of socks) {
    s.on("b", (m) => {
      const t = clock();
      const ph = phase;
      if (!ph) return;
      const st = ph.got.get(s);
      st.n++;
      st.last = t;
      if (kind === "binary" && !(m.buf && m.buf.length === size)) ph.corrupt++;
      if (ph.lat) (s.wpid === emitter ? ph.same : ph.other).push(t - m.t);
      if (m.i === 0) ph.first = m.t;
      if (st.n === ph.n && ++ph.complete === socks.length) ph.resolve();
    });
  }
  const run = async (n, r, lat, ms) => {
    const ph = { n, got: new Map(socks.map((s) => [s, { n: 0, last: 0 }])), complete: 0, same: [], other: [], lat, corrupt: 0, first: null };
    const all = new Promise((res) => (ph.resolve = res));
    phase = ph;
    const t0 = clock();
    const ack = ask(trigger, "bcast", { n, kind, size, rate: r }, ms);
    const timedOut = await Promise.race([all.then(() => false), sleep(ms).then(() => true)]);
    await ack;
    phase = null;
    let lost = 0, lastSame = 0, lastOther = 0;
    for (const s of socks) {
      const st = ph.got.get(s);
      lost += n - st.n;
      if (s.wpid === emitter) lastSame = Math.max(lastSame, st.last); else lastOther = Math.max(lastOther, st.last);
    }
    return { ph, timedOut, lost, start: ph.first || t0, lastSame, lastOther };
  };
  await run(Math.min(500, M), 0, false, 15000); // warm-up
  let a = mark(g);
  const burst = await run(M, 0, false, num("burst-timeout-secs", 25) * 1000);
  const cpuBurst = cpuBetween(a, mark(g));
  a = mark(g);
  const paced = await run(L, rate, true, (L / rate) * 1000 + 10000);
  const cpuPaced = cpuBetween(a, mark(g));
  for (const s of socks) s.disconnect();
  const otherS = (burst.lastOther - burst.start) / 1000, sameS = (burst.lastSame - burst.start) / 1000;
  const r = {
    kind, size, clients: K, connect_failures: connectFailures, clients_by_pid: Object.fromEntries(Object.entries(byPid).map(([p, v]) => [p, v.length])),
    burst: {
      n: M, timed_out: burst.timedOut, lost: burst.lost, corrupt: burst.ph.corrupt,
      relayed_msgs_per_s: round(M / otherS, 1), same_worker_msgs_per_s: round(M / sameS, 1), cpu: cpuBurst,
      daemon_cpu_s_per_1k: per1k(cpuBurst.cpu_s.daemon, M), workers_cpu_s_per_1k: per1k(cpuBurst.cpu_s.workers, M),
      aux_cpu_s_per_1k: per1k(cpuBurst.cpu_s.aux, M),
    },
    paced: {
      n: L, rate, timed_out: paced.timedOut, lost: paced.lost, corrupt: paced.ph.corrupt,
      other_worker_ms: summary(paced.ph.other), same_worker_ms: summary(paced.ph.same), cpu: cpuPaced,
      daemon_cpu_s_per_1k: per1k(cpuPaced.cpu_s.daemon, L), aux_cpu_s_per_1k: per1k(cpuPaced.cpu_s.aux, L),
    },
  };
  say(`broadcast ${kind}${size ? " " + size + "B" : ""}: relayed ${r.burst.relayed_msgs_per_s} msg/s (same worker ${r.burst.same_worker_msgs_per_s}), lost ${burst.lost}+${paced.lost}; ` +
    `paced ${rate}/s cross-worker p50 ${r.paced.other_worker_ms.p50} p99 ${r.paced.other_worker_ms.p99} ms, same-worker p50 ${r.paced.same_worker_ms.p50} p99 ${r.paced.same_worker_ms.p99}; ` +
    `cpu-s/1k relayed daemon burst ${r.burst.daemon_cpu_s_per_1k} paced ${r.paced.daemon_cpu_s_per_1k}; other ${cpuBurst.other_pct}%`);
  return r;
};

// row 7: long-lived clients + new sessions + an action (reload all | SIGKILL a worker) at --at seconds
cmds.churn = async () => {
  const secs = num("secs", 20), at = num("at", 5) * 1000, action = str("action", "reload");
  const nPoll = num("polling-clients", 10), nWs = num("ws-clients", 10), echoEvery = num("echo-ms", 100), newPerS = num("new-per-s", 10);
  const initial = pids("workers");
  if (!initial.length) throw new Error("churn: worker pids unknown (--workers empty)");
  trace.on = true; trace.reset(); trace.keepEvents = true;
  const ev = { drops: 0, reconnects: 0, reconnect_ms: [], echo_ok: 0, echo_err: {}, new_ok: 0, new_err: {} };
  let running = true;
  const t0 = clock();
  const live = [];
  const open = (transports) => {
    const s = client({ transports, timeout: 5000, reconnectionDelay: 1000, reconnectionDelayMax: 5000 });
    let lostAt = null;
    s.on("disconnect", () => { if (running) { ev.drops++; lostAt = clock(); } });
    s.on("connect", () => { if (lostAt != null) { ev.reconnects++; ev.reconnect_ms.push(clock() - lostAt); lostAt = null; } });
    live.push(s);
    return s;
  };
  for (let i = 0; i < Math.max(nPoll, nWs); i++) {
    if (i < nPoll) await connected(open(["polling"]), 3000);
    if (i < nWs) await connected(open(undefined), 3000);
    await sleep(20);
  }
  const tReady = clock();
  const echoLoops = live.map(async (s) => {
    for (let k = 0; running && k < 1e6; k++) {
      await sleep(echoEvery);
      if (!s.connected) continue;
      const r = await ask(s, "echo", "e", 3000);
      if (!running) break;
      if (r.err) bump(ev.echo_err, r.err); else ev.echo_ok++;
    }
  });
  const newLoop = (async () => {
    for (let k = 0; running && k < 1e6; k++) {
      const ts = clock();
      (async () => {
        const s = client({ reconnection: false, timeout: 5000 });
        const e = await connected(s, 6000);
        const r = e ? null : await ask(s, "whoami", undefined, 3000);
        if (e) bump(ev.new_err, e); else if (r.err) bump(ev.new_err, r.err); else ev.new_ok++;
        s.disconnect();
      })();
      await sleep(Math.max(0, 1000 / newPerS - (clock() - ts)));
    }
  })();
  const result = { action };
  let tAct = null;
  const acting = (async () => {
    await sleep(Math.max(0, at - (clock() - tReady)));
    tAct = clock();
    if (action === "reload") {
      const child = spawn(str("pm2"), ["reload", "all"], { stdio: "ignore" });
      result.cli_exit = await new Promise((r) => child.on("exit", r));
      result.reload_s = round((clock() - tAct) / 1000);
    } else if (action === "kill") {
      const victim = num("victim", initial[0]);
      result.victim = victim;
      try { process.kill(victim, "SIGKILL"); } catch (e) { result.kill_error = e.code; }
      // time until a response comes from a worker pid that was not there before
      for (let k = 0; k < 100000 && clock() - tAct < secs * 1000; k++) {
        const e = trace.events.find((x) => x.t > tAct && x.ok && x.pid && !initial.includes(Number(x.pid)));
        if (e) { result.serving_again_s = round((e.t - tAct) / 1000); result.new_pid = Number(e.pid); break; }
        await sleep(20);
      }
    }
  })();
  await sleep(Math.max(0, secs * 1000 - (clock() - tReady)));
  running = false;
  await Promise.race([acting, sleep(30000)]);
  await Promise.race([Promise.all(echoLoops), sleep(4000)]);
  await Promise.race([newLoop, sleep(2000)]);
  const stuck = trace.stuck(4000);
  for (const s of live) s.disconnect();
  trace.on = false;
  // a failed request of a session owned by a replaced/killed worker is expected (its state is gone);
  // any other failed request (new sessions, sessions on surviving workers) is a zero-downtime failure
  const gone = new Set(action === "kill" ? [String(result.victim)] : initial.map(String));
  const owner = new Map();
  for (const e of trace.events) if (e.sid && e.pid && e.ok && !owner.has(e.sid)) owner.set(e.sid, e.pid);
  for (const r of stuck) trace.events.push({ t: r.t0, kind: r.kind, sid: r.sid, ok: false, err: "no-response" });
  let expected = 0, failed = 0;
  const failedKinds = {};
  for (const e of trace.events) {
    if (e.ok) continue;
    if (e.sid && gone.has(String(owner.get(e.sid)))) { expected++; continue; }
    if (tAct && e.t < tAct) continue;
    failed++;
    bump(failedKinds, `${e.kind}:${e.status || e.err}`);
  }
  if (action === "kill" && result.serving_again_s == null) result.serving_again_s = null;
  const r = {
    ...result, secs, requests: trace.events.length, failed_requests: failed, failed_kinds: failedKinds, failed_requests_of_dropped_sessions: expected,
    dropped_sessions: ev.drops, reconnects: ev.reconnects, reconnect_ms: summary(ev.reconnect_ms),
    new_sessions_ok: ev.new_ok, new_session_failures: Object.values(ev.new_err).reduce((s, x) => s + x, 0), new_session_errors: ev.new_err,
    echo_ok: ev.echo_ok, echo_errors: ev.echo_err, elapsed_s: round((clock() - t0) / 1000),
  };
  trace.events = [];
  say(`churn ${action}: ${r.requests} requests, failed ${failed} ${JSON.stringify(failedKinds)} (+${expected} of dropped sessions), dropped sessions ${r.dropped_sessions}, ` +
    `new sessions ok ${r.new_sessions_ok} failed ${r.new_session_failures}; ${action === "reload" ? "reload " + r.reload_s + " s" : "serving again " + r.serving_again_s + " s"}`);
  return r;
};

// ------------------------------------------------------------------------------------------- main
(async () => {
  const f = cmds[opt._[0]];
  if (!f) { console.error(`usage: lg.js <${Object.keys(cmds).join("|")}> [--options]`); process.exit(2); }
  setTimeout(() => { say("time cap reached"); process.exit(3); }, num("cap-secs", 90) * 1000).unref();
  try {
    const r = await f();
    process.stdout.write(JSON.stringify(r) + "\n");
    process.exit(0);
  } catch (e) {
    say("error: " + ((e && e.stack) || e));
    process.stdout.write(JSON.stringify({ error: String((e && e.message) || e) }) + "\n");
    process.exit(1);
  }
})();
