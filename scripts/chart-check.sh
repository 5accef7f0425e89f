#!/usr/bin/env bash
# `make chart-check`: the Helm chart lints, renders with its defaults and with every value set,
# and grants exactly the RBAC rules of manifests/controller/rbac.yaml (one source of truth: the
# chart reads its rules from charts/rollgate/rules/, which must equal the manifests' blocks).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/scripts/lib.sh"
helm=$(bash "$root/e2e/scripts/build-toolchain.sh" helm)
chart="$root/charts/rollgate"

"$helm" lint --strict "$chart"
"$helm" template rollgate "$chart" --namespace rollgate-system >/dev/null
"$helm" template rollgate "$chart" --namespace ops \
  --set image.tag=dev --set replicas=3 --set leaderElection.namespace=ops-leases \
  --set otlpEndpoint=http://otel:4318 --set metrics.service.enabled=false \
  --set 'tolerations[0].key=dedicated' --set 'tolerations[0].operator=Exists' \
  --set nodeSelector.pool=infra --set 'prometheusCredentials.namespaces={shop,web}' >/dev/null

rules() { # KIND [NAME]: the rules block of the first RBAC object of that kind (and name) in manifests/controller/rbac.yaml
  awk -v kind="$1" -v name="${2:-}" '$0 == "kind: " kind {f=1} f && name != "" && /^  name:/ && $2 != name {f=0}
    f && /^rules:/ {r=1; next} r && /^---/ {exit} r {print}' "$root/manifests/controller/rbac.yaml"
}
diff -u <(rules ClusterRole) "$chart/rules/controller.yaml" ||
  die "charts/rollgate/rules/controller.yaml differs from the ClusterRole in manifests/controller/rbac.yaml"
diff -u <(rules ClusterRole rollgate-prometheus-credentials) "$chart/rules/prometheus-credentials.yaml" ||
  die "charts/rollgate/rules/prometheus-credentials.yaml differs from the manifests' ClusterRole rollgate-prometheus-credentials"
diff -u <(rules Role) "$chart/rules/leader-election.yaml" ||
  die "charts/rollgate/rules/leader-election.yaml differs from the Role in manifests/controller/rbac.yaml"
echo "chart ok: lint, template (defaults and every value), RBAC rules equal manifests/"
