#!/usr/bin/env bash
# `make test` (after hack/venv.sh): lint, the tests that need no services, then Docker, the
# Kubernetes binaries (built once, cached), the local cluster (with a node where one can
# run) and the integration / e2e / docker tiers. Whatever this script started (cluster,
# dockerd) it stops on exit; a cluster or dockerd that was already running is left alone.
# Always uses the local cluster: an inherited KUBECONFIG is ignored (to test a kind cluster,
# run `KUBECONFIG=... .venv/bin/pytest -m integration` directly; see docs/testing.md).
# WITH_NODE=0 skips the node (and so the e2e tier); CLUSTER_DIR picks the cluster's folder.
set -uo pipefail
cd "$(dirname "$0")/.."
unset KUBECONFIG

start=$SECONDS
step() { echo; echo "=== make test: $* (at $((SECONDS - start)) s)"; }
summaries="$(mktemp)"
started_cluster="" started_docker=""

cleanup() {
  local rc=$?
  if [[ -n "$started_cluster" ]]; then
    step "stopping the local cluster"
    hack/local-cluster down || rc=1
  fi
  if [[ -n "$started_docker" ]]; then
    step "stopping dockerd"
    bash hack/docker.sh down || rc=1
  fi
  echo
  echo "=== make test: pytest summaries"
  cat "$summaries"
  rm -f "$summaries"
  echo "=== make test: $([[ $rc == 0 ]] && echo PASSED || echo FAILED) in $((SECONDS - start)) s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs pytest, shows its output, and keeps its summary line for the end.
run_pytest() {
  local tier="$1"
  shift
  local out
  out="$(mktemp)"
  .venv/bin/python -m pytest --durations=12 "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  # rc 5: nothing collected for this tier yet; not a failure.
  printf '%-34s %s\n' "$tier:" "$(grep -E '^=+ .* in [0-9.]+s' "$out" | tail -1)" >>"$summaries"
  rm -f "$out"
  [[ $rc == 0 || $rc == 5 ]]
}

failed=0
step "ruff check"
.venv/bin/ruff check . || failed=1

step "unit tier (no services)"
run_pytest "unit" -m "not (integration or e2e or docker)" || failed=1

if [[ -f hack/docker.sh ]]; then
  step "Docker (hack/docker.sh up)"
  if timeout 10 docker version >/dev/null 2>&1; then
    echo "a Docker engine is already running; using it"
    bash hack/docker.sh up || echo "make test: hack/docker.sh up failed; docker tests will say why"
  elif bash hack/docker.sh up; then
    started_docker=1
  else
    started_docker=1 # it may have started dockerd before failing
    echo "make test: hack/docker.sh up failed; docker tests will say why"
  fi
fi

step "Kubernetes binaries (hack/build-k8s.sh)"
bash hack/build-k8s.sh >/dev/null || exit 1
step "Kueue (hack/build-kueue.sh)"
bash hack/build-kueue.sh >/dev/null || exit 1

# The test fixtures call these too (idempotent); here their progress shows as a step.
step "helm, prometheus-operator CRDs and Prometheus (hack/build-helm.sh, monitoring-crds.sh, prometheus.sh)"
bash hack/build-helm.sh >/dev/null || exit 1
bash hack/monitoring-crds.sh >/dev/null || exit 1
bash hack/prometheus.sh >/dev/null || echo "make test: hack/prometheus.sh failed; monitoring tests will say why"

node_flag=""
if [[ "${WITH_NODE:-1}" == 0 ]]; then
  echo "make test: WITH_NODE=0, so no node: e2e tests will skip"
elif [[ -f hack/node.sh ]]; then
  if reason="$(bash hack/node.sh check 2>&1)"; then
    node_flag="--with-node"
  else
    echo "make test: no node on this machine, e2e tests will skip: ${reason##*$'\n'}"
  fi
fi

step "local cluster (hack/local-cluster up $node_flag)"
if hack/local-cluster status >/dev/null 2>&1; then
  echo "a local cluster is already running; using it (it stays up)"
else
  started_cluster=1
fi
up_rc=0
exports="$(hack/local-cluster up $node_flag)" || up_rc=$?
# 3: no node can run here (e2e tests skip, saying why); 4: the node failed (they fail).
[[ $up_rc == 0 || $up_rc == 3 || $up_rc == 4 ]] || exit 1
eval "$exports"

step "integration, e2e and docker tiers"
run_pytest "integration / e2e / docker" -m "integration or e2e or docker" || failed=1

exit "$failed"
