#!/usr/bin/env bash
# Build helm from its upstream Go module (helm.sh/helm/v3, the release pinned below) into a
# cache outside the checkout, like hack/build-k8s.sh does for Kubernetes:
#   ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/helm-<version>/bin/helm
# A helm already there is kept (the directory is keyed by the helm version).
# Prints the bin directory on the last line of stdout.
set -euo pipefail
helm_version="${HELM_VERSION:-v3.22.1}"
bin_dir="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/helm-$helm_version/bin"

if [[ -x "$bin_dir/helm" ]]; then
  echo "build-helm: helm $helm_version already built" >&2
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "build-helm: Go is not installed (needs go >= 1.21)" >&2; exit 1; }
echo "build-helm: building helm $helm_version with $(go version | awk '{print $3}') on $(nproc) CPUs" >&2
start=$SECONDS

# The stamps upstream's Makefile sets: `helm version` names the release, and `helm lint` /
# `helm template` assume the Kubernetes version of helm's client-go (v0.X.Y -> 1.X), not 1.20.
gomod="$(GOFLAGS=-mod=mod go mod download -json "helm.sh/helm/v3@$helm_version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')"
client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")"
k8s_minor="$(echo "$client_go" | cut -d. -f2)"
[[ -n "$k8s_minor" ]] || { echo "build-helm: no k8s.io/client-go version in $gomod" >&2; exit 1; }
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done
mkdir -p "$(dirname "${bin_dir%/bin}")"
staging="$(mktemp -d "${bin_dir%/bin}.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
# `go install module@version` resolves helm's own go.mod: the release's exact dependencies.
CGO_ENABLED=0 GOBIN="$staging" GOFLAGS="-buildvcs=false" \
  go install -trimpath -ldflags="$ldflags" "helm.sh/helm/v3/cmd/helm@$helm_version"
mkdir -p "$bin_dir"
mv -f "$staging/helm" "$bin_dir/helm"
echo "build-helm: built helm $helm_version in $((SECONDS - start)) s into $bin_dir" >&2
echo "$bin_dir"
