#!/usr/bin/env bash
# Throughput of refserver's /api/v1/echo with all default middleware, against a bare hyper
# hello-world on the same setup, in the same run. A report, not a test.
#
#   scripts/bench-refserver.sh [DURATION_S] [CONNECTIONS] [THREADS]
#
# Prints requests/s and p99 latency for both, and the ratio. Also measures the bare server sending
# refserver's response headers as fixed values, which separates the cost of the bytes on the wire
# from the cost of the middleware that makes them. Installs wrk (Debian) if missing.
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

# Alternate the two servers for $rounds rounds and keep the median of each, so that a passing
# disturbance on the machine does not decide the ratio.
rounds=${ROUNDS:-3}
port=18181
measure() { # name binary args... → appends "rps p99" to $work/<name>
  local name=$1 path=$2
  shift 2
  "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port$path" 10
  wrk -t1 -c8 -d1s "http://127.0.0.1:$port$path" >/dev/null
  run_wrk "http://127.0.0.1:$port$path" >>"$work/$name"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
}
median() { sort -n -k"$2" "$1" | awk -v c="$2" '{v[NR]=$c} END {print v[int((NR+1)/2)]}'; }
for r in $(seq "$rounds"); do
  log "round $r/$rounds: bare hyper, then refserver /api/v1/echo (${duration}s each)"
  measure bare / "$bin/bare-hello" "127.0.0.1:$port"
  measure bare-headers / "$bin/bare-hello" "127.0.0.1:$port" --refserver-headers
  measure refserver /api/v1/echo "$bin/refserver" --listen "127.0.0.1:$port" --set log.level=info
done
bare_rps=$(median "$work/bare" 1); bare_p99=$(median "$work/bare" 2)
rs_rps=$(median "$work/refserver" 1); rs_p99=$(median "$work/refserver" 2)
bh_rps=$(median "$work/bare-headers" 1); bh_p99=$(median "$work/bare-headers" 2)
ratio=$(awk -v a="$rs_rps" -v b="$bare_rps" 'BEGIN {printf "%.3f", a / b}')
wire=$(awk -v a="$bh_rps" -v b="$bare_rps" 'BEGIN {printf "%.3f", a / b}')
middleware=$(awk -v a="$rs_rps" -v b="$bh_rps" 'BEGIN {printf "%.3f", a / b}')
printf '\n%-36s %12s %10s\n' "server" "requests/s" "p99 ms"
printf '%-36s %12.0f %10.2f\n' "bare hyper hello-world" "$bare_rps" "$bare_p99"
printf '%-36s %12.0f %10.2f\n' "bare hyper + refserver's headers" "$bh_rps" "$bh_p99"
printf '%-36s %12.0f %10.2f\n' "refserver /api/v1/echo" "$rs_rps" "$rs_p99"
printf 'throughput ratio refserver/bare: %s (goal >= 0.9)\n' "$ratio"
printf '  of which the response bytes (bare+headers/bare): %s; the middleware (refserver/bare+headers): %s\n' "$wire" "$middleware"
printf 'median of %s alternating rounds; wrk -t%s -c%s -d%ss; %s cores; %s\n' "$rounds" "$threads" "$conns" "$duration" "$(nproc)" "$(date -u +%F)"
printf 'per round (rps p99): bare [%s] bare+headers [%s] refserver [%s]\n' "$(tr '\n' ';' <"$work/bare")" "$(tr '\n' ';' <"$work/bare-headers")" "$(tr '\n' ';' <"$work/refserver")"
