#!/usr/bin/env bash
# The product on a kind cluster (for users with Docker and kind; see docs/kubernetes.md):
#   hack/kind.sh up       kind create cluster --name carbonaware (KIND_WORKERS=N adds N workers,
#                         labelled topology.kubernetes.io/zone=zone-1..N)
#   hack/kind.sh deploy   build carbonaware/operator:dev and carbonaware/trainer:dev (MNIST baked
#                         in), kind load them, kubectl apply -k manifests/, wait for the operator
#   hack/kind.sh demo     kubectl apply -f examples/job.yaml and print how to watch it and plot it
#   hack/kind.sh down     kind delete cluster --name carbonaware
#   hack/kind.sh load IMAGE...  kind load docker-image IMAGE... into the cluster
#   hack/kind.sh config   print the kind cluster config `up` uses
#   hack/kind.sh check    exit 1, saying why, where Docker cannot run kind's privileged nodes
# The manifests and Dockerfiles are the ones `make e2e` tests on the local cluster. The
# trainer image differs only by one more layer with MNIST baked in: a kind node has no MNIST
# folder to mount, and the quick-start job names no data volume.
#
# Node image: kind's own (docker.io/kindest/node) when Docker Hub answers; otherwise, or with
# KIND_NODE_IMAGE=local, one built here without any registry by hack/kind-node-image.sh (cached
# by version; the first build takes a while). KIND_NODE_IMAGE=<image> names any other.
# kind: the one on PATH, else hack/build-kind.sh builds the pinned release (needs Go).
#
# Env: KIND_CLUSTER (default carbonaware); KIND_WORKERS (default 0); KIND_NODE_IMAGE;
# MNIST_DIR, a folder holding MNIST/raw (default ../shared/data/mnist, else data/mnist,
# downloaded once with the trainer image's torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster="${KIND_CLUSTER:-carbonaware}"
context="kind-$cluster"
operator_image="carbonaware/operator:dev"
trainer_image="carbonaware/trainer:dev"

say() { echo "kind.sh: $*" >&2; }
need() {
  command -v "$1" >/dev/null || {
    say "needs $1 on PATH ($2)"
    exit 2
  }
}
kctl() { kubectl --context "$context" "$@"; }

# kind on PATH, else the pinned release built from its Go module.
kind() {
  if command -v kind >/dev/null; then
    command kind "$@"
  else
    [[ -n "${_kind_bin:-}" ]] || _kind_bin="$(bash hack/build-kind.sh | tail -n1)/kind"
    "$_kind_bin" "$@"
  fi
}
need_kind() {
  command -v kind >/dev/null || command -v go >/dev/null || [[ -x /usr/local/go/bin/go ]] ||
    need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
}

# The node image: kind's default when Docker Hub answers (401 is its "who are you?").
node_image() {
  case "${KIND_NODE_IMAGE:-}" in
    local) bash hack/kind-node-image.sh | tail -n1 ;;
    "")
      if [[ "$(curl -s -o /dev/null -m 10 -w '%{http_code}' https://registry-1.docker.io/v2/ || true)" == 401 ]]; then
        echo "" # kind's default
      else
        say "Docker Hub does not answer: using a node image built here (hack/kind-node-image.sh)"
        bash hack/kind-node-image.sh | tail -n1
      fi
      ;;
    *) echo "$KIND_NODE_IMAGE" ;;
  esac
}

# kind's cluster config: one control plane and KIND_WORKERS workers, each in its own zone.
cluster_config() {
  cat <<EOF
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
# kubelet >= 1.35 refuses a cgroup v1 host (this machine, some CI runners) unless told to run.
kubeadmConfigPatches:
- |
  kind: KubeletConfiguration
  failCgroupV1: false
nodes:
- role: control-plane
EOF
  local i
  for ((i = 1; i <= ${KIND_WORKERS:-0}; i++)); do
    printf -- '- role: worker\n  labels:\n    topology.kubernetes.io/zone: zone-%s\n' "$i"
  done
}

