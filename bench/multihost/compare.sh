#!/usr/bin/env bash
# Corral's Redis bridge (any node takes any request) side by side with the standard
# alternative for the same two-host topology: the app on @socket.io/redis-adapter, each host
# its own Corral cluster (sticky, no bridge), nginx ip_hash in front. Both hosts are daemons
# on this machine (own PM2_HOME, own port); one redis-server.
#
#   bash bench/multihost/compare.sh [pm2 binary=target/release/pm2] [messages=2000] [requests=2000]
#   (env ROUNDS=3 rounds, BURST=10000 messages per burst)
#
# Both setups run at once (the idle one costs next to nothing) and are measured in turn, round
# after round, so a drift of the machine's load falls on both alike; the last lines are each
# metric's median over the rounds. A burst of a few thousand messages lasts well under a
# second and its throughput swings by a third from run to run, hence the longer bursts.
#
# Prints labelled JSON lines, per setup and round: relay latency (paced, 5 ms) and throughput (burst),
# cpu-s per 1000 paced messages of each daemon, each host's workers and redis-server, and the
# cost of polling requests of one session sent to the session's host ("local") vs through the
# other host (Corral forwards) or nginx ("forwarded"), with the pids counted named by role.
# CPU is read from /proc/<pid>/task/*/schedstat (nanoseconds, every thread), not the 10 ms
# ticks of /proc/<pid>/stat. Installs nginx and redis-server (Debian) and the redis-adapter
# app's npm packages when missing. Every step is bounded in time; everything it starts is
# stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PM2=$(realpath "${1:-target/release/pm2}")
COUNT=${2:-2000}
REQS=${3:-2000}
ROUNDS=${ROUNDS:-3}
BURST=${BURST:-10000}
STEP_TIMEOUT=${STEP_TIMEOUT:-180}

