#!/usr/bin/env bash
# A kind node image for the pinned Kubernetes, made without any container registry:
#   hack/kind-node-image.sh          build (or restore from the cache) carbonaware/kind-node:<k8s>
#                                    and print its name on the last line of stdout
#
# kind's own node images come from docker.io/kindest/node, which cannot be pulled here. This
# script makes the same image with kind's own tooling, `kind build node-image --type file`,
# from parts built on this machine:
#   - the base image: kind's images/base recipe (its files/ from the kind module, the same
#     Debian packages) on the project's debootstrap base (hack/docker.sh), with containerd
#     built from its Go module, and runc and the CNI plugins from Debian;
#   - a Kubernetes server tarball laid out as kind expects (kubernetes/version,
#     kubernetes/server/bin/{kubeadm,kubelet,kubectl,<image>.tar}) from hack/build-k8s.sh's
#     binaries, with minimal images of kube-apiserver, kube-controller-manager,
#     kube-scheduler and kube-proxy;
#   - the images kind would otherwise pull while building (etcd, CoreDNS, pause, kindnetd,
#     local-path-provisioner and its helper), built here under the exact names kind and
#     kubeadm ask for. kind's file builder imports only the four control-plane archives and
#     skips pulling every image those archives hold, so the extra images ride in
#     kube-proxy.tar (a docker-save archive may hold several images).
# One setting differs from kind's base: containerd's restrict_oom_score_adj is true (kind sets it
# only for rootless nodes), because setting a pod's oom_score_adj below containerd's own needs
# CAP_SYS_RESOURCE, which some hosts (this one) lack: runc then fails every pod sandbox with
# "can't get final child's PID from pipe: EOF".
# What is not upstream's own build, and why (see docs/kubernetes.md):
#   - pause is the project's hack/pause/pause.c (as hack/node.sh uses);
#   - kindnetd's source is not served by the Go module proxy (sigs.k8s.io/kindnet: 403), so
#     hack/kind/kindnetd is a stand-in with its contract: it writes the node's CNI config
#     (ptp + host-local over the node's podCIDR + portmap), routes every other node's podCIDR
#     to that node, and masquerades pod traffic leaving the pod network;
#   - local-path-provisioner is v0.0.30 (the newest the proxy serves; kind v0.33 builds v0.0.34).
#
# Cached by version in ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/kind-node-<k8s>-<recipe>/:
# the built Go binaries, the server tarball, and the node image as a `docker save` archive, so
# a fresh dockerd gets the image back with one `docker load`.
# Env: CARBONAWARE_CACHE, KIND_NODE_REBUILD=1 (ignore the cached image archive).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PATH="$PATH:/usr/local/go/bin"

# Bump when the recipe below changes: the cache is keyed by it.
recipe="r2"
containerd_version="v2.3.4" # what kind v0.33.0's images/base builds
coredns_version="v1.14.2"   # what kubeadm v1.36 deploys (constants.CoreDNSVersion)
local_path_version="v0.0.30"

log() { echo "kind-node-image: $*" >&2; }
die() {
  log "$*"
  exit 1
}
timed() {
  local what="$1" start=$SECONDS
  shift
  "$@"
  log "$what took $((SECONDS - start)) s"
}

kind_bin="$(bash "$here/build-kind.sh" | tail -n1)/kind"
k8s_bin="$(bash "$here/build-k8s.sh" | tail -n1)"
bash "$here/build-k8s.sh" kubeadm >/dev/null
k8s_version="$("$k8s_bin/kubeadm" version -o short)"
kind_version="$("$kind_bin" version | awk '{print $2}')"
kind_module="$(go env GOMODCACHE)/sigs.k8s.io/kind@$kind_version"
cache="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}/kind-node-$k8s_version-$recipe"
node_image="carbonaware/kind-node:$k8s_version"
base_image="carbonaware/kind-base:$kind_version-$recipe"
archive="$cache/node-image.tar"
mkdir -p "$cache/bin"

