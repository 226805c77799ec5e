"""kube/gate_objects.py: the CarbonPolicy and every object the carbon gate writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from carbonaware.core.gate import CheckUpdate, Overrides
from carbonaware.kube import gate_objects
from carbonaware.kube.models import SpecError

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
WORKLOAD = {
    "apiVersion": "kueue.x-k8s.io/v1beta2",
    "kind": "Workload",
    "metadata": {"name": "job-train-1a2b3", "namespace": "ml", "uid": "u-1"},
    "status": {
        "conditions": [{"type": "QuotaReserved", "status": "True"}],
        "admissionChecks": [
            {"name": "other", "state": "Ready"},
            {"name": "carbon", "state": "Pending", "lastTransitionTime": "2026-01-01T11:00:00Z"},
        ],
    },
}


def schema(path: str, kind_index: int = 0) -> dict:
    crd = yaml.safe_load((MANIFESTS / path).read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]


def test_the_policy_schema_is_the_carbonawarejob_schema_for_shared_fields():
    job, policy = schema("crd.yaml"), schema("carbonpolicy.yaml")
    for name in gate_objects.SHARED_FIELDS:
        assert policy["properties"][name] == job["properties"][name], name
    assert policy["required"] == ["zone"]


def test_a_policy_and_overrides_make_the_decision_spec():
    spec, secrets = gate_objects.job_spec(
        {"zone": "GB", "maxDelay": "6h", "secretNamespace": "grid"},
        Overrides(expected_duration=timedelta(hours=3)),
    )
    assert (spec.zone, spec.max_delay, spec.expected_duration) == (
        "GB",
        timedelta(hours=6),
        timedelta(hours=3),
    )
    assert secrets == "grid"


def test_a_bad_policy_is_one_readable_line():
    with pytest.raises(SpecError, match=r"CarbonPolicy spec\.zone"):
        gate_objects.job_spec({"zone": ""}, Overrides())


def test_only_our_checks_and_their_policies():
    checks = [
        {"metadata": {"name": "prov"}, "spec": {"controllerName": "kueue.x-k8s.io/prov"}},
        {
            "metadata": {"name": "carbon"},
            "spec": {
                "controllerName": "carbonaware.io/carbon-gate",
                "parameters": {"apiGroup": "carbonaware.io", "kind": "CarbonPolicy", "name": "gb"},
            },
        },
        {"metadata": {"name": "bare"}, "spec": {"controllerName": "carbonaware.io/carbon-gate"}},
    ]
    found = gate_objects.gate_checks(checks)
    assert found == {"carbon": "gb", "bare": None}
    assert gate_objects.gated_state(WORKLOAD, found)["name"] == "carbon"
    assert gate_objects.quota_reserved(WORKLOAD)
    assert not gate_objects.finished(WORKLOAD)


def test_the_check_apply_carries_only_our_check():
    current = WORKLOAD["status"]["admissionChecks"][1]
    body = gate_objects.build_check_apply(
        WORKLOAD, "carbon", CheckUpdate("Ready", "open"), current, NOW
    )
    assert body["metadata"] == {"name": "job-train-1a2b3", "namespace": "ml"}
    assert body["status"]["admissionChecks"] == [
        {
            "name": "carbon",
            "state": "Ready",
            "message": "open",
            "lastTransitionTime": "2026-01-01T12:00:00Z",
        }
    ]
    same = gate_objects.build_check_apply(
        WORKLOAD, "carbon", CheckUpdate("Pending", "new plan"), current, NOW
    )
    kept = same["status"]["admissionChecks"][0]
    assert kept["lastTransitionTime"] == "2026-01-01T11:00:00Z"  # the state did not move


def test_a_held_workload_is_inactive_and_says_by_which_check():
    hold = gate_objects.build_hold_patch("carbon")
    assert hold == {
        "metadata": {"annotations": {"carbonaware.io/held-by-check": "carbon"}},
        "spec": {"active": False},
    }
    held = {**WORKLOAD, **hold, "status": {}}
    assert not gate_objects.is_active(held)
    assert gate_objects.held_by(held) == "carbon"
    # Kueue may drop the state of an inactive Workload: still ours to release.
    assert gate_objects.gated_state(held, {"carbon": "gb"}) == {
        "name": "carbon",
        "state": "Pending",
    }
    release = gate_objects.build_hold_patch(None)
    assert release["spec"] == {"active": True}
    assert release["metadata"]["annotations"] == {"carbonaware.io/held-by-check": None}
    assert gate_objects.is_active(WORKLOAD)


def test_active_condition_written_once():
    check = {"metadata": {"name": "carbon", "generation": 1}}
    patch = gate_objects.build_active_patch(check, True, "ok", NOW)
    assert patch["status"]["conditions"][0]["type"] == "Active"
    assert patch["status"]["conditions"][0]["status"] == "True"
    assert gate_objects.build_active_patch({**check, **patch}, True, "ok", NOW) is None


def test_the_log_configmap_goes_with_its_workload():
    body = gate_objects.build_workload_log_configmap(WORKLOAD, "csv", {"zone": "GB"})
    assert body["metadata"]["name"] == "job-train-1a2b3-carbon-log"
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"]) == ("Workload", "u-1")
    assert body["metadata"]["labels"]["carbonaware.io/workload"] == "job-train-1a2b3"
    assert "carbonaware.io/job" not in body["metadata"]["labels"]


def test_events_name_the_workload():
    event = gate_objects.build_event(WORKLOAD, "CarbonGateOpen", "carbon gate open: ...", NOW)
    assert event["involvedObject"]["kind"] == "Workload"
    assert event["involvedObject"]["uid"] == "u-1"
    assert event["type"] == "Normal"
    assert gate_objects.build_event(WORKLOAD, "CarbonGateRejected", "x", NOW)["type"] == "Warning"


def test_the_accounting_goes_on_the_workload():
    from carbonaware.core import accounting
    from carbonaware.core.model import Reading

    readings = [
        Reading("GB", NOW + timedelta(hours=h), v) for h, v in ((0, 500), (1, 500), (2, 50))
    ]
    energy = accounting.energy_from(None, 150, timedelta(hours=1), 1.2)
    start = NOW + timedelta(hours=2)
    report = accounting.account(energy, [(start, start + timedelta(hours=1))], NOW, readings)
    patch = gate_objects.build_accounting_patch(report)["metadata"]["annotations"]
    assert patch["carbonaware.io/energy-kwh"] == "0.18"
    assert patch["carbonaware.io/emissions-grams"] == "9"  # 0.18 kWh at 50 g/kWh
    assert patch["carbonaware.io/saved-grams"] == "81"  # vs 0.18 kWh at 500 at submission
    assert "estimated" in gate_objects.accounting_summary(report)
