#!/usr/bin/env node
// chaos.js - faults under load against one running process manager (driven by bench/chaos/run.sh).
//
//   node chaos.js --pm2 BIN --port PM2_PORT [--secs 90] [--seed 1] [--workers 2] [--clients 20]
//                 [--new-per-s 4] [--http-conns 3] [--fault-every 7] [--stop-ms 3000] [--no-daemon-kill]
//
// PM2_HOME comes from the environment; the app (bench/app: the seed Socket.IO worker plus probes) must be
// online and saved (`pm2 save`) before this starts. Load held for --secs, on 127.0.0.1 only:
//   - --clients long-lived Socket.IO clients (half polling only, half upgraded to websocket), reconnecting,
//     each asking `echo` every 250 ms (ack timeout 10 s, longer than a SIGSTOP);
//   - --new-per-s new sessions a second (handshake, `whoami`, disconnect);
//   - --http-conns loops of plain `GET /bench/ping` through the sticky port, one TCP connection each.
// Faults, one every --fault-every s in a seeded random order: kill -9 of a random worker, SIGSTOP of a random
// worker for --stop-ms then SIGCONT; and once, near the middle, kill -9 of the daemon, after which the next
// `pm2 ls` must bring the apps back (if it does not within 20 s, `pm2 resurrect` is run and that is reported).
//
// Accounting (one JSON object on stdout):
//   sessions_lost_expected   long-lived sessions dropped whose worker was killed (or died with the daemon)
//   sessions_lost_unexpected any other dropped session                                  (target 0)
//   echo_failures            echo acks that failed on a session that was not dropped    (target 0)
//   new_session_failures / http_failures, split by when they happened: while the daemon was down (nothing
//   listens: unavoidable), while a killed worker's connections were being cut (the request overlapped a
//   worker kill by < 2 s), and "other"                                                   (target: other 0)
//   cli_failures             `pm2 jlist` calls (one per fault) that failed, outside the daemon's outage
"use strict";

const http = require("http");
const path = require("path");
const { spawn } = require("child_process");
const benchModules = path.join(__dirname, "..", "node_modules");
const { io } = require(path.join(benchModules, "socket.io-client"));

const argv = process.argv.slice(2);
const opt = {};
for (let i = 0; i < argv.length; i++) {
  if (!argv[i].startsWith("--")) continue;
  const k = argv[i].slice(2), v = argv[i + 1];
  if (v === undefined || v.startsWith("--")) opt[k] = "1";
  else { opt[k] = v; i++; }
}
const num = (k, d) => (opt[k] === undefined ? d : Number(opt[k]));
const PM2 = opt.pm2;
const PORT = num("port", 0);
const SECS = num("secs", 90);
const WORKERS = num("workers", 2);
const CLIENTS = num("clients", 20);
const NEW_PER_S = num("new-per-s", 4);
const HTTP_CONNS = num("http-conns", 3);
const FAULT_EVERY = num("fault-every", 7) * 1000;
const STOP_MS = num("stop-ms", 3000);
const DAEMON_KILL = !opt["no-daemon-kill"];
if (!PM2 || !PORT) { console.error("usage: chaos.js --pm2 BIN --port PORT [...]"); process.exit(2); }

const now = () => Date.now();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const say = (s) => process.stderr.write(`[chaos ${new Date().toISOString().slice(11, 19)}] ${s}\n`);
const bump = (o, k) => { o[k] = (o[k] || 0) + 1; };
// Seeded PRNG (mulberry32), so a run's fault sequence can be repeated.
let seed = num("seed", 1) >>> 0;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const pick = (a) => a[Math.floor(rand() * a.length)];

