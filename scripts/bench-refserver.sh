#!/usr/bin/env bash
# Throughput of refserver's /api/v1/echo with all default middleware, against a bare hyper
# hello-world, Go's net/http with the playbook's middleware and Go fasthttp, on the same setup, in
# the same run. A report, not a test.
#
#   scripts/bench-refserver.sh [DURATION_S] [CONNECTIONS] [THREADS]
#
# Prints requests/s and p99 latency for each (wrk, closed loop), then each server's own CPU time
# per request and p99 at a fixed offered rate (RATE, default 10000 requests/s, open loop, below
# every server's saturation), and the three ratios the playbook's goals are about. Also measures
# the bare server sending refserver's response headers as fixed values, which separates the cost
# of the bytes on the wire from the cost of the middleware that makes them. Installs wrk (Debian)
# if missing; builds the Go servers from the Go module proxy into the cache (bench/go).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/bench-lib.sh

duration=${1:-10}
conns=${2:-64}
threads=${3:-1}
apt_install wrk
log "building release binaries"
cargo build --release -q -p refserver --bins
bin="$CARGO_TARGET_DIR/release"
build_go_servers
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
# The server's own CPU time (user + system, from /proc) per request, and p99, at a fixed rate.
rate=${RATE:-10000}
ticks=$(getconf CLK_TCK)
measure_cpu() { # name path binary args... → appends "us_per_request p99_ms" to $work/<name>.cpu
  local name=$1 path=$2
  shift 2
  "$@" >/dev/null 2>&1 &
  local pid=$!
  wait_http "http://127.0.0.1:$port$path" 10
  "$gobin/openloop" "http://127.0.0.1:$port$path" "$rate" 1 >/dev/null
  local before after out
  before=$(cpu_of "$pid")
  out=$("$gobin/openloop" "http://127.0.0.1:$port$path" "$rate" "$duration")
  after=$(cpu_of "$pid")
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  read -r sent ok _ p99 _ <<<"$out"
  [ "$ok" = "$sent" ] || die "$name: $((sent - ok)) of $sent requests failed at $rate requests/s"
  awk -v a="$before" -v b="$after" -v t="$ticks" -v n="$ok" -v p="$p99" 'BEGIN {printf "%.2f %s\n", (b - a) / t / n * 1e6, p}' >>"$work/$name.cpu"
}
servers=(bare bare-headers refserver go-nethttp go-fasthttp)
# BASELINE=path/to/another/refserver: measured beside, to compare two builds in the same run.
[ -z "${BASELINE:-}" ] || servers+=(baseline)
run_each() { # measure-function
  "$1" bare / "$bin/bare-hello" "127.0.0.1:$port"
  "$1" bare-headers / "$bin/bare-hello" "127.0.0.1:$port" --refserver-headers
  "$1" refserver /api/v1/echo "$bin/refserver" --listen "127.0.0.1:$port" --set log.level=info
  "$1" go-nethttp /api/v1/echo "$gobin/nethttp" "127.0.0.1:$port"
  "$1" go-fasthttp / "$gobin/fasthttp" "127.0.0.1:$port"
  [ -z "${BASELINE:-}" ] || "$1" baseline /api/v1/echo "$BASELINE" --listen "127.0.0.1:$port" --set log.level=info
}
for r in $(seq "$rounds"); do
  log "round $r/$rounds: requests/s of ${servers[*]} (wrk, ${duration}s each)"
  run_each measure
  log "round $r/$rounds: CPU per request at $rate requests/s (open loop, ${duration}s each)"
  run_each measure_cpu
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
printf 'throughput ratio refserver/bare: %s (for scale: on 2 shared cores this cannot show a 0.9 goal, see CPU per request below)\n' "$ratio"
printf '  of which the response bytes (bare+headers/bare): %s; the middleware (refserver/bare+headers): %s\n' "$wire" "$middleware"
printf 'median of %s alternating rounds; wrk -t%s -c%s -d%ss; %s cores; %s\n' "$rounds" "$threads" "$conns" "$duration" "$(nproc)" "$(date -u +%F)"
printf 'per round (rps p99): bare [%s] bare+headers [%s] refserver [%s]\n' "$(tr '\n' ';' <"$work/bare")" "$(tr '\n' ';' <"$work/bare-headers")" "$(tr '\n' ';' <"$work/refserver")"

nh_rps=$(median "$work/go-nethttp" 1); nh_p99=$(median "$work/go-nethttp" 2)
fh_rps=$(median "$work/go-fasthttp" 1); fh_p99=$(median "$work/go-fasthttp" 2)
printf '\n%-36s %12s %10s %18s %16s\n' "server" "requests/s" "p99 ms" "CPU µs/request" "p99 ms at rate"
for s in "${servers[@]}"; do
  printf '%-36s %12.0f %10.2f %18.2f %16.2f\n' "$s" "$(median "$work/$s" 1)" "$(median "$work/$s" 2)" \
    "$(median "$work/$s.cpu" 1)" "$(median "$work/$s.cpu" 2)"
done
cpu_ratio=$(awk -v a="$(median "$work/refserver.cpu" 1)" -v b="$(median "$work/bare-headers.cpu" 1)" 'BEGIN {printf "%.3f", a / b}')
nh_ratio=$(awk -v a="$rs_rps" -v b="$nh_rps" 'BEGIN {printf "%.2f", a / b}')
fh_ratio=$(awk -v a="$rs_rps" -v b="$fh_rps" 'BEGIN {printf "%.2f", a / b}')
printf 'CPU per request, refserver / bare hyper with the same headers and body, at %s requests/s: %s (goal <= 1.15: %s)\n' "$rate" "$cpu_ratio" "$(verdict "$cpu_ratio" 1.15 "<=")"
printf 'requests/s, refserver / Go net/http with the playbook middleware: %s (goal >= 2.5: %s)\n' "$nh_ratio" "$(verdict "$nh_ratio" 2.5 ">=")"
printf 'requests/s, refserver / Go fasthttp, no middleware: %s (goal >= 1: %s)\n' "$fh_ratio" "$(verdict "$fh_ratio" 1 ">=")"
printf 'Go %s; %s\n' "$(go env GOVERSION)" "$goversions"
if [ -n "${BASELINE:-}" ]; then
  printf 'refserver / baseline (%s): requests/s %s, CPU per request %s\n' "$BASELINE" \
    "$(awk -v a="$rs_rps" -v b="$(median "$work/baseline" 1)" 'BEGIN {printf "%.3f", a / b}')" \
    "$(awk -v a="$(median "$work/refserver.cpu" 1)" -v b="$(median "$work/baseline.cpu" 1)" 'BEGIN {printf "%.3f", a / b}')"
fi
printf 'per round (CPU µs/request p99 ms at rate): bare-headers [%s] refserver [%s] go-nethttp [%s] go-fasthttp [%s]\n' \
  "$(tr '\n' ';' <"$work/bare-headers.cpu")" "$(tr '\n' ';' <"$work/refserver.cpu")" "$(tr '\n' ';' <"$work/go-nethttp.cpu")" "$(tr '\n' ';' <"$work/go-fasthttp.cpu")"
