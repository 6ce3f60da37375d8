#!/usr/bin/env node
// summarize.js RESULTS_DIR  ->  Markdown on stdout (run.sh writes it to summary.md and BENCHMARKS.md)
//
// RESULTS_DIR/<target>/r<N>/<workload>.json are the raw measurements (see lg/lg.js); machine.txt has the
// machine facts. Each cell is "median [min – max]" over the repetitions (CLI rows: over every timed run);
// the ratio columns are the median of the per-repetition ratios target / corral (same run, alternating
// order), i.e. > 1 means Corral is lower (faster, smaller, cheaper) than that target.
"use strict";
const fs = require("fs");
const path = require("path");

const dir = process.argv[2];
if (!dir) { console.error("usage: summarize.js RESULTS_DIR"); process.exit(2); }
const facts = {};
for (const l of fs.readFileSync(path.join(dir, "machine.txt"), "utf8").split("\n")) {
  const i = l.indexOf("=");
  if (i > 0) facts[l.slice(0, i)] = l.slice(i + 1);
}
const targets = ["incumbent", "corral", "classic", "nginx"].filter((t) => fs.existsSync(path.join(dir, t)));
const reps = (t) => fs.readdirSync(path.join(dir, t)).filter((r) => /^r\d+$/.test(r)).sort((a, b) => a.slice(1) - b.slice(1));
const load = (t, r, f) => {
  try { return JSON.parse(fs.readFileSync(path.join(dir, t, r, f + ".json"), "utf8")); } catch (_) { return null; }
};
const get = (o, p) => p.split(".").reduce((x, k) => (x == null ? undefined : x[k]), o);

