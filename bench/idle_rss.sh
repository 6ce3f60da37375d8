#!/usr/bin/env bash
# The daemon's idle memory with the seed app (examples/socketio, 2 cluster workers) in the configurations
# users run: nothing extra, the Prometheus endpoint on (not scraped, then after 30 scrapes at 1/s), a pm2 bus
# client attached (`require('pm2').launchBus`, as dashboards and modules do), and all of it together.
# Each row is a fresh daemon; RSS (VmRSS, with its RssAnon / RssFile parts) is read after 5 s without
# commands, the time the daemon waits before it gives back what a burst of work left resident.
#
#   bash bench/idle_rss.sh            (CORRAL_BIN=/path/to/pm2; default target/release/pm2)
#
# Prints one Markdown table. Every daemon runs in its own PM2_HOME on free ports and is killed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${CORRAL_BIN:-target/release/pm2}")"
[ -x "$BIN" ] || { echo "no pm2 binary at $BIN (cargo build --release, or set CORRAL_BIN)" >&2; exit 1; }
[ -d tests/pm2api/node_modules/pm2 ] || (cd tests/pm2api && npm ci --no-audit --no-fund --loglevel=error)
[ -d examples/socketio/node_modules ] || (cd examples/socketio && npm ci --no-audit --no-fund --loglevel=error)

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
field() { awk -v k="$2:" '$1==k {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

HOMES=()
BUS=""
cleanup() {
  [ -n "$BUS" ] && kill "$BUS" 2>/dev/null || true
  for h in "${HOMES[@]}"; do PM2_HOME="$h" "$BIN" kill >/dev/null 2>&1 || true; rm -rf "$h"; done
}
trap cleanup EXIT

# row <label> <metrics: 0|1> <scrapes> <bus: 0|1>
row() {
  local label=$1 metrics=$2 scrapes=$3 bus=$4
  local home; home="$(mktemp -d /tmp/corral-idle-XXXXXX)"; HOMES+=("$home")
  local mport=""
  export PM2_HOME="$home" PM2_PORT; PM2_PORT="$(free_port)"
  export PM2_STICKY_HOST=127.0.0.1
  if [ "$metrics" = 1 ]; then mport="$(free_port)"; export PM2_METRICS="127.0.0.1:$mport"; else unset PM2_METRICS; fi
  (cd examples/socketio && "$BIN" start ecosystem.config.js >/dev/null)
  local dpid; dpid="$(cat "$home/pm2.pid")"
  for _ in $(seq 1 100); do
    [ "$("$BIN" jlist | grep -o '"status":"online"' | wc -l)" -ge 2 ] && break
    sleep 0.2
  done
  for _ in $(seq 1 "$scrapes"); do curl -sf "http://127.0.0.1:$mport/metrics" >/dev/null; sleep 1; done
  if [ "$bus" = 1 ]; then
    (cd tests/pm2api && node -e '
      const pm2 = require("pm2");
      pm2.connect((e) => { if (e) process.exit(1);
        pm2.launchBus((e2, bus) => { if (e2) process.exit(1); bus.on("*", () => {}); console.log("bus"); }); });
      setTimeout(() => process.exit(0), 60000);' >/dev/null) &
    BUS=$!
    sleep 1
  fi
  sleep 5
  local rss anon file
  rss="$(field "$dpid" VmRSS)"; anon="$(field "$dpid" RssAnon)"; file="$(field "$dpid" RssFile)"
  echo "| $label | $(mb "$rss") MB | $(mb "$anon") MB | $(mb "$file") MB |"
  [ -n "$BUS" ] && { kill "$BUS" 2>/dev/null || true; wait "$BUS" 2>/dev/null || true; BUS=""; }
  "$BIN" kill >/dev/null 2>&1 || true
}

echo "| seed app, daemon idle | VmRSS | RssAnon | RssFile |"
echo "|---|---|---|---|"
row "nothing extra" 0 0 0
row "PM2_METRICS set, never scraped" 1 0 0
row "PM2_METRICS set, 5 s after 30 scrapes (1/s)" 1 30 0
row "a pm2 bus client attached (launchBus)" 0 0 1
row "PM2_METRICS scraped 30 times + a bus client attached" 1 30 1
