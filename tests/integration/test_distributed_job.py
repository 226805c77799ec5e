"""Training across pods on a real control plane: the Indexed Job and the rendezvous Service
the pure builders make are accepted, and the Job controller labels its pods so that the
Service selects rank 0's pod alone; the operator (a subprocess, faultkit.OperatorProcess)
turns `spec.trainer.workers: 2` into them, adds up the ranks' real reports, and fails a spec
whose checkpoint claim the ranks cannot share.

No node here (tests marked e2e train on one): the pods are created and stay Pending, which is
enough to read what Kubernetes gives each rank.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from carbonaware.kube import builders
from carbonaware.kube import builders_distributed as distributed
from carbonaware.kube.models import parse_spec
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import OperatorProcess, release, terminate_pod
from jobapi import create, get, wait_phase
from trainer_ranks import finish_ranks, start_ranks

pytestmark = pytest.mark.integration

UID = "5d0c8c1e-2b7f-4a57-9a35-6b1f0c2d9e41"


def test_the_indexed_job_gives_each_rank_its_index_and_the_service_selects_rank_0(
    kube_api, namespace: str
) -> None:
    from kubernetes import client

    spec = parse_spec({"zone": "DE", "trainer": {"workers": 3, "epochs": 1}})
    job = distributed.build_distributed_job_spec(
        name="wide", namespace=namespace, uid=UID, spec=spec, default_trainer_image="t:dev"
    )
    service = distributed.build_rendezvous_service(name="wide", namespace=namespace, uid=UID)
    # The owner (a CarbonAwareJob) does not exist here: the garbage collector would delete
    # objects owned by a missing owner at once.
    for obj in (job, service):
        obj["metadata"].pop("ownerReferences")
    core, batch = client.CoreV1Api(kube_api), client.BatchV1Api(kube_api)
    batch.create_namespaced_job(namespace, job)
    core.create_namespaced_service(namespace, service)

    job_label = f"{distributed.JOB_NAME_LABEL}={builders.job_name('wide', UID)}"

    def three_pods():
        pods = core.list_namespaced_pod(namespace, label_selector=job_label).items
        return pods if len(pods) == 3 else None

    pods = wait_for(three_pods, 60, "the Job controller's three pods")
    indexes = sorted(pod.metadata.labels[distributed.COMPLETION_INDEX_LABEL] for pod in pods)
    assert indexes == ["0", "1", "2"]
    selector = ",".join(f"{key}={value}" for key, value in service["spec"]["selector"].items())
    selected = core.list_namespaced_pod(namespace, label_selector=selector).items
    assert [pod.metadata.labels[distributed.COMPLETION_INDEX_LABEL] for pod in selected] == ["0"]
    for pod in pods:
        env = {item.name: item for item in pod.spec.containers[0].env}
        # Kubernetes gives each pod its rank; the rendezvous address is the Service's name.
        index_source = env["JOB_COMPLETION_INDEX"].value_from.field_ref.field_path
        assert distributed.COMPLETION_INDEX_LABEL in index_source
        assert env["WORLD_SIZE"].value == "3"
        assert env["MASTER_ADDR"].value == service["metadata"]["name"]
    stored = core.read_namespaced_service(service["metadata"]["name"], namespace)
    assert stored.spec.cluster_ip == "None" and stored.spec.publish_not_ready_addresses


def test_the_rendezvous_follows_a_placements_fallback_job(kube_api, namespace: str) -> None:
    from carbonaware.kube.api import KubeApi
    from kubernetes import client

    api = KubeApi(kube_api)

    def service(job: str) -> dict:
        body = distributed.build_rendezvous_service(
            name="wide", namespace=namespace, uid=UID, job=job
        )
        body["metadata"].pop("ownerReferences")  # no CarbonAwareJob here (see above)
        return body

    assert api.ensure_service(service("wide-first")) is True
    # The first placement's pods never scheduled: its fallback Job's rank 0 is the one to meet.
    assert api.ensure_service(service("wide-first-p1")) is False
    stored = client.CoreV1Api(kube_api).read_namespaced_service(
        distributed.rendezvous_service_name("wide", UID), namespace
    )
    assert stored.spec.selector[distributed.JOB_NAME_LABEL] == "wide-first-p1"
    assert stored.spec.selector[distributed.COMPLETION_INDEX_LABEL] == "0"


# --- the operator ------------------------------------------------------------------------------

# The bundled demo trace at ~120 g/kWh, under the threshold: the job starts at once.
RUN_NOW = {
    "zone": "SYNTHETIC",
    "provider": {"name": "replay", "speed": 2400, "start": "26h"},
    "thresholdGramsPerKWh": 150,
    "pollInterval": "1s",
}


@pytest.fixture
def operator_ns(crd, kube_api, kubeconfig: Path, tmp_path: Path) -> Iterator[str]:
    with throwaway_namespace(kube_api, "ranks") as ns:
        operator = OperatorProcess(kubeconfig, (ns,), tmp_path / "operator.log").start()
        try:
            yield ns
        finally:
            operator.stop()
            release(kube_api, ns)


@pytest.mark.slow
def test_two_workers_run_as_an_indexed_job_and_their_real_reports_add_up(
    operator_ns: str, kube_api, tmp_path: Path, mnist_dir: Path
) -> None:
    from kubernetes import client

    ns, core = operator_ns, client.CoreV1Api(kube_api)
    # What the two ranks will report: the real trainer, two ranks joined over loopback.
    args = ["--data-dir", str(mnist_dir), "--max-samples", "256", "--eval-samples", "100",
            "--batch-size", "64", "--epochs", "1", "--log-every", "0"]  # fmt: skip
    ranks = start_ranks(args, tmp_path)
    create(kube_api, ns, "wide", {**RUN_NOW, "trainer": off_node({"epochs": 1, "workers": 2})})
    running = wait_phase(kube_api, ns, "wide", "Running", timeout=60)
    job = client.BatchV1Api(kube_api).read_namespaced_job(running["jobName"], ns)
    assert job.spec.completion_mode == "Indexed"
    assert job.spec.completions == 2 and job.spec.parallelism == 2
    uid = get(kube_api, ns, "wide")["metadata"]["uid"]
    service = core.read_namespaced_service(distributed.rendezvous_service_name("wide", uid), ns)
    assert service.spec.cluster_ip == "None"
    assert service.spec.selector[distributed.JOB_NAME_LABEL] == running["jobName"]

    def two_pods():
        selector = f"{distributed.JOB_NAME_LABEL}={running['jobName']}"
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        return pods if len(pods) == 2 else None

    pods = wait_for(two_pods, 60, "the Indexed Job's two pods")
    finals = [final for _, final, _ in finish_ranks(ranks)]
    by_rank = {final["rank"]: final for final in finals}
    for pod in pods:  # each pod terminates with its own rank's final line
        rank = int(pod.metadata.labels[distributed.COMPLETION_INDEX_LABEL])
        terminate_pod(kube_api, pod, 0, json.dumps(by_rank[rank]))
    done = wait_phase(kube_api, ns, "wide", "Succeeded", timeout=90)
    trainer = done["trainer"]
    assert trainer["ranksReported"] == 2
    assert trainer["energyKWh"] == pytest.approx(sum(f["energy_kwh"] for f in finals))
    assert trainer["durationSeconds"] == max(f["wall_seconds"] for f in finals)
    assert trainer["accuracy"] == by_rank[0]["accuracy"]


def test_two_interruptible_workers_on_a_read_write_once_claim_fail_with_why(
    operator_ns: str, kube_api
) -> None:
    from kubernetes import client

    ns = operator_ns
    client.CoreV1Api(kube_api).create_namespaced_persistent_volume_claim(
        ns,
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "ckpt"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    trainer = {"epochs": 1, "workers": 2, "checkpointVolume": {"claimName": "ckpt"}}
    create(kube_api, ns, "rwo", {**RUN_NOW, "interruptible": True, "trainer": off_node(trainer)})
    failed = wait_phase(kube_api, ns, "rwo", "Failed", timeout=60)
    assert "ReadWriteMany" in failed["message"] and "ckpt" in failed["message"]
    assert "ReadWriteOnce" in failed["message"]
    assert failed["conditions"][-1]["reason"] == "InvalidSpec"
    assert not client.BatchV1Api(kube_api).list_namespaced_job(ns).items  # nothing started
