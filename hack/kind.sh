#!/usr/bin/env bash
# The product on a kind cluster (for users with Docker and kind; see docs/kubernetes.md):
#   hack/kind.sh up       kind create cluster --name carbonaware
#   hack/kind.sh deploy   build carbonaware/operator:dev and carbonaware/trainer:dev (MNIST baked
#                         in), kind load them, kubectl apply -k manifests/, wait for the operator
#   hack/kind.sh demo     kubectl apply -f examples/job.yaml and print how to watch it and plot it
#   hack/kind.sh down     kind delete cluster --name carbonaware
# The manifests and Dockerfiles are the ones `make e2e` tests on the local cluster. The
# trainer image differs only by the baked-in data (BAKE_MNIST=1): a kind node has no MNIST
# folder to mount, and the quick-start job names no data volume.
#
# Env: KIND_CLUSTER (default carbonaware); MNIST_DIR, a folder holding MNIST/raw (default
# ../shared/data/mnist, else data/mnist, downloaded once with the trainer image's torchvision).
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

up() {
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  need kubectl "https://kubernetes.io/docs/tasks/tools/"
  if kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    say "kind cluster $cluster exists"
  else
    kind create cluster --name "$cluster"
  fi
  kctl get nodes
}

deploy() {
  need docker "https://docs.docker.com/engine/install/"
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  docker build -f Dockerfile.operator -t "$operator_image" .
  docker build -f Dockerfile.trainer -t "$trainer_image" .
  # The same Dockerfile again with MNIST baked in (BuildKit's named build context).
  docker buildx build --load --build-arg BAKE_MNIST=1 --build-context mnist="$(mnist_dir)" \
    -f Dockerfile.trainer -t "$trainer_image" .
  kind load docker-image "$operator_image" "$trainer_image" --name "$cluster"
  kctl apply -k manifests/
  kctl -n carbonaware-system rollout status deployment/carbonaware-operator --timeout=180s
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
  need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
  kind delete cluster --name "$cluster"
}

case "${1:-}" in
  up | deploy | demo | down) "$1" ;;
  *)
    echo "usage: hack/kind.sh up|deploy|demo|down" >&2
    exit 2
    ;;
esac
