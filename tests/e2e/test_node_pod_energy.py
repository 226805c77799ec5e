"""The kubelet path on a real node: a Job of 2 parallel pods, each burning a known CPU time.

Each pod burns 20 s of CPU time (time.process_time, its own count) and prints it as JSON,
then idles a few seconds so a last sample sees the whole burn. The operator's sampler
(kube/pod_usage.py) reads the node's Summary API through the apiserver's node proxy while
the pods run; the core-seconds it keeps must be within 10 % of what the pods report, and
the energy must be the power model's (core/pod_energy.py) for those figures.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from carbonaware.core.pod_energy import JOULES_PER_KWH, CoreWatts, PowerModel, kubelet_figure
from carbonaware.kube.pod_usage import PodUsageSampler, UsageTracker
from cluster_fixtures import Cluster
from docker_fixtures import BASE_IMAGE
from test_node import load_into_node

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.slow]

BURN_CORE_SECONDS = 20.0
BURN = f"""\
import json, time
start = time.process_time()
while time.process_time() - start < {BURN_CORE_SECONDS}:
    sum(range(1000))
print(json.dumps({{"cpu_seconds": time.process_time()}}), flush=True)
time.sleep(6)
"""
JOB_TIMEOUT_S = 240


def test_two_parallel_pods_cpu_time_from_the_kubelet_matches_their_own(
    kube_api, namespace: str, cluster: Cluster, docker_engine
) -> None:
    from kubernetes import client

    load_into_node(cluster, BASE_IMAGE)
    batch, core = client.BatchV1Api(kube_api), client.CoreV1Api(kube_api)
    container = client.V1Container(
        name="burn",
        image=BASE_IMAGE,
        image_pull_policy="Never",
        command=["python3", "-c", BURN],
        resources=client.V1ResourceRequirements(requests={"cpu": "500m"}),
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="burn"),
        spec=client.V1JobSpec(
            parallelism=2,
            completions=2,
            completion_mode="Indexed",
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[container])
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)
    sampler, tracker = PodUsageSampler(core), UsageTracker()
    deadline = time.monotonic() + JOB_TIMEOUT_S

    def pods() -> list[dict]:
        found = core.list_namespaced_pod(namespace, label_selector="job-name=burn").items
        return [kube_api.sanitize_for_serialization(p) for p in found]

    while True:
        current = pods()
        sampler.sample(tracker, current, datetime.now(UTC))
        phases = [p["status"].get("phase") for p in current]
        if len(phases) == 2 and all(p in ("Succeeded", "Failed") for p in phases):
            break
        assert time.monotonic() < deadline, f"the Job did not finish: {phases}"
        time.sleep(1)
    assert phases == ["Succeeded", "Succeeded"], phases
    assert tracker.error is None, tracker.error

    own = 0.0
    for p in current:
        log = core.read_namespaced_pod_log(p["metadata"]["name"], namespace)
        own += json.loads(log.strip().splitlines()[-1])["cpu_seconds"]
    usages = tracker.usages()
    sampled = sum(u.core_seconds for u in usages)
    assert len(usages) == 2
    assert sampled == pytest.approx(own, rel=0.10), (sampled, own)

    model = PowerModel(CoreWatts(1.0, 4.0), memory_w_per_gb=0.0, name="test")
    figure = kubelet_figure(usages, model)
    held = sum(max(0.5 * u.wall_seconds, u.core_seconds) for u in usages)
    assert figure.kwh * JOULES_PER_KWH == pytest.approx(1.0 * held + 3.0 * sampled)
    assert figure.label.startswith(f"estimated:kubelet-cpu (2 pods, {sampled:.1f} core-s)")
