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
  --set image.tag=dev --set replicas=3 --set shards=8 --set leaderElection.namespace=ops-leases \
  --set otlpEndpoint=http://otel:4318 --set metrics.service.enabled=false \
  --set 'tolerations[0].key=dedicated' --set 'tolerations[0].operator=Exists' \
  --set nodeSelector.pool=infra --set 'prometheusCredentials.namespaces={shop,web}' >/dev/null
grep -q -- '--shards=8' <<<"$("$helm" template rollgate "$chart" --namespace ops --set shards=8)" ||
  die "shards does not reach the controller's args"
# Scoped: the controller's rules only in the watched namespaces, cluster-wide only the reviews.
scoped=$("$helm" template team-a "$chart" --namespace team-a --set 'watchNamespaces={shop,web}' --set instance=blue)
grep -q -- '--watch-namespace=shop,web' <<<"$scoped" || die "watchNamespaces does not reach the controller's args"
grep -q -- '--instance=blue' <<<"$scoped" || die "instance does not reach the controller's args"
[ "$(grep -c '^kind: RoleBinding' <<<"$scoped")" -eq 3 ] ||
  die "scoped: want a RoleBinding in shop, in web and for the Lease"
awk '/^kind: ClusterRoleBinding/ {f=1} f && /^  name:/ {print $2; f=0}' <<<"$scoped" | grep -qx 'team-a-controller' &&
  die "scoped: the controller's ClusterRole is bound cluster-wide"

rules() { # KIND [NAME]: the rules block of the first RBAC object of that kind (and name) in manifests/controller/rbac.yaml
  awk -v kind="$1" -v name="${2:-}" '$0 == "kind: " kind {f=1} f && name != "" && /^  name:/ && $2 != name {f=0}
    f && /^rules:/ {r=1; next} r && /^---/ {exit} r {print}' "$root/manifests/controller/rbac.yaml"
}
diff -u <(rules ClusterRole) "$chart/rules/controller.yaml" ||
  die "charts/rollgate/rules/controller.yaml differs from the ClusterRole in manifests/controller/rbac.yaml"
diff -u <(rules ClusterRole rollgate-prometheus-credentials) "$chart/rules/prometheus-credentials.yaml" ||
  die "charts/rollgate/rules/prometheus-credentials.yaml differs from the manifests' ClusterRole rollgate-prometheus-credentials"
# The reviews granted cluster-wide when scoped are the ClusterRole's last rules, as they are.
diff -u <(rules ClusterRole | tail -n "$(wc -l <"$chart/rules/reviews.yaml")") "$chart/rules/reviews.yaml" ||
  die "charts/rollgate/rules/reviews.yaml differs from the last rules of the ClusterRole in manifests/controller/rbac.yaml"
diff -u <(rules Role) "$chart/rules/leader-election.yaml" ||
  die "charts/rollgate/rules/leader-election.yaml differs from the Role in manifests/controller/rbac.yaml"
echo "chart ok: lint, template (defaults and every value), RBAC rules equal manifests/"
