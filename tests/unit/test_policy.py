"""The start policy: deadlines, the threshold rule, and the forecast window choice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from carbonaware.core.durations import format_duration, parse_duration
from carbonaware.core.model import Reading
from carbonaware.core.policy import (
    Decision,
    PolicySettings,
    Strategy,
    best_window_start,
    decide,
)
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2022, 3, 1, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def actual(hour: int, value: float) -> Reading:
    return Reading("GB", T0 + hour * HOUR, value, provider="replay")


def predicted(hour: int, value: float) -> Reading:
    return Reading("GB", T0 + hour * HOUR, value, forecast=True, provider="replay")


def policy(strategy=Strategy.THRESHOLD, threshold=300.0, max_delay=6, duration=2):
    return PolicySettings(strategy, threshold, max_delay * HOUR, duration * HOUR)


def test_threshold_waits_above_and_runs_at_or_below():
    waiting = decide(policy(), T0, T0, [actual(0, 312)], [])
    assert waiting.action == "wait"
    assert "312 g/kWh above threshold 300" in waiting.reason
    assert "deadline in 6h" in waiting.reason
    running = decide(policy(), T0, T0 + HOUR, [actual(0, 312), actual(1, 300)], [])
    assert running.action == "run" and running.planned_start == T0 + HOUR


def test_deadline_always_runs():
    decision = decide(policy(), T0, T0 + 6 * HOUR, [actual(6, 900)], [])
    assert decision.action == "run" and "deadline" in decision.reason
    assert decision.deadline == T0 + 6 * HOUR


def test_no_reading_yet_waits():
    decision = decide(policy(), T0, T0, [], [])
    assert decision.action == "wait" and "no reading" in decision.reason


def test_forecast_picks_the_cleanest_window_and_names_the_provider():
    values = [400, 380, 350, 120, 110, 300, 500, 500, 500, 500]
    forecast = [predicted(h, v) for h, v in enumerate(values) if h > 0]
    decision = decide(policy(Strategy.FORECAST), T0, T0, [actual(0, 400)], forecast)
    assert decision == Decision("wait", decision.reason, T0 + 3 * HOUR, "provider", T0 + 6 * HOUR)
    assert "provider forecast" in decision.reason


def test_forecast_runs_now_when_now_is_cleanest():
    forecast = [predicted(h, 500) for h in range(1, 10)]
    decision = decide(policy(Strategy.FORECAST), T0, T0, [actual(0, 100)], forecast)
    assert decision.action == "run" and decision.forecast_source == "provider"


def test_forecast_without_provider_forecast_uses_own_forecaster_and_says_so():
    # two days of a daily cycle: clean at 03:00-05:00, dirty otherwise
    history = [actual(h, 100 if h % 24 in (3, 4, 5) else 400) for h in range(-48, 1)]
    decision = decide(policy(Strategy.FORECAST), T0, T0, history, [])
    assert decision.forecast_source == "own-forecaster"
    assert "own forecaster" in decision.reason and "(provider has none)" in decision.reason
    assert decision.action == "wait"
    assert decision.planned_start == T0 + 3 * HOUR


def test_best_window_start_ties_go_earliest_and_window_must_fit():
    times = np.arange(6)
    assert best_window_start(times, np.array([5, 1, 1, 5, 1, 1.0]), 2, 0, 5) == 1
    # the window at index 5 would run off the end: clipped to start 4
    assert best_window_start(times, np.array([9, 9, 9, 9, 1, 0.0]), 2, 0, 5) == 4
    assert best_window_start(times[:3], np.array([1, 0, 0.0]), 1, 2, 2) == 2
    with pytest.raises(ValueError):
        best_window_start(times, np.zeros(6), 1, 3, 2)


@st.composite
def scenarios(draw):
    hours = draw(st.integers(min_value=2, max_value=60))
    values = draw(
        st.lists(
            st.floats(min_value=0, max_value=1000, allow_nan=False),
            min_size=hours,
            max_size=hours,
        )
    )
    max_delay = draw(st.integers(min_value=0, max_value=hours - 1))
    duration = draw(st.integers(min_value=1, max_value=hours - max_delay))
    threshold = draw(st.floats(min_value=0, max_value=1000, allow_nan=False))
    return values, max_delay, duration, threshold


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.sampled_from(list(Strategy)), st.integers(min_value=0, max_value=70))
def test_planned_start_never_passes_the_deadline(scenario, strategy, step):
    values, max_delay, duration, threshold = scenario
    now_hour = min(step, len(values) - 1)
    history = [actual(h, v) for h, v in enumerate(values[: now_hour + 1])]
    forecast = [predicted(h, v) for h, v in enumerate(values) if h > now_hour]
    settings_ = policy(strategy, threshold, max_delay, duration)
    now = T0 + now_hour * HOUR
    decision = decide(settings_, T0, now, history, forecast)
    assert decision.deadline == T0 + max_delay * HOUR
    if decision.planned_start is not None:
        assert decision.planned_start <= max(decision.deadline, now)
    if now >= decision.deadline:
        assert decision.action == "run"


def threshold_start(values, threshold, max_delay):
    """Where the threshold rule starts when it polls every hour from submission."""
    for hour in range(max_delay + 1):
        if values[hour] <= threshold:
            return hour
    return max_delay


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_perfect_forecast_never_picks_a_dirtier_window_than_threshold(scenario):
    values, max_delay, duration, threshold = scenario
    forecast = [predicted(h, v) for h, v in enumerate(values) if h > 0]
    decision = decide(
        policy(Strategy.FORECAST, threshold, max_delay, duration),
        T0,
        T0,
        [actual(0, values[0])],
        forecast,
    )
    start = round((decision.planned_start - T0) / HOUR)
    chosen = np.mean(values[start : start + duration])
    by_threshold = threshold_start(values, threshold, max_delay)
    assert chosen <= np.mean(values[by_threshold : by_threshold + duration]) + 1e-6


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=400 * 86400))
def test_durations_in_settings_and_reasons_round_trip(seconds):
    # the CLI parses --max-delay with parse_duration; reasons print format_duration
    delta = timedelta(seconds=seconds)
    assert parse_duration(format_duration(delta)) == delta
