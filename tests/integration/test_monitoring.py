"""Alert rules and the Grafana dashboard (monitoring/) against the real Prometheus (Debian's
package, installed by hack/prometheus.sh) and the real operator.

- `promtool check rules` and `promtool test rules` (monitoring/alerts_test.yaml: a case per
  alert, checked here to cover every alert).
- A real Prometheus scrapes the operator, run as a process against the local control plane
  (as test_operator.py does), while it takes three jobs through their lives on the replayed
  demo trace: one succeeds (the test plays the kubelet), one fails, one starts at its
  deadline. Every PromQL expression of the dashboard then returns data, and the job-failed
  and started-at-deadline alerts fire in that Prometheus.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import OperatorProcess, finish_pod, free_port, release, stop_process
from jobapi import GROUP, PLURAL, VERSION, trainer_line

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
CLEAN_NIGHT = {"name": "replay", "speed": 2400, "start": "26h"}  # ~120 g/kWh: runs at once
DIRTY_EVENING = {"name": "replay", "speed": 2400, "start": "10h"}  # 175-240 g/kWh
RESULT = trainer_line()


def alert_names() -> set[str]:
    rules = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    return {rule["alert"] for group in rules["groups"] for rule in group["rules"]}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((MONITORING / "dashboard.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_promtool_checks_the_alert_rules(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(MONITORING / "alerts.yaml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_cover_every_alert(promtool: str) -> None:
    cases = yaml.safe_load((MONITORING / "alerts_test.yaml").read_text())["tests"]
    tested = {check["alertname"] for case in cases for check in case["alert_rule_test"]}
    assert tested == alert_names()
    for case in cases:  # each case makes its alert fire at least once
        assert any(check.get("exp_alerts") for check in case["alert_rule_test"])
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yaml"],
        cwd=MONITORING,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(MONITORING / "alerts.yaml")],
            "scrape_configs": [
                {
                    "job_name": "carbonaware",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def api(self, path: str, **params: str) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}{query}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.process)


@pytest.fixture
def operator_with_prometheus(
    prometheus_bin: str, crd: None, kubeconfig: Path, kube_api, tmp_path: Path
) -> Iterator[tuple[OperatorProcess, Prometheus, str]]:
    metrics_port = free_port()
    with throwaway_namespace(kube_api, "monitoring") as namespace:
        operator = OperatorProcess(
            kubeconfig,
            (namespace,),
            tmp_path / "operator.log",
            extra_env={"CARBONAWARE_METRICS_PORT": str(metrics_port)},
        ).start()
        prometheus = Prometheus(prometheus_bin, tmp_path, metrics_port)
        try:
            wait_for(prometheus.ready, 60, "Prometheus to be ready")
            yield operator, prometheus, namespace
        finally:
            prometheus.stop()
            operator.stop()
            release(kube_api, namespace)  # else the namespace hangs in Terminating


def test_prometheus_scrapes_the_operator_and_every_dashboard_query_returns_data(
    operator_with_prometheus: tuple[OperatorProcess, Prometheus, str], kube_api
) -> None:
    from kubernetes import client

    operator, prometheus, ns = operator_with_prometheus
    api = client.CustomObjectsApi(kube_api)

    def create(name: str, **spec: object) -> None:
        body = {
            "zone": "SYNTHETIC",
            "thresholdGramsPerKWh": 150,
            "pollInterval": "1s",
            "trainer": off_node({"epochs": 1}),
            **spec,
        }
        api.create_namespaced_custom_object(
            GROUP,
            VERSION,
            ns,
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "CarbonAwareJob",
                "metadata": {"name": name},
                "spec": body,
            },
        )

    def status(name: str) -> dict:
        return (
            api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name).get("status") or {}
        )

    def phase_is(name: str, phase: str, timeout_s: float = 60) -> dict:
        return wait_for(
            lambda: (s := status(name)).get("phase") == phase and s,
            timeout_s,
            f"{name} to reach {phase}\n{operator.log_text()[-3000:]}",
        )

    # Scraped from the start, so every counter is seen at 0 before it counts.
    wait_for(
        lambda: any(t["health"] == "up" for t in prometheus.api("targets")["activeTargets"]),
        30,
        "Prometheus to scrape the operator",
    )
    create("clean", provider=CLEAN_NIGHT)
    create("doomed", provider=CLEAN_NIGHT)
    # Never this clean; the deadline comes 2 trace hours (3 s) after submission.
    create("late", provider=DIRTY_EVENING, thresholdGramsPerKWh=10, maxDelay="2h")

    clean, doomed = phase_is("clean", "Running"), phase_is("doomed", "Running")
    time.sleep(2)  # a few readings while running
    wait_for(
        lambda: finish_pod(kube_api, ns, clean["jobName"], 0, RESULT),
        60,
        "the clean job's pod",
    )
    wait_for(
        lambda: finish_pod(kube_api, ns, doomed["jobName"], 1, "Traceback: OOM"),
        60,
        "the doomed job's pod",
    )
    done = phase_is("clean", "Succeeded")
    assert done["emissionsGrams"] > 0
    failed = phase_is("doomed", "Failed")  # accounted too: estimated energy
    late = phase_is("late", "Running")
    assert late["startedAt"] >= late["deadline"]

    def query(expr: str) -> list:
        return prometheus.api("query", query=expr)["result"]

    def scraped(expr: str, expected: float) -> bool:
        result = query(expr)
        return bool(result) and float(result[0]["value"][1]) == pytest.approx(expected, rel=1e-6)

    # The counters equal what the jobs' statuses say, once the last status is scraped.
    grams = done["emissionsGrams"] + failed.get("emissionsGrams", 0)
    wait_for(
        lambda: scraped(f'sum(carbonaware_emissions_grams_total{{namespace="{ns}"}})', grams),
        30,
        f"{grams} g emitted in Prometheus",
    )
    joules = (done["energyKWh"] + failed.get("energyKWh", 0)) * 3.6e6
    wait_for(
        lambda: scraped(f'sum(carbonaware_energy_joules_total{{namespace="{ns}"}})', joules),
        30,
        f"{joules} J in Prometheus",
    )
    for phase in ("Succeeded", "Failed"):
        finished = f'carbonaware_jobs_finished_total{{namespace="{ns}",phase="{phase}"}}'
        wait_for(lambda e=finished: scraped(e, 1), 30, f"one {phase} job in Prometheus")
    assert scraped(f'sum(carbonaware_jobs_started_total{{namespace="{ns}"}})', 3)
    for expr in dashboard_queries():
        wait_for(lambda e=expr: query(e), 15, f"the dashboard's query {expr} to return data")

    def firing() -> set[str]:
        return {
            a["labels"]["alertname"]
            for a in prometheus.api("alerts")["alerts"]
            if a["state"] == "firing" and a["labels"].get("namespace") == ns
        }

    fired = wait_for(
        lambda: (
            {"CarbonAwareJobFailed", "CarbonAwareJobStartedAtDeadline"} <= (f := firing()) and f
        ),
        30,
        "the job alerts to fire",
    )
    assert "CarbonAwareProviderDown" not in fired
