#!/usr/bin/env bash
# Corral benchmark suite: the same workloads against the incumbent (@socket.io/pm2 6.0.14, and classic
# pm2 7.x for the control-plane rows) and Corral, alternating order, in one run.
#
#   bash bench/run.sh [--quick] [--runs N] [--rows "1 2 3 4 5 6 7 8"] [--no-classic] [--no-nginx]
#
#   --quick        one repetition of rows 1-3 (under 2 minutes once installed and built; no nginx)
#   --runs N       repetitions (default 2; targets alternate order every repetition)
#   --rows LIST    subset of rows (default: all)
#   --no-classic   skip classic pm2 (it runs in the first repetition only; rows 1, 2 and 8)
#   --no-nginx     skip the deployment without a process manager (rows 3, 4 and 6: nginx ip_hash in front
#                  of two plain node workers of the seed app on @socket.io/redis-adapter + redis-server)
#   --curves       also the scale curves (rows 9-12, Corral only, first repetition): relay cost by worker
#                  count, daemon cost by number of fork apps, by idle Socket.IO sessions (1k-50k), and
#                  hand-off capacity by concurrency (sticky port and cluster mode)
#
# Environment: CORRAL_BIN=/path/to/pm2 (skip `cargo build --release`), BENCH_OUT=dir (results folder),
# BENCH_NO_HYPERFINE=1 / BENCH_NO_WRK=1 (use the node fallbacks even when the tools are installed),
# BENCH_NO_FLOOR=1 (skip bench/floor), BENCH_TARGETS="corral nginx" (only these of the targets selected),
# BENCH_CURVES="relay apps hold cap" (only these scale curves), BENCH_HOLD_LEVELS, BENCH_HOLD_RATE (sessions).
# Results: bench/.work/results/<stamp>/ (raw JSON per target/repetition/workload, run.log, summary.md);
# the summary is printed and written to BENCHMARKS.md at the repository root, above the marker line that
# keeps the hand-written sections below it (other bench scripts, before/after comparisons).
#
# Every target gets its own PM2_HOME under bench/.work/homes and its own free port on 127.0.0.1; every
# daemon started is stopped with `pm2 kill` and then SIGKILLed by pid (pm2.pid and the pids recorded
# from jlist) even when a workload fails or the script is interrupted.
set -uo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
WORK="$BENCH/.work"
QUICK=0
RUNS=""
ROWS="1 2 3 4 5 6 7 8"
CLASSIC=1
PEER=1
CURVES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --runs) RUNS="$2"; shift ;;
    --rows) ROWS="$2"; shift ;;
    --no-classic) CLASSIC=0 ;;
    --no-nginx) PEER=0 ;;
    --curves) CURVES=1 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  RUNS="${RUNS:-1}"; ROWS="1 2 3"; CLASSIC=0; PEER=0
fi
RUNS="${RUNS:-2}"
STAMP="$(date -u +%Y%m%d-%H%M%S)"
OUT="${BENCH_OUT:-$WORK/results/$STAMP}"
LG="$BENCH/lg/lg.js"
T_START=$(date +%s)
mkdir -p "$OUT" "$WORK/homes"

