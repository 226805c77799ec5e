"""The Prometheus energy path against a real Prometheus (Debian's package, installed by
hack/prometheus.sh) scraping a real exporter on loopback every 200 ms.

The exporter is prometheus_client's HTTP server in this process, serving the series Kepler
and dcgm-exporter serve (names, labels and units: joules for Kepler, millijoules for DCGM);
the test drives its counters at known watts through two run segments of a suspended and
resumed Job, with a gap between them in which a leftover pod's counter and another
namespace's pod keep counting. The operator's queries (kube/prom_energy.py, its default
templates) must integrate the Job's pods over the segments only.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from carbonaware.core.pod_energy import JOULES_PER_KWH, choose_energy
from carbonaware.kube.prom_energy import PrometheusEnergy, PrometheusError
from cluster_fixtures import wait_for
from faultkit import free_port
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

pytestmark = [pytest.mark.integration]
NS = "ml"
TICK_S = 0.05
SEGMENT_S = 4.0


class Exporter:
    """Kepler's and DCGM's energy series, growing at the watts the test sets per pod."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.kepler = Counter(
            "kepler_container_joules",
            "Kepler: a container's energy (J)",
            ["container_namespace", "pod_name", "container_name"],
            registry=self.registry,
        )
        self.dcgm = Gauge(
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
            "dcgm-exporter: a GPU's energy since boot (mJ)",
            ["gpu", "namespace", "pod"],
            registry=self.registry,
        )
        self.watts: dict[tuple[str, str, str], float] = {}
        self.port = free_port()
        self.server, _ = start_http_server(self.port, "127.0.0.1", self.registry)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def series(self, source: str, namespace: str, pod: str):
        if source == "kepler":
            return self.kepler.labels(namespace, pod, "main")
        return self.dcgm.labels("0", namespace, pod)

    def set(self, watts: dict[tuple[str, str, str], float]) -> None:
        with self.lock:
            for source, namespace, pod in watts:
                self.series(source, namespace, pod).inc(0)  # the series exists from now on
            self.watts = dict(watts)

    def _run(self) -> None:
        while not self.stopping.wait(TICK_S):
            with self.lock:
                for (source, namespace, pod), watts in self.watts.items():
                    scale = 1000.0 if source == "dcgm" else 1.0  # DCGM counts millijoules
                    self.series(source, namespace, pod).inc(watts * TICK_S * scale)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()
        self.server.shutdown()


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "200ms", "scrape_timeout": "150ms"},
            "scrape_configs": [
                {
                    "job_name": "energy",
                    "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}],
                }
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def scraped(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=2) as response:
                targets = json.load(response)["data"]["activeTargets"]
        except OSError:
            return False
        return any(t["health"] == "up" for t in targets)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.fixture
def exporter_and_prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator:
    exporter = Exporter()
    prometheus = Prometheus(prometheus_bin, tmp_path, exporter.port)
    try:
        wait_for(prometheus.scraped, 60, "Prometheus to scrape the exporter")
        yield exporter, prometheus
    finally:
        prometheus.stop()
        exporter.stop()


def test_kepler_and_dcgm_joules_are_integrated_over_the_jobs_pods_and_segments_only(
    exporter_and_prometheus,
) -> None:
    exporter, prometheus = exporter_and_prometheus
    other = ("kepler", "default", "web-1")
    exporter.set({other: 30.0})
    time.sleep(1.0)  # every series has samples before the first segment

    def segment(watts: dict) -> tuple[datetime, datetime]:
        exporter.set({**watts, other: 30.0})
        start = datetime.now(UTC)
        time.sleep(SEGMENT_S)
        end = datetime.now(UTC)
        return start, end

    first = segment(
        {
            ("kepler", NS, "burn-0-a"): 50.0,
            ("kepler", NS, "burn-1-b"): 50.0,
            ("dcgm", NS, "burn-0-a"): 200.0,
        }
    )
    # suspended: a leftover pod still counts, as does another namespace's pod; neither is ours
    exporter.set({("kepler", NS, "burn-0-a"): 500.0, other: 30.0})
    time.sleep(2.0)
    second = segment({("kepler", NS, "burn-0-c"): 50.0})  # the retried pod after resuming
    exporter.set({other: 30.0})
    time.sleep(1.0)  # Prometheus has scraped past the end

    energy = PrometheusEnergy(prometheus.url, token="not-needed-here")
    pods = ["burn-0-a", "burn-1-b", "burn-0-c"]
    kepler, dcgm = energy.figures(NS, pods, [first, second])

    seconds = [(b - a).total_seconds() for a, b in (first, second)]
    assert kepler.label == "measured:kepler" and dcgm.label == "measured:dcgm"
    assert kepler.per_pod_joules["burn-0-a"] == pytest.approx(50 * seconds[0], rel=0.10)
    assert kepler.per_pod_joules["burn-1-b"] == pytest.approx(50 * seconds[0], rel=0.10)
    assert kepler.per_pod_joules["burn-0-c"] == pytest.approx(50 * seconds[1], rel=0.10)
    assert dcgm.per_pod_joules == {"burn-0-a": pytest.approx(200 * seconds[0], rel=0.10)}
    assert "web-1" not in kepler.per_pod_joules

    choice = choose_energy(None, [kepler, dcgm], None)
    assert choice.label == "measured:kepler+measured:dcgm"
    expected = (100 * seconds[0] + 50 * seconds[1] + 200 * seconds[0]) / JOULES_PER_KWH
    assert choice.kwh == pytest.approx(expected, rel=0.10)


def test_a_prometheus_that_is_not_there_is_one_clear_error_without_the_token() -> None:
    energy = PrometheusEnergy(f"http://127.0.0.1:{free_port()}", token="s3cret-token")
    now = datetime.now(UTC)
    with pytest.raises(PrometheusError) as error:
        energy.figures(NS, ["p"], [(now, now)])
    assert "unreachable" in str(error.value) and "s3cret-token" not in str(error.value)
