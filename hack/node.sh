#!/usr/bin/env bash
# A real Kubernetes node on this machine, for `hack/local-cluster up --with-node`:
#   hack/node.sh check             exit 0 if a node can run here, else 3 and one reason
#   hack/node.sh up                containerd (own config, root, state and socket), its CRI
#                                  plugin, runc, CNI bridge, a locally built pause image, and
#                                  kubelet registered against the control plane
#   hack/node.sh down              remove pods, stop what `up` started (by pid), unmount, clean
#   hack/node.sh load-image IMAGE  copy a local Docker image into the node's containerd
#   hack/node.sh status
#
# Env (set by hack/local-cluster): CLUSTER_DIR (default /tmp/carbonaware-cluster), KUBECONFIG
# (admin kubeconfig of the control plane), K8S_BIN (folder with kubelet and kubectl),
# CLUSTER_CA_CERT / CLUSTER_CA_KEY (default $CLUSTER_DIR/pki/ca.{crt,key}: the kubelet's
# client certificate is signed with them), NODE_NAME (default carbonaware-node),
# POD_CIDR (default 10.88.0.0/16). Everything lives under $CLUSTER_DIR/node, except the
# image cache (containerd's root) in ${CARBONAWARE_CACHE:-~/.cache/carbonaware}/node/.
#
# Where no node can run here, `up` exits 3 and its last stderr line is one reason, prefixed
# "node unavailable:", which the e2e tests print when they skip. Other failures exit 1.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

cluster_dir="${CLUSTER_DIR:-/tmp/carbonaware-cluster}"
node_dir="$cluster_dir/node"
node_name="${NODE_NAME:-carbonaware-node}"
pod_cidr="${POD_CIDR:-10.88.0.0/16}"
ca_cert="${CLUSTER_CA_CERT:-$cluster_dir/pki/ca.crt}"
ca_key="${CLUSTER_CA_KEY:-$cluster_dir/pki/ca.key}"
cache="${CARBONAWARE_CACHE:-$HOME/.cache/carbonaware}"
crictl_version="v1.34.0"
crictl="$cache/crictl-$crictl_version/crictl"
bridge_name="cni-caj0"

containerd_dir="$node_dir/containerd"
# containerd's content and snapshots are a cache of images, kept across down/up (like
# /var/lib/docker), so a warm `load-image` of an unchanged image copies nothing. Safe to
# share: only one node runs per machine, and `down` deletes every container first.
containerd_root="$cache/node/containerd-root"
sock="$containerd_dir/containerd.sock"
kubelet_dir="$node_dir/kubelet"
cni_dir="$node_dir/cni"
# Kernel settings kubelet changes at start (vm.overcommit_memory, kernel.panic*); `down`
# puts back what was there.
tunables=(vm/overcommit_memory kernel/panic kernel/panic_on_oops)
# One node per machine: kubelets share the kubepods cgroups, and nodes would share the bridge.
owner_file=/run/carbonaware-node.owner

