"""Interruptible jobs against a real control plane: suspend while dirty, resume when clean.

The operator runs as in test_operator.py (a subprocess under its own ServiceAccount, the
manifests' RBAC) on the demo trace replayed 2400x (one trace hour per 1.5 s). From 03:00 on
its second day the trace goes clean (~100 g/kWh until 06:00) → dirty (up to 223 in the day)
→ clean (115 and 110 at 03:00-04:00 on the third day). A 6 h job submitted at 03:00 with a 20 h
maximum delay must finish by 05:00 on day three; the pure rule
(core.interruptible.should_run, the one the backtest scores) runs it in the first night,
pauses it through the day and resumes it for the cleanest steps left.

This tier has no node, so no pod ever runs: suspending makes the real Job controller delete
the (pending) pod and resuming makes it create a new one, and at the end the test plays the
kubelet and reports the new pod finished (as test_operator.py does) so the real Job
controller completes the Job. The same job on a real node — the real trainer in real pods
getting SIGTERM on suspension, checkpointing to a hostPath PersistentVolume, exiting 75, a new
pod resuming from the checkpoint and finishing, with the same accounting check — is
test_interruptible_job_was_suspended_resumed_and_finished in tests/e2e/test_product.py; the
trainer's SIGTERM → checkpoint → resume alone is in tests/unit/test_trainer_cli.py and
tests/integration/test_trainer_image.py.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from carbonaware.core.accounting import emissions_over_segments
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.plotting import run_segments
from cluster_fixtures import off_node, wait_for
from test_operator import (  # noqa: F401  (operator: the fixture)
    create,
    event_reasons,
    finish_pod,
    get,
    jobs_of,
    operator,
    parse,
    status,
    wait_phase,
)

pytestmark = pytest.mark.integration

NAME = "pausable"
SPEC = {
    "zone": "SYNTHETIC",
    "provider": {"name": "replay", "speed": 2400, "start": "27h"},  # day 2, 03:00: 99 g/kWh
    "pollInterval": "1s",
    "maxDelay": "20h",
    "expectedDuration": "6h",
    "interruptible": True,
    "power": {"watts": 100, "pue": 1.2},
    "trainer": off_node({"epochs": 1, "checkpointVolume": {"claimName": "mnist-checkpoints"}}),
}


def _job(kube_api, namespace: str, name: str):
    from kubernetes import client

    return client.BatchV1Api(kube_api).read_namespaced_job(name, namespace)


def _live_pods(kube_api, namespace: str, job_name: str) -> list:
    from kubernetes import client

    pods = client.CoreV1Api(kube_api).list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_name}"
    )
    return [p for p in pods.items if p.metadata.deletion_timestamp is None]


def _condition(current: dict, type: str) -> dict | None:
    return next((c for c in current.get("conditions") or [] if c["type"] == type), None)


def test_suspends_while_dirty_resumes_when_clean_and_accounts_over_segments(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
) -> None:
    ns = operator.namespace
    create(kube_api, ns, NAME, SPEC)

    # Clean now: the Job is created running, with the checkpoint claim mounted.
    running = wait_phase(kube_api, ns, NAME, "Running", timeout=30)
    job_name = running["jobName"]
    job = _job(kube_api, ns, job_name)
    assert job.spec.suspend is False
    assert running["segments"][0].keys() == {"start"}  # one segment, still open
    claims = [v.persistent_volume_claim for v in job.spec.template.spec.volumes]
    assert "mnist-checkpoints" in {c.claim_name for c in claims if c}
    wait_for(lambda: _live_pods(kube_api, ns, job_name), 30, "the Job's first pod")

    # Dirty day ahead, cleaner night after it: suspended (the pod goes: SIGTERM in real life).
    # (The operator patches the Job, then writes status at the end of its tick: wait for both.)
    paused = wait_for(
        lambda: (
            (c := status(kube_api, ns, NAME)).get("decision", {}).get("action") == "pause" and c
        ),
        40,
        "the operator to pause the job",
    )
    assert _job(kube_api, ns, job_name).spec.suspend is True
    assert _condition(paused, "Suspended")["status"] == "True", paused
    assert paused["decision"]["action"] == "pause"
    assert len(paused["segments"]) == 1 and "end" in paused["segments"][0]
    assert paused["currentIntensity"] > 110  # left the first night's ~100 g/kWh
    wait_for(lambda: "Suspended" in event_reasons(kube_api, ns, NAME), 10, "a Suspended Event")
    wait_for(
        lambda: not _live_pods(kube_api, ns, job_name), 30, "the Job controller to drop the pod"
    )
    job_suspended = wait_for(
        lambda: next(
            (
                c
                for c in _job(kube_api, ns, job_name).status.conditions or []
                if c.type == "Suspended" and c.status == "True"
            ),
            None,
        ),
        30,
        "the Job's own Suspended condition",
    )
    assert job_suspended.type == "Suspended"

    # Clean again before the latest finish: resumed (a new pod resumes from the checkpoint).
    resumed = wait_for(
        lambda: (c := status(kube_api, ns, NAME)).get("decision", {}).get("action") == "run" and c,
        60,
        "the operator to resume the job",
    )
    assert _job(kube_api, ns, job_name).spec.suspend is False
    assert _condition(resumed, "Suspended")["status"] == "False"
    assert resumed["decision"]["action"] == "run"
    assert len(resumed["segments"]) == 2 and resumed["segments"][1].keys() == {"start"}
    assert resumed["currentIntensity"] < paused["currentIntensity"]
    wait_for(lambda: "Resumed" in event_reasons(kube_api, ns, NAME), 10, "a Resumed Event")
    wait_for(lambda: _live_pods(kube_api, ns, job_name), 30, "the resumed Job's new pod")

    # No node: play the kubelet for the new pod; the real Job controller completes the Job.
    result = {"accuracy": 0.97, "epochs": 1, "wall_seconds": 30.0, "device": "cpu"}
    finish_pod(kube_api, ns, job_name, 0, json.dumps(result))
    done = wait_phase(kube_api, ns, NAME, "Succeeded", timeout=60)

    segments = done["segments"]
    assert len(segments) >= 2 and all("end" in s for s in segments)
    spans = [(parse(s["start"]), parse(s["end"])) for s in segments]
    gap = spans[1][0] - spans[0][1]
    assert gap > timedelta(hours=12)  # it sat out the dirty day
    # Emissions integrate over the segments only, against the readings in the job's log.
    log_cm = get_log(kube_api, ns, done["logConfigMap"])
    stored = IntensityLog.from_csv(log_cm["carbon_log.csv"])
    readings = stored.readings
    # The plot shades the run segments, not one run across the pause.
    assert run_segments(stored.metadata) == spans
    expected = emissions_over_segments(done["energyKWh"], spans, readings)
    assert expected.method == "integrated"
    assert done["emissionsGrams"] == pytest.approx(expected.grams, abs=1e-6)  # status: 6 dp
    through_the_day = emissions_over_segments(
        done["energyKWh"], [(spans[0][0], spans[-1][1])], readings
    )
    assert done["emissionsGrams"] < through_the_day.grams  # pausing saved carbon
    assert done["energyMethod"] == "estimated"
    # Energy over every segment, not the last pod's 30 s (its report is all the operator gets:
    # the earlier pods' went with them). Segments are in trace time, replayed at 2400x.
    ran_wall_s = sum((b - a).total_seconds() for a, b in spans) / SPEC["provider"]["speed"]
    assert done["energyKWh"] == pytest.approx(100 * 1.2 * ran_wall_s / 3.6e6, rel=1e-3)
    assert get(kube_api, ns, NAME)["spec"]["interruptible"] is True


def get_log(kube_api, namespace: str, name: str) -> dict:
    from kubernetes import client

    return client.CoreV1Api(kube_api).read_namespaced_config_map(name, namespace).data


def test_an_interruptible_job_submitted_into_a_dirty_evening_waits_without_a_job(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
) -> None:
    ns = operator.namespace
    # 10:00 on day one (206 g/kWh); the night ahead (99-113 g/kWh) holds all 4 h of work.
    spec = SPEC | {"provider": {**SPEC["provider"], "start": "10h"}, "expectedDuration": "4h"}
    create(kube_api, ns, "evening", spec)
    waiting = wait_phase(kube_api, ns, "evening", "Waiting", timeout=30)
    assert waiting["decision"]["reason"].startswith("pause:"), waiting["decision"]
    assert "jobName" not in waiting and "segments" not in waiting
    assert jobs_of(kube_api, ns, "evening") == []


def test_without_a_provider_forecast_the_own_forecaster_plans_the_pauses(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
    fault_server,
) -> None:
    """The loopback Electricity Maps has no forecast (401 "not in plan"). Its zone's past two
    weeks are dirty (300 g/kWh) except two clean hours (50) from three hours from now; the
    own forecaster sees that daily shape, so a 1 h job with 8 h of slack waits for it instead
    of running into the dirty hours now (with no forecast at all it would run at once)."""
    from datetime import UTC, datetime

    from kubernetes import client

    ns, zone = operator.namespace, "OWN-SHAPE"
    hour = datetime.now(UTC).hour
    fault_server.set(zone, intensity=300, by_hour={(hour + 3) % 24: 50, (hour + 4) % 24: 50})
    client.CoreV1Api(kube_api).create_namespaced_secret(
        ns,
        client.V1Secret(metadata=client.V1ObjectMeta(name="em-shape"), string_data={"token": "t"}),
    )
    spec = {
        "zone": zone,
        "provider": {
            "name": "electricitymaps",
            "baseUrl": fault_server.base_url,
            "secretRef": {"name": "em-shape"},
        },
        "pollInterval": "1s",
        "maxDelay": "8h",
        "expectedDuration": "1h",
        "interruptible": True,
        "trainer": off_node(),
    }
    create(kube_api, ns, "shaped", spec)
    waiting = wait_phase(kube_api, ns, "shaped", "Waiting", timeout=30)
    decision = waiting["decision"]
    assert decision["reason"].startswith("pause:"), decision
    assert "own forecaster" in decision["reason"], decision
    assert decision.get("forecastSource") == "own-forecaster", decision
    assert jobs_of(kube_api, ns, "shaped") == []
    assert fault_server.count(zone, "past-range") >= 1  # the two weeks were asked for
