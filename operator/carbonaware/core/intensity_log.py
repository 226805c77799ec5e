"""A job's intensity log: every reading, as CSV, kept under a byte budget however long it runs.

The log is stored in a ConfigMap (1 MiB limit), so ``to_csv()`` must stay under
``budget_bytes`` (default 512 KiB) after any number of appends. The CSV is

    # key=value            metadata lines (zone, threshold, submitted_at, ..., energy)
    timestamp,zone,intensity,basis,forecast,estimated,provider
    ...actual readings, oldest first...
    ...then the latest forecast (forecast=true), soonest first...

Bounding (the ``compact`` step, run only when an append pushes the size over the budget):

- the newest actual readings are kept at full resolution, up to half the budget;
- older readings are replaced by time-weighted means (each reading holds until the next) over
  hourly buckets, or daily, or weekly ones — the finest that fits, so the whole log drops to
  three quarters of the budget; only if even weekly means do not fit are the oldest dropped;
- the metadata keys ``downsampled_before`` and ``downsampled_to`` say what was merged.

Compacting to 75 % leaves a quarter of the budget before the next compaction, so appends are
amortised O(1): the CSV is not re-serialised on every append (each row is formatted once and
its size kept). Forecasts are kept separately and only the latest one (at most an eighth of
the budget, nearest first), so they cannot grow the log.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Mapping
from datetime import datetime

import numpy as np

from carbonaware.core.log_metadata import LogKey
from carbonaware.core.model import Basis, Reading, utc

DEFAULT_BUDGET_BYTES = 512 * 1024
COLUMNS = ("timestamp", "zone", "intensity", "basis", "forecast", "estimated", "provider")
HEADER_ROW = ",".join(COLUMNS) + "\n"
RESOLUTIONS = (("1h", 3600), ("1d", 86400), ("7d", 7 * 86400))
FULL_RESOLUTION_SHARE = 0.5
COMPACT_TO_SHARE = 0.75
FORECAST_SHARE = 0.125


class IntensityLog:
    """Append-only readings plus metadata, serialisable to CSV, bounded by ``budget_bytes``."""

    def __init__(
        self,
        metadata: Mapping[str, object] | None = None,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        if budget_bytes < 1024:
            raise ValueError(f"budget must be at least 1024 bytes, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._metadata: dict[str, str] = {}
        self._readings: list[Reading] = []
        self._stamps: list[datetime] = []  # sorted, parallel to _readings
        self._rows: list[str] = []  # each reading's CSV row, formatted once
        self._rows_bytes = 0
        self._forecast: dict[datetime, Reading] = {}
        for key, value in (metadata or {}).items():
            self.set(key, value)

    # -- metadata -------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, str]:
        return dict(self._metadata)

    def set(self, key: str, value: object) -> None:
        """Set a metadata entry (``None`` removes it). Values are stored as one-line strings."""
        if not key or any(c in key for c in "=\n\r#"):
            raise ValueError(f"metadata key {key!r} must be non-empty without '=', '#' or newlines")
        if value is None:
            self._metadata.pop(key, None)
            return
        if isinstance(value, datetime):
            value = _format_time(value)
        self._metadata[key] = " ".join(str(value).splitlines())
        self._enforce_budget()

    def update(self, values: Mapping[str, object]) -> None:
        for key, value in values.items():
            self.set(key, value)

    # -- readings -------------------------------------------------------------------------
    @property
    def readings(self) -> list[Reading]:
        """Actual readings, oldest first (older ones possibly downsampled to means)."""
        return list(self._readings)

    @property
    def forecast(self) -> list[Reading]:
        """The latest forecast still ahead of the newest actual reading, soonest first."""
        return [self._forecast[t] for t in sorted(self._forecast)]

    def append(self, reading: Reading) -> None:
        """Add a reading. A forecast reading updates the forecast; an actual reading with the
        timestamp of one already logged replaces it (providers repeat the latest reading)."""
        if reading.forecast:
            self._forecast[reading.timestamp] = reading
            self._trim_forecast()
            return
        index = bisect.bisect_left(self._stamps, reading.timestamp)
        row = _format_row(reading)
        if index < len(self._stamps) and self._stamps[index] == reading.timestamp:
            self._rows_bytes += _encoded_len(row) - _encoded_len(self._rows[index])
            self._readings[index], self._rows[index] = reading, row
        else:
            self._readings.insert(index, reading)
            self._stamps.insert(index, reading.timestamp)
            self._rows.insert(index, row)
            self._rows_bytes += _encoded_len(row)
        if self._forecast and min(self._forecast) <= reading.timestamp:
            self._trim_forecast()
        self._enforce_budget()

    def extend(self, readings: Iterable[Reading]) -> None:
        for reading in readings:
            self.append(reading)

    def absorb(self, other: IntensityLog) -> None:
        """Take in what another copy of this log holds and this one lacks: actual readings at
        timestamps not logged here, metadata keys not set here, and its forecast if this log
        has none. What this log holds wins. Merges two writers' copies without losing either's
        readings (used when the stored copy changed under the writer)."""
        logged = set(self._stamps)
        self.extend(r for r in other.readings if r.timestamp not in logged)
        for key, value in other.metadata.items():
            if key not in self._metadata:
                self.set(key, value)
        if not self._forecast:
            self.set_forecast(other.forecast)

    def set_forecast(self, readings: Iterable[Reading]) -> None:
        """Replace the forecast with a newly issued one."""
        self._forecast = {r.timestamp: r for r in readings}
        self._trim_forecast()

    # -- CSV ------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        return len(self.to_csv().encode())

    def to_csv(self) -> str:
        parts = [f"# {k}={v}\n" for k, v in self._metadata.items()]
        parts.append(HEADER_ROW)
        parts.extend(self._rows)
        parts.extend(_format_row(r) for r in self.forecast)
        return "".join(parts)

    @classmethod
    def from_csv(cls, text: str, budget_bytes: int | None = None) -> IntensityLog:
        """Parse ``to_csv`` output. Raise ValueError with the line number on a bad row."""
        metadata: dict[str, str] = {}
        body: list[str] = []
        for line in text.splitlines():
            if line.startswith("#"):
                key, sep, value = line[1:].strip().partition("=")
                if sep:
                    metadata[key.strip()] = value
            elif line.strip():
                body.append(line)
        budget = budget_bytes or max(DEFAULT_BUDGET_BYTES, len(text.encode()))
        log = cls(budget_bytes=budget)
        log._metadata = metadata
        rows = csv.DictReader(body)
        if rows.fieldnames is None or tuple(rows.fieldnames) != COLUMNS:
            raise ValueError(f"intensity log header must be {','.join(COLUMNS)}")
        for number, row in enumerate(rows, start=2):
            try:
                reading = Reading(
                    zone=row["zone"],
                    timestamp=utc(datetime.fromisoformat(row["timestamp"])),
                    intensity=float(row["intensity"]),
                    basis=Basis(row["basis"]),
                    forecast=_parse_bool(row["forecast"]),
                    estimated=_parse_bool(row["estimated"]),
                    provider=row["provider"] or "",
                )
            except (TypeError, ValueError, KeyError) as exc:
                raise ValueError(f"intensity log row {number}: {exc}") from exc
            log.append(reading)
        return log

    # -- bounding -------------------------------------------------------------------------
    def _fixed_bytes(self) -> int:
        meta = sum(len(f"# {k}={v}\n".encode()) for k, v in self._metadata.items())
        forecast = sum(len(_format_row(r)) for r in self._forecast.values())
        return meta + len(HEADER_ROW) + forecast

    def _enforce_budget(self) -> None:
        if self._fixed_bytes() + self._rows_bytes > self.budget_bytes:
            self._compact()

    def _compact(self) -> None:
        fixed = self._fixed_bytes()
        room = int(self.budget_bytes * COMPACT_TO_SHARE) - fixed
        full_room = int(self.budget_bytes * FULL_RESOLUTION_SHARE) - fixed
        if room <= 0:
            raise ValueError("intensity log metadata and forecast alone exceed the byte budget")
        # newest rows at full resolution, within half the budget
        keep, used = len(self._rows), 0
        while keep > 0 and used + _encoded_len(self._rows[keep - 1]) <= max(full_room, 0):
            keep -= 1
            used += _encoded_len(self._rows[keep])
        older, recent = self._readings[:keep], self._readings[keep:]
        if not older:
            older, recent = self._readings[:-1], self._readings[-1:]
            used = _encoded_len(self._rows[-1])
        merged: list[Reading] = []
        until = recent[0].timestamp if recent else older[-1].timestamp
        label = RESOLUTIONS[-1][0]
        for resolution, seconds in RESOLUTIONS:
            merged = _time_weighted_means(older, until, seconds)
            if sum(_encoded_len(_format_row(r)) for r in merged) + used <= room:
                label = resolution
                break
        rows = [_format_row(r) for r in merged]
        while rows and sum(map(_encoded_len, rows)) + used > room:  # only past weekly means
            drop = max(1, len(rows) // 8)
            merged, rows = merged[drop:], rows[drop:]
        self._readings = merged + recent
        self._stamps = [r.timestamp for r in self._readings]
        self._rows = rows + self._rows[len(self._rows) - len(recent) :]
        self._rows_bytes = sum(map(_encoded_len, self._rows))
        if older:
            self._metadata[LogKey.DOWNSAMPLED_BEFORE] = _format_time(until)
            previous = self._metadata.get(LogKey.DOWNSAMPLED_TO)
            coarsest = max(
                (x for x in (previous, label) if x), key=lambda lab: dict(RESOLUTIONS)[lab]
            )
            self._metadata[LogKey.DOWNSAMPLED_TO] = f"{coarsest}"

    def _trim_forecast(self) -> None:
        newest = self._stamps[-1] if self._stamps else None
        ahead = sorted(t for t in self._forecast if newest is None or t > newest)
        room = int(self.budget_bytes * FORECAST_SHARE)
        kept: dict[datetime, Reading] = {}
        used = 0
        for stamp in ahead:  # nearest first: the far future is the least useful
            size = _encoded_len(_format_row(self._forecast[stamp]))
            if used + size > room:
                break
            kept[stamp] = self._forecast[stamp]
            used += size
        self._forecast = kept


def _time_weighted_means(readings: list[Reading], until: datetime, seconds: int) -> list[Reading]:
    """One reading per ``seconds`` bucket: the mean of the readings weighted by how long each
    held (until the next reading; the last holds until ``until``). Timestamp: the first
    reading's in the bucket, so the merged reading starts where the data starts."""
    if not readings:
        return []
    stamps = np.array([r.timestamp.timestamp() for r in readings])
    values = np.array([r.intensity for r in readings])
    held = np.diff(np.append(stamps, max(until.timestamp(), stamps[-1])))
    held = np.where(held > 0, held, 1e-9)  # a zero hold still counts, barely
    bucket = np.floor(stamps / seconds).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    weight = np.add.reduceat(held, starts)
    means = np.add.reduceat(values * held, starts) / weight
    estimated = np.add.reduceat(np.array([r.estimated for r in readings], dtype=int), starts) > 0
    ends = np.r_[starts[1:], len(readings)]
    merged = []
    for first, end, mean, est in zip(starts, ends, means, estimated, strict=True):
        last = readings[end - 1]
        merged.append(
            Reading(
                zone=last.zone,
                timestamp=readings[first].timestamp,
                intensity=round(float(mean), 3),
                basis=last.basis,
                forecast=False,
                estimated=bool(est),
                provider=last.provider,
            )
        )
    return merged


def _format_time(ts: datetime) -> str:
    return utc(ts).isoformat().replace("+00:00", "Z")


def _format_row(reading: Reading) -> str:
    cells = (
        _format_time(reading.timestamp),
        _quote(reading.zone),
        repr(float(reading.intensity)),
        str(reading.basis),
        "true" if reading.forecast else "false",
        "true" if reading.estimated else "false",
        _quote(reading.provider),
    )
    return ",".join(cells) + "\n"


def _quote(text: str) -> str:
    text = " ".join(text.splitlines())  # one row per line, always
    if any(c in text for c in ',"'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _encoded_len(row: str) -> int:
    return len(row) if row.isascii() else len(row.encode())


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")
