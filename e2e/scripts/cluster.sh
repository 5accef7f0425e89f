#!/usr/bin/env bash
# The local control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# Traefik (Gateway API data plane) and Prometheus, plus rollgate-node standing in for the kubelet.
#
#   e2e/scripts/cluster.sh up   [STATE_DIR]   start everything; prints the env file to source
#   e2e/scripts/cluster.sh down [STATE_DIR]   stop everything, remove namespaces and links
#
# STATE_DIR (default ~/.cache/rollgate/cluster) holds certificates, data, logs/ and env. Needs
# root (network namespaces). Only loopback and the pod bridge (10.200.0.0/16) carry traffic.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
. "$root/scripts/lib.sh"

cmd=${1:-}
state=${2:-$ROLLGATE_CACHE/cluster}
: "${APISERVER_PORT:=16443}" "${ETCD_PORT:=23790}" "${GATEWAY_PORT:=18000}" "${PROMETHEUS_PORT:=19090}"
: "${TRAEFIK_PING_PORT:=18081}"
BRIDGE=rg0
NODE_IP=10.200.0.1
NET_PREFIX=rgp

down() {
  if [ -d "$state/pids" ]; then
    for f in node traefik prometheus scheduler controller-manager apiserver etcd; do
      [ -f "$state/pids/$f" ] || continue
      pid=$(cat "$state/pids/$f")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$state/pids/$f"
    done
  fi
  # Leftover pod processes, namespaces and links (also after a crash).
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$NET_PREFIX" || true); do
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for l in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${NET_PREFIX}h" || true); do
    ip link del "$l" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  [ -d "$state" ] && log "control plane stopped; logs in $state/logs"
  return 0
}

start() { # name command...
  local name=$1
  shift
  "$@" >"$state/logs/$name.log" 2>&1 &
  echo $! >"$state/pids/$name"
}

wait_for() { # what seconds command...
  local what=$1 secs=$2 i=0
  shift 2
  until "$@" >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt $((secs * 10)) ]; then
      echo "error: $what not ready after ${secs}s; see $state/logs" >&2
      return 1
    fi
    sleep 0.1
  done
}

