#!/usr/bin/env node
// soak.js - a long run of Socket.IO sessions through the sticky port at a bounded rate, with the daemon's
// RSS and open descriptors sampled throughout (driven by bench/soak/run.sh).
//
//   node soak.js --port PM2_PORT --daemon PID [--n 1000000] [--rate 400] [--conc 200] [--max-secs 3600]
//                [--polling-every 10] [--sample-secs 10]
//
// Each session is a real Socket.IO connection to the seed app, opened the way lg.js's `hold` mode does it
// (a raw Engine.IO v4 websocket: open packet, "40" connect, the server's "40{sid}"), then closed; every
// --polling-every-th session instead takes the long-polling path that sticky routing exists for (handshake
// GET, "40" by POST with the sid, the connect reply by GET with the sid, close by POST), so the daemon's
// session table is exercised too. At most --conc sessions are in flight, started at most --rate per second;
// the run ends after --n sessions or --max-secs, whichever first. One JSON object on stdout: sessions
// ok/failed (by error), the rate reached, and the daemon's samples (t, sessions done, RSS kB, fds).
"use strict";

const http = require("http");
const fs = require("fs");
const path = require("path");
const WebSocket = require(path.join(__dirname, "..", "node_modules", "ws"));

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) continue;
  const k = argv[i].slice(2), v = argv[i + 1];
  if (v === undefined || v.startsWith("--")) opt[k] = "1";
  else { opt[k] = v; i++; }
}
const num = (k, d) => (opt[k] === undefined ? d : Number(opt[k]));
const PORT = num("port", 0), DAEMON = num("daemon", 0);
const N = num("n", 1_000_000), RATE = num("rate", 400), CONC = num("conc", 200);
const MAX_MS = num("max-secs", 3600) * 1000, POLL_EVERY = num("polling-every", 10), SAMPLE_MS = num("sample-secs", 10) * 1000;
if (!PORT || !DAEMON) { console.error("usage: soak.js --port PORT --daemon PID [...]"); process.exit(2); }
const HOST = "127.0.0.1";
const now = () => Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (s) => process.stderr.write(`[soak ${new Date().toISOString().slice(11, 19)}] ${s}\n`);

const rssKb = (pid) => { try { return Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))[1]); } catch (_) { return null; } };
const fds = (pid) => { try { return fs.readdirSync(`/proc/${pid}/fd`).length; } catch (_) { return null; } };

let ok = 0, failed = 0, wsOk = 0, pollOk = 0;
const errors = {};
const fail = (e) => { failed++; errors[e] = (errors[e] || 0) + 1; };

function wsSession(i) {
  return new Promise((resolve) => {
    let done = false;
    const ws = new WebSocket(`ws://${HOST}:${PORT}/socket.io/?EIO=4&transport=websocket`, { localAddress: `127.0.0.${1 + (i % 8)}`, perMessageDeflate: false });
    const end = (err) => {
      if (done) return;
      done = true;
      clearTimeout(guard);
      if (err) fail(err); else { ok++; wsOk++; }
      ws.terminate();
      resolve();
    };
    const guard = setTimeout(() => end("ws-timeout"), 15000);
    ws.on("message", (d) => {
      const m = d.toString();
      if (m[0] === "0") ws.send("40");
      else if (m.startsWith("40")) { ws.close(); end(null); }
      else if (m === "2") ws.send("3");
    });
    ws.on("error", (e) => end("ws-" + (e.code || "error")));
    ws.on("close", () => end("ws-closed-early"));
  });
}

function req(method, p, body) {
  return new Promise((resolve) => {
    const r = http.request({ host: HOST, port: PORT, path: p, method, agent: false, headers: body ? { "content-type": "text/plain;charset=UTF-8" } : {} }, (res) => {
      let b = "";
      res.setEncoding("utf8");
      res.on("data", (d) => { b += d; });
      res.on("end", () => resolve({ status: res.statusCode, body: b }));
      res.on("error", (e) => resolve({ err: e.code || "response-error" }));
    });
    r.setTimeout(15000, () => r.destroy(new Error("timeout")));
    r.on("error", (e) => resolve({ err: e.code || e.message }));
    r.end(body);
  });
}

