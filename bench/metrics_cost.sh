#!/usr/bin/env bash
# What the Prometheus endpoint (PM2_METRICS) costs the daemon. One daemon with the seed app (bench/app, 2 cluster
# workers) and 10 fork-mode apps that each log a line every 200 ms (tests/fixtures/forever.js):
#   1. daemon CPU seconds (all threads' on-CPU time from /proc/<pid>/task/*/schedstat) over WINDOW seconds
#      with PM2_METRICS unset, then (another daemon) with the endpoint on but not scraped, then while `curl`
#      scrapes /metrics once a second;
#   2. the scrape's wall time (curl's time_total, median and max) and body size;
#   3. daemon VmRSS with the seed app alone, PM2_METRICS unset vs set (before and after 30 scrapes).
#
#   bash bench/metrics_cost.sh [WINDOW]      (default 30)
#   CORRAL_BIN=/path/to/pm2 bash bench/metrics_cost.sh
#
# Every daemon has its own PM2_HOME under bench/.work/homes and is killed (pm2 kill, then SIGKILL by pid) at
# the end. Needs curl.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
BIN="${CORRAL_BIN:-$ROOT/target/release/pm2}"
WINDOW="${1:-30}"
[ -x "$BIN" ] || { echo "no pm2 binary at $BIN (cargo build --release, or set CORRAL_BIN)"; exit 1; }
command -v curl >/dev/null || { echo "needs curl"; exit 1; }
[ -d "$BENCH/node_modules/socket.io" ] || (cd "$BENCH" && npm ci --no-audit --no-fund --loglevel=error)
mkdir -p "$BENCH/.work/homes"
HOMES=()
cleanup() {
  for h in "${HOMES[@]}"; do
    PM2_HOME="$h" "$BIN" kill >/dev/null 2>&1
    [ -f "$h/pm2.pid" ] && kill -9 "$(cat "$h/pm2.pid")" 2>/dev/null
    rm -rf "$h"
  done
}
trap cleanup EXIT
cpu_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.4f", s/1e9}'; }
rss_mb() { awk '/^VmRSS/{printf "%.2f", $2/1024}' /proc/"$1"/status; }
free_port() { echo $((20000 + RANDOM % 9000)); }

# Starts a daemon in a new home with the seed app; extra env as arguments (KEY=VALUE). Prints the home.
start_seed() {
  local h; h="$(mktemp -d "$BENCH/.work/homes/metrics-XXXXXX")"
  (cd "$BENCH/app" && env PM2_HOME="$h" PM2_PORT="$(free_port)" PM2_STICKY_HOST=127.0.0.1 "$@" \
    "$BIN" start ecosystem.config.js >/dev/null)
  echo "$h"
}

# --- 1 and 2: CPU with metrics off, on and not scraped, on and scraped -------------------------------------------
ten_apps() { for i in $(seq 1 10); do PM2_HOME="$1" "$BIN" start "$ROOT/tests/fixtures/forever.js" --name "app$i" >/dev/null; done; }
H=$(start_seed); HOMES+=("$H"); ten_apps "$H"
DPID=$(cat "$H/pm2.pid")
sleep 3
o0=$(cpu_s "$DPID"); sleep "$WINDOW"; o1=$(cpu_s "$DPID")
PM2_HOME="$H" "$BIN" kill >/dev/null 2>&1
MPORT=$(free_port)
H=$(start_seed PM2_METRICS="127.0.0.1:$MPORT"); HOMES+=("$H"); ten_apps "$H"
DPID=$(cat "$H/pm2.pid")
sleep 3
a0=$(cpu_s "$DPID"); sleep "$WINDOW"; a1=$(cpu_s "$DPID")
TIMES="$(mktemp)"
b0=$(cpu_s "$DPID")
end=$((SECONDS + WINDOW))
while [ $SECONDS -lt $end ]; do
  curl -s -o /dev/null -w '%{time_total} %{size_download}\n' --max-time 10 "http://127.0.0.1:$MPORT/metrics" >>"$TIMES"
  sleep 1
done
b1=$(cpu_s "$DPID")
n=$(wc -l <"$TIMES")
read -r p50 pmax size < <(sort -n "$TIMES" | awk '{t[NR]=$1; s=$2} END{printf "%.1f %.1f %d", 1000*t[int((NR+1)/2)], 1000*t[NR], s}')
rm -f "$TIMES"
awk -v o="$(echo "$o1 - $o0" | bc)" -v a="$(echo "$a1 - $a0" | bc)" -v b="$(echo "$b1 - $b0" | bc)" -v w="$WINDOW" \
  -v n="$n" -v p50="$p50" -v pmax="$pmax" -v size="$size" 'BEGIN{
  printf "| daemon (seed app + 10 apps logging 5 lines/s each) | cpu-s in %d s | %% of a core |\n|---|---|---|\n", w
  printf "| PM2_METRICS unset | %.3f | %.3f %% |\n", o, 100*o/w
  printf "| PM2_METRICS set, not scraped | %.3f | %.3f %% |\n| scraped once a second (%d scrapes) | %.3f | %.3f %% |\n", a, 100*a/w, n, b, 100*b/w
  printf "\nper scrape: %.2f ms of daemon CPU more than idle; wall time p50 %s ms, max %s ms; body %d bytes\n", 1000*(b-a)/n, p50, pmax, size }'

# --- 3: idle RSS, metrics off vs on ---------------------------------------------------------------------------
H=$(start_seed); HOMES+=("$H"); sleep 4; off=$(rss_mb "$(cat "$H/pm2.pid")")
MPORT=$(free_port)
H=$(start_seed PM2_METRICS="127.0.0.1:$MPORT"); HOMES+=("$H"); sleep 4; D=$(cat "$H/pm2.pid"); on=$(rss_mb "$D")
for i in $(seq 1 30); do curl -s -o /dev/null --max-time 10 "http://127.0.0.1:$MPORT/metrics"; done
sleep 1; on_scraped=$(rss_mb "$D")
echo
echo "| daemon VmRSS, seed app idle (2 workers), 4 s after start | MB |"
echo "|---|---|"
echo "| PM2_METRICS unset | $off |"
echo "| PM2_METRICS set | $on |"
echo "| PM2_METRICS set, after 30 scrapes | $on_scraped |"
