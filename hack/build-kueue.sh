#!/usr/bin/env bash
# Build the Kueue controller manager from its upstream Go module (sigs.k8s.io/kueue, pinned
# below) into a cache outside the checkout, and copy the module's own config/ (CRDs, webhook
# configuration) beside it:
#   ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/kueue-<version>/bin/kueue
#   ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/kueue-<version>/config/
# Kueue v0.17 is built against k8s.io/* v0.35 and serves its CRDs on the v1.36 apiserver that
# hack/build-k8s.sh builds. Already built: nothing is done. Prints the cache directory last.
set -euo pipefail
kueue_version="${KUEUE_VERSION:-v0.17.0}"
cache_dir="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/kueue-$kueue_version"

if [[ -x "$cache_dir/bin/kueue" && -d "$cache_dir/config/components/crd" ]]; then
  echo "build-kueue: Kueue $kueue_version already built" >&2
  echo "$cache_dir"
  exit 0
fi

if ! command -v go >/dev/null; then
  [[ -x /usr/local/go/bin/go ]] && export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || { echo "build-kueue: Go is not installed (needs go >= 1.21)" >&2; exit 1; }
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ((go_minor < 25)); then
  export GOTOOLCHAIN=go1.26.8
  echo "build-kueue: $(go env GOVERSION 2>/dev/null) is too old; using toolchain $GOTOOLCHAIN" >&2
fi
echo "build-kueue: building Kueue $kueue_version with $(go version | awk '{print $3}') on $(nproc) CPUs" >&2
start=$SECONDS

# The module, with its go.sum, config/ and cmd/, lands read-only in the module cache.
src="$(GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kueue@$kueue_version" \
  | sed -nE 's/^\s*"Dir": "(.*)",?$/\1/p')"
[[ -d "$src/cmd/kueue" ]] || { echo "build-kueue: no cmd/kueue in $src" >&2; exit 1; }

mkdir -p "$(dirname "$cache_dir")"
staging="$(mktemp -d "$cache_dir.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
(
  cd "$src"
  CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kueue/pkg/version.GitVersion=$kueue_version" \
    -o "$staging/bin/kueue" ./cmd/kueue
)
cp -r "$src/config" "$staging/config"
chmod -R u+w "$staging/config"
rm -rf "$cache_dir"
mv "$staging" "$cache_dir"
trap - EXIT
echo "build-kueue: built Kueue $kueue_version in $((SECONDS - start)) s into $cache_dir" >&2
echo "$cache_dir"