// [label, file, path | function(json) -> number | number[], unit, digits]
// A function returning an array gives every sample of that repetition (CLI timings).
const cliRuns = (j) => {
  if (!j) return undefined;
  if (j.results) return j.results[0].times.map((s) => s * 1000); // hyperfine
  return j.times_ms || j.median_ms; // lg.js timeit fallback
};
const sum = (...ps) => (j) => (j ? ps.reduce((s, p) => s + (Number(get(j, p)) || 0), 0) : undefined);
const connectFails = (j) => (j && j.connect_failures ? Object.values(j.connect_failures).reduce((a, b) => a + b, 0) : undefined);
const ROWS = [
  ["1. Footprint", [
    ["daemon RSS, seed app idle (2 workers)", "idle-seed", "daemon_rss_mb", "MB", 1],
    ["daemon CPU, seed app idle", "idle-seed", "daemon_cpu_pct", "%", 2],
    ["workers RSS (both)", "idle-seed", "workers_rss_mb", "MB", 1],
    ["`pm2 start ecosystem.config.js` (no daemon yet)", "start-seed", "cli_ms", "ms", 0],
    ["daemon open fds, seed app idle", "idle-seed", "daemon_fds", "", 0],
    ["daemon RSS after the load rows (3–7 that ran)", "idle-after", "daemon_rss_mb", "MB", 1],
    ["daemon open fds after the load rows", "idle-after", "daemon_fds", "", 0],
    ["daemon RSS, 100 idle fork apps", "idle-100", "daemon_rss_mb", "MB", 1],
    ["daemon CPU, 100 idle fork apps", "idle-100", "daemon_cpu_pct", "%", 2],
    ["`pm2 start` of the 100 apps (no daemon yet)", "start-idle100", "cli_ms", "ms", 0],
    ["apps online after that start", "start-idle100", "online", "", 0],
  ]],
  ["2. CLI (wall time per command)", [
    ["`pm2 list`", "cli-list", cliRuns, "ms", 1],
    ["`pm2 jlist`", "cli-jlist", cliRuns, "ms", 1],
    ["`pm2 describe 0`", "cli-describe", cliRuns, "ms", 1],
    ["`pm2 restart all` (2 workers)", "cli-restart", cliRuns, "ms", 0],
    ["`pm2 reload all` (2 workers, until done)", "cli-reload", cliRuns, "ms", 0],
    ["`pm2 jlist` with 100 apps", "cli-jlist100", cliRuns, "ms", 1],
  ]],
  ["3. New Socket.IO sessions through the sticky port (polling → websocket, 20 in flight)", [
    ["sessions/s", "sessions", "sessions_per_s", "/s", 1],
    ["connect p50", "sessions", "connect_ms.p50", "ms", 1],
    ["connect p99", "sessions", "connect_ms.p99", "ms", 1],
    ["failed sessions", "sessions", "failed", "", 0],
    ["sticky violations (responses from a non-owner worker)", "sessions", "sticky_violations", "", 0],
    ["\"Session ID unknown\" counted by the workers", "sessions", "session_id_unknown", "", 0],
    ["**daemon cpu-s per 1000 sessions**", "sessions", "daemon_cpu_s_per_1k", "s", 3],
    ["workers cpu-s per 1000 sessions", "sessions", "workers_cpu_s_per_1k", "s", 3],
    ["load generator cpu-s per 1000 sessions", "sessions", "lg_cpu_s_per_1k", "s", 3],
    ["redis-server cpu-s per 1000 sessions (nginx deployment's adapter)", "sessions", "aux_cpu_s_per_1k", "s", 3],
    ["other tenants during the window (% of a core)", "sessions", "cpu.other_pct", "%", 0],
  ]],
  ["4. Polling-only echo clients (20 clients, 16 B echo with ack)", [
    ["HTTP requests/s", "polling", "req_per_s", "/s", 0],
    ["POST p50", "polling", "post_ms.p50", "ms", 1],
    ["POST p99", "polling", "post_ms.p99", "ms", 1],
    ["echo round trip p50", "polling", "echo_rtt_ms.p50", "ms", 1],
    ["echo round trip p99", "polling", "echo_rtt_ms.p99", "ms", 1],
    ["failed requests", "polling", "failed_requests", "", 0],
    ["sticky violations", "polling", "sticky_violations", "", 0],
    ["**daemon cpu-s per 1000 requests**", "polling", "daemon_cpu_s_per_1k", "s", 3],
    ["workers cpu-s per 1000 requests", "polling", "workers_cpu_s_per_1k", "s", 3],
    ["redis-server cpu-s per 1000 requests (nginx deployment's adapter)", "polling", "aux_cpu_s_per_1k", "s", 3],
    ["other tenants during the window (% of a core)", "polling", "cpu.other_pct", "%", 0],
  ]],
  ["5. Plain HTTP routing through the sticky port (GET /bench/ping, new connection per request)", [
    ["requests/s", "plain", "req_per_s", "/s", 0],
    ["latency p50", "plain", "latency_ms.p50", "ms", 2],
    ["latency p99", "plain", "latency_ms.p99", "ms", 2],
    ["non-2xx responses", "plain", "errors.non_2xx", "", 0],
    ["busiest worker's share of requests", "plain", "busiest_worker_share", "", 2],
    ["**daemon cpu-s per 1000 requests**", "plain", "daemon_cpu_s_per_1k", "s", 3],
    ["other tenants during the window (% of a core)", "plain", "cpu.other_pct", "%", 0],
  ]],
  ["6a. Broadcast relay, JSON `{i,t,pid}` (10 clients over 2 workers; 10 000 `io.emit` burst, 4000 paced at 500/s)", [
    ["relayed msgs/s (burst, clients on the other worker)", "bcast-json", "burst.relayed_msgs_per_s", "/s", 0],
    ["same-worker msgs/s (burst, control)", "bcast-json", "burst.same_worker_msgs_per_s", "/s", 0],
    ["lost messages (burst + paced)", "bcast-json", sum("burst.lost", "paced.lost"), "", 0],
    ["cross-worker latency p50 (paced)", "bcast-json", "paced.other_worker_ms.p50", "ms", 2],
    ["cross-worker latency p99 (paced)", "bcast-json", "paced.other_worker_ms.p99", "ms", 2],
    ["same-worker latency p50 (control)", "bcast-json", "paced.same_worker_ms.p50", "ms", 2],
    ["same-worker latency p99 (control)", "bcast-json", "paced.same_worker_ms.p99", "ms", 2],
    ["**daemon cpu-s per 1000 relayed, burst**", "bcast-json", "burst.daemon_cpu_s_per_1k", "s", 3],
    ["**daemon cpu-s per 1000 relayed, paced**", "bcast-json", "paced.daemon_cpu_s_per_1k", "s", 3],
    ["redis-server cpu-s per 1000 relayed, burst (nginx deployment)", "bcast-json", "burst.aux_cpu_s_per_1k", "s", 3],
    ["redis-server cpu-s per 1000 relayed, paced (nginx deployment)", "bcast-json", "paced.aux_cpu_s_per_1k", "s", 3],
    ["**daemon + redis-server cpu-s per 1000 relayed, burst**", "bcast-json", sum("burst.daemon_cpu_s_per_1k", "burst.aux_cpu_s_per_1k"), "s", 3],
    ["**daemon + redis-server cpu-s per 1000 relayed, paced**", "bcast-json", sum("paced.daemon_cpu_s_per_1k", "paced.aux_cpu_s_per_1k"), "s", 3],
    ["websocket connects that failed or hung (retried, 10 needed)", "bcast-json", connectFails, "", 0],
    ["other tenants during the burst (% of a core)", "bcast-json", "burst.cpu.other_pct", "%", 0],
  ]],
  ["6b. Broadcast relay, 1 KiB Buffer", [
    ["relayed msgs/s (burst)", "bcast-bin", "burst.relayed_msgs_per_s", "/s", 0],
    ["same-worker msgs/s (burst, control)", "bcast-bin", "burst.same_worker_msgs_per_s", "/s", 0],
    ["lost or corrupted messages", "bcast-bin", sum("burst.lost", "paced.lost", "burst.corrupt", "paced.corrupt"), "", 0],
    ["cross-worker latency p50 (paced)", "bcast-bin", "paced.other_worker_ms.p50", "ms", 2],
    ["cross-worker latency p99 (paced)", "bcast-bin", "paced.other_worker_ms.p99", "ms", 2],
    ["**daemon cpu-s per 1000 relayed, burst**", "bcast-bin", "burst.daemon_cpu_s_per_1k", "s", 3],
    ["**daemon cpu-s per 1000 relayed, paced**", "bcast-bin", "paced.daemon_cpu_s_per_1k", "s", 3],
    ["**daemon + redis-server cpu-s per 1000 relayed, burst**", "bcast-bin", sum("burst.daemon_cpu_s_per_1k", "burst.aux_cpu_s_per_1k"), "s", 3],
    ["**daemon + redis-server cpu-s per 1000 relayed, paced**", "bcast-bin", sum("paced.daemon_cpu_s_per_1k", "paced.aux_cpu_s_per_1k"), "s", 3],
    ["websocket connects that failed or hung (retried, 10 needed)", "bcast-bin", connectFails, "", 0],
  ]],
  ["7. Reload and kill -9 under load (10 polling + 10 websocket clients echoing every 100 ms, 10 new sessions/s)", [
    ["`reload all` duration under load", "reload", (j) => (j && j.reload_s != null ? j.reload_s * 1000 : undefined), "ms", 0],
    ["reload: failed requests (new sessions, sessions on surviving workers)", "reload", "failed_requests", "", 0],
    ["reload: failed new sessions", "reload", "new_session_failures", "", 0],
    ["reload: dropped long-lived sessions (of 20)", "reload", "dropped_sessions", "", 0],
    ["reload: reconnect time of a dropped session, p50 (client back-off ≈ 1 s)", "reload", "reconnect_ms.p50", "ms", 0],
    ["kill -9: time until a new worker serves through the port", "kill", (j) => (j && j.serving_again_s != null ? j.serving_again_s * 1000 : undefined), "ms", 0],
    ["kill -9: failed requests (not the victim's sessions)", "kill", "failed_requests", "", 0],
    ["kill -9: failed new sessions (any cause, incl. sessions just opened on the victim)", "kill", "new_session_failures", "", 0],
    ["kill -9: dropped sessions", "kill", "dropped_sessions", "", 0],
    ["kill -9: reconnect time of a dropped session, p50", "kill", "reconnect_ms.p50", "ms", 0],
  ]],
  ["8. Cluster mode: 2 workers `listen()`, the daemon is the cluster primary (new connection per request)", [
    ["requests/s", "cluster", "req_per_s", "/s", 0],
    ["latency p50", "cluster", "latency_ms.p50", "ms", 2],
    ["latency p99", "cluster", "latency_ms.p99", "ms", 2],
    ["busiest worker's share of requests", "cluster", "busiest_worker_share", "", 2],
    ["**daemon cpu-s per 1000 connections**", "cluster", "daemon_cpu_s_per_1k", "s", 3],
    ["other tenants during the window (% of a core)", "cluster", "cpu.other_pct", "%", 0],
  ]],
];

