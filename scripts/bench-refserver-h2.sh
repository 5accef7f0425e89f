#!/usr/bin/env bash
# HTTP/2 over TLS 1.3: refserver's /api/v1/echo with all default middleware on its TLS listener,
# against a bare hyper HTTP/2 server sending the same headers and body, and Go's net/http with
# the playbook's middleware (HTTP/2 by ALPN). Go fasthttp has no HTTP/2. A report, not a test.
#
#   scripts/bench-refserver-h2.sh [DURATION_S] [CONNECTIONS] [STREAMS]
#
# Prints requests/s (h2load, closed loop: CONNECTIONS connections × STREAMS concurrent streams),
# then each server's own CPU time per request and mean latency at a fixed offered rate (RATE,
# default 10000 requests/s over 10 connections), and the two ratios the playbook's goals are
# about. h2load reports the mean, not percentiles. Installs h2load (Debian nghttp2-client) and
# openssl if missing; builds the Go servers from the Go module proxy into the cache (bench/go).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. scripts/bench-lib.sh

duration=${1:-10}
conns=${2:-64}
streams=${3:-10}
rate=${RATE:-10000}
rounds=${ROUNDS:-3}
apt_install nghttp2-client openssl
log "building release binaries"
cargo build --release -q -p refserver --bins
bin="$CARGO_TARGET_DIR/release"
build_go_servers
work=$(mktemp -d)
server_pid=""
cleanup() { [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -days 1 -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null

port=18443
plain=18181
ticks=$(getconf CLK_TCK)
# h2load's time units (us, ms, s) in ms.
to_ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) {sub(/us$/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v=v*1000}; print v }'; }
h2run() { # url args... → "rps mean_ms", dies on a failed request
  local url=$1
  shift
  h2load "$@" "$url" >"$work/h2load.txt"
  local rps ok failed other mean
  rps=$(awk '/^finished in/ {print $4}' "$work/h2load.txt")
  # "requests: N total, N started, N done, N succeeded, N failed, …"; "status codes: N 2xx, N 3xx, N 4xx, N 5xx"
  failed=$(awk '/^requests:/ {print $10}' "$work/h2load.txt")
  ok=$(awk '/^status codes:/ {print $3}' "$work/h2load.txt")
  other=$(awk '/^status codes:/ {print $5 + $7 + $9}' "$work/h2load.txt")
  mean=$(awk '/^time for request:/ {print $6}' "$work/h2load.txt")
  if [ "$failed" != "0" ] || [ "$other" != "0" ]; then
    die "failed or non-2xx requests: $(grep -E '^(requests|status codes):' "$work/h2load.txt" | tr '\n' ' ')"
  fi
  printf '%s %s %s\n' "$rps" "$(to_ms "$mean")" "$ok"
}
start() { # path binary args... → pid in $server_pid
  local path=$1
  shift
  "$@" >/dev/null 2>&1 &
  server_pid=$!
  local i=0
  until curl -kfsS -o /dev/null --http2 "https://localhost:$port$path" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -gt 100 ] && die "$* did not answer on https://localhost:$port$path"
    sleep 0.1
  done
}
stop() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; }
measure() { # name path binary args... → appends "rps mean_ms" to $work/<name>
  local name=$1 path=$2
  shift 2
  start "$path" "$@"
  h2run "https://localhost:$port$path" -c8 -m"$streams" -D1 >/dev/null
  h2run "https://localhost:$port$path" -c"$conns" -m"$streams" -D"$duration" | cut -d' ' -f1,2 >>"$work/$name"
  stop
}
measure_cpu() { # name path binary args... → appends "us_per_request mean_ms" to $work/<name>.cpu
  local name=$1 path=$2
  shift 2
  start "$path" "$@"
  local per_client=$((rate / 10)) before after out
  h2run "https://localhost:$port$path" -c10 -m1 --rps="$per_client" -D1 >/dev/null
  before=$(cpu_of "$server_pid")
  out=$(h2run "https://localhost:$port$path" -c10 -m1 --rps="$per_client" -D"$duration")
  after=$(cpu_of "$server_pid")
  stop
  read -r _ mean ok <<<"$out"
  awk -v a="$before" -v b="$after" -v t="$ticks" -v n="$ok" -v m="$mean" 'BEGIN {printf "%.2f %s\n", (b - a) / t / n * 1e6, m}' >>"$work/$name.cpu"
}
servers=(bare-headers refserver go-nethttp)
run_each() {
  "$1" bare-headers / "$bin/bare-hello" "127.0.0.1:$port" --refserver-headers --tls "$work/tls.crt" "$work/tls.key"
  "$1" refserver /api/v1/echo "$bin/refserver" --listen "127.0.0.1:$plain" --set log.level=info \
    --set "tls.listen=127.0.0.1:$port" --set "tls.cert_file=$work/tls.crt" --set "tls.key_file=$work/tls.key"
  "$1" go-nethttp /api/v1/echo "$gobin/nethttp" "127.0.0.1:$port" "$work/tls.crt" "$work/tls.key"
}
for r in $(seq "$rounds"); do
  log "round $r/$rounds: requests/s of ${servers[*]} over HTTP/2 + TLS 1.3 (h2load, ${duration}s each)"
  run_each measure
  log "round $r/$rounds: CPU per request at $rate requests/s (${duration}s each)"
  run_each measure_cpu