log() { echo "[bench $(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2; }
row() { [[ " $ROWS " == *" $1 "* ]]; }
row 3 || row 4 || row 6 || PEER=0
die() { log "FATAL: $*"; exit 1; }

# Workload sizes (quick / full). Every load has a count and a time bound.
if [ "$QUICK" = 1 ]; then
  IDLE_S=5; CLI_RUNS=5; CLI_WARM=1; CLI_RW_RUNS=1; SESSIONS=500
else
  IDLE_S=6; CLI_RUNS=8; CLI_WARM=2; CLI_RW_RUNS=2; SESSIONS=1000
fi

# ---------------------------------------------------------------------------------------------- setup
command -v node >/dev/null || die "node is required"
command -v npm >/dev/null || die "npm is required"
command -v jq >/dev/null || { log "installing jq"; apt-get install -y jq >/dev/null 2>&1 || die "jq is required"; }
command -v hyperfine >/dev/null || { apt-get install -y hyperfine >/dev/null 2>&1 && log "installed hyperfine"; }
command -v wrk >/dev/null || { apt-get install -y wrk >/dev/null 2>&1 && log "installed wrk"; }
HAVE_HYPERFINE=0; command -v hyperfine >/dev/null && [ -z "${BENCH_NO_HYPERFINE:-}" ] && HAVE_HYPERFINE=1
HAVE_WRK=0; command -v wrk >/dev/null && [ -z "${BENCH_NO_WRK:-}" ] && HAVE_WRK=1

npm_ci() { # npm_ci DIR LOCKDIR: npm ci in DIR with LOCKDIR's package.json + lockfile, skipped when unchanged
  local dir="$1" src="$2"
  mkdir -p "$dir"
  if [ -d "$dir/node_modules" ] && cmp -s "$src/package-lock.json" "$dir/node_modules/.bench-installed-lock.json"; then return 0; fi
  [ "$dir" != "$src" ] && cp "$src/package.json" "$src/package-lock.json" "$dir/"
  log "npm ci in ${dir#$ROOT/}"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >> "$OUT/setup.log" 2>&1) || die "npm ci failed in $dir (see $OUT/setup.log)"
  cp "$src/package-lock.json" "$dir/node_modules/.bench-installed-lock.json"
}
npm_ci "$BENCH" "$BENCH"
npm_ci "$WORK/incumbent" "$BENCH/targets/incumbent"
[ "$CLASSIC" = 1 ] && npm_ci "$WORK/classic" "$BENCH/targets/classic"
if [ "$PEER" = 1 ]; then
  # The deployment the Socket.IO docs give without pm2: Debian's nginx and redis-server, the adapter
  # packages pinned by bench/multihost/redis-adapter's lockfile, the worker copied next to them.
  command -v nginx >/dev/null || { log "installing nginx"; apt-get install -y -q nginx >> "$OUT/setup.log" 2>&1; }
  command -v redis-server >/dev/null || { log "installing redis-server"; apt-get install -y -q redis-server >> "$OUT/setup.log" 2>&1; }
  if command -v nginx >/dev/null && command -v redis-server >/dev/null; then
    npm_ci "$WORK/peer" "$BENCH/multihost/redis-adapter"
    cp "$BENCH/app/peer-worker.js" "$WORK/peer/worker.js"
  else
    log "nginx or redis-server missing and not installable: no nginx column"; PEER=0
  fi
fi
INCUMBENT_BIN="$WORK/incumbent/node_modules/@socket.io/pm2/bin/pm2"
CLASSIC_BIN="$WORK/classic/node_modules/pm2/bin/pm2"

if [ -n "${CORRAL_BIN:-}" ]; then
  CORRAL_BIN="$(readlink -f "$CORRAL_BIN")"
else
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release >> "$OUT/setup.log" 2>&1) || die "cargo build --release failed (see $OUT/setup.log)"
  CORRAL_BIN="$ROOT/target/release/pm2"
fi
[ -x "$CORRAL_BIN" ] || die "Corral binary not found: $CORRAL_BIN"
# Measure a snapshot: a rebuild of target/release/pm2 during the run (other work in the same tree) would
# otherwise pair a new CLI with an old daemon.
mkdir -p "$OUT/corral-bin"
cp "$CORRAL_BIN" "$OUT/corral-bin/pm2" || die "cannot copy $CORRAL_BIN"
CORRAL_SRC="$CORRAL_BIN"
CORRAL_BIN="$OUT/corral-bin/pm2"

# The floor: the irreducible syscall work of each hot path on this machine (bench/floor), so every
# daemon cost below can be read as a ratio to what no implementation can avoid.
if [ -n "${BENCH_NO_FLOOR:-}" ]; then
  log "floor skipped (BENCH_NO_FLOOR)"
elif log "floor (bench/floor, release)"; (cd "$ROOT" && cargo build --release -p corral-bench-floor >> "$OUT/setup.log" 2>&1); then
  FLOOR_N=20000; [ "$QUICK" = 1 ] && FLOOR_N=5000
  timeout 120 "$ROOT/target/release/floor" --n "$FLOOR_N" --reps 3 > "$OUT/floor.json" 2>> "$OUT/run.log" \
    || { log "floor failed (see run.log)"; rm -f "$OUT/floor.json"; }
else
  log "cannot build bench/floor (see setup.log): no floor ratios in this run"
fi

TARGETS=(incumbent corral)
[ "$CLASSIC" = 1 ] && TARGETS+=(classic)
[ "$PEER" = 1 ] && TARGETS+=(nginx)
if [ -n "${BENCH_TARGETS:-}" ]; then
  only=(); for t in "${TARGETS[@]}"; do [[ " $BENCH_TARGETS " == *" $t "* ]] && only+=("$t"); done; TARGETS=("${only[@]}")
fi
bin_of() { case "$1" in incumbent) echo "$INCUMBENT_BIN" ;; classic) echo "$CLASSIC_BIN" ;; corral) echo "$CORRAL_BIN" ;; esac; }

