"""A real node runs a pod from a locally built image: the Job completes, its line is in the
pod log, and the container's exit code reaches the API.

The image is built by Docker from the local base image, copied into the node without any
registry (`hack/node.sh load-image` for the local cluster, `kind load docker-image` for a kind
cluster) and run with imagePullPolicy Never.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from cluster_fixtures import CLUSTER_DIR, Cluster, wait_for
from docker_fixtures import BASE_IMAGE

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "carbonaware-e2e/hello:local"
JOB_TIMEOUT_S = 120
HELLO_PY = """\
import os, socket, sys
print(f"hello from {socket.gethostname()}: {os.environ['TOKEN']}", flush=True)
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
"""


def load_into_node(cluster: Cluster, image: str) -> None:
    """Copy a local Docker image into the cluster's node, with no registry in between."""
    if cluster.log_dir is not None:  # the local cluster from hack/local-cluster
        command = ["bash", str(REPO_ROOT / "hack" / "node.sh"), "load-image", image]
        env = {**os.environ, "CLUSTER_DIR": str(CLUSTER_DIR)}
    else:
        context = subprocess.run(
            ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "config", "current-context"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        if not (context.startswith("kind-") and shutil.which("kind")):
            pytest.skip(f"cannot copy a local image into the cluster of context {context!r}")
        command = ["kind", "load", "docker-image", image, "--name", context.removeprefix("kind-")]
        env = dict(os.environ)
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, f"loading {image} into the node failed:\n{result.stderr}"


@pytest.fixture(scope="module")
def hello_image(cluster: Cluster, docker_build, tmp_path_factory) -> str:
    context = tmp_path_factory.mktemp("hello-image")
    (context / "hello.py").write_text(HELLO_PY)
    (context / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nCOPY hello.py /hello.py\nCMD ["python3", "/hello.py"]\n'
    )
    docker_build(context, IMAGE)
    load_into_node(cluster, IMAGE)
    return IMAGE


def run_job(kube_api, namespace: str, image: str, token: str, exit_code: int):
    """Create a one-pod Job and wait until it is Complete or Failed; returns (job, pod)."""
    from kubernetes import client

    batch = client.BatchV1Api(kube_api)
    core = client.CoreV1Api(kube_api)
    container = client.V1Container(
        name="hello",
        image=image,
        image_pull_policy="Never",
        env=[
            client.V1EnvVar(name="TOKEN", value=token),
            client.V1EnvVar(name="EXIT_CODE", value=str(exit_code)),
        ],
    )
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="hello"),
        spec=client.V1JobSpec(
            backoff_limit=0,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[container])
            ),
        ),
    )
    batch.create_namespaced_job(namespace, job)

    def finished():
        status = batch.read_namespaced_job("hello", namespace).status
        done = [
            c.type
            for c in status.conditions or []
            if c.type in ("Complete", "Failed") and c.status == "True"
        ]
        return done[0] if done else None

    outcome = wait_for(finished, JOB_TIMEOUT_S, "the Job to finish")
    pods = core.list_namespaced_pod(namespace, label_selector="job-name=hello").items
    assert len(pods) == 1, [p.metadata.name for p in pods]
    return outcome, pods[0]


def terminated_exit_code(pod) -> int:
    (status,) = pod.status.container_statuses
    assert status.state.terminated is not None, status.state
    return status.state.terminated.exit_code


def test_job_from_a_local_image_completes_and_logs_its_line(
    kube_api, namespace: str, hello_image: str
) -> None:
    from kubernetes import client

    token = uuid.uuid4().hex
    outcome, pod = run_job(kube_api, namespace, hello_image, token, exit_code=0)

    assert outcome == "Complete"
    assert terminated_exit_code(pod) == 0
    log = client.CoreV1Api(kube_api).read_namespaced_pod_log(pod.metadata.name, namespace)
    assert log.strip() == f"hello from {pod.metadata.name}: {token}"


def test_a_failing_container_fails_the_job_with_its_exit_code(
    kube_api, namespace: str, hello_image: str
) -> None:
    outcome, pod = run_job(kube_api, namespace, hello_image, uuid.uuid4().hex, exit_code=3)

    assert outcome == "Failed"
    assert terminated_exit_code(pod) == 3
