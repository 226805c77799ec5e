"""Read real carbon-intensity trace files, as they are downloaded, into one plain shape.

Used by the replay provider, the backtest engine and the CLI. Recognised formats (detected
from the header line, not the file name):

- ``electricitymaps``: Electricity Maps hourly export (``Datetime (UTC)``, ``Zone Id``,
  ``Carbon Intensity gCO₂eq/kWh (direct)`` and ``(LCA)``; the basis picks the column).
- ``plain``: ``timestamp,intensity`` with optional ``forecast``, ``zone`` and ``basis`` columns.
- ``lets-wait-awhile``: ``Time,Carbon Intensity`` (life-cycle; 15/30-min steps, made regular).
- ``dacf``: ``UTC time,carbon_intensity`` and, when present, ``carbon_from_src_forecasts``
  (a real day-ahead forecast, exposed as ``Trace.forecast``).
- ``watttime``: ``time,<REGION>`` marginal (MOER) signal, already in g/kWh.
- ``watttime-forecast``: ``request_time,forecast_time,<REGION>``; these are issued forecasts,
  read with :func:`load_issued_forecasts`, not :func:`load_trace`.

Naive timestamps are UTC. Every series comes back sorted, de-duplicated and on a regular step.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from carbonaware.core.model import Basis
from carbonaware.providers.base import ConfigError

FORMATS = (
    "electricitymaps",
    "plain",
    "lets-wait-awhile",
    "dacf",
    "watttime",
    "watttime-forecast",
)
_ACCEPTED = (
    "accepted formats: Electricity Maps hourly CSV export, 'timestamp,intensity' CSV, "
    "lets-wait-awhile 'Time,Carbon Intensity', DACF 'UTC time,carbon_intensity', "
    "WattTime 'time,<region>'"
)
_EM_COLUMN = re.compile(r"^Carbon Intensity gCO(?:₂|2)eq/kWh \((direct|LCA)\)$")
# lets-wait-awhile names its files by country, not by zone code.
_LWA_ZONES = {"gb": "GB", "ger": "DE", "de": "DE", "fr": "FR"}


@dataclass(frozen=True)
class Trace:
    """A carbon-intensity time series read from a file.

    ``series``: float gCO2eq/kWh indexed by a sorted, tz-aware UTC DatetimeIndex (interval
    starts). ``forecast``: a forecast of the same instants when the file carries one.
    ``estimated``: per-instant "the source estimated this" flags when the file says so.
    ``zone`` is None when the file does not say (then any zone may be replayed from it).
    """

    zone: str | None
    basis: Basis
    series: pd.Series
    forecast: pd.Series | None
    source_format: str
    path: Path
    estimated: pd.Series | None = None

    @property
    def start(self) -> pd.Timestamp:
        return self.series.index[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.series.index[-1]

    @property
    def step(self) -> pd.Timedelta:
        """The regular spacing of the series (one hour when it has a single point)."""
        if len(self.series) < 2:
            return pd.Timedelta(hours=1)
        return self.series.index[1] - self.series.index[0]


def detect_format(path: str | Path) -> str:
    """Name the format of the trace at ``path`` from its header (see ``FORMATS``)."""
    header = _read_header(Path(path))
    return _format_of(Path(path), header)


def load_trace(
    path: str | Path, *, basis: Basis | str | None = None, zone: str | None = None
) -> Trace:
    """Read the trace at ``path``.

    ``basis`` chooses the Electricity Maps column (direct, the default, or lifecycle); other
    formats have one basis and reject a different one. ``zone`` overrides the file's zone.
    Raises ConfigError naming the file for anything unreadable.
    """
    path = Path(path)
    header = _read_header(path)
    fmt = _format_of(path, header)
    wanted = _basis(basis, path) if basis is not None else None
    try:
        if fmt == "electricitymaps":
            trace = _read_electricitymaps(path, header, wanted or Basis.DIRECT)
        elif fmt == "plain":
            trace = _read_plain(path, header, wanted)
        elif fmt == "lets-wait-awhile":
            trace = _read_lets_wait_awhile(path)
        elif fmt == "dacf":
            trace = _read_dacf(path, header)
        elif fmt == "watttime":
            trace = _read_watttime(path, header)
        else:
            raise ConfigError(
                f"trace {path} holds issued WattTime forecasts (request_time, forecast_time); "
                "load it with load_issued_forecasts, and replay the matching actual file"
            )
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, pd.errors.ParserError) as exc:
        raise ConfigError(f"trace {path} ({fmt} format) could not be read: {exc}") from None
    if wanted is not None and wanted != trace.basis:
        raise ConfigError(
            f"trace {path} is {trace.basis.value} intensity ({fmt} format); "
            f"it has no {wanted.value} values"
        )
    if zone:
        trace = Trace(zone, trace.basis, trace.series, trace.forecast, fmt, path, trace.estimated)
    return trace


def load_issued_forecasts(path: str | Path) -> pd.DataFrame:
    """Read a WattTime issued-forecast file: columns ``request_time``, ``forecast_time``
    (tz-aware UTC) and ``intensity`` (g/kWh), sorted by request then forecast time."""
    path = Path(path)
    header = _read_header(path)
    if _format_of(path, header) != "watttime-forecast":
        raise ConfigError(
            f"trace {path} is not a WattTime forecast file "
            "(expected columns request_time, forecast_time, <region>)"
        )
    region = next(c for c in header if c not in ("request_time", "forecast_time"))
    frame = pd.read_csv(path, usecols=["request_time", "forecast_time", region])
    frame = frame.rename(columns={region: "intensity"})
    frame["request_time"] = _utc_index(frame["request_time"])
    frame["forecast_time"] = _utc_index(frame["forecast_time"])
    frame["intensity"] = frame["intensity"].astype(float)
    return frame.dropna().sort_values(["request_time", "forecast_time"], ignore_index=True)


def issued_forecast_at(forecasts: pd.DataFrame, when: pd.Timestamp) -> pd.Series:
    """The forecast most recently issued at or before ``when``, indexed by forecast time."""
    issued = forecasts["request_time"]
    at_or_before = issued[issued <= when]
    if at_or_before.empty:
        return pd.Series(dtype=float, index=pd.DatetimeIndex([], tz="UTC"), name="intensity")
    latest = forecasts[issued == at_or_before.iloc[-1]]
    return pd.Series(
        latest["intensity"].to_numpy(),
        index=pd.DatetimeIndex(latest["forecast_time"], name="timestamp"),
        name="intensity",
    )


# --- readers -------------------------------------------------------------------------------


def _read_electricitymaps(path: Path, header: list[str], basis: Basis) -> Trace:
    columns = {m.group(1): c for c in header if (m := _EM_COLUMN.match(c))}
    label = "direct" if basis == Basis.DIRECT else "LCA"
    if label not in columns:
        raise ConfigError(
            f"trace {path} has no {label} carbon-intensity column "
            f"(found: {', '.join(sorted(columns)) or 'none'})"
        )
    wanted = ["Datetime (UTC)", columns[label]]
    extra = [c for c in ("Zone Id", "Data Estimated") if c in header]
    frame = pd.read_csv(path, usecols=wanted + extra, encoding="utf-8-sig")
    index = _utc_index(frame["Datetime (UTC)"])
    series = _clean(pd.Series(frame[columns[label]].to_numpy(dtype=float), index=index))
    estimated = None
    if "Data Estimated" in frame:
        flags = frame["Data Estimated"].astype(str).str.lower().eq("true").to_numpy()
        estimated = pd.Series(flags, index=index)
        estimated = estimated[~estimated.index.duplicated(keep="last")].sort_index()
        estimated = estimated.reindex(series.index, fill_value=False)
    zone = None
    if "Zone Id" in frame and frame["Zone Id"].notna().any():
        zone = str(frame["Zone Id"].dropna().iloc[0])
    return Trace(zone, basis, series, None, "electricitymaps", path, estimated)


def _read_plain(path: Path, header: list[str], basis: Basis | None) -> Trace:
    wanted = [c for c in ("timestamp", "intensity", "forecast", "zone", "basis") if c in header]
    frame = pd.read_csv(path, usecols=wanted)
    index = _utc_index(frame["timestamp"])
    series = _clean(pd.Series(frame["intensity"].to_numpy(dtype=float), index=index))
    forecast = None
    if "forecast" in frame:
        forecast = _clean(pd.Series(frame["forecast"].to_numpy(dtype=float), index=index))
    zone = None
    if "zone" in frame and frame["zone"].notna().any():
        zone = str(frame["zone"].dropna().iloc[0])
    file_basis = None
    if "basis" in frame and frame["basis"].notna().any():
        file_basis = _basis(str(frame["basis"].dropna().iloc[0]), path)
    return Trace(zone, file_basis or basis or Basis.DIRECT, series, forecast, "plain", path)


def _read_lets_wait_awhile(path: Path) -> Trace:
    frame = pd.read_csv(path, usecols=["Time", "Carbon Intensity"])
    index = _utc_index(frame["Time"])
    series = _clean(pd.Series(frame["Carbon Intensity"].to_numpy(dtype=float), index=index))
    zone = _LWA_ZONES.get(path.stem.split("_")[0].lower())
    return Trace(zone, Basis.LIFECYCLE, series, None, "lets-wait-awhile", path)


def _read_dacf(path: Path, header: list[str]) -> Trace:
    has_forecast = "carbon_from_src_forecasts" in header
    wanted = ["UTC time", "carbon_intensity"] + (["carbon_from_src_forecasts"] * has_forecast)
    frame = pd.read_csv(path, usecols=wanted)
    index = _utc_index(frame["UTC time"])
    series = _clean(pd.Series(frame["carbon_intensity"].to_numpy(dtype=float), index=index))
    forecast = None
    if has_forecast:
        values = frame["carbon_from_src_forecasts"].to_numpy(dtype=float)
        forecast = _clean(pd.Series(values, index=index))
    # DACF names files <REGION>_..., e.g. CISO_direct_emissions.csv.
    zone = path.stem.split("_")[0]
    return Trace(zone, Basis.DIRECT, series, forecast, "dacf", path)


def _read_watttime(path: Path, header: list[str]) -> Trace:
    region = header[1]
    frame = pd.read_csv(path, usecols=["time", region])
    index = _utc_index(frame["time"])
    series = _clean(pd.Series(frame[region].to_numpy(dtype=float), index=index))
    return Trace(region.upper(), Basis.MARGINAL, series, None, "watttime", path)


# --- helpers -------------------------------------------------------------------------------


def _read_header(path: Path) -> list[str]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            first = handle.readline()
    except FileNotFoundError:
        raise ConfigError(f"trace {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"trace {path} is a directory, not a CSV file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"trace {path} is not UTF-8 text; {_ACCEPTED}") from None
    except OSError as exc:
        raise ConfigError(f"trace {path} cannot be read: {exc.strerror}") from None
    if not first.strip():
        raise ConfigError(f"trace {path} is empty; {_ACCEPTED}")
    return [c.strip() for c in next(csv.reader([first]))]


def _format_of(path: Path, header: list[str]) -> str:
    names = set(header)
    if any(_EM_COLUMN.match(c) for c in header) and "Datetime (UTC)" in names:
        return "electricitymaps"
    if {"timestamp", "intensity"} <= names:
        return "plain"
    if {"Time", "Carbon Intensity"} <= names:
        return "lets-wait-awhile"
    if {"UTC time", "carbon_intensity"} <= names:
        return "dacf"
    if {"request_time", "forecast_time"} <= names and len(header) == 3:
        return "watttime-forecast"
    if len(header) == 2 and header[0] == "time":
        return "watttime"
    shown = ", ".join(header[:6]) + (", ..." if len(header) > 6 else "")
    raise ConfigError(f"trace {path} has an unknown format (columns: {shown}); {_ACCEPTED}")


def _basis(value: Basis | str, path: Path) -> Basis:
    text = str(value).strip().lower()
    aliases = {"lca": "lifecycle", "life-cycle": "lifecycle", "moer": "marginal"}
    try:
        return Basis(aliases.get(text, text))
    except ValueError:
        raise ConfigError(
            f"trace {path}: unknown basis {value!r} (use direct, lifecycle or marginal)"
        ) from None


def _utc_index(values: pd.Series) -> pd.DatetimeIndex:
    """Parse timestamps; naive ones are UTC, offset-aware ones are converted to UTC."""
    parsed = pd.to_datetime(values, utc=True, format="ISO8601")
    return pd.DatetimeIndex(parsed, name="timestamp")


def _clean(series: pd.Series) -> pd.Series:
    """Sort, drop missing values and duplicate instants, and put the series on one step."""
    series = series.dropna()
    if (series < 0).any():
        raise ValueError("negative carbon intensity")
    series = series[~series.index.duplicated(keep="last")].sort_index()
    if series.empty:
        raise ValueError("no carbon-intensity values")
    series.name = "intensity"
    if len(series) < 3:
        return series
    gaps = series.index.to_series().diff().dropna()
    if gaps.nunique() == 1:
        return series
    # Mixed steps (lets-wait-awhile GB mixes 15 and 30 min): use the most common step,
    # averaging finer points into it and interpolating the rare holes.
    step = gaps.mode().iloc[0]
    regular = series.resample(step).mean().interpolate(method="time")
    regular.name = "intensity"
    return regular
