"""Reading a batch/v1 Job and its pods (pure): whether it finished, when, and the workload's
final report (core/workload_report.py) from the pods' termination messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from carbonaware.core.workload_report import WorkloadReport, parse_report
from carbonaware.kube.builders import TRAINER_CONTAINER, parse_time
from carbonaware.kube.models import TrainerResult

JobOutcome = Literal["running", "succeeded", "failed"]


def job_outcome(job: dict[str, Any]) -> tuple[JobOutcome, str]:
    """Whether a batch/v1 Job finished, from its conditions, and why."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "succeeded", condition.get("message") or "the Job completed"
        if condition.get("type") == "Failed":
            reason = condition.get("reason") or "Failed"
            message = condition.get("message") or ""
            return "failed", f"{reason}: {message}".rstrip(": ")
    return "running", ""


def job_times(job: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    status = job.get("status") or {}
    return parse_time(status.get("startTime")), parse_time(status.get("completionTime"))


def termination_message(pods: list[dict[str, Any]]) -> str | None:
    """The workload container's termination message from the most recently finished pod.

    Prefers the container named ``trainer``; a jobTemplate workload's first container otherwise.
    """
    found: list[tuple[str, str]] = []
    for pod in pods:
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        chosen = next((s for s in statuses if s.get("name") == TRAINER_CONTAINER), None)
        chosen = chosen or (statuses[0] if statuses else None)
        if chosen is None:
            continue
        terminated = (chosen.get("state") or {}).get("terminated") or (
            chosen.get("lastState") or {}
        ).get("terminated")
        if terminated and terminated.get("message"):
            found.append((terminated.get("finishedAt") or "", terminated["message"]))
    return max(found)[1] if found else None


def parse_trainer_result(message: str | None) -> WorkloadReport | None:
    """The trainer's final report (core/workload_report.py), or None if the message is
    missing or not that JSON."""
    return parse_report(message)


def build_trainer_status(
    report: WorkloadReport, ranks_reported: int | None = None
) -> dict[str, Any]:
    """``status.trainer``: what the trainer reported, its energy label kept as it wrote it;
    ``ranks_reported``: how many ranks' reports it adds up (builders_distributed)."""
    return TrainerResult(
        accuracy=report.accuracy,
        epochs=report.epochs,
        duration_seconds=report.wall_seconds,
        device=report.device,
        energy_kwh=report.energy_kwh,
        energy_method=report.energy_label,
        ranks_reported=ranks_reported,
    ).model_dump(by_alias=True, exclude_none=True)