const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  const n = s.length;
  return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : null;
};
const fmt = (x, d) => (x == null || !Number.isFinite(x) ? "–" : x.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }).replace(/,/g, " "));

// values[target][rep] = number[] (samples) for one metric
function values(t, file, sel) {
  const out = {};
  for (const r of reps(t)) {
    const j = load(t, r, file);
    if (!j || j.error) continue;
    const v = typeof sel === "function" ? sel(j) : get(j, sel);
    const arr = (Array.isArray(v) ? v : [v]).map(Number).filter((x) => v != null && Number.isFinite(x));
    if (arr.length) out[r] = arr;
  }
  return out;
}
function cell(vals, d, unit) {
  const per = Object.values(vals);
  if (!per.length) return "–";
  const all = per.flat();
  const m = median(all);
  const u = unit && unit !== "" ? " " + unit : "";
  const lo = Math.min(...all), hi = Math.max(...all);
  return lo === hi ? `${fmt(m, d)}${u}` : `${fmt(m, d)}${u} [${fmt(lo, d)} – ${fmt(hi, d)}]`;
}
function pairedRatio(a, b) { // median over repetitions of median(a_r) / median(b_r)
  const rs = [];
  for (const r of Object.keys(a)) if (b[r]) {
    const x = median(a[r]), y = median(b[r]);
    if (y > 0 && x >= 0) rs.push(x / y);
  }
  if (!rs.length) return "–";
  const m = median(rs);
  return m >= 10 ? `${fmt(m, 0)}×` : `${fmt(m, 2)}×`;
}

