#!/usr/bin/env bash
# `make bench-cpu`: CPU of one active rollout, rollgate (release build) beside Flagger v1.36.1,
# on the local control plane and its real node. Each judges its own copy of refserver at the same
# 10 s interval on the same traffic (20 requests/s through the gateway), with the same three
# checks (error rate, p95 latency, p99 pause) from the same Prometheus. Both roll out v2 at once;
# the script reads each process's CPU seconds (/proc/<pid>/stat) over WINDOW seconds while both
# rollouts are in progress. A report, not a test: docs/dev/benchmarks.md quotes it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
[ "$(id -u)" -eq 0 ] || die "make bench-cpu needs root (the local control plane's node)"
window=${WINDOW:-300}
flagger_version=v1.36.1
state=${ROLLGATE_BENCH_STATE:-$ROLLGATE_CACHE/bench-cpu}
flagger_bin=$ROLLGATE_CACHE/toolchain/flagger-${flagger_version#v}/flagger
pids=""
cleanup() {
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  bash e2e/scripts/cluster.sh down "$state" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if [ ! -x "$flagger_bin" ]; then
  log "building Flagger $flagger_version (go install, as its README says)"
  GOBIN=$(dirname "$flagger_bin") go install "github.com/fluxcd/flagger/cmd/flagger@$flagger_version"
fi
flagger_src=$(go env GOMODCACHE)/github.com/fluxcd/flagger@$flagger_version
[ -f "$flagger_src/artifacts/flagger/crd.yaml" ] ||
  GOFLAGS=-mod=mod go mod download "github.com/fluxcd/flagger@$flagger_version"
log "building the release controller and the load generator"
cargo build -q --locked --release -p rollgate -p rollgate-e2e --bin rollgate --bin rollgate-load
env_file=$(bash e2e/scripts/cluster.sh up "$state" | tail -n1)
# shellcheck disable=SC1090
. "$env_file"
kubectl=$ROLLGATE_E2E_TOOLCHAIN/bin/kubectl
prometheus=$ROLLGATE_E2E_PROMETHEUS
image=ghcr.io/rollgate/refserver:0.1.0

"$kubectl" apply --server-side -f "$flagger_src/artifacts/flagger/crd.yaml" >/dev/null
for ns in cpu-flagger cpu-rollgate; do "$kubectl" create namespace "$ns" >/dev/null; done

# The same pods for both: refserver, scraped by the suite's Prometheus (the rollout label).
pod_template() { # VERSION
  cat <<EOF
    metadata: {labels: {app: web, rollgate.dev/rollout: web}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
        - name: refserver
          image: $image
          env: [{name: REFSERVER_VERSION, value: "$1"}]
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
EOF
}

flagger_objects() { # VERSION
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: cpu-flagger}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
$(pod_template "$1")
EOF
}

metric_template() { # NAME QUERY
  cat <<EOF
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: $1, namespace: cpu-flagger}
spec:
  provider: {type: prometheus, address: "$prometheus"}
  query: '$2'
EOF
}

sel='namespace="{{ namespace }}",pod=~"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
{
  flagger_objects v1
  metric_template error-rate "100 * (sum(rate(http_server_request_duration_seconds_count{$sel,http_response_status_code=~\"5..\"}[{{ interval }}])) or vector(0)) / sum(rate(http_server_request_duration_seconds_count{$sel}[{{ interval }}]))"
  metric_template latency "1000 * histogram_quantile(0.95, sum(rate(http_server_request_duration_seconds_bucket{$sel}[{{ interval }}])) by (le))"
  metric_template pause "1000 * histogram_quantile(0.99, sum(rate(runtime_pause_seconds_bucket{$sel}[{{ interval }}])) by (le))"
  cat <<EOF
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: cpu-flagger}
spec:
  provider: gatewayapi:v1
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  progressDeadlineSeconds: 600
  service:
    port: 80
    targetPort: 8080
    hosts: [web.cpu-flagger.e2e]
    gatewayRefs: [{name: rollgate-demo, namespace: default}]
  analysis:
    interval: 10s
    threshold: 10
    stepWeight: 1
    maxWeight: 50
    metrics:
      - {name: error-rate, templateRef: {name: error-rate}, thresholdRange: {max: 1}, interval: 1m}
      - {name: latency, templateRef: {name: latency}, thresholdRange: {max: 300}, interval: 1m}
      - {name: pause, templateRef: {name: pause}, thresholdRange: {max: 50}, interval: 1m}
EOF
} | "$kubectl" apply -f - >/dev/null

