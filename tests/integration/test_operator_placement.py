"""spec.placements on a real control plane: the Job lands where the policy chose, and a
placement whose pods cannot schedule falls back to the next-best one.

This tier has no node: the real kube-scheduler marks every pod Unschedulable (no node
matches), which is exactly what the capacity fallback watches for; the Job's nodeSelector
shows where the operator placed it. Readings: the static provider, one value per zone
(DIRTY 500 g/kWh through the job's provider, CLEAN 80 through the placement's own), so the
choice does not depend on the time of day.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from carbonaware.kube.pod_placement import ZONE_ANNOTATION
from cluster_fixtures import off_node, wait_for
from test_operator import (  # noqa: F401  (operator: the fixture)
    create,
    jobs_of,
    operator,
    status,
    wait_events,
    wait_phase,
)

pytestmark = pytest.mark.integration

LABEL = "carbonaware.test/grid-zone"
GRACE = "10s"


@pytest.fixture(scope="module", autouse=True)
def short_grace() -> Iterator[None]:
    """The operator of this module gives a placement 10 s to schedule (default 5 min)."""
    before = os.environ.get("CARBONAWARE_PLACEMENT_GRACE")
    os.environ["CARBONAWARE_PLACEMENT_GRACE"] = GRACE
    yield
    if before is None:
        os.environ.pop("CARBONAWARE_PLACEMENT_GRACE", None)
    else:
        os.environ["CARBONAWARE_PLACEMENT_GRACE"] = before


def placed_spec(threshold: float) -> dict:
    return {
        "placements": [
            {"zone": "DIRTY", "nodeSelector": {LABEL: "dirty"}},
            {
                "zone": "CLEAN",
                "provider": {"name": "static", "value": 80},
                "nodeSelector": {LABEL: "clean"},
            },
        ],
        "provider": {"name": "static", "value": 500},
        "thresholdGramsPerKWh": threshold,
        "pollInterval": "1s",
        "trainer": off_node({"epochs": 1}),
    }


def test_runs_in_the_clean_zone_then_falls_back_when_it_cannot_schedule(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
):
    ns, name = operator.namespace, "placed"
    create(kube_api, ns, name, placed_spec(threshold=600))  # both zones at or below it
    running = wait_phase(kube_api, ns, name, "Running", timeout=30)
    where = running["placement"]
    assert where["zone"] == "CLEAN" and where["index"] == 1
    assert "running in CLEAN" in where["reason"] and "DIRTY 500" in where["reason"]
    (job,) = jobs_of(kube_api, ns, name)
    assert job.metadata.name == running["jobName"]
    assert job.spec.template.spec.node_selector[LABEL] == "clean"
    assert job.metadata.annotations[ZONE_ANNOTATION] == "CLEAN"
    # running there, the job polls (and accounts with) the zone it runs in
    wait_for(lambda: status(kube_api, ns, name).get("currentIntensity") == 80, 8, "a CLEAN reading")

    # No node has the label: the scheduler marks the pod Unschedulable; after the grace
    # period the operator suspends that Job and starts one in the next-best placement.
    def fell_back() -> dict | None:
        current = status(kube_api, ns, name)
        placed = current.get("placement") or {}
        moved = placed.get("zone") == "DIRTY" and current.get("phase") == "Running"
        return current if moved else None

    moved = wait_for(fell_back, 60, "the fallback to DIRTY", interval_s=0.5)
    assert moved["placement"]["unschedulable"] == ["CLEAN"]
    assert "could not be scheduled" in moved["placement"]["fellBack"]
    jobs = {j.metadata.name: j for j in jobs_of(kube_api, ns, name)}
    assert set(jobs) == {job.metadata.name, moved["jobName"]}
    assert jobs[job.metadata.name].spec.suspend is True  # the given-up Job: no pods
    assert jobs[moved["jobName"]].spec.template.spec.node_selector[LABEL] == "dirty"
    assert moved["currentIntensity"] == 500  # and polls DIRTY again
    wait_events(kube_api, ns, name, {"PlacementUnschedulable", "JobCreated"})
    # nowhere else to go: the DIRTY Job stays, waiting for capacity
    wait_for(lambda: len(jobs_of(kube_api, ns, name)) == 2, 5, "no third Job")
    assert status(kube_api, ns, name)["jobName"] == moved["jobName"]


def test_waits_in_no_zone_above_the_threshold_and_says_why(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
):
    ns, name = operator.namespace, "placed-wait"
    create(kube_api, ns, name, placed_spec(threshold=50))  # neither zone that clean
    waiting = wait_phase(kube_api, ns, name, "Waiting", timeout=30)
    assert "every zone above threshold 50 g/kWh (DIRTY 500, CLEAN 80)" in waiting["message"]
    assert jobs_of(kube_api, ns, name) == []
    assert "placement" not in waiting  # written when it starts: no churn while it waits


def test_forecast_strategy_says_where_and_what_it_promised(
    operator,  # noqa: F811  (the fixture imported above)
    kube_api,
    kubectl,
    kubeconfig,
):
    ns, name = operator.namespace, "placed-forecast"
    spec = placed_spec(threshold=600) | {"strategy": "forecast", "expectedDuration": "2h"}
    create(kube_api, ns, name, spec)
    running = wait_phase(kube_api, ns, name, "Running", timeout=30)
    where = running["placement"]  # kept by the status schema, not pruned
    assert where["zone"] == "CLEAN" and where["index"] == 1
    assert "running in CLEAN" in where["reason"] and "others DIRTY 500" in where["reason"]
    # flat static forecasts: 80 there against 500 at once in the first placement
    assert where["forecastSavingVsDefaultNowPercent"] == 84.0
    assert where["forecastSavingVsDefaultBestStartPercent"] == 84.0
    wide = subprocess.run(
        [kubectl, "--kubeconfig", str(kubeconfig), "-n", ns, "get", "caj", name, "-o", "wide"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.splitlines()
    assert "PLACED" in wide[0].split() and "CLEAN" in wide[1].split()
