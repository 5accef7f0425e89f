#!/usr/bin/env bash
# `make demo`: the product working end to end on the local control plane.
# Brings up etcd, kube-apiserver, controller-manager, scheduler, Traefik, Prometheus and a real
# node (kubelet, containerd, kube-proxy, CoreDNS) with the images built from this repository;
# installs rollgate as users do (`kubectl apply -k manifests/`); deploys refserver v1; rolls out a
# healthy v2 (promoted) and a v3 answering 10 % errors (rolled back), showing progress live; and
# tears everything down. Needs root (containers); builds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

[ "$(id -u)" -eq 0 ] || die "make demo needs root for the node's containers (try: sudo make demo)"
state=${ROLLGATE_DEMO_STATE:-$ROLLGATE_CACHE/demo}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash e2e/scripts/cluster.sh down "$state" >/dev/null 2>&1 || true
  log "demo finished; everything stopped; logs in $state/logs"
}
trap cleanup EXIT

log "bringing up the local control plane (first run builds it from Go modules: ~20 min)"
env_file=$(bash e2e/scripts/cluster.sh up "$state" | tail -n1)
. "$env_file"
kubectl=$ROLLGATE_E2E_TOOLCHAIN/bin/kubectl
bin=$CARGO_TARGET_DIR/debug
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

log "installing rollgate in the cluster: kubectl apply -k manifests/ (logs: $state/logs/controller.log)"
"$kubectl" apply --server-side --force-conflicts -k manifests/ >/dev/null
"$kubectl" -n rollgate-system rollout status deployment/rollgate-controller --timeout=180s >/dev/null ||
  die "the controller did not become ready; see: $kubectl -n rollgate-system describe pods"
"$kubectl" -n rollgate-system logs -f -l app.kubernetes.io/name=rollgate --max-log-requests 4 --prefix \
  >"$state/logs/controller.log" 2>&1 &
pids+=($!)

manifest() { # version [extra env lines]
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refserver, namespace: default}
spec:
  parentRefs: [{name: rollgate-demo}]
  hostnames: [refserver.demo]
  rules:
    - backendRefs:
        - {name: refserver-stable, port: 80, weight: 100}
        - {name: refserver-canary, port: 80, weight: 0}
---
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {name: refserver, namespace: default}
spec:
  replicas: 1
  drainDelay: 3s
  template:
    spec:
      terminationGracePeriodSeconds: 10
      containers:
        - name: refserver
          image: ghcr.io/rollgate/refserver:$version
          env:
            - {name: REFSERVER_VERSION, value: "$1"}
            - {name: REFSERVER_SHUTDOWN_DRAIN_DELAY_MS, value: "3000"}$2
          ports: [{name: http, containerPort: 8080}]
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 1}
  traffic: {gatewayAPI: {httpRoute: refserver}}
  gate:
    # The in-cluster controller reaches Prometheus by its Service name.
    prometheus: {address: "$ROLLGATE_E2E_PROMETHEUS_IN_CLUSTER"}
    # The playbook's checks with a 1 % error budget, so that a demo's few hundred requests per
    # step are enough evidence; minHealthy 10s instead of 3m.
    checks:
      - {name: error-rate, errorRate: {maxRatio: 0.01}}
      - {name: latency, latency: {quantile: 0.95, max: 300ms}}
      - {name: pause, pause: {preset: refserver, quantile: 0.99, max: 50ms}}
    policy: {interval: 2s, minHealthy: 10s}
YAML
}

watch_rollout() { # until phase in $1 (regex); a phase in $2 (regex) or Failed ends the demo
  local last="" line
  while :; do
    line=$("$kubectl" get rollout refserver -o jsonpath='{.status.phase} weight={.status.canaryWeight}% step={.status.stepLabel} verdict={.status.verdict} | {.status.message}' 2>/dev/null || true)
    if [ "$line" != "$last" ]; then
      printf '  rollout  %s\n' "$line"
      last=$line
    fi
    if printf '%s' "$line" | grep -Eq "^($1) "; then return 0; fi
    if printf '%s' "$line" | grep -Eq "^(${2:-Failed}|Failed) "; then
      die "the rollout ended ${line%% *}, not $1: see $kubectl describe rollout refserver"
    fi
    sleep 1
  done
}

log "deploying refserver v1 (becomes stable directly)"
manifest v1 "" | "$kubectl" apply -f - >/dev/null
watch_rollout Promoted

# The gateway serves a route a moment after it is written: traffic starts once it answers, so
# that every request the load generator counts reached refserver.
log "waiting for the gateway to serve the route"
for i in $(seq 600); do
  curl -fsS -o /dev/null -H "Host: refserver.demo" "$ROLLGATE_E2E_GATEWAY/api/v1/echo" 2>/dev/null && break
  [ "$i" -eq 600 ] && die "the gateway did not serve refserver.demo within 60 s"
  sleep 0.1
done
log "sending 100 requests/s through the gateway (Traefik, Host: refserver.demo)"
"$bin/rollgate-load" --url "$ROLLGATE_E2E_GATEWAY/api/v1/echo" --host refserver.demo --rps 100 --report-every 5 &
load=$!
pids+=($load)
sleep 6

log "rolling out v2 (healthy): 1 % -> 5 % -> 100 %, each step judged on Prometheus data"
manifest v2 "" | "$kubectl" apply -f - >/dev/null
watch_rollout Progressing
watch_rollout Promoted RolledBack
sleep 6

log "rolling out v3 (answers 10 % of requests with 500): it should be rolled back at the first step"
manifest v3 $'\n            - {name: REFSERVER_FAULT_ERROR_RATIO, value: "0.1"}' | "$kubectl" apply -f - >/dev/null
watch_rollout Progressing
watch_rollout RolledBack Promoted
sleep 6

log "the verdicts, as a pipeline would read them"
"$kubectl" get rollout refserver
"$kubectl" get rollout refserver -o jsonpath='{range .status.checks[*]}  {.name}: {.result} ({.reason}){"\n"}{end}'
"$kubectl" get events --field-selector involvedObject.name=refserver -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message 2>/dev/null | tail -n 6 || true

# Every request, from the first one on, was answered: the load generator's totals say so.
kill -TERM "$load"
wait "$load" || die "requests failed during the demo (the totals above)"
log "every request was answered by refserver, through both rollouts (the error answers are v3's fault under test)"
