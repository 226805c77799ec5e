"""apiserver conflicts and outages, on the real control plane.

- An apiserver restart mid-run (``hack/local-cluster restart kube-apiserver --down-for``):
  the operator process (``faultkit.OperatorProcess``) keeps running, its jobs still start
  with exactly one Job each, and a CarbonAwareJob created after the restart is handled — the
  watch stream reconnected; a live process that no longer sees new objects (a zombie) fails.
  The operator retries failed API requests every 0.2 s so that the outage outlasts a finite list,
  as a two-minute outage outlasts the shipped ones: kopf used to end a watch whose retries
  ran out, and the process lived on as exactly that zombie.
- Conflicts: a second client keeps rewriting a waiting job's log ConfigMap (at its
  resourceVersion, like a second replica or a person with ``kubectl edit``) and its status,
  while the operator appends a reading every second. The operator's resourceVersion-guarded
  replace of the log gets real HTTP 409s (counted by the apiserver's own metrics); it merges
  the stored copy and writes again, so no reading is lost — neither its own nor the other
  writer's — and the job goes on to Running and Succeeded. Its status writes (kopf merge
  patches, no resourceVersion) never get a 409.

Readings come from the loopback Electricity Maps look-alike (``faultkit.FaultServer``); the
grid drops below the threshold when the test says so. Pods are kept off any node (off_node);
where a Job must finish, the test plays the kubelet through the pod status subresource.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cluster_fixtures import (
    CLUSTER_DIR,
    LOCAL_CLUSTER,
    Cluster,
    off_node,
    throwaway_namespace,
    wait_for,
)
from faultkit import (
    TRAINER_RESULT,
    FaultServer,
    OperatorProcess,
    batch_jobs,
    finish_pod,
    release,
)
from jobapi import GROUP, PLURAL, VERSION

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DIRTY, CLEAN, THRESHOLD = 300.0, 50.0, 100.0
DOWN_FOR_S = 5  # the apiserver stays down this long before it starts again
SHORT_API_BACKOFFS = {"CARBONAWARE_API_BACKOFFS": "0.2"}  # spent in 0.2 s: the outage outlasts it


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def operator_ns(crd, kube_api, kubeconfig: Path, tmp_path: Path, fault_server: FaultServer):
    """A namespace with the provider's Secret, and the operator (a subprocess) watching it."""
    from kubernetes import client

    with throwaway_namespace(kube_api, "outage") as ns:
        client.CoreV1Api(kube_api).create_namespaced_secret(
            ns, client.V1Secret(metadata=client.V1ObjectMeta(name="em"), string_data={"token": "t"})
        )
        operator = OperatorProcess(
            kubeconfig, (ns,), tmp_path / "operator.log", extra_env=SHORT_API_BACKOFFS
        ).start()
        try:
            yield operator, ns
        finally:
            operator.stop()
            release(kube_api, ns)


def create(kube_api, ns: str, name: str, zone: str, base_url: str) -> None:
    from kubernetes import client

    spec = {
        "zone": zone,
        "provider": {"name": "electricitymaps", "baseUrl": base_url, "secretRef": {"name": "em"}},
        "thresholdGramsPerKWh": THRESHOLD,
        "maxDelay": "1h",
        "pollInterval": "1s",
        "power": {"watts": 100, "pue": 1.2},
        "trainer": off_node(),
    }
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "CarbonAwareJob"}
    client.CustomObjectsApi(kube_api).create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, {**body, "metadata": {"name": name}, "spec": spec}
    )


def job_names(kube_api, ns: str) -> dict[str, list[str]]:
    """CarbonAwareJob name -> the names of its batch Jobs."""
    found = batch_jobs(kube_api, ns)
    return {owner: [job.metadata.name for job in jobs] for owner, jobs in found.items()}


def statuses(kube_api, ns: str) -> dict[str, dict]:
    from kubernetes import client

    items = client.CustomObjectsApi(kube_api).list_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL
    )["items"]
    return {item["metadata"]["name"]: item.get("status") or {} for item in items}