if [[ -z "${KIND_NODE_REBUILD:-}" ]]; then
  if docker image inspect "$node_image" >/dev/null 2>&1 &&
    [[ "$(docker image inspect -f '{{index .Config.Labels "io.carbonaware.recipe"}}' "$node_image")" == "$recipe" ]]; then
    log "$node_image present"
    echo "$node_image"
    exit 0
  fi
  if [[ -s "$archive" ]]; then
    timed "docker load $node_image" docker load -i "$archive" >/dev/null
    echo "$node_image"
    exit 0
  fi
fi
start=$SECONDS

[[ -d "$kind_module/images/base/files" ]] || (cd /tmp && go mod download "sigs.k8s.io/kind@$kind_version")
bash "$here/docker.sh" up

# Go binaries, each built once into the cache.
go_build() { # name module@version [package]
  local name="$1" modver="$2" pkg="${3:-$2}"
  [[ -x "$cache/bin/$name" ]] && return
  local staging
  staging="$(mktemp -d "$cache/build.XXXXXX")"
  (cd /tmp && CGO_ENABLED=0 GOBIN="$staging" GOFLAGS=-buildvcs=false \
    go install -trimpath -tags "no_aufs no_zfs no_btrfs no_devmapper" -ldflags "-s -w ${LDFLAGS_EXTRA:-}" "$pkg")
  mv -f "$staging/$name" "$cache/bin/$name"
  rm -rf "$staging"
}
ctrd="github.com/containerd/containerd/v2"
LDFLAGS_EXTRA="-X $ctrd/version.Version=$containerd_version" timed "containerd $containerd_version" \
  go_build containerd "" "$ctrd/cmd/containerd@$containerd_version"
LDFLAGS_EXTRA="-X $ctrd/version.Version=$containerd_version" \
  go_build ctr "" "$ctrd/cmd/ctr@$containerd_version"
LDFLAGS_EXTRA="-X $ctrd/version.Version=$containerd_version" \
  go_build containerd-shim-runc-v2 "" "$ctrd/cmd/containerd-shim-runc-v2@$containerd_version"
timed "coredns $coredns_version" go_build coredns "" "github.com/coredns/coredns@$coredns_version"
timed "local-path-provisioner $local_path_version" go_build local-path-provisioner "" \
  "github.com/rancher/local-path-provisioner@$local_path_version"
if [[ ! -x "$cache/bin/pause" ]]; then
  gcc -static -O2 -o "$cache/bin/pause.tmp" "$here/pause/pause.c"
  mv -f "$cache/bin/pause.tmp" "$cache/bin/pause"
fi

work="$(mktemp -d /tmp/kind-node-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT

# docker build of a context dir made by the caller; the classic builder (no BuildKit here).
build() { # tag dir
  DOCKER_BUILDKIT=0 docker build -q -t "$1" "$2" >"$work/build.log" 2>&1 || {
    tail -n 30 "$work/build.log" >&2
    die "building $1 failed"
  }
}

