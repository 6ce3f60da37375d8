#!/usr/bin/env bash
# Row 8 (cluster mode: 2 workers listen(), the daemon is the cluster primary, a new connection per request)
# for each JavaScript runtime Corral runs as cluster workers: node, bun and deno (from tests/runtimes'
# npm packages). Corral only: the incumbents cannot run Bun or Deno workers.
#
#   bash bench/runtimes.sh [PM2_BINARY] [SECONDS]     (default target/debug/pm2, 6 s)
#
# Node and Deno workers get their connections from the daemon's listener (fd passing); Bun workers listen on
# SO_REUSEPORT sockets of their own (Bun cannot receive handles), so the daemon does no per-connection work
# for them. Prints one table row per runtime; raw lg.js JSON goes to bench/.work/runtimes/<stamp>/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="$(realpath "${1:-target/debug/pm2}")"
SECS="${2:-6}"
RT="$PWD/tests/runtimes/node_modules/.bin"
[ -x "$RT/bun" ] && [ -x "$RT/deno" ] || (cd tests/runtimes && npm ci --no-audit --no-fund --loglevel=error)
OUT="$PWD/bench/.work/runtimes/$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
LG="$PWD/bench/lg/lg.js"
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

echo "| runtime | version | requests/s | p50 | p99 | busiest worker's share | daemon cpu-s per 1000 connections | workers cpu-s per 1000 | other tenants |"
echo "|---|---|---|---|---|---|---|---|---|"
for rt in node bun deno; do
  case "$rt" in
    node) interp=node; ver="$(node --version)" ;;
    bun) interp="$RT/bun"; ver="$("$RT/bun" --version)" ;;
    deno) interp="$RT/deno"; ver="$("$RT/deno" --version | head -1 | cut -d' ' -f2)" ;;
  esac
  # listen.js is CommonJS without a package.json saying so: Deno needs to be told (its default permissions
  # are still added, as the flag grants none).
  extra=()
  [ "$rt" = deno ] && extra=(--interpreter-args --unstable-detect-cjs)
  export PM2_HOME="$OUT/home-$rt"
  export PM2_PORT="$(free_port)" BENCH_APP_PORT="$(free_port)"
  (cd bench/app && "$BIN" start listen.js --name listen -i 2 --interpreter "$interp" "${extra[@]}" > "$OUT/$rt-start.log" 2>&1)
  DPID="$(cat "$PM2_HOME/pm2.pid")"
  WPIDS=""
  for _ in $(seq 1 75); do
    WPIDS="$("$BIN" jlist | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const l=JSON.parse(s).filter(p=>p.pm2_env.status==="online"&&p.pid>0);console.log(l.length>=2?l.map(p=>p.pid).join(","):"")})')"
    [ -n "$WPIDS" ] && curl -s -m 2 -o /dev/null "http://127.0.0.1:$BENCH_APP_PORT/" && break
    sleep 0.2
  done
  if command -v wrk >/dev/null; then
    timeout 60 node "$LG" wrk --port "$BENCH_APP_PORT" --daemon "$DPID" --workers "$WPIDS" --cap-secs 55 -- \
      wrk -t1 -c16 -d"${SECS}s" --latency "http://127.0.0.1:$BENCH_APP_PORT/" > "$OUT/$rt.json" 2>> "$OUT/lg.log" || true
  else
    timeout 60 node "$LG" plain --port "$BENCH_APP_PORT" --daemon "$DPID" --workers "$WPIDS" --cap-secs 55 \
      --conns 16 --secs "$SECS" --path / > "$OUT/$rt.json" 2>> "$OUT/lg.log" || true
  fi
  "$BIN" kill > /dev/null 2>&1 || true
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const f = (x, d = 2) => (x == null ? "–" : Number(x).toFixed(d));
    console.log(`| ${process.argv[2]} | ${process.argv[3]} | ${Math.round(r.req_per_s)} /s | ${f(r.latency_ms && r.latency_ms.p50)} ms | ${f(r.latency_ms && r.latency_ms.p99)} ms | ${f(r.busiest_worker_share)} | ${f(r.daemon_cpu_s_per_1k, 3)} s | ${f(r.workers_cpu_s_per_1k, 3)} s | ${f(r.cpu && r.cpu.other_pct, 0)} % |`);
  ' "$OUT/$rt.json" "$rt" "$ver" || echo "| $rt | $ver | (no result, see $OUT/lg.log) |"
done
echo
echo "raw: $OUT"