apt_install() { # command package
  command -v "$1" >/dev/null && return 0
  echo "installing $2 (Debian package)" >&2
  timeout 300 apt-get update -qq && timeout 300 apt-get install -y -qq "$2" >/dev/null
}
apt_install nginx nginx-light || apt_install nginx nginx
apt_install redis-server redis-server
if [ ! -f bench/multihost/redis-adapter/node_modules/@socket.io/redis-adapter/package.json ]; then
  (cd bench/multihost/redis-adapter && timeout 300 npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# shellcheck source=bench/multihost/common.sh
source bench/multihost/common.sh
# cpu-s of every thread of the given pids together.
cpu() {
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done |
    awk '{ s += $1 } END { printf "%.4f", s / 1e9 }'
}
per1000() { echo "scale=4; ($2 - $1) * 1000 / $3" | bc | sed 's/^\./0./; s/^-\./-0./'; }
TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx's workers (user nobody) reach their temp paths under it
RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >/dev/null &
RPID=$!
NGINX_PID=""
HOMES=()
node_env() { # home port id cluster(yes|no) command...
  local home=$1 port=$2 id=$3 cluster=$4
  shift 4
  local extra=()
  if [ "$cluster" = yes ]; then
    extra=(PM2_CLUSTER_REDIS="redis://127.0.0.1:$RP/0" PM2_CLUSTER_SECRET=bench-secret-0123456789
      PM2_CLUSTER_LISTEN="127.0.0.1:$(free_port)")
  fi
  env PM2_HOME="$TMP/$home" PM2_PORT="$port" PM2_STICKY_HOST=127.0.0.1 PM2_NODE_ID="$id" \
    BENCH_REDIS_URL="redis://127.0.0.1:$RP" "${extra[@]}" timeout "$STEP_TIMEOUT" "$@"
}
cleanup() {
  for h in "${HOMES[@]}"; do PM2_HOME="$TMP/$h" timeout 60 "$PM2" kill >/dev/null 2>&1 || true; done
  if [ -n "$NGINX_PID" ]; then kill "$NGINX_PID" 2>/dev/null || true; fi
  kill "$RPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
worker_pids() { # home
  PM2_HOME="$TMP/$1" timeout 60 "$PM2" jlist |
    python3 -c 'import json,sys; print(" ".join(str(p["pid"]) for p in json.load(sys.stdin) if p.get("pid")))'
}
# The session host's workers as worker1=<pid> worker2=<pid>: with them, "sum" is what a polling
# request costs every process on its path, the worker that answers it included.
labelled_workers() { # home
  local i=0 p
  for p in $(worker_pids "$1"); do
    i=$((i + 1))
    printf 'worker%d=%s ' "$i" "$p"
  done
}
# $1 label, $2/$3 the hosts' ports (B triggers the broadcasts, "cross" is a client of A),
# $4/$5 their homes, $6 the session's host (host:port) for "local" requests, $7 where the
# "forwarded" requests go, $8... the pids counted for requests, as role=pid.
measure() {
  local label=$1 pa=$2 pb=$3 ha=$4 hb=$5 owner=$6 other=$7
  shift 7
  # Every line: {"setup":"<label>","round":"<n>",...}.
  label="$label\",\"round\":\"$ROUND"
  local da db wa wb
  da=$(cat "$TMP/$ha/pm2.pid")
  db=$(cat "$TMP/$hb/pm2.pid")
  read -r -a wa <<<"$(worker_pids "$ha")"
  read -r -a wb <<<"$(worker_pids "$hb")"
  local c0=() c1=()
  for set in "$da" "$db" "${wa[*]}" "${wb[*]}" "$RPID"; do
    # shellcheck disable=SC2086
    c0+=("$(cpu $set)")
  done
  local paced
  paced=$(timeout "$STEP_TIMEOUT" node bench/multihost/latency.js "$pa" "$pb" "$COUNT" 5)
  for set in "$da" "$db" "${wa[*]}" "${wb[*]}" "$RPID"; do
    # shellcheck disable=SC2086
    c1+=("$(cpu $set)")
  done
  echo "{\"setup\":\"$label\",\"paced\":$paced}"
  local names=(daemonA daemonB workersA workersB redis) parts=() total=0
  for i in 0 1 2 3 4; do
    parts+=("\"${names[$i]}\":$(per1000 "${c0[$i]}" "${c1[$i]}" "$COUNT")")
    total=$(echo "$total + ${c1[$i]} - ${c0[$i]}" | bc)
  done
  echo "{\"setup\":\"$label\",\"cpuPer1000Messages\":{$(IFS=,; echo "${parts[*]}"),\"all\":$(per1000 0 "$total" "$COUNT")}}"
  # The burst, with the same CPU accounting: on 2 cores its throughput is bound either by the
  # machine (the sum) or by one process's thread (a part near its wall time).
  c0=()
  for set in "$da" "$db" "${wa[*]}" "${wb[*]}" "$RPID"; do
    # shellcheck disable=SC2086
    c0+=("$(cpu $set)")
  done
  local burst
  burst=$(timeout "$STEP_TIMEOUT" node bench/multihost/latency.js "$pa" "$pb" "$BURST" 0)
  c1=()
  for set in "$da" "$db" "${wa[*]}" "${wb[*]}" "$RPID"; do
    # shellcheck disable=SC2086
    c1+=("$(cpu $set)")
  done
  echo "{\"setup\":\"$label\",\"burst\":$burst}"
  parts=()
  total=0
  for i in 0 1 2 3 4; do
    parts+=("\"${names[$i]}\":$(per1000 "${c0[$i]}" "${c1[$i]}" "$BURST")")
    total=$(echo "$total + ${c1[$i]} - ${c0[$i]}" | bc)
  done
  echo "{\"setup\":\"$label\",\"cpuPer1000BurstMessages\":{$(IFS=,; echo "${parts[*]}"),\"all\":$(per1000 0 "$total" "$BURST")}}"
  echo "{\"setup\":\"$label\",\"requests\":$(timeout "$STEP_TIMEOUT" node bench/multihost/forward.js "$owner" "$other" "$REQS" "$@")}"
}
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
echo "{\"binary\":\"${PM2#"$PWD/"}\",\"commit\":\"$git_rev\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"messages\":$COUNT,\"burst\":$BURST,\"requests\":$REQS,\"rounds\":$ROUNDS}"

# 1. Corral: the bridge, the seed app unchanged (cluster adapter), any node takes any request.
PA=$(free_port)
PB=$(free_port)
HOMES+=(a b)
(cd tests/node && node_env a "$PA" a yes "$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
(cd tests/node && node_env b "$PB" b yes "$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
wait_serving "$PA"
wait_serving "$PB"

# 2. The standard way: @socket.io/redis-adapter in the app, each node sticky on its own,
#    nginx ip_hash in front of both.
PC=$(free_port)
PD=$(free_port)
PN=$(free_port)
HOMES+=(c d)
node_env c "$PC" c no "$PM2" start bench/multihost/redis-adapter/worker.js -i 2 --name chat --sticky >/dev/null
node_env d "$PD" d no "$PM2" start bench/multihost/redis-adapter/worker.js -i 2 --name chat --sticky >/dev/null
wait_serving "$PC"
wait_serving "$PD"
mkdir -p "$TMP/nginx"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP/nginx; proxy_temp_path $TMP/nginx; fastcgi_temp_path $TMP/nginx;
  uwsgi_temp_path $TMP/nginx; scgi_temp_path $TMP/nginx;
  upstream nodes { ip_hash; server 127.0.0.1:$PC; server 127.0.0.1:$PD; }
  server {
    listen 127.0.0.1:$PN;
    location / {
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
CONF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -e "$TMP/nginx/error.log" &
NGINX_PID=$!
wait_serving "$PN"
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
# Which host ip_hash sends this machine's clients to: a session opened through nginx is
# known there only (a connect packet is answered "ok" by its host, 400 elsewhere).
SID=$(curl -fs --max-time 5 "http://127.0.0.1:$PN/socket.io/?EIO=4&transport=polling" | sed -n 's/.*"sid":"\([^"]*\)".*/\1/p')
if curl -fs --max-time 5 -X POST --data 40 "http://127.0.0.1:$PC/socket.io/?EIO=4&transport=polling&sid=$SID" >/dev/null; then
  OWNER_PORT=$PC OWNER_HOME=c
else
  OWNER_PORT=$PD OWNER_HOME=d
fi

OUT="$TMP/lines"
for ROUND in $(seq 1 "$ROUNDS"); do
  # Corral: requests for a session of A, "forwarded" ones sent to B, which forwards them to A.
  measure corral-bridge "$PA" "$PB" a b "127.0.0.1:$PA" "127.0.0.1:$PB" \
    "owner=$(cat "$TMP/a/pm2.pid")" "forwarder=$(cat "$TMP/b/pm2.pid")" $(labelled_workers a) | tee -a "$OUT"
  # The standard way: "local" straight to the session's host, "forwarded" through nginx.
  measure redis-adapter+nginx "$PC" "$PD" c d "127.0.0.1:$OWNER_PORT" "127.0.0.1:$PN" \
    "owner=$(cat "$TMP/$OWNER_HOME/pm2.pid")" "forwarder=$NGINX_WORKER" $(labelled_workers "$OWNER_HOME") | tee -a "$OUT"
done
# Each metric's median over the rounds, per setup.
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def leaves(prefix, v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            leaves(f"{prefix}.{k}" if prefix else k, x, out)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        out.setdefault(prefix, []).append(v)
by = {}
for r in rows:
    d = by.setdefault(r["setup"], {})
    leaves("", {k: v for k, v in r.items() if k not in ("setup", "round")}, d)
for setup, d in by.items():
    med = {k: round(statistics.median(v), 4) for k, v in d.items()}
    print(json.dumps({"setup": setup, "median_of_rounds": len(next(iter(d.values()))), **med}))
PY
