"""Following a started Job to its end, and accounting for it: the trainer's report, energy,
emissions, the saving, the final phase. Part of the reconcile pass (kube/reconcile.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from kubernetes.client.exceptions import ApiException

from carbonaware.core import accounting
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.workload_report import WorkloadReport
from carbonaware.kube import builders, job_energy, job_results, placement
from carbonaware.kube.builders import iso, parse_time
from carbonaware.kube.builders_distributed import trainer_result_of_ranks
from carbonaware.kube.models import (
    CarbonAwareJobSpec,
)
from carbonaware.kube.status import (
    set_condition_now,
)
from carbonaware.source import Source


class Finishing:
    """Tick's steps once a Job exists (uses its rt, mem, desired, event, _fail, _poll)."""

    # -- following the Job and accounting -------------------------------------------------------
    def _follow_job(
        self, spec: CarbonAwareJobSpec, source: Source, log: IntensityLog, now: datetime
    ) -> None:
        name = self.desired["jobName"]
        job = self.rt.kube.read_job(self.namespace, name)
        if job is None:
            self._fail("JobDeleted", f"the Job {name} was deleted before it finished")
            return
        outcome, why = job_results.job_outcome(job)
        self._sample_pods(name)  # energy (issue #22): while the pods run and at their end
        if outcome == "running":
            if placement.check_capacity(self, spec, job):  # placement: capacity fallback
                return
            if spec.interruptible:
                self._pause_or_resume(spec, log, now, job)
            return
        if time.monotonic() < self.mem.next_poll:  # a reading at the very end, for accounting
            self.mem.next_poll = 0.0
            self._poll(spec, source, log, now)
        ranks = trainer_result_of_ranks(self.rt.kube.job_pods(self.namespace, name))
        result = ranks.report if ranks is not None else None
        started_wall, completed_wall = job_results.job_times(job)
        completed_wall = completed_wall or datetime.now(UTC)
        completed = source.to_job_time(completed_wall)
        self.desired["completedAt"] = iso(completed)
        if spec.interruptible:
            self.desired["segments"] = builders.close_segment(
                self.desired.get("segments"), completed
            )
        if ranks is not None:
            self.desired["trainer"] = job_results.build_trainer_status(*ranks)
        self._account(spec, source, log, result, started_wall, completed_wall, completed)
        if outcome == "succeeded":
            self.desired.update(phase="Succeeded", message=self._summary("succeeded"))
            set_condition_now(self.desired, "Succeeded", True, "JobSucceeded", why, self.generation)
            self.event("Succeeded", self.desired["message"])
        else:
            self._fail("JobFailed", f"the Job failed: {why}")
        log.update(builders.build_log_metadata(spec, self.desired))
        self.render_plot = True  # in finish(): bookkeeping never delays another job's start

    def _account(
        self,
        spec: CarbonAwareJobSpec,
        source: Source,
        log: IntensityLog,
        result: WorkloadReport | None,
        started_wall: datetime | None,
        completed_wall: datetime,
        completed: datetime,
    ) -> None:
        started = parse_time(self.desired.get("startedAt")) or completed
        submitted = parse_time(self.desired.get("submittedAt")) or started
        # An interruptible job emits only while it runs: over its segments, not start..end.
        spans = builders.segment_spans(self.desired.get("segments"), completed) or [
            (started, completed)
        ]
        # A resumed job's trainer reports its last run only (the earlier pods' reports went
        # with them): its figures do not count, the time of every segment does.
        if spec.interruptible:
            ran = source.to_wall(sum((b - a for a, b in spans), timedelta(0)))
        else:
            ran = completed_wall - (started_wall or completed_wall)
        # Energy (issue #22): the best source the Job's pods give, else spec.power × time.
        energy, choice = job_energy.job_energy(
            self.rt.settings,
            self.mem.pod_usage,
            self.namespace,
            result,
            resumed=spec.interruptible and len(spans) > 1,
            power_watts=spec.power.watts,
            pue=spec.power.pue,
            ran=ran,
        )
        if choice is not None:
            self.desired["energySources"] = [
                {"source": label, "energyKWh": round(kwh * spec.power.pue, 9)}
                for label, kwh in choice.split
            ]
        try:
            report = accounting.account(energy, spans, submitted, log.readings)
        except ValueError as exc:
            self.desired.update(energyKWh=round(energy.kwh, 9), energyMethod=energy.method)
            self.desired["emissionsBasis"] = f"not accounted: {exc}"
            return
        log.update(accounting.report_metadata(report))
        self.desired.update(
            energyKWh=round(energy.kwh, 9),
            energyMethod=energy.method,
            emissionsGrams=round(report.emissions.grams, 6),
            baselineEmissionsGrams=round(report.baseline.grams, 6),
            savedGrams=round(report.saved_grams, 6),
            emissionsBasis=f"{report.basis} factors, actual readings; {report.savings_method}",
        )
        if report.saved_percent is not None:
            self.desired["savedPercent"] = round(report.saved_percent, 2)

    def _sample_pods(self, job_name: str) -> None:
        """Energy (issue #22): the Job's pods and their CPU time now (kube/job_energy.py); a
        failure costs this sample only, never the tick."""
        try:
            job_energy.sample(
                self.rt.kube, self.rt.settings, self.mem.pod_usage, self.namespace, job_name
            )
        except ApiException as exc:
            self.logger.warning(f"pods of {job_name} not sampled: HTTP {exc.status}")

    def _summary(self, outcome: str) -> str:
        parts = [f"Job {self.desired.get('jobName')} {outcome}"]
        if "emissionsGrams" in self.desired:
            parts.append(
                f"{self.desired['energyKWh']:.4g} kWh ({self.desired['energyMethod']}), "
                f"{self.desired['emissionsGrams']:.4g} g emitted, "
                f"{self.desired['savedGrams']:.4g} g saved vs starting at once"
            )
        return "; ".join(parts)
