"""Training across pods: which specs can work, and one job's figures from every rank's report.

`spec.trainer.workers: N` runs N data-parallel ranks, one pod each (an Indexed Job). Rank 0
writes the checkpoint and every rank reads it when the job resumes, so with N > 1:

- an interruptible job needs a checkpoint volume (without one, rank 0's checkpoint stays in
  its own pod's scratch folder and the other ranks restart from nothing: the ranks would
  disagree on where they are);
- the checkpoint volume must be ReadWriteMany: the ranks' pods land on different nodes and
  all mount it (ReadWriteOnce attaches to one node, so the other pods would never start).

Each rank reports its own energy and samples: the job's energy is their sum, its duration
the longest rank's, its accuracy rank 0's (every rank evaluates the same model), and its
energy label the ranks' common one, else all of theirs joined by "+": the report contract
(core/workload_report.py) counts such a sum as measured only if every rank measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

READ_WRITE_MANY = "ReadWriteMany"


def distributed_spec_problem(
    workers: int,
    interruptible: bool,
    checkpoint_claim: str | None,
    claim_access_modes: Sequence[str] | None,
) -> str | None:
    """Why this many ranks cannot work with this checkpoint volume; None when they can.

    `claim_access_modes`: the checkpoint claim's access modes, None where not known (the claim
    is not there yet: its pods wait for it as a single pod's do).
    """
    if workers <= 1:
        return None
    if interruptible and checkpoint_claim is None:
        return (
            f"spec.trainer.workers is {workers} and the job is interruptible: set "
            "spec.trainer.checkpointVolume to a ReadWriteMany PersistentVolumeClaim, which "
            "every rank resumes from (rank 0 writes the checkpoint there)"
        )
    known = checkpoint_claim is not None and claim_access_modes is not None
    if known and READ_WRITE_MANY not in claim_access_modes:
        modes = ", ".join(claim_access_modes) or "none"
        return (
            f"spec.trainer.workers is {workers}, so pods on different nodes all mount the "
            f"checkpoint volume: PersistentVolumeClaim {checkpoint_claim} must be "
            f"{READ_WRITE_MANY} (its access modes: {modes})"
        )
    return None


@dataclass(frozen=True)
class RankReport:
    """The figures of one rank's final report that the job's accounting uses."""

    rank: int
    energy_kwh: float | None
    energy_method: str | None
    duration_seconds: float | None
    accuracy: float | None


@dataclass(frozen=True)
class JobReport:
    energy_kwh: float | None  # None when a rank's energy is missing
    energy_method: str | None  # the ranks' common label, else theirs joined by "+"
    duration_seconds: float | None  # the longest rank's
    accuracy: float | None  # rank 0's (the lowest rank that reported one)
    ranks_reported: int


def combine_rank_reports(reports: Sequence[RankReport]) -> JobReport:
    """One job's figures from its ranks' reports (at most one per rank: the latest)."""
    ordered = sorted(reports, key=lambda report: report.rank)
    energies = [report.energy_kwh for report in ordered]
    durations = [r.duration_seconds for r in ordered if r.duration_seconds is not None]
    methods = sorted({report.energy_method or "unknown" for report in ordered})
    accuracy = next((r.accuracy for r in ordered if r.accuracy is not None), None)
    return JobReport(
        energy_kwh=sum(e for e in energies if e is not None)
        if ordered and None not in energies
        else None,
        # Ranks that differ in how they got their energy: all their methods, so the sum is
        # never taken for a measured one.
        energy_method="+".join(methods) if ordered else None,
        duration_seconds=max(durations) if durations else None,
        accuracy=accuracy,
        ranks_reported=len(ordered),
    )
