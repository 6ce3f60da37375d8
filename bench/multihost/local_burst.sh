#!/usr/bin/env bash
# The adapters' own throughput, with no second node: the seed app on one Corral node
# (@socket.io/cluster-adapter, the daemon relays between its 2 workers) and the same app
# switched to @socket.io/redis-adapter on one Corral node (2 workers, Redis relays), both up at
# once and measured in turn. A burst from a client of one worker to a client of the other is
# what `compare.sh` calls "same node"; it tells what part of a two-node setup's burst
# throughput the app's adapter sets before any node-to-node work.
#
#   bash bench/multihost/local_burst.sh [pm2 binary=target/release/pm2] [messages=10000] [rounds=3]
#
# Prints one JSON line per setup and round, then the medians. Every step is bounded in time;
# everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PM2=$(realpath "${1:-target/release/pm2}")
COUNT=${2:-10000}
ROUNDS=${3:-3}
command -v redis-server >/dev/null || { timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq redis-server >/dev/null; }
if [ ! -f bench/multihost/redis-adapter/node_modules/@socket.io/redis-adapter/package.json ]; then
  (cd bench/multihost/redis-adapter && timeout 300 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# shellcheck source=bench/multihost/common.sh
source bench/multihost/common.sh
TMP=$(mktemp -d)
RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >/dev/null &
RPID=$!
cleanup() {
  for h in c r; do PM2_HOME="$TMP/$h" timeout 60 "$PM2" kill >/dev/null 2>&1 || true; done
  kill "$RPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
node_env() { # home port command...
  local home=$1 port=$2
  shift 2
  env PM2_HOME="$TMP/$home" PM2_PORT="$port" PM2_STICKY_HOST=127.0.0.1 BENCH_REDIS_URL="redis://127.0.0.1:$RP" timeout 120 "$@"
}
PC=$(free_port)
PR=$(free_port)
(cd tests/node && node_env c "$PC" "$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
node_env r "$PR" "$PM2" start bench/multihost/redis-adapter/worker.js -i 2 --name chat --sticky >/dev/null
wait_serving "$PC"
wait_serving "$PR"
OUT="$TMP/lines"
for round in $(seq 1 "$ROUNDS"); do
  for setup in cluster-adapter:"$PC" redis-adapter:"$PR"; do
    port=${setup#*:}
    # latency.js with both ports the same node: "same" is the other worker of that node.
    r=$(timeout 180 node bench/multihost/latency.js "$port" "$port" "$COUNT" 0)
    echo "{\"setup\":\"${setup%%:*}\",\"round\":$round,\"burst\":$r}" | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
by = {}
for l in open(sys.argv[1]):
    d = json.loads(l)
    by.setdefault(d["setup"], []).append(d["burst"]["same"]["perSecond"])
for k, v in by.items():
    print(json.dumps({"setup": k, "sameNodePerSecond": v, "median": statistics.median(v)}))
PY