const lines = [];
const quick = facts.mode === "quick";
lines.push("# Benchmarks: Corral vs @socket.io/pm2");
lines.push("");
lines.push(`${quick ? "**Quick run** (`bash bench/run.sh --quick`: one repetition of rows 1–3)" : `Full run (\`bash bench/run.sh\`, ${facts.runs} repetition(s), rows ${facts.rows})`}, ${facts.date}.`);
lines.push("Reproduce and read these numbers with `bench/README.md`. Cells are median [min – max] over repetitions");
lines.push("(CLI rows: over every timed run). **ratio** = target / Corral, the median of per-repetition ratios (same run,");
lines.push("alternating order): above 1× Corral is lower (faster / smaller / cheaper), except for rates (/s), where below 1×");
lines.push("means Corral does more per second. Trust cpu-s per unit of work and");
lines.push("CLI times; quote throughput and latency only when \"other tenants\" is near 0 for every target.");
if (targets.includes("nginx")) {
  lines.push("");
  lines.push("The **nginx** column (rows 3, 4, 6) is the deployment the Socket.IO docs give without a process manager: nginx");
  lines.push("`ip_hash` in front of two plain `node` workers of the same seed app, each on its own port, broadcasting through");
  lines.push("`@socket.io/redis-adapter` and one redis-server. In that column **\"daemon\" is nginx** (master + workers, on-CPU ns");
  lines.push("from schedstat) and redis-server has its own line; its clients connect from 8 source addresses (127.0.k.1),");
  lines.push("because ip_hash keys on the first three octets. Unlike a sticky hand-off, nginx stays in the path of every");
  lines.push("byte of every websocket, so its cost in row 6 grows with the number of clients a message is delivered to.");
}
lines.push("");
lines.push("| machine | |");
lines.push("|---|---|");
for (const k of ["nproc", "cpu", "memory", "kernel", "node", "incumbent", "classic", "nginx", "corral", "socket.io", "cli_timer", "plain_generator", "workloads_s"]) {
  if (facts[k] != null) lines.push(`| ${k.replace("_", " ")} | ${facts[k].replace(/\|/g, "/")} |`);
}
lines.push("");
const names = { incumbent: "@socket.io/pm2", corral: "Corral", classic: "pm2 (classic)", nginx: "nginx + 2 node (redis-adapter)" };
for (const [title, metrics] of ROWS) {
  const rowsOut = [];
  // only the targets that ran this section (classic pm2 has no sticky balancer: rows 1, 2 and 8 only)
  const ts = targets.filter((t) => metrics.some(([, file]) => reps(t).some((r) => load(t, r, file))));
  for (const [label, file, sel, unit, d] of metrics) {
    const v = {};
    for (const t of ts) v[t] = values(t, file, sel);
    if (ts.every((t) => !Object.keys(v[t]).length)) continue;
    const cols = ts.map((t) => cell(v[t], d, unit));
    // no ratio for counters (failures, shares) and for the background-load rows
    const noRatio = unit === "" || label.startsWith("other tenants");
    const ratios = [];
    for (const t of ts) if (t !== "corral" && v.corral) ratios.push(noRatio ? "" : pairedRatio(v[t], v.corral));
    rowsOut.push(`| ${label} | ${cols.join(" | ")} | ${ratios.join(" | ")} |`);
  }
  if (!rowsOut.length) continue;
  lines.push(`### ${title}`);
  lines.push("");
  const ratioHeads = ts.filter((t) => t !== "corral").map((t) => `${t} / Corral`);
  lines.push(`| metric | ${ts.map((t) => names[t]).join(" | ")} | ${ratioHeads.join(" | ")} |`);
  lines.push(`|---|${ts.map(() => "---").join("|")}|${ratioHeads.map(() => "---").join("|")}|`);
  lines.push(...rowsOut);
  lines.push("");
}

