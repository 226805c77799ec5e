"""Per-job counters from the status the operator publishes (kube/metrics.job_counts), and
the names Prometheus conventions ask for."""

from __future__ import annotations

from carbonaware.kube import metrics
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY, generate_latest

WAITING = {"phase": "Waiting", "deadline": "2026-01-01T12:00:00Z"}
RUNNING_EARLY = {**WAITING, "phase": "Running", "startedAt": "2026-01-01T03:00:00Z"}
RUNNING_LATE = {**WAITING, "phase": "Running", "startedAt": "2026-01-01T12:00:01Z"}
DONE = {
    **RUNNING_EARLY,
    "phase": "Succeeded",
    "energyKWh": 0.5,
    "emissionsGrams": 40.0,
    "savedGrams": -3.0,
}


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_first_status_seen_only_sets_the_baseline() -> None:
    assert metrics.job_counts(None, DONE) == metrics.JobCounts()


def test_a_start_before_the_deadline_is_grid_triggered_and_at_it_deadline_triggered() -> None:
    assert metrics.job_counts(WAITING, RUNNING_EARLY).started == "grid"
    assert metrics.job_counts(WAITING, RUNNING_LATE).started == "deadline"


def test_finishing_counts_outcome_energy_in_joules_emissions_and_saving() -> None:
    counts = metrics.job_counts(RUNNING_EARLY, DONE)
    assert counts.finished == "Succeeded" and counts.started is None
    assert counts.energy_j == 0.5 * 3.6e6
    assert (counts.emissions_g, counts.saved_g) == (40.0, -3.0)
    failed = metrics.job_counts(RUNNING_EARLY, {**RUNNING_EARLY, "phase": "Failed"})
    assert failed.finished == "Failed" and failed.emissions_g is None


statuses = st.fixed_dictionaries(
    {},
    optional={
        "phase": st.sampled_from(["Pending", "Waiting", "Running", "Succeeded", "Failed"]),
        "startedAt": st.just("2026-01-01T03:00:00Z"),
        "deadline": st.just("2026-01-01T12:00:00Z"),
        "emissionsGrams": st.floats(0, 1e6),
        "savedGrams": st.floats(-1e6, 1e6),
        "energyKWh": st.floats(0, 1e3),
    },
)


@given(statuses, statuses)
def test_a_status_seen_again_counts_nothing(before: dict, after: dict) -> None:
    metrics.job_counts(before, after)
    assert metrics.job_counts(after, after) == metrics.JobCounts()


def test_observe_job_labels_counters_with_namespace_and_zone() -> None:
    body = {"metadata": {"uid": "u-1", "namespace": "team-a"}, "spec": {"zone": "DE"}}
    labels = {"namespace": "team-a", "zone": "DE"}
    before = {
        name: value(name, **labels)
        for name in (
            "carbonaware_emissions_grams_total",
            "carbonaware_excess_grams_total",
            "carbonaware_saved_grams_total",
            "carbonaware_energy_joules_total",
        )
    }
    started = value("carbonaware_jobs_started_total", **labels, trigger="grid")
    for status in (WAITING, RUNNING_EARLY, DONE, DONE):
        metrics.observe_job("MODIFIED", {**body, "status": status})
    assert value("carbonaware_jobs_started_total", **labels, trigger="grid") == started + 1
    assert (
        value("carbonaware_emissions_grams_total", **labels)
        == before["carbonaware_emissions_grams_total"] + 40
    )
    # A negative saving is excess; the saved series exists too (at +0).
    assert (
        value("carbonaware_excess_grams_total", **labels)
        == before["carbonaware_excess_grams_total"] + 3
    )
    assert (
        value("carbonaware_saved_grams_total", **labels) == before["carbonaware_saved_grams_total"]
    )
    assert (
        value("carbonaware_energy_joules_total", **labels)
        == before["carbonaware_energy_joules_total"] + 1.8e6
    )
    metrics.observe_job("DELETED", body)


def test_metric_names_follow_prometheus_conventions() -> None:
    text = generate_latest(REGISTRY).decode()
    families = {
        line.split()[2]: line.split()[3]
        for line in text.splitlines()
        if line.startswith("# TYPE carbonaware_")
    }
    assert families["carbonaware_build_info"] == "gauge"
    assert 'carbonaware_build_info{python_version="' in text
    for name, kind in families.items():
        if kind == "counter":
            assert name.endswith("_total"), name
        assert "kwh" not in name or name == "carbonaware_grid_intensity_grams_per_kwh", name
    assert families["carbonaware_provider_request_duration_seconds"] == "histogram"


def test_a_new_namespace_and_zone_start_their_series_at_zero() -> None:
    """So Prometheus sees the first failure as an increase (and its alert fires)."""
    body = {"metadata": {"uid": "u-2", "namespace": "team-z"}, "spec": {"zone": "GB"}}
    labels = {"namespace": "team-z", "zone": "GB"}
    assert (
        REGISTRY.get_sample_value("carbonaware_jobs_finished_total", labels | {"phase": "Failed"})
        is None
    )
    metrics.observe_job("ADDED", {**body, "status": {}})
    assert (
        REGISTRY.get_sample_value("carbonaware_jobs_finished_total", labels | {"phase": "Failed"})
        == 0
    )
    assert (
        REGISTRY.get_sample_value(
            "carbonaware_jobs_started_total", labels | {"trigger": "deadline"}
        )
        == 0
    )
    metrics.observe_job("DELETED", body)
