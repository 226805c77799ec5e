"""The operator against a real control plane, as a user sees it through the API and kubectl.

The operator runs as a subprocess (``carbonaware-operator``) under its own ServiceAccount's
token (TokenRequest API + a kubeconfig for it), with the manifests' RBAC, watching one
throwaway namespace. Readings come from the demo trace bundled in the package, replayed
2400x faster than real time (one trace hour per 1.5 s), or from a loopback HTTP server.

This tier has no node, so nothing runs the pods: where a test needs a finished Job it plays
the kubelet and reports the pod's container terminated (with the trainer's JSON termination
message) through the pod status subresource; the real Job controller in the
controller-manager then completes or fails the Job by its own rules (Complete +
SuccessCriteriaMet, or Failed). The node tier (tests/e2e) runs the real trainer instead.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import faultkit
import pytest
import yaml
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import release
from jobapi import GROUP, PLURAL, VERSION, create, get, status, wait_phase

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
OPERATOR = Path(sys.executable).parent / "carbonaware-operator"
SA_NAMESPACE, SA_NAME = "carbonaware-system", "carbonaware-operator"
SECRET_TOKEN = "s3cr3t-em-token-do-not-leak"
# The demo trace from 10:00 on its first day: 206, 206, 188, 175, 205, 216, 240, ... 195, 172,
# then 143 at 01:00 (15 trace hours = 22 s later: room for a slow first poll) and ~100 by
# 03:00.
DIRTY_EVENING = {"name": "replay", "speed": 2400, "start": "10h"}
CLEAN_NIGHT = {"name": "replay", "speed": 2400, "start": "26h"}  # ~120 g/kWh: runs at once


def replay_job(**overrides) -> dict:
    """A trainer job on the bundled demo trace, polling every second, threshold 150."""
    spec = {
        "zone": "SYNTHETIC",
        "provider": DIRTY_EVENING,
        "thresholdGramsPerKWh": 150,
        "pollInterval": "1s",
        "trainer": off_node({"epochs": 1}),
    }
    return spec | overrides


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Operator:
    namespace: str
    kubeconfig: Path  # the operator's own: its ServiceAccount token
    log: Path
    metrics_port: int

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _kubectl(kubectl: str, kubeconfig: Path, *args: str, check: bool = True):
    result = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        pytest.fail(f"kubectl {' '.join(args)}: {result.stderr}", pytrace=False)
    return result


def service_account_kubeconfig(admin: Path, token: str, path: Path) -> Path:
    """A kubeconfig that authenticates with ``token`` only (no client certificate)."""
    config = yaml.safe_load(admin.read_text())
    cluster = dict(config["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority")).read_bytes()
        cluster["certificate-authority-data"] = base64.b64encode(ca).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": SA_NAME, "user": {"token": token}}],
                "contexts": [{"name": SA_NAME, "context": {"cluster": "local", "user": SA_NAME}}],
                "current-context": SA_NAME,
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def operator(kubectl: str, kubeconfig: Path, kube_api, tmp_path_factory) -> Iterator[Operator]:
    for name in ("crd.yaml", "peering.yaml", "namespace.yaml", "rbac.yaml"):
        _kubectl(kubectl, kubeconfig, "apply", "-f", str(MANIFESTS / name))
    _kubectl(
        kubectl,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/carbonawarejobs.carbonaware.io",
    )
    token = _kubectl(
        kubectl, kubeconfig, "-n", SA_NAMESPACE, "create", "token", SA_NAME, "--duration=2h"
    ).stdout.strip()
    workdir = tmp_path_factory.mktemp("operator")
    own_config = service_account_kubeconfig(kubeconfig, token, workdir / "operator.kubeconfig")
    metrics_port, health_port = free_port(), free_port()
    with throwaway_namespace(kube_api, "operator") as namespace:
        env = {
            **os.environ,
            "KUBECONFIG": str(own_config),
            "CARBONAWARE_NAMESPACES": namespace,
            "CARBONAWARE_STANDALONE": "true",  # one operator per test namespace
            "CARBONAWARE_POLL_FLOOR": "1s",
            "CARBONAWARE_CACHE_TTL": "200ms",
            "CARBONAWARE_METRICS_PORT": str(metrics_port),
            "CARBONAWARE_LIVENESS_ENDPOINT": f"http://127.0.0.1:{health_port}/healthz",
            "CARBONAWARE_TRAINER_IMAGE": "carbonaware/trainer:dev",
        }
        log = workdir / "operator.log"
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(OPERATOR)], env=env, stdout=out, stderr=subprocess.STDOUT
            )

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"operator exited:\n{log.read_text()}", pytrace=False)
            try:
                url = f"http://127.0.0.1:{health_port}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_for(healthy, 60, "the operator's /healthz", interval_s=0.5)
        try:
            yield Operator(namespace, own_config, log, metrics_port)
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            # With the operator gone nothing removes kopf's finalizers; without this the
            # namespace would hang in Terminating.
            release(kube_api, namespace)


# --- helpers: the user's view ---------------------------------------------------------


def kubectl_row(kubectl: str, kubeconfig: Path, namespace: str, name: str) -> list[str]:
    """The row `kubectl get carbonawarejobs NAME` prints, split on whitespace."""
    out = _kubectl(kubectl, kubeconfig, "-n", namespace, "get", "carbonawarejobs", name).stdout
    return out.splitlines()[1].split()


def jobs_of(kube_api, namespace: str, name: str) -> list:
    from kubernetes import client

    return (
        client.BatchV1Api(kube_api)
        .list_namespaced_job(namespace, label_selector=f"carbonaware.io/job={name}")
        .items
    )


def events_of(kube_api, namespace: str, name: str) -> list:
    from kubernetes import client

    return (
        client.CoreV1Api(kube_api)
        .list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
        .items
    )


def event_reasons(kube_api, namespace: str, name: str) -> set[str]:
    return {e.reason for e in events_of(kube_api, namespace, name)}


def wait_events(kube_api, namespace: str, name: str, reasons: set[str]) -> set[str]:
    """The Event reasons of ``name`` once they include ``reasons``: kopf posts Events from a
    queue, so they may land a moment after the status patch the test saw."""
    wait_for(
        lambda: reasons <= event_reasons(kube_api, namespace, name),
        20,
        f"Events {sorted(reasons)} on {name}",
    )
    return event_reasons(kube_api, namespace, name)


def finish_pod(kube_api, namespace: str, job_name: str, exit_code: int, message: str) -> None:
    """Play the kubelet (faultkit.finish_pod) once the Job controller has made the pod."""
    wait_for(
        lambda: faultkit.finish_pod(kube_api, namespace, job_name, exit_code, message),
        30,
        f"the Job controller to create {job_name}'s pod",
    )


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# --- tests -----------------------------------------------------------------------------


def test_waits_while_dirty_then_creates_exactly_one_job(
    operator: Operator, kube_api, kubectl: str, kubeconfig: Path
) -> None:
    ns = operator.namespace
    spec = replay_job(maxDelay="24h")
    create(kube_api, ns, "wait-then-run", spec)
    waiting = wait_phase(kube_api, ns, "wait-then-run", "Waiting", timeout=30)
    assert waiting["currentIntensity"] > 150
    row = kubectl_row(kubectl, kubeconfig, ns, "wait-then-run")
    assert row[1] == "Waiting" and row[2] == "SYNTHETIC" and float(row[4]) > 150
    assert jobs_of(kube_api, ns, "wait-then-run") == []
    assert "above threshold 150" in waiting["decision"]["reason"]
    # Someone labels and annotates the log ConfigMap while the job waits (a backup selector,
    # a note): the operator's later writes of the whole object keep both.
    from carbonaware.kube.builders import log_configmap_name
    from kubernetes import client

    log_name = log_configmap_name("wait-then-run")
    core = client.CoreV1Api(kube_api)
    wait_for(lambda: core.read_namespaced_config_map(log_name, ns), 30, "the log ConfigMap")
    marks = {"labels": {"backup": "daily"}, "annotations": {"team.example/note": "keep me"}}
    marked = core.patch_namespaced_config_map(log_name, ns, {"metadata": marks})

    running = wait_phase(kube_api, ns, "wait-then-run", "Running", timeout=60)
    assert running["currentIntensity"] <= 150
    assert "at or below threshold 150" in running["decision"]["reason"]
    time.sleep(3)  # more polls: still one Job
    jobs = jobs_of(kube_api, ns, "wait-then-run")
    assert [j.metadata.name for j in jobs] == [running["jobName"]]
    owner = jobs[0].metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.controller) == ("CarbonAwareJob", "wait-then-run", True)
    assert owner.uid == get(kube_api, ns, "wait-then-run")["metadata"]["uid"]
    container = jobs[0].spec.template.spec.containers[0]
    assert container.image == "carbonaware/trainer:dev"
    assert container.termination_message_policy == "FallbackToLogsOnError"
    assert container.security_context.read_only_root_filesystem is True
    wait_events(kube_api, ns, "wait-then-run", {"Waiting", "JobCreated"})
    assert parse(running["startedAt"]) < parse(running["deadline"])
    scheduled = next(c for c in running["conditions"] if c["type"] == "Scheduled")
    assert scheduled["status"] == "True" and scheduled["reason"] == "JobCreated"
    assert scheduled["observedGeneration"] == 1
    stored = core.read_namespaced_config_map(log_name, ns).metadata
    assert stored.resource_version != marked.metadata.resource_version  # written since
    assert stored.labels["backup"] == "daily"
    assert stored.annotations == {"team.example/note": "keep me"}


def test_starts_at_the_deadline_when_the_grid_never_gets_clean(
    operator: Operator, kube_api
) -> None:
    ns = operator.namespace
    spec = replay_job(thresholdGramsPerKWh=10, maxDelay="10h")  # never this clean
    create(kube_api, ns, "deadline", spec)
    wait_phase(kube_api, ns, "deadline", "Waiting", timeout=30)
    running = wait_phase(kube_api, ns, "deadline", "Running", timeout=60)
    assert "deadline reached" in running["decision"]["reason"]
    started, deadline = parse(running["startedAt"]), parse(running["deadline"])
    # On time: at the deadline, at most about one poll (1 s = 0.7 trace hours) late.
    assert deadline <= started <= deadline + timedelta(hours=2)
    assert running["currentIntensity"] > 10
    wait_events(kube_api, ns, "deadline", {"DeadlineReached", "JobCreated"})
    assert len(jobs_of(kube_api, ns, "deadline")) == 1


def test_accounts_energy_emissions_and_saving_when_the_job_completes(
    operator: Operator, kube_api, kubectl: str, kubeconfig: Path
) -> None:
    from kubernetes import client

    ns = operator.namespace
    spec = replay_job(power={"watts": 100, "pue": 1.2})
    create(kube_api, ns, "accounted", spec)
    running = wait_phase(kube_api, ns, "accounted", "Running", timeout=60)
    time.sleep(2)  # let it run for a couple of trace hours
    result = {
        "status": "ok",
        "accuracy": 0.981,
        "epochs": 1,
        "wall_seconds": 42.0,
        "energy_kwh": 0.003,
        "energy_method": "measured:rapl-package",  # as carbon-trainer labels RAPL
        "device": "cpu",
    }
    finish_pod(kube_api, ns, running["jobName"], 0, json.dumps(result))
    done = wait_phase(kube_api, ns, "accounted", "Succeeded", timeout=60)

    assert done["energyMethod"] == "measured:rapl-package"  # the trainer's figure and label
    # what kstatus, Flux, Argo CD and batch/v1 readers look at
    kinds = {c["type"]: c for c in done["conditions"]}
    assert kinds["Ready"]["status"] == kinds["Complete"]["status"] == "True"
    assert kinds["Ready"]["observedGeneration"] == 1 and "Failed" not in kinds
    assert done["trainer"]["energyMethod"] == "measured:rapl-package"
    assert done["energyKWh"] == pytest.approx(0.003 * 1.2)  # measured IT energy x PUE
    assert done["trainer"]["accuracy"] == 0.981 and done["trainer"]["durationSeconds"] == 42.0
    # Emissions are the energy times intensities logged during the run (all <= 150 after
    # the drop, and the run cannot predate it); the baseline started at 240+ g/kWh.
    assert 0 < done["emissionsGrams"] <= done["energyKWh"] * 150 + 1e-9
    assert done["baselineEmissionsGrams"] >= done["energyKWh"] * 190
    assert done["savedGrams"] == pytest.approx(
        done["baselineEmissionsGrams"] - done["emissionsGrams"], abs=1e-5
    )
    assert done["savedPercent"] > 20
    assert "direct factors, actual readings" in done["emissionsBasis"]
    assert parse(done["completedAt"]) >= parse(done["startedAt"])
    wait_events(kube_api, ns, "accounted", {"Succeeded"})
    row = kubectl_row(kubectl, kubeconfig, ns, "accounted")
    assert row[1] == "Succeeded" and float(row[5]) == pytest.approx(done["emissionsGrams"])

    log = client.CoreV1Api(kube_api).read_namespaced_config_map(done["logConfigMap"], ns)
    csv_text = log.data["carbon_log.csv"]
    assert "energy_method=measured:rapl-package" in csv_text
    assert csv_text.count(",SYNTHETIC,") >= 5  # one row per reading
    png = base64.b64decode(log.binary_data["carbon_plot.png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_a_failed_job_fails_the_carbon_aware_job_with_the_reason(
    operator: Operator, kube_api
) -> None:
    ns = operator.namespace
    spec = replay_job(provider=CLEAN_NIGHT)
    create(kube_api, ns, "doomed", spec)
    running = wait_phase(kube_api, ns, "doomed", "Running", timeout=30)
    finish_pod(kube_api, ns, running["jobName"], 1, "Traceback: out of memory")
    failed = wait_phase(kube_api, ns, "doomed", "Failed", timeout=60)
    assert "the Job failed: BackoffLimitExceeded" in failed["message"]
    condition = next(c for c in failed["conditions"] if c["type"] == "Succeeded")
    assert (condition["status"], condition["reason"]) == ("False", "JobFailed")
    assert failed["energyMethod"] == "estimated"  # no JSON result: assumed power x time
    wait_events(kube_api, ns, "doomed", {"Failed"})


def test_a_zone_the_provider_does_not_serve_fails_the_job_with_why(
    operator: Operator, kube_api
) -> None:
    ns = operator.namespace
    create(kube_api, ns, "wrong-zone", replay_job(zone="DE"))
    failed = wait_phase(kube_api, ns, "wrong-zone", "Failed", timeout=30)
    assert "holds zone 'SYNTHETIC' only" in failed["message"]
    condition = next(c for c in failed["conditions"] if c["type"] == "Succeeded")
    assert condition["reason"] == "UnknownZone"
    assert jobs_of(kube_api, ns, "wrong-zone") == []
    wait_events(kube_api, ns, "wrong-zone", {"Failed"})


def test_delete_cascades_to_job_pods_and_log(operator: Operator, kube_api) -> None:
    from kubernetes import client

    ns = operator.namespace
    spec = replay_job(provider=CLEAN_NIGHT)
    create(kube_api, ns, "short-lived", spec)
    running = wait_phase(kube_api, ns, "short-lived", "Running", timeout=30)
    core = client.CoreV1Api(kube_api)
    selector = f"batch.kubernetes.io/job-name={running['jobName']}"
    wait_for(lambda: core.list_namespaced_pod(ns, label_selector=selector).items, 30, "the pod")
    client.CustomObjectsApi(kube_api).delete_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, "short-lived"
    )

    def all_gone() -> bool:
        configmaps = core.list_namespaced_config_map(ns).items
        return (
            not jobs_of(kube_api, ns, "short-lived")
            and not core.list_namespaced_pod(ns, label_selector=selector).items
            and not [c for c in configmaps if c.metadata.name == "short-lived-carbon-log"]
        )

    wait_for(all_gone, 90, "the garbage collector to delete the Job, its pods and the log")


def test_provider_outage_marks_data_stale_and_still_starts_at_the_deadline(
    operator: Operator, kube_api, httpserver
) -> None:
    from kubernetes import client

    ns = operator.namespace
    httpserver.expect_request("/v3/carbon-intensity/latest").respond_with_data("down", 503)
    httpserver.expect_request("/v3/carbon-intensity/history").respond_with_data("down", 503)
    httpserver.expect_request("/v3/carbon-intensity/past-range").respond_with_data("down", 503)
    client.CoreV1Api(kube_api).create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="em"), string_data={"token": SECRET_TOKEN}
        ),
    )
    spec = {
        "zone": "DE",
        "provider": {
            "name": "electricitymaps",
            "baseUrl": httpserver.url_for("/").rstrip("/"),
            "secretRef": {"name": "em"},
        },
        "maxDelay": "8s",  # wall clock: no replay here
        "pollInterval": "1s",
        "trainer": off_node(),
    }
    create(kube_api, ns, "outage", spec)

    def stale() -> dict | None:
        current = status(kube_api, ns, "outage")
        conditions = {c["type"]: c for c in current.get("conditions") or []}
        if conditions.get("DataStale", {}).get("status") == "True":
            return current
        return None

    during = wait_for(stale, 30, "a DataStale condition")
    available = next(c for c in during["conditions"] if c["type"] == "ProviderAvailable")
    assert available["status"] == "False" and "503" in available["message"]
    assert during["phase"] == "Waiting"
    running = wait_phase(kube_api, ns, "outage", "Running", timeout=40)
    assert "deadline reached" in running["decision"]["reason"]
    wait_events(kube_api, ns, "outage", {"ProviderUnavailable", "DeadlineReached", "JobCreated"})
    assert httpserver.log, "the operator never asked the provider"
    # The token reached the provider, and nowhere else.
    assert any(SECRET_TOKEN in str(request.headers) for request, _ in httpserver.log)
    events = " ".join(f"{e.message}" for e in events_of(kube_api, ns, "outage"))
    for where, text in (
        ("status", json.dumps(running)),
        ("events", events),
        ("operator log", operator.log_text()),
    ):
        assert SECRET_TOKEN not in text, f"the provider token leaked into the {where}"


def test_falls_back_along_the_chain_and_says_so(operator: Operator, kube_api, httpserver) -> None:
    from kubernetes import client

    ns = operator.namespace
    httpserver.expect_request("/v3/carbon-intensity/latest").respond_with_data("down", 503)
    httpserver.expect_request("/v3/carbon-intensity/history").respond_with_data("down", 503)
    httpserver.expect_request("/v3/carbon-intensity/past-range").respond_with_data("down", 503)
    client.CoreV1Api(kube_api).create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="em2"), string_data={"token": "t"}),
    )
    spec = {
        "zone": "DE",
        "provider": {
            "name": "electricitymaps",
            "baseUrl": httpserver.url_for("/").rstrip("/"),
            "secretRef": {"name": "em2"},
            "fallback": [{"name": "static", "value": 321}],
        },
        "thresholdGramsPerKWh": 100,
        "pollInterval": "1s",
        "trainer": off_node(),
    }
    create(kube_api, ns, "fallback", spec)

    def fell_back() -> dict | None:
        current = status(kube_api, ns, "fallback")
        return current if current.get("readingProvider") == "static" else None

    current = wait_for(fell_back, 40, "a reading from the fallback provider")
    assert current["currentIntensity"] == 321
    available = next(c for c in current["conditions"] if c["type"] == "ProviderAvailable")
    assert (available["status"], available["reason"]) == ("False", "FellBack")
    assert "electricitymaps" in available["message"]
    assert current["phase"] == "Waiting"


def test_operator_service_account_is_denied_what_it_does_not_need(
    operator: Operator, kubectl: str
) -> None:
    ns = operator.namespace
    allowed = [
        ("create", "jobs.batch"),
        ("get", "jobs.batch"),
        ("patch", "jobs.batch"),  # suspend/resume (interruptible jobs)
        ("patch", "carbonawarejobs.carbonaware.io/status"),
        ("update", "configmaps"),
        ("get", "secrets"),
        ("create", "events"),
        ("list", "pods"),
        # a CarbonAwareCronJob's runs: created at their times, deleted by history limits
        ("create", "carbonawarejobs.carbonaware.io"),
        ("delete", "carbonawarejobs.carbonaware.io"),
    ]
    denied = [
        ("delete", "jobs.batch"),
        ("update", "jobs.batch"),
        ("create", "pods"),
        ("delete", "pods"),
        ("list", "secrets"),
        ("watch", "secrets"),
        ("delete", "configmaps"),
        ("create", "deployments.apps"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("get", "nodes"),
    ]
    for verb, resource in allowed + denied:
        answer = _kubectl(
            kubectl, operator.kubeconfig, "auth", "can-i", verb, resource, "-n", ns, check=False
        )
        expected = "yes" if (verb, resource) in allowed else "no"
        assert answer.stdout.strip() == expected, f"can-i {verb} {resource}: {answer.stdout}"
    # And the API itself refuses: the operator's token cannot delete a Job.
    refused = _kubectl(
        kubectl, operator.kubeconfig, "-n", ns, "delete", "job", "anything", check=False
    )
    assert refused.returncode != 0 and "forbidden" in refused.stderr.lower()


def test_kubectl_carbon_plugin_and_carbonctl_plot_read_the_job(
    operator: Operator, kube_api, kubectl: str, kubeconfig: Path, tmp_path: Path
) -> None:
    ns = operator.namespace
    create(kube_api, ns, "for-people", replay_job(provider=CLEAN_NIGHT))
    running = wait_phase(kube_api, ns, "for-people", "Running", timeout=30)
    time.sleep(2)
    result = {"status": "ok", "accuracy": 0.975, "epochs": 1, "wall_seconds": 30.0}
    finish_pod(kube_api, ns, running["jobName"], 0, json.dumps(result))
    done = wait_phase(kube_api, ns, "for-people", "Succeeded", timeout=60)

    # kubectl finds the plugin on PATH, as it would for a user.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def plugin(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [kubectl, "carbon", *args],  # kubectl takes no flags before a plugin's name
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    shown = plugin("status", "for-people", "-n", ns, "--kubeconfig", str(kubeconfig))
    assert shown.returncode == 0, shown.stderr
    assert "Phase:       Succeeded" in shown.stdout
    assert f"{done['emissionsGrams']:.4g} gCO2eq" in shown.stdout
    assert "accuracy 97.50%" in shown.stdout

    missing = plugin("status", "no-such-job", "-n", ns, "--kubeconfig", str(kubeconfig))
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f'kubectl carbon: error: CarbonAwareJob "no-such-job" not found in namespace "{ns}"'
    )

    zone = plugin("intensity", "--zone", "SYNTHETIC", "-n", ns, "--kubeconfig", str(kubeconfig))
    assert zone.returncode == 0 and zone.stdout.startswith("SYNTHETIC: "), zone.stderr

    png = tmp_path / "plugin.png"
    drawn = plugin("plot", "for-people", "-n", ns, "-o", str(png), "--kubeconfig", str(kubeconfig))
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    carbon_plot = tmp_path / "carbon_plot.png"
    carbonctl = subprocess.run(
        [str(Path(sys.executable).parent / "carbonctl"), "plot", "--job", "for-people",
         "-n", ns, "-o", str(carbon_plot)],
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": str(kubeconfig)},
        timeout=60,
    )  # fmt: skip
    assert carbonctl.returncode == 0, carbonctl.stderr
    assert carbon_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_endpoint_reports_intensity_jobs_and_provider_calls(
    operator: Operator, kube_api
) -> None:
    ns = operator.namespace
    create(kube_api, ns, "measured", replay_job(provider=CLEAN_NIGHT))
    wait_phase(kube_api, ns, "measured", "Running", timeout=30)

    def scrape() -> dict[str, float]:
        url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line.startswith("carbonaware_"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    samples = wait_for(
        lambda: (s := scrape()).get('carbonaware_jobs{phase="Running"}', 0) >= 1 and s,
        20,
        "a Running job in the metrics",
    )
    assert (
        samples['carbonaware_grid_intensity_grams_per_kwh{provider="replay",zone="SYNTHETIC"}'] > 0
    )
    assert samples['carbonaware_provider_requests_total{kind="latest",provider="replay"}'] >= 1
    latency = 'carbonaware_provider_request_duration_seconds_count{kind="latest",provider="replay"}'
    assert latency in samples


def test_own_forecaster_reads_the_zones_history_once_for_all_its_jobs(
    operator: Operator, kube_api, fault_server
) -> None:
    """A provider without a forecast (the loopback Electricity Maps answers 401 "not in
    plan"): the forecast strategy forecasts from the zone's past two weeks. Those come from
    the shared cache once for every job of the zone, and are not copied into each job's log."""
    from kubernetes import client

    ns, zone = operator.namespace, "OWN-FORECAST"
    fault_server.set(zone, intensity=300)
    client.CoreV1Api(kube_api).create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="em-own"), string_data={"token": "t"}),
    )
    spec = {
        "zone": zone,
        "strategy": "forecast",
        "provider": {
            "name": "electricitymaps",
            "baseUrl": fault_server.base_url,
            "secretRef": {"name": "em-own"},
        },
        "maxDelay": "6h",
        "expectedDuration": "1h",
        "pollInterval": "1s",
        "trainer": off_node(),
    }
    names = ("own-a", "own-b")
    for name in names:
        create(kube_api, ns, name, spec)
    for name in names:
        # A flat two weeks at 300 g/kWh: no cleaner window ahead, so it runs now.
        running = wait_phase(kube_api, ns, name, "Running", timeout=40)
        decision = running["decision"]
        assert decision.get("forecastSource") == "own-forecaster", decision
        assert "own forecaster" in decision["reason"], decision
        assert running.get("forecasterHistory") == "15d of electricitymaps history", running
        # The log holds what the job read since it was submitted, not two weeks.
        assert running["readingCount"] < 10, running
        config_map = client.CoreV1Api(kube_api).read_namespaced_config_map(
            running["logConfigMap"], ns
        )
        assert sum(len(v) for v in config_map.data.values()) < 4096
    # Fifteen days are two 10-day past-range pages, fetched once for both jobs.
    assert fault_server.count(zone, "past-range") == 2