// The floor (bench/floor): Corral's daemon cpu-s per unit next to the irreducible syscall work of that
// unit on this machine, as a ratio. One polling request or plain request is one TCP connection (the sticky
// worker answers `Connection: close`), so rows 4 and 5 compare with one sticky hand-off; a relayed paced
// message between 2 workers is one frame read and written to one peer.
const floorFile = path.join(dir, "floor.json");
if (fs.existsSync(floorFile) && targets.includes("corral")) {
  let fl = null;
  try { fl = JSON.parse(fs.readFileSync(floorFile, "utf8")); } catch (_) { /* reported below */ }
  if (fl) {
    const perK = (ns) => (ns * 1000) / 1e9; // ns per unit -> cpu-s per 1000 units
    const rowsF = [
      ["sticky hand-off (accept4, read head, sendmsg+fd, ACK recvmsg, close) vs row 4 polling request", fl.sticky_handoff_cpu_ns, "polling", "daemon_cpu_s_per_1k"],
      ["sticky hand-off vs row 5 plain request through the sticky port", fl.sticky_handoff_cpu_ns, "plain", "daemon_cpu_s_per_1k"],
      ["cluster hand-off (accept4, sendmsg+fd, ACK recvmsg, close) vs row 8 connection", fl.cluster_handoff_cpu_ns, "cluster", "daemon_cpu_s_per_1k"],
      ["relay of one 213-byte frame to 1 peer at 500 frames/s (epoll_wait, read, write) vs row 6a paced message", (fl.relay_500hz_frame_cpu_ns_by_peers || {})["1"], "bcast-json", "paced.daemon_cpu_s_per_1k"],
      ["the same frames back to back (warm caches) vs row 6a paced message", (fl.relay_frame_cpu_ns_by_peers || {})["1"], "bcast-json", "paced.daemon_cpu_s_per_1k"],
      ["relay of a burst to 1 peer (per read of up to 64 KiB: epoll_wait, read, one write), per frame, vs row 6a burst message", (fl.relay_burst_frame_cpu_ns_by_peers || {})["1"], "bcast-json", "burst.daemon_cpu_s_per_1k"],
    ];
    lines.push("### The floor: Corral's daemon cost as a ratio to the irreducible work");
    lines.push("");
    lines.push("`bench/floor` does only the syscalls a hot path cannot skip, on blocking sockets without an async runtime, and");
    lines.push("reports the CPU time of the thread playing the daemon (best of 3, `CLOCK_THREAD_CPUTIME_ID`). Corral's column is");
    lines.push("its daemon cpu-s per 1000 units from the rows above (on-CPU ns from schedstat).");
    lines.push("");
    lines.push("| hot path | floor, cpu-s per 1000 | Corral, cpu-s per 1000 | Corral / floor |");
    lines.push("|---|---|---|---|");
    for (const [label, ns, file, sel] of rowsF) {
      if (!(ns > 0)) continue;
      const v = values("corral", file, sel);
      const all = Object.values(v).flat();
      if (!all.length) continue;
      const m = median(all);
      const f = perK(ns);
      lines.push(`| ${label} | ${fmt(f, 4)} | ${fmt(m, 4)} | ${fmt(m / f, 1)}× |`);
    }
    const byPeers = fl.relay_frame_cpu_ns_by_peers || {};
    lines.push("");
    lines.push(`Relay floor per frame by number of peers (ns), one frame per wake-up back to back: ${Object.entries(byPeers).map(([k, v]) => `${k}: ${fmt(v, 0)}`).join(", ")}.`);
    const hzPeers = fl.relay_500hz_frame_cpu_ns_by_peers || {};
    if (Object.keys(hzPeers).length) lines.push(`At 500 frames/s: ${Object.entries(hzPeers).map(([k, v]) => `${k}: ${fmt(v, 0)}`).join(", ")}.`);
    const burstPeers = fl.relay_burst_frame_cpu_ns_by_peers || {};
    if (Object.keys(burstPeers).length) lines.push(`Burst: ${Object.entries(burstPeers).map(([k, v]) => `${k}: ${fmt(v, 0)}`).join(", ")}.`);
    lines.push("");
  }
}

