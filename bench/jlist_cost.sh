#!/usr/bin/env bash
# What `pm2 jlist` with 100 apps costs, split so that a loaded machine cannot hide it: the CLI's wall time
# (hyperfine) and its own CPU (user + sys), and the daemon's on-CPU time per request (bench/jlist_wire.js on
# one connection: the list escaped inside a JSON string vs sent raw; samples reused vs /proc read for every
# app).
#
#   bash bench/jlist_cost.sh [pm2 binary=target/release/pm2] [apps config=idle100.config.js]
#
# Own PM2_HOME under bench/.work/homes, killed (pm2 kill, then SIGKILL of the daemon by pid) on exit.
# Prints one JSON line.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
PM2="$(readlink -f "${1:-$ROOT/target/release/pm2}")"
CONF="${2:-idle100.config.js}"
export PM2_HOME="$BENCH/.work/homes/jlist-cost-$(date -u +%Y%m%d-%H%M%S)-$$"
mkdir -p "$PM2_HOME"
DPID=""
cleanup() {
  timeout 30 "$PM2" kill > /dev/null 2>&1
  [ -n "$DPID" ] && [ -d "/proc/$DPID" ] && kill -9 "$DPID" 2>/dev/null
  return 0
}
trap cleanup EXIT
(cd "$BENCH/app" && timeout 120 "$PM2" start "$CONF" > "$PM2_HOME/start.log" 2>&1) || { echo "start failed" >&2; exit 1; }
DPID="$(cat "$PM2_HOME/pm2.pid")"
for _ in $(seq 1 100); do
  [ "$("$PM2" jlist | jq '[.[] | select(.pm2_env.status == "online")] | length')" -ge 100 ] && break
  sleep 0.3
done
apps="$("$PM2" jlist | jq length)"
hf="$PM2_HOME/hyperfine.json"
timeout 120 hyperfine -N --warmup 3 --runs 30 --export-json "$hf" "$PM2 jlist" > /dev/null 2>&1
cached="$(timeout 70 node "$BENCH/jlist_wire.js" "$DPID" 50 0)"
fresh="$(timeout 70 node "$BENCH/jlist_wire.js" "$DPID" 8 600)"
jq -nc --argjson apps "$apps" --slurpfile h "$hf" --argjson cached "${cached:-null}" --argjson fresh "${fresh:-null}" \
  --arg bin "${PM2#"$ROOT"/}" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" '{
    binary: $bin, apps: $apps, load: $load,
    cli_wall_median_ms: ($h[0].results[0].median * 1000 * 100 | round / 100),
    cli_wall_min_ms: ($h[0].results[0].min * 1000 * 100 | round / 100),
    cli_user_sys_ms: (($h[0].results[0].user + $h[0].results[0].system) * 1000 * 100 | round / 100),
    daemon_back_to_back: $cached, daemon_fresh_samples: $fresh }'
