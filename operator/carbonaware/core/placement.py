"""Where and when to start a job: the best (placement, start) among several grid zones.

Extends :mod:`carbonaware.core.policy` from "best start" to "best (placement, start)" under
the same deadline, with the same pure functions doing the per-zone work:

- ``threshold``: run at the first poll at which some placement's latest reading is at or
  below the threshold; when several are, the cleanest (lowest ``powerScale`` × reading;
  ties: the first listed).
- ``forecast``: per placement, :func:`carbonaware.core.policy.window_plan` (provider forecast,
  else the own forecaster, as the time-only policy); the placement whose cleanest window has
  the lowest ``powerScale`` × mean forecast wins (ties: the first listed). Run when that
  window starts now, else wait (and ask again at the next poll).
- At the deadline the job runs at once, in the placement that is cleanest now (``forecast``:
  the lowest scaled mean over the next expected duration; ``threshold``: the lowest scaled
  reading).
- ``committed``: a job that has already run in one placement (an interruptible job paused
  between segments) stays there: its checkpoints live on that placement's volume, so only
  that placement is considered, and the decision is the time-only one.

``powerScale``: the energy the job uses in that placement relative to the first listed
(e.g. 1.5 for a pool that runs it 1.5 times as long at the same power). Emissions scale
with it; the window whose mean is taken stays the expected duration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from carbonaware.core.model import Reading, utc
from carbonaware.core.policy import (
    Decision,
    PolicySettings,
    Strategy,
    WindowPlan,
    decide,
    time_left,
    window_plan,
)


@dataclass(frozen=True)
class Placement:
    """One candidate: a grid zone and how much energy the job uses there (relative)."""

    zone: str
    power_scale: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.power_scale) or self.power_scale <= 0:
            raise ValueError(f"powerScale must be finite and > 0, got {self.power_scale}")


@dataclass(frozen=True)
class ZoneReadings:
    """What the scheduler holds for one placement's zone now."""

    history: Sequence[Reading]
    forecast: Sequence[Reading] = ()


@dataclass(frozen=True)
class Option:
    """One placement's best start now, as the policy saw it.

    ``now_mean`` / ``best_mean``: mean forecast intensity (g/kWh, the grid's, not scaled) of
    the expected duration from now / from ``start``; None without a reading.
    """

    placement: int
    zone: str
    power_scale: float
    start: datetime | None
    now_mean: float | None
    best_mean: float | None

    @property
    def score(self) -> float:
        """Scaled emissions per kWh of the first placement's energy (inf: unknown)."""
        return math.inf if self.best_mean is None else self.power_scale * self.best_mean


@dataclass(frozen=True)
class PlacementDecision:
    """Run now or wait, and where: ``placement`` indexes the candidates (None: not chosen)."""

    decision: Decision
    placement: int | None
    zone: str | None
    options: tuple[Option, ...]

    @property
    def run(self) -> bool:
        return self.decision.run

    @property
    def reason(self) -> str:
        return self.decision.reason


def decide_placement(
    settings: PolicySettings,
    placements: Sequence[Placement],
    submitted_at: datetime,
    now: datetime,
    readings: Sequence[ZoneReadings],
    committed: int | None = None,
) -> PlacementDecision:
    """The best (placement, start) now, under ``settings``, given each zone's readings."""
    if not placements or len(placements) != len(readings):
        raise ValueError(
            f"need one readings entry per placement, got {len(placements)} placements and "
            f"{len(readings)} readings"
        )
    if committed is not None:
        if not 0 <= committed < len(placements):
            raise ValueError(f"committed placement {committed} out of range")
        decision = decide(
            settings, submitted_at, now, readings[committed].history, readings[committed].forecast
        )
        zone = placements[committed].zone
        kept = Decision(
            decision.action,
            f"{zone} (stays where it ran: its checkpoints are there): {decision.reason}",
            decision.planned_start,
            decision.forecast_source,
            decision.deadline,
        )
        return PlacementDecision(kept, committed, zone, ())
    submitted_at, now = utc(submitted_at), utc(now)
    deadline = submitted_at + settings.max_delay
    actual = [_actual(r.history, now) for r in readings]
    if not any(actual):
        decision = decide(settings, submitted_at, now, [], [])
        return PlacementDecision(decision, None, None, ())
    if settings.strategy == Strategy.FORECAST:
        plans = [
            window_plan(settings, now, max(deadline, now), a, r.forecast) if a else None
            for a, r in zip(actual, readings, strict=True)
        ]
        if any(p is not None for p in plans):
            return _choose_forecast(settings, placements, now, deadline, actual, plans)
    return _choose_threshold(settings, placements, now, deadline, actual)