// Scale curves (run.sh --curves, Corral only): one table per curve, one line per load level.
const curvesDir = path.join(dir, "corral", "curves");
if (fs.existsSync(curvesDir)) {
  const cj = (f) => { try { return JSON.parse(fs.readFileSync(path.join(curvesDir, f + ".json"), "utf8")); } catch (_) { return null; } };
  const f2 = (x, d) => fmt(x == null ? null : Number(x), d);
  const table = (title, head, rows) => {
    const present = rows.filter((r) => r.some((c, i) => i > 0 && c !== "–"));
    if (!present.length) return;
    lines.push(`#### ${title}`, "", `| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`);
    for (const r of present) lines.push(`| ${r.join(" | ")} |`);
    lines.push("");
  };
  lines.push("### Scale curves (Corral)", "");
  // The floor for an emit with n workers: one frame read, written to n - 1 peers.
  let flc = null;
  try { flc = JSON.parse(fs.readFileSync(path.join(dir, "floor.json"), "utf8")); } catch (_) { /* no floor in this run */ }
  const ratio = (v, byPeers, n) => { const ns = flc && (flc[byPeers] || {})[String(n - 1)]; return v != null && ns > 0 ? f2(Number(v) / ((ns * 1000) / 1e9), 1) + "×" : "–"; };
  table("Relay: cost and latency by worker count (each `io.emit` is relayed to every other worker; × = Corral ÷ the floor for n − 1 peers)",
    ["workers", "daemon cpu-s per 1000 emits, paced", "paced ÷ floor", "per 1000 emits, burst", "burst ÷ floor", "per 1000 frames written (emits × peers), paced", "per 1000 frames written, burst", "cross-worker p50", "cross-worker p99", "relayed msg/s (burst)", "lost"],
    [2, 4, 8, 16].map((n) => { const j = cj(`curve-relay-${n}`) || {}; const p = j.paced || {}, b = j.burst || {};
      const perFrame = (x) => (x == null ? null : x / (n - 1));
      return [n, f2(p.daemon_cpu_s_per_1k, 4), ratio(p.daemon_cpu_s_per_1k, flc && flc.relay_500hz_frame_cpu_ns_by_peers ? "relay_500hz_frame_cpu_ns_by_peers" : "relay_frame_cpu_ns_by_peers", n), f2(b.daemon_cpu_s_per_1k, 4), ratio(b.daemon_cpu_s_per_1k, "relay_burst_frame_cpu_ns_by_peers", n), f2(perFrame(p.daemon_cpu_s_per_1k), 4), f2(perFrame(b.daemon_cpu_s_per_1k), 4), p.other_worker_ms ? f2(p.other_worker_ms.p50, 2) + " ms" : "–", p.other_worker_ms ? f2(p.other_worker_ms.p99, 2) + " ms" : "–", f2(b.relayed_msgs_per_s, 0), j.burst ? (b.lost || 0) + (p.lost || 0) : "–"]; }));
  table("Apps: daemon footprint and control plane by number of fork apps",
    ["apps", "`pm2 start` (ms, daemon spawn included)", "daemon RSS (MB)", "daemon fds", "daemon idle CPU (%)", "`pm2 jlist` median (ms)", "`pm2 jlist` CLI user + sys (ms)"],
    [10, 100, 1000].map((n) => { const st = cj(`curve-start-apps-${n}`) || {}, id = cj(`curve-apps-${n}`) || {}, jl = cj(`cli-curve-jlist-${n}`);
      const jt = jl ? (jl.results ? jl.results[0].median * 1000 : jl.median_ms) : null;
      const jc = jl && jl.results ? (jl.results[0].user + jl.results[0].system) * 1000 : null;
      return [n, f2(st.cli_ms, 0), f2(id.daemon_rss_mb, 1), f2(id.daemon_fds, 0), f2(id.daemon_cpu_pct, 2), f2(jt, 1), f2(jc, 1)]; }));
  table("Idle Socket.IO sessions held through the sticky port (raw Engine.IO websockets, 4 workers)",
    ["sessions asked", "open", "failed", "opened in (s)", "daemon RSS before → max while held → at the end (MB)", "daemon fds", "daemon idle CPU (%)", "daemon cpu-s per 1000 opened", "workers RSS (MB, all 4)"],
    [1000, 10000, 50000].map((n) => { const j = cj(`curve-hold-${n}`) || {};
      return [n, f2(j.open, 0), f2(j.failed, 0), f2(j.opened_s, 1), j.daemon_rss_mb != null ? `${f2(j.daemon_rss_mb_before, 1)} → ${f2(j.daemon_rss_mb, 1)} → ${f2(j.daemon_rss_mb_end, 1)}` : "–", f2(j.daemon_fds, 0), f2(j.daemon_idle_cpu_pct, 2), f2(j.daemon_cpu_s_per_1k_opened, 4), f2(j.workers_rss_mb, 0)]; }));
  const cap = (kind) => [1, 4, 16, 64].map((c) => { const j = cj(`curve-cap-${kind}-${c}`) || {}; const pct = j.cpu && j.cpu.pct ? j.cpu.pct.daemon : null;
    return [c, f2(j.req_per_s, 0), j.latency_ms ? f2(j.latency_ms.p99, 2) + " ms" : "–", f2(pct, 1), pct > 0 && j.req_per_s ? f2(j.req_per_s / (pct / 100), 0) : "–", f2(j.daemon_cpu_s_per_1k, 4)]; });
  const capHead = ["connections", "req/s (new connection each)", "p99", "daemon CPU (% of a core)", "≈ hand-offs/s per daemon core", "daemon cpu-s per 1000"];
  table("Hand-off capacity, sticky port (`/bench/ping`, `Connection: close`)", capHead, cap("sticky"));
  table("Hand-off capacity, cluster mode (`listen()` app, `Connection: close`)", capHead, cap("cluster"));
  lines.push("On 2 cores the workers and wrk saturate the machine before the daemon does, so capacity per daemon core is");
  lines.push("extrapolated from its CPU share at each rate (req/s ÷ daemon core fraction).", "");
}

