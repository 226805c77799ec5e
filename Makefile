# The two commands a newcomer runs: `make demo` and `make test`.
# Each creates .venv and installs what it needs on a fresh machine (hack/venv.sh).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: help venv demo test unit integration e2e lint bench cluster-up cluster-down k8s-binaries docker-up clean \
	chart helm-binary \
	kind-up kind-deploy kind-demo

help:
	@echo "make demo   - run carbonctl on the bundled replay trace (no account, no network)"
	@echo "make test   - install, start Docker and the local cluster, run every test tier, stop them"
	@echo "make lint   - ruff"
	@echo "make bench  - benchmarks in bench/ (see docs/benchmarks.md)"

venv:
	@bash hack/venv.sh

demo: venv
	@bash hack/demo.sh

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

unit: venv
	$(PY) -m pytest tests/unit -q

# The full suite: lint, unit, integration (real control plane), e2e (real node) where possible.
test: venv
	@bash hack/test.sh

# Images built by Docker and loaded into a real node, the operator deployed with
# `kubectl apply -k`, the quick-start job run for real; plus `docker run ... carbonctl run`.
e2e: venv
	@bash hack/e2e.sh

# For users with kind (see docs/kubernetes.md): the same manifests and images as `make e2e`.
kind-up:
	@bash hack/kind.sh up

kind-deploy:
	@bash hack/kind.sh deploy

kind-demo:
	@bash hack/kind.sh demo

# The Helm chart's copies of manifests/ and monitoring/ (CRDs, RBAC rules, settings, alerts,
# dashboard); tests/unit/test_chart_render.py fails when they drift.
chart: venv
	$(PY) hack/render-chart.py

# helm from its Go module, cached in ~/.cache/carbonaware/helm-<version>/bin.
helm-binary:
	@bash hack/build-helm.sh

# Kubernetes from upstream Go modules, cached in ~/.cache/carbonaware/k8s-<version>/bin.
k8s-binaries:
	@bash hack/build-k8s.sh

# A real control plane on loopback (add ARGS=--with-node for a node); prints `export KUBECONFIG=...`.
cluster-up: venv k8s-binaries
	@hack/local-cluster up $(ARGS)

cluster-down:
	@hack/local-cluster down

bench: venv
	$(PY) bench/trainer.py
	$(PY) bench/scheduling.py

clean:
	rm -rf .venv build dist *.egg-info carbon_plot.png carbon_log.csv
