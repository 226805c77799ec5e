"""Replay and static providers: a real trace served as live, under a fake (injected) clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import (
    ConfigError,
    NoForecastError,
    Provider,
    ProviderUnavailableError,
    UnknownZoneError,
)
from carbonaware.providers.replay import ReplayProvider
from carbonaware.providers.static import StaticProvider
from carbonaware.traces import load_trace


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def gb_path(traces_dir):
    return traces_dir / "electricitymaps" / "GB_2022_hourly.csv"


@pytest.fixture(scope="module")
def gb(traces_dir):
    return load_trace(traces_dir / "electricitymaps" / "GB_2022_hourly.csv")


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_speed_maps_wall_seconds_to_trace_hours(gb_path, gb):
    clock = FakeClock()
    replay = ReplayProvider(gb_path, "GB", speed=3600, clock=clock)
    assert isinstance(replay, Provider)
    assert replay.now() == utc(2022, 1, 1)
    clock.now += 5.5  # 5.5 trace hours later
    assert replay.now() == utc(2022, 1, 1, 5, 30)
    latest = replay.latest("GB")
    # The last point at or before 05:30 is the 05:00 row of the file.
    assert latest.timestamp == utc(2022, 1, 1, 5)
    assert latest.intensity == pytest.approx(gb.series[latest.timestamp])
    assert latest.basis == Basis.DIRECT and latest.provider == "replay"
    assert not latest.forecast


def test_now_is_plain_microsecond_time_without_warnings(gb_path, recwarn):
    clock = FakeClock()
    replay = ReplayProvider(gb_path, speed=1, clock=clock)
    clock.now += 1200 + 3e-7  # 20 min and 300 ns: finer than a datetime holds
    assert replay.now() == utc(2022, 1, 1, 0, 20)
    assert replay.latest("GB").timestamp == utc(2022, 1, 1)
    assert not [w for w in recwarn if "nanoseconds" in str(w.message)]


def test_start_offset_and_absolute_start(gb_path):
    clock = FakeClock()
    assert ReplayProvider(gb_path, speed=60, start="36h", clock=clock).now() == utc(2022, 1, 2, 12)
    replay = ReplayProvider(gb_path, start="2022-06-01T12:00:00Z", speed=1, clock=clock)
    clock.now += 1800  # real time at speed 1
    assert replay.now() == utc(2022, 6, 1, 12, 30)
    assert replay.latest("GB").timestamp == utc(2022, 6, 1, 12)


def test_history_is_the_last_24_trace_hours(gb_path, gb):
    clock = FakeClock()
    replay = ReplayProvider(gb_path, speed=3600, start="72h", clock=clock)
    history = replay.history("GB")
    assert len(history) == 24
    assert history[-1].timestamp == utc(2022, 1, 4)
    assert history[0].timestamp == utc(2022, 1, 3, 1)
    assert [r.intensity for r in history] == pytest.approx(
        list(gb.series[utc(2022, 1, 3, 1) : utc(2022, 1, 4)])
    )


def test_history_for_a_longer_span_is_that_many_trace_hours(gb_path, gb):
    replay = ReplayProvider(gb_path, speed=3600, start="10d", clock=FakeClock())
    week = replay.history("GB", timedelta(days=8))
    assert len(week) == 8 * 24
    assert week[0].timestamp == utc(2022, 1, 3, 1) and week[-1].timestamp == utc(2022, 1, 11)
    assert [r.intensity for r in week] == pytest.approx(
        list(gb.series[utc(2022, 1, 3, 1) : utc(2022, 1, 11)])
    )
    early = ReplayProvider(gb_path, speed=3600, start="36h", clock=FakeClock())
    assert len(early.history("GB", timedelta(days=8))) == 37  # the trace starts 36 h back


def test_forecast_is_the_next_48_hours_of_the_trace(gb_path, gb):
    replay = ReplayProvider(gb_path, speed=3600, start="10h", clock=FakeClock())
    forecast = replay.forecast("GB")
    assert len(forecast) == 48 and all(r.forecast for r in forecast)
    assert forecast[0].timestamp == utc(2022, 1, 1, 11)
    assert forecast[-1].timestamp == utc(2022, 1, 3, 10)
    assert forecast[5].intensity == pytest.approx(gb.series[forecast[5].timestamp])


def test_forecast_column_is_used_when_the_file_has_one(traces_dir):
    path = traces_dir / "dacf" / "CISO_carbon_from_src_prod_forecasts_direct.csv"
    trace = load_trace(path)
    replay = ReplayProvider(path, speed=3600, clock=FakeClock())
    forecast = replay.forecast("CISO")
    first = forecast[0].timestamp
    assert forecast[0].intensity == pytest.approx(trace.forecast[first])
    assert forecast[0].intensity != pytest.approx(trace.series[first])


def test_past_the_end_is_a_clear_unavailable_error(gb_path):
    clock = FakeClock()
    replay = ReplayProvider(gb_path, speed=3600, start="2022-12-31T20:00Z", clock=clock)
    assert len(replay.forecast("GB")) == 3  # 21:00, 22:00, 23:00 remain
    clock.now += 3.5
    with pytest.raises(NoForecastError):
        replay.forecast("GB")
    clock.now += 1
    with pytest.raises(ProviderUnavailableError, match=r"end of trace GB_2022_hourly\.csv"):
        replay.latest("GB")


def test_other_zone_and_bad_settings_are_rejected(gb_path):
    replay = ReplayProvider(gb_path, clock=FakeClock())
    with pytest.raises(UnknownZoneError, match="holds zone 'GB'"):
        replay.latest("DE")
    assert replay.latest("gb").zone == "gb"
    with pytest.raises(ConfigError, match="outside trace"):
        ReplayProvider(gb_path, start="2023-02-01T00:00Z", clock=FakeClock())
    with pytest.raises(ConfigError, match="outside trace"):
        ReplayProvider(gb_path, start="400d", clock=FakeClock())
    with pytest.raises(ConfigError, match="speed"):
        ReplayProvider(gb_path, speed=0, clock=FakeClock())
    with pytest.raises(ConfigError, match="neither an offset"):
        ReplayProvider(gb_path, start="soon", clock=FakeClock())


def test_lifecycle_basis_replays_the_lca_column(gb_path, traces_dir):
    replay = ReplayProvider(gb_path, basis="lifecycle", clock=FakeClock())
    reading = replay.latest("GB")
    assert reading.basis == Basis.LIFECYCLE and reading.intensity == pytest.approx(89.98)


def test_static_provider_is_constant_now_past_and_future():
    clock = FakeClock(datetime(2024, 5, 1, 10, 42, tzinfo=UTC).timestamp())
    static = StaticProvider(123.0, clock=clock)
    assert isinstance(static, Provider)
    latest = static.latest("XX")
    assert latest.intensity == 123.0 and latest.timestamp == utc(2024, 5, 1, 10)
    forecast = static.forecast("XX")
    assert len(forecast) == 48 and all(r.forecast for r in forecast)
    assert forecast[0].timestamp == latest.timestamp + timedelta(hours=1)
    history = static.history("XX")
    assert len(history) == 24 and history[-1].timestamp == latest.timestamp
    week = static.history("XX", timedelta(days=8))
    assert len(week) == 192 and week[-1].timestamp == latest.timestamp
    assert week[0].timestamp == latest.timestamp - timedelta(hours=191)
    with pytest.raises(ConfigError):
        StaticProvider(-1)
