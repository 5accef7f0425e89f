#!/usr/bin/env bash
# `make bench-scale [ROLLOUTS=1000] [REPLICAS=1] [SHARDS=…] [PODS=0]`: the controller (release
# build, REPLICAS replicas sharing SHARDS shards; default 8 shards when REPLICAS > 1) at many
# Rollouts on the local control plane. The controller-manager and kube-proxy are stopped
# (PODS=1 keeps them, and the pods are then created but never scheduled), so every Rollout
# waits for its first deploy.
# rollgate-scale creates the Rollouts, then reports spec → status latency, the controller's
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
  # shellcheck disable=SC2086
  [ -n "$ctl" ] && kill $ctl 2>/dev/null || true
  bash e2e/scripts/cluster.sh down "$state" >/dev/null 2>&1 || true
}
trap cleanup EXIT

log "building the release controller and rollgate-scale"
cargo build -q --locked --release -p rollgate -p rollgate-e2e --bin rollgate --bin rollgate-scale
env_file=$(bash e2e/scripts/cluster.sh up "$state" | tail -n1)
# shellcheck disable=SC1090
. "$env_file"
replicas=${REPLICAS:-1}
shards=${SHARDS:-$([ "$replicas" -gt 1 ] && echo 8 || echo 1)}
if [ "${PODS:-0}" = 0 ]; then
  # Rollouts that create no pods: without the controller-manager no Deployment gets a
  # ReplicaSet, so every Rollout waits for its first deploy and the API server carries only
  # what rollgate does.
  # kube-proxy too: no pod would ever receive a Service's traffic, and rewriting the node's
  # iptables for thousands of Services would take the CPU being measured.
  for p in controller-manager kube-proxy; do
    kill "$(cat "$state/pids/$p")"
    rm -f "$state/pids/$p"
  done
fi
pid_args=()
url_args=()
for i in $(seq "$replicas"); do
  log_file="$state/logs/controller-scale-$i.log"
  "$CARGO_TARGET_DIR/release/rollgate" controller --metrics-addr 127.0.0.1:0 --lease-namespace default \
    --identity "bench-scale-$i" --shards "$shards" >"$log_file" 2>&1 &
  pid=$!
  ctl="$ctl $pid"
  started="leadership acquired"
  [ "$shards" -gt 1 ] && started="started; sharded"
  [ "$replicas" -gt 1 ] && [ "$shards" -eq 1 ] && started="waiting for leadership"
  for _ in $(seq 300); do grep -q "$started" "$log_file" && break; sleep 0.1; done
  grep -q "$started" "$log_file" || die "controller $i did not start (log: $log_file)"
  addr=$(grep -o '"metrics":"[^"]*"' "$log_file" | head -n1 | cut -d'"' -f4)
  pid_args+=(--controller-pid "$pid")
  url_args+=(--metrics-url "http://$addr/metrics")
done
api_pid=$(pgrep -f "bin/kube-apiserver" | head -n1)
[ -n "$api_pid" ] || die "no kube-apiserver process"
log "creating $n Rollouts ($replicas replicas, $shards shards, API server pid $api_pid)"
"$CARGO_TARGET_DIR/release/rollgate-scale" --rollouts "$n" "${pid_args[@]}" --shards "$shards" \
  --apiserver-pid "$api_pid" "${url_args[@]}" | tee "$state/report.json"
log "report: $state/report.json; machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB"
