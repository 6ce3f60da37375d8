#!/usr/bin/env bash
# pm2's programmatic API on Corral: pm2.list() latency from the `pm2` library
# and the daemon's RSS idle, then with a bus client attached, with the seed
# app (examples/socketio, 2 cluster workers) running.
# Usage: bash bench/pm2api.sh  (CORRAL_BIN=/path/to/pm2 to pick the binary)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${CORRAL_BIN:-target/release/pm2}" 2>/dev/null || true)"
[ -n "$BIN" ] && [ -x "$BIN" ] || { echo "no pm2 binary (cargo build --release, or set CORRAL_BIN)" >&2; exit 1; }
[ -d tests/pm2api/node_modules/pm2 ] || (cd tests/pm2api && npm ci --no-audit --no-fund --loglevel=error)
[ -d examples/socketio/node_modules ] || (cd examples/socketio && npm ci --no-audit --no-fund --loglevel=error)
export PM2_HOME; PM2_HOME="$(mktemp -d /tmp/corral-pm2api-XXXXXX)"
export PM2_PORT=$((20000 + RANDOM % 10000)) PM2_STICKY_HOST=127.0.0.1
cleanup() {
  "$BIN" kill >/dev/null 2>&1 || true
  rm -rf "$PM2_HOME"
}
trap cleanup EXIT
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
(cd examples/socketio && "$BIN" start ecosystem.config.js >/dev/null)
DPID="$(cat "$PM2_HOME/pm2.pid")"
for _ in $(seq 1 100); do  # up to 20 s for both workers
  [ "$("$BIN" jlist | grep -o '"status":"online"' | wc -l)" -ge 2 ] && break
  sleep 0.2
done
sleep 2
echo "daemon_rss_idle_kb=$(rss "$DPID")"
HOLD_MS=3000 timeout 120 node bench/pm2api.js "${1:-200}" &
NODE=$!
sleep 2.5
echo "daemon_rss_with_bus_client_kb=$(rss "$DPID")"
wait "$NODE"
echo "daemon_rss_after_kb=$(rss "$DPID")"
