#!/usr/bin/env bash
# Crash -> replacement latency (issue 2's benchmark): an idle fork-mode app is
# SIGKILLed N times; each time we time how long until its pid file names a new,
# live process. Polled every millisecond from the pid file (both pm2 and
# Corral write pids/<name>-<id>.pid), so the CLI's own speed does not enter.
#   bash bench/crash_latency.sh [N]   (CORRAL_BIN, INCUMBENT_BIN override)
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-15}"
CORRAL_BIN="${CORRAL_BIN:-$PWD/target/release/pm2}"
INCUMBENT_BIN="${INCUMBENT_BIN:-$PWD/bench/.work/incumbent/node_modules/.bin/pm2}"
APP="$(mktemp -d)/idle.js"
echo 'setInterval(() => {}, 60000);' > "$APP"
homes=()
trap 'for h in "${homes[@]}"; do PM2_HOME="$h" "$CORRAL_BIN" kill >/dev/null 2>&1 || true; [ -f "$h/pm2.pid" ] && kill -9 "$(cat "$h/pm2.pid")" 2>/dev/null || true; done' EXIT

measure() { # measure NAME BIN
  local name="$1" bin="$2" home
  [ -x "$bin" ] || { echo "$name: $bin not found (run bench/run.sh once to install it)"; return; }
  home="$(mktemp -d)"; homes+=("$home")
  PM2_HOME="$home" PM2_PORT=0 "$bin" start "$APP" --name crashy >/dev/null 2>&1
  node - "$home/pids/crashy-0.pid" "$N" "$name" <<'JS'
const fs = require('fs');
const [file, n, name] = process.argv.slice(2);
const readPid = () => { try { return parseInt(fs.readFileSync(file, 'utf8'), 10) || 0; } catch { return 0; } };
const alive = (p) => { try { process.kill(p, 0); return true; } catch { return false; } };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
(async () => {
  const out = [];
  for (let i = 0; i < Number(n); i++) {
    let pid = 0;
    for (let t = 0; t < 5000 && !(pid = readPid()); t++) await sleep(1);
    // Past min_uptime, so a crash is a plain restart, never an "unstable" one.
    await sleep(1100);
    pid = readPid();
    const t0 = process.hrtime.bigint();
    process.kill(pid, 'SIGKILL');
    let np = 0;
    for (let t = 0; t < 10000; t++) {
      np = readPid();
      if (np && np !== pid && alive(np)) break;
      await new Promise((r) => setImmediate(r));
    }
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  out.sort((a, b) => a - b);
  const q = (p) => out[Math.min(out.length - 1, Math.floor(p * out.length))].toFixed(1);
  console.log(`${name}: crash -> new pid visible: median ${q(0.5)} ms, min ${out[0].toFixed(1)}, max ${out[out.length - 1].toFixed(1)} (n=${out.length})`);
})();
JS
  PM2_HOME="$home" "$bin" kill >/dev/null 2>&1 || true
}

measure corral "$CORRAL_BIN"
measure @socket.io/pm2 "$INCUMBENT_BIN"
