"""examples/job.yaml as shipped, against an operator with the shipped settings
(manifests/config.yaml): the replayed trace is read at the example's 10 s poll, one trace
hour per reading at 360x, not at the shared cache's 30 s TTL (three trace hours a reading).

No node here: the trainer's pod is kept off every node (off_node), so the test follows the
job to Running; the e2e test (tests/e2e/test_product.py) trains it on a real node."""

from __future__ import annotations

from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import yaml
from carbonaware.core.intensity_log import IntensityLog
from cluster_fixtures import off_node, throwaway_namespace, wait_for
from faultkit import OperatorProcess, release
from jobapi import create, status, wait_phase

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Set per test process by OperatorProcess (namespaces, ports, the trainer image).
PER_PROCESS = {"CARBONAWARE_NAMESPACES", "CARBONAWARE_METRICS_PORT"}
PER_PROCESS |= {"CARBONAWARE_LIVENESS_ENDPOINT", "CARBONAWARE_TRAINER_IMAGE"}


def shipped_settings() -> dict[str, str]:
    config = yaml.safe_load((REPO / "manifests" / "config.yaml").read_text())
    return {k: str(v) for k, v in config["data"].items() if k not in PER_PROCESS}


def test_the_quickstart_example_reads_its_trace_hour_by_hour_with_shipped_settings(
    crd, kube_api, kubeconfig: Path, tmp_path: Path
) -> None:
    from kubernetes import client

    example = yaml.safe_load((REPO / "examples" / "job.yaml").read_text())
    spec = example["spec"] | {"trainer": off_node(example["spec"]["trainer"])}
    name = example["metadata"]["name"]
    with throwaway_namespace(kube_api, "quickstart") as ns:
        operator = OperatorProcess(
            kubeconfig, (ns,), tmp_path / "operator.log", extra_env=shipped_settings()
        ).start()
        try:
            create(kube_api, ns, name, spec)
            wait_for(
                lambda: status(kube_api, ns, name).get("readingCount", 0) >= 4,
                75,
                "four readings (10 s apart)",
            )
            log_name = status(kube_api, ns, name)["logConfigMap"]
            stored = client.CoreV1Api(kube_api).read_namespaced_config_map(log_name, ns)
            readings = IntensityLog.from_csv(stored.data["carbon_log.csv"]).readings
            steps = {b.timestamp - a.timestamp for a, b in pairwise(readings)}
            assert steps == {timedelta(hours=1)}, sorted(steps)
            # It starts on a clean reading overnight, not at its deadline.
            running = wait_phase(kube_api, ns, name, "Running", timeout=240)
            assert running["currentIntensity"] <= spec["thresholdGramsPerKWh"], running
            assert "deadline" not in running["decision"]["reason"], running["decision"]
        finally:
            operator.stop()
            release(kube_api, ns)
