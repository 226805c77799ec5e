"""Real Kueue for the integration tier: `kueue` (session) starts it beside the local cluster.

`hack/local-kueue up` builds the Kueue controller manager from its Go module on first use
(hack/build-kueue.sh, cached in ~/.cache/carbonaware/kueue-<version>/), installs the module's
own CRDs and webhook configurations (served by URL from 127.0.0.1) and runs the manager as a
local process; `down` stops it and removes its webhooks at the end of the session (only
when this session started it). Kueue
needs the local control plane (its webhooks are served from this machine), so a cluster at
an outside KUBECONFIG skips these tests, saying so.

`green_queue` builds a ResourceFlavor, a ClusterQueue (optionally listing AdmissionChecks)
and a LocalQueue in a namespace: the objects a platform team creates once.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster_fixtures import CLUSTER_DIR, Cluster, component_logs

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_KUEUE = REPO_ROOT / "hack" / "local-kueue"
KUEUE = ("kueue.x-k8s.io", "v1beta2")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"


@pytest.fixture(scope="session")
def kueue(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Path]:
    """Kueue running against the local cluster; its log file."""
    if cluster.log_dir is None:
        pytest.skip(
            "real Kueue runs beside the local cluster only: its webhooks are served from here"
        )
    env = {**os.environ, "CLUSTER_DIR": str(CLUSTER_DIR)}
    was_running = subprocess.run([str(LOCAL_KUEUE), "status"], env=env, capture_output=True)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():  # a cold start builds Kueue first: show it
        up = subprocess.run([str(LOCAL_KUEUE), "up"], env=env)
    if up.returncode != 0:
        pytest.fail(
            f"`hack/local-kueue up` failed (exit {up.returncode})\n"
            f"{component_logs(CLUSTER_DIR / 'kueue')}",
            pytrace=False,
        )
    yield CLUSTER_DIR / "kueue" / "kueue.log"
    if was_running.returncode != 0:  # one started by hand is left running
        subprocess.run([str(LOCAL_KUEUE), "down"], env=env, capture_output=True)


def restart_kueue() -> None:
    env = {**os.environ, "CLUSTER_DIR": str(CLUSTER_DIR)}
    subprocess.run([str(LOCAL_KUEUE), "restart"], env=env, check=True, capture_output=True)


def green_queue(
    kube_api,
    namespace: str,
    *,
    cpu: str = "4",
    checks: tuple[str, ...] = (),
    name: str | None = None,
) -> str:
    """ResourceFlavor + ClusterQueue (with ``checks``) + LocalQueue; the LocalQueue's name."""
    from kubernetes import client

    api = client.CustomObjectsApi(kube_api)
    name = name or f"cq-{namespace}"
    group, version = KUEUE
    flavor = {"apiVersion": f"{group}/{version}", "kind": "ResourceFlavor"}
    try:
        api.create_cluster_custom_object(
            group, version, "resourceflavors", {**flavor, "metadata": {"name": "default"}}
        )
    except client.exceptions.ApiException as exc:
        if exc.status != 409:
            raise
    queue_spec: dict = {
        "namespaceSelector": {},
        "resourceGroups": [
            {
                "coveredResources": ["cpu", "memory"],
                "flavors": [
                    {
                        "name": "default",
                        "resources": [
                            {"name": "cpu", "nominalQuota": cpu},
                            {"name": "memory", "nominalQuota": "64Gi"},
                        ],
                    }
                ],
            }
        ],
    }
    if checks:
        queue_spec["admissionChecksStrategy"] = {
            "admissionChecks": [{"name": check} for check in checks]
        }
    api.create_cluster_custom_object(
        group,
        version,
        "clusterqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "ClusterQueue",
            "metadata": {"name": name},
            "spec": queue_spec,
        },
    )
    api.create_namespaced_custom_object(
        group,
        version,
        namespace,
        "localqueues",
        {
            "apiVersion": f"{group}/{version}",
            "kind": "LocalQueue",
            "metadata": {"name": "green", "namespace": namespace},
            "spec": {"clusterQueue": name},
        },
    )
    return "green"


def delete_cluster_queue(kube_api, name: str) -> None:
    from kubernetes import client

    api = client.CustomObjectsApi(kube_api)
    try:
        api.delete_cluster_custom_object(*KUEUE, "clusterqueues", name)
    except client.exceptions.ApiException as exc:
        if exc.status != 404:
            raise


def queued_job(name: str, queue: str, *, cpu: str = "1", completions: int | None = None) -> dict:
    """A batch/v1 Job submitted to ``queue``, created unsuspended (Kueue must suspend it);
    pods kept off every real node (no node runs here)."""
    spec: dict = {
        "suspend": False,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {"carbonaware.io/test-tier": "fake-kubelet"},
                "containers": [
                    {
                        "name": "work",
                        "image": "busybox",
                        "command": ["true"],
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                    }
                ],
            }
        },
    }
    if completions is not None:
        spec.update(completions=completions, parallelism=completions, completionMode="Indexed")
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue}},
        "spec": spec,
    }
