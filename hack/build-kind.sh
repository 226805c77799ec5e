#!/usr/bin/env bash
# Build kind (sigs.k8s.io/kind, the release pinned below) from its Go module into a cache
# outside the checkout, like hack/build-k8s.sh does for Kubernetes:
#   ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/kind-<version>/bin/kind
# A binary already there is kept (the directory is keyed by the version).
# Prints the bin directory on the last line of stdout.
set -euo pipefail
kind_version="${KIND_VERSION:-v0.33.0}"
bin_dir="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/kind-$kind_version/bin"

if [[ -x "$bin_dir/kind" ]]; then
  echo "build-kind: kind $kind_version already built" >&2
  echo "$bin_dir"
  exit 0
fi
export PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-kind: Go is not installed (needs go >= 1.21)" >&2; exit 1; }
echo "build-kind: building kind $kind_version with $(go version | awk '{print $3}')" >&2
start=$SECONDS
staging="$(mktemp -d "${bin_dir%/bin}.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
CGO_ENABLED=0 GOBIN="$staging" GOFLAGS="-buildvcs=false" \
  go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kind@$kind_version"
mkdir -p "$bin_dir"
mv -f "$staging/kind" "$bin_dir/kind"
echo "build-kind: built kind $kind_version in $((SECONDS - start)) s into $bin_dir" >&2
echo "$bin_dir"