// problems: workloads that failed, CLI commands that exited non-zero
const problems = [];
for (const t of targets) for (const r of reps(t)) {
  const d = path.join(dir, t, r);
  for (const f of fs.readdirSync(d)) {
    if (!f.endsWith(".json")) continue;
    let j;
    try { j = JSON.parse(fs.readFileSync(path.join(d, f), "utf8")); } catch (_) { problems.push(`${t} ${r} ${f}: no result (empty or truncated: timed out?)`); continue; }
    if (j.error) problems.push(`${t} ${r} ${f}: ${j.error}`);
    if (j.exit != null && j.exit !== 0) problems.push(`${t} ${r} ${f.replace(".json", "")}: CLI exited ${j.exit}`);
    if (j.results && j.results[0] && j.results[0].exit_codes && j.results[0].exit_codes.some((c) => c !== 0)) problems.push(`${t} ${r} ${f}: some runs exited non-zero`);
    if (j.failures) problems.push(`${t} ${r} ${f}: ${j.failures} runs exited non-zero`);
  }
}
if (problems.length) {
  lines.push("### Problems seen in this run");
  lines.push("");
  for (const p of problems) lines.push(`- ${p}`);
  lines.push("");
}
lines.push(`Raw results: \`${path.relative(path.join(__dirname, ".."), dir)}/\` (per target and repetition, one JSON per workload).`);
process.stdout.write(lines.join("\n") + "\n");