// Asynchronous, so the load keeps running while a command (or a daemon restore) takes its time.
function pm2(args, timeoutMs = 30000) {
  return new Promise((resolve) => {
    const c = spawn(PM2, args, { env: process.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "", err = "";
    c.stdout.on("data", (d) => { out += d; });
    c.stderr.on("data", (d) => { err += d; });
    const to = setTimeout(() => c.kill("SIGKILL"), timeoutMs);
    c.on("error", (e) => { clearTimeout(to); resolve({ code: null, out, err: err + String(e) }); });
    c.on("close", (code) => { clearTimeout(to); resolve({ code, out, err }); });
  });
}
async function onlineWorkers() {
  const r = await pm2(["jlist"], 15000);
  if (r.code !== 0) return null;
  try {
    const text = r.out.slice(r.out.indexOf("["));
    return JSON.parse(text).filter((p) => p.pm2_env.status === "online" && p.pid > 0).map((p) => p.pid);
  } catch (_) { return null; }
}
const alive = (pid) => { try { process.kill(pid, 0); return true; } catch (_) { return false; } };

// What happened when: killed worker pids, cut windows (a worker kill and 2 s after), daemon outages.
const killed = new Set();
const cuts = []; // [t0, t1]
const outages = []; // [t0, t1 | null]
const stopped = new Map(); // pid -> [t0, t1]
const inOutage = (a, b) => outages.some(([o0, o1]) => a <= (o1 ?? Infinity) && b >= o0);
const atCut = (a, b) => cuts.some(([c0, c1]) => a <= c1 && b >= c0);
const classify = (a, b) => (inOutage(a, b) ? "daemon_down" : atCut(a, b) ? "worker_kill" : "other");

const res = {
  secs: SECS, seed: num("seed", 1), faults: [], sessions_opened: 0, sessions_lost_expected: 0, sessions_lost_unexpected: 0,
  unexpected_losses: [], reconnects: 0, echo_ok: 0, echo_failures: 0, echo_failure_kinds: {},
  new_sessions_ok: 0, new_session_failures: { daemon_down: 0, worker_kill: 0, other: 0 }, new_session_errors: {},
  http_ok: 0, http_failures: { daemon_down: 0, worker_kill: 0, other: 0 }, http_errors: {},
  other_failures: [], cli_ok: 0, cli_failures: 0, daemon_recovery: null, workers_online_at_end: null,
};
let running = true;

function whoami(s, ms) {
  return new Promise((resolve) => s.timeout(ms).emit("whoami", (err, r) => resolve(err ? null : r && r.pid)));
}

// ---- long-lived sessions
function liveClient(i) {
  const s = io(`http://127.0.0.1:${PORT}`, {
    transports: i % 2 ? ["polling"] : ["polling", "websocket"],
    reconnectionDelay: 500, reconnectionDelayMax: 3000, timeout: 10000,
  });
  const st = { owner: null, connectedAt: null, sid: null };
  s.on("connect", async () => {
    res.sessions_opened++;
    if (st.connectedAt === -1) res.reconnects++;
    st.connectedAt = now(); st.sid = s.id;
    st.owner = await whoami(s, 10000);
  });
  s.on("disconnect", (reason) => {
    if (!running) return;
    const owner = st.owner;
    const lostAt = now();
    st.connectedAt = -1;
    // A polling client notices its worker's death at its next request: give the killer a moment to
    // record the kill before deciding.
    setTimeout(() => {
      if (owner && killed.has(owner)) res.sessions_lost_expected++;
      else {
        res.sessions_lost_unexpected++;
        if (res.unexpected_losses.length < 20) {
          res.unexpected_losses.push({ at_s: (lostAt - T0) / 1000, owner, reason, owner_alive: owner ? alive(owner) : null });
        }
      }
    }, 1500);
  });
  const loop = (async () => {
    for (let k = 0; running && k < 1e6; k++) {
      await sleep(250);
      if (!s.connected || !st.owner) continue;
      const sid = s.id;
      const t0 = now();
      const r = await new Promise((resolve) => s.timeout(10000).emit("echo", "e", (err) => resolve(err ? "ack-timeout" : null)));
      if (!running) break;
      if (!r) { res.echo_ok++; continue; }
      // An echo lost with its session (the session dropped meanwhile) is counted as the session's loss.
      if (s.id !== sid || !s.connected || killed.has(st.owner) || inOutage(t0, now())) continue;
      res.echo_failures++;
      bump(res.echo_failure_kinds, r);
    }
  })();
  return { s, loop };
}

// ---- new sessions
async function newSession() {
  const t0 = now();
  const s = io(`http://127.0.0.1:${PORT}`, { reconnection: false, timeout: 10000, forceNew: true });
  const err = await new Promise((resolve) => {
    const to = setTimeout(() => resolve("timeout"), 12000);
    s.once("connect", () => { clearTimeout(to); resolve(null); });
    s.once("connect_error", (e) => { clearTimeout(to); resolve("connect_error:" + e.message); });
  });
  const pid = err ? null : await whoami(s, 10000);
  s.disconnect();
  if (!err && pid) { res.new_sessions_ok++; return; }
  const e = err || "whoami-timeout";
  if (pid && killed.has(pid)) { res.new_session_failures.worker_kill++; return; }
  const kind = classify(t0, now());
  res.new_session_failures[kind]++;
  if (kind === "other") { bump(res.new_session_errors, e); noteOther("session", t0, e); }
}
function noteOther(what, t0, err) {
  if (res.other_failures.length < 30) res.other_failures.push({ what, at_s: (t0 - T0) / 1000, took_ms: now() - t0, err });
}

// ---- plain HTTP
function get() {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port: PORT, path: "/bench/ping", agent: false }, (r) => {
      r.resume();
      r.on("end", () => resolve(r.statusCode === 200 ? null : `status-${r.statusCode}`));
      r.on("error", (e) => resolve(e.code || "response-error"));
    });
    req.setTimeout(10000, () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve(e.code || e.message));
  });
}
async function httpLoop() {
  for (let k = 0; running && k < 1e6; k++) {
    const t0 = now();
    const e = await get();
    if (!e) res.http_ok++;
    else {
      const kind = classify(t0, now());
      res.http_failures[kind]++;
      if (kind === "other") { bump(res.http_errors, e); noteOther("http", t0, e); }
    }
    await sleep(Math.max(0, 50 - (now() - t0)));
  }
}