def all_in_phase(kube_api, ns: str, names: list[str], phase: str) -> bool:
    found = statuses(kube_api, ns)
    return all(found.get(name, {}).get("phase") == phase for name in names)


def apiserver_requests(kube_api, resource: str, verb: str, code: str) -> float:
    """apiserver_request_total for these labels: the apiserver's own count of answers."""
    from prometheus_client.parser import text_string_to_metric_families

    method, url, headers, _, _ = kube_api.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response = kube_api.call_api(method, url, header_params=headers)
    response.read()
    assert response.status == 200, response.status
    total = 0.0
    for family in text_string_to_metric_families(response.data.decode()):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "apiserver_request_total" and (
                labels.get("resource"),
                labels.get("verb"),
                labels.get("code"),
            ) == (resource, verb, code):
                total += sample.value
    return total


def assert_no_traceback(operator: OperatorProcess) -> None:
    log = operator.log_text()
    assert "Traceback (most recent call last)" not in log, log[-6000:]


# --- an apiserver restart mid-run ----------------------------------------------------------------


def apiserver_pid() -> int:
    return json.loads((CLUSTER_DIR / "state.json").read_text())["processes"]["kube-apiserver"][
        "pid"
    ]


def local_cluster(*args: str, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LOCAL_CLUSTER), *args], capture_output=True, text=True, timeout=timeout_s
    )


def wait_controllers_recovered(kube_api) -> float:
    """Seconds until the controller-manager serves a new namespace again (its ServiceAccount).

    While the restarted apiserver starts it answers the controllers' requests with 403 (its
    RBAC caches are cold); their informers then back off for up to ~30 s. The tests that
    follow need namespaces with a default ServiceAccount, so this test leaves only then.
    """
    started = time.monotonic()
    with throwaway_namespace(kube_api, "outage-probe", ready_timeout_s=120):
        pass
    return time.monotonic() - started


def test_apiserver_restart_mid_run_is_survived_and_the_watch_reconnects(
    cluster: Cluster, operator_ns, kube_api, fault_server: FaultServer
) -> None:
    if cluster.log_dir is None:
        pytest.skip("restarting the apiserver needs the local cluster (hack/local-cluster)")
    operator, ns = operator_ns
    fault_server.set("Z-OUTAGE", intensity=DIRTY)
    fault_server.set("Z-CLEAN", intensity=CLEAN)
    waiting = [f"w{i}" for i in range(4)]
    for name in waiting:
        create(kube_api, ns, name, "Z-OUTAGE", fault_server.base_url)

    def all_waiting_with_readings() -> bool:
        found = statuses(kube_api, ns)
        return all(
            found.get(name, {}).get("phase") == "Waiting"
            and found[name].get("readingCount", 0) >= 2
            for name in waiting
        )

    wait_for(all_waiting_with_readings, 60, "the jobs to wait on the dirty grid")
    pid_before = apiserver_pid()
    try:
        restart = local_cluster("restart", "kube-apiserver", "--down-for", str(DOWN_FOR_S))
        assert restart.returncode == 0, restart.stderr
    finally:  # whatever happened, leave the apiserver running for the next tests
        if local_cluster("status").returncode != 0:
            local_cluster("restart", "kube-apiserver")
    assert apiserver_pid() != pid_before, "the apiserver was not restarted"
    print(restart.stderr.strip())
    try:
        assert_survived(kube_api, ns, operator, fault_server, waiting)
    finally:
        recovered_s = wait_controllers_recovered(kube_api)
        print(f"controller-manager serving new namespaces again {recovered_s:.1f} s later")


