"""Reading real trace files (../shared/data/traces) in every format the project accepts."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from carbonaware.core.model import Basis
from carbonaware.providers.base import ConfigError
from carbonaware.traces import (
    detect_format,
    issued_forecast_at,
    load_issued_forecasts,
    load_trace,
    shared_trace,
)


def _regular_utc(series: pd.Series) -> None:
    assert str(series.index.tz) == "UTC"
    assert series.index.is_monotonic_increasing and series.index.is_unique
    assert series.index.to_series().diff().dropna().nunique() == 1
    assert series.dtype == float and not series.isna().any()


def test_electricitymaps_export_direct_and_lifecycle_columns(traces_dir):
    path = traces_dir / "electricitymaps" / "GB_2022_hourly.csv"
    direct = load_trace(path)
    lifecycle = load_trace(path, basis="lifecycle")
    assert direct.source_format == "electricitymaps" and direct.zone == "GB"
    assert direct.basis == Basis.DIRECT and lifecycle.basis == Basis.LIFECYCLE
    assert len(direct.series) == 8760  # one year, hourly, no gaps
    _regular_utc(direct.series)
    first = pd.Timestamp("2022-01-01 00:00", tz="UTC")
    # Values straight from the file's first data row.
    assert direct.series[first] == pytest.approx(52.2)
    assert lifecycle.series[first] == pytest.approx(89.98)
    assert direct.series.index[-1] == pd.Timestamp("2022-12-31 23:00", tz="UTC")
    assert direct.estimated is not None and len(direct.estimated) == 8760


def test_any_zone_export_keeps_its_zone(traces_dir):
    trace = load_trace(traces_dir / "electricitymaps" / "US-CAL-CISO_2022_hourly.csv")
    assert trace.zone == "US-CAL-CISO"


def test_lets_wait_awhile_mixed_steps_become_regular(traces_dir):
    trace = load_trace(traces_dir / "lets-wait-awhile" / "gb_ci.csv")
    assert trace.source_format == "lets-wait-awhile"
    assert trace.basis == Basis.LIFECYCLE and trace.zone == "GB"
    _regular_utc(trace.series)
    assert trace.step == pd.Timedelta(minutes=30)
    raw = pd.read_csv(traces_dir / "lets-wait-awhile" / "gb_ci.csv", parse_dates=["Time"])
    raw = raw.set_index(raw["Time"].dt.tz_localize("UTC"))["Carbon Intensity"]
    # Where the file is half-hourly the values pass through unchanged ...
    assert trace.series.iloc[0] == pytest.approx(raw.iloc[0])
    # ... and where it is quarter-hourly each half hour is the mean of its two quarters.
    quarter = raw.index[raw.index.to_series().diff() == pd.Timedelta(minutes=15)][0]
    half = quarter.floor("30min")
    expected = raw[half : half + pd.Timedelta(minutes=15)].mean()
    assert trace.series[half] == pytest.approx(expected)


def test_dacf_forecast_column_becomes_forecast_series(traces_dir):
    trace = load_trace(traces_dir / "dacf" / "CISO_carbon_from_src_prod_forecasts_direct.csv")
    assert trace.source_format == "dacf" and trace.zone == "CISO"
    assert trace.forecast is not None
    first = pd.Timestamp("2021-07-01 00:00", tz="UTC")
    assert trace.series[first] == pytest.approx(162.35)
    assert trace.forecast[first] == pytest.approx(176.11)
    actual_only = load_trace(traces_dir / "dacf" / "CISO_direct_emissions.csv")
    assert actual_only.forecast is None
    # The DE file writes offsets (+00:00); they parse to the same UTC instants.
    de = load_trace(traces_dir / "dacf" / "DE_carbon_from_src_prod_forecasts_direct.csv")
    assert de.series.index[0] == first


def test_watttime_actual_and_issued_forecasts(traces_dir):
    actual = load_trace(traces_dir / "watttime" / "watttime2023_caiso-north_actual.csv")
    assert actual.basis == Basis.MARGINAL and actual.zone == "CAISO_NORTH"
    assert actual.step == pd.Timedelta(minutes=5)
    forecast_file = traces_dir / "watttime" / "watttime2023_caiso-north_forecast.csv"
    issued = load_issued_forecasts(forecast_file)
    at = pd.Timestamp("2023-06-08 00:02", tz="UTC")
    forecast = issued_forecast_at(issued, at)
    # The forecast issued at 00:00 (the last at or before 00:02) covers 00:05 to 01:05.
    assert forecast.index[0] == pd.Timestamp("2023-06-08 00:05", tz="UTC")
    assert forecast.iloc[0] == pytest.approx(412.406182804)
    assert len(forecast) == 13  # 5 to 65 min ahead
    with pytest.raises(ConfigError, match="load_issued_forecasts"):
        load_trace(traces_dir / "watttime" / "watttime2023_caiso-north_forecast.csv")


def test_plain_csv_with_offsets_and_forecast(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "timestamp,intensity,forecast\n"
        "2024-03-01T01:00:00+01:00,210,200\n"  # = 00:00Z
        "2024-03-01T01:00:00Z,190,195\n"
        "2024-03-01T02:00:00Z,180,185\n"
    )
    trace = load_trace(path)
    assert detect_format(path) == "plain" and trace.zone is None
    assert trace.basis == Basis.DIRECT
    assert trace.series.index[0] == pd.Timestamp("2024-03-01 00:00", tz="UTC")
    assert list(trace.series) == [210, 190, 180]
    assert list(trace.forecast) == [200, 195, 185]
    assert load_trace(path, zone="DE").zone == "DE"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("a,b,c\n1,2,3\n", "unknown format"),
        ("timestamp,intensity\nyesterday,12\n", "could not be read"),
        ("timestamp,intensity\n2024-01-01T00:00Z,-5\n", "negative"),
    ],
)
def test_bad_files_get_one_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_trace(path)
    assert str(path) in str(info.value)


def test_missing_file_and_wrong_basis(tmp_path, traces_dir):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trace(tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="no direct values"):
        load_trace(traces_dir / "lets-wait-awhile" / "fr_ci.csv", basis="direct")


def _pandas_reading(path, time_column: str, value_column: str) -> pd.Series:
    """The same file read the textbook pandas way: the reference the reader must agree with."""
    frame = pd.read_csv(path, usecols=[time_column, value_column], encoding="utf-8-sig")
    index = pd.DatetimeIndex(pd.to_datetime(frame[time_column], utc=True, format="ISO8601"))
    series = pd.Series(frame[value_column].to_numpy(dtype=float), index=index).dropna()
    series = series[~series.index.duplicated(keep="last")].sort_index()
    if series.index.to_series().diff().dropna().nunique() > 1:
        step = series.index.to_series().diff().dropna().mode().iloc[0]
        series = series.resample(step).mean().interpolate(method="time")
    return series


_COLUMNS = {
    "electricitymaps": ("Datetime (UTC)", "Carbon Intensity gCO₂eq/kWh (direct)"),
    "lets-wait-awhile": ("Time", "Carbon Intensity"),
    "dacf": ("UTC time", "carbon_intensity"),
}


def test_reader_agrees_with_pandas_on_every_shared_trace(traces_dir):
    """The reader is plain csv + numpy (the operator must not import pandas); on every real
    trace it gives what pandas gives: the same instants, the same values."""
    files = [p for fmt in _COLUMNS for p in sorted((traces_dir / fmt).glob("*.csv"))]
    files.append(traces_dir / "watttime" / "watttime2023_caiso-north_actual.csv")
    assert len(files) > 40
    for path in files:
        trace = load_trace(path)
        time_column, value_column = _COLUMNS.get(trace.source_format, ("time", "Caiso_North"))
        expected = _pandas_reading(path, time_column, value_column)
        assert trace.series.index.equals(expected.index), path.name
        assert trace.series.to_numpy() == pytest.approx(expected.to_numpy(), rel=1e-12), path.name
        if trace.forecast is not None:
            forecast = _pandas_reading(path, time_column, "carbon_from_src_forecasts")
            assert trace.forecast.to_numpy() == pytest.approx(forecast.to_numpy()), path.name


def test_estimated_flags_follow_the_file(traces_dir):
    path = traces_dir / "electricitymaps" / "SG_2021_hourly.csv"
    trace = load_trace(path)
    raw = pd.read_csv(path, usecols=["Data Estimated"])["Data Estimated"]
    assert trace.estimated.to_numpy().tolist() == raw.astype(bool).tolist()
    assert 0 < trace.estimated.sum() < len(raw)  # the file mixes both


def test_replaying_a_trace_does_not_import_pandas(traces_dir):
    """pandas is ~40 MB of resident memory; the operator's budget is 200 MB at 1,000 jobs."""
    trace = traces_dir / "dacf" / "DE_carbon_from_src_prod_forecasts_direct.csv"
    script = (
        "import sys\n"
        "from carbonaware.kube import main\n"
        "from carbonaware.providers.replay import ReplayProvider\n"
        f"replay = ReplayProvider({str(trace)!r})\n"
        "assert replay.latest('DE') and replay.forecast('DE') and replay.history('DE')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'matplotlib')))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_shared_trace_is_read_once_per_version_of_the_file(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("timestamp,intensity\n2024-03-01T00:00Z,210\n2024-03-01T01:00Z,190\n")
    first = shared_trace(path)
    assert shared_trace(path) is first  # a thousand replay jobs, one copy
    path.write_text("timestamp,intensity\n2024-03-01T00:00Z,110\n2024-03-01T01:00Z,90\n")
    assert list(shared_trace(path).series) == [110, 90]  # rewritten: read again
    with pytest.raises(ConfigError, match="does not exist"):
        shared_trace(tmp_path / "gone.csv")