// ---- faults
async function recoverDaemon() {
  const t0 = now();
  const daemonPid = Number(require("fs").readFileSync(path.join(process.env.PM2_HOME, "pm2.pid"), "utf8"));
  const workers = (await onlineWorkers()) || [];
  for (const w of workers) killed.add(w);
  outages.push([t0, null]);
  process.kill(daemonPid, "SIGKILL");
  say(`kill -9 daemon ${daemonPid} (workers ${workers.join(",")})`);
  for (let i = 0; i < 100 && alive(daemonPid); i++) await sleep(50);
  // Every worker of the dead daemon exits with its channel; wait (bounded) so the outage is real.
  for (let i = 0; i < 100 && workers.some(alive); i++) await sleep(50);
  const rec = { daemon_pid: daemonPid, workers_before: workers.length, by_next_command: false };
  const first = await pm2(["ls"], 60000);
  rec.next_command_exit = first.code;
  rec.next_command_said = (first.out + first.err).split("\n").filter((l) => /restor|resurrect|crash|did not stop|dump/i.test(l)).slice(0, 3);
  const waitOnline = async (ms) => {
    const until = now() + ms;
    let w = null;
    while (now() < until) {
      w = await onlineWorkers();
      if (w && w.length >= WORKERS) break;
      await sleep(200);
    }
    return w;
  };
  let w = await waitOnline(20000);
  if (w && w.length >= WORKERS) rec.by_next_command = true;
  else {
    say("the next command did not bring the apps back: pm2 resurrect");
    const r = await pm2(["resurrect"], 60000);
    rec.resurrect_exit = r.code;
    w = await waitOnline(30000);
  }
  rec.workers_after = w ? w.length : 0;
  rec.recovery_s = (now() - t0) / 1000;
  outages[outages.length - 1][1] = now();
  rec.at_s = (t0 - T0) / 1000;
  res.daemon_recovery = rec;
  say(`daemon back: ${JSON.stringify(rec)}`);
}

