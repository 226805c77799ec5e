"""The bounded intensity log: CSV round trips, forecasts kept apart, and the byte budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.model import Basis, Reading
from hypothesis import given, settings
from hypothesis import strategies as st

T0 = datetime(2022, 1, 1, tzinfo=UTC)


def reading(seconds: float, value: float, **kw) -> Reading:
    return Reading(kw.pop("zone", "GB"), T0 + timedelta(seconds=seconds), value, **kw)


readings_st = st.builds(
    Reading,
    zone=st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12),
    timestamp=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    intensity=st.floats(min_value=0, max_value=5000, allow_nan=False),
    basis=st.sampled_from(list(Basis)),
    forecast=st.just(False),
    estimated=st.booleans(),
    provider=st.sampled_from(["replay", "electricitymaps", "own-forecaster", 'a,b "quoted"']),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(readings_st, max_size=30, unique_by=lambda r: r.timestamp))
def test_csv_round_trip(readings):
    log = IntensityLog({"zone": "GB", "threshold": 300})
    log.extend(readings)
    back = IntensityLog.from_csv(log.to_csv())
    assert back.readings == sorted(readings, key=lambda r: r.timestamp)
    assert back.metadata == {"zone": "GB", "threshold": "300"}
    assert back.to_csv() == log.to_csv()


def test_csv_layout_metadata_then_rows_then_forecast():
    log = IntensityLog({"zone": "GB", "submitted_at": T0})
    log.append(reading(0, 312.5, provider="replay"))
    log.append(reading(3600, 100, forecast=True, provider="replay"))
    assert log.to_csv().splitlines() == [
        "# zone=GB",
        "# submitted_at=2022-01-01T00:00:00Z",
        "timestamp,zone,intensity,basis,forecast,estimated,provider",
        "2022-01-01T00:00:00Z,GB,312.5,direct,false,false,replay",
        "2022-01-01T01:00:00Z,GB,100.0,direct,true,false,replay",
    ]


def test_repeated_reading_replaces_and_forecast_keeps_only_what_is_ahead():
    log = IntensityLog()
    log.set_forecast([reading(h * 3600, 50, forecast=True) for h in range(1, 5)])
    log.append(reading(0, 300))
    log.append(reading(0, 310))  # the provider repeated its latest reading, revised
    log.append(reading(7200, 200))
    assert [r.intensity for r in log.readings] == [310, 200]
    assert [r.timestamp for r in log.forecast] == [T0 + timedelta(hours=h) for h in (3, 4)]


def test_absorb_merges_two_copies_without_losing_either_writers_readings():
    # Ours: read at version N, then polled twice. Theirs: version N plus a foreign reading.
    ours = IntensityLog({"zone": "GB", "status": "Running"})
    ours.extend([reading(0, 300), reading(60, 290, provider="ours"), reading(120, 280)])
    theirs = IntensityLog({"zone": "GB", "status": "Waiting", "note": "by hand"})
    theirs.extend([reading(0, 300), reading(60, 999, provider="theirs"), reading(30, 310)])
    theirs.set_forecast([reading(3600, 50, forecast=True)])
    ours.absorb(theirs)
    assert [(r.timestamp - T0).seconds for r in ours.readings] == [0, 30, 60, 120]
    assert ours.readings[2].provider == "ours"  # a timestamp both hold: ours wins
    assert ours.metadata == {"zone": "GB", "status": "Running", "note": "by hand"}
    assert [r.intensity for r in ours.forecast] == [50]  # ours had none
    again = IntensityLog.from_csv(ours.to_csv())
    again.absorb(theirs)  # idempotent: absorbing the same copy twice changes nothing
    assert again.to_csv() == ours.to_csv()


def test_from_csv_rejects_a_bad_row_with_its_line():
    text = (
        "timestamp,zone,intensity,basis,forecast,estimated,provider\n"
        "not-a-time,GB,1,direct,false,false,x\n"
    )
    with pytest.raises(ValueError, match="row 2"):
        IntensityLog.from_csv(text)


@settings(max_examples=30, deadline=None)
@given(
    budget=st.integers(min_value=2048, max_value=16384),
    count=st.integers(min_value=1, max_value=3000),
    step=st.sampled_from([60, 300, 3600]),
)
def test_log_never_exceeds_its_budget_and_keeps_recent_readings(budget, count, step):
    log = IntensityLog({"zone": "GB", "strategy": "threshold"}, budget_bytes=budget)
    for i in range(count):
        log.append(reading(i * step, 100 + (i % 24) * 10, provider="electricitymaps"))
        assert len(log.to_csv().encode()) <= budget
    kept = log.readings
    assert kept[-1].timestamp == T0 + timedelta(seconds=(count - 1) * step)
    assert kept[-1].intensity == 100 + ((count - 1) % 24) * 10  # newest at full resolution
    assert kept == sorted(kept, key=lambda r: r.timestamp)


def test_downsampling_keeps_time_weighted_means_and_says_so():
    log = IntensityLog(budget_bytes=4096)
    for i in range(2000):  # a minute apart, alternating 100 and 300 within each hour
        log.append(reading(i * 60, 100 if i % 2 else 300))
    meta = log.metadata
    assert meta["downsampled_to"] in ("1h", "1d", "7d") and "downsampled_before" in meta
    old = [
        r for r in log.readings if r.timestamp < datetime.fromisoformat(meta["downsampled_before"])
    ]
    assert old and all(r.intensity == pytest.approx(200, abs=3) for r in old[:-1])


def test_hundred_thousand_appends_stay_under_the_default_budget():
    log = IntensityLog({"zone": "DE"})
    for i in range(100_000):
        log.append(reading(i * 300, 200 + (i % 288), provider="electricitymaps"))
    assert len(log.to_csv().encode()) <= 512 * 1024
    assert log.readings[-1].timestamp == T0 + timedelta(seconds=99_999 * 300)
