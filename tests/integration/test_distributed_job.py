"""Training across pods on a real control plane: the Indexed Job and the rendezvous Service
the pure builders make are accepted, and the Job controller labels its pods so that the
Service selects rank 0's pod alone.

No node here (tests marked e2e train on one): the pods are created and stay Pending, which is
enough to read what Kubernetes gives each rank.
"""

from __future__ import annotations

import pytest
from carbonaware.kube import builders
from carbonaware.kube import builders_distributed as distributed
from carbonaware.kube.models import parse_spec
from cluster_fixtures import wait_for

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
