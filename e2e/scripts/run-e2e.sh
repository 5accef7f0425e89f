#!/usr/bin/env bash
# The end-to-end suite: brings the local control plane up, runs the scenarios one at a time,
# and always tears everything down (processes, network namespaces, links), even on failure.
#   e2e/scripts/run-e2e.sh [cargo test filter]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
state=${ROLLGATE_E2E_STATE_DIR:-$ROLLGATE_CACHE/cluster}
trap 'bash e2e/scripts/cluster.sh down "$state"' EXIT
env_file=$(bash e2e/scripts/cluster.sh up "$state" | tail -n1)
# shellcheck disable=SC1090
. "$env_file"
rm -rf "$state/reports"
RUST_BACKTRACE=0 cargo test -q --locked -p rollgate-e2e --features e2e --test rollouts -- --test-threads=1 "$@"
# The figures of the scenarios that ran, as one JSON array (docs/dev/benchmarks.md quotes them).
if ls "$state"/reports/*.json >/dev/null 2>&1; then
  { printf '[\n'; sep=""; for f in "$state"/reports/*.json; do printf '%s' "$sep"; cat "$f"; sep=$',\n'; done; printf '\n]\n'; } \
    >"$state/e2e-report.json"
  log "figures: $state/e2e-report.json"
  cat "$state/e2e-report.json"
fi
