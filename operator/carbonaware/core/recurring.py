"""Recurring jobs (``CarbonAwareCronJob``): the decisions, as pure functions.

Which scheduled time is due, what ``concurrencyPolicy`` does with runs still active, which
finished runs the history limits drop, and the running totals over the series. The rules are
``batch/v1`` CronJob's:

- only the most recent scheduled time not yet started is run; older ones passed while the
  operator was down (or while a Forbid policy held them back) are counted as missed;
- with ``startingDeadlineSeconds``, a scheduled time more than that long ago is missed too;
- Allow starts the run beside active ones, Forbid skips it while one is active (it is
  retried until its starting deadline, or a newer time, passes), Replace deletes the active
  runs and starts the new one.

Schedules are standard five-field cron lines, parsed by ``croniter``; times are evaluated in
``time_zone`` (an IANA name; UTC when absent), so "0 22 * * *" in Europe/Berlin follows
daylight saving as CronJob's ``timeZone`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

# CronJob gives up counting after this many missed times; so do we (the count says "at least").
MAX_MISSED = 100
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


class ScheduleError(ValueError):
    """A cron line or time zone that cannot be evaluated."""


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


@dataclass(frozen=True, slots=True)
class Schedule:
    """A cron line in a time zone."""

    cron: str
    time_zone: str | None = None

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            raise ScheduleError(f"unknown time zone {self.time_zone!r}") from None

    def check(self) -> None:
        """ScheduleError unless the line has five fields and croniter can evaluate it."""
        if len(self.cron.split()) != 5 or not croniter.is_valid(self.cron):
            raise ScheduleError(
                f"schedule {self.cron!r} is not a five-field cron line such as '0 22 * * *'"
            )
        self.zone()

    def times_after(self, after: datetime) -> Iterable[datetime]:
        """The scheduled times strictly after ``after``, ascending, as aware UTC."""
        self.check()
        start = after.astimezone(self.zone())
        it = croniter(self.cron, start, ret_type=datetime)
        while True:
            yield it.get_next(datetime).astimezone(UTC)

    def next_after(self, after: datetime) -> datetime:
        return next(iter(self.times_after(after)))


@dataclass(frozen=True, slots=True)
class Due:
    """What is due at ``now``: the scheduled time to start (if any) and the missed ones."""

    start: datetime | None
    missed: int  # scheduled times passed over (at most MAX_MISSED)
    latest: datetime | None  # the latest scheduled time up to now (started or missed)
    next_time: datetime  # the first scheduled time after now


def due(
    schedule: Schedule,
    last_scheduled: datetime,
    now: datetime,
    starting_deadline: timedelta | None = None,
) -> Due:
    """The scheduled times in ``(last_scheduled, now]``: the latest one is due, unless it is
    older than ``starting_deadline``; the others are missed.

    ``last_scheduled`` is the last time started, or the cron job's creation for a new one.
    """
    passed: list[datetime] = []
    missed = 0
    for when in schedule.times_after(last_scheduled):
        if when > now:
            next_time = when
            break
        if passed:
            missed += 1
            if missed >= MAX_MISSED:  # far behind: jump to the most recent time
                passed = [_latest_before(schedule, now)]
                next_time = schedule.next_after(now)
                break
        passed = [when]
    start = passed[0] if passed else None
    if start is not None and starting_deadline is not None and now - start > starting_deadline:
        return Due(None, missed + 1, start, next_time)
    return Due(start, missed, start, next_time)


def _latest_before(schedule: Schedule, now: datetime) -> datetime:
    """The latest scheduled time at or before ``now`` (croniter's get_prev is strictly before
    a time that is itself scheduled)."""
    it = croniter(schedule.cron, now.astimezone(schedule.zone()), ret_type=datetime)
    before = it.get_prev(datetime).astimezone(UTC)
    after = schedule.next_after(before)
    return after if after <= now else before


def resume_point(
    scheduled_up_to: datetime | None, runs: Iterable[Run], created: datetime
) -> datetime:
    """Where the schedule resumes: after the latest time recorded as started or missed, or
    the latest run that exists (a status write lost in a crash), or the cron job's creation."""
    return max(
        [created, *([scheduled_up_to] if scheduled_up_to else []), *(r.scheduled for r in runs)]
    )


class Action(StrEnum):
    CREATE = "create"  # start the run
    SKIP = "skip"  # Forbid with a run active: not now
    REPLACE = "replace"  # delete the active runs, then start the run


def concurrency(policy: ConcurrencyPolicy | str, active: int) -> Action:
    """What to do with a due run while ``active`` earlier runs have not finished."""
    policy = ConcurrencyPolicy(policy)
    if active == 0 or policy is ConcurrencyPolicy.ALLOW:
        return Action.CREATE
    return Action.SKIP if policy is ConcurrencyPolicy.FORBID else Action.REPLACE