certs() {
  local d=$state/pki
  [ -f "$d/apiserver.crt" ] || new_certs
  # A user with no RBAC bindings, for the verdict API's 403 (the tokens file is read at start).
  [ -f "$d/viewer-token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/viewer-token"
  grep -q ',e2e-viewer,' "$d/tokens.csv" ||
    printf '%s,e2e-viewer,e2e-viewer\n' "$(cat "$d/viewer-token")" >>"$d/tokens.csv"
}

new_certs() {
  local d=$state/pki
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=rollgate-e2e-ca" \
    -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$d/apiserver.key" \
    -out "$d/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default.svc\n' \
    "$NODE_IP" >"$d/san.ext"
  openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 30 -extfile "$d/san.ext" -out "$d/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
  openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/token"
  printf '%s,admin,admin,system:masters\n' "$(cat "$d/token")" >"$d/tokens.csv"
}

kubeconfig() {
  cat >"$state/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: rollgate-e2e
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$state/pki/ca.crt"}
users:
- name: admin
  user: {token: "$(cat "$state/pki/token")"}
contexts:
- name: rollgate-e2e
  context: {cluster: rollgate-e2e, user: admin, namespace: default}
current-context: rollgate-e2e
KC
}

up() {
  [ "$(id -u)" -eq 0 ] || die "the local control plane needs root (network namespaces)"
  apt_install iproute2 openssl curl
  local tc
  tc=$(bash "$here/scripts/build-toolchain.sh")
  log "building rollgate, rollgate-node and refserver"
  (cd "$root" && cargo build -q --locked -p rollgate -p rollgate-e2e -p refserver --bins)
  down
  rm -rf "$state/etcd" "$state/prometheus-data"
  mkdir -p "$state/pids" "$state/logs/pods"
  certs
  kubeconfig
  export KUBECONFIG=$state/kubeconfig
  local kubectl="$tc/bin/kubectl"

  ip link add "$BRIDGE" type bridge
  ip addr add "$NODE_IP/16" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  start etcd "$tc/bin/etcd" --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start apiserver "$tc/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
    --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
    --client-ca-file "$state/pki/ca.crt" --token-auth-file "$state/pki/tokens.csv" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --service-cluster-ip-range 10.96.0.0/16 \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$state/pki/sa.pub" --service-account-signing-key-file "$state/pki/sa.key"
  wait_for kube-apiserver 60 "$kubectl" get --raw /readyz

  start controller-manager "$tc/bin/kube-controller-manager" --kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10357 --leader-elect=false \
    --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
    --use-service-account-credentials=false
  start scheduler "$tc/bin/kube-scheduler" --kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10359 --leader-elect=false
  start node "$CARGO_TARGET_DIR/debug/rollgate-node" --node-ip "$NODE_IP" --bridge "$BRIDGE" \
    --net-prefix "$NET_PREFIX" --log-dir "$state/logs/pods" \
    --image "refserver=$CARGO_TARGET_DIR/debug/refserver"
  wait_for "node rollgate-node" 60 "$kubectl" wait --for=condition=Ready node/rollgate-node --timeout=1s
  wait_for "default service account" 60 "$kubectl" get serviceaccount default

  log "installing the Gateway API and rollgate CRDs and the demo Gateway"
  "$kubectl" apply --server-side -f "$tc/crds/" >/dev/null
  "$kubectl" apply --server-side -f "$root/manifests/crds/rollgate.yaml" >/dev/null
  "$kubectl" wait --for=condition=Established crd/gateways.gateway.networking.k8s.io \
    crd/httproutes.gateway.networking.k8s.io crd/rollouts.rollgate.dev crd/releasegates.rollgate.dev >/dev/null
  "$kubectl" apply -f - >/dev/null <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: rollgate-demo, namespace: default}
spec:
  gatewayClassName: traefik
  listeners:
    - {name: web, protocol: HTTP, port: $GATEWAY_PORT, allowedRoutes: {namespaces: {from: All}}}
YAML
  start traefik env KUBECONFIG="$state/kubeconfig" "$tc/bin/traefik" \
    --entryPoints.web.address="127.0.0.1:$GATEWAY_PORT" \
    --entryPoints.ping.address="127.0.0.1:$TRAEFIK_PING_PORT" --ping.entryPoint=ping \
    --providers.kubernetesgateway --providers.kubernetesgateway.throttleDuration=0s --log.level=INFO
  wait_for traefik 60 curl -fsS "http://127.0.0.1:$TRAEFIK_PING_PORT/ping"

  log "starting Prometheus with the scrape config from manifests/prometheus/scrape.yaml"
  {
    printf 'global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nscrape_configs:\n'
    sed -e 's/^/  /' -e "s|^\(      \)- role: pod|\1- role: pod\n\1  api_server: https://127.0.0.1:$APISERVER_PORT\n\1  tls_config: {ca_file: $state/pki/ca.crt}\n\1  authorization: {credentials_file: $state/pki/token}|" \
      -e 's/scrape_interval: 5s/scrape_interval: 2s/' "$root/manifests/prometheus/scrape.yaml"
  } >"$state/prometheus.yml"
  start prometheus "$tc/bin/prometheus" --config.file "$state/prometheus.yml" --storage.tsdb.path "$state/prometheus-data" \
    --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle
  wait_for prometheus 60 curl -fsS "http://127.0.0.1:$PROMETHEUS_PORT/-/ready"

  cat >"$state/env" <<ENV
export KUBECONFIG=$state/kubeconfig
export ROLLGATE_E2E_STATE=$state
export ROLLGATE_E2E_TOOLCHAIN=$tc
export ROLLGATE_E2E_GATEWAY=http://127.0.0.1:$GATEWAY_PORT
export ROLLGATE_E2E_PROMETHEUS=http://127.0.0.1:$PROMETHEUS_PORT
export ROLLGATE_E2E_PROMETHEUS_PID=$(cat "$state/pids/prometheus")
ENV
  log "control plane up: source $state/env; logs in $state/logs"
  printf '%s\n' "$state/env"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up|down [STATE_DIR]" ;;
esac
