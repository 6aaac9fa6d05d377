#!/usr/bin/env bash
# Build each Kustomize overlay and validate every object offline with kubeconform:
# built-in kinds against the Kubernetes schemas (strict: unknown fields are errors), custom
# resources (Strimzi, prometheus-operator, KEDA) against the committed CRD schemas. No
# object may go unvalidated (-ignore-missing-schemas is not used).
#
#   deploy/k8s/validate.sh [DIR...]   (default: every overlay); or `-` to validate stdin
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$REPO/.local/bin
K8S_VERSION=${K8S_VERSION:-1.32.0}

kubeconform() {
  "$BIN/kubeconform" -strict -summary -kubernetes-version "$K8S_VERSION" \
    -schema-location "$REPO/.local/k8s-schemas/{{.NormalizedKubernetesVersion}}-local{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
    -schema-location "$REPO/deploy/k8s/schemas/{{.ResourceKind}}-{{.Group}}-{{.ResourceAPIVersion}}.json" "$@"
}

if [[ ${1:-} == - ]]; then
  kubeconform -
  exit
fi
dirs=("$@")
((${#dirs[@]})) || dirs=("$REPO"/deploy/k8s/overlays/*/)
for dir in "${dirs[@]}"; do
  echo "== ${dir#"$REPO"/}" >&2
  "$BIN/kustomize" build "$dir" | kubeconform -
done
