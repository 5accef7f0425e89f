#!/usr/bin/env bash
# The local control plane: real etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# Traefik (Gateway API data plane) and Prometheus as host processes, and a real node
# (containerd + runc + CNI bridge, kubelet, kube-proxy, CoreDNS) running images built here.
# Prometheus is also a Service, `prometheus.monitoring:9090`, so pods reach it by name.
#
#   e2e/scripts/cluster.sh up   [STATE_DIR]   start everything; prints the env file to source
#   e2e/scripts/cluster.sh down [STATE_DIR]   stop everything, remove namespaces and links
#
# STATE_DIR (default ~/.cache/rollgate/cluster) holds certificates, data, logs/ and env. Needs
# root (containers, network namespaces). Only loopback, the host's cluster address (10.200.0.1)
# and the pod bridge (10.201.0.0/24) carry traffic.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/.." && pwd)
. "$root/scripts/lib.sh"

cmd=${1:-}
state=${2:-$ROLLGATE_CACHE/cluster}
: "${APISERVER_PORT:=16443}" "${ETCD_PORT:=23790}" "${GATEWAY_PORT:=18000}" "${PROMETHEUS_PORT:=19090}"
: "${TRAEFIK_PING_PORT:=18081}"
# The host's address on the cluster network (a bridge with no ports): the API server, the kubelet and
# Prometheus listen there, and pods reach it through their bridge's gateway.
HOST_LINK=rg0
NODE_IP=10.200.0.1
# The node: its pods live on their own CNI bridge and subnet.
REAL_NODE=rollgate-real
REAL_BRIDGE=rgc0
REAL_SUBNET=10.201.0.0/24
CLUSTER_DNS=10.96.0.10
# The host-wide names (links, subnet, ports) belong to one cluster at a time: the state directory
# of the running one is recorded here, and only that directory's `down` removes them.
CLAIM=/run/rollgate-cluster

# Whether this state directory holds the claim on the host-wide names.
ours() {
  [ -f "$CLAIM" ] && [ "$(cat "$CLAIM")" = "$state" ]
}

