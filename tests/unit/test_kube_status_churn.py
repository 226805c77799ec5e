"""A waiting job's status is not rewritten each minute for its countdown alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carbonaware.core.model import Reading
from carbonaware.core.policy import Decision, PolicySettings, Strategy, decide
from carbonaware.kube.status import (
    COUNTDOWN_REFRESH_SECONDS,
    decision_status,
    only_the_countdown_moved,
)

SUBMITTED = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
READING = Reading("DE", SUBMITTED, 300.0)
SETTINGS = PolicySettings(
    strategy=Strategy.THRESHOLD,
    threshold_g_per_kwh=100,
    max_delay=timedelta(hours=6),
    expected_duration=timedelta(hours=1),
)


def waiting_at(minutes: int) -> Decision:
    now = SUBMITTED + timedelta(minutes=minutes)
    return decide(SETTINGS, SUBMITTED, now, [READING], [])


def status_after(decision: Decision) -> dict:
    reading = {"lastReadingTime": "2026-12-02T09:00:00Z", "currentIntensity": 300.0}
    return {"phase": "Waiting", "decision": decision_status(decision)} | reading


def test_a_countdown_a_minute_on_is_not_worth_a_write() -> None:
    before, later = waiting_at(0), waiting_at(1)
    assert before.reason != later.reason  # "deadline in 6h" vs "deadline in 5h59m"
    current = status_after(before)
    assert only_the_countdown_moved(current, dict(current), later, since_written_s=60)


def test_it_is_written_again_after_the_refresh_or_with_any_news() -> None:
    current = status_after(waiting_at(0))
    later = waiting_at(11)
    assert not only_the_countdown_moved(
        current, dict(current), later, since_written_s=COUNTDOWN_REFRESH_SECONDS
    )
    new_reading = dict(current) | {"lastReadingTime": "2026-12-02T10:00:00Z"}
    assert not only_the_countdown_moved(current, new_reading, later, since_written_s=60)
    new_value = dict(current) | {"currentIntensity": 290.0}
    assert not only_the_countdown_moved(current, new_value, later, since_written_s=60)
    running = decide(SETTINGS, SUBMITTED, SUBMITTED, [Reading("DE", SUBMITTED, 50.0)], [])
    assert not only_the_countdown_moved(current, dict(current), running, since_written_s=60)
    pending = dict(current) | {"phase": "Pending"}
    assert not only_the_countdown_moved(pending, dict(pending), later, since_written_s=60)


def test_status_is_written_through_the_typed_model() -> None:
    import pytest
    from carbonaware.kube.status import build_status
    from pydantic import ValidationError

    desired = {"phase": "Waiting", "readingCount": 3, "decision": decision_status(waiting_at(5))}
    assert build_status(desired | {"notOurs": 1}) == desired
    # None clears a field: the merge patch then removes it from the stored status (a
    # placement fallback clears jobName so that the job decides again)
    assert build_status(desired | {"jobName": None}) == desired | {"jobName": None}
    cleared = build_status({"placement": {"zone": None, "unschedulable": ["NL"]}})
    assert cleared == {"placement": {"zone": None, "unschedulable": ["NL"]}}
    from carbonaware.kube.conditions import build_status_patch

    stored = {"jobName": "j", "phase": "Running"}
    assert build_status_patch(stored, build_status({"jobName": None})) == {"jobName": None}
    with pytest.raises(ValidationError):
        build_status({"phase": "Sleeping"})
    with pytest.raises(ValidationError):
        build_status({"energyKWh": float("nan")})


def test_ready_complete_and_failed_conditions_follow_the_phase() -> None:
    """Tools that do not know this CRD (kstatus, Flux, Argo CD, anything reading batch/v1
    Jobs) read Ready, and Complete / Failed as a Job sets them; each says its generation."""
    from carbonaware.kube.status import set_condition_now, set_ecosystem_conditions

    def by_type(desired: dict) -> dict:
        return {c["type"]: c for c in desired["conditions"]}

    waiting = {"phase": "Waiting", "message": "deadline in 5h"}
    set_ecosystem_conditions(waiting, 3)
    ready = by_type(waiting)["Ready"]
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "False",
        "Waiting",
        3,
    )
    assert set(by_type(waiting)) == {"Ready"}
    later = waiting | {"message": "deadline in 4h"}
    set_ecosystem_conditions(later, 3)
    assert later["conditions"] == waiting["conditions"]  # a new countdown changes no condition

    done = {"phase": "Succeeded", "conditions": waiting["conditions"]}
    set_ecosystem_conditions(done, 3)
    assert by_type(done)["Ready"]["status"] == "True"
    assert by_type(done)["Complete"]["status"] == "True"
    assert "Failed" not in by_type(done)

    failed = {"phase": "Failed", "message": "the Job failed: BackoffLimitExceeded"}
    set_condition_now(failed, "Succeeded", False, "JobFailed", failed["message"], 4)
    set_ecosystem_conditions(failed, 4)
    assert by_type(failed)["Failed"]["status"] == "True"
    assert by_type(failed)["Failed"]["reason"] == "JobFailed"
    assert by_type(failed)["Ready"]["status"] == "False"
    assert "Complete" not in by_type(failed)