def _actual(history: Sequence[Reading], now: datetime) -> list[Reading]:
    return sorted(
        (r for r in history if not r.forecast and r.timestamp <= now), key=lambda r: r.timestamp
    )


def _cleanest(options: Sequence[Option], among: Sequence[int]) -> int:
    """The lowest score among ``among`` (ties: the first listed)."""
    return min(among, key=lambda i: (options[i].score, i))


def _choose_threshold(
    settings: PolicySettings,
    placements: Sequence[Placement],
    now: datetime,
    deadline: datetime,
    actual: list[list[Reading]],
) -> PlacementDecision:
    options = tuple(
        Option(
            i,
            p.zone,
            p.power_scale,
            now if a else None,
            a[-1].intensity if a else None,
            a[-1].intensity if a else None,
        )
        for i, (p, a) in enumerate(zip(placements, actual, strict=True))
    )
    known = [i for i, o in enumerate(options) if o.best_mean is not None]
    seen = ", ".join(f"{options[i].zone} {options[i].best_mean:.0f}" for i in known)
    threshold = settings.threshold_g_per_kwh
    if now >= deadline:
        chosen = _cleanest(options, known)
        zone = options[chosen].zone
        reason = f"deadline reached; running in {zone}, the cleanest now ({seen} g/kWh)"
        return _run(options, chosen, reason, now, None, deadline)
    below = [i for i in known if options[i].best_mean <= threshold]
    if below:
        chosen = _cleanest(options, below)
        reason = (
            f"{options[chosen].zone} intensity {options[chosen].best_mean:.0f} g/kWh at or below "
            f"threshold {threshold:.0f} ({seen} g/kWh); running in {options[chosen].zone}"
        )
        return _run(options, chosen, reason, now, None, deadline)
    reason = (
        f"every zone above threshold {threshold:.0f} g/kWh ({seen}); waiting "
        f"(deadline in {time_left(deadline, now)})"
    )
    return PlacementDecision(Decision("wait", reason, None, None, deadline), None, None, options)


def _choose_forecast(
    settings: PolicySettings,
    placements: Sequence[Placement],
    now: datetime,
    deadline: datetime,
    actual: list[list[Reading]],
    plans: list[WindowPlan | None],
) -> PlacementDecision:
    options = tuple(
        Option(i, p.zone, p.power_scale, None, None, None)
        if plan is None
        else Option(i, p.zone, p.power_scale, plan.planned_start, plan.now_mean, plan.best_mean)
        for i, (p, plan) in enumerate(zip(placements, plans, strict=True))
    )
    chosen = _cleanest(options, [i for i, plan in enumerate(plans) if plan is not None])
    plan = plans[chosen]
    if plan is None:  # _cleanest chooses among the placements that have a plan
        raise ValueError(f"placement {chosen} was chosen without a plan")
    best = options[chosen]
    others = ", ".join(
        f"{o.zone} {o.score:.0f}" for o in options if o.placement != chosen and o.best_mean
    )
    compared = f"; others {others}" if others else ""
    scaled = f" x{best.power_scale:g}" if best.power_scale != 1 else ""
    if now >= deadline:
        reason = (
            f"deadline reached; running in {best.zone}, the cleanest now "
            f"({best.now_mean:.0f} g/kWh{scaled} over the expected duration{compared})"
        )
        return _run(options, chosen, reason, now, plan.source, deadline)
    if plan.best == 0:
        reason = (
            f"running in {best.zone}: its next window averages {best.now_mean:.0f} g/kWh"
            f"{scaled}, the cleanest (placement, start) before the deadline{compared} "
            f"({plan.source} forecast)"
        )
        return _run(options, chosen, reason, now, plan.source, deadline)
    reason = (
        f"cleanest (placement, start): {best.zone} at {best.start:%Y-%m-%d %H:%M} UTC, "
        f"{best.best_mean:.0f} g/kWh{scaled} mean{compared}; waiting {time_left(best.start, now)} "
        f"(deadline in {time_left(deadline, now)}; {plan.source} forecast)"
    )
    decision = Decision("wait", reason, best.start, plan.source, deadline)
    return PlacementDecision(decision, chosen, best.zone, options)


def _run(
    options: tuple[Option, ...],
    chosen: int,
    reason: str,
    now: datetime,
    source: str | None,
    deadline: datetime,
) -> PlacementDecision:
    decision = Decision("run", reason, now, source, deadline)
    return PlacementDecision(decision, chosen, options[chosen].zone, options)