{
  echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "mode=$([ "$QUICK" = 1 ] && echo quick || echo full)"
  echo "runs=$RUNS"
  echo "rows=$ROWS"
  echo "nproc=$(nproc)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory=$(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "kernel=$(uname -sr)"
  echo "node=$(node -v)"
  echo "incumbent=@socket.io/pm2 $(jq -r .version "$WORK/incumbent/node_modules/@socket.io/pm2/package.json")"
  if [ "$CLASSIC" = 1 ]; then
    # newest pm2 7.x on the registry (one lookup; the pinned version is in targets/classic)
    newest7="$(timeout 20 npm view 'pm2@7' version --json 2>/dev/null | jq -r 'if type=="array" then .[-1] else . end' 2>/dev/null)"
    pinned="$(jq -r .version "$WORK/classic/node_modules/pm2/package.json")"
    echo "classic=pm2 $pinned (repetition 1 only)$([ -n "$newest7" ] && [ "$newest7" != "$pinned" ] && echo "; note: newest 7.x on npm is $newest7, update targets/classic")"
  fi
  [ "$PEER" = 1 ] && echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //') ip_hash (worker_processes auto, access_log off) in front of 2 plain node workers of the seed app on @socket.io/redis-adapter $(jq -r .version "$WORK/peer/node_modules/@socket.io/redis-adapter/package.json") + $(redis-server --version | awk '{print $1, $3}' | sed 's/v=//'); clients from 8 source addresses 127.0.k.1"
  echo "corral=${CORRAL_SRC#"$ROOT"/} ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null)$(cd "$ROOT" && git diff --quiet HEAD -- crates src Cargo.toml 2>/dev/null || echo ', dirty tree'))"
  echo "socket.io=$(jq -r .version "$BENCH/node_modules/socket.io/package.json"), socket.io-client $(jq -r .version "$BENCH/node_modules/socket.io-client/package.json"), @socket.io/sticky $(jq -r .version "$BENCH/node_modules/@socket.io/sticky/package.json"), @socket.io/cluster-adapter $(jq -r .version "$BENCH/node_modules/@socket.io/cluster-adapter/package.json")"
  echo "cli_timer=$([ "$HAVE_HYPERFINE" = 1 ] && hyperfine --version || echo 'node loop (lg.js timeit)')"
  echo "plain_generator=$([ "$HAVE_WRK" = 1 ] && wrk -v 2>&1 | head -1 | awk '{print $1, $2}' || echo 'node (lg.js plain)')"
} > "$OUT/machine.txt"
SETUP_S=$(( $(date +%s) - T_START ))
T_START=$(date +%s)
log "results: $OUT (setup took ${SETUP_S} s)"
log "targets: ${TARGETS[*]}; runs: $RUNS; rows: $ROWS"

# ---------------------------------------------------------------------------------------------- helpers
free_port() {
  local p i
  for i in $(seq 1 100); do
    p=$(( 20000 + RANDOM % 10000 ))
    ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
  done
  return 1
}

