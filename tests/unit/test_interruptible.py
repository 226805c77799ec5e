"""Interruptible jobs: the offline plan and the operator's online run-or-pause rule."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from carbonaware.core.interruptible import (
    cleanest_steps,
    forecast_from_now,
    interruptible_window,
    plan_step,
    remaining_steps,
    run_or_pause,
    should_run,
)
from carbonaware.core.model import Reading
from hypothesis import given, settings
from hypothesis import strategies as st

intensities = st.lists(
    st.floats(min_value=0, max_value=900, allow_nan=False, allow_infinity=False),
    min_size=2,
    max_size=10,
)


def simulate(actual, forecast, job_steps, hysteresis):
    """Step one job through its window as the operator would, one should_run call per step."""
    ran, remaining, running = [], job_steps, False
    for step in range(len(actual)):
        running = should_run(forecast[step:], remaining, running, hysteresis)
        ran.append(running)
        remaining -= running
    return np.array(ran)


@settings(deadline=None)  # the machine is shared: no per-example time limit
@given(intensities, st.data())
def test_plan_is_the_cleanest_combination(values, data):
    job_steps = data.draw(st.integers(1, len(values)))
    mask = cleanest_steps(np.array(values), job_steps)
    best = min(sum(c) for c in itertools.combinations(values, job_steps))
    assert mask.sum() == job_steps
    assert np.array(values)[mask].sum() == pytest.approx(best)


@settings(max_examples=150, deadline=None)
@given(intensities, st.data())
def test_online_rule_covers_the_job_and_finishes_in_time(values, data):
    """Whatever the forecast error, the job runs exactly its length inside its window."""
    job_steps = data.draw(st.integers(1, len(values)))
    noise = data.draw(st.lists(st.floats(-0.9, 2.0), min_size=len(values), max_size=len(values)))
    forecast = np.array(values) * (1 + np.array(noise))
    hysteresis = data.draw(st.sampled_from([0.0, 0.05, 0.5]))
    ran = simulate(np.array(values), forecast, job_steps, hysteresis)
    assert ran.sum() == job_steps  # exactly the job's length, never more
    assert len(ran) == len(values)  # the window ends at the latest finish


@settings(deadline=None)
@given(intensities, st.data())
def test_online_rule_with_perfect_forecast_matches_the_plan(values, data):
    job_steps = data.draw(st.integers(1, len(values)))
    actual = np.array(values)
    ran = simulate(actual, actual, job_steps, hysteresis=0.0)
    best = min(sum(c) for c in itertools.combinations(values, job_steps))
    assert actual[ran].sum() == pytest.approx(best)


def test_hysteresis_keeps_a_running_job_running_near_the_cutoff():
    # Two clean hours, then readings that hover a hair above and below each other.
    actual = np.array([100, 100, 203, 200, 204, 201, 205, 202, 900, 900], dtype=float)
    flappy = simulate(actual, actual, 6, hysteresis=0.0)
    steady = simulate(actual, actual, 6, hysteresis=0.05)

    def segments(ran):
        return int(np.sum(ran & ~np.concatenate(([False], ran[:-1]))))

    assert segments(flappy) > 1
    assert segments(steady) == 1
    assert steady.sum() == flappy.sum() == 6


def test_no_slack_forces_a_run_even_on_a_dirty_step():
    assert should_run(np.array([900.0, 10.0]), 2, running=False)
    assert not should_run(np.array([900.0, 10.0]), 1, running=False)
    assert not should_run(np.array([10.0, 10.0]), 0, running=True)  # finished


def test_vectorised_form_decides_each_row_like_the_single_job_form():
    rng = np.random.default_rng(7)
    forecast = rng.uniform(0, 500, size=(50, 12))
    remaining = rng.integers(0, 13, size=50)
    running = rng.random(50) < 0.5
    together = run_or_pause(forecast, remaining, running, 0.1)
    one_by_one = [
        should_run(f, r, b, 0.1) for f, r, b in zip(forecast, remaining, running, strict=True)
    ]
    assert together.tolist() == one_by_one


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError):
        cleanest_steps(np.array([1.0, 2.0]), 3)
    with pytest.raises(ValueError):
        run_or_pause(np.array([1.0]), 1, False, hysteresis=-0.1)
    with pytest.raises(ValueError):
        interruptible_window(0, 0, 5)
    assert interruptible_window(10, 4, 24) == (10, 38)


def test_operator_forecast_row_starts_with_the_current_reading_and_holds_values_in_force():
    now = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    hour = timedelta(hours=1)
    forecast = [
        Reading("Z", datetime(2026, 1, 1, h, tzinfo=UTC), v, forecast=True)
        for h, v in ((10, 999.0), (12, 50.0), (14, 80.0))  # 10:00 is past: ignored
    ]
    row = forecast_from_now(300.0, forecast, now, now + 5 * hour, hour)
    # 10:30 now, 11:30 (no forecast yet: current), 12:30 and 13:30 (50), 14:30 (80)
    assert row.tolist() == [300.0, 300.0, 50.0, 50.0, 80.0]
    assert forecast_from_now(300.0, [], now, now - hour, hour).tolist() == [300.0]  # past due
    # the operator's row feeds the backtest's rule: two cleaner steps hold two steps of work
    assert not should_run(row, 2, running=False)
    assert should_run(row, 5, running=False)  # no slack


def test_remaining_steps_rounds_up_and_never_reaches_zero_before_the_job_ends():
    hour = timedelta(hours=1)
    assert remaining_steps(6 * hour, 2.5 * hour, hour) == 4
    assert remaining_steps(6 * hour, 6 * hour, hour) == 1
    assert remaining_steps(6 * hour, 9 * hour, hour) == 1


def test_a_running_job_is_paused_at_most_once_per_reading() -> None:
    """Polls within one hourly reading can flip the rounded plan; the job acts on the first
    change only, until the next reading, unless it has no slack left (then it runs)."""
    from carbonaware.core.interruptible import change_now

    hour = "2024-03-05T03:00Z"
    # Resumed on this reading: a pause answer later in the same hour is not acted on.
    assert not change_now(False, True, False, hour, changed_at_reading=hour)
    assert change_now(False, True, False, "2024-03-05T04:00Z", changed_at_reading=hour)
    # Paused on this reading: running again waits for the next reading ...
    assert not change_now(True, False, False, hour, changed_at_reading=hour)
    # ... unless the work left fills every step left.
    assert change_now(True, False, True, hour, changed_at_reading=hour)
    assert not change_now(True, True, True, hour, changed_at_reading=None)  # no change asked


# --- plan_step: one interruptible job's decision from its readings (the operator's) -------

PLAN_NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _hourly(values: list[float], start: datetime, forecast: bool = False) -> list[Reading]:
    return [
        Reading("GB", start + timedelta(hours=i), v, forecast=forecast)
        for i, v in enumerate(values)
    ]


def test_plan_step_pauses_for_cleaner_hours_ahead_and_says_why() -> None:
    actual = _hourly([300.0], PLAN_NOW)
    forecast = _hourly([290, 80, 70, 300, 300, 300], PLAN_NOW + timedelta(hours=1), True)
    step = plan_step(
        now=PLAN_NOW, latest_finish=PLAN_NOW + timedelta(hours=6), expected=timedelta(hours=2),
        ran=timedelta(0), actual=actual, forecast=forecast, running=False,
    )  # fmt: skip
    assert not step.run and not step.forced and step.reading_time == PLAN_NOW
    assert step.why.startswith("pause: 300 g/kWh now; 2 step(s) of 1:00:00 of work left in 6")
    assert step.why.endswith("before 2026-03-01T18:00:00Z, and cleaner steps ahead hold all of it")


@given(
    values=st.lists(st.floats(0, 1000, allow_nan=False), min_size=0, max_size=24),
    expected_h=st.integers(1, 12),
    ran_h=st.integers(0, 12),
    slack_h=st.integers(0, 24),
    running=st.booleans(),
    own=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_plan_step_runs_whenever_the_work_left_fills_the_time_left(
    values, expected_h, ran_h, slack_h, running, own
) -> None:
    latest_finish = PLAN_NOW + timedelta(hours=slack_h + 1)
    actual = _hourly(values[:1], PLAN_NOW)
    forecast = _hourly(values[1:], PLAN_NOW + timedelta(hours=1), True)
    step = plan_step(
        now=PLAN_NOW, latest_finish=latest_finish, expected=timedelta(hours=expected_h),
        ran=timedelta(hours=ran_h), actual=actual, forecast=forecast, running=running,
        own_forecast=own,
    )  # fmt: skip
    work = max(1, expected_h - ran_h)
    if step.forced:
        assert step.run  # no slack left: it never pauses
    if work >= slack_h + 1:
        assert step.run and step.forced
    assert step.reading_time == (PLAN_NOW if actual else None)
    assert ("own forecaster" in step.why) == (own and bool(actual))
    assert step.why.startswith(("run: ", "pause: ", "no reading yet"))