def em_operator(
    kube_api, kubeconfig: Path, ns: str, tmp_path: Path, floor: str, ttl: str
) -> faultkit.OperatorProcess:
    """An operator of its own for ``ns`` (poll floor and cache TTL as given), and the
    Electricity Maps token Secret the jobs of faultkit.em_threshold_spec name."""
    faultkit.create_em_secret(kube_api, ns)
    env = {"CARBONAWARE_POLL_FLOOR": floor, "CARBONAWARE_CACHE_TTL": ttl}
    return faultkit.OperatorProcess(
        kubeconfig, (ns,), tmp_path / "operator.log", extra_env=env
    ).start()


def test_a_drop_seen_by_one_job_starts_the_zones_other_jobs_at_once(
    crd, kube_api, kubeconfig: Path, tmp_path: Path, fault_server
) -> None:
    """An operator that polls each job once a minute: the first job waits; the zone drops;
    a second job's first poll reads the drop, and the first job starts with it (the zone's
    bell, kube/wakeups.py), from the cached reading, not a minute later at its own poll."""

    zone = "WAKE"
    fault_server.set(zone, intensity=300)
    with throwaway_namespace(kube_api, "wake") as ns:
        operator = em_operator(kube_api, kubeconfig, ns, tmp_path, floor="60s", ttl="1s")
        try:
            spec = faultkit.em_threshold_spec(fault_server, zone, "1m", {"trainer": off_node()})
            create(kube_api, ns, "first", spec)
            wait_phase(kube_api, ns, "first", "Waiting", timeout=30)
            fault_server.set(zone, intensity=50)
            time.sleep(1.5)  # the cached 300 expires; "first" would not poll for a minute
            dropped = time.monotonic()
            create(kube_api, ns, "second", spec)
            wait_phase(kube_api, ns, "second", "Running", timeout=30)
            running = wait_phase(kube_api, ns, "first", "Running", timeout=30)
            assert time.monotonic() - dropped < 30, "started at its own poll, not with the zone"
            assert running["currentIntensity"] == 50, running
            assert "50" in running["decision"]["reason"], running["decision"]
            assert len(jobs_of(kube_api, ns, "first")) == 1
            assert "zone WAKE: a new reading; waking its jobs" in operator.log_text()
        finally:
            operator.stop()
            release(kube_api, ns)


