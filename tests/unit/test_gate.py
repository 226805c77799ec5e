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
)
from carbonaware.core.model import Reading
from carbonaware.core.policy import PolicySettings, Strategy, decide
from hypothesis import given
from hypothesis import strategies as st

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
SETTINGS = PolicySettings(Strategy.THRESHOLD, 100, timedelta(hours=6), timedelta(hours=1))


def reading(value: float, at: datetime = T0) -> Reading:
    return Reading("GB", at, value)


def test_a_dirty_grid_keeps_the_workload_out_of_the_queue_and_says_why():
    decision = decide(SETTINGS, T0, T0, [reading(300)], [])
    update = check_update(decision)
    assert (update.state, update.active) == ("Pending", False)
    assert "intensity 300 g/kWh above threshold 100" in update.message
    assert "deadline in 6h" in update.message


def test_a_clean_grid_opens_the_gate():
    update = check_update(decide(SETTINGS, T0, T0, [reading(50)], []))
    assert (update.state, update.active) == ("Ready", True)
    assert update.message.startswith("carbon gate open: intensity 50 g/kWh")


def test_the_deadline_opens_the_gate_on_a_grid_that_never_cleans():
    late = T0 + timedelta(hours=6)
    update = check_update(decide(SETTINGS, T0, late, [reading(900, late)], []))
    assert update.state == "Ready"
    assert "deadline reached" in update.message


@given(st.floats(min_value=0, max_value=2000), st.integers(min_value=0, max_value=7 * 3600))
def test_the_gate_opens_exactly_when_the_policy_says_run(value, elapsed_s):
    now = T0 + timedelta(seconds=elapsed_s)
    decision = decide(SETTINGS, T0, now, [reading(value, now)], [])
    update = check_update(decision)
    assert update.active == decision.run == (value <= 100 or elapsed_s >= 6 * 3600)
    assert update.message.startswith("carbon gate")
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
