#!/usr/bin/env bash
# Builds the control-plane binaries the e2e suite and `make demo` run, from Go modules, and caches
# them outside the repository keyed by version and by the wrapper's go.sum:
#   etcd; kube-apiserver, kube-controller-manager, kube-scheduler, kubectl; traefik; prometheus
#   (Debian's package lacks Kubernetes service discovery); the Gateway API standard CRDs and
#   Traefik's CRDs; and for
#   the real node: kubelet, kube-proxy, the pause (sandbox) binary from the kubernetes module's
#   source, CoreDNS (the cluster DNS) and podinfo (the app nobody here wrote).
# Prints the directory holding bin/ and crds/ on stdout; with the argument `helm`, builds only helm
# and prints its path (for `make chart-check`, which needs nothing else). Safe to run again: a warm cache is a
# no-op. Needs Go (see go.mod files for the minimum) and the Go module proxy.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/../scripts/lib.sh"

KUBE_VERSION=1.35.4
ETCD_VERSION=3.6.5
TRAEFIK_VERSION=3.6.12
PROMETHEUS_VERSION=0.316.0
GATEWAY_API_VERSION=1.4.0
# The sandbox image kubelet 1.35 expects (registry.k8s.io/pause), built here from source.
PAUSE_VERSION=3.10
HELM_VERSION=3.22.0
COREDNS_VERSION=1.14.7

command -v go >/dev/null || die "Go is required to build the control plane (https://go.dev/doc/install)"

key() { cat "$here/toolchain/$1/go.mod" "$here/toolchain/$1/go.sum" | sha256sum | cut -c1-12; }

helm_out="$ROLLGATE_CACHE/toolchain/helm-$HELM_VERSION-$(key helm)"
if [ ! -x "$helm_out/helm" ]; then
  log "building helm $HELM_VERSION (go build, cached in $helm_out)"
  mkdir -p "$helm_out"
  (cd "$here/toolchain/helm" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    -o "$helm_out/helm.partial" helm.sh/helm/v3/cmd/helm)
  mv "$helm_out/helm.partial" "$helm_out/helm"
fi
if [ "${1:-}" = helm ]; then
  printf '%s\n' "$helm_out/helm"
  exit 0
fi
out="$ROLLGATE_CACHE/toolchain/k8s-$KUBE_VERSION-etcd-$ETCD_VERSION-traefik-$TRAEFIK_VERSION-$(key kubernetes)$(key etcd | cut -c1-4)$(key traefik | cut -c1-4)"
# Prometheus is keyed on its own, so adding it did not invalidate the other binaries.
prom_out="$ROLLGATE_CACHE/toolchain/prometheus-$PROMETHEUS_VERSION-$(key prometheus)"
mkdir -p "$out/bin" "$out/crds"

# build NAME MODULE_DIR LDFLAGS PACKAGE...
build() {
  local name=$1 dir=$2 ldflags=$3
  shift 3
  if [ -x "$out/bin/$name" ]; then
    return 0
  fi
  log "building $name (go build, cached in $out/bin; first time takes minutes)"
  (cd "$here/toolchain/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/bin/$name.partial" "$@")
  mv "$out/bin/$name.partial" "$out/bin/$name"
}

minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
kv="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
kv="$kv -X k8s.io/component-base/version.gitMinor=$minor"
kv="$kv -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"
build etcd etcd "" go.etcd.io/etcd/server/v3
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build "$c" kubernetes "$kv" "k8s.io/kubernetes/cmd/$c"
done
build traefik traefik "-X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION" \
  github.com/traefik/traefik/v3/cmd/traefik

if [ ! -x "$prom_out/prometheus" ]; then
  log "building prometheus (go build, cached in $prom_out; first time takes minutes)"
  mkdir -p "$prom_out"
  (cd "$here/toolchain/prometheus" && go build -trimpath \
    -ldflags "-s -w -X github.com/prometheus/common/version.Version=$PROMETHEUS_VERSION" \
    -o "$prom_out/prometheus.partial" github.com/prometheus/prometheus/cmd/prometheus)
  mv "$prom_out/prometheus.partial" "$prom_out/prometheus"
