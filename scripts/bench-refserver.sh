#!/usr/bin/env bash
# Throughput of refserver's /api/v1/echo with all default middleware, against a bare hyper
# hello-world on the same setup, in the same run. A report, not a test.
#
#   scripts/bench-refserver.sh [DURATION_S] [CONNECTIONS] [THREADS]
#
# Prints requests/s and p99 latency for both, and the ratio. Installs wrk (Debian) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

duration=${1:-10}
conns=${2:-64}
threads=${3:-1}
apt_install wrk
log "building release binaries"
cargo build --release -q -p refserver --bins
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

run_wrk() { # url → "rps p99_ms"
  wrk -t"$threads" -c"$conns" -d"${duration}s" --latency "$1" >"$work/wrk.txt"
  local rps p99
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$work/wrk.txt")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v}' "$work/wrk.txt")
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
  [ -z "$non2xx" ] || die "non-2xx responses in the run: $non2xx"
  printf '%s %s\n' "$rps" "$p99"
}

port=18181
"$bin/bare-hello" "127.0.0.1:$port" >/dev/null 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$port/" 10
log "warm-up and run: bare hyper"
wrk -t1 -c8 -d1s "http://127.0.0.1:$port/" >/dev/null
read -r bare_rps bare_p99 < <(run_wrk "http://127.0.0.1:$port/")
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true

"$bin/refserver" --listen "127.0.0.1:$port" --set log.level=warn >/dev/null 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$port/readyz" 10
log "warm-up and run: refserver /api/v1/echo"
wrk -t1 -c8 -d1s "http://127.0.0.1:$port/api/v1/echo" >/dev/null
read -r rs_rps rs_p99 < <(run_wrk "http://127.0.0.1:$port/api/v1/echo")

ratio=$(awk -v a="$rs_rps" -v b="$bare_rps" 'BEGIN {printf "%.3f", a / b}')
printf '\n%-28s %12s %10s\n' "server" "requests/s" "p99 ms"
printf '%-28s %12.0f %10.2f\n' "bare hyper hello-world" "$bare_rps" "$bare_p99"
printf '%-28s %12.0f %10.2f\n' "refserver /api/v1/echo" "$rs_rps" "$rs_p99"
printf 'throughput ratio refserver/bare: %s (goal >= 0.9)\n' "$ratio"
printf 'wrk -t%s -c%s -d%ss, %s cores, %s\n' "$threads" "$conns" "$duration" "$(nproc)" "$(date -u +%F)"
