"""Energy, emissions and the carbon saved, computed honestly and labelled.

Conventions (the same everywhere in the project):

- **Energy** is facility energy: IT energy × PUE. The trainer's measured energy (GPU/CPU
  counters) is IT energy, so PUE multiplies measured energy exactly as it multiplies the
  estimate (assumed power × duration). With the default PUE of 1.0 the two are equal.
- **Emissions** spread the energy uniformly over the run and integrate it against the
  piecewise-constant intensity of the *actual* readings logged (each reading holds until the
  next). When the readings do not cover the run (no reading in force at its start, or a gap
  longer than ``max_gap``), the emissions fall back to the reading in force at the start
  (or the first one after it) and say so (``method="start-reading"``).
- **Baseline** is the counterfactual "started at submission": the same energy over the same
  run time, beginning at submission, integrated against the same logged actual readings.
  Forecast readings never enter either number, so a saving is never forecast-derived.
- **Saved** = baseline − actual, both from the same readings.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from carbonaware.core.durations import format_duration
from carbonaware.core.log_metadata import LogKey
from carbonaware.core.model import Reading, utc
from carbonaware.core.workload_report import UNLABELLED, WorkloadReport, is_measured

DEFAULT_MAX_GAP = timedelta(hours=2)
Segment = tuple[datetime, datetime]


@dataclass(frozen=True)
class Energy:
    kwh: float
    # "estimated" (assumed power × time), or the workload's label, e.g. "measured:rapl-package"
    method: str
    detail: str

    @property
    def measured(self) -> bool:
        """Every part of the figure was metered (none estimated or assumed)."""
        return is_measured(self.method)


@dataclass(frozen=True)
class Emissions:
    grams: float
    method: str  # "integrated" | "start-reading"
    basis: str  # the readings' emission-factor basis ("direct", "lifecycle", ... or "mixed")
    readings_used: int
    note: str


@dataclass(frozen=True)
class CarbonReport:
    energy: Energy
    emissions: Emissions
    baseline: Emissions
    saved_grams: float
    saved_percent: float | None  # None when the baseline is zero
    basis: str
    savings_method: str  # how far the saving can be trusted, in words


def estimate_energy(power_watts: float, duration: timedelta, pue: float = 1.0) -> Energy:
    """Assumed average power × duration × PUE."""
    _check_pue(pue)
    if power_watts < 0:
        raise ValueError(f"power must be >= 0 W, got {power_watts}")
    hours = duration.total_seconds() / 3600
    kwh = power_watts * hours * pue / 1000
    detail = f"estimated: {power_watts:g} W assumed × {format_duration(duration)} × PUE {pue:g}"
    return Energy(kwh, "estimated", detail)


def energy_from(
    reported_kwh: float | None,
    power_watts: float,
    duration: timedelta,
    pue: float = 1.0,
    measured_by: str = "the workload",
    label: str | None = None,
) -> Energy:
    """The workload's reported IT energy × PUE when it reported one, else our estimate.

    ``label`` is the workload's own (core/workload_report.py): the trainer says e.g.
    ``measured:rapl-package`` or ``estimated:cpu-time×10W/core``, parts joined by ``+``. It
    is kept as the energy's method; a figure without one is ``unlabelled`` (an estimate).
    """
    if reported_kwh is None:
        return estimate_energy(power_watts, duration, pue)
    _check_pue(pue)
    if not reported_kwh >= 0:
        raise ValueError(f"reported energy must be >= 0 kWh, got {reported_kwh}")
    method = label or UNLABELLED
    kind = "measured" if is_measured(method) else "estimated"
    detail = f"{kind} by {measured_by} ({method}): {reported_kwh:.4g} kWh IT energy × PUE {pue:g}"
    return Energy(reported_kwh * pue, method, detail)


def job_energy(
    report: WorkloadReport | None,
    power_watts: float,
    pue: float,
    ran: timedelta,
    resumed: bool = False,
    measured_by: str = "the trainer",
) -> Energy:
    """A finished job's energy: the workload's own report (its label kept), else the assumed
    power over the time it ran.

    ``ran`` is the job's run time as the operator saw it (wall time). The report's own
    ``wall_seconds`` wins where it covers the whole run; a resumed job's report covers only
    its last pod (the earlier pods' reports went with them), so then neither its figures nor
    its time count (``resumed``).
    """
    own = None if resumed else report
    run_time = ran
    if own is not None and own.wall_seconds is not None:
        run_time = timedelta(seconds=own.wall_seconds)
    return energy_from(
        own.energy_kwh if own is not None else None,
        power_watts,
        run_time,
        pue,
        measured_by=measured_by,
        label=own.energy_label if own is not None else None,
    )


def emissions_over(
    energy_kwh: float,
    start: datetime,
    end: datetime,
    readings: Sequence[Reading],
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> Emissions:
    """Emissions of ``energy_kwh`` used uniformly over ``[start, end]``."""
    return emissions_over_segments(energy_kwh, [(start, end)], readings, max_gap)


def emissions_over_segments(
    energy_kwh: float,
    segments: Sequence[Segment],
    readings: Sequence[Reading],
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> Emissions:
    """Emissions of ``energy_kwh`` used uniformly over the run segments (interruptible jobs)."""
    spans = [(utc(a), utc(b)) for a, b in segments]
    if not spans or any(b < a for a, b in spans):
        raise ValueError("need at least one run segment, each with end >= start")
    actual = sorted((r for r in readings if not r.forecast), key=lambda r: r.timestamp)
    if not actual:
        raise ValueError("no actual readings to account emissions against")
    basis = _basis_of(actual)
    total_seconds = sum((b - a).total_seconds() for a, b in spans)
    covered = all(_covers(actual, a, b, max_gap) for a, b in spans)

    if covered and total_seconds > 0:
        grams = 0.0
        used: set[int] = set()
        for a, b in spans:
            for index, seconds in _overlaps(actual, a, b):
                grams += actual[index].intensity * energy_kwh * seconds / total_seconds
                used.add(index)
        note = f"integrated over {len(used)} reading(s) during the run"
        return Emissions(grams, "integrated", basis, len(used), note)

    start = spans[0][0]
    in_force = _in_force(actual, start)
    reading = actual[in_force] if in_force is not None else actual[0]
    if total_seconds == 0 and in_force is not None:
        note = "zero-length run: reading in force at the start"
        return Emissions(energy_kwh * reading.intensity, "integrated", basis, 1, note)
    note = (
        f"readings missing during the run: used the reading at {reading.timestamp:%Y-%m-%d %H:%M} "
        f"UTC ({reading.intensity:.0f} g/kWh) for all of it"
    )
    return Emissions(energy_kwh * reading.intensity, "start-reading", basis, 1, note)


def baseline_emissions(
    energy_kwh: float,
    duration: timedelta,
    submitted_at: datetime,
    readings: Sequence[Reading],
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> Emissions:
    """Emissions had the job started at submission: same energy and run time, actual readings."""
    start = utc(submitted_at)
    result = emissions_over(energy_kwh, start, start + duration, readings, max_gap)
    if result.method == "integrated":
        return result
    note = (
        "the window starting at submission is not fully covered by actual readings; " + result.note
    )
    return Emissions(result.grams, result.method, result.basis, result.readings_used, note)


def account(
    energy: Energy,
    segments: Sequence[Segment],
    submitted_at: datetime,
    readings: Sequence[Reading],
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> CarbonReport:
    """The job's carbon report: emissions of its run segments vs starting at submission."""
    emissions = emissions_over_segments(energy.kwh, segments, readings, max_gap)
    run_time = sum(((utc(b) - utc(a)) for a, b in segments), timedelta(0))
    baseline = baseline_emissions(energy.kwh, run_time, submitted_at, readings, max_gap)
    saved = baseline.grams - emissions.grams
    percent = 100.0 * saved / baseline.grams if baseline.grams > 0 else None
    if emissions.method == "integrated" and baseline.method == "integrated":
        savings_method = "from actual logged readings (run and counterfactual both covered)"
    else:
        savings_method = (
            "approximate: actual readings do not cover the "
            + ("run" if emissions.method != "integrated" else "counterfactual window")
            + "; start-reading fallback used"
        )
    basis = emissions.basis if emissions.basis == baseline.basis else "mixed"
    return CarbonReport(energy, emissions, baseline, saved, percent, basis, savings_method)


def report_metadata(report: CarbonReport) -> dict[str, str]:
    """The report as flat strings, for an intensity log's header (and the plot caption)."""
    meta = {
        LogKey.ENERGY_KWH: f"{report.energy.kwh:.6g}",
        LogKey.ENERGY_METHOD: report.energy.method,
        LogKey.ENERGY_DETAIL: report.energy.detail,
        LogKey.EMISSIONS_G: f"{report.emissions.grams:.6g}",
        LogKey.EMISSIONS_METHOD: report.emissions.method,
        LogKey.BASELINE_G: f"{report.baseline.grams:.6g}",
        LogKey.SAVED_G: f"{report.saved_grams:.6g}",
        LogKey.SAVINGS_METHOD: report.savings_method,
        LogKey.BASIS: report.basis,
    }
    if report.saved_percent is not None:
        meta[LogKey.SAVED_PERCENT] = f"{report.saved_percent:.4g}"
    return meta


def _check_pue(pue: float) -> None:
    if not pue >= 1.0:
        raise ValueError(f"PUE must be >= 1.0, got {pue}")


def _basis_of(readings: Sequence[Reading]) -> str:
    kinds = {str(r.basis) for r in readings}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _in_force(actual: Sequence[Reading], at: datetime) -> int | None:
    """Index of the last reading at or before ``at`` (readings sorted), None if none."""
    index = None
    for i, reading in enumerate(actual):
        if reading.timestamp <= at:
            index = i
        else:
            break
    return index


def _covers(actual: Sequence[Reading], start: datetime, end: datetime, max_gap: timedelta) -> bool:
    """A reading is in force at ``start`` and none holds longer than ``max_gap`` within it."""
    first = _in_force(actual, start)
    if first is None:
        return False
    stamps = [r.timestamp for r in actual[first:] if r.timestamp <= end] + [end]
    return all(b - a <= max_gap for a, b in itertools.pairwise(stamps))


def _overlaps(actual: Sequence[Reading], start: datetime, end: datetime):
    """(reading index, seconds it is in force within [start, end]) for each overlapping one."""
    for i, reading in enumerate(actual):
        held_from = max(reading.timestamp, start)
        held_to = min(actual[i + 1].timestamp, end) if i + 1 < len(actual) else end
        if held_to > held_from:
            yield i, (held_to - held_from).total_seconds()
