"""An interruptible job's run/pause steps: core.interruptible.plan_step on the job's readings,
at most one change per reading, the Job suspended or resumed. Part of the reconcile pass
(kube/reconcile.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from carbonaware.core.forecast import profile_forecast
from carbonaware.core.intensity_log import IntensityLog
from carbonaware.core.interruptible import change_now, plan_step
from carbonaware.core.policy import step_of
from carbonaware.kube import builders
from carbonaware.kube.models import (
    CarbonAwareJobSpec,
)
from carbonaware.kube.status import (
    set_condition_now,
)


class Pausing:
    """Tick's interruptible steps (uses its rt, mem, desired, event, _forecaster_history)."""

    # -- interruptible jobs: pause while dirty, resume when clean -----------------------------
    def _should_run(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, running: bool
    ) -> tuple[bool, str]:
        """core.interruptible.should_run (the rule the backtest uses) on this job's readings.

        Between readings the answer stays what it was (see JobMemory.changed_at_reading),
        unless the job has no slack left: then it runs."""
        run, reason, forced, reading_time = self._plan_step(spec, log, now, running)
        if not change_now(run, running, forced, reading_time, self.mem.changed_at_reading):
            return running, reason
        self.mem.changed_at_reading = reading_time
        return run, reason

    def _plan_step(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, running: bool
    ) -> tuple[bool, str, bool, datetime | None]:
        """(run, why, whether it must run to finish in time, the reading it rests on)."""
        submitted = self._submitted()
        latest_finish = submitted + spec.max_delay + spec.expected_duration
        spans = builders.segment_spans(self.desired.get("segments"), now)
        ran = sum((b - a for a, b in spans), timedelta(0))
        actual = [r for r in log.readings if not r.forecast and r.timestamp <= now]
        forecast = [r for r in log.forecast if r.timestamp > now]
        self.plan_source = "provider" if forecast else None
        if not forecast and actual and self.mem.source is not None:
            # The provider has none: the own forecaster's, from the zone's past two weeks and
            # this job's readings (the backtest's interruptible-own).
            past = self._forecaster_history(spec, self.mem.source, log, now) + actual
            forecast = profile_forecast(past, now, latest_finish - now, step_of(actual))
            self.plan_source = "own-forecaster" if forecast else None
        step = plan_step(
            now=now,
            latest_finish=latest_finish,
            expected=spec.expected_duration,
            ran=ran,
            actual=actual,
            forecast=forecast,
            running=running,
            own_forecast=self.plan_source == "own-forecaster",
        )
        return step.run, step.why, step.forced, step.reading_time

    def _pause_or_resume(
        self, spec: CarbonAwareJobSpec, log: IntensityLog, now: datetime, job: dict[str, Any]
    ) -> None:
        running = not (job.get("spec") or {}).get("suspend")
        # Status follows the Job first: a patch sent just before a restart is not lost.
        segments = self.desired.get("segments")
        self.desired["segments"] = (
            builders.open_segment(segments, now)
            if running
            else builders.close_segment(segments, now)
        )
        run, reason = self._should_run(spec, log, now, running)
        if run == running:
            return
        name = self.desired["jobName"]
        self.rt.kube.suspend_job(self.namespace, name, suspend=not run)
        self.started = run
        segments = self.desired["segments"]
        if run:
            self.desired["segments"] = builders.open_segment(segments, now)
            message = f"resumed Job {name}: {reason}"
        else:
            self.desired["segments"] = builders.close_segment(segments, now)
            message = f"suspended Job {name}: {reason}"
        self.desired["decision"] = {"action": "run" if run else "pause", "reason": reason}
        self.desired["message"] = message
        set_condition_now(
            self.desired,
            "Suspended",
            not run,
            "Resumed" if run else "Suspended",
            message,
            self.generation,
        )
        self.event("Resumed" if run else "Suspended", message)
