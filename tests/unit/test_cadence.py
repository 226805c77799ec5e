"""Phasing a zone's polls to its readings' grid (core/cadence.py): pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from carbonaware.core.cadence import Cadence, next_poll, observe
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def learnt(period: timedelta, lag_s: float = 0.25) -> Cadence:
    """A cadence that has seen two readings one ``period`` apart, the newest at T0."""
    cadence = observe(Cadence(lag_s=lag_s), T0 - period, T0 - period, max_lag_s=60)
    return observe(cadence, T0, T0 + timedelta(seconds=1), max_lag_s=60)


def test_two_readings_on_the_grid_set_its_period() -> None:
    assert learnt(HOUR).period == HOUR
    assert learnt(timedelta(minutes=30)).period == timedelta(minutes=30)


def test_stamps_off_any_grid_teach_nothing() -> None:
    """A provider that stamps each answer with the time it was asked has no grid."""
    asked = datetime(2026, 12, 1, 14, 0, 3, tzinfo=UTC)
    cadence = observe(Cadence(), asked, asked, 60)
    cadence = observe(cadence, asked + timedelta(seconds=7), asked, 60)
    assert cadence.period is None
    assert next_poll(cadence, asked + timedelta(seconds=7), 30) == (30, False)


def test_a_skipped_reading_keeps_the_period() -> None:
    cadence = observe(learnt(HOUR), T0 + 2 * HOUR, T0 + 2 * HOUR, 60)
    assert cadence.period == HOUR and cadence.last == T0 + 2 * HOUR


def test_the_poll_after_a_period_starts_lands_lag_after_it() -> None:
    """Hourly readings, 5-minute polls: the one that would come at 15:02:30 comes at
    15:00:00.25 instead; the others an interval apart."""
    cadence = learnt(HOUR)
    wait, for_new_reading = next_poll(cadence, T0 + timedelta(minutes=57, seconds=30), 300)
    assert for_new_reading and abs(wait - (150 + 0.25)) < 1e-6
    assert next_poll(cadence, T0 + timedelta(minutes=50), 300) == (300, False)


def test_a_grid_finer_than_the_interval_is_not_followed() -> None:
    cadence = learnt(timedelta(minutes=5))
    assert next_poll(cadence, T0 + timedelta(minutes=4), 600) == (600, False)


def test_readings_far_from_the_wall_clock_are_not_followed() -> None:
    """A replayed trace, or a provider stuck on readings days old."""
    cadence = learnt(HOUR)
    assert next_poll(cadence, T0 + timedelta(days=2), 300) == (300, False)


def test_a_late_provider_teaches_a_longer_lag() -> None:
    """A poll after the next reading was due that still finds the last: the lag doubles
    (up to its cap), and the next poll comes that much later, not an interval later."""
    cadence = learnt(HOUR, lag_s=0.25)
    polled = T0 + HOUR + timedelta(seconds=0.3)
    later = observe(cadence, T0, polled, max_lag_s=60)
    assert later.lag_s == 0.5
    wait, for_new_reading = next_poll(later, polled, 300)
    assert for_new_reading and abs(wait - 0.2) < 1e-6  # at 15:00:00.5
    capped = Cadence(T0, HOUR, 40)
    assert observe(capped, T0, T0 + HOUR + timedelta(seconds=41), max_lag_s=60).lag_s == 60
    # before the next reading is due, the same reading again says nothing about the lag
    assert observe(cadence, T0, T0 + timedelta(minutes=30), 60) == cadence
    # a provider later than the cap: routine polls, no retries
    late = Cadence(T0, HOUR, 60)
    assert next_poll(late, T0 + HOUR + timedelta(seconds=61), 300) == (300, False)


@settings(max_examples=300, deadline=None)
@given(
    period_s=st.sampled_from([1, 5, 60, 300, 900, 1800, 3600]),
    ratio=st.floats(min_value=0.02, max_value=4),  # the interval over the period
    lag_s=st.floats(min_value=0.01, max_value=30),
    start_s=st.floats(min_value=0, max_value=7200),
)
def test_polls_stay_an_interval_apart_and_catch_each_reading_lag_after_it(
    period_s: int, ratio: float, lag_s: float, start_s: float
) -> None:
    """Polling a provider that publishes each reading at its period's start, for 40 periods
    or intervals: polls never further apart than the interval; at most one more a period
    than the interval allows (none once in step, where a period is a whole number of
    intervals); and, where the grid is followed, each new reading seen ``lag_s`` after it."""
    period, interval_s = timedelta(seconds=period_s), max(0.5, ratio * period_s)
    span = 40.0 * max(period_s, interval_s)
    cadence = learnt(period, lag_s=lag_s)
    start = now = T0 + timedelta(seconds=start_s)
    polls, end = 0, start + timedelta(seconds=span)
    worst_delay, followed = 0.0, period_s >= interval_s and lag_s < interval_s
    in_step = followed and abs(period_s / interval_s - round(period_s / interval_s)) < 1e-9
    steady_polls = 0
    while now < end:
        wait, _ = next_poll(cadence, now, interval_s)
        assert 0.1 <= wait <= interval_s
        now += timedelta(seconds=wait)
        polls += 1
        published = T0 + ((now - T0) // period) * period  # the newest reading at ``now``
        if polls == 1:
            start = now  # the first poll finds the grid live: from here on, it is followed
        elif published > cadence.last and published > start:  # published while we poll
            worst_delay = max(worst_delay, (now - published).total_seconds())
        if now > start + timedelta(seconds=2 * period_s + 2 * interval_s):
            steady_polls += 1
        cadence = observe(cadence, published, now, max_lag_s=lag_s)
    assert polls <= span / interval_s + span / period_s + 2
    if followed:
        assert worst_delay <= lag_s + 0.1 + 1e-3  # 0.1 s: polls are never closer
    if in_step:  # once in step, exactly the interval's polls
        steady_span = (end - start).total_seconds() - 2 * period_s - 2 * interval_s
        assert steady_polls <= steady_span / interval_s + 2