async function pollingSession() {
  const base = "/socket.io/?EIO=4&transport=polling";
  const h = await req("GET", base);
  if (h.err || h.status !== 200) return fail("poll-handshake-" + (h.err || h.status));
  let sid;
  try { sid = JSON.parse(h.body.slice(1)).sid; } catch (_) { return fail("poll-handshake-body"); }
  const q = `${base}&sid=${encodeURIComponent(sid)}`;
  const c = await req("POST", q, "40");
  if (c.err || c.status !== 200) return fail("poll-connect-" + (c.err || c.status));
  const g = await req("GET", q);
  if (g.err || g.status !== 200 || !g.body.includes("40")) return fail("poll-reply-" + (g.err || g.status));
  await req("POST", q, "1"); // close; its answer does not matter
  ok++; pollOk++;
}

(async () => {
  const t0 = now();
  const samples = [];
  const sample = () => samples.push({ t: Math.round((now() - t0) / 1000), done: ok + failed, rss_kb: rssKb(DAEMON), fds: fds(DAEMON) });
  sample();
  const timer = setInterval(() => {
    sample();
    const s = samples[samples.length - 1];
    say(`${s.done} sessions (${failed} failed), ${Math.round(s.done / Math.max(1, s.t))}/s; daemon RSS ${s.rss_kb} kB, fds ${s.fds}`);
  }, SAMPLE_MS);
  let started = 0, inflight = 0;
  const slots = [];
  const wake = () => { const f = slots.shift(); if (f) f(); };
  while (started < N && now() - t0 < MAX_MS) {
    if (rssKb(DAEMON) === null) { fail("daemon-gone"); break; }
    const due = t0 + (started / RATE) * 1000;
    if (due > now()) await sleep(due - now());
    while (inflight >= CONC) await new Promise((r) => slots.push(r));
    const i = started++;
    inflight++;
    const p = POLL_EVERY > 0 && i % POLL_EVERY === 0 ? pollingSession() : wsSession(i);
    p.finally(() => { inflight--; wake(); });
  }
  const drainUntil = now() + 20000;
  while (inflight > 0 && now() < drainUntil) await sleep(100);
  clearInterval(timer);
  await sleep(2000); // the daemon frees what the last sessions held
  sample();
  const wall = (now() - t0) / 1000;
  const rss = samples.map((s) => s.rss_kb).filter((x) => x != null);
  const fd = samples.map((s) => s.fds).filter((x) => x != null);
  // "Flat": compare the first sample taken after 10% of the run (warm-up) with the last one.
  const warm = samples.find((s) => s.done >= (ok + failed) * 0.1) || samples[0];
  const last = samples[samples.length - 1];
  const r = {
    n: N, rate_asked: RATE, concurrency: CONC, started, ok, failed, errors, ws_sessions: wsOk, polling_sessions: pollOk,
    wall_s: Math.round(wall), sessions_per_s: Math.round((ok + failed) / wall),
    daemon_rss_kb: { first: rss[0], after_warmup: warm.rss_kb, last: last.rss_kb, min: Math.min(...rss), max: Math.max(...rss) },
    daemon_fds: { first: fd[0], after_warmup: warm.fds, last: last.fds, min: Math.min(...fd), max: Math.max(...fd) },
    samples,
  };
  say(`done: ${ok} ok, ${failed} failed in ${r.wall_s}s (${r.sessions_per_s}/s); daemon RSS ${JSON.stringify(r.daemon_rss_kb)} kB, fds ${JSON.stringify(r.daemon_fds)}`);
  process.stdout.write(JSON.stringify(r) + "\n");
  process.exit(0);
})().catch((e) => { say("error: " + (e && e.stack || e)); process.exit(1); });
