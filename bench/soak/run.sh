#!/usr/bin/env bash
# Soak: up to 1 million Socket.IO sessions through the sticky port at a bounded rate against the seed app of
# bench/app (2 cluster workers), the daemon's RSS and descriptors sampled throughout (see soak.js).
#
#   bash bench/soak/run.sh [--n 1000000] [--rate 400] [--max-secs 3600] [--corral path/to/pm2]
#
# At the default rate 1 million sessions take about 42 minutes; --max-secs bounds the run whatever --n says.
# One JSON line on stdout (soak.js's result plus the machine's load average); raw output under
# bench/.work/soak/<stamp>/. Loopback only. The daemon is stopped with `pm2 kill`, then SIGKILLed by pid if
# anything of its PM2_HOME is left.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="$(cd "$here/.." && pwd)"
root="$(cd "$bench/.." && pwd)"
n=1000000; rate=400; max=3600; corral="$root/target/debug/pm2"
while [ $# -gt 0 ]; do
  case "$1" in
    --n) n="$2"; shift ;;
    --rate) rate="$2"; shift ;;
    --max-secs) max="$2"; shift ;;
    --corral) corral="$2"; shift ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
bin="$(realpath "$corral")"
[ -d "$bench/node_modules/ws" ] || (cd "$bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
out="$bench/.work/soak/$(date -u +%Y%m%d-%H%M%S)"
home="$out/home"; mkdir -p "$home"
export PM2_HOME="$home" PM2_STICKY_HOST=127.0.0.1
PM2_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
export PM2_PORT
cleanup() {
  timeout 30 "$bin" kill >/dev/null 2>&1 || true
  local p
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    [ "$p" = "$$" ] && continue
    { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qx "PM2_HOME=$home" && kill -9 "$p" 2>/dev/null
  done
  return 0
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true
(cd "$bench/app" && timeout 90 "$bin" start ecosystem.config.js > "$out/start.log" 2>&1)
for _ in $(seq 1 75); do
  curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PM2_PORT/bench/ping" 2>/dev/null | grep -q '^200$' && break
  sleep 0.2
done
dpid="$(cat "$home/pm2.pid")"
load0="$(cut -d' ' -f1-3 /proc/loadavg)"
echo "[soak-run] daemon $dpid, port $PM2_PORT, $bin, load $load0; raw output in $out" >&2
timeout $((max + 120)) node "$here/soak.js" --port "$PM2_PORT" --daemon "$dpid" --n "$n" --rate "$rate" --max-secs "$max" \
  > "$out/soak.json" 2> >(tee "$out/soak.log" >&2)
rc=$?
load1="$(cut -d' ' -f1-3 /proc/loadavg)"
restarts=$(timeout 10 "$bin" jlist 2>/dev/null | jq -c '[.[] | {status: .pm2_env.status, restarts: .pm2_env.restart_time}]' 2>/dev/null || echo null)
jq -c --arg bin "$bin" --arg l0 "$load0" --arg l1 "$load1" --argjson rc "$rc" --argjson apps "${restarts:-null}" \
  '{binary: $bin, loadavg_before: $l0, loadavg_after: $l1, exit: $rc, apps_after: $apps} + (. | del(.samples)) + {samples: .samples}' "$out/soak.json" \
  || echo "{\"exit\":$rc,\"raw\":\"$out/soak.json\"}"
