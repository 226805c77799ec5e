"""Status pieces the reconcile pass writes: conditions, the decision, and when a waiting
job's unchanged status is left alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from carbonaware.core.policy import Decision
from carbonaware.kube import conditions
from carbonaware.kube.builders import iso
from carbonaware.kube.models import CarbonAwareJobStatus

# A waiting job's "deadline in ..." is rewritten this often when nothing else changed.
COUNTDOWN_REFRESH_SECONDS = 600.0


def set_condition_now(
    desired: dict[str, Any],
    type: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
) -> None:
    """Set a condition; its lastTransitionTime is wall time whatever the job's clock."""
    desired["conditions"] = conditions.set_condition(
        desired.get("conditions") or [],
        type=type,
        status=status,
        reason=reason,
        message=message,
        generation=generation,
        now=datetime.now(UTC),
    )


# Ready's reason and message per phase: stable texts, so a waiting job's Ready condition does
# not change (and is not patched) with every poll's decision.
READY_BY_PHASE = {
    "Pending": "the operator has not decided yet",
    "Waiting": "waiting for a cleaner grid, by its deadline (status.decision says why)",
    "Running": "the workload runs",
    "Succeeded": "the workload completed and is accounted for",
    "Failed": "the job failed (status.message says why)",
}


def set_ecosystem_conditions(desired: dict[str, Any], generation: int | None) -> None:
    """The conditions tools read without knowing this CRD, from the phase: ``Ready`` (kstatus,
    Flux, Argo CD health: True once the job succeeded), and ``Complete`` / ``Failed`` as a
    batch/v1 Job sets them (only ever True). Each carries observedGeneration."""
    phase = desired.get("phase")
    if phase not in READY_BY_PHASE:
        return
    ready = READY_BY_PHASE[phase]
    set_condition_now(desired, "Ready", phase == "Succeeded", phase, ready, generation)
    if phase == "Succeeded":
        message = "the workload completed"
        set_condition_now(desired, "Complete", True, "JobSucceeded", message, generation)
    elif phase == "Failed":
        failed = conditions.get_condition(desired.get("conditions"), "Succeeded") or {}
        reason = failed.get("reason") or "Failed"
        message = desired.get("message") or "the job failed"
        set_condition_now(desired, "Failed", True, reason, message, generation)


def is_true(status: dict[str, Any], type: str) -> bool | None:
    condition = conditions.get_condition(status.get("conditions"), type)
    return None if condition is None else condition.get("status") == "True"


def only_the_countdown_moved(
    current: dict[str, Any], desired: dict[str, Any], decision: Decision, since_written_s: float
) -> bool:
    """Still waiting on the same reading and plan, and only the "deadline in ..." of the
    decision's text differs: rewrite it at most every COUNTDOWN_REFRESH_SECONDS. Otherwise
    every waiting job's status would be patched each minute (1,000 jobs created together:
    1,000 patches in one burst a minute) while nothing changed."""
    previous = current.get("decision") or {}
    same = (
        current.get("phase") == "Waiting"
        and decision.action == "wait"
        and desired.get("lastReadingTime") == current.get("lastReadingTime")
        and desired.get("currentIntensity") == current.get("currentIntensity")
        and decision_status(decision) | {"reason": ""} == previous | {"reason": ""}
    )
    return same and since_written_s < COUNTDOWN_REFRESH_SECONDS


def decision_status(decision: Decision) -> dict[str, Any]:
    status: dict[str, Any] = {"action": decision.action, "reason": decision.reason}
    if decision.planned_start is not None:
        status["plannedStart"] = iso(decision.planned_start)
    if decision.forecast_source:
        status["forecastSource"] = decision.forecast_source
    return status


def build_status(desired: dict[str, Any]) -> dict[str, Any]:
    """The status as written: ``desired`` through the typed model (kube/models.py). A value
    of the wrong kind is a bug that fails here, not a status no reader expects; a field the
    model does not know is not written. A field set to None is kept as None, so the merge
    patch removes it from the stored status (a fallback clears ``jobName``, say)."""
    return _keep_cleared(desired, CarbonAwareJobStatus.model_validate(desired).wire())


def _keep_cleared(desired: dict[str, Any], wired: dict[str, Any]) -> dict[str, Any]:
    for key, value in desired.items():
        if value is None:
            wired[key] = None
        elif isinstance(value, dict) and isinstance(wired.get(key), dict):
            _keep_cleared(value, wired[key])
    return wired