log() { echo "node.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}
unavailable() {
  echo "node unavailable: $*" >&2
  exit 3
}
timed() {
  local what="$1" start=$SECONDS
  shift
  "$@"
  log "$what took $((SECONDS - start)) s"
}
alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
ctr_() { ctr -a "$sock" -n k8s.io "$@"; }
kubectl_() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG" --request-timeout=10s "$@"; }

# Can a node run on this machine at all? Exits 3 with one reason when not.
check() {
  [[ $(id -u) == 0 ]] || unavailable "needs root (mounts, cgroups, network namespaces)"
  [[ -d /sys/fs/cgroup/cpu || -f /sys/fs/cgroup/cgroup.controllers ]] ||
    unavailable "no cgroup hierarchy mounted at /sys/fs/cgroup"
  grep -qw overlay /proc/filesystems || unavailable "the kernel has no overlay filesystem"
  unshare --mount --uts --ipc --net --pid --fork true 2>/dev/null ||
    unavailable "the kernel refuses new namespaces (unshare failed), so no container can run"
  [[ -d /proc/sys/net/bridge ]] || ip link add caj-probe0 type bridge 2>/dev/null ||
    unavailable "the kernel has no bridge support for the pod network"
  ip link delete caj-probe0 2>/dev/null || true
  local package
  for package in containerd runc containernetworking-plugins docker.io; do
    dpkg -s "$package" >/dev/null 2>&1 || apt-cache show "$package" >/dev/null 2>&1 ||
      unavailable "$package is not installed and apt cannot install it"
  done
}

preflight() {
  check
  [[ -n "${K8S_BIN:-}" && -x "$K8S_BIN/kubelet" && -x "$K8S_BIN/kubectl" ]] ||
    die "K8S_BIN must name the folder with kubelet and kubectl (hack/build-k8s.sh)"
  [[ -n "${KUBECONFIG:-}" && -f "$KUBECONFIG" ]] || die "KUBECONFIG must name the admin kubeconfig"
  [[ -f "$ca_cert" && -f "$ca_key" ]] ||
    die "cluster CA not found at $ca_cert / $ca_key (set CLUSTER_CA_CERT, CLUSTER_CA_KEY)"
}

apt_install() {
  apt-get update -qq >/dev/null || unavailable "apt-get update failed; cannot install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
    unavailable "apt-get install $* failed"
}

ensure_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v gcc >/dev/null || missing+=(gcc libc6-dev)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v ip >/dev/null || missing+=(iproute2)
  if ((${#missing[@]})); then timed "installing ${missing[*]}" apt_install "${missing[@]}"; fi
}

# crictl tears pods down through CRI, so CNI DEL runs and nothing leaks.
ensure_crictl() {
  [[ -x "$crictl" ]] && return
  command -v go >/dev/null || die "crictl missing and no Go to build it"
  mkdir -p "$(dirname "$crictl")"
  timed "building crictl $crictl_version" env GOBIN="$(dirname "$crictl")" CGO_ENABLED=0 \
    go install -trimpath -ldflags='-s -w' "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
}

ensure_pause_image() {
  docker image inspect "$pause_image" >/dev/null 2>&1 && return
  local ctx
  ctx="$(mktemp -d)"
  gcc -static -O2 -o "$ctx/pause" "$here/pause/pause.c"
  printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
  # The legacy builder: Debian's docker.io has no buildx. Quiet unless it fails.
  DOCKER_BUILDKIT=0 docker build -q -t "$pause_image" "$ctx" >"$ctx/build.log" 2>&1 || {
    cat "$ctx/build.log" >&2
    die "building $pause_image failed"
  }
  rm -rf "$ctx"
}

has_cap_sys_resource() {
  local eff
  eff="$(awk '$1 == "CapEff:" {print $2}' /proc/self/status)"
  (((0x$eff >> 24) & 1))
}

write_containerd_config() {
  mkdir -p "$containerd_dir" "$cni_dir/net.d" "$cni_dir/ipam"
  cat >"$containerd_dir/config.toml" <<EOF
version = 2
root = "$containerd_root"
state = "$containerd_dir/state"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$containerd_dir/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  # Without CAP_SYS_RESOURCE (some VMs drop it, even for root) no process may lower its
  # oom_score_adj, and runc fails to start pause at -998: clamp to containerd's own.
  restrict_oom_score_adj = $(has_cap_sys_resource && echo false || echo true)
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        SystemdCgroup = $([[ $cgroup_driver == systemd ]] && echo true || echo false)
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$cni_dir/net.d"
EOF
  cat >"$cni_dir/net.d/10-carbonaware.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "carbonaware",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge_name",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$cni_dir/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

start_containerd() {
  if alive "$containerd_dir/containerd.pid" && ctr -a "$sock" version >/dev/null 2>&1; then
    log "containerd already running (pid $(cat "$containerd_dir/containerd.pid"))"
    return
  fi
  write_containerd_config
  setsid containerd --config "$containerd_dir/config.toml" >"$containerd_dir/containerd.log" 2>&1 \
    </dev/null &
  echo $! >"$containerd_dir/containerd.pid"
  local deadline=$((SECONDS + 30))
  until ctr -a "$sock" version >/dev/null 2>&1; do
    alive "$containerd_dir/containerd.pid" ||
      die "containerd exited at start (log: $containerd_dir/containerd.log)"
    ((SECONDS < deadline)) || die "containerd did not answer within 30 s"
    sleep 0.2
  done
}

load_image() {
  local image="$1" id ref have
  id="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null)" || die "no local Docker image $image"
  # containerd's name for it: docker.io/library/python:3.11, docker.io/me/app:1, ...
  ref="$(docker image inspect -f '{{index .RepoTags 0}}' "$image")"
  local first="${ref%%/*}"
  if [[ "$ref" != */* ]]; then
    ref="docker.io/library/$ref"
  elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then
    ref="docker.io/$ref"
  fi
  # CRI lists an image by its config digest, which is Docker's image ID: same ID, same image.
  have="$(ctr_ images ls -q)"
  if grep -qx "$id" <<<"$have" && grep -qx "$ref" <<<"$have"; then
    log "$image already in the node's containerd"
    return
  fi
  docker save "$image" | ctr_ images import - >/dev/null || die "importing $image into containerd failed"
}

# Client certificate CN=system:node:<name>, O=system:nodes, signed by the cluster CA.
write_kubelet_credentials() {
  local pki="$kubelet_dir/pki" server
  mkdir -p "$pki"
  # Reissued when the cluster's CA changed since (a control plane started afresh).
  if ! openssl verify -CAfile "$ca_cert" "$pki/client.crt" >/dev/null 2>&1; then
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/client.key" -out "$pki/client.csr" \
      -subj "/O=system:nodes/CN=system:node:$node_name" 2>/dev/null
    openssl x509 -req -in "$pki/client.csr" -CA "$ca_cert" -CAkey "$ca_key" -CAcreateserial \
      -days 30 -out "$pki/client.crt" \
      -extfile <(printf 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n') \
      2>/dev/null
  fi
  server="$(kubectl_ config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
  cat >"$kubelet_dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: $server
    certificate-authority: $ca_cert
users:
- name: kubelet
  user:
    client-certificate: $pki/client.crt
    client-key: $pki/client.key
contexts:
- name: kubelet
  context: {cluster: local, user: kubelet}
current-context: kubelet
EOF
}

# The node reports its kubelet port to the apiserver, so any free one will do.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

write_kubelet_config() {
  cat >"$kubelet_dir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The apiserver reaches the kubelet (logs, exec) at the node's InternalIP, which may not be
# loopback; clients need a certificate from the cluster CA.
address: $node_ip
port: $(free_port)
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $(free_port)
containerRuntimeEndpoint: unix://$sock
cgroupDriver: $cgroup_driver
# This machine runs cgroup v1; kubelet >= 1.35 refuses it unless told otherwise.
failCgroupV1: false
failSwapOn: false
# Lowering oom_score_adj needs CAP_SYS_RESOURCE, which root lacks on some VMs.
oomScoreAdj: $(has_cap_sys_resource && echo -999 || echo 0)
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $ca_cert}
authorization: {mode: Webhook}
registerNode: true
resolvConf: /etc/resolv.conf
serializeImagePulls: false
# Nothing on this node needs eviction by disk pressure during a test run.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
}

start_kubelet() {
  if alive "$kubelet_dir/kubelet.pid"; then
    log "kubelet already running (pid $(cat "$kubelet_dir/kubelet.pid"))"
    return
  fi
  # The host's primary address (the one local-cluster advertises with a node).
  node_ip="$(ip -4 route get 203.0.113.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')"
  [[ -n "$node_ip" ]] || unavailable "no non-loopback IPv4 address for the node"
  write_kubelet_credentials
  write_kubelet_config
  if [[ ! -f "$node_dir/tunables.saved" ]]; then
    for t in "${tunables[@]}"; do echo "$t $(cat "/proc/sys/$t")"; done >"$node_dir/tunables.saved"
  fi
  setsid "$K8S_BIN/kubelet" --config "$kubelet_dir/config.yaml" --kubeconfig "$kubelet_dir/kubeconfig" \
    --root-dir "$kubelet_dir/root" --cert-dir "$kubelet_dir/pki" \
    --hostname-override "$node_name" --node-ip "$node_ip" --v 1 \
    >"$kubelet_dir/kubelet.log" 2>&1 </dev/null &
  echo $! >"$kubelet_dir/kubelet.pid"
}

wait_node_ready() {
  local deadline=$((SECONDS + ${NODE_READY_TIMEOUT:-120})) ready=""
  until [[ "$ready" == True ]]; do
    alive "$kubelet_dir/kubelet.pid" || {
      tail -n 15 "$kubelet_dir/kubelet.log" >&2
      die "kubelet exited (log: $kubelet_dir/kubelet.log)"
    }
    ((SECONDS < deadline)) || die "node $node_name not Ready in time (log: $kubelet_dir/kubelet.log)"
    sleep 1
    ready="$(kubectl_ get node "$node_name" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)"
  done
}

up() {
  local start=$SECONDS
  preflight
  cgroup_driver=cgroupfs
  # systemd as PID 1 owns the cgroup tree; elsewhere kubelet and runc write it directly.
  [[ "$(cat /proc/1/comm 2>/dev/null)" == systemd ]] && cgroup_driver=systemd
  ensure_packages
  # Docker builds the pause image and holds the images that `load-image` copies in.
  local rc=0
  "$here/docker.sh" up 2> >(sed 's/^/  /' >&2) || rc=$?
  ((rc != 3)) || unavailable "no Docker engine to build the pause image and test images"
  ((rc == 0)) || die "hack/docker.sh up failed (exit $rc)"
  ensure_crictl
  # Tagged by the source's hash, so a changed pause.c makes a new image.
  pause_image="carbonaware/pause:$(sha256sum "$here/pause/pause.c" | cut -c1-12)"
  # containerd names images as a registry would; containerd's CRI asks for this name.
  pause_ref="docker.io/$pause_image"
  timed "pause image" ensure_pause_image
  claim_machine
  timed "containerd" start_containerd
  timed "loading $pause_image" load_image "$pause_image"
  echo 1 >/proc/sys/net/ipv4/ip_forward
  start_kubelet
  timed "kubelet registered and Ready" wait_node_ready
  log "node $node_name up in $((SECONDS - start)) s (logs under $node_dir)"
}

claim_machine() {
  local other
  other="$(cat "$owner_file" 2>/dev/null || true)"
  if [[ -n "$other" && "$other" != "$node_dir" ]] &&
    { alive "$other/kubelet/kubelet.pid" || alive "$other/containerd/containerd.pid"; }; then
    die "another node runs on this machine (stop it: CLUSTER_DIR=${other%/node} $0 down)"
  fi
  # A node's containerd that outlived its state (say, a crashed `down`) still holds the shared
  # image store: a second containerd would wait on its lock.
  local stray
  stray="$(pgrep -ax containerd | grep ' --config .*/node/containerd/config.toml' |
    grep -vF " --config $containerd_dir/config.toml" || true)"
  [[ -z "$stray" ]] || die "a containerd of another node still runs ($stray); stop it first"
  mkdir -p "$node_dir"
  echo "$node_dir" >"$owner_file"
}

stop_pid() {
  local pidfile="$1" what="$2" pid
  alive "$pidfile" || {
    rm -f "$pidfile"
    return
  }
  pid="$(cat "$pidfile")"
  kill "$pid"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
  log "stopped $what (pid $pid)"
}

# What CNI DEL would have removed, had a pod's teardown not reached it: its network
# namespace (its veth goes with it) and its masquerade rules (tagged with our network name).
remove_leftover_pod_network() {
  local netns rule chain
  while read -r netns; do
    [[ -e "$netns" ]] && { umount "$netns" 2>/dev/null || true; rm -f "$netns"; }
  done < <(cat "$node_dir/netns.list" 2>/dev/null)
  { iptables -t nat -S POSTROUTING 2>/dev/null || true; } | { grep -F 'name: \"carbonaware\"' || true; } |
    while read -r rule; do
      chain="${rule##*-j }"
      eval "iptables -t nat ${rule/#-A/-D}" 2>/dev/null || true
      { iptables -t nat -F "$chain" && iptables -t nat -X "$chain"; } 2>/dev/null || true
    done
}

down() {
  [[ -d "$node_dir" ]] || {
    log "no node state under $node_dir"
    return
  }
  stop_pid "$kubelet_dir/kubelet.pid" kubelet
  if alive "$containerd_dir/containerd.pid"; then
    # The pods' network namespaces, in case CRI cannot remove them below.
    for id in $(ctr_ containers ls -q 2>/dev/null); do
      ctr_ containers info "$id" 2>/dev/null | grep -o '/var/run/netns/cni-[0-9a-f-]*' || true
    done | sort -u >"$node_dir/netns.list"
    # Kill first (the cluster is going away: no grace periods), then remove the sandboxes
    # through CRI, so the CNI plugins release addresses, veths and iptables rules.
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" 2>/dev/null || true; done
    if [[ -x "$crictl" ]]; then
      "$crictl" -r "unix://$sock" -t 20s rmp -a -f >/dev/null 2>&1 || log "crictl rmp failed; cleaning up directly"
    fi
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  stop_pid "$containerd_dir/containerd.pid" containerd
  remove_leftover_pod_network
  # Mounts kubelet and containerd made under the node's folders (volumes, rootfs, shm).
  awk -v d="$node_dir/" -v r="$containerd_root/" 'index($2, d) == 1 || index($2, r) == 1 {print $2}' \
    /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link delete "$bridge_name" 2>/dev/null || true
  if [[ -f "$node_dir/tunables.saved" ]]; then
    while read -r t v; do echo "$v" >"/proc/sys/$t" || true; done <"$node_dir/tunables.saved"
  fi
  if [[ -n "${KUBECONFIG:-}" && -f "$KUBECONFIG" && -n "${K8S_BIN:-}" ]]; then
    kubectl_ delete node "$node_name" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$node_dir"
  [[ "$(cat "$owner_file" 2>/dev/null)" != "$node_dir" ]] || rm -f "$owner_file"
  log "node state removed"
}

status() {
  alive "$kubelet_dir/kubelet.pid" && echo "kubelet: pid $(cat "$kubelet_dir/kubelet.pid")" ||
    echo "kubelet: stopped"
  alive "$containerd_dir/containerd.pid" && echo "containerd: pid $(cat "$containerd_dir/containerd.pid") $sock" ||
    echo "containerd: stopped"
}

case "${1:-}" in
check) check ;;
up) up ;;
down) down ;;
status) status ;;
load-image)
  [[ -n "${2:-}" ]] || die "usage: $0 load-image IMAGE"
  alive "$containerd_dir/containerd.pid" || die "the node's containerd is not running (hack/node.sh up)"
  timed "loading $2" load_image "$2"
  ;;
*)
  echo "usage: $0 check|up|down|status|load-image IMAGE" >&2
  exit 2
  ;;
esac
