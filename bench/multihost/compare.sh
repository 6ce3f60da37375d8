#!/usr/bin/env bash
# Corral's Redis bridge (any node takes any request) side by side with the standard
# alternative for the same two-host topology: the app on @socket.io/redis-adapter, each host
# its own Corral cluster (sticky, no bridge), nginx ip_hash in front. Both hosts are daemons
# on this machine (own PM2_HOME, own port); one redis-server.
#
#   bash bench/multihost/compare.sh [pm2 binary=target/debug/pm2] [messages=2000] [requests=1000]
#
# Prints labelled JSON lines: relay latency (paced, 5 ms), relay throughput (burst), daemon
# and redis cpu-s per 1000 messages, and the cost of polling requests sent to the session's
# node vs to the other node (Corral forwards) or through nginx. Installs nginx (Debian) and the
# redis-adapter app's npm packages when missing. Everything it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
PM2=$(realpath "${1:-target/debug/pm2}")
COUNT=${2:-2000}
REQS=${3:-1000}
command -v nginx >/dev/null || apt-get install -y -q nginx-light >/dev/null || apt-get install -y -q nginx >/dev/null
command -v redis-server >/dev/null || apt-get install -y -q redis-server >/dev/null
[ -d bench/multihost/redis-adapter/node_modules ] || (cd bench/multihost/redis-adapter && npm ci --no-audit --no-fund >/dev/null)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
per1000() { echo "scale=3; ($2 - $1) * 1000 / $3" | bc; }
TMP=$(mktemp -d)
RP=$(free_port)
redis-server --port "$RP" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >/dev/null &
RPID=$!
NGINX_PID=""
HOMES=()
node_env() { # home port id [cluster] -- command
  local home=$1 port=$2 id=$3 cluster=$4; shift 4
  local extra=()
  if [ "$cluster" = yes ]; then
    extra=(PM2_CLUSTER_REDIS="redis://127.0.0.1:$RP/0" PM2_CLUSTER_SECRET=bench-secret-0123456789
      PM2_CLUSTER_LISTEN="127.0.0.1:$(free_port)")
  fi
  env PM2_HOME="$TMP/$home" PM2_PORT="$port" PM2_STICKY_HOST=127.0.0.1 PM2_NODE_ID="$id" \
    BENCH_REDIS_URL="redis://127.0.0.1:$RP" "${extra[@]}" "$@"
}
cleanup() {
  for h in "${HOMES[@]}"; do PM2_HOME="$TMP/$h" "$PM2" kill >/dev/null 2>&1 || true; done
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  kill "$RPID" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
wait_serving() { # port
  for _ in $(seq 1 300); do
    curl -fs "http://127.0.0.1:$1/socket.io/?EIO=4&transport=polling" 2>/dev/null | grep -q '"sid"' && return 0
    sleep 0.1
  done
  echo "port $1 never served Socket.IO" >&2; return 1
}
# Runs latency.js (paced, then burst) and forward.js; $1 label, $2/$3 node ports, $4/$5 the
# daemons, $6 where the session is opened (and its "local" requests go), $7 where the
# forwarded-or-proxied requests go, $8 extra pids (the proxy).
measure() {
  local label=$1 pa=$2 pb=$3 da=$4 db=$5 owner=$6 other=$7 extra=${8:-}
  local a0 b0 r0
  a0=$(cpu "$da"); b0=$(cpu "$db"); r0=$(cpu "$RPID")
  echo "{\"setup\":\"$label\",\"paced\":$(node bench/multihost/latency.js "$pa" "$pb" "$COUNT" 5)}"
  echo "{\"setup\":\"$label\",\"cpuPer1000Messages\":{\"daemonA\":$(per1000 "$a0" "$(cpu "$da")" "$COUNT"),\"daemonB\":$(per1000 "$b0" "$(cpu "$db")" "$COUNT"),\"redis\":$(per1000 "$r0" "$(cpu "$RPID")" "$COUNT")}}"
  echo "{\"setup\":\"$label\",\"burst\":$(node bench/multihost/latency.js "$pa" "$pb" "$COUNT" 0)}"
  # shellcheck disable=SC2086
  echo "{\"setup\":\"$label\",\"requests\":$(node bench/multihost/forward.js "$owner" "$other" "$REQS" "$da" "$db" $extra)}"
}
echo "{\"binary\":\"${PM2#"$PWD/"}\",\"load\":\"$(cut -d' ' -f1-3 /proc/loadavg)\",\"messages\":$COUNT,\"requests\":$REQS}"

# 1. Corral: the bridge, the seed app unchanged (cluster adapter), any node takes any request.
PA=$(free_port); PB=$(free_port)
HOMES+=(a b)
(cd tests/node && node_env a "$PA" a yes "$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
(cd tests/node && node_env b "$PB" b yes "$PM2" start sio_worker.js -i 2 --name chat >/dev/null)
wait_serving "$PA"; wait_serving "$PB"
measure corral-bridge "$PA" "$PB" "$(cat "$TMP/a/pm2.pid")" "$(cat "$TMP/b/pm2.pid")" "127.0.0.1:$PA" "127.0.0.1:$PB"
for h in a b; do PM2_HOME="$TMP/$h" "$PM2" kill >/dev/null 2>&1 || true; done

# 2. The standard way: @socket.io/redis-adapter in the app, each node sticky on its own,
#    nginx ip_hash in front of both.
PC=$(free_port); PD=$(free_port); PN=$(free_port)
HOMES+=(c d)
node_env c "$PC" c no "$PM2" start bench/multihost/redis-adapter/worker.js -i 2 --name chat --sticky >/dev/null
node_env d "$PD" d no "$PM2" start bench/multihost/redis-adapter/worker.js -i 2 --name chat --sticky >/dev/null
wait_serving "$PC"; wait_serving "$PD"
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
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" &
NGINX_PID=$!
wait_serving "$PN"
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)
# Requests: every one through nginx (ip_hash sends this client to one node, the one that
# opened the session), so both rows are "through the proxy"; compare with Corral's local row.
measure redis-adapter+nginx "$PC" "$PD" "$(cat "$TMP/c/pm2.pid")" "$(cat "$TMP/d/pm2.pid")" "127.0.0.1:$PN" "127.0.0.1:$PN" "$NGINX_WORKER"
