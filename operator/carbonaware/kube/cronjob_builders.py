"""CarbonAwareCronJob: its typed spec, its clock, and every object and status it writes, from
pure ``build_*`` functions (kube/cronjobs.py is the handler that calls them)."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from carbonaware.core import recurring
from carbonaware.core.recurring import Run, Schedule, ScheduleError, Totals
from carbonaware.kube.builders import GROUP, VERSION, iso, parse_time
from carbonaware.kube.models import Duration, SpecError, _Camel
from carbonaware.kube.settings import OperatorSettings

CRON_PLURAL = "carbonawarecronjobs"
JOB_PLURAL = "carbonawarejobs"
CRON_LABEL = f"{GROUP}/cronjob"  # on each run: the cron job's name
SCHEDULED_ANNOTATION = f"{GROUP}/scheduled-time"  # on each run: its scheduled time
MANAGED_BY = {"app.kubernetes.io/managed-by": "carbonaware-operator"}


# --- the spec, typed ---------------------------------------------------------------------


class CronJobSpec(_Camel):
    schedule: str
    time_zone: str | None = None
    window: Duration | None = None
    concurrency_policy: Literal["Allow", "Forbid", "Replace"] = "Allow"
    starting_deadline_seconds: int | None = None
    suspend: bool = False
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 1
    job_template: dict[str, Any]

    @property
    def cron_schedule(self) -> Schedule:
        return Schedule(self.schedule, self.time_zone)

    @property
    def starting_deadline(self) -> timedelta | None:
        seconds = self.starting_deadline_seconds
        return None if seconds is None else timedelta(seconds=seconds)


def parse_cron_spec(raw: dict[str, Any]) -> CronJobSpec:
    """The typed spec; SpecError (one line) for what the schema let through and croniter or
    the time-zone database reject."""
    try:
        spec = CronJobSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SpecError(f"spec.{where}: {first['msg']}") from None
    try:
        spec.cron_schedule.check()
    except ScheduleError as exc:
        raise SpecError(str(exc)) from None
    return spec


# --- pure builders -------------------------------------------------------------------------


def build_owner_reference(name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CarbonAwareCronJob",
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def build_run(
    cron_name: str,
    cron_uid: str,
    namespace: str,
    spec: CronJobSpec,
    scheduled: datetime,
    replay: bool,
) -> dict[str, Any]:
    """The CarbonAwareJob for the run scheduled at ``scheduled``: ``spec.jobTemplate`` with
    ``window`` as its maxDelay, owned by the cron job, named after the scheduled time. A
    replayed run's trace starts at its scheduled time."""
    run_spec = copy.deepcopy(spec.job_template)
    if spec.window is not None:
        run_spec["maxDelay"] = f"{int(spec.window.total_seconds())}s"
    if replay:
        run_spec["provider"] = {**(run_spec.get("provider") or {}), "start": iso(scheduled)}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CarbonAwareJob",
        "metadata": {
            "name": recurring.child_name(cron_name, scheduled),
            "namespace": namespace,
            "labels": {**MANAGED_BY, CRON_LABEL: cron_name},
            "annotations": {SCHEDULED_ANNOTATION: iso(scheduled)},
            "ownerReferences": [build_owner_reference(cron_name, cron_uid)],
        },
        "spec": run_spec,
    }


def run_of(child: dict[str, Any]) -> Run:
    """A run as the core sees it, from its CarbonAwareJob (annotation and status)."""
    meta = child["metadata"]
    status = child.get("status") or {}
    scheduled = parse_time((meta.get("annotations") or {}).get(SCHEDULED_ANNOTATION))
    return Run(
        name=meta["name"],
        scheduled=scheduled or parse_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        phase=status.get("phase"),
        energy_kwh=status.get("energyKWh"),
        emissions_grams=status.get("emissionsGrams"),
        baseline_grams=status.get("baselineEmissionsGrams"),
        saved_grams=status.get("savedGrams"),
        started=parse_time(status.get("startedAt")),
        deadline=parse_time(status.get("deadline")),
    )


def totals_of(status: dict[str, Any]) -> Totals:
    t = status.get("totals") or {}
    return Totals(
        runs=t.get("runs", 0),
        succeeded=t.get("succeeded", 0),
        failed=t.get("failed", 0),
        on_time=t.get("onTime", 0),
        at_deadline=t.get("atDeadline", 0),
        energy_kwh=t.get("energyKWh", 0.0),
        emissions_grams=t.get("emissionsGrams", 0.0),
        baseline_grams=t.get("baselineEmissionsGrams", 0.0),
        saved_grams=t.get("savedGrams", 0.0),
    )


def build_totals(totals: Totals) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "runs": totals.runs,
        "succeeded": totals.succeeded,
        "failed": totals.failed,
        "onTime": totals.on_time,
        "atDeadline": totals.at_deadline,
        "energyKWh": round(totals.energy_kwh, 9),
        "emissionsGrams": round(totals.emissions_grams, 6),
        "baselineEmissionsGrams": round(totals.baseline_grams, 6),
        "savedGrams": round(totals.saved_grams, 6),
    }
    if totals.saved_percent is not None:
        wire["savedPercent"] = round(totals.saved_percent, 2)
    return wire


def build_active(runs: list[Run]) -> list[dict[str, Any]]:
    return [
        {"name": r.name, "scheduledTime": iso(r.scheduled), "phase": r.phase or "Pending"}
        for r in sorted(runs, key=lambda r: (r.scheduled, r.name))
        if not r.finished
    ]


# --- the clock -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CronClock:
    """Wall time, or a replayed trace's time anchored at the cron job's creation."""

    anchor: datetime | None = None  # trace time at the cron job's creation (replay only)
    created: float = 0.0  # the cron job's creation, wall seconds
    speed: float = 1.0

    @property
    def replay(self) -> bool:
        return self.anchor is not None

    def now(self) -> datetime:
        if self.anchor is None:
            return datetime.now(UTC)
        return self.anchor + timedelta(seconds=(time.time() - self.created) * self.speed)

    def at_creation(self, created: datetime) -> datetime:
        return self.anchor if self.anchor is not None else created


def build_clock(template: dict[str, Any], created: datetime, settings: OperatorSettings):
    """The cron job's clock: its template's replay, if it replays a trace."""
    provider = template.get("provider") or {}
    if (provider.get("name") or settings.default_provider) != "replay":
        return CronClock()
    from carbonaware.core.errors import ConfigError
    from carbonaware.providers.replay import ReplayProvider
    from carbonaware.source import replay_options

    options = replay_options(
        provider.get("trace"),
        provider.get("speed"),
        provider.get("start"),
        settings.default_trace,
        settings.default_replay_speed,
    )
    try:
        replay = ReplayProvider(
            options["trace"],
            start=options["start"],
            speed=options["speed"],
            clock=lambda: 0.0,  # frozen: now() is the replay's first instant
        )
    except (ConfigError, OSError, ValueError) as exc:
        raise SpecError(f"spec.jobTemplate.provider: {exc}") from None
    return CronClock(replay.now(), created.timestamp(), replay.speed)
