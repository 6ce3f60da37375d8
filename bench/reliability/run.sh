#!/usr/bin/env bash
# Sticky-port floods against one daemon, RSS and fds per flood, and a check after each flood
# that the control socket and a fresh Socket.IO handshake still work.
#
#   bash bench/reliability/run.sh [path/to/pm2] [count]
#
# Defaults: target/debug/pm2, 3000 connections per flood. Loopback only; every flood is
# bounded in count (and by flood.js in time). Prints one JSON line per flood.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="$(realpath "${1:-$root/target/debug/pm2}")"
count="${2:-3000}"
node_dir="$root/tests/node"
[ -d "$node_dir/node_modules" ] || (cd "$node_dir" && npm ci --no-audit --no-fund >/dev/null)
ulimit -n 65536 2>/dev/null || true

home="$(mktemp -d /tmp/corral-flood-XXXXXX)"
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export PM2_HOME="$home" PM2_PORT="$port" PM2_STICKY_HOST=127.0.0.1
cleanup() {
  "$bin" kill >/dev/null 2>&1 || true
  if [ -f "$home/pm2.pid" ]; then kill -9 "$(cat "$home/pm2.pid")" 2>/dev/null || true; fi
  rm -rf "$home"
}
trap cleanup EXIT

# The daemon at a 4096-descriptor limit, as a modest production host would have it.
(ulimit -n 4096 && cd "$node_dir" && "$bin" start sio_worker.js -i 2 --name sio >/dev/null)
pid=$(cat "$home/pm2.pid")
handshake() {
  node -e '
    const http=require("http");
    http.get({host:"127.0.0.1",port:+process.argv[1],path:"/socket.io/?EIO=4&transport=polling",timeout:15000},r=>{
      let b="";r.on("data",d=>b+=d);r.on("end",()=>process.exit(r.statusCode===200&&b.includes("sid")?0:1))
    }).on("error",()=>process.exit(1));' "$port"
}
for _ in $(seq 1 100); do handshake && break; sleep 0.2; done
echo "{\"binary\":\"$bin\",\"daemon_pid\":$pid,\"fd_limit\":$(awk '/Max open files/{print $4}' /proc/$pid/limits),\"rss_idle_kb\":$(awk '/VmRSS/{print $2}' /proc/$pid/status)}"
for kind in partial-head slow-body unknown-sid idle; do
  FLOOD_DURING="$bin jlist" timeout 120 node "$here/flood.js" "$port" "$pid" "$kind" "$count" 5
  ok_ls=0; "$bin" jlist >/dev/null 2>&1 && ok_ls=1
  ok_hs=0; handshake && ok_hs=1
  echo "{\"after\":\"$kind\",\"jlist_ok\":$ok_ls,\"handshake_ok\":$ok_hs}"
done
