"""core/gate.py: the check state the carbon gate writes for a decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.gate import (
    COUNTDOWN_REFRESH_SECONDS,
    MESSAGE_LIMIT,
    CheckUpdate,
    OverrideError,
    check_update,
    needs_write,
    parse_overrides,
    requeue_after,
)
from carbonaware.core.model import Reading
from carbonaware.core.policy import PolicySettings, Strategy, decide
from hypothesis import given
from hypothesis import strategies as st

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
POLL = timedelta(minutes=5)
SETTINGS = PolicySettings(Strategy.THRESHOLD, 100, timedelta(hours=6), timedelta(hours=1))


def reading(value: float, at: datetime = T0) -> Reading:
    return Reading("GB", at, value)


def test_a_dirty_grid_with_quota_releases_it_and_says_why():
    decision = decide(SETTINGS, T0, T0, [reading(300)], [])
    update = check_update(decision, T0, POLL, quota_reserved=True)
    assert update.state == "Retry"
    assert update.requeue_after_seconds == 300
    assert "intensity 300 g/kWh above threshold 100" in update.message
    assert "deadline in 6h" in update.message


def test_a_dirty_grid_without_quota_stays_pending_with_the_plan():
    decision = decide(SETTINGS, T0, T0, [reading(300)], [])
    update = check_update(decision, T0, POLL, quota_reserved=False)
    assert update == CheckUpdate("Pending", update.message, None)
    assert "above threshold" in update.message


def test_a_clean_grid_opens_the_gate_with_or_without_quota():
    decision = decide(SETTINGS, T0, T0, [reading(50)], [])
    for quota in (True, False):
        update = check_update(decision, T0, POLL, quota)
        assert update.state == "Ready"
        assert update.message.startswith("carbon gate open: intensity 50 g/kWh")


def test_the_deadline_opens_the_gate_on_a_grid_that_never_cleans():
    late = T0 + timedelta(hours=6)
    decision = decide(SETTINGS, T0, late, [reading(900, late)], [])
    assert check_update(decision, late, POLL, True).state == "Ready"
    assert "deadline reached" in check_update(decision, late, POLL, True).message


def test_requeue_never_passes_the_deadline():
    now = T0 + timedelta(hours=6) - timedelta(seconds=40)
    decision = decide(SETTINGS, T0, now, [reading(900, now)], [])
    assert requeue_after(decision, now, POLL) == 40


@given(
    st.floats(min_value=0, max_value=2000),
    st.integers(min_value=0, max_value=6 * 3600),
    st.integers(min_value=1, max_value=3600),
    st.booleans(),
)
def test_a_waiting_check_looks_again_by_the_deadline(value, elapsed_s, poll_s, quota):
    now = T0 + timedelta(seconds=elapsed_s)
    decision = decide(SETTINGS, T0, now, [reading(value, now)], [])
    update = check_update(decision, now, timedelta(seconds=poll_s), quota)
    assert update.state in ("Ready", "Retry", "Pending")
    assert (update.state == "Ready") == decision.run
    assert (update.requeue_after_seconds is not None) == (update.state == "Retry")
    if update.requeue_after_seconds is not None:
        left = (decision.deadline - now).total_seconds()
        assert 1 <= update.requeue_after_seconds <= max(1, min(poll_s, int(left) + 1))
    assert len(update.message) <= MESSAGE_LIMIT


def test_overrides_from_annotations():
    found = parse_overrides(
        {"carbonaware.io/expected-duration": "2h", "carbonaware.io/max-delay": "90m"}
    )
    assert found.expected_duration == timedelta(hours=2)
    assert found.max_delay == timedelta(minutes=90)
    assert parse_overrides(None).max_delay is None


@pytest.mark.parametrize(
    "annotations",
    [{"carbonaware.io/max-delay": "soon"}, {"carbonaware.io/expected-duration": "0s"}],
)
def test_a_bad_override_names_the_annotation(annotations):
    with pytest.raises(OverrideError, match=r"annotation carbonaware\.io/"):
        parse_overrides(annotations)


def test_only_a_new_state_or_reading_is_written_often():
    stored = {"state": "Pending", "message": "carbon gate: ... deadline in 5h59m"}
    moved = CheckUpdate("Pending", "carbon gate: ... deadline in 5h58m")
    assert not needs_write(stored, moved, same_reading=True, since_written_s=60)
    assert needs_write(stored, moved, same_reading=False, since_written_s=60)
    assert needs_write(stored, moved, True, COUNTDOWN_REFRESH_SECONDS)
    assert needs_write(stored, CheckUpdate("Ready", "x"), True, 0)
    assert not needs_write(stored, CheckUpdate("Pending", stored["message"]), False, 1e9)
    reset = {"state": "Pending", "message": "Reset to Pending after eviction. Previously: Retry"}
    assert needs_write(reset, moved, same_reading=True, since_written_s=0)