def assert_survived(
    kube_api, ns: str, operator: OperatorProcess, fault_server: FaultServer, waiting: list[str]
) -> None:
    """After the restart: old jobs start, a new one is seen, the operator is the same."""
    restarted = time.monotonic()
    # Only a live watch stream tells the operator about an object created now.
    create(kube_api, ns, "after-restart", "Z-CLEAN", fault_server.base_url)
    fault_server.set("Z-OUTAGE", intensity=CLEAN)  # the waiting jobs may start now
    everyone = [*waiting, "after-restart"]
    # Generous: the controllers and the apiserver's caches take a while to settle.
    wait_for(lambda: all_in_phase(kube_api, ns, everyone, "Running"), 120, "every job to run")
    print(f"every job Running {time.monotonic() - restarted:.1f} s after the apiserver was ready")

    found, spawned = statuses(kube_api, ns), job_names(kube_api, ns)
    for name in everyone:
        assert spawned.get(name) == [found[name]["jobName"]], (name, spawned.get(name))
        assert "threshold" in found[name]["decision"]["reason"], found[name]["decision"]
    assert operator.alive() and operator.starts == 1, "the operator exited or was restarted"
    assert operator.healthy(), "the operator's liveness endpoint stopped answering"
    log = operator.log_text()
    # The outage reached the operator: its ticks failed while the apiserver was away, were
    # reported on one line each, and were retried.
    assert "the Kubernetes API is unavailable" in log, log[-6000:]
    assert_no_traceback(operator)


# --- conflicts -----------------------------------------------------------------------------------


class SecondWriter:
    """A real second client: rewrites the log ConfigMap and the job's status, each at the
    resourceVersion it read (so it never clobbers the operator: it gets the 409s itself)."""

    def __init__(self, kube_api, ns: str, job: str, log_name: str) -> None:
        self.kube_api, self.ns, self.job, self.log_name = kube_api, ns, job, log_name
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.seen: set[datetime] = set()  # readings found in the stored log (the operator's)
        self.added: set[datetime] = set()  # foreign readings this writer stored
        self.log_writes = self.status_writes = self.own_conflicts = 0
        self.errors: list[str] = []

    def run(self, what: str) -> None:
        from kubernetes.client.exceptions import ApiException

        step = self.touch_log if what == "log" else self.touch_status
        count = 0
        while not self.stop.is_set():
            count += 1
            try:
                step(count)
            except ApiException as exc:
                if exc.status != 409:
                    self.errors.append(f"{what}: HTTP {exc.status} {exc.reason}")
                with self.lock:
                    self.own_conflicts += 1
            self.stop.wait(0.15 if what == "log" else 0.4)

    def touch_log(self, count: int) -> None:
        from carbonaware.core.intensity_log import IntensityLog
        from carbonaware.core.model import Reading
        from kubernetes import client

        core = client.CoreV1Api(self.kube_api)
        stored = core.read_namespaced_config_map(self.log_name, self.ns)
        log = IntensityLog.from_csv(stored.data["carbon_log.csv"])
        with self.lock:
            self.seen.update(r.timestamp for r in log.readings if r.provider != "second-writer")
        foreign = None
        if count % 4 == 0:  # now and then a reading of its own, long before the job's
            foreign = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=count)
            log.append(Reading("Z-CONFLICT", foreign, 123.0, provider="second-writer"))
            stored.data["carbon_log.csv"] = log.to_csv()
        annotations = stored.metadata.annotations or {}
        stored.metadata.annotations = {**annotations, "test.carbonaware.io/touched": str(count)}
        core.replace_namespaced_config_map(self.log_name, self.ns, stored)
        with self.lock:
            self.log_writes += 1
            if foreign:
                self.added.add(foreign)

    def touch_status(self, count: int) -> None:
        from kubernetes import client

        api = client.CustomObjectsApi(self.kube_api)
        body = api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.job)
        status = body.get("status") or {}
        others = [c for c in status.get("conditions") or [] if c["type"] != "ExternalAudit"]
        audit = {"type": "ExternalAudit", "status": "True", "reason": "Touched"}
        body["status"] = {**status, "conditions": [*others, {**audit, "message": f"#{count}"}]}
        api.replace_namespaced_custom_object_status(GROUP, VERSION, self.ns, PLURAL, self.job, body)
        with self.lock:
            self.status_writes += 1


MERGED = re.compile(r"changed since we read it \(HTTP 409\): merged (\d+) reading")


