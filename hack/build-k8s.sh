#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl and
# etcd from the upstream Go modules pinned in hack/k8s/go.mod, into a cache outside the checkout:
#   ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/k8s-<version>/bin/
# Binaries already there are kept (the directory is keyed by the Kubernetes version).
# Names as arguments build those instead (e.g. `hack/build-k8s.sh kubeadm`, which only kind's
# node image needs: hack/kind-node-image.sh).
# Prints the bin directory on the last line of stdout.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
module="$here/k8s"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2}' "$module/go.mod")"
[[ -n "$k8s_version" ]] || { echo "build-k8s: no k8s.io/kubernetes version in $module/go.mod" >&2; exit 1; }
bin_dir="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/k8s-$k8s_version/bin"

declare -A packages=(
  [kube-apiserver]=k8s.io/kubernetes/cmd/kube-apiserver
  [kube-controller-manager]=k8s.io/kubernetes/cmd/kube-controller-manager
  [kube-scheduler]=k8s.io/kubernetes/cmd/kube-scheduler
  [kubelet]=k8s.io/kubernetes/cmd/kubelet
  [kubectl]=k8s.io/kubernetes/cmd/kubectl
  [kube-proxy]=k8s.io/kubernetes/cmd/kube-proxy
  [etcd]=./cmd/etcd
  [kubeadm]=k8s.io/kubernetes/cmd/kubeadm
)
wanted=("$@")
((${#wanted[@]})) || wanted=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy etcd)
missing=()
for name in "${wanted[@]}"; do
  [[ -n "${packages[$name]:-}" ]] || { echo "build-k8s: no package for $name" >&2; exit 2; }
  [[ -x "$bin_dir/$name" ]] || missing+=("$name")
done
if ((${#missing[@]} == 0)); then
  echo "build-k8s: Kubernetes $k8s_version binaries already built" >&2
  echo "$bin_dir"
  exit 0
fi

command -v go >/dev/null || { echo "build-k8s: Go is not installed (needs go >= 1.21)" >&2; exit 1; }
# Kubernetes 1.36 needs Go 1.26. An older Go (>= 1.21) fetches that toolchain itself from
# the module proxy when asked to.
go_minor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if ((go_minor < 26)); then
  export GOTOOLCHAIN=go1.26.8
  echo "build-k8s: $(go env GOVERSION 2>/dev/null) is too old; using toolchain $GOTOOLCHAIN" >&2
fi
echo "build-k8s: building ${missing[*]} (Kubernetes $k8s_version) with $(go version | awk '{print $3}') on $(nproc) CPUs" >&2
start=$SECONDS

minor="${k8s_version#v1.}"
minor="${minor%%.*}"
# Same version stamps upstream's hack/lib/version.sh sets, so `kubectl version`, node
# status and version-skew checks see a real release instead of v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

targets=()
for name in "${missing[@]}"; do targets+=("${packages[$name]}"); done
mkdir -p "$(dirname "${bin_dir%/bin}")"
staging="$(mktemp -d "${bin_dir%/bin}.tmp.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
(
  cd "$module"
  CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false" go build -trimpath -ldflags="$ldflags" -o "$staging/" "${targets[@]}"
)
mkdir -p "$bin_dir"
for name in "${missing[@]}"; do mv -f "$staging/$name" "$bin_dir/$name"; done
echo "build-k8s: built ${missing[*]} in $((SECONDS - start)) s into $bin_dir" >&2
echo "$bin_dir"