# Another cluster holds the host-wide names (or they are in use by something else): say which,
# and how to stop it, instead of breaking it.
refuse_if_taken() {
  if [ -f "$CLAIM" ] && ! ours; then
    local other pid alive=""
    other=$(cat "$CLAIM")
    for pid in $(cat "$other"/pids/* 2>/dev/null || true); do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ -n "$alive" ] && die "a local cluster is already running from $other; stop it first: bash e2e/scripts/cluster.sh down $other"
    die "a local cluster from $other did not stop cleanly; clean it up first: bash e2e/scripts/cluster.sh down $other"
  fi
  ours && return 0
  local l
  for l in "$HOST_LINK" "$REAL_BRIDGE"; do
    ip link show "$l" >/dev/null 2>&1 &&
      die "link $l exists but no cluster of this script claims it (not made by $state); remove it yourself (ip link del $l) if it is a leftover"
  done
  local port
  for port in "$APISERVER_PORT" "$ETCD_PORT" "$GATEWAY_PORT" "$PROMETHEUS_PORT" "$TRAEFIK_PING_PORT" 10250; do
    if ss -Hltn "sport = :$port" 2>/dev/null | grep -q .; then
      die "port $port is in use by another process ($(ss -Hltnp "sport = :$port" | grep -o 'users:.*' | head -n1)); stop it first"
    fi
  done
}

down() {
  if [ -d "$state/pids" ]; then
    for f in kube-proxy kubelet traefik prometheus scheduler controller-manager apiserver etcd containerd; do
      [ -f "$state/pids/$f" ] || continue
      pid=$(cat "$state/pids/$f")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
      rm -f "$state/pids/$f"
    done
  fi
  # The containers, mounts and kube-proxy rules this directory made; the host-wide links and pod
  # namespaces only when it holds the claim (another cluster's are not ours to remove).
  real_node_down
  if ours; then
    ip link del "$HOST_LINK" 2>/dev/null || true
    rm -f "$CLAIM"
  elif [ -f "$CLAIM" ]; then
    log "left the links of the cluster running from $(cat "$CLAIM") alone"
  fi
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
  # The API server's client certificate for kubelets (logs, exec), signed by the cluster CA.
  if [ ! -f "$d/kubelet-client.crt" ]; then
    openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
      -keyout "$d/kubelet-client.key" -out "$d/kubelet-client.csr" 2>/dev/null
    openssl x509 -req -in "$d/kubelet-client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 30 -out "$d/kubelet-client.crt" 2>/dev/null
  fi
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

# Containers left by a killed containerd, this state directory's mounts, the CNI bridge and the
# kube-proxy rules: only what this cluster made.
real_node_down() {
  local c=$state/containerd
  if [ -d "$c" ]; then
    for shim in $(pgrep -f "containerd-shim.*-address $c/containerd.sock" 2>/dev/null || true); do
      pkill -KILL -P "$shim" 2>/dev/null || true
      kill -KILL "$shim" 2>/dev/null || true
    done
    local m
    for m in $(awk '{print $2}' /proc/mounts | grep -E "^($c|$state/kubelet)(/|\$)" | sort -r || true); do
      umount -l "$m" 2>/dev/null || true
    done
  fi
  if ours; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' || true); do
      # Only the namespaces whose pods were on this cluster's CNI bridge.
      if ip netns exec "$ns" ip -o -4 addr show 2>/dev/null | grep -q " ${REAL_SUBNET%.*}\."; then
        ip netns del "$ns" 2>/dev/null || true
      fi
    done
    ip link del "$REAL_BRIDGE" 2>/dev/null || true
  fi
  # kube-proxy removes its own rules (host-wide chains: only with the claim).
  if [ -f "$state/real-node" ] && ours; then
    local kp
    kp="$(cat "$state/real-node")/bin/kube-proxy"
    [ -x "$kp" ] && "$kp" --cleanup --proxy-mode iptables >/dev/null 2>&1 || true
    rm -f "$state/real-node"
  fi
  rm -rf "$state/kubelet" "$c/state" "$state/cni/ipam"
}

real_node_up() { # toolchain dir
  local tc=$1 c=$state/containerd
  apt_install containerd runc containernetworking-plugins iptables conntrack
  mkdir -p "$c" "$state/cni" "$state/kubelet"
  printf '%s\n' "$tc" >"$state/real-node"
  sysctl -qw net.ipv4.ip_forward=1
  [ -f /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1
  cat >"$state/cni/10-rollgate.conflist" <<CNI
{"cniVersion": "1.0.0", "name": "rollgate-real", "plugins": [
  {"type": "bridge", "bridge": "$REAL_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$REAL_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$state/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
CNI
  # Debian's containerd 1.6: private root, state and socket; the sandbox image built here; this
  # VM refuses a negative oom_score_adj, which restrict_oom_score_adj avoids.
  containerd config default |
    sed -e "s|^root = .*|root = \"$c/root\"|" -e "s|^state = .*|state = \"$c/state\"|" \
      -e "s|^  address = \"/run/containerd/containerd.sock\"|  address = \"$c/containerd.sock\"|" \
      -e "s|sandbox_image = .*|sandbox_image = \"registry.k8s.io/pause:3.10\"|" \
      -e "s|restrict_oom_score_adj = .*|restrict_oom_score_adj = true|" \
      -e "s|bin_dir = .*|bin_dir = \"/usr/lib/cni\"|" -e "s|conf_dir = .*|conf_dir = \"$state/cni\"|" \
      >"$c/config.toml"
  start containerd containerd --config "$c/config.toml"
  wait_for containerd 30 ctr --address "$c/containerd.sock" version
  log "loading the images into the real node"
  local archive
  for archive in $(bash "$root/scripts/images.sh" "$tc"); do
    ctr --address "$c/containerd.sock" -n k8s.io images import --all-platforms "$archive" >/dev/null
  done
  cat >"$state/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzPort: 10248
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: "$state/pki/ca.crt"}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$c/containerd.sock
enforceNodeAllocatable: []
evictionHard: {}
# The images are loaded here, not pulled: garbage-collecting one (on a full disk) loses it for good.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
serializeImagePulls: false
KUBELET
  start kubelet "$tc/bin/kubelet" --config "$state/kubelet.yaml" --kubeconfig "$state/kubeconfig" \
    --hostname-override "$REAL_NODE" --node-ip "$NODE_IP" --root-dir "$state/kubelet" \
    --cert-dir "$state/kubelet/pki"
  start kube-proxy "$tc/bin/kube-proxy" --kubeconfig "$state/kubeconfig" --hostname-override "$REAL_NODE" \
    --proxy-mode iptables --cluster-cidr "$REAL_SUBNET" --bind-address "$NODE_IP" \
    --metrics-bind-address 127.0.0.1:10249 --healthz-bind-address 127.0.0.1:10256
  wait_for "node $REAL_NODE" 90 "$tc/bin/kubectl" wait --for=condition=Ready "node/$REAL_NODE" --timeout=1s
}

# CoreDNS in the cluster, and the host's Prometheus as the Service prometheus.monitoring:9090
# (no selector: its EndpointSlice names the host), so that pods use it by name as users do.
cluster_services() { # toolchain dir
  local kubectl="$1/bin/kubectl" coredns_version
  coredns_version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$here/toolchain/coredns/go.mod")
  sed "s|COREDNS_IMAGE|localhost/coredns:$coredns_version|" "$here/manifests/coredns.yaml" | "$kubectl" apply -f - >/dev/null
  "$kubectl" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Service
metadata: {name: prometheus, namespace: monitoring}
spec:
  ports: [{name: web, port: 9090, targetPort: $PROMETHEUS_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: prometheus-host
  namespace: monitoring
  labels: {kubernetes.io/service-name: prometheus, endpointslice.kubernetes.io/managed-by: rollgate-e2e}
addressType: IPv4
ports: [{name: web, port: $PROMETHEUS_PORT, protocol: TCP}]
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
YAML
  wait_for "CoreDNS" 120 "$kubectl" -n kube-system wait --for=condition=Available deployment/coredns --timeout=1s
}

kubeconfig() {
  cat >"$state/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: rollgate-e2e
  cluster: {server: "https://$NODE_IP:$APISERVER_PORT", certificate-authority: "$state/pki/ca.crt"}
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
  refuse_if_taken
  local tc
  tc=$(bash "$here/scripts/build-toolchain.sh")
  log "building rollgate (CLI, host controller) and the load generator"
  (cd "$root" && cargo build -q --locked -p rollgate -p rollgate-e2e --bins)
  down
  printf '%s\n' "$state" >"$CLAIM"
  rm -rf "$state/etcd" "$state/prometheus-data" "$state/prometheus-targets"
  mkdir -p "$state/pids" "$state/logs" "$state/prometheus-targets"
  certs
  kubeconfig
  export KUBECONFIG=$state/kubeconfig
  local kubectl="$tc/bin/kubectl"

  ip link add "$HOST_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$HOST_LINK"
  ip link set "$HOST_LINK" up

  start etcd "$tc/bin/etcd" --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))"
  wait_for etcd 30 curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

  start apiserver "$tc/bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
    --tls-cert-file "$state/pki/apiserver.crt" --tls-private-key-file "$state/pki/apiserver.key" \
    --client-ca-file "$state/pki/ca.crt" --token-auth-file "$state/pki/tokens.csv" \
    --authorization-mode Node,RBAC --allow-privileged=true \
    --service-cluster-ip-range 10.96.0.0/16 \
    --kubelet-client-certificate "$state/pki/kubelet-client.crt" --kubelet-client-key "$state/pki/kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$state/pki/sa.pub" --service-account-signing-key-file "$state/pki/sa.key"
  wait_for kube-apiserver 60 "$kubectl" get --raw /readyz

  start controller-manager "$tc/bin/kube-controller-manager" --kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10357 --leader-elect=false \
    --service-account-private-key-file "$state/pki/sa.key" --root-ca-file "$state/pki/ca.crt" \
    --use-service-account-credentials=false
  start scheduler "$tc/bin/kube-scheduler" --kubeconfig "$state/kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10359 --leader-elect=false
  real_node_up "$tc"
  wait_for "default service account" 60 "$kubectl" get serviceaccount default
  cluster_services "$tc"

  log "installing the Gateway API and rollgate CRDs and the demo Gateway"
  "$kubectl" apply --server-side -f "$tc/crds/" >/dev/null
  "$kubectl" apply --server-side -f "$root/manifests/crds/rollgate.yaml" >/dev/null
  "$kubectl" wait --for=condition=Established crd/gateways.gateway.networking.k8s.io \
    crd/httproutes.gateway.networking.k8s.io crd/rollouts.rollgate.dev crd/releasegates.rollgate.dev \
    crd/traefikservices.traefik.io >/dev/null
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
    --metrics.prometheus=true --metrics.prometheus.entryPoint=ping --metrics.prometheus.addServicesLabels=true \
    --providers.kubernetesgateway --providers.kubernetesgateway.throttleDuration=0s \
    --providers.kubernetescrd --providers.kubernetescrd.throttleDuration=0s --log.level=INFO
  wait_for traefik 60 curl -fsS "http://127.0.0.1:$TRAEFIK_PING_PORT/ping"

  log "starting Prometheus with the scrape config from manifests/prometheus/scrape.yaml"
  {
    printf 'global:\n  scrape_interval: 2s\n  evaluation_interval: 2s\nscrape_configs:\n'
    sed -e 's/^/  /' -e "s|^\(      \)- role: pod|\1- role: pod\n\1  api_server: https://$NODE_IP:$APISERVER_PORT\n\1  tls_config: {ca_file: $state/pki/ca.crt}\n\1  authorization: {credentials_file: $state/pki/token}|" \
      -e 's/scrape_interval: 5s/scrape_interval: 2s/' "$root/manifests/prometheus/scrape.yaml"
    # The gateway's own per-backend metrics, for the `traefik` metric source.
    printf '  - job_name: traefik\n    static_configs: [{targets: ["127.0.0.1:%s"]}]\n' "$TRAEFIK_PING_PORT"
    # The controllers the suite starts on the host write their metrics address here.
    printf '  - job_name: rollgate-controllers\n    file_sd_configs: [{files: ["%s/prometheus-targets/*.json"], refresh_interval: 5s}]\n' "$state"
  } >"$state/prometheus.yml"
  start prometheus "$tc/bin/prometheus" --config.file "$state/prometheus.yml" --storage.tsdb.path "$state/prometheus-data" \
    --web.listen-address "$NODE_IP:$PROMETHEUS_PORT" --web.enable-lifecycle
  wait_for prometheus 60 curl -fsS "http://$NODE_IP:$PROMETHEUS_PORT/-/ready"

  cat >"$state/env" <<ENV
export KUBECONFIG=$state/kubeconfig
export ROLLGATE_E2E_STATE=$state
export ROLLGATE_E2E_TOOLCHAIN=$tc
export ROLLGATE_E2E_GATEWAY=http://127.0.0.1:$GATEWAY_PORT
export ROLLGATE_E2E_PROMETHEUS=http://$NODE_IP:$PROMETHEUS_PORT
export ROLLGATE_E2E_PROMETHEUS_IN_CLUSTER=http://prometheus.monitoring:9090
export ROLLGATE_E2E_REAL_NODE=$REAL_NODE
export ROLLGATE_E2E_CONTAINERD=$state/containerd/containerd.sock
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