async function fault(kind) {
  const workers = await onlineWorkers();
  if (workers === null) { if (!inOutage(now(), now())) res.cli_failures++; return; }
  res.cli_ok++;
  const candidates = workers.filter((p) => !stopped.has(p));
  if (!candidates.length) return;
  const victim = pick(candidates);
  const at = (now() - T0) / 1000;
  if (kind === "kill") {
    killed.add(victim);
    const t = now();
    cuts.push([t, t + 2000]);
    try { process.kill(victim, "SIGKILL"); } catch (e) { res.faults.push({ at, kind, victim, error: e.code }); return; }
    res.faults.push({ at, kind, victim });
    say(`kill -9 worker ${victim}`);
  } else {
    try { process.kill(victim, "SIGSTOP"); } catch (e) { res.faults.push({ at, kind, victim, error: e.code }); return; }
    stopped.set(victim, [now(), null]);
    say(`SIGSTOP worker ${victim} for ${STOP_MS} ms`);
    await sleep(STOP_MS);
    try { process.kill(victim, "SIGCONT"); } catch (_) {}
    stopped.delete(victim);
    res.faults.push({ at, kind: "stop", victim, ms: STOP_MS });
  }
}

let T0 = now();
(async () => {
  const cap = setTimeout(() => { say("time cap reached"); process.stdout.write(JSON.stringify({ ...res, error: "time cap" }) + "\n"); process.exit(3); }, (SECS + 240) * 1000);
  cap.unref();
  const initial = await onlineWorkers();
  if (!initial || initial.length < WORKERS) throw new Error(`expected ${WORKERS} online workers, jlist says ${JSON.stringify(initial)}`);
  T0 = now();
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) { clients.push(liveClient(i)); await sleep(30); }
  const httpLoops = Array.from({ length: HTTP_CONNS }, httpLoop);
  const newLoop = (async () => {
    const pending = new Set();
    for (let k = 0; running && k < 1e6; k++) {
      const t = now();
      const p = newSession().finally(() => pending.delete(p));
      pending.add(p);
      await sleep(Math.max(0, 1000 / NEW_PER_S - (now() - t)));
    }
    await Promise.race([Promise.all(pending), sleep(15000)]);
  })();
  const end = T0 + SECS * 1000;
  const daemonAt = T0 + SECS * 500;
  let daemonDone = !DAEMON_KILL;
  await sleep(FAULT_EVERY);
  while (now() < end - FAULT_EVERY) {
    const t = now();
    if (!daemonDone && t >= daemonAt) { daemonDone = true; await recoverDaemon(); }
    else await fault(rand() < 0.6 ? "kill" : "stop");
    await sleep(Math.max(0, FAULT_EVERY - (now() - t)));
  }
  if (!daemonDone) await recoverDaemon();
  // Let the last restarts settle and the clients reconnect before stopping the load.
  await sleep(Math.max(0, end - now()));
  running = false;
  await Promise.race([Promise.all(httpLoops), sleep(12000)]);
  await Promise.race([newLoop, sleep(16000)]);
  await Promise.race([Promise.all(clients.map((c) => c.loop)), sleep(12000)]);
  const connectedAtEnd = clients.filter((c) => c.s.connected).length;
  for (const c of clients) c.s.disconnect();
  await sleep(1600); // pending loss classifications
  const w = await onlineWorkers();
  res.workers_online_at_end = w ? w.length : null;
  res.clients_connected_at_end = connectedAtEnd;
  res.elapsed_s = (now() - T0) / 1000;
  say(`lost sessions: ${res.sessions_lost_expected} with their worker, ${res.sessions_lost_unexpected} other; echo failures ${res.echo_failures}; ` +
    `new sessions ok ${res.new_sessions_ok} failed ${JSON.stringify(res.new_session_failures)}; http ok ${res.http_ok} failed ${JSON.stringify(res.http_failures)}; ` +
    `cli failures ${res.cli_failures}; clients connected at end ${connectedAtEnd}/${CLIENTS}; workers online ${res.workers_online_at_end}`);
  process.stdout.write(JSON.stringify(res) + "\n");
  process.exit(0);
})().catch((e) => {
  say("error: " + (e && e.stack || e));
  process.stdout.write(JSON.stringify({ ...res, error: String(e && e.message || e) }) + "\n");
  process.exit(1);
});