def test_a_zone_publishing_on_a_grid_is_read_just_after_each_new_reading(
    crd, kube_api, kubeconfig: Path, tmp_path: Path
) -> None:
    """A provider that publishes a reading every 6 s, polled at a 5 s cache TTL: once the
    operator has seen two readings on that grid, it reads each new one within a second of
    its period's start (CARBONAWARE_FOLLOW_GRID, on by default), where polls at an arbitrary
    phase would see it 0-5 s late; and a drop that comes with a new reading starts the job
    within a couple of seconds of it. Still no more than one request per TTL, plus one per
    period at most."""

    period, zone = 6, "GRID"
    server = faultkit.FaultServer(stamp_every_s=period).start()
    server.set(zone, intensity=300)
    with throwaway_namespace(kube_api, "grid") as ns:
        operator = em_operator(kube_api, kubeconfig, ns, tmp_path, floor="1s", ttl="5s")
        try:
            spec = faultkit.em_threshold_spec(server, zone, "1s", {"trainer": off_node()})
            started = time.time()
            create(kube_api, ns, "gridded", spec)
            wait_phase(kube_api, ns, "gridded", "Waiting", timeout=30)
            # The first reading came before Waiting; the second is due within a period of it.
            # A drop over 24 s from now is at least four periods after that second reading, so
            # at least three readings come after the grid is learned (the last is the drop).
            drop_at = (int(time.time()) // period + 5) * period
            server.set(zone, intensity=50, from_wall=drop_at)
            running = wait_phase(kube_api, ns, "gridded", "Running", timeout=60)
            created = jobs_of(kube_api, ns, "gridded")[0].metadata.creation_timestamp
            # the apiserver stamps whole seconds: created within 3 s of the drop
            assert created.timestamp() - drop_at <= 3, (created, drop_at)
            assert running["currentIntensity"] == 50, running
            elapsed = time.time() - started
            wakes = [
                datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for line in operator.log_text().splitlines()
                if f"zone {zone}: a new reading" in line
            ]
        finally:
            operator.stop()
            release(kube_api, ns)
            server.stop()
    # the first two new readings teach the operator the grid; every one after it is on time
    late = [t - (t // period * period) for t in wakes[2:]]
    assert len(late) >= 3, wakes
    assert max(late) < 1.0, late  # each new reading read within a second of its period start
    requests = server.count(zone, "latest")
    assert requests <= elapsed / 5 + elapsed / period + 2, (requests, elapsed)
