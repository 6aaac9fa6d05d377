#!/usr/bin/env bash
# Generate the JSON Schemas kubeconform validates our custom resources against, from the
# operators' own packages, once; the output (*.json here) is committed as a test fixture.
# Do not hand-edit the JSON files: re-run this script (needs network access to Maven
# Central and the Go module proxy, Java 21+, Maven, Go).
#
#   Strimzi KafkaTopic, KafkaUser (kafka.strimzi.io/v1): io.strimzi:crd-generator + io.strimzi:api
#   prometheus-operator ServiceMonitor, PodMonitor, PrometheusRule (monitoring.coreos.com/v1):
#       controller-gen over github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
#   KEDA ScaledObject, TriggerAuthentication (keda.sh/v1alpha1): controller-gen over
#       github.com/kedacore/keda/v2/apis/keda/v1alpha1
#   CRD YAML -> JSON Schema: kubeconform's own scripts/openapi2jsonschema.py.
set -euo pipefail

STRIMZI_VERSION=1.2.0
CONTROLLER_GEN_VERSION=v0.23.0
PROMETHEUS_OPERATOR_VERSION=v0.95.2
KEDA_VERSION=v2.21.0
KUBECONFORM_VERSION=v0.8.0

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
WORK=${SCHEMA_WORK_DIR:-$REPO/.local/crd-gen}
CRDS=$WORK/crds
mkdir -p "$WORK" "$CRDS"
log() { printf '[schemas] %s\n' "$*" >&2; }

find_java21() {
  local j v
  for j in "${JAVA21_HOME:-}" /usr/lib/jvm/* /opt/*jdk* /opt/java/*; do
    [[ -n $j && -x $j/bin/java ]] || continue
    v=$("$j/bin/java" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
    if [[ ${v%%.*} =~ ^[0-9]+$ ]] && ((${v%%.*} >= 21)); then
      printf '%s\n' "$j/bin/java"
      return 0
    fi
  done
  return 1
}

strimzi() {
  local java cp
  java=$(find_java21) || {
    log "no Java 21+ found (Strimzi's crd-generator needs it): set JAVA21_HOME"
    return 1
  }
  log "strimzi $STRIMZI_VERSION: resolving crd-generator + api from Maven Central"
  (cd "$HERE" && mvn -q -B -Dstyle.color=never -f strimzi-pom.xml -Dstrimzi.version="$STRIMZI_VERSION" \
    dependency:build-classpath -Dmdep.outputFile="$WORK/strimzi.classpath") >&2
  cp=$(<"$WORK/strimzi.classpath")
  log "strimzi: generating KafkaTopic and KafkaUser CRDs with $java"
  "$java" -cp "$cp" io.strimzi.crdgenerator.CrdGenerator --crd-api-version v1 \
    --api-versions v1 --storage-version v1 --yaml \
    io.strimzi.api.kafka.model.topic.KafkaTopic="$CRDS/kafkatopic.yaml" \
    io.strimzi.api.kafka.model.user.KafkaUser="$CRDS/kafkauser.yaml" >&2
}

go_operators() {
  local gobin=$WORK/bin mod=$WORK/gomod
  mkdir -p "$gobin" "$mod"
  [[ -x $gobin/controller-gen ]] ||
    GOBIN=$gobin go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_GEN_VERSION"
  cat >"$mod/go.mod" <<GOMOD
module local/crdgen

go 1.24
GOMOD
  cat >"$mod/tools.go" <<'GOSRC'
package crdgen

import (
	_ "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)
GOSRC
  (
    cd "$mod"
    go get "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring@$PROMETHEUS_OPERATOR_VERSION" \
      "github.com/kedacore/keda/v2@$KEDA_VERSION" >&2
    go mod tidy >&2
    log "controller-gen: prometheus-operator $PROMETHEUS_OPERATOR_VERSION"
    "$gobin/controller-gen" crd:allowDangerousTypes=true \
      paths=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 \
      output:crd:dir="$CRDS" >&2
    log "controller-gen: keda $KEDA_VERSION"
    "$gobin/controller-gen" crd:allowDangerousTypes=true \
      paths=github.com/kedacore/keda/v2/apis/keda/v1alpha1 output:crd:dir="$CRDS" >&2
  )
}

to_json_schema() {
  local script kept
  GOFLAGS=-mod=mod go mod download -json "github.com/yannh/kubeconform@$KUBECONFORM_VERSION" >"$WORK/kubeconform.json"
  script=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <"$WORK/kubeconform.json")/scripts/openapi2jsonschema.py
  kept=(kafkatopic.yaml kafkauser.yaml)
  kept+=("$CRDS"/monitoring.coreos.com_servicemonitors.yaml "$CRDS"/monitoring.coreos.com_podmonitors.yaml)
  kept+=("$CRDS"/monitoring.coreos.com_prometheusrules.yaml)
  kept+=("$CRDS"/keda.sh_scaledobjects.yaml "$CRDS"/keda.sh_triggerauthentications.yaml)
  rm -f "$HERE"/*.json
  (
    cd "$HERE"
    local f
    for f in "${kept[@]}"; do
      [[ $f == /* ]] || f=$CRDS/$f
      FILENAME_FORMAT='{kind}-{fullgroup}-{version}' "$REPO/.venv/bin/python" "$script" "$f" >&2
    done
  )
  log "wrote $(ls "$HERE"/*.json | wc -l) schemas into $HERE"
}

strimzi
go_operators
to_json_schema
