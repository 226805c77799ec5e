"""Where and when: the best (placement, start) among grid zones, under the job's deadline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.model import Reading
from carbonaware.core.placement import Placement, ZoneReadings, decide_placement
from carbonaware.core.policy import PolicySettings, Strategy, decide, window_plan
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2022, 3, 1, 0, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

intensity = st.floats(min_value=0, max_value=900, allow_nan=False, allow_infinity=False)
scale = st.floats(min_value=0.25, max_value=4, allow_nan=False)


def zone_readings(zone: str, actual: list[float], predicted: list[float]) -> ZoneReadings:
    """Hourly actual readings ending at hour ``len(actual) - 1`` (now), then a forecast."""
    now = len(actual) - 1
    history = [Reading(zone, T0 + h * HOUR, v, provider="replay") for h, v in enumerate(actual)]
    forecast = [
        Reading(zone, T0 + (now + 1 + h) * HOUR, v, forecast=True, provider="replay")
        for h, v in enumerate(predicted)
    ]
    return ZoneReadings(history, forecast)


def policy(strategy=Strategy.FORECAST, threshold=300.0, max_delay=6, duration=2):
    return PolicySettings(strategy, threshold, max_delay * HOUR, duration * HOUR)


@st.composite
def zones(draw, min_zones=1, max_zones=4):
    """Several zones' readings on the same hours, with a forecast of the same length."""
    count = draw(st.integers(min_zones, max_zones))
    past = draw(st.integers(1, 4))
    ahead = draw(st.integers(0, 12))
    out = []
    for i in range(count):
        actual = draw(st.lists(intensity, min_size=past, max_size=past))
        predicted = draw(st.lists(intensity, min_size=ahead, max_size=ahead))
        out.append((f"Z{i}", actual, predicted))
    return out


def test_forecast_picks_the_zone_and_the_hour_with_the_cleanest_window():
    dirty = zone_readings("US-MIDA-PJM", [400], [390, 380, 370, 380, 390, 400])
    clean = zone_readings("US-CAL-CISO", [300], [250, 90, 80, 250, 300, 300])
    chosen = decide_placement(
        policy(),
        [Placement("US-MIDA-PJM"), Placement("US-CAL-CISO")],
        T0,
        T0,
        [dirty, clean],
    )
    assert chosen.decision.action == "wait" and chosen.zone == "US-CAL-CISO"
    assert chosen.placement == 1 and chosen.decision.planned_start == T0 + 2 * HOUR
    assert "US-CAL-CISO at 2022-03-01 02:00 UTC, 85 g/kWh" in chosen.reason
    assert "others US-MIDA-PJM 375" in chosen.reason
    # the first placement's own best start is known too, to say what moving zones saved
    assert chosen.options[0].best_mean == pytest.approx(375)


def test_power_scale_makes_a_slower_pool_lose_to_a_dirtier_but_faster_one():
    fast = zone_readings("DE-LU", [200], [200, 200, 200, 200])
    slow = zone_readings("GB", [150], [150, 150, 150, 150])
    candidates = [Placement("DE-LU"), Placement("GB", power_scale=1.5)]
    chosen = decide_placement(policy(), candidates, T0, T0, [fast, slow])
    assert chosen.zone == "DE-LU" and chosen.run  # 200 < 1.5 x 150
    unscaled = decide_placement(
        policy(), [Placement("DE-LU"), Placement("GB")], T0, T0, [fast, slow]
    )
    assert unscaled.zone == "GB" and unscaled.run


def test_threshold_runs_in_the_cleanest_zone_at_or_below_it_and_waits_when_none_is():
    candidates = [Placement("A"), Placement("B"), Placement("C")]
    readings = [zone_readings("A", [310], []), zone_readings("B", [290], [])]
    readings.append(zone_readings("C", [120], []))
    chosen = decide_placement(policy(Strategy.THRESHOLD), candidates, T0, T0, readings)
    assert chosen.run and chosen.zone == "C" and "at or below threshold 300" in chosen.reason
    above = [zone_readings(z, [v], []) for z, v in (("A", 310), ("B", 400), ("C", 301))]
    waiting = decide_placement(policy(Strategy.THRESHOLD), candidates, T0, T0, above)
    assert not waiting.run and waiting.placement is None
    assert "every zone above threshold 300 g/kWh (A 310, B 400, C 301)" in waiting.reason


