#!/usr/bin/env bash
# In-place update benchmark: `pm2 update` under traffic, the incumbent (@socket.io/pm2) beside Corral.
#
#   bash bench/upgrade.sh [--runs N] [--sio-only]
#
# --sio-only: without the plain cluster app (beside a plain cluster app in the same daemon, the
# incumbent's sticky port answered nothing in time on our machine, so its Socket.IO clients could not
# connect at all; this mode measures what its update does to Socket.IO sessions).
#
# Per target and run, in a fresh PM2_HOME with free ports on 127.0.0.1: the seed Socket.IO app
# (examples/socketio/worker.js, 2 workers, sticky port PM2_PORT) with tests/node/upgrade_client.js (2
# websocket + 2 polling clients, a broadcast every 20 ms), and a plain cluster app (bench/app/listen.js,
# 2 workers on BENCH_APP_PORT). Two probes (bench/upgrade_probe.js, one GET on a new connection each):
# every 5 ms on the cluster port, every 50 ms an Engine.IO handshake on the sticky port (each handshake
# opens a session that lives for the ping timeout, so a faster probe would be a load test; on a busy
# 2-core machine faster probes saturate the incumbent's Node daemon before the update even starts). One second into the
# traffic, `pm2 update` runs (Corral: `pm2 update --binary <a copy of the binary>`, so the daemon really
# switches binaries). Reported: the update's wall time (the CLI command), each port's downtime (first
# refused-or-delayed probe to the first served one), failed probes, Socket.IO sessions dropped and
# broadcasts lost or duplicated, and whether the worker pids survived.
#
# Environment: CORRAL_BIN (default target/release/pm2, else target/debug/pm2). The incumbent is installed
# by `npm ci` in bench/.work/incumbent (as bench/run.sh does). Results: bench/.work/results/upgrade-<stamp>/.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
WORK="$BENCH/.work"
RUNS=1
PLAIN=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS="$2"; shift ;;
    --sio-only) PLAIN=0 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="$WORK/results/upgrade-$STAMP"
