#!/usr/bin/env bash
# Log rotation throughput: one fork-mode app writes LINES numbered lines of about 100 bytes to stdout as fast as
# the pipe takes them (tests/fixtures/seqlog.js); the daemon writes them to its log file with rotation off, with
# log_max_size 1M and 64K, and 1M + gzip. Reports wall time until the last byte is on disk, MB/s, the daemon's
# CPU seconds for the run, and the number of files produced; then checks every line is there exactly once.
#
#   bash bench/logrotate.sh [LINES]        (default 1000000 = ~100 MB per mode)
#   CORRAL_BIN=/path/to/pm2 bash bench/logrotate.sh
#
# Every daemon gets its own PM2_HOME under bench/.work/homes and is killed (pm2 kill, then SIGKILL by pid)
# at the end. Each mode is bounded to 180 s.
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
BIN="${CORRAL_BIN:-$ROOT/target/release/pm2}"
LINES="${1:-1000000}"
PAD=80
[ -x "$BIN" ] || { echo "no pm2 binary at $BIN (cargo build --release, or set CORRAL_BIN)"; exit 1; }
mkdir -p "$BENCH/.work/homes"
HOMES=()
cleanup() {
  for h in "${HOMES[@]}"; do
    PM2_HOME="$h" "$BIN" kill >/dev/null 2>&1
    [ -f "$h/pm2.pid" ] && kill -9 "$(cat "$h/pm2.pid")" 2>/dev/null
    rm -rf "$h"
  done
}
trap cleanup EXIT

# Exact bytes the app writes (lines + "DONE\n").
EXPECT=$(node -e "let n=0;const p='x'.repeat($PAD);for(let i=0;i<$LINES;i++)n+=Buffer.byteLength('seq='+i+' '+p+' end='+i+'\n');console.log(n+5)")
# CPU seconds of every thread of a process, at ns resolution (schedstat: time on CPU).
cpu_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.4f", s/1e9}'; }
# Bytes on disk in the app's log files: one `find` for the plain files; a .gz is final once it exists (written
# to .gz.tmp, then renamed), so its uncompressed size (gzip trailer) is read once and cached.
declare -A GZ
on_disk() {
  local dir="$1" plain gz=0 f
  plain=$(find "$dir" -name 'seq-out*.log' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END{print s+0}')
  for f in "$dir"/seq-out*.gz; do
    [ -e "$f" ] || continue
    [ -n "${GZ[$f]:-}" ] || GZ[$f]=$(gzip -l "$f" 2>/dev/null | awk 'NR==2{print $2+0}')
    gz=$((gz + ${GZ[$f]:-0}))
  done
  echo $((plain + gz))
}

printf '| mode | lines | MB | wall s | MB/s | daemon cpu-s | files |\n|---|---|---|---|---|---|---|\n'
for mode in off 1M 64K 1M+gzip; do
  H="$(mktemp -d "$BENCH/.work/homes/rot-XXXXXX")"; HOMES+=("$H")
  case "$mode" in
    off) extra="" ;;
    1M) extra="log_max_size: '1M', log_retain: 'all'," ;;
    64K) extra="log_max_size: '64K', log_retain: 'all'," ;;
    1M+gzip) extra="log_max_size: '1M', log_retain: 'all', log_compress: true," ;;
  esac
  cat > "$H/eco.config.js" <<JS
module.exports = { apps: [{ name: 'seq', script: '$ROOT/tests/fixtures/seqlog.js', autorestart: false, $extra
  env: { SEQ_COUNT: '$LINES', SEQ_PAD: '$PAD' } }] };
JS
  export PM2_HOME="$H" PM2_PORT=$((20000 + RANDOM % 9000)) PM2_STICKY_HOST=127.0.0.1
  "$BIN" ping >/dev/null 2>&1
  DPID=$(cat "$H/pm2.pid")
  c0=$(cpu_s "$DPID"); t0=$(date +%s.%N)
  "$BIN" start "$H/eco.config.js" >/dev/null 2>&1
  deadline=$(( $(date +%s) + 180 ))
  while :; do
    got=$(on_disk "$H/logs")
    [ "$got" -ge "$EXPECT" ] && break
    [ "$(date +%s)" -ge "$deadline" ] && { echo "mode $mode: timed out ($got of $EXPECT bytes)"; break; }
    sleep 0.02
  done
  t1=$(date +%s.%N); c1=$(cpu_s "$DPID")
  files=$(ls "$H/logs" | grep -c '^seq-out')
  # Integrity: every sequence number exactly once.
  bad=$( (for f in "$H"/logs/seq-out*; do case "$f" in *.gz) gzip -dc "$f";; *) cat "$f";; esac; done) \
    | awk -v n="$LINES" '$1 ~ /^seq=/ { s=substr($1,5); c[s]++ } END { b=0; for (i=0;i<n;i++) if (c[i]!=1) b++; print b }')
  mb=$(awk -v b="$EXPECT" 'BEGIN{printf "%.1f", b/1048576}')
  awk -v m="$mode" -v l="$LINES" -v mb="$mb" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v f="$files" -v bad="$bad" \
    'BEGIN{w=t1-t0; printf "| %s | %d | %s | %.2f | %.0f | %.2f | %d%s |\n", m, l, mb, w, mb/w, c1-c0, f, (bad>0?" (" bad " lines missing or doubled!)":"")}'
  "$BIN" kill >/dev/null 2>&1
done
