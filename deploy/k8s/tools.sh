#!/usr/bin/env bash
# Install the offline Kubernetes validation tools into .local (idempotent, pinned) and
# prepare the Kubernetes JSON Schemas. Called by `make k8s-tools` (a prerequisite of
# `make test`); prints nothing when everything is already in place.
#
#   kustomize   go install sigs.k8s.io/kustomize/kustomize/v5@v5.8.2
#   kubeconform go install github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
#   schemas     PyPI kubernetes-validate (pinned in pyproject.toml) ships Kubernetes JSON
#               Schemas per version; their $refs point at an https id, so one version's
#               strict and non-strict dirs are copied and the $refs rewritten to file://.
#   CRDs        committed under deploy/k8s/schemas (deploy/k8s/schemas/generate.sh).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.2
KUBECONFORM_VERSION=v0.8.0
K8S_VERSION=${K8S_VERSION:-1.32.0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$REPO/.local/bin
SCHEMAS=$REPO/.local/k8s-schemas
PYTHON=${FULFIL_PYTHON:-$REPO/.venv/bin/python}
mkdir -p "$BIN"

install_go_tool() { # name module version
  local marker=$BIN/.$1-$3
  [[ -x $BIN/$1 && -f $marker ]] && return 0
  command -v go >/dev/null 2>&1 || {
    echo "k8s-tools: go not found (needed once to build $1 $3)" >&2
    exit 1
  }
  echo "k8s-tools: building $1 $3 (once)" >&2
  GOBIN=$BIN GOFLAGS=-mod=mod go install "$2@$3"
  touch "$marker"
}

install_go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION"
install_go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"

marker=$SCHEMAS/.v$K8S_VERSION-complete
if [[ ! -f $marker ]]; then
  src=$("$PYTHON" -c 'import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))')/kubernetes-json-schema
  echo "k8s-tools: preparing Kubernetes $K8S_VERSION schemas from kubernetes-validate" >&2
  for suffix in "" "-strict"; do
    dir=v$K8S_VERSION-local$suffix
    rm -rf "${SCHEMAS:?}/$dir"
    mkdir -p "$SCHEMAS/$dir"
    cp "$src/$dir"/*.json "$SCHEMAS/$dir/"
    # "/api/_definitions.json#..." -> "file:///abs/dir/_definitions.json#..."
    sed -i "s|\"/api/_definitions.json#|\"file://$SCHEMAS/$dir/_definitions.json#|g" "$SCHEMAS/$dir"/*.json
  done
  touch "$marker"
fi