rollgate_objects() { # VERSION
  cat <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: cpu-rollgate}
spec:
  parentRefs: [{name: rollgate-demo, namespace: default}]
  hostnames: [web.cpu-rollgate.e2e]
  rules:
    - backendRefs:
        - {name: web-stable, port: 80, weight: 100}
        - {name: web-canary, port: 80, weight: 0}
---
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: cpu-rollgate}
spec:
  replicas: 1
  template:
$(pod_template "$1")
  traffic: {gatewayAPI: {httpRoute: web}}
  gate:
    prometheus: {address: "$prometheus"}
    checks:
      - {name: error-rate, errorRate: {maxRatio: 0.01}}
      - {name: latency, latency: {quantile: 0.95, max: 300ms}}
      - {name: pause, pause: {preset: refserver, quantile: 0.99, max: 50ms}}
    policy: {interval: 10s}
EOF
}
rollgate_objects v1 | "$kubectl" apply -f - >/dev/null

logs=$state/logs
"$CARGO_TARGET_DIR/release/rollgate" controller --metrics-addr 127.0.0.1:0 --lease-namespace default \
  --identity bench-cpu --watch-namespace cpu-rollgate >"$logs/bench-cpu-rollgate.log" 2>&1 &
rollgate_pid=$!
"$flagger_bin" -kubeconfig "$KUBECONFIG" -namespace cpu-flagger -mesh-provider gatewayapi:v1 \
  -metrics-server "$prometheus" -log-level info >"$logs/bench-cpu-flagger.log" 2>&1 &
flagger_pid=$!
pids="$rollgate_pid $flagger_pid"

wait_for() { # WHAT SECONDS COMMAND...
  local what=$1 secs=$2
  shift 2
  for _ in $(seq $((secs * 2))); do "$@" && return 0; sleep 0.5; done
  die "$what not reached within ${secs}s (logs: $logs/bench-cpu-*.log)"
}
phase() { "$kubectl" get "$1" web -n "$2" -o 'jsonpath={.status.phase}' 2>/dev/null; }
is() { [ "$(phase "$1" "$2")" = "$3" ]; }
wait_for "the Canary initialized" 300 is canary cpu-flagger Initialized
wait_for "the Rollout promoted" 300 is rollout cpu-rollgate Promoted

for ns in cpu-flagger cpu-rollgate; do
  "$CARGO_TARGET_DIR/release/rollgate-load" --url "$ROLLGATE_E2E_GATEWAY/api/v1/echo" --host "web.$ns.e2e" \
    --rps 20 --workers 2 >"$logs/bench-cpu-load-$ns.log" 2>&1 &
  pids="$pids $!"
done
flagger_objects v2 | "$kubectl" apply -f - >/dev/null
rollgate_objects v2 | "$kubectl" apply -f - >/dev/null
wait_for "the Canary progressing" 300 is canary cpu-flagger Progressing
weight() { [ "$("$kubectl" get rollout web -n cpu-rollgate -o 'jsonpath={.status.canaryWeight}')" -gt 0 ] 2>/dev/null; }
wait_for "the Rollout's first step" 300 weight

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
r0=$(cpu "$rollgate_pid")
f0=$(cpu "$flagger_pid")
log "measuring both controllers' CPU over ${window}s while both rollouts are in progress"
sleep "$window"
r1=$(cpu "$rollgate_pid")
f1=$(cpu "$flagger_pid")
still() { [ "$(phase "$1" "$2")" = "$3" ]; }
still canary cpu-flagger Progressing || log "warning: the Canary is no longer progressing: $(phase canary cpu-flagger)"
still rollout cpu-rollgate Progressing || log "warning: the Rollout is no longer progressing: $(phase rollout cpu-rollgate)"
hz=$(getconf CLK_TCK)
awk -v r="$((r1 - r0))" -v f="$((f1 - f0))" -v hz="$hz" -v w="$window" 'BEGIN {
  rs = r / hz; fs = f / hz;
  printf "{\n  \"window_seconds\": %d,\n  \"rollgate_cpu_seconds\": %.2f,\n  \"flagger_cpu_seconds\": %.2f,\n", w, rs, fs;
  printf "  \"rollgate_cpu_seconds_per_hour\": %.1f,\n  \"flagger_cpu_seconds_per_hour\": %.1f,\n", rs * 3600 / w, fs * 3600 / w;
  printf "  \"rollgate_over_flagger\": %.2f\n}\n", (fs > 0 ? rs / fs : -1);
}' | tee "$state/report.json"
log "report: $state/report.json; machine: $(nproc) cores; logs in $logs"
