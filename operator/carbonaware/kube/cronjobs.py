"""kopf handler for ``CarbonAwareCronJob``: a CarbonAwareJob at every scheduled time.

The thin shell around :mod:`carbonaware.core.recurring`: each tick reads the cron job and its
runs (the CarbonAwareJobs it owns, through the API), asks the core what is due, what
``concurrencyPolicy`` does and which finished runs the history limits drop, then creates,
deletes and writes status. Every object comes from a pure ``build_*`` function in
kube/cronjob_builders.py.

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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from carbonaware.core import recurring
from carbonaware.core.recurring import Action, Run
from carbonaware.kube.builders import GROUP, VERSION, iso, parse_time
from carbonaware.kube.conditions import set_condition
from carbonaware.kube.cronjob_builders import (
    CRON_LABEL,
    CRON_PLURAL,
    JOB_PLURAL,
    CronClock,
    CronJobSpec,
    build_active,
    build_clock,
    build_run,
    build_totals,
    parse_cron_spec,
    run_of,
    totals_of,
)
from carbonaware.kube.models import SpecError
from carbonaware.kube.settings import OperatorSettings

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
        due = recurring.due(spec.cron_schedule, since, now, spec.starting_deadline)
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
