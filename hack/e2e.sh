#!/usr/bin/env bash
# `make e2e`: the product the way a user meets it, on this machine.
#   1. a Docker engine and the local base image (hack/docker.sh up)
#   2. docker build Dockerfile.operator -> carbonaware/operator:dev and
#      Dockerfile.trainer -> carbonaware/trainer:dev (offline: FROM the local base image)
#   3. the local cluster with a node (hack/local-cluster up --with-node)
#   4. both images loaded into the node's containerd (hack/node.sh load-image)
#   5. pytest tests/e2e: the operator deployed with `kubectl apply -k`, the quick-start job
#      waiting, training and reporting in real pods, the plot, delete; and the
#      single-container `docker run ... carbonctl run` path
# It starts only what is not running and stops, on exit, only what it started. Where no node
# can run here the e2e tests skip and say why (the docker test still runs).
#
# Env: E2E_ARTIFACTS (default /tmp/carbonaware-e2e): kubectl tables, `kubectl carbon status`,
# carbon_plot.png and the timeline of the last run, for docs/kubernetes.md.
# E2E_SETUP_ONLY=1: build, load and leave everything up (for a hand-run `pytest -m e2e`).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
unset KUBECONFIG

start=$SECONDS
step() { echo; echo "=== make e2e: $* (at $((SECONDS - start)) s)"; }
timed() {
  local what="$1" t=$SECONDS
  shift
  "$@" || return
  echo "make e2e: $what took $((SECONDS - t)) s"
}
started_cluster="" started_docker=""

cleanup() {
  local rc=$?
  if [[ -n "$started_cluster" && -z "${E2E_SETUP_ONLY:-}" ]]; then
    step "stopping the local cluster"
    hack/local-cluster down >/dev/null || rc=1
  fi
  if [[ -n "$started_docker" && -z "${E2E_SETUP_ONLY:-}" ]]; then
    step "stopping dockerd"
    bash hack/docker.sh down || rc=1
  fi
  echo "=== make e2e: $([[ $rc == 0 ]] && echo PASSED || echo FAILED) in $((SECONDS - start)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[[ -x .venv/bin/python ]] || bash hack/venv.sh || exit 1

step "Docker (hack/docker.sh up)"
timeout 10 docker version >/dev/null 2>&1 || started_docker=1
docker_rc=0
bash hack/docker.sh up || docker_rc=$?
if ((docker_rc == 3)); then
  echo "make e2e: no Docker engine can run here: the docker and e2e tests will skip, saying why"
elif ((docker_rc != 0)); then
  exit 1
else
  export DOCKER_BUILDKIT=0 # Debian's docker.io has no buildx
  step "docker build (operator, trainer)"
  timed "carbonaware/operator:dev" docker build -q -f Dockerfile.operator -t carbonaware/operator:dev . || exit 1
  timed "carbonaware/trainer:dev" docker build -q -f Dockerfile.trainer -t carbonaware/trainer:dev . || exit 1
fi

step "Kubernetes binaries (hack/build-k8s.sh)"
bash hack/build-k8s.sh >/dev/null || exit 1

step "local cluster with a node (hack/local-cluster up --with-node)"
hack/local-cluster status >/dev/null 2>&1 || started_cluster=1
up_rc=0
exports="$(hack/local-cluster up --with-node)" || up_rc=$?
# 3: no node can run here (the e2e tests skip, saying why); 4: the node failed (they fail).
[[ $up_rc == 0 || $up_rc == 3 || $up_rc == 4 ]] || exit 1
eval "$exports"

if ((up_rc == 0 && docker_rc == 0)); then
  step "loading the images into the node (hack/node.sh load-image)"
  for image in carbonaware/operator:dev carbonaware/trainer:dev; do
    timed "$image" env CLUSTER_DIR="${CLUSTER_DIR:-/tmp/carbonaware-cluster}" \
      bash hack/node.sh load-image "$image" || exit 1
  done
fi

if [[ -n "${E2E_SETUP_ONLY:-}" ]]; then
  echo "make e2e: set up; now: $exports; .venv/bin/pytest -m 'e2e or docker' tests/e2e"
  exit 0
fi

step "e2e tests (pytest tests/e2e)"
export E2E_ARTIFACTS="${E2E_ARTIFACTS:-/tmp/carbonaware-e2e}"
rm -rf "$E2E_ARTIFACTS"
.venv/bin/python -m pytest -m "e2e or docker" tests/e2e -v --durations=5