CUR_BIN=""; CUR_HOME=""
DPID=""; WPIDS=""
record_pids() { # daemon from pm2.pid, online workers from jlist (waits for at least $1 of them)
  local want="${1:-2}" i
  for i in $(seq 1 75); do
    DPID="$(cat "$PM2_HOME/pm2.pid" 2>/dev/null || true)"
    WPIDS="$(timeout 10 "$CUR_BIN" jlist 2>/dev/null | jq -r '[.[] | select(.pm2_env.status=="online" and .pid > 0) | .pid] | join(",")' 2>/dev/null || true)"
    [ -n "$DPID" ] && [ "$(echo "$WPIDS" | tr ',' '\n' | grep -c '[0-9]')" -ge "$want" ] && break
    sleep 0.2
  done
  for p in $DPID ${WPIDS//,/ }; do echo "$p" >> "$CUR_HOME/.bench-pids"; done
  if [ -z "$DPID" ] || [ "$(echo "$WPIDS" | tr ',' '\n' | grep -c '[0-9]')" -lt "$want" ]; then
    local out rc
    out="$(timeout 10 "$CUR_BIN" jlist 2>&1 | head -c 300)"; rc=$?
    log "  WARNING: daemon '${DPID:-none}', online workers '${WPIDS}' (wanted $want); '$CUR_BIN jlist' said: ${out:-<nothing>}"
  fi
}

stop_daemon() { # pm2 kill, then SIGKILL by pid anything of this PM2_HOME that survived
  [ -n "$CUR_HOME" ] && [ -d "$CUR_HOME" ] || return 0
  local p
  [ -f "$CUR_HOME/pm2.pid" ] && cat "$CUR_HOME/pm2.pid" >> "$CUR_HOME/.bench-pids" 2>/dev/null
  PM2_HOME="$CUR_HOME" timeout 30 "$CUR_BIN" kill > "$CUR_HOME/kill.log" 2>&1 || log "  pm2 kill failed (rc $?)"
  sleep 0.3
  [ -f "$CUR_HOME/.bench-pids" ] || return 0
  for p in $(sort -un "$CUR_HOME/.bench-pids"); do
    [ -d "/proc/$p" ] || continue
    if { tr '\0' '\n' < "/proc/$p/environ"; } 2>/dev/null | grep -qx "PM2_HOME=$CUR_HOME"; then
      log "  pid $p survived pm2 kill: SIGKILL"; kill -9 "$p" 2>/dev/null || true
    fi
  done
  : > "$CUR_HOME/.bench-pids.done"; mv "$CUR_HOME/.bench-pids" "$CUR_HOME/.bench-pids.done"
}
# The nginx deployment (no process manager): redis-server, two plain node workers, nginx. Every process
# is recorded as "pid start-time" (field 22 of /proc/<pid>/stat: a reused pid has another one; an
# environment marker would not do, nginx and redis-server write their titles over it); stop_peer sends
# TERM, then SIGKILL, to the recorded processes that are still the same processes.
PEER_DIR=""; NGINX_PID=""; REDIS_PID=""; PEER_PORT=""
starttime() { local s; s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1; s="${s##*) }"; set -- $s; echo "${20}"; }
peer_record() { local t; t="$(starttime "$1")" && echo "$1 $t" >> "$PEER_DIR/.pids"; }
peer_spawn() { # peer_spawn LOG command...: start in the background, record the process
  local logf="$1"; shift
  "$@" > "$logf" 2>&1 &
  PEER_LAST=$!
  peer_record "$PEER_LAST"
}
start_peer() { # start_peer NAME: sets DPID (nginx master + workers), WPIDS, REDIS_PID, PEER_PORT
  stop_daemon; stop_peer
  PEER_DIR="$WORK/homes/$STAMP-$1"
  rm -rf "$PEER_DIR"; mkdir -p "$PEER_DIR/nginx/tmp" "$PEER_DIR/redis" "$PEER_DIR/state"
  : > "$PEER_DIR/.pids"
  export BENCH_STATE_DIR="$PEER_DIR/state"
  local rp w1 w2 i p
  rp="$(free_port)" && w1="$(free_port)" && w2="$(free_port)" && PEER_PORT="$(free_port)" || { log "  no free port"; return 1; }
  [ "$w1" != "$w2" ] && [ "$PEER_PORT" != "$w1" ] && [ "$PEER_PORT" != "$w2" ] && [ "$rp" != "$w1" ] || { log "  port clash, retry"; return 1; }
  peer_spawn "$PEER_DIR/redis.log" redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$PEER_DIR/redis" --daemonize no
  REDIS_PID=$PEER_LAST
  for i in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rp") 2>/dev/null && break; sleep 0.1; done
  WPIDS=""
  for p in "$w1" "$w2"; do
    (cd "$WORK/peer" && peer_spawn "$PEER_DIR/worker-$p.log" env BENCH_WORKER_PORT="$p" BENCH_REDIS_URL="redis://127.0.0.1:$rp" \
      BENCH_PROBES="$BENCH/app/probes.js" node worker.js; echo "$PEER_LAST" > "$PEER_DIR/pid-$p")
    WPIDS="${WPIDS:+$WPIDS,}$(cat "$PEER_DIR/pid-$p")"
  done
  # The Socket.IO docs' nginx.conf (ip_hash variant); access log off (Corral and pm2 keep none either);
  # own prefix, pid, temp and log paths; workers run as the current user.
  local user=""
  [ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
  cat > "$PEER_DIR/nginx/nginx.conf" <<CONF
worker_processes auto;
$user
pid $PEER_DIR/nginx/nginx.pid;
error_log $PEER_DIR/nginx/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $PEER_DIR/nginx/tmp/body; proxy_temp_path $PEER_DIR/nginx/tmp/proxy;
  fastcgi_temp_path $PEER_DIR/nginx/tmp/fastcgi; uwsgi_temp_path $PEER_DIR/nginx/tmp/uwsgi;
  scgi_temp_path $PEER_DIR/nginx/tmp/scgi;
  upstream nodes {
    ip_hash;
    server 127.0.0.1:$w1;
    server 127.0.0.1:$w2;
  }
  server {
    listen 127.0.0.1:$PEER_PORT;
    location / {
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header Host \$host;
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
    }
  }
}
CONF
  # -e: the error log before the configuration is read (else nginx tries /var/log/nginx)
  local elog=(); nginx -h 2>&1 | grep -q -- ' -e ' && elog=(-e "$PEER_DIR/nginx/error.log")
  peer_spawn "$PEER_DIR/nginx/stderr.log" nginx -p "$PEER_DIR/nginx" -c "$PEER_DIR/nginx/nginx.conf" "${elog[@]}"
  NGINX_PID=$PEER_LAST
  wait_port "$w1" /bench/ping && wait_port "$w2" /bench/ping && wait_port "$PEER_PORT" /socket.io/?EIO=4\&transport=polling || return 1
  # nginx's workers are the master's children; their pids are recorded for the cleanup too
  DPID="$NGINX_PID"
  for p in $(cat "/proc/$NGINX_PID/task/$NGINX_PID/children" 2>/dev/null); do DPID="$DPID,$p"; peer_record "$p"; done
  log "  nginx $DPID on 127.0.0.1:$PEER_PORT, workers $WPIDS on $w1 and $w2, redis-server $REDIS_PID on $rp"
}
peer_alive() { # the recorded processes still running (same pid, same start time, not a zombie)
  local p t st
  while read -r p t; do
    [ "$(starttime "$p")" = "$t" ] || continue
    st="$(cat "/proc/$p/stat" 2>/dev/null)"; st="${st##*) }"
    [ "${st:0:1}" = Z ] || echo "$p"
  done < "$PEER_DIR/.pids"
}
stop_peer() {
  [ -n "$PEER_DIR" ] && [ -f "$PEER_DIR/.pids" ] || return 0
  local p i left
  # TERM: fast shutdown for nginx (QUIT would wait for open websockets), redis-server and node
  for p in $(peer_alive); do kill -TERM "$p" 2>/dev/null; done
  for i in $(seq 1 50); do
    left="$(peer_alive)"
    [ -z "$left" ] && break
    sleep 0.1
  done
  for p in $(peer_alive); do log "  pid $p of the nginx deployment survived TERM: SIGKILL"; kill -9 "$p" 2>/dev/null || true; done
  mv "$PEER_DIR/.pids" "$PEER_DIR/.pids.done"
  NGINX_PID=""; REDIS_PID=""
}
trap 'stop_daemon; stop_peer' EXIT
trap 'log "interrupted"; exit 130' INT TERM

new_home() { # new_home NAME: fresh PM2_HOME + state dir + port
  stop_daemon
  CUR_HOME="$WORK/homes/$STAMP-$1"
  rm -rf "$CUR_HOME"; mkdir -p "$CUR_HOME/state"
  export PM2_HOME="$CUR_HOME" BENCH_STATE_DIR="$CUR_HOME/state" PM2_STICKY_HOST=127.0.0.1
  PM2_PORT="$(free_port)" || die "no free port"; export PM2_PORT
  DPID=""; WPIDS=""
}

lg() { # lg NAME TIMEOUT command args...: one lg.js run, JSON to $RD/NAME.json
  local name="$1" secs="$2"; shift 2
  timeout "$secs" node "$LG" --port "${LG_PORT:-$PM2_PORT}" --daemon "${DPID:-0}" --workers "${WPIDS:-0}" \
    --aux "${LG_AUX:-0}" --sources "${LG_SOURCES:-0}" --cap-secs "$(( secs - 5 ))" "$@" \
    > "$RD/$name.json" 2>> "$RD/lg.log"
  local rc=$?
  tail -n 1 "$RD/lg.log" | cut -c1-300 | sed 's/^/    /' >&2
  [ $rc -ne 0 ] && log "  $name: lg.js exited $rc"
  return 0
}

pm2_start() { # pm2_start CONFIG LOGNAME WORKERS: start an ecosystem file from bench/app, wait for WORKERS online
  local t0 t1 rc
  t0=$(date +%s%N)
  (cd "$BENCH/app" && timeout 90 "$CUR_BIN" start "$1" > "$RD/$2.log" 2>&1); rc=$?
  t1=$(date +%s%N)
  [ $rc -ne 0 ] && log "  '$CUR_BIN start $1' exited $rc: $(tail -n 3 "$RD/$2.log" | tr '\n' ' ' | cut -c1-300)"
  record_pids "$3"
  echo "{\"cli_ms\": $(( (t1 - t0) / 1000000 )), \"exit\": $rc, \"daemon\": \"$DPID\", \"online\": $(echo "$WPIDS" | tr ',' '\n' | grep -c '[0-9]')}" > "$RD/$2.json"
  log "  $1: cli $(( (t1 - t0) / 1000000 )) ms, daemon ${DPID:-none}, online $(echo "$WPIDS" | tr ',' '\n' | grep -c '[0-9]')"
}

wait_port() { # wait (≤ 15 s) until an HTTP request through PM2_PORT gets a worker's answer
  local i
  for i in $(seq 1 75); do
    curl -s -m 2 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1$2" 2>/dev/null | grep -q '^200$' && return 0
    sleep 0.2
  done
  log "  port $1 did not answer 200 on $2 within 15 s"
  return 1
}

cli_times() { # cli_times NAME WARMUP RUNS cmd...  (hyperfine, or a bounded node loop)
  local name="$1" warm="$2" runs="$3"; shift 3
  if [ "$HAVE_HYPERFINE" = 1 ]; then
    (cd "$BENCH/app" && timeout 120 hyperfine -N --warmup "$warm" --runs "$runs" --export-json "$RD/cli-$name.json" "$*" > "$RD/cli-$name.txt" 2>&1) \
      || log "  hyperfine '$*' failed: $(tail -n 2 "$RD/cli-$name.txt" | tr '\n' ' ' | cut -c1-200)"
    [ -f "$RD/cli-$name.json" ] && log "  $name: median $(jq -r '.results[0].median*1000|floor' "$RD/cli-$name.json") ms"
  else
    (cd "$BENCH/app" && timeout 120 node "$LG" timeit --warmup "$warm" --runs "$runs" -- "$@" > "$RD/cli-$name.json" 2>> "$RD/lg.log")
    tail -n 1 "$RD/lg.log" | sed 's/^/    /' >&2
  fi
}

# ---------------------------------------------------------------------------------------------- one target
run_target() { # run_target TARGET REP
  local t="$1" rep="$2"
  CUR_BIN="$(bin_of "$t")"
  RD="$OUT/$t/r$rep"; mkdir -p "$RD"
  local routing=1; [ "$t" = classic ] && routing=0

  # Phase A: the seed Socket.IO app (2 cluster workers)
  if row 1 || row 2 || { [ $routing = 1 ] && { row 3 || row 4 || row 5 || row 6 || row 7; }; }; then
    new_home "$t-r$rep-seed"
    log "=== $t r$rep: seed app, PM2_HOME=$PM2_HOME PM2_PORT=$PM2_PORT"
    pm2_start ecosystem.config.js start-seed 2
    [ $routing = 1 ] && wait_port "$PM2_PORT" /socket.io/?EIO=4\&transport=polling
    if row 1; then
      sleep 2
      lg idle-seed 40 idle --secs "$IDLE_S"
    fi
    if row 2; then
      log "  row 2: CLI ($([ $HAVE_HYPERFINE = 1 ] && echo hyperfine || echo 'node loop'))"
      cli_times list "$CLI_WARM" "$CLI_RUNS" "$CUR_BIN" list
      cli_times jlist "$CLI_WARM" "$CLI_RUNS" "$CUR_BIN" jlist
      cli_times describe "$CLI_WARM" "$CLI_RUNS" "$CUR_BIN" describe 0
      cli_times restart "0" "$CLI_RW_RUNS" "$CUR_BIN" restart all
      cli_times reload "0" "$CLI_RW_RUNS" "$CUR_BIN" reload all
      record_pids 2
      [ $routing = 1 ] && wait_port "$PM2_PORT" /socket.io/?EIO=4\&transport=polling
    fi
    if [ $routing = 1 ]; then
      row 3 && { log "  row 3: $SESSIONS new sessions, 20 in flight"; lg sessions 60 sessions --n "$SESSIONS" --concurrency 20 --max-secs 40; }
      row 4 && { log "  row 4: polling echo, 20 clients, 8 s"; lg polling 45 polling --clients 20 --secs 8 --payload 16; }
      if row 5; then
        log "  row 5: plain routing /bench/ping, 16 connections, 6 s"
        if [ "$HAVE_WRK" = 1 ]; then
          lg plain 40 wrk -- wrk -t1 -c16 -d6s --latency "http://127.0.0.1:$PM2_PORT/bench/ping"
        else
          lg plain 40 plain --conns 16 --secs 6 --path /bench/ping
        fi
      fi
      if row 6; then
        log "  row 6: broadcast relay (10 clients; 10000 burst + 4000 paced at 500/s)"
        lg bcast-json 60 broadcast --kind json --clients 10 --burst 10000 --rate 500 --paced 4000
        lg bcast-bin 60 broadcast --kind binary --size 1024 --clients 10 --burst 10000 --rate 500 --paced 4000
      fi
      if row 7; then
        log "  row 7: reload all under load (13 s, reload at 4 s), then kill -9 of a worker (9 s, at 3 s)"
        if [ -n "$WPIDS" ]; then
          lg reload 60 churn --action reload --pm2 "$CUR_BIN" --secs 13 --at 4
          record_pids 2
        fi
        if [ -n "$WPIDS" ]; then
          lg kill 45 churn --action kill --victim "${WPIDS%%,*}" --secs 9 --at 3
          record_pids 2
        else
          log "  row 7 skipped: worker pids unknown (jlist failed, see the warning above)"
        fi
      fi
      if row 3 || row 4 || row 5 || row 6 || row 7; then
        # footprint after the load rows (RSS growth, fd leaks after restarts)
        sleep 2
        lg idle-after 30 idle --secs 3
      fi
    fi
    stop_daemon
  fi

  # Phase B: row 8, a plain cluster-mode app whose 2 workers listen() on BENCH_APP_PORT
  if row 8; then
    new_home "$t-r$rep-listen"
    BENCH_APP_PORT="$(free_port)"; export BENCH_APP_PORT
    log "=== $t r$rep: cluster listen() app on 127.0.0.1:$BENCH_APP_PORT"
    pm2_start listen.config.js start-listen 2
    if wait_port "$BENCH_APP_PORT" /; then
      log "  row 8: cluster mode, 16 connections, 6 s"
      if [ "$HAVE_WRK" = 1 ]; then
        LG_PORT="$BENCH_APP_PORT" lg cluster 40 wrk -- wrk -t1 -c16 -d6s --latency "http://127.0.0.1:$BENCH_APP_PORT/"
      else
        LG_PORT="$BENCH_APP_PORT" lg cluster 40 plain --conns 16 --secs 6 --path /
      fi
    fi
    stop_daemon
  fi

  # Phase C: row 1b, 100 idle fork-mode apps
  if row 1; then
    new_home "$t-r$rep-idle100"
    log "=== $t r$rep: 100 idle fork-mode apps"
    pm2_start idle100.config.js start-idle100 100
    sleep 2
    lg idle-100 40 idle --secs "$IDLE_S"
    if row 2; then cli_times jlist100 1 "$CLI_RUNS" "$CUR_BIN" jlist; fi
    stop_daemon
  fi
}

# ---------------------------------------------------------------------------------------------- nginx
# Rows 3, 4 and 6 against the deployment without a process manager. "daemon" in the results is nginx
# (master + workers), "aux" is redis-server; the load generator's clients come from 8 addresses
# 127.0.k.1, one /24 each, because ip_hash keys on the first three octets and would otherwise send every
# client of this machine to one worker.
run_peer() { # run_peer REP
  local rep="$1"
  RD="$OUT/nginx/r$rep"; mkdir -p "$RD"
  log "=== nginx r$rep: nginx ip_hash + 2 node workers (redis-adapter)"
  if ! start_peer "nginx-r$rep"; then
    log "  the nginx deployment did not come up (logs in ${PEER_DIR#$ROOT/}): skipped"
    stop_peer; DPID=""; WPIDS=""; return 0
  fi
  local LG_PORT="$PEER_PORT" LG_AUX="$REDIS_PID" LG_SOURCES=8
  row 3 && { log "  row 3: $SESSIONS new sessions, 20 in flight"; lg sessions 60 sessions --n "$SESSIONS" --concurrency 20 --max-secs 40; }
  row 4 && { log "  row 4: polling echo, 20 clients, 8 s"; lg polling 45 polling --clients 20 --secs 8 --payload 16; }
  if row 6; then
    log "  row 6: broadcast relay (10 clients; 10000 burst + 4000 paced at 500/s)"
    lg bcast-json 60 broadcast --kind json --clients 10 --burst 10000 --rate 500 --paced 4000
    lg bcast-bin 60 broadcast --kind binary --size 1024 --clients 10 --burst 10000 --rate 500 --paced 4000
  fi
  stop_peer
  DPID=""; WPIDS=""
}

# ---------------------------------------------------------------------------------------------- scale curves
# Corral only: how each cost grows with load. Every load is bounded in count and time.
curve_part() { [ -z "${BENCH_CURVES:-}" ] || [[ " $BENCH_CURVES " == *" $1 "* ]]; }
run_curves() {
  local t=corral n c
  CUR_BIN="$(bin_of "$t")"
  RD="$OUT/$t/curves"; mkdir -p "$RD"
  # row 9: relay cost and latency by worker count (row 6 is 2 workers)
  for n in 2 4 8 16; do
    curve_part relay || break
    new_home "curve-relay-$n"
    BENCH_INSTANCES=$n; export BENCH_INSTANCES
    log "=== curves: relay with $n workers"
    pm2_start scale.config.js "curve-start-relay-$n" "$n"
    wait_port "$PM2_PORT" /socket.io/?EIO=4\&transport=polling
    lg "curve-relay-$n" 60 broadcast --kind json --clients $(( 2 * n )) --burst 5000 --rate 500 --paced 2000
    stop_daemon
  done
  # row 10: daemon cost by number of fork apps
  for n in 10 100 1000; do
    curve_part apps || break
    new_home "curve-apps-$n"
    BENCH_APPS=$n; export BENCH_APPS
    log "=== curves: $n idle fork apps"
    pm2_start idleN.config.js "curve-start-apps-$n" "$n"
    lg "curve-apps-$n" 30 idle --secs 3
    cli_times "curve-jlist-$n" 1 5 "$CUR_BIN" jlist
    stop_daemon
  done
  # row 11: idle Socket.IO sessions held through the sticky port. 4 workers, so that each holds at most
  # 12 500 of 50 000 (the daemon holds none once handed off); the load generator spreads them over
  # processes of at most 15 000; opening is bounded by n/150 s (at least 60 s): a loaded 2-core machine
  # opens 100-250 sessions/s. BENCH_HOLD_LEVELS overrides the levels, BENCH_HOLD_RATE the opening rate
  # (500/s; at 2500/s a loaded 2-core machine could not hand them off and the balancer shed with 503 and
  # 408, see BENCHMARKS.md).
  for n in ${BENCH_HOLD_LEVELS:-1000 10000 50000}; do
    curve_part hold || break
    new_home "curve-hold-$n"
    BENCH_INSTANCES=4; export BENCH_INSTANCES
    log "=== curves: $n idle Socket.IO sessions"
    pm2_start scale.config.js "curve-start-hold-$n" 4
    wait_port "$PM2_PORT" /socket.io/?EIO=4\&transport=polling
    local open_s=$(( n / 150 > 60 ? n / 150 : 60 ))
    lg "curve-hold-$n" $(( open_s + 45 )) hold --n "$n" --rate "${BENCH_HOLD_RATE:-500}" --secs 4 --max-secs "$open_s"
    stop_daemon
  done
  # row 12: hand-off capacity (one new connection per request) by concurrency
  if ! curve_part cap; then
    :
  elif [ "$HAVE_WRK" = 1 ]; then
    new_home "curve-cap"
    BENCH_APP_PORT="$(free_port)"; export BENCH_APP_PORT
    log "=== curves: hand-off capacity"
    pm2_start ecosystem.config.js curve-start-cap 2
    wait_port "$PM2_PORT" /bench/ping
    (cd "$BENCH/app" && timeout 60 "$CUR_BIN" start listen.config.js > "$RD/curve-start-listen.log" 2>&1)
    record_pids 4
    wait_port "$BENCH_APP_PORT" /
    for c in 1 4 16 64; do
      lg "curve-cap-sticky-$c" 30 wrk -- wrk -t1 -c"$c" -d4s --latency -H "Connection: close" "http://127.0.0.1:$PM2_PORT/bench/ping"
      LG_PORT="$BENCH_APP_PORT" lg "curve-cap-cluster-$c" 30 wrk -- wrk -t1 -c"$c" -d4s --latency -H "Connection: close" "http://127.0.0.1:$BENCH_APP_PORT/"
    done
    stop_daemon
  else
    log "  row 12 skipped: needs wrk"
  fi
}

for rep in $(seq 1 "$RUNS"); do
  order=("${TARGETS[@]}")
  if (( rep % 2 == 0 )); then order=(); for (( i=${#TARGETS[@]}-1; i>=0; i-- )); do order+=("${TARGETS[$i]}"); done; fi
  for t in "${order[@]}"; do
    # classic pm2 is a reference for the control-plane rows: first repetition only (keeps the suite ≤ 10 min)
    [ "$t" = classic ] && [ "$rep" -gt 1 ] && continue
    if [ "$t" = nginx ]; then run_peer "$rep"; continue; fi
    run_target "$t" "$rep"
  done
done
if [ "$CURVES" = 1 ]; then
  # Many connections at once: 50 000 sessions are 50 000 descriptors in the load generator and 25 000 in each
  # worker (the daemon hands them off), so the hard limit is raised where allowed (root), then the soft one.
  hard="$(ulimit -Hn)"
  if [ "$hard" != unlimited ] && [ "$hard" -lt 131072 ]; then ulimit -Hn 131072 2>/dev/null || true; fi
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  log "curves: descriptor limit $(ulimit -n)"
  [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 60000 ] && log "  WARNING: below 60000, the 50 000-session curve will fail (raise the hard limit: ulimit -Hn)"
  echo "curves_nofile=$(ulimit -n)" >> "$OUT/machine.txt"
  run_curves
fi
stop_daemon
CUR_HOME=""
echo "workloads_s=$(( $(date +%s) - T_START )) (plus ${SETUP_S} s of install/build)" >> "$OUT/machine.txt"
log "all workloads done in $(( $(date +%s) - T_START )) s; summarizing"
node "$BENCH/summarize.js" "$OUT" > "$OUT/summary.md" || die "summarize.js failed"
# BENCHMARKS.md = this run's summary, then whatever follows the marker line in the current file: the
# sections written by hand from the other bench scripts (upgrade, multihost, runtimes, before/after
# comparisons) survive a regeneration.
MARKER='<!-- bench/run.sh writes everything above this line; the sections below are kept as they are -->'
{
  cat "$OUT/summary.md"
  echo
  echo "$MARKER"
  if [ -f "$ROOT/BENCHMARKS.md" ] && grep -qxF "$MARKER" "$ROOT/BENCHMARKS.md"; then
    awk -v m="$MARKER" 'found { print } $0 == m { found = 1 }' "$ROOT/BENCHMARKS.md"
  fi
} > "$OUT/benchmarks.md"
cp "$OUT/benchmarks.md" "$ROOT/BENCHMARKS.md"
cat "$OUT/summary.md"
log "written: $OUT/summary.md and BENCHMARKS.md"
