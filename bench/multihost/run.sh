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
node bench/multihost/latency.js "$PA" "$PB" "$COUNT" "$PACE"
