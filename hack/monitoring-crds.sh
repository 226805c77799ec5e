#!/usr/bin/env bash
# The prometheus-operator CRDs (ServiceMonitor, PrometheusRule) the chart's optional
# monitoring objects need, from the upstream Go module's example/prometheus-operator-crd/
# (no registry or release download: the Go module proxy only). The module is cached in Go's
# module cache, outside the checkout. Prints the folder holding the CRD files.
set -euo pipefail
version="${PROMETHEUS_OPERATOR_VERSION:-v0.85.0}"
command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "monitoring-crds: Go is not installed" >&2; exit 1; }
dir="$(GOFLAGS=-mod=mod go mod download -json "github.com/prometheus-operator/prometheus-operator@$version" |
  sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
crds="$dir/example/prometheus-operator-crd"
[[ -f "$crds/monitoring.coreos.com_servicemonitors.yaml" ]] || {
  echo "monitoring-crds: no CRDs in $crds" >&2
  exit 1
}
echo "$crds"
