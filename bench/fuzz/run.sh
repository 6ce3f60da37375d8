#!/usr/bin/env bash
# Runs every cargo-fuzz target in turn for a bounded time and prints one JSON line per target with
# its executions, coverage and result (parsed from libFuzzer's final stats).
#
#   bash bench/fuzz/run.sh [seconds-per-target] [target...]
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Corpora stay in fuzz/corpus/<target> (git-ignored) so a second run
# continues where the first stopped. Each target runs as one job; logs go to bench/.work/fuzz/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
secs="${1:-120}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(sticky_http sticky_router frame_decoder field_reader v8_roundtrip axon_decoder redis_reply push_frame)
logs="$root/bench/.work/fuzz"
mkdir -p "$logs"
cd "$root/fuzz"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo '{"error":"cargo +nightly fuzz is not available: rustup toolchain install nightly && cargo install cargo-fuzz"}'
  exit 1
fi
for t in "${targets[@]}"; do
  cargo +nightly fuzz build "$t" >"$logs/$t.build.log" 2>&1
  commit=$(git -C "$root" rev-parse --short HEAD)
  start=$(date -u +%FT%TZ)
  rc=0
  timeout $((secs + 120)) cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$logs/$t.log" 2>&1 || rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*' || echo 0)
  corpus=$(grep -o 'corp: [0-9]*' "$logs/$t.log" | tail -1 | grep -o '[0-9]*' || echo 0)
  rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' || echo 0)
  crash=$(grep -c 'SUMMARY\|panicked\|deadly signal' "$logs/$t.log" || true)
  echo "{\"target\":\"$t\",\"commit\":\"$commit\",\"start\":\"$start\",\"seconds\":$secs,\"executions\":${execs:-0},\"coverage_edges\":${cov:-0},\"corpus\":${corpus:-0},\"peak_rss_mb\":${rss:-0},\"exit\":$rc,\"crash_lines\":$crash}"
done
