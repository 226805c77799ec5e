"""RBAC of the energy paths, pinned by `kubectl auth can-i` on the real apiserver.

The shipped operator cannot reach the kubelet API (`get nodes/proxy` also reaches the
kubelet's exec endpoints); manifests/rbac-kubelet-stats.yaml, the opt-in for the kubelet
CPU-time path, grants exactly `get nodes/proxy` and nothing else. The Prometheus path needs
no Kubernetes permission at all.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration]

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
OPERATOR_SA = "system:serviceaccount:carbonaware-system:carbonaware-operator"


def run_kubectl(binary: str, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def can_i(kubectl_bin: str, kubeconfig: Path, verb: str, resource: str) -> str:
    """kubectl's answer; ``resource`` may name a subresource ("nodes/proxy"), which kubectl
    takes as a resource name unless passed as --subresource."""
    kind, _, sub = resource.partition("/")
    args = ("auth", "can-i", verb, kind, "--as", OPERATOR_SA)
    args += (f"--subresource={sub}",) if sub else ()
    return run_kubectl(kubectl_bin, kubeconfig, *args).stdout.strip()


def test_only_the_opt_in_manifest_lets_the_operator_read_kubelet_stats(
    kubectl: str, kubeconfig: Path
) -> None:
    for name in ("namespace.yaml", "rbac.yaml"):
        applied = run_kubectl(kubectl, kubeconfig, "apply", "-f", str(MANIFESTS / name))
        assert applied.returncode == 0, applied.stderr
    assert can_i(kubectl, kubeconfig, "list", "pods") == "yes"
    assert can_i(kubectl, kubeconfig, "get", "nodes/proxy") == "no"

    opt_in = str(MANIFESTS / "rbac-kubelet-stats.yaml")
    applied = run_kubectl(kubectl, kubeconfig, "apply", "-f", opt_in)
    assert applied.returncode == 0, applied.stderr
    try:
        assert can_i(kubectl, kubeconfig, "get", "nodes/proxy") == "yes"
        for verb, resource in [
            ("create", "nodes/proxy"),  # POST: exec/run through the proxy
            ("get", "nodes"),
            ("list", "nodes"),
            ("get", "nodes/stats"),
            ("create", "pods/exec"),
            ("get", "pods/log"),
        ]:
            assert can_i(kubectl, kubeconfig, verb, resource) == "no", f"{verb} {resource}"
    finally:
        run_kubectl(kubectl, kubeconfig, "delete", "-f", opt_in, "--ignore-not-found")
    assert can_i(kubectl, kubeconfig, "get", "nodes/proxy") == "no"