mkdir -p "$OUT" "$WORK/homes"
log() { echo "[upgrade-bench $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
die() { log "FATAL: $*"; exit 1; }

command -v jq >/dev/null || die "jq is required"
if [ ! -d "$WORK/incumbent/node_modules/@socket.io/pm2" ]; then
  mkdir -p "$WORK/incumbent"; cp "$BENCH/targets/incumbent/package.json" "$BENCH/targets/incumbent/package-lock.json" "$WORK/incumbent/"
  (cd "$WORK/incumbent" && npm ci --no-audit --no-fund --loglevel=error) >> "$OUT/setup.log" 2>&1 || die "npm ci (incumbent) failed"
fi
for d in "$ROOT/tests/node" "$ROOT/examples/socketio"; do
  [ -d "$d/node_modules" ] || (cd "$d" && npm ci --no-audit --no-fund --loglevel=error) >> "$OUT/setup.log" 2>&1 || die "npm ci failed in $d"
done
INCUMBENT_BIN="$WORK/incumbent/node_modules/@socket.io/pm2/bin/pm2"
if [ -z "${CORRAL_BIN:-}" ]; then
  CORRAL_BIN="$ROOT/target/release/pm2"; [ -x "$CORRAL_BIN" ] || CORRAL_BIN="$ROOT/target/debug/pm2"
fi
mkdir -p "$OUT/corral-bin"
cp "$CORRAL_BIN" "$OUT/corral-bin/pm2" && cp "$CORRAL_BIN" "$OUT/corral-bin/pm2-new" || die "cannot copy $CORRAL_BIN"
log "corral=$CORRAL_BIN incumbent=@socket.io/pm2 $(jq -r .version "$WORK/incumbent/node_modules/@socket.io/pm2/package.json") node=$(node -v)"

free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_200() { # wait_200 URL: ≤ 20 s
  local i; for i in $(seq 1 100); do
    [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$1")" = 200 ] && return 0; sleep 0.2
  done; return 1
}
pids_of() { "$BIN" jlist 2>/dev/null | jq -c '[.[] | .pid] | sort'; }

run_one() { # run_one TARGET REP
  local t="$1" rep="$2" RD="$OUT/$1-r$2"
  mkdir -p "$RD"
  export PM2_HOME="$WORK/homes/upgrade-$STAMP-$t-$rep" PM2_STICKY_HOST=127.0.0.1
  rm -rf "$PM2_HOME"; mkdir -p "$PM2_HOME"
  export PM2_PORT; PM2_PORT="$(free_port)"
  export BENCH_APP_PORT; BENCH_APP_PORT="$(free_port)"
  case "$t" in incumbent) BIN="$INCUMBENT_BIN"; UPDATE=(update) ;; corral) BIN="$OUT/corral-bin/pm2"; UPDATE=(update --binary "$OUT/corral-bin/pm2-new") ;; esac
  (cd "$ROOT/examples/socketio" && "$BIN" start worker.js -i 2 --name sio) > "$RD/start.log" 2>&1
  [ "$PLAIN" = 1 ] && (cd "$BENCH/app" && "$BIN" start listen.config.js) >> "$RD/start.log" 2>&1
  wait_200 "http://127.0.0.1:$PM2_PORT/socket.io/?EIO=4&transport=polling" || log "$t: sticky port not ready"
  [ "$PLAIN" = 1 ] && { wait_200 "http://127.0.0.1:$BENCH_APP_PORT/" || log "$t: cluster port not ready"; }
  local before; before="$(pids_of)"
  rm -f "$RD/stop"
  node "$ROOT/tests/node/upgrade_client.js" "$PM2_PORT" "$RD/stop" 60000 > "$RD/sio.json" 2> "$RD/sio.err" &
  local sio=$!
  local p1=""
  if [ "$PLAIN" = 1 ]; then
    node "$BENCH/upgrade_probe.js" "$BENCH_APP_PORT" / "$RD/stop" 5 > "$RD/probe-cluster.json" &
    p1=$!
  fi
  node "$BENCH/upgrade_probe.js" "$PM2_PORT" "/socket.io/?EIO=4&transport=polling" "$RD/stop" 50 > "$RD/probe-sticky.json" &
  local p2=$!
  local i; for i in $(seq 1 100); do grep -q started "$RD/sio.err" 2>/dev/null && break; sleep 0.2; done
  sleep 1
  local t0 t1; t0=$(date +%s%N)
  timeout 120 "$BIN" "${UPDATE[@]}" > "$RD/update.log" 2>&1; local rc=$?
  t1=$(date +%s%N)
  sleep 3
  touch "$RD/stop"
  wait "$sio" $p1 "$p2"
  local after; after="$(pids_of)"
  # Corral's own account of the switch (pm2.log): quiet point, exec, adoption, each since the pause.
  grep -o 'quiet after [0-9]* ms\|reading the state [0-9]* ms\|adopted in [0-9]* ms' "$PM2_HOME/pm2.log" 2>/dev/null | tr '\n' ';' > "$RD/phases.txt"
  jq -n --arg t "$t" --argjson rc "$rc" --argjson wall "$(( (t1 - t0) / 1000000 ))" \
    --argjson sio "$(cat "$RD/sio.json" 2>/dev/null || echo null)" \
    --argjson pc "$(cat "$RD/probe-cluster.json" 2>/dev/null || echo null)" \
    --argjson ps "$(cat "$RD/probe-sticky.json" 2>/dev/null || echo null)" \
    --arg before "$before" --arg after "$after" --arg phases "$(cat "$RD/phases.txt" 2>/dev/null)" \
    '{target:$t, exit:$rc, wallMs:$wall, pidsKept:($before==$after), phases:$phases, sio:$sio, cluster:$pc, sticky:$ps}' > "$RD/result.json"
  log "$t r$rep: $(jq -c '{exit, wallMs, pidsKept, phases, clusterDown: .cluster.downtimeMs, clusterFailed: .cluster.failed, stickyDown: .sticky.downtimeMs, stickyFailed: .sticky.failed, sioDisconnects: .sio.disconnects, sioConnectErrors: .sio.connectErrors, lost: .sio.missing, dup: .sio.duplicates}' "$RD/result.json")"
  "$BIN" kill > /dev/null 2>&1
  sleep 0.5
}

for rep in $(seq 1 "$RUNS"); do
  if [ $(( rep % 2 )) = 1 ]; then order=(incumbent corral); else order=(corral incumbent); fi
  for t in "${order[@]}"; do run_one "$t" "$rep"; done
done
jq -s '.' "$OUT"/*/result.json > "$OUT/summary.json"
log "summary: $OUT/summary.json"