done
printf '\nHTTP/2 over TLS 1.3\n%-36s %12s %12s %18s %16s\n' "server" "requests/s" "mean ms" "CPU µs/request" "mean ms at rate"
for s in "${servers[@]}"; do
  printf '%-36s %12.0f %12.2f %18.2f %16.2f\n' "$s" "$(median "$work/$s" 1)" "$(median "$work/$s" 2)" \
    "$(median "$work/$s.cpu" 1)" "$(median "$work/$s.cpu" 2)"
done
cpu_ratio=$(awk -v a="$(median "$work/refserver.cpu" 1)" -v b="$(median "$work/bare-headers.cpu" 1)" 'BEGIN {printf "%.3f", a / b}')
nh_ratio=$(awk -v a="$(median "$work/refserver" 1)" -v b="$(median "$work/go-nethttp" 1)" 'BEGIN {printf "%.2f", a / b}')
printf 'CPU per request, refserver / bare hyper with the same headers and body, at %s requests/s: %s (goal <= 1.15: %s)\n' "$rate" "$cpu_ratio" "$(verdict "$cpu_ratio" 1.15 "<=")"
printf 'requests/s, refserver / Go net/http with the playbook middleware: %s (goal >= 2.5: %s)\n' "$nh_ratio" "$(verdict "$nh_ratio" 2.5 ">=")"
printf 'requests/s, refserver / Go fasthttp: n/a (fasthttp does not speak HTTP/2)\n'
printf 'median of %s alternating rounds; h2load -c%s -m%s -D%s; %s cores; %s; Go %s; %s; %s\n' "$rounds" "$conns" "$streams" "$duration" \
  "$(nproc)" "$(date -u +%F)" "$(go env GOVERSION)" "$goversions" "$(h2load --version | head -n1)"
printf 'per round (rps mean_ms): bare-headers [%s] refserver [%s] go-nethttp [%s]\n' \
  "$(tr '\n' ';' <"$work/bare-headers")" "$(tr '\n' ';' <"$work/refserver")" "$(tr '\n' ';' <"$work/go-nethttp")"
printf 'per round (CPU µs/request mean_ms at rate): bare-headers [%s] refserver [%s] go-nethttp [%s]\n' \
  "$(tr '\n' ';' <"$work/bare-headers.cpu")" "$(tr '\n' ';' <"$work/refserver.cpu")" "$(tr '\n' ';' <"$work/go-nethttp.cpu")"
