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

Read with csv and numpy, not pandas: the operator replays traces, and pandas would be ~40 MB
of its memory. The backtest and the plots get pandas Series from ``Trace.series`` and friends.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from carbonaware.core.errors import ConfigError
from carbonaware.core.model import Basis

if TYPE_CHECKING:
    import pandas as pd

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
# Cells that mean "no value" (pandas' defaults, lower-cased).
_MISSING = {"", "nan", "-nan", "na", "n/a", "<na>", "#n/a", "null", "none"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9


@dataclass(frozen=True)
class Points:
    """Values at sorted, unique instants: ``times`` in int64 nanoseconds since the epoch (UTC,
    interval starts), ``values`` alongside. Plain numpy, so that the operator, which replays
    traces, never imports pandas (~40 MB of its 200 MB budget)."""

    times: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        # Shared between jobs (shared_trace): nobody may change them in place.
        self.times.setflags(write=False)
        self.values.setflags(write=False)

    def __len__(self) -> int:
        return len(self.times)

    def to_series(self, name: str) -> pd.Series:
        import pandas as pd

        index = pd.DatetimeIndex(self.times.astype("datetime64[ns]"), name="timestamp")
        return pd.Series(self.values.copy(), index=index.tz_localize("UTC"), name=name)


@dataclass(frozen=True)
class Trace:
    """A carbon-intensity time series read from a file.

    ``actual``: gCO2eq/kWh on a regular step. ``predicted``: a forecast of those instants when
    the file carries one. ``estimated_flags``: per actual instant, "the source estimated this",
    when the file says so. ``zone`` is None when the file does not say (then any zone may be
    replayed from it). ``series``, ``forecast`` and ``estimated`` give the same as pandas
    Series, for the backtest and the plots.
    """

    zone: str | None
    basis: Basis
    actual: Points
    predicted: Points | None
    source_format: str
    path: Path
    estimated_flags: np.ndarray | None = None

    @property
    def start(self) -> datetime:
        return from_ns(int(self.actual.times[0]))

    @property
    def end(self) -> datetime:
        return from_ns(int(self.actual.times[-1]))

    @property
    def step(self) -> timedelta:
        """The regular spacing of the series (one hour when it has a single point)."""
        times = self.actual.times
        gap = int(times[1] - times[0]) if len(times) > 1 else HOUR_NS
        return timedelta(microseconds=gap // 1000)

    @cached_property
    def series(self) -> pd.Series:
        return self.actual.to_series("intensity")

    @cached_property
    def forecast(self) -> pd.Series | None:
        return None if self.predicted is None else self.predicted.to_series("intensity")

    @cached_property
    def estimated(self) -> pd.Series | None:
        if self.estimated_flags is None:
            return None
        return Points(self.actual.times, self.estimated_flags).to_series("estimated")


def to_ns(moment: datetime) -> int:
    """An aware datetime as int64 nanoseconds since the epoch (exact: integer arithmetic)."""
    return (moment - _EPOCH) // timedelta(microseconds=1) * 1000


def from_ns(ns: int) -> datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=ns // 1000)


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
            trace = _read_lets_wait_awhile(path, header)
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
    except (ValueError, KeyError, TypeError, csv.Error) as exc:
        raise ConfigError(f"trace {path} ({fmt} format) could not be read: {exc}") from None
    if wanted is not None and wanted != trace.basis:
        raise ConfigError(
            f"trace {path} is {trace.basis.value} intensity ({fmt} format); "
            f"it has no {wanted.value} values"
        )
    if zone:
        trace = replace(trace, zone=zone)
    return trace


def shared_trace(path: str | Path, *, basis: Basis | str | None = None) -> Trace:
    """:func:`load_trace`, read once per version of the file: every replay job of an
    operator builds its own provider (its own clock), and they all share the trace."""
    path = Path(path)
    try:
        version = path.stat()
    except OSError:
        return load_trace(path, basis=basis)  # it says what is wrong, naming the file
    return _load_trace_version(
        path, None if basis is None else str(basis), version.st_mtime_ns, version.st_size
    )


@lru_cache(maxsize=32)
def _load_trace_version(path: Path, basis: str | None, _mtime_ns: int, _size: int) -> Trace:
    return load_trace(path, basis=basis)


def load_issued_forecasts(path: str | Path) -> pd.DataFrame:
    """Read a WattTime issued-forecast file: columns ``request_time``, ``forecast_time``
    (tz-aware UTC) and ``intensity`` (g/kWh), sorted by request then forecast time."""
    import pandas as pd  # the backtest's alone: the operator never reads these files

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
    for column in ("request_time", "forecast_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    frame["intensity"] = frame["intensity"].astype(float)
    return frame.dropna().sort_values(["request_time", "forecast_time"], ignore_index=True)


def issued_forecast_at(forecasts: pd.DataFrame, when: pd.Timestamp) -> pd.Series:
    """The forecast most recently issued at or before ``when``, indexed by forecast time."""
    import pandas as pd

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
    frame = _read_columns(
        path, header, ["Datetime (UTC)", columns[label], "Zone Id", "Data Estimated"]
    )
    times = _utc_ns(frame["Datetime (UTC)"])
    actual = _clean(times, _floats(frame[columns[label]]))
    estimated = None
    if "Data Estimated" in frame:
        flags = np.array([cell.strip().lower() == "true" for cell in frame["Data Estimated"]])
        estimated = _align(_last_per_instant(times, flags), actual.times)
    return Trace(
        _first_text(frame, "Zone Id"), basis, actual, None, "electricitymaps", path, estimated
    )


def _read_plain(path: Path, header: list[str], basis: Basis | None) -> Trace:
    frame = _read_columns(path, header, ["timestamp", "intensity", "forecast", "zone", "basis"])
    times = _utc_ns(frame["timestamp"])
    actual = _clean(times, _floats(frame["intensity"]))
    predicted = _clean(times, _floats(frame["forecast"])) if "forecast" in frame else None
    file_basis = _first_text(frame, "basis")
    chosen = _basis(file_basis, path) if file_basis else basis or Basis.DIRECT
    return Trace(_first_text(frame, "zone"), chosen, actual, predicted, "plain", path)


def _read_lets_wait_awhile(path: Path, header: list[str]) -> Trace:
    frame = _read_columns(path, header, ["Time", "Carbon Intensity"])
    actual = _clean(_utc_ns(frame["Time"]), _floats(frame["Carbon Intensity"]))
    zone = _LWA_ZONES.get(path.stem.split("_")[0].lower())
    return Trace(zone, Basis.LIFECYCLE, actual, None, "lets-wait-awhile", path)


def _read_dacf(path: Path, header: list[str]) -> Trace:
    frame = _read_columns(
        path, header, ["UTC time", "carbon_intensity", "carbon_from_src_forecasts"]
    )
    times = _utc_ns(frame["UTC time"])
    actual = _clean(times, _floats(frame["carbon_intensity"]))
    predicted = None
    if "carbon_from_src_forecasts" in frame:
        predicted = _clean(times, _floats(frame["carbon_from_src_forecasts"]))
    # DACF names files <REGION>_..., e.g. CISO_direct_emissions.csv.
    zone = path.stem.split("_")[0]
    return Trace(zone, Basis.DIRECT, actual, predicted, "dacf", path)


def _read_watttime(path: Path, header: list[str]) -> Trace:
    region = header[1]
    frame = _read_columns(path, header, ["time", region])
    actual = _clean(_utc_ns(frame["time"]), _floats(frame[region]))
    return Trace(region.upper(), Basis.MARGINAL, actual, None, "watttime", path)


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


def _read_columns(path: Path, header: list[str], wanted: list[str]) -> dict[str, list[str]]:
    """The cells of those ``wanted`` columns the file has, by name (short rows read as blank)."""
    positions = {name: header.index(name) for name in wanted if name in header}
    columns: dict[str, list[str]] = {name: [] for name in positions}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)  # the header
        for row in rows:
            if not row:
                continue
            for name, at in positions.items():
                columns[name].append(row[at] if at < len(row) else "")
    return columns


def _floats(cells: list[str]) -> np.ndarray:
    return np.array(
        [np.nan if cell.strip().lower() in _MISSING else float(cell) for cell in cells], dtype=float
    )


def _utc_ns(cells: list[str]) -> np.ndarray:
    """ISO 8601 timestamps as nanoseconds; naive ones are UTC, others are converted to UTC."""
    out = np.empty(len(cells), dtype=np.int64)
    for i, cell in enumerate(cells):
        moment = datetime.fromisoformat(cell.strip())
        out[i] = to_ns(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return out


def _first_text(frame: dict[str, list[str]], column: str) -> str | None:
    return next((cell.strip() for cell in frame.get(column, ()) if cell.strip()), None)


def _last_per_instant(times: np.ndarray, values: np.ndarray) -> Points:
    """Sorted by time, keeping the last row of the file for an instant it repeats."""
    order = np.argsort(times, kind="stable")
    times, values = times[order], values[order]
    last = np.append(times[1:] != times[:-1], True)
    return Points(times[last], values[last])


def _align(flags: Points, times: np.ndarray) -> np.ndarray:
    """``flags`` at ``times``; False where the file has no flag for an instant."""
    at = np.minimum(np.searchsorted(flags.times, times), len(flags.times) - 1)
    found = flags.times[at] == times
    return np.where(found, flags.values[at], False).astype(bool)


def _clean(times: np.ndarray, values: np.ndarray) -> Points:
    """Drop missing values and repeated instants (the last wins), sort, and put the points on
    one step."""
    present = ~np.isnan(values)
    if (values[present] < 0).any():
        raise ValueError("negative carbon intensity")
    points = _last_per_instant(times[present], values[present])
    if not len(points):
        raise ValueError("no carbon-intensity values")
    if len(points) < 3:
        return points
    gaps, counts = np.unique(np.diff(points.times), return_counts=True)
    if len(gaps) == 1:
        return points
    # Mixed steps (lets-wait-awhile GB mixes 15 and 30 min): use the most common step (the
    # shortest of equals), average finer points into it, and interpolate the rare holes.
    # Steps are counted from midnight of the first day, as pandas' resample does.
    step = int(gaps[np.argmax(counts)])
    origin = int(points.times[0]) - int(points.times[0]) % _DAY_NS
    slots = (points.times - origin) // step
    first = slots[0]
    sums = np.bincount(slots - first, weights=points.values)
    filled = np.bincount(slots - first)
    grid = origin + (first + np.arange(len(sums))) * step
    means = np.divide(sums, filled, out=np.full(len(sums), np.nan), where=filled > 0)
    holes = filled == 0
    means[holes] = np.interp(grid[holes], grid[~holes], means[~holes])
    return Points(grid.astype(np.int64), means)