def test_deadline_runs_at_once_in_the_cleanest_zone_now():
    readings = [zone_readings("A", [500], [10, 10]), zone_readings("B", [200], [900, 900])]
    at_deadline = T0 + 6 * HOUR
    shifted = [
        ZoneReadings(
            [Reading(r.zone, at_deadline, r.intensity) for r in zr.history],
            [Reading(r.zone, at_deadline + HOUR, r.intensity, forecast=True) for r in zr.forecast],
        )
        for zr in readings
    ]
    for strategy in Strategy:
        chosen = decide_placement(
            policy(strategy, duration=1),
            [Placement("A"), Placement("B")],
            T0,
            at_deadline,
            shifted,
        )
        assert chosen.run and chosen.zone == "B" and "deadline reached" in chosen.reason


def test_no_reading_anywhere_waits_without_a_placement():
    empty = ZoneReadings([], [])
    chosen = decide_placement(policy(), [Placement("A"), Placement("B")], T0, T0, [empty, empty])
    assert not chosen.run and chosen.placement is None and "no reading" in chosen.reason


def test_a_committed_interruptible_job_stays_where_it_ran():
    """Checkpoints are on the placement's own volume: a paused job resumes there, even when
    another zone is cleaner now."""
    ran_here = zone_readings("A", [400], [400, 400])
    cleaner = zone_readings("B", [10], [10, 10])
    chosen = decide_placement(
        policy(), [Placement("A"), Placement("B")], T0, T0, [ran_here, cleaner], committed=0
    )
    assert chosen.zone == "A" and chosen.placement == 0
    assert "stays where it ran" in chosen.reason
    with pytest.raises(ValueError, match="out of range"):
        decide_placement(policy(), [Placement("A")], T0, T0, [ran_here], committed=1)


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="powerScale"):
        Placement("A", power_scale=0)
    with pytest.raises(ValueError, match="one readings entry per placement"):
        decide_placement(policy(), [Placement("A")], T0, T0, [])


@settings(max_examples=150, deadline=None)
@given(zones(max_zones=1), st.sampled_from(list(Strategy)), st.integers(0, 8), st.integers(1, 4))
def test_one_placement_decides_as_the_time_only_policy(zs, strategy, max_delay, duration):
    (zone, actual, predicted) = zs[0]
    readings = zone_readings(zone, actual, predicted)
    now = T0 + (len(actual) - 1) * HOUR
    rules = policy(strategy, max_delay=max_delay, duration=duration)
    alone = decide(rules, T0, now, readings.history, readings.forecast)
    chosen = decide_placement(rules, [Placement(zone)], T0, now, [readings])
    assert chosen.decision.action == alone.action
    assert chosen.decision.planned_start == alone.planned_start
    assert chosen.decision.deadline == alone.deadline
    if alone.planned_start is not None:
        assert chosen.zone == zone


@settings(max_examples=150, deadline=None)
@given(zones(min_zones=2), st.integers(0, 8), st.integers(1, 4), st.lists(scale, min_size=4))
def test_the_chosen_option_is_never_worse_than_the_first_placements_best_start(
    zs, max_delay, duration, scales
):
    rules = policy(Strategy.FORECAST, max_delay=max_delay, duration=duration)
    candidates = [Placement(z, s) for (z, _, _), s in zip(zs, scales, strict=False)]
    zs = zs[: len(candidates)]
    readings = [zone_readings(z, a, p) for z, a, p in zs]
    now = T0 + (len(zs[0][1]) - 1) * HOUR
    chosen = decide_placement(rules, candidates, T0, now, readings)
    deadline = T0 + max_delay * HOUR
    first = window_plan(
        rules,
        now,
        max(deadline, now),
        sorted(readings[0].history, key=lambda r: r.timestamp),
        readings[0].forecast,
    )
    assert first is not None
    mine = chosen.options[chosen.placement]
    assert mine.score <= candidates[0].power_scale * first.best_mean + 1e-6
    assert chosen.decision.planned_start is not None
    assert now <= chosen.decision.planned_start <= max(deadline, now)
    assert chosen.run == (chosen.decision.planned_start == now)


@settings(max_examples=150, deadline=None)
@given(zones(min_zones=2), st.integers(0, 8), st.integers(1, 4), st.integers(0, 8))
def test_threshold_never_waits_past_the_deadline(zs, max_delay, duration, waited):
    rules = policy(Strategy.THRESHOLD, max_delay=max_delay, duration=duration)
    readings = [zone_readings(z, a, p) for z, a, p in zs]
    now = T0 + (len(zs[0][1]) - 1) * HOUR + waited * HOUR
    chosen = decide_placement(rules, [Placement(z) for z, _, _ in zs], T0, now, readings)
    if now >= T0 + max_delay * HOUR:
        assert chosen.run
    if chosen.run:
        latest = [zr.history[-1].intensity for zr in readings]
        assert latest[chosen.placement] == min(
            v for v in latest if chosen.decision.deadline <= now or v <= 300
        )