fi
ln -sf "$prom_out/prometheus" "$out/bin/prometheus"

# The real node's binaries, keyed on their own wrappers so that adding them rebuilt nothing else.
node_out="$ROLLGATE_CACHE/toolchain/node-$KUBE_VERSION-$(key node)"
if [ ! -x "$node_out/kube-proxy" ]; then
  mkdir -p "$node_out"
  for c in kubelet kube-proxy; do
    [ -x "$node_out/$c" ] && continue
    log "building $c (go build, cached in $node_out; first time takes minutes)"
    (cd "$here/toolchain/node" && go build -trimpath -ldflags "-s -w $kv" -o "$node_out/$c.partial" "k8s.io/kubernetes/cmd/$c")
    mv "$node_out/$c.partial" "$node_out/$c"
  done
fi
if [ ! -x "$node_out/pause" ]; then
  apt_install gcc libc6-dev
  kdir=$(cd "$here/toolchain/node" && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -f "$kdir/build/pause/linux/pause.c" ] || die "pause.c not found in $kdir"
  gcc -Os -static -Wall -DVERSION="$PAUSE_VERSION" -o "$node_out/pause.partial" "$kdir/build/pause/linux/pause.c"
  mv "$node_out/pause.partial" "$node_out/pause"
fi
podinfo_version=$(awk '$1 == "require" && $2 == "github.com/stefanprodan/podinfo" {print $3}' "$here/toolchain/podinfo/go.mod")
podinfo_out="$ROLLGATE_CACHE/toolchain/podinfo-$podinfo_version-$(key podinfo)"
if [ ! -x "$podinfo_out/podinfo" ]; then
  log "building podinfo $podinfo_version (go build, static, cached in $podinfo_out)"
  mkdir -p "$podinfo_out"
  (cd "$here/toolchain/podinfo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" \
    -o "$podinfo_out/podinfo.partial" github.com/stefanprodan/podinfo/cmd/podinfo)
  mv "$podinfo_out/podinfo.partial" "$podinfo_out/podinfo"
fi
coredns_out="$ROLLGATE_CACHE/toolchain/coredns-$COREDNS_VERSION-$(key coredns)"
if [ ! -x "$coredns_out/coredns" ]; then
  log "building coredns $COREDNS_VERSION (go build, static, cached in $coredns_out)"
  mkdir -p "$coredns_out"
  (cd "$here/toolchain/coredns" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION" \
    -o "$coredns_out/coredns.partial" .)
  mv "$coredns_out/coredns.partial" "$coredns_out/coredns"
fi
for b in "$node_out/kubelet" "$node_out/kube-proxy" "$node_out/pause" "$podinfo_out/podinfo" "$coredns_out/coredns" \
  "$helm_out/helm"; do
  ln -sf "$b" "$out/bin/$(basename "$b")"
done

if [ ! -f "$out/crds/.done" ]; then
  gw=$(cd "$here/toolchain/traefik" && go mod download -json "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$gw/config/crd/standard" ] || die "Gateway API CRDs not found in $gw"
  cp "$gw"/config/crd/standard/*.yaml "$out/crds/"
  chmod u+w "$out"/crds/*.yaml
  touch "$out/crds/.done"
fi
# Traefik's own CRDs (TraefikService: the mirroring a shadow step uses with Traefik).
if [ ! -f "$out/crds/traefik.io.yaml" ]; then
  tr=$(cd "$here/toolchain/traefik" && go mod download -json "github.com/traefik/traefik/v3@v$TRAEFIK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  defs="$tr/docs/content/reference/dynamic-configuration/kubernetes-crd-definition-v1.yml"
  [ -f "$defs" ] || die "Traefik CRDs not found in $tr"
  cp "$defs" "$out/crds/traefik.io.yaml.partial"
  chmod u+w "$out/crds/traefik.io.yaml.partial"
  mv "$out/crds/traefik.io.yaml.partial" "$out/crds/traefik.io.yaml"
fi
printf '%s\n' "$out"