@dataclass(frozen=True, slots=True)
class Run:
    """One child CarbonAwareJob as the cron job sees it (from its metadata and status)."""

    name: str
    scheduled: datetime
    phase: str | None = None
    energy_kwh: float | None = None
    emissions_grams: float | None = None
    baseline_grams: float | None = None
    saved_grams: float | None = None
    started: datetime | None = None
    deadline: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def at_deadline(self) -> bool:
        """Started at its deadline (the grid never got clean enough), not before it."""
        return (
            self.started is not None
            and self.deadline is not None
            and (self.started >= self.deadline)
        )


def prune(runs: Sequence[Run], successful_limit: int, failed_limit: int) -> list[str]:
    """Names of the finished runs beyond the history limits, oldest first (CronJob keeps the
    newest ``successful_limit`` succeeded and ``failed_limit`` failed runs)."""
    doomed: list[str] = []
    for phase, limit in (("Succeeded", successful_limit), ("Failed", failed_limit)):
        done = sorted((r for r in runs if r.phase == phase), key=lambda r: (r.scheduled, r.name))
        doomed += [r.name for r in done[: max(0, len(done) - limit)]]
    return doomed


@dataclass(frozen=True, slots=True)
class Totals:
    """Running totals over the series' finished runs (their own accounting, summed)."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    on_time: int = 0  # started before their deadline
    at_deadline: int = 0  # started at it
    energy_kwh: float = 0.0
    emissions_grams: float = 0.0
    baseline_grams: float = 0.0
    saved_grams: float = 0.0

    def add(self, run: Run) -> Totals:
        started = run.started is not None
        return Totals(
            runs=self.runs + 1,
            succeeded=self.succeeded + (run.phase == "Succeeded"),
            failed=self.failed + (run.phase == "Failed"),
            on_time=self.on_time + (started and not run.at_deadline),
            at_deadline=self.at_deadline + run.at_deadline,
            energy_kwh=self.energy_kwh + (run.energy_kwh or 0.0),
            emissions_grams=self.emissions_grams + (run.emissions_grams or 0.0),
            baseline_grams=self.baseline_grams + (run.baseline_grams or 0.0),
            saved_grams=self.saved_grams + (run.saved_grams or 0.0),
        )

    @property
    def saved_percent(self) -> float | None:
        if self.baseline_grams <= 0:
            return None
        return 100.0 * self.saved_grams / self.baseline_grams


@dataclass(frozen=True, slots=True)
class Tally:
    """The totals after folding in the newly finished runs, and which runs are counted."""

    totals: Totals
    counted: list[str] = field(default_factory=list)


def tally(totals: Totals, counted: Iterable[str], runs: Sequence[Run]) -> Tally:
    """Fold each finished run into ``totals`` exactly once.

    ``counted`` are the runs already in the totals. The new list holds the counted runs that
    still exist, so it stays as short as the history limits keep the series: a run is pruned
    only once its being counted is stored, and drops out of the list when it is gone.
    """
    before = set(counted)
    existing = {r.name for r in runs}
    for run in sorted(runs, key=lambda r: (r.scheduled, r.name)):
        if run.finished and run.name not in before:
            totals = totals.add(run)
            before.add(run.name)
    return Tally(totals, sorted(before & existing))


def child_name(cron_name: str, scheduled: datetime) -> str:
    """The run's name: a function of the cron job's name and the scheduled time (minutes
    since the epoch, as CronJob names its Jobs), so a retry or restart finds the same one."""
    return f"{cron_name}-{int(scheduled.timestamp() // 60)}"


# The per-run figures a cron job keeps in its status for `kubectl carbon plot`: about two
# months of a nightly job, however short the history limits keep the runs themselves.
SERIES_LIMIT = 62


def series_entry(run: Run) -> dict[str, object]:
    """One finished run's figures for the series plot (the run's own accounting)."""
    entry: dict[str, object] = {
        "name": run.name,
        "scheduledTime": run.scheduled.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "phase": run.phase,
    }
    figures = {
        "energyKWh": run.energy_kwh,
        "emissionsGrams": run.emissions_grams,
        "baselineEmissionsGrams": run.baseline_grams,
    }
    entry.update({k: v for k, v in figures.items() if v is not None})
    if run.started is not None and run.at_deadline:
        entry["atDeadline"] = True
    return entry


def extend_series(
    series: Sequence[dict[str, object]], runs: Iterable[Run], limit: int = SERIES_LIMIT
) -> list[dict[str, object]]:
    """``series`` with an entry for each of ``runs`` not in it yet, by scheduled time; the
    newest ``limit`` kept."""
    known = {e.get("name") for e in series}
    merged = list(series) + [series_entry(r) for r in runs if r.name not in known]
    merged.sort(key=lambda e: (str(e.get("scheduledTime")), str(e.get("name"))))
    return merged[-limit:] if limit > 0 else []
