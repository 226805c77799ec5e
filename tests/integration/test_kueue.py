"""The carbon gate on the real control plane with real Kueue (hack/local-kueue).

No node runs here: Kueue admits a Workload and unsuspends its Job without one, which is what
these tests watch; the pods themselves never run (they are kept off every node), so the
accounting at the end of a run is not tested here. The grid is the fault server's
Electricity Maps look-alike on loopback (tests/plugins/faultkit.py), switched by the test.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from cluster_fixtures import wait_for
from faultkit import FaultServer, OperatorProcess, create_em_secret, finish_pod, install_crds
from kubernetes.client.exceptions import ApiException
from kueue_fixtures import KUEUE, delete_cluster_queue, green_queue, queued_job, restart_kueue

pytestmark = pytest.mark.integration

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
GATE = "carbonaware.io/carbon-gate"


@pytest.fixture(scope="module")
def crds(kubectl, kubeconfig):
    install_crds(kubectl, kubeconfig, MANIFESTS)
    subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(kubeconfig),
            "apply",
            "-f",
            str(MANIFESTS / "carbonpolicy.yaml"),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            str(kubeconfig),
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/carbonpolicies.carbonaware.io",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def grid():
    server = FaultServer().start()
    yield server
    server.stop()


class Gate:
    """A green queue in ``namespace``: CarbonPolicy + AdmissionCheck + ClusterQueue +
    LocalQueue, the operator watching the namespace; all removed afterwards."""

    def __init__(self, kube_api, namespace, grid, kubeconfig, tmp_path, **policy):
        from kubernetes import client

        self.api = client.CustomObjectsApi(kube_api)
        self.batch = client.BatchV1Api(kube_api)
        self.namespace = namespace
        self.zone = f"Z{uuid.uuid4().hex[:6].upper()}"
        self.name = f"carbon-{namespace}"
        grid.set(self.zone, intensity=policy.pop("intensity", 500.0))
        cpu = policy.pop("cpu", "100")
        cache_ttl = policy.pop("cache_ttl", "2s")
        create_em_secret(kube_api, namespace)
        spec = {
            "zone": self.zone,
            "provider": {
                "name": "electricitymaps",
                "baseUrl": grid.base_url,
                "secretRef": {"name": "em"},
            },
            "secretNamespace": namespace,
            "thresholdGramsPerKWh": 100,
            "maxDelay": "6h",
            "pollInterval": "2s",
            **policy,
        }
        self.api.create_cluster_custom_object(
            "carbonaware.io",
            "v1alpha1",
            "carbonpolicies",
            {
                "apiVersion": "carbonaware.io/v1alpha1",
                "kind": "CarbonPolicy",
                "metadata": {"name": self.name},
                "spec": spec,
            },
        )
        group, version = KUEUE
        self.api.create_cluster_custom_object(
            group,
            version,
            "admissionchecks",
            {
                "apiVersion": f"{group}/{version}",
                "kind": "AdmissionCheck",
                "metadata": {"name": self.name},
                "spec": {
                    "controllerName": GATE,
                    "parameters": {
                        "apiGroup": "carbonaware.io",
                        "kind": "CarbonPolicy",
                        "name": self.name,
                    },
                },
            },
        )
        self.queue = green_queue(kube_api, namespace, cpu=cpu, checks=(self.name,), name=self.name)
        self.operator = OperatorProcess(
            kubeconfig,
            (namespace,),
            tmp_path / "operator.log",
            extra_env={"CARBONAWARE_CACHE_TTL": cache_ttl},
        ).start()

    def close(self) -> None:
        self.operator.stop()
        delete_cluster_queue(self.api.api_client, self.name)
        for plural, group, version in (
            ("admissionchecks", *KUEUE),
            ("carbonpolicies", "carbonaware.io", "v1alpha1"),
        ):
            with contextlib.suppress(ApiException):  # already gone
                self.api.delete_cluster_custom_object(group, version, plural, self.name)

    def submit(self, job: dict, annotations: dict | None = None) -> str:
        if annotations:
            job["metadata"]["annotations"] = annotations
        self.batch.create_namespaced_job(self.namespace, job)
        return job["metadata"]["name"]

    def suspended(self, name: str) -> bool:
        return bool(self.batch.read_namespaced_job(name, self.namespace).spec.suspend)

    def workload(self, job_name: str) -> dict | None:
        items = self.api.list_namespaced_custom_object(*KUEUE, self.namespace, "workloads")["items"]
        for item in items:
            owners = item["metadata"].get("ownerReferences") or []
            if any(o["name"] == job_name for o in owners):
                return item
        return None

    def check(self, job_name: str) -> dict | None:
        workload = self.workload(job_name) or {}
        for state in (workload.get("status") or {}).get("admissionChecks") or []:
            if state["name"] == self.name:
                return state
        return None

    def gate_message(self, job_name: str) -> str | None:
        state = self.check(job_name)
        message = (state or {}).get("message") or ""
        return message if message.startswith("carbon gate") else None


@pytest.fixture
def gate_factory(kube_api, namespace, grid, kubeconfig, tmp_path, crds, kueue):
    made = []

    def make(**policy) -> Gate:
        made.append(Gate(kube_api, namespace, grid, kubeconfig, tmp_path, **policy))
        return made[-1]

    yield make
    for gate in made:
        gate.close()


def test_kueue_suspends_a_queued_job_at_creation(kube_api, namespace, kueue):
    from kubernetes import client

    queue = green_queue(kube_api, namespace, name=f"plain-{namespace}")
    try:
        batch = client.BatchV1Api(kube_api)
        created = batch.create_namespaced_job(namespace, queued_job("queued", queue, cpu="100"))
        # Kueue's mutating webhook, served from this machine, suspended it on the way in.
        assert created.spec.suspend is True
        api = client.CustomObjectsApi(kube_api)
        wait_for(
            lambda: api.list_namespaced_custom_object(*KUEUE, namespace, "workloads")["items"],
            60,
            "Kueue to create the Job's Workload",
        )
    finally:
        delete_cluster_queue(kube_api, f"plain-{namespace}")


def test_jobs_wait_while_dirty_and_start_when_clean(gate_factory, grid):
    gate = gate_factory()
    plain = gate.submit(queued_job("plain", gate.queue))
    indexed = gate.submit(queued_job("indexed", gate.queue, completions=3))
    for job in (plain, indexed):
        message = wait_for(lambda j=job: gate.gate_message(j), 60, f"the gate's message on {job}")
        assert "intensity 500 g/kWh above threshold 100" in message
    time.sleep(4)  # two more polls: still dirty, still waiting
    assert gate.suspended(plain) and gate.suspended(indexed)
    assert gate.check(plain)["state"] in ("Pending", "Retry")

    grid.set(gate.zone, intensity=50)
    for job in (plain, indexed):
        wait_for(lambda j=job: not gate.suspended(j), 60, f"Kueue to unsuspend {job}")
        state = gate.check(job)
        assert state["state"] == "Ready"
        assert "intensity 50 g/kWh at or below threshold 100" in state["message"]
    from kubernetes import client

    cm = client.CoreV1Api(gate.api.api_client).read_namespaced_config_map(
        f"{gate.workload(plain)['metadata']['name']}-carbon-log", gate.namespace
    )
    events = client.CoreV1Api(gate.api.api_client).list_namespaced_event(gate.namespace).items
    reasons = {(e.involved_object.kind, e.reason) for e in events}
    assert {("Workload", "CarbonGateWaiting"), ("Workload", "CarbonGateOpen")} <= reasons
    assert cm.metadata.owner_references[0].kind == "Workload"
    assert ",500" in cm.data["carbon_log.csv"] and ",50" in cm.data["carbon_log.csv"]

    # The test plays the kubelet (no node here): the plain Job's pod succeeds, the Job
    # completes, Kueue finishes the Workload, and the gate writes its accounting.
    wait_for(
        lambda: finish_pod(gate.api.api_client, gate.namespace, plain, 0, ""),
        60,
        "the Job's pod",
    )
    annotations = wait_for(
        lambda: (
            (gate.workload(plain)["metadata"].get("annotations") or {}).get(
                "carbonaware.io/emissions-grams"
            )
            and gate.workload(plain)["metadata"]["annotations"]
        ),
        90,
        "the accounting on the finished Workload",
    )
    assert float(annotations["carbonaware.io/energy-kwh"]) > 0
    assert annotations["carbonaware.io/energy-method"].startswith("estimated: 150 W assumed")
    assert float(annotations["carbonaware.io/saved-grams"]) >= 0  # ran at 50, not at 500
    events = client.CoreV1Api(gate.api.api_client).list_namespaced_event(gate.namespace).items
    assert any(e.reason == "CarbonAccounted" for e in events)


def test_the_deadline_opens_the_gate_on_a_grid_that_never_cleans(gate_factory):
    gate = gate_factory(maxDelay="15s", intensity=900.0)
    started = time.monotonic()
    job = gate.submit(queued_job("late", gate.queue))
    wait_for(lambda: gate.gate_message(job), 60, "the gate's message")
    assert gate.suspended(job)
    wait_for(lambda: not gate.suspended(job), 90, "the deadline to open the gate")
    assert time.monotonic() - started >= 12  # not before the deadline (creation + 15 s)
    assert "deadline reached" in gate.check(job)["message"]


def test_a_waiting_workload_holds_no_quota(gate_factory, grid):
    gate = gate_factory(cpu="1")
    waiting = gate.submit(queued_job("waiting", gate.queue, cpu="1"))
    wait_for(lambda: gate.gate_message(waiting), 60, "the first Workload to wait")
    # The second needs the whole ClusterQueue's quota; its gate opens at once (no delay).
    urgent = gate.submit(
        queued_job("urgent", gate.queue, cpu="1"), {"carbonaware.io/max-delay": "0s"}
    )
    wait_for(lambda: not gate.suspended(urgent), 90, "the second Workload to be admitted")
    assert gate.suspended(waiting)
    assert "above threshold" in gate.gate_message(waiting)
    held = gate.workload(waiting)
    assert held["spec"]["active"] is False  # out of the queue: no quota while it waits
    reserved = {c["type"]: c["status"] for c in held["status"].get("conditions") or []}
    assert reserved.get("QuotaReserved") != "True"
    # And it still starts once the grid is clean (when the quota is free again).
    gate.batch.delete_namespaced_job(urgent, gate.namespace, propagation_policy="Background")
    grid.set(gate.zone, intensity=50)
    wait_for(lambda: not gate.suspended(waiting), 90, "the first Workload to be admitted")


@pytest.mark.slow
def test_fifty_waiting_workloads_make_one_request_per_interval(gate_factory, grid):
    # The shared cache keeps a reading for the poll interval, as CARBONAWARE_CACHE_TTL would
    # in production (30 s against a 5 min poll): one request per interval for the zone.
    gate = gate_factory(pollInterval="5s", cache_ttl="5s")
    names = [gate.submit(queued_job(f"w{i:02d}", gate.queue, cpu="10m")) for i in range(50)]
    wait_for(lambda: all(gate.gate_message(n) for n in names), 180, "all 50 Workloads to wait", 2)
    before = grid.count(gate.zone, "latest")
    time.sleep(20)
    made = grid.count(gate.zone, "latest") - before
    # One request per 5 s interval for the zone, not 50.
    assert 1 <= made <= 20 / 5 + 1, made


def test_an_operator_restart_resumes_the_wait_from_the_log(gate_factory):
    gate = gate_factory(maxDelay="25s", intensity=900.0)
    started = time.monotonic()
    job = gate.submit(queued_job("resumed", gate.queue))
    wait_for(lambda: gate.gate_message(job), 60, "the gate's message")
    gate.operator.kill()
    time.sleep(3)
    gate.operator.start()
    wait_for(lambda: not gate.suspended(job), 120, "the deadline to open the gate")
    # The deadline is creation + 25 s, whenever the operator restarted.
    assert time.monotonic() - started >= 22
    assert "deadline reached" in gate.check(job)["message"]


def test_a_kueue_restart_mid_wait_changes_nothing(gate_factory, grid):
    gate = gate_factory()
    job = gate.submit(queued_job("steady", gate.queue))
    wait_for(lambda: gate.gate_message(job), 60, "the gate's message")
    restart_kueue()
    time.sleep(4)  # two polls with the restarted Kueue: still waiting, still held
    assert gate.suspended(job)
    assert gate.workload(job)["spec"]["active"] is False
    grid.set(gate.zone, intensity=50)
    wait_for(lambda: not gate.suspended(job), 90, "Kueue to unsuspend the Job")
    assert gate.check(job)["state"] == "Ready"


def test_a_carbonawarejob_with_a_kueue_queue_label_is_rejected(kube_api, namespace, crds):
    from kubernetes import client

    body = {
        "apiVersion": "carbonaware.io/v1alpha1",
        "kind": "CarbonAwareJob",
        "metadata": {"name": "queued"},
        "spec": {
            "zone": "GB",
            "jobTemplate": {
                "metadata": {"labels": {"kueue.x-k8s.io/queue-name": "green"}},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            },
        },
    }
    with pytest.raises(ApiException) as raised:
        client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
            "carbonaware.io", "v1alpha1", namespace, "carbonawarejobs", body
        )
    assert raised.value.status == 422
    assert "must not carry kueue.x-k8s.io/queue-name" in raised.value.body
