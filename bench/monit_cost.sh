#!/usr/bin/env bash
# What `pm2 monit` costs the daemon: daemon CPU seconds (all threads' on-CPU time from /proc/<pid>/task/*/schedstat) over a WINDOW-second
# window with 10 fork-mode apps that each log a line every 200 ms, first without monit, then with `pm2 monit`
# open in a 160x45 tmux pane (its own tmux socket, killed at the end).
#
#   bash bench/monit_cost.sh [WINDOW]     (default 30)
#   CORRAL_BIN=/path/to/pm2 bash bench/monit_cost.sh
set -uo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
BIN="${CORRAL_BIN:-$ROOT/target/release/pm2}"
WINDOW="${1:-30}"
command -v tmux >/dev/null || { echo "needs tmux"; exit 1; }
mkdir -p "$BENCH/.work/homes"
H="$(mktemp -d "$BENCH/.work/homes/monit-XXXXXX")"
SOCK="corral-bench-monit-$$"
cleanup() {
  tmux -L "$SOCK" kill-server 2>/dev/null
  PM2_HOME="$H" "$BIN" kill >/dev/null 2>&1
  [ -f "$H/pm2.pid" ] && kill -9 "$(cat "$H/pm2.pid")" 2>/dev/null
  rm -rf "$H"
}
trap cleanup EXIT
export PM2_HOME="$H" PM2_PORT=$((20000 + RANDOM % 9000)) PM2_STICKY_HOST=127.0.0.1
for i in $(seq 1 10); do "$BIN" start "$ROOT/tests/fixtures/forever.js" --name "app$i" >/dev/null; done
DPID=$(cat "$H/pm2.pid")
# CPU seconds of every thread of a process, at ns resolution (schedstat: time on CPU).
cpu_s() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{s+=$1} END{printf "%.4f", s/1e9}'; }
sleep 3
a0=$(cpu_s "$DPID"); sleep "$WINDOW"; a1=$(cpu_s "$DPID")
tmux -L "$SOCK" -f /dev/null new-session -d -x 160 -y 45 "PM2_HOME=$H $BIN monit"
sleep 3
b0=$(cpu_s "$DPID"); sleep "$WINDOW"; b1=$(cpu_s "$DPID")
MPID=$(tmux -L "$SOCK" display-message -p '#{pane_pid}')
mcpu=$(cpu_s "$MPID")
tmux -L "$SOCK" send-keys q
awk -v a="$(echo "$a1 - $a0" | bc)" -v b="$(echo "$b1 - $b0" | bc)" -v w="$WINDOW" -v m="$mcpu" 'BEGIN{
  printf "| daemon (10 apps logging 5 lines/s each) | cpu-s in %d s | %% of a core |\n|---|---|---|\n", w
  printf "| without monit | %.3f | %.3f %% |\n| with pm2 monit open | %.3f | %.3f %% |\n", a, 100*a/w, b, 100*b/w
  printf "\nthe monit process itself: %.2f cpu-s over its %d s\n", m, w+3 }'