mnist_dir() {
  local dir="${MNIST_DIR:-}"
  if [[ -z "$dir" ]]; then
    if [[ -d ../shared/data/mnist/MNIST/raw ]]; then dir=../shared/data/mnist; else dir=data/mnist; fi
  fi
  if [[ ! -d "$dir/MNIST/raw" ]]; then
    say "downloading MNIST into $dir (once) with the trainer image's torchvision"
    mkdir -p "$dir"
    docker run --rm --user "$(id -u):$(id -g)" -v "$(cd "$dir" && pwd)":/data/mnist \
      --entrypoint python "$trainer_image" -c \
      "from torchvision.datasets import MNIST; [MNIST('/data/mnist', train=t, download=True) for t in (True, False)]" >&2
  fi
  echo "$dir"
}

# kind's nodes are privileged containers; an engine that cannot start one (Docker 20.10 asks
# runc for every capability, and fails where the host's bounding set lacks one, as here:
# CAP_SYS_RESOURCE) would fail deep inside `kind create cluster`. Say so up front.
privileged_ok() {
  local out
  if ! out="$(docker run --rm --privileged --entrypoint true "${KIND_PROBE_IMAGE:-python:3.11-slim-bookworm}" 2>&1)"; then
    say "this Docker engine cannot run the privileged containers kind's nodes are: ${out%%$'\n'*}"
    return 1
  fi
}

up() {
  need_kind
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  need docker "https://docs.docker.com/engine/install/"
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "kind cluster $cluster exists"
  else
    local image args=()
    privileged_ok || exit 3
    image="$(node_image)"
    [[ -z "$image" ]] || args+=(--image "$image")
    kind create cluster --name "$cluster" "${args[@]}" --config <(cluster_config) --wait 180s
  fi
  kctl get nodes
}

deploy() {
  need docker "https://docs.docker.com/engine/install/"
  need_kind
  docker build -f Dockerfile.operator -t "$operator_image" .
  docker build -f Dockerfile.trainer -t "$trainer_image" .
  # MNIST baked in as one more layer, with the MNIST folder as the build context (any Docker,
  # no BuildKit needed).
  local data
  data="$(mnist_dir)"
  printf 'FROM %s\nCOPY MNIST/raw/ /data/mnist/MNIST/raw/\n' "$trainer_image" |
    DOCKER_BUILDKIT=0 docker build -f - -t "$trainer_image" "$data"
  load "$operator_image" "$trainer_image"
  kctl apply -k manifests/
  kctl -n carbonaware-system rollout status deployment/carbonaware-operator --timeout=180s
}

load() {
  need_kind
  kind load docker-image "$@" --name "$cluster"
}

demo() {
  kctl apply -f examples/job.yaml
  cat <<EOF

The quick-start job waits for a cleaner grid (the demo trace replayed 360x), then trains.
Watch it:      kubectl --context $context get carbonawarejobs -w
More columns:  kubectl --context $context get carbonawarejobs -o wide
Its story:     kubectl --context $context carbon status mnist-quickstart
Trainer log:   kubectl --context $context logs job/\$(kubectl --context $context get caj mnist-quickstart -o jsonpath='{.status.jobName}')
The plot:      kubectl config use-context $context && carbonctl plot --job mnist-quickstart
               (or: kubectl carbon plot mnist-quickstart)  -> carbon_plot.png
Clean up:      kubectl --context $context delete carbonawarejob mnist-quickstart; hack/kind.sh down
EOF
}

down() {
  need_kind
  kind delete cluster --name "$cluster"
}

case "${1:-}" in
  up | deploy | demo | down) "$1" ;;
  config) cluster_config ;;
  check) privileged_ok ;;
  load) shift && load "$@" ;;
  *)
    echo "usage: hack/kind.sh up|deploy|demo|down|config|check|load IMAGE..." >&2
    exit 2
    ;;
esac
