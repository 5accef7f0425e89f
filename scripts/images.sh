#!/usr/bin/env bash
# Builds the container images, FROM scratch, with buildah (no daemon, no registry):
#   ghcr.io/rollgate/rollgate:$VERSION   the operator and CLI (static musl binary)
#   ghcr.io/rollgate/refserver:$VERSION  refserver (static musl binary)
#   localhost/podinfo:$PODINFO           podinfo, built from its Go module (the e2e's foreign app)
#   registry.k8s.io/pause:3.10           the pod sandbox, built from the kubernetes module's source
#   localhost/coredns:$COREDNS           the cluster DNS, built from its Go module
# Each is written as an OCI archive into $ROLLGATE_CACHE/images/ (printed on stdout, one per line);
# `cluster.sh` loads them into the node's containerd. The names match the manifests.
#   scripts/images.sh [TOOLCHAIN_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"

tc=${1:-$(bash "$root/e2e/scripts/build-toolchain.sh")}
apt_install buildah musl-tools ca-certificates
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
TARGET=x86_64-unknown-linux-musl
rustup target list --installed 2>/dev/null | grep -qx "$TARGET" || rustup target add "$TARGET" >&2

log "building rollgate and refserver for $TARGET (static)"
# Frame pointers: refserver's CPU profiler walks them on musl, whose libc has no unwind tables.
(cd "$root" && CC_x86_64_unknown_linux_musl=musl-gcc CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C force-frame-pointers=yes" \
  cargo build -q --locked --release --target "$TARGET" \
  -p rollgate -p refserver --bin rollgate --bin refserver)
bin="$CARGO_TARGET_DIR/$TARGET/release"

store="$ROLLGATE_CACHE/buildah"
out="$ROLLGATE_CACHE/images"
mkdir -p "$store" "$out"
buildah() { command buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

# image NAME CONTAINERFILE FILE...: builds NAME from CONTAINERFILE with FILEs as the context;
# skipped when the archive is newer than every input.
image() {
  local name=$1 file=$2
  shift 2
  local archive
  archive="$out/$(printf '%s' "$name" | tr '/:' '__').tar"
  local fresh=1
  for f in "$file" "$@"; do [ "$f" -nt "$archive" ] && fresh=0; done
  if [ "$fresh" -eq 0 ] || [ ! -f "$archive" ]; then
    log "building image $name"
    local ctx
    ctx=$(mktemp -d)
    cp "$@" "$ctx/"
    buildah bud -q --layers=false --build-arg "VERSION=$VERSION" -f "$file" -t "$name" "$ctx" >/dev/null
    rm -rf "$ctx"
    rm -f "$archive"
    buildah push -q "$name" "oci-archive:$archive:$name" >/dev/null
  fi
  printf '%s\n' "$archive"
}

image "ghcr.io/rollgate/rollgate:$VERSION" "$root/controller/Containerfile" "$bin/rollgate" \
  /etc/ssl/certs/ca-certificates.crt
image "ghcr.io/rollgate/refserver:$VERSION" "$root/server/Containerfile" "$bin/refserver"
podinfo_version=$(awk '$1 == "require" && $2 == "github.com/stefanprodan/podinfo" {print $3}' "$root/e2e/toolchain/podinfo/go.mod")
image "localhost/podinfo:$podinfo_version" "$root/e2e/images/podinfo.Containerfile" "$(readlink -f "$tc/bin/podinfo")"
coredns_version=$(awk '$1 == "require" && $2 == "github.com/coredns/coredns" {print $3}' "$root/e2e/toolchain/coredns/go.mod")
image "localhost/coredns:$coredns_version" "$root/e2e/images/coredns.Containerfile" "$(readlink -f "$tc/bin/coredns")"
image "registry.k8s.io/pause:3.10" "$root/e2e/images/pause.Containerfile" "$(readlink -f "$tc/bin/pause")"
