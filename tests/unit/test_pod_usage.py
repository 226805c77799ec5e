"""The kubelet Summary API parser and the per-container sample keeper (kube/pod_usage.py).

data/kubelet_summary.json has the shape of k8s.io/kubelet/pkg/apis/stats/v1alpha1.Summary
(types.go, kubelet v0.36.3: node, pods[].podRef, containers[].cpu.usageCoreNanoSeconds,
memory.workingSetBytes, ...); the values are made up. It is a stand-in for a live kubelet,
which needs the node this machine reserves for the e2e tier: tests/e2e/test_node_pod_energy.py
reads the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from carbonaware.kube.pod_usage import UsageTracker, cpu_cores, parse_summary

SUMMARY = json.loads((Path(__file__).parent / "data" / "kubelet_summary.json").read_text())


def pod(uid: str, name: str, cpu: str | None = "500m", end: str | None = None) -> dict:
    state = {"terminated": {"finishedAt": end}} if end else {"running": {}}
    requests = {"cpu": cpu} if cpu else {}
    return {
        "metadata": {"uid": uid, "name": name, "namespace": "ml"},
        "spec": {"containers": [{"name": "burn", "resources": {"requests": requests}}]},
        "status": {
            "phase": "Succeeded" if end else "Running",
            "startTime": "2026-12-07T21:00:00Z",
            "containerStatuses": [{"name": "burn", "state": state}],
        },
    }


def test_the_job_pods_containers_are_read_and_other_pods_and_counterless_ones_are_not():
    samples = parse_summary(SUMMARY, "ml", {"uid-0", "uid-1"})
    assert [(s.pod, s.container, s.core_seconds) for s in samples] == [
        ("burn-0-abcde", "burn", 8.25),
        ("burn-0-abcde", "sidecar", 0.25),
    ]
    assert parse_summary(SUMMARY, "default", {"uid-0"}) == []
    assert parse_summary({"pods": "garbage"}, "ml", {"uid-0"}) == []


def test_a_finished_pod_keeps_its_last_sample_and_counts_its_wall_time():
    tracker = UsageTracker()
    tracker.record([pod("uid-0", "burn-0-abcde")], parse_summary(SUMMARY, "ml", {"uid-0"}))
    later = json.loads(json.dumps(SUMMARY))
    later["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"] = 19_750_000_000
    tracker.record([], parse_summary(later, "ml", {"uid-0"}))
    # the pod ended; its stats are gone from the kubelet, the last sample stays
    tracker.record([pod("uid-0", "burn-0-abcde", end="2026-12-07T21:00:25Z")], [])
    [usage] = tracker.usages()
    assert usage.core_seconds == pytest.approx(20.0)
    assert usage.wall_seconds == 25.0 and usage.requested_cores == 0.5
    assert usage.memory_gb == pytest.approx(10737418 / 1024**3)


def test_a_restarted_container_counts_both_its_lives_and_an_older_sample_never_wins():
    tracker = UsageTracker()
    first = parse_summary(SUMMARY, "ml", {"uid-0"})
    tracker.record([pod("uid-0", "burn-0-abcde", cpu=None)], first)
    again = json.loads(json.dumps(SUMMARY))
    burn = again["pods"][0]["containers"][0]
    burn["startTime"], burn["cpu"]["usageCoreNanoSeconds"] = "2026-12-07T21:00:05Z", 1_000_000_000
    tracker.record([], parse_summary(again, "ml", {"uid-0"}))
    tracker.record([], first)  # a stale repeat of the first sample changes nothing
    assert tracker.usages()[0].core_seconds == pytest.approx(8.25 + 0.25 + 1.0)


def test_cpu_quantities():
    assert cpu_cores("500m") == 0.5 and cpu_cores("2") == 2.0 and cpu_cores(1.5) == 1.5
    assert cpu_cores(None) == 0.0 and cpu_cores("lots") == 0.0


def test_the_operator_uses_the_pods_cpu_time_unless_the_workload_reported_its_energy():
    from datetime import timedelta

    from carbonaware.core.pod_energy import JOULES_PER_KWH, kubelet_figure, model_for
    from carbonaware.core.workload_report import WorkloadReport
    from carbonaware.kube.job_energy import job_energy
    from carbonaware.kube.settings import OperatorSettings

    tracker = UsageTracker()
    tracker.record(
        [pod("uid-0", "burn-0-abcde", end="2026-12-07T21:00:25Z")],
        parse_summary(SUMMARY, "ml", {"uid-0"}),
    )
    settings = OperatorSettings(kubelet_cpu=True, cpu_model="Intel Xeon Platinum 8175M (Skylake)")
    args = dict(resumed=False, power_watts=150.0, pue=1.2, ran=timedelta(seconds=25))
    energy, choice = job_energy(settings, tracker, "ml", None, **args)
    expected = kubelet_figure(tracker.usages(), model_for(settings.cpu_model))
    assert energy.method == expected.label and not energy.measured
    assert energy.method.startswith("estimated:kubelet-cpu (1 pod, 8.5 core-s) × ccf:skylake")
    assert energy.kwh == pytest.approx(expected.kwh * 1.2)
    assert energy.kwh < 150 * 25 * 1.2 / JOULES_PER_KWH  # far below the assumed 150 W
    assert choice.split == ((expected.label, expected.kwh),)

    report = WorkloadReport(energy_kwh=0.01, energy_method="measured:rapl-package")
    energy, choice = job_energy(settings, tracker, "ml", report, **args)
    assert (energy.method, choice) == ("measured:rapl-package", None)

    energy, choice = job_energy(settings, UsageTracker(), "ml", None, **args)
    assert energy.method == "estimated" and "150 W assumed" in energy.detail and choice is None
