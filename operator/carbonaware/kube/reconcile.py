"""One reconcile of one CarbonAwareJob (``Tick``): reads, calls the core, writes.

One timer per CarbonAwareJob reconciles it once per poll floor, or as soon as its zone's
reading changes (kube/wakeups.py: the provider cache rings the zone's bell). The data flows
one way: provider → reading → log → policy → decision → Job → trainer result → accounting →
status. Every object and status patch comes from a pure builder; this module only reads,
calls the core, and writes. The blocking work runs on the operator's handler threads.

Crash safety: the Job name is a function of the CarbonAwareJob's name and uid and Jobs are
created with create → 409 → adopt, so a restart at any point never makes a second Job; the
intensity log lives in a ConfigMap, so readings survive restarts.

Conflicts and outages: the log ConfigMap is the one write guarded by a resourceVersion; on
409 the stored copy is merged into ours (no reading of either writer is lost) and written
again. Status goes through kopf's merge patches, which carry no resourceVersion and cannot
conflict. While the apiserver is unreachable a tick fails as a kopf TemporaryError (one log
line, no traceback) and the timer retries it; kopf's watch streams reconnect on their own.

Time base: a replayed trace runs on its own clock (trace time, anchored at the job's
creation so a restart resumes where it was); every time in status then is trace time and
``status.clock`` says ``replay``. Otherwise it is wall time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from carbonaware.core.distributed import distributed_spec_problem
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.policy import Decision, PolicySettings, Strategy, decide
from carbonaware.kube import builders, conditions, placement
from carbonaware.kube import builders_distributed as distributed
from carbonaware.kube.api import ForeignJobError, api_reason
from carbonaware.kube.builders import iso, parse_time
from carbonaware.kube.finishing import Finishing
from carbonaware.kube.log_store import LogStore, render_plot_png
from carbonaware.kube.models import (
    TERMINAL_PHASES,
    CarbonAwareJobSpec,
    SpecError,
    parse_spec,
)
from carbonaware.kube.pausing import Pausing
from carbonaware.kube.polling import Polling
from carbonaware.kube.runtime import JobMemory, Runtime
from carbonaware.kube.sources import build_source
from carbonaware.kube.status import (
    build_status,
    decision_status,
    only_the_countdown_moved,
    set_condition_now,
    set_ecosystem_conditions,
)
from carbonaware.source import Source


class Tick(LogStore, Polling, Finishing, Pausing):
    """One reconcile of one CarbonAwareJob. Reads, decides, writes; returns nothing."""

    def __init__(self, runtime: Runtime, memory: JobMemory, body: Any, logger: Any) -> None:
        self.rt = runtime
        self.mem = memory
        self.body = body
        self.logger = logger
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.uid: str = meta["uid"]
        self.generation: int | None = meta.get("generation")
        self.created = parse_time(meta.get("creationTimestamp")) or datetime.now(UTC)
        self.current: dict[str, Any] = dict(body.get("status") or {})
        self.plan_source: str | None = None  # whose forecast the interruptible plan used
        self.desired: dict[str, Any] = dict(self.current)
        self.started = False  # a Job was created, adopted or resumed: the urgent write
        self.log: IntensityLog | None = None  # saved by finish()
        self.render_plot = False  # the job finished: finish() saves the log with its plot
        # energy kWh, emissions g, saved g of a finished job: counted by finish()
        self.events: list[tuple[str, str, bool]] = []

    # -- events: the transitions a person watches for ----------------------------------
    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append((reason, message, warning))

    def post_events(self) -> None:
        """Post the Events this reconcile collected (kopf queues them; call in the loop)."""
        for reason, message, warning in self.events:
            (kopf.warn if warning else kopf.info)(self.body, reason=reason, message=message)
        self.events.clear()

    def finish(self) -> None:
        """The bookkeeping after run(), off the urgent lane: write the log ConfigMap if it
        changed (with the plot once the job finished). A failed write retries the whole tick,
        before the finished status is written: the per-job metrics, counted from the published
        status (kube/metrics.observe_job), count a finished job once, after its log."""
        if self.log is None:
            return
        self._save_log(
            self.log, plot=render_plot_png(self.log, self.logger) if self.render_plot else None
        )

    def run(self) -> dict[str, Any] | None:
        phase = self.current.get("phase")
        if phase in TERMINAL_PHASES:
            return None
        try:
            spec, source = self._spec_and_source()
        except SpecError as exc:
            return self._fail("InvalidSpec", str(exc))
        now = source.now()
        self.desired["observedGeneration"] = self.generation
        if not self.desired.get("submittedAt"):
            submitted = source.to_job_time(self.created)
            self.desired.update(
                phase="Pending",
                clock=source.clock,
                submittedAt=iso(submitted),
                deadline=iso(submitted + spec.max_delay),
                logConfigMap=builders.log_configmap_name(self.name),
            )
        log = self._load_log(spec)
        deadline = parse_time(self.desired.get("deadline"))
        if not self.desired.get("jobName") and deadline is not None and now >= deadline:
            polled = False  # due now: a slow or rate-limited provider must not delay the start
        else:
            polled = self._poll(spec, source, log, now)
            now = source.now()  # a poll can block (timeouts, Retry-After): decide on time
        self.log = log
        if self.desired.get("phase") == "Failed":
            return self._finish_patch()
        if self.desired.get("jobName"):
            self._follow_job(spec, source, log, now)
        else:
            self._adopt_existing_job(source, now)
            if not self.desired.get("jobName"):
                self._decide(spec, source, log, now, polled)
        return self._finish_patch()

    def _finish_patch(self) -> dict[str, Any] | None:
        set_ecosystem_conditions(self.desired, self.generation)
        return conditions.build_status_patch(self.current, build_status(self.desired))

    # -- spec and provider ----------------------------------------------------------------
    def _spec_and_source(self) -> tuple[CarbonAwareJobSpec, Source]:
        spec, source = self.mem.spec, self.mem.source
        if spec is None or source is None or self.mem.generation != self.generation:
            spec = parse_spec(dict(self.body.get("spec") or {}))
            source = build_source(
                spec, self.namespace, self.created, self.rt.settings, self.rt.kube, self.rt.sources
            )
            self.mem.spec, self.mem.source, self.mem.generation = spec, source, self.generation
            self.mem.placement_sources = None  # placement: rebuilt by placement.follow
        if spec.placements:  # placement: the zone (and source) it polls and accounts with
            spec = placement.follow(self, spec)
            source = self.mem.source or source
        return spec, source

    def _submitted(self) -> datetime:
        """When the job was submitted, on its clock (status says; else its creation)."""
        submitted = parse_time(self.desired.get("submittedAt"))
        if submitted is None and self.mem.source is not None:
            return self.mem.source.to_job_time(self.created)
        return submitted or self.created

    # -- deciding and starting ------------------------------------------------------------------
    def _adopt_existing_job(self, source: Source, now: datetime) -> None:
        """After a restart, a Job may exist that status does not know about yet: adopt it."""
        if self.mem.adoption_checked:
            return
        self.mem.adoption_checked = True
        name = builders.job_name(self.name, self.uid)
        job = self.rt.kube.read_job(self.namespace, name)
        if job is None:
            return
        created = parse_time(job["metadata"].get("creationTimestamp")) or now
        # The decision that created it was lost with the restart; status still says why it runs.
        reason = "adopted the Job created before an operator restart"
        self.desired["decision"] = {"action": "run", "reason": reason}
        self._mark_running(name, source.to_job_time(created), reason)

    def _decide(
        self,
        spec: CarbonAwareJobSpec,
        source: Source,
        log: IntensityLog,
        now: datetime,
        polled: bool,
    ) -> None:
        submitted = self._submitted()
        settings = PolicySettings(
            strategy=Strategy(spec.strategy),
            threshold_g_per_kwh=spec.threshold_grams_per_kwh,
            max_delay=spec.max_delay,
            expected_duration=spec.expected_duration,
        )
        if spec.interruptible:
            run, reason = self._should_run(spec, log, now, running=False)
            decision = Decision(
                action="run" if run else "wait",
                reason=reason,
                planned_start=now if run else None,
                forecast_source=self.plan_source,
                deadline=submitted + spec.max_delay,
            )
        else:
            readings = log.readings
            if settings.strategy == Strategy.FORECAST and not log.forecast:
                readings = self._forecaster_history(spec, source, log, now) + readings
            if spec.placements:  # placement: where and when (kube/placement.py)
                decision = placement.decide(self, spec, log, readings, now, settings, submitted)
            else:
                decision = decide(settings, submitted, now, readings, log.forecast)
        if decision.run:
            self._start(spec, source, decision, now)
            return
        if not polled and self.desired.get("phase") == "Waiting":
            return  # nothing new learnt: leave status alone (its text would only churn)
        clock = time.monotonic()
        since_written = clock - self.mem.decision_written_at
        if only_the_countdown_moved(self.current, self.desired, decision, since_written):
            return
        self.mem.decision_written_at = clock
        self.desired["decision"] = decision_status(decision)
        set_condition_now(
            self.desired, "Scheduled", False, "Waiting", decision.reason, self.generation
        )
        if self.desired.get("phase") != "Waiting":
            self.desired["phase"] = "Waiting"
            self.event("Waiting", decision.reason)
        self.desired["message"] = decision.reason

    def _start(
        self, spec: CarbonAwareJobSpec, source: Source, decision: Decision, now: datetime
    ) -> None:
        index, placed_name = placement.chosen(self, spec)  # placement: where; the Job's name
        body = distributed.build_distributed_job_spec(
            name=self.name,
            namespace=self.namespace,
            uid=self.uid,
            spec=spec,
            default_trainer_image=self.rt.settings.trainer_image,
            suspend=False if spec.interruptible else None,
            placement=index,
        )
        body["metadata"]["name"] = placed_name
        problem = self._ranks_problem(spec)
        if problem:
            self._fail("InvalidSpec", problem)
            return
        try:
            if distributed.workers_of(spec) > 1:  # the ranks' rendezvous, before they start
                self.rt.kube.ensure_service(
                    distributed.build_rendezvous_service(
                        name=self.name, namespace=self.namespace, uid=self.uid, job=placed_name
                    )
                )
            _, created = self.rt.kube.ensure_job(body, self.uid)
        except ForeignJobError as exc:
            self._fail("JobNameTaken", str(exc))
            return
        except ApiException as exc:
            if exc.status in (400, 403, 422):  # the template is invalid or not allowed
                self._fail("JobRejected", f"the Job was rejected: {api_reason(exc)}")
                return
            raise
        self.started = True
        self.desired["decision"] = decision_status(decision)
        if "deadline reached" in decision.reason:
            self.event("DeadlineReached", decision.reason, warning=True)
        name = body["metadata"]["name"]
        self._mark_running(name, now, decision.reason)
        if spec.interruptible:
            self.desired["segments"] = builders.open_segment(self.desired.get("segments"), now)
        if created:
            self.event("JobCreated", f"created Job {name}: {decision.reason}")

    def _ranks_problem(self, spec: CarbonAwareJobSpec) -> str | None:
        """Why spec.trainer.workers ranks cannot share the checkpoint claim as it is
        (core/distributed.py), read where the spec alone cannot tell: its access modes."""
        workers = distributed.workers_of(spec)
        if workers <= 1 or spec.trainer is None:
            return None
        volume = spec.trainer.checkpoint_volume
        claim_name = volume.claim_name if volume is not None else None
        claim = self.rt.kube.read_claim(self.namespace, claim_name) if claim_name else None
        return distributed_spec_problem(
            workers, spec.interruptible, claim_name, distributed.claim_access_modes(claim)
        )

    def _mark_running(self, job_name: str, started: datetime, reason: str) -> None:
        submitted = parse_time(self.desired.get("submittedAt")) or started
        self.desired.update(
            phase="Running",
            jobName=job_name,
            startedAt=iso(started),
            waitedSeconds=round(max((started - submitted).total_seconds(), 0.0), 3),
            message=f"running Job {job_name}",
        )
        set_condition_now(
            self.desired,
            "Scheduled",
            True,
            "JobCreated",
            f"Job {job_name}: {reason}",
            self.generation,
        )

    def _fail(self, reason: str, message: str) -> dict[str, Any] | None:
        first = self.desired.get("phase") != "Failed"
        self.desired.update(phase="Failed", message=message, observedGeneration=self.generation)
        set_condition_now(self.desired, "Succeeded", False, reason, message, self.generation)
        if first:
            self.event("Failed", message, warning=True)
        return self._finish_patch()