def test_log_and_status_conflicts_are_retried_without_losing_a_reading(
    operator_ns, kube_api, fault_server: FaultServer
) -> None:
    from carbonaware.core.intensity_log import IntensityLog
    from kubernetes import client

    operator, ns = operator_ns
    core = client.CoreV1Api(kube_api)
    fault_server.set("Z-CONFLICT", intensity=DIRTY)
    create(kube_api, ns, "contested", "Z-CONFLICT", fault_server.base_url)

    def log_name() -> str | None:
        status = statuses(kube_api, ns).get("contested", {})
        return status.get("logConfigMap") if status.get("readingCount") else None

    # readingCount is in status only after the tick that wrote the log ConfigMap.
    name = wait_for(log_name, 60, "the operator to write the job's log")
    log_409s = apiserver_requests(kube_api, "configmaps", "PUT", "409")
    status_409s = apiserver_requests(kube_api, "carbonawarejobs", "PATCH", "409")

    writer = SecondWriter(kube_api, ns, "contested", str(name))
    threads = [threading.Thread(target=writer.run, args=(what,)) for what in ("log", "status")]
    for thread in threads:
        thread.start()
    reported: set[str] = set()  # every lastReadingTime the operator put in status

    def sample() -> dict:
        status = statuses(kube_api, ns)["contested"]
        if status.get("lastReadingTime"):
            reported.add(status["lastReadingTime"])
        return status

    try:
        start_count = sample().get("readingCount", 0)

        def conflicted_and_still_logging() -> bool:
            merges = len(MERGED.findall(operator.log_text()))
            return merges >= 5 and sample().get("readingCount", 0) >= start_count + 8

        wait_for(conflicted_and_still_logging, 60, "5 merged conflicts and 8 more readings")
        fault_server.set("Z-CONFLICT", intensity=CLEAN)
        wait_for(lambda: sample().get("phase") == "Running", 30, "the job to run")
        job_name = sample()["jobName"]
        wait_for(lambda: finish_pod(kube_api, ns, job_name, 0, TRAINER_RESULT), 30, "the Job's pod")
        wait_for(lambda: sample().get("phase") == "Succeeded", 60, "the job to succeed")
        time.sleep(1.0)  # let the writer race the operator's final log write once more
    finally:
        writer.stop.set()
        for thread in threads:
            thread.join(timeout=15)

    status = sample()
    stored = core.read_namespaced_config_map(str(name), ns)
    final = IntensityLog.from_csv(stored.data["carbon_log.csv"])
    stamps = [r.timestamp for r in final.readings]
    log_text = operator.log_text()
    merges = [int(n) for n in MERGED.findall(log_text)]
    print(
        f"second writer: {writer.log_writes} log and {writer.status_writes} status writes, "
        f"{writer.own_conflicts} own 409s; operator: {len(merges)} merged conflicts "
        f"({sum(merges)} readings taken in); final log {len(stamps)} readings"
    )
    assert writer.errors == [], writer.errors
    assert operator.alive() and operator.starts == 1, "the operator exited"
    assert_no_traceback(operator)
    # The conflicts were real: the apiserver refused the operator's stale replaces...
    assert apiserver_requests(kube_api, "configmaps", "PUT", "409") - log_409s >= 5
    assert len(merges) >= 5
    # ... and never its status writes, though the second client moved the version each time.
    assert writer.status_writes >= 5
    assert apiserver_requests(kube_api, "carbonawarejobs", "PATCH", "409") == status_409s

    # Nothing lost: every reading the operator stored or reported, and every reading the
    # second writer stored, is in the final log, once.
    assert stamps == sorted(set(stamps))
    assert writer.seen - set(stamps) == set()
    assert writer.added and writer.added - set(stamps) == set()
    reported_times = {datetime.fromisoformat(t.replace("Z", "+00:00")) for t in reported}
    assert reported_times - set(stamps) == set(), sorted(reported_times - set(stamps))
    assert status["readingCount"] <= len(stamps)

    # And the job went on: one Job, Succeeded, its accounting and the log's final metadata.
    assert job_names(kube_api, ns) == {"contested": [status["jobName"]]}
    assert status["phase"] == "Succeeded" and status["trainer"]["accuracy"] == 0.97
    assert status["emissionsGrams"] > 0
    assert final.metadata["status"] == "Succeeded"
    assert "carbon_plot.png" in (stored.binary_data or {})
