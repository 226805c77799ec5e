"""kopf handler for ``CarbonAwareCronJob``: a CarbonAwareJob at every scheduled time.

The thin shell around :mod:`carbonaware.core.recurring`: each tick reads the cron job and its
runs (the CarbonAwareJobs it owns, through the API), asks the core what is due, what
``concurrencyPolicy`` does and which finished runs the history limits drop, then creates,
deletes and writes status. Every object comes from a pure ``build_*`` function below.

Crash safety: a run's name is a function of the cron job's name and the scheduled time and
runs are created with create → 409 → adopt (only one this cron job owns), so a restart
between creating a run and recording it in status never makes a second one. A finished
run's figures go into ``status.totals`` once: ``status.countedRuns`` lists the counted runs
still present, and a run is deleted by a history limit only once that list is stored.

Time base: when the template replays a trace, the schedule runs on the trace's clock
(anchored at the cron job's creation, as a replayed CarbonAwareJob is at its own), and each
run's replay starts at its scheduled time; ``status.clock`` then says ``replay``.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from carbonaware.core import recurring
from carbonaware.core.recurring import Action, Run, Schedule, ScheduleError, Totals
from carbonaware.kube.builders import GROUP, VERSION, iso, parse_time, set_condition
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
    def schedule_(self) -> Schedule:
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
        spec.schedule_.check()
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
    from carbonaware.providers.base import ConfigError
    from carbonaware.providers.replay import ReplayProvider

    try:
        replay = ReplayProvider(
            provider.get("trace") or settings.trace,
            start=provider.get("start"),
            speed=provider.get("speed") or settings.default_replay_speed,
            clock=lambda: 0.0,  # frozen: now() is the replay's first instant
        )
    except (ConfigError, OSError, ValueError) as exc:
        raise SpecError(f"spec.jobTemplate.provider: {exc}") from None
    return CronClock(replay.now(), created.timestamp(), replay.speed)


# --- the API ---------------------------------------------------------------------------------


class CronApi:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.custom = client.CustomObjectsApi(api_client)

    def runs(self, namespace: str, name: str, uid: str) -> list[dict[str, Any]]:
        listed = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, namespace, JOB_PLURAL, label_selector=f"{CRON_LABEL}={name}"
        )["items"]
        return [c for c in listed if _owned_by(c, uid)]

    def create_run(self, body: dict[str, Any], uid: str, dry_run: bool = False) -> bool:
        """Create the run; if it exists (a retry, a restart) adopt it. True if created."""
        meta = body["metadata"]
        extra = {"dry_run": "All"} if dry_run else {}
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, meta["namespace"], JOB_PLURAL, body, **extra
            )
            return True
        except ApiException as exc:
            if exc.status != 409:
                raise
        if dry_run:
            return False
        existing = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, meta["namespace"], JOB_PLURAL, meta["name"]
        )
        if not _owned_by(existing, uid):
            raise SpecError(
                f"a CarbonAwareJob named {meta['name']} already exists and is not a run of "
                "this CarbonAwareCronJob"
            )
        return False

    def delete_run(self, namespace: str, name: str) -> None:
        """Delete a run; its Job and intensity log go with it (ownerReferences)."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, JOB_PLURAL, name, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


def _owned_by(obj: dict[str, Any], uid: str) -> bool:
    return any(o.get("uid") == uid for o in obj["metadata"].get("ownerReferences") or [])


def _api_message(exc: ApiException) -> str:
    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError):
        return str(exc.reason)


# --- one tick --------------------------------------------------------------------------------


@dataclass
class CronMemory:
    """Per cron job, between ticks (rebuilt after a restart)."""

    generation: int | None = None
    clock: CronClock | None = None
    template_checked: bool = False


