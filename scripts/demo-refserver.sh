#!/usr/bin/env bash
# Shows refserver working on its own: starts it with a config file, sends traffic, prints the
# metrics rollgate judges (request count, 5xx share, p95 latency, runtime pauses), injects faults
# by editing the file (hot reload), and stops it with SIGTERM (graceful drain, exit 0).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

log "building refserver"
cargo build --release -q -p refserver --bin refserver
bin="$CARGO_TARGET_DIR/release/refserver"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

cat >"$work/refserver.yaml" <<'YAML'
version: demo-v1
fault:
  error_ratio: 0.0
YAML
"$bin" --config "$work/refserver.yaml" --listen 127.0.0.1:0 >"$work/log.json" 2>&1 &
pid=$!
addr=$(listen_addr_from_log "$work/log.json")
base="http://$addr"
wait_http "$base/readyz"
log "refserver $(curl -fsS "$base/version") listening on $addr (logs: JSON on stdout)"

traffic() { # n requests, in parallel batches
  local n=$1
  seq "$n" | xargs -P 8 -I{} curl -s -o /dev/null "$base/api/v1/echo?message={}" || true
}

report() {
  curl -fsS "$base/metrics" >"$work/metrics.txt"
  # Buckets come in ascending `le` order within each series; sum them across status codes and
  # take the first bound holding 95 % of requests.
  awk '
    /^http_server_request_duration_seconds_count\{.*http_route="\/api\/v1\/echo"/ {
      total += $NF; if ($0 ~ /status_code="5/) bad += $NF }
    /^http_server_request_duration_seconds_bucket\{.*http_route="\/api\/v1\/echo"/ {
      match($0, /le="[^"]+"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      if (!(le in b)) order[++n] = le
      b[le] += $NF }
    /^runtime_pause_seconds_count/ { pc = $NF }
    /^runtime_pause_seconds_bucket\{le="0.05"\}/ { p50ms = $NF }
    END {
      p95 = "+Inf"
      for (i = 1; i <= n; i++) if (b[order[i]] >= 0.95 * total) { p95 = order[i]; break }
      printf "  requests %d, 5xx %d (%.2f %%), p95 <= %s s, runtime pauses over 50 ms: %d of %d probes\n",
        total, bad, total ? 100 * bad / total : 0, p95, pc - p50ms, pc }' "$work/metrics.txt"
}

log "healthy traffic: 400 requests"
traffic 400
report

log "injecting faults by editing the config file: 10 % errors, 120 ms latency"
cat >"$work/refserver.yaml" <<'YAML'
version: demo-v1
fault:
  error_ratio: 0.1
  latency_ms: 120
YAML
until curl -fsS "$base/metrics" | grep -q 'refserver_config_reloads_total{result="applied"} 1'; do sleep 0.1; done
log "reloaded; 400 more requests"
traffic 400
report

log "an invalid edit is rejected and the running config stays"
echo "fault: {error_ratio: 7}" >"$work/refserver.yaml"
until curl -fsS "$base/metrics" | grep -q 'refserver_config_reloads_total{result="rejected"} 1'; do sleep 0.1; done
grep '"configuration reload rejected' "$work/log.json" | tail -n1

log "SIGTERM: readiness goes 503, in-flight requests finish, exit code 0"
kill -TERM "$pid"
code=0
wait "$pid" || code=$?
pid=""
log "refserver exited with $code"
[ "$code" -eq 0 ]
