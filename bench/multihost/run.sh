#!/usr/bin/env bash
# Two Corral nodes on this machine joined through a local redis-server, the socket.io
# fixture in 2 workers on each, then latency.js. Usage: bench/multihost/run.sh [pm2 binary]
# [count] [paceMs]. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PM2=${1:-target/release/pm2}
COUNT=${2:-2000}
PACE=${3:-5}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RP=$(free_port); PA=$(free_port); PB=$(free_port)
TMP=$(mktemp -d)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >/dev/null &
RPID=$!
node_env() { # home port id
  env PM2_HOME="$TMP/$1" PM2_PORT="$2" PM2_STICKY_HOST=127.0.0.1 PM2_NODE_ID="$3" \
    PM2_CLUSTER_REDIS="redis://127.0.0.1:$RP/0" PM2_CLUSTER_SECRET=bench-secret-0123456789 "${@:4}"
}
cleanup() {
  node_env a "$PA" a "$PM2" kill >/dev/null 2>&1 || true
  node_env b "$PB" b "$PM2" kill >/dev/null 2>&1 || true
  kill "$RPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
(cd tests/node && node_env a "$PA" a "../../$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
(cd tests/node && node_env b "$PB" b "../../$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
# CPU seconds (utime+stime) of a pid, from /proc.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
DA=$(cat "$TMP/a/pm2.pid"); DB=$(cat "$TMP/b/pm2.pid")
A0=$(cpu "$DA"); B0=$(cpu "$DB"); R0=$(cpu "$RPID")
node bench/multihost/latency.js "$PA" "$PB" "$COUNT" "$PACE"
A1=$(cpu "$DA"); B1=$(cpu "$DB"); R1=$(cpu "$RPID")
# Every broadcast is one adapter frame published by B, read and injected by A (and A's
# workers' replies are none for io.emit), so these are per $COUNT cross-node messages.
echo "{\"cpuSeconds\":{\"daemonA\":$(echo "$A1 - $A0" | bc),\"daemonB\":$(echo "$B1 - $B0" | bc),\"redis\":$(echo "$R1 - $R0" | bc),\"messages\":$COUNT}}"
