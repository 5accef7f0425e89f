#!/usr/bin/env bash
# `make bench-scale [ROLLOUTS=1000]`: the controller (release build) at many Rollouts on the
# local control plane. rollgate-scale creates the Rollouts (their pods can never be scheduled,
# so they wait for their first deploy), then reports spec → status latency, the controller's
# and the API server's CPU and the controller's memory at steady state, and its memory after
# every Rollout is deleted. A report, not a test: docs/dev/benchmarks.md quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$(id -u)" -eq 0 ] || die "make bench-scale needs root (the local control plane's node)"
n=${1:-1000}
state=${ROLLGATE_BENCH_STATE:-$ROLLGATE_CACHE/bench-scale}
ctl=""
cleanup() {
  [ -n "$ctl" ] && kill "$ctl" 2>/dev/null || true
  bash e2e/scripts/cluster.sh down "$state" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "building the release controller and rollgate-scale"
cargo build -q --locked --release -p rollgate -p rollgate-e2e --bin rollgate --bin rollgate-scale
env_file=$(bash e2e/scripts/cluster.sh up "$state" | tail -n1)
# shellcheck disable=SC1090
. "$env_file"
log_file="$state/logs/controller-scale.log"
"$CARGO_TARGET_DIR/release/rollgate" controller --metrics-addr 127.0.0.1:0 --lease-namespace default \
  --identity bench-scale >"$log_file" 2>&1 &
ctl=$!
for _ in $(seq 300); do grep -q "leadership acquired" "$log_file" && break; sleep 0.1; done
grep -q "leadership acquired" "$log_file" || die "the controller did not become leader (log: $log_file)"
addr=$(grep -o '"metrics":"[^"]*"' "$log_file" | head -n1 | cut -d'"' -f4)
api_pid=$(pgrep -f "bin/kube-apiserver" | head -n1)
[ -n "$api_pid" ] || die "no kube-apiserver process"
log "creating $n Rollouts (controller pid $ctl, API server pid $api_pid, metrics $addr)"
"$CARGO_TARGET_DIR/release/rollgate-scale" --rollouts "$n" --controller-pid "$ctl" \
  --apiserver-pid "$api_pid" --metrics-url "http://$addr/metrics" | tee "$state/report.json"
log "report: $state/report.json; machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