class CronTick:
    def __init__(self, api: CronApi, settings: OperatorSettings, body: Any, memory: CronMemory):
        self.api, self.settings, self.mem = api, settings, memory
        meta = body["metadata"]
        self.body = body
        self.name, self.namespace, self.uid = meta["name"], meta["namespace"], meta["uid"]
        self.generation = meta.get("generation")
        self.created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.desired: dict[str, Any] = copy.deepcopy(self.current)
        self.events: list[tuple[str, str, bool]] = []

    def condition(self, ok: bool, reason: str, message: str) -> None:
        self.desired["conditions"] = set_condition(
            self.desired.get("conditions") or [],
            type="Ready",
            status=ok,
            reason=reason,
            message=message,
            generation=self.generation,
            now=datetime.now(UTC),
        )
        self.desired["message"] = message

    def patch(self) -> dict[str, Any]:
        return {k: v for k, v in self.desired.items() if self.current.get(k) != v}

    def run(self) -> dict[str, Any]:
        self.desired["observedGeneration"] = self.generation
        try:
            spec, clock = self._spec_and_clock()
        except SpecError as exc:
            if (self._ready() or {}).get("message") != str(exc):  # once, not every tick
                self.events.append(("InvalidSpec", str(exc), True))
            self.condition(False, "InvalidSpec", str(exc))
            return self.patch()
        now = clock.now()
        self.desired["clock"] = "replay" if clock.replay else "wall"
        children = self.api.runs(self.namespace, self.name, self.uid)
        # A run being deleted (Replace, a history limit, a user) is on its way out: it is
        # neither active nor still to count.
        runs = [run_of(c) for c in children if not c["metadata"].get("deletionTimestamp")]
        self._account(runs, spec)
        runs = self._prune(runs, spec)
        ok, reason, message = True, "Suspended", "suspended: no new runs"
        if not spec.suspend:
            reason = "Scheduling"
            try:
                message = self._schedule(spec, clock, now, runs)
            except SpecError as exc:  # the run's name is taken by an object not ours
                ok, reason, message = False, "RunNotCreated", str(exc)
                if (self._ready() or {}).get("message") != message:
                    self.events.append((reason, message, True))
        self.desired["active"] = build_active(runs)
        self.condition(ok, reason, message)
        return self.patch()

    def _ready(self) -> dict[str, Any] | None:
        return next((c for c in self.current.get("conditions") or [] if c["type"] == "Ready"), None)

    def _spec_and_clock(self) -> tuple[CronJobSpec, CronClock]:
        spec = parse_cron_spec(self.body.get("spec") or {})
        if self.mem.generation != self.generation or self.mem.clock is None:
            self.mem.clock = build_clock(spec.job_template, self.created, self.settings)
            self.mem.generation, self.mem.template_checked = self.generation, False
        if not self.mem.template_checked:
            # The CarbonAwareJob schema is the one judge of a run's spec: ask it (a dry run)
            # now, not at the first scheduled time.
            probe = build_run(
                self.name,
                self.uid,
                self.namespace,
                spec,
                self.mem.clock.now(),
                self.mem.clock.replay,
            )
            try:
                self.api.create_run(probe, self.uid, dry_run=True)
            except ApiException as exc:
                if exc.status not in (400, 422):
                    raise
                raise SpecError(f"spec.jobTemplate: {_api_message(exc)}") from None
            self.mem.template_checked = True
        return spec, self.mem.clock

    def _account(self, runs: list[Run], spec: CronJobSpec) -> None:
        """Fold newly finished runs into the totals and the plotted series."""
        before = set(self.current.get("countedRuns") or [])
        result = recurring.tally(totals_of(self.current), before, runs)
        fresh = [r for r in runs if r.name in set(result.counted) - before]
        self.desired["totals"] = build_totals(result.totals)
        self.desired["countedRuns"] = result.counted
        self.desired["series"] = recurring.extend_series(self.current.get("series") or [], fresh)
        succeeded = [r.scheduled for r in runs if r.phase == "Succeeded"]
        last_ok = parse_time(self.current.get("lastSuccessfulTime"))
        if succeeded and (last_ok is None or max(succeeded) > last_ok):
            self.desired["lastSuccessfulTime"] = iso(max(succeeded))
        for run in fresh:
            outcome = "succeeded" if run.phase == "Succeeded" else "failed"
            self.events.append(
                ("RunFinished", f"run {run.name} {outcome}", run.phase != "Succeeded")
            )

    def _prune(self, runs: list[Run], spec: CronJobSpec) -> list[Run]:
        """Delete the finished runs beyond the history limits whose figures are stored."""
        stored = set(self.current.get("countedRuns") or [])
        doomed = set(
            recurring.prune(
                runs, spec.successful_jobs_history_limit, spec.failed_jobs_history_limit
            )
        )
        for name in sorted(doomed & stored):
            self.api.delete_run(self.namespace, name)
            self.events.append(("RunDeleted", f"deleted run {name} (history limit)", False))
        return [r for r in runs if r.name not in doomed & stored]

    def _schedule(self, spec: CronJobSpec, clock: CronClock, now: datetime, runs: list[Run]):
        since = recurring.resume_point(
            parse_time(self.current.get("scheduledUpTo")), runs, clock.at_creation(self.created)
        )
        due = recurring.due(spec.schedule_, since, now, spec.starting_deadline)
        self.desired["nextScheduleTime"] = iso(due.next_time)
        missed = int(self.current.get("missedRuns") or 0)
        if due.start is None:
            if due.latest is not None:  # past its starting deadline
                self.desired.update(scheduledUpTo=iso(due.latest), missedRuns=missed + due.missed)
                self.events.append(
                    ("MissedRun", f"missed the run of {iso(due.latest)}: past its deadline", True)
                )
            return f"next run at {iso(due.next_time)}"
        name = recurring.child_name(self.name, due.start)
        active = [r for r in runs if not r.finished and r.name != name]
        action = recurring.concurrency(spec.concurrency_policy, len(active))
        if action is Action.SKIP:
            message = (
                f"run of {iso(due.start)} held back: concurrencyPolicy Forbid and "
                f"{', '.join(r.name for r in active)} still active"
            )
            if (self._ready() or {}).get("message") != message:
                self.events.append(("RunSkipped", message, False))
            return message
        if action is Action.REPLACE:
            for run in active:
                self.api.delete_run(self.namespace, run.name)
                self.events.append(("RunReplaced", f"deleted active run {run.name}", False))
            runs[:] = [r for r in runs if r not in active]
        body = build_run(self.name, self.uid, self.namespace, spec, due.start, clock.replay)
        created = self.api.create_run(body, self.uid)
        if created:
            self.events.append(("RunCreated", f"created run {name} for {iso(due.start)}", False))
        if all(r.name != name for r in runs):
            runs.append(Run(name=name, scheduled=due.start, phase="Pending"))
        self.desired.update(
            lastScheduleTime=iso(due.start),
            scheduledUpTo=iso(due.start),
            missedRuns=missed + due.missed,
        )
        return f"run {name} for {iso(due.start)}; next at {iso(due.next_time)}"


# --- registration ------------------------------------------------------------------------------


def register(registry: kopf.OperatorRegistry, settings: OperatorSettings) -> None:
    """Register the cron job handler on ``registry`` (kube/main.py calls this)."""
    interval = settings.poll_floor.total_seconds()
    apis: list[CronApi] = []  # built at the first tick, once kube/main.py loaded the config

    @kopf.timer(
        GROUP,
        VERSION,
        CRON_PLURAL,
        interval=interval,
        backoff=interval,
        registry=registry,
        id="schedule",
    )
    def schedule(body: Any, memo: Any, patch: Any, **_: Any) -> None:
        memory = memo.get("cron")
        if memory is None:
            memory = memo["cron"] = CronMemory()
        if not apis:
            apis.append(CronApi())
        tick = CronTick(apis[0], settings, body, memory)
        try:
            status_patch = tick.run()
        finally:
            for reason, message, warning in tick.events:
                (kopf.warn if warning else kopf.info)(body, reason=reason, message=message)
        for key, value in status_patch.items():
            patch.status[key] = value
