"""The CarbonAwareJob CRD on a real kube-apiserver: validation messages, defaults, columns."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from cluster_fixtures import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crd.yaml"
TEMPLATE = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def run(kubectl: str, kubeconfig: Path, *args: str, stdin: str | None = None):
    return subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def crd(kubectl: str, kubeconfig: Path) -> None:
    applied = run(kubectl, kubeconfig, "apply", "-f", str(CRD))
    assert applied.returncode == 0, applied.stderr
    waited = run(
        kubectl,
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/carbonawarejobs.carbonaware.io",
    )
    assert waited.returncode == 0, waited.stderr


def manifest(name: str, spec: dict) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "carbonaware.io/v1alpha1",
            "kind": "CarbonAwareJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


BAD = [
    ({"zone": "DE", "trainer": {}, "maxDelay": "soon"}, "spec.maxDelay", "must be a duration"),
    ({"zone": "DE", "trainer": {}, "maxDelay": "-1h"}, "spec.maxDelay", "must be a duration"),
    (
        {"zone": "DE", "trainer": {}, "pollInterval": "100ms"},
        "spec.pollInterval",
        "pollInterval must be a duration between 1s and 24h",
    ),
    (
        {"zone": "DE", "trainer": {}, "thresholdGramsPerKWh": 0},
        "spec.thresholdGramsPerKWh",
        "must be above 0 and at most 2000",
    ),
    (
        {"zone": "DE", "trainer": {}, "thresholdGramsPerKWh": 99999},
        "spec.thresholdGramsPerKWh",
        "must be above 0 and at most 2000",
    ),
    ({"zone": "DE"}, "spec", "set exactly one of spec.trainer"),
    ({"zone": "DE", "trainer": {}, "jobTemplate": TEMPLATE}, "spec", "set exactly one of"),
    (
        {"zone": "DE", "trainer": {}, "provider": {"name": "carbonfairy"}},
        "spec.provider.name",
        "provider name must be one of",
    ),
    ({"zone": "not a zone", "trainer": {}}, "spec.zone", "zone must be a zone code"),
    ({"trainer": {}}, "spec", "set exactly one of spec.zone (one grid zone) or spec.placements"),
    (
        {"zone": "DE", "placements": [{"zone": "NL", "nodeSelector": {"r": "nl"}}], "trainer": {}},
        "spec",
        "set exactly one of spec.zone (one grid zone) or spec.placements",
    ),
    ({"placements": [], "trainer": {}}, "spec.placements", "should have at least 1 items"),
    (
        {"placements": [{"zone": "NL"}], "trainer": {}},
        "spec.placements[0]",
        "each placement needs a nodeSelector, nodeAffinity or tolerations",
    ),
    (
        {
            "placements": [{"zone": "NL", "nodeSelector": {"r": "nl"}, "powerScale": 0}],
            "trainer": {},
        },
        "spec.placements[0].powerScale",
        "powerScale must be above 0 and at most 10",
    ),
    (
        {
            "placements": [{"zone": "NL", "nodeSelector": {"r": "nl"}}],
            "interruptible": True,
            "trainer": {},
        },
        "spec",
        "interruptible with spec.placements is not supported yet",
    ),
    (
        {"placements": [{"zone": "not a zone", "nodeSelector": {"r": "x"}}], "trainer": {}},
        "spec.placements[0].zone",
        "zone must be a zone code",
    ),
    ({"zone": "DE", "trainer": {"epochs": 0}}, "spec.trainer.epochs", "between 1 and 1000"),
    ({"zone": "DE", "trainer": {"epochs": "two"}}, "spec.trainer.epochs", "must be of type"),
    (
        {"zone": "DE", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
        "containers",
        "should have at least 1 items",
    ),
    ({"zone": "DE", "jobTemplate": {"metadata": {}}}, "spec.jobTemplate.spec", "Required value"),
    ({"zone": "DE", "trainer": {}, "power": {"pue": 0.5}}, "spec.power.pue", "between 1.0 and 3.0"),
    ({"zone": "D" * 100, "trainer": {}}, "spec.zone", "may not be more than 64"),
    ({"zone": "DE", "trainer": {"workers": 0}}, "spec.trainer.workers", "between 1 and 64"),
    (
        {"zone": "DE", "interruptible": True, "trainer": {"workers": 2}},
        "spec",
        "an interruptible job with trainer.workers > 1 needs trainer.checkpointVolume",
    ),
]


@pytest.mark.parametrize(("spec", "field", "message"), BAD)
def test_invalid_objects_are_rejected_with_a_readable_message(
    crd, kubectl: str, kubeconfig: Path, namespace: str, spec: dict, field: str, message: str
) -> None:
    result = run(
        kubectl, kubeconfig, "-n", namespace, "apply", "-f", "-", stdin=manifest("bad", spec)
    )
    assert result.returncode != 0, f"accepted: {spec}"
    assert field in result.stderr and message in result.stderr, result.stderr


def test_defaults_are_applied(crd, kubectl: str, kubeconfig: Path, namespace: str) -> None:
    created = run(
        kubectl,
        kubeconfig,
        "-n",
        namespace,
        "create",
        "-f",
        "-",
        stdin=manifest("minimal", {"zone": "DE", "trainer": {}}),
    )
    assert created.returncode == 0, created.stderr
    got = json.loads(
        run(kubectl, kubeconfig, "-n", namespace, "get", "caj", "minimal", "-o", "json").stdout
    )
    spec = got["spec"]
    assert spec["maxDelay"] == "24h"
    assert spec["pollInterval"] == "5m"
    assert spec["expectedDuration"] == "30m"
    assert spec["strategy"] == "threshold"
    assert spec["thresholdGramsPerKWh"] == 200
    assert spec["trainer"] == {"epochs": 1, "batchSize": 64, "backoffLimit": 0, "workers": 1}


def test_an_interruptible_job_across_pods_with_a_checkpoint_volume_is_accepted(
    crd, kubectl: str, kubeconfig: Path, namespace: str
) -> None:
    spec = {
        "zone": "DE",
        "interruptible": True,
        "trainer": {"workers": 4, "checkpointVolume": {"claimName": "shared"}},
    }
    created = run(
        kubectl, kubeconfig, "-n", namespace, "create", "-f", "-", stdin=manifest("wide", spec)
    )
    assert created.returncode == 0, created.stderr


def test_placements_are_accepted_with_defaults(
    crd, kubectl: str, kubeconfig: Path, namespace: str
) -> None:
    region = "topology.kubernetes.io/region"
    placements = [
        {"zone": "NL", "nodeSelector": {region: "europe-west4"}},
        {
            "zone": "US-CAL-CISO",
            "provider": {"name": "static", "value": 90},
            "tolerations": [{"key": "spot", "operator": "Exists"}],
            "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
            "powerScale": 1.5,
        },
    ]
    created = run(
        kubectl, kubeconfig, "-n", namespace, "create", "-f", "-",
        stdin=manifest("placed", {"placements": placements, "trainer": {}}),
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    got = json.loads(
        run(kubectl, kubeconfig, "-n", namespace, "get", "caj", "placed", "-o", "json").stdout
    )
    stored = got["spec"]["placements"]
    assert stored[0]["powerScale"] == 1.0 and stored[1]["powerScale"] == 1.5
    assert stored[1]["nodeAffinity"] == placements[1]["nodeAffinity"]  # kept as written
    assert stored[1]["provider"] == {"name": "static", "value": 90}


def test_the_placements_example_is_accepted(crd, kubectl: str, kubeconfig: Path, namespace: str):
    example = REPO / "examples" / "placements.yaml"
    applied = run(
        kubectl, kubeconfig, "-n", namespace, "apply", "--dry-run=server", "-f", str(example)
    )
    assert applied.returncode == 0, applied.stderr


def test_printer_columns_and_declared_status(
    crd, kubectl: str, kubeconfig: Path, namespace: str
) -> None:
    spec = {"zone": "GB", "thresholdGramsPerKWh": 120, "trainer": {}}
    created = run(
        kubectl, kubeconfig, "-n", namespace, "create", "-f", "-", stdin=manifest("cols", spec)
    )
    assert created.returncode == 0, created.stderr
    # Write status the way the operator does: through the status subresource.
    status = {
        "phase": "Succeeded",
        "currentIntensity": 98.5,
        "emissionsGrams": 12.25,
        "savedPercent": 31.5,
        "savedGrams": 5.6,
        "jobName": "cols-1234abcd",
        "deadline": "2026-01-01T00:00:00Z",
        "undeclaredField": "pruned",
    }
    patched = run(
        kubectl,
        kubeconfig,
        "-n",
        namespace,
        "patch",
        "caj",
        "cols",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    assert patched.returncode == 0, patched.stderr

    def row() -> list[str] | None:
        out = run(kubectl, kubeconfig, "-n", namespace, "get", "carbonawarejobs").stdout
        lines = out.splitlines()
        return lines if len(lines) == 2 and "Succeeded" in lines[1] else None

    header, line = wait_for(row, 20, "the status in kubectl get")
    assert header.split() == [
        "NAME", "PHASE", "ZONE", "THRESHOLD", "INTENSITY", "EMISSIONS(G)", "SAVED(%)", "AGE"
    ]  # fmt: skip
    assert line.split()[:7] == ["cols", "Succeeded", "GB", "120", "98.5", "12.25", "31.5"]
    wide = run(kubectl, kubeconfig, "-n", namespace, "get", "caj", "-o", "wide").stdout
    for column in ("PROVIDER", "STRATEGY", "DEADLINE", "JOB", "SAVED(G)", "ACCURACY"):
        assert column in wide.splitlines()[0]
    assert "cols-1234abcd" in wide
    stored = json.loads(
        run(kubectl, kubeconfig, "-n", namespace, "get", "caj", "cols", "-o", "json").stdout
    )["status"]
    assert "undeclaredField" not in stored  # the status schema is structural, not open
    assert stored["emissionsGrams"] == 12.25
