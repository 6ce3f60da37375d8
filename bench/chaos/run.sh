#!/usr/bin/env bash
# Chaos under load, Corral and (when installed) the incumbent @socket.io/pm2 side by side: the seed Socket.IO
# app of bench/app (2 cluster workers, sticky port), long-lived Socket.IO clients, new sessions and plain HTTP
# through the sticky port, while chaos.js kills workers (-9), stops and continues one (SIGSTOP/SIGCONT) and
# kills the daemon (-9) once; see chaos.js for what is counted.
#
#   bash bench/chaos/run.sh [--secs 90] [--seed 1] [--targets "corral incumbent"] [--corral path/to/pm2]
#
# Needs node + npm, jq. bench/node_modules is installed with npm ci when missing; the incumbent is used from
# bench/.work/incumbent (bench/run.sh installs it there: npm ci with bench/targets/incumbent's lockfile), and
# skipped with a note when absent. One JSON line per target on stdout; logs and raw output under
# bench/.work/chaos/<stamp>/. Loopback only; every load is bounded by --secs (and a hard cap in chaos.js).
# Every daemon started is stopped with `pm2 kill`, then SIGKILLed by pid if anything of its PM2_HOME is left.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bench="$(cd "$here/.." && pwd)"
root="$(cd "$bench/.." && pwd)"
secs=90; seed=1; targets="corral incumbent"; corral="$root/target/debug/pm2"
while [ $# -gt 0 ]; do
  case "$1" in
    --secs) secs="$2"; shift ;;
    --seed) seed="$2"; shift ;;
    --targets) targets="$2"; shift ;;
    --corral) corral="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
corral="$(realpath "$corral")"
incumbent="$bench/.work/incumbent/node_modules/@socket.io/pm2/bin/pm2"
[ -d "$bench/node_modules/socket.io-client" ] || (cd "$bench" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
out="$bench/.work/chaos/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
log() { echo "[chaos-run $(date -u +%H:%M:%S)] $*" | tee -a "$out/run.log" >&2; }
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

CUR_HOME=""; CUR_BIN=""
stop_daemon() {
  [ -n "$CUR_HOME" ] && [ -d "$CUR_HOME" ] || return 0
  PM2_HOME="$CUR_HOME" timeout 30 "$CUR_BIN" kill >/dev/null 2>&1 || true
  sleep 0.3
  local p
  for p in $(ls /proc | grep -E '^[0-9]+$'); do
    { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qx "PM2_HOME=$CUR_HOME" || continue
    [ "$p" = "$$" ] && continue
    log "pid $p of $CUR_HOME survived pm2 kill: SIGKILL"; kill -9 "$p" 2>/dev/null || true
  done
  CUR_HOME=""
}
trap stop_daemon EXIT
trap 'log interrupted; exit 130' INT TERM

for t in $targets; do
  case "$t" in
    corral) CUR_BIN="$corral" ;;
    incumbent) CUR_BIN="$incumbent" ;;
    *) log "unknown target $t"; continue ;;
  esac
  if [ ! -x "$CUR_BIN" ]; then
    log "$t: $CUR_BIN not found, skipped (bench/run.sh installs the incumbent)"
    echo "{\"target\":\"$t\",\"skipped\":\"$CUR_BIN not found\"}"
    continue
  fi
  CUR_HOME="$out/home-$t"; mkdir -p "$CUR_HOME/state"
  export PM2_HOME="$CUR_HOME" BENCH_STATE_DIR="$CUR_HOME/state" PM2_STICKY_HOST=127.0.0.1
  PM2_PORT="$(free_port)"; export PM2_PORT
  load0="$(cut -d' ' -f1-3 /proc/loadavg)"
  log "$t: start the seed app (PM2_HOME=$PM2_HOME, port $PM2_PORT), load $load0"
  (cd "$bench/app" && timeout 90 "$CUR_BIN" start ecosystem.config.js > "$out/$t-start.log" 2>&1) || log "$t: start exited $?"
  for _ in $(seq 1 150); do
    n=$(timeout 10 "$CUR_BIN" jlist 2>/dev/null | sed -n '/^\[/,$p' | jq '[.[] | select(.pm2_env.status=="online" and .pid>0)] | length' 2>/dev/null || echo 0)
    [ "${n:-0}" -ge 2 ] && break
    sleep 0.2
  done
  for _ in $(seq 1 75); do
    curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PM2_PORT/bench/ping" 2>/dev/null | grep -q '^200$' && break
    sleep 0.2
  done
  timeout 30 "$CUR_BIN" save > "$out/$t-save.log" 2>&1 || log "$t: save exited $?"
  dpid0="$(cat "$CUR_HOME/pm2.pid" 2>/dev/null)"
  timeout $((secs + 300)) node "$here/chaos.js" --pm2 "$CUR_BIN" --port "$PM2_PORT" --secs "$secs" --seed "$seed" \
    > "$out/$t.json" 2> "$out/$t.log"
  rc=$?
  load1="$(cut -d' ' -f1-3 /proc/loadavg)"
  dpid="$(cat "$CUR_HOME/pm2.pid" 2>/dev/null)"
  rss=$(awk '/VmRSS/{print $2}' "/proc/$dpid/status" 2>/dev/null || echo null)
  fds=$(ls "/proc/$dpid/fd" 2>/dev/null | wc -l)
  restarts=$(timeout 10 "$CUR_BIN" jlist 2>/dev/null | sed -n '/^\[/,$p' | jq -c '[.[] | {name, status: .pm2_env.status, restarts: .pm2_env.restart_time}]' 2>/dev/null || echo null)
  tail -n 1 "$out/$t.log" >&2
  jq -c --arg t "$t" --arg bin "$CUR_BIN" --arg l0 "$load0" --arg l1 "$load1" --argjson rc "$rc" \
    --arg d0 "$dpid0" --arg d1 "$dpid" --argjson rss "${rss:-null}" --argjson fds "${fds:-0}" --argjson apps "${restarts:-null}" \
    '{target: $t, binary: $bin, loadavg_before: $l0, loadavg_after: $l1, exit: $rc, daemon_pid_before: $d0, daemon_pid_after: $d1,
      daemon_rss_kb_after: $rss, daemon_fds_after: $fds, apps_after: $apps} + .' "$out/$t.json" 2>/dev/null \
    || echo "{\"target\":\"$t\",\"exit\":$rc,\"raw\":\"$out/$t.json\"}"
  stop_daemon
done
log "raw output in $out"