# The base image: kind's images/base/Dockerfile, on the debootstrap base, without BuildKit.
make_base() {
  local ctx="$work/base"
  mkdir -p "$ctx"
  cp -r "$kind_module/images/base/files" "$ctx/files"
  chmod -R u+w "$ctx/files"
  cp "$cache/bin/containerd" "$cache/bin/ctr" "$cache/bin/containerd-shim-runc-v2" "$ctx/"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM python:3.11-slim-bookworm
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
RUN chmod 0755 /usr/local/bin/* /kind /kind/bin /kind/bin/* \
    && echo "Installing Packages ..." \
    && DEBIAN_FRONTEND=noninteractive clean-install \
      systemd \
      conntrack iptables nftables iproute2 ethtool util-linux mount kmod \
      libseccomp2 pigz \
      e2fsprogs \
      bash ca-certificates curl jq procps \
      runc containernetworking-plugins \
    && find /lib/systemd/system/sysinit.target.wants/ -name "systemd-tmpfiles-setup.service" -delete \
    && rm -f /lib/systemd/system/multi-user.target.wants/* \
    && rm -f /etc/systemd/system/*.wants/* \
    && rm -f /lib/systemd/system/local-fs.target.wants/* \
    && rm -f /lib/systemd/system/sockets.target.wants/*udev* \
    && rm -f /lib/systemd/system/sockets.target.wants/*initctl* \
    && rm -f /lib/systemd/system/basic.target.wants/* \
    && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \
    && ln -sf /usr/lib/systemd/systemd /sbin/init
COPY containerd ctr containerd-shim-runc-v2 /usr/local/bin/
RUN systemctl enable kubelet.service \
    && systemctl enable containerd.service \
    && systemctl enable undo-mount-hacks.service \
    && systemctl mask systemd-binfmt.service \
    && mkdir -p /etc/kubernetes/manifests /opt/cni/bin \
    && for p in host-local loopback ptp portmap bridge; do ln -s /usr/lib/cni/$p /opt/cni/bin/$p; done \
    && sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml \
    && ctr oci spec \
        | jq '.hooks.createContainer[.hooks.createContainer| length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
        | jq 'del(.process.rlimits)' \
        > /etc/containerd/cri-base.json \
    && containerd --version && runc --version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT [ "/usr/local/bin/entrypoint", "/sbin/init" ]
EOF
  build "$base_image" "$ctx"
}

# One minimal image per binary: FROM scratch (static Go or static C) or FROM a Debian base.
image_of() { # tag dockerfile-body files...
  local tag="$1" body="$2" ctx
  shift 2
  ctx="$(mktemp -d "$work/img.XXXXXX")"
  (($#)) && cp "$@" "$ctx/"
  printf '%s\n' "$body" >"$ctx/Dockerfile"
  build "$tag" "$ctx"
}

make_images() {
  local name path='ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  for name in kube-apiserver kube-controller-manager kube-scheduler; do
    image_of "registry.k8s.io/$name:$k8s_version" "FROM scratch
$path
COPY $name /usr/local/bin/$name
ENTRYPOINT [\"/usr/local/bin/$name\"]" "$k8s_bin/$name"
  done
  # kube-proxy and kindnetd program iptables/nftables: a Debian base with those tools.
  image_of carbonaware/kind-netbase:"$recipe" "FROM python:3.11-slim-bookworm
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      iptables nftables conntrack iproute2 kmod >/dev/null && rm -rf /var/lib/apt/lists/*"
  image_of "registry.k8s.io/kube-proxy:$k8s_version" "FROM carbonaware/kind-netbase:$recipe
COPY kube-proxy /usr/local/bin/kube-proxy
ENTRYPOINT [\"/usr/local/bin/kube-proxy\"]" "$k8s_bin/kube-proxy"
  image_of "docker.io/kindest/kindnetd:$(kind_const const_cni.go kindnetdImage)" \
    "FROM carbonaware/kind-netbase:$recipe
COPY kubectl /usr/local/bin/kubectl
COPY kindnetd /bin/kindnetd
LABEL io.carbonaware.stand-in=\"kindnetd's contract, hack/kind/kindnetd\"
ENTRYPOINT [\"/bin/kindnetd\"]" "$k8s_bin/kubectl" "$here/kind/kindnetd"
  image_of "$(kubeadm_image etcd)" "FROM scratch
$path
COPY etcd /usr/local/bin/etcd
ENTRYPOINT [\"/usr/local/bin/etcd\"]" "$k8s_bin/etcd"
  image_of "$(kubeadm_image coredns)" "FROM scratch
COPY coredns /coredns
EXPOSE 53 53/udp
ENTRYPOINT [\"/coredns\"]" "$cache/bin/coredns"
  image_of "$(sandbox_image)" "FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT [\"/pause\"]" "$cache/bin/pause"
  image_of "docker.io/kindest/local-path-provisioner:$(kind_const const_storage.go storageProvisionerImage)" \
    "FROM scratch
$path
COPY local-path-provisioner /usr/local/bin/local-path-provisioner
ENTRYPOINT [\"/usr/local/bin/local-path-provisioner\"]" "$cache/bin/local-path-provisioner"
  # The helper runs `sh /script/setup` (mkdir) and `sh /script/teardown` (rm) on the node.
  docker tag python:3.11-slim-bookworm \
    "docker.io/kindest/local-path-helper:$(kind_const const_storage.go storageHelperImage)"
}

# The tag of an image kind's source names: kind_const FILE CONSTNAME -> the part after ':'.
kind_const() {
  sed -n "s/^const $2 = \"[^\"]*:\\([^\"]*\\)\"/\\1/p" "$kind_module/pkg/build/nodeimage/$1"
}
kubeadm_image() { "$k8s_bin/kubeadm" config images list --kubernetes-version "$k8s_version" | grep "/$1:"; }
sandbox_image() {
  sed -n 's/^ *sandbox_image = "\(.*\)"/\1/p' "$kind_module/images/base/files/etc/containerd/config.toml"
}

# docker save writes docker.io names short (kindest/x:tag); kind compares full names.
save_archive() { # out images...
  local out="$1"
  shift
  docker save -o "$out.tmp" "$@"
  python3 "$here/kind/fullnames.py" "$out.tmp" "$out"
  rm -f "$out.tmp"
}

make_server_tarball() {
  local tarball="$cache/kubernetes-server-linux-amd64.tar.gz" root="$work/server"
  local bin="$root/kubernetes/server/bin"
  mkdir -p "$bin"
  echo "$k8s_version" >"$root/kubernetes/version"
  cp "$k8s_bin/kubeadm" "$k8s_bin/kubelet" "$k8s_bin/kubectl" "$bin/"
  local name
  for name in kube-apiserver kube-controller-manager kube-scheduler; do
    save_archive "$bin/$name.tar" "registry.k8s.io/$name:$k8s_version"
  done
  save_archive "$bin/kube-proxy.tar" "registry.k8s.io/kube-proxy:$k8s_version" \
    "$(kubeadm_image etcd)" "$(kubeadm_image coredns)" "$(sandbox_image)" \
    "docker.io/kindest/kindnetd:$(kind_const const_cni.go kindnetdImage)" \
    "docker.io/kindest/local-path-provisioner:$(kind_const const_storage.go storageProvisionerImage)" \
    "docker.io/kindest/local-path-helper:$(kind_const const_storage.go storageHelperImage)"
  tar -C "$root" -cf - kubernetes | gzip -1 >"$tarball.tmp"
  mv -f "$tarball.tmp" "$tarball"
  echo "$tarball"
}

timed "base image $base_image" make_base
timed "preloaded images" make_images
tarball="$(timed "server tarball" make_server_tarball)"
# `kind build node-image` execs into its build container with --privileged.
bash "$here/kind.sh" check || die "this Docker engine cannot run kind (the parts are cached in $cache)"
timed "kind build node-image" "$kind_bin" build node-image --type file "$tarball" \
  --base-image "$base_image" --image "$node_image.tmp" >&2
# The recipe as a label, so a stale image of the same Kubernetes version is rebuilt.
printf 'FROM %s\nLABEL io.carbonaware.recipe=%s\n' "$node_image.tmp" "$recipe" |
  DOCKER_BUILDKIT=0 docker build -q -t "$node_image" - >/dev/null
docker rmi "$node_image.tmp" >/dev/null
timed "docker save $node_image" docker save -o "$archive.tmp" "$node_image"
mv -f "$archive.tmp" "$archive"
log "built $node_image in $((SECONDS - start)) s (archive $archive)"
echo "$node_image"
